"""The firewall on real traffic between two lab namespaces: real TCP and UDP
sockets, XDP and TC, exact counters, a measured rate limit, and the
``fw`` command line across processes."""

import json
import os
import socket
import sys
import threading
import time

import pytest

from pybpfnet.dataplanes.firewall import Firewall, Rule, rate_limit
from pybpfnet.dataplanes.firewall_cli import PIN_ROOT, pin_dir

N = 25


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


def udp_receiver(ns, port, family=socket.AF_INET):
    s = ns.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.settimeout(0.3)
    return s


def drain(sock):
    n = 0
    try:
        while True:
            sock.recv(2048)
            n += 1
    except (socket.timeout, TimeoutError):
        return n


def send_udp(ns, dst, port, count, family=socket.AF_INET):
    s = ns.socket(family, socket.SOCK_DGRAM)
    for i in range(count):
        s.sendto(b"%d" % i, (str(dst), port))
    s.close()


def tcp_connects(ns, dst, port, timeout=0.5):
    try:
        ns.create_connection((str(dst), port), timeout=timeout).close()
        return True
    except (TimeoutError, socket.timeout, ConnectionRefusedError):
        return False


def test_xdp_blocks_ports_and_counts_exactly(hosts):
    server, client = hosts.server, hosts.client
    open_srv = server.create_server(("0.0.0.0", 8080))
    closed_srv = server.create_server(("0.0.0.0", 2222))
    ok4, blocked4 = udp_receiver(server, 5000), udp_receiver(server, 5353)
    ok6 = udp_receiver(server, 5001, socket.AF_INET6)
    rules = [Rule("drop", protocol="tcp", dport=2222, name="no-2222"),
             Rule("drop", protocol="udp", dport=5353, name="no-mdns"),
             Rule("count", protocol="udp", dport="5000-5001", name="udp-5k")]
    with server.enter():
        fw = Firewall("eth0", rules, hook="xdp")
    with fw:
        assert fw.interfaces == ["eth0"]
        assert tcp_connects(client, hosts.server_ip, 8080)
        assert not tcp_connects(client, hosts.server_ip, 2222)
        send_udp(client, hosts.server_ip, 5000, N)
        send_udp(client, hosts.server_ip, 5353, N)
        send_udp(client, hosts.server_ip6, 5353, N, socket.AF_INET6)
        send_udp(client, hosts.server_ip6, 5001, N, socket.AF_INET6)
        assert drain(ok4) == N and drain(ok6) == N and drain(blocked4) == 0
        s = {r.rule.name: r for r in fw.stats().rules}
        assert (s["no-mdns"].packets, s["no-mdns"].drops) == (2 * N, 2 * N)
        assert (s["udp-5k"].packets, s["udp-5k"].drops) == (2 * N, 0)
        assert s["no-2222"].packets >= 1 and s["no-2222"].drops == s["no-2222"].packets
    # closed: detached, traffic flows again
    assert tcp_connects(client, hosts.server_ip, 2222)
    open_srv.close()
    closed_srv.close()


def test_tc_filters_ingress_and_egress(hosts):
    server, client = hosts.server, hosts.client
    echo = udp_receiver(server, 5000)
    stop = threading.Event()

    def serve():
        echo.settimeout(0.1)
        while not stop.is_set():
            try:
                data, addr = echo.recvfrom(2048)
            except (socket.timeout, TimeoutError):
                continue
            echo.sendto(data, addr)
    t = threading.Thread(target=serve)
    t.start()
    srv = server.create_server(("0.0.0.0", 8080))
    rules = [Rule("drop", protocol="udp", sport=5000, direction="egress", name="no-replies"),
             Rule("drop", protocol="tcp", dport=8080, direction="ingress", src=str(
                 hosts.network), name="no-8080-in")]
    try:
        with server.enter():
            fw = Firewall("eth0", rules, hook="tc")
        with fw:
            cli = client.socket(socket.AF_INET, socket.SOCK_DGRAM)
            cli.settimeout(0.3)
            for i in range(N):
                cli.sendto(b"ping", (str(hosts.server_ip), 5000))
            assert drain(cli) == 0                  # replies dropped at server egress
            assert not tcp_connects(client, hosts.server_ip, 8080)
            s = {r.rule.name: r for r in fw.stats().rules}
            assert (s["no-replies"].packets, s["no-replies"].drops) == (N, N)
            assert s["no-8080-in"].drops >= 1
            fw.apply([])                            # open everything, atomically
            cli.sendto(b"ping", (str(hosts.server_ip), 5000))
            assert drain(cli) == 1
            assert tcp_connects(client, hosts.server_ip, 8080)
    finally:
        stop.set()
        t.join()
        srv.close()


