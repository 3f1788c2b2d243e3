"""sipguard lab: real Linux hosts made of network namespaces, no Docker.

Each lab host is a network namespace ``sg-<name>`` with a veth on the lab bridge
``sgbr0``, an IPv4 address from 198.18.0.0/24 (RFC 2544) and an IPv6 ULA address,
its own UFW configuration (``/etc/netns/sg-<name>/ufw`` and ``.../default``, which
``ip netns exec`` bind-mounts over ``/etc/ufw`` and ``/etc/default``), its own sshd
(config under ``/etc/netns/sg-<name>/ssh``, so ``sshd -T`` inside the host sees it),
and optionally a real kamailio on 5060/udp+tcp for IPv4 and IPv6.

Like a real machine, each host has its own process table and its own ``/run``: the host's
processes (sshd and every SSH session, so every Ansible module; kamailio; anything a test starts
with ``host_argv``) run under a small init (PID 1 of a PID namespace of the host's own, in a
mount namespace with its own ``/proc`` and a tmpfs on ``/run``). So ``ss -p`` and ``/proc`` on a
lab host see that host's processes only, and ufw's ``/run/ufw.lock`` and iptables'
``/run/xtables.lock`` are the host's own, not one lock for the whole lab. Killing the init is a
power cut: every process of the host dies and ``/run`` is gone, as at a reboot.

Safety: every ufw/iptables command runs through ``ip netns exec sg-*``; the
functions that run them refuse a namespace that is not a lab namespace, and refuse to
run ufw when the host's ``/etc/netns`` overlay is missing (ufw would then edit the
machine's own /etc/ufw).

Usage::

    sglab.py up SCENARIO.yml [--workdir DIR]   # create or refresh the lab (idempotent)
    sglab.py down [--workdir DIR]              # remove every lab namespace and file
    sglab.py status [--workdir DIR]
    sglab.py exec HOST -- CMD ARGS...          # run a command inside a lab host (its processes, its /run)
    sglab.py record OUTDIR                     # record what ufw_info reads, for unit tests
    sglab.py probe [--from VANTAGE] -- TARGETS --ports 5060/udp ...   # SIP probes from a vantage
"""

import argparse
import concurrent.futures
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml

PREFIX = "sg-"
BRIDGE = "sgbr0"
NET4 = ipaddress.ip_network("198.18.0.0/24")
NET6 = ipaddress.ip_network("fd53:1b7e:5060::/64")
CONTROLLER_INDEX = 1
FIRST_HOST_INDEX = 11
MAX_HOSTS = 200
DEFAULT_WORKDIR = "/var/tmp/sipguard-lab"
NETNS_ETC = "/etc/netns"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
LAB_CONTAINER_NET4 = ipaddress.ip_network("172.30.0.0/24")

KAMAILIO_CFG = """#!KAMAILIO
# sipguard lab SIP server: answers OPTIONS with 200, everything else with 403.
# (5061 is plain TCP: it only has to accept connections.)
debug=1
log_stderror=no
fork=yes
children=1
tcp_children=1
auto_aliases=no
{listen}
server_header="Server: kamailio (sipguard lab {name})"
mpath="{mpath}"
loadmodule "sl.so"
request_route {{
    if (method == "OPTIONS") {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("403", "Forbidden");
    exit;
}}
"""


class LabError(RuntimeError):
    pass


def log(msg):
    print("sglab: %s" % msg, file=sys.stderr, flush=True)


def run(argv, check=True, timeout=60):
    """Run an argument list (never a shell string)."""
    proc = subprocess.run(
        argv,
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise LabError("%s failed (rc=%s): %s" % (" ".join(argv), proc.returncode, (proc.stderr or "").strip()))
    return proc


def _check_ns(ns):
    if not ns.startswith(PREFIX):
        raise LabError("refusing to act on namespace %r: lab namespaces start with %r" % (ns, PREFIX))


# PID 1 of a lab host: makes the host's /run, then reaps the orphans of the host (as init does).
# The marker in its argv is how init_pid() finds it among the namespace's processes.
INIT_MARK = "sglab-host-init"
INIT_CODE = """
import os, signal, subprocess, sys, time
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run"], check=True)
os.makedirs("/run/sshd", mode=0o755)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("ready", flush=True)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(1)
"""


def init_pid(ns):
    """The host's init (its PID 1) as a PID of this machine, or None (no init: a vantage, a container)."""
    for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                argv = fh.read().split(b"\0")
            with open("/proc/%s/status" % pid) as fh:
                nspid = [ln.split()[1:] for ln in fh if ln.startswith("NSpid:")]
        except OSError:
            continue
        if INIT_MARK.encode() in argv and nspid and nspid[0][-1] == "1":
            return int(pid)
    return None


def start_init(ns):
    """Boot the host: a new init with a fresh /run (the host's processes, if any, must be gone)."""
    _check_ns(ns)
    if init_pid(ns) is not None:
        raise LabError("%s already has an init" % ns)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--pid", "--fork", "--mount",
                             "--propagation", "private", "--mount-proc", sys.executable, "-c", INIT_CODE, INIT_MARK],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise LabError("%s: the host's init did not start: %s" % (ns, proc.stderr.read().decode(errors="replace")))
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.time() + 5
    while init_pid(ns) is None:
        if time.time() > deadline:
            raise LabError("%s: the host's init is not found" % ns)
        time.sleep(0.05)


