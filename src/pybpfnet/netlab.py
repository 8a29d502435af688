"""Network lab: throwaway network namespaces joined by veth pairs and bridges,
with addresses (IPv4/IPv6), routes and MTUs, for tests and examples.

Everything goes through netlink (pyroute2, via :mod:`pybpfnet._netlink`);
nothing shells out to ``ip``. A :class:`Lab` is a context manager: leaving it
kills the processes it started, deletes the links and removes the namespaces,
also when the body raised or was interrupted (Ctrl-C during teardown is held
back until teardown is done).

Names never collide between concurrent runs: a namespace is called
``<prefix>-<pid>-<random>-<label>`` (``pbn-4242-a1b2c3-client``). Every link
the lab makes lives inside one of its own namespaces, never in the caller's,
so interface names (``eth0``, ``br0``) only have to be unique per namespace
and a lab can never clash with, or leave anything in, the host's interfaces.
Addresses are only ever configured in the lab's namespaces.

Code "inside" a namespace runs in the calling thread with its network
namespace switched (``setns(2)`` acts on one thread) and switched back:
:meth:`Namespace.enter`, :meth:`Namespace.run`. Sockets and processes made
there stay in the namespace. This is also how BPF programs are attached to a
lab interface: the bpf() attach calls resolve ifindexes in the caller's
namespace.

Needs Linux >= 3.17 (``/proc/thread-self``), CAP_SYS_ADMIN (namespaces,
mounts) and CAP_NET_ADMIN (links, addresses, routes); CAP_NET_RAW for
:meth:`Namespace.ping`. Root has all of them.
"""

import atexit
import contextlib
import errno as _errno
import ipaddress
import os
import random
import re
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import traceback
import warnings
import weakref

import attrs

from pybpfnet import _netlink
from pybpfnet._netlink import (LinkInfo, NetlinkError, NetlinkExistsError,
                               NetlinkNotFoundError, NetlinkNotSupportedError,
                               NetlinkPermissionError, RouteInfo)

__all__ = [
    "Lab", "Namespace", "Interface", "VethPair", "HostPair", "LinkInfo", "RouteInfo",
    "NetlinkError", "NetlinkExistsError", "NetlinkNotFoundError", "NetlinkPermissionError",
    "NetlinkNotSupportedError", "remove_stale",
]

_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]{0,11}\Z")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")

#: Seconds a lab process gets between SIGTERM and SIGKILL at teardown.
TERMINATE_GRACE = 2.0

_live_labs = weakref.WeakSet()


def _ifname_error(ns, op, name):
    return NetlinkExistsError(_errno.EEXIST, op, "an interface named %r already exists in "
                              "netns %s" % (name, ns.name))


# ------------------------------------------------------------------ Interface

class Interface:
    """A handle on one interface (by name) in one lab namespace.

    Properties read the kernel each time (``ifindex``, ``mac``, ``mtu``,
    ``is_up``); methods change it. :meth:`move` updates the handle in place.
    ``str(iface)`` is the interface name.
    """

    __slots__ = ("ns", "name")

    def __init__(self, ns, name):
        self.ns = ns
        self.name = name

    def __repr__(self):
        return "<Interface %s in netns %s>" % (self.name, self.ns.name)

    def __str__(self):
        return self.name

    def __eq__(self, other):
        if not isinstance(other, Interface):
            return NotImplemented
        return self.ns is other.ns and self.name == other.name

    def __hash__(self):
        return hash((id(self.ns), self.name))

    @property
    def ifindex(self):
        """The interface index (in its namespace)."""
        return self.ns.ifindex(self.name)

    def info(self):
        """A :class:`LinkInfo` snapshot (index, kind, mac, mtu, up, carrier, master)."""
        return self.ns.link(self.name)

    @property
    def mac(self):
        """The MAC address, "aa:bb:cc:dd:ee:ff"."""
        return self.info().mac

    @property
    def mtu(self):
        """The MTU."""
        return self.info().mtu

    @property
    def is_up(self):
        """True if administratively up."""
        return self.info().up

    @property
    def kind(self):
        """The link kind: "veth", "bridge", "dummy", ..."""
        return self.info().kind

    def add_address(self, address):
        """Add an address ("10.0.0.1/24", "fd00::1/64"); see :meth:`Namespace.add_address`."""
        self.ns.add_address(self, address)

    def addresses(self, *, link_local=False):
        """The addresses on this interface (``ip_interface`` values)."""
        return self.ns.addresses(self, link_local=link_local)

    def set_up(self):
        """Bring the interface up."""
        self.ns.set_up(self)

    def set_down(self):
        """Bring the interface down."""
        self.ns.set_down(self)

    def set_mtu(self, mtu):
        """Set the MTU."""
        self.ns.set_mtu(self, mtu)

    def move(self, other, *, name=None, up=None):
        """Move to lab namespace ``other`` (renamed to ``name`` if given); this
        handle follows it. See :meth:`Namespace.move`. Returns self."""
        moved = self.ns.move(self, other, name=name, up=up)
        self.ns, self.name = moved.ns, moved.name
        return self


