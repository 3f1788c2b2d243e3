# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The UFW model: UFW's rules as ``ufw status numbered`` shows them, and the verdict the
kernel really gives a new packet to a port.

The verdict is computed on the *live* netfilter state (``iptables-save``), not on UFW's
files: that is what the kernel runs, and it includes everything UFW does not own (an
ACCEPT inserted ahead of UFW's chains, a Docker-style DNAT). UFW's ``user.rules`` files
are parsed with the same parser only to name the UFW rule that decided.

Pure functions only; runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import ipaddress
import math
import re

from ansible_collections.sipguard.firewall.plugins.module_utils import backends as nf_backends
from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import (
    NetfilterParseError,
    parse_addresses,
    parse_iptables_save,
    parse_routes,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.nftables import NftParseError, parse_ruleset

USER_CHAINS = {4: "ufw-user-input", 6: "ufw6-user-input"}
POLICY_CHAINS = ("ufw-reject-input", "ufw6-reject-input", "ufw-skip-to-policy-input",
                 "ufw6-skip-to-policy-input")

# What ufw_info reads on a host, in one place: the module runs these and the lab records them.
COMMANDS = {
    "iptables_save": ["iptables-save"],
    "ip6tables_save": ["ip6tables-save"],
    # The other backends the kernel runs beside iptables-nft; a host without them has no such binary.
    "iptables_legacy_save": ["iptables-legacy-save"],
    "ip6tables_legacy_save": ["ip6tables-legacy-save"],
    "nft_ruleset": ["nft", "-j", "list", "ruleset"],
    "ss": ["ss", "-H", "-l", "-n", "-t", "-u", "-p"],
    "ip_addr": ["ip", "-o", "addr", "show"],
    "ip_route": ["ip", "-o", "route", "show", "table", "main"],
    "ip6_route": ["ip", "-o", "-6", "route", "show", "table", "main"],
}
FILES = {
    "ufw_conf": "/etc/ufw/ufw.conf",
    "default_ufw": "/etc/default/ufw",
    "user_rules": "/etc/ufw/user.rules",
    "user6_rules": "/etc/ufw/user6.rules",
    "ip_forward": "/proc/sys/net/ipv4/ip_forward",
    "ip6_forward": "/proc/sys/net/ipv6/conf/all/forwarding",
    # ufw_port rebuilds what `ufw enable` will load from these.
    "before_rules": "/etc/ufw/before.rules",
    "before6_rules": "/etc/ufw/before6.rules",
    "after_rules": "/etc/ufw/after.rules",
    "after6_rules": "/etc/ufw/after6.rules",
}
APPLICATIONS_DIR = "/etc/ufw/applications.d"


class UfwModelError(ValueError):
    pass


# --------------------------------------------------------------------------- configuration

def parse_shell_vars(text):
    """``KEY=value`` / ``KEY="value"`` lines of /etc/default/ufw and /etc/ufw/ufw.conf."""
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


_POLICY_WORDS = {"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}


def parse_defaults(default_ufw_text):
    values = parse_shell_vars(default_ufw_text)
    return {
        "incoming": _POLICY_WORDS.get(values.get("DEFAULT_INPUT_POLICY", "DROP").upper(), "deny"),
        "outgoing": _POLICY_WORDS.get(values.get("DEFAULT_OUTPUT_POLICY", "ACCEPT").upper(), "allow"),
        "routed": _POLICY_WORDS.get(values.get("DEFAULT_FORWARD_POLICY", "DROP").upper(), "deny"),
    }, values.get("IPV6", "yes").lower() == "yes"


def parse_app_profiles(texts):
    """Application profiles (``{file name: INI text}``) -> ``{name: {title, ports}}``.

    ``ports=5060/udp|5060:5061/tcp`` lists port specs separated by ``|``; a bare port
    means tcp and udp (ufw's applications.py).
    """
    profiles = {}
    for fname in sorted(texts):
        name = None
        for raw in texts[fname].splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith(";"):
                continue
            if line.startswith("[") and line.endswith("]"):
                name = line[1:-1].strip()
                profiles[name] = {"title": "", "ports": [], "file": fname}
            elif name and "=" in line:
                key, value = line.split("=", 1)
                key = key.strip().lower()
                if key == "title":
                    profiles[name]["title"] = value.strip()
                elif key == "ports":
                    for spec in value.strip().split("|"):
                        spec = spec.strip()
                        if "/" in spec:
                            ports, proto = spec.rsplit("/", 1)
                            profiles[name]["ports"].append({"ports": ports, "proto": proto})
                        elif spec:
                            profiles[name]["ports"].append({"ports": spec, "proto": "any"})
    return profiles


# --------------------------------------------------------------------------- user rules

class UfwRule(object):
    """A UFW rule from a ``### tuple ###`` line (ufw's backend_iptables.py format).

    ``action proto dport dst sport src [dapp sapp] direction[_iface]`` then an optional
    hex-encoded ``comment=``.
    """

    __slots__ = ("number", "action", "log", "route", "proto", "dport", "dst", "sport", "src",
                 "dapp", "sapp", "direction", "interface_in", "interface_out", "v6", "comment",
                 "tuple")

    def __init__(self, tuple_text, v6):
        self.tuple = tuple_text
        self.v6 = v6
        self.number = None
        comment = ""
        if " comment=" in tuple_text:
            tuple_text, hexed = tuple_text.split(" comment=", 1)
            try:
                comment = binascii.unhexlify(hexed.strip()).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                comment = hexed.strip()
        self.comment = comment
        fields = tuple_text.split()
        if len(fields) not in (6, 7, 8, 9):
            raise UfwModelError("malformed ufw tuple (%d fields): %r" % (len(fields), tuple_text))
        action = fields[0]
        self.route = action.startswith("route:")
        if self.route:
            action = action.split(":", 1)[1]
        self.log = ""
        if "_" in action:
            action, self.log = action.split("_", 1)
        self.action = action
        self.proto, self.dport, self.dst, self.sport, self.src = fields[1:6]
        self.dapp = self.sapp = ""
        iface_field = "in"
        if len(fields) in (8, 9):
            self.dapp = "" if fields[6] == "-" else fields[6].replace("%20", " ")
            self.sapp = "" if fields[7] == "-" else fields[7].replace("%20", " ")
        if len(fields) in (7, 9):
            iface_field = fields[-1]
        self.interface_in = self.interface_out = ""
        self.direction = iface_field.split("_", 1)[0].split("!", 1)[0]
        for part in iface_field.split("!"):
            if part.startswith("in_"):
                self.interface_in = part[3:]
            elif part.startswith("out_"):
                self.interface_out = part[4:]

    def app_key(self):
        """ufw's get_app_tuple(): rules of one application share one status number."""
        if not (self.dapp or self.sapp):
            return None
        return (self.dapp or self.dport, self.dst, self.sapp or self.sport, self.src,
                self.direction, self.interface_in, self.interface_out)

    @staticmethod
    def _where(addr, ports, app, proto, v6):
        """One side of a rule the way ``ufw status`` prints it."""
        anywhere = addr in ("0.0.0.0/0", "::/0", "any")
        if app:
            text = app
        elif ports != "any":
            text = ports if proto == "any" else "%s/%s" % (ports, proto)
            if not anywhere:
                text = "%s %s" % (addr, text)
        else:
            text = "Anywhere" if anywhere else addr
        if v6 and anywhere:
            text += " (v6)"
        return text

    def to_dict(self):
        return {
            "number": self.number,
            "action": self.action,
            "direction": self.direction,
            "route": self.route,
            "log": self.log or None,
            "ports": self.dport,
            "proto": self.proto,
            "from": self._where(self.src, self.sport, self.sapp, self.proto, self.v6),
            "to": self._where(self.dst, self.dport, self.dapp, self.proto, self.v6),
            "from_ports": self.sport,
            "src": self.src,
            "dst": self.dst,
            "app": self.dapp or None,
            "interface": self.interface_in or self.interface_out or None,
            "v6": self.v6,
            "comment": self.comment or None,
        }

    def describe(self):
        d = self.to_dict()
        where = " on %s" % d["interface"] if d["interface"] else ""
        return "%s %s%s from %s" % (self.action.upper() + " " + self.direction.upper(), d["to"], where, d["from"])


def parse_user_rules(text, v6, source=None):
    """UFW rules of user.rules / user6.rules in file order, and the iptables rules ufw wrote into
    the user input chain, each with the tuple it belongs to (``Rule.tuple``), to line the live
    chain up with the UFW rules. ``source`` (the file) starts parse error messages."""
    rules = [UfwRule(line[len("### tuple ###"):].strip(), v6)
             for line in (text or "").splitlines() if line.startswith("### tuple ###")]
    tables = parse_iptables_save(text or "", source=source)
    chain = tables.get("filter", {}).get(USER_CHAINS[6 if v6 else 4])
    return rules, list(chain.rules) if chain else []


def number_rules(rules4, rules6):
    """Give each rule the number ``ufw status numbered`` shows: v4 rules, then v6 rules;
    the tuples of one application rule share the number of the first."""
    seen = {}
    number = 0
    for rule in list(rules4) + list(rules6):
        key = rule.app_key()
        if key is not None and (key, rule.v6) in seen:
            rule.number = seen[(key, rule.v6)]
            continue
        number += 1
        rule.number = number
        if key is not None:
            seen[(key, rule.v6)] = number
    return list(rules4) + list(rules6)


# --------------------------------------------------------------------------- listeners

_SS_USER = re.compile(r'\("([^"]+)",pid=(\d+)')


def parse_listeners(ss_text):
    """``ss -H -l -n -t -u -p`` -> [{proto, address, port, family, process, pid}]."""
    found = []
    for line in (ss_text or "").splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] not in ("tcp", "udp"):
            continue
        local = parts[4]
        addr, _sep, port = local.rpartition(":")
        if not port.isdigit():
            continue
        addr = addr.strip("[]")
        if "%" in addr:
            addr = addr.split("%", 1)[0]
        if addr == "*":
            families = ["ipv4", "ipv6"]
        elif ":" in addr:
            families = ["ipv6"]
        else:
            families = ["ipv4"]
        m = _SS_USER.search(line)
        for family in families:
            found.append({
                "proto": parts[0],
                "address": addr,
                "port": int(port),
                "family": family,
                "process": m.group(1) if m else None,
                "pid": int(m.group(2)) if m else None,
            })
    return found


# --------------------------------------------------------------------------- the verdict

class HostNet(object):
    """What the evaluator needs to know about one host, per address family."""

    def __init__(self, tables, addresses, routes, forwarding, user_chain_map, ufw_active, ipv6_managed=True):
        self.tables = tables              # parsed iptables-save of this family
        self.addresses = addresses        # local unicast addresses of this family
        self.routes = routes              # [(network, device)]
        self.forwarding = forwarding      # net.ipv4.ip_forward / ipv6 forwarding
        self.user_chain_map = user_chain_map  # live user-chain index (1-based) -> UfwRule
        self.ufw_active = ufw_active
        self.ipv6_managed = ipv6_managed
        self.backend = nf_backends.IPTABLES_NFT  # which backend ``tables`` was read from
        self.base_chains = []             # base chains of the other backends (their tables are in ``tables``)


def add_backends(net, found):
    """Put the other backends' tables and base chains (backends.collect) beside the main ones."""
    net.tables.update(found.tables)
    net.base_chains = list(found.base_chains)
    return net


def walk_packet(net, family, proto, port):
    """Every path a new packet to ``port``/``proto`` takes: [(outcome, dnat_outcome or None)].

    All backends' base chains on the prerouting hook, then on input (or forward after a DNAT
    to another address), in priority order (backends.walk_hooks).
    """
    return nf_backends.walk_hooks(net, family, proto, port)


def _explain(net, outcome, dnat, family):
    """(ufw rule number or None, where, one-line reason) for one outcome."""
    verdict = {"PASS": "ACCEPT", "UNROUTED": "DROP"}.get(outcome.verdict, outcome.verdict)
    frames = outcome.frames
    user_chain = USER_CHAINS[family]
    number = None
    rule_text = None
    for table, chain, index in frames:
        if table == "filter" and chain == user_chain and index is not None:
            rule = net.user_chain_map.get(index)
            if rule is not None:
                number = rule.number
                rule_text = rule.describe()
    prefix = ""
    if dnat is not None:
        table, chain, index = dnat.frames[-1]
        prefix = "DNAT to %s (%s %s rule %s) then " % (dnat.note, _table_label(table), chain, index)
    if outcome.verdict == "UNROUTED":
        return None, "dnat", "%s%s: the packet is dropped" % (prefix, outcome.note)
    if number is not None:
        where = "ufw"
        reason = "ufw rule %d (%s) %s" % (number, rule_text, _VERB[verdict])
    elif not frames:
        where = "policy"
        reason = "no netfilter rule: %s" % _VERB[verdict]
    elif nf_backends.backend_of(frames[-1][0]):
        table, chain, index = frames[-1]
        where = nf_backends.backend_of(table)
        if index is None:
            reason = "%s %s policy %s" % (_table_label(table), chain, verdict.lower())
        else:
            rule = net.tables[table][chain].rules[index - 1]
            handle = " handle %s" % rule.line if where == nf_backends.NFTABLES else ""
            reason = "%s rule (%s %s #%d%s, as iptables: %s) %s" % (
                where, table.split(":", 1)[1], chain, index, handle, rule.text(), _VERB[verdict])
    else:
        table, chain, index = frames[-1]
        if index is None or any(c in POLICY_CHAINS for _t, c, _i in frames):
            where = "policy"
            if net.ufw_active and (family == 4 or net.ipv6_managed):
                # A packet DNATed to another address meets FORWARD's policy: ufw's "routed" one.
                routed = outcome.packet is not None and not outcome.packet.local
                reason = "default %s policy: %s" % ("routed" if routed else "incoming", verdict.lower())
            elif family == 6 and net.ufw_active and not net.ipv6_managed:
                reason = "IPV6=no: UFW drops IPv6 input (%s policy %s)" % (chain, verdict.lower())
            else:
                reason = "%s%s %s policy %s" % ("UFW is inactive; " if not net.ufw_active else "",
                                                table, chain, verdict)
        else:
            rule = net.tables[table][chain].rules[index - 1]
            if chain.startswith("ufw-before") or chain.startswith("ufw6-before"):
                where = "before.rules"
            elif chain.startswith("ufw-after") or chain.startswith("ufw6-after"):
                where = "after.rules"
            elif chain.startswith("ufw"):
                where = "ufw"
            else:
                where = "netfilter"
            label = {"before.rules": "before.rules rule", "after.rules": "after.rules rule",
                     "ufw": "UFW chain rule", "netfilter": "netfilter rule outside UFW"}[where]
            reason = "%s (%s %s #%d: %s) %s" % (label, table, chain, index, rule.text(), _VERB[verdict])
    if dnat is not None:
        where = "dnat"
    return number, where, prefix + reason


def _table_label(table):
    """``nftables:inet sg`` -> ``nftables inet sg``; iptables tables keep their plain name."""
    backend = nf_backends.backend_of(table)
    return "%s %s" % (backend, table.split(":", 1)[1]) if backend else table


def _backend(net, outcome, dnat):
    """The backend whose rule (or policy) decided: the DNAT's, else the last chain's."""
    frames = (dnat.frames if dnat is not None and dnat.frames else outcome.frames)
    if not frames:
        return None
    return nf_backends.backend_of(frames[-1][0]) or net.backend


_VERB = {"ACCEPT": "accepts", "DROP": "drops", "REJECT": "rejects", "RETURN": "returns",
         "PASS": "accepts", "DNAT": "translates", "REDIRECT": "redirects"}


# --------------------------------------------------------------------------- what "restricted" means

# A restriction admits at most a /8 of public IPv4 space or a /32 of public IPv6 space (ufw_info's
# restricted_prefix); a source set wider than that is no restriction and the port is open.
DEFAULT_RESTRICTED_PREFIX = {4: 8, 6: 32}
# Address space no Internet sender has: RFC 6890 special-purpose ranges (disjoint); for IPv6 all of
# it but 2000::/3, the global unicast space.
_NOT_PUBLIC = {
    4: [ipaddress.ip_network(n) for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/3")],
}
_PUBLIC6 = ipaddress.ip_network("2000::/3")


def restricted_limits(restricted_prefix=None):
    """``{"ipv4": 8, "ipv6": 32}`` (either key optional) -> {4: 8, 6: 32}."""
    limits = dict(DEFAULT_RESTRICTED_PREFIX)
    for key, value in (restricted_prefix or {}).items():
        if value is None:
            continue
        if str(key) not in ("ipv4", "ipv6"):
            raise UfwModelError("restricted_prefix: %r is not ipv4 or ipv6" % (key,))
        family = int(str(key)[-1])
        top = 32 if family == 4 else 128
        try:
            prefix = int(value)
        except (TypeError, ValueError):
            prefix = -1
        if not 0 <= prefix <= top:
            raise UfwModelError("restricted_prefix.%s: %r is not a prefix length (0-%d)" % (key, value, top))
        limits[family] = prefix
    return limits


def _overlap(a, b):
    """Addresses two CIDR networks share (one contains the other, or none)."""
    if a.version != b.version or not a.overlaps(b):
        return 0
    return min(a.num_addresses, b.num_addresses)


def public_addresses(networks):
    """How many public addresses the union of ``networks`` (ip_network objects, one family) holds."""
    union = list(ipaddress.collapse_addresses(networks)) if networks else []
    if not union:
        return 0
    if union[0].version == 6:
        return sum(_overlap(n, _PUBLIC6) for n in union)
    return sum(n.num_addresses for n in union) - sum(_overlap(n, r) for n in union for r in _NOT_PUBLIC[4])


def too_wide(networks, family, limits):
    """A text saying why ``networks`` is no restriction, or None when it admits at most the limit."""
    count = public_addresses(networks)
    prefix = limits[family]
    max_prefix = 32 if family == 4 else 128
    if count > 2 ** (max_prefix - prefix):
        return "%s public IPv%d addresses, more than a /%d" % (_count_text(count), family, prefix)
    return None


def _count_text(count):
    """An address count as a person reads it: exact up to 2^40, else as a power of two."""
    if count < 2 ** 40:
        return str(count)
    return "2^%g" % round(math.log(count, 2), 1)


def _intersect(nets, other):
    out = []
    for net in nets:
        if net.subnet_of(other):
            out.append(net)
        elif other.subnet_of(net):
            out.append(other)
    return out


def _subtract(nets, other):
    out = []
    for net in nets:
        if not net.overlaps(other):
            out.append(net)
        elif not net.subnet_of(other):
            out.extend(net.address_exclude(other))
    return out


def default_route_devices(routes, family):
    """Devices that carry a default route of ``family``: whatever arrives there may come from anywhere."""
    return sorted(set(dev for network, dev in routes if network.prefixlen == 0 and network.version == family and dev))


def _admitted_senders(outcome, family, default_devs):
    """The sender networks one admitting path lets in from the Internet, or None when that cannot be
    said (an ipset, a match the model does not evaluate): such a path counts as a real restriction."""
    nets = [ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")]
    for key, (value, _text, generic) in outcome.assumed.items():
        member = value != generic  # the sender is in the rule's network / on the rule's interface
        if key[0] == "src":
            try:
                other = ipaddress.ip_network(key[1], strict=False)
            except ValueError:
                return None
            if other.version != family:
                continue
            nets = _intersect(nets, other) if member else _subtract(nets, other)
        elif key[0] == "in":
            on_default = any(_iface_pattern(key[1], dev) for dev in default_devs)
            if not default_devs or member != on_default:
                return []  # only senders on another interface: not the Internet
        else:
            return None
    return nets


def _iface_pattern(pattern, name):
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def wide_admission(net, family, admitted, limits):
    """Why the senders the ``admitted`` paths let in are no restriction, or None.

    The union of all admitting paths counts (``0.0.0.0/1`` and ``128.0.0.0/1`` together admit
    everyone); an interface restriction admits the Internet when the interface carries the
    default route.
    """
    union = []
    via_default = False
    default_devs = default_route_devices(net.routes, family)
    for outcome, _dnat in admitted:
        senders = _admitted_senders(outcome, family, default_devs)
        if senders is None:
            continue
        union.extend(senders)
        if senders and any(k[0] == "in" for k in outcome.assumed):
            via_default = True
    why = too_wide(union, family, limits)
    if why is None:
        return None
    where = " on %s, which carries the default route," % ", ".join(default_devs) if via_default else ""
    return "the admitted senders%s are no restriction (%s)" % (where, why)


def _acting_rules(final):
    """The rules on an admitted path that act on other packets than the first (floods, marks, sizes...)."""
    if final is None or final[0].verdict not in ("ACCEPT", "PASS"):
        return []
    return list(final[0].notes)


def evaluate_port(net, family, proto, port, restricted_prefix=None):
    """The effective verdict for new packets to ``port``/``proto`` over IPv4 (4) or IPv6 (6).

    ``state``: ``open`` when an arbitrary sender is admitted, ``restricted`` when only some
    senders or interfaces are, ``blocked`` otherwise. First match wins, across raw, mangle
    and nat PREROUTING, then INPUT (or FORWARD after a DNAT to another address).
    """
    finals = walk_packet(net, family, proto, port)
    generic = [f for f in finals if f[0].is_generic()]
    admitted = [f for f in finals if f[0].verdict in ("ACCEPT", "PASS")]
    main = generic[0] if generic else finals[0]
    number, where, reason = _explain(net, main[0], main[1], family)
    verdict = {"PASS": "ACCEPT", "UNROUTED": "DROP"}.get(main[0].verdict, main[0].verdict)
    result = {
        "state": "blocked",
        "action": verdict.lower() if verdict in ("ACCEPT", "DROP", "REJECT") else "drop",
        "rule": number,
        "reason": reason,
        "via": where,
        "backend": _backend(net, main[0], main[1]),
        "bypass": False,
        "conditions": [],
    }
    if verdict == "ACCEPT":
        result["state"] = "open"
        # Senders an earlier rule refuses (by address or ipset; interface forks are not senders).
        refused = [f for f in finals if f[0].verdict in ("DROP", "REJECT", "UNROUTED") and not f[0].is_generic()
                   and all(k[0] in ("src", "set") for k, (v, _t, g) in f[0].assumed.items() if v != g)]
        if refused:
            senders = " and ".join(refused[0][0].conditions())
            result["conditions"] = ["except " + senders]
            result["reason"] += " (except %s: %s)" % (senders, _explain(net, refused[0][0], refused[0][1], family)[2])
    elif admitted:
        chosen = admitted[0]
        number, where, reason2 = _explain(net, chosen[0], chosen[1], family)
        result.update({
            "state": "restricted",
            "action": "accept",
            "rule": number,
            "via": where,
            "backend": _backend(net, chosen[0], chosen[1]),
            "conditions": chosen[0].conditions(),
            "reason": "admitted only %s: %s; everyone else: %s" % (
                " and ".join(chosen[0].conditions()), reason2, reason),
        })
        wide = wide_admission(net, family, admitted, restricted_limits(restricted_prefix))
        if wide:
            result["state"] = "open"
            result["reason"] = "%s: %s" % (wide, result["reason"])
            result["remediation"] = ("admit only the senders that need the port (ufw_info's restricted_prefix "
                                     "sets how wide a restriction may be)")
    result["conditions"] += _acting_rules(main if verdict == "ACCEPT" else admitted[0] if admitted else None)
    if result["state"] != "blocked" and not net.ufw_active:
        result["remediation"] = ("no active UFW guards this port: install and enable UFW with the port closed "
                                 "(the close role or ufw_port does both, keeping SSH reachable)")
    if result["state"] != "blocked" and net.ufw_active and result["via"] in ("dnat", "netfilter", "before.rules"):
        result["bypass"] = True
        if result["via"] == "dnat" and result["backend"] == nf_backends.NFTABLES:
            result["remediation"] = ("the port is published by a native nftables DNAT and forwarded before UFW's "
                                     "INPUT rules see it: remove the DNAT (nft list ruleset names its table), or "
                                     "deny the forwarded port with a ufw route rule (ufw_port and the close role add "
                                     "one when UFW's forward chains see the packet)")
        elif result["via"] == "dnat":
            result["remediation"] = ("the port is published by DNAT and forwarded before UFW's INPUT rules see it: "
                                     "stop publishing it, or drop it in the DOCKER-USER chain / ufw route rules")
        else:
            result["remediation"] = ("remove the rule that admits the port outside UFW's user rules "
                                     "(%s)" % ("/etc/ufw/before.rules" if where == "before.rules"
                                               else "iptables INPUT/raw/mangle"))
    deciding = main if verdict == "ACCEPT" else admitted[0] if admitted else None
    result["closed_by"] = closed_by_option(net, result, deciding)
    if result["bypass"] and deciding is not None:
        result["remediation"] = _remediation(net, family, result, deciding)
    return result


_OPTION_TEXT = {
    "edit_ufw_files": "ufw_port edit_ufw_files: true (close role: sipguard_close_edit_ufw_files: true)",
    "docker": "ufw_port docker: true (close role: sipguard_close_docker: true)",
}


def _remediation(net, family, result, deciding):
    """What closes a port admitted past UFW's user rules: the ufw_port option that does, or (out of
    UFW's reach) the rule, its backend and the command that removes it."""
    option = result["closed_by"]
    outcome, dnat = deciding
    if option == "rules":
        return result.get("remediation") or "close it with ufw_port (or the close role)"
    if option == "edit_ufw_files":
        _table, chain, index = outcome.frames[-1]
        path = "/etc/ufw/%s%s.rules" % ("before" if "-before-" in chain else "after", "6" if family == 6 else "")
        return ("%s rule %s #%d (%s) admits the port: %s comments it out (or blocks the port ahead of it when it "
                "admits other ports too), or remove that line from %s and run ufw reload"
                % (path, chain, index, net.tables["filter"][chain].rules[index - 1].text(), _OPTION_TEXT[option],
                   path))
    if option == "docker":
        return ("the port is published by Docker (DNAT, then Docker's FORWARD rules ahead of UFW's): %s drops it "
                "in DOCKER-USER, or stop publishing it (docker run -p)" % _OPTION_TEXT[option])
    # Out of UFW's reach: the DNAT that publishes the port (else the rule that admits it) must go.
    frames = dnat.frames if dnat is not None and dnat.frames else outcome.frames
    command = _removal_command(net, family, frames[-1]) if frames else None
    if command is None:
        return result.get("remediation") or "out of UFW's reach: remove what admits the port outside UFW"
    backend, rule_text, argv = command
    return ("out of UFW's reach (no ufw_port option closes it): %s rule %s admits the port; remove it with: %s"
            % (backend, rule_text, " ".join(argv)))


def _removal_command(net, family, frame):
    """(backend, rule, argv that deletes it) for the rule at ``frame`` (table, chain, index); None for a policy."""
    table, chain, index = frame
    if index is None:
        return None
    rule = net.tables[table][chain].rules[index - 1]
    backend = nf_backends.backend_of(table) or net.backend
    if backend == nf_backends.NFTABLES:
        family_table = table.split(":", 1)[1].split()
        return backend, "(%s %s handle %s)" % (" ".join(family_table), chain, rule.line), \
            ["nft", "delete", "rule"] + family_table + [chain, "handle", str(rule.line)]
    name = table.split(":", 1)[1] if ":" in table else table
    binary = ("iptables" if family == 4 else "ip6tables") + ("-legacy" if backend == nf_backends.IPTABLES_LEGACY else "")
    return backend, "(%s %s #%d: %s)" % (name, chain, index, rule.text()), \
        [binary, "-t", name, "-D", chain, str(index)]


def closed_by_option(net, result, deciding):
    """Which ufw_port option closes an admitted port: ``rules`` (ordinary UFW rules, including
    ``ufw route`` rules for traffic forwarded through UFW's forward chains, and a deny ahead of an
    after.rules line), ``edit_ufw_files`` (a line of before.rules / before6.rules admits it), ``docker`` (a port Docker publishes, DOCKER-USER
    exists), or None when it is out of UFW's reach (an ACCEPT ahead of UFW's chains, a NAT in
    another backend whose forwarded traffic never meets UFW). None for a blocked port."""
    if result["state"] == "blocked" or deciding is None:
        return None
    if not net.ufw_active:
        return "rules"
    outcome, dnat = deciding
    chains = [c for t, c, _i in outcome.frames if t == "filter"]
    last = outcome.frames[-1] if outcome.frames else None
    if last is not None and nf_backends.backend_of(last[0]):
        return None  # another backend's rule decided: UFW cannot change it
    last_chain = last[1] if last is not None else ""
    if re.match(r"^ufw6?-before-", last_chain) and last[2] is not None:
        return "edit_ufw_files"  # ahead of the user rules: only editing the file closes it
    # (an after.rules line comes after the user rules: a managed deny shadows it, "rules" below)
    if dnat is not None and outcome.packet is not None and not outcome.packet.local:
        through_ufw = any(c.startswith("ufw") for c in chains)
        if last_chain.startswith("ufw") or (through_ufw and last is not None and last[2] is None):
            return "rules"  # UFW's forward chains decided: a ufw route rule closes it
        if "DOCKER-USER" in net.tables.get("filter", {}):
            return "docker"
        return None
    if last_chain.startswith("ufw") or last is None:
        return "rules"
    return None


# --------------------------------------------------------------------------- the whole host

def build_host_net(family, iptables_text, addresses, routes, forwarding, user_rules_text, rules, ufw_active,
                   ipv6_managed=True, tables=None):
    """Line the live user chain up with user.rules so verdicts can name UFW rule numbers.

    ``tables``: ``iptables_text`` already parsed (inspect_host parses it once, naming the command in errors).
    """
    if tables is None:
        tables = parse_iptables_save(iptables_text or "")
    user_map = {}
    if user_rules_text:
        _rules, chain_rules = parse_user_rules(user_rules_text, family == 6)
        by_tuple = dict((r.tuple, r) for r in rules if r.v6 == (family == 6))
        live = tables.get("filter", {}).get(USER_CHAINS[family])
        if live is not None and len(live.rules) == len(chain_rules):
            for index, chain_rule in enumerate(chain_rules, 1):
                if chain_rule.tuple in by_tuple:
                    user_map[index] = by_tuple[chain_rule.tuple]
    return HostNet(tables, addresses, routes, forwarding, user_map, ufw_active, ipv6_managed)


def listening_on(listeners, family, proto, port):
    fam = "ipv%d" % family
    return [l for l in listeners if l["family"] == fam and l["proto"] == proto and l["port"] == port]


def _ok(raw, key):
    cmd = (raw.get("commands") or {}).get(key)
    return cmd["out"] if cmd and cmd.get("rc") == 0 else None


def _user_rules(user_text, family, caveats):
    """(rules, user chain rules) of one family's user rules file. A file whose iptables lines cannot
    be read still gives its rules (from the tuples), with a caveat, and is not used to number
    verdicts (``user_text[family]`` becomes None): the verdict comes from the live rule set, which
    the kernel did load."""
    path = FILES["user_rules" if family == 4 else "user6_rules"]
    text = user_text[family] or ""
    try:
        return parse_user_rules(text, family == 6, source=path)
    except NetfilterParseError as exc:
        caveats.append("%s; IPv%d verdicts do not name UFW rule numbers" % (exc, family))
        user_text[family] = None
        tuples = "\n".join(line for line in text.splitlines() if line.startswith("### tuple ###"))
        return parse_user_rules(tuples, family == 6)[0], []


class UfwHost(object):
    """One host as read by ``ufw_host.gather``: UFW's configuration and rules, the live netfilter
    rule sets of every backend, addresses, routes and listeners, each parsed once.

    ``ufw_info`` reports from it and ``ufw_port`` plans on it, so both see the same host: a
    command that failed (non-zero exit) counts as no output for both (a caveat says so).
    """

    def __init__(self, raw):
        files = raw.get("files") or {}
        self.raw = raw
        self.caveats = list(raw.get("caveats") or [])
        self.installed = bool(raw.get("ufw_binary")) and files.get("ufw_conf") is not None
        self.conf = parse_shell_vars(files.get("ufw_conf"))
        self.defaults, self.ipv6 = parse_defaults(files.get("default_ufw") or "")
        self.default_vars = parse_shell_vars(files.get("default_ufw"))
        # For numbering verdicts: None when missing or unreadable (see _user_rules).
        self.numbering_text = {4: files.get("user_rules"), 6: files.get("user6_rules")}
        rules4, chain4 = _user_rules(self.numbering_text, 4, self.caveats)
        rules6, chain6 = _user_rules(self.numbering_text, 6, self.caveats)
        self.user_text = {4: files.get("user_rules") or "", 6: files.get("user6_rules") or ""}
        self.rule_files = {4: (files.get("before_rules") or "", files.get("after_rules") or ""),
                           6: (files.get("before6_rules") or "", files.get("after6_rules") or "")}
        self.rules = number_rules(rules4, rules6) if self.installed else []
        # {family: {tuple: [argument lists ufw wrote into the user chain for it]}}
        self.user_args = {4: {}, 6: {}}
        for family, chain in ((4, chain4), (6, chain6)):
            for rule in chain:
                self.user_args[family].setdefault(rule.tuple, []).append(rule.args)
        self.profiles = parse_app_profiles(raw.get("applications") or {}) if self.installed else {}
        self.live_text = {}
        for family, key in ((4, "iptables_save"), (6, "ip6tables_save")):
            self.live_text[family] = _ok(raw, key)
            if self.live_text[family] is None:
                self.caveats.append("%s failed or is missing: IPv%d verdicts assume no netfilter rules" % (
                    COMMANDS[key][0], family))
                self.live_text[family] = ""
        self.live = dict((family, parse_iptables_save(self.live_text[family], source=COMMANDS[key][0]))
                         for family, key in ((4, "iptables_save"), (6, "ip6tables_save")))
        self.active = USER_CHAINS[4] in self.live[4].get("filter", {})
        addresses = parse_addresses(_ok(raw, "ip_addr") or "")
        self.addresses = {4: [a for _d, a in addresses if ":" not in a], 6: [a for _d, a in addresses if ":" in a]}
        self.routes = {4: parse_routes(_ok(raw, "ip_route") or ""), 6: parse_routes(_ok(raw, "ip6_route") or "")}
        self.forwarding = {4: (files.get("ip_forward") or "0").strip() == "1",
                           6: (files.get("ip6_forward") or "0").strip() == "1"}
        self.listeners = parse_listeners(_ok(raw, "ss") or "")
        self._read_backends(raw)

    def _read_backends(self, raw):
        """The other backends the kernel runs beside iptables-nft (iptables-legacy, native nftables)."""
        self.variant = nf_backends.iptables_variant(self.live_text[4] or self.live_text[6])
        ruleset = None
        nft_text = _ok(raw, "nft_ruleset")
        if nft_text is not None:
            try:
                ruleset = parse_ruleset(nft_text)
            except NftParseError as exc:
                self.caveats.append("%s: native nftables tables are not evaluated" % exc)
        elif ((raw.get("commands") or {}).get("nft_ruleset") or {}).get("rc") not in (None, 0):
            self.caveats.append("nft -j list ruleset failed (%s): native nftables tables are not evaluated"
                                % ((raw["commands"]["nft_ruleset"].get("err") or "").strip() or "no message"))
        owned = nf_backends.owned_by_iptables_nft(self.live_text[4], self.live_text[6]) \
            if self.variant == nf_backends.IPTABLES_NFT else set()
        self.backends = {}
        for family in (4, 6):
            self.backends[family] = nf_backends.collect(
                family, self.variant, _ok(raw, "iptables_legacy_save" if family == 4 else "ip6tables_legacy_save"),
                ruleset, owned)

    def net(self, family, tables=None, user_map=None, ufw_active=None):
        """The HostNet of ``family`` with every backend; ``tables``/``user_map``/``ufw_active`` replace
        the live ones (the planner's simulated rule sets)."""
        if tables is None:
            net = build_host_net(family, self.live_text[family], self.addresses[family], self.routes[family],
                                 self.forwarding[family], self.numbering_text[family], self.rules, self.active,
                                 self.ipv6, tables=dict(self.live[family]))  # add_backends adds to it
        else:
            net = HostNet(tables, self.addresses[family], self.routes[family], self.forwarding[family], user_map,
                          ufw_active, self.ipv6)
        net.backend = self.variant
        return add_backends(net, self.backends[family])


def inspect_host(raw, port_specs, restricted_prefix=None):
    """Turn what a host gave us (command outputs and files, see COMMANDS/FILES, or the UfwHost
    parsed from them) into the ``ufw_info`` result: ``ufw``, ``listeners``, ``exposure``,
    ``exposed``, ``backends``, ``caveats``.

    ``restricted_prefix`` ({"ipv4": 8, "ipv6": 32}) is how wide a source restriction may be and
    still count as ``restricted``."""
    host = raw if isinstance(raw, UfwHost) else UfwHost(raw)
    caveats = list(host.caveats)
    conf = host.conf
    installed = host.installed
    defaults, ipv6 = host.defaults, host.ipv6
    rules = host.rules
    profiles = host.profiles
    active = host.active
    summary = {}
    nets = {}
    for family in (4, 6):
        nets[family] = host.net(family)
        found = host.backends[family]
        for table, chains in nets[family].tables.items():
            if not nf_backends.backend_of(table):
                found.note(host.variant, "%s %s" % ("ip" if family == 4 else "ip6", table),
                           nf_backends.rule_count({table: chains}))
        for name, counts in found.summary.items():
            summary.setdefault(name, {}).update(counts)  # an inet table is seen by both families: once
    listeners = host.listeners
    exposure = []
    for spec in port_specs:
        item = {"port": spec.port, "proto": spec.proto}
        for family in (4, 6):
            if not nets[family].addresses:
                verdict = {"state": "blocked", "action": "none", "rule": None, "via": "address",
                           "reason": "the host has no routable IPv%d address" % family,
                           "bypass": False, "conditions": []}
            else:
                verdict = evaluate_port(nets[family], family, spec.proto, spec.port, restricted_prefix)
            verdict["listening"] = bool(listening_on(listeners, family, spec.proto, spec.port))
            if not installed and verdict.get("closed_by"):
                verdict["closed_by"] = None  # UFW must be installed first (the remediation says so)
            item["ipv%d" % family] = verdict
        exposure.append(item)
    rule_dicts = []
    for rule in rules:
        d = rule.to_dict()
        if rule.dapp and rule.dapp in profiles:
            d["app_ports"] = profiles[rule.dapp]["ports"]
        rule_dicts.append(d)
    ports = set((s.port, s.proto) for s in port_specs)
    return {
        "ufw": {
            "installed": installed,
            "active": active,
            "enabled": conf.get("ENABLED", "no").lower() == "yes",
            "ipv6": ipv6,
            "defaults": defaults,
            "logging": conf.get("LOGLEVEL", "off") if installed else None,
            "rules": rule_dicts,
            "app_profiles": profiles,
        },
        "listeners": [l for l in listeners if (l["port"], l["proto"]) in ports],
        "exposure": exposure,
        "exposed": any(item[f]["state"] != "blocked" for item in exposure for f in ("ipv4", "ipv6")),
        "backends": [{"name": name, "tables": sorted(t for t, n in counts.items() if n),
                      "rules": sum(counts.values())}
                     for name, counts in sorted(summary.items(), key=lambda kv: nf_backends.BACKEND_ORDER.index(kv[0]))
                     if sum(counts.values())],
        "caveats": caveats,
    }
