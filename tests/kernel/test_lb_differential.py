"""The load balancer's XDP program against its Python reference model:
hypothesis draws sequences of frames (clients to VIPs in every mode, NAT
replies, ICMP errors about VIP flows, hostile and malformed frames) mixed
with Maglev table swaps and backend removals; BPF_PROG_TEST_RUN and the
model must agree on every verdict and every output byte, and at the end on
the flows and the counters. Twice: NAT through the LRU flow table, and
through the connection tracker (nat_tracking="conntrack": then also on
every connection's table, state, status and reply tuple)."""

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpfnet import packet as pk
from pybpfnet.dataplanes import _lb_fixtures as F
from pybpfnet.dataplanes._lb_abi import FLOW_FWD, DropReason
from pybpfnet.dataplanes._lb_dataplane import LbDataplane
from pybpfnet.dataplanes._lb_model import flow_hash
from pybpfnet.dataplanes.conntrack import ConntrackOptions
from pybpfnet.testing import packets

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))

M = 13
BACKENDS = {
    0: ("10.0.0.10", "02:00:00:00:01:00", 0),
    1: ("10.0.0.11", "02:00:00:00:01:01", 8080),
    2: ("fd00::10", "02:00:00:00:01:02", 0),
    3: ("fd00::11", "02:00:00:00:01:03", 8443),
    4: ("10.0.0.12", "02:00:00:00:01:04", 0),
}
V4_BACKENDS = [0, 1, 4]
V6_BACKENDS = [2, 3]
# (vip, port, proto, mode, affinity, backend pool)
SERVICES = [
    (F.VIP, 80, "tcp", "ipip", False, [0, 1, 2]),
    (F.VIP, 80, "udp", "gue", False, [0, 2, 3]),
    (F.VIP, 81, "tcp", "l2", False, [0, 1, 4]),
    (F.VIP, 82, "tcp", "nat", False, V4_BACKENDS),
    (F.VIP, 82, "udp", "nat", False, V4_BACKENDS),
    (F.VIP, 83, "tcp", "ipip", True, [0, 4, 3]),
    (F.VIP6, 80, "tcp", "ipip", False, [2, 3, 0]),
    (F.VIP6, 80, "udp", "gue", False, [2, 0]),
    (F.VIP6, 81, "udp", "l2", False, [2, 3]),
    (F.VIP6, 82, "tcp", "nat", False, V6_BACKENDS),
    (F.VIP6, 83, "udp", "nat", True, V6_BACKENDS),
]
CLIENTS4 = ["203.0.113.5", "203.0.113.6", "198.51.100.77"]
CLIENTS6 = ["2001:db8:c::5", "2001:db8:c::6"]
VPORTS = [80, 81, 82, 83, 9999]
CPORTS = [40000, 40001, 5353]


@pytest.fixture(scope="module", params=["lru", "conntrack"])
def dp(request):
    # tracked NAT: UDP never turns into a stream on the kernel's clock (the
    # model's stays at 0), so that states compare exactly
    ct = ConntrackOptions(max_entries=1024, embryonic_entries=1024, udp_stream_after=3600.0) \
        if request.param == "conntrack" else None
    with LbDataplane(max_services=16, max_backends=16, max_flows=1024,
                     nat_tracking=request.param, ct_options=ct) as d:
        d.set_config(src4=F.SRC4, src6=F.SRC6, mtu=1500)
        yield d


def _reset(dp, tables):
    """The module's data plane in the example's initial state."""
    for key in list(dp.services()):
        dp.delete_service(key)
    for bid in list(dp.backends()):
        dp.delete_backend(bid)
    dp.flush_flows()
    for bid, (addr, mac, port) in BACKENDS.items():
        dp.put_backend(bid, addr, mac=mac, port=port)
    for (vip, port, proto, mode, aff, _), slots in zip(SERVICES, tables):
        dp.put_service((vip, port, proto), mode=mode, source_affinity=aff)
        dp.install_table((vip, port, proto), slots)


def _slots(pool):
    return st.lists(st.sampled_from(pool + [-1]), min_size=M, max_size=M) | \
        st.lists(st.sampled_from(pool), min_size=M, max_size=M)


