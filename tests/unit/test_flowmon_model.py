"""Flow monitor pieces that need no kernel: the log2 histogram (bcc's
layout), FlowRecord (merge, JSON) and the reference model's parsing."""

import ipaddress
import json

import pytest
from hypothesis import given, settings, strategies as st

from pybpfnet.dataplanes._flow_hist import Log2Histogram, slot
from pybpfnet.dataplanes._flow_model import classify
from pybpfnet.dataplanes.flowmon import FlowRecord
from pybpfnet.packet import (ARP, Dot1Q, Ethernet, ICMP, IPv4, IPv6, IPv6Fragment,
                             IPv6HopByHop, TCP, UDP, fragment)
from pybpfnet.testing import packets

V4 = b"\x00" * 10 + b"\xff\xff"


@pytest.mark.parametrize("value,expected", [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (1023, 10),
                                            (1024, 11), (2**63, 64)])
def test_slot_is_bcc_log2l(value, expected):
    assert slot(value) == expected


def test_histogram_prints_like_bcc():
    counts = [0] * 64
    counts[0], counts[1], counts[5], counts[6] = 1, 1, 4, 8
    text = str(Log2Histogram(counts))
    lines = text.splitlines()
    assert lines[0] == "     usecs               : count     distribution"
    assert lines[1] == "%10d -> %-10d : %-8d |%-40s|" % (0, 1, 2, "*" * 10)
    assert lines[5] == "%10d -> %-10d : %-8d |%-40s|" % (16, 31, 4, "*" * 20)
    assert lines[6] == "%10d -> %-10d : %-8d |%s|" % (32, 63, 8, "*" * 40)
    assert len(lines) == 7


def test_histogram_empty_total_percentile_add():
    empty = Log2Histogram([0] * 64)
    assert empty.buckets() == [] and empty.total == 0 and empty.percentile(0.5) is None
    assert str(empty).splitlines() == ["     usecs               : count     distribution"]
    h = Log2Histogram([0, 0, 1, 3] + [0] * 60)
    assert h.percentile(0.5) == 7 and h.percentile(0.1) == 3
    assert (h + h).total == 8
    assert h.to_dict()["buckets"][-1] == {"low": 4, "high": 7, "count": 3}


def record(**kw):
    base = dict(src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, protocol=6, ifindex=3,
                direction="egress", packets=2, bytes=120, tcp_flags=0x12, first_ns=100,
                last_ns=200, start=10.0, end=10.5, reason="idle", interface="eth0")
    base.update(kw)
    return FlowRecord(**base)


def test_record_merge_and_json():
    a, b = record(), record(packets=1, bytes=60, tcp_flags=0x11, first_ns=300, last_ns=400,
                            start=11.0, end=11.0, reason="fin", rtt_ns=5000, drops=1)
    m = a.merge(b)
    assert (m.packets, m.bytes, m.flags, m.first_ns, m.last_ns, m.rtt_ns, m.reason) == \
        (3, 180, ("FIN", "SYN", "ACK"), 100, 400, 5000, "fin")
    assert m.drops == 1 and "1 dropped" in str(m)
    with pytest.raises(ValueError):
        a.merge(record(sport=9))
    d = json.loads(m.to_json())
    assert d["src"] == "10.0.0.1" and d["protocol"] == "TCP" and d["tcp_flags"] == ["FIN", "SYN", "ACK"]
    assert isinstance(m.src, ipaddress.IPv4Address) and m.family == 4
    assert "10.0.0.1:1 -> 10.0.0.2:2 TCP egress: 3 pkts 180 bytes" in str(m)
    assert str(record(src="fd00::1", dst="fd00::2")).startswith("eth0 [fd00::1]:1 -> [fd00::2]:2")


def test_model_classifies_built_packets():
    tcp = bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5, dport=6,
                                                                         flags="FA"))
    pf = classify(tcp)
    assert pf.key == (V4 + bytes([10, 0, 0, 1]), V4 + bytes([10, 0, 0, 2]), 5, 6, 6, 4)
    assert pf.tcp_flags == 0x11 and pf.ends_flow and pf.hdr_len == 14 + 20 + 20
    v6 = bytes(Ethernet() / Dot1Q(vid=3) / IPv6(src="fd00::1", dst="fd00::2") / IPv6HopByHop()
               / UDP(sport=7, dport=8))
    pf = classify(v6)
    assert (pf.sport, pf.dport, pf.proto, pf.family, pf.hdr_len) == (7, 8, 17, 6, 18 + 40 + 8 + 8)
    icmp = classify(bytes(Ethernet() / IPv4(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=8, code=0)))
    assert (icmp.sport, icmp.dport, icmp.proto) == (8, 0, 1)
    assert classify(bytes(Ethernet() / ARP())) is None
    assert classify(b"\x00" * 13) is None


def test_model_non_first_fragments_have_no_ports():
    pkt = Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"z" * 3000)
    frags = fragment(pkt, 1500)
    got = [(classify(bytes(f)).sport, classify(bytes(f)).proto) for f in frags]
    assert got[0] == (1, 17) and all(g == (0, 17) for g in got[1:])
    v6 = bytes(Ethernet() / IPv6(src="fd00::1", dst="fd00::2")
               / IPv6Fragment(offset=8, id=1, next_header=17) / (b"x" * 16))
    pf = classify(v6)
    assert (pf.sport, pf.dport, pf.proto) == (0, 0, 17)


@settings(max_examples=300)
@given(st.one_of(packets(), st.binary(max_size=80)))
def test_model_never_raises(frame):
    classify(frame)


@pytest.mark.parametrize("kw", [{"directions": ("sideways",)}, {"position": "middle"}])
def test_monitor_options_are_checked_before_loading(kw):
    from pybpfnet.dataplanes.flowmon import FlowMonitor
    with pytest.raises(ValueError):
        FlowMonitor(**kw)
