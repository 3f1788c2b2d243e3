"""The close playbook on the report lab: the outside probe starts before ufw_port and only the
hosts ufw_port changed are probed again, so every record shows the state after the change."""

import json
import os
import subprocess
import tempfile

import pytest

from conftest import BIN, HERE, adhoc, lab_up

PORTS = ["5060/udp", "5060/tcp", "5061/tcp"]
PLAYBOOK = os.path.join(HERE, "playbooks", "close_and_save.yml")
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


def close_run(lab, report_dir, extra=None):
    """Run the close playbook; return {host: what it registered} and the report."""
    out = tempfile.mkdtemp(prefix="sipguard-closepb-out-")
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], PLAYBOOK,
            "-e", json.dumps(dict({"sipguard_report_dir": report_dir, "sipguard_test_out": out}, **(extra or {})))]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    saved = {}
    for name in lab["hosts"]:
        with open(os.path.join(out, name + ".json")) as fh:
            saved[name] = json.load(fh)
    with open(os.path.join(report_dir, "report.json")) as fh:
        return saved, json.load(fh)


def probe_jobs(saved):
    """The probe results of each job the record step collected, in order (early probe first)."""
    jobs = [[item["results"] for item in s["probes"]["results"]] for s in saved.values()]
    assert all(j == jobs[0] for j in jobs)  # collected once, registered on every host
    return jobs[0]


def addresses(lab, names):
    return set(a for n in names for a in (lab["hosts"][n]["ipv4"], lab["hosts"][n]["ipv6"]))


def test_changed_hosts_are_probed_again_and_their_records_show_the_change(lab):
    report_dir = tempfile.mkdtemp(prefix="sipguard-closepb-")
    saved, report = close_run(lab, report_dir)
    changed = sorted(h for h, s in saved.items() if s["changed"])
    assert "r-open" in changed and "r-steady" not in changed

    early, again = probe_jobs(saved)
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
    saved, report = close_run(lab, report_dir)
    assert not [h for h, s in saved.items() if s["changed"]]
    assert all(s["reprobe"].get("skipped") for s in saved.values())  # nobody was probed again
    (only,) = probe_jobs(saved)
    assert set(r["target"] for r in only) == addresses(lab, lab["hosts"])
    assert all(record["compliant"] for record in report["hosts"].values())


def test_hosts_that_refuse_are_still_recorded_and_reported(lab):
    # Closing the SSH port is refused on every host (a failed result without `rollback`): the step
    # that picks the hosts to confirm must cope, and every host is still recorded and reported.
    report_dir = tempfile.mkdtemp(prefix="sipguard-closepb-refuse-")
    saved, report = close_run(lab, report_dir, {"sipguard_close_ports": ["22/tcp"], "sipguard_verify_ports": PORTS})
    assert all(s["changed"] is False for s in saved.values()), saved
    assert sorted(report["hosts"]) == sorted(lab["hosts"])
