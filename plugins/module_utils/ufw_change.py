# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One change to UFW as one transaction: what ufw_port does, step by step.

Under ufw's lock: read the host -> plan -> back up -> arm the rollback -> apply -> read again ->
verify. Any exception after the backup restores the backup, and the message says whether that
worked. The lock is held from the read to the verify, so a ufw command run meanwhile waits and
runs after the change instead of being overwritten by it.

Everything that touches the host goes through ``runner`` (ufw_host.HostRunner on a host, a fake in
the unit tests), so every branch here is tested without a host. Runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import NetfilterParseError
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_files import DOCKER_CHAIN, RULE_FILES
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import UfwHost, UfwModelError, inspect_host
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import ApplyError, check_rollback_id
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_plan import (
    PlanError,
    check_request,
    check_ssh_ports,
    parse_targets,
    plan_close,
    render_rules,
)

# After a firewall change only netfilter and the files differ: listeners, addresses and routes stand.
REREAD = ("iptables_save", "ip6tables_save")
# A ufw command that started before the change may undo it when it ends (see _concurrent): how long
# to wait for it, and how often to apply the change again before giving up.
CONCURRENT_WAIT = 30
REAPPLY_ROUNDS = 3


class ChangeFailed(Exception):
    """The change was refused or failed; ``result`` is what the module returns with the message."""

    def __init__(self, msg, result):
        super(ChangeFailed, self).__init__(msg)
        self.msg = msg
        self.result = result


class ChangeRequest(object):
    """ufw_port's options, checked before anything is read (every error names the option)."""

    def __init__(self, params):
        try:
            self.targets = parse_targets(params["ports"]) if params.get("ports") is not None \
                else [(params["port"], params.get("proto", "any"))]
            self.state = params.get("state", "closed")
            self.allow_from = params.get("allow_from") or []
            self.method = params.get("method", "deny")
            self.families = params.get("families") or ["ipv4", "ipv6"]
            self.restricted_prefix = params.get("restricted_prefix")
            for port, proto in self.targets:
                check_request(port, proto, self.state, self.allow_from, self.method, self.families,
                              self.restricted_prefix)
            self.ssh_ports = params.get("ssh_ports") or []
            check_ssh_ports(self.ssh_ports)
            self.rollback_id = check_rollback_id(params.get("rollback_id"))
        except (PlanError, ApplyError, UfwModelError) as exc:
            raise ChangeFailed(str(exc), {})
        self.enable_ufw = params.get("enable_ufw", True)
        self.lockout_guard = params.get("lockout_guard", True)
        self.apply = params.get("apply", "auto")
        self.edit_ufw_files = bool(params.get("edit_ufw_files", False))
        self.docker = bool(params.get("docker", False))
        # Names the run in the markers of edited rules files (and the rollback group).
        self.run_id = self.rollback_id
        self.rollback_after = params.get("rollback_after") or 0
        if self.rollback_after < 0:
            raise ChangeFailed("rollback_after: %d is negative; give seconds (0 = no rollback)" % self.rollback_after,
                               {})
        self.specs = [PortSpec(port, p) for port, proto in self.targets
                      for p in (("udp", "tcp") if proto == "any" else (proto,))]

    def plan(self, host, ssh_ports):
        return plan_close(host, self.targets, self.state, self.allow_from, self.method, self.families,
                          self.enable_ufw, ssh_ports, self.lockout_guard, self.restricted_prefix,
                          edit_ufw_files=self.edit_ufw_files, docker=self.docker, run_id=self.run_id)


def _states(verdicts):
    return dict((k, v["state"]) for k, v in verdicts.items())


def _inspect(raw, request):
    """ufw_info's view of ``raw`` without the catalogue of application profiles (the verdicts
    already name the profile that decided), or None when it cannot be read."""
    try:
        info = inspect_host(raw, request.specs, request.restricted_prefix)
    except (UfwModelError, NetfilterParseError, TypeError, KeyError, AttributeError):
        return None
    info["ufw"].pop("app_profiles", None)
    return info


def _reread(runner, request):
    """The host as it is now (after a restore), for the failure's ``info``; None when unreadable."""
    try:
        return _inspect(runner.gather(), request)
    except Exception:  # pylint: disable=broad-except  # already failing: report the first error
        return None


