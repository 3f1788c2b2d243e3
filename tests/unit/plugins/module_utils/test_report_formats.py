# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SARIF, Prometheus and the evidence bundle (module_utils/report_render.py) on the 23 host
records recorded from the exposure lab (run A) and run B derived from them (record_fixtures)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import jsonschema
import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import FINDING_KINDS, record_findings
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import (
    CONTROLS,
    SARIF_RULES,
    evidence_bytes,
    iter_prometheus,
    render_all,
    sarif_log,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.version import COLLECTION_VERSION
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import parse_waivers

import record_fixtures as F

SARIF_SCHEMA = os.path.join(F.HERE, "fixtures", "report", "oasis__sarif-schema-2.1.0.json")
PROMTOOL = shutil.which("promtool")
T_A, T_B = "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"
WAIVERS = [{"id": "trunk", "host": "allow-proto", "port": 5060, "proto": "udp", "owner": "voice-team",
            "reason": "carrier trunk", "expires": "2027-01-31"},
           {"id": "old", "host": "range", "port": 5060, "proto": "udp", "owner": "ops", "reason": "migration",
            "expires": "2026-11-01"}]


@pytest.fixture(scope="module")
def records():
    return F.load_records()


@pytest.fixture(scope="module")
def report_a(records):
    return build_report(records, None, run_id="run-a", generated_at=T_A, waivers=parse_waivers(WAIVERS))


@pytest.fixture(scope="module")
def report_b(records, report_a):
    return build_report(F.run_b(records), report_a, run_id="run-b", generated_at=T_B, waivers=parse_waivers(WAIVERS))


# ----------------------------------------------------------------------------- SARIF

def test_sarif_validates_against_the_oasis_schema(report_a, report_b):
    with open(SARIF_SCHEMA) as fh:
        schema = json.load(fh)
    validator = jsonschema.Draft4Validator(schema)
    for report in (report_a, report_b):
        text = render_all(report, ["sarif"])["sarif"][1]
        errors = sorted(validator.iter_errors(json.loads(text)), key=lambda e: list(e.path))
        assert not errors, ["%s: %s" % (list(e.path), e.message) for e in errors[:5]]


def test_sarif_invalid_document_is_caught_by_the_schema(report_a):
    """The validation above can fail: a result without a message is refused."""
    with open(SARIF_SCHEMA) as fh:
        validator = jsonschema.Draft4Validator(json.load(fh))
    log = sarif_log(report_a)
    del log["runs"][0]["results"][0]["message"]
    assert list(validator.iter_errors(log))


def test_sarif_has_what_github_code_scanning_requires(report_a):
    """docs.github.com, "SARIF support for code scanning": the properties it lists as required."""
    log = sarif_log(report_a)
    assert log["version"] == "2.1.0" and log["$schema"]
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "sipguard.firewall" and driver["version"] == COLLECTION_VERSION
    rules = dict((rule["id"], rule) for rule in driver["rules"])
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"] and rule["help"]["text"]
        assert re.match(r"^\d+(\.\d+)?$", rule["properties"]["security-severity"])
    assert run["results"]
    for result in run["results"]:
        assert result["message"]["text"]
        assert result["ruleId"] in rules and driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert 1 <= len(result["locations"]) <= 10
        physical = result["locations"][0]["physicalLocation"]
        assert physical["artifactLocation"]["uri"] and physical["region"]["startLine"] >= 1
        assert result["partialFingerprints"]["sipguardFinding/v1"]


def test_sarif_one_result_per_finding_and_one_rule_per_kind(report_a):
    log = sarif_log(report_a)
    results = log["runs"][0]["results"]
    assert len(results) == sum(len(r["findings"]) for r in report_a["hosts"].values())
    assert len(set(SARIF_RULES[k][0] for k in FINDING_KINDS)) == len(FINDING_KINDS)
    by_kind = {}
    for result in results:
        by_kind.setdefault(result["properties"]["kind"], set()).add(result["ruleId"])
    assert all(len(ids) == 1 for ids in by_kind.values())
    # the lab has every exposure kind: a UFW rule, the policy (inactive, no-ufw), bypass (before.rules,
    # DNAT, iptables ahead of UFW) and probes that got in
    assert {"open-ufw-rule", "open-policy", "bypass", "probe-admitted"} <= set(by_kind)
    keys = [(r["properties"]["host"], r["properties"].get("port"), r["properties"].get("proto"),
             r["properties"].get("family")) for r in results]
    assert ("docker-dnat", 5060, "udp", "ipv4") in keys


def test_sarif_fingerprints_are_stable_across_runs(report_a, report_b):
    def prints(report):
        return dict((r["partialFingerprints"]["sipguardFinding/v1"], r) for r in sarif_log(report)["runs"][0]["results"])
    a, b = prints(report_a), prints(report_b)
    assert len(a) == len(sarif_log(report_a)["runs"][0]["results"])  # unique within a run
    # run B only opened default-deny 5060/udp/ipv4 and closed allow-proto 5060/tcp
    new = set(b) - set(a)
    gone = set(a) - set(b)
    assert {(b[p]["properties"]["host"], b[p]["properties"]["kind"]) for p in new} == {
        ("default-deny", "open-ufw-rule"), ("default-deny", "probe-admitted")}
    assert {(a[p]["properties"]["host"], a[p]["properties"]["proto"]) for p in gone} == {("allow-proto", "tcp")}


def test_sarif_marks_waived_results_suppressed(report_a):
    results = sarif_log(report_a)["runs"][0]["results"]
    waived = [r for r in results if r.get("suppressions")]
    assert waived and all(r["properties"]["host"] == "allow-proto" and r["properties"]["proto"] == "udp"
                          for r in waived)
    assert waived[0]["suppressions"][0]["status"] == "accepted"
    assert "voice-team" in waived[0]["suppressions"][0]["justification"]
    expired = [r for r in results if r["properties"]["host"] == "range"]
    assert expired and not any(r.get("suppressions") for r in expired)
    assert all("waiver old of ops expired on 2026-11-01" in r["message"]["text"] for r in expired)


# ----------------------------------------------------------------------------- Prometheus

def _prom(report):
    return "".join(iter_prometheus(report))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_check_metrics_passes(report_b, records, tmp_path):
    hostile = dict(records["deny"], host='pbx "1"\\\nx')
    report = build_report(dict(records, **{hostile["host"]: hostile}), run_id="r", generated_at=T_B)
    for text in (_prom(report_b), _prom(report)):
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_catches_a_broken_exposition():
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input='sipguard_x{host="a} 1\n', stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    assert proc.returncode != 0


def test_prometheus_gauges(report_b, records):
    text = _prom(report_b)
    for name in ("sipguard_port_state", "sipguard_host_compliant", "sipguard_report_last_success_timestamp_seconds"):
        assert "# HELP %s " % name in text and "# TYPE %s gauge\n" % name in text
    assert 'sipguard_port_state{family="ipv4",host="default-deny",port="5060",proto="udp",state="open"} 1' in text
    assert 'sipguard_port_state{family="ipv4",host="default-deny",port="5060",proto="udp",state="blocked"} 0' in text
    assert 'sipguard_host_compliant{host="deny"} 1' in text
    assert 'sipguard_host_compliant{host="default-deny"} 0' in text
    assert "sipguard_report_last_success_timestamp_seconds 1795651200\n" in text  # 2026-11-26T00:00:00Z
    assert 'sipguard_port_waived{family="ipv6",host="allow-proto",port="5060",proto="udp"} 1' in text
    assert 'sipguard_waivers{status="expired"} 1' in text
    states = re.findall(r'^sipguard_port_state\{[^}]*\} 1$', text, re.M)
    assert len(states) == sum(len(r["exposure"]) for r in report_b["hosts"].values())
    hostile = dict(records["deny"], host='pbx "1"\\\nx')
    text = _prom(build_report({hostile["host"]: hostile}, run_id="r", generated_at=T_B))
    assert 'sipguard_host_compliant{host="pbx \\"1\\"\\\\\\nx"} 1' in text


# ----------------------------------------------------------------------------- evidence

def _extract(data, directory):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        for member in tar.getmembers():
            assert not member.name.startswith("/") and ".." not in member.name.split("/")
        tar.extractall(str(directory))
    return names


def test_evidence_manifest_verifies_with_sha256sum(report_b, tmp_path):
    data = evidence_bytes(report_b)
    names = _extract(data, tmp_path)
    top = tmp_path / "evidence-run-b"
    assert "evidence-run-b/SHA256SUMS" in names and "evidence-run-b/report.json" in names
    for host in report_b["hosts"]:
        assert "evidence-run-b/hosts/%s/record.json" % host in names
        assert "evidence-run-b/hosts/%s/verdicts.txt" % host in names
    assert "evidence-run-b/hosts/default-deny/ufw-status.txt" in names
    assert "evidence-run-b/hosts/default-deny/probes.txt" in names
    proc = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=str(top), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = [line.split("  ", 1)[1] for line in (top / "SHA256SUMS").read_text().splitlines()]
    assert sorted("evidence-run-b/" + name for name in listed) == sorted(n for n in names if not n.endswith("SHA256SUMS"))
    assert json.loads((top / "report.json").read_text())["run_id"] == "run-b"
    # a changed file no longer verifies
    (top / "hosts" / "default-deny" / "verdicts.txt").write_text("5060/udp/ipv4 blocked\n")
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=str(top), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode != 0 and "verdicts.txt: FAILED" in proc.stdout


def test_evidence_is_deterministic_and_maps_findings_to_controls(report_b, tmp_path):
    assert evidence_bytes(report_b) == evidence_bytes(report_b)
    _extract(evidence_bytes(report_b), tmp_path)
    controls = (tmp_path / "evidence-run-b" / "controls.tsv").read_text()
    assert set(CONTROLS) == set(FINDING_KINDS)
    for host, record in report_b["hosts"].items():
        for finding in record_findings(record):
            assert "%s\t%s\t%s\t" % (host, finding.get("key") or "-", finding["kind"]) in controls
    assert "UBTU-22-251030" in controls


# ----------------------------------------------------------------------------- the task writes them

def _params(tmp_path, **extra):
    from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import ARGUMENT_SPEC
    params = dict((key, spec.get("default")) for key, spec in ARGUMENT_SPEC.items())
    params.update(report_dir=str(tmp_path / "report"), formats=["json", "sarif", "prometheus", "evidence"])
    params.update(extra)
    return params


def test_task_writes_the_new_formats_and_the_textfile(records, tmp_path):
    from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import run
    textfile = tmp_path / "node-exporter"
    textfile.mkdir()
    params = _params(tmp_path, records=list(records.values()), textfile_dir=str(textfile), keep_history=1,
                     waivers=WAIVERS)
    first = run(dict(params, run_id="one"))
    assert sorted(os.listdir(str(tmp_path / "report"))) == [
        ".sipguard.lock", "evidence-one.tar.gz", "history", "report.json", "report.prom", "report.sarif"]
    assert (textfile / "sipguard.prom").read_text() == (tmp_path / "report" / "report.prom").read_text()
    assert oct(os.stat(str(textfile / "sipguard.prom")).st_mode & 0o777) == "0o644"
    assert first["paths"]["evidence"].endswith("evidence-one.tar.gz")
    assert [w["status"] for w in first["waivers"]] == ["active", "expired"]
    second = run(dict(params, run_id="two"))
    assert sorted(n for n in os.listdir(str(tmp_path / "report")) if n.startswith("evidence-")) == [
        "evidence-two.tar.gz"]
    assert str(tmp_path / "report" / "evidence-one.tar.gz") in second["pruned"]


def test_task_refuses_a_missing_textfile_dir_and_bad_waivers_before_writing(records, tmp_path):
    from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import TaskError, run
    params = _params(tmp_path, records=list(records.values()), textfile_dir=str(tmp_path / "nope"))
    with pytest.raises(TaskError, match="textfile_dir: .*nope is not a directory"):
        run(params)
    bad = dict(WAIVERS[0], expires="soon")
    with pytest.raises(TaskError, match=r"waivers\[0\]\.expires: 'soon' is not a date"):
        run(_params(tmp_path, records=list(records.values()), waivers=[bad]))
    assert not os.path.exists(str(tmp_path / "report"))
    assert run(_params(tmp_path, waivers=WAIVERS, check_only=True))["waivers"][1]["id"] == "old"


def test_controls_table_in_the_docs_is_the_code():
    path = os.path.join(F.HERE, "..", "..", "docs", "report-schema.md")
    with open(path) as fh:
        text = fh.read()
    section = text[text.index("Finding kinds and the controls they give evidence for"):]
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (.+) \|$", section, re.M)[:6])
    assert rows == dict((kind, "; ".join(CONTROLS[kind])) for kind in rows)
    assert set(rows) == set(k for k in CONTROLS if CONTROLS[k])


def test_raw_inputs_reach_the_evidence_bundle(records, tmp_path):
    """ufw_info's opt-in raw inputs (from ufw_host.gather()'s dict, here a lab host's recorded files)
    travel in the host record into the bundle, under the manifest."""
    import lab_fixtures
    from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import build_host_record
    from ansible_collections.sipguard.firewall.plugins.module_utils.host_read import raw_inputs
    host = lab_fixtures.hosts()[0]
    inputs = raw_inputs(lab_fixtures.raw(host))
    assert inputs["command/iptables_save"].startswith("#") or "*filter" in inputs["command/iptables_save"]
    assert "file/user_rules" in inputs
    info = F._info(records["deny"])
    info["raw_inputs"] = inputs
    record = build_host_record("deny", info, F._probes(records["deny"]))
    assert build_host_record("deny", F._info(records["deny"])).get("raw_inputs") is None  # opt-in only
    report = build_report({"deny": record}, run_id="raw", generated_at=T_B)
    names = _extract(evidence_bytes(report), tmp_path)
    assert "evidence-raw/hosts/deny/raw/command_iptables_save" in names
    assert "evidence-raw/hosts/deny/raw/file_user_rules" in names
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=str(tmp_path / "evidence-raw"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 0, proc.stdout
