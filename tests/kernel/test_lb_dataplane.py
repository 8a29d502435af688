"""LbDataplane's API: argument checking with nothing half-written, atomic
table swaps under concurrent packets, service epochs, flow purges."""

import ipaddress
import threading

import pytest

from pybpfnet import packet as pk
from pybpfnet._program import XdpAction
from pybpfnet.dataplanes import _lb_fixtures as F
from pybpfnet.dataplanes._lb_abi import DropReason
from pybpfnet.dataplanes._lb_dataplane import (LbDataplane, ServiceKey, UnknownBackendError,
                                               UnknownServiceError, is_prime)

KEY = (F.VIP, 80, "tcp")


@pytest.fixture
def dp():
    with LbDataplane(max_services=8, max_backends=8, max_flows=4096) as d:
        d.set_config(src4=F.SRC4, src6=F.SRC6)
        for bid in (0, 1):
            addr, mac, _ = F.BACKENDS[bid]
            d.put_backend(bid, addr, mac=mac)
        d.put_service(KEY, mode="l2")
        d.install_table(KEY, [0] * 7)
        yield d


def _to(out):
    return {pk.mac_bytes(F.BACKENDS[b][1]): b for b in (0, 1)}.get(out[:6])


def _syn(sport=40000):
    return bytes(pk.tcp_packet(F.CLIENT, F.VIP, sport, 80))


def test_bad_tables_are_refused_and_nothing_changes(dp):
    for bad, what in (([0] * 8, "prime"), ([0] * 6 + [5], "do not exist"), ([0], "prime"),
                      ("abc", "ints"), ([0, 1, None, 0, 1, 0, 0], "ints")):
        with pytest.raises(ValueError, match=what):
            dp.install_table(KEY, bad)
    assert dp.table(KEY) == [0] * 7
    assert _to(dp.run(_syn())[1]) == 0
    with pytest.raises(UnknownServiceError):
        dp.install_table((F.VIP, 81, "tcp"), [0] * 7)
    assert is_prime(65537) and not is_prime(65535)


def test_bad_arguments(dp):
    with pytest.raises(ValueError, match="mode"):
        dp.put_service(KEY, mode="dsr")
    with pytest.raises(ValueError, match="protocol"):
        dp.put_service((F.VIP, 80, "sctp"), mode="l2")
    with pytest.raises(ValueError, match="port"):
        dp.put_service((F.VIP, 0, "tcp"), mode="l2")
    with pytest.raises(ValueError, match="address"):
        dp.put_service(("not-an-ip", 80, "tcp"), mode="l2")
    with pytest.raises(ValueError, match="backend id"):
        dp.put_backend(8, "10.0.0.1", mac="02:00:00:00:00:09")
    with pytest.raises(ValueError, match="mac"):
        dp.put_backend(2, "10.0.0.1", mac="nope")
    with pytest.raises(ValueError, match="mtu"):
        dp.set_config(mtu=10)
    with pytest.raises(ValueError, match="src4"):
        dp.set_config(src4="fd00::1")
    with pytest.raises(ValueError, match="in the table"):
        dp.delete_backend(0)
    with pytest.raises(UnknownBackendError):
        dp.delete_backend(5)
    with pytest.raises(KeyError):
        dp.delete_service((F.VIP, 99, "udp"))
    assert set(dp.services()) == {ServiceKey(*KEY)}
    assert dp.config.src4 is not None


def test_table_swaps_are_atomic_under_traffic(dp):
    """Two full tables swapped back and forth while packets of new flows
    run: each one reaches backend 0 or 1, none sees an empty slot."""
    stop = threading.Event()

    def swapper():
        i = 0
        while not stop.is_set():
            dp.install_table(KEY, [i % 2] * 65537)
            i += 1

    t = threading.Thread(target=swapper)
    t.start()
    try:
        seen = set()
        for sport in range(1024, 3024):
            verdict, out = dp.run(_syn(sport))
            assert verdict == XdpAction.TX
            seen.add(_to(out))
    finally:
        stop.set()
        t.join()
    assert seen <= {0, 1} and dp.stats().drops[DropReason.NO_BACKEND] == 0
    assert dp.stats().table_swaps >= 1


def _ack(sport=40000):
    return bytes(pk.tcp_packet(F.CLIENT, F.VIP, sport, 80, flags="A", seq=1, ack=1))


