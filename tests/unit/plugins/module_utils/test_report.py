# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure tests of module_utils/report.py on the 23 host records recorded from the exposure lab.

Run A is the records as recorded. Run B is derived from them by record_fixtures.run_b(), which
edits a copy (default-deny gets 5060/udp/ipv4 opened, allow-proto gets 5060/tcp closed) and
rebuilds those two records with build_host_record(); nothing here is a hand-written record.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import itertools
import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
import xmlschema

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import build_host_record, record_findings
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    CHANGE_KINDS,
    RUN_KEYS,
    ReportError,
    build_report,
    comparable,
    diff_reports,
    loads_report,
    merge_reports,
    summarize,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import alert_body, gate, gate_message
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import (
    render_html,
    render_json,
    render_junit,
    render_markdown,
)

import record_fixtures as F

XSD = os.path.join(F.HERE, "fixtures", "report", "jenkins-xunit-plugin__junit-10.xsd")
T_A, T_B = "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"


@pytest.fixture(scope="module")
def records():
    return F.load_records()


@pytest.fixture(scope="module")
def report_a(records):
    return build_report(records, None, run_id="run-a", generated_at=T_A)


@pytest.fixture(scope="module")
def records_b(records):
    return F.run_b(records)


@pytest.fixture(scope="module")
def report_b(records_b, report_a):
    return build_report(records_b, report_a, run_id="run-b", generated_at=T_B)


@pytest.fixture(scope="module")
def junit_schema():
    return xmlschema.XMLSchema(XSD)


def _triples(changes):
    return {(c["host"], c["kind"], c["key"]) for c in changes}


def _with(records, host, new):
    copied = dict(records)
    copied[host] = new
    return copied


# ----------------------------------------------------------------------------- fixtures sanity

def test_reverify_reproduces_every_recorded_record(records):
    """The helper that derives run B goes through build_host_record and changes nothing by itself."""
    assert len(records) == 23
    for host, record in records.items():
        again = F.reverify(record)
        details = again.pop("finding_details")
        assert again == record, host
        # The fixtures were recorded before finding_details existed: what record_findings() rebuilds
        # for such a record is what build_host_record() writes now.
        assert record_findings(record) == details, host
        assert [d["text"] for d in details] == record["findings"], host


# ----------------------------------------------------------------------------- summary

def test_summary_of_the_recorded_fleet(report_a):
    s = report_a["summary"]
    assert (s["hosts"], s["compliant"], s["non_compliant"], s["unreachable"], s["errors"]) == (23, 6, 17, 0, 0)
    # source-restricted admits 5060/udp from one network only: exposed, but compliant (allow_restricted).
    assert (s["exposed"], s["exposed_allowed"]) == (18, 1)
    assert sum(s["by_state"].values()) == 23 * 6
    assert s["by_key"]["5060/udp/ipv4"] == {"open": 11, "restricted": 2, "blocked": 10}
    assert s["changes"] == dict((kind, 0) for kind in CHANGE_KINDS)
    assert report_a["baseline"] is None and report_a["changes"] == []


def test_summary_counts_unreachable_and_errors(records):
    fleet = dict(records)
    fleet["gone"] = build_host_record("gone", unreachable=True, error="ssh: connect timed out")
    fleet["broken"] = build_host_record("broken", error="iptables-save: permission denied")
    s = summarize(fleet)
    assert s["hosts"] == s["compliant"] + s["non_compliant"] + s["unreachable"] == 25
    assert (s["unreachable"], s["errors"], s["non_compliant"]) == (1, 1, 18)


# ----------------------------------------------------------------------------- changes

def test_run_b_changes_name_exactly_the_edits(report_b):
    assert _triples(report_b["changes"]) == F.RUN_B_CHANGES
    opened = [c for c in report_b["changes"] if c["kind"] == "opened"]
    assert opened == [{"host": "default-deny", "key": "5060/udp/ipv4", "kind": "opened", "before": "blocked",
                       "after": "open", "reason": "ufw rule 3 (ALLOW IN 5060/udp from Anywhere) accepts"}]
    rules = next(c for c in report_b["changes"] if c["kind"] == "rule_changed" and c["host"] == "allow-proto")
    assert [r for r in rules["before"] if r not in rules["after"]] == [
        "3 allow 5060/tcp Anywhere", "6 allow 5060/tcp (v6) Anywhere (v6)"]
    assert report_b["summary"]["changes"]["closed"] == 2
    assert report_b["baseline"] == {"run_id": "run-a", "generated_at": T_A, "hosts": 23}


