"""roles/report end to end: ansible-playbook on a fake fleet of localhost hosts (read-only; the role
writes only into a temporary report directory) fed with the recorded lab host records.

Run A is the records as recorded, run B is tests/unit/record_fixtures.run_b() (default-deny gets
5060/udp/ipv4 opened, allow-proto gets 5060/tcp closed). The webhook goes to an HTTP server this
test starts on 127.0.0.1; nothing else is contacted. No root, no lab needed.
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "unit"))
import record_fixtures as F  # noqa: E402

PLAYBOOK = os.path.join(HERE, "playbooks", "report_role.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
HOSTS = ["allow-proto", "default-deny", "deny", "source-restricted", "iface-restricted"]
GONE = "gone-host"  # in the inventory, never gets a record: failed or unreachable
URL_SECRET = "hook-path-s3cr3t-4711"
TOKEN = "tok-s3cr3t-0815"


def _collections_path():
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry, "ansible_collections", "sipguard", "firewall")):
            return entry
    raise AssertionError("the collection is not importable (see tests/conftest.py)")


class _Hook(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Hook.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture()
def webhook():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/%s" % (server.server_address[1], URL_SECRET), _Hook.received
    server.shutdown()
    server.server_close()


@pytest.fixture()
def fleet(tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[fleet]\n%s\n\n[fleet:vars]\nansible_connection=local\nansible_python_interpreter=%s\n"
                         % ("\n".join(HOSTS + [GONE]), sys.executable))
    return tmp_path


def _write_records(directory, records):
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for host in HOSTS:
        (directory / ("%s.json" % host)).write_text(json.dumps(records[host]))


def _play(fleet, records, extra=None, check=False, extra_args=()):
    _write_records(fleet / "records", records)
    variables = {"records_dir": str(fleet / "records"), "sipguard_report_dir": str(fleet / "report")}
    variables.update(extra or {})
    argv = [ANSIBLE_PLAYBOOK, "-i", str(fleet / "inventory.ini"), PLAYBOOK, "-e", json.dumps(variables)]
    if check:
        argv.append("--check")
    argv += list(extra_args)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=_collections_path(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_RETRY_FILES_ENABLED="False")
    proc = subprocess.run(argv, cwd=str(fleet), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def report_a_id(fleet):
    return "%s.json" % _report(fleet)["run_id"]


def _report(fleet):
    with open(str(fleet / "report" / "report.json")) as fh:
        return json.load(fh)


def test_report_role_runs_tracks_changes_alerts_and_gates(fleet, webhook):
    url, received = webhook
    records = F.load_records()

    # run A: first run, no baseline; the host without a record is reported, not dropped
    rc, out = _play(fleet, records)
    assert rc == 0, out
    assert sorted(os.listdir(str(fleet / "report"))) == [
        ".sipguard.lock", "history", "junit.xml", "report.html", "report.json", "report.md"]
    # the role created the directory: 0750, files 0640 (they hold the fleet's rules and banners)
    assert oct(os.stat(str(fleet / "report")).st_mode & 0o777) == "0o750"
    for name in ("report.json", "report.html", "report.md", "junit.xml", "history/" + report_a_id(fleet)):
        assert oct(os.stat(str(fleet / "report" / name)).st_mode & 0o777) == "0o640", name
    # only who may write the report may open (and so lock) the lock file
    assert oct(os.stat(str(fleet / "report" / ".sipguard.lock")).st_mode & 0o777) == "0o600"
    report_a = _report(fleet)
    assert sorted(report_a["hosts"]) == sorted(HOSTS + [GONE])
    assert report_a["hosts"][GONE]["reachable"] is False and report_a["hosts"][GONE]["compliant"] is False
    assert (report_a["summary"]["unreachable"], report_a["changes"], report_a["baseline"]) == (1, [], None)
    assert "6 hosts: 3 compliant, 2 non-compliant, 1 unreachable" in out

    # run B with the gate on regressions and the webhook: the alert goes out, then the play fails
    rc, out = _play(fleet, F.run_b(records), {"sipguard_fail_on": ["regression"], "sipguard_webhook_url": url,
                                              "sipguard_webhook_token": TOKEN})
    assert rc != 0, out
    report_b = _report(fleet)
    assert {(c["host"], c["kind"], c["key"]) for c in report_b["changes"]} == F.RUN_B_CHANGES
    assert report_b["baseline"]["run_id"] == report_a["run_id"]
    assert "sipguard gate failed (fail_on: regression): 2 problem(s)" in out
    assert "regression: 5060/udp/ipv4 on default-deny opened (it was blocked): ufw rule 3" in out
    assert len(received) == 1
    hook = received[0]
    assert hook["path"] == "/" + URL_SECRET and hook["headers"]["Authorization"] == "Bearer " + TOKEN
    assert hook["headers"]["Content-Type"].startswith("application/json")
    assert isinstance(hook["body"]["text"], str)  # Slack-compatible
    # what opened, where, through which rule, since when; the fake fleet's hosts have no probe target,
    # so the second probe cannot run and the opening is alerted as it is
    assert "- 5060/udp/ipv4 on default-deny opened through ufw rule 3, since %s (blocked at %s)" % (
        report_b["generated_at"], report_a["generated_at"]) in hook["body"]["text"]
    assert "not probed again: no probe target" in hook["body"]["text"]
    assert hook["body"]["sipguard"]["run_id"] == report_b["run_id"]
    assert [c["key"] for c in hook["body"]["sipguard"]["opened"]] == ["5060/udp/ipv4"]
    assert URL_SECRET not in out and TOKEN not in out and url not in out
    assert len(os.listdir(str(fleet / "report" / "history"))) == 2

    # check mode, back to A: everything computed and shown, nothing written, no alert
    before = (fleet / "report" / "report.json").read_bytes()
    rc, out = _play(fleet, records, {"sipguard_webhook_url": url}, check=True)
    assert rc == 0, out
    assert (fleet / "report" / "report.json").read_bytes() == before
    assert "6 change(s) since %s" % report_b["run_id"] in out
    assert len(received) == 1 and len(os.listdir(str(fleet / "report" / "history"))) == 2

    # nothing opened: no alert; unreachable gate fails on the host without a record
    rc, out = _play(fleet, F.run_b(records), {"sipguard_fail_on": ["unreachable"], "sipguard_webhook_url": url})
    assert rc != 0, out
    assert "- unreachable: gone-host: unreachable: no host record" in out
    assert len(received) == 1 and _report(fleet)["changes"] == []


def test_report_role_merges_limit_batches_into_the_fleet_report(fleet):
    """Two --limit batches write their own reports; a last run merges them (plus its own hosts)
    into the fleet report, equal to one run over every host."""
    records = F.load_records()
    batches = [HOSTS[:2], HOSTS[2:4]]
    paths = []
    for index, batch in enumerate(batches):
        _write_records(fleet / "records", records)
        rc, out = _play(fleet, records, {"sipguard_report_dir": str(fleet / ("batch%d" % index)),
                                         "sipguard_report_hosts": batch})
        assert rc == 0, out
        paths.append(str(fleet / ("batch%d" % index) / "report.json"))
    rest = [h for h in HOSTS + [GONE] if not any(h in b for b in batches)]
    rc, out = _play(fleet, records, {"sipguard_report_merge_from": paths, "sipguard_report_hosts": rest})
    assert rc == 0, out
    rc, out = _play(fleet, records, {"sipguard_report_dir": str(fleet / "single")})
    assert rc == 0, out
    merged = _report(fleet)
    with open(str(fleet / "single" / "report.json")) as fh:
        single = json.load(fh)
    keys = ("schema", "baseline", "summary", "hosts", "changes")
    assert dict((k, merged[k]) for k in keys) == dict((k, single[k]) for k in keys)
    assert [s["hosts"] for s in merged["sources"]] == [2, 2, 2]


def test_report_role_mode(fleet):
    """sipguard_report_mode reaches every written file; an unquoted (YAML octal) mode is refused by name."""
    records = F.load_records()
    rc, out = _play(fleet, records, {"sipguard_report_mode": "0600"})
    assert rc == 0, out
    report_dir = fleet / "report"
    assert oct(os.stat(str(report_dir)).st_mode & 0o777) == "0o700"
    for name in ("report.json", "report.html", "report.md", "junit.xml"):
        assert oct(os.stat(str(report_dir / name)).st_mode & 0o777) == "0o600", name
    before = (report_dir / "report.json").read_bytes()
    (fleet / "vars.yml").write_text("sipguard_report_mode: 0640\n")  # unquoted: YAML reads 416
    rc, out = _play(fleet, records, {}, extra_args=["-e", "@" + str(fleet / "vars.yml")])
    assert rc != 0 and "mode: 416 is not a string; quote the mode, for example '0640'" in out, out
    assert (report_dir / "report.json").read_bytes() == before


def test_report_role_waivers(fleet, webhook):
    """Waivers through the role: a malformed one stops the play before anything is written; valid,
    expired and stale ones are in the report; the expired one fails the gate and alerts."""
    url, received = webhook
    records = F.load_records()
    incomplete = {"host": "allow-proto", "port": 5060, "proto": "udp", "owner": "voice", "reason": "trunk"}
    rc, out = _play(fleet, records, {"sipguard_waivers": [incomplete]})
    assert rc != 0 and "waivers[0]: missing expires (a waiver needs host, port, proto, owner, reason, expires)" in out
    assert not (fleet / "report").exists()
    waivers = [{"id": "trunk", "host": "allow-*", "port": 5060, "proto": "udp", "owner": "voice", "reason": "trunk",
                "expires": "2099-12-31"},
               {"id": "trunk-tcp", "host": "allow-*", "port": 5060, "proto": "tcp", "owner": "voice",
                "reason": "trunk", "expires": "2020-01-01"},
               {"id": "gone", "host": "old-*", "port": 5060, "proto": "udp", "owner": "ops", "reason": "old",
                "expires": "2099-12-31"}]
    rc, out = _play(fleet, records, {"sipguard_waivers": waivers, "sipguard_fail_on": ["exposed"],
                                     "sipguard_webhook_url": url, "sipguard_report_formats": ["json", "md", "sarif"]})
    assert rc != 0, out
    report = _report(fleet)
    assert [(w["id"], w["status"]) for w in report["waivers"]] == [
        ("trunk", "active"), ("trunk-tcp", "expired"), ("gone", "stale")]
    assert "exposed: allow-proto: 5060/tcp ipv4 open:" in out and "waiver trunk-tcp of voice expired on 2020-01-01" in out
    md = (fleet / "report" / "report.md").read_text()
    assert "WAIVED until 2099-12-31 (trunk, owner voice: trunk): 5060/udp ipv4 open" in md
    assert "waiver gone (old-* 5060/udp, owner ops) matches nothing" in md
    assert len(received) == 1 and "1 waiver(s) expired" in received[0]["body"]["text"]
    # the TCP waiver renewed: allow-proto passes the gate, still shown as waived
    waivers[1]["expires"] = "2099-12-31"
    rc, out = _play(fleet, records, {"sipguard_waivers": waivers, "sipguard_fail_on": ["exposed"],
                                     "sipguard_report_hosts": ["allow-proto", "deny"]})
    assert rc == 0, out
    report = _report(fleet)
    assert report["hosts"]["allow-proto"]["compliant"] and report["hosts"]["allow-proto"]["waived"] == 8
