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

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.sipguard.firewall.plugins.module_utils.ssh_guard import read_ssh_ports
# The reading side (shared with ufw_info, which imports host_read alone); re-exported for callers of ufw_host.
from ansible_collections.sipguard.firewall.plugins.module_utils.host_read import (  # noqa: F401 pylint: disable=unused-import
    BACKUP_ROOT,
    LEGACY_FOR,
    LEGACY_WARNING,
    ROUTES_FOR,
    UFW_DIR,
    _read,
    _ufw_dir_id,
    decode_file,
    gather,
    needs_routes,
    past_rollbacks,
)

BACKED_UP = ("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/ufw/ufw.conf",
             # edit_ufw_files and docker edit these (ufw_files.RULE_FILES)
             "/etc/ufw/before.rules", "/etc/ufw/before6.rules", "/etc/ufw/after.rules", "/etc/ufw/after6.rules")
# A chain a change declares in after.rules (docker: DOCKER-USER) keeps what the change put there when
# the files are restored (a reload flushes only the chains a file declares): its rules from before the
# change are kept as docker-user<family>.rules and loaded back with iptables-restore -n.
CHAIN_BACKUP = {4: "docker-user4.rules", 6: "docker-user6.rules"}
USER_RULES = {4: "/etc/ufw/user.rules", 6: "/etc/ufw/user6.rules"}
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
# The lock every ufw command takes (ufw/util.py create_lock) for as long as it runs.
UFW_LOCK = "/run/ufw.lock"


class ApplyError(RuntimeError):
    pass


_ROLLBACK_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def check_rollback_id(value, option="rollback_id"):
    """A rollback group is a name, never a path: letters, digits, ``.``, ``_``, ``-``; no ``..``.

    The name becomes a directory under BACKUP_ROOT that a later run empties; a path here
    (``../../srv/data``, ``/srv/data``) would make that run empty someone else's directory as root.
    """
    if value is None:
        return value
    text = str(value)
    if not _ROLLBACK_ID.match(text) or ".." in text or text in (".",):
        raise ApplyError("%s: %r is not a rollback name: use 1-128 letters, digits, '.', '_' or '-' "
                         "(no '..', no '/'), e.g. close-2026-11-25" % (option, value))
    return text


def rollback_directory(group, root=None):
    """The backup directory of rollback group ``group``, after checking that it is a safe name
    and that the result is a direct child of ``root`` (default BACKUP_ROOT)."""
    root = BACKUP_ROOT if root is None else root
    check_rollback_id(group)
    directory = os.path.join(root, group)
    if os.path.dirname(os.path.normpath(directory)) != os.path.normpath(root):
        raise ApplyError("rollback_id: %r does not name a directory inside %s" % (group, root))
    return directory


# ufw runs every command under an fcntl lock on /run/ufw.lock (/usr/sbin/ufw, ufw.util.create_lock),
# except when TESTSTATE is set: then it locks /lib/ufw/ufw.lock instead. A change holds ufw's lock
# from reading the rules to verifying them, so the ufw commands it runs itself are started with
# TESTSTATE; any other ufw command waits for the change and runs after it.
UFW_CHILD_ENV = {"LC_ALL": "C", "TESTSTATE": "1"}
BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_HOOK = "/etc/ufw/before.init"
BOOT_HOOK_ORIG = BOOT_HOOK + ".sipguard-orig"
_HOOK_MARK = "# sipguard-rollback-groups:"


