# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSH ports a firewall change must keep reachable, from every place they can hide.

A port that sshd serves can be named in several places, and any one of them alone misses some:

- ``sshd -T`` prints ``port N`` for each ``Port`` and ``listenaddress ADDR:PORT`` for each
  ``ListenAddress`` (with its own port when the configuration gives one: ``ListenAddress
  0.0.0.0:2222`` serves 2222 although no ``Port`` line says so);
- the sockets sshd really listens on (``ss``), which also covers an sshd started with ``-p``;
- a systemd ``ssh.socket`` (socket activation): systemd, not sshd, holds the listening socket,
  on the ``ListenStream=`` of the unit and its drop-ins;
- ``SSH_CONNECTION`` of the connection the module runs under (absent under sudo's env_reset);
- the port Ansible connects to (``ansible_port``), which the caller passes in.

The union is guarded. The pure functions take the recorded outputs and files; ``read_ssh_ports``
is the thin reader that runs ``sshd -T`` and reads the unit files. Runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import parse_listeners

# Processes that hold an SSH listening socket: sshd itself (``sshd``, or ``sshd-session``/``sshd:``
# names some distributions give it), and systemd for a socket-activated ssh.socket.
SSHD_PROCESSES = ("sshd", "sshd-session")
SOCKET_UNITS = ("ssh.socket", "sshd.socket")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/run/systemd/generator",
             "/usr/lib/systemd/system", "/lib/systemd/system")


def _port(text):
    """``22`` -> 22; anything that is not a port 1-65535 -> None."""
    text = (text or "").strip()
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    return None


def split_listen_address(text):
    """``0.0.0.0:2222`` / ``[::]:2222`` / ``2222`` / ``::`` -> (address or None, port or None).

    The forms ``sshd -T`` prints for ``listenaddress`` and systemd accepts in ``ListenStream=``.
    A bare IPv6 address (``::``, ``fd00::1``) has no port.
    """
    text = (text or "").strip()
    if text.startswith("["):
        addr, _sep, rest = text[1:].partition("]")
        return addr, _port(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        addr, port = text.split(":")
        return addr or None, _port(port)
    if text.count(":") > 1:
        return text, None
    port = _port(text)
    if port is not None:
        return None, port
    return text or None, None


def ports_from_sshd_config(text):
    """TCP ports in ``sshd -T`` output: every ``port`` line and the port of every ``listenaddress``."""
    ports = set()
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        key = parts[0].lower()
        if key == "port":
            port = _port(parts[1])
        elif key == "listenaddress":
            port = split_listen_address(parts[1])[1]
        else:
            continue
        if port is not None:
            ports.add(port)
    return ports


def ports_from_listeners(ss_text, socket_ports=()):
    """TCP ports sshd listens on in ``ss -H -l -n -t -u -p`` output; with ``socket_ports`` (the
    ListenStream ports of ssh.socket) also those of them that systemd holds open."""
    ports = set()
    for item in parse_listeners(ss_text):
        if item["proto"] != "tcp":
            continue
        process = (item["process"] or "").lower()
        if process in SSHD_PROCESSES or process.startswith("sshd"):
            ports.add(item["port"])
        elif process == "systemd" and item["port"] in socket_ports:
            ports.add(item["port"])
    return ports


def ports_from_socket_unit(texts):
    """``ListenStream=`` ports of a socket unit and its drop-ins, read in the order systemd reads them
    (an empty ``ListenStream=`` resets the list, as systemd.socket(5) says)."""
    ports = []
    for text in texts:
        section = None
        for line in (text or "").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.startswith(";"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section != "Socket" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if key.strip() != "ListenStream":
                continue
            if not value.strip():
                ports = []
                continue
            port = split_listen_address(value)[1]
            if port is not None and port not in ports:
                ports.append(port)
    return set(ports)


def port_from_ssh_connection(value):
    """``SSH_CONNECTION`` is ``client-ip client-port server-ip server-port``."""
    parts = (value or "").split()
    if len(parts) == 4:
        return _port(parts[3])
    return None


class SshGuard(object):
    """The SSH ports to guard and where each was found (for the result and for error messages)."""

    def __init__(self):
        self.found = {}  # port -> [sources]

    def add(self, ports, source):
        for port in ports:
            if port is not None:
                self.found.setdefault(int(port), [])
                if source not in self.found[int(port)]:
                    self.found[int(port)].append(source)

    @property
    def ports(self):
        return sorted(self.found)

    def sources(self):
        return dict((str(port), list(found)) for port, found in sorted(self.found.items()))


def guard_ports(sshd_config=None, ss_text=None, socket_units=None, socket_enabled=False, ssh_connection=None,
                named=()):
    """Everything known about the host's SSH ports, as one SshGuard.

    ``sshd_config``: ``sshd -T`` output (None when it failed); ``ss_text``: listener list;
    ``socket_units``: the texts of ssh.socket and its drop-ins; ``socket_enabled``: the unit is
    enabled (its ports are guarded even when systemd does not hold them open right now);
    ``named``: ports the operator named (``ssh_ports``) or Ansible connects to.
    """
    guard = SshGuard()
    guard.add(named, "named")
    guard.add([port_from_ssh_connection(ssh_connection)], "SSH_CONNECTION")
    guard.add(ports_from_sshd_config(sshd_config), "sshd -T")
    socket_ports = ports_from_socket_unit(socket_units or [])
    guard.add(ports_from_listeners(ss_text, socket_ports), "listening")
    if socket_enabled:
        guard.add(socket_ports, "ssh.socket")
    return guard


# --------------------------------------------------------------------------- the thin reader

def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def read_socket_units(unit_dirs=UNIT_DIRS):
    """(texts of ssh.socket / sshd.socket and their drop-ins in systemd's order, enabled?)."""
    texts = []
    enabled = False
    for unit in SOCKET_UNITS:
        for directory in unit_dirs:
            text = _read(os.path.join(directory, unit))
            if text is not None:
                texts.append(text)
                break  # the first directory in systemd's search path wins
        dropins = {}
        for directory in reversed(unit_dirs):  # a later directory's drop-in of the same name is overridden
            for path in glob.glob(os.path.join(directory, unit + ".d", "*.conf")):
                dropins[os.path.basename(path)] = path
        for name in sorted(dropins):
            text = _read(dropins[name])
            if text is not None:
                texts.append(text)
        for directory in unit_dirs:  # enabled (or enabled by the vendor) for sockets.target
            if os.path.exists(os.path.join(directory, "sockets.target.wants", unit)):
                enabled = True
    return texts, enabled


def read_ssh_ports(module, ss_text, named=(), read_config=True):
    """The SshGuard of this host: ``ss_text`` is the listener list already read (ufw_model.COMMANDS
    ``ss``); ``sshd -T`` and the socket units are read when ``read_config``."""
    sshd_config = None
    units, enabled = [], False
    if read_config:
        sshd = module.get_bin_path("sshd", opt_dirs=["/usr/sbin", "/usr/local/sbin"])
        if sshd:
            rc, out, _err = module.run_command([sshd, "-T"], environ_update={"LC_ALL": "C"})
            if rc == 0:
                sshd_config = out
        units, enabled = read_socket_units()
    return guard_ports(sshd_config, ss_text, units, enabled, os.environ.get("SSH_CONNECTION"), named)
