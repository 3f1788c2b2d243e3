"""What the walker makes of conditional matches, gotos, jump cycles and bad input (issue 13).

Each rule set is a hardening rule in front of an ACCEPT for the port, the shape the lab's ``h-*``
hosts have (tests/lab/scenarios/exposure.yml; their recorded outputs are checked in
test_ufw_model.py). The first packet is the one netfilter.FIRST_PACKET_LENGTH describes.
"""


import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.sipguard.firewall.plugins.module_utils import netfilter, ufw_host, ufw_model
from ansible_collections.sipguard.firewall.plugins.module_utils.ports import parse_port_specs

ADDR = {4: ["198.18.0.40"], 6: ["fd53:1b7e:5060::28"]}


def ruleset(*rules, policy="DROP", accept=True):
    lines = ["*filter", ":INPUT %s [0:0]" % policy]
    lines += list(rules)
    if accept:
        lines += ["-A INPUT -p udp -m udp --dport 5060 -j ACCEPT", "-A INPUT -p tcp -m tcp --dport 5060 -j ACCEPT"]
    return "\n".join(lines + ["COMMIT", ""])


def evaluate(text, proto="udp", family=4, port=5060):
    net = ufw_model.HostNet(netfilter.parse_iptables_save(text), ADDR[family], [], False, {}, False)
    return ufw_model.evaluate_port(net, family, proto, port)


