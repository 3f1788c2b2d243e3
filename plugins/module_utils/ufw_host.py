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
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import APPLICATIONS_DIR, COMMANDS, FILES

BACKUP_ROOT = "/var/lib/sipguard/rollback"
BACKED_UP = ("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/ufw/ufw.conf")
# The route table of a family is read only when a backend of that family has a DNAT
# (iptables' "-j DNAT", nft's JSON "dnat" statement).
ROUTES_FOR = {"ip_route": ("iptables_save", "iptables_legacy_save", "nft_ruleset"),
              "ip6_route": ("ip6tables_save", "ip6tables_legacy_save", "nft_ruleset")}
# iptables-nft's save warns on stderr when legacy tables of its family exist in the namespace
# ("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them", and
# "ip6tables-legacy tables present" from ip6tables-save); without that warning there is nothing
# for the legacy save to read.
LEGACY_FOR = {"iptables_legacy_save": "iptables_save", "ip6tables_legacy_save": "ip6tables_save"}
LEGACY_WARNING = "legacy tables present"
USER_RULES = {4: "/etc/ufw/user.rules", 6: "/etc/ufw/user6.rules"}
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
# The lock every ufw command takes (ufw/util.py create_lock) for as long as it runs.
UFW_LOCK = "/run/ufw.lock"


_IN_INTERFACE = re.compile(r"(?:^|\s)(?:-i|--in-interface)\s+(?!lo\+?(?:\s|$))\S", re.M)


def needs_routes(netfilter_text):
    """Routes matter for a DNAT to another address (Docker-style forwarding) and for a rule that
    admits only on an interface (the one carrying the default route admits the Internet).
    None (not read yet) reads them."""
    if netfilter_text is None:
        return True
    # iptables-save writes -j DNAT and -i; nft -j writes "dnat" and "iifname".
    return "DNAT" in netfilter_text.upper() or bool(_IN_INTERFACE.search(netfilter_text)) \
        or '"iifname"' in netfilter_text


def _read(path, caveats=None):
    """The text of ``path``, or None when it cannot be read.

    A file that is not UTF-8 (a Latin-1 comment in before.rules) is read with U+FFFD in place of
    the bad bytes, and ``caveats`` says so: iptables-restore reads bytes, so the rules still count.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError):
        return None
    return decode_file(path, data, caveats)


def decode_file(path, data, caveats=None):
    """``data`` (the bytes of ``path``) as text; bytes that are not UTF-8 are replaced, with a caveat."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        if caveats is not None:
            caveats.append("%s line %d is not UTF-8 (byte 0x%02x): read with the bad bytes replaced"
                           % (path, line, data[exc.start]))
        return data.decode("utf-8", "replace")


def gather(module, commands=None, previous=None):
    """Everything the UFW model needs, read in one module run.

    With ``commands`` (keys of COMMANDS) only those are run again and the other outputs come
    from ``previous``: after a firewall change only netfilter and the files differ.
    """
    raw = {"ufw_binary": module.get_bin_path("ufw"), "commands": {}, "files": {}, "applications": {}, "caveats": []}
    if previous is not None:
        raw["commands"] = dict(previous["commands"])
    for key, argv in COMMANDS.items():
        if commands is not None and key not in commands:
            continue
        if key in ROUTES_FOR and not any(needs_routes((raw["commands"].get(source) or {}).get("out"))
                                         for source in ROUTES_FOR[key]):
            raw["commands"][key] = {"rc": 0, "out": "", "err": "not read: no DNAT or interface match in netfilter"}
            continue
        if key in LEGACY_FOR:
            save = raw["commands"].get(LEGACY_FOR[key]) or {}
            if save.get("rc") == 0 and "(nf_tables)" in (save.get("out") or "").split("\n", 1)[0] \
                    and LEGACY_WARNING not in (save.get("err") or ""):
                raw["commands"][key] = {"rc": 0, "out": "", "err": "not read: %s reports no iptables-legacy tables"
                                        % COMMANDS[LEGACY_FOR[key]][0]}
                continue
        binary = module.get_bin_path(argv[0])
        if binary is None:
            raw["commands"][key] = {"rc": None, "out": "", "err": "%s not found" % argv[0]}
            continue
        rc, out, err = module.run_command([binary] + argv[1:], environ_update={"LC_ALL": "C"})
        raw["commands"][key] = {"rc": rc, "out": out, "err": err}
    for key, path in FILES.items():
        raw["files"][key] = _read(path, raw["caveats"])
    if os.path.isdir(APPLICATIONS_DIR):
        for name in sorted(os.listdir(APPLICATIONS_DIR)):
            text = _read(os.path.join(APPLICATIONS_DIR, name), raw["caveats"])
            if text is not None:
                raw["applications"][name] = text
    return raw


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


def rollback_directory(group, root=BACKUP_ROOT):
    """The backup directory of rollback group ``group``, after checking that it is a safe name
    and that the result is a direct child of ``root``."""
    check_rollback_id(group)
    directory = os.path.join(root, group)
    if os.path.dirname(os.path.normpath(directory)) != os.path.normpath(root):
        raise ApplyError("rollback_id: %r does not name a directory inside %s" % (group, root))
    return directory


def backup(group, was_active):
    """Copy UFW's rule files into the rollback group; the first backup of a group wins.

    One ``close`` run may call ufw_port once per port; all of them share one group, so a
    rollback restores the state from before the whole run, not from before the last port.
    """
    directory = rollback_directory(group)
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


class UfwLock(object):
    """Hold ufw's own lock, so that no ufw command runs while the files and chains change."""

    def __init__(self, path=UFW_LOCK, timeout=60.0):
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


def apply_files(module, ufw_binary, files, reload_families, enable, directory):
    """Make the change the way ufw makes a rule change, in one step per family.

    ``files`` is ``{family: new user rules text}``. Under ufw's lock, each file is replaced
    atomically; then, when UFW is active, each family in ``reload_families`` loads its file
    with ``iptables-restore -n`` -- what ufw's ``_reload_user_rules`` runs after every rule
    change, but as one transaction (the user chains are flushed and refilled atomically).
    An inactive UFW is then enabled with ``ufw --force enable``. On any failure the backup
    in ``directory`` is restored and ApplyError is raised.
    """
    try:
        with UfwLock():
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
            rc, out, err = module.run_command([ufw_binary, "--force", "enable"], environ_update={"LC_ALL": "C"})
            if rc != 0:
                raise ApplyError("'ufw --force enable' failed (rc=%d): %s" % (rc, (err or out).strip()))
    except (ApplyError, IOError, OSError) as exc:
        restore(directory, ufw_binary, module.run_command)
        raise ApplyError("%s; the rules were restored as they were" % exc)
    return ["write %s" % USER_RULES[f] for f in sorted(files)] + \
        ["%s -n %s" % (RESTORE[f], USER_RULES[f]) for f in sorted(reload_families)] + \
        (["ufw --force enable"] if enable else [])


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
