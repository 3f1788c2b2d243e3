# -*- coding: utf-8 -*-
"""Report generation and merge for 10,000 synthetic hosts: time and peak RSS. Not a unit test.

The hosts are clones of the 23 host records recorded from the exposure lab
(tests/unit/fixtures/records), renamed, with perturbed addresses, pids and RTTs; run B opens,
closes or restricts one port on about 1% of them (through record_fixtures.reverify(), i.e.
build_host_record()). Each phase runs in a fresh interpreter that loads its inputs from JSON files
(as the module does) and reports ru_maxrss, so the numbers include the inputs in memory.

    python3 benchmarks/report/run.py [--hosts 10000] [--slices 10]
"""

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
# conftest makes ansible_collections.sipguard.firewall importable from this checkout
import conftest  # noqa: E402,F401  pylint: disable=unused-import
sys.path.insert(0, os.path.join(REPO, "tests", "unit"))
import record_fixtures as F  # noqa: E402

TARGET_SECONDS, TARGET_MB = 5.0, 300.0

# One phase in a fresh interpreter. ru_maxrss survives fork+exec on Linux (the kernel carries the
# forked image's high-water mark over), so phases are started from a parent that never held the
# synthetic fleet, and VmHWM (reset at exec) is printed next to it as a cross-check.
CHILD = r"""
import json, os, resource, sys, tempfile, time
def hwm_kb():
    with open("/proc/self/status") as fh:
        return int([l for l in fh if l.startswith("VmHWM")][0].split()[1])
from ansible_collections.sipguard.firewall.plugins.module_utils.report import (
    build_report, merge_reports, loads_report)
from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import gate
from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import iter_format
from ansible_collections.sipguard.firewall.plugins.module_utils.report_store import publish
out = {"rss_imports_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
phase, inputs = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
loaded = []
for path in inputs:
    with open(path) as fh:
        loaded.append(loads_report(fh.read()))
out["load_s"] = time.perf_counter() - t0
t1 = time.perf_counter()
if phase == "build":
    records, previous = loaded
    report = build_report(records, previous, run_id="bench-b", generated_at="2026-11-26T00:00:00Z")
    out["build_s"] = time.perf_counter() - t1
    sizes = {}
    for name in ("json", "html", "md", "junit"):
        t = time.perf_counter()
        sizes[name] = sum(len(chunk.encode("utf-8")) for chunk in iter_format(report, name))
        out["render_%s_s" % name] = time.perf_counter() - t
    t = time.perf_counter()
    gate(report, ["exposed", "regression", "unreachable"])
    out["gate_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        publish(tmp, report, ["json", "html", "md", "junit"], 30)
        out["publish_s"] = time.perf_counter() - t
    out["sizes"] = sizes
else:
    previous, slices = loaded[0], loaded[1:]
    report = merge_reports(slices, previous=previous, run_id="bench-merged", generated_at="2026-11-26T00:00:00Z")
    out["merge_s"] = time.perf_counter() - t1
out["changes"] = len(report["changes"])
out["hosts"] = len(report["hosts"])
out["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["vmhwm_kb"] = hwm_kb()
print(json.dumps(out))
"""


def synthesize(n, seed=5060):
    rng = random.Random(seed)
    base = list(F.load_records().values())
    records = []
    for index in range(n):
        record = copy.deepcopy(base[index % len(base)])
        record["host"] = "sip-%05d-%s" % (index, record["host"])
        renamed = {}
        for probe in record["probes"]:
            new = "10.%d.%d.%d" % (index >> 16 & 255, index >> 8 & 255, index & 255) if probe["family"] == "ipv4" \
                else "fd00:5060::%x" % index
            renamed[probe["address"]] = new
            probe["address"] = new
            if probe["rtt_ms"] is not None:
                probe["rtt_ms"] = round(rng.uniform(0.2, 40.0), 3)
        for listener in record["listeners"]:
            listener["pid"] = rng.randrange(300, 4000000)
            listener["address"] = renamed.get(listener["address"], listener["address"])
        findings = []
        for line in record["findings"]:  # probe findings name the probed address: unique per host
            for old, new in renamed.items():
                line = line.replace("probe %s " % old, "probe %s " % new)
            findings.append(line)
        record["findings"] = findings
        records.append(record)
    return records


def perturb(records, share=0.01, seed=4711):
    """Run B: about ``share`` of the hosts get one port opened, closed or restricted."""
    rng = random.Random(seed)
    out = list(records)
    edited = 0
    for index in rng.sample(range(len(records)), int(len(records) * share)):
        record = records[index]
        item = rng.choice(record["exposure"])
        key = "%d/%s/%s" % (item["port"], item["proto"], item["family"])
        state = rng.choice([s for s in ("open", "restricted", "blocked") if s != item["state"]])
        verdict = {"state": state, "reason": "benchmark: %s" % state, "via": "ufw", "rule": 9}
        out[index] = F.reverify(record, {key: verdict}, rules=record["ufw"]["rules"] + [
            "9 allow %d/%s Anywhere" % (item["port"], item["proto"])])
        edited += 1
    return out, edited


