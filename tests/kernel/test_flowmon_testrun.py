"""The flow monitor's BPF program under BPF_PROG_TEST_RUN: aggregation,
FIN/RST export, handshake RTT, full table and full ring paths, and a
differential test against the pure-Python model (_flow_model.classify)."""

import collections
import errno

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpfnet import BpfError
from pybpfnet.dataplanes._flow_model import classify
from pybpfnet.dataplanes.flowmon import FlowMonitor
from pybpfnet.packet import (ARP, Dot1Q, Ethernet, IPv4, IPv6, IPv6Fragment, IPv6HopByHop,
                             TCP, UDP)
from pybpfnet.testing import packets


def udp4(sport=1000, dport=53, payload=b"x", src="10.0.0.1", dst="10.0.0.2"):
    return bytes(Ethernet() / IPv4(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def tcp6(flags, sport=40000, dport=80, src="fd00::1", dst="fd00::2", payload=b""):
    return bytes(Ethernet() / IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
                 / payload)


@pytest.fixture
def fm():
    with FlowMonitor(max_flows=64) as fm:
        yield fm


def run(fm, frame, direction="egress", repeat=1):
    fm.program(direction).test_run(frame, repeat=repeat)


def test_aggregates_one_flow(fm):
    a, b = udp4(payload=b"a" * 10), udp4(payload=b"b" * 100)
    run(fm, a, repeat=3)
    run(fm, b)
    (rec,) = fm.active()
    assert (str(rec.src), str(rec.dst), rec.sport, rec.dport, rec.protocol) == \
        ("10.0.0.1", "10.0.0.2", 1000, 53, 17)
    assert rec.packets == 4 and rec.bytes == 3 * len(a) + len(b)
    assert rec.direction == "egress" and rec.ifindex == 1 and rec.reason is None
    assert rec.first_ns <= rec.last_ns and rec.tcp_flags == 0
    s = fm.stats()
    assert (s.packets, s.active_flows, s.full, s.lost_records) == (4, 1, 0, 0)


def test_directions_and_flows_are_separate(fm):
    run(fm, udp4(), "egress")
    run(fm, udp4(), "ingress")
    run(fm, udp4(sport=1001), "ingress")
    recs = fm.active()
    assert sorted((r.direction, r.sport) for r in recs) == \
        [("egress", 1000), ("ingress", 1000), ("ingress", 1001)]


def test_non_ip_is_counted_not_tracked(fm):
    run(fm, bytes(Ethernet() / ARP()))
    assert fm.active() == [] and fm.stats().non_ip == 1


def test_vlan_and_ipv6_extension_headers(fm):
    run(fm, bytes(Ethernet() / Dot1Q(vid=7) / IPv4(src="10.0.0.1", dst="10.0.0.2")
                  / UDP(sport=5, dport=6)))
    run(fm, bytes(Ethernet() / IPv6(src="fd00::1", dst="fd00::2") / IPv6HopByHop()
                  / IPv6Fragment(offset=0, id=1) / UDP(sport=7, dport=8) / b"zz"))
    got = {(r.sport, r.dport, r.protocol, r.family) for r in fm.active()}
    assert got == {(5, 6, 17, 4), (7, 8, 17, 6)}


def test_fin_exports_at_once(fm):
    run(fm, tcp6("S"))
    run(fm, tcp6("A", payload=b"p" * 20), repeat=2)
    run(fm, tcp6("FA"))
    assert fm.active() == []
    (rec,) = fm.poll(timeout=1)
    assert rec.reason == "fin" and rec.packets == 4
    assert rec.bytes == 4 * len(tcp6("S")) + 2 * 20
    assert rec.flags == ("FIN", "SYN", "ACK")


def test_rst_without_a_flow_is_a_record_too(fm):
    run(fm, tcp6("R", sport=1))
    (rec,) = fm.poll(timeout=1)
    assert (rec.reason, rec.packets, rec.flags) == ("rst", 1, ("RST",))


def test_handshake_rtt_and_histogram(fm):
    for i in range(3):
        run(fm, tcp6("S", sport=2000 + i), "egress")
        run(fm, tcp6("SA", sport=80, dport=2000 + i, src="fd00::2", dst="fd00::1"), "ingress")
    recs = fm.active()
    assert len(recs) == 6 and all(r.rtt_ns for r in recs)
    by_port = collections.defaultdict(set)
    for r in recs:
        by_port[r.sport if r.direction == "egress" else r.dport].add(r.rtt_ns)
    assert all(len(v) == 1 for v in by_port.values())   # both halves carry the same sample
    hist = fm.rtt_histogram()
    assert hist.total == 3 == fm.stats().rtt_samples
    # a second SYN-ACK (retransmission) is not a new sample
    run(fm, tcp6("SA", sport=80, dport=2000, src="fd00::2", dst="fd00::1"), "ingress")
    assert fm.rtt_histogram().total == 3
    text = str(hist)
    assert text.splitlines()[0] == "     usecs               : count     distribution"


def test_syn_ack_without_syn_gives_no_rtt(fm):
    run(fm, tcp6("SA", sport=80, dport=9), "ingress")
    (rec,) = fm.active()
    assert rec.rtt_ns is None and fm.rtt_histogram().total == 0


def test_full_table_sends_one_packet_records():
    with FlowMonitor(max_flows=2) as fm:
        for port in range(10):
            run(fm, udp4(sport=port), repeat=2)
        assert len(fm.active()) == 2
        recs = fm.poll(timeout=1)
        assert len(recs) == 16 and {r.reason for r in recs} == {"full"}
        assert all(r.packets == 1 for r in recs)
        s = fm.stats()
        assert (s.full, s.lost_records) == (16, 0)


def test_full_table_and_full_ring_counts_losses():
    frame = udp4(sport=1)
    with FlowMonitor(max_flows=1, ring_size=4096) as fm:
        run(fm, udp4(sport=0))              # the only table slot
        sent = 100                           # 4096-byte ring: about 34 records of 112 bytes
        for port in range(1, sent + 1):
            run(fm, udp4(sport=port))
        recs = fm.poll(timeout=1)
        s = fm.stats()
        assert s.lost_records > 0 and s.full == len(recs)
        assert len(recs) + s.lost_records == sent
        assert s.lost_packets == s.lost_records
        assert s.lost_bytes == s.lost_records * len(frame)


def test_fin_with_full_ring_stays_for_the_sweep():
    with FlowMonitor(max_flows=1, ring_size=4096) as fm:
        run(fm, tcp6("S"))
        for port in range(100):              # fill the ring (table full: direct records)
            run(fm, udp4(sport=port))
        run(fm, tcp6("FA"))                  # no room on the ring: kept in the table
        assert fm.stats().ring_deferred == 1
        fm.ring.consume()                    # drop the filler records
        (rec,) = fm.sweep()
        assert rec.reason == "fin" and rec.packets == 2
        assert fm.active() == []


def test_flush_empties_table(fm):
    run(fm, udp4(sport=1))
    run(fm, udp4(sport=2))
    recs = fm.flush()
    assert sorted(r.sport for r in recs) == [1, 2] and {r.reason for r in recs} == {"flush"}
    assert fm.active() == [] and fm.flush() == []


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(packets(), st.sampled_from(["ingress", "egress"])), max_size=10))
def test_differential_against_model(frames):
    """Every frame the model calls IP lands in the flow it names, with
    its length and flags; nothing else is tracked."""
    with FlowMonitor(max_flows=64) as fm:
        want = collections.Counter()
        wbytes = collections.Counter()
        wflags = collections.defaultdict(int)
        non_ip = 0
        for frame, direction in frames:
            try:
                run(fm, frame, direction)
            except BpfError as e:
                # the kernel's skb test run refuses some short frames (EINVAL)
                assert e.errno == errno.EINVAL and len(frame) < 64
                continue
            pf = classify(frame)
            if pf is None:
                non_ip += 1
                continue
            key = pf.key + (direction,)
            want[key] += 1
            wbytes[key] += len(frame)
            wflags[key] |= pf.tcp_flags
        got = collections.Counter()
        gbytes = collections.Counter()
        gflags = collections.defaultdict(int)
        for r in fm.flush():
            key = (_raw(r.src), _raw(r.dst), r.sport, r.dport, r.protocol, r.family, r.direction)
            got[key] += r.packets
            gbytes[key] += r.bytes
            gflags[key] |= r.tcp_flags
        assert got == want and gbytes == wbytes and gflags == wflags
        assert fm.stats().non_ip == non_ip


