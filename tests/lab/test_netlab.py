"""pybpfnet.netlab against the real kernel: namespaces, veth pairs, bridges,
addresses, routes, MTU, moving links, code and commands inside namespaces,
real ICMP/TCP/UDP traffic between the lab's namespaces, teardown and clashes.

Every test checks (autouse fixture) that it left nothing in /run/netns,
/sys/class/net, no rtnetlink worker thread and no open lab behind.
"""

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pybpfnet import BpfError, NotSupportedError, _netlink, netlab
from pybpfnet.netlab import (Lab, NetlinkError, NetlinkExistsError, NetlinkNotFoundError)


def _state():
    # Other processes (another test run) may make labs at the same time: only
    # namespaces this process can have made count. Lab links never live in
    # the host, so any new host interface is a leak.
    mine = ("-%d-" % os.getpid(), "pbnfixed-", "pbnstale-")
    return {
        "netns": {n for n in _netlink.list_netns() if any(m in n for m in mine)},
        "new host links": set(os.listdir("/sys/class/net")),
    }


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    before = _state()
    yield
    after = _state()
    assert after["netns"] <= before["netns"], "namespaces left behind: %s" % sorted(
        after["netns"] - before["netns"])
    assert after["new host links"] <= before["new host links"], \
        "host interfaces appeared: %s" % sorted(after["new host links"]
                                                - before["new host links"])
    assert not list(netlab._live_labs), "a lab is still open"
    workers = [t.name for t in threading.enumerate() if t.name.startswith("pybpfnet-rtnl")]
    assert not workers, "rtnetlink workers still running: %s" % workers


def thread_netns():
    return os.stat("/proc/thread-self/ns/net").st_ino


def echo_tcp_once(server_sock):
    """Serve one TCP connection: reply with the peer address and the data upper-cased."""
    def serve():
        conn, peer = server_sock.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(("%s|" % peer[0]).encode() + data.upper())
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def tcp_roundtrip(client_ns, server_ns, server_ip, payload=b"hello"):
    srv = server_ns.create_server((str(server_ip), 0))
    with srv:
        port = srv.getsockname()[1]
        t = echo_tcp_once(srv)
        with client_ns.create_connection((str(server_ip), port), timeout=5) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := c.recv(65536):
                reply += chunk
        t.join(5)
    peer, _, data = reply.partition(b"|")
    return ipaddress.ip_address(peer.decode()), data


# ------------------------------------------------------------------ basics

def test_two_hosts_ping_v4_and_v6(lab):
    h = lab.two_hosts()
    assert h.client.name.startswith(lab.id) and h.client.name.endswith("-client")
    assert h.client.name in _netlink.list_netns()
    assert (h.client_ip, h.server_ip) == (ipaddress.ip_address("10.0.0.1"),
                                          ipaddress.ip_address("10.0.0.2"))
    assert (h.client_ip6, h.server_ip6) == (ipaddress.ip_address("fd00::1"),
                                            ipaddress.ip_address("fd00::2"))
    assert h.client.ping(h.server_ip, count=3) == 3
    assert h.server.ping(h.client_ip6, count=3) == 3   # no DAD wait needed
    assert h.client.ping("10.0.0.3", timeout=0.2) == 0  # nobody there
    assert set(h.client.addresses("eth0")) == {
        ipaddress.ip_interface("10.0.0.1/24"), ipaddress.ip_interface("fd00::1/64")}
    assert any(a.ip.is_link_local for a in h.client.addresses("eth0", link_local=True))
    assert [i.name for i in h.server.links()] == ["lo", "eth0"]
    # loopback is up inside every lab namespace
    assert h.client.ping("127.0.0.1") == 1


def test_two_hosts_single_family_and_custom_subnets(lab):
    h = lab.two_hosts(v6=False, subnet="192.168.7.0/30", client="a", server="b")
    assert h.client_ip6 is None and h.network6 is None
    assert str(h.server_ip) == "192.168.7.2"
    assert h.client.ping(h.server_ip) == 1
    assert all(a.version == 4 for a in h.client.addresses("eth0"))
    with pytest.raises(ValueError):
        lab.two_hosts(v4=False, v6=False)


