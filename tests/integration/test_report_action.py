"""fleet_report's action plugin: on the controller it writes the report in Ansible's own process;
with async (or over another connection, or with become) the module does. Both must give the same
report, the same result and the same errors. Runs on localhost, writing only to temporary
directories; no lab needed."""

import json
import os
import re
import sys
import tempfile

import pytest

from conftest import TESTS, adhoc

from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import lock

sys.path.insert(0, os.path.join(TESTS, "unit"))
import record_fixtures  # noqa: E402  (the recorded lab host records)

MODULE = "sipguard.firewall.fleet_report"
RUN_ID = "20261125T120000Z-abc123"
AS_MODULE = ("-B", "60", "-P", "1")  # async: the action plugin hands over to the module


def report(args, as_module, check=False):
    extra = ["-c", "local"] + (list(AS_MODULE) if as_module else []) + (["-C"] if check else [])
    return adhoc("localhost,", "localhost", MODULE, args, extra_args=extra)["localhost"]


def without_times(value):
    """Drop what depends on the clock or the directory (generated_at, paths)."""
    if isinstance(value, dict):
        return dict((k, without_times(v)) for k, v in value.items()
                    if k not in ("generated_at", "paths", "ansible_job_id", "results_file", "started", "finished",
                                 "stdout", "stderr", "stdout_lines", "stderr_lines", "invocation", "_ansible_no_log"))
    if isinstance(value, list):
        return [without_times(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", os.path.basename(value) if value.startswith("/") else value)
    return value


@pytest.fixture(scope="module")
def records():
    loaded = record_fixtures.load_records()
    return [loaded[name] for name in sorted(loaded)[:6]]


def test_in_process_and_module_write_the_same_report(records):
    results, written = {}, {}
    for as_module in (False, True):
        report_dir = tempfile.mkdtemp(prefix="sipguard-action-")
        status, result = report({"records": records, "report_dir": report_dir, "run_id": RUN_ID,
                                 "fail_on": ["exposed"]}, as_module)
        assert status == "CHANGED", result
        assert result["gate_failures"], result  # the recorded lab has exposed hosts
        results[as_module] = without_times(result)
        with open(os.path.join(report_dir, "report.json")) as fh:
            written[as_module] = without_times(json.load(fh))
        assert sorted(os.listdir(report_dir)) == [".sipguard.lock", "history", "junit.xml", "report.html", "report.json",
                                                  "report.md"]
        assert set(oct(os.stat(os.path.join(report_dir, name)).st_mode & 0o777) for name in os.listdir(report_dir)
                   if name.startswith("report.")) == {"0o640"}
    assert written[False] == written[True]
    assert written[False]["run_id"] == RUN_ID and len(written[False]["hosts"]) == len(records)
    assert results[False] == results[True]


@pytest.mark.parametrize("args, message", [
    ({"formats": ["pdf"]}, "value of formats must be one or more of: json, html, md, junit, sarif, prometheus, evidence. Got no match for: pdf"),
    ({"keep_history": -1}, "keep_history: -1 is negative; use 0 to keep no history"),
    ({"run_id": "../x"}, "run_id"),
    ({"bogus": 1}, "Unsupported parameters for (sipguard.firewall.fleet_report) module: bogus"),
    ({"mode": 416}, "mode: 416 is not a string; quote the mode, for example '0640' (YAML reads an unquoted 0640 as the number 416)"),
    ({"mode": "0x1a0"}, "mode: '0x1a0' is not a file mode"),
    ({"mode": "0400"}, "mode: '0400' does not let the owner read and write the report"),
    ({"lock_timeout": -5}, "lock_timeout: -5 is negative"),
])
def test_in_process_and_module_refuse_bad_input_alike(records, args, message):
    messages = []
    for as_module in (False, True):
        report_dir = tempfile.mkdtemp(prefix="sipguard-action-")
        status, result = report(dict({"records": records, "report_dir": report_dir}, **args), as_module)
        assert status == "FAILED" and message in result["msg"], result
        assert os.listdir(report_dir) == []  # nothing written
        messages.append(result["msg"])
    assert messages[0] == messages[1]


def test_a_report_dir_that_is_a_file_fails_alike(records):
    handle, path = tempfile.mkstemp(prefix="sipguard-action-")
    os.close(handle)
    results = [report({"records": records, "report_dir": path}, as_module) for as_module in (False, True)]
    assert [status for status, _r in results] == ["FAILED", "FAILED"], results
    assert results[0][1]["msg"] == results[1][1]["msg"] and path in results[0][1]["msg"]


def test_check_mode_in_process_writes_nothing(records):
    report_dir = tempfile.mkdtemp(prefix="sipguard-action-")
    status, result = report({"records": records, "report_dir": report_dir}, False, check=True)
    assert status == "CHANGED" and result["written"], result  # what a real run would write
    assert os.listdir(report_dir) == []


def test_a_locked_report_dir_fails_alike_naming_the_holder(records):
    """Another run holds the directory's lock: in-process and module wait lock_timeout, then fail
    with the same message naming that run (this test's own process holds the lock)."""
    report_dir = tempfile.mkdtemp(prefix="sipguard-action-")
    with lock(report_dir, "20261125T110000Z-holder", timeout=0):
        results = [report({"records": records, "report_dir": report_dir, "lock_timeout": 1}, as_module)
                   for as_module in (False, True)]
    for status, result in results:
        assert status == "FAILED", result
        assert result["msg"].startswith("report_dir: %s is locked by another run (pid %d on " % (report_dir, os.getpid())), result
        assert "run_id 20261125T110000Z-holder" in result["msg"] and "gave up after 1 seconds (lock_timeout)" in result["msg"]
    assert os.listdir(report_dir) == [".sipguard.lock"]  # nothing else written
    # released: the next run goes through
    status, result = report({"records": records, "report_dir": report_dir, "lock_timeout": 0}, False)
    assert status == "CHANGED", result
