"""The load balancer with real traffic: a client, the LB and three backends
running HTTP servers, in every forwarding mode; health checks, draining
and table changes under established connections."""

import collections
import ipaddress
import math
import threading
import time

import attrs
import pytest

from pybpfnet import testing

pytestmark = pytest.mark.skipif(not testing.have_cap_bpf(), reason="needs CAP_BPF")

MODES = ("dsr-ipip", "dsr-gue", "l2-dsr", "nat")
REQUESTS = 2000


@pytest.fixture
def lbl(lab):
    from pybpfnet.dataplanes._lb_testing import LbLab
    with LbLab(lab, 3) as ll:
        yield ll


def make_lb(ll, mode="dsr-ipip", *, health=None, vip=None, **kwargs):
    from pybpfnet.dataplanes._lb_testing import VIPS
    from pybpfnet.dataplanes.lb import Backend, HealthCheck, LoadBalancer, Service
    if health is None:
        health = HealthCheck("http", path="/healthz", interval=0.1, timeout=0.1, fall=3,
                             rise=2)
    svc = Service("web", vip or VIPS[mode], 80, mode=mode, health=health,
                  backends=[Backend(n, a) for n, a in ll.addresses.items()])
    return LoadBalancer(ll.lb_iface, [svc], netns=ll.lb, **kwargs)


def expected_backend(lb, client_ip, reply, vip):
    from pybpfnet.dataplanes._lb_model import flow_hash
    return lb.maglev("web").lookup(flow_hash(client_ip, vip, reply.sport, 80, 6))


