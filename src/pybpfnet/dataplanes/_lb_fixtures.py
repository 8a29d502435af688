"""Fixture tables for the load balancer's data plane (Katran style): rows
of (description, input frame, expected verdict, expected output frame),
run in order against a data plane set up by the table's ``setup``. The
expected frames are built here with :mod:`pybpfnet.packet` from the
documented behaviour -- not by the reference model -- so the kernel and the
model are both checked against an independent expectation.
tests/kernel/test_lb_fixtures.py runs them; benchmarks/bench_lb.py times
the same frames.
"""

import attrs

from pybpfnet import packet as pk
from pybpfnet._program import XdpAction
from pybpfnet.dataplanes._lb_abi import GUE_PORT, DropReason

__all__ = ["Fixture", "Table", "tables", "CLIENT", "CLIENT6", "VIP", "VIP6", "LB_MAC",
           "CLIENT_MAC", "SRC4", "SRC6", "BACKENDS", "MTU"]

CLIENT = "203.0.113.5"
CLIENT6 = "2001:db8:c::5"
OTHER = "198.51.100.9"
ROUTER = "198.51.100.1"
ROUTER6 = "2001:db8:a::1"
VIP = "192.0.2.10"
VIP6 = "2001:db8:f::10"
SRC4 = "10.0.0.1"
SRC6 = "fd00::1"
CLIENT_MAC = "02:00:00:00:00:01"   # pk builders' default source MAC
LB_MAC = "02:00:00:00:00:02"       # and destination MAC
MTU = 1500
CPORT = 40000

#: backend id -> (address, mac, NAT port)
BACKENDS = {
    0: ("10.0.0.10", "02:00:00:00:01:00", 0),
    1: ("10.0.0.11", "02:00:00:00:01:01", 0),
    2: ("fd00::10", "02:00:00:00:01:02", 0),
    3: ("fd00::11", "02:00:00:00:01:03", 0),
    4: ("10.0.0.12", "02:00:00:00:01:04", 8080),
    5: ("fd00::12", "02:00:00:00:01:05", 8443),
}

TABLE_SIZE = 7


@attrs.frozen
class Fixture:
    """One row. ``output`` None: the frame leaves unchanged. ``before``:
    data-plane calls made before the row, as (method name, args...)."""

    description: str
    packet: bytes
    verdict: XdpAction
    output: bytes = None
    reason: DropReason = None
    before: tuple = ()

    @property
    def expected(self):
        return self.packet if self.output is None else self.output


@attrs.frozen
class Table:
    """Services as (vip, port, proto, mode, backend id or None for no
    table, -1 for an all-empty table), and the rows; ``nat_tracking``: the
    LbDataplane option the table is for."""

    services: tuple
    rows: tuple
    nat_tracking: str = "lru"

    def setup(self, dp):
        """Configure an LbDataplane (or anything with its methods)."""
        dp.set_config(src4=SRC4, src6=SRC6, mtu=MTU, gue_port=GUE_PORT)
        for bid, (addr, mac, port) in BACKENDS.items():
            dp.put_backend(bid, addr, mac=mac, port=port)
        for vip, port, proto, mode, bid in self.services:
            dp.put_service((vip, port, proto), mode=mode)
            if bid is not None:
                dp.install_table((vip, port, proto), [bid] * TABLE_SIZE)


def _b(p):
    return bytes(p)


def _tcp(src=CLIENT, dst=VIP, sport=CPORT, dport=80, flags="S", payload=b"", **kw):
    return _b(pk.tcp_packet(src, dst, sport, dport, flags=flags, payload=payload, **kw))


def _udp(src=CLIENT, dst=VIP, sport=CPORT, dport=80, payload=b"data", **kw):
    return _b(pk.udp_packet(src, dst, sport, dport, payload, **kw))


def _family(addr):
    return 6 if ":" in addr else 4


def _outer(src, dst, proto, tos=0):
    if _family(dst) == 4:
        return pk.IPv4(src=src, dst=dst, tos=tos, ttl=64, id=0, proto=proto)
    return pk.IPv6(src=src, dst=dst, traffic_class=tos, hop_limit=64, next_header=proto)


def _ipip(frame, bid, tos=0):
    addr, mac, _ = BACKENDS[bid]
    inner = frame[14:]
    inner_proto = 4 if inner[0] >> 4 == 4 else 41
    src = SRC4 if _family(addr) == 4 else SRC6
    return _b(pk.Ethernet(dst=mac, src=LB_MAC) / _outer(src, addr, inner_proto, tos)
              / pk.Raw(inner))