def host_argv(ns, argv):
    """``argv`` run inside lab host ``ns``: in its network, PID and mount namespaces when it has an init
    (a lab host), else through ``ip netns exec`` (a vantage, a container, a host being built)."""
    _check_ns(ns)
    pid = init_pid(ns)
    if pid is None:
        return ["ip", "netns", "exec", ns] + list(argv)
    return ["nsenter", "--target", str(pid), "--net", "--pid", "--mount", "--"] + list(argv)


def nsexec(ns, argv, **kw):
    return run(host_argv(ns, argv), **kw)


def ufw(ns, args, **kw):
    """ufw inside a lab host; refuses when the host's /etc overlay is missing."""
    _check_ns(ns)
    for sub in ("ufw", "default"):
        if not os.path.isdir(os.path.join(NETNS_ETC, ns, sub)):
            raise LabError("%s has no %s/%s overlay; refusing to run ufw" % (ns, NETNS_ETC, sub))
    return nsexec(ns, ["ufw"] + list(args), **kw)


def list_lab_namespaces():
    out = run(["ip", "-j", "netns", "list"], check=False).stdout or "[]"
    try:
        names = [n["name"] for n in json.loads(out)]
    except ValueError:
        names = []
    return [n for n in names if n.startswith(PREFIX)]


# --------------------------------------------------------------------------- scenario

def load_scenario(path):
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    defaults = data.get("defaults") or {}
    hosts = []
    names = set()
    for index, raw in enumerate(data.get("hosts") or []):
        host = dict(defaults)
        host.update(raw)
        name = host.get("name")
        if not name or not all(c.isalnum() or c == "-" for c in name) or len(name) > 24:
            raise LabError("hosts[%d]: name %r must be 1-24 letters, digits or '-'" % (index, name))
        if name in names:
            raise LabError("hosts[%d]: duplicate host name %r" % (index, name))
        names.add(name)
        host["index"] = FIRST_HOST_INDEX + index
        hosts.append(host)
    for count in range(int(data.get("generate", {}).get("count", 0))):
        template = dict(defaults)
        template.update(data["generate"].get("host", {}))
        template["name"] = "%s%02d" % (data["generate"].get("prefix", "node"), count + 1)
        template["index"] = FIRST_HOST_INDEX + len(hosts)
        hosts.append(template)
    if len(hosts) > MAX_HOSTS:
        raise LabError("at most %d lab hosts (got %d)" % (MAX_HOSTS, len(hosts)))
    vantages = []
    for index, raw in enumerate(data.get("vantages") or []):
        vantage = dict(raw)
        vantage["index"] = int(vantage.get("index", 250 - index))
        vantages.append(vantage)
    return {"hosts": hosts, "vantages": vantages, "path": os.path.abspath(path)}


def addr4(index):
    return str(NET4.network_address + index)


def addr6(index):
    return str(NET6.network_address + index)


def host_digest(host):
    """The scenario entry plus the host's UFW files now: a host a test changed is rebuilt."""
    h = hashlib.sha256(json.dumps(host, sort_keys=True).encode())
    etc = os.path.join(NETNS_ETC, PREFIX + host["name"], "ufw")
    for name in ("user.rules", "user6.rules", "ufw.conf", "before.rules", "before6.rules", "after.rules",
                 "after6.rules"):
        try:
            with open(os.path.join(etc, name), "rb") as fh:
                h.update(fh.read())
        except OSError:
            h.update(b"-")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- network

