"""The connection tracker's Python reference model: parsing rules, the TCP
state machine and window checks, UDP/ICMP, and the user-space records (no
privileges needed)."""

import ipaddress

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from pybpfnet.dataplanes import _ct_abi as abi
from pybpfnet.dataplanes import _ct_model as M
from pybpfnet.dataplanes._ct_abi import CtState, CtStatus, EventType, Reason, Table, Verdict
from pybpfnet.dataplanes.conntrack import (ConntrackOptions, Timeouts, _Filter, Connection)
from pybpfnet.packet import (IPv4, IPv6Fragment, MSS, SackPermitted, TCP, UDP, WindowScale,
                             fragment, icmp_echo, tcp_packet, udp_packet, with_vlan,
                             with_ipv4_options, with_ipv6_extensions)

C4, S4 = "10.0.0.1", "10.0.0.2"


def tcp(src, dst, sport, dport, flags, seq=0, ack=0, **kw):
    return bytes(tcp_packet(src, dst, sport, dport, flags=flags, seq=seq & 0xFFFFFFFF,
                            ack=ack & 0xFFFFFFFF, **kw))


class Conn:
    """A client and a server playing TCP through a model."""

    def __init__(self, model, c=C4, s=S4, cport=40000, sport=80, cisn=1000, sisn=5000):
        self.m = model
        self.c, self.s, self.cport, self.sport = c, s, cport, sport
        self.cseq, self.sseq = cisn, sisn

    def client(self, flags, data=b"", seq=None, ack=None, **kw):
        f = tcp(self.c, self.s, self.cport, self.sport, flags,
                self.cseq if seq is None else seq, self.sseq if ack is None else ack,
                payload=data, **kw)
        if seq is None and "R" not in flags:
            self.cseq += len(data) + ("S" in flags) + ("F" in flags)
        return self.m.process(f)

    def server(self, flags, data=b"", seq=None, ack=None, **kw):
        f = tcp(self.s, self.c, self.sport, self.cport, flags,
                self.sseq if seq is None else seq, self.cseq if ack is None else ack,
                payload=data, **kw)
        if seq is None and "R" not in flags:
            self.sseq += len(data) + ("S" in flags) + ("F" in flags)
        return self.m.process(f)

    def entry(self):
        key = M.key_of((ipaddress.ip_address(self.c).packed.ljust(16, b"\0"),
                        ipaddress.ip_address(self.s).packed.ljust(16, b"\0"),
                        self.cport, self.sport, 6, 4), 0)
        return self.m.lookup(key)

    def handshake(self):
        self.client("S")
        self.server("SA")
        return self.client("A")


# -- parsing ------------------------------------------------------------------
def test_parse_tcp_reads_tuple_lengths_and_syn_options():
    f = tcp(C4, S4, 1234, 80, "S", seq=7, payload=b"abc",
            options=[MSS(1460), SackPermitted(), WindowScale(7)])
    p = M.parse(f)
    assert p.status == M.OK and (p.sport, p.dport, p.proto, p.family) == (1234, 80, 6, 4)
    assert p.src[:4] == bytes([10, 0, 0, 1]) and p.src[4:] == bytes(12)
    assert p.length == len(f) - 14 and p.payload == 3
    assert (p.wscale, p.sack_perm, p.has_opts) == (7, 1, 1)


def test_parse_options_only_on_syn_and_as_nf_conntrack_reads_them():
    assert M.parse(tcp(C4, S4, 1, 2, "A", options=[WindowScale(7)])).wscale == 0xFF
    assert M.tcp_options(bytes([1, 1, 3, 3, 9, 0])) == (9, 0)
    assert M.tcp_options(bytes([3, 3, 9, 1, 4, 2])) == (9, 1)
    assert M.tcp_options(bytes([3, 3, 9, 0, 4, 2])) == (9, 0)           # EOL ends the list
    assert M.tcp_options(bytes([0, 3, 3, 9])) == (0xFF, 0)           # EOL first
    assert M.tcp_options(bytes([8, 40, 3, 3, 9])) == (0xFF, 0)       # oversized option
    assert M.tcp_options(bytes([3, 2, 9, 0])) == (0xFF, 0)           # wrong size: skipped
    assert M.tcp_options(bytes([1] * 38 + [4, 2])) == (0xFF, 1)


