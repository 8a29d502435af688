"""The BPF tracker against the kernel's nf_conntrack on real traffic: both
watch the server's interface in a lab (ours at TC ingress + egress,
nf_conntrack at its netfilter hooks) while real TCP connections, UDP
exchanges and pings run between the namespaces; tuples, states, flags,
packet and byte counters and remaining timeouts must agree at every step.

nf_conntrack only tracks a namespace where something asks for it: the lab
adds an nftables rule loading `ct state` (through pyroute2's nftables
netlink, no nft binary) and turns on accounting
(net.netfilter.nf_conntrack_acct). It is read with pyroute2's conntrack
netlink client. The deliberate differences are in docs/conntrack.md."""

import ipaddress
import socket
import threading
import time

import pytest

from pybpfnet.dataplanes.conntrack import Conntrack, Reason, EventType, Timeouts

TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
IPS_SEEN_REPLY, IPS_ASSURED = 0x2, 0x4


def enable_nf_conntrack(ns):
    """Make nf_conntrack track the namespace (a rule that loads ct state)."""
    from pyroute2.nftables.expressions import genex
    from pyroute2.nftables.main import NFTables

    def run():
        for family in (socket.AF_INET, socket.AF_INET6):     # NFPROTO_IPV4/IPV6
            with NFTables(nfgen_family=family) as nft:
                nft.table("add", name="pbnct")
                nft.chain("add", table="pbnct", name="pre", hook="prerouting",
                          type="filter", priority=-300)
                nft.rule("add", table="pbnct", chain="pre",
                         expressions=([genex("ct", {"dreg": 1, "key": 0})],))
    try:
        ns.run(run)
    except Exception as e:          # no nf_tables in this kernel
        pytest.skip("cannot enable nf_conntrack in the lab (nftables): %s" % e)
    ns.sysctl("net.netfilter.nf_conntrack_acct", 1)


def _nf_tuple(msg, name):
    t = msg.get_attr(name)
    ip, pr = t.get_attr("CTA_TUPLE_IP"), t.get_attr("CTA_TUPLE_PROTO")
    src = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
    dst = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    num = pr.get_attr("CTA_PROTO_NUM")
    if num in (1, 58):
        sport = dport = pr.get_attr("CTA_PROTO_ICMP_ID" if num == 1 else "CTA_PROTO_ICMPV6_ID")
    else:
        sport, dport = pr.get_attr("CTA_PROTO_SRC_PORT"), pr.get_attr("CTA_PROTO_DST_PORT")
    return (num, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), sport, dport)


def nf_entries(ns):
    """nf_conntrack's table of the namespace, normalized."""
    from pyroute2 import Conntrack as NfConntrack

    def dump():
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            with NfConntrack(nfgen_family=family) as nf:
                out.extend(nf.dump())
        return out

    rows = {}
    for m in ns.run(dump):
        status = m.get_attr("CTA_STATUS")
        info = m.get_attr("CTA_PROTOINFO")
        state = None
        if info is not None and info.get_attr("CTA_PROTOINFO_TCP") is not None:
            state = TCP_STATES[info.get_attr("CTA_PROTOINFO_TCP").get_attr(
                "CTA_PROTOINFO_TCP_STATE")]
        co, cr = m.get_attr("CTA_COUNTERS_ORIG"), m.get_attr("CTA_COUNTERS_REPLY")
        orig = _nf_tuple(m, "CTA_TUPLE_ORIG")
        rows[orig] = dict(
            reply=_nf_tuple(m, "CTA_TUPLE_REPLY"), state=state,
            seen_reply=bool(status & IPS_SEEN_REPLY), assured=bool(status & IPS_ASSURED),
            counters=(co.get_attr("CTA_COUNTERS_PACKETS"), co.get_attr("CTA_COUNTERS_BYTES"),
                      cr.get_attr("CTA_COUNTERS_PACKETS"), cr.get_attr("CTA_COUNTERS_BYTES")),
            timeout=m.get_attr("CTA_TIMEOUT"))
    return rows


def our_entries(ct):
    rows = {}
    for c in ct.entries():
        orig = (c.protocol, str(c.src), str(c.dst), c.sport, c.dport)
        rows[orig] = dict(
            reply=(c.protocol, str(c.reply_src), str(c.reply_dst), c.reply_sport,
                   c.reply_dport),
            state=c.state.name if c.protocol == 6 else None,
            seen_reply=c.seen_reply, assured=c.assured,
            counters=(c.packets, c.bytes, c.reply_packets, c.reply_bytes),
            timeout=int(c.timeout))
    return rows


def _close_enough(ours, theirs):
    if ours.keys() != theirs.keys():
        return False
    for k in ours:
        a, b = dict(ours[k]), dict(theirs[k])
        ta, tb = a.pop("timeout"), b.pop("timeout")
        if a != b or abs(ta - tb) > 2:
            return False
    return True


