"""Packet capture costs, measured in one run against a floor.

1. Per packet, under BPF_PROG_TEST_RUN, as the minimum over interleaved
   rounds of the kernel's own time per repetition, on one CPU, against a
   floor TC program that returns TC_ACT_OK (compiled here into
   benchmarks/build/):

   * no filter, every packet captured: 64 B and 1500 B frames, snap
     lengths 262 and 1514 (the record copy is min(frame, snaplen) bytes);
   * a filter that rejects the packet ("tcp port 443", a UDP frame);
   * a 1-term filter that captures it ("udp dst port 53");
   * the 32-term worst case: 32 terms of 8 tests each, the frame matching
     only the last term (every term walked), and matching none (rejected).

   Captured cases use a smaller repeat (``--cap-repeat``) so the ring never
   fills (a full ring would measure the cheaper "lost" path); the ring is
   drained between runs and the lost counter checked to be 0.

2. Python side, one core: packets per second through ``write_pcap()``
   (to a file in a temporary directory) and ``packets()`` (CapturedPacket
   objects), the ring pre-filled through test_run with ``--fill`` 64-byte
   frames (snaplen 262), decode time only.

    sudo .venv/bin/python benchmarks/bench_capture.py [--rounds 5] [--repeat 200000]
                                                      [--cap-repeat 20000] [--json]

Needs root, clang (for the floor program) and the pybpfnet package. Prints
markdown tables.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import pybpfnet as bn
from pybpfnet import packet as pk
from pybpfnet.dataplanes.capture import Capture
from pybpfnet.testing import compile_bpf

HERE = pathlib.Path(__file__).resolve().parent
C, S = "10.0.0.1", "10.0.0.2"
FLOOR_SRC = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc") int floor_tc(struct __sk_buff *skb) { return TC_ACT_OK; }

char LICENSE[] SEC("license") = "GPL";
"""
RING = 1 << 26          # 64 MiB: --cap-repeat records of 1536 bytes fit


def build_floor(build):
    build.mkdir(parents=True, exist_ok=True)
    src = build / "cap_floor.bpf.c"
    if not src.exists() or src.read_text() != FLOOR_SRC:
        src.write_text(FLOOR_SRC)
    return bn.load(compile_bpf(src, build / "cap_floor.bpf.o"))


def udp_frame(size, dport=53):
    """An Ethernet/IPv4/UDP frame of ``size`` bytes in all."""
    return bytes(pk.udp_packet(C, S, 4000, dport, b"u" * (size - 42)))


def worst_filter(ports):
    """32 terms of 8 tests; a frame to ports[-1] matches only the last one."""
    return " or ".join("(udp and ip and src host %s and dst host %s and src port 4000 and "
                       "net 10.0.0.0/8 and port %d and dst port %d)" % (C, S, p, p)
                       for p in ports)


def drain(cap):
    while cap.ring.poll(0):
        pass


