"""The capture programs (TC and XDP) under BPF_PROG_TEST_RUN: record layout, snap
length truncation, the lost counter with a full ring, and a differential
test of the BPF filter evaluation against the compiled filter's Python
reference (and the expression tree) on generated filters and frames."""

import asyncio
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from pybpfnet.dataplanes._cap_filter import evaluate, packet_fields, parse_filter
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from strategies import filter_expressions, primitives  # noqa: E402
from pybpfnet.dataplanes.capture import Capture, compile_filter
from pybpfnet.packet import ARP, Ethernet, fragment, tcp_packet, udp_packet
from pybpfnet.testing import packets


@pytest.fixture(scope="module")
def cap():
    with Capture(snaplen=1514) as c:
        yield c


@pytest.fixture(scope="module")
def xdp_cap():
    with Capture(snaplen=64, hook="xdp") as c:
        yield c


def run(cap, frame, direction="egress"):
    """test_run one frame; the packet it captured (or None)."""
    cap.program(direction).test_run(frame)
    got = cap.poll(0)
    assert len(got) <= 1
    return got[0] if got else None


def test_record_fields_and_stats():
    frame = bytes(udp_packet("10.0.0.1", "10.0.0.2", 4000, 53, b"x" * 100))
    with Capture(filter="udp and dst port 53", snaplen=64) as c:
        before = c.stats()
        assert before == type(before)(0, 0, 0, 0)
        c.program("ingress").test_run(frame, repeat=3)
        c.program("egress").test_run(bytes(Ethernet() / ARP()))
        got = c.poll(1)
        assert [(p.direction, p.ifindex, p.orig_len, p.data) for p in got] == \
            [("ingress", 1, len(frame), frame[:64])] * 3
        assert all(p.truncated for p in got)
        assert got[0].mono_ns <= got[1].mono_ns <= got[2].mono_ns
        assert c.stats().to_dict() == {"seen": 4, "captured": 3, "filtered": 1, "lost": 0}
        assert "UDP 4000 > 53" in str(got[0])


@pytest.mark.parametrize("snaplen", [1, 14, 60, 61, 1000, 16384])
def test_snaplen_truncates(snaplen):
    frame = bytes(tcp_packet("fd00::1", "fd00::2", 1, 2, payload=b"p" * 1000))   # 1074 bytes
    with Capture(snaplen=snaplen) as c:
        c.program("egress").test_run(frame)
        (p,) = c.poll(1)
    assert p.orig_len == len(frame) and p.data == frame[:snaplen]
    assert p.truncated == (snaplen < len(frame))


def test_snaplen_limits():
    with pytest.raises(ValueError, match="snaplen must be 1 .. 16384"):
        Capture(snaplen=0)
    with pytest.raises(ValueError, match="snaplen must be 1 .. 16384"):
        Capture(snaplen=16385)


def test_full_ring_counts_lost_packets():
    frame = bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 2, b"z" * 1400))
    # one page of ring: 4096 bytes hold two records of 8 + 24 + 1442 bytes
    with Capture(snaplen=16384, ring_size=4096) as c:
        c.program("egress").test_run(frame, repeat=10)
        s = c.stats()
        assert (s.seen, s.captured, s.lost) == (10, 2, 8)
        assert len(c.poll(1)) == 2
        c.program("egress").test_run(frame)           # room again
        assert len(c.poll(1)) == 1 and c.stats().lost == 8


def test_count_limits_leave_the_rest_pending(tmp_path):
    frames = [bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53, bytes([i]) * 10)) for i in range(5)]
    with Capture(filter="udp") as c:
        for f in frames:
            c.program("egress").test_run(f)
        gen = c.packets(count=5)
        assert next(gen).data == frames[0]
        gen.close()                                   # the other four stay
        assert c.write_pcap(tmp_path / "a.pcap", count=2) == 2
        assert [p.data for p in c.packets(count=2, duration=1)] == frames[3:]
    from pybpfnet.packet.pcap import read_pcap
    assert [r.data for r in read_pcap(tmp_path / "a.pcap")] == frames[1:3]