# (hardening rule, proto, state, a condition the verdict must show (None: no condition))
FAMILIES = [
    # hashlimit: --hashlimit-above acts on floods only; --hashlimit-upto holds for a new source.
    ("-A INPUT -p udp -m udp --dport 5060 -m hashlimit --hashlimit-above 20/sec --hashlimit-burst 40 "
     "--hashlimit-mode srcip --hashlimit-name f -j DROP", "udp", "open",
     "rate-limited above 20/sec per source (filter INPUT #1 drops)"),
    ("-A INPUT -p udp -m udp --dport 5060 -m hashlimit --hashlimit-upto 20/sec --hashlimit-name f -j DROP",
     "udp", "blocked", None),
    ("-A INPUT -p udp -m hashlimit --hashlimit-upto 20/sec --hashlimit-mode dstport --hashlimit-name f -j ACCEPT\n"
     "-A INPUT -p udp -j DROP", "udp", "open", "rate-limited above 20/sec per port (filter INPUT #1 accepts only below that)"),
    # limit: the bucket starts full, so the first packet matches.
    ("-A INPUT -p udp -m limit --limit 20/sec --limit-burst 50 -j DROP", "udp", "blocked", None),
    ("-A INPUT -p udp -m limit --limit 20/sec -j ACCEPT\n-A INPUT -p udp -j DROP", "udp", "open",
     "rate-limited above 20/sec (burst 5) (filter INPUT #1 accepts only below that)"),
    # connlimit: the new connection is the first one from its source.
    ("-A INPUT -p tcp -m connlimit --connlimit-above 10 --connlimit-mask 32 --connlimit-saddr -j REJECT "
     "--reject-with tcp-reset", "tcp", "open", "more than 10 connections per source (filter INPUT #1 rejects)"),
    ("-A INPUT -p tcp -m connlimit --connlimit-upto 5 --connlimit-mask 32 --connlimit-saddr -j REJECT", "tcp",
     "blocked", None),
    ("-A INPUT -p tcp -m connlimit --connlimit-above 0 -j DROP", "tcp", "blocked", None),
    # recent: a new source is on no list; --set always matches.
    ("-A INPUT -p udp -m recent --rcheck --seconds 60 --hitcount 10 --name scan --mask 255.255.255.255 --rsource "
     "-j DROP", "udp", "open", "sources seen 10 times within 60s (recent list scan) (filter INPUT #1 drops)"),
    ("-A INPUT -p udp -m recent ! --rcheck --name trusted --rsource -j DROP", "udp", "blocked", None),
    ("-A INPUT -p udp -m recent --set --name scan --rsource -j DROP", "udp", "blocked", None),
    ("-A INPUT -p udp -m recent --update --name scan --rdest -j DROP", "udp", "open", None),  # not evaluated
    # mark / connmark: a first packet carries none (no MARK target in the rule set).
    ("-A INPUT -m mark --mark 0x1 -j DROP", "udp", "open", "packets marked 0x1 (filter INPUT #1 drops)"),
    ("-A INPUT -m mark ! --mark 0x1 -j DROP", "udp", "blocked", None),
    ("-A INPUT -m mark --mark 0x0/0xff -j DROP", "udp", "blocked", None),
    ("-A INPUT -m connmark --mark 0x2/0xff -j DROP", "tcp", "open", "connections marked 0x2/0xff (filter INPUT #1 drops)"),
    # length: a UDP request of an OPTIONS' size, a TCP SYN.
    ("-A INPUT -m length --length 1400:65535 -j DROP", "udp", "open", "packets of 1400:65535 bytes (filter INPUT #1 drops)"),
    ("-A INPUT -p udp -m length ! --length 1000:65535 -j DROP", "udp", "blocked", None),
    ("-A INPUT -p tcp -m length --length 0:100 -j DROP", "tcp", "blocked", None),
    ("-A INPUT -p udp -m length --length 600:65535 -j DROP", "udp", "open", None),  # straddles: not evaluated
    # TCP flags: the first packet is a SYN.
    ("-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP", "tcp", "open",
     "TCP packets other than a SYN (filter INPUT #1 drops)"),
    ("-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP", "tcp", "blocked", None),
    ("-A INPUT -p tcp -m tcp ! --syn -j DROP", "tcp", "open", "TCP packets other than a SYN (filter INPUT #1 drops)"),
    ("-A INPUT -p tcp -m tcp --syn -j DROP", "tcp", "blocked", None),
    ("-A INPUT -p tcp -m tcp --tcp-flags ALL NONE -j DROP", "tcp", "open",
     "TCP packets with flags NONE of ALL (filter INPUT #1 drops)"),
    # conntrack states: the first packet is NEW; INVALID drops are everywhere and not worth a word.
    ("-A INPUT -m conntrack --ctstate INVALID -j DROP", "udp", "open", None),
    ("-A INPUT -p udp -m conntrack ! --ctstate NEW -j DROP", "udp", "open",
     "conntrack states other than NEW (filter INPUT #1 drops)"),
    ("-A INPUT -m conntrack --ctstate ESTABLISHED -j DROP", "udp", "open",
     "conntrack state ESTABLISHED (filter INPUT #1 drops)"),
    ("-A INPUT -m state --state NEW -j DROP", "udp", "blocked", None),
    ("-A INPUT -m conntrack --ctstatus SEEN_REPLY -j DROP", "udp", "open",
     "connections with status SEEN_REPLY (filter INPUT #1 drops)"),
    # string: a scanner's signature is not in an ordinary OPTIONS; "OPTIONS" is.
    ("-A INPUT -p udp -m string --string friendly-scanner --algo bm -j DROP", "udp", "open",
     "packets containing 'friendly-scanner' (filter INPUT #1 drops)"),
    ("-A INPUT -p udp -m string --string OPTIONS --algo bm -j DROP", "udp", "open", None),  # not evaluated
    # A flood rule for another port or protocol says nothing about this one.
    ("-A INPUT -p tcp -m hashlimit --hashlimit-above 1/sec --hashlimit-name t -j DROP", "udp", "open", None),
    # With a sender match the condition names the senders.
    ("-A INPUT -s 10.0.0.0/8 -m hashlimit --hashlimit-above 5/sec --hashlimit-name t -j DROP", "udp", "open",
     "rate-limited above 5/sec from 10.0.0.0/8 (filter INPUT #1 drops)"),
]


