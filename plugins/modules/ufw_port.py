#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ufw_port
short_description: Close (or restrict) a port with UFW, safely and idempotently
version_added: 1.0.0
description:
  - Plans the change with the same UFW model as M(sipguard.firewall.ufw_info), then applies it (see O(apply)).
    Blocking rules go ahead of every rule that would admit the port (ranges,
    multiport lists, application profiles, proto any); a rule that admits exactly this port is
    removed; a rule that also serves other ports is kept and shadowed.
  - The planned rule set is evaluated before anything is applied. When the port would still be
    admitted (for example by an ACCEPT outside UFW or a Docker-style DNAT, which UFW cannot
    fix) or SSH would be blocked, the module fails and changes nothing.
  - The rules it manages carry the comment C(sipguard.firewall PORT/PROTO); a second run with the
    same arguments changes nothing.
  - When UFW is inactive it is enabled (O(enable_ufw)) only after the SSH ports are allowed on IPv4 and
    IPv6 (C(ufw enable) turns on both families, whatever O(families) says). The SSH ports are the union of
    C(sshd -T) (C(Port) and the ports inside C(ListenAddress)), the TCP sockets sshd (or a systemd
    C(ssh.socket)) listens on, C(SSH_CONNECTION), and O(ssh_ports). When none is found, the module refuses
    to enable UFW until O(ssh_ports) names them.
  - After applying, the host is read again and the verdict checked; if it differs from the plan,
    the previous rules are restored and the module fails. Any failure restores the previous rules.
  - With O(rollback_after), a detached process on the host restores the previous rules unless the
    change is confirmed (the file returned as RV(rollback.armed) removed) in time.
author:
  - sipguard maintainers (@sipguard)
extends_documentation_fragment:
  - sipguard.firewall.attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns exactly the commands and resulting rule list a real run would produce.
  diff_mode:
    support: full
    details:
      - The numbered rule list before and after, as C(ufw status numbered) shows it.
  idempotent:
    support: full
options:
  port:
    description: The port to close or restrict (with O(proto)). Give O(port) or O(ports).
    type: int
  proto:
    description: Protocol of O(port); C(any) means tcp and udp.
    type: str
    choices: [tcp, udp, any]
    default: any
  ports:
    description:
      - Several ports changed as one plan, as C(PORT/PROTO) (C(tcp), C(udp) or C(any)) or a bare C(PORT) (any).
      - One plan means check mode predicts the whole change exactly, and a failure restores the state from
        before all of them.
    type: list
    elements: str
  state:
    description:
      - C(closed) blocks the port for every sender.
      - C(restricted) admits it only from O(allow_from) and blocks everyone else.
    type: str
    choices: [closed, restricted]
    default: closed
  allow_from:
    description:
      - Sources admitted when O(state=restricted) (for example a SIP trunk provider's ranges).
      - A network with host bits set (V(203.0.113.77/8)) is an error that names the network meant.
      - Sources that together admit more public address space than O(restricted_prefix) allows (for example
        V(0.0.0.0/1) and V(128.0.0.0/1)) are no restriction and are refused; M(sipguard.firewall.ufw_info)
        reports such a port C(open) by the same rule.
    type: list
    elements: str
    default: []
  restricted_prefix:
    description:
      - How much public address space a restriction may admit and still count as one, as a prefix length per
        family; the union of O(allow_from) of a family must hold no more public addresses than one network of
        that prefix. The same option of M(sipguard.firewall.ufw_info) decides C(restricted) against C(open).
    type: dict
    version_added: 1.2.0
    suboptions:
      ipv4:
        description: IPv4 prefix length (0-32).
        type: int
        default: 8
      ipv6:
        description: IPv6 prefix length (0-128).
        type: int
        default: 32
  method:
    description: C(deny) drops silently; C(reject) answers with ICMP port-unreachable or TCP RST.
    type: str
    choices: [deny, reject]
    default: deny
  families:
    description:
      - Address families to close the port for.
      - V([ipv6]) on a host whose C(/etc/default/ufw) has C(IPV6=no) is refused (UFW manages no IPv6 rules there).
      - An inactive UFW is enabled for both families; SSH is then guarded on both, whatever this says.
    type: list
    elements: str
    choices: [ipv4, ipv6]
    default: [ipv4, ipv6]
  enable_ufw:
    description: Enable an inactive UFW (after allowing the SSH ports in use). Without it an inactive UFW is an error.
    type: bool
    default: true
  rollback_after:
    description:
      - Seconds after which the previous rules are restored unless the change is confirmed by removing
        RV(rollback.armed). C(0) arms no rollback.
    type: int
    default: 0
  rollback_id:
    description:
      - Groups the calls of one run (one per port) so that a rollback restores the rules from before the
        first of them. Use one id per run.
      - A name, never a path - 1-128 letters, digits, C(.), C(_) or C(-), without C(..). It names a directory
        under C(/var/lib/sipguard/rollback) that a later run with the same id replaces.
    type: str
  apply:
    description:
      - How the planned change is made.
      - C(files) writes C(/etc/ufw/user.rules) and C(user6.rules) in ufw's own layout (rules the change
        keeps are copied byte for byte) under ufw's lock, then loads each changed file with one
        C(iptables-restore -n) / C(ip6tables-restore -n), which is what ufw itself runs after every rule
        change, but once for the whole change and as one transaction. An inactive UFW is then enabled with
        C(ufw --force enable).
      - C(ufw) runs the C(ufw) command line once per rule change (RV(commands)). This is slower, since every
        call starts ufw and reloads the user chains (flushing them first, so not atomically).
      - C(auto) uses C(files) unless a rules file is not in ufw's layout (for example edited by hand),
        then C(ufw).
      - Both give the same files and the same kernel rules (tested on the lab against each other).
    type: str
    choices: [auto, files, ufw]
    default: auto
    version_added: 1.1.0
  lockout_guard:
    description:
      - Refuse to close the port SSH listens on, and refuse any plan that would block SSH.
      - Turn off only with console access to the host.
    type: bool
    default: true
  ssh_ports:
    description:
      - TCP ports SSH must keep, in addition to those the module finds (see the description); the
        M(sipguard.firewall.close) role passes the port Ansible connects to (C(ansible_port)).
      - Needed when UFW is inactive and no SSH port can be found on the host.
    type: list
    elements: int
    default: []
    version_added: 1.2.0
