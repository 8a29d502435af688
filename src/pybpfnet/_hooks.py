"""High-level owners of network programs: :class:`XdpProgram` and
:class:`TcFilter`.

Each loads (or borrows) a program, attaches it to any number of interfaces
in one call (all or nothing), reports where it runs, and detaches
everything -- then unloads what it loaded -- on ``close()``.
"""

import os
import warnings

from pybpfnet import _object
from pybpfnet._link import _choice, _resolve_iface, _NS_SELF
from pybpfnet._map import _creation_site
from pybpfnet._object import BpfObject, ObjectSpec
from pybpfnet._program import Program, ProgramType

__all__ = ["XdpProgram", "TcFilter"]


def _flatten(ifaces):
    out = []
    for i in ifaces:
        if isinstance(i, (list, tuple, set, frozenset)):
            out.extend(i)
        else:
            out.append(i)
    return out


class _HookProgram:
    _type = None
    _hook = ""

    def __init__(self, source, program=None):
        self._site = _creation_site()
        self._links = {}
        self._owned = None
        if isinstance(source, Program):
            if program is not None:
                raise ValueError("program= names a program of an object; %r is "
                                 "already one" % source.name)
            prog = source
        else:
            if isinstance(source, BpfObject):
                obj = source
            elif isinstance(source, ObjectSpec):
                obj = self._owned = source.load()
            elif isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike)):
                obj = self._owned = _object.load(source)
            else:
                raise TypeError("%s takes a path, the bytes of an object, an ObjectSpec, "
                                "a BpfObject or a Program, got %s"
                                % (type(self).__name__, type(source).__name__))
            try:
                prog = self._pick(obj, program)
            except BaseException:
                self.close()
                raise
        if prog.type != self._type:
            self.close()
            raise ValueError("%s needs a program of type %s; %r is %s" % (
                type(self).__name__, self._type.name, prog.name,
                getattr(prog.type, "name", prog.type)))
        self.program = prog
        self.object = self._owned if self._owned is not None else (
            source if isinstance(source, BpfObject) else None)

    def _pick(self, obj, name):
        if name is not None:
            return obj.programs[name]
        fit = [p for p in obj.programs.values() if p.type == self._type]
        if len(fit) != 1:
            raise ValueError("object %r has %s %s programs (%s); pass program=<name>" % (
                obj.name, len(fit) or "no", self._type.name,
                ", ".join(p.name for p in fit) or "programs: " + ", ".join(obj.programs)))
        return fit[0]

    @classmethod
    def bundled(cls, name, program=None, **options):
        """Load an object shipped inside the package (see
        ``pybpfnet.bundled()``)."""
        return cls(_object.open_bundled(name), program, **options)

    @property
    def maps(self):
        """The maps of the object the program came from (empty for a bare
        Program)."""
        return self.object.maps if self.object is not None else {}

    # -- attachments --------------------------------------------------------
    def _key(self, iface, *extra):
        ifindex, name = _resolve_iface(iface, "attach %s %r to" % (
            self._hook, self.program.name))
        return (os.stat(_NS_SELF).st_ino, ifindex) + extra, ifindex, name

    def _attach_all(self, ifaces, make, *extra):
        if not ifaces:
            raise TypeError("attach() needs at least one interface")
        made = {}
        try:
            for iface in ifaces:
                key, ifindex, name = self._key(iface, *extra)
                if key in self._links or key in made:
                    raise ValueError("%s %r is already attached to %s%s" % (
                        self._hook, self.program.name, name,
                        "".join(" " + str(e) for e in extra)))
                made[key] = make(ifindex)
        except BaseException:
            for link in reversed(list(made.values())):
                link.close()
            raise
        self._links.update(made)
        return self

    def detach(self, iface=None, *extra):
        """Detach from ``iface`` (of the current network namespace), or from
        every interface when None. Raises KeyError if not attached there."""
        if iface is None:
            links, self._links = self._links, {}
            for link in reversed(list(links.values())):
                link.close()
            return
        key = self._key(iface, *extra)[0]
        try:
            link = self._links.pop(key)
        except KeyError:
            raise KeyError("%s %r is not attached to %r%s" % (
                self._hook, self.program.name, iface,
                "".join(" " + str(e) for e in extra))) from None
        link.close()

    @property
    def links(self):
        """The Links this object owns, in attach order."""
        return list(self._links.values())

    @property
    def interfaces(self):
        """Names of the interfaces the program is attached to."""
        return [link.ifname for link in self._links.values()]

    def attachments(self):
        """Where the program is attached and whether the kernel still runs
        it there, as AttachmentState records (queried now)."""
        return [link.state() for link in self._links.values()]

    # -- lifetime -----------------------------------------------------------
    def close(self):
        """Detach from every interface, then unload the object if this
        instance loaded it. Idempotent."""
        try:
            self.detach()
        finally:
            obj, self._owned = self._owned, None
            if obj is not None:
                obj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_links", None) or getattr(self, "_owned", None) is not None:
            warnings.warn("%s was never closed (made at %s)" % (
                type(self).__name__, self._site), ResourceWarning, source=self)
            self.close()

    def __repr__(self):
        prog = getattr(self, "program", None)
        return "<%s %r on %s>" % (type(self).__name__, prog.name if prog else None,
                                  ", ".join(self.interfaces) or "nothing")


