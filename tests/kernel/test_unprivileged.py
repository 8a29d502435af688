"""Without CAP_BPF: errors name the capability, privileged tests skip with
the reason (never pass vacuously), unprivileged parts still work."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          "--inh-caps=-all", "--bounding-set=-all"]


def as_nobody(args, **kw):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop privileges")
    env = dict(os.environ, HOME="/tmp", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(NOBODY + args, capture_output=True, text=True, env=env,
                          cwd="/tmp", timeout=300, **kw)


def test_permission_error_names_the_capability():
    code = ("import pybpfnet as bn\n"
            "try:\n"
            "    bn.Map.create('hash', key='u32', value='u32', max_entries=1)\n"
            "except PermissionError as e:\n"
            "    print(type(e).__name__, e.errno, e)\n")
    res = as_nobody([sys.executable, "-c", code])
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("BpfPermissionError 1 ")
    assert "CAP_BPF" in res.stdout


def test_unprivileged_codecs_and_objects_work():
    code = ("import pybpfnet as bn\n"
            "spec = bn.open_bundled('xdp_count')\n"
            "v = spec.maps['per_source'].value_type(packets=1)\n"
            "print(spec.maps['per_source'].value_type.decode(spec.maps['per_source'].value_type.encode(v)))\n")
    res = as_nobody([sys.executable, "-c", code])
    assert res.returncode == 0, res.stderr
    assert "counters(packets=1, bytes=0)" in res.stdout


def test_privileged_tests_skip_with_reason():
    res = as_nobody([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
                     str(ROOT / "tests" / "kernel" / "test_program.py")])
    out = res.stdout
    assert "passed" not in out.splitlines()[-1], out
    assert "skipped" in out.splitlines()[-1], out
    assert "needs CAP_BPF" in out, out
