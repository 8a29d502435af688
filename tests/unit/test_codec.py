"""Codecs (bytes <-> Python values) without privileges: type descriptions
checked against ctypes' C layout and numpy dtypes, BTF-built codecs (unions,
bitfields, enums) built with tests/btfgen.py or taken from clang's raw BTF,
round trips, and bad input refused with a CodecError naming the field and
the C type, never truncated.

Decisions pinned here: ``bool`` is accepted wherever an int is (it is an
int in Python and converts to 0/1 in C), and so is any object with
``__index__`` (numpy integers); ``float`` is refused for integer types even
when integral (1.0), and a C ``bool`` takes only True/False/0/1.
"""

import ctypes
import enum
import fractions
import math
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import btfgen
import strategies as S
from pybpfnet import CodecError
from pybpfnet import _btf, _codec
from pybpfnet._codec import from_description

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ oracles

_CT = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32,
       "u64": ctypes.c_uint64, "s8": ctypes.c_int8, "s16": ctypes.c_int16,
       "s32": ctypes.c_int32, "s64": ctypes.c_int64, "bool": ctypes.c_bool,
       "float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int32,
       "unsigned long": ctypes.c_uint64, "__u16": ctypes.c_uint16,
       "int64_t": ctypes.c_int64, "char": ctypes.c_char}
# as in C, the first [N] is the outermost dimension
_ARRAY = re.compile(r"^([^\[]*?)\s*\[(\d+)\]((?:\s*\[\d+\])*)$")


def ctype_of(desc):
    """The ctypes type of a description: the compiler ABI's layout."""
    if isinstance(desc, str):
        m = _ARRAY.match(desc)
        if m:
            return ctype_of(m.group(1) + m.group(3)) * int(m.group(2))
        return _CT[desc]
    return type("S", (ctypes.Structure,),
                {"_fields_": [(n, ctype_of(d)) for n, d in desc]})


def ctypes_bytes(desc, value):
    """bytes of ``value`` (canonical form) laid out by ctypes."""
    ct = ctype_of(desc)
    obj = ct()
    _ct_set(obj, desc, value)
    return bytes(obj)


def _ct_set(obj, desc, value):
    if isinstance(desc, str):
        m = _ARRAY.match(desc)
        if isinstance(value, bytes):
            ctypes.memmove(obj, value, len(value))
            return
        et = obj._type_
        for i, v in enumerate(value):
            if isinstance(v, (bytes, tuple, list)):
                elem = et.from_address(ctypes.addressof(obj) + i * ctypes.sizeof(et))
                _ct_set(elem, m.group(1) + m.group(3), v)
            else:
                obj[i] = v
        return
    for (name, d), v in zip(desc, value):
        cur = getattr(obj, name)
        if isinstance(cur, (int, float, bool, bytes)):  # c_char arrays read as bytes
            setattr(obj, name, v)
        else:
            _ct_set(cur, d, v)


def ct_scalar_bytes(desc, value):
    ct = ctype_of(desc)
    if isinstance(desc, str) and not _ARRAY.match(desc):
        return bytes(ct(value))
    return ctypes_bytes(desc, value)


def to_numpy(codec, value):
    if isinstance(codec, _codec.StructCodec):
        return tuple(to_numpy(f.codec, v) for f, v in zip(codec.fields, value))
    if isinstance(codec, _codec.ArrayCodec):
        return [to_numpy(codec.elem, v) for v in value]
    return value


def numpy_bytes(codec, value):
    a = np.zeros(1, codec.numpy_dtype())
    a[0] = to_numpy(codec, value)
    return a.tobytes()


def fields_of(codec):
    """(path, offset, codec) of every leaf of a struct codec."""
    out = []

    def walk(c, path, off):
        if isinstance(c, _codec.StructCodec) and not isinstance(c, _codec.UnionCodec):
            for n, f in zip(c.field_names, c.fields):
                walk(f.codec, path + (n,), off + f.offset)
        else:
            out.append((path, off, c))
    walk(codec, (), 0)
    return out


# ------------------------------------------------------------------ descriptions

@SETTINGS
@given(st.data())
def test_description_round_trip(data):
    desc = data.draw(S.type_descriptions(), "desc")
    c = from_description(desc)
    value = data.draw(S.codec_values(c), "value")
    raw = c.encode(value)
    assert isinstance(raw, bytes) and len(raw) == c.size
    back = c.decode(raw)
    assert back == S.canonical(c, value)
    assert c.encode(back) == raw
    # at an offset, in a batch, and into a bytearray/memoryview
    assert c.decode(b"\xaa" * 3 + raw, 3) == back
    assert c.decode_many(raw * 3, 3) == [back] * 3
    assert c.decode(memoryview(bytearray(raw))) == back
    assert c.encode_many([value, back]) == raw * 2


@SETTINGS
@given(st.data())
def test_description_layout_is_the_c_layout(data):
    desc = data.draw(S.type_descriptions(), "desc")
    c = from_description(desc)
    ct = ctype_of(desc)
    assert c.size == ctypes.sizeof(ct)
    if isinstance(desc, list):
        assert [f.offset for f in c.fields] == [getattr(ct, n).offset for n, _ in desc]
        assert _codec._alignment(c) == ctypes.alignment(ct)
    value = S.canonical(c, data.draw(S.codec_values(c), "value"))
    assert c.encode(value) == ct_scalar_bytes(desc, value)


