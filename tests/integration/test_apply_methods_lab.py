"""ufw_port's two ways of applying a change, against each other on the exposure lab.

apply=ufw runs the ufw command line once per rule; apply=files writes user.rules/user6.rules in
ufw's layout and loads them with one iptables-restore per family. From the same starting state
(every exposure host, rebuilt in between), both must leave byte-identical rules files and the
same kernel rule set, and report the same result.
"""

import os
import re
import subprocess

import pytest

from conftest import adhoc, lab_up

ARGS = {"ports": ["5060/udp", "5060/tcp", "5061/tcp"], "rollback_after": 0}
FILES = ("ufw/user.rules", "ufw/user6.rules", "ufw/ufw.conf")


def snapshot(lab):
    """Per host: UFW's files (text, mode, owner), and iptables-save/ip6tables-save without counters
    or timestamps."""
    state = {}
    for name, info in lab["hosts"].items():
        files = {}
        for rel in FILES:
            path = os.path.join("/etc/netns", info["netns"], rel)
            if os.path.exists(path):
                with open(path) as fh:
                    st = os.stat(path)
                    files[rel] = (fh.read(), st.st_mode, st.st_uid, st.st_gid)
        live = {}
        for tool in ("iptables-save", "ip6tables-save"):
            out = subprocess.run(["ip", "netns", "exec", info["netns"], tool], text=True, check=True,
                                 stdout=subprocess.PIPE).stdout
            live[tool] = [re.sub(r" \[\d+:\d+\]$", "", line) for line in out.splitlines() if not line.startswith("#")]
        state[name] = (files, live)
    return state


def close_with(apply):
    lab = lab_up("exposure.yml")  # rebuilds the hosts an earlier run changed
    results = adhoc(lab["inventory"], "all", "sipguard.firewall.ufw_port", dict(ARGS, apply=apply))
    return lab, results, snapshot(lab)


@pytest.fixture(scope="module")
def both():
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces)")
    return close_with("ufw"), close_with("files")


def test_both_methods_leave_the_same_files_and_kernel_rules(both):
    (_lab, cli_results, cli_state), (_lab2, file_results, file_state) = both
    changed = [h for h, (status, r) in file_results.items() if status == "CHANGED"]
    assert len(changed) >= 15  # the lab's closable hosts, including inactive, v6-only and IPV6=no ones
    for host in sorted(cli_state):
        assert file_state[host][0] == cli_state[host][0], "%s: rules files differ" % host
        assert file_state[host][1] == cli_state[host][1], "%s: kernel rules differ" % host


def test_both_methods_report_the_same_change(both):
    (_lab, cli_results, _s), (_lab2, file_results, _s2) = both
    assert set(cli_results) == set(file_results)
    for host in cli_results:
        cli_status, cli = cli_results[host]
        file_status, files = file_results[host]
        assert cli_status == file_status, host
        if file_status == "CHANGED":
            assert (cli["applied_with"], files["applied_with"]) == ("ufw", "files")
            for key in ("commands", "rules_after", "deleted", "added", "verdicts", "enabled_ufw"):
                assert files[key] == cli[key], "%s: %s differs" % (host, key)
            assert "app_profiles" not in files["info"]["ufw"] and files["info"]["exposed"] is False
        elif file_status == "FAILED":  # refused before any change (a bypass UFW cannot fix)
            assert files["msg"] == cli["msg"]
            # the refusal carries the host as it is, with what to do about it, for the record
            remedies = [v["remediation"] for e in files["info"]["exposure"] for v in (e["ipv4"], e["ipv6"])
                        if v.get("remediation")]
            assert files["info"]["exposed"] and remedies, host
