# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netfilter rule sets in iptables-save format, and the walk a new packet takes through them.

One parser serves both the live kernel state (``iptables-save``/``ip6tables-save``) and
UFW's own files (``user.rules``, ``before.rules``...), which are iptables-restore input
in the same format. ``### tuple ###`` comments, which UFW writes ahead of the rules it
generates, are kept on the rules that follow them.

Pure functions only; runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import shlex
import socket

BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
TERMINAL_FILTER = ("ACCEPT", "DROP", "REJECT")
# Targets that do something to the packet (or log it) and let it go on through the chain.
NON_TERMINATING = ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE", "AUDIT",
                   "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "SET", "TCPMSS", "CHECKSUM", "IDLETIMER",
                   "LED", "SECMARK", "CONNSECMARK", "TEE", "RATEEST", "NFQUEUE-BYPASS")
SHORT_OPTS = {"-p": "proto", "--protocol": "proto", "-s": "src", "--source": "src",
              "-d": "dst", "--destination": "dst", "-i": "in", "--in-interface": "in",
              "-o": "out", "--out-interface": "out"}
TUPLE_PREFIX = "### tuple ###"
MAX_PATHS = 256


class NetfilterParseError(ValueError):
    """A rule set the model cannot read; the message names the line (and the file, when known)."""


class NetfilterLoopError(NetfilterParseError):
    """Chains that jump into each other: the kernel refuses such a rule set (ELOOP), the walk would not end."""


# Options whose values are port numbers, ranges (``5000:6000``) or lists (``80,443,5000:6000``).
PORT_OPTIONS = ("--dport", "--dports", "--destination-port", "--destination-ports", "--sport", "--sports",
                "--source-port", "--source-ports", "--ports")
_PORT = r"([0-9]{1,5}|[A-Za-z][A-Za-z0-9_.-]*)"
_PORT_SPEC = re.compile(r"^%s?(:%s?)?$" % (_PORT, _PORT))
_SERVICES = {}


def _service_port(name):
    """A port number or a service name as iptables-restore resolves it (/etc/services), or None."""
    if name.isdigit():
        return int(name)
    if name not in _SERVICES:
        try:
            _SERVICES[name] = socket.getservbyname(name)
        except (OSError, socket.error):
            _SERVICES[name] = None
    return _SERVICES[name]


def _check_port_spec(option, value):
    """Raise NetfilterParseError unless ``value`` is a port option's value iptables-restore accepts."""
    parts = value.split(",") if value else [""]
    for part in parts:
        m = _PORT_SPEC.match(part.strip())
        ports = [g for g in (m.group(1), m.group(3)) if g] if m else []
        if not ports or any(_service_port(g) is None or _service_port(g) > 65535 for g in ports):
            raise NetfilterParseError("%s %r is not a port, range (5000:6000) or list (80,443) of ports 0-65535 "
                                      "or service names" % (option, value))


def _is_option(token):
    """``--dport`` or ``-j`` is an option; ``-1`` (a value) is not."""
    return token.startswith("-") and len(token) > 1 and not token[1:2].isdigit()


class Rule(object):
    """One ``-A CHAIN ...`` line, split into what a packet is matched on and the target."""

    __slots__ = ("table", "chain", "args", "basics", "matches", "target", "target_args",
                 "goto", "tuple", "comment", "line")

    def __init__(self, table, chain, args, line=None, ufw_tuple=None):
        self.table = table
        self.chain = chain
        self.args = args
        self.basics = {}      # proto/src/dst/in/out -> (negated, value)
        self.matches = []     # [(module, {option: (negated, [values])})]
        self.target = None
        self.target_args = {}
        self.goto = False
        self.tuple = ufw_tuple
        self.comment = None
        self.line = line
        self._parse(args)

    def _parse(self, args):
        negate = False
        module = None
        current = None  # the option dict new --options go to
        i = 0
        while i < len(args):
            tok = args[i]
            if tok == "!":
                negate = True
                i += 1
                continue
            if tok in SHORT_OPTS:
                if i + 1 >= len(args):
                    raise NetfilterParseError("%s needs a value: %s" % (tok, " ".join(args)))
                self.basics[SHORT_OPTS[tok]] = (negate, args[i + 1])
                negate = False
                i += 2
                continue
            if tok in ("-m", "--match"):
                if i + 1 >= len(args):
                    raise NetfilterParseError("%s needs a match module: %s" % (tok, " ".join(args)))
                module = args[i + 1]
                current = {}
                self.matches.append((module, current))
                i += 2
                continue
            if tok in ("-j", "--jump", "-g", "--goto"):
                if i + 1 >= len(args):
                    raise NetfilterParseError("%s needs a target: %s" % (tok, " ".join(args)))
                self.target = args[i + 1]
                self.goto = tok in ("-g", "--goto")
                current = self.target_args
                module = None
                i += 2
                continue
            if tok.startswith("-"):
                values = []
                j = i + 1
                while j < len(args) and args[j] != "!" and not _is_option(args[j]):
                    values.append(args[j])
                    j += 1
                if current is None:
                    # An option without -m: the protocol's implicit match (``-p udp --dport 5060``).
                    module = self.basics.get("proto", (False, "?"))[1]
                    current = {}
                    self.matches.append((module, current))
                if tok in PORT_OPTIONS and current is not self.target_args:
                    _check_port_spec(tok, values[0] if values else "")
                current[tok] = (negate, values)
                if tok == "--comment" and values:
                    self.comment = values[0]
                negate = False
                i = j
                continue
            raise NetfilterParseError("unexpected %r in rule: %s" % (tok, " ".join(args)))

    def option(self, name):
        """Return (module, negated, values) for the first ``--name`` on the rule, or None."""
        for module, opts in self.matches:
            if name in opts:
                return module, opts[name][0], opts[name][1]
        return None

    def text(self):
        return " ".join(shlex.quote(a) if (" " in a or not a) else a for a in ["-A", self.chain] + self.args)


