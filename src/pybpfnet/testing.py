"""pytest plugin for testing BPF programs with pybpfnet (entry point pytest11).

Markers:
  ``@pytest.mark.kernel``  needs CAP_BPF and a BPF-capable kernel
  ``@pytest.mark.lab``     needs CAP_NET_ADMIN too (namespaces, attach)
  ``@pytest.mark.min_kernel("6.6")``  skips on older kernels

Tests with those markers skip, with the reason, where the privilege or
kernel is missing; they never pass vacuously.

Fixtures:
  ``bpf_object``  a factory: ``bpf_object(path_or_spec)`` loads and always
                  closes at teardown.
  ``bpf_fd_guard`` fails the test if it leaks a BPF fd (opt-in).

  ``lab``         a fresh ``pybpfnet.netlab.Lab``, torn down after the test.

Helpers: :func:`differential` checks a program against a Python reference on
hypothesis-generated packets (:func:`packets`) and reports the minimal
disagreeing packet; :func:`compile_bpf` builds a .bpf.c with clang (tests
only; the package itself ships precompiled objects).
"""

import os
import platform
import shutil
import subprocess

import pytest

__all__ = ["have_cap_bpf", "have_cap_net_admin", "kernel_version", "compile_bpf",
           "bpf_fds", "skip_reason", "differential", "DifferentialMismatch", "packets",
           "well_formed_packets"]

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


def _cap_eff():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def have_cap_bpf():
    """True if this process may create BPF maps (probed with a real one)."""
    caps = _cap_eff()
    if not caps & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN)):
        return False
    from pybpfnet import _binding
    try:
        fd = _binding.map_create(2, "probe", 4, 4, 1)
    except OSError:
        return False
    os.close(fd)
    return True


def have_cap_net_admin():
    return bool(_cap_eff() & (1 << CAP_NET_ADMIN))


def kernel_version():
    """(major, minor) of the running kernel."""
    rel = platform.release().split("-")[0].split(".")
    return int(rel[0]), int(rel[1]) if len(rel) > 1 else 0


def skip_reason(kind):
    """Why tests of ``kind`` ('kernel' or 'lab') cannot run here, or None."""
    if not have_cap_bpf():
        return ("needs CAP_BPF (run as root, or grant cap_bpf,cap_perfmon) and a kernel "
                "with BPF syscall support")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs kernel BTF (/sys/kernel/btf/vmlinux)"
    if kind == "lab" and not have_cap_net_admin():
        return "needs CAP_NET_ADMIN (network namespaces, attach)"
    return None


def bpf_fds():
    """The fds of this process that refer to BPF maps, programs or links."""
    out = {}
    base = "/proc/self/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, name))
        except OSError:
            continue
        if target.startswith("anon_inode:bpf") or target == "anon_inode:[bpf_link]":
            out[int(name)] = target
    return out


def _bpf_cflags():
    machine = platform.machine()
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(machine, machine)
    return ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
            "-D__TARGET_ARCH_%s" % arch, "-I/usr/include/%s-linux-gnu" % machine]


def compile_bpf(source, output=None, include_dirs=(), clang=None):
    """Compile a BPF C file with clang into ``output`` (default: next to the
    source, .bpf.o) and return the output path. Needs clang (Debian package
    'clang'). Rebuilds only when the source is newer."""
    clang = clang or os.environ.get("CLANG", "clang")
    if shutil.which(clang) is None:
        raise FileNotFoundError("clang not found: install the Debian package 'clang'")
    source = os.fspath(source)
    if output is None:
        output = source[:-2] + ".o" if source.endswith(".c") else source + ".o"
    output = os.fspath(output)
    if os.path.exists(output) and os.path.getmtime(output) >= os.path.getmtime(source):
        return output
    cmd = [clang, *_bpf_cflags()]
    for d in include_dirs:
        cmd += ["-I", os.fspath(d)]
    cmd += ["-c", source, "-o", output]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError("clang failed on %s:\n%s" % (source, res.stderr))
    return output


# ------------------------------------------------------------------ differential

class DifferentialMismatch(AssertionError):
    """The kernel program and the reference model disagreed on a packet.
    ``packet`` is the (minimal, after hypothesis shrinking) input,
    ``kernel`` the TestRunResult, ``expected_verdict``/``expected_data``
    what the model said."""

    def __init__(self, packet, kernel, expected_verdict, expected_data):
        self.packet = packet
        self.kernel = kernel
        self.expected_verdict = expected_verdict
        self.expected_data = expected_data
        lines = ["kernel and reference disagree on a %d-byte packet:" % len(packet),
                 "  packet:    %s" % packet.hex(),
                 "  decoded:   %s" % _describe(packet),
                 "  kernel:    verdict %r" % (kernel.verdict,),
                 "  reference: verdict %r" % (expected_verdict,)]
        if expected_data is not None and kernel.data != expected_data:
            first = next((i for i, (a, b) in enumerate(zip(kernel.data, expected_data))
                          if a != b), min(len(kernel.data), len(expected_data)))
            lines += ["  output bytes differ from offset %d (kernel %d bytes, reference %d)"
                      % (first, len(kernel.data), len(expected_data)),
                      "  kernel:    %s" % kernel.data.hex(),
                      "  reference: %s" % expected_data.hex()]
        super().__init__("\n".join(lines))


