# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a host for ufw_info: the commands and files the UFW model needs, and the rollbacks that
happened. Kept apart from ufw_host (changes, backups, rollbacks) so that ufw_info, which runs on every
host of every audit, loads only what it uses: AnsiballZ compiles each imported file on every run.
Runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import APPLICATIONS_DIR, COMMANDS, FILES

BACKUP_ROOT = "/var/lib/sipguard/rollback"
UFW_DIR = "/etc/ufw"
# The route table of a family is read only when a backend of that family has a DNAT
# (iptables' "-j DNAT", nft's JSON "dnat" statement).
ROUTES_FOR = {"ip_route": ("iptables_save", "iptables_legacy_save", "nft_ruleset"),
              "ip6_route": ("ip6tables_save", "ip6tables_legacy_save", "nft_ruleset")}
# iptables-nft's save warns on stderr when legacy tables of its family exist in the namespace
# ("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them", and
# "ip6tables-legacy tables present" from ip6tables-save); without that warning there is nothing
# for the legacy save to read.
LEGACY_FOR = {"iptables_legacy_save": "iptables_save", "ip6tables_legacy_save": "ip6tables_save"}
LEGACY_WARNING = "legacy tables present"
_IN_INTERFACE = re.compile(r"(?:^|\s)(?:-i|--in-interface)\s+(?!lo\+?(?:\s|$))\S", re.M)
_NFT_IN_INTERFACE = re.compile(r'"iifname"\s*\}\s*\}\s*,\s*"right"\s*:\s*(?=\S)(?!"lo\+?")')


def needs_routes(netfilter_text):
    """Routes matter for a DNAT to another address (Docker-style forwarding) and for a rule that
    admits only on an interface (the one carrying the default route admits the Internet).
    None (not read yet) reads them."""
    if netfilter_text is None:
        return True
    # iptables-save writes -j DNAT and -i; nft -j writes "dnat" and "iifname". Loopback does not
    # count in either: every UFW host has it (iptables-nft's own tables show up in nft -j too).
    return "DNAT" in netfilter_text.upper() or bool(_IN_INTERFACE.search(netfilter_text)) \
        or bool(_NFT_IN_INTERFACE.search(netfilter_text))


def _read(path, caveats=None):
    """The text of ``path``, or None when it cannot be read.

    A file that is not UTF-8 (a Latin-1 comment in before.rules) is read with U+FFFD in place of
    the bad bytes, and ``caveats`` says so: iptables-restore reads bytes, so the rules still count.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError):
        return None
    return decode_file(path, data, caveats)


def decode_file(path, data, caveats=None):
    """``data`` (the bytes of ``path``) as text; bytes that are not UTF-8 are replaced, with a caveat."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        if caveats is not None:
            caveats.append("%s line %d is not UTF-8 (byte 0x%02x): read with the bad bytes replaced"
                           % (path, line, data[exc.start]))
        return data.decode("utf-8", "replace")


def gather(module, commands=None, previous=None):
    """Everything the UFW model needs, read in one module run.

    With ``commands`` (keys of COMMANDS) only those are run again and the other outputs come
    from ``previous``: after a firewall change only netfilter and the files differ.
    """
    raw = {"ufw_binary": module.get_bin_path("ufw"), "commands": {}, "files": {}, "applications": {}, "caveats": []}
    if previous is not None:
        raw["commands"] = dict(previous["commands"])
    for key, argv in COMMANDS.items():
        if commands is not None and key not in commands:
            continue
        if key in ROUTES_FOR and not any(needs_routes((raw["commands"].get(source) or {}).get("out"))
                                         for source in ROUTES_FOR[key]):
            raw["commands"][key] = {"rc": 0, "out": "", "err": "not read: no DNAT or interface match in netfilter"}
            continue
        if key in LEGACY_FOR:
            save = raw["commands"].get(LEGACY_FOR[key]) or {}
            if save.get("rc") == 0 and "(nf_tables)" in (save.get("out") or "").split("\n", 1)[0] \
                    and LEGACY_WARNING not in (save.get("err") or ""):
                raw["commands"][key] = {"rc": 0, "out": "", "err": "not read: %s reports no iptables-legacy tables"
                                        % COMMANDS[LEGACY_FOR[key]][0]}
                continue
        binary = module.get_bin_path(argv[0])
        if binary is None:
            raw["commands"][key] = {"rc": None, "out": "", "err": "%s not found" % argv[0]}
            continue
        rc, out, err = module.run_command([binary] + argv[1:], environ_update={"LC_ALL": "C"})
        raw["commands"][key] = {"rc": rc, "out": out, "err": err}
    for key, path in FILES.items():
        raw["files"][key] = _read(path, raw["caveats"])
    if os.path.isdir(APPLICATIONS_DIR):
        for name in sorted(os.listdir(APPLICATIONS_DIR)):
            text = _read(os.path.join(APPLICATIONS_DIR, name), raw["caveats"])
            if text is not None:
                raw["applications"][name] = text
    return raw


def _ufw_dir_id():
    """Which UFW configuration this is (device and inode of /etc/ufw): lab hosts share
    /var/lib but each has its own /etc/ufw, and a rollback belongs to one of them."""
    try:
        st = os.stat(UFW_DIR)
    except OSError:
        return None
    return "%d:%d" % (st.st_dev, st.st_ino)


def past_rollbacks(root=BACKUP_ROOT):
    """Rollbacks that happened on this host's UFW, oldest first: [{id, time, at, by, outcome}]."""
    found = []
    here = _ufw_dir_id()
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        directory = os.path.join(root, name)
        text = _read(os.path.join(directory, "rolled-back"))
        if text is None:
            continue
        try:
            state = json.loads(_read(os.path.join(directory, "state.json")) or "{}")
            record = json.loads(text)
            when = float(record["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if state.get("ufw_dir") not in (None, here):
            continue  # another UFW configuration's (another lab host)
        found.append({"id": name, "time": when, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
                      "by": record.get("by"), "outcome": record.get("outcome")})
    return sorted(found, key=lambda r: r["time"])


def raw_inputs(gathered):
    """ufw_info's raw inputs ({name: text}) from what ufw_host.gather() read: every command's output
    (``command/<key>``, with its exit status and stderr when it failed or said something) and every
    file (``file/<key>``, ``applications.d/<name>``). For the evidence bundle; opt-in, since a
    fleet's iptables-save and nft -j outputs are large."""
    out = {}
    for key in sorted((gathered or {}).get("commands") or {}):
        result = gathered["commands"][key] or {}
        text = result.get("out") or ""
        if result.get("rc") not in (0, None) or result.get("err"):
            text += "\n# rc=%s stderr: %s\n" % (result.get("rc"), (result.get("err") or "").strip())
        out["command/%s" % key] = text
    for key in sorted((gathered or {}).get("files") or {}):
        if gathered["files"][key] is not None:
            out["file/%s" % key] = gathered["files"][key]
    for name in sorted((gathered or {}).get("applications") or {}):
        out["applications.d/%s" % name] = gathered["applications"][name]
    return out
