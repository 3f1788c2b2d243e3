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
import re

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import (
    Outcome,
    Packet,
    Walker,
    parse_addresses,
    parse_iptables_save,
    parse_routes,
    route_device,
)

USER_CHAINS = {4: "ufw-user-input", 6: "ufw6-user-input"}
POLICY_CHAINS = ("ufw-reject-input", "ufw6-reject-input", "ufw-skip-to-policy-input",
                 "ufw6-skip-to-policy-input")

# What ufw_info reads on a host, in one place: the module runs these and the lab records them.
COMMANDS = {
    "iptables_save": ["iptables-save"],
    "ip6tables_save": ["ip6tables-save"],
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


def parse_user_rules(text, v6):
    """UFW rules of user.rules / user6.rules in file order, and the iptables rules ufw wrote into
    the user input chain, each with the tuple it belongs to (``Rule.tuple``), to line the live
    chain up with the UFW rules."""
    rules = [UfwRule(line[len("### tuple ###"):].strip(), v6)
             for line in (text or "").splitlines() if line.startswith("### tuple ###")]
    tables = parse_iptables_save(text or "")
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


def _stage(walker, tables, table, chain, pkt, assumed):
    if chain not in tables.get(table, {}):
        return [Outcome("PASS", [], assumed, pkt)]  # table not loaded: the packet goes through
    return walker.run(table, chain, pkt, assumed)


def walk_packet(net, family, proto, port):
    """Every path a new packet to ``port``/``proto`` takes: [(outcome, dnat_outcome or None)]."""
    walker = Walker(net.tables, net.addresses)
    pkt = Packet(family, proto, port, dst=None, local=True)
    finals = []
    for raw in _stage(walker, net.tables, "raw", "PREROUTING", pkt, {}):
        if raw.verdict in ("DROP", "REJECT"):
            finals.append((raw, None))
            continue
        for mangle in _stage(walker, net.tables, "mangle", "PREROUTING", pkt, raw.assumed):
            if mangle.verdict in ("DROP", "REJECT"):
                finals.append((mangle, None))
                continue
            for nat in _stage(walker, net.tables, "nat", "PREROUTING", pkt, mangle.assumed):
                moved, dnat = pkt, None
                if nat.verdict == "DNAT" and nat.note:
                    dnat = nat
                    to = nat.note
                    if to.startswith("["):
                        addr, _sep, rest = to[1:].partition("]")
                        to_port = rest.lstrip(":")
                    elif to.count(":") == 1:
                        addr, to_port = to.split(":")
                    else:
                        addr, to_port = to, ""
                    to_port = int(to_port.split("-")[0]) if to_port.split("-")[0].isdigit() else port
                    if addr and addr not in net.addresses:
                        moved = Packet(family, proto, to_port, dst=addr, local=False,
                                       out=route_device(net.routes, addr), dnat=True)
                    else:
                        moved = Packet(family, proto, to_port, dst=None, local=True, dnat=True)
                elif nat.verdict == "REDIRECT" and nat.note:
                    dnat = nat
                    first = nat.note.split("-")[0]
                    moved = Packet(family, proto, int(first) if first.isdigit() else port, local=True, dnat=True)
                hook = "INPUT" if moved.local else "FORWARD"
                if not moved.local and (not net.forwarding or moved.out is None):
                    finals.append((Outcome("UNROUTED", [], nat.assumed, moved,
                                           note="forwarding disabled" if not net.forwarding
                                           else "no route to %s" % moved.dst), dnat))
                    continue
                for mng in _stage(walker, net.tables, "mangle", hook, moved, nat.assumed):
                    if mng.verdict in ("DROP", "REJECT"):
                        finals.append((mng, dnat))
                        continue
                    for flt in _stage(walker, net.tables, "filter", hook, moved, mng.assumed):
                        finals.append((flt, dnat))
    return finals


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
        prefix = "DNAT to %s (%s %s rule %s) then " % (dnat.note, table, chain, index)
    if outcome.verdict == "UNROUTED":
        return None, "dnat", "%s%s: the packet is dropped" % (prefix, outcome.note)
    if number is not None:
        where = "ufw"
        reason = "ufw rule %d (%s) %s" % (number, rule_text, _VERB[verdict])
    elif not frames:
        where = "policy"
        reason = "no netfilter rule: %s" % _VERB[verdict]
    else:
        table, chain, index = frames[-1]
        if index is None or any(c in POLICY_CHAINS for _t, c, _i in frames):
            where = "policy"
            if net.ufw_active and (family == 4 or net.ipv6_managed):
                reason = "default incoming policy: %s" % verdict.lower()
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


_VERB = {"ACCEPT": "accepts", "DROP": "drops", "REJECT": "rejects", "RETURN": "returns",
         "PASS": "accepts", "DNAT": "translates", "REDIRECT": "redirects"}


def evaluate_port(net, family, proto, port):
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
            "conditions": chosen[0].conditions(),
            "reason": "admitted only %s: %s; everyone else: %s" % (
                " and ".join(chosen[0].conditions()), reason2, reason),
        })
    if result["state"] != "blocked" and not net.ufw_active:
        result["remediation"] = ("no active UFW guards this port: install and enable UFW with the port closed "
                                 "(the close role or ufw_port does both, keeping SSH reachable)")
    if result["state"] != "blocked" and net.ufw_active and result["via"] in ("dnat", "netfilter", "before.rules"):
        result["bypass"] = True
        if result["via"] == "dnat":
            result["remediation"] = ("the port is published by DNAT and forwarded before UFW's INPUT rules see it: "
                                     "stop publishing it, or drop it in the DOCKER-USER chain / ufw route rules")
        else:
            result["remediation"] = ("remove the rule that admits the port outside UFW's user rules "
                                     "(%s)" % ("/etc/ufw/before.rules" if where == "before.rules"
                                               else "iptables INPUT/raw/mangle"))
    return result