class Watch:
    """Both trackers on the server's eth0; compare() waits until the two
    tables agree (both follow the same packets, a few microseconds apart)."""

    def __init__(self, hosts, ct):
        self.hosts, self.ct = hosts, ct
        self.steps = []

    def compare(self, step, expect=None, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            ours, theirs = our_entries(self.ct), nf_entries(self.hosts.server)
            if _close_enough(ours, theirs):
                time.sleep(0.05)                     # and stays so
                ours2, theirs2 = our_entries(self.ct), nf_entries(self.hosts.server)
                if _close_enough(ours2, theirs2) and _close_enough(ours, ours2):
                    break
            if time.monotonic() > deadline:
                pytest.fail("step %r: the trackers disagree\n  ours:         %r\n"
                            "  nf_conntrack: %r" % (step, ours, theirs))
            time.sleep(0.02)
        self.steps.append((step, ours))
        if expect is not None:
            got = sorted(v["state"] or ("ASSURED" if v["assured"] else
                                        "REPLIED" if v["seen_reply"] else "UNREPLIED")
                         for v in ours.values())
            assert got == sorted(expect), "step %r: %r" % (step, got)
        return ours


@pytest.fixture
def watch(lab):
    hosts = lab.two_hosts()
    enable_nf_conntrack(hosts.server)
    # nf_conntrack's timeouts, so that remaining timeouts compare too
    with Conntrack(timeouts=Timeouts.nf_conntrack()) as ct:
        with hosts.server.enter():
            ct.attach("eth0")
        yield Watch(hosts, ct)


def _server(hosts, family, handler):
    addr = str(hosts.server_ip if family == socket.AF_INET else hosts.server_ip6)
    srv = hosts.server.create_server((addr, 0), family=family)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            handler(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t, addr, port


def _recv_exactly(sock, n):
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_tcp_open_transfer_half_close_and_close(watch, family):
    hosts = watch.hosts
    step = threading.Event()
    go = [threading.Event() for _ in range(3)]

    def handler(conn):
        assert _recv_exactly(conn, 100_000) == 100_000
        conn.sendall(b"s" * 50_000)
        go[0].wait(10)
        assert conn.recv(10) == b""               # the client's FIN
        step.set()
        go[1].wait(10)
        conn.sendall(b"after half-close")
        go[2].wait(10)

    srv, t, addr, port = _server(hosts, family, handler)
    with srv:
        cli = hosts.client.socket(family, socket.SOCK_STREAM)
        cli.connect((addr, port))
        watch.compare("open", ["ESTABLISHED"])
        cli.sendall(b"c" * 100_000)
        assert _recv_exactly(cli, 50_000) == 50_000
        rows = watch.compare("transfer", ["ESTABLISHED"])
        (row,) = rows.values()
        assert row["counters"][1] > 100_000 and row["counters"][3] > 50_000 and row["assured"]
        cli.shutdown(socket.SHUT_WR)
        go[0].set()
        step.wait(10)
        watch.compare("half-close", ["CLOSE_WAIT"])
        go[1].set()
        assert cli.recv(100) == b"after half-close"
        watch.compare("data after half-close", ["CLOSE_WAIT"])
        go[2].set()
        t.join(10)
        assert cli.recv(10) == b""
        cli.close()
        watch.compare("closed", ["TIME_WAIT"])


def test_tcp_reset_matches(watch):
    hosts = watch.hosts
    done = threading.Event()

    def handler(conn):
        conn.sendall(b"hello")
        done.wait(10)

    srv, t, addr, port = _server(hosts, socket.AF_INET, handler)
    with srv:
        cli = hosts.client.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli.connect((addr, port))
        assert cli.recv(5) == b"hello"
        watch.compare("open", ["ESTABLISHED"])
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        cli.close()                                  # linger 0: an RST
        watch.compare("reset", ["CLOSE"])
        done.set()
        t.join(10)


def test_refused_connection_leaves_nothing(watch):
    hosts = watch.hosts
    events = watch.ct.events()
    cli = hosts.client.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        cli.connect((str(hosts.server_ip), 9))
    cli.close()
    assert watch.compare("refused", []) == {}
    kinds = [(e.type, e.reason) for e in events.poll(1)]
    assert kinds[-1] == (EventType.DESTROY, Reason.RESET)


def test_udp_exchange_and_pings_match(watch):
    hosts = watch.hosts
    srv = hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((str(hosts.server_ip), 5353))
    cli = hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.sendto(b"query", (str(hosts.server_ip), 5353))
    data, peer = srv.recvfrom(100)
    watch.compare("udp request", ["UNREPLIED"])
    srv.sendto(b"answer" * 20, peer)
    cli.recv(1000)
    watch.compare("udp answer", ["REPLIED"])
    assert hosts.client.ping(hosts.server_ip, count=2) == 2
    assert hosts.client.ping(hosts.server_ip6, count=2) == 2
    watch.compare("pings", ["REPLIED", "REPLIED", "REPLIED"])
    # both call a UDP flow a stream after 2 s of two-way traffic
    time.sleep(2.1)
    cli.sendto(b"again", (str(hosts.server_ip), 5353))
    srv.recvfrom(100)
    rows = watch.compare("udp stream", ["ASSURED", "REPLIED", "REPLIED"])
    udp = [v for k, v in rows.items() if k[0] == 17][0]
    assert udp["counters"][:3:2] == (2, 1) and udp["timeout"] > 100
