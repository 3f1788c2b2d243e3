# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planning a port closure with the UFW model: which ufw commands, and what they will do.

``plan_close`` decides the ufw commands, predicts the rule list they produce (numbered as
``ufw status numbered`` will show it), rebuilds the netfilter rule set the kernel will run and
evaluates the port on it with ``evaluate_port`` -- the same evaluator ``ufw_info`` uses. A plan
that would leave the port admitted, or block SSH, is refused before anything is applied.

Pure functions only; runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import copy
import ipaddress
import re

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import (
    Chain,
    Rule,
    parse_iptables_save,
)
from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_files
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpecError, parse_specs
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import (
    USER_CHAINS,
    UfwHost,
    UfwRule,
    evaluate_port,
    number_rules,
    restricted_limits,
    too_wide,
    parse_user_rules,
    walk_packet,
    closed_by_option,
)

MANAGED_PREFIX = "sipguard.firewall"
SSH_GUARD_COMMENT = "sipguard.firewall ssh guard"
PROTOS = ("tcp", "udp", "any")
METHODS = ("deny", "reject")
STATES = ("closed", "restricted")
FAMILIES = ("ipv4", "ipv6")
ANY = {4: "0.0.0.0/0", 6: "::/0"}
FORWARD_CHAINS = {4: "ufw-user-forward", 6: "ufw6-user-forward"}
# ufw's INPUT hooks, appended in this order by /lib/ufw/ufw-init-functions (and so recorded in the lab).
UFW_INPUT_HOOKS = ("ufw-before-logging-input", "ufw-before-input", "ufw-after-input", "ufw-after-logging-input",
                   "ufw-reject-input", "ufw-track-input")


class PlanError(ValueError):
    """The request cannot be planned safely; the message says what to change."""


def managed_comment(port, proto):
    return "%s %d/%s" % (MANAGED_PREFIX, port, proto)


def _hex(text):
    return binascii.hexlify(text.encode("utf-8")).decode("ascii")


def normalize_sources(allow_from):
    """CIDRs as ufw writes them in its tuples (a host route without its /32 or /128).

    A network with host bits set (``203.0.113.77/8``) is refused rather than widened silently:
    the operator meant either the host or a network, and only they know which.
    """
    sources = []
    for index, value in enumerate(allow_from or []):
        text = str(value).strip()
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise PlanError("allow_from[%d]: %r is not an IPv4/IPv6 address or CIDR (e.g. 203.0.113.0/24)"
                            % (index, value))
        try:
            ipaddress.ip_network(text, strict=True)
        except ValueError:
            host = text.split("/", 1)[0]
            raise PlanError("allow_from[%d]: %r has host bits set: did you mean %s (the network) or %s (that one "
                            "host)?" % (index, value, net, host))
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if text not in sources:
            sources.append(text)
    return sources


def check_sources_restrict(sources, restricted_prefix=None):
    """Refuse a set of sources that is no restriction: the same rule ufw_info uses for
    ``restricted`` (the union of the sources, per family, admits at most restricted_prefix)."""
    limits = restricted_limits(restricted_prefix)
    for family in (4, 6):
        nets = [ipaddress.ip_network(s) for s in sources if (":" in s) == (family == 6)]
        why = too_wide(nets, family, limits)
        if why:
            raise PlanError("allow_from: %s%s admit%s %s: that is no restriction, the port would stay open to "
                            "the Internet. Name the senders' own ranges (or widen restricted_prefix.ipv%d)"
                            % (", ".join(str(n) for n in nets), " together" if len(nets) > 1 else "",
                               "" if len(nets) > 1 else "s", why, family))