def _raw(addr):
    return addr.packed if addr.version == 6 else b"\x00" * 10 + b"\xff\xff" + addr.packed


def test_without_drop_tracer():
    with FlowMonitor(max_flows=4, drops=False) as fm:
        assert not fm.drops_visible
        run(fm, udp4())
        (rec,) = fm.active()
        assert rec.drops == 0 and fm.stats().drops == 0


def test_async_iteration(fm):
    import asyncio

    async def first_two():
        got = []
        async for rec in fm:
            got.append(rec)
            if len(got) == 2:
                return got

    run(fm, tcp6("R", sport=1))
    run(fm, tcp6("FA", sport=2))
    recs = asyncio.run(asyncio.wait_for(first_two(), 5))
    assert sorted((r.sport, r.reason) for r in recs) == [(1, "rst"), (2, "fin")]


def test_async_iteration_ends_on_close_and_unregisters_the_ring():
    """Closing the monitor ends ``async for``; the event loop no longer
    watches the ring's fd afterwards (the fd number can be reused)."""
    import asyncio

    fm = FlowMonitor(max_flows=4, sweep_interval=0.05)
    fd = fm.fileno()

    async def main():
        got = []
        async for rec in fm:
            got.append(rec)
            fm.close()                      # from inside the loop: ends at the next turn
        loop = asyncio.get_running_loop()
        return got, loop.remove_reader(fd)  # False: nothing registered any more

    run(fm, tcp6("R", sport=7))
    got, still_registered = asyncio.run(asyncio.wait_for(main(), 5))
    assert [(r.sport, r.reason) for r in got] == [(7, "rst")]
    assert fm.closed and still_registered is False
    fm.close()                              # idempotent


