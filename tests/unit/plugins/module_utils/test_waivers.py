# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waivers (module_utils/waivers.py) on the 23 host records recorded from the exposure lab:
parsing and its messages, matching, expiry, staleness, and what the gate and the alert make of them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import record_findings
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import alert_body, gate
from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import load_waivers
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import (
    WaiverError,
    apply_waivers,
    is_waived,
    parse_waivers,
)

import record_fixtures as F

T_A, T_B = "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"
DAY = datetime.date(2026, 11, 26)


def _waiver(**fields):
    waiver = {"host": "allow-proto", "port": 5060, "proto": "udp", "owner": "voice-team",
              "reason": "carrier trunk, CHG-1234", "expires": "2027-01-31"}
    waiver.update(fields)
    return waiver


@pytest.fixture(scope="module")
def records():
    return F.load_records()


@pytest.mark.parametrize("waivers, message", [
    ("x", "waivers: must be a list of waivers"),
    ([["host"]], "waivers[0]: must be a dict with host, port, proto, owner, reason, expires, got list"),
    ([_waiver(prot="udp")], "waivers[0]: unknown key(s) prot; a waiver has host, port, proto, owner, reason, expires"),
    ([_waiver(owner="")], "waivers[0]: missing owner (a waiver needs host, port, proto, owner, reason, expires)"),
    ([_waiver(), _waiver(port=70000)], "waivers[1].port: 70000 is not a port (1-65535)"),
    ([_waiver(port="5060/udp")], "waivers[0].port: '5060/udp' is not a port (1-65535); give one port per waiver"),
    ([_waiver(proto="sctp")], "waivers[0].proto: 'sctp' is not one of udp, tcp"),
    ([_waiver(family="inet")], "waivers[0].family: 'inet' is not one of ipv4, ipv6 (leave it out for both)"),
    ([_waiver(expires="31/01/2027")], "waivers[0].expires: '31/01/2027' is not a date; write it as YYYY-MM-DD"),
    ([_waiver(expires="2027-02-30")], "waivers[0].expires: '2027-02-30' is not a date"),
    ([_waiver(sources="10.0.0.0/8")], "waivers[0].sources: must be a list of addresses or networks"),
    ([_waiver(sources=["10.0.0.0/33"])], "waivers[0].sources[0]: '10.0.0.0/33' is not an address or network"),
    ([_waiver(host="  ")], "waivers[0].host: must be a non-empty string"),
])
def test_malformed_waiver_says_what_to_fix(waivers, message):
    with pytest.raises(WaiverError) as err:
        parse_waivers(waivers)
    assert str(err.value).startswith(message), str(err.value)


def test_parse_normalizes():
    parsed = parse_waivers([_waiver(expires=datetime.date(2027, 1, 31), port="5060", proto="UDP",
                                    sources=["198.18.0.250"])])
    assert parsed == [{"id": "waivers[0]", "host": "allow-proto", "port": 5060, "proto": "udp", "family": None,
                       "sources": ["198.18.0.250/32"], "owner": "voice-team", "reason": "carrier trunk, CHG-1234",
                       "expires": "2027-01-31"}]


def test_duplicate_ids_are_refused():
    with pytest.raises(WaiverError, match="the id 'w1' is used twice"):
        load_waivers({"waivers": [_waiver(id="w1"), _waiver(id="w1", port=5061)]})


def test_waivers_file(tmp_path):
    path = tmp_path / "waivers.yml"
    path.write_text("sipguard_waivers:\n  - {host: 'allow-*', port: 5060, proto: udp, owner: ops, reason: r, "
                    "expires: 2027-01-31}\n")
    assert load_waivers({"waivers": [], "waivers_file": str(path)})[0]["expires"] == "2027-01-31"
    path.write_text("- {host: x, port: 5060, proto: udp, owner: ops, reason: r}\n")
    with pytest.raises(WaiverError, match=r"waivers_file .*waivers.yml\[0\]: missing expires"):
        load_waivers({"waivers": [], "waivers_file": str(path)})
    path.write_text("- {host: x\n")
    with pytest.raises(WaiverError, match="is not valid YAML"):
        load_waivers({"waivers": [], "waivers_file": str(path)})


def test_active_waiver_makes_the_host_compliant_but_keeps_the_finding(records):
    waivers = parse_waivers([_waiver(id="trunk")])
    report = build_report(records, run_id="r", generated_at=T_B, waivers=waivers)
    record = report["hosts"]["allow-proto"]
    waived = [f for f in record_findings(record) if is_waived(f)]
    # the verdicts and the probes that got in through them
    assert set(f["key"] for f in waived) == {"5060/udp/ipv4", "5060/udp/ipv6"}
    assert set(f["kind"] for f in waived) == {"open-ufw-rule", "probe-admitted"}
    assert not record["compliant"]  # 5060/tcp is open too and not waived
    assert record["findings"] == records["allow-proto"]["findings"]  # shown, not hidden
    assert report["waivers"][0]["status"] == "active"
    assert report["waivers"][0]["matched"] == ["allow-proto 5060/udp/ipv4", "allow-proto 5060/udp/ipv6"]
    # waive the TCP port too: the host passes the gate, and is still reported as exposed
    waivers = parse_waivers([_waiver(id="trunk"), _waiver(id="tcp", proto="tcp")])
    report = build_report(records, run_id="r", generated_at=T_B, waivers=waivers)
    record = report["hosts"]["allow-proto"]
    assert record["compliant"] and record["exposed"] and record["waived"] == len(record["findings"]) == 8
    assert not [line for line in gate(report, ["exposed"]) if "allow-proto" in line]
    assert report["summary"]["waived"] == 1 and report["summary"]["waivers"] == {"active": 2, "expired": 0, "stale": 0}