def test_veth_ends_have_ifindex_mac_name(lab):
    a, b = lab.netns("a"), lab.netns("b")
    pair = lab.veth(a, b, name_a="left", name_b="right", mtu=1400)
    left, right = pair
    assert (left.name, right.name) == ("left", "right")
    assert left.ns is a and right.ns is b
    assert left.ifindex == a.ifindex("left") == _netlink.ifindex("left", a)
    assert a.ifname(left.ifindex) == "left"
    info = right.info()
    assert info.kind == "veth" and info.up and info.mtu == 1400 == left.mtu
    assert info.mac == right.mac and len(right.mac.split(":")) == 6
    assert left.mac != right.mac
    a.set_mac(left, "02:00:00:00:00:01")
    assert left.mac == "02:00:00:00:00:01"
    assert left.is_up and right.is_up
    # default names: first free ethN per namespace
    p2 = lab.veth(a, b)
    assert (p2.a.name, p2.b.name) == ("eth0", "eth0")
    p3 = lab.veth(a, a, up=False)
    assert (p3.a.name, p3.b.name) == ("eth1", "eth2")
    assert not p3.a.is_up
    assert "left" not in os.listdir("/sys/class/net")   # never in the host


def test_dummy_or_a_clear_not_supported(lab):
    ns = lab.netns("solo")
    try:
        d = lab.dummy(ns)
    except netlab.NetlinkNotSupportedError as exc:     # CONFIG_DUMMY=n
        assert isinstance(exc, NotSupportedError) and isinstance(exc, NetlinkError)
        assert exc.errno == errno.EOPNOTSUPP and exc.feature == "dummy links"
        assert "create dummy dummy0 in netns %s" % ns.name in str(exc)
        assert [i.name for i in ns.links()] == ["lo"]
        return
    assert d.name == "dummy0" and d.kind == "dummy" and d.is_up
    assert lab.dummy(ns).name == "dummy1"


def test_standalone_interface_and_addresses(lab):
    ns = lab.netns("solo")
    d = lab.bridge(ns)
    assert d.name == "br0" and d.kind == "bridge" and d.is_up
    assert ns.interface("br0") == d
    assert ns.has_link("br0") and not ns.has_link("br1")
    with pytest.raises(NetlinkNotFoundError):
        ns.interface("br1")
    ns.add_address(d, "10.1.1.1/32")
    assert ns.addresses(d) == [ipaddress.ip_interface("10.1.1.1/32")]
    ns.del_address(d, "10.1.1.1/32")
    assert ns.addresses(d) == []
    ns.delete_link(d)
    assert [i.name for i in ns.links()] == ["lo"]


# ------------------------------------------------------------------ traffic

@pytest.mark.parametrize("family", [4, 6])
def test_tcp_between_namespaces(lab, family):
    h = lab.two_hosts()
    server_ip = h.server_ip if family == 4 else h.server_ip6
    client_ip = h.client_ip if family == 4 else h.client_ip6
    peer, data = tcp_roundtrip(h.client, h.server, server_ip, b"x" * 100_000)
    assert peer == client_ip
    assert data == b"X" * 100_000


@pytest.mark.parametrize("family", [4, 6])
def test_udp_between_namespaces(lab, family):
    h = lab.two_hosts()
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    server_ip = str(h.server_ip if family == 4 else h.server_ip6)
    client_ip = str(h.client_ip if family == 4 else h.client_ip6)
    srv = h.server.socket(fam, socket.SOCK_DGRAM)
    cli = h.client.socket(fam, socket.SOCK_DGRAM)
    with srv, cli:
        srv.bind((server_ip, 0))
        srv.settimeout(5)
        cli.settimeout(5)
        port = srv.getsockname()[1]
        for i in range(5):
            cli.sendto(b"ping %d" % i, (server_ip, port))
            data, peer = srv.recvfrom(100)
            assert data == b"ping %d" % i and peer[0] == client_ip
            srv.sendto(b"pong %d" % i, peer)
            assert cli.recvfrom(100)[0] == b"pong %d" % i


