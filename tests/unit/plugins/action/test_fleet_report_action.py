# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which way the fleet_report action plugin goes: in Ansible's process on a local connection without
become or async, else through the module. (That both ways give the same report is checked in
tests/integration/test_report_action.py.)"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from unittest.mock import MagicMock

import pytest
from ansible.plugins.action import ActionBase

from ansible_collections.sipguard.firewall.plugins.action.fleet_report import ActionModule

import record_fixtures as F


def action(tmp_path, transport="local", become=False, async_val=0, check_mode=False, **args):
    task = MagicMock()
    task.args = dict({"records": list(F.load_records().values())[:3], "report_dir": str(tmp_path),
                      "run_id": "20261125T120000Z-abc123"}, **args)
    task.async_val = async_val
    task.check_mode = check_mode
    connection = MagicMock()
    connection.transport = transport
    play_context = MagicMock()
    play_context.become = become
    plugin = ActionModule(task, connection, play_context, loader=None, templar=None, shared_loader_obj=None)
    plugin._execute_module = MagicMock(return_value={"changed": False, "from": "module"})
    return plugin


@pytest.fixture(autouse=True)
def no_base_run(monkeypatch):
    # ActionBase.run only checks async/check-mode support and sets up a temporary path on the target.
    monkeypatch.setattr(ActionBase, "run", lambda self, tmp=None, task_vars=None: {})


def test_local_without_become_writes_the_report_in_process(tmp_path):
    plugin = action(tmp_path)
    result = plugin.run(task_vars={})
    plugin._execute_module.assert_not_called()
    assert result["changed"] is True and result["report"]["run_id"] == "20261125T120000Z-abc123"
    assert sorted(os.listdir(tmp_path)) == [".sipguard.lock", "history", "junit.xml", "report.html", "report.json",
                                            "report.md"]
    assert set(oct(os.stat(os.path.join(tmp_path, name)).st_mode & 0o777) for name in os.listdir(tmp_path)
               if name.startswith("report.")) == {"0o640"}


def test_check_mode_in_process_writes_nothing(tmp_path):
    result = action(tmp_path, check_mode=True).run(task_vars={})
    assert result["written"] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs", [{"transport": "ssh"}, {"become": True}, {"async_val": 60}])
def test_elsewhere_the_module_runs(tmp_path, kwargs):
    plugin = action(tmp_path, **kwargs)
    result = plugin.run(task_vars={})
    plugin._execute_module.assert_called_once()
    assert plugin._execute_module.call_args.kwargs["module_name"] == "sipguard.firewall.fleet_report"
    assert result["from"] == "module" and os.listdir(tmp_path) == []


def test_bad_arguments_fail_in_process_with_the_module_name(tmp_path):
    result = action(tmp_path, bogus=1).run(task_vars={})
    assert result["failed"] and result["msg"].startswith(
        "Unsupported parameters for (sipguard.firewall.fleet_report) module: bogus."), result
    assert os.listdir(tmp_path) == []


def test_configured_mode_and_a_new_directory(tmp_path):
    report_dir = tmp_path / "new" / "report"
    result = action(tmp_path, report_dir=str(report_dir), mode="0600").run(task_vars={})
    assert result["changed"] is True, result
    assert oct(os.stat(str(report_dir)).st_mode & 0o777) == "0o700"
    assert oct(os.stat(str(report_dir / "report.json")).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("args, message", [
    ({"mode": 416}, "mode: 416 is not a string; quote the mode, for example '0640'"),
    ({"mode": "0444"}, "mode: '0444' does not let the owner read and write the report"),
    ({"mode": "rw-r-----"}, "mode: 'rw-r-----' is not a file mode"),
    ({"lock_timeout": -1}, "lock_timeout: -1 is negative; use 0 to fail at once when another run holds the lock"),
    ({"records": [{"host": "x"}]}, "records[0] (x): missing 'schema'"),
    ({"merge_from": ["/nonexistent/report.json"]}, "merge_from[0]: /nonexistent/report.json does not exist"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, args, message):
    report_dir = tmp_path / "report"
    result = action(tmp_path, report_dir=str(report_dir), **args).run(task_vars={})
    assert result["failed"] and result["msg"].startswith(message), result
    assert os.listdir(tmp_path) == []  # not even the directory
