"""pybpfnet.packet: round trips, scapy as an independent oracle, checksums and
truncation/malformation fuzzing. No privileges needed."""

import ipaddress
import struct
import sys
import pathlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import strategies as S  # noqa: E402
from pybpfnet import packet as pk  # noqa: E402
from pybpfnet.packet import (ARP, GUE, ICMP, TCP, UDP, Dot1Q, Ethernet, ICMPv6,  # noqa: E402
                             IPv4, IPv6, IPv6DestOpts, IPv6Fragment, IPv6HopByHop,
                             IPv6Routing, Packet, Padding, ParseError, Raw, parse)

scapy_all = pytest.importorskip("scapy.all")
from scapy import all as sc  # noqa: E402
from scapy.layers import inet6 as sc6  # noqa: E402

FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
MANY = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------
# our packet -> the scapy packet with the same fields

def _sc_tcp_options(opts):
    out = []
    for o in opts:
        b = bytes(o)
        out.append((b[0], b[2:]) if len(b) > 1 else (b[0], b""))
    return out


def _sc_ipv6_options(opts):
    out = []
    for o in opts:
        if type(o) is pk.Pad1:
            out.append(sc6.Pad1())
        elif type(o) is pk.PadN:
            out.append(sc6.PadN(optdata=bytes(o.length)))
        else:
            out.append(sc6.HBHOptUnknown(otype=o.type, optdata=o.data))
    return out


def _sc_ip_options(opts):
    """Scapy's option list for ours (scapy parses them out of a dummy header)."""
    if not opts:
        return []
    return sc.IP(bytes(IPv4(options=opts, proto=59))).options


def _icmp_bytes(layer, filled):
    return struct.pack("!BBHHH", layer.type, layer.code, 0, layer.id, layer.seq)


def to_scapy(packet):
    """The scapy packet for ``packet``: our explicit fields, scapy's own auto
    lengths and checksums (protocol numbers are given explicitly, as scapy has
    no notion of our "before raw bytes" values)."""
    full = packet.complete()
    out = None
    for ours, f in zip(packet.layers, full.layers):
        t = type(ours)
        if t is Ethernet:
            s = sc.Ether(dst=ours.dst, src=ours.src, type=f.type)
        elif t is Dot1Q:
            s = sc.Dot1Q(prio=ours.pcp, dei=ours.dei, vlan=ours.vid, type=f.type)
        elif t is ARP:
            s = sc.ARP(hwtype=ours.hwtype, ptype=ours.ptype, hwlen=ours.hwlen, plen=ours.plen,
                       op=ours.op, hwsrc=ours.hwsrc, psrc=str(ours.psrc), hwdst=ours.hwdst,
                       pdst=str(ours.pdst))
        elif t is IPv4:
            opts = _sc_ip_options(ours.options)
            s = sc.IP(version=ours.version, ihl=ours.ihl, tos=ours.tos, len=ours.total_length,
                      id=ours.id, flags=int(ours.flags), frag=ours.frag_offset, ttl=ours.ttl,
                      proto=f.proto, chksum=ours.checksum, src=str(ours.src),
                      dst=str(ours.dst), options=opts)
        elif t is IPv6:
            s = sc.IPv6(version=ours.version, tc=ours.traffic_class, fl=ours.flow_label,
                        plen=ours.payload_length, nh=f.next_header, hlim=ours.hop_limit,
                        src=str(ours.src), dst=str(ours.dst))
        elif t in (IPv6HopByHop, IPv6DestOpts):
            cls = sc6.IPv6ExtHdrHopByHop if t is IPv6HopByHop else sc6.IPv6ExtHdrDestOpt
            s = cls(nh=f.next_header, len=ours.hdr_ext_len,
                    options=_sc_ipv6_options(ours.options))
        elif t is IPv6Routing:
            assert not ours.data
            s = sc6.IPv6ExtHdrRouting(nh=f.next_header, len=ours.hdr_ext_len,
                                      type=ours.routing_type, segleft=ours.segments_left,
                                      reserved=ours.reserved,
                                      addresses=[str(a) for a in ours.addresses])
        elif t is IPv6Fragment:
            s = sc6.IPv6ExtHdrFragment(nh=f.next_header, res1=ours.reserved,
                                       offset=ours.offset, res2=ours.res, m=int(ours.more),
                                       id=ours.id)
        elif t is TCP:
            s = sc.TCP(sport=ours.sport, dport=ours.dport, seq=ours.seq, ack=ours.ack,
                       dataofs=ours.data_offset, reserved=ours.reserved,
                       flags=int(ours.flags), window=ours.window, chksum=ours.checksum,
                       urgptr=ours.urgent, options=_sc_tcp_options(ours.options))
        elif t is UDP:
            s = sc.UDP(sport=ours.sport, dport=ours.dport, len=ours.length,
                       chksum=ours.checksum)
        elif t is ICMP:
            if ours.type in (0, 8):
                s = sc.ICMP(type=ours.type, code=ours.code, chksum=ours.checksum, id=ours.id,
                            seq=ours.seq)
            else:
                s = sc.ICMP(_icmp_bytes(ours, f))
                s.chksum = ours.checksum
        elif t is ICMPv6:
            if ours.type in (128, 129):
                cls = sc6.ICMPv6EchoRequest if ours.type == 128 else sc6.ICMPv6EchoReply
                s = cls(code=ours.code, cksum=ours.checksum, id=ours.id, seq=ours.seq)
            else:
                s = sc6.ICMPv6Unknown(type=ours.type, code=ours.code, cksum=ours.checksum,
                                      msgbody=struct.pack("!HH", ours.id, ours.seq))
        elif t is GUE:
            s = sc.Raw(bytes(Packet((f,))))
        elif t is Raw:
            s = sc.Raw(ours.data)
        elif t is Padding:
            s = sc.Padding(ours.data)
        else:
            raise AssertionError(t)
        out = s if out is None else out / s
    return out


