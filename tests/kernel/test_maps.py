"""Typed maps against the real kernel: every map class, batch paths, numpy,
errors that leave the map unchanged."""

import errno
import os
import threading
import uuid

import pytest

import pybpfnet as bn

ncpu = None


@pytest.fixture(autouse=True)
def _ncpu():
    global ncpu
    ncpu = bn.possible_cpus()


def test_hash_int_mapping_protocol(maps_all):
    m = maps_all.maps["hash_int"]
    assert isinstance(m, bn.HashMap)
    assert len(m) == 0 and m.get(1) is None and 1 not in m
    m[1] = 10
    m[2] = 20
    assert m[1] == 10 and 2 in m and len(m) == 2
    assert sorted(m) == [1, 2] and sorted(m.keys()) == [1, 2]
    assert sorted(m.items()) == [(1, 10), (2, 20)]
    assert sorted(m.values()) == [10, 20]
    del m[1]
    assert 1 not in m
    with pytest.raises(KeyError):
        m[1]
    with pytest.raises(bn.MapKeyError, match="key 1 not found"):
        del m[1]
    assert m.get(1, "d") == "d"
    assert m.pop(2) == 20 and len(m) == 0
    m.update({5: 50, 6: 60})
    m.clear()
    assert len(m) == 0


def test_update_flags(maps_all):
    m = maps_all.maps["hash_int"]
    m.insert(1, 1)
    with pytest.raises(bn.BpfError, match="already exists") as ei:
        m.insert(1, 2)
    assert ei.value.errno == errno.EEXIST
    assert m[1] == 1
    with pytest.raises(KeyError):
        m.set(2, 2, bn.UpdateFlags.EXIST)
    m.set(1, 3, bn.UpdateFlags.EXIST)
    assert m[1] == 3


def test_int_range_errors_leave_map_unchanged(maps_all):
    m = maps_all.maps["hash_int"]
    m[1] = 1
    for key, value, match in [(-1, 1, "__u32"), (1 << 32, 1, "__u32"), (1, -1, "__u64"),
                              (1, 1 << 64, "__u64"), ("a", 1, "an int"), (1, 1.5, "an int")]:
        with pytest.raises((bn.CodecError, TypeError, OverflowError), match=match):
            m[key] = value
    assert m.items() == [(1, 1)]


def test_struct_key_and_value(maps_all):
    m = maps_all.maps["flows"]
    K, V = m.key_type, m.value_type
    k = K(saddr=0x0100000a, daddr=0x0200000a, sport=1234, dport=80, proto=6)
    m[k] = V(packets=1, bytes=100, comm=b"curl", ports=(1, 2, 3, 4), pos={"x": 1, "y": 2})
    v = m[k]
    assert v.packets == 1 and v.comm.rstrip(b"\0") == b"curl"
    assert v.ports == (1, 2, 3, 4) and v.pos.x == 1 and v.pos.y == 2
    assert v.state == 0 and v.state.name == "FLOW_NEW"
    # dict and tuple keys address the same element
    assert m[dict(saddr=0x0100000a, daddr=0x0200000a, sport=1234, dport=80, proto=6)] == v
    assert m[(0x0100000a, 0x0200000a, 1234, 80, 6, b"")] == v
    # values are hashable namedtuples
    assert {k: v}[k] == v
    m[k] = v._replace(state=1, delta=-5)
    assert m[k].state.name == "FLOW_EST" and m[k].delta == -5


@pytest.mark.parametrize("bad, match", [
    ({"packets": -1}, "packets.*__u64"),
    ({"comm": b"x" * 17}, "comm.*at most 16 bytes"),
    ({"ports": (1, 2)}, "ports.*exactly 4"),
    ({"pos": {"x": 70000}}, "pos.x.*__u16"),
    ({"nope": 1}, "no field 'nope'"),
    (5, "expected flow_val"),
])
def test_struct_errors_name_the_field_and_leave_map_unchanged(maps_all, bad, match):
    m = maps_all.maps["flows"]
    k = m.key_type(saddr=1)
    m[k] = {"packets": 7}
    with pytest.raises(bn.CodecError, match=match):
        m[k] = bad
    assert m[k].packets == 7 and len(m) == 1


def test_array_map(maps_all):
    a = maps_all.maps["arr"]
    assert isinstance(a, bn.ArrayMap)
    assert len(a) == 64 and list(a)[:3] == [0, 1, 2] and 63 in a and 64 not in a
    a[3] = {"packets": 9}
    assert a[3].packets == 9
    with pytest.raises(TypeError, match="cannot be deleted"):
        del a[3]
    with pytest.raises(bn.BpfError):
        a[64] = {}
    items = a.items()
    assert len(items) == 64 and items[3][1].packets == 9
    a.clear()
    assert a[3].packets == 0


