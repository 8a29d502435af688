"""L7 monitor on a real veth in a lab: a real DNS server (dnsmasq) queried
by a real client (dig, UDP and TCP), a real HTTP server (python's
http.server) fetched with curl, curl speaking HTTP/2 with prior knowledge,
and a gRPC-shaped HTTP/2 exchange. The records must match what was sent;
the oracle is the servers' configuration and the requests we made."""

import re
import shutil
import struct
import subprocess
import time

import pytest

from flowlab import run_beside, serve_one
from pybpfnet.dataplanes.l7 import DnsRecord, HttpRecord, L7Monitor
from pybpfnet.dataplanes.resolver import StaticResolver

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dnsmasq", "dig", "curl")),
    reason="needs dnsmasq, dig (bind9-dnsutils) and curl (make sysdeps)")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture
def hosts(lab):
    return lab.two_hosts(v6=False)


def collect(mon, done, tries=100):
    """Poll until done(records) or tries run out; returns the records."""
    out = []
    for _ in range(tries):
        out += mon.poll(timeout=0.05)
        if done(out):
            break
    return out


def wait_until(fn, what, tries=200):
    for _ in range(tries):
        if fn():
            return
        time.sleep(0.025)
    raise AssertionError("timed out waiting for " + what)


DNSMASQ_V4 = ("--address=/example.test/10.9.8.7",
              "--host-record=v6.example.test,10.9.8.6,fd00::99",
              "--cname=alias.example.test,v6.example.test")


