"""Host records recorded from the exposure lab (tests/unit/fixtures/records, written by
tests/lab/record_host_records.py), and the edits the report tests derive later runs from.

A later run is never hand-written: ``reverify()`` turns a recorded record back into the
ufw_info/sip_probe results it was built from, applies an edit (a port's verdict, the probes that
follow from it, the UFW rule list) and calls build_host_record() again, so findings, compliant and
exposed are whatever the one host-record schema says they are.
"""

import copy
import glob
import json
import os

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import build_host_record, exposure_key

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDS = os.path.join(HERE, "fixtures", "records")


def load_records():
    """{host: record} of the 23 lab hosts, as recorded (file exposure-lab__<host>.json)."""
    records = {}
    for path in sorted(glob.glob(os.path.join(RECORDS, "exposure-lab__*.json"))):
        with open(path) as fh:
            record = json.load(fh)
        records[record["host"]] = record
    return records


def _info(record):
    """The ufw_info result a record was built from (ufw is restored afterwards, verbatim)."""
    exposure = []
    by_port = {}
    for item in record["exposure"]:
        entry = by_port.get((item["port"], item["proto"]))
        if entry is None:
            entry = by_port[(item["port"], item["proto"])] = {"port": item["port"], "proto": item["proto"]}
            exposure.append(entry)
        entry[item["family"]] = dict((k, v) for k, v in item.items() if k not in ("port", "proto", "family"))
    return {"exposure": exposure, "listeners": copy.deepcopy(record["listeners"]), "ufw": None}


def _probes(record):
    return [{"address": p["address"], "family": p["family"], "port": p["port"], "transport": p["transport"],
             "state": p["state"], "reason": p["reason"], "rtt_ms": p["rtt_ms"],
             "sip": {"status_code": p["sip_status"], "server": p["server"]} if p["sip_status"] else None}
            for p in record["probes"]]


def reverify(record, verdicts=None, rules=None, listeners=None, allow_restricted=True):
    """A new record for the same host after an edit.

    ``verdicts``: {"5060/udp/ipv4": {"state": "open", "reason": ..., ...}} replaces those verdicts;
    the probes of that port and family follow (open -> "open"/sip-response, else "filtered"/no-response).
    ``rules``: the new UFW rule list (strings as in the record). ``listeners``: a new listener list.
    """
    info = _info(record)
    probes = _probes(record)
    for key, verdict in (verdicts or {}).items():
        port, proto, family = key.split("/")
        for entry in info["exposure"]:
            if entry["port"] == int(port) and entry["proto"] == proto:
                entry[family].update(verdict)
        for probe in probes:
            if probe["port"] == int(port) and probe["transport"] == proto and probe["family"] == family:
                if verdict["state"] == "open":
                    probe.update(state="open", reason="sip-response", rtt_ms=0.5,
                                 sip={"status_code": 200, "server": "kamailio (sipguard lab %s)" % record["host"]})
                else:
                    probe.update(state="filtered", reason="no-response", rtt_ms=None, sip=None)
    if listeners is not None:
        info["listeners"] = listeners
    new = build_host_record(record["host"], info, probes, allow_restricted=allow_restricted,
                            checked_at=record["checked_at"])
    new["ufw"] = copy.deepcopy(record["ufw"])
    if rules is not None:
        new["ufw"]["rules"] = list(rules)
    return new


OPEN_UDP = {"state": "open", "action": "accept", "rule": 3, "via": "ufw",
            "reason": "ufw rule 3 (ALLOW IN 5060/udp from Anywhere) accepts"}
BLOCKED = {"state": "blocked", "action": "drop", "rule": None, "via": "policy",
           "reason": "default incoming policy: drop"}


def run_b(records):
    """Run B: run A (as recorded) with two edits, each a thing an operator really does:

    - default-deny: someone ran ``ufw allow 5060/udp`` (IPv4 only): 5060/udp/ipv4 opens and a rule
      is appended;
    - allow-proto: someone deleted the two ``allow 5060/tcp`` rules: 5060/tcp closes on both families.

    Expected changes: default-deny opened + compliance_changed + rule_changed; allow-proto closed x2
    + rule_changed. Nothing else.
    """
    b = copy.deepcopy(records)
    dd = b["default-deny"]
    b["default-deny"] = reverify(dd, {"5060/udp/ipv4": OPEN_UDP}, rules=dd["ufw"]["rules"] + ["3 allow 5060/udp Anywhere"])
    ap = b["allow-proto"]
    b["allow-proto"] = reverify(ap, {"5060/tcp/ipv4": BLOCKED, "5060/tcp/ipv6": BLOCKED},
                                rules=[r for r in ap["ufw"]["rules"] if "5060/tcp" not in r])
    return b


RUN_B_CHANGES = {
    ("default-deny", "compliance_changed", None),
    ("default-deny", "opened", "5060/udp/ipv4"),
    ("default-deny", "rule_changed", None),
    ("allow-proto", "closed", "5060/tcp/ipv4"),
    ("allow-proto", "closed", "5060/tcp/ipv6"),
    ("allow-proto", "rule_changed", None),
}


def item(record, key):
    return next(i for i in record["exposure"] if exposure_key(i) == key)
