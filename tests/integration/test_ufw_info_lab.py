"""ufw_info's verdict against what real SIP probes see, on every host of the exposure lab.

Every exposure-lab host runs kamailio on 5060/udp, 5060/tcp and 5061/tcp for IPv4 and IPv6, so
a probe sees ``open`` exactly when netfilter admits the packet. Probes go out from the
controller (198.18.0.1) and from the vantage namespace (198.18.0.250).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import BIN, adhoc, probe

PORTS = ["5060/udp", "5060/tcp", "5061/tcp"]
VANTAGES = ("controller", "vantage")


@pytest.fixture(scope="module")
def observed(exposure_lab):
    inventory = exposure_lab["inventory"]
    info = adhoc(inventory, "sipguard_lab", "sipguard.firewall.ufw_info", {"ports": PORTS})
    targets = []
    for host in exposure_lab["hosts"].values():
        targets += [host["ipv4"], host["ipv6"]]
    seen = {}
    for vantage in VANTAGES:
        for r in probe(targets, PORTS, vantage=None if vantage == "controller" else vantage):
            seen[(vantage, r["address"], "%d/%s" % (r["port"], r["transport"]))] = r
    return info, seen


def _cases(lab_hosts):
    for name in sorted(lab_hosts):
        for port in PORTS:
            for family in ("ipv4", "ipv6"):
                yield name, port, family


def test_every_host_answered(exposure_lab, observed):
    info, _seen = observed
    assert sorted(info) == sorted(exposure_lab["hosts"])
    assert {status for status, _r in info.values()} == {"SUCCESS"}


def test_verdicts_match_real_probes_and_the_scenario(exposure_lab, observed):
    info, seen = observed
    mismatches = []
    for name, port, family in _cases(exposure_lab["hosts"]):
        host = exposure_lab["hosts"][name]
        spec = host["spec"]
        verdict = [e for e in info[name][1]["exposure"] if "%d/%s" % (e["port"], e["proto"]) == port][0][family]
        intended = (spec.get("expect") or {}).get(port, {}).get(family, "blocked")
        opened = dict((v, seen[(v, host[family], port)]["state"] == "open") for v in VANTAGES)
        if verdict["state"] == "open":
            denied = (spec.get("denied_from") or {}).get(port, {}).get(family, [])
            ok = all(opened[v] != (v in denied) for v in VANTAGES)
        elif verdict["state"] == "blocked":
            ok = not any(opened.values())
        else:  # restricted: open from the allowed vantages, blocked from the others
            allowed = spec.get("allowed_from", [])
            ok = bool(allowed) and all(opened[v] == (v in allowed) for v in VANTAGES)
        if not ok or verdict["state"] != intended:
            mismatches.append("%s %s %s: ufw_info=%s (%s) intended=%s probes=%s" % (
                name, port, family, verdict["state"], verdict["reason"], intended,
                dict((v, seen[(v, host[family], port)]["state"]) for v in VANTAGES)))
    assert not mismatches, "\n".join(mismatches)


def test_the_lab_covers_every_case(exposure_lab, observed):
    info, _seen = observed
    verdicts = [e[f] for _s, r in info.values() for e in r["exposure"] for f in ("ipv4", "ipv6")]
    states = {v["state"] for v in verdicts}
    vias = {v["via"] for v in verdicts}
    actions = {v["action"] for v in verdicts}
    assert states == {"open", "restricted", "blocked"}
    assert {"ufw", "policy", "before.rules", "netfilter", "dnat", "nftables", "iptables-legacy"} <= vias
    assert {v["backend"] for v in verdicts} >= {"iptables-nft", "iptables-legacy", "nftables"}
    assert {"accept", "drop", "reject"} <= actions
    assert len(exposure_lab["hosts"]) >= 15


HARDENED = "h-*"  # the hosts with hardening rules on top of `ufw allow` (issue 13)


def test_hardened_hosts_show_the_rules_that_act_on_other_packets(exposure_lab, observed):
    info, _seen = observed
    verdict = [e for e in info["h-hashlimit"][1]["exposure"] if (e["port"], e["proto"]) == (5060, "udp")][0]
    for family in ("ipv4", "ipv6"):
        assert verdict[family]["state"] == "open"
        assert verdict[family]["conditions"] == [
            "rate-limited above 20/sec per source (filter INPUT #1 drops)"], verdict[family]
    assert any(c.startswith("/etc/ufw/before.rules line ") and "is not UTF-8" in c
               for c in info["h-badstate"][1]["caveats"])


def test_the_audit_report_says_what_ufw_info_and_the_probes_say(exposure_lab, observed):
    info, seen = observed
    report_dir = tempfile.mkdtemp(prefix="sipguard-walker-report-")
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", exposure_lab["inventory"],
                           "sipguard.firewall.audit", "--limit", HARDENED,
                           "-e", json.dumps({"sipguard_report_dir": report_dir, "sipguard_verify_ports": PORTS})],
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600, check=False)
    assert os.path.exists(os.path.join(report_dir, "report.json")), proc.stdout[-3000:]
    with open(os.path.join(report_dir, "report.json")) as fh:
        report = json.load(fh)
    hardened = sorted(h for h in exposure_lab["hosts"] if h.startswith("h-"))
    assert sorted(report["hosts"]) == hardened
    mismatches = []
    for name in hardened:
        host = exposure_lab["hosts"][name]
        record = report["hosts"][name]
        got = dict((("%d/%s" % (e["port"], e["proto"]), e["family"]), e["state"]) for e in record["exposure"])
        for port in PORTS:
            for family in ("ipv4", "ipv6"):
                verdict = [e for e in info[name][1]["exposure"]
                           if "%d/%s" % (e["port"], e["proto"]) == port][0][family]
                from_controller = seen[("controller", host[family], port)]["state"] == "open"
                if got.get((port, family)) != verdict["state"] or from_controller != (verdict["state"] != "blocked"):
                    mismatches.append("%s %s %s: report=%s ufw_info=%s controller probe open=%s" % (
                        name, port, family, got.get((port, family)), verdict["state"], from_controller))
        reported = dict((("%d/%s" % (p["port"], p["transport"]), p["family"]), p["state"]) for p in record["probes"])
        for (port, family), state in reported.items():
            if port in PORTS and (state == "open") != (got[(port, family)] != "blocked"):
                mismatches.append("%s %s %s: report probe=%s, report state=%s"
                                  % (name, port, family, state, got[(port, family)]))
    assert not mismatches, "\n".join(mismatches)


def test_a_user_rules_file_with_a_bad_line_is_a_caveat_end_to_end(exposure_lab):
    """ufw_info on a host whose user.rules holds a line iptables-restore would refuse: the verdict still
    comes from the live rules, and the caveat names the file and line (no traceback)."""
    path = os.path.join("/etc/netns", exposure_lab["hosts"]["h-badstate"]["netns"], "ufw", "user.rules")
    with open(path, "rb") as fh:
        original = fh.read()
    text = original.decode("utf-8")
    head, sep, tail = text.rpartition("\nCOMMIT")
    broken = head + "\n-A ufw-user-input -p udp --dport 50a0:6000 -j ACCEPT" + sep + tail
    line = broken[:broken.index("50a0")].count("\n") + 1
    try:
        with open(path, "w") as fh:
            fh.write(broken)
        status, result = adhoc(exposure_lab["inventory"], "h-badstate", "sipguard.firewall.ufw_info",
                               {"ports": ["5060/udp"]})["h-badstate"]
    finally:
        with open(path, "wb") as fh:
            fh.write(original)
    assert status == "SUCCESS", result
    assert result["exposure"][0]["ipv4"]["state"] == "open"
    assert "/etc/ufw/user.rules line %d: --dport '50a0:6000' is not a port" % line in " ".join(result["caveats"])


def test_the_backends_holding_rules_are_returned(exposure_lab, observed):
    """Native nftables tables and iptables-legacy rules only on the n-* hosts that add them."""
    info, _seen = observed
    for name in exposure_lab["hosts"]:
        spec = exposure_lab["hosts"][name]["spec"]
        argv0 = set(str(args[0]) for args in spec.get("commands") or [])
        got = [b["name"] for b in info[name][1]["backends"]]
        want = (["iptables-nft"] if "iptables-nft" in got else []) + \
            (["iptables-legacy"] if argv0 & {"iptables-legacy", "ip6tables-legacy"} else []) + \
            (["nftables"] if "nft" in argv0 else [])
        assert got == want, name


def test_the_audit_report_says_the_same_on_the_backend_hosts(exposure_lab, observed):
    """report.json of the audit playbook carries ufw_info's verdicts for the n-* hosts (other backends)."""
    info, _seen = observed
    report_dir = tempfile.mkdtemp(prefix="sipguard-nft-report-")
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", exposure_lab["inventory"], "sipguard.firewall.audit",
            "--limit", "n-*", "-e", json.dumps({"sipguard_report_dir": report_dir})]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(os.path.join(report_dir, "report.json")) as fh:
        report = json.load(fh)
    names = sorted(n for n in exposure_lab["hosts"] if n.startswith("n-"))
    assert names and sorted(n for n in report["hosts"]) == names
    for name in names:
        got = dict(((i["port"], i["proto"], i["family"]), (i["state"], i["via"]))
                   for i in report["hosts"][name]["exposure"])
        want = dict(((e["port"], e["proto"], f), (e[f]["state"], e[f]["via"]))
                    for e in info[name][1]["exposure"] for f in ("ipv4", "ipv6"))
        common = set(got) & set(want)
        assert common and all(got[k] == want[k] for k in common), (name, got, want)
    shutil.rmtree(report_dir, ignore_errors=True)