def binomial_ok(count, n, p, sigmas=5.0):
    """|count - n p| within ``sigmas`` standard deviations (+1 for p near 0/1)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


@pytest.mark.parametrize("mode", MODES)
def test_fresh_connections_in_every_mode(lbl, mode):
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    vip = VIPS[mode]
    client = lbl.client_for(mode)
    client_ip = "10.3.0.10" if mode == "nat" else "10.1.0.10"
    with make_lb(lbl, mode) as lb:
        replies = drive(client, vip, count=REQUESTS)
        errors = [r for r in replies if r.error]
        assert not errors, errors[:5]
        # every flow went where the data plane's hash and the Maglev table say
        wrong = [r for r in replies if r.backend != expected_backend(lb, client_ip, r, vip)]
        assert not wrong, wrong[:5]
        counts = collections.Counter(r.backend for r in replies)
        balance = lb.maglev("web").balance()
        size = lb.maglev("web").size
        for name in lbl.backends:
            assert binomial_ok(counts[name], REQUESTS, balance[name] / size), (counts, balance)
        st = lb.status().service("web")
        # the LB counted one new flow per connection, per backend
        assert {b.name: b.new_flows for b in st.backends} == dict(counts)
        assert st.new_flows == REQUESTS
        assert sum(b.traffic_share for b in st.backends) == pytest.approx(1.0)
        stats = lb.status().stats
        assert stats["drops"]["no_backend"] == 0 and stats["new_flows"] == REQUESTS
        if mode == "nat":
            assert stats["nat_replies"] > 0


def test_status_table_and_json(lbl):
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    with make_lb(lbl) as lb:
        assert not [r for r in drive(lbl.client, VIPS["dsr-ipip"], count=60) if r.error]
        status = lb.status()
        text = status.table()
        assert "web  10.99.0.1:80/tcp  dsr-ipip  table 65537" in text
        for name, addr in lbl.addresses.items():
            assert name in text and str(addr) in text
        d = status.to_dict()
        assert d["interfaces"] == ["eth0"] and d["health_checks"] is True
        svc = d["services"][0]
        assert svc["vip"] == "10.99.0.1" and svc["new_flows"] == 60
        assert sum(b["slots"] for b in svc["backends"]) == 65537
        assert {b["state"] for b in svc["backends"]} == {"up"}


def test_failed_backend_is_removed_within_fall_checks_and_only_its_flows_move(lbl):
    from pybpfnet.dataplanes._lb_testing import VIPS, KeepAlive, drive
    vip = VIPS["dsr-ipip"]
    events = []
    with make_lb(lbl, on_event=events.append) as lb:
        before = lb.maglev("web")
        # long-lived connections, some on each backend
        conns = [KeepAlive(lbl.client, vip) for _ in range(24)]
        owners = [c.request() for c in conns]
        assert set(owners) == set(lbl.backends)
        lbl.kill_server("b2")
        wait_for(lambda: any(e.what == "down" for e in events), what="b2 to go down")
        down = next(e for e in events if e.what == "down")
        assert down.backend == "b2" and down.health.failures == 3      # fall = 3
        assert "ECONNREFUSED" in down.detail
        after = lb.maglev("web")
        assert after.balance()["b2"] == 0
        old, new = before.names(), after.names()
        moved = [i for i in range(before.size) if old[i] != new[i]]
        # every slot of b2 moved; of the others, at most 1% of the table (Maglev's
        # near-minimal disruption)
        assert all(new[i] != "b2" for i in range(before.size))
        assert sum(1 for i in moved if old[i] != "b2") <= before.size // 100
        assert down.disruption == pytest.approx(len(moved) / before.size)
        # established flows of the other backends stay where they were
        for c, owner in zip(conns, owners):
            if owner != "b2":
                assert c.request() == owner
        # new connections avoid b2 and follow the new table
        replies = drive(lbl.client, vip, count=600)
        assert not [r for r in replies if r.error]
        assert all(r.backend != "b2" for r in replies)
        assert all(r.backend == expected_backend(lb, "10.1.0.10", r, vip) for r in replies)
        # the server comes back: after rise = 2 checks, so does its share of the table
        lbl.start_server("b2")
        wait_for(lambda: any(e.what == "up" for e in events), what="b2 to come back")
        up = next(e for e in events if e.what == "up")
        assert up.backend == "b2" and up.health.successes == 2
        assert lb.maglev("web") == before
        assert lb.status().service("web").backends[1].state == "up"
        for c in conns:
            c.close()


def test_drain_lets_established_connections_finish(lbl):
    from pybpfnet.dataplanes._lb_testing import VIPS, KeepAlive, drive
    vip = VIPS["nat"]
    with make_lb(lbl, "nat") as lb:
        conns = [KeepAlive(lbl.nat_client, vip) for _ in range(24)]
        owners = [c.request() for c in conns]
        on_b1 = [c for c, o in zip(conns, owners) if o == "b1"]
        assert on_b1
        lb.drain("web", "b1")
        st = lb.status().service("web")
        assert [(b.name, b.state, b.slots) for b in st.backends][0] == ("b1", "drained", 0)
        # established connections to b1 go on being served by b1
        for _ in range(5):
            for c, owner in zip(conns, owners):
                assert c.request() == owner
        # new connections avoid it
        replies = drive(lbl.nat_client, vip, count=400)
        assert not [r for r in replies if r.error]
        assert "b1" not in {r.backend for r in replies}
        # and the drained connections finish normally
        for c in on_b1:
            c.close()
        lb.set_weight("web", "b1", 1)
        replies = drive(lbl.nat_client, vip, count=300)
        assert not [r for r in replies if r.error]
        assert "b1" in {r.backend for r in replies}
        for c in conns:
            c.close()


@pytest.mark.parametrize("mode", MODES)
def test_no_resets_across_table_changes(lbl, mode):
    """Established connections send requests continuously while the table
    changes 40 times (weights, drains, a backend added and removed, a
    health flap); not one of them breaks or changes backend."""
    from pybpfnet.dataplanes._lb_testing import VIPS, KeepAlive
    from pybpfnet.dataplanes.lb import Backend
    vip = VIPS[mode]
    client = lbl.client_for(mode)
    with make_lb(lbl, mode, health_checks=False) as lb:
        conns = [KeepAlive(client, vip) for _ in range(30)]
        owners = [c.request() for c in conns]
        stop = threading.Event()
        errors = []
        served = collections.Counter()

        def talk(i, c, owner):
            while not stop.is_set():
                try:
                    got = c.request()
                except OSError as exc:
                    errors.append((i, owner, repr(exc)))
                    return
                if got != owner:
                    errors.append((i, owner, "moved to %s" % got))
                    return
                served[i] += 1
                time.sleep(0.005)

        threads = [threading.Thread(target=talk, args=(i, c, o))
                   for i, (c, o) in enumerate(zip(conns, owners))]
        for t in threads:
            t.start()
        swaps = 0
        events_before = len(lb.events())
        try:
            extra = Backend("b1-alias", lbl.addresses["b1"])
            for round_ in range(5):
                for name in lbl.backends:
                    lb.set_weight("web", name, 3)
                    lb.drain("web", name)
                    lb.set_weight("web", name, 1)
                    swaps += 3
                lb.add_backend("web", extra)
                lb.remove_backend("web", "b1-alias")
                lb.set_health("web", "b3", False)
                lb.set_health("web", "b3", True)
                swaps += 4
                time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join()
        # b3's flows were purged by its (simulated) health failure: its
        # connections may have moved; every other one must be intact
        broken = [e for e in errors if e[1] != "b3"]
        assert not broken, broken[:5]
        # every change was one table swap (one event each), and the kernel
        # holds the table the control plane computed last
        assert len(lb.events()) - events_before == swaps
        names = lb.maglev("web").names()
        ids = {n: lb.backend_id("web", n) for n in lbl.backends}
        assert lb.dataplane.table(lb.service_key("web")) == [ids[n] for n in names]
        assert all(served[i] > 0 for i in range(len(conns)))
        for c in conns:
            c.close()


def test_backend_in_another_family_is_refused_for_nat(lbl):
    from pybpfnet.dataplanes.lb import Backend, LbConfigError
    with make_lb(lbl, "nat", health_checks=False) as lb:
        with pytest.raises(LbConfigError, match="needs one family"):
            lb.add_backend("web", Backend("v6", "fd02::11"))
        with pytest.raises(KeyError, match="has no backend 'nope'"):
            lb.drain("web", "nope")
        assert [b.name for b in lb.services["web"].backends] == ["b1", "b2", "b3"]


def _snapshot(lb):
    """What a rejected change must leave as it was: the Python view and the
    kernel's services, backends and tables."""
    dp = lb.dataplane
    return (lb.config, {n: lb.maglev(n) for n in lb.services}, dp.services(), dp.backends(),
            {k: dp.table(k) for k in dp.services()})


