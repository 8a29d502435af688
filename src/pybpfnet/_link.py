"""Links: programs attached to kernel hooks.

Every attach operation (``Program.attach_xdp``, ``attach_tc``,
``attach_tracepoint``, ``attach_raw_tracepoint``, ``attach_trace``,
``attach_cgroup``) returns a :class:`Link`. Closing it detaches the program
(a forgotten one is detached at garbage collection with a ResourceWarning);
``pin()`` lets a kernel link outlive the process; ``update()`` swaps the
program atomically.

Kernel paths:

* XDP: a bpf_link (BPF_LINK_CREATE, Linux >= 5.9); netlink (libbpf
  ``bpf_xdp_attach``) on older kernels or with ``backend="netlink"``.
* TC: a tcx link (raw BPF_LINK_CREATE, Linux >= 6.6: the system libbpf 1.1
  predates it); otherwise a clsact qdisc plus a cls_bpf direct-action
  filter through libbpf's netlink ``bpf_tc_*``.
* tracepoints: perf_event_open on the tracefs id + a perf link (>= 5.15);
  raw tracepoints, tp_btf, fentry/fexit/lsm: BPF_RAW_TRACEPOINT_OPEN;
  cgroups: BPF_LINK_CREATE on the cgroup v2 directory (>= 5.7).

Netlink attachments (legacy TC filters, netlink XDP) are not kernel links:
their Link deletes exactly its own filter/program on close, in the network
namespace it was made in, and cannot be pinned.
"""

import contextlib
import copy
import enum
import errno as _errno
import os
import socket
import struct

import attrs

from pybpfnet import _binding as _b
from pybpfnet import _fs
from pybpfnet._errors import BpfError, HookBusyError, NotSupportedError
from pybpfnet._map import FdHandle, _creation_site
from pybpfnet._program import AttachType, Program, ProgramType

__all__ = ["LinkType", "LinkInfo", "AttachmentState", "HookBusyError", "Link",
           "XdpLink", "XdpNetlinkLink", "TcxLink", "TcLink", "tcx_supported"]


class LinkType(enum.IntEnum):
    """``enum bpf_link_type`` (include/uapi/linux/bpf.h)."""
    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


def _enum_or_int(cls, v):
    try:
        return cls(v)
    except ValueError:
        return v


@attrs.frozen
class LinkInfo:
    """What the kernel reports about one attachment. ``id`` is 0 and
    ``type`` None for netlink attachments (legacy TC filters, netlink XDP),
    which are no kernel link objects. Fields that do not apply are None."""

    id: int
    type: object           # LinkType (or the raw int for newer types), None
    prog_id: int
    kind: str              # "xdp", "tcx", "tc", "cgroup", "perf_event", ...
    attach_type: object = None   # AttachType (or int)
    ifindex: int = None
    cgroup_id: int = None
    name: str = None             # tracepoint name (raw_tp, perf tracepoint)
    target_obj_id: int = None    # tracing: BTF object (or program) id
    target_btf_id: int = None    # tracing: BTF type id of the target
    netns_ino: int = None
    map_id: int = None
    mode: str = None             # XDP: "native", "generic", "offload"
    direction: str = None        # TC: "ingress", "egress"
    handle: int = None           # legacy TC filter
    priority: int = None         # legacy TC filter

    @classmethod
    def _from_kernel(cls, d, mode=None):
        t = _enum_or_int(LinkType, d["type"])
        raw = d["raw"].ljust(16, b"\0")
        a, b, c = struct.unpack_from("=III", raw, 0)
        kw = {}
        if t == LinkType.XDP:
            kw["ifindex"] = a
        elif t in (LinkType.TCX, LinkType.NETKIT):
            kw.update(ifindex=a, attach_type=_enum_or_int(AttachType, b))
            if t == LinkType.TCX:
                kw["direction"] = "ingress" if b == AttachType.TCX_INGRESS else "egress"
        elif t == LinkType.CGROUP:
            kw.update(cgroup_id=struct.unpack_from("=Q", raw, 0)[0],
                      attach_type=_enum_or_int(AttachType, c))
        elif t == LinkType.TRACING:
            kw.update(attach_type=_enum_or_int(AttachType, a), target_obj_id=b,
                      target_btf_id=c)
        elif t == LinkType.NETNS:
            kw.update(netns_ino=a, attach_type=_enum_or_int(AttachType, b))
        elif t in (LinkType.STRUCT_OPS, LinkType.SOCKMAP):
            kw["map_id"] = a
        kind = t.name.lower() if isinstance(t, LinkType) else "type%d" % t
        return cls(id=d["id"], type=t, prog_id=d["prog_id"], kind=kind,
                   name=d.get("name"), mode=mode, **kw)


@attrs.frozen
class AttachmentState:
    """Where a network program is attached and whether it still runs there
    (``attached`` is False once the interface or the filter went away)."""

    iface: str
    ifindex: int
    hook: str               # "xdp", "tc ingress", "tc egress"
    backend: str            # "link", "netlink", "tcx", "legacy"
    prog_id: int
    attached: bool
    link_id: int = None
    mode: str = None        # XDP: "native" / "generic"
    priority: int = None    # legacy TC
    handle: int = None      # legacy TC
    position: int = None    # tcx: index in the hook's run order


# ------------------------------------------------------------------ helpers

_NS_SELF = "/proc/thread-self/ns/net"


