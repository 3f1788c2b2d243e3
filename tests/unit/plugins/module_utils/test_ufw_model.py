"""The UFW model on outputs recorded from the exposure lab (tests/lab/scenarios/exposure.yml)."""

import re

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_model
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec, parse_port_specs

import lab_fixtures as lab

PORTS = parse_port_specs(["5060/udp", "5060/tcp", "5061/tcp"])
SCENARIO = lab.scenario_hosts()


def _expected(host, spec, family):
    expect = (SCENARIO[host].get("expect") or {}).get("%d/%s" % spec, {})
    return expect.get(family, "blocked")


@pytest.mark.parametrize("host", sorted(SCENARIO))
def test_verdict_matches_the_scenario_intent(host):
    result = ufw_model.inspect_host(lab.raw(host), PORTS)
    got = dict(((e["port"], e["proto"], f), e[f]["state"]) for e in result["exposure"] for f in ("ipv4", "ipv6"))
    want = dict(((s.port, s.proto, f), _expected(host, s, f)) for s in PORTS for f in ("ipv4", "ipv6"))
    assert got == want
    assert result["exposed"] == any(v != "blocked" for v in want.values())


@pytest.mark.parametrize("host", [h for h in lab.hosts() if "Status: active" in (lab.read(h, "ufw_status_numbered") or "")])
def test_rule_numbers_are_the_ones_ufw_status_numbered_shows(host):
    oracle = re.findall(r"^\[\s*(\d+)\]\s+(.*)$", lab.read(host, "ufw_status_numbered"), re.M)
    result = ufw_model.inspect_host(lab.raw(host), PORTS)
    numbers = sorted({r["number"] for r in result["ufw"]["rules"]})
    assert numbers == [int(n) for n, _line in oracle]
    for number, line in oracle:
        rules = [r for r in result["ufw"]["rules"] if r["number"] == int(number)]
        # ufw marks "Anywhere" rules (v6); a rule with an IPv6 address shows the address instead
        v6 = "(v6)" in line or bool(re.search(r"[0-9a-f]*:[0-9a-f]*:", line))
        assert all(r["v6"] == v6 for r in rules), line
        assert line.split()[0].startswith(rules[0]["to"].split(" (v6)")[0].split()[0])


@pytest.mark.parametrize("host, spec, family, rule, via, action", [
    ("deny-before-allow", PortSpec(5060, "udp"), "ipv4", 1, "ufw", "drop"),
    ("deny-before-allow", PortSpec(5060, "tcp"), "ipv4", 3, "ufw", "accept"),
    ("reject", PortSpec(5060, "tcp"), "ipv6", 4, "ufw", "reject"),
    ("default-reject", PortSpec(5060, "udp"), "ipv4", None, "policy", "reject"),
    ("app-profile", PortSpec(5061, "tcp"), "ipv4", 2, "ufw", "accept"),
    ("limit", PortSpec(5060, "tcp"), "ipv4", 2, "ufw", "accept"),
    ("before-rules", PortSpec(5060, "udp"), "ipv4", None, "before.rules", "accept"),
    ("iptables-ahead", PortSpec(5060, "tcp"), "ipv4", None, "netfilter", "accept"),
    ("docker-dnat", PortSpec(5060, "udp"), "ipv4", None, "dnat", "accept"),
    ("docker-dnat", PortSpec(5060, "tcp"), "ipv4", 2, "ufw", "drop"),
    ("inactive", PortSpec(5060, "udp"), "ipv4", None, "policy", "accept"),
    ("ipv6-disabled", PortSpec(5060, "udp"), "ipv6", None, "policy", "drop"),
])
def test_the_deciding_rule_is_named(host, spec, family, rule, via, action):
    verdict = ufw_model.inspect_host(lab.raw(host), [spec])["exposure"][0][family]
    assert (verdict["rule"], verdict["via"], verdict["action"]) == (rule, via, action), verdict["reason"]


@pytest.mark.parametrize("host, bypass", [
    ("docker-dnat", True), ("iptables-ahead", True), ("before-rules", True), ("allow-proto", False),
    ("inactive", False), ("no-ufw", False),
])
def test_bypasses_are_flagged_with_a_remediation(host, bypass):
    result = ufw_model.inspect_host(lab.raw(host), PORTS)
    flagged = [e[f] for e in result["exposure"] for f in ("ipv4", "ipv6") if e[f]["bypass"]]
    assert bool(flagged) == bypass
    assert all(v["remediation"] for v in flagged)


