"""Test helpers: write BTF blobs by hand and read sections of ELF objects.

``BtfBuilder`` emits the binary format of Documentation/bpf/btf.rst so unit
tests can build exactly the types they need (bitfields, unions, enums with
odd names) and malformed blobs (dangling ids, cycles, truncation) without a
compiler. ``elf_sections`` lists the sections of a little-endian ELF64
object, so tests can take clang's raw ``.BTF`` or patch an object in place.
"""

import struct

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, \
    FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(1, 20)

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class BtfBuilder:
    """Appends types and returns their ids (the first type is id 1).

    Members are ``(name, type_id, bit_offset)`` or ``(name, type_id,
    bit_offset, bit_size)``; any bit_size makes the struct use kind_flag
    bitfield encoding. ``next_id`` is the id the next type will get, so
    cycles can be written by referring forward."""

    def __init__(self, endian="<"):
        self.endian = endian
        self.types = []
        self.strings = bytearray(b"\0")
        self._offsets = {"": 0}

    @property
    def next_id(self):
        return len(self.types) + 1

    def string(self, s):
        if s not in self._offsets:
            self._offsets[s] = len(self.strings)
            self.strings += s.encode() + b"\0"
        return self._offsets[s]

    def raw(self, name, kind, vlen, size_or_type, extra=b"", kind_flag=False):
        """Append one type record as given (for malformed blobs)."""
        info = (vlen & 0xFFFF) | (kind << 24) | (int(kind_flag) << 31)
        name_off = name if isinstance(name, int) else self.string(name)
        self.types.append(struct.pack(self.endian + "III", name_off, info,
                                      size_or_type) + extra)
        return len(self.types)

    def _u32(self, *vals):
        return struct.pack(self.endian + "%dI" % len(vals), *vals)

    def int(self, name, size, signed=False, char=False, bool=False, bits=None, offset=0):
        enc = (INT_SIGNED if signed else 0) | (INT_CHAR if char else 0) | \
            (INT_BOOL if bool else 0)
        bits = size * 8 if bits is None else bits
        return self.raw(name, INT, 0, size, self._u32((enc << 24) | (offset << 16) | bits))

    def float(self, name, size):
        return self.raw(name, FLOAT, 0, size)

    def ptr(self, type_id):
        return self.raw("", PTR, 0, type_id)

    def array(self, elem, nelems, index=None):
        if index is None:
            index = elem
        return self.raw("", ARRAY, 0, 0, self._u32(elem, index, nelems))

    def _composite(self, kind, name, size, members):
        kflag = any(len(m) > 3 and m[3] for m in members)
        extra = b""
        for m in members:
            mname, mtype, boff = m[:3]
            bsize = m[3] if len(m) > 3 else 0
            off = (bsize << 24) | boff if kflag else boff
            extra += self._u32(self.string(mname), mtype, off)
        return self.raw(name, kind, len(members), size, extra, kind_flag=kflag)

    def struct(self, name, size, members):
        return self._composite(STRUCT, name, size, members)

    def union(self, name, size, members):
        return self._composite(UNION, name, size, members)

    def enum(self, name, values, size=4, signed=False):
        fmt = "i" if signed else "I"
        extra = b"".join(self._u32(self.string(n)) + struct.pack(self.endian + fmt, v)
                         for n, v in values)
        return self.raw(name, ENUM, len(values), size, extra, kind_flag=signed)

    def enum64(self, name, values, size=8, signed=False):
        extra = b""
        for n, v in values:
            v &= (1 << 64) - 1
            extra += self._u32(self.string(n), v & 0xFFFFFFFF, v >> 32)
        return self.raw(name, ENUM64, len(values), size, extra, kind_flag=signed)

    def fwd(self, name, union=False):
        return self.raw(name, FWD, 0, 0, kind_flag=union)

    def typedef(self, name, type_id):
        return self.raw(name, TYPEDEF, 0, type_id)

    def const(self, type_id):
        return self.raw("", CONST, 0, type_id)

    def volatile(self, type_id):
        return self.raw("", VOLATILE, 0, type_id)

    def restrict(self, type_id):
        return self.raw("", RESTRICT, 0, type_id)

    def type_tag(self, name, type_id):
        return self.raw(name, TYPE_TAG, 0, type_id)

    def func_proto(self, ret, params):
        extra = b"".join(self._u32(self.string(n), t) for n, t in params)
        return self.raw("", FUNC_PROTO, len(params), ret, extra)

    def func(self, name, proto, linkage=1):
        return self.raw(name, FUNC, linkage, proto)

    def var(self, name, type_id, linkage=1):
        return self.raw(name, VAR, 0, type_id, self._u32(linkage))

    def datasec(self, name, size, variables):
        """variables: (var type id, byte offset, byte size) triples."""
        extra = b"".join(self._u32(*v) for v in variables)
        return self.raw(name, DATASEC, len(variables), size, extra)

    def decl_tag(self, name, type_id, component_idx=-1):
        return self.raw(name, DECL_TAG, 0, type_id,
                        struct.pack(self.endian + "i", component_idx))

    def build(self, hdr_len=24, magic=0xEB9F, version=1):
        types = b"".join(self.types)
        strings = bytes(self.strings)
        hdr = struct.pack(self.endian + "HBBIIIII", magic, version, 0, hdr_len,
                          0, len(types), len(types), len(strings))
        return hdr + b"\0" * (hdr_len - len(hdr)) + types + strings


def elf_sections(data):
    """{name: (file offset, size)} of a little-endian ELF64 image."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
            for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = {}
    for name, _type, _flags, _addr, off, size in hdrs:
        end = data.index(b"\0", stroff + name)
        out[data[stroff + name:end].decode()] = (off, size)
    return out


def elf_section(data, name):
    """The bytes of section ``name`` of an ELF64 object."""
    off, size = elf_sections(data)[name]
    return bytes(data[off:off + size])


def type_offsets(raw):
    """{type id: byte offset of its record in ``raw``} (a little-endian blob),
    for tests that patch one field of one type."""
    hdr_len, type_off, type_len = struct.unpack_from("<III", raw, 4)
    pos = hdr_len + type_off
    end = pos + type_len
    out = {}
    tid = 1
    while pos < end:
        _, info, _ = struct.unpack_from("<III", raw, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        out[tid] = pos
        pos += 12 + {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}.get(kind, 0) + vlen * {
            STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}.get(kind, 0)
        tid += 1
    return out