def test_changes_are_sorted_and_stable(report_a, records_b):
    once = diff_reports(report_a, records_b)
    again = diff_reports(report_a, dict(reversed(list(records_b.items()))))
    assert once == again
    assert [c["host"] for c in once] == sorted(c["host"] for c in once)


RESTRICTED = {"state": "restricted", "action": "accept", "rule": 2, "via": "ufw", "conditions": ["from 198.18.0.0/24"],
              "reason": "ufw rule 2 (ALLOW IN 5060/udp from 198.18.0.0/24) admits some senders"}


@pytest.mark.parametrize("host, verdicts, expected", [
    # restricted -> open is "opened", with the restricted state as before
    ("source-restricted", {"5060/udp/ipv4": F.OPEN_UDP},
     {("source-restricted", "opened", "5060/udp/ipv4"), ("source-restricted", "compliance_changed", None)}),
    # open -> restricted (and the only other open port closed: the host turns compliant)
    ("allow-before-deny", {"5060/udp/ipv4": RESTRICTED, "5060/udp/ipv6": F.BLOCKED},
     {("allow-before-deny", "restricted", "5060/udp/ipv4"), ("allow-before-deny", "closed", "5060/udp/ipv6"),
      ("allow-before-deny", "compliance_changed", None)}),
    # blocked -> restricted (allowed: stays compliant)
    ("deny", {"5060/udp/ipv4": RESTRICTED}, {("deny", "restricted", "5060/udp/ipv4")}),
    # open -> blocked on every port: the host turns compliant
    ("v6-only", {"5060/udp/ipv6": F.BLOCKED, "5060/tcp/ipv6": F.BLOCKED},
     {("v6-only", "closed", "5060/udp/ipv6"), ("v6-only", "closed", "5060/tcp/ipv6"),
      ("v6-only", "compliance_changed", None)}),
    # nothing changed
    ("deny", {}, set()),
])
def test_port_state_changes(records, report_a, host, verdicts, expected):
    current = _with(records, host, F.reverify(records[host], verdicts))
    assert _triples(diff_reports(report_a, current)) == expected


def test_pid_change_is_not_a_listener_change_but_a_new_process_is(records, report_a):
    record = records["allow-any-proto"]
    restarted = [dict(listener, pid=listener["pid"] + 1000) for listener in record["listeners"]]
    assert diff_reports(report_a, _with(records, "allow-any-proto", F.reverify(record, listeners=restarted))) == []
    replaced = [dict(listener, process="asterisk") if listener["port"] == 5061 else listener
                for listener in record["listeners"]]
    changes = diff_reports(report_a, _with(records, "allow-any-proto", F.reverify(record, listeners=replaced)))
    assert _triples(changes) == {("allow-any-proto", "listener_changed", "5061/tcp/ipv4"),
                                 ("allow-any-proto", "listener_changed", "5061/tcp/ipv6")}
    assert changes[0]["before"] == [{"address": "0.0.0.0", "process": "kamailio"}]
    assert changes[0]["after"] == [{"address": "0.0.0.0", "process": "asterisk"}]


def test_host_added_and_gone(records, report_a):
    current = dict(records)
    del current["deny"]
    current["new-pbx"] = dict(records["allow-proto"], host="new-pbx")
    changes = diff_reports(report_a, current)
    assert _triples(changes) == {("deny", "host_gone", None), ("new-pbx", "host_added", None)}
    added = next(c for c in changes if c["kind"] == "host_added")
    assert added["after"] == {"reachable": True, "compliant": False, "exposed": True} and added["before"] is None


def test_unreachable_host_is_not_closed_and_coming_back_open_is_opened(records, report_a):
    gone = build_host_record("allow-proto", unreachable=True, error="ssh: timed out")
    down = build_report(_with(records, "allow-proto", gone), report_a, run_id="run-down", generated_at=T_B)
    assert _triples(down["changes"]) == {("allow-proto", "reachability_changed", None)}
    back = diff_reports(down, records)
    assert _triples(back) == {("allow-proto", "reachability_changed", None)} | {
        ("allow-proto", "opened", key) for key in ("5060/udp/ipv4", "5060/udp/ipv6", "5060/tcp/ipv4", "5060/tcp/ipv6")}
    assert {c["before"] for c in back if c["kind"] == "opened"} == {None}


