"""pybpfnet.packet: the model's API (layer access, errors, repr), Template,
GUE/IPIP, flows, checksum checks and the hostile-packet helpers."""

import ipaddress
import pathlib
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import strategies as S  # noqa: E402
from pybpfnet import packet as pk  # noqa: E402
from pybpfnet.packet import (ARP, GUE, GUE_PORT, ICMP, MSS, NOP, TCP, UDP, BuildError,  # noqa: E402
                             Dot1Q, Ethernet, ICMPv6, IPv4, IPv4Flags, IPv6, IPv6DestOpts,
                             IPv6Fragment, IPv6HopByHop, IPv6Routing, Packet, Padding,
                             ParseError, Raw, TCPFlags, Template, parse)

pytest.importorskip("scapy.all")
from scapy import all as sc  # noqa: E402
from scapy.layers import inet6 as sc6  # noqa: E402

FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


# ---------------------------------------------------------------------------
# the model

def test_composition_and_layer_access():
    p = Ethernet() / IPv4(src=A4, dst=B4) / TCP(sport=1, dport=2) / b"data"
    assert isinstance(p, Packet) and len(p.layers) == 4
    assert p[TCP].dport == 2 and p.get(UDP) is None and p.get(UDP, 7) == 7
    assert TCP in p and UDP not in p
    assert p[0] is p.layers[0] and p[-1] == Raw(b"data")
    assert p[1:].layers[0] == p[IPv4]
    assert p.payload == b"data"
    assert p.index(TCP) == 2
    assert p.evolve(TCP, dport=80)[TCP].dport == 80
    assert p.replace(TCP, UDP())[UDP] == UDP()
    assert p.remove(Raw).payload == b""
    assert p.insert(1, Dot1Q(vid=5))[Dot1Q].vid == 5
    with pytest.raises(KeyError, match="no UDP layer in Ethernet/IPv4/TCP/Raw"):
        p[UDP]
    inner = Ethernet() / IPv4(src=A4, dst=B4) / IPv4(src="1.1.1.1", dst="2.2.2.2") / UDP()
    assert inner[IPv4, 1].src == ipaddress.IPv4Address("1.1.1.1")
    assert inner.getall(IPv4)[0].src == ipaddress.IPv4Address(A4)
    assert b"ab" / UDP() == Packet((Raw(b"ab"), UDP()))
    assert (IPv4() / b"") == Packet((IPv4(),))


def test_values_are_frozen_hashable_and_converted():
    ip = IPv4(src=A4, dst=0x0A000002)
    assert ip.dst == ipaddress.IPv4Address(B4)
    with pytest.raises(AttributeError):
        ip.ttl = 3
    assert hash(ip) == hash(IPv4(src=A4, dst=B4))
    assert Ethernet(src=b"\x02\x00\x00\x00\x00\x01").src == "02:00:00:00:00:01"
    assert Ethernet(src="02-00-00-00-00-0A").src == "02:00:00:00:00:0a"
    assert TCP(flags="SA").flags == TCPFlags.SYN | TCPFlags.ACK
    assert IPv4(flags="D").flags == IPv4Flags.DF
    with pytest.raises(ValueError, match="unknown TCPFlags letter"):
        TCP(flags="SX")
    with pytest.raises(ValueError):
        Ethernet(src="02:00:00")
    with pytest.raises(TypeError):
        Raw("text")


def test_repr_is_short_and_evaluable():
    p = Ethernet(src="02:00:00:00:00:01") / IPv4(src=A4, dst=B4, flags="D") / TCP(
        sport=1, dport=2, flags="SA", options=(MSS(1400), NOP())) / b"x"
    text = repr(p)
    assert text.startswith("Ethernet(src='02:00:00:00:00:01') / IPv4(src='10.0.0.1'")
    assert "TCPFlags.SYN | TCPFlags.ACK" in text and "MSS(1400)" in text
    assert eval(text, vars(pk)) == p
    assert p.summary() == ("Ethernet 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff / IPv4 10.0.0.1 > "
                           "10.0.0.2 proto auto / TCP 1 > 2 [SA] / Raw 1 bytes")


