"""Issue 14 on the close lab: exposures UFW governs outside its user rules, closed by ufw_port with
edit_ufw_files and docker, checked with real SIP probes (tests/lab/scenarios/close.yml, hosts c-before4 ...
c-docker; c-docker runs a real dockerd in its own network namespace).

Order matters (before, check mode, run, re-run, rollback): the tests share one module-scoped lab.
"""

import os
import re
import socket
import subprocess

import pytest

from conftest import adhoc, close_and_record, lab_up, probe, sglab_module

CLOSABLE = ["c-before4", "c-before6", "c-after", "c-before-range", "c-fwd-dnat", "c-docker"]
OUT_OF_REACH = ["c-ahead"]
PORTS = ["5060/udp", "5060/tcp"]
# One rollback group per host: lab hosts share /var/lib/sipguard (each has its own /etc/ufw).
ARGS = {"ports": PORTS, "edit_ufw_files": True, "docker": True, "rollback_id": "issue14-{{ inventory_hostname }}"}
RULE_FILES = ["/etc/ufw/before.rules", "/etc/ufw/before6.rules", "/etc/ufw/after.rules", "/etc/ufw/after6.rules"]
HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
SEEN = {}


def root_namespace():
    """What Docker would leave in the machine's own network namespace: links and netfilter rules."""
    links = subprocess.run(["ip", "-o", "link", "show"], text=True, stdout=subprocess.PIPE, check=True).stdout
    rules = subprocess.run(["iptables-save"], text=True, stdout=subprocess.PIPE, check=False).stdout
    names = [line.split(": ")[1].split("@")[0] for line in links.splitlines() if ": " in line]
    return ([n for n in names if "docker" in n or n.startswith(("veth", "br-"))],
            [line for line in rules.splitlines() if "DOCKER" in line])


@pytest.fixture(scope="module")
def lab():
    before = root_namespace()
    assert before == ([], []), "the machine's own namespace already has Docker in it: %s" % (before,)
    info = lab_up("close.yml")
    yield info
    assert root_namespace() == ([], []), "Docker leaked into the machine's own network namespace"


def host_exec(host, argv):
    proc = subprocess.run(sglab_module().host_argv("sg-" + host, argv), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False, timeout=60)
    return proc.stdout


def states(lab, hosts, vantage=None):
    targets = [a for h in hosts for a in (lab["hosts"][h]["ipv4"], lab["hosts"][h]["ipv6"])]
    return dict(((r["address"], "%d/%s" % (r["port"], r["transport"])), r["state"])
                for r in probe(targets, PORTS, vantage=vantage))


def opened(lab, host, seen):
    return sorted("%s %s" % (a, p) for (a, p), s in seen.items()
                  if s == "open" and a in (lab["hosts"][host]["ipv4"], lab["hosts"][host]["ipv6"]))


def ufw_port(lab, hosts, check=False):
    extra = ["--check", "--diff"] if check else []
    return adhoc(lab["inventory"], ",".join(hosts), "sipguard.firewall.ufw_port", ARGS, extra_args=extra)


def close_role(lab, check=False):
    """The close role (commit-confirmed over a new SSH connection) with both options on CLOSABLE:
    {host: ufw_port's result}."""
    extra = {"sipguard_close_ports": PORTS, "sipguard_close_rollback_after": 60, "sipguard_close_edit_ufw_files": True,
             "sipguard_close_docker": True, "sipguard_close_rollback_id": ARGS["rollback_id"]}
    results, _output = close_and_record(lab, CLOSABLE, extra, check=check)
    return dict((host, result[0]) for host, result in results.items())


def test_every_host_is_exposed_although_ufw_says_deny(lab):
    assert re.search(r"^5060 +DENY", host_exec("c-docker", ["ufw", "status"]), re.M)
    seen = states(lab, CLOSABLE + OUT_OF_REACH)
    for host in CLOSABLE + OUT_OF_REACH:
        assert opened(lab, host, seen), host
    # Docker's published ports get in over IPv4 whatever UFW's user rules say (udp: 5060 -> container 5070)
    docker = lab["hosts"]["c-docker"]["ipv4"]
    assert (seen[(docker, "5060/udp")], seen[(docker, "5060/tcp")]) == ("open", "open")
    # ufw_info agrees with the probes, and says which ufw_port option closes each host
    info = adhoc(lab["inventory"], ",".join(CLOSABLE + OUT_OF_REACH), "sipguard.firewall.ufw_info", {"ports": PORTS})
    options = {}
    for host in CLOSABLE + OUT_OF_REACH:
        for item in info[host][1]["exposure"]:
            for family in ("ipv4", "ipv6"):
                verdict = item[family]
                probed = seen[(lab["hosts"][host][family], "%d/%s" % (item["port"], item["proto"]))]
                assert (verdict["state"] != "blocked") == (probed == "open"), (host, item["proto"], family, verdict)
                if verdict["state"] != "blocked":
                    options.setdefault(host, set()).add(verdict["closed_by"])
    assert options == {"c-before4": {"edit_ufw_files"}, "c-before6": {"edit_ufw_files"}, "c-after": {"rules"},
                       "c-before-range": {"edit_ufw_files"}, "c-fwd-dnat": {"rules"}, "c-docker": {"docker"},
                       "c-ahead": {None}}
    for host in CLOSABLE + OUT_OF_REACH:
        SEEN[host] = dict((path, host_exec(host, ["cat", path])) for path in RULE_FILES)
    SEEN["docker-user"] = host_exec("c-docker", ["iptables", "-S", "DOCKER-USER"])