def test_no_baseline_no_changes(records):
    assert diff_reports(None, records) == []


# ----------------------------------------------------------------------------- gate

@pytest.mark.parametrize("fail_on, expected", [
    ([], []),
    (["regression"], ["regression: default-deny turned non-compliant (was compliant): ",
                      "regression: 5060/udp/ipv4 on default-deny opened (it was blocked): ufw rule 3 "]),
    (["unreachable"], []),
])
def test_gate_on_run_b(report_b, fail_on, expected):
    lines = gate(report_b, fail_on)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected):
        assert line.startswith(start)


def test_gate_exposed_fails_every_exposed_non_compliant_host(report_a):
    lines = gate(report_a, ["exposed"])
    hosts = {line.split(":")[1].strip() for line in lines}
    expected = {h for h, r in report_a["hosts"].items() if r["exposed"] and not r["compliant"]}
    assert hosts == expected and len(expected) == 17
    assert "source-restricted" not in hosts  # restricted and allowed


def test_gate_without_baseline_has_no_regression(report_a):
    assert gate(report_a, ["regression"]) == []


@pytest.mark.parametrize("new_host, regression", [("allow-proto", True), ("deny", False)])
def test_gate_new_non_compliant_host_is_a_regression(records, report_a, new_host, regression):
    current = dict(records, **{"new-pbx": dict(records[new_host], host="new-pbx")})
    report = build_report(current, report_a, run_id="run-c", generated_at=T_B)
    assert bool(gate(report, ["regression"])) is regression


def test_gate_unreachable_and_failed_hosts(records, report_a):
    fleet = dict(records)
    fleet["gone"] = build_host_record("gone", unreachable=True, error="ssh: timed out")
    fleet["broken"] = build_host_record("broken", error="ufw_info: iptables-save not found")
    report = build_report(fleet, report_a, run_id="run-c", generated_at=T_B)
    assert gate(report, ["unreachable"]) == ["unreachable: broken: error: ufw_info: iptables-save not found",
                                             "unreachable: gone: unreachable: ssh: timed out"]
    # an unreachable host is not "exposed" and not a regression: it has its own gate
    assert not [line for line in gate(report, ["exposed", "regression"]) if "gone" in line or "broken" in line]


@pytest.mark.parametrize("fail_on, message", [
    (["exposed", "changes"], "fail_on[1]: 'changes' is not one of exposed, regression, unreachable"),
    ("regression", "fail_on: expected a list of exposed, regression, unreachable"),
])
def test_gate_rejects_unknown_conditions(report_a, fail_on, message):
    with pytest.raises(ReportError) as err:
        gate(report_a, fail_on)
    assert str(err.value) == message


def test_gate_message_is_bounded(report_a):
    failures = gate(report_a, ["exposed"])
    text = gate_message(report_a, ["exposed"], failures, limit=5)
    assert text.splitlines()[0] == "sipguard gate failed (fail_on: exposed): 17 problem(s) in run run-a"
    assert "... and 12 more" in text and text.endswith("changes: none")


def test_alert_only_when_something_opened(report_a, report_b):
    assert alert_body(report_a) is None
    body = alert_body(report_b, "https://ci.example.invalid/report.html")
    assert body["text"].splitlines()[0] == "sipguard: SIP opened on 1 port(s) since run run-a"
    assert "- 5060/udp/ipv4 on default-deny opened through ufw rule 3, since %s (blocked at %s): ufw rule 3" % (
        T_B, T_A) in body["text"]
    assert [c["host"] for c in body["sipguard"]["opened"]] == ["default-deny"]
    json.dumps(body)  # it goes into a JSON POST


# ----------------------------------------------------------------------------- merge

