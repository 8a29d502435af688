"""Header classes: Ethernet, 802.1Q, ARP, IPv4, IPv6 (+ extension headers),
TCP, UDP, ICMP, ICMPv6 and GUE, each able to build and decode itself."""

import enum
import ipaddress
import struct

import attrs

from pybpfnet.packet import _options as _opt
from pybpfnet.packet._base import (BuildError, Header, IPv4Address, IPv6Address, Padding,
                                   _bytes, _fold, _flag_converter, _ipv4, _ipv6,
                                   _ipv6_tuple, _options, _pseudo_residue, _residue, mac,
                                   mac_bytes)

__all__ = [
    "EtherType", "IPProto", "ICMPType", "ICMPv6Type", "ARPOp", "IPv4Flags", "TCPFlags",
    "Ethernet", "Dot1Q", "ARP", "IPv4", "IPv6", "IPv6HopByHop", "IPv6Routing",
    "IPv6Fragment", "IPv6DestOpts", "TCP", "UDP", "ICMP", "ICMPv6", "GUE", "GUE_PORT",
]

#: UDP port conventionally used for GUE (the port draft-ietf-intarea-gue asks
#: IANA for). ``parse`` decodes UDP payloads to these ports as GUE.
GUE_PORT = 6080


class EtherType(enum.IntEnum):
    """EtherType values used by the builders and the parser."""

    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD
    QINQ = 0x88A8
    VLAN_9100 = 0x9100
    #: IEEE 802 local experimental EtherType: the auto value before raw bytes.
    EXPERIMENTAL = 0x88B5


class IPProto(enum.IntEnum):
    """IP protocol / IPv6 next-header numbers used here."""

    HOPOPT = 0
    ICMP = 1
    IPIP = 4
    TCP = 6
    UDP = 17
    IPV6 = 41
    ROUTING = 43
    FRAGMENT = 44
    ICMPV6 = 58
    NONE = 59
    DSTOPTS = 60
    #: RFC 3692 experimentation value: the auto value before raw bytes.
    EXPERIMENTAL = 253


class ICMPType(enum.IntEnum):
    """Common ICMP (v4) message types."""

    ECHO_REPLY = 0
    DEST_UNREACH = 3
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAM_PROBLEM = 12


class ICMPv6Type(enum.IntEnum):
    """Common ICMPv6 message types."""

    DEST_UNREACH = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAM_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129
    ROUTER_SOLICIT = 133
    ROUTER_ADVERT = 134
    NEIGHBOR_SOLICIT = 135
    NEIGHBOR_ADVERT = 136


class ARPOp(enum.IntEnum):
    """ARP operation codes."""

    REQUEST = 1
    REPLY = 2


class IPv4Flags(enum.IntFlag):
    """The 3-bit IPv4 flags field."""

    MF = 1
    DF = 2
    #: The reserved bit (RFC 3514's "evil bit").
    RESERVED = 4


class TCPFlags(enum.IntFlag):
    """The 9 TCP flag bits; ``AE`` is the former NS bit (RFC 9768)."""

    FIN = 0x001
    SYN = 0x002
    RST = 0x004
    PSH = 0x008
    ACK = 0x010
    URG = 0x020
    ECE = 0x040
    CWR = 0x080
    AE = 0x100


_TCP_LETTERS = {"F": TCPFlags.FIN, "S": TCPFlags.SYN, "R": TCPFlags.RST, "P": TCPFlags.PSH,
                "A": TCPFlags.ACK, "U": TCPFlags.URG, "E": TCPFlags.ECE, "C": TCPFlags.CWR,
                "N": TCPFlags.AE}
_IP_LETTERS = {"M": IPv4Flags.MF, "D": IPv4Flags.DF, "R": IPv4Flags.RESERVED}
_tcp_flags = _flag_converter(TCPFlags, _TCP_LETTERS)
_ip_flags = _flag_converter(IPv4Flags, _IP_LETTERS)


class _Fail(Exception):
    """Internal: a header that cannot be decoded (becomes ParseError or Raw)."""


def _need(avail, n, what="header"):
    if avail < n:
        raise _Fail("%s truncated: need %d bytes, have %d" % (what, n, avail))


def _bitfields(*pairs):
    """Raise struct.error (-> a BuildError naming the field) if a value overflows."""
    for v, bits in pairs:
        if v >> bits or v < 0:
            raise struct.error("bit field out of range")


class _ParseState:
    __slots__ = ("strict", "gue_ports", "fragment")

    def __init__(self, strict, gue_ports):
        self.strict = strict
        self.gue_ports = gue_ports
        self.fragment = False


