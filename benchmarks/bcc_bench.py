"""bcc side of the benchmarks: the same operations through bcc's Python API.
Runs under Debian's /usr/bin/python3 (python3-bpfcc); needs BCC_KERNEL_SOURCE
pointing at kernel headers when /lib/modules/$(uname -r)/build is missing.
Prints one JSON object per invocation.

    python3 bcc_bench.py maps SRC OPS KEYS
    python3 bcc_bench.py load SRC ITERATIONS
    python3 bcc_bench.py ring SRC PRODUCER MODE RATE EVENTS CPU PRODUCER_CPU [CFLAG...]
"""

import ctypes as ct
import os
import sys

from bcc import BPF

from benchlib import drive_ring, emit, median_ms, median_per_op, pin_cpu, prog_id_of_fd

BPF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf")
CFLAGS = ["-I" + BPF_DIR]
REC = dict(ifindex=7, proto=17, flags=1, comm=b"benchmark")


class Event(ct.Structure):
    """struct event of bpf/bench_types.h. bcc's ``table.event()`` cannot
    derive it (it does not know ``__u64``), so, as bcc documents, it is
    declared with ctypes."""
    _fields_ = [("seq", ct.c_uint64), ("ts", ct.c_uint64), ("pid", ct.c_uint32),
                ("cpu", ct.c_uint32), ("value", ct.c_uint64)]


def compile_src(path, extra=()):
    return BPF(src_file=path.encode(), cflags=CFLAGS + list(extra))


def bench_single(b, ops, nkeys):
    su, sr = b["single_u64"], b["single_rec"]
    K, VU, VR = su.Key, su.Leaf, sr.Leaf
    for k in range(nkeys):
        su[K(k)] = VU(k)
        sr[K(k)] = VR(packets=k, bytes=k * 1500, **REC)
    keys = list(range(nkeys)) * (ops // nkeys)
    value = VR(packets=1, bytes=1500, **REC)
    n = len(keys)

    def lookup_u64():
        for k in keys:
            su[K(k)].value

    def lookup_rec():
        for k in keys:
            sr[K(k)]

    def update_u64():
        for k in keys:
            su[K(k)] = VU(k)

    def update_rec():
        for k in keys:
            sr[K(k)] = value

    for k in keys[:n // 10]:
        su[K(k)].value
    out = {"u64_lookup": median_per_op(lookup_u64, n),
           "u64_update": median_per_op(update_u64, n),
           "rec_lookup": median_per_op(lookup_rec, n),
           "rec_update": median_per_op(update_rec, n)}
    assert su[K(5)].value == 5 and sr[K(5)].packets == 1
    return out


def bench_batch(t, name, values):
    """values: the Python objects to store (ints, or tuples in field order)."""
    n = t.max_entries
    keys = list(range(n))
    K, V = t.Key, t.Leaf
    ck, cv = (K * n)(*keys), (V * n)(*values)

    def clear():
        t.items_delete_batch()

    def update_py():
        t.items_update_batch((K * n)(*keys), (V * n)(*values))

    got = [None]

    def lookup_batch():
        got[0] = list(t.items_lookup_batch())

    def items():
        got[0] = t.items()

    clear()
    t.items_update_batch(ck, cv)  # warm up
    out = {name + "_update_py": median_per_op(update_py, n, clear),
           name + "_update_ct": median_per_op(lambda: t.items_update_batch(ck, cv), n, clear),
           name + "_lookup_py": median_per_op(lookup_batch, n)}
    assert len(got[0]) == n
    out[name + "_items"] = median_per_op(items, n)
    assert len(got[0]) == n
    return out


def bench_array(a):
    n = a.max_entries
    K, V = a.Key, a.Leaf
    vals = list(range(n))
    ck, cv = (K * n)(*range(n)), (V * n)(*vals)
    a.items_update_batch(ck, cv)  # warm up

    def loop():
        for i in range(n):
            a[i] = V(i)

    return {"loop_ms": median_per_op(loop, 1) / 1e6,
            "batch_py_ms": median_per_op(
                lambda: a.items_update_batch((K * n)(*range(n)), (V * n)(*vals)), 1) / 1e6,
            "batch_ct_ms": median_per_op(lambda: a.items_update_batch(ck, cv), 1) / 1e6}


def cmd_maps(src, ops, nkeys):
    b = compile_src(src)
    try:
        result = {"single": bench_single(b, int(ops), int(nkeys)), "batch": {}}
        result["batch"].update(bench_batch(b["batch_u64"], "u64",
                                           list(range(b["batch_u64"].max_entries))))
        result["batch"].update(bench_batch(
            b["batch_rec"], "rec",
            [(i, i * 1500, REC["ifindex"], REC["proto"], REC["flags"], REC["comm"])
             for i in range(b["batch_rec"].max_entries)]))
        result["array"] = bench_array(b["array_u64"])
    finally:
        b.cleanup()
    emit(result)


def cmd_load(src, iterations):
    def once():
        b = compile_src(src)
        b.load_func(b"xdp_pass", BPF.XDP)
        b.cleanup()

    emit(median_ms(once, int(iterations), warmup=1))


def cmd_ring(src, producer, mode, rate, events, cpu, producer_cpu, *cflags):
    pin_cpu(int(cpu))
    b = compile_src(src, cflags)
    try:
        fn = b.load_func(b"produce", BPF.SCHED_CLS)
        ring = b["events"]
        total = [0, 0]
        if mode == "poll-count":
            def on_event(ctx, data, size):
                total[0] += 1
        else:
            as_event = ct.POINTER(Event)

            def on_event(ctx, data, size):
                e = ct.cast(data, as_event).contents
                total[1] += e.seq + e.value
                total[0] += 1
        ring.open_ring_buffer(on_event)
        if mode.startswith("poll"):
            def step():
                b.ring_buffer_poll(10)
        else:
            step = b.ring_buffer_consume
        res = drive_ring(step, lambda: total[0], prog_id_of_fd(fn.fd), producer,
                         int(events), int(rate), int(producer_cpu))
        res["drops"] = b["stats"][ct.c_int(1)].value
    finally:
        b.cleanup()
    emit(res)


COMMANDS = {"maps": cmd_maps, "load": cmd_load, "ring": cmd_ring}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
