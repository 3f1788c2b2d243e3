"""ufw_port's transaction and commit-confirmed rollback on the close lab (tests/lab/scenarios/close.yml).

(d) every SSH session to the host is killed after the change: the old rules are back within
rollback_after + 10 s; (e) the host "reboots" before the deadline (its processes die, netfilter is
emptied, ufw's boot path runs): the old rules are back; (f) a ufw command run between planning and
applying is not lost: ufw reads its rules before it takes its lock, so the change waits for it and
applies itself again. Each test has its own host.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import HERE, adhoc, host_argv, lab_up, sglab_module

PIDFILE = "/run/sipguard-lab-%s-sshd.pid"  # sglab's sshd PidFile


@pytest.fixture(scope="module")
def lab():
    return lab_up("close.yml")


def nsexec(lab, host, argv, check=True):
    proc = subprocess.run(host_argv(lab, host, argv), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc


def snapshot(lab, host):
    """UFW's files and the live user chains: what a rollback must bring back."""
    files = dict((name, nsexec(lab, host, ["cat", "/etc/ufw/" + name]).stdout)
                 for name in ("user.rules", "user6.rules", "ufw.conf"))
    chains = dict((cmd, [ln for ln in nsexec(lab, host, [cmd]).stdout.splitlines() if "user-input" in ln])
                  for cmd in ("iptables-save", "ip6tables-save"))
    return files, chains


def close(lab, host, **args):
    args = dict({"ports": ["5060/udp"]}, **args)
    status, result = adhoc(lab["inventory"], host, "sipguard.firewall.ufw_port", args)[host]
    assert status == "CHANGED", result
    return result


