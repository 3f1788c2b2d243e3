# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host record: the one result schema for one host of one run.

``verify`` (and ``audit``) write it; the report, the merge, JUnit, HTML, Markdown and the change
tracking read it. Nothing else defines what a host result looks like.

Pure functions only; Python 3.8+ (it is also imported by controller-side plugins).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SCHEMA_VERSION = 1
FAMILIES = ("ipv4", "ipv6")
STATES = ("open", "restricted", "blocked")
# Probe states that mean the target's network stack answered, i.e. the firewall let it in.
PROBE_ADMITTED = ("open",)


class HostRecordError(ValueError):
    pass


def _exposure_items(info):
    items = []
    for entry in (info or {}).get("exposure") or []:
        for family in FAMILIES:
            verdict = entry.get(family) or {}
            items.append({
                "port": entry["port"],
                "proto": entry["proto"],
                "family": family,
                "state": verdict.get("state", "blocked"),
                "action": verdict.get("action"),
                "rule": verdict.get("rule"),
                "via": verdict.get("via"),
                "reason": verdict.get("reason", ""),
                "bypass": bool(verdict.get("bypass")),
                "remediation": verdict.get("remediation"),
                "conditions": list(verdict.get("conditions") or []),
                "listening": bool(verdict.get("listening")),
            })
    return items


def _probe_items(probes):
    """The probes as the record keeps them. A target (address, port, transport) probed more than
    once -- before and again after a change -- counts with its last result."""
    last = {}
    for probe in probes or []:
        last[(probe.get("address"), probe.get("port"), probe.get("transport"))] = probe
    items = []
    for probe in last.values():
        sip = probe.get("sip") or {}
        items.append({
            "address": probe.get("address"),
            "family": probe.get("family"),
            "port": probe.get("port"),
            "transport": probe.get("transport"),
            "state": probe.get("state"),
            "reason": probe.get("reason"),
            "rtt_ms": probe.get("rtt_ms"),
            "sip_status": sip.get("status_code"),
            "server": sip.get("server") or sip.get("user_agent"),
        })
    return items


def _ufw_summary(info):
    ufw = (info or {}).get("ufw")
    if not ufw:
        return None
    return {
        "installed": ufw.get("installed"),
        "active": ufw.get("active"),
        "enabled": ufw.get("enabled"),
        "ipv6": ufw.get("ipv6"),
        "defaults": ufw.get("defaults"),
        "rules": ["%s %s %s %s" % (r.get("number"), r.get("action"), r.get("to"), r.get("from"))
                  for r in ufw.get("rules") or []],
    }


# Finding kinds: the stable identity of a kind of problem (SARIF ruleId, evidence controls, waivers).
# Order: host-level first, then exposure, then probes.
FINDING_KINDS = ("unreachable", "error", "open-ufw-rule", "open-policy", "bypass", "open", "restricted",
                 "probe-admitted")
_POLICY_VIAS = ("policy",)


def _finding(kind, text, **fields):
    finding = {"kind": kind, "key": None, "port": None, "proto": None, "family": None, "state": None,
               "rule": None, "backend": None, "address": None, "reason": "", "remediation": None,
               "conditions": [], "text": text}
    finding.update(fields)
    return finding


def _host_finding(kind, reason):
    return _finding(kind, "%s: %s" % (kind, reason), reason=reason)


def _exposure_kind(item):
    """Which kind of problem an exposure item that is a finding is: admitted outside UFW's user
    rules (``bypass``), restricted while restrictions are not allowed, or open through a UFW rule,
    through the policy (UFW inactive or absent, or its default), or otherwise."""
    if item.get("bypass") and item["state"] != "blocked":
        return "bypass"
    if item["state"] == "restricted":
        return "restricted"
    if item.get("via") == "ufw" and item.get("rule") is not None:
        return "open-ufw-rule"
    if item.get("via") in _POLICY_VIAS:
        return "open-policy"
    return "open"


