"""L7 visibility: DNS queries and HTTP requests (HTTP/1.x, HTTP/2, gRPC)
seen at TC ingress/egress, as records with latency.

::

    from pybpfnet.dataplanes.l7 import L7Monitor

    with L7Monitor(["eth0"]) as mon:
        for record in mon:                # DnsRecord / HttpRecord
            print(record.to_json())

A BPF program (csrc/bpf/l7) copies the head of the L4 payload of DNS and
HTTP packets to a ring buffer; Python parses it (``_l7_dns``,
``_l7_http``) and pairs queries with responses (:class:`L7Correlator`):
DNS by (client, server, ports, DNS id), HTTP/1.x per TCP connection in
order (pipelining), HTTP/2 per stream. Latency is the difference of the
two packets' BPF timestamps at the hook. See docs/l7.md.
"""

import collections
import json
import time

import attrs

from pybpfnet._object import open_bundled
from pybpfnet.dataplanes import _l7_abi, _tc_monitor
from pybpfnet.dataplanes._l7_dns import ParseError, parse_dns, parse_dns_tcp, qtype_name, \
    rcode_name
from pybpfnet.dataplanes._l7_http import H2Frames, HttpRequest, HttpResponse, \
    parse_h2_frames, parse_http
from pybpfnet.dataplanes._tc_monitor import address as _address, endpoint as _named, \
    ip as _ip, mono_to_wall as _mono_to_wall

__all__ = ["L7Monitor", "L7Correlator", "L7Sample", "DnsRecord", "HttpRecord",
           "L7MonitorStats", "ParseError"]

_PROTO = {6: "tcp", 17: "udp"}


