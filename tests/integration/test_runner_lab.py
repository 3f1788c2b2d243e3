"""The playbooks under ansible-runner, the engine AWX / Automation Platform runs them with,
including job slicing: each slice writes its own report and the slices merge into one."""

import json
import os
import tempfile

import ansible_runner
import pytest

from conftest import HERE, lab_up

MERGE = os.path.join(HERE, "playbooks", "merge_reports.yml")


@pytest.fixture(scope="module")
def report_lab():
    return lab_up("report.yml")


def run(lab, playbook, extravars, limit=None):
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    result = ansible_runner.run(private_data_dir=tempfile.mkdtemp(prefix="sipguard-runner-"), playbook=playbook,
                                inventory=lab["inventory"], extravars=extravars, envvars=env, limit=limit,
                                quiet=True)
    return result


def test_audit_runs_under_ansible_runner_with_one_module_call_per_host(report_lab):
    report_dir = tempfile.mkdtemp(prefix="sipguard-report-")
    result = run(report_lab, "sipguard.firewall.audit", {"sipguard_report_dir": report_dir})
    assert (result.status, result.rc) == ("successful", 0)
    ok = [e["event_data"] for e in result.events if e["event"] == "runner_on_ok"]
    info_calls = [e["host"] for e in ok if e.get("task_action") == "sipguard.firewall.ufw_info"]
    assert sorted(info_calls) == sorted(report_lab["hosts"])  # each host touched once by the audit
    probes = [e for e in ok if e.get("task_action") == "sipguard.firewall.sip_probe"]
    assert len(probes) == 1  # one batched probe run for the whole play
    with open(os.path.join(report_dir, "report.json")) as fh:
        assert sorted(json.load(fh)["hosts"]) == sorted(report_lab["hosts"])


def test_job_slices_merge_into_one_fleet_report(report_lab):
    hosts = sorted(report_lab["hosts"])
    slices = [hosts[0::2], hosts[1::2]]  # the way AWX slices an inventory
    paths = []
    for members in slices:
        report_dir = tempfile.mkdtemp(prefix="sipguard-slice-")
        result = run(report_lab, "sipguard.firewall.audit", {"sipguard_report_dir": report_dir},
                     limit=",".join(members))
        assert result.status == "successful"
        paths.append(os.path.join(report_dir, "report.json"))
    merged = tempfile.mkdtemp(prefix="sipguard-merged-")
    result = run(report_lab, MERGE, {"sipguard_report_dir": merged, "sipguard_report_merge_from": paths})
    assert result.status == "successful"
    with open(os.path.join(merged, "report.json")) as fh:
        report = json.load(fh)
    assert sorted(report["hosts"]) == hosts
    assert report["summary"]["hosts"] == len(hosts)
