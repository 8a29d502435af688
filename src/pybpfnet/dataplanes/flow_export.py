"""Prometheus metrics of flows, DNS and HTTP: counters by labels and latency
histograms, on a registry of their own, served over HTTP.

::

    from pybpfnet.dataplanes.flow_export import PrometheusExporter

    exporter = PrometheusExporter(context=("source", "destination"))
    with FlowMonitor(["eth0"]) as fm, exporter.watch(fm), exporter.serve(9965):
        for record in fm:
            exporter.observe_flow(record)

Metric names follow Cilium Hubble's (pkg/hubble/metrics: ``hubble_drop_total``,
``hubble_dns_queries_total``, ``hubble_dns_responses_total``,
``hubble_dns_response_types_total``, ``hubble_http_requests_total``,
``hubble_http_responses_total``, ``hubble_http_request_duration_seconds``,
``hubble_lost_events_total``) where a sample means the same thing, with
Hubble's label names; the rest are ``pybpfnet_*``. See docs/flow-views.md
for the table. Needs the ``prometheus`` extra (prometheus-client).
"""

import ipaddress
import socket
import threading
import wsgiref.simple_server

from pybpfnet.dataplanes._tc_monitor import protocol_name
from pybpfnet.dataplanes.flowmon import TCP_FLAGS

__all__ = ["PrometheusExporter", "MetricsServer", "CONTEXT_LABELS", "log2_buckets",
           "parse_listen"]

#: Context labels (Hubble's ``labelsContext`` names) that ``context=`` may
#: add to every per-flow/DNS/HTTP metric: ``source``/``destination`` are the
#: workload name when known, else the address.
CONTEXT_LABELS = ("source", "destination", "source_ip", "destination_ip",
                  "source_workload", "destination_workload")


def _prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("the Prometheus exporter needs prometheus-client: "
                          "pip install 'pybpfnet[prometheus]'") from None
    return prometheus_client


def log2_buckets(counts, per_second=1e6, slots=27):
    """Cumulative Prometheus buckets ``[(le, count), ..., ("+Inf", total)]``
    of a log2 histogram's slot counts. Slot i holds integer values of bit
    length i, i.e. up to ``2**i - 1`` (slot 0: 0), so its bound is
    ``(2**i - 1) / per_second`` seconds (``per_second``: units in a
    second, 1e6 for microseconds), as ``FlowMonitor.histogram_buckets`` and bcc's
    rows have it. The first ``slots`` slots (default 27: up to ~67 s in
    microseconds) always appear, so the series are the same at every
    scrape; higher slots count in "+Inf" only."""
    counts = tuple(int(c) for c in counts)
    out, seen = [], 0
    for i in range(slots):
        seen += counts[i] if i < len(counts) else 0
        out.append((_float_str(((1 << i) - 1) / per_second), seen))
    out.append(("+Inf", sum(counts)))
    return out


def _float_str(v):
    return repr(float(v))


def _ip_str(value):
    return "" if value is None else str(value)


def _answer_type(item, qtype):
    """An answer's RR type name: "A"/"AAAA" for addresses; else its
    ``type``/``rtype`` attribute or the first element of a (type, data)
    pair; a bare name (DnsRecord keeps CNAME/PTR/NS targets as text) is a
    PTR or NS record for such a query and a CNAME otherwise."""
    if isinstance(item, ipaddress.IPv4Address):
        return "A"
    if isinstance(item, ipaddress.IPv6Address):
        return "AAAA"
    for attr in ("type", "rtype"):
        t = getattr(item, attr, None)
        if t is not None:
            return str(t)
    if isinstance(item, (tuple, list)) and item:
        return str(item[0])
    if isinstance(item, bytes):
        item = item.decode("ascii", "replace")
    try:
        return "A" if ipaddress.ip_address(str(item)).version == 4 else "AAAA"
    except ValueError:
        return qtype if qtype in ("PTR", "NS") else "CNAME"


