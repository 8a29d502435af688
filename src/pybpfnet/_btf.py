"""BTF type model: a pure-Python parser of the BPF Type Format.

Reads the raw blob (from an object file via libbpf, or from the kernel by id)
into immutable type records. No syscalls; used by the codec to build Python
encoders/decoders and by the stub generator.
Format reference: Documentation/bpf/btf.rst in the kernel tree.
"""

import struct

from pybpfnet._errors import ObjectFormatError

__all__ = ["Btf", "BtfType", "Member", "Kind", "parse"]

BTF_MAGIC = 0xEB9F


class Kind:
    UNKN, INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, \
        RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, \
        ENUM64 = range(20)
    NAMES = ("unknown", "int", "ptr", "array", "struct", "union", "enum", "fwd",
             "typedef", "volatile", "const", "restrict", "func", "func_proto",
             "var", "datasec", "float", "decl_tag", "type_tag", "enum64")


#: deepest chain of pointer/array/qualifier types followed (well past any
#: real C type; deeper chains are cycles in malformed BTF)
_MAX_DEPTH = 64

#: kinds that only qualify another type
_QUALIFIERS = frozenset((Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST,
                         Kind.RESTRICT, Kind.TYPE_TAG))


class Member:
    """A struct/union member, a datasec variable or an enum value."""

    __slots__ = ("name", "type_id", "bit_offset", "bit_size", "value", "size")

    def __init__(self, name, type_id=0, bit_offset=0, bit_size=0, value=0, size=0):
        self.name = name
        self.type_id = type_id
        self.bit_offset = bit_offset
        self.bit_size = bit_size
        self.value = value
        self.size = size

    def __repr__(self):
        return "Member(%r, type=%d, bit_offset=%d, bit_size=%d)" % (
            self.name, self.type_id, self.bit_offset, self.bit_size)


class BtfType:
    """One BTF type. ``size`` for sized kinds; ``type_id`` for kinds that
    refer to another type; ``members`` for struct/union/enum/datasec/
    func_proto; int fields: ``bits``, ``signed``, ``is_char``, ``is_bool``;
    array: ``elem_id``, ``nelems``."""

    __slots__ = ("id", "kind", "name", "size", "type_id", "members", "bits",
                 "bit_offset", "signed", "is_char", "is_bool", "elem_id",
                 "nelems", "linkage", "kind_flag")

    def __init__(self, id, kind, name, kind_flag=False):
        self.id = id
        self.kind = kind
        self.name = name
        self.kind_flag = kind_flag
        self.size = 0
        self.type_id = 0
        self.members = ()
        self.bits = 0
        self.bit_offset = 0
        self.signed = False
        self.is_char = False
        self.is_bool = False
        self.elem_id = 0
        self.nelems = 0
        self.linkage = 0

    @property
    def kind_name(self):
        return Kind.NAMES[self.kind]

    def __repr__(self):
        return "<BtfType #%d %s %r>" % (self.id, self.kind_name, self.name)


