"""The monitor role, installed into a scratch directory on the controller (no systemd changes):
units valid for systemd-analyze, secrets root-only and never printed, check mode writes nothing."""

import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import BIN, HERE

PLAYBOOK = os.path.join(HERE, "playbooks", "monitor_role.yml")
SECRET = "https://hooks.example.invalid/T000/SECRET-TOKEN-123"


WAIVER = {"id": "trunk", "host": "pbx-*", "port": 5060, "proto": "udp", "owner": "voice", "reason": "trunk",
          "expires": "2099-12-31"}


def run(tmp, check=False, **more):
    extra = {
        "ansible_python_interpreter": os.path.join(BIN, "python"),
        "sipguard_monitor_unit_dir": os.path.join(tmp, "units"),
        "sipguard_monitor_config_dir": os.path.join(tmp, "etc"),
        "sipguard_monitor_enable": False,
        "sipguard_monitor_webhook_url": SECRET,
        "sipguard_monitor_webhook_token": "tok-SECRET-456",
        "sipguard_monitor_ansible_playbook": os.path.join(BIN, "ansible-playbook"),
        "sipguard_monitor_schedule": "*-*-* *:00/15:00",
        "sipguard_monitor_textfile_dir": os.path.join(tmp, "textfile"),
        "sipguard_waivers": [WAIVER],
    }
    extra.update(more)
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", PLAYBOOK,
            "-e", json.dumps(extra)] + (["--check", "--diff"] if check else [])
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS="False")
    return subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=300,
                          check=False)


@pytest.fixture()
def tmp():
    path = tempfile.mkdtemp(prefix="sipguard-monitor-")
    os.makedirs(os.path.join(path, "units"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_check_mode_writes_nothing(tmp):
    proc = run(tmp, check=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert os.listdir(os.path.join(tmp, "units")) == []
    assert SECRET not in proc.stdout and "tok-SECRET-456" not in proc.stdout


def test_units_and_secrets(tmp):
    proc = run(tmp)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert SECRET not in proc.stdout and "tok-SECRET-456" not in proc.stdout
    units = os.path.join(tmp, "units")
    assert sorted(os.listdir(units)) == ["sipguard-gate.service", "sipguard-gate.timer"]
    with open(os.path.join(units, "sipguard-gate.service")) as fh:
        service = fh.read()
    assert "sipguard.firewall.gate" in service and "gate-vars.json" in service and SECRET not in service
    vars_file = os.path.join(tmp, "etc", "gate-vars.json")
    assert stat.S_IMODE(os.stat(vars_file).st_mode) == 0o600
    with open(vars_file) as fh:
        data = json.load(fh)
    assert data["sipguard_webhook_url"] == SECRET and data["sipguard_gate_fail_on"] == ["regression", "unreachable"]
    # the gate's runs write report.prom into node_exporter's textfile directory and apply the waivers
    assert data["sipguard_report_formats"] == ["json", "html", "md", "junit", "prometheus"]
    assert data["sipguard_report_textfile_dir"] == os.path.join(tmp, "textfile")
    assert data["sipguard_waivers"] == [WAIVER] and data["sipguard_report_confirm_opened"] is True
    if shutil.which("systemd-analyze"):
        check = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(units, "sipguard-gate.timer"),
                                os.path.join(units, "sipguard-gate.service")], text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, check=False, timeout=60)
        assert check.returncode == 0, check.stdout
        calendar = subprocess.run(["systemd-analyze", "calendar", "*-*-* *:00/15:00"], stdout=subprocess.PIPE,
                                  check=False, timeout=60)
        assert calendar.returncode == 0
    assert run(tmp).stdout.split("PLAY RECAP")[1].count("changed=0") == 1  # idempotent


def test_malformed_waiver_installs_nothing(tmp):
    proc = run(tmp, sipguard_waivers=[dict(WAIVER, expires="next year")])
    assert proc.returncode != 0
    assert "waivers[0].expires: 'next year' is not a date; write it as YYYY-MM-DD" in proc.stdout
    assert os.listdir(os.path.join(tmp, "units")) == [] and not os.path.exists(os.path.join(tmp, "etc"))
