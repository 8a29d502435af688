"""Track connections with the BPF connection tracker and show them the way
``conntrack -E`` and ``conntrack -L`` do.

    python examples/conntrack.py IFACE [--seconds N]   # an interface of this host
    python examples/conntrack.py                       # a demo lab, traffic included

On an interface it prints events until Ctrl-C (or N seconds), sweeping
expired connections every few seconds, then the table. Without one it
builds a lab of two network namespaces joined by a veth pair, tracks the
server's end (TC ingress and egress), opens, uses and closes a TCP
connection over IPv4 and IPv6, resets another, sends UDP and pings, and
prints the events and the table; the lab is removed at the end. Needs root
(CAP_BPF, CAP_NET_ADMIN).
"""

import argparse
import socket
import struct
import sys
import threading
import time

from pybpfnet.dataplanes.conntrack import Conntrack


def tcp_exchange(hosts, v6=False, reset=False):
    """One TCP connection from the client: a request, an answer, a close
    (an RST with ``reset``)."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    ip = str(hosts.server_ip6 if v6 else hosts.server_ip)
    with hosts.server.create_server((ip, 0), family=fam) as srv:
        def serve():
            conn, _ = srv.accept()
            with conn:
                conn.recv(1000)
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 20000)
                try:
                    conn.recv(10)
                except ConnectionResetError:
                    pass
        t = threading.Thread(target=serve)
        t.start()
        c = hosts.client.create_connection((ip, srv.getsockname()[1]))
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        got = 0
        while got < 20019:
            got += len(c.recv(65536))
        if reset:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        t.join()


def demo(out=sys.stdout):
    """Run the demo lab; returns (events, connections) it printed."""
    from pybpfnet.netlab import Lab

    with Lab() as lab, Conntrack() as ct:
        hosts = lab.two_hosts()
        with hosts.server.enter():
            ct.attach("eth0")
        events = ct.events()
        tcp_exchange(hosts)
        tcp_exchange(hosts, v6=True)
        tcp_exchange(hosts, reset=True)
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 53))
            tx.sendto(b"query", rx.getsockname())
            data, peer = rx.recvfrom(100)
            rx.sendto(b"answer", peer)
            tx.recv(100)
        hosts.client.ping(hosts.server_ip, count=2)
        hosts.client.ping(hosts.server_ip6, count=1)
        time.sleep(0.1)
        seen = events.poll(0)
        print("events (like conntrack -E):", file=out)
        for ev in seen:
            print(ev.format(), file=out)
        conns = sorted(ct.entries(), key=lambda c: c.first_seen)
        print("\ntable (like conntrack -L):", file=out)
        for c in conns:
            print(c.format(), file=out)
        s = ct.stats()
        print("\n%d connections (%d established, %d embryonic), %d packets, %d untracked "
              "(ARP, neighbour discovery)" % (s.established + s.embryonic, s.established,
                                              s.embryonic, s.packets, s.untracked), file=out)
        return seen, conns


def watch(iface, seconds=None, out=sys.stdout):
    with Conntrack() as ct:
        ct.attach(iface)
        events = ct.events()
        end = None if seconds is None else time.monotonic() + seconds
        next_sweep = time.monotonic() + 5
        try:
            while end is None or time.monotonic() < end:
                for ev in events.poll(0.5):
                    print(ev.format(), file=out, flush=True)
                if time.monotonic() >= next_sweep:
                    ct.sweep()
                    next_sweep = time.monotonic() + 5
        except KeyboardInterrupt:
            pass
        for c in ct.entries():
            print(c.format(), file=out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("iface", nargs="?", help="interface to track (default: a demo lab)")
    p.add_argument("--seconds", type=float, help="stop after this long")
    args = p.parse_args(argv)
    if args.iface:
        watch(args.iface, args.seconds)
    else:
        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