class Btf:
    """A parsed BTF blob: ``types[id]`` (id 0 is void), lookups by name."""

    def __init__(self, types, raw):
        self.types = types
        self.raw = raw
        self._by_name = {}
        for t in types[1:]:
            if t.name:
                self._by_name.setdefault(t.name, []).append(t)

    def __getitem__(self, type_id):
        try:
            return self.types[type_id]
        except IndexError:
            raise KeyError("BTF has no type id %d (it has %d types)"
                           % (type_id, len(self.types) - 1)) from None

    def __len__(self):
        return len(self.types)

    def find(self, name, kind=None):
        """The first type named ``name`` (of ``kind`` if given), or None."""
        for t in self._by_name.get(name, ()):
            if kind is None or t.kind == kind:
                return t
        return None

    def resolve(self, type_id):
        """Skip typedefs and qualifiers: the underlying type."""
        t = self[type_id]
        for _ in range(64):
            if t.kind not in _QUALIFIERS:
                return t
            t = self[t.type_id]
        raise ObjectFormatError(22, "BTF", "type %d: qualifier chain too long" % type_id)

    def sizeof(self, type_id, _depth=0):
        if _depth > _MAX_DEPTH:
            raise ObjectFormatError(22, "BTF", "type %d: array/var chain too long "
                                    "(a type that contains itself?)" % type_id)
        t = self.resolve(type_id)
        if t.kind in (Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64,
                      Kind.FLOAT, Kind.DATASEC):
            return t.size
        if t.kind == Kind.PTR:
            return 8
        if t.kind == Kind.ARRAY:
            return self.sizeof(t.elem_id, _depth + 1) * t.nelems
        if t.kind == Kind.VAR:
            return self.sizeof(t.type_id, _depth + 1)
        raise ObjectFormatError(22, "BTF", "type %r has no size" % t)

    def c_name(self, type_id, _depth=0):
        """A C spelling of the type, for messages and stubs."""
        if type_id == 0:
            return "void"
        if _depth > _MAX_DEPTH:
            return "..."
        t = self[type_id]
        k = t.kind
        d = _depth + 1
        if k in (Kind.STRUCT, Kind.UNION):
            return "%s %s" % (t.kind_name, t.name or "<anon>")
        if k in (Kind.ENUM, Kind.ENUM64):
            return "enum %s" % (t.name or "<anon>")
        if k == Kind.PTR:
            return self.c_name(t.type_id, d) + " *"
        if k == Kind.ARRAY:  # C spells u32[2][3] for 2 x u32[3]
            elem = self.c_name(t.elem_id, d)
            i = elem.find("[")
            if i >= 0:
                return "%s[%d]%s" % (elem[:i], t.nelems, elem[i:])
            return "%s[%d]" % (elem, t.nelems)
        if k == Kind.CONST:
            return "const " + self.c_name(t.type_id, d)
        if k == Kind.VOLATILE:
            return "volatile " + self.c_name(t.type_id, d)
        if k in (Kind.RESTRICT, Kind.TYPE_TAG):
            return self.c_name(t.type_id, d)
        return t.name or t.kind_name


_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


