# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/report_store.py: the report directory, history, and a writer killed mid-write.

Runs A and B are the recorded lab records and record_fixtures.run_b() (see test_report.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import glob
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import report_store
from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import (
    LOCK_FILE,
    ReportStoreError,
    dir_mode,
    load_report,
    lock,
    lock_mode,
    parse_mode,
    prune_history,
    publish,
)

import record_fixtures as F

ALL = ("json", "html", "md", "junit")


@pytest.fixture(scope="module")
def records():
    return F.load_records()


def _publish(report_dir, records, previous, run_id, keep=30, formats=ALL, check_mode=False, **kwargs):
    report = build_report(records, previous, run_id=run_id, generated_at="2026-11-25T00:00:00Z")
    return report, publish(str(report_dir), report, formats, keep, check_mode=check_mode, **kwargs)


def _listing(report_dir):
    return sorted(os.path.relpath(p, str(report_dir)) for p in glob.glob(os.path.join(str(report_dir), "**"),
                                                                         recursive=True) if os.path.isfile(p))


def test_publish_writes_every_format_report_json_last(tmp_path, records):
    report, stored = _publish(tmp_path / "r", records, None, "run-a")
    assert [os.path.basename(p) for p in stored["written"]] == [
        "run-a.json", "report.html", "report.md", "junit.xml", "report.json"]
    assert _listing(tmp_path / "r") == ["history/run-a.json", "junit.xml", "report.html", "report.json", "report.md"]
    assert load_report(str(tmp_path / "r" / "report.json")) == report


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


# --- file modes ------------------------------------------------------------------------------

def _modes(report_dir):
    """{relative path: mode} of everything under report_dir, itself included as '.'."""
    modes = {".": stat.S_IMODE(os.stat(str(report_dir)).st_mode)}
    for path in glob.glob(os.path.join(str(report_dir), "**"), recursive=True):
        if path.rstrip(os.sep) != str(report_dir):
            modes[os.path.relpath(path, str(report_dir))] = stat.S_IMODE(os.lstat(path).st_mode)
    return modes


def test_files_are_0640_and_new_directories_0750_by_default(tmp_path, records):
    old = os.umask(0o022)  # the usual umask
    try:
        _publish(tmp_path / "r", records, None, "run-a")
    finally:
        os.umask(old)
    assert _modes(tmp_path / "r") == {".": 0o750, "history": 0o750, "history/run-a.json": 0o640, "junit.xml": 0o640,
                                      "report.html": 0o640, "report.json": 0o640, "report.md": 0o640}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_configured_mode_whatever_the_umask(tmp_path, records, umask):
    old = os.umask(umask)
    try:
        _publish(tmp_path / "a" / "r", records, None, "run-a", mode=0o600)
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "a" / "r")
    assert set(mode for path, mode in modes.items() if path.endswith((".json", ".html", ".md", ".xml"))) == {0o600}
    assert (modes["."], modes["history"]) == (0o700, 0o700)
    assert stat.S_IMODE(os.stat(str(tmp_path / "a")).st_mode) == 0o700  # a missing parent is created alike


def test_an_existing_directory_keeps_its_mode_and_old_files_get_the_new_one(tmp_path, records):
    (tmp_path / "r" / "history").mkdir(parents=True)
    os.chmod(str(tmp_path / "r"), 0o755)  # the user's own directory
    os.chmod(str(tmp_path / "r" / "history"), 0o770)
    previous, _stored = _publish(tmp_path / "r", records, None, "run-a", mode=0o644)
    assert _modes(tmp_path / "r")["report.json"] == 0o644
    _publish(tmp_path / "r", records, previous, "run-b")
    modes = _modes(tmp_path / "r")
    assert (modes["."], modes["history"]) == (0o755, 0o770)
    assert modes["report.json"] == modes["report.html"] == modes["junit.xml"] == modes["report.md"] == 0o640
    assert modes["history/run-b.json"] == 0o640 and modes["history/run-a.json"] == 0o644  # old runs are not rewritten


@pytest.mark.parametrize("value, mode", [("0640", 0o640), ("640", 0o640), ("0600", 0o600), ("0644", 0o644),
                                         ("0660", 0o660)])
def test_parse_mode(value, mode):
    assert parse_mode(value) == mode


