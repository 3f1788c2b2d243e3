# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""House naming of role variables: every option in a role's argument_specs is sipguard_<role>_*,
or one of the few shared variables, which say so in their description."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
# Set by the gate playbook and the monitor role as well as read by the report role.
SHARED = ("sipguard_fail_on", "sipguard_webhook_url", "sipguard_webhook_token", "sipguard_waivers",
          "sipguard_waivers_file")


def test_role_variables_carry_the_role_prefix_or_are_documented_shared():
    specs = sorted(glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml")))
    assert len(specs) >= 4
    for path in specs:
        role = path.split(os.sep)[-3]
        with open(path) as fh:
            entry_points = yaml.safe_load(fh)["argument_specs"]
        for entry, spec in entry_points.items():
            for name, option in (spec.get("options") or {}).items():
                if name.startswith("sipguard_%s_" % role):
                    continue
                assert name in SHARED, "%s %s: %s is neither sipguard_%s_* nor shared" % (role, entry, name, role)
                description = option["description"]
                text = " ".join(description) if isinstance(description, list) else description
                assert "Shared variable" in text or "shared" in text.lower(), (role, name)
