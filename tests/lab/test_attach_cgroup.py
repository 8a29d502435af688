"""cgroup attach: a cgroup_skb program counting the packets of a process put
in a child cgroup made for the test (under the cgroup v2 mount; never the
root), removed afterwards."""

import errno
import os
import secrets
import subprocess
import sys
import time

import pytest

import pybpfnet as bn
from pybpfnet import _fs
from pybpfnet.netlab import Lab


def _cgroup2_root():
    for cand in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if _fs.mount_point_of(cand, "cgroup2") == cand:
            return cand
    return None


@pytest.fixture
def cgroup():
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 mount")
    path = os.path.join(root, "pybpfnet-test-%s" % secrets.token_hex(4))
    os.mkdir(path)
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(path)
                break
            except OSError as e:   # EBUSY until the exited members are gone
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def hosts():
    with Lab() as lab:
        yield lab.two_hosts(v6=False)


@pytest.fixture
def cg_obj(test_objects, bpf_object):
    return bpf_object(test_objects["attach_cgroup"])


SENDER = ("import socket, sys\n"
          "sys.stdin.readline()\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "for _ in range(%d): s.sendto(b'x' * 32, (sys.argv[1], 9))\n")


def send_from_cgroup(hosts, cgroup, count):
    """Start a UDP sender in the client namespace, move it into ``cgroup``,
    let it send ``count`` datagrams to the server, and reap it."""
    proc = hosts.client.popen([sys.executable, "-c", SENDER % count,
                               str(hosts.server_ip)], stdin=subprocess.PIPE)
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def test_cgroup_skb_counts_the_cgroups_packets(hosts, cgroup, cg_obj):
    prog = cg_obj.programs["count_egress"]
    link = prog.attach_cgroup(cgroup)           # the section says egress
    with link:
        info = link.info()
        assert info.type is bn.LinkType.CGROUP and info.prog_id == prog.id
        assert info.attach_type is bn.AttachType.CGROUP_INET_EGRESS
        assert info.cgroup_id == os.stat(cgroup).st_ino
        send_from_cgroup(hosts, cgroup, 10)
        assert cg_obj.globals["egress_packets"] >= 10
        # traffic of processes outside the cgroup is not counted
        before = cg_obj.globals["egress_packets"]
        assert hosts.client.ping(hosts.server_ip, count=2) == 2
        assert cg_obj.globals["egress_packets"] == before
        link_id = info.id
    assert link_id not in {i.id for i in bn.links()}
    send_from_cgroup(hosts, cgroup, 3)
    assert cg_obj.globals["egress_packets"] == before


@pytest.mark.parametrize("attach_type", ["ingress", "inet_ingress", "cgroup_inet_ingress",
                                         bn.AttachType.CGROUP_INET_INGRESS])
def test_attach_type_names(cgroup, cg_obj, attach_type):
    with cg_obj.programs["count_ingress"].attach_cgroup(cgroup, attach_type) as link:
        assert link.info().attach_type is bn.AttachType.CGROUP_INET_INGRESS


def test_cgroup_link_update_and_pin(cgroup, cg_obj):
    eg = cg_obj.programs["count_egress"]
    path = "/sys/fs/bpf/pybpfnet-test-%s" % secrets.token_hex(4)
    link = eg.attach_cgroup(cgroup, "egress")
    try:
        link.pin(path)
        link.close()
        with bn.Link.from_pinned(path) as again:
            assert again.info().cgroup_id == os.stat(cgroup).st_ino
            again.unpin()
        assert not [i for i in bn.links() if i.prog_id == eg.id]
    finally:
        link.close()
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.parametrize("args, exc, match", [
    (("sock_create",), bn.BpfError, "a CGROUP_SKB program attaches as cgroup_inet_ingress "
                                    "or cgroup_inet_egress, not cgroup_inet_sock_create"),
    (("teleport",), ValueError, "unknown cgroup attach type 'teleport'"),
    ((1.5,), TypeError, "attach_type is a name"),
])
def test_bad_attach_type(cgroup, cg_obj, args, exc, match):
    with pytest.raises(exc, match=match):
        cg_obj.programs["count_egress"].attach_cgroup(cgroup, *args)
    assert not [i for i in bn.links() if i.prog_id == cg_obj.programs["count_egress"].id]


def test_bad_cgroup_paths(cgroup, cg_obj):
    prog = cg_obj.programs["count_egress"]
    with pytest.raises(bn.BpfError, match="no such cgroup directory") as e:
        prog.attach_cgroup(cgroup + "-missing")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(bn.BpfError, match="not in a cgroup v2 hierarchy"):
        prog.attach_cgroup("/proc")
    assert not [i for i in bn.links() if i.prog_id == prog.id]
