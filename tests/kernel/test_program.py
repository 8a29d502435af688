"""Programs: identity and BPF_PROG_TEST_RUN."""

import errno
import struct

import pytest

import pybpfnet as bn


def frame(n=64):
    return b"\xff" * 6 + b"\x02" + b"\0" * 5 + b"\x08\x00" + bytes(n - 14)


def test_test_run_result(maps_all):
    p = maps_all.programs["verdict_prog"]
    r = p.test_run(frame(), repeat=100)
    assert isinstance(r, bn.TestRunResult)
    assert r.retval == 2 and r.verdict is bn.XdpAction.PASS
    assert r.data == frame() and r.duration_ns >= 0
    assert maps_all.globals["point"].x == 1 + 100


def test_tc_verdict_enum(maps_all):
    r = maps_all.programs["tc_prog"].test_run(frame())
    assert r.verdict is bn.TcAction.OK


def test_accepts_bytes_like_and_dunder_bytes(maps_all):
    class Pkt:
        def __bytes__(self):
            return frame()

    p = maps_all.programs["verdict_prog"]
    assert p.test_run(Pkt()).data == frame()
    assert p.test_run(bytearray(frame())).data == frame()
    assert p.test_run(memoryview(frame())).data == frame()


def test_accepts_scapy_packets(maps_all):
    scapy = pytest.importorskip("scapy.all")
    pkt = scapy.Ether() / scapy.IP(dst="10.0.0.2") / scapy.UDP(dport=53) / b"x"
    r = maps_all.programs["verdict_prog"].test_run(pkt)
    assert r.data == bytes(pkt)


def test_xdp_md_context(maps_all):
    ctx = struct.pack("=6I", 0, 64, 0, 1, 0, 0)  # data, data_end, meta, ifindex, rxq, egress
    r = maps_all.programs["verdict_prog"].test_run(frame(), ctx=ctx)
    assert r.verdict is bn.XdpAction.PASS and r.ctx is not None


@pytest.mark.parametrize("packet, exc, match", [
    (42, TypeError, "bytes or an object with __bytes__"),
    ("text", TypeError, "bytes"),
])
def test_bad_packet_types(maps_all, packet, exc, match):
    with pytest.raises(exc, match=match):
        maps_all.programs["verdict_prog"].test_run(packet)


def test_bad_repeat(maps_all):
    with pytest.raises(ValueError, match="repeat"):
        maps_all.programs["verdict_prog"].test_run(frame(), repeat=0)


def test_too_short_packet_is_a_clear_kernel_error(maps_all):
    with pytest.raises(bn.BpfError, match="test run of program 'verdict_prog'") as ei:
        maps_all.programs["verdict_prog"].test_run(b"\0" * 4)
    assert ei.value.errno == errno.EINVAL


def test_program_info(maps_all):
    p = maps_all.programs["emit"]
    info = p.info()
    assert info["name"] == "emit" and info["type"] == bn.ProgramType.XDP
    assert p.id == info["id"] and len(p.tag) == 16
    ids = set(p.map_ids())
    assert maps_all.maps["events"].id in ids
    assert p.section == "xdp"
    with bn.Program.from_id(p.id) as again:
        assert again.name == "emit"


def test_program_clone_outlives_object(test_objects):
    with bn.load(test_objects["maps_all"]) as obj:
        p = obj.programs["tail_target"].clone()
    with p:
        assert p.test_run(frame()).verdict is bn.XdpAction.DROP


def test_forgotten_program_clone_warns(maps_all):
    p = maps_all.programs["tail_target"].clone()
    with pytest.warns(ResourceWarning, match="never closed"):
        p.__del__()


def test_syscall_program_test_run_writes_ctx_back(test_objects, bpf_object):
    """SYSCALL programs run once on their context, which the kernel copies
    back: test_run returns it as ``ctx``."""
    obj = bpf_object(test_objects["syscall_prog"])
    prog = obj.programs["add"]
    assert prog.type == bn.ProgramType.SYSCALL
    r = prog.test_run(ctx=struct.pack("=IIQ", 7, 5, 0))
    assert r.retval == 1
    assert struct.unpack("=IIQ", r.ctx) == (7, 5, 12)
    assert obj.maps["last_sum"][0] == 12
    r = prog.test_run(ctx=struct.pack("=IIQ", 1, 2, 99))
    assert (r.retval, struct.unpack("=IIQ", r.ctx)[2]) == (2, 3)


def test_syscall_program_rejects_packet_and_repeat(test_objects, bpf_object):
    obj = bpf_object(test_objects["syscall_prog"])
    prog = obj.programs["add"]
    with pytest.raises(ValueError, match="SYSCALL program runs once on ctx only"):
        prog.test_run(b"\0" * 14, ctx=b"\0" * 16)
    with pytest.raises(ValueError, match="repeat"):
        prog.test_run(ctx=b"\0" * 16, repeat=10)
