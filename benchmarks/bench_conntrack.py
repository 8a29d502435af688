"""Connection tracking costs, measured in one run against a floor.

Per packet, under BPF_PROG_TEST_RUN, as the minimum over interleaved rounds
of the kernel's own time per repetition, on one CPU:

* floor: a TC program that returns TC_ACT_UNSPEC;
* parse: the tracker's packet parser alone (ct_parse_skb);
* ct_tc on an established TCP connection (a data segment, original and
  reply direction), an established UDP flow, and a frame it does not track
  (ARP): the lookup + update an established flow costs;
* new connections: distinct SYNs, one BPF_PROG_TEST_RUN each (repeat=1;
  the floor measured the same way), which create an entry every time,
  in a table with room and in a full one (each insert evicts).

Table maintenance, from Python:

* sweep of 100k and 1M entries: the scan alone (nothing expired), then
  scan + reap when everything has expired (the ct_reap program deletes,
  events off);
* memory per entry (the kernel's memlock accounting of the table);
* a flood of 1M distinct SYNs (``--flood``) against established
  connections: how many of those survive (all of them: separate tables),
  and the embryonic evictions.

    sudo .venv/bin/python benchmarks/bench_conntrack.py [--rounds 7] [--repeat 200000]
                                                        [--flood 1000000] [--json]

Needs root, clang (for the floor programs) and the pybpfnet package.
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
from pybpfnet.dataplanes.conntrack import Conntrack
from pybpfnet.testing import compile_bpf

ROOT = pathlib.Path(__file__).resolve().parents[1]
C, S = "10.0.0.1", "10.0.0.2"

FLOOR_SRC = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "pybn_conntrack.h"

__u32 sink;

SEC("tc") int floor_tc(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }

SEC("tc") int parse(struct __sk_buff *skb)
{
	struct ct_pkt p;

	ct_parse_skb(skb, &p);
	sink = p.tuple.sport;
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
"""


def build_floor(tmp):
    src = pathlib.Path(tmp) / "ct_floor.bpf.c"
    src.write_text(FLOOR_SRC)
    return bn.load(compile_bpf(src, include_dirs=[ROOT / "csrc/bpf/include"]))


def per_packet(prog, frame, repeat):
    return prog.test_run(frame, repeat=repeat).duration_ns


def handshake(prog, cport):
    prog.test_run(bytes(pk.tcp_packet(C, S, cport, 80, flags="S", seq=100)))
    prog.test_run(bytes(pk.tcp_packet(S, C, 80, cport, flags="SA", seq=900, ack=101)))
    prog.test_run(bytes(pk.tcp_packet(C, S, cport, 80, flags="A", seq=101, ack=901)))


def per_packet_costs(repeat, rounds, new_flows):
    frames = {
        "tcp established (original)": bytes(pk.tcp_packet(C, S, 40000, 80, flags="PA",
                                                          seq=101, ack=901,
                                                          payload=b"x" * 64)),
        "tcp established (reply)": bytes(pk.tcp_packet(S, C, 80, 40000, flags="A",
                                                       seq=901, ack=101)),
        "udp established": bytes(pk.udp_packet(C, S, 5000, 53, b"q" * 32)),
        "untracked (ARP)": bytes(12) + b"\x08\x06" + bytes(28),
    }
    best = {}

    def keep(key, ns):
        best[key] = min(best.get(key, ns), ns)

    with tempfile.TemporaryDirectory() as tmp, build_floor(tmp) as fl, \
            Conntrack(events=False, embryonic_entries=1 << 18) as ct, \
            Conntrack(events=False, embryonic_entries=4096) as small:
        prog = ct.program
        handshake(prog, 40000)
        prog.test_run(frames["udp established"])
        prog.test_run(bytes(pk.udp_packet(S, C, 53, 5000, b"a")))
        prog.test_run(frames["udp established"])          # promoted
        assert {c.protocol: c.table.name for c in ct.entries()} == {
            6: "ESTABLISHED", 17: "ESTABLISHED"}
        tmpl = pk.Template(pk.tcp_packet(C, S, 1, 80, flags="S", seq=1), "IPv4.src",
                           "TCP.sport")
        syns = [tmpl.build(0x0B000000 + i, 1024 + i % 60000) for i in range(new_flows)]
        for r in range(rounds):
            keep("floor", per_packet(fl.programs["floor_tc"], frames["udp established"],
                                     repeat))
            keep("parse", per_packet(fl.programs["parse"], frames["udp established"],
                                     repeat))
            for name, f in frames.items():
                keep(name, per_packet(prog, f, repeat))
            # one run per distinct SYN: each creates an entry
            part = syns[r::rounds]
            keep("floor (repeat=1)", sum(fl.programs["floor_tc"].test_run(f).duration_ns
                                         for f in part) / len(part))
            keep("tcp new (SYN)", sum(prog.test_run(f).duration_ns for f in part) / len(part))
            keep("tcp new (SYN), table full", sum(small.program.test_run(f).duration_ns
                                                  for f in part) / len(part))
    out = {"floor": best["floor"], "parse": best["parse"], "per_packet": {}}
    for name in frames:
        out["per_packet"][name] = {"ns": best[name], "added_ns": best[name] - best["floor"],
                                   "x_floor": best[name] / max(best["floor"], 0.1)}
    for name in ("tcp new (SYN)", "tcp new (SYN), table full"):
        out["per_packet"][name] = {"ns": best[name], "floor_ns": best["floor (repeat=1)"],
                                   "added_ns": best[name] - best["floor (repeat=1)"]}
    return out


