# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/filter/host_record.py on the recorded lab records (turned back into the ufw_info and
sip_probe results they were built from by record_fixtures)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.sipguard.firewall.plugins.filter.host_record import FilterModule

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import record_findings

import record_fixtures as F

FILTERS = FilterModule().filters()


@pytest.mark.parametrize("host", ["allow-any-proto", "source-restricted", "deny", "docker-dnat"])
@pytest.mark.parametrize("probes_as", ["list", "registered", "loop"])
def test_host_record_filter_is_build_host_record(host, probes_as):
    record = F.load_records()[host]
    info = F._info(record)
    probes = F._probes(record)
    given = {"list": probes, "registered": {"changed": False, "results": probes},
             "loop": [{"results": probes[:3]}, {"results": probes[3:]}]}[probes_as]
    built = FILTERS["host_record"](info, host, probes=given, checked_at=record["checked_at"])
    built["ufw"] = record["ufw"]  # _info() leaves ufw out; the rest must match exactly
    details = built.pop("finding_details")
    assert built == record
    assert details == record_findings(record)  # recorded before finding_details existed


def test_allow_restricted_false_makes_restricted_non_compliant():
    record = F.load_records()["source-restricted"]
    strict = FILTERS["host_record"](F._info(record), "source-restricted", probes=F._probes(record),
                                    allow_restricted=False)
    assert record["compliant"] and not strict["compliant"]
    assert strict["findings"][0].startswith("5060/udp ipv4 restricted: ")


@pytest.mark.parametrize("value, compliant", [("no", False), ("false", False), ("yes", True), (1, True)])
def test_allow_restricted_takes_ansible_booleans(value, compliant):
    record = F.load_records()["source-restricted"]
    built = FILTERS["host_record"](F._info(record), "source-restricted", probes=F._probes(record),
                                   allow_restricted=value)
    assert built["compliant"] is compliant


@pytest.mark.parametrize("value", ["maybe", "", [], None])
def test_allow_restricted_that_is_not_a_boolean_is_an_error(value):
    record = F.load_records()["source-restricted"]
    with pytest.raises(AnsibleFilterError, match="host_record: allow_restricted must be a boolean, got "):
        FILTERS["host_record"](F._info(record), "source-restricted", probes=F._probes(record),
                               allow_restricted=value)


def test_failed_ufw_info_result_becomes_an_error_record():
    record = FILTERS["host_record"]({"failed": True, "msg": "ufw_info reads netfilter ... become: true"}, "web1")
    assert (record["reachable"], record["compliant"], record["error"]) == (
        True, False, "ufw_info reads netfilter ... become: true")
    assert record["findings"] == ["error: ufw_info reads netfilter ... become: true"]


def test_unreachable_record():
    record = FILTERS["unreachable_record"]("web2")
    assert (record["host"], record["reachable"], record["compliant"], record["exposure"]) == ("web2", False, False, [])
    assert record["findings"] == ["unreachable: no host record: the host failed or was unreachable earlier in this play"]
    assert FILTERS["unreachable_record"]("web2", error="ssh: timed out")["findings"] == ["unreachable: ssh: timed out"]


@pytest.mark.parametrize("call, message", [
    (lambda: FILTERS["host_record"]("text", "web1"), "host_record: the input must be ufw_info's registered result, got str"),
    (lambda: FILTERS["host_record"]({}, ""), "host: a host record needs the inventory host name"),
    (lambda: FILTERS["host_record"]({}, "web1", probes={"changed": True}),
     "host_record: probes is a dict without 'results'; pass sip_probe's registered result or its results list"),
    (lambda: FILTERS["unreachable_record"](None), "unreachable_record: the input must be the inventory host name, got None"),
])
def test_filter_errors_say_what_to_fix(call, message):
    with pytest.raises(AnsibleFilterError) as err:
        call()
    assert str(err.value) == message


def test_addresses_pick_this_hosts_probes_from_the_fleets_batched_result():
    records = F.load_records()
    mine, other = records["deny"], records["allow-any-proto"]
    fleet = F._probes(other) + F._probes(mine)
    addresses = sorted(set(p["address"] for p in F._probes(mine)))
    assert addresses and not set(addresses) & set(p["address"] for p in F._probes(other))
    built = FILTERS["host_record"](F._info(mine), "deny", probes={"results": [{"results": fleet}]},
                                   addresses=addresses, checked_at=mine["checked_at"])
    built["ufw"] = mine["ufw"]
    assert built.pop("finding_details") == record_findings(mine)
    assert built == mine
    with pytest.raises(AnsibleFilterError, match="addresses must be a list"):
        FILTERS["host_record"](F._info(mine), "deny", probes=fleet, addresses=addresses[0])


def test_a_target_probed_again_after_a_change_counts_with_its_last_result():
    record = F.load_records()["deny"]
    after = F._probes(record)
    before = [dict(p, state="open", reason="sip-response") for p in after]
    assert not FILTERS["host_record"](F._info(record), "deny", probes=[{"results": after}, {"results": before}],
                                      )["compliant"]  # the open probe came last
    built = FILTERS["host_record"](F._info(record), "deny", probes=[{"results": before}, {"results": after}],
                                   checked_at=record["checked_at"])
    built["ufw"] = record["ufw"]
    assert built.pop("finding_details") == record_findings(record)
    assert built == record and len(built["probes"]) == len(after)
