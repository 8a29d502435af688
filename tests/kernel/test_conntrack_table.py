"""Conntrack tables through the Python API, driven with BPF_PROG_TEST_RUN:
timeouts and sweeps, deletes, events, LRU evictions, the flood policy, and
the NAT part of pybn_conntrack.h."""

import asyncio
import pathlib
import time

import pytest

from pybpfnet.dataplanes.conntrack import (Conntrack, CtState, EventType, Reason, Table,
                                           Timeouts)
from pybpfnet.packet import Template, icmp_echo, tcp_packet, udp_packet
from pybpfnet.testing import compile_bpf

ROOT = pathlib.Path(__file__).resolve().parents[2]
C, S = "10.0.0.1", "10.0.0.2"


def run(ct, frame):
    return ct.program.test_run(bytes(frame))


def handshake(ct, c=C, s=S, cport=40000, sport=80):
    run(ct, tcp_packet(c, s, cport, sport, flags="S", seq=100))
    run(ct, tcp_packet(s, c, sport, cport, flags="SA", seq=900, ack=101))
    run(ct, tcp_packet(c, s, cport, sport, flags="A", seq=101, ack=901))


def test_entries_lookup_and_filters():
    with Conntrack() as ct:
        handshake(ct)
        run(ct, udp_packet("fd00::1", "fd00::2", 5000, 53, b"q"))
        run(ct, icmp_echo(C, S, 77))
        conns = {c.protocol_name: c for c in ct.entries()}
        tcp = conns["tcp"]
        assert tcp.state == CtState.ESTABLISHED and tcp.assured and tcp.table == Table.ESTABLISHED
        assert (str(tcp.src), tcp.sport, str(tcp.reply_src), tcp.reply_sport) == (
            C, 40000, S, 80)
        assert (tcp.packets, tcp.reply_packets, tcp.bytes) == (2, 1, 80)
        assert 0 <= tcp.age < 5 and 6 * 3600 - 5 < tcp.timeout <= 6 * 3600
        assert conns["udp"].state == CtState.UNREPLIED and conns["udp"].family == 6
        assert conns["icmp"].sport == 77 and conns["icmp"].table == Table.EMBRYONIC
        assert [c.protocol for c in ct.entries(protocol="udp")] == [17]
        assert [c.protocol for c in ct.entries(address="10.0.0.0/8", state="established")] == [6]
        assert list(ct.entries(table="embryonic", family=4))[0].protocol == 1
        assert len(ct) == 3
        found = ct.lookup(S, C, "tcp", 80, 40000)       # either direction
        assert found is not None and found.key == tcp.key
        assert ct.lookup(C, S, "icmp", 77).protocol == 1
        assert ct.lookup(C, S, "tcp", 1, 2) is None


def test_sweep_deletes_only_what_expired():
    t = Timeouts(udp=0.3, icmp=30)
    with Conntrack(timeouts=t) as ct:
        events = ct.events()
        run(ct, udp_packet(C, S, 1, 53))
        run(ct, udp_packet(C, S, 2, 53))
        run(ct, icmp_echo(C, S, 5))
        events.poll(0)
        time.sleep(0.15)
        run(ct, udp_packet(C, S, 2, 53))                # refreshed: stays
        time.sleep(0.2)
        res = ct.sweep()
        assert (res.scanned, res.expired, res.deleted) == (3, 1, 1)
        assert sorted(c.sport for c in ct.entries()) == [2, 5]
        gone = [e for e in events.poll(0) if e.type == EventType.DESTROY]
        assert [(e.connection.sport, e.reason) for e in gone] == [(1, Reason.TIMEOUT)]
        # as of a later time, everything has expired
        res = ct.sweep(now=time.monotonic() + 60)
        assert res.deleted == 2 and len(ct) == 0
        assert ct.stats().reaped == 3