def exposure_finding(item):
    """The finding for one exposure item (a port/proto/family that is not acceptably blocked)."""
    text = "%d/%s %s %s: %s" % (item["port"], item["proto"], item["family"], item["state"], item.get("reason", ""))
    if item.get("remediation"):
        text += " -- fix: %s" % item["remediation"]
    return _finding(_exposure_kind(item), text, key=exposure_key(item), port=item["port"], proto=item["proto"],
                    family=item["family"], state=item["state"], rule=item.get("rule"), backend=item.get("via"),
                    reason=item.get("reason", ""), remediation=item.get("remediation"),
                    conditions=list(item.get("conditions") or []))


def probe_finding(probe):
    """The finding for one probe that got in (the one text for it, wherever it is shown)."""
    text = "probe %s %s/%s from the prober: %s (%s)" % (
        probe.get("address"), probe.get("port"), probe.get("transport"), probe.get("state"), probe.get("reason"))
    family = probe.get("family")
    key = "%s/%s/%s" % (probe.get("port"), probe.get("transport"), family)
    return _finding("probe-admitted", text, key=key, port=probe.get("port"), proto=probe.get("transport"),
                    family=family, state=probe.get("state"), backend="probe", address=probe.get("address"),
                    reason=probe.get("reason") or "")


def record_findings(record):
    """The structured findings of a host record (``finding_details``).

    A record written before ``finding_details`` existed (an old baseline or history file) gets them
    rebuilt from its exposure, probes and error; a restricted port counts when the record's finding
    count says build_host_record() counted it (allow_restricted was false), not by reading its text.
    """
    details = record.get("finding_details")
    if details is not None:
        return details
    if not record.get("reachable", True):
        return [_host_finding("unreachable", record.get("error") or "the host did not answer")]
    head = [_host_finding("error", record["error"])] if record.get("error") else []
    ports = [(item["state"] == "restricted" and not item.get("bypass"), exposure_finding(item))
             for item in record.get("exposure") or []
             if item["state"] != "blocked"]
    probes = [probe_finding(p) for p in record.get("probes") or [] if p.get("state") in PROBE_ADMITTED]
    with_restricted = len(record.get("findings") or []) == len(head) + len(ports) + len(probes)
    return head + [finding for restricted, finding in ports if with_restricted or not restricted] + probes


def build_host_record(host, info=None, probes=None, error=None, unreachable=False, allow_restricted=True,
                      checked_at=None):
    """One host's record from ufw_info's result and the sip_probe results aimed at it.

    A host is compliant when it answered, every requested port/proto/family is blocked (or
    restricted, when ``allow_restricted``), nothing bypasses UFW, and no probe found it open.
    """
    if not host:
        raise HostRecordError("host: a host record needs the inventory host name")
    exposure = _exposure_items(info)
    probe_items = _probe_items(probes)
    details = []
    if unreachable:
        details.append(_host_finding("unreachable", error or "the host did not answer"))
    elif error:
        details.append(_host_finding("error", error))
    elif info is None:
        details.append(_host_finding("error", "no ufw_info result for this host"))
    for item in exposure:
        if item["state"] == "open" or (item["state"] == "restricted" and not allow_restricted) or (
                item["bypass"] and item["state"] != "blocked"):
            details.append(exposure_finding(item))
    for probe in probe_items:
        if probe["state"] in PROBE_ADMITTED:
            details.append(probe_finding(probe))
    findings = [detail["text"] for detail in details]
    record = {
        "schema": SCHEMA_VERSION,
        "host": host,
        "reachable": not unreachable,
        "error": error,
        "compliant": not findings,
        "exposed": any(i["state"] != "blocked" for i in exposure) or any(
            p["state"] in PROBE_ADMITTED for p in probe_items),
        "exposure": exposure,
        "probes": probe_items,
        "listeners": list((info or {}).get("listeners") or []),
        "ufw": _ufw_summary(info),
        "findings": findings,
        "finding_details": details,
        "checked_at": checked_at,
    }
    if (info or {}).get("raw_inputs"):
        record["raw_inputs"] = dict(info["raw_inputs"])
    return record


def exposure_key(item):
    """The identity of one exposure item across runs: ``5060/udp/ipv4``."""
    return "%d/%s/%s" % (item["port"], item["proto"], item["family"])
