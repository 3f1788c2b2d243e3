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
    findings = []
    if unreachable:
        findings.append("unreachable: %s" % (error or "the host did not answer"))
    elif error:
        findings.append("error: %s" % error)
    elif info is None:
        findings.append("error: no ufw_info result for this host")
    for item in exposure:
        bad = item["state"] == "open" or (item["state"] == "restricted" and not allow_restricted) or (
            item["bypass"] and item["state"] != "blocked")
        if bad:
            line = "%d/%s %s %s: %s" % (item["port"], item["proto"], item["family"], item["state"], item["reason"])
            if item["remediation"]:
                line += " -- fix: %s" % item["remediation"]
            findings.append(line)
    for probe in probe_items:
        if probe["state"] in PROBE_ADMITTED:
            findings.append("probe %s %s/%s from the prober: %s (%s)" % (
                probe["address"], probe["port"], probe["transport"], probe["state"], probe["reason"]))
    return {
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
        "checked_at": checked_at,
    }


def exposure_key(item):
    """The identity of one exposure item across runs: ``5060/udp/ipv4``."""
    return "%d/%s/%s" % (item["port"], item["proto"], item["family"])