def test_percpu_hash(maps_all):
    m = maps_all.maps["pc_hash"]
    assert isinstance(m, bn.PerCpuHashMap)
    m[1] = 5                              # one value for every CPU
    assert m[1] == [5] * ncpu and m.sum(1) == 5 * ncpu
    vals = list(range(1, ncpu + 1))
    m[2] = vals
    assert m[2] == vals and m.sum(2) == sum(vals)
    with pytest.raises(bn.CodecError, match="list of %d values" % ncpu):
        m[3] = [1] * (ncpu + 1)
    assert 3 not in m
    assert dict(m.items())[2] == vals


def test_percpu_array_structs_and_sum(maps_all):
    m = maps_all.maps["pc_arr"]
    assert isinstance(m, bn.PerCpuArrayMap)
    m[0] = [(i, 2 * i) for i in range(ncpu)]
    s = m.sum(0)
    assert (s.x, s.y) == (sum(range(ncpu)), 2 * sum(range(ncpu)))
    assert bn.sum_values([1, 2, 3]) == 6


def test_lru_hash_evicts_instead_of_failing(maps_all):
    m = maps_all.maps["lru"]
    assert isinstance(m, bn.LruHashMap)
    for i in range(1000):
        m[i] = i
    assert 0 < len(m) <= 128 and m[999] == 999


def test_lpm_trie(maps_all):
    m = maps_all.maps["lpm"]
    assert isinstance(m, bn.LpmTrieMap)
    m["10.0.0.0/8"] = 1
    m["10.1.0.0/16"] = 2
    m[m.key_type(prefixlen=24, addr=bytes([10, 1, 2, 0]))] = 3
    assert m.longest_match("10.1.2.3") == 3
    assert m.longest_match("10.1.9.9") == 2
    assert m.longest_match("10.200.0.1") == 1
    assert m.longest_match("11.0.0.1") is None
    assert len(m) == 3
    del m["10.1.0.0/16"]
    assert m.longest_match("10.1.9.9") == 1
    with pytest.raises(bn.CodecError, match="IPv6"):
        m["2001:db8::/32"] = 1
    with pytest.raises(bn.CodecError):
        m["10.0.0.0/99"] = 1


def test_union_and_bitfield_values(maps_all):
    u = maps_all.maps["unions"]
    u[1] = {"family": 2, "a": {"v4": 0x0a000001}}
    assert u[1].a.v4 == 0x0a000001 and u[1].a.v6[:4] == (0x0a000001).to_bytes(4, "little")
    b = maps_all.maps["bits"]
    b[1] = {"lo": 15, "mid": 4095, "neg": -128, "rest": 255, "whole": 1 << 63}
    assert b[1] == b.value_type(lo=15, mid=4095, neg=-128, rest=255, whole=1 << 63)
    with pytest.raises(bn.CodecError, match="lo.*0..15"):
        b[2] = {"lo": 16}
    assert 2 not in b


def test_queue_and_stack(maps_all):
    q, s = maps_all.maps["queue"], maps_all.maps["stack"]
    assert isinstance(q, bn.QueueMap) and isinstance(s, bn.StackMap)
    for i in range(3):
        q.push(i)
        s.push(i)
    assert q.peek() == 0 and q.pop() == 0 and q.drain() == [1, 2]
    assert s.pop() == 2 and s.drain() == [1, 0]
    with pytest.raises(IndexError, match="empty"):
        q.pop()
    assert q.pop(None) is None
    for i in range(16):
        q.push(i)
    with pytest.raises(bn.BpfError, match="full"):
        q.push(99)
    with pytest.raises(TypeError, match="no keys"):
        q[0]


def test_prog_array_dev_cpu_maps(maps_all):
    jmp = maps_all.maps["jmp"]
    target = maps_all.programs["tail_target"]
    jmp[0] = target
    assert jmp[0] == target.id
    del jmp[0]
    assert 0 not in jmp
    devs = maps_all.maps["devs"]
    devs[0] = "lo"
    assert devs[0] == 1
    with pytest.raises(bn.BpfError, match="no such interface"):
        devs[1] = "nonexistent0"
    cpus = maps_all.maps["cpus"]
    cpus[0] = 192                            # queue size; struct bpf_cpumap_val
    assert cpus[0].qsize == 192


