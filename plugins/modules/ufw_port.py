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
  - The change is one transaction under ufw's own lock (C(/run/ufw.lock), the lock every ufw command
    takes) that reads the host, plans, backs up the rule files, arms the rollback, applies, reads the
    host again and verifies. A ufw command that started earlier finishes first and is not overwritten. The
    module's own ufw commands run while it holds the lock.
  - ufw reads its rules files before it takes its lock, so a ufw command started while the change runs
    waits for the lock and then writes the rules it read before the change, undoing it. Before letting
    the lock go, the module looks for ufw commands of this host's UFW configuration that write (every one
    but C(status), C(show), C(version), C(app list), C(app info) and C(--dry-run)), lets them finish (up
    to 30 s), then reads and plans again under the lock and applies the change again when it was undone
    (RV(concurrent), with a warning). A command that does not end within 30 s (for example C(ufw enable)
    waiting at its prompt) would undo the change whenever it ends, so the module fails and restores the
    previous rules (if that command holds the lock, the restore is left to the armed rollback, and the
    message says so). It also fails when ufw commands undo the change three times in a row.
  - After applying, the host is read again and the verdict checked; if it differs from the plan,
    the previous rules are restored and the module fails. Any failure after the backup restores the
    previous rules, and the message says whether restoring worked.
  - With O(rollback_after), the rollback is armed before the first change; unless the change is
    confirmed (the file returned as RV(rollback.armed) removed) in time, the previous rules come back.
    Where systemd is PID 1 of this host, a transient systemd timer (C(systemd-run), outside the SSH
    session) restores them; elsewhere a detached watcher process does, whose liveness is an flock it
    holds (not a pid file). UFW's boot hook C(/etc/ufw/before.init) restores an unconfirmed change
    when ufw starts at boot, before the network comes up; an existing C(before.init) is kept as
    C(before.init.sipguard-orig), chained to, and put back once no change is pending.
  - With O(edit_ufw_files), a line of UFW's own C(before.rules), C(before6.rules), C(after.rules) or
    C(after6.rules) that still admits the port is disabled (see the option); with O(docker), Docker-published
    ports are dropped in C(DOCKER-USER) from after.rules. DNAT traffic that UFW's forward chains admit (an
    allowed routed policy or route rule) is closed with C(ufw route) deny rules to the DNAT's destination,
    without an option. What stays out of UFW's reach (an ACCEPT ahead of UFW's chains, a NAT in another
    backend whose forwarded traffic never meets UFW) is refused, and the message names the rule and which
    option, if any, would close it (RV(info) C(exposure[].ipv4.closed_by)).
  - Backups are kept in C(/var/lib/sipguard/rollback/<rollback_id>) (directory 0700, files 0600).
    A rollback that happened is reported by the next run (RV(rollbacks), and by
    M(sipguard.firewall.ufw_info)).
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
      - The numbered rule list before and after, as C(ufw status numbered) shows it, then each edited
        rules file (O(edit_ufw_files), O(docker)) before and after.
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
      - The rollback is armed before the change is made, and survives the end of the SSH session and a
        reboot (see the description).
    type: int
    default: 0
  rollback_id:
    description:
      - Groups the calls of one run (the close role makes one per host, with every port; a playbook may make
        more) so that a rollback restores the rules from before the first of them. Use one id per run.
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
  edit_ufw_files:
    description:
      - Edit UFW's own rules files (C(/etc/ufw/before.rules), C(before6.rules), C(after.rules), C(after6.rules))
        when a line there still admits the port once the user rules are planned (the evaluator names the line).
      - A line that admits only this port and protocol is commented out with the marker C(# sipguard RUN_ID:)
        and a space, where RUN_ID is O(rollback_id) (without it, the run's own id, C(ufw_port-PID-TIME)). A line
        that admits other ports too (a range, a multiport list, no port at all) is kept, and a blocking line
        (C(-m comment --comment "sipguard.firewall PORT/PROTO"), after a marker comment) is inserted ahead of it
        in the same chain.
      - A file that does not parse, or a chain filled with C(-I), is never edited (the change is refused). The
        files keep their mode and owner, are backed up with the user rules (the rollback restores them), and
        UFW is reloaded.
      - Give O(rollback_id) for check mode to predict the marker text exactly.
    type: bool
    default: false
    version_added: 1.2.0
  docker:
    description:
      - Where Docker's C(DOCKER-USER) chain exists (per family), put a marked block at the end of
        C(/etc/ufw/after.rules) (C(after6.rules)) between C(# BEGIN sipguard.firewall docker) and
        C(# END sipguard.firewall docker). It declares C(DOCKER-USER), so every UFW start and reload flushes and
        refills it with - for each port - a drop (or reject) of forwarded connections that were
        destination-NATed from that port (C(-m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdstport PORT), that is
        the port the client connected to, whatever container port Docker maps it to; the containers' own
        outgoing SIP traffic is not NATed that way and passes), then a jump to UFW's C(ufw-user-forward) (so
        C(ufw route) rules apply to Docker's traffic), then C(RETURN).
      - C(docker=false) leaves an installed block alone. To remove it, delete the lines from BEGIN to END,
        run C(ufw reload), then C(iptables -F DOCKER-USER) (and C(ip6tables -F DOCKER-USER)); a reload flushes
        only the chains a file declares, so the rules stay in the kernel until then. The rollback of this module
        does all of that itself (DOCKER-USER's rules from before the change are in the backup).
    type: bool
    default: false
    version_added: 1.2.0
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

- name: Close 5060 also where before.rules or a Docker-published port admits it
  sipguard.firewall.ufw_port:
    ports: ['5060/udp', '5060/tcp']
    edit_ufw_files: true
    docker: true
    rollback_id: close-2026-11-25-files
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
file_edits:
  description:
    - What O(edit_ufw_files) and O(docker) changed (or would change) in UFW's rules files, in order.
    - C(action) is C(commented) (the line was commented out), C(blocked) (C(inserted) was put ahead of it) or
      C(docker block) (C(inserted) is the block); C(line) is the line number in the file as it was read.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
  sample: [{"file": "/etc/ufw/before.rules", "line": 18, "action": "commented",
            "text": "-A ufw-before-input -p udp --dport 5060 -j ACCEPT"}]
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
rollbacks:
  description:
    - Rollbacks that happened on this host before this run (a change not confirmed in time, or found
      unconfirmed when ufw started at boot), oldest first; the same list as M(sipguard.firewall.ufw_info) returns.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
  contains:
    id:
      description: The rollback group (O(rollback_id)).
      type: str
    time:
      description: Unix time of the rollback.
      type: float
    at:
      description: The same time, ISO 8601 UTC.
      type: str
    by:
      description: C(watcher) (detached process), C(timer) (transient systemd timer) or C(boot) (ufw's boot hook).
      type: str
    outcome:
      description: C(restored), or what went wrong.
      type: str
  sample: [{"id": "close-2026-11-25", "time": 1795000000.0, "at": "2026-11-18T06:13:20Z", "by": "boot",
            "outcome": "restored"}]
concurrent:
  description:
    - ufw commands that were running when the change had been made and that it waited for before letting
      ufw's lock go (ufw reads its rules before it takes its lock, so such a command can undo the change),
      and how often the change was applied again because one of them had undone it.
  returned: always
  type: dict
  version_added: 1.2.0
  contains:
    waited_for:
      description: The ufw commands waited for, as C(pid) and C(argv).
      type: list
      elements: dict
    reapplied:
      description: How often the change was applied again (and verified) after a ufw command undid it.
      type: int
  sample: {"waited_for": [{"pid": 4242, "argv": ["/usr/bin/python3", "/usr/sbin/ufw", "allow", "7000/tcp"]}],
           "reapplied": 1}
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_change import ChangeFailed, ChangeRequest, run_change
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import HostRunner


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
            edit_ufw_files=dict(type="bool", default=False),
            docker=dict(type="bool", default=False),
            restricted_prefix=dict(type="dict", options=dict(ipv4=dict(type="int", default=8),
                                                             ipv6=dict(type="int", default=32))),
        ),
        mutually_exclusive=[("port", "ports")],
        required_one_of=[("port", "ports")],
        supports_check_mode=True,
    )
    try:
        request = ChangeRequest(module.params)
        if os.geteuid() != 0:
            module.fail_json(msg="ufw_port changes the firewall and needs root: run it with become: true")
        result = run_change(HostRunner(module), request, check_mode=module.check_mode)
    except ChangeFailed as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
