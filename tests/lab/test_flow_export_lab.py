"""The Prometheus exporter on real traffic: a FlowMonitor on a lab veth,
records fed to the exporter, the HTTP endpoint scraped (127.0.0.1 of the
test's own namespace, and of a lab namespace for ``pybpfnet flows
--prometheus``). Oracles are the sockets: datagram sizes for UDP, TCP_INFO
segs_out/bytes_sent for TCP (L2 bytes from header sizes, as in
test_flowmon_lab)."""

import contextlib
import io
import json
import socket
import threading
import time
import types
import urllib.request

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from flowlab import drain, serve_one, wait_closed  # noqa: E402
from pybpfnet.dataplanes.flow_export import PrometheusExporter  # noqa: E402
from pybpfnet.dataplanes.flowmon import FlowMonitor  # noqa: E402


def tcp_upload(hosts, nbytes):
    """One connection: the client sends ``nbytes`` and closes, the server
    reads to EOF and closes. Returns (client port, server port, client
    TCP_INFO at CLOSE)."""
    with hosts.server.create_server((str(hosts.server_ip), 0)) as srv:
        port = srv.getsockname()[1]
        with serve_one(srv), hosts.client.create_connection((str(hosts.server_ip), port)) as c:
            c.sendall(b"t" * nbytes)
            c.shutdown(socket.SHUT_WR)
            drain(c)
            info = wait_closed(c)
            cport = c.getsockname()[1]
    return cport, port, info


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(got, name, **labels):
    return got[(name, frozenset(labels.items()))]



@contextlib.contextmanager
def flows_cli(hosts, args, out):
    """Run ``cmd_flows(args)`` in the client namespace in a thread; yields
    (metrics URL, done event) once its Prometheus endpoint answers, and on
    leaving joins it and checks it ended with status 0."""
    from pybpfnet.dataplanes import flowmon_cli
    done = threading.Event()
    result = {}

    def run():
        try:
            with hosts.client.enter():
                result["rc"] = flowmon_cli.cmd_flows(args, out=out)
        except BaseException as e:           # reported by the main thread
            result["error"] = e
        finally:
            done.set()

    url = "http://%s/metrics" % args.prometheus
    t = threading.Thread(target=run)
    t.start()
    try:
        while True:
            assert not done.is_set(), result
            try:
                with hosts.client.enter():
                    scrape(url)
                break
            except OSError:                     # not listening yet
                time.sleep(0.05)
        yield url, done
    finally:
        t.join()
    assert "error" not in result, result.get("error")
    assert result["rc"] == 0


def free_port(hosts):
    """A free TCP port of the client namespace's loopback."""
    with hosts.client.enter():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


def test_scraped_bytes_equal_what_sockets_sent(hosts):
    ex = PrometheusExporter(context=("source", "destination"))
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], idle_timeout=3600, active_timeout=3600)
    payloads = [1, 100, 1000, 1400]
    with fm, ex.watch(fm), ex.serve(0, "127.0.0.1") as srv:
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 0))
            for p in payloads:
                tx.sendto(b"u" * p, rx.getsockname())
            for p in payloads:
                assert len(rx.recv(65536)) == p
        cport, sport, (_, segs, sent, retrans) = tcp_upload(hosts, 200_000)
        live = scrape(srv.url)                 # the table holds the UDP flow now
        # (IPv6 neighbour discovery may add a flow between the two readings)
        assert 1 <= value(live, "pybpfnet_flows_active") <= len(fm.active())
        # one handshake: one RTT sample, read from the BPF histogram at scrape time
        assert value(live, "pybpfnet_tcp_handshake_rtt_seconds_count") == 1
        assert value(live, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="+Inf") == 1
        records = []
        deadline = time.monotonic() + 5
        while sum(1 for r in records if r.reason == "fin") < 2:
            assert time.monotonic() < deadline, records
            records += fm.poll(timeout=0.2)
        records += fm.flush()
        for r in records:
            ex.observe_flow(r)
        got = scrape(srv.url)
        assert value(got, "pybpfnet_flows_active") == 0
        assert value(got, "hubble_lost_events_total", source="flowmon_ring_buffer") == 0
    client, server = str(hosts.client_ip), str(hosts.server_ip)
    up = dict(interface="eth0", direction="egress", family="IPv4", source=client,
              destination=server)
    assert value(got, "pybpfnet_flow_bytes_total", protocol="UDP", **up) == \
        sum(14 + 20 + 8 + p for p in payloads)
    assert value(got, "pybpfnet_flow_packets_total", protocol="UDP", **up) == len(payloads)
    # TCP out: every segment the client sent (Ethernet + IPv4 + TCP with
    # timestamps, SYN 8 bytes more), payload = bytes_sent (+ retransmits)
    assert sent == 200_000
    assert value(got, "pybpfnet_flow_packets_total", protocol="TCP", **up) == segs
    want = {sent + segs * (14 + 20 + 32) + 8, sent + retrans + segs * (14 + 20 + 32) + 8}
    assert value(got, "pybpfnet_flow_bytes_total", protocol="TCP", **up) in want
    # the client closes first: its FIN ends the one "fin" record of that
    # direction (its last ACK starts a record the flush exports); only the
    # first record holds the SYN
    assert value(got, "pybpfnet_flow_records_total", protocol="TCP", reason="fin", **up) == 1
    assert value(got, "pybpfnet_flow_records_total", protocol="TCP", reason="flush", **up) == 1
    down = dict(up, direction="ingress", source=server, destination=client)
    assert value(got, "pybpfnet_flow_packets_total", protocol="TCP", **down) >= 2
    assert value(got, "pybpfnet_flow_tcp_flags_total", flag="SYN", family="IPv4",
                 source=client, destination=server) == 1
    assert [r for r in records if (r.sport, r.dport) == (cport, sport)]


