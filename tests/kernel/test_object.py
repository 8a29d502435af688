"""Objects: open (spec, no kernel state) -> modify -> load -> close."""

import errno
import os

import pytest

import pybpfnet as bn
from pybpfnet import testing


def test_spec_lists_programs_maps_and_types(test_objects):
    spec = bn.open(test_objects["maps_all"])
    assert spec.name == "maps_all"
    assert set(spec.programs) == {"emit", "verdict_prog", "tail_target", "tc_prog"}
    assert spec.programs["emit"].type == bn.ProgramType.XDP
    assert spec.programs["tc_prog"].type == bn.ProgramType.SCHED_CLS
    assert spec.programs["emit"].insn_count > 0
    flows = spec.maps["flows"]
    assert flows.type == bn.MapType.HASH
    assert flows.key_type.py_type._fields == ("saddr", "daddr", "sport", "dport", "proto", "pad")
    assert flows.value_type.c_type == "struct flow_val"
    assert spec.maps["events"].type == bn.MapType.RINGBUF
    assert spec.btf.find("flow_key") is not None


def test_spec_has_no_kernel_state(test_objects):
    before = testing.bpf_fds()
    spec = bn.open(test_objects["maps_all"])
    assert testing.bpf_fds() == before
    del spec


def test_spec_from_bytes_and_path_agree(test_objects):
    path = test_objects["maps_all"]
    with open(path, "rb") as f:
        data = f.read()
    a, b = bn.open(path), bn.open(data, name="maps_all")
    assert list(a.maps) == list(b.maps)
    assert list(a.programs) == list(b.programs)


def test_resize_and_globals_before_load(test_objects):
    spec = bn.open(test_objects["maps_all"])
    spec.maps["hash_int"].max_entries = 4096
    spec.globals["cfg_port"] = 9090
    spec.globals["counter"] = 41
    assert spec.globals["cfg_port"] == 9090
    with spec.load() as obj:
        assert obj.maps["hash_int"].max_entries == 4096
        assert obj.maps["hash_int"].info()["max_entries"] == 4096
        assert obj.globals["cfg_port"] == 9090
        assert obj.globals["counter"] == 41


def test_globals_type_checked(test_objects):
    spec = bn.open(test_objects["maps_all"])
    with pytest.raises(bn.CodecError, match="__u32"):
        spec.globals["cfg_port"] = -1
    with pytest.raises(bn.CodecError, match="at most 8 bytes"):
        spec.globals["cfg_name"] = b"far too long a name"
    with pytest.raises(KeyError, match="no global variable named 'nope'.*cfg_port"):
        spec.globals["nope"] = 1
    assert spec.globals["cfg_port"] == 8080  # unchanged after rejection
    spec.globals["point"] = {"x": 7}
    assert spec.globals["point"].x == 7 and spec.globals["point"].y == 0


def test_live_globals_are_mmaped(maps_all):
    g = maps_all.globals
    assert g["counter"] == 5
    maps_all.programs["emit"].test_run(bytes([3]) + bytes(63))
    assert g["counter"] == 8            # the program incremented it
    assert g["zeroed"] == 1
    g["counter"] = 100                  # user space writes, program sees it
    maps_all.programs["emit"].test_run(bytes([1]) + bytes(63))
    assert g["counter"] == 101
    with pytest.raises(bn.BpfError, match="read-only after load"):
        g["cfg_port"] = 1
    assert g["cfg_port"] == 8080


def test_verdict_from_data_section(maps_all):
    prog = maps_all.programs["verdict_prog"]
    assert prog.test_run(bytes(64)).verdict == bn.XdpAction.PASS
    maps_all.globals["verdict"] = int(bn.XdpAction.DROP)
    r = prog.test_run(bytes(64))
    assert r.verdict is bn.XdpAction.DROP
    assert maps_all.globals["point"].x == 3


def test_spec_loads_twice_independently(test_objects):
    spec = bn.open(test_objects["maps_all"])
    with spec.load() as a, spec.load() as b:
        a.maps["hash_int"][1] = 10
        assert 1 not in b.maps["hash_int"]
        assert a.maps["hash_int"].id != b.maps["hash_int"].id


def test_close_invalidates_handles(test_objects):
    obj = bn.load(test_objects["maps_all"])
    m, p = obj.maps["hash_int"], obj.programs["emit"]
    obj.close()
    obj.close()  # idempotent
    assert obj.closed and m.closed and p.closed
    with pytest.raises(ValueError, match="closed"):
        m[1] = 2
    with pytest.raises(ValueError, match="closed"):
        p.test_run(bytes(64))


