"""``Template``: many packets that differ in a few fixed-size fields, fast.

The packet is built once. For each open field the template knows its byte
offset and which checksums cover it; building a variant writes the new field
bytes and updates every auto checksum arithmetically (the Internet checksum is
a sum, so a field's share can be added without re-reading the packet). The
per-packet code is generated once per template, the way attrs and dataclasses
generate ``__init__``.
"""

from pybpfnet.packet import _options as _opt
from pybpfnet.packet._base import Packet, Padding, Raw, _ipv4, _ipv6, _residue, mac_bytes
from pybpfnet.packet._headers import (GUE, ICMP, TCP, UDP, Dot1Q, Ethernet, ICMPv6, IPv4,
                                      IPv6, IPv6DestOpts, IPv6Fragment, IPv6HopByHop,
                                      IPv6Routing, _pseudo, _tcp_flags)

__all__ = ["Template"]


def _int(v):
    return v


def _ip4_int(v):
    return v if type(v) is int else int(_ipv4(v))


def _ip6_int(v):
    return v if type(v) is int else int(_ipv6(v))


def _mac_int(v):
    return int.from_bytes(mac_bytes(v), "big")


def _flags_int(v):
    return v if type(v) is int else int(_tcp_flags(v))


# class -> field -> (offset in header, width in bytes, converter to int, low-bit mask or 0)
_SLOTS = {
    Ethernet: {"dst": (0, 6, _mac_int, 0), "src": (6, 6, _mac_int, 0), "type": (12, 2, _int, 0)},
    Dot1Q: {"vid": (0, 2, _int, 0x0FFF), "type": (2, 2, _int, 0)},
    IPv4: {"tos": (1, 1, _int, 0), "id": (4, 2, _int, 0), "ttl": (8, 1, _int, 0),
           "src": (12, 4, _ip4_int, 0), "dst": (16, 4, _ip4_int, 0)},
    IPv6: {"flow_label": (0, 4, _int, 0xFFFFF), "hop_limit": (7, 1, _int, 0),
           "src": (8, 16, _ip6_int, 0), "dst": (24, 16, _ip6_int, 0)},
    IPv6Fragment: {"id": (4, 4, _int, 0)},
    TCP: {"sport": (0, 2, _int, 0), "dport": (2, 2, _int, 0), "seq": (4, 4, _int, 0),
          "ack": (8, 4, _int, 0), "flags": (12, 2, _flags_int, 0x1FF),
          "window": (14, 2, _int, 0), "urgent": (18, 2, _int, 0)},
    UDP: {"sport": (0, 2, _int, 0), "dport": (2, 2, _int, 0)},
    ICMP: {"type": (0, 1, _int, 0), "code": (1, 1, _int, 0), "id": (4, 2, _int, 0),
           "seq": (6, 2, _int, 0)},
    ICMPv6: {"type": (0, 1, _int, 0), "code": (1, 1, _int, 0), "id": (4, 2, _int, 0),
             "seq": (6, 2, _int, 0)},
    GUE: {"flags": (2, 2, _int, 0)},
}

_NAMES = {cls.__name__.lower(): cls for cls in list(_SLOTS) + [Raw]}


class _Field:
    __slots__ = ("label", "layer", "name", "start", "width", "conv", "mask", "const")


class _Sum:
    __slots__ = ("layer", "start", "end", "pos", "udp", "ip", "use_dst", "proto")


def _pseudo_ip(layers, i):
    """(index of the IP layer giving the pseudo-header, dst used as is?) or None."""
    final = False
    for j in range(i - 1, -1, -1):
        layer = layers[j]
        t = type(layer)
        if t is IPv4:
            if type(layer.options) is tuple:
                routes = [o for o in layer.options
                          if type(o) in (_opt.LooseSourceRoute, _opt.StrictSourceRoute)]
                if len(routes) == 1 and routes[0].addresses:
                    return j, False
            return j, True
        if t is IPv6:
            return j, not final
        if t is IPv6Routing:
            if layer.addresses and layer.segments_left != 0:
                final = True
        elif t not in (IPv6HopByHop, IPv6DestOpts, IPv6Fragment):
            return None
    return None


