"""Codecs: bytes <-> Python values, compiled once per type.

A codec is built once per BTF type (or type description) and then reused for
every call: byte-aligned types compile to a single ``struct.Struct`` plus a
generated builder, so a decode is one ``unpack_from`` and one tuple
construction. Struct and union values are instances of generated
namedtuple classes (immutable, hashable, so they work as dict keys); arrays
of ``char`` decode to ``bytes`` and other arrays to tuples.

Encoding accepts the generated class, a dict (missing fields are zero, as in
a C designated initializer) or a tuple in field order. A value that does not
fit raises :class:`CodecError` naming the field path and the C type; nothing
is ever truncated silently.
"""

import collections
import collections.abc
import enum
import gc
import itertools
import keyword
import operator
import re
import struct

from pybpfnet._btf import Kind
from pybpfnet._errors import CodecError

__all__ = ["Codec", "IntCodec", "FloatCodec", "BytesCodec", "ArrayCodec",
           "StructCodec", "UnionCodec", "EnumCodec", "RawCodec", "from_btf",
           "from_description"]

_tuple_new = tuple.__new__


def _fail(path, ctype, expected, got):
    where = "field %r" % path if path else "value"
    raise CodecError("%s (C type %s): expected %s, got %r" % (where, ctype, expected, got))


class Codec:
    """Converts one C type. ``size`` bytes; ``c_type`` its C spelling;
    ``py_type`` the Python type values decode to. Call the codec to build a
    value (``codec(a=1)`` for structs, ``codec(5)`` for ints)."""

    size = 0
    c_type = "?"
    #: struct format fragment (no byte-order prefix) and its item count
    fmt = None
    nitems = 1
    #: flatten() returns its argument unchanged
    identity_flatten = False
    #: flatten() returns one item (not a sequence of items)
    flat_scalar = True

    # -- compiled top level ------------------------------------------------
    def _compile(self):
        st = struct.Struct("=" + self.fmt)
        assert st.size == self.size, (self.c_type, st.size, self.size)
        self._st = st
        build = self.build_items()
        flatten = self.flatten
        pack, unpack_from = st.pack, st.unpack_from
        check = self.check
        c_type = self.c_type

        if build is None:
            if self.flat_scalar:
                def decode(buf, offset=0):
                    return unpack_from(buf, offset)[0]
            else:
                def decode(buf, offset=0):
                    return unpack_from(buf, offset)
        else:
            def decode(buf, offset=0):
                return build(unpack_from(buf, offset))

        if self.identity_flatten:
            def encode(value):
                try:
                    return pack(value)
                except (struct.error, TypeError, OverflowError):
                    check(value, "")
                    _fail("", c_type, "a value of this type", value)
        elif self.flat_scalar:
            def encode(value):
                try:
                    return pack(flatten(value))
                except (struct.error, TypeError, OverflowError):
                    check(value, "")
                    _fail("", c_type, "a value of this type", value)
        else:
            def encode(value):
                try:
                    return pack(*flatten(value))
                except (struct.error, TypeError, OverflowError):
                    check(value, "")
                    _fail("", c_type, "a value of this type", value)
        self.decode = decode
        self.encode = encode
        self.struct = st

    def encode(self, value):
        """bytes of exactly ``size`` for ``value``."""
        raise NotImplementedError

    def decode(self, buf, offset=0):
        """The Python value at ``offset`` of ``buf``."""
        raise NotImplementedError

    def decode_many(self, buf, count, stride=None):
        """Decode ``count`` consecutive values (batch paths)."""
        stride = stride or self.size
        # the cyclic GC is paused: a burst of new tuples would trigger full
        # collections that cost more than the decoding (values hold no cycles)
        was = gc.isenabled()
        gc.disable()
        try:
            if stride == self.size and self.fmt is not None and count and self.size:
                build = self.build_items()
                items = self.struct.iter_unpack(memoryview(buf)[:count * stride])
                if self.flat_scalar and build is None:
                    return [t[0] for t in items]
                if build is None:
                    return list(items)
                return list(map(build, items))
            dec = self.decode
            return [dec(buf, i * stride) for i in range(count)]
        finally:
            if was:
                gc.enable()

    def encode_many(self, values, stride=None):
        """One bytes blob with the values at ``stride`` (>= size) apart."""
        stride = stride or self.size
        if stride == self.size:
            return b"".join(map(self.encode, values))
        pad = b"\0" * (stride - self.size)
        enc = self.encode
        return b"".join(enc(v) + pad for v in values)

    # -- composition -------------------------------------------------------
    def flatten(self, value):
        """Items for ``fmt`` (a single item when nitems == 1)."""
        return value

    def build_items(self):
        """A callable turning the item tuple into the value, or None when
        the tuple (or its single item) already is the value."""
        return None

    def build_expr(self, items):
        """Python source building the value from item expressions."""
        return items[0]

    def check(self, value, path):
        """Raise CodecError if value cannot be encoded (slow, precise)."""

    def zero(self):
        return 0

    def __call__(self, *args, **kwargs):
        if not args and not kwargs:
            return self.zero()
        if len(args) == 1 and not kwargs:
            v = args[0]
            self.check(v, "")
            return v
        raise TypeError("%s takes one value" % self.c_type)

    def annotation(self):
        return "int"

    def numpy_dtype(self):
        raise CodecError("C type %s has no numpy equivalent" % self.c_type)

    def __repr__(self):
        return "<codec %s (%d bytes)>" % (self.c_type, self.size)


