"""XDP attach on veth in a lab: native and generic, link and netlink
backends, atomic replace, the busy-interface error, pinning. The kernel is
the oracle: bpf_xdp_query for what runs where, link info, and counters that
grow when real packets cross the veth."""

import errno
import os
import secrets

import pytest

import pybpfnet as bn
from pybpfnet import _binding
from pybpfnet.netlab import Lab


@pytest.fixture
def hosts():
    with Lab() as lab:
        yield lab.two_hosts(v6=False)


@pytest.fixture
def net(test_objects, bpf_object):
    return bpf_object(test_objects["attach_net"])


def xdp_state(hosts):
    """What the server's eth0 runs: bpf_xdp_query's answer."""
    with hosts.server.enter():
        return _binding.xdp_query(hosts.server_if.ifindex)


def traffic(hosts, count=3):
    assert hosts.client.ping(hosts.server_ip, count=count) == count


def our_links():
    return {i.id: i for i in bn.links()}


def links_running(*progs):
    """Ids of the kernel links running one of ``progs`` (other tests may
    run concurrently on this machine: look only at our programs)."""
    ids = {p.id for p in progs}
    return {i.id for i in bn.links() if i.prog_id in ids}


@pytest.mark.parametrize("mode, field, reported", [
    ("native", "drv_prog_id", "native"),
    ("generic", "skb_prog_id", "generic"),
    ("auto", "drv_prog_id", "native"),   # veth has native XDP
])
def test_attach_mode_and_detach(hosts, net, mode, field, reported):
    prog = net.programs["xdp_a"]
    with hosts.server.enter():
        link = prog.attach_xdp("eth0", mode=mode)
    with link:
        assert isinstance(link, bn.XdpLink)
        q = xdp_state(hosts)
        assert q[field] == q["prog_id"] == prog.id
        info = link.info()
        assert info.type is bn.LinkType.XDP and info.prog_id == prog.id
        assert info.ifindex == hosts.server_if.ifindex and info.mode == reported
        assert link.mode == reported and link.attached
        assert our_links()[info.id].prog_id == prog.id
        traffic(hosts)
        assert net.globals["xdp_a_hits"] >= 3
        link_id = info.id
    assert xdp_state(hosts)["prog_id"] == 0
    assert link_id not in our_links()
    assert not link.attached and link.closed


def test_attach_by_ifindex(hosts, net):
    with hosts.server.enter():
        with net.programs["xdp_a"].attach_xdp(hosts.server_if.ifindex) as link:
            assert link.ifname == "eth0"
            assert xdp_state(hosts)["prog_id"] == net.programs["xdp_a"].id