@SETTINGS
@given(st.data())
def test_numpy_dtype_is_the_c_layout(data):
    desc = data.draw(S.type_descriptions(), "desc")
    c = from_description(desc)
    dt = c.numpy_dtype()
    assert dt.itemsize == c.size
    if isinstance(c, _codec.StructCodec):
        assert list(dt.names) == c.field_names
        assert [dt.fields[n][1] for n in dt.names] == [f.offset for f in c.fields]
    value = S.canonical(c, data.draw(S.codec_values(c), "value"))
    raw = c.encode(value)
    assert numpy_bytes(c, value) == raw
    # and back: the kernel's bytes read by numpy give the same fields
    arr = np.frombuffer(raw, dt)
    if isinstance(c, _codec.StructCodec):
        for path, off, leaf in fields_of(c):
            item = arr[0]
            for p in path:
                item = item[p]
            if isinstance(leaf, _codec.BytesCodec):
                assert bytes(item) == leaf.decode(raw, off).rstrip(b"\0")
            elif isinstance(leaf, (_codec.IntCodec, _codec.FloatCodec)):
                assert item == leaf.decode(raw, off)


@SETTINGS
@given(st.data())
def test_decoding_never_raises_on_bytes_of_the_right_size(data):
    desc = data.draw(S.type_descriptions(), "desc")
    c = from_description(desc)
    raw = data.draw(st.binary(min_size=c.size, max_size=c.size), "raw")
    v = c.decode(raw)
    # what was decoded encodes again, and is stable from then on (a NaN's
    # payload or a bool byte of 2 may normalise once)
    once = c.encode(v)
    assert len(once) == c.size
    assert c.encode(c.decode(once)) == once
    if isinstance(c, _codec.StructCodec):
        hash(v)


@SETTINGS
@given(st.data())
def test_bad_values_raise_codec_error_naming_the_type(data):
    desc = data.draw(S.type_descriptions(), "desc")
    c = from_description(desc)
    bad = data.draw(S.bad_codec_values(c), "bad")
    with pytest.raises(CodecError) as ei:
        c.encode(bad)
    msg = str(ei.value)
    assert "C type" in msg or c.c_type in msg, msg
    assert "expected" in msg or "has no field" in msg or "needs" in msg or \
        "exactly one" in msg, msg
    with pytest.raises(CodecError):
        c.check(bad, "")


@SETTINGS
@given(st.data())
def test_junk_is_encoded_exactly_or_refused(data):
    c = from_description(data.draw(S.type_descriptions(), "desc"))
    value = data.draw(S.junk(), "junk")
    try:
        raw = c.encode(value)
    except CodecError as e:
        assert str(e)
        return
    assert len(raw) == c.size
    c.check(value, "")
    assert c.encode(c.decode(raw)) == raw


@pytest.mark.parametrize("desc, size, offsets", [
    ("u32", 4, None),
    ("char[16]", 16, None),
    ("u32[4]", 16, None),
    ([("a", "u8"), ("b", "u64")], 16, [0, 8]),
    ([("a", "u64"), ("b", "u8")], 16, [0, 8]),
    ([("a", "u8"), ("b", "u16"), ("c", "u8")], 6, [0, 2, 4]),
    ([("a", "u8"), ("b", [("x", "u8"), ("y", "u32")])], 12, [0, 4]),
    ([("a", "char[3]"), ("b", "u32[2]"), ("c", "u8")], 16, [0, 4, 12]),
    ([("n", "u32"), ("data", "u32[0]")], 4, [0, 4]),
])
def test_from_description_layouts(desc, size, offsets):
    c = from_description(desc)
    assert c.size == size
    if offsets is not None:
        assert [f.offset for f in c.fields] == offsets
        assert c.py_type._fields == tuple(n for n, _ in desc)


def test_from_description_kinds():
    assert isinstance(from_description("u32"), _codec.IntCodec)
    assert isinstance(from_description("char[16]"), _codec.BytesCodec)
    assert isinstance(from_description("u8[6]"), _codec.BytesCodec)
    assert isinstance(from_description("u32[4]"), _codec.ArrayCodec)
    assert isinstance(from_description(12), _codec.RawCodec)
    c = from_description("s16")
    assert from_description(c) is c
    assert from_description(" u64 ").size == 8
    assert from_description("float").decode(from_description("float").encode(1.5)) == 1.5


