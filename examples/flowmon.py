"""Watch flows with the flow monitor: one line per flow as it ends, then
the TCP handshake RTT histogram (bcc tcprtt's layout).

    python examples/flowmon.py IFACE [--seconds N] [--json]   # an interface of this host
    python examples/flowmon.py                                # a demo lab, traffic included

Without an interface it builds a lab of two network namespaces joined by
a veth pair, monitors the client's end (TC ingress and egress), makes a
few TCP connections (IPv4 and IPv6) and UDP exchanges, and prints the
records and the histogram; the lab is removed at the end. Needs root
(CAP_BPF, CAP_NET_ADMIN).
"""

import argparse
import socket
import sys
import threading
import time

from pybpfnet.dataplanes.flowmon import FlowMonitor


def tcp_roundtrip(hosts, v6, up, down):
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    ip = str(hosts.server_ip6 if v6 else hosts.server_ip)
    with hosts.server.create_server((ip, 0), family=fam) as srv:
        def serve():
            conn, _ = srv.accept()
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(b"s" * down)
        t = threading.Thread(target=serve)
        t.start()
        with hosts.client.create_connection((ip, srv.getsockname()[1])) as c:
            c.sendall(b"c" * up)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        t.join()


def demo(out=sys.stdout, json_lines=False):
    """Run the demo lab; returns the records it printed."""
    from pybpfnet.netlab import Lab

    with Lab() as lab:
        hosts = lab.two_hosts()
        with hosts.client.enter():
            fm = FlowMonitor(["eth0"], idle_timeout=0.5, sweep_interval=0.2)
        with fm:
            for v6, up, down in ((False, 2000, 50000), (True, 100, 10), (False, 1, 1)):
                tcp_roundtrip(hosts, v6, up, down)
            with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                    hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                rx.bind((str(hosts.server_ip), 0))
                for n in (10, 100, 1000):
                    tx.sendto(b"u" * n, rx.getsockname())
                    rx.recv(2048)
            records = []
            end = time.monotonic() + 1.0           # let the idle timeout take the rest
            while time.monotonic() < end:
                records += fm.poll(timeout=0.2)
            records += fm.flush()
            for r in records:
                out.write((r.to_json() if json_lines else str(r)) + "\n")
            out.write("\nTCP handshake RTT (SYN -> SYN-ACK at the client's eth0):\n")
            out.write(str(fm.rtt_histogram()) + "\n")
            out.write("%s\n" % (fm.stats(),))
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("iface", nargs="?", help="interface to watch (default: a demo lab)")
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.add_argument("--json", action="store_true", help="JSON lines")
    args = p.parse_args(argv)
    if args.iface is None:
        demo(json_lines=args.json)
        return 0
    from pybpfnet.dataplanes.flowmon_cli import cmd_flows
    args.iface, args.direction, args.rtt_hist = [args.iface], "both", True
    args.idle_timeout, args.active_timeout, args.max_flows = 15.0, 60.0, 65536
    return cmd_flows(args)


if __name__ == "__main__":
    sys.exit(main())