@attrs.frozen(slots=True)
class DnsRecord:
    """One DNS query and its response (if seen). ``time`` is the query's
    wall-clock time (epoch seconds); ``qname`` has no trailing dot;
    ``qtype`` a type name ("A", "AAAA", ... "TYPE<n>" for unnamed types);
    ``rcode`` "NOERROR", "NXDOMAIN", ... or None when no response was seen
    (then ``latency_ns`` is None too); ``answers`` the A/AAAA addresses and
    CNAME/PTR/NS targets of the answer section (those within the sample).
    ``latency_ns`` is response minus query timestamp at the hook."""

    time: float
    client: object = attrs.field(converter=_ip)
    server: object = attrs.field(converter=_ip)
    client_port: int
    server_port: int
    id: int
    qname: str
    qtype: str
    rcode: object
    answers: tuple
    latency_ns: object
    ifindex: int
    protocol: str
    client_name: object = None
    server_name: object = None

    def to_dict(self):
        """JSON-friendly fields (addresses as strings)."""
        d = attrs.asdict(self, recurse=False)
        d["client"], d["server"] = str(self.client), str(self.server)
        d["answers"] = list(self.answers)
        return {"type": "dns", **d}

    def to_json(self):
        """One line of JSON (for JSON-lines output)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self):
        """One line: endpoints (with names), query, rcode, answers, latency."""
        lat = " %.3fms" % (self.latency_ns / 1e6) if self.latency_ns is not None else ""
        ans = " [%s]" % ", ".join(self.answers) if self.answers else ""
        return "DNS %s -> %s %s %s %s? %s%s%s" % (
            _named(self.client, self.client_port, self.client_name),
            _named(self.server, self.server_port, self.server_name), self.protocol,
            self.qname, self.qtype, self.rcode or "(no response)", ans, lat)


@attrs.frozen(slots=True)
class HttpRecord:
    """One HTTP request and its response (if seen). ``protocol`` is
    "HTTP/1.0", "HTTP/1.1", "HTTP/2" or "gRPC"; ``method``, ``path``,
    ``host`` (Host header or :authority) and ``status`` are None when not
    seen or (HTTP/2) not decodable; ``latency_ns`` is response head minus
    request head timestamp at the hook (None: no response seen). ``time``
    is the request's wall-clock time (epoch seconds)."""

    time: float
    client: object = attrs.field(converter=_ip)
    server: object = attrs.field(converter=_ip)
    client_port: int
    server_port: int
    protocol: str
    method: object
    path: object
    host: object
    status: object
    latency_ns: object
    ifindex: int
    client_name: object = None
    server_name: object = None

    def to_dict(self):
        """JSON-friendly fields (addresses as strings)."""
        d = attrs.asdict(self, recurse=False)
        d["client"], d["server"] = str(self.client), str(self.server)
        return {"type": "http", **d}

    def to_json(self):
        """One line of JSON (for JSON-lines output)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self):
        """One line: protocol, endpoints (with names), request, status, latency."""
        lat = " %.3fms" % (self.latency_ns / 1e6) if self.latency_ns is not None else ""
        return "%s %s -> %s %s %s%s -> %s%s" % (
            self.protocol, _named(self.client, self.client_port, self.client_name),
            _named(self.server, self.server_port, self.server_name), self.method or "?",
            self.host or "", self.path or "?",
            self.status if self.status is not None else "(no response)", lat)


@attrs.frozen(slots=True)
class L7Sample:
    """One sampled packet as the BPF program reports it: ``ts_ns``
    (CLOCK_MONOTONIC), addresses, ports, ``proto`` (6/17), ``direction``,
    ``kind`` ("dns", "http", "h2"), ``ifindex``, ``tcp_seq``,
    ``payload_len`` (the packet's L4 payload) and ``data`` (its head)."""

    ts_ns: int
    src: object = attrs.field(converter=_ip)
    dst: object = attrs.field(converter=_ip)
    sport: int
    dport: int
    proto: int
    kind: str
    data: bytes
    ifindex: int = 1
    direction: str = "egress"
    tcp_seq: int = 0
    payload_len: int = 0


@attrs.frozen
class L7MonitorStats:
    """Counters. From BPF (summed over CPUs): ``packets`` TCP/UDP packets
    seen, ``sampled`` samples sent, ``lost`` samples lost (ring full),
    ``skipped`` HTTP-port segments not starting a message, ``truncated``
    samples cut at the snap length. From Python: ``parse_errors`` samples
    that did not parse, ``unmatched`` responses without a query/request
    seen, ``expired`` queries/requests given up after ``timeout``,
    ``evicted`` ones dropped because ``max_pending`` was reached,
    ``duplicates`` retransmitted segments ignored, ``pending`` waiting now."""

    packets: int = 0
    sampled: int = 0
    lost: int = 0
    skipped: int = 0
    truncated: int = 0
    dns_records: int = 0
    http_records: int = 0
    parse_errors: int = 0
    unmatched: int = 0
    expired: int = 0
    evicted: int = 0
    duplicates: int = 0
    pending: int = 0

    def to_dict(self):
        """The counters as a dict (field name -> int)."""
        return attrs.asdict(self)


class L7Correlator:
    """Turns samples into records: parses each and pairs queries with
    responses. Pure Python (no privileges); :class:`L7Monitor` feeds it.

    ``timeout`` (seconds of sample time) after which an unanswered query or
    request is reported with no response; ``max_pending`` bounds what waits
    (beyond it the oldest is reported unanswered and counted ``evicted``);
    ``resolver`` names addresses; ``wall_offset`` converts sample times to
    epoch seconds.
    """

    def __init__(self, *, resolver=None, timeout=10.0, max_pending=65536, wall_offset=0.0):
        self.resolver = resolver
        self.timeout_ns = int(timeout * 1e9)
        self.max_pending = int(max_pending)
        self.wall_offset = wall_offset
        self.counters = collections.Counter()
        self._dns = collections.OrderedDict()    # key -> (sample, msg)
        self._http = collections.OrderedDict()   # conn -> _Conn
        self._n_http = 0                         # requests waiting in _http
        self._now = 0

    # -- helpers ---------------------------------------------------------------
    def _names(self, client, server):
        r = self.resolver
        if r is None:
            return None, None
        return r.name(client), r.name(server)

    def _dns_record(self, q, qmsg, resp, rmsg):
        first = q or resp
        msg = qmsg or rmsg
        if q is not None:
            client, server, cport, sport = q.src, q.dst, q.sport, q.dport
        else:
            client, server, cport, sport = resp.dst, resp.src, resp.dport, resp.sport
        cname, sname = self._names(client, server)
        self.counters["dns_records"] += 1
        return DnsRecord(
            time=first.ts_ns / 1e9 + self.wall_offset, client=client, server=server,
            client_port=cport, server_port=sport, id=msg.id, qname=msg.qname,
            qtype=qtype_name(msg.qtype), rcode=rcode_name(rmsg.rcode) if rmsg else None,
            answers=rmsg.answers if rmsg else (),
            latency_ns=(resp.ts_ns - q.ts_ns) if (q is not None and resp is not None) else None,
            ifindex=first.ifindex, protocol=_PROTO.get(first.proto, str(first.proto)),
            client_name=cname, server_name=sname)

    def _http_record(self, conn, req, resp_ts, status, protocol=None):
        ts, method, path, host, proto = req
        cname, sname = self._names(conn.client, conn.server)
        self.counters["http_records"] += 1
        return HttpRecord(
            time=ts / 1e9 + self.wall_offset, client=conn.client, server=conn.server,
            client_port=conn.cport, server_port=conn.sport, protocol=protocol or proto,
            method=method, path=path, host=host, status=status,
            latency_ns=(resp_ts - ts) if resp_ts is not None else None, ifindex=conn.ifindex,
            client_name=cname, server_name=sname)

    # -- DNS -------------------------------------------------------------------
    def _add_dns(self, s):
        try:
            msgs = parse_dns_tcp(s.data) if s.proto == 6 else [parse_dns(s.data)]
        except ParseError:
            self.counters["parse_errors"] += 1
            return []
        out = []
        for m in msgs:
            if not m.response:
                key = (s.ifindex, s.proto, s.src, s.sport, s.dst, s.dport, m.id)
                if key in self._dns:
                    self.counters["duplicates"] += 1
                    continue
                self._dns[key] = (s, m)
                if len(self._dns) > self.max_pending:
                    _, (q, qm) = self._dns.popitem(last=False)
                    self.counters["evicted"] += 1
                    out.append(self._dns_record(q, qm, None, None))
            else:
                key = (s.ifindex, s.proto, s.dst, s.dport, s.src, s.sport, m.id)
                q = self._dns.pop(key, None)
                if q is None:
                    self.counters["unmatched"] += 1
                    out.append(self._dns_record(None, None, s, m))
                else:
                    out.append(self._dns_record(q[0], q[1], s, m))
        return out

    # -- HTTP ------------------------------------------------------------------
    def _conn(self, s, client_is_src, create=True):
        if client_is_src:
            key = (s.ifindex, s.src, s.sport, s.dst, s.dport)
        else:
            key = (s.ifindex, s.dst, s.dport, s.src, s.sport)
        c = self._http.get(key)
        if c is None and create:
            c = self._http[key] = _Conn(s.ifindex, key[1], key[2], key[3], key[4])
        if c is not None:
            c.last = s.ts_ns
            self._http.move_to_end(key)
        return c

    def _evict_http(self, out):
        """Over ``max_pending`` requests: report the oldest request of the
        least recently active connection unanswered, one at a time; over
        ``max_pending`` connections: forget the least recently active
        one, reporting what it still waited for."""
        while self._n_http > self.max_pending:
            for c in self._http.values():           # least recently active first
                req = c.pop_oldest()
                if req is not None:
                    break
            else:                                   # pragma: no cover (the count drifted)
                raise AssertionError("L7Correlator: %d requests counted, none waiting"
                                     % self._n_http)
            self._n_http -= 1
            self.counters["evicted"] += 1
            out.append(self._http_record(c, req, None, None))
        while len(self._http) > self.max_pending:
            key = next(iter(self._http))
            for r in self._close_conn(key, expired=False):
                self.counters["evicted"] += 1
                out.append(r)

    def _add_http(self, s):
        out = []
        fwd = self._http.get((s.ifindex, s.src, s.sport, s.dst, s.dport))
        rev = self._http.get((s.ifindex, s.dst, s.dport, s.src, s.sport))
        known_h2 = (fwd is not None and fwd.h2) or (rev is not None and rev.h2)
        try:
            msg = parse_h2_frames(s.data) if known_h2 and not s.data.startswith(b"PRI ") \
                else parse_http(s.data)
        except ParseError:
            self.counters["parse_errors"] += 1
            return out
        if isinstance(msg, H2Frames):
            # the preface and segments of the side that sent it come from the client
            from_client = msg.preface or (fwd is not None and fwd.h2) or rev is None
            c = self._conn(s, from_client)
            if c.seen(s.direction, s.tcp_seq, from_client):
                self.counters["duplicates"] += 1
                return out
            if msg.preface and not c.h2:
                c.h2 = True
                c.preface_ts = s.ts_ns          # pending until a request shows up
                self._n_http += 1
            for h in msg.headers:
                if h.grpc:
                    c.grpc = True               # a gRPC channel carries only gRPC
                if from_client:
                    if c.streams.get(h.stream) is None:
                        c.streams[h.stream] = [s.ts_ns, h.method, h.path, h.authority,
                                               "gRPC" if c.grpc else "HTTP/2"]
                        if c.preface_ts is not None:
                            c.preface_ts = None
                            self._n_http -= 1
                        self._n_http += 1
                elif not from_client and h.status is not None:
                    req = c.streams.pop(h.stream, None)
                    if req is None:
                        self.counters["unmatched"] += 1
                        req = [s.ts_ns, None, None, None, "HTTP/2"]
                        out.append(self._http_record(
                            c, req, None, h.status, "gRPC" if c.grpc else None))
                        continue
                    self._n_http -= 1
                    out.append(self._http_record(c, req, s.ts_ns, h.status,
                                                 "gRPC" if c.grpc else None))
        elif isinstance(msg, HttpRequest):
            c = self._conn(s, True)
            if c.seen(s.direction, s.tcp_seq, True):
                self.counters["duplicates"] += 1
                return out
            c.fifo.append([s.ts_ns, msg.method, msg.path, msg.host, msg.version])
            self._n_http += 1
        elif isinstance(msg, HttpResponse):
            c = self._conn(s, False)
            if c.seen(s.direction, s.tcp_seq, False):
                self.counters["duplicates"] += 1
                return out
            if 100 <= msg.status < 200:
                return out                              # interim response
            if c.fifo:
                req = c.fifo.popleft()
                self._n_http -= 1
                out.append(self._http_record(c, req, s.ts_ns, msg.status))
            else:
                self.counters["unmatched"] += 1
                out.append(self._http_record(c, [s.ts_ns, None, None, None, msg.version],
                                             None, msg.status))
        self._evict_http(out)
        return out

    # -- public ----------------------------------------------------------------
    def add(self, sample):
        """Records completed by one L7Sample (a list, often empty)."""
        if sample.ts_ns > self._now:
            self._now = sample.ts_ns
        if sample.kind == "dns":
            return self._add_dns(sample)
        return self._add_http(sample)

    def expire(self, now_ns=None):
        """Report queries/requests waiting longer than ``timeout`` (before
        ``now_ns``, CLOCK_MONOTONIC; default the newest sample's time) as
        records without a response."""
        now = self._now if now_ns is None else now_ns
        limit = now - self.timeout_ns
        out = []
        while self._dns:
            key, (q, qm) = next(iter(self._dns.items()))
            if q.ts_ns > limit:
                break
            del self._dns[key]
            self.counters["expired"] += 1
            out.append(self._dns_record(q, qm, None, None))
        for key in [k for k, c in self._http.items() if c.last <= limit]:
            out.extend(self._close_conn(key, expired=True))
        for c in self._http.values():           # active connections: their stale requests
            for req in c.expire(limit):
                self._n_http -= 1
                self.counters["expired"] += 1
                out.append(self._http_record(c, req, None, None))
        return out

    def _close_conn(self, key, expired):
        c = self._http.pop(key)
        out = []
        for req in c.drain():
            self._n_http -= 1
            if expired:
                self.counters["expired"] += 1
            out.append(self._http_record(c, req, None, None))
        return out

    def flush(self):
        """Report everything still waiting as records without a response
        and forget it."""
        out = []
        while self._dns:
            _, (q, qm) = self._dns.popitem(last=False)
            out.append(self._dns_record(q, qm, None, None))
        for key in list(self._http):
            out.extend(self._close_conn(key, expired=False))
        return out

    @property
    def pending(self):
        """Queries and requests waiting for a response."""
        return len(self._dns) + self._n_http


class _Conn:
    """Per-TCP-connection HTTP state (client -> server orientation)."""

    __slots__ = ("ifindex", "client", "cport", "server", "sport", "fifo", "h2", "grpc",
                 "streams", "preface_ts", "last", "_seqs")

    def __init__(self, ifindex, client, cport, server, sport):
        self.ifindex, self.client, self.cport, self.server, self.sport = \
            ifindex, client, cport, server, sport
        self.fifo = collections.deque()
        self.h2 = False
        self.grpc = False
        self.streams = {}
        self.preface_ts = None
        self.last = 0
        self._seqs = (collections.deque(maxlen=8), collections.deque(maxlen=8))

    def seen(self, direction, seq, from_client):
        """True for a retransmission (a sequence number just processed)."""
        d = self._seqs[0 if from_client else 1]
        if seq in d:
            return True
        d.append(seq)
        return False

    def expire(self, limit):
        """The requests made at or before ``limit`` (ns), removed; a
        preface-only connection that old counts as one."""
        out = []
        while self.fifo and self.fifo[0][0] <= limit:
            out.append(self.fifo.popleft())
        for stream in [k for k, req in self.streams.items() if req[0] <= limit]:
            out.append(self.streams.pop(stream))
        if self.preface_ts is not None and self.preface_ts <= limit:
            out.append([self.preface_ts, None, None, None, "HTTP/2"])
            self.preface_ts = None
        return out

    def pop_oldest(self):
        """The oldest request still waiting (removed), or None: the head
        of the HTTP/1.x queue, the oldest HTTP/2 stream or a pending
        preface, whichever was first."""
        best, where = None, None
        if self.fifo:
            best, where = self.fifo[0], "fifo"
        for stream, req in self.streams.items():
            if best is None or req[0] < best[0]:
                best, where = req, stream
        if self.preface_ts is not None and (best is None or self.preface_ts < best[0]):
            self.preface_ts, best = None, [self.preface_ts, None, None, None, "HTTP/2"]
            return best
        if where == "fifo":
            return self.fifo.popleft()
        if where is not None:
            return self.streams.pop(where)
        return None

    def drain(self):
        """The requests that got no response, then forget them; a
        connection that sent only the HTTP/2 preface counts as one."""
        out = list(self.fifo)
        out.extend(self.streams.values())
        self.fifo.clear()
        self.streams.clear()
        if self.preface_ts is not None:
            out.append([self.preface_ts, None, None, None, "HTTP/2"])
            self.preface_ts = None
        return out


class L7Monitor(_tc_monitor._TcMonitor):
    """The L7 data plane: the sampler attached at TC ``directions`` of
    ``interfaces`` (names or ifindexes, resolved in the calling thread's
    network namespace), or only loaded with ``interfaces=None`` (then
    ``program(direction)`` test-runs packets and ``poll()`` parses what
    they sampled). It runs alongside the flow monitor and other tcx
    programs on the same interface and never changes a verdict.

    ``dns_ports``/``http_ports``: the ports watched (either port of a
    packet; ``set_ports()`` changes them live); ``snaplen``: payload bytes
    copied per packet (1..512); ``h2_any_port``: look for the HTTP/2
    preface on every TCP port; ``resolver``: names for addresses (see
    :mod:`pybpfnet.dataplanes.resolver`); ``timeout``: seconds after which
    an unanswered query/request is reported without a response;
    ``max_pending`` bounds what waits.

    Needs Linux >= 5.8 (ring buffer; tcx links from 6.6, else clsact),
    CAP_BPF and CAP_NET_ADMIN. Raises ValueError for bad arguments
    (directions, position, snaplen, ports, ring_size, timeout,
    max_pending), FileNotFoundError for an
    interface that does not exist and BpfError (and subclasses) when load
    or attach fails; nothing stays attached then.
    """

    _PROG = _l7_abi.PROG
    _poll_wait = 1.0

    def __init__(self, interfaces=None, *, dns_ports=(53,), http_ports=(80, 8000, 8080),
                 snaplen=256, resolver=None, directions=("ingress", "egress"),
                 h2_any_port=False, ring_size=1 << 20, timeout=10.0, max_pending=65536,
                 position="first"):
        interfaces, self.directions = _tc_monitor.check_options(interfaces, directions,
                                                                position)
        self._abi = _l7_abi.abi()
        if not isinstance(snaplen, int) or not 1 <= snaplen <= self._abi.max_snap:
            raise ValueError("snaplen must be an int in 1..%d bytes, not %r"
                             % (self._abi.max_snap, snaplen))
        self.snaplen = snaplen
        ring_size = _tc_monitor.check_ring_size(ring_size)
        _tc_monitor.check_number("timeout", timeout)
        _tc_monitor.check_number("max_pending", max_pending, int, 1)
        self._kind_names = {v: k for k, v in self._abi.kinds.items()}
        self._correlator = L7Correlator(resolver=resolver, timeout=timeout,
                                        max_pending=max_pending, wall_offset=_mono_to_wall())
        self._init_handles()
        self._last_expire = time.monotonic()
        try:
            spec = open_bundled(_l7_abi.OBJECT)
            spec.maps[_l7_abi.MAP_EVENTS].max_entries = int(ring_size)
            spec.globals[_l7_abi.VAR_SNAPLEN] = self.snaplen
            spec.globals[_l7_abi.VAR_H2_ANY] = 1 if h2_any_port else 0
            self._obj = self._stack.enter_context(spec.load())
            self._ring = self._obj.maps[_l7_abi.MAP_EVENTS]
            self._ring.set_event_type(self._abi.sample)
            self._stats = self._obj.maps[_l7_abi.MAP_STATS]
            self._ports = self._obj.maps[_l7_abi.MAP_PORTS]
            self.set_ports(dns_ports, http_ports)
            _tc_monitor.attach_all(self, interfaces, "L7 monitor", position)
        except BaseException:
            self._stack.close()
            raise

    # -- configuration -------------------------------------------------------
    def set_ports(self, dns_ports=(53,), http_ports=(80, 8000, 8080)):
        """Watch these ports from now on (the others are cleared). Raises
        ValueError for a port outside 1..65535."""
        want = {}
        for bit, ports in ((self._abi.kinds["dns"], dns_ports),
                           (self._abi.kinds["http"], http_ports)):
            for p in ports:
                if not isinstance(p, int) or not 0 < p < 65536:
                    raise ValueError("port must be an int in 1..65535, not %r" % (p,))
                want[p] = want.get(p, 0) | bit
        old = getattr(self, "_watched", {})
        for p in set(old) - set(want):
            self._ports[p] = 0
        for p, bits in want.items():
            self._ports[p] = bits
        self._watched = want
        self.dns_ports = tuple(sorted(p for p, b in want.items() if b & self._abi.kinds["dns"]))
        self.http_ports = tuple(sorted(p for p, b in want.items()
                                       if b & self._abi.kinds["http"]))

    @property
    def resolver(self):
        """The resolver naming record endpoints (None: no names)."""
        return self._correlator.resolver

    # -- handles (program, links, ring, fileno: _TcMonitor) ---------------------
    @property
    def correlator(self):
        """The L7Correlator that parses samples and pairs them."""
        return self._correlator

    # -- records -------------------------------------------------------------
    def _sample(self, e):
        return L7Sample(
            ts_ns=e.ts_ns, src=_address(e.saddr, e.family), dst=_address(e.daddr, e.family),
            sport=e.sport, dport=e.dport, proto=e.proto,
            kind=self._kind_names.get(e.kind, "http"), data=e.data[:e.cap_len],
            ifindex=e.ifindex, direction=_l7_abi.DIRECTIONS[e.direction & 1],
            tcp_seq=e.tcp_seq, payload_len=e.payload_len)

    def samples(self, timeout=0):
        """The raw samples in the ring (L7Sample), bypassing the parsers
        (waits up to ``timeout`` seconds for the first)."""
        return [self._sample(e) for e in self._ring.poll(timeout)]

    def poll(self, timeout=0):
        """Records completed since the last call (waiting up to ``timeout``
        seconds for the first sample; None: until one comes), plus
        queries/requests that timed out (checked every second)."""
        corr = self._correlator
        out = []
        for e in self._ring.poll(timeout):
            out.extend(corr.add(self._sample(e)))
        if time.monotonic() - self._last_expire >= 1.0:
            self._last_expire = time.monotonic()
            corr.wall_offset = _mono_to_wall()
            out.extend(corr.expire(time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
        return out

    def flush(self):
        """Every record: what the ring holds, then every query/request still
        waiting (as records without a response)."""
        out = self.poll(0)
        out.extend(self._correlator.flush())
        return out

    def stats(self):
        """L7MonitorStats: BPF counters summed over CPUs and the parser's."""
        vals = {name: self._stats.sum(i) for name, i in self._abi.stats.items()}
        c = self._correlator.counters
        py = {k: c[k] for k in ("dns_records", "http_records", "parse_errors", "unmatched",
                                "expired", "evicted", "duplicates")}
        return L7MonitorStats(pending=self._correlator.pending, **vals, **py)

    def __repr__(self):
        ifaces = ", ".join(self._names.values()) or "not attached"
        return "<L7Monitor %s %s dns=%s http=%s>" % (
            ifaces, "/".join(self.directions), ",".join(map(str, self.dns_ports)),
            ",".join(map(str, self.http_ports)))