def test_sockets_stay_in_their_namespace(lab):
    h = lab.two_hosts()
    # created in the client namespace: the server's address is not local here
    s = h.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        with pytest.raises(OSError) as ei:
            s.bind((str(h.server_ip), 0))
        assert ei.value.errno == errno.EADDRNOTAVAIL
        s.bind((str(h.client_ip), 0))


def test_bridge_joins_three_namespaces(lab):
    sw = lab.netns("switch")
    hosts = [lab.netns("h%d" % i) for i in range(1, 4)]
    ports = []
    for i, h in enumerate(hosts, 1):
        pair = lab.veth(h, sw, name_a="eth0", name_b="port%d" % i)
        h.add_address("eth0", "10.0.0.%d/24" % i)
        h.add_address("eth0", "fd00::%d/64" % i)
        ports.append(pair.b)
    br = lab.bridge(sw, "br0", ports=ports)
    assert br.kind == "bridge" and br.is_up
    assert all(sw.link(p).master == br.ifindex for p in ports)
    for i, h in enumerate(hosts, 1):
        for j in range(1, 4):
            if i != j:
                assert h.ping("10.0.0.%d" % j) == 1, (i, j)
                assert h.ping("fd00::%d" % j) == 1, (i, j)
    peer, data = tcp_roundtrip(hosts[0], hosts[2], "10.0.0.3")
    assert str(peer) == "10.0.0.1" and data == b"HELLO"


def test_router_forwards_between_two_subnets(lab):
    client, router, server = lab.netns("client"), lab.netns("router"), lab.netns("server")
    left = lab.veth(client, router)
    right = lab.veth(server, router)
    client.add_address(left.a, "10.0.1.2/24")
    router.add_address(left.b, "10.0.1.1/24")
    server.add_address(right.a, "10.0.2.2/24")
    router.add_address(right.b, "10.0.2.1/24")
    client.add_address(left.a, "fd00:1::2/64")
    router.add_address(left.b, "fd00:1::1/64")
    server.add_address(right.a, "fd00:2::2/64")
    router.add_address(right.b, "fd00:2::1/64")
    client.add_route("default", via="10.0.1.1")
    server.add_route("10.0.1.0/24", via="10.0.2.1", dev=right.a)
    client.add_route("fd00:2::/64", via="fd00:1::1")
    server.add_route("default", via="fd00:2::1")

    assert router.sysctl("net.ipv4.ip_forward") == "0"
    assert client.ping("10.0.2.2", timeout=0.3) == 0      # router does not forward yet
    router.set_forwarding(True)
    assert router.sysctl("net.ipv4.ip_forward") == "1"
    assert router.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert client.ping("10.0.2.2", count=2) == 2
    assert client.ping("fd00:2::2", count=2) == 2
    peer, _ = tcp_roundtrip(client, server, "10.0.2.2")
    assert str(peer) == "10.0.1.2"                         # routed, not NATed
    peer, _ = tcp_roundtrip(client, server, "fd00:2::2")
    assert str(peer) == "fd00:1::2"

    routes = {(str(r.dst), str(r.gateway)) for r in client.routes()}
    assert ("0.0.0.0/0", "10.0.1.1") in routes and ("fd00:2::/64", "fd00:1::1") in routes
    assert any(r.oif == right.a.ifindex for r in server.routes(socket.AF_INET)
               if str(r.dst) == "10.0.1.0/24")
    client.del_route("default", via="10.0.1.1")
    assert ("0.0.0.0/0", "10.0.1.1") not in {(str(r.dst), str(r.gateway))
                                             for r in client.routes()}
    with pytest.raises(OSError) as ei:
        client.ping("10.0.2.2")
    assert ei.value.errno == errno.ENETUNREACH and "10.0.2.2" in str(ei.value)