def test_replace_link_swaps_atomically(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        old = a.attach_xdp("eth0", mode="native")
        link_id = old.id
        new = b.attach_xdp("eth0", replace=old)
    with new:
        # the same kernel link now runs b; the old handle handed it over
        assert old.closed and new.id == link_id
        assert xdp_state(hosts)["drv_prog_id"] == b.id
        traffic(hosts)
        a_hits = net.globals["xdp_a_hits"]
        traffic(hosts)
        assert net.globals["xdp_a_hits"] == a_hits
        assert net.globals["xdp_b_hits"] >= 6
        old.close()  # idempotent, and detaches nothing
        assert xdp_state(hosts)["prog_id"] == b.id
    assert xdp_state(hosts)["prog_id"] == 0


def test_update_with_expected_program(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        link = a.attach_xdp("eth0")
    with link:
        with pytest.raises(bn.BpfError, match="no longer 'xdp_b'") as exc:
            link.update(a, expected=b)
        assert exc.value.errno == errno.ESTALE
        assert xdp_state(hosts)["prog_id"] == a.id
        link.update(b, expected=a)
        assert xdp_state(hosts)["prog_id"] == b.id == link.program_id
        with pytest.raises(bn.BpfError, match="SCHED_CLS program") as exc:
            link.update(net.programs["tc_next"])
        assert exc.value.errno == errno.EINVAL
        assert xdp_state(hosts)["prog_id"] == b.id


def test_netlink_backend_and_compare_and_swap(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        link = a.attach_xdp("eth0", mode="generic", backend="netlink")
    try:
        assert isinstance(link, bn.XdpNetlinkLink)
        assert links_running(a) == set()          # no kernel link object
        q = xdp_state(hosts)
        assert q["skb_prog_id"] == a.id and link.mode == "generic"
        assert link.info().id == 0 and link.info().prog_id == a.id
        with pytest.raises(bn.NotSupportedError, match="pinning a netlink XDP"):
            link.pin("/sys/fs/bpf/pybpfnet-test-never")
        with hosts.server.enter():
            swapped = b.attach_xdp("eth0", replace=a)   # compare-and-swap on a
        with swapped:
            assert xdp_state(hosts)["skb_prog_id"] == b.id
            a_hits = net.globals["xdp_a_hits"]
            traffic(hosts)
            assert net.globals["xdp_b_hits"] >= 3 and net.globals["xdp_a_hits"] == a_hits
            link.close()  # a is no longer attached: closing it must not detach b
            assert xdp_state(hosts)["skb_prog_id"] == b.id
        assert xdp_state(hosts)["prog_id"] == 0
    finally:
        link.close()


def test_netlink_link_update(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        link = a.attach_xdp("eth0", mode="native", backend="netlink")
    with link:
        link.update(b)
        q = xdp_state(hosts)
        assert q["drv_prog_id"] == b.id and link.program_id == b.id
    assert xdp_state(hosts)["prog_id"] == 0


@pytest.mark.parametrize("backend", ["link", "netlink"])
def test_second_program_names_the_holder(hosts, net, backend):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        holder = a.attach_xdp("eth0", backend=backend)
    with holder:
        links_before = links_running(a, b)
        for mode in ("auto", "native", "generic"):
            with hosts.server.enter(), pytest.raises(bn.HookBusyError) as exc:
                b.attach_xdp("eth0", mode=mode)
            e = exc.value
            assert e.errno == errno.EBUSY and e.prog_id == a.id
            assert "'xdp_a' (id %d)" % a.id in str(e)
            if backend == "link":
                assert e.link_id == holder.id and "link id %d" % holder.id in str(e)
            else:
                assert e.link_id is None and "netlink" in str(e)
            # nothing changed, nothing half-attached
            assert xdp_state(hosts)["prog_id"] == a.id
            assert links_running(a, b) == links_before


def test_replace_expected_program_mismatch(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        with pytest.raises(bn.BpfError, match="nothing to replace") as exc:
            a.attach_xdp("eth0", replace=b)
        assert exc.value.errno == errno.ENOENT
        with a.attach_xdp("eth0"):
            with pytest.raises(bn.BpfError, match="expected program 'xdp_b'") as exc:
                b.attach_xdp("eth0", replace=b)
            assert exc.value.errno == errno.ESTALE
            with pytest.raises(bn.BpfError, match="keeps the mode"):
                b.attach_xdp("eth0", mode="generic", replace=True)
            assert xdp_state(hosts)["drv_prog_id"] == a.id
    assert xdp_state(hosts)["prog_id"] == 0


def test_replace_true_takes_over_a_foreign_link(hosts, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with hosts.server.enter():
        first = a.attach_xdp("eth0")
        second = b.attach_xdp("eth0", replace=True)
    assert second.id == first.id and xdp_state(hosts)["prog_id"] == b.id
    second.close()                 # first still references the link
    assert xdp_state(hosts)["prog_id"] == b.id
    first.close()
    assert xdp_state(hosts)["prog_id"] == 0


def test_pinned_link_outlives_its_handle(hosts, net):
    prog = net.programs["xdp_a"]
    path = "/sys/fs/bpf/pybpfnet-test-%s" % secrets.token_hex(4)
    with hosts.server.enter():
        link = prog.attach_xdp("eth0")
    try:
        link_id = link.id
        link.pin(path)
        assert link.pinned == path
        link.close()
        assert xdp_state(hosts)["prog_id"] == prog.id
        traffic(hosts)
        assert net.globals["xdp_a_hits"] >= 3
        reopened = bn.Link.from_pinned(path)
        with reopened:
            assert isinstance(reopened, bn.XdpLink)
            assert reopened.id == link_id and reopened.program_id == prog.id
            reopened.unpin()
            assert not os.path.exists(path)
        assert xdp_state(hosts)["prog_id"] == 0
        assert link_id not in our_links()
    finally:
        link.close()
        if os.path.exists(path):
            os.unlink(path)


def test_detach_forces_even_when_pinned(hosts, net):
    path = "/sys/fs/bpf/pybpfnet-test-%s" % secrets.token_hex(4)
    with hosts.server.enter():
        link = net.programs["xdp_a"].attach_xdp("eth0")
    try:
        link.pin(path)
        link.detach()
        assert link.closed and xdp_state(hosts)["prog_id"] == 0
        with bn.Link.from_pinned(path) as pinned:
            assert not pinned.attached and pinned.info().ifindex == 0
            pinned.unpin()
    finally:
        link.close()
        if os.path.exists(path):
            os.unlink(path)


def test_close_from_another_namespace(hosts, net):
    with hosts.server.enter():
        link = net.programs["xdp_a"].attach_xdp("eth0", backend="netlink")
    # closed from the test's own namespace: the detach happens in the lab's
    link.close()
    assert xdp_state(hosts)["prog_id"] == 0


def test_interface_removed_under_the_link(hosts, net):
    with hosts.server.enter():
        link = net.programs["xdp_a"].attach_xdp("eth0")
    with link:
        hosts.server.delete_link("eth0")
        assert not link.attached and link.mode is None