def test_the_reaper_checks_again():
    """A key read as expired but refreshed before the delete is kept."""
    with Conntrack(timeouts=Timeouts(udp=0.2)) as ct:
        run(ct, udp_packet(C, S, 1, 53))
        key = next(ct.entries()).key
        n = ct._reap_keys({Table.EMBRYONIC: [key]}, Reason.TIMEOUT, False,
                          ct.clock.now())
        assert n == 0 and len(ct) == 1


def test_expired_entry_is_replaced_by_a_packet():
    with Conntrack(timeouts=Timeouts(udp=0.2)) as ct:
        events = ct.events()
        run(ct, udp_packet(C, S, 1, 53))
        time.sleep(0.3)
        run(ct, udp_packet(C, S, 1, 53))
        kinds = [(e.type, e.reason) for e in events.poll(0)]
        assert kinds == [(EventType.NEW, Reason.NONE), (EventType.DESTROY, Reason.EXPIRED),
                         (EventType.NEW, Reason.NONE)]
        assert next(ct.entries()).packets == 1 and ct.stats().expired == 1


def test_delete_and_flush():
    with Conntrack() as ct:
        handshake(ct)
        for port in range(10):
            run(ct, udp_packet(C, S, 1000 + port, 53))
        events = ct.events()
        events.poll(0)
        with pytest.raises(ValueError):
            ct.delete()
        assert ct.delete(protocol="tcp") == 1
        assert ct.delete(*[c for c in ct.entries() if c.sport < 1003]) == 3
        assert ct.flush() == 7 and len(ct) == 0
        reasons = [e.reason for e in events.poll(0)]
        assert reasons == [Reason.DELETE] * 4 + [Reason.FLUSH] * 7
        s = ct.stats()
        assert s.reaped == 11 and s.evicted_embryonic == s.evicted_established == 0


def test_events_async():
    async def collect(stream, n):
        out = []
        async for e in stream:
            out.append(e)
            if len(out) == n:
                return out

    with Conntrack() as ct:
        stream = ct.events()
        handshake(ct)
        got = asyncio.run(asyncio.wait_for(collect(stream, 3), 5))
        assert [(e.type, e.connection.state) for e in got] == [
            (EventType.NEW, CtState.SYN_SENT), (EventType.UPDATE, CtState.SYN_RECV),
            (EventType.UPDATE, CtState.ESTABLISHED)]
        assert got[2].old_state == CtState.SYN_RECV and got[2].connection.assured
        assert "[UPDATE]" in got[2].format()


def test_full_table_evicts_and_counts():
    with Conntrack(embryonic_entries=256, max_entries=256, events=False) as ct:
        tmpl = Template(udp_packet(C, S, 1, 53), "UDP.sport")
        prog = ct.program
        for port in range(1, 2001):
            prog.test_run(tmpl.build(port))
        s = ct.stats()
        assert s.created == 2000 and s.embryonic <= 256
        assert s.evicted_embryonic == 2000 - s.embryonic
        assert s.evicted_established == 0
        # mostly the newest flows are kept (the kernel's LRU is approximate:
        # each CPU keeps a few free and pending nodes of its own)
        ports = sorted(c.sport for c in ct.entries())
        assert ports[-1] == 2000
        assert sum(p > 1000 for p in ports) >= len(ports) // 2


def test_syn_flood_leaves_established_connections_alone():
    """Established connections live in their own table: a flood of SYNs
    from distinct sources evicts only embryonic entries."""
    with Conntrack(max_entries=128, embryonic_entries=512, events=False) as ct:
        for i in range(64):
            handshake(ct, cport=10000 + i)
        tmpl = Template(tcp_packet(C, S, 1, 80, flags="S", seq=1), "IPv4.src", "TCP.sport")
        prog = ct.program
        for i in range(30000):
            prog.test_run(tmpl.build(0x0B000000 + i, 1024 + i % 50000))
        s = ct.stats()
        assert s.established == 64 and s.evicted_established == 0
        assert s.evicted_embryonic == 30000 - s.embryonic > 0
        assert len(list(ct.entries(state="established", sport=None))) == 64
        # the established connections still work
        r = prog.test_run(bytes(tcp_packet(C, S, 10005, 80, flags="PA", seq=101, ack=901,
                                           payload=b"x")))
        assert r.verdict.name == "UNSPEC"
        c = next(ct.entries(sport=10005))
        assert c.packets == 3