def test_unreachable_backend_changes_nothing(lbl):
    from pybpfnet.dataplanes._lb_testing import VIPS
    from pybpfnet.dataplanes.lb import Backend, Service
    with make_lb(lbl, health_checks=False, resolve_timeout=0.3) as lb:
        before = _snapshot(lb)
        with pytest.raises(OSError, match="cannot resolve the MAC address of 10.2.0.99"):
            lb.add_backend("web", Backend("ghost", "10.2.0.99"))
        assert _snapshot(lb) == before
        # an existing backend moved to an address that does not answer: stays as it was
        with pytest.raises(OSError, match="10.2.0.98"):
            lb.add_backend("web", Backend("b2", "10.2.0.98"))
        assert _snapshot(lb) == before
        # a new service with one unreachable backend is not put at all
        gue = Service("gue", VIPS["dsr-gue"], 80, mode="dsr-gue",
                      backends=[Backend("b3", lbl.addresses["b3"]), Backend("x", "10.2.0.97")])
        with pytest.raises(OSError, match="10.2.0.97"):
            lb.add_service(gue)
        assert _snapshot(lb) == before
        # apply: the first service would change, the second cannot resolve: nothing moves
        web = attrs.evolve(lb.services["web"], backends=lb.services["web"].backends[:2])
        with pytest.raises(OSError, match="10.2.0.97"):
            lb.apply([web, gue])
        assert _snapshot(lb) == before


def test_failed_table_change_is_undone(lbl):
    """The data plane holds 3 backend ids: moving b1 to another address
    needs a fourth while the old one is still in the table, so the change
    fails after b1 was taken out of the Python state; it is put back."""
    from pybpfnet.dataplanes.lb import Backend, LbConfigError
    with make_lb(lbl, health_checks=False, max_backends=3) as lb:
        before = _snapshot(lb)
        with pytest.raises(LbConfigError, match="too many backends"):
            lb.add_backend("web", Backend("b1", lbl.addresses["b2"]))
        assert _snapshot(lb) == before
        with pytest.raises(LbConfigError, match="weight: an int in 0..1000"):
            lb.set_weight("web", "b1", 1001)
        assert _snapshot(lb) == before


