# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The system edge shared by ufw_info and ufw_port: read the host, run ufw, back up and roll back.

Everything here runs argument lists through ``module.run_command`` (or, in the detached
rollback process, ``subprocess`` with argument lists); nothing builds a shell string.
Runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import APPLICATIONS_DIR, COMMANDS, FILES

BACKUP_ROOT = "/var/lib/sipguard/rollback"
BACKED_UP = ("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/ufw/ufw.conf")


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except (IOError, OSError):
        return None


def gather(module):
    """Everything the UFW model needs, read in one module run."""
    raw = {"ufw_binary": module.get_bin_path("ufw"), "commands": {}, "files": {}, "applications": {}}
    for key, argv in COMMANDS.items():
        binary = module.get_bin_path(argv[0])
        if binary is None:
            raw["commands"][key] = {"rc": None, "out": "", "err": "%s not found" % argv[0]}
            continue
        rc, out, err = module.run_command([binary] + argv[1:], environ_update={"LC_ALL": "C"})
        raw["commands"][key] = {"rc": rc, "out": out, "err": err}
    for key, path in FILES.items():
        raw["files"][key] = _read(path)
    if os.path.isdir(APPLICATIONS_DIR):
        for name in sorted(os.listdir(APPLICATIONS_DIR)):
            text = _read(os.path.join(APPLICATIONS_DIR, name))
            if text is not None:
                raw["applications"][name] = text
    return raw


def ssh_ports(module):
    """The TCP ports sshd listens on (``sshd -T``) and the port of this very connection."""
    ports = set()
    conn = os.environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4 and conn[3].isdigit():
        ports.add(int(conn[3]))
    sshd = module.get_bin_path("sshd", opt_dirs=["/usr/sbin", "/usr/local/sbin"])
    if sshd:
        rc, out, _err = module.run_command([sshd, "-T"], environ_update={"LC_ALL": "C"})
        if rc == 0:
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "port" and parts[1].isdigit():
                    ports.add(int(parts[1]))
    return sorted(ports)


class ApplyError(RuntimeError):
    pass


def backup(group, was_active):
    """Copy UFW's rule files into the rollback group; the first backup of a group wins.

    One ``close`` run may call ufw_port once per port; all of them share one group, so a
    rollback restores the state from before the whole run, not from before the last port.
    """
    directory = os.path.join(BACKUP_ROOT, group)
    if os.path.exists(os.path.join(directory, "armed")):
        return directory  # an earlier port of this run, not yet confirmed
    shutil.rmtree(directory, ignore_errors=True)  # a finished group of the same name is stale
    os.makedirs(directory, 0o700)
    for path in BACKED_UP:
        if os.path.exists(path):
            shutil.copy2(path, os.path.join(directory, os.path.basename(path)))
    with open(os.path.join(directory, "state.json"), "w") as fh:
        json.dump({"was_active": was_active, "created": time.time()}, fh)
    return directory


def restore(directory, ufw_binary, run):
    """Put the backed-up files back and make the kernel run them again.

    ``run(argv)`` returns (rc, out, err); it is module.run_command or a subprocess wrapper.
    """
    with open(os.path.join(directory, "state.json")) as fh:
        state = json.load(fh)
    if not state["was_active"]:
        run([ufw_binary, "--force", "disable"])
    for path in BACKED_UP:
        saved = os.path.join(directory, os.path.basename(path))
        if os.path.exists(saved):
            shutil.copy2(saved, path)
    if state["was_active"]:
        rc, out, err = run([ufw_binary, "reload"])
        if rc != 0:
            raise ApplyError("ufw reload after restoring the rules failed: %s" % (err or out).strip())


def apply_commands(module, ufw_binary, commands, directory):
    """Run the planned ufw commands; on the first failure restore the backup and raise."""
    done = []
    for argv in commands:
        rc, out, err = module.run_command([ufw_binary] + list(argv), environ_update={"LC_ALL": "C"})
        if rc != 0:
            restore(directory, ufw_binary, module.run_command)
            raise ApplyError("'ufw %s' failed (rc=%d): %s; the rules were restored as they were" % (
                " ".join(argv), rc, (err or out).strip()))
        done.append(argv)
    return done


def _subprocess_run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def arm_rollback(directory, seconds, ufw_binary):
    """Commit-confirmed: unless ``<directory>/armed`` is removed within ``seconds``, a
    detached process restores the backed-up rules. Re-arming moves the deadline."""
    armed = os.path.join(directory, "armed")
    with open(armed, "w") as fh:
        fh.write("%f\n" % (time.time() + seconds))
    pidfile = os.path.join(directory, "watcher.pid")
    if os.path.exists(pidfile):
        try:
            with open(pidfile) as fh:
                os.kill(int(fh.read().strip()), 0)
            return armed  # a watcher already runs for this group and reads the new deadline
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return armed
    # First child: new session, then fork again so the watcher is not a child of the module.
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        with open(pidfile, "w") as fh:
            fh.write(str(os.getpid()))
        _watch(directory, armed, ufw_binary)
    finally:
        os._exit(0)


def _watch(directory, armed, ufw_binary):
    while True:
        try:
            with open(armed) as fh:
                deadline = float(fh.read().strip())
        except (IOError, OSError, ValueError):
            return  # confirmed: the armed file is gone
        if time.time() >= deadline:
            break
        time.sleep(0.25)
    try:
        restore(directory, ufw_binary, _subprocess_run)
        outcome = "restored"
    except Exception as exc:  # the watcher has nobody to report to but this file
        outcome = "restore failed: %s" % exc
    with open(os.path.join(directory, "rolled-back"), "w") as fh:
        fh.write("%s at %s\n" % (outcome, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    try:
        os.remove(armed)
    except OSError:
        pass