@pytest.mark.parametrize("rule, proto, state, condition", FAMILIES)
@pytest.mark.parametrize("family", [4, 6])
def test_conditional_matches_decide_only_when_they_hold_for_a_first_packet(rule, proto, state, condition, family):
    if family == 6:
        rule = rule.replace("255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").replace(
            "10.0.0.0/8", "fd00::/8")
        if condition:
            condition = condition.replace("10.0.0.0/8", "fd00::/8")
    verdict = evaluate(ruleset(rule), proto, family)
    assert verdict["state"] == state, verdict
    if condition is None:
        assert not [c for c in verdict["conditions"] if "#1" in c and "not evaluated" not in c], verdict
    else:
        assert condition in verdict["conditions"], verdict


def test_a_mark_set_on_the_way_makes_mark_matches_unknown_and_exposure_wins():
    text = ruleset("-A INPUT -p udp -j MARK --set-xmark 0x1/0xffffffff", "-A INPUT -m mark --mark 0x1 -j DROP")
    assert evaluate(text)["state"] == "open"
    # ... and an ACCEPT behind an unknown mark match is assumed to admit.
    text = ruleset("-A INPUT -p udp -j MARK --set-xmark 0x1/0xffffffff", "-A INPUT -m mark --mark 0x1 -j ACCEPT",
                   accept=False)
    assert evaluate(text)["state"] == "open"


def test_a_flood_rule_in_mangle_prerouting_is_a_condition_too():
    text = ruleset() + "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -m hashlimit --hashlimit-above " \
                       "50/sec --hashlimit-mode srcip --hashlimit-name m -j DROP\nCOMMIT\n"
    verdict = evaluate(text)
    assert verdict["state"] == "open"
    assert verdict["conditions"] == ["rate-limited above 50/sec per source (mangle PREROUTING #1 drops)"]


def test_ufw_limit_is_open_and_says_it_is_rate_limited():
    # The rules `ufw limit 5060/tcp` writes (tests/unit/fixtures/lab/limit__user_rules.txt).
    text = "\n".join([
        "*filter", ":INPUT DROP [0:0]", ":ufw-user-input - [0:0]", ":ufw-user-limit - [0:0]",
        ":ufw-user-limit-accept - [0:0]", "-A INPUT -j ufw-user-input",
        "-A ufw-user-input -p tcp --dport 5060 -m conntrack --ctstate NEW -m recent --set",
        "-A ufw-user-input -p tcp --dport 5060 -m conntrack --ctstate NEW -m recent --update --seconds 30 "
        "--hitcount 6 -j ufw-user-limit",
        "-A ufw-user-input -p tcp --dport 5060 -j ufw-user-limit-accept",
        "-A ufw-user-limit -j REJECT", "-A ufw-user-limit-accept -j ACCEPT", "COMMIT", ""])
    verdict = evaluate(text, "tcp")
    assert verdict["state"] == "open"
    assert verdict["conditions"] == [
        "sources seen 6 times within 30s (recent list DEFAULT) (filter ufw-user-input #2 jumps to ufw-user-limit)"]


# --------------------------------------------------------------------------- goto

def walk(text, proto="udp", family=4):
    walker = netfilter.Walker(netfilter.parse_iptables_save(text), ADDR[family])
    return walker.run("filter", "INPUT", netfilter.Packet(family, proto, 5060))


def test_goto_from_input_falling_off_applies_the_input_policy():
    text = "*filter\n:INPUT ACCEPT [0:0]\n:CHECK - [0:0]\n-A INPUT -p udp --dport 5060 -g CHECK\n" \
           "-A INPUT -j DROP\n-A CHECK -s 203.0.113.0/24 -j DROP\nCOMMIT\n"
    generic = [o for o in walk(text) if o.is_generic()][0]
    assert (generic.verdict, generic.frames) == ("ACCEPT", [("filter", "INPUT", None)])
    assert evaluate(text)["reason"].startswith("UFW is inactive; filter INPUT policy ACCEPT (except from 203.0.113.0/24")


