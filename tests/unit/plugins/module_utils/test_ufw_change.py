"""ufw_change.run_change: every branch of the transaction, with a runner that fails at each step.

The host is a real one recorded from the close lab (tests/unit/fixtures/change): ``c-txn`` before
and after ``ufw_port ports=5060/udp`` (tests/lab/scenarios/close.yml).
"""

import os

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_change

from fake_runner import AFTER, BEFORE, FakeRunner  # tests/unit (on sys.path)

REQUEST = {"ports": ["5060/udp"], "rollback_after": 30, "rollback_id": "unit-test"}


def run(runner, check_mode=False, **changes):
    params = dict(REQUEST, **changes)
    return ufw_change.run_change(runner, ufw_change.ChangeRequest(params), check_mode=check_mode, now=lambda: 1000.0)


def failure(runner, **changes):
    with pytest.raises(ufw_change.ChangeFailed) as caught:
        run(runner, **changes)
    return caught.value


def test_the_steps_run_in_order_under_the_lock_and_the_rollback_is_armed_first():
    runner = FakeRunner()
    result = run(runner)
    assert runner.calls == ["lock", "tidy", "gather", "ssh_ports(False)", "ssh_ports(True)", "backup", "arm", "apply",
                            "reread", "others", "unlock"]
    assert result["concurrent"] == {"waited_for": [], "reapplied": 0} and "warnings" not in result
    assert result["changed"] is True and result["applied_with"] == "files"
    assert result["rollback"] == {"id": "unit-test", "armed": "/var/lib/sipguard/rollback/unit-test/armed",
                                  "deadline": 1030.0}
    assert result["rollbacks"][0]["by"] == "boot"
    assert [e["ipv4"]["state"] for e in result["info"]["exposure"]] == ["blocked"]


def test_without_rollback_after_nothing_is_armed():
    runner = FakeRunner()
    result = run(runner, rollback_after=0, rollback_id=None)
    assert "arm" not in runner.calls and result["rollback"]["armed"] is None


def test_apply_ufw_runs_the_commands():
    runner = FakeRunner()
    result = run(runner, apply="ufw")
    assert result["applied_with"] == "ufw" and "apply" in runner.calls


def test_check_mode_takes_no_lock_and_changes_nothing():
    runner = FakeRunner()
    result = run(runner, check_mode=True)
    assert runner.calls == ["gather", "ssh_ports(False)", "ssh_ports(True)"]
    assert result["changed"] is True and result["rollback"]["armed"] is None


def test_nothing_to_do_backs_nothing_up():
    runner = FakeRunner(before=AFTER)
    result = run(runner)
    assert result["changed"] is False
    assert runner.calls == ["lock", "tidy", "gather", "ssh_ports(False)", "unlock"]


def test_a_held_lock_fails_before_reading():
    runner = FakeRunner(fail="lock")
    exc = failure(runner)
    assert exc.msg == "lock broke. Nothing was changed"
    assert runner.calls == ["lock"]


def test_an_unreadable_host_changes_nothing():
    runner = FakeRunner(fail="gather")
    exc = failure(runner)
    assert exc.msg == "reading the host failed: gather broke. Nothing was changed"
    assert runner.calls == ["lock", "tidy", "gather", "unlock"]


def test_a_refused_plan_changes_nothing_and_returns_the_host():
    runner = FakeRunner()
    exc = failure(runner, ports=["22/tcp"])
    assert "port 22/tcp is this host's SSH port" in exc.msg
    assert "backup" not in runner.calls and exc.result["info"]["ufw"]["active"] is True
    assert exc.result["ssh_ports"] == [22]  # the guard's ports go back with the refusal


def test_a_failed_backup_changes_nothing():
    runner = FakeRunner(fail="backup")
    exc = failure(runner)
    assert exc.msg == "backing up the rules before the change failed: backup broke. Nothing was changed"
    assert runner.calls[-2:] == ["backup", "unlock"] and not runner.applied


