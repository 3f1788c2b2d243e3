# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gate (``fail_on``) and the webhook alert over a fleet report (report.py builds it).

Pure functions; they read the structured findings (``finding_details``) of the host records,
never their texts. Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import record_findings
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    CHANGE_KINDS,
    ReportError,
    change_text,
    has_result,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import is_waived

FAIL_ON = ("exposed", "regression", "unreachable")
_HOST_KINDS = ("unreachable", "error")


def open_findings(record):
    """The findings that count against the host: all but those an active waiver covers."""
    return [finding for finding in record_findings(record) if not is_waived(finding)]


def host_problem(record):
    """The finding that says the host produced no result (its text), or None."""
    if has_result(record):
        return None
    for finding in record_findings(record):
        if finding["kind"] in _HOST_KINDS:
            return finding["text"]
    return "unreachable: %s" % (record.get("error") or "no result") if not record["reachable"] else \
        "error: %s" % record.get("error")


def _waived_keys(record):
    return set(finding.get("key") for finding in record_findings(record) if is_waived(finding))


def _texts(record):
    return "; ".join(finding["text"] + _expired_note(finding) for finding in open_findings(record))


def _expired_note(finding):
    waiver = finding.get("waiver")
    if waiver and waiver["status"] == "expired":
        return " (waiver %s of %s expired on %s)" % (waiver["id"], waiver["owner"], waiver["expires"])
    return ""