def prepare(directory, hosts, slices):
    """Write report-a.json (baseline), records-b.json and slice-N.json (reports of run B's slices)."""
    from ansible_collections.sipguard.firewall.plugins.module_utils.report import build_report
    from ansible_collections.sipguard.firewall.plugins.module_utils.report_render import render_json
    run_a = synthesize(hosts)
    run_b, edited = perturb(run_a)

    def dump(name, text):
        with open(os.path.join(directory, name), "w") as fh:
            fh.write(text)

    dump("report-a.json", render_json(build_report(run_a, None, run_id="bench-a", generated_at="2026-11-25T00:00:00Z")))
    dump("records-b.json", json.dumps(run_b))
    for i in range(slices):
        dump("slice-%d.json" % i, render_json(build_report(run_b[i::slices], None, run_id="slice-%d" % i,
                                                           generated_at="2026-11-26T00:00:00Z")))
    print(json.dumps({"edited": edited}))


def _python(argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable] + argv, env=env, text=True, stdout=subprocess.PIPE, check=False,
                          stderr=subprocess.PIPE, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(kb):
    return kb / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare, args.hosts, args.slices)

    with tempfile.TemporaryDirectory(prefix="sipguard-bench-") as tmp:
        t = time.perf_counter()
        edited = _python([os.path.abspath(__file__), "--prepare", tmp, "--hosts", str(args.hosts),
                          "--slices", str(args.slices)])["edited"]
        prep = time.perf_counter() - t
        a_path, b_path = os.path.join(tmp, "report-a.json"), os.path.join(tmp, "records-b.json")
        input_mb = os.path.getsize(b_path) / 1e6
        build = _python(["-c", CHILD, "build", b_path, a_path])
        merge = _python(["-c", CHILD, "merge", a_path] + [os.path.join(tmp, "slice-%d.json" % i)
                                                          for i in range(args.slices)])

    render_s = sum(v for k, v in build.items() if k.startswith("render_"))
    core_s = build["build_s"] + render_s + build["gate_s"]
    print("hosts %d (clones of the 23 recorded lab records, own addresses/pids/RTTs), run B changes one port "
          "on %d hosts; inputs prepared in %.1fs" % (args.hosts, edited, prep))
    print("records of one run as JSON: %.1f MB (%.0f bytes/host)" % (input_mb, input_mb * 1e6 / args.hosts))
    print("")
    print("build_report + renderers + gate (fresh interpreter):")
    print("  load records + baseline (loads_report)  %6.2fs" % build["load_s"])
    print("  build_report (diff vs baseline)         %6.2fs  (%d changes)" % (build["build_s"], build["changes"]))
    for name in ("json", "html", "md", "junit"):
        print("  render %-6s                           %6.2fs  %6.1f MB" % (
            name, build["render_%s_s" % name], build["sizes"][name] / 1e6))
    print("  gate (exposed, regression, unreachable) %6.2fs" % build["gate_s"])
    print("  build + renderers + gate                %6.2fs   target < %.0fs: %s" % (
        core_s, TARGET_SECONDS, "OK" if core_s < TARGET_SECONDS else "MISSED"))
    print("  ... plus loading the inputs             %6.2fs" % (core_s + build["load_s"]))
    print("  publish() all four files + history     %6.2fs  (render again + write + fsync)" % build["publish_s"])
    print("  peak RSS %.1f MB (VmHWM %.1f MB; interpreter+imports %.1f MB)   target < %.0f MB: %s" % (
        _mb(build["peak_rss_kb"]), _mb(build["vmhwm_kb"]), _mb(build["rss_imports_kb"]), TARGET_MB,
        "OK" if _mb(build["peak_rss_kb"]) < TARGET_MB else "MISSED"))
    print("")
    print("merge of %d slice reports against the baseline (fresh interpreter):" % args.slices)
    print("  load baseline + slices                  %6.2fs" % merge["load_s"])
    print("  merge_reports                           %6.2fs  (%d hosts, %d changes; single run had %d)" % (
        merge["merge_s"], merge["hosts"], merge["changes"], build["changes"]))
    print("  peak RSS %.1f MB (VmHWM %.1f MB)   target < %.0f MB: %s" % (
        _mb(merge["peak_rss_kb"]), _mb(merge["vmhwm_kb"]), TARGET_MB,
        "OK" if _mb(merge["peak_rss_kb"]) < TARGET_MB else "MISSED"))
    print("")
    print("ratios:")
    print("  per host: build_report %.0f us, html %.0f us, all four renderers %.0f us" % (
        build["build_s"] / args.hosts * 1e6, build["render_html_s"] / args.hosts * 1e6, render_s / args.hosts * 1e6))
    print("  time: merge_reports / build_report %.2f; renderers / build_report %.1f" % (
        merge["merge_s"] / build["build_s"], render_s / build["build_s"]))
    print("  size: report.html / report.json %.2f; junit.xml / report.json %.2f" % (
        build["sizes"]["html"] / float(build["sizes"]["json"]), build["sizes"]["junit"] / float(build["sizes"]["json"])))
    print("  memory: (peak RSS - imports) / records JSON size %.1f" % (
        (build["peak_rss_kb"] - build["rss_imports_kb"]) * 1024 / 1e6 / input_mb))


if __name__ == "__main__":
    main()