def ns_pids(lab, host):
    out = subprocess.run(["ip", "netns", "pids", lab["hosts"][host]["netns"]], text=True, stdout=subprocess.PIPE,
                         check=False).stdout
    return [int(p) for p in out.split()]


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def nspid(pid):
    """``pid``'s number in its own (innermost) PID namespace."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            return int([ln.split()[-1] for ln in fh if ln.startswith("NSpid:")][0])
    except (OSError, IndexError, ValueError):
        return None


def kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_ssh(lab, host):
    """Every SSH session to the host and Ansible's connection to it (its ControlPersist master),
    but not the listening sshd: new connections must still be possible."""
    # The pid file is in the host's own /run: read it as the host sees it (a pid of the host's PID namespace).
    listener_nspid = int(nsexec(lab, host, ["cat", PIDFILE % lab["hosts"][host]["netns"]]).stdout.strip())
    listener = [p for p in ns_pids(lab, host) if nspid(p) == listener_nspid][0]
    sessions = [p for p in ns_pids(lab, host) if p != listener and cmdline(p).startswith("sshd")]
    # Ansible's ControlPersist master renames itself ("ssh: .../cp/... [mux]"): find it by its socket.
    conns = subprocess.run(["ss", "-H", "-t", "-n", "-p", "dst", lab["hosts"][host]["ipv4"]], text=True,
                           stdout=subprocess.PIPE, check=False).stdout
    masters = sorted({int(part.split("pid=")[1].split(",")[0]) for part in conns.split() if "pid=" in part})
    kill(sessions + masters)
    return sessions, masters


def holders(lab, host, path):
    """Processes of the host holding ``path`` open (the watcher holds its flock file)."""
    found = []
    for pid in ns_pids(lab, host):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                    found.append(pid)
            except OSError:
                pass
    return found


def rollbacks(lab, host):
    status, info = adhoc(lab["inventory"], host, "sipguard.firewall.ufw_info")[host]
    assert status == "SUCCESS", info
    return info["rollbacks"]


def test_d_killing_every_ssh_session_does_not_stop_the_rollback(lab):
    host = "c-cut"
    before = snapshot(lab, host)
    # an operator's own session, open while the change is made
    operator = subprocess.Popen(["ssh", "-i", lab["key"], "-o", "StrictHostKeyChecking=no", "-o",
                                 "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                                 "root@" + lab["hosts"][host]["ipv4"], "sleep", "300"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rollback_after = 15
    group = "test-cut-%d" % time.time()
    result = close(lab, host, rollback_after=rollback_after, rollback_id=group)
    armed_at = time.time()
    assert snapshot(lab, host) != before
    directory = os.path.dirname(result["rollback"]["armed"])
    watchers = holders(lab, host, os.path.join(directory, "watcher.lock"))
    assert len(watchers) == 1, "one detached watcher guards the change"
    sessions, masters = kill_ssh(lab, host)
    operator.wait(timeout=10)
    assert sessions and masters, (sessions, masters)
    while snapshot(lab, host) != before:
        took = time.time() - armed_at
        assert took <= rollback_after + 10, "no rollback within rollback_after + 10 s (%.1f s)" % took
        time.sleep(0.5)
    took = time.time() - armed_at
    print("rollback after the sessions were killed: %.1f s (rollback_after %d)" % (took, rollback_after))
    assert took >= rollback_after - 1
    found = [r for r in rollbacks(lab, host) if r["id"] == group]
    assert [(r["by"], r["outcome"]) for r in found] == [("watcher", "restored")], found
    assert abs(found[0]["time"] - (armed_at + rollback_after)) < 5
    assert nsexec(lab, host, ["cat", "/etc/ufw/before.init"]).stdout == open("/etc/ufw/before.init").read()


def test_e_an_unconfirmed_change_is_rolled_back_when_ufw_starts_at_boot(lab):
    host = "c-reboot"
    before = snapshot(lab, host)
    group = "test-reboot-%d" % time.time()
    result = close(lab, host, rollback_after=600, rollback_id=group)
    changed = snapshot(lab, host)
    assert changed != before
    assert "sipguard" in nsexec(lab, host, ["cat", "/etc/ufw/before.init"]).stdout
    # "Reboot": every process of the host dies (the watcher with them) and its /run with its init,
    # netfilter is emptied, the host boots (a new init, an empty /run), ufw's boot path runs
    # (ufw.service: ufw-init start), then sshd comes back.
    directory = os.path.dirname(result["rollback"]["armed"])
    assert holders(lab, host, os.path.join(directory, "watcher.lock"))
    kill(ns_pids(lab, host))
    deadline = time.time() + 5
    while ns_pids(lab, host) and time.time() < deadline:
        time.sleep(0.05)
    assert not ns_pids(lab, host)
    sglab_module().start_init(lab["hosts"][host]["netns"])
    nsexec(lab, host, ["/lib/ufw/ufw-init", "force-stop"])
    assert not [ln for ln in nsexec(lab, host, ["iptables-save"]).stdout.splitlines() if "user-input" in ln]
    nsexec(lab, host, ["/lib/ufw/ufw-init", "start"])
    nsexec(lab, host, ["/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config"])
    assert snapshot(lab, host) == before
    time.sleep(1)
    found = [r for r in rollbacks(lab, host) if r["id"] == group]
    assert [(r["by"], r["outcome"]) for r in found] == [("boot", "restored")], found
    # the next change gives the admin's before.init back (nothing is pending any more)
    close(lab, host)
    assert nsexec(lab, host, ["cat", "/etc/ufw/before.init"]).stdout == open("/etc/ufw/before.init").read()


def interleave(lab, host, mode, other=("ufw", "allow", "7000/tcp")):
    env = dict(os.environ, PYTHONPATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""))
    proc = subprocess.run(host_argv(lab, host, [sys.executable, os.path.join(HERE, "interleave_change.py"), mode]
                                    + list(other)),
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def admits_7000(lab, host):
    status = nsexec(lab, host, ["ufw", "status"]).stdout
    live = nsexec(lab, host, ["iptables-save"]).stdout
    return "7000/tcp" in status, "--dport 7000 -j ACCEPT" in live


def assert_both_changes(lab, host, outcome):
    print("%s: %s" % (host, json.dumps(dict((k, v) for k, v in outcome.items() if k != "other_output"))))
    assert outcome["changed"] is True, outcome
    # ufw waited for the change (it did not get in between), then ran: it wrote the rules it had read
    # before the change plus its own, the change waited for it and made the change again.
    assert outcome["finished_in_window"] is False and outcome["other_rc"] == 0, outcome
    assert outcome["concurrent"]["reapplied"] == 1, outcome
    assert [w["argv"][-2:] for w in outcome["concurrent"]["waited_for"]] == [["allow", "7000/tcp"]], outcome
    assert "ran during the change and undid it; the change was applied again" in outcome["warnings"][0], outcome
    assert admits_7000(lab, host) == (True, True)
    numbered = nsexec(lab, host, ["ufw", "status", "numbered"]).stdout  # numbered shows the comments
    assert "# sipguard.firewall 5060/udp" in numbered, numbered
    assert "-A ufw-user-input -p udp -m udp --dport 5060 -j DROP" in nsexec(lab, host, ["iptables-save"]).stdout


def test_f_a_ufw_command_between_planning_and_applying_is_not_lost(lab):
    # ufw reads its rules files before it takes its lock (/usr/sbin/ufw builds UFWFrontend, which reads
    # user.rules, before create_lock): the ufw command waits for the change, then undoes it with its
    # stale copy. The change waits for it and applies itself again.
    host = "c-txn"
    outcome = interleave(lab, host, "lock")
    assert_both_changes(lab, host, outcome)


def test_f_a_ufw_command_from_another_mount_namespace_is_waited_for_too(lab):
    # A ufw command in a mount namespace of its own (a systemd unit with PrivateTmp=, a tool's sandbox),
    # which sees the host's /etc/ufw through other mounts.
    host = "c-txn-ns"
    outcome = interleave(lab, host, "lock", ["unshare", "--mount", "--propagation", "private", "--", "ufw",
                                             "allow", "7000/tcp"])
    assert_both_changes(lab, host, outcome)


def test_f_control_without_the_lock_the_update_is_lost(lab):
    # The same interleaving without ufw's lock: the other command gets in between and is overwritten.
    host = "c-race"
    outcome = interleave(lab, host, "nolock")
    assert outcome["changed"] is True, outcome
    assert outcome["finished_in_window"] is True and outcome["other_rc"] == 0, outcome
    assert admits_7000(lab, host) == (False, False)
