# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report directory: atomic writes, the baseline and the run history.

Layout of ``report_dir``: ``report.json`` (the last run: the baseline of the next), ``report.html``,
``report.md``, ``junit.xml``, and ``history/<run_id>.json`` (one report.json per run, the newest
``keep_history`` kept).

Every file is replaced atomically (atomic_file.atomic_write: a temporary file in its own
directory, fsync'ed, renamed over the old one, the directory fsync'ed). ``report.json`` is written last: it is the commit point.
A run killed at any moment leaves the previous ``report.json`` and every history file whole;
at worst the other formats are already new, a history file of the unfinished run exists, and a
temporary file is left behind (removed by a later run).

One run at a time: a run holds ``lock()`` (an flock(2) on ``.sipguard.lock`` in the directory)
from reading the baseline to the last prune, so a second run waits, and fails after its timeout
naming the holder. The kernel drops the lock when the holder's process ends, however it ends;
the file itself stays and means nothing without the lock.

Files are written with a given mode (default 0640: they hold the fleet's rules, listeners and
SIP banners); directories this code creates get the same read bits plus search (0750).

Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import socket
import stat
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.atomic_file import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    atomic_write,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    ReportError,
    check_report,
    loads_report,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import (
    FORMATS,
    file_name,
    iter_format,
)

HISTORY_DIR = "history"
BASELINE = "report.json"
LOCK_FILE = ".sipguard.lock"
DEFAULT_MODE = "0640"
# How long a run waits for another run's lock by default; a run holds it for seconds.
LOCK_TIMEOUT = 300
# report.prom's name in node_exporter's textfile directory (the collector reads *.prom files).
TEXTFILE_NAME = "sipguard.prom"
_MODE_RE = re.compile(r"^0?[0-7]{3}$")
# A leftover temporary file older than this belongs to a killed run, not to a concurrent one.
STALE_TEMP_SECONDS = 600
_CHUNK = 1 << 20


class ReportStoreError(Exception):
    pass


def _read_chunks(path):
    with open(path, "r", encoding="utf-8") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def load_report(path, where=None):
    """The report at ``path``, or None when there is none; ReportStoreError when it is unreadable."""
    where = where or path
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise ReportStoreError("%s: cannot read it: %s" % (where, exc.strerror or exc))
    try:
        report = loads_report(data.decode("utf-8"))
    except ValueError as exc:
        raise ReportStoreError("%s is not valid JSON (%s): restore it from %s/ or move it away" % (
            where, exc, HISTORY_DIR))
    try:
        return check_report(report, where)
    except ReportError as exc:
        raise ReportStoreError(str(exc))


def parse_mode(value, name="mode"):
    """The file mode given as a string of octal digits ('0640' or '640') -> int; ReportStoreError if bad.

    A number is refused: YAML reads an unquoted 0640 as the integer 416, and 416 is no mode anyone meant.
    The owner must keep read and write: the next run reads report.json back as its baseline.
    """
    if not isinstance(value, str):
        raise ReportStoreError("%s: %r is not a string; quote the mode, for example '0640' (YAML reads an unquoted "
                               "0640 as the number 416)" % (name, value))
    if not _MODE_RE.match(value):
        raise ReportStoreError("%s: %r is not a file mode; give three octal digits with an optional leading 0, "
                               "for example '0640'" % (name, value))
    mode = int(value, 8)
    if mode & 0o600 != 0o600:
        raise ReportStoreError("%s: %r does not let the owner read and write the report (the next run reads "
                               "report.json back); use at least '0600'" % (name, value))
    return mode


def dir_mode(mode):
    """The mode of a directory this code creates for files of ``mode``: owner rwx, and search for
    whoever may read the files (0640 -> 0750, 0644 -> 0755, 0600 -> 0700)."""
    return mode | 0o700 | ((mode & 0o044) >> 2)