def test_goto_returns_to_the_caller_of_the_chain_that_did_the_goto():
    text = "\n".join(["*filter", ":INPUT DROP [0:0]", ":OUTER - [0:0]", ":INNER - [0:0]",
                      "-A INPUT -j OUTER", "-A INPUT -p udp --dport 5060 -j ACCEPT",
                      "-A OUTER -p udp --dport 5060 -g INNER", "-A OUTER -j DROP",
                      "-A INNER -m length --length 1400:65535 -j DROP", "COMMIT", ""])
    outcomes = walk(text)
    assert [(o.verdict, o.frames) for o in outcomes] == [("ACCEPT", [("filter", "INPUT", 2)])]
    assert outcomes[0].notes == ["packets of 1400:65535 bytes (filter INNER #1 drops)"]
    # -j instead of -g: INNER returns into OUTER, whose next rule drops.
    assert [o.verdict for o in walk(text.replace("-g INNER", "-j INNER"))] == ["DROP"]


def test_return_in_a_goto_chain_also_skips_the_chain_that_did_the_goto():
    text = "\n".join(["*filter", ":INPUT DROP [0:0]", ":A - [0:0]", ":B - [0:0]", "-A INPUT -j A",
                      "-A INPUT -j ACCEPT", "-A A -g B", "-A A -j DROP", "-A B -j RETURN", "-A B -j DROP",
                      "COMMIT", ""])
    assert [o.verdict for o in walk(text)] == ["ACCEPT"]


# --------------------------------------------------------------------------- cycles and size

@pytest.mark.parametrize("jumps, cycle", [
    (["-A INPUT -j LOOP", "-A LOOP -p udp -j LOOP"], "LOOP -> LOOP"),
    (["-A INPUT -j A", "-A A -j B", "-A B -g C", "-A C -p tcp -j A"], "A -> B -> C -> A"),
    # Not reachable from INPUT, but iptables would refuse the table all the same.
    (["-A INPUT -j ACCEPT", "-A X -j Y", "-A Y -j X"], "X -> Y -> X"),
])
def test_jump_cycles_are_an_error_naming_the_chains(jumps, cycle):
    chains = sorted(set(w for line in jumps for w in line.split()[1:2] + line.split()[-1:]) - {"ACCEPT", "INPUT"})
    text = "\n".join(["*filter", ":INPUT DROP [0:0]"] + [":%s - [0:0]" % c for c in chains] + jumps + ["COMMIT", ""])
    with pytest.raises(netfilter.NetfilterLoopError, match="jump cycle in the filter table: %s" % cycle):
        walk(text)
    with pytest.raises(netfilter.NetfilterParseError, match="remove the jump back to chain"):
        evaluate(text)


def _ladder(levels, jumps=2):
    lines = ["*filter", ":INPUT DROP [0:0]"] + [":L%d - [0:0]" % i for i in range(levels)]
    lines.append("-A INPUT -j L0")
    for i in range(levels - 1):
        lines += ["-A L%d -j L%d" % (i, i + 1)] * jumps
    lines += ["-A L%d -p tcp -j DROP" % (levels - 1), "-A INPUT -p udp --dport 5060 -j ACCEPT", "COMMIT", ""]
    return "\n".join(lines)


def _layers(chains, width):
    """``chains`` chains in layers of ``width``; every chain jumps to two chains of the next layer, a few
    jumps only for some senders (each one a fork)."""
    names = ["C%d" % i for i in range(chains)]
    lines = ["*filter", ":INPUT DROP [0:0]"] + [":%s - [0:0]" % n for n in names] + ["-A INPUT -j C0"]
    for i in range(chains):
        layer, pos = divmod(i, width)
        nxt = [(layer + 1) * width + (pos + k) % width for k in (0, 1)]
        for j in nxt:
            if j < chains:
                lines.append("-A C%d -s 10.%d.0.0/16 -j C%d" % (i, j % 250, j) if j % 97 == 0 else "-A C%d -j C%d" % (i, j))
    lines += ["-A INPUT -p udp --dport 5060 -j ACCEPT", "COMMIT", ""]
    return "\n".join(lines)


