# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Port specifications shared by every sipguard module (``5060/udp``, ``5060``).

Pure functions only; runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

PROTOCOLS = ("tcp", "udp")

DEFAULT_PORTS = ("5060/udp", "5060/tcp", "5061/tcp")

PortSpec = collections.namedtuple("PortSpec", ["port", "proto"])


class PortSpecError(ValueError):
    """A port specification that cannot be used; the message names the bad value."""


def parse_port(value, where="port"):
    """Return an int port 1-65535 or raise PortSpecError naming ``where``."""
    text = str(value).strip()
    if not text.isdigit():
        raise PortSpecError("%s: %r is not a port number (1-65535)" % (where, value))
    port = int(text)
    if not 1 <= port <= 65535:
        raise PortSpecError("%s: %r is not a port (1-65535)" % (where, value))
    return port


def parse_port_specs(values, option="ports"):
    """Expand ``['5060/udp', '5061', 5062]`` into ordered, de-duplicated PortSpecs.

    A bare port means both tcp and udp (the way ``ufw allow 5060`` treats it).
    """
    if isinstance(values, (str, int)):
        values = [values]
    specs = []
    for index, value in enumerate(values or []):
        where = "%s[%d]" % (option, index)
        text = str(value).strip().lower()
        if "/" in text:
            port_text, proto = text.split("/", 1)
            if proto not in PROTOCOLS:
                raise PortSpecError(
                    "%s: %r has protocol %r; use tcp or udp (or a bare port for both)" % (where, value, proto)
                )
            protos = (proto,)
        else:
            port_text, protos = text, ("udp", "tcp")
        port = parse_port(port_text, where)
        for proto in protos:
            spec = PortSpec(port, proto)
            if spec not in specs:
                specs.append(spec)
    if not specs:
        raise PortSpecError("%s: give at least one port, e.g. ['5060/udp', '5060/tcp']" % option)
    return specs


def format_port_spec(spec):
    return "%d/%s" % (spec.port, spec.proto)
