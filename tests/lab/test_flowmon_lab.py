"""Flow monitor on a real veth in a lab: TCP and UDP over IPv4 and IPv6
between two namespaces. Oracles are the sockets themselves: TCP_INFO's
segs_out and bytes_sent (what each endpoint put on the wire, GSO segments
counted one by one) and the UDP datagrams we sent; L2 bytes are computed
from the header sizes of each segment (Ethernet 14, IPv4 20 / IPv6 40,
TCP 20 + 12 timestamp option, SYN and SYN-ACK 20 + 20 options, UDP 8)."""

import json
import io
import socket
import threading
import time

import pytest

from flowlab import drain, serve_one, wait_closed
from pybpfnet.dataplanes.flowmon import FlowMonitor, write_jsonl


def assert_tcp_bytes(got, segs, sent, retrans, v6):
    """``got`` L2 bytes for ``segs`` segments carrying ``sent`` bytes of new
    data. Retransmitted segments are in segs_out; whether their payload is
    also in bytes_sent depends on the kernel's retransmit path, so with
    retransmissions (never in a quiet lab) either total is exact."""
    want = {l2_tcp_bytes(segs, sent, v6), l2_tcp_bytes(segs, sent + retrans, v6)}
    assert got in want, (got, want, retrans)


def l2_tcp_bytes(segs, payload, v6):
    """Wire bytes of one direction of a connection: every segment carries
    Ethernet + IP + TCP with timestamps (32); the SYN or SYN-ACK 8 more."""
    ip = 40 if v6 else 20
    return payload + segs * (14 + ip + 32) + 8


