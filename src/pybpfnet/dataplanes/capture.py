"""Packet capture: packets that pass a tcpdump-like filter, evaluated in
BPF at TC ingress/egress, copied up to a snap length into a ring buffer
and read in Python or written as pcap.

::

    from pybpfnet.dataplanes.capture import Capture

    with Capture(["eth0"], filter="tcp port 443 and host 10.0.0.2", snaplen=128) as cap:
        cap.write_pcap("out.pcap", count=100)    # tshark -r out.pcap
        for pkt in cap:                           # CapturedPacket records
            print(pkt)

Like xdpdump, the program sits at the hook in front of (``position=
"first"``) other programs and never changes a verdict; unlike tcpdump it
needs no AF_PACKET socket, and the filter is compiled by pybpfnet
(``compile_filter``) into a rule table the BPF program walks, not into
classic BPF. See docs/capture.md.
"""

import collections
import struct
import time

import attrs

from pybpfnet import _netlink
from pybpfnet._object import open_bundled
from pybpfnet.dataplanes import _cap_abi, _tc_monitor
from pybpfnet.dataplanes._cap_abi import abi
from pybpfnet.dataplanes._cap_filter import CaptureFilter, compile_filter
from pybpfnet.packet.pcap import PcapWriter

__all__ = ["Capture", "CapturedPacket", "CaptureStats", "CaptureFilter", "compile_filter"]


HOOKS = ("tc", "xdp")
XDP_MODES = ("auto", "native", "generic")


