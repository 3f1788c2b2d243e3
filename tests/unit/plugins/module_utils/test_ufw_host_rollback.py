"""The rollback's host side (ufw_host): backup modes, the flock that says a watcher lives, the boot
hook that keeps the admin's before.init, and the restore script run by the timer and at boot.

The script runs for real with /bin/sh, on a copy of /etc/ufw under tmp_path.
"""

import fcntl
import json
import os
import stat
import subprocess
import time

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import host_read, ufw_host


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    etc = tmp_path / "etc-ufw"
    etc.mkdir()
    for name in ("user.rules", "user6.rules", "ufw.conf"):
        (etc / name).write_text("old %s\n" % name)
    (etc / "before.init").write_text("#!/bin/sh\necho admin-hook \"$1\" >> %s\n" % (tmp_path / "admin.log"))
    os.chmod(str(etc / "before.init"), 0o750)
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    root = tmp_path / "rollback"
    monkeypatch.setattr(ufw_host, "BACKUP_ROOT", str(root))
    monkeypatch.setattr(ufw_host, "BACKED_UP", tuple(str(etc / n) for n in ("user.rules", "user6.rules", "ufw.conf")))
    monkeypatch.setattr(ufw_host, "UFW_DIR", str(etc))
    # the reading side (past_rollbacks, the UFW configuration's id) lives in host_read
    monkeypatch.setattr(host_read, "BACKUP_ROOT", str(root))
    monkeypatch.setattr(host_read, "UFW_DIR", str(etc))
    monkeypatch.setattr(ufw_host, "BOOT_ID", str(boot_id))
    monkeypatch.setattr(ufw_host, "BOOT_HOOK", str(etc / "before.init"))
    monkeypatch.setattr(ufw_host, "BOOT_HOOK_ORIG", str(etc / "before.init.sipguard-orig"))
    monkeypatch.setattr(ufw_host, "atomic_write", _write)
    return tmp_path


def _write(path, text, mode, _owner):
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _change(etc):
    for name in ("user.rules", "user6.rules", "ufw.conf"):
        (etc / name).write_text("new %s\n" % name)


def _armed_group(fake_host, was_active=True, ufw="/bin/true"):
    directory = ufw_host.backup("g1", was_active, ufw)
    script = os.path.join(directory, "rollback.sh")
    with open(script, "w") as fh:
        fh.write(ufw_host.rollback_script(directory, ufw, was_active))
    with open(os.path.join(directory, "armed"), "w") as fh:
        fh.write("1\n")
    ufw_host.install_boot_hook(directory)
    _change(fake_host / "etc-ufw")
    return directory


def _wait_for_holder(directory):
    deadline = time.time() + 30  # flock(1) may start slowly on a loaded box
    while not ufw_host.watcher_alive(directory) and time.time() < deadline:
        time.sleep(0.05)


def test_backups_are_root_only(fake_host):
    directory = ufw_host.backup("g1", True)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in os.listdir(directory):
        assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600, name
    with open(os.path.join(directory, "state.json")) as fh:
        state = json.load(fh)
    assert state["boot_id"] == "boot-1" and state["was_active"] is True


@pytest.mark.parametrize("group", ["../x", "/srv/data", "..", "", "a/b"])
def test_a_group_is_never_a_path(fake_host, group):
    with pytest.raises(ufw_host.ApplyError, match="rollback_id"):
        ufw_host.backup(group, True)
    assert not os.path.exists(os.path.join(str(fake_host), "x"))


