"""The standalone tracker on a real interface (TC ingress + egress), its
command line, and examples/conntrack.py."""

import importlib.util
import io
import json
import pathlib
import socket
import subprocess
import sys
import threading

import pybpfnet as bn
from pybpfnet import cli
from pybpfnet.dataplanes.conntrack import (Conntrack, CtState, EventType, Table, running)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _tcp_roundtrip(hosts, v6=False):
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    ip = str(hosts.server_ip6 if v6 else hosts.server_ip)
    with hosts.server.create_server((ip, 0), family=fam) as srv:
        def serve():
            conn, _ = srv.accept()
            with conn:
                conn.sendall(conn.recv(100) * 3)
        t = threading.Thread(target=serve)
        t.start()
        with hosts.client.create_connection((ip, srv.getsockname()[1])) as c:
            c.sendall(b"ping")
            assert c.recv(100) == b"pingpingping"
        t.join()
        return srv.getsockname()[1]


def test_attach_both_directions_sees_whole_connections(lab):
    hosts = lab.two_hosts()
    with Conntrack() as ct:
        with hosts.server.enter():
            links = ct.attach("eth0")
            hooks = sorted(s.hook for s in bn.net_attachments("eth0"))
        assert len(links) == 2 and hooks == ["tc egress", "tc ingress"]
        events = ct.events()
        p4 = _tcp_roundtrip(hosts)
        p6 = _tcp_roundtrip(hosts, v6=True)
        assert hosts.client.ping(hosts.server_ip, count=3) == 3
        tcp = {c.dport: c for c in ct.entries(protocol="tcp")}
        assert set(tcp) == {p4, p6}
        for c in tcp.values():
            assert c.state in (CtState.TIME_WAIT, CtState.LAST_ACK) and c.assured
            assert c.table == Table.ESTABLISHED and c.packets >= 4 and c.reply_packets >= 4
        assert tcp[p6].family == 6 and str(tcp[p6].src) == str(hosts.client_ip6)
        (icmp,) = ct.entries(protocol="icmp")
        assert (icmp.packets, icmp.reply_packets, icmp.table) == (3, 3, Table.ESTABLISHED)
        kinds = [e.type for e in events.poll(1)]
        assert kinds.count(EventType.NEW) == 3
        ct.detach()
        with hosts.server.enter():
            assert bn.net_attachments("eth0") == []
        # detached: nothing new is seen
        before = ct.stats().packets
        hosts.client.ping(hosts.server_ip)
        assert ct.stats().packets == before


def test_cli_list_watch_stats(lab, capsys):
    hosts = lab.two_hosts(v6=False)
    with Conntrack() as ct:
        with hosts.server.enter():
            ct.attach("eth0")
        mid = ct.established.id
        assert mid in [t.map_id for t in running()]
        port = _tcp_roundtrip(hosts)
        hosts.client.ping(hosts.server_ip)
        assert cli.main(["ct", "list", "--map-id", str(mid)]) == 0
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert len(lines) == 2 and "2 flow entries" in err
        assert any(l.startswith("tcp    6 ") and "dport=%d" % port in l and "[ASSURED]" in l
                   for l in lines)
        assert cli.main(["ct", "list", "--map-id", str(mid), "--json", "-p",
                                   "icmp"]) == 0
        (row,) = json.loads(capsys.readouterr()[0])
        assert row["protocol"] == "icmp" and row["state"] == "REPLIED"
        assert cli.main(["ct", "stats", "--map-id", str(mid), "--json"]) == 0
        stats = json.loads(capsys.readouterr()[0])
        assert (stats["created"], stats["established"], stats["embryonic"]) == (2, 1, 1)
        # watch: another process, reading the ring of this one's tracker
        watch = subprocess.Popen(
            [sys.executable, "-m", "pybpfnet.cli", "ct", "watch",
             "--map-id", str(mid), "--json", "-e", "new", "--seconds", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            import time
            time.sleep(1.0)                  # let it open the ring
            _tcp_roundtrip(hosts)
            out, err = watch.communicate(timeout=20)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        rows = [json.loads(l) for l in out.splitlines()]
        assert [r["event"] for r in rows] == ["new"], err
        assert rows[0]["state"] == "SYN_SENT"
    assert cli.main(["ct", "list", "--map-id", str(mid)]) == 1   # gone
    assert "no tracker" in capsys.readouterr()[1]


def test_example_demo():
    spec = importlib.util.spec_from_file_location("example_conntrack",
                                                  ROOT / "examples" / "conntrack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = io.StringIO()
    events, conns = mod.demo(out)
    states = sorted(c.state.name for c in conns if c.protocol == 6)
    assert states == ["CLOSE", "TIME_WAIT", "TIME_WAIT"]
    assert {c.protocol for c in conns} == {1, 6, 17, 58}
    assert "conntrack -L" in out.getvalue() and "[DESTROY]" not in out.getvalue()