def tcp_exchange(hosts, v6, up, down, before_close=None, chunk=None):
    """One connection: the client sends ``up`` bytes, half-closes, the server
    answers ``down`` bytes and closes. Returns the TCP_INFO totals of both
    ends once both sockets reached CLOSE (every FIN and ACK sent)."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    server_ip = str(hosts.server_ip6 if v6 else hosts.server_ip)
    result = {}
    with hosts.server.create_server((server_ip, 0), family=fam) as srv:
        port = srv.getsockname()[1]

        def serve(conn):
            result["server_got"] = drain(conn)
            conn.sendall(b"s" * down)
            conn.shutdown(socket.SHUT_WR)
            result["server"] = wait_closed(conn)

        with serve_one(srv, serve), hosts.client.create_connection((server_ip, port)) as c:
            step = chunk or max(up, 1)
            for i in range(0, up, step):
                c.sendall(b"c" * min(step, up - i))
                if chunk:
                    time.sleep(0.001)
            if before_close is not None:
                before_close()
            c.shutdown(socket.SHUT_WR)
            result["client_got"] = drain(c)
            result["client"] = wait_closed(c)
            result["client_port"] = c.getsockname()[1]
    assert result["server_got"] == up and result["client_got"] == down
    result["port"] = port
    return result


def totals(records):
    """Records summed per flow key."""
    out = {}
    for r in records:
        out[r.key] = out[r.key].merge(r) if r.key in out else r
    return out


def find(flows, sport, dport, direction, proto=6):
    got = [r for k, r in flows.items()
           if (r.sport, r.dport, r.direction, r.protocol) == (sport, dport, direction, proto)]
    assert len(got) == 1, (sport, dport, direction, flows)
    return got[0]


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_counts_equal_what_sockets_sent(hosts, v6):
    sizes = [(0, 0), (1, 100), (1000, 70000), (300000, 5)]
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], idle_timeout=3600, active_timeout=3600)
    with fm:
        runs = [tcp_exchange(hosts, v6, up, down) for up, down in sizes]
        records = []
        deadline = time.monotonic() + 5
        while sum(1 for r in records if r.reason == "fin") < 2 * len(sizes):
            assert time.monotonic() < deadline, records
            records += fm.poll(timeout=0.2)
        assert fm.stats().lost_records == 0
        records += fm.flush()
        assert fm.stats().full == 0
        hist = fm.rtt_histogram()
    flows = totals(records)
    for run, (up, down) in zip(runs, sizes):
        cport, sport = run["client_port"], run["port"]
        out = find(flows, cport, sport, "egress")
        back = find(flows, sport, cport, "ingress")
        c_state, c_segs, c_bytes, c_retrans = run["client"]
        s_state, s_segs, s_bytes, s_retrans = run["server"]
        assert (c_bytes, s_bytes) == (up, down)
        assert out.packets == c_segs
        assert_tcp_bytes(out.bytes, c_segs, up, c_retrans, v6)
        # the SYN-ACK leaves from the listener's request socket: the accepted
        # socket's segs_out does not count it
        assert back.packets == s_segs + 1
        assert_tcp_bytes(back.bytes, s_segs + 1, down, s_retrans, v6)
        assert set(out.flags) >= {"SYN", "ACK", "FIN"} and set(back.flags) >= {"SYN", "ACK", "FIN"}
        assert out.drops == 0 and back.drops == 0
        assert out.interface == "eth0" and out.src.version == (6 if v6 else 4)
        # handshake RTT: SYN out, SYN-ACK in, on the same interface
        assert out.rtt_ns is not None and 0 < out.rtt_ns < 1_000_000_000
        assert back.rtt_ns == out.rtt_ns
        assert out.start <= out.end and abs(out.start - time.time()) < 60
    # every connection's client FIN ended a record of its own
    fin_records = [r for r in records if r.reason == "fin" and r.direction == "egress"
                   and r.protocol == 6]
    assert len(fin_records) >= len(sizes)
    assert hist.total >= len(sizes)
    assert "usecs" in str(hist) and "distribution" in str(hist)


def test_udp_counts_and_jsonl(hosts):
    payloads = [1, 50, 1400, 0, 8000]          # 8000: IP fragments (ports only in the first)
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], directions=("egress",))
    with fm:
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 0))
            for p in payloads:
                tx.sendto(b"u" * p, rx.getsockname())
            for p in payloads:
                assert len(rx.recv(65536)) == p
            sport = tx.getsockname()[1]
            dport = rx.getsockname()[1]
        records = fm.flush()
    flows = totals(records)
    udp = find(flows, sport, dport, "egress", proto=17)
    # 8008 bytes of UDP leave as 6 fragments (1480 bytes of payload each at
    # MTU 1500, 608 in the last); only the first carries the ports, the
    # other 5 count under ports 0 (the BPF side does not reassemble)
    frags = find(flows, 0, 0, "egress", proto=17)
    assert udp.packets == 5 and frags.packets == 5
    assert udp.bytes == sum(14 + 20 + 8 + p for p in payloads[:4]) + 14 + 20 + 1480
    assert frags.bytes == 4 * (14 + 20 + 1480) + 14 + 20 + 608
    assert udp.tcp_flags == 0 and udp.rtt_ns is None and udp.reason == "flush"
    buf = io.StringIO()
    assert write_jsonl(records, buf) == len(records)
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    mine = [d for d in lines if d["sport"] == sport and d["protocol"] == "UDP"]
    assert mine[0]["bytes"] == udp.bytes and mine[0]["dst"] == str(hosts.server_ip)
    assert mine[0]["interface"] == "eth0" and mine[0]["direction"] == "egress"


def test_full_table_loses_nothing(hosts):
    """A two-entry table: new flows beyond it become one-packet records on
    the ring; records plus lost counters account for every packet sent."""
    n_flows, per_flow = 12, 3
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], directions=("egress",), max_flows=2)
    with fm:
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind((str(hosts.server_ip), 0))
            socks = [hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
                     for _ in range(n_flows)]
            try:
                for _ in range(per_flow):
                    for s in socks:
                        s.sendto(b"x" * 10, rx.getsockname())
                ports = {s.getsockname()[1] for s in socks}
            finally:
                for s in socks:
                    s.close()
        records = fm.poll(timeout=0.5) + fm.flush()
        stats = fm.stats()
    mine = [r for r in records if r.protocol == 17 and r.sport in ports]
    got_packets = sum(r.packets for r in mine) + stats.lost_packets
    assert got_packets == n_flows * per_flow
    assert sum(r.bytes for r in mine) + stats.lost_bytes == n_flows * per_flow * (14 + 20 + 8 + 10)
    full = [r for r in mine if r.reason == "full"]
    assert full and all(r.packets == 1 for r in full)
    assert stats.full >= len(full)
    assert {r.sport for r in mine} == ports       # every flow seen


def test_idle_sweep_and_active_timeout(hosts):
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], directions=("egress",), idle_timeout=0.2,
                         active_timeout=3600, sweep_interval=0.1)
    with fm:
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 0))
            tx.sendto(b"a", rx.getsockname())
            sport = tx.getsockname()[1]
            assert [r for r in fm.active() if r.sport == sport]
            records = []
            deadline = time.monotonic() + 5
            while not [r for r in records if r.sport == sport]:
                assert time.monotonic() < deadline
                records += fm.poll(timeout=0.1)
            rec = [r for r in records if r.sport == sport][0]
            assert rec.reason == "idle" and rec.packets == 1
            assert not [r for r in fm.active() if r.sport == sport]
            # active timeout: a flow older than the limit leaves even while busy
            fm.idle_timeout, fm.active_timeout = 3600, 0.0
            tx.sendto(b"b", rx.getsockname())
            swept = [r for r in fm.sweep() if r.sport == sport]
            assert [r.reason for r in swept] == ["active"]


def test_drops_are_counted_per_flow(hosts):
    """UDP to a port nobody listens on: the server's kernel drops every
    datagram after TC ingress (kfree_skb, reason NO_SOCKET)."""
    with hosts.server.enter():
        fm = FlowMonitor(["eth0"], directions=("ingress",))
    with fm:
        assert fm.drops_visible
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 0))
            tx.bind((str(hosts.client_ip), 0))
            closed = rx.getsockname()[1] + 1 if rx.getsockname()[1] < 65535 else 1024
            for _ in range(5):
                tx.sendto(b"d" * 20, (str(hosts.server_ip), closed))
            for _ in range(3):
                tx.sendto(b"k" * 20, rx.getsockname())
            for _ in range(3):
                rx.recv(100)
            sport = tx.getsockname()[1]
        flows = totals(fm.flush())
        stats = fm.stats()
    dropped = find(flows, sport, closed, "ingress", proto=17)
    assert (dropped.packets, dropped.drops) == (5, 5)
    delivered = [r for r in flows.values() if r.sport == sport and r.dport != closed]
    assert len(delivered) == 1 and (delivered[0].packets, delivered[0].drops) == (3, 0)
    assert stats.drops >= 5


DROPPER = r'''
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
/* drops every IPv4 UDP packet to port 7777 (no options, no VLAN) */
SEC("tc") int drop_7777(struct __sk_buff *skb)
{
	unsigned char *p = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	if (p + 14 + 20 + 8 > end || p[12] != 0x08 || p[13] != 0x00 || p[23] != 17)
		return TC_ACT_UNSPEC;
	return (p[36] == 0x1e && p[37] == 0x61) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
char LICENSE[] SEC("license") = "GPL";
'''


@pytest.mark.min_kernel("6.6")
def test_tc_drops_of_a_later_program_are_seen(hosts, tmp_path, bpf_object):
    """The monitor goes first in the tcx chain; a program after it drops
    (TC_ACT_SHOT) and the kernel's kfree_skb names the flow."""
    from pybpfnet.testing import compile_bpf
    (tmp_path / "drop7777.bpf.c").write_text(DROPPER)
    dropper = bpf_object(compile_bpf(tmp_path / "drop7777.bpf.c"))
    with hosts.client.enter():
        shot = dropper.programs["drop_7777"].attach_tc("eth0", "egress")
        fm = FlowMonitor(["eth0"], directions=("egress",))
    with shot, fm:
        with hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(4):
                tx.sendto(b"x", (str(hosts.server_ip), 7777))
            for _ in range(2):
                tx.sendto(b"y", (str(hosts.server_ip), 7778))
        flows = totals(fm.flush())
    shot_flow = [r for r in flows.values() if r.dport == 7777]
    passed = [r for r in flows.values() if r.dport == 7778]
    assert [(r.packets, r.drops) for r in shot_flow] == [(4, 4)]
    assert [(r.packets, r.drops) for r in passed] == [(2, 0)]