def _gue(frame, bid, sport=CPORT, tos=0):
    addr, mac, _ = BACKENDS[bid]
    src = SRC4 if _family(addr) == 4 else SRC6
    return _b(pk.Ethernet(dst=mac, src=LB_MAC) / _outer(src, addr, 17, tos)
              / pk.UDP(sport=sport, dport=GUE_PORT, checksum=0) / pk.Raw(frame[14:]))


def _l2(frame, bid):
    return pk.mac_bytes(BACKENDS[bid][1]) + pk.mac_bytes(LB_MAC) + frame[12:]


def _too_big4(frame, mtu):
    return _b(pk.Ethernet(dst=CLIENT_MAC, src=LB_MAC)
              / pk.IPv4(src=VIP, dst=CLIENT, ttl=64, id=0, proto=1)
              / pk.ICMP(type=3, code=4, id=0, seq=mtu) / pk.Raw(frame[14:14 + 28]))


def _too_big6(frame, mtu):
    return _b(pk.Ethernet(dst=CLIENT_MAC, src=LB_MAC)
              / pk.IPv6(src=VIP6, dst=CLIENT6, hop_limit=64, next_header=58)
              / pk.ICMPv6(type=2, code=0, id=mtu >> 16, seq=mtu & 0xFFFF)
              / pk.Raw(frame[14:14 + 48]))


def _frag_needed(vip, vport, proto, mtu=1400):
    """An ICMP "fragmentation needed" from a router to the VIP about the
    VIP's packet VIP:vport -> CLIENT:CPORT."""
    quoted = (_tcp(vip, CLIENT, vport, CPORT, flags="SA", payload=b"x" * 16) if proto == "tcp"
              else _udp(vip, CLIENT, vport, CPORT))[14:14 + 28]
    return _b(pk.Ethernet(dst=LB_MAC, src=CLIENT_MAC) / pk.IPv4(src=ROUTER, dst=vip, proto=1)
              / pk.ICMP(type=3, code=4, id=0, seq=mtu) / pk.Raw(quoted))


def _ptb(vip, vport, proto, mtu=1400):
    quoted = (_tcp(vip, CLIENT6, vport, CPORT, flags="SA", payload=b"x" * 16) if proto == "tcp"
              else _udp(vip, CLIENT6, vport, CPORT))[14:14 + 48]
    return _b(pk.Ethernet(dst=LB_MAC, src=CLIENT_MAC)
              / pk.IPv6(src=ROUTER6, dst=vip, next_header=58)
              / pk.ICMPv6(type=2, code=0, id=mtu >> 16, seq=mtu & 0xFFFF) / pk.Raw(quoted))


def _icmp_err_nat(vip, vport, proto, bid, mtu=1400):
    """What the LB makes of _frag_needed/_ptb for a NAT service: the ICMP
    error the backend would get about its own packet (the quoted TCP/UDP
    checksum is the original's: the LB leaves it)."""
    addr, mac, port = BACKENDS[bid]
    v6 = ":" in vip
    client = CLIENT6 if v6 else CLIENT
    n = 48 if v6 else 28
    make = (lambda s, d, sp, dp: _tcp(s, d, sp, dp, flags="SA", payload=b"x" * 16)) \
        if proto == "tcp" else (lambda s, d, sp, dp: _udp(s, d, sp, dp))
    orig = make(vip, client, vport, CPORT)[14:14 + n]
    quote = bytearray(make(addr, client, port or vport, CPORT)[14:14 + n])
    if proto == "udp":
        quote[n - 2:n] = orig[n - 2:n]
    if v6:
        msg = pk.IPv6(src=ROUTER6, dst=addr, next_header=58) / pk.ICMPv6(
            type=2, code=0, id=mtu >> 16, seq=mtu & 0xFFFF)
    else:
        msg = pk.IPv4(src=ROUTER, dst=addr, proto=1) / pk.ICMP(type=3, code=4, id=0, seq=mtu)
    return _b(pk.Ethernet(dst=mac, src=LB_MAC) / msg / pk.Raw(bytes(quote)))


def _nat_fwd(make, bid, vport, src=CLIENT, sport=CPORT, **kw):
    addr, mac, port = BACKENDS[bid]
    return make(src, addr, sport, port or vport, src_mac=LB_MAC, dst_mac=mac, **kw)


