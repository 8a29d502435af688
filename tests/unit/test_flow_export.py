"""PrometheusExporter without a kernel: records in, the text exposition
(and an HTTP scrape on 127.0.0.1) parsed back with prometheus_client's
own parser, values checked exactly."""

import ipaddress
import threading
import urllib.request

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pybpfnet.dataplanes._flow_hist import Log2Histogram  # noqa: E402
from pybpfnet.dataplanes.flow_export import (  # noqa: E402
    PrometheusExporter, log2_buckets, parse_listen)
from pybpfnet.dataplanes.flowmon import FlowMonitorStats, FlowRecord  # noqa: E402
from pybpfnet.dataplanes.l7 import DnsRecord as Dns, HttpRecord as Http  # noqa: E402


def dns(client, server, client_port, qid, qname, qtype, rcode, answers, latency_ns,
        client_name=None):
    return Dns(time=1.0, client=client, server=server, client_port=client_port, server_port=53,
               id=qid, qname=qname, qtype=qtype, rcode=rcode, answers=answers,
               latency_ns=latency_ns, ifindex=2, protocol="UDP", client_name=client_name,
               server_name=None)


def http(client, server, client_port, protocol, method, path, status, latency_ns):
    return Http(time=1.0, client=client, server=server, client_port=client_port,
                server_port=80, protocol=protocol, method=method, path=path, host="h",
                status=status, latency_ns=latency_ns, ifindex=2)


def flow(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=80, protocol=6, packets=10,
         bytes=1000, flags=0x13, drops=0, reason="fin", direction="egress", **kw):
    return FlowRecord(src=src, dst=dst, sport=sport, dport=dport, protocol=protocol, ifindex=2,
                      direction=direction, packets=packets, bytes=bytes, tcp_flags=flags,
                      first_ns=1, last_ns=2, drops=drops, reason=reason, interface="eth0", **kw)


