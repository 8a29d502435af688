"""High-level XdpProgram and TcFilter on several interfaces (state
reporting, all-or-nothing attach, detach-all on close), and the system
listings programs()/maps()/links()/net_attachments()."""

import gc
import warnings

import pytest

import pybpfnet as bn
from pybpfnet import _binding
from pybpfnet.netlab import Lab


@pytest.fixture
def lab():
    """A server namespace with two veths (eth0 to client, eth1 to other)."""
    with Lab() as lab:
        hosts = lab.two_hosts(v6=False)
        other = lab.netns("other")
        lab.veth(hosts.server, other, name_a="eth1", name_b="eth0")
        hosts.server.add_address("eth1", "10.0.1.1/24")
        other.add_address("eth0", "10.0.1.2/24")
        lab.hosts, lab.other = hosts, other
        yield lab


def xdp_prog_on(ns, iface):
    with ns.enter():
        return _binding.xdp_query(ns.ifindex(iface))["prog_id"]


def test_xdp_program_on_several_interfaces(lab, test_objects):
    server = lab.hosts.server
    with server.enter():
        xdp = bn.XdpProgram(test_objects["attach_net"], "xdp_a", mode="generic")
        xdp.attach("eth0", "eth1")
    try:
        assert xdp.interfaces == ["eth0", "eth1"]
        states = xdp.attachments()
        assert [(s.iface, s.hook, s.mode, s.attached) for s in states] == [
            ("eth0", "xdp", "generic", True), ("eth1", "xdp", "generic", True)]
        assert {s.prog_id for s in states} == {xdp.program.id}
        assert all(s.link_id for s in states)
        assert xdp_prog_on(server, "eth0") == xdp_prog_on(server, "eth1") == xdp.program.id
        assert lab.hosts.client.ping(lab.hosts.server_ip, count=2) == 2
        assert lab.other.ping("10.0.1.1", count=2) == 2
        assert xdp.object.globals["xdp_a_hits"] >= 4
        # the state follows the kernel: an interface that goes away reports it
        lab.other.delete_link("eth0")
        states = {s.iface: s.attached for s in xdp.attachments()}
        assert states == {"eth0": True, "eth1": False}
        with server.enter():
            xdp.detach("eth0")
            with pytest.raises(KeyError, match="not attached to 'eth0'"):
                xdp.detach("eth0")
        assert xdp_prog_on(server, "eth0") == 0 and xdp.interfaces == ["eth1"]
    finally:
        xdp.close()
    assert xdp_prog_on(server, "eth0") == 0
    assert xdp.object.closed and xdp.links == []
    xdp.close()  # idempotent


def test_xdp_program_attach_is_all_or_nothing(lab, test_objects):
    server = lab.hosts.server
    with server.enter(), bn.XdpProgram(test_objects["attach_net"], "xdp_b") as xdp:
        with pytest.raises(bn.BpfError, match="no network interface named 'nope'"):
            xdp.attach(["eth0", "eth1", "nope"])
        assert xdp.links == []
        assert xdp_prog_on(server, "eth0") == xdp_prog_on(server, "eth1") == 0
        xdp.attach("eth0")
        with pytest.raises(ValueError, match="already attached to eth0"):
            xdp.attach("eth1", "eth0")
        assert xdp.interfaces == ["eth0"] and xdp_prog_on(server, "eth1") == 0


def test_xdp_program_replace_everywhere(lab, test_objects, bpf_object):
    obj = bpf_object(test_objects["attach_net"])
    a, b = obj.programs["xdp_a"], obj.programs["xdp_b"]
    server = lab.hosts.server
    with server.enter(), bn.XdpProgram(a) as xdp:
        assert xdp.object is None           # a borrowed program
        xdp.attach("eth0", "eth1")
        xdp.replace(b)
        assert xdp_prog_on(server, "eth0") == xdp_prog_on(server, "eth1") == b.id
        assert {s.prog_id for s in xdp.attachments()} == {b.id}
    assert xdp_prog_on(server, "eth0") == 0
    assert not obj.closed                   # borrowed: left loaded


def test_xdp_program_bundled(lab):
    server = lab.hosts.server
    with server.enter(), bn.XdpProgram.bundled("xdp_count") as xdp:
        xdp.attach("eth0")
        assert lab.hosts.client.ping(lab.hosts.server_ip, count=3) == 3
        assert xdp.object.globals["seen"] >= 3
        assert xdp.maps["per_source"]
    assert xdp_prog_on(server, "eth0") == 0


