# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the prober engine: error-queue parsing (pure) and real probes on loopback only.

The loopback servers answer with the recorded kamailio/SIPp replies, re-addressed to the
request's Via branch and Call-ID (exactly what a stateless server does).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import ssl
import struct
import threading
import time

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils.sip import ProbeOptionError, parse_response
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpecError
from ansible_collections.sipguard.firewall.plugins.module_utils import sip_prober
from ansible_collections.sipguard.firewall.plugins.module_utils.sip_prober import (
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    parse_sock_extended_err,
    probe_targets,
    resolve_target,
)

import lab_fixtures  # noqa: E402  (tests/unit on sys.path via conftest)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "sip")
TIMEOUT = 0.25


fixture = lab_fixtures.sip_message


def readdress(recorded, request):
    """The recorded reply, with its branch and Call-ID replaced by the request's."""
    old = parse_response(recorded)
    if old is None:
        return recorded  # not SIP: sent as it is
    new = parse_response(b"SIP/2.0 200 OK\r\n" + request.split(b"\r\n", 1)[1])
    return (recorded.replace(old.branch.encode(), new.branch.encode())
            .replace(old.call_id.encode(), new.call_id.encode()))


def has_ipv6_loopback():
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        sock.close()
        return True
    except OSError:
        return False


class Server(threading.Thread):
    """A loopback server thread; always stops within a few seconds."""

    def __init__(self, kind, host="127.0.0.1", reply=None, answer=True, other_port=False, wrong_branch=False,
                 tls=False):
        super(Server, self).__init__()
        self.daemon = True
        self.af = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.kind = kind
        self.reply = reply
        self.answer = answer
        self.other_port = other_port
        self.wrong_branch = wrong_branch
        self.tls = tls
        self.received = []
        self.stop = threading.Event()
        self.sock = socket.socket(self.af, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(5)
        self.sock.close()

    def run(self):
        deadline = time.time() + 10
        while not self.stop.is_set() and time.time() < deadline:
            try:
                if self.kind == socket.SOCK_DGRAM:
                    self._udp_once()
                else:
                    self._tcp_once()
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                continue

    def _udp_once(self):
        data, peer = self.sock.recvfrom(65535)
        self.received.append(data)
        if not self.answer:
            return
        reply = readdress(self.reply, data)
        if self.wrong_branch:
            reply = reply.replace(b"branch=z9hG4bK", b"branch=z9hG4bKother")
        if self.other_port:
            with socket.socket(self.af, socket.SOCK_DGRAM) as other:
                other.bind((self.sock.getsockname()[0], 0))
                self.other_source = other.getsockname()[1]
                other.sendto(reply, peer)
        else:
            self.sock.sendto(reply, peer)

    def _tcp_once(self):
        conn, _peer = self.sock.accept()
        with conn:
            conn.settimeout(1.0)
            if self.tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(os.path.join(FIXTURES, "openssl__selfsigned-cert.pem"),
                                    os.path.join(FIXTURES, "test-only__selfsigned.key"))
                conn = ctx.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.received.append(data)
            if self.answer:
                conn.sendall(readdress(self.reply, data))
                time.sleep(0.05)
            else:
                self.stop.wait(TIMEOUT * 4)


def free_port(kind, host="127.0.0.1"):
    """A port nobody listens on (bound then released)."""
    af = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(af, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def probe_one(address, port, transport, **kwargs):
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("rate", 1000)
    results = probe_targets([address], ["%d/%s" % (port, transport)], **kwargs)
    assert len(results) == 1
    return results[0]


# -- pure: the error queue --------------------------------------------------------------

def _ee(origin, icmp_type, code, sockaddr):
    return struct.pack("=IBBBBII", 111, origin, icmp_type, code, 0, 0, 0) + sockaddr


def test_parse_sock_extended_err_ipv4_offender():
    sockaddr = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("198.18.0.1"))
    parsed = parse_sock_extended_err(_ee(SO_EE_ORIGIN_ICMP, 3, 13, sockaddr), ("198.51.100.9", 5060))
    assert parsed.errno == 111
    assert (parsed.origin, parsed.type, parsed.code) == (SO_EE_ORIGIN_ICMP, 3, 13)
    assert parsed.offender == "198.18.0.1"
    assert parsed.dest == ("198.51.100.9", 5060)


def test_parse_sock_extended_err_ipv6_offender():
    sockaddr = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 0)
    parsed = parse_sock_extended_err(_ee(SO_EE_ORIGIN_ICMP6, 1, 4, sockaddr))
    assert (parsed.type, parsed.code, parsed.offender) == (1, 4, "2001:db8::1")