@pytest.mark.parametrize("frame,status", [
    (bytes(udp_packet(C4, S4, 1, 53, b"q")), M.OK),
    (bytes(udp_packet(C4, S4, 1, 53, b"q"))[:40], M.INVALID),        # truncated UDP
    (bytes(udp_packet(C4, S4, 1, 53).evolve(UDP, length=4)), M.INVALID),
    (bytes(tcp_packet(C4, S4, 1, 2).evolve(TCP, data_offset=4)), M.INVALID),
    (bytes(tcp_packet(C4, S4, 1, 2))[:50], M.INVALID),
    (bytes(icmp_echo(C4, S4, 7)), M.OK),
    (bytes(icmp_echo("fd00::1", "fd00::2", 7, reply=True)), M.OK),
    (bytes(icmp_echo(C4, S4, 7))[:38], M.INVALID),
    (bytes(tcp_packet(C4, S4, 1, 2).evolve(IPv4, proto=47)), M.UNTRACKED),  # GRE
    (bytes(with_vlan(udp_packet(C4, S4, 1, 2), 10, 20)), M.OK),
    (bytes(with_vlan(udp_packet(C4, S4, 1, 2), 1, 2, 3)), M.UNTRACKED),  # three tags
    (bytes(with_ipv4_options(tcp_packet(C4, S4, 1, 2))), M.OK),
    (bytes(with_ipv6_extensions(tcp_packet("fd00::1", "fd00::2", 1, 2))), M.OK),
    (b"\x00" * 14, M.UNTRACKED),
])
def test_parse_status(frame, status):
    assert M.parse(frame).status == status


def test_parse_fragments_first_only():
    first, *rest = fragment(udp_packet(C4, S4, 1, 2, b"x" * 64), 32)
    assert M.parse(bytes(first)).status == M.OK
    assert all(M.parse(bytes(f)).status == M.UNTRACKED for f in rest)
    v6 = fragment(udp_packet("fd00::1", "fd00::2", 1, 2, b"x" * 64), 32)
    assert M.parse(bytes(v6[0])).status == M.OK and IPv6Fragment in v6[0]
    assert M.parse(bytes(v6[1])).status == M.UNTRACKED


def test_key_is_one_per_connection_whatever_the_direction():
    a = M.parse(tcp(S4, C4, 80, 40000, "A"))
    b = M.parse(tcp(C4, S4, 40000, 80, "A"))
    assert M.key_of(a.tuple, 0) == M.key_of(b.tuple, 0)
    req = M.parse(bytes(icmp_echo(C4, S4, 9)))
    rep = M.parse(bytes(icmp_echo(S4, C4, 9, reply=True)))
    assert M.key_of(req.tuple, req.icmp_request) == M.key_of(rep.tuple, rep.icmp_request)
    # a request the other way is another connection
    back = M.parse(bytes(icmp_echo(S4, C4, 9)))
    assert M.key_of(back.tuple, 1) != M.key_of(req.tuple, 1)


# -- TCP ----------------------------------------------------------------------
def test_handshake_transfer_and_clean_close():
    m = M.CtModel()
    c = Conn(m)
    assert c.client("S").verdict == Verdict.NEW
    assert c.entry()[1].state == CtState.SYN_SENT
    assert c.server("SA").state == CtState.SYN_RECV
    r = c.client("A")
    assert r.state == CtState.ESTABLISHED and r.verdict == Verdict.ESTABLISHED
    table, e = c.entry()
    assert table == Table.ESTABLISHED and e.status & CtStatus.ASSURED
    c.client("PA", b"GET /")
    c.server("PA", b"200 OK")
    assert c.client("FA").state == CtState.FIN_WAIT
    assert c.server("A").state == CtState.CLOSE_WAIT
    assert c.server("FA").state == CtState.LAST_ACK
    assert c.client("A").state == CtState.TIME_WAIT
    e = c.entry()[1]
    assert e.packets == [5, 4] and e.tcp_flags[0] == 0x1B        # FIN SYN PSH ACK
    assert [ev.type for ev in m.events] == [EventType.NEW] + [EventType.UPDATE] * 6


def test_half_close_keeps_data_flowing():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    assert c.server("FA").state == CtState.FIN_WAIT
    assert c.client("A").state == CtState.CLOSE_WAIT
    assert c.client("PA", b"more").state == CtState.CLOSE_WAIT
    assert c.server("A").state == CtState.CLOSE_WAIT
    assert c.client("FA").state == CtState.LAST_ACK
    assert c.server("A").state == CtState.TIME_WAIT