def _fill(ct, n, expires_ns):
    """n established-table entries written directly (update_batch)."""
    import numpy as np
    m = ct.established
    kd, vd = m.numpy_dtypes()
    keys = np.zeros((n, kd.itemsize), np.uint8)
    idx = np.arange(n, dtype=np.uint32)
    keys[:, 0:4] = idx.byteswap().view(np.uint8).reshape(n, 4)        # a: 0.x.y.z
    keys[:, 16:20] = np.frombuffer(bytes([10, 0, 0, 2]), np.uint8)
    keys = keys.view(kd).reshape(n)
    keys["aport"] = 40000
    keys["bport"] = 80
    keys["proto"] = 6
    keys["family"] = 4
    vals = np.zeros(n, vd)
    vals["state"] = 3
    vals["expires"] = expires_ns
    for i in range(0, n, 65536):
        m.update_batch((keys[i:i + 65536], vals[i:i + 65536]))


def _memlock(m):
    with open("/proc/self/fdinfo/%d" % m.fd) as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


def sweep_costs(sizes):
    out = {}
    for n in sizes:
        with Conntrack(max_entries=int(n * 1.25), events=False) as ct:
            clock = ct.clock
            _fill(ct, n, clock.now() + 3600 * clock.hz)
            ct.sweep()                               # warm up (numpy, buffers)
            scan = min(ct.sweep().seconds for _ in range(3))
            res = ct.sweep(now=time.monotonic() + 7200)
            out[n] = {"entries": res.scanned, "scan_s": scan, "scan_reap_s": res.seconds,
                      "read_s": res.read_seconds, "reap_s": res.reap_seconds,
                      "deleted": res.deleted,
                      "memory_per_entry_bytes": _memlock(ct.established) / ct.established.max_entries,
                      "scan_s_per_100k": scan * 100_000 / n,
                      "scan_reap_s_per_100k": res.seconds * 100_000 / n}
    return out


def flood(n, established=10_000):
    with Conntrack(max_entries=65536, embryonic_entries=65536, events=False) as ct:
        prog = ct.program
        for i in range(established):
            handshake(prog, 1024 + i)
        tmpl = pk.Template(pk.tcp_packet(C, S, 1, 80, flags="S", seq=1), "IPv4.src",
                           "TCP.sport")
        t0 = time.perf_counter()
        for i in range(n):
            prog.test_run(tmpl.build(0x0B000000 + i, 1024 + i % 60000))
        dt = time.perf_counter() - t0
        s = ct.stats()
        alive = sum(1 for c in ct.entries(table="established") if c.state.name == "ESTABLISHED")
        return {"syns": n, "established_before": established, "established_after": alive,
                "evicted_established": s.evicted_established,
                "evicted_embryonic": s.evicted_embryonic, "embryonic": s.embryonic,
                "seconds": dt}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeat", type=int, default=200_000)
    p.add_argument("--new-flows", type=int, default=70_000)
    p.add_argument("--sweep-sizes", default="100000,1000000")
    p.add_argument("--flood", type=int, default=1_000_000, help="SYNs (0: skip)")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    res = {"kernel": os.uname().release}
    res.update(per_packet_costs(args.repeat, args.rounds, args.new_flows))
    res["sweep"] = sweep_costs([int(x) for x in args.sweep_sizes.split(",") if x])
    if args.flood:
        res["flood"] = flood(args.flood)
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
        return 0
    print("conntrack per packet (BPF_PROG_TEST_RUN, min of %d rounds, kernel %s)" % (
        args.rounds, res["kernel"]))
    print("  %-30s %8.1f ns" % ("floor (TC_ACT_UNSPEC)", res["floor"]))
    print("  %-30s %8.1f ns (+%.1f)" % ("parse only", res["parse"],
                                         res["parse"] - res["floor"]))
    for name, v in res["per_packet"].items():
        print("  %-30s %8.1f ns   +%6.1f ns over the floor" % (name, v["ns"], v["added_ns"]))
    for n, v in res["sweep"].items():
        print("sweep of %d entries: scan %.3f s, scan+reap (all expired) %.3f s; "
              "per 100k: %.3f s / %.3f s; %.0f bytes per entry" % (
                  n, v["scan_s"], v["scan_reap_s"], v["scan_s_per_100k"],
                  v["scan_reap_s_per_100k"], v["memory_per_entry_bytes"]))
    if args.flood:
        f = res["flood"]
        print("flood of %d SYNs: established %d -> %d (evicted %d); embryonic evictions %d "
              "(%.1f s)" % (f["syns"], f["established_before"], f["established_after"],
                            f["evicted_established"], f["evicted_embryonic"], f["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