class PrometheusExporter:
    """Prometheus metrics of flow records, DNS and HTTP records, and of
    watched FlowMonitors (read at scrape time), on a ``CollectorRegistry``
    of its own (``registry``; never the process-wide default).

    ``context``: names from ``CONTEXT_LABELS`` added as labels to every
    per-record metric (Hubble's context options; each distinct endpoint
    becomes a time series: mind the cardinality). ``latency_buckets``:
    bucket bounds in seconds of the DNS latency histogram (default powers
    of two from 1 us to ~33 s; HTTP keeps Prometheus' defaults, as Hubble).

    Needs prometheus-client (ImportError naming the extra otherwise); no
    kernel or privileges by itself. Raises ValueError for an unknown
    context label. Thread-safe: observe from one thread while a server
    thread scrapes.
    """

    def __init__(self, *, context=(), latency_buckets=None):
        pc = _prometheus()
        context = tuple(context)
        for c in context:
            if c not in CONTEXT_LABELS:
                raise ValueError("context label must be one of %s, not %r"
                                 % (", ".join(CONTEXT_LABELS), c))
        self.context = context
        self.registry = pc.CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._monitors = []
        r, ctx = self.registry, list(context)
        flow = ["interface", "direction", "protocol", "family"]
        self._records = pc.Counter(
            "pybpfnet_flow_records", "Flow records exported (a long flow exports one per "
            "active-timeout slice)", flow + ["reason"] + ctx, registry=r)
        self._packets = pc.Counter("pybpfnet_flow_packets", "Packets of flow records",
                                   flow + ctx, registry=r)
        self._bytes = pc.Counter("pybpfnet_flow_bytes", "L2 bytes of flow records",
                                 flow + ctx, registry=r)
        self._flags = pc.Counter("pybpfnet_flow_tcp_flags", "Flow records in which a TCP "
                                 "flag was seen", ["flag", "family"] + ctx, registry=r)
        self._drops = pc.Counter("hubble_drop", "Number of drops (packets of monitored flows "
                                 "the kernel dropped after the hook)", ["protocol"] + ctx,
                                 registry=r)
        dns = ["rcode", "qtypes", "ips_returned"]
        self._dns_q = pc.Counter("hubble_dns_queries", "Number of DNS queries observed",
                                 dns + ctx, registry=r)
        self._dns_r = pc.Counter("hubble_dns_responses", "Number of DNS responses observed",
                                 dns + ctx, registry=r)
        self._dns_t = pc.Counter("hubble_dns_response_types", "Number of DNS answer records "
                                 "by type", ["type", "qtypes"] + ctx, registry=r)
        if latency_buckets is None:
            latency_buckets = [(1 << i) * 1e-6 for i in range(26)]
        self._dns_lat = pc.Histogram(
            "pybpfnet_dns_request_duration_seconds", "DNS query to response time in seconds",
            ["qtypes", "rcode"] + ctx, buckets=latency_buckets, registry=r)
        self._http_q = pc.Counter("hubble_http_requests", "Count of HTTP requests",
                                  ["method", "protocol"] + ctx, registry=r)
        self._http_r = pc.Counter("hubble_http_responses", "Count of HTTP responses",
                                  ["method", "protocol", "status"] + ctx, registry=r)
        self._http_lat = pc.Histogram(
            "hubble_http_request_duration_seconds", "HTTP request to response time in seconds",
            ["method"] + ctx, registry=r)
        r.register(_MonitorCollector(self))

    # -- context labels -------------------------------------------------------
    def _ctx(self, src, dst, src_name, dst_name):
        if not self.context:
            return ()
        vals = {"source_ip": _ip_str(src), "destination_ip": _ip_str(dst),
                "source_workload": src_name or "", "destination_workload": dst_name or "",
                "source": src_name or _ip_str(src), "destination": dst_name or _ip_str(dst)}
        return tuple(vals[c] for c in self.context)

    # -- records --------------------------------------------------------------
    def observe_flow(self, record):
        """Count one FlowRecord: records, packets, bytes, TCP flags seen,
        drops. Feed each exported record once (live ``active()`` snapshots
        would count a flow again)."""
        ctx = self._ctx(record.src, record.dst, getattr(record, "src_name", None),
                        getattr(record, "dst_name", None))
        proto = protocol_name(record.protocol)
        family = "IPv%d" % record.src.version
        iface = record.interface or str(record.ifindex)
        base = (iface, record.direction, proto, family)
        self._records.labels(*base, record.reason or "", *ctx).inc()
        self._packets.labels(*base, *ctx).inc(record.packets)
        self._bytes.labels(*base, *ctx).inc(record.bytes)
        for name, bit in TCP_FLAGS:
            if record.tcp_flags & bit:
                self._flags.labels(name, family, *ctx).inc()
        if record.drops:
            self._drops.labels(proto, *ctx).inc(record.drops)

    def observe_dns(self, rec):
        """Count one DNS transaction record (a query and its response, if
        any): a query, a response with its rcode and answers, one response
        type per answer, and the latency. Duck-typed: needs ``qtype``,
        ``rcode`` (None: no response), ``answers``, ``latency_ns``, and
        ``client``/``server`` (+ ``client_name``/``server_name``) for
        context labels."""
        ctx = self._ctx(rec.client, rec.server, getattr(rec, "client_name", None),
                        getattr(rec, "server_name", None))
        qtypes = str(rec.qtype)
        self._dns_q.labels("", qtypes, "0", *ctx).inc()
        if rec.rcode is None:
            return
        answers = tuple(rec.answers or ())
        types = [_answer_type(a, qtypes) for a in answers]
        ips = sum(1 for t in types if t in ("A", "AAAA"))
        self._dns_r.labels(str(rec.rcode), qtypes, str(ips), *ctx).inc()
        for t in types:
            self._dns_t.labels(t, qtypes, *ctx).inc()
        if rec.latency_ns is not None:
            self._dns_lat.labels(qtypes, str(rec.rcode), *ctx).observe(rec.latency_ns / 1e9)

    def observe_http(self, rec):
        """Count one HTTP exchange record: a request, a response with its
        status (if one was seen) and its latency. Duck-typed: ``method``,
        ``protocol``, ``status`` (None: no response), ``latency_ns``,
        ``client``/``server`` (+ names)."""
        ctx = self._ctx(rec.client, rec.server, getattr(rec, "client_name", None),
                        getattr(rec, "server_name", None))
        method, proto = str(rec.method), str(rec.protocol)
        self._http_q.labels(method, proto, *ctx).inc()
        if rec.status is None:
            return
        self._http_r.labels(method, proto, str(rec.status), *ctx).inc()
        if rec.latency_ns is not None:
            self._http_lat.labels(method, *ctx).observe(rec.latency_ns / 1e9)

    def observe(self, rec):
        """Dispatch a FlowRecord, DNS or HTTP record to its ``observe_*``."""
        if hasattr(rec, "qname"):
            self.observe_dns(rec)
        elif hasattr(rec, "method"):
            self.observe_http(rec)
        else:
            self.observe_flow(rec)

    # -- monitors -------------------------------------------------------------
    def watch(self, monitor):
        """Export a FlowMonitor's BPF-side state, read at each scrape: the
        handshake RTT histogram (``pybpfnet_tcp_handshake_rtt_seconds``),
        the smoothed RTT histogram when the monitor has one
        (``pybpfnet_tcp_srtt_seconds``), the table's size and the loss
        counters. Several monitors add up. Returns a context manager that
        stops watching (do that before closing the monitor)."""
        with self._lock:
            self._monitors.append(monitor)
        return _Watch(self, monitor)

    def unwatch(self, monitor):
        """Stop reading ``monitor`` at scrapes (no error if not watched)."""
        with self._lock:
            self._monitors = [m for m in self._monitors if m is not monitor]

    # -- output ---------------------------------------------------------------
    def generate(self):
        """The metrics in Prometheus' text exposition format (bytes)."""
        return _prometheus().generate_latest(self.registry)

    def serve(self, port=9965, addr="127.0.0.1"):
        """Serve ``/metrics`` on ``addr``:``port`` (0: a free port) from a
        background thread; returns the MetricsServer (close it to stop).
        9965 is Hubble's metrics port. Raises OSError when the address
        cannot be bound."""
        return MetricsServer(self.registry, port, addr)


