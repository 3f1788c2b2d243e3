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
        self.rollback_after = params.get("rollback_after") or 0
        if self.rollback_after < 0:
            raise ChangeFailed("rollback_after: %d is negative; give seconds (0 = no rollback)" % self.rollback_after,
                               {})
        self.specs = [PortSpec(port, p) for port, proto in self.targets
                      for p in (("udp", "tcp") if proto == "any" else (proto,))]

    def plan(self, host, ssh_ports):
        return plan_close(host, self.targets, self.state, self.allow_from, self.method, self.families,
                          self.enable_ufw, ssh_ports, self.lockout_guard, self.restricted_prefix)


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
        diff=dict(before=render_rules(plan.before), after=render_rules(plan.after)),
        info=None,
    )


def run_change(runner, request, check_mode=False, now=time.time):
    """Close (or restrict) ``request``'s ports on the host behind ``runner``; return ufw_port's result.

    Raises ChangeFailed (message and the result to return with it) when the change is refused
    (nothing changed) or fails (the message says whether the previous rules were restored).
    """
    rollbacks = runner.rollbacks()
    # Check mode writes nothing, not even ufw's lock file.
    try:
        lock = contextlib.nullcontext() if check_mode else runner.lock()
        lock.__enter__()
    except Exception as exc:  # pylint: disable=broad-except
        raise ChangeFailed("%s. Nothing was changed" % exc, dict(rollbacks=rollbacks))
    try:
        return _locked(runner, request, check_mode, now, rollbacks)
    finally:
        lock.__exit__(None, None, None)


def _locked(runner, request, check_mode, now, rollbacks):
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
    _transaction(runner, request, host, plan, ports, result, now)
    return result


def _transaction(runner, request, host, plan, ports, result, now):
    """Back up -> arm -> apply -> re-read -> verify, restoring on any exception after the backup."""
    group = request.rollback_id or "ufw_port-%d-%d" % (os.getpid(), int(now()))
    try:
        directory = runner.backup(group, host.active)
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
        if result["applied_with"] == "files":
            reload_families = [f for f in plan.files if host.active and (f == 4 or host.ipv6)]
            runner.apply_files(plan.files, reload_families, plan.enable)
        else:
            runner.apply_commands(plan.commands)
        step = "reading the host after the change"
        raw_after = runner.gather(commands=REREAD, previous=host.raw)
        after = UfwHost(raw_after)
        step = "verifying the change"
        check = request.plan(after, ports)
        if check.changed or _states(check.verdicts_before) != _states(plan.verdicts_after):
            raise PlanError("after applying, the host does not match the plan (still to do: %s; verdicts %s)"
                            % (check.commands, _states(check.verdicts_before)))
    except Exception as exc:  # pylint: disable=broad-except  # any failure after the backup restores
        msg, still_armed = _undo(runner, directory, armed, step, exc)
        failed = dict(result, info=_reread(runner, request))
        if not still_armed:
            failed["rollback"] = dict(result["rollback"], armed=None, deadline=None)
        raise ChangeFailed(msg, failed)
    result["rules_after"] = check.before
    result["info"] = _inspect(after, request)
    result["diff"]["after"] = render_rules(check.before)


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
