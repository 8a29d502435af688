"""pybpfnet.testing.differential: kernel vs reference on generated packets."""

import struct

import pytest
from hypothesis import strategies as st

import pybpfnet as bn
from pybpfnet import packet as pk
from pybpfnet.testing import DifferentialMismatch, differential, packets


def reference(frame, vlan_aware=True):
    """The spec of tests/bpf/diff_port.bpf.c in Python."""
    if len(frame) < 14:
        return bn.XdpAction.PASS, frame
    proto = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if proto == 0x8100 and vlan_aware:
        if len(frame) < 18:
            return bn.XdpAction.PASS, frame
        proto = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if proto == 0x0800:
        if len(frame) < off + 20 or frame[off] & 0xF < 5:
            return bn.XdpAction.PASS, frame
        if struct.unpack_from("!H", frame, off + 6)[0] & 0x1FFF:
            return bn.XdpAction.PASS, frame
        ipproto, l4 = frame[off + 9], off + (frame[off] & 0xF) * 4
    elif proto == 0x86DD:
        if len(frame) < off + 40:
            return bn.XdpAction.PASS, frame
        ipproto, l4 = frame[off + 6], off + 40
    else:
        return bn.XdpAction.PASS, frame
    if ipproto not in (6, 17) or len(frame) < l4 + 4:
        return bn.XdpAction.PASS, frame
    dport = struct.unpack_from("!H", frame, l4 + 2)[0]
    if dport == 53:
        return bn.XdpAction.DROP, None
    if dport == 7:
        return bn.XdpAction.TX, frame[6:12] + frame[0:6] + frame[12:]
    return bn.XdpAction.PASS, frame


@pytest.fixture
def port_filter(test_objects, bpf_object):
    return bpf_object(test_objects["diff_port"]).programs["port_filter"]


def test_program_matches_reference(port_filter):
    differential(port_filter, reference, packets(ports=(7, 53, 80)), max_examples=300)


def test_default_strategy_and_verdict_only_reference(port_filter):
    differential(port_filter, lambda f: reference(f)[0], max_examples=100)


def test_mismatch_reports_the_minimal_packet(port_filter):
    # a reference that forgets VLAN tags: hypothesis must find a tagged frame
    buggy = lambda f: reference(f, vlan_aware=False)  # noqa: E731
    tagged = st.sampled_from((7, 53)).map(lambda port: bytes(
        pk.with_vlan(pk.udp_packet("10.0.0.1", "10.0.0.2", 1000, port), 5)))
    with pytest.raises(DifferentialMismatch) as ei:
        differential(port_filter, buggy, st.one_of(packets(ports=(80,)), tagged),
                     max_examples=200)
    e = ei.value
    assert e.packet[12:14] == b"\x81\x00"
    assert "kernel and reference disagree" in str(e) and e.packet.hex() in str(e)
    assert "Dot1Q vlan 5" in str(e)


def test_data_mismatch_shows_offsets(port_filter):
    def wrong_echo(f):
        v, data = reference(f)
        return (v, data[::-1]) if v == bn.XdpAction.TX else (v, data)
    echo = st.just(bytes(pk.udp_packet("10.0.0.1", "10.0.0.2", 1000, 7, b"abc")))
    with pytest.raises(DifferentialMismatch, match="output bytes differ from offset 0"):
        differential(port_filter, wrong_echo, echo, max_examples=5)


def test_before_each_runs(port_filter):
    calls = []
    differential(port_filter, reference, packets(), max_examples=10,
                 before_each=lambda: calls.append(1))
    assert len(calls) >= 10
