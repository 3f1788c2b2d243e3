"""Recorded lab outputs (tests/unit/fixtures/lab, written by ``sglab.py record``).

File names are ``<lab host>__<what>.txt``; ``<what>`` is a key of ufw_model.COMMANDS or FILES,
``applications.d__<profile file>`` or ``ufw_status_numbered`` (ufw's own numbering, an oracle).
"""

import glob
import json
import os

import yaml

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_host, ufw_model

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "fixtures", "lab")
SCENARIO = os.path.join(HERE, "..", "lab", "scenarios", "exposure.yml")


def read(host, what, caveats=None, directory=LAB):
    """The recorded text; a file that is not UTF-8 is decoded as ufw_info decodes it (with a caveat)."""
    path = os.path.join(directory, "%s__%s.txt" % (host, what))
    if not os.path.exists(path):
        path = path[:-len("txt")] + "bin"  # recorded bytes that are not UTF-8 (sglab.py record)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    return ufw_host.decode_file(ufw_model.FILES.get(what, what), data, caveats)


def hosts():
    return sorted({os.path.basename(p).split("__")[0] for p in glob.glob(os.path.join(LAB, "*__*.txt"))})


def raw(host, ufw_binary="/usr/sbin/ufw", directory=LAB):
    """The dict ufw_host.gather() builds (what ufw_info reads), from the recorded files of one lab host."""
    data = {"ufw_binary": ufw_binary, "commands": {}, "files": {}, "applications": {}, "caveats": []}
    for key in ufw_model.COMMANDS:
        out = read(host, key, directory=directory)
        data["commands"][key] = {"rc": 0 if out is not None else None, "out": out or "", "err": ""}
    for key in ufw_model.FILES:
        data["files"][key] = read(host, key, data["caveats"], directory)
    for path in glob.glob(os.path.join(directory, "%s__applications.d__*.txt" % host)):
        with open(path) as fh:
            data["applications"][path.rsplit("__", 1)[1][:-4]] = fh.read()
    return data


def sip_message(name):
    """Raw bytes of a SIP capture in fixtures/sip (stored JSON-escaped so CR LF survives)."""
    with open(os.path.join(HERE, "fixtures", "sip", name + ".json")) as fh:
        return json.load(fh)["raw"].encode("latin-1")


def scenario_hosts():
    with open(SCENARIO) as fh:
        return {h["name"]: h for h in yaml.safe_load(fh)["hosts"]}
