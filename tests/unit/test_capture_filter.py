"""Capture filters (parser, compiler to disjunctive normal form, the two
reference evaluators, the frame parser mirroring cap_parse.h) and the
pcap writer/reader. No privileges needed."""

import io
import ipaddress
import struct

import pathlib
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from pybpfnet.dataplanes._cap_filter import (ADDR, DPORT, FAMILY, PORT, PROTO, SADDR, Lit,
                                             PacketFields, compile_filter, evaluate,
                                             packet_fields, parse_filter)
from pybpfnet._strategies import DEFAULT_PORTS, DEFAULT_V4, DEFAULT_V6
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from strategies import NETS, filter_expressions  # noqa: E402
from pybpfnet.packet import (ARP, ICMP, TCP, UDP, Ethernet, IPv4, IPv6, ICMPv6, fragment,
                             parse, tcp_packet, udp_packet, with_ipv6_extensions, with_vlan)
from pybpfnet.packet.pcap import MAGIC_NS, PcapRecord, PcapWriter, read_pcap
from pybpfnet.testing import packets, well_formed_packets

TCP_LIT = ("lit", Lit(PROTO, proto=6))
UDP_LIT = ("lit", Lit(PROTO, proto=17))
PORT53 = ("lit", Lit(PORT, port=53))


def udp4(src="10.0.0.1", dst="10.0.0.2", sport=1000, dport=53, payload=b"q"):
    return bytes(udp_packet(src, dst, sport, dport, payload))


# ------------------------------------------------------------------ parsing

def test_and_or_have_equal_precedence_left_to_right():
    # pcap-filter(7): "and" and "or" have the same precedence, left to right
    assert parse_filter("tcp or udp and port 53") == \
        ("and", (("or", (TCP_LIT, UDP_LIT)), PORT53))
    assert parse_filter("tcp or (udp and port 53)") == \
        ("or", (TCP_LIT, ("and", (UDP_LIT, PORT53))))


def test_not_binds_tightest_and_symbols_are_operators():
    assert parse_filter("not tcp and udp") == ("and", (("not", TCP_LIT), UDP_LIT))
    assert parse_filter("!tcp&&udp||port 53") == parse_filter("not tcp and udp or port 53")


def test_primitives():
    v4 = Lit(SADDR, family=4, addr=bytes(12) + bytes((10, 0, 0, 1)),
             mask=bytes(12) + b"\xff" * 4)
    assert parse_filter("src host 10.0.0.1") == ("lit", v4)
    assert parse_filter("src 10.0.0.1") == ("lit", v4)
    net6 = parse_filter("net fd00::/16")[1]
    assert (net6.field, net6.family, net6.addr[:2], net6.mask) == \
        (ADDR, 6, b"\xfd\x00", b"\xff\xff" + bytes(14))
    assert parse_filter("udp dst port 53") == ("and", (UDP_LIT, ("lit", Lit(DPORT, port=53))))
    assert parse_filter("icmp") == ("lit", Lit(PROTO, family=4, proto=1))
    assert parse_filter("icmp6") == ("lit", Lit(PROTO, family=6, proto=58))
    assert parse_filter("ip6") == ("lit", Lit(FAMILY, family=6))
    assert parse_filter("ip proto 47") == ("lit", Lit(PROTO, family=4, proto=47))
    assert parse_filter("PORT domain") == ("lit", Lit(PORT, port=53))   # /etc/services


@pytest.mark.parametrize("expr, position, words", [
    ("()", 1, "a primitive"),
    ("host", 4, "an IPv4 or IPv6 address"),
    ("host 10.0.0", 5, "an IPv4 or IPv6 address"),
    ("host example.com", 5, "an IPv4 or IPv6 address"),
    ("tcp port 80 )", 12, "'and', 'or' or the end"),
    ("(tcp or udp", 11, "')'"),
    ("port 65536", 5, "port number"),
    ("net 10.0.0.1/8", 4, "host bits set"),
    ("tcp and", 7, "a primitive"),
    ("frob", 0, "a primitive"),
    ("src port", 8, "port number"),
    ("dst and tcp", 4, "'host', 'net', 'port' or an address"),
    ("tcp or @", 7, "a primitive"),
    ("udp $x", 4, "'and', 'or' or the end"),
    ("proto 256", 6, "protocol number"),
    ("tcp & udp", 4, "'&&' or '||'"),
    ("tcp |", 4, "'&&' or '||'"),
])
def test_syntax_errors_name_the_position(expr, position, words):
    with pytest.raises(ValueError) as e:
        compile_filter(expr)
    assert "at position %d" % position in str(e.value) and words in str(e.value)