class _Watch:
    """What ``PrometheusExporter.watch`` returns: ``close()`` (or leaving
    ``with``) stops watching the monitor."""

    def __init__(self, exporter, monitor):
        self._exporter, self.monitor = exporter, monitor

    def close(self):
        self._exporter.unwatch(self.monitor)

    def __enter__(self):
        return self.monitor

    def __exit__(self, *exc):
        self.close()


class _MonitorCollector:
    """Reads the watched monitors' BPF maps at scrape time."""

    def __init__(self, exporter):
        self._exporter = exporter

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.metrics_core import Metric
        ex = self._exporter
        with ex._lock:
            monitors = [m for m in ex._monitors if not getattr(m, "closed", False)]
            if not monitors:
                return
            hists = {"pybpfnet_tcp_handshake_rtt_seconds": [m.rtt_histogram() for m in monitors]}
            srtt = [m.srtt_histogram() for m in monitors
                    if callable(getattr(m, "srtt_histogram", None))]
            if srtt:
                hists["pybpfnet_tcp_srtt_seconds"] = srtt
            stats = [m.stats() for m in monitors]
        docs = {"pybpfnet_tcp_handshake_rtt_seconds":
                "TCP handshake RTT (SYN to SYN-ACK at the hook) in seconds; log2 buckets, "
                "no _sum (the kernel keeps counts only)",
                "pybpfnet_tcp_srtt_seconds": "Kernel smoothed TCP RTT in seconds; log2 "
                "buckets, no _sum (the kernel keeps counts only)"}
        for name, parts in hists.items():
            total = parts[0]
            for h in parts[1:]:
                total = total + h
            fam = Metric(name, docs[name], "histogram")
            buckets = log2_buckets(total.counts, 1e6 if total.unit == "usecs" else 1e9)
            for le, count in buckets:
                fam.add_sample(name + "_bucket", {"le": le}, count)
            fam.add_sample(name + "_count", {}, buckets[-1][1])
            yield fam

        def total(field):
            return sum(getattr(s, field) for s in stats)

        g = GaugeMetricFamily("pybpfnet_flows_active", "Flows in the BPF flow table now")
        g.add_metric([], total("active_flows"))
        yield g
        lost = CounterMetricFamily("hubble_lost_events", "Number of lost events "
                                   "(flow records a full table and a full ring lost)",
                                   labels=["source"])
        lost.add_metric(["flowmon_ring_buffer"], total("lost_records"))
        yield lost
        for field, doc in (("packets", "Packets the BPF flow monitor counted"),
                           ("lost_packets", "Packets of lost flow records"),
                           ("lost_bytes", "Bytes of lost flow records"),
                           ("full", "One-packet records sent because the flow table "
                                    "was full"),
                           ("drops_unmatched", "Kernel drops of packets of no flow in "
                                               "the table")):
            c = CounterMetricFamily("pybpfnet_flowmon_" + field, doc)
            c.add_metric([], total(field))
            yield c