class VethPair:
    """The two ends of a veth pair: ``.a`` and ``.b`` (:class:`Interface`);
    unpacks as ``a, b = lab.veth(...)``."""

    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b

    def __iter__(self):
        return iter((self.a, self.b))

    def __repr__(self):
        return "<VethPair %s/%s <-> %s/%s>" % (self.a.ns.label, self.a.name,
                                               self.b.ns.label, self.b.name)


@attrs.frozen
class HostPair:
    """Two namespaces joined by a veth, addressed and up (:meth:`Lab.two_hosts`).

    ``client_ip``/``server_ip`` are IPv4 addresses (None without v4),
    ``client_ip6``/``server_ip6`` IPv6 ones (None without v6);
    ``network``/``network6`` the subnets.
    """

    client: "Namespace"
    server: "Namespace"
    client_if: Interface
    server_if: Interface
    client_ip: ipaddress.IPv4Address | None
    server_ip: ipaddress.IPv4Address | None
    client_ip6: ipaddress.IPv6Address | None
    server_ip6: ipaddress.IPv6Address | None
    network: ipaddress.IPv4Network | None
    network6: ipaddress.IPv6Network | None


# ------------------------------------------------------------------ Namespace

class Namespace:
    """A network namespace owned by a :class:`Lab` (``lab.netns(label)``).

    ``label`` is the short name given to the lab, ``name`` the real, unique
    name in /run/netns, ``path`` its bind mount. Methods that take ``iface``
    accept an interface name or an :class:`Interface` of this namespace.
    Removed with its lab; afterwards every method raises
    :class:`NetlinkNotFoundError`.

    Needs CAP_SYS_ADMIN and CAP_NET_ADMIN. Failures raise
    :class:`NetlinkError` subclasses whose message names the operation, the
    object and the namespace; bad arguments raise ValueError/TypeError before
    anything is changed.
    """

    def __init__(self, lab, label, name, path):
        self.lab = lab
        self.label = label
        self.name = name
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._rtnl = None
        self._rtnl_lock = threading.Lock()

    def __repr__(self):
        state = "" if self._fd is not None else " (removed)"
        return "<Namespace %s%s>" % (self.name, state)

    def fileno(self):
        """An fd referring to the namespace (valid until the lab closes); usable
        with ``setns(2)`` or as ``IFLA_NET_NS_FD``."""
        if self._fd is None:
            raise NetlinkNotFoundError(
                _errno.ENOENT, "use netns %s" % self.name,
                "the namespace was removed (lab %s is closed)" % self.lab.id)
        return self._fd

    @property
    def inode(self):
        """The namespace's inode number (as in ``/proc/<pid>/ns/net``)."""
        return os.fstat(self.fileno()).st_ino

    @property
    def removed(self):
        """True once the lab removed this namespace."""
        return self._fd is None

    def _rt(self):
        self.fileno()
        with self._rtnl_lock:
            if self._rtnl is None:
                self._rtnl = _netlink.Rtnl(self, name=self.name)
            return self._rtnl

    def _ifname(self, iface):
        if isinstance(iface, Interface):
            if iface.ns is not self:
                raise ValueError("%r is not in netns %s" % (iface, self.name))
            return iface.name
        if isinstance(iface, str):
            return iface
        raise TypeError("iface must be an interface name or an Interface, not %s"
                        % type(iface).__name__)

    def _free_name(self, base, reserved=()):
        taken = {i.name for i in self.links()} | set(reserved)
        n = 0
        while "%s%d" % (base, n) in taken:
            n += 1
        return "%s%d" % (base, n)

    def _unjoined_groups(self):
        """{(ifname, group)} of IPv6 solicited-node groups that up links with
        carrier will join but have not joined yet."""
        links = {i.index: i for i in self.links()
                 if i.up and i.carrier and not i.flags & (_netlink.IFF_LOOPBACK
                                                          | _netlink.IFF_NOARP)}
        if not links:
            return set()
        want = {(links[idx].name, _solicited_node(a.ip))
                for idx, a in self._rt().addresses(family=socket.AF_INET6) if idx in links}
        if not want:
            return set()
        have = set()
        with self.enter():
            try:
                with open("/proc/thread-self/net/igmp6") as f:
                    for line in f:
                        fields = line.split()
                        have.add((fields[1], fields[2]))
            except FileNotFoundError:
                return set()
        return want - have

    def _teardown_links(self):
        rt = self._rtnl
        if rt is None and self._fd is not None:
            rt = self._rt()
        if rt is None:
            return
        for info in reversed(rt.links()):
            if info.name == "lo":
                continue
            try:
                rt.del_link(info.index)
            except NetlinkNotFoundError:
                pass  # the peer of a veth deleted just before
            except NetlinkError as exc:
                if exc.errno != _errno.EOPNOTSUPP:  # a device that cannot be deleted
                    raise

    def _release(self):
        """Close the netlink handle and the fd (the lab then unmounts)."""
        with self._rtnl_lock:
            rt, self._rtnl = self._rtnl, None
        if rt is not None:
            rt.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- running code inside

    @contextlib.contextmanager
    def enter(self):
        """Context manager: the *current thread* runs in this namespace inside the
        block and returns to its previous namespace after it, even on errors.

        Sockets created, and processes and threads started, inside the block
        belong to this namespace (and stay there afterwards); interface names and
        indexes resolve here, so attach BPF programs to lab interfaces inside
        the block. Threads already running are not affected. Nests. Do not ``await``
        inside it: other coroutines of the loop would run in the namespace.

        Needs CAP_SYS_ADMIN. Raises :class:`NetlinkError`.
        """
        with _netlink.in_netns(self):
            yield self

    def run(self, fn, /, *args, **kwargs):
        """Call ``fn(*args, **kwargs)`` with the current thread in this namespace
        and return its result (its exceptions propagate). See :meth:`enter`."""
        with self.enter():
            return fn(*args, **kwargs)

    def popen(self, args, **kwargs):
        """Start a command in this namespace: ``subprocess.Popen(args, **kwargs)``.

        The child is forked from a thread switched into the namespace (no
        ``ip netns exec``, no ``preexec_fn``), in a new session unless
        ``start_new_session`` says otherwise. The lab tracks it: at teardown it
        gets SIGTERM, then SIGKILL after :data:`TERMINATE_GRACE` seconds, with
        the processes of its group and anything else still in the namespace.
        Raises what ``Popen`` raises (``FileNotFoundError``, ...).
        """
        self.lab._check_open()
        own_group = kwargs.setdefault("start_new_session", True)
        with self.enter():
            proc = subprocess.Popen(args, **kwargs)
        self.lab._track_process(proc, own_group)
        return proc

    def run_process(self, args, *, timeout=60, **kwargs):
        """Run a command in this namespace to completion:
        ``subprocess.run(args, timeout=timeout, **kwargs)`` -> CompletedProcess."""
        self.lab._check_open()
        with self.enter():
            return subprocess.run(args, timeout=timeout, **kwargs)

    def check_output(self, args, *, timeout=60, **kwargs):
        """Run a command in this namespace and return its output:
        ``subprocess.check_output``; raises ``CalledProcessError`` on failure."""
        self.lab._check_open()
        with self.enter():
            return subprocess.check_output(args, timeout=timeout, **kwargs)

    # -- sockets

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
        """A ``socket.socket`` created in (and staying bound to) this namespace.
        The lab closes it at teardown if it is still open."""
        self.lab._check_open()
        with self.enter():
            sock = socket.socket(family, type, proto)
        self.lab._track_socket(sock)
        return sock

    def create_connection(self, address, timeout=10.0, source_address=None):
        """``socket.create_connection`` from this namespace: a connected TCP socket."""
        self.lab._check_open()
        with self.enter():
            sock = socket.create_connection(_hostport(address), timeout, source_address)
        self.lab._track_socket(sock)
        return sock

    def create_server(self, address, *, family=None, backlog=None, reuse_port=False):
        """``socket.create_server`` in this namespace: a listening TCP socket
        bound to ``address`` ((host, port); port 0 picks one, see
        ``getsockname()``). The family follows the host address by default."""
        self.lab._check_open()
        host, port = _hostport(address)
        if family is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.enter():
            sock = socket.create_server((host, port), family=family, backlog=backlog,
                                        reuse_port=reuse_port)
        self.lab._track_socket(sock)
        return sock

    def ping(self, dst, *, count=1, timeout=1.0, size=56):
        """Send ``count`` ICMP (or ICMPv6) echo requests to ``dst`` from this
        namespace, one at a time, waiting up to ``timeout`` seconds for each
        reply; return the number of replies. Real ICMP over raw sockets, no
        ``ping`` binary needed.

        Needs CAP_NET_RAW. Raises ``OSError`` naming the destination when the
        packet cannot be sent (no route, ...).
        """
        ip = ipaddress.ip_address(dst)
        if ip.version == 4:
            fam, proto, req, rep = socket.AF_INET, socket.IPPROTO_ICMP, 8, 0
        else:
            fam, proto, req, rep = socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129
        with self.enter():
            sock = socket.socket(fam, socket.SOCK_RAW, proto)
        ident = random.getrandbits(16)
        got = 0
        with sock:
            for seq in range(1, count + 1):
                payload = os.urandom(size)
                header = struct.pack("!BBHHH", req, 0, 0, ident, seq)
                if ip.version == 4:
                    csum = _inet_checksum(header + payload)
                    header = struct.pack("!BBHHH", req, 0, csum, ident, seq)
                # ICMPv6: the kernel fills in the checksum on raw ICMPv6 sockets
                try:
                    sock.sendto(header + payload, (str(ip), 0))
                except OSError as exc:
                    raise OSError(exc.errno, "ping %s from netns %s: %s"
                                  % (ip, self.name, exc.strerror)) from None
                deadline = time.monotonic() + timeout
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    sock.settimeout(left)
                    try:
                        data, addr = sock.recvfrom(65535)
                    except (socket.timeout, BlockingIOError):
                        break
                    if ip.version == 4:
                        data = data[(data[0] & 0x0F) * 4:]
                    if (len(data) >= 8 and data[0] == rep
                            and struct.unpack("!HH", data[4:8]) == (ident, seq)
                            and data[8:] == payload
                            and ipaddress.ip_address(addr[0].split("%")[0]) == ip):
                        got += 1
                        break
        return got

    # -- links

    def links(self):
        """[:class:`LinkInfo`, ...] of every interface here (lo included), by index."""
        return self._rt().links()

    def link(self, iface):
        """The :class:`LinkInfo` of one interface. Raises :class:`NetlinkNotFoundError`."""
        return self._rt().link(self._ifname(iface))

    def interface(self, name):
        """An :class:`Interface` handle for an existing interface."""
        self.ifindex(name)
        return Interface(self, name)

    def has_link(self, name):
        """True if an interface of that name exists here."""
        return self._rt().exists(name)

    def ifindex(self, iface):
        """The ifindex of an interface here. Raises :class:`NetlinkNotFoundError`
        naming the interfaces that exist."""
        return _netlink.ifindex(self._ifname(iface), self)

    def ifname(self, index):
        """The name of the interface with that index here."""
        return _netlink.ifname(index, self)

    def set_up(self, iface):
        """Bring an interface up (IFF_UP). Returns when IPv6 on the links that
        got a carrier is ready to answer neighbour solicitations."""
        self._rt().set_link(self._ifname(iface), up=True)
        _settle_ipv6(self.lab._namespaces.values())

    def set_down(self, iface):
        """Bring an interface down."""
        self._rt().set_link(self._ifname(iface), up=False)

    def set_mtu(self, iface, mtu):
        """Set an interface's MTU. The kernel's limits apply (veth: 68..65535;
        IPv6 turns itself off on a link below 1280)."""
        self._rt().set_link(self._ifname(iface), mtu=mtu)

    def set_mac(self, iface, mac):
        """Set an interface's MAC address ("02:00:00:00:00:01")."""
        self._rt().set_link(self._ifname(iface), mac=mac)

    def delete_link(self, iface):
        """Delete an interface (a veth takes its peer with it)."""
        self._rt().del_link(self._ifname(iface))

    def move(self, iface, other, *, name=None, up=None):
        """Move an interface to lab namespace ``other``, renamed to ``name`` if
        given; returns the :class:`Interface` there.

        The kernel brings a moved link down and drops its addresses; ``up``
        None restores the previous admin state, True/False forces one. Raises
        :class:`NetlinkExistsError` (nothing moved) when the name is taken in
        ``other``.
        """
        src = self._ifname(iface)
        if not isinstance(other, Namespace) or other.lab is not self.lab:
            raise ValueError("can only move to a namespace of the same lab, not %r" % (other,))
        dst = _netlink.valid_ifname(name) if name is not None else src
        if other is self:
            if name is not None and name != src:
                if self.has_link(dst):
                    raise _ifname_error(self, "rename %s" % src, dst)
                was_up = self.link(src).up
                if was_up:   # kernels before 6.x refuse to rename a link that is up
                    self._rt().set_link(src, up=False)
                self._rt().set_link(src, name=name)
                if up if up is not None else was_up:
                    self.set_up(dst)
            return Interface(self, dst)
        was_up = self.link(src).up
        if other.has_link(dst):
            raise _ifname_error(other, "move %s from netns %s to netns %s"
                                % (src, self.name, other.name), dst)
        self._rt().set_link(src, netns=other, name=name)
        if up if up is not None else was_up:
            other.set_up(dst)
        return Interface(other, dst)

    # -- addresses, routes, neighbours

    def add_address(self, iface, address):
        """Add an address ("10.0.0.1/24", "fd00::1/64", or an ``ip_interface``).

        IPv6 addresses are added without duplicate address detection
        (IFA_F_NODAD, and the lab sets accept_dad=0), and the call returns
        once the kernel listens for neighbour solicitations to the address,
        so it is usable at once. Raises :class:`NetlinkExistsError` if
        already there.
        """
        addr = _interface(address)
        self._rt().add_address(self._ifname(iface), addr)
        if addr.version == 6:
            _settle_ipv6([self])

    def del_address(self, iface, address):
        """Remove an address from an interface."""
        self._rt().del_address(self._ifname(iface), _interface(address))

    def addresses(self, iface=None, *, link_local=False):
        """Addresses (``ip_interface`` values) here, of one interface if given.
        IPv6 link-local (fe80::/10) ones only with ``link_local=True``."""
        name = self._ifname(iface) if iface is not None else None
        return [a for _, a in self._rt().addresses(name)
                if link_local or not a.ip.is_link_local]

    def add_route(self, dst, via=None, dev=None, *, metric=None, table=None):
        """Add a route to ``dst`` ("10.0.2.0/24", "fd00:2::/64", or "default")
        via gateway ``via`` and/or out of interface ``dev``."""
        self._rt().add_route(dst, gateway=via,
                             oif=self._ifname(dev) if dev is not None else None,
                             metric=metric, table=table)

    def del_route(self, dst, via=None, dev=None, *, metric=None, table=None):
        """Delete a route (same arguments as :meth:`add_route`)."""
        self._rt().del_route(dst, gateway=via,
                             oif=self._ifname(dev) if dev is not None else None,
                             metric=metric, table=table)

    def routes(self, family=None, *, table=254):
        """[:class:`RouteInfo`, ...] of the main table (or ``table``), both
        families unless ``family`` (socket.AF_INET/AF_INET6) is given."""
        return self._rt().routes(family=family, table=table)

    def add_neighbour(self, iface, address, mac):
        """A permanent ARP/NDP entry: ``address`` is at ``mac`` on ``iface``."""
        self._rt().add_neighbour(self._ifname(iface), address, mac)

    # -- sysctls

    def sysctl(self, key, value=None):
        """Read (``value`` None) or write a ``net.*`` sysctl of this namespace;
        returns the value as a string (after writing: the new value).

        Only ``net.*`` keys are per namespace; others would change the host
        and raise ValueError. Dots or slashes separate the parts
        ("net.ipv4.ip_forward", "net/ipv6/conf/eth0.10/forwarding").
        """
        parts = key.split("/") if "/" in key else key.split(".")
        if parts[0] != "net" or len(parts) < 2 or any(p in ("", "..") for p in parts):
            raise ValueError("sysctl %r: only net.* keys are per network namespace" % key)
        path = os.path.join("/proc/sys", *parts)
        op = "read" if value is None else "set"
        try:
            with self.enter():
                if value is not None:
                    with open(path, "w") as f:
                        f.write(str(int(value) if isinstance(value, bool) else value))
                with open(path) as f:
                    return f.read().strip()
        except OSError as exc:
            if isinstance(exc, NetlinkError):
                raise
            raise _netlink.error(exc.errno, "%s sysctl %s in netns %s" % (op, key, self.name)
                                 ) from None

    def set_forwarding(self, enabled=True):
        """Turn IPv4 and IPv6 forwarding on (or off) in this namespace."""
        self.sysctl("net.ipv4.ip_forward", int(bool(enabled)))
        if os.path.isdir("/proc/sys/net/ipv6"):
            self.sysctl("net.ipv6.conf.all.forwarding", int(bool(enabled)))