def test_filters_that_do_not_fit_name_the_limit():
    big = " and ".join("(port %d or port %d)" % (i, i + 1) for i in range(1, 12, 2))
    with pytest.raises(ValueError, match="needs 64 terms .* at most 32"):
        compile_filter(big)
    long_term = " and ".join("port %d" % i for i in range(9))
    with pytest.raises(ValueError, match="term of 9 tests; .* at most 8"):
        compile_filter(long_term)
    assert len(compile_filter(" and ".join("port %d" % i for i in range(8))).terms[0]) == 8
    huge = " and ".join("(port %d or port %d)" % (i, i + 1) for i in range(1, 40, 2))
    with pytest.raises(ValueError, match="more than 4096 terms"):
        compile_filter(huge)


def test_long_and_deep_expressions():
    chain = " and ".join(["tcp"] * 2000)
    assert parse_filter(chain) == ("and", (TCP_LIT,) * 2000)
    assert compile_filter(chain).terms == compile_filter("tcp").terms
    with pytest.raises(ValueError, match="nested too deeply"):
        compile_filter("(" * 5000 + "tcp" + ")" * 5000)


def test_simplification():
    assert compile_filter("tcp and not tcp").terms == ()
    assert compile_filter("tcp or (tcp and port 80)").terms == compile_filter("tcp").terms
    assert compile_filter(None).terms == ((),) and compile_filter("  ").terms == ((),)
    everything = compile_filter(None)
    for frame in (udp4(), bytes(Ethernet() / ARP()), b"\x01" * 14):
        assert everything.matches(frame)
        assert not compile_filter("tcp and not tcp").matches(frame)


# ------------------------------------------------------------------ semantics

def test_port_means_tcp_udp_sctp_first_fragments_only():
    f = compile_filter("port 53")
    assert f.matches(udp4(dport=53)) and f.matches(udp4(sport=53, dport=9))
    icmp = bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=53, code=53)
                 / b"\x00\x35\x00\x35")
    assert not f.matches(icmp)
    frags = fragment(udp_packet("10.0.0.1", "10.0.0.2", 53, 53, b"z" * 64), 16)
    assert f.matches(bytes(frags[0])) and not f.matches(bytes(frags[1]))
    assert compile_filter("not port 53").matches(bytes(Ethernet() / ARP()))


def test_vlan_and_ipv6_extension_headers_are_looked_through():
    p = udp_packet("fd00::1", "fd00::2", 5, 53, b"x")
    assert compile_filter("udp and dst port 53 and src net fd00::/64").matches(
        bytes(with_ipv6_extensions(p)))
    assert compile_filter("dst port 53 and host 10.0.0.2").matches(bytes(with_vlan(
        udp_packet("10.0.0.1", "10.0.0.2", 5, 53, b"x"), 7)))


def test_icmp_is_per_family_and_net_masks():
    v4 = bytes(Ethernet() / IPv4(src="10.1.2.3", dst="192.168.7.7") / ICMP())
    v6 = bytes(Ethernet() / IPv6(src="fd00::1", dst="2001:db8::7") / ICMPv6())
    assert compile_filter("icmp").matches(v4) and not compile_filter("icmp").matches(v6)
    assert compile_filter("icmp6").matches(v6) and not compile_filter("icmp6").matches(v4)
    assert compile_filter("src net 10.0.0.0/8 and dst net 192.168.0.0/16").matches(v4)
    assert not compile_filter("src net 10.0.0.0/16").matches(v4)
    assert not compile_filter("net 10.0.0.0/8").matches(v6)     # an IPv4 net: IPv4 only
    assert compile_filter("net ::/0").matches(v6) and not compile_filter("net ::/0").matches(v4)


def test_packet_fields_of_malformed_frames():
    assert packet_fields(b"") == PacketFields()
    assert packet_fields(bytes(Ethernet() / ARP())) == PacketFields()
    short = udp4()[:14 + 20 + 2]          # UDP header cut: addresses, no ports
    f = packet_fields(short)
    assert (f.family, f.proto, f.has_ports) == (4, 17, False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed_packets())
