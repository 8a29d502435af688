"""Netlink and network-namespace primitives: the only module that imports pyroute2.

Low-level API. :mod:`pybpfnet.netlab` builds the public lab on top of it; core
code uses :func:`ifindex`, :func:`ifname` and :func:`interfaces` to resolve
interface names (in the calling thread's namespace or in a given one).

Namespaces here are per *thread*: ``setns(2)`` with ``CLONE_NEWNET`` switches
only the calling thread, and every socket remembers the namespace it was
created in. :func:`in_netns` switches the current thread and restores it.

pyroute2 (>= 0.9) keeps one netlink socket per thread and cannot run inside a
thread that already runs an asyncio loop, so :class:`Rtnl` sends every request
from one private worker thread that owns the socket. That makes an ``Rtnl``
usable from any thread and from coroutines.

Every failure is a :class:`NetlinkError` (a :class:`~pybpfnet.BpfError`, so an
``OSError`` with ``errno``) whose message names the operation, the object and
the namespace; EEXIST, ENOENT/ENODEV and EPERM/EACCES raise subclasses that are
also ``FileExistsError``, ``FileNotFoundError`` and ``PermissionError``.
pyroute2's own exceptions never leave this module.
"""

import contextlib
import ctypes
import errno as _errno
import ipaddress
import os
import queue
import socket
import threading
from concurrent.futures import Future

import attrs

from pybpfnet._errors import BpfError, NotSupportedError

__all__ = [
    "NetlinkError", "NetlinkExistsError", "NetlinkNotFoundError", "NetlinkPermissionError",
    "NetlinkNotSupportedError", "NETNS_RUN_DIR", "LinkInfo", "RouteInfo", "Rtnl",
    "ifindex", "ifname", "interfaces", "in_netns", "setns", "netns_path", "list_netns",
    "create_netns", "unnamed_netns", "remove_netns", "netns_id", "pids_in_netns",
    "valid_ifname",
]

NETNS_RUN_DIR = "/run/netns"
IFNAMSIZ = 16

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20


# ------------------------------------------------------------------ errors

_PERM_HINT = ("needs CAP_NET_ADMIN for links, addresses and routes, CAP_SYS_ADMIN "
              "for namespaces (or root)")


class NetlinkError(BpfError):
    """A failed netlink or network-namespace operation.

    ``errno`` is the kernel's error number; ``context`` says what was being
    done, on which object, in which namespace ("add address 10.0.0.1/24 to eth0
    in netns pbn-...-client").
    """

    def __init__(self, err, context, detail=None):
        if detail is None:
            detail = os.strerror(err)
            if err in (_errno.EPERM, _errno.EACCES):
                detail += " (%s)" % _PERM_HINT
        super().__init__(err, context, detail)


class NetlinkExistsError(NetlinkError, FileExistsError):
    """The object to create already exists (EEXIST): a name clash."""


class NetlinkNotFoundError(NetlinkError, FileNotFoundError):
    """The object named does not exist (ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL)."""


class NetlinkPermissionError(NetlinkError, PermissionError):
    """EPERM/EACCES: the message names the capability needed."""


class NetlinkNotSupportedError(NetlinkError, NotSupportedError):
    """A link type (or other feature) this kernel does not have, e.g. "dummy"
    without CONFIG_DUMMY. Also a :class:`~pybpfnet.NotSupportedError`."""

    def __init__(self, feature, context, detail):
        BpfError.__init__(self, _errno.EOPNOTSUPP, context, detail)
        self.feature = feature
        self.min_kernel = None


_ERROR_CLASSES = {
    _errno.EEXIST: NetlinkExistsError,
    _errno.ENOENT: NetlinkNotFoundError,
    _errno.ENODEV: NetlinkNotFoundError,
    _errno.ESRCH: NetlinkNotFoundError,
    _errno.EADDRNOTAVAIL: NetlinkNotFoundError,
    _errno.EPERM: NetlinkPermissionError,
    _errno.EACCES: NetlinkPermissionError,
}


def error(err, context, detail=None):
    """The :class:`NetlinkError` subclass matching ``err``, ready to raise."""
    return _ERROR_CLASSES.get(err, NetlinkError)(err, context, detail)