def _next_layer(layers, i):
    j = i + 1
    if j < len(layers):
        nxt = layers[j]
        if type(nxt) is not Padding:
            return nxt
    return None


def _next_ethertype(layers, i):
    nxt = _next_layer(layers, i)
    if nxt is None:
        return EtherType.EXPERIMENTAL.value
    return _ETHERTYPE_OF.get(type(nxt), 0x88B5)


def _next_proto(layers, i):
    nxt = _next_layer(layers, i)
    if nxt is None:
        return 59
    return _PROTO_OF.get(type(nxt), 253)


def _pseudo(layers, i, proto, length):
    """Pseudo-header residue for the L4 header at layers[i], None without IP."""
    final = None
    for j in range(i - 1, -1, -1):
        layer = layers[j]
        t = type(layer)
        if t is IPv4:
            dst = layer.dst
            if type(layer.options) is tuple:
                routes = [o for o in layer.options
                          if type(o) in (_opt.LooseSourceRoute, _opt.StrictSourceRoute)]
                # The final destination of a source-routed datagram (scapy does the same;
                # with several source-route options the IPv4 destination is used).
                if len(routes) == 1 and routes[0].addresses:
                    dst = routes[0].addresses[-1]
            return _pseudo_residue(layer.src, dst, proto, length)
        if t is IPv6:
            return _pseudo_residue(layer.src, final or layer.dst, proto, length)
        if t is IPv6Routing:
            if final is None and layer.addresses and layer.segments_left != 0:
                # RFC 8200 8.1: the final destination; for an SRH (type 4) that is
                # segment 0, the last one visited.
                final = layer.addresses[0] if layer.routing_type == 4 else layer.addresses[-1]
        elif t not in (IPv6HopByHop, IPv6DestOpts, IPv6Fragment):
            return None
    return None


def _l4_checksum(layers, i, proto, segment):
    r = _pseudo(layers, i, proto, len(segment))
    if r is None:
        return 0
    return _fold((r + _residue(segment)) % 0xFFFF)


def _auto(value):
    return "auto" if value is None else str(int(value))


# ---------------------------------------------------------------------------
# layer 2

_ETH = struct.Struct("!6s6sH")


@attrs.frozen(kw_only=True, repr=False)
class Ethernet(Header):
    """Ethernet II header. ``type`` is auto (from the next layer).

    MACs are stored as ``"aa:bb:cc:dd:ee:ff"``; any form ``mac()`` accepts works.
    Before raw bytes the auto type is 0x88B5 (local experimental).
    """

    dst: str = attrs.field(default="ff:ff:ff:ff:ff:ff", converter=mac)
    src: str = attrs.field(default="00:00:00:00:00:00", converter=mac)
    type: int | None = None
    name = "ethernet"
    _widths = {"type": 16}

    def _build(self, payload, layers, i, resolved):
        t = _next_ethertype(layers, i) if self.type is None else self.type
        if resolved is not None:
            resolved.append(attrs.evolve(self, type=t))
        return _ETH.pack(mac_bytes(self.dst), mac_bytes(self.src), t) + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        _need(end - off, 14)
        d, s, t = _ETH.unpack_from(data, off)
        return cls(dst=d.hex(":"), src=s.hex(":"), type=t), 14, end, _ETHER_NEXT.get(t)

    def _summary(self):
        return "Ethernet %s > %s" % (self.src, self.dst)


@attrs.frozen(kw_only=True, repr=False)
class Dot1Q(Header):
    """802.1Q VLAN tag: priority ``pcp``, ``dei`` bit, ``vid``; ``type`` is auto.

    The tag's own TPID is the ``type`` of the layer before it (0x8100 when
    auto; set it to 0x88A8 on the outer layer for an 802.1ad QinQ frame).
    """

    vid: int = 0
    pcp: int = 0
    dei: int = 0
    type: int | None = None
    name = "dot1q"
    _widths = {"vid": 12, "pcp": 3, "dei": 1, "type": 16}

    def _build(self, payload, layers, i, resolved):
        t = _next_ethertype(layers, i) if self.type is None else self.type
        _bitfields((self.vid, 12), (self.pcp, 3), (self.dei, 1))
        if resolved is not None:
            resolved.append(attrs.evolve(self, type=t))
        return struct.pack("!HH", self.pcp << 13 | self.dei << 12 | self.vid, t) + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        _need(end - off, 4)
        tci, t = struct.unpack_from("!HH", data, off)
        return (cls(vid=tci & 0xFFF, pcp=tci >> 13, dei=tci >> 12 & 1, type=t), 4, end,
                _ETHER_NEXT.get(t))

    def _summary(self):
        return "Dot1Q vlan %d" % self.vid


