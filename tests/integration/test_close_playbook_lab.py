"""The close playbook on the report lab: the outside probe starts before ufw_port and only the
hosts ufw_port changed are probed again, so every record shows the state after the change."""

import json
import os
import subprocess
import tempfile

import pytest

from conftest import BIN, adhoc, lab_up

PORTS = ["5060/udp", "5060/tcp", "5061/tcp"]
ADMITTED = ("open",)  # a silent UDP port reads open|filtered (nmap's meaning)


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces)")
    lab = lab_up("report.yml")
    # One host is closed beforehand, so the first close run changes some hosts and not others.
    status, result = adhoc(lab["inventory"], "r-steady", "sipguard.firewall.ufw_port", {"ports": PORTS})["r-steady"]
    assert status == "CHANGED", result
    return lab


def close_run(lab, report_dir):
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], "sipguard.firewall.close",
            "-e", json.dumps({"sipguard_report_dir": report_dir})]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    tasks = {}
    for task in json.loads(proc.stdout)["plays"][0]["tasks"]:
        tasks.setdefault(task["task"]["name"], []).append(task["hosts"])
    with open(os.path.join(report_dir, "report.json")) as fh:
        return tasks, json.load(fh)


def probe_jobs(tasks):
    """The probe results of each job the verify step collected, in order (early probe first)."""
    (hosts,) = tasks["Collect the probe results"]
    (result,) = [r for r in hosts.values() if "results" in r]
    return [item["results"] for item in result["results"]]


def addresses(lab, names):
    return set(a for n in names for a in (lab["hosts"][n]["ipv4"], lab["hosts"][n]["ipv6"]))


def test_changed_hosts_are_probed_again_and_their_records_show_the_change(lab):
    report_dir = tempfile.mkdtemp(prefix="sipguard-closepb-")
    tasks, report = close_run(lab, report_dir)
    changed = sorted(h for h, r in tasks["Close the SIP ports (one plan for all of them)"][0].items() if r.get("changed"))
    assert "r-open" in changed and "r-steady" not in changed

    early, again = probe_jobs(tasks)
    assert set(r["target"] for r in early) == addresses(lab, lab["hosts"])
    assert set(r["target"] for r in again) == addresses(lab, changed)
    # Before the change the open host answered; its record must hold the probe from after it.
    assert any(r["state"] == "open" for r in early if r["target"] in addresses(lab, ["r-open"]))
    for name, record in report["hosts"].items():
        assert record["compliant"], (name, record["findings"])
        assert len(record["probes"]) == 2 * len(PORTS)
        assert not [p for p in record["probes"] if p["state"] in ADMITTED], name


def test_an_idempotent_run_probes_once(lab):
    report_dir = tempfile.mkdtemp(prefix="sipguard-closepb-")
    close_run(lab, report_dir)  # whatever the first test left, this run closes it
    tasks, report = close_run(lab, report_dir)
    assert not [h for h, r in tasks["Close the SIP ports (one plan for all of them)"][0].items() if r.get("changed")]
    (start,) = tasks["Start probing the play's hosts, once, from the probe host"]
    assert all(r.get("skipped") for r in start.values())
    (only,) = probe_jobs(tasks)
    assert set(r["target"] for r in only) == addresses(lab, lab["hosts"])
    assert all(record["compliant"] for record in report["hosts"].values())