NAT_TEST = r'''
#define PYBN_CT_NAT
#include <linux/pkt_cls.h>
#include "pybn_conntrack.h"

struct ct_tuple backend_reply;   /* the reply tuple of the next new flow */
__u32 use_nat, last_verdict, last_dir, last_nat;
struct ct_tuple last_target;

SEC("tc")
int nat_test(struct __sk_buff *skb)
{
	struct ct_pkt p;
	struct ct_ref ref;
	struct ct_result r;
	struct ct_tuple out;

	ct_parse_skb(skb, &p);
	ct_lookup(&p, &ref);
	ct_update(&p, &ref, (!ref.e && use_nat) ? &backend_reply : NULL, &r);
	last_verdict = r.verdict;
	last_dir = r.dir;
	last_nat = 0;
	if (r.entry && ct_nat_target(r.entry, r.dir, &out)) {
		last_target = out;
		last_nat = 1;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
'''


@pytest.fixture
def nat_object(tmp_path, bpf_object):
    src = tmp_path / "ct_nat_test.bpf.c"
    src.write_text(NAT_TEST)
    return bpf_object(compile_bpf(src, include_dirs=[ROOT / "csrc/bpf/include"]))


def test_nat_reply_tuple_alias_and_translation(nat_object):
    """A load balancer's view: client 10.0.0.1 -> VIP 10.9.9.9:80 is sent to
    backend 10.1.0.5:8080; the backend's replies find the connection through
    its NAT alias and translate back to the VIP."""
    obj = nat_object
    prog = obj.programs["nat_test"]
    g = obj.globals
    ip = lambda s: bytes(map(int, s.split("."))) + bytes(12)   # noqa: E731
    g["backend_reply"] = {"src": ip("10.1.0.5"), "dst": ip(C), "sport": 8080,
                          "dport": 40000, "proto": 6, "family": 4}
    g["use_nat"] = 1
    prog.test_run(bytes(tcp_packet(C, "10.9.9.9", 40000, 80, flags="S", seq=1)))
    assert (g["last_verdict"], g["last_dir"], g["last_nat"]) == (1, 0, 1)
    t = g["last_target"]
    assert (bytes(t.dst[:4]), t.dport, bytes(t.src[:4]), t.sport) == (
        bytes([10, 1, 0, 5]), 8080, bytes([10, 0, 0, 1]), 40000)
    g["use_nat"] = 0
    prog.test_run(bytes(tcp_packet("10.1.0.5", C, 8080, 40000, flags="SA", seq=7, ack=2)))
    assert (g["last_verdict"], g["last_dir"], g["last_nat"]) == (2, 1, 1)
    t = g["last_target"]                  # the reply leaves as the VIP
    assert (bytes(t.src[:4]), t.sport, bytes(t.dst[:4]), t.dport) == (
        bytes([10, 9, 9, 9]), 80, bytes([10, 0, 0, 1]), 40000)
    prog.test_run(bytes(tcp_packet(C, "10.9.9.9", 40000, 80, flags="A", seq=2, ack=8)))
    assert g["last_verdict"] == 2
    ct = Conntrack.from_object(obj)
    (conn,) = ct.entries()
    assert conn.state == CtState.ESTABLISHED and conn.nat and conn.table == Table.ESTABLISHED
    assert (str(conn.dst), str(conn.reply_src), conn.reply_sport) == ("10.9.9.9", "10.1.0.5",
                                                                      8080)
    assert len(obj.maps["ct_alias"]) == 1
    assert ct.flush() == 1 and len(obj.maps["ct_alias"]) == 0
    ct.close()
    assert not obj.closed                 # from_object: the object stays the caller's