requirements:
  - ufw, iptables and iproute2 on the target; root (C(become=true)).
seealso:
  - module: sipguard.firewall.ufw_info
"""

EXAMPLES = r"""
- name: Close SIP over UDP and TCP
  sipguard.firewall.ufw_port:
    port: 5060
    proto: any
  become: true

- name: Close every SIP port in one change
  sipguard.firewall.ufw_port:
    ports: ['5060/udp', '5060/tcp', '5061/tcp']
  become: true

- name: Admit 5060/udp only from the SIP trunk provider
  sipguard.firewall.ufw_port:
    port: 5060
    proto: udp
    state: restricted
    allow_from: ['203.0.113.0/24', '2001:db8:5060::/48']
  become: true

- name: Close with a commit-confirmed rollback
  sipguard.firewall.ufw_port:
    port: 5061
    proto: tcp
    method: reject
    rollback_after: 60
    rollback_id: close-2026-11-25
  become: true
  register: closed

- name: Close 5060/udp through the ufw command line, one ufw call per rule
  sipguard.firewall.ufw_port:
    port: 5060
    proto: udp
    apply: ufw
  become: true

- name: Confirm (the connection still works)
  ansible.builtin.file:
    path: "{{ closed.rollback.armed }}"
    state: absent
  become: true
  when: closed.rollback.armed is not none
"""

RETURN = r"""
commands:
  description:
    - The ufw argument lists that make the change, in order; run as such with O(apply=ufw) (or when
      O(apply=auto) falls back to it). With C(files) they describe the same change.
  returned: always
  type: list
  elements: list
  sample: [["--force", "delete", "2"], ["prepend", "deny", "proto", "udp", "from", "any", "to", "any", "port", "5060",
            "comment", "sipguard.firewall 5060/udp"]]
rules_before:
  description: UFW rules before, as ufw_info returns them.
  returned: always
  type: list
  elements: dict
rules_after:
  description: UFW rules after (predicted in check mode).
  returned: always
  type: list
  elements: dict
deleted:
  description: Rules removed because they admitted exactly this port (or would make ufw skip a managed rule).
  returned: always
  type: list
  elements: dict
added:
  description: Rules the change adds (the managed blocks and sources, and SSH guard rules when UFW is enabled).
  returned: always
  type: list
  elements: dict
verdicts:
  description: The effective verdict per C(PORT/PROTO/FAMILY), before and after (predicted in check mode).
  returned: always
  type: dict
  contains:
    before:
      description: Verdicts before the change.
      type: dict
    after:
      description: Verdicts after the change.
      type: dict
  sample: {"before": {"5060/udp/ipv4": {"state": "open"}}, "after": {"5060/udp/ipv4": {"state": "blocked"}}}
