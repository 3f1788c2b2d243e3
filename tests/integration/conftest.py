"""Integration tests run against the namespace lab (tests/lab/sglab.py), as root."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
SGLAB = os.path.join(TESTS, "lab", "sglab.py")
SCENARIOS = os.path.join(TESTS, "lab", "scenarios")
WORKDIR = os.environ.get("SIPGUARD_LAB_DIR", "/var/tmp/sipguard-lab")
BIN = os.path.dirname(sys.executable)


def sglab(*args, check=True):
    proc = subprocess.run([sys.executable, SGLAB, "--workdir", WORKDIR] + list(args), text=True, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError("sglab %s failed: %s" % (" ".join(args), proc.stderr))
    return proc


def sglab_module():
    """tests/lab/sglab.py as a module (its host_argv, init_pid, start_init)."""
    if "sglab" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sglab", SGLAB)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["sglab"] = module
    return sys.modules["sglab"]


def host_argv(lab, host, argv):
    """``argv`` run inside lab host ``host`` as one of its own processes (its PID and mount
    namespaces: its /run, its /proc), as an admin logged in on it would run it."""
    return sglab_module().host_argv(lab["hosts"][host]["netns"], argv)


def lab_up(scenario):
    sglab("up", os.path.join(SCENARIOS, scenario))
    with open(os.path.join(WORKDIR, "lab.json")) as fh:
        return json.load(fh)


def adhoc(inventory, pattern, module, args=None, extra_env=None, argv_prefix=(), extra_args=()):
    """``ansible PATTERN -m MODULE -a ARGS -o`` -> {host: (status, result dict)}."""
    argv = list(argv_prefix) + [os.path.join(BIN, "ansible"), pattern, "-i", inventory, "-m", module, "-o"]
    if args:
        argv += ["-a", json.dumps(args)]
    argv += list(extra_args)
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_FORKS="25", ANSIBLE_DEPRECATION_WARNINGS="False")
    if inventory == "localhost,":
        # An explicit localhost goes through interpreter discovery; use this test run's Python.
        env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    env.update(extra_env or {})
    proc = subprocess.run(argv, text=True, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600)
    results = {}
    for line in proc.stdout.splitlines():
        if " | " not in line or " => " not in line:
            continue
        host, rest = line.split(" | ", 1)
        status, payload = rest.split(" => ", 1)
        results[host] = (status.split("!")[0].strip(), json.loads(payload))
    if not results:
        raise AssertionError("ansible printed no results:\n%s\n%s" % (proc.stdout, proc.stderr))
    return results


def close_and_record(lab, hosts, variables=None, check=False):
    """tests/integration/playbooks/close_and_record.yml (the close role on ``hosts``, each host's
    ufw_port result written to a file) -> ({host: what the playbook recorded}, the playbook's output)."""
    out = tempfile.mkdtemp(prefix="sipguard-close-")
    extra = dict({"sipguard_test_targets": ",".join(hosts), "sipguard_test_out": out}, **(variables or {}))
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", lab["inventory"], os.path.join(HERE, "playbooks",
            "close_and_record.yml"), "-e", json.dumps(extra)]
    if check:
        argv += ["--check", "--diff"]
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_DEPRECATION_WARNINGS="False",
               ANSIBLE_FORKS="10")
    proc = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = {}
    for host in hosts:
        with open(os.path.join(out, host + ".json")) as fh:
            results[host] = json.load(fh)
    return results, proc.stdout


def probe(targets, ports, vantage=None, timeout=1.0, retries=1):
    args = ["probe"] + (["--from", vantage] if vantage else []) + ["--"] + list(targets) + \
        ["--ports"] + list(ports) + ["--timeout", str(timeout), "--retries", str(retries)]
    return json.loads(sglab(*args).stdout)["results"]


@pytest.fixture(scope="session")
def exposure_lab():
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces)")
    return lab_up("exposure.yml")


# Test modules grouped by the lab scenario they bring up, read-only ones first within a group: the lab
# is rebuilt only when the scenario changes or a test changed a host (each scenario replaces the last).
SCENARIO_ORDER = (
    "test_ufw_info_lab", "test_sip_probe_lab", "test_plain_inventory_lab",  # exposure.yml, read-only
    "test_apply_methods_lab",                                                # exposure.yml, closes every host
    "test_close_lab", "test_guard_lab", "test_rollback_lab", "test_close_files_lab",  # close.yml
    "test_close_playbook_lab", "test_report_lab", "test_report_concurrency_lab", "test_runner_lab",  # report.yml
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return SCENARIO_ORDER.index(name) if name in SCENARIO_ORDER else len(SCENARIO_ORDER)
    items.sort(key=rank)  # stable: the order inside a module stays