def _describe(packet):
    try:
        from pybpfnet import packet as pk
        return pk.parse(packet, strict=False).summary()
    except Exception as e:  # a description must never hide the mismatch
        return "(undecodable: %s)" % e


def _expectation(want):
    if hasattr(want, "verdict"):
        return want.verdict, getattr(want, "data", None)
    if isinstance(want, tuple) and len(want) == 2:
        return want
    return want, None


def differential(program, reference, packets=None, *, max_examples=200, ctx=None,
                 compare_data=True, before_each=None, settings=None):
    """Check a BPF program against a Python reference on generated packets.

    Runs ``program.test_run(packet)`` (BPF_PROG_TEST_RUN) and
    ``reference(packet)`` on hypothesis-generated packets (``packets``: a
    strategy of bytes, default :func:`packets`). The reference returns the
    expected verdict, a ``(verdict, data)`` pair (``data`` None: don't
    compare bytes), or an object with ``.verdict``/``.data``. On the first
    disagreement hypothesis shrinks the packet and a
    :class:`DifferentialMismatch` reports the minimal one: hex, decoded
    layers, both verdicts and where the output bytes differ.
    ``before_each`` runs before every packet (e.g. to reset maps).
    Needs CAP_BPF (CAP_NET_ADMIN for networking programs) and hypothesis.
    """
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    strategy = packets if packets is not None else globals()["packets"]()
    conf = settings or hsettings(max_examples=max_examples, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])

    @conf
    @given(strategy)
    def check(packet):
        packet = bytes(packet)
        if before_each is not None:
            before_each()
        got = program.test_run(packet, ctx=ctx)
        verdict, data = _expectation(reference(packet))
        if got.verdict != verdict or (compare_data and data is not None
                                      and got.data != bytes(data)):
            raise DifferentialMismatch(packet, got, verdict, data)

    check()


def packets(**kwargs):
    """Hypothesis strategy of Ethernet frames (bytes): well formed TCP/UDP/
    ICMP over IPv4/IPv6, hostile (VLAN, QinQ, IPv4 options, IPv6 extension
    headers, fragments) and malformed (truncated, random). Keyword
    arguments: v4=, v6= (address pools), ports=, ipv4=, ipv6=, hostile=,
    malformed=, max_payload=."""
    from pybpfnet import _strategies
    return _strategies.packets(**kwargs)


def well_formed_packets(**kwargs):
    """Hypothesis strategy of well-formed frames as ``pybpfnet.packet.Packet``
    objects (same pools as :func:`packets`)."""
    from pybpfnet import _strategies
    return _strategies.well_formed_packets(**kwargs)


# ------------------------------------------------------------------ plugin

def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs CAP_BPF and a BPF-capable kernel")
    config.addinivalue_line("markers", "lab: needs CAP_NET_ADMIN (namespaces, attach)")
    config.addinivalue_line("markers", "min_kernel(version): needs Linux >= version")


_reasons = {}


def pytest_runtest_setup(item):
    for kind in ("lab", "kernel"):
        if item.get_closest_marker(kind):
            if kind not in _reasons:
                _reasons[kind] = skip_reason(kind)
            if _reasons[kind]:
                pytest.skip(_reasons[kind])
    m = item.get_closest_marker("min_kernel")
    if m:
        want = tuple(int(x) for x in str(m.args[0]).split("."))
        if kernel_version() < want:
            pytest.skip("needs Linux >= %s (running %s)" % (m.args[0], platform.release()))


@pytest.fixture
def bpf_object():
    """Factory fixture: ``bpf_object(path | bytes | ObjectSpec)`` -> a loaded
    BpfObject, closed at teardown even when the test fails."""
    import pybpfnet
    made = []

    def load(source):
        spec = source if isinstance(source, pybpfnet.ObjectSpec) else pybpfnet.open(source)
        obj = spec.load()
        made.append(obj)
        return obj

    yield load
    for obj in reversed(made):
        obj.close()


@pytest.fixture
def bpf_fd_guard():
    """Fails the test if BPF fds opened during it are still open after."""
    before = bpf_fds()
    yield
    import gc
    gc.collect()
    leaked = {fd: t for fd, t in bpf_fds().items() if fd not in before}
    if leaked:
        pytest.fail("test leaked BPF fds: %s" % leaked)



# ------------------------------------------------------------------ network lab
# (pybpfnet.netlab) A fresh Lab per test, always torn down.

def _lab_skip_reason():
    caps = _cap_eff()
    if not caps & (1 << CAP_SYS_ADMIN):
        return "the lab needs CAP_SYS_ADMIN (network namespaces, mounts)"
    if not caps & (1 << CAP_NET_ADMIN):
        return "the lab needs CAP_NET_ADMIN (links, addresses, routes)"
    return None


@pytest.fixture
def lab():
    """A fresh :class:`pybpfnet.netlab.Lab` for one test, torn down after it even
    when the test fails (namespaces, links, processes, sockets). Skips, with
    the reason, without CAP_SYS_ADMIN and CAP_NET_ADMIN."""
    reason = _lab_skip_reason()
    if reason:
        pytest.skip(reason)
    from pybpfnet import netlab
    with netlab.Lab() as the_lab:
        yield the_lab
