"""Core of the packet model: checksums, address converters, ``Header``, ``Packet``.

Leaf module of the ``pybpfnet.packet`` package: the header classes, the parser
and the tools import from here, never the other way round.
"""

import enum
import ipaddress
import struct

import attrs

__all__ = [
    "ParseError", "BuildError", "Header", "Packet", "Raw", "Padding",
    "checksum", "pseudo_header", "l4_checksum", "incremental_checksum", "mac",
    "mac_bytes",
]

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address


class ParseError(ValueError):
    """Bytes that do not decode as the header expected at some offset.

    ``layer`` names the header (``"ipv4"``), ``offset`` is where it starts in
    the parsed buffer and ``reason`` says what is wrong with it.
    """

    def __init__(self, layer, offset, reason):
        super().__init__("%s at offset %d: %s" % (layer, offset, reason))
        self.layer = layer
        self.offset = offset
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.layer, self.offset, self.reason))


class BuildError(ValueError):
    """A header field whose value does not fit the wire format."""


# --------------------------------------------------------------------------
# checksums

def _residue(data):
    """Ones' complement sum of ``data`` as 16-bit words, modulo 0xFFFF.

    2**16 is 1 modulo 0xFFFF, so the big-endian integer of the (even-length)
    data is congruent to the sum of its words: one C-level division replaces a
    Python loop over the words.
    """
    if len(data) & 1:
        return (int.from_bytes(data, "big") << 8) % 0xFFFF
    return int.from_bytes(data, "big") % 0xFFFF


def _fold(residue, data_nonzero=True):
    """The checksum field for a residue from ``_residue`` (sum 0 -> 0xFFFF)."""
    if residue:
        return 0xFFFF - residue
    # A residue of 0 is a sum of 0xFFFF ("negative zero") unless every word is 0.
    return 0 if data_nonzero else 0xFFFF


def checksum(data):
    """The Internet checksum (RFC 1071) of ``data``, as an int in 0..0xFFFF.

    Odd-length data is padded with one zero byte. Verifying: the checksum of
    data that includes a correct checksum field is 0.
    """
    data = bytes(data)
    r = _residue(data)
    return _fold(r, r or any(data))


def pseudo_header(src, dst, proto, length):
    """The IPv4 (RFC 793) or IPv6 (RFC 8200 8.1) pseudo-header as bytes.

    The family follows the addresses (strings or ``ipaddress`` objects, both of
    the same family). ``proto`` is the upper-layer protocol number and
    ``length`` the upper-layer length (header plus payload).
    """
    src = ipaddress.ip_address(src)
    dst = ipaddress.ip_address(dst)
    if src.version != dst.version:
        raise ValueError("pseudo header: %s and %s are of different families" % (src, dst))
    if src.version == 4:
        return struct.pack("!4s4sBBH", src.packed, dst.packed, 0, proto, length)
    return struct.pack("!16s16sI3xB", src.packed, dst.packed, length, proto)


def _pseudo_residue(src, dst, proto, length):
    # Every pseudo-header field sits on a 16-bit boundary, so for both families
    # the sum of its words is congruent to the sum of the field values.
    return (int(src) + int(dst) + proto + length) % 0xFFFF


def l4_checksum(src, dst, proto, segment):
    """The TCP/UDP/ICMPv6 checksum of ``segment`` under the pseudo-header.

    ``segment`` is the upper-layer header (checksum field zeroed) plus payload.
    The RFC 768 rule that UDP sends a computed 0 as 0xFFFF is left to the
    caller: this returns the plain one's complement value.
    """
    src = ipaddress.ip_address(src)
    dst = ipaddress.ip_address(dst)
    segment = bytes(segment)
    r = (_pseudo_residue(src, dst, proto, len(segment)) + _residue(segment)) % 0xFFFF
    return _fold(r)


