"""The L7 parsers (DNS, HTTP/1.x, HTTP/2 + gRPC), the correlator and the
static resolver, without privileges. Hypothesis feeds arbitrary bytes and
mutations of valid messages: the parsers may only raise ParseError."""

import ipaddress
import struct

import hpack          # the HPACK oracle (test extra)
import pytest
from hypothesis import given, settings, strategies as st

from pybpfnet.dataplanes._l7_dns import ParseError, build_query, parse_dns, parse_dns_tcp
from pybpfnet.dataplanes._l7_http import H2_PREFACE, H2Frames, HttpRequest, HttpResponse, \
    parse_h2_frames, parse_http
from pybpfnet.dataplanes.l7 import DnsRecord, HttpRecord, L7Correlator, L7Sample
from pybpfnet.dataplanes.resolver import CachingResolver, ChainResolver, Resolver, \
    StaticResolver


def dns_response(query, rcode=0, answers=()):
    """A response to ``query``: answers are (type, rdata bytes) owned by the
    question name (compression pointer to offset 12)."""
    r = bytearray(query)
    r[2] |= 0x80
    r[3] = (r[3] & 0xF0) | rcode
    r[6:8] = struct.pack("!H", len(answers))
    r[10:12] = b"\x00\x00"
    for rtype, rdata in answers:
        r += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return bytes(r)


CNAME_TARGET = b"\x03www\x07example\x00"
VALID_DNS = [
    build_query("www.example.test", "A", 7),
    dns_response(build_query("a.b", "AAAA", 9), 0, [(28, ipaddress.IPv6Address("fd00::1").packed)]),
    dns_response(build_query("x.test", "A", 1), 0, [(5, CNAME_TARGET), (1, bytes([1, 2, 3, 4]))]),
    dns_response(build_query("nope.test", "TXT", 2), 3),
]
VALID_HTTP = [
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n",
    b"POST /api HTTP/1.0\r\nContent-Type: application/json\r\nHost: h:8080\r\n\r\n{}",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    + b"\x00\x00\x1c\x01\x04\x00\x00\x00\x01\x83\x86\x04\x05/a/b1\x0f\x10\x10application/grpc",
]


def test_dns_query_and_responses():
    q = parse_dns(VALID_DNS[0])
    assert (q.id, q.response, q.qname, q.qtype_name, q.answers) == \
        (7, False, "www.example.test", "A", ())
    r = parse_dns(VALID_DNS[1])
    assert (r.response, r.qtype_name, r.rcode_name, r.answers) == \
        (True, "AAAA", "NOERROR", ("fd00::1",))
    assert parse_dns(VALID_DNS[2]).answers == ("www.example", "1.2.3.4")
    assert parse_dns(VALID_DNS[3]).rcode_name == "NXDOMAIN"
    assert parse_dns(build_query("h.test", "TYPE65")).qtype_name == "HTTPS"
    assert parse_dns(build_query("h.test", 4242)).qtype_name == "TYPE4242"
    assert parse_dns(build_query(".", "NS")).qname == "."


def test_dns_tcp_length_prefix_and_truncation():
    two = build_query("a.test", "A", 1, tcp=True) + build_query("b.test", "A", 2, tcp=True)
    assert [m.qname for m in parse_dns_tcp(two)] == ["a.test", "b.test"]
    cut = VALID_DNS[2][:-3]
    m = parse_dns(cut)
    assert m.truncated and m.answers == ("www.example",)
    with pytest.raises(ParseError, match="header"):
        parse_dns(b"\x00" * 5)
    with pytest.raises(ParseError):
        parse_dns_tcp(b"\x00\x03abc")


def test_dns_pointer_loops_are_rejected():
    hdr = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    for name in (b"\xc0\x0c", b"\x01a\xc0\x0c", b"\xc0\x0e\xc0\x0c", b"\xc0\xff"):
        with pytest.raises(ParseError, match="pointer"):
            parse_dns(hdr + name + b"\x00\x01\x00\x01")


def test_dns_label_escapes():
    q = bytearray(build_query("ab.c", "A"))
    q[13] = ord(".")
    assert parse_dns(bytes(q)).qname == "\\046b.c"


def test_http1():
    r = parse_http(VALID_HTTP[0])
    assert r == HttpRequest("GET", "/index.html?q=1", "HTTP/1.1", "example.test", None)
    r = parse_http(VALID_HTTP[1])
    assert (r.method, r.version, r.host, r.content_type) == \
        ("POST", "HTTP/1.0", "h:8080", "application/json")
    assert parse_http(VALID_HTTP[2]) == HttpResponse("HTTP/1.1", 404, None)
    assert parse_http(b"GET / HTTP/1.1\r\nHo").host is None          # cut by the sample
    for bad in (b"GET / HTTP/2.0\r\n", b"HTTP/1.1 2000 x\r\n", b"G@T / HTTP/1.1\r\n",
                b"GET  HTTP/1.1\r\n", b"GET / HTTP/1.1", b""):
        with pytest.raises(ParseError):
            parse_http(bad)