def samples(text):
    """{(sample name, frozenset(labels)): value} of an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got, name, **labels):
    return got[(name, frozenset(labels.items()))]


def test_flow_counters_by_labels():
    ex = PrometheusExporter()
    ex.observe_flow(flow(packets=10, bytes=1000, flags=0x13, reason="fin"))
    ex.observe_flow(flow(packets=5, bytes=300, flags=0x10, reason="active"))
    ex.observe_flow(flow(src="fd00::1", dst="fd00::2", protocol=17, packets=2, bytes=180,
                         flags=0, drops=2, reason="idle", direction="ingress"))
    got = samples(ex.generate())
    v4 = dict(interface="eth0", direction="egress", protocol="TCP", family="IPv4")
    v6 = dict(interface="eth0", direction="ingress", protocol="UDP", family="IPv6")
    assert value(got, "pybpfnet_flow_packets_total", **v4) == 15
    assert value(got, "pybpfnet_flow_bytes_total", **v4) == 1300
    assert value(got, "pybpfnet_flow_bytes_total", **v6) == 180
    assert value(got, "pybpfnet_flow_records_total", reason="fin", **v4) == 1
    assert value(got, "pybpfnet_flow_records_total", reason="active", **v4) == 1
    assert value(got, "pybpfnet_flow_records_total", reason="idle", **v6) == 1
    assert value(got, "pybpfnet_flow_tcp_flags_total", flag="ACK", family="IPv4") == 2
    assert value(got, "pybpfnet_flow_tcp_flags_total", flag="SYN", family="IPv4") == 1
    assert value(got, "pybpfnet_flow_tcp_flags_total", flag="FIN", family="IPv4") == 1
    assert ("pybpfnet_flow_tcp_flags_total", frozenset(dict(flag="RST", family="IPv4").items())) \
        not in got
    assert value(got, "hubble_drop_total", protocol="UDP") == 2
    assert ("hubble_drop_total", frozenset(dict(protocol="TCP").items())) not in got


def test_context_labels_use_names_when_known():
    ex = PrometheusExporter(context=("source", "destination_ip", "destination_workload"))
    ex.observe_flow(flow(bytes=10))
    ex.observe_flow(flow(bytes=7, src_name="web", dst_name="db"))
    got = samples(ex.generate())
    base = dict(interface="eth0", direction="egress", protocol="TCP", family="IPv4",
                destination_ip="10.0.0.2")
    assert value(got, "pybpfnet_flow_bytes_total", source="10.0.0.1",
                 destination_workload="", **base) == 10
    assert value(got, "pybpfnet_flow_bytes_total", source="web",
                 destination_workload="db", **base) == 7
    with pytest.raises(ValueError, match="context label must be one of"):
        PrometheusExporter(context=("pod",))


def test_dns_counters_and_latency():
    ex = PrometheusExporter(context=("source",))
    c, s = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.53")
    ex.observe_dns(dns(c, s, 5000, 1, "a.example.", "A", "NOERROR",
                       (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")),
                       300_000, client_name="web"))
    ex.observe_dns(dns(c, s, 5001, 2, "b.example.", "AAAA", "NXDOMAIN", (),
                       3_000_000))
    ex.observe_dns(dns(c, s, 5002, 3, "c.example.", "A", None, (), None))
    ex.observe_dns(dns(c, s, 5003, 4, "d.example.", "CNAME", "NOERROR",
                       (("CNAME", "x.example."), "2001:db8::1"), 1_000))
    ex.observe_dns(dns(c, s, 5004, 5, "e.example", "A", "NOERROR",
                       ("alias.example", "192.0.2.9"), 2_000))
    ex.observe_dns(dns(c, s, 5005, 6, "9.2.0.192.in-addr.arpa", "PTR", "NOERROR",
                       ("host.example",), 2_000))
    got = samples(ex.generate())
    assert value(got, "hubble_dns_queries_total", rcode="", qtypes="A", ips_returned="0",
                 source="web") == 1
    assert value(got, "hubble_dns_queries_total", rcode="", qtypes="A", ips_returned="0",
                 source="10.0.0.1") == 2      # c. and e.example
    assert value(got, "hubble_dns_responses_total", rcode="NOERROR", qtypes="A",
                 ips_returned="2", source="web") == 1
    assert value(got, "hubble_dns_responses_total", rcode="NXDOMAIN", qtypes="AAAA",
                 ips_returned="0", source="10.0.0.1") == 1
    assert value(got, "hubble_dns_responses_total", rcode="NOERROR", qtypes="CNAME",
                 ips_returned="1", source="10.0.0.1") == 1
    assert value(got, "hubble_dns_response_types_total", type="A", qtypes="A",
                 source="web") == 2
    assert value(got, "hubble_dns_response_types_total", type="CNAME", qtypes="CNAME",
                 source="10.0.0.1") == 1
    assert value(got, "hubble_dns_response_types_total", type="AAAA", qtypes="CNAME",
                 source="10.0.0.1") == 1
    # DnsRecord keeps CNAME/PTR/NS targets as bare names
    assert value(got, "hubble_dns_response_types_total", type="CNAME", qtypes="A",
                 source="10.0.0.1") == 1
    assert value(got, "hubble_dns_response_types_total", type="A", qtypes="A",
                 source="10.0.0.1") == 1
    assert value(got, "hubble_dns_response_types_total", type="PTR", qtypes="PTR",
                 source="10.0.0.1") == 1
    # no response: a query only, no latency sample
    lat = dict(qtypes="A", rcode="NOERROR", source="web")
    assert value(got, "pybpfnet_dns_request_duration_seconds_count", **lat) == 1
    assert value(got, "pybpfnet_dns_request_duration_seconds_sum", **lat) == pytest.approx(3e-4)
    # 300 us lies in (256 us, 512 us]
    assert value(got, "pybpfnet_dns_request_duration_seconds_bucket", le="0.000256", **lat) == 0
    assert value(got, "pybpfnet_dns_request_duration_seconds_bucket", le="0.000512", **lat) == 1


def test_http_counters_and_hubble_duration_histogram():
    ex = PrometheusExporter()
    c, s = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")
    for status, lat in ((200, 2_000_000), (200, 20_000_000), (404, 1_000_000)):
        ex.observe_http(http(c, s, 40000, "HTTP/1.1", "GET", "/x", status, lat))
    ex.observe_http(http(c, s, 40001, "HTTP/2", "POST", "/y", None, None))
    ex.observe(http(c, s, 40002, "gRPC", "POST", "/svc/M", 200, 7_000_000))
    got = samples(ex.generate())
    assert value(got, "hubble_http_requests_total", method="GET", protocol="HTTP/1.1") == 3
    assert value(got, "hubble_http_requests_total", method="POST", protocol="HTTP/2") == 1
    assert value(got, "hubble_http_requests_total", method="POST", protocol="gRPC") == 1
    assert value(got, "hubble_http_responses_total", method="GET", protocol="HTTP/1.1",
                 status="200") == 2
    assert value(got, "hubble_http_responses_total", method="GET", protocol="HTTP/1.1",
                 status="404") == 1
    assert ("hubble_http_responses_total",
            frozenset(dict(method="POST", protocol="HTTP/2", status="None").items())) not in got
    # Prometheus' default buckets, as Hubble uses
    assert value(got, "hubble_http_request_duration_seconds_bucket", method="GET",
                 le="0.005") == 2
    assert value(got, "hubble_http_request_duration_seconds_bucket", method="GET",
                 le="0.025") == 3
    assert value(got, "hubble_http_request_duration_seconds_count", method="POST") == 1
    assert value(got, "hubble_http_request_duration_seconds_sum", method="GET") == \
        pytest.approx(0.023)


def test_log2_buckets_are_cumulative_and_fixed():
    # slot 0: value 0; slot 1: 1; slot 2: 2..3; slot 3: 4..7 (us)
    got = log2_buckets([1, 2, 0, 3, 0, 0, 0, 0, 0, 0, 5], slots=5)
    assert got == [("0.0", 1), ("1e-06", 3), ("3e-06", 3), ("7e-06", 6), ("1.5e-05", 6),
                   ("+Inf", 11)]                 # slots past the last bound: +Inf only
    assert log2_buckets([0] * 64) == log2_buckets([]) and len(log2_buckets([])) == 28


class FakeMonitor:
    """What the collector reads from a FlowMonitor (its public methods):
    plain data, so the conversion can be checked without a kernel."""

    def __init__(self, counts, srtt=None, lost=0):
        self.counts, self.srtt, self.lost = counts, srtt, lost

    def rtt_histogram(self):
        return Log2Histogram(self.counts, "usecs")

    def stats(self):
        return FlowMonitorStats(packets=100, non_ip=0, full=1, lost_records=self.lost,
                                lost_packets=2, lost_bytes=3, ring_deferred=0,
                                rtt_samples=sum(self.counts), active_flows=4)


class FakeSrttMonitor(FakeMonitor):
    def srtt_histogram(self):
        return Log2Histogram(self.srtt, "usecs")


def test_watched_monitors_are_read_at_scrape_time():
    ex = PrometheusExporter()
    a = FakeMonitor([0, 0, 0, 0, 0, 2, 1])                # 16..31 us: 2; 32..63 us: 1
    b = FakeSrttMonitor([0, 0, 0, 0, 0, 0, 1], srtt=[0] * 10 + [4], lost=7)
    with ex.watch(a):
        got = samples(ex.generate())
        assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="1.5e-05") == 0
        assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="3.1e-05") == 2
        assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="6.3e-05") == 3
        assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="+Inf") == 3
        assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_count") == 3
        assert not [k for k in got if k[0].startswith("pybpfnet_tcp_srtt")]
        assert value(got, "pybpfnet_flows_active") == 4
        with ex.watch(b):
            a.counts = [0, 0, 0, 0, 0, 3, 1]               # read anew at each scrape
            got = samples(ex.generate())
            assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_count") == 5
            assert value(got, "pybpfnet_tcp_handshake_rtt_seconds_bucket", le="6.3e-05") == 5
            assert value(got, "pybpfnet_tcp_srtt_seconds_bucket", le="0.001023") == 4
            assert value(got, "pybpfnet_tcp_srtt_seconds_bucket", le="0.000511") == 0
            assert value(got, "hubble_lost_events_total", source="flowmon_ring_buffer") == 7
            assert value(got, "pybpfnet_flows_active") == 8
            assert value(got, "pybpfnet_flowmon_packets_total") == 200
    got = samples(ex.generate())
    assert not [k for k in got if k[0].startswith("pybpfnet_tcp_handshake")]


def test_http_endpoint_serves_and_closes_cleanly():
    ex = PrometheusExporter()
    ex.observe_flow(flow(bytes=4242))
    before = set(threading.enumerate())
    with ex.serve(0, "127.0.0.1") as srv:
        host, port = srv.address
        assert host == "127.0.0.1" and port > 0
        with urllib.request.urlopen(srv.url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            got = samples(resp.read())
        assert value(got, "pybpfnet_flow_bytes_total", interface="eth0", direction="egress",
                     protocol="TCP", family="IPv4") == 4242
    assert set(threading.enumerate()) == before
    import socket
    with socket.socket() as probe:        # the port is free again: the socket was closed
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    srv.close()                           # idempotent


def test_http_endpoint_ipv6_loopback():
    ex = PrometheusExporter()
    try:
        srv = ex.serve(0, "::1")
    except OSError as e:
        pytest.skip("no IPv6 loopback: %s" % e)
    with srv:
        assert srv.url.startswith("http://[::1]:")
        with urllib.request.urlopen(srv.url, timeout=10) as resp:
            assert b"pybpfnet_flow_bytes" in resp.read()


@pytest.mark.parametrize("text, want", [
    ("9965", ("127.0.0.1", 9965)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:80", ("::1", 80)),
    (":8080", ("127.0.0.1", 8080)),
])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["abc", "::1:80", "1.2.3.4:99999", "[::1:80"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="listen address"):
        parse_listen(text)