@FAST
@given(S.packets())
def test_repr_evaluates_back_to_the_packet(p):
    assert eval(repr(p), vars(pk)) == p
    q = parse(bytes(p))
    assert eval(repr(q), vars(pk)) == q


def test_public_names_are_documented():
    for name in pk.__all__:
        obj = getattr(pk, name)
        if callable(obj):
            doc = (obj.__doc__ or "").strip()
            assert doc, name
            first = doc.splitlines()[0]
            assert first.endswith((".", ":")) or len(doc.splitlines()) == 1, name


def test_auto_protocol_numbers():
    def first_fields(p):
        return parse(bytes(p))
    assert first_fields(Ethernet() / b"x")[Ethernet].type == 0x88B5
    assert first_fields(Ethernet() / IPv4())[IPv4].proto == 59
    assert first_fields(Ethernet() / IPv4() / b"x")[IPv4].proto == 253
    assert first_fields(Ethernet() / IPv6() / IPv6())[IPv6].next_header == 41
    assert first_fields(Ethernet() / IPv6() / IPv4())[IPv6].next_header == 4
    assert first_fields(Ethernet() / Dot1Q() / ARP())[Dot1Q].type == 0x0806
    q = first_fields(Ethernet() / IPv6() / IPv6HopByHop() / IPv6Routing() / IPv6Fragment()
                     / IPv6DestOpts() / ICMPv6())
    assert [x.next_header for x in q.layers[1:6]] == [0, 43, 44, 60, 58]


def test_explicit_fields_are_kept_even_when_wrong():
    p = IPv4(src=A4, dst=B4, total_length=99, checksum=0x1234, proto=99) / UDP(
        length=3, checksum=7) / b"abc"
    q = parse(bytes(p) + bytes(99 - 31), first="ipv4")
    assert q[IPv4].total_length == 99 and q[IPv4].checksum == 0x1234
    assert q[IPv4].proto == 99 and type(q.layers[1]) is Raw
    u = parse(bytes(UDP(length=3, checksum=7) / b"abc"), "udp", strict=False)
    assert type(u.layers[0]) is Raw and "length 3" in u.layers[0].error
    errs = pk.checksum_errors(p)
    assert [e.layer for e in errs] == ["IPv4", "UDP"]


def test_build_errors_name_the_field():
    with pytest.raises(BuildError, match="IPv4.ttl=300 does not fit in 8 bits"):
        bytes(IPv4(ttl=300))
    with pytest.raises(BuildError, match="Dot1Q.vid=5000 does not fit in 12 bits"):
        bytes(Ethernet() / Dot1Q(vid=5000))
    with pytest.raises(BuildError, match="TCP.flags"):
        bytes(TCP(flags=0x200))
    with pytest.raises(BuildError, match="IPv4.frag_offset"):
        bytes(IPv4(frag_offset=1 << 13))
    with pytest.raises(BuildError, match="total length 70020 exceeds 65535"):
        bytes(IPv4() / bytes(70000))
    with pytest.raises(BuildError, match="Padding must be the last layer"):
        bytes(Packet((IPv4(), Padding(b"x"), UDP())))
    with pytest.raises(TypeError):
        Packet((IPv4(), "not a header"))


