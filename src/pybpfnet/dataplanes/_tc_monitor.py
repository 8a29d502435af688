"""What the TC monitors (flowmon, l7, capture) share: argument checks,
interface resolution, attaching at a tcx position, record addresses and
clocks, the ``async for`` loop over a ring buffer, endpoint text, the
layout enums of their BPF objects, and their handle methods
(:class:`_TcMonitor`). Private."""

import asyncio
import contextlib
import ipaddress
import os
import socket
import time

from pybpfnet._errors import NotSupportedError

#: IP protocol numbers -> names, as flow records and views print them.
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
DIRECTIONS = ("ingress", "egress")
POSITIONS = ("first", "last")
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_ADDRESSES = {}


def protocol_name(number):
    """"TCP" for 6 ...; the number as text for an unnamed protocol."""
    return PROTOCOLS.get(number, str(number))


def ip(value):
    """attrs converter: an ipaddress address of ``value`` (kept when it is one)."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value)


def address(raw, family):
    """The ipaddress object of a BPF key's 16-byte address (IPv4 as
    ::ffff:a.b.c.d when ``family`` is 4). Cached: records of one host pair
    share their address objects."""
    raw = bytes(raw)
    addr = _ADDRESSES.get(raw)
    if addr is None:
        if family == 4 and raw[:12] == _V4_MAPPED:
            addr = ipaddress.IPv4Address(raw[12:])
        else:
            addr = ipaddress.IPv6Address(raw)
        if len(_ADDRESSES) > 65536:
            _ADDRESSES.clear()
        _ADDRESSES[raw] = addr
    return addr


def mono_to_wall():
    """Seconds to add to a CLOCK_MONOTONIC time (what bpf_ktime_get_ns
    counts) to get the wall clock."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def endpoint(addr, port, name=None):
    """"10.0.0.1:80" / "[fd00::1]:80", followed by "(name)" when named."""
    text = ("[%s]:%d" if getattr(addr, "version", 4) == 6 else "%s:%d") % (addr, port)
    return "%s(%s)" % (text, name) if name else text


def check_options(interfaces, directions, position):
    """Normalised (interfaces, directions) of a monitor's arguments: a
    single name/ifindex or direction becomes a 1-tuple. Raises ValueError
    naming the accepted values."""
    if isinstance(interfaces, (str, int)):
        interfaces = (interfaces,)
    if isinstance(directions, str):
        directions = (directions,)
    directions = tuple(directions)
    if not directions:
        raise ValueError("directions: expected 'ingress' and/or 'egress', got none")
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError("direction must be 'ingress' or 'egress', not %r" % (d,))
    if position not in POSITIONS:
        raise ValueError("position must be 'first' or 'last', not %r" % (position,))
    return (tuple(interfaces) if interfaces is not None else None), directions


def check_ring_size(ring_size):
    """``ring_size`` as an int: a power of two of at least one page (what
    BPF_MAP_TYPE_RINGBUF accepts). Raises ValueError saying so."""
    page = os.sysconf("SC_PAGE_SIZE")
    if isinstance(ring_size, bool) or not isinstance(ring_size, int) or ring_size < page \
            or ring_size & (ring_size - 1):
        raise ValueError("ring_size must be a power of two >= %d bytes (the page size), "
                         "not %r" % (page, ring_size))
    return ring_size