def parse_listen(text, default_addr="127.0.0.1"):
    """``(addr, port)`` of "PORT", "ADDR:PORT" or "[IPV6]:PORT".
    Raises ValueError naming the expected form."""
    text = str(text).strip()
    addr, sep, port = text.rpartition(":")
    if not sep:
        addr = default_addr
    elif addr.startswith("["):
        if not addr.endswith("]"):
            raise ValueError("listen address %r: expected [ADDR]:PORT" % text)
        addr = addr[1:-1]
    elif ":" in addr:
        raise ValueError("listen address %r: put an IPv6 address in brackets, "
                         "[ADDR]:PORT" % text)
    try:
        port = int(port)
    except ValueError:
        raise ValueError("listen address %r: expected [ADDR:]PORT with a numeric port"
                         % text) from None
    if not 0 <= port <= 65535:
        raise ValueError("listen address %r: port must be 0..65535" % text)
    return addr or default_addr, port


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class MetricsServer:
    """An HTTP server of a registry's metrics (any path; ``/metrics`` by
    convention) on one thread of its own. ``address`` is the bound
    (host, port). ``close()`` (idempotent; also on ``with`` exit) stops
    the thread and closes the socket. Raises OSError when the address
    cannot be bound."""

    def __init__(self, registry, port=9965, addr="127.0.0.1"):
        pc = _prometheus()
        family, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)[0][::4]

        class Server(wsgiref.simple_server.WSGIServer):
            address_family = family

        self._closed = True
        self._httpd = wsgiref.simple_server.make_server(
            sockaddr[0], port, pc.make_wsgi_app(registry), Server, handler_class=_QuietHandler)
        try:
            self.address = self._httpd.server_address[:2]
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name="pybpfnet-metrics", daemon=True)
            self._thread.start()
        except BaseException:
            self._httpd.server_close()
            raise
        self._closed = False

    @property
    def url(self):
        """``http://ADDR:PORT/metrics`` of the bound address."""
        host, port = self.address
        host = "[%s]" % host if ":" in host else host
        return "http://%s:%d/metrics" % (host, port)

    def close(self):
        """Stop the server thread and close the socket (idempotent)."""
        if not self._closed:
            self._closed = True
            self._httpd.shutdown()
            self._thread.join()
            self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<MetricsServer %s%s>" % (self.url, " closed" if self._closed else "")