def test_batch_update_lookup_delete(maps_all):
    m = maps_all.maps["hash_int"]
    assert m.update_batch({i: i * i for i in range(1000)}) == 1000
    got = m.lookup_batch()
    assert got == {i: i * i for i in range(1000)}
    assert m.lookup_batch(keys=[1, 2, 5000]) == {1: 1, 2: 4}
    assert m.delete_batch(range(500)) == 500
    assert len(m) == 500
    assert m.update_batch([(1, 1), (2, 2)]) == 2
    drained = m.lookup_batch(delete=True)
    assert len(drained) == 502 and len(m) == 0


def test_batch_with_bad_element_writes_nothing(maps_all):
    m = maps_all.maps["flows"]
    good = {m.key_type(saddr=i): {"packets": i} for i in range(10)}
    bad = dict(good)
    bad[m.key_type(saddr=99)] = {"packets": -1}
    with pytest.raises(bn.CodecError, match="packets"):
        m.update_batch(bad)
    assert len(m) == 0
    m.update_batch(good)
    assert {k.saddr: v.packets for k, v in m.items()} == {i: i for i in range(10)}


def test_batch_struct_and_percpu(maps_all):
    pc = maps_all.maps["pc_hash"]
    pc.update_batch({i: [i] * ncpu for i in range(100)})
    got = pc.lookup_batch()
    assert got[7] == [7] * ncpu and len(got) == 100


def test_numpy_batch_roundtrip(maps_all):
    np = pytest.importorskip("numpy")
    m = maps_all.maps["hash_int"]
    kd, vd = m.numpy_dtypes()
    keys = np.arange(1000, dtype=kd)
    vals = (keys.astype(np.uint64) * 3).astype(vd)
    assert m.update_batch((keys, vals)) == 1000
    k, v = m.lookup_batch(numpy=True)
    assert len(k) == 1000
    assert dict(zip(k.tolist(), v.tolist())) == {i: 3 * i for i in range(1000)}
    assert m.delete_batch(keys[:10]) == 10 and len(m) == 990
    f = maps_all.maps["flows"]
    fk, fv = f.numpy_dtypes()
    keys = np.zeros(5, fk)
    keys["saddr"] = np.arange(5)
    vals = np.zeros(5, fv)
    vals["packets"] = 10
    vals["comm"] = b"np"
    f.update_batch((keys, vals))
    assert f[f.key_type(saddr=3)].comm.rstrip(b"\0") == b"np"
    k2, v2 = f.lookup_batch(numpy=True)
    assert sorted(k2["saddr"].tolist()) == list(range(5)) and set(v2["packets"]) == {10}


def test_numpy_percpu(maps_all):
    np = pytest.importorskip("numpy")
    pc = maps_all.maps["pc_hash"]
    pc.update_batch({i: list(range(ncpu)) for i in range(10)})
    k, v = pc.lookup_batch(numpy=True)
    assert v.shape == (10, ncpu)
    assert v.sum(axis=1).tolist() == [sum(range(ncpu))] * 10


def test_iteration_survives_concurrent_deletes(maps_all):
    m = maps_all.maps["hash_int"]
    m.update_batch({i: i for i in range(1024)})
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            m.delete(i % 1024)
            m[(i * 7) % 1024] = i
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(20):
            keys = list(m)
            assert len(keys) == len(set(keys)) <= 1024
            items = m.items()
            assert len(items) <= 1024
    finally:
        stop.set()
        t.join()


def test_threads_share_a_map_safely(maps_all):
    m = maps_all.maps["flows"]
    errors = []

    def worker(n):
        try:
            for i in range(250):
                k = m.key_type(saddr=n, daddr=i)
                m[k] = {"packets": n, "bytes": i}
                v = m[k]
                if (v.packets, v.bytes) != (n, i):
                    errors.append((n, i, v))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


