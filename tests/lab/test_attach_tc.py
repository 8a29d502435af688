"""TC attach on veth in a lab, on both kernel paths: tcx links and legacy
clsact + cls_bpf filters (forced with backend=), ingress and egress, with
ordering (tcx first/last/before/after, legacy priority). Oracles: the
kernel's tcx query, ``tc filter show`` for legacy filters, and counters of
programs that continue or stop the chain as real packets pass."""

import errno
import gc

import pytest

import pybpfnet as bn
from pybpfnet import _binding
from pybpfnet.netlab import Lab

needs_tcx = pytest.mark.min_kernel("6.6")


@pytest.fixture
def hosts():
    with Lab() as lab:
        yield lab.two_hosts(v6=False)


@pytest.fixture
def net(test_objects, bpf_object):
    return bpf_object(test_objects["attach_net"])


def traffic(hosts, count=3):
    assert hosts.client.ping(hosts.server_ip, count=count) == count


def tcx_chain(hosts, direction):
    """Program ids on the server eth0's tcx hook, in run order."""
    at = bn.AttachType.TCX_INGRESS if direction == "ingress" else bn.AttachType.TCX_EGRESS
    with hosts.server.enter():
        return _binding.prog_query(hosts.server_if.ifindex, at)[0]


def tc_filters(hosts, direction):
    """``tc filter show`` of the server's eth0 (an oracle independent of
    libbpf), one line per filter."""
    out = hosts.server.check_output(["tc", "filter", "show", "dev", "eth0", direction],
                                    text=True)
    return [ln for ln in out.splitlines() if " bpf " in ln and " handle " in ln]


def hits(net):
    return net.globals["tc_next_hits"], net.globals["tc_stop_hits"]


@needs_tcx
@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_tcx_attach_counts_and_detaches(hosts, net, direction):
    prog = net.programs["tc_next"]
    with hosts.server.enter():
        link = prog.attach_tc("eth0", direction, backend="tcx")
    with link:
        assert isinstance(link, bn.TcxLink)
        info = link.info()
        assert info.type is bn.LinkType.TCX and info.prog_id == prog.id
        assert info.ifindex == hosts.server_if.ifindex
        assert info.attach_type is getattr(bn.AttachType, "TCX_" + direction.upper())
        assert info.direction == direction
        assert tcx_chain(hosts, direction) == [prog.id]
        assert tc_filters(hosts, direction) == []        # no legacy filter made
        traffic(hosts)
        assert hits(net)[0] >= 3
        state = link.state()
        assert state.attached and state.hook == "tc " + direction and state.backend == "tcx"
    assert tcx_chain(hosts, direction) == []


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_legacy_attach_counts_and_detaches(hosts, net, direction):
    prog = net.programs["tc_next"]
    with hosts.server.enter():
        link = prog.attach_tc("eth0", direction, backend="legacy")
    with link:
        assert isinstance(link, bn.TcLink)
        filters = tc_filters(hosts, direction)
        assert len(filters) == 1
        assert "direct-action" in filters[0] and "id %d" % prog.id in filters[0]
        assert "pref %d" % link.priority in filters[0]
        info = link.info()
        assert (info.id, info.type, info.kind, info.direction) == (0, None, "tc", direction)
        assert (info.prog_id, info.priority, info.handle) == (prog.id, link.priority,
                                                              link.handle)
        assert tcx_chain(hosts, direction) == []
        assert not [i for i in bn.links() if i.prog_id == prog.id]  # no kernel link
        traffic(hosts)
        assert hits(net)[0] >= 3
        assert link.attached and link.state().backend == "legacy"
        with pytest.raises(bn.NotSupportedError, match="pinning a legacy TC filter"):
            link.pin("/sys/fs/bpf/pybpfnet-test-never")
    assert tc_filters(hosts, direction) == []


@needs_tcx
def test_auto_backend_prefers_tcx_unless_priority(hosts, net):
    prog = net.programs["tc_next"]
    with hosts.server.enter():
        with prog.attach_tc("eth0") as link:
            assert isinstance(link, bn.TcxLink)
        with prog.attach_tc("eth0", priority=7) as link:
            assert isinstance(link, bn.TcLink) and link.priority == 7
            assert "pref 7" in tc_filters(hosts, "ingress")[0]
    assert tc_filters(hosts, "ingress") == [] and tcx_chain(hosts, "ingress") == []


@needs_tcx
def test_tcx_ordering_first_last(hosts, net):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        ln = nxt.attach_tc("eth0", backend="tcx")
        ls = stop.attach_tc("eth0", backend="tcx", first=True)
    with ln, ls:
        assert tcx_chain(hosts, "ingress") == [stop.id, nxt.id]
        # (unsolicited IPv6 traffic may reach tc_next before tc_stop is in front)
        before = hits(net)
        traffic(hosts)
        # tc_stop ends the chain: tc_next sees none of the pings
        assert hits(net)[0] == before[0] and hits(net)[1] >= before[1] + 3
        with hosts.server.enter():
            listed = [(s.prog_id, s.link_id, s.position)
                      for s in bn.net_attachments("eth0")]
        assert listed == [(stop.id, ls.id, 0), (nxt.id, ln.id, 1)]
    with hosts.server.enter():
        ls = stop.attach_tc("eth0", backend="tcx")
        ln = nxt.attach_tc("eth0", backend="tcx", first=True)
    with ln, ls:
        assert tcx_chain(hosts, "ingress") == [nxt.id, stop.id]
        before = hits(net)
        traffic(hosts)
        assert hits(net)[0] >= before[0] + 3 and hits(net)[1] >= before[1] + 3
    assert tcx_chain(hosts, "ingress") == []