@pytest.mark.parametrize("desc, match", [
    ("u33", r"unknown value type 'u33': expected a C scalar"),
    ("", r"expected a C scalar"),
    ("char[x]", r"expected a C scalar"),
    ("struct foo", r"expected a C scalar"),
    (0, r"size must be positive"),
    (-4, r"size must be positive"),
    (1.5, r"expected a C type name .* a size in bytes, or a non-empty list"),
    (None, r"expected a C type name"),
    (True, r"expected a C type name"),
    ([], r"expected a C type name"),
    ({"a": "u8"}, r"expected a C type name"),
    ([("a",)], r"expected a C type name"),
    ([("a", "u8", 3)], r"expected a C type name"),
    ([(1, "u8")], r"field name 1: expected a Python identifier"),
    ([("a b", "u8")], r"field name 'a b': expected a Python identifier"),
    ([("_a", "u8")], r"not starting with '_'"),
    ([("class", "u8")], r"field name 'class'"),
    ([("a", "u8"), ("a", "u16")], r"field 'a' appears twice"),
    ([("a", "u8"), ("b", "nope")], r"field 'b': unknown value type 'nope'"),
    ([("a", [("x", "u99")])], r"field 'a': field 'x': unknown value type 'u99'"),
])
def test_bad_descriptions_say_what_is_expected(desc, match):
    with pytest.raises(CodecError, match=match):
        from_description(desc)


# ------------------------------------------------------------------ scalars

