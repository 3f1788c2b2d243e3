# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIP probing, the pure part: probe options, the OPTIONS request, the response
parser, X.509 summary and the nmap-style state/reason classification.

Nothing here touches a socket, so everything can be unit-tested on recorded bytes.
Runs on target Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import collections
import errno
import ipaddress
import math
import os
import re

from ansible_collections.sipguard.firewall.plugins.module_utils.ports import parse_specs
from ansible_collections.sipguard.firewall.plugins.module_utils.version import COLLECTION_VERSION

TOOL_VERSION = COLLECTION_VERSION
# Real servers (and fail2ban/APIBAN style filters in front of them) silently drop
# requests whose User-Agent looks like a scanner ("friendly-scanner", "sipvicious"...),
# so name the tool and give a contact URL, the way well-behaved monitors do.
USER_AGENT = "sipguard-firewall/%s (+https://example.invalid/sipguard)" % TOOL_VERSION

TRANSPORTS = ("udp", "tcp", "tls")
FAMILIES = ("any", "ipv4", "ipv6")
DEFAULT_PROBE_PORTS = ("5060/udp", "5060/tcp", "5061/tls")
# Every state a result can have; the first four carry nmap's meaning.
STATES = ("open", "closed", "filtered", "open|filtered", "unresolved")

DEFAULT_TIMEOUT = 1.5
DEFAULT_RETRIES = 2
DEFAULT_RATE = 200.0
DEFAULT_MAX_CONCURRENCY = 256
MAX_RETRIES = 10

# RFC 3261 section 8.1.1.7: a branch starting with this cookie is RFC 3261-compliant.
BRANCH_COOKIE = "z9hG4bK"

ProbeSpec = collections.namedtuple("ProbeSpec", ["port", "transport"])

SipResponse = collections.namedtuple(
    "SipResponse",
    [
        "status_code",
        "reason_phrase",
        "headers",  # dict: canonical lower-case name -> list of values, compact forms expanded
        "server",
        "user_agent",
        "allow",
        "supported",
        "call_id",
        "branch",
        "cseq",
        "content_length",  # None when the header is missing
        "cut",  # tuple of reasons why parts of the response were left out (empty when none were)
    ],
    defaults=((),),
)


class ProbeOptionError(ValueError):
    """A probe option that cannot be used; the message names the bad value and what is allowed."""