def test_http2_and_grpc():
    f = parse_http(VALID_HTTP[3])
    assert isinstance(f, H2Frames) and f.preface
    (h,) = f.headers
    assert (h.stream, h.method, h.path, h.grpc) == (1, "POST", "/a/b1", True)
    assert parse_http(H2_PREFACE[:10]) == H2Frames(preface=True)
    cut = parse_http(VALID_HTTP[3][:-17]).headers[0]         # block cut in content-type
    assert (cut.method, cut.path, cut.grpc) == ("POST", "/a/b1", False)
    # a response HEADERS frame: :status 404 (static 13), Huffman-coded content-type
    resp = parse_h2_frames(b"\x00\x00\x03\x01\x05\x00\x00\x00\x03\x8d\x5f\x81")
    (h,) = resp.headers
    assert (h.stream, h.status, h.grpc, h.end_stream) == (3, 404, False, True)
    with pytest.raises(ParseError):
        parse_http(b"PRI * HTTP/1.1\r\n")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_only_raise_parse_error_on_arbitrary_bytes(data):
    for parse in (parse_dns, parse_dns_tcp, parse_http, parse_h2_frames):
        try:
            parse(data)
        except ParseError:
            pass


@st.composite
def mutated(draw, valid):
    data = bytearray(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "cut", "insert")))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(mutated(VALID_DNS + VALID_HTTP))
def test_parsers_only_raise_parse_error_on_mutations(data):
    for parse in (parse_dns, parse_dns_tcp, parse_http, parse_h2_frames):
        try:
            parse(data)
        except ParseError:
            pass
    corr = L7Correlator()
    for kind, proto in (("dns", 17), ("dns", 6), ("http", 6), ("h2", 6)):
        corr.add(L7Sample(ts_ns=1, src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2,
                          proto=proto, kind=kind, data=data))
    corr.flush()


def sample(ts, src, dst, sport, dport, data, kind="dns", proto=17, seq=0):
    return L7Sample(ts_ns=ts, src=src, dst=dst, sport=sport, dport=dport, proto=proto,
                    kind=kind, data=data, tcp_seq=seq)


def test_correlator_dns_pairs_by_id_and_expires():
    names = StaticResolver({"10.0.0.2": "dns"})
    c = L7Correlator(resolver=names, timeout=1.0, max_pending=2)
    q1, q2 = build_query("a.test", "A", 1), build_query("b.test", "A", 2)
    assert c.add(sample(100, "10.0.0.1", "10.0.0.2", 5000, 53, q1)) == []
    assert c.add(sample(200, "10.0.0.1", "10.0.0.2", 5000, 53, q2)) == []
    (r,) = c.add(sample(1000, "10.0.0.2", "10.0.0.1", 53, 5000, dns_response(q2, 3)))
    assert isinstance(r, DnsRecord)
    assert (r.qname, r.rcode, r.latency_ns, r.server_name, r.client_name) == \
        ("b.test", "NXDOMAIN", 800, "dns", None)
    (late,) = c.expire(100 + 2_000_000_000)
    assert (late.qname, late.rcode, late.latency_ns) == ("a.test", None, None)
    for i in range(3):                      # max_pending=2: the oldest is evicted
        c.add(sample(10 + i, "10.0.0.1", "10.0.0.2", 6000, 53, build_query("x.t", "A", i)))
    assert c.counters["evicted"] == 1 and c.pending == 2
    assert len(c.flush()) == 2 and c.pending == 0
    (orphan,) = c.add(sample(5, "10.0.0.2", "10.0.0.1", 53, 1, dns_response(q1)))
    assert orphan.latency_ns is None and c.counters["unmatched"] == 1


def test_correlator_http_pipelining_is_fifo_and_retransmits_ignored():
    c = L7Correlator()
    cl, sv = "10.0.0.1", "10.0.0.2"
    c.add(sample(10, cl, sv, 40000, 80, b"GET /a HTTP/1.1\r\n\r\n", "http", 6, seq=1))
    c.add(sample(11, cl, sv, 40000, 80, b"GET /b HTTP/1.1\r\n\r\n", "http", 6, seq=20))
    assert c.add(sample(12, cl, sv, 40000, 80, b"GET /b HTTP/1.1\r\n\r\n", "http", 6,
                        seq=20)) == []
    assert c.add(sample(13, sv, cl, 80, 40000, b"HTTP/1.1 100 Continue\r\n\r\n", "http", 6,
                        seq=5)) == []
    (a,) = c.add(sample(20, sv, cl, 80, 40000, b"HTTP/1.1 200 OK\r\n\r\n", "http", 6, seq=6))
    (b,) = c.add(sample(30, sv, cl, 80, 40000, b"HTTP/1.1 500 X\r\n\r\n", "http", 6, seq=9))
    assert isinstance(a, HttpRecord)
    assert [(r.path, r.status, r.latency_ns) for r in (a, b)] == [("/a", 200, 10), ("/b", 500, 19)]
    assert c.counters["duplicates"] == 1 and c.pending == 0