def test_check_mode_predicts_the_run_and_every_port_ufw_governs_is_closed(lab):
    predicted = close_role(lab, check=True)
    assert "open" in states(lab, ["c-docker"]).values()  # check mode changed nothing
    applied = close_role(lab)
    for host in CLOSABLE:
        got, want = applied[host], predicted[host]
        assert got["changed"] is True, host
        for key in ("commands", "rules_after", "file_edits", "diff"):
            assert want[key] == got[key], (host, key)
        assert set(v["state"] for v in got["verdicts"]["after"].values()) == {"blocked"}, host
    edits = dict((h, [(e["file"], e["action"]) for e in applied[h]["file_edits"]]) for h in CLOSABLE)
    assert edits["c-before4"] == [("/etc/ufw/before.rules", "commented")]
    assert edits["c-before6"] == [("/etc/ufw/before6.rules", "commented")]
    assert edits["c-before-range"] == [("/etc/ufw/before.rules", "blocked")]
    assert edits["c-after"] == []  # the user deny comes ahead of after.rules
    assert edits["c-fwd-dnat"] == []  # route rules: ordinary UFW rules
    assert any(c[:2] == ["route", "prepend"] for c in applied["c-fwd-dnat"]["commands"])
    assert edits["c-docker"] == [("/etc/ufw/after.rules", "docker block")]
    assert "# sipguard issue14-c-before4: -A ufw-before-input -p udp --dport 5060 -j ACCEPT" in \
        host_exec("c-before4", ["cat", "/etc/ufw/before.rules"])
    # out of UFW's reach: refused, nothing changed, the message names the rule and the command that removes it
    status, refused = ufw_port(lab, OUT_OF_REACH)["c-ahead"]
    assert status == "FAILED" and "iptables -t filter -D INPUT 1" in refused["msg"], refused.get("msg")
    seen = states(lab, CLOSABLE + OUT_OF_REACH)
    for host in CLOSABLE:
        assert opened(lab, host, seen) == [], host
    assert opened(lab, "c-ahead", seen) == ["%s 5060/udp" % lab["hosts"]["c-ahead"]["ipv4"]]
    # the container still serves a client inside the host (OUTPUT, not FORWARD)
    inside = states(lab, ["c-docker"], vantage="c-docker")
    assert inside[(lab["hosts"]["c-docker"]["ipv4"], "5060/udp")] == "open"
    assert inside[(lab["hosts"]["c-docker"]["ipv4"], "5060/tcp")] == "open"
    # SSH keeps working from outside (and Ansible reaches every host again in the re-run below)
    for host in CLOSABLE + OUT_OF_REACH:
        for family in ("ipv4", "ipv6"):
            with socket.create_connection((lab["hosts"][host][family], lab["hosts"][host]["ssh_port"]),
                                          timeout=3) as conn:
                conn.settimeout(3)
                assert conn.recv(4) == b"SSH-", (host, family)


def test_a_second_run_changes_nothing(lab):
    again = close_role(lab)
    for host in CLOSABLE:
        assert again[host]["changed"] is False and again[host]["file_edits"] == [], (host, again[host])
    assert ufw_port(lab, ["c-docker"])["c-docker"][1]["changed"] is False


def test_the_rollback_restores_the_files_and_the_path(lab):
    for host in CLOSABLE:
        code = ("import sys; sys.path.insert(0, %r); from ansible_collections.sipguard.firewall.plugins.module_utils "
                "import ufw_host as h\nwith h.UfwLock(): h.restore(%r, '/usr/sbin/ufw', h._subprocess_run)"
                % (COLLECTIONS, os.path.join("/var/lib/sipguard/rollback", "issue14-" + host)))
        proc = subprocess.run(sglab_module().host_argv("sg-" + host, ["python3", "-c", code]), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for path in RULE_FILES:
            assert host_exec(host, ["cat", path]) == SEEN[host][path], (host, path)
    assert host_exec("c-docker", ["iptables", "-S", "DOCKER-USER"]) == SEEN["docker-user"]
    seen = states(lab, CLOSABLE)
    docker = lab["hosts"]["c-docker"]["ipv4"]
    assert (seen[(docker, "5060/udp")], seen[(docker, "5060/tcp")]) == ("open", "open")
    for host in CLOSABLE:
        assert opened(lab, host, seen), host