def _chain_walks(text):
    """How many times the walker runs a chain's rules for one first packet, and the outcomes.

    Work, not time, is what this counts: the walk is linear when each chain is walked a bounded
    number of times (once per set of assumptions its own rules read), whatever the graph's depth.
    An unmemoised walk of ``_ladder(1000)`` would walk 2**999 chains.
    """
    tables = netfilter.parse_iptables_save(text)
    walker = netfilter.Walker(tables, ADDR[4])
    walks = []
    chain = walker._chain  # pylint: disable=protected-access

    def counting(*args):
        walks.append(args[1])
        return chain(*args)

    walker._chain = counting  # pylint: disable=protected-access
    outcomes = walker.run("filter", "INPUT", netfilter.Packet(4, "udp", 5060))
    return len(tables["filter"]), walks, outcomes


@pytest.mark.parametrize("text", [_ladder(1000), _layers(1000, 10)], ids=["1000 deep, 2 jumps each", "100x10 layers"])
def test_a_1000_chain_graph_walks_each_chain_a_bounded_number_of_times(text):
    chains, walks, outcomes = _chain_walks(text)
    assert len(walks) <= 3 * chains
    assert [o.verdict for o in outcomes if o.is_generic()] == ["ACCEPT"]


def test_the_walk_is_linear_in_the_rule_set():
    small = _chain_walks(_ladder(250))[1]
    large = _chain_walks(_ladder(1000))[1]
    assert len(large) == 4 * len(small) - 3  # one walk per chain (and INPUT): 251 -> 1001


# --------------------------------------------------------------------------- bad host state

@pytest.mark.parametrize("line, message", [
    ("-A INPUT -p udp --dport 5060 -j", "iptables-save line 3: -j needs a target"),
    ("-A INPUT -p udp -m", "iptables-save line 3: -m needs a match module"),
    ("-A INPUT -p udp --dport 50a0:6000 -j ACCEPT",
     "iptables-save line 3: --dport '50a0:6000' is not a port, range (5000:6000) or list (80,443) of ports 0-65535 or service names"),
    ("-A INPUT -p udp -m multiport --dports 80,,443 -j ACCEPT", "line 3: --dports '80,,443' is not a port"),
    ("-A INPUT -p udp --sport 70000 -j ACCEPT", "line 3: --sport '70000' is not a port"),
])
def test_bad_lines_are_errors_naming_the_source_and_line(line, message):
    with pytest.raises(netfilter.NetfilterParseError) as err:
        netfilter.parse_iptables_save("*filter\n:INPUT DROP [0:0]\n%s\nCOMMIT\n" % line, source="iptables-save")
    assert message in str(err.value)


_ACCEPT_5060 = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp --dport 5060 -j ACCEPT\nCOMMIT\n"


def _raw(user_rules, before_rules="", iptables=_ACCEPT_5060):
    cmd = {"rc": 0, "out": iptables, "err": ""}
    return {"ufw_binary": "/usr/sbin/ufw", "caveats": [],
            "commands": {"iptables_save": cmd, "ip6tables_save": dict(cmd, out=""), "ip_addr":
                         {"rc": 0, "out": "2: eth0    inet 198.18.0.40/24 brd 198.18.0.255 scope global eth0\n",
                          "err": ""}},
            "files": {"ufw_conf": "ENABLED=yes\n", "user_rules": user_rules, "before_rules": before_rules}}