def test_xdp_program_choice_errors(test_objects):
    with pytest.raises(ValueError, match="has 2 XDP programs \\(xdp_a, xdp_b\\); pass "
                       "program=<name>"):
        bn.XdpProgram(test_objects["attach_net"])
    with pytest.raises(ValueError, match="XdpProgram needs a program of type XDP; 'tc_next' is SCHED_CLS"):
        bn.XdpProgram(test_objects["attach_net"], "tc_next")
    with pytest.raises(ValueError, match="unknown XDP mode"):
        bn.XdpProgram(test_objects["attach_net"], "xdp_a", mode="fast")


@pytest.mark.parametrize("backend", ["tcx", "legacy"])
def test_tc_filter_on_several_hooks(lab, test_objects, backend):
    if backend == "tcx" and not bn.tcx_supported():
        pytest.skip("needs tcx (Linux >= 6.6)")
    server = lab.hosts.server
    with server.enter():
        tc = bn.TcFilter(test_objects["attach_net"], "tc_next", backend=backend)
        tc.attach("eth0", "eth1")
        tc.attach("eth0", direction="egress")
    try:
        states = tc.attachments()
        assert [(s.iface, s.hook, s.backend, s.attached) for s in states] == [
            ("eth0", "tc ingress", backend, True), ("eth1", "tc ingress", backend, True),
            ("eth0", "tc egress", backend, True)]
        if backend == "legacy":
            assert all(s.priority and s.handle for s in states)
        assert lab.hosts.client.ping(lab.hosts.server_ip, count=2) == 2
        # each ping crosses eth0 ingress and (the reply) eth0 egress
        assert tc.object.globals["tc_next_hits"] >= 4
        with server.enter():
            tc.detach("eth0", "egress")
            listed = {(s.iface, s.hook) for s in bn.net_attachments()}
        if backend == "tcx":
            assert listed == {("eth0", "tc ingress"), ("eth1", "tc ingress")}
        assert [s.hook for s in tc.attachments()] == ["tc ingress", "tc ingress"]
    finally:
        tc.close()
    with server.enter():
        assert bn.net_attachments() == []
    out = server.check_output(["tc", "filter", "show", "dev", "eth0", "ingress"], text=True)
    assert "bpf" not in out


def test_forgotten_xdp_program_warns_and_detaches(lab, test_objects):
    server = lab.hosts.server

    def forget():
        with server.enter():
            bn.XdpProgram(test_objects["attach_net"], "xdp_a").attach("eth0")

    with pytest.warns(ResourceWarning, match="XdpProgram was never closed"):
        forget()
        gc.collect()
    assert xdp_prog_on(server, "eth0") == 0


def test_listings_show_what_is_attached(lab, test_objects, bpf_object):
    obj = bpf_object(test_objects["attach_net"])
    a, nxt = obj.programs["xdp_a"], obj.programs["tc_next"]
    server = lab.hosts.server
    with server.enter():
        xl = a.attach_xdp("eth0", mode="native")
        tl = nxt.attach_tc("eth1", "egress", backend="tcx" if bn.tcx_supported()
                           else "legacy")
    with xl, tl:
        progs = {p.id: p for p in bn.programs()}
        assert progs[a.id].name == "xdp_a" and progs[a.id].type is bn.ProgramType.XDP
        assert progs[nxt.id].type is bn.ProgramType.SCHED_CLS
        assert len(progs[a.id].tag) == 16
        maps = {m.id: m for m in bn.maps()}
        assert set(progs[a.id].map_ids) <= set(maps)
        assert any(m.name.endswith(".bss") for m in maps.values()
                   if m.id in progs[a.id].map_ids)
        links = {i.id: i for i in bn.links()}
        assert links[xl.id].type is bn.LinkType.XDP and links[xl.id].prog_id == a.id
        assert links[xl.id].ifindex == server.ifindex("eth0")
        with server.enter():
            net = bn.net_attachments()
        assert [(s.iface, s.hook, s.prog_id, s.mode) for s in net if s.hook == "xdp"] == [
            ("eth0", "xdp", a.id, "native")]
        if isinstance(tl, bn.TcxLink):
            assert links[tl.id].type is bn.LinkType.TCX
            assert links[tl.id].attach_type is bn.AttachType.TCX_EGRESS
            assert [(s.iface, s.hook, s.prog_id, s.link_id) for s in net
                    if s.hook != "xdp"] == [("eth1", "tc egress", nxt.id, tl.id)]
        with server.enter():
            assert [s.iface for s in bn.net_attachments("eth1")] == (
                ["eth1"] if isinstance(tl, bn.TcxLink) else [])
        link_ids = (xl.id, getattr(tl, "id", None))
    assert not [i for i in bn.links() if i.id in link_ids]


def test_listings_skip_nothing_and_never_leak(test_objects, bpf_object):
    obj = bpf_object(test_objects["attach_net"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = [p.id for p in bn.programs()]
    assert ids == sorted(ids)
    assert {p.id for p in obj.programs.values()} <= set(ids)
