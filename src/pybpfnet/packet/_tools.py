"""Helpers over packets: common builders, flow tuples, checksum checks,
encapsulation, and "hostile" variants (VLAN tags, IP options, IPv6 extension
header chains, fragments)."""

import ipaddress

import attrs

from pybpfnet.packet import _options as _opt
from pybpfnet.packet._base import Packet, Padding, Raw
from pybpfnet.packet._headers import (GUE, GUE_PORT, ICMP, TCP, UDP, Dot1Q, Ethernet, ICMPv6,
                                      IPv4, IPv4Flags, IPv6, IPv6DestOpts, IPv6Fragment,
                                      IPv6HopByHop, IPv6Routing, _PROTO_OF)

__all__ = [
    "FlowTuple", "flow", "ChecksumMismatch", "checksum_errors", "udp_packet", "tcp_packet",
    "icmp_echo", "encap_ipip", "encap_gue", "decap", "with_vlan", "with_ipv4_options",
    "with_ipv6_extensions", "fragment", "HOSTILE_IPV4_OPTIONS",
]

_IP = (IPv4, IPv6)
_EXT = (IPv6HopByHop, IPv6Routing, IPv6Fragment, IPv6DestOpts)


def _ip_address(value):
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value)


# ---------------------------------------------------------------------------
# flows

@attrs.frozen
class FlowTuple:
    """A 5-tuple: addresses, upper-layer protocol number and ports (0 if none)."""

    src: object
    dst: object
    proto: int
    sport: int = 0
    dport: int = 0

    def reversed(self):
        """The tuple of the reply direction."""
        return FlowTuple(self.dst, self.src, self.proto, self.dport, self.sport)


def flow(packet, inner=False):
    """The 5-tuple of the outermost (or with ``inner``, innermost) IP header.

    ``proto`` is the upper-layer protocol after any IPv6 extension headers;
    ports come from a TCP/UDP header right after it and are 0 for other
    protocols (ICMP included) and for non-first fragments. Returns ``None``
    when the packet has no IP layer.
    """
    layers = packet.layers
    idx = [i for i, layer in enumerate(layers) if type(layer) in _IP]
    if not idx:
        return None
    i = idx[-1] if inner else idx[0]
    ip = layers[i]
    proto = ip.proto if type(ip) is IPv4 else ip.next_header
    j = i + 1
    while j < len(layers) and type(layers[j]) in _EXT:
        proto = layers[j].next_header
        j += 1
    nxt = layers[j] if j < len(layers) else None
    if proto is None:
        proto = _PROTO_OF.get(type(nxt), 59 if nxt is None or type(nxt) is Padding else 253)
    if type(nxt) in (TCP, UDP):
        return FlowTuple(ip.src, ip.dst, proto, nxt.sport, nxt.dport)
    return FlowTuple(ip.src, ip.dst, proto)


# ---------------------------------------------------------------------------
# checksum verification

@attrs.frozen
class ChecksumMismatch:
    """A checksum field whose value is not what the bytes require."""

    index: int
    layer: str
    found: int
    expected: int


def checksum_errors(packet):
    """Every wrong checksum in ``packet`` (an empty list when all are right).

    Each checksum is checked against the packet's actual bytes (a wrong inner
    checksum does not make an outer one wrong). Transport checksums inside a
    fragment cannot be checked and are skipped; a UDP checksum of 0 over IPv4
    means "none" and is accepted. Auto (``None``) checksums are right by
    construction.
    """
    layers = packet.layers
    errors = []
    in_fragment = False
    for i, layer in enumerate(layers):
        t = type(layer)
        if t is IPv4 and layer.is_fragment or t is IPv6Fragment and (layer.more or layer.offset):
            in_fragment = True
        cs = getattr(layer, "checksum", None)
        if cs is None or t not in (IPv4, TCP, UDP, ICMP, ICMPv6):
            continue
        if in_fragment and t is not IPv4:
            continue
        if t is UDP and cs == 0 and any(type(x) is IPv4 for x in layers[:i]):
            continue
        probe = Packet(layers[:i] + (attrs.evolve(layer, checksum=None),) + layers[i + 1:])
        expected = probe.complete().layers[i].checksum
        if expected != cs:
            errors.append(ChecksumMismatch(i, t.__name__, cs, expected))
    return errors