def check_request(port, proto, state, allow_from, method, families, restricted_prefix=None):
    """Validate before anything else runs; every error names the option and the bad value."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise PlanError("port: %r is not a port (1-65535)" % (port,))
    if proto not in PROTOS:
        raise PlanError("proto: %r is not one of tcp, udp, any" % (proto,))
    if state not in STATES:
        raise PlanError("state: %r is not one of closed, restricted (this module never opens a port)" % (state,))
    if method not in METHODS:
        raise PlanError("method: %r is not one of deny, reject" % (method,))
    bad = [f for f in families or [] if f not in FAMILIES]
    if bad or not families:
        raise PlanError("families: %r must be a non-empty list of ipv4, ipv6" % (families,))
    sources = normalize_sources(allow_from)
    if state == "restricted" and not sources:
        raise PlanError("allow_from: state=restricted needs at least one CIDR to admit (e.g. a SIP trunk's range)")
    if state == "closed" and sources:
        raise PlanError("allow_from: only used with state=restricted; remove it or set state=restricted")
    check_sources_restrict(sources, restricted_prefix)
    return sources


def check_ssh_ports(values, option="ssh_ports"):
    """The SSH ports the operator names: each a TCP port 1-65535."""
    for index, value in enumerate(values or []):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise PlanError("%s[%d]: %r is not a port (1-65535)" % (option, index, value))
    return sorted(set(values or []))


def parse_targets(ports):
    """``['5060/udp', '5061/tcp', '5062']`` -> [(5060, 'udp'), (5061, 'tcp'), (5062, 'any')]."""
    try:
        return parse_specs(ports, "ports", PROTOS, ("any",), "protocol", "use tcp, udp or any (a bare port means any)")
    except PortSpecError as exc:
        raise PlanError(str(exc))


class Wanted(object):
    """One UFW rule the plan wants, for one family or for both (``family`` None)."""

    __slots__ = ("action", "proto", "port", "src", "family", "comment", "dst")

    def __init__(self, action, proto, port, src, family, comment, dst=None):
        self.action = action
        self.proto = proto
        self.port = port
        self.src = src
        self.family = family
        self.comment = comment
        # A route rule (``ufw route``, the forward chain) to ``dst``, the address a DNAT forwards to.
        self.dst = dst

    def families(self, enabled):
        return [self.family] if self.family else list(enabled)

    def tuple_text(self, family):
        src = self.src if self.src else ANY[family]
        action = "route:" + self.action if self.dst else self.action
        return "%s %s %d %s any %s in comment=%s" % (action, self.proto, self.port, self.dst or ANY[family], src,
                                                     _hex(self.comment))

    def command(self, prepend=True):
        """ufw arguments; ``prepend`` puts the rule at the top of each family's list."""
        if self.dst:
            return ["route"] + (["prepend"] if prepend else []) + [self.action, "proto", self.proto, "from", "any",
                                                                   "to", self.dst, "port", str(self.port),
                                                                   "comment", self.comment]
        argv = (["prepend"] if prepend else []) + [self.action]
        if self.proto != "any":
            argv += ["proto", self.proto]
        if self.src:
            src = self.src
        else:
            src = "any" if self.family is None else ANY[self.family]
        argv += ["from", src, "to", "any", "port", str(self.port), "comment", self.comment]
        return argv

    def iptables_lines(self, family):
        """What ufw writes into the user chain for this rule (as recorded from lab hosts)."""
        chain = FORWARD_CHAINS[family] if self.dst else USER_CHAINS[family]
        lines = []
        for proto in (("tcp", "udp") if self.proto == "any" else (self.proto,)):
            target = {"allow": "-j ACCEPT", "deny": "-j DROP"}.get(self.action)
            if self.action == "reject":
                target = "-j REJECT --reject-with tcp-reset" if proto == "tcp" else "-j REJECT"
            src = " -s %s" % self.src if self.src else ""
            dst = " -d %s" % self.dst if self.dst and self.dst not in ANY.values() else ""
            lines.append("-A %s -p %s%s --dport %d%s %s" % (chain, proto, dst, self.port, src, target))
        return lines


def wanted_rules(port, proto, state, sources, method, families):
    """The managed rules, top to bottom: the admitted sources, then the block."""
    comment = managed_comment(port, proto)
    rules = []
    for src in sources:
        family = 6 if ":" in src else 4
        if "ipv%d" % family in families:
            rules.append(Wanted("allow", proto, port, src, family, comment))
    fams = [int(f[-1]) for f in families]
    rules.append(Wanted(method, proto, port, None, None if len(fams) == 2 else fams[0], comment))
    return rules


def _admits_exactly(rule, numbered, port, proto):
    """A rule that admits this port and nothing else that stays open: it can be removed.

    A rule that also serves other ports (a range, a list, an application with more ports,
    the other protocol) is kept, and the block is put ahead of it.
    """
    if rule.action not in ("allow", "limit") or rule.direction != "in" or rule.route or rule.sport != "any":
        return False
    closing = ("tcp", "udp") if proto == "any" else (proto,)
    siblings = [r for r in numbered if r.number == rule.number] if rule.dapp else [rule]
    for r in siblings:
        if r.dport != str(port):
            return False
        if r.proto not in closing and not (r.proto == "any" and proto == "any"):
            return False
    return True


