"""Options of IPv4 and TCP headers and of IPv6 hop-by-hop/destination headers.

Each option class encodes itself (``bytes(option)``). Decoding keeps a list of
option objects only when re-encoding that list reproduces the wire bytes
exactly; anything else (bad lengths, data after an end-of-list) stays raw
``bytes``, so a parsed header always rebuilds to the same bytes.
"""

import struct
from ipaddress import IPv4Address

import attrs

from pybpfnet.packet._base import Value, _bytes, _ipv4_tuple

__all__ = [
    "EOL", "NOP", "IPv4Option", "RouterAlert", "RecordRoute", "LooseSourceRoute",
    "StrictSourceRoute", "TCPOption", "MSS", "WindowScale", "SackPermitted", "Sack",
    "Timestamps", "Pad1", "PadN", "IPv6Option",
]


class Option(Value):
    """Base of all options."""

    __slots__ = ()
    _positional_repr = True

    def __bytes__(self):
        return self._encode()


# -- single-byte options shared by IPv4 (RFC 791) and TCP (RFC 9293) ---------

@attrs.frozen(repr=False)
class EOL(Option):
    """End of option list (kind 0): one zero byte, valid in IPv4 and TCP options."""

    def _encode(self):
        return b"\x00"


@attrs.frozen(repr=False)
class NOP(Option):
    """No-operation (kind 1): one byte, valid in IPv4 and TCP options."""

    def _encode(self):
        return b"\x01"


def _tlv(kind, data):
    if len(data) > 253:
        raise ValueError("option %d: %d data bytes do not fit a length byte" % (kind, len(data)))
    return bytes((kind, len(data) + 2)) + data


# -- IPv4 -----------------------------------------------------------------

@attrs.frozen(repr=False)
class IPv4Option(Option):
    """Any IPv4 option as type (copied/class/number byte) and data."""

    type: int
    data: bytes = attrs.field(default=b"", converter=_bytes)

    def _encode(self):
        return _tlv(self.type, self.data)


@attrs.frozen(repr=False)
class RouterAlert(Option):
    """IPv4 Router Alert (RFC 2113, type 148): routers examine the packet."""

    value: int = 0

    def _encode(self):
        return struct.pack("!BBH", 148, 4, self.value)


class _Route(Option):
    __slots__ = ()
    _positional_repr = False

    def _encode(self):
        pointer = 4 if self.pointer is None else self.pointer
        return bytes((self.kind, 3 + 4 * len(self.addresses), pointer)) + b"".join(
            a.packed for a in self.addresses)


@attrs.frozen(repr=False)
class RecordRoute(_Route):
    """IPv4 Record Route (type 7): ``addresses`` are the slots, ``pointer`` 4 = first."""

    addresses: tuple = attrs.field(default=(), converter=_ipv4_tuple)
    pointer: int = 4
    kind = 7


@attrs.frozen(repr=False)
class LooseSourceRoute(_Route):
    """IPv4 Loose Source and Record Route (type 131).

    The last address is the final destination: TCP/UDP pseudo-headers use it.
    """

    addresses: tuple = attrs.field(default=(), converter=_ipv4_tuple)
    pointer: int = 4
    kind = 131


@attrs.frozen(repr=False)
class StrictSourceRoute(_Route):
    """IPv4 Strict Source and Record Route (type 137); see ``LooseSourceRoute``."""

    addresses: tuple = attrs.field(default=(), converter=_ipv4_tuple)
    pointer: int = 4
    kind = 137


_ROUTES = {7: RecordRoute, 131: LooseSourceRoute, 137: StrictSourceRoute}


def _ipv4_option(kind, data):
    if kind == 148 and len(data) == 2:
        return RouterAlert(struct.unpack("!H", data)[0])
    cls = _ROUTES.get(kind)
    if cls is not None and len(data) % 4 == 1:
        return cls(addresses=tuple(IPv4Address(data[i:i + 4]) for i in range(1, len(data), 4)),
                   pointer=data[0])
    return IPv4Option(kind, data)


# -- TCP --------------------------------------------------------------------

@attrs.frozen(repr=False)
class TCPOption(Option):
    """Any TCP option as kind and data."""

    kind: int
    data: bytes = attrs.field(default=b"", converter=_bytes)

    def _encode(self):
        return _tlv(self.kind, self.data)


@attrs.frozen(repr=False)
class MSS(Option):
    """TCP Maximum Segment Size (kind 2)."""

    value: int = 1460

    def _encode(self):
        return struct.pack("!BBH", 2, 4, self.value)


@attrs.frozen(repr=False)
class WindowScale(Option):
    """TCP Window Scale (kind 3, RFC 7323): the shift count."""

    shift: int = 0

    def _encode(self):
        return struct.pack("!BBB", 3, 3, self.shift)


@attrs.frozen(repr=False)
class SackPermitted(Option):
    """TCP SACK-Permitted (kind 4, RFC 2018)."""

    def _encode(self):
        return b"\x04\x02"


def _blocks(value):
    return tuple((int(a), int(b)) for a, b in value)


@attrs.frozen(repr=False)
class Sack(Option):
    """TCP SACK (kind 5, RFC 2018): ``blocks`` of (left edge, right edge)."""

    blocks: tuple = attrs.field(default=(), converter=_blocks)

    def _encode(self):
        flat = [v for block in self.blocks for v in block]
        return struct.pack("!BB%dI" % len(flat), 5, 2 + 4 * len(flat), *flat)