@pytest.mark.parametrize("data", [None, b"", b"\x00" * 15])
def test_parse_sock_extended_err_short(data):
    assert parse_sock_extended_err(data) is None


def test_parse_sock_extended_err_without_offender():
    parsed = parse_sock_extended_err(_ee(1, 0, 0, b"\x00" * 16))
    assert parsed.offender is None


# -- loopback probes -------------------------------------------------------------------

def test_udp_open_with_recorded_kamailio_reply():
    with Server(socket.SOCK_DGRAM, reply=fixture("kamailio-5.6__options-200-allow.sip")) as server:
        result = probe_one("127.0.0.1", server.port, "udp")
    assert result["state"] == "open"
    assert result["reason"] == "sip-response"
    assert result["family"] == "ipv4" and result["transport"] == "udp" and result["port"] == server.port
    assert result["sip"]["status_code"] == 200
    assert result["sip"]["server"] == "kamailio (5.6.3 (x86_64/linux))"
    assert result["sip"]["allow"] == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY"]
    assert result["rtt_ms"] is not None and result["tls"] is None
    request = server.received[0].decode()
    assert "User-Agent: sipguard-firewall/" in request
    assert "Via: SIP/2.0/UDP 127.0.0.1:" in request


def test_udp_answer_from_another_source_port_is_accepted():
    with Server(socket.SOCK_DGRAM, reply=fixture("sipp-uas__options-200.sip"), other_port=True) as server:
        result = probe_one("127.0.0.1", server.port, "udp")
    assert result["state"] == "open"
    assert result["reason"] == "sip-response from 127.0.0.1:%d" % server.other_source
    assert result["sip"]["supported"] == ["timer"]


def test_udp_closed_port_is_port_unreach_from_target():
    result = probe_one("127.0.0.1", free_port(socket.SOCK_DGRAM), "udp", retries=2)
    assert result["state"] == "closed"
    assert result["reason"] == "port-unreach from target"


def test_udp_silence_is_open_filtered_after_same_branch_retries():
    with Server(socket.SOCK_DGRAM, answer=False) as server:
        started = time.time()
        result = probe_one("127.0.0.1", server.port, "udp", retries=2, timeout=0.1)
        elapsed = time.time() - started
    assert result["state"] == "open|filtered"
    assert result["reason"] == "no-response"
    assert result["sip"] is None and result["rtt_ms"] is None
    assert len(server.received) == 3
    assert len(set(server.received)) == 1, "retransmissions must repeat the same branch and Call-ID"
    assert 0.25 <= elapsed < 2.0


def test_udp_reply_for_another_transaction_is_ignored():
    with Server(socket.SOCK_DGRAM, reply=fixture("kamailio-5.6__options-200.sip"), wrong_branch=True) as server:
        result = probe_one("127.0.0.1", server.port, "udp")
    assert result["state"] == "open|filtered"


def test_udp_answer_that_is_not_sip_from_the_probed_port_is_open():
    # Was open|filtered: the datagram was dropped as a stray, yet only a bound port answers.
    with Server(socket.SOCK_DGRAM, reply=b"\x00\x01 not sip \xff") as server:
        result = probe_one("127.0.0.1", server.port, "udp", retries=2)
    assert result["state"] == "open"
    assert result["reason"] == "udp-response; not SIP"
    assert result["sip"] is None and result["rtt_ms"] is not None
    assert len(server.received) == 1, "the port answered: no retransmission needed"


def test_udp_answer_that_is_not_sip_from_another_port_is_ignored():
    with Server(socket.SOCK_DGRAM, reply=b"\x00\x01 not sip \xff", other_port=True) as server:
        result = probe_one("127.0.0.1", server.port, "udp")
    assert result["state"] == "open|filtered"