@pytest.mark.parametrize("step, message", [
    ("arm", "arming the rollback failed: arm broke; the previous rules were restored"),
    ("apply", "applying the change failed: iptables-restore -n failed; the previous rules were restored"),
    ("reread", "reading the host after the change failed: reread broke; the previous rules were restored"),
])
def test_a_failure_after_the_backup_restores(step, message):
    runner = FakeRunner(fail=step)
    exc = failure(runner)
    assert exc.msg == message
    assert runner.calls[-4:] == ["restore", "disarm", "gather", "unlock"]  # read again for info
    assert not runner.applied and exc.result["rollback"]["armed"] is None
    assert [e["ipv4"]["state"] for e in exc.result["info"]["exposure"]] == ["open"]  # as it was


def test_a_change_that_does_not_match_the_plan_is_restored():
    # ufw "applied" but the host reads as before: the verify step catches it.
    runner = FakeRunner(after=BEFORE)
    exc = failure(runner)
    assert exc.msg.startswith("after applying, the host does not match the plan (still to do: ")
    assert exc.msg.endswith("; the previous rules were restored")
    assert "restore" in runner.calls


def test_an_unparsable_reread_is_restored():
    broken = dict(AFTER, files=dict(AFTER["files"], user_rules="### tuple ### allow udp\n"))
    runner = FakeRunner(after=broken)
    exc = failure(runner)
    assert exc.msg.startswith("verifying the change failed") or exc.msg.startswith("reading the host after")
    assert "malformed ufw tuple" in exc.msg and exc.msg.endswith("the previous rules were restored")


def test_a_failed_restore_with_a_rollback_armed_says_it_tries_again():
    runner = FakeRunner(fail=("apply", "restore"))
    exc = failure(runner)
    assert exc.msg == ("applying the change failed: iptables-restore -n failed; restoring the previous rules failed "
                       "too (restore broke): the rollback armed in /var/lib/sipguard/rollback/unit-test tries again "
                       "at its deadline")
    assert exc.result["rollback"]["armed"] == "/var/lib/sipguard/rollback/unit-test/armed"
    assert "disarm" not in runner.calls


def test_a_failed_restore_without_a_rollback_says_where_the_backup_is():
    runner = FakeRunner(fail=("apply", "restore"))
    exc = failure(runner, rollback_after=0)
    assert exc.msg.endswith("restoring the previous rules failed too (restore broke): the host may run a partial "
                            "change, the previous files are in /var/lib/sipguard/rollback/unit-test")


def test_a_failed_disarm_is_reported():
    runner = FakeRunner(fail=("apply", "disarm"))
    exc = failure(runner)
    assert "the previous rules were restored (but the rollback could not be disarmed" in exc.msg


def test_the_default_group_names_the_process_and_time():
    runner = FakeRunner()
    result = run(runner, rollback_id=None)
    assert result["rollback"]["id"] == "ufw_port-%d-1000" % os.getpid()
    assert result["rollback"]["armed"] == "/var/lib/sipguard/rollback/ufw_port-%d-1000/armed" % os.getpid()


@pytest.mark.parametrize("params, message", [
    ({"rollback_after": -1}, "rollback_after: -1 is negative"),
    ({"ports": ["70000/udp"]}, "70000"),
])
def test_bad_requests_fail_before_the_runner_is_used(params, message):
    with pytest.raises(ufw_change.ChangeFailed) as caught:
        ufw_change.ChangeRequest(dict(REQUEST, **params))
    assert message in caught.value.msg


# --------------------------------------------------------------------------- concurrent ufw commands
# /usr/sbin/ufw reads its rules before it takes its lock: one started during the change writes, when
# it gets the lock, the rules it read before the change (tests/integration test_f_... shows it on a host).

ALLOW_7000 = {"pid": 4242, "start": 99, "argv": ["/usr/bin/python3", "/usr/sbin/ufw", "allow", "7000/tcp"]}


