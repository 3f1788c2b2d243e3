"""ufw_port's planning for issue 14 on hosts recorded from the close lab (tests/lab/scenarios/close.yml):
c-docker runs a real dockerd (docker run -p 5060:5070/udp -p 5060:5060/tcp), c-fwd-dnat forwards a DNAT
through UFW's forward chains, c-before-range / c-after / c-ahead have rules outside UFW's user rules.
Recorded with ``sglab.py record`` into tests/unit/fixtures/close14.
"""

import os

import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils import ufw_plan
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec
from ansible_collections.sipguard.firewall.plugins.module_utils.ufw_model import evaluate_port, inspect_host

import lab_fixtures as lab

RECORDED = os.path.join(lab.HERE, "fixtures", "close14")
SIP = [(5060, "udp"), (5060, "tcp")]
SPECS = [PortSpec(5060, "udp"), PortSpec(5060, "tcp")]


def host(name):
    return ufw_plan.HostState(lab.raw(name, directory=RECORDED))


def admitted(name):
    info = inspect_host(host(name), SPECS)
    return dict(("%s/%s" % (e["proto"], f), (e[f]["state"], e[f]["closed_by"])) for e in info["exposure"]
                for f in ("ipv4", "ipv6") if e[f]["state"] != "blocked")


def test_real_docker_publishes_past_ufw_and_only_the_docker_option_closes_it():
    assert admitted("c-docker") == {"udp/ipv4": ("open", "docker"), "tcp/ipv4": ("open", "docker")}
    with pytest.raises(ufw_plan.PlanError, match="docker: true would drop"):
        ufw_plan.plan_close(host("c-docker"), SIP, ssh_ports=[22])
    plan = ufw_plan.plan_close(host("c-docker"), SIP, ssh_ports=[22], docker=True)
    assert list(plan.rule_files) == ["/etc/ufw/after.rules"]
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_the_docker_block_matches_the_port_the_client_connected_to_not_the_container_port():
    # Docker maps 5060/udp to the container's 5070: a drop on 5070 as the original port lets 5060 in.
    state = host("c-docker")
    texts = {4: [state.rule_files[4][0], state.rule_files[4][1] + "\n*filter\n:DOCKER-USER - [0:0]\n"
                 "-A DOCKER-USER -p udp -m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdstport 5070 -j DROP\n"
                 "COMMIT\n"]}
    net = ufw_plan._simulate(state, 4, [r for r in state.rules if not r.v6], {}, True, texts, reload=True)
    assert evaluate_port(net, 4, "udp", 5060)["state"] == "open"
    texts[4][1] = texts[4][1].replace("--ctorigdstport 5070", "--ctorigdstport 5060")
    net = ufw_plan._simulate(state, 4, [r for r in state.rules if not r.v6], {}, True, texts, reload=True)
    assert evaluate_port(net, 4, "udp", 5060)["state"] == "blocked"


def test_a_dnat_through_ufw_forward_chains_is_closed_with_route_rules():
    assert set(admitted("c-fwd-dnat").values()) == {("open", "rules")}
    plan = ufw_plan.plan_close(host("c-fwd-dnat"), SIP, ssh_ports=[22])
    routes = [c for c in plan.commands if c[0] == "route"]
    assert sorted(c[4] for c in routes) == ["tcp", "udp"] and set(c[8] for c in routes) == {"172.30.0.2"}
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_a_range_in_before_rules_gets_a_block_ahead_of_it():
    assert admitted("c-before-range") == {"udp/ipv4": ("open", "edit_ufw_files")}
    plan = ufw_plan.plan_close(host("c-before-range"), SIP, ssh_ports=[22], edit_ufw_files=True, run_id="r")
    assert [e["action"] for e in plan.file_edits] == ["blocked"]
    assert set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_an_after_rules_accept_needs_no_edit():
    assert admitted("c-after") == {"udp/ipv4": ("open", "rules")}  # the managed deny comes first
    plan = ufw_plan.plan_close(host("c-after"), SIP, ssh_ports=[22], edit_ufw_files=True)
    assert plan.file_edits == [] and set(v["state"] for v in plan.verdicts_after.values()) == {"blocked"}


def test_an_accept_ahead_of_ufw_is_refused_with_the_command_that_removes_it():
    assert admitted("c-ahead") == {"udp/ipv4": ("open", None)}
    with pytest.raises(ufw_plan.PlanError, match=r"remove it with: iptables -t filter -D INPUT 1"):
        ufw_plan.plan_close(host("c-ahead"), SIP, ssh_ports=[22], edit_ufw_files=True, docker=True)
