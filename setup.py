"""Build steps that pyproject.toml cannot express: the cffi extension
(csrc/build_binding.py) and the BPF objects compiled from csrc/bpf/**/*.bpf.c
into package data (pybpfnet/bpf/<name>.bpf.o)."""

import glob
import os
import platform
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_CFLAGS = ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]


def _arch_defines():
    machine = platform.machine()
    arch = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc",
            "s390x": "s390", "riscv64": "riscv"}.get(machine, machine)
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(
        machine, machine + "-linux-gnu")
    return ["-D__TARGET_ARCH_%s" % arch, "-I/usr/include/%s" % triplet]


def compile_bpf(out_dir):
    clang = os.environ.get("CLANG", "clang")
    if shutil.which(clang) is None:
        sys.stderr.write("\npybpfnet build error: clang not found; install the "
                         "Debian packages 'clang' and 'llvm' (apt-get install "
                         "clang llvm)\n\n")
        raise SystemExit(1)
    os.makedirs(out_dir, exist_ok=True)
    sources = sorted(glob.glob(os.path.join("csrc", "bpf", "**", "*.bpf.c"),
                               recursive=True))
    names = {}
    for src in sources:
        name = os.path.basename(src)[:-len(".bpf.c")]
        if name in names:
            raise SystemExit("pybpfnet build error: two BPF programs named %r: "
                             "%s and %s" % (name, names[name], src))
        names[name] = src
        out = os.path.join(out_dir, name + ".bpf.o")
        deps = [src] + glob.glob(os.path.join("csrc", "bpf", "**", "*.h"),
                                 recursive=True)
        if os.path.exists(out) and os.path.getmtime(out) >= max(
                os.path.getmtime(d) for d in deps):
            continue
        cmd = [clang, *BPF_CFLAGS, *_arch_defines(),
               "-I", os.path.join("csrc", "bpf", "include"),
               "-I", os.path.dirname(src), "-c", src, "-o", out]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)
    return sorted(names)


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(HERE, "src", "pybpfnet", "bpf")
        else:
            target = os.path.join(self.build_lib, "pybpfnet", "bpf")
        compile_bpf(target)


setup(
    cffi_modules=["csrc/build_binding.py:ffibuilder"],
    cmdclass={"build_py": BuildPy},
)
