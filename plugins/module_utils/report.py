# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report: summary, change tracking, merge, gate and renderers.

Pure functions over host records (``host_record.py`` defines them); the files are written by
``report_store.py``. The schema is documented in ``docs/report-schema.md``.

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
    PROBE_ADMITTED,
    exposure_key,
)

REPORT_SCHEMA_VERSION = 1
# Order in which change kinds are listed for one host (and in summary.changes).
CHANGE_KINDS = (
    "host_added", "host_gone", "reachability_changed", "compliance_changed",
    "opened", "restricted", "closed", "rule_changed", "listener_changed",
)
FAIL_ON = ("exposed", "regression", "unreachable")
# Keys of a report that depend on when and how it was produced, not on the fleet's state.
# Two reports are equal (see comparable()) when everything else is equal.
RUN_KEYS = ("generated_at", "run_id", "sources")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STATE_RANK = {"open": 0, "restricted": 1, "blocked": 2}


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


def _probe_key(probe):
    return "%s/%s/%s" % (probe.get("port"), probe.get("transport"), probe.get("family"))


def _has_result(record):
    """The host answered and ufw_info produced a result for it."""
    return bool(record["reachable"]) and not record.get("error")


# --------------------------------------------------------------------------- summary

def summarize(records):
    """Counts over host records (a list or a {host: record} dict); a pure function of the records.

    ``hosts = compliant + non_compliant + unreachable``; ``errors`` (answered but without a
    ufw_info result) is a part of ``non_compliant``; ``exposed`` counts hosts with anything not
    blocked, ``exposed_allowed`` those of them that are still compliant (restricted and allowed).
    """
    if isinstance(records, dict):
        records = list(records.values())
    summary = {
        "hosts": len(records), "compliant": 0, "non_compliant": 0, "unreachable": 0, "errors": 0,
        "exposed": 0, "exposed_allowed": 0, "findings": 0,
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


def _key_order(key):
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
            for key, item in sorted(_exposure_by_key(new).items(), key=lambda kv: _key_order(kv[0])):
                if item["state"] != "blocked":
                    changes.append(_change(host, "opened" if item["state"] == "open" else "restricted",
                                           None, item["state"], key, reason=item.get("reason", "")))
        return changes
    if old["compliant"] != new["compliant"]:
        changes.append(_change(host, "compliance_changed", old["compliant"], new["compliant"]))
    before, after = _exposure_by_key(old), _exposure_by_key(new)
    for key in sorted(set(before) | set(after), key=_key_order):
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
        changes.append(_change(host, "rule_changed", list(old_ufw.get("rules") or []),
                               list(new_ufw.get("rules") or [])))
    old_listen, new_listen = _listeners_by_key(old), _listeners_by_key(new)
    for key in sorted(set(old_listen) | set(new_listen), key=_key_order):
        if old_listen.get(key, []) != new_listen.get(key, []):
            changes.append(_change(host, "listener_changed", old_listen.get(key, []), new_listen.get(key, []), key))
    return changes


def _sort_changes(changes):
    rank = dict((kind, index) for index, kind in enumerate(CHANGE_KINDS))
    changes.sort(key=lambda c: (c["host"], rank.get(c["kind"], len(rank)),
                                _key_order(c["key"]) if c["key"] else (-1, "", "")))
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


def build_report(records, previous=None, run_id=None, generated_at=None):
    """The report of one run: ``records`` (list or {host: record}) against ``previous`` (the last
    report, the baseline for ``changes``; None for the first run)."""
    hosts = normalize_records(records)
    ordered = dict((host, hosts[host]) for host in sorted(hosts))
    changes = diff_reports(previous, ordered)
    summary = summarize(ordered)
    summary["changes"] = _count_changes(changes)
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "generated_at": generated_at,
        "run_id": check_run_id(run_id) if run_id is not None else None,
        "baseline": _baseline_ref(previous),
        "summary": summary,
        "hosts": ordered,
        "changes": changes,
    }


def merge_reports(reports, previous=None, run_id=None, generated_at=None, records=None):
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
    report = build_report(merged, previous=previous, run_id=run_id, generated_at=generated_at)
    report["sources"] = sources
    return report


