"""Maglev table build time: pybpfnet.Maglev against a standalone C program
of the same algorithm (benchmarks/c/maglev.c), and disruption figures next
to the Maglev paper's (Eisenbud et al., NSDI 2016). No privileges needed.

Build time is for M = 65,537 with 100 and 1,000 backends named
``backend-<i>``: sort + hash + populate, median of ``--rounds`` builds
(after 3 warm-up builds). The C program's table checksum must equal ours.

Pushing a table into the kernel (needs root): `LbDataplane.install_table`
for M = 65,537 (check, fill a fresh inner ARRAY map with one batch update,
swap it into the service's slot) against its floor measured in the same
run: creating an ARRAY map of the same size and filling it with one numpy
batch update, which is what the kernel work of a push costs.

    .venv/bin/python benchmarks/bench_maglev.py [--rounds 31] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

from pybpfnet import _maglev
from pybpfnet.dataplanes.maglev import Maglev

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 65537
TARGET = 1.2
# % of entries changed when 1%, 2%, 5%, 10% of 1,000 backends fail, M = 65,537
PAPER = {1: 3.4, 2: 4.7, 5: 8.3, 10: 13.6}


def c_program(build):
    """benchmarks/build/maglev, (re)built with cc -O2 when older than its source."""
    src = os.path.join(HERE, "c", "maglev.c")
    exe = os.path.join(build, "maglev")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(build, exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-Werror",
                        "-o", exe, src], check=True)
    return exe


def checksum(table):
    return sum((i + 1) * v for i, v in enumerate(table)) % (1 << 64)


def median_ns(fn, rounds, warmup=3):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples), min(samples)


def build_times(exe, n, rounds):
    names = ["backend-%d" % i for i in range(n)]
    out = subprocess.run([exe, str(n), str(SIZE), str(rounds)], check=True,
                         capture_output=True, text=True).stdout
    c = json.loads(out)
    m = Maglev(names)
    if checksum(m.table) != c["checksum"]:
        raise SystemExit("bench_maglev: the C program's table differs from pybpfnet's "
                         "(n=%d)" % n)
    py_med, py_min = median_ns(lambda: Maglev(names), rounds)
    encoded = sorted(name.encode() for name in names)

    def core():
        offsets, skips = _maglev.permutations(encoded, SIZE)
        _maglev.fill(offsets, skips, None, SIZE)
    core_med, core_min = median_ns(core, rounds)
    return {"backends": n, "size": SIZE, "rounds": rounds,
            "c_ms": c["median_ns"] / 1e6, "c_min_ms": c["min_ns"] / 1e6,
            "maglev_ms": py_med / 1e6, "maglev_min_ms": py_min / 1e6,
            "core_ms": core_med / 1e6, "core_min_ms": core_min / 1e6,
            "ratio": py_med / c["median_ns"], "core_ratio": core_med / c["median_ns"]}


def disruption(n=1000):
    """% of entries changed when every (100/pct)-th backend is removed, and
    the mean over the (100/pct) choices of which ones."""
    names = ["backend-%d" % i for i in range(n)]
    before = Maglev(names)
    res = {}
    for pct in PAPER:
        step = 100 // pct
        ds = [100 * before.disruption(before.with_backends(
            [x for i, x in enumerate(names) if i % step != r]))
            for r in range(min(step, 5))]
        res[pct] = {"removed": n * pct // 100, "changed_pct": ds[0],
                    "changed_pct_mean": statistics.mean(ds), "paper_pct": PAPER[pct],
                    "minimum_pct": float(pct)}
    return res


def push_times(rounds, n=100):
    """ms to push a Maglev table of n backends into the load balancer,
    and the floor (map create + one numpy batch fill + close)."""
    if os.geteuid() != 0:
        return None
    import numpy as np
    from pybpfnet import ArrayMap
    from pybpfnet.dataplanes._lb_dataplane import LbDataplane
    m = Maglev(["backend-%d" % i for i in range(n)], size=SIZE)
    ids = m.table                    # backend index i is backend id i below
    keys = np.arange(SIZE + 2, dtype=np.uint32)
    vals = np.concatenate([np.array([SIZE, 1], dtype=np.uint32),
                           np.frombuffer(ids, dtype=np.int32).astype(np.uint32)])

    def floor():
        with ArrayMap.create(key="u32", value="u32", max_entries=SIZE + 2) as a:
            a.update_batch((keys, vals))

    with LbDataplane(max_services=4, max_backends=n, max_flows=1024) as dp:
        for i in range(n):
            dp.put_backend(i, "10.1.%d.%d" % (i // 250, i % 250 + 1), mac="02:00:00:00:00:01")
        key = ("192.0.2.1", 80, "tcp")
        dp.put_service(key, mode="nat")
        push = median_ns(lambda: dp.install_table(key, ids), rounds)[0] / 1e6
    base = median_ns(floor, rounds)[0] / 1e6
    return {"backends": n, "push_ms": push, "floor_ms": base, "ratio": push / base}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--build", default=os.path.join(HERE, "build"))
    p.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: no pinning)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})     # the C program inherits it
    warnings.simplefilter("ignore", UserWarning)   # 1,000 backends < M / 100
    exe = c_program(args.build)
    res = {"build": [build_times(exe, n, args.rounds) for n in (100, 1000)],
           "disruption": disruption(),
           "push": push_times(args.rounds)}
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
        return 0
    print("Maglev table build, M = %d, median of %d builds (ms); target pybpfnet/C <= %.1fx"
          % (SIZE, args.rounds, TARGET))
    print()
    print("| backends | C program | pybpfnet `Maglev(...)` | ratio | core (`_maglev`) | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in res["build"]:
        print("| %d | %.3f | %.3f | %.2fx %s | %.3f | %.2fx |" % (
            r["backends"], r["c_ms"], r["maglev_ms"], r["ratio"],
            "ok" if r["ratio"] <= TARGET else "OVER", r["core_ms"], r["core_ratio"]))
    print()
    print("Disruption, 1,000 backends, M = %d: %% of entries whose backend changed" % SIZE)
    print()
    print("| backends removed | minimum | pybpfnet (every k-th) | pybpfnet (mean of 5) "
          "| paper |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for pct, r in res["disruption"].items():
        print("| %d%% (%d) | %.1f%% | %.2f%% | %.2f%% | %.1f%% |" % (
            pct, r["removed"], r["minimum_pct"], r["changed_pct"], r["changed_pct_mean"],
            r["paper_pct"]))
    print()
    r = res["push"]
    if r is None:
        print("Pushing a table into the kernel: skipped (needs root)")
    else:
        print("Pushing a table into the kernel, M = %d, %d backends, median of %d (ms)"
              % (SIZE, r["backends"], args.rounds))
        print()
        print("| `LbDataplane.install_table` | floor: create + numpy batch fill | ratio |")
        print("| ---: | ---: | ---: |")
        print("| %.2f | %.2f | %.2fx |" % (r["push_ms"], r["floor_ms"], r["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