def test_flows_cli_serves_metrics_in_its_namespace(hosts):
    """``pybpfnet flows eth0 --prometheus 127.0.0.1:PORT`` run in the client
    namespace: scraped from there while it runs, bytes of a UDP flow exact."""
    args = types.SimpleNamespace(
        iface=["eth0"], direction="egress", json=True, seconds=6.0, rtt_hist=False,
        srtt=False, idle_timeout=0.3, active_timeout=60.0, max_flows=1024, names=None,
        prometheus="127.0.0.1:%d" % free_port(hosts), html=None)
    out = io.StringIO()
    with flows_cli(hosts, args, out) as (url, done), \
            hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind((str(hosts.server_ip), 0))
        for p in (10, 20, 30):
            tx.sendto(b"x" * p, rx.getsockname())
        sport = tx.getsockname()[1]
        want = sum(14 + 20 + 8 + p for p in (10, 20, 30))
        labels = dict(interface="eth0", direction="egress", protocol="UDP", family="IPv4")
        seen = 0
        while not done.is_set():
            with hosts.client.enter():      # idle timeout 0.3 s: exported, counted
                got = scrape(url)
            seen = got.get(("pybpfnet_flow_bytes_total", frozenset(labels.items())), 0)
            if seen >= want:
                break
            time.sleep(0.1)
        assert seen == want, (seen, want)
    assert [ln for ln in out.getvalue().splitlines() if '"sport":%d' % sport in ln]
    with hosts.client.enter(), pytest.raises(OSError):    # the server is gone
        scrape(url)


def test_flows_l7_cli_exports_http_metrics(hosts):
    """``pybpfnet flows eth0 --l7 --prometheus``: HTTP requests made over
    real TCP connections show up as hubble_http_requests/responses counters
    (method, protocol, status) and in the printed JSON lines."""
    args = types.SimpleNamespace(
        iface=["eth0"], direction="both", json=True, seconds=8.0, rtt_hist=False,
        srtt=False, idle_timeout=0.3, active_timeout=60.0, max_flows=1024, names=None,
        prometheus="127.0.0.1:%d" % free_port(hosts), html=None, l7=True)
    out = io.StringIO()

    def answer(status):
        def handle(conn):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            reason = {200: b"OK", 404: b"Not Found"}[status]
            conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                         % (status, reason))
        return handle

    sent = [("GET", "/a", 200), ("GET", "/b", 404), ("POST", "/c", 200)]
    with flows_cli(hosts, args, out) as (url, done):
        for method, path, status in sent:
            with hosts.server.create_server((str(hosts.server_ip), 8080)) as srv, \
                    serve_one(srv, answer(status)), \
                    hosts.client.create_connection((str(hosts.server_ip), 8080)) as c:
                c.sendall(b"%s %s HTTP/1.1\r\nHost: lab\r\nContent-Length: 0\r\n\r\n"
                          % (method.encode(), path.encode()))
                drain(c)
        want = {("GET", "200"): 1, ("GET", "404"): 1, ("POST", "200"): 1}
        got = {}
        while not done.is_set():
            with hosts.client.enter():
                samples = scrape(url)
            got = {}
            for (name, labels), v in samples.items():
                if name == "hubble_http_responses_total":
                    d = dict(labels)
                    if d["protocol"] == "HTTP/1.1":
                        key = (d["method"], d["status"])
                        got[key] = got.get(key, 0) + int(v)
            if got == want:
                break
            time.sleep(0.1)
        assert got == want
        requests = sum(int(v) for (name, labels), v in samples.items()
                       if name == "hubble_http_requests_total"
                       and dict(labels)["protocol"] == "HTTP/1.1")
        assert requests == 3
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    http = sorted((d["method"], d["path"], d["status"]) for d in lines if d.get("type") == "http")
    assert http == sorted(sent)