def test_a_user_rules_file_that_cannot_be_parsed_is_a_caveat_not_a_failure():
    user = "*filter\n:ufw-user-input - [0:0]\n### tuple ### allow udp 5060 0.0.0.0/0 any 0.0.0.0/0 in\n" \
           "-A ufw-user-input -p udp --dport 50a0:6000 -j ACCEPT\nCOMMIT\n"
    result = ufw_model.inspect_host(_raw(user), parse_port_specs(["5060/udp"]))
    assert result["exposure"][0]["ipv4"]["state"] == "open"  # the live rule set decides
    assert [r["ports"] for r in result["ufw"]["rules"]] == ["5060"]
    assert any(c.startswith("/etc/ufw/user.rules line 4: --dport '50a0:6000' is not a port") for c in result["caveats"])


def test_a_live_rule_set_that_cannot_be_parsed_names_the_command():
    raw = _raw("", iptables="*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp --dport 5060 -j\nCOMMIT\n")
    with pytest.raises(netfilter.NetfilterParseError, match="^iptables-save line 3: -j needs a target"):
        ufw_model.inspect_host(raw, parse_port_specs(["5060/udp"]))


def test_a_file_that_is_not_utf8_is_read_with_a_caveat(tmp_path):
    path = tmp_path / "before.rules"
    path.write_bytes(b"*filter\n# r\xe8gles du site\nCOMMIT\n")
    caveats = []
    text = ufw_host._read(str(path), caveats)
    assert text == "*filter\n# r\ufffdgles du site\nCOMMIT\n"
    assert caveats == ["%s line 2 is not UTF-8 (byte 0xe8): read with the bad bytes replaced" % path]
    assert ufw_host._read(str(tmp_path / "missing"), caveats) is None


# --------------------------------------------------------------------------- the parser, on anything

_TOKENS = st.sampled_from(["-A", "-I", "INPUT", "X", "-j", "-g", "ACCEPT", "DROP", "X", "-m", "udp", "--dport",
                           "5060", "50a0:6000", "!", "-p", "-s", "10.0.0.0/8", "--comment", "'a b'", '"', "1",
                           "--length", "1:2", "-i", "lo", ":", ",", "0x1/0xff", "--mark"])
_LINES = st.one_of(
    st.text(max_size=40),
    st.lists(_TOKENS, max_size=12).map(" ".join),
    st.sampled_from(["*filter", "*nat", "COMMIT", ":INPUT DROP [0:0]", ":X - [0:0]", ":", "*", "### tuple ### x"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES, max_size=12))
def test_the_parser_raises_only_its_documented_error(lines):
    text = "\n".join(lines)
    try:
        tables = netfilter.parse_iptables_save(text, source="x")
    except netfilter.NetfilterParseError as exc:
        assert str(exc).startswith("x ")
        return
    # Whatever parsed can be walked: no exception but a loop error, and the walk ends.
    for table in tables:
        for chain in ("INPUT", "PREROUTING"):
            try:
                netfilter.Walker(tables, ADDR[4]).run(table, chain, netfilter.Packet(4, "udp", 5060))
            except netfilter.NetfilterLoopError:
                pass


def test_two_families_in_one_match_are_both_judged():
    # --ctstate NEW holds, --ctstatus SEEN_REPLY does not: the rule acts on other packets only.
    verdict = evaluate(ruleset("-A INPUT -m conntrack --ctstate NEW --ctstatus SEEN_REPLY -j DROP"))
    assert verdict["state"] == "open"
    assert verdict["conditions"] == ["connections with status SEEN_REPLY (filter INPUT #1 drops)"]


def test_service_names_are_ports_as_iptables_restore_reads_them():
    # A hand-written before.rules may say --dport ssh; iptables-restore resolves it from /etc/services.
    text = ruleset("-A INPUT -p tcp --dport ssh -j DROP", "-A INPUT -p tcp -m multiport --dports 5000:sip-tls -j DROP")
    assert evaluate(text, "tcp")["state"] == "blocked"
    with pytest.raises(netfilter.NetfilterParseError, match="'no-such-service' is not a port"):
        netfilter.parse_iptables_save(ruleset("-A INPUT -p tcp --dport no-such-service -j DROP"))