def _rule_key(tuple_text):
    """A tuple without its action and comment: what ufw compares to find an existing rule."""
    fields = tuple_text.split(" comment=", 1)[0].split()
    return " ".join(fields[1:])


def _family(rule):
    return 6 if rule.v6 else 4


def _rules_text(rules):
    out = []
    for d in rules:
        where = " on %s" % d["interface"] if d.get("interface") else ""
        direction = "fwd" if d.get("route") else d["direction"]
        text = "[%2d] %-28s %-10s %s" % (d["number"], d["to"] + where, ("%s %s" % (d["action"], direction)).upper(),
                                         d["from"])
        if d.get("comment"):
            text += "  # %s" % d["comment"]
        out.append(text.rstrip())
    return "\n".join(out) + ("\n" if out else "")


# The RULES section of user.rules / user6.rules as ufw's backend_iptables._write_rules writes it:
# "### RULES ###\n", then per rule "\n### tuple ### TUPLE\n" and its iptables lines, then
# "\n### END RULES ###\n". Everything outside that section is kept byte for byte.
_RULES_HEAD = "### RULES ###\n"
_RULES_FOOT = "\n### END RULES ###\n"
_TUPLE_SEP = "\n### tuple ### "


def user_rules_blocks(text):
    """``(head, [(tuple, block)], tail)`` of a user.rules file in ufw's layout, else None."""
    start = (text or "").find(_RULES_HEAD)
    if start < 0 or (start and text[start - 1] != "\n"):
        return None
    body = start + len(_RULES_HEAD)
    end = text.find(_RULES_FOOT, body)
    if end < 0:
        return None
    parts = text[body:end].split(_TUPLE_SEP)
    if parts[0]:
        return None  # something between "### RULES ###" and the first tuple: not ufw's own writing
    blocks = [(part.split("\n", 1)[0].strip(), _TUPLE_SEP + part) for part in parts[1:]]
    if len(set(t for t, _b in blocks)) != len(blocks) or any(not b.endswith("\n") for _t, b in blocks):
        return None
    return text[:body], blocks, text[end:]


def render_user_rules(text, rules, new_lines):
    """user.rules with ``rules`` (UfwRule, in order) as its RULES section, the way ufw writes it.

    Rules already in the file keep their block byte for byte; rules in ``new_lines`` get their
    tuple line and iptables lines. None when the file is not in ufw's layout.
    """
    split = user_rules_blocks(text)
    if split is None:
        return None
    head, blocks, tail = split
    known = dict(blocks)
    out = []
    for rule in rules:
        if rule.tuple in new_lines:
            out.append(_TUPLE_SEP + rule.tuple + "\n" + "".join(line + "\n" for line in new_lines[rule.tuple]))
        elif rule.tuple in known:
            out.append(known[rule.tuple])
        else:
            return None
    return head + "".join(out) + tail


def render_rules(rules):
    """A rule list the way ``ufw status numbered`` prints it (for diff mode)."""
    return _rules_text([r.to_dict() if isinstance(r, UfwRule) else r for r in rules])


# The host ufw_port plans on is the one ufw_info reports from (ufw_model.UfwHost); the old name stays.
HostState = UfwHost


def _reload_files(filt, family, old_texts, new_texts):
    """``filt`` (live filter chains) after ``ufw reload`` loads ``new_texts`` (before, after) instead
    of ``old_texts``: iptables-restore -n flushes every chain a file declares and refills it. Then
    ufw-init loads the user rules, which append the hooks of the user chains (``-A ufw-before-input
    -j ufw-user-input``, /lib/ufw/ufw-init-functions): those are kept."""
    for old, new in zip(old_texts or (None, None), new_texts):
        if old == new:
            continue
        for name, chain in parse_iptables_save(new or "").get("filter", {}).items():
            live = filt.get(name)
            tail = []
            if live is not None and name.startswith("ufw"):
                tail = [r for r in live.rules if r.target and re.match(r"^ufw6?-user-", r.target)]
            fresh = Chain(name, live.policy if live is not None else chain.policy)
            fresh.rules = list(chain.rules) + list(tail)
            filt[name] = fresh


