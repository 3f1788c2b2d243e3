# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the probe host reaches an inventory host: its ``sipguard_addresses``, else its
``ansible_host``, else its inventory name when that is an address or resolves.

Its documentation is in probe_targets.yml next to this file.

The values come from inventories the collection does not control, so a value that fails to
template, is not a string, or is not an address or host name is never passed on: the host gets
no probe target and a warning names the host and the variable. Nothing here runs a command; the
targets only reach sip_probe's argument list and ``getaddrinfo``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence

from jinja2 import Undefined

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

_display = Display()

# RFC 1123 labels; underscores too, because getaddrinfo resolves them and internal zones use them.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_MAX_NAME = 253


def _address(text):
    """The IP literal in ``text`` (IPv6 with or without brackets, with a zone), or None."""
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        return None
    if "%" in literal and (":" not in literal or not _LABEL.match(literal.split("%", 1)[1])):
        return None
    return text


def _host_name(text):
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > _MAX_NAME or not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return text


def probe_target(value):
    """``value`` as a probe target (an IP literal or a host name, stripped), or None.

    Anything else -- not a string, empty, spaces or shell characters, a user@host -- is None.
    """
    if not isinstance(value, str):
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_NAME + 2:
        return None
    return _address(text) or _host_name(text)


def resolves(name):
    """Whether the controller resolves ``name`` (A or AAAA); a resolver error is False."""
    try:
        return bool(socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_DGRAM))
    except (OSError, UnicodeError, ValueError):
        return False


def _lookup(variables, name):
    """(defined, value, error) of one host variable; a value that fails to template is an error."""
    try:
        if name not in variables:
            return False, None, None
        value = variables.get(name)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # Jinja2's UndefinedError, Ansible's template errors and whatever a broken expression raises:
        # one host's broken variable must not stop the probe of the others.
        return True, None, "%s: %s" % (type(exc).__name__, exc)
    if isinstance(value, Undefined):
        # ansible-core 2.19 hands a failed template on as a marker (an Undefined) instead of raising.
        try:
            message = value._undefined_message  # pylint: disable=protected-access
        except Exception:  # pylint: disable=broad-exception-caught
            message = None
        return True, None, str(message or "undefined")
    return True, value, None


def select_targets(host, variables, resolver=resolves):
    """(targets, problem): the probe targets of the host whose variables are ``variables``.

    ``sipguard_addresses`` wins when it is defined (an empty list means: do not probe this host);
    then ``ansible_host`` (or its older name ``ansible_ssh_host``); then the inventory name, when it is an IP literal or ``resolver`` says it
    resolves. ``problem`` is None or a sentence that names the host and the variable to fix.
    """
    defined, addresses, error = _lookup(variables, "sipguard_addresses")
    if defined and (addresses is not None or error):
        if error:
            return [], "host %s: sipguard_addresses does not template (%s); the host is not probed" % (host, error)
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, (list, tuple)):
            return [], ("host %s: sipguard_addresses must be a list of addresses or host names, got a %s; "
                        "the host is not probed" % (host, _kind(addresses)))
        targets, bad = [], []
        for index, item in enumerate(addresses):
            target = probe_target(item)
            if target is None:
                bad.append("[%d] %s" % (index, _show(item)))
            elif target not in targets:
                targets.append(target)
        problem = None
        if bad:
            problem = ("host %s: sipguard_addresses%s not an IP address or host name; %s" % (
                host, " ".join(bad), "probing the others" if targets else "the host is not probed"))
        return targets, problem
    # ansible_ssh_host: the older name Ansible's ssh connection still reads after ansible_host.
    for variable in ("ansible_host", "ansible_ssh_host"):
        defined, ansible_host, error = _lookup(variables, variable)
        if not defined or (ansible_host is None and not error):
            continue
        if error:
            return [], "host %s: %s does not template (%s); the host is not probed" % (host, variable, error)
        target = probe_target(ansible_host)
        if target is None:
            return [], ("host %s: %s %s is not an IP address or host name; the host is not probed "
                        "(set sipguard_addresses)" % (host, variable, _show(ansible_host)))
        return [target], None
    target = probe_target(host)
    if target is not None and (_address(target) or resolver(target)):
        return [target], None
    return [], None


def _kind(value):
    if isinstance(value, Mapping):
        return "dict"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return "list"
    return type(value).__name__


def _show(value):
    """A short, printable form of a hostile value for a warning."""
    text = repr(str(value)) if isinstance(value, str) else "a %s" % _kind(value)
    return text if len(text) <= 80 else text[:77] + "..."


def probe_targets_filter(variables, host=None):
    """hostvars[HOST] -> the list of targets sip_probe should probe for HOST."""
    if not isinstance(variables, Mapping):
        raise AnsibleFilterError("probe_targets: the input must be a host's variables (hostvars[host]), got %s"
                                 % type(variables).__name__)
    if host is None:
        _defined, host, _error = _lookup(variables, "inventory_hostname")
    if not isinstance(host, str) or not host:
        raise AnsibleFilterError("probe_targets: give host= (the inventory host name); the input has no "
                                 "inventory_hostname")
    targets, problem = select_targets(str(host), variables)
    if problem:
        _display.warning("sipguard probe targets: %s" % problem)
    return targets


class FilterModule(object):
    def filters(self):
        return {"probe_targets": probe_targets_filter}