def test_flows_drain_then_move(dp):
    syn, ack = _syn(), _ack()
    assert _to(dp.run(syn)[1]) == 0
    dp.install_table(KEY, [1] * 7)
    assert _to(dp.run(ack)[1]) == 0                      # established: drains on 0
    dp.put_service(KEY, mode="l2")                       # unchanged: still the same epoch
    assert _to(dp.run(ack)[1]) == 0
    dp.put_service(KEY, mode="ipip")                     # a new epoch: re-hashed
    out = dp.run(ack)[1]
    assert out[:6] == pk.mac_bytes(F.BACKENDS[1][1]) and len(out) == len(ack) + 20
    dp.put_service(KEY, mode="l2")
    assert _to(dp.run(ack)[1]) == 1
    assert dp.purge_backend(1) == 1 and dp.flows() == []
    dp.delete_backend(0)
    assert dp.stats().new_flows == 3 and dp.stats().syn_rehash == 0


def test_a_syn_on_an_existing_flow_is_a_new_connection(dp):
    """A SYN without ACK that finds a flow entry (a client reusing its
    port) goes through the current table; other packets keep the entry."""
    syn, ack = _syn(), _ack()
    assert _to(dp.run(syn)[1]) == 0
    dp.install_table(KEY, [1] * 7)                       # backend 0 drained
    assert _to(dp.run(ack)[1]) == 0
    synack = bytes(pk.tcp_packet(F.CLIENT, F.VIP, 40000, 80, flags="SA"))
    assert _to(dp.run(synack)[1]) == 0                   # SYN+ACK: not a new connection
    assert _to(dp.run(syn)[1]) == 1                      # the reused tuple: backend 1
    assert _to(dp.run(ack)[1]) == 1
    assert _to(dp.run(syn)[1]) == 1                      # retransmitted: same table, same pick
    s = dp.stats()
    assert (s.syn_rehash, s.new_flows) == (2, 3)
    assert [f.backend_id for f in dp.flows()] == [1]


def test_syn_rehash_replaces_the_nat_reply_entry():
    key = (F.VIP, 82, "tcp")
    with LbDataplane(max_services=4, max_backends=8, max_flows=256) as dp:
        for bid in (0, 1):
            addr, mac, _ = F.BACKENDS[bid]
            dp.put_backend(bid, addr, mac=mac)
        dp.put_service(key, mode="nat")
        dp.install_table(key, [0] * 7)
        syn = bytes(pk.tcp_packet(F.CLIENT, F.VIP, 40000, 82))
        dp.run(syn)
        dp.install_table(key, [1] * 7)
        verdict, out = dp.run(syn)
        assert verdict == XdpAction.TX and str(pk.parse(out).layers[1].dst) == F.BACKENDS[1][0]
        old = bytes(pk.tcp_packet(F.BACKENDS[0][0], F.CLIENT, 82, 40000, flags="SA"))
        new = bytes(pk.tcp_packet(F.BACKENDS[1][0], F.CLIENT, 82, 40000, flags="SA"))
        assert dp.run(old) == (XdpAction.PASS, old)       # the old reply entry went
        assert dp.run(new)[0] == XdpAction.TX
        assert sum(1 for _ in dp.object.maps["lb_flows"].keys()) == 2


def test_tracked_nat_lists_connections_and_sweeps():
    """nat_tracking="conntrack": NAT connections are the tracker's, with
    their TCP state, listed through dp.conntrack; flows() and
    purge_backend() see them."""
    key = (F.VIP, 82, "tcp")
    with LbDataplane(max_services=4, max_backends=8, max_flows=256,
                     nat_tracking="conntrack") as dp:
        for bid in (0, 1):
            addr, mac, _ = F.BACKENDS[bid]
            dp.put_backend(bid, addr, mac=mac)
        dp.put_service(key, mode="nat")
        dp.install_table(key, [0] * 7)
        dp.run(bytes(pk.tcp_packet(F.CLIENT, F.VIP, 40000, 82, seq=10)))
        dp.run(bytes(pk.tcp_packet(F.BACKENDS[0][0], F.CLIENT, 82, 40000, flags="SA",
                                   seq=50, ack=11)))
        conns = list(dp.conntrack.entries())
        assert len(conns) == 1
        c = conns[0]
        assert (c.state.name, str(c.reply_src), c.nat) == ("SYN_RECV", F.BACKENDS[0][0], True)
        assert [(f.client_port, f.backend_id) for f in dp.flows()] == [(40000, 0)]
        assert dp.conntrack.sweep().deleted == 0           # nothing expired
        assert dp.purge_backend(0) == 1
        assert list(dp.conntrack.entries()) == [] and dp.flows() == []
        with pytest.raises(ValueError, match="LRU"):
            with LbDataplane(max_services=2, max_backends=2, max_flows=16) as lru:
                lru.conntrack
        with pytest.raises(ValueError, match="nat_tracking"):
            LbDataplane(nat_tracking="nf")


