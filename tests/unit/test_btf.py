"""The pure-Python BTF parser: every kind, blobs written by tests/btfgen.py
and by clang, and malformed input (random bytes, truncation, bit flips,
dangling ids, cycles) refused with ObjectFormatError, never IndexError,
KeyError, struct.error or RecursionError."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import btfgen
from pybpfnet import CodecError, ObjectFormatError
from pybpfnet import _btf, _codec
from pybpfnet._btf import Kind

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def every_kind(endian="<"):
    b = btfgen.BtfBuilder(endian)
    ids = {}
    ids["u32"] = b.int("unsigned int", 4)
    ids["s8"] = b.int("signed char", 1, signed=True, char=True)
    ids["bool"] = b.int("_Bool", 1, bool=True)
    ids["bf"] = b.int("u3", 1, bits=3, offset=2)
    ids["ptr"] = b.ptr(ids["s8"])
    ids["arr"] = b.array(ids["s8"], 16, ids["u32"])
    ids["fwd"] = b.fwd("opaque")
    ids["fwd_u"] = b.fwd("opaque_u", union=True)
    ids["td"] = b.typedef("u32_t", ids["u32"])
    ids["vol"] = b.volatile(ids["td"])
    ids["const"] = b.const(ids["vol"])
    ids["restrict"] = b.restrict(ids["ptr"])
    ids["tag"] = b.type_tag("user", ids["u32"])
    ids["struct"] = b.struct("pt", 24, [("x", ids["u32"], 0), ("name", ids["arr"], 32),
                                        ("p", ids["ptr"], 128)])
    ids["bits"] = b.struct("bits", 4, [("a", ids["u32"], 0, 3), ("b", ids["u32"], 3, 29)])
    ids["union"] = b.union("u", 4, [("i", ids["u32"], 0), ("c", ids["s8"], 0)])
    ids["enum"] = b.enum("e", [("A", 1), ("B", 0xFFFFFFFF)])
    ids["senum"] = b.enum("se", [("NEG", -1)], signed=True)
    ids["enum64"] = b.enum64("e64", [("BIG", 1 << 63), ("ONE", 1)])
    ids["senum64"] = b.enum64("se64", [("MIN", -(1 << 63))], signed=True)
    ids["float"] = b.float("double", 8)
    ids["proto"] = b.func_proto(ids["u32"], [("a", ids["s8"]), ("", 0)])
    ids["func"] = b.func("f", ids["proto"], linkage=1)
    ids["var"] = b.var("counter", ids["u32"], linkage=1)
    ids["var2"] = b.var("point", ids["struct"])
    ids["datasec"] = b.datasec(".data", 32, [(ids["var"], 0, 4), (ids["var2"], 8, 24)])
    ids["decl_tag"] = b.decl_tag("tagged", ids["struct"], 0)
    return b.build(), ids


@pytest.mark.parametrize("endian", ["<", ">"])
def test_every_kind_parses(endian):
    raw, ids = every_kind(endian)
    btf = _btf.parse(raw)
    assert len(btf) == len(ids) + 1 and btf[0].name == "void"
    t = btf[ids["u32"]]
    assert (t.kind, t.name, t.size, t.bits, t.signed) == (Kind.INT, "unsigned int", 4, 32, False)
    t = btf[ids["s8"]]
    assert t.signed and t.is_char and not t.is_bool
    assert btf[ids["bool"]].is_bool
    t = btf[ids["bf"]]
    assert (t.bits, t.bit_offset) == (3, 2)
    assert btf[ids["ptr"]].type_id == ids["s8"]
    t = btf[ids["arr"]]
    assert (t.kind, t.elem_id, t.nelems) == (Kind.ARRAY, ids["s8"], 16)
    assert btf[ids["fwd_u"]].kind_flag and btf[ids["fwd"]].kind == Kind.FWD
    t = btf[ids["struct"]]
    assert [(m.name, m.type_id, m.bit_offset, m.bit_size) for m in t.members] == [
        ("x", ids["u32"], 0, 0), ("name", ids["arr"], 32, 0), ("p", ids["ptr"], 128, 0)]
    t = btf[ids["bits"]]
    assert t.kind_flag and [(m.bit_offset, m.bit_size) for m in t.members] == [(0, 3), (3, 29)]
    assert btf[ids["union"]].kind == Kind.UNION
    assert [(m.name, m.value) for m in btf[ids["enum"]].members] == [("A", 1), ("B", 2 ** 32 - 1)]
    assert btf[ids["senum"]].signed and btf[ids["senum"]].members[0].value == -1
    assert btf[ids["enum64"]].members[0].value == 1 << 63
    assert btf[ids["senum64"]].members[0].value == -(1 << 63)
    assert btf[ids["float"]].size == 8
    proto = btf[ids["proto"]]
    assert proto.type_id == ids["u32"] and [m.name for m in proto.members] == ["a", ""]
    assert btf[ids["func"]].type_id == ids["proto"]
    assert btf[ids["var"]].linkage == 1
    sec = btf[ids["datasec"]]
    assert [(m.name, m.type_id, m.bit_offset // 8, m.size) for m in sec.members] == [
        ("counter", ids["var"], 0, 4), ("point", ids["var2"], 8, 24)]
    assert btf[ids["decl_tag"]].type_id == ids["struct"]


def test_lookups_sizes_and_c_names():
    raw, ids = every_kind()
    btf = _btf.parse(raw)
    assert btf.find("pt").id == ids["struct"]
    assert btf.find("pt", Kind.UNION) is None and btf.find("nope") is None
    assert btf.resolve(ids["const"]).id == ids["u32"]
    assert btf.resolve(ids["tag"]).id == ids["u32"]
    assert btf.sizeof(ids["const"]) == 4 and btf.sizeof(ids["arr"]) == 16
    assert btf.sizeof(ids["ptr"]) == 8 and btf.sizeof(ids["var2"]) == 24
    assert btf.sizeof(ids["datasec"]) == 32
    with pytest.raises(ObjectFormatError, match="has no size"):
        btf.sizeof(ids["fwd"])
    assert btf.c_name(ids["const"]) == "const volatile u32_t"
    assert btf.c_name(ids["arr"]) == "signed char[16]"
    assert btf.c_name(ids["restrict"]) == "signed char *"
    assert btf.c_name(ids["struct"]) == "struct pt"
    assert btf.c_name(ids["union"]) == "union u"
    assert btf.c_name(ids["enum64"]) == "enum e64"
    assert btf.c_name(0) == "void"
    with pytest.raises(KeyError, match=r"BTF has no type id 999 \(it has %d types\)" % len(ids)):
        btf[999]
    # codecs for every sized kind; the rest say why not
    for name in ("u32", "s8", "bool", "ptr", "arr", "td", "const", "tag", "struct", "bits",
                 "union", "enum", "senum", "enum64", "senum64", "float", "var", "datasec"):
        c = _codec.from_btf(btf, ids[name])
        assert c.decode(bytes(c.size)) is not None
    for name in ("fwd", "proto", "func"):
        with pytest.raises(CodecError, match="no codec for BTF"):
            _codec.from_btf(btf, ids[name])


def test_longer_header_is_accepted():
    b = btfgen.BtfBuilder()
    b.int("int", 4, signed=True)
    btf = _btf.parse(b.build(hdr_len=32))
    assert btf.find("int").size == 4


# ------------------------------------------------------------------ malformed blobs

def _blob(build=None, **kw):
    b = btfgen.BtfBuilder()
    if build:
        build(b)
    return b.build(**kw)


def _patch_hdr(raw, **fields):
    names = ("magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off",
             "str_len")
    vals = dict(zip(names, struct.unpack_from("<HBBIIIII", raw)))
    vals.update(fields)
    return struct.pack("<HBBIIIII", *(vals[n] for n in names)) + raw[24:]


def _u32(b):
    return b.int("u32", 4)


MALFORMED = [
    ("empty", b"", r"blob of 0 bytes is shorter than its header"),
    ("short", b"\x9f\xeb\x01\x00", r"shorter than its header"),
    ("magic", b"\0" * 24, r"bad magic 0x0000"),
    ("hdr_len", _patch_hdr(_blob(_u32), hdr_len=8), r"header length 8 is shorter"),
    ("type_len", _patch_hdr(_blob(_u32), type_len=1000), r"section offsets exceed the blob"),
    ("str_off", _patch_hdr(_blob(_u32), str_off=2 ** 32 - 1), r"offsets exceed the blob"),
    ("kind", _blob(lambda b: b.raw("x", 25, 0, 4)), r"unknown type kind 25 at type id 1"),
    ("kind0", _blob(lambda b: b.raw("x", 0, 0, 4)), r"unknown type kind 0"),
    ("name", _blob(lambda b: b.raw(10 ** 6, btfgen.INT, 0, 4, b"\0" * 4)),
     r"string offset 1000000 out of range"),
    ("vlen", _blob(lambda b: b.raw("s", btfgen.STRUCT, 500, 4)), r"type section truncated"),
    ("int_trunc", _blob(lambda b: b.raw("i", btfgen.INT, 0, 4)), r"truncated at type id 1"),
    ("member", _blob(lambda b: b.struct("s", 4, [("a", 7, 0)])),
     r"type id 1 \(struct 's'\) refers to type id 7, but the blob has 1 types"),
    ("elem", _blob(lambda b: b.array(9, 2, 9)), r"refers to type id 9"),
    ("ptr", _blob(lambda b: b.ptr(2 ** 31)), r"refers to type id 2147483648"),
    ("typedef", _blob(lambda b: b.typedef("t", 5)), r"\(typedef 't'\) refers to type id 5"),
    ("var", _blob(lambda b: b.var("v", 3)), r"refers to type id 3"),
    ("datasec", _blob(lambda b: b.datasec(".data", 4, [(4, 0, 4)])), r"refers to type id 4"),
    ("proto", _blob(lambda b: b.func_proto(0, [("a", 8)])), r"refers to type id 8"),
]


@pytest.mark.parametrize("raw, match", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_blobs_are_refused(raw, match):
    with pytest.raises(ObjectFormatError, match=match) as ei:
        _btf.parse(raw)
    assert isinstance(ei.value, ValueError) and ei.value.errno == 22


def test_cycles_are_reported_not_recursed():
    b = btfgen.BtfBuilder()
    t1 = b.typedef("a", 2)
    b.typedef("b", t1)
    p1 = b.ptr(4)
    b.ptr(p1)
    a1 = b.array(6, 2, 6)
    b.array(a1, 2, a1)
    s1 = b.struct("loop", 8, [("next", 7, 0)])
    btf = _btf.parse(b.build())
    with pytest.raises(ObjectFormatError, match="qualifier chain too long"):
        btf.resolve(t1)
    with pytest.raises(ObjectFormatError):
        _codec.from_btf(btf, t1)
    assert "..." in btf.c_name(p1)
    assert "..." in btf.c_name(a1)
    with pytest.raises(ObjectFormatError, match="contains itself"):
        btf.sizeof(a1)
    with pytest.raises((CodecError, ObjectFormatError)):
        _codec.from_btf(btf, a1)
    with pytest.raises(CodecError, match=r"struct loop \(id 7\) contains itself"):
        _codec.from_btf(btf, s1)
    # the failed build is not cached as a half-made codec
    with pytest.raises(CodecError, match="contains itself"):
        _codec.from_btf(btf, s1)


# ------------------------------------------------------------------ clang's BTF

@pytest.fixture(scope="module")
def clang_blobs(test_objects):
    return {name: btfgen.elf_section(open(path, "rb").read(), ".BTF")
            for name, path in test_objects.items()}


def test_clang_blobs_parse(clang_blobs):
    btf = _btf.parse(clang_blobs["maps_all"])
    fv = btf.find("flow_val", Kind.STRUCT)
    assert fv.size == 64
    assert [(m.name, m.bit_offset) for m in fv.members] == [
        ("packets", 0), ("bytes", 64), ("comm", 128), ("ports", 256), ("pos", 384),
        ("state", 416), ("delta", 448)]
    assert btf.c_name(fv.members[3].type_id) == "__u32[4]"
    wb = btf.find("with_bits", Kind.STRUCT)
    assert [(m.name, m.bit_offset, m.bit_size) for m in wb.members] == [
        ("lo", 0, 4), ("mid", 4, 12), ("neg", 16, 8), ("rest", 24, 8), ("whole", 64, 0)]
    fs = btf.find("flow_state", Kind.ENUM)
    assert [(m.name, m.value) for m in fs.members] == [
        ("FLOW_NEW", 0), ("FLOW_EST", 1), ("FLOW_CLOSED", 7)]
    rodata = btf.find(".rodata", Kind.DATASEC)
    assert sorted(m.name for m in rodata.members) == ["cfg_name", "cfg_port"]
    assert btf.find("emit", Kind.FUNC) is not None
    for name, raw in clang_blobs.items():
        btf = _btf.parse(raw)
        for t in btf.types[1:]:
            btf.c_name(t.id)
            try:
                c = _codec.from_btf(btf, t.id)
            except CodecError:
                continue
            c.decode(bytes(c.size))


# ------------------------------------------------------------------ fuzz

def _exercise(btf):
    """Everything a caller does with a parsed blob: only ObjectFormatError
    or CodecError may come out."""
    for t in btf.types[1:]:
        for op in (btf.c_name, btf.resolve, btf.sizeof):
            try:
                op(t.id)
            except ObjectFormatError:
                pass
        try:
            c = _codec.from_btf(btf, t.id)
        except (CodecError, ObjectFormatError):
            continue
        if c.size <= 1 << 16:
            raw = bytes(range(256)) * (c.size // 256 + 1)
            v = c.decode(raw[:c.size])
            c.decode(bytes(c.size))
            try:
                c.encode(v)
            except CodecError:
                pass  # e.g. a union whose members overlap oddly


def _parse_or_refuse(raw):
    try:
        btf = _btf.parse(raw)
    except ObjectFormatError as e:
        assert str(e)
        return None
    _exercise(btf)
    return btf


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(raw):
    _parse_or_refuse(raw)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_type_sections_behind_a_valid_header(body):
    raw = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), 0) + body
    _parse_or_refuse(raw)


@SETTINGS
@given(st.data())
def test_truncated_blobs(data):
    raw, _ = every_kind()
    n = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ObjectFormatError):
        _btf.parse(raw[:n])


def _mutate(data, raw):
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), "n")):
        pos = data.draw(st.integers(0, len(raw) - 1), "pos")
        how = data.draw(st.sampled_from(["flip", "byte", "word"]), "how")
        if how == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "byte":
            raw[pos] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        else:
            pos -= pos % 4
            raw[pos:pos + 4] = struct.pack("<I", data.draw(st.sampled_from(
                [0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000])))[:len(raw) - pos]
    return bytes(raw)


@SETTINGS
@given(st.data())
def test_corrupted_builder_blobs(data):
    raw, _ = every_kind()
    _parse_or_refuse(_mutate(data, raw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_clang_blobs(clang_blobs, data):
    raw = clang_blobs[data.draw(st.sampled_from(sorted(clang_blobs)), "object")]
    _parse_or_refuse(_mutate(data, raw))