def _hw_addr(value):
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) != 6:
        return bytes(value)
    return mac(value)


def _proto_addr(value):
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if len(value) not in (4, 16):
            return value
    return ipaddress.ip_address(value)


def _addr_bytes(value):
    if isinstance(value, str):
        return mac_bytes(value)
    if isinstance(value, bytes):
        return value
    return value.packed


@attrs.frozen(kw_only=True, repr=False)
class ARP(Header):
    """ARP message (RFC 826); ``hwlen``/``plen`` are auto from the addresses.

    6-byte hardware addresses are MAC strings, 4/16-byte protocol addresses are
    ``ipaddress`` objects; other sizes stay ``bytes``.
    """

    op: int = 1
    hwsrc: object = attrs.field(default="00:00:00:00:00:00", converter=_hw_addr)
    psrc: object = attrs.field(default="0.0.0.0", converter=_proto_addr)
    hwdst: object = attrs.field(default="00:00:00:00:00:00", converter=_hw_addr)
    pdst: object = attrs.field(default="0.0.0.0", converter=_proto_addr)
    hwtype: int = 1
    ptype: int = 0x0800
    hwlen: int | None = None
    plen: int | None = None
    name = "arp"
    _length_fields = ("hwlen", "plen")
    _widths = {"op": 16, "hwtype": 16, "ptype": 16, "hwlen": 8, "plen": 8}

    def _build(self, payload, layers, i, resolved):
        hs, hd = _addr_bytes(self.hwsrc), _addr_bytes(self.hwdst)
        ps, pd = _addr_bytes(self.psrc), _addr_bytes(self.pdst)
        hwlen = len(hs) if self.hwlen is None else self.hwlen
        plen = len(ps) if self.plen is None else self.plen
        if resolved is not None:
            resolved.append(attrs.evolve(self, hwlen=hwlen, plen=plen))
        return struct.pack("!HHBBH", self.hwtype, self.ptype, hwlen, plen,
                           self.op) + hs + ps + hd + pd + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 8)
        hwtype, ptype, hwlen, plen, op = struct.unpack_from("!HHBBH", data, off)
        total = 8 + 2 * hwlen + 2 * plen
        _need(avail, total, "addresses")
        p = off + 8
        hs = data[p:p + hwlen]
        p += hwlen
        ps = data[p:p + plen]
        p += plen
        hd = data[p:p + hwlen]
        p += hwlen
        pd = data[p:p + plen]
        return (cls(op=op, hwsrc=hs, psrc=ps, hwdst=hd, pdst=pd, hwtype=hwtype,
                    ptype=ptype, hwlen=hwlen, plen=plen), total, off + total, None)

    def _summary(self):
        return "ARP %s %s > %s" % ({1: "who-has", 2: "is-at"}.get(self.op, "op %d" % self.op),
                                   self.psrc, self.pdst)


# ---------------------------------------------------------------------------
# IPv4

_IPV4 = struct.Struct("!BBHHHBBH4s4s")