@pytest.mark.parametrize("value, message", [
    (416, "mode: 416 is not a string; quote the mode, for example '0640' (YAML reads an unquoted 0640 as the number 416)"),
    (None, "mode: None is not a string"),
    ("0x1a0", "mode: '0x1a0' is not a file mode; give three octal digits with an optional leading 0, for example '0640'"),
    ("u=rw,g=r", "mode: 'u=rw,g=r' is not a file mode"),
    ("0648", "mode: '0648' is not a file mode"),
    ("04750", "mode: '04750' is not a file mode"),
    (" 0640", "mode: ' 0640' is not a file mode"),
    ("", "mode: '' is not a file mode"),
    ("0440", "mode: '0440' does not let the owner read and write the report (the next run reads report.json back); "
             "use at least '0600'"),
    ("0200", "mode: '0200' does not let the owner read and write"),
])
def test_a_bad_mode_is_refused_naming_it(value, message):
    with pytest.raises(ReportStoreError) as err:
        parse_mode(value)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("mode, directory", [(0o640, 0o750), (0o644, 0o755), (0o600, 0o700), (0o660, 0o770)])
def test_dir_mode(mode, directory):
    assert dir_mode(mode) == directory


# --- pruning ---------------------------------------------------------------------------------

def _history_file(history, name, mtime):
    path = os.path.join(str(history), name)
    with open(path, "w") as fh:
        fh.write("{}")
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_pruning_keeps_the_current_runs_file_whatever_its_mtime(tmp_path, keep):
    # This run's file looks the oldest (a clock set back, a copied directory); others are newer.
    own = _history_file(tmp_path, "run-z.json", 1000)
    others = [_history_file(tmp_path, "run-%d.json" % index, 2000 + index) for index in range(4)]
    pruned = prune_history(str(tmp_path), keep, own)
    left = sorted(os.listdir(str(tmp_path)))
    assert "run-z.json" in left and own not in pruned
    # this run counts towards keep_history; the newest of the others fill the rest
    newest = others[len(others) - (keep - 1):]
    assert left == sorted(["run-z.json"] + [os.path.basename(p) for p in newest])
    assert sorted(pruned) == sorted(set(others) - set(os.path.join(str(tmp_path), n) for n in left))


def test_publish_keep_one_keeps_its_own_file_among_newer_ones(tmp_path, records):
    history = tmp_path / "history"
    history.mkdir()
    future = time.time() + 3600
    for index in range(3):
        _history_file(history, "run-future-%d.json" % index, future + index)
    _report, stored = _publish(tmp_path, records, None, "run-now", keep=1)
    assert os.listdir(str(history)) == ["run-now.json"]
    assert len(stored["pruned"]) == 3
    assert load_report(str(tmp_path / "report.json"))["run_id"] == "run-now"


# --- the lock --------------------------------------------------------------------------------

# Holds the report directory's lock until told to go on stdin (or until killed).
_HOLDER = textwrap.dedent("""
    import os, sys
    from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import lock
    with lock(sys.argv[1], sys.argv[2], timeout=0):
        print("LOCKED", flush=True)
        sys.stdin.readline()
    print("RELEASED", flush=True)
    sys.stdin.readline()
""")


@pytest.fixture()
def holder(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = []

    def start(report_dir, run_id="run-holder"):
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(report_dir), run_id], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "LOCKED", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_run_times_out_naming_the_directory_and_the_holder(tmp_path, holder):
    proc = holder(tmp_path, "20261125T140000Z-abc123")
    with pytest.raises(ReportStoreError) as err:
        with lock(str(tmp_path), "run-b", timeout=1):
            pytest.fail("got the lock another process holds")
    message = str(err.value)
    assert message.startswith("report_dir: %s is locked by another run (pid %d on %s, run_id 20261125T140000Z-abc123, "
                              "since " % (tmp_path, proc.pid, socket.gethostname())), message
    assert message.endswith("gave up after 1 seconds (lock_timeout). Wait for that run to finish, or raise lock_timeout")


def test_a_second_run_waits_for_the_first(tmp_path, holder):
    proc = holder(tmp_path)
    released = []

    def release():
        time.sleep(0.5)
        released.append(True)
        proc.stdin.write("\n")
        proc.stdin.flush()

    thread = threading.Thread(target=release)
    thread.start()
    try:
        with lock(str(tmp_path), "run-b", timeout=60) as path:
            assert released == [True]  # acquired only after the holder was told to let go
            assert proc.stdout.readline().strip() == "RELEASED"
            with open(path) as fh:
                assert json.load(fh)["pid"] == os.getpid()
    finally:
        thread.join()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path, holder):
    proc = holder(tmp_path)
    with pytest.raises(ReportStoreError):
        with lock(str(tmp_path), "run-b", timeout=0):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(str(tmp_path / LOCK_FILE))  # the file stays; it is not the lock
    with lock(str(tmp_path), "run-c", timeout=0):
        with open(str(tmp_path / LOCK_FILE)) as fh:
            assert json.load(fh)["run_id"] == "run-c"