def test_delete_service_passes_its_traffic_and_frees_the_id(dp):
    sid = dp.service_id(KEY)
    dp.run(_syn())
    dp.delete_service(KEY)
    assert dp.run(_syn()) == (XdpAction.PASS, _syn())
    # the VIP address is no longer a VIP: fragments to it pass
    frag = bytes(pk.fragment(pk.udp_packet(F.CLIENT, F.VIP, 1, 80, b"q" * 64), [24, 48])[1])
    assert dp.run(frag)[0] == XdpAction.PASS
    assert dp.put_service((F.VIP, 443, "tcp"), mode="nat") == sid
    assert dp.service_counters((F.VIP, 443, "tcp")).packets == 0


def test_close_is_idempotent():
    d = LbDataplane(max_services=2, max_backends=2, max_flows=16)
    d.close()
    d.close()
    assert "closed" in repr(d)


def test_pin_and_open_pinned_share_the_tables(dp):
    import os
    import shutil
    path = "/sys/fs/bpf/pbnlbdp-%d" % os.getpid()
    dp.put_service((F.VIP6, 53, "udp"), mode="gue", source_affinity=True)
    dp.put_backend(2, F.BACKENDS[2][0], mac=F.BACKENDS[2][1], port=5353)
    dp.install_table((F.VIP6, 53, "udp"), [2, -1, 2, 2, 2])
    dp.set_config(src4=F.SRC4, src6=F.SRC6, mtu=1400, hash_seed=7)
    syn = _syn()
    first = dp.run(syn)
    try:
        dp.pin(path)
        with LbDataplane.open_pinned(path) as again:
            assert again.services() == dp.services()
            assert again.backends() == dp.backends()
            assert again.table((F.VIP6, 53, "udp")) == [2, -1, 2, 2, 2]
            assert again.config == dp.config
            assert again.flows() == dp.flows()
            assert again.run(syn) == first
            again.install_table(KEY, [1] * 7)           # one set of maps
            assert _to(dp.run(_syn(1))[1]) == 1
    finally:
        shutil.rmtree(path, ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="missing"):
        LbDataplane.open_pinned(path)


def test_tracked_nat_survives_open_pinned():
    import os
    import shutil
    path = "/sys/fs/bpf/pbnlbct-%d" % os.getpid()
    key = (F.VIP, 82, "tcp")
    with LbDataplane(max_services=4, max_backends=8, max_flows=256,
                     nat_tracking="conntrack") as dp:
        dp.put_backend(0, F.BACKENDS[0][0], mac=F.BACKENDS[0][1])
        dp.put_service(key, mode="nat")
        dp.install_table(key, [0] * 7)
        dp.run(bytes(pk.tcp_packet(F.CLIENT, F.VIP, 40000, 82)))
        reply = bytes(pk.tcp_packet(F.BACKENDS[0][0], F.CLIENT, 82, 40000, flags="SA",
                                    ack=1, src_mac=F.BACKENDS[0][1]))
        try:
            dp.pin(path)
            with LbDataplane.open_pinned(path) as again:
                assert again.nat_tracking == "conntrack" and again.program.name == "lb_xdp_ct"
                assert again.flows() == dp.flows()
                verdict, out = again.run(reply)          # the connection is shared
                assert verdict == XdpAction.TX and str(pk.parse(out).layers[1].src) == F.VIP
                assert [c.state.name for c in dp.conntrack.entries()] == ["SYN_RECV"]
        finally:
            shutil.rmtree(path, ignore_errors=True)


def test_backend_addresses_are_counted_for_reply_lookups(dp):
    m = dp.object.maps["lb_be_addrs"]

    def count(addr):
        return m.get(dict(addr=ipaddress.ip_address(addr).packed + bytes(12), family=4,
                          pad=bytes(3)), 0)

    a = F.BACKENDS[0][0]
    assert count(a) == 1
    dp.put_backend(5, a, mac=F.BACKENDS[0][1], port=8080)    # a second port, same host
    assert count(a) == 2
    dp.put_backend(5, "10.0.0.99", mac=F.BACKENDS[0][1])     # moved
    assert count(a) == 1 and count("10.0.0.99") == 1
    dp.delete_backend(5)
    assert count("10.0.0.99") == 0 and count(a) == 1
