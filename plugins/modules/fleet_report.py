#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fleet_report
short_description: Write the fleet's SIP exposure report, track changes since the last run, and gate
version_added: 1.0.0
description:
  - Collects the host records of one run (written by the C(verify) role, or by the
    P(sipguard.firewall.host_record#filter) filter) into one report, compares it with the previous run's
    C(report.json) in O(report_dir) (the baseline), and writes C(report.json), C(report.html),
    C(report.md) and C(junit.xml) there, plus C(history/<run_id>.json).
  - Reports of partial runs (AWX job slices, C(--limit) batches) given in O(merge_from) are merged
    with the records of this run into one fleet report, equal to the report of a single run over all
    those hosts (see C(docs/report-schema.md) for what "equal" means).
  - Every file is written to a temporary file in the same directory, fsync'ed and renamed over the
    old one; C(report.json) is written last, so a run killed at any moment leaves the previous
    baseline and the history intact.
  - One run at a time per O(report_dir). A run holds an exclusive lock (flock(2) on the file
    C(.sipguard.lock) in O(report_dir)) from reading the baseline to pruning the history, so a second
    run waits and then compares with the first one's report. After O(lock_timeout) seconds it fails
    naming the directory and the holder (pid, host, run id). The kernel releases the lock when the
    holding process ends, also when it is killed; the file stays and is not the lock itself.
  - The files hold the fleet's rules, listeners and SIP banners, so they are written with O(mode)
    (default C(0640)).
  - "Runs on the controller: use it with C(delegate_to: localhost) and C(run_once: true)."
  - On a local connection without become or async, the collection's action plugin of the same name writes
    the report in Ansible's own process (no second Python start); anywhere else this module runs. Both check
    the same options and give the same result.
author:
  - sipguard maintainers (@sipguard)
extends_documentation_fragment:
  - sipguard.firewall.attributes
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details:
      - On the controller (local connection, no become, no async) the action plugin writes the report itself.
  check_mode:
    support: full
    details:
      - In check mode the report, the changes and the gate are computed and returned; nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Every run has a new O(run_id) (and C(generated_at)), stored in the files and in C(history/), so
        the files are rewritten and C(changed) is true on every run that writes. The fleet part of the
        report (hosts, summary, changes) is the same for the same records and baseline.
options:
  records:
    description:
      - The host records of this run, as a list, or as a dict host name -> record.
      - Build them with the P(sipguard.firewall.host_record#filter) and
        P(sipguard.firewall.unreachable_record#filter) filters; the C(verify) role sets them as the
        C(sipguard_host_record) fact.
      - A host given twice is an error.
    type: raw
    default: []
  report_dir:
    description:
      - Directory on the controller for the report files.
      - Its C(report.json) is the baseline the changes are computed against.
      - When missing it is created (with its missing parents and C(history/)) with O(mode) plus search
        permission wherever O(mode) gives read, so C(0750) for the default C(0640). An existing directory
        keeps its own mode and owner.
    type: path
    required: true
  merge_from:
    description:
      - Paths of C(report.json) files of partial runs to merge with O(records).
      - A host in several of them takes its record from the last one; O(records) come after all of them.
      - Their own changes are discarded; changes are computed against O(report_dir)'s C(report.json).
    type: list
    elements: path
    default: []
  formats:
    description:
      - Files to write. Without V(json) neither C(report.json) nor the history is written, so the next
        run compares with the same baseline as this one.
      - V(sarif) writes C(report.sarif) (SARIF 2.1.0 for GitHub/GitLab code scanning; one result per finding,
        one rule per finding kind, stable C(partialFingerprints)).
      - V(prometheus) writes C(report.prom) (gauges in the text exposition format; see also O(textfile_dir)).
      - V(evidence) writes C(evidence-<run_id>.tar.gz) (per host the inputs of its verdict, C(report.json),
        a control mapping and a C(SHA256SUMS) manifest); bundles beyond O(keep_history) are removed.
    type: list
    elements: str
    choices: [json, html, md, junit, sarif, prometheus, evidence]
    default: [json, html, md, junit]
  keep_history:
    description:
      - How many runs to keep in C(history/) (this one included); V(0) keeps none and removes old ones.
    type: int
    default: 30
  fail_on:
    description:
      - What makes RV(gate_failures) non-empty. V(exposed) is a host that answered and is exposed and
        not compliant; V(regression) is anything opened since the previous run, or a host that turned
        non-compliant; V(unreachable) is a host that did not answer or gave no result.
      - The module does not fail on them itself; the C(report) role fails the play with RV(gate_message).
    type: list
    elements: str
    choices: [exposed, regression, unreachable]
    default: []
  run_id:
    description:
      - Identifier of this run, used as the history file name.
      - Default is the UTC time and a random suffix, for example C(20261125T140000Z-3f9a1c), so that
        history files sort by time.
    type: str
  report_url:
    description:
      - Where readers can find C(report.html) (for example a CI artifact URL); only used in RV(alert).
    type: str
  mode:
    description:
      - Permissions of the files this run writes (the report files and its history file), as a quoted
        string of octal digits, for example V('0640') or V('0644').
      - A new lock file is C(0600), or C(0660) when O(mode) lets the group write (whoever can open it can
        lock it and hold every run off).
      - Files are replaced, never modified in place, so every written file gets this mode; history files
        of earlier runs keep theirs.
      - The owner must keep read and write (the next run reads C(report.json) back). A number is refused
        (YAML reads an unquoted C(0640) as 416).
    type: raw
    default: '0640'
    version_added: 1.2.0
  lock_timeout:
    description:
      - Seconds to wait for another run that holds the lock on O(report_dir); then the task fails naming that run.
      - V(0) fails at once. Not used in check mode, which takes no lock and writes nothing.
    type: int
    default: 300
    version_added: 1.2.0
  waivers:
    description:
      - Accepted exposures. Each is a dict with C(host) (an fnmatch pattern of inventory names), C(port),
        C(proto) (V(udp) or V(tcp)), optionally C(family) (V(ipv4) or V(ipv6); both when left out) and
        C(sources) (addresses or networks; the waiver then covers a port restricted to senders inside them,
        never a port open to anyone), C(owner), C(reason), C(expires) (a date, C(YYYY-MM-DD)), optionally C(id).
      - A finding a waiver covers stays in every format, marked waived, and does not make the host
        non-compliant. From its C(expires) day on it counts again, and the waiver is reported C(expired)
        (and in RV(alert)). A waiver that matches no finding is reported C(stale).
      - A malformed waiver fails the task before anything is read or written, naming the waiver and the field.
    type: list
    elements: raw
    default: []
    version_added: 1.2.0
  waivers_file:
    description:
      - A YAML file with more waivers (a list, or a dict with the list under C(sipguard_waivers)), read on the
        host the task runs on (the controller). Checked like O(waivers); ids must be unique over both.
    type: path
    version_added: 1.2.0
  today:
    description:
      - The day waivers are judged on, C(YYYY-MM-DD); default today (UTC). For what-if runs and tests.
    type: str
    version_added: 1.2.0
  textfile_dir:
    description:
      - node_exporter's textfile collector directory. With V(prometheus) in O(formats), C(report.prom) is also
        written there as C(sipguard.prom), atomically (a temporary file renamed over it), mode C(0644).
      - It must exist; the task fails before writing anything when it does not.
    type: path
    version_added: 1.2.0
  confirmed:
    description:
      - Keep only these opened ports in RV(alert) (C("host port/proto/family") strings); by default all are kept.
        The report role uses the P(sipguard.firewall.confirm_alert#filter) filter instead.
    type: list
    elements: str
    version_added: 1.2.0
  check_only:
    description:
      - Only check the options and the waivers (the report role does this before the audit starts); nothing is
        read or written, and RV(waivers) is the parsed list.
    type: bool
    default: false
    version_added: 1.2.0
notes:
  - The schema of C(report.json), of the changes and of the waivers is in C(docs/report-schema.md).
seealso:
  - module: sipguard.firewall.ufw_info
  - module: sipguard.firewall.sip_probe
"""

EXAMPLES = r"""
- name: Report with SARIF and Prometheus output, and a waiver for one carrier trunk
  sipguard.firewall.fleet_report:
    records: "{{ my_records }}"
    report_dir: /var/lib/sipguard/report
    formats: [json, html, junit, sarif, prometheus]
    textfile_dir: /var/lib/prometheus/node-exporter
    waivers:
      - host: "pbx-edge-*"
        port: 5060
        proto: udp
        sources: [203.0.113.0/24]
        owner: voice-team
        reason: carrier trunk until the SBC migration (CHG-4711)
        expires: "2027-03-31"
    fail_on: [exposed]
  delegate_to: localhost
  run_once: true

- name: Write the fleet report from the verify role's host records
  sipguard.firewall.fleet_report:
    records: "{{ ansible_play_hosts_all | map('extract', hostvars) | selectattr('sipguard_host_record', 'defined')
                 | map(attribute='sipguard_host_record') | list }}"
    report_dir: /var/lib/sipguard/report
    fail_on: [regression]
  delegate_to: localhost
  run_once: true
  register: fleet

- name: Write a report the web server's group may read, waiting at most a minute for another run
  sipguard.firewall.fleet_report:
    records: "{{ my_records }}"
    report_dir: /srv/www/sipguard
    mode: '0640'
    lock_timeout: 60
  delegate_to: localhost
  run_once: true

- name: Merge the reports of three AWX job slices into the fleet report
  sipguard.firewall.fleet_report:
    merge_from:
      - /srv/reports/slice1/report.json
      - /srv/reports/slice2/report.json
      - /srv/reports/slice3/report.json
    report_dir: /srv/reports/fleet
  delegate_to: localhost
  run_once: true

- name: Only compute what would change
  sipguard.firewall.fleet_report:
    records: "{{ my_records }}"
    report_dir: /var/lib/sipguard/report
  check_mode: true
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
report:
  description: The report without its host records (those are in C(report.json)).
  returned: always
  type: dict
  contains:
    schema:
      description: Version of the report schema.
      type: int
      sample: 1
    run_id:
      description: This run's identifier.
      type: str
      sample: 20261125T140000Z-3f9a1c
    generated_at:
      description: UTC time of this run (ISO 8601).
      type: str
      sample: "2026-11-25T14:00:00Z"
    baseline:
      description: The previous run the changes are computed against, or null for the first run.
      type: dict
      sample: {"run_id": "20261124T140000Z-77ab02", "generated_at": "2026-11-24T14:00:00Z", "hosts": 23}
    summary:
      description: Counts over the hosts (C(hosts = compliant + non_compliant + unreachable)) and the changes.
      type: dict
      sample: {"hosts": 23, "compliant": 6, "non_compliant": 17, "unreachable": 0, "errors": 0, "exposed": 18,
               "exposed_allowed": 1, "findings": 92, "by_state": {"open": 45, "restricted": 3, "blocked": 90},
               "by_key": {"5060/udp/ipv4": {"open": 11, "restricted": 2, "blocked": 10}},
               "changes": {"opened": 1, "closed": 2}}
    sources:
      description: The inputs of a merge (one item per O(merge_from) file, then this run's O(records)).
      returned: when O(merge_from) is given
      type: list
      elements: dict
      sample: [{"run_id": "slice1-20261125", "generated_at": "2026-11-25T14:00:00Z", "hosts": 8}]
changes:
  description: What differs from the previous run, sorted by host, kind and port.
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: Inventory host name.
      type: str
    key:
      description: C(port/proto/family) the change is about, or null for a host-level change.
      type: str
    kind:
      description:
        - V(opened), V(closed), V(restricted) (a port's state), V(host_added), V(host_gone),
          V(reachability_changed), V(compliance_changed), V(rule_changed) (the UFW rule list),
          V(listener_changed) (the processes listening on the port).
      type: str
    added:
      description: For V(rule_changed), the rules that are new (compared without their numbers).
      type: list
      elements: str
    removed:
      description: For V(rule_changed), the rules that are gone (compared without their numbers).
      type: list
      elements: str
    before:
      description: The previous value (a state, a bool, a list of rules or listeners), or null.
      type: raw
    after:
      description: The new value, or null.
      type: raw
    reason:
      description: For V(opened), V(closed) and V(restricted), the current verdict's reason.
      type: str
  sample:
    - {"host": "web1", "key": "5060/udp/ipv4", "kind": "opened", "before": "blocked", "after": "open",
       "reason": "ufw rule 2 (ALLOW IN 5060/udp from Anywhere) accepts"}
paths:
  description:
    - Path of each written (in check mode, each would-be written) format; C(textfile) is the copy of
      C(report.prom) in O(textfile_dir).
  returned: always
  type: dict
  sample: {"json": "/var/lib/sipguard/report/report.json", "html": "/var/lib/sipguard/report/report.html",
           "md": "/var/lib/sipguard/report/report.md", "junit": "/var/lib/sipguard/report/junit.xml"}
written:
  description: Files written, in order (in check mode, the files that would be).
  returned: always
  type: list
  elements: str
  sample: ["/var/lib/sipguard/report/history/20261125T140000Z-3f9a1c.json", "/var/lib/sipguard/report/report.json"]
pruned:
  description: History files removed to keep O(keep_history) runs.
  returned: always
  type: list
  elements: str
  sample: []
gate_failures:
  description: One line per problem selected by O(fail_on); empty when the gate passes.
  returned: always
  type: list
  elements: str
  sample: ["regression: 5060/udp/ipv4 on web1 opened (it was blocked): ufw rule 2 (ALLOW IN 5060/udp from Anywhere) accepts"]
gate_message:
  description: The text to fail the play with (the first 50 lines and the counts), or an empty string.
  returned: always
  type: str
markdown:
  description: The content of C(report.md) (also when V(md) is not in O(formats)), for CI job summaries.
  returned: always
  type: str
opened:
  description:
    - The opened ports no active waiver covers, each an C(opened) change plus where it opened through
      (C(via), C(rule)) and since when (C(since), this run; C(last_seen_closed), the baseline's time).
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
waivers:
  description:
    - The waivers with their C(status) (V(active), V(expired), V(stale)) and C(matched) (C("host key") strings);
      with O(check_only), the parsed waivers.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
alert:
  description:
    - The webhook body when something opened since the previous run or a waiver expired, else null.
    - Slack-compatible C(text) plus a C(sipguard) object with C(run_id), C(summary), the C(opened) ports (see
      RV(opened)) and the C(expired_waivers).
  returned: always
  type: dict
  sample: {"text": "sipguard: SIP opened on 1 port(s) since run 20261124T140000Z-77ab02\n- 5060/udp/ipv4 on web1 opened
             through ufw rule 2, since 2026-11-25T14:00:00Z (blocked at 2026-11-24T14:00:00Z): ufw rule 2 accepts",
           "sipguard": {"run_id": "20261125T140000Z-3f9a1c", "opened": []}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sipguard.firewall.plugins.module_utils.report_task import ARGUMENT_SPEC, TaskError, run


def main():
    # On the controller (local connection, no become) the action plugin of the same name runs
    # report_task.run() in Ansible's own process; this module runs it anywhere else.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params, check_mode=module.check_mode)
    except TaskError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