def _make_dirs(path, mode):
    """Create ``path`` and its missing parents with exactly ``mode`` (not the umask's); existing ones are left alone."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        _make_dirs(parent, mode)
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        if exc.errno == errno.EEXIST and os.path.isdir(path):
            return  # a concurrent run made it; its mode is that run's
        raise
    os.chmod(path, mode)


def check_writable(report_dir, create, mode=0o750):
    """Raise ReportStoreError unless ``report_dir`` is (or can be made) a writable directory.

    With ``create``, a missing directory is created with ``mode`` (an existing one keeps its own).
    """
    if os.path.exists(report_dir):
        if not os.path.isdir(report_dir):
            raise ReportStoreError("report_dir: %s exists and is not a directory" % report_dir)
        if not os.access(report_dir, os.W_OK | os.X_OK):
            raise ReportStoreError("report_dir: %s is not writable" % report_dir)
        return
    parent = os.path.dirname(os.path.abspath(report_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ReportStoreError("report_dir: %s does not exist and %s is not writable" % (report_dir, parent))
    if create:
        try:
            _make_dirs(report_dir, mode)
        except OSError as exc:
            raise ReportStoreError("report_dir: cannot create %s: %s" % (report_dir, exc.strerror or exc))


def _open_lock_file(path, mode):
    """The lock file, opened read-write (created with ``mode`` if missing).

    Never through a symlink, and only a plain file with one link: the holder truncates and writes
    it, and a run often has more rights than whoever can write into the report directory.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                     | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReportStoreError("report_dir: the lock file %s is a symbolic link; remove it" % path)
        if exc.errno == errno.EISDIR:
            raise ReportStoreError("report_dir: the lock file %s is a directory; remove it" % path)
        raise ReportStoreError("report_dir: cannot open the lock file %s: %s" % (path, exc.strerror or exc))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ReportStoreError("report_dir: the lock file %s is not a plain file with one link; remove it" % path)
    return fd


def _try_lock(fd, path):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise ReportStoreError("report_dir: cannot lock %s: %s" % (path, exc.strerror or exc))
    return True


def _is_current(fd, path):
    """Whether ``fd`` is still the file at ``path`` (someone may have removed or replaced it while we waited)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(path):
    """Who holds the lock, as its holder wrote it into the lock file (text for an error message)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        try:
            info = json.loads(os.read(fd, 4096).decode("utf-8"))
        finally:
            os.close(fd)
    except (IOError, OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "holder unknown (%s has no holder information)" % path
    # The file is writable by anyone who can write the directory: print only short plain values.
    fields = dict((key, re.sub(r"[^\w.:@+-]", "?", str(info.get(key)))[:64]) for key in ("pid", "host", "run_id", "since"))
    text = "pid %(pid)s on %(host)s, run_id %(run_id)s, since %(since)s" % fields
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not _alive(info["pid"]):
        # The run that wrote this is gone, yet the file is locked: a process it left (or any
        # process that can open the file) holds it.
        text += "; that process is gone, another one holds the file locked (find it with: fuser -v %s)" % path
    return text


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def lock_mode(mode):
    """The lock file's mode for report files of ``mode``: only who may write the report may open it
    (whoever can open it can flock it and hold every run off)."""
    return 0o600 | (0o060 if mode & 0o020 else 0) | (0o006 if mode & 0o002 else 0)


@contextlib.contextmanager
def lock(report_dir, run_id, timeout=LOCK_TIMEOUT, mode=0o640):
    """Hold the report directory's lock for the ``with`` block; wait up to ``timeout`` seconds for it.

    flock(2), not the file's presence, is the lock: the kernel releases it when the holder's last
    descriptor closes, also when the process is killed, so a dead run never leaves it stuck. (Not
    fcntl(F_SETLK) record locks: those do not exclude two holders in one process, and a process
    loses them when it closes any descriptor of the file.) The holder writes its pid, host, run_id
    and start time into the file so that a waiter that gives up can say who holds it. A waiter
    checks that the file it locked is still the one at the path, in case it was removed meanwhile.
    ``mode`` is the report files' mode; a new lock file gets lock_mode(mode).
    """
    path = os.path.join(report_dir, LOCK_FILE)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        fd = _open_lock_file(path, lock_mode(mode))
        try:
            if _try_lock(fd, path) and _is_current(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReportStoreError("report_dir: %s is locked by another run (%s); gave up after %s seconds "
                                   "(lock_timeout). Wait for that run to finish, or raise lock_timeout"
                                   % (report_dir, _holder(path), timeout))
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                  "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8"))
        except OSError:
            pass  # only for a waiter's message (a full disk fails the report's own writes with a message)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _history_files(history):
    try:
        names = [n for n in os.listdir(history) if n.endswith(".json") and not n.startswith(".")]
    except OSError:
        return []
    entries = []
    for name in names:
        path = os.path.join(history, name)
        try:
            entries.append((os.stat(path).st_mtime, name, path))
        except OSError:
            continue
    return [path for _mtime, _name, path in sorted(entries)]


def _remove_stale_temps(directory, now):
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            path = os.path.join(directory, name)
            try:
                if now - os.stat(path).st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                continue
    return removed


