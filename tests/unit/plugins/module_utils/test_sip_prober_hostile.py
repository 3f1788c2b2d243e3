# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile peers against the prober, on loopback only (127.0.0.1).

Each peer is a thread with its own listening socket that answers the prober's OPTIONS the
way a malicious or broken server could: trickling one byte at a time, flooding without end,
a huge header, never-ending folding, no end of headers, binary garbage, endless provisional
answers, a UDP flood. A well-behaved responder answers 200 OK. Everything is probed in ONE
prober run: one hostile host must not hold up the others, and every probe ends within
``timeout * (retries + 1)`` plus a little slack whatever the peer sends.

Every peer stops by itself (bounded lifetime, bounded loops) even if the test fails.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket
import ssl
import threading
import time

from ansible_collections.sipguard.firewall.plugins.module_utils import sip
from ansible_collections.sipguard.firewall.plugins.module_utils.sip_prober import SipProber

HOST = "127.0.0.1"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "sip")
TIMEOUT = 1.0
RETRIES = 1
# Scheduling noise on a shared 2-core box; the hostile peers' own threads compete for it too.
SLACK = 0.75
PEER_LIFETIME = 15.0

_BRANCH = re.compile(br"branch=([^;\r\n]+)")
_CALL_ID = re.compile(br"(?im)^call-id:[ \t]*([^\r\n]+)")


def ids(request):
    """(branch, call_id) of the prober's request, so a hostile answer can match it."""
    branch = _BRANCH.search(request)
    call_id = _CALL_ID.search(request)
    return (branch.group(1) if branch else b"x", call_id.group(1).strip() if call_id else b"x")


def head(request, status=b"200 OK"):
    """A status line, Via and Call-ID that match the request."""
    branch, call_id = ids(request)
    return (b"SIP/2.0 " + status + b"\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=" + branch +
            b"\r\nCall-ID: " + call_id + b"\r\nCSeq: 1 OPTIONS\r\n")


class Peer(threading.Thread):
    """One loopback peer; ``behave(conn_or_addr, request)`` is what makes it hostile."""

    tls = False

    def __init__(self, kind):
        super(Peer, self).__init__()
        self.daemon = True
        self.kind = kind
        self.stop = threading.Event()
        self.sent = 0
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        if kind == socket.SOCK_STREAM:
            self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.deadline = time.monotonic() + PEER_LIFETIME

    def alive(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def run(self):
        try:
            while self.alive():
                try:
                    if self.kind == socket.SOCK_DGRAM:
                        request, addr = self.sock.recvfrom(65535)
                        self.behave(addr, request)
                    else:
                        conn, _addr = self.sock.accept()
                        with conn:
                            conn.settimeout(0.5)
                            self.serve(conn)
                except socket.timeout:
                    continue
                except (OSError, ssl.SSLError):
                    continue  # the prober closed the connection: the point of most peers
        finally:
            self.sock.close()

    def serve(self, conn):
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(FIXTURES, "openssl__selfsigned-cert.pem"),
                                os.path.join(FIXTURES, "test-only__selfsigned.key"))
            conn = ctx.wrap_socket(conn, server_side=True)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536 and self.alive():
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        self.behave(conn, request)

    def send(self, conn, data):
        conn.sendall(data)
        self.sent += len(data)

    def behave(self, conn, request):
        raise NotImplementedError


class Good(Peer):
    def behave(self, conn, request):
        reply = head(request) + b"Server: good\r\nContent-Length: 0\r\n\r\n"
        if self.kind == socket.SOCK_DGRAM:
            self.sock.sendto(reply, conn)
        else:
            self.send(conn, reply)
            self.stop.wait(0.5)


class Trickle(Peer):
    """A matching status line, then an endless header one byte at a time."""

    def behave(self, conn, request):
        data = head(request) + b"X-Trickle: "
        for byte in range(len(data)):
            if not self.alive():
                return
            self.send(conn, data[byte:byte + 1])
            time.sleep(0.002)
        while self.alive():
            self.send(conn, b"a")
            time.sleep(0.002)


