# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Native nftables rule sets (``nft -j list ruleset``) as the netfilter model's rules.

The walker in netfilter.py follows iptables rules; this module does not walk anything. It
translates each nft rule into the argument list iptables would use for the same match
(``udp dport 5060`` -> ``-p udp --dport 5060``, ``ip saddr 10.0.0.0/8`` -> ``-s 10.0.0.0/8``,
``ct state new`` -> ``-m conntrack --ctstate NEW``, ``limit rate over 20/second`` ->
``-m hashlimit --hashlimit-above 20/second``) and builds the same ``Rule``/``Chain`` objects, so
one walker and one set of match semantics serve every backend. An expression with no
iptables equivalent becomes ``-m nft --expr ...``, which the walker does not evaluate and
decides in the direction that reports exposure.

A rule is translated per address family: in an ``inet`` table ``ip saddr ...`` implies IPv4
(nft adds that dependency itself), so the rule does not exist for IPv6 packets. A rule whose
matches take a set (``meta l4proto { tcp, udp }``, a verdict map) becomes one rule per element,
in order; their keys are disjoint, so at most one of them matches a packet.

iptables-nft keeps its tables (``ip filter``, ``ip6 nat``...) in nftables too; those are read
from ``iptables-save`` (which understands their xt expressions) and skipped here: ``owned``
names them.

Pure functions only; runs on target Python 3.8+ (json from the standard library).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import Chain, Rule

BACKEND = "nftables"
TABLE_PREFIX = "nftables:"
# Families whose base chains see IPv4 / IPv6 packets on the prerouting, input and forward hooks.
FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}
HOOKS = ("prerouting", "input", "forward")
MAX_EXPANSION = 64
_VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT", "return": "RETURN",
             "queue": "NFQUEUE"}
_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "132": "sctp"}
_NEVER_SIP = ("icmp", "icmpv6", "ipv6-icmp", "igmp", "arp", "vlan")


class NftParseError(ValueError):
    pass


class NftRuleset(object):
    """``nft -j list ruleset``, grouped: tables, chains, rules (in order) and named sets/maps."""

    def __init__(self):
        self.tables = []      # [(family, name)]
        self.chains = {}      # (family, table, chain) -> dict from nft (type, hook, prio, policy)
        self.rules = {}       # (family, table, chain) -> [rule dict]
        self.sets = {}        # (family, table, set name) -> [elements]
        self.version = None

    def rule_count(self, family, table):
        return sum(len(rules) for (fam, tab, _c), rules in self.rules.items() if (fam, tab) == (family, table))


def parse_ruleset(text):
    """Parse ``nft -j list ruleset`` output; empty output (no nft, no tables) is an empty ruleset."""
    ruleset = NftRuleset()
    if not (text or "").strip():
        return ruleset
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise NftParseError("nft -j list ruleset: not JSON (%s)" % exc)
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise NftParseError("nft -j list ruleset: no \"nftables\" list in the output")
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        kind, body = list(item.items())[0]
        if not isinstance(body, dict):
            continue
        if kind == "metainfo":
            ruleset.version = body.get("version")
        elif kind == "table":
            ruleset.tables.append((body.get("family"), body.get("name")))
        elif kind == "chain":
            key = (body.get("family"), body.get("table"), body.get("name"))
            ruleset.chains[key] = body
            ruleset.rules.setdefault(key, [])
        elif kind == "rule":
            key = (body.get("family"), body.get("table"), body.get("chain"))
            ruleset.rules.setdefault(key, []).append(body)
        elif kind in ("set", "map"):
            key = (body.get("family"), body.get("table"), body.get("name"))
            ruleset.sets[key] = body.get("elem") or []
    return ruleset


def table_key(family, name):
    """The key of an nft table in the walker's table dict (never clashes with ``filter``, ``nat``...)."""
    return "%s%s %s" % (TABLE_PREFIX, family, name)


# --------------------------------------------------------------------------- expressions

class _Never(Exception):
    """The rule cannot match a packet of the family being translated."""


def _unwrap(value):
    """A set element may carry timeouts or counters: ``{"elem": {"val": ...}}``."""
    if isinstance(value, dict) and "elem" in value:
        return _unwrap(value["elem"].get("val"))
    return value