def test_two_holders_in_one_process_exclude_each_other(tmp_path):
    # flock(2) locks belong to the open file, not the process (fcntl record locks would let both in).
    with lock(str(tmp_path), "run-a", timeout=0):
        with pytest.raises(ReportStoreError) as err:
            with lock(str(tmp_path), "run-b", timeout=0):
                pass
        assert "pid %d" % os.getpid() in str(err.value) and "run_id run-a" in str(err.value)
    with lock(str(tmp_path), "run-c", timeout=0):
        pass


def test_a_lock_file_removed_while_a_run_waits_does_not_let_two_runs_in(tmp_path):
    path = str(tmp_path / LOCK_FILE)
    with lock(str(tmp_path), "run-a", timeout=0):
        waiter = report_store._open_lock_file(path, 0o640)  # a run that opened the file and waits
        os.unlink(path)  # someone removes the lock file
    try:
        with lock(str(tmp_path), "run-b", timeout=0):  # a later run creates a new file and locks it
            # the waiter now gets the old, unlinked file's lock, which excludes nobody: not the lock
            assert report_store._try_lock(waiter, path) is True
            assert report_store._is_current(waiter, path) is False
            with pytest.raises(ReportStoreError):
                with lock(str(tmp_path), "run-c", timeout=0):
                    pass
    finally:
        os.close(waiter)


def test_unlinked_lock_file_is_retried(tmp_path, monkeypatch):
    # The file is replaced between open and flock: the lock taken is on the old file; try again.
    calls = []
    real = report_store._is_current

    def first_stale(fd, path):
        calls.append(path)
        return False if len(calls) == 1 else real(fd, path)

    monkeypatch.setattr(report_store, "_is_current", first_stale)
    with lock(str(tmp_path), "run-a", timeout=5):
        pass
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "directory"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused(tmp_path, kind):
    target = tmp_path / "secret"
    target.write_text("do not truncate")
    report_dir = tmp_path / "r"
    report_dir.mkdir()
    path = str(report_dir / LOCK_FILE)
    if kind == "symlink":
        os.symlink(str(target), path)
    elif kind == "hardlink":
        os.link(str(target), path)
    else:
        os.mkdir(path)
    with pytest.raises(ReportStoreError) as err:
        with lock(str(report_dir), "run-a", timeout=0):
            pass
    assert path in str(err.value) and "remove it" in str(err.value), str(err.value)
    assert target.read_text() == "do not truncate"


def test_the_holder_information_is_printed_plain(tmp_path, holder):
    holder(tmp_path)
    with open(str(tmp_path / LOCK_FILE), "w") as fh:
        json.dump({"pid": "1\n\x1b[31mred", "host": "h" * 200, "run_id": None}, fh)
    with pytest.raises(ReportStoreError) as err:
        with lock(str(tmp_path), "run-b", timeout=0):
            pass
    message = str(err.value)
    assert "\x1b" not in message and "\n" not in message and "h" * 65 not in message
    assert "pid 1???31mred on " in message and "run_id None" in message


def test_a_lock_held_by_a_leftover_process_says_so(tmp_path):
    # The run that wrote the lock file died, but a process that has the file open (a child it forked,
    # anyone who can open it) still holds the lock: the message must not blame the dead run alone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = str(tmp_path / LOCK_FILE)
    with open(path, "w") as fh:
        json.dump({"pid": dead.pid, "host": socket.gethostname(), "run_id": "run-dead", "since": "x"}, fh)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ReportStoreError) as err:
            with lock(str(tmp_path), "run-b", timeout=0):
                pass
    finally:
        os.close(fd)
    assert "pid %d on %s, run_id run-dead" % (dead.pid, socket.gethostname()) in str(err.value)
    assert "that process is gone, another one holds the file locked (find it with: fuser -v %s)" % path in str(err.value)


@pytest.mark.parametrize("mode, expected", [(0o640, 0o600), (0o644, 0o600), (0o600, 0o600), (0o660, 0o660),
                                            (0o666, 0o666)])
def test_only_who_may_write_the_report_may_open_the_lock_file(tmp_path, mode, expected):
    assert lock_mode(mode) == expected
    old = os.umask(0)
    try:
        with lock(str(tmp_path), "run-a", timeout=0, mode=mode) as path:
            assert stat.S_IMODE(os.stat(path).st_mode) == expected
    finally:
        os.umask(old)
