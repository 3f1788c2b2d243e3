"""Run ufw_port's transaction (ufw_change.run_change with the real HostRunner) inside a lab host,
and start another ``ufw`` command between planning and applying: in the runner's backup step,
which comes after the plan and before the change.

Usage (inside the lab host): interleave_change.py lock|nolock ARGV-OF-THE-OTHER-UFW-COMMAND...
Prints JSON: whether the other command finished inside the window, its exit code, the change.
``nolock`` runs the same transaction without ufw's lock: the control that shows the lost update.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_change import (
    ChangeFailed,
    ChangeRequest,
    run_change,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_host import HostRunner

WINDOW = 3.0


class Module(object):
    """The two AnsibleModule methods HostRunner uses, for a run outside Ansible."""

    @staticmethod
    def get_bin_path(name, opt_dirs=()):
        dirs = list(opt_dirs) + [os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]
        return shutil.which(name, path=os.pathsep.join(dirs))

    @staticmethod
    def run_command(argv, data=None, binary_data=False, environ_update=None):
        env = dict(os.environ, **(environ_update or {}))
        if data is not None and not binary_data:
            data += "\n"
        proc = subprocess.run(argv, input=data.encode() if data is not None else None, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, check=False)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


class Interleaved(HostRunner):
    def __init__(self, module, use_lock, other):
        super().__init__(module)
        self.use_lock = use_lock
        self.other_argv = other
        self.other = None
        self.finished_in_window = None

    def lock(self):
        return super().lock() if self.use_lock else contextlib.nullcontext()

    def backup(self, group, was_active, chains=None):
        self.other = subprocess.Popen(self.other_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(WINDOW)
        self.finished_in_window = self.other.poll() is not None
        return super().backup(group, was_active, chains)


def main():
    # Inside a lab host /etc/ufw is the host's own overlay, mounted from /etc/netns/sg-<host>/ufw.
    with open("/proc/self/mountinfo") as fh:
        lab_ufw = [ln for ln in fh if ln.split()[4] == "/etc/ufw" and "/etc/netns/sg-" in ln.split()[3]]
    if not lab_ufw:
        sys.exit("interleave_change.py changes the firewall: run it inside a lab host (sglab.py exec HOST --)")
    runner = Interleaved(Module(), sys.argv[1] == "lock", sys.argv[2:])
    request = ChangeRequest({"ports": ["5060/udp"], "apply": "files"})
    try:
        result = run_change(runner, request)
        outcome = {"changed": result["changed"], "msg": None, "concurrent": result["concurrent"],
                   "warnings": result.get("warnings", [])}
    except ChangeFailed as exc:
        outcome = {"changed": None, "msg": exc.msg, "concurrent": exc.result.get("concurrent"), "warnings": []}
    started = time.time()
    out = runner.other.communicate(timeout=60)[0].decode("utf-8", "replace")
    outcome.update({"finished_in_window": runner.finished_in_window, "other_rc": runner.other.returncode,
                    "other_output": out, "other_waited_after_change": time.time() - started})
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
