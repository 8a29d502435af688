"""The parser: bytes -> ``Packet``, strict (``ParseError``) or lenient (``Raw`` tail)."""

from pybpfnet.packet._base import Packet, Padding, ParseError, Raw
from pybpfnet.packet._headers import (ARP, GUE_PORT, ICMP, TCP, UDP, Dot1Q, Ethernet,
                                      ICMPv6, IPv4, IPv6, IPv6DestOpts, IPv6Fragment,
                                      IPv6HopByHop, IPv6Routing, _Fail, _gue_or_ip,
                                      _ParseState)

__all__ = ["parse", "FIRST_LAYERS"]


def _ip_by_version(data, off, end):
    if off >= end:
        raise _Fail("header truncated: need 1 byte, have 0")
    version = data[off] >> 4
    if version == 4:
        return IPv4
    if version == 6:
        return IPv6
    raise _Fail("version %d is neither 4 nor 6" % version)


_ip_by_version.name = "ip"
_gue_or_ip.name = "gue"

#: Names accepted by ``parse(first=...)`` (a header class works too).
FIRST_LAYERS = {
    "ethernet": Ethernet, "dot1q": Dot1Q, "arp": ARP, "ip": _ip_by_version, "ipv4": IPv4,
    "ipv6": IPv6, "ipv6_hopbyhop": IPv6HopByHop, "ipv6_routing": IPv6Routing,
    "ipv6_fragment": IPv6Fragment, "ipv6_destopts": IPv6DestOpts, "tcp": TCP, "udp": UDP,
    "icmp": ICMP, "icmpv6": ICMPv6, "gue": _gue_or_ip, "raw": None,
}


def parse(data, first="ethernet", *, strict=True, gue_ports=(GUE_PORT,)):
    """Decode ``data`` into a ``Packet``, starting with the layer named by ``first``.

    ``first`` is a key of ``FIRST_LAYERS`` (``"ethernet"``, ``"ipv4"``,
    ``"ip"`` for either IP version, ...) or a header class. Decoding follows
    EtherTypes, IP protocol / next-header numbers and, for UDP to one of
    ``gue_ports``, GUE (variant 0 header or variant 1 direct IP). Unknown
    protocols, non-first fragments and everything after ARP/ICMP end in
    ``Raw``; bytes past the end that an IPv4/IPv6/UDP length gives (Ethernet
    padding) end in ``Padding``. Every field is explicit in the result, so
    ``bytes(parse(data)) == data``. Checksums are not verified here: see
    ``checksum_errors``.

    With ``strict=True`` a malformed or truncated header raises ``ParseError``
    (a ``ValueError``) naming the layer, its offset and the reason. With
    ``strict=False`` parsing never raises for any input: it returns the layers
    decoded so far plus a ``Raw`` layer holding the rest, whose ``error`` says
    why decoding stopped; IPv4/IPv6/UDP lengths larger than the data are
    accepted (a capture cut by a snap length). Inside a fragment (IPv4 MF or an
    IPv6 Fragment header) a transport header that does not fit ends in ``Raw``
    in both modes.
    """
    if isinstance(data, str):
        raise TypeError("parse() takes bytes, not str")
    data = bytes(data)
    if isinstance(first, str):
        try:
            dec = FIRST_LAYERS[first]
        except KeyError:
            raise ValueError("unknown first layer %r; one of %s" % (
                first, ", ".join(sorted(FIRST_LAYERS)))) from None
    elif first is None or hasattr(first, "_decode"):
        dec = first
    else:
        raise TypeError("first must be a layer name or a header class, not %r" % (first,))
    st = _ParseState(strict, frozenset(gue_ports))
    layers = []
    off = 0
    end = total = len(data)
    while dec is not None:
        try:
            if not isinstance(dec, type):
                dec = dec(data, off, end)
                if dec is None:
                    break
            layer, hlen, pend, nxt = dec._decode(data, off, end, st)
        except _Fail as exc:
            err = ParseError(dec.name, off, str(exc))
            if strict and not st.fragment:
                raise err from None
            layers.append(Raw(data[off:end], error=str(err)))
            off = end
            break
        layers.append(layer)
        off += hlen
        end = pend
        dec = nxt
    if off < end:
        layers.append(Raw(data[off:end]))
    if end < total:
        layers.append(Padding(data[end:]))
    return Packet(layers)