# ---------------------------------------------------------------------------
# round trips

@MANY
@given(S.packets())
def test_parse_of_build_is_the_completed_packet(p):
    data = bytes(p)
    q = parse(data)
    assert q == p.complete()
    assert bytes(q) == data
    assert bytes(p.complete()) == data


@FAST
@given(S.packets())
def test_recompute_of_parsed_packet_rebuilds_same_bytes(p):
    data = bytes(p)
    assert bytes(parse(data).recompute()) == data


@FAST
@given(S.packets())
def test_offsets_locate_each_layer(p):
    data = bytes(p)
    full = p.complete()
    for layer, off in zip(full.layers, full.offsets()):
        if type(layer) is Raw:
            assert data[off:off + len(layer.data)] == layer.data
        elif type(layer) in (IPv4, IPv6, TCP, UDP, Ethernet):
            again = parse(data[off:], first=type(layer), strict=False)
            assert again.layers[0] == layer


# ---------------------------------------------------------------------------
# scapy as the oracle

@MANY
@given(S.packets(gue=True))
def test_same_bytes_as_scapy(p):
    """Same fields -> same bytes; scapy computes lengths and checksums itself."""
    assert bytes(p) == sc.raw(to_scapy(p))


def _scapy_layers(s):
    out = []
    while s is not None and not isinstance(s, sc.NoPayload):
        out.append(s)
        s = s.payload
    return out