def _scalar(value):
    value = _unwrap(value)
    if isinstance(value, dict):
        if "prefix" in value:
            return "%s/%s" % (value["prefix"].get("addr"), value["prefix"].get("len"))
        if "range" in value:
            low, high = value["range"]
            return "%s:%s" % (_scalar(low), _scalar(high))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class _Context(object):
    def __init__(self, ruleset, family, table_family, table):
        self.ruleset = ruleset
        self.family = family
        self.table_family = table_family
        self.table = table

    def elements(self, right):
        """The elements of an anonymous set, a named set (``@name``) or a single value."""
        if isinstance(right, dict) and "set" in right:
            items = right["set"]
            return items if isinstance(items, list) else [items]
        if isinstance(right, str) and right.startswith("@"):
            return list(self.ruleset.sets.get((self.table_family, self.table, right[1:]), []))
        if isinstance(right, list):
            return right
        return [right]


def _family_of(protocol):
    if protocol in ("ip", "icmp", "igmp"):
        return 4
    if protocol in ("ip6", "icmpv6"):
        return 6
    return None


def _neg(op):
    if op in ("==", "in", "eq", None):
        return []
    if op in ("!=", "ne"):
        return ["!"]
    raise ValueError(op)


def _alternatives(expr, ctx):
    """One ``match`` -> a list of alternative argument fragments (any one may match).

    Raises _Never when no packet of ctx.family can match; returns None when the match has no
    iptables equivalent (the caller keeps it as a match the walker does not evaluate).
    """
    op = expr.get("op", "==")
    left = expr.get("left")
    right = expr.get("right")
    if not isinstance(left, dict) or len(left) != 1:
        return None
    kind, body = list(left.items())[0]
    body = body if isinstance(body, dict) else {}
    try:
        bang = _neg(op)
    except ValueError:
        return None  # <, >, <= ... : not evaluated
    if kind == "payload":
        proto, field = body.get("protocol"), body.get("field")
        fam = _family_of(proto)
        if fam is not None and fam != ctx.family:
            raise _Never()
        if proto in _NEVER_SIP:
            raise _Never()
        if field in ("saddr", "daddr") and proto in ("ip", "ip6"):
            flag = "-s" if field == "saddr" else "-d"
            if isinstance(right, str) and right.startswith("@"):
                return [["-m", "set"] + bang + ["--match-set", right[1:], "src" if flag == "-s" else "dst"]]
            values = [_scalar(v) for v in ctx.elements(right)]
            if any(":" in v and "." in v for v in values) or any(":" in v and ctx.family == 4 for v in values):
                return None  # an address range: not evaluated
            if bang and len(values) > 1:
                return [["-m", "set", "!", "--match-set", "{%s}" % ",".join(values), "src" if flag == "-s" else "dst"]]
            return [bang + [flag, v] for v in values]
        if field in ("protocol", "nexthdr") and proto in ("ip", "ip6"):
            return _protocols(right, bang, ctx)
        if field in ("dport", "sport") and proto in ("tcp", "udp", "sctp", "udplite", "dccp", "th"):
            spec = ",".join(_scalar(v) for v in ctx.elements(right))
            option = "--dport" if field == "dport" else "--sport"
            if proto == "th":
                return [["-m", "multiport"] + bang + [option + "s", spec]]
            return [["-p", proto, "-m", "multiport"] + bang + [option + "s", spec]]
        if field == "length" and proto in ("ip", "ip6"):
            return [["-m", "length"] + bang + ["--length", ",".join(_scalar(v) for v in ctx.elements(right))]]
        return None
    if kind == "meta":
        key = body.get("key")
        if key == "l4proto":
            return _protocols(right, bang, ctx)
        if key in ("nfproto", "protocol"):  # the address family, or the ethertype (ip, ip6)
            names = [str(_unwrap(v)) for v in ctx.elements(right)]
            hit = ("ipv%d" % ctx.family) in names or ("ip" if ctx.family == 4 else "ip6") in names
            if hit == bool(bang):
                raise _Never()
            return [[]]
        if key in ("iifname", "oifname", "iif", "oif"):
            flag = "-i" if key.startswith("i") else "-o"
            names = [str(_unwrap(v)) for v in ctx.elements(right)]
            names = [n[:-1] + "+" if n.endswith("*") else n for n in names]
            if bang and len(names) > 1:
                return None
            return [bang + [flag, n] for n in names]
        if key == "mark":
            return [["-m", "mark"] + bang + ["--mark", v] for v in (_scalar(x) for x in ctx.elements(right))]
        if key == "pkttype":
            return [["-m", "pkttype"] + bang + ["--pkt-type", str(_unwrap(v))] for v in ctx.elements(right)]
        if key == "length":
            return [["-m", "length"] + bang + ["--length", ",".join(_scalar(v) for v in ctx.elements(right))]]
        return None
    if kind == "ct":
        key = body.get("key")
        values = [str(_unwrap(v)) for v in ctx.elements(right)]
        if key == "state":
            return [["-m", "conntrack"] + bang + ["--ctstate", ",".join(v.upper() for v in values)]]
        if key == "status":
            return [["-m", "conntrack"] + bang + ["--ctstatus", ",".join(v.upper() for v in values)]]
        if key == "mark":
            return [["-m", "connmark"] + bang + ["--mark", v] for v in values]
        return None
    if kind == "fib" and body.get("result") == "type":
        flags = body.get("flags") or []
        flags = flags if isinstance(flags, list) else [flags]
        option = "--dst-type" if "daddr" in flags else "--src-type"
        types = ",".join(str(_unwrap(v)).upper() for v in ctx.elements(right))
        return [["-m", "addrtype"] + bang + [option, types]]
    return None