# RFC 3261 section 7.3.3 plus the compact forms registered later (RFC 3515, 3892, 3903, 4028, 4474).
COMPACT_HEADERS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_STATUS_LINE = re.compile(r"^SIP/(\d+)\.(\d+)[ \t]+(\d{3})(?:[ \t]+(.*))?$", re.IGNORECASE)
_BRANCH = re.compile(r";[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # token characters: printable ASCII except ':'

_NOT_CRLF = re.compile(br"[^\r\n]")
_HEAD_END = re.compile(br"\n\r?\n")  # the blank line after the headers (CRLF or bare LF)
_CONTENT_LENGTH = re.compile(br"(?im)^[ \t]*(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})[ \t]*\r?$")
_DECIMAL = re.compile(r"[0-9]{1,10}\Z")

# Hard caps of the response parser and the stream framer. A real OPTIONS answer is a few
# hundred bytes with 10-30 headers; these leave a wide margin and still bound a hostile peer.
# At most this much of a message head is read (status line and headers)...
MAX_HEAD_BYTES = 65536
# ... at most this many header fields ...
MAX_HEADERS = 256
# ... at most this much of one header (after unfolding its continuation lines) ...
MAX_HEADER_BYTES = 8192
# ... and at most this many Allow or Supported items.
MAX_LIST_ITEMS = 64
# A stream (TCP/TLS) probe reads at most this much from a peer in all (bodies and any
# messages before ours included), then gives its verdict with what it has.
MAX_STREAM_BYTES = 1024 * 1024


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def parse_probe_ports(values, option="ports"):
    """Turn ``['5060/udp', '5061/tls']`` into ordered, de-duplicated ProbeSpecs.

    Unlike ufw_info's ports a transport is required: a probe must know whether to speak UDP,
    TCP or TLS, and there is no sensible "both".
    """
    return [ProbeSpec(port, transport) for port, transport in
            parse_specs(values, option, TRANSPORTS, None, "transport", "use udp, tcp or tls",
                        "give at least one PORT/TRANSPORT, e.g. ['5060/udp', '5060/tcp', '5061/tls']")]


def check_targets(targets, option="targets"):
    """Return the stripped target strings, or raise ProbeOptionError naming the bad entry."""
    if isinstance(targets, str):
        targets = [targets]
    cleaned = []
    for index, target in enumerate(targets or []):
        text = "" if target is None else str(target).strip()
        if not text:
            raise ProbeOptionError("%s[%d]: %r is empty; give a hostname or an IPv4/IPv6 address" % (option, index, target))
        if any(ch.isspace() for ch in text) or "/" in text:
            raise ProbeOptionError(
                "%s[%d]: %r is not a hostname or IP address (no spaces, ports or prefixes; use 'ports' for ports)"
                % (option, index, target))
        cleaned.append(text)
    if not cleaned:
        raise ProbeOptionError("%s: give at least one hostname or IP address" % option)
    return cleaned


def format_probe_spec(spec):
    return "%d/%s" % (spec.port, spec.transport)


def check_probe_options(timeout, retries, rate, max_concurrency, source=None, family="any"):
    """Validate the numeric/address options; return them normalised.

    Returns ``(timeout, retries, rate, max_concurrency, source, family)`` with floats/ints
    converted and ``source`` as a canonical IP string (or None).
    """
    try:
        timeout_f = float(timeout)
    except (TypeError, ValueError):
        raise ProbeOptionError("timeout: %r is not a number; give seconds > 0, e.g. 1.5" % (timeout,))
    if math.isnan(timeout_f) or timeout_f <= 0 or timeout_f > 300:
        raise ProbeOptionError("timeout: %r is out of range; give seconds > 0 and <= 300, e.g. 1.5" % (timeout,))
    try:
        retries_i = int(retries)
    except (TypeError, ValueError):
        raise ProbeOptionError("retries: %r is not an integer; give 0-%d" % (retries, MAX_RETRIES))
    if not 0 <= retries_i <= MAX_RETRIES:
        raise ProbeOptionError("retries: %r is out of range; give 0-%d" % (retries, MAX_RETRIES))
    try:
        rate_f = float(rate)
    except (TypeError, ValueError):
        raise ProbeOptionError("rate: %r is not a number; give probes per second > 0, e.g. 200" % (rate,))
    if math.isnan(rate_f) or rate_f <= 0 or math.isinf(rate_f):
        raise ProbeOptionError("rate: %r must be > 0 probes per second, e.g. 200" % (rate,))
    try:
        conc = int(max_concurrency)
    except (TypeError, ValueError):
        raise ProbeOptionError("max_concurrency: %r is not an integer; give 1-65535" % (max_concurrency,))
    if not 1 <= conc <= 65535:
        raise ProbeOptionError("max_concurrency: %r is out of range; give 1-65535" % (max_concurrency,))
    if family not in FAMILIES:
        raise ProbeOptionError("family: %r is not allowed; use any, ipv4 or ipv6" % (family,))
    source_ip = None
    if source not in (None, ""):
        try:
            source_ip = ipaddress.ip_address(str(source).strip())
        except ValueError:
            raise ProbeOptionError("source: %r is not an IP address; give the local IPv4 or IPv6 address to probe from" % (source,))
        if family == "ipv4" and source_ip.version != 4 or family == "ipv6" and source_ip.version != 6:
            raise ProbeOptionError("source: %r is not an %s address but family is %r" % (source, family, family))
        source_ip = str(source_ip)
    return timeout_f, retries_i, rate_f, conc, source_ip, family


# ---------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------

def new_dialog_ids():
    """Return ``(branch, call_id, from_tag)``: fresh random values for one probe.

    Retransmissions must re-use them (RFC 3261 17.1.2.1) so a late answer to the
    first copy still matches.
    """
    return (
        BRANCH_COOKIE + _hex(8),
        _hex(16),
        _hex(4),
    )


def _hex(nbytes):
    return binascii.hexlify(os.urandom(nbytes)).decode("ascii")


def uri_host(address):
    """``::1`` -> ``[::1]`` (RFC 3261 hostport), anything else unchanged."""
    if ":" in address and not address.startswith("["):
        return "[%s]" % address
    return address


def build_options(target_host, target_port, transport, local_host, local_port, branch, call_id, from_tag,
                  user_agent=USER_AGENT):
    """Build an RFC 3261 OPTIONS request (bytes) for one probe.

    ``transport`` is udp, tcp or tls and goes into the Via (``SIP/2.0/UDP``) and Contact.
    ``rport`` (RFC 3581) asks the server to answer to the port the request came from,
    which keeps NATed probes working.
    """
    transport = transport.lower()
    target = uri_host(target_host)
    local = uri_host(local_host)
    uri = "sip:%s:%d" % (target, int(target_port))
    contact = "<sip:sipguard@%s:%d%s>" % (local, int(local_port), "" if transport == "udp" else ";transport=%s" % transport)
    lines = [
        "OPTIONS %s SIP/2.0" % uri,
        "Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (transport.upper(), local, int(local_port), branch),
        "Max-Forwards: 70",
        "From: <sip:sipguard@%s>;tag=%s" % (local, from_tag),
        "To: <%s>" % uri,
        "Call-ID: %s" % call_id,
        "CSeq: 1 OPTIONS",
        "Contact: %s" % contact,
        "Accept: application/sdp",
        "User-Agent: %s" % user_agent,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


# ---------------------------------------------------------------------------
# The response
# ---------------------------------------------------------------------------

def _split_list(name, values, cut):
    """Comma-separated items of every ``values`` entry, de-duplicated in order, at most MAX_LIST_ITEMS."""
    items = []
    seen = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item or item in seen:
                continue
            if len(items) >= MAX_LIST_ITEMS:
                cut.append("%s over %d items" % (name, MAX_LIST_ITEMS))
                return items
            seen.add(item)
            items.append(item)
    return items


def parse_response(data, cut=None):
    """Parse one SIP response; return a SipResponse, or None when it is not a SIP response.

    Tolerates what real devices send: LF-only line ends, compact header names, folded
    (continuation) lines, repeated headers, a missing Content-Length. Never raises on
    arbitrary input: anything unparseable is simply "not SIP" (None).

    Linear in the input and bounded whatever the input: only the first MAX_HEAD_BYTES of the
    head are read, at most MAX_HEADERS header fields, MAX_HEADER_BYTES per (unfolded) header
    and MAX_LIST_ITEMS Allow/Supported items; the body is never looked at. What was left out
    is listed in the result's ``cut`` (``cut``, when given, is a reason the caller already
    knows, e.g. the stream ended before the end of the head).
    """
    try:
        return _parse_response(data, cut)
    except Exception:  # pylint: disable=broad-except
        # The parser is fed by the network: a bug here must not kill a whole probe run.
        return None


def _head_of(data):
    """``(head, complete)``: the message head (bytes, without the blank line) at the start of ``data``.

    Leading CR/LF (RFC 5626 keep-alives) are skipped. ``complete`` is False when no blank line
    came within MAX_HEAD_BYTES; the head then ends at its last complete line. Data without any
    blank line that fits the cap (a datagram that simply ends) is the head as it is.
    """
    if isinstance(data, str):
        # Enough characters for MAX_HEAD_BYTES of keep-alives and MAX_HEAD_BYTES of head.
        data = data[:2 * MAX_HEAD_BYTES + 4].encode("utf-8", "replace")
    elif not isinstance(data, (bytes, bytearray)):
        data = bytes(memoryview(data)[:2 * MAX_HEAD_BYTES + 4])
    start = _NOT_CRLF.search(data, 0, MAX_HEAD_BYTES + 1)
    if start is None:
        return b"", len(data) <= MAX_HEAD_BYTES
    window = data[start.start():start.start() + MAX_HEAD_BYTES + 3]
    end = _HEAD_END.search(window)
    if end is not None and end.start() < MAX_HEAD_BYTES:
        return bytes(window[:end.start()]), True
    if len(window) <= MAX_HEAD_BYTES:
        return bytes(window), True
    window = window[:MAX_HEAD_BYTES]
    return bytes(window[:window.rfind(b"\n") + 1]), False


def _parse_response(data, cut=None):
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        return None
    cuts = [] if cut is None else [cut]
    head, complete = _head_of(data)
    if not complete:
        cuts.append("head over %d bytes" % MAX_HEAD_BYTES)
    lines = head.decode("utf-8", "replace").split("\n")
    match = _STATUS_LINE.match(lines[0].strip())
    if not match or match.group(1) != "2" or match.group(2) != "0":
        return None
    status = int(match.group(3))
    if not 100 <= status <= 699:
        return None
    reason_phrase = (match.group(4) or "").strip()[:MAX_HEADER_BYTES]

    # RFC 3261 7.3.1: a line starting with whitespace continues the previous header. Each
    # header's pieces are collected in a list and joined once (no quadratic concatenation).
    headers = collections.OrderedDict()
    parts = None  # pieces of the header being read; None while skipping a line that is no header
    size = 0
    name = None
    count = 0
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if parts is not None and size <= MAX_HEADER_BYTES:
                piece = line.strip()
                if piece:
                    parts.append(piece)
                    size += len(piece) + 1
            continue
        if parts is not None:
            _add_header(headers, name, parts, size, cuts)
            parts = None
        if ":" not in line:
            continue
        raw_name, value = line.split(":", 1)
        name = raw_name.strip().lower()
        if not name or not _HEADER_NAME.match(name):
            continue
        if count >= MAX_HEADERS:
            cuts.append("over %d headers" % MAX_HEADERS)
            break
        count += 1
        name = COMPACT_HEADERS.get(name, name)
        value = value.strip()
        parts = [value] if value else []
        size = len(value)
    if parts is not None:
        _add_header(headers, name, parts, size, cuts)

    def first(name):
        values = headers.get(name)
        return values[0] if values else None

    branch = None
    via = first("via")
    if via is not None:
        # The top-most Via may carry several comma-separated entries; ours is the first.
        found = _BRANCH.search(via.split(",", 1)[0])
        if found:
            branch = found.group(1)
    content_length = None
    length_text = first("content-length")
    if length_text is not None and _DECIMAL.match(length_text):
        content_length = int(length_text)
    allow = _split_list("allow", headers.get("allow", []), cuts)
    supported = _split_list("supported", headers.get("supported", []), cuts)
    return SipResponse(
        status_code=status,
        reason_phrase=reason_phrase,
        headers=dict(headers),
        server=first("server"),
        user_agent=first("user-agent"),
        allow=allow,
        supported=supported,
        call_id=first("call-id"),
        branch=branch,
        cseq=first("cseq"),
        content_length=content_length,
        cut=tuple(cuts),
    )


def _add_header(headers, name, parts, size, cuts):
    value = " ".join(parts)
    if size > MAX_HEADER_BYTES:
        value = value[:MAX_HEADER_BYTES]
        # Most SIP headers are comma-separated lists: keep whole items, not half a method name.
        if "," in value:
            value = value[:value.rindex(",")].rstrip()
        why = "%s header over %d bytes" % (name[:40], MAX_HEADER_BYTES)
        if why not in cuts:
            cuts.append(why)
    headers.setdefault(name, []).append(value)


def format_cut(cut):
    """One line for a result's reason: ``allow header over 8192 bytes, over 256 headers``."""
    return ", ".join(cut)


def response_matches(response, branch, call_id):
    """True when ``response`` answers our request: same Via branch and same Call-ID.

    Both are compared exactly (RFC 3261 17.1.3 matches on branch; Call-ID guards
    against a branch collision with another client's transaction).
    """
    return response is not None and response.branch == branch and response.call_id == call_id


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP message heads, in linear time and bounded memory.

    ``room()`` says how much may be read now, ``feed(data)`` takes what was read and returns
    the heads it completed. A stream transport frames by Content-Length (RFC 3261 18.3); a
    missing one means no body, which is what a lenient client must assume of a broken server.
    Bodies are counted and dropped, never kept: a response head is all a probe needs.

    Bounds, whatever the peer sends: at most MAX_HEAD_BYTES are ever buffered (``peak``), at
    most ``max_total`` bytes are read in all (``received``), and the search for the blank line
    that ends a head resumes where it stopped, so a peer trickling one byte at a time costs
    linear time. When a bound is hit, ``cut`` says which and reading stops.
    """

    def __init__(self, max_total=MAX_STREAM_BYTES):
        self.max_total = max_total
        self.buffer = bytearray()
        self.received = 0
        self.peak = 0
        self.cut = None
        self._scan = 0  # the blank-line search resumes here
        self._skip = 0  # body bytes still to drop

    def room(self):
        """How many bytes may be read now; 0 once a bound is reached."""
        if self.cut is not None:
            return 0
        return max(0, min(self.max_total - self.received, self._skip + MAX_HEAD_BYTES - len(self.buffer)))

    def feed(self, data):
        """Take bytes read from the stream; return the list of complete heads (bytes) they ended."""
        data = memoryview(data)
        self.received += len(data)
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self.buffer += data
        self.peak = max(self.peak, len(self.buffer))
        heads = []
        while self.buffer and self.cut is None:
            if self._scan == 0 and self.buffer[0] in (10, 13):
                start = _NOT_CRLF.search(self.buffer)
                del self.buffer[:len(self.buffer) if start is None else start.start()]
                continue
            end = _HEAD_END.search(self.buffer, max(0, self._scan - 2))
            if end is None:
                self._scan = len(self.buffer)
                if len(self.buffer) >= MAX_HEAD_BYTES:
                    self.cut = "head over %d bytes" % MAX_HEAD_BYTES
                break
            head = bytes(self.buffer[:end.end()])
            heads.append(head)
            length = _content_length(head)
            used = min(len(self.buffer), end.end() + length)
            self._skip = end.end() + length - used
            del self.buffer[:used]
            self._scan = 0
        if self.cut is None and self.received >= self.max_total:
            self.cut = "stream over %d bytes" % self.max_total
        return heads

    def partial(self):
        """The complete lines of an unfinished head (bytes; empty when none was started)."""
        return bytes(self.buffer[:self.buffer.rfind(b"\n") + 1])


def _content_length(head):
    found = _CONTENT_LENGTH.search(head)
    return int(found.group(1)) if found else 0


def sip_summary(response):
    """The ``sip`` field of a result: what an operator wants to know about the answer."""
    if response is None:
        return None
    return {
        "status_code": response.status_code,
        "reason_phrase": response.reason_phrase,
        "server": response.server,
        "user_agent": response.user_agent,
        "allow": list(response.allow),
        "supported": list(response.supported),
    }


_SIP_REQUEST_START = re.compile(br"^[A-Za-z]{2,20} (sips?|tel|urn):", re.IGNORECASE)


def looks_like_sip(data):
    """False only when ``data`` (the start of a stream) cannot be a SIP message.

    A short start that could still grow into a request line is given the benefit of the doubt.
    """
    start = bytes(data[:64]).lstrip(b"\r\n")
    if b"SIP/2.0 ".startswith(start[:8].upper()):
        return True
    if len(start) < 24:
        return re.match(br"^[A-Za-z]{1,20}( [!-~]*)?$", start) is not None
    return start[:8].upper() == b"SIP/2.0 " or _SIP_REQUEST_START.match(start) is not None


# ---------------------------------------------------------------------------
# Classification (nmap's states and --reason wording)
# ---------------------------------------------------------------------------

# ICMPv4 destination-unreachable (type 3) codes, RFC 792 / RFC 1812.
_ICMP4_UNREACH = {
    0: "net-unreach",
    1: "host-unreach",
    2: "proto-unreach",
    3: "port-unreach",
    4: "needs-frag",
    5: "source-route-failed",
    6: "net-unknown",
    7: "host-unknown",
    9: "net-prohibited",
    10: "host-prohibited",
    11: "net-tos-unreach",
    12: "host-tos-unreach",
    13: "admin-prohibited",
}
# ICMPv6 destination-unreachable (type 1) codes, RFC 4443.
_ICMP6_UNREACH = {
    0: "no-route",
    1: "admin-prohibited",
    2: "beyond-scope",
    3: "addr-unreach",
    4: "port-unreach",
    5: "source-policy-failed",
    6: "reject-route",
}


def icmp_reason(family, icmp_type, icmp_code):
    """nmap-like name of an ICMP error, e.g. ``port-unreach`` or ``admin-prohibited``."""
    if family == "ipv6":
        if icmp_type == 1:
            return _ICMP6_UNREACH.get(icmp_code, "unreach-code-%d" % icmp_code)
        if icmp_type == 3:
            return "time-exceeded"
        if icmp_type == 2:
            return "packet-too-big"
        return "icmpv6-type-%d-code-%d" % (icmp_type, icmp_code)
    if icmp_type == 3:
        return _ICMP4_UNREACH.get(icmp_code, "unreach-code-%d" % icmp_code)
    if icmp_type == 11:
        return "time-exceeded"
    return "icmp-type-%d-code-%d" % (icmp_type, icmp_code)


def _same_address(a, b):
    try:
        return a is not None and b is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def classify_icmp(family, icmp_type, icmp_code, offender, target_address):
    """Return ``(state, reason)`` for an ICMP error about a probe.

    Only a port-unreachable sent *by the target itself* means closed: the same message
    from a router or firewall in front of it is a firewall's REJECT (nmap: filtered).
    Every other unreachable (admin-prohibited, host/net-unreach...) is filtered.
    """
    name = icmp_reason(family, icmp_type, icmp_code)
    if offender is not None and _same_address(offender, target_address):
        origin = "target"
    else:
        origin = offender or "unknown"
    reason = "%s from %s" % (name, origin)
    if name == "port-unreach" and origin == "target":
        return "closed", reason
    return "filtered", reason


# errno names for connect()/sendto() failures; ECONNREFUSED is a RST (closed),
# the others come from an ICMP error or a local firewall/route and mean filtered.
_FILTERED_ERRNOS = {
    errno.EHOSTUNREACH: "host-unreach",
    errno.ENETUNREACH: "net-unreach",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "local-firewall-eperm",
    errno.ETIMEDOUT: "no-response",
    errno.EPROTO: "proto-error",
}


def classify_connect_error(err, icmp=None, target_address=None, family="ipv4"):
    """Return ``(state, reason)`` for a failed TCP connect.

    ``icmp`` is an optional ``(type, code, offender)`` read from the socket error queue;
    with IP_RECVERR set, the ICMP error that aborted a SYN is queued there too.
    """
    if icmp is not None:
        return classify_icmp(family, icmp[0], icmp[1], icmp[2], target_address)
    if err == errno.ECONNREFUSED:
        return "closed", "conn-refused"
    if err == errno.ECONNRESET:
        return "closed", "reset"
    name = _FILTERED_ERRNOS.get(err)
    if name is None:
        name = "error-%s" % (errno.errorcode.get(err, str(err)),)
    return "filtered", name


def count_states(results):
    """``{'open': n, 'closed': n, ...}`` for every state in STATES (zeros included)."""
    counts = collections.OrderedDict((state, 0) for state in STATES)
    for result in results:
        counts[result["state"]] = counts.get(result["state"], 0) + 1
    return dict(counts)


# ---------------------------------------------------------------------------
# X.509, just enough to report on a peer certificate without trusting it
# ---------------------------------------------------------------------------

_NAME_OIDS = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.25": "DC",
}


def _der_read(data, pos):
    """Read one DER TLV at ``pos``; return ``(tag, value_start, value_end)``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _der_children(data, start, end):
    children = []
    pos = start
    while pos < end:
        tag, vstart, vend = _der_read(data, pos)
        children.append((tag, vstart, vend))
        pos = vend
    return children


def _der_oid(raw):
    first = raw[0]
    parts = [first // 40 if first < 80 else 2, first % 40 if first < 80 else first - 80]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def _der_name(data, start, end):
    parts = []
    for _set_tag, rs, re_ in _der_children(data, start, end):  # SET OF
        for _tag2, as_, ae in _der_children(data, rs, re_):  # AttributeTypeAndValue
            items = _der_children(data, as_, ae)
            if len(items) != 2:
                continue
            oid = _der_oid(data[items[0][1]:items[0][2]])
            vtag, vs, ve = items[1]
            raw = data[vs:ve]
            if vtag == 0x1E:  # BMPString
                value = raw.decode("utf-16-be", "replace")
            else:
                value = raw.decode("utf-8", "replace")
            parts.append("%s=%s" % (_NAME_OIDS.get(oid, oid), value))
    return ",".join(parts)


def _der_time(tag, raw):
    text = raw.decode("ascii", "replace")
    if tag == 0x17 and len(text) >= 12:  # UTCTime YYMMDDHHMM[SS]Z
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:]
    elif tag == 0x18 and len(text) >= 14:  # GeneralizedTime YYYYMMDDHHMMSSZ
        year = int(text[:4])
        rest = text[4:]
    else:
        return text
    seconds = rest[8:10] if len(rest) >= 10 and rest[8:10].isdigit() else "00"
    return "%04d-%s-%sT%s:%s:%sZ" % (year, rest[0:2], rest[2:4], rest[4:6], rest[6:8], seconds)


def parse_certificate_der(der):
    """Summarise a DER certificate: ``{subject, issuer, not_before, not_after, sha256}``.

    Only reads fields to report them; nothing is verified (a probe must see what a
    server presents, trusted or not). Fields that cannot be decoded are None.
    """
    import hashlib

    info = {"subject": None, "issuer": None, "not_before": None, "not_after": None, "sha256": None}
    if not der:
        return info
    der = bytes(der)
    digest = hashlib.sha256(der).hexdigest().upper()
    info["sha256"] = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    try:
        _tag, cs, ce = _der_read(der, 0)
        _tag, ts, te = _der_children(der, cs, ce)[0]  # tbsCertificate
        fields = _der_children(der, ts, te)
        if fields and fields[0][0] == 0xA0:  # explicit [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        issuer, validity, subject = fields[2], fields[3], fields[4]
        info["issuer"] = _der_name(der, issuer[1], issuer[2])
        info["subject"] = _der_name(der, subject[1], subject[2])
        times = _der_children(der, validity[1], validity[2])
        info["not_before"] = _der_time(times[0][0], der[times[0][1]:times[0][2]])
        info["not_after"] = _der_time(times[1][0], der[times[1][1]:times[1][2]])
    except (IndexError, ValueError, TypeError):
        pass
    return info