def comparable(report):
    """The part of a report that describes the fleet: everything but RUN_KEYS.

    Two reports are *equal* when their comparable() parts are equal: same schema, the same host
    records, the same summary, the same changes, against the same baseline (its run_id).
    """
    return dict((key, value) for key, value in report.items() if key not in RUN_KEYS)


# --------------------------------------------------------------------------- gate

def _finding_prefix(item):
    # build_host_record() writes exposure findings as "5060/udp ipv4 <state>: ...".
    return "%d/%s %s " % (item["port"], item["proto"], item["family"])


def _exposure_findings(record, item):
    prefix = _finding_prefix(item)
    return [line for line in record["findings"] if line.startswith(prefix)]


def _probe_findings(record, key):
    return ["probe %s %s/%s: %s (%s)" % (p.get("address"), p.get("port"), p.get("transport"), p.get("state"),
                                         p.get("reason"))
            for p in record.get("probes") or [] if p.get("state") in PROBE_ADMITTED and _probe_key(p) == key]


def _host_problem(record):
    """The finding that says the host produced no result, or None."""
    if _has_result(record):
        return None
    for line in record["findings"]:
        if line.startswith("unreachable:") or line.startswith("error:"):
            return line
    return "unreachable: %s" % (record.get("error") or "no result") if not record["reachable"] else \
        "error: %s" % record.get("error")


def gate(report, fail_on):
    """Lines saying why the run must fail for ``fail_on`` (any of FAIL_ON); [] means pass.

    - ``exposed``: a host that answered and is exposed and not compliant (a port restricted and
      allowed by allow_restricted does not fail it).
    - ``regression``: every ``opened`` change (blocked or restricted -> open, or open on a host
      seen again), and a host that is now non-compliant but was compliant, absent or unreachable
      in the baseline. Without a baseline there is nothing to regress from.
    - ``unreachable``: a host that did not answer or produced no ufw_info result.
    """
    if not isinstance(fail_on, (list, tuple)):
        raise ReportError("fail_on: expected a list of %s" % ", ".join(FAIL_ON))
    for index, what in enumerate(fail_on):
        if what not in FAIL_ON:
            raise ReportError("fail_on[%d]: %r is not one of %s" % (index, what, ", ".join(FAIL_ON)))
    lines = []
    hosts = report["hosts"]
    if "exposed" in fail_on:
        for host, record in hosts.items():
            if _has_result(record) and record["exposed"] and not record["compliant"]:
                lines.append("exposed: %s: %s" % (host, "; ".join(record["findings"])))
    if "regression" in fail_on:
        seen = set()
        for change in report["changes"]:
            record = hosts.get(change["host"])
            if change["kind"] == "opened":
                lines.append("regression: %s %s opened (%s -> open): %s" % (
                    change["host"], change["key"], change["before"] or "not seen", change.get("reason", "")))
            elif change["kind"] in ("compliance_changed", "host_added", "reachability_changed") and record \
                    and _has_result(record) and not record["compliant"] and change["host"] not in seen:
                seen.add(change["host"])
                how = {"compliance_changed": "was compliant", "host_added": "new host",
                       "reachability_changed": "was unreachable"}[change["kind"]]
                lines.append("regression: %s turned non-compliant (%s): %s" % (
                    change["host"], how, "; ".join(record["findings"])))
    if "unreachable" in fail_on:
        for host, record in hosts.items():
            problem = _host_problem(record)
            if problem:
                lines.append("unreachable: %s: %s" % (host, problem))
    return lines


def gate_message(report, fail_on, failures, limit=50):
    """The text the play fails with: what failed, the first ``limit`` lines, the counts."""
    s = report["summary"]
    head = "sipguard gate failed (fail_on: %s): %d problem(s) in run %s" % (
        ", ".join(fail_on), len(failures), report.get("run_id"))
    body = failures[:limit]
    if len(failures) > limit:
        body = body + ["... and %d more (see report.md / report.json)" % (len(failures) - limit)]
    tail = "hosts %d: compliant %d, non-compliant %d, unreachable %d, exposed %d; changes: %s" % (
        s["hosts"], s["compliant"], s["non_compliant"], s["unreachable"], s["exposed"], _changes_line(s))
    return "\n".join([head] + ["- " + line for line in body] + [tail])