class _Netns:
    """The network namespace an attachment was made in (held open so
    netlink detach and queries run there even from another namespace)."""

    __slots__ = ("fd", "ino")

    def __init__(self):
        self.fd = os.open(_NS_SELF, os.O_RDONLY | os.O_CLOEXEC)
        self.ino = os.fstat(self.fd).st_ino

    def is_current(self):
        return os.stat(_NS_SELF).st_ino == self.ino

    @contextlib.contextmanager
    def entered(self):
        if self.fd < 0 or self.is_current():
            yield
            return
        back = os.open(_NS_SELF, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _b.setns(self.fd)
            try:
                yield
            finally:
                _b.setns(back)
        finally:
            os.close(back)

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _resolve_iface(iface, doing):
    """(ifindex, name) of an interface of the current network namespace
    (a name, an ifindex, or an object with a ``name``, e.g. a netlab
    Interface)."""
    if not isinstance(iface, (str, int)) and isinstance(getattr(iface, "name", None), str):
        iface = iface.name
    if isinstance(iface, bool) or not isinstance(iface, (str, int)):
        raise TypeError("%s: an interface is a name (str) or an ifindex (int), got %r"
                        % (doing, iface))
    try:
        if isinstance(iface, int):
            return iface, socket.if_indextoname(iface)
        return socket.if_nametoindex(iface), iface
    except OSError:
        try:
            names = sorted(n for _, n in socket.if_nameindex())
        except OSError:
            names = []
        what = ("no network interface with ifindex %d" % iface if isinstance(iface, int)
                else "no network interface named %r" % iface)
        raise BpfError(_errno.ENODEV, "%s %r" % (doing, iface),
                       "%s in this network namespace (there are: %s)"
                       % (what, ", ".join(names[:12]) or "none")) from None


def _choice(value, choices, what):
    if isinstance(value, str) and value in choices:
        return choices[value] if isinstance(choices, dict) else value
    raise ValueError("unknown %s %r; expected one of %s" % (
        what, value, ", ".join(repr(c) for c in choices)))


def _type_name(t):
    return getattr(t, "name", str(t))


def _require(prog, types, hook, hint):
    if not isinstance(prog, Program):
        raise TypeError("attach to %s needs a Program, got %s" % (hook, type(prog).__name__))
    if prog.type not in types:
        raise BpfError(_errno.EINVAL, "attach program %r to %s" % (prog.name, hook),
                       "it is a program of type %s; %s takes %s programs (%s)" % (
                           _type_name(prog.type), hook,
                           " or ".join(_type_name(t) for t in types), hint))
    prog.fd  # noqa: B018 - raises ValueError when the program was closed


def _prog_name(prog_id):
    try:
        fd = _b.fd_by_id("prog", prog_id)
    except OSError:
        return None
    try:
        return _b.prog_info(fd)["name"]
    finally:
        os.close(fd)


def _find_link(link_type, prog_id, match):
    """The id of a kernel link of ``link_type`` running ``prog_id`` whose
    info satisfies ``match`` (a predicate on LinkInfo), or None."""
    for lid in _b.next_ids("link"):
        try:
            fd = _b.fd_by_id("link", lid)
        except OSError:
            continue
        try:
            info = LinkInfo._from_kernel(_b.link_info_full(fd))
        except OSError:
            continue
        finally:
            os.close(fd)
        if info.type == link_type and info.prog_id == prog_id and match(info):
            return lid
    return None


def _describe_prog(prog_id):
    name = _prog_name(prog_id)
    return "program %r (id %d)" % (name, prog_id) if name else "program id %d" % prog_id


# ------------------------------------------------------------------ links

# link types whose kernel implementation has update_prog (BPF_LINK_UPDATE)
_UPDATABLE = frozenset((LinkType.CGROUP, LinkType.NETNS, LinkType.XDP, LinkType.TCX,
                        LinkType.NETKIT, LinkType.ITER, LinkType.SOCKMAP))


class Link(FdHandle):
    """A program attached to a kernel hook (a bpf_link).

    ``close()`` (or leaving the ``with`` block) releases this handle; the
    kernel detaches the program when the last reference goes, so a pinned
    link stays attached until it is unpinned. ``detach()`` detaches now
    whatever else refers to the link. Made by the ``Program.attach_*``
    methods, ``Link.from_pinned`` and ``Link.from_id``. Needs the privileges
    of the attach (root or CAP_BPF + CAP_NET_ADMIN/CAP_PERFMON)."""

    _netns = None
    _pin_path = None

    def __init__(self, fd, *, target="link", program=None, netns=None, pin_path=None,
                 owns_fd=True):
        self._site = _creation_site()
        self._fd = fd
        self._owns_fd = owns_fd
        self._target = target
        self._netns = netns
        self._pin_path = pin_path
        self._prog_type = program.type if program is not None else None
        self.program_name = program.name if program is not None else None

    def _what(self):
        return "link (%s)" % self._target

    def __repr__(self):
        return "<%s %s %s>" % (type(self).__name__, self._target,
                               "closed" if self._fd < 0 else "fd=%d" % self._fd)

    # -- identity -----------------------------------------------------------
    def info(self):
        """The kernel's view of the link, as a :class:`LinkInfo`."""
        return LinkInfo._from_kernel(_b.link_info_full(self.fd))

    @property
    def id(self):
        return self.info().id

    @property
    def program_id(self):
        return self.info().prog_id

    @property
    def attached(self):
        """False once the hook went away (interface or cgroup removed) or
        the link was detached."""
        if self._fd < 0:
            return False
        info = self.info()
        if info.type in (LinkType.XDP, LinkType.TCX, LinkType.NETKIT):
            return bool(info.ifindex)
        if info.type == LinkType.CGROUP:
            return bool(info.cgroup_id)
        return True

    @property
    def pinned(self):
        """The bpffs path this handle pinned (or was opened from), or None."""
        return self._pin_path

    # -- lifetime -----------------------------------------------------------
    def close(self):
        """Release this handle: the program is detached unless the link is
        pinned, disconnected or held elsewhere. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._owns_fd:
            os.close(fd)
        if self._netns is not None:
            self._netns.close()
            self._netns = None

    def detach(self):
        """Detach the program now (BPF_LINK_DETACH, Linux >= 5.9) even if
        the link is pinned or held by others, then close this handle.
        Raises NotSupportedError for link types that cannot be detached
        this way (tracepoint and raw tracepoint links: close every handle
        and unpin instead)."""
        rc = _b.link_detach(self.fd)
        if rc < 0:
            if -rc in (_errno.EOPNOTSUPP, _b.ENOTSUPP, _errno.EINVAL):
                raise NotSupportedError("BPF_LINK_DETACH of a %s link" % self.info().kind,
                                        detail="close every handle and unpin it instead")
            raise _b.error(-rc, "detach %s" % self._what())
        self.close()

    def disconnect(self):
        """Hand the attachment over and close this handle without detaching.
        A kernel link then stays attached as long as the returned fd (now
        the caller's: ``os.close`` it to detach) or a pin keeps it."""
        fd = self.fd
        self._owns_fd = False
        self.close()
        return fd

    def pin(self, path):
        """Pin the link in bpffs at ``path``: it stays attached after this
        process exits, until ``unpin()`` (or ``rm``) removes the pin and no
        handle is left. Raises BpfError (EEXIST: path taken)."""
        _b.pin(self.fd, path, self._what())
        self._pin_path = os.fspath(path)

    def unpin(self, path=None):
        """Remove the pin (the one made or opened by this handle, or
        ``path``). The program is detached once no handle is left either."""
        path = os.fspath(path) if path is not None else self._pin_path
        if path is None:
            raise ValueError("%s is not pinned" % self._what())
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if path == self._pin_path:
            self._pin_path = None

    # -- program swap -------------------------------------------------------
    def update(self, program, *, expected=None):
        """Swap the attached program for ``program`` atomically, without a
        moment where none runs (BPF_LINK_UPDATE, Linux >= 5.7 for cgroup
        links, 5.9 for XDP, 6.6 for tcx). With ``expected`` (a Program) the
        swap only happens if that program is still the attached one.
        Raises NotSupportedError for link types without update (tracepoint
        links) and BpfError(EINVAL) for a program of another type."""
        self._check_update(program)
        rc = _b.link_update(self.fd, program.fd,
                            expected.fd if expected is not None else None)
        if rc < 0:
            err = -rc
            doing = "replace the program of %s with %r" % (self._what(), program.name)
            if err in (_errno.EOPNOTSUPP, _b.ENOTSUPP) or (
                    err == _errno.EINVAL and self.info().type not in _UPDATABLE):
                raise NotSupportedError("atomic program update of a %s link"
                                        % self.info().kind,
                                        detail="close the link and attach the new "
                                               "program instead")
            if err == _errno.EPERM and expected is not None:
                raise BpfError(_errno.ESTALE, doing, "the attached program is no "
                               "longer %r" % expected.name) from None
            raise _b.error(err, doing)
        self._prog_type = program.type
        self.program_name = program.name

    def _check_update(self, program):
        if not isinstance(program, Program):
            raise TypeError("update() takes a Program, got %s" % type(program).__name__)
        if self._prog_type is not None and program.type != self._prog_type:
            raise BpfError(_errno.EINVAL, "replace the program of %s" % self._what(),
                           "%r is a %s program, the link runs %s programs" % (
                               program.name, _type_name(program.type),
                               _type_name(self._prog_type)))

    def _handover(self):
        """A new handle owning this attachment; this one is left closed
        without detaching (used by attach(..., replace=link))."""
        new = copy.copy(self)
        new._site = _creation_site()
        self._fd = -1
        self._netns = None
        return new

    # -- opening existing links -----------------------------------------------
    @classmethod
    def from_fd(cls, fd, *, pin_path=None, owns_fd=True):
        """Wrap a link fd (taking ownership); the class follows the link type."""
        try:
            info = LinkInfo._from_kernel(_b.link_info_full(fd))
        except BaseException:
            if owns_fd:
                _b.close_fd(fd)
            raise
        sub = {LinkType.XDP: XdpLink, LinkType.TCX: TcxLink}.get(info.type, Link)
        link = Link.__new__(sub)
        Link.__init__(link, fd, target="%s link id %d" % (info.kind, info.id),
                      pin_path=pin_path, owns_fd=owns_fd)
        link.program_name = _prog_name(info.prog_id)
        link._prog_type = None
        if sub is not Link:
            link.ifindex = info.ifindex
            link.ifname = None
        if sub is TcxLink:
            link.direction = info.direction
        return link

    @classmethod
    def from_pinned(cls, path):
        """Open a link pinned in bpffs (``unpin()`` then removes that pin)."""
        path = os.fspath(path)
        fd = _b.get_pinned(path)
        # the anon inode is "bpf_link" for a link's first fd, "bpf-link" for
        # one opened from a pin or an id
        try:
            kind = os.readlink("/proc/self/fd/%d" % fd).replace("-", "_")
        except OSError:
            kind = "?"
        if kind != "anon_inode:bpf_link":
            os.close(fd)
            raise BpfError(_errno.EINVAL, "open pinned link %s" % path,
                           "the pinned object is not a link (%s)" % kind.split(":")[-1])
        return cls.from_fd(fd, pin_path=path)

    @classmethod
    def from_id(cls, link_id):
        """Open a link by its kernel id (needs CAP_SYS_ADMIN)."""
        return cls.from_fd(_b.fd_by_id("link", link_id))


class _NetLinkMixin:
    """Interface bookkeeping shared by the XDP and TC links."""

    ifindex = 0
    ifname = None

    def _in_netns(self):
        return self._netns.entered() if self._netns is not None else contextlib.nullcontext()

    @property
    def iface(self):
        return self.ifname or str(self.ifindex)


# XDP_FLAGS_* (include/uapi/linux/if_link.h)
_XDP_UPDATE_IF_NOEXIST = 1
_XDP_FLAGS = {"auto": 0, "generic": 2, "native": 4}
_XDP_MODE_OF_ATTACHED = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
_XDP_FLAGS_OF_MODE = {"native": 4, "generic": 2, "offload": 8}


def _xdp_held(q):
    return q["prog_id"] or q["drv_prog_id"] or q["skb_prog_id"] or q["hw_prog_id"]


class XdpLink(_NetLinkMixin, Link):
    """An XDP program attached to an interface through a bpf_link."""

    backend = "link"

    def info(self):
        info = Link.info(self)
        if info.ifindex:
            try:
                with self._in_netns():
                    q = _b.xdp_query(info.ifindex)
            except OSError:
                q = None
            if q and _xdp_held(q) == info.prog_id:
                info = attrs.evolve(info, mode=_XDP_MODE_OF_ATTACHED.get(q["attach_mode"]))
        return info

    @property
    def mode(self):
        """"native", "generic" or "offload" as the kernel reports it now
        (None once the program is no longer attached)."""
        return self.info().mode if self._fd >= 0 else None

    def state(self):
        info = self.info() if self._fd >= 0 else None
        return AttachmentState(
            iface=self.iface, ifindex=self.ifindex, hook="xdp", backend=self.backend,
            prog_id=info.prog_id if info else 0, link_id=info.id if info else None,
            attached=bool(info and info.ifindex), mode=info.mode if info else None)


class TcxLink(_NetLinkMixin, Link):
    """A TC program attached through a tcx link (Linux >= 6.6)."""

    backend = "tcx"
    direction = "ingress"

    def state(self):
        info = self.info() if self._fd >= 0 else None
        return AttachmentState(
            iface=self.iface, ifindex=self.ifindex, hook="tc " + self.direction,
            backend=self.backend, prog_id=info.prog_id if info else 0,
            link_id=info.id if info else None, attached=bool(info and info.ifindex))


class _NetlinkAttachment(_NetLinkMixin, Link):
    """An attachment made through netlink: no kernel link object. The
    handle owns a duplicate of the program fd; close() removes exactly this
    attachment (if it still runs our program) in the network namespace it
    was made in."""

    _disconnected = False

    def __init__(self, prog_fd, *, prog_id, **kw):
        super().__init__(prog_fd, **kw)
        self._prog_id = prog_id

    def _remove(self):
        raise NotImplementedError

    def close(self):
        try:
            if self._fd >= 0 and not self._disconnected:
                with self._in_netns():
                    self._remove()
        finally:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            if self._netns is not None:
                self._netns.close()
                self._netns = None

    def detach(self):
        self.close()

    def disconnect(self):
        """Close this handle and leave the attachment in place: it stays
        until someone removes it (``ip link set dev IFACE xdp off``, ``tc
        filter del``). Returns None (there is no link fd to hand over)."""
        self.fd  # noqa: B018 - ValueError when closed
        self._disconnected = True
        self.close()

    @property
    def program_id(self):
        return self._prog_id

    def _swapped(self, program, prog_id):
        new_fd = _b.dup(program.fd)
        os.close(self._fd)
        self._fd = new_fd
        self._prog_id = prog_id
        self._prog_type = program.type
        self.program_name = program.name


class XdpNetlinkLink(_NetlinkAttachment):
    """An XDP program attached through netlink (kernels without XDP links,
    or ``backend="netlink"``). It cannot be pinned."""

    backend = "netlink"

    def __init__(self, prog_fd, *, flags, **kw):
        super().__init__(prog_fd, **kw)
        self._flags = flags

    def _query(self):
        with self._in_netns():
            return _b.xdp_query(self.ifindex)

    def _mode_in(self, q):
        return _XDP_MODE_OF_ATTACHED.get(q["attach_mode"]) \
            if _xdp_held(q) == self._prog_id else None

    @property
    def mode(self):
        return self._mode_in(self._query()) if self._fd >= 0 else None

    @property
    def attached(self):
        return self.mode is not None

    def info(self):
        self.fd  # noqa: B018 - ValueError when closed
        return LinkInfo(id=0, type=None, prog_id=self._prog_id, kind="xdp",
                        ifindex=self.ifindex, mode=self._mode_in(self._query()))

    def state(self):
        mode = self.mode
        return AttachmentState(iface=self.iface, ifindex=self.ifindex, hook="xdp",
                               backend=self.backend, prog_id=self._prog_id,
                               attached=mode is not None, mode=mode)

    def _mode_flags(self, q):
        return _XDP_FLAGS_OF_MODE.get(_XDP_MODE_OF_ATTACHED.get(q["attach_mode"]),
                                      self._flags)

    def _remove(self):
        try:
            q = _b.xdp_query(self.ifindex)
        except BpfError as e:
            if e.errno == _errno.ENODEV:
                return
            raise
        if _xdp_held(q) != self._prog_id:
            return
        # compare-and-swap against our program: one attached in between
        # by someone else is left alone
        rc = _b.xdp_attach(self.ifindex, -1, self._mode_flags(q), old_prog_fd=self._fd)
        if rc < 0 and -rc not in (_errno.EEXIST, _errno.ENODEV):
            raise _b.error(-rc, "detach %s" % self._what())

    def pin(self, path):
        raise NotSupportedError("pinning a netlink XDP attachment",
                                detail="only bpf_link attachments can be pinned; "
                                       "attach with backend='link' (Linux >= 5.9)")

    def update(self, program, *, expected=None):
        """Swap the program atomically (netlink XDP_FLAGS_REPLACE)."""
        self._check_update(program)
        with self._in_netns():
            q = _b.xdp_query(self.ifindex)
            old_fd = expected.fd if expected is not None else self.fd
            rc = _b.xdp_attach(self.ifindex, program.fd, self._mode_flags(q),
                               old_prog_fd=old_fd)
        if rc < 0:
            raise _b.error(-rc, "replace the program of %s with %r" % (
                self._what(), program.name))
        self._swapped(program, program.id)


class TcLink(_NetlinkAttachment):
    """A legacy TC attachment: a cls_bpf direct-action filter on the
    clsact qdisc. ``close()`` deletes exactly this filter (if it still runs
    our program) and leaves the clsact qdisc, which other filters may
    share. It cannot be pinned."""

    backend = "legacy"

    def __init__(self, prog_fd, *, direction, handle, priority, **kw):
        super().__init__(prog_fd, **kw)
        self.direction = direction
        self.handle = handle
        self.priority = priority

    def _point(self):
        return _TC_DIRS[self.direction][1]

    def _query(self):
        with self._in_netns():
            return _b.tc_query(self.ifindex, self._point(), self.handle, self.priority)

    @property
    def attached(self):
        return self._fd >= 0 and self._query() == self._prog_id

    def info(self):
        self.fd  # noqa: B018 - ValueError when closed
        return LinkInfo(id=0, type=None, prog_id=self._prog_id, kind="tc",
                        ifindex=self.ifindex, handle=self.handle, priority=self.priority,
                        direction=self.direction)

    def state(self):
        return AttachmentState(
            iface=self.iface, ifindex=self.ifindex, hook="tc " + self.direction,
            backend=self.backend, prog_id=self._prog_id, attached=self.attached,
            priority=self.priority, handle=self.handle)

    def _remove(self):
        if _b.tc_query(self.ifindex, self._point(), self.handle,
                       self.priority) != self._prog_id:
            return
        rc = _b.tc_detach(self.ifindex, self._point(), self.handle, self.priority)
        if rc < 0 and -rc not in (_errno.ENOENT, _errno.ENODEV):
            raise _b.error(-rc, "detach %s" % self._what())

    def pin(self, path):
        raise NotSupportedError("pinning a legacy TC filter",
                                detail="only bpf_link attachments can be pinned; "
                                       "use backend='tcx' (Linux >= 6.6)")

    def update(self, program, *, expected=None):
        """Swap the filter's program atomically (netlink replace of the same
        handle and priority)."""
        self._check_update(program)
        doing = "replace the program of %s with %r" % (self._what(), program.name)
        with self._in_netns():
            if expected is not None and _b.tc_query(
                    self.ifindex, self._point(), self.handle, self.priority) != expected.id:
                raise BpfError(_errno.ESTALE, doing,
                               "the attached program is no longer %r" % expected.name)
            rc, _, _, prog_id = _b.tc_attach(self.ifindex, self._point(), program.fd,
                                             self.handle, self.priority, replace=True)
        if rc < 0:
            raise _b.error(-rc, doing)
        self._swapped(program, prog_id)


# ------------------------------------------------------------------ XDP

def attach_xdp(prog, iface, mode="auto", *, replace=None, backend="auto"):
    flags = _choice(mode, _XDP_FLAGS, "XDP mode")
    _choice(backend, ("auto", "link", "netlink"), "XDP backend")
    _require(prog, (ProgramType.XDP,), "XDP", 'SEC("xdp")')
    ifindex, ifname = _resolve_iface(iface, "attach XDP program %r to" % prog.name)
    doing = "attach XDP program %r to %s (ifindex %d, %s mode)" % (
        prog.name, ifname, ifindex, mode)
    target = "xdp %s (ifindex %d)" % (ifname, ifindex)
    q = _b.xdp_query(ifindex)
    held = _xdp_held(q)
    if replace is not None and replace is not False:
        return _xdp_replace(prog, ifindex, ifname, mode, flags, backend, replace, q, doing,
                            target)
    if held:
        raise _xdp_busy(doing, ifindex, q)
    netns = _Netns()
    try:
        if backend != "netlink":
            fd = _b.link_create(prog.fd, ifindex, AttachType.XDP, flags)
            if fd >= 0:
                link = XdpLink(fd, target=target, program=prog, netns=netns)
                link.ifindex, link.ifname = ifindex, ifname
                return link
            # EINVAL: a kernel before XDP links (5.9); netlink can still do it
            if backend == "link" or -fd != _errno.EINVAL:
                raise _xdp_error(-fd, doing, ifindex, ifname, mode)
        rc = _b.xdp_attach(ifindex, prog.fd, flags | _XDP_UPDATE_IF_NOEXIST)
        if rc < 0:
            raise _xdp_error(-rc, doing, ifindex, ifname, mode)
        return _xdp_netlink_link(prog, ifindex, ifname, flags, netns, target)
    except BaseException:
        netns.close()
        raise


def _xdp_netlink_link(prog, ifindex, ifname, flags, netns, target):
    try:
        fd = _b.dup(prog.fd)
    except BaseException:
        _b.xdp_attach(ifindex, -1, flags, old_prog_fd=prog.fd)
        raise
    link = XdpNetlinkLink(fd, flags=flags, prog_id=prog.id, target=target + " netlink",
                          program=prog, netns=netns)
    link.ifindex, link.ifname = ifindex, ifname
    return link


def _xdp_busy(doing, ifindex, q):
    held = _xdp_held(q)
    mode = _XDP_MODE_OF_ATTACHED.get(q["attach_mode"], "unknown")
    link_id = _find_link(LinkType.XDP, held, lambda i: i.ifindex == ifindex)
    via = ("held by bpf_link id %d" % link_id if link_id
           else "attached through netlink")
    return HookBusyError(doing, "the interface already runs XDP %s in %s mode, %s; "
                         "close that link (or detach it) first, or pass replace= to "
                         "swap programs atomically" % (_describe_prog(held), mode, via),
                         prog_id=held, link_id=link_id)


def _xdp_error(err, doing, ifindex, ifname, mode):
    if err in (_errno.EBUSY, _errno.EEXIST):
        q = _b.xdp_query(ifindex)
        if _xdp_held(q):
            return _xdp_busy(doing, ifindex, q)
    if err in (_errno.EOPNOTSUPP, _b.ENOTSUPP) and mode == "native":
        return NotSupportedError("native XDP on %s" % ifname, err=err,
                                 detail="its driver has no XDP support; use "
                                        "mode='generic'")
    return _b.error(err, doing)


def _xdp_replace(prog, ifindex, ifname, mode, flags, backend, replace, q, doing, target):
    held = _xdp_held(q)
    cur_mode = _XDP_MODE_OF_ATTACHED.get(q["attach_mode"])
    if held and flags and mode != cur_mode:
        raise BpfError(_errno.EINVAL, doing, "XDP runs in %s mode there and an atomic "
                       "replace keeps the mode; pass mode='auto' or %r" % (cur_mode, cur_mode))
    if isinstance(replace, Link):
        if not isinstance(replace, (XdpLink, XdpNetlinkLink)) or replace.closed \
                or replace.ifindex != ifindex or (
                    replace._netns is not None and not replace._netns.is_current()):
            raise ValueError("%s: replace= must be the open XDP link of %s, got %r"
                             % (doing, ifname, replace))
        replace.update(prog)
        return replace._handover()
    if replace is True:
        expected_id = held
    elif isinstance(replace, Program):
        expected_id = replace.id
    elif isinstance(replace, int) and not isinstance(replace, bool):
        expected_id = replace
    else:
        raise TypeError("%s: replace= takes a Link, a Program, a program id or True, "
                        "got %r" % (doing, replace))
    if not held:
        if replace is True:
            return attach_xdp(prog, ifindex, mode, backend=backend)
        raise BpfError(_errno.ENOENT, doing, "nothing to replace: no XDP program is "
                       "attached (expected %s)" % _describe_prog(expected_id))
    if held != expected_id:
        raise BpfError(_errno.ESTALE, doing, "expected %s to be attached, found %s" % (
            _describe_prog(expected_id), _describe_prog(held)))
    old_fd = _b.fd_by_id("prog", held)
    netns = _Netns()
    try:
        link_id = _find_link(LinkType.XDP, held, lambda i: i.ifindex == ifindex)
        if link_id:
            fd = _b.fd_by_id("link", link_id)
            rc = _b.link_update(fd, prog.fd, old_prog_fd=old_fd)
            if rc < 0:
                os.close(fd)
                raise _b.error(-rc, doing + " (replacing %s)" % _describe_prog(held))
            link = XdpLink(fd, target=target, program=prog, netns=netns)
            link.ifindex, link.ifname = ifindex, ifname
            return link
        mflags = _XDP_FLAGS_OF_MODE.get(cur_mode, flags)
        rc = _b.xdp_attach(ifindex, prog.fd, mflags, old_prog_fd=old_fd)
        if rc < 0:
            raise _b.error(-rc, doing + " (replacing %s)" % _describe_prog(held))
        return _xdp_netlink_link(prog, ifindex, ifname, mflags, netns, target)
    except BaseException:
        netns.close()
        raise
    finally:
        os.close(old_fd)


# ------------------------------------------------------------------ TC

_TC_DIRS = {"ingress": (AttachType.TCX_INGRESS, 1), "egress": (AttachType.TCX_EGRESS, 2)}
_BPF_F_BEFORE = 1 << 3
_BPF_F_AFTER = 1 << 4
_BPF_F_ID = 1 << 5
_BPF_F_LINK = 1 << 13
_tcx_probe = None


def tcx_supported():
    """True if the kernel has tcx links (Linux >= 6.6), probed once with a
    BPF_PROG_QUERY of the loopback's tcx ingress hook."""
    global _tcx_probe
    if _tcx_probe is None:
        try:
            _b.prog_query(1, AttachType.TCX_INGRESS)
            _tcx_probe = True
        except BpfError as e:
            if e.errno != _errno.EINVAL:
                raise
            _tcx_probe = False
    return _tcx_probe


def attach_tc(prog, iface, direction="ingress", *, backend="auto", priority=None,
              handle=None, first=False, last=False, before=None, after=None,
              replace=None):
    tcx_type, point = _choice(direction, _TC_DIRS, "TC direction")
    _choice(backend, ("auto", "tcx", "legacy"), "TC backend")
    _require(prog, (ProgramType.SCHED_CLS,), "TC", 'SEC("tc") / SEC("classifier")')
    order = [n for n, v in (("first", first), ("last", last), ("before", before),
                            ("after", after)) if v is not None and v is not False]
    legacy_opts = [n for n, v in (("priority", priority), ("handle", handle))
                   if v is not None]
    if len(order) > 1:
        raise ValueError("attach_tc: pass at most one of first, last, before, after "
                         "(got %s)" % ", ".join(order))
    if order and legacy_opts:
        raise ValueError("attach_tc: %s orders tcx links, %s orders legacy tc filters; "
                         "pick one" % (order[0], legacy_opts[0]))
    if priority is not None and (not isinstance(priority, int) or not 1 <= priority <= 0xFFFF):
        raise ValueError("TC filter priority must be an int in 1..65535, got %r" % (priority,))
    if handle is not None and (not isinstance(handle, int) or not 1 <= handle <= 0xFFFFFFFF):
        raise ValueError("TC filter handle must be an int in 1..2**32-1, got %r" % (handle,))
    if backend == "tcx":
        if legacy_opts:
            raise ValueError("attach_tc: %s applies to legacy tc filters; tcx links are "
                             "ordered with first/last/before/after" % legacy_opts[0])
        if not tcx_supported():
            raise NotSupportedError("tcx links", min_kernel="6.6",
                                    detail="use backend='legacy' (clsact + cls_bpf)")
        use_tcx = True
    elif backend == "legacy":
        if order:
            raise ValueError("attach_tc: %s orders tcx links; legacy tc filters are "
                             "ordered by priority" % order[0])
        use_tcx = False
    else:
        use_tcx = not legacy_opts and tcx_supported()
        if order and not use_tcx:
            raise NotSupportedError("tcx link ordering (%s)" % order[0], min_kernel="6.6",
                                    detail="legacy tc filters are ordered by priority=")
    ifindex, ifname = _resolve_iface(iface, "attach TC program %r to" % prog.name)
    doing = "attach TC program %r to %s %s (ifindex %d, %s)" % (
        prog.name, ifname, direction, ifindex, "tcx" if use_tcx else "clsact/cls_bpf")
    target = "tc %s %s (ifindex %d)" % (direction, ifname, ifindex)
    if replace is not None:
        if not isinstance(replace, (TcxLink, TcLink)) or replace.closed \
                or replace.ifindex != ifindex or replace.direction != direction or (
                    replace._netns is not None and not replace._netns.is_current()):
            raise ValueError("%s: replace= must be an open TC link of %s %s, got %r"
                             % (doing, ifname, direction, replace))
        replace.update(prog)
        return replace._handover()
    if use_tcx:
        return _attach_tcx(prog, ifindex, ifname, direction, tcx_type, first, last,
                           before, after, doing, target)
    return _attach_tc_legacy(prog, ifindex, ifname, direction, point, priority, handle,
                             doing, target)


def _attach_tcx(prog, ifindex, ifname, direction, tcx_type, first, last, before, after,
                doing, target):
    flags, rel = 0, 0
    if first:
        flags = _BPF_F_BEFORE
    elif last:
        flags = _BPF_F_AFTER
    elif before is not None or after is not None:
        anchor = before if before is not None else after
        flags = _BPF_F_BEFORE if before is not None else _BPF_F_AFTER
        if isinstance(anchor, TcxLink):
            flags |= _BPF_F_LINK
            rel = anchor.fd
        elif isinstance(anchor, Program):
            rel = anchor.fd
        elif isinstance(anchor, int) and not isinstance(anchor, bool):
            flags |= _BPF_F_ID
            rel = anchor
        else:
            raise TypeError("%s: before=/after= take a TcxLink, a Program or a program "
                            "id, got %r" % (doing, anchor))
    netns = _Netns()
    try:
        fd = _b.link_create_raw(prog.fd, ifindex, tcx_type, flags, rel, 0)
        if fd < 0:
            err = -fd
            if err == _errno.ENOENT and rel:
                raise BpfError(err, doing, "the program or link to order against is "
                               "not attached to this hook")
            if err == _errno.EEXIST:
                raise HookBusyError(doing, "program %r is already attached to this "
                                    "hook" % prog.name, prog_id=prog.id)
            if err == _errno.ERANGE:
                raise BpfError(err, doing, "the hook holds the maximum number of "
                               "programs")
            raise _b.error(err, doing)
        link = TcxLink(fd, target=target, program=prog, netns=netns)
        link.ifindex, link.ifname, link.direction = ifindex, ifname, direction
        return link
    except BaseException:
        netns.close()
        raise


def _attach_tc_legacy(prog, ifindex, ifname, direction, point, priority, handle, doing,
                      target):
    netns = _Netns()
    created = False
    try:
        rc = _b.tc_hook_create(ifindex, point)
        if rc < 0 and -rc != _errno.EEXIST:
            raise _b.error(-rc, doing + ": create the clsact qdisc")
        created = rc == 0
        rc, h, p, prog_id = _b.tc_attach(ifindex, point, prog.fd, handle or 0,
                                         priority or 0)
        if rc == -_errno.EEXIST:
            other = _b.tc_query(ifindex, point, handle or 0, priority or 0)
            raise HookBusyError(doing, "a filter with handle %s and priority %s already "
                                "runs %s; pass replace=<its TcLink> or another priority"
                                % (handle, priority, _describe_prog(other)
                                   if other > 0 else "a program"),
                                prog_id=other if other > 0 else None)
        if rc < 0:
            raise _b.error(-rc, doing)
        fd = _b.dup(prog.fd)
    except BaseException:
        if created:
            _b.tc_hook_destroy(ifindex)
        netns.close()
        raise
    link = TcLink(fd, direction=direction, handle=h, priority=p, prog_id=prog_id,
                  target="%s prio %d handle %#x" % (target, p, h), program=prog,
                  netns=netns)
    link.ifindex, link.ifname = ifindex, ifname
    return link


# ------------------------------------------------------------------ tracing

def attach_tracepoint(prog, category, name):
    _require(prog, (ProgramType.TRACEPOINT,), "a tracepoint",
             'SEC("tracepoint/<category>/<name>")')
    for part in (category, name):
        if not isinstance(part, str) or not part or "/" in part or part in (".", ".."):
            raise ValueError("tracepoint category and name are plain names like "
                             "'sched', 'sched_process_fork'; got %r" % (part,))
    doing = "attach program %r to tracepoint %s:%s" % (prog.name, category, name)
    root = _fs.ensure_tracefs()
    try:
        with open(os.path.join(root, "events", category, name, "id")) as f:
            tp_id = int(f.read())
    except FileNotFoundError:
        raise BpfError(_errno.ENOENT, doing, "no such tracepoint (see %s/available_events)"
                       % root) from None
    perf_fd = _b.perf_tracepoint_open(tp_id)
    if perf_fd < 0:
        raise _b.error(-perf_fd, doing + ": perf_event_open")
    try:
        fd = _b.link_create(prog.fd, perf_fd, AttachType.PERF_EVENT)
    finally:
        os.close(perf_fd)
    if fd < 0:
        if -fd == _errno.EINVAL:
            raise NotSupportedError("BPF links on perf events", min_kernel="5.15",
                                    err=_errno.EINVAL)
        raise _b.error(-fd, doing)
    return Link(fd, target="tracepoint %s:%s" % (category, name), program=prog)


def attach_raw_tracepoint(prog, name):
    _require(prog, (ProgramType.RAW_TRACEPOINT, ProgramType.RAW_TRACEPOINT_WRITABLE),
             "a raw tracepoint", 'SEC("raw_tp/<name>"); tp_btf programs use attach_trace()')
    if not isinstance(name, str) or not name:
        raise ValueError("raw tracepoint name must be a non-empty str, got %r" % (name,))
    fd = _b.raw_tracepoint_open(name, prog.fd)
    if fd < 0:
        doing = "attach program %r to raw tracepoint %r" % (prog.name, name)
        if -fd == _errno.ENOENT:
            raise BpfError(_errno.ENOENT, doing, "the kernel has no tracepoint named %r"
                           % name)
        raise _b.error(-fd, doing)
    return Link(fd, target="raw_tp %s" % name, program=prog)


def attach_trace(prog):
    _require(prog, (ProgramType.TRACING, ProgramType.LSM), "its BTF target",
             'SEC("tp_btf/..."), SEC("fentry/..."), SEC("fexit/..."), SEC("lsm/...")')
    kind = _b.trampoline_kind(int(prog.type), prog.expected_attach_type)
    fd = _b.raw_tracepoint_open(None, prog.fd)
    if fd < 0:
        doing = "attach %s program %r" % (kind or "tracing", prog.name)
        if -fd in (_errno.EPERM, _errno.EACCES, _errno.EOPNOTSUPP, _b.ENOTSUPP) \
                and kind and _b.have_tracing_caps():
            raise _b.trampoline_refused(doing, kind, -fd)
        raise _b.error(-fd, doing)
    return Link(fd, target="%s %s" % (kind or "tp_btf", prog.name), program=prog)


# ------------------------------------------------------------------ cgroups

_A = AttachType
_CGROUP_HOOKS = {
    ProgramType.CGROUP_SKB: (_A.CGROUP_INET_INGRESS, _A.CGROUP_INET_EGRESS),
    ProgramType.CGROUP_SOCK: (_A.CGROUP_INET_SOCK_CREATE, _A.CGROUP_INET4_POST_BIND,
                               _A.CGROUP_INET6_POST_BIND, _A.CGROUP_INET_SOCK_RELEASE),
    ProgramType.CGROUP_SOCK_ADDR: (_A.CGROUP_INET4_BIND, _A.CGROUP_INET6_BIND,
                                   _A.CGROUP_INET4_CONNECT, _A.CGROUP_INET6_CONNECT,
                                   _A.CGROUP_UDP4_SENDMSG, _A.CGROUP_UDP6_SENDMSG,
                                   _A.CGROUP_UDP4_RECVMSG, _A.CGROUP_UDP6_RECVMSG,
                                   _A.CGROUP_INET4_GETPEERNAME, _A.CGROUP_INET6_GETPEERNAME,
                                   _A.CGROUP_INET4_GETSOCKNAME, _A.CGROUP_INET6_GETSOCKNAME),
    ProgramType.SOCK_OPS: (_A.CGROUP_SOCK_OPS,),
    ProgramType.CGROUP_DEVICE: (_A.CGROUP_DEVICE,),
    ProgramType.CGROUP_SYSCTL: (_A.CGROUP_SYSCTL,),
    ProgramType.CGROUP_SOCKOPT: (_A.CGROUP_GETSOCKOPT, _A.CGROUP_SETSOCKOPT),
}


def _cgroup_attach_type(prog, attach_type, doing):
    allowed = _CGROUP_HOOKS[prog.type]
    if attach_type is None:
        at = prog.expected_attach_type
        if at not in allowed:
            raise ValueError("%s: pass attach_type= (one of %s)" % (
                doing, ", ".join(_type_name(_enum_or_int(AttachType, a)).lower()
                                 for a in allowed)))
    elif isinstance(attach_type, str):
        key = attach_type.upper().replace("-", "_")
        for cand in (key, "CGROUP_" + key, "CGROUP_INET_" + key):
            if cand in AttachType.__members__:
                at = AttachType[cand]
                break
        else:
            raise ValueError("%s: unknown cgroup attach type %r" % (doing, attach_type))
    elif isinstance(attach_type, int) and not isinstance(attach_type, bool):
        at = attach_type
    else:
        raise TypeError("%s: attach_type is a name or an AttachType, got %r"
                        % (doing, attach_type))
    if at not in allowed:
        raise BpfError(_errno.EINVAL, doing, "a %s program attaches as %s, not %s" % (
            _type_name(prog.type), " or ".join(
                _type_name(_enum_or_int(AttachType, a)).lower() for a in allowed),
            _type_name(_enum_or_int(AttachType, at)).lower()))
    return _enum_or_int(AttachType, at)


def attach_cgroup(prog, path, attach_type=None):
    if not isinstance(prog, Program):
        raise TypeError("attach_cgroup needs a Program, got %s" % type(prog).__name__)
    _require(prog, tuple(_CGROUP_HOOKS), "a cgroup", 'SEC("cgroup_skb/egress"), '
             'SEC("cgroup/sock_create"), SEC("cgroup/connect4"), ...')
    path = os.fspath(path)
    doing = "attach program %r to cgroup %s" % (prog.name, path)
    at = _cgroup_attach_type(prog, attach_type, doing)
    doing += " (%s)" % _type_name(at).lower()
    if not os.path.isdir(path):
        raise BpfError(_errno.ENOENT, doing, "no such cgroup directory")
    if _fs.mount_point_of(path, "cgroup2") is None:
        raise BpfError(_errno.EINVAL, doing, "not in a cgroup v2 hierarchy (BPF attaches "
                       "to cgroup2 directories, e.g. under /sys/fs/cgroup/unified on a "
                       "hybrid layout)")
    cg_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _b.link_create(prog.fd, cg_fd, int(at))
    finally:
        os.close(cg_fd)
    if fd < 0:
        if -fd == _errno.EINVAL:
            raise BpfError(_errno.EINVAL, doing, "the kernel refused the attach type for "
                           "this program (was it loaded for another one? its expected "
                           "attach type is %s)" % _type_name(
                               _enum_or_int(AttachType, prog.expected_attach_type)).lower())
        raise _b.error(-fd, doing)
    return Link(fd, target="cgroup %s %s" % (path, _type_name(at).lower()), program=prog)