def test_watcher_liveness_is_its_flock_not_a_pid(fake_host):
    directory = ufw_host.backup("g1", True)
    # a stale pid file of a reused pid (this very process) does not count
    with open(os.path.join(directory, "watcher.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    assert ufw_host.watcher_alive(directory) is False
    holder = subprocess.Popen(["flock", "-o", os.path.join(directory, "watcher.lock"), "sleep", "30"])
    try:
        _wait_for_holder(directory)
        assert ufw_host.watcher_alive(directory) is True
    finally:
        holder.kill()
        holder.wait()
    assert ufw_host.watcher_alive(directory) is False


def test_the_boot_hook_keeps_and_chains_to_the_admins_hook(fake_host):
    etc = fake_host / "etc-ufw"
    directory = _armed_group(fake_host)
    hook = (etc / "before.init").read_text()
    assert "sipguard" in hook and (etc / "before.init.sipguard-orig").exists()
    second = ufw_host.backup("g2", True)
    with open(os.path.join(second, "armed"), "w") as fh:
        fh.write("1\n")
    ufw_host.install_boot_hook(second)
    assert ufw_host._hook_groups() == [directory, second]
    # confirmed: the hook forgets the group, and the admin's file is back once none is pending
    os.remove(os.path.join(directory, "armed"))
    ufw_host.remove_boot_hook(directory)
    assert ufw_host._hook_groups() == [second]
    ufw_host.disarm_rollback(second)
    assert "admin-hook" in (etc / "before.init").read_text()
    assert not (etc / "before.init.sipguard-orig").exists()


def test_without_an_admin_hook_the_hook_is_removed_again(fake_host):
    etc = fake_host / "etc-ufw"
    os.remove(str(etc / "before.init"))
    directory = _armed_group(fake_host)
    ufw_host.disarm_rollback(directory)
    assert not (etc / "before.init").exists()


def _start(fake_host):
    """What ufw-init does at start: ``before.init start`` before it loads the rules."""
    return subprocess.run([str(fake_host / "etc-ufw" / "before.init"), "start"], check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_at_boot_an_unconfirmed_change_is_rolled_back_and_the_admin_hook_still_runs(fake_host):
    directory = _armed_group(fake_host)
    (fake_host / "boot_id").write_text("boot-2\n")  # rebooted
    assert _start(fake_host).returncode == 0
    etc = fake_host / "etc-ufw"
    assert (etc / "user.rules").read_text() == "old user.rules\n"
    assert (etc / "ufw.conf").read_text() == "old ufw.conf\n"
    assert not os.path.exists(os.path.join(directory, "armed"))
    assert (fake_host / "admin.log").read_text() == "admin-hook start\n"
    rollbacks = ufw_host.past_rollbacks(ufw_host.BACKUP_ROOT)
    assert [(r["id"], r["by"], r["outcome"]) for r in rollbacks] == [("g1", "boot", "restored")]
    # the next ufw_port run gives the admin's hook back
    ufw_host.remove_boot_hook(None)
    assert "admin-hook" in (fake_host / "etc-ufw" / "before.init").read_text()


def test_a_restart_while_the_watcher_lives_keeps_the_change(fake_host):
    directory = _armed_group(fake_host)
    holder = subprocess.Popen(["flock", "-o", os.path.join(directory, "watcher.lock"), "sleep", "30"])
    try:
        _wait_for_holder(directory)
        assert _start(fake_host).returncode == 0  # e.g. the `ufw --force enable` of the change itself
        assert (fake_host / "etc-ufw" / "user.rules").read_text() == "new user.rules\n"
        assert os.path.exists(os.path.join(directory, "armed"))
    finally:
        holder.kill()
        holder.wait()
    # the watcher died with the machine, the kernel did not reboot (the lab): ufw's start restores
    assert _start(fake_host).returncode == 0
    assert (fake_host / "etc-ufw" / "user.rules").read_text() == "old user.rules\n"


def test_a_confirmed_change_is_kept_at_boot(fake_host):
    directory = _armed_group(fake_host)
    os.remove(os.path.join(directory, "armed"))
    (fake_host / "boot_id").write_text("boot-2\n")
    assert _start(fake_host).returncode == 0
    assert (fake_host / "etc-ufw" / "user.rules").read_text() == "new user.rules\n"
    assert ufw_host.past_rollbacks(ufw_host.BACKUP_ROOT) == []


@pytest.mark.parametrize("ufw, outcome", [("/bin/true", "restored"),
                                          ("/bin/false", "restored the files; ufw reload failed")])
def test_the_timer_restores_and_reloads(fake_host, ufw, outcome):
    directory = _armed_group(fake_host, ufw=ufw)
    proc = subprocess.run(["/bin/sh", os.path.join(directory, "rollback.sh"), "now"], check=False)
    assert proc.returncode == 0
    assert (fake_host / "etc-ufw" / "user.rules").read_text() == "old user.rules\n"
    assert [(r["by"], r["outcome"]) for r in ufw_host.past_rollbacks(ufw_host.BACKUP_ROOT)] == [("timer", outcome)]


def test_the_systemd_timer_runs_outside_the_session_in_this_hosts_context():
    argv = ufw_host.systemd_run_argv("/usr/bin/systemd-run", "/var/lib/sipguard/rollback/close_1", 60)
    assert argv == ["/usr/bin/systemd-run", "--unit", "sipguard-rollback-close-1", "--on-active=60s",
                    "--timer-property=AccuracySec=1s", "--collect", "--quiet",
                    "/bin/sh", "/var/lib/sipguard/rollback/close_1/rollback.sh", "now"]


def test_no_systemd_timer_from_another_network_namespace(monkeypatch):
    monkeypatch.setattr(ufw_host.os.path, "isdir", lambda path: True)
    links = {"/proc/self/ns/net": "net:[2]", "/proc/1/ns/net": "net:[1]",
             "/proc/self/ns/mnt": "mnt:[1]", "/proc/1/ns/mnt": "mnt:[1]"}
    monkeypatch.setattr(ufw_host.os, "readlink", links.__getitem__)
    assert ufw_host.systemd_usable() is False
    links["/proc/self/ns/net"] = "net:[1]"
    assert ufw_host.systemd_usable() is True


def test_rollbacks_of_another_ufw_configuration_are_not_reported(fake_host):
    directory = ufw_host.backup("g1", True)
    ufw_host.record_rollback(directory, "watcher", "restored")
    assert [r["id"] for r in ufw_host.past_rollbacks(ufw_host.BACKUP_ROOT)] == ["g1"]
    with open(os.path.join(directory, "state.json")) as fh:
        state = json.load(fh)
    state["ufw_dir"] = "0:0"
    with open(os.path.join(directory, "state.json"), "w") as fh:
        json.dump(state, fh)
    assert ufw_host.past_rollbacks(ufw_host.BACKUP_ROOT) == []


def test_the_held_ufw_lock_is_ufws_own(tmp_path):
    # ufw.util.create_lock takes an fcntl (lockf) lock: a second holder must wait for ours
    path = str(tmp_path / "ufw.lock")
    with ufw_host.UfwLock(path):
        code = "import fcntl,sys; f=open(sys.argv[1],'w')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\n" \
               "except OSError:\n sys.exit(3)\n"
        assert subprocess.call(["python3", "-c", code, path]) == 3
    assert subprocess.call(["python3", "-c", code, path]) == 0
    assert fcntl is not None


class _Module(object):
    def __init__(self, rc=0):
        self.rc = rc
        self.calls = []

    def run_command(self, argv, environ_update=None, **_kw):
        self.calls.append((argv, environ_update))
        return self.rc, "", "ERROR: Could not find a profile matching 'x'"


def test_ufw_commands_of_a_change_do_not_wait_for_the_lock_the_change_holds():
    # /usr/sbin/ufw locks /lib/ufw/ufw.lock instead of /run/ufw.lock when TESTSTATE is set
    module = _Module()
    ufw_host.apply_commands(module, "/usr/sbin/ufw", [["--force", "delete", "2"], ["prepend", "deny", "5060"]])
    assert [c[0] for c in module.calls] == [["/usr/sbin/ufw", "--force", "delete", "2"],
                                            ["/usr/sbin/ufw", "prepend", "deny", "5060"]]
    assert all(env == {"LC_ALL": "C", "TESTSTATE": "1"} for _argv, env in module.calls)
    with open("/usr/sbin/ufw") if os.path.exists("/usr/sbin/ufw") else open(os.devnull) as fh:
        source = fh.read()
    if source:
        assert "'TESTSTATE' in os.environ" in source and "lockfile = '/run/ufw.lock'" in source


def test_a_failing_ufw_command_stops_the_change_and_names_it():
    module = _Module(rc=1)
    with pytest.raises(ufw_host.ApplyError, match=r"'ufw allow x' failed \(rc=1\): ERROR: Could not find a profile"):
        ufw_host.apply_commands(module, "/usr/sbin/ufw", [["allow", "x"], ["allow", "y"]])
    assert len(module.calls) == 1