# ------------------------------------------------------------------ libc

_libc = None


def _lib():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.unshare.argtypes = [ctypes.c_int]
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_ulong, ctypes.c_void_p]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = libc
    return _libc


def _check(ret, context):
    if ret != 0:
        err = ctypes.get_errno()
        raise error(err, context)


def setns(fd, context="setns"):
    """Move the calling *thread* into the network namespace open as ``fd``.

    Needs CAP_SYS_ADMIN. Raises :class:`NetlinkError`."""
    _check(_lib().setns(fd, CLONE_NEWNET), context)


# ------------------------------------------------------------------ namespaces

def netns_path(name):
    """The path of a named namespace (``/run/netns/<name>``); a path is returned as is."""
    name = os.fspath(name)
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)


def list_netns():
    """Names of the namespaces in /run/netns (sorted)."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def netns_id(target):
    """(st_dev, st_ino) identifying a namespace (path, name, fd or ``fileno()`` owner)."""
    if isinstance(target, int):
        st = os.fstat(target)
    elif hasattr(target, "fileno"):
        st = os.fstat(target.fileno())
    else:
        st = os.stat(netns_path(target))
    return st.st_dev, st.st_ino


_run_dir_lock = threading.Lock()
_run_dir_ready = False


def _run_dir_is_shared_mount():
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 6 and fields[4] == NETNS_RUN_DIR:
                    optional = fields[6:fields.index("-")]
                    return any(o.startswith("shared:") for o in optional)
    except OSError:
        pass
    return False


def _prepare_run_dir():
    # Same layout as iproute2's "ip netns add": /run/netns is a shared mount
    # point, so the namespace bind mounts propagate to (and their removal
    # reaches) mount namespaces created later by other processes; otherwise a
    # copy of the mount in such a namespace would keep ours alive forever.
    global _run_dir_ready
    with _run_dir_lock:
        if _run_dir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
        if not _run_dir_is_shared_mount():
            lib = _lib()
            d = NETNS_RUN_DIR.encode()
            if lib.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
                err = ctypes.get_errno()
                if err != _errno.EINVAL:
                    raise error(err, "make %s a shared mount" % NETNS_RUN_DIR)
                _check(lib.mount(d, d, b"none", MS_BIND | MS_REC, None),
                       "bind-mount %s onto itself" % NETNS_RUN_DIR)
                _check(lib.mount(b"", d, b"none", MS_SHARED | MS_REC, None),
                       "make %s a shared mount" % NETNS_RUN_DIR)
        _run_dir_ready = True


def create_netns(name):
    """Create a named network namespace (``/run/netns/<name>``) and return its path.

    The namespace is made by a short-lived helper thread (``unshare(2)`` acts on
    the calling thread only), so the caller never changes namespace. Either the
    namespace exists completely afterwards or nothing was left behind.

    Needs CAP_SYS_ADMIN. Raises :class:`NetlinkExistsError` when the name is
    taken, :class:`NetlinkError` otherwise.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError("invalid namespace name %r" % (name,))
    context = "create netns %s" % name
    _prepare_run_dir()
    path = netns_path(name)
    outcome = []

    def body():
        try:
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
            except FileExistsError:
                raise error(_errno.EEXIST, context,
                            "a namespace with this name already exists (%s)" % path) from None
            try:
                lib = _lib()
                _check(lib.unshare(CLONE_NEWNET), context + " (unshare)")
                _check(lib.mount(b"/proc/thread-self/ns/net", path.encode(), b"none",
                                 MS_BIND, None), context + " (bind mount)")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=body, name="pybpfnet-netns-create", daemon=True)
    t.start()
    t.join()
    if outcome:
        raise outcome[0]
    return path


