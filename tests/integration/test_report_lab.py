"""The audit/gate playbooks and the report on a lab whose exposure changes between two runs."""

import copy
import glob
import json
import os
import re
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from xml.etree import ElementTree

import jsonschema
import pytest
import xmlschema
import yaml

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


# ----------------------------------------------------------------------------- waivers on the lab

WAIVER = {"owner": "voice-team", "reason": "carrier trunk (CHG-4711)"}


def _gate_with(lab, report_dir, waivers, fail_on=None):
    extra = {"sipguard_waivers": waivers, "sipguard_report_formats": ["json", "md", "junit", "sarif"]}
    if fail_on is not None:
        extra["sipguard_gate_fail_on"] = fail_on
    return playbook(lab, "sipguard.firewall.gate", report_dir, "-e", json.dumps(extra))


def test_waivers_valid_expired_stale_and_malformed_on_the_lab(report_lab):
    # the scenario's open hosts, whatever the tests before did: r-open has 5060 (udp and tcp) open,
    # r-opens 5060/udp (ufw skips a rule it already has)
    sglab("exec", "r-open", "--", "ufw", "allow", "5060")
    sglab("exec", "r-opens", "--", "ufw", "allow", "5060/udp")
    report_dir = tempfile.mkdtemp(prefix="sipguard-waivers-")

    # malformed: the play stops before any host is inspected, and nothing is written
    bad = playbook(report_lab, "sipguard.firewall.gate", report_dir, "-e", json.dumps({"sipguard_waivers": [
        dict(WAIVER, host="r-open", port=5060, proto="udp", expires="2027-13-01")]}))
    assert bad.returncode == 2, bad.stdout[-3000:]
    assert "waivers[0].expires: '2027-13-01' is not a date; write it as YYYY-MM-DD" in bad.stdout
    assert "Inspect UFW" not in bad.stdout and not os.path.exists(os.path.join(report_dir, "report.json"))

    # valid (r-opens), expired (r-open's UDP), stale (nothing listens on 5061/tcp of r-closed)
    waivers = [dict(WAIVER, id="trunk", host="r-opens", port=5060, proto="udp", expires="2099-12-31"),
               dict(WAIVER, id="lapsed", host="r-open", port=5060, proto="udp", expires="2020-01-01"),
               dict(WAIVER, id="stale", host="r-closed", port=5061, proto="tcp", expires="2099-12-31")]
    first = _gate_with(report_lab, report_dir, waivers, fail_on=["exposed"])
    assert first.returncode == 2, first.stdout[-3000:]
    assert "- exposed: r-open: " in first.stdout and "waiver lapsed of voice-team expired on 2020-01-01" in first.stdout
    assert "exposed: r-opens" not in first.stdout
    report = load(report_dir)
    assert [(w["id"], w["status"]) for w in report["waivers"]] == [
        ("trunk", "active"), ("lapsed", "expired"), ("stale", "stale")]
    assert report["hosts"]["r-opens"]["compliant"] and report["hosts"]["r-opens"]["waived"] >= 2
    assert not report["hosts"]["r-open"]["compliant"]
    md = open(os.path.join(report_dir, "report.md")).read()
    assert "WAIVED until 2099-12-31 (trunk, owner voice-team: carrier trunk (CHG-4711)): 5060/udp ipv4 open" in md
    assert "waiver stale (r-closed 5061/tcp, owner voice-team) matches nothing" in md
    cases = dict(((c.get("classname"), c.get("name")), c) for c in
                 ElementTree.parse(os.path.join(report_dir, "junit.xml")).iter("testcase"))
    assert cases[("r-opens", "5060/udp/ipv4")].find("skipped") is not None
    assert cases[("r-open", "5060/udp/ipv4")].find("failure") is not None
    with open(os.path.join(report_dir, "report.sarif")) as fh:
        results = json.load(fh)["runs"][0]["results"]
    assert {r["properties"]["host"] for r in results if r.get("suppressions")} == {"r-opens"}

    # every exposure waived and in force: the whole default gate passes, and the hosts are still
    # shown as exposed and waived
    waivers[1]["expires"] = "2099-12-31"
    waivers.append(dict(WAIVER, id="tcp", host="r-open", port=5060, proto="tcp", expires="2099-12-31"))
    second = _gate_with(report_lab, report_dir, waivers)
    assert second.returncode == 0, second.stdout[-3000:]
    report = load(report_dir)
    assert report["hosts"]["r-open"]["compliant"] and report["hosts"]["r-open"]["exposed"]
    assert [c["kind"] for c in report["changes"] if c["host"] == "r-open"] == ["compliance_changed"]
    assert "- r-open became compliant" in open(os.path.join(report_dir, "report.md")).read()

    # someone opens 5060/tcp on r-opens: the webhook is told after a second probe from the
    # controller got a SIP answer; what opened, where, through which rule, since when
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0")))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sglab("exec", "r-opens", "--", "ufw", "allow", "5060/tcp")
    try:
        third = playbook(report_lab, "sipguard.firewall.gate", report_dir, "-e", json.dumps({
            "sipguard_waivers": waivers, "sipguard_gate_fail_on": ["regression"],
            "sipguard_webhook_url": "http://127.0.0.1:%d/hook" % server.server_address[1]}))
    finally:
        sglab("exec", "r-opens", "--", "ufw", "delete", "allow", "5060/tcp")
        server.shutdown()
        server.server_close()
    assert third.returncode == 2 and "regression: 5060/tcp/ipv4 on r-opens opened (it was blocked)" in third.stdout
    assert "Probe the opened ports again" in third.stdout
    assert len(received) == 1, third.stdout[-3000:]
    opened = received[0]["sipguard"]["opened"]
    assert sorted(o["key"] for o in opened) == ["5060/tcp/ipv4", "5060/tcp/ipv6"]
    assert all(o["confirmed_by"] == "open" and o["via"] == "ufw" and o["rule"] for o in opened)
    assert "- 5060/tcp/ipv4 on r-opens opened through ufw rule" in received[0]["text"]
    assert "; a second probe got a SIP answer" in received[0]["text"]


