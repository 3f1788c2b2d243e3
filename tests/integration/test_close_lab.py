"""The close role and ufw_port on the close lab (tests/lab/scenarios/close.yml), checked with real probes.

Order matters inside this module (check mode, then the real run, then the re-run), so the tests
share one module-scoped lab and run in file order.
"""

import socket
import time

import pytest

from conftest import adhoc, close_and_record, lab_up, probe

MIXED = ["c-inactive", "c-allow-before-deny", "c-range", "c-app-profile", "c-v6-only", "c-ssh-alt"]
PORTS = ["5060/udp", "5060/tcp", "5061/tcp"]


@pytest.fixture(scope="module")
def close_lab():
    return lab_up("close.yml")


def run_close(lab, hosts, check=False):
    return close_and_record(lab, hosts, {"sipguard_close_rollback_after": 60}, check=check)


def probe_states(lab, hosts, vantage=None):
    targets = [a for h in hosts for a in (lab["hosts"][h]["ipv4"], lab["hosts"][h]["ipv6"])]
    return dict(((r["address"], "%d/%s" % (r["port"], r["transport"])), r["state"])
                for r in probe(targets, PORTS, vantage=vantage))


def ssh_answers(lab, host, timeout=2.0):
    info = lab["hosts"][host]
    try:
        with socket.create_connection((info["ipv4"], info["ssh_port"]), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def test_mixed_lab_is_exposed_before(close_lab):
    seen = probe_states(close_lab, MIXED)
    opened = sorted({addr for (addr, _p), state in seen.items() if state == "open"})
    # every host but the two inactive ones has something open; the inactive ones are wide open
    assert len(opened) >= len(MIXED)


def test_check_mode_predicts_the_real_run_and_the_rerun_changes_nothing(close_lab):
    predicted, _out = run_close(close_lab, MIXED, check=True)
    # check mode changed nothing: still exposed
    assert "open" in probe_states(close_lab, MIXED).values()
    applied, _out = run_close(close_lab, MIXED)
    for host in MIXED:
        for want, got in zip(predicted[host], applied[host]):
            assert want["changed"] == got["changed"], host
            assert want["commands"] == got["commands"], host
            assert want["rules_after"] == got["rules_after"], host
            assert [v["state"] for v in want["verdicts"]["after"].values()] == \
                [v["state"] for v in got["verdicts"]["after"].values()]
        assert any(r["changed"] for r in applied[host]), host
    again, output = run_close(close_lab, MIXED)
    assert all(not r["changed"] for host in MIXED for r in again[host]), output[-2000:]
    recap = [line for line in output.split("PLAY RECAP")[1].splitlines() if " : ok=" in line]
    assert len(recap) == len(MIXED) and all(" changed=0 " in line for line in recap), recap


def test_after_close_every_probe_is_blocked_and_ssh_still_works(close_lab):
    for vantage in (None, "vantage"):
        seen = probe_states(close_lab, MIXED, vantage)
        assert len(seen) == len(MIXED) * 2 * len(PORTS)
        assert "open" not in seen.values(), sorted(k for k, v in seen.items() if v == "open")
    for host in MIXED:
        assert ssh_answers(close_lab, host), host
    pong = adhoc(close_lab["inventory"], ",".join(MIXED), "ansible.builtin.ping")
    assert {status for status, _r in pong.values()} == {"SUCCESS"}


def test_inactive_ufw_was_enabled_with_the_ssh_port_in_use(close_lab):
    info = adhoc(close_lab["inventory"], "c-ssh-alt", "sipguard.firewall.ufw_info")["c-ssh-alt"][1]
    assert info["ufw"]["active"] is True
    guards = [r for r in info["ufw"]["rules"] if r["comment"] == "sipguard.firewall ssh guard"]
    assert {(r["ports"], r["v6"]) for r in guards} == {("2222", False), ("2222", True)}


def test_sshd_own_ports_are_guarded_whenever_there_is_a_change(close_lab):
    # sshd listens on 22 and 2200; Ansible connects on 22. sshd -T is read only when the plan changes
    # something, so the guard must still see 2200 on every run that could lock it out (it does from
    # the listening sockets alone).
    inv = close_lab["inventory"]
    status, result = adhoc(inv, "c-ssh-two", "sipguard.firewall.ufw_port", {"port": 2200, "proto": "tcp"})["c-ssh-two"]
    assert status == "FAILED" and "port 2200/tcp is this host's SSH port" in result["msg"], result
    assert result["ssh_ports"] == [22, 2200]
    first = adhoc(inv, "c-ssh-two", "sipguard.firewall.ufw_port", {"ports": PORTS})["c-ssh-two"]
    assert first[0] == "CHANGED" and first[1]["enabled_ufw"] is True, first
    assert first[1]["ssh_ports"] == [22, 2200]
    guards = [r for r in first[1]["info"]["ufw"]["rules"] if r["comment"] == "sipguard.firewall ssh guard"]
    expected = [("22", False), ("22", True), ("2200", False), ("2200", True)]
    assert sorted((r["ports"], r["v6"]) for r in guards) == expected
    again = adhoc(inv, "c-ssh-two", "sipguard.firewall.ufw_port", {"ports": PORTS})["c-ssh-two"]
    assert again[0] == "SUCCESS" and again[1]["changed"] is False, again
    # nothing to guard: sshd -T was not run, but the listening sockets (read anyway) show both ports
    assert again[1]["ssh_ports"] == [22, 2200]
    assert "sshd -T" not in again[1]["ssh_port_sources"]["2200"]
    host = close_lab["hosts"]["c-ssh-two"]
    for port in (22, 2200):
        with socket.create_connection((host["ipv4"], port), timeout=2) as conn:
            conn.settimeout(2)
            assert conn.recv(16).startswith(b"SSH-"), port


def test_restricted_is_open_from_the_allowed_vantage_only(close_lab):
    args = {"port": 5060, "proto": "any", "state": "restricted", "allow_from": ["198.18.0.250"]}
    first = adhoc(close_lab["inventory"], "c-restricted", "sipguard.firewall.ufw_port", args)["c-restricted"]
    assert first[0] == "CHANGED", first
    host = close_lab["hosts"]["c-restricted"]
    targets = [host["ipv4"], host["ipv6"]]
    ports = ["5060/udp", "5060/tcp"]
    from_vantage = dict(((r["address"], r["transport"]), r["state"]) for r in probe(targets, ports, "vantage"))
    from_controller = dict(((r["address"], r["transport"]), r["state"]) for r in probe(targets, ports))
    assert from_vantage[(host["ipv4"], "udp")] == "open" and from_vantage[(host["ipv4"], "tcp")] == "open"
    assert "open" not in from_controller.values(), from_controller
    assert from_vantage[(host["ipv6"], "udp")] != "open"  # no IPv6 source was allowed
    again = adhoc(close_lab["inventory"], "c-restricted", "sipguard.firewall.ufw_port", args)["c-restricted"]
    assert again[0] == "SUCCESS" and again[1]["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"port": 5060, "state": "restricted", "allow_from": ["10.0.0.0/33"]}, "allow_from[0]: '10.0.0.0/33' is not"),
    ({"port": 5060, "method": "drop"}, "value of method must be one of: deny, reject, got: drop"),
    ({"port": 5060, "state": "open"}, "value of state must be one of: closed, restricted, got: open"),
    ({"port": 70000}, "port: 70000 is not a port (1-65535)"),
])
def test_bad_input_fails_before_any_change(close_lab, args, message):
    inv = close_lab["inventory"]
    before = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_info")["c-rollback"][1]["ufw"]["rules"]
    status, result = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_port", args)["c-rollback"]
    assert status == "FAILED" and message in result["msg"], result
    after = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_info")["c-rollback"][1]["ufw"]["rules"]
    assert after == before


def test_a_change_that_cuts_ssh_is_rolled_back_in_time(close_lab):
    inv = close_lab["inventory"]
    before = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_info")["c-rollback"][1]["ufw"]["rules"]
    rollback_after = 15
    args = {"port": 22, "proto": "tcp", "lockout_guard": False, "rollback_after": rollback_after,
            "rollback_id": "test-rollback-%d" % time.time()}
    status, result = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_port", args)["c-rollback"]
    armed_at = time.time()
    assert status == "CHANGED", result
    assert result["rollback"]["armed"]
    assert not ssh_answers(close_lab, "c-rollback"), "closing 22/tcp should have cut new SSH connections"
    while not ssh_answers(close_lab, "c-rollback", timeout=1.0):
        assert time.time() - armed_at <= rollback_after + 10, "no rollback within rollback_after + 10 s"
        time.sleep(0.5)
    took = time.time() - armed_at
    assert took >= rollback_after - 1
    after = adhoc(inv, "c-rollback", "sipguard.firewall.ufw_info")["c-rollback"][1]["ufw"]["rules"]
    assert after == before
