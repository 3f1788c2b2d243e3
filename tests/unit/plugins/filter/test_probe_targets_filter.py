# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/filter/probe_targets.py: which targets a host of a plain (or hostile) inventory gets."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.sipguard.firewall.plugins.filter import probe_targets as P

FILTER = P.FilterModule().filters()["probe_targets"]


def _never_resolves(name):
    raise AssertionError("resolved %r although the host has an explicit target" % (name,))


class BrokenVars(dict):
    """A host's variables where some fail to template, as Ansible's HostVarsVars raises on access."""

    def __init__(self, values, broken):
        super(BrokenVars, self).__init__(values)
        self.broken = broken

    def __contains__(self, key):
        return key in self.broken or dict.__contains__(self, key)

    def get(self, key, default=None):
        if key in self.broken:
            raise self.broken[key]
        return dict.get(self, key, default)


@pytest.mark.parametrize("variables, expected", [
    ({"ansible_host": "198.18.0.11"}, ["198.18.0.11"]),
    ({"ansible_host": " 198.18.0.11 "}, ["198.18.0.11"]),
    ({"ansible_host": "fd53:5347::11"}, ["fd53:5347::11"]),
    ({"ansible_host": "[fd53:5347::11]"}, ["[fd53:5347::11]"]),
    ({"ansible_host": "fe80::1%eth0"}, ["fe80::1%eth0"]),
    ({"ansible_host": "sip1.example.org"}, ["sip1.example.org"]),
    ({"ansible_host": "sip1.example.org."}, ["sip1.example.org."]),
    ({"ansible_host": "sip_1.corp"}, ["sip_1.corp"]),
    # sipguard_addresses wins, even over ansible_host; duplicates go
    ({"ansible_host": "198.18.0.11", "sipguard_addresses": ["198.18.0.12", "fd53:5347::12", "198.18.0.12"]},
     ["198.18.0.12", "fd53:5347::12"]),
    ({"sipguard_addresses": "198.18.0.12"}, ["198.18.0.12"]),
    ({"ansible_ssh_host": "198.18.0.13"}, ["198.18.0.13"]),
    ({"ansible_host": "198.18.0.11", "ansible_ssh_host": "198.18.0.13"}, ["198.18.0.11"]),
    ({"ansible_host": None, "ansible_ssh_host": "198.18.0.13"}, ["198.18.0.13"]),
    # an explicit empty list: do not probe this host
    ({"ansible_host": "198.18.0.11", "sipguard_addresses": []}, []),
    # a null sipguard_addresses is as good as undefined
    ({"ansible_host": "198.18.0.11", "sipguard_addresses": None}, ["198.18.0.11"]),
])
def test_explicit_targets(variables, expected):
    assert P.select_targets("h1", variables, resolver=_never_resolves) == (expected, None)


@pytest.mark.parametrize("host, resolving, expected", [
    ("198.18.0.11", set(), ["198.18.0.11"]),
    ("fd53:5347::11", set(), ["fd53:5347::11"]),
    ("sip1.example.org", {"sip1.example.org"}, ["sip1.example.org"]),
    ("web1", set(), []),             # a name that does not resolve: no target, no warning
    ("web1", {"web1"}, ["web1"]),
])
def test_the_inventory_name_counts_when_it_is_an_address_or_resolves(host, resolving, expected):
    asked = []

    def resolver(name):
        asked.append(name)
        return name in resolving

    assert P.select_targets(host, {}, resolver=resolver) == (expected, None)
    assert asked == ([] if ":" in host or host[0].isdigit() else [host])


@pytest.mark.parametrize("variables, variable, expected", [
    ({"ansible_host": "; rm -rf /"}, "ansible_host", []),
    ({"ansible_host": "$(reboot)"}, "ansible_host", []),
    ({"ansible_host": "root@198.18.0.11"}, "ansible_host", []),
    ({"ansible_host": ""}, "ansible_host", []),
    ({"ansible_host": "   "}, "ansible_host", []),
    ({"ansible_host": ["198.18.0.11"]}, "ansible_host", []),
    ({"ansible_host": {"a": 1}}, "ansible_host", []),
    ({"ansible_host": 198}, "ansible_host", []),
    ({"ansible_host": True}, "ansible_host", []),
    ({"ansible_host": "a" * 64 + ".example.org"}, "ansible_host", []),
    ({"ansible_host": "x." * 130}, "ansible_host", []),
    ({"ansible_host": "198.18.0.11%eth0"}, "ansible_host", []),
    ({"ansible_host": "sip1.example.org\n198.18.0.1"}, "ansible_host", []),
    ({"ansible_ssh_host": "; rm -rf /"}, "ansible_ssh_host", []),
    ({"sipguard_addresses": {"v4": "198.18.0.11"}}, "sipguard_addresses", []),
    ({"sipguard_addresses": 7}, "sipguard_addresses", []),
    ({"sipguard_addresses": ["198.18.0.11", "; rm -rf /", None]}, "sipguard_addresses", ["198.18.0.11"]),
])
def test_hostile_values_are_never_passed_on(variables, variable, expected):
    targets, problem = P.select_targets("h1", variables, resolver=_never_resolves)
    assert targets == expected
    assert problem.startswith("host h1: %s" % variable)
    assert ("not probed" in problem) == (not expected)