def test_a_ufw_command_that_undid_the_change_is_waited_for_and_the_change_made_again():
    runner = FakeRunner(others=[[dict(ALLOW_7000, undoes=True)]])
    result = run(runner)
    assert runner.calls[runner.calls.index("reread"):] == [
        "reread", "others", "unlock", "wait", "lock", "gather", "apply", "reread", "others", "unlock"]
    assert runner.calls.count("backup") == 1  # the rollback still restores the rules from before the first apply
    assert result["changed"] is True and result["rollback"]["armed"] == "/var/lib/sipguard/rollback/unit-test/armed"
    assert result["concurrent"] == {"waited_for": [{"pid": 4242, "argv": ALLOW_7000["argv"]}], "reapplied": 1}
    assert result["warnings"] == ["ufw command 4242 (/usr/sbin/ufw allow 7000/tcp) ran during the change and undid "
                                  "it; the change was applied again (1 time(s)) and verified"]
    assert [e["ipv4"]["state"] for e in result["info"]["exposure"]] == ["blocked"]


def test_a_ufw_command_that_left_the_change_alone_is_waited_for_only():
    runner = FakeRunner(others=[[ALLOW_7000]])
    result = run(runner)
    assert runner.calls[runner.calls.index("reread"):] == [
        "reread", "others", "unlock", "wait", "lock", "gather", "others", "unlock"]
    assert runner.calls.count("apply") == 1 and "warnings" not in result
    assert result["concurrent"] == {"waited_for": [{"pid": 4242, "argv": ALLOW_7000["argv"]}], "reapplied": 0}
    assert [e["ipv4"]["state"] for e in result["info"]["exposure"]] == ["blocked"]


def test_a_ufw_command_that_does_not_end_fails_the_change_and_restores():
    # It would undo the change whenever it ends: reporting the port closed would be a lie in waiting.
    runner = FakeRunner(others=[[dict(ALLOW_7000, hangs=True)]])
    exc = failure(runner)
    assert exc.msg == ("waiting for concurrent ufw commands failed: ufw command 4242 (/usr/sbin/ufw allow 7000/tcp) "
                       "started before the change and did not end within 30s; when it ends it writes the rules it "
                       "read before the change, undoing it. Let it finish (or end it) and run again; the previous "
                       "rules were restored")
    assert runner.calls[runner.calls.index("wait"):] == ["wait", "lock", "restore", "disarm", "gather", "unlock"]
    assert not runner.applied and exc.result["rollback"]["armed"] is None


def test_a_ufw_command_that_does_not_end_and_holds_the_lock_leaves_the_restore_to_the_rollback():
    runner = FakeRunner(others=[[dict(ALLOW_7000, hangs=True)]], locks=1)
    exc = failure(runner)
    assert exc.msg.endswith("ufw's lock could not be taken back to restore the previous rules (could not take ufw's "
                            "lock /run/ufw.lock within 60s): the rollback armed in /var/lib/sipguard/rollback/unit-test "
                            "restores them at its deadline")
    assert "restore" not in runner.calls and runner.calls[-2:] == ["wait", "lock"]
    assert exc.result["rollback"]["armed"] == "/var/lib/sipguard/rollback/unit-test/armed"


def test_ufw_commands_that_keep_undoing_the_change_fail_it_after_a_few_rounds():
    rounds = ufw_change.REAPPLY_ROUNDS
    runner = FakeRunner(others=[[dict(ALLOW_7000, undoes=True)]] * (rounds + 1))
    exc = failure(runner)
    assert exc.msg.startswith("waiting for concurrent ufw commands failed: ufw commands kept undoing the change "
                              "(%d times); still running: 4242 (/usr/sbin/ufw allow 7000/tcp)" % rounds)
    assert runner.calls.count("apply") == rounds + 1 and runner.calls.count("backup") == 1
    assert exc.msg.endswith("the previous rules were restored") and not runner.applied


def test_check_mode_and_no_change_do_not_look_for_other_ufw_commands():
    for runner, check_mode in ((FakeRunner(others=[[ALLOW_7000]]), True),
                               (FakeRunner(before=AFTER, others=[[ALLOW_7000]]), False)):
        run(runner, check_mode=check_mode)
        assert "others" not in runner.calls
