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
MAX_DEPTH = 64


class NetfilterParseError(ValueError):
    pass


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
                module = args[i + 1]
                current = {}
                self.matches.append((module, current))
                i += 2
                continue
            if tok in ("-j", "--jump", "-g", "--goto"):
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


def parse_iptables_save(text):
    """Parse iptables-save / iptables-restore text into ``{table: {chain: Chain}}``.

    Rules keep their position in their chain; ``-I CHAIN [N]`` inserts as iptables-restore does.
    """
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
            if rest and rest[0].isdigit():
                position = int(rest[0])
                rest = rest[1:]
        chain = table.setdefault(name, Chain(name, "ACCEPT" if name in BUILTIN_CHAINS else None))
        rule = Rule(table_name, name, rest, lineno, pending_tuple)
        if position is None:
            chain.rules.append(rule)
        else:
            chain.rules.insert(position - 1, rule)
    return tables


# --------------------------------------------------------------------------- packets

class Packet(object):
    """A new (conntrack NEW) packet arriving from outside the host."""

    __slots__ = ("family", "proto", "dport", "dst", "local", "out", "dnat")

    def __init__(self, family, proto, dport, dst=None, local=True, out=None, dnat=False):
        self.family = family
        self.proto = proto
        self.dport = dport
        self.dst = dst
        self.local = local
        self.out = out
        self.dnat = dnat

    def moved(self, **changes):
        values = dict((k, getattr(self, k)) for k in self.__slots__)
        values.update(changes)
        return Packet(**values)


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
    """Where one path through the rule set ended."""

    __slots__ = ("verdict", "frames", "assumed", "packet", "note")

    def __init__(self, verdict, frames, assumed, packet, note=None):
        self.verdict = verdict    # ACCEPT / DROP / REJECT / RETURN / DNAT / REDIRECT
        self.frames = frames      # [(table, chain, index or None)]: the jumps that led to the verdict
        self.assumed = assumed    # {condition key: (bool, text)}
        self.packet = packet
        self.note = note

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
    """``5060`` in ``5060``, ``5000:6000`` or ``80,443,5000:6000``."""
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            low, high = part.split(":", 1)
            low = int(low) if low else 0
            high = int(high) if high else 65535
            if low <= port <= high:
                return True
        elif part.isdigit() and int(part) == port:
            return True
    return False


def _iface_match(pattern, name):
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