def test_clone_outlives_object(test_objects):
    with bn.load(test_objects["maps_all"]) as obj:
        obj.maps["hash_int"][3] = 4
        m = obj.maps["hash_int"].clone()
    with m:
        assert m[3] == 4


def test_load_close_1000_times_leaks_no_fd(test_objects):
    spec = bn.open(test_objects["maps_all"])
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(1000):
        obj = spec.load()
        obj.close()
    assert set(os.listdir("/proc/self/fd")) == before


def test_bundled_objects():
    assert "xdp_count" in bn.bundled()
    with bn.load_bundled("xdp_count") as obj:
        assert obj.programs["xdp_count"].type == bn.ProgramType.XDP
        assert isinstance(obj.maps["per_source"], bn.LruHashMap)
    with pytest.raises(FileNotFoundError, match="xdp_count"):
        bn.load_bundled("no_such_object")


def test_unknown_names_list_the_choices(maps_all):
    with pytest.raises(KeyError, match="no map named 'nope'; there are: .*flows"):
        maps_all.maps["nope"]
    with pytest.raises(KeyError, match="no program named 'x'; there are: emit"):
        maps_all.programs["x"]


def test_verifier_error_has_full_log_and_source_line(test_objects):
    with pytest.raises(bn.VerifierError) as ei:
        bn.load(test_objects["bad_verifier"])
    e = ei.value
    assert e.program == "bad_read"
    assert e.errno == errno.EACCES
    assert "invalid access to packet" in e.log
    assert "processed" in e.log or "R" in e.log
    assert e.source and "data[64]" in e.source
    assert e.instruction
    msg = str(e)
    assert "bad_read" in msg and "rejected by the verifier" in msg
    assert isinstance(e, bn.BpfError) and isinstance(e, OSError)


def test_verifier_error_truncates_long_logs():
    e = bn.VerifierError(13, "p", "\n".join("line %d" % i for i in range(100)))
    assert "(88 lines omitted)" in str(e)
    assert "line 99" in str(e) and "line 3\n" not in str(e)


def test_failed_load_leaves_nothing(test_objects):
    before = testing.bpf_fds()
    for _ in range(3):
        with pytest.raises(bn.VerifierError):
            bn.load(test_objects["bad_verifier"])
    assert testing.bpf_fds() == before


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"\x7fELF" + bytes(200),
                                  b"not an elf at all" * 10])
def test_garbage_objects_rejected(data):
    with pytest.raises(bn.ObjectFormatError):
        bn.open(data)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        bn.open("/nonexistent/prog.bpf.o")


def test_wrong_source_type():
    with pytest.raises(TypeError, match="path or the bytes"):
        bn.open(42)


def test_resize_validation(test_objects):
    spec = bn.open(test_objects["maps_all"])
    with pytest.raises(ValueError, match="max_entries"):
        spec.maps["hash_int"].max_entries = 0
    with pytest.raises(ValueError, match="power of 2"):
        spec.maps["events"].max_entries = 5000
    spec.maps["events"].max_entries = 1 << 20
    with spec.load() as obj:
        assert obj.maps["events"].max_entries == 1 << 20


def test_autoload_off_skips_program(test_objects):
    spec = bn.open(test_objects["maps_all"])
    spec.programs["tc_prog"].autoload = False
    with spec.load() as obj:
        assert "tc_prog" not in obj.programs
        assert "emit" in obj.programs


def test_reuse_map_shares_between_objects(test_objects):
    with bn.load(test_objects["maps_all"]) as first:
        spec = bn.open(test_objects["maps_all"])
        spec.maps["hash_int"].reuse(first.maps["hash_int"])
        with spec.load() as second:
            first.maps["hash_int"][9] = 99
            assert second.maps["hash_int"][9] == 99
            assert first.maps["hash_int"].id == second.maps["hash_int"].id
        with pytest.raises(ValueError, match="cannot stand in"):
            spec.maps["flows"].reuse(first.maps["hash_int"])


def test_forgotten_object_warns(test_objects):
    obj = bn.load(test_objects["maps_all"])
    with pytest.warns(ResourceWarning, match="never closed"):
        obj.__del__()
    assert obj.closed