def test_records_show_resolver_names():
    from pybpfnet.dataplanes.resolver import StaticResolver

    names = StaticResolver({"10.0.0.0/24": "lab", "10.0.0.2": "dns"})
    with FlowMonitor(max_flows=4, resolver=names) as fm:
        run(fm, udp4(sport=1000, dport=53, payload=b"q" * 20))
        (flow,) = fm.active()
        assert str(flow) == "1 10.0.0.1:1000(lab) -> 10.0.0.2:53(dns) UDP egress: 1 pkts " \
            "62 bytes"
        run(fm, tcp6("R", sport=5))         # no name for fd00::/8: the plain address
        (rst,) = fm.poll(0)
        assert (rst.src_name, rst.dst_name) == (None, None)
        assert str(rst).startswith("1 [fd00::1]:5 -> [fd00::2]:80 TCP egress")


@pytest.mark.parametrize("kwargs,message", [
    (dict(directions=("ingress", "sideways")), "direction must be 'ingress' or 'egress', "
                                               "not 'sideways'"),
    (dict(directions=()), "expected 'ingress' and/or 'egress'"),
    (dict(position="middle"), "position must be 'first' or 'last'"),
    (dict(ring_size=5000), "ring_size must be a power of two"),
    (dict(max_flows=0), "max_flows must be a whole number >= 1, not 0"),
    (dict(idle_timeout=-1), "idle_timeout must be a number >= 0, not -1"),
])
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FlowMonitor(**kwargs)


def test_unknown_interface_and_direction():
    with pytest.raises(FileNotFoundError, match="flow monitor: no interface 'nope0'"):
        FlowMonitor(["nope0"])
    with FlowMonitor(max_flows=4) as fm:
        with pytest.raises(ValueError, match="not 'up'"):
            fm.program("up")