class XdpProgram(_HookProgram):
    """An XDP program attached to any number of interfaces.

    ``source``: a path or the bytes of a BPF object, an ObjectSpec (loaded
    and owned), a BpfObject or a Program (borrowed); ``program``: which
    XDP program of the object (needed when it has several). ``mode`` and
    ``backend`` are the defaults for ``attach`` (see Program.attach_xdp).
    Needs CAP_BPF + CAP_NET_ADMIN."""

    _type = ProgramType.XDP
    _hook = "XDP program"

    def __init__(self, source, program=None, *, mode="auto", backend="auto"):
        _choice(mode, ("auto", "native", "generic"), "XDP mode")
        _choice(backend, ("auto", "link", "netlink"), "XDP backend")
        self.mode = mode
        self.backend = backend
        super().__init__(source, program)

    def attach(self, *ifaces, mode=None):
        """Attach to each interface (names or ifindexes of the current
        network namespace, or one list of them). All or nothing: on any
        failure the ones attached by this call are detached again."""
        mode = mode or self.mode
        return self._attach_all(_flatten(ifaces), lambda ifindex: self.program.attach_xdp(
            ifindex, mode, backend=self.backend))

    def replace(self, program):
        """Swap the program on every interface atomically (each swap has no
        gap; interfaces are swapped one after the other)."""
        for link in self._links.values():
            link.update(program)
        self.program = program


class TcFilter(_HookProgram):
    """A TC (SCHED_CLS) program attached to the ingress and/or egress hook
    of any number of interfaces.

    ``direction``, ``backend`` and ``priority`` are the defaults for
    ``attach`` (see Program.attach_tc; backend "auto" is tcx on Linux >= 6.6
    unless a priority asks for a legacy filter). Needs CAP_BPF +
    CAP_NET_ADMIN."""

    _type = ProgramType.SCHED_CLS
    _hook = "TC program"

    def __init__(self, source, program=None, *, direction="ingress", backend="auto",
                 priority=None):
        _choice(direction, ("ingress", "egress"), "TC direction")
        _choice(backend, ("auto", "tcx", "legacy"), "TC backend")
        self.direction = direction
        self.backend = backend
        self.priority = priority
        super().__init__(source, program)

    def attach(self, *ifaces, direction=None, priority=None):
        """Attach to each interface's ``direction`` hook; all or nothing."""
        direction = direction or self.direction
        _choice(direction, ("ingress", "egress"), "TC direction")
        prio = priority if priority is not None else self.priority
        return self._attach_all(
            _flatten(ifaces), lambda ifindex: self.program.attach_tc(
                ifindex, direction, backend=self.backend, priority=prio), direction)

    def detach(self, iface=None, direction=None):
        """Detach from ``iface``'s ``direction`` hook (default: the
        filter's direction), or from everything when iface is None."""
        if iface is None:
            return super().detach()
        return super().detach(iface, direction or self.direction)

    def replace(self, program):
        """Swap the program on every hook atomically, one after the other."""
        for link in self._links.values():
            link.update(program)
        self.program = program