def test_records_to_json():
    r = DnsRecord(time=1.5, client="10.0.0.1", server="fd00::2", client_port=1, server_port=53,
                  id=3, qname="a", qtype="A", rcode=None, answers=("1.2.3.4",), latency_ns=None,
                  ifindex=2, protocol="udp")
    d = r.to_dict()
    assert d["server"] == "fd00::2" and d["answers"] == ["1.2.3.4"] and d["rcode"] is None
    assert '"qname":"a"' in r.to_json() and "(no response)" in str(r)
    h = HttpRecord(time=1.0, client="10.0.0.1", server="10.0.0.2", client_port=1,
                   server_port=80, protocol="gRPC", method="POST", path="/s/m", host=None,
                   status=200, latency_ns=5, ifindex=2, client_name="c")
    assert h.to_dict()["client_name"] == "c" and "gRPC" in str(h)


def test_static_resolver_longest_prefix_and_files(tmp_path):
    r = StaticResolver({"10.0.0.0/8": "cluster", "10.0.0.5": "db", "fd00::/64": "v6net"})
    assert isinstance(r, Resolver)
    assert [r.name(ipaddress.ip_address(a)) for a in
            ("10.0.0.5", "10.1.2.3", "192.0.2.1", "fd00::9", "::ffff:10.0.0.5")] == \
        ["db", "cluster", None, "v6net", "db"]
    lines = tmp_path / "names.txt"
    lines.write_text("# lab\n10.0.0.0/24 lab   # comment\n\n10.0.0.2 server\n")
    f = StaticResolver.from_file(lines)
    assert (f.name("10.0.0.2"), f.name("10.0.0.9"), len(f)) == ("server", "lab", 2)
    toml = tmp_path / "names.toml"
    toml.write_text('[names]\n"10.0.0.0/24" = "lab"\n"fd00::2" = "srv6"\n')
    t = StaticResolver.from_file(toml)
    assert (t.name("10.0.0.1"), t.name("fd00::2")) == ("lab", "srv6")
    bad = tmp_path / "bad.txt"
    bad.write_text("10.0.0.1 ok\n10.0.0.300 nope\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: '10.0.0.300' is not an IP"):
        StaticResolver.from_file(bad)
    bad.write_text("10.0.0.1\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'CIDR-or-IP name'"):
        StaticResolver.from_file(bad)
    (tmp_path / "bad.toml").write_text("names = 3\n")
    with pytest.raises(ValueError, match=r"\[names\] table"):
        StaticResolver.from_file(tmp_path / "bad.toml")
    with pytest.raises(FileNotFoundError):
        StaticResolver.from_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"entry 2: expected a \(CIDR-or-IP, name\) pair, "
                                         r"not '10.0.0.9'"):
        StaticResolver([("10.0.0.1", "a"), "10.0.0.9"])
    with pytest.raises(ValueError, match="entry 1: the name must be a non-empty string"):
        StaticResolver({"10.0.0.1": ""})
    with pytest.raises(ValueError, match="maxsize must be at least 1, not 0"):
        CachingResolver(r, maxsize=0)


def test_caching_and_chain_resolvers():
    calls = []

    class Counting:
        def name(self, addr):
            calls.append(addr)
            return "x" if str(addr).startswith("10.") else None

    c = CachingResolver(Counting(), maxsize=1)
    assert [c.name("10.0.0.1"), c.name("10.0.0.1"), c.name("1.1.1.1"), c.name("10.0.0.1")] == \
        ["x", "x", None, "x"]
    assert len(calls) == 3
    chain = ChainResolver(StaticResolver({"1.1.1.1": "one"}), Counting())
    assert (chain.name("1.1.1.1"), chain.name("10.9.9.9"), chain.name("8.8.8.8")) == \
        ("one", "x", None)


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TOKEN, _VALUE, max_size=6), st.booleans(),
       st.sampled_from(["GET", "POST", "PUT"]), _VALUE.map(lambda v: "/" + v.replace(" ", "")),
       st.sampled_from(["application/grpc", "application/grpc+proto", "text/html"]))