def test_apply_swaps_vips_between_services(lbl):
    """Two services trade VIPs in one apply: the old keys go first, so the
    new ones never clash on the way."""
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    from pybpfnet.dataplanes.lb import Backend, LbConfig, Service
    b1 = [Backend("b1", lbl.addresses["b1"])]
    b2 = [Backend("b2", lbl.addresses["b2"])]
    a = Service("a", VIPS["dsr-ipip"], 80, backends=b1)
    b = Service("b", VIPS["l2-dsr"], 80, mode="l2-dsr", backends=b2)
    from pybpfnet.dataplanes.lb import LoadBalancer
    with LoadBalancer(lbl.lb_iface, [a, b], netns=lbl.lb, health_checks=False) as lb:
        assert {r.backend for r in drive(lbl.client, VIPS["dsr-ipip"], count=20)} == {"b1"}
        lb.apply(LbConfig(services=[attrs.evolve(a, vip=VIPS["l2-dsr"], mode="l2-dsr"),
                                    attrs.evolve(b, vip=VIPS["dsr-ipip"], mode="dsr-ipip")]))
        assert {r.backend for r in drive(lbl.client, VIPS["dsr-ipip"], count=20)} == {"b2"}
        assert {r.backend for r in drive(lbl.client, VIPS["l2-dsr"], count=20)} == {"b1"}
        assert len(lb.dataplane.services()) == 2


def test_service_added_and_removed_at_run_time(lbl):
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    from pybpfnet.dataplanes.lb import Backend, Service
    with make_lb(lbl, health_checks=False) as lb:
        gue = Service("gue", VIPS["dsr-gue"], 80, mode="dsr-gue",
                      backends=[Backend("b3", lbl.addresses["b3"])])
        lb.add_service(gue)
        replies = drive(lbl.client, VIPS["dsr-gue"], count=50)
        assert {r.backend for r in replies} == {"b3"}
        lb.remove_service("gue")
        assert list(lb.services) == ["web"]
        assert not [r for r in drive(lbl.client, VIPS["dsr-ipip"], count=50) if r.error]
        assert ipaddress.ip_address(VIPS["dsr-gue"]) not in {
            k.vip for k in lb.dataplane.services()}


@pytest.mark.parametrize("mode", ["dsr-ipip", "dsr-gue", "l2-dsr"])
def test_ipv6_vip_and_backends(lab, mode):
    from pybpfnet.dataplanes._lb_model import flow_hash
    from pybpfnet.dataplanes._lb_testing import VIPS6, LbLab, drive
    from pybpfnet.dataplanes.lb import Backend, HealthCheck, LoadBalancer, Service
    with LbLab(lab, 3, v6=True) as ll:
        svc = Service("web", VIPS6[mode], 80, mode=mode,
                      health=HealthCheck(interval=0.2, timeout=0.2),
                      backends=[Backend(n, a) for n, a in ll.addresses6.items()])
        with LoadBalancer(ll.lb_iface, [svc], netns=ll.lb) as lb:
            replies = drive(ll.client, VIPS6[mode], count=600)
            assert not [r for r in replies if r.error]
            m = lb.maglev("web")
            assert all(r.backend == m.lookup(flow_hash("fd01::10", VIPS6[mode], r.sport, 80, 6))
                       for r in replies)
            assert set(r.backend for r in replies) == set(ll.backends)


def test_source_affinity_keeps_each_client_on_one_backend(lbl):
    """affinity = "source": every connection of a client address goes to
    the backend its address hashes to; when a backend fails only its
    clients move."""
    from pybpfnet.dataplanes._lb_model import flow_hash
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    from pybpfnet.dataplanes.lb import Backend, LoadBalancer, Service
    vip = VIPS["dsr-ipip"]
    sources = ["10.1.0.%d" % i for i in range(20, 36)]
    for s in sources:
        lbl.client.add_address("eth0", s + "/24")
    svc = Service("web", vip, 80, affinity="source",
                  backends=[Backend(n, a) for n, a in lbl.addresses.items()])
    with LoadBalancer(lbl.lb_iface, [svc], netns=lbl.lb, health_checks=False) as lb:

        def owners():
            out = {}
            for s in sources:
                got = {r.backend for r in drive(lbl.client, vip, count=8, threads=2, source=s)}
                assert len(got) == 1 and None not in got, (s, got)
                out[s] = got.pop()
            return out

        before = owners()
        m = lb.maglev("web")
        assert before == {s: m.lookup(flow_hash(s, vip, 0, 0, 0, source_only=True))
                          for s in sources}
        assert len(set(before.values())) > 1
        lb.set_health("web", "b2", False)
        after = owners()
        assert "b2" not in after.values()
        assert {s: b for s, b in after.items() if before[s] != "b2"} == \
            {s: b for s, b in before.items() if b != "b2"}
        assert lb.status().service("web").affinity == "source"