def test_standalone_map_create_typed():
    with bn.Map.create("hash", key="u32", value=[("a", "u8"), ("b", "u64")],
                       max_entries=8, name="typed") as m:
        assert isinstance(m, bn.HashMap) and m.value_size == 16
        m[1] = {"a": 1, "b": 2}
        assert m[1].b == 2 and m[1].a == 1
    with bn.HashMap.create(key_size=4, value_size=4, max_entries=4) as raw:
        raw[b"abcd"] = b"wxyz"
        assert raw[b"abcd"] == b"wxyz"
        with pytest.raises(bn.CodecError, match="exactly 4 bytes"):
            raw[b"abc"] = b"wxyz"
    with bn.Map.create(bn.MapType.ARRAY, value="char[8]", max_entries=2) as a:
        a[0] = "hi"
        assert a[0] == b"hi" + b"\0" * 6
    with bn.LpmTrieMap.create(key=[("prefixlen", "u32"), ("addr", "u8[16]")],
                              value="u32", max_entries=16) as lpm:
        lpm["2001:db8::/32"] = 6
        assert lpm.longest_match("2001:db8::1") == 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(type="hash", value="u32"), "needs a key type"),
    (dict(type="nosuch", key="u32", value="u32"), "unknown map type 'nosuch'"),
    (dict(type="hash", key="u33", value="u32"), "unknown key type 'u33'"),
    (dict(type="hash", key="u32", value="u32", max_entries=-1), "max_entries"),
    (dict(type="hash", key="u32", key_size=8, value="u32"), "disagrees"),
])
def test_create_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, bn.CodecError), match=match):
        bn.Map.create(**kwargs)


def test_create_refused_by_kernel():
    with pytest.raises(bn.BpfError, match="create map") as ei:
        bn.Map.create("hash", key="u32", value="u32", max_entries=0)
    assert ei.value.errno == errno.EINVAL


def test_pin_and_from_pinned(maps_all):
    path = "/sys/fs/bpf/pybpfnet-test-%s" % uuid.uuid4().hex[:8]
    m = maps_all.maps["flows"]
    m[m.key_type(saddr=5)] = {"packets": 3}
    m.pin(path)
    try:
        with bn.Map.from_pinned(path) as again:
            assert isinstance(again, bn.HashMap)
            assert again.key_type.c_type == "struct flow_key"   # types from kernel BTF
            assert again[again.key_type(saddr=5)].packets == 3
        with pytest.raises(TypeError, match="not a ArrayMap"):
            bn.ArrayMap.from_pinned(path)
    finally:
        os.unlink(path)
    with pytest.raises(bn.BpfError) as ei:
        bn.Map.from_pinned(path)
    assert ei.value.errno == errno.ENOENT


def test_program_pin_and_from_pinned(maps_all):
    path = "/sys/fs/bpf/pybpfnet-test-%s" % uuid.uuid4().hex[:8]
    p = maps_all.programs["verdict_prog"]
    p.pin(path)
    try:
        with bn.Program.from_pinned(path) as again:
            assert again.id == p.id and again.type == bn.ProgramType.XDP
            assert again.test_run(bytes(64)).verdict == bn.XdpAction.PASS
    finally:
        os.unlink(path)


def test_map_from_id_and_info(maps_all):
    m = maps_all.maps["hash_int"]
    info = m.info()
    assert info["key_size"] == 4 and info["value_size"] == 8 and info["name"] == "hash_int"
    with bn.Map.from_id(info["id"]) as again:
        again[7] = 70
        assert m[7] == 70


def test_freeze(maps_all):
    with bn.Map.create("array", value="u32", max_entries=1) as m:
        m[0] = 1
        m.freeze()
        with pytest.raises(bn.BpfPermissionError):
            m[0] = 2
        assert m[0] == 1


def test_forgotten_map_warns():
    m = bn.Map.create("hash", key="u32", value="u32", max_entries=1)
    with pytest.warns(ResourceWarning, match="was never closed"):
        m.__del__()
    assert m.closed


def test_map_of_maps():
    with bn.Map.create("array", value="u32", max_entries=4) as inner, \
         bn.Map.create("array_of_maps", max_entries=2, inner_map=inner) as outer:
        outer[0] = inner
        with outer.get_map(0, value_type="u32") as again:
            again[1] = 11
        assert inner[1] == 11


def test_update_batch_takes_array_array_pairs():
    """(keys, values) as array.array: raw bytes, no numpy needed; wrong item
    sizes are refused before anything is written."""
    import array
    with bn.ArrayMap.create(key="u32", value="u64", max_entries=8) as m:
        assert m.update_batch((array.array("I", [1, 3]), array.array("Q", [10, 30]))) == 2
        assert (m[1], m[3], m[0]) == (10, 30, 0)
        with pytest.raises(bn.CodecError, match="itemsize 4/4, expected 4/8"):
            m.update_batch((array.array("I", [2]), array.array("I", [20])))
        with pytest.raises(ValueError, match="2 keys but 1 values"):
            m.update_batch((array.array("I", [2, 4]), array.array("Q", [20])))
        with pytest.raises(bn.BpfError, match="index 9 is out of range"):
            m.update_batch((array.array("I", [2, 9]), array.array("Q", [20, 90])))
        assert m[2] == 0
