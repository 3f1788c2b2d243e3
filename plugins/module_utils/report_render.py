# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report's file formats: JSON, Markdown, JUnit, HTML, SARIF, Prometheus and the evidence bundle.

Pure functions of a report (report.py builds it); every one reads the structured findings
(``host_record.record_findings()``), so a finding looks the same wherever it is shown, waived
ones included. ``report_store.py`` writes the files. Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import gzip
import hashlib
import io
import json
import re
import tarfile
import time
from html import escape as _html_escape

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import (
    FINDING_KINDS,
    PROBE_ADMITTED,
    STATES,
    exposure_key,
    record_findings,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    ReportError,
    change_text,
    key_order,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import host_problem
from ansible_collections.sipguard.firewall.plugins.module_utils.version import COLLECTION_VERSION, TOOL_NAME
from ansible_collections.sipguard.firewall.plugins.module_utils.waivers import is_waived


def _probe_key(probe):
    return "%s/%s/%s" % (probe.get("port"), probe.get("transport"), probe.get("family"))


def finding_line(finding):
    """A finding's text with its waiver, as every text format shows it."""
    waiver = finding.get("waiver")
    if not waiver:
        return finding["text"]
    if waiver["status"] == "active":
        return "WAIVED until %s (%s, owner %s: %s): %s" % (
            waiver["expires"], waiver["id"], waiver["owner"], waiver["reason"], finding["text"])
    return "%s (waiver %s of %s expired on %s)" % (finding["text"], waiver["id"], waiver["owner"], waiver["expires"])


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
            for finding in record_findings(record):
                out.append("  - %s" % _md(finding_line(finding)))
        if len(failing) > limit:
            out.append("- ... and %d more (see report.html)" % (len(failing) - limit))
        out.append("")
    waived = [r for r in report["hosts"].values() if r["compliant"] and r.get("waived")]
    if waived:
        out.append("### Compliant with waived exposure (%d)" % len(waived))
        out.append("")
        for record in waived[:limit]:
            out.append("- **%s**" % _md(record["host"]))
            for finding in record_findings(record):
                out.append("  - %s" % _md(finding_line(finding)))
        if len(waived) > limit:
            out.append("- ... and %d more (see report.html)" % (len(waived) - limit))
        out.append("")
    notes = [w for w in report.get("waivers") or [] if w["status"] != "active"]
    if notes:
        out.append("### Waivers to look at (%d)" % len(notes))
        out.append("")
        for waiver in notes:
            out.append("- %s" % _md(waiver_line(waiver)))
        out.append("")
    changes = report["changes"]
    out.append("### Changes since the previous run (%d)" % len(changes))
    out.append("")
    if not changes:
        out.append("None." if baseline else "No baseline yet: this run is the baseline for the next one.")
    for change in changes[:limit]:
        out.append("- %s" % _md(change_text(change)))
    if len(changes) > limit:
        out.append("- ... and %d more (see report.json)" % (len(changes) - limit))
    out.append("")
    return "\n".join(out)


def waiver_line(waiver):
    """One waiver and its status, as a sentence."""
    what = "%s %s/%s%s" % (waiver["host"], waiver["port"], waiver["proto"],
                           " %s" % waiver["family"] if waiver.get("family") else "")
    if waiver["status"] == "stale":
        return "waiver %s (%s, owner %s) matches nothing: remove it or fix its host/port" % (
            waiver["id"], what, waiver["owner"])
    if waiver["status"] == "expired":
        return "waiver %s (%s, owner %s) expired on %s; it no longer covers %s" % (
            waiver["id"], what, waiver["owner"], waiver["expires"], ", ".join(waiver["matched"]))
    return "waiver %s (%s, owner %s) until %s covers %s" % (
        waiver["id"], what, waiver["owner"], waiver["expires"], ", ".join(waiver["matched"]))


def _junit_cases(record):
    """[(name, failure message or None, skipped message or None, text)] for one host: one per
    port/proto/family, plus "host". A port whose findings are all waived is skipped, not passed."""
    problem = host_problem(record)
    cases = [("host", problem, None, record.get("error") or "")]
    if problem:
        return cases
    keyed = {}
    for item in record["exposure"]:
        keyed[exposure_key(item)] = "%s: %s" % (item["state"], item.get("reason", ""))
    for probe in record.get("probes") or []:
        keyed.setdefault(_probe_key(probe), "")
    by_key = {}
    for finding in record_findings(record):
        if finding.get("key"):
            by_key.setdefault(finding["key"], []).append(finding)
    for key in sorted(keyed, key=key_order):
        findings = by_key.get(key, [])
        failing = [finding_line(f) for f in findings if not is_waived(f)]
        waived = [finding_line(f) for f in findings if is_waived(f)]
        cases.append((key, "; ".join(failing) if failing else None,
                      "; ".join(waived) if waived and not failing else None, keyed[key]))
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
    failures = skipped = 0
    for host, record in report["hosts"].items():
        for name, failure, skip, text in _junit_cases(record):
            cases.append((host, name, failure, skip, text))
            failures += 1 if failure else 0
            skipped += 1 if skip else 0
    tests = len(cases)
    stamp = ' timestamp="%s"' % _x(report["generated_at"]) if report.get("generated_at") else ""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield '<testsuites name="sipguard.firewall" tests="%d" failures="%d" errors="0" time="0">\n' % (tests, failures)
    yield ('<testsuite name="sipguard.firewall SIP exposure" tests="%d" failures="%d" errors="0" skipped="%d" '
           'time="0"%s>\n<properties>' % (tests, failures, skipped, stamp))
    for name, value in (("run_id", report.get("run_id")), ("generated_at", report.get("generated_at")),
                        ("baseline", (report.get("baseline") or {}).get("run_id"))):
        yield '<property name="%s" value="%s"/>' % (name, _x(value or ""))
    yield "</properties>\n"
    for host, name, failure, skip, text in cases:
        parts = ['<testcase name="%s" classname="%s" time="0">' % (_x(name), _x(host))]
        if failure:
            parts.append('<failure message="%s" type="%s">%s</failure>' % (
                _x(failure), "unreachable" if name == "host" else "exposed", _x(failure)))
        elif skip:
            parts.append('<skipped message="%s"/>' % _x(skip))
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
tr.waived td{background:#ede7f6}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.badge.pass{background:#1e7e34}.badge.fail{background:#c62828}.badge.unreachable{background:#b26a00}
.badge.waived{background:#5e35b1}.badge.expired{background:#c62828}.badge.conditional{background:#0277bd}
.badge.stale{background:#757575}.badge.active{background:#5e35b1}
.findings li.waived{color:#4527a0}.cond{color:#0277bd;font-size:12px}
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
    if record["compliant"] and record.get("waived"):
        return "waived", 2
    return ("pass", 3) if record["compliant"] else ("fail", 0)


def _finding_html(finding):
    waiver = finding.get("waiver")
    if not waiver:
        return "<li>%s</li>" % _e(finding["text"])
    if waiver["status"] == "active":
        return ('<li class="waived"><span class="badge waived">WAIVED</span> until %s by %s (%s): %s '
                '<span class="muted">[%s]</span></li>' % (
                    _e(waiver["expires"]), _e(waiver["owner"]), _e(waiver["reason"]), _e(finding["text"]),
                    _e(waiver["id"])))
    return '<li><span class="badge expired">WAIVER EXPIRED</span> %s (waiver %s of %s expired on %s)</li>' % (
        _e(finding["text"]), _e(waiver["id"]), _e(waiver["owner"]), _e(waiver["expires"]))


def _state_html(item):
    """A verdict's state; a conditional one (it holds for some senders or interfaces only) is marked."""
    cell = '<span class="st-%s">%s</span>' % (_e(item["state"]), _e(item["state"]))
    if item.get("conditions"):
        cell += ' <span class="badge conditional" title="%s">conditional</span><br><span class="cond">%s</span>' % (
            _e("; ".join(item["conditions"])), _e("; ".join(item["conditions"])))
    return cell


def _ufw_text(ufw):
    if not ufw:
        return "unknown"
    if not ufw.get("installed"):
        return "not installed"
    return "active" if ufw.get("active") else "inactive"


def _html_detail(record, changes):
    out = []
    findings = record_findings(record)
    if findings:
        out.append('<h3>Findings</h3><ul class="findings">%s</ul>' % "".join(_finding_html(f) for f in findings))
    if record["exposure"]:
        out.append("<h3>Exposure</h3><table><thead><tr><th>Port</th><th>State</th><th>Via</th><th>Rule</th>"
                   "<th>Listening</th><th>Reason</th></tr></thead><tbody>")
        for item in record["exposure"]:
            out.append('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s%s</td></tr>' % (
                _e(exposure_key(item)), _state_html(item), _e(item.get("via")),
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
                   % "".join("<li>%s</li>" % _e(change_text(c)) for c in changes))
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
                              ("exposed", s["exposed"], True), ("waived", s.get("waived", 0), None),
                              ("changes", len(report["changes"]), None)):
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
            '<td data-sort="%d">%d</td><td data-sort="%d">%d</td><td data-sort="%d">%d</td><td data-sort="%d">%s</td>'
            "<td>%s</td><td data-sort=\"%d\">%d</td></tr>" % (
                _e(host), status, _e(host), rank, status, status.upper(), states["open"],
                "st-open" if states["open"] else "", states["open"], states["restricted"], states["restricted"],
                states["blocked"], states["blocked"], admitted, admitted, len(record["findings"]),
                "%d (%d waived)" % (len(record["findings"]), record["waived"]) if record.get("waived")
                else str(len(record["findings"])), _e(_ufw_text(record.get("ufw"))), len(changes), len(changes)))
        out.append('<tr class="detail" hidden><td colspan="%d">%s</td></tr></tbody>' % (
            len(_COLUMNS), _html_detail(record, changes)))
        yield "".join(out)
        out = []
    out.append("</table>")
    if report.get("waivers"):
        out.append('<h2>Waivers (%d)</h2><table id="waivers"><thead><tr><th>Waiver</th><th>Status</th><th>Covers</th>'
                   "<th>Owner</th><th>Reason</th><th>Expires</th><th>Matched</th></tr></thead><tbody>"
                   % len(report["waivers"]))
        for waiver in report["waivers"]:
            out.append('<tr><td>%s</td><td><span class="badge %s">%s</span></td><td>%s %s/%s %s</td><td>%s</td>'
                       "<td>%s</td><td>%s</td><td>%s</td></tr>" % (
                           _e(waiver["id"]), _e(waiver["status"]), _e(waiver["status"].upper()), _e(waiver["host"]),
                           _e(waiver["port"]), _e(waiver["proto"]), _e(waiver.get("family") or "both"),
                           _e(waiver["owner"]), _e(waiver["reason"]), _e(waiver["expires"]),
                           _e(", ".join(waiver["matched"]) or "nothing")))
        out.append("</tbody></table>")
    out.append("<h2>Changes since the previous run (%d)</h2>" % len(report["changes"]))
    if report["changes"]:
        out.append("<table><thead><tr><th>Host</th><th>Kind</th><th>Port</th><th>Change</th></tr></thead><tbody>")
        for change in report["changes"]:
            out.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                _e(change["host"]), _e(change["kind"]), _e(change["key"] or ""), _e(change_text(change))))
        out.append("</tbody></table>")
    else:
        out.append("<p>%s</p>" % ("None." if baseline else "No baseline yet: this run is the baseline for the next."))
    out.append("<script>%s</script></body></html>\n" % _JS)
    yield "".join(out)


def render_html(report):
    """report.html's text (see iter_html())."""
    return "".join(iter_html(report))


# --------------------------------------------------------------------------- SARIF

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/sipguard/sipguard.firewall"
# ruleId per finding kind: (id, name, level, security-severity, short description, help with the remediation).
SARIF_RULES = {
    "open-ufw-rule": ("SG001", "SipPortOpenByUfwRule", "error", "8.0",
                      "SIP port open through a UFW rule",
                      "A UFW rule (ufw status numbered shows it) accepts the SIP port from anywhere. Fix: delete the rule "
                      "(ufw delete NUM), or narrow it to the trusted sources (ufw allow from CIDR to any port 5060 "
                      "proto udp); the sipguard.firewall.close role does this and re-checks."),
    "open-policy": ("SG002", "SipPortOpenByPolicy", "error", "8.0",
                    "SIP port open through the default policy",
                    "No rule decides for the port and the policy accepts it: UFW is inactive or not installed, or its "
                    "default incoming policy is allow. Fix: install and enable UFW with 'default deny incoming' "
                    "(ufw default deny incoming; ufw enable)."),
    "bypass": ("SG003", "SipPortOpenOutsideUfw", "error", "9.0",
               "SIP port admitted outside UFW's user rules",
               "A rule outside UFW's user rules admits the port: before.rules/after.rules, a netfilter or nftables "
               "rule of another tool, or a DNAT (container publishing). UFW's own rules cannot close it. Fix: remove "
               "that rule (the finding names it), or drop the port in the DOCKER-USER chain / ufw route rules."),
    "open": ("SG004", "SipPortOpen", "error", "8.0",
             "SIP port open",
             "The port's verdict is open. Fix: see the finding's reason and close the path it names."),
    "restricted": ("SG005", "SipPortRestricted", "warning", "5.0",
                   "SIP port restricted, and restrictions are not allowed",
                   "The port is admitted from some sources or interfaces only, and allow_restricted is false. Fix: "
                   "remove the restricted rule, or set sipguard_verify_allow_restricted when the restriction is wanted."),
    "probe-admitted": ("SG006", "SipProbeGotIn", "error", "8.0",
                       "A SIP probe from outside got an answer",
                       "The prober's OPTIONS (or TCP handshake) was answered: whatever the rules say, the port is "
                       "reachable from the probe host. Fix: close the path the port's verdict names; if it says "
                       "blocked, look for a rule ufw_info does not model and report it."),
    "unreachable": ("SG007", "HostUnreachable", "warning", "4.0",
                    "Host gave no result",
                    "The host did not answer (SSH, become) or failed before it was checked: its exposure is unknown. "
                    "Fix: make it reachable for the audit, or remove it from the inventory."),
    "error": ("SG008", "HostNotInspected", "error", "4.0",
              "Host answered but could not be inspected",
              "ufw_info failed on the host (the finding says why, often missing privileges: become: true). "
              "Fix: the cause in the finding, then run the audit again."),
}


def _fingerprint(host, finding):
    """Stable across runs: the host, the finding's kind and key (and a probe's address), nothing
    that changes from run to run (reasons, rule numbers, times)."""
    parts = (host, finding["kind"], finding.get("key") or "", finding.get("address") or "")
    ident = "|".join(str(part) for part in parts)
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()


def _sarif_result(host, finding, rule_index):
    rule_id, _name, level, _sev, _short, _help = SARIF_RULES[finding["kind"]]
    where = "%s %s" % (host, finding["key"]) if finding.get("key") else host
    message = "%s: %s" % (where, finding["text"])
    waiver = finding.get("waiver")
    if waiver and waiver["status"] == "expired":
        message += " (waiver %s of %s expired on %s)" % (waiver["id"], waiver["owner"], waiver["expires"])
    uri = "sipguard/hosts/%s" % host
    logical = {"name": finding.get("key") or host, "fullyQualifiedName": "%s/%s" % (host, finding.get("key") or "host"),
               "kind": "resource"}
    digest = _fingerprint(host, finding)
    result = {
        "ruleId": rule_id,
        "ruleIndex": rule_index,
        "level": level,
        "message": {"text": message},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}},
            "logicalLocations": [logical],
        }],
        "partialFingerprints": {"sipguardFinding/v1": digest, "primaryLocationLineHash": "%s:1" % digest[:16]},
        "properties": dict((key, finding.get(key)) for key in (
            "kind", "port", "proto", "family", "state", "rule", "backend", "address", "remediation", "conditions")
            if finding.get(key) not in (None, [], "")),
    }
    result["properties"]["host"] = host
    if is_waived(finding):
        result["suppressions"] = [{
            "kind": "external", "status": "accepted",
            "justification": "waiver %s (owner %s) until %s: %s" % (
                waiver["id"], waiver["owner"], waiver["expires"], waiver["reason"]),
        }]
    return result