def _zero_udp_csum(frame):
    off = 14 + (20 if frame[14] >> 4 == 4 else 40) + 6
    return frame[:off] + b"\0\0" + frame[off + 2:]


def _with_tos(frame, tos):
    out = bytearray(frame)
    out[15] = tos
    out[24:26] = b"\0\0"
    out[24:26] = pk.checksum(bytes(out[14:34])).to_bytes(2, "big")
    return bytes(out)


def _truncate_l4(frame, keep):
    """The frame cut ``keep`` bytes into its L4 header, IP lengths kept
    consistent with what is left."""
    out = bytearray(frame)
    if out[14] >> 4 == 4:
        cut = 14 + 20 + keep
        out[16:18] = (20 + keep).to_bytes(2, "big")
        out[24:26] = b"\0\0"
        out[24:26] = pk.checksum(bytes(out[14:34])).to_bytes(2, "big")
    else:
        cut = 14 + 40 + keep
        out[18:20] = keep.to_bytes(2, "big")
    return bytes(out[:cut])


def _ipv4_table():
    T, P, D = XdpAction.TX, XdpAction.PASS, XdpAction.DROP
    svcs = (
        (VIP, 80, "tcp", "ipip", 0), (VIP, 80, "udp", "ipip", 0),
        (VIP, 81, "tcp", "gue", 0), (VIP, 81, "udp", "gue", 0),
        (VIP, 82, "tcp", "l2", 0), (VIP, 82, "udp", "l2", 0),
        (VIP, 83, "tcp", "nat", 0), (VIP, 83, "udp", "nat", 0),
        (VIP, 84, "tcp", "nat", 4),
        (VIP, 85, "tcp", "ipip", 2), (VIP, 86, "tcp", "nat", 2),
        (VIP, 87, "udp", "gue", 2),
        (VIP, 91, "tcp", "ipip", -1), (VIP, 92, "tcp", "ipip", None),
    )
    rows = []

    def row(*a, **k):
        rows.append(Fixture(*a, **k))

    f = _tcp(dport=80)
    row("ipip tcp syn: IPv4 in IPv4 to backend 0", f, T, _ipip(f, 0))
    f = _with_tos(_tcp(dport=80, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n"), 0x28)
    row("ipip tcp data keeps the TOS in the outer header", f, T, _ipip(f, 0, tos=0x28))
    f = _udp(dport=80)
    row("ipip udp", f, T, _ipip(f, 0))
    f = _tcp(dport=81)
    row("gue tcp: outer UDP from the client's port to 6080, checksum 0", f, T, _gue(f, 0))
    f = _udp(dport=81, sport=5353)
    row("gue udp", f, T, _gue(f, 0, sport=5353))
    f = _tcp(dport=82)
    row("l2 dsr tcp: MAC rewrite only", f, T, _l2(f, 0))
    f = _udp(dport=82)
    row("l2 dsr udp", f, T, _l2(f, 0))
    f = _tcp(dport=83, payload=b"hello")
    row("nat tcp: DNAT to the backend, checksums updated", f, T,
        _nat_fwd(_tcp_raw, 0, 83, payload=b"hello"))
    f = _udp(dport=83)
    row("nat udp", f, T, _nat_fwd(_udp_raw, 0, 83))
    f = _tcp(dport=84, flags="PA", payload=b"abc", seq=1000, ack=77)
    row("nat tcp with a backend port (84 -> 8080)", f, T,
        _nat_fwd(_tcp_raw, 4, 84, flags="PA", payload=b"abc", seq=1000, ack=77))
    f = _tcp(BACKENDS[0][0], CLIENT, 83, CPORT, flags="SA", src_mac=BACKENDS[0][1],
             dst_mac=LB_MAC)
    row("nat reply from backend 0 back to VIP:83", f, T,
        _tcp(VIP, CLIENT, 83, CPORT, flags="SA", src_mac=LB_MAC, dst_mac=CLIENT_MAC))
    f = _tcp(BACKENDS[4][0], CLIENT, 8080, CPORT, flags="A", payload=b"ok",
             src_mac=BACKENDS[4][1], dst_mac=LB_MAC)
    row("nat reply from backend port 8080 back to VIP:84", f, T,
        _tcp(VIP, CLIENT, 84, CPORT, flags="A", payload=b"ok", src_mac=LB_MAC,
             dst_mac=CLIENT_MAC))
    f = _udp(BACKENDS[0][0], CLIENT, 83, CPORT, payload=b"answer", src_mac=BACKENDS[0][1])
    row("nat udp reply", f, T, _udp(VIP, CLIENT, 83, CPORT, payload=b"answer",
                                     src_mac=LB_MAC, dst_mac=CLIENT_MAC))
    f = _zero_udp_csum(_udp(dport=83, sport=40001, payload=b"no-checksum"))
    exp = _zero_udp_csum(_nat_fwd(_udp_raw, 0, 83, sport=40001, payload=b"no-checksum"))
    row("nat udp without checksum: stays 0", f, T, exp)
    f = _tcp(dport=85)
    row("ipip to an IPv6 backend: IPv4 in IPv6", f, T, _ipip(f, 2))
    f = _udp(dport=87)
    row("gue to an IPv6 backend", f, T, _gue(f, 2))
    f = _tcp(dport=86)
    row("nat to a backend of the other family", f, D, reason=DropReason.FAMILY)
    f = _tcp(dport=91)
    row("table of empty slots", f, D, reason=DropReason.NO_BACKEND)
    f = _tcp(dport=92)
    row("service without a table", f, D, reason=DropReason.NO_BACKEND)

    # too big: inner 20 + 20 + 1460 = 1500 bytes, + 20 outer > MTU 1500
    f = _tcp(dport=80, flags="A", payload=b"y" * 1460)
    row("too big for ipip, DF set: ICMP fragmentation needed, MTU 1480", _set_df(f), T,
        _too_big4(_set_df(f), MTU - 20))
    row("too big for ipip, DF clear: dropped", f, D, reason=DropReason.TOO_BIG)
    f = _set_df(_tcp(dport=81, flags="A", payload=b"y" * 1460))
    row("too big for gue: MTU 1472", f, T, _too_big4(f, MTU - 28))
    f = _set_df(_tcp(dport=85, flags="A", payload=b"y" * 1460))
    row("too big for 4in6: MTU 1460", f, T, _too_big4(f, MTU - 40))
    f = _set_df(_tcp(dport=80, flags="A", payload=b"y" * 1440))
    row("just fits ipip (1480 + 20)", f, T, _ipip(f, 0))
    f = _tcp(dport=82, flags="A", payload=b"y" * 1460)
    row("l2 dsr never too big", f, T, _l2(f, 0))

    f = _frag_needed(VIP, 80, "tcp")
    row("ICMP frag-needed about a tcp ipip flow: to its backend", f, T, _ipip(f, 0))
    f = _frag_needed(VIP, 81, "udp")
    row("ICMP frag-needed about a udp gue flow", f, T, _gue(f, 0))
    f = _frag_needed(VIP, 82, "tcp")
    row("ICMP frag-needed, l2 dsr", f, T, _l2(f, 0))
    f = _frag_needed(VIP, 83, "tcp")
    row("ICMP frag-needed, nat: translated for the backend", f, T,
        _icmp_err_nat(VIP, 83, "tcp", 0))
    f = _frag_needed(VIP, 83, "udp")
    row("ICMP frag-needed, nat udp", f, T, _icmp_err_nat(VIP, 83, "udp", 0))
    f = _frag_needed(VIP, 84, "tcp")
    row("ICMP frag-needed, nat with a backend port", f, T, _icmp_err_nat(VIP, 84, "tcp", 4))
    f = _frag_needed(VIP, 99, "tcp")
    row("ICMP frag-needed about no service", f, P)
    row("ICMP echo to the VIP", _b(pk.icmp_echo(CLIENT, VIP, id=7, seq=1)), P)

    row("non-VIP tcp", _tcp(dst=OTHER, dport=80), P)
    row("VIP address, other port", _tcp(dport=9999), P)
    row("VIP port of a tcp-only service, udp", _udp(dport=84), P)
    row("ARP", _b(pk.Ethernet(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC, type=0x0806)
                  / pk.Raw(bytes(28))), P)
    row("truncated IPv4 header", _tcp(dport=80)[:14 + 12], P)
    row("truncated TCP header to the VIP", _truncate_l4(_tcp(dport=80), 10), D,
        reason=DropReason.MALFORMED)
    row("truncated UDP header to the VIP", _truncate_l4(_udp(dport=80), 4), D,
        reason=DropReason.MALFORMED)
    row("truncated TCP header to another host", _truncate_l4(_tcp(dst=OTHER), 10), P)
    f = bytearray(_tcp(dport=80, payload=b"z" * 8))
    f[16:18] = (len(f) - 14 + 4).to_bytes(2, "big")
    row("IPv4 total length beyond the frame", bytes(f), D, reason=DropReason.MALFORMED)
    f = _b(pk.fragment(pk.udp_packet(CLIENT, VIP, CPORT, 80, b"q" * 64), [24, 48])[0])
    row("first fragment to the VIP", f, D, reason=DropReason.FRAGMENT)
    f = _b(pk.fragment(pk.udp_packet(CLIENT, VIP, CPORT, 80, b"q" * 64), [24, 48])[1])
    row("later fragment to the VIP", f, D, reason=DropReason.FRAGMENT)
    f = _b(pk.fragment(pk.udp_packet(CLIENT, OTHER, CPORT, 80, b"q" * 64), [24, 48])[1])
    row("fragment to another host", f, P)
    f = _b(pk.with_ipv4_options(pk.tcp_packet(CLIENT, VIP, CPORT, 80)))
    row("IPv4 options to the VIP", f, D, reason=DropReason.UNSUPPORTED)
    return Table(svcs, tuple(rows))


def _tcp_raw(src, dst, sport, dport, **kw):
    return _tcp(src, dst, sport, dport, **kw)


def _udp_raw(src, dst, sport, dport, payload=b"data", **kw):
    return _udp(src, dst, sport, dport, payload=payload, **kw)


def _set_df(frame):
    out = bytearray(frame)
    out[20] |= 0x40
    out[24:26] = b"\0\0"
    out[24:26] = pk.checksum(bytes(out[14:34])).to_bytes(2, "big")
    return bytes(out)


def _ipv6_table():
    T, P, D = XdpAction.TX, XdpAction.PASS, XdpAction.DROP
    svcs = (
        (VIP6, 80, "tcp", "ipip", 2), (VIP6, 80, "udp", "ipip", 2),
        (VIP6, 81, "tcp", "gue", 2), (VIP6, 81, "udp", "gue", 2),
        (VIP6, 82, "tcp", "l2", 2), (VIP6, 82, "udp", "l2", 2),
        (VIP6, 83, "tcp", "nat", 2), (VIP6, 83, "udp", "nat", 2),
        (VIP6, 84, "tcp", "nat", 5),
        (VIP6, 85, "tcp", "ipip", 0), (VIP6, 86, "udp", "gue", 0),
        (VIP6, 88, "tcp", "nat", 0),
    )
    rows = []

    def row(*a, **k):
        rows.append(Fixture(*a, **k))

    def tcp(dport, **kw):
        return _tcp(CLIENT6, VIP6, CPORT, dport, **kw)

    def udp(dport, **kw):
        return _udp(CLIENT6, VIP6, CPORT, dport, **kw)

    f = tcp(80)
    row("ipip tcp: IPv6 in IPv6", f, T, _ipip(f, 2))
    f = _b(pk.Ethernet(dst=LB_MAC, src=CLIENT_MAC)
           / pk.IPv6(src=CLIENT6, dst=VIP6, traffic_class=0xb8, flow_label=0x12345)
           / pk.TCP(sport=CPORT, dport=80, flags="A") / b"data")
    row("ipip keeps the traffic class, not the flow label", f, T, _ipip(f, 2, tos=0xb8))
    f = udp(80)
    row("ipip udp", f, T, _ipip(f, 2))
    f = tcp(81)
    row("gue tcp over IPv6", f, T, _gue(f, 2))
    f = udp(81)
    row("gue udp over IPv6", f, T, _gue(f, 2))
    f = tcp(82)
    row("l2 dsr tcp", f, T, _l2(f, 2))
    f = udp(82)
    row("l2 dsr udp", f, T, _l2(f, 2))
    f = tcp(83, payload=b"hello")
    row("nat tcp over IPv6", f, T, _nat_fwd(_tcp_raw, 2, 83, src=CLIENT6, payload=b"hello"))
    f = udp(83)
    row("nat udp over IPv6", f, T, _nat_fwd(_udp_raw, 2, 83, src=CLIENT6))
    f = tcp(84, flags="A", payload=b"p")
    row("nat with a backend port (84 -> 8443)", f, T,
        _nat_fwd(_tcp_raw, 5, 84, src=CLIENT6, flags="A", payload=b"p"))
    f = _tcp(BACKENDS[2][0], CLIENT6, 83, CPORT, flags="SA", src_mac=BACKENDS[2][1])
    row("nat reply over IPv6", f, T,
        _tcp(VIP6, CLIENT6, 83, CPORT, flags="SA", src_mac=LB_MAC, dst_mac=CLIENT_MAC))
    f = _udp(BACKENDS[5][0], CLIENT6, 8443, CPORT, src_mac=BACKENDS[5][1])
    row("nat reply from a backend port, udp (no flow: passes)", f, P)
    f = tcp(85)
    row("ipip to an IPv4 backend: IPv6 in IPv4", f, T, _ipip(f, 0))
    f = udp(86)
    row("gue to an IPv4 backend", f, T, _gue(f, 0))
    f = tcp(88)
    row("nat to an IPv4 backend", f, D, reason=DropReason.FAMILY)

    f = tcp(80, flags="A", payload=b"y" * 1440)    # 40 + 20 + 1440 = 1500
    row("too big for 6in6: ICMPv6 packet too big, MTU 1460", f, T, _too_big6(f, MTU - 40))
    f = tcp(81, flags="A", payload=b"y" * 1420)
    row("too big for gue over IPv6: MTU 1452", f, T, _too_big6(f, MTU - 48))
    f = tcp(85, flags="A", payload=b"y" * 1440)
    row("too big for 6in4: MTU 1480", f, T, _too_big6(f, MTU - 20))
    f = tcp(80, flags="A", payload=b"y" * 1400)
    row("fits 6in6", f, T, _ipip(f, 2))

    f = _ptb(VIP6, 80, "tcp")
    row("ICMPv6 packet too big about an ipip flow", f, T, _ipip(f, 2))
    f = _ptb(VIP6, 82, "udp")
    row("ICMPv6 packet too big, l2 dsr", f, T, _l2(f, 2))
    f = _ptb(VIP6, 83, "tcp")
    row("ICMPv6 packet too big, nat: translated for the backend", f, T,
        _icmp_err_nat(VIP6, 83, "tcp", 2))
    f = _ptb(VIP6, 84, "tcp")
    row("ICMPv6 packet too big, nat with a backend port", f, T,
        _icmp_err_nat(VIP6, 84, "tcp", 5))
    row("ICMPv6 echo to the VIP", _b(pk.icmp_echo(CLIENT6, VIP6, id=1)), P)
    row("non-VIP IPv6", _tcp(CLIENT6, "2001:db8::99", CPORT, 80), P)
    row("truncated IPv6 header", tcp(80)[:14 + 30], P)
    row("truncated TCP header to the VIP", _truncate_l4(tcp(80), 12), D,
        reason=DropReason.MALFORMED)
    f = _b(pk.fragment(pk.udp_packet(CLIENT6, VIP6, CPORT, 80, b"q" * 64), [24, 48])[0])
    row("IPv6 fragment to the VIP", f, D, reason=DropReason.FRAGMENT)
    f = _b(pk.with_ipv6_extensions(pk.tcp_packet(CLIENT6, VIP6, CPORT, 80)))
    row("IPv6 extension headers to the VIP", f, D, reason=DropReason.UNSUPPORTED)
    f = _b(pk.with_ipv6_extensions(pk.tcp_packet(CLIENT6, "2001:db8::99", CPORT, 80)))
    row("IPv6 extension headers to another host", f, P)
    return Table(svcs, tuple(rows))


def _swap_table():
    T = XdpAction.TX
    svcs = ((VIP, 90, "tcp", "ipip", 0), (VIP6, 90, "udp", "nat", 2),
            (VIP, 91, "tcp", "nat", 1))
    key, key6, key91 = (VIP, 90, "tcp"), (VIP6, 90, "udp"), (VIP, 91, "tcp")
    rows = []

    def row(*a, **k):
        rows.append(Fixture(*a, **k))

    a = _tcp(dport=90, sport=1111)
    a_ack = _tcp(dport=90, sport=1111, flags="A", seq=1, ack=1)
    b = _tcp(dport=90, sport=2222)
    c = _tcp(dport=90, sport=3333)
    c_ack = _tcp(dport=90, sport=3333, flags="PA", payload=b"more")
    row("flow A opens on backend 0", a, T, _ipip(a, 0))
    row("flow A (ACK) after a table swap to backend 1: stays on 0", a_ack, T,
        _ipip(a_ack, 0), before=(("install_table", key, [1] * TABLE_SIZE),))
    row("flow B, new: backend 1", b, T, _ipip(b, 1))
    row("a SYN on flow A after the swap: a new connection, backend 1", a, T, _ipip(a, 1))
    row("flow A's ACKs follow it to 1", a_ack, T, _ipip(a_ack, 1))
    row("the same SYN again (a retransmission, table unchanged): still 1", a, T,
        _ipip(a, 1))
    row("flow C opens on backend 0", c, T, _ipip(c, 0),
        before=(("install_table", key, [0] * TABLE_SIZE),))
    row("flow C (data) after backend 0 is deleted: re-hashed to 1", c_ack, T,
        _ipip(c_ack, 1), before=(("install_table", key, [1] * TABLE_SIZE),
                                 ("delete_backend", 0)))
    u = _udp(CLIENT6, VIP6, CPORT, 90)
    row("nat flow opens on backend 2", u, T, _nat_fwd(_udp_raw, 2, 90, src=CLIENT6))
    row("nat flow after a swap to backend 3: stays on 2", u, T,
        _nat_fwd(_udp_raw, 2, 90, src=CLIENT6),
        before=(("install_table", key6, [3] * TABLE_SIZE),))
    r = _udp(BACKENDS[2][0], CLIENT6, 90, CPORT, src_mac=BACKENDS[2][1])
    row("its replies are still translated", r, T,
        _udp(VIP6, CLIENT6, 90, CPORT, src_mac=LB_MAC, dst_mac=CLIENT_MAC))
    row("after purge_backend(2): the flow moves to backend 3", u, T,
        _nat_fwd(_udp_raw, 3, 90, src=CLIENT6), before=(("purge_backend", 2),))
    # NAT, TCP: a SYN on an existing flow replaces the flow and its reply entry
    s = _tcp(dport=91, sport=4444, seq=100)
    ack = _tcp(dport=91, sport=4444, flags="A", seq=101, ack=501)
    row("nat tcp flow opens on backend 1", s, T, _nat_fwd(_tcp_raw, 1, 91, sport=4444, seq=100))
    r1 = _tcp(BACKENDS[1][0], CLIENT, 91, 4444, flags="SA", seq=500, ack=101,
              src_mac=BACKENDS[1][1])
    row("its SYN-ACK from backend 1 is translated", r1, T,
        _tcp(VIP, CLIENT, 91, 4444, flags="SA", seq=500, ack=101, src_mac=LB_MAC,
             dst_mac=CLIENT_MAC))
    row("its ACK after a swap to backend 4: stays on 1", ack, T,
        _nat_fwd(_tcp_raw, 1, 91, sport=4444, flags="A", seq=101, ack=501),
        before=(("install_table", key91, [4] * TABLE_SIZE),))
    s2 = _tcp(dport=91, sport=4444, seq=9000)
    row("a new SYN reusing the 5-tuple: backend 4 (port 8080)", s2, T,
        _nat_fwd(_tcp_raw, 4, 91, sport=4444, seq=9000))
    r4 = _tcp(BACKENDS[4][0], CLIENT, 8080, 4444, flags="SA", seq=700, ack=9001,
              src_mac=BACKENDS[4][1])
    row("the SYN-ACK from backend 4 is translated", r4, T,
        _tcp(VIP, CLIENT, 91, 4444, flags="SA", seq=700, ack=9001, src_mac=LB_MAC,
             dst_mac=CLIENT_MAC))
    row("backend 1's late packets of the old connection: its reply entry is gone", r1,
        XdpAction.PASS)
    return Table(svcs, tuple(rows))


def _conntrack_table():
    """NAT services through the connection tracker (nat_tracking="conntrack")."""
    T, P, D = XdpAction.TX, XdpAction.PASS, XdpAction.DROP
    svcs = ((VIP, 91, "tcp", "nat", 1), (VIP6, 91, "udp", "nat", 2),
            (VIP, 80, "tcp", "ipip", 0))
    key, key6 = (VIP, 91, "tcp"), (VIP6, 91, "udp")
    be1, mac1 = BACKENDS[1][0], BACKENDS[1][1]
    rows = []

    def row(*a, **k):
        rows.append(Fixture(*a, **k))

    def c2b(bid, flags, seq, ack, payload=b""):
        """(client -> VIP, what backend bid receives)"""
        kw = dict(flags=flags, seq=seq, ack=ack, payload=payload)
        return _tcp(dport=91, **kw), _nat_fwd(_tcp_raw, bid, 91, **kw)

    def b2c(bid, flags, seq, ack):
        """(backend bid -> client, what the client receives)"""
        addr, mac, port = BACKENDS[bid]
        kw = dict(flags=flags, seq=seq, ack=ack)
        return (_tcp(addr, CLIENT, port or 91, CPORT, src_mac=mac, **kw),
                _tcp(VIP, CLIENT, 91, CPORT, src_mac=LB_MAC, dst_mac=CLIENT_MAC, **kw))

    row("SYN: a new connection, backend 1", c2b(1, "S", 1000, 0)[0], T, c2b(1, "S", 1000, 0)[1])
    row("SYN-ACK from backend 1: back to VIP -> client", b2c(1, "SA", 5000, 1001)[0], T,
        b2c(1, "SA", 5000, 1001)[1])
    row("ACK: backend 1", c2b(1, "A", 1001, 5001)[0], T, c2b(1, "A", 1001, 5001)[1])
    row("data after a table swap to backend 4: still backend 1",
        c2b(1, "PA", 1001, 5001, b"hello")[0], T, c2b(1, "PA", 1001, 5001, b"hello")[1],
        before=(("install_table", key, [4] * TABLE_SIZE),))
    row("a SYN on the live connection: the tracker ignores it, backend 1",
        c2b(1, "S", 1000, 0)[0], T, c2b(1, "S", 1000, 0)[1])
    row("the server closes first: its FIN is translated", b2c(1, "FA", 5001, 1006)[0], T,
        b2c(1, "FA", 5001, 1006)[1])
    row("client ACKs the FIN", c2b(1, "A", 1006, 5002)[0], T, c2b(1, "A", 1006, 5002)[1])
    row("client FIN", c2b(1, "FA", 1006, 5002)[0], T, c2b(1, "FA", 1006, 5002)[1])
    row("server's last ACK", b2c(1, "A", 5002, 1007)[0], T, b2c(1, "A", 5002, 1007)[1])
    row("a new SYN reusing the 5-tuple: the tracker reopens it, backend 4 (port 8080)",
        c2b(4, "S", 90000, 0)[0], T, c2b(4, "S", 90000, 0)[1])
    row("SYN-ACK from backend 4: translated", b2c(4, "SA", 7000, 90001)[0], T,
        b2c(4, "SA", 7000, 90001)[1])
    late = _tcp(be1, CLIENT, 91, CPORT, flags="A", seq=5002, ack=1007, src_mac=mac1)
    row("backend 1's late ACK: no connection any more, passed untouched", late, P)
    row("ACK: backend 4", c2b(4, "A", 90001, 7001)[0], T, c2b(4, "A", 90001, 7001)[1])
    bad = _tcp(dport=91, sport=5555, flags="SF")
    row("SYN+FIN, a new tuple: invalid for the tracker", bad, D, reason=DropReason.INVALID)
    rst = _tcp(dport=91, sport=5556, flags="R")
    row("RST opening nothing: invalid", rst, D, reason=DropReason.INVALID)
    u = _udp(CLIENT6, VIP6, CPORT, 91)
    row("udp6: a new connection, backend 2", u, T, _nat_fwd(_udp_raw, 2, 91, src=CLIENT6))
    r = _udp(BACKENDS[2][0], CLIENT6, 91, CPORT, src_mac=BACKENDS[2][1])
    row("udp6 reply from backend 2: translated", r, T,
        _udp(VIP6, CLIENT6, 91, CPORT, src_mac=LB_MAC, dst_mac=CLIENT_MAC))
    row("udp6 after a swap to backend 3: still 2", u, T, _nat_fwd(_udp_raw, 2, 91, src=CLIENT6),
        before=(("install_table", key6, [3] * TABLE_SIZE),))
    row("packet too big about the connection: to backend 2, translated",
        _ptb(VIP6, 91, "udp"), T, _icmp_err_nat(VIP6, 91, "udp", 2))
    row("after purge_backend(2): a new connection on backend 3", u, T,
        _nat_fwd(_udp_raw, 3, 91, src=CLIENT6), before=(("purge_backend", 2),))
    row("backend 2's late reply: passed untouched", r, P)
    i = _tcp(dport=80, sport=6000)
    row("an ipip service in the same data plane: the LRU table as before", i, T, _ipip(i, 0))
    row("a packet to another host: passed", _tcp(CLIENT, OTHER, CPORT, 80), P)
    return Table(svcs, tuple(rows), nat_tracking="conntrack")


def tables():
    """{name: Table}"""
    return {"ipv4": _ipv4_table(), "ipv6": _ipv6_table(), "swap": _swap_table(),
            "nat_conntrack": _conntrack_table()}