def _changes_line(summary):
    counts = summary.get("changes") or {}
    parts = ["%s %d" % (kind, counts[kind]) for kind in CHANGE_KINDS if counts.get(kind)]
    return ", ".join(parts) if parts else "none"


def alert_body(report, report_url=None):
    """The webhook body when something opened since the last run, else None.

    Slack-compatible (``text``) plus structured fields for generic receivers.
    """
    opened = [c for c in report["changes"] if c["kind"] == "opened"]
    if not opened:
        return None
    lines = ["sipguard: SIP opened on %d port(s) since run %s" % (
        len(opened), (report.get("baseline") or {}).get("run_id"))]
    for change in opened[:20]:
        lines.append("- %s %s: %s -> open (%s)" % (
            change["host"], change["key"], change["before"] or "not seen", change.get("reason", "")))
    if len(opened) > 20:
        lines.append("- ... and %d more" % (len(opened) - 20))
    if report_url:
        lines.append(report_url)
    return {
        "text": "\n".join(lines),
        "sipguard": {
            "run_id": report.get("run_id"),
            "generated_at": report.get("generated_at"),
            "baseline": report.get("baseline"),
            "summary": dict((k, v) for k, v in report["summary"].items() if k != "by_key"),
            "opened": opened,
        },
    }


# --------------------------------------------------------------------------- renderers

_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def iter_json(report):
    """report.json's text in chunks (one per host), byte for byte ``json.dumps(report,
    sort_keys=True, separators=(",", ":"))`` plus a newline: compact (10,000 hosts stay about
    40 MB), keys sorted, and never one 40 MB intermediate list of fragments."""
    yield "{"
    for index, key in enumerate(sorted(report)):
        yield "%s%s:" % ("," if index else "", _DUMPS(key))
        if key == "hosts":
            yield "{"
            for number, host in enumerate(sorted(report["hosts"])):
                yield "%s%s:%s" % ("," if number else "", _DUMPS(host), _DUMPS(report["hosts"][host]))
            yield "}"
        else:
            yield _DUMPS(report[key])
    yield "}\n"


def render_json(report):
    """report.json's text (see iter_json())."""
    return "".join(iter_json(report))


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


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report, limit=50):
    """A short summary for CI job summaries and PR comments (at most ``limit`` hosts and changes)."""
    s = report["summary"]
    baseline = report.get("baseline")
    failing = [r for r in report["hosts"].values() if not r["compliant"]]
    verdict = "PASS" if not failing else "FAIL"
    out = ["## sipguard SIP exposure: %s" % verdict, ""]
    out.append("Run `%s` at %s, %s." % (report.get("run_id"), report.get("generated_at"),
                                        "compared with run `%s`" % baseline["run_id"] if baseline
                                        else "no previous run to compare with"))
    out += ["", "| hosts | compliant | non-compliant | unreachable | exposed | changes |",
            "|---:|---:|---:|---:|---:|---:|",
            "| %d | %d | %d | %d | %d | %d |" % (
                s["hosts"], s["compliant"], s["non_compliant"], s["unreachable"], s["exposed"], len(report["changes"])),
            ""]
    if failing:
        out.append("### Non-compliant hosts (%d)" % len(failing))
        out.append("")
        for record in failing[:limit]:
            label = "unreachable" if not record["reachable"] else "non-compliant"
            out.append("- **%s** (%s)" % (_md(record["host"]), label))
            for line in record["findings"]:
                out.append("  - %s" % _md(line))
        if len(failing) > limit:
            out.append("- ... and %d more (see report.html)" % (len(failing) - limit))
        out.append("")
    changes = report["changes"]
    out.append("### Changes since the previous run (%d)" % len(changes))
    out.append("")
    if not changes:
        out.append("None." if baseline else "No baseline yet: this run is the baseline for the next one.")
    for change in changes[:limit]:
        out.append("- %s" % _md(_change_text(change)))
    if len(changes) > limit:
        out.append("- ... and %d more (see report.json)" % (len(changes) - limit))
    out.append("")
    return "\n".join(out)