def sarif_log(report):
    """The report as a SARIF 2.1.0 log: one run, one rule per finding kind (SARIF_RULES), one
    result per finding (waived ones with an accepted external suppression)."""
    kinds = [kind for kind in FINDING_KINDS if kind in SARIF_RULES]
    index = dict((kind, number) for number, kind in enumerate(kinds))
    rules = []
    for kind in kinds:
        rule_id, name, level, severity, short, text = SARIF_RULES[kind]
        rules.append({
            "id": rule_id, "name": name,
            "shortDescription": {"text": short},
            "fullDescription": {"text": "%s (finding kind '%s')." % (short, kind)},
            "help": {"text": text, "markdown": "**%s**\n\n%s" % (short, text)},
            "defaultConfiguration": {"level": level},
            "properties": {"tags": ["security", "sip", "firewall"], "precision": "high",
                           "security-severity": severity, "sipguard-kind": kind},
        })
    results = []
    for host, record in report["hosts"].items():
        for finding in record_findings(record):
            if finding["kind"] in index:
                results.append(_sarif_result(host, finding, index[finding["kind"]]))
    run = {
        "tool": {"driver": {"name": TOOL_NAME, "version": COLLECTION_VERSION, "semanticVersion": COLLECTION_VERSION,
                            "informationUri": INFORMATION_URI, "rules": rules}},
        "automationDetails": {"id": "sipguard.firewall/fleet/"},
        "results": results,
        "properties": {"run_id": report.get("run_id"), "generated_at": report.get("generated_at"),
                       "summary": dict((k, v) for k, v in report["summary"].items() if k != "by_key")},
    }
    if report.get("generated_at"):
        run["invocations"] = [{"executionSuccessful": True, "endTimeUtc": report["generated_at"]}]
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def iter_sarif(report):
    """report.sarif's text."""
    yield json.dumps(sarif_log(report), indent=1, sort_keys=True)
    yield "\n"