def gate(report, fail_on):
    """Lines saying why the run must fail for ``fail_on`` (any of FAIL_ON); [] means pass.

    - ``exposed``: a host that answered and is exposed and not compliant (a port restricted and
      allowed by allow_restricted, or covered by an active waiver, does not fail it).
    - ``regression``: every ``opened`` change (blocked or restricted -> open, or open on a host
      seen again) that no active waiver covers, and a host that is now non-compliant but was
      compliant, absent or unreachable in the baseline (so also a host whose waiver expired).
      Without a baseline there is nothing to regress from.
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
            if has_result(record) and record["exposed"] and not record["compliant"]:
                lines.append("exposed: %s: %s" % (host, _texts(record)))
    if "regression" in fail_on:
        seen = set()
        for change in report["changes"]:
            record = hosts.get(change["host"])
            if change["kind"] == "opened":
                if record is not None and change["key"] in _waived_keys(record):
                    continue
                lines.append("regression: %s" % change_text(change))
            elif change["kind"] in ("compliance_changed", "host_added", "reachability_changed") and record \
                    and has_result(record) and not record["compliant"] and change["host"] not in seen:
                seen.add(change["host"])
                how = {"compliance_changed": "was compliant", "host_added": "new host",
                       "reachability_changed": "was unreachable"}[change["kind"]]
                lines.append("regression: %s turned non-compliant (%s): %s" % (change["host"], how, _texts(record)))
    if "unreachable" in fail_on:
        for host, record in hosts.items():
            problem = host_problem(record)
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
    tail = "hosts %d: compliant %d, non-compliant %d, unreachable %d, exposed %d, waived %d; changes: %s" % (
        s["hosts"], s["compliant"], s["non_compliant"], s["unreachable"], s["exposed"], s.get("waived", 0),
        _changes_line(s))
    return "\n".join([head] + ["- " + line for line in body] + [tail])


def _changes_line(summary):
    counts = summary.get("changes") or {}
    parts = ["%s %d" % (kind, counts[kind]) for kind in CHANGE_KINDS if counts.get(kind)]
    return ", ".join(parts) if parts else "none"


def _exposure_item(record, key):
    for item in (record or {}).get("exposure") or []:
        if "%s/%s/%s" % (item["port"], item["proto"], item["family"]) == key:
            return item
    return None


def alert_items(report):
    """The opened ports to alert on: every ``opened`` change no active waiver covers, with where
    (host, key), through what (``via``, ``rule``, ``reason``) and since when (``since``: this run;
    ``last_seen_closed``: the baseline's time)."""
    items = []
    baseline = report.get("baseline") or {}
    for change in report["changes"]:
        if change["kind"] != "opened":
            continue
        record = report["hosts"].get(change["host"])
        if record is not None and change["key"] in _waived_keys(record):
            continue
        item = _exposure_item(record, change["key"]) or {}
        items.append(dict(change, via=item.get("via"), rule=item.get("rule"), since=report.get("generated_at"),
                          last_seen_closed=baseline.get("generated_at") if change["before"] else None))
    return items


def _through(item):
    if item.get("via") == "ufw" and item.get("rule") is not None:
        return "ufw rule %s" % item["rule"]
    return item.get("via") or "an unknown path"


PROBE_REACHED = ("open", "closed")


def alert_body(report, report_url=None, confirmed=None):
    """The webhook body when something opened since the last run or a waiver expired, else None.

    ``confirmed`` (a set of ``"host key"`` strings, or None to trust this run) keeps only those
    opened ports (see confirm_alert()). Slack-compatible (``text``) plus structured fields for
    generic receivers.
    """
    opened = alert_items(report)
    if confirmed is not None:
        opened = [item for item in opened if "%s %s" % (item["host"], item["key"]) in confirmed]
    expired = [w for w in report.get("waivers") or [] if w["status"] == "expired"]
    meta = {
        "run_id": report.get("run_id"),
        "generated_at": report.get("generated_at"),
        "baseline": report.get("baseline"),
        "summary": dict((k, v) for k, v in report["summary"].items() if k != "by_key"),
        "report_url": report_url or None,
    }
    return _alert(meta, opened, expired)


def _alert(meta, opened, expired):
    if not opened and not expired:
        return None
    lines = []
    if opened:
        lines.append("sipguard: SIP opened on %d port(s) since run %s" % (
            len(opened), (meta.get("baseline") or {}).get("run_id")))
        for item in opened[:20]:
            since = "since %s" % item["since"]
            if item.get("last_seen_closed"):
                since += " (%s at %s)" % (item["before"], item["last_seen_closed"])
            check = {"open": "; a second probe got a SIP answer", "closed": "; a second probe reached the host",
                     "no-target": "; not probed again: no probe target"}.get(item.get("confirmed_by"), "")
            lines.append("- %s on %s opened through %s, %s: %s%s" % (
                item["key"], item["host"], _through(item), since, item.get("reason", ""), check))
        if len(opened) > 20:
            lines.append("- ... and %d more" % (len(opened) - 20))
    if expired:
        lines.append("sipguard: %d waiver(s) expired; what they covered fails the gate now" % len(expired))
        for waiver in expired[:20]:
            lines.append("- %s (owner %s, expired %s): %s" % (
                waiver["id"], waiver["owner"], waiver["expires"], ", ".join(waiver["matched"])))
    if meta.get("report_url"):
        lines.append(meta["report_url"])
    body = dict(meta, opened=opened, expired_waivers=expired)
    return {"text": "\n".join(lines), "sipguard": body}


def confirm_alert(alert, reached):
    """The alert with only the opened ports a second probe confirmed, or None when nothing is left.

    ``reached`` maps ``"host key"`` to the second probe's state for that port (or ``no-target``
    when the host has no probe target, which keeps the port in: what cannot be checked again is
    not dropped). A port is confirmed when the second probe got through the firewall (PROBE_REACHED:
    a SIP answer, or a TCP reset / ICMP port unreachable from the host itself); one lost packet, or a
    rule removed again since, gives ``filtered`` and no alert. The gate and the report are not
    affected: they already counted the change. Expired waivers are always kept.
    """
    if not alert:
        return None
    body = alert["sipguard"]
    opened, unconfirmed = [], []
    for item in body.get("opened") or []:
        state = reached.get("%s %s" % (item["host"], item["key"]))
        if state in PROBE_REACHED or state == "no-target":
            opened.append(dict(item, confirmed_by=state))
        else:
            unconfirmed.append(dict(item, second_probe=state))
    meta = dict((k, v) for k, v in body.items() if k not in ("opened", "expired_waivers", "unconfirmed"))
    confirmed = _alert(meta, opened, body.get("expired_waivers") or [])
    if confirmed is not None:
        confirmed["sipguard"]["unconfirmed"] = unconfirmed
    return confirmed
