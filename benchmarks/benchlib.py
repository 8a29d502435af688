"""Helpers shared by the Python benchmark drivers.

Standard library only: this module is imported both by the pybpfnet driver
(the project's venv) and by the bcc driver (Debian's /usr/bin/python3).
"""

import json
import os
import statistics
import subprocess
import sys
import time

def per_op_ns(fn, count):
    """ns per operation of ``fn()``, which performs ``count`` operations."""
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / count


REPS = 3  # passes per measurement inside one process; the median is reported


def median_per_op(fn, count, setup=None, reps=REPS):
    """Median over ``reps`` passes of ns per operation of ``fn()`` (which
    performs ``count`` operations); ``setup()`` runs untimed before each."""
    samples = []
    for _ in range(reps):
        if setup is not None:
            setup()
        samples.append(per_op_ns(fn, count))
    return statistics.median(samples)


def median_ms(fn, iterations, warmup=3):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples)}


def pin_cpu(cpu):
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def prog_id_of_fd(fd):
    """A BPF program's kernel id, read from /proc/self/fdinfo."""
    with open("/proc/self/fdinfo/%d" % fd) as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise RuntimeError("fd %d is not a BPF program" % fd)


def drive_ring(step, consumed, prog_id, producer, events, rate, producer_cpu):
    """Run the C producer against program ``prog_id`` while ``step()``
    drains the ring (blocking at most a few ms per call); ``consumed()`` is
    the running record count. Returns the measurement as a dict."""
    proc = subprocess.Popen([producer, str(prog_id), str(events), str(rate),
                             str(producer_cpu)], stdout=subprocess.PIPE)
    last = 0
    t_last = 0
    finished = False
    while True:
        step()
        n = consumed()
        if n != last:
            last = n
            t_last = time.monotonic_ns()
            continue
        if finished:
            break
        if proc.poll() is not None:
            finished = True  # one more pass drains what is left
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError("ring producer failed (exit %d)" % proc.returncode)
    rep = json.loads(out)
    return {"produced": rep["events"], "consumed": last,
            "seconds": (t_last - rep["t_start_ns"]) / 1e9,
            "producer_seconds": (rep["t_end_ns"] - rep["t_start_ns"]) / 1e9}


def emit(result):
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
