"""The SSH guard's sources, fed with outputs recorded from close-lab hosts (tests/unit/fixtures/ssh, by
``sglab.py exec HOST /usr/sbin/sshd -T`` and ``... ss -H -l -n -t -u -p``; the socket unit is the one
Debian 12's openssh-server 9.2p1 installs) and
the exposure lab's listener lists (tests/unit/fixtures/lab)."""

import os

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ssh_guard

import lab_fixtures as lab

SSH = os.path.join(lab.HERE, "fixtures", "ssh")


def fixture(name):
    with open(os.path.join(SSH, name)) as fh:
        return fh.read()


SOCKET_UNIT = fixture("debian12-openssh-server-9.2p1__lib_systemd_system_ssh.socket.txt")


@pytest.mark.parametrize("host, ports", [
    # sshd_config: Port 22, ListenAddress 0.0.0.0, ::, 0.0.0.0:2222, [::]:2222 -- 2222 is in no port line
    ("c-listen-port", {22, 2222}),
    ("c-ssh-two", {22, 2200}),
    ("c-inactive", {22}),
])
def test_sshd_config_ports_include_the_ports_inside_listenaddress(host, ports):
    text = fixture("%s__sshd_T.txt" % host)
    assert ssh_guard.ports_from_sshd_config(text) == ports


def test_the_port_lines_alone_miss_the_listenaddress_port():
    # the bug: only "port" lines were read, so the guard was [22] and enabling UFW blocked 2222
    text = fixture("c-listen-port__sshd_T.txt")
    port_lines = [line for line in text.splitlines() if line.startswith("port ")]
    assert ssh_guard.ports_from_sshd_config("\n".join(port_lines)) == {22}
    assert 2222 in ssh_guard.ports_from_sshd_config(text)


@pytest.mark.parametrize("host, ports", [
    ("c-listen-port", {22, 2222}),
    ("c-ssh-two", {22, 2200}),
])
def test_sshd_listening_sockets_are_found(host, ports):
    assert ssh_guard.ports_from_listeners(fixture("%s__ss.txt" % host)) == ports


def test_listeners_of_other_processes_are_not_ssh():
    # ssh-alt-port: sshd on 2222, kamailio on 5060/5061 (tcp and udp)
    assert ssh_guard.ports_from_listeners(lab.read("ssh-alt-port", "ss")) == {2222}
    assert ssh_guard.ports_from_listeners("") == set()
    assert ssh_guard.ports_from_listeners(None) == set()


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0:2222", ("0.0.0.0", 2222)),
    ("[::]:2222", ("::", 2222)),
    ("[fd53:1b7e:5060::21]:22", ("fd53:1b7e:5060::21", 22)),
    ("::", ("::", None)),
    ("fd53::1", ("fd53::1", None)),
    ("2222", (None, 2222)),
    ("0.0.0.0", ("0.0.0.0", None)),
    ("0.0.0.0:99999", ("0.0.0.0", None)),
    ("[::]:x", ("::", None)),
    ("", (None, None)),
])
def test_split_listen_address(text, expected):
    assert ssh_guard.split_listen_address(text) == expected


def test_the_socket_unit_of_the_package_listens_on_22():
    assert ssh_guard.ports_from_socket_unit([SOCKET_UNIT]) == {22}


def test_a_drop_in_resets_and_replaces_the_listen_streams():
    # systemd.socket(5): an empty ListenStream= resets the list; a drop-in an operator (or Ubuntu's
    # sshd-socket-generator) writes to move SSH to another port.
    dropin = "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\nListenStream=[::]:2222\n"
    assert ssh_guard.ports_from_socket_unit([SOCKET_UNIT, dropin]) == {2222}
    assert ssh_guard.ports_from_socket_unit([SOCKET_UNIT, "[Socket]\nListenStream=2200\n"]) == {22, 2200}
    # ListenStream outside [Socket] is not a socket
    assert ssh_guard.ports_from_socket_unit(["[Unit]\nListenStream=2300\n"]) == set()


