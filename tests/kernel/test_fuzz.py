"""Bad input against the real loader and real maps (needs CAP_BPF).

Objects: random bytes, truncated and corrupted copies of real objects go to
``pybpfnet.open()`` (and, when that succeeds, ``load()``) in a forked child,
so a crash in C is reported as a failure instead of killing the run. They
must be refused with a BpfError subclass (ObjectFormatError for a bad
file) carrying a message, never a signal, a hang, or IndexError/KeyError/
struct.error/UnicodeDecodeError/...

Maps: random keys and values, right and wrong in type, size and range,
against every map of tests/bpf/maps_all.bpf.c. A write either succeeds and
reads back equal, or raises CodecError/TypeError/ValueError/BpfError whose
message names the field, the C type or the map, and the map's whole content
is unchanged. ``update_batch`` with one bad element among good ones writes
nothing.
"""

import json
import os
import select
import signal
import struct
import tempfile
import time
import traceback
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import btfgen
import pybpfnet as bn
import strategies as S
from pybpfnet import BpfError, CodecError
from pybpfnet import _btf

#: PYBPFNET_FUZZ_EXAMPLES=5000 for a longer hunt than the suite's default
EXAMPLES = int(os.environ.get("PYBPFNET_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ isolation


def run_isolated(fn, timeout=20.0):
    """Run ``fn()`` in a forked child. Returns ("ok", result),
    ("exc", [class names of its MRO], message, traceback), ("signal", name)
    or ("hang",)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = ["ok", fn()]
            except BaseException as e:  # noqa: B902 - everything is reported
                out = ["exc", [c.__name__ for c in type(e).__mro__], str(e),
                       traceback.format_exc(limit=-4)]
            os.write(w, json.dumps(out, default=repr).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], _now() + timeout
    try:
        while True:
            left = deadline - _now()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ("hang",)
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("signal", signal.Signals(os.WTERMSIG(status)).name)
    return tuple(json.loads(b"".join(chunks)))


def _now():
    return time.monotonic()


def _save(data):
    """Keep a failing input for reproduction; hypothesis replays the minimal
    example last, so that is the one left in the file."""
    path = os.path.join(tempfile.gettempdir(), "pybpfnet-fuzz-failure.o")
    with open(path, "wb") as f:
        f.write(data)
    return path


def assert_refused_cleanly(outcome, data, allow_ok=True):
    """The child either succeeded (if allowed) or raised a BpfError with a
    message; anything else fails with the input saved for reproduction."""
    kind = outcome[0]
    if kind == "signal":
        pytest.fail("opening a corrupted object killed the interpreter with %s "
                    "(input saved at %s)" % (outcome[1], _save(data)))
    if kind == "hang":
        pytest.fail("opening a corrupted object hung (input saved at %s)" % _save(data))
    if kind == "ok":
        assert allow_ok, "accepted garbage: %r" % (outcome[1],)
        return
    _, mro, msg, tb = outcome
    assert "BpfError" in mro, "%s instead of a BpfError (input saved at %s):\n%s" % (
        mro[0], _save(data), tb)
    assert msg.strip(), "%s without a message" % mro[0]


def open_and_use(data, load=False):
    """What a caller does with an object: open it, look at every map,
    program and global, and optionally load it."""
    spec = bn.open(data)
    repr(spec)
    for m in spec.maps.values():
        repr(m)
        for c in (m.key_type, m.value_type):
            if c is not None and c.size <= 1 << 16:
                c.decode(c.encode(c.zero()))
    for p in spec.programs.values():
        repr(p)
    for name in spec.globals:
        spec.globals[name] = spec.globals[name]
    if load:
        with spec.load() as obj:
            for name in obj.maps:
                repr(obj.maps[name])
            for name in obj.globals:
                obj.globals[name]
    return "opened"


# ------------------------------------------------------------------ objects

class Objects(dict):
    """name -> bytes of an object (short repr for hypothesis reports)."""

    def __repr__(self):
        return "<objects %s>" % ", ".join(sorted(self))


@pytest.fixture(scope="module")
def object_bytes(test_objects):
    out = Objects((name, open(path, "rb").read()) for name, path in test_objects.items())
    for name in bn.bundled():
        path = os.path.join(os.path.dirname(bn.__file__), "bpf", name + ".bpf.o")
        out["bundled:" + name] = open(path, "rb").read()
    return out


def _mutate(data, raw):
    raw = bytearray(raw)
    secs = btfgen.elf_sections(bytes(raw))
    # half of the inputs are mutated inside one section (BTF, maps, symbols,
    # relocations, code...), the rest anywhere
    names = sorted(n for n, (off, size) in secs.items()
                   if n and size and off + size <= len(raw))
    where = data.draw(st.one_of(st.none(), st.sampled_from(names)), "section")
    lo, hi = (0, len(raw)) if where is None else (secs[where][0], sum(secs[where]))
    hi = min(hi, len(raw))
    for _ in range(data.draw(st.integers(1, 4), "mutations")):
        pos = data.draw(st.integers(lo, hi - 1), "pos")
        how = data.draw(st.sampled_from(["flip", "byte", "word"]), "how")
        if how == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7), "bit")
        elif how == "byte":
            raw[pos] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]), "byte")
        else:
            pos -= pos % 4
            word = data.draw(st.sampled_from([0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF,
                                              0xFFFFFFFF]), "word")
            raw[pos:pos + 4] = struct.pack("<I", word)[:len(raw) - pos]
    return bytes(raw)


@FUZZ
@given(data=st.data())
def test_corrupted_objects_are_refused_or_work(object_bytes, data):
    name = data.draw(st.sampled_from(sorted(object_bytes)), "object")
    bad = _mutate(data, object_bytes[name])
    assert_refused_cleanly(run_isolated(lambda: open_and_use(bad, load=True)), bad)


@FUZZ
@given(data=st.data())
def test_truncated_objects_are_refused(object_bytes, data):
    name = data.draw(st.sampled_from(sorted(object_bytes)), "object")
    raw = object_bytes[name]
    bad = raw[:data.draw(st.integers(0, len(raw) - 1), "length")]
    outcome = run_isolated(lambda: open_and_use(bad))
    assert_refused_cleanly(outcome, bad, allow_ok=False)
    assert "ObjectFormatError" in outcome[1], outcome


@FUZZ
@given(data=st.data())
def test_random_bytes_are_refused(object_bytes, data):
    raw = object_bytes["maps_all"]
    shape = data.draw(st.sampled_from(["random", "elf header", "real sections"]), "shape")
    tail = data.draw(st.binary(max_size=2048), "bytes")
    if shape == "random":
        bad = tail
    elif shape == "elf header":
        bad = raw[:64] + tail
    else:  # the real header and section table, random contents
        shoff, = struct.unpack_from("<Q", raw, 0x28)
        body = (tail * (shoff // max(len(tail), 1) + 1))[:shoff - 64] if tail else \
            bytes(shoff - 64)
        bad = raw[:64] + body + raw[shoff:]
    outcome = run_isolated(lambda: open_and_use(bad))
    # real section headers over zeroed contents describe an empty object
    assert_refused_cleanly(outcome, bad, allow_ok=shape == "real sections")
    if outcome[0] == "exc" and shape != "real sections":
        assert "ObjectFormatError" in outcome[1], outcome


def test_not_an_object_at_all():
    for bad in (b"", b"\x7fELF", b"\x7fELF" + bytes(100), b"MZ" + bytes(200)):
        with pytest.raises(bn.ObjectFormatError, match="not an ELF file|not a valid BPF"):
            bn.open(bad)


# -- corruptions the fuzz tests above found, as fixed regressions ---------------

def _patch_btf(data, fn):
    off, size = btfgen.elf_sections(data)[".BTF"]
    raw = bytearray(data[off:off + size])
    btf = _btf.parse(bytes(raw))
    fn(btf, btfgen.type_offsets(raw), raw)
    out = bytearray(data)
    out[off:off + size] = raw
    return bytes(out)


def _map_def(btf, map_name):
    sec = btf.find(".maps", _btf.Kind.DATASEC)
    var = next(btf[m.type_id] for m in sec.members if m.name == map_name)
    return btf.resolve(var.type_id)


def _set_u32(raw, pos, value):
    struct.pack_into("<I", raw, pos, value)


def dangling_map_member(btf, offs, raw):
    """The type id of a map definition's 'max_entries' member points past
    the last type (libbpf 1.1 dereferences it unchecked)."""
    defn = _map_def(btf, "hash_int")
    i = [m.name for m in defn.members].index("max_entries")
    _set_u32(raw, offs[defn.id] + 12 + 12 * i + 4, 0x40000 + defn.members[i].type_id)


def unknown_map_type(btf, offs, raw):
    """__uint(type, 4106): a map type this library does not know."""
    defn = _map_def(btf, "hash_int")
    arr = btf.resolve(next(m for m in defn.members if m.name == "type").type_id).type_id
    _set_u32(raw, offs[arr] + 12 + 8, 4106)


def global_past_its_section(btf, offs, raw):
    """.rodata's first variable placed at byte 4096 of a 12-byte section."""
    sec = btf.find(".rodata", _btf.Kind.DATASEC)
    _set_u32(raw, offs[sec.id] + 12 + 4, 4096)


def huge_global_array(btf, offs, raw):
    """cfg_name declared as char[2**26] in a 12-byte section."""
    var = btf.find("cfg_name", _btf.Kind.VAR)
    t = var.type_id
    while btf[t].kind != _btf.Kind.ARRAY:
        t = btf[t].type_id
    _set_u32(raw, offs[t] + 12 + 8, 1 << 26)


def non_utf8_program_name(data):
    off, size = btfgen.elf_sections(data)[".strtab"]
    pos = data.index(b"\0emit\0", off, off + size) + 1
    return data[:pos] + b"\xf4" + data[pos + 1:]


CORRUPTIONS = {
    "dangling_map_member": lambda d: _patch_btf(d, dangling_map_member),
    "unknown_map_type": lambda d: _patch_btf(d, unknown_map_type),
    "global_past_its_section": lambda d: _patch_btf(d, global_past_its_section),
    "huge_global_array": lambda d: _patch_btf(d, huge_global_array),
    "non_utf8_program_name": non_utf8_program_name,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_known_corruptions(object_bytes, corruption):
    bad = CORRUPTIONS[corruption](object_bytes["maps_all"])
    assert bad != object_bytes["maps_all"]
    assert_refused_cleanly(run_isolated(lambda: open_and_use(bad, load=True)), bad)


# ------------------------------------------------------------------ maps

MAPS = ["hash_int", "flows", "arr", "pc_hash", "pc_arr", "lru", "lru_pc", "lpm",
        "unions", "bits"]


def content(m):
    return dict(m.items())


def canonical_value(m, value):
    vc = m.value_type
    if m.percpu:
        if isinstance(value, list):
            return [S.canonical(vc, v) for v in value]
        return [S.canonical(vc, value)] * bn.possible_cpus()
    return S.canonical(vc, value)


def good_keys(m):
    kc = m.key_type
    if m.type in (bn.MapType.ARRAY, bn.MapType.PERCPU_ARRAY):
        return st.integers(0, m.max_entries - 1)
    if m.type == bn.MapType.LPM_TRIE:
        return st.builds(lambda n, a: kc.py_type(n, a), st.integers(0, 32),
                         st.binary(min_size=4, max_size=4))
    return S.codec_values(kc)


def good_values(m):
    vals = S.codec_values(m.value_type)
    if m.percpu:
        # a list is the per-CPU list, so a single struct value is not given
        # as a list
        n = bn.possible_cpus()
        one = vals.filter(lambda v: not isinstance(v, list))
        return one | st.lists(vals, min_size=n, max_size=n)
    return vals


def bad_values(m):
    bad = S.bad_codec_values(m.value_type)
    if m.percpu:
        n = bn.possible_cpus()
        good = S.codec_values(m.value_type)
        return bad | st.integers(0, n + 2).filter(lambda k: k != n).flatmap(
            lambda k: st.lists(good, min_size=k, max_size=k)) | \
            st.lists(bad, min_size=n, max_size=n)
    return bad


def pairs(m):
    """(key, value) pairs: good, or wrong in key, value or both."""
    gk, gv = good_keys(m), good_values(m)
    bk, bv = S.bad_codec_values(m.key_type), bad_values(m)
    return st.one_of(st.tuples(gk, gv), st.tuples(gk, gv),
                     st.tuples(bk, gv), st.tuples(gk, bv),
                     st.tuples(S.junk(), S.junk()), st.tuples(gk, S.junk()),
                     st.tuples(S.codec_values(m.key_type), gv))


def encodes(m, item):
    """True if ``item`` is a (key, value) pair the codecs accept (it may
    still be refused by the kernel)."""
    try:
        k, v = item
        m._encode_key(k)
        m._venc(v)
    except (CodecError, TypeError, ValueError):
        return False
    return True


def check_message(m, e):
    msg = str(e)
    assert msg.strip()
    if isinstance(e, CodecError):
        names = [m.key_type.c_type, m.value_type.c_type, "C type", "per-CPU", "field",
                 "LPM key"]
        assert any(n in msg for n in names), msg
    elif isinstance(e, BpfError):
        assert repr(m.name) in msg, msg


def _make_room(m):
    if m.type not in (bn.MapType.ARRAY, bn.MapType.PERCPU_ARRAY) and \
            len(m) >= m.max_entries - 2:
        m.clear()


@pytest.mark.parametrize("name", MAPS)
def test_random_writes_succeed_exactly_or_change_nothing(maps_all, name):
    m = maps_all.maps[name]

    @FUZZ
    @given(pair=pairs(m))
    def run(pair):
        key, value = pair
        _make_room(m)
        before = content(m)
        try:
            m[key] = value
        except (CodecError, TypeError, ValueError, BpfError) as e:
            check_message(m, e)
            assert content(m) == before, "a rejected write changed map %r" % name
            return
        want = canonical_value(m, value)
        assert m[key] == want
        assert m.get(key) == want and key in m
        assert content(m)[S.canonical(m.key_type, key)] == want
    run()


@pytest.mark.parametrize("name", MAPS)
def test_random_keys_read_and_delete(maps_all, name):
    m = maps_all.maps[name]
    kc = m.key_type
    for i in range(3):
        raw = (8 * i).to_bytes(4, "little") + b"\x0a\0\0\0" if name == "lpm" else \
            bytes([i]) + bytes(kc.size - 1)
        m[kc.decode(raw)] = m.value_type.zero()
    keys = st.one_of(good_keys(m), S.bad_codec_values(kc), S.junk())

    @FUZZ
    @given(key=keys)
    def run(key):
        before = content(m)
        assert isinstance(key in m, bool)
        try:
            got = m.get(key, "missing")
        except (CodecError, TypeError, ValueError) as e:
            check_message(m, e)
            got = None
        canon_key = None
        try:
            kc.encode(key)
        except CodecError:
            pass
        else:
            canon_key = S.canonical(kc, key)
        if canon_key in before and m.type != bn.MapType.LPM_TRIE:
            assert got == before[canon_key]
        try:
            deleted = m.delete(key)
        except (CodecError, TypeError, ValueError, BpfError) as e:
            check_message(m, e)
            assert content(m) == before
            return
        after = content(m)
        if deleted:
            assert len(after) == len(before) - 1
        else:
            assert after == before
    run()


def test_maps_without_btf_take_bytes_of_the_exact_size():
    with bn.Map.create("hash", key_size=6, value_size=3, max_entries=8) as m:
        @FUZZ
        @given(key=st.binary(max_size=10), value=st.one_of(st.binary(max_size=6), S.junk()))
        def run(key, value):
            before = content(m)
            try:
                m[key] = value
            except CodecError as e:
                assert "u8[6]" in str(e) or "u8[3]" in str(e), str(e)
                assert content(m) == before
                return
            want = value.encode() if isinstance(value, str) else bytes(value)
            assert len(key) == 6 and m[key] == want and len(want) == 3
            m.clear()
        run()


@pytest.mark.parametrize("name", ["queue", "stack"])
def test_queue_and_stack_values(maps_all, name):
    m = maps_all.maps[name]
    c = m.value_type

    @FUZZ
    @given(values=st.lists(st.one_of(S.codec_values(c), S.bad_codec_values(c), S.junk()),
                           max_size=8))
    def run(values):
        m.drain()
        pushed = []
        for v in values:
            try:
                m.push(v)
            except CodecError as e:
                assert c.c_type in str(e), str(e)
                continue
            except BpfError as e:  # full
                assert "full" in str(e), str(e)
                continue
            pushed.append(S.canonical(c, v))
        want = pushed if name == "queue" else pushed[::-1]
        assert m.drain() == want[:m.max_entries]
    run()


@pytest.mark.parametrize("name", ["hash_int", "flows", "arr", "pc_hash", "pc_arr",
                                  "unions", "bits", "lpm"])
def test_update_batch_with_one_bad_element_writes_nothing(maps_all, name):
    m = maps_all.maps[name]
    good = st.tuples(good_keys(m), good_values(m))
    bad = st.one_of(st.tuples(S.bad_codec_values(m.key_type), good_values(m)),
                    st.tuples(good_keys(m), bad_values(m)),
                    st.tuples(S.junk(), S.junk()), S.junk()).filter(
                        lambda item: not encodes(m, item))

    @FUZZ
    @given(goods=st.lists(good, min_size=1, max_size=6), one_bad=bad,
           where=st.integers(0, 6))
    def run(goods, one_bad, where):
        m.clear() if m.type not in (bn.MapType.ARRAY, bn.MapType.PERCPU_ARRAY) else None
        before = content(m)
        items = list(goods)
        items.insert(min(where, len(items)), one_bad)
        with pytest.raises((CodecError, TypeError, ValueError, BpfError)) as ei:
            m.update_batch(items)
        assert str(ei.value).strip()
        assert content(m) == before, "update_batch wrote part of a rejected batch"
        # the good ones alone go in, and read back
        if m.type != bn.MapType.LPM_TRIE:
            m.update_batch(goods)
            want = {}
            for k, v in goods:
                want[S.canonical(m.key_type, k)] = canonical_value(m, v)
            got = m.lookup_batch()
            for k, v in want.items():
                assert got[k] == v
    run()


@pytest.mark.parametrize("name, bad_pair", [
    ("arr", (64, {})),                          # index past max_entries
    ("pc_arr", (2 ** 31, {})),
    ("lpm", ((33, b"\x0a\0\0\0"), 1)),          # prefix longer than the address
])
def test_update_batch_refused_by_the_kernel_writes_nothing(maps_all, name, bad_pair):
    """The kernel refuses one element after the earlier ones were written:
    the batch must still leave the map as it was."""
    m = maps_all.maps[name]
    if m.type == bn.MapType.LPM_TRIE:
        goods = [((8, b"\x0a\0\0\0"), 1), ((16, b"\x0a\x01\0\0"), 2)]
    else:
        goods = [(0, {"x": 1} if name == "pc_arr" else {"packets": 1}), (1, {})]
    before = content(m)
    with pytest.raises(BpfError) as ei:
        m.update_batch(goods + [bad_pair])
    assert repr(name) in str(ei.value) or "batch" in str(ei.value)
    assert content(m) == before, "update_batch wrote part of a batch the kernel refused"


def test_model_of_a_hash_map(maps_all):
    """Random writes, deletes and batch updates against a dict model of
    the map; the map always holds what the model says."""
    m = maps_all.maps["flows"]
    kc, vc = m.key_type, m.value_type
    ops = st.one_of(
        st.tuples(st.just("set"), S.codec_values(kc), S.codec_values(vc)),
        st.tuples(st.just("set"), S.codec_values(kc), S.bad_codec_values(vc)),
        st.tuples(st.just("del"), S.codec_values(kc), st.none()),
        st.tuples(st.just("batch"), st.lists(st.tuples(S.codec_values(kc),
                                                       S.codec_values(vc)), max_size=4),
                  st.none()))

    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.function_scoped_fixture])
    @given(st.lists(ops, max_size=12))
    def run(program):
        m.clear()
        model = {}
        for op, a, b in program:
            if op == "set":
                try:
                    m[a] = b
                except CodecError:
                    pass
                else:
                    model[S.canonical(kc, a)] = S.canonical(vc, b)
            elif op == "del":
                assert m.delete(a) == (model.pop(S.canonical(kc, a), None) is not None)
            else:
                m.update_batch(a)
                for k, v in a:
                    model[S.canonical(kc, k)] = S.canonical(vc, v)
            assert content(m) == model
            assert m.lookup_batch() == model and len(m) == len(model)
    run()


# ------------------------------------------------------------------ names and globals

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)