@attrs.frozen(kw_only=True, repr=False)
class IPv4(Header):
    """IPv4 header (RFC 791).

    Auto fields: ``ihl``, ``total_length``, ``proto`` (from the next layer;
    59 when nothing follows, 253 before raw bytes) and ``checksum``.
    ``options`` is a sequence of option objects (``RouterAlert``, ``NOP``...)
    or raw bytes; either is zero-padded to a multiple of 4 bytes.
    ``frag_offset`` is in 8-byte units.
    """

    src: IPv4Address = attrs.field(default="0.0.0.0", converter=_ipv4)
    dst: IPv4Address = attrs.field(default="0.0.0.0", converter=_ipv4)
    tos: int = 0
    id: int = 0
    flags: IPv4Flags = attrs.field(default=0, converter=_ip_flags)
    frag_offset: int = 0
    ttl: int = 64
    proto: int | None = None
    options: object = attrs.field(default=(), converter=_options)
    version: int = 4
    ihl: int | None = None
    total_length: int | None = None
    checksum: int | None = None
    name = "ipv4"
    _length_fields = ("ihl", "total_length")
    _checksum_fields = ("checksum",)
    _widths = {"tos": 8, "id": 16, "flags": 3, "frag_offset": 13, "ttl": 8, "proto": 8,
               "version": 4, "ihl": 4, "total_length": 16, "checksum": 16}

    @property
    def dscp(self):
        """The DSCP (upper 6 bits of ``tos``)."""
        return self.tos >> 2

    @property
    def ecn(self):
        """The ECN codepoint (lower 2 bits of ``tos``)."""
        return self.tos & 3

    @property
    def is_fragment(self):
        """True for any fragment (MF set or a non-zero offset)."""
        return bool(self.flags & IPv4Flags.MF) or self.frag_offset != 0

    def _build(self, payload, layers, i, resolved):
        opts = self.options
        ob = opts if type(opts) is bytes else _opt.encode_options(opts) if opts else b""
        if len(ob) & 3:
            ob = _opt.pad4(ob)
        hl = 20 + len(ob)
        ihl = hl >> 2 if self.ihl is None else self.ihl
        tl = hl + len(payload) if self.total_length is None else self.total_length
        if tl > 0xFFFF:
            raise BuildError("IPv4 total length %d exceeds 65535" % tl)
        proto = _next_proto(layers, i) if self.proto is None else self.proto
        version, flags, frag = self.version, int(self.flags), self.frag_offset
        _bitfields((version, 4), (ihl, 4), (flags, 3), (frag, 13))
        hdr = _IPV4.pack(version << 4 | ihl, self.tos, tl, self.id, flags << 13 | frag,
                         self.ttl, proto, 0, self.src.packed, self.dst.packed)
        if ob:
            hdr += ob
        cs = self.checksum
        if cs is None:
            cs = _fold(_residue(hdr))
        if resolved is not None:
            resolved.append(attrs.evolve(self, ihl=ihl, total_length=tl, proto=proto,
                                         checksum=cs))
        return hdr[:10] + cs.to_bytes(2, "big") + hdr[12:] + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 20)
        vihl, tos, tl, id_, ff, ttl, proto, cs, s, d = _IPV4.unpack_from(data, off)
        ihl = vihl & 15
        hl = ihl * 4
        if ihl < 5:
            raise _Fail("IHL %d is below the minimum of 5" % ihl)
        _need(avail, hl, "options")
        if tl < hl:
            raise _Fail("total length %d is smaller than the header (%d bytes)" % (tl, hl))
        pend = off + tl
        if pend > end:
            if st.strict and not st.fragment:
                raise _Fail("total length %d exceeds the %d bytes available" % (tl, avail))
            pend = end
        frag = ff & 0x1FFF
        flags = ff >> 13
        layer = cls(src=IPv4Address(s), dst=IPv4Address(d), tos=tos, id=id_, flags=flags,
                    frag_offset=frag, ttl=ttl, proto=proto,
                    options=_opt.decode_ipv4_options(data[off + 20:off + hl]) if hl > 20 else (),
                    version=vihl >> 4, ihl=ihl, total_length=tl, checksum=cs)
        if frag:
            return layer, hl, pend, None
        if flags & 1:
            st.fragment = True
        return layer, hl, pend, _IP_NEXT.get(proto)

    def _summary(self):
        return "IPv4 %s > %s proto %s" % (self.src, self.dst, _auto(self.proto))


# ---------------------------------------------------------------------------
# IPv6 and its extension headers

_IPV6 = struct.Struct("!IHBB16s16s")


@attrs.frozen(kw_only=True, repr=False)
class IPv6(Header):
    """IPv6 header (RFC 8200). Auto: ``payload_length``, ``next_header``.

    Extension headers are layers of their own placed after it:
    ``IPv6(...) / IPv6HopByHop(...) / IPv6Fragment(...) / UDP(...)``.
    """

    src: IPv6Address = attrs.field(default="::", converter=_ipv6)
    dst: IPv6Address = attrs.field(default="::", converter=_ipv6)
    traffic_class: int = 0
    flow_label: int = 0
    hop_limit: int = 64
    next_header: int | None = None
    version: int = 6
    payload_length: int | None = None
    name = "ipv6"
    _length_fields = ("payload_length",)
    _widths = {"traffic_class": 8, "flow_label": 20, "hop_limit": 8, "next_header": 8,
               "version": 4, "payload_length": 16}

    def _build(self, payload, layers, i, resolved):
        plen = len(payload) if self.payload_length is None else self.payload_length
        if plen > 0xFFFF:
            raise BuildError("IPv6 payload length %d exceeds 65535 (jumbograms are not "
                             "supported)" % plen)
        nh = _next_proto(layers, i) if self.next_header is None else self.next_header
        _bitfields((self.version, 4), (self.traffic_class, 8), (self.flow_label, 20))
        if resolved is not None:
            resolved.append(attrs.evolve(self, payload_length=plen, next_header=nh))
        return _IPV6.pack(self.version << 28 | self.traffic_class << 20 | self.flow_label,
                          plen, nh, self.hop_limit, self.src.packed,
                          self.dst.packed) + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 40)
        vtf, plen, nh, hlim, s, d = _IPV6.unpack_from(data, off)
        pend = off + 40 + plen
        if pend > end:
            if st.strict and not st.fragment:
                raise _Fail("payload length %d exceeds the %d bytes available" % (
                    plen, avail - 40))
            pend = end
        layer = cls(src=IPv6Address(s), dst=IPv6Address(d), traffic_class=vtf >> 20 & 0xFF,
                    flow_label=vtf & 0xFFFFF, hop_limit=hlim, next_header=nh,
                    version=vtf >> 28, payload_length=plen)
        return layer, 40, pend, _IPV6_NEXT.get(nh)

    def _summary(self):
        return "IPv6 %s > %s nh %s" % (self.src, self.dst, _auto(self.next_header))