def ensure_bridge():
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    # Without this, neighbour solicitations to a new host's solicited-node group are not forwarded
    # until the host's MLD report is seen: its first IPv6 packets get lost.
    run(["ip", "link", "set", BRIDGE, "type", "bridge", "mcast_snooping", "0"])
    run(["ip", "link", "set", BRIDGE, "up"])
    have = run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    for addr, plen, extra in ((addr4(CONTROLLER_INDEX), NET4.prefixlen, []),
                              (addr6(CONTROLLER_INDEX), NET6.prefixlen, ["nodad"])):
        if " %s/%d " % (addr, plen) not in have:
            run(["ip", "addr", "add", "%s/%d" % (addr, plen), "dev", BRIDGE] + extra)


def remove_bridge():
    if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        run(["ip", "link", "del", BRIDGE], check=False)


def _free_link(name, timeout=5.0):
    """Netns deletion tears its veth pairs down asynchronously: wait for (or remove) a leftover."""
    deadline = time.time() + timeout
    while run(["ip", "link", "show", name], check=False).returncode == 0:
        run(["ip", "link", "del", name], check=False)
        if time.time() > deadline:
            raise LabError("link %s is still there after %.0fs" % (name, timeout))
        time.sleep(0.05)


def create_netns(ns, index, veth):
    _free_link(veth)
    # A rebuilt host has a new MAC: stale neighbour entries would delay its first packets by seconds.
    for addr in (addr4(index), addr6(index)):
        run(["ip", "neigh", "flush", "to", addr, "dev", BRIDGE], check=False)
    run(["ip", "netns", "add", ns])
    nsexec(ns, ["ip", "link", "set", "lo", "up"])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", BRIDGE])
    run(["ip", "link", "set", veth, "up"])
    nsexec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_ra=0"])
    nsexec(ns, ["ip", "link", "set", "eth0", "up"])
    nsexec(ns, ["ip", "addr", "add", "%s/%d" % (addr4(index), NET4.prefixlen), "dev", "eth0"])
    nsexec(ns, ["ip", "addr", "add", "%s/%d" % (addr6(index), NET6.prefixlen), "dev", "eth0", "nodad"])
    nsexec(ns, ["ip", "route", "add", "default", "via", addr4(CONTROLLER_INDEX)])


def kill_namespace_processes(ns):
    """Power the host off: SIGKILL to every process in its network namespace (its init first, which
    takes the host's whole PID namespace with it), then wait until they are gone."""
    pid = init_pid(ns)
    pids = ([str(pid)] if pid else []) + run(["ip", "netns", "pids", ns], check=False).stdout.split()
    alive = []
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
            alive.append(pid)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.time() + 5
    while alive and time.time() < deadline:
        alive = [p for p in alive if os.path.exists("/proc/%s" % p)]
        time.sleep(0.02)


def destroy_namespace(ns, workdir=None):
    _check_ns(ns)
    stop_docker(ns, workdir or DEFAULT_WORKDIR)
    kill_namespace_processes(ns)
    run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)


# --------------------------------------------------------------------------- hosts

def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def prepare_etc(ns, host, workdir):
    """Give the host its own /etc/ufw, /etc/default and /etc/ssh."""
    etc = os.path.join(NETNS_ETC, ns)
    shutil.rmtree(etc, ignore_errors=True)
    os.makedirs(etc)
    shutil.copytree("/etc/default", os.path.join(etc, "default"), symlinks=True)
    ufw_dir = os.path.join(etc, "ufw")
    if host.get("ufw_installed", True):
        shutil.copytree("/etc/ufw", ufw_dir, symlinks=True)
        # Pristine package rules, whatever the machine's own /etc/ufw holds.
        for name in ("before.rules", "before6.rules", "after.rules", "after6.rules", "user.rules", "user6.rules"):
            shutil.copy2(os.path.join("/usr/share/ufw/iptables", name), os.path.join(ufw_dir, name))
        shutil.copy2("/usr/share/ufw/ufw.conf", os.path.join(ufw_dir, "ufw.conf"))
        ipv6 = "yes" if host.get("ipv6", True) else "no"
        path = os.path.join(etc, "default", "ufw")
        with open(path) as fh:
            lines = [("IPV6=%s" % ipv6) if ln.startswith("IPV6=") else ln for ln in fh.read().splitlines()]
        write(path, "\n".join(lines) + "\n")
    else:
        os.makedirs(ufw_dir)  # an empty /etc/ufw: the host has no UFW configuration
    for item in host.get("files") or []:
        write(os.path.join(etc, item["path"]), item["content"])
    if host.get("docker"):
        # dockerd writes /etc/docker/key.json: the host's own /etc/docker keeps it out of the machine's.
        os.makedirs(os.path.join(etc, "docker"))
    for key, fname in (("before_rules", "before.rules"), ("before6_rules", "before6.rules"),
                       ("after_rules", "after.rules"), ("after6_rules", "after6.rules")):
        if host.get(key):
            path = os.path.join(ufw_dir, fname)
            with open(path) as fh:
                text = fh.read()
            marker = "# End required lines\n"
            if marker not in text:
                raise LabError("%s: no '%s' marker in %s" % (host["name"], marker.strip(), fname))
            text = text.replace(marker, marker + "\n".join(host[key]) + "\n", 1)
            write(path, text)
    ssh = os.path.join(etc, "ssh")
    os.makedirs(ssh)
    key = os.path.join(ssh, "ssh_host_ed25519_key")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", ns, "-f", key])
    port = int(host.get("ssh_port", 22))
    write(os.path.join(ssh, "sshd_config"), "\n".join([
        "# sipguard lab host %s" % host["name"],
        "Port %d" % port,
    ] + ["Port %d" % int(extra) for extra in host.get("ssh_extra_ports", [])] + [
        # listen_addresses: sshd's ListenAddress values, which may carry their own port (0.0.0.0:2222).
        "ListenAddress %s" % addr for addr in host.get("listen_addresses", ["0.0.0.0", "::"])
    ] + [
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PidFile /run/sipguard-lab-%s-sshd.pid" % ns,
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "AuthorizedKeysFile %s" % os.path.join(workdir, "id_ed25519.pub"),
        "Subsystem sftp internal-sftp",
        "AcceptEnv LANG LC_*",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "",
    ]))