def test_async_iteration():
    frame = bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53))

    async def main(c):
        got = []
        async for p in c:
            got.append(p)
            if len(got) == 3:
                break
        return got

    with Capture(filter="udp") as c:
        c.program("egress").test_run(frame, repeat=3)
        got = asyncio.run(main(c))
    assert [p.data for p in got] == [frame] * 3


def test_async_iteration_ends_on_close_and_unregisters_the_ring():
    """Closing the capture ends ``async for``; the event loop no longer
    watches the ring's fd afterwards (the fd number can be reused)."""
    frame = bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53))
    c = Capture(filter="udp")
    fd = c.fileno()

    async def main():
        got = []
        async for p in c:
            got.append(p)
            c.close()                       # from inside the loop: ends at the next turn
        return got, asyncio.get_running_loop().remove_reader(fd)

    c.program("egress").test_run(frame, repeat=2)
    assert not c.closed
    got, still_registered = asyncio.run(asyncio.wait_for(main(), 5))
    assert len(got) == 2 and got[0].data == frame    # the batch polled before close
    assert c.closed and still_registered is False
    assert list(c) == [] and list(c.packets(count=3)) == []
    c.close()                               # idempotent


@pytest.mark.parametrize("kwargs,message", [
    (dict(directions=("ingress", "sideways")), "direction must be 'ingress' or 'egress', "
                                               "not 'sideways'"),
    (dict(directions=()), "expected 'ingress' and/or 'egress'"),
    (dict(directions=("egress", "egress")), "at most once"),
    (dict(position="middle"), "position must be 'first' or 'last'"),
    (dict(ring_size=5000), "ring_size must be a power of two"),
    (dict(ring_size=1024), "ring_size must be a power of two >= 4096"),
    (dict(ring_size="4096"), "ring_size must be a power of two"),
    (dict(snaplen=1.5), "snaplen must be 1 .. 16384 (bytes, a whole number), not 1.5"),
    (dict(snaplen=True), "snaplen must be 1 .. 16384"),
    (dict(hook="kprobe"), "hook must be 'tc' or 'xdp'"),
    (dict(hook="xdp", xdp_mode="fast"), "xdp_mode must be 'auto', 'native' or 'generic'"),
    (dict(hook="xdp", directions="egress"), "ingress only"),
    (dict(filter=443), "filter must be a tcpdump-like expression"),
])
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Capture(**kwargs)


def test_unknown_interface_and_direction():
    with pytest.raises(FileNotFoundError, match="capture: no interface 'nope0'"):
        Capture(["nope0"])
    with Capture(directions="egress") as c:
        with pytest.raises(ValueError, match="direction must be 'ingress' or 'egress', not 'up'"):
            c.program("up")
        assert c.program("ingress").name != c.program("egress").name   # both loaded


def test_set_filter_applies_to_the_next_packet(cap):
    frame = bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53))
    cap.set_filter("tcp")
    assert run(cap, frame) is None
    cap.set_filter("udp port 53")
    assert run(cap, frame).data == frame
    cap.set_filter(None)
    assert run(cap, bytes(Ethernet() / ARP())) is not None


def test_no_match_filter_and_bad_filters(cap):
    cap.set_filter("tcp and not tcp")
    assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53))) is None
    with pytest.raises(ValueError, match="position 5"):
        cap.set_filter("host bogus")
    assert cap.filter.terms == ()                  # the old filter stays, in BPF too
    assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53))) is None
    with pytest.raises(ValueError, match="at most 32"):
        Capture(filter=" and ".join("(port %d or port %d)" % (i, i + 1) for i in range(1, 12, 2)))


def runnable(frame):
    """Whether BPF_PROG_TEST_RUN takes the frame: it needs more than an
    Ethernet header, and for EtherType IPv4/IPv6 a whole IP header (it sets
    the skb up from it: net/bpf/test_run.c)."""
    etype = frame[12:14]
    return len(frame) > 14 and not (etype == b"\x08\x00" and len(frame) < 34) and \
        not (etype == b"\x86\xdd" and len(frame) < 54)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(expr=filter_expressions(), frames=st.lists(packets(), min_size=1, max_size=10),
       direction=st.sampled_from(("ingress", "egress")))