def test_rst_before_any_reply_destroys_at_once():
    m = M.CtModel()
    c = Conn(m)
    c.client("S")
    r = c.server("RA", seq=0)
    assert r.destroyed and c.entry() == (None, None)
    assert m.events[-1].type == EventType.DESTROY and m.events[-1].reason == Reason.RESET
    assert m.stats["reset_before_reply"] == 1


def test_rst_in_established_closes():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    assert c.server("R").state == CtState.CLOSE
    assert c.entry()[1] is not None


def test_retransmitted_syn_is_not_counted():
    m = M.CtModel()
    c = Conn(m)
    c.client("S")
    r = c.client("S", seq=1000)
    assert r.ignored and c.entry()[1].packets == [1, 0]
    assert c.entry()[1].state == CtState.SYN_SENT


def test_simultaneous_open():
    m = M.CtModel()
    c = Conn(m)
    c.client("S")
    assert c.server("S").state == CtState.SYN_SENT2
    assert c.server("SA", seq=5000).state == CtState.SYN_RECV
    assert c.client("SA", seq=1000).state == CtState.SYN_RECV
    assert c.server("A").state == CtState.ESTABLISHED


def test_syn_on_closed_connection_reopens_it():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    c.client("FA"), c.server("FA"), c.client("A")
    assert c.entry()[1].state == CtState.TIME_WAIT
    c.cseq += 100000
    r = c.client("S")
    assert r.destroyed and r.verdict == Verdict.NEW and r.state == CtState.SYN_SENT
    reasons = [ev.reason for ev in m.events if ev.type == EventType.DESTROY]
    assert reasons == [Reason.REOPEN]
    assert c.entry()[0] == Table.EMBRYONIC


def test_syn_after_reset_from_the_other_side_is_only_let_through():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    c.server("R")
    r = c.client("S", seq=99999)
    assert r.ignored and c.entry()[1].state == CtState.CLOSE


def test_out_of_window_data_is_invalid_and_old_data_ignored():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    far = c.client("PA", b"x", seq=c.cseq + (1 << 30))
    assert far.verdict == Verdict.INVALID
    old = c.client("PA", b"x", seq=c.cseq - 200000)
    assert old.ignored
    ahead = c.client("A", ack=c.sseq + 100000)          # acks what was never sent
    assert ahead.verdict == Verdict.INVALID
    assert c.entry()[1].packets == [2, 1]


def test_window_scaling_needs_both_sides():
    m = M.CtModel()
    c = Conn(m)
    c.client("S", options=[WindowScale(7)])
    c.server("SA", options=[WindowScale(9)])
    e = c.entry()[1]
    assert (e.tcp[0].scale, e.tcp[1].scale) == (7, 9)
    m2 = M.CtModel()
    c2 = Conn(m2)
    c2.client("S", options=[WindowScale(7)])
    c2.server("SA")                                  # no option: no scaling at all
    e2 = c2.entry()[1]
    assert (e2.tcp[0].scale, e2.tcp[1].scale) == (0, 0)


def test_pickup_mid_stream_only_when_loose():
    m = M.CtModel()
    c = Conn(m)
    r = c.client("A", b"data")
    assert r.verdict == Verdict.NEW and r.state == CtState.ESTABLISHED
    e = c.entry()[1]
    assert e.tcp[0].flags & abi.TcpDirFlags.LIBERAL
    tight = M.CtModel(M.ModelConfig(tcp_loose=False))
    assert Conn(tight).client("A", b"data").verdict == Verdict.INVALID


def test_bad_flag_combinations_are_invalid():
    m = M.CtModel()
    c = Conn(m)
    c.handshake()
    for flags in ("SF", "F", "", "SR", "SAU"):
        assert c.client(flags, seq=c.cseq).verdict == Verdict.INVALID
    assert Conn(M.CtModel()).client("F").verdict == Verdict.INVALID


def test_timeouts_follow_the_state():
    m = M.CtModel()
    c = Conn(m)
    c.m.process(tcp(C4, S4, 40000, 80, "S", seq=1000), now=0)
    assert c.entry()[1].expires == 120 * 10**9
    c.cseq = 1001
    c.server("SA")
    c.client("A")
    assert c.entry()[1].expires == 6 * 3600 * 10**9
    c.client("PA", b"unacked")                          # data in flight: 300 s cap
    assert c.entry()[1].expires == 300 * 10**9