def test_hpack_first_block_decodes_as_the_hpack_library_encodes(extra, huffman, method, path,
                                                                  ctype):
    """hpack (python-hyper) is the oracle: the first header block of a
    connection (empty dynamic table) decodes to what was encoded."""
    from pybpfnet.dataplanes._l7_http import _hpack
    fields = [(":method", method), (":path", path), (":authority", "example.test:8080"),
              ("content-type", ctype)] + [(k, v) for k, v in extra.items()
                                          if k not in ("content-type",)]
    block = hpack.Encoder().encode(fields, huffman=huffman)
    got = []
    _hpack(block, got)
    assert got == fields
    (h,) = parse_h2_frames(len(block).to_bytes(3, "big") + b"\x01\x04\x00\x00\x00\x05"
                           + block).headers
    assert (h.stream, h.method, h.path, h.authority, h.grpc) == \
        (5, method, path, "example.test:8080", ctype.startswith("application/grpc"))


def test_huffman_decoding_rejects_bad_padding_and_eos():
    from pybpfnet.dataplanes._l7_http import huffman_decode
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    enc = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    assert huffman_decode(enc.encode(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(ParseError, match="padding"):
        huffman_decode(b"\x00")                       # '0' (5 bits) then 000 padding
    with pytest.raises(ParseError):
        huffman_decode(b"\xff\xff\xff\xff")           # EOS (30 ones)


def test_correlator_http2_streams_and_grpc_channel():
    c = L7Correlator()
    cl, sv = "10.0.0.1", "10.0.0.2"

    def h2(ts, data, from_client, seq):
        s = (cl, sv, 40000, 50051) if from_client else (sv, cl, 50051, 40000)
        return c.add(L7Sample(ts_ns=ts, src=s[0], dst=s[1], sport=s[2], dport=s[3], proto=6,
                              kind="h2", data=data, tcp_seq=seq))

    def frame(stream, block, flags=0x4):
        return len(block).to_bytes(3, "big") + bytes([1, flags]) + stream.to_bytes(4, "big") \
            + block

    enc = hpack.Encoder()
    fields = [(":method", "POST"), (":path", "/a.B/C"), ("content-type", "application/grpc")]
    assert h2(10, H2_PREFACE + frame(1, enc.encode(fields)), True, 1) == []
    assert h2(20, frame(3, enc.encode(fields)), True, 2) == []
    (r3,) = h2(25, frame(3, b"\x88", 0x5), False, 7)        # streams answered out of order
    (r1,) = h2(30, frame(1, b"\x88", 0x5), False, 8)
    assert [(r.protocol, r.path, r.status, r.latency_ns) for r in (r1, r3)] == \
        [("gRPC", "/a.B/C", 200, 20), ("gRPC", None, 200, 5)]
    assert c.pending == 0


def test_correlator_state_is_bounded_on_busy_connections():
    """Beyond max_pending requests the oldest one is reported unanswered
    (one at a time: a busy keep-alive connection keeps its newest);
    requests of a connection that stays active expire by their own age;
    connections beyond max_pending are evicted; the pending count never
    drifts."""
    c = L7Correlator(timeout=1.0, max_pending=8)
    cl, sv = "10.0.0.1", "10.0.0.2"
    sec = 1_000_000_000
    evicted = []
    for i in range(50):                     # one keep-alive connection, no response sampled
        evicted += c.add(sample(i * sec // 10, cl, sv, 40000, 80,
                                b"GET /%d HTTP/1.1\r\n\r\n" % i, "http", 6, seq=i * 100))
        assert c.pending == min(i + 1, 8)
    assert [r.path for r in evicted] == ["/%d" % i for i in range(42)]
    assert all(r.status is None and r.latency_ns is None for r in evicted)
    # at 5.5 s with a 1 s timeout: requests made at or before 4.5 s expire
    # although the connection was active at 4.9 s
    expired = c.expire(55 * sec // 10)
    assert [r.path for r in expired] == ["/42", "/43", "/44", "/45"] and c.pending == 4
    for port in range(1000, 1100):          # many connections, preface only
        c.add(L7Sample(ts_ns=6 * sec, src=cl, dst=sv, sport=port, dport=8080, proto=6,
                       kind="h2", data=H2_PREFACE, tcp_seq=1))
        assert c.pending <= 8 and len(c._http) <= 8
    # 4 prefaces fill the 4 free places; the next 4 push out /46../49, every
    # later one the oldest preface: 42 + 4 + 92 evicted
    assert (c.counters["evicted"], c.counters["expired"]) == (138, 4)
    rest = c.flush()
    assert c.pending == 0 and len(c._http) == 0
    assert sorted(r.client_port for r in rest) == list(range(1092, 1100))
    assert all(r.protocol == "HTTP/2" and r.status is None for r in rest)
    assert c.counters["http_records"] == 42 + 4 + 92 + 4 + 8