# ----------------------------------------------------------------------------- docs/ci-gate.md

def _github_workflow():
    with open(os.path.join(os.path.dirname(TESTS), "docs", "ci-gate.md")) as fh:
        text = fh.read()
    block = re.search(r"```yaml\n(# \.github/workflows/sipguard-gate\.yml\n.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


def _step(workflow, name=None, uses=None):
    for step in workflow["jobs"]["gate"]["steps"]:
        if (name and step.get("name") == name) or (uses and step.get("uses", "").startswith(uses)):
            return step
    raise AssertionError("docs/ci-gate.md: no step %s" % (name or uses))


def test_ci_gate_github_example_writes_what_its_upload_steps_take(report_lab, tmp_path):
    """The GitHub workflow of docs/ci-gate.md, as far as it runs without GitHub: the Gate step's
    command (on the lab), the Job summary script, then every path the upload steps take."""
    workflow = _github_workflow()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = dict(os.environ, REPORT_DIR=str(workspace / "sipguard-report"), SIPGUARD_WEBHOOK_URL="",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               PATH=BIN + os.pathsep + os.environ["PATH"], GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    gate = _step(workflow, name="Gate")["run"]
    gate = re.sub(r"\$\{\{[^}]*\}\}", "https://github.example.invalid/run", gate)
    gate = gate.replace("-i inventory/production.yml", "-i " + report_lab["inventory"])
    proc = subprocess.run(["bash", "-c", gate], cwd=str(workspace), env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=600, check=False)
    # the lab has SIP open: the default policy fails the job (2); the later steps run `if: always()`
    assert proc.returncode == 2 and "sipguard gate failed" in proc.stdout, proc.stdout[-3000:]
    summary = _step(workflow, name="Job summary")
    assert summary["if"] == "always()"
    subprocess.run(["bash", "-e", "-c", summary["run"]], cwd=str(workspace), env=env, check=True, timeout=60)
    assert (tmp_path / "summary.md").read_text().startswith("## sipguard SIP exposure: FAIL")

    junit = _step(workflow, uses="mikepenz/action-junit-report")["with"]["report_paths"]
    xmlschema.XMLSchema(XSD).validate(str(workspace / junit))
    sarif = _step(workflow, uses="github/codeql-action/upload-sarif")
    with open(os.path.join(TESTS, "unit", "fixtures", "report", "oasis__sarif-schema-2.1.0.json")) as fh:
        validator = jsonschema.Draft4Validator(json.load(fh))
    with open(str(workspace / sarif["with"]["sarif_file"])) as fh:
        log = json.load(fh)
    assert not list(validator.iter_errors(log))
    assert log["runs"][0]["results"] and all(r["partialFingerprints"] for r in log["runs"][0]["results"])
    for path in _step(workflow, uses="actions/upload-artifact")["with"]["path"].split():
        assert (workspace / path).is_file(), path
    assert (workspace / _step(workflow, uses="actions/cache/save")["with"]["path"] / "report.json").is_file()