def incremental_checksum(old_checksum, old, new):
    """Update a checksum for a change of ``old`` bytes into ``new`` (RFC 1624).

    ``old`` and ``new`` have the same even length and start at an even offset
    of the checksummed data (e.g. an address or a port). This is the update a
    NAT or load balancer data plane does: ``HC' = ~(~HC + ~m + m')``.
    """
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("incremental_checksum: old and new must have the same even length")
    s = (0xFFFF - old_checksum) + (0xFFFF * (len(old) // 2) - _word_sum(old)) + _word_sum(new)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - s


def _word_sum(data):
    return sum(struct.unpack("!%dH" % (len(data) // 2), data))


# --------------------------------------------------------------------------
# converters

_MAC_STR_CACHE = {}


def mac(value):
    """A MAC address as lowercase ``"aa:bb:cc:dd:ee:ff"``.

    Accepts that form, ``-`` or no separators, 6 bytes, or an int < 2**48.
    """
    if type(value) is str:
        out = _MAC_STR_CACHE.get(value)
        if out is None:
            out = _mac(value)
            if len(_MAC_STR_CACHE) >= 4096:
                _MAC_STR_CACHE.clear()
            _MAC_STR_CACHE[value] = out
        return out
    return _mac(value)


def _mac(value):
    if isinstance(value, str):
        h = value.replace(":", "").replace("-", "").replace(".", "")
        try:
            b = bytes.fromhex(h)
        except ValueError:
            b = b""
        if len(b) != 6:
            raise ValueError("not a MAC address: %r" % (value,))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) != 6:
            raise ValueError("a MAC address is 6 bytes, got %d" % len(b))
    elif isinstance(value, int):
        if not 0 <= value < 1 << 48:
            raise ValueError("not a MAC address: %#x" % value)
        b = value.to_bytes(6, "big")
    else:
        raise TypeError("a MAC address is a str, bytes or int, not %s" % type(value).__name__)
    return b.hex(":")


_MAC_CACHE = {}


def mac_bytes(value):
    """A MAC address (any form ``mac`` accepts) as 6 bytes."""
    b = _MAC_CACHE.get(value)
    if b is None:
        b = bytes.fromhex(mac(value).replace(":", ""))
        if isinstance(value, str) and len(_MAC_CACHE) < 4096:
            _MAC_CACHE[value] = b
    return b


# Parsing address strings dominates building from literals: keep the last few.
_ADDR_CACHE = {}


def _cached(cls, value):
    addr = _ADDR_CACHE.get(value)
    if addr is None or type(addr) is not cls:
        addr = cls(value)
        if len(_ADDR_CACHE) >= 4096:
            _ADDR_CACHE.clear()
        _ADDR_CACHE[value] = addr
    return addr


def _ipv4(value):
    if type(value) is IPv4Address:
        return value
    if type(value) is str:
        return _cached(IPv4Address, value)
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    return IPv4Address(value)


def _ipv6(value):
    if type(value) is IPv6Address:
        return value
    if type(value) is str:
        return _cached(IPv6Address, value)
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    return IPv6Address(value)


def _ipv4_tuple(values):
    return tuple(_ipv4(v) for v in values)


def _ipv6_tuple(values):
    return tuple(_ipv6(v) for v in values)


def _bytes(value):
    if isinstance(value, str):
        raise TypeError("expected bytes, got str %r (encode it first)" % (value,))
    return bytes(value)


def _options(value):
    """Options: raw bytes as they are on the wire, or a sequence of option objects."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        raise TypeError("options are bytes or a sequence of option objects, not str")
    return tuple(value)


def _flag_converter(flag_cls, letters):
    def convert(value):
        if isinstance(value, str):
            out = 0
            for ch in value:
                try:
                    out |= letters[ch]
                except KeyError:
                    raise ValueError("unknown %s letter %r in %r" % (
                        flag_cls.__name__, ch, value)) from None
            return flag_cls(out)
        if type(value) is flag_cls:
            return value
        return flag_cls(value)
    return convert


# --------------------------------------------------------------------------
# headers and packets

def _format_value(v):
    if isinstance(v, (IPv4Address, IPv6Address)):
        return repr(str(v))
    if isinstance(v, enum.IntFlag):
        names = [m.name for m in type(v) if m.value & v.value and m.name]
        if not names:
            return "%s(0)" % type(v).__name__
        return " | ".join("%s.%s" % (type(v).__name__, n) for n in names)
    if isinstance(v, enum.IntEnum):
        return "%s.%s" % (type(v).__name__, v.name)
    if isinstance(v, tuple):
        inner = ", ".join(_format_value(x) for x in v)
        return "(%s,)" % inner if len(v) == 1 else "(%s)" % inner
    return repr(v)


class Value:
    """Base of the frozen value classes: a short repr of non-default fields."""

    __slots__ = ()

    def __repr__(self):
        if getattr(type(self), "_positional_repr", False):
            # Positional: every field, or a default in the middle would shift the rest.
            return "%s(%s)" % (type(self).__name__, ", ".join(
                _format_value(getattr(self, f.name)) for f in attrs.fields(type(self))
                if f.repr))
        parts = []
        for f in attrs.fields(type(self)):
            if not f.repr:
                continue
            v = getattr(self, f.name)
            d = f.default
            if isinstance(d, attrs.Factory):
                d = d.factory()
            elif f.converter is not None and d is not None and d is not attrs.NOTHING:
                try:
                    d = f.converter(d)
                except Exception:
                    pass
            if d is not attrs.NOTHING and type(v) is type(d) and v == d:
                continue
            if d is not attrs.NOTHING and v is None and d is None:
                continue
            parts.append(f.name + "=" + _format_value(v))
        return "%s(%s)" % (type(self).__name__, ", ".join(parts))


class Header(Value):
    """Base of every layer: composes with ``/`` and turns into bytes.

    Fields documented as *auto* default to ``None``: ``bytes()`` computes them
    (lengths, next-protocol numbers, checksums). A value set explicitly is kept
    as is, even when it is wrong, so that deliberately broken packets can be
    built.
    """

    __slots__ = ()
    #: Short lowercase name used by ``parse(first=...)`` and in errors.
    name = "header"
    #: Auto length fields (reset by ``Packet.recompute``).
    _length_fields = ()
    #: Auto checksum fields (reset by ``Packet.recompute``).
    _checksum_fields = ()
    #: field name -> bit width, checked when struct refuses a value.
    _widths = {}

    def __truediv__(self, other):
        if isinstance(other, Header):
            return _packet((self, other))
        return _packet((self,)) / other

    def __rtruediv__(self, other):
        if isinstance(other, (bytes, bytearray, memoryview)):
            return Packet((Raw(bytes(other)), self))
        return NotImplemented

    def __bytes__(self):
        return bytes(Packet((self,)))

    def _build(self, payload, layers, i, resolved):
        """Header bytes + ``payload``; appends the filled-in header to ``resolved``."""
        raise NotImplementedError

    def _summary(self):
        return type(self).__name__

    def _check_widths(self, exc):
        for fname, bits in self._widths.items():
            v = getattr(self, fname)
            if v is None:
                continue
            try:
                iv = int(v)
            except (TypeError, ValueError):
                raise BuildError("%s.%s=%r is not an integer" % (
                    type(self).__name__, fname, v)) from exc
            if not 0 <= iv < 1 << bits:
                raise BuildError("%s.%s=%r does not fit in %d bits" % (
                    type(self).__name__, fname, v, bits)) from exc
        raise BuildError("cannot build %s: %s" % (type(self).__name__, exc)) from exc


@attrs.frozen(repr=False)
class Raw(Header):
    """Bytes that are not decoded: a payload, or what follows a malformed header.

    ``error`` (not part of equality) says why a lenient parse stopped here.
    """

    data: bytes = attrs.field(default=b"", converter=_bytes)
    error: str | None = attrs.field(default=None, eq=False, repr=False)
    name = "raw"
    _positional_repr = True

    def _build(self, payload, layers, i, resolved):
        if resolved is not None:
            resolved.append(self)
        return self.data + payload

    def _summary(self):
        return "Raw %d bytes" % len(self.data)


@attrs.frozen(repr=False)
class Padding(Header):
    """Bytes after the end that the outer length fields give (e.g. Ethernet padding).

    Only valid as the last layer; not counted in any length or checksum.
    """

    data: bytes = attrs.field(default=b"", converter=_bytes)
    name = "padding"
    _positional_repr = True

    def _build(self, payload, layers, i, resolved):
        raise BuildError("Padding must be the last layer of a packet")

    def _summary(self):
        return "Padding %d bytes" % len(self.data)


def _coerce_layers(value):
    layers = tuple(value)
    for layer in layers:
        if not isinstance(layer, Header):
            raise TypeError("a packet layer must be a Header, not %s" % type(layer).__name__)
    return layers


@attrs.frozen(repr=False)
class Packet:
    """A stack of headers, outermost first, possibly ending with ``Raw``/``Padding``.

    ``bytes(packet)`` fills every auto field. Layers are looked up by class:
    ``pkt[TCP]``, ``pkt.get(TCP)``, ``TCP in pkt``, ``pkt[IPv4, 1]`` (the
    second IPv4 header, e.g. the inner one of IPIP), or by index and slice.
    """

    layers: tuple = attrs.field(default=(), converter=_coerce_layers)

    # composition -----------------------------------------------------------
    def __truediv__(self, other):
        if isinstance(other, Header):
            return _packet(self.layers + (other,))
        if isinstance(other, Packet):
            return _packet(self.layers + other.layers)
        if isinstance(other, (bytes, bytearray, memoryview)):
            # Empty bytes add no layer, so that parse(bytes(p)) has the same layers.
            return _packet(self.layers + (Raw(bytes(other)),)) if len(other) else self
        return NotImplemented

    def __rtruediv__(self, other):
        if isinstance(other, (bytes, bytearray, memoryview)):
            return Packet((Raw(bytes(other)),) + self.layers)
        return NotImplemented

    # building --------------------------------------------------------------
    def _run(self, resolved=None, lengths=None):
        layers = self.layers
        n = len(layers)
        trailer = b""
        if n and type(layers[-1]) is Padding:
            trailer = layers[-1].data
            n -= 1
        out = b""
        for i in range(n - 1, -1, -1):
            layer = layers[i]
            try:
                out = layer._build(out, layers, i, resolved)
            except struct.error as exc:
                layer._check_widths(exc)
            except OverflowError as exc:
                layer._check_widths(exc)
            if lengths is not None:
                lengths.append(len(out))
        return out + trailer

    def __bytes__(self):
        return self._run()

    def build(self):
        """The packet as bytes (same as ``bytes(packet)``).

        Raises ``BuildError`` naming the layer and field when a value does not
        fit its wire format.
        """
        return self._run()

    def complete(self):
        """This packet with every auto field filled in with the value ``bytes()`` uses.

        ``parse(bytes(p)) == p.complete()`` holds for packets whose layers the
        parser decodes the same way (see the module documentation).
        """
        resolved = []
        self._run(resolved)
        resolved.reverse()
        layers = tuple(resolved)
        if self.layers and type(self.layers[-1]) is Padding:
            layers += (self.layers[-1],)
        return Packet(layers)

    def recompute(self, lengths=True, checksums=True):
        """A copy with length and/or checksum fields reset to auto.

        Use it after changing a parsed packet (whose fields are all explicit)
        so that ``bytes()`` computes fresh lengths and checksums.
        """
        out = []
        for layer in self.layers:
            names = (layer._length_fields if lengths else ()) + (
                layer._checksum_fields if checksums else ())
            if names:
                layer = attrs.evolve(layer, **dict.fromkeys(names))
            out.append(layer)
        return Packet(out)

    def offsets(self):
        """Byte offset of each layer in ``bytes(self)``, one per layer."""
        sizes = []
        self._run(None, sizes)
        n = len(sizes)
        total = sizes[-1] if sizes else 0
        offs = [total - sizes[n - 1 - i] for i in range(n)]
        if n < len(self.layers):
            offs.append(total)
        return tuple(offs)

    # layer access ------------------------------------------------------------
    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.layers[key]
        if isinstance(key, slice):
            return Packet(self.layers[key])
        if isinstance(key, tuple):
            cls, nth = key
            found = self.getall(cls)
            try:
                return found[nth]
            except IndexError:
                raise KeyError("no %s #%d in %s" % (_cls_name(cls), nth, self._names())) from None
        if isinstance(key, type):
            for layer in self.layers:
                if isinstance(layer, key):
                    return layer
            raise KeyError("no %s layer in %s" % (key.__name__, self._names()))
        raise TypeError("packet layers are indexed by class, (class, n), int or slice")

    def get(self, cls, default=None):
        """The first layer that is an instance of ``cls``, or ``default``."""
        for layer in self.layers:
            if isinstance(layer, cls):
                return layer
        return default

    def getall(self, cls):
        """Every layer that is an instance of ``cls``, outermost first."""
        return tuple(layer for layer in self.layers if isinstance(layer, cls))

    def __contains__(self, cls):
        return any(isinstance(layer, cls) for layer in self.layers)

    def index(self, cls, nth=0):
        """Position of the ``nth`` layer of class ``cls`` (``KeyError`` if none)."""
        seen = 0
        for i, layer in enumerate(self.layers):
            if isinstance(layer, cls):
                if seen == nth:
                    return i
                seen += 1
        raise KeyError("no %s #%d in %s" % (_cls_name(cls), nth, self._names()))

    def _where(self, key):
        if isinstance(key, int):
            if not -len(self.layers) <= key < len(self.layers):
                raise IndexError("layer index %d out of range" % key)
            return key % len(self.layers)
        if isinstance(key, tuple):
            return self.index(*key)
        return self.index(key)

    def evolve(self, key, **changes):
        """A copy with the fields of one layer (class, (class, n) or index) changed."""
        i = self._where(key)
        layers = list(self.layers)
        layers[i] = attrs.evolve(layers[i], **changes)
        return Packet(layers)

    def replace(self, key, layer):
        """A copy with one layer (class, (class, n) or index) replaced by ``layer``."""
        i = self._where(key)
        return Packet(self.layers[:i] + (layer,) + self.layers[i + 1:])

    def insert(self, index, *layers):
        """A copy with ``layers`` inserted before position ``index``."""
        return Packet(self.layers[:index] + tuple(layers) + self.layers[index:])

    def remove(self, key):
        """A copy without one layer (class, (class, n) or index)."""
        i = self._where(key)
        return Packet(self.layers[:i] + self.layers[i + 1:])

    @property
    def payload(self):
        """The bytes of a trailing ``Raw`` layer (before any padding), else ``b""``."""
        layers = self.layers
        if layers and type(layers[-1]) is Padding:
            layers = layers[:-1]
        if layers and type(layers[-1]) is Raw:
            return layers[-1].data
        return b""

    def summary(self):
        """One line: ``Ethernet / IPv4 10.0.0.1 > 10.0.0.2 / UDP 1 > 2 / Raw 3 bytes``."""
        return " / ".join(layer._summary() for layer in self.layers)

    def _names(self):
        return "/".join(type(layer).__name__ for layer in self.layers) or "an empty packet"

    def __repr__(self):
        if len(self.layers) < 2:
            return "Packet(%r)" % (self.layers,)
        return " / ".join(repr(layer) for layer in self.layers)


def _packet(layers):
    """A Packet from a tuple of layers already known to be headers (no checks)."""
    p = object.__new__(Packet)
    object.__setattr__(p, "layers", layers)
    return p


def _cls_name(cls):
    return getattr(cls, "__name__", repr(cls))
