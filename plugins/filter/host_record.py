# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that build host records (host_record.py's schema) in playbooks.

Their documentation is in host_record.yml and unreachable_record.yml next to this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import HostRecordError, build_host_record


def _probe_results(probes, wanted=None):
    """sip_probe's registered result, its ``results`` list, or a list of such results/lists.

    With ``wanted`` (addresses), only the probes aimed at them are kept; they are picked before
    being copied, so a fleet's batched result costs each host only its own probes.
    """
    if probes is None:
        return []
    if isinstance(probes, Mapping):
        if "results" not in probes:
            raise AnsibleFilterError("host_record: probes is a dict without 'results'; pass sip_probe's "
                                     "registered result or its results list")
        return _probe_results(probes["results"], wanted)
    if isinstance(probes, (list, tuple)):
        flat = []
        for index, item in enumerate(probes):
            if isinstance(item, Mapping) and "results" in item and "state" not in item:
                flat.extend(_probe_results(item["results"], wanted))
            elif isinstance(item, Mapping):
                if wanted is None or item.get("target") in wanted or item.get("address") in wanted:
                    flat.append(dict(item))
            else:
                raise AnsibleFilterError("host_record: probes[%d] is a %s, expected a sip_probe result"
                                         % (index, type(item).__name__))
        return flat
    raise AnsibleFilterError("host_record: probes must be sip_probe's result or a list, got %s"
                             % type(probes).__name__)


def host_record(info, host, probes=None, allow_restricted=True, error=None, checked_at=None, addresses=None):
    """ufw_info's registered result (+ sip_probe results) -> the host record."""
    if info is not None and not isinstance(info, Mapping):
        raise AnsibleFilterError("host_record: the input must be ufw_info's registered result, got %s"
                                 % type(info).__name__)
    if isinstance(info, Mapping) and (info.get("failed") or info.get("unreachable")):
        error = error or info.get("msg") or "ufw_info failed"
        unreachable = bool(info.get("unreachable"))
        info = None
    else:
        unreachable = False
    try:
        # Strict: a per-host value such as "maybe" must not silently count as true.
        allow_restricted = boolean(allow_restricted, strict=True)
    except TypeError:
        raise AnsibleFilterError("host_record: allow_restricted must be a boolean, got %r" % (allow_restricted,))
    try:
        wanted = None
        if addresses is not None:
            if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)):
                raise AnsibleFilterError("host_record: addresses must be a list of this host's addresses, got %s"
                                         % type(addresses).__name__)
            wanted = set(addresses)
        probe_results = _probe_results(probes, wanted)
        return build_host_record(host, dict(info) if info is not None else None, probe_results,
                                 error=error, unreachable=unreachable, allow_restricted=allow_restricted,
                                 checked_at=checked_at)
    except HostRecordError as exc:
        raise AnsibleFilterError(str(exc))


def unreachable_record(host, error=None, checked_at=None):
    """The record of a host that gave no result (unreachable, or failed before verify)."""
    if not isinstance(host, str) or not host:
        raise AnsibleFilterError("unreachable_record: the input must be the inventory host name, got %r" % (host,))
    return build_host_record(host, None, error=error or "no host record: the host failed or was unreachable "
                             "earlier in this play", unreachable=True, checked_at=checked_at)


class FilterModule(object):
    def filters(self):
        return {"host_record": host_record, "unreachable_record": unreachable_record}