@pytest.mark.parametrize("mode", MODES)
def test_udp_service(lbl, mode):
    from pybpfnet.dataplanes._lb_model import flow_hash
    from pybpfnet.dataplanes._lb_testing import UDP_PORT, VIPS, udp_exchange
    from pybpfnet.dataplanes.lb import Backend, HealthCheck, LoadBalancer, Service
    vip = VIPS[mode]
    client_ip = "10.3.0.10" if mode == "nat" else "10.1.0.10"
    svc = Service("dns", vip, UDP_PORT, protocol="udp", mode=mode,
                  health=HealthCheck("http", port=80, path="/healthz", interval=0.2,
                                     timeout=0.2),
                  backends=[Backend(n, a) for n, a in lbl.addresses.items()])
    with LoadBalancer(lbl.lb_iface, [svc], netns=lbl.lb) as lb:
        replies = udp_exchange(lbl.client_for(mode), vip, count=300)
        assert not [r for r in replies if r.error] and len(replies) == 300
        m = lb.maglev("dns")
        assert all(r.backend == m.lookup(flow_hash(client_ip, vip, r.sport, UDP_PORT, 17))
                   for r in replies)
        assert {r.backend for r in replies} == set(lbl.backends)
        assert lb.status().service("dns").new_flows == 300


def test_reused_source_ports_follow_the_new_table(lbl):
    """Clients reuse source ports at once (the server closes first); a SYN
    that finds the old connection's flow entry is hashed again, so a
    drained backend gets no new connection even on a reused 5-tuple."""
    from pybpfnet.dataplanes._lb_testing import VIPS, drive
    vip = VIPS["dsr-ipip"]
    with make_lb(lbl, health_checks=False) as lb:
        first = drive(lbl.client, vip, count=1500, fresh_ports=False)
        assert not [r for r in first if r.error]
        lb.drain("web", "b1")
        second = drive(lbl.client, vip, count=1500, fresh_ports=False)
        assert not [r for r in second if r.error]
        reused = {r.sport for r in first} & {r.sport for r in second}
        assert len(reused) > 50            # 9,000 kernel ports: reuse is certain
        assert "b1" not in {r.backend for r in second}
        assert lb.status().stats["syn_rehash"] >= len(reused)


def test_nat_through_the_connection_tracker(lbl):
    """nat_tracking="conntrack": NAT flows are the connection tracker's
    entries; traffic, drains and the sweeper work as with the flow table."""
    from pybpfnet.dataplanes._lb_testing import VIPS, KeepAlive, drive
    from pybpfnet.dataplanes.lb import LbConfigError
    vip = VIPS["nat"]
    with make_lb(lbl, "nat", nat_tracking="conntrack", sweep_interval=0.2) as lb:
        assert lb.nat_tracking == "conntrack" and lb.config.nat_tracking == "conntrack"
        keep = KeepAlive(lbl.nat_client, vip)
        owner = keep.request()
        replies = drive(lbl.nat_client, vip, count=300)
        assert not [r for r in replies if r.error]
        assert {r.backend for r in replies} == set(lbl.backends)
        lb.drain("web", owner)
        assert keep.request() == owner                  # established: stays
        replies = drive(lbl.nat_client, vip, count=100)
        assert not [r for r in replies if r.error] and owner not in {r.backend for r in replies}
        assert len(list(lb.dataplane.conntrack.entries())) >= 400
        keep.close()
        assert lb.status().to_dict()["nat_tracking"] == "conntrack"
        assert lb.sweep() is not None
        assert not [e for e in lb.events() if e.what == "sweep"]      # no sweep failed
        with pytest.raises(LbConfigError, match="nat_tracking: 'conntrack' expected"):
            lb.apply(attrs.evolve(lb.config, nat_tracking="lru"))