def test_unsigned_ints_refuse_negative_and_overflow():
    for name, size in (("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)):
        c = from_description(name)
        hi = (1 << (8 * size)) - 1
        assert c.decode(c.encode(hi)) == hi and c.decode(c.encode(0)) == 0
        for bad in (-1, hi + 1, -(1 << 80), 1 << 80):
            with pytest.raises(CodecError, match=r"C type %s\): expected an int in 0\.\.%d"
                               % (name, hi)):
                c.encode(bad)


def test_signed_ints_range():
    c = from_description("s32")
    assert c.decode(c.encode(-2 ** 31)) == -2 ** 31
    with pytest.raises(CodecError, match=r"-2147483648\.\.2147483647, got 2147483648"):
        c.encode(2 ** 31)


def test_ints_accept_bool_and_index_but_not_float():
    c = from_description("u32")
    assert c.encode(True) == c.encode(1) and c.encode(False) == c.encode(0)
    assert c.encode(np.uint32(7)) == c.encode(7) == c.encode(np.int64(7))

    class Five(enum.IntEnum):
        FIVE = 5
    assert c.encode(Five.FIVE) == c.encode(5)

    class Idx:
        def __index__(self):
            return 3
    assert c.encode(Idx()) == c.encode(3)
    for bad in (1.0, 1.5, float("nan"), "1", b"\1", None, fractions.Fraction(1), 1j, [1]):
        with pytest.raises(CodecError, match="expected an int"):
            c.encode(bad)
    with pytest.raises(CodecError, match="0..4294967295"):
        c.encode(np.int64(-1))


def test_c_bool_takes_only_truth_values():
    c = from_description("bool")
    assert c.decode(c.encode(True)) is True and c.decode(c.encode(0)) is False
    assert c.encode(1) == b"\1"
    for bad in (2, -1, 256, "yes", "", None, 0.5, [], [1], object()):
        with pytest.raises(CodecError, match=r"C type bool\): expected a bool or 0/1"):
            c.encode(bad)
    assert c.decode(b"\x07") is True  # any non-zero byte reads as true
    s = from_description([("flag", "bool"), ("n", "u16")])
    assert s.decode(s.encode({"flag": True, "n": 2})) == (True, 2)
    with pytest.raises(CodecError, match=r"field 'flag' \(C type bool\)"):
        s.encode({"flag": 5})
    a = from_description("bool[3]")
    assert a.decode(a.encode([True, 0, 1])) == (True, False, True)
    with pytest.raises(CodecError, match=r"field '\[1\]' \(C type bool\)"):
        a.encode([True, "no", 1])


def test_floats():
    f, d = from_description("float"), from_description("double")
    assert f.decode(f.encode(3)) == 3.0 and d.decode(d.encode(-0.5)) == -0.5
    assert math.isnan(d.decode(d.encode(float("nan"))))
    assert f.decode(f.encode(float("inf"))) == float("inf")
    assert f.decode(f.encode(0.1)) == struct.unpack("f", struct.pack("f", 0.1))[0]
    with pytest.raises(CodecError, match=r"C type float\): expected a number within"):
        f.encode(1e39)
    with pytest.raises(CodecError, match=r"C type double\): expected a number within"):
        d.encode(10 ** 400)
    with pytest.raises(CodecError, match=r"C type double\): expected a float"):
        d.encode("1.0")


def test_odd_sized_ints_travel_as_bytes():
    for size, signed in ((3, True), (3, False), (16, True), (16, False)):
        c = _codec.IntCodec(size, signed)
        lo, hi = c.lo, c.hi
        for v in (lo, hi, 0, 1, np.int16(5)):
            raw = c.encode(v)
            assert raw == int(v).to_bytes(size, "little", signed=signed)
            assert c.decode(raw) == v
        with pytest.raises(CodecError, match="expected an int in"):
            c.encode(hi + 1)
        with pytest.raises(CodecError, match="expected an int"):
            c.encode(1.0)


@pytest.mark.parametrize("size", [0, 17, 1 << 31])
def test_int_sizes_outside_btf_are_refused(size):
    with pytest.raises(CodecError, match="1 to 16 bytes"):
        _codec.IntCodec(size, True)


# ------------------------------------------------------------------ bytes

def test_char_arrays_take_str_and_bytes_and_never_truncate():
    c = from_description("char[8]")
    assert c.decode(c.encode("eth0")) == b"eth0\0\0\0\0"
    assert c.encode("é") == "é".encode() + b"\0" * 6
    assert c.encode(bytearray(b"ab")) == c.encode(memoryview(b"ab")) == c.encode(b"ab")
    assert c.encode("12345678") == b"12345678"
    for bad in (b"123456789", "123456789", "éééé1", bytearray(9)):
        with pytest.raises(CodecError, match=r"C type char\[8\]\): expected at most 8 bytes"):
            c.encode(bad)
    with pytest.raises(CodecError, match=r"<100 bytes>"):
        c.encode(b"x" * 100)
    for bad in (5, None, [1, 2], (b"a",), 1.5):
        with pytest.raises(CodecError, match="expected bytes or str"):
            c.encode(bad)


def test_raw_bytes_need_the_exact_size():
    c = _codec.RawCodec(4)
    assert c.encode(b"abcd") == b"abcd" and c.decode(b"abcd") == b"abcd"
    for bad in (b"abc", b"abcde", "", None):
        with pytest.raises(CodecError):
            c.encode(bad)


# ------------------------------------------------------------------ arrays

def test_arrays_take_sequences_of_exactly_n():
    c = from_description("u32[4]")
    assert c.decode(c.encode((1, 2, 3, 4))) == (1, 2, 3, 4)
    assert c.encode([1, 2, 3, 4]) == c.encode(np.array([1, 2, 3, 4], np.uint32))
    for bad in ((1, 2, 3), (1, 2, 3, 4, 5), 5, None, "abcd", b"\1\2\3\4",
                {0: 1, 1: 2, 2: 3, 3: 4}, {1, 2, 3, 4}, iter([1, 2, 3, 4])):
        with pytest.raises(CodecError, match=r"C type u32\[4\]\): expected a sequence"):
            c.encode(bad)
    with pytest.raises(CodecError, match=r"field '\[2\]' \(C type u32\): expected an int in"):
        c.encode([1, 2, -3, 4])


def test_nested_arrays_and_arrays_of_structs():
    c = from_description([("m", "u16[2][3]"), ("pts", [("x", "u8"), ("y", "u32")])])
    v = c(m=((1, 2, 3), (4, 5, 6)), pts={"x": 1, "y": 2})
    assert c.decode(c.encode(v)) == (((1, 2, 3), (4, 5, 6)), (1, 2))
    # C order: u16[2][3] is two rows of three
    assert c.fields[0].codec.c_type == "u16[2][3]" and c.fields[0].codec.n == 2
    assert c.encode(v)[:12] == struct.pack("=6H", 1, 2, 3, 4, 5, 6)
    with pytest.raises(CodecError, match=r"field 'm\[1\]' \(C type u16\[3\]\): expected a seq"):
        c.encode({"m": ((1, 2, 3), (4, 5))})
    names = from_description("char[3][4]")
    assert names.decode(names.encode(["ab", b"c", ""])) == (b"ab\0\0", b"c\0\0\0", bytes(4))
    arr = _codec.ArrayCodec(from_description([("x", "u8"), ("y", "u32")]), 3)
    vals = ((1, 2), {"x": 3}, [5, 6])
    out = arr.decode(arr.encode(vals))
    assert out == ((1, 2), (3, 0), (5, 6)) and out[1].x == 3
    with pytest.raises(CodecError, match=r"field '\[1\]\.y' \(C type u32\)"):
        arr.encode(((1, 2), {"y": -1}, (0, 0)))


# ------------------------------------------------------------------ structs

FLOW = [("saddr", "u32"), ("sport", "u16"), ("name", "char[8]"), ("ports", "u16[2]"),
        ("pos", [("x", "u16"), ("y", "s16")])]


def test_struct_forms_and_generated_class():
    c = from_description(FLOW)
    V = c.py_type
    assert V._fields == ("saddr", "sport", "name", "ports", "pos")
    full = V(1, 2, b"n\0\0\0\0\0\0\0", (3, 4), c.fields[4].codec.py_type(5, -6))
    raw = c.encode(full)
    assert c.encode((1, 2, "n", [3, 4], (5, -6))) == raw
    assert c.encode({"saddr": 1, "sport": 2, "name": b"n", "ports": (3, 4),
                     "pos": {"x": 5, "y": -6}}) == raw
    assert c.decode(raw) == full
    assert c.decode(raw).pos.y == -6 and c.decode(raw).name == b"n" + b"\0" * 7
    # missing dict fields are zero, as in a designated initializer
    assert c.decode(c.encode({"sport": 9})) == c.zero()._replace(sport=9)
    assert c.encode({}) == bytes(c.size) == c.encode(c.zero())
    # calling the codec builds a checked instance
    assert c(sport=2) == c.zero()._replace(sport=2)
    with pytest.raises(CodecError, match=r"field 'sport' \(C type u16\)"):
        c(sport=-2)


def test_struct_values_are_hashable_dict_keys():
    c = from_description(FLOW)
    a = c.decode(c.encode({"saddr": 1, "ports": (1, 2), "pos": (1, 1)}))
    b = c.decode(c.encode((1, 0, b"", [1, 2], {"x": 1, "y": 1})))
    assert a == b and hash(a) == hash(b) and a is not b
    d = {a: "x"}
    assert d[b] == "x"
    assert a == tuple(a) and {a, b} == {a}
    assert c.decode(c.encode({"saddr": 2})) not in d
    with pytest.raises(AttributeError):
        a.saddr = 5


@pytest.mark.parametrize("bad, match", [
    ({"nope": 1}, r"struct value has no field 'nope'; its fields are saddr, sport, name"),
    ({"saddr": 1, "a": 2, "b": 3}, r"no field 'a', 'b'"),
    ((1, 2), r"needs 5 fields \(saddr, sport, name, ports, pos\), got a sequence of 2"),
    (5, r"expected value, a dict or a tuple of 5 fields, got 5"),
    (None, r"got None"),
    ({"saddr": -1}, r"field 'saddr' \(C type u32\): expected an int in 0\.\.4294967295"),
    ({"name": "123456789"}, r"field 'name' \(C type char\[8\]\): expected at most 8"),
    ({"ports": (1, 2, 3)}, r"field 'ports' \(C type u16\[2\]\): expected a sequence"),
    ({"ports": (1, 70000)}, r"field 'ports\[1\]' \(C type u16\)"),
    ({"pos": 5}, r"field 'pos': struct value: expected value, a dict"),
    ({"pos": {"z": 1}}, r"field 'pos': struct value has no field 'z'"),
    ({"pos": {"y": 40000}}, r"field 'pos\.y' \(C type s16\): expected an int in -32768"),
    ({"sport": 1.0}, r"field 'sport' \(C type u16\): expected an int, got 1\.0"),
])
def test_struct_errors_name_the_field_and_type(bad, match):
    c = from_description(FLOW)
    with pytest.raises(CodecError, match=match):
        c.encode(bad)


def test_codec_error_is_value_and_type_error():
    c = from_description("u8")
    for exc in (ValueError, TypeError, CodecError):
        with pytest.raises(exc):
            c.encode(256)


# ------------------------------------------------------------------ BTF-built codecs

def btf_codec(build):
    b = btfgen.BtfBuilder()
    tid = build(b)
    btf = _btf.parse(b.build())
    return _codec.from_btf(btf, tid)


def _addr_union(b):
    u32 = b.int("__u32", 4)
    u8 = b.int("__u8", 1)
    v6 = b.array(u8, 16, u32)
    return b.union("addr", 16, [("v4", u32, 0), ("v6", v6, 0)])


def test_union_members_share_bytes():
    U = btf_codec(_addr_union)
    assert U.py_type._fields == ("v4", "v6") and U.size == 16
    v = U.decode(U.encode({"v4": 0x01020304}))
    assert v.v4 == 0x01020304 and v.v6 == b"\x04\x03\x02\x01" + bytes(12)
    v = U.decode(U.encode({"v6": b"\1" * 16}))
    assert v.v4 == 0x01010101
    # a decoded instance encodes to the same bytes
    raw = bytes(range(16))
    assert U.encode(U.decode(raw)) == raw
    # an instance with one member set writes that member
    assert U.decode(U.encode(U.py_type(v4=5))).v4 == 5
    assert U(v4=7).v6[:4] == b"\7\0\0\0"
    assert U.zero() == (0, bytes(16))


@pytest.mark.parametrize("bad, match", [
    ({"v4": 1, "v6": b""}, r"union addr: give exactly one member as a dict, got 2"),
    ({}, r"give exactly one member as a dict, got 0"),
    ({"v5": 1}, r"union addr has no member 'v5'; its members are v4, v6"),
    (5, r"union addr: expected addr or a dict of one member, got 5"),
    ({"v4": -1}, r"field 'v4' \(C type __u32\)"),
    ({"v6": b"x" * 17}, r"field 'v6' \(C type __u8\[16\]\): expected at most 16 bytes"),
])
def test_union_errors(bad, match):
    U = btf_codec(_addr_union)
    with pytest.raises(CodecError, match=match):
        U.encode(bad)


def test_union_instance_with_conflicting_members_is_refused():
    U = btf_codec(_addr_union)
    # writing only one member would silently drop the other
    with pytest.raises(CodecError, match=r"members v6 and v4 hold different values"):
        U.encode(U.py_type(v4=1, v6=b"\2"))
    v = U.decode(bytes(range(16)))
    with pytest.raises(CodecError, match="hold different values"):
        U.encode(v._replace(v4=7))


def test_union_inside_struct_reports_the_path():
    def build(b):
        u = _addr_union(b)
        u32 = b.int("u32", 4)
        return b.struct("with_union", 20, [("family", u32, 0), ("a", u, 32)])
    c = btf_codec(build)
    v = c.decode(c.encode((2, {"v4": 5})))
    assert v.family == 2 and v.a.v4 == 5
    assert c.encode(v) == c.encode({"family": 2, "a": {"v4": 5}})
    for bad, match in [({"a": 5}, r"field 'a': union addr: expected addr"),
                       ({"a": {"v4": -1}}, r"field 'a\.v4' \(C type __u32\)"),
                       ({"a": {"x": 1}}, r"field 'a': union addr has no member 'x'")]:
        with pytest.raises(CodecError, match=match):
            c.encode(bad)
    dt = c.numpy_dtype()
    assert dt.itemsize == 20 and dt.fields["a"][1] == 4


def _bits_struct(b):
    u32 = b.int("__u32", 4)
    s32 = b.int("__s32", 4, signed=True)
    u64 = b.int("__u64", 8)
    return b.struct("with_bits", 16, [("lo", u32, 0, 4), ("mid", u32, 4, 12),
                                      ("neg", s32, 16, 8), ("rest", u32, 24, 8),
                                      ("whole", u64, 64)])


class CBits(ctypes.Structure):
    _fields_ = [("lo", ctypes.c_uint32, 4), ("mid", ctypes.c_uint32, 12),
                ("neg", ctypes.c_int32, 8), ("rest", ctypes.c_uint32, 8),
                ("whole", ctypes.c_uint64)]


@SETTINGS
@given(lo=st.integers(0, 15), mid=st.integers(0, 4095), neg=st.integers(-128, 127),
       rest=st.integers(0, 255), whole=st.integers(0, 2 ** 64 - 1))
def test_bitfields_match_the_c_layout(lo, mid, neg, rest, whole):
    c = btf_codec(_bits_struct)
    v = dict(lo=lo, mid=mid, neg=neg, rest=rest, whole=whole)
    raw = c.encode(v)
    assert raw == bytes(CBits(**v))
    assert c.decode(raw) == c.py_type(**v)
    assert c.decode(bytes(CBits(**v))).neg == neg


def test_bitfield_ranges_and_types():
    c = btf_codec(_bits_struct)
    for bad, match in [({"lo": 16}, r"field 'lo' \(C type __u32:4\): expected an int in 0\.\.15"),
                       ({"lo": -1}, r"field 'lo' \(C type __u32"),
                       ({"neg": 128}, r"field 'neg' \(C type __s32:8\): expected an int in "
                                      r"-128\.\.127"),
                       ({"neg": -129}, r"-128\.\.127, got -129"),
                       ({"mid": 1.0}, r"field 'mid' \(C type __u32\): expected an int"),
                       ({"whole": -1}, r"field 'whole' \(C type __u64\)"),
                       ({"rest": "1"}, r"field 'rest'")]:
        with pytest.raises(CodecError, match=match):
            c.encode(bad)
    # numpy scalars and __index__ objects: no wrap-around when shifted
    assert c.decode(c.encode({"rest": np.uint8(255), "lo": np.uint8(15)})) == \
        c.py_type(15, 0, 0, 255, 0)

    class Idx:
        def __index__(self):
            return 9
    assert c.decode(c.encode({"mid": Idx()})).mid == 9
    assert c.decode(c.encode({"lo": True})).lo == 1
    assert c.numpy_dtype().itemsize == 16


@SETTINGS
@given(st.data())
def test_random_bitfield_layouts(data):
    """Bitfields anywhere in a struct: the bytes are the fields' bits OR-ed
    at their offsets (an independent oracle), and decode inverts encode."""
    size = data.draw(st.sampled_from([4, 8, 12, 16]), "size")
    b = btfgen.BtfBuilder()
    types = {(4, False): b.int("u32", 4), (4, True): b.int("s32", 4, signed=True),
             (8, False): b.int("u64", 8), (8, True): b.int("s64", 8, signed=True)}
    pos, members, spec = 0, [], []
    while pos < size * 8:
        width = data.draw(st.integers(1, 32))
        gap = data.draw(st.integers(0, 3))
        if pos + gap + width > size * 8:
            break
        pos += gap
        signed = data.draw(st.booleans())
        tsize = 8 if width > 16 and data.draw(st.booleans()) else 4
        members.append(("b%d" % len(members), types[(tsize, signed)], pos, width))
        spec.append((pos, width, signed))
        pos += width
    if not members:
        return
    sid = b.struct("bf", size, members)
    c = _codec.from_btf(_btf.parse(b.build()), sid)
    values = [data.draw(st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1) if s
                        else st.integers(0, (1 << w) - 1)) for _, w, s in spec]
    whole = 0
    for (off, w, _), v in zip(spec, values):
        whole |= (v & ((1 << w) - 1)) << off
    raw = c.encode(values)
    assert raw == whole.to_bytes(size, "little")
    assert list(c.decode(raw)) == values
    assert c.encode(c.decode(data.draw(st.binary(min_size=size, max_size=size)))) is not None


def test_enums_decode_to_members():
    def build(b):
        return b.enum("flow_state", [("FLOW_NEW", 0), ("FLOW_EST", 1), ("FLOW_CLOSED", 7)])
    c = btf_codec(build)
    assert c.decode(c.encode(7)) is c.py_type.FLOW_CLOSED
    assert c.decode(c.encode(c.py_type.FLOW_EST)).name == "FLOW_EST"
    assert c.decode(c.encode(3)) == 3 and type(c.decode(c.encode(3))) is int
    with pytest.raises(CodecError, match=r"C type enum flow_state\): expected an int"):
        c.encode("FLOW_EST")
    assert c.numpy_dtype() == np.dtype("u4")


def test_enum_member_names_python_reserves():
    names = ["mro", "_sunder_", "__dunder__", "class", "1abc", "", "name", "value",
             "_missing_", "a-b", "A", "A"]

    def build(b):
        return b.enum("weird", [(n, i) for i, n in enumerate(names)])
    c = btf_codec(build)
    for i in range(len(names)):
        assert c.decode(c.encode(i)) == i
    assert c.decode(c.encode(0)).name == "mro_"
    assert c.decode(c.encode(1)).name == "_sunder"


def test_signed_enum64_and_small_enums():
    def build(b):
        b.enum("small", [("S", 3)], size=1)
        return b.enum64("big", [("NEG", -5), ("HUGE", 2 ** 62)], signed=True)
    c = btf_codec(build)
    assert c.size == 8 and c.decode(c.encode(-5)).name == "NEG"
    assert c.decode(c.encode(2 ** 62)).name == "HUGE"

    def build_small(b):
        return b.enum("small", [("S", 3)], size=1)
    s = btf_codec(build_small)
    assert s.size == 1 and s.decode(b"\3").name == "S" and s.decode(b"\xff") == 255


def test_bool_float_ptr_and_typedef_chains():
    def build(b):
        bl = b.int("_Bool", 1, bool=True)
        fl = b.float("double", 8)
        ch = b.int("char", 1, signed=True, char=True)
        p = b.ptr(ch)
        td = b.typedef("flag_t", b.const(b.volatile(bl)))
        bools = b.array(bl, 2, bl)
        return b.struct("mix", 40, [("f", td, 0), ("d", fl, 64), ("p", p, 128),
                                    ("bb", bools, 192), ("name", b.array(ch, 4, bl), 208)])
    c = btf_codec(build)
    v = c.decode(c.encode({"f": True, "d": 2.5, "p": 2 ** 64 - 1, "bb": (1, False),
                           "name": "ab"}))
    assert v == (True, 2.5, 2 ** 64 - 1, (True, False), b"ab\0\0")
    assert c.fields[0].codec.c_type == "flag_t"
    with pytest.raises(CodecError, match=r"field 'f' \(C type flag_t\): expected a bool"):
        c.encode({"f": 2})
    with pytest.raises(CodecError, match=r"field 'bb\[0\]'"):
        c.encode({"bb": ("x", 0)})


def test_multidimensional_arrays_in_c_order():
    def build(b):
        u32 = b.int("u32", 4)
        return b.array(b.array(u32, 3, u32), 2, u32)  # u32[2][3]
    c = btf_codec(build)
    assert c.c_type == "u32[2][3]" and c.n == 2 and c.elem.n == 3
    assert c.decode(struct.pack("=6I", *range(6))) == ((0, 1, 2), (3, 4, 5))
    raw = struct.pack("=6I", *range(6))
    assert c.numpy_dtype().itemsize == 24 and numpy_bytes(c, c.decode(raw)) == raw
    assert np.zeros(1, c.numpy_dtype()).shape == (1, 2, 3)


def test_flexible_array_members():
    def build(b):
        u32 = b.int("u32", 4)
        return b.struct("msg", 4, [("len", u32, 0), ("data", b.array(u32, 0, u32), 32)])
    c = btf_codec(build)
    assert c.decode(c.encode({"len": 3})) == (3, ())
    assert c.numpy_dtype().itemsize == 4


def test_anonymous_and_odd_member_names():
    def build(b):
        u8 = b.int("u8", 1)
        inner = b.struct("", 2, [("x", u8, 0), ("y", u8, 8)])
        return b.struct("s", 6, [("", inner, 0), ("_p", u8, 16), ("class", u8, 24),
                                 ("a", u8, 32), ("a", u8, 40)])
    c = btf_codec(build)
    assert c.field_names == ["anon0", "f_p", "class_", "a", "a_"]
    v = c.decode(c.encode({"anon0": {"x": 1}, "class_": 2, "a_": 3}))
    assert v.anon0.x == 1 and v.class_ == 2 and v.a_ == 3


@pytest.mark.parametrize("size, members, match", [
    (4, [("a", "u64", 0)], r"struct bad \(4 bytes\): member 'a' \(u64\) ends at bit 64"),
    (8, [("a", "u32", 64)], r"member 'a' \(u32\) ends at bit 96, past its end"),
    (4, [("a", "u32", 30, 4)], r"member 'a' \(u32\) ends at bit 34"),
])
def test_members_past_the_struct_end_are_refused(size, members, match):
    def build(b):
        t = {"u32": b.int("u32", 4), "u64": b.int("u64", 8)}
        return b.struct("bad", size, [(n, t[ty], *rest) for n, ty, *rest in members])
    with pytest.raises(CodecError, match=match):
        btf_codec(build)


def test_types_that_contain_themselves_are_refused():
    def build(b):
        sid = b.next_id
        return b.struct("loop", 8, [("self", sid, 0)])
    with pytest.raises(CodecError, match=r"struct loop \(id 1\) contains itself"):
        btf_codec(build)

    def build_array(b):
        aid = b.next_id
        return b.array(aid, 2, aid)
    with pytest.raises((CodecError, _btf.ObjectFormatError)):
        btf_codec(build_array)


def test_types_without_codecs():
    for build in (lambda b: b.fwd("opaque"), lambda b: 0,
                  lambda b: b.func_proto(0, []), lambda b: b.float("ld", 16)):
        with pytest.raises(CodecError):
            btf_codec(build)


def test_huge_arrays_from_malformed_btf_are_refused_quickly():
    def build(b):
        u32 = b.int("u32", 4)
        return b.array(u32, 2 ** 32 - 1, u32)
    with pytest.raises(CodecError, match="more than any BPF map value holds"):
        btf_codec(build)

    def build_bytes(b):
        u8 = b.int("u8", 1)
        return b.array(u8, 2 ** 26, u8)
    assert btf_codec(build_bytes).size == 2 ** 26


# ------------------------------------------------------------------ clang's BTF

def _map_types(btf):
    """{map name: (key type id, value type id)} from a .maps DATASEC."""
    sec = btf.find(".maps", _btf.Kind.DATASEC)
    out = {}
    for m in sec.members:
        var = btf[m.type_id]
        defn = btf.resolve(var.type_id)
        ids = {}
        for mm in defn.members:
            if mm.name in ("key", "value"):
                ids[mm.name] = btf.resolve(mm.type_id).type_id
        out[var.name] = (ids.get("key"), ids.get("value"))
    return out


@pytest.fixture(scope="module")
def maps_all_btf(test_objects):
    data = open(test_objects["maps_all"], "rb").read()
    return _btf.parse(btfgen.elf_section(data, ".BTF"))


EXPECTED_TYPES = {
    "hash_int": ("__u32", "__u64"), "flows": ("struct flow_key", "struct flow_val"),
    "arr": ("__u32", "struct flow_val"), "pc_hash": ("__u32", "__u64"),
    "pc_arr": ("__u32", "struct inner"), "lru": ("__u64", "__u32"),
    "lru_pc": ("__u32", "__u32"), "lpm": ("struct lpm_v4", "__u32"),
    "unions": ("__u32", "struct with_union"), "bits": ("__u32", "struct with_bits"),
    "queue": (None, "__u32"), "stack": (None, "__u64"), "jmp": ("__u32", "__u32"),
    "cpus": ("__u32", "struct bpf_cpumap_val"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_every_maps_all_type_round_trips(maps_all_btf, name):
    kid, vid = _map_types(maps_all_btf)[name]
    for tid, want in zip((kid, vid), EXPECTED_TYPES[name]):
        if want is None:
            assert tid is None
            continue
        c = _codec.from_btf(maps_all_btf, tid)
        assert c.c_type == want

        @settings(max_examples=40, deadline=None)
        @given(st.data())
        def check(data):
            v = data.draw(S.codec_values(c))
            raw = c.encode(v)
            assert len(raw) == c.size
            back = c.decode(raw)
            assert back == S.canonical(c, v)
            assert c.encode(back) == raw
            dt = c.numpy_dtype()
            assert dt.itemsize == c.size
            if "V" not in dt.str and not any(  # unions and bitfields are opaque
                    "V" in dt.fields[n][0].str for n in (dt.names or ())):
                assert numpy_bytes(c, back) == raw
            junk = data.draw(st.binary(min_size=c.size, max_size=c.size))
            c.encode(c.decode(junk))
            with pytest.raises(CodecError):
                c.encode(data.draw(S.bad_codec_values(c)))
        check()


def test_clang_layouts(maps_all_btf):
    types = _map_types(maps_all_btf)
    fv = _codec.from_btf(maps_all_btf, types["flows"][1])
    assert fv.size == 64
    assert [(f.name, f.offset) for f in fv.fields] == [
        ("packets", 0), ("bytes", 8), ("comm", 16), ("ports", 32), ("pos", 48),
        ("state", 52), ("delta", 56)]
    v = fv.decode(fv.encode({"comm": "curl", "ports": (1, 2, 3, 4), "pos": {"y": 3},
                             "state": 7, "delta": -1}))
    assert v.comm == b"curl" + bytes(12) and v.ports == (1, 2, 3, 4)
    assert v.pos.y == 3 and v.state.name == "FLOW_CLOSED" and v.delta == -1
    assert isinstance(v.pos, tuple) and type(v.pos).__name__ == "inner"
    bits = _codec.from_btf(maps_all_btf, types["bits"][1])
    vals = dict(lo=9, mid=1000, neg=-7, rest=200, whole=12345)
    assert bits.encode(vals) == bytes(CBits(**vals))
    fk = _codec.from_btf(maps_all_btf, types["flows"][0])
    assert fk.size == 16 and fk.fields[-1].codec.c_type == "__u8[3]"
    assert fk.numpy_dtype().itemsize == 16
    assert fv.numpy_dtype().fields["state"][1] == 52


def test_raw_elf_datasecs_have_size_zero(maps_all_btf):
    """clang leaves DATASEC sizes 0 (libbpf fills them in at open): the codec
    refuses such a section instead of mis-sizing it."""
    sec = maps_all_btf.find(".data", _btf.Kind.DATASEC)
    assert sec.size == 0
    with pytest.raises(CodecError, match="past its end"):
        _codec.from_btf(maps_all_btf, sec.id)
