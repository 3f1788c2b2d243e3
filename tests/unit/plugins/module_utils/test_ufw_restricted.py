"""What "restricted" means (issue 13 item 4): a restriction that admits the Internet is open."""

import ipaddress

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_model
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec

import lab_fixtures as lab

N = ipaddress.ip_network


@pytest.mark.parametrize("nets, count", [
    (["0.0.0.0/0"], 3702258688),
    (["0.0.0.0/1", "128.0.0.0/1"], 3702258688),
    (["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15"], 0),
    (["8.0.0.0/8"], 2 ** 24),
    (["8.0.0.0/8", "8.8.8.0/24"], 2 ** 24),    # overlaps count once
    (["fd00::/8", "fe80::/10"], 0),
    (["2001:db8::/32"], 2 ** 96),
    (["::/0"], 2 ** 125),
    ([], 0),
])
def test_public_addresses(nets, count):
    assert ufw_model.public_addresses([N(n) for n in nets]) == count


def test_the_limit_is_more_than_one_network_of_the_prefix():
    limits = ufw_model.restricted_limits()
    assert ufw_model.too_wide([N("8.0.0.0/8")], 4, limits) is None
    assert ufw_model.too_wide([N("8.0.0.0/8"), N("9.0.0.1/32")], 4, limits) == \
        "16777217 public IPv4 addresses, more than a /8"
    assert ufw_model.too_wide([N("2001:db8::/32")], 6, limits) is None
    assert ufw_model.too_wide([N("2001:db8::/31")], 6, limits) == "2^97 public IPv6 addresses, more than a /32"
    assert ufw_model.too_wide([N("8.0.0.0/8")], 4, ufw_model.restricted_limits({"ipv4": 16})) is not None


@pytest.mark.parametrize("value, message", [
    ({"ipv4": 33}, r"restricted_prefix.ipv4: 33 is not a prefix length \(0-32\)"),
    ({"ipv6": -1}, r"restricted_prefix.ipv6: -1 is not a prefix length \(0-128\)"),
    ({"ipv5": 8}, r"restricted_prefix: 'ipv5' is not ipv4 or ipv6"),
])
def test_restricted_prefix_is_checked_naming_the_value(value, message):
    with pytest.raises(ufw_model.UfwModelError, match=message):
        ufw_model.restricted_limits(value)


def test_restricted_prefix_defaults_and_none_values():
    assert ufw_model.restricted_limits(None) == {4: 8, 6: 32}
    assert ufw_model.restricted_limits({"ipv4": 16, "ipv6": None}) == {4: 16, 6: 32}


def verdict(host, port, proto, family, restricted_prefix=None):
    info = ufw_model.inspect_host(lab.raw(host), [PortSpec(port, proto)], restricted_prefix)
    return info["exposure"][0]["ipv%d" % family]


def test_an_interface_that_carries_the_default_route_is_no_restriction():
    # iface-restricted: allow in on eth0; eth0 carries the IPv4 default route and no IPv6 one
    v4 = verdict("iface-restricted", 5060, "udp", 4)
    assert v4["state"] == "open"
    assert v4["reason"].startswith("the admitted senders on eth0, which carries the default route, are no restriction")
    assert v4["conditions"] == ["in on eth0"]
    v6 = verdict("iface-restricted", 5060, "udp", 6)
    assert v6["state"] == "restricted"


def test_a_source_restriction_stays_restricted_and_a_wide_limit_changes_nothing_for_it():
    assert verdict("source-restricted", 5060, "udp", 4)["state"] == "restricted"
    assert verdict("source-restricted", 5060, "udp", 4, {"ipv4": 32})["state"] == "restricted"


def test_the_interface_rule_needs_the_routes():
    # without the routes (not read) the default-route interface is unknown: a real restriction is assumed
    raw = lab.raw("iface-restricted")
    raw["commands"]["ip_route"] = {"rc": 0, "out": "", "err": "not read"}
    info = ufw_model.inspect_host(raw, [PortSpec(5060, "udp")])
    assert info["exposure"][0]["ipv4"]["state"] == "restricted"


@pytest.mark.parametrize("text, needed", [
    (lab.read("iface-restricted", "iptables_save"), True),
    (lab.read("allow-proto", "iptables_save"), False),    # only ufw's own "-i lo"
    (lab.read("docker-dnat", "iptables_save"), True),
    (lab.read("n-drop-ahead", "nft_ruleset"), False),     # iptables-nft's tables in nft -j: iifname "lo" only
    (lab.read("n-dnat-open", "nft_ruleset"), True),       # a native dnat
    ('{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}}', True),
    (None, True),
])
def test_routes_are_read_for_an_interface_match_or_a_dnat(text, needed):
    from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import needs_routes
    assert needs_routes(text) is needed