def _diff(plan, rules_after=None):
    """Diff mode: the numbered rules before and after, then each edited rules file."""
    diffs = [dict(before_header="ufw status numbered", after_header="ufw status numbered",
                  before=render_rules(plan.before), after=render_rules(plan.after if rules_after is None
                                                                       else rules_after))]
    for path in sorted(plan.rule_files):
        diffs.append(dict(before_header=path, after_header=path, before=plan.rule_files_before.get(path, ""),
                          after=plan.rule_files[path]))
    return diffs


def _result(request, plan, guard, applied_with):
    return dict(
        changed=plan.changed,
        applied_with=applied_with,
        commands=plan.commands,
        rules_before=plan.before,
        rules_after=plan.after,
        deleted=plan.deleted,
        added=plan.added,
        verdicts=dict(before=plan.verdicts_before, after=plan.verdicts_after),
        enabled_ufw=plan.enable,
        ssh_ports=guard.ports,
        ssh_port_sources=guard.sources(),
        rollback=dict(id=request.rollback_id, armed=None, deadline=None),
        concurrent=dict(waited_for=[], reapplied=0),
        diff=_diff(plan),
        file_edits=plan.file_edits,
        info=None,
    )


def run_change(runner, request, check_mode=False, now=time.time):
    """Close (or restrict) ``request``'s ports on the host behind ``runner``; return ufw_port's result.

    Raises ChangeFailed (message and the result to return with it) when the change is refused
    (nothing changed) or fails (the message says whether the previous rules were restored).
    """
    rollbacks = runner.rollbacks()
    if request.run_id is None:
        # One name for the run: the markers in edited rules files and the rollback group.
        request.run_id = "ufw_port-%d-%d" % (os.getpid(), int(now()))
    # Check mode writes nothing, not even ufw's lock file.
    held = _Lock(runner, check_mode)
    try:
        held.take()
    except Exception as exc:  # pylint: disable=broad-except
        raise ChangeFailed("%s. Nothing was changed" % exc, dict(rollbacks=rollbacks))
    try:
        return _locked(runner, request, check_mode, now, rollbacks, held)
    finally:
        held.release()


class _Lock(object):
    """ufw's lock as the transaction holds it: released to let a concurrent ufw command finish,
    then taken again."""

    def __init__(self, runner, check_mode):
        self.runner = runner
        self.check_mode = check_mode
        self.lock = None

    def take(self):
        lock = contextlib.nullcontext() if self.check_mode else self.runner.lock()
        lock.__enter__()
        self.lock = lock

    def release(self):
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.__exit__(None, None, None)


def _locked(runner, request, check_mode, now, rollbacks, held):
    """run_change's steps under ufw's lock: read, plan, then the transaction when there is a change."""
    if not check_mode:
        # A change confirmed (its armed file removed) or rolled back at boot leaves the boot hook behind:
        # the admin's own before.init comes back here.
        runner.tidy()
    try:
        raw = runner.gather()
    except Exception as exc:  # pylint: disable=broad-except
        raise ChangeFailed("reading the host failed: %s. Nothing was changed" % exc, dict(rollbacks=rollbacks))
    ports, sources = [], {}
    ss = (raw.get("commands") or {}).get("ss") or {}
    listeners = ss.get("out") if ss.get("rc") == 0 else None
    try:
        host = UfwHost(raw)
        # Plan with the ports sshd listens on, the named ones and this connection's; only a change
        # can lock SSH out, so sshd's own configuration (``sshd -T``, ssh.socket) is read when
        # there is one (or when the plan is refused, to say it right).
        guard = runner.ssh_ports(read_config=False, listeners=listeners, named=request.ssh_ports)
        ports, sources = guard.ports, guard.sources()
        try:
            plan = request.plan(host, ports)
        except PlanError:
            plan = None
        if plan is None or plan.changed:
            guard = runner.ssh_ports(read_config=True, listeners=listeners, named=request.ssh_ports)
            ports, sources = guard.ports, guard.sources()
            plan = request.plan(host, ports)
    except (PlanError, UfwModelError, NetfilterParseError) as exc:
        # Nothing was changed: the host as it is (with ufw_info's remediation) goes back with the refusal.
        raise ChangeFailed(str(exc), dict(ssh_ports=ports, ssh_port_sources=sources, info=_inspect(raw, request),
                                          rollbacks=rollbacks))
    applied_with = None
    if plan.changed:
        files_ok = plan.files is not None
        applied_with = "ufw" if request.apply == "ufw" or (request.apply == "auto" and not files_ok) else "files"
        if applied_with == "files" and not files_ok:
            raise ChangeFailed("apply=files: /etc/ufw/user.rules or user6.rules is not in the layout ufw writes "
                               "(edited by hand?), so it cannot be rewritten safely; use apply=ufw or auto",
                               dict(commands=plan.commands, info=_inspect(raw, request), rollbacks=rollbacks))
    result = _result(request, plan, guard, applied_with)
    result["rollbacks"] = rollbacks
    if not plan.changed or check_mode:
        result["info"] = _inspect(host, request)
        return result
    _transaction(runner, request, host, plan, ports, result, now, held)
    return result


