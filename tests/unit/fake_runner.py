"""The fake host runner of the change transaction's unit tests (test_ufw_change, test_ufw_files):
records the steps, fails at the one it is told to; the host is a real one recorded from the close lab."""

import contextlib
import os

from ansible_collections.sipguard.firewall.plugins.module_utils import ssh_guard, ufw_change
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import ApplyError

import lab_fixtures as lab

CHANGE = os.path.join(lab.HERE, "fixtures", "change")
BEFORE = lab.raw("c-txn-before", directory=CHANGE)
AFTER = lab.raw("c-txn-after-close-5060-udp", directory=CHANGE)
STEPS = ("lock", "gather", "backup", "arm", "apply", "reread", "restore", "disarm")


class Boom(RuntimeError):
    pass


class FakeRunner(object):
    """Records the steps; ``fail`` names the step that raises. The host is BEFORE until the change
    is applied (then AFTER, or ``after`` when given) and BEFORE again once restored."""

    def __init__(self, fail=(), after=None, before=None, others=(), locks=None):
        self.fail = set([fail] if isinstance(fail, str) else fail)
        self.others = list(others)  # one list of concurrent ufw processes per scan
        self.locks = locks  # how many times the lock can be taken (None: always)
        self.calls = []
        self.before = BEFORE if before is None else before
        self.after = AFTER if after is None else after
        self.applied = False
        self.locked = False

    def _step(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise Boom("%s broke" % name)

    @contextlib.contextmanager
    def _lock(self):
        self.locked = True
        try:
            yield
        finally:
            self.locked = False
            self.calls.append("unlock")

    def lock(self):
        self._step("lock")
        if self.locks is not None:
            if not self.locks:
                raise ApplyError("could not take ufw's lock /run/ufw.lock within 60s")
            self.locks -= 1
        return self._lock()

    def other_ufw_processes(self):
        self.calls.append("others")
        assert self.locked
        return [dict(p) for p in self.others.pop(0)] if self.others else []

    def wait_for(self, processes, timeout):
        self.calls.append("wait")
        assert not self.locked and timeout == ufw_change.CONCURRENT_WAIT
        if any(p.get("undoes") for p in processes):
            self.applied = False  # it wrote the rules it read before the change
        return [p for p in processes if p.get("hangs")]

    def gather(self, commands=None, previous=None):
        if commands is not None:
            self._step("reread")
            assert previous is not None and self.locked
        else:
            self._step("gather")
        return self.after if self.applied else self.before

    def ssh_ports(self, read_config=True, listeners=None, named=()):
        self.calls.append("ssh_ports(%s)" % read_config)
        guard = ssh_guard.SshGuard()
        guard.add([22], "SSH_CONNECTION")
        guard.add(named, "named")
        return guard

    def tidy(self):
        self.calls.append("tidy")

    def rollbacks(self):
        return [{"id": "earlier", "time": 1.0, "at": "1970-01-01T00:00:01Z", "by": "boot", "outcome": "restored"}]

    def backup(self, group, was_active, chains=None):
        self._step("backup")
        self.chains = chains
        assert self.locked and was_active is True
        return "/var/lib/sipguard/rollback/" + group

    def arm(self, directory, seconds, was_active):
        self._step("arm")
        assert not self.applied, "the rollback must be armed before the change"
        return directory + "/armed"

    def apply_files(self, files, reload_families, enable):
        self.calls.append("apply")
        assert self.locked
        self.applied = True  # a failing apply may have changed part of the host
        if "apply" in self.fail:
            raise ApplyError("iptables-restore -n failed")

    def apply_commands(self, commands):
        self.apply_files(None, None, None)

    def write_rule_files(self, files):
        self.calls.append("write_rule_files")
        assert self.locked
        self.rule_files = files

    def reload(self):
        self.calls.append("reload")
        assert self.locked

    def restore(self, directory):
        self._step("restore")
        self.applied = False

    def disarm(self, directory):
        self._step("disarm")