def parse(raw):
    """Parse a raw BTF blob (host byte order or little endian)."""
    raw = bytes(raw)
    if len(raw) < _HDR.size:
        raise ObjectFormatError(22, "BTF", "blob of %d bytes is shorter than "
                                "its header" % len(raw))
    endian = "<"
    magic = struct.unpack_from("<H", raw)[0]
    if magic != BTF_MAGIC:
        if struct.unpack_from(">H", raw)[0] == BTF_MAGIC:
            endian = ">"
        else:
            raise ObjectFormatError(22, "BTF", "bad magic 0x%04x" % magic)
    _, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
        struct.unpack_from(endian + "HBBIIIII", raw)
    if hdr_len < _HDR.size:
        raise ObjectFormatError(22, "BTF", "header length %d is shorter than the "
                                "%d-byte header" % (hdr_len, _HDR.size))
    base = hdr_len
    if base + str_off + str_len > len(raw) or base + type_off + type_len > len(raw):
        raise ObjectFormatError(22, "BTF", "section offsets exceed the blob")
    strings = raw[base + str_off: base + str_off + str_len]

    def name(off):
        if off >= len(strings):
            raise ObjectFormatError(22, "BTF", "string offset %d out of range" % off)
        end = strings.find(b"\0", off)
        return strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    u32 = struct.Struct(endian + "I")
    i32 = struct.Struct(endian + "i")
    ttype = struct.Struct(endian + "III")
    pos = base + type_off
    end = pos + type_len
    types = [BtfType(0, Kind.UNKN, "void")]
    tid = 1
    try:
        while pos < end:
            name_off, info, size_or_type = ttype.unpack_from(raw, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kflag = bool(info >> 31)
            t = BtfType(tid, kind, name(name_off), kflag)
            if kind in (Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM,
                        Kind.ENUM64, Kind.FLOAT, Kind.DATASEC):
                t.size = size_or_type
            else:
                t.type_id = size_or_type
            if kind == Kind.INT:
                enc = u32.unpack_from(raw, pos)[0]
                pos += 4
                t.bits = enc & 0xFF
                t.bit_offset = (enc >> 16) & 0xFF
                e = (enc >> 24) & 0xF
                t.signed = bool(e & 1)
                t.is_char = bool(e & 2)
                t.is_bool = bool(e & 4)
            elif kind == Kind.ARRAY:
                t.elem_id, _index, t.nelems = ttype.unpack_from(raw, pos)
                pos += 12
            elif kind in (Kind.STRUCT, Kind.UNION):
                ms = []
                for _ in range(vlen):
                    mn, mt, moff = ttype.unpack_from(raw, pos)
                    pos += 12
                    if kflag:
                        ms.append(Member(name(mn), mt, moff & 0xFFFFFF, moff >> 24))
                    else:
                        ms.append(Member(name(mn), mt, moff, 0))
                t.members = tuple(ms)
            elif kind == Kind.ENUM:
                ms = []
                for _ in range(vlen):
                    mn = u32.unpack_from(raw, pos)[0]
                    val = (i32 if kflag else u32).unpack_from(raw, pos + 4)[0]
                    pos += 8
                    ms.append(Member(name(mn), value=val))
                t.members = tuple(ms)
                t.signed = kflag
            elif kind == Kind.ENUM64:
                ms = []
                for _ in range(vlen):
                    mn, lo, hi = ttype.unpack_from(raw, pos)
                    pos += 12
                    val = (hi << 32) | lo
                    if kflag and val >> 63:
                        val -= 1 << 64
                    ms.append(Member(name(mn), value=val))
                t.members = tuple(ms)
                t.signed = kflag
            elif kind == Kind.FUNC_PROTO:
                ms = []
                for _ in range(vlen):
                    mn, mt = struct.unpack_from(endian + "II", raw, pos)
                    pos += 8
                    ms.append(Member(name(mn), mt))
                t.members = tuple(ms)
            elif kind == Kind.VAR:
                t.linkage = u32.unpack_from(raw, pos)[0]
                pos += 4
            elif kind == Kind.DATASEC:
                ms = []
                for _ in range(vlen):
                    vt, voff, vsz = ttype.unpack_from(raw, pos)
                    pos += 12
                    ms.append(Member(None, vt, voff * 8, 0, size=vsz))
                t.members = tuple(ms)
            elif kind == Kind.DECL_TAG:
                pos += 4
            elif kind in (Kind.PTR, Kind.FWD, Kind.TYPEDEF, Kind.VOLATILE,
                          Kind.CONST, Kind.RESTRICT, Kind.FUNC, Kind.FLOAT,
                          Kind.TYPE_TAG):
                pass
            else:
                raise ObjectFormatError(22, "BTF", "unknown type kind %d at "
                                        "type id %d" % (kind, tid))
            if pos > end:
                raise struct.error("type runs past the type section")
            types.append(t)
            tid += 1
    except struct.error:
        raise ObjectFormatError(22, "BTF", "type section truncated at type id "
                                "%d" % tid) from None
    _check_refs(types)
    btf = Btf(types, raw)
    # datasec variables are named by their VAR types
    for t in types:
        if t.kind == Kind.DATASEC:
            for m in t.members:
                if 0 < m.type_id < len(types):
                    m.name = types[m.type_id].name
    return btf


def _check_refs(types):
    """Every type id a type refers to must exist (libbpf 1.1 does not check
    this at open, and later lookups would fail far from the cause)."""
    n = len(types)
    for t in types[1:]:
        refs = []
        if t.kind in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT,
                      Kind.FUNC, Kind.FUNC_PROTO, Kind.VAR, Kind.DECL_TAG,
                      Kind.TYPE_TAG):
            refs.append(t.type_id)
        if t.kind == Kind.ARRAY:
            refs.append(t.elem_id)
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.FUNC_PROTO, Kind.DATASEC):
            refs.extend(m.type_id for m in t.members)
        for r in refs:
            if r >= n:
                raise ObjectFormatError(22, "BTF", "type id %d (%s %r) refers to type "
                                        "id %d, but the blob has %d types"
                                        % (t.id, t.kind_name, t.name, r, n - 1))