def test_mtu(lab):
    h = lab.two_hosts(mtu=1400)
    assert h.client_if.mtu == h.server_if.mtu == 1400
    assert h.client.ping(h.server_ip6) == 1          # >= 1280: IPv6 stays on
    s = h.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.setsockopt(socket.IPPROTO_IP, 10, 2)   # IP_MTU_DISCOVER = IP_PMTUDISC_DO
        s.connect((str(h.server_ip), 9))
        s.send(b"x" * (1400 - 28))                   # fits exactly
        with pytest.raises(OSError) as ei:
            s.send(b"x" * (1400 - 27))               # one byte too many, DF set
        assert ei.value.errno == errno.EMSGSIZE
    h.client.set_mtu("eth0", 9000)
    h.server_if.set_mtu(9000)
    assert h.client.link("eth0").mtu == 9000 == h.server_if.mtu
    assert h.client.ping(h.server_ip, size=8000) == 1
    with pytest.raises(NetlinkError) as ei:
        h.client.set_mtu("eth0", 10)
    assert ei.value.errno == errno.EINVAL
    assert "set mtu 10 on eth0 in netns %s" % h.client.name in str(ei.value)


def test_set_down_and_up(lab):
    h = lab.two_hosts(v6=False)
    h.server.set_down("eth0")
    assert not h.server_if.is_up and not h.client_if.info().carrier
    assert h.client.ping(h.server_ip, timeout=0.2) == 0
    h.server_if.set_up()
    assert h.server_if.is_up
    # the failed ARP resolution above is retried after retrans_time (1 s)
    assert h.client.ping(h.server_ip, timeout=5) == 1


def test_move_links(lab):
    a, b, c = lab.netns("a"), lab.netns("b"), lab.netns("c")
    d, _ = lab.veth(a, a, name_a="d0", name_b="d0peer")
    moved = a.move(d, b, name="d1")
    assert moved.ns is b and moved.name == "d1" and moved.is_up
    assert not a.has_link("d0") and b.has_link("d1")
    # a veth end moves and keeps carrying traffic after re-addressing
    pair = lab.veth(a, b)
    pair.b.move(c, name="eth5")
    assert pair.b.ns is c and pair.b.name == "eth5" and c.has_link("eth5")
    a.add_address(pair.a, "10.3.0.1/24")
    c.add_address(pair.b, "10.3.0.2/24")
    assert a.ping("10.3.0.2") == 1
    # forced state and renames within one namespace
    back = c.move("eth5", c, name="eth6")
    assert back.name == "eth6" and c.has_link("eth6") and back.is_up
    assert back.addresses() == [ipaddress.ip_interface("10.3.0.2/24")]   # kept
    assert a.ping("10.3.0.2", timeout=3) == 1
    down = c.move("eth6", b, up=False)
    assert not down.is_up
    # a name clash in the target: clear error, nothing moved
    lab.veth(a, a, name_a="dup", name_b="dup2")
    lab.bridge(b, "dup")
    with pytest.raises(FileExistsError) as ei:
        a.move("dup", b)
    assert "dup" in str(ei.value) and b.name in str(ei.value)
    assert a.has_link("dup")
    with pytest.raises(ValueError):
        a.move("dup", object())


def test_neighbours(lab):
    h = lab.two_hosts(v6=False)
    h.client.add_neighbour("eth0", "10.0.0.9", "02:00:00:00:00:09")
    with pytest.raises(FileExistsError):
        h.client.add_neighbour("eth0", "10.0.0.9", "02:00:00:00:00:09")


# ------------------------------------------------------------------ code inside

def test_run_callable_inside_and_thread_restored(lab):
    h = lab.two_hosts()
    home = thread_netns()
    assert h.client.run(lambda: [n for _, n in socket.if_nameindex()]) == ["lo", "eth0"]
    assert h.client.run(thread_netns) == h.client.inode != home
    assert thread_netns() == home

    def boom(x, *, y):
        raise KeyError((x, y))
    with pytest.raises(KeyError) as ei:
        h.server.run(boom, 1, y=2)
    assert ei.value.args == ((1, 2),)
    assert thread_netns() == home

    go = threading.Event()
    seen = []
    t_old = threading.Thread(target=lambda: (go.wait(5), seen.append(thread_netns())))
    t_old.start()
    with h.client.enter() as ns:
        assert ns is h.client and thread_netns() == h.client.inode
        with h.server.enter():
            assert thread_netns() == h.server.inode
        assert thread_netns() == h.client.inode
        t_new = threading.Thread(target=lambda: seen.append(thread_netns()))
        t_new.start()
        t_new.join()
        go.set()
        t_old.join()
    # a thread started inside starts in the namespace; one already running stays put
    assert seen == [h.client.inode, home]
    assert thread_netns() == home


