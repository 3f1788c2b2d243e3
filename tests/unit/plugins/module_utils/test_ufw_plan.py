"""ufw_port's planner on hosts recorded from the exposure lab."""

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_plan

import lab_fixtures as lab

SIP = [(5060, "udp"), (5060, "tcp"), (5061, "tcp")]
# h-hashlimit-upto and h-limit admit 5060/udp with an ACCEPT outside UFW (a rate-limited bypass).
BYPASSED = {"before-rules", "docker-dnat", "iptables-ahead", "h-hashlimit-upto", "h-limit",
            "n-dnat-open"}  # a native nftables DNAT forwarded through UFW: closed with a route rule (test_ufw_files_plan)
CLOSABLE = [h for h in sorted(lab.scenario_hosts()) if h not in BYPASSED | {"no-ufw", "ssh-alt-port"}]


def host(name, **raw_changes):
    raw = lab.raw(name)
    raw.update(raw_changes)
    return ufw_plan.HostState(raw)


def commands(plan):
    return [" ".join(c) for c in plan.commands]


@pytest.mark.parametrize("name", CLOSABLE)
def test_every_closable_host_ends_up_blocked_everywhere(name):
    plan = ufw_plan.plan_close(host(name), SIP, ssh_ports=[22])
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}
    assert plan.changed
    managed = [r for r in plan.after if (r["comment"] or "").startswith("sipguard.firewall 50")]
    # one managed rule per port/proto and family UFW manages, first in each family's list
    families = (False, True) if lab.scenario_hosts()[name].get("ipv6", True) else (False,)
    assert len(managed) == 3 * len(families)
    for v6 in families:
        family = [r for r in plan.after if r["v6"] == v6]
        assert [r["comment"] for r in family[:3]] == ["sipguard.firewall 5060/udp", "sipguard.firewall 5060/tcp",
                                                      "sipguard.firewall 5061/tcp"]


@pytest.mark.parametrize("name", CLOSABLE)
def test_planning_leaves_the_host_as_it_was_read(name):
    # ufw_port plans a second time on the same HostState when there is a change (with sshd's own
    # ports): the second plan must equal the first, so planning may not renumber the host's rules.
    state = host(name)
    numbers = [(r.tuple, r.number) for r in state.rules]
    first = ufw_plan.plan_close(state, SIP, ssh_ports=[22])
    assert [(r.tuple, r.number) for r in state.rules] == numbers
    second = ufw_plan.plan_close(state, SIP, ssh_ports=[22])
    assert (second.commands, second.after, second.files) == (first.commands, first.after, first.files)


@pytest.mark.parametrize("name, deleted", [
    # exact allows go; broader rules (range, app profile with 5061, multiport) stay, shadowed
    ("allow-proto", {"5060/udp", "5060/tcp", "5060/udp (v6)", "5060/tcp (v6)"}),
    ("range", set()),
    ("app-profile", set()),
    ("multiport", set()),
    ("limit", {"5060/tcp", "5060/tcp (v6)"}),
    ("source-restricted", {"5060/udp"}),
    ("iface-restricted", {"5060/udp", "5060/udp (v6)"}),
    # an identical unmanaged deny would make ufw skip the managed one: it is replaced
    ("deny-before-allow", {"5060/udp", "5060/udp (v6)"}),
])
def test_what_is_removed_and_what_is_kept(name, deleted):
    plan = ufw_plan.plan_close(host(name), SIP, ssh_ports=[22])
    assert {r["to"] for r in plan.deleted} == deleted
    deletes = [int(c[2]) for c in plan.commands if c[:2] == ["--force", "delete"]]
    assert deletes == sorted(deletes, reverse=True)  # numbers of the others do not move


def test_an_identical_unmanaged_rule_is_replaced_not_duplicated():
    """ufw would skip the managed rule as "existing": the unmanaged twin is deleted first."""
    plan = ufw_plan.plan_close(host("deny"), [(5060, "any")], ssh_ports=[22])
    assert commands(plan) == ["--force delete 4", "--force delete 2",
                              "prepend deny from any to any port 5060 comment sipguard.firewall 5060/any"]


