"""Properties of the planner on every recorded lab host, with random UFW rules added ahead of the host's own.

For any plan the planner makes (it may refuse instead, with PlanError):
- a guarded SSH port that answers today is not blocked afterwards, on IPv4 or IPv6 (UFW filters both
  once enabled, whatever ``families`` says);
- planning twice on the same host gives the same plan;
- the planned rules block every requested port on every requested family.
"After" is read back from the planned rules files like a new host and evaluated with the one model
(``evaluate_port``), not taken from the planner's own prediction.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_plan
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import evaluate_port

import lab_fixtures as lab

HOSTS = lab.hosts()
SIP = [(5060, "udp"), (5060, "tcp"), (5061, "tcp")]
SOURCES = {4: [None, "198.18.0.0/24", "10.0.0.0/8", "198.18.0.250"],
           6: [None, "fd53:1b7e:5060::/64", "fd53:1b7e:5060::fa"]}


@st.composite
def random_rule(draw):
    family = draw(st.sampled_from([None, 4, 6]))
    src = draw(st.sampled_from(SOURCES[family])) if family else None
    return ufw_plan.Wanted(draw(st.sampled_from(["allow", "deny", "reject"])),
                           draw(st.sampled_from(["tcp", "udp", "any"])),
                           draw(st.sampled_from([22, 2222, 5060, 5061, 5000])), src, family, "random rule")


def with_rules(name, extra):
    """The raw host ``name`` with ``extra`` (Wanted) placed first in its user rules, as ufw writes them."""
    raw = lab.raw(name)
    host = ufw_plan.HostState(raw)
    files = dict(raw["files"])
    for family, key in ((4, "user_rules"), (6, "user6_rules")):
        if not host.user_text[family]:
            continue
        new_lines = {}
        rules = []
        for w in extra:
            if family in w.families([4, 6]):
                tup = w.tuple_text(family)
                if tup not in new_lines:
                    new_lines[tup] = w.iptables_lines(family)
                    rules.append(ufw_plan.UfwRule(tup, family == 6))
        rules += [r for r in host.rules if r.v6 == (family == 6) and r.tuple not in new_lines]
        text = ufw_plan.render_user_rules(host.user_text[family], rules, new_lines)
        if text is not None:
            files[key] = text
    raw["files"] = files
    return raw


def state_on(host, family, port, proto, active):
    net = ufw_plan._simulate(host, family, [r for r in host.rules if r.v6 == (family == 6)], {}, active)
    return evaluate_port(net, family, proto, port)["state"]


def after_host(raw, plan):
    raw = dict(raw)
    raw["files"] = dict(raw["files"])
    for family, text in (plan.files or {}).items():
        raw["files"]["user_rules" if family == 4 else "user6_rules"] = text
    return ufw_plan.HostState(raw)


def check_plan(raw, targets, families, ssh_ports, method="deny"):
    before = ufw_plan.HostState(raw)
    try:
        plan = ufw_plan.plan_close(before, targets, families=families, ssh_ports=ssh_ports, method=method)
    except ufw_plan.PlanError:
        return None
    # planning twice gives the same plan (on the same HostState and on a new read of the host)
    for host in (before, ufw_plan.HostState(raw)):
        again = ufw_plan.plan_close(host, targets, families=families, ssh_ports=ssh_ports, method=method)
        assert (again.commands, again.after, again.files, again.enable) == \
            (plan.commands, plan.after, plan.files, plan.enable)
    if plan.files is None:
        return plan  # only the ufw command line can make this change; nothing to read back
    after = after_host(raw, plan)
    active = before.active or plan.enable
    for port in ssh_ports:
        for family in ((4, 6) if before.ipv6 else (4,)):  # what UFW filters once enabled
            if state_on(before, family, port, "tcp", before.active) != "blocked":
                assert state_on(after, family, port, "tcp", active) != "blocked", (port, family, plan.commands)
    for family in (4, 6):
        if "ipv%d" % family not in families or (family == 6 and not before.ipv6):
            continue
        for port, proto in targets:
            for p in (("tcp", "udp") if proto == "any" else (proto,)):
                assert state_on(after, family, port, p, active) == "blocked", (port, p, family, plan.commands)
    return plan


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("families", [["ipv4", "ipv6"], ["ipv4"], ["ipv6"]])
def test_every_recorded_host(name, families):
    ssh = [2222] if name == "ssh-alt-port" else [22]
    check_plan(lab.raw(name), SIP, families, ssh)


def test_the_recorded_inactive_host_is_planned_and_guarded_on_both_families():
    plan = check_plan(lab.raw("inactive"), SIP, ["ipv4"], [22, 2222])
    assert plan is not None and plan.enable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(HOSTS),
       extra=st.lists(random_rule(), max_size=5),
       targets=st.lists(st.sampled_from(SIP + [(5000, "any")]), min_size=1, max_size=3, unique=True),
       families=st.sampled_from([["ipv4", "ipv6"], ["ipv4"], ["ipv6"]]),
       ssh_ports=st.lists(st.sampled_from([22, 2222]), min_size=1, max_size=2, unique=True),
       method=st.sampled_from(["deny", "reject"]))
def test_random_rule_sets(name, extra, targets, families, ssh_ports, method):
    check_plan(with_rules(name, extra), targets, families, ssh_ports, method)