def test_waiver_expires_on_its_day(records):
    waivers = parse_waivers([_waiver(id="udp", expires="2026-11-26"), _waiver(id="tcp", proto="tcp")])
    before = build_report(records, run_id="a", generated_at=T_A, waivers=waivers)
    assert before["hosts"]["allow-proto"]["compliant"]
    on_the_day = build_report(records, before, run_id="b", generated_at=T_B, waivers=waivers)
    record = on_the_day["hosts"]["allow-proto"]
    assert not record["compliant"]
    assert [w["status"] for w in on_the_day["waivers"]] == ["expired", "active"]
    lines = gate(on_the_day, ["exposed", "regression"])
    assert any(line.startswith("exposed: allow-proto: 5060/udp ipv4 open:") and "waiver udp of voice-team expired "
               "on 2026-11-26" in line for line in lines), lines
    assert any(line.startswith("regression: allow-proto turned non-compliant (was compliant)") for line in lines)
    body = alert_body(on_the_day)
    assert body is not None and "1 waiver(s) expired" in body["text"]
    assert body["sipguard"]["expired_waivers"][0]["id"] == "udp"


def test_stale_waiver_is_reported(records):
    waivers = parse_waivers([_waiver(id="old", host="decommissioned-*"), _waiver(id="closed", host="deny")])
    report = build_report(records, run_id="r", generated_at=T_B, waivers=waivers)
    assert [(w["id"], w["status"], w["matched"]) for w in report["waivers"]] == [
        ("old", "stale", []), ("closed", "stale", [])]
    assert report["summary"]["waivers"]["stale"] == 2


def test_sources_waive_a_restriction_inside_them_only(records):
    def waived(sources):
        waivers = parse_waivers([_waiver(host="source-restricted", sources=sources)])
        report = build_report(records, run_id="r", generated_at=T_B, waivers=waivers)
        return report["waivers"][0]["status"], list(report["waivers"][0]["matched"])
    # source-restricted: 5060/udp/ipv4 restricted "from 198.18.0.250/32"; allow_restricted was true when
    # recorded, so the restriction is no finding: strict records make it one.
    assert waived(["198.18.0.0/24"])[0] == "stale"
    strict = dict(records)
    strict["source-restricted"] = F.reverify(records["source-restricted"], allow_restricted=False)
    for sources, status in ((["198.18.0.0/24"], "active"), (["198.18.0.250"], "active"),
                            (["203.0.113.0/24"], "stale"), (["fd53:1b7e:5060::/64"], "stale")):
        waivers = parse_waivers([_waiver(host="source-restricted", family="ipv4", sources=sources)])
        report = build_report(strict, run_id="r", generated_at=T_B, waivers=waivers)
        assert report["waivers"][0]["status"] == status, sources
    # an open port (from anywhere) is never covered by a waiver that names sources
    waivers = parse_waivers([_waiver(sources=["198.18.0.0/15"])])
    assert build_report(records, run_id="r", generated_at=T_B, waivers=waivers)["waivers"][0]["status"] == "stale"


def test_waived_opening_is_no_regression_and_no_alert(records):
    report_a = build_report(records, run_id="a", generated_at=T_A)
    waivers = parse_waivers([_waiver(host="default-deny")])
    report_b = build_report(F.run_b(records), report_a, run_id="b", generated_at=T_B, waivers=waivers)
    assert gate(report_b, ["regression"]) == []
    assert alert_body(report_b) is None
    unwaived = build_report(F.run_b(records), report_a, run_id="b", generated_at=T_B)
    assert gate(unwaived, ["regression"]) and alert_body(unwaived) is not None


_hosts = st.sampled_from(["allow-*", "allow-proto", "range", "no-ufw", "*", "deny", "v6-only"])
_waivers = st.lists(st.fixed_dictionaries({
    "host": _hosts, "port": st.sampled_from([5060, 5061]), "proto": st.sampled_from(["udp", "tcp"]),
    "owner": st.just("ops"), "reason": st.just("r"),
    "expires": st.dates(datetime.date(2026, 11, 1), datetime.date(2026, 12, 31)),
}, optional={"family": st.sampled_from(["ipv4", "ipv6"])}), max_size=6)


@settings(max_examples=60, deadline=None)
@given(_waivers, st.dates(datetime.date(2026, 11, 1), datetime.date(2026, 12, 31)))
def test_waivers_only_ever_mark_findings(waivers, today):
    records = F.load_records()
    hosts, status = apply_waivers(records, parse_waivers(waivers), today)
    for host, record in hosts.items():
        before = record_findings(records[host])
        after = record_findings(record)
        # no finding appears or disappears; only the waiver mark differs
        assert [dict((k, v) for k, v in f.items() if k != "waiver") for f in after] == before
        assert record["compliant"] == all(is_waived(f) for f in after)
        assert record.get("waived", 0) == sum(1 for f in after if is_waived(f))
        for finding in after:
            if is_waived(finding):
                assert finding["waiver"]["expires"] > today.isoformat()
    for waiver in status:
        assert (waiver["status"] == "stale") == (not waiver["matched"])
    # waivers removed again: every host is as recorded
    again, _status = apply_waivers(hosts, [], today)
    assert all(again[h]["compliant"] == records[h]["compliant"] for h in records)
