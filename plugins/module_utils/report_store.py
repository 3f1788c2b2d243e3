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

Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.atomic_file import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    atomic_write,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    FILE_NAMES,
    ReportError,
    check_report,
    iter_format,
    loads_report,
)

HISTORY_DIR = "history"
BASELINE = "report.json"
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


def check_writable(report_dir, create):
    """Raise ReportStoreError unless ``report_dir`` is (or can be made) a writable directory."""
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
            os.makedirs(report_dir)
        except OSError as exc:
            raise ReportStoreError("report_dir: cannot create %s: %s" % (report_dir, exc.strerror or exc))


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
    """[(format, path)] in write order: history, then html/md/junit, then report.json last."""
    files = []
    if "json" in formats and keep_history > 0:
        files.append(("history", os.path.join(report_dir, HISTORY_DIR, "%s.json" % report["run_id"])))
    for fmt in ("html", "md", "junit"):
        if fmt in formats:
            files.append((fmt, os.path.join(report_dir, FILE_NAMES[fmt])))
    if "json" in formats:
        files.append(("json", os.path.join(report_dir, BASELINE)))
    return files


def publish(report_dir, report, formats, keep_history, check_mode=False):
    """Render ``formats`` of ``report`` into ``report_dir``, one file at a time, each streamed
    into its temporary file; returns {written, pruned, paths}.

    report.json is a copy of the history file just written (one rendering, same bytes). In check
    mode nothing is written or removed, and ``written`` lists what would be.
    """
    check_writable(report_dir, create=not check_mode)
    files = plan_files(report_dir, report, formats, keep_history)
    paths = dict((fmt, os.path.join(report_dir, FILE_NAMES[fmt])) for fmt in FILE_NAMES if fmt in formats)
    if check_mode:
        return {"written": [path for _fmt, path in files], "pruned": [], "paths": paths}
    history = os.path.join(report_dir, HISTORY_DIR)
    written = []
    for fmt, path in files:
        try:
            if fmt == "history":
                if not os.path.isdir(history):
                    os.makedirs(history)
                atomic_write(path, iter_format(report, "json"))
            elif fmt == "json" and written and written[0].startswith(history + os.sep):
                atomic_write(path, _read_chunks(written[0]))
            else:
                atomic_write(path, iter_format(report, fmt))
        except (IOError, OSError) as exc:
            raise ReportStoreError("report_dir: cannot write %s: %s" % (path, exc.strerror or exc))
        written.append(path)
    pruned = []
    if "json" in formats:
        keep = set([os.path.join(history, "%s.json" % report["run_id"])])
        runs = _history_files(history)
        excess = [path for path in runs if path not in keep]
        excess = excess[:max(0, len(runs) - keep_history)]
        for path in excess:
            try:
                os.unlink(path)
                pruned.append(path)
            except OSError:
                continue
    now = time.time()
    _remove_stale_temps(report_dir, now)
    _remove_stale_temps(history, now)
    return {"written": written, "pruned": pruned, "paths": paths}