def _assert_same_fields(ours, s):
    """Compare our parse with scapy's parse of the same bytes, layer by layer."""
    sl = _scapy_layers(s)
    k = 0
    for layer in ours.layers:
        t = type(layer)
        if t is GUE:
            # scapy has no GUE: it sees the header as UDP payload bytes.
            assert isinstance(sl[k], sc.Raw)
            assert bytes(sl[k].load)[:4 + len(layer.extensions)] == bytes(Packet((layer,)))
            return
        x = sl[k]
        k += 1
        if t is Ethernet:
            assert (x.dst, x.src, x.type) == (layer.dst, layer.src, layer.type)
        elif t is Dot1Q:
            assert (x.prio, x.dei, x.vlan, x.type) == (layer.pcp, layer.dei, layer.vid,
                                                         layer.type)
        elif t is ARP:
            assert (x.op, x.hwsrc, x.psrc, x.hwdst, x.pdst) == (
                layer.op, layer.hwsrc, str(layer.psrc), layer.hwdst, str(layer.pdst))
        elif t is IPv4:
            assert (x.version, x.ihl, x.tos, x.len, x.id, int(x.flags), x.frag, x.ttl,
                    x.proto, x.chksum, x.src, x.dst) == (
                layer.version, layer.ihl, layer.tos, layer.total_length, layer.id,
                int(layer.flags), layer.frag_offset, layer.ttl, layer.proto, layer.checksum,
                str(layer.src), str(layer.dst))
            assert b"".join(bytes(o) for o in x.options).ljust(layer.ihl * 4 - 20, b"\0") \
                == pk._options.pad4(pk._options.encode_options(layer.options))
        elif t is IPv6:
            assert (x.version, x.tc, x.fl, x.plen, x.nh, x.hlim) == (
                layer.version, layer.traffic_class, layer.flow_label, layer.payload_length,
                layer.next_header, layer.hop_limit)
            assert ipaddress.IPv6Address(x.src) == layer.src
            assert ipaddress.IPv6Address(x.dst) == layer.dst
        elif t in (IPv6HopByHop, IPv6DestOpts):
            assert (x.nh, x.len) == (layer.next_header, layer.hdr_ext_len)
            assert b"".join(bytes(o) for o in x.options) == pk._options.pad8_tlv(
                pk._options.encode_options(layer.options))
        elif t is IPv6Routing:
            if layer.routing_type == 4:
                return      # scapy decodes an SRH by its own last-entry field: stop here
            assert (x.nh, x.len, x.type, x.segleft) == (
                layer.next_header, layer.hdr_ext_len, layer.routing_type, layer.segments_left)
            if layer.routing_type != 4:
                assert [ipaddress.IPv6Address(a) for a in x.addresses] == list(layer.addresses)
        elif t is IPv6Fragment:
            assert (x.nh, x.res1, x.offset, x.res2, x.m, x.id) == (
                layer.next_header, layer.reserved, layer.offset, layer.res, int(layer.more),
                layer.id)
        elif t is TCP:
            assert (x.sport, x.dport, x.seq, x.ack, x.dataofs, x.reserved, int(x.flags),
                    x.window, x.chksum, x.urgptr) == (
                layer.sport, layer.dport, layer.seq, layer.ack, layer.data_offset,
                layer.reserved, int(layer.flags), layer.window, layer.checksum, layer.urgent)
            opts = {o[0] if isinstance(o[0], int) else o[0] for o in x.options}
            assert len(opts) <= len(layer.options) + 1
        elif t is UDP:
            assert (x.sport, x.dport, x.len, x.chksum) == (
                layer.sport, layer.dport, layer.length, layer.checksum)
        elif t in (ICMP, ICMPv6):
            # scapy has a class per message type; its first 8 bytes are the header.
            assert bytes(x)[:8] == struct.pack("!BBHHH", layer.type, layer.code,
                                               layer.checksum, layer.id, layer.seq)
            return
        elif t is Raw:
            rest = b"".join(bytes(y) for y in sl[k - 1:]
                            if not isinstance(y, sc.Padding)) if k - 1 < len(sl) else b""
            assert rest.startswith(layer.data) or bytes(x).startswith(layer.data)
            return
        elif t is Padding:
            return


@MANY
@given(S.packets(gue=False))
def test_parse_of_scapy_built_packets_gives_scapys_fields(p):
    s = to_scapy(p)
    data = sc.raw(s)
    ours = parse(data)
    assert bytes(ours) == data
    _assert_same_fields(ours, sc.Ether(data))


@FAST
@given(S.packets())
def test_checksums_match_scapy_recomputation(p):
    """Delete every checksum in scapy's parse of our bytes: scapy rebuilds them equal."""
    # scapy re-encodes an SRH (routing type 4) from its own fields: not an oracle there.
    assume(not any(type(x) is IPv6Routing and x.routing_type == 4 for x in p))
    data = bytes(p)
    s = sc.Ether(data)
    for layer in _scapy_layers(s):
        for name in ("chksum", "cksum"):
            if name in layer.fields and layer.fields[name] is not None:
                setattr(layer, name, None)
        if isinstance(layer, sc.ICMP) or type(layer).__name__.startswith("ICMPv6"):
            break       # what follows is a quoted datagram to scapy, raw bytes to us
    assert sc.raw(s)[:len(data)] == data
    assert pk.checksum_errors(parse(data)) == []