@st.composite
def client_frames(draw):
    svc = draw(st.sampled_from(SERVICES + [None]))
    if svc is None:     # no service: another port, either family and protocol
        v6, proto, dport = draw(st.booleans()), draw(st.sampled_from(["tcp", "udp"])), 9999
        mode = "l2"
    else:
        vip, dport, proto, mode = svc[:4]
        v6 = ":" in vip
    client = draw(st.sampled_from(CLIENTS6 if v6 else CLIENTS4))
    vip = F.VIP6 if v6 else F.VIP
    sport = draw(st.sampled_from(CPORTS))
    # sizes at the encapsulation's MTU boundary (outer length 1499, 1500, 1501)
    hdr = (40 if v6 else 20) + (20 if proto == "tcp" else 8)
    outer = {"ipip": [20, 40], "gue": [28, 48]}.get(mode, [20])
    size = draw(st.sampled_from([0, 5, 40]) | st.builds(
        lambda o, d: 1500 - hdr - o + d, st.sampled_from(outer), st.sampled_from([-1, 0, 1])))
    payload = b"p" * size
    if proto == "tcp":
        frame = bytes(pk.tcp_packet(client, vip, sport, dport, flags=draw(
            st.sampled_from(["S", "A", "PA", "F", "FA", "R"])), payload=payload))
    else:
        frame = bytes(pk.udp_packet(client, vip, sport, dport, payload))
    frame = bytearray(frame)
    if not v6:
        frame[15] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            frame[20] |= 0x40
        frame[24:26] = b"\0\0"
        frame[24:26] = pk.checksum(bytes(frame[14:34])).to_bytes(2, "big")
        if proto == "udp" and draw(st.booleans()):
            frame[40:42] = b"\0\0"     # no UDP checksum
    return bytes(frame)


@st.composite
def reply_frames(draw):
    bid = draw(st.sampled_from(sorted(BACKENDS)))
    addr, mac, port = BACKENDS[bid]
    client = draw(st.sampled_from(CLIENTS6 if ":" in addr else CLIENTS4))
    sport = port or draw(st.sampled_from([80, 82, 83]))
    make = draw(st.sampled_from([pk.tcp_packet, pk.udp_packet]))
    if make is pk.tcp_packet:
        return bytes(make(addr, client, sport, draw(st.sampled_from(CPORTS)),
                          flags=draw(st.sampled_from(["SA", "A", "FA", "R"])), src_mac=mac))
    return bytes(make(addr, client, sport, draw(st.sampled_from(CPORTS)), b"reply",
                      src_mac=mac))


@st.composite
def icmp_errors(draw):
    v6 = draw(st.booleans())
    vip = F.VIP6 if v6 else F.VIP
    client = draw(st.sampled_from(CLIENTS6 if v6 else CLIENTS4))
    vport = draw(st.sampled_from(VPORTS))
    cport = draw(st.sampled_from(CPORTS))
    make = draw(st.sampled_from([pk.tcp_packet, pk.udp_packet]))
    quoted = bytes(make(vip, client, vport, cport))[14:14 + (48 if v6 else 28)]
    if v6:
        msg = pk.IPv6(src=F.ROUTER6, dst=vip, next_header=58) / pk.ICMPv6(type=2, seq=1280)
    else:
        msg = pk.IPv4(src=F.ROUTER, dst=vip, proto=1) / pk.ICMP(type=3, code=4, seq=1400)
    return bytes(pk.Ethernet(dst=F.LB_MAC, src=F.CLIENT_MAC) / msg / pk.Raw(quoted))


def _truncated(strategy):
    return st.tuples(strategy, st.integers(14, 200)).map(lambda t: t[0][:max(14, t[1])])


FRAMES = st.one_of(
    client_frames(), client_frames(), client_frames(), reply_frames(), icmp_errors(),
    _truncated(client_frames()),
    packets(v4=CLIENTS4 + [F.VIP] + [BACKENDS[b][0] for b in V4_BACKENDS],
            v6=CLIENTS6 + [F.VIP6] + [BACKENDS[b][0] for b in V6_BACKENDS],
            ports=[80, 81, 82, 83, 40000, 5353, 8080]),
)


@st.composite
def steps(draw):
    out = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["frame"] * 6 + ["table", "remove", "purge"]))
        if kind == "frame":
            out.append(("frame", draw(FRAMES)))
        elif kind == "table":
            i = draw(st.integers(0, len(SERVICES) - 1))
            out.append(("table", i, draw(_slots(SERVICES[i][5]))))
        elif kind == "remove":
            out.append(("remove", draw(st.sampled_from(sorted(BACKENDS)))))
        else:
            out.append(("purge", draw(st.sampled_from(sorted(BACKENDS)))))
    return out


def _flows(dp):
    return {(f.client, f.client_port, f.vip, f.port, f.proto): (f.backend_id, f.service_id)
            for f in dp.flows()}