def _change_text(change):
    kind, host, key = change["kind"], change["host"], change["key"]
    if kind in ("opened", "closed", "restricted"):
        return "%s %s %s: %s -> %s" % (host, key, kind, change["before"] or "not seen", change["after"])
    if kind == "rule_changed":
        before, after = change["before"], change["after"]
        added = [r for r in after if r not in before]
        removed = [r for r in before if r not in after]
        return "%s ufw rules changed: +[%s] -[%s]" % (host, ", ".join(added), ", ".join(removed))
    if kind == "listener_changed":
        def fmt(items):
            return ", ".join("%s %s" % (i["address"], i["process"]) for i in items) or "none"
        return "%s %s listeners: %s -> %s" % (host, key, fmt(change["before"]), fmt(change["after"]))
    if kind in ("host_added", "host_gone"):
        return "%s %s" % (host, kind.replace("_", " "))
    return "%s %s: %s -> %s" % (host, kind.replace("_", " "), change["before"], change["after"])


def _junit_cases(record):
    """[(name, failure message or None, text)] for one host: one per port/proto/family, plus "host"."""
    host_problem = _host_problem(record)
    cases = [("host", host_problem, record.get("error") or "")]
    if host_problem:
        return cases
    keyed = {}
    for item in record["exposure"]:
        lines = _exposure_findings(record, item)
        keyed[exposure_key(item)] = (lines, "%s: %s" % (item["state"], item.get("reason", "")))
    for probe in record.get("probes") or []:
        key = _probe_key(probe)
        if key not in keyed:
            keyed[key] = ([], "")
    for key in sorted(keyed, key=_key_order):
        lines, text = keyed[key]
        lines = lines + _probe_findings(record, key)
        cases.append((key, "; ".join(lines) if lines else None, text))
    return cases


