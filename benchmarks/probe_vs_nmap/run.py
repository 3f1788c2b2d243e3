# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: sip_probe's engine vs nmap on loopback targets with known ground truth.

Not a unit test. See README.md. Loopback only (127.0.0.0/8 and ::1); when run as root it
works inside its own network namespace ``sgp-bench-<pid>`` (deleted afterwards), where it
may also add firewall rules to get "filtered" ground truth.

    python3 benchmarks/probe_vs_nmap/run.py            # the full benchmark
    python3 benchmarks/probe_vs_nmap/run.py probe 127.0.0.1 --ports 5060/udp 5060/tcp --timeout 0.5
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SIP_PORT = 5060


def import_engine():
    """Import sip_prober from this checkout (builds an ansible_collections symlink tree if needed)."""
    try:
        from ansible_collections.sipguard.firewall.plugins.module_utils import sip_prober
        return sip_prober
    except ImportError:
        pass
    root = os.path.join(tempfile.gettempdir(), "sgp-col-%d" % os.getuid())
    link = os.path.join(root, "ansible_collections", "sipguard", "firewall")
    if not os.path.isdir(os.path.dirname(link)):
        os.makedirs(os.path.dirname(link))
    if os.path.realpath(link) != os.path.realpath(REPO):
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(REPO, link)
    sys.path.insert(0, root)
    from ansible_collections.sipguard.firewall.plugins.module_utils import sip_prober
    return sip_prober


# ---------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------

# category -> expected state per protocol (nmap's meanings)
CATEGORIES = {
    "sip": {"udp": "open", "tcp": "open"},
    "closed": {"udp": "closed", "tcp": "closed"},
    "silent": {"udp": "open|filtered", "tcp": "open"},  # UDP reads, never answers; TCP listens, never accepts
    "udp-only": {"udp": "open", "tcp": "closed"},
    "tcp-only": {"udp": "closed", "tcp": "open"},
    "dropped": {"udp": "open|filtered", "tcp": "filtered"},  # netns only: iptables DROP
    "prohibited": {"udp": "filtered", "tcp": "filtered"},  # netns only: REJECT icmp-admin-prohibited
}
LOOPBACK_CATEGORIES = ["sip", "closed", "silent", "udp-only", "tcp-only"]
DROPPED_NET = "127.11.0.0/16"
PROHIBITED_NET = "127.12.0.0/16"


