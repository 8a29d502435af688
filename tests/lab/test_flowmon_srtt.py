"""Kernel smoothed RTT (FlowMonitor(srtt=True): tp_btf/tcp_probe) on a real
TCP connection over a veth, IPv4 and IPv6. The oracle is the socket's own
TCP_INFO tcpi_rtt (srtt_us >> 3), read when the last segment the client
received acknowledged nothing new (so that segment's tcp_probe saw the
final srtt: no RTT sample follows it)."""

import socket
import struct
import threading

import pytest

from flowlab import run_beside, serve_one
from pybpfnet.dataplanes._flow_hist import slot
from pybpfnet.dataplanes.flowmon import FlowMonitor

ROUNDS = 30


def tcpi_rtt(sock):
    """struct tcp_info's tcpi_rtt (linux/tcp.h: offset 68, microseconds)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("<I", raw, 68)[0]


def recv_exact(sock, n):
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "peer closed early"
        got += chunk
    return got


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


def connect(hosts, mode, server_ip, port):
    if mode != "v4-mapped":
        return hosts.client.create_connection((server_ip, port))
    # a dual-stack IPv6 socket talking IPv4: the kernel keeps ::ffff:a.b.c.d
    c = hosts.client.socket(socket.AF_INET6)
    c.settimeout(10)
    c.connect(("::ffff:" + server_ip, port))
    return c


@pytest.mark.parametrize("mode", ["ipv4", "ipv6", "v4-mapped"])
def test_srtt_per_flow_and_histogram(hosts, mode):
    v6 = mode == "ipv6"
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    server_ip = str(hosts.server_ip6 if v6 else hosts.server_ip)
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], idle_timeout=3600, active_timeout=3600, srtt=True)
    with fm, hosts.server.create_server((server_ip, 0), family=fam) as srv:
        assert fm.srtt_visible
        port = srv.getsockname()[1]
        go = threading.Event()

        def serve(conn):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(ROUNDS):
                recv_exact(conn, 100)
                conn.sendall(b"s" * 100)      # acknowledges the client's data
            go.wait(10)
            conn.sendall(b"z")                # acknowledges nothing new
            recv_exact(conn, 1)

        try:
            with serve_one(srv, serve), connect(hosts, mode, server_ip, port) as c:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for _ in range(ROUNDS):
                    c.sendall(b"c" * 100)
                    recv_exact(c, 100)
                go.set()
                assert recv_exact(c, 1) == b"z"
                rtt = tcpi_rtt(c)
                cport = c.getsockname()[1]
                flows = {(r.direction, r.sport, r.dport): r for r in fm.active()}
                hist = fm.srtt_histogram()
                stats = fm.stats()
                buckets = fm.histogram_buckets("srtt")
                c.sendall(b"!")
        finally:
            go.set()
        out = flows[("egress", cport, port)]
        back = flows[("ingress", port, cport)]
        # both halves of the connection carry the socket's latest srtt
        assert out.srtt_us == back.srtt_us == rtt > 0
        assert out.src.version == (6 if v6 else 4)
        assert "srtt=" in str(out) and out.to_dict()["srtt_us"] == rtt
        # one sample per segment the client received established (not the
        # SYN-ACK); the server's socket is in another namespace: not sampled
        assert hist.total == stats.srtt_samples
        assert 0 < hist.total <= back.packets - 1
        assert hist.counts[slot(rtt)] > 0
        assert hist.unit == "usecs" and "usecs" in str(hist)
        assert buckets[-1] == (float("inf"), hist.total)
        assert [b for _, b in buckets] == sorted(b for _, b in buckets)
        fm.reset_histogram()
        assert fm.srtt_histogram().total == 0 and fm.rtt_histogram().total == 0


def test_srtt_off_by_default(hosts):
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"])
    with fm:
        assert not fm.srtt_visible
        with hosts.server.create_server((str(hosts.server_ip), 0)) as srv:
            with hosts.client.create_connection((str(hosts.server_ip),
                                                 srv.getsockname()[1])) as c:
                conn, _ = srv.accept()
                with conn:
                    c.sendall(b"x")
                    assert recv_exact(conn, 1) == b"x"
                    conn.sendall(b"y")
                    assert recv_exact(c, 1) == b"y"
        recs = fm.active()
        assert recs and all(r.srtt_us is None for r in recs)
        assert fm.srtt_histogram().total == 0 == fm.stats().srtt_samples
    with pytest.raises(ValueError, match="which must be"):
        fm.histogram_buckets("nope")


def test_flows_command_srtt(hosts, capsys):
    import argparse
    import io
    import json
    import time

    from pybpfnet.dataplanes import flowmon_cli

    parser = argparse.ArgumentParser(prog="pybpfnet")
    flowmon_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flows", "eth0", "--json", "--seconds", "1.0", "--srtt"])
    out = io.StringIO()

    def traffic():
        time.sleep(0.3)
        with hosts.server.create_server((str(hosts.server_ip), 4100)) as srv, \
                hosts.client.create_connection((str(hosts.server_ip), 4100)) as c:
            conn, _ = srv.accept()
            with conn:
                for _ in range(5):
                    c.sendall(b"p")
                    recv_exact(conn, 1)
                    conn.sendall(b"q")
                    recv_exact(c, 1)

    def flows():
        with hosts.client.enter():
            return flowmon_cli.cmd_flows(args, out=out)

    assert run_beside(traffic, flows) == 0
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    tcp = [d for d in lines if d.get("dport") == 4100 and d.get("direction") == "egress"]
    assert tcp and all(d["srtt_us"] for d in tcp)
    (hist,) = [d["srtt_histogram"] for d in lines if "srtt_histogram" in d]
    assert hist["total"] >= 5 and hist["unit"] == "usecs"
    assert "srtt_samples=" in capsys.readouterr().err