def start_dnsmasq(hosts, server=None, records=DNSMASQ_V4, probe=("www.example.test", "A"),
                  want=b"10.9.8.7"):
    """dnsmasq on ``server`` (default the server's IPv4 address) in the
    server namespace (the lab stops it), serving ``records``; returns once
    the client's ``dig probe`` gets ``want``."""
    server = str(server or hosts.server_ip)
    proc = hosts.server.popen(
        ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--port=53", "--listen-address=" + server, "--bind-interfaces", "--pid-file=",
         "--user=root", "--local=/test/", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answering():
        r = hosts.client.run_process(["dig", "@" + server, "+short", "+time=1", "+tries=1",
                                      *probe], capture_output=True, timeout=5)
        return want in r.stdout

    wait_until(answering, "dnsmasq on %s to answer %s" % (server, " ".join(probe)))
    return proc


def dig(hosts, *args):
    return hosts.client.check_output(["dig", "@" + str(hosts.server_ip), "+time=2",
                                      "+tries=1", *args], timeout=10)


def dig_result(out):
    """(status, answers) as dig printed them: the header's status and the
    rdata of the ANSWER SECTION (names without their trailing dot)."""
    text = out.decode()
    status = re.search(r"status: (\w+)", text).group(1)
    answers = []
    if ";; ANSWER SECTION:" in text:
        for line in text.split(";; ANSWER SECTION:\n", 1)[1].splitlines():
            if not line.strip():
                break
            fields = line.split()
            if fields[3] in ("A", "AAAA", "CNAME"):
                answers.append(fields[4].rstrip("."))
    return status, tuple(answers)


def test_dns_records_match_dnsmasq(hosts):
    start_dnsmasq(hosts)
    names = StaticResolver({str(hosts.server_ip): "dns-server", "10.0.0.0/24": "lab"})
    with hosts.client.enter():
        mon = L7Monitor(["eth0"], resolver=names)
    queries = [("www.example.test", "A", "udp"), ("v6.example.test", "AAAA", "udp"),
               ("alias.example.test", "A", "udp"), ("nothing.test", "A", "udp"),
               ("www.example.test", "A", "tcp"), ("www.example.test", "TXT", "udp")]
    want = []
    with mon:
        for qname, qtype, proto in queries:
            out = dig(hosts, *(["+tcp"] if proto == "tcp" else []), qname, qtype)
            want.append((qname, qtype, proto) + dig_result(out))
        recs = collect(mon, lambda rs: len(rs) >= len(queries))
        stats = mon.stats()
    assert all(isinstance(r, DnsRecord) for r in recs)
    got = sorted((r.qname, r.qtype, r.protocol, r.rcode, r.answers) for r in recs)
    assert got == sorted(want), (got, want)
    # what dnsmasq was configured to answer
    assert ("www.example.test", "A", "udp", "NOERROR", ("10.9.8.7",)) in want
    assert ("v6.example.test", "AAAA", "udp", "NOERROR", ("fd00::99",)) in want
    assert ("alias.example.test", "A", "udp", "NOERROR",
            ("v6.example.test", "10.9.8.6")) in want
    assert ("nothing.test", "A", "udp", "NXDOMAIN", ()) in want
    for r in recs:
        assert r.latency_ns > 0
        assert (r.client, r.server, r.server_port) == (hosts.client_ip, hosts.server_ip, 53)
        assert (r.client_name, r.server_name) == ("lab", "dns-server")
        assert r.ifindex == hosts.client_if.ifindex
    assert stats.parse_errors == 0 and stats.lost == 0 and stats.unmatched == 0


def start_http_server(hosts, tmp_path):
    (tmp_path / "hello.txt").write_text("hello\n")
    hosts.server.popen(["python3", "-m", "http.server", "8080", "--bind",
                        str(hosts.server_ip)], cwd=str(tmp_path),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            hosts.client.create_connection((str(hosts.server_ip), 8080), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(up, "http.server to listen")


def curl(hosts, *args):
    r = hosts.client.run_process(["curl", "-s", "-o", "/dev/null", "--max-time", "5", *args],
                                 timeout=10)
    return r.returncode


def test_http1_records_match_curl(hosts, tmp_path):
    start_http_server(hosts, tmp_path)
    base = "http://%s:8080" % hosts.server_ip
    with hosts.client.enter():
        mon = L7Monitor(["eth0"])
    with mon:
        assert curl(hosts, base + "/hello.txt") == 0
        curl(hosts, base + "/missing/page?q=1")
        curl(hosts, "-I", base + "/hello.txt")
        curl(hosts, "-X", "POST", "-d", "a=1", base + "/form")
        curl(hosts, "--http1.0", base + "/hello.txt")
        recs = collect(mon, lambda rs: len(rs) >= 5)
        stats = mon.stats()
    assert all(isinstance(r, HttpRecord) for r in recs)
    host = "%s:8080" % hosts.server_ip
    got = sorted((r.protocol, r.method, r.path, r.host, r.status) for r in recs)
    assert got == sorted([
        ("HTTP/1.1", "GET", "/hello.txt", host, 200),
        ("HTTP/1.1", "GET", "/missing/page?q=1", host, 404),
        ("HTTP/1.1", "HEAD", "/hello.txt", host, 200),
        ("HTTP/1.1", "POST", "/form", host, 501),
        ("HTTP/1.0", "GET", "/hello.txt", host, 200),
    ]), got
    for r in recs:
        assert r.latency_ns > 0 and r.server_port == 8080 and r.server == hosts.server_ip
    assert stats.parse_errors == 0 and stats.unmatched == 0


def h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + \
        struct.pack("!I", stream) + payload


def lit(index, value, prefix_bits=4):
    """HPACK literal without indexing, indexed name, raw (non-Huffman) value."""
    raw = value.encode()
    if index < (1 << prefix_bits) - 1:
        head = bytes([index])
    else:
        head = bytes([(1 << prefix_bits) - 1, index - ((1 << prefix_bits) - 1)])
    return head + bytes([len(raw)]) + raw


def h2_server(conn, response_block, streams=1):
    """Wait for ``streams`` HEADERS frames of the client on ``conn``,
    answer SETTINGS and HEADERS(END_STREAM) on each of their streams."""
    conn.settimeout(5)
    buf = b""
    seen = []
    while len(seen) < streams:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
        pos = len(H2_PREFACE) if buf.startswith(H2_PREFACE) else 0
        seen = []
        while pos + 9 <= len(buf):
            n = int.from_bytes(buf[pos:pos + 3], "big")
            if buf[pos + 3] == 1:
                seen.append(int.from_bytes(buf[pos + 5:pos + 9], "big"))
            pos += 9 + n
    conn.sendall(h2_frame(4, 0, 0) + h2_frame(4, 1, 0))
    for stream in seen:
        conn.sendall(h2_frame(1, 0x5, stream, response_block))
    time.sleep(0.1)


def run_h2(hosts, port, client, response_block, streams=1, **kw):
    with hosts.server.create_server((str(hosts.server_ip), port)) as srv:
        with hosts.client.enter():
            mon = L7Monitor(["eth0"], **kw)
        with mon:
            with serve_one(srv, lambda conn: h2_server(conn, response_block, streams)):
                client()
            recs = collect(mon, lambda rs: len(rs) >= streams)
            recs += mon.flush()
    return recs


def test_http2_prior_knowledge_from_curl(hosts):
    url = "http://%s:8080/h2/path" % hosts.server_ip
    recs = run_h2(hosts, 8080, lambda: curl(hosts, "--http2-prior-knowledge", url),
                  b"\x88")                                     # :status 200 (static 8)
    (r,) = recs
    assert (r.protocol, r.method, r.path, r.host, r.status, r.server_port) == \
        ("HTTP/2", "GET", "/h2/path", "%s:8080" % hosts.server_ip, 200, 8080)
    assert r.latency_ns > 0


def test_grpc_headers_on_any_port(hosts):
    port = 50051
    authority = "%s:%d" % (hosts.server_ip, port)
    block = (b"\x83\x86" + lit(4, "/demo.Greeter/SayHello") + lit(1, authority)
             + lit(31, "application/grpc") + b"\x00\x02te\x08trailers")

    def client():
        with hosts.client.create_connection((str(hosts.server_ip), port)) as c:
            c.sendall(H2_PREFACE + h2_frame(4, 0, 0))
            c.sendall(h2_frame(1, 0x4, 1, block))
            while c.recv(4096):
                pass

    recs = run_h2(hosts, port, client, b"\x88" + lit(31, "application/grpc"),
                  h2_any_port=True)
    (r,) = recs
    assert (r.protocol, r.method, r.path, r.host, r.status) == \
        ("gRPC", "POST", "/demo.Greeter/SayHello", authority, 200)
    assert r.latency_ns > 0 and r.client == hosts.client_ip


def test_preface_only_connection_is_reported_as_http2(hosts):
    def client():
        with hosts.client.create_connection((str(hosts.server_ip), 8000)) as c:
            c.sendall(H2_PREFACE)

    with hosts.server.create_server((str(hosts.server_ip), 8000)) as srv:
        with hosts.client.enter():
            mon = L7Monitor(["eth0"])
        with mon:
            client()
            srv.accept()[0].close()
            recs = collect(mon, lambda rs: False, tries=5) + mon.flush()
    (r,) = recs
    assert (r.protocol, r.method, r.status, r.latency_ns) == ("HTTP/2", None, None, None)


def test_grpc_channel_with_huffman_and_dynamic_table(hosts):
    """Two RPCs on one connection, encoded as HTTP/2 libraries do (hpack:
    Huffman strings, incremental indexing): the second RPC's content-type
    and :path are dynamic-table references the parser does not decode, yet
    the connection is known to carry gRPC."""
    hpack = pytest.importorskip("hpack")
    port = 50052
    authority = "%s:%d" % (hosts.server_ip, port)
    enc = hpack.Encoder()
    fields = [(":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/SayHello"),
              (":authority", authority), ("content-type", "application/grpc"),
              ("te", "trailers")]
    first = enc.encode(fields, huffman=True)
    second = enc.encode(fields, huffman=True)
    assert b"application/grpc" not in first + second        # Huffman-coded

    def client():
        with hosts.client.create_connection((str(hosts.server_ip), port)) as c:
            c.sendall(H2_PREFACE + h2_frame(4, 0, 0))
            c.sendall(h2_frame(1, 0x4, 1, first))
            time.sleep(0.05)
            c.sendall(h2_frame(1, 0x4, 3, second))
            while c.recv(4096):
                pass

    recs = run_h2(hosts, port, client, b"\x88" + hpack.Encoder().encode(
        [("content-type", "application/grpc")], huffman=True), streams=2, h2_any_port=True)
    recs.sort(key=lambda r: r.time)
    assert [(r.protocol, r.method, r.status) for r in recs] == [("gRPC", "POST", 200)] * 2
    assert (recs[0].path, recs[0].host) == ("/demo.Greeter/SayHello", authority)
    assert recs[1].path is None and all(r.latency_ns > 0 for r in recs)


def test_dns_over_ipv6(lab):
    hosts = lab.two_hosts(v4=False)
    server = str(hosts.server_ip6)
    start_dnsmasq(hosts, server, ("--host-record=v6.example.test,fd00::99",),
                  ("v6.example.test", "AAAA"), b"fd00::99")
    with hosts.client.enter():
        mon = L7Monitor(["eth0"])
    with mon:
        out = hosts.client.check_output(["dig", "@" + server, "+time=2", "+tries=1",
                                         "v6.example.test", "AAAA"], timeout=10)
        (r,) = collect(mon, lambda rs: len(rs) >= 1)
    assert (r.qname, r.qtype, r.rcode, r.answers) == \
        ("v6.example.test", "AAAA", *dig_result(out))
    assert (r.client, r.server, r.server_port) == (hosts.client_ip6, hosts.server_ip6, 53)
    assert r.answers == ("fd00::99",) and r.latency_ns > 0


def test_l7_and_flows_command_lines_name_workloads(hosts, tmp_path):
    """``pybpfnet l7 --json --names`` and ``pybpfnet flows --json --names``
    print records with the names of the file."""
    import io
    import json

    from pybpfnet.cli import build_parser

    start_dnsmasq(hosts)
    names = tmp_path / "names.txt"
    names.write_text("%s dns\n10.0.0.0/24 lab\n" % hosts.server_ip)
    outs = {}

    def run(cmd):
        args = build_parser().parse_args([cmd, "eth0", "--json", "--seconds", "1.5",
                                          "--names", str(names)])
        buf = io.StringIO()
        with hosts.client.enter():
            assert args.func(args, out=buf) == 0
        outs[cmd] = [json.loads(line) for line in buf.getvalue().splitlines()]

    for cmd in ("l7", "flows"):
        done = []

        def command():
            try:
                run(cmd)
            finally:
                done.append(True)

        def queries():                  # query until the command ends: some are seen
            while not done:
                dig(hosts, "www.example.test", "A")
                time.sleep(0.1)

        run_beside(queries, command)
    dns = [d for d in outs["l7"] if d["type"] == "dns"]
    assert dns
    for d in dns:
        assert (d["qname"], d["rcode"], d["answers"], d["client_name"], d["server_name"]) == \
            ("www.example.test", "NOERROR", ["10.9.8.7"], "lab", "dns")
    flows = [d for d in outs["flows"] if d.get("dport") == 53 and d.get("protocol") == "UDP"]
    assert flows and all((d["src_name"], d["dst_name"]) == ("lab", "dns") for d in flows)