# ---------------------------------------------------------------------------
# common builders

def _l2l3(src, dst, l2, src_mac, dst_mac, ttl):
    src, dst = _ip_address(src), _ip_address(dst)
    if src.version != dst.version:
        raise ValueError("%s and %s are of different IP versions" % (src, dst))
    if src.version == 4:
        ip = IPv4(src=src, dst=dst, ttl=ttl)
    else:
        ip = IPv6(src=src, dst=dst, hop_limit=ttl)
    if l2:
        return Packet((Ethernet(src=src_mac, dst=dst_mac), ip))
    return Packet((ip,))


_SRC_MAC = "02:00:00:00:00:01"
_DST_MAC = "02:00:00:00:00:02"


def udp_packet(src, dst, sport, dport, payload=b"", *, l2=True, src_mac=_SRC_MAC,
               dst_mac=_DST_MAC, ttl=64):
    """Ethernet / IPv4-or-IPv6 (by the addresses) / UDP / payload.

    ``l2=False`` starts at the IP header.
    """
    return _l2l3(src, dst, l2, src_mac, dst_mac, ttl) / UDP(sport=sport, dport=dport) / payload


def tcp_packet(src, dst, sport, dport, flags="S", payload=b"", *, seq=0, ack=0,
               window=65535, options=(), l2=True, src_mac=_SRC_MAC, dst_mac=_DST_MAC, ttl=64):
    """Ethernet / IPv4-or-IPv6 / TCP / payload; ``flags`` as ``TCPFlags`` or letters."""
    return _l2l3(src, dst, l2, src_mac, dst_mac, ttl) / TCP(
        sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
        options=options) / payload


def icmp_echo(src, dst, id=0, seq=0, payload=b"", *, reply=False, l2=True,
              src_mac=_SRC_MAC, dst_mac=_DST_MAC, ttl=64):
    """An ICMP (IPv4) or ICMPv6 echo request, or reply with ``reply=True``."""
    pkt = _l2l3(src, dst, l2, src_mac, dst_mac, ttl)
    if type(pkt.layers[-1]) is IPv4:
        icmp = ICMP(type=0 if reply else 8, id=id, seq=seq)
    else:
        icmp = ICMPv6(type=129 if reply else 128, id=id, seq=seq)
    return pkt / icmp / payload


# ---------------------------------------------------------------------------
# encapsulation

def _first_ip(packet):
    for i, layer in enumerate(packet.layers):
        if type(layer) in _IP:
            return i
    raise ValueError("packet has no IP layer: %s" % packet.summary())


def _outer_ip(src, dst, fields):
    src, dst = _ip_address(src), _ip_address(dst)
    if src.version != dst.version:
        raise ValueError("%s and %s are of different IP versions" % (src, dst))
    if src.version == 6 and "ttl" in fields:
        fields = dict(fields)
        fields["hop_limit"] = fields.pop("ttl")
    return (IPv4 if src.version == 4 else IPv6)(src=src, dst=dst, **fields)


def _auto_l2_type(layers, i):
    """Make the layer before index i (Ethernet/Dot1Q) take its type from the next layer."""
    if i > 0 and type(layers[i - 1]) in (Ethernet, Dot1Q):
        layers[i - 1] = attrs.evolve(layers[i - 1], type=None)


def encap_ipip(packet, src, dst, **outer_fields):
    """Wrap the IP part of ``packet`` in an outer IPv4/IPv6 header (IPIP, 4in6, 6in4...).

    Layers before the first IP header (Ethernet, VLAN) stay outermost; the
    family of the outer header follows ``src``/``dst``. ``outer_fields`` go to
    the outer header (``ttl`` means ``hop_limit`` for IPv6).
    """
    i = _first_ip(packet)
    layers = list(packet.layers)
    layers.insert(i, _outer_ip(src, dst, outer_fields))
    _auto_l2_type(layers, i)
    return Packet(layers)