def unnamed_netns():
    """Create a network namespace without a name and return an fd for it.

    Nothing mounts it in /run/netns and no task stays in it (a short-lived
    helper thread makes it with ``unshare(2)``): the kernel frees it, with
    its loopback device, once the fd is closed and nothing else refers to
    it. For private scratch devices (see pybpfnet._traffic).

    Needs CAP_SYS_ADMIN. Raises :class:`NetlinkError`."""
    outcome = []

    def body():
        try:
            _check(_lib().unshare(CLONE_NEWNET), "create an unnamed netns (unshare)")
            outcome.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=body, name="pybpfnet-netns-unnamed", daemon=True)
    t.start()
    t.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def remove_netns(name, missing_ok=True):
    """Unmount and delete a named namespace. The kernel frees it (and the
    virtual links in it) once no process, thread or socket uses it any more.

    Needs CAP_SYS_ADMIN. Raises :class:`NetlinkNotFoundError` when it does not
    exist and ``missing_ok`` is false."""
    path = netns_path(name)
    if _lib().umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (_errno.EINVAL, _errno.ENOENT):
            raise error(err, "unmount netns %s" % name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise error(_errno.ENOENT, "remove netns %s" % name) from None


def pids_in_netns(target):
    """Pids of the processes (other than this one) whose main thread is in the
    namespace ``target`` (name, path or fd)."""
    want = netns_id(target)
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat("/proc/%s/ns/net" % entry)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == want:
            out.append(int(entry))
    return out


def _describe_netns(target):
    if target is None:
        return "the current netns"
    name = getattr(target, "name", None)
    if isinstance(name, str):
        return "netns %s" % name
    if isinstance(target, (str, os.PathLike)):
        return "netns %s" % os.path.basename(os.fspath(target))
    return "netns fd %s" % (target if isinstance(target, int) else target.fileno())


@contextlib.contextmanager
def _open_netns(target):
    """Yield an fd for ``target``: an int fd (borrowed), an object with
    ``fileno()`` (borrowed), or a name/path (opened and closed here)."""
    if isinstance(target, int):
        yield target
    elif hasattr(target, "fileno"):
        yield target.fileno()
    else:
        path = netns_path(target)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise error(exc.errno, "open netns %s" % path) from None
        try:
            yield fd
        finally:
            os.close(fd)


@contextlib.contextmanager
def in_netns(target):
    """Context manager: the calling thread runs in namespace ``target`` inside
    the block and returns to its previous namespace after it (also on errors).

    ``target`` is a name in /run/netns, a path, an open fd, an object with
    ``fileno()``, or None (no switch). Only this thread moves: threads already
    running, and sockets already open, stay where they are. Sockets created,
    and child processes and threads started, inside the block belong to
    ``target``. Nests.

    Needs CAP_SYS_ADMIN. Raises :class:`NetlinkError`.
    """
    if target is None:
        yield
        return
    with _open_netns(target) as fd:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, "enter %s" % _describe_netns(target))
            yield
        finally:
            try:
                setns(saved, "return from %s" % _describe_netns(target))
            finally:
                os.close(saved)


# ------------------------------------------------------------------ interface names

def valid_ifname(name):
    """Check an interface name (1..15 bytes, no '/', ':' or whitespace);
    returns it or raises ValueError."""
    if not isinstance(name, str):
        raise TypeError("interface name must be a str, not %s" % type(name).__name__)
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError("interface name %r must be 1..%d bytes long (IFNAMSIZ)"
                         % (name, IFNAMSIZ - 1))
    if name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise ValueError("interface name %r contains '/', ':' or whitespace" % name)
    return name


def interfaces(netns=None):
    """[(ifindex, name), ...] of the interfaces in ``netns`` (default: the calling
    thread's namespace), sorted by index.

    Needs no capability for the current namespace, CAP_SYS_ADMIN for another."""
    with in_netns(netns):
        return sorted(socket.if_nameindex())


def ifindex(name, netns=None):
    """The ifindex of interface ``name`` in ``netns`` (default: the calling thread's
    namespace, which is where bpf() attach calls resolve it).

    Raises :class:`NetlinkNotFoundError` naming the interfaces that do exist."""
    with in_netns(netns):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            have = ", ".join(n for _, n in sorted(socket.if_nameindex()))
        except UnicodeError:
            raise ValueError("interface name %r is not valid" % (name,)) from None
    raise error(_errno.ENODEV, "look up interface %r" % name,
                "no such interface in %s (it has: %s)" % (_describe_netns(netns), have))


