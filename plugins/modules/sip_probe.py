#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sip_probe
short_description: Probe SIP (UDP, TCP, TLS) on many targets at once and report nmap-style port states
version_added: 1.0.0
description:
  - Sends a real RFC 3261 C(OPTIONS) request to every target on every port/transport and
    reports the port state with nmap's meanings and an nmap C(--reason)-like reason.
  - "Runs on the host the task runs on, which is the vantage point. To probe a fleet from the
    controller, use C(delegate_to: localhost) with C(run_once: true)."
  - "States: V(open) = a SIP response of any status, or for TCP/TLS a completed connection
    (the reason says when nothing SIP answered), or for UDP a datagram from the probed address
    and port that is not SIP (C(udp-response; not SIP)); V(closed) = TCP reset or an ICMP
    port-unreachable sent by the target itself; V(filtered) = TCP timeout, ICMP
    admin-prohibited/host-unreachable/net-unreachable, or a port-unreachable sent by another
    address (a firewall's REJECT); V(open|filtered) = UDP silence after all retries;
    V(unresolved) = the name did not resolve (a result, not a module failure)."
  - ICMP details (type, code and the address that sent them) are read from the socket error
    queue (C(IP_RECVERR)); no root privileges and no raw sockets are needed. Without that
    (non-Linux), a closed UDP port may be reported as V(open|filtered).
  - Hostnames are resolved to all their A and AAAA addresses; each address is its own result.
  - Gentle by default. At most O(rate) transmissions per second (first sends, UDP
    retransmissions and TCP connection attempts all count), at most O(max_concurrency)
    sockets open, and a C(User-Agent) that names the tool and a contact URL.
  - All targets are probed concurrently from one single-threaded event loop. Name
    resolution happens one target at a time, while probing.
  - "A hostile or broken server cannot hold up the run or the probe: whatever it sends, a UDP
    probe ends within O(timeout) x (O(retries) + 1) and a TCP/TLS probe within O(timeout) per
    step (connect, TLS handshake, answer). Each answer is read up to hard limits: 64 KiB of
    headers, 256 headers, 8 KiB per header, 64 Allow/Supported items, and at most 1 MiB read
    from one TCP/TLS connection. An answer cut at a limit still decides the state (the port
    answered, so it is V(open)); the reason then says what was cut, for example
    C(sip-response (cut: allow header over 8192 bytes))."
  - The module only sends probes and changes nothing, so it also probes in check mode and
    always returns RV(ignore:changed=false).
author:
  - sipguard maintainers (@sipguard)
options:
  targets:
    description:
      - Hostnames, IPv4 or IPv6 addresses to probe (IPv6 with or without brackets).
    type: list
    elements: str
    required: true
  ports:
    description:
      - What to probe, as C(PORT/TRANSPORT) with transport V(udp), V(tcp) or V(tls).
      - V(tls) means a TLS handshake (certificate not verified, only reported) and then
        C(OPTIONS) over TLS, normally on 5061.
    type: list
    elements: str
    default: ['5060/udp', '5060/tcp', '5061/tls']
  timeout:
    description:
      - Seconds to wait for each answer (per UDP transmission, per TCP connect, per TLS
        handshake and per SIP response). Must be greater than 0 and at most 300.
    type: float
    default: 1.5
  retries:
    description:
      - How many times an unanswered UDP request is re-sent (with the same branch and
        Call-ID, so a late answer to the first copy still counts). 0 to 10.
      - TCP and TLS are not retried; the kernel already retransmits SYNs.
    type: int
    default: 2
  rate:
    description:
      - Global cap on transmissions per second across all targets. Must be greater than 0.
    type: float
    default: 200.0
  max_concurrency:
    description:
      - Maximum number of probes (and sockets) in flight at once. 1 to 65535.
      - Capped further by the open-files limit of the process.
    type: int
    default: 256
  source:
    description:
      - Local IP address to send from (the vantage point). It must be an address of the
        host the module runs on. Only targets of its address family are probed; the others
        are reported V(unresolved).
    type: str
  family:
    description:
      - Which addresses of the targets to probe.
    type: str
    choices: [any, ipv4, ipv6]
    default: any
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Probing changes nothing, so the module probes in check mode too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Probes are real network traffic. Probe only hosts you are allowed to test.
  - Replies are matched by Via branch and Call-ID, so a UDP answer from a different source
    port or address is accepted (the reason then names where it came from).
seealso:
  - name: nmap port states
    description: The meaning of open, closed, filtered and open|filtered.
    link: https://nmap.org/book/man-port-scanning-basics.html
"""

EXAMPLES = r"""
- name: Probe the default SIP ports of two hosts from the host itself
  sipguard.firewall.sip_probe:
    targets:
      - 192.0.2.10
      - sip.example.org
  register: sip

- name: Probe every inventory host from the controller, once
  sipguard.firewall.sip_probe:
    targets: "{{ groups['all'] | map('extract', hostvars, 'ansible_host') | list }}"
    ports: ['5060/udp', '5060/tcp', '5061/tls']
    timeout: 1.0
    retries: 2
    rate: 100
  delegate_to: localhost
  run_once: true
  register: outside

- name: Fail when any SIP port answers
  ansible.builtin.assert:
    that: outside.counts.open == 0
    fail_msg: "{{ outside.results | selectattr('state', 'eq', 'open') | map(attribute='target') | list }}"

- name: Probe over IPv6 only, from a chosen source address
  sipguard.firewall.sip_probe:
    targets: ['2001:db8::10']
    family: ipv6
    source: '2001:db8::1'
    ports: ['5060/udp']
"""

RETURN = r"""
results:
  description:
    - One item per target, address, port and transport, in the order of O(targets) and
      O(ports).
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: The target as given.
      type: str
      sample: sip.example.org
    address:
      description: The address probed (null when the target did not resolve).
      type: str
      sample: 192.0.2.10
    family:
      description: V(ipv4) or V(ipv6) (null when unresolved).
      type: str
      sample: ipv4
    port:
      description: The port probed.
      type: int
      sample: 5060
    transport:
      description: V(udp), V(tcp) or V(tls).
      type: str
      sample: udp
    state:
      description: V(open), V(closed), V(filtered), V(open|filtered) or V(unresolved) (see the description).
      type: str
      sample: open
    reason:
      description:
        - "Why, in the style of nmap C(--reason), for example C(sip-response),
          C(conn-refused), C(port-unreach from target), C(admin-prohibited from 198.18.0.1),
          C(no-response), C(syn-ack; no SIP response within 1.5s) or C(resolver: ...)."
        - "An answer cut at one of the parser's limits adds C((cut: ...)), for example
          C(sip-response (cut: head over 65536 bytes)) or
          C(syn-ack; reply cut: stream over 1048576 bytes)."
      type: str
      sample: sip-response
    rtt_ms:
      description:
        - Milliseconds from the last transmission to the answer that decided the state
          (SIP response, ICMP error, RST, or the completed connect when nothing SIP answered).
          Null when nothing answered.
      type: float
      sample: 0.84
    sip:
      description: What the SIP server answered; null when no SIP response arrived.
      type: dict
      contains:
        status_code:
          description: SIP status code (any status means the port is open).
          type: int
          sample: 200
        reason_phrase:
          description: SIP reason phrase.
          type: str
          sample: OK
        server:
          description: The Server header, null when absent.
          type: str
          sample: kamailio (5.6.3 (x86_64/linux))
        user_agent:
          description: The User-Agent header, null when absent.
          type: str
        allow:
          description: Methods from the Allow headers (empty when absent).
          type: list
          elements: str
          sample: [INVITE, ACK, BYE, CANCEL, OPTIONS]
        supported:
          description: Option tags from the Supported headers (empty when absent).
          type: list
          elements: str
          sample: [path, outbound]
    tls:
      description:
        - For V(tls) probes whose handshake completed, what the server presented (reported,
          never trusted); null otherwise. Present even when no SIP answered over TLS.
      type: dict
      contains:
        subject:
          description: Certificate subject, attributes in certificate order.
          type: str
          sample: CN=sip.example.org,O=Example
        issuer:
          description: Certificate issuer, attributes in certificate order.
          type: str
          sample: CN=Example CA,O=Example
        not_before:
          description: Start of validity, ISO 8601 UTC.
          type: str
          sample: '2026-01-01T00:00:00Z'
        not_after:
          description: End of validity, ISO 8601 UTC.
          type: str
          sample: '2027-01-01T00:00:00Z'
        sha256:
          description: SHA-256 fingerprint of the DER certificate, colon-separated hex.
          type: str
          sample: 'FE:FD:68:0C:05:AC:89:F3:FC:34:14:D2:FA:CA:66:22:B6:B1:72:87:C4:18:FC:12:CA:78:D2:BE:56:B0:2C:10'
        version:
          description: Negotiated TLS version.
          type: str
          sample: TLSv1.3
        cipher:
          description: Negotiated cipher suite.
          type: str
          sample: TLS_AES_256_GCM_SHA384
  sample:
    - target: 192.0.2.10
      address: 192.0.2.10
      family: ipv4
      port: 5060
      transport: udp
      state: open
      reason: sip-response
      rtt_ms: 0.84
      sip:
        status_code: 200
        reason_phrase: OK
        server: kamailio (5.6.3 (x86_64/linux))
        user_agent: null
        allow: []
        supported: []
      tls: null
counts:
  description: Number of results in each state (every state is listed, zeros included).
  returned: always
  type: dict
  sample:
    open: 1
    closed: 1
    filtered: 0
    open|filtered: 1
    unresolved: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpecError
from ansible_collections.sipguard.firewall.plugins.module_utils.sip import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROBE_PORTS,
    DEFAULT_RATE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FAMILIES,
    ProbeOptionError,
    count_states,
)
from ansible_collections.sipguard.firewall.plugins.module_utils.sip_prober import ProbeEngineError, probe_targets


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type="list", elements="str", required=True),
            ports=dict(type="list", elements="str", default=list(DEFAULT_PROBE_PORTS)),
            timeout=dict(type="float", default=DEFAULT_TIMEOUT),
            retries=dict(type="int", default=DEFAULT_RETRIES),
            rate=dict(type="float", default=DEFAULT_RATE),
            max_concurrency=dict(type="int", default=DEFAULT_MAX_CONCURRENCY),
            source=dict(type="str"),
            family=dict(type="str", choices=list(FAMILIES), default="any"),
        ),
        # Probing changes nothing on any host, so check mode probes as well.
        supports_check_mode=True,
    )
    params = module.params
    try:
        results = probe_targets(
            params["targets"],
            ports=params["ports"],
            timeout=params["timeout"],
            retries=params["retries"],
            rate=params["rate"],
            max_concurrency=params["max_concurrency"],
            source=params["source"],
            family=params["family"],
        )
    except (PortSpecError, ProbeOptionError, ProbeEngineError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, results=results, counts=count_states(results))


if __name__ == "__main__":
    main()
