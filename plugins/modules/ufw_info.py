#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ufw_info
short_description: Report UFW state and the effective firewall verdict for SIP ports
version_added: 1.0.0
description:
  - Reads UFW's configuration and rules, the sockets listening on the requested ports, and the
    live netfilter state of the host, in one invocation. That is iptables-nft (C(iptables-save),
    C(ip6tables-save)), rules left in iptables-legacy (C(iptables-legacy-save),
    C(ip6tables-legacy-save)) and native nftables tables (C(nft -j list ruleset); the tables
    iptables-nft keeps in nftables are read from C(iptables-save) only).
  - For each requested port and protocol it computes, for IPv4 and IPv6, what the kernel does to a
    new packet from an arbitrary sender, taking the first matching rule across the raw, mangle and nat
    PREROUTING chains, UFW's before, user and after chains, and the default policy. A DNAT of the
    port to another address is followed into the FORWARD path, the way Docker-published ports
    bypass UFW.
  - Every backend's base chains on a hook run in priority order, as in the kernel (iptables' raw
    at -300, mangle -150, nat -100, filter 0; nft chains at their own priority). A drop in any base
    chain is final; an accept ends only its own base chain, so a native nft accept does not open a
    port UFW denies. A DNAT in any backend sends the packet down the forward path. A backend whose
    command is not installed is absent, not an error.
  - Rules that depend on the sender (source address, source port, input interface, ipsets) are
    explored both ways, so a port admitted only for some senders is reported as C(restricted).
  - A restriction that is none is reported C(open) with the reason - sources that together (the union of
    every admitting rule, for example V(0.0.0.0/1) plus V(128.0.0.0/1)) hold more public addresses than
    O(restricted_prefix) allows, or an input interface that carries the default route.
  - Matches the model cannot evaluate are assumed to match when they would admit the packet and
    not to match when they would block it, so that uncertainty errs towards reporting exposure.
  - Read-only; needs root (C(become=true)) to read netfilter.
author:
  - sipguard maintainers (@sipguard)
extends_documentation_fragment:
  - sipguard.firewall.attributes
  - sipguard.firewall.attributes.INFO_MODULE
