"""pybpfnet side of the benchmarks: the same operations as c/*.c, through
pybpfnet's public API. Prints one JSON object per invocation.

    python pybpfnet_bench.py maps OBJ OPS KEYS
    python pybpfnet_bench.py breakdown OBJ OPS KEYS
    python pybpfnet_bench.py load OBJ ITERATIONS
    python pybpfnet_bench.py ring OBJ PRODUCER MODE RATE EVENTS CPU PRODUCER_CPU
"""

import os
import sys

import numpy as np

import pybpfnet as bn
from benchlib import drive_ring, emit, median_ms, median_per_op, pin_cpu

REC = dict(ifindex=7, proto=17, flags=1, comm=b"benchmark")


def bench_single(obj, ops, nkeys):
    su, sr = obj.maps["single_u64"], obj.maps["single_rec"]
    su.update_batch({k: k for k in range(nkeys)})
    sr.update_batch({k: sr.value_type(packets=k, bytes=k * 1500, **REC)
                     for k in range(nkeys)})
    keys = list(range(nkeys)) * (ops // nkeys)
    value = sr.value_type(packets=1, bytes=1500, **REC)

    def lookup(m):
        for k in keys:
            m[k]

    def update_u64():
        for k in keys:
            su[k] = k

    def update_rec():
        for k in keys:
            sr[k] = value

    warm = keys[:len(keys) // 10]
    for k in warm:
        su[k]
        su[k] = k
    n = len(keys)
    out = {"u64_lookup": median_per_op(lambda: lookup(su), n),
           "u64_update": median_per_op(update_u64, n),
           "rec_lookup": median_per_op(lambda: lookup(sr), n),
           "rec_update": median_per_op(update_rec, n)}
    got = sr[5]
    assert su[5] == 5 and got.packets == 1 and got.comm.rstrip(b"\0") == REC["comm"]
    return out


def _same(a, b):
    """Equal values, ignoring the NUL padding of decoded char arrays."""
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bytes):
        return a.rstrip(b"\0") == b.rstrip(b"\0")
    return a == b


def bench_batch(m, name, make_value, fill_numpy):
    n = m.max_entries
    kd, vd = m.numpy_dtypes()
    pairs = {i: make_value(i) for i in range(n)}
    karr = np.arange(n, dtype=kd)
    varr = np.zeros(n, vd)
    fill_numpy(varr)

    def clear():
        m.lookup_batch(numpy=True, delete=True)

    clear()
    m.update_batch(pairs)  # warm up
    m.lookup_batch()
    out = {}
    got = [None]

    def lookup_py():
        got[0] = m.lookup_batch()

    def lookup_np():
        got[0] = m.lookup_batch(numpy=True)

    out[name + "_update_py"] = median_per_op(lambda: m.update_batch(pairs), n, clear)
    out[name + "_lookup_py"] = median_per_op(lookup_py, n)
    assert len(got[0]) == n and _same(got[0][7], pairs[7])
    out[name + "_update_np"] = median_per_op(lambda: m.update_batch((karr, varr)), n, clear)
    out[name + "_lookup_np"] = median_per_op(lookup_np, n)
    assert len(got[0][0]) == n and (np.sort(got[0][0]) == karr).all()
    return out


def bench_array(a):
    n = a.max_entries
    pairs = {i: i for i in range(n)}
    karr = np.arange(n, dtype=np.uint32)
    varr = np.arange(n, dtype=np.uint64)
    a.update_batch(pairs)  # warm up

    def loop():
        for i in range(n):
            a[i] = i

    return {"loop_ms": median_per_op(loop, 1) / 1e6,
            "batch_py_ms": median_per_op(lambda: a.update_batch(pairs), 1) / 1e6,
            "batch_np_ms": median_per_op(lambda: a.update_batch((karr, varr)), 1) / 1e6}


def cmd_maps(path, ops, nkeys):
    with bn.load(path) as obj:
        result = {"single": bench_single(obj, int(ops), int(nkeys)), "batch": {}}
        bu, br = obj.maps["batch_u64"], obj.maps["batch_rec"]
        result["batch"].update(bench_batch(bu, "u64", lambda i: i,
                                           lambda v: v.__setitem__(slice(None), np.arange(len(v)))))

        def fill_rec(v):
            v["packets"] = np.arange(len(v))
            v["bytes"] = np.arange(len(v)) * 1500
            for f, x in REC.items():
                v[f] = x

        vt = br.value_type
        result["batch"].update(bench_batch(
            br, "rec", lambda i: vt(packets=i, bytes=i * 1500, **REC), fill_rec))
        result["array"] = bench_array(obj.maps["array_u64"])
    emit(result)


def cmd_breakdown(path, ops, nkeys):
    """Where the time of one m[k] goes. Uses pybpfnet internals on purpose
    (a diagnostic, not API); a component whose internals have changed is
    left out rather than failing the run."""
    import struct
    ops, nkeys = int(ops), int(nkeys)
    keys = list(range(nkeys)) * (ops // nkeys)
    n = len(keys)
    out = {}
    with bn.load(path) as obj:
        su, sr = obj.maps["single_u64"], obj.maps["single_rec"]
        su.update_batch({k: k for k in range(nkeys)})
        value = sr.value_type(packets=1, bytes=1500, **REC)
        sr.update_batch({k: value for k in range(nkeys)})
        fd_u, fd_r = su.fd, sr.fd
        kbytes = [struct.pack("=I", k) for k in keys]

        def loop(fn, seq=keys):
            def run():
                for k in seq:
                    fn(k)
            return run

        def components():
            from pybpfnet import _binding as b
            c, view = b.ValueBuffer.get()
            raw_value = sr.value_type.encode(value)
            yield "loop", lambda: loop(lambda k: None)
            yield "ffi_call", lambda: loop(lambda k, f=b.last_err: f())
            yield "u64_raw_lookup", lambda: loop(
                lambda k, f=b.lookup_int: f(fd_u, k, 4, 8))
            yield "u64_getitem", lambda: loop(su.__getitem__)
            yield "rec_raw_lookup", lambda: loop(
                lambda kb, f=b.lookup_elem: f(fd_r, kb, c), kbytes)
            yield "rec_key_encode", lambda: loop(sr.key_type.encode)
            yield "rec_value_decode", lambda: loop(lambda k, d=sr.value_type.decode: d(view))
            yield "rec_buffer_get", lambda: loop(lambda k, g=b.ValueBuffer.get: g())
            yield "rec_lookup_raw", lambda: loop(sr._lookup_raw)
            yield "rec_getitem", lambda: loop(sr.__getitem__)
            yield "rec_value_encode", lambda: loop(lambda k, e=sr.value_type.encode: e(value))
            yield "rec_raw_update", lambda: loop(
                lambda kb, f=b.update_elem: f(fd_r, kb, raw_value, 0), kbytes)
            yield "rec_setitem", lambda: loop(lambda k: sr.__setitem__(k, value))

        for name, make in components():
            try:
                fn = make()
                fn()  # warm up, and find out whether the internals still exist
            except (AttributeError, TypeError, ImportError):
                continue
            out[name] = median_per_op(fn, n)
        trivial = os.path.join(os.path.dirname(path), "xdp_trivial.bpf.o")
        out["open_spec_ms"] = median_ms(lambda: bn.open(trivial), 30)["median_ms"]
    emit(out)


def cmd_load(path, iterations):
    def once():
        bn.load(path).close()

    emit(median_ms(once, int(iterations)))


def cmd_ring(path, producer, mode, rate, events, cpu, producer_cpu):
    pin_cpu(int(cpu))
    with bn.load(path) as obj:
        rb = obj.maps["events"]
        rb.set_event_type(obj.globals.type_of("event_proto"))
        total = [0, 0]
        if mode == "poll-decode":
            def step():
                recs = rb.poll(timeout=0.01)
                s = 0
                for r in recs:
                    s += r.seq + r.value
                total[0] += len(recs)
                total[1] += s
        elif mode == "poll-count":
            def step():
                total[0] += len(rb.poll(timeout=0.01))
        elif mode == "busy-decode":
            def step():
                recs = rb.consume()
                s = 0
                for r in recs:
                    s += r.seq + r.value
                total[0] += len(recs)
                total[1] += s
        else:
            raise SystemExit("unknown ring mode %r" % mode)
        res = drive_ring(step, lambda: total[0], obj.programs["produce"].id, producer,
                         int(events), int(rate), int(producer_cpu))
        res["drops"] = obj.maps["stats"][1]
    emit(res)


COMMANDS = {"maps": cmd_maps, "breakdown": cmd_breakdown, "load": cmd_load,
            "ring": cmd_ring}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