class _OptionsHeader(Header):
    __slots__ = ()
    _length_fields = ("hdr_ext_len",)
    _widths = {"next_header": 8, "hdr_ext_len": 8}

    def _build(self, payload, layers, i, resolved):
        opts = self.options
        ob = opts if type(opts) is bytes else _opt.encode_options(opts)
        ob = _opt.pad8_tlv(ob)
        hel = (len(ob) + 2) // 8 - 1 if self.hdr_ext_len is None else self.hdr_ext_len
        nh = _next_proto(layers, i) if self.next_header is None else self.next_header
        if resolved is not None:
            resolved.append(attrs.evolve(self, hdr_ext_len=hel, next_header=nh))
        return bytes((nh, hel)) + ob + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 2)
        nh, hel = data[off], data[off + 1]
        hl = (hel + 1) * 8
        _need(avail, hl, "options")
        layer = cls(next_header=nh, hdr_ext_len=hel,
                    options=_opt.decode_ipv6_options(data[off + 2:off + hl]))
        return layer, hl, end, _IPV6_NEXT.get(nh)

    def _summary(self):
        return type(self).__name__


@attrs.frozen(kw_only=True, repr=False)
class IPv6HopByHop(_OptionsHeader):
    """IPv6 Hop-by-Hop Options header; auto ``next_header``, ``hdr_ext_len``.

    ``options`` (``PadN``, ``IPv6Option``...) or raw bytes are padded with
    Pad1/PadN to a multiple of 8 bytes; no per-option alignment is inserted.
    """

    options: object = attrs.field(default=(), converter=_options)
    next_header: int | None = None
    hdr_ext_len: int | None = None
    name = "ipv6_hopbyhop"


@attrs.frozen(kw_only=True, repr=False)
class IPv6DestOpts(_OptionsHeader):
    """IPv6 Destination Options header; see ``IPv6HopByHop``."""

    options: object = attrs.field(default=(), converter=_options)
    next_header: int | None = None
    hdr_ext_len: int | None = None
    name = "ipv6_destopts"


@attrs.frozen(kw_only=True, repr=False)
class IPv6Routing(Header):
    """IPv6 Routing header. Auto: ``next_header``, ``hdr_ext_len``, ``segments_left``.

    The body after the first 4 bytes is the 32-bit ``reserved`` field (for
    an SRH, type 4: last entry, flags and tag), then ``addresses``, then
    ``data`` (zero-padded to 8 bytes). Address lists are decoded for types 0,
    2 and 4; other types keep their body in ``reserved`` + ``data``.
    Upper-layer checksums use the final destination when ``segments_left``
    is not 0.
    """

    addresses: tuple = attrs.field(default=(), converter=_ipv6_tuple)
    routing_type: int = 0
    segments_left: int | None = None
    reserved: int = 0
    data: bytes = attrs.field(default=b"", converter=_bytes)
    next_header: int | None = None
    hdr_ext_len: int | None = None
    name = "ipv6_routing"
    _length_fields = ("hdr_ext_len",)
    _widths = {"routing_type": 8, "segments_left": 8, "reserved": 32, "next_header": 8,
               "hdr_ext_len": 8}

    def _build(self, payload, layers, i, resolved):
        body = b"".join(a.packed for a in self.addresses) + self.data
        if len(body) & 7:
            body += bytes(-len(body) & 7)
        hel = (len(body) + 8) // 8 - 1 if self.hdr_ext_len is None else self.hdr_ext_len
        sl = len(self.addresses) if self.segments_left is None else self.segments_left
        nh = _next_proto(layers, i) if self.next_header is None else self.next_header
        if resolved is not None:
            resolved.append(attrs.evolve(self, hdr_ext_len=hel, next_header=nh,
                                         segments_left=sl))
        return struct.pack("!BBBBI", nh, hel, self.routing_type, sl,
                           self.reserved) + body + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 8)
        nh, hel, rtype, sl, res = struct.unpack_from("!BBBBI", data, off)
        hl = (hel + 1) * 8
        _need(avail, hl, "routing data")
        body = data[off + 8:off + hl]
        addrs = ()
        if rtype in (0, 2, 4):
            n = len(body) // 16
            addrs = tuple(IPv6Address(body[k * 16:k * 16 + 16]) for k in range(n))
            body = body[n * 16:]
        layer = cls(addresses=addrs, routing_type=rtype, segments_left=sl, reserved=res,
                    data=body, next_header=nh, hdr_ext_len=hel)
        return layer, hl, end, _IPV6_NEXT.get(nh)

    def _summary(self):
        return "IPv6Routing type %d left %s" % (self.routing_type, self.segments_left)


