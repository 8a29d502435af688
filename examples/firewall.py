"""Block a port and a prefix with the XDP firewall, on a throwaway lab.

    python examples/firewall.py [--hook xdp|tc]

Builds two network namespaces (client, server) joined by a veth pair,
puts a firewall on the server's interface that drops TCP port 2222, UDP
port 5353 and everything from 10.0.0.0/30 except ping, counts the UDP that
gets through, and rate-limits ICMP echo to 5 per second per source. Then it
sends real traffic from the client and prints what happened and the
per-rule counters. Finally it swaps in a new rule set atomically and shows
that the port opened. The lab is removed at the end. Needs root (CAP_BPF,
CAP_NET_ADMIN).
"""

import argparse
import socket
import sys

from pybpfnet.dataplanes.firewall import Firewall, Rule, RuleSet, rate_limit
from pybpfnet.netlab import Lab


def udp_delivered(client, server, dst, port, count):
    """How many of ``count`` datagrams reached a socket on the server."""
    rx = server.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("0.0.0.0", port))
    rx.settimeout(0.3)
    tx = client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(count):
        tx.sendto(b"hello", (str(dst), port))
    got = 0
    try:
        while True:
            rx.recv(100)
            got += 1
    except (socket.timeout, TimeoutError):
        pass
    rx.close()
    tx.close()
    return got


def tcp_opens(client, server, dst, port):
    srv = server.create_server(("0.0.0.0", port))
    try:
        client.create_connection((str(dst), port), timeout=0.5).close()
        return True
    except (TimeoutError, socket.timeout):
        return False
    finally:
        srv.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hook", choices=("xdp", "tc"), default="xdp")
    args = ap.parse_args(argv)

    rules = RuleSet([
        Rule("pass", protocol="icmp", icmp_type="echo-reply", name="pings-back"),
        Rule(rate_limit(5, burst=5), protocol="icmp", icmp_type="echo-request",
             name="ping-limit"),
        Rule("drop", protocol="tcp", dport=2222, name="no-2222"),
        Rule("drop", protocol="udp", dport=5353, name="no-mdns"),
        Rule("count", protocol="udp", name="udp-seen"),
        Rule("drop", src="10.0.0.0/30", protocol="tcp", dport="1-1023", name="no-low-ports"),
    ], default="pass")

    with Lab() as lab:
        hosts = lab.two_hosts(v6=False)          # client 10.0.0.1, server 10.0.0.2
        client, server, dst = hosts.client, hosts.server, hosts.server_ip
        with server.enter():                     # eth0 is the server's interface
            fw = Firewall("eth0", rules, hook=args.hook)
        with fw:
            print(fw)
            print("TCP 8080 open:   ", tcp_opens(client, server, dst, 8080))
            print("TCP 2222 open:   ", tcp_opens(client, server, dst, 2222))
            print("TCP 22 open:     ", tcp_opens(client, server, dst, 22))
            print("UDP 5000 delivered %d of 20" % udp_delivered(client, server, dst, 5000, 20))
            print("UDP 5353 delivered %d of 20" % udp_delivered(client, server, dst, 5353, 20))
            print("ping replies:     %d of 12 (5 per second per source)"
                  % client.ping(dst, count=12, timeout=0.2))
            print()
            print(fw.stats())

            fw.apply([r for r in rules.rules if r.name != "no-2222"])
            print()
            print("after apply() without no-2222 (generation %d): TCP 2222 open: %s"
                  % (fw.generation, tcp_opens(client, server, dst, 2222)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