def _simulate(host, family, tuples, extra_lines, will_be_active, rule_files=None, reload=False):
    """The netfilter rule set for ``family`` once ufw runs the predicted user rules (and, with
    ``rule_files`` ({family: (before, after)}), the edited before/after rules files). ``reload``: UFW
    is reloaded (the chains of every file are as the file says, even one the kernel runs differently)."""
    tables = parse_iptables_save(host.live_text[family])
    filt = tables.setdefault("filter", {})
    files = (rule_files or {}).get(family) or host.rule_files[family]
    user = Chain(USER_CHAINS[family])
    index_map = []
    routed = []
    forward_args = _forward_args(host, family)
    for rule in tuples:
        if rule.route:
            # ufw-user-forward is what the user rules file says for the route rules kept and added.
            if rule.tuple in extra_lines:
                arg_lists = [line.split()[2:] for line in extra_lines[rule.tuple]]
            else:
                arg_lists = (forward_args or {}).get(rule.tuple, [])
            routed.extend(Rule("filter", FORWARD_CHAINS[family], list(a), ufw_tuple=rule.tuple) for a in arg_lists)
            continue
        if rule.tuple in extra_lines:
            arg_lists = [line.split()[2:] for line in extra_lines[rule.tuple]]
        else:
            arg_lists = host.user_args[family].get(rule.tuple, [])
        for args in arg_lists:
            user.rules.append(Rule("filter", USER_CHAINS[family], list(args), ufw_tuple=rule.tuple))
            index_map.append(rule)
    if not host.active and will_be_active:
        _compose_ufw(tables, host, family, files)
    elif host.active:
        _reload_files(filt, family, None if reload else host.rule_files[family], files)
    if will_be_active or host.active:
        filt[USER_CHAINS[family]] = user
        if forward_args is not None:
            forward = Chain(FORWARD_CHAINS[family])
            forward.rules = routed
            filt[FORWARD_CHAINS[family]] = forward
    user_map = dict((i + 1, r) for i, r in enumerate(index_map))
    # The other backends (iptables-legacy, native nftables) run beside UFW's rules whatever ufw does.
    return host.net(family, tables=tables, user_map=user_map, ufw_active=will_be_active or host.active)


def _forward_args(host, family):
    """{tuple: [argument lists]} of the route rules in ufw-user-forward of the user rules file, or None
    when the file cannot be read that way (then the kernel's chain stands)."""
    cache = host.__dict__.setdefault("_sipguard_forward_args", {})
    if family not in cache:
        cache[family] = _read_forward_args(host, family)
    return cache[family]


def _read_forward_args(host, family):
    if not host.numbering_text.get(family):
        return None
    try:
        chain = parse_iptables_save(host.user_text[family]).get("filter", {}).get(FORWARD_CHAINS[family])
    except ValueError:
        return None
    if chain is None:
        return None
    found = {}
    for rule in chain.rules:
        found.setdefault(rule.tuple, []).append(rule.args)
    return found


def _compose_ufw(tables, host, family, files=None):
    """What ``ufw enable`` loads on an inactive host: before/after rules, hooks, policy."""
    filt = tables.setdefault("filter", {})
    prefix = "ufw6" if family == 6 else "ufw"
    if family == 6 and not host.ipv6:
        # IPV6=no: ufw drops all IPv6 input except loopback (recorded on the ipv6-disabled host).
        filt["INPUT"] = Chain("INPUT", "DROP")
        filt["INPUT"].rules.append(Rule("filter", "INPUT", ["-i", "lo", "-j", "ACCEPT"]))
        return
    before, after = files or host.rule_files[family]
    for text in (before, after):
        for name, chain in parse_iptables_save(text).get("filter", {}).items():
            filt[name] = chain
    policy = host.default_vars.get("DEFAULT_INPUT_POLICY", "DROP").upper()
    for name in ("reject-input", "skip-to-policy-input", "track-input", "user-limit", "user-limit-accept",
                 "before-logging-input", "after-logging-input", "user-logging-input"):
        filt.setdefault("%s-%s" % (prefix, name), Chain("%s-%s" % (prefix, name)))
    if policy == "REJECT":
        filt["%s-reject-input" % prefix].rules = [Rule("filter", "%s-reject-input" % prefix, ["-j", "REJECT"])]
    skip_target = {"ACCEPT": "ACCEPT", "REJECT": "REJECT"}.get(policy, "DROP")
    filt["%s-skip-to-policy-input" % prefix].rules = [
        Rule("filter", "%s-skip-to-policy-input" % prefix, ["-j", skip_target])]
    filt["%s-user-limit" % prefix].rules = [Rule("filter", "%s-user-limit" % prefix, ["-j", "REJECT"])]
    filt["%s-user-limit-accept" % prefix].rules = [Rule("filter", "%s-user-limit-accept" % prefix, ["-j", "ACCEPT"])]
    # ufw-init appends the user chain hook after loading user.rules (/lib/ufw/ufw-init-functions).
    before_input = filt.setdefault("%s-before-input" % prefix, Chain("%s-before-input" % prefix))
    before_input.rules.append(Rule("filter", before_input.name, ["-j", USER_CHAINS[family]]))
    inp = filt.setdefault("INPUT", Chain("INPUT", "ACCEPT"))
    inp.policy = "ACCEPT" if policy == "ACCEPT" else "DROP"
    for hook in UFW_INPUT_HOOKS:
        inp.rules.append(Rule("filter", "INPUT", ["-j", hook.replace("ufw-", prefix + "-", 1)]))