@attrs.frozen(kw_only=True, repr=False)
class IPv6Fragment(Header):
    """IPv6 Fragment header; ``offset`` in 8-byte units, ``more`` is the M flag."""

    offset: int = 0
    more: bool = attrs.field(default=False, converter=bool)
    id: int = 0
    next_header: int | None = None
    reserved: int = 0
    res: int = 0
    name = "ipv6_fragment"
    _widths = {"offset": 13, "id": 32, "next_header": 8, "reserved": 8, "res": 2}

    def _build(self, payload, layers, i, resolved):
        nh = _next_proto(layers, i) if self.next_header is None else self.next_header
        _bitfields((self.offset, 13), (self.res, 2))
        if resolved is not None:
            resolved.append(attrs.evolve(self, next_header=nh))
        return struct.pack("!BBHI", nh, self.reserved,
                           self.offset << 3 | self.res << 1 | self.more, self.id) + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        _need(end - off, 8)
        nh, res8, orm, id_ = struct.unpack_from("!BBHI", data, off)
        layer = cls(offset=orm >> 3, more=orm & 1, id=id_, next_header=nh, reserved=res8,
                    res=orm >> 1 & 3)
        if orm >> 3:
            return layer, 8, end, None
        if orm & 1:
            st.fragment = True
        return layer, 8, end, _IPV6_NEXT.get(nh)

    def _summary(self):
        return "IPv6Fragment offset %d%s" % (self.offset, " M" if self.more else "")


# ---------------------------------------------------------------------------
# transport

_TCP = struct.Struct("!HHIIBBHHH")


@attrs.frozen(kw_only=True, repr=False)
class TCP(Header):
    """TCP header (RFC 9293). Auto: ``data_offset``, ``checksum``.

    ``flags`` takes ``TCPFlags`` values or letters (``"SA"`` = SYN|ACK, from
    ``FSRPAUECN``). ``options`` (``MSS``, ``WindowScale``, ``SackPermitted``,
    ``Sack``, ``Timestamps``, ``NOP``, ``EOL``, ``TCPOption``) or raw bytes are
    zero-padded to a multiple of 4. The checksum uses the pseudo-header of the
    nearest IPv4/IPv6 layer before it (0 if there is none).
    """

    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: TCPFlags = attrs.field(default=TCPFlags.SYN, converter=_tcp_flags)
    window: int = 65535
    urgent: int = 0
    options: object = attrs.field(default=(), converter=_options)
    reserved: int = 0
    data_offset: int | None = None
    checksum: int | None = None
    name = "tcp"
    _length_fields = ("data_offset",)
    _checksum_fields = ("checksum",)
    _widths = {"sport": 16, "dport": 16, "seq": 32, "ack": 32, "flags": 9, "window": 16,
               "urgent": 16, "reserved": 3, "data_offset": 4, "checksum": 16}

    def _build(self, payload, layers, i, resolved):
        opts = self.options
        ob = opts if type(opts) is bytes else _opt.encode_options(opts) if opts else b""
        if len(ob) & 3:
            ob = _opt.pad4(ob)
        doff = (20 + len(ob)) >> 2 if self.data_offset is None else self.data_offset
        flags = int(self.flags)
        _bitfields((doff, 4), (self.reserved, 3), (flags, 9))
        seg = _TCP.pack(self.sport, self.dport, self.seq, self.ack,
                        doff << 4 | self.reserved << 1 | flags >> 8, flags & 0xFF,
                        self.window, 0, self.urgent) + ob + payload
        cs = self.checksum
        if cs is None:
            cs = _l4_checksum(layers, i, 6, seg)
        if resolved is not None:
            resolved.append(attrs.evolve(self, data_offset=doff, checksum=cs))
        return seg[:16] + cs.to_bytes(2, "big") + seg[18:]

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 20)
        sp, dp, seq, ack, b12, b13, win, cs, urg = _TCP.unpack_from(data, off)
        doff = b12 >> 4
        if doff < 5:
            raise _Fail("data offset %d is below the minimum of 5" % doff)
        hl = doff * 4
        _need(avail, hl, "options")
        layer = cls(sport=sp, dport=dp, seq=seq, ack=ack, flags=(b12 & 1) << 8 | b13,
                    window=win, urgent=urg,
                    options=_opt.decode_tcp_options(data[off + 20:off + hl]) if hl > 20 else (),
                    reserved=b12 >> 1 & 7, data_offset=doff, checksum=cs)
        return layer, hl, end, None

    def _summary(self):
        letters = "".join(ch for ch, f in _TCP_LETTERS.items() if self.flags & f)
        return "TCP %d > %d [%s]" % (self.sport, self.dport, letters)


