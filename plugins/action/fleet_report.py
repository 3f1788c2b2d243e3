# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for sipguard.firewall.fleet_report.

The report is written on the controller (the report role delegates it to localhost). There the
module would only start a second Python to do what this process can do itself, so on a local
connection without become (and without async) the plugin checks the arguments against the
module's own spec and runs report_task.run() here. Anywhere else it runs the module as usual.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import ARGUMENT_SPEC, TaskError, run

MODULE = "sipguard.firewall.fleet_report"


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def _in_process(self):
        return (getattr(self._connection, "transport", None) == "local"
                and not self._play_context.become
                and not self._task.async_val)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if not self._in_process():
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars,
                                               wrap_async=self._task.async_val))
            return result
        try:
            _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        except AnsibleActionFail as exc:
            # Name the module as the module itself would, not this plugin's Python path.
            result.update(failed=True, msg=exc.message.replace("(%s)" % self._load_name, "(%s)" % MODULE))
            return result
        try:
            result.update(run(params, check_mode=bool(self._task.check_mode)))
        except TaskError as exc:
            result.update(failed=True, msg=str(exc))
        return result
