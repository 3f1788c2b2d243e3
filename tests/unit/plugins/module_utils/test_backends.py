"""Every backend on a hook, combined as the kernel does, on outputs recorded from the n-* lab hosts
(tests/lab/scenarios/exposure.yml; real SIP probes agree, see tests/integration/test_ufw_info_lab.py)."""

import copy

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import backends, ufw_model
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec, parse_port_specs

import lab_fixtures as lab

PORTS = parse_port_specs(["5060/udp", "5060/tcp", "5061/tcp"])


def _verdict(host, port, proto, family, raw=None):
    result = ufw_model.inspect_host(raw or lab.raw(host), [PortSpec(port, proto)])
    return result["exposure"][0]["ipv%d" % family]


def test_the_save_header_names_the_backend():
    assert backends.iptables_variant(lab.read("n-legacy-drop", "iptables_save")) == "iptables-nft"
    assert backends.iptables_variant(lab.read("n-legacy-drop", "iptables_legacy_save")) == "iptables-legacy"


@pytest.mark.parametrize("host, port, proto, family, state, via, backend", [
    # a drop in any base chain is final, before or after UFW's accept
    ("n-drop-ahead", 5060, "udp", 6, "blocked", "nftables", "nftables"),
    ("n-drop-ahead", 5060, "tcp", 4, "blocked", "nftables", "nftables"),
    ("n-drop-ahead", 5060, "tcp", 6, "open", "ufw", "iptables-nft"),
    ("n-drop-after", 5060, "udp", 6, "blocked", "nftables", "nftables"),
    ("n-drop-after", 5060, "udp", 4, "open", "ufw", "iptables-nft"),
    # an accept ends only its own base chain
    ("n-accept-ufw-deny", 5060, "udp", 4, "blocked", "ufw", "iptables-nft"),
    ("n-accept-ufw-deny", 5061, "tcp", 6, "blocked", "policy", "iptables-nft"),
    ("n-legacy-accept", 5060, "udp", 4, "blocked", "ufw", "iptables-nft"),
    # a base chain's policy
    ("n-policy-drop", 5060, "tcp", 4, "blocked", "nftables", "nftables"),
    ("n-policy-drop", 5060, "udp", 6, "open", "ufw", "iptables-nft"),
    # iptables-legacy beside iptables-nft
    ("n-legacy-drop", 5060, "udp", 4, "blocked", "iptables-legacy", "iptables-legacy"),
    ("n-legacy-drop", 5060, "tcp", 6, "blocked", "iptables-legacy", "iptables-legacy"),
    ("n-legacy-drop", 5060, "tcp", 4, "open", "ufw", "iptables-nft"),
    # a native DNAT sends the packet down the forward hook
    ("n-dnat-open", 5060, "udp", 4, "open", "dnat", "nftables"),
    ("n-dnat-fwd-drop", 5060, "udp", 4, "blocked", "dnat", "nftables"),
    # priorities: -200 accepts everything, 20 drops all but one sender
    ("n-prio-order", 5060, "udp", 4, "restricted", "ufw", "iptables-nft"),
    ("n-prio-order", 5060, "udp", 6, "blocked", "nftables", "nftables"),
])
def test_verdict_and_the_backend_that_decided(host, port, proto, family, state, via, backend):
    verdict = _verdict(host, port, proto, family)
    assert (verdict["state"], verdict["via"], verdict["backend"]) == (state, via, backend), verdict["reason"]


def test_a_native_dnat_is_a_bypass_with_a_remedy_for_nftables():
    verdict = _verdict("n-dnat-open", 5060, "udp", 4)
    assert verdict["bypass"] is True
    assert "nftables ip sg-nat prerouting" in verdict["reason"]
    assert "native nftables DNAT" in verdict["remediation"]


def test_a_forwarded_packet_meets_the_routed_policy():
    verdict = _verdict("n-dnat-fwd-drop", 5060, "udp", 4)
    assert verdict["reason"] == ("DNAT to 172.30.0.2:5060 (nftables ip sg-nat prerouting rule 1) then "
                                 "default routed policy: drop")


def test_the_reason_names_the_nft_rule_handle():
    verdict = _verdict("n-drop-ahead", 5060, "udp", 4)
    assert verdict["reason"].startswith("nftables rule (inet sg-guard input #1 handle 2,")


def test_base_chains_run_in_priority_order():
    raw = lab.raw("n-prio-order")
    ruleset = backends.nftables.parse_ruleset(raw["commands"]["nft_ruleset"]["out"])
    found = backends.collect(4, "iptables-nft", None, ruleset,
                             backends.owned_by_iptables_nft(raw["commands"]["iptables_save"]["out"], None))
    main = backends.iptables_base_chains(ufw_model.parse_iptables_save(raw["commands"]["iptables_save"]["out"]),
                                         "iptables-nft")
    order = [b.name for b in backends._on(main + found.base_chains, "input")]
    assert order == ["nftables inet sg-early input", "iptables-nft filter INPUT", "nftables inet sg-late input"]