_UDP = struct.Struct("!HHHH")


@attrs.frozen(kw_only=True, repr=False)
class UDP(Header):
    """UDP header (RFC 768). Auto: ``length``, ``checksum``.

    A computed checksum of 0 is sent as 0xFFFF (RFC 768/8200); set
    ``checksum=0`` for "no checksum" over IPv4.
    """

    sport: int = 0
    dport: int = 0
    length: int | None = None
    checksum: int | None = None
    name = "udp"
    _length_fields = ("length",)
    _checksum_fields = ("checksum",)
    _widths = {"sport": 16, "dport": 16, "length": 16, "checksum": 16}

    def _build(self, payload, layers, i, resolved):
        ln = 8 + len(payload) if self.length is None else self.length
        seg = _UDP.pack(self.sport, self.dport, ln, 0) + payload
        cs = self.checksum
        if cs is None:
            cs = _l4_checksum(layers, i, 17, seg) or 0xFFFF
        if resolved is not None:
            resolved.append(attrs.evolve(self, length=ln, checksum=cs))
        return seg[:6] + cs.to_bytes(2, "big") + seg[8:]

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 8)
        sp, dp, ln, cs = _UDP.unpack_from(data, off)
        if ln < 8:
            raise _Fail("length %d is below the minimum of 8" % ln)
        pend = off + ln
        if pend > end:
            if st.strict and not st.fragment:
                raise _Fail("length %d exceeds the %d bytes available" % (ln, avail))
            pend = end
        nxt = _gue_or_ip if dp in st.gue_ports else None
        return cls(sport=sp, dport=dp, length=ln, checksum=cs), 8, pend, nxt

    def _summary(self):
        return "UDP %d > %d" % (self.sport, self.dport)


class _ICMPBase(Header):
    __slots__ = ()
    _checksum_fields = ("checksum",)
    _widths = {"type": 8, "code": 8, "id": 16, "seq": 16, "checksum": 16}

    @property
    def rest(self):
        """The 32-bit rest-of-header word (``id`` << 16 | ``seq``)."""
        return self.id << 16 | self.seq

    @property
    def mtu(self):
        """Next-hop MTU of "fragmentation needed" (ICMP) / "packet too big" (ICMPv6)."""
        return self.seq if type(self) is ICMP else self.rest

    @classmethod
    def _decode(cls, data, off, end, st):
        _need(end - off, 8)
        t, c, cs, id_, seq = struct.unpack_from("!BBHHH", data, off)
        return cls(type=t, code=c, id=id_, seq=seq, checksum=cs), 8, end, None

    def _summary(self):
        return "%s type %d code %d" % (type(self).__name__, self.type, self.code)

    @classmethod
    def with_rest(cls, type, code=0, rest=0, **fields):
        """A header whose 4-byte word after the checksum (rest of header:
        echo id/seq, MTU, pointer...) is ``rest``."""
        return cls(type=type, code=code, id=rest >> 16, seq=rest & 0xFFFF, **fields)

    def _build(self, payload, layers, i, resolved):
        msg = struct.pack("!BBHHH", self.type, self.code, 0, self.id, self.seq) + payload
        cs = self.checksum
        if cs is None:
            cs = self._auto_checksum(msg, layers, i)
        if resolved is not None:
            resolved.append(attrs.evolve(self, checksum=cs))
        return msg[:2] + cs.to_bytes(2, "big") + msg[4:]


@attrs.frozen(kw_only=True, repr=False)
class ICMP(_ICMPBase):
    """ICMP header (RFC 792) of 8 bytes; auto ``checksum`` over header and payload.

    ``id``/``seq`` are the two halves of the 4-byte rest-of-header word (echo
    identifier and sequence; for other types use ``ICMP.with_rest``). The
    payload of error messages (the quoted datagram) is left as ``Raw``: parse
    it with ``parse(data, first="ipv4", strict=False)``.
    """

    type: int = 8
    code: int = 0
    id: int = 0
    seq: int = 0
    checksum: int | None = None
    name = "icmp"

    def _auto_checksum(self, msg, layers, i):
        r = _residue(msg)
        return _fold(r, r or any(msg))