class IntCodec(Codec):
    _FMT = {(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
            (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q"}

    def __init__(self, size, signed=False, c_type=None, is_bool=False):
        if not 0 < size <= 16:
            raise CodecError("integer type %s of %d bytes is not supported (BTF "
                             "integers have 1 to 16 bytes)" % (c_type or "?", size))
        self.size = size
        self.signed = signed
        self.is_bool = is_bool = is_bool and size == 1
        self.c_type = c_type or ("%s%d" % ("s" if signed else "u", size * 8))
        if size in (1, 2, 4, 8):
            self.fmt = "?" if is_bool else self._FMT[(size, signed)]
            # struct's "?" packs any object by its truth value: bools are checked
            self.identity_flatten = not is_bool
        else:  # __int128 and odd sizes travel as raw bytes
            self.fmt = "%ds" % size
        if signed:
            self.lo, self.hi = -(1 << (size * 8 - 1)), (1 << (size * 8 - 1)) - 1
        else:
            self.lo, self.hi = 0, 1 if is_bool else (1 << (size * 8)) - 1
        self._compile()

    def flatten(self, value):
        if self.fmt.endswith("s"):
            self.check(value, "")
            return operator.index(value).to_bytes(self.size, "little", signed=self.signed)
        if self.is_bool and value is not True and value is not False:
            self.check(value, "")
            return bool(operator.index(value))
        return value

    def decode_many(self, buf, count, stride=None):
        if (stride or self.size) == self.size and self.fmt in "BHIQbhiq" and \
                type(self) is IntCodec:
            # memoryview formats are native: B/H/I/Q are 1/2/4/8 bytes on Linux
            return memoryview(buf)[:count * self.size].cast(self.fmt).tolist()
        return Codec.decode_many(self, buf, count, stride)

    def encode_many(self, values, stride=None):
        if (stride or self.size) == self.size and self.fmt in "BHIQbhiq" and \
                not self.is_bool:
            values = values if isinstance(values, (list, tuple)) else list(values)
            try:
                return struct.pack("=%d%s" % (len(values), self.fmt), *values)
            except (struct.error, TypeError, OverflowError):
                for v in values:
                    self.encode(v)          # raises the precise CodecError
                raise
        return Codec.encode_many(self, values, stride)

    def build_items(self):
        if self.fmt.endswith("s"):
            signed = self.signed
            return lambda t: int.from_bytes(t[0], "little", signed=signed)
        return None

    def build_expr(self, items):
        if self.fmt.endswith("s"):
            return "int.from_bytes(%s, 'little', signed=%r)" % (items[0], self.signed)
        return items[0]

    def check(self, value, path):
        if self.is_bool and isinstance(value, bool):
            return
        if not isinstance(value, int):
            try:
                value = value.__index__()
            except (AttributeError, TypeError):
                _fail(path, self.c_type, "a bool or 0/1" if self.is_bool else "an int",
                      value)
        if not self.lo <= value <= self.hi:
            _fail(path, self.c_type, "a bool or 0/1" if self.is_bool else
                  "an int in %d..%d" % (self.lo, self.hi), value)

    def annotation(self):
        return "bool" if self.is_bool else "int"

    def numpy_dtype(self):
        import numpy as np
        if self.is_bool:
            return np.dtype("?")
        if self.fmt.endswith("s"):
            return np.dtype("V%d" % self.size)
        return np.dtype("=%s%d" % ("i" if self.signed else "u", self.size))


class EnumCodec(IntCodec):
    """An int that decodes to an IntEnum member when the value has a name."""

    _build = None

    def __init__(self, size, signed, c_type, members, name):
        super().__init__(size, signed, c_type)
        cls_name = _identifier(name or "anon_enum")
        names = {}
        for m in members:
            n = _identifier(m.name)
            if len(n) > 2 and n[0] == "_" and n[-1] == "_":
                n = n.rstrip("_")   # _sunder_ and __dunder__ names are Enum's
            elif n == "mro":
                n += "_"
            if n not in names:
                names[n] = m.value
        self.py_type = enum.IntEnum(cls_name, names) if names else None
        self._v2m = self.py_type._value2member_map_ if names else {}
        get = self._v2m.get
        self._build = (lambda t: get(t[0], t[0])) if names else None
        self._compile()

    def build_items(self):
        return self._build

    def build_expr(self, items):
        return "_v2m_%d.get(%s, %s)" % (id(self), items[0], items[0])

    def annotation(self):
        return "int"


class FloatCodec(Codec):
    def __init__(self, size):
        if size not in (4, 8):
            raise CodecError("floating point of %d bytes is not supported" % size)
        self.size = size
        self.fmt = "f" if size == 4 else "d"
        self.identity_flatten = True
        self.c_type = "float" if size == 4 else "double"
        self._compile()

    def check(self, value, path):
        if not isinstance(value, (int, float)):
            _fail(path, self.c_type, "a float", value)
        try:
            struct.pack("=" + self.fmt, value)
        except (OverflowError, struct.error):
            _fail(path, self.c_type, "a number within the range of %s" % self.c_type,
                  value)

    def zero(self):
        return 0.0

    def annotation(self):
        return "float"

    def numpy_dtype(self):
        import numpy as np
        return np.dtype("=f%d" % self.size)


def _as_bytes(value, path, c_type):
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    _fail(path, c_type, "bytes or str", value)


class BytesCodec(Codec):
    """char[N]: bytes of exactly N (shorter input is zero padded; longer is
    an error). ``str`` is accepted and encoded as UTF-8."""

    def __init__(self, n, c_type=None):
        self.size = n
        self.fmt = "%ds" % n
        self.c_type = c_type or "char[%d]" % n
        self._compile()

    def flatten(self, value):
        if type(value) is not bytes:
            value = _as_bytes(value, "", self.c_type)
        if len(value) > self.size:
            self.check(value, "")
        return value

    def check(self, value, path):
        b = _as_bytes(value, path, self.c_type)
        if len(b) > self.size:
            _fail(path, self.c_type, "at most %d bytes" % self.size,
                  value if len(b) < 80 else "<%d bytes>" % len(b))

    def zero(self):
        return b"\0" * self.size

    def annotation(self):
        return "bytes"

    def numpy_dtype(self):
        import numpy as np
        return np.dtype("S%d" % self.size)


class RawCodec(BytesCodec):
    """Opaque bytes of a fixed size (maps without BTF). Values must have
    exactly ``size`` bytes."""

    def __init__(self, n):
        super().__init__(n, c_type="u8[%d]" % n)

    def flatten(self, value):
        if type(value) is not bytes or len(value) != self.size:
            self.check(value, "")
        return value

    def check(self, value, path):
        b = _as_bytes(value, path, self.c_type)
        if len(b) != self.size:
            _fail(path, self.c_type, "exactly %d bytes" % self.size,
                  value if len(b) < 80 else "<%d bytes>" % len(b))

    def numpy_dtype(self):
        import numpy as np
        return np.dtype("V%d" % self.size)


class ArrayCodec(Codec):
    """T[N] of a non-char element: a tuple of N values."""

    def __init__(self, elem, n):
        self.elem = elem
        self.n = n
        self.size = elem.size * n
        self.c_type = _array_c_type(elem.c_type, n)
        self.flat_scalar = False
        if elem.nitems * n > _MAX_ITEMS:
            raise CodecError("%s has %d items, more than any BPF map value holds"
                             % (self.c_type, elem.nitems * n))
        if elem.fmt is not None:
            # "4I", not "IIII": a format string stays small for long arrays
            self.fmt = "%d%s" % (n, elem.fmt) if len(elem.fmt) == 1 else elem.fmt * n
            self.nitems = elem.nitems * n
        self._compile()

    def flatten(self, value):
        if type(value) is not tuple and type(value) is not list or len(value) != self.n:
            self.check(value, "")
        ef = self.elem.flatten
        if self.elem.flat_scalar:
            if self.elem.identity_flatten:
                return tuple(value)
            return tuple(ef(v) for v in value)
        out = []
        for v in value:
            out.extend(ef(v))
        return out

    def build_items(self):
        eb = self.elem.build_items()
        if eb is None and self.elem.flat_scalar:
            return None
        k = self.elem.nitems
        if k == 0:
            zero = self.zero()
            return lambda t: zero
        if eb is None:
            return lambda t: tuple(t[i:i + k] for i in range(0, len(t), k))
        if k == 1:
            return lambda t: tuple(eb((x,)) for x in t)
        return lambda t: tuple(eb(t[i:i + k]) for i in range(0, len(t), k))

    def build_expr(self, items):
        k = self.elem.nitems
        if k == 0:
            parts = [self.elem.build_expr([])] * self.n
        else:
            parts = [self.elem.build_expr(items[i:i + k]) for i in range(0, len(items), k)]
        return "(%s,)" % ", ".join(parts) if parts else "()"

    def check(self, value, path):
        try:
            n = len(value)
        except TypeError:
            _fail(path, self.c_type, "a sequence of %d" % self.n, value)
        if isinstance(value, _NOT_ARRAYS) or n != self.n:
            _fail(path, self.c_type, "a sequence of exactly %d items" % self.n, value)
        for i, v in enumerate(value):
            self.elem.check(v, "%s[%d]" % (path, i))

    def zero(self):
        return tuple(self.elem.zero() for _ in range(self.n))

    def annotation(self):
        return "tuple[%s, ...]" % self.elem.annotation()

    def numpy_dtype(self):
        import numpy as np
        return np.dtype((self.elem.numpy_dtype(), (self.n,)))


def _array_c_type(elem, n):
    """C spelling of elem[n]: an array of u32[3] is u32[n][3]."""
    i = elem.find("[")
    return "%s[%d]" % (elem, n) if i < 0 else "%s[%d]%s" % (elem[:i], n, elem[i:])


#: the kernel caps a map value at KMALLOC_MAX_SIZE (4 MiB); an array with
#: more scalar items than this comes from malformed BTF
_MAX_ITEMS = 1 << 24

#: iterables that are not an array's elements (bytes would be read as ints,
#: a dict as its keys, a set in no defined order)
_NOT_ARRAYS = (str, bytes, bytearray, memoryview, collections.abc.Mapping,
               collections.abc.Set)


def _identifier(name):
    name = re.sub(r"\W", "_", name or "")
    if not name or name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


class _Field:
    __slots__ = ("name", "codec", "offset", "bit_size", "bit_offset")

    def __init__(self, name, codec, offset, bit_size=0, bit_offset=0):
        self.name = name
        self.codec = codec
        self.offset = offset          # bytes
        self.bit_size = bit_size      # 0: not a bitfield
        self.bit_offset = bit_offset  # bits from the start of the struct


def _make_class(name, fields, codec):
    names = []
    for i, f in enumerate(fields):
        n = _identifier(f.name) if f.name else "anon%d" % i
        if n.startswith("_"):
            n = "f" + n
        while n in names:
            n += "_"
        names.append(n)
    cls = collections.namedtuple(_identifier(name), names,
                                 defaults=[f.codec.zero() for f in fields])
    cls.__module__ = "pybpfnet.types"
    cls._codec = codec
    cls._c_types = {n: f.codec.c_type for n, f in zip(names, fields)}
    return cls, names


class StructCodec(Codec):
    """A C struct: decodes to an instance of the generated class
    ``py_type`` (a namedtuple with one attribute per C field)."""

    kind = "struct"

    def __init__(self, name, size, fields, c_type=None):
        self.name = name
        self.size = size
        self.fields = fields
        self.c_type = c_type or "%s %s" % (self.kind, name or "<anon>")
        for f in fields:
            end = f.bit_offset + f.bit_size if f.bit_size else (f.offset + f.codec.size) * 8
            if end > size * 8:
                raise CodecError("%s (%d bytes): member %r (%s) ends at bit %d, past its end"
                                 % (self.c_type, size, f.name, f.codec.c_type, end))
        self.py_type, self.field_names = _make_class(
            name or "anon_%s" % self.kind, fields, self)
        self._bitfields = any(f.bit_size for f in fields)
        self._setup()

    # A struct is flattenable when no member is a bitfield and every member
    # codec is; otherwise it travels as raw bytes converted by slow code.
    def _setup(self):
        cls = self.py_type
        flat_ok = not self._bitfields and all(f.codec.fmt is not None for f in self.fields)
        if flat_ok:
            fmt, pos, items = [], 0, 0
            exprs = []
            for f in self.fields:
                if f.offset < pos:
                    flat_ok = False
                    break
                if f.offset > pos:
                    fmt.append("%dx" % (f.offset - pos))
                fmt.append(f.codec.fmt)
                exprs.append(f.codec.build_expr(
                    ["t[%d]" % i for i in range(items, items + f.codec.nitems)]))
                items += f.codec.nitems
                pos = f.offset + f.codec.size
            if flat_ok and pos < self.size:
                fmt.append("%dx" % (self.size - pos))
        if flat_ok:
            self.fmt = "".join(fmt)
            self.nitems = items
            self._field_exprs = exprs
            self.flat_scalar = False
            simple = all(f.codec.flat_scalar and f.codec.build_items() is None
                         for f in self.fields)
            ns = {"_new": _tuple_new, "C": cls}
            self._gen_ns(ns)
            if simple:
                self._build = lambda t: _tuple_new(cls, t)
            else:
                src = "def build(t):\n    return _new(C, (%s,))\n" % ", ".join(exprs)
                exec(src, ns)
                self._build = ns["build"]
            self._simple = simple
        else:
            self.fmt = "%ds" % self.size
            self.nitems = 1
            self.flat_scalar = True
            slow = self._decode_slow
            self._build = lambda t: slow(t[0])
            self._simple = False
        self._compile_flatten()
        self._compile()
        if not self.flat_scalar:
            self._compile_direct()

    def _compile_direct(self):
        """encode/decode as single generated functions (one Python frame
        per call, nested members inline)."""
        ns = {"_new": _tuple_new, "C": self.py_type, "pack": self.struct.pack,
              "unpack_from": self.struct.unpack_from, "_check": self.check,
              "_fail": _fail, "_err": (struct.error, TypeError, OverflowError),
              "c_type": self.c_type}
        self._gen_ns(ns)
        if self._simple:
            dec = "    return _new(C, unpack_from(buf, offset))\n"
        else:
            dec = "    t = unpack_from(buf, offset)\n    return _new(C, (%s,))\n" % (
                ", ".join(self._field_exprs))
        lines = []
        items = _inline_flatten(self, "v", lines, ns, [0])
        enc = ("def encode(v):\n"
               "    try:\n%s"
               "        return pack(%s)\n"
               "    except _err:\n"
               "        _check(v, '')\n"
               "        _fail('', c_type, 'a value of this type', v)\n") % (
            "".join("        %s\n" % ln for ln in lines), ", ".join(items))
        exec("def decode(buf, offset=0):\n" + dec, ns)
        exec(enc, ns)
        self.decode = ns["decode"]
        self.encode = ns["encode"]

    def _gen_ns(self, ns):
        def walk(c):
            if isinstance(c, EnumCodec):
                ns["_v2m_%d" % id(c)] = c._v2m
            for f in getattr(c, "fields", ()):
                walk(f.codec)
            if isinstance(c, ArrayCodec):
                walk(c.elem)
        walk(self)
        for c in _iter_codecs(self):
            ns["_build_%d" % id(c)] = getattr(c, "_build", None)
            if isinstance(c, StructCodec):
                ns["_cls_%d" % id(c)] = c.py_type

    def _compile_flatten(self):
        cls = self.py_type
        coerce = self._coerce
        if self.flat_scalar:
            enc = self._encode_slow

            def flatten(value):
                return enc(coerce(value) if type(value) is not cls else value)
            self.flatten = flatten
            return
        if self._simple and all(f.codec.identity_flatten for f in self.fields):
            def flatten(value):
                return value if type(value) is cls else coerce(value)
            self.flatten = flatten
            return
        # general: nested members flattened inline by generated code, so an
        # encode costs one Python frame whatever the nesting
        ns = {}
        lines = []
        items = _inline_flatten(self, "v", lines, ns, [0])
        src = "def flatten(v):\n%s    return (%s,)\n" % (
            "".join("    %s\n" % ln for ln in lines), ", ".join(items))
        exec(src, ns)
        self.flatten = ns["flatten"]

    def build_items(self):
        return self._build

    def encode_many(self, values, stride=None):
        if (stride or self.size) == self.size and self._simple and all(
                f.codec.identity_flatten for f in self.fields):
            values = values if isinstance(values, (list, tuple)) else list(values)
            if {type(v) for v in values} <= {self.py_type, tuple}:
                try:
                    return b"".join(itertools.starmap(self.struct.pack, values))
                except (struct.error, TypeError, OverflowError):
                    pass        # the per-value path names the bad field
        return Codec.encode_many(self, values, stride)

    def decode_many(self, buf, count, stride=None):
        if self._simple and (stride or self.size) == self.size and count and self.size:
            # all in C, no Python frame per record (GC paused as in the base)
            was = gc.isenabled()
            gc.disable()
            try:
                return list(map(_tuple_new, itertools.repeat(self.py_type, count),
                                self.struct.iter_unpack(memoryview(buf)[:count * self.size])))
            finally:
                if was:
                    gc.enable()
        return Codec.decode_many(self, buf, count, stride)

    def build_expr(self, items):
        if self.flat_scalar:
            return "_build_%d((%s,))" % (id(self), items[0])
        # inline: the field expressions refer to t[0..]; shift them to items
        sub = re.sub(r"\bt\[(\d+)\]", lambda m: items[int(m.group(1))],
                     ", ".join(self._field_exprs))
        return "_new(_cls_%d, (%s,))" % (id(self), sub)

    def _coerce(self, value):
        cls = self.py_type
        if isinstance(value, cls):
            return _tuple_new(cls, value)
        if isinstance(value, dict):
            unknown = set(value) - set(self.field_names)
            if unknown:
                raise CodecError("%s has no field %s; its fields are %s" % (
                    self.c_type, ", ".join(sorted(map(repr, unknown))),
                    ", ".join(self.field_names)))
            return cls(**value)
        if isinstance(value, (tuple, list)):
            if len(value) != len(self.fields):
                raise CodecError("%s needs %d fields (%s), got a sequence of %d" % (
                    self.c_type, len(self.fields), ", ".join(self.field_names),
                    len(value)))
            return _tuple_new(cls, value)
        raise CodecError("%s: expected %s, a dict or a tuple of %d fields, got %r" % (
            self.c_type, cls.__name__, len(self.fields), value))

    def check(self, value, path):
        try:
            v = self._coerce(value)
        except CodecError as e:
            raise CodecError("%s%s" % ("field %r: " % path if path else "", e)) from None
        for name, f, x in zip(self.field_names, self.fields, v):
            sub = "%s.%s" % (path, name) if path else name
            f.codec.check(x, sub)
            if f.bit_size:
                x = operator.index(x)
                lo = -(1 << (f.bit_size - 1)) if getattr(f.codec, "signed", False) else 0
                hi = (1 << (f.bit_size - (1 if lo else 0))) - 1
                if not lo <= x <= hi:
                    _fail(sub, "%s:%d" % (f.codec.c_type, f.bit_size),
                          "an int in %d..%d" % (lo, hi), x)

    # -- slow path: bitfields or overlapping members ------------------------
    def _decode_slow(self, raw):
        whole = int.from_bytes(raw, "little")
        out = []
        for f in self.fields:
            if f.bit_size:
                v = (whole >> f.bit_offset) & ((1 << f.bit_size) - 1)
                if getattr(f.codec, "signed", False) and v >> (f.bit_size - 1):
                    v -= 1 << f.bit_size
                out.append(v)
            else:
                out.append(f.codec.decode(raw, f.offset))
        return _tuple_new(self.py_type, out)

    def _encode_slow(self, v):
        self.check(v, "")
        buf = bytearray(self.size)
        whole = 0
        for f, x in zip(self.fields, v):
            if f.bit_size:
                whole |= (operator.index(x) & ((1 << f.bit_size) - 1)) << f.bit_offset
            else:
                b = f.codec.encode(x)
                buf[f.offset:f.offset + len(b)] = b
        if whole:
            wb = whole.to_bytes(self.size, "little")
            buf = bytearray(a | b for a, b in zip(buf, wb))
        return bytes(buf)

    def __call__(self, *args, **kwargs):
        """A checked value; nested dicts/tuples become their classes."""
        try:
            v = self.py_type(*args, **kwargs)
        except TypeError as e:
            raise CodecError("%s: %s (fields: %s)" % (
                self.c_type, e, ", ".join(self.field_names))) from None
        return self.decode(self.encode(v))

    def zero(self):
        return self.py_type()

    def annotation(self):
        return self.py_type.__name__

    def numpy_dtype(self):
        import numpy as np
        if self.flat_scalar:
            return np.dtype("V%d" % self.size)
        return np.dtype({"names": self.field_names,
                         "formats": [f.codec.numpy_dtype() for f in self.fields],
                         "offsets": [f.offset for f in self.fields],
                         "itemsize": self.size})


def _inline_flatten(codec, expr, lines, ns, counter):
    """Append statements that validate/convert ``expr`` (a value of
    ``codec``) and return the item expressions for its struct format."""
    k = counter[0]
    counter[0] += 1
    if codec.identity_flatten:
        return [expr]
    if isinstance(codec, StructCodec) and not codec.flat_scalar:
        ns["C%d" % k] = codec.py_type
        ns["coerce%d" % k] = codec._coerce
        var = "s%d" % k
        lines.append("%s = %s" % (var, expr))
        lines.append("if type(%s) is not C%d: %s = coerce%d(%s)" % (var, k, var, k, var))
        out = []
        for i, f in enumerate(codec.fields):
            out += _inline_flatten(f.codec, "%s[%d]" % (var, i), lines, ns, counter)
        return out
    ns["f%d" % k] = codec.flatten
    var = "x%d" % k
    if isinstance(codec, RawCodec):
        lines.append("%s = %s" % (var, expr))
        lines.append("if type(%s) is not bytes or len(%s) != %d: %s = f%d(%s)" % (
            var, var, codec.size, var, k, var))
        return [var]
    if isinstance(codec, BytesCodec):
        lines.append("%s = %s" % (var, expr))
        lines.append("if type(%s) is not bytes or len(%s) > %d: %s = f%d(%s)" % (
            var, var, codec.size, var, k, var))
        return [var]
    if isinstance(codec, ArrayCodec) and codec.elem.identity_flatten:
        lines.append("%s = %s" % (var, expr))
        # bytes, str, dicts and sets have a len() too: only tuples and lists
        # skip the check (f returns a tuple of the checked items)
        lines.append("if type(%s) is not tuple and type(%s) is not list or len(%s) != %d: "
                     "%s = f%d(%s)" % (var, var, var, codec.n, var, k, var))
        return ["*" + var]
    if codec.flat_scalar:
        return ["f%d(%s)" % (k, expr)]
    return ["*f%d(%s)" % (k, expr)]


def _iter_codecs(c):
    yield c
    for f in getattr(c, "fields", ()):
        yield from _iter_codecs(f.codec)
    if isinstance(c, ArrayCodec):
        yield from _iter_codecs(c.elem)


class UnionCodec(StructCodec):
    """A C union: decodes to a class with every member read from the same
    bytes. Encodes a dict with exactly one member, or an instance (its
    largest member is written)."""

    kind = "union"

    def _setup(self):
        self.fmt = "%ds" % self.size
        self.nitems = 1
        slow = self._decode_slow
        self._build = lambda t: slow(t[0])
        self._simple = False
        self._compile_flatten()
        self._compile()

    def _decode_slow(self, raw):
        return _tuple_new(self.py_type, [f.codec.decode(raw, 0) if not f.bit_size else
                                         int.from_bytes(raw, "little") & ((1 << f.bit_size) - 1)
                                         for f in self.fields])

    def _pick(self, value, path=""):
        if isinstance(value, dict):
            if len(value) != 1:
                raise CodecError("%s: give exactly one member as a dict, got %d" % (
                    self.c_type, len(value)))
            (name, v), = value.items()
            if name not in self.field_names:
                raise CodecError("%s has no member %r; its members are %s" % (
                    self.c_type, name, ", ".join(self.field_names)))
            return self.fields[self.field_names.index(name)], v, name
        if isinstance(value, tuple) and len(value) == len(self.fields):
            return self._pick_member(value, path)
        raise CodecError("%s: expected %s or a dict of one member, got %r" % (
            self.c_type, self.py_type.__name__, value))

    def _pick_member(self, value, path):
        """The member of an instance to write: the largest when all members
        hold the same bytes (a decoded value), else the only non-zero one;
        an instance with two conflicting members is refused rather than
        dropping one of them."""
        order = sorted(range(len(self.fields)), key=lambda i: -self.fields[i].codec.size)
        raw = {}
        for i in order:
            f = self.fields[i]
            if not f.bit_size:
                n = self.field_names[i]
                f.codec.check(value[i], "%s.%s" % (path, n) if path else n)
                raw[i] = f.codec.encode(value[i])
        if not raw:
            i = order[0]
            return self.fields[i], value[i], self.field_names[i]
        big = raw[order[0]] if order[0] in raw else max(raw.values(), key=len)
        if all(big.startswith(b) for b in raw.values()):
            i = next(i for i in order if i in raw)
            return self.fields[i], value[i], self.field_names[i]
        set_ = [i for i in raw if raw[i].strip(b"\0")]
        if len(set_) == 1:
            i = set_[0]
            return self.fields[i], value[i], self.field_names[i]
        raise CodecError("%s: members %s hold different values; give the one to write "
                         "as a dict, e.g. {%r: ...}" % (
                             self.c_type, " and ".join(self.field_names[i] for i in set_),
                             self.field_names[set_[0]]))

    def _coerce(self, value):
        return value

    def check(self, value, path):
        try:
            f, v, name = self._pick(value, path)
        except CodecError as e:
            if not path or str(e).startswith("field "):
                raise
            raise CodecError("field %r: %s" % (path, e)) from None
        f.codec.check(v, "%s.%s" % (path, name) if path else name)

    def _encode_slow(self, value):
        f, v, _ = self._pick(value)
        f.codec.check(v, "")
        return f.codec.encode(v).ljust(self.size, b"\0")

    def _compile_flatten(self):
        enc = self._encode_slow
        self.flatten = enc

    def __call__(self, **member):
        return self._decode_slow(self._encode_slow(member))


# ------------------------------------------------------------------ BTF

#: cache mark of a type whose codec is being built (seen again: a cycle)
_BUILDING = object()


def from_btf(btf, type_id, _cache=None):
    """The codec for BTF type ``type_id`` (typedefs/qualifiers resolved)."""
    cache = _cache if _cache is not None else getattr(btf, "_codecs", None)
    if cache is None:
        cache = btf._codecs = {}
    codec = cache.get(type_id)
    if codec is None:
        t = btf.resolve(type_id)
        codec = cache.get(t.id)
        if codec is None:
            cache[t.id] = _BUILDING
            try:
                codec = _from_btf(btf, type_id, t, cache)
            finally:
                if cache.get(t.id) is _BUILDING:
                    del cache[t.id]
            cache[t.id] = codec
        if codec is not _BUILDING:
            cache[type_id] = codec
    if codec is _BUILDING:
        raise CodecError("BTF type %s (id %d) contains itself" % (
            btf.c_name(type_id), type_id))
    return codec


def _from_btf(btf, type_id, t, cache):
    c_name = btf.c_name(type_id)
    k = t.kind
    if k == Kind.INT:
        if t.bits != t.size * 8 or t.bit_offset:
            codec = IntCodec(t.size, t.signed, c_name)
        else:
            codec = IntCodec(t.size, t.signed, c_name, is_bool=t.is_bool)
    elif k in (Kind.ENUM, Kind.ENUM64):
        codec = EnumCodec(t.size, t.signed, c_name, t.members, t.name)
    elif k == Kind.FLOAT:
        codec = FloatCodec(t.size)
    elif k == Kind.PTR:
        codec = IntCodec(8, False, c_name)
    elif k == Kind.ARRAY:
        elem_t = btf.resolve(t.elem_id)
        if elem_t.kind == Kind.INT and elem_t.size == 1 and not elem_t.is_bool:
            # char[N] and __u8[N] (addresses, MACs, names) read best as bytes
            codec = BytesCodec(t.nelems, c_name)
        else:
            codec = ArrayCodec(from_btf(btf, t.elem_id, cache), t.nelems)
    elif k in (Kind.STRUCT, Kind.UNION):
        fields = []
        for m in t.members:
            mc = from_btf(btf, m.type_id, cache)
            bit_size = m.bit_size
            if not bit_size and m.bit_offset % 8:
                bit_size = mc.size * 8
            if bit_size:
                fields.append(_Field(m.name, mc, m.bit_offset // 8, bit_size, m.bit_offset))
            else:
                fields.append(_Field(m.name, mc, m.bit_offset // 8))
        # an int member whose BTF int encoding is narrower than its type is a
        # legacy bitfield (kind_flag clear)
        for f, m in zip(fields, t.members):
            mt = btf.resolve(m.type_id)
            if mt.kind == Kind.INT and not f.bit_size and mt.bits != mt.size * 8:
                f.bit_size, f.bit_offset = mt.bits, m.bit_offset + mt.bit_offset
        cls = StructCodec if k == Kind.STRUCT else UnionCodec
        codec = cls(t.name, t.size, fields, c_name)
    elif k == Kind.DATASEC:
        fields = [_Field(m.name, from_btf(btf, btf[m.type_id].type_id, cache),
                         m.bit_offset // 8) for m in t.members]
        codec = StructCodec(t.name.lstrip("."), t.size, fields, c_name)
    elif k == Kind.VAR:
        codec = from_btf(btf, t.type_id, cache)
    else:
        raise CodecError("no codec for BTF %s type %r" % (t.kind_name, c_name))
    return codec


# ------------------------------------------------------------------ descriptions

_SCALARS = {
    "u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False),
    "s8": (1, True), "s16": (2, True), "s32": (4, True), "s64": (8, True),
    "i8": (1, True), "i16": (2, True), "i32": (4, True), "i64": (8, True),
    "__u8": (1, False), "__u16": (2, False), "__u32": (4, False), "__u64": (8, False),
    "__s8": (1, True), "__s16": (2, True), "__s32": (4, True), "__s64": (8, True),
    "int": (4, True), "unsigned int": (4, False), "long": (8, True),
    "unsigned long": (8, False), "short": (2, True), "unsigned short": (2, False),
    "uint8_t": (1, False), "uint16_t": (2, False), "uint32_t": (4, False),
    "uint64_t": (8, False), "int8_t": (1, True), "int16_t": (2, True),
    "int32_t": (4, True), "int64_t": (8, True), "bool": (1, False),
    "char": (1, True), "signed char": (1, True), "unsigned char": (1, False),
    "long long": (8, True), "unsigned long long": (8, False),
}
# the first [N] is the outermost dimension, as in C: u32[2][3] is 2 x u32[3]
_ARRAY_RE = re.compile(r"^([^\[]*?)\s*\[(\d+)\]((?:\s*\[\d+\])*)$")
_BYTE_ELEMS = frozenset(("char", "signed char", "unsigned char", "u8", "__u8", "uint8_t",
                         "s8", "__s8", "i8", "int8_t"))


def from_description(desc, name="value"):
    """A codec from a type description: a Codec, a size in bytes (raw
    bytes), a C scalar name ("u32", "__u64", "int", "float", "double",
    "char[16]", "u32[4]"), or a struct as a sequence of (field, description)
    pairs (laid out with C alignment)."""
    if isinstance(desc, Codec):
        return desc
    if isinstance(desc, int) and not isinstance(desc, bool):
        if desc <= 0:
            raise CodecError("%s size must be positive, got %d" % (name, desc))
        return RawCodec(desc)
    if isinstance(desc, str):
        s = desc.strip()
        m = _ARRAY_RE.match(s)
        if m:
            elem, n, inner = m.group(1), int(m.group(2)), m.group(3)
            if elem in _BYTE_ELEMS and not inner:
                return BytesCodec(n, "%s[%d]" % (elem, n))
            return ArrayCodec(from_description(elem + inner, name), n)
        if s in _SCALARS:
            size, signed = _SCALARS[s]
            return IntCodec(size, signed, s, is_bool=(s == "bool"))
        if s in ("float", "double"):
            return FloatCodec(4 if s == "float" else 8)
        raise CodecError("unknown %s type %r: expected a C scalar (u8..u64, "
                         "s8..s64, int, float, double), an array such as "
                         "'char[16]' or 'u32[4]', a byte size, or a list of "
                         "(field, type) pairs" % (name, desc))
    if isinstance(desc, (list, tuple)) and desc and all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in desc):
        fields, off, align = [], 0, 1
        for fname, fdesc in desc:
            if not isinstance(fname, str) or not fname.isidentifier() or \
                    keyword.iskeyword(fname) or fname.startswith("_"):
                raise CodecError("%s field name %r: expected a Python identifier not "
                                 "starting with '_'" % (name, fname))
            if any(f.name == fname for f in fields):
                raise CodecError("%s field %r appears twice" % (name, fname))
            try:
                c = from_description(fdesc, name)
            except CodecError as e:
                raise CodecError("field %r: %s" % (fname, e)) from None
            a = _alignment(c)
            off = (off + a - 1) // a * a
            fields.append(_Field(fname, c, off))
            off += c.size
            align = max(align, a)
        size = (off + align - 1) // align * align
        return StructCodec(name, size, fields)
    raise CodecError("cannot read %s type description %r: expected a C type name "
                     "('u32', 'char[16]', 'u32[4]', ...), a size in bytes, or a "
                     "non-empty list of (field, type) pairs" % (name, desc))


def _alignment(c):
    if isinstance(c, (IntCodec, FloatCodec)):
        return min(c.size, 8) if c.size in (1, 2, 4, 8) else 8
    if isinstance(c, BytesCodec):
        return 1
    if isinstance(c, ArrayCodec):
        return _alignment(c.elem)
    if isinstance(c, StructCodec):
        return max((_alignment(f.codec) for f in c.fields), default=1)
    return 1


def round_up8(n):
    return (n + 7) & ~7