def _protocols(right, bang, ctx):
    names = []
    for value in ctx.elements(right):
        name = str(_unwrap(value))
        names.append(_PROTO_NUMBERS.get(name, name))
    if bang:
        return [["!", "-p", names[0]]] if len(names) == 1 else None
    alternatives = []
    for name in names:
        if name in _NEVER_SIP:
            continue  # icmp, ipv6-icmp...: never a SIP packet
        alternatives.append(["-p", name])
    if not alternatives:
        raise _Never()
    return alternatives


def _unknown(expr):
    text = json.dumps(expr, sort_keys=True, separators=(",", ":"))
    return [["-m", "nft", "--expr", text if len(text) <= 120 else text[:117] + "..."]]


def _address(addr, port, family):
    if addr is None:
        return ":%s" % port if port is not None else ""
    addr = _scalar(addr)
    if port is None:
        return addr
    return ("[%s]:%s" % (addr, _scalar(port))) if family == 6 else "%s:%s" % (addr, _scalar(port))


def _statement(stmt, ctx):
    """A non-match statement -> (alternatives or None, target args or None)."""
    kind, body = list(stmt.items())[0]
    if kind in _VERDICTS:
        return [[]], ["-j", _VERDICTS[kind]]
    if kind in ("jump", "goto"):
        return [[]], ["-j" if kind == "jump" else "-g", (body or {}).get("target")]
    if kind in ("counter", "log", "comment", "notrack", "continue", "mangle", "meta", "ct"):
        return [[]], None  # a side effect; the packet goes on through the chain
    if kind == "limit":
        body = body or {}
        rate = "%s/%s" % (body.get("rate"), body.get("per", "second"))
        if body.get("inv"):
            # "limit rate over N": iptables' equivalent is an unnamed-mode hashlimit (one bucket).
            return [["-m", "hashlimit", "--hashlimit-above", rate, "--hashlimit-name", "nft"]], None
        return [["-m", "limit", "--limit", rate]], None
    if kind == "dnat":
        body = body or {}
        fam = {"ip": 4, "ip6": 6}.get(body.get("family"))
        if fam is not None and fam != ctx.family:
            raise _Never()
        return [[]], ["-j", "DNAT", "--to-destination", _address(body.get("addr"), body.get("port"), ctx.family)]
    if kind == "redirect":
        port = (body or {}).get("port")
        return [[]], ["-j", "REDIRECT"] + (["--to-ports", _scalar(port)] if port is not None else [])
    if kind in ("snat", "masquerade"):
        return [[]], ["-j", "MASQUERADE"]
    return _unknown(stmt), None


