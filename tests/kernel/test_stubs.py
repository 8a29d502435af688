"""`pybpfnet stubs`: a typed module generated from an object's BTF."""

import importlib.util
import subprocess
import sys

import pybpfnet as bn
from pybpfnet.cli import main


def load_module(path):
    spec = importlib.util.spec_from_file_location("generated_types", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stubs_module_is_typed_and_usable(test_objects, tmp_path):
    out = tmp_path / "maps_all_types.py"
    assert main(["stubs", test_objects["maps_all"], "-o", str(out)]) == 0
    mod = load_module(out)
    assert mod.flow_key._fields == ("saddr", "daddr", "sport", "dport", "proto", "pad")
    assert mod.flow_key.__annotations__["pad"] is bytes
    assert mod.flow_val.__annotations__["pos"] is mod.inner
    assert mod.flow_state.FLOW_CLOSED == 7
    text = out.read_text()
    assert "self.flows: pybpfnet.HashMap[flow_key, flow_val]" in text
    assert "self.pc_hash: pybpfnet.PerCpuHashMap[int, List[int]]" in text
    with mod.MapsAll(bn.load(test_objects["maps_all"])) as o:
        k = mod.flow_key(1, 2, 3, 4, 6, b"")
        o.flows[k] = mod.flow_val(1, 2, b"x", (1, 2, 3, 4), mod.inner(1, 2),
                                  mod.flow_state.FLOW_EST, -1)
        v = o.flows[k]
        assert v.state == mod.flow_state.FLOW_EST and v.delta == -1
        assert tuple(v) == tuple(o.flows[tuple(k)])
        o.counter = 9
        assert o.counter == 9 and o.cfg_port == 8080
        o.unions[1] = mod.with_union(2, mod.addr(5, bytes(16)))
        assert o.emit.type == bn.ProgramType.XDP


def test_stubs_for_bundled_object_to_stdout(capsys):
    assert main(["stubs", "xdp_count"]) == 0
    src = capsys.readouterr().out
    assert "class src_key(NamedTuple):" in src and "class XdpCount:" in src
    compile(src, "xdp_count_types.py", "exec")


def test_stubs_errors_are_clear(capsys):
    assert main(["stubs", "no_such_object"]) == 1
    assert "no bundled BPF object 'no_such_object'" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "pybpfnet.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("pybpfnet ")