def test_udp_answer_cut_by_the_parser_is_open_and_says_why():
    big = fixture("kamailio-5.6__options-200-allow.sip").replace(
        b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 20000 + b"\r\n\r\n")
    with Server(socket.SOCK_DGRAM, reply=big) as server:
        result = probe_one("127.0.0.1", server.port, "udp")
    assert result["state"] == "open"
    assert result["reason"] == "sip-response (cut: x-pad header over 8192 bytes)"
    assert result["sip"]["allow"] == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY"]


def _answer_once(reply):
    """A UDP socket on loopback that answers the first datagram with ``reply`` (bytes or a function
    of the request); the thread ends after one answer or 3 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3)

    def serve():
        try:
            request, peer = sock.recvfrom(65535)
            sock.sendto(reply(request) if callable(reply) else reply, peer)
        except OSError:
            pass
        finally:
            sock.close()

    thread = threading.Thread(target=serve)
    thread.daemon = True
    port = sock.getsockname()[1]
    thread.start()
    return port, thread


def test_udp_answer_cut_before_its_via_and_call_id_is_open():
    def reply(request):
        # Our own Via and Call-ID, but after more headers than the parser reads.
        ids = request.split(b"\r\n", 1)[1]
        return b"SIP/2.0 200 OK\r\n" + b"X-Pad: y\r\n" * 300 + ids
    port, thread = _answer_once(reply)
    result = probe_one("127.0.0.1", port, "udp", retries=2)
    thread.join(5)
    assert result["state"] == "open"
    assert result["reason"] == "udp-response; reply cut: over 256 headers"
    assert result["sip"] is None


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")
def test_udp_ipv6_open_and_closed():
    with Server(socket.SOCK_DGRAM, host="::1", reply=fixture("kamailio-5.6__options-200-ipv6.sip")) as server:
        closed = free_port(socket.SOCK_DGRAM, "::1")
        results = probe_targets(["::1"], ["%d/udp" % server.port, "%d/udp" % closed], timeout=TIMEOUT, retries=0)
    assert [(r["family"], r["state"], r["reason"]) for r in results] == [
        ("ipv6", "open", "sip-response"),
        ("ipv6", "closed", "port-unreach from target"),
    ]
    assert "Via: SIP/2.0/UDP [::1]:" in server.received[0].decode()


def test_tcp_open_with_recorded_reply():
    with Server(socket.SOCK_STREAM, reply=fixture("kamailio-5.6__options-200-tcp.sip")) as server:
        result = probe_one("127.0.0.1", server.port, "tcp")
    assert result["state"] == "open"
    assert result["reason"] == "sip-response"
    assert result["sip"]["status_code"] == 200
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in server.received[0].decode()


def test_tcp_accepting_but_silent_is_open_without_sip():
    with Server(socket.SOCK_STREAM, answer=False) as server:
        result = probe_one("127.0.0.1", server.port, "tcp")
    assert result["state"] == "open"
    assert result["reason"] == "syn-ack; no SIP response within %gs" % TIMEOUT
    assert result["sip"] is None


def test_tcp_non_sip_reply_is_open_without_sip():
    with Server(socket.SOCK_STREAM, reply=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n") as server:
        result = probe_one("127.0.0.1", server.port, "tcp")
    assert result["state"] == "open"
    assert result["reason"] in ("syn-ack; non-SIP reply", "syn-ack; closed by peer without a SIP response")


def test_tcp_answer_without_end_of_headers_then_close_is_a_cut_sip_response():
    reply = fixture("kamailio-5.6__options-200-tcp.sip")
    with Server(socket.SOCK_STREAM, reply=reply[:reply.index(b"\r\n\r\n") + 2]) as server:
        result = probe_one("127.0.0.1", server.port, "tcp")
    assert result["state"] == "open"
    assert result["reason"] == "sip-response (cut: closed by peer)"
    assert result["sip"]["status_code"] == 200


def test_tcp_closed_port_is_conn_refused():
    result = probe_one("127.0.0.1", free_port(socket.SOCK_STREAM), "tcp")
    assert result["state"] == "closed"
    assert result["reason"] == "conn-refused"


def test_tls_open_reports_certificate_without_trusting_it():
    with Server(socket.SOCK_STREAM, reply=fixture("kamailio-5.6__options-200-tcp.sip"), tls=True) as server:
        result = probe_one("127.0.0.1", server.port, "tls", timeout=1.0)
    assert result["state"] == "open"
    assert result["reason"] == "sip-response over tls"
    assert result["sip"]["status_code"] == 200
    tls = result["tls"]
    assert tls["subject"] == "CN=sip.lab.invalid,O=sipguard lab"
    assert tls["not_after"] == "2036-11-22T14:34:48Z"
    assert tls["sha256"].startswith("FE:FD:68:0C")
    assert tls["version"].startswith("TLS")
    assert tls["cipher"]
    assert "Via: SIP/2.0/TLS 127.0.0.1:" in server.received[0].decode()


def test_tls_on_a_plain_tcp_sip_port_is_open_with_failed_handshake():
    with Server(socket.SOCK_STREAM, answer=False) as server:
        result = probe_one("127.0.0.1", server.port, "tls")
    assert result["state"] == "open"
    assert result["reason"].startswith("syn-ack; tls handshake")
    assert result["tls"] is None


def test_many_targets_keep_input_order_and_respect_concurrency():
    # 127.0.0.0/8 is all loopback on Linux: each address is a distinct closed target.
    targets = ["127.0.9.%d" % i for i in range(1, 41)]
    results = probe_targets(targets, ["5060/udp", "5060/tcp"], timeout=TIMEOUT, retries=0, rate=5000,
                            max_concurrency=8)
    assert [(r["target"], r["transport"]) for r in results] == [
        (t, transport) for t in targets for transport in ("udp", "tcp")]
    assert {r["state"] for r in results} == {"closed"}


def test_rate_cap_spaces_probes():
    started = time.time()
    results = probe_targets(["127.0.9.%d" % i for i in range(1, 11)], ["5060/tcp"], timeout=TIMEOUT, rate=20)
    elapsed = time.time() - started
    assert len(results) == 10
    assert elapsed >= 9 / 20.0 - 0.05, "10 probes at 20/s need about 0.45 s"


def test_unresolvable_name_is_a_result(monkeypatch):
    # No DNS traffic in unit tests: the resolver failure is simulated.
    def fail(*_args, **_kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(sip_prober.socket, "getaddrinfo", fail)
    results = probe_targets(["no-such-host.invalid"], ["5060/udp", "5061/tls"], timeout=TIMEOUT)
    assert [(r["state"], r["address"], r["transport"]) for r in results] == [
        ("unresolved", None, "udp"), ("unresolved", None, "tls")]
    assert results[0]["reason"] == "resolver: [Errno -2] Name or service not known"


def test_family_filter_makes_other_family_literal_unresolved():
    results = probe_targets(["::1"], ["5060/udp"], timeout=TIMEOUT, family="ipv4")
    assert results[0]["state"] == "unresolved"
    assert "family=ipv4" in results[0]["reason"]


def test_resolve_target_keeps_each_address():
    assert resolve_target("127.0.0.1") == [("ipv4", ("127.0.0.1", 0))]
    assert resolve_target("[::1]", "ipv6")[0][0] == "ipv6"


def test_source_address_is_used_for_binding_and_via():
    with Server(socket.SOCK_DGRAM, reply=fixture("kamailio-5.6__options-200.sip")) as server:
        result = probe_one("127.0.0.1", server.port, "udp", source="127.0.0.1")
    assert result["state"] == "open"
    assert "Via: SIP/2.0/UDP 127.0.0.1:" in server.received[0].decode()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"ports": ["5060/udp", "x/sctp"]}, PortSpecError, "ports[1]: 'x/sctp' has transport 'sctp'; use udp, tcp or tls"),
        ({"rate": -1}, ProbeOptionError, "rate: -1 must be > 0 probes per second, e.g. 200"),
    ],
)
def test_bad_options_raise_before_probing(kwargs, error, message):
    with pytest.raises(error) as err:
        probe_targets(["127.0.0.1"], **kwargs)
    assert str(err.value) == message


def test_on_result_callback_sees_every_result():
    seen = []
    results = probe_targets(["127.0.9.1", "127.0.9.2"], ["5060/tcp"], timeout=TIMEOUT, on_result=seen.append)
    assert sorted(r["target"] for r in seen) == [r["target"] for r in results]