class Flood(Peer):
    """Sends as fast as the prober reads, without end: ``pattern`` forever after ``lead``."""

    def __init__(self, lead, pattern):
        super(Flood, self).__init__(socket.SOCK_STREAM)
        self.lead = lead
        self.pattern = pattern

    def behave(self, conn, request):
        self.send(conn, self.lead(request))
        block = self.pattern(request) * (65536 // len(self.pattern(request)) + 1)
        while self.alive():
            try:
                self.send(conn, block)
            except socket.timeout:
                continue


class TlsFlood(Flood):
    """The endless-headers flood, over TLS (the prober must drain what TLS already decrypted)."""

    tls = True


class Huge(Peer):
    """One complete, matching 200 OK whose Allow header is 260 KB, then silence."""

    def behave(self, conn, request):
        allow = b",".join(b"METHOD%d" % i for i in range(26000))
        self.send(conn, head(request) + b"Allow: " + allow + b"\r\nContent-Length: 0\r\n\r\n")
        self.stop.wait(TIMEOUT * 3)


class NoEnd(Peer):
    """Matching headers but never the blank line that ends them; then silence."""

    def behave(self, conn, request):
        self.send(conn, head(request) + b"Server: noend\r\n")
        self.stop.wait(TIMEOUT * 3)


class UdpFlood(Peer):
    """Answers the OPTIONS with a burst of large garbage datagrams from the probed port."""

    def __init__(self):
        super(UdpFlood, self).__init__(socket.SOCK_DGRAM)

    def behave(self, conn, request):  # conn: the client address for a UDP peer
        junk = head(request, b"200 OK") + b"X: " + b"\x00\xff" * 30000 + b"\r\n\r\n"
        for _count in range(400):
            if not self.alive():
                return
            try:
                self.sock.sendto(junk, conn)
                self.sent += len(junk)
            except OSError:
                time.sleep(0.001)


class UdpGarbage(Peer):
    """Answers from the probed port with bytes that are not SIP at all."""

    def __init__(self):
        super(UdpGarbage, self).__init__(socket.SOCK_DGRAM)

    def behave(self, conn, request):  # conn: the client address for a UDP peer
        self.sock.sendto(b"\x00\x01garbage\xff" * 100, conn)
        self.sent += 1300


class UdpFolding(Peer):
    """Answers with one 60 KB datagram of never-ending folding (no end of headers)."""

    def __init__(self):
        super(UdpFolding, self).__init__(socket.SOCK_DGRAM)

    def behave(self, conn, request):  # conn: the client address for a UDP peer
        data = head(request) + b"Allow: A\r\n"
        data += b"".join(b" ,M%d\r\n" % i for i in range(9000))
        self.sock.sendto(data[:60000], conn)
        self.sent += 60000


def _peers():
    """Name -> (peer, transport); the well-behaved ones come last so the hostile ones start first."""
    return [
        ("trickle", Trickle(socket.SOCK_STREAM), "tcp"),
        ("flood-headers", Flood(head, lambda req: b"X-Flood: aaaaaaaaaaaaaaaa\r\n"), "tcp"),
        ("flood-folding", Flood(lambda req: head(req) + b"Allow: A\r\n", lambda req: b" ,INVITE\r\n"), "tcp"),
        ("flood-garbage", Flood(lambda req: b"\x16\x03\x01\x00", lambda req: bytes(range(256))), "tcp"),
        ("flood-no-crlfcrlf", Flood(lambda req: head(req) + b"X-Long: ", lambda req: b"b" * 64), "tcp"),
        ("flood-provisional", Flood(lambda req: b"", lambda req: head(req, b"100 Trying") + b"Content-Length: 0\r\n\r\n"), "tcp"),
        ("huge-header", Huge(socket.SOCK_STREAM), "tcp"),
        ("no-end-of-headers", NoEnd(socket.SOCK_STREAM), "tcp"),
        ("udp-flood", UdpFlood(), "udp"),
        ("udp-folding", UdpFolding(), "udp"),
        ("udp-garbage", UdpGarbage(), "udp"),
        ("tls-flood-headers", TlsFlood(head, lambda req: b"X-Flood: aaaaaaaaaaaaaaaa\r\n"), "tls"),
        ("good-tcp", Good(socket.SOCK_STREAM), "tcp"),
        ("good-udp", Good(socket.SOCK_DGRAM), "udp"),
    ]


def test_hostile_peers_do_not_hold_up_the_run_and_every_probe_is_bounded():
    peers = _peers()
    for _name, peer, _transport in peers:
        peer.start()
    by_port = dict(((peer.port, transport), name) for name, peer, transport in peers)
    finished = {}
    prober = SipProber(ports=["%d/%s" % (peer.port, transport) for _name, peer, transport in peers],
                       timeout=TIMEOUT, retries=RETRIES, rate=1000)
    started = time.monotonic()

    def on_result(result):
        finished[by_port[(result["port"], result["transport"])]] = time.monotonic() - started

    try:
        results = prober.run([HOST], on_result=on_result)
    finally:
        for _name, peer, _transport in peers:
            peer.stop.set()
        for _name, peer, _transport in peers:
            peer.join(5)
    total = time.monotonic() - started
    named = dict((by_port[(r["port"], r["transport"])], r) for r in results)
    report = "\n".join("%-18s %5.2fs %-14s %s" % (name, finished[name], named[name]["state"], named[name]["reason"])
                       for name, _peer, _transport in peers)

    # The well-behaved targets answer at once; a hostile peer must not delay them by a timeout.
    assert named["good-tcp"]["state"] == "open" and named["good-tcp"]["reason"] == "sip-response", report
    assert named["good-udp"]["state"] == "open" and named["good-udp"]["reason"] == "sip-response", report
    assert finished["good-tcp"] < TIMEOUT, report
    assert finished["good-udp"] < TIMEOUT, report
    # Every probe ends within its timeout and retries, whatever the peer sends.
    bound = TIMEOUT * (RETRIES + 1) + SLACK
    for name, elapsed in finished.items():
        assert elapsed < bound, report
    assert total < bound, report
    # The peer answered at the TCP/UDP level: never worse than open, and the reason says why it was cut.
    for name, result in named.items():
        assert result["state"] == "open", report
    assert "cut" in named["huge-header"]["reason"], report
    assert named["huge-header"]["sip"]["status_code"] == 200, report
    for name in ("flood-headers", "flood-folding", "flood-no-crlfcrlf", "trickle", "no-end-of-headers",
                 "tls-flood-headers", "udp-flood", "udp-folding"):
        assert "cut" in named[name]["reason"], report
    assert named["flood-garbage"]["reason"] == "syn-ack; non-SIP reply", report
    assert named["udp-garbage"]["reason"] == "udp-response; not SIP", report
    assert named["flood-provisional"]["reason"] == (
        "sip-response (provisional only; reply cut: stream over %d bytes)" % sip.MAX_STREAM_BYTES), report
    assert named["tls-flood-headers"]["tls"]["subject"] == "CN=sip.lab.invalid,O=sipguard lab", report
    # Buffered bytes per probe never exceed the cap, and what is read from one peer is bounded too.
    assert 0 < prober.peak_buffered <= sip.MAX_HEAD_BYTES, report
    assert prober.peak_received <= sip.MAX_STREAM_BYTES, report
