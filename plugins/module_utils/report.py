# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's core: records, summary, change tracking, waivers and merge.

Pure functions over host records (``host_record.py`` defines them). The gate and the alert are in
``report_gate.py``, the file formats in ``report_render.py``; ``report_store.py`` writes the files.
The schema is documented in ``docs/report-schema.md``.

Python 3.8+, standard library only (module_utils may be shipped to a target).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
from html import escape as _html_escape

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import (
    FAMILIES,
    SCHEMA_VERSION as RECORD_SCHEMA_VERSION,
    STATES,
    exposure_key,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import apply_waivers

REPORT_SCHEMA_VERSION = 1
# Order in which change kinds are listed for one host (and in summary.changes).
CHANGE_KINDS = (
    "host_added", "host_gone", "reachability_changed", "compliance_changed",
    "opened", "restricted", "closed", "rule_changed", "listener_changed",
)
# Keys of a report that depend on when and how it was produced, not on the fleet's state.
# Two reports are equal (see comparable()) when everything else is equal.
RUN_KEYS = ("generated_at", "run_id", "sources")
WAIVER_STATUSES = ("active", "expired", "stale")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ReportError(ValueError):
    pass


# --------------------------------------------------------------------------- records

def _where(where, record):
    host = record.get("host") if isinstance(record, dict) else None
    return "%s (%s)" % (where, host) if host and "(" not in where else where


def validate_record(record, where="record"):
    """Raise ReportError naming the first thing wrong with ``record`` (a host record)."""
    if not isinstance(record, dict):
        raise ReportError("%s: a host record is a dict, got %s" % (where, type(record).__name__))
    for key in ("host", "schema", "reachable", "compliant", "exposed", "exposure", "findings"):
        if key not in record:
            raise ReportError("%s: missing '%s' (build records with sipguard.firewall.host_record)"
                              % (_where(where, record), key))
    if not isinstance(record["host"], str) or not record["host"]:
        raise ReportError("%s: 'host' must be the inventory host name, got %r" % (where, record["host"]))
    where = _where(where, record)
    if record["schema"] != RECORD_SCHEMA_VERSION:
        raise ReportError("%s: host record schema %r, this collection reads schema %d"
                          % (where, record["schema"], RECORD_SCHEMA_VERSION))
    for key in ("reachable", "compliant", "exposed"):
        if not isinstance(record[key], bool):
            raise ReportError("%s: '%s' must be true or false, got %r" % (where, key, record[key]))
    if not isinstance(record["exposure"], list):
        raise ReportError("%s: 'exposure' must be a list" % where)
    for index, item in enumerate(record["exposure"]):
        if not isinstance(item, dict):
            raise ReportError("%s: exposure[%d] must be a dict" % (where, index))
        for key in ("port", "proto", "family", "state"):
            if key not in item:
                raise ReportError("%s: exposure[%d]: missing '%s'" % (where, index, key))
        if item["state"] not in STATES:
            raise ReportError("%s: exposure[%d].state is %r, expected one of %s"
                              % (where, index, item["state"], ", ".join(STATES)))
        if item["family"] not in FAMILIES:
            raise ReportError("%s: exposure[%d].family is %r, expected one of %s"
                              % (where, index, item["family"], ", ".join(FAMILIES)))
        if not isinstance(item["port"], int) or isinstance(item["port"], bool):
            raise ReportError("%s: exposure[%d].port must be an integer, got %r" % (where, index, item["port"]))
    if not isinstance(record["findings"], list):
        raise ReportError("%s: 'findings' must be a list of strings" % where)
    details = record.get("finding_details")
    if details is not None:
        if not isinstance(details, list) or not all(isinstance(d, dict) and "kind" in d for d in details):
            raise ReportError("%s: 'finding_details' must be a list of findings (dicts with 'kind')" % where)


def normalize_records(records, where="records"):
    """A list or a {host: record} dict of host records -> {host: record}, validated.

    A host given twice is an error: which of two results is the truth is not for the report to guess.
    """
    if isinstance(records, dict):
        items = [("%s[%r]" % (where, key), key, value) for key, value in records.items()]
    elif isinstance(records, (list, tuple)):
        items = [("%s[%d]" % (where, index), None, value) for index, value in enumerate(records)]
    else:
        raise ReportError("%s: expected a list of host records or a dict host -> record, got %s"
                          % (where, type(records).__name__))
    hosts = {}
    for label, key, record in items:
        validate_record(record, label)
        if key is not None and key != record["host"]:
            raise ReportError("%s: the record is for host %r" % (label, record["host"]))
        if record["host"] in hosts:
            raise ReportError("%s: host %r appears twice" % (_where(label, record), record["host"]))
        hosts[record["host"]] = record
    return hosts


def _exposure_by_key(record):
    return dict((exposure_key(item), item) for item in record.get("exposure") or [])


def has_result(record):
    """The host answered and ufw_info produced a result for it."""
    return bool(record["reachable"]) and not record.get("error")


# --------------------------------------------------------------------------- summary

def summarize(records):
    """Counts over host records (a list or a {host: record} dict); a pure function of the records.

    ``hosts = compliant + non_compliant + unreachable``; ``errors`` (answered but without a
    ufw_info result) is a part of ``non_compliant``; ``exposed`` counts hosts with anything not
    blocked, ``exposed_allowed`` those of them that are still compliant (restricted and allowed, or
    waived); ``waived`` counts hosts with a finding an active waiver covers.
    """
    if isinstance(records, dict):
        records = list(records.values())
    summary = {
        "hosts": len(records), "compliant": 0, "non_compliant": 0, "unreachable": 0, "errors": 0,
        "exposed": 0, "exposed_allowed": 0, "findings": 0, "waived": 0,
        "by_state": dict((state, 0) for state in STATES),
        "by_key": {},
    }
    for record in records:
        if not record["reachable"]:
            summary["unreachable"] += 1
        elif record["compliant"]:
            summary["compliant"] += 1
        else:
            summary["non_compliant"] += 1
            if record.get("error"):
                summary["errors"] += 1
        if record["exposed"]:
            summary["exposed"] += 1
            if record["compliant"]:
                summary["exposed_allowed"] += 1
        summary["findings"] += len(record["findings"])
        summary["waived"] += 1 if record.get("waived") else 0
        for item in record["exposure"]:
            summary["by_state"][item["state"]] += 1
            counts = summary["by_key"].get(exposure_key(item))
            if counts is None:
                counts = summary["by_key"][exposure_key(item)] = dict((state, 0) for state in STATES)
            counts[item["state"]] += 1
    return summary


# --------------------------------------------------------------------------- changes

def _host_state(record):
    return {"reachable": record["reachable"], "compliant": record["compliant"], "exposed": record["exposed"]}


def _listeners_by_key(record):
    """{port/proto/family: sorted [{"address", "process"}]}; the pid is left out on purpose:
    it changes on every restart of the SIP server and says nothing about exposure."""
    keyed = {}
    for listener in record.get("listeners") or []:
        try:
            key = exposure_key(listener)
        except (KeyError, TypeError):
            continue
        keyed.setdefault(key, []).append({"address": listener.get("address"), "process": listener.get("process")})
    for key in keyed:
        keyed[key].sort(key=lambda item: (str(item["address"]), str(item["process"])))
    return keyed


def key_order(key):
    port, proto, family = key.split("/", 2)
    return (int(port) if port.isdigit() else 0, proto, family)


def _change(host, kind, before, after, key=None, **extra):
    change = {"host": host, "key": key, "kind": kind, "before": before, "after": after}
    change.update(extra)
    return change


def _host_changes(host, old, new):
    changes = []
    if old["reachable"] != new["reachable"]:
        changes.append(_change(host, "reachability_changed", old["reachable"], new["reachable"]))
    if not (old["reachable"] and new["reachable"]):
        # Nothing was observed on one side: no port, rule or listener can be said to have changed.
        # A host that comes back is compared against nothing, so what is open on it now is "opened".
        if new["reachable"]:
            for key, item in sorted(_exposure_by_key(new).items(), key=lambda kv: key_order(kv[0])):
                if item["state"] != "blocked":
                    changes.append(_change(host, "opened" if item["state"] == "open" else "restricted",
                                           None, item["state"], key, reason=item.get("reason", "")))
        return changes
    if old["compliant"] != new["compliant"]:
        changes.append(_change(host, "compliance_changed", old["compliant"], new["compliant"]))
    before, after = _exposure_by_key(old), _exposure_by_key(new)
    for key in sorted(set(before) | set(after), key=key_order):
        was = before[key]["state"] if key in before else None
        item = after.get(key)
        now = item["state"] if item else None
        if now is None or was == now:
            continue  # a key no longer checked is not a closed port
        if now == "open":
            kind = "opened"
        elif now == "restricted":
            kind = "restricted"
        elif was is None:
            continue  # newly checked and blocked: nothing to say
        else:
            kind = "closed"
        changes.append(_change(host, kind, was, now, key, reason=item.get("reason", "")))
    old_ufw, new_ufw = old.get("ufw"), new.get("ufw")
    if old_ufw is not None and new_ufw is not None and (old_ufw.get("rules") or []) != (new_ufw.get("rules") or []):
        before, after = list(old_ufw.get("rules") or []), list(new_ufw.get("rules") or [])
        changes.append(_change(host, "rule_changed", before, after, added=_rule_diff(after, before),
                               removed=_rule_diff(before, after)))
    old_listen, new_listen = _listeners_by_key(old), _listeners_by_key(new)
    for key in sorted(set(old_listen) | set(new_listen), key=key_order):
        if old_listen.get(key, []) != new_listen.get(key, []):
            changes.append(_change(host, "listener_changed", old_listen.get(key, []), new_listen.get(key, []), key))
    return changes


def _rule_body(rule):
    """A rule string without its number (``"3 ALLOW IN 5060/udp ..."`` -> ``"ALLOW IN 5060/udp ..."``):
    inserting one rule renumbers every rule after it, which is not a change of those rules."""
    number, _sep, body = rule.partition(" ")
    return body if number.isdigit() else rule


def _rule_diff(rules, other):
    """The rules of ``rules`` that ``other`` does not have (compared without their numbers)."""
    known = set(_rule_body(rule) for rule in other)
    return [rule for rule in rules if _rule_body(rule) not in known]


def _sort_changes(changes):
    rank = dict((kind, index) for index, kind in enumerate(CHANGE_KINDS))
    changes.sort(key=lambda c: (c["host"], rank.get(c["kind"], len(rank)),
                                key_order(c["key"]) if c["key"] else (-1, "", "")))
    return changes


def diff_reports(previous, current):
    """What differs between two reports (or two {host: record} dicts): a sorted list of changes.

    Each change is ``{host, key, kind, before, after}`` (plus ``reason`` for port changes);
    kinds are CHANGE_KINDS, documented in docs/report-schema.md. ``previous=None`` (no baseline)
    gives no changes.
    """
    if previous is None:
        return []
    old_hosts = previous["hosts"] if "hosts" in previous and "summary" in previous else previous
    new_hosts = current["hosts"] if "hosts" in current and "summary" in current else current
    changes = []
    for host in sorted(set(old_hosts) | set(new_hosts)):
        old, new = old_hosts.get(host), new_hosts.get(host)
        if old is None:
            changes.append(_change(host, "host_added", None, _host_state(new)))
        elif new is None:
            changes.append(_change(host, "host_gone", _host_state(old), None))
        else:
            changes.extend(_host_changes(host, old, new))
    return _sort_changes(changes)


def _count_changes(changes):
    counts = dict((kind, 0) for kind in CHANGE_KINDS)
    for change in changes:
        counts[change["kind"]] = counts.get(change["kind"], 0) + 1
    return counts


# --------------------------------------------------------------------------- report

def _baseline_ref(previous):
    if previous is None:
        return None
    return {"run_id": previous.get("run_id"), "generated_at": previous.get("generated_at"),
            "hosts": len(previous.get("hosts") or {})}


def check_run_id(run_id):
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ReportError("run_id: %r is not usable as a file name (letters, digits, '.', '_', '-'; "
                          "at most 128, not starting with '.', '_' or '-')" % (run_id,))
    return run_id


def check_report(report, where="report"):
    """Raise ReportError unless ``report`` is a report.json this collection can read."""
    if not isinstance(report, dict):
        raise ReportError("%s: a report is a JSON object, got %s" % (where, type(report).__name__))
    if report.get("schema") != REPORT_SCHEMA_VERSION:
        raise ReportError("%s: report schema %r, this collection reads schema %d"
                          % (where, report.get("schema"), REPORT_SCHEMA_VERSION))
    if not isinstance(report.get("hosts"), dict):
        raise ReportError("%s: 'hosts' must be a dict host -> host record" % where)
    normalize_records(report["hosts"], "%s.hosts" % where)
    return report


def build_report(records, previous=None, run_id=None, generated_at=None, waivers=None, today=None):
    """The report of one run: ``records`` (list or {host: record}) against ``previous`` (the last
    report, the baseline for ``changes``; None for the first run).

    ``waivers`` (parsed by waivers.parse_waivers()) are applied as of ``today`` (a date; default
    the day of ``generated_at``); the report then has ``waivers``, each with its status.
    """
    hosts = normalize_records(records)
    ordered = dict((host, hosts[host]) for host in sorted(hosts))
    if today is None:
        today = (generated_at or "9999-12-31")[:10]
    ordered, waiver_status = apply_waivers(ordered, list(waivers or []), today)
    changes = diff_reports(previous, ordered)
    summary = summarize(ordered)
    summary["changes"] = _count_changes(changes)
    summary["waivers"] = dict((status, sum(1 for w in waiver_status if w["status"] == status))
                              for status in WAIVER_STATUSES)
    report = {
        "schema": REPORT_SCHEMA_VERSION,
        "generated_at": generated_at,
        "run_id": check_run_id(run_id) if run_id is not None else None,
        "baseline": _baseline_ref(previous),
        "summary": summary,
        "hosts": ordered,
        "changes": changes,
    }
    if waivers:
        report["waivers"] = waiver_status
    return report


def merge_reports(reports, previous=None, run_id=None, generated_at=None, records=None, waivers=None, today=None):
    """One fleet report from the reports of partial runs (job slices, ``--limit`` batches).

    Hosts are the union; a host present in several inputs takes its record from the last one
    (``records`` of this run come after all ``reports``). Summary and changes are recomputed
    against ``previous``: the changes the slices computed against their own baselines are
    discarded. The result is equal (see comparable()) to build_report() over all records.
    """
    merged = {}
    sources = []
    for index, report in enumerate(reports):
        check_report(report, "reports[%d]" % index)
        merged.update(report["hosts"])
        sources.append({"run_id": report.get("run_id"), "generated_at": report.get("generated_at"),
                        "hosts": len(report["hosts"])})
    if records is not None:
        fresh = normalize_records(records)
        merged.update(fresh)
        sources.append({"run_id": run_id, "generated_at": generated_at, "hosts": len(fresh)})
    report = build_report(merged, previous=previous, run_id=run_id, generated_at=generated_at, waivers=waivers,
                          today=today)
    report["sources"] = sources
    return report


def comparable(report):
    """The part of a report that describes the fleet: everything but RUN_KEYS.

    Two reports are *equal* when their comparable() parts are equal: same schema, the same host
    records, the same summary, the same changes, against the same baseline (its run_id).
    """
    return dict((key, value) for key, value in report.items() if key not in RUN_KEYS)


def loads_report(text):
    """json.loads() for report.json and host records, with equal strings shared.

    A fleet repeats the same reasons, rules, states and process names on thousands of hosts;
    sharing them roughly halves the memory of a loaded 10,000-host report.
    """
    memo = {}

    def share(obj):
        for key, value in obj.items():
            if isinstance(value, str):
                obj[key] = memo.setdefault(value, value)
            elif isinstance(value, list) and value and isinstance(value[0], str):
                obj[key] = [memo.setdefault(item, item) if isinstance(item, str) else item for item in value]
        return obj

    return json.loads(text, object_hook=share)


# --------------------------------------------------------------------------- change texts

def _port_on(change):
    return "%s on %s" % (change["key"], change["host"])


def _listeners_text(items):
    return ", ".join("%s (%s)" % (i.get("address"), i.get("process") or "unknown process") for i in items) or "nothing"


def change_text(change):
    """One change as a sentence, e.g. ``5060/udp/ipv4 on web1 opened (it was blocked): ufw rule 2 ...``."""
    kind, host = change["kind"], change["host"]
    reason = change.get("reason") or ""
    tail = ": %s" % reason if reason else ""
    if kind == "opened":
        was = "it was %s" % change["before"] if change["before"] else "not seen before"
        return "%s opened (%s)%s" % (_port_on(change), was, tail)
    if kind == "restricted":
        was = "it was %s" % change["before"] if change["before"] else "not seen before"
        return "%s became restricted (%s)%s" % (_port_on(change), was, tail)
    if kind == "closed":
        return "%s closed (it was %s)" % (_port_on(change), change["before"])
    if kind == "rule_changed":
        added = change.get("added")
        removed = change.get("removed")
        if added is None or removed is None:  # a change from a report written before added/removed existed
            added, removed = _rule_diff(change["after"], change["before"]), _rule_diff(change["before"], change["after"])
        parts = []
        if added:
            parts.append("added %s" % "; ".join(added))
        if removed:
            parts.append("removed %s" % "; ".join(removed))
        return "%s's UFW rules changed: %s" % (host, ", ".join(parts) if parts else "renumbered")
    if kind == "listener_changed":
        return "%s: listening now %s (before: %s)" % (
            _port_on(change), _listeners_text(change["after"]), _listeners_text(change["before"]))
    if kind == "host_added":
        return "%s is new in this run" % host
    if kind == "host_gone":
        return "%s is no longer in the report" % host
    if kind == "reachability_changed":
        return "%s %s" % (host, "answered again" if change["after"] else "became unreachable")
    if kind == "compliance_changed":
        return "%s became %s" % (host, "compliant" if change["after"] else "non-compliant")
    return "%s: %s changed from %s to %s" % (host, kind.replace("_", " "), change["before"], change["after"])
