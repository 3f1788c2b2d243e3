"""The audit playbook on inventories as new users write them: hosts with ``ansible_host`` only, with
names that resolve (v4 and v6), with no probe target at all, and with hostile values."""

import copy
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml

from conftest import BIN, lab_up

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
DOMAIN = "sipguard-lab.test"


@pytest.fixture(scope="module")
def lab():
    lab = lab_up("exposure.yml")
    with open(lab["inventory_plain"]) as fh:
        lab["plain"] = yaml.safe_load(fh)
    return lab


@pytest.fixture(scope="module")
def normal_report(lab):
    return audit(lab["inventory"])


def _private_hosts_file(path):
    """A preexec_fn: the child sees ``path`` as /etc/hosts (its own mount namespace); nothing else
    on the machine does."""
    def enter():
        libc = ctypes.CDLL(None, use_errno=True)
        for call, args in (("unshare", (CLONE_NEWNS,)), ("mount", (b"none", b"/", None, MS_REC | MS_PRIVATE, None)),
                           ("mount", (path.encode(), b"/etc/hosts", None, MS_BIND, None))):
            if getattr(libc, call)(*args) != 0:
                raise OSError(ctypes.get_errno(), "%s%r failed" % (call, args))
    return enter


def audit(inventory, hosts_file=None):
    """Run the audit playbook; return (report.json, output)."""
    report_dir = tempfile.mkdtemp(prefix="sipguard-plain-")
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "sipguard.firewall.audit",
            "-e", json.dumps({"sipguard_report_dir": report_dir})]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               ANSIBLE_FORKS="25")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False, preexec_fn=_private_hosts_file(hosts_file) if hosts_file else None)
    path = os.path.join(report_dir, "report.json")
    assert os.path.exists(path), "no report.json (rc %d):\n%s" % (proc.returncode, proc.stdout[-4000:])
    assert "give at least one hostname" not in proc.stdout
    with open(path) as fh:
        return json.load(fh), proc.stdout


def write_inventory(data):
    fd, path = tempfile.mkstemp(prefix="sipguard-inventory-", suffix=".yml")
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    return path


# Both mean "nothing answered from the target"; which one a silent port gets can depend on timing:
# an ICMPv6 address-unreachable from the router (neighbour discovery gave up on a host with IPv6
# disabled) arrives about 3 s after the probe, at its timeout.
_SILENT = ("filtered", "open|filtered")


def probes(record, addresses=None):
    """The record's probes, as what was probed and what came back (no timing), sorted; optionally
    only those at ``addresses``."""
    out = []
    for probe in record["probes"]:
        if addresses is None or probe["address"] in addresses:
            silent = probe["state"] in _SILENT and probe["sip_status"] is None
            out.append({"address": probe["address"], "family": probe["family"], "port": probe["port"],
                        "transport": probe["transport"], "state": "silent" if silent else probe["state"],
                        "reason": None if silent else probe["reason"], "sip_status": probe["sip_status"],
                        "server": probe["server"]})
    return sorted(out, key=lambda p: (p["address"], p["port"], p["transport"]))


