"""Bad input to attach: a missing interface, an unknown mode, direction or
backend, a program of the wrong type for the hook, contradictory options,
a closed program. Each is a clear error, and the system state is checked
after each failure: nothing attached, no link, no filter, no qdisc made."""

import errno
import socket

import pytest

import pybpfnet as bn
from pybpfnet import _binding
from pybpfnet.netlab import Lab


@pytest.fixture
def ns():
    with Lab() as lab:
        ns = lab.netns("solo")
        lab.veth(ns, ns, name_a="veth0", name_b="veth1")
        yield ns


@pytest.fixture
def net(test_objects, bpf_object):
    return bpf_object(test_objects["attach_net"])


def assert_nothing_attached(ns, net):
    """No XDP, tcx, cls_bpf filter or clsact qdisc on the lab's veths, and
    no kernel link running one of the test programs."""
    prog_ids = {p.id for p in net.programs.values()}
    assert not [i for i in bn.links() if i.prog_id in prog_ids]
    with ns.enter():
        assert bn.net_attachments() == []
        for name in ("veth0", "veth1"):
            assert _binding.xdp_query(ns.ifindex(name))["prog_id"] == 0
    qdiscs = ns.check_output(["tc", "qdisc", "show"], text=True)
    assert "clsact" not in qdiscs
    filters = ns.check_output(["tc", "filter", "show", "dev", "veth0", "ingress"], text=True)
    assert filters.strip() == ""


ATTACHES = [
    ("xdp", lambda net, iface: net.programs["xdp_a"].attach_xdp(iface)),
    ("xdp-netlink", lambda net, iface: net.programs["xdp_a"].attach_xdp(
        iface, backend="netlink")),
    ("tcx", lambda net, iface: net.programs["tc_next"].attach_tc(iface, backend="tcx")),
    ("tc-legacy", lambda net, iface: net.programs["tc_next"].attach_tc(
        iface, "egress", backend="legacy")),
]


@pytest.mark.parametrize("attach", [a for _, a in ATTACHES], ids=[n for n, _ in ATTACHES])
def test_missing_interface(ns, net, attach):
    with ns.enter():
        with pytest.raises(bn.BpfError, match=r"no network interface named 'nope0' in "
                           r"this network namespace \(there are: lo, veth0, veth1\)") as e:
            attach(net, "nope0")
        assert e.value.errno == errno.ENODEV
        with pytest.raises(bn.BpfError, match="no network interface with ifindex 999"):
            attach(net, 999)
        with pytest.raises(TypeError, match="an interface is a name"):
            attach(net, 1.5)
    assert_nothing_attached(ns, net)


def test_interface_of_another_namespace(ns, net):
    # veth0 exists in the lab namespace, not in the test's own
    if "veth0" in {n for _, n in socket.if_nameindex()}:
        pytest.skip("the host has a veth0")
    with pytest.raises(bn.BpfError, match="no network interface named 'veth0'"):
        net.programs["xdp_a"].attach_xdp("veth0")
    assert_nothing_attached(ns, net)


@pytest.mark.parametrize("call, match", [
    (lambda p: p["xdp_a"].attach_xdp("veth0", mode="turbo"),
     r"unknown XDP mode 'turbo'; expected one of 'auto', 'generic', 'native'"),
    (lambda p: p["xdp_a"].attach_xdp("veth0", mode="NATIVE"), "unknown XDP mode"),
    (lambda p: p["xdp_a"].attach_xdp("veth0", backend="ioctl"), "unknown XDP backend"),
    (lambda p: p["tc_next"].attach_tc("veth0", "sideways"), "unknown TC direction"),
    (lambda p: p["tc_next"].attach_tc("veth0", backend="bpfilter"), "unknown TC backend"),
    (lambda p: p["tc_next"].attach_tc("veth0", priority=0), "priority must be an int"),
    (lambda p: p["tc_next"].attach_tc("veth0", priority=70000), "priority must be an int"),
    (lambda p: p["tc_next"].attach_tc("veth0", backend="tcx", priority=3),
     "priority applies to legacy tc filters"),
    (lambda p: p["tc_next"].attach_tc("veth0", backend="legacy", first=True),
     "first orders tcx links"),
    (lambda p: p["tc_next"].attach_tc("veth0", first=True, priority=2), "pick one"),
    (lambda p: p["tc_next"].attach_tc("veth0", first=True, last=True),
     "at most one of first, last, before, after"),
])
def test_bad_options(ns, net, call, match):
    with ns.enter(), pytest.raises(ValueError, match=match):
        call(net.programs)
    assert_nothing_attached(ns, net)


@pytest.mark.parametrize("call, match", [
    (lambda p: p["xdp_a"].attach_tc("veth0"),
     r"attach program 'xdp_a' to TC: it is a program of type XDP; TC takes SCHED_CLS programs"),
    (lambda p: p["xdp_a"].attach_tc("veth0", backend="legacy"), "it is a program of type XDP"),
    (lambda p: p["tc_next"].attach_xdp("veth0"),
     r"attach program 'tc_next' to XDP: it is a program of type SCHED_CLS; XDP takes XDP"),
    (lambda p: p["tc_next"].attach_raw_tracepoint("sys_enter"),
     "it is a program of type SCHED_CLS; a raw tracepoint takes RAW_TRACEPOINT"),
    (lambda p: p["xdp_a"].attach_tracepoint("syscalls", "sys_enter_getpid"),
     "it is a program of type XDP; a tracepoint takes TRACEPOINT"),
    (lambda p: p["xdp_a"].attach_trace(), "it is a program of type XDP"),
    (lambda p: p["xdp_a"].attach_cgroup("/sys/fs/cgroup/unified"), "it is a program of type XDP"),
])
def test_wrong_program_type(ns, net, call, match):
    with ns.enter(), pytest.raises(bn.BpfError, match=match) as e:
        call(net.programs)
    assert e.value.errno == errno.EINVAL
    assert_nothing_attached(ns, net)


def test_closed_program(ns, test_objects):
    obj = bn.load(test_objects["attach_net"])
    prog = obj.programs["xdp_a"]
    obj.close()
    with ns.enter(), pytest.raises(ValueError, match="program 'xdp_a' is closed"):
        prog.attach_xdp("veth0")
    with ns.enter():
        assert _binding.xdp_query(ns.ifindex("veth0"))["prog_id"] == 0


def test_busy_interface_leaves_the_holder_alone(ns, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with ns.enter():
        holder = a.attach_xdp("veth0", mode="generic")
        with holder:
            with pytest.raises(bn.HookBusyError, match="program 'xdp_a' \\(id %d\\) in "
                               "generic mode" % a.id):
                b.attach_xdp("veth0")
            with pytest.raises(bn.HookBusyError):
                b.attach_xdp("veth0", backend="netlink")
            assert _binding.xdp_query(ns.ifindex("veth0"))["skb_prog_id"] == a.id
            assert holder.attached
    assert_nothing_attached(ns, net)


def test_replace_with_a_foreign_link_object(ns, net):
    a, b = net.programs["xdp_a"], net.programs["xdp_b"]
    with ns.enter():
        with a.attach_xdp("veth0") as on0, a.attach_xdp("veth1") as on1:
            with pytest.raises(ValueError, match="replace= must be the open XDP link "
                               "of veth1"):
                b.attach_xdp("veth1", replace=on0)
            with pytest.raises(ValueError, match="replace= must be an open TC link"):
                net.programs["tc_next"].attach_tc("veth0", replace=on0)
            assert on0.program_id == on1.program_id == a.id
    assert_nothing_attached(ns, net)