def ifname(index, netns=None):
    """The name of the interface with ifindex ``index`` in ``netns`` (default:
    the calling thread's namespace). Raises :class:`NetlinkNotFoundError`."""
    with in_netns(netns):
        try:
            return socket.if_indextoname(index)
        except OSError:
            pass
    raise error(_errno.ENODEV, "look up ifindex %d" % index,
                "no such interface in %s" % _describe_netns(netns))


# ------------------------------------------------------------------ values

@attrs.frozen
class LinkInfo:
    """A snapshot of one interface as the kernel reported it."""

    index: int
    name: str
    kind: str | None        # "veth", "bridge", "dummy", ...; None for lo and devices without one
    mac: str | None         # "aa:bb:cc:dd:ee:ff"
    mtu: int
    up: bool                # administratively up (IFF_UP)
    carrier: bool
    operstate: str          # "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN", ...
    master: int | None      # ifindex of the bridge this is a port of
    flags: int = 0          # IFF_* flags


@attrs.frozen
class RouteInfo:
    """A snapshot of one route from the main (or a given) routing table."""

    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    oif: int | None
    table: int
    metric: int | None
    scope: int
    protocol: int


def _link_info(msg):
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return LinkInfo(
        index=msg["index"], name=msg.get_attr("IFLA_IFNAME"), kind=kind,
        mac=msg.get_attr("IFLA_ADDRESS"), mtu=msg.get_attr("IFLA_MTU"),
        up=bool(msg["flags"] & IFF_UP), carrier=bool(msg.get_attr("IFLA_CARRIER")),
        operstate=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
        master=msg.get_attr("IFLA_MASTER") or None, flags=msg["flags"])


def _route_info(msg):
    family = msg["family"]
    dst = msg.get_attr("RTA_DST")
    if dst is None:
        dst = "0.0.0.0" if family == socket.AF_INET else "::"
    gw = msg.get_attr("RTA_GATEWAY")
    return RouteInfo(
        dst=ipaddress.ip_network("%s/%d" % (dst, msg["dst_len"]), strict=False),
        gateway=ipaddress.ip_address(gw) if gw else None,
        oif=msg.get_attr("RTA_OIF"), table=msg.get_attr("RTA_TABLE") or msg["table"],
        metric=msg.get_attr("RTA_PRIORITY"), scope=msg["scope"], protocol=msg["proto"])


# ------------------------------------------------------------------ rtnetlink

class _Worker:
    """One daemon thread that runs submitted callables in order."""

    def __init__(self, name):
        self._name = name
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def call(self, fn, *args):
        if threading.current_thread() is self._thread:
            return fn(*args)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name,
                                                daemon=True)
                self._thread.start()
        fut = Future()
        self._queue.put((fut, fn, args))
        return fut.result()

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def stop(self):
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            self._queue.put(None)
            thread.join()