# Characters XML 1.0 cannot carry at all (control characters from a banner, say) become "?".
_XML_INVALID = re.compile(u"[^\u0009\u000A\u000D\u0020-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def _x(value):
    """Escaped for XML text and double-quoted attributes (newlines kept in attributes)."""
    text = _XML_INVALID.sub("?", "" if value is None else str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") \
        .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


def iter_junit(report):
    """JUnit XML in chunks (Jenkins/Surefire ``junit-10.xsd``): one testsuite, one testcase per
    host and port/proto/family (``classname`` = host), plus a ``host`` testcase that fails when
    the host gave no result (unreachable, or no ufw_info result)."""
    cases = []
    failures = 0
    for host, record in report["hosts"].items():
        for name, failure, text in _junit_cases(record):
            cases.append((host, name, failure, text))
            failures += 1 if failure else 0
    tests = len(cases)
    stamp = ' timestamp="%s"' % _x(report["generated_at"]) if report.get("generated_at") else ""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield '<testsuites name="sipguard.firewall" tests="%d" failures="%d" errors="0" time="0">\n' % (tests, failures)
    yield ('<testsuite name="sipguard.firewall SIP exposure" tests="%d" failures="%d" errors="0" skipped="0" '
           'time="0"%s>\n<properties>' % (tests, failures, stamp))
    for name, value in (("run_id", report.get("run_id")), ("generated_at", report.get("generated_at")),
                        ("baseline", (report.get("baseline") or {}).get("run_id"))):
        yield '<property name="%s" value="%s"/>' % (name, _x(value or ""))
    yield "</properties>\n"
    for host, name, failure, text in cases:
        parts = ['<testcase name="%s" classname="%s" time="0">' % (_x(name), _x(host))]
        if failure:
            parts.append('<failure message="%s" type="%s">%s</failure>' % (
                _x(failure), "unreachable" if name == "host" else "exposed", _x(failure)))
        if text:
            parts.append("<system-out>%s</system-out>" % _x(text))
        parts.append("</testcase>\n")
        yield "".join(parts)
    yield "</testsuite>\n</testsuites>\n"


def render_junit(report):
    """JUnit XML (see iter_junit())."""
    return "".join(iter_junit(report))


def _e(value):
    return _html_escape("" if value is None else str(value), quote=True)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#1d1d1f;
background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.meta{color:#555;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0 20px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:24px}.card.bad b{color:#c62828}.card.good b{color:#1e7e34}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e3e3;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.row{cursor:pointer}tr.row:hover td{filter:brightness(.97)}
tr.pass td{background:#e8f5e9}tr.fail td{background:#fdecea}tr.unreachable td{background:#fff4e5}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.badge.pass{background:#1e7e34}.badge.fail{background:#c62828}.badge.unreachable{background:#b26a00}
.st-open{color:#c62828;font-weight:600}.st-restricted{color:#b26a00;font-weight:600}.st-blocked{color:#1e7e34}
tr.detail>td{background:#fff;padding:8px 24px 16px}tr.detail table{width:auto;margin:6px 0 10px}
tr.detail th{position:static;cursor:default;background:#f7f7f7}
.findings li{color:#8e1b1b}.muted{color:#777}code{font-size:12px}
#filter{padding:5px 8px;margin:0 0 8px;width:280px}
"""

_JS = """
(function(){
  var table=document.getElementById('fleet');
  var heads=table.tHead.rows[0].cells;
  function val(tb,col){var c=tb.rows[0].cells[col];var v=c.getAttribute('data-sort');
    if(v===null){v=c.textContent;}var n=Number(v);return (v!==''&&!isNaN(n))?n:v.toLowerCase();}
  function sortBy(col,dir){
    var bodies=Array.prototype.slice.call(table.tBodies);
    bodies.sort(function(a,b){var x=val(a,col),y=val(b,col);
      var r=(typeof x===typeof y)?(x<y?-1:x>y?1:0):(typeof x==='number'?-1:1);
      if(r===0){var p=a.getAttribute('data-host'),q=b.getAttribute('data-host');r=p<q?-1:p>q?1:0;return r;}
      return dir==='descending'?-r:r;});
    for(var i=0;i<heads.length;i++){heads[i].removeAttribute('aria-sort');}
    heads[col].setAttribute('aria-sort',dir);
    var frag=document.createDocumentFragment();
    bodies.forEach(function(b){frag.appendChild(b);});table.appendChild(frag);
    table.setAttribute('data-sorted',heads[col].getAttribute('data-key')+':'+dir);}
  Array.prototype.forEach.call(heads,function(th,col){th.addEventListener('click',function(){
    sortBy(col,th.getAttribute('aria-sort')==='ascending'?'descending':'ascending');});});
  Array.prototype.forEach.call(table.tBodies,function(tb){tb.rows[0].addEventListener('click',function(){
    var d=tb.rows[1];d.hidden=!d.hidden;tb.rows[0].setAttribute('aria-expanded',String(!d.hidden));});});
  document.getElementById('filter').addEventListener('input',function(){var q=this.value.toLowerCase();
    Array.prototype.forEach.call(table.tBodies,function(tb){
      tb.hidden=q!==''&&tb.getAttribute('data-host').toLowerCase().indexOf(q)<0;});});
  var opts=location.hash.replace(/^#/,'').split('&');
  var want=[];opts.forEach(function(o){var m=o.match(/^sort=([a-z_]+)(?::(ascending|descending))?$/);if(m){want=m;}});
  var col=0,dir='ascending';
  for(var i=0;i<heads.length;i++){if(heads[i].getAttribute('data-key')===(want[1]||'status')){col=i;}}
  if(want[2]){dir=want[2];}
  sortBy(col,dir);
  if(opts.indexOf('expand')>=0){Array.prototype.forEach.call(table.tBodies,function(tb){tb.rows[1].hidden=false;});}
  document.body.setAttribute('data-ready','1');
})();
"""

_COLUMNS = (("host", "Host"), ("status", "Status"), ("open", "Open"), ("restricted", "Restricted"),
            ("blocked", "Blocked"), ("probes", "Probes admitted"), ("findings", "Findings"), ("ufw", "UFW"),
            ("changes", "Changes"))


def _status(record):
    if not record["reachable"]:
        return "unreachable", 1
    return ("pass", 2) if record["compliant"] else ("fail", 0)


def _ufw_text(ufw):
    if not ufw:
        return "unknown"
    if not ufw.get("installed"):
        return "not installed"
    return "active" if ufw.get("active") else "inactive"


def _html_detail(record, changes):
    out = []
    if record["findings"]:
        out.append('<h3>Findings</h3><ul class="findings">%s</ul>'
                   % "".join("<li>%s</li>" % _e(line) for line in record["findings"]))
    if record["exposure"]:
        out.append("<h3>Exposure</h3><table><thead><tr><th>Port</th><th>State</th><th>Via</th><th>Rule</th>"
                   "<th>Listening</th><th>Reason</th></tr></thead><tbody>")
        for item in record["exposure"]:
            out.append('<tr><td>%s</td><td class="st-%s">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s%s</td></tr>' % (
                _e(exposure_key(item)), _e(item["state"]), _e(item["state"]), _e(item.get("via")),
                _e(item.get("rule")), "yes" if item.get("listening") else "no", _e(item.get("reason")),
                ("<br><b>fix:</b> %s" % _e(item["remediation"])) if item.get("remediation") else ""))
        out.append("</tbody></table>")
    if record.get("probes"):
        out.append("<h3>Probes</h3><table><thead><tr><th>Address</th><th>Port</th><th>State</th><th>Reason</th>"
                   "<th>RTT ms</th><th>SIP</th><th>Server</th></tr></thead><tbody>")
        for probe in record["probes"]:
            state = probe.get("state")
            out.append('<tr><td>%s</td><td>%s/%s</td><td class="%s">%s</td><td>%s</td><td>%s</td><td>%s</td>'
                       '<td>%s</td></tr>' % (
                           _e(probe.get("address")), _e(probe.get("port")), _e(probe.get("transport")),
                           "st-open" if state in PROBE_ADMITTED else "st-blocked", _e(state), _e(probe.get("reason")),
                           _e(probe.get("rtt_ms")), _e(probe.get("sip_status")), _e(probe.get("server"))))
        out.append("</tbody></table>")
    ufw = record.get("ufw")
    if ufw:
        defaults = ufw.get("defaults") or {}
        out.append("<h3>UFW</h3><p>installed %s, active %s, enabled at boot %s, IPv6 %s; defaults: %s</p>" % (
            _e(ufw.get("installed")), _e(ufw.get("active")), _e(ufw.get("enabled")), _e(ufw.get("ipv6")),
            _e(", ".join("%s %s" % (k, defaults[k]) for k in sorted(defaults)) or "unknown")))
        if ufw.get("rules"):
            out.append("<ol>%s</ol>" % "".join("<li><code>%s</code></li>" % _e(rule) for rule in ufw["rules"]))
    if changes:
        out.append("<h3>Changes since the previous run</h3><ul>%s</ul>"
                   % "".join("<li>%s</li>" % _e(_change_text(c)) for c in changes))
    if record.get("error"):
        out.append("<p><b>Error:</b> %s</p>" % _e(record["error"]))
    out.append('<p class="muted">checked at %s</p>' % _e(record.get("checked_at")))
    return "".join(out)


def iter_html(report):
    """One self-contained HTML page (inline CSS and JS, nothing fetched): summary cards, a fleet
    table sortable by clicking a header (failing hosts first by default; ``#sort=host:descending``
    in the URL picks another order, ``#expand`` opens every host, ``&`` joins both), and per-host detail that opens
    on a click on the row. Yields one chunk per host."""
    s = report["summary"]
    by_host = {}
    for change in report["changes"]:
        by_host.setdefault(change["host"], []).append(change)
    baseline = report.get("baseline")
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>sipguard SIP exposure report %s</title><style>%s</style></head><body>" % (
               _e(report.get("run_id")), _CSS),
           "<h1>SIP exposure report</h1>",
           '<div class="meta">run <code>%s</code> at %s &middot; %s</div>' % (
               _e(report.get("run_id")), _e(report.get("generated_at")),
               "compared with run <code>%s</code>" % _e(baseline["run_id"]) if baseline
               else "no previous run to compare with"),
           '<div class="cards">']
    for label, value, bad in (("hosts", s["hosts"], None), ("compliant", s["compliant"], False),
                              ("non-compliant", s["non_compliant"], True), ("unreachable", s["unreachable"], True),
                              ("exposed", s["exposed"], True), ("changes", len(report["changes"]), None)):
        cls = "" if bad is None else (" bad" if bad and value else " good" if not bad and value else "")
        out.append('<div class="card%s"><b>%d</b>%s</div>' % (cls, value, _e(label)))
    out.append('</div><input id="filter" type="search" placeholder="filter hosts" aria-label="filter hosts">')
    out.append('<table id="fleet"><thead><tr>%s</tr></thead>' % "".join(
        '<th data-key="%s" title="click to sort">%s</th>' % (key, label) for key, label in _COLUMNS))
    for host, record in report["hosts"].items():
        status, rank = _status(record)
        states = dict((state, 0) for state in STATES)
        for item in record["exposure"]:
            states[item["state"]] += 1
        admitted = sum(1 for p in record.get("probes") or [] if p.get("state") in PROBE_ADMITTED)
        changes = by_host.get(host, [])
        out.append(
            '<tbody data-host="%s"><tr class="row %s" aria-expanded="false"><td>%s</td>'
            '<td data-sort="%d"><span class="badge %s">%s</span></td><td data-sort="%d" class="%s">%d</td>'
            '<td data-sort="%d">%d</td><td data-sort="%d">%d</td><td data-sort="%d">%d</td><td data-sort="%d">%d</td>'
            "<td>%s</td><td data-sort=\"%d\">%d</td></tr>" % (
                _e(host), status, _e(host), rank, status, status.upper(), states["open"],
                "st-open" if states["open"] else "", states["open"], states["restricted"], states["restricted"],
                states["blocked"], states["blocked"], admitted, admitted, len(record["findings"]),
                len(record["findings"]), _e(_ufw_text(record.get("ufw"))), len(changes), len(changes)))
        out.append('<tr class="detail" hidden><td colspan="%d">%s</td></tr></tbody>' % (
            len(_COLUMNS), _html_detail(record, changes)))
        yield "".join(out)
        out = []
    out.append("</table>")
    out.append("<h2>Changes since the previous run (%d)</h2>" % len(report["changes"]))
    if report["changes"]:
        out.append("<table><thead><tr><th>Host</th><th>Kind</th><th>Port</th><th>Change</th></tr></thead><tbody>")
        for change in report["changes"]:
            out.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                _e(change["host"]), _e(change["kind"]), _e(change["key"] or ""), _e(_change_text(change))))
        out.append("</tbody></table>")
    else:
        out.append("<p>%s</p>" % ("None." if baseline else "No baseline yet: this run is the baseline for the next."))
    out.append("<script>%s</script></body></html>\n" % _JS)
    yield "".join(out)


def render_html(report):
    """report.html's text (see iter_html())."""
    return "".join(iter_html(report))


def _iter_markdown(report):
    yield render_markdown(report)


# format -> (file name, chunk generator); report.json is the baseline, written last.
RENDERERS = (("json", "report.json", iter_json), ("html", "report.html", iter_html),
             ("md", "report.md", _iter_markdown), ("junit", "junit.xml", iter_junit))
FILE_NAMES = dict((fmt, name) for fmt, name, _fn in RENDERERS)


def iter_format(report, fmt):
    """The chunks of one format of ``report`` (json, html, md or junit)."""
    for name, _file, fn in RENDERERS:
        if name == fmt:
            return fn(report)
    raise ReportError("formats: %r is not one of %s" % (fmt, ", ".join(FILE_NAMES)))


def render_all(report, formats):
    """{format: (file name, text)} for the requested formats (the whole texts in memory)."""
    return dict((fmt, (name, "".join(fn(report)))) for fmt, name, fn in RENDERERS if fmt in formats)