def _file_chains(texts):
    """{filter chain: (index into texts, its rules)} of the before/after texts of one family."""
    found = {}
    for i, text in enumerate(texts):
        for name, chain in parse_iptables_save(text or "").get("filter", {}).items():
            found.setdefault(name, (i, chain.rules))
    return found


def _admitting_file_rule(net, family, proto, port, texts):
    """(index into texts, chain, rule index, packet) of the before/after rule that admits ``port`` on
    some path of the walk, or None: the rule a closure must disable."""
    chains = _file_chains(texts)
    for outcome, _dnat in walk_packet(net, family, proto, port):
        if outcome.verdict not in ("ACCEPT", "PASS") or not outcome.frames:
            continue
        table, chain, index = outcome.frames[-1]
        if table != "filter" or index is None or chain not in chains:
            continue
        which, rules = chains[chain]
        if index <= len(rules):
            return which, chain, index, outcome.packet
    return None


def _edit_rule_files(host, lists, extra_lines, texts, checks, fams, state, sources, method, restricted_prefix,
                     run_id, edits):
    """Disable, one at a time, the before/after rule the evaluator finds admitting a port the plan
    closes, until none is left (or one cannot be edited: the plan is then refused)."""
    for _round in range(64):
        nets = dict((f, _simulate(host, f, lists[f], extra_lines, True, texts, reload=True)) for f in fams)
        found = None
        for port, proto in checks:
            for fam in fams:
                verdict = evaluate_port(nets[fam], fam, proto, port, restricted_prefix)
                if verdict["state"] == _expected_state(state, sources, fam):
                    continue
                hit = _admitting_file_rule(nets[fam], fam, proto, port, texts[fam])
                if hit is not None:
                    found = (port, proto, fam) + hit
                    break
            if found:
                break
        if found is None:
            return
        port, proto, fam, which, chain, index, packet = found
        path = ufw_files.RULE_FILES[(fam, ("before", "after")[which])]
        dport = packet.dport if packet is not None else port
        try:
            texts[fam][which], edit = ufw_files.edit_admitting_line(
                texts[fam][which], path, chain, index, proto, dport, method, managed_comment(port, proto), run_id)
        except ufw_files.FileEditError as exc:
            raise PlanError("edit_ufw_files: %s. Nothing was changed" % exc)
        edits.append(edit)
    raise PlanError("edit_ufw_files: more than 64 lines of UFW's rules files admit the port; edit them by hand")


def _forwarded_through_ufw(net, family, proto, port):
    """[(destination, port)] of the DNAT paths of ``port`` that UFW's forward chains admit."""
    found = []
    for outcome, dnat in walk_packet(net, family, proto, port):
        if dnat is None or outcome.verdict not in ("ACCEPT", "PASS") or outcome.packet is None \
                or outcome.packet.local or not outcome.packet.dst:
            continue
        verdict = {"state": "open"}
        if closed_by_option(net, verdict, (outcome, dnat)) == "rules":
            key = (outcome.packet.dst, outcome.packet.dport)
            if key not in found:
                found.append(key)
    return found


def _option_hint(verdict, edit_ufw_files, docker):
    """What would close what a verdict says is still admitted: the ufw_port option (when it is off),
    else ufw_info's remediation (out of UFW's reach: the rule, its backend, the command)."""
    option = closed_by(verdict)
    if option == "edit_ufw_files" and not edit_ufw_files:
        return "edit_ufw_files: true would disable that line (%s)" % verdict.get("remediation")
    if option == "docker" and not docker:
        return "docker: true would drop the published port in DOCKER-USER"
    return verdict.get("remediation") or "see ufw_info's remediation"


