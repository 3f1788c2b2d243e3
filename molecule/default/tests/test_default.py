"""testinfra checks after the close role: rules present, SSH reachable, SIP probes blocked."""

import json
import os
import socket
import subprocess
import sys

import pytest

LAB = os.environ.get("SIPGUARD_LAB_DIR", "/var/tmp/sipguard-lab")
SGLAB = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "lab", "sglab.py")


def _lab():
    with open(os.path.join(LAB, "lab.json")) as fh:
        return json.load(fh)


def test_managed_rules_are_first_for_both_families(host):
    status = host.check_output("ufw status numbered")
    assert "Status: active" in status
    lines = [line for line in status.splitlines() if line.startswith("[")]
    managed = [i for i, line in enumerate(lines) if "sipguard.firewall 5060/udp" in line]
    assert len(managed) == 2  # IPv4 and IPv6
    assert any("(v6)" in lines[i] for i in managed)


def test_ssh_is_still_reachable(host):
    info = _lab()["hosts"][host.backend.get_hostname()]
    with socket.create_connection((info["ipv4"], info["ssh_port"]), timeout=5) as conn:
        assert conn.recv(64).startswith(b"SSH-")


def test_no_sip_probe_gets_in(host):
    info = _lab()["hosts"][host.backend.get_hostname()]
    out = subprocess.run([sys.executable, SGLAB, "probe", "--", info["ipv4"], info["ipv6"], "--ports", "5060/udp",
                          "5060/tcp", "5061/tcp", "--timeout", "1", "--retries", "1"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    states = {(r["address"], r["port"], r["transport"]): r["state"] for r in json.loads(out)["results"]}
    assert len(states) == 6
    assert "open" not in states.values(), states


@pytest.mark.parametrize("port", ["5060/udp", "5060/tcp", "5061/tcp"])
def test_ufw_info_agrees(host, port):
    # The installed module on the host itself, as the verify role runs it.
    result = host.ansible("sipguard.firewall.ufw_info", "ports=%s" % port, check=False, become=True)
    for family in ("ipv4", "ipv6"):
        assert result["exposure"][0][family]["state"] == "blocked"