def test_expired_entry_is_replaced_by_the_next_packet():
    m = M.CtModel(M.ModelConfig(timeout_ms=(1000,) * 13))
    m.process(bytes(udp_packet(C4, S4, 1, 2)), now=0)
    r = m.process(bytes(udp_packet(C4, S4, 1, 2)), now=2 * 10**9)
    assert r.verdict == Verdict.NEW and m.stats["expired"] == 1
    assert [ev.reason for ev in m.events if ev.type == EventType.DESTROY] == [Reason.EXPIRED]


# -- UDP, ICMP ----------------------------------------------------------------
def test_udp_unreplied_replied_assured_with_promotion():
    m = M.CtModel()
    q = bytes(udp_packet(C4, S4, 5000, 53, b"q"))
    a = bytes(udp_packet(S4, C4, 53, 5000, b"a"))
    assert m.process(q, now=0).state == CtState.UNREPLIED
    assert m.process(a, now=10**8).state == CtState.REPLIED
    r = m.process(q, now=10**9)                          # within 2 s: not yet a stream
    assert r.state == CtState.REPLIED and r.table == Table.ESTABLISHED
    assert m.process(a, now=3 * 10**9).state == CtState.ASSURED


def test_icmp_echo_and_replies_to_nothing():
    m = M.CtModel()
    assert m.process(bytes(icmp_echo(S4, C4, 3, reply=True))).verdict == Verdict.INVALID
    assert m.process(bytes(icmp_echo(C4, S4, 3))).state == CtState.UNREPLIED
    assert m.process(bytes(icmp_echo(S4, C4, 3, reply=True))).state == CtState.REPLIED
    v6 = m.process(bytes(icmp_echo("fd00::1", "fd00::2", 3)))
    assert v6.verdict == Verdict.NEW


@settings(max_examples=300, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=14, max_size=200))
def test_model_takes_any_bytes(frame):
    m = M.CtModel()
    r = m.process(frame)
    assert r.verdict in set(Verdict)
    assert sum(len(t) for t in m.tables) <= 1


# -- user-space pieces ----------------------------------------------------------
def test_timeouts_and_options():
    assert Timeouts().as_ms()[2] == 6 * 3600 * 1000
    assert Timeouts.nf_conntrack().established == 5 * 86400
    assert Timeouts.cilium().syn_sent == 60
    with pytest.raises(ValueError):
        Timeouts(close=0).as_ms()
    cfg = ConntrackOptions(events=["new", EventType.DESTROY], tcp_liberal=True).config()
    assert cfg["events"] == (1 << 1) | (1 << 3) and cfg["tcp_liberal"] == 1
    assert len(cfg["timeout_ms"]) == len(abi.TIMEOUT_SLOTS)


def _conn(proto=6, src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, state=CtState.ESTABLISHED):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return Connection(proto, a.version, a, b, sport, dport, b, a, dport, sport, state,
                      CtStatus.SEEN_REPLY | CtStatus.ASSURED, 3, 180, 2, 120, timeout=42.7,
                      table=Table.ESTABLISHED)


def test_connection_format_and_dict():
    c = _conn()
    line = c.format()
    assert line.startswith("tcp    6 42 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2")
    assert line.endswith("[ASSURED]") and "[UNREPLIED]" not in line
    d = c.to_dict()
    assert d["original"]["packets"] == 3 and d["state"] == "ESTABLISHED"
    assert d["table"] == "established"
    icmp = _conn(proto=1, sport=7, dport=7, state=CtState.REPLIED)
    assert "id=7" in icmp.format() and "REPLIED" not in icmp.format()
    assert c.original.reversed() == c.reply


def test_filters():
    c = _conn()
    assert _Filter(address="10.0.0.0/24")(c) and not _Filter(address="10.1.0.0/16")(c)
    assert _Filter(src="10.0.0.1", dport=2, protocol="tcp")(c)
    assert not _Filter(dst="10.0.0.1")(c)
    assert _Filter(state=["established", CtState.CLOSE])(c)
    assert not _Filter(state="time_wait")(c)
    assert _Filter(port=1)(c) and not _Filter(port=3)(c)
    assert not _Filter(family=6)(c) and not _Filter(address="fd00::1")(c)
    with pytest.raises(ValueError):
        _Filter(protocol="sctp-ish")