class UfwLock(object):
    """Hold ufw's own lock (the fcntl lock every ufw command takes), so that no ufw command runs
    while this change reads, writes and verifies the rules."""

    # ufw itself waits for its lock without end; a change waits this long (an admin's `ufw` left
    # running at a prompt, a slow `ufw reload` of a large rule set), then fails with nothing changed.
    def __init__(self, path=UFW_LOCK, timeout=300.0):
        self.path = path
        self.timeout = timeout
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a")
        deadline = time.time() + self.timeout
        while True:
            try:
                fcntl.lockf(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.time() >= deadline:
                    self.fh.close()
                    raise ApplyError("could not take ufw's lock %s within %ds (is another ufw command hanging?): %s"
                                     % (self.path, self.timeout, exc))
                time.sleep(0.05)

    def __exit__(self, *exc_info):
        self.fh.close()  # closing the file releases the lock
        return False


# ufw commands that only read: they take the lock too, but write nothing when they get it.
_UFW_READERS = (("status",), ("show",), ("version",), ("help",), ("--version",), ("--help",), ("app", "list"),
                ("app", "info"))


def ufw_command_writes(argv):
    """Whether ``argv`` (a process's command line) is a ufw command that writes rules or reloads them.

    /usr/sbin/ufw reads its rules files (UFWFrontend) *before* it takes its lock, so any ufw
    command that runs while a change holds the lock writes the rules it read before the change
    (``reload``, ``enable`` load them too). Only the commands in _UFW_READERS and ``--dry-run``
    write nothing. ``argv`` is ``[python3, (-Es,) /usr/sbin/ufw, ...]`` (the script's shebang) or
    ``[/usr/sbin/ufw, ...]``; None when it is not ufw at all.
    """
    script = 0
    if argv and os.path.basename(argv[0]).startswith("python"):
        script = next((i for i, arg in enumerate(argv) if i and not arg.startswith("-")), len(argv))
    if script >= len(argv) or os.path.basename(argv[script]) != "ufw":
        return None
    words = argv[script + 1:]
    if "--dry-run" in words:
        return False
    words = [w for w in words if not w.startswith("-") or w in ("--version", "--help")]
    return not any(tuple(words[:len(r)]) == r for r in _UFW_READERS)


def _proc_start(pid, proc="/proc"):
    """The start time of ``pid`` (clock ticks after boot, /proc/PID/stat field 22): with the pid it
    names one process, whose pid a later process cannot take over unnoticed. None when it has
    ended (a zombie has ended: it only waits for its parent to read its exit code)."""
    try:
        with open("%s/%d/stat" % (proc, pid)) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X", "x") else int(fields[19])
    except (IOError, OSError, ValueError, IndexError):
        return None


def other_ufw_processes(proc="/proc", ufw_dir=UFW_DIR):
    """ufw commands running now that write the rules of this UFW configuration: [{pid, start, argv}].

    A process belongs to this configuration when its ``/etc/ufw`` (seen through /proc/PID/root,
    in its own mount namespace) is the same directory as ours: a lab host's ``ip netns exec``
    gives every command a mount namespace of its own, all with the host's /etc/ufw.
    """
    try:
        here = os.stat(ufw_dir)
    except OSError:
        return []
    me = os.getpid()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open("%s/%d/cmdline" % (proc, pid), "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
            if not ufw_command_writes(argv):
                continue
            there = os.stat("%s/%d/root%s" % (proc, pid, ufw_dir))
        except (IOError, OSError):
            continue  # gone, or not ours to look at
        if (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
            continue
        found.append({"pid": pid, "start": _proc_start(pid, proc), "argv": argv})
    return sorted(found, key=lambda p: p["pid"])


def wait_for_processes(processes, timeout, proc="/proc", sleep=time.sleep, clock=time.time):
    """Wait until every process of ``processes`` (other_ufw_processes' records) has ended, at most
    ``timeout`` seconds; return the ones still running."""
    deadline = clock() + timeout
    while True:
        left = [p for p in processes if _proc_start(p["pid"], proc) == p["start"] and p["start"] is not None]
        if not left or clock() >= deadline:
            return left
        sleep(0.05)


def _write_private(path, data):
    """Write ``data`` (bytes) to a new file readable by root only (backups hold the whole rule set)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def backup(group, was_active, ufw_binary="ufw", chains=None):
    """Copy UFW's rule files into the rollback group (0700, files 0600); the first backup of a group wins.

    The close role calls ufw_port once per host with every port; a playbook may call it more than
    once in a run (several tasks, a retry). All calls of a run share one group, so a rollback
    restores the state from before the whole run, not from before the last call.
    """
    directory = rollback_directory(group)
    if os.path.exists(os.path.join(directory, "armed")):
        return directory  # an earlier call of this run, not yet confirmed
    shutil.rmtree(directory, ignore_errors=True)  # a finished group of the same name is stale
    if not os.path.isdir(BACKUP_ROOT):
        os.makedirs(BACKUP_ROOT, 0o700)
    os.mkdir(directory, 0o700)
    os.chmod(directory, 0o700)
    for path in BACKED_UP:
        if os.path.exists(path):
            with open(path, "rb") as fh:
                _write_private(os.path.join(directory, os.path.basename(path)), fh.read())
    for family, text in sorted((chains or {}).items()):
        _write_private(os.path.join(directory, CHAIN_BACKUP[family]), text.encode("utf-8"))
    state = {"was_active": was_active, "created": time.time(), "boot_id": (_read(BOOT_ID) or "").strip(),
             "ufw_dir": _ufw_dir_id(), "ufw_binary": ufw_binary, "id": group}
    _write_private(os.path.join(directory, "state.json"), json.dumps(state).encode("utf-8"))
    _write_private(os.path.join(directory, "boot_id"), ((_read(BOOT_ID) or "").strip() + "\n").encode("ascii"))
    return directory


def restore(directory, ufw_binary, run):
    """Put the backed-up files back and make the kernel run them again.

    ``run(argv)`` returns (rc, out, err); the caller holds ufw's lock, so ``run`` starts ufw with
    UFW_CHILD_ENV. A file is rewritten in place, so it keeps the mode and owner ufw gave it.
    """
    with open(os.path.join(directory, "state.json")) as fh:
        state = json.load(fh)
    if not state["was_active"]:
        rc, out, err = run([ufw_binary, "--force", "disable"])
        if rc != 0:
            raise ApplyError("'ufw --force disable' after restoring the rules failed: %s" % (err or out).strip())
    for path in BACKED_UP:
        saved = os.path.join(directory, os.path.basename(path))
        if os.path.exists(saved):
            with open(saved, "rb") as src:
                data = src.read()
            with open(path, "wb") as dst:
                dst.write(data)
    if state["was_active"]:
        rc, out, err = run([ufw_binary, "reload"])
        if rc != 0:
            raise ApplyError("'ufw reload' after restoring the rules failed: %s" % (err or out).strip())
    for family in sorted(CHAIN_BACKUP):
        saved = os.path.join(directory, CHAIN_BACKUP[family])
        if os.path.exists(saved):
            rc, out, err = run([RESTORE[family], "-n", saved])
            if rc != 0:
                raise ApplyError("'%s -n %s' after restoring the rules failed: %s"
                                 % (RESTORE[family], saved, (err or out).strip()))


def write_rule_files(files):
    """Replace UFW's before/after rules files (``{path: text}``) atomically, keeping mode and owner."""
    for path in sorted(files):
        st = os.stat(path)
        atomic_write(path, files[path], st.st_mode & 0o7777, (st.st_uid, st.st_gid))


def _subprocess_run(argv):
    env = dict(os.environ)
    env.update(UFW_CHILD_ENV)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


# --------------------------------------------------------------------------- the rollback

def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def rollback_script(directory, ufw_binary, was_active):
    """The restore that runs without this module: from the transient systemd timer (``now``) and
    from ufw's boot hook (``boot``, before ufw-init loads the rules, so it loads the restored ones).

    At a ``boot`` of the same kernel boot, a live watcher (its flock on watcher.lock) or a pending
    timer still guards the change: ufw was only restarted (``ufw enable``, ``ufw reload``), and
    nothing is done.
    """
    then = ('"$ufw" reload' if was_active else '"$ufw" --force disable')
    return "\n".join([
        "#!/bin/sh",
        "# sipguard.firewall ufw_port: restore UFW's files from before an unconfirmed change.",
        "dir=%s" % _quote(directory),
        "ufw=%s" % _quote(ufw_binary),
        'mode="${1:-now}"',
        '[ -f "$dir/armed" ] || exit 0',
        'if [ "$mode" = boot ] && [ "$(cat %s 2>/dev/null)" = "$(cat "$dir/boot_id" 2>/dev/null)" ]; then' % BOOT_ID,
        '    [ -f "$dir/timer" ] && exit 0',
        '    flock -n "$dir/watcher.lock" true 2>/dev/null || exit 0',
        "fi",
        "for f in %s; do" % " ".join(os.path.basename(p) for p in BACKED_UP),
        '    if [ -f "$dir/$f" ]; then cat "$dir/$f" > "%s/$f" || exit 1; fi' % UFW_DIR,
        "done",
        'rm -f "$dir/armed"',
        'outcome=restored',
        'by=timer; [ "$mode" = boot ] && by=boot',
        'if [ "$mode" = now ]; then',
        "    %s >/dev/null 2>&1 || outcome='restored the files; %s failed'" % (then, then.replace('"$ufw"', "ufw")),
        # DOCKER-USER as it was (docker: the restored after.rules no longer declares it, so no reload flushes it)
        '    if [ -f "$dir/%s" ]; then iptables-restore -n "$dir/%s" >/dev/null 2>&1 || outcome="$outcome; '
        'DOCKER-USER not restored"; fi' % (CHAIN_BACKUP[4], CHAIN_BACKUP[4]),
        '    if [ -f "$dir/%s" ]; then ip6tables-restore -n "$dir/%s" >/dev/null 2>&1 || outcome="$outcome; '
        'DOCKER-USER not restored"; fi' % (CHAIN_BACKUP[6], CHAIN_BACKUP[6]),
        "fi",
        'printf \'{"time": %s, "by": "%s", "outcome": "%s"}\\n\' "$(date +%s)" "$by" "$outcome" > "$dir/rolled-back"',
        'chmod 600 "$dir/rolled-back"',
        "",
    ])


def boot_hook(groups):
    """/etc/ufw/before.init while changes are unconfirmed: ufw-init runs it (``start``) before it
    loads the rules, at boot before the network comes up; it chains to the admin's own hook."""
    lines = ["#!/bin/sh",
             "# Installed by sipguard.firewall ufw_port while a change is unconfirmed; the original is",
             "# %s and comes back when the change is confirmed or rolled back." % BOOT_HOOK_ORIG,
             "%s %s" % (_HOOK_MARK, " ".join(groups)),
             'if [ "$1" = start ]; then']
    lines += ["    /bin/sh %s boot" % _quote(os.path.join(d, "rollback.sh")) for d in groups]
    lines += ["fi",
              'if [ -x %s ]; then exec %s "$@"; fi' % (_quote(BOOT_HOOK_ORIG), _quote(BOOT_HOOK_ORIG)),
              "exit 0", ""]
    return "\n".join(lines)


def _hook_groups():
    """Groups the installed boot hook guards; None when before.init is not ours."""
    for line in (_read(BOOT_HOOK) or "").splitlines():
        if line.startswith(_HOOK_MARK):
            return line[len(_HOOK_MARK):].split()
    return None


def install_boot_hook(directory):
    groups = _hook_groups()
    if groups is None:
        if os.path.exists(BOOT_HOOK) or os.path.islink(BOOT_HOOK):
            os.rename(BOOT_HOOK, BOOT_HOOK_ORIG)
        groups = []
    if directory not in groups:
        groups.append(directory)
    atomic_write(BOOT_HOOK, boot_hook(groups), 0o755, (0, 0))


def remove_boot_hook(directory):
    """Take ``directory`` (and every group no longer armed) out of the boot hook; the admin's
    before.init is back once no change is pending."""
    installed = _hook_groups()
    if installed is None:
        return
    groups = [g for g in installed if g != directory and os.path.exists(os.path.join(g, "armed"))]
    if groups == installed:
        return
    if groups:
        atomic_write(BOOT_HOOK, boot_hook(groups), 0o755, (0, 0))
    elif os.path.exists(BOOT_HOOK_ORIG) or os.path.islink(BOOT_HOOK_ORIG):
        os.rename(BOOT_HOOK_ORIG, BOOT_HOOK)
    else:
        os.remove(BOOT_HOOK)


def watcher_alive(directory):
    """Whether a watcher guards this group: it holds an flock on watcher.lock for as long as it
    runs (a lock dies with its process, unlike a pid file whose pid can be reused)."""
    path = os.path.join(directory, "watcher.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        return True
    finally:
        os.close(fd)  # also releases the lock when it was ours for a moment
    return False


def systemd_usable():
    """A transient timer restores only when it runs where this module runs: systemd is PID 1 and
    this process shares PID 1's network and mount namespaces (not in a container or netns lab)."""
    if not os.path.isdir("/run/systemd/system"):
        return False
    try:
        return all(os.readlink("/proc/self/ns/%s" % ns) == os.readlink("/proc/1/ns/%s" % ns) for ns in ("net", "mnt"))
    except OSError:
        return False


def timer_unit(directory):
    return "sipguard-rollback-%s" % os.path.basename(directory).replace("_", "-")


def systemd_run_argv(systemd_run, directory, seconds):
    """A transient timer outside the SSH session's scope, so ending the session does not cancel it."""
    return [systemd_run, "--unit", timer_unit(directory), "--on-active=%ds" % max(1, int(seconds)),
            "--timer-property=AccuracySec=1s", "--collect", "--quiet",
            "/bin/sh", os.path.join(directory, "rollback.sh"), "now"]


def _spawn_watcher(directory, armed, ufw_binary):
    """A detached process (own session, re-parented to init) that restores at the deadline."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        lock = os.open(os.path.join(directory, "watcher.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends: watcher_alive() sees it
        _watch(directory, armed, ufw_binary)
    finally:
        os._exit(0)


def _deadline(armed):
    try:
        with open(armed) as fh:
            return float(fh.read().strip())
    except (IOError, OSError, ValueError):
        return None


def _watch(directory, armed, ufw_binary):
    while True:
        deadline = _deadline(armed)
        if deadline is None:
            remove_boot_hook(directory)  # confirmed: the armed file is gone
            return
        if time.time() >= deadline:
            break
        time.sleep(0.25)
    while True:
        try:
            lock = UfwLock().__enter__()
            break
        except ApplyError:  # a ufw command (or a change) holds ufw's lock: wait for it, never give up
            time.sleep(1)
    with lock:
        if _deadline(armed) is None:  # confirmed while we waited for the lock
            remove_boot_hook(directory)
            return
        try:
            restore(directory, ufw_binary, _subprocess_run)
            outcome = "restored"
        except Exception as exc:  # pylint: disable=broad-except  # nobody to report to but the record
            outcome = "restore failed: %s" % exc
        record_rollback(directory, "watcher", outcome)
        try:
            os.remove(armed)
        except OSError:
            pass
        remove_boot_hook(directory)


def record_rollback(directory, by, outcome):
    _write_private(os.path.join(directory, "rolled-back"),
                   json.dumps({"time": time.time(), "by": by, "outcome": outcome}).encode("utf-8"))


def arm_rollback(directory, seconds, ufw_binary, run=None, was_active=True):
    """Commit-confirmed: unless ``<directory>/armed`` is removed within ``seconds``, the backed-up
    rules come back. Armed before the change is made; re-arming moves the deadline.

    Three things guard the change: a transient systemd timer where systemd runs this host (else a
    detached watcher), and ufw's boot hook for a reboot before either fired.
    """
    armed = os.path.join(directory, "armed")
    script = os.path.join(directory, "rollback.sh")
    _write_private(script, rollback_script(directory, ufw_binary, was_active).encode("utf-8"))
    os.chmod(script, 0o700)
    _write_private(armed, ("%f\n" % (time.time() + seconds)).encode("ascii"))
    install_boot_hook(directory)
    systemd_run = run is not None and systemd_usable() and shutil.which("systemd-run")
    if systemd_run:
        if os.path.exists(os.path.join(directory, "timer")):
            run(["systemctl", "stop", timer_unit(directory) + ".timer"])  # re-armed: the new deadline counts
        rc, out, err = run(systemd_run_argv(systemd_run, directory, seconds))
        if rc == 0:
            _write_private(os.path.join(directory, "timer"), timer_unit(directory).encode("ascii"))
            return armed
        # no usable systemd after all (no bus in a container): the watcher does it
        del out, err
    if not watcher_alive(directory):
        _spawn_watcher(directory, armed, ufw_binary)
    return armed


def disarm_rollback(directory, run=None):
    """The change was undone here and now: nothing is left to roll back."""
    try:
        os.remove(os.path.join(directory, "armed"))
    except OSError:
        pass
    if run is not None and os.path.exists(os.path.join(directory, "timer")):
        run(["systemctl", "stop", timer_unit(directory) + ".timer"])
    remove_boot_hook(directory)


def apply_commands(module, ufw_binary, commands):
    """Run the planned ufw commands in order; raise ApplyError at the first that fails."""
    done = []
    for argv in commands:
        rc, out, err = module.run_command([ufw_binary] + list(argv), environ_update=UFW_CHILD_ENV)
        if rc != 0:
            raise ApplyError("'ufw %s' failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()))
        done.append(argv)
    return done


def apply_files(module, ufw_binary, files, reload_families, enable):
    """Make the change the way ufw makes a rule change, in one step per family (the caller holds ufw's lock).

    ``files`` is ``{family: new user rules text}``. Each file is replaced atomically; then, when
    UFW is active, each family in ``reload_families`` loads its file with ``iptables-restore -n``
    -- what ufw's ``_reload_user_rules`` runs after every rule change, but as one transaction (the
    user chains are flushed and refilled atomically). An inactive UFW is then enabled with
    ``ufw --force enable``. Raises ApplyError (or OSError) on the first failure.
    """
    for family in sorted(files):
        st = os.stat(USER_RULES[family])  # the new file keeps the mode and owner ufw gave it
        atomic_write(USER_RULES[family], files[family], st.st_mode & 0o7777, (st.st_uid, st.st_gid))
    for family in sorted(reload_families):
        binary = module.get_bin_path(RESTORE[family], opt_dirs=["/usr/sbin", "/sbin"])
        if binary is None:
            raise ApplyError("%s not found" % RESTORE[family])
        rc, out, err = module.run_command([binary, "-n"], data=files[family], binary_data=True,
                                          environ_update={"LC_ALL": "C"})
        if rc != 0:
            raise ApplyError("'%s -n %s' failed (rc=%d): %s"
                             % (RESTORE[family], USER_RULES[family], rc, (err or out).strip()))
    if enable:
        rc, out, err = module.run_command([ufw_binary, "--force", "enable"], environ_update=UFW_CHILD_ENV)
        if rc != 0:
            raise ApplyError("'ufw --force enable' failed (rc=%d): %s" % (rc, (err or out).strip()))


class HostRunner(object):
    """The host edge of one change (ufw_change.run_change): every step that reads or changes the
    host, through the module's run_command. Tests give run_change another runner."""

    def __init__(self, module):
        self.module = module
        self.ufw = module.get_bin_path("ufw")

    def _run(self, argv):
        return self.module.run_command(argv, environ_update=UFW_CHILD_ENV)

    def lock(self):
        return UfwLock()

    def other_ufw_processes(self):
        return other_ufw_processes()

    def wait_for(self, processes, timeout):
        return wait_for_processes(processes, timeout)

    def gather(self, commands=None, previous=None):
        raw = gather(self.module, commands=commands, previous=previous)
        self.ufw = raw["ufw_binary"]
        return raw

    def ssh_ports(self, read_config=True, listeners=None, named=()):
        """The SshGuard (ports and where each was found): ``listeners`` is the ``ss`` output already read."""
        return read_ssh_ports(self.module, listeners, named, read_config=read_config)

    def rollbacks(self):
        return past_rollbacks()

    def tidy(self):
        remove_boot_hook(None)

    def backup(self, group, was_active, chains=None):
        return backup(group, was_active, self.ufw, chains)

    def write_rule_files(self, files):
        write_rule_files(files)

    def reload(self):
        """``ufw reload`` (under the change's lock: started with UFW_CHILD_ENV)."""
        rc, out, err = self._run([self.ufw, "reload"])
        if rc != 0:
            raise ApplyError("'ufw reload' after editing UFW's rules files failed (rc=%d): %s"
                             % (rc, (err or out).strip()))

    def arm(self, directory, seconds, was_active):
        return arm_rollback(directory, seconds, self.ufw, self._run, was_active)

    def apply_files(self, files, reload_families, enable):
        apply_files(self.module, self.ufw, files, reload_families, enable)

    def apply_commands(self, commands):
        apply_commands(self.module, self.ufw, commands)

    def restore(self, directory):
        restore(directory, self.ufw, self._run)

    def disarm(self, directory):
        disarm_rollback(directory, self._run)