def test_kernel_filter_agrees_with_reference(cap, expr, frames, direction):
    try:
        f = compile_filter(expr)
    except ValueError:
        assume(False)
    cap.set_filter(f)
    tree = parse_filter(expr)
    for frame in frames:
        if not runnable(frame):
            continue
        want = f.matches(frame)
        assert want == evaluate(tree, packet_fields(frame))
        got = run(cap, frame, direction)
        assert (got is not None) == want, (expr, str(f), frame.hex())
        if got is not None:
            assert got.data == frame[:1514] and got.orig_len == len(frame)
            assert got.direction == direction


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(prim=primitives(ports=(53, 80)), negate=st.booleans(),
       frames=st.lists(packets(ports=(53, 80), malformed=False), min_size=4, max_size=12))
def test_kernel_primitives_agree_with_reference(cap, prim, negate, frames):
    # one primitive at a time, on frames whose ports often meet the filter's,
    # so that a wrong field, mask or family in BPF shows up
    expr = ("not " if negate else "") + prim
    f = compile_filter(expr)
    cap.set_filter(f)
    for frame in frames:
        if runnable(frame):
            assert (run(cap, frame) is not None) == f.matches(frame), (expr, frame.hex())


@pytest.mark.parametrize("src, dst", [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_non_first_fragments_have_no_ports(cap, src, dst):
    # the later fragments' data looks like ports 53 -> 53: BPF must not read it as ports
    frags = fragment(udp_packet(src, dst, 53, 53, b"\x00\x35" * 32), 16)
    cap.set_filter("port 53")
    got = [run(cap, bytes(f)) is not None for f in frags]
    assert len(frags) > 2 and got == [True] + [False] * (len(frags) - 1)
    cap.set_filter("udp and not port 53")      # but the protocol is known
    got = [run(cap, bytes(f)) is not None for f in frags]
    assert got == [False] + [True] * (len(frags) - 1)


def test_xdp_hook_filters_and_truncates():
    frames = [bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 53, b"d" * 300)),
              bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 54, b"d" * 300)),
              bytes(tcp_packet("fd00::1", "fd00::2", 7, 53, payload=b"t" * 10))]
    with Capture(filter="port 53", snaplen=100, hook="xdp") as c:
        assert c.directions == ("ingress",)
        for f in frames:
            assert c.program().test_run(f).retval == 2            # XDP_PASS
        got = c.poll(1)
        assert [(p.direction, p.orig_len, p.data) for p in got] == \
            [("ingress", len(f), f[:100]) for f in (frames[0], frames[2])]
        assert c.stats().to_dict() == {"seen": 3, "captured": 2, "filtered": 1, "lost": 0}
        with pytest.raises(ValueError, match="no 'egress' program"):
            c.program("egress")
    with pytest.raises(ValueError, match="ingress only"):
        Capture(hook="xdp", directions=("ingress", "egress"))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(prim=primitives(ports=(53, 80)),
       frames=st.lists(packets(ports=(53, 80), malformed=False), min_size=4, max_size=10))
def test_xdp_filter_agrees_with_reference(xdp_cap, prim, frames):
    f = compile_filter(prim)
    xdp_cap.set_filter(f)
    for frame in frames:
        if runnable(frame):
            xdp_cap.program().test_run(frame)
            assert bool(xdp_cap.poll(0)) == f.matches(frame), (prim, frame.hex())


def test_big_filters_use_every_term_and_test(cap):
    # 32 terms, the last one the only match; and a term of 8 tests
    ports = list(range(1000, 1032))
    cap.set_filter(" or ".join("(udp and dst port %d)" % p for p in ports))
    assert len(cap.filter.terms) == 32
    for p in (1000, 1031):
        assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, p))) is not None
    assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 1032))) is None
    eight = ("udp and ip and src host 10.0.0.1 and dst host 10.0.0.2 and src port 1 "
             "and dst port 2 and net 10.0.0.0/8 and port 2")
    cap.set_filter(eight)
    assert len(cap.filter.terms[0]) == 8
    assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 2))) is not None
    assert run(cap, bytes(udp_packet("10.0.0.1", "10.0.0.2", 1, 3))) is None