class Template:
    """Bytes of one packet with some fixed-size fields left open, built fast.

    ``fields`` name the open fields as ``"UDP.sport"``, ``"IPv4[1].src"`` (the
    second IPv4 layer), ``(UDP, "sport")`` or ``(layer_index, "sport")``. Open
    fields: addresses and ports, IPv4 tos/id/ttl, IPv6 flow label/hop limit,
    TCP seq/ack/flags/window/urgent, ICMP type/code/id/seq, MACs, VLAN id,
    the IPv6 fragment id, GUE flags, and ``Raw.data`` (same length). Values
    may be ints (fastest), ``ipaddress`` objects or strings.

    ``build(*values)`` returns the bytes of the packet with those values, with
    every checksum that was auto in ``packet`` updated (lengths cannot change);
    it equals ``bytes(packet.evolve(...))`` for the same values. Values that do
    not fit raise ``ValueError`` naming the field.
    """

    def __init__(self, packet, *fields):
        if not isinstance(packet, Packet):
            packet = Packet((packet,))
        self.packet = packet
        layers = packet.layers
        full = packet.complete()
        base = bytes(packet)
        offs = packet.offsets()
        trailer = len(layers[-1].data) if layers and type(layers[-1]) is Padding else 0
        body_end = len(base) - trailer
        self.fields = tuple(fields)

        flds = []
        for spec in fields:
            f = self._locate(layers, spec)
            f.start += offs[f.layer]
            f.const = int.from_bytes(base[f.start:f.start + f.width], "big")
            flds.append(f)

        sums = []
        for i, layer in enumerate(layers):
            t = type(layer)
            if getattr(layer, "checksum", 0) is not None or t not in (IPv4, TCP, UDP, ICMP,
                                                                      ICMPv6):
                continue
            s = _Sum()
            s.layer = i
            s.start = offs[i]
            s.udp = t is UDP
            s.ip = None
            s.use_dst = True
            if t is IPv4:
                s.end = s.start + full.layers[i].ihl * 4
                s.pos = s.start + 10
            else:
                s.end = body_end
                s.pos = s.start + {TCP: 16, UDP: 6, ICMP: 2, ICMPv6: 2}[t]
                if t is not ICMP:
                    found = _pseudo_ip(layers, i)
                    if found is not None:
                        s.ip, s.use_dst = found
                        s.proto = {TCP: 6, UDP: 17, ICMPv6: 58}[t]
                    else:
                        continue    # no IP before it: its checksum stays 0
            sums.append(s)
        # Inner checksums first: an outer one covers the inner checksum field.
        sums.sort(key=lambda s: -s.start)

        slots = [(f.start, f.width) for f in flds] + [(s.pos, 2) for s in sums]
        order = sorted(range(len(slots)), key=lambda k: slots[k][0])
        for a, b in zip(order, order[1:]):
            if slots[a][0] + slots[a][1] > slots[b][0]:
                raise ValueError("template fields overlap: %r" % (fields,))

        zeroed = bytearray(base)
        for start, width in slots:
            zeroed[start:start + width] = bytes(width)

        # Generate the build function.
        env = {"_fail": self._fail}
        lines = ["def build(%s):" % ", ".join("v%d" % k for k in range(len(flds)))]
        lines.append("    try:")
        for k, f in enumerate(flds):
            env["conv%d" % k] = f.conv
            src = "v%d" % k if f.conv is _int else "conv%d(v%d)" % (k, k)
            if f.mask:
                lines.append("        x%d = %s" % (k, src))
                lines.append("        if x%d < 0 or x%d > %d: raise OverflowError" % (k, k, f.mask))
                lines.append("        i%d = %d | x%d" % (k, f.const & ~f.mask, k))
            else:
                lines.append("        i%d = %s" % (k, src))
            lines.append("        b%d = i%d.to_bytes(%d, 'big')" % (k, k, f.width))
        lines.append("    except (OverflowError, TypeError, ValueError, AttributeError):")
        lines.append("        _fail(%s)" % "".join("v%d, " % k for k in range(len(flds))))

        dyn = {}   # slot start -> variable name of its int value
        for k, f in enumerate(flds):
            dyn[f.start] = ("i%d" % k, f.width)
        for m, s in enumerate(sums):
            const = _residue(bytes(zeroed[s.start:s.end]))
            terms = []
            nz = []
            for start, (var, width) in dyn.items():
                if s.start <= start and start + width <= s.end:
                    rel = start - s.start
                    terms.append(var + ("*256" if (rel + width) & 1 else ""))
                    nz.append(var)
            if s.ip is not None:
                ip = full.layers[s.ip]
                length = s.end - s.start
                const += s.proto + length
                src_f = [k for k, f in enumerate(flds) if f.layer == s.ip and f.name == "src"]
                dst_f = [k for k, f in enumerate(flds) if f.layer == s.ip and f.name == "dst"]
                if src_f:
                    terms.append("i%d" % src_f[0])
                else:
                    const += int(ip.src)
                if not s.use_dst:
                    # The pseudo-header destination comes from a routing option/header:
                    # its share is the whole pseudo-header's minus the other fields'.
                    total = _pseudo(full.layers, s.layer, s.proto, length)
                    const += total - int(ip.src) - s.proto - length
                elif dst_f:
                    terms.append("i%d" % dst_f[0])
                else:
                    const += int(ip.dst)
            const %= 0xFFFF
            const_zero = not any(zeroed[s.start:s.end]) and s.ip is None
            expr = " + ".join([str(const)] + terms)
            lines.append("    r = (%s) %% 65535" % expr)
            if const_zero:
                lines.append("    c%d = 65535 - r if r else (0 if (%s) else 65535)" % (
                    m, " or ".join(nz) or "False"))
            else:
                lines.append("    c%d = 65535 - r if r else 0" % m)
            if s.udp:
                lines.append("    c%d = c%d or 65535" % (m, m))
            dyn[s.pos] = ("c%d" % m, 2)

        parts = []
        pos = 0
        names = {}
        for k, f in enumerate(flds):
            names[f.start] = ("b%d" % k, f.width)
        for m, s in enumerate(sums):
            names[s.pos] = ("c%d.to_bytes(2, 'big')" % m, 2)
        for start in sorted(names):
            var, width = names[start]
            if start > pos:
                env["P%d" % len(parts)] = base[pos:start]
                parts.append("P%d" % len(parts))
            parts.append(var)
            pos = start + width
        if pos < len(base):
            env["P%d" % len(parts)] = base[pos:]
            parts.append("P%d" % len(parts))
        lines.append("    return b''.join((%s,))" % ", ".join(parts))
        self._source = "\n".join(lines)
        exec(compile(self._source, "<packet template %s>" % (self.fields,), "exec"), env)
        self._flds = flds
        self.build = env["build"]

    @staticmethod
    def _locate(layers, spec):
        if isinstance(spec, str):
            head, sep, fname = spec.rpartition(".")
            if not sep:
                raise ValueError("template field %r: write it as 'Layer.field'" % spec)
            nth = 0
            if head.endswith("]") and "[" in head:
                head, _, n = head[:-1].partition("[")
                nth = int(n)
            cls = _NAMES.get(head.lower())
            if cls is None:
                raise ValueError("template field %r: unknown layer %r" % (spec, head))
            key = cls
        else:
            key, fname = spec
            nth = 0
        if isinstance(key, int):
            index = key
        else:
            matches = [i for i, layer in enumerate(layers) if type(layer) is key]
            if len(matches) <= nth:
                raise ValueError("template field %r: the packet has no %s #%d" % (
                    spec, getattr(key, "__name__", key), nth))
            index = matches[nth]
        layer = layers[index]
        f = _Field()
        f.label = spec if isinstance(spec, str) else "%s.%s" % (type(layer).__name__, fname)
        f.layer = index
        f.name = fname
        if type(layer) is Raw and fname == "data":
            f.start, f.width, f.mask = 0, len(layer.data), 0
            f.conv = _raw_conv(len(layer.data))
            return f
        try:
            f.start, f.width, f.conv, f.mask = _SLOTS[type(layer)][fname]
        except KeyError:
            raise ValueError("template field %r: %s.%s cannot be left open (open fields: %s)" % (
                spec, type(layer).__name__, fname,
                ", ".join(sorted(_SLOTS.get(type(layer), {}))) or "none")) from None
        return f

    def _fail(self, *values):
        for f, v in zip(self._flds, values):
            try:
                i = f.conv(v)
                limit = f.mask or (1 << 8 * f.width) - 1
                if not 0 <= i <= limit:
                    raise OverflowError
                i.to_bytes(f.width, "big")
            except (OverflowError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError("template field %s: %r does not fit (%s)" % (
                    f.label, v, exc or "out of range")) from None
        raise ValueError("template values %r do not fit" % (values,))

    def build(self, *values):   # replaced per instance by generated code
        """Bytes of the packet with the open fields set to ``values`` (in order)."""
        raise NotImplementedError

    def build_many(self, rows):
        """``[build(*row) for row in rows]``."""
        build = self.build
        return [build(*row) for row in rows]

    def __repr__(self):
        return "Template(%s, %s)" % (self.packet.summary(), ", ".join(map(str, self.fields)))


def _raw_conv(n):
    def conv(v):
        if len(v) != n:
            raise ValueError("Raw.data must keep its length %d, got %d" % (n, len(v)))
        return int.from_bytes(v, "big")
    return conv