def test_the_plain_inventory_has_none_of_our_variables(lab):
    names = set(lab["plain"]["all"]["vars"])
    for host in lab["plain"]["all"]["hosts"].values():
        names |= set(host)
    assert names == {"ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                     "ansible_ssh_common_args", "ansible_python_interpreter"}
    assert sorted(lab["plain"]["all"]["hosts"]) == sorted(lab["hosts"])
    for name, host in lab["plain"]["all"]["hosts"].items():
        assert host["ansible_host"] == lab["hosts"][name]["ipv4"]


def test_audit_of_a_plain_inventory_probes_every_host_at_ansible_host(lab, normal_report):
    normal, _output = normal_report
    # Hostile hosts among the real ones: they are reported unreachable, never probed, and the others
    # are audited as usual.
    hostile = {"hostile-shell": "; rm -rf /", "hostile-empty": "", "hostile-list": ["198.18.0.1", "x"]}
    inventory = copy.deepcopy(lab["plain"])
    inventory["all"]["hosts"].update({name: {"ansible_host": value} for name, value in hostile.items()})
    report, output = audit(write_inventory(inventory))

    assert sorted(report["hosts"]) == sorted(list(lab["hosts"]) + list(hostile))
    for name, host in lab["hosts"].items():
        record, expected = report["hosts"][name], normal["hosts"][name]
        assert record["reachable"], (name, record["findings"])
        assert record["exposure"] == expected["exposure"], name
        assert probes(record), name  # probed, and at ansible_host (IPv4) only
        assert probes(record) == probes(expected, [host["ipv4"]]), name
    for name in hostile:
        assert report["hosts"][name]["reachable"] is False and report["hosts"][name]["probes"] == []
    assert "host hostile-shell: ansible_host '; rm -rf /' is not an IP address or host name" in output
    assert "host hostile-list: ansible_host a list is not an IP address or host name" in output


def test_names_are_probed_on_every_address_they_resolve_to(lab, normal_report):
    """Half the hosts by ``ansible_host: NAME``, half by inventory name only; each name resolves to
    the host's IPv4 and IPv6 address, so the probes are exactly the normal inventory's."""
    normal, _output = normal_report
    fd, hosts_file = tempfile.mkstemp(prefix="sipguard-hosts-")
    with os.fdopen(fd, "w") as fh:
        fh.write("127.0.0.1 localhost\n::1 localhost\n")
        for name, host in lab["hosts"].items():
            fh.write("%s %s.%s\n%s %s.%s\n" % (host["ipv4"], name, DOMAIN, host["ipv6"], name, DOMAIN))
    inventory = copy.deepcopy(lab["plain"])
    hosts, renamed = {}, {}
    for index, (name, host) in enumerate(sorted(inventory["all"]["hosts"].items())):
        fqdn = "%s.%s" % (name, DOMAIN)
        if index % 2:
            hosts[fqdn] = {k: v for k, v in host.items() if k != "ansible_host"}
            renamed[fqdn] = name
        else:
            hosts[name] = dict(host, ansible_host=fqdn)
            renamed[name] = name
    inventory["all"]["hosts"] = hosts
    report, _output = audit(write_inventory(inventory), hosts_file=hosts_file)

    assert sorted(renamed[h] for h in report["hosts"]) == sorted(lab["hosts"])
    for reported, name in renamed.items():
        record, expected = report["hosts"][reported], normal["hosts"][name]
        assert record["reachable"], (reported, record["findings"])
        assert {p["family"] for p in probes(record)} == {"ipv4", "ipv6"}, reported
        assert probes(record) == probes(expected), reported
        assert record["exposure"] == expected["exposure"], reported
        assert record["compliant"] == expected["compliant"], reported


def test_a_play_where_no_host_has_a_probe_target_still_inspects_and_reports(lab, normal_report):
    """Hosts reached through an SSH alias (``-o HostName=``) under a name that does not resolve."""
    normal, _output = normal_report
    chosen = sorted(lab["hosts"])[:3]
    common = lab["plain"]["all"]["vars"]["ansible_ssh_common_args"]
    inventory = {"all": {"vars": {k: v for k, v in lab["plain"]["all"]["vars"].items()
                                  if k != "ansible_ssh_common_args"},
                         "hosts": {"%s.invalid" % name: {
                             "ansible_port": lab["hosts"][name]["ssh_port"],
                             "ansible_ssh_common_args": "%s -o HostName=%s" % (common, lab["hosts"][name]["ipv4"])}
                             for name in chosen}}}
    report, output = audit(write_inventory(inventory))

    assert sorted(report["hosts"]) == ["%s.invalid" % name for name in chosen]
    for name in chosen:
        record = report["hosts"]["%s.invalid" % name]
        assert record["reachable"], (name, record["findings"], output[-3000:])
        assert record["probes"] == []
        assert record["exposure"] == normal["hosts"][name]["exposure"], name


def test_hostile_inventory_values_on_localhost_in_check_mode():
    """No lab: every host is this machine (local connection, read-only, check mode); only the good
    host's 127.0.0.1 is probed. The hostile values are warned about, never probed, and the run
    reaches the report, with the host whose ansible_host fails to template (first: it runs the
    run_once tasks) reported unreachable."""
    inventory = write_inventory({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "hosts": {"undefined": {"ansible_host": "{{ sipguard_test_nope }}"},
                  "shell": {"ansible_host": "; rm -rf /"},
                  "a-list": {"ansible_host": ["127.0.0.1", "x"]},
                  "bad-addresses": {"sipguard_addresses": "{{ sipguard_test_nope }}"},
                  "good": {"ansible_host": "127.0.0.1"}}}})
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "sipguard.firewall.audit", "--check", "-v",
            "-e", json.dumps({"sipguard_report_dir": tempfile.mkdtemp(prefix="sipguard-hostile-"),
                              "ansible_become": False})]
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_CALLBACK_FORMAT_PRETTY="False", ANSIBLE_NOCOLOR="True")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600,
                          check=False)
    # 2: a host failed (the one whose ansible_host does not template), and nothing else went wrong
    assert proc.returncode == 2, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for line in ("host undefined: ansible_host does not template ('sipguard_test_nope' is undefined)",
                 "host shell: ansible_host '; rm -rf /' is not an IP address or host name",
                 "host a-list: ansible_host a list is not an IP address or host name",
                 "host bad-addresses: sipguard_addresses does not template ('sipguard_test_nope' is undefined)"):
        assert line in proc.stderr, (line, proc.stderr[-3000:])
    results, task = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line.split(" : ", 1)[-1].rsplit("]", 1)[0]
        elif line.startswith(("ok: [", "changed: [")) and " => {" in line:
            host = line.split("[", 1)[1].split("]", 1)[0].split(" ->", 1)[0]
            results.setdefault(task, {})[host] = json.loads(line[line.index(" => {") + 4:])
    records = {host: result["ansible_facts"]["sipguard_host_record"]
               for host, result in results["Record this host's result"].items()}
    assert sorted(records) == ["a-list", "bad-addresses", "good", "shell"]  # "undefined" failed before
    assert {p["address"] for p in records["good"]["probes"]} == {"127.0.0.1"}
    assert len(records["good"]["probes"]) == 3
    assert all(records[host]["probes"] == [] for host in ("a-list", "bad-addresses", "shell"))
    report = next(iter(results["Write the fleet report and compare it with the previous run"].values()))
    assert "| 5 | 0 |" in report["markdown"] and "| 1 |" in report["markdown"], report["markdown"]