def _mono_to_wall_ns():
    """Nanoseconds to add to CLOCK_MONOTONIC (bpf_ktime_get_ns) for the wall
    clock (whole nanoseconds: _tc_monitor.mono_to_wall's float seconds
    would round pcap's nanosecond timestamps)."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _as_filter(filter):
    """A CaptureFilter of an expression, a CaptureFilter or None."""
    if isinstance(filter, CaptureFilter):
        return filter
    if filter is not None and not isinstance(filter, str):
        raise ValueError("filter must be a tcpdump-like expression (str), a CaptureFilter "
                         "or None, not %r" % (filter,))
    return compile_filter(filter)


@attrs.frozen
class CapturedPacket:
    """One captured packet: ``data`` is its first ``snaplen`` bytes (from
    the Ethernet header), ``orig_len`` its length at the hook (a GSO packet
    is one super-packet here, as in tcpdump), ``timestamp_ns`` wall-clock
    epoch nanoseconds and ``mono_ns`` the CLOCK_MONOTONIC time BPF took."""

    timestamp_ns: int
    ifindex: int
    direction: str
    orig_len: int
    data: bytes
    interface: object = None
    mono_ns: int = 0

    @property
    def timestamp(self):
        """Epoch seconds as a float."""
        return self.timestamp_ns / 1e9

    @property
    def truncated(self):
        """Whether the snap length cut the packet."""
        return self.orig_len > len(self.data)

    def summary(self):
        """The decoded headers on one line (pybpfnet.packet.parse, never raises)."""
        from pybpfnet.packet import parse
        s = parse(self.data, strict=False).summary()
        if s.startswith("Ethernet ") and " / " in s:
            s = s.split(" / ", 1)[1]
        return s

    def __str__(self):
        t = time.strftime("%H:%M:%S", time.localtime(self.timestamp_ns // 1_000_000_000))
        return "%s.%06d %s %s %s, length %d" % (
            t, self.timestamp_ns % 1_000_000_000 // 1000, self.interface or self.ifindex,
            "In " if self.direction == "ingress" else "Out", self.summary(), self.orig_len)


@attrs.frozen
class CaptureStats:
    """Counters of the BPF side, summed over CPUs: packets ``seen`` at the
    hooks, ``captured`` into the ring, ``filtered`` out, and ``lost``
    (matched but the ring was full: read faster or give a larger
    ``ring_size``)."""

    seen: int
    captured: int
    filtered: int
    lost: int

    def to_dict(self):
        return attrs.asdict(self)


class Capture(_tc_monitor._TcMonitor):
    """The packet capture data plane: the BPF program loaded and attached
    at TC ``directions`` ("ingress", "egress") of ``interfaces`` (names or
    ifindexes, resolved in the calling thread's network namespace), or only
    loaded with ``interfaces=None`` (then ``program(direction)`` test-runs
    packets).

    ``hook="xdp"`` captures at XDP instead (ingress only, before the stack,
    as xdpdump does; Linux >= 5.18; ``xdp_mode`` "auto", "native" or
    "generic"). An interface has one XDP program unless a dispatcher
    shares it: attaching fails with HookBusyError when one is there.

    ``filter``: a tcpdump-like expression (see ``compile_filter`` and
    docs/capture.md) or a compiled CaptureFilter; None captures everything.
    ``snaplen``: bytes kept of each packet (a whole number, 1 .. 16384).
    ``ring_size``: the ring buffer's bytes (a power of two, at least a page,
    so a whole number of pages); each record takes a 24-byte header, the
    captured bytes and 8 bytes of ring header. ``directions``: a non-empty
    selection of "ingress"/"egress", each at most once (default: both; with
    ``hook="xdp"`` "ingress" only).
    ``position``: "first" in the interface's tcx chain (default: packets
    are seen before other programs' verdicts) or "last". ``netns``: the
    network namespace of ``interfaces`` (a name in /run/netns, a path or an
    fd; None: the calling thread's); the calling thread enters it only
    while attaching. ``closed`` tells whether ``close()`` ran; iteration
    (``for``/``async for``) ends then.

    Needs Linux >= 5.17 (bpf_loop, ring buffer; tcx links from 6.6, else a
    clsact filter), CAP_BPF and CAP_NET_ADMIN (and CAP_SYS_ADMIN with
    ``netns``). Raises ValueError for a bad filter (with the position) or
    one larger than the BPF rule table, and for a bad ``hook``,
    ``xdp_mode``, ``directions``, ``position``, ``snaplen`` or
    ``ring_size`` (naming what is accepted); FileNotFoundError for an
    interface that does not exist; BpfError (and subclasses) when load or
    attach fails; nothing stays attached then.
    """

    _PROG = _cap_abi.PROG
    _poll_wait = 0.5

    def __init__(self, interfaces=None, *, filter=None, snaplen=262,
                 directions=None, ring_size=1 << 22, position="first", netns=None,
                 hook="tc", xdp_mode="auto"):
        if hook not in HOOKS:
            raise ValueError("hook must be 'tc' or 'xdp', not %r" % (hook,))
        if xdp_mode not in XDP_MODES:
            raise ValueError("xdp_mode must be 'auto', 'native' or 'generic', not %r"
                             % (xdp_mode,))
        if directions is None:
            directions = _tc_monitor.DIRECTIONS if hook == "tc" else ("ingress",)
        interfaces, directions = _tc_monitor.check_options(interfaces, directions, position)
        if len(set(directions)) != len(directions):
            raise ValueError("directions: each of 'ingress' and 'egress' at most once, not %r"
                             % (directions,))
        if hook == "xdp" and directions != ("ingress",):
            raise ValueError("hook='xdp' captures ingress only, not %r" % (directions,))
        ring_size = _tc_monitor.check_ring_size(ring_size)
        self._abi = abi()
        if isinstance(snaplen, bool) or not isinstance(snaplen, int) \
                or not 1 <= snaplen <= self._abi.max_snaplen:
            raise ValueError("snaplen must be 1 .. %d (bytes, a whole number), not %r"
                             % (self._abi.max_snaplen, snaplen))
        self.snaplen = snaplen
        self.directions = directions
        self.hook = hook
        self._filter = _as_filter(filter)
        hdr = self._abi.header
        self._hdr = struct.Struct("=" + hdr.fmt)
        self._hdr_fields = tuple(hdr.field_names)
        if self._hdr_fields != ("ts_ns", "ifindex", "orig_len", "cap_len", "direction") \
                or self._hdr.size != hdr.size:
            raise RuntimeError("capture: unexpected ring record header %r" % (self._hdr_fields,))
        self._init_handles()
        self._pending = collections.deque()
        self._wall = _mono_to_wall_ns()
        try:
            spec = open_bundled(_cap_abi.OBJECT)
            spec.maps[_cap_abi.MAP_EVENTS].max_entries = ring_size
            # load only the hook's programs (XDP's helpers need Linux >= 5.18)
            for name in _cap_abi.PROG.values():
                spec.programs[name].autoload = hook == "tc"
            spec.programs[_cap_abi.PROG_XDP].autoload = hook == "xdp"
            self._obj = self._stack.enter_context(spec.load())
            self._config = self._obj.maps[_cap_abi.MAP_CONFIG]
            self._ring = self._obj.maps[_cap_abi.MAP_EVENTS]
            self._stats = self._obj.maps[_cap_abi.MAP_STATS]
            self._globals = self._obj.globals       # (opens the .bss map now)
            self._active = self._globals[_cap_abi.VAR_ACTIVE]
            self._write_config(self._active)
            with _netlink.in_netns(netns):
                if hook == "tc":
                    _tc_monitor.attach_all(self, interfaces, "capture", position)
                for iface in (interfaces or ()) if hook == "xdp" else ():
                    ifindex, name = _tc_monitor.resolve(iface, "capture")
                    self._names[ifindex] = name
                    link = self._stack.enter_context(
                        self.program("ingress").attach_xdp(ifindex, xdp_mode))
                    self._links.append(link)
        except BaseException:
            self._stack.close()
            raise

    # -- configuration ----------------------------------------------------------
    def _write_config(self, slot):
        a = self._abi
        self._config[slot] = self._filter.config(self.snaplen, a.fields, a.max_terms,
                                                 a.max_lits)

    @property
    def filter(self):
        """The compiled filter (CaptureFilter; ``str()`` shows its terms)."""
        return self._filter

    def set_filter(self, filter):
        """Replace the filter (an expression, a CaptureFilter or None). The
        new table goes into the config slot not in use, then the BPF side
        is switched to it: each packet is judged by the old or the new
        filter as a whole. Raises ValueError as the constructor (the old
        filter stays then)."""
        new = _as_filter(filter)
        slot = self._active ^ 1
        old, self._filter = self._filter, new
        try:
            self._write_config(slot)
        except BaseException:
            self._filter = old
            raise
        self._globals[_cap_abi.VAR_ACTIVE] = slot
        self._active = slot

    # -- handles (links, ring, fileno: _TcMonitor) ------------------------------------
    def program(self, direction="ingress"):
        """The loaded program of one direction (for test_run or own attach;
        with ``hook="xdp"`` the XDP program, "ingress" only). Both TC
        programs are loaded whatever ``directions`` attached. Raises
        ValueError for a direction other than "ingress"/"egress" (and for
        "egress" with ``hook="xdp"``)."""
        if self.hook == "tc" or direction not in _cap_abi.PROG:
            return super().program(direction)
        if direction != "ingress":
            raise ValueError("hook='xdp' has no %r program (ingress only)" % (direction,))
        return self._obj.programs[_cap_abi.PROG_XDP]

    # -- packets ----------------------------------------------------------------------
    def _decode(self, raw):
        ts, ifindex, orig_len, cap_len, direction = self._hdr.unpack_from(raw)
        start = self._hdr.size
        return CapturedPacket(
            timestamp_ns=ts + self._wall, ifindex=ifindex,
            direction=_cap_abi.DIRECTIONS[direction & 1], orig_len=orig_len,
            data=bytes(raw[start:start + cap_len]), interface=self._names.get(ifindex),
            mono_ns=ts)

    def _poll_raw(self, timeout):
        if self._pending:
            out = list(self._pending)
            self._pending.clear()
            return out
        self._wall = _mono_to_wall_ns()         # follow wall-clock steps (NTP)
        return self._ring.poll(timeout)

    def poll(self, timeout=0):
        """Packets captured since the last call, oldest first; waits up to
        ``timeout`` seconds (None: forever) for the first one."""
        return [self._decode(r) for r in self._poll_raw(timeout)]

    def _batches(self, count, duration):
        """Lists of raw ring records, ``count`` of them in all at most (the
        rest stays pending), for at most ``duration`` seconds."""
        deadline = None if duration is None else time.monotonic() + duration
        n = 0
        while not self._closed and (count is None or n < count):
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            batch = self._poll_raw(wait)
            if count is not None and n + len(batch) > count:
                self._pending.extend(batch[count - n:])
                batch = batch[:count - n]
            n += len(batch)
            if batch:
                yield batch
            if deadline is not None and time.monotonic() >= deadline:
                return

    def packets(self, count=None, duration=None):
        """A generator of up to ``count`` packets, for at most ``duration``
        seconds (None: no limit). Packets not yet taken when the generator
        is closed early stay for the next call."""
        for batch in self._batches(count, duration):
            for i, raw in enumerate(batch):
                try:
                    yield self._decode(raw)
                except GeneratorExit:
                    self._pending.extendleft(reversed(batch[i + 1:]))
                    raise

    def write_pcap(self, dest, count=None, duration=None):
        """Write captured packets to a pcap file (a path, or a binary file
        object left open) until ``count`` packets or ``duration`` seconds,
        whichever comes first (neither: until Ctrl-C, which ends the file
        cleanly and returns). Returns the number of packets written. The
        file is nanosecond pcap, LINKTYPE_ETHERNET, with this capture's
        snaplen; tshark, tcpdump and scapy read it. Records go from the ring
        to the file without a CapturedPacket object each."""
        unpack, start = self._hdr.unpack_from, self._hdr.size
        with PcapWriter(dest, snaplen=self.snaplen) as w:
            try:
                for batch in self._batches(count, duration):
                    wall = self._wall
                    recs = []
                    for raw in batch:
                        ts, _, orig_len, cap_len, _ = unpack(raw)
                        recs.append((ts + wall, raw[start:start + cap_len], orig_len))
                    w.write_records(recs)
                    w.flush()
            except KeyboardInterrupt:
                if count is None and duration is None:
                    return w.count
                raise
            return w.count

    def stats(self):
        """CaptureStats summed over CPUs."""
        return CaptureStats(**{name: self._stats.sum(i) for name, i in self._abi.stats.items()})

    def __repr__(self):
        ifaces = ", ".join(self._names.values()) or "not attached"
        return "<Capture %s %s%s filter=%r snaplen=%d>" % (
            ifaces, "xdp " if self.hook == "xdp" else "", "/".join(self.directions),
            self._filter.expression, self.snaplen)

