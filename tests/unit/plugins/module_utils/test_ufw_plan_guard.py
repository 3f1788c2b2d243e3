"""The planner's SSH guard and strict inputs (issue 12 items 3 and 4), on hosts recorded from the lab."""

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_plan
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import evaluate_port

import lab_fixtures as lab

SIP = [(5060, "udp"), (5060, "tcp"), (5061, "tcp")]


def host(name):
    return ufw_plan.HostState(lab.raw(name))


def guards(plan):
    return sorted((r["ports"], r["v6"]) for r in plan.added if r["comment"] == ufw_plan.SSH_GUARD_COMMENT)


def after_state(plan, state, port, family):
    """The verdict for ``port``/tcp once the planned files are loaded, read back like a new host."""
    raw = dict(state.raw)
    raw["files"] = dict(raw["files"])
    for fam, text in plan.files.items():
        raw["files"]["user_rules" if fam == 4 else "user6_rules"] = text
    after = ufw_plan.HostState(raw)
    net = ufw_plan._simulate(after, family, [r for r in after.rules if r.v6 == (family == 6)], {}, True)
    return evaluate_port(net, family, "tcp", port)["state"]


def test_enabling_ufw_for_ipv4_only_still_guards_ssh_over_ipv6():
    # ufw enable turns on both families: with families [ipv4] the guard used to cover IPv4 only,
    # and 22/tcp over IPv6 was blocked by the default policy.
    state = host("inactive")
    plan = ufw_plan.plan_close(state, SIP, families=["ipv4"], ssh_ports=[22])
    assert plan.enable
    assert guards(plan) == [("22", False), ("22", True)]
    assert after_state(plan, state, 22, 6) == "open" and after_state(plan, state, 22, 4) == "open"
    assert "5060/udp/ipv4" in plan.verdicts_after and plan.verdicts_after["5060/udp/ipv4"]["state"] == "blocked"


def test_every_guarded_port_is_allowed_on_both_families():
    state = host("inactive")
    plan = ufw_plan.plan_close(state, SIP, ssh_ports=[2222, 22])
    assert guards(plan) == [("22", False), ("22", True), ("2222", False), ("2222", True)]
    for port in (22, 2222):
        for family in (4, 6):
            assert after_state(plan, state, port, family) == "open"


def test_no_ssh_port_known_refuses_to_enable_ufw():
    with pytest.raises(ufw_plan.PlanError, match=r"no SSH port could be found .* ssh_ports \(e\.g\. ssh_ports: \[22\]\)"):
        ufw_plan.plan_close(host("inactive"), SIP, ssh_ports=[])
    # named ports are enough; without the guard (console access) it is the operator's call
    assert ufw_plan.plan_close(host("inactive"), SIP, ssh_ports=[22]).enable
    assert ufw_plan.plan_close(host("inactive"), SIP, ssh_ports=[], lockout_guard=False).enable
    # an active UFW is not enabled: nothing to refuse
    assert ufw_plan.plan_close(host("allow-proto"), SIP, ssh_ports=[]).changed


def test_closing_the_ssh_port_itself_is_still_refused():
    with pytest.raises(ufw_plan.PlanError, match="port 2222/tcp is this host's SSH port"):
        ufw_plan.plan_close(host("inactive"), [(2222, "any")], ssh_ports=[22, 2222])


def test_families_ipv6_on_a_host_with_ipv6_disabled_is_refused():
    # it used to plan an IPv4 change
    with pytest.raises(ufw_plan.PlanError, match=r"families: \['ipv6'\] but /etc/default/ufw has IPV6=no"):
        ufw_plan.plan_close(host("ipv6-disabled"), SIP, families=["ipv6"], ssh_ports=[22])
    plan = ufw_plan.plan_close(host("ipv6-disabled"), SIP, families=["ipv4", "ipv6"], ssh_ports=[22])
    assert all(not r["v6"] for r in plan.added)


@pytest.mark.parametrize("allow_from, message", [
    (["203.0.113.77/8"], r"allow_from\[0\]: '203.0.113.77/8' has host bits set: did you mean 203.0.0.0/8 "
                         r"\(the network\) or 203.0.113.77 \(that one host\)\?"),
    (["198.18.0.0/24", "2001:db8::1/32"], r"allow_from\[1\]: '2001:db8::1/32' has host bits set: did you mean "
                                          r"2001:db8::/32"),
    (["0.0.0.0/1", "128.0.0.0/1"], r"allow_from: 0.0.0.0/1, 128.0.0.0/1 together admit 3702258688 public IPv4 "
                                   r"addresses, more than a /8: that is no restriction"),
    (["0.0.0.0/0"], r"allow_from: 0.0.0.0/0 admits .* public IPv4 addresses, more than a /8"),
    (["::/0"], r"allow_from: ::/0 admits .* public IPv6 addresses, more than a /32"),
    (["8.0.0.0/7"], r"allow_from: 8.0.0.0/7 admits 33554432 public IPv4 addresses, more than a /8"),
    (["2000::/3"], r"allow_from: 2000::/3 admits"),
])
def test_allow_from_that_is_no_restriction_or_not_a_network_is_refused_naming_the_input(allow_from, message):
    with pytest.raises(ufw_plan.PlanError, match=message) as err:
        ufw_plan.plan_close(host("allow-proto"), SIP, state="restricted", allow_from=allow_from, ssh_ports=[22])
    assert "ufw rule" not in str(err.value)


@pytest.mark.parametrize("allow_from", [
    ["198.18.0.250", "10.0.0.0/8"],       # private space is no share of the Internet
    ["8.0.0.0/8"],                        # exactly a /8 is the limit
    ["2001:db8::/32", "fd53:1b7e:5060::fa"],
    ["0.0.0.0/1", "10.0.0.0/8"],          # the v4 check counts public space only -- with a wide limit
])
def test_narrow_sources_are_a_restriction(allow_from):
    prefix = {"ipv4": 0} if "0.0.0.0/1" in allow_from else None
    plan = ufw_plan.plan_close(host("allow-any-proto"), [(5060, "udp")], state="restricted", allow_from=allow_from,
                               ssh_ports=[22], restricted_prefix=prefix)
    assert plan.changed
    family = "ipv6" if ":" in allow_from[0] else "ipv4"
    assert plan.verdicts_after["5060/udp/%s" % family]["state"] == "restricted"


def test_restricted_prefix_is_checked():
    with pytest.raises(ufw_plan.PlanError):
        ufw_plan.check_request(5060, "udp", "restricted", ["8.0.0.0/7"], "deny", ["ipv4"])
    ufw_plan.check_request(5060, "udp", "restricted", ["8.0.0.0/7"], "deny", ["ipv4"], {"ipv4": 7})
    from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import UfwModelError
    with pytest.raises(UfwModelError, match=r"restricted_prefix.ipv4: 33 is not a prefix length \(0-32\)"):
        ufw_plan.check_request(5060, "udp", "restricted", ["8.0.0.0/7"], "deny", ["ipv4"], {"ipv4": 33})


@pytest.mark.parametrize("values, message", [
    ([0], r"ssh_ports\[0\]: 0 is not a port \(1-65535\)"),
    ([22, 70000], r"ssh_ports\[1\]: 70000 is not a port"),
])
def test_named_ssh_ports_are_ports(values, message):
    with pytest.raises(ufw_plan.PlanError, match=message):
        ufw_plan.check_ssh_ports(values)
    assert ufw_plan.check_ssh_ports([2222, 22, 22]) == [22, 2222]