def _apply(runner, host, plan, applied_with):
    """Make ``plan``'s change on ``host`` (with the commands when the files cannot be rewritten).

    Edited before/after rules files are written first; an active UFW is then reloaded (``ufw
    reload`` loads them, the user rules too), an inactive one loads them when it is enabled."""
    if plan.rule_files:
        runner.write_rule_files(plan.rule_files)
    if plan.commands:
        if applied_with == "files" and plan.files is not None:
            reload_families = [f for f in plan.files if host.active and (f == 4 or host.ipv6)]
            runner.apply_files(plan.files, reload_families, plan.enable)
        else:
            runner.apply_commands(plan.commands)
    if plan.rule_files and host.active:
        runner.reload()


def _verify(request, plan, after, ports):
    """The plan on the host read after the change: it must have nothing left to do."""
    check = request.plan(after, ports)
    if check.changed or _states(check.verdicts_before) != _states(plan.verdicts_after):
        raise PlanError("after applying, the host does not match the plan (still to do: %s; verdicts %s)"
                        % (check.commands, _states(check.verdicts_before)))
    return check


def _described(processes):
    return ", ".join("%d (%s)" % (p["pid"], " ".join(p["argv"][1:] if len(p["argv"]) > 1 else p["argv"]))
                     for p in processes)


def _concurrent(runner, request, ports, applied_with, held, result):
    """Let the ufw commands that started before the change finish, and make the change again when
    one of them undid it; return the host and the last check as they are in the end.

    ufw reads its rules files before it takes its lock: a ufw command started while this change
    holds the lock waits for it, then writes the rules it read before the change (plus its own).
    So before the lock is let go for good, the ufw commands running now are waited for (the lock
    released meanwhile), the host is read again and planned again under the lock, and a change that
    was undone is applied again. A command started after the change read the changed files: only
    those running now can undo it.
    """
    waited, last = [], None
    for attempt in range(REAPPLY_ROUNDS + 1):
        others = runner.other_ufw_processes()
        if not others:
            return last
        if attempt == REAPPLY_ROUNDS:
            raise ApplyError("ufw commands kept undoing the change (%d times); still running: %s"
                             % (REAPPLY_ROUNDS, _described(others)))
        waited += [p for p in others if p["pid"] not in [w["pid"] for w in waited]]
        result["concurrent"]["waited_for"] = [dict(pid=p["pid"], argv=p["argv"]) for p in waited]
        held.release()
        left = runner.wait_for(others, CONCURRENT_WAIT)
        if left:
            # Safer to undo the change (under the lock, if it comes back) and fail than to report a
            # change that the unfinished command will undo when it ends.
            raise ApplyError("ufw command %s started before the change and did not end within %ds; when it ends it "
                             "writes the rules it read before the change, undoing it. Let it finish (or end it) "
                             "and run again" % (_described(left), CONCURRENT_WAIT))
        held.take()
        host = UfwHost(runner.gather())
        plan = request.plan(host, ports)
        if plan.changed:
            _apply(runner, host, plan, applied_with)
            after = UfwHost(runner.gather(commands=REREAD, previous=host.raw))
            check = _verify(request, plan, after, ports)
            result["concurrent"]["reapplied"] += 1
            result["warnings"] = ["ufw command %s ran during the change and undid it; the change was applied again "
                                  "(%d time(s)) and verified" % (_described(waited), result["concurrent"]["reapplied"])]
        else:
            after, check = host, plan
        last = (after, check)
    return last  # not reached: the last round returns or raises


