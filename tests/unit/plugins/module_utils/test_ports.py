import pytest

from ansible_collections.sipguard.firewall.plugins.module_utils.ports import PortSpec, PortSpecError, parse_port_specs


def test_bare_port_means_udp_and_tcp_and_duplicates_collapse():
    assert parse_port_specs(["5060", "5060/udp", 5061]) == [
        PortSpec(5060, "udp"), PortSpec(5060, "tcp"), PortSpec(5061, "udp"), PortSpec(5061, "tcp")]


@pytest.mark.parametrize("values, message", [
    (["5060/udp", "70000/udp"], r"ports\[1\]: '70000' is not a port \(1-65535\)"),
    (["5060/icmp"], r"ports\[0\]: '5060/icmp' has protocol 'icmp'; use tcp or udp"),
    (["abc"], r"ports\[0\]: 'abc' is not a port number"),
    (["0/tcp"], r"ports\[0\]: '0' is not a port"),
    ([], r"give at least one port"),
])
def test_bad_ports_name_the_bad_value(values, message):
    with pytest.raises(PortSpecError, match=message):
        parse_port_specs(values)
