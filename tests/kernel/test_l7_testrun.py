"""The L7 sampler's BPF program under BPF_PROG_TEST_RUN: what it samples
(bytes equal to the packet's payload), what it ignores, the snap length,
HTTP/2 connection budgets, and that every packet -- truncated, malformed
or random -- passes with TC_ACT_UNSPEC."""

import errno

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpfnet import BpfError
from pybpfnet.dataplanes._l7_dns import build_query
from pybpfnet.dataplanes.l7 import L7Monitor
from pybpfnet.packet import ARP, Ethernet, IPv4, IPv6, TCP, UDP

TC_ACT_UNSPEC = 0xFFFFFFFF


def udp(sport, dport, payload, v6=False):
    ip = IPv6(src="fd00::1", dst="fd00::2") if v6 else IPv4(src="10.0.0.1", dst="10.0.0.2")
    return bytes(Ethernet() / ip / UDP(sport=sport, dport=dport) / payload)


def tcp(sport, dport, payload, seq=1, v6=False, reverse=False):
    a, b = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    if reverse:
        a, b = b, a
    ip = IPv6(src=a, dst=b) if v6 else IPv4(src=a, dst=b)
    return bytes(Ethernet() / ip / TCP(sport=sport, dport=dport, flags="PA", seq=seq) / payload)


def h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + \
        stream.to_bytes(4, "big") + payload


@pytest.fixture
def mon():
    with L7Monitor() as m:
        yield m


def run(mon, frame, direction="egress"):
    r = mon.program(direction).test_run(frame)
    assert r.retval == TC_ACT_UNSPEC
    return r


@pytest.mark.parametrize("v6", [False, True])
def test_dns_payload_is_sampled_exactly(mon, v6):
    q = build_query("www.example.test", "AAAA", 77)
    run(mon, udp(40000, 53, q, v6), "egress")
    run(mon, tcp(53, 40001, b"\x00\x10" + q[:16], v6=v6), "ingress")
    a, b = mon.samples()
    assert (a.kind, a.proto, a.sport, a.dport, a.direction, a.data, a.payload_len) == \
        ("dns", 17, 40000, 53, "egress", q, len(q))
    assert str(a.src) == ("fd00::1" if v6 else "10.0.0.1") and a.ifindex == 1
    assert (b.kind, b.proto, b.direction, b.data, b.tcp_seq) == \
        ("dns", 6, "ingress", b"\x00\x10" + q[:16], 1)
    s = mon.stats()
    assert (s.packets, s.sampled, s.lost) == (2, 2, 0)


