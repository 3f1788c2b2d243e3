# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waivers: an accepted exposure, with an owner, a reason and an expiry date.

A waiver names a host pattern (fnmatch, as in ``web*``), a port, a protocol, optionally a family
and the sources the exposure is accepted from. A finding it matches stays in the record (shown as
waived by every renderer) but no longer makes the host non-compliant, until the waiver's
``expires`` day: from that day on the finding counts again and the waiver is ``expired``. A
waiver that matches no finding is ``stale``. The schema is in docs/report-schema.md.

Pure functions; Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import fnmatch
import ipaddress

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import FAMILIES, record_findings

REQUIRED = ("host", "port", "proto", "owner", "reason", "expires")
OPTIONAL = ("family", "sources", "id")
PROTOS = ("udp", "tcp")
STATUSES = ("active", "expired", "stale")


class WaiverError(ValueError):
    pass


def _text(waiver, key, where):
    value = waiver[key]
    if not isinstance(value, str) or not value.strip():
        raise WaiverError("%s.%s: must be a non-empty string, got %r" % (where, key, value))
    return value.strip()


def _date(value, where):
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.datetime.strptime(value.strip(), "%Y-%m-%d").date()
        except ValueError:
            pass
    raise WaiverError("%s.expires: %r is not a date; write it as YYYY-MM-DD, for example 2027-03-31" % (where, value))


def _port(value, where):
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise WaiverError("%s.port: %r is not a port (1-65535); give one port per waiver, for example 5060"
                          % (where, value))
    return value


def _sources(value, where):
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise WaiverError("%s.sources: must be a list of addresses or networks, for example ['198.51.100.0/24']"
                          % where)
    networks = []
    for index, item in enumerate(value):
        try:
            networks.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise WaiverError("%s.sources[%d]: %r is not an address or network (CIDR)" % (where, index, item))
    return networks


def parse_waivers(waivers, where="waivers"):
    """Check and normalize the waivers (a list of dicts); raise WaiverError saying what to fix.

    Each result has every key: ``id`` (default ``<where>[<index>]``), ``host``, ``port``, ``proto``,
    ``family`` (None: both), ``sources`` (CIDR strings, [] for any), ``owner``, ``reason`` and
    ``expires`` (``YYYY-MM-DD``).
    """
    if waivers is None:
        return []
    if not isinstance(waivers, (list, tuple)):
        raise WaiverError("%s: must be a list of waivers (dicts with %s), got %s"
                          % (where, ", ".join(REQUIRED), type(waivers).__name__))
    parsed = []
    for index, waiver in enumerate(waivers):
        at = "%s[%d]" % (where, index)
        if not isinstance(waiver, dict):
            raise WaiverError("%s: must be a dict with %s, got %s" % (at, ", ".join(REQUIRED), type(waiver).__name__))
        unknown = sorted(str(key) for key in waiver if key not in REQUIRED + OPTIONAL)
        if unknown:
            raise WaiverError("%s: unknown key(s) %s; a waiver has %s and optionally %s"
                              % (at, ", ".join(unknown), ", ".join(REQUIRED), ", ".join(OPTIONAL)))
        missing = [key for key in REQUIRED if waiver.get(key) in (None, "")]
        if missing:
            raise WaiverError("%s: missing %s (a waiver needs %s)" % (at, ", ".join(missing), ", ".join(REQUIRED)))
        proto = str(waiver["proto"]).lower()
        if proto not in PROTOS:
            raise WaiverError("%s.proto: %r is not one of %s" % (at, waiver["proto"], ", ".join(PROTOS)))
        family = waiver.get("family")
        if family is not None and family not in FAMILIES:
            raise WaiverError("%s.family: %r is not one of %s (leave it out for both)"
                              % (at, family, ", ".join(FAMILIES)))
        parsed.append({
            "id": _text(waiver, "id", at) if waiver.get("id") is not None else at,
            "host": _text(waiver, "host", at),
            "port": _port(waiver["port"], at),
            "proto": proto,
            "family": family,
            "sources": _sources(waiver.get("sources"), at),
            "owner": _text(waiver, "owner", at),
            "reason": _text(waiver, "reason", at),
            "expires": _date(waiver["expires"], at).isoformat(),
        })
    return parsed