def test_a_socket_unit_counts_when_enabled_or_held_by_systemd():
    assert ssh_guard.guard_ports(socket_units=[SOCKET_UNIT], socket_enabled=True).ports == [22]
    assert ssh_guard.guard_ports(socket_units=[SOCKET_UNIT], socket_enabled=False).ports == []


@pytest.mark.parametrize("value, port", [
    ("198.18.0.1 53412 198.18.0.21 22", 22),
    ("fd53:1b7e:5060::1 53412 fd53:1b7e:5060::21 2222", 2222),
    ("", None),
    (None, None),
    ("198.18.0.1 53412 198.18.0.21", None),
    ("198.18.0.1 53412 198.18.0.21 0", None),
])
def test_ssh_connection(value, port):
    assert ssh_guard.port_from_ssh_connection(value) == port


def test_the_guard_is_the_union_and_says_where_each_port_came_from():
    guard = ssh_guard.guard_ports(
        sshd_config=fixture("c-listen-port__sshd_T.txt"), ss_text=lab.read("ssh-alt-port", "ss"),
        ssh_connection="198.18.0.1 53412 198.18.0.21 22", named=[2200])
    assert guard.ports == [22, 2200, 2222]
    assert guard.sources() == {"22": ["SSH_CONNECTION", "sshd -T"], "2200": ["named"],
                               "2222": ["sshd -T", "listening"]}


def test_nothing_known_is_an_empty_guard():
    # sshd -T failed (None), no sshd listener, no SSH_CONNECTION (sudo's env_reset), nothing named
    assert ssh_guard.guard_ports(None, "", [], False, None, ()).ports == []


class FakeModule(object):
    def __init__(self, sshd_out, rc=0):
        self.sshd_out = sshd_out
        self.rc = rc
        self.calls = []

    def get_bin_path(self, name, opt_dirs=None):
        return "/usr/sbin/" + name

    def run_command(self, argv, environ_update=None):
        self.calls.append(argv)
        return self.rc, self.sshd_out, ""


def test_the_reader_runs_sshd_only_when_asked(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setattr(ssh_guard, "read_socket_units", lambda: ([], False))
    module = FakeModule(fixture("c-listen-port__sshd_T.txt"))
    cheap = ssh_guard.read_ssh_ports(module, "", named=[22], read_config=False)
    assert cheap.ports == [22] and module.calls == []
    full = ssh_guard.read_ssh_ports(module, "", named=[22])
    assert full.ports == [22, 2222] and module.calls == [["/usr/sbin/sshd", "-T"]]
    failed = ssh_guard.read_ssh_ports(FakeModule("garbage", rc=255), "")
    assert failed.ports == []


def test_socket_units_are_read_in_systemds_order(tmp_path):
    lib = tmp_path / "lib"
    etc = tmp_path / "etc"
    (lib / "ssh.socket.d").mkdir(parents=True)
    (etc / "ssh.socket.d").mkdir(parents=True)
    (lib / "ssh.socket").write_text(SOCKET_UNIT)
    (lib / "ssh.socket.d" / "10-port.conf").write_text("[Socket]\nListenStream=2200\n")
    (etc / "ssh.socket.d" / "10-port.conf").write_text("[Socket]\nListenStream=\nListenStream=2300\n")
    texts, enabled = ssh_guard.read_socket_units((str(etc), str(lib)))
    # the /etc drop-in overrides the /lib one of the same name and resets the unit's own 22
    assert ssh_guard.ports_from_socket_unit(texts) == {2300}
    assert enabled is False


def test_an_enabled_socket_unit_is_seen(tmp_path):
    etc = tmp_path / "etc"
    (etc / "sockets.target.wants").mkdir(parents=True)
    (etc / "ssh.socket").write_text(SOCKET_UNIT)
    (etc / "sockets.target.wants" / "ssh.socket").symlink_to(etc / "ssh.socket")
    texts, enabled = ssh_guard.read_socket_units((str(etc),))
    assert enabled is True and ssh_guard.guard_ports(socket_units=texts, socket_enabled=enabled).ports == [22]