@attrs.frozen(repr=False)
class Timestamps(Option):
    """TCP Timestamps (kind 8, RFC 7323): TSval and TSecr."""

    tsval: int = 0
    tsecr: int = 0

    def _encode(self):
        return struct.pack("!BBII", 8, 10, self.tsval, self.tsecr)


def _tcp_option(kind, data):
    n = len(data)
    if kind == 2 and n == 2:
        return MSS(struct.unpack("!H", data)[0])
    if kind == 3 and n == 1:
        return WindowScale(data[0])
    if kind == 4 and n == 0:
        return SackPermitted()
    if kind == 5 and n % 8 == 0:
        vals = struct.unpack("!%dI" % (n // 4), data)
        return Sack(tuple(zip(vals[::2], vals[1::2])))
    if kind == 8 and n == 8:
        return Timestamps(*struct.unpack("!II", data))
    return TCPOption(kind, data)


# -- IPv6 TLV options (RFC 8200 4.2) ------------------------------------------

@attrs.frozen(repr=False)
class Pad1(Option):
    """IPv6 Pad1 option: one zero byte."""

    def _encode(self):
        return b"\x00"


@attrs.frozen(repr=False)
class PadN(Option):
    """IPv6 PadN option: type 1, ``length`` zero data bytes (2 + length in all)."""

    length: int = 0

    def _encode(self):
        return bytes((1, self.length)) + bytes(self.length)


@attrs.frozen(repr=False)
class IPv6Option(Option):
    """Any IPv6 hop-by-hop / destination option as type and data."""

    type: int
    data: bytes = attrs.field(default=b"", converter=_bytes)

    def _encode(self):
        # Unlike IPv4/TCP, the IPv6 length byte counts the data only.
        if len(self.data) > 255:
            raise ValueError("IPv6 option %d: %d data bytes do not fit a length byte" % (
                self.type, len(self.data)))
        return bytes((self.type, len(self.data))) + self.data


def _ipv6_option(kind, data):
    if kind == 1 and not any(data):
        return PadN(len(data))
    return IPv6Option(kind, data)


# -- encoding and decoding lists --------------------------------------------------

def encode_options(options):
    """Wire bytes of an option list (no padding); raw ``bytes`` pass through."""
    if isinstance(options, bytes):
        return options
    try:
        return b"".join([o._encode() for o in options])
    except AttributeError:
        bad = next(o for o in options if not hasattr(o, "_encode"))
        raise TypeError("not an option object: %r" % (bad,)) from None


def pad4(data):
    """Zero-pad IPv4/TCP option bytes to a multiple of 4 (what ``bytes()`` does)."""
    extra = -len(data) & 3
    return data + bytes(extra) if extra else data


def pad8_tlv(data):
    """Pad IPv6 option bytes so that 2 + len is a multiple of 8 (Pad1 or PadN)."""
    need = -(len(data) + 2) & 7
    if need == 0:
        return data
    if need == 1:
        return data + b"\x00"
    return data + bytes((1, need - 2)) + bytes(need - 2)


def _decode_kind_len(raw, one_byte, end_kind, make, header_counted=True):
    """Split TLV options; returns (items, rest-after-end) or None if malformed.

    ``header_counted``: the length byte includes the kind and length bytes
    (IPv4, TCP) rather than the data only (IPv6).
    """
    items = []
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind in one_byte:
            items.append(one_byte[kind])
            i += 1
            if kind == end_kind:
                break
            continue
        if i + 1 >= n:
            return None
        length = raw[i + 1]
        if not header_counted:
            length += 2
        if length < 2 or i + length > n:
            return None
        items.append(make(kind, raw[i + 2:i + length]))
        i += length
    return items, raw[i:]


def _canonical(items, raw, pad, is_pad):
    """The shortest of (items without trailing padding, items) that re-encodes to raw."""
    trimmed = list(items)
    while trimmed and is_pad(trimmed[-1]):
        trimmed.pop()
    for cand in (trimmed, items):
        if pad(encode_options(cand)) == raw:
            return tuple(cand)
    return raw


_EOL, _NOP, _PAD1 = EOL(), NOP(), Pad1()


def decode_ipv4_options(raw):
    """IPv4 option bytes -> tuple of options, or the bytes themselves if irregular."""
    split = _decode_kind_len(raw, {0: _EOL, 1: _NOP}, 0, _ipv4_option)
    if split is None:
        return raw
    return _canonical(split[0], raw, pad4, lambda o: type(o) is EOL)


def decode_tcp_options(raw):
    """TCP option bytes -> tuple of options, or the bytes themselves if irregular."""
    split = _decode_kind_len(raw, {0: _EOL, 1: _NOP}, 0, _tcp_option)
    if split is None:
        return raw
    return _canonical(split[0], raw, pad4, lambda o: type(o) is EOL)


def decode_ipv6_options(raw):
    """IPv6 TLV option bytes -> tuple of options, or the bytes if irregular."""
    split = _decode_kind_len(raw, {0: _PAD1}, None, _ipv6_option, header_counted=False)
    if split is None:
        return raw
    return _canonical(split[0], raw, pad8_tlv, lambda o: type(o) in (Pad1, PadN))