def _model_flows(model):
    import ipaddress
    out = {}
    for (src, dst, sport, dport, proto, fam), e in model.flows.items():
        if e.kind != FLOW_FWD:
            continue
        bid, sid = e.backend_id, e.service_id
        n = 4 if fam == 4 else 16
        out[(ipaddress.ip_address(src[:n]), sport, ipaddress.ip_address(dst[:n]), dport,
             proto)] = (bid, sid)
    if model.ct is not None:
        for table in model.ct.tables:
            for key, e in table.items():
                peer = model.ct_peers.get(key)
                if peer is None or not e.status & 0x08:
                    continue
                src, dst, sport, dport, proto, fam = e.orig
                n = 4 if fam == 4 else 16
                out[(ipaddress.ip_address(src[:n]), sport, ipaddress.ip_address(dst[:n]),
                     dport, proto)] = (peer.backend_id, peer.service_id)
    return out


def _tup(t):
    return (bytes(t.src), bytes(t.dst), t.sport, t.dport, t.proto, t.family)


def _connections(dp):
    """The tracker's connections: orig tuple -> (table, state, status, reply)."""
    out = {}
    for table, name in enumerate(("ct_established", "ct_embryonic")):
        for _, v in dp.object.maps[name].items():
            out[_tup(v.orig)] = (table, v.state, v.status & 0xF, _tup(v.reply))
    return out


def _model_connections(model):
    return {e.orig: (table, int(e.state), int(e.status) & 0xF, e.reply)
            for table, t in enumerate(model.ct.tables) for e in t.values()}


@settings(max_examples=100, **SETTINGS)
@given(tables=st.tuples(*[_slots(s[5]) for s in SERVICES]), script=steps(),
       seed=st.sampled_from([0, 1, 0xDEADBEEF]))
def test_kernel_and_model_agree(dp, tables, script, seed):
    dp.set_config(src4=F.SRC4, src6=F.SRC6, mtu=1500, hash_seed=seed)
    _reset(dp, tables)
    model = dp.model()
    before = dp.stats()
    for step in script:
        if step[0] == "table":
            _, i, slots = step
            vip, port, proto = SERVICES[i][:3]
            dp.install_table((vip, port, proto), slots)
            sid = dp.service_id((vip, port, proto))
            model.install_table(sid, slots, dp.model().tables[sid][1])
            continue
        if step[0] == "remove":
            try:
                dp.delete_backend(step[1])
            except (ValueError, KeyError):
                continue       # still in a table, or gone already
            model.delete_backend(step[1])
            continue
        if step[0] == "purge":
            dp.purge_backend(step[1])
            model.purge_backend(step[1])
            continue
        frame = step[1]
        want = model.run(frame)
        verdict, data = dp.run(frame)
        assert verdict == want.verdict, "frame %s: kernel %s, model %s (%s)" % (
            frame[:80].hex(), verdict, want.verdict, want.reason)
        assert data == want.data, "frame %s: output differs at byte %d" % (
            frame[:80].hex(), next((i for i, (a, b) in enumerate(zip(data, want.data))
                                    if a != b), min(len(data), len(want.data))))
    assert _flows(dp) == _model_flows(model)
    if model.ct is not None:
        assert _connections(dp) == _model_connections(model)
    after = dp.stats()
    for name in ("packets", "vip_packets", "flow_misses", "new_flows", "nat_replies",
                 "icmp_forwarded", "too_big_sent", "passed", "syn_rehash"):
        assert getattr(after, name) - getattr(before, name) == model.stats[name], name
    for r in DropReason:
        assert after.drops[r] - before.drops[r] == model.drops[r], r


def test_flow_hash_matches_the_kernel(dp):
    """Table slot = flow_hash % M, source-affinity too: one backend per slot."""
    dp.set_config(src4=F.SRC4, src6=F.SRC6, hash_seed=12345)
    _reset(dp, [s[5][:1] * M for s in SERVICES])
    rng = random.Random(7)
    for aff in (False, True):
        key = (F.VIP, 84, "tcp")
        dp.put_service(key, mode="l2", source_affinity=aff)
        slots = [rng.choice([0, 1, 4]) for _ in range(M)]
        dp.install_table(key, slots)
        dp.flush_flows()
        for i in range(200):
            client = "203.0.%d.%d" % (rng.randrange(256), rng.randrange(1, 255))
            sport = rng.randrange(1024, 65536)
            _, out = dp.run(bytes(pk.tcp_packet(client, F.VIP, sport, 84)))
            want = slots[flow_hash(client, F.VIP, sport, 84, 6, source_only=aff,
                                   seed=12345) % M]
            assert out[:6] == pk.mac_bytes(BACKENDS[want][1]), (client, sport)
        dp.delete_service(key)
