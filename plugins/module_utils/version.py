# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's name and version, in one place (the SIP User-Agent, SARIF's tool, the evidence).

Module code cannot read galaxy.yml on a target, so the version is a constant here; a unit test
(tests/unit/plugins/module_utils/test_version.py) fails when it differs from galaxy.yml's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

TOOL_NAME = "sipguard.firewall"
COLLECTION_VERSION = "1.2.0"