def check_number(name, value, kind=float, minimum=0):
    """``kind(value)`` when it is at least ``minimum`` (a whole number for
    ``kind=int``); else ValueError naming ``name`` and what it must be."""
    try:
        v = kind(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not v >= minimum or (kind is int and v != value):
        raise ValueError("%s must be a %s >= %s, not %r"
                         % (name, "whole number" if kind is int else "number", minimum, value))
    return v


def resolve(iface, what):
    """(ifindex, name) of an interface name or ifindex in the calling
    thread's network namespace. Raises FileNotFoundError naming ``what``
    (the monitor) and the interface."""
    try:
        if isinstance(iface, int):
            return iface, socket.if_indextoname(iface)
        return socket.if_nametoindex(iface), iface
    except OSError:
        raise FileNotFoundError("%s: no interface %r in this network namespace"
                                % (what, iface)) from None


def attach(prog, ifindex, direction, position):
    """A Link of ``prog`` at TC ``direction`` of ``ifindex``: tcx at
    ``position`` ("first"/"last"), or a clsact filter without tcx
    (Linux < 6.6; unordered, so ``position`` does not apply)."""
    try:
        return prog.attach_tc(ifindex, direction, **{position: True})
    except NotSupportedError:
        return prog.attach_tc(ifindex, direction)


def attach_all(monitor, interfaces, what, position):
    """Attach ``monitor.program(d)`` at every direction of ``interfaces``
    into ``monitor._stack``, filling ``monitor._names`` and ``_links``."""
    for iface in interfaces or ():
        ifindex, name = resolve(iface, what)
        monitor._names[ifindex] = name
        for d in monitor.directions:
            link = monitor._stack.enter_context(
                attach(monitor.program(d), ifindex, d, position))
            monitor._links.append(link)


async def records_async(monitor, fd, wait):
    """``async for`` body of a monitor: ``monitor.poll(0)``'s records, and
    when there are none, wait (at most ``wait`` seconds) for ``fd`` (its
    ring) to turn readable. Ends when the monitor is closed; the reader is
    removed on every exit (a closed fd's registration is dropped too)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while not monitor.closed:
            ready.clear()
            recs = monitor.poll(0)
            for r in recs:
                yield r
            if not recs:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ready.wait(), wait)
    finally:
        loop.remove_reader(fd)


def layout_enums(globals_, name):
    """{member name: enum type} of the BTF struct ``name`` (an object's
    ``*_layout_enums``, one member per enum it publishes)."""
    codec = globals_.type_of(name)
    return {field_name: field.codec.py_type
            for field_name, field in zip(codec.field_names, codec.fields)}


def short(name, prefix):
    """An enum member's name without ``prefix``, in lower case."""
    return name[len(prefix):].lower()


class _TcMonitor:
    """The handle methods of the TC monitors (FlowMonitor, L7Monitor,
    Capture). A subclass sets ``_PROG`` (direction -> program name),
    ``_poll_wait`` (seconds ``poll()`` waits at most per round of ``for``
    and ``async for``) and ``_ring``/``_obj``, and calls
    ``_init_handles()`` before it attaches anything."""

    _PROG = {}
    _poll_wait = 1.0

    def _init_handles(self):
        self._stack = contextlib.ExitStack()
        self._names = {}
        self._links = []
        self._closed = False

    def program(self, direction):
        """The loaded program of one direction (for test_run or own attach).
        Raises ValueError for a direction other than "ingress"/"egress"."""
        if direction not in self._PROG:
            raise ValueError("direction must be 'ingress' or 'egress', not %r" % (direction,))
        return self._obj.programs[self._PROG[direction]]

    @property
    def links(self):
        """The Links this monitor made: per interface and direction, then any tracers."""
        return tuple(self._links)

    @property
    def closed(self):
        """True once ``close()`` ran: the programs are detached and unloaded."""
        return self._closed

    @property
    def ring(self):
        """The ring buffer the BPF side writes records (flows, samples, packets) into."""
        return self._ring

    def fileno(self):
        """The ring buffer's fd: readable when the BPF side wrote records."""
        return self._ring.fileno()

    def __iter__(self):
        """Records as ``poll()`` returns them, forever (until closed)."""
        while not self._closed:
            yield from self.poll(timeout=self._poll_wait)

    def __aiter__(self):
        """``async for record in monitor``: records as they come (the
        ring's fd is watched by the running event loop) until the monitor
        is closed; the fd is no longer watched after the loop ends."""
        return records_async(self, self._ring.fileno(), self._poll_wait)

    def close(self):
        """Detach and unload (idempotent). What was not read yet is dropped:
        ``flush()`` (FlowMonitor, L7Monitor) returns it first."""
        if not self._closed:
            self._closed = True
            self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