def test_complete_and_recompute():
    p = Ethernet() / IPv4(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"hello"
    full = p.complete()
    assert full[IPv4].total_length == 33 and full[UDP].length == 13
    assert full[IPv4].checksum is not None and full[Ethernet].type == 0x0800
    assert bytes(full) == bytes(p)
    parsed = parse(bytes(p))
    changed = parsed.evolve(UDP, dport=99)
    assert pk.checksum_errors(changed)                  # stale explicit checksum
    assert pk.checksum_errors(changed.recompute()) == []
    assert changed.recompute()[UDP].checksum is None
    assert changed.recompute(checksums=False)[UDP].checksum == parsed[UDP].checksum


def test_offsets():
    p = Ethernet() / Dot1Q() / IPv4(options=(NOP(),)) / TCP() / b"xy" / Padding(b"\0\0")
    assert p.offsets() == (0, 14, 18, 42, 62, 64)


# ---------------------------------------------------------------------------
# Template

_OPEN = {
    Ethernet: {"src": st.integers(0, (1 << 48) - 1), "dst": st.integers(0, (1 << 48) - 1)},
    Dot1Q: {"vid": st.integers(0, 0xFFF)},
    IPv4: {"src": S.u32, "dst": S.u32, "ttl": S.u8, "tos": S.u8, "id": S.u16},
    IPv6: {"src": st.integers(0, (1 << 128) - 1), "dst": st.integers(0, (1 << 128) - 1),
           "hop_limit": S.u8, "flow_label": st.integers(0, 0xFFFFF)},
    TCP: {"sport": S.u16, "dport": S.u16, "seq": S.u32, "ack": S.u32,
          "flags": st.integers(0, 0x1FF), "window": S.u16},
    UDP: {"sport": S.u16, "dport": S.u16},
    ICMP: {"id": S.u16, "seq": S.u16, "type": S.u8},
    ICMPv6: {"id": S.u16, "seq": S.u16, "code": S.u8},
    GUE: {"flags": S.u16},
}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(S.packets(max_depth=1), st.data())
def test_template_equals_full_build(p, data):
    choices = [(i, name) for i, layer in enumerate(p.layers)
               for name in _OPEN.get(type(layer), ())]
    if type(p.layers[-1]) is Raw:
        choices.append((len(p.layers) - 1, "data"))
    if not choices:
        return
    picked = data.draw(st.lists(st.sampled_from(choices), min_size=1, max_size=4, unique=True))
    values = []
    for i, name in picked:
        if name == "data":
            values.append(data.draw(st.binary(min_size=len(p.layers[i].data),
                                              max_size=len(p.layers[i].data))))
        else:
            values.append(data.draw(_OPEN[type(p.layers[i])][name]))
    t = Template(p, *picked)
    expected = p
    for (i, name), v in zip(picked, values):
        expected = expected.evolve(i, **{name: v})
    assert t.build(*values) == bytes(expected)


def test_template_by_name_and_values_of_any_kind():
    p = pk.udp_packet(A6, B6, 1, 2, b"payload")
    t = Template(p, "IPv6.src", "UDP.sport", "Raw.data")
    out = t.build("2001:db8::99", 4000, b"PAYLOAD")
    assert out == bytes(p.evolve(IPv6, src="2001:db8::99").evolve(UDP, sport=4000)
                        .evolve(Raw, data=b"PAYLOAD"))
    assert t.build_many([(1, 2, b"1234567")])[0] == t.build(1, 2, b"1234567")
    inner = Ethernet() / IPv4(src=A4, dst=B4) / IPv4(src=A4, dst=B4) / UDP()
    t2 = Template(inner, "IPv4[1].dst")
    assert t2.build(5) == bytes(inner.evolve((IPv4, 1), dst=5))


def test_template_keeps_explicit_checksums_and_reports_bad_values():
    p = IPv4(src=A4, dst=B4) / UDP(sport=1, dport=2, checksum=0xBEEF)
    t = Template(p, "UDP.sport")
    assert parse(t.build(9), "ipv4")[UDP].checksum == 0xBEEF
    with pytest.raises(ValueError, match="UDP.sport: 70000 does not fit"):
        t.build(70000)
    with pytest.raises(ValueError, match="cannot be left open"):
        Template(p, "UDP.length")
    with pytest.raises(ValueError, match="has no TCP"):
        Template(p, "TCP.sport")
    with pytest.raises(ValueError, match="overlap"):
        Template(p, "UDP.sport", "UDP.sport")
    with pytest.raises(ValueError, match="Raw.data must keep its length"):
        Template(p / b"abc", "Raw.data").build(b"toolong")
    with pytest.raises(ValueError, match="TCP.flags"):
        Template(IPv4() / TCP(), "TCP.flags").build(0x200)


# ---------------------------------------------------------------------------
# GUE and IPIP

def test_gue_variant0_wire_layout():
    # draft-ietf-intarea-gue: |Ver(2)|C|Hlen(5)|Proto/ctype(8)|Flags(16)| + extensions
    g = GUE(proto=4, flags=0x8001, extensions=b"\x01\x02\x03\x04\x05")
    assert bytes(g) == bytes([0b00000010, 4, 0x80, 0x01, 1, 2, 3, 4, 5, 0, 0, 0])
    assert bytes(GUE(control=True, proto=7))[:2] == bytes([0b00100000, 7])
    p = IPv4(src=A4, dst=B4) / UDP(sport=9, dport=GUE_PORT) / GUE() / IPv6(src=A6, dst=B6) \
        / TCP()
    q = parse(bytes(p), "ipv4")
    assert [type(x) for x in q] == [IPv4, UDP, GUE, IPv6, TCP]
    assert q[GUE].proto == 41 and q[GUE].hlen == 0 and q[GUE].version == 0
    assert pk.checksum_errors(q) == []
    # scapy sees the GUE header as UDP payload and agrees on the UDP checksum.
    s = sc.IP(bytes(p))
    del s[sc.UDP].chksum
    assert sc.raw(s) == bytes(p)


def test_gue_control_variant1_and_other_ports():
    ctl = parse(bytes(IPv4() / UDP(dport=GUE_PORT) / GUE(control=True, proto=3) / b"ctl"),
                "ipv4")
    assert [type(x) for x in ctl] == [IPv4, UDP, GUE, Raw]
    direct4 = IPv6(src=A6, dst=B6) / UDP(dport=GUE_PORT) / IPv4(src=A4, dst=B4) / ICMP()
    assert [type(x) for x in parse(bytes(direct4), "ipv6")] == [IPv6, UDP, IPv4, ICMP]
    direct6 = IPv4() / UDP(dport=GUE_PORT) / IPv6() / UDP(sport=1)
    assert [type(x) for x in parse(bytes(direct6), "ipv4")] == [IPv4, UDP, IPv6, UDP]
    other = IPv4() / UDP(dport=GUE_PORT) / b"\x80junk"
    assert type(parse(bytes(other), "ipv4")[-1]) is Raw
    assert [type(x) for x in parse(bytes(direct4), "ipv6", gue_ports=())] == [IPv6, UDP, Raw]
    custom = IPv4() / UDP(dport=5555) / GUE() / IPv4()
    assert IPv4 in parse(bytes(custom), "ipv4", gue_ports=(5555,))[2:]


@pytest.mark.parametrize("outer,inner", [(A4, A4), (A4, A6), (A6, A4), (A6, A6)])
def test_ipip_all_families(outer, inner):
    o2 = B4 if ":" not in outer else B6
    i2 = B4 if ":" not in inner else B6
    base = pk.tcp_packet(inner, i2, 1000, 80, payload=b"x")
    enc = pk.encap_ipip(base, outer, o2, ttl=9)
    q = parse(bytes(enc))
    ips = [x for x in q if type(x) in (IPv4, IPv6)]
    assert [str(x.src) for x in ips] == [outer, inner]
    assert pk.checksum_errors(q) == []
    assert sc.raw(sc.Ether(bytes(enc))) == bytes(enc)
    assert bytes(pk.decap(enc)) == bytes(base)
    for variant in (0, 1):
        g = pk.encap_gue(base, outer, o2, sport=4242, variant=variant)
        gq = parse(bytes(g))
        assert (GUE in gq) == (variant == 0) and gq[TCP].dport == 80
        assert pk.checksum_errors(gq) == []
        assert bytes(pk.decap(g)) == bytes(base)
        assert pk.flow(gq) == pk.FlowTuple(ipaddress.ip_address(outer),
                                           ipaddress.ip_address(o2), 17, 4242, GUE_PORT)
        assert pk.flow(gq, inner=True).dport == 80


# ---------------------------------------------------------------------------
# flows and checksums

def test_flow_tuple():
    f = pk.flow(pk.tcp_packet(A4, B4, 1000, 80))
    assert f == pk.FlowTuple(ipaddress.IPv4Address(A4), ipaddress.IPv4Address(B4), 6, 1000, 80)
    assert f.reversed() == pk.FlowTuple(f.dst, f.src, 6, 80, 1000)
    assert pk.flow(pk.icmp_echo(A6, B6, id=5)) == pk.FlowTuple(
        ipaddress.IPv6Address(A6), ipaddress.IPv6Address(B6), 58)
    ext = pk.with_ipv6_extensions(pk.udp_packet(A6, B6, 5, 53))
    assert pk.flow(parse(bytes(ext))) == pk.flow(ext) == pk.FlowTuple(
        ipaddress.IPv6Address(A6), ipaddress.IPv6Address(B6), 17, 5, 53)
    frags = pk.fragment(pk.udp_packet(A4, B4, 5, 53, bytes(64)), 16)
    assert pk.flow(parse(bytes(frags[0]))).dport == 53
    assert pk.flow(parse(bytes(frags[1]))) == pk.FlowTuple(
        ipaddress.IPv4Address(A4), ipaddress.IPv4Address(B4), 17)
    assert pk.flow(Ethernet() / ARP()) is None


def test_checksum_errors_checks_each_layer_against_the_bytes():
    good = parse(bytes(pk.encap_gue(pk.tcp_packet(A4, B4, 1, 2, payload=b"x"), A6, B6)))
    assert pk.checksum_errors(good) == []
    # A wrong inner checksum under a right outer one: only the inner is reported.
    bad = parse(bytes(good.evolve(TCP, checksum=good[TCP].checksum ^ 1).evolve(
        UDP, checksum=None)))
    errs = pk.checksum_errors(bad)
    assert [(e.layer, e.found) for e in errs] == [("TCP", good[TCP].checksum ^ 1)]
    assert errs[0].expected == good[TCP].checksum
    no_sum = parse(bytes(IPv4() / UDP(checksum=0) / b"x"), "ipv4")
    assert pk.checksum_errors(no_sum) == []
    assert pk.checksum_errors(parse(bytes(IPv6() / UDP(checksum=0)), "ipv6"))


def test_pseudo_header_helpers():
    assert pk.pseudo_header(A4, B4, 6, 20) == bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20])
    assert pk.pseudo_header(A6, B6, 17, 8)[32:] == bytes([0, 0, 0, 8, 0, 0, 0, 17])
    with pytest.raises(ValueError):
        pk.pseudo_header(A4, B6, 6, 20)
    seg = bytes(UDP(sport=1, dport=2, checksum=0) / b"hi")
    p = IPv4(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"hi"
    assert pk.l4_checksum(A4, B4, 17, seg) == p.complete()[UDP].checksum


def test_final_destination_in_pseudo_headers():
    # RFC 8200 8.1: with a routing header, the pseudo-header uses the final destination.
    via = "2001:db8::77"
    p = IPv6(src=A6, dst=B6) / IPv6Routing(addresses=(via,)) / UDP(sport=1, dport=2)
    seg = bytes(UDP(sport=1, dport=2, checksum=0))
    assert p.complete()[UDP].checksum == pk.l4_checksum(A6, via, 17, seg)
    done = IPv6(src=A6, dst=B6) / IPv6Routing(addresses=(via,), segments_left=0) / UDP(
        sport=1, dport=2)
    assert done.complete()[UDP].checksum == pk.l4_checksum(A6, B6, 17, seg)
    lsrr = IPv4(src=A4, dst=B4, options=(pk.LooseSourceRoute(addresses=("1.2.3.4",)),)) / UDP(
        sport=1, dport=2)
    assert lsrr.complete()[UDP].checksum == pk.l4_checksum(A4, "1.2.3.4", 17, seg)
    s = sc.IP(bytes(lsrr))
    del s[sc.UDP].chksum
    assert sc.raw(s) == bytes(lsrr)


# ---------------------------------------------------------------------------
# hostile packets

def test_vlan_tags_one_and_two():
    base = pk.udp_packet(A4, B4, 1, 2, b"x")
    one = pk.with_vlan(base, 100)
    q = parse(bytes(one))
    assert [type(x) for x in q][:3] == [Ethernet, Dot1Q, IPv4]
    assert q[Ethernet].type == 0x8100 and q[Dot1Q].vid == 100 and q[Dot1Q].type == 0x0800
    two = pk.with_vlan(base, Dot1Q(vid=10, pcp=5), 20)
    s = sc.Ether(bytes(two))
    assert s.type == 0x88A8 and s[sc.Dot1AD].vlan == 10 and s[sc.Dot1AD].prio == 5
    assert s[sc.Dot1Q].vlan == 20 and s[sc.UDP].dport == 2
    assert parse(bytes(two))[Dot1Q, 1].vid == 20
    parsed = parse(bytes(base))                          # explicit Ethernet.type kept inside
    assert parse(bytes(pk.with_vlan(parsed, 7)))[Dot1Q].type == 0x0800
    with pytest.raises(ValueError):
        pk.with_vlan(IPv4() / UDP(), 1)


def test_ipv4_options_hostile_default():
    p = pk.with_ipv4_options(parse(bytes(pk.tcp_packet(A4, B4, 1, 2, payload=b"abc"))))
    q = parse(bytes(p))
    assert q[IPv4].ihl == 15 and q[TCP].dport == 2 and pk.checksum_errors(q) == []
    s = sc.Ether(bytes(p))
    assert [type(o).__name__ for o in s[sc.IP].options][:2] == [
        "IPOption_Router_Alert", "IPOption_RR"]
    del s[sc.IP].chksum, s[sc.TCP].chksum
    assert sc.raw(s) == bytes(p)


def test_ipv6_extension_chain_hostile_default():
    base = pk.tcp_packet(A6, B6, 1, 443, payload=b"hello")
    p = pk.with_ipv6_extensions(base)
    q = parse(bytes(p))
    assert [type(x) for x in q][1:8] == [IPv6, IPv6HopByHop, IPv6DestOpts, IPv6Routing,
                                         IPv6Fragment, IPv6DestOpts, TCP]
    assert q[TCP].checksum == base.complete()[TCP].checksum
    assert pk.checksum_errors(q) == []
    s = sc.Ether(bytes(p))
    assert s[sc.TCP].dport == 443
    del s[sc.TCP].chksum
    assert sc.raw(s) == bytes(p)


@FAST
@given(st.sampled_from([A4, A6]), st.binary(min_size=1, max_size=300), st.data())
def test_fragments_reassemble(src, payload, data):
    dst = B4 if src == A4 else B6
    p = pk.with_vlan(pk.udp_packet(src, dst, 7, 8, payload), 3)
    chain = data.draw(st.booleans()) and src == A6
    if chain:
        # Hop-by-Hop stays in every fragment; Destination Options are fragmented.
        p = pk.with_ipv6_extensions(p, [IPv6HopByHop(options=(pk.PadN(2),)),
                                        IPv6DestOpts()])
    sizes = data.draw(st.one_of(st.integers(8, 64),
                                st.lists(st.integers(1, 8).map(lambda n: n * 8), min_size=1,
                                         max_size=4)))
    frags = pk.fragment(p, sizes, id=0x4242)
    chunks = []
    for k, f in enumerate(frags):
        q = parse(bytes(f))                              # each fragment parses strictly
        assert pk.checksum_errors(q) == []
        if src == A4:
            ip = q[IPv4]
            assert bool(ip.flags & IPv4Flags.MF) == (k < len(frags) - 1)
            assert ip.id == 0x4242
            chunks.append((ip.frag_offset * 8, f.payload))
        else:
            fh = q[IPv6Fragment]
            assert fh.more == (k < len(frags) - 1) and fh.id == 0x4242
            chunks.append((fh.offset * 8, f.payload))
        if k == 0 and not chain:
            assert (UDP in q) == (len(f.payload) >= 8)
    whole = b"".join(c for _, c in sorted(chunks))
    assert [o for o, _ in sorted(chunks)] == [sum(len(c) for _, c in chunks[:k])
                                              for k in range(len(chunks))]
    off = p.offsets()[p.index(IPv6DestOpts if chain else UDP)]
    assert whole == bytes(p)[off:]


def test_fragments_match_scapy():
    p = pk.udp_packet(A4, B4, 1, 2, bytes(range(100))).evolve(IPv4, id=77)
    ours = pk.fragment(p, 32)
    theirs = sc.fragment(sc.Ether(bytes(p)), 32)
    assert [bytes(f) for f in ours] == [sc.raw(f) for f in theirs]
    p6 = pk.with_ipv6_extensions(pk.udp_packet(A6, B6, 1, 2, bytes(range(100))))
    f6 = pk.fragment(p6, [8, 48])
    back = sc6.defragment6([sc.IPv6(bytes(f[1:])) for f in f6])
    assert sc.raw(back) == bytes(p6[1:])
    tiny = parse(bytes(pk.fragment(pk.tcp_packet(A4, B4, 1, 2), [8, 8])[0]))
    assert type(tiny.layers[-1]) is Raw and TCP not in tiny    # TCP header cut in two
    ipv4_opts = pk.with_ipv4_options(p)
    later = parse(bytes(pk.fragment(ipv4_opts, 32)[1]))
    # Router Alert has the copied flag, Record Route does not (RFC 791).
    assert later[IPv4].options == (pk.RouterAlert(0),)


def test_builders():
    u = pk.udp_packet(A4, B4, 1, 2, b"q", l2=False)
    assert [type(x) for x in u] == [IPv4, UDP, Raw]
    t = pk.tcp_packet(A6, B6, 1, 2, flags="SA", seq=5, options=[MSS(1220)])
    assert t[TCP].flags == TCPFlags.SYN | TCPFlags.ACK and t[IPv6].dst == \
        ipaddress.IPv6Address(B6)
    e = pk.icmp_echo(A4, B4, id=3, seq=4, payload=b"ping", reply=True)
    assert e[ICMP].type == 0 and parse(bytes(e))[ICMP].seq == 4
    with pytest.raises(ValueError):
        pk.udp_packet(A4, B6, 1, 2)


def test_mac_and_icmp_helpers():
    assert pk.mac(0x020000000001) == "02:00:00:00:00:01"
    assert pk.mac("0200.0000.0001") == "02:00:00:00:00:01"
    assert pk.mac_bytes("02:00:00:00:00:01") == b"\x02\0\0\0\0\x01"
    with pytest.raises(ValueError):
        pk.mac(1 << 48)
    too_big = ICMP.with_rest(3, 4, rest=1400)
    assert too_big.mtu == 1400 and bytes(too_big)[4:8] == struct.pack("!I", 1400)
    ptb = ICMPv6.with_rest(2, rest=1280)
    assert ptb.mtu == 1280


def test_parse_first_layer_options():
    data = bytes(IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2))
    assert parse(data, "ip")[UDP].dport == 2
    assert parse(data, IPv6)[UDP].dport == 2
    assert parse(data, "raw").layers == (Raw(data),)
    with pytest.raises(ValueError, match="unknown first layer"):
        parse(data, "ipx")
    with pytest.raises(TypeError):
        parse("text")
    assert isinstance(ParseError("x", 1, "y"), ValueError)