def encap_gue(packet, src, dst, sport=GUE_PORT, dport=GUE_PORT, *, variant=1, gue=None,
              **outer_fields):
    """Wrap the IP part of ``packet`` in outer IP / UDP / GUE.

    ``variant=1`` is direct IP encapsulation (no GUE header); ``variant=0``
    inserts ``gue`` (default ``GUE()``, whose proto is auto).
    """
    i = _first_ip(packet)
    layers = list(packet.layers)
    new = [_outer_ip(src, dst, outer_fields), UDP(sport=sport, dport=dport)]
    if variant == 0:
        new.append(gue if gue is not None else GUE())
    elif variant != 1:
        raise ValueError("GUE variant is 0 or 1, not %r" % (variant,))
    layers[i:i] = new
    _auto_l2_type(layers, i)
    return Packet(layers)


def decap(packet):
    """Remove the outermost IP header and any UDP/GUE between it and the next IP header.

    The inverse of ``encap_ipip``/``encap_gue``; raises ``ValueError`` when
    the packet has no inner IP header.
    """
    layers = list(packet.layers)
    i = _first_ip(packet)
    j = i + 1
    while j < len(layers) and type(layers[j]) in _EXT + (UDP, GUE):
        j += 1
    if j >= len(layers) or type(layers[j]) not in _IP:
        raise ValueError("no inner IP header to decapsulate in %s" % packet.summary())
    del layers[i:j]
    _auto_l2_type(layers, i)
    return Packet(layers)


# ---------------------------------------------------------------------------
# hostile variants

def with_vlan(packet, *tags, tpids=None):
    """Insert 802.1Q tags (vids or ``Dot1Q`` objects) after the Ethernet header.

    One tag uses TPID 0x8100; two or more are 802.1ad QinQ (outer 0x88A8,
    inner 0x8100) unless ``tpids`` (one per tag, outermost first) says
    otherwise.
    """
    if not packet.layers or type(packet.layers[0]) is not Ethernet:
        raise ValueError("with_vlan needs a packet that starts with Ethernet")
    if not tags:
        raise ValueError("with_vlan needs at least one tag")
    if tpids is None:
        tpids = (0x8100,) if len(tags) == 1 else (0x88A8,) + (0x8100,) * (len(tags) - 1)
    if len(tpids) != len(tags):
        raise ValueError("one TPID per tag: %d tags, %d TPIDs" % (len(tags), len(tpids)))
    eth = packet.layers[0]
    dots = [t if isinstance(t, Dot1Q) else Dot1Q(vid=t) for t in tags]
    out = [attrs.evolve(eth, type=tpids[0])]
    for k, dot in enumerate(dots):
        nxt_type = tpids[k + 1] if k + 1 < len(dots) else eth.type
        out.append(attrs.evolve(dot, type=nxt_type))
    return Packet(tuple(out) + packet.layers[1:])


#: 40 bytes of options, the most IHL allows: Router Alert, then a Record Route
#: with 8 empty slots (and the EOL padding).
HOSTILE_IPV4_OPTIONS = (_opt.RouterAlert(0), _opt.RecordRoute(addresses=("0.0.0.0",) * 8))


def with_ipv4_options(packet, options=HOSTILE_IPV4_OPTIONS, nth=0):
    """Set the options of the ``nth`` IPv4 header; lengths and checksums are recomputed.

    The default fills the 40 bytes IHL 15 allows.
    """
    i = packet.index(IPv4, nth)
    return packet.evolve(i, options=options).recompute()


def _default_chain(ip):
    return (
        IPv6HopByHop(options=(_opt.PadN(4),)),
        IPv6DestOpts(options=(_opt.PadN(4),)),
        IPv6Routing(routing_type=4, segments_left=0, addresses=(ip.dst,)),
        IPv6Fragment(offset=0, more=False, id=1),
        IPv6DestOpts(options=(_opt.PadN(4),)),
    )


def with_ipv6_extensions(packet, headers=None, nth=0):
    """Insert a chain of IPv6 extension headers after the ``nth`` IPv6 header.

    The default chain follows RFC 8200's recommended order, every header one a
    receiver must skip: Hop-by-Hop, Destination Options, a Segment Routing
    header with 0 segments left, an atomic Fragment header (offset 0, M 0) and
    Destination Options. Lengths and checksums are recomputed.
    """
    i = packet.index(IPv6, nth)
    full = packet.complete()
    ip = full.layers[i]
    chain = list(_default_chain(ip) if headers is None else headers)
    if not chain:
        return packet
    last = chain[-1]
    if last.next_header is None:
        chain[-1] = attrs.evolve(last, next_header=ip.next_header)
    layers = list(packet.layers)
    layers[i] = attrs.evolve(layers[i], next_header=None)
    layers[i + 1:i + 1] = chain
    return Packet(layers).recompute()


