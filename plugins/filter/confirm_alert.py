# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report role's webhook body, kept to the opened ports a second probe confirmed.

Its documentation is in confirm_alert.yml next to this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.sipguard.firewall.plugins.module_utils.report_gate import confirm_alert as _confirm


def _results(probes):
    if probes is None:
        return []
    if isinstance(probes, Mapping):
        return list(probes.get("results") or [])
    if isinstance(probes, (list, tuple)):
        return list(probes)
    raise AnsibleFilterError("confirm_alert: probes must be sip_probe's registered result or its results list")


def confirm_alert(alert, probes=None, targets=None):
    """fleet_report's ``alert`` -> the same alert with only the opened ports the probes reached.

    ``targets`` maps each host to its probe targets (the probe_targets filter); a port's second
    probe is the result for one of them with the port, transport and family of the opened key.
    """
    if alert is None:
        return None
    if not isinstance(alert, Mapping) or "sipguard" not in alert:
        raise AnsibleFilterError("confirm_alert: the input must be fleet_report's alert (or null)")
    if targets is None or not isinstance(targets, Mapping):
        raise AnsibleFilterError("confirm_alert: targets must be a dict host -> list of probe targets")
    results = _results(probes)
    reached = {}
    for item in alert["sipguard"].get("opened") or []:
        name = "%s %s" % (item["host"], item["key"])
        mine = set(targets.get(item["host"]) or [])
        if not mine:
            reached[name] = "no-target"
            continue
        port, proto, family = item["key"].split("/")
        states = [r.get("state") for r in results
                  if (r.get("target") in mine or r.get("address") in mine) and str(r.get("port")) == port
                  and r.get("transport") == proto and r.get("family") == family]
        # one answer is enough: several addresses of the host, one of them reachable, is reachable
        reached[name] = next((s for s in states if s in ("open", "closed")), states[0] if states else None)
    return _confirm(dict(alert), reached)


class FilterModule(object):
    def filters(self):
        return {"confirm_alert": confirm_alert}