options:
  ports:
    description:
      - Ports to evaluate, as C(PORT/PROTO) (C(tcp) or C(udp)) or a bare C(PORT) meaning both.
    type: list
    elements: str
    default: ['5060/udp', '5060/tcp', '5061/tcp']
  restricted_prefix:
    description:
      - The widest restriction that still counts as C(restricted), as a prefix length per family - the admitted
        senders together may hold no more public addresses (outside private, documentation and other
        special-purpose ranges; for IPv6 within 2000::/3) than one network of that prefix.
      - M(sipguard.firewall.ufw_port) refuses an O(sipguard.firewall.ufw_port#module:allow_from) by the same rule.
    type: dict
    version_added: 1.2.0
    suboptions:
      ipv4:
        description: IPv4 prefix length (0-32); the default admits at most a /8.
        type: int
        default: 8
      ipv6:
        description: IPv6 prefix length (0-128); the default admits at most a /32.
        type: int
        default: 32
  raw_inputs:
    description:
      - Also return RV(raw_inputs), the command outputs and files the verdicts were computed from (for the
        report's C(evidence) bundle). Off by default, the outputs of a host with many rules are large.
    type: bool
    default: false
    version_added: 1.2.0
requirements:
  - iptables (iptables-save, ip6tables-save), iproute2 (ss, ip) on the target.
  - nftables (nft) on the target to read native nftables tables; iptables-legacy-save when the
    host has iptables-legacy rules (both optional).
notes:
  - Rule numbers are the numbers C(ufw status numbered) shows (IPv4 rules first, then IPv6; the
    tuples of one application rule share a number).
  - A host without UFW is still evaluated; the verdict then comes from whatever netfilter holds.
seealso:
  - module: sipguard.firewall.sip_probe
"""

EXAMPLES = r"""
- name: Inspect SIP exposure
  sipguard.firewall.ufw_info:
  become: true
  register: sip

- name: Fail when SIP is reachable
  ansible.builtin.assert:
    that: not sip.exposed
    fail_msg: "{{ sip.exposure | selectattr('ipv4.state', 'ne', 'blocked') | map(attribute='ipv4.reason') | list }}"

- name: Only UDP 5060 and a custom TLS port
  sipguard.firewall.ufw_info:
    ports: ['5060/udp', '15061/tcp']
  become: true
"""

RETURN = r"""
ufw:
  description: UFW's state and rules.
  returned: always
  type: dict
  contains:
    installed:
      description: The ufw command and C(/etc/ufw/ufw.conf) exist.
      type: bool
      sample: true
    active:
      description: UFW's chains are loaded in the kernel now.
      type: bool
      sample: true
    enabled:
      description: C(ENABLED=yes) in C(/etc/ufw/ufw.conf) (UFW starts at boot).
      type: bool
      sample: true
    ipv6:
      description: C(IPV6=yes) in C(/etc/default/ufw).
      type: bool
      sample: true
    defaults:
      description: Default policies.
      type: dict
      sample: {"incoming": "deny", "outgoing": "allow", "routed": "deny"}
    logging:
      description: UFW's log level, or null without UFW.
      type: str
      sample: low
    rules:
      description: UFW rules in C(ufw status numbered) order.
      type: list
      elements: dict
      contains:
        number:
          description: The number C(ufw status numbered) shows.
          type: int
        action:
          description: allow, deny, reject or limit.
          type: str
        direction:
          description: in or out.
          type: str
        ports:
          description: Destination ports (C(5060), C(5000:6000), C(80,443) or C(any)).
          type: str
        proto:
          description: tcp, udp or any.
          type: str
        from:
          description: Source as C(ufw status) prints it.
          type: str
        to:
          description: Destination as C(ufw status) prints it.
          type: str
        interface:
          description: Interface the rule is bound to, or null.
          type: str
        v6:
          description: The rule is an IPv6 rule.
          type: bool
        comment:
          description: The rule's comment, or null.
          type: str
        app:
          description: Application profile name, or null.
          type: str
        app_ports:
          description: The application profile's port specs.
          type: list
          elements: dict
      sample:
        - {"number": 1, "action": "allow", "direction": "in", "ports": "22", "proto": "tcp", "from": "Anywhere",
           "to": "22/tcp", "interface": null, "v6": false, "comment": null, "app": null}
    app_profiles:
      description: Application profiles from C(/etc/ufw/applications.d), expanded to port specs.
      type: dict
      sample: {"OpenSSH": {"title": "Secure shell server", "ports": [{"ports": "22", "proto": "tcp"}]}}
listeners:
  description: Sockets listening on the requested ports.
  returned: always
  type: list
  elements: dict
  sample: [{"proto": "udp", "address": "0.0.0.0", "port": 5060, "family": "ipv4", "process": "kamailio", "pid": 812}]
exposure:
  description: One item per requested port/proto with the verdict for IPv4 and IPv6.
  returned: always
  type: list
  elements: dict
  contains:
    port:
      description: Port number.
      type: int
    proto:
      description: tcp or udp.
      type: str
    ipv4:
      description: The IPv4 verdict.
      type: dict
      contains:
        state:
          description:
            - C(open) (admitted from any sender, or from senders too many to be a restriction, see O(restricted_prefix)),
              C(restricted) (only some senders or interfaces), C(blocked).
          type: str
        action:
          description: What netfilter does to an arbitrary sender's packet (accept, drop, reject).
          type: str
        rule:
          description: The deciding UFW rule number, or null when no UFW user rule decided.
          type: int
        reason:
          description: One readable line saying why.
          type: str
        via:
          description:
            - Where the decision was made (ufw, policy, before.rules, after.rules, netfilter, dnat, address),
              or the other backend whose rule or base-chain policy decided (C(nftables), C(iptables-legacy)).
          type: str
        backend:
          description:
            - The backend whose rule (for a DNAT, the DNAT's rule) or base-chain policy decided
              (C(iptables-nft), C(iptables-legacy), C(nftables)); null when no rule or policy decided.
          type: str
          version_added: 1.2.0
        bypass:
          description: The port is admitted while UFW is active by something other than UFW's user rules.
          type: bool
        remediation:
          description:
            - What to do about a bypass (only with I(bypass=true)), or about a port no active UFW guards.
            - Names the M(sipguard.firewall.ufw_port) option that closes it, or, out of UFW's reach, the rule, its
              backend and the command that removes it.
          type: str
        closed_by:
          description:
            - Which M(sipguard.firewall.ufw_port) option closes an admitted port - C(rules) (its ordinary rules,
              including C(ufw route) rules for a DNAT forwarded through UFW's forward chains), C(edit_ufw_files) (a
              line of UFW's before.rules or before6.rules admits it; an after.rules line comes after the user rules,
              so C(rules) closes it) or C(docker) (a port Docker publishes).
            - Null when the port is blocked, or out of UFW's reach (an ACCEPT ahead of UFW's chains, another
              backend's rule or NAT, no UFW installed).
          type: str
          version_added: 1.2.0
        conditions:
          description:
            - For C(restricted), the senders or interfaces that are admitted; for C(open), the senders an earlier rule refuses (C(except ...)).
            - For C(open) and C(restricted), also the rules on the way that act only on other packets than a first SIP
              packet (floods, marks, sizes, non-SYN, other conntrack states), e.g. C(rate-limited above 20/sec per source)
              followed by the table, chain and rule number that act on those packets, in parentheses.
          type: list
          elements: str
        listening:
          description: A socket listens on this port and family on the host itself.
          type: bool
    ipv6:
      description: The IPv6 verdict, same keys as I(ipv4).
      type: dict
  sample:
    - port: 5060
      proto: udp
      ipv4: {"state": "open", "action": "accept", "rule": 2, "via": "ufw", "backend": "iptables-nft", "bypass": false,
             "conditions": [],
             "reason": "ufw rule 2 (ALLOW IN 5060/udp from Anywhere) accepts", "listening": true}
      ipv6: {"state": "blocked", "action": "drop", "rule": null, "via": "nftables", "backend": "nftables",
             "bypass": false, "conditions": [], "listening": false,
             "reason": "nftables rule (inet sg-guard input #1 handle 2, as iptables: -A input -p udp -m multiport --dports 5060 -j DROP) drops"}
exposed:
  description: True when any requested port is C(open) or C(restricted) on any family.
  returned: always
  type: bool
  sample: true
backends:
  description:
    - The netfilter backends that hold rules on the host, in the order iptables-nft, iptables-legacy,
      nftables. A backend whose command is missing, or whose tables hold no rules, is not listed.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
  contains:
    name:
      description: C(iptables-nft) (what C(iptables-save) reads; C(iptables-legacy) when that is the legacy one),
        C(iptables-legacy) or C(nftables) (native tables, not iptables-nft's).
      type: str
    tables:
      description: Tables holding rules, as C(FAMILY NAME) (C(ip filter), C(inet sg-guard)).
      type: list
      elements: str
    rules:
      description: Number of rules in them (nft rules as nft counts them).
      type: int
  sample:
    - {"name": "iptables-nft", "tables": ["ip filter", "ip6 filter"], "rules": 176}
    - {"name": "nftables", "tables": ["inet sg-guard"], "rules": 2}
rollbacks:
  description:
    - Commit-confirmed rollbacks of M(sipguard.firewall.ufw_port) that happened on this host (a change that was
      not confirmed in time, or found unconfirmed when UFW started at boot), oldest first.
    - Kept until a run with the same O(sipguard.firewall.ufw_port#module:rollback_id) starts.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
  contains:
    id:
      description: The rollback group (O(sipguard.firewall.ufw_port#module:rollback_id)).
      type: str
    time:
      description: Unix time of the rollback.
      type: float
    at:
      description: The same time, ISO 8601 UTC.
      type: str
    by:
      description: What restored the rules, C(watcher) (detached process), C(timer) (systemd timer) or C(boot) (ufw's boot hook).
      type: str
    outcome:
      description: C(restored), or what went wrong.
      type: str
  sample: [{"id": "close-2026-11-25", "time": 1795000000.0, "at": "2026-11-18T06:13:20Z", "by": "watcher",
            "outcome": "restored"}]
raw_inputs:
  description:
    - With O(raw_inputs), what the verdicts were computed from, as read, for the report's evidence bundle
      (C(command/iptables_save), C(command/nft_ruleset), C(file/user_rules), C(file/before_rules), ...).
  returned: when O(raw_inputs=true)
  type: dict
  version_added: 1.2.0
  sample: {"command/iptables_save": "*filter\n:INPUT DROP [0:0]\n...", "file/user_rules": "*filter\n..."}
caveats:
  description: Things the verdict could not take into account (also given as warnings).
  returned: always
  type: list
  elements: str
  sample: []
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sipguard.firewall.plugins.module_utils.ports import DEFAULT_PORTS, PortSpecError, parse_port_specs
from ansible_collections.sipguard.firewall.plugins.module_utils.host_read import gather, past_rollbacks, raw_inputs
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import UfwModelError, inspect_host, restricted_limits
from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import NetfilterParseError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ports=dict(type="list", elements="str", default=list(DEFAULT_PORTS)),
            restricted_prefix=dict(type="dict", options=dict(ipv4=dict(type="int", default=8),
                                                             ipv6=dict(type="int", default=32))),
            raw_inputs=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    try:
        specs = parse_port_specs(module.params["ports"])
        restricted_limits(module.params["restricted_prefix"])
    except (PortSpecError, UfwModelError) as exc:
        module.fail_json(msg=str(exc))
    if os.geteuid() != 0:
        module.fail_json(msg="ufw_info reads netfilter with iptables-save, which needs root: "
                             "run it with become: true")
    raw = gather(module)
    try:
        result = inspect_host(raw, specs, module.params["restricted_prefix"])
    except (UfwModelError, NetfilterParseError) as exc:
        module.fail_json(msg="cannot understand this host's firewall state: %s" % exc)
    result["rollbacks"] = past_rollbacks()
    if module.params["raw_inputs"]:
        result["raw_inputs"] = raw_inputs(raw)
    for caveat in result["caveats"]:
        module.warn(caveat)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
