"""Shared fixtures: test BPF objects compiled from tests/bpf, per-test BPF fd
leak checks, and a session-end check that nothing was left in the system
(namespaces, links, pins, programs attached by the suite)."""

import gc
import os
import pathlib

import pytest

from pybpfnet import testing

HERE = pathlib.Path(__file__).parent
BPF_SRC = HERE / "bpf"
PIN_ROOT = "/sys/fs/bpf"


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = pathlib.Path(str(item.fspath)).relative_to(HERE).parts
        if parts[0] == "kernel":
            item.add_marker(pytest.mark.kernel)
        elif parts[0] == "lab":
            item.add_marker(pytest.mark.kernel)
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def test_objects(tmp_path_factory):
    """name -> path of every tests/bpf/*.bpf.c, compiled once per session."""
    out = tmp_path_factory.mktemp("bpf")
    return {src.name[:-len(".bpf.c")]: testing.compile_bpf(
        src, out / (src.name[:-2] + ".o"), include_dirs=[BPF_SRC])
        for src in sorted(BPF_SRC.glob("*.bpf.c"))}


@pytest.fixture
def maps_all(test_objects, bpf_object):
    """The loaded tests/bpf/maps_all.bpf.c object (closed at teardown)."""
    return bpf_object(test_objects["maps_all"])


@pytest.fixture(autouse=True)
def _no_bpf_fd_leak(request):
    if not (request.node.get_closest_marker("kernel")):
        yield
        return
    before = testing.bpf_fds()
    yield
    gc.collect()
    leaked = {fd: t for fd, t in testing.bpf_fds().items() if fd not in before}
    if leaked:
        pytest.fail("test leaked BPF fds: %s" % leaked, pytrace=False)


def _system_state():
    state = {}
    try:
        state["netns"] = set(os.listdir("/run/netns"))
    except FileNotFoundError:
        state["netns"] = set()
    try:
        state["pins"] = {os.path.join(d, f)[len(PIN_ROOT) + 1:]
                         for d, dirs, files in os.walk(PIN_ROOT) for f in files + dirs}
    except (FileNotFoundError, PermissionError):
        state["pins"] = set()
    try:
        from pybpfnet import _binding
        state["links"] = set(_binding.next_ids("link"))
    except Exception:
        state["links"] = set()
    state["links_sys"] = set(os.listdir("/sys/class/net"))
    return state


def _foreign_lab(name):
    parts = name.split("-")
    if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    return os.path.exists("/proc/%s" % parts[1])


def pytest_sessionstart(session):
    session.config._pybn_state = _system_state()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_pybn_state", None)
    if before is None:
        return
    gc.collect()
    after = _system_state()
    left = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
    # labs of other, concurrent test processes (pbn-<pid>-...) are theirs
    if "netns" in left:
        left["netns"] = [n for n in left["netns"] if not _foreign_lab(n)]
        if not left["netns"]:
            del left["netns"]
    if left:
        msg = "test suite left things behind: %s" % left
        session.config._pybn_leftovers = msg
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    msg = getattr(config, "_pybn_leftovers", None)
    if msg:
        terminalreporter.write_sep("=", "LEAK CHECK FAILED", red=True)
        terminalreporter.write_line(msg)
