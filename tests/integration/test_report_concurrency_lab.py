"""Two gate runs at once into one report directory (issue 12, item 5).

The real gate playbook (``ansible-playbook sipguard.firewall.gate``) runs twice, both processes
started together, against the report lab. The lab has exposed hosts, so each run is expected to
fail on policy (exit 2, the gate's message); what must not happen is a store error ("cannot write
report.json") or a lost update (both runs comparing with the same old baseline).

Both runs also merge one large report of a synthetic fleet (``sipguard_report_merge_from``, the
role's job-slice merge), built from the recorded lab host records: it makes the report task take
seconds instead of a fraction of one, so that the two runs' report tasks overlap (without a lock
they read the baseline, write and prune at the same time).
"""

import copy
import glob
import json
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import BIN, TESTS, lab_up

sys.path.insert(0, os.path.join(TESTS, "unit"))
import record_fixtures  # noqa: E402  (the recorded lab host records)

from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report  # noqa: E402
from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import load_report, publish  # noqa: E402

SYNTHETIC_HOSTS = 3000


@pytest.fixture(scope="module")
def report_lab():
    return lab_up("report.yml")


@pytest.fixture(scope="module")
def big_slice():
    """report.json of a synthetic fleet of SYNTHETIC_HOSTS hosts (copies of the recorded records)."""
    recorded = [record for _name, record in sorted(record_fixtures.load_records().items())]
    records = []
    for index in range(SYNTHETIC_HOSTS):
        record = copy.deepcopy(recorded[index % len(recorded)])
        record["host"] = "synthetic-%05d" % index
        records.append(record)
    directory = tempfile.mkdtemp(prefix="sipguard-slice-")
    publish(directory, build_report(records, None, run_id="synthetic-slice", generated_at="2026-11-25T00:00:00Z"),
            ["json"], 0)
    return os.path.join(directory, "report.json")


def _gate_twice_at_once(lab, report_dir, variables):
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], "sipguard.firewall.gate",
            "-e", json.dumps(dict({"sipguard_report_dir": report_dir}, **variables))]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False")
    procs = [subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
             for _run in range(2)]
    results = []
    for proc in procs:
        try:
            out, _err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _err = proc.communicate()
        results.append((proc.returncode, out))
    return results


def _assert_failed_on_policy_only(results):
    for returncode, out in results:
        # The lab has exposed hosts: the gate fails the play (exit 2) with its message, after writing.
        assert "cannot write" not in out and "report_dir:" not in out, out[-4000:]
        assert returncode == 2 and "sipguard gate failed (fail_on: exposed, regression, unreachable)" in out, \
            (returncode, out[-4000:])


def _history(report_dir):
    reports = {}
    for path in glob.glob(os.path.join(report_dir, "history", "*.json")):
        report = load_report(path)
        reports[report["run_id"]] = report
    return reports


def test_two_gate_runs_at_once_both_finish_and_the_second_builds_on_the_first(report_lab, big_slice):
    report_dir = tempfile.mkdtemp(prefix="sipguard-concurrent-")
    results = _gate_twice_at_once(report_lab, report_dir, {"sipguard_report_merge_from": [big_slice]})
    _assert_failed_on_policy_only(results)
    last = load_report(os.path.join(report_dir, "report.json"))  # parses and is a valid report
    assert len(last["hosts"]) == SYNTHETIC_HOSTS + 4
    history = _history(report_dir)
    assert len(history) == 2, sorted(history)  # both runs are in the history
    # One run after the other: the later one compared with the earlier one's report, not with
    # the same empty baseline (a lost update).
    assert last["baseline"] is not None, "both runs read the baseline before either wrote it"
    first = last["baseline"]["run_id"]
    assert sorted(history) == sorted([first, last["run_id"]])
    assert history[first]["baseline"] is None
    assert history[last["run_id"]] == last


def test_two_gate_runs_at_once_keeping_one_history_file(report_lab, big_slice):
    """keep_history 1: each run prunes every history file but its own; the later run must not
    remove the earlier one's file while the earlier one still copies it to report.json."""
    report_dir = tempfile.mkdtemp(prefix="sipguard-concurrent-")
    results = _gate_twice_at_once(report_lab, report_dir, {"sipguard_report_merge_from": [big_slice],
                                                           "sipguard_report_keep_history": 1})
    _assert_failed_on_policy_only(results)
    last = load_report(os.path.join(report_dir, "report.json"))
    history = _history(report_dir)
    assert list(history) == [last["run_id"]] and history[last["run_id"]] == last
    assert last["baseline"] is not None, "both runs read the baseline before either wrote it"
