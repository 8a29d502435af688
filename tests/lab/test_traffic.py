"""The live-frames traffic generator on a veth between two lab namespaces.

The receiver is the oracle: the bundled xdp_count program, attached in
native mode to the far end and dropping every frame, counts frames per IPv4
source address (per_source), so every packet of a set is counted on its
own. Exact counts hold because the generator runs on one sender CPU or at
a modest rate (a single-queue veth's receive ring is never overrun)."""

import errno
import os
import struct
import time

import pytest

import pybpfnet as bn
from pybpfnet import _traffic
from pybpfnet.netlab import Lab


def inet_sum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp_frame(src_last, sport=1024, payload=18, udp_csum=False):
    """Ethernet/IPv4/UDP from 10.0.0.<src_last> to 10.0.0.2, checksums set."""
    src, dst = bytes([10, 0, 0, src_last]), bytes([10, 0, 0, 2])
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 0, 0, 64, 17, 0,
                               src, dst))
    ip[10:12] = struct.pack("!H", ~inet_sum(bytes(ip)) & 0xFFFF)
    udp = bytearray(struct.pack("!HHHH", sport, 9, 8 + payload, 0) + bytes(payload))
    if udp_csum:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
        udp[6:8] = struct.pack("!H", (~inet_sum(pseudo + bytes(udp)) & 0xFFFF) or 0xFFFF)
    return eth + bytes(ip) + bytes(udp)


class Net:
    def __init__(self, lab):
        self.lab = lab
        self.hosts = lab.two_hosts(v6=False)
        self.client, self.server = self.hosts.client, self.hosts.server
        spec = bn.open_bundled("xdp_count")
        spec.globals["verdict"] = int(bn.XdpAction.DROP)
        self.rx = spec.load()
        with self.server.enter():
            self.link = self.rx.programs["xdp_count"].attach_xdp("eth0", mode="native")

    def received(self):
        """{last octet of the IPv4 source: frames} counted by the receiver
        (waits until the count stops moving: frames may still be queued)."""
        last = None
        while True:
            got = {k.addr >> 24: v.packets for k, v in self.rx.maps["per_source"].items()
                   if k.addr}
            if got == last:
                return got
            last = got
            time.sleep(0.02)

    def reset(self):
        self.rx.maps["per_source"].clear()

    def close(self):
        self.link.close()
        self.rx.close()


@pytest.fixture
def net():
    with Lab() as lab:
        n = Net(lab)
        try:
            yield n
        finally:
            n.close()


def gen_links(g):
    return [i for i in bn.links() if i.prog_id == g.program.id]


# -- delivery -------------------------------------------------------------------

def test_live_frames_supported_here():
    # Linux >= 5.18 has them: a False here is a failure, not a skip
    major, minor = map(int, os.uname().release.split(".")[:2])
    assert bn.live_frames_supported() is ((major, minor) >= (5, 18))


def test_exact_count_one_packet(net):
    with bn.TrafficGenerator("eth0", udp_frame(1), count=10_000, netns=net.client) as g:
        r = g.run()
    assert r.frames == 10_000 and r.per_packet == (10_000,)
    assert r.bytes == 10_000 * 60 and r.elapsed > 0 and r.pps > 0
    assert list(r.per_cpu.values()) == [10_000]
    assert net.received() == {1: 10_000}


def test_exact_count_packet_set(net):
    packets = [udp_frame(1), udp_frame(3, payload=100), udp_frame(4, payload=1000)]
    with bn.TrafficGenerator("eth0", packets, count=30_001, netns=net.client) as g:
        r = g.run()
        assert r.per_packet == (10_001, 10_000, 10_000) and r.frames == 30_001
        assert r.bytes == 10_001 * 60 + 10_000 * 142 + 10_000 * 1042
        assert net.received() == {1: 10_001, 3: 10_000, 4: 10_000}
        net.reset()
        r = g.run()                     # a generator runs again, from zero
        assert r.frames == 30_001
        assert net.received() == {1: 10_001, 3: 10_000, 4: 10_000}


def test_interface_of_the_calling_thread(net):
    """Without netns=, the interface is looked up where the generator is
    made; run() may be called from anywhere."""
    with net.client.enter():
        g = bn.TrafficGenerator(net.hosts.client_if, udp_frame(1), count=5_000)
    with g:
        assert g.ifname == "eth0" and g.ifindex == net.hosts.client_if.ifindex
        r = g.run()
    assert r.frames == 5_000 and net.received() == {1: 5_000}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_two_cpus(net):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    # 200 kpps in all: two senders share the veth's single receive ring
    with bn.TrafficGenerator("eth0", [udp_frame(1), udp_frame(3)], count=20_000,
                             rate_pps=200_000, cpus=2, netns=net.client) as g:
        r = g.run()
    assert r.per_cpu == {cpus[0]: 10_000, cpus[1]: 10_000}
    assert r.per_packet == (10_000, 10_000)
    assert net.received() == {1: 10_000, 3: 10_000}