def _solicited_node(ip):
    return "ff0200000000000000000001ff" + ip.packed[-3:].hex()


def _settle_ipv6(namespaces, timeout=1.0):
    # Linux joins an address's solicited-node multicast group from a work
    # queue, after "ip addr add" (or link up) has returned; a Neighbor
    # Solicitation arriving before that is dropped and the sender retries
    # only after retrans_time (1 s). Wait until the joins are done so the
    # first packet gets through.
    deadline = time.monotonic() + timeout
    pending = list(namespaces)
    while pending:
        pending = [ns for ns in pending if ns._unjoined_groups()]
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.002)


def _interface(address):
    try:
        return ipaddress.ip_interface(address)
    except ValueError:
        raise ValueError("%r is not an address with a prefix length "
                         "(\"10.0.0.1/24\", \"fd00::1/64\")" % (address,)) from None


def _hostport(address):
    host, port = address[0], address[1]
    return str(host), int(port)


def _inet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ------------------------------------------------------------------ Lab

class Lab:
    """A set of network namespaces and links that is removed as a whole.

    ``with Lab() as lab:`` (or ``lab.close()``). Namespaces are named
    ``<prefix>-<pid>-<random>-<label>``; with ``unique=False`` simply
    ``<prefix>-<label>`` (handy for poking at a lab with ``ip netns exec``,
    but then two runs clash). Creating a namespace or link whose name is
    taken raises :class:`NetlinkExistsError` naming it, and a step that fails
    midway (:meth:`veth`, :meth:`bridge`, :meth:`two_hosts`, ...) undoes what it
    had done, so nothing half-made is left behind.

    Teardown (:meth:`close`, idempotent) kills the lab's processes and any
    other process in its namespaces, closes the sockets it made, deletes
    every link in its namespaces and removes the namespaces, in reverse
    order; it runs on exceptions and KeyboardInterrupt, holds back a Ctrl-C
    that arrives meanwhile until it is done, and also runs at interpreter exit
    for labs still open. A lab is thread-safe; a forked child never tears
    down its parent's lab.

    Needs Linux >= 3.17, CAP_SYS_ADMIN and CAP_NET_ADMIN.
    """

    def __init__(self, prefix="pbn", *, unique=True):
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise ValueError("lab prefix %r must be a letter then up to 11 letters/digits"
                             % (prefix,))
        self.prefix = prefix
        #: The common start of this lab's namespace names.
        self.id = ("%s-%d-%s" % (prefix, os.getpid(), secrets.token_hex(3))
                   if unique else prefix)
        self._lock = threading.RLock()
        self._namespaces = {}
        self._processes = []
        self._sockets = weakref.WeakSet()
        self._undo = None
        self._closed = False
        self._pid = os.getpid()
        frame = traceback.extract_stack(limit=3)[0]
        self._origin = "%s:%s" % (frame.filename, frame.lineno)
        _live_labs.add(self)

    def __repr__(self):
        return "<Lab %s: %s%s>" % (self.id, ", ".join(self._namespaces) or "empty",
                                   " (closed)" if self._closed else "")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except Exception as teardown_exc:
            if exc is None:
                raise
            # keep the body's exception (it is the cause); report teardown's too
            exc.add_note("then tearing down lab %s failed: %s" % (self.id, teardown_exc))
        return False

    def __del__(self):
        if getattr(self, "_closed", True) or getattr(self, "_pid", None) != os.getpid():
            return
        warnings.warn("Lab %s (made at %s) was not closed; removing it now"
                      % (self.id, self._origin), ResourceWarning, source=self)
        with contextlib.suppress(Exception):
            self.close()

    @property
    def closed(self):
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def namespaces(self):
        """{label: Namespace} of the lab's namespaces, in creation order."""
        return dict(self._namespaces)

    def __getitem__(self, label):
        return self._namespaces[label]

    def _check_open(self):
        if self._closed:
            raise NetlinkNotFoundError(_errno.ENOENT, "use lab %s" % self.id,
                                       "the lab is closed")

    def _own(self, ns):
        if not isinstance(ns, Namespace):
            raise TypeError("expected a Namespace of lab %s, not %r" % (self.id, ns))
        if ns.lab is not self:
            raise ValueError("%r belongs to another lab (%s), not %s"
                             % (ns, ns.lab.id, self.id))
        ns.fileno()
        return ns

    @contextlib.contextmanager
    def _transaction(self):
        """All-or-nothing: if the block fails, undo its recorded steps (newest first)."""
        with self._lock:
            self._check_open()
            outer = self._undo is None
            if outer:
                self._undo = []
            mark = len(self._undo)
            try:
                yield
            except BaseException as exc:
                while len(self._undo) > mark:
                    what, fn = self._undo.pop()
                    try:
                        fn()
                    except Exception as undo_exc:
                        exc.add_note("while undoing, could not %s: %s" % (what, undo_exc))
                raise
            finally:
                if outer:
                    self._undo = None

    def _on_undo(self, what, fn):
        if self._undo is not None:
            self._undo.append((what, fn))

    def _track_process(self, proc, own_group):
        with self._lock:
            self._processes.append((proc, own_group))

    def _track_socket(self, sock):
        self._sockets.add(sock)

    # -- building

    def netns(self, label):
        """Create a namespace; ``label`` (letters, digits, '_', '.', '-') names it in
        this lab and ends its real name. Its loopback is up and IPv6 duplicate
        address detection is off.

        Raises :class:`NetlinkExistsError` if the lab already has ``label`` or
        the real name is taken (nothing is created then), ValueError for a bad
        label.
        """
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ValueError("namespace label %r must be 1-32 letters, digits, '_', '.' or '-' "
                             "(not first)"
                             % (label,))
        with self._transaction():
            if label in self._namespaces:
                raise NetlinkExistsError(
                    _errno.EEXIST, "create netns %r in lab %s" % (label, self.id),
                    "the lab already has a namespace with this label (%s)"
                    % self._namespaces[label].name)
            name = "%s-%s" % (self.id, label)
            path = _netlink.create_netns(name)
            try:
                ns = Namespace(self, label, name, path)
            except BaseException:
                _netlink.remove_netns(name)
                raise
            self._namespaces[label] = ns
            self._on_undo("remove netns %s" % name, lambda: self._remove_ns(ns))
            ns.set_up("lo")
            if os.path.isdir("/proc/sys/net/ipv6"):
                # for link-local addresses; global ones are added with IFA_F_NODAD
                ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
                ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
            return ns

    def _remove_ns(self, ns):
        self._namespaces.pop(ns.label, None)
        ns._release()
        _netlink.remove_netns(ns.name)

    def veth(self, ns_a, ns_b, *, name_a=None, name_b=None, mtu=None, up=True):
        """A veth pair with one end in ``ns_a`` and the other in ``ns_b`` (may be
        the same namespace). Default names are the first free ``ethN`` in
        each namespace. Both ends get ``mtu`` if given and are brought up
        unless ``up`` is false. Returns a :class:`VethPair`.

        Raises :class:`NetlinkExistsError` naming the interface and namespace
        when a name is taken (nothing is created), ValueError for a bad name.
        """
        with self._transaction():
            self._own(ns_a)
            self._own(ns_b)
            for n in (name_a, name_b):
                if n is not None:
                    _netlink.valid_ifname(n)
            name_a = name_a or ns_a._free_name("eth", reserved=[name_b] if name_b else ())
            name_b = name_b or ns_b._free_name(
                "eth", reserved=[name_a] if ns_b is ns_a else ())
            if ns_a is ns_b and name_a == name_b:
                raise ValueError("both ends of a veth in one namespace need different "
                                 "names (got %r twice)" % name_a)
            for ns, n in ((ns_a, name_a), (ns_b, name_b)):
                if ns.has_link(n):
                    raise _ifname_error(ns, "create veth %s <-> %s" % (name_a, name_b), n)
            ns_a._rt().add_veth(name_a, name_b, peer_netns=ns_b, mtu=mtu)
            self._on_undo("delete veth %s in netns %s" % (name_a, ns_a.name),
                          lambda: ns_a.delete_link(name_a))
            pair = VethPair(Interface(ns_a, name_a), Interface(ns_b, name_b))
            if up:
                ns_a._rt().set_link(name_a, up=True)
                ns_b._rt().set_link(name_b, up=True)
                _settle_ipv6([ns_a, ns_b])
            return pair

    def bridge(self, ns, name=None, *, ports=(), mtu=None, up=True):
        """A bridge in ``ns`` (default name: first free ``brN``) with ``ports``
        (interfaces of ``ns``) attached and brought up. STP is off, so ports
        forward at once. Returns its :class:`Interface`.

        If a port cannot be attached (missing, already a port elsewhere) the
        bridge is deleted again and the error names the port.
        """
        with self._transaction():
            self._own(ns)
            ports = [ns._ifname(p) for p in ports]
            if name is not None:
                _netlink.valid_ifname(name)
            else:
                name = ns._free_name("br")
            if ns.has_link(name):
                raise _ifname_error(ns, "create bridge", name)
            rt = ns._rt()
            rt.add_link(name, "bridge", mtu=mtu)
            self._on_undo("delete bridge %s in netns %s" % (name, ns.name),
                          lambda: ns.delete_link(name))
            for port in ports:
                rt.set_link(port, master=name, up=True,
                            context="attach %s to bridge %s" % (port, name))
            if up:
                ns.set_up(name)
            return Interface(ns, name)

    def dummy(self, ns, name=None, *, mtu=None, up=True):
        """A dummy interface in ``ns`` (default name: first free ``dummyN``):
        a place to attach programs or hang addresses without traffic.

        Raises :class:`NetlinkNotSupportedError` on kernels built without
        CONFIG_DUMMY (a bridge without ports serves the same purposes)."""
        with self._transaction():
            self._own(ns)
            if name is not None:
                _netlink.valid_ifname(name)
            else:
                name = ns._free_name("dummy")
            if ns.has_link(name):
                raise _ifname_error(ns, "create dummy", name)
            ns._rt().add_link(name, "dummy", mtu=mtu)
            self._on_undo("delete dummy %s in netns %s" % (name, ns.name),
                          lambda: ns.delete_link(name))
            if up:
                ns.set_up(name)
            return Interface(ns, name)

    def two_hosts(self, *, v4=True, v6=True, mtu=None, subnet="10.0.0.0/24",
                  subnet6="fd00::/64", client="client", server="server"):
        """Two new namespaces ``client`` and ``server`` joined by a veth (``eth0``
        on both sides), up, with the first two host addresses of ``subnet``
        (IPv4) and ``subnet6`` (IPv6) on client and server. Returns a
        :class:`HostPair`. All or nothing: on failure no namespace is left.
        """
        if not (v4 or v6):
            raise ValueError("two_hosts needs v4, v6 or both")
        net4 = ipaddress.IPv4Network(subnet) if v4 else None
        net6 = ipaddress.IPv6Network(subnet6) if v6 else None
        for net in (net4, net6):
            if net is not None and net.num_addresses < 4:
                raise ValueError("subnet %s is too small for two hosts" % net)
        with self._transaction():
            c = self.netns(client)
            s = self.netns(server)
            pair = self.veth(c, s, name_a="eth0", name_b="eth0", mtu=mtu)
            ips = {}
            for fam, net in ((4, net4), (6, net6)):
                if net is None:
                    continue
                ca, sa = net[1], net[2]
                c.add_address(pair.a, "%s/%d" % (ca, net.prefixlen))
                s.add_address(pair.b, "%s/%d" % (sa, net.prefixlen))
                ips[fam] = (ca, sa)
            return HostPair(client=c, server=s, client_if=pair.a, server_if=pair.b,
                            client_ip=ips.get(4, (None, None))[0],
                            server_ip=ips.get(4, (None, None))[1],
                            client_ip6=ips.get(6, (None, None))[0],
                            server_ip6=ips.get(6, (None, None))[1],
                            network=net4, network6=net6)

    # -- teardown

    def close(self):
        """Tear the lab down: stop its processes (SIGTERM, then SIGKILL), kill
        any other process left in its namespaces, close the sockets it made,
        delete every link in its namespaces, remove the namespaces; newest
        first. Idempotent. Every step is tried even if an earlier one failed;
        the first failure is raised afterwards with the others as notes.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _live_labs.discard(self)
        if os.getpid() != self._pid:
            return  # a forked copy: the namespaces belong to the parent
        errors = []
        with _sigint_held():
            self._teardown(errors)
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note("also failed during teardown of lab %s: %s" % (self.id, other))
            raise first

    def _teardown(self, errors):
        def step(fn, *args):
            try:
                fn(*args)
            except Exception as exc:
                errors.append(exc)

        step(self._stop_processes)
        for sock in list(self._sockets):
            step(sock.close)
        nss = list(self._namespaces.values())[::-1]
        for ns in nss:
            step(self._kill_in_ns, ns)
        for ns in nss:
            step(ns._teardown_links)
        for ns in nss:
            step(ns._release)
        for ns in nss:
            step(_netlink.remove_netns, ns.name)
        self._namespaces.clear()

    def _stop_processes(self):
        procs = [(p, g) for p, g in self._processes if p.returncode is None]
        self._processes.clear()
        for p, group in procs:
            _signal_proc(p, group, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE
        for p, group in procs:
            while not _exited(p) and time.monotonic() < deadline:
                time.sleep(0.01)
        for p, group in procs:
            # the leader is not reaped yet, so its pid (and group id) cannot
            # have been reused: SIGKILL reaches only what it started
            _signal_proc(p, group, signal.SIGKILL)
        for p, _ in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()

    def _kill_in_ns(self, ns):
        if ns.removed:
            return
        pids = _netlink.pids_in_netns(ns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # ours: reap it
            pids = _netlink.pids_in_netns(ns)
            if pids:
                time.sleep(0.01)


def _exited(proc):
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _signal_proc(proc, own_group, sig):
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if own_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


@contextlib.contextmanager
def _sigint_held():
    """Hold back SIGINT (Ctrl-C) for the block, then deliver it. Only the main
    thread can change handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    try:
        previous = signal.signal(signal.SIGINT, lambda sig, frame: pending.append(frame))
    except (ValueError, TypeError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(signal.SIGINT, pending[0])


@atexit.register
def _close_live_labs():
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()


# ------------------------------------------------------------------ stale labs

def remove_stale(prefix="pbn"):
    """Remove namespaces left by labs whose process died without tearing down
    (SIGKILL, power loss): those named ``<prefix>-<pid>-<random>-...`` whose
    pid is no longer running. Processes still inside them are killed. Returns
    the names removed. Labs of live processes are never touched.

    Needs CAP_SYS_ADMIN.
    """
    pattern = re.compile(r"%s-(\d+)-[0-9a-f]{6}-" % re.escape(prefix))
    removed = []
    for name in _netlink.list_netns():
        m = pattern.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        for pid in _netlink.pids_in_netns(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _netlink.remove_netns(name)
        removed.append(name)
    return removed


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
