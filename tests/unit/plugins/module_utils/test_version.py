# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's version is read in one place (module_utils/version.py) and matches galaxy.yml."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible_collections.sipguard.firewall.plugins.module_utils import sip, version

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")


def _released_version():
    """galaxy.yml's version in a checkout, MANIFEST.json's in an installed (built) collection."""
    galaxy = os.path.join(ROOT, "galaxy.yml")
    if os.path.exists(galaxy):
        with open(galaxy) as fh:
            return re.search(r"^version:\s*['\"]?([^'\"\s]+)", fh.read(), re.M).group(1)
    with open(os.path.join(ROOT, "MANIFEST.json")) as fh:
        return json.load(fh)["collection_info"]["version"]


def test_version_matches_galaxy_yml():
    assert version.COLLECTION_VERSION == _released_version()


def test_sip_user_agent_carries_the_collection_version():
    assert sip.USER_AGENT.startswith("sipguard-firewall/%s " % version.COLLECTION_VERSION)