def test_rate(net):
    with bn.TrafficGenerator("eth0", [udp_frame(1), udp_frame(3)], rate_pps=50_000,
                             duration=0.5, netns=net.client) as g:
        r = g.run()
    assert r.rate_pps == 50_000
    assert 0.9 * 50_000 <= r.pps <= 1.1 * 50_000, r
    assert 0.45 <= r.elapsed < 0.6
    got = net.received()
    assert (got[1], got[3]) == r.per_packet


def test_rate_and_count(net):
    with bn.TrafficGenerator("eth0", udp_frame(1), rate_pps=100_000, count=30_000,
                             netns=net.client) as g:
        r = g.run()
    assert r.frames == 30_000
    assert 0.9 * 100_000 <= r.pps <= 1.1 * 100_000, r
    assert net.received() == {1: 30_000}


def test_duration_unpaced(net):
    with bn.TrafficGenerator("eth0", udp_frame(1), duration=0.2, netns=net.client) as g:
        r = g.run()
    assert 0.2 <= r.elapsed < 0.4 and r.frames > 10_000
    # Full speed for 0.2 s: the sender outruns the receiver's NAPI (deferred
    # to ksoftirqd when the CPU is busy) and the veth's 256-frame ring
    # overflows by a few percent (3.3% seen in CI-like runs), so delivery is
    # bounded, not exact; exact counts are checked by the paced/counted tests.
    got = net.received()[1]
    assert 0.9 * r.frames <= got <= r.frames


def test_start_stop_in_background(net):
    with bn.TrafficGenerator("eth0", udp_frame(1), rate_pps=20_000,
                             netns=net.client) as g:
        assert g.start() is g and g.running
        with pytest.raises(RuntimeError, match="already running"):
            g.start()
        assert g.wait(timeout=0.1) is None       # no count, no duration: still going
        r = g.stop()
        assert not g.running and g.wait() is r
    assert r.frames > 0 and net.received() == {1: r.frames}


def test_redirect_from_another_ingress(net):
    """ingress= names where the frames appear to arrive; the program then
    bpf_redirect()s them out of iface."""
    with bn.TrafficGenerator("eth0", udp_frame(1), count=2_000, ingress="lo",
                             netns=net.client) as g:
        assert g.program.test_run(udp_frame(1)).verdict is bn.XdpAction.REDIRECT
        r = g.run()
    assert r.frames == 2_000 and net.received() == {1: 2_000}


def test_without_dispatcher_anchor(net, monkeypatch):
    """Without the anchor (no CAP_SYS_ADMIN) every call costs more, counts
    stay exact."""
    def refuse(prog_fd):
        raise PermissionError(errno.EPERM, "no")
    monkeypatch.setattr(_traffic, "_Anchor", refuse)
    with bn.TrafficGenerator("eth0", [udp_frame(1), udp_frame(3)], count=4_000,
                             netns=net.client) as g:
        assert g._anchor is None and not gen_links(g)
        r = g.run()
    assert r.frames == 4_000 and net.received() == {1: 2_000, 3: 2_000}


# -- sweep: a field rewritten per frame -----------------------------------------------

def test_sweep_source_address(net):
    """Sweep the IPv4 source over 10.0.0.1..4 (header checksum updated): the
    receiver sees four sources, a quarter of the frames each."""
    sweep = bn.Sweep(offset=26, size=4, count=4, checksums=(24,))
    with bn.TrafficGenerator("eth0", udp_frame(1), count=4_000, sweep=sweep,
                             netns=net.client) as g:
        r = g.run()
        assert r.frames == 4_000
        assert net.received() == {1: 1_000, 2: 1_000, 3: 1_000, 4: 1_000}
        net.reset()
        g.run()                         # each run restarts the sequence
        assert net.received() == {1: 1_000, 2: 1_000, 3: 1_000, 4: 1_000}


@pytest.mark.parametrize("udp_csum", [True, False])
def test_sweep_rewrites_and_checksums(net, udp_csum):
    """The rewritten frames, read back through a plain test run: values in
    turn, IPv4 and UDP checksums still valid (a UDP checksum of 0 stays 0)."""
    base = udp_frame(1, sport=5000, udp_csum=udp_csum)
    sweep = bn.Sweep(offset=34, count=3, checksums=(40,))       # UDP source port
    with bn.TrafficGenerator("eth0", base, count=1, sweep=sweep, netns=net.client) as g:
        ports = []
        for _ in range(7):
            out = g.program.test_run(base).data
            ports.append(struct.unpack_from("!H", out, 34)[0])
            assert inet_sum(out[14:34]) == 0xFFFF                 # IPv4 header
            udp = out[34:]
            if udp_csum:
                pseudo = out[26:34] + struct.pack("!BBH", 0, 17, len(udp))
                assert inet_sum(pseudo + udp) == 0xFFFF           # UDP over the pseudo-header
            else:
                assert udp[6:8] == b"\0\0"
    assert ports == [5000, 5001, 5002, 5000, 5001, 5002, 5000]