class Chain(object):
    __slots__ = ("name", "policy", "rules")

    def __init__(self, name, policy=None):
        self.name = name
        self.policy = policy
        self.rules = []


# A module run parses the same rule lines more than once (the live rule set, ufw's rules files,
# each simulated rule set); a quoted line is split once.
_SPLIT_CACHE = {}


def _split(line):
    """The arguments of one rule line; only quoted ones (comments, log prefixes) need shlex, which is slow."""
    if '"' not in line and "'" not in line and "\\" not in line:
        return line.split()
    args = _SPLIT_CACHE.get(line)
    if args is None:
        if len(_SPLIT_CACHE) > 10000:
            _SPLIT_CACHE.clear()
        args = _SPLIT_CACHE[line] = tuple(shlex.split(line))
    return list(args)


def parse_iptables_save(text, source=None):
    """Parse iptables-save / iptables-restore text into ``{table: {chain: Chain}}``.

    Rules keep their position in their chain; ``-I CHAIN [N]`` inserts as iptables-restore does.
    ``source`` (a file name or command) starts every error message, which names the line.
    """
    try:
        return _parse_iptables_save(text)
    except NetfilterParseError as exc:
        if source:
            raise NetfilterParseError("%s %s" % (source, exc))
        raise


def _parse_iptables_save(text):
    tables = {}
    table = None
    table_name = None
    pending_tuple = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(TUPLE_PREFIX):
            pending_tuple = line[len(TUPLE_PREFIX):].strip()
            continue
        if line.startswith("#"):
            continue
        if line.startswith("*"):
            table_name = line[1:].strip()
            table = tables.setdefault(table_name, {})
            continue
        if line == "COMMIT":
            table = None
            continue
        if table is None:
            raise NetfilterParseError("line %d: %r outside a *table ... COMMIT block" % (lineno, line))
        if line.startswith(":"):
            parts = line[1:].split()
            if not parts:
                raise NetfilterParseError("line %d: a chain line without a chain name" % lineno)
            name = parts[0]
            policy = parts[1] if len(parts) > 1 and parts[1] != "-" else None
            chain = table.setdefault(name, Chain(name, policy))
            chain.policy = policy
            continue
        try:
            args = _split(line)
        except ValueError as exc:
            raise NetfilterParseError("line %d: %s" % (lineno, exc))
        if len(args) < 2 or args[0] not in ("-A", "-I", "--append", "--insert"):
            raise NetfilterParseError("line %d: expected -A/-I CHAIN ..., got %r" % (lineno, line))
        name = args[1]
        rest = args[2:]
        position = None
        if args[0] in ("-I", "--insert"):
            position = 1
            if rest and rest[0].isascii() and rest[0].isdigit():
                position = max(1, int(rest[0]))
                rest = rest[1:]
        chain = table.setdefault(name, Chain(name, "ACCEPT" if name in BUILTIN_CHAINS else None))
        try:
            rule = Rule(table_name, name, rest, lineno, pending_tuple)
        except NetfilterParseError as exc:
            raise NetfilterParseError("line %d: %s" % (lineno, exc))
        if position is None:
            chain.rules.append(rule)
        else:
            chain.rules.insert(position - 1, rule)
    return tables


# --------------------------------------------------------------------------- packets

# The packet a verdict is about: the first packet of a SIP client that has never talked to the
# host. Over UDP that is a request the size of an OPTIONS (sip_probe's is 449 bytes over IPv4,
# 514 over IPv6; softphones' and scanners' fall in the same range); over TCP it is the SYN.
# Sizes are IP datagram lengths, header included, as ``-m length`` compares them.
FIRST_PACKET_LENGTH = (400, 800)
SYN_LENGTH = {4: (40, 80), 6: (60, 100)}
# The TCP flags of a SYN (Linux sends no ECN flags on a SYN unless net.ipv4.tcp_ecn=1).
SYN_FLAGS = frozenset(["SYN"])
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
# Text every OPTIONS request carries: ``-m string`` looking for one of these matches a first packet.
OPTIONS_TEXT = ("OPTIONS sip:", " SIP/2.0\r\n", "Via: SIP/2.0/", ";branch=z9hG4bK", "Max-Forwards: ", "From: <sip:",
                ">;tag=", "To: <sip:", "Call-ID: ", "CSeq: 1 OPTIONS", "Contact: <sip:", "Accept: application/sdp",
                "User-Agent: ", "Content-Length: 0", "\r\n\r\n")