class Walker(object):
    """Follows one packet through chains, forking on sender-dependent matches.

    ``host`` describes the host: ``addresses`` (its local addresses, loopback excluded).
    """

    def __init__(self, tables, host_addresses):
        self.tables = tables
        self.addresses = host_addresses
        self.paths = 0

    # ---- matching
    def _conditions(self, rule, pkt):
        """Return False when the rule cannot match, else a list of Conditions (empty = matches)."""
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
                if value == "lo" or value == "lo+":
                    if not neg:
                        return False
                    continue
                conds.append(Condition(("in", value), neg, "%sin on %s" % ("not " if neg else "", value)))
            elif key == "out":
                hit = pkt.out is not None and _iface_match(value, pkt.out)
                if hit == neg:
                    return False
        for module, opts in rule.matches:
            result = self._module(module, opts, rule, pkt)
            if result is False:
                return False
            conds.extend(result)
        return conds

    def _module(self, module, opts, rule, pkt):
        conds = []
        for opt, (neg, values) in opts.items():
            value = values[0] if values else ""
            if opt in ("--dport", "--dports", "--destination-port", "--destination-ports"):
                if module in ("tcp", "udp", "multiport", "sctp", "udplite", "dccp") or opt in ("--dport", "--dports"):
                    if _port_in(pkt.dport, value) == neg:
                        return False
            elif opt in ("--sport", "--sports", "--source-port", "--source-ports"):
                conds.append(Condition(("sport", value, neg), neg, "%sfrom source port %s" % ("not " if neg else "", value)))
            elif opt == "--ports":
                # Either port may match; the destination port does whatever the source port is.
                if not _port_in(pkt.dport, value):
                    conds.append(Condition(("sport", value, neg), neg, "from source port %s" % value))
                elif neg:
                    return False
            elif opt in ("--ctstate", "--state"):
                states = set(value.upper().split(","))
                hit = "NEW" in states or (pkt.dnat and "DNAT" in states)
                if hit == neg:
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
            elif opt in ("--update", "--rcheck"):
                # ufw limit: the first packets from a sender are not yet over the limit.
                if not neg:
                    return False
            elif opt in ("--icmp-type", "--icmpv6-type"):
                return False
            elif opt == "--match-set":
                conds.append(Condition(("set", value, neg), neg, "%sin ipset %s" % ("not " if neg else "", value)))
            elif module in ("limit", "hashlimit", "comment", "recent", "conntrack", "state", "addrtype",
                            "multiport", "tcp", "udp", "connlimit", "pkttype", "set", "mark", "connmark",
                            "hl", "ttl", "rt", "ipv6header", "length", "icmp", "icmp6", "ipv6-icmp"):
                # Options that do not change where a first, ordinary packet goes.
                if module == "pkttype" and opt == "--pkt-type":
                    if ("unicast" == value.lower()) == neg:
                        return False
                if module == "rt" and opt == "--rt-type":
                    # A routing header (ufw drops type 0) is not in an ordinary packet.
                    return False
                continue
            else:
                generic = rule.target in ("ACCEPT", "DNAT", "REDIRECT")
                conds.append(Condition(("match", module, opt, value, neg), generic,
                                       "-m %s %s %s (not evaluated)" % (module, opt, " ".join(values))))
        return conds

    # ---- walking
    def run(self, table, chain, pkt, assumed=None):
        """All outcomes of sending ``pkt`` into ``table``/``chain`` (a builtin chain)."""
        return self._walk(table, chain, 0, pkt, dict(assumed or {}), [], 0)

    def _walk(self, table, chain_name, start, pkt, assumed, frames, depth):
        assumed = dict(assumed)  # each path owns its assumptions
        chains = self.tables.get(table, {})
        chain = chains.get(chain_name)
        if chain is None or depth > MAX_DEPTH:
            return [Outcome("RETURN", frames, assumed, pkt, note="no chain %s" % chain_name)]
        outcomes = []
        i = start
        while i < len(chain.rules):
            rule = chain.rules[i]
            conds = self._conditions(rule, pkt)
            if conds is False:
                i += 1
                continue
            # Decide each condition: from what this path already assumed, or by forking.
            matched = True
            for cond in conds:
                if cond.key in assumed:
                    value = assumed[cond.key][0]
                elif self.paths >= MAX_PATHS:
                    value = cond.generic
                    assumed[cond.key] = (value, cond.text, cond.generic)
                else:
                    self.paths += 1
                    other = dict(assumed)
                    other[cond.key] = (not cond.generic, cond.text, cond.generic)
                    outcomes.extend(self._walk(table, chain_name, i, pkt, other, frames, depth))
                    value = cond.generic
                    assumed[cond.key] = (value, cond.text, cond.generic)
                if not value:
                    matched = False
                    break
            if not matched:
                i += 1
                continue
            here = frames + [(table, chain_name, i + 1)]
            target = rule.target
            if target is None or target in NON_TERMINATING:
                i += 1
                continue
            if target in ("ACCEPT", "DROP", "REJECT"):
                outcomes.append(Outcome(target, here, assumed, pkt))
                return outcomes
            if target == "RETURN":
                break
            if target == "DNAT":
                to = rule.target_args.get("--to-destination", (False, [""]))[1][0]
                outcomes.append(Outcome("DNAT", here, assumed, pkt, note=to))
                return outcomes
            if target == "REDIRECT":
                to = rule.target_args.get("--to-ports", (False, [""]))[1][0]
                outcomes.append(Outcome("REDIRECT", here, assumed, pkt, note=to))
                return outcomes
            if target in ("SNAT", "MASQUERADE", "NETMAP"):
                outcomes.append(Outcome("ACCEPT", here, assumed, pkt))
                return outcomes
            if target in chains:
                subs = self._walk(table, target, 0, pkt, assumed, here, depth + 1)
                for sub in subs:
                    if sub.verdict != "RETURN":
                        outcomes.append(sub)
                    elif rule.goto:
                        outcomes.append(Outcome("RETURN", frames, sub.assumed, pkt))
                    else:
                        outcomes.extend(self._walk(table, chain_name, i + 1, pkt, sub.assumed, frames, depth))
                return outcomes
            # An unknown terminating target (QUEUE, a missing chain...): treat as the end of the walk.
            outcomes.append(Outcome(target, here, assumed, pkt, note="target %s not evaluated" % target))
            return outcomes
        if chain.policy and chain_name in BUILTIN_CHAINS:
            outcomes.append(Outcome(chain.policy, frames + [(table, chain_name, None)], assumed, pkt))
        else:
            outcomes.append(Outcome("RETURN", frames, assumed, pkt))
        return outcomes


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