def test_active_timeout_slices_add_up_exactly(hosts):
    """A long transfer exported in slices while it runs (active timeout
    1 ms, swept every few ms from another thread): the slices and the final
    FIN records add up to exactly what the sockets sent."""
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], idle_timeout=3600, active_timeout=0.001)
    records = []
    stop = threading.Event()

    def sweeper():
        while not stop.is_set():
            records.extend(fm.sweep())
            time.sleep(0.002)

    def stop_sweeping():
        # FIN exports and sweeps are not ordered against each other: stop
        # sweeping before the connection ends
        stop.set()
        t.join()

    with fm:
        t = threading.Thread(target=sweeper)
        t.start()
        try:
            run = tcp_exchange(hosts, False, 8_000_000, 1000, before_close=stop_sweeping,
                               chunk=100_000)
        finally:
            stop.set()
            t.join()
        deadline = time.monotonic() + 5
        while sum(1 for r in records if r.reason == "fin") < 2:
            assert time.monotonic() < deadline
            records += fm.poll(timeout=0.2)
        records += fm.flush()
        assert fm.stats().lost_records == 0
    slices = [r for r in records if r.reason == "active" and r.direction == "egress"]
    assert len(slices) >= 2
    flows = totals(records)
    cport, sport = run["client_port"], run["port"]
    out = find(flows, cport, sport, "egress")
    back = find(flows, sport, cport, "ingress")
    _, c_segs, c_bytes, c_retrans = run["client"]
    _, s_segs, s_bytes, s_retrans = run["server"]
    assert out.packets == c_segs
    assert_tcp_bytes(out.bytes, c_segs, c_bytes, c_retrans, False)
    assert back.packets == s_segs + 1
    assert_tcp_bytes(back.bytes, s_segs + 1, s_bytes, s_retrans, False)