@needs_tcx
@pytest.mark.parametrize("anchor", ["link", "program", "id"])
def test_tcx_ordering_relative(hosts, net, anchor):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        ln = nxt.attach_tc("eth0")
        ref = {"link": ln, "program": nxt, "id": nxt.id}[anchor]
        ls = stop.attach_tc("eth0", before=ref)
        assert tcx_chain(hosts, "ingress") == [stop.id, nxt.id]
        ls.close()
        ls = stop.attach_tc("eth0", after=ref)
        assert tcx_chain(hosts, "ingress") == [nxt.id, stop.id]
        ls.close()
        ln.close()
    assert tcx_chain(hosts, "ingress") == []


@needs_tcx
def test_tcx_anchor_not_attached(hosts, net):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        with pytest.raises(bn.BpfError, match="not attached to this hook"):
            stop.attach_tc("eth0", before=nxt)
    assert tcx_chain(hosts, "ingress") == []


@needs_tcx
def test_tcx_same_program_twice(hosts, net):
    nxt = net.programs["tc_next"]
    with hosts.server.enter():
        with nxt.attach_tc("eth0"):
            with pytest.raises(bn.HookBusyError, match="already attached"):
                nxt.attach_tc("eth0")
            assert tcx_chain(hosts, "ingress") == [nxt.id]


def test_legacy_priority_orders_filters(hosts, net):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        ls = stop.attach_tc("eth0", priority=1)
        ln = nxt.attach_tc("eth0", priority=2)
    with ls, ln:
        prefs = [f.split(" pref ")[1].split()[0] for f in tc_filters(hosts, "ingress")]
        assert prefs == ["1", "2"]
        before = hits(net)
        traffic(hosts)
        assert hits(net)[0] == before[0] and hits(net)[1] >= before[1] + 3
    with hosts.server.enter():
        ln = nxt.attach_tc("eth0", priority=1)
        ls = stop.attach_tc("eth0", priority=2)
    with ls, ln:
        before = hits(net)
        traffic(hosts)
        assert hits(net)[0] >= before[0] + 3 and hits(net)[1] >= before[1] + 3
    assert tc_filters(hosts, "ingress") == []


def test_legacy_taken_slot_is_busy(hosts, net):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        held = nxt.attach_tc("eth0", priority=3, handle=1)
    with held:
        with hosts.server.enter(), pytest.raises(bn.HookBusyError) as exc:
            stop.attach_tc("eth0", priority=3, handle=1)
        assert exc.value.errno == errno.EBUSY and exc.value.prog_id == nxt.id
        assert "'tc_next' (id %d)" % nxt.id in str(exc.value)
        filters = tc_filters(hosts, "ingress")
        assert len(filters) == 1 and "id %d" % nxt.id in filters[0]
    assert tc_filters(hosts, "ingress") == []


@needs_tcx
@pytest.mark.parametrize("backend", ["tcx", "legacy"])
def test_replace_swaps_program_in_place(hosts, net, backend):
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        old = nxt.attach_tc("eth0", "egress", backend=backend)
        new = stop.attach_tc("eth0", "egress", backend=backend, replace=old)
    with new:
        assert old.closed and new.program_id == stop.id
        if backend == "tcx":
            assert tcx_chain(hosts, "egress") == [stop.id]
        else:
            filters = tc_filters(hosts, "egress")
            assert len(filters) == 1 and "id %d" % stop.id in filters[0]
            assert (new.handle, new.priority) == (old.handle, old.priority)
        before = hits(net)
        traffic(hosts)
        assert hits(net)[0] == before[0] and hits(net)[1] >= before[1] + 3
    assert tcx_chain(hosts, "egress") == [] and tc_filters(hosts, "egress") == []


def test_legacy_filter_left_by_someone_else_survives(hosts, net):
    """Closing a TcLink whose filter was replaced by another program leaves
    that program alone."""
    nxt, stop = net.programs["tc_next"], net.programs["tc_stop"]
    with hosts.server.enter():
        mine = nxt.attach_tc("eth0", priority=4, handle=1)
        # someone else swaps the filter's program behind our back
        rc = _binding.tc_attach(hosts.server_if.ifindex, 1, stop.fd, 1, 4, replace=True)[0]
        assert rc == 0
    mine.close()
    filters = tc_filters(hosts, "ingress")
    assert len(filters) == 1 and "id %d" % stop.id in filters[0]
    with hosts.server.enter():
        assert _binding.tc_detach(hosts.server_if.ifindex, 1, 1, 4) == 0


def test_forgotten_legacy_filter_warns_and_is_deleted(hosts, net):
    def forget():
        with hosts.server.enter():
            net.programs["tc_next"].attach_tc("eth0", backend="legacy", priority=9)

    with pytest.warns(ResourceWarning, match=r"link \(tc ingress eth0 .*prio 9.*\) was "
                      r"never closed"):
        forget()
        gc.collect()
    assert tc_filters(hosts, "ingress") == []
