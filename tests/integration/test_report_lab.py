"""The audit/gate playbooks and the report on a lab whose exposure changes between two runs."""

import copy
import glob
import json
import os
import subprocess
import tempfile
from xml.etree import ElementTree

import pytest
import xmlschema

from conftest import BIN, HERE, TESTS, lab_up, sglab

from ansible_collections.sipguard.firewall.plugins.module_utils.report import comparable

XSD = os.path.join(TESTS, "unit", "fixtures", "report", "jenkins-xunit-plugin__junit-10.xsd")
MERGE = os.path.join(HERE, "playbooks", "merge_reports.yml")
PROBE_PORTS = '["5060/udp", "5060/tcp", "5061/tcp"]'


@pytest.fixture(scope="module")
def report_lab():
    return lab_up("report.yml")


def playbook(lab, name, report_dir, *extra):
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], name,
            "-e", json.dumps({"sipguard_report_dir": report_dir})] + list(extra)
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False")
    return subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False)


def load(report_dir):
    with open(os.path.join(report_dir, "report.json")) as fh:
        return json.load(fh)


def chromium_dom(html):
    profile = tempfile.mkdtemp(prefix="sipguard-chromium-")
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--user-data-dir=" + profile, "--virtual-time-budget=3000",
                           "--dump-dom", "file://" + html], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, timeout=120, check=True)
    return proc.stdout


def test_changes_gate_junit_and_html_follow_what_happened(report_lab):
    report_dir = tempfile.mkdtemp(prefix="sipguard-report-")
    first = playbook(report_lab, "sipguard.firewall.audit", report_dir)
    assert first.returncode == 0, first.stdout[-3000:]
    before = load(report_dir)
    assert before["hosts"]["r-open"]["compliant"] is False and before["hosts"]["r-opens"]["compliant"] is True

    # Between the runs: an operator opens 5060/udp on one host; another host gets closed.
    sglab("exec", "r-opens", "--", "ufw", "allow", "5060/udp")
    sglab("exec", "r-open", "--", "ufw", "delete", "allow", "5060")

    gate = playbook(report_lab, "sipguard.firewall.gate", report_dir,
                    "-e", json.dumps({"sipguard_gate_fail_on": ["regression"]}))
    assert gate.returncode != 0, gate.stdout[-3000:]
    assert "regression" in gate.stdout and "r-opens" in gate.stdout
    after = load(report_dir)
    assert {c["host"] for c in after["changes"]} == {"r-open", "r-opens"}
    opened = {(c["host"], c["key"]) for c in after["changes"] if c["kind"] == "opened"}
    closed = {(c["host"], c["key"]) for c in after["changes"] if c["kind"] == "closed"}
    assert opened == {("r-opens", "5060/udp/ipv4"), ("r-opens", "5060/udp/ipv6")}
    assert ("r-open", "5060/tcp/ipv4") in closed and ("r-open", "5060/udp/ipv6") in closed
    assert after["baseline"]["run_id"] == before["run_id"]
    assert len(glob.glob(os.path.join(report_dir, "history", "*.json"))) == 2

    # JUnit: valid against Jenkins' schema; r-opens' 5060/udp testcases fail, r-closed's pass.
    junit = os.path.join(report_dir, "junit.xml")
    xmlschema.XMLSchema(XSD).validate(junit)
    failing = dict(((case.get("classname"), case.get("name")), case.find("failure") is not None)
                   for case in ElementTree.parse(junit).iter("testcase"))
    assert failing[("r-opens", "5060/udp/ipv4")] and failing[("r-opens", "5060/udp/ipv6")]
    assert not any(failed for (host, _name), failed in failing.items() if host == "r-closed")

    # HTML: both hosts are there, with the status the report gives them, after the page's JS ran.
    dom = chromium_dom(os.path.join(report_dir, "report.html"))
    for host, status in (("r-opens", "FAIL"), ("r-open", "PASS"), ("r-closed", "PASS")):
        row = dom[dom.index('data-host="%s"' % host):]
        row = row[:row.index("</tr>")]
        assert status in row, (host, row[:500])


def _volatile_free(report):
    """comparable() minus what differs between two real runs of the same fleet (timings)."""
    data = copy.deepcopy(comparable(report))
    for record in data["hosts"].values():
        record.pop("checked_at", None)
        for probe in record.get("probes") or []:
            probe.pop("rtt_ms", None)
    return data


def test_three_limit_slices_merged_equal_one_full_run(report_lab):
    full = tempfile.mkdtemp(prefix="sipguard-full-")
    assert playbook(report_lab, "sipguard.firewall.audit", full).returncode == 0
    slices = []
    for limit in ("r-open,r-closed", "r-steady", "r-opens"):
        directory = tempfile.mkdtemp(prefix="sipguard-slice-")
        proc = playbook(report_lab, "sipguard.firewall.audit", directory, "--limit", limit)
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert sorted(load(directory)["hosts"]) == sorted(limit.split(","))
        slices.append(os.path.join(directory, "report.json"))
    merged = tempfile.mkdtemp(prefix="sipguard-merged-")
    proc = playbook(report_lab, MERGE, merged, "-e", json.dumps({"sipguard_report_merge_from": slices}))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _volatile_free(load(merged)) == _volatile_free(load(full))