@settings(max_examples=50, deadline=None)
@given(name=names)
def test_unknown_names_raise_key_error_listing_the_choices(test_objects, name):
    spec = bn.open(test_objects["maps_all"])
    for table, what, example in ((spec.maps, "map", "flows"),
                                 (spec.programs, "program", "emit"),
                                 (spec.globals, "global variable", "cfg_port")):
        if name in table:
            continue
        with pytest.raises(KeyError) as ei:
            table[name]
        msg = ei.value.args[0]
        assert "no %s named %r" % (what, name) in msg and example in msg, msg
    if name not in spec.globals:
        with pytest.raises(KeyError, match="no global variable named"):
            spec.globals[name] = 1


def test_unknown_names_on_a_loaded_object(maps_all):
    for table, what in ((maps_all.maps, "map"), (maps_all.programs, "program"),
                        (maps_all.globals, "global variable")):
        with pytest.raises(KeyError, match="no %s named 'nope'; there are: " % what):
            table["nope"]


@pytest.fixture
def spec(test_objects):
    return bn.open(test_objects["maps_all"])


def test_random_globals_on_a_spec(spec):
    g = spec.globals

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def run(data):
        name = data.draw(st.sampled_from(sorted(g)), "name")
        c = g.type_of(name)
        value = data.draw(st.one_of(S.codec_values(c), S.bad_codec_values(c), S.junk()),
                          "value")
        before = {n: g[n] for n in g}
        try:
            g[name] = value
        except CodecError as e:
            assert c.c_type in str(e) or "C type" in str(e), str(e)
            assert {n: g[n] for n in g} == before
            return
        assert g[name] == S.canonical(c, value)
        assert {n: g[n] for n in g if n != name} == \
            {n: v for n, v in before.items() if n != name}
    run()


def test_live_globals_refuse_bad_values_and_rodata(maps_all):
    g = maps_all.globals
    before = {n: g[n] for n in g}
    for name, bad in (("counter", -1), ("point", {"z": 1}), ("signed_bss", 2 ** 15),
                      ("zeroed", "x"), ("last_event", {"tag": b"123456789"})):
        with pytest.raises(CodecError):
            g[name] = bad
    with pytest.raises(BpfError, match="read-only"):
        g["cfg_port"] = 1
    assert {n: g[n] for n in g} == before
