# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The concurrent SIP prober: sockets, the ICMP error queue, rate cap, retries.

One thread, one ``selectors`` loop, one socket per probe in flight (at most
``max_concurrency``). Unprivileged: ICMP errors are read from the socket error queue
(``IP_RECVERR``/``IPV6_RECVERR`` + ``recvmsg(MSG_ERRQUEUE)``), never from raw sockets.
Linux only for the ICMP detail (other systems still get open / open|filtered / TCP states).
Runs on target Python 3.8+, standard library only.

Use from a plain script::

    import sys; sys.path.insert(0, '/path/containing/ansible_collections')
    from ansible_collections.sipguard.firewall.plugins.module_utils.sip_prober import probe_targets
    results = probe_targets(['127.0.0.1', 'sip.example.org'], ports=['5060/udp', '5061/tls'], timeout=1.0)

As a command: ``benchmarks/probe_vs_nmap/run.py probe 127.0.0.1 --ports 5060/udp --timeout 0.5``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import heapq
import selectors
import socket
import ssl
import struct
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.sip import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROBE_PORTS,
    DEFAULT_RATE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_STREAM_BYTES,
    USER_AGENT,
    StreamFramer,
    build_options,
    check_probe_options,
    check_targets,
    classify_connect_error,
    classify_icmp,
    format_cut,
    looks_like_sip,
    new_dialog_ids,
    parse_certificate_der,
    parse_probe_ports,
    parse_response,
    response_matches,
    sip_summary,
    uri_host,
)

# Linux values (include/uapi/linux/in.h, in6.h, socket.h, errqueue.h); Python exposes
# only some of them, depending on version.
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_NONE = 0
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

# struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info, ee_data; }
_SOCK_EE = struct.Struct("=IBBBBII")

IcmpError = collections.namedtuple("IcmpError", ["errno", "origin", "type", "code", "offender", "dest"])

_RECV_CHUNK = 65535
# Bounded loops: never drain a socket forever if a peer floods it. One event handles at most
# this many reads and this many bytes, so a flooding peer gets its turn like every other
# probe and cannot hold up the loop (sockets are level-triggered: the rest waits for the next turn).
_MAX_READS_PER_EVENT = 64
_MAX_BYTES_PER_EVENT = 65536


class ProbeEngineError(RuntimeError):
    """The engine cannot run at all (e.g. cannot create sockets); the message says why."""


# ---------------------------------------------------------------------------
# IP_RECVERR
# ---------------------------------------------------------------------------

def _parse_sockaddr(raw):
    """Address string from a raw ``struct sockaddr_in``/``sockaddr_in6`` (None for AF_UNSPEC)."""
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, bytes(raw[4:8]))
    if family == socket.AF_INET6 and len(raw) >= 24:
        address = socket.inet_ntop(socket.AF_INET6, bytes(raw[8:24]))
        if address.startswith("::ffff:") and "." in address:
            address = address[7:]
        return address
    return None


def parse_sock_extended_err(data, dest=None):
    """Decode the cmsg data of an IP_RECVERR/IPV6_RECVERR message into an IcmpError.

    The kernel appends the offender (SO_EE_OFFENDER: the address that sent the ICMP
    error) right after the 16-byte ``struct sock_extended_err``. Returns None when the
    data is too short.
    """
    if data is None or len(data) < _SOCK_EE.size:
        return None
    ee_errno, origin, icmp_type, icmp_code, _pad, _info, _data = _SOCK_EE.unpack_from(bytes(data))
    offender = _parse_sockaddr(bytes(data[_SOCK_EE.size:]))
    return IcmpError(ee_errno, origin, icmp_type, icmp_code, offender, dest)