def test_commands_inside(lab):
    h = lab.two_hosts(v6=False)
    code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    out = h.server.check_output([sys.executable, "-c", code], text=True)
    assert out.strip() == "['eth0', 'lo']"
    res = h.client.run_process([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert res.returncode == 3
    with pytest.raises(subprocess.CalledProcessError):
        h.client.check_output([sys.executable, "-c", "raise SystemExit(1)"])
    # a server process inside the namespace, reached over TCP from the other one
    server = h.server.popen([sys.executable, "-c", (
        "import socket; s = socket.create_server(('10.0.0.2', 0)); "
        "print(s.getsockname()[1], flush=True); c, a = s.accept(); "
        "c.sendall(a[0].encode()); c.close()")], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    with h.client.create_connection(("10.0.0.2", port)) as c:
        assert c.recv(100) == b"10.0.0.1"
    assert server.wait(5) == 0
    server.stdout.close()


def test_processes_killed_at_teardown(monkeypatch):
    monkeypatch.setattr(netlab, "TERMINATE_GRACE", 0.3)
    with Lab() as lab:
        ns = lab.netns("p")
        sleeper = ns.popen(["sleep", "60"])
        stubborn = ns.popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"])
        escaped = ns.popen(["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"],
                           stdout=subprocess.PIPE, text=True)
        escaped_pid = int(escaped.stdout.readline())
        escaped.wait(5)
        escaped.stdout.close()
        assert os.path.exists("/proc/%d" % escaped_pid)
        assert set(_netlink.pids_in_netns(ns)) >= {sleeper.pid, escaped_pid}
    assert sleeper.returncode == -signal.SIGTERM
    assert stubborn.returncode is not None
    for _ in range(100):   # not our child: reaped by init, maybe a moment later
        if not os.path.exists("/proc/%d" % escaped_pid) or \
                open("/proc/%d/stat" % escaped_pid).read().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    else:
        pytest.fail("process %d that left the group survived teardown" % escaped_pid)


def test_sockets_closed_at_teardown():
    with Lab() as lab:
        h = lab.two_hosts(v6=False)
        s = h.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv = h.server.create_server(("10.0.0.2", 0))
    assert s.fileno() == -1 and srv.fileno() == -1


# ------------------------------------------------------------------ teardown

def test_teardown_when_the_body_raises():
    names = []
    with pytest.raises(RuntimeError, match="body failed"):
        with Lab() as lab:
            h = lab.two_hosts()
            lab.bridge(h.server, ports=[])
            names = [ns.name for ns in lab.namespaces.values()]
            assert set(names) <= set(_netlink.list_netns())
            raise RuntimeError("body failed")
    assert lab.closed and names
    assert not set(names) & set(_netlink.list_netns())
    assert h.client.removed
    with pytest.raises(NetlinkNotFoundError, match="lab %s is closed" % lab.id):
        h.client.ping(h.server_ip)
    with pytest.raises(NetlinkNotFoundError):
        lab.netns("again")


def test_a_failing_teardown_step_does_not_stop_the_others(monkeypatch):
    real_remove = _netlink.remove_netns
    failed, left = [], []

    def remove_fails_once(name, missing_ok=True):
        if not failed:
            failed.append(name)
            left.append(name)
            raise NetlinkError(errno.EBUSY, "remove netns %s" % name)
        real_remove(name, missing_ok)

    monkeypatch.setattr(_netlink, "remove_netns", remove_fails_once)
    try:
        with pytest.raises(RuntimeError, match="body") as ei:
            with Lab() as lab:
                h = lab.two_hosts()
                raise RuntimeError("body")
        # the body's exception wins; the teardown failure is a note on it
        assert any("tearing down lab %s failed" % lab.id in n and failed[0] in n
                   for n in ei.value.__notes__)
        assert failed == [h.server.name]                       # newest first
        assert h.client.name not in _netlink.list_netns()      # later steps still ran
        # without a body exception, close() raises the teardown error itself
        failed.clear()
        lab2 = Lab()
        ns2 = lab2.netns("x")
        with pytest.raises(NetlinkError, match="remove netns %s" % ns2.name):
            lab2.close()
        assert lab2.closed
    finally:
        for name in left:
            real_remove(name)


def test_teardown_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with Lab() as lab:
            lab.two_hosts()
            raise KeyboardInterrupt
    assert lab.closed and not lab.namespaces


def test_ctrl_c_during_teardown_is_held_until_done(monkeypatch):
    monkeypatch.setattr(netlab, "TERMINATE_GRACE", 0.5)
    lab = Lab()
    ns = lab.netns("slow")
    stubborn = ns.popen(["sh", "-c", "trap '' TERM; echo ready; sleep 60"],
                        stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline() == "ready\n"    # SIGTERM is ignored from now on
    name = ns.name
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        lab.close()
    timer.join()
    assert stubborn.returncode == -signal.SIGKILL
    assert name not in _netlink.list_netns()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_close_is_idempotent_and_unused_lab_is_cheap():
    lab = Lab()
    lab.close()
    lab.close()
    assert lab.closed
    with Lab() as lab2:
        pass
    assert lab2.closed


def test_unclosed_lab_is_removed_with_a_warning():
    lab = Lab()
    name = lab.netns("forgotten").name
    with pytest.warns(ResourceWarning, match="was not closed"):
        del lab
        import gc
        gc.collect()
    assert name not in _netlink.list_netns()


def test_forked_child_does_not_tear_down_the_parents_lab(lab):
    ns = lab.netns("parent")
    pid = os.fork()
    if pid == 0:
        try:
            lab.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert ns.name in _netlink.list_netns() and not ns.removed
    assert ns.ping("127.0.0.1") == 1


# ------------------------------------------------------------------ clashes and errors

def test_label_clash_in_a_lab(lab):
    first = lab.netns("client")
    with pytest.raises(FileExistsError) as ei:
        lab.netns("client")
    assert isinstance(ei.value, NetlinkExistsError) and ei.value.errno == errno.EEXIST
    assert "'client'" in str(ei.value) and lab.id in str(ei.value)
    assert lab.namespaces == {"client": first}
    assert first.ping("127.0.0.1") == 1


def test_real_name_clash_leaves_nothing_half_made(lab):
    taken = "%s-client" % lab.id
    _netlink.create_netns(taken)           # someone else has our name
    try:
        with pytest.raises(FileExistsError) as ei:
            lab.netns("client")
        assert taken in str(ei.value)
        assert lab.namespaces == {}
        assert taken in _netlink.list_netns()     # theirs is untouched
        # a composite step fails as a whole
        lab.netns("server")
        with pytest.raises(FileExistsError):
            lab.two_hosts(client="other", server="client")
        assert list(lab.namespaces) == ["server"]
        assert "%s-other" % lab.id not in _netlink.list_netns()
    finally:
        _netlink.remove_netns(taken)


def test_fixed_names_clash_between_labs():
    with Lab("pbnfixed", unique=False) as one:
        ns = one.netns("client")
        assert ns.name == "pbnfixed-client"
        with Lab("pbnfixed", unique=False) as two:
            with pytest.raises(NetlinkExistsError, match="pbnfixed-client"):
                two.netns("client")
            assert two.namespaces == {}
        assert ns.name in _netlink.list_netns()        # the second lab's teardown
        assert ns.ping("127.0.0.1") == 1               # did not touch the first's


def test_veth_name_clash_leaves_nothing(lab):
    a, b = lab.netns("a"), lab.netns("b")
    lab.bridge(b, "eth0")
    before_a = [i.name for i in a.links()]
    with pytest.raises(FileExistsError) as ei:
        lab.veth(a, b, name_a="x0", name_b="eth0")
    msg = str(ei.value)
    assert "'eth0'" in msg and b.name in msg
    assert [i.name for i in a.links()] == before_a
    with pytest.raises(ValueError):
        lab.veth(a, a, name_a="same", name_b="same")
    with pytest.raises(ValueError, match="IFNAMSIZ"):
        lab.veth(a, b, name_a="a-very-long-name0")
    with pytest.raises(ValueError):
        lab.bridge(a, "bad/name")
    assert [i.name for i in a.links()] == before_a


def test_bridge_with_a_bad_port_is_rolled_back(lab):
    ns = lab.netns("sw")
    pair = lab.veth(ns, ns)
    with pytest.raises(FileNotFoundError) as ei:
        lab.bridge(ns, "br0", ports=[pair.a, "missing0"])
    assert "missing0" in str(ei.value)
    assert not ns.has_link("br0")
    assert ns.link(pair.a).master is None
    with pytest.raises(ValueError):
        lab.bridge(ns, ports=[lab.bridge(lab.netns("elsewhere"))])
    assert {i.name for i in ns.links()} == {"lo", pair.a.name, pair.b.name}


def test_two_hosts_failure_rolls_back(lab):
    with pytest.raises(NetlinkError) as ei:
        lab.two_hosts(mtu=50)               # below the veth minimum (68)
    assert ei.value.errno == errno.EINVAL and "create veth" in str(ei.value)
    assert lab.namespaces == {}
    assert not [n for n in _netlink.list_netns() if n.startswith(lab.id)]
    h = lab.two_hosts()                     # the labels are free again
    assert h.client.ping(h.server_ip) == 1


def test_errors_name_operation_object_and_namespace(lab):
    h = lab.two_hosts(v6=False)
    with pytest.raises(FileExistsError) as ei:
        h.client.add_address("eth0", "10.0.0.1/24")
    e = ei.value
    assert isinstance(e, NetlinkExistsError) and isinstance(e, BpfError)
    assert isinstance(e, OSError) and e.errno == errno.EEXIST
    assert str(e).startswith("add address 10.0.0.1/24 to eth0 in netns %s: File exists"
                             % h.client.name)
    with pytest.raises(FileNotFoundError) as ei:
        h.client.add_address("eth7", "10.0.0.5/24")
    assert "'eth7'" in str(ei.value) and "lo, eth0" in str(ei.value)
    with pytest.raises(NetlinkNotFoundError) as ei:
        h.client.ifindex("eth7")
    assert ei.value.errno == errno.ENODEV and h.client.name in str(ei.value)
    with pytest.raises(NetlinkError) as ei:
        h.client.add_route("10.9.0.0/16", via="10.7.0.1")
    assert ei.value.errno == errno.ENETUNREACH
    assert "add route 10.9.0.0/16 via 10.7.0.1 in netns" in str(ei.value)
    with pytest.raises(FileNotFoundError):
        h.client.del_route("10.8.0.0/16")
    with pytest.raises(ValueError):
        h.client.add_address("eth0", "not-an-address")
    with pytest.raises(ValueError):
        h.client.add_route("10.0.0.0/8", via="fd00::1")
    other = Lab()
    try:
        with pytest.raises(ValueError, match="another lab"):
            lab.veth(h.client, other.netns("x"))
    finally:
        other.close()


def test_bad_lab_and_label_names():
    with pytest.raises(ValueError):
        Lab("bad-prefix")
    with pytest.raises(ValueError):
        Lab("")
    with Lab() as lab:
        for label in ("", "a/b", "-x", "x" * 40, "sp ace", 7):
            with pytest.raises(ValueError):
                lab.netns(label)


def test_sysctl(lab):
    ns = lab.netns("s")
    assert ns.sysctl("net.ipv6.conf.default.accept_dad") == "0"
    assert ns.sysctl("net/ipv4/conf/lo/forwarding") == "0"
    assert ns.sysctl("net.ipv4.ip_forward", True) == "1"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_value = f.read().strip()
    assert ns.sysctl("net.ipv4.ip_forward", 0) == "0"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == host_value     # the host is untouched
    with pytest.raises(ValueError, match="net"):
        ns.sysctl("kernel.hostname", "x")
    with pytest.raises(FileNotFoundError) as ei:
        ns.sysctl("net.ipv4.no_such_knob")
    assert ns.name in str(ei.value)


# ------------------------------------------------------------------ concurrency

def test_two_labs_at_once_in_threads():
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def worker(key):
        try:
            with Lab() as lab:
                h = lab.two_hosts()            # same labels and addresses in both labs
                barrier.wait(10)
                results[key] = (lab.id, h.client.name, h.client.ping(h.server_ip, count=2),
                                tcp_roundtrip(h.client, h.server, h.server_ip6))
                barrier.wait(10)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    (id_a, ns_a, pings_a, tcp_a), (id_b, ns_b, pings_b, tcp_b) = results["a"], results["b"]
    assert id_a != id_b and ns_a != ns_b
    assert pings_a == pings_b == 2
    assert tcp_a == tcp_b == (ipaddress.ip_address("fd00::1"), b"HELLO")


def test_a_lab_in_another_process_at_the_same_time(lab):
    script = (
        "from pybpfnet.netlab import Lab\n"
        "import sys\n"
        "with Lab() as lab:\n"
        "    h = lab.two_hosts()\n"
        "    print(h.client.name, h.client.ping(h.server_ip), flush=True)\n"
        "    sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        h = lab.two_hosts()
        name, pings = child.stdout.readline().split()
        assert name != h.client.name and name.endswith("-client") and pings == "1"
        assert name in _netlink.list_netns()
        assert h.client.ping(h.server_ip) == 1
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(10) == 0
        assert name not in _netlink.list_netns()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


def test_remove_stale_only_touches_dead_owners():
    dead = "pbnstale-999999999-abcdef-client"   # pid above pid_max: never alive
    alive = "pbnstale-%d-abcdef-client" % os.getpid()
    for name in (dead, alive):
        _netlink.create_netns(name)
    try:
        with _netlink.in_netns(dead):
            orphan = subprocess.Popen(["sleep", "60"])
        assert netlab.remove_stale("pbnstale") == [dead]
        assert orphan.wait(5) == -signal.SIGKILL
        assert alive in _netlink.list_netns() and dead not in _netlink.list_netns()
    finally:
        for name in (dead, alive):
            _netlink.remove_netns(name)


# ------------------------------------------------------------------ low-level primitives

def test_netlink_primitives(lab):
    ns = lab.netns("p")
    lab.bridge(ns, "dm0")
    idx = _netlink.ifindex("dm0", ns)
    assert _netlink.ifindex("dm0", ns.name) == _netlink.ifindex("dm0", ns.path) == idx
    assert _netlink.ifname(idx, ns) == "dm0"
    assert _netlink.interfaces(ns) == [(1, "lo"), (idx, "dm0")]
    with ns.enter():
        assert _netlink.ifindex("dm0") == idx           # the calling thread's netns
    with pytest.raises(NetlinkNotFoundError, match="current netns"):
        _netlink.ifindex("dm0")
    with pytest.raises(NetlinkNotFoundError):
        _netlink.ifname(999, ns)
    with pytest.raises(NetlinkNotFoundError):
        _netlink.in_netns("pbn-no-such-namespace").__enter__()
    with _netlink.Rtnl(ns, name=ns.name) as rt:
        assert [i.name for i in rt.links()] == ["lo", "dm0"]
    assert rt.closed
    with pytest.raises(NetlinkError, match="closed"):
        rt.links()


def test_usable_from_asyncio(lab):
    import asyncio

    async def main():
        h = lab.two_hosts(v6=False)            # pyroute2 calls run off the loop's thread
        return h.client.ping(h.server_ip), [i.name for i in h.server.links()]

    assert asyncio.run(main()) == (1, ["lo", "eth0"])