@pytest.mark.parametrize("variable", ["ansible_host", "sipguard_addresses"])
def test_a_variable_that_fails_to_template_is_a_warning(variable):
    from jinja2.exceptions import UndefinedError

    variables = BrokenVars({"ansible_host": "198.18.0.11"}, {variable: UndefinedError("'nope' is undefined")})
    targets, problem = P.select_targets("h1", variables, resolver=_never_resolves)
    assert targets == []
    assert problem == ("host h1: %s does not template (UndefinedError: 'nope' is undefined); the host is not "
                       "probed" % variable)


@pytest.mark.parametrize("variable", ["ansible_host", "sipguard_addresses"])
def test_a_variable_handed_on_as_undefined_is_a_warning(variable):
    """ansible-core 2.19 gives a failed template to a filter as a marker, an Undefined, not an error."""
    from jinja2 import StrictUndefined

    variables = {"ansible_host": "198.18.0.11", variable: StrictUndefined(name="nope")}
    targets, problem = P.select_targets("h1", variables, resolver=_never_resolves)
    assert targets == []
    assert problem == "host h1: %s does not template ('nope' is undefined); the host is not probed" % variable


def test_the_filter_warns_and_takes_the_host_from_the_variables(monkeypatch):
    warnings = []
    monkeypatch.setattr(P._display, "warning", warnings.append)
    assert FILTER({"inventory_hostname": "h1", "ansible_host": "; rm -rf /"}) == []
    assert warnings == ["sipguard probe targets: host h1: ansible_host '; rm -rf /' is not an IP address or host "
                        "name; the host is not probed (set sipguard_addresses)"]
    assert FILTER({"ansible_host": "198.18.0.11"}, host="h2") == ["198.18.0.11"]
    assert len(warnings) == 1


@pytest.mark.parametrize("bad", [None, "h1", ["h1"], 3])
def test_the_input_must_be_a_hosts_variables(bad):
    with pytest.raises(AnsibleFilterError, match=r"probe_targets: the input must be a host's variables"):
        FILTER(bad)


def test_a_host_name_is_needed():
    with pytest.raises(AnsibleFilterError, match=r"give host="):
        FILTER({"ansible_host": "198.18.0.11"})


def test_resolves_is_false_for_names_the_resolver_refuses():
    assert P.resolves("a" * 64 + ".invalid") is False
    assert P.resolves("localhost") is True


_HOSTILE = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=";|&$`'\"<>(){}[]*?!~#%\\ \t\n\r\x00/:@.,=+-_abcAZ09", max_size=40),
    st.binary(max_size=20),
    st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.lists(st.text(max_size=20), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(ansible_host=_HOSTILE, addresses=st.one_of(st.just(P), _HOSTILE, st.lists(_HOSTILE, max_size=4)))
def test_any_value_gives_targets_that_are_addresses_or_host_names(ansible_host, addresses):
    variables = {"ansible_host": ansible_host}
    if addresses is not P:  # P: sipguard_addresses undefined
        variables["sipguard_addresses"] = addresses
    targets, problem = P.select_targets("h1", variables, resolver=lambda name: False)
    assert isinstance(targets, list)
    assert problem is None or (isinstance(problem, str) and problem.startswith("host h1: "))
    for target in targets:
        assert isinstance(target, str) and target == target.strip() and target
        # nothing a shell or ssh would read as more than one word or an option
        assert not set(target) & set(" \t\r\n;|&$`'\"<>(){}*?!~#\\/@,=+\x00")
        assert not target.startswith("-")
        assert P.probe_target(target) == target
    if not targets and problem is None:
        # nothing, silently, only for an empty sipguard_addresses or when neither variable is set
        explicit = variables.get("sipguard_addresses")
        assert explicit in ([], ()) or (explicit is None and ansible_host is None)