def test_sweep_start_and_wide_field(net):
    base = udp_frame(1)
    sweep = bn.Sweep(offset=30, size=4, count=2, start=0x0A000005, checksums=[24])
    with bn.TrafficGenerator("eth0", base, count=1, sweep=sweep, netns=net.client) as g:
        outs = [g.program.test_run(base).data for _ in range(3)]
    assert [o[30:34] for o in outs] == [bytes([10, 0, 0, 5]), bytes([10, 0, 0, 6]),
                                        bytes([10, 0, 0, 5])]
    assert all(inet_sum(o[14:34]) == 0xFFFF for o in outs)


# -- errors ---------------------------------------------------------------------------

def test_bad_input(net):
    ns = net.client
    frame = udp_frame(1)
    with pytest.raises(bn.BpfError) as e:
        bn.TrafficGenerator("eth9", frame, netns=ns)
    assert e.value.errno == errno.ENODEV and "eth9" in str(e.value) and "eth0" in str(e.value)
    with pytest.raises(ValueError, match="empty"):
        bn.TrafficGenerator("eth0", [], netns=ns)
    with pytest.raises(ValueError, match="packet 1 is 10 bytes.*Ethernet header"):
        bn.TrafficGenerator("eth0", [frame, bytes(10)], netns=ns)
    mtu = net.hosts.client_if.mtu
    with pytest.raises(ValueError, match="longer than eth0 allows.*MTU %d" % mtu):
        bn.TrafficGenerator("eth0", frame + bytes(mtu + 14 - len(frame) + 1), netns=ns)
    # a VLAN-tagged frame may be 4 bytes longer
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    bn.TrafficGenerator("eth0", tagged + bytes(mtu + 18 - len(tagged)), count=1,
                        netns=ns).close()
    with pytest.raises(FileNotFoundError, match="pbn-no-such-netns"):
        bn.TrafficGenerator("eth0", frame, netns="pbn-no-such-netns")
    # (argument checks that need no interface: tests/unit/test_traffic_args.py)
    # loopback has no XDP transmit: the frames would vanish
    with pytest.raises(bn.NotSupportedError, match="not an Ethernet device"):
        bn.TrafficGenerator("lo", frame, netns=ns)


def test_frame_longer_than_a_page():
    with Lab() as lab:
        hosts = lab.two_hosts(v6=False, mtu=9000)
        eth = bytes.fromhex("020000000002" "020000000001" "0800")
        limit = _traffic._live_frame_limit()
        assert 1518 < limit < os.sysconf("SC_PAGE_SIZE")
        bn.TrafficGenerator("eth0", eth + bytes(limit - 14), netns=hosts.client).close()
        with pytest.raises(ValueError, match="fit one page, at most %d" % limit):
            bn.TrafficGenerator("eth0", eth + bytes(limit - 13), netns=hosts.client)


def test_kernel_without_live_frames(net, monkeypatch):
    # what a kernel before 5.18 answers to the probe
    monkeypatch.setattr(_traffic, "_probe_result", False)
    with pytest.raises(bn.NotSupportedError) as e:
        bn.TrafficGenerator("eth0", udp_frame(1), netns=net.client)
    assert e.value.min_kernel == "5.18" and "live frames" in str(e.value)


def test_closed(net):
    g = bn.TrafficGenerator("eth0", udp_frame(1), count=10, netns=net.client)
    g.close()
    g.close()
    assert g.closed and "closed" in repr(g)
    with pytest.raises(ValueError, match="closed"):
        g.run()


# -- cleanup --------------------------------------------------------------------------

def test_cleanup(net):
    """The anchor (a generic-XDP link in a private namespace) and the
    program live exactly as long as the generator."""
    namespaces = set(os.listdir("/run/netns"))
    g = bn.TrafficGenerator("eth0", udp_frame(1), count=1_000, netns=net.client)
    prog_id = g.program.id
    anchors = gen_links(g)
    assert len(anchors) == 1 and anchors[0].kind == "xdp"
    assert set(os.listdir("/run/netns")) == namespaces       # nothing named
    g.run()
    g.close()
    assert not [i for i in bn.links() if i.prog_id == prog_id]
    assert prog_id not in {p.id for p in bn.programs()}
    # a generator closed while running stops its senders first
    g = bn.TrafficGenerator("eth0", udp_frame(1), rate_pps=10_000, netns=net.client)
    g.start()
    g.close()
    assert not g.running