def closed_by(verdict):
    """The ufw_port option that closes an admitted port (``edit_ufw_files``, ``docker``), ``rules``
    when ordinary UFW rules do, or None when it is out of UFW's reach; a blocked port needs none."""
    if verdict.get("state") == "blocked":
        return None
    return verdict.get("closed_by", "rules" if verdict.get("via") in ("ufw", "policy") else None)


class Plan(object):
    def __init__(self):
        self.commands = []
        self.before = []
        self.after = []
        self.verdicts_before = {}
        self.verdicts_after = {}
        self.enable = False
        self.deleted = []
        self.added = []
        # {4: text, 6: text} the user rules files get (only those that change), or None when a
        # file is not in ufw's layout and only the ufw command line can make the change.
        self.files = {}
        # {path: new text} of UFW's before/after rules files (edit_ufw_files, docker), and what changed in them.
        self.rule_files = {}
        self.rule_files_before = {}
        self.file_edits = []

    @property
    def changed(self):
        return bool(self.commands or self.rule_files)


def _expected_state(state, sources, family):
    """restricted where this family has admitted sources, blocked everywhere else."""
    if state == "restricted" and [s for s in sources if (":" in s) == (family == 6)]:
        return "restricted"
    return "blocked"


def guard_families(host):
    """The families UFW filters once enabled, so the families SSH must be guarded on: IPv4 always,
    IPv6 unless IPV6=no (then ufw drops all IPv6 input and no user rule can admit SSH there)."""
    return [4, 6] if host.ipv6 else [4]