def test_ufw_info_returns_the_backends_that_hold_rules():
    result = ufw_model.inspect_host(lab.raw("n-prio-order"), PORTS)
    assert [(b["name"], b["tables"], b["rules"]) for b in result["backends"]][1:] == [
        ("nftables", ["inet sg-early", "inet sg-late"], 3)]
    assert result["backends"][0]["name"] == "iptables-nft"
    legacy = ufw_model.inspect_host(lab.raw("n-legacy-drop"), PORTS)["backends"]
    assert [(b["name"], b["tables"], b["rules"]) for b in legacy][1:] == [
        ("iptables-legacy", ["ip filter", "ip6 filter"], 2)]
    assert [b["name"] for b in ufw_model.inspect_host(lab.raw("deny"), PORTS)["backends"]] == ["iptables-nft"]


def test_a_host_without_nft_or_iptables_legacy_has_no_such_backend_and_no_caveat():
    raw = copy.deepcopy(lab.raw("n-drop-ahead"))
    for key in ("nft_ruleset", "iptables_legacy_save", "ip6tables_legacy_save"):
        raw["commands"][key] = {"rc": None, "out": "", "err": "%s not found" % key}
    result = ufw_model.inspect_host(raw, PORTS)
    assert [b["name"] for b in result["backends"]] == ["iptables-nft"]
    assert result["caveats"] == []
    assert result["exposure"][0]["ipv4"]["state"] == "open"  # the nft drop is not known: UFW's allow decides


def test_a_failing_nft_is_a_caveat_not_an_error():
    raw = copy.deepcopy(lab.raw("n-drop-ahead"))
    raw["commands"]["nft_ruleset"] = {"rc": 1, "out": "", "err": "netlink: Error: cache initialization failed"}
    result = ufw_model.inspect_host(raw, PORTS)
    assert any("nft -j list ruleset failed" in c and "cache initialization" in c for c in result["caveats"])


def test_when_iptables_save_is_the_legacy_one_its_rules_are_not_read_twice():
    raw = copy.deepcopy(lab.raw("n-legacy-drop"))
    raw["commands"]["iptables_save"]["out"] = raw["commands"]["iptables_legacy_save"]["out"]
    raw["commands"]["ip6tables_save"]["out"] = raw["commands"]["ip6tables_legacy_save"]["out"]
    raw["commands"]["nft_ruleset"] = {"rc": None, "out": "", "err": "nft not found"}
    result = ufw_model.inspect_host(raw, PORTS)
    assert [(b["name"], b["rules"]) for b in result["backends"]] == [("iptables-legacy", 2)]
    assert result["exposure"][0]["ipv4"]["backend"] == "iptables-legacy"


class _Host(object):
    """gather()'s view of a host: recorded stdout, and iptables-nft's stderr warning when asked."""

    def __init__(self, host, legacy_warning):
        self.host = host
        self.legacy_warning = legacy_warning
        self.ran = []

    def get_bin_path(self, name, opt_dirs=None):
        return "/usr/sbin/" + name

    def run_command(self, argv, environ_update=None):
        key = [k for k, v in ufw_model.COMMANDS.items() if v[1:] == argv[1:] and argv[0].endswith("/" + v[0])][0]
        self.ran.append(key)
        err = ""
        if key == "iptables_save" and self.legacy_warning:
            err = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
        if key == "ip6tables_save" and self.legacy_warning:  # its own words, not iptables-save's
            err = "# Warning: ip6tables-legacy tables present, use ip6tables-legacy-save to see them\n"
        return 0, lab.read(self.host, key) or "", err


@pytest.mark.parametrize("host, warned", [("n-drop-ahead", False), ("n-legacy-drop", True)])
def test_the_legacy_save_runs_only_when_iptables_nft_says_legacy_tables_exist(host, warned):
    from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_host

    module = _Host(host, warned)
    raw = ufw_host.gather(module)
    assert ("iptables_legacy_save" in module.ran) is warned
    assert ("ip6tables_legacy_save" in module.ran) is warned
    assert ("nft_ruleset" in module.ran) is True
    exposure = ufw_model.inspect_host(raw, PORTS)["exposure"]
    states = dict(((e["port"], e["proto"], f), e[f]["state"]) for e in exposure for f in ("ipv4", "ipv6"))
    assert states[(5060, "udp", "ipv4")] == "blocked"
    if warned:  # n-legacy-drop: ip6tables-legacy rejects 5060/tcp (real probes: closed)
        assert states[(5060, "tcp", "ipv6")] == "blocked"


def test_routes_are_read_for_a_native_dnat():
    from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_host

    module = _Host("n-dnat-open", False)
    ufw_host.gather(module)
    assert "ip_route" in module.ran and "ip6_route" in module.ran
