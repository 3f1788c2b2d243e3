# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the fleet_report task does, shared by the module and its action plugin.

The action plugin runs it in the controller's own process when the task runs on the controller
(local connection, no become): that is where the report is meant to be written, and it saves a
Python start per run. Anywhere else the module runs it. Both check their arguments against
ARGUMENT_SPEC and call run(); so the result is the same either way.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import os
import uuid

from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    ReportError,
    build_report,
    check_run_id,
    merge_reports,
    normalize_records,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import (
    FAIL_ON,
    alert_body,
    alert_items,
    gate,
    gate_message,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import (
    FORMATS as _FORMATS,
    render_markdown,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import (
    BASELINE,
    DEFAULT_MODE,
    LOCK_TIMEOUT,
    ReportStoreError,
    check_writable,
    dir_mode,
    load_report,
    lock,
    parse_mode,
    publish,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import WaiverError, parse_waivers

FORMATS = list(_FORMATS)
# What a run writes unless told otherwise (the formats of 1.x before sarif, prometheus and evidence).
DEFAULT_FORMATS = ["json", "html", "md", "junit"]

ARGUMENT_SPEC = dict(
    records=dict(type="raw", default=[]),
    report_dir=dict(type="path", required=True),
    merge_from=dict(type="list", elements="path", default=[]),
    formats=dict(type="list", elements="str", choices=FORMATS, default=list(DEFAULT_FORMATS)),
    keep_history=dict(type="int", default=30),
    fail_on=dict(type="list", elements="str", choices=list(FAIL_ON), default=[]),
    run_id=dict(type="str"),
    report_url=dict(type="str"),
    # raw, not str: an unquoted 0640 arrives as the number 416 and must be refused, not read as '416'
    mode=dict(type="raw", default=DEFAULT_MODE),
    lock_timeout=dict(type="int", default=LOCK_TIMEOUT),
    waivers=dict(type="list", elements="raw", default=[]),
    waivers_file=dict(type="path"),
    today=dict(type="str"),
    textfile_dir=dict(type="path"),
    confirmed=dict(type="list", elements="str"),
    check_only=dict(type="bool", default=False),
)

# What run() raises for bad input or an unusable report directory (the task fails with the message).
TaskError = (ReportError, ReportStoreError, WaiverError)


def _load_yaml(path):
    try:
        import yaml
    except ImportError:
        raise WaiverError("waivers_file: reading %s needs PyYAML on the host the task runs on; pass the list as "
                          "waivers instead" % path)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except (IOError, OSError) as exc:
        raise WaiverError("waivers_file: cannot read %s: %s" % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        raise WaiverError("waivers_file: %s is not valid YAML: %s" % (path, exc))
    if isinstance(data, dict) and "sipguard_waivers" in data:
        data = data["sipguard_waivers"]
    return [] if data is None else data


def load_waivers(params):
    """The waivers of ``waivers`` then those of ``waivers_file``, checked (WaiverError says what to fix)."""
    waivers = parse_waivers(params.get("waivers") or [], "waivers")
    if params.get("waivers_file"):
        waivers += parse_waivers(_load_yaml(params["waivers_file"]), "waivers_file %s" % params["waivers_file"])
    ids = [waiver["id"] for waiver in waivers]
    for waiver_id in ids:
        if ids.count(waiver_id) > 1:
            raise WaiverError("waivers: the id %r is used twice; give each waiver its own id" % waiver_id)
    return waivers


def _today(params, now):
    if not params.get("today"):
        return now.date()
    try:
        return datetime.datetime.strptime(params["today"], "%Y-%m-%d").date()
    except ValueError:
        raise WaiverError("today: %r is not a date (YYYY-MM-DD)" % params["today"])


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def run(params, check_mode=False):
    """Build (or merge), gate and publish the report; return the task result (raises TaskError).

    The options, the records and merge_from are checked before the report directory is touched
    (only a corrupt baseline fails later, in a directory that exists). Outside
    check mode the directory's lock is held from reading the baseline to the last prune, so two
    runs into one directory run one after the other: the later one compares with the earlier
    one's report and cannot prune the history file the earlier one is still copying. Check mode
    takes no lock (it would have to create the lock file) and reads report.json, which is
    replaced atomically.
    """
    if params["keep_history"] < 0:
        raise ReportStoreError("keep_history: %d is negative; use 0 to keep no history" % params["keep_history"])
    if params["lock_timeout"] < 0:
        raise ReportStoreError("lock_timeout: %d is negative; use 0 to fail at once when another run holds the lock"
                               % params["lock_timeout"])
    mode = parse_mode(params["mode"])
    waivers = load_waivers(params)
    now = _now()
    today = _today(params, now)
    if params.get("check_only"):
        return dict(changed=False, waivers=waivers)
    if params.get("textfile_dir") and "prometheus" in params["formats"] and not os.path.isdir(params["textfile_dir"]):
        raise ReportStoreError("textfile_dir: %s is not a directory (create it, or point it at node_exporter's "
                               "--collector.textfile.directory)" % params["textfile_dir"])
    generated_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    run_id = check_run_id(params["run_id"]) if params["run_id"] else "%s-%s" % (
        now.strftime("%Y%m%dT%H%M%SZ"), uuid.uuid4().hex[:6])
    report_dir = params["report_dir"]
    check_writable(report_dir, create=False)
    records = params["records"] if params["records"] is not None else []
    normalize_records(records)  # bad records fail here, before a missing report_dir is created
    slices = []
    for index, path in enumerate(params["merge_from"]):
        report = load_report(path, "merge_from[%d]: %s" % (index, path))
        if report is None:
            raise ReportStoreError("merge_from[%d]: %s does not exist" % (index, path))
        slices.append(report)
    if check_mode:
        held = contextlib.nullcontext()
    else:
        check_writable(report_dir, create=True, mode=dir_mode(mode))
        held = lock(report_dir, run_id, timeout=params["lock_timeout"], mode=mode)
    with held:
        previous = load_report(os.path.join(report_dir, BASELINE))
        if slices:
            report = merge_reports(slices, previous=previous, run_id=run_id, generated_at=generated_at,
                                   records=records if records else None, waivers=waivers, today=today)
        else:
            report = build_report(records, previous=previous, run_id=run_id, generated_at=generated_at,
                                  waivers=waivers, today=today)
        failures = gate(report, params["fail_on"])
        stored = publish(report_dir, report, params["formats"], params["keep_history"], check_mode=check_mode,
                         mode=mode, textfile_dir=params.get("textfile_dir"))
    summary = dict((key, value) for key, value in report.items() if key not in ("hosts", "changes"))
    return dict(
        changed=bool(stored["written"]),
        report=summary,
        changes=report["changes"],
        paths=stored["paths"],
        written=stored["written"],
        pruned=stored["pruned"],
        gate_failures=failures,
        gate_message=gate_message(report, params["fail_on"], failures) if failures else "",
        markdown=render_markdown(report),
        alert=alert_body(report, params["report_url"], confirmed=set(params["confirmed"])
                         if params.get("confirmed") is not None else None),
        opened=alert_items(report),
        waivers=report.get("waivers") or [],
    )
