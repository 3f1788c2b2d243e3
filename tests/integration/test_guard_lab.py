"""Issue 12 acceptance (a)-(c) on the close lab (tests/lab/scenarios/close.yml), with real connections:

(a) a rollback_id that is a path is refused and nothing outside the backup root changes;
(b) sshd on 22 and, through ListenAddress only, 2222, UFW inactive: after close both ports answer SSH
    over IPv4 and IPv6;
(c) families: [ipv4] on an inactive host keeps SSH over IPv6.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import BIN, HERE, adhoc, lab_up, probe

PORTS = ["5060/udp", "5060/tcp", "5061/tcp"]
PLAYBOOK = os.path.join(HERE, "playbooks", "close_and_record.yml")
BACKUP_ROOT = "/var/lib/sipguard/rollback"


@pytest.fixture(scope="module")
def close_lab():
    return lab_up("close.yml")


def ssh_banner(address, port, timeout=3.0):
    """True when an SSH server answers on [address]:port (its version banner, RFC 4253 4.2)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def run_role(lab, host, extra):
    out = tempfile.mkdtemp(prefix="sipguard-guard-")
    extra = dict(extra, sipguard_test_targets=host, sipguard_test_out=out, sipguard_close_rollback_after=60)
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], PLAYBOOK, "-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(os.path.join(out, host + ".json")) as fh:
        result = json.load(fh)[0]
    shutil.rmtree(out, ignore_errors=True)
    return result


def ssh_login(lab, host, address, port):
    """A full SSH login (Ansible's ping module) to ``address``:``port`` instead of the inventory's."""
    status, result = adhoc(lab["inventory"], host, "ansible.builtin.ping",
                           extra_args=("-e", "ansible_host=%s" % address, "-e", "ansible_port=%d" % port))[host]
    return status == "SUCCESS" and result.get("ping") == "pong"


def rules_of(lab, host):
    status, info = adhoc(lab["inventory"], host, "sipguard.firewall.ufw_info")[host]
    assert status == "SUCCESS", info
    return info["ufw"]["active"], info["ufw"]["rules"]


def test_a_rollback_id_that_is_a_path_is_refused_and_nothing_outside_the_root_changes(close_lab):
    host = "c-bad-id"
    sibling = os.path.join(os.path.dirname(BACKUP_ROOT), "x")  # where ../x would land
    elsewhere = tempfile.mkdtemp(prefix="sipguard-guard-abs-")
    created = not os.path.exists(sibling)
    os.makedirs(sibling, exist_ok=True)
    try:
        for directory in (sibling, elsewhere):
            with open(os.path.join(directory, "keep"), "w") as fh:
                fh.write("precious\n")
        roots_before = sorted(os.listdir(BACKUP_ROOT)) if os.path.isdir(BACKUP_ROOT) else []
        before = rules_of(close_lab, host)
        for bad in ("../x", elsewhere, "a/../../x", ".."):
            status, result = adhoc(close_lab["inventory"], host, "sipguard.firewall.ufw_port",
                                   {"ports": PORTS, "rollback_after": 60, "rollback_id": bad})[host]
            assert status == "FAILED", result
            assert result["msg"].startswith("rollback_id: %r is not a rollback name" % bad), result["msg"]
        for directory in (sibling, elsewhere):
            assert os.listdir(directory) == ["keep"], directory
            with open(os.path.join(directory, "keep")) as fh:
                assert fh.read() == "precious\n"
        assert (sorted(os.listdir(BACKUP_ROOT)) if os.path.isdir(BACKUP_ROOT) else []) == roots_before
        assert rules_of(close_lab, host) == before  # the firewall was not touched either
        # a name is fine (and the host still closes)
        status, result = adhoc(close_lab["inventory"], host, "sipguard.firewall.ufw_port",
                               {"ports": PORTS, "rollback_id": "guard-lab.test_1"})[host]
        assert status == "CHANGED", result
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
        if created:
            shutil.rmtree(sibling, ignore_errors=True)


def test_a_port_inside_listenaddress_stays_reachable_over_both_families(close_lab):
    host = "c-listen-port"
    info = close_lab["hosts"][host]
    assert all(ssh_banner(info[f], port) for f in ("ipv4", "ipv6") for port in (22, 2222))
    # ufw_port alone, without the role's ansible_port: the guard finds 2222 itself
    status, result = adhoc(close_lab["inventory"], host, "sipguard.firewall.ufw_port", {"ports": PORTS})[host]
    assert status == "CHANGED" and result["enabled_ufw"] is True, result
    assert result["ssh_ports"] == [22, 2222], result
    assert "sshd -T" in result["ssh_port_sources"]["2222"] and "listening" in result["ssh_port_sources"]["2222"]
    guards = sorted((r["ports"], r["v6"]) for r in result["info"]["ufw"]["rules"]
                    if r["comment"] == "sipguard.firewall ssh guard")
    assert guards == [("22", False), ("22", True), ("2222", False), ("2222", True)]
    for family in ("ipv4", "ipv6"):
        for port in (22, 2222):
            assert ssh_banner(info[family], port), (family, port)
            assert ssh_login(close_lab, host, info[family], port), (family, port)
    seen = probe([info["ipv4"], info["ipv6"]], PORTS)
    # no answer: "filtered" for TCP, "open|filtered" for UDP (nothing told the prober the port is closed)
    assert len(seen) == 6 and {r["state"] for r in seen} <= {"filtered", "open|filtered"}, seen


def test_closing_for_ipv4_only_on_an_inactive_host_keeps_ssh_over_ipv6(close_lab):
    host = "c-fam4"
    info = close_lab["hosts"][host]
    result = run_role(close_lab, host, {"sipguard_close_families": ["ipv4"]})
    assert result["changed"] and result["enabled_ufw"], result
    assert 22 in result["ssh_ports"] and "named" in result["ssh_port_sources"]["22"]  # the role's ansible_port
    assert ssh_banner(info["ipv6"], 22) and ssh_banner(info["ipv4"], 22)
    assert ssh_login(close_lab, host, info["ipv6"], 22)
    active, rules = rules_of(close_lab, host)
    assert active
    assert sorted((r["ports"], r["v6"]) for r in rules if r["comment"] == "sipguard.firewall ssh guard") == \
        [("22", False), ("22", True)]
    seen = dict(((r["address"], r["port"], r["transport"]), r["state"]) for r in probe([info["ipv4"]], PORTS))
    assert set(seen.values()) <= {"filtered", "open|filtered"}, seen
    pong = adhoc(close_lab["inventory"], host, "ansible.builtin.ping")
    assert pong[host][0] == "SUCCESS"
