"""The load balancer's DSR path on real traffic: a client, the LB and a
backend on one bridge; the LB's XDP program encapsulates (IPIP, GUE) or
rewrites the MAC (L2), the backend's decapsulator strips the tunnel, the
backend's TCP server answers from the VIP straight to the client."""

import threading

import pytest

from pybpfnet.dataplanes._lb_dataplane import Decap, LbDataplane

VIP = "192.0.2.10"
CLIENT, LB, BACKEND = "10.9.0.1", "10.9.0.2", "10.9.0.3"
VIP6 = "2001:db8:f::10"
CLIENT6, LB6, BACKEND6 = "fd09::1", "fd09::2", "fd09::3"
PORT = 8080


@pytest.fixture
def topo(lab):
    sw = lab.netns("sw")
    hosts = {}
    ports = []
    for label, addr, addr6 in (("client", CLIENT, CLIENT6), ("lb", LB, LB6),
                               ("backend", BACKEND, BACKEND6)):
        ns = lab.netns(label)
        lab.veth(ns, sw, name_a="eth0", name_b="to-" + label)
        ns.add_address("eth0", addr + "/24")
        ns.add_address("eth0", addr6 + "/64")
        ports.append("to-" + label)
        hosts[label] = ns
    lab.bridge(sw, "br0", ports=ports)
    hosts["client"].add_route(VIP + "/32", via=LB)
    hosts["client"].add_route(VIP6 + "/128", via=LB6)
    backend = hosts["backend"]
    backend.add_address("lo", VIP + "/32")
    backend.add_address("lo", VIP6 + "/128")
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter",
                "net.ipv4.conf.lo.rp_filter"):
        backend.sysctl(key, 0)
    return hosts


def _echo_server(ns, vip=VIP):
    srv = ns.create_server((vip, PORT))
    srv.settimeout(5)

    def serve():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                conn.sendall(conn.recv(100).upper())
        except OSError:
            pass
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode,hook", [("ipip", "xdp"), ("gue", "xdp"), ("l2", "xdp"),
                                       ("ipip", "tc"), ("gue", "tc")])
def test_dsr_connection_through_the_lb(topo, mode, hook, family):
    client, lb, backend = topo["client"], topo["lb"], topo["backend"]
    mac = backend.link("eth0").mac
    vip, client_ip, backend_ip = (VIP, CLIENT, BACKEND) if family == 4 else \
        (VIP6, CLIENT6, BACKEND6)
    with LbDataplane(max_services=4, max_backends=4, max_flows=256) as dp, \
            Decap([backend_ip]) as decap:
        dp.set_config(src4=LB, src6=LB6)
        dp.put_backend(0, backend_ip, mac=mac)
        dp.put_service((vip, PORT, "tcp"), mode=mode)
        dp.install_table((vip, PORT, "tcp"), [0] * 7)
        with lb.enter():
            dp.attach("eth0", mode="generic")
        with backend.enter():
            if hook == "xdp":
                decap.attach("eth0", mode="generic")
            else:
                decap.attach_tc("eth0")
        t = _echo_server(backend, vip)
        with client.create_connection((vip, PORT), timeout=5) as s:
            s.sendall(b"hello")
            assert s.recv(100) == b"HELLO"
        t.join(5)
        st = dp.stats()
        assert st.new_flows == 1 and st.vip_packets >= 3
        assert sum(st.drops.values()) == 0
        flows = dp.flows()
        assert [(str(f.client), f.backend_id) for f in flows] == [(client_ip, 0)]
        assert dp.backend_counters(0).packets == st.vip_packets
        if mode != "l2":
            assert decap.stats()["decapped"] == st.vip_packets
        else:
            assert decap.stats()["decapped"] == 0


def test_nat_connection_and_replies_through_the_lb(lab):
    """NAT: the backend (another subnet) routes replies via the LB, which
    translates them back to VIP -> client."""
    sw = lab.netns("sw")
    ns = {}
    for label in ("client", "lb", "backend"):
        ns[label] = lab.netns(label)
        lab.veth(ns[label], sw, name_a="eth0", name_b="to-" + label)
    lab.bridge(sw, "br0", ports=["to-client", "to-lb", "to-backend"])
    ns["client"].add_address("eth0", CLIENT + "/24")
    ns["lb"].add_address("eth0", LB + "/24")
    ns["lb"].add_address("eth0", "10.7.0.2/24")
    ns["backend"].add_address("eth0", "10.7.0.3/24")
    ns["client"].add_route(VIP + "/32", via=LB)
    ns["backend"].add_route("0.0.0.0/0", via="10.7.0.2")
    srv = ns["backend"].create_server(("0.0.0.0", 9000))
    srv.settimeout(5)
    with LbDataplane(max_services=4, max_backends=4, max_flows=256) as dp:
        dp.put_backend(0, "10.7.0.3", mac=ns["backend"].link("eth0").mac, port=9000)
        dp.put_service((VIP, PORT, "tcp"), mode="nat")
        dp.install_table((VIP, PORT, "tcp"), [0] * 7)
        with ns["lb"].enter():
            dp.attach("eth0", mode="generic")

        def serve():
            try:
                conn, peer = srv.accept()
                with conn:
                    conn.settimeout(5)
                    conn.sendall(conn.recv(100) + ("|%s" % peer[0]).encode())
            except OSError:
                pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with ns["client"].create_connection((VIP, PORT), timeout=5) as s:
            s.sendall(b"hi")
            assert s.recv(100) == b"hi|" + CLIENT.encode()    # the backend saw the client
        t.join(5)
        srv.close()
        st = dp.stats()
        assert st.new_flows == 1 and st.nat_replies >= 2 and sum(st.drops.values()) == 0