def test_restricted_names_the_admitted_senders():
    verdict = ufw_model.inspect_host(lab.raw("source-restricted"), [PortSpec(5060, "udp")])["exposure"][0]["ipv4"]
    assert verdict["state"] == "restricted"
    assert verdict["conditions"] == ["from 198.18.0.250/32"]
    assert verdict["rule"] == 2
    iface = ufw_model.inspect_host(lab.raw("iface-restricted"), [PortSpec(5060, "udp")])["exposure"][0]["ipv6"]
    assert iface["conditions"] == ["in on eth0"]


def test_a_denied_source_does_not_make_an_open_port_restricted():
    verdict = ufw_model.inspect_host(lab.raw("deny-source-then-allow"), [PortSpec(5060, "udp")])["exposure"][0]
    assert verdict["ipv4"]["state"] == "open"
    assert verdict["ipv4"]["rule"] == 3
    assert verdict["ipv4"]["conditions"] == ["except from 198.18.0.250/32"]
    assert verdict["ipv6"]["conditions"] == []


def test_ufw_state_summary():
    result = ufw_model.inspect_host(lab.raw("default-reject"), PORTS)["ufw"]
    assert (result["installed"], result["active"], result["enabled"], result["ipv6"]) == (True, True, True, True)
    assert result["defaults"] == {"incoming": "reject", "outgoing": "allow", "routed": "deny"}
    assert result["logging"] == "low"
    inactive = ufw_model.inspect_host(lab.raw("inactive"), PORTS)["ufw"]
    assert (inactive["installed"], inactive["active"], inactive["enabled"]) == (True, False, False)
    assert [r["action"] for r in inactive["rules"]] == ["deny", "deny"]
    assert ufw_model.inspect_host(lab.raw("ipv6-disabled"), PORTS)["ufw"]["ipv6"] is False


def test_no_ufw_is_a_result_not_an_error():
    result = ufw_model.inspect_host(lab.raw("no-ufw", ufw_binary=None), PORTS)
    assert result["ufw"]["installed"] is False
    assert result["ufw"]["rules"] == []
    assert result["exposure"][0]["ipv4"]["state"] == "open"
    assert "install and enable UFW" in result["exposure"][0]["ipv4"]["remediation"]


def test_missing_iptables_save_is_a_caveat_and_errs_towards_exposure():
    raw = lab.raw("deny")
    raw["commands"]["iptables_save"] = {"rc": None, "out": "", "err": "iptables-save not found"}
    result = ufw_model.inspect_host(raw, [PortSpec(5060, "udp")])
    assert result["exposure"][0]["ipv4"]["state"] == "open"
    assert any("iptables-save" in c for c in result["caveats"])
    assert result["exposure"][0]["ipv6"]["state"] == "blocked"


def test_app_rules_carry_the_profile_ports_and_comments_are_decoded():
    rules = ufw_model.inspect_host(lab.raw("app-profile"), PORTS)["ufw"]["rules"]
    kamailio = [r for r in rules if r["app"] == "Kamailio"]
    assert {r["number"] for r in kamailio} == {2, 4}
    assert kamailio[0]["app_ports"] == [{"ports": "5060", "proto": "udp"}, {"ports": "5060:5061", "proto": "tcp"}]


def test_listeners_on_requested_ports_only():
    result = ufw_model.inspect_host(lab.raw("allow-proto"), PORTS)
    listeners = result["listeners"]
    assert {(l["proto"], l["port"], l["family"]) for l in listeners} == {
        ("udp", 5060, "ipv4"), ("udp", 5060, "ipv6"), ("tcp", 5060, "ipv4"), ("tcp", 5060, "ipv6"),
        ("tcp", 5061, "ipv4"), ("tcp", 5061, "ipv6")}
    assert {l["process"] for l in listeners} == {"kamailio"}
    assert result["exposure"][0]["ipv4"]["listening"] is True


def test_tuple_with_interface_and_comment():
    rule = ufw_model.UfwRule("allow tcp 5070:5080 0.0.0.0/0 any 0.0.0.0/0 in_eth0 comment=7472756e6b2072616e6765",
                             False)
    d = rule.to_dict()
    assert (d["interface"], d["comment"], d["ports"], d["direction"]) == ("eth0", "trunk range", "5070:5080", "in")


@pytest.mark.parametrize("tup", ["allow tcp 22", "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 a b c d e"])
def test_malformed_tuple_is_an_error_naming_it(tup):
    with pytest.raises(ufw_model.UfwModelError, match="malformed ufw tuple"):
        ufw_model.UfwRule(tup, False)