def per_packet_costs(repeat, cap_repeat, rounds):
    f64, f1500 = udp_frame(64), udp_frame(1500)
    ports = list(range(2000, 2032))
    # (case, frame, capture kwargs, captured?)
    cases = [
        ("no filter, 64 B, snaplen 262", f64, dict(snaplen=262), True),
        ("no filter, 64 B, snaplen 1514", f64, dict(snaplen=1514), True),
        ("no filter, 1500 B, snaplen 262", f1500, dict(snaplen=262), True),
        ("no filter, 1500 B, snaplen 1514", f1500, dict(snaplen=1514), True),
        ("filter rejects (tcp port 443), 64 B", f64, dict(filter="tcp port 443"), False),
        ("1-term filter captures (udp dst port 53), 64 B", f64,
         dict(filter="udp dst port 53"), True),
        ("32 terms x 8 tests, last term matches, 64 B", udp_frame(64, ports[-1]),
         dict(filter=worst_filter(ports)), True),
        ("32 terms x 8 tests, none matches, 64 B", udp_frame(64, 9),
         dict(filter=worst_filter(ports)), False),
    ]
    best = {}

    def keep(key, ns):
        best[key] = min(best.get(key, ns), ns)

    with build_floor(HERE / "build") as fl:
        floor = fl.programs["floor_tc"]
        caps = [Capture(ring_size=RING, **kw) for _, _, kw, _ in cases]
        try:
            for c, (_, _, kw, _) in zip(caps, cases):
                if "filter" in kw and kw["filter"].count(" or ") == 31:
                    assert len(c.filter.terms) == 32 and all(len(t) == 8 for t in c.filter.terms)
            for _ in range(rounds):
                keep("floor", floor.test_run(f64, repeat=repeat).duration_ns)
                keep("floor (cap-repeat)", floor.test_run(f64, repeat=cap_repeat).duration_ns)
                for c, (name, frame, _, captured) in zip(caps, cases):
                    n = cap_repeat if captured else repeat
                    before = c.stats().captured
                    keep(name, c.program("egress").test_run(frame, repeat=n).duration_ns)
                    got = c.stats().captured - before
                    assert got == (n if captured else 0), (name, got)
                    drain(c)
            for c, (name, *_) in zip(caps, cases):
                assert c.stats().lost == 0, name
        finally:
            for c in caps:
                c.close()
    rows = {}
    for name, _, _, captured in cases:
        fl_ns = best["floor (cap-repeat)" if captured else "floor"]
        rows[name] = {"ns": best[name], "floor_ns": fl_ns, "added_ns": best[name] - fl_ns,
                      "ratio": best[name] / fl_ns if fl_ns else float("nan")}
    return {"floor": best["floor"], "rows": rows}


def python_rates(fill, rounds):
    frame = udp_frame(64)
    out = {}
    with Capture(snaplen=262, ring_size=RING) as cap, tempfile.TemporaryDirectory() as tmp:
        prog = cap.program("egress")
        path = pathlib.Path(tmp) / "bench.pcap"
        for _ in range(rounds):
            prog.test_run(frame, repeat=fill)
            t = time.perf_counter()
            n = cap.write_pcap(path, count=fill)
            dt = time.perf_counter() - t
            assert n == fill and path.stat().st_size == 24 + fill * (16 + len(frame))
            out["write_pcap()"] = max(out.get("write_pcap()", 0), n / dt)

            prog.test_run(frame, repeat=fill)
            t = time.perf_counter()
            n = 0
            for p in cap.packets(count=fill):
                n += 1
            dt = time.perf_counter() - t
            assert n == fill and p.data == frame
            out["packets()"] = max(out.get("packets()", 0), n / dt)
        assert cap.stats().lost == 0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=200_000, help="test_run repeat, not captured")
    p.add_argument("--cap-repeat", type=int, default=20_000,
                   help="test_run repeat of captured cases (must fit the 64 MiB ring)")
    p.add_argument("--fill", type=int, default=100_000, help="packets per Python round")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu % (os.cpu_count() or 1)})
    res = {"kernel": os.uname().release,
           "per_packet": per_packet_costs(args.repeat, args.cap_repeat, args.rounds),
           "python": python_rates(args.fill, args.rounds)}
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
        return 0
    pp = res["per_packet"]
    print("## capture: ns per packet (BPF_PROG_TEST_RUN, min of %d rounds, kernel %s)\n"
          % (args.rounds, res["kernel"]))
    print("| case | ns/packet | floor ns | added ns | x floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, v in pp["rows"].items():
        print("| %s | %.1f | %.1f | %+.1f | %.2f |" % (name, v["ns"], v["floor_ns"],
                                                      v["added_ns"], v["ratio"]))
    print("\n(floor: a TC program returning TC_ACT_OK; captured cases run %d repetitions, "
          "the others %d)" % (args.cap_repeat, args.repeat))
    print("\n## capture: Python side, one core (ring pre-filled with %d 64-byte packets, "
          "snaplen 262)\n" % args.fill)
    print("| path | packets/s |")
    print("| --- | ---: |")
    for name, rate in res["python"].items():
        print("| %s | %.2fM |" % (name, rate / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
