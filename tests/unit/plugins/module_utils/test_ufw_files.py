"""Editing UFW's before/after rules files (ufw_files) and planning with edit_ufw_files, docker and route
rules (ufw_plan), on files and hosts recorded from the exposure lab.

Properties (hypothesis) on a recorded before.rules with a random admitting line put in: the edit keeps
the file parseable, changes only that line (commented, or a marked block inserted ahead), and the
evaluator no longer finds the port admitted by any line of the file; the docker block is idempotent.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_change, ufw_files, ufw_host, ufw_plan
from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import parse_iptables_save
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import inspect_host

import lab_fixtures as lab

SIP = [(5060, "udp"), (5060, "tcp")]
BEFORE = lab.read("before-rules", "before_rules")
STOCK_BEFORE = lab.read("deny", "before_rules")
MARK = "# End required lines\n"


def host(name, **files):
    raw = lab.raw(name)
    raw["files"].update(files)
    return ufw_plan.HostState(raw)


def rules_of(text, chain="ufw-before-input"):
    return [r.args for r in parse_iptables_save(text)["filter"][chain].rules]


# ------------------------------------------------------------------ the editor


@pytest.mark.parametrize("line, only", [
    ("-A ufw-before-input -p udp --dport 5060 -j ACCEPT", True),
    ("-A ufw-before-input -p udp -m udp --dport 5060 -m comment --comment x -j ACCEPT", True),
    ("-A ufw-before-input -p udp --dport 5000:5100 -j ACCEPT", False),
    ("-A ufw-before-input -p udp -m multiport --dports 5060,5061 -j ACCEPT", False),
    ("-A ufw-before-input -p udp -j ACCEPT", False),
    ("-A ufw-before-input -s 10.0.0.0/8 -j ACCEPT", False),
    ("-A ufw-before-input -p tcp --dport 5060 -j ACCEPT", False),  # another protocol than the one closed
])
def test_a_line_admits_only_the_port_or_other_ports_too(line, only):
    rule = parse_iptables_save("*filter\n%s\nCOMMIT\n" % line)["filter"]["ufw-before-input"].rules[0]
    assert ufw_files.admits_only(rule, "udp", 5060) is only


def test_the_recorded_before_rules_line_is_commented_out_with_the_run_marker():
    text, edit = ufw_files.edit_admitting_line(BEFORE, "/etc/ufw/before.rules", "ufw-before-input", 1, "udp", 5060,
                                               "deny", "sipguard.firewall 5060/udp", "close-1")
    assert edit == {"file": "/etc/ufw/before.rules", "line": 18, "action": "commented",
                    "text": "-A ufw-before-input -p udp --dport 5060 -j ACCEPT"}
    assert text.splitlines()[17] == "# sipguard close-1: -A ufw-before-input -p udp --dport 5060 -j ACCEPT"
    assert [l for i, l in enumerate(text.splitlines()) if i != 17] == \
        [l for i, l in enumerate(BEFORE.splitlines()) if i != 17]


def test_a_file_that_does_not_parse_is_never_edited():
    broken = BEFORE.replace("*filter", "filter", 1)  # rules outside a *table block
    with pytest.raises(ufw_files.FileEditError, match="does not parse"):
        ufw_files.edit_admitting_line(broken, "/etc/ufw/before.rules", "ufw-before-input", 1, "udp", 5060, "deny",
                                      "c", "r")


def test_a_chain_filled_with_insert_is_not_edited():
    text = BEFORE.replace(MARK, MARK + "-I ufw-before-input -p udp --dport 5060 -j ACCEPT\n", 1)
    with pytest.raises(ufw_files.FileEditError, match="-I"):
        ufw_files.edit_admitting_line(text, "/etc/ufw/before.rules", "ufw-before-input", 1, "udp", 5060, "deny",
                                      "c", "r")


ADMITTING = st.sampled_from([
    "-p udp --dport 5060", "-p udp -m udp --dport 5060", "-p udp --dport 5000:5100", "-p udp",
    "-p udp -m multiport --dports 5058:5062", "-s 0.0.0.0/1", "-p udp --dport 5060 -m comment --comment 'x y'",
    "-p udp -m conntrack --ctstate NEW --dport 5060",
])


@settings(max_examples=60, deadline=None)
@given(match=ADMITTING, position=st.integers(min_value=0, max_value=12), method=st.sampled_from(["deny", "reject"]),
       run_id=st.from_regex(r"\A[A-Za-z0-9._-]{1,20}\Z"))
def test_an_edit_touches_only_its_line_and_leaves_nothing_that_admits(match, position, method, run_id):
    lines = STOCK_BEFORE.splitlines(True)
    rule_lines = [i for i, l in enumerate(lines) if l.startswith("-A ufw-before-input")]
    at = rule_lines[min(position, len(rule_lines) - 1)]
    lines.insert(at, "-A ufw-before-input %s -j ACCEPT\n" % match)
    text = "".join(lines)
    index = [i for i, l in enumerate(lines) if l.startswith("-A ufw-before-input")].index(at) + 1
    new, edit = ufw_files.edit_admitting_line(text, "/etc/ufw/before.rules", "ufw-before-input", index, "udp", 5060,
                                              method, "sipguard.firewall 5060/udp", run_id)
    assert edit["line"] == at + 1
    parse_iptables_save(new)  # still a file iptables-restore reads
    old_lines, new_lines = text.splitlines(), new.splitlines()
    if edit["action"] == "commented":
        assert new_lines[at] == ufw_files.marker(run_id) + old_lines[at]
        assert new_lines[:at] + new_lines[at + 1:] == old_lines[:at] + old_lines[at + 1:]
    else:
        assert new_lines[:at] + new_lines[at + 2:] == old_lines  # two lines in: the marker and the block
        assert new_lines[at].startswith(ufw_files.marker(run_id))
        assert new_lines[at + 1] == edit["inserted"]
    # with the edited file the evaluator finds the port blocked (the stock before.rules admits nothing else)
    planned = ufw_plan.plan_close(host("deny", before_rules=new), [(5060, "udp")], ssh_ports=[22],
                                  families=["ipv4"])
    assert planned.verdicts_after["5060/udp/ipv4"]["state"] == "blocked"


@settings(max_examples=30, deadline=None)
@given(ports=st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["udp", "tcp"])), min_size=1, max_size=4,
                      unique=True),
       family=st.sampled_from([4, 6]), method=st.sampled_from(["deny", "reject"]),
       tail=st.sampled_from(["", "\n", "\n\n", "# a comment\n"]))
def test_the_docker_block_is_idempotent_parses_and_comes_out_again(ports, family, method, tail):
    after = lab.read("deny", "after_rules" if family == 4 else "after6_rules") + tail
    block = ufw_files.docker_block(family, [(p, proto, "sipguard.firewall %d/%s" % (p, proto)) for p, proto in ports],
                                   method)
    once = ufw_files.with_docker_block(after, "after.rules", block)
    assert ufw_files.with_docker_block(once, "after.rules", block) == once
    chains = parse_iptables_save(once)["filter"]
    assert len(chains["DOCKER-USER"].rules) == len(ports) + 2
    assert parse_iptables_save(ufw_files.without_docker_block(once)) == parse_iptables_save(after) or \
        [r.args for c in parse_iptables_save(ufw_files.without_docker_block(once))["filter"].values()
         for r in c.rules] == [r.args for c in parse_iptables_save(after)["filter"].values() for r in c.rules]
    other = ufw_files.docker_block(family, [(ports[0][0], ports[0][1], "x")], method)
    assert ufw_files.split_docker_block(ufw_files.with_docker_block(once, "after.rules", other))[1] == other


# ------------------------------------------------------------------ planning


def test_before_rules_without_the_option_is_refused_naming_it():
    with pytest.raises(ufw_plan.PlanError, match="edit_ufw_files: true would disable that line"):
        ufw_plan.plan_close(host("before-rules"), SIP, ssh_ports=[22])


def test_before_rules_with_the_option_comments_the_line_out_and_closes():
    plan = ufw_plan.plan_close(host("before-rules"), SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r1")
    assert [(e["file"], e["line"], e["action"]) for e in plan.file_edits] == [("/etc/ufw/before.rules", 18,
                                                                              "commented")]
    assert set(plan.rule_files) == {"/etc/ufw/before.rules"}
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_the_planned_files_read_back_as_a_host_need_no_further_edit():
    first = ufw_plan.plan_close(host("before-rules"), SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r1")
    # the host once ufw reloaded the edited file: the line is gone from the kernel's chain too
    raw = lab.raw("before-rules")
    raw["files"]["before_rules"] = first.rule_files["/etc/ufw/before.rules"]
    live = raw["commands"]["iptables_save"]["out"]
    raw["commands"]["iptables_save"]["out"] = live.replace("-A ufw-before-input -p udp -m udp --dport 5060 -j ACCEPT\n",
                                                           "", 1)
    again = ufw_plan.plan_close(ufw_plan.HostState(raw), SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r2")
    assert again.file_edits == [] and again.rule_files == {}
    assert set(v["state"] for v in again.verdicts_after.values()) == {"blocked"}


def test_a_file_edited_but_not_reloaded_is_refused_rather_than_edited_at_the_wrong_line():
    first = ufw_plan.plan_close(host("before-rules"), SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r1")
    stale = host("before-rules", before_rules=first.rule_files["/etc/ufw/before.rules"])
    with pytest.raises(ufw_plan.PlanError, match="still admit 5060/udp/ipv4"):
        ufw_plan.plan_close(stale, SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r2")


def test_docker_without_the_option_is_refused_naming_it_and_with_it_gets_the_block():
    with pytest.raises(ufw_plan.PlanError, match="docker: true would drop"):
        ufw_plan.plan_close(host("docker-dnat"), SIP, ssh_ports=[22])
    plan = ufw_plan.plan_close(host("docker-dnat"), SIP, ssh_ports=[22], docker=True)
    assert [e["action"] for e in plan.file_edits] == ["docker block"]
    assert list(plan.rule_files) == ["/etc/ufw/after.rules"]  # no DOCKER-USER over IPv6 on that host
    assert "--ctorigdstport 5060" in plan.rule_files["/etc/ufw/after.rules"]
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_docker_is_nothing_to_do_where_there_is_no_docker_user_chain():
    plan = ufw_plan.plan_close(host("allow-proto"), SIP, ssh_ports=[22], docker=True, edit_ufw_files=True)
    assert plan.rule_files == {} and plan.file_edits == []


def test_a_dnat_forwarded_through_ufw_is_closed_with_route_rules_to_its_destination():
    plan = ufw_plan.plan_close(host("n-dnat-open"), SIP, ssh_ports=[22])
    assert ["route", "prepend", "deny", "proto", "udp", "from", "any", "to", "172.30.0.2", "port", "5060",
            "comment", "sipguard.firewall 5060/udp"] in plan.commands
    assert "-A ufw-user-forward -p udp -d 172.30.0.2 --dport 5060 -j DROP" in plan.files[4]
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}
    assert "DENY FWD" in ufw_plan.render_rules(plan.after)


@pytest.mark.parametrize("name, closed_by", [
    ("before-rules", "edit_ufw_files"), ("docker-dnat", "docker"), ("n-dnat-open", "rules"),
    ("allow-proto", "rules"), ("inactive", "rules"), ("iptables-ahead", None), ("h-limit", None),
    ("no-ufw", None),
])
def test_each_admitted_port_says_which_option_closes_it(name, closed_by):
    info = inspect_host(host(name), [PortSpec(5060, "udp"), PortSpec(5060, "tcp")])
    found = set(v["closed_by"] for e in info["exposure"] for v in (e["ipv4"], e["ipv6"]) if v["state"] != "blocked")
    assert found == {closed_by}
    assert all(v["closed_by"] is None for e in info["exposure"] for v in (e["ipv4"], e["ipv6"])
               if v["state"] == "blocked")


def test_out_of_reach_names_the_rule_its_backend_and_the_command():
    info = inspect_host(host("iptables-ahead"), [PortSpec(5060, "tcp")])
    remedy = info["exposure"][0]["ipv4"]["remediation"]
    assert "iptables-nft rule" in remedy and remedy.endswith("iptables -t filter -D INPUT 1")


# ------------------------------------------------------------------ the transaction


def test_the_backup_and_the_rollback_script_cover_the_rules_files():
    for path in ufw_files.RULE_FILES.values():
        assert path in ufw_host.BACKED_UP
    script = ufw_host.rollback_script("/var/lib/sipguard/rollback/x", "/usr/sbin/ufw", True)
    assert "before.rules before6.rules after.rules after6.rules" in script
    assert 'iptables-restore -n "$dir/docker-user4.rules"' in script


def test_the_transaction_writes_the_files_reloads_and_keeps_docker_user_for_the_rollback():
    from fake_runner import FakeRunner

    before = lab.raw("docker-dnat")
    runner = FakeRunner(before=before, after=before)
    request = ufw_change.ChangeRequest({"ports": ["5060/udp"], "docker": True, "rollback_id": "t"})
    with pytest.raises(ufw_change.ChangeFailed, match="does not match the plan"):
        # the fake host does not change, so the verify step fails and the backup is restored
        ufw_change.run_change(runner, request, now=lambda: 1.0)
    assert runner.calls.index("write_rule_files") < runner.calls.index("apply") < runner.calls.index("reload")
    assert "restore" in runner.calls
    assert runner.chains == {4: "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\nCOMMIT\n"}


def test_check_mode_returns_the_file_edits_and_their_diff():
    from fake_runner import FakeRunner

    runner = FakeRunner(before=lab.raw("before-rules"))
    request = ufw_change.ChangeRequest({"ports": ["5060/udp"], "edit_ufw_files": True, "rollback_id": "t"})
    result = ufw_change.run_change(runner, request, check_mode=True, now=lambda: 1.0)
    assert [e["action"] for e in result["file_edits"]] == ["commented"]
    assert [d["before_header"] for d in result["diff"]] == ["ufw status numbered", "/etc/ufw/before.rules"]
    assert "# sipguard t: -A ufw-before-input" in result["diff"][1]["after"]
    assert "write_rule_files" not in runner.calls
