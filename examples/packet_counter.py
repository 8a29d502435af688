"""Count packets and bytes per source address with XDP, live.

    python examples/packet_counter.py IFACE [--seconds N]   # an interface of this host
    python examples/packet_counter.py                       # a demo lab, traffic included

With an interface it attaches the bundled ``packet_counter`` XDP program
(csrc/bpf/packet_counter) and redraws a table every second until Ctrl-C (or
``--seconds``). Without one it builds a lab of two network namespaces joined
by a veth pair, attaches the program to the server's end, sends UDP (IPv4
and IPv6) and pings from the client, and shows the counts; the lab is
removed at the end. Needs root (CAP_BPF, CAP_NET_ADMIN).
"""

import argparse
import contextlib
import ipaddress
import socket
import sys
import threading
import time

import pybpfnet as bn


def source_name(key):
    if key.family == 4:
        return str(ipaddress.IPv4Address(key.addr[:4]))
    if key.family == 6:
        return str(ipaddress.IPv6Address(key.addr))
    return "(not IP)"


class Counter:
    """The loaded program and its per-source table (per-CPU values summed)."""

    def __init__(self):
        self.obj = bn.load_bundled("packet_counter")
        self.prog = self.obj.programs["count_sources"]
        self.sources = self.obj.maps["sources"]
        self.last = {}
        self.last_time = time.monotonic()

    def rows(self):
        """(source, packets, bytes, packets/s) sorted by bytes."""
        now = time.monotonic()
        dt = max(now - self.last_time, 1e-6)
        rows = []
        current = {}
        for key, per_cpu in self.sources.items():
            total = bn.sum_values(per_cpu)
            name = source_name(key)
            current[name] = total.packets
            rate = (total.packets - self.last.get(name, 0)) / dt
            rows.append((name, total.packets, total.bytes, rate))
        self.last, self.last_time = current, now
        return sorted(rows, key=lambda r: -r[2])

    def close(self):
        self.obj.close()


def render(rows, title):
    lines = [title, "%-40s %10s %12s %10s" % ("source", "packets", "bytes", "pkt/s")]
    for name, packets, nbytes, rate in rows:
        lines.append("%-40s %10d %12d %10.0f" % (name, packets, nbytes, rate))
    if not rows:
        lines.append("(no packets yet)")
    return "\n".join(lines)


def show(counter, title, seconds, out=sys.stdout):
    """Redraw the table every second (in place on a terminal)."""
    tty = out.isatty()
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        time.sleep(1)
        table = render(counter.rows(), title)
        if tty:
            out.write("\x1b[H\x1b[2J")
        out.write(table + "\n\n")
        out.flush()


def watch_interface(iface, seconds):
    counter = Counter()
    try:
        with counter.prog.attach_xdp(iface):
            show(counter, "packets per source on %s (Ctrl-C to stop)" % iface, seconds)
    except KeyboardInterrupt:
        pass
    finally:
        counter.close()


def demo(seconds=3):
    from pybpfnet.netlab import Lab

    with Lab() as lab, contextlib.closing(Counter()) as counter:
        hosts = lab.two_hosts()
        with hosts.server.enter():
            link = counter.prog.attach_xdp(hosts.server_if, mode="native")
        stop = threading.Event()

        def traffic():
            s4 = hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s6 = hosts.client.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            i = 0
            while not stop.is_set():
                s4.sendto(b"x" * (i % 100), (str(hosts.server_ip), 9))
                if i % 2 == 0:
                    s6.sendto(b"y" * 64, (str(hosts.server_ip6), 9))
                if i % 50 == 0:
                    hosts.client.ping(hosts.server_ip, count=1, timeout=1)
                i += 1
                time.sleep(0.001)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            show(counter, "packets per source on %s in %s (demo lab)" % (
                hosts.server_if, hosts.server.name), seconds)
        finally:
            stop.set()
            sender.join()
            link.close()
        totals = {name: packets for name, packets, _, _ in counter.rows()}
        print("final counts:", totals)
        return totals


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("iface", nargs="?", help="interface to watch (default: a demo lab)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: until Ctrl-C; 3 s for the demo)")
    args = p.parse_args(argv)
    if args.iface:
        watch_interface(args.iface, args.seconds)
    else:
        demo(args.seconds or 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