applied_with:
  description: How the change was (or would be) made, C(files) or C(ufw); null when nothing changes.
  returned: always
  type: str
  sample: files
  version_added: 1.1.0
enabled_ufw:
  description: UFW was (or would be) enabled.
  returned: always
  type: bool
  sample: false
ssh_ports:
  description:
    - SSH ports the lock-out guard protected - O(ssh_ports), C(SSH_CONNECTION), the TCP ports sshd listens on,
      and (when there is a change to guard) the ports of C(sshd -T) and of a systemd C(ssh.socket).
    - On a run that changes nothing, sshd's configuration and socket units are not read.
  returned: always
  type: list
  elements: int
  sample: [22, 2222]
ssh_port_sources:
  description: Where each port of RV(ssh_ports) was found (C(named), C(SSH_CONNECTION), C(sshd -T), C(listening), C(ssh.socket)).
  returned: always
  type: dict
  sample: {"22": ["named", "SSH_CONNECTION", "sshd -T", "listening"], "2222": ["sshd -T", "listening"]}
  version_added: 1.2.0
info:
  description:
    - The host as M(sipguard.firewall.ufw_info) reports it for these ports (without C(ufw.app_profiles)), read after
      the change (before it in check mode or when nothing changed), so that a verify step needs no second module run.
    - Also returned when the module refuses a change (nothing was changed) or applying failed (read again
      after the previous rules were restored); null only when the host's state could not be read.
  returned: always
  type: dict
  sample: {"exposed": false, "exposure": [], "listeners": [], "ufw": {}, "caveats": []}