def test_packet_fields_agree_with_the_packet_parser(pkt):
    f = packet_fields(bytes(pkt))
    ip = pkt.get(IPv4) or pkt.get(IPv6)
    assert f.family == (4 if IPv4 in pkt else 6)
    assert ipaddress.ip_address(f.saddr[12:] if f.family == 4 else f.saddr) == ip.src
    assert ipaddress.ip_address(f.daddr[12:] if f.family == 4 else f.daddr) == ip.dst
    l4 = pkt.get(TCP) or pkt.get(UDP)
    assert f.has_ports == (l4 is not None)
    if l4 is not None:
        assert (f.sport, f.dport) == (l4.sport, l4.dport)
        assert f.proto == (6 if TCP in pkt else 17)


def _oracle(kind, qual, value, pkt):
    """A primitive's verdict from the packet parser and ipaddress, written
    apart from the compiler (catches wrong masks, fields or families)."""
    ip = pkt.get(IPv4) or pkt.get(IPv6)
    l4 = pkt.get(TCP) or pkt.get(UDP)
    if ip is None:
        return False
    if kind == "host":
        value = ipaddress.ip_network(value)
        kind = "net"
    if kind == "net":
        net = ipaddress.ip_network(value)
        addrs = {"src": [ip.src], "dst": [ip.dst], "": [ip.src, ip.dst]}[qual]
        return any(a.version == net.version and a in net for a in addrs)
    if kind == "port":
        ports = {"src": [l4.sport], "dst": [l4.dport], "": [l4.sport, l4.dport]}[qual] \
            if l4 is not None else []
        return value in ports
    last = [layer for layer in pkt.layers if hasattr(layer, "next_header")]
    proto = ip.proto if IPv4 in pkt else last[-1].next_header
    return {"tcp": proto == 6, "udp": proto == 17, "ip": IPv4 in pkt, "ip6": IPv6 in pkt,
            "icmp": IPv4 in pkt and proto == 1, "icmp6": IPv6 in pkt and proto == 58}[kind]


_PRIMITIVES = st.one_of(
    st.tuples(st.just("host"), st.sampled_from(("", "src", "dst")),
              st.sampled_from(DEFAULT_V4 + DEFAULT_V6)),
    st.tuples(st.just("net"), st.sampled_from(("", "src", "dst")), st.sampled_from(NETS)),
    st.tuples(st.just("port"), st.sampled_from(("", "src", "dst")),
              st.sampled_from(DEFAULT_PORTS)),
    st.tuples(st.sampled_from(("tcp", "udp", "ip", "ip6", "icmp", "icmp6")), st.just(""),
              st.just(None)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PRIMITIVES, well_formed_packets(), st.sampled_from(("plain", "vlan", "ext", "frag")))
def test_primitives_agree_with_an_independent_oracle(prim, pkt, shape):
    kind, qual, value = prim
    # every field explicit (proto numbers ...); UDP to 6080 is not GUE here
    pkt = parse(bytes(pkt), gue_ports=())
    if shape == "vlan":
        pkt = parse(bytes(with_vlan(pkt, 5)), gue_ports=())
    elif shape == "ext" and IPv6 in pkt:
        pkt = parse(bytes(with_ipv6_extensions(pkt)), gue_ports=())
    elif shape == "frag":
        pkt = parse(bytes(fragment(pkt, 8)[-1]), gue_ports=())      # a non-first fragment: no ports
    text = " ".join(w for w in (qual, kind, "" if value is None else str(value)) if w)
    want = _oracle(kind, qual, value, pkt)
    assert compile_filter(text).matches(bytes(pkt)) == want, (text, pkt)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_expressions(), st.lists(packets(), min_size=1, max_size=8))
def test_compiled_form_equals_the_expression_tree(expr, frames):
    try:
        f = compile_filter(expr)
    except ValueError as e:
        assert "terms" in str(e) or "tests" in str(e), e
        assume(False)
    tree = parse_filter(expr)
    for frame in frames:
        fields = packet_fields(frame)
        assert f.matches_fields(fields) == evaluate(tree, fields), (expr, str(f), frame.hex())


