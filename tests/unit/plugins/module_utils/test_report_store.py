# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/report_store.py: the report directory, history, and a writer killed mid-write.

Runs A and B are the recorded lab records and record_fixtures.run_b() (see test_report.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import report_store
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import (
    ReportStoreError,
    load_report,
    publish,
)

import record_fixtures as F

ALL = ("json", "html", "md", "junit")


@pytest.fixture(scope="module")
def records():
    return F.load_records()


def _publish(report_dir, records, previous, run_id, keep=30, formats=ALL, check_mode=False):
    report = build_report(records, previous, run_id=run_id, generated_at="2026-11-25T00:00:00Z")
    return report, publish(str(report_dir), report, formats, keep, check_mode=check_mode)


def _listing(report_dir):
    return sorted(os.path.relpath(p, str(report_dir)) for p in glob.glob(os.path.join(str(report_dir), "**"),
                                                                         recursive=True) if os.path.isfile(p))


def test_publish_writes_every_format_report_json_last(tmp_path, records):
    report, stored = _publish(tmp_path / "r", records, None, "run-a")
    assert [os.path.basename(p) for p in stored["written"]] == [
        "run-a.json", "report.html", "report.md", "junit.xml", "report.json"]
    assert _listing(tmp_path / "r") == ["history/run-a.json", "junit.xml", "report.html", "report.json", "report.md"]
    assert load_report(str(tmp_path / "r" / "report.json")) == report
    assert oct(os.stat(str(tmp_path / "r" / "report.json")).st_mode & 0o777) == "0o644"


def test_check_mode_writes_nothing(tmp_path, records):
    _report, stored = _publish(tmp_path / "r", records, None, "run-a", check_mode=True)
    assert not os.path.exists(str(tmp_path / "r"))
    assert stored["written"][-1] == str(tmp_path / "r" / "report.json") and stored["pruned"] == []


def test_history_keeps_the_newest_runs(tmp_path, records):
    previous = None
    for index in range(5):
        previous, stored = _publish(tmp_path, records, previous, "run-%d" % index, keep=3)
        # mtimes one second apart, so the order does not depend on the file system's timestamp granularity
        os.utime(str(tmp_path / "history" / ("run-%d.json" % index)), (1000 + index, 1000 + index))
    assert sorted(os.listdir(str(tmp_path / "history"))) == ["run-2.json", "run-3.json", "run-4.json"]
    _publish(tmp_path, records, previous, "run-5", keep=0)
    assert os.listdir(str(tmp_path / "history")) == []


def test_without_json_the_baseline_stays(tmp_path, records):
    _publish(tmp_path, records, None, "run-a")
    before = (tmp_path / "report.json").read_bytes()
    _report, stored = _publish(tmp_path, records, None, "run-b", formats=("html",))
    assert (tmp_path / "report.json").read_bytes() == before
    assert [os.path.basename(p) for p in stored["written"]] == ["report.html"]


def test_corrupt_baseline_says_how_to_recover(tmp_path):
    (tmp_path / "report.json").write_text('{"schema": 1, "hosts": {')
    with pytest.raises(ReportStoreError) as err:
        load_report(str(tmp_path / "report.json"))
    assert "is not valid JSON" in str(err.value) and "restore it from history/" in str(err.value)


def test_missing_baseline_is_none(tmp_path):
    assert load_report(str(tmp_path / "report.json")) is None


def test_report_dir_that_is_a_file(tmp_path, records):
    (tmp_path / "x").write_text("")
    with pytest.raises(ReportStoreError) as err:
        _publish(tmp_path / "x", records, None, "run-a")
    assert str(err.value) == "report_dir: %s exists and is not a directory" % (tmp_path / "x")


def test_report_dir_not_writable(tmp_path, records, monkeypatch):
    (tmp_path / "ro").mkdir()
    os.chmod(str(tmp_path / "ro"), 0o555)
    if os.geteuid() == 0:  # root writes through file permissions; ask access(2) as a user would
        monkeypatch.setattr(report_store.os, "access", lambda path, mode: not str(path).endswith("/ro"))
    with pytest.raises(ReportStoreError) as err:
        _publish(tmp_path / "ro", records, None, "run-a")
    assert str(err.value) == "report_dir: %s is not writable" % (tmp_path / "ro")


# A writer that hangs in the middle of the Nth file: half its bytes are in the temporary file,
# flushed, when it says so on stdout; the test then kills it with SIGKILL.
_WRITER = textwrap.dedent("""
    import json, os, sys, time
    from ansible_collections.sipguard.firewall.plugins.module_utils import atomic_file, report_store
    from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
    report_dir, stop_at = sys.argv[1], int(sys.argv[2])
    with open(os.path.join(report_dir, "report.json")) as fh:
        previous = json.load(fh)
    with open(sys.argv[3]) as fh:
        records = json.load(fh)
    calls = []
    def hanging_write(fh, chunks):
        data = "".join(chunks).encode("utf-8")
        calls.append(1)
        if len(calls) < stop_at:
            return fh.write(data)
        fh.write(data[:len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        print("HALF-WRITTEN", flush=True)
        time.sleep(120)
    atomic_file._write_all = hanging_write
    report = build_report(records, previous, run_id="run-b", generated_at="2026-11-26T00:00:00Z")
    report_store.publish(report_dir, report, ["json", "html", "md", "junit"], 30)
    print("FINISHED", flush=True)
""")


@pytest.mark.parametrize("stop_at, written_before", [
    (1, []),                                              # killed writing history/run-b.json
    (3, ["history/run-b.json", "report.html"]),           # killed writing report.md
    (5, ["history/run-b.json", "report.html", "report.md", "junit.xml"]),  # killed writing report.json
])
def test_killed_writer_leaves_the_baseline_and_history_intact(tmp_path, records, stop_at, written_before):
    report_dir = tmp_path / "report"
    _publish(report_dir, records, None, "run-a")
    baseline = (report_dir / "report.json").read_bytes()
    old = dict((name, (report_dir / name).read_bytes()) for name in ("report.html", "report.md", "junit.xml"))
    records_b = tmp_path / "records_b.json"
    records_b.write_text(json.dumps(F.run_b(records)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(report_dir), str(stop_at), str(records_b)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "HALF-WRITTEN", proc.stderr.read()
        temps = glob.glob(str(report_dir / "**" / ".sipguard-*.tmp"), recursive=True)
        assert len(temps) == 1 and os.path.getsize(temps[0]) > 0  # really killed mid-file
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the previous run is whole: report.json byte for byte, and it loads as a report
    assert (report_dir / "report.json").read_bytes() == baseline
    assert load_report(str(report_dir / "report.json"))["run_id"] == "run-a"
    for path in glob.glob(str(report_dir / "history" / "*.json")):
        with open(path) as fh:
            assert json.load(fh)["schema"] == 1
    # files before the one being written are complete and new; the one being written and later ones are old
    for name, content in old.items():
        assert ((report_dir / name).read_bytes() != content) is (name in written_before), name
    history = sorted(os.listdir(str(report_dir / "history")))
    assert [h for h in history if not h.startswith(".")] == (
        ["run-a.json", "run-b.json"] if "history/run-b.json" in written_before else ["run-a.json"])
    # the next run compares with run A, publishes, and removes the dead writer's temporary file
    temp = glob.glob(str(report_dir / "**" / ".sipguard-*.tmp"), recursive=True)[0]
    os.utime(temp, (time.time() - report_store.STALE_TEMP_SECONDS - 5,) * 2)
    report, _stored = _publish(report_dir, F.run_b(records), load_report(str(report_dir / "report.json")), "run-c")
    assert report["baseline"]["run_id"] == "run-a" and len(report["changes"]) == 6
    assert glob.glob(str(report_dir / "**" / ".sipguard-*.tmp"), recursive=True) == []