def kamailio_listen(addresses):
    lines = []
    for addr in addresses:
        addr = ("[%s]" % addr) if ":" in addr else addr
        # 5061/tcp is plain TCP here: a listener, so a probe sees "open" exactly when admitted.
        for proto, port in (("udp", 5060), ("tcp", 5060), ("tcp", 5061)):
            lines.append("listen=%s:%s:%d" % (proto, addr, port))
    return "\n".join(lines)


def start_kamailio(ns, name, workdir, addresses):
    hostdir = os.path.join(workdir, "hosts", name)
    os.makedirs(hostdir, exist_ok=True)
    cfg = os.path.join(hostdir, "kamailio-%s.cfg" % ns)
    write(cfg, KAMAILIO_CFG.format(listen=kamailio_listen(addresses), name=name, mpath=KAMAILIO_MODULES))
    rundir = os.path.join(hostdir, "kamailio-run-%s" % ns)
    os.makedirs(rundir, exist_ok=True)
    pidfile = os.path.join(rundir, "kamailio.pid")
    if os.path.exists(pidfile):
        # Left by a kamailio of an earlier build (the host's processes were killed): kamailio refuses to
        # start (exit 255, nothing on stderr) when the pid in it is alive, and pids get reused.
        os.remove(pidfile)
    nsexec(ns, ["kamailio", "-f", cfg, "-P", pidfile, "-Y", rundir,
                "-m", "16", "-M", "4"], timeout=30)