@attrs.frozen(kw_only=True, repr=False)
class ICMPv6(_ICMPBase):
    """ICMPv6 header (RFC 4443) of 8 bytes; auto ``checksum`` with pseudo-header.

    ``id``/``seq`` are the halves of the 4 bytes after the checksum (echo
    identifier/sequence, or the MTU of "packet too big"; see ``with_rest``).
    Message bodies beyond those (e.g. neighbour discovery) are the payload.
    """

    type: int = 128
    code: int = 0
    id: int = 0
    seq: int = 0
    checksum: int | None = None
    name = "icmpv6"

    def _auto_checksum(self, msg, layers, i):
        return _l4_checksum(layers, i, 58, msg)


# ---------------------------------------------------------------------------
# GUE

@attrs.frozen(kw_only=True, repr=False)
class GUE(Header):
    """GUE variant 0 header (draft-ietf-intarea-gue): 4 bytes + extension fields.

    First byte: 2-bit ``version`` (variant), ``control`` bit ``C``, 5-bit
    ``hlen`` (auto: extension words after the first 4 bytes). Then
    ``proto`` (auto from the next layer; the control type when ``control``
    is set) and 16 bits of ``flags``. ``extensions`` are raw bytes, zero-padded
    to 4. Variant 1 has no header at all: build it as
    ``UDP(dport=GUE_PORT) / IPv4(...)``; ``parse`` recognises both.
    """

    proto: int | None = None
    control: bool = attrs.field(default=False, converter=bool)
    flags: int = 0
    extensions: bytes = attrs.field(default=b"", converter=_bytes)
    version: int = 0
    hlen: int | None = None
    name = "gue"
    _length_fields = ("hlen",)
    _widths = {"proto": 8, "flags": 16, "version": 2, "hlen": 5}

    def _build(self, payload, layers, i, resolved):
        ext = self.extensions
        if len(ext) & 3:
            ext = _opt.pad4(ext)
        hlen = len(ext) >> 2 if self.hlen is None else self.hlen
        if self.proto is not None:
            proto = self.proto
        elif self.control:
            proto = 0
        else:
            proto = _next_proto(layers, i)
        _bitfields((self.version, 2), (hlen, 5))
        if resolved is not None:
            resolved.append(attrs.evolve(self, hlen=hlen, proto=proto))
        return struct.pack("!BBH", self.version << 6 | self.control << 5 | hlen, proto,
                           self.flags) + ext + payload

    @classmethod
    def _decode(cls, data, off, end, st):
        avail = end - off
        _need(avail, 4)
        b0, proto, flags = struct.unpack_from("!BBH", data, off)
        hlen = b0 & 31
        hl = 4 + hlen * 4
        _need(avail, hl, "extension fields")
        control = b0 >> 5 & 1
        layer = cls(proto=proto, control=control, flags=flags,
                    extensions=data[off + 4:off + hl], version=b0 >> 6, hlen=hlen)
        return layer, hl, end, None if control else _IP_NEXT.get(proto)

    def _summary(self):
        return "GUE %s %s" % ("ctype" if self.control else "proto", _auto(self.proto))


def _gue_or_ip(data, off, end):
    """Decoder choice for a UDP payload on a GUE port: GUE variant 0 or direct IP."""
    if off >= end:
        return None
    b0 = data[off]
    variant = b0 >> 6
    if variant == 0:
        return GUE
    if variant == 1:
        return {4: IPv4, 6: IPv6}.get(b0 >> 4)
    return None


_ETHERTYPE_OF = {IPv4: 0x0800, IPv6: 0x86DD, ARP: 0x0806, Dot1Q: 0x8100}
_ETHER_NEXT = {0x0800: IPv4, 0x86DD: IPv6, 0x0806: ARP, 0x8100: Dot1Q, 0x88A8: Dot1Q,
               0x9100: Dot1Q}
_PROTO_OF = {ICMP: 1, IPv4: 4, TCP: 6, UDP: 17, IPv6: 41, ICMPv6: 58, IPv6HopByHop: 0,
             IPv6Routing: 43, IPv6Fragment: 44, IPv6DestOpts: 60}
_IP_NEXT = {1: ICMP, 4: IPv4, 6: TCP, 17: UDP, 41: IPv6, 58: ICMPv6}
_IPV6_NEXT = {**_IP_NEXT, 0: IPv6HopByHop, 43: IPv6Routing, 44: IPv6Fragment,
              60: IPv6DestOpts}