@pytest.mark.parametrize("ports, message", [
    (["70000/udp"], "ports[0]: '70000' is not a port (1-65535)"),
    (["5060/icmp"], "ports[0]: '5060/icmp' has protocol 'icmp'; use tcp or udp (or a bare port for both)"),
    (["abc"], "ports[0]: 'abc' is not a port number (1-65535)"),
])
def test_bad_input_fails_naming_the_value(exposure_lab, ports, message):
    status, result = adhoc(exposure_lab["inventory"], "deny", "sipguard.firewall.ufw_info", {"ports": ports})["deny"]
    assert status == "FAILED"
    assert result["msg"] == message
    assert "Traceback" not in result.get("module_stderr", "")


def test_without_root_it_says_to_use_become():
    """Read-only, on the machine itself: the module run as 'nobody' must explain, not crash."""
    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    usable = subprocess.run(list(as_nobody) + [sys.executable, "-c", "import ansible"], check=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if usable.returncode != 0:
        pytest.skip("this controller Python cannot be run by 'nobody' (a build under /root)")
    home = tempfile.mkdtemp(prefix="sipguard-nobody-")
    os.chmod(home, 0o777)
    env = {"HOME": home, "ANSIBLE_LOCAL_TEMP": home + "/tmp", "ANSIBLE_REMOTE_TEMP": home + "/rtmp",
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}  # nobody cannot run a Python under /root
    inv = "localhost,"
    results = adhoc(inv, "localhost", "sipguard.firewall.ufw_info", {}, extra_env=env, extra_args=("-c", "local"),
                    argv_prefix=as_nobody)
    status, result = results["localhost"]
    assert status == "FAILED"
    shutil.rmtree(home, ignore_errors=True)
    assert "needs root" in result["msg"] and "become: true" in result["msg"]
