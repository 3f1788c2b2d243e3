"""The iptables-save parser and the packet walker, on recorded lab outputs."""

import shlex

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import netfilter

import lab_fixtures as lab


@pytest.mark.parametrize("host", lab.hosts())
@pytest.mark.parametrize("what", ["iptables_save", "ip6tables_save", "user_rules", "user6_rules"])
def test_every_recorded_rule_set_parses(host, what):
    text = lab.read(host, what)
    if text is None:
        pytest.skip("not recorded for this host")
    tables = netfilter.parse_iptables_save(text)
    assert ("filter" in tables) == ("*filter" in text)  # no-ufw's netfilter is empty
    for chain in tables.get("filter", {}).values():
        for rule in chain.rules:
            assert rule.target or rule.matches  # nothing silently dropped
    # The fast path (str.split for lines without quotes) must split exactly as shlex does.
    raw_lines = text.splitlines()
    rules = [r for chains in tables.values() for chain in chains.values() for r in chain.rules]
    assert len(rules) == len([x for x in raw_lines if x.strip().startswith(("-A ", "-I "))])
    for rule in rules:
        expected = shlex.split(raw_lines[rule.line - 1].strip())[2:]
        if expected and raw_lines[rule.line - 1].strip().startswith("-I ") and expected[0].isdigit():
            expected = expected[1:]
        assert rule.args == expected


def test_live_rules_keep_order_negation_and_quoted_arguments():
    tables = netfilter.parse_iptables_save(lab.read("docker-dnat", "iptables_save"))
    docker = tables["filter"]["DOCKER"].rules[0]
    assert docker.basics == {"dst": (False, "172.30.0.2/32"), "in": (True, "ctr0"), "out": (False, "ctr0"),
                             "proto": (False, "udp")}
    assert docker.option("--dport") == ("udp", False, ["5060"])
    assert [r.target for r in tables["filter"]["FORWARD"].rules[:4]] == ["DOCKER-USER", "ACCEPT", "DOCKER", "ACCEPT"]
    log = tables["filter"]["ufw-after-logging-input"].rules[0]
    assert log.target_args["--log-prefix"] == (False, ["[UFW BLOCK] "])
    nat = tables["nat"]["DOCKER"].rules[0]
    assert (nat.target, nat.target_args["--to-destination"][1]) == ("DNAT", ["172.30.0.2:5060"])


def test_user_rules_file_attaches_tuples_and_honours_insert():
    tables = netfilter.parse_iptables_save(lab.read("limit", "user_rules"))
    rules = tables["filter"]["ufw-user-input"].rules
    assert [r.tuple for r in rules] == ["allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"] + \
        ["limit tcp 5060 0.0.0.0/0 any 0.0.0.0/0 in"] * 3
    # user.rules has "-I ufw-logging-deny -m conntrack --ctstate INVALID -j RETURN ..." after an -A.
    deny = tables["filter"]["ufw-logging-deny"].rules
    assert [r.target for r in deny] == ["RETURN", "LOG"]
    assert rules[1].option("--set") == ("recent", False, [])


@pytest.mark.parametrize("text, message", [
    ("-A INPUT -j ACCEPT\n", "outside a \\*table"),
    ("*filter\n-A INPUT -p\nCOMMIT\n", "needs a value"),
    ("*filter\n-X INPUT\nCOMMIT\n", "expected -A/-I"),
    ("*filter\n-A INPUT --comment 'open\nCOMMIT\n", "No closing quotation"),
])
def test_parse_errors_say_where(text, message):
    with pytest.raises(netfilter.NetfilterParseError, match=message):
        netfilter.parse_iptables_save(text)


def test_routes_and_addresses():
    routes = netfilter.parse_routes(lab.read("docker-dnat", "ip_route"))
    assert netfilter.route_device(routes, "172.30.0.2") == "ctr0"
    assert netfilter.route_device(routes, "203.0.113.9") == "eth0"  # the default route
    routes6 = netfilter.parse_routes(lab.read("docker-dnat", "ip6_route"))
    assert netfilter.route_device(routes6, "2001:db8::1") is None
    addresses = netfilter.parse_addresses(lab.read("docker-dnat", "ip_addr"))
    assert [a for _dev, a in addresses] == ["198.18.0.32", "fd53:1b7e:5060::20", "172.30.0.1"]


def test_walker_forks_on_the_source_and_keeps_both_paths():
    tables = netfilter.parse_iptables_save(lab.read("source-restricted", "iptables_save"))
    walker = netfilter.Walker(tables, ["198.18.0.23"])
    outcomes = walker.run("filter", "INPUT", netfilter.Packet(4, "udp", 5060))
    by_generic = dict((o.is_generic(), o.verdict) for o in outcomes)
    assert by_generic == {True: "DROP", False: "ACCEPT"}
    admitted = [o for o in outcomes if o.verdict == "ACCEPT"][0]
    assert admitted.conditions() == ["from 198.18.0.250/32"]
    assert admitted.frames[-1] == ("filter", "ufw-user-input", 2)


def test_unknown_matches_err_towards_exposure():
    # Constructed (no lab host runs xt_time): an ACCEPT behind a match the model cannot evaluate.
    text = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp -m time --timestart 09:00 --dport 5060 -j ACCEPT\nCOMMIT\n"
    outcomes = netfilter.Walker(netfilter.parse_iptables_save(text), ["198.18.0.9"]).run(
        "filter", "INPUT", netfilter.Packet(4, "udp", 5060))
    generic = [o for o in outcomes if o.is_generic()][0]
    assert generic.verdict == "ACCEPT"