def _vmap(body, ctx):
    """``KEY vmap { k : verdict, ... }`` -> [(alternative fragment, target)], one per element."""
    elements = body.get("data")
    if isinstance(elements, dict) and "set" in elements:
        elements = elements["set"]
    elif isinstance(elements, str) and elements.startswith("@"):
        elements = ctx.ruleset.sets.get((ctx.table_family, ctx.table, elements[1:]), [])
    out = []
    for pair in elements or []:
        if not isinstance(pair, list) or len(pair) != 2:
            return None
        key, verdict = pair
        try:
            alts = _alternatives({"op": "==", "left": body.get("key"), "right": key}, ctx)
        except _Never:
            continue
        _alts, target = _statement(verdict, ctx) if isinstance(verdict, dict) else ([[]], None)
        if alts is None or target is None:
            return None
        out.extend((alt, target) for alt in alts)
    return out


def translate_rule(rule, ctx):
    """One nft rule -> [iptables argument lists] for ctx.family (empty when it cannot match).

    A rule whose JSON does not have the shape libnftables-json(5) describes becomes one rule
    with an unevaluated match and no verdict: it decides nothing, so a drop the model cannot read
    never hides an open port.
    """
    try:
        return _translate(rule, ctx)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError):
        return [_unknown({"unreadable rule": rule.get("handle") if isinstance(rule, dict) else None})[0]]


def _translate(rule, ctx):
    alternatives = [[]]
    target = None
    tail = None  # a verdict map: one rule per element
    try:
        for stmt in rule.get("expr") or []:
            if not isinstance(stmt, dict) or len(stmt) != 1:
                alts = _unknown(stmt)
            elif "match" in stmt:
                alts = _alternatives(stmt["match"], ctx)
                if alts is None:
                    alts = _unknown(stmt)
            elif "vmap" in stmt:
                tail = _vmap(stmt["vmap"], ctx)
                if tail is None:
                    alts, tail = _unknown(stmt), None
                else:
                    continue
            elif "xt" in stmt:
                alts = _unknown(stmt)
            else:
                alts, stmt_target = _statement(stmt, ctx)
                if stmt_target is not None:
                    target = stmt_target
            if len(alternatives) * len(alts) > MAX_EXPANSION:
                alts = _unknown({"expanded": "more than %d alternatives" % MAX_EXPANSION})
                alternatives = [alternatives[0]]
            alternatives = [a + b for a in alternatives for b in alts]
    except _Never:
        return []
    if tail is not None:
        return [a + alt + list(t) for a in alternatives for alt, t in tail]
    return [a + (list(target) if target else []) for a in alternatives]


def native_tables(ruleset, family, owned=()):
    """The nft tables the kernel runs for ``family`` (4 or 6) and that ``owned`` does not name,
    as walker tables ``{table key: {chain: Chain}}``, and their base chains on the prerouting,
    input and forward hooks: [{table, chain, hook, priority, type, policy, name}]."""
    tables = {}
    bases = []
    owned = set(owned)
    for fam, name in ruleset.tables:
        if fam not in FAMILIES[family] or (fam, name) in owned:
            continue
        key = table_key(fam, name)
        chains = tables.setdefault(key, {})
        ctx = _Context(ruleset, family, fam, name)
        for (cfam, ctab, cname), info in ruleset.chains.items():
            if (cfam, ctab) != (fam, name):
                continue
            policy = (info.get("policy") or "accept").upper() if info.get("hook") else None
            chain = chains.setdefault(cname, Chain(cname, policy))
            for nft_rule in ruleset.rules.get((cfam, ctab, cname), []):
                for args in translate_rule(nft_rule, ctx):
                    chain.rules.append(Rule(key, cname, [str(a) for a in args], line=nft_rule.get("handle")))
            if info.get("hook") in HOOKS and info.get("type") in ("filter", "nat"):
                prio = info.get("prio", 0)
                bases.append({"table": key, "chain": cname, "hook": info["hook"],
                              "priority": prio if isinstance(prio, int) else 0, "type": info["type"],
                              "policy": policy, "name": "%s %s %s" % (fam, name, cname)})
    return tables, bases