def test_other_traffic_is_ignored(mon):
    run(mon, udp(1000, 1234, b"hello"))
    run(mon, tcp(1000, 22, b"SSH-2.0-x\r\n"))
    run(mon, tcp(40000, 80, b""))                            # no payload
    run(mon, bytes(Ethernet(type=0x0806) / ARP()))
    run(mon, bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2", proto=1) / b"\x08\x00abcd"))
    assert mon.samples() == []
    assert mon.stats().sampled == 0


def test_http_message_starts_only(mon):
    run(mon, tcp(40000, 8080, b"GET / HTTP/1.1\r\n\r\n"))
    run(mon, tcp(8080, 40000, b"HTTP/1.1 200 OK\r\n\r\n"), "ingress")
    run(mon, tcp(8080, 40000, b"<html>body continues"), "ingress")
    run(mon, tcp(40000, 443, b"GET / HTTP/1.1\r\n\r\n"))     # not an HTTP port
    got = [(s.kind, s.data[:4]) for s in mon.samples()]
    assert got == [("http", b"GET "), ("http", b"HTTP")]
    assert mon.stats().skipped == 1


def test_snaplen_and_ports_are_configurable():
    with L7Monitor(snaplen=64, dns_ports=(5353,), http_ports=(9000,)) as m:
        body = b"POST /x HTTP/1.1\r\n" + b"a" * 600
        run(m, tcp(40000, 9000, body))
        run(m, udp(1, 53, build_query("a.b")))
        run(m, udp(5353, 2, build_query("c.d")))
        a, b = m.samples()
        assert (a.data, a.payload_len) == (body[:64], len(body))
        assert (b.kind, b.sport) == ("dns", 5353)
        assert m.stats().truncated == 1
        m.set_ports(dns_ports=(53,), http_ports=())
        run(m, tcp(40000, 9000, body))
        run(m, udp(1, 53, build_query("a.b")))
        assert [s.dport for s in m.samples()] == [53]
    with pytest.raises(ValueError, match="snaplen"):
        L7Monitor(snaplen=0)
    with pytest.raises(ValueError, match="port"):
        L7Monitor(dns_ports=(70000,))


@pytest.mark.parametrize("any_port", [False, True])
def test_http2_preface_then_a_budget_of_segments(any_port):
    with L7Monitor(h2_any_port=any_port) as m:
        port = 9999 if any_port else 8080
        run(m, tcp(40000, port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        for i in range(10):
            run(m, tcp(port, 40000, b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", seq=100 + i,
                       reverse=True), "ingress")
        run(m, tcp(40000, 7777, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        kinds = [s.kind for s in m.samples()]
        assert kinds == ["h2"] * (1 + 8) + (["h2"] if any_port else [])
        # the budget is spent: only segments starting with a HEADERS frame
        headers = h2_frame(1, 0x4, 3, b"\x82")
        run(m, tcp(40000, port, b"\x00\x00\x05\x00\x00\x00\x00\x00\x03hello", seq=50))
        run(m, tcp(40000, port, headers, seq=60))
        run(m, tcp(port, 40000, h2_frame(1, 0x40, 3, b"\x88"), seq=200, reverse=True),
            "ingress")                                      # 0x40: not a HEADERS flag
        run(m, tcp(port, 40000, h2_frame(1, 0x5, 3, b"\x88"), seq=210, reverse=True),
            "ingress")
        assert [s.data for s in m.samples()] == [headers, h2_frame(1, 0x5, 3, b"\x88")]
        assert m.stats().skipped == 2 + 2          # and the 2 SETTINGS-led ones above
        # a FIN ends the connection: nothing more is sampled
        fin = bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2")
                    / TCP(sport=40000, dport=port, flags="FA", seq=70))
        run(m, fin)
        run(m, tcp(40000, port, headers, seq=71))
        assert m.samples() == []
    with L7Monitor() as m:                        # default: no preface search on other ports
        run(m, tcp(40000, 9999, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        assert m.samples() == []


def test_truncated_headers_pass():
    with L7Monitor() as m:
        frame = udp(40000, 53, build_query("a.test"))
        for n in range(34, len(frame) + 1):    # test_run refuses IPv4 frames without an IP header
            run(m, frame[:n])
        # cuts that keep the UDP header and some payload are sampled, with what is there
        assert [s.data for s in m.samples()] == [frame[42:n] for n in range(43, len(frame) + 1)]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(min_size=14, max_size=300),
    st.tuples(st.sampled_from([53, 80, 8080]), st.binary(max_size=300), st.booleans(),
              st.booleans()).map(lambda t: (tcp if t[2] else udp)(40000, t[0], t[1], v6=t[3])),
    st.tuples(st.sampled_from([53, 80]), st.binary(max_size=300), st.integers(0, 120))
    .map(lambda t: tcp(40000, t[0], t[1])[:-t[2] or None])))
def test_any_frame_passes(mon, frame):
    try:
        r = mon.program("ingress").test_run(frame)
    except BpfError as e:
        # BPF_PROG_TEST_RUN itself refuses IP frames shorter than their IP header
        assert e.errno == errno.EINVAL and len(frame) < 14 + 40
        return
    assert r.retval == TC_ACT_UNSPEC
    for s in mon.samples():
        assert len(s.data) <= 256


def test_flow_monitor_records_carry_resolver_names():
    from pybpfnet.dataplanes.flowmon import FlowMonitor
    from pybpfnet.dataplanes.resolver import StaticResolver

    names = StaticResolver({"10.0.0.0/24": "lab", "10.0.0.2": "dns"})
    with FlowMonitor(max_flows=16, resolver=names) as fm:
        fm.program("egress").test_run(udp(1000, 53, b"q"))
        (flow,) = fm.active()
        assert (flow.src_name, flow.dst_name) == ("lab", "dns")
        (rec,) = fm.flush()
        d = rec.to_dict()
        assert (d["src_name"], d["dst_name"]) == ("lab", "dns")
    with FlowMonitor(max_flows=16) as fm:
        fm.program("egress").test_run(udp(1000, 53, b"q"))
        (rec,) = fm.flush()
        assert rec.src_name is None and "src_name" not in rec.to_dict()


def test_records_by_poll_iteration_and_async_for(mon):
    import asyncio
    import struct

    def answer(q):
        r = bytearray(q)
        r[2] |= 0x80
        r[7] = 1
        return bytes(r) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 9])

    q = build_query("async.test", "A", 5)
    run(mon, udp(40000, 53, q), "egress")
    r = bytes(Ethernet() / IPv4(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=53, dport=40000)
              / answer(q))
    run(mon, r, "ingress")

    async def first():
        async for rec in mon:
            return rec

    rec = asyncio.run(asyncio.wait_for(first(), 10))
    assert (rec.qname, rec.rcode, rec.answers, rec.protocol) == \
        ("async.test", "NOERROR", ("10.0.0.9",), "udp")
    assert rec.latency_ns > 0 and rec.ifindex == 1
    q2 = build_query("iter.test", "A", 6)
    run(mon, udp(40001, 53, q2), "egress")
    assert mon.poll(0) == [] and mon.stats().pending == 1
    (waiting,) = mon.flush()
    assert (waiting.qname, waiting.rcode, waiting.latency_ns) == ("iter.test", None, None)
    assert mon.stats().pending == 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(directions="sideways"), "direction must be 'ingress' or 'egress', not 'sideways'"),
    (dict(position="middle"), "position must be 'first' or 'last'"),
    (dict(snaplen=0), r"snaplen must be an int in 1\.\.512 bytes, not 0"),
    (dict(ring_size=4097), "ring_size must be a power of two"),
    (dict(max_pending=0), "max_pending must be a whole number >= 1, not 0"),
    (dict(dns_ports=(70000,)), r"port must be an int in 1\.\.65535, not 70000"),
])
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L7Monitor(**kwargs)


def test_unknown_interface_and_closed():
    with pytest.raises(FileNotFoundError, match="L7 monitor: no interface 'nope0'"):
        L7Monitor(["nope0"])
    mon = L7Monitor()
    assert not mon.closed
    with pytest.raises(ValueError, match="not 'up'"):
        mon.program("up")
    mon.close()
    assert mon.closed
    mon.close()                             # idempotent
