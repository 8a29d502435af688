"""The plugin example of docs/testing.md, run as a real test."""

import pytest

import pybpfnet as bn


@pytest.mark.lab
def test_counts_pings(lab, bpf_object):
    hosts = lab.two_hosts(v6=False)
    obj = bpf_object(bn.open_bundled("xdp_count"))
    with hosts.server.enter(), obj.programs["xdp_count"].attach_xdp(hosts.server_if):
        assert hosts.client.ping(hosts.server_ip, count=3) == 3
    assert obj.globals["seen"] >= 3