def _slices(records, n):
    hosts = sorted(records)
    return [dict((h, records[h]) for h in hosts[i::n]) for i in range(n)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_merge_of_three_slices_equals_the_full_run(records, records_b, report_a, order):
    """Each slice ran on its own (its own baseline: that slice of run A, or none); merged against
    the fleet baseline (run A) it equals one run B over every host, whatever the slice order."""
    full = build_report(records_b, report_a, run_id="full", generated_at=T_B)
    slice_reports = []
    for index, part in enumerate(_slices(records_b, 3)):
        own_baseline = build_report(dict((h, records[h]) for h in part), None, run_id="a-%d" % index,
                                    generated_at=T_A) if index else None
        slice_reports.append(build_report(part, own_baseline, run_id="slice-%d" % index, generated_at=T_B))
    merged = merge_reports([slice_reports[i] for i in order], previous=report_a, run_id="merged",
                           generated_at="2026-11-26T00:05:00Z")
    assert comparable(merged) == comparable(full)
    assert merged["run_id"] != full["run_id"] and len(merged["sources"]) == 3
    assert json.loads(render_json(merged))["summary"] == full["summary"]


def test_merge_with_this_runs_records_and_a_rerun_batch(records, records_b, report_a):
    """--limit batches: batch 1 ran twice (the rerun comes later and wins); the last batch's records
    are given directly."""
    first, second, third = _slices(records_b, 3)
    stale = build_report(dict((h, records[h]) for h in first), None, run_id="b1-old", generated_at=T_A)
    rerun = build_report(first, None, run_id="b1", generated_at=T_B)
    batch2 = build_report(second, None, run_id="b2", generated_at=T_B)
    merged = merge_reports([stale, batch2, rerun], previous=report_a, run_id="b3", generated_at=T_B,
                           records=list(third.values()))
    assert comparable(merged) == comparable(build_report(records_b, report_a, run_id="x", generated_at=T_B))
    assert [s["run_id"] for s in merged["sources"]] == ["b1-old", "b2", "b1", "b3"]


def test_comparable_ignores_only_run_keys(report_b):
    other = dict(copy.deepcopy(report_b), run_id="other", generated_at="2030-01-01T00:00:00Z", sources=[])
    assert comparable(other) == comparable(report_b)
    assert set(report_b) - set(comparable(report_b)) == set(RUN_KEYS) & set(report_b)
    other["changes"] = other["changes"][1:]
    assert comparable(other) != comparable(report_b)


def test_merge_rejects_another_schema(report_a):
    with pytest.raises(ReportError) as err:
        merge_reports([report_a, dict(report_a, schema=2)])
    assert str(err.value) == "reports[1]: report schema 2, this collection reads schema 1"


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("mutate, message", [
    (lambda rs: rs[3].pop("host"), "records[3]: missing 'host' (build records with sipguard.firewall.host_record)"),
    (lambda rs: rs[0].update(schema=2), "records[0] (allow-any-proto): host record schema 2, this collection reads schema 1"),
    (lambda rs: rs[1]["exposure"][2].update(state="opn"),
     "records[1] (allow-before-deny): exposure[2].state is 'opn', expected one of open, restricted, blocked"),
    (lambda rs: rs[2].update(compliant="yes"), "records[2] (allow-proto): 'compliant' must be true or false, got 'yes'"),
    (lambda rs: rs.append(copy.deepcopy(rs[0])), "records[23] (allow-any-proto): host 'allow-any-proto' appears twice"),
    (lambda rs: rs.__setitem__(4, "before-rules"), "records[4]: a host record is a dict, got str"),
])
def test_bad_records_say_what_to_fix(records, mutate, message):
    listed = copy.deepcopy(list(records.values()))
    mutate(listed)
    with pytest.raises(ReportError) as err:
        build_report(listed, run_id="r", generated_at=T_A)
    assert str(err.value) == message


def test_records_dict_key_must_match_host(records):
    with pytest.raises(ReportError) as err:
        build_report({"web1": records["deny"]}, run_id="r")
    assert str(err.value) == "records['web1']: the record is for host 'deny'"


@pytest.mark.parametrize("run_id", ["../x", "", ".hidden", "a b", "x" * 129])
def test_run_id_must_be_a_file_name(records, run_id):
    with pytest.raises(ReportError) as err:
        build_report(records, run_id=run_id)
    assert str(err.value).startswith("run_id: ")


# ----------------------------------------------------------------------------- renderers

def test_json_round_trips(report_b):
    text = render_json(report_b)
    assert text == json.dumps(report_b, sort_keys=True, separators=(",", ":")) + "\n"
    assert json.loads(text) == report_b == loads_report(text)


def _junit_cases(text):
    root = ET.fromstring(text)
    return {(case.get("classname"), case.get("name")): case for case in root.iter("testcase")}


def test_junit_validates_and_has_one_case_per_host_and_key(report_b, junit_schema):
    text = render_junit(report_b)
    junit_schema.validate(text)
    cases = _junit_cases(text)
    assert len(cases) == sum(1 + len(r["exposure"]) for r in report_b["hosts"].values())
    failing = {key for key, case in cases.items() if case.find("failure") is not None}
    # a testcase fails when its port has an exposure finding or a probe got in, nothing else fails
    expected = {(h, "%d/%s/%s" % (i["port"], i["proto"], i["family"])) for h, r in report_b["hosts"].items()
                for i in r["exposure"] if any(f.startswith("%d/%s %s " % (i["port"], i["proto"], i["family"]))
                                              for f in r["findings"])}
    expected |= {(h, "%d/%s/%s" % (p["port"], p["transport"], p["family"])) for h, r in report_b["hosts"].items()
                 for p in r["probes"] if p["state"] == "open"}
    assert failing == expected
    assert ("default-deny", "5060/udp/ipv4") in failing and ("allow-proto", "5060/tcp/ipv4") not in failing
    # iface-restricted: allowed restricted ports, but the prober got in: the probe fails the case
    assert cases[("iface-restricted", "5060/udp/ipv4")].find("failure").get("message").count("probe ") == 1
    suite = ET.fromstring(text).find("testsuite")
    assert (int(suite.get("tests")), int(suite.get("failures"))) == (len(cases), len(failing))


def test_junit_keeps_xml_valid_with_control_characters_and_newlines(records, junit_schema):
    record = dict(records["allow-proto"], host="pbx\x1b[0m", error=None)
    record["exposure"] = [dict(record["exposure"][0], reason="banner says \"hi\"\x00\nsecond line")] + \
        record["exposure"][1:]
    text = render_junit(build_report({record["host"]: record}, run_id="r", generated_at=T_A))
    junit_schema.validate(text)
    case = _junit_cases(text)[("pbx?[0m", "5060/udp/ipv4")]
    assert case.find("failure").get("message").startswith('5060/udp ipv4 open: banner says "hi"?\nsecond line')


def test_junit_unreachable_host_is_a_failing_case(records, junit_schema):
    fleet = dict(records, gone=build_host_record("gone", unreachable=True, error="ssh: timed out"))
    text = render_junit(build_report(fleet, run_id="r", generated_at=T_A))
    junit_schema.validate(text)
    cases = [k for k in _junit_cases(text) if k[0] == "gone"]
    assert cases == [("gone", "host")]
    failure = _junit_cases(text)[("gone", "host")].find("failure")
    assert failure.get("message") == "unreachable: ssh: timed out"


def test_renderers_escape_hostile_names(records, junit_schema):
    evil = '<script>alert("x")</script>&|`'
    record = dict(records["allow-proto"], host=evil)
    report = build_report({evil: record}, run_id="r", generated_at=T_A)
    junit_schema.validate(render_junit(report))
    html = render_html(report)
    assert evil not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html
    md = render_markdown(report)
    assert "\\|" in md


class _Collect(HTMLParser):
    def __init__(self):
        HTMLParser.__init__(self)
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_with_one_body_per_host(report_b):
    html = render_html(report_b)
    parser = _Collect()
    parser.feed(html)
    tags = parser.tags
    assert sum(1 for tag, attrs in tags if tag == "tbody" and "data-host" in attrs) == 23
    assert not [attrs for tag, attrs in tags if tag in ("link", "img", "iframe") or
                (tag == "script" and "src" in attrs)]
    assert "http://" not in html and "https://" not in html and "@import" not in html


def test_markdown_lists_non_compliant_hosts_and_changes(report_b):
    md = render_markdown(report_b)
    assert md.startswith("## sipguard SIP exposure: FAIL")
    assert "| 23 | 5 | 18 | 0 | 19 | 6 |" in md
    assert "- **default-deny** (non-compliant)" in md
    assert "- 5060/udp/ipv4 on default-deny opened (it was blocked): ufw rule 3" in md
    assert "- allow-proto's UFW rules changed: removed 3 allow 5060/tcp Anywhere; 6 allow 5060/tcp (v6) Anywhere (v6)" in md


def test_markdown_is_bounded(report_a):
    md = render_markdown(report_a, limit=3)
    assert "- ... and 14 more (see report.html)" in md
    assert md.count("- **") == 3