# Targets that give a packet a mark: with one in the rule set, a first packet's mark is not known to be 0.
MARK_TARGETS = ("MARK", "CONNMARK")


class Packet(object):
    """The first packet of a new connection arriving from outside the host (see FIRST_PACKET_LENGTH)."""

    __slots__ = ("family", "proto", "dport", "dst", "local", "out", "dnat", "orig_dport")

    def __init__(self, family, proto, dport, dst=None, local=True, out=None, dnat=False, orig_dport=None):
        self.family = family
        self.proto = proto
        self.dport = dport
        self.dst = dst
        self.local = local
        self.out = out
        self.dnat = dnat
        # The port the client connected to (conntrack's original destination port), after a DNAT.
        self.orig_dport = dport if orig_dport is None else orig_dport

    def moved(self, **changes):
        values = dict((k, getattr(self, k)) for k in self.__slots__)
        values.update(changes)
        return Packet(**values)

    def key(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def length(self):
        """The range of sizes (bytes) the first packet has."""
        return SYN_LENGTH.get(self.family, SYN_LENGTH[4]) if self.proto == "tcp" else FIRST_PACKET_LENGTH


class Condition(object):
    """Something about the packet's sender that the verdict may depend on.

    ``generic`` is the answer for an arbitrary sender on the Internet; the other answer
    is explored as well, which is how "restricted" (admitted for some senders) is found.
    """

    __slots__ = ("key", "generic", "text")

    def __init__(self, key, generic, text):
        self.key = key
        self.generic = generic
        self.text = text


class Outcome(object):
    """Where one path through the rule set ended.

    ``notes`` name the rules on the path that act on other packets to the port than the first
    one (floods, marks, sizes, non-SYN, other conntrack states): they did not decide, but the
    port is not open to everything (``rate-limited above 20/sec per source (filter INPUT #1 drops)``).
    """

    __slots__ = ("verdict", "frames", "assumed", "packet", "note", "notes")

    def __init__(self, verdict, frames, assumed, packet, note=None, notes=()):
        self.verdict = verdict    # ACCEPT / DROP / REJECT / RETURN / DNAT / REDIRECT
        self.frames = frames      # [(table, chain, index or None)]: the jumps that led to the verdict
        self.assumed = assumed    # {condition key: (bool, text)}
        self.packet = packet
        self.note = note
        self.notes = list(notes)

    def is_generic(self):
        return all(value == generic for value, _text, generic in self.assumed.values())

    def conditions(self):
        return [text for value, text, generic in self.assumed.values() if value != generic]


def _in_net(address, cidr):
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _is_any(cidr):
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _port_in(port, spec):
    """``5060`` in ``5060``, ``5000:6000`` or ``80,443,5000:6000`` (checked by the parser)."""
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            low, high = part.split(":", 1)
            low = _service_port(low) if low else 0
            high = _service_port(high) if high else 65535
            if low is not None and high is not None and low <= port <= high:
                return True
        elif _service_port(part) == port:
            return True
    return False


def _iface_match(pattern, name):
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _number(text, default=None):
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        return default


def _rate(opts, name, default):
    value = opts.get(name, (False, [default]))[1]
    return value[0] if value else default


# What one match says about the first packet: (holds, text). ``holds`` is True, False or None (the
# model cannot tell); ``text`` describes the other packets to the port for which the answer differs
# (None: the answer is the same for every packet of the port).
def _family_hashlimit(opts, _pkt, _ctx):
    mode = opts.get("--hashlimit-mode", (False, [""]))[1]
    mode = mode[0].split(",") if mode else []
    per = " per source" if "srcip" in mode else " per destination" if "dstip" in mode else \
        " per port" if ("dstport" in mode or "srcport" in mode) else ""
    if "--hashlimit-above" in opts:
        return False, "rate-limited above %s%s" % (_rate(opts, "--hashlimit-above", "?"), per)
    rate = _rate(opts, "--hashlimit-upto", None) or _rate(opts, "--hashlimit", "?")
    return True, "rate-limited above %s%s" % (rate, per)


def _family_limit(opts, _pkt, _ctx):
    # The bucket of a new limit starts full: the first packet is always below the rate.
    return True, "rate-limited above %s (burst %s)" % (_rate(opts, "--limit", "3/hour"), _rate(opts, "--limit-burst", "5"))


def _family_connlimit(opts, _pkt, _ctx):
    mask = _rate(opts, "--connlimit-mask", None)
    per = " per destination" if "--connlimit-daddr" in opts else " per /%s" % mask if mask not in (None, "32", "128") \
        else " per source"
    if "--connlimit-above" in opts:
        limit = _number(_rate(opts, "--connlimit-above", ""), 0)
        # The new connection counts: a first connection is 1 connection.
        return 1 > limit, "more than %d connections%s" % (limit, per)
    limit = _number(_rate(opts, "--connlimit-upto", ""), 0)
    return 1 <= limit, "more than %d connections%s" % (limit, per)


def _family_recent(opts, _pkt, _ctx):
    name = _rate(opts, "--name", "DEFAULT")
    if "--rdest" in opts and any(o in opts for o in ("--rcheck", "--update", "--remove")):
        return None, None  # the host's own address may well be on the list
    if "--set" in opts:
        return True, None
    if any(o in opts for o in ("--rcheck", "--update", "--remove")):
        hits = _rate(opts, "--hitcount", None)
        seconds = _rate(opts, "--seconds", None)
        what = "sources seen" if hits is None else "sources seen %s times" % hits
        if seconds is not None:
            what += " within %ss" % seconds
        return False, "%s (recent list %s)" % (what, name)
    return None, None


def _family_mark(what):
    def evaluate(opts, _pkt, ctx):
        value = _rate(opts, "--mark", None)
        if value is None:
            return None, None
        mark, _sep, mask = value.partition("/")
        mark = _number(mark)
        if mark is None or (mask and _number(mask) is None):
            return None, None
        if ctx.get("marks"):
            return None, None  # a MARK/CONNMARK rule may have set it on the way
        return mark == 0, "%s marked %s" % (what, value)
    return evaluate


def _family_length(opts, pkt, _ctx):
    value = _rate(opts, "--length", "")
    low, _sep, high = value.partition(":")
    low = _number(low or "0")
    high = _number(high) if high else (low if not _sep else 65535)
    if low is None or high is None:
        return None, None
    first_low, first_high = pkt.length()
    text = "packets of %s bytes" % value
    if low <= first_low and first_high <= high:
        return True, text
    if high < first_low or low > first_high:
        return False, text
    return None, None


def _tcp_flag_set(text):
    text = text.upper()
    if text == "ALL":
        return frozenset(TCP_FLAGS)
    if text == "NONE":
        return frozenset()
    return frozenset(f for f in text.split(",") if f)


def _family_tcp_flags(opts, _pkt, _ctx):
    syn = ("TCP SYN packets", "TCP packets other than a SYN")
    if "--syn" in opts:
        return True, syn
    values = opts.get("--tcp-flags", (False, []))[1]
    if len(values) != 2:
        return None, None
    mask, comp = _tcp_flag_set(values[0]), _tcp_flag_set(values[1])
    if comp == SYN_FLAGS and set(["SYN", "ACK", "RST"]) <= mask:
        return True, syn
    return (SYN_FLAGS & mask) == comp, "TCP packets with flags %s of %s" % (values[1], values[0])


def _family_ctstate(opts, pkt, _ctx):
    value = (opts.get("--ctstate") or opts.get("--state") or (False, [""]))[1]
    states = set((value[0] if value else "").upper().split(","))
    holds = "NEW" in states or (pkt.dnat and "DNAT" in states)
    if not holds and states <= set(["INVALID"]):
        return False, None  # no SIP packet is INVALID: nothing to tell
    if states == set(["NEW"]):
        return holds, ("conntrack state NEW", "conntrack states other than NEW")
    return holds, "conntrack state %s" % ",".join(sorted(states))


def _family_ctstatus(opts, _pkt, _ctx):
    value = opts.get("--ctstatus", (False, [""]))[1]
    status = set((value[0] if value else "").upper().split(","))
    # A new connection has none of EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED.
    return "NONE" in status, "connections with status %s" % ",".join(sorted(status))


def _family_string(opts, _pkt, _ctx):
    value = _rate(opts, "--string", None)
    if value is None:
        return None, None
    icase = "--icase" in opts
    needle = value.lower() if icase else value
    for part in OPTIONS_TEXT:
        hay = part.lower() if icase else part
        if needle in hay or hay in needle:
            return None, None  # an OPTIONS request may carry it
    return False, "packets containing %r" % value


# (module, option) -> evaluator; the evaluator reads every option of the match it needs.
_FAMILIES = {
    ("hashlimit", "--hashlimit-above"): _family_hashlimit,
    ("hashlimit", "--hashlimit-upto"): _family_hashlimit,
    ("hashlimit", "--hashlimit"): _family_hashlimit,
    ("limit", "--limit"): _family_limit,
    ("connlimit", "--connlimit-above"): _family_connlimit,
    ("connlimit", "--connlimit-upto"): _family_connlimit,
    ("recent", "--set"): _family_recent,
    ("recent", "--rcheck"): _family_recent,
    ("recent", "--update"): _family_recent,
    ("recent", "--remove"): _family_recent,
    ("mark", "--mark"): _family_mark("packets"),
    ("connmark", "--mark"): _family_mark("connections"),
    ("length", "--length"): _family_length,
    ("tcp", "--syn"): _family_tcp_flags,
    ("tcp", "--tcp-flags"): _family_tcp_flags,
    ("conntrack", "--ctstate"): _family_ctstate,
    ("state", "--state"): _family_ctstate,
    ("conntrack", "--ctstatus"): _family_ctstatus,
    ("string", "--string"): _family_string,
}
# Matches that hold for a first packet but not for a flood: an ACCEPT behind them admits at a rate.
_RATE_FAMILIES = (_family_hashlimit, _family_limit)
# Options that only tune a match evaluated above, or that every first packet passes.
_PASSIVE = {
    "hashlimit": None, "limit": None, "connlimit": None, "recent": None, "comment": None, "string": None,
    "mark": None, "connmark": None, "length": None,
    "conntrack": ("--ctproto", "--ctdir"), "state": None, "addrtype": ("--limit-iface-in", "--limit-iface-out"),
    "multiport": None, "tcp": ("--tcp-option",), "udp": None, "pkttype": None,
    "icmp": None, "icmp6": None, "ipv6-icmp": None, "rt": None,
}


# Where a note names the rule's position, filled in by the walk (a rule does not know its index).
_INDEX = "\x00index\x00"


def _describe_target(rule):
    target = rule.target or "continue"
    verbs = {"DROP": "drops", "REJECT": "rejects", "ACCEPT": "accepts", "RETURN": "returns", "DNAT": "translates",
             "REDIRECT": "redirects"}
    if target in verbs:
        return verbs[target]
    return "%s %s" % ("goes to" if rule.goto else "jumps to", target)


def _rule_keys(rule):
    """Every Condition key the rule could make the walk decide, whatever the packet (an over-estimate)."""
    keys = set()
    for key, (neg, value) in rule.basics.items():
        if key == "src":
            try:
                value = str(ipaddress.ip_network(value, strict=False))
            except ValueError:
                pass
            keys.add(("src", value))
        elif key == "in":
            keys.add(("in", value))
    for module, opts in rule.matches:
        for opt, (neg, values) in opts.items():
            value = values[0] if values else ""
            keys.update([("sport", value, neg), ("set", value, neg), ("match", module, opt, " ".join(values), neg)])
    return keys


def _relevant_keys(chains):
    """{chain: the Condition keys its rules and the chains it reaches could decide} (the graph is acyclic)."""
    relevant = {}
    for start in chains:
        if start in relevant:
            continue
        stack = [start]
        while stack:
            name = stack[-1]
            targets = [r.target for r in chains[name].rules if r.target in chains and r.target not in BUILTIN_CHAINS]
            todo = [t for t in targets if t not in relevant and t not in stack]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if name in relevant:
                continue
            keys = set()
            for rule in chains[name].rules:
                keys |= _rule_keys(rule)
            for target in targets:
                keys |= relevant.get(target, set())
            relevant[name] = frozenset(keys)
    return relevant


def _find_cycle(chains):
    """A jump cycle in one table's chains, as [chain, ..., chain], or None (iterative: any depth)."""
    state = {}
    for start in chains:
        if start in state:
            continue
        stack = [(start, iter(chains[start].rules))]
        path = [start]
        state[start] = 1  # on the path
        while stack:
            name, rules = stack[-1]
            advanced = False
            for rule in rules:
                target = rule.target
                if target not in chains or target in BUILTIN_CHAINS:
                    continue
                if state.get(target) == 1:
                    return path[path.index(target):] + [target]
                if target not in state:
                    state[target] = 1
                    path.append(target)
                    stack.append((target, iter(chains[target].rules)))
                    advanced = True
                    break
            if not advanced:
                state[name] = 2
                stack.pop()
                path.pop()
    return None


def _merge(assumed, sub_assumed):
    merged = dict(assumed)
    merged.update(sub_assumed)
    return merged


class Walker(object):
    """Follows one first packet (see Packet) through chains, forking on sender-dependent matches.

    ``host_addresses``: the host's local addresses of the packet's family, loopback excluded.
    The walk of a chain is computed once per packet and set of assumptions (memoised), and
    without recursion, so it takes time linear in the rule set whatever the depth of the graph.
    """

    def __init__(self, tables, host_addresses):
        self.tables = tables
        self.addresses = host_addresses
        self.paths = 0
        self._memo = {}
        self._checked = {}
        self._relevant = {}
        self._matched = {}  # (id(rule), packet key) -> what match() said: a rule is judged once per packet
        self._ctx = {"marks": any(rule.target in MARK_TARGETS for chains in tables.values()
                                  for chain in chains.values() for rule in chain.rules)}

    # ---- matching
    def _conditions(self, rule, pkt):
        """False when the rule cannot match the first packet, else a list of Conditions (empty = matches).

        A rule that holds only for other packets of the port (floods, marks, ...) is False too;
        ``match`` says so with the text that becomes a note.
        """
        decided = self.match(rule, pkt)
        return False if decided is False or decided[0] is None else decided[0]

    def match(self, rule, pkt):
        """False, or (conditions, notes): conditions None when the rule acts on other packets only."""
        conds = []
        for key, (neg, value) in rule.basics.items():
            if key == "proto":
                proto = value.lower()
                hit = proto in ("all", "0") or proto == pkt.proto or (proto == "6" and pkt.proto == "tcp") \
                    or (proto == "17" and pkt.proto == "udp")
                if hit == neg:
                    return False
            elif key == "src":
                if _is_any(value):
                    if neg:
                        return False
                    continue
                if _in_net("127.0.0.1" if pkt.family == 4 else "::1", value) and \
                        ipaddress.ip_network(value, strict=False).prefixlen >= (8 if pkt.family == 4 else 128):
                    # Loopback sources never arrive from outside.
                    if not neg:
                        return False
                    continue
                try:  # as iptables-save prints it, whether read from the kernel or from user.rules
                    value = str(ipaddress.ip_network(value, strict=False))
                except ValueError:
                    pass
                conds.append(Condition(("src", value), neg, "%sfrom %s" % ("not " if neg else "", value)))
            elif key == "dst":
                if pkt.dst is not None:
                    hit = _in_net(pkt.dst, value)
                else:
                    hit = _is_any(value) or any(_in_net(a, value) for a in self.addresses)
                if hit == neg:
                    return False
            elif key == "in":
                if value in ("lo", "lo+"):
                    if not neg:
                        return False
                    continue
                conds.append(Condition(("in", value), neg, "%sin on %s" % ("not " if neg else "", value)))
            elif key == "out":
                hit = pkt.out is not None and _iface_match(value, pkt.out)
                if hit == neg:
                    return False
        others = []   # texts of matches that hold for other packets only
        limited = []  # texts of matches that hold for the first packet but not for all
        for module, opts in rule.matches:
            result = self._module(module, opts, rule, pkt)
            if result is False:
                return False
            for item in result:
                if isinstance(item, Condition):
                    conds.append(item)
                elif item[0]:
                    limited.append(item[1])
                else:
                    others.append(item[1])
        if others:
            if rule.target in (None, "ACCEPT", "RETURN") or rule.target in NON_TERMINATING:
                return None, ()  # it would let other packets through, or do nothing: nothing to tell
            senders = [c.text for c in conds if c.key[0] in ("src", "in", "set")]
            who = (" " + " and ".join(senders)) if senders else ""
            return None, ("%s%s (%s %s #%s %s)" % (" and ".join(others), who, rule.table, rule.chain, _INDEX,
                                                   _describe_target(rule)),)
        notes = ()
        if limited and rule.target == "ACCEPT":
            notes = ("%s (%s %s #%s accepts only below that)" % (" and ".join(limited), rule.table, rule.chain, _INDEX),)
        return conds, notes

    def _module(self, module, opts, rule, pkt):
        """Conditions and (holds, text) pairs for one ``-m`` match, or False."""
        found = []
        done = set()  # evaluators that read every option they need at once
        for opt, (neg, values) in opts.items():
            value = values[0] if values else ""
            family = _FAMILIES.get((module, opt))
            if family is not None:
                if family in done:
                    continue
                done.add(family)
                holds, text = family(opts, pkt, self._ctx)
                negated = any(opts[o][0] for o in opts if _FAMILIES.get((module, o)) is family)
                if holds is None:
                    found.append(self._unknown(module, opt, values, neg, rule))
                    continue
                if negated:
                    holds = not holds
                    if text and not isinstance(text, tuple):
                        text = "not " + text
                if isinstance(text, tuple):  # (text, text when negated)
                    text = text[1] if negated else text[0]
                if holds and family not in _RATE_FAMILIES:
                    text = None  # the packets it does not hold for (ESTABLISHED, ...) are not the port's guard
                if text is None:
                    if not holds:
                        return False
                    continue
                found.append((holds, text))
            elif opt in ("--dport", "--dports", "--destination-port", "--destination-ports"):
                if _port_in(pkt.dport, value) == neg:
                    return False
            elif opt in ("--sport", "--sports", "--source-port", "--source-ports"):
                found.append(Condition(("sport", value, neg), neg, "%sfrom source port %s" % ("not " if neg else "", value)))
            elif opt == "--ports":
                # Either port may match; the destination port does whatever the source port is.
                if not _port_in(pkt.dport, value):
                    found.append(Condition(("sport", value, neg), neg, "from source port %s" % value))
                elif neg:
                    return False
            elif opt == "--dst-type":
                types = set(value.upper().split(","))
                hit = ("LOCAL" in types and pkt.local) or ("UNICAST" in types)
                if hit == neg:
                    return False
            elif opt == "--src-type":
                types = set(value.upper().split(","))
                hit = "UNICAST" in types
                if hit == neg:
                    return False
            elif opt in ("--icmp-type", "--icmpv6-type"):
                return False
            elif opt == "--match-set":
                found.append(Condition(("set", value, neg), neg, "%sin ipset %s" % ("not " if neg else "", value)))
            elif module == "pkttype" and opt == "--pkt-type":
                if (value.lower() == "unicast") == neg:
                    return False
            elif module == "rt" and opt == "--rt-type":
                return False  # a routing header (ufw drops type 0) is not in an ordinary packet
            elif opt == "--ctorigdstport":
                if _port_in(pkt.orig_dport, value) == neg:
                    return False
            elif opt == "--ctdir":
                if (value.upper() == "ORIGINAL") == neg:
                    return False
            elif module in _PASSIVE and (_PASSIVE[module] is None or opt not in _PASSIVE[module]):
                continue
            else:
                found.append(self._unknown(module, opt, values, neg, rule))
        return found

    @staticmethod
    def _unknown(module, opt, values, neg, rule):
        # Not evaluated: assumed to hold when the rule admits and not to hold otherwise, so that
        # uncertainty reports exposure; the other answer is explored as well.
        generic = rule.target in ("ACCEPT", "DNAT", "REDIRECT")
        return Condition(("match", module, opt, " ".join(values), neg), generic,
                         "-m %s %s%s %s (not evaluated)" % (module, "! " if neg else "", opt, " ".join(values)))

    # ---- walking
    def check_loops(self, table):
        """Raise NetfilterLoopError naming the chains when ``table`` has a jump cycle."""
        if table not in self._checked:
            cycle = _find_cycle(self.tables.get(table, {}))
            self._checked[table] = cycle
            if not cycle:
                self._relevant[table] = _relevant_keys(self.tables.get(table, {}))
        cycle = self._checked[table]
        if cycle:
            raise NetfilterLoopError("jump cycle in the %s table: %s; iptables refuses to load such rules (ELOOP): "
                                     "remove the jump back to chain %s" % (table, " -> ".join(cycle), cycle[0]))

    def run(self, table, chain, pkt, assumed=None):
        """All outcomes of sending ``pkt`` into ``table``/``chain`` (a builtin chain)."""
        self.check_loops(table)
        outcomes = []
        for verdict, frames, path_assumed, note, notes in self._call(table, chain, pkt, dict(assumed or {})):
            outcomes.append(Outcome(verdict, list(frames), dict(path_assumed), pkt, note=note, notes=notes))
        return outcomes

    def _call(self, table, chain, pkt, assumed):
        """Run chain generators on an explicit stack: a jump is a request the driver answers."""
        pkey = pkt.key()
        root = (table, chain, pkey, frozenset(assumed.items()))
        if root in self._memo:
            return self._memo[root]
        stack = [(self._chain(table, chain, pkt, assumed), root)]
        active = set([chain])
        answer = None
        while stack:
            gen, key = stack[-1]
            try:
                target, sub_assumed = gen.send(answer)
            except StopIteration as stop:
                stack.pop()
                active.discard(key[1])
                self._memo[key] = answer = stop.value
                continue
            # A chain's walk depends only on the assumptions its own rules (and those it reaches) read.
            relevant = self._relevant.get(table, {}).get(target, ())
            if len(relevant) < len(sub_assumed):
                sub_assumed = dict((k, sub_assumed[k]) for k in relevant if k in sub_assumed)
            else:
                sub_assumed = dict((k, v) for k, v in sub_assumed.items() if k in relevant)
            key = (table, target, pkey, frozenset(sub_assumed.items()))
            if key in self._memo:
                answer = self._memo[key]
                continue
            if target in active:  # check_loops finds it first; this keeps the walk finite regardless
                raise NetfilterLoopError("jump cycle in the %s table through chain %s" % (table, target))
            active.add(target)
            stack.append((self._chain(table, target, pkt, sub_assumed), key))
            answer = None
        return answer

    def _decide(self, conds, assumed, fork):
        """Decide each condition from what the path assumed, or by forking (``fork(other)``)."""
        for cond in conds:
            if cond.key in assumed:
                # ``-i docker0`` and ``! -i docker0`` share a key (the sender is on docker0 or not):
                # what was assumed holds for one and not for the other (Docker's nat DOCKER chain
                # returns for -i docker0, then DNATs ! -i docker0).
                value, _text, generic = assumed[cond.key]
                if generic != cond.generic:
                    value = not value
            elif self.paths >= MAX_PATHS:
                value = cond.generic
                assumed[cond.key] = (value, cond.text, cond.generic)
            else:
                self.paths += 1
                other = dict(assumed)
                other[cond.key] = (not cond.generic, cond.text, cond.generic)
                fork(other)
                value = cond.generic
                assumed[cond.key] = (value, cond.text, cond.generic)
            if not value:
                return False
        return True

    def _end(self, table, chain_name, chain, assumed, notes):
        """Falling off a chain (or RETURN): a builtin chain applies its policy, a user chain returns."""
        if chain.policy and chain_name in BUILTIN_CHAINS:
            return (chain.policy, ((table, chain_name, None),), assumed, None, notes)
        return ("RETURN", (), assumed, None, notes)

    def _chain(self, table, chain_name, pkt, assumed):
        """Generator: yields (chain, assumed) for each jump, is sent the jump's results, returns this chain's.

        Results are (verdict, frames relative to this chain, assumed, note, notes).
        """
        chain = self.tables.get(table, {}).get(chain_name)
        if chain is None:
            return [("RETURN", (), assumed, "no chain %s" % chain_name, ())]
        results = []
        pkey = pkt.key()
        pending = [(0, dict(assumed), ())]
        queued = set()  # continuations after a jump, once each
        while pending:
            i, assumed, notes = pending.pop(0)
            ended = False
            while i < len(chain.rules):
                rule = chain.rules[i]
                decided = self._matched.get((id(rule), pkey))
                if decided is None:
                    decided = self._matched[(id(rule), pkey)] = self.match(rule, pkt)
                if decided is False:
                    i += 1
                    continue
                conds, rule_notes = decided
                rule_notes = tuple(n.replace(_INDEX, str(i + 1)) for n in rule_notes)
                if conds is None:
                    notes += tuple(n for n in rule_notes if n not in notes)
                    i += 1
                    continue
                start = i
                if not self._decide(conds, assumed, lambda other, s=start, n=notes: pending.append((s, other, n))):
                    i += 1
                    continue
                notes += tuple(n for n in rule_notes if n not in notes)
                here = ((table, chain_name, i + 1),)
                target = rule.target
                if target is None or target in NON_TERMINATING:
                    i += 1
                    continue
                if target in TERMINAL_FILTER:
                    results.append((target, here, assumed, None, notes))
                elif target == "RETURN":
                    results.append(self._end(table, chain_name, chain, assumed, notes))
                elif target in ("DNAT", "REDIRECT"):
                    option = "--to-destination" if target == "DNAT" else "--to-ports"
                    to = (rule.target_args.get(option, (False, [""]))[1] or [""])[0]
                    results.append((target, here, assumed, to, notes))
                elif target in ("SNAT", "MASQUERADE", "NETMAP"):
                    results.append(("ACCEPT", here, assumed, None, notes))
                elif target in self.tables.get(table, {}) and target not in BUILTIN_CHAINS:
                    subs = yield target, assumed
                    returns = 0
                    for verdict, frames, sub_assumed, note, sub_notes in subs:
                        if verdict == "RETURN" and not rule.goto:
                            # Each path back into this chain walks its rest: within the same budget as forks.
                            returns += 1
                            if returns > 1 and self.paths >= MAX_PATHS and not all(
                                    v == g for k, (v, _t, g) in sub_assumed.items() if k not in assumed):
                                continue
                            self.paths += 1 if returns > 1 else 0
                        sub_assumed = _merge(assumed, sub_assumed)
                        merged = notes + tuple(n for n in sub_notes if n not in notes)
                        if verdict != "RETURN":
                            results.append((verdict, here + frames, sub_assumed, note, merged))
                        elif rule.goto:
                            # -g pushed no return address: falling off the goto'd chain ends this one.
                            results.append(self._end(table, chain_name, chain, sub_assumed, merged))
                        elif (i + 1, frozenset(sub_assumed.items()), merged) not in queued:
                            queued.add((i + 1, frozenset(sub_assumed.items()), merged))
                            pending.append((i + 1, sub_assumed, merged))
                else:
                    # An unknown terminating target (QUEUE, a missing chain...): the end of the walk.
                    results.append((target, here, assumed, "target %s not evaluated" % target, notes))
                ended = True
                break
            if not ended:
                results.append(self._end(table, chain_name, chain, assumed, notes))
        return results


def parse_routes(text):
    """``ip -o route show table main`` -> [(network, device)] (default routes as /0)."""
    routes = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        dest = parts[0]
        if dest in ("unreachable", "blackhole", "prohibit", "throw", "local", "broadcast", "multicast"):
            continue
        if dest == "default":
            dest = "::/0" if ":" in line.split(" via ")[-1].split()[0] else "0.0.0.0/0"
        dev = parts[parts.index("dev") + 1] if "dev" in parts else None
        try:
            routes.append((ipaddress.ip_network(dest, strict=False), dev))
        except ValueError:
            continue
    return routes


def route_device(routes, address):
    """Longest-prefix match: the device a forwarded packet to ``address`` leaves on, or None."""
    addr = ipaddress.ip_address(address)
    best = None
    for net, dev in routes:
        if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, dev)
    return best[1] if best else None


_ADDR_RE = re.compile(r"^\d+:\s+(\S+)\s+(inet6?)\s+(\S+)")


def parse_addresses(text):
    """``ip -o addr show`` -> [(device, address)] without loopback and link-local addresses."""
    found = []
    for line in text.splitlines():
        m = _ADDR_RE.match(line)
        if not m:
            continue
        dev, _fam, cidr = m.groups()
        addr = ipaddress.ip_interface(cidr).ip
        if addr.is_loopback or addr.is_link_local:
            continue
        found.append((dev, str(addr)))
    return found
