"""Packet building/parsing speed of pybpfnet.packet (standalone, no privileges).

Builds 1M Ethernet/IPv4/UDP packets with ``Template`` (source address and
port varying per packet, checksums updated) and prints packets/s, next to the
general builder (``bytes(Ethernet(...) / IPv4(...) / ...)``), the parser and,
when scapy is importable, scapy building the same packets as the baseline of
the same run.

    .venv/bin/python benchmarks/bench_packet.py [--count 1000000] [--json]
"""

import argparse
import json
import sys
import time

from pybpfnet.packet import (IPv4, IPv6, UDP, Ethernet, Template, parse, udp_packet)

PAYLOAD = b"x" * 18          # 14 + 20 + 8 + 18 = 60 bytes, the minimum Ethernet frame


def _rate(n, seconds):
    return n / seconds if seconds else float("inf")


def bench_template(count, family=4):
    if family == 4:
        base = udp_packet("10.0.0.1", "10.0.0.2", 1024, 53, PAYLOAD)
        first = 0x0A000000
    else:
        base = udp_packet("2001:db8::1", "2001:db8::2", 1024, 53, PAYLOAD)
        first = 0x20010DB8 << 96
    layer = "IPv4" if family == 4 else "IPv6"
    tmpl = Template(base, layer + ".src", "UDP.sport")
    build = tmpl.build
    t0 = time.perf_counter()
    for i in range(count):
        build(first + (i & 0xFFFFFF), i & 0xFFFF)
    dt = time.perf_counter() - t0
    # spot check: the last packet is the one the general builder makes
    i = count - 1
    cls = IPv4 if family == 4 else IPv6
    assert build(first + (i & 0xFFFFFF), i & 0xFFFF) == bytes(
        base.evolve(cls, src=first + (i & 0xFFFFFF)).evolve(UDP, sport=i & 0xFFFF))
    return dt


def bench_full(count):
    t0 = time.perf_counter()
    for i in range(count):
        bytes(Ethernet(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IPv4(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=i & 0xFFFF, dport=53)
              / PAYLOAD)
    return time.perf_counter() - t0


def bench_bytes_only(count):
    pkt = udp_packet("10.0.0.1", "10.0.0.2", 1024, 53, PAYLOAD)
    t0 = time.perf_counter()
    for _ in range(count):
        bytes(pkt)
    return time.perf_counter() - t0


def bench_parse(count):
    data = bytes(udp_packet("10.0.0.1", "10.0.0.2", 1024, 53, PAYLOAD))
    t0 = time.perf_counter()
    for _ in range(count):
        parse(data)
    return time.perf_counter() - t0


def bench_scapy(count):
    try:
        from scapy.all import IP, UDP as SUDP, Ether, raw
    except ImportError:
        return None
    t0 = time.perf_counter()
    for i in range(count):
        raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="10.0.0.1", dst="10.0.0.2") / SUDP(sport=i & 0xFFFF, dport=53) / PAYLOAD)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000,
                    help="packets built with Template (default 1000000)")
    ap.add_argument("--full-count", type=int, default=100_000,
                    help="packets for the general builder and the parser (default 100000)")
    ap.add_argument("--scapy-count", type=int, default=20_000,
                    help="packets built by scapy for the baseline (default 20000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)

    rows = []

    def add(name, n, seconds):
        rows.append({"name": name, "packets": n, "seconds": seconds,
                     "packets_per_s": _rate(n, seconds)})

    add("Template.build IPv4/UDP (src, sport vary)", args.count, bench_template(args.count))
    add("Template.build IPv6/UDP (src, sport vary)", args.count // 4,
        bench_template(args.count // 4, family=6))
    add("construct + bytes() Ethernet/IPv4/UDP", args.full_count, bench_full(args.full_count))
    add("bytes() of a built Packet", args.full_count, bench_bytes_only(args.full_count))
    add("parse() Ethernet/IPv4/UDP", args.full_count, bench_parse(args.full_count))
    scapy_s = bench_scapy(args.scapy_count)
    if scapy_s is not None:
        add("scapy raw(Ether()/IP()/UDP()/payload)", args.scapy_count, scapy_s)

    if args.json:
        json.dump({"results": rows}, sys.stdout, indent=2)
        print()
        return 0
    base = rows[-1]["packets_per_s"] if scapy_s is not None else None
    print("%-46s %10s %9s %14s %s" % ("benchmark", "packets", "seconds", "packets/s",
                                      "vs scapy" if base else ""))
    for r in rows:
        ratio = "%.1fx" % (r["packets_per_s"] / base) if base else ""
        print("%-46s %10d %9.3f %14s %s" % (r["name"], r["packets"], r["seconds"],
                                            "{:,.0f}".format(r["packets_per_s"]), ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