def plan_files(report_dir, report, formats, keep_history):
    """[(format, path)] in write order: history, then the other formats, then report.json last."""
    files = []
    if "json" in formats and keep_history > 0:
        files.append(("history", os.path.join(report_dir, HISTORY_DIR, "%s.json" % report["run_id"])))
    for fmt in FORMATS:
        if fmt in formats and fmt != "json":
            files.append((fmt, os.path.join(report_dir, file_name(report, fmt))))
    if "json" in formats:
        files.append(("json", os.path.join(report_dir, BASELINE)))
    return files


def prune_history(history, keep_history, own):
    """Remove the oldest history files (by mtime, then name) beyond ``keep_history``, never ``own``
    (this run's file, whatever its mtime says); returns the removed paths."""
    runs = _history_files(history)
    excess = [path for path in runs if path != own]
    excess = excess[:max(0, len(runs) - keep_history)]
    return _unlink_all(excess)


def _unlink_all(paths):
    """Remove ``paths``; returns those that were removed (one already gone is not an error)."""
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    return removed


def _prune_evidence(report_dir, keep, own):
    """Keep the newest ``keep`` evidence bundles (at least this run's)."""
    bundles = []
    for name in os.listdir(report_dir):
        if name.startswith("evidence-") and name.endswith(".tar.gz"):
            path = os.path.join(report_dir, name)
            try:
                bundles.append((os.stat(path).st_mtime, name, path))
            except OSError:
                continue
    bundles.sort()
    excess = [path for _mtime, _name, path in bundles if path != own][:max(0, len(bundles) - max(keep, 1))]
    return _unlink_all(excess)


def publish(report_dir, report, formats, keep_history, check_mode=False, mode=0o640, textfile_dir=None):
    """Render ``formats`` of ``report`` into ``report_dir``, one file at a time, each streamed
    into its temporary file and given ``mode``; returns {written, pruned, paths}.

    With ``textfile_dir`` (node_exporter's textfile collector directory) and the ``prometheus``
    format, report.prom is also replaced atomically there as ``sipguard.prom`` (mode 0644: the
    exporter's user reads it; it holds no rules, only states). Evidence bundles beyond
    ``keep_history`` (at least this run's) are removed like history files.

    Call it holding lock(): it prunes the history. report.json is a copy of the history file just
    written (one rendering, same bytes). In check mode nothing is written or removed, and
    ``written`` lists what would be.
    """
    check_writable(report_dir, create=not check_mode, mode=dir_mode(mode))
    files = plan_files(report_dir, report, formats, keep_history)
    paths = dict((fmt, os.path.join(report_dir, file_name(report, fmt))) for fmt in FORMATS if fmt in formats)
    if textfile_dir and "prometheus" in formats:
        files.append(("textfile", os.path.join(textfile_dir, TEXTFILE_NAME)))
        paths["textfile"] = files[-1][1]
    if check_mode:
        return {"written": [path for _fmt, path in files], "pruned": [], "paths": paths}
    history = os.path.join(report_dir, HISTORY_DIR)
    written = []
    for fmt, path in files:
        try:
            if fmt == "history":
                if not os.path.isdir(history):
                    _make_dirs(history, dir_mode(mode))
                atomic_write(path, iter_format(report, "json"), mode=mode)
            elif fmt == "json" and written and written[0].startswith(history + os.sep):
                atomic_write(path, _read_chunks(written[0]), mode=mode)
            elif fmt == "textfile":
                if not os.path.isdir(textfile_dir):
                    raise ReportStoreError("textfile_dir: %s is not a directory (create it, or point it at "
                                           "node_exporter's --collector.textfile.directory)" % textfile_dir)
                atomic_write(path, iter_format(report, "prometheus"), mode=0o644)
            else:
                atomic_write(path, iter_format(report, fmt), mode=mode)
        except (IOError, OSError) as exc:
            raise ReportStoreError("report_dir: cannot write %s: %s" % (path, exc.strerror or exc))
        written.append(path)
    pruned = []
    if "json" in formats:
        pruned = prune_history(history, keep_history, os.path.join(history, "%s.json" % report["run_id"]))
    if "evidence" in formats:
        pruned += _prune_evidence(report_dir, keep_history, paths["evidence"])
    now = time.time()
    _remove_stale_temps(report_dir, now)
    _remove_stale_temps(history, now)
    return {"written": written, "pruned": pruned, "paths": paths}