@pytest.mark.parametrize("name, message", [
    ("before-rules", "would still admit 5060/udp/ipv4: before.rules rule"),
    ("docker-dnat", "would still admit 5060/udp/ipv4: DNAT to 172.30.0.2:5060"),
    ("iptables-ahead", "would still admit 5060/tcp/ipv4: netfilter rule outside UFW"),
    ("no-ufw", "ufw is not installed"),
])
def test_what_ufw_cannot_fix_is_refused(name, message):
    with pytest.raises(ufw_plan.PlanError, match=message):
        ufw_plan.plan_close(host(name, ufw_binary=None if name == "no-ufw" else "/usr/sbin/ufw"), SIP,
                            ssh_ports=[22])


def test_inactive_ufw_is_enabled_only_with_the_ssh_port_allowed():
    plan = ufw_plan.plan_close(host("inactive"), SIP, ssh_ports=[2222])
    assert commands(plan)[-2:] == ["allow proto tcp from any to any port 2222 comment sipguard.firewall ssh guard",
                                   "--force enable"]
    assert plan.enable
    with pytest.raises(ufw_plan.PlanError, match="enable_ufw is false"):
        ufw_plan.plan_close(host("inactive"), SIP, enable_ufw=False, ssh_ports=[22])


def test_no_guard_rule_when_ssh_is_already_allowed():
    plan = ufw_plan.plan_close(host("default-deny"), SIP, ssh_ports=[22])
    assert not any("ssh guard" in c for c in commands(plan))


def test_the_ssh_port_itself_is_never_closed_by_default():
    with pytest.raises(ufw_plan.PlanError, match="22/tcp is this host's SSH port"):
        ufw_plan.plan_close(host("allow-proto"), [(22, "tcp")], ssh_ports=[22])
    plan = ufw_plan.plan_close(host("allow-proto"), [(22, "tcp")], ssh_ports=[22], lockout_guard=False)
    assert plan.verdicts_after["22/tcp/ipv4"]["state"] == "blocked"


def test_restricted_puts_the_sources_above_the_block():
    plan = ufw_plan.plan_close(host("allow-any-proto"), [(5060, "udp")], state="restricted",
                               allow_from=["198.18.0.250/32", "fd53:1b7e:5060::fa"], ssh_ports=[22])
    assert plan.verdicts_after["5060/udp/ipv4"]["state"] == "restricted"
    assert plan.verdicts_after["5060/udp/ipv4"]["conditions"] == ["from 198.18.0.250/32"]
    assert plan.verdicts_after["5060/udp/ipv6"]["state"] == "restricted"
    top4 = [r for r in plan.after if not r["v6"]][:2]
    assert [(r["action"], r["src"]) for r in top4] == [("allow", "198.18.0.250"), ("deny", "0.0.0.0/0")]


def test_ipv6_disabled_plans_ipv4_only():
    plan = ufw_plan.plan_close(host("ipv6-disabled"), [(5060, "any")], ssh_ports=[22])
    assert plan.commands[-1] == ["prepend", "deny", "from", "0.0.0.0/0", "to", "any", "port", "5060", "comment",
                                 "sipguard.firewall 5060/any"]


@pytest.mark.parametrize("name", ["allow-proto", "default-reject", "limit", "range", "v6-only", "app-profile"])
def test_what_ufw_enable_loads_is_what_the_kernel_runs(name):
    """The rule set composed from ufw's files (used for an inactive host) gives the live verdicts."""
    live = host(name)
    composed = host(name)
    composed.active = False
    composed.live_text = {4: "", 6: ""}
    for family in (4, 6):
        rules = [r for r in live.rules if r.v6 == (family == 6)]
        net_live = ufw_plan._simulate(live, family, rules, {}, True)
        net_composed = ufw_plan._simulate(composed, family, rules, {}, True)
        for port, proto in SIP + [(22, "tcp")]:
            a = ufw_plan.evaluate_port(net_live, family, proto, port)
            b = ufw_plan.evaluate_port(net_composed, family, proto, port)
            assert (a["state"], a["action"], a["rule"]) == (b["state"], b["action"], b["rule"]), (family, port, proto)


@pytest.mark.parametrize("kwargs, message", [
    (dict(allow_from=["10.0.0.0/33"], state="restricted"), r"allow_from\[0\]: '10.0.0.0/33' is not an IPv4/IPv6"),
    (dict(state="restricted"), "needs at least one CIDR"),
    (dict(allow_from=["10.0.0.0/8"]), "only used with state=restricted"),
    (dict(method="drop"), "method: 'drop' is not one of deny, reject"),
    (dict(state="open"), "this module never opens a port"),
    (dict(families=["ipv5"]), "families"),
])
def test_bad_requests_name_the_option(kwargs, message):
    with pytest.raises(ufw_plan.PlanError, match=message):
        ufw_plan.plan_close(host("allow-proto"), SIP, ssh_ports=[22], **kwargs)