@FAST
@given(st.binary(max_size=200))
def test_checksum_function_matches_scapy(data):
    assert pk.checksum(data) == sc.checksum(data)


@FAST
@given(S.ipv4_addresses | S.ipv6_addresses, st.data())
def test_l4_checksum_matches_manual_pseudo_header(src, data):
    dst = data.draw(S.ipv4_addresses if src.version == 4 else S.ipv6_addresses)
    seg = data.draw(st.binary(min_size=8, max_size=100))
    assert pk.l4_checksum(src, dst, 17, seg) == pk.checksum(
        pk.pseudo_header(src, dst, 17, len(seg)) + seg)


@FAST
@given(st.binary(min_size=2, max_size=80), st.data())
def test_incremental_checksum_equals_full_recompute(data, d):
    data = data + bytes(len(data) & 1)
    pos = d.draw(st.integers(0, len(data) // 2 - 1)) * 2
    width = d.draw(st.sampled_from([2, 4])) if pos + 4 <= len(data) else 2
    new = d.draw(st.binary(min_size=width, max_size=width))
    old_cs = pk.checksum(data)
    changed = data[:pos] + new + data[pos + width:]
    got = pk.incremental_checksum(old_cs, data[pos:pos + width], new)
    want = pk.checksum(changed)
    # RFC 1624: equal, up to the two representations of zero when the data is all zero.
    assert got == want or (not any(changed) and {got, want} == {0, 0xFFFF})


def test_checksum_known_values():
    # RFC 1071 section 3 example words 0001 f203 f4f5 f6f7 sum to ddf2 -> checksum 220d.
    assert pk.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert pk.checksum(b"") == 0xFFFF
    assert pk.checksum(b"\xff\xff") == 0
    hdr = bytes(IPv4(src="10.0.0.1", dst="10.0.0.2"))
    assert pk.checksum(hdr) == 0


# ---------------------------------------------------------------------------
# every header against scapy, with random explicit values (incl. broken ones)

@FAST
@given(S.ipv4s, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 15))
def test_ipv4_explicit_broken_fields_are_kept(ip, tl, cs, ihl):
    ip = pk.IPv4(src=ip.src, dst=ip.dst, total_length=tl, checksum=cs, ihl=ihl,
                 options=ip.options, proto=17)
    data = bytes(ip)
    s = sc.IP(data)
    assert (s.len, s.chksum, s.ihl) == (tl, cs, ihl)
    expected = sc.IP(src=str(ip.src), dst=str(ip.dst), len=tl, chksum=cs, ihl=ihl, id=0,
                     flags=0, proto=17, ttl=64,
                     options=_sc_ip_options(ip.options))
    assert data == sc.raw(expected)


@FAST
@given(S.tcps, S.ipv4_addresses, S.ipv4_addresses, S.payloads)
def test_tcp_over_ipv4_matches_scapy(tcp, src, dst, payload):
    p = IPv4(src=src, dst=dst) / tcp / payload
    assert bytes(p) == sc.raw(to_scapy(p))


@FAST
@given(S.udps, S.ipv6s, S.ipv6_extension_chains, S.payloads)
def test_udp_over_ipv6_with_extension_headers_matches_scapy(udp, ip, chain, payload):
    p = Packet([ip] + chain + [udp]) / payload
    assert bytes(p) == sc.raw(to_scapy(p))


@FAST
@given(S.icmpv6s, S.ipv6s, S.payloads)
def test_icmpv6_matches_scapy(icmp, ip, payload):
    p = ip / icmp / payload
    assert bytes(p) == sc.raw(to_scapy(p))


@FAST
@given(S.icmps, S.ipv4s, S.payloads)
def test_icmp_matches_scapy(icmp, ip, payload):
    p = ip / icmp / payload
    assert bytes(p) == sc.raw(to_scapy(p))


@FAST
@given(S.arps, S.ethernets)
def test_arp_matches_scapy(arp, eth):
    p = eth / arp
    assert bytes(p) == sc.raw(to_scapy(p))
    q = parse(bytes(p) + bytes(18))          # minimum-size frame: 18 bytes of padding
    assert q.layers[-1] == Padding(bytes(18)) and q[ARP] == p.complete()[ARP]


def test_udp_zero_checksum_is_sent_as_ffff():
    # Find a payload whose UDP checksum computes to 0, then check the 0xFFFF rule.
    base = IPv4(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)
    cs = base.complete()[UDP].checksum
    # Adding the checksum value as a payload word makes the sum 0xFFFF.
    p = base / struct.pack("!H", 0xFFFF - (0xFFFF - cs))
    full = p.complete()
    assert full[UDP].checksum != 0
    data = bytes(p)
    s = sc.IP(data)
    del s[sc.UDP].chksum
    assert sc.raw(s) == data


# ---------------------------------------------------------------------------
# truncation and malformation: ParseError only, never IndexError/struct.error

def _check_all_ways(data, first="ethernet"):
    try:
        strict = parse(data, first)
    except ParseError as exc:
        assert exc.layer and exc.offset >= 0 and isinstance(exc, ValueError)
    else:
        assert bytes(strict) == data
    lenient = parse(data, first, strict=False)
    assert bytes(lenient) == data
    tail = lenient.layers[-1] if lenient.layers else None
    if tail is not None and type(tail) is Raw and tail.error:
        assert "offset" in tail.error


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(S.packets())
def test_every_prefix_parses_or_raises_parse_error(p):
    data = bytes(p)
    for n in range(len(data) + 1):
        _check_all_ways(data[:n])


@MANY
@given(S.packets(), st.data())
def test_mutated_packets_parse_or_raise_parse_error(p, d):
    data = bytearray(bytes(p))
    assume(data)
    for _ in range(d.draw(st.integers(1, 4))):
        pos = d.draw(st.integers(0, len(data) - 1))
        data[pos] = d.draw(st.integers(0, 255))
    _check_all_ways(bytes(data))


@MANY
@given(st.binary(max_size=120), st.sampled_from(sorted(pk.FIRST_LAYERS)))
def test_random_bytes_parse_or_raise_parse_error(data, first):
    _check_all_ways(data, first)


def test_parse_error_names_layer_and_offset():
    data = bytes(Ethernet() / IPv4(src="1.1.1.1", dst="2.2.2.2", proto=6) / b"123456")
    with pytest.raises(ParseError) as ei:
        parse(data)
    assert ei.value.layer == "tcp" and ei.value.offset == 34
    assert str(ei.value) == "tcp at offset 34: header truncated: need 20 bytes, have 6"
    lenient = parse(data, strict=False)
    assert [type(x) for x in lenient] == [Ethernet, IPv4, Raw]
    assert lenient[Raw].data == b"123456" and "truncated" in lenient[Raw].error
    # A cut capture: the IPv4 total length claims more than there is.
    full = bytes(Ethernet() / IPv4(src="1.1.1.1", dst="2.2.2.2") / TCP())
    with pytest.raises(ParseError, match="ipv4 at offset 14: total length 40 exceeds"):
        parse(full[:40])


def test_parse_errors_for_bad_header_fields():
    ip = bytearray(bytes(IPv4(src="1.1.1.1", dst="2.2.2.2") / UDP()))
    ip[0] = 0x44                                     # IHL 4
    with pytest.raises(ParseError, match="IHL 4"):
        parse(bytes(ip), "ipv4")
    ip[0] = 0x45
    ip[3] = 10                                       # total length 10 < 20
    with pytest.raises(ParseError, match="smaller than the header"):
        parse(bytes(ip), "ipv4")
    with pytest.raises(ParseError, match="version 9"):
        parse(b"\x90" + bytes(30), "ip")
    with pytest.raises(ParseError, match="length 3 is below"):
        parse(bytes.fromhex("0001000200030000"), "udp")


def test_truncated_capture_is_accepted_by_lenient_parse():
    p = Ethernet() / IPv4(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=5, dport=6) / bytes(100)
    data = bytes(p)[:60]
    with pytest.raises(ParseError, match="exceeds"):
        parse(data)
    q = parse(data, strict=False)
    assert q[UDP].dport == 6 and len(q.payload) == 60 - 42