# --------------------------------------------------------------------------- Prometheus

def _label(value):
    """A label value in the text exposition format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels):
    return "{%s}" % ",".join('%s="%s"' % (key, _label(labels[key])) for key in sorted(labels))


def report_timestamp(report):
    """generated_at as seconds since the epoch, or None."""
    try:
        return calendar.timegm(time.strptime(report.get("generated_at") or "", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def iter_prometheus(report):
    """report.prom: gauges in the text exposition format, for node_exporter's textfile collector.

    ``sipguard_port_state`` is 1 for a port's current state and 0 for the others (one series per
    state, so a query can select ``state="open"``); ``waived`` says whether a waiver covers it.
    """
    metrics = [
        ("sipguard_port_state", "1 for the state (open, restricted, blocked) of a SIP port/proto/family on a host, else 0."),
        ("sipguard_port_waived", "1 when an active waiver covers the findings of this port/proto/family, else 0."),
        ("sipguard_host_compliant", "1 when the host is compliant (waived findings do not count), else 0."),
        ("sipguard_host_reachable", "1 when the host answered and was inspected, else 0."),
        ("sipguard_host_findings", "Findings on the host that count against it (not waived)."),
        ("sipguard_hosts", "Hosts of the report by status."),
        ("sipguard_waivers", "Waivers by status (active, expired, stale)."),
        ("sipguard_report_last_success_timestamp_seconds", "Time the report was generated (Unix seconds)."),
    ]
    samples = dict((name, []) for name, _help in metrics)
    summary = report["summary"]
    for host, record in report["hosts"].items():
        findings = record_findings(record)
        waived_keys = set(f.get("key") for f in findings if is_waived(f))
        for item in record["exposure"]:
            key = exposure_key(item)
            base = dict(host=host, port=item["port"], proto=item["proto"], family=item["family"])
            for state in STATES:
                samples["sipguard_port_state"].append(
                    (_labels(state=state, **base), 1 if item["state"] == state else 0))
            samples["sipguard_port_waived"].append((_labels(**base), 1 if key in waived_keys else 0))
        samples["sipguard_host_compliant"].append((_labels(host=host), 1 if record["compliant"] else 0))
        samples["sipguard_host_reachable"].append((_labels(host=host), 1 if record["reachable"] and not record.get("error") else 0))
        samples["sipguard_host_findings"].append((_labels(host=host), sum(1 for f in findings if not is_waived(f))))
    for status in ("compliant", "non_compliant", "unreachable"):
        samples["sipguard_hosts"].append((_labels(status=status), summary[status]))
    for status, count in sorted((summary.get("waivers") or {}).items()):
        samples["sipguard_waivers"].append((_labels(status=status), count))
    stamp = report_timestamp(report)
    if stamp is not None:
        samples["sipguard_report_last_success_timestamp_seconds"].append(("", stamp))
    for name, text in metrics:
        if not samples[name]:
            continue
        lines = ["# HELP %s %s" % (name, text), "# TYPE %s gauge" % name]
        lines.extend("%s%s %s" % (name, labels, value) for labels, value in samples[name])
        yield "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- evidence bundle

# Finding kind -> the controls it gives evidence for (docs/report-schema.md, "Evidence bundle").
CONTROLS = {
    "open-ufw-rule": ["CIS Ubuntu 22.04 3.5.1.7 (ufw default deny)", "CIS Debian 12 4.2.7",
                      "UBTU-22-251030 (ports, protocols and services restricted)"],
    "open-policy": ["CIS Ubuntu 22.04 3.5.1.1-3.5.1.3 (ufw installed, enabled), 3.5.1.7",
                    "CIS Debian 12 4.2.1-4.2.3, 4.2.7", "UBTU-22-251010, UBTU-22-251015 (ufw installed, enabled)",
                    "UBTU-22-251030"],
    "bypass": ["CIS Ubuntu 22.04 3.5.1.5-3.5.1.6", "CIS Debian 12 4.1.1 (a single firewall configuration utility)",
               "UBTU-22-251030"],
    "open": ["CIS Ubuntu 22.04 3.5.1.7", "UBTU-22-251030"],
    "restricted": ["CIS Ubuntu 22.04 3.5.1.6 (rules exist for all open ports)", "CIS Debian 12 4.2.6",
                   "UBTU-22-251030"],
    "probe-admitted": ["CIS Ubuntu 22.04 3.5.1.7", "UBTU-22-251030 (verified from outside)"],
    "unreachable": [],
    "error": [],
}
EVIDENCE_FORMAT = 1


def evidence_name(report):
    return "evidence-%s.tar.gz" % (report.get("run_id") or "unknown")


def _host_files(host, record):
    """(path, text) of the inputs one host's verdict came from, as the record carries them."""
    base = "hosts/%s/" % host
    files = [(base + "record.json", json.dumps(record, indent=1, sort_keys=True) + "\n")]
    ufw = record.get("ufw")
    if ufw:
        defaults = ufw.get("defaults") or {}
        lines = ["installed: %s" % ufw.get("installed"), "active: %s" % ufw.get("active"),
                 "enabled: %s" % ufw.get("enabled"), "ipv6: %s" % ufw.get("ipv6"),
                 "defaults: %s" % ", ".join("%s %s" % (k, defaults[k]) for k in sorted(defaults)),
                 "rules (ufw status numbered order):"]
        lines.extend("  [%s]" % rule for rule in ufw.get("rules") or [])
        files.append((base + "ufw-status.txt", "\n".join(lines) + "\n"))
    verdicts = []
    for item in record["exposure"]:
        verdicts.append("%s %s via %s rule %s: %s%s" % (
            exposure_key(item), item["state"], item.get("via"), item.get("rule"), item.get("reason"),
            (" [conditions: %s]" % "; ".join(item["conditions"])) if item.get("conditions") else ""))
    files.append((base + "verdicts.txt", "\n".join(verdicts) + "\n"))
    if record.get("probes"):
        files.append((base + "probes.txt", "".join(
            "%s %s/%s %s: %s (%s) rtt_ms=%s sip_status=%s server=%s\n" % (
                p.get("address"), p.get("port"), p.get("transport"), p.get("family"), p.get("state"),
                p.get("reason"), p.get("rtt_ms"), p.get("sip_status"), p.get("server"))
            for p in record["probes"])))
    raw = record.get("raw_inputs") or {}
    for name in sorted(raw):
        files.append((base + "raw/%s" % re.sub(r"[^A-Za-z0-9._-]", "_", name), str(raw[name])))
    return files