@pytest.mark.parametrize("ports, expected", [
    (["5060/udp", "5061", "5060/UDP"], [(5060, "udp"), (5061, "any")]),
])
def test_parse_targets(ports, expected):
    assert ufw_plan.parse_targets(ports) == expected


@pytest.mark.parametrize("ports, message", [
    (["5060/sctp"], r"ports\[0\]: '5060/sctp' has protocol 'sctp'"),
    (["0/tcp"], r"ports\[0\]: '0' is not a port"),
])
def test_parse_targets_errors(ports, message):
    with pytest.raises(ufw_plan.PlanError, match=message):
        ufw_plan.parse_targets(ports)


# --------------------------------------------------------------------------- apply=files

def _blocks(text):
    head, blocks, tail = ufw_plan.user_rules_blocks(text)
    return head, dict(blocks), [t for t, _b in blocks], tail


@pytest.mark.parametrize("name", CLOSABLE)
def test_the_planned_files_hold_the_planned_rules_and_keep_the_rest_byte_for_byte(name):
    state = host(name)
    plan = ufw_plan.plan_close(state, SIP, ssh_ports=[22])
    assert plan.files, "every closable lab host's files are in ufw's layout"
    texts = dict((fam, plan.files.get(fam, state.user_text[fam])) for fam in (4, 6))
    # read back as ufw would: the numbered rule list is the one the plan predicts
    rules = ufw_plan.number_rules(ufw_plan.parse_user_rules(texts[4], False)[0],
                                  ufw_plan.parse_user_rules(texts[6], True)[0])
    assert [r.to_dict() for r in rules] == plan.after
    added = set(r.tuple for r in rules if r.to_dict() in plan.added)
    for fam in (4, 6):
        old_head, old_blocks, _order, old_tail = _blocks(state.user_text[fam])
        new_head, new_blocks, new_order, new_tail = _blocks(texts[fam])
        assert (new_head, new_tail) == (old_head, old_tail)
        for tup in new_order:
            if tup not in added:
                assert new_blocks[tup] == old_blocks[tup]  # a kept rule is copied, not re-rendered
    assert 4 in plan.files


def _recorded_blocks():
    """Every rule ufw wrote in the lab that a managed rule can take the form of."""
    for name in lab.hosts():
        for what, fam in (("user_rules", 4), ("user6_rules", 6)):
            text = lab.read(name, what)
            if not text:
                continue
            for tup, block in ufw_plan.user_rules_blocks(text)[1]:
                fields = tup.split(" comment=")[0].split()
                if len(fields) != 7 or fields[0] not in ufw_plan.METHODS + ("allow",) or fields[6] != "in" \
                        or not fields[2].isdigit() or fields[4] != "any" or fields[3] != ufw_plan.ANY[fam]:
                    continue
                yield name, fam, fields, block


def test_managed_rules_are_rendered_as_ufw_wrote_them_in_the_lab():
    seen = set()
    for name, fam, fields, block in _recorded_blocks():
        action, proto, port, _dst, _sport, src = fields[:6]
        src = None if src == ufw_plan.ANY[fam] else src
        wanted = ufw_plan.Wanted(action, proto, int(port), src, fam, "x")
        recorded = [line for line in block.split("\n")[2:] if line]
        assert wanted.iptables_lines(fam) == recorded, (name, fields)
        seen.add((action, proto, bool(src)))
    # the recorded lab covers the forms the planner writes
    assert {("deny", "udp", False), ("deny", "any", False), ("reject", "any", False),
            ("allow", "udp", True), ("deny", "udp", True)} <= seen


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("### RULES ###\n", "### RULES ###\n-A ufw-user-input -p udp --dport 9 -j DROP\n"),
    lambda t: t.replace("### END RULES ###", "### END OF RULES ###"),
    lambda t: t.replace("### RULES ###\n", ""),
])
def test_a_hand_edited_rules_file_is_left_to_the_ufw_command_line(edit):
    state = host("allow-proto")
    state.user_text[4] = edit(state.user_text[4])
    plan = ufw_plan.plan_close(state, SIP, ssh_ports=[22])
    assert plan.files is None and plan.commands
