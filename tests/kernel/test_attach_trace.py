"""Tracing attach against the real kernel: a tracepoint, a raw tracepoint
and a tp_btf program counting real events of this process; BPF trampolines
(fentry/fexit) reported as not supported where the kernel refuses them; and
the Link lifetime rules (close, pin/unpin, disconnect, detach, update, the
ResourceWarning of a forgotten link) shown on tracing links."""

import errno
import gc
import os
import secrets

import pytest

import pybpfnet as bn
from pybpfnet import _binding, _fs


@pytest.fixture
def trace(test_objects, bpf_object):
    spec = bn.open(test_objects["attach_trace"])
    spec.globals["target_tgid"] = os.getpid()
    return bpf_object(spec)


@pytest.fixture
def pin_path():
    path = "/sys/fs/bpf/pybpfnet-test-%s" % secrets.token_hex(4)
    yield path
    if os.path.exists(path):
        os.unlink(path)


def getpids(n):
    for _ in range(n):
        os.getpid()   # a real getpid(2) each time (glibc >= 2.25 caches nothing)


def link_ids():
    return {i.id for i in bn.links()}


def test_tracepoint_counts_getpid(trace):
    prog = trace.programs["tp_getpid"]
    with prog.attach_tracepoint("syscalls", "sys_enter_getpid") as link:
        # tracefs is mounted now (it was not on a fresh machine)
        assert _fs.mount_point_of(_fs.TRACEFS, "tracefs")
        getpids(50)
        assert trace.globals["tp_hits"] >= 50
        info = link.info()
        assert info.type is bn.LinkType.PERF_EVENT and info.prog_id == prog.id
        assert info.name == "sys_enter_getpid"
        link_id = info.id
    assert link_id not in link_ids()
    seen = trace.globals["tp_hits"]
    getpids(10)
    assert trace.globals["tp_hits"] == seen


def test_raw_tracepoint_counts_syscalls(trace):
    prog = trace.programs["raw_sys_enter"]
    with prog.attach_raw_tracepoint("sys_enter") as link:
        getpids(30)
        assert trace.globals["raw_hits"] >= 30
        info = link.info()
        assert info.type is bn.LinkType.RAW_TRACEPOINT and info.name == "sys_enter"
    seen = trace.globals["raw_hits"]
    getpids(10)
    assert trace.globals["raw_hits"] == seen


def test_tp_btf_counts_syscalls(trace):
    prog = trace.programs["btf_sys_enter"]
    assert prog.type is bn.ProgramType.TRACING
    with prog.attach_trace() as link:
        getpids(30)
        assert trace.globals["btf_hits"] >= 30
        assert link.info().prog_id == prog.id


def test_tracepoint_errors(trace):
    prog = trace.programs["tp_getpid"]
    with pytest.raises(bn.BpfError, match="no such tracepoint \\(see .*available_events"):
        prog.attach_tracepoint("syscalls", "sys_enter_nothing")
    with pytest.raises(ValueError, match="plain names"):
        prog.attach_tracepoint("../syscalls", "sys_enter_getpid")
    with pytest.raises(bn.BpfError, match="the kernel has no tracepoint named 'nothing'"):
        trace.programs["raw_sys_enter"].attach_raw_tracepoint("nothing")
    with pytest.raises(bn.BpfError, match="tp_btf programs use attach_trace"):
        trace.programs["btf_sys_enter"].attach_raw_tracepoint("sys_enter")
    assert not [i for i in bn.links()
                if i.prog_id in {p.id for p in trace.programs.values()}]


def test_fentry_is_not_supported_here(test_objects):
    """This sandbox refuses BPF trampolines with EPERM: the error must say
    "not supported" (not "missing privilege"). Where the kernel allows
    them, the program loads and attaches like any other."""
    try:
        obj = bn.load(test_objects["attach_fentry"])
    except bn.NotSupportedError as e:
        assert not isinstance(e, PermissionError)
        assert e.errno == errno.EPERM
        text = str(e)
        assert "BPF trampoline (fentry)" in text and "on_unlink" in text
        assert "fentry/do_unlinkat" in text and "tp_btf" in text
        return
    with obj:
        with obj.programs["on_unlink"].attach_trace() as link:
            assert link.info().type is bn.LinkType.TRACING


def test_pinned_link_outlives_handle_until_unpinned(trace, pin_path):
    prog = trace.programs["raw_sys_enter"]
    link = prog.attach_raw_tracepoint("sys_enter")
    link_id = link.id
    link.pin(pin_path)
    link.close()
    assert link.closed and link_id in link_ids()
    before = trace.globals["raw_hits"]
    getpids(20)
    assert trace.globals["raw_hits"] >= before + 20     # still attached
    with bn.Link.from_pinned(pin_path) as again:
        assert again.id == link_id and again.pinned == pin_path
        assert again.program_name == "raw_sys_enter"
        again.unpin()
        assert not os.path.exists(pin_path) and link_id in link_ids()
    assert link_id not in link_ids()


def test_pin_errors(trace, pin_path, bpf_object, test_objects):
    with trace.programs["raw_sys_enter"].attach_raw_tracepoint("sys_enter") as link:
        link.pin(pin_path)
        with pytest.raises(bn.BpfError) as e:
            link.pin(pin_path)
        assert e.value.errno == errno.EEXIST
        link.unpin()
        with pytest.raises(ValueError, match="is not pinned"):
            link.unpin()
    maps_obj = bpf_object(test_objects["maps_all"])
    next(iter(maps_obj.maps.values())).pin(pin_path)
    with pytest.raises(bn.BpfError, match="not a link"):
        bn.Link.from_pinned(pin_path)


def test_forgotten_link_warns_and_detaches(trace):
    prog = trace.programs["raw_sys_enter"]

    def forget():
        link = prog.attach_raw_tracepoint("sys_enter")
        return link.id

    with pytest.warns(ResourceWarning, match=r"link \(raw_tp sys_enter\) was never "
                      r"closed \(made at .*test_attach_trace.py"):
        link_id = forget()
        gc.collect()
    assert link_id not in link_ids()


def test_disconnect_hands_the_fd_over(trace):
    link = trace.programs["raw_sys_enter"].attach_raw_tracepoint("sys_enter")
    link_id = link.id
    fd = link.disconnect()
    assert link.closed
    link.close()
    del link
    gc.collect()
    assert link_id in link_ids()
    os.close(fd)
    assert link_id not in link_ids()


def test_detach_and_update_where_unsupported(trace):
    with trace.programs["raw_sys_enter"].attach_raw_tracepoint("sys_enter") as link:
        with pytest.raises(bn.NotSupportedError, match="BPF_LINK_DETACH of a "
                           "raw_tracepoint link"):
            link.detach()
        with pytest.raises(bn.NotSupportedError, match="atomic program update of a "
                           "raw_tracepoint link"):
            link.update(trace.programs["raw_sys_enter"])
        assert link.attached


def test_open_by_id(trace):
    with trace.programs["tp_getpid"].attach_tracepoint("syscalls",
                                                       "sys_enter_getpid") as link:
        with bn.Link.from_id(link.id) as other:
            assert other.info() == link.info()
        assert link.attached


def test_trampoline_kind_table():
    assert _binding.trampoline_kind(26, 24) == "fentry"
    assert _binding.trampoline_kind(26, 25) == "fexit"
    assert _binding.trampoline_kind(26, 23) is None      # tp_btf: no trampoline
    assert _binding.trampoline_kind(28, 0) == "freplace"
