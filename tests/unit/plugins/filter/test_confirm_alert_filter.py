# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The confirm_alert filter: an opened port is alerted only when a second probe gets through."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.sipguard.firewall.plugins.filter.confirm_alert import FilterModule
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import alert_body

import record_fixtures as F

confirm_alert = FilterModule().filters()["confirm_alert"]
T_A, T_B = "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"
TARGETS = {"default-deny": ["198.18.0.10"]}


@pytest.fixture(scope="module")
def alert():
    records = F.load_records()
    report_a = build_report(records, run_id="a", generated_at=T_A)
    body = alert_body(build_report(F.run_b(records), report_a, run_id="b", generated_at=T_B))
    assert [(o["host"], o["key"], o["via"], o["rule"]) for o in body["sipguard"]["opened"]] == [
        ("default-deny", "5060/udp/ipv4", "ufw", 3)]
    return body


def _probe(state, address="198.18.0.10", family="ipv4", port=5060, transport="udp"):
    return {"target": address, "address": address, "family": family, "port": port, "transport": transport,
            "state": state}


@pytest.mark.parametrize("state", ["open", "closed"])
def test_a_second_probe_that_gets_through_confirms(alert, state):
    confirmed = confirm_alert(alert, probes={"results": [_probe(state)]}, targets=TARGETS)
    assert confirmed["text"] == alert["text"] + (
        "; a second probe got a SIP answer" if state == "open" else "; a second probe reached the host")
    assert confirmed["sipguard"]["opened"][0]["confirmed_by"] == state
    assert confirmed["sipguard"]["unconfirmed"] == []


@pytest.mark.parametrize("probes", [
    [_probe("filtered")], [_probe("open|filtered")], [], [_probe("open", family="ipv6", address="fd53::1")],
    [_probe("open", port=5061, transport="tcp")], [_probe("open", address="198.18.0.99")],
])
def test_no_second_answer_no_alert(alert, probes):
    assert confirm_alert(alert, probes=probes, targets=TARGETS) is None


def test_a_host_without_a_probe_target_is_alerted_anyway(alert):
    confirmed = confirm_alert(alert, probes=[], targets={"default-deny": []})
    assert confirmed["sipguard"]["opened"][0]["confirmed_by"] == "no-target"
    assert "not probed again: no probe target" in confirmed["text"]


def test_what_the_alert_says(alert):
    line = alert["text"].splitlines()[1]
    # what opened, where, through which rule, since when
    assert line.startswith("- 5060/udp/ipv4 on default-deny opened through ufw rule 3, since %s (blocked at %s): "
                           "ufw rule 3 (ALLOW IN 5060/udp from Anywhere) accepts" % (T_B, T_A)), line


def test_bad_input():
    assert confirm_alert(None, targets={}) is None
    with pytest.raises(AnsibleFilterError, match="fleet_report's alert"):
        confirm_alert({"text": "x"}, targets={})
    with pytest.raises(AnsibleFilterError, match="targets must be a dict"):
        confirm_alert({"sipguard": {}}, targets=None)