@settings(max_examples=200, deadline=None)
@given(filter_expressions())
def test_str_of_a_compiled_filter_compiles_to_the_same_terms(expr):
    try:
        f = compile_filter(expr)
    except ValueError:
        assume(False)
    assume(f.terms and all(f.terms))
    assert compile_filter(str(f)).terms == f.terms


# ------------------------------------------------------------------ pcap

def test_pcap_round_trip_and_header():
    recs = [PcapRecord(1_700_000_000_123_456_789, udp4(), len(udp4())),
            PcapRecord(1_700_000_001_000_000_001, udp4()[:20], 500)]
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=64) as w:
        for r in recs:
            w.write(r.data, r.timestamp_ns, r.orig_len)
    raw = buf.getvalue()
    assert struct.unpack_from("=IHHiIII", raw) == (MAGIC_NS, 2, 4, 0, 0, 64, 1)
    assert read_pcap(raw) == recs
    assert read_pcap(io.BytesIO(raw))[1].truncated


def test_pcap_reader_takes_microseconds_and_big_endian():
    data = udp4()
    raw = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + \
        struct.pack(">IIII", 10, 7, len(data), len(data)) + data
    (rec,) = read_pcap(raw)
    assert (rec.timestamp_ns, rec.data) == (10_000_007_000, data)
    with pytest.raises(ValueError, match="cut"):
        read_pcap(raw[:-1])
    with pytest.raises(ValueError, match="magic"):
        read_pcap(b"\x0a\x0d\x0d\x0a" + bytes(40))


def test_pcap_writer_rejects_inconsistent_records(tmp_path):
    with PcapWriter(tmp_path / "x.pcap", snaplen=10) as w:
        with pytest.raises(ValueError, match="longer than the snaplen"):
            w.write(bytes(11), 0)
        with pytest.raises(ValueError, match="shorter than"):
            w.write(bytes(5), 0, orig_len=4)
        w.write(bytes(5), 0, orig_len=9)
    assert read_pcap(tmp_path / "x.pcap") == [PcapRecord(0, bytes(5), 9)]


def test_pcap_write_records_checks_each(tmp_path):
    buf = io.BytesIO()
    w = PcapWriter(buf, snaplen=8)
    w.write_records([(5, b"abc", 3), (1_000_000_007, b"12345678", 99)])
    with pytest.raises(ValueError, match="shorter than"):
        w.write_records([(0, b"abc", 2)])
    assert w.count == 2
    assert read_pcap(buf.getvalue()) == [PcapRecord(5, b"abc", 3),
                                         PcapRecord(1_000_000_007, b"12345678", 99)]


def test_cli_splits_interfaces_from_the_expression():
    from pybpfnet.dataplanes.capture_cli import split_interfaces
    assert split_interfaces(["eth0", "veth1", "udp", "port", "53"]) == \
        (["eth0", "veth1"], ["udp", "port", "53"])
    assert split_interfaces(["eth0"]) == (["eth0"], [])
    assert split_interfaces(["eth0", "(tcp", "or", "udp)"]) == (["eth0"], ["(tcp", "or", "udp)"])
    assert split_interfaces(["eth0", "!icmp"]) == (["eth0"], ["!icmp"])
    assert split_interfaces(["eth0", "Host", "10.0.0.1"]) == (["eth0"], ["Host", "10.0.0.1"])


def test_scapy_reads_our_pcap(tmp_path):
    scapy_utils = pytest.importorskip("scapy.utils")
    from scapy.layers.inet import IP, UDP as SUDP
    frames = [udp4(dport=53, payload=b"a" * 40), bytes(tcp_packet("10.0.0.9", "10.0.0.2", 1, 2))]
    path = tmp_path / "s.pcap"
    with PcapWriter(path, snaplen=60) as w:
        w.write(frames[0][:60], 1_700_000_000_000_000_123, len(frames[0]))
        w.write(frames[1], 1_700_000_000_500_000_000)
    pkts = scapy_utils.rdpcap(str(path))
    assert len(pkts) == 2
    assert pkts[0][IP].src == "10.0.0.1" and pkts[0][SUDP].dport == 53
    assert pkts[0].wirelen == len(frames[0]) and len(bytes(pkts[0])) == 60
    assert pkts[1][IP].src == "10.0.0.9"
    assert int(pkts[0].time * 10**9) // 1000 == 1_700_000_000_000_000   # ns-precise time
    assert parse(bytes(pkts[1])).get(TCP).dport == 2
