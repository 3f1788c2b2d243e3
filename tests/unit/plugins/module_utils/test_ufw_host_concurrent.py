"""ufw_host's view of other ufw commands: which ones can undo a change, and waiting for them.

/usr/sbin/ufw reads its rules files before it takes its lock (ufw_change._concurrent), so a change
waits for every ufw command of its UFW configuration that writes. The processes here are real
(a script named ``ufw`` started with python3, as the shebang of /usr/sbin/ufw starts it).
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_host


@pytest.mark.parametrize("argv, writes", [
    (["/usr/bin/python3", "/usr/sbin/ufw", "allow", "7000/tcp"], True),
    (["/usr/bin/python3", "/usr/sbin/ufw", "--force", "enable"], True),
    (["/usr/bin/python3", "/usr/sbin/ufw", "reload"], True),
    (["/usr/bin/python3", "/usr/sbin/ufw", "delete", "allow", "7000/tcp"], True),
    (["/usr/bin/python3", "/usr/sbin/ufw", "app", "update", "OpenSSH"], True),
    (["/usr/sbin/ufw", "deny", "5060/udp"], True),
    (["/usr/bin/python3", "-Es", "/usr/sbin/ufw", "limit", "22/tcp"], True),
    (["sudo", "ufw", "allow", "7000/tcp"], None),  # sudo's child is the ufw command
    (["/usr/bin/python3", "/usr/sbin/ufw", "status", "verbose"], False),
    (["/usr/bin/python3", "/usr/sbin/ufw", "status", "numbered"], False),
    (["/usr/bin/python3", "/usr/sbin/ufw", "show", "added"], False),
    (["/usr/bin/python3", "/usr/sbin/ufw", "app", "list"], False),
    (["/usr/bin/python3", "/usr/sbin/ufw", "--dry-run", "allow", "7000/tcp"], False),
    (["/usr/bin/python3", "/usr/sbin/ufw", "version"], False),
    (["/usr/bin/python3", "/tmp/AnsiballZ_ufw_port.py"], None),
    (["/bin/sh", "/lib/ufw/ufw-init", "start"], None),
    (["vim", "ufw"], None),
    ([], None),
])
def test_which_ufw_commands_write(argv, writes):
    assert ufw_host.ufw_command_writes(argv) is writes


@pytest.fixture
def fake_ufw(tmp_path):
    """A ``ufw`` that sleeps until killed, and an /etc/ufw for it and for us."""
    script = tmp_path / "bin" / "ufw"
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(60)\n")
    etc = tmp_path / "etc" / "ufw"
    etc.mkdir(parents=True)
    procs = []

    def start(*args):
        proc = subprocess.Popen([sys.executable, str(script)] + list(args))
        procs.append(proc)
        time.sleep(0.2)  # until its cmdline is the script's
        return proc

    yield start, str(etc)
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_running_ufw_command_of_this_configuration_is_found(fake_ufw):
    start, etc = fake_ufw
    writer = start("allow", "7000/tcp")
    start("status")
    found = ufw_host.other_ufw_processes(ufw_dir=etc)
    assert [(p["pid"], p["argv"][2:]) for p in found] == [(writer.pid, ["allow", "7000/tcp"])]
    assert found[0]["start"] == ufw_host._proc_start(writer.pid)


def test_a_ufw_command_of_another_configuration_is_not(fake_ufw, tmp_path):
    """Another host's /etc/ufw (a lab host of its own, a container): seen through /proc/PID/root."""
    start, etc = fake_ufw
    writer = start("allow", "7000/tcp")
    proc = tmp_path / "proc"
    (proc / str(writer.pid)).mkdir(parents=True)
    for name in ("cmdline", "stat"):
        shutil.copy("/proc/%d/%s" % (writer.pid, name), str(proc / str(writer.pid) / name))
    other_root = tmp_path / "other-root"
    (other_root / etc.lstrip("/")).mkdir(parents=True)
    os.symlink(str(other_root), str(proc / str(writer.pid) / "root"))
    assert ufw_host.other_ufw_processes(proc=str(proc), ufw_dir=etc) == []
    os.remove(str(proc / str(writer.pid) / "root"))
    os.symlink("/", str(proc / str(writer.pid) / "root"))
    assert [p["pid"] for p in ufw_host.other_ufw_processes(proc=str(proc), ufw_dir=etc)] == [writer.pid]


def test_waiting_ends_when_the_command_ends_and_a_zombie_has_ended(fake_ufw):
    start, etc = fake_ufw
    writer = start("allow", "7000/tcp")
    found = ufw_host.other_ufw_processes(ufw_dir=etc)
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds
        if clock[0] >= 1.0 and writer.returncode is None:
            os.kill(writer.pid, 9)  # ended, not reaped: a zombie until the test waits for it
            time.sleep(0.2)

    assert ufw_host.wait_for_processes(found, 30, sleep=sleep, clock=lambda: clock[0]) == []
    assert 1.0 <= clock[0] < 2.0


def test_waiting_gives_up_at_the_timeout_with_the_commands_still_running(fake_ufw):
    start, etc = fake_ufw
    start("allow", "7000/tcp")
    found = ufw_host.other_ufw_processes(ufw_dir=etc)
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds

    assert ufw_host.wait_for_processes(found, 30, sleep=sleep, clock=lambda: clock[0]) == found
    assert 30.0 <= clock[0] < 30.1


def test_a_reused_pid_is_not_the_command_waited_for(fake_ufw):
    start, _etc = fake_ufw
    writer = start("allow", "7000/tcp")
    found = [{"pid": writer.pid, "start": ufw_host._proc_start(writer.pid) - 1, "argv": []}]
    assert ufw_host.wait_for_processes(found, 30, sleep=lambda s: None) == []
