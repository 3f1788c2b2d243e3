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


def _one_of(words):
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


def parse_specs(values, option, kinds, bare, noun, hint, empty="give at least one port, e.g. ['5060/udp', '5060/tcp']"):
    """The one PORT/KIND parser: ``['5060/udp', 5061]`` -> ordered, de-duplicated (port, kind) tuples.

    ``kinds`` are the allowed protocols or transports; ``bare`` is what a bare port expands to
    (None: a bare port is an error); ``hint`` ends the error message (what to write instead).
    """
    if isinstance(values, (str, int)):
        values = [values]
    specs = []
    for index, value in enumerate(values or []):
        where = "%s[%d]" % (option, index)
        if isinstance(value, tuple) and len(value) == 2:
            port_text, found = str(value[0]), (value[1],)
        else:
            text = str(value).strip().lower()
            if "/" in text:
                port_text, kind = text.split("/", 1)
                found = (kind,)
            elif bare is None:
                raise PortSpecError("%s: %r has no %s; write PORT/%s with %s, e.g. '5060/%s'"
                                    % (where, value, noun, noun.upper(), _one_of(kinds), kinds[0]))
            else:
                port_text, found = text, tuple(bare)
        for kind in found:
            if kind not in kinds:
                raise PortSpecError("%s: %r has %s %r; %s" % (where, value, noun, kind, hint))
        port = parse_port(port_text, where)
        for kind in found:
            if (port, kind) not in specs:
                specs.append((port, kind))
    if not specs:
        raise PortSpecError("%s: %s" % (option, empty))
    return specs


def parse_port_specs(values, option="ports"):
    """ufw_info's ports: ``5060/udp``, ``5060/tcp``; a bare port means both (as ``ufw allow 5060``)."""
    return [PortSpec(port, proto) for port, proto in
            parse_specs(values, option, PROTOCOLS, ("udp", "tcp"), "protocol", "use tcp or udp (or a bare port for both)")]


def format_port_spec(spec):
    return "%d/%s" % (spec.port, spec.proto)
