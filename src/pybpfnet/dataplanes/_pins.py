"""Where data planes pinned by the command line live: one directory per
(network namespace, interface) under /sys/fs/bpf/pybpfnet/<plane>/, named
``<netns inode>-<iface>`` so that the same interface name in two namespaces
never collides. Shared by ``pybpfnet fw`` and ``pybpfnet lb``."""

import os

__all__ = ["netns_inode", "pin_dir", "pinned", "prune", "remove_pins"]


def netns_inode():
    """The inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def pin_dir(root, iface):
    """The pin directory of ``iface`` (in the calling thread's network
    namespace) under ``root``. Raises ValueError for a name that is not a
    plain interface name."""
    if not iface or "/" in iface or iface in (".", ".."):
        raise ValueError("bad interface name %r: expected a plain interface name" % (iface,))
    return os.path.join(root, "%d-%s" % (netns_inode(), iface))


def pinned(root):
    """{iface: pin dir} of what is pinned under ``root`` for this network
    namespace."""
    prefix = "%d-" % netns_inode()
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return {}
    return {n[len(prefix):]: os.path.join(root, n) for n in names if n.startswith(prefix)}


def prune(root):
    """Remove ``root`` and its parent when they are empty (the directories
    the command made); stops at the first that is not."""
    for d in (root, os.path.dirname(root)):
        try:
            os.rmdir(d)
        except OSError:         # not empty (another plane or interface), or gone
            return


def remove_pins(path):
    """Unlink every pin in ``path`` and the directory itself (missing ones
    are fine: another process may be removing them too)."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