def setup_container(ns, host, workdir):
    """A Docker-style 'container': a nested namespace behind a DNAT on the host."""
    cns = ns + "-c"
    run(["ip", "netns", "add", cns])
    # Network plumbing from the machine's side (ip -n): the host's own /run has no /run/netns.
    nsexec(cns, ["ip", "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "link", "add", "ctr0", "type", "veth", "peer", "name", "eth0", "netns", cns])
    gw = str(LAB_CONTAINER_NET4.network_address + 1)
    caddr = str(LAB_CONTAINER_NET4.network_address + 2)
    nsexec(ns, ["ip", "addr", "add", "%s/24" % gw, "dev", "ctr0"])
    nsexec(ns, ["ip", "link", "set", "ctr0", "up"])
    nsexec(cns, ["ip", "addr", "add", "%s/24" % caddr, "dev", "eth0"])
    nsexec(cns, ["ip", "link", "set", "eth0", "up"])
    nsexec(cns, ["ip", "route", "add", "default", "via", gw])
    nsexec(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    start_kamailio(cns, host["name"] + "-container", workdir, ["0.0.0.0"])


# --------------------------------------------------------------------------- real Docker

DOCKER_IMAGE = "sipguard-lab/kamailio:1"
# The container's kamailio listens on 5060 and 5070: the lab publishes 5060/udp to 5070 (Docker maps the
# port) and 5060/tcp to 5060.
DOCKER_KAMAILIO_CFG = KAMAILIO_CFG.format(
    listen="\n".join("listen=%s:0.0.0.0:%d" % (p, n) for n in (5060, 5070) for p in ("udp", "tcp")),
    name="docker container", mpath=KAMAILIO_MODULES).replace("log_stderror=no", "log_stderror=yes")
DOCKER_PUBLISH = ["-p", "5060:5070/udp", "-p", "5060:5060/tcp"]
# Run inside `ip netns exec` (its own mount namespace, with /sys remounted for the network namespace, which
# hides the cgroup mounts dockerd needs): mount them again there, then run dockerd with every path of its
# own under the lab directory.
DOCKERD_WRAPPER = """#!/bin/sh
set -e
d="$1"
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
    if grep -qw "$c" /proc/cgroups; then mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; fi
done
exec dockerd --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/docker.pid" -H "unix://$d/docker.sock" \
    --storage-driver vfs --cgroup-parent "$2" >"$d/dockerd.log" 2>&1
"""


def docker_dir(ns, workdir):
    return os.path.join(workdir, "docker", ns)


def docker_cgroup(ns):
    """The cgroup parent of the lab host's containers: how their processes are found when dockerd is gone."""
    return "sipguard-lab-" + ns


def kill_containers(ns):
    """Kill the processes of the lab host's containers: they live in network namespaces of their own,
    so ending the host's processes (dockerd, containerd, the shims) leaves them running."""
    mark = ":/%s/" % docker_cgroup(ns)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % name) as fh:
                if mark in fh.read():
                    os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def docker_cli(ns, workdir, args, **kw):
    """The docker client of the lab host's own dockerd (its socket under the lab directory)."""
    return run(["/usr/bin/docker", "-H", "unix://%s/docker.sock" % docker_dir(ns, workdir)] + list(args), **kw)


def docker_rootfs(workdir):
    """A tarball of a root filesystem with kamailio and the libraries it loads (ldd), built once per lab
    directory; ``docker import`` makes the image from it (no registry)."""
    path = os.path.join(workdir, "docker", "kamailio-rootfs.tar")
    if os.path.exists(path):
        return path
    stage = path + ".d"
    shutil.rmtree(stage, ignore_errors=True)
    binaries = ["/usr/sbin/kamailio", os.path.join(KAMAILIO_MODULES, "sl.so")]
    libs = set()
    for binary in binaries:
        for word in run(["ldd", binary]).stdout.split():
            if word.startswith("/"):
                libs.add(word)
    for src in sorted(set(binaries) | libs | {"/etc/protocols"}):
        dst = os.path.join(stage, src.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.realpath(src), dst)
    for name in ("tmp", "run"):
        os.makedirs(os.path.join(stage, name), exist_ok=True)
    write(os.path.join(stage, "etc", "kamailio.cfg"), DOCKER_KAMAILIO_CFG)
    run(["tar", "-C", stage, "-cf", path + ".tmp", "."])
    os.rename(path + ".tmp", path)
    shutil.rmtree(stage, ignore_errors=True)
    return path


def start_docker(ns, workdir):
    """dockerd inside the lab host (its own data root, exec root, pid file and socket under the lab
    directory), the kamailio image imported, and the container published with ``docker run -p``."""
    state = docker_dir(ns, workdir)
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state)
    wrapper = os.path.join(workdir, "docker", "start-dockerd.sh")
    write(wrapper, DOCKERD_WRAPPER, 0o755)
    _check_ns(ns)
    subprocess.Popen(["ip", "netns", "exec", ns, wrapper, state, docker_cgroup(ns)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    while docker_cli(ns, workdir, ["version"], check=False).returncode != 0:
        if time.time() > deadline:
            raise LabError("dockerd in %s did not answer within 30s: see %s/dockerd.log" % (ns, state))
        time.sleep(0.1)
    docker_cli(ns, workdir, ["import", docker_rootfs(workdir), DOCKER_IMAGE])
    docker_cli(ns, workdir, ["run", "-d", "--name", "sip"] + DOCKER_PUBLISH + [
        DOCKER_IMAGE, "/usr/sbin/kamailio", "-DD", "-E", "-f", "/etc/kamailio.cfg", "-Y", "/tmp", "-m", "16",
        "-M", "4"])


def stop_docker(ns, workdir):
    """Remove the containers and stop the lab host's dockerd (its containers live in namespaces of their
    own, which killing the host's processes would not reach)."""
    state = docker_dir(ns, workdir)
    if not os.path.exists(os.path.join(state, "docker.pid")):
        kill_containers(ns)  # dockerd gone (or never there): its containers may still run
        return
    ids = docker_cli(ns, workdir, ["ps", "-aq"], check=False).stdout.split()
    if ids:
        docker_cli(ns, workdir, ["rm", "-f"] + ids, check=False)
    try:
        with open(os.path.join(state, "docker.pid")) as fh:
            pid = int(fh.read().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            time.sleep(0.05)
    except (OSError, ValueError):
        pass
    kill_containers(ns)
    shutil.rmtree(state, ignore_errors=True)


def wait_tcp(addr, port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((addr, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise LabError("sshd on [%s]:%d did not come up within %.0fs" % (addr, port, timeout))


def build_host(host, workdir):
    name = host["name"]
    ns = PREFIX + name
    index = host["index"]
    destroy_namespace(ns, workdir)
    destroy_namespace(ns + "-c", workdir)
    prepare_etc(ns, host, workdir)
    create_netns(ns, index, "sgv%d" % index)
    start_init(ns)
    for args in host.get("ufw") or []:
        ufw(ns, [str(a) for a in args])
    if host.get("ufw_installed", True) and host.get("enable", True):
        ufw(ns, ["--force", "enable"])
    if host.get("container"):
        setup_container(ns, host, workdir)
    if host.get("docker"):
        start_docker(ns, workdir)
    for args in host.get("iptables") or []:
        nsexec(ns, ["iptables"] + [str(a) for a in args])
    for args in host.get("ip6tables") or []:
        nsexec(ns, ["ip6tables"] + [str(a) for a in args])
    # Anything else a real admin could have run (nft, iptables-legacy, ...): argument lists, in order.
    for args in host.get("commands") or []:
        nsexec(ns, [str(a) for a in args])
    if host.get("sip", False):
        # The lab address, not [::]: kamailio's TCP [::] bind collides with 0.0.0.0 (dual-stack).
        start_kamailio(ns, name, workdir, ["0.0.0.0", addr6(index)])
    nsexec(ns, ["/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config"])
    wait_tcp(addr4(index), int(host.get("ssh_port", 22)))
    try:  # warm the IPv6 neighbour entry; the host's firewall may well drop this (IPV6=no)
        socket.create_connection((addr6(index), int(host.get("ssh_port", 22))), timeout=1).close()
    except OSError:
        pass
    write(os.path.join(workdir, "hosts", name, "digest"), host_digest(host))
    return name


def build_vantage(vantage):
    ns = PREFIX + vantage["name"]
    if ns in list_lab_namespaces():
        have = nsexec(ns, ["ip", "-o", "addr", "show", "dev", "eth0"], check=False).stdout
        if " %s/" % addr4(vantage["index"]) in have:
            return
    destroy_namespace(ns)
    os.makedirs(os.path.join(NETNS_ETC, ns), exist_ok=True)
    create_netns(ns, vantage["index"], "sgv%d" % vantage["index"])


def host_is_current(host, workdir):
    ns = PREFIX + host["name"]
    path = os.path.join(workdir, "hosts", host["name"], "digest")
    if ns not in list_lab_namespaces() or not os.path.exists(path) or init_pid(ns) is None:
        return False
    with open(path) as fh:
        if fh.read().strip() != host_digest(host):
            return False
    running = docker_cli(ns, workdir, ["ps", "--format", "{{.Names}}"], check=False).stdout.split() \
        if host.get("docker") else ["sip"]
    if "sip" not in running:
        return False  # dockerd or the container is gone
    try:
        with socket.create_connection((addr4(host["index"]), int(host.get("ssh_port", 22))), timeout=1):
            return True
    except OSError:
        return False


def ensure_key(workdir):
    key = os.path.join(workdir, "id_ed25519")
    if not os.path.exists(key):
        os.makedirs(workdir, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sipguard-lab", "-f", key])
    return key


PLAIN_INVENTORY_VARS = ("ansible_user", "ansible_ssh_private_key_file", "ansible_ssh_common_args",
                        "ansible_python_interpreter")


def write_inventory(scenario, workdir, key):
    hosts = {}
    for host in scenario["hosts"]:
        hosts[host["name"]] = {
            "ansible_host": addr4(host["index"]),
            "ansible_port": int(host.get("ssh_port", 22)),
            "sipguard_addresses": [addr4(host["index"]), addr6(host["index"])],
            "sipguard_lab_netns": PREFIX + host["name"],
        }
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": key,
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                           "-o LogLevel=ERROR",
                "ansible_python_interpreter": "/usr/bin/python3",
                "sipguard_lab_controller_ipv4": addr4(CONTROLLER_INDEX),
                "sipguard_lab_controller_ipv6": addr6(CONTROLLER_INDEX),
            },
            "children": {"sipguard_lab": {"hosts": hosts}},
        }
    }
    path = os.path.join(workdir, "inventory.yml")
    write(path, "# written by tests/lab/sglab.py from %s\n" % scenario["path"]
          + yaml.safe_dump(inventory, sort_keys=False))
    # The same hosts as a new user writes them: where to connect and how, none of our variables.
    plain = {"all": {"vars": {k: inventory["all"]["vars"][k] for k in PLAIN_INVENTORY_VARS},
                     "hosts": {name: {k: v for k, v in host.items() if k in ("ansible_host", "ansible_port")}
                               for name, host in hosts.items()}}}
    write(os.path.join(workdir, "inventory-plain.yml"), "# written by tests/lab/sglab.py from %s: ansible_host "
          "only\n" % scenario["path"] + yaml.safe_dump(plain, sort_keys=False))
    lab = {
        "scenario": scenario["path"],
        "hosts": {h["name"]: {"netns": PREFIX + h["name"], "ipv4": addr4(h["index"]), "ipv6": addr6(h["index"]),
                              "ssh_port": int(h.get("ssh_port", 22)), "spec": h} for h in scenario["hosts"]},
        "vantages": {v["name"]: {"netns": PREFIX + v["name"], "ipv4": addr4(v["index"]),
                                 "ipv6": addr6(v["index"])} for v in scenario["vantages"]},
        "controller": {"ipv4": addr4(CONTROLLER_INDEX), "ipv6": addr6(CONTROLLER_INDEX)},
        "inventory": path,
        "inventory_plain": os.path.join(workdir, "inventory-plain.yml"),
        "key": key,
    }
    write(os.path.join(workdir, "lab.json"), json.dumps(lab, indent=2, sort_keys=True))
    return path


def up(scenario_path, workdir, jobs=8):
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces); run as root")
    scenario = load_scenario(scenario_path)
    os.makedirs(workdir, exist_ok=True)
    for name in ("inventory.yml", "lab.json"):  # a failed `up` must not leave the old lab's inventory
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    key = ensure_key(workdir)
    wanted = {PREFIX + h["name"] for h in scenario["hosts"]}
    wanted |= {PREFIX + h["name"] + "-c" for h in scenario["hosts"] if h.get("container")}
    wanted |= {PREFIX + v["name"] for v in scenario["vantages"]}
    stale = [ns for ns in list_lab_namespaces() if ns not in wanted]
    if stale:
        log("removing %d stale namespaces" % len(stale))
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda ns: destroy_namespace(ns, workdir), stale))
    ensure_bridge()
    for vantage in scenario["vantages"]:
        build_vantage(vantage)
    todo = [h for h in scenario["hosts"] if not host_is_current(h, workdir)]
    log("%d hosts, %d to (re)build" % (len(scenario["hosts"]), len(todo)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(build_host, h, workdir): h["name"] for h in todo}
        errors = []
        for fut in concurrent.futures.as_completed(futures):
            try:
                fut.result()
            except Exception as exc:  # report every failing host, not just the first
                errors.append("%s: %s" % (futures[fut], exc))
    if errors:
        raise LabError("lab hosts failed:\n  " + "\n  ".join(errors))
    for vantage in scenario["vantages"]:
        nsexec(PREFIX + vantage["name"], ["ip", "neigh", "flush", "dev", "eth0"], check=False)
    inventory = write_inventory(scenario, workdir, key)
    log("lab ready: %d hosts; inventory %s" % (len(scenario["hosts"]), inventory))
    return inventory


def down(workdir):
    for ns in list_lab_namespaces():
        destroy_namespace(ns, workdir)
    for name in os.listdir(NETNS_ETC) if os.path.isdir(NETNS_ETC) else []:
        if name.startswith(PREFIX):
            shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)
    remove_bridge()
    shutil.rmtree(os.path.join(workdir, "hosts"), ignore_errors=True)
    for name in ("inventory.yml", "lab.json"):
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    log("lab removed")


def load_lab(workdir):
    path = os.path.join(workdir, "lab.json")
    if not os.path.exists(path):
        raise LabError("no lab at %s; run 'sglab.py up SCENARIO' first" % workdir)
    with open(path) as fh:
        return json.load(fh)


def _model():
    """The collection's UFW model, imported from this checkout (for COMMANDS and FILES)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    shim = os.path.join(DEFAULT_WORKDIR, "collections")
    link = os.path.join(shim, "ansible_collections", "sipguard", "firewall")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) != root:
        os.remove(link)
    if not os.path.islink(link):
        os.symlink(root, link)
    if shim not in sys.path:
        sys.path.insert(0, shim)
    from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_model
    return ufw_model


def record(outdir, workdir):
    """Record, from each lab host, exactly the commands and files ufw_info reads.

    Files are named ``<host>__<key>.txt`` after the keys of ufw_model.COMMANDS and FILES
    (``.bin`` for a file that is not UTF-8);
    ``ufw status numbered`` is recorded too, as an oracle for rule numbering.
    """
    model = _model()
    lab = load_lab(workdir)
    os.makedirs(outdir, exist_ok=True)
    commands = dict(model.COMMANDS)
    commands["ufw_status_numbered"] = ["ufw", "status", "numbered"]
    for name, info in sorted(lab["hosts"].items()):
        ns = info["netns"]
        for label, argv in sorted(commands.items()):
            proc = nsexec(ns, argv, check=False)
            write(os.path.join(outdir, "%s__%s.txt" % (name, label)), proc.stdout)
        for label, path in sorted(model.FILES.items()):
            # Bytes as they are: a file that is not UTF-8 is a case the model must handle.
            _check_ns(ns)
            proc = subprocess.run(host_argv(ns, ["cat", path]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, check=False, timeout=60)
            if proc.returncode == 0:
                # A file that is not UTF-8 is kept as .bin: ansible-test sanity reads every .txt as UTF-8.
                try:
                    proc.stdout.decode("utf-8")
                    ext = "txt"
                except UnicodeDecodeError:
                    ext = "bin"
                with open(os.path.join(outdir, "%s__%s.%s" % (name, label, ext)), "wb") as fh:
                    fh.write(proc.stdout)
        apps = nsexec(ns, ["ls", model.APPLICATIONS_DIR], check=False).stdout.split()
        for app in apps:
            if app.startswith("ufw-"):
                continue  # ufw's own stock profiles: identical on every host
            proc = nsexec(ns, ["cat", os.path.join(model.APPLICATIONS_DIR, app)], check=False)
            write(os.path.join(outdir, "%s__applications.d__%s.txt" % (name, app)), proc.stdout)
    log("recorded %d hosts into %s" % (len(lab["hosts"]), outdir))


def probe_cli(argv):
    """Probe with sip_probe's engine from this namespace; prints {"results": [...]} as JSON."""
    _model()
    from ansible_collections.sipguard.firewall.plugins.module_utils import sip_prober

    parser = argparse.ArgumentParser(prog="sglab.py probe")
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--ports", nargs="+", default=["5060/udp", "5060/tcp"])
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=1)
    args = parser.parse_args(argv)
    results = sip_prober.probe_targets(args.targets, args.ports, timeout=args.timeout, retries=args.retries)
    print(json.dumps({"results": results}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--workdir", default=os.environ.get("SIPGUARD_LAB_DIR", DEFAULT_WORKDIR))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="create or refresh the lab from a scenario (idempotent)")
    p_up.add_argument("scenario")
    p_up.add_argument("--jobs", type=int, default=8)
    sub.add_parser("down", help="remove every lab namespace, the bridge and lab files")
    sub.add_parser("status", help="print the lab description (JSON)")
    p_exec = sub.add_parser("exec", help="run a command inside a lab host or vantage")
    p_exec.add_argument("host")
    p_exec.add_argument("argv", nargs=argparse.REMAINDER)
    p_rec = sub.add_parser("record", help="record what ufw_info reads, from every lab host")
    p_rec.add_argument("outdir")
    p_probe = sub.add_parser("probe", help="run sip_probe's engine from the controller or a vantage host")
    p_probe.add_argument("--from", dest="vantage", help="a lab vantage or host name (default: the controller)")
    p_probe.add_argument("args", nargs=argparse.REMAINDER, help="sip_prober arguments: TARGETS --ports ...")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            print(up(args.scenario, args.workdir, args.jobs))
        elif args.cmd == "down":
            down(args.workdir)
        elif args.cmd == "status":
            print(json.dumps(load_lab(args.workdir), indent=2))
        elif args.cmd == "exec":
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            ns = args.host if args.host.startswith(PREFIX) else PREFIX + args.host
            _check_ns(ns)
            return subprocess.call(host_argv(ns, argv))
        elif args.cmd == "probe":
            rest = args.args[1:] if args.args[:1] == ["--"] else args.args
            if args.vantage:
                ns = PREFIX + args.vantage
                _check_ns(ns)
                return subprocess.call(host_argv(ns, [sys.executable, os.path.abspath(__file__),
                                                      "--workdir", args.workdir, "probe", "--"] + rest))
            return probe_cli(rest)
        elif args.cmd == "record":
            record(args.outdir, args.workdir)
    except (LabError, subprocess.TimeoutExpired, OSError, KeyError) as exc:
        log("error: %s" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