def test_rate_limit_holds_the_configured_rate(hosts):
    """A source sending as fast as it can gets pps (+ the burst) through,
    within 10%."""
    server, client = hosts.server, hosts.client
    pps, burst = 400, 10
    rx = udp_receiver(server, 6000)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    with server.enter():
        fw = Firewall("eth0", [Rule(rate_limit(pps, burst), protocol="udp", dport=6000)])
    with fw:
        tx = client.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = (str(hosts.server_ip), 6000)
        sent = 0
        start = time.monotonic()
        end = start + 1.0
        while time.monotonic() < end:
            for _ in range(50):
                tx.sendto(b"x", dst)
            sent += 50
        elapsed = time.monotonic() - start
        got = drain(rx)
        expected = burst + pps * elapsed
        assert sent > 3 * expected, "the sender was too slow to test the limit"
        assert abs(got - expected) <= 0.1 * expected, (got, expected, sent)
        s = fw.stats().rules[0]
        assert s.packets == sent and s.packets - s.drops == got


def cli(ns, *args, check=True):
    res = ns.run_process([sys.executable, "-m", "pybpfnet.cli", "fw",
                          *args], capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_command_line(hosts, tmp_path):
    server, client = hosts.server, hosts.client
    rules = tmp_path / "rules.toml"
    rules.write_text('[firewall]\ndefault = "pass"\n\n'
                     '[[rule]]\nname = "no-mdns"\naction = "drop"\nprotocol = "udp"\n'
                     'dport = 5353\n\n'
                     '[[rule]]\nname = "seen"\naction = "count"\nprotocol = "udp"\n'
                     'dport = 5000\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\naction = "drop"\nprotocol = "udp"\ndport = "53-"\n')
    ok, blocked = udp_receiver(server, 5000), udp_receiver(server, 5353)
    path = server.run(pin_dir, "eth0")
    try:
        out = cli(server, "apply", str(rules), "--iface", "eth0").stdout
        assert "attached a firewall to eth0 (xdp): 2 rules" in out
        assert os.path.isdir(path)
        send_udp(client, hosts.server_ip, 5000, N)
        send_udp(client, hosts.server_ip, 5353, N)
        assert drain(ok) == N and drain(blocked) == 0
        stats = json.loads(cli(server, "stats", "--iface", "eth0", "--json").stdout)["eth0"]
        assert stats["generation"] == 1 and stats["hook"] == "xdp"
        by_name = {r["name"]: r for r in stats["rules"]}
        assert by_name["no-mdns"]["packets"] == N and by_name["no-mdns"]["drops"] == N
        assert by_name["seen"]["packets"] == N
        table = cli(server, "stats").stdout
        assert "eth0 (xdp, generation 1)" in table and "no-mdns: drop udp dport 5353" in table

        res = cli(server, "apply", str(bad), "--iface", "eth0", check=False)
        assert res.returncode == 1
        assert "bad.toml:4: rule 1: dport:" in res.stderr
        send_udp(client, hosts.server_ip, 5353, N)
        assert drain(blocked) == 0                  # the running set is untouched
        stats = json.loads(cli(server, "stats", "--json").stdout)["eth0"]
        assert stats["generation"] == 1 and stats["rules"][0]["drops"] == 2 * N

        rules.write_text('[[rule]]\nname = "seen"\naction = "count"\nprotocol = "udp"\n'
                         'dport = 5000\n')
        out = cli(server, "apply", str(rules), "--iface", "eth0").stdout
        assert "replaced the rule set of eth0" in out and "generation 2" in out
        send_udp(client, hosts.server_ip, 5353, N)
        assert drain(blocked) == N
        stats = json.loads(cli(server, "stats", "--json").stdout)["eth0"]
        assert stats["rules"][0]["packets"] == N    # kept across the update
        res = cli(server, "apply", str(rules), "--iface", "eth0", "--hook", "tc",
                  check=False)
        assert res.returncode == 1 and "runs the firewall at xdp, not tc" in res.stderr

        assert "removed" in cli(server, "remove", "--iface", "eth0").stdout
        assert not os.path.exists(path)
        res = cli(server, "stats", "--iface", "eth0", check=False)
        assert res.returncode == 1 and "no firewall on eth0" in res.stderr
    finally:
        if os.path.isdir(path):
            cli(server, "remove", "--iface", "eth0", check=False)
        for d in (PIN_ROOT, os.path.dirname(PIN_ROOT)):
            try:
                os.rmdir(d)
            except OSError:
                pass
