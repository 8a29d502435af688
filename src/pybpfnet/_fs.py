"""Pseudo file systems pybpfnet needs: bpffs (pins) and tracefs.

Fresh machines may have neither mounted. As root we mount them at their
standard places; otherwise the error says exactly what to run.
"""

import ctypes
import ctypes.util
import errno as _errno
import os

from pybpfnet._errors import BpfError, BpfPermissionError

__all__ = ["ensure_bpffs", "ensure_tracefs", "mount_point_of"]

BPFFS = "/sys/fs/bpf"
TRACEFS = "/sys/kernel/tracing"


def _mounts():
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def mount_point_of(path, fstype):
    """The deepest mount of ``fstype`` containing ``path``, or None."""
    path = os.path.abspath(path)
    best = None
    for mnt, fs in _mounts():
        if fs == fstype and (path == mnt or path.startswith(mnt.rstrip("/") + "/")):
            if best is None or len(mnt) > len(best):
                best = mnt
    return best


def _mount(fstype, target):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    os.makedirs(target, exist_ok=True)
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        cls = BpfPermissionError if err in (_errno.EPERM, _errno.EACCES) else BpfError
        raise cls(err, "mount %s at %s" % (fstype, target),
                  "%s; as root run: mount -t %s %s %s" % (
                      os.strerror(err), fstype, fstype, target))


def ensure_bpffs(path=BPFFS):
    """Make sure ``path`` lies on a bpffs; mounts /sys/fs/bpf when it is the
    standard location and nothing is mounted there (needs root)."""
    if mount_point_of(path, "bpf"):
        return
    if os.path.abspath(path) == BPFFS or os.path.abspath(path).startswith(BPFFS + "/"):
        if os.geteuid() != 0:
            raise BpfPermissionError(_errno.EPERM, "pin under %s" % path,
                                     "bpffs is not mounted; as root run: "
                                     "mount -t bpf bpf %s" % BPFFS)
        _mount("bpf", BPFFS)
        return
    raise BpfError(_errno.EINVAL, "pin at %s" % path,
                   "not on a bpffs mount (pins live under %s)" % BPFFS)


def ensure_tracefs():
    """The tracefs mount point (mounted at /sys/kernel/tracing when missing
    and running as root)."""
    mnt = mount_point_of(TRACEFS, "tracefs") or mount_point_of(
        "/sys/kernel/debug/tracing", "tracefs")
    if mnt:
        return mnt
    if os.geteuid() != 0:
        raise BpfPermissionError(_errno.EPERM, "find tracepoints",
                                 "tracefs is not mounted; as root run: "
                                 "mount -t tracefs tracefs %s" % TRACEFS)
    _mount("tracefs", TRACEFS)
    return TRACEFS