def _transaction(runner, request, host, plan, ports, result, now, held):
    """Back up -> arm -> apply -> re-read -> verify, restoring on any exception after the backup."""
    group = request.run_id
    try:
        directory = runner.backup(group, host.active, _chains_to_keep(host, plan))
    except Exception as exc:  # pylint: disable=broad-except
        raise ChangeFailed("backing up the rules before the change failed: %s. Nothing was changed" % exc,
                           dict(result, changed=False, info=_inspect(host, request)))
    armed = None
    step = "arming the rollback"
    try:
        if request.rollback_after > 0:
            armed = runner.arm(directory, request.rollback_after, host.active)
            result["rollback"] = dict(id=group, armed=armed, deadline=now() + request.rollback_after)
        step = "applying the change"
        _apply(runner, host, plan, result["applied_with"])
        step = "reading the host after the change"
        raw_after = runner.gather(commands=REREAD, previous=host.raw)
        after = UfwHost(raw_after)
        step = "verifying the change"
        check = _verify(request, plan, after, ports)
        step = "waiting for concurrent ufw commands"
        last = _concurrent(runner, request, ports, result["applied_with"], held, result)
        if last is not None:
            after, check = last
    except Exception as exc:  # pylint: disable=broad-except  # any failure after the backup restores
        if held.lock is None:
            try:
                held.take()  # restore under ufw's lock, as every write here
            except Exception as lexc:  # pylint: disable=broad-except
                msg = ("%s failed: %s; ufw's lock could not be taken back to restore the previous rules (%s): %s"
                       % (step, exc, lexc, "the rollback armed in %s restores them at its deadline" % directory
                          if armed else "the previous files are in %s" % directory))
                raise ChangeFailed(msg, dict(result, info=None))
        msg, still_armed = _undo(runner, directory, armed, step, exc)
        failed = dict(result, info=_reread(runner, request))
        if not still_armed:
            failed["rollback"] = dict(result["rollback"], armed=None, deadline=None)
        raise ChangeFailed(msg, failed)
    result["rules_after"] = check.before
    result["info"] = _inspect(after, request)
    result["diff"] = _diff(plan, check.before)


def _chains_to_keep(host, plan):
    """{family: iptables-restore text of DOCKER-USER as it is} when the plan declares it in after.rules:
    a reload after the rules files are restored leaves that chain as the change made it (no file
    declares it any more), so the rollback restores it from this."""
    keep = {}
    for family in (4, 6):
        if not any(e["action"] == "docker block" and e["file"] == RULE_FILES[(family, "after")]
                   for e in plan.file_edits):
            continue
        chain = host.live[family].get("filter", {}).get(DOCKER_CHAIN)
        if chain is None:
            continue
        rules = ["-A %s %s" % (DOCKER_CHAIN, " ".join('"%s"' % x if " " in x or not x else x for x in r.args))
                 for r in chain.rules]
        keep[family] = "*filter\n:%s - [0:0]\n%sCOMMIT\n" % (DOCKER_CHAIN, "".join(r + "\n" for r in rules))
    return keep


def _undo(runner, directory, armed, step, exc):
    """Restore the backup: (message saying what failed and whether the old rules are back, still armed)."""
    what = "%s failed: %s" % (step, exc) if step != "verifying the change" else str(exc)
    try:
        runner.restore(directory)
    except Exception as rexc:  # pylint: disable=broad-except
        if armed:
            return ("%s; restoring the previous rules failed too (%s): the rollback armed in %s tries again at "
                    "its deadline" % (what, rexc, directory)), True
        return ("%s; restoring the previous rules failed too (%s): the host may run a partial change, the "
                "previous files are in %s" % (what, rexc, directory)), False
    try:
        runner.disarm(directory)
    except Exception as dexc:  # pylint: disable=broad-except
        return ("%s; the previous rules were restored (but the rollback could not be disarmed, it may restore "
                "them once more at its deadline: %s)" % (what, dexc)), bool(armed)
    return "%s; the previous rules were restored" % what, False
