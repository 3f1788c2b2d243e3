"""nft -j list ruleset, recorded from the exposure lab's n-* hosts, as the walker's Rule objects."""

import json

import hypothesis
import hypothesis.strategies as st
import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import backends, nftables
from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import Packet, Walker

import lab_fixtures as lab


def _ruleset(host):
    return nftables.parse_ruleset(lab.read(host, "nft_ruleset"))


def _owned(host):
    return backends.owned_by_iptables_nft(lab.read(host, "iptables_save"), lab.read(host, "ip6tables_save"))


def _native(host, family):
    return nftables.native_tables(_ruleset(host), family, _owned(host))


def _args(tables, table, chain):
    return [rule.args for rule in tables[table][chain].rules]


def test_iptables_nft_tables_are_left_to_iptables_save():
    ruleset = _ruleset("n-drop-ahead")
    assert ("ip", "filter") in ruleset.tables and ("ip6", "filter") in ruleset.tables
    assert _owned("n-drop-ahead") == {("ip", "filter"), ("ip6", "filter")}
    tables4, _bases = _native("n-drop-ahead", 4)
    assert list(tables4) == ["nftables:inet sg-guard"]


def test_an_inet_table_serves_both_families_and_ip_only_matches_leave_ipv6():
    tables4, bases4 = _native("n-drop-ahead", 4)
    tables6, _bases6 = _native("n-drop-ahead", 6)
    key = "nftables:inet sg-guard"
    assert _args(tables4, key, "input") == [
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "DROP"],
        ["-p", "tcp", "-m", "multiport", "--dports", "5060", "-j", "DROP"],  # meta nfproto ipv4: holds
    ]
    assert _args(tables6, key, "input") == [["-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "DROP"]]
    assert [(b["hook"], b["priority"], b["type"], b["policy"]) for b in bases4] == [("input", -10, "filter", "ACCEPT")]


def test_an_ip6_table_does_not_exist_for_ipv4():
    assert _native("n-drop-after", 4) == ({}, [])
    tables6, bases6 = _native("n-drop-after", 6)
    key = "nftables:ip6 sg-late"
    assert _args(tables6, key, "input") == [["-p", "udp", "-j", "sip"]]
    assert _args(tables6, key, "sip") == [
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]]
    assert bases6[0]["priority"] == 10


def test_a_verdict_map_is_one_rule_per_element_and_icmp_rules_never_see_sip():
    tables, bases = _native("n-policy-drop", 4)
    rules = _args(tables, "nftables:inet sg-filter", "input")
    assert rules == [
        ["-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
        ["-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT"],
        ["-m", "conntrack", "--ctstate", "RELATED", "-j", "ACCEPT"],
        ["-i", "lo", "-j", "ACCEPT"],
        # meta l4proto { icmp, ipv6-icmp } accept: no SIP packet matches it
        ["-p", "tcp", "-m", "multiport", "--dports", "22", "-j", "ACCEPT"],
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "ACCEPT"],
    ]
    assert bases[0]["policy"] == "DROP" and bases[0]["priority"] == 5


def test_a_native_dnat_is_an_iptables_dnat_for_the_walker():
    tables, bases = _native("n-dnat-open", 4)
    assert _args(tables, "nftables:ip sg-nat", "prerouting") == [
        ["-m", "addrtype", "--dst-type", "LOCAL", "-p", "udp", "-m", "multiport", "--dports", "5060",
         "-j", "DNAT", "--to-destination", "172.30.0.2:5060"]]
    assert [(b["hook"], b["type"], b["priority"]) for b in bases] == [("prerouting", "nat", -100)]
    walker = Walker(tables, ["198.18.0.30"])
    out = walker.run("nftables:ip sg-nat", "prerouting", Packet(4, "udp", 5060))
    assert [(o.verdict, o.note) for o in out] == [("DNAT", "172.30.0.2:5060")]
    assert _native("n-dnat-open", 6) == ({}, [])


def test_a_source_match_and_a_jump_keep_their_meaning():
    tables, _bases = _native("n-prio-order", 4)
    assert _args(tables, "nftables:inet sg-late", "input") == [
        ["-s", "198.18.0.250", "-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "ACCEPT"],
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "DROP"],
    ]
    tables6, _bases = _native("n-prio-order", 6)
    assert _args(tables6, "nftables:inet sg-late", "input") == [
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-j", "DROP"]]


def test_xt_expressions_have_no_native_meaning_and_stay_unevaluated():
    """iptables-nft's own table, read natively: its xt matches (conntrack, comment...) become
    ``-m nft`` matches the walker does not evaluate; it decides them towards exposure."""
    tables, _bases = nftables.native_tables(_ruleset("n-drop-ahead"), 4, owned=())
    rules = [r for chain in tables["nftables:ip filter"].values() for r in chain.rules]
    unknown = [r for r in rules if r.option("--expr")]
    assert unknown and all(r.option("--expr")[0] == "nft" and '"xt"' in r.option("--expr")[2][0] for r in unknown)


@pytest.mark.parametrize("text", ["", "  \n"])
def test_no_output_is_no_tables(text):
    assert nftables.parse_ruleset(text).tables == []


@pytest.mark.parametrize("text, message", [
    ("table inet x {", "not JSON"),
    ('{"tables": []}', 'no "nftables" list'),
])
def test_output_that_is_not_nft_json_says_so(text, message):
    with pytest.raises(nftables.NftParseError, match=message):
        nftables.parse_ruleset(text)


def test_limit_over_is_the_hashlimit_above_the_walker_knows():
    """``limit rate over 20/second drop`` in libnftables-json(5)'s shape: only a flood matches."""
    ruleset = nftables.parse_ruleset(
        '{"nftables": [{"table": {"family": "inet", "name": "t"}},'
        ' {"chain": {"family": "inet", "table": "t", "name": "in", "type": "filter", "hook": "input",'
        ' "prio": 0, "policy": "accept"}},'
        ' {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2, "expr": ['
        '{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5060}},'
        '{"limit": {"rate": 20, "burst": 5, "per": "second", "inv": true}}, {"drop": null}]}}]}')
    tables, _bases = nftables.native_tables(ruleset, 4)
    assert _args(tables, "nftables:inet t", "in") == [
        ["-p", "udp", "-m", "multiport", "--dports", "5060", "-m", "hashlimit", "--hashlimit-above", "20/second",
         "--hashlimit-name", "nft", "-j", "DROP"]]


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.sampled_from(
    ["tcp", "udp", "ip", "ip6", "th", "inet", "@blocked", "5060", "lo", "eth*", "new", "dport", "saddr", "ipv4"]))
_JSON = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["match", "op", "left", "right", "payload", "protocol", "field", "meta", "key",
                                     "set", "range", "prefix", "addr", "len", "elem", "val", "vmap", "data", "dnat",
                                     "port", "family", "limit", "inv", "jump", "target", "ct", "fib", "flags",
                                     "accept", "drop", "xt"]), inner, max_size=3)), max_leaves=12)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(_JSON, max_size=4), st.sampled_from([4, 6]))
def test_any_rule_json_translates_or_is_left_unevaluated(exprs, family):
    """Bad host state never gives a traceback: whatever shape a rule has, it becomes rules the
    walker can build (an unreadable one an unevaluated match without a verdict)."""
    ruleset = nftables.parse_ruleset(json.dumps({"nftables": [
        {"table": {"family": "inet", "name": "t"}},
        {"chain": {"family": "inet", "table": "t", "name": "in", "type": "filter", "hook": "input", "prio": 0}},
        {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2, "expr": exprs}}]}))
    tables, _bases = nftables.native_tables(ruleset, family)
    walker = Walker(tables, ["198.18.0.30"])
    outcomes = walker.run("nftables:inet t", "in", Packet(family, "udp", 5060))
    assert outcomes


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.one_of(st.text(max_size=40), _JSON.map(json.dumps)))
def test_any_output_parses_or_says_it_is_not_nft_json(text):
    try:
        nftables.parse_ruleset(text)
    except nftables.NftParseError as exc:
        assert "nft -j list ruleset" in str(exc)