def read_error_queue(sock, limit=16):
    """Drain (at most ``limit``) queued errors from ``sock``; return a list of IcmpError.

    ``recvmsg(MSG_ERRQUEUE)`` never blocks; msg_name is the original destination of
    the datagram that triggered the error.
    """
    errors = []
    for _attempt in range(limit):
        try:
            _data, ancdata, _flags, dest = sock.recvmsg(512, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, kind, cdata in ancdata:
            if (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                parsed = parse_sock_extended_err(cdata, dest)
                if parsed is not None:
                    errors.append(parsed)
    return errors


def _first_icmp(errors):
    for err in errors:
        if err.origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            return err
    return None


def _enable_recverr(sock, family):
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    except OSError:
        # Not Linux: ICMP detail is lost, probes still work (UDP then reports open|filtered).
        pass


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

_FAMILY_NAMES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
_FAMILY_CODES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


def resolve_target(target, family="any"):
    """Resolve a hostname or IP literal to ``[(family_name, sockaddr), ...]``.

    Every A and AAAA address is its own entry (dual-stack hosts are probed on both).
    Raises socket.gaierror (an unresolvable name is a result, not a failure).
    """
    host = str(target).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    infos = socket.getaddrinfo(host, 0, _FAMILY_CODES[family], socket.SOCK_DGRAM)
    seen = []
    out = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam not in _FAMILY_NAMES or sockaddr[0] in seen:
            continue
        seen.append(sockaddr[0])
        out.append((_FAMILY_NAMES[fam], sockaddr))
    return out


def _result(target, address, family, spec, state, reason, rtt_ms=None, sip=None, tls=None):
    return {
        "target": target,
        "address": address,
        "family": family,
        "port": spec.port,
        "transport": spec.transport,
        "state": state,
        "reason": reason,
        "rtt_ms": None if rtt_ms is None else round(rtt_ms, 3),
        "sip": sip,
        "tls": tls,
    }


# ---------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------

class _Probe:
    """One target address + port + transport in flight; owns one socket."""

    def __init__(self, engine, index, target, family, sockaddr, spec):
        self.engine = engine
        self.index = index
        self.target = target
        self.family = family
        self.af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
        self.sockaddr = sockaddr
        self.address = sockaddr[0]
        self.spec = spec
        self.sock = None
        self.deadline = None
        self.done = False
        self.sent_at = None
        self.branch, self.call_id, self.tag = new_dialog_ids()

    def dest(self):
        if self.af == socket.AF_INET6:
            return (self.address, self.spec.port, 0, self.sockaddr[3] if len(self.sockaddr) > 3 else 0)
        return (self.address, self.spec.port)

    def _new_socket(self, kind):
        sock = socket.socket(self.af, kind)
        try:
            sock.setblocking(False)
            _enable_recverr(sock, self.af)
            if self.engine.source:
                sock.bind((self.engine.source, 0))
        except Exception:
            sock.close()
            raise
        return sock

    def finish(self, state, reason, rtt_ms=None, sip=None, tls=None):
        if self.done:
            return
        self.done = True
        self.engine.detach(self)
        self.engine.store(self.index, _result(self.target, self.address, self.family, self.spec,
                                              state, reason, rtt_ms, sip, tls))

    def elapsed_ms(self, now):
        return None if self.sent_at is None else (now - self.sent_at) * 1000.0


class _UdpProbe(_Probe):
    """OPTIONS over UDP from an unconnected socket, so an answer from another source
    port (some servers reply from their main socket) is still received; the reply is
    matched by Via branch and Call-ID. The ICMP error queue tells closed from filtered."""

    def start(self, now):
        self.attempts = 0
        self.provisional = None
        # (why, rtt) of the first datagram from the probed address and port that was not SIP or
        # was cut before it could be matched: the port answered, so it is open whatever follows.
        self.unmatched = None
        self.parsed = 0
        self.sock = self._new_socket(socket.SOCK_DGRAM)
        if self.engine.source:
            local_ip = self.engine.source
        else:
            local_ip = self.engine.local_address_for(self.af, self.dest())
        local_port = self.sock.getsockname()[1]
        self.payload = build_options(self.address, self.spec.port, "udp", local_ip, local_port,
                                     self.branch, self.call_id, self.tag, self.engine.user_agent)
        self.engine.register(self, selectors.EVENT_READ)
        self.transmit(now)

    def transmit(self, now):
        """Send (or re-send: same branch and Call-ID, RFC 3261 17.1.2.1) the request."""
        for _attempt in range(3):
            try:
                self.sock.sendto(self.payload, self.dest())
                break
            except (BlockingIOError, InterruptedError):
                break  # socket buffer full: the retry timer covers it
            except OSError as exc:
                # A pending ICMP error (sk_err) fails the next send; its detail is queued.
                icmp = _first_icmp(read_error_queue(self.sock))
                if icmp is not None:
                    self._finish_icmp(icmp, now)
                    return
                if exc.errno in (errno.ECONNREFUSED,):
                    continue
                state, reason = classify_connect_error(exc.errno, None, self.address, self.family)
                self.finish(state, "%s (local sendto: %s)" % (reason, errno.errorcode.get(exc.errno, exc.errno)))
                return
        self.attempts += 1
        self.sent_at = now
        self.engine.set_deadline(self, now + self.engine.timeout)

    def _finish_icmp(self, icmp, now):
        state, reason = classify_icmp(self.family, icmp.type, icmp.code, icmp.offender, self.address)
        self.finish(state, reason, self.elapsed_ms(now))

    def on_event(self, mask, now):
        icmp = _first_icmp(read_error_queue(self.sock))
        if icmp is not None and (icmp.dest is None or icmp.dest[1] == self.spec.port):
            self._finish_icmp(icmp, now)
            return
        budget = _MAX_BYTES_PER_EVENT
        for _attempt in range(_MAX_READS_PER_EVENT):
            if budget <= 0:
                return
            try:
                data, peer = self.sock.recvfrom(_RECV_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # sk_err raised once by recv; the detail (if any) is in the error queue.
                icmp = _first_icmp(read_error_queue(self.sock))
                if icmp is not None:
                    self._finish_icmp(icmp, now)
                    return
                continue
            from_target = peer[0] == self.address and peer[1] == self.spec.port
            if self.parsed >= MAX_STREAM_BYTES:
                # A flood: what is parsed per probe is bounded like a stream's; the rest is dropped.
                if from_target and self.unmatched is None:
                    self.unmatched = ("over %d bytes of replies" % MAX_STREAM_BYTES, self.elapsed_ms(now))
                continue
            self.parsed += len(data)
            budget -= len(data)
            response = parse_response(data)
            if not response_matches(response, self.branch, self.call_id):
                # A stray datagram or someone else's transaction is ignored, but an answer from the
                # probed port that is not SIP, or was cut before its Via/Call-ID, still proves it open.
                lost_ids = response is not None and response.cut and (response.branch is None or response.call_id is None)
                if from_target and self.unmatched is None and (response is None or lost_ids):
                    why = "not SIP" if response is None else "reply cut: %s" % format_cut(response.cut)
                    self.unmatched = (why, self.elapsed_ms(now))
                continue
            reason = "sip-response"
            if not from_target:
                reason = "sip-response from %s:%d" % (uri_host(peer[0]), peer[1])
            if response.cut:
                reason += " (cut: %s)" % format_cut(response.cut)
            if response.status_code < 200:
                # Provisional: the port is open, but keep waiting for the final answer.
                self.provisional = (reason, self.elapsed_ms(now), sip_summary(response))
                continue
            self.finish("open", reason, self.elapsed_ms(now), sip_summary(response))
            return

    def on_timeout(self, now):
        if self.provisional is not None:
            reason, rtt, sip = self.provisional
            self.finish("open", reason + " (provisional only)", rtt, sip)
        elif self.unmatched is not None:
            why, rtt = self.unmatched
            self.finish("open", "udp-response; %s" % why, rtt)
        elif self.attempts <= self.engine.retries:
            self.engine.queue_retransmit(self)
        else:
            self.finish("open|filtered", "no-response")


class _StreamProbe(_Probe):
    """TCP connect (then TLS handshake for tls), then OPTIONS framed by Content-Length.

    With IP_RECVERR set, an ICMP error that aborts the SYN is also queued on the socket,
    so filtered-by-REJECT names the ICMP type and the router/firewall that sent it.
    """

    def start(self, now):
        self.phase = "connect"
        self.tls = None
        self.framer = StreamFramer()
        self.outbuf = b""
        self.connect_rtt = None
        self.provisional = None
        self.sock = self._new_socket(socket.SOCK_STREAM)
        self.sent_at = now
        code = self.sock.connect_ex(self.dest())
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY):
            self.engine.register(self, selectors.EVENT_WRITE)
            self._connect_failed(code, now)
            return
        self.engine.register(self, selectors.EVENT_WRITE)
        self.engine.set_deadline(self, now + self.engine.timeout)

    def _connect_failed(self, code, now):
        icmp = _first_icmp(read_error_queue(self.sock))
        detail = None if icmp is None else (icmp.type, icmp.code, icmp.offender)
        state, reason = classify_connect_error(code, detail, self.address, self.family)
        self.finish(state, reason, self.elapsed_ms(now))

    def _label(self):
        return "tls" if self.spec.transport == "tls" else "syn-ack"

    def on_event(self, mask, now):
        try:
            if self.phase == "connect":
                self._on_connect(now)
            elif self.phase == "handshake":
                self._on_handshake(now)
            elif self.phase == "send":
                self._on_send(now)
            else:
                self._on_receive(now)
        except ssl.SSLWantReadError:
            self.engine.modify(self, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self.engine.modify(self, selectors.EVENT_WRITE)
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError) as exc:
            self._stream_error(exc, now)

    def _stream_error(self, exc, now):
        if self.phase == "handshake":
            self.finish("open", "syn-ack; tls handshake failed: %s" % _short_error(exc), self.connect_rtt)
        else:
            self._finish_no_sip(now, "connection error after connect: %s" % _short_error(exc))

    def _on_connect(self, now):
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(code, now)
            return
        self.connect_rtt = self.elapsed_ms(now)
        local_ip, local_port = self.sock.getsockname()[:2]
        if self.spec.transport == "tls":
            self.engine.unregister(self)
            # SNI only for names: an IP literal in SNI is not allowed (RFC 6066 3).
            server_name = None if self.target == self.address or ":" in self.target else self.target
            try:
                self.sock = self.engine.tls_context().wrap_socket(
                    self.sock, server_hostname=server_name, do_handshake_on_connect=False)
            finally:
                self.engine.register(self, selectors.EVENT_WRITE)
            self.phase = "handshake"
            self.engine.set_deadline(self, now + self.engine.timeout)
            self._local = (local_ip, local_port)
            self._on_handshake(now)
            return
        self._local = (local_ip, local_port)
        self._start_sending(now)

    def _on_handshake(self, now):
        self.sock.do_handshake()
        der = self.sock.getpeercert(binary_form=True)
        info = parse_certificate_der(der)
        cipher = self.sock.cipher()
        info["version"] = self.sock.version()
        info["cipher"] = cipher[0] if cipher else None
        self.tls = info
        self._start_sending(now)

    def _start_sending(self, now):
        local_ip, local_port = self._local
        self.outbuf = build_options(self.address, self.spec.port, self.spec.transport, local_ip, local_port,
                                    self.branch, self.call_id, self.tag, self.engine.user_agent)
        self.phase = "send"
        self.sent_at = now
        self.engine.modify(self, selectors.EVENT_WRITE)
        self.engine.set_deadline(self, now + self.engine.timeout)
        self._on_send(now)

    def _on_send(self, now):
        while self.outbuf:
            sent = self.sock.send(self.outbuf)
            if not sent:
                return
            self.outbuf = self.outbuf[sent:]
        self.phase = "receive"
        self.engine.modify(self, selectors.EVENT_READ)

    def _on_receive(self, now):
        framer = self.framer
        budget = _MAX_BYTES_PER_EVENT
        for _attempt in range(_MAX_READS_PER_EVENT):
            room = framer.room()
            # TLS may hold decrypted bytes the socket no longer signals: read those before stopping.
            if not room or budget <= 0 and not (self.tls is not None and self.sock.pending()):
                break
            try:
                chunk = self.sock.recv(min(room, _RECV_CHUNK))
            except ssl.SSLZeroReturnError:
                chunk = b""  # TLS close_notify: an orderly end of stream
            except ssl.SSLWantReadError:
                break
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                if framer.buffer:
                    self._give_up(now, "closed by peer")
                else:
                    self._finish_no_sip(now, "closed by peer without a SIP response")
                return
            budget -= len(chunk)
            heads = framer.feed(chunk)
            self.engine.account(framer)
            self._consume(heads, now)
            if self.done:
                return
        if framer.cut is not None:
            self._give_up(now, framer.cut)

    def _consume(self, heads, now):
        for head in heads:
            if not looks_like_sip(head):
                self._finish_no_sip(now, "non-SIP reply")
                return
            self._answer(parse_response(head), now)
            if self.done:
                return
        if self.framer.buffer and not looks_like_sip(self.framer.buffer):
            self._finish_no_sip(now, "non-SIP reply")

    def _answer(self, response, now):
        """Take a parsed response: the final answer ends the probe, a provisional one is kept."""
        if response is None or not response_matches(response, self.branch, self.call_id):
            return
        reason = "sip-response" if self.spec.transport == "tcp" else "sip-response over tls"
        if response.cut:
            reason += " (cut: %s)" % format_cut(response.cut)
        if response.status_code < 200:
            self.provisional = (reason, self.elapsed_ms(now), sip_summary(response))
            return
        self.finish("open", reason, self.elapsed_ms(now), sip_summary(response), self.tls)

    def _give_up(self, now, why):
        """Stop reading and decide with what arrived: the complete lines of an unfinished head
        still count when they hold our answer (the cut is named in the reason)."""
        partial = self.framer.partial()
        if partial and looks_like_sip(partial):
            self._answer(parse_response(partial, why), now)
        if not self.done:
            self._finish_no_sip(now, "reply cut: %s" % why, cut=True)

    def _finish_no_sip(self, now, why, cut=False):
        if self.provisional is not None:
            reason, rtt, sip = self.provisional
            self.finish("open", reason + " (provisional only%s)" % ("; %s" % why if cut else ""), rtt, sip, self.tls)
            return
        self.finish("open", "%s; %s" % (self._label(), why), self.connect_rtt, None, self.tls)

    def on_timeout(self, now):
        if self.phase == "connect":
            self.finish("filtered", "no-response")
        elif self.phase == "handshake":
            self.finish("open", "syn-ack; tls handshake timed out", self.connect_rtt)
        elif self.framer.buffer:
            self._give_up(now, "no end of headers within %gs" % self.engine.timeout)
        else:
            self._finish_no_sip(now, "no SIP response within %gs" % self.engine.timeout)


def _short_error(exc):
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        return str(exc.reason)
    if getattr(exc, "errno", None) in errno.errorcode:
        return errno.errorcode[exc.errno]
    return exc.__class__.__name__


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------

class SipProber:
    """Probe targets concurrently: ``SipProber(...).run(targets)`` -> list of result dicts.

    Gentle by construction: at most ``rate`` transmissions (first sends, UDP retransmits
    and TCP connects) per second with no bursts beyond a few packets, at most
    ``max_concurrency`` sockets open, UDP retransmitted ``retries`` times.
    """

    def __init__(self, ports=DEFAULT_PROBE_PORTS, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES,
                 rate=DEFAULT_RATE, max_concurrency=DEFAULT_MAX_CONCURRENCY, source=None, family="any",
                 user_agent=USER_AGENT, clock=time.monotonic):
        self.specs = parse_probe_ports(ports)
        (self.timeout, self.retries, self.rate, self.max_concurrency,
         self.source, self.family) = check_probe_options(timeout, retries, rate, max_concurrency, source, family)
        if self.source and self.family == "any":
            self.family = "ipv6" if ":" in self.source else "ipv4"
        self.user_agent = user_agent
        self.clock = clock
        self._interval = 1.0 / self.rate
        # Catch-up allowance for loop latency: a few packets at high rates, none at low rates.
        self._burst = min(self._interval * 4, 0.005)
        self._next_send = 0.0
        self._selector = None
        self._heap = []
        self._seq = 0
        self._active = 0
        self._retransmits = collections.deque()
        self._results = []
        self._tls_context = None
        self._route_cache = {}
        # The most any one stream probe buffered at once and read in all (bytes): bounded by
        # MAX_HEAD_BYTES and MAX_STREAM_BYTES whatever the peers send.
        self.peak_buffered = 0
        self.peak_received = 0

    # -- callbacks used by the probes -------------------------------------

    def register(self, probe, events):
        self._selector.register(probe.sock, events, probe)

    def unregister(self, probe):
        try:
            self._selector.unregister(probe.sock)
        except (KeyError, ValueError):
            pass

    def modify(self, probe, events):
        key = self._selector.get_key(probe.sock)
        if key.events != events:
            self._selector.modify(probe.sock, events, probe)

    def detach(self, probe):
        if probe.sock is not None:
            self.unregister(probe)
            try:
                probe.sock.close()
            except OSError:
                pass
            probe.sock = None
        self._active -= 1

    def store(self, index, result):
        self._results[index] = result

    def account(self, framer):
        self.peak_buffered = max(self.peak_buffered, framer.peak)
        self.peak_received = max(self.peak_received, framer.received)

    def set_deadline(self, probe, when):
        probe.deadline = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, probe))

    def queue_retransmit(self, probe):
        probe.deadline = None
        self._retransmits.append(probe)

    def tls_context(self):
        if self._tls_context is None:
            # Probing, not trusting: accept any certificate and report it instead.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._tls_context = ctx
        return self._tls_context

    def local_address_for(self, af, dest):
        """The local IP the kernel would use towards ``dest`` (for Via/Contact).

        A connect() on a scratch UDP socket performs the route lookup without sending.
        """
        key = (af, dest[0])
        if key in self._route_cache:
            return self._route_cache[key]
        scratch = socket.socket(af, socket.SOCK_DGRAM)
        try:
            scratch.connect(dest)
            local = scratch.getsockname()[0]
        except OSError:
            local = "::" if af == socket.AF_INET6 else "0.0.0.0"
        finally:
            scratch.close()
        if len(self._route_cache) > 1024:
            self._route_cache.clear()
        self._route_cache[key] = local
        return local

    # -- planning -----------------------------------------------------------

    def _plan(self, targets):
        """Yield probes (or finished 'unresolved' results) lazily, in result order."""
        for target in targets:
            target = str(target).strip()
            try:
                addresses = resolve_target(target, self.family)
                error = None if addresses else "no address"
            except (socket.gaierror, UnicodeError, ValueError) as exc:
                addresses, error = [], str(exc)
            if not addresses:
                if self.family != "any":
                    error = "%s (family=%s)" % (error, self.family)
                for spec in self.specs:
                    yield _result(target, None, None, spec, "unresolved", "resolver: %s" % error)
                continue
            for family, sockaddr in addresses:
                for spec in self.specs:
                    yield (target, family, sockaddr, spec)

    def _take_token(self, now):
        if now + 1e-9 < self._next_send:
            return False
        self._next_send = max(self._next_send, now - self._burst) + self._interval
        return True

    def _raise_fd_limit(self):
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = self.max_concurrency + 64
            if soft != resource.RLIM_INFINITY and soft < want:
                new = want if hard == resource.RLIM_INFINITY else min(want, hard)
                if new > soft:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                    soft = new
            if soft != resource.RLIM_INFINITY:
                return max(1, min(self.max_concurrency, soft - 64))
        except (ImportError, ValueError, OSError):
            pass
        return self.max_concurrency

    # -- the loop -------------------------------------------------------------

    def run(self, targets, on_result=None):
        """Probe every target; return results in target/address/port order.

        ``on_result`` (optional) is called with each finished result dict as it completes.
        """
        targets = check_targets(targets)
        concurrency = self._raise_fd_limit()
        self._selector = selectors.DefaultSelector()
        self._results = []
        self._heap = []
        self._active = 0
        if on_result is not None:
            results = self._results

            def store(index, result):
                results[index] = result
                on_result(result)

            self.store = store
        plan = self._plan(targets)
        pending = None
        exhausted = False
        try:
            while True:
                now = self.clock()
                # Start work: retransmits first (they were promised), then new probes.
                while self._retransmits and self._take_token(now):
                    probe = self._retransmits.popleft()
                    if not probe.done:
                        probe.transmit(now)
                while not self._retransmits and not exhausted and self._active < concurrency:
                    if pending is None:
                        pending = next(plan, None)
                        if pending is None:
                            exhausted = True
                            break
                        if isinstance(pending, dict):
                            self._results.append(None)
                            self.store(len(self._results) - 1, pending)
                            pending = None
                            continue
                    if not self._take_token(self.clock()):
                        break
                    self._start(pending, self.clock())
                    pending = None
                if exhausted and not self._active:
                    break
                # Wait for I/O until the next deadline or the next send slot.
                now = self.clock()
                wait = 1.0
                while self._heap and (self._heap[0][2].done or self._heap[0][2].deadline != self._heap[0][0]):
                    heapq.heappop(self._heap)
                if self._heap:
                    wait = min(wait, self._heap[0][0] - now)
                if self._retransmits or (not exhausted and self._active < concurrency):
                    wait = min(wait, self._next_send - now)
                events = self._selector.select(max(0.0, wait)) if self._active else []
                if not self._active and wait > 0:
                    time.sleep(min(wait, 1.0))
                now = self.clock()
                # I/O before timers: an answer already queued must win over its timeout.
                for key, mask in events:
                    probe = key.data
                    if not probe.done:
                        probe.on_event(mask, now)
                now = self.clock()
                while self._heap and self._heap[0][0] <= now:
                    when, _seq, probe = heapq.heappop(self._heap)
                    if probe.done or probe.deadline != when:
                        continue
                    probe.on_timeout(now)
        finally:
            self._selector.close()
            for _when, _seq, probe in self._heap:
                if probe.sock is not None:
                    probe.sock.close()
        return self._results

    def _start(self, item, now):
        target, family, sockaddr, spec = item
        self._results.append(None)
        index = len(self._results) - 1
        cls = _UdpProbe if spec.transport == "udp" else _StreamProbe
        probe = cls(self, index, target, family, sockaddr, spec)
        self._active += 1
        try:
            probe.start(now)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise ProbeEngineError(
                    "out of file descriptors (%s) with max_concurrency=%d; lower max_concurrency or raise "
                    "the open-files limit (ulimit -n)" % (errno.errorcode[exc.errno], self.max_concurrency))
            if exc.errno == errno.EADDRNOTAVAIL and self.source:
                raise ProbeEngineError(
                    "source: %r is not an address of this host (bind failed: EADDRNOTAVAIL); "
                    "give one of the host's own addresses" % self.source)
            state, reason = classify_connect_error(exc.errno, None, probe.address, probe.family)
            probe.finish(state, "%s (local: %s)" % (reason, errno.errorcode.get(exc.errno, exc.errno)))


def probe_targets(targets, ports=DEFAULT_PROBE_PORTS, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES,
                  rate=DEFAULT_RATE, max_concurrency=DEFAULT_MAX_CONCURRENCY, source=None, family="any",
                  user_agent=USER_AGENT, on_result=None):
    """Probe ``targets`` (names, IPv4/IPv6 literals) on ``ports`` (``'5060/udp'``...).

    Returns one dict per target/address/port/transport:
    ``{target, address, family, port, transport, state, reason, rtt_ms, sip, tls}``.
    Raises PortSpecError/ProbeOptionError on bad options, ProbeEngineError when it cannot run.
    """
    prober = SipProber(ports=ports, timeout=timeout, retries=retries, rate=rate,
                       max_concurrency=max_concurrency, source=source, family=family, user_agent=user_agent)
    return prober.run(targets, on_result=on_result)