# --------------------------------------------------------------------------- the whole host

def build_host_net(family, iptables_text, addresses, routes, forwarding, user_rules_text, rules, ufw_active,
                   ipv6_managed=True):
    """Line the live user chain up with user.rules so verdicts can name UFW rule numbers."""
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


class UfwHost(object):
    """One host as read by ``ufw_host.gather``: UFW's configuration and rules, the live netfilter
    rule sets, addresses, routes and listeners, each parsed once.

    ``ufw_info`` reports from it and ``ufw_port`` plans on it, so both see the same host: a
    command that failed (non-zero exit) counts as no output for both (a caveat says so).
    """

    def __init__(self, raw):
        files = raw.get("files") or {}
        cmds = raw.get("commands") or {}
        self.raw = raw
        self.caveats = []
        self.installed = bool(raw.get("ufw_binary")) and files.get("ufw_conf") is not None
        self.conf = parse_shell_vars(files.get("ufw_conf"))
        self.defaults, self.ipv6 = parse_defaults(files.get("default_ufw") or "")
        self.default_vars = parse_shell_vars(files.get("default_ufw"))
        self.user_text = {4: files.get("user_rules") or "", 6: files.get("user6_rules") or ""}
        self.rule_files = {4: (files.get("before_rules") or "", files.get("after_rules") or ""),
                           6: (files.get("before6_rules") or "", files.get("after6_rules") or "")}
        rules4, chain4 = parse_user_rules(self.user_text[4], False)
        rules6, chain6 = parse_user_rules(self.user_text[6], True)
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
        self.active = USER_CHAINS[4] in parse_iptables_save(self.live_text[4]).get("filter", {})
        addresses = parse_addresses(_ok(raw, "ip_addr") or "")
        self.addresses = {4: [a for _d, a in addresses if ":" not in a], 6: [a for _d, a in addresses if ":" in a]}
        self.routes = {4: parse_routes(_ok(raw, "ip_route") or ""), 6: parse_routes(_ok(raw, "ip6_route") or "")}
        self.forwarding = {4: (files.get("ip_forward") or "0").strip() == "1",
                           6: (files.get("ip6_forward") or "0").strip() == "1"}
        self.listeners = parse_listeners(_ok(raw, "ss") or "")


def inspect_host(raw, port_specs):
    """Turn what a host gave us (command outputs and files, see COMMANDS/FILES, or the UfwHost
    parsed from them) into the ``ufw_info`` result: ``ufw``, ``listeners``, ``exposure``,
    ``exposed``, ``caveats``."""
    host = raw if isinstance(raw, UfwHost) else UfwHost(raw)
    caveats = list(host.caveats)
    conf = host.conf
    installed = host.installed
    defaults, ipv6 = host.defaults, host.ipv6
    rules = host.rules
    profiles = host.profiles
    active = host.active
    nets = {}
    for family in (4, 6):
        nets[family] = build_host_net(family, host.live_text[family], host.addresses[family], host.routes[family],
                                      host.forwarding[family], host.user_text[family], rules, active, ipv6)
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
                verdict = evaluate_port(nets[family], family, spec.proto, spec.port)
            verdict["listening"] = bool(listening_on(listeners, family, spec.proto, spec.port))
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
        "caveats": caveats,
    }