class Rtnl:
    """An rtnetlink handle bound to one network namespace (links, addresses,
    routes, neighbours). Usable from any thread; a context manager.

    ``netns`` is a name, path, fd, object with ``fileno()`` or None (the
    namespace of the thread creating the handle). ``name`` is used in error
    messages. The netlink socket is created inside the namespace and stays
    bound to it; requests run on a private worker thread.

    Needs CAP_NET_ADMIN to change anything (CAP_SYS_ADMIN to reach another
    namespace). Every method raises :class:`NetlinkError` subclasses.
    """

    def __init__(self, netns=None, name=None):
        self.name = name
        self._where = "netns %s" % name if name else _describe_netns(netns)
        self._worker = _Worker("pybpfnet-rtnl-%s" % (name or "here"))
        self._ipr = None
        if netns is None:
            self._nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        else:
            with _open_netns(netns) as fd:
                self._nsfd = os.dup(fd)
        os.set_inheritable(self._nsfd, False)
        try:
            self._worker.call(self._open)
        except BaseException:
            self.close()
            raise

    def _open(self):
        from pyroute2 import IPRoute
        with in_netns(self._nsfd):
            self._ipr = IPRoute(ext_ack=True, strict_check=False)

    def close(self):
        """Close the netlink socket and stop the worker thread. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is not None:
            ipr, self._ipr = self._ipr, None
            if ipr is not None:
                with contextlib.suppress(Exception):
                    worker.call(ipr.close)
            worker.stop()
        if self._nsfd is not None:
            os.close(self._nsfd)
            self._nsfd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._worker is None

    # -- plumbing

    def _run(self, context, fn, *args):
        """Run fn(ipr, *args) on the worker; pyroute2 errors become NetlinkError
        with ``context`` + " in <netns>"."""
        if self._worker is None:
            raise error(_errno.EBADF, context, "the netlink handle for %s is closed"
                        % self._where)

        def job():
            from pyroute2.netlink.exceptions import NetlinkError as PyrNetlinkError
            try:
                return fn(self._ipr, *args)
            except PyrNetlinkError as exc:
                return _Failure(exc)

        res = self._worker.call(job)
        if isinstance(res, _Failure):
            raise error(res.errno, "%s in %s" % (context, self._where), res.detail)
        return res

    def _index(self, ref):
        """ifindex for a name or an int index (checked to exist)."""
        if isinstance(ref, int):
            return ref
        valid_ifname(ref)

        def get(ipr):
            found = ipr.link_lookup(ifname=ref)
            if found:
                return found[0]
            return [m.get_attr("IFLA_IFNAME") for m in ipr.get_links()]

        res = self._run("look up interface %r" % ref, get)
        if isinstance(res, list):
            raise error(_errno.ENODEV, "look up interface %r" % ref,
                        "no such interface in %s (it has: %s)"
                        % (self._where, ", ".join(res)))
        return res

    def _label(self, ref):
        return ref if isinstance(ref, str) else "ifindex %d" % ref

    # -- links

    def links(self):
        """[LinkInfo, ...] of every interface, sorted by index."""
        msgs = self._run("list links", lambda ipr: list(ipr.get_links()))
        return sorted((_link_info(m) for m in msgs), key=lambda i: i.index)

    def link(self, ref):
        """LinkInfo of one interface (name or index)."""
        index = self._index(ref)
        msgs = self._run("get link %s" % self._label(ref),
                         lambda ipr: list(ipr.get_links(index)))
        return _link_info(msgs[0])

    def exists(self, name):
        """True if an interface of that name exists."""
        return bool(self._run("look up interface %r" % name,
                              lambda ipr: ipr.link_lookup(ifname=name)))

    def _create(self, kind, context, request):
        try:
            self._run(context, request)
        except NetlinkError as exc:
            if exc.errno != _errno.EOPNOTSUPP:
                raise
            raise NetlinkNotSupportedError(
                "%s links" % kind, "%s in %s" % (context, self._where),
                "this kernel has no %r link type (not built in, module not loaded)"
                % kind) from None

    def add_veth(self, name, peer, peer_netns=None, mtu=None):
        """Create veth ``name`` here and its peer ``peer`` in ``peer_netns`` (fd,
        object with fileno(), or None: here). One request: either both ends
        exist afterwards or neither."""
        valid_ifname(name)
        valid_ifname(peer)
        peer_spec = {"ifname": peer}
        extra = {}
        if mtu is not None:
            peer_spec["mtu"] = extra["mtu"] = int(mtu)
        ctx = "create veth %s (peer %s)" % (name, peer)
        if peer_netns is not None:
            fd = peer_netns if isinstance(peer_netns, int) else peer_netns.fileno()
            peer_spec["net_ns_fd"] = fd
            ctx = "create veth %s (peer %s in %s)" % (name, peer, _describe_netns(peer_netns))
        self._create("veth", ctx, lambda ipr: ipr.link("add", ifname=name, kind="veth",
                                                       peer=peer_spec, **extra))
        return self._index(name)

    def add_link(self, name, kind, mtu=None):
        """Create a link of a kind that needs no options ("bridge", "dummy", ...)."""
        valid_ifname(name)
        extra = {} if mtu is None else {"mtu": int(mtu)}
        self._create(kind, "create %s %s" % (kind, name),
                     lambda ipr: ipr.link("add", ifname=name, kind=kind, **extra))
        return self._index(name)

    def set_link(self, ref, *, up=None, mtu=None, master=None, mac=None, name=None,
                 netns=None, context=None):
        """Change a link: admin state, MTU, bridge master (an index, name, or 0
        to release), MAC, name, or namespace (fd or fileno() owner; with
        ``name`` the link is renamed on the way)."""
        index = self._index(ref)
        kw = {}
        what = []
        if up is not None:
            kw["state"] = "up" if up else "down"
            what.append("set %s %s" % (self._label(ref), kw["state"]))
        if mtu is not None:
            kw["mtu"] = int(mtu)
            what.append("set mtu %d on %s" % (kw["mtu"], self._label(ref)))
        if master is not None:
            kw["master"] = master if isinstance(master, int) else self._index(master)
            what.append("set master of %s to %s" % (self._label(ref), master)
                        if master else "release %s from its master" % self._label(ref))
        if mac is not None:
            kw["address"] = mac
            what.append("set mac %s on %s" % (mac, self._label(ref)))
        if name is not None:
            kw["ifname"] = valid_ifname(name)
            if netns is None:
                what.append("rename %s to %s" % (self._label(ref), name))
        if netns is not None:
            kw["net_ns_fd"] = netns if isinstance(netns, int) else netns.fileno()
            what.append("move %s to %s" % (self._label(ref), _describe_netns(netns))
                        + (" as %s" % name if name else ""))
        if not kw:
            return
        self._run(context or ", ".join(what), lambda ipr: ipr.link("set", index=index, **kw))

    def del_link(self, ref):
        """Delete a link (for a veth, both ends go)."""
        index = self._index(ref)
        self._run("delete link %s" % self._label(ref),
                  lambda ipr: ipr.link("del", index=index))

    # -- addresses

    def add_address(self, ref, address, nodad=True):
        """Add an address (``ipaddress.ip_interface`` or "10.0.0.1/24") to a link.
        IPv6 addresses get IFA_F_NODAD so they are usable at once (no tentative
        period) unless ``nodad`` is false."""
        iface = ipaddress.ip_interface(address)
        index = self._index(ref)
        kw = {"index": index, "address": str(iface.ip),
              "prefixlen": iface.network.prefixlen}
        if iface.version == 6 and nodad:
            kw["flags"] = IFA_F_NODAD
        self._run("add address %s to %s" % (iface, self._label(ref)),
                  lambda ipr: ipr.addr("add", **kw))

    def del_address(self, ref, address):
        """Remove an address from a link."""
        iface = ipaddress.ip_interface(address)
        index = self._index(ref)
        self._run("delete address %s from %s" % (iface, self._label(ref)),
                  lambda ipr: ipr.addr("del", index=index, address=str(iface.ip),
                                       prefixlen=iface.network.prefixlen))

    def addresses(self, ref=None, family=None):
        """[(ifindex, ip_interface), ...]; of one link if ``ref`` is given."""
        kw = {}
        if ref is not None:
            kw["index"] = self._index(ref)
        if family is not None:
            kw["family"] = family
        msgs = self._run("list addresses", lambda ipr: list(ipr.get_addr(**kw)))
        return [(m["index"], ipaddress.ip_interface(
            "%s/%d" % (m.get_attr("IFA_ADDRESS"), m["prefixlen"]))) for m in msgs]

    # -- routes

    def _route_args(self, dst, gateway, oif, metric, table):
        net = ipaddress.ip_network(dst, strict=False) if dst != "default" else None
        if gateway is not None:
            gateway = ipaddress.ip_address(gateway)
        version = net.version if net is not None else (gateway.version if gateway else 4)
        kw = {"family": socket.AF_INET if version == 4 else socket.AF_INET6}
        if net is not None and net.prefixlen:
            kw["dst"] = str(net.network_address)
            kw["dst_len"] = net.prefixlen
        else:
            kw["dst_len"] = 0
        if gateway is not None:
            if gateway.version != version:
                raise ValueError("gateway %s and destination %s are of different families"
                                 % (gateway, dst))
            kw["gateway"] = str(gateway)
        if oif is not None:
            kw["oif"] = self._index(oif)
        if metric is not None:
            kw["priority"] = int(metric)
        if table is not None:
            kw["table"] = int(table)
        label = str(net) if net is not None else "default"
        return kw, label

    def add_route(self, dst, gateway=None, oif=None, metric=None, table=None):
        """Add a route to ``dst`` ("10.0.2.0/24", "fd00:2::/64" or "default") via
        ``gateway`` and/or out of link ``oif``."""
        kw, label = self._route_args(dst, gateway, oif, metric, table)
        desc = "add route %s" % label
        if gateway is not None:
            desc += " via %s" % gateway
        if oif is not None:
            desc += " dev %s" % self._label(oif)
        self._run(desc, lambda ipr: ipr.route("add", **kw))

    def del_route(self, dst, gateway=None, oif=None, metric=None, table=None):
        """Delete a route (same arguments as :meth:`add_route`)."""
        kw, label = self._route_args(dst, gateway, oif, metric, table)
        self._run("delete route %s" % label, lambda ipr: ipr.route("del", **kw))

    def routes(self, family=None, table=254):
        """[RouteInfo, ...] of one table (default: main), both families unless
        ``family`` is given."""
        families = [family] if family else [socket.AF_INET, socket.AF_INET6]

        def dump(ipr):
            out = []
            for fam in families:
                out += list(ipr.get_routes(family=fam, table=table))
            return out

        msgs = self._run("list routes", dump)
        return [_route_info(m) for m in msgs if m["type"] == 1]  # RTN_UNICAST

    def route_get(self, address):
        """The kernel's route to ``address`` (``ip route get``) as
        ``(gateway or None, oif, preferred source or None)``. Raises
        NetlinkError (ENETUNREACH, ...) naming the address."""
        ip = ipaddress.ip_address(address)

        def get(ipr):
            return list(ipr.route("get", dst=str(ip)))

        for m in self._run("route get %s" % ip, get):
            gw, src = m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_PREFSRC")
            return (ipaddress.ip_address(gw) if gw else None, m.get_attr("RTA_OIF"),
                    ipaddress.ip_address(src) if src else None)
        raise error(_errno.ENETUNREACH, "route get %s in %s" % (ip, self._where))

    # -- neighbours

    def neighbours(self):
        """{(ifindex, ip_address): "aa:bb:.."} of the usable neighbour
        entries (ARP and NDP): not INCOMPLETE or FAILED, with an address."""
        def dump(ipr):
            out = []
            for fam in (socket.AF_INET, socket.AF_INET6):
                out += list(ipr.get_neighbours(family=fam))
            return out

        out = {}
        for m in self._run("list neighbours", dump):
            dst, mac = m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")
            if m["state"] & (NUD_INCOMPLETE | NUD_FAILED) or not dst or not mac:
                continue
            out[(m["ifindex"], ipaddress.ip_address(dst))] = mac
        return out

    def add_neighbour(self, ref, address, mac):
        """Add a permanent neighbour (ARP/NDP) entry: ``address`` is at ``mac`` on the link."""
        ip = ipaddress.ip_address(address)
        index = self._index(ref)
        self._run("add neighbour %s lladdr %s on %s" % (ip, mac, self._label(ref)),
                  lambda ipr: ipr.neigh("add", dst=str(ip), lladdr=mac, ifindex=index,
                                        state=NUD_PERMANENT,
                                        family=socket.AF_INET if ip.version == 4
                                        else socket.AF_INET6))


class _Failure:
    """A pyroute2 NetlinkError carried back from the worker as plain data."""

    __slots__ = ("errno", "detail")

    def __init__(self, exc):
        code = exc.code if isinstance(exc.code, int) and exc.code > 0 else _errno.EIO
        self.errno = code
        self.detail = None
        text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else ""
        if text and text != os.strerror(code):
            # the kernel's extended ack message ("MTU too low", ...)
            self.detail = "%s (%s)" % (os.strerror(code), text)
        elif code == _errno.EIO and exc.code != _errno.EIO:
            self.detail = "netlink error %s: %s" % (exc.code, text or "no detail")