def plan_close(host, targets, state="closed", allow_from=None, method="deny", families=("ipv4", "ipv6"),
               enable_ufw=True, ssh_ports=(), lockout_guard=True, restricted_prefix=None, edit_ufw_files=False,
               docker=False, run_id=None):
    """Plan closing (or restricting) every ``(port, proto)`` of ``targets`` as one change.

    ``edit_ufw_files``: a line of before.rules/after.rules (and the v6 files) that still admits a
    port once the user rules are planned is commented out (or shadowed by a block inserted ahead of
    it), marked with ``run_id``. ``docker``: where Docker's DOCKER-USER chain exists, after.rules
    gets the block that drops the published ports (ufw_files.docker_block).

    One plan for all ports: check mode predicts exactly what the run does, and a failure
    restores the state from before the whole change. Raises PlanError when it cannot be done safely.

    ``ssh_ports`` are guarded: never closed, and when UFW gets enabled they are allowed on every
    family UFW will filter (``ufw enable`` turns on IPv4 and IPv6 whatever ``families`` says).
    """
    if not targets:
        raise PlanError("ports: give at least one port to close")
    sources = None
    for port, proto in targets:
        sources = check_request(port, proto, state, allow_from, method, list(families), restricted_prefix)
    if not host.installed:
        raise PlanError("ufw is not installed on this host (no ufw command or /etc/ufw/ufw.conf): install the ufw package")
    if list(families) == ["ipv6"] and not host.ipv6:
        raise PlanError("families: ['ipv6'] but /etc/default/ufw has IPV6=no, so UFW manages no IPv6 rules "
                        "(and drops all IPv6 input once active): set IPV6=yes there first, or close the port "
                        "for ipv4")
    ssh_ports = sorted(set(int(p) for p in ssh_ports or ()))
    for port, proto in targets:
        if lockout_guard and proto in ("tcp", "any") and port in ssh_ports:
            raise PlanError("port %d/tcp is this host's SSH port: closing it would lock you out. Use another port "
                            "for SSH first (lockout_guard=false only with console access)" % port)
    if not host.active and not enable_ufw:
        raise PlanError("UFW is inactive and enable_ufw is false: the rules would be written but not enforced; "
                        "set enable_ufw: true")
    if not host.active and lockout_guard and not ssh_ports:
        raise PlanError("UFW is inactive and would be enabled, but no SSH port could be found (not in sshd -T, "
                        "not among the listening sockets, no ssh.socket, no SSH_CONNECTION, no Ansible port): "
                        "name the ports SSH must keep with ssh_ports (e.g. ssh_ports: [22]); nothing was changed")
    fams = [int(f[-1]) for f in families if f == "ipv4" or host.ipv6]
    enabled = ["ipv%d" % f for f in fams]
    wanted = []
    for port, proto in targets:
        wanted.extend(wanted_rules(port, proto, state, sources, method, enabled or ["ipv4"]))
    comments = set(managed_comment(port, proto) for port, proto in targets)
    plan = Plan()
    plan.before = [r.to_dict() for r in host.rules]
    checks = []
    for port, proto in targets:
        for p in (("tcp", "udp") if proto == "any" else (proto,)):
            if (port, p) not in checks:
                checks.append((port, p))

    def verdicts(nets):
        return dict(("%d/%s/ipv%d" % (port, p, fam), evaluate_port(nets[fam], fam, p, port, restricted_prefix))
                    for port, p in checks for fam in (4, 6))

    current_nets = dict((f, _simulate(host, f, [r for r in host.rules if _family(r) == f], {}, host.active))
                        for f in (4, 6))
    plan.verdicts_before = verdicts(current_nets)
    # SSH that works now must work after the change, on both families.
    ssh_before = dict(((port, f), evaluate_port(current_nets[f], f, "tcp", port)["state"])
                      for port in ssh_ports for f in (4, 6))

    # The rules files as the plan wants them: the docker block first (it is the same on every run).
    texts = dict((f, list(host.rule_files[f])) for f in (4, 6))
    plan.file_edits = []
    if docker:
        for fam in fams:
            if ufw_files.DOCKER_CHAIN not in host.live[fam].get("filter", {}):
                continue
            path = ufw_files.RULE_FILES[(fam, "after")]
            block = ufw_files.docker_block(fam, [(port, p, managed_comment(port, proto)) for port, proto in targets
                                                 for p in (("udp", "tcp") if proto == "any" else (proto,))], method)
            try:
                text = ufw_files.with_docker_block(texts[fam][1], path, block)
            except ufw_files.FileEditError as exc:
                raise PlanError("docker: %s. Nothing was changed" % exc)
            if text != texts[fam][1]:
                texts[fam][1] = text
                plan.file_edits.append({"file": path, "line": None, "action": "docker block", "text": None,
                                        "inserted": block})

    # Forwarded traffic that UFW's forward chains admit (a DNAT and an allowed routed policy or route
    # rule) is closed with route rules. Found on the host without the managed rules, so every run
    # finds the same ones.
    unmanaged = dict((f, [r for r in host.rules if _family(r) == f and r.comment not in comments]) for f in (4, 6))
    for fam in fams:
        net = _simulate(host, fam, unmanaged[fam], {}, True, texts)
        for port, p in checks:
            for route in _forwarded_through_ufw(net, fam, p, port):
                comment = [managed_comment(port, proto) for port_, proto in targets
                           if port_ == port and proto in (p, "any")][0]
                w = Wanted(method, p, route[1], None, fam, comment, dst=route[0])
                if w.tuple_text(fam) not in [x.tuple_text(fam) for x in wanted if x.dst and x.family == fam]:
                    wanted.append(w)

    managed = [r for r in host.rules if r.comment in comments]
    desired = dict((fam, [w.tuple_text(fam) for w in wanted if fam in w.families(fams)]) for fam in (4, 6))
    # ufw skips a rule identical to an existing one and updates in place one that differs only in
    # action ("Skipping inserting existing rule", "Rule updated"): either would keep the old
    # position, so such a rule is deleted and the managed one prepended instead.
    clashing = set(_rule_key(t) for fam in (4, 6) for t in desired[fam])
    exact = [r for r in host.rules if r.comment not in comments and _family(r) in fams
             and (_rule_key(r.tuple) in clashing
                  or any(_admits_exactly(r, host.rules, port, proto) for port, proto in targets))]
    current = dict((fam, [r.tuple for r in managed if _family(r) == fam]) for fam in (4, 6))
    rules_in_place = host.active and not exact and all(sorted(current[f]) == sorted(desired[f]) for f in (4, 6))
    up_to_date = rules_in_place and not plan.file_edits and all(
        v["state"] == _expected_state(state, sources, int(key[-1]))
        for key, v in plan.verdicts_before.items() if int(key[-1]) in fams)
    if up_to_date:
        plan.after = plan.before
        plan.verdicts_after = plan.verdicts_before
        return plan

    lists = {}
    extra_lines = {}
    delete_numbers = []
    if rules_in_place:
        # Only the rules files are left to change: the user rules stay as they are.
        lists = dict((fam, [copy.copy(r) for r in host.rules if _family(r) == fam]) for fam in (4, 6))
    else:
        # 1. delete (highest number first, so the numbers of the others do not move)
        delete_numbers = sorted({r.number for r in managed + exact}, reverse=True)
        for number in delete_numbers:
            plan.commands.append(["--force", "delete", str(number)])
        plan.deleted = [r.to_dict() for r in host.rules if r.number in delete_numbers]
        # 2. prepend in reverse, so the rules end up in the order of ``wanted``: sources above their block
        for w in reversed(wanted):
            plan.commands.append(w.command(prepend=True))
        for fam in (4, 6):
            # Copies: number_rules() numbers the new list in place, and ``host`` must stay as it was read
            # (ufw_port plans twice on it when there is a change).
            kept = [copy.copy(r) for r in host.rules if _family(r) == fam and r.number not in delete_numbers]
            new = []
            for w in wanted:
                if fam in w.families(fams):
                    tup = w.tuple_text(fam)
                    new.append(UfwRule(tup, fam == 6))
                    extra_lines[tup] = w.iptables_lines(fam)
            lists[fam] = new + kept
    # 3. an inactive UFW is enabled only once SSH is sure to stay reachable
    if not host.active:
        guarded = guard_families(host)
        for ssh_port in ssh_ports:
            sim = dict((f, _simulate(host, f, lists[f], extra_lines, True, texts)) for f in guarded)
            blocked = [f for f in guarded if evaluate_port(sim[f], f, "tcp", ssh_port)["state"] == "blocked"]
            if blocked:
                guard = Wanted("allow", "tcp", ssh_port, None, None if len(blocked) == 2 else blocked[0],
                               SSH_GUARD_COMMENT)
                plan.commands.append(guard.command(prepend=False))
                for fam in (4, 6):
                    if fam in guard.families(guarded):
                        tup = guard.tuple_text(fam)
                        lists[fam].append(UfwRule(tup, fam == 6))
                        extra_lines[tup] = guard.iptables_lines(fam)
        plan.commands.append(["--force", "enable"])
        plan.enable = True
    for fam in (4, 6):
        text = render_user_rules(host.user_text[fam], lists[fam], extra_lines)
        if text is None or [r.tuple for r in parse_user_rules(text, fam == 6)[0]] != [r.tuple for r in lists[fam]]:
            plan.files = None
            break
        if text != host.user_text[fam]:
            plan.files[fam] = text
    numbered = number_rules(lists[4], lists[6])
    plan.after = [r.to_dict() for r in numbered]
    plan.added = [r.to_dict() for r in numbered if r.tuple in extra_lines]
    if edit_ufw_files:
        _edit_rule_files(host, lists, extra_lines, texts, checks, fams, state, sources, method, restricted_prefix,
                         run_id or "ufw_port", plan.file_edits)
    plan.rule_files = dict((ufw_files.RULE_FILES[(fam, kind)], texts[fam][i]) for fam in (4, 6)
                           for i, kind in enumerate(("before", "after")) if texts[fam][i] != host.rule_files[fam][i])
    plan.rule_files_before = dict((ufw_files.RULE_FILES[(fam, kind)], host.rule_files[fam][i]) for fam in (4, 6)
                                  for i, kind in enumerate(("before", "after")) if texts[fam][i] != host.rule_files[fam][i])
    after_nets = dict((f, _simulate(host, f, lists[f], extra_lines, True, texts, reload=bool(plan.rule_files)))
                      for f in (4, 6))
    plan.verdicts_after = verdicts(after_nets)
    # 4. re-check the plan with the evaluator: refuse rather than apply a plan that does not work
    for key, verdict in sorted(plan.verdicts_after.items()):
        fam = int(key[-1])
        if fam in fams and verdict["state"] != _expected_state(state, sources, fam):
            raise PlanError("the planned rules would still admit %s: %s. Nothing was changed; fix that first: %s"
                            % (key, verdict["reason"], _option_hint(verdict, edit_ufw_files, docker)))
    if lockout_guard:
        for ssh_port in ssh_ports:
            for fam in guard_families(host):
                v = evaluate_port(after_nets[fam], fam, "tcp", ssh_port)
                if v["state"] == "blocked" and ssh_before[(ssh_port, fam)] != "blocked":
                    raise PlanError("the planned rules would block SSH on %d/tcp (ipv%d): %s. Nothing was changed"
                                    % (ssh_port, fam, v["reason"]))
    return plan