def _within(condition, sources):
    """``from 198.18.0.250/32`` (a verdict condition) lies inside one of ``sources``."""
    try:
        network = ipaddress.ip_network(condition[len("from "):].split()[0], strict=False)
    except (ValueError, IndexError):
        return False
    for source in sources:
        source = ipaddress.ip_network(source)
        if source.version == network.version and network.subnet_of(source):
            return True
    return False


def _restricted_to(item, sources):
    """The exposure item admits only senders inside ``sources`` (restricted, every ``from`` inside)."""
    froms = [c for c in item.get("conditions") or [] if c.startswith("from ")]
    return item["state"] == "restricted" and bool(froms) and all(_within(c, sources) for c in froms)


def _matches(waiver, host, finding, exposure):
    if finding.get("key") is None or not fnmatch.fnmatchcase(host, waiver["host"]):
        return False
    if finding.get("port") != waiver["port"] or finding.get("proto") != waiver["proto"]:
        return False
    if waiver["family"] is not None and finding.get("family") != waiver["family"]:
        return False
    if not waiver["sources"]:
        return True
    # With sources, the port's verdict (the probe's too) must admit no one else.
    item = exposure.get(finding["key"])
    return item is not None and _restricted_to(item, waiver["sources"])


def _exposure(record):
    return dict(("%s/%s/%s" % (i["port"], i["proto"], i["family"]), i) for i in record.get("exposure") or [])


def is_waived(finding):
    """The finding is covered by a waiver that has not expired."""
    return (finding.get("waiver") or {}).get("status") == "active"


def apply_waivers(hosts, waivers, today):
    """({host: record} with waivers marked, [waiver with its status and matches]).

    ``waivers`` come from parse_waivers(); ``today`` is a date (a waiver expires on its
    ``expires`` day). Records are copied, never changed: each finding gets ``waiver`` (``id``,
    ``owner``, ``reason``, ``expires``, ``status`` ``active`` or ``expired``) or none, and
    ``compliant`` becomes "no finding without an active waiver"; ``waived`` counts the waived
    findings. The first matching waiver of the list wins. Marks of an earlier application (a
    merged report's records) are replaced.
    """
    today = today.isoformat() if hasattr(today, "isoformat") else str(today)
    matched = dict((waiver["id"], []) for waiver in waivers)
    out = {}
    for host, record in hosts.items():
        if not waivers and record.get("waived") is None:
            out[host] = record  # nothing to mark, nothing marked before: shared, not copied
            continue
        exposure = _exposure(record)
        details = []
        for finding in record_findings(record):
            finding = dict(finding)
            finding.pop("waiver", None)
            for waiver in waivers:
                if _matches(waiver, host, finding, exposure):
                    finding["waiver"] = {"id": waiver["id"], "owner": waiver["owner"], "reason": waiver["reason"],
                                         "expires": waiver["expires"],
                                         "status": "active" if today < waiver["expires"] else "expired"}
                    matched[waiver["id"]].append("%s %s" % (host, finding["key"]))
                    break
            details.append(finding)
        new = dict(record)
        new["finding_details"] = details
        new["waived"] = sum(1 for finding in details if is_waived(finding))
        new["compliant"] = not [finding for finding in details if not is_waived(finding)]
        out[host] = new
    status = []
    for waiver in waivers:
        hits = matched[waiver["id"]]
        state = "stale" if not hits else ("active" if today < waiver["expires"] else "expired")
        status.append(dict(waiver, status=state, matched=sorted(set(hits))))
    return out, status