def _controls_text(report):
    lines = ["# finding kind -> controls it evidences (docs/report-schema.md)"]
    for kind in FINDING_KINDS:
        lines.append("%s\t%s" % (kind, "; ".join(CONTROLS.get(kind) or ["-"])))
    lines.append("")
    lines.append("# findings of this run: host, key, kind, waived, controls")
    for host, record in report["hosts"].items():
        for finding in record_findings(record):
            lines.append("%s\t%s\t%s\t%s\t%s" % (host, finding.get("key") or "-", finding["kind"],
                                                 (finding.get("waiver") or {}).get("status", "-"),
                                                 "; ".join(CONTROLS.get(finding["kind"]) or ["-"])))
    return "\n".join(lines) + "\n"


def evidence_bytes(report):
    """evidence-<run_id>.tar.gz: a directory ``evidence-<run_id>/`` with report.json, controls.tsv,
    per host the inputs its verdict came from, and SHA256SUMS (``sha256sum -c SHA256SUMS`` in that
    directory verifies every other file). Deterministic: the same report gives the same bytes."""
    top = evidence_name(report)[:-len(".tar.gz")]
    files = [("report.json", "".join(iter_json(report))), ("controls.tsv", _controls_text(report))]
    for host, record in report["hosts"].items():
        files.extend(_host_files(host, record))
    files.append(("README.txt", "sipguard.firewall %s evidence bundle (format %d) of run %s at %s.\n"
                  "Verify: cd %s && sha256sum -c SHA256SUMS\n" % (
                      COLLECTION_VERSION, EVIDENCE_FORMAT, report.get("run_id"), report.get("generated_at"), top)))
    blobs = [(path, text.encode("utf-8")) for path, text in files]
    sums = "".join("%s  %s\n" % (hashlib.sha256(data).hexdigest(), path) for path, data in blobs)
    blobs.append(("SHA256SUMS", sums.encode("utf-8")))
    mtime = report_timestamp(report) or 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in blobs:
            info = tarfile.TarInfo("%s/%s" % (top, path))
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=mtime) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def iter_evidence(report):
    yield evidence_bytes(report)


