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
    assert sorted(os.listdir(tmp_path)) == ["history", "junit.xml", "report.html", "report.json", "report.md"]


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