def _sizes(sizes, total):
    if isinstance(sizes, int):
        step = sizes - sizes % 8
        if step <= 0:
            raise ValueError("fragment size must be at least 8, got %d" % sizes)
        sizes = [step] * max(1, -(-total // step))
    out = []
    pos = 0
    for k, size in enumerate(sizes):
        if pos >= total:
            break
        if size <= 0 or (size % 8 and pos + size < total):
            raise ValueError("fragment sizes other than the last must be positive multiples "
                             "of 8, got %d" % size)
        out.append((pos, min(size, total - pos)))
        pos += size
    if pos < total:
        out.append((pos, total - pos))
    return out


def fragment(packet, sizes, *, id=None, nth=0):
    """Split the ``nth`` IP header's payload into fragments; a list of packets.

    ``sizes`` is a fragment payload size (rounded down to a multiple of 8) or
    a list of sizes, the last fragment taking what remains: ``[8, 1480]``
    makes a tiny first fragment that cuts a TCP header in two. IPv4 fragments
    set MF and the offset (options without the copy bit stay in the first
    fragment only); IPv6 fragments insert a Fragment header after the
    unfragmentable part (Hop-by-Hop and Routing headers), with identification
    ``id`` (default: the IPv4 id, or 1). Fragment payloads are ``Raw``:
    ``parse(bytes(f))`` decodes the transport header of a first fragment.
    """
    layers = packet.layers
    i = [k for k, layer in enumerate(layers) if type(layer) in _IP][nth]
    full = packet.complete()
    data = bytes(packet)
    offs = packet.offsets()
    trailer = len(layers[-1].data) if type(layers[-1]) is Padding else 0
    end = len(data) - trailer
    ip = full.layers[i]
    if type(ip) is IPv4:
        start = offs[i + 1] if i + 1 < len(offs) else end
        payload = data[start:end]
        base = attrs.evolve(layers[i], proto=ip.proto, ihl=None, total_length=None,
                            checksum=None)
        if id is not None:
            base = attrs.evolve(base, id=id)
        later_opts = ip.options
        if type(later_opts) is tuple:
            # RFC 791: only options with the copied flag go into later fragments.
            later_opts = tuple(o for o in later_opts if o._encode()[0] & 0x80)
        out = []
        for k, (pos, size) in enumerate(_sizes(sizes, len(payload))):
            last = pos + size >= len(payload)
            flags = ip.flags & ~IPv4Flags.MF if last else ip.flags | IPv4Flags.MF
            hdr = attrs.evolve(base, flags=flags, frag_offset=ip.frag_offset + pos // 8)
            if k:
                hdr = attrs.evolve(hdr, options=later_opts)
            out.append(Packet(layers[:i] + (hdr, Raw(payload[pos:pos + size]))))
        return out
    # IPv6: the unfragmentable part ends after the last Hop-by-Hop/Routing header.
    j = i + 1
    last_unfrag = i
    while j < len(layers) and type(layers[j]) in _EXT:
        if type(layers[j]) in (IPv6HopByHop, IPv6Routing):
            last_unfrag = j
        j += 1
    start = offs[last_unfrag + 1] if last_unfrag + 1 < len(offs) else end
    payload = data[start:end]
    nh = full.layers[last_unfrag].next_header
    head = list(layers[:last_unfrag + 1])
    if last_unfrag == i:
        head[i] = attrs.evolve(head[i], payload_length=None, next_header=None)
    else:
        head[i] = attrs.evolve(head[i], payload_length=None,
                               next_header=full.layers[i].next_header)
        head[last_unfrag] = attrs.evolve(head[last_unfrag], next_header=None)
    ident = 1 if id is None else id
    out = []
    for pos, size in _sizes(sizes, len(payload)):
        last = pos + size >= len(payload)
        frag = IPv6Fragment(offset=pos // 8, more=not last, id=ident, next_header=nh)
        out.append(Packet(tuple(head) + (frag, Raw(payload[pos:pos + size]))))
    return out