def _iter_markdown(report):
    yield render_markdown(report)


# format -> (file name, chunk generator); report.json is the baseline, written last. Chunks are
# str, except the evidence bundle's (bytes).
RENDERERS = (("json", "report.json", iter_json), ("html", "report.html", iter_html),
             ("md", "report.md", _iter_markdown), ("junit", "junit.xml", iter_junit),
             ("sarif", "report.sarif", iter_sarif), ("prometheus", "report.prom", iter_prometheus),
             ("evidence", "evidence-<run_id>.tar.gz", iter_evidence))
FORMATS = tuple(fmt for fmt, _name, _fn in RENDERERS)
FILE_NAMES = dict((fmt, name) for fmt, name, _fn in RENDERERS)


def file_name(report, fmt):
    """The file name of one format for this report (the evidence bundle's carries the run id)."""
    if fmt == "evidence":
        return evidence_name(report)
    return FILE_NAMES[fmt]


def iter_format(report, fmt):
    """The chunks of one format of ``report`` (one of FORMATS)."""
    for name, _file, fn in RENDERERS:
        if name == fmt:
            return fn(report)
    raise ReportError("formats: %r is not one of %s" % (fmt, ", ".join(FORMATS)))


def render_all(report, formats):
    """{format: (file name, text or bytes)} for the requested formats (the whole texts in memory)."""
    out = {}
    for fmt, _name, fn in RENDERERS:
        if fmt in formats:
            chunks = list(fn(report))
            out[fmt] = (file_name(report, fmt), b"".join(chunks) if chunks and isinstance(chunks[0], bytes)
                        else "".join(chunks))
    return out