def make_plan(count, firewall):
    plan = []
    for index in range(count):
        address = "127.10.%d.%d" % (index // 250, index % 250 + 1)
        plan.append((address, LOOPBACK_CATEGORIES[index % len(LOOPBACK_CATEGORIES)]))
    plan.append(("::1", "sip"))
    if firewall:
        plan.extend(("127.11.0.%d" % i, "dropped") for i in range(1, 11))
        plan.extend(("127.12.0.%d" % i, "prohibited") for i in range(1, 11))
    return plan


# ---------------------------------------------------------------------------
# Responders (a child process, one selectors loop)
# ---------------------------------------------------------------------------

_HEADER = re.compile(br"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:", re.IGNORECASE)


def sip_reply(request):
    """A stateless 200 OK: copies Via/From/To/Call-ID/CSeq like a real UAS."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    if not head or b"SIP/2.0" not in head[0] or head[0].startswith(b"SIP/"):
        return None
    lines = [b"SIP/2.0 200 OK"]
    for line in head[1:]:
        if _HEADER.match(line):
            if line.lower().startswith((b"to:", b"t:")) and b";tag=" not in line:
                line += b";tag=bench"
            lines.append(line)
    lines += [b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS", b"Server: sgp-bench-responder", b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def serve(plan_file, seconds):
    with open(plan_file) as handle:
        plan = json.load(handle)
    sel = selectors.DefaultSelector()
    keep = []
    for address, category in plan:
        af = socket.AF_INET6 if ":" in address else socket.AF_INET
        if category in ("sip", "udp-only", "silent"):
            udp = socket.socket(af, socket.SOCK_DGRAM)
            udp.bind((address, SIP_PORT))
            udp.setblocking(False)
            sel.register(udp, selectors.EVENT_READ, ("udp", category != "silent"))
            keep.append(udp)
        if category in ("sip", "tcp-only", "silent"):
            tcp = socket.socket(af, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((address, SIP_PORT))
            tcp.listen(128)
            tcp.setblocking(False)
            if category != "silent":  # silent: the kernel completes handshakes, nobody accepts
                sel.register(tcp, selectors.EVENT_READ, ("listen", True))
            keep.append(tcp)
    print("ready", flush=True)
    buffers = {}
    end = time.time() + seconds
    while time.time() < end:
        for key, _events in sel.select(0.2):
            kind, answer = key.data
            sock = key.fileobj
            try:
                if kind == "udp":
                    for _attempt in range(64):
                        data, peer = sock.recvfrom(65535)
                        reply = sip_reply(data) if answer else None
                        if reply:
                            sock.sendto(reply, peer)
                elif kind == "listen":
                    conn, _peer = sock.accept()
                    conn.setblocking(False)
                    buffers[conn] = b""
                    sel.register(conn, selectors.EVENT_READ, ("conn", True))
                else:
                    chunk = sock.recv(65535)
                    buffers[sock] += chunk
                    if not chunk or b"\r\n\r\n" in buffers[sock]:
                        reply = sip_reply(buffers[sock]) if chunk else None
                        if reply:
                            sock.sendall(reply)
                        sel.unregister(sock)
                        del buffers[sock]
                        sock.close()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                if kind == "conn":
                    sel.unregister(sock)
                    buffers.pop(sock, None)
                    sock.close()
    return 0


# ---------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------

def run_sip_probe(engine, plan, args):
    targets = [address for address, _category in plan]
    started = time.monotonic()
    results = engine.probe_targets(targets, ["5060/udp", "5060/tcp"], timeout=args.timeout, retries=args.retries,
                                   rate=args.rate, max_concurrency=args.max_concurrency)
    elapsed = time.monotonic() - started
    states = {(r["address"], r["transport"]): (r["state"], r["reason"]) for r in results}
    return states, elapsed


def run_nmap(plan, workdir):
    """nmap -sU -sT -p 5060 -Pn --reason -T4 -n: one run for IPv4, one for IPv6 (nmap cannot mix)."""
    states = {}
    elapsed = 0.0
    v4 = [a for a, _c in plan if ":" not in a]
    v6 = [a for a, _c in plan if ":" in a]
    for family, addresses in (("4", v4), ("6", v6)):
        if not addresses:
            continue
        listing = os.path.join(workdir, "targets%s.txt" % family)
        out = os.path.join(workdir, "nmap%s.xml" % family)
        with open(listing, "w") as handle:
            handle.write("\n".join(addresses) + "\n")
        cmd = ["nmap", "-sU", "-sT", "-p", str(SIP_PORT), "-Pn", "--reason", "-T4", "-n", "-oX", out, "-iL", listing]
        if family == "6":
            cmd.insert(1, "-6")
        started = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        elapsed += time.monotonic() - started
        for host in ET.parse(out).getroot().iter("host"):
            address = host.find("address").get("addr")
            for port in host.iter("port"):
                state = port.find("state")
                states[(address, port.get("protocol"))] = (state.get("state"), state.get("reason"))
    return states, elapsed


def agreement(plan, states):
    agree, total, wrong = 0, 0, []
    for address, category in plan:
        for proto in ("udp", "tcp"):
            total += 1
            expected = CATEGORIES[category][proto]
            got = states.get((address, proto), ("missing", ""))
            if got[0] == expected:
                agree += 1
            else:
                wrong.append("%s/%s %s: expected %s, got %s (%s)" % (address, proto, category, expected, got[0], got[1]))
    return agree, total, wrong


def rss_child(count, timeout, firewall):
    """Run in a fresh interpreter: probe ``count`` silent/closed loopback targets; print JSON."""
    engine = import_engine()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    targets = []
    for index in range(count):
        if firewall and index % 10 == 0:  # every 10th is behind DROP: silent UDP, TCP timeout
            targets.append("127.11.%d.%d" % (100 + index // 2500, index // 10 % 250 + 1))
        else:
            targets.append("127.20.%d.%d" % (index // 250, index % 250 + 1))
    started = time.monotonic()
    results = engine.probe_targets(targets, ["5060/udp", "5060/tcp"], timeout=timeout, retries=1, rate=20000,
                                   max_concurrency=1024)
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from ansible_collections.sipguard.firewall.plugins.module_utils.sip import count_states
    print(json.dumps({"targets": count, "probes": len(results), "baseline_kb": baseline, "peak_kb": peak,
                      "seconds": round(elapsed, 2), "counts": count_states(results)}))
    return 0


def probe_cli(argv):
    """``run.py probe TARGET... [--ports 5060/udp ...] [--timeout S] ...``: the engine as a CLI, JSON out."""
    engine = import_engine()
    from ansible_collections.sipguard.firewall.plugins.module_utils import sip

    parser = argparse.ArgumentParser(prog="run.py probe", description="SIP OPTIONS prober (sipguard.firewall engine)")
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--ports", nargs="+", default=list(sip.DEFAULT_PROBE_PORTS))
    parser.add_argument("--timeout", type=float, default=sip.DEFAULT_TIMEOUT)
    parser.add_argument("--retries", type=int, default=sip.DEFAULT_RETRIES)
    parser.add_argument("--rate", type=float, default=sip.DEFAULT_RATE)
    parser.add_argument("--max-concurrency", type=int, default=sip.DEFAULT_MAX_CONCURRENCY)
    parser.add_argument("--source")
    parser.add_argument("--family", default="any", choices=list(sip.FAMILIES))
    args = parser.parse_args(argv)
    try:
        results = engine.probe_targets(args.targets, args.ports, args.timeout, args.retries, args.rate,
                                       args.max_concurrency, args.source, args.family)
    except (ValueError, engine.ProbeEngineError) as exc:
        parser.error(str(exc))
    print(json.dumps({"results": results, "counts": sip.count_states(results)}, indent=2))
    return 0


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------

def inner(args):
    engine = import_engine()
    firewall = args.firewall
    plan = make_plan(args.targets, firewall)
    workdir = tempfile.mkdtemp(prefix="sgp-bench-")
    plan_file = os.path.join(workdir, "plan.json")
    with open(plan_file, "w") as handle:
        json.dump(plan, handle)
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", plan_file, "--seconds", "600"],
                              stdout=subprocess.PIPE, universal_newlines=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("responders did not start")
        probe_states, probe_seconds = run_sip_probe(engine, plan, args)
        nmap_states, nmap_seconds = run_nmap(plan, workdir) if shutil.which("nmap") else ({}, float("nan"))
    finally:
        server.terminate()
        server.wait(10)
    print("targets: %d (%d IPv4 + ::1%s), ports 5060/udp + 5060/tcp, %d probes per tool"
          % (len(plan), len(plan) - 1, ", incl. 20 firewalled in the netns" if firewall else "", 2 * len(plan)))
    print("sip_probe settings: timeout=%gs retries=%d rate=%g/s max_concurrency=%d"
          % (args.timeout, args.retries, args.rate, args.max_concurrency))
    for name, states, seconds in (("sip_probe", probe_states, probe_seconds), ("nmap -T4", nmap_states, nmap_seconds)):
        agree, total, wrong = agreement(plan, states)
        print("%-10s agreement %d/%d = %.1f%%  wall %.2fs" % (name, agree, total, 100.0 * agree / total, seconds))
        for line in wrong[:10]:
            print("    " + line)
    print("wall-time ratio sip_probe/nmap = %.3f" % (probe_seconds / nmap_seconds))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "rss-child", str(args.rss_targets),
                          "--timeout", str(args.rss_timeout)] + (["--firewall"] if firewall else []),
                         stdout=subprocess.PIPE, universal_newlines=True, timeout=600, check=True).stdout
    rss = json.loads(out.strip().splitlines()[-1])
    print("engine peak RSS for %d targets (%d probes, %s): %.1f MB (interpreter+imports before probing %.1f MB), %.1fs"
          % (rss["targets"], rss["probes"], ", ".join("%s=%d" % kv for kv in rss["counts"].items() if kv[1]),
             rss["peak_kb"] / 1024.0, rss["baseline_kb"] / 1024.0, rss["seconds"]))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def outer(args):
    """Create sgp-bench-<pid>, run the benchmark inside it, always delete it."""
    if args.no_netns or os.geteuid() != 0 or not shutil.which("ip"):
        args.firewall = False
        return inner(args)
    name = "sgp-bench-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        def nsrun(*cmd):
            return subprocess.run(["ip", "netns", "exec", name] + list(cmd), timeout=30, check=False)

        nsrun("ip", "link", "set", "lo", "up")
        firewall = bool(shutil.which("iptables")) and not args.no_firewall
        if firewall:
            ok = nsrun("iptables", "-A", "INPUT", "-d", DROPPED_NET, "-j", "DROP").returncode == 0
            ok = ok and nsrun("iptables", "-A", "INPUT", "-d", PROHIBITED_NET, "-p", "udp", "-j", "REJECT",
                              "--reject-with", "icmp-admin-prohibited").returncode == 0
            ok = ok and nsrun("iptables", "-A", "INPUT", "-d", PROHIBITED_NET, "-p", "tcp", "-j", "REJECT",
                              "--reject-with", "icmp-admin-prohibited").returncode == 0
            firewall = ok
        cmd = ["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__), "inner",
               "--targets", str(args.targets), "--timeout", str(args.timeout), "--retries", str(args.retries),
               "--rate", str(args.rate), "--max-concurrency", str(args.max_concurrency),
               "--rss-targets", str(args.rss_targets), "--rss-timeout", str(args.rss_timeout)]
        if firewall:
            cmd.append("--firewall")
        return subprocess.run(cmd, timeout=1800, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=30, check=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command")

    def bench_options(p):
        p.add_argument("--targets", type=int, default=200, help="IPv4 loopback targets (plus ::1)")
        p.add_argument("--timeout", type=float, default=0.5)
        p.add_argument("--retries", type=int, default=1)
        p.add_argument("--rate", type=float, default=5000)
        p.add_argument("--max-concurrency", type=int, default=512)
        p.add_argument("--rss-targets", type=int, default=10000)
        p.add_argument("--rss-timeout", type=float, default=0.3)

    bench = sub.add_parser("bench", help="the benchmark (default)")
    bench_options(bench)
    bench.add_argument("--no-netns", action="store_true", help="run in the current namespace (no firewall cases)")
    bench.add_argument("--no-firewall", action="store_true")
    inner_p = sub.add_parser("inner")
    bench_options(inner_p)
    inner_p.add_argument("--firewall", action="store_true")
    serve_p = sub.add_parser("serve")
    serve_p.add_argument("plan")
    serve_p.add_argument("--seconds", type=float, default=600)
    rss_p = sub.add_parser("rss-child")
    rss_p.add_argument("count", type=int)
    rss_p.add_argument("--timeout", type=float, default=0.3)
    rss_p.add_argument("--firewall", action="store_true")
    probe_p = sub.add_parser("probe", help="probe targets with the engine and print JSON (sip_prober.main)")
    probe_p.add_argument("rest", nargs=argparse.REMAINDER)

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "bench")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.plan, args.seconds)
    if args.command == "rss-child":
        return rss_child(args.count, args.timeout, args.firewall)
    if args.command == "inner":
        return inner(args)
    if args.command == "probe":
        return probe_cli(args.rest)
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