rollback:
  description: The commit-confirmed rollback, when armed.
  returned: always
  type: dict
  contains:
    id:
      description: The rollback group.
      type: str
    armed:
      description: Remove this file to confirm the change; null when no rollback is armed.
      type: str
    deadline:
      description: Unix time at which the previous rules come back unless confirmed.
      type: float
  sample: {"id": "close-2026-11-25", "armed": "/var/lib/sipguard/rollback/close-2026-11-25/armed", "deadline": 1795000000.0}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import NetfilterParseError
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import (
    ApplyError,
    apply_commands,
    apply_files,
    arm_rollback,
    backup,
    check_rollback_id,
    gather,
    restore,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.ssh_guard import read_ssh_ports
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import UfwModelError, inspect_host
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_plan import (
    HostState,
    PlanError,
    check_request,
    check_ssh_ports,
    parse_targets,
    plan_close,
    render_rules,
)


def _states(verdicts):
    return dict((k, v["state"]) for k, v in verdicts.items())


def _inspect(raw, specs, restricted_prefix=None):
    """ufw_info's view of ``raw`` without the catalogue of application profiles (the verdicts
    already name the profile that decided), or None when it cannot be read (the failure says why)."""
    try:
        info = inspect_host(raw, specs, restricted_prefix)
    except (UfwModelError, NetfilterParseError):
        return None
    info["ufw"].pop("app_profiles", None)
    return info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            port=dict(type="int"),
            proto=dict(type="str", default="any", choices=["tcp", "udp", "any"]),
            ports=dict(type="list", elements="str"),
            state=dict(type="str", default="closed", choices=["closed", "restricted"]),
            allow_from=dict(type="list", elements="str", default=[]),
            method=dict(type="str", default="deny", choices=["deny", "reject"]),
            families=dict(type="list", elements="str", default=["ipv4", "ipv6"], choices=["ipv4", "ipv6"]),
            enable_ufw=dict(type="bool", default=True),
            rollback_after=dict(type="int", default=0),
            rollback_id=dict(type="str"),
            lockout_guard=dict(type="bool", default=True),
            apply=dict(type="str", default="auto", choices=["auto", "files", "ufw"]),
            ssh_ports=dict(type="list", elements="int", default=[]),
            restricted_prefix=dict(type="dict", options=dict(ipv4=dict(type="int", default=8),
                                                             ipv6=dict(type="int", default=32))),
        ),
        mutually_exclusive=[("port", "ports")],
        required_one_of=[("port", "ports")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        targets = parse_targets(p["ports"]) if p["ports"] is not None else [(p["port"], p["proto"])]
        for port, proto in targets:
            check_request(port, proto, p["state"], p["allow_from"], p["method"], p["families"], p["restricted_prefix"])
        check_ssh_ports(p["ssh_ports"])
        check_rollback_id(p["rollback_id"])
        if p["rollback_after"] < 0:
            raise PlanError("rollback_after: %d is negative; give seconds (0 = no rollback)" % p["rollback_after"])
    except (PlanError, ApplyError, UfwModelError) as exc:
        module.fail_json(msg=str(exc))
    if os.geteuid() != 0:
        module.fail_json(msg="ufw_port changes the firewall and needs root: run it with become: true")

    raw = gather(module)
    specs = [PortSpec(port, p) for port, proto in targets for p in (("udp", "tcp") if proto == "any" else (proto,))]

    def plan_for(state, ssh):
        return plan_close(state, targets, p["state"], p["allow_from"], p["method"], p["families"],
                          p["enable_ufw"], ssh, p["lockout_guard"], p["restricted_prefix"])

    ss = raw["commands"].get("ss") or {}
    listeners = ss.get("out") if ss.get("rc") == 0 else None
    guard = read_ssh_ports(module, listeners, p["ssh_ports"], read_config=False)
    ports = guard.ports
    try:
        host = HostState(raw)
        try:
            plan = plan_for(host, ports)
        except PlanError:
            plan = None
        if plan is None or plan.changed:
            # Only a change can lock SSH out: sshd's own ports (sshd -T) are read when there is one.
            guard = read_ssh_ports(module, listeners, p["ssh_ports"])
            ports = guard.ports
            plan = plan_for(host, ports)
    except (PlanError, UfwModelError, NetfilterParseError) as exc:
        # Nothing was changed: the host as it is (with ufw_info's remediation) goes back with the refusal.
        module.fail_json(msg=str(exc), ssh_ports=ports, ssh_port_sources=guard.sources(),
                         info=_inspect(raw, specs, p["restricted_prefix"]))

    applied_with = None
    if plan.changed:
        applied_with = "ufw" if p["apply"] == "ufw" or (p["apply"] == "auto" and plan.files is None) else "files"
        if applied_with == "files" and plan.files is None:
            module.fail_json(msg="apply=files: /etc/ufw/user.rules or user6.rules is not in the layout ufw writes "
                                 "(edited by hand?), so it cannot be rewritten safely; use apply=ufw or auto",
                             commands=plan.commands, info=_inspect(raw, specs, p["restricted_prefix"]))
    result = dict(
        changed=plan.changed,
        applied_with=applied_with,
        commands=plan.commands,
        rules_before=plan.before,
        rules_after=plan.after,
        deleted=plan.deleted,
        added=plan.added,
        verdicts=dict(before=plan.verdicts_before, after=plan.verdicts_after),
        enabled_ufw=plan.enable,
        ssh_ports=ports,
        ssh_port_sources=guard.sources(),
        rollback=dict(id=p["rollback_id"], armed=None, deadline=None),
        diff=dict(before=render_rules(plan.before), after=render_rules(plan.after)),
        info=None,  # read below: once, after the change when there is one
    )
    if not plan.changed or module.check_mode:
        result["info"] = _inspect(raw, specs, p["restricted_prefix"])
        module.exit_json(**result)

    ufw = raw["ufw_binary"]
    group = p["rollback_id"] or "ufw_port-%d-%d" % (os.getpid(), int(time.time()))
    directory = backup(group, host.active)
    try:
        if applied_with == "files":
            reload_families = [f for f in plan.files if host.active and (f == 4 or host.ipv6)]
            apply_files(module, ufw, plan.files, reload_families, plan.enable, directory)
        else:
            apply_commands(module, ufw, plan.commands, directory)
        # A firewall change moves netfilter and the files only: listeners, addresses and routes stand.
        raw_after = gather(module, commands=("iptables_save", "ip6tables_save"), previous=raw)
        after = HostState(raw_after)
        check = plan_for(after, ports)
        if check.changed or _states(check.verdicts_before) != _states(plan.verdicts_after):
            restore(directory, ufw, module.run_command)
            result["info"] = _inspect(gather(module), specs, p["restricted_prefix"])
            module.fail_json(msg="after applying, the host does not match the plan (still to do: %s; verdicts %s); "
                                 "the previous rules were restored" % (check.commands,
                                                                       _states(check.verdicts_before)), **result)
        result["rules_after"] = check.before
        result["info"] = _inspect(raw_after, specs, p["restricted_prefix"])
        result["diff"]["after"] = render_rules(check.before)
    except (ApplyError, PlanError, UfwModelError, NetfilterParseError, OSError) as exc:
        # the rules as they are after the restore
        result["info"] = _inspect(gather(module), specs, p["restricted_prefix"])
        module.fail_json(msg=str(exc), **result)
    if p["rollback_after"] > 0:
        result["rollback"] = dict(id=group, armed=arm_rollback(directory, p["rollback_after"], ufw),
                                  deadline=time.time() + p["rollback_after"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
