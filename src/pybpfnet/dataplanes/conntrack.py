"""Connection tracking in BPF: TCP, UDP and ICMP/ICMPv6 echo over IPv4 and
IPv6, with a TCP state machine after nf_conntrack's.

:class:`Conntrack` loads the bundled tracker (``csrc/bpf/conntrack``),
attaches it to an interface at TC ingress and egress (it then sees both
directions of every connection through it), and gives its tables back as
:class:`Connection` records; events (new, update, destroy) stream from a
ring buffer. The same tables live in any program that includes
``pybn_conntrack.h`` (the firewall, the load balancer):
:meth:`Conntrack.from_object` reads those. See docs/conntrack.md.
"""

import errno as _errno
import ipaddress
import os
import platform
import struct
import time

import attrs

import pybpfnet as _bn
from pybpfnet.dataplanes import _ct_abi as abi
from pybpfnet.dataplanes._ct_abi import (CtState, CtStatus, EventType, Reason, Table,
                                        Verdict)
from pybpfnet.dataplanes._owner import _LinkOwner

__all__ = ["Conntrack", "ConntrackOptions", "Timeouts", "Connection", "ConnectionEvent",
           "ConntrackStats", "SweepResult", "EventStream", "RunningTracker", "running",
           "TrackerClock", "configure",
           "CtState", "CtStatus", "EventType", "Reason", "Table", "Verdict"]

_NS = 1_000_000_000


class TrackerClock:
    """The tracker's clock next to CLOCK_MONOTONIC.

    Entries and events keep times in the tracker's ticks (jiffies, as
    nf_conntrack does: the cheapest clock a BPF program can read; ``hz``
    per second). Read from the tracker's ``ct_clock`` program at creation
    and by ``refresh()``/``now()``; ``monotonic(ticks)`` converts a tick
    count (e.g. from ``lookup_batch(numpy=True)`` on the tables) to
    ``time.monotonic()`` seconds, within a tick."""

    def __init__(self, program):
        self._prog = program
        self.refresh()

    def refresh(self):
        data = self._prog.test_run(_RUN_FRAME).data
        self.ticks, self.ns, self.hz = struct.unpack_from("=QQQ", data)
        return self.ticks

    def now(self):
        """The tracker's current time in ticks."""
        return self.refresh()

    def seconds(self, ticks):
        """A duration in ticks, in seconds."""
        return ticks / self.hz

    def monotonic(self, ticks):
        """A tracker time as CLOCK_MONOTONIC seconds (time.monotonic())."""
        return (self.ns + (ticks - self.ticks) * _NS / self.hz) / _NS

    def ticks_at(self, monotonic):
        """CLOCK_MONOTONIC seconds as a tracker time."""
        return self.ticks + int(round((monotonic * _NS - self.ns) * self.hz / _NS))


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-state timeouts in seconds (idle time after which a connection
    is dropped). The defaults are nf_conntrack's for every state except
    established TCP, where 6 hours (Cilium's value) replaces 5 days: see
    docs/conntrack.md. ``unacknowledged`` caps a TCP state's timeout while
    data is in flight unacknowledged (nf_conntrack's
    ``tcp_timeout_unacknowledged``); ``udp`` applies until a UDP flow is a
    stream (traffic both ways for ``udp_stream_after``), then
    ``udp_stream``."""

    syn_sent: float = 120
    syn_recv: float = 60
    established: float = 6 * 3600
    fin_wait: float = 120
    close_wait: float = 60
    last_ack: float = 30
    time_wait: float = 120
    close: float = 10
    syn_sent2: float = 120
    unacknowledged: float = 300
    udp: float = 30
    udp_stream: float = 120
    icmp: float = 30

    @classmethod
    def nf_conntrack(cls):
        """nf_conntrack's defaults (Linux 6.x sysctls), established 5 days."""
        return cls(established=5 * 86400)

    @classmethod
    def cilium(cls):
        """Cilium's: 60 s SYN, 6 h established, 10 s close, 60 s non-TCP."""
        return cls(syn_sent=60, syn_recv=60, syn_sent2=60, fin_wait=10, close_wait=10,
                   last_ack=10, time_wait=10, close=10, udp=60, udp_stream=60, icmp=60)

    def as_ms(self):
        out = []
        for name in abi.TIMEOUT_SLOTS:
            v = getattr(self, name)
            ms = int(round(v * 1000))
            if not 0 < ms <= 0xFFFFFFFF:
                raise ValueError("timeout %s=%r: must be more than 0 and at most %d s"
                                 % (name, v, 0xFFFFFFFF // 1000))
            out.append(ms)
        return tuple(out)


def _events_mask(events):
    if events is True:
        return abi.EVMASK_ALL
    if not events:
        return 0
    mask = 0
    for e in events:
        e = EventType[e.upper()] if isinstance(e, str) else EventType(e)
        mask |= 1 << e
    return mask


@attrs.frozen(kw_only=True)
class ConntrackOptions:
    """Load-time knobs of the tracker.

    ``max_entries``: the established table; ``embryonic_entries``: the table
    of connections that have not yet proved two-way (a flood of new flows
    evicts only from there). ``tcp_loose``: pick up connections from a
    mid-stream ACK (nf_conntrack's ``nf_conntrack_tcp_loose``);
    ``tcp_liberal``: never mark out-of-window packets invalid
    (``nf_conntrack_tcp_be_liberal``). ``drop_invalid``: the standalone
    program drops INVALID packets (default: it only tracks). ``events``:
    True, False or the EventTypes to emit; ``event_buffer``: ring size in
    bytes (a power of two, at least a page)."""

    max_entries: int = 65536
    embryonic_entries: int = 16384
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    udp_stream_after: float = 2.0
    tcp_loose: bool = True
    tcp_liberal: bool = False
    drop_invalid: bool = False
    events: object = True
    event_buffer: int = 256 * 1024

    def config(self):
        """The ct_cfg value (struct ct_config) for these options."""
        return dict(timeout_ms=self.timeouts.as_ms(),
                    udp_stream_ms=int(round(self.udp_stream_after * 1000)),
                    tcp_loose=int(self.tcp_loose), tcp_liberal=int(self.tcp_liberal),
                    events=_events_mask(self.events), drop_invalid=int(self.drop_invalid),
                    hz=kernel_hz())


_CLOCK_MONOTONIC_COARSE = 6        # linux/time.h


def kernel_hz():
    """The kernel's tick rate (CONFIG_HZ), as the resolution of
    CLOCK_MONOTONIC_COARSE; 0 if that does not look like a tick."""
    try:
        res = time.clock_getres(_CLOCK_MONOTONIC_COARSE)
    except OSError:
        return 0
    hz = round(1 / res) if res > 0 else 0
    return hz if 24 <= hz <= 10000 else 0


def _address(family, raw):
    raw = bytes(raw)
    return ipaddress.ip_address(raw[:4] if family == 4 else raw[:16])


@attrs.frozen(repr=False)
class Connection:
    """One tracked connection: its original tuple (as the first packet was
    seen), its reply tuple (as replies are expected on the wire; different
    from the inverse of the original only with NAT), state and counters.

    Times are CLOCK_MONOTONIC seconds (``time.monotonic()``); ``age``,
    ``idle`` and ``timeout`` (seconds left before expiry, negative when
    expired but not yet swept) were computed when the record was read.
    Times do not take part in comparisons (each read converts the
    tracker's ticks anew).
    ICMP echo: ``sport`` and ``dport`` are the echo identifier."""

    protocol: int
    family: int
    src: object
    dst: object
    sport: int
    dport: int
    reply_src: object
    reply_dst: object
    reply_sport: int
    reply_dport: int
    state: CtState
    status: CtStatus
    packets: int
    bytes: int
    reply_packets: int
    reply_bytes: int
    tcp_flags: int = 0
    reply_tcp_flags: int = 0
    first_seen: float = attrs.field(default=0.0, eq=False)
    last_seen: float = attrs.field(default=0.0, eq=False)
    expires: float = attrs.field(default=None, eq=False)
    table: Table = None
    age: float = attrs.field(default=0.0, eq=False)
    idle: float = attrs.field(default=0.0, eq=False)
    timeout: float = attrs.field(default=None, eq=False)
    key: object = attrs.field(default=None, eq=False)

    @property
    def protocol_name(self):
        return abi.PROTO_NAMES.get(self.protocol, str(self.protocol))

    @property
    def assured(self):
        return bool(self.status & CtStatus.ASSURED)

    @property
    def seen_reply(self):
        return bool(self.status & CtStatus.SEEN_REPLY)

    @property
    def nat(self):
        return bool(self.status & CtStatus.NAT)

    @property
    def original(self):
        """The original direction as a ``pybpfnet.packet.FlowTuple``."""
        from pybpfnet.packet import FlowTuple
        return FlowTuple(self.src, self.dst, self.protocol, self.sport, self.dport)

    @property
    def reply(self):
        from pybpfnet.packet import FlowTuple
        return FlowTuple(self.reply_src, self.reply_dst, self.protocol, self.reply_sport,
                         self.reply_dport)

    def _dir_text(self, src, dst, sport, dport, packets, nbytes):
        if self.protocol in abi.ICMP_PROTOS:
            ports = "id=%d" % sport
        else:
            ports = "sport=%d dport=%d" % (sport, dport)
        return "src=%s dst=%s %s packets=%d bytes=%d" % (src, dst, ports, packets, nbytes)

    def format(self):
        """One line in the style of ``conntrack -L``."""
        timeout = "-" if self.timeout is None else "%d" % max(0, int(self.timeout))
        state = self.state.name if self.protocol == 6 else ""
        parts = ["%-6s %d %s" % (self.protocol_name, self.protocol, timeout)]
        if state:
            parts.append(state)
        parts.append(self._dir_text(self.src, self.dst, self.sport, self.dport,
                                    self.packets, self.bytes))
        if not self.seen_reply:
            parts.append("[UNREPLIED]")
        parts.append(self._dir_text(self.reply_src, self.reply_dst, self.reply_sport,
                                    self.reply_dport, self.reply_packets, self.reply_bytes))
        if self.assured:
            parts.append("[ASSURED]")
        return " ".join(parts)

    def to_dict(self):
        """JSON-friendly dict (addresses as strings, enums as names)."""
        return {
            "protocol": self.protocol_name, "family": self.family,
            "original": {"src": str(self.src), "dst": str(self.dst), "sport": self.sport,
                         "dport": self.dport, "packets": self.packets,
                         "bytes": self.bytes, "tcp_flags": self.tcp_flags},
            "reply": {"src": str(self.reply_src), "dst": str(self.reply_dst),
                      "sport": self.reply_sport, "dport": self.reply_dport,
                      "packets": self.reply_packets, "bytes": self.reply_bytes,
                      "tcp_flags": self.reply_tcp_flags},
            "state": self.state.name, "status": [f.name for f in CtStatus if f in self.status],
            "assured": self.assured, "seen_reply": self.seen_reply,
            "age": round(self.age, 3), "idle": round(self.idle, 3),
            "timeout": None if self.timeout is None else round(self.timeout, 3),
            "table": None if self.table is None else self.table.name.lower(),
        }

    def __repr__(self):
        return "<Connection %s>" % self.format()

    @classmethod
    def _from_entry(cls, key, v, table, clock, now):
        o, r = v.orig, v.reply
        fam = o.family
        mono, secs = clock.monotonic, clock.seconds
        return cls(o.proto, fam, _address(fam, o.src), _address(fam, o.dst), o.sport,
                   o.dport, _address(fam, r.src), _address(fam, r.dst), r.sport, r.dport,
                   _state(v.state), CtStatus(v.status & 0xF), v.packets[0], v.bytes[0],
                   v.packets[1], v.bytes[1], v.tcp_flags[0], v.tcp_flags[1],
                   mono(v.first_seen), mono(v.last_seen), mono(v.expires),
                   Table(table), secs(now - v.first_seen), secs(now - v.last_seen),
                   secs(v.expires - now), key)


def _state(v):
    try:
        return CtState(v)
    except ValueError:
        return v


@attrs.frozen
class ConnectionEvent:
    """A change to a connection: NEW (first packet), UPDATE (state or
    status changed) or DESTROY (with ``reason``). ``timestamp`` is
    CLOCK_MONOTONIC seconds; ``connection`` the connection after the change
    (its ``expires``/``timeout`` are unknown: None)."""

    type: EventType
    timestamp: float
    connection: Connection
    old_state: CtState
    reason: Reason

    def format(self):
        """One line in the style of ``conntrack -E``."""
        tag = {EventType.NEW: "[NEW]", EventType.UPDATE: "[UPDATE]",
               EventType.DESTROY: "[DESTROY]"}[self.type]
        line = "%10s %s" % (tag, self.connection.format())
        if self.type == EventType.DESTROY:
            line += " reason=%s" % self.reason.name.lower()
        return line

    def to_dict(self):
        d = {"event": self.type.name.lower(), "timestamp": self.timestamp,
             "old_state": getattr(self.old_state, "name", self.old_state)}
        if self.type == EventType.DESTROY:
            d["reason"] = self.reason.name.lower()
        d.update(self.connection.to_dict())
        return d

    @classmethod
    def _from_record(cls, ev, clock):
        o, r = ev.orig, ev.reply
        fam = o.family
        ts = ev.ts
        conn = Connection(o.proto, fam, _address(fam, o.src), _address(fam, o.dst), o.sport,
                          o.dport, _address(fam, r.src), _address(fam, r.dst), r.sport,
                          r.dport, _state(ev.state), CtStatus(ev.status & 0xF),
                          ev.packets[0], ev.bytes[0], ev.packets[1], ev.bytes[1],
                          first_seen=clock.monotonic(ev.first_seen),
                          last_seen=clock.monotonic(ts), table=Table(ev.table & 1),
                          age=clock.seconds(ts - ev.first_seen))
        try:
            reason = Reason(ev.reason)
        except ValueError:
            reason = ev.reason
        return cls(EventType(ev.type), clock.monotonic(ts), conn, _state(ev.old_state),
                   reason)


class EventStream:
    """Connection events from the tracker's ring buffer.

    ``poll(timeout)`` returns the events available within ``timeout``
    seconds (None: wait for one, 0: don't wait); iterating blocks for more;
    ``async for`` works under asyncio. A ring buffer has one consumer:
    don't read the same tracker's events from two streams."""

    def __init__(self, ring, clock):
        self._ring = ring
        self._clock = clock

    @property
    def lost(self):
        """Records whose length did not match the event layout."""
        return self._ring.mismatched

    def fileno(self):
        return self._ring.fileno()

    def poll(self, timeout=None):
        return [ConnectionEvent._from_record(r, self._clock) for r in self._ring.poll(timeout)]

    def __iter__(self):
        for rec in self._ring:
            yield ConnectionEvent._from_record(rec, self._clock)

    async def __aiter__(self):
        async for rec in self._ring:
            yield ConnectionEvent._from_record(rec, self._clock)


@attrs.frozen
class ConntrackStats:
    """Counters of the tracker (summed over CPUs) and table occupancy.

    ``evicted_*`` are the LRU evictions of each table: inserts minus
    deletes minus entries (exact when no delete bypassed the tracker)."""

    established: int
    embryonic: int
    max_established: int
    max_embryonic: int
    evicted_established: int
    evicted_embryonic: int
    packets: int
    untracked: int
    invalid: int
    ignored: int
    created: int
    promoted: int
    reopened: int
    reset_before_reply: int
    expired: int
    reaped: int
    busy: int
    events_lost: int
    insert_failed: int
    nat_alias_stale: int

    def to_dict(self):
        return attrs.asdict(self)


@attrs.frozen
class SweepResult:
    """What :meth:`Conntrack.sweep` did: entries read, found expired and
    deleted (fewer when packets refreshed some in between), and the time
    spent (read, reap) in seconds."""

    scanned: int
    expired: int
    deleted: int
    seconds: float
    read_seconds: float
    reap_seconds: float


def _as_network(value):
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, str) and "/" in value:
        return ipaddress.ip_network(value, strict=False)
    addr = ipaddress.ip_address(value)
    return ipaddress.ip_network(addr)


def _protocol(value):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return abi.PROTO_NUMBERS[value.lower()]
        except KeyError:
            raise ValueError("unknown protocol %r: expected one of %s or a number" % (
                value, ", ".join(abi.PROTO_NUMBERS))) from None
    return int(value)


def _states(value):
    if value is None:
        return None
    if isinstance(value, (str, int, CtState)):
        value = [value]
    out = set()
    for s in value:
        out.add(CtState[s.upper()] if isinstance(s, str) else CtState(s))
    return out


def _in(addr, net):
    return addr.version == net.version and addr in net


class _Filter:
    def __init__(self, address=None, src=None, dst=None, port=None, sport=None, dport=None,
                 protocol=None, state=None, family=None, table=None):
        self.address = _as_network(address)
        self.src = _as_network(src)
        self.dst = _as_network(dst)
        self.port, self.sport, self.dport = port, sport, dport
        self.protocol = _protocol(protocol)
        self.states = _states(state)
        self.family = family
        self.table = None if table is None else (
            Table[table.upper()] if isinstance(table, str) else Table(table))

    def key_ok(self, k):
        """Cheap test on the key alone (protocol, family)."""
        if self.protocol is not None and k.proto != self.protocol:
            return False
        if self.family is not None and k.family != self.family:
            return False
        return True

    def __call__(self, c):
        if self.protocol is not None and c.protocol != self.protocol:
            return False
        if self.family is not None and c.family != self.family:
            return False
        if self.states is not None and c.state not in self.states:
            return False
        if self.src is not None and not _in(c.src, self.src):
            return False
        if self.dst is not None and not _in(c.dst, self.dst):
            return False
        if self.address is not None and not any(
                _in(a, self.address) for a in (c.src, c.dst, c.reply_src, c.reply_dst)):
            return False
        if self.port is not None and self.port not in (c.sport, c.dport, c.reply_sport,
                                                       c.reply_dport):
            return False
        if self.sport is not None and c.sport != self.sport:
            return False
        if self.dport is not None and c.dport != self.dport:
            return False
        return True


class Conntrack(_LinkOwner):
    """The BPF connection tracker and its tables.

    ``Conntrack(options)`` (or keyword arguments of
    :class:`ConntrackOptions`) loads the bundled tracker; ``attach(iface)``
    runs it at TC ingress and egress of an interface of the calling thread's
    network namespace. ``entries()`` lists connections, ``sweep()`` deletes
    expired ones (call it periodically), ``events()`` streams changes,
    ``stats()`` counts. A context manager; ``close()`` detaches and unloads.

    Linux >= 5.17 (bpf_loop; 6.6 for exact table counts, ``ct_count``),
    tcx attach >= 6.6 (clsact/cls_bpf otherwise). Needs CAP_BPF, and
    CAP_NET_ADMIN to attach. Raises BpfError (OSError) for kernel failures,
    ValueError for bad options.
    """

    def __init__(self, options=None, **kwargs):
        if options is None:
            options = ConntrackOptions(**kwargs)
        elif kwargs:
            options = attrs.evolve(options, **kwargs)
        self.options = options
        self._init_owner()
        try:
            spec = _bn.open_bundled(abi.OBJECT)
            configure(spec, options)
            self._obj = self._stack.enter_context(spec.load())
            self._setup(self._obj)
        except BaseException:
            self._stack.close()
            raise

    @classmethod
    def from_object(cls, obj):
        """Read and manage the connection tables of another loaded object
        that includes pybn_conntrack.h (a firewall, a load balancer) with
        its helper programs (not built with PYBN_CT_NO_PROGS). The object
        stays the caller's: ``close()`` does not unload it."""
        self = cls._unowned(obj)
        self._setup(obj)
        return self

    @classmethod
    def _unowned(cls, obj):
        """An instance over tables it did not load (``options`` None)."""
        self = cls.__new__(cls)
        self.options = None
        self._init_owner()
        self._obj = obj
        return self

    @classmethod
    def from_map_id(cls, map_id=None):
        """Open the tables of a tracker running elsewhere (another process,
        a firewall or load balancer object) by the id of its
        ``ct_established`` map; None: the only one running (see
        :func:`running`). Read-only: entries(), lookup(), stats() and
        events() work; sweep/delete/flush need the owning object.
        Needs CAP_SYS_ADMIN (objects by id)."""
        found = running()
        if map_id is None:
            if not found:
                raise FileNotFoundError(_errno.ENOENT, "no connection tracker is loaded "
                                        "(start one with `pybpfnet ct run IFACE`)")
            if len(found) > 1:
                raise ValueError("%d trackers are loaded (%s): choose one by its "
                                 "ct_established map id" % (len(found), ", ".join(
                                     "%d: %s" % (t.map_id, "/".join(t.programs))
                                     for t in found)))
            tracker = found[0]
        else:
            matches = [t for t in found if t.map_id == map_id]
            if not matches:
                raise FileNotFoundError(_errno.ENOENT, "no tracker with ct_established map "
                                        "id %d (loaded: %s)" % (map_id, ", ".join(
                                            str(t.map_id) for t in found) or "none"))
            tracker = matches[0]
        self = cls._unowned(None)
        try:
            maps = {name: self._stack.enter_context(_bn.Map.from_id(mid))
                    for name, mid in tracker.maps.items()}
            layout = _bn.open_bundled(abi.OBJECT).globals.type_of(abi.LAYOUT_EVENT)
            self._setup_maps(maps, layout)
            if abi.PROG_CLOCK not in tracker.program_ids:
                raise ValueError("the tracker with map id %d has no %s program"
                                 % (tracker.map_id, abi.PROG_CLOCK))
            clock = self._stack.enter_context(
                _bn.Program.from_id(tracker.program_ids[abi.PROG_CLOCK]))
            self._clock = TrackerClock(clock)
        except BaseException:
            self._stack.close()
            raise
        self.object = None
        self.program = self.xdp_program = self._reap = self._count = None
        self._globals = None
        return self

    def _setup(self, obj):
        self.object = obj
        self._setup_maps(obj.maps, obj.globals.type_of(abi.LAYOUT_EVENT))
        self.program = obj.programs.get(abi.PROG_TC)
        self.xdp_program = obj.programs.get(abi.PROG_XDP)
        self._reap = obj.programs[abi.PROG_REAP]
        self._count = obj.programs.get(abi.PROG_COUNT)
        self._clock = TrackerClock(obj.programs[abi.PROG_CLOCK])
        self._globals = obj.globals
        self._req_codec = obj.globals.type_of(abi.LAYOUT_REAP_REQ)

    def _setup_maps(self, maps, event_layout):
        self.established = maps[abi.ESTABLISHED]
        self.embryonic = maps[abi.EMBRYONIC]
        self._tables = (self.established, self.embryonic)
        self._stats_map = maps[abi.STATS]
        self._ring = maps[abi.EVENTS]
        self._ring.set_event_type(event_layout)

    def _need_object(self, what):
        if self._reap is None:
            raise ValueError("%s needs the tracker's own object (its %s program); this "
                             "Conntrack only reads the tables" % (what, abi.PROG_REAP))

    # -- lifetime (close, context manager, finalizer: _LinkOwner) -----------------
    def __repr__(self):
        if self._closed:
            return "<Conntrack closed>"
        return "<Conntrack established=%d/%d embryonic=%d/%d links=%d>" % (
            len(self.established), self.established.max_entries, len(self.embryonic),
            self.embryonic.max_entries, len(self._links))

    # -- attach ---------------------------------------------------------------
    def attach(self, iface, *, ingress=True, egress=True, backend="auto"):
        """Run the tracker at TC ingress and/or egress of ``iface`` (a name or
        ifindex in the calling thread's network namespace); returns the
        links (also closed by ``detach()``/``close()``). All or nothing."""
        if self.program is None:
            raise ValueError("this object has no %r program to attach" % abi.PROG_TC)
        made = []
        try:
            for direction, on in (("ingress", ingress), ("egress", egress)):
                if on:
                    made.append(self.program.attach_tc(iface, direction, backend=backend))
        except BaseException:
            for link in reversed(made):
                link.close()
            raise
        self._links.extend(made)
        return made

    def attach_xdp(self, iface, mode="auto"):
        """Track what arrives at ``iface`` at XDP (one direction only)."""
        return self._keep(self.xdp_program.attach_xdp(iface, mode))

    @property
    def links(self):
        return list(self._links)

    @property
    def clock(self):
        """The tracker's :class:`TrackerClock`."""
        return self._clock

    def detach(self):
        """Detach from every interface."""
        self._close_links()

    # -- reading ----------------------------------------------------------------
    def _tables_for(self, flt):
        for t in (Table.ESTABLISHED, Table.EMBRYONIC):
            if flt.table is None or flt.table == t:
                yield t, self._tables[t]

    def entries(self, **filters):
        """Connections of both tables (established first), as
        :class:`Connection` records. Filters (all optional, combined with
        AND): ``address`` (an address or network on either side, either
        direction), ``src``/``dst`` (original direction), ``port``,
        ``sport``/``dport`` (original direction), ``protocol`` ("tcp", 6,
        ...), ``state`` (a CtState, name, or several), ``family`` (4, 6),
        ``table`` ("established", "embryonic")."""
        flt = _Filter(**filters)
        clock = self._clock
        now = clock.now()
        for t, m in self._tables_for(flt):
            for k, v in m.lookup_batch().items():
                if not flt.key_ok(k):
                    continue
                c = Connection._from_entry(k, v, t, clock, now)
                if flt(c):
                    yield c

    def __iter__(self):
        return self.entries()

    def __len__(self):
        return len(self.established) + len(self.embryonic)

    def lookup(self, src, dst, protocol, sport=0, dport=0):
        """The connection a packet src:sport -> dst:dport of ``protocol``
        belongs to (either direction), or None. ICMP: sport = echo id."""
        proto = _protocol(protocol)
        src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        fam = src.version
        if proto in abi.ICMP_PROTOS:
            a, b = src.packed.ljust(16, b"\0"), dst.packed.ljust(16, b"\0")
            sides = [((a, sport), (b, sport)), ((b, sport), (a, sport))]
        else:
            a, b = sorted([(src.packed.ljust(16, b"\0"), sport),
                           (dst.packed.ljust(16, b"\0"), dport)])
            sides = [((a[0], a[1]), (b[0], b[1]))]
        now = self._clock.now()
        for (aa, ap), (bb, bp) in sides:
            key = {"a": _raw(aa), "b": _raw(bb), "aport": ap, "bport": bp, "proto": proto,
                   "family": fam}
            for t in (Table.ESTABLISHED, Table.EMBRYONIC):
                m = self._tables[t]
                v = m.get(key)
                if v is not None:
                    return Connection._from_entry(m.key_type.decode(m.key_type.encode(key)),
                                                  v, t, self._clock, now)
        return None

    # -- deleting -------------------------------------------------------------------
    def _reap_batch(self, raw, n, now):
        """Hand n requests (raw struct ct_reap_req bytes) to ct_reap."""
        if n == 0:
            return 0
        g = self._globals
        g[abi.REAP_BUF] = raw
        g[abi.REAP_N] = n
        g[abi.REAP_NOW] = now
        self._reap.test_run(_RUN_FRAME)
        return g[abi.REAP_DELETED]

    def _reap_keys(self, per_table, reason, force, now):
        """per_table: {Table: keys (numpy array or list of key structs)}."""
        self._need_object(reason.name.lower())
        deleted = 0
        batch = abi.REAP_BATCH
        for table, keys in per_table.items():
            if hasattr(keys, "dtype"):
                import numpy as np
                size = self._req_codec.size
                for i in range(0, len(keys), batch):
                    chunk = keys[i:i + batch]
                    reqs = np.zeros((len(chunk), size), np.uint8)
                    klen = chunk.dtype.itemsize
                    reqs[:, :klen] = np.ascontiguousarray(chunk).view(np.uint8).reshape(
                        len(chunk), klen)
                    reqs[:, klen] = int(table)
                    reqs[:, klen + 1] = int(reason)
                    reqs[:, klen + 2] = int(force)
                    deleted += self._reap_batch(reqs.tobytes(), len(chunk), now)
            else:
                enc = self._req_codec.encode
                keys = list(keys)
                for i in range(0, len(keys), batch):
                    chunk = keys[i:i + batch]
                    raw = b"".join(enc({"key": k, "table": int(table), "reason": int(reason),
                                        "force": int(force)}) for k in chunk)
                    deleted += self._reap_batch(raw, len(chunk), now)
        return deleted

    def delete(self, *connections, **filters):
        """Delete the given connections, or those matching ``filters`` (as
        for entries()); at least one of the two is required. DESTROY events
        say reason DELETE. Returns the count deleted."""
        if not connections and not filters:
            raise ValueError("delete() needs connections or filters; use flush() to "
                             "delete everything")
        if not connections:
            connections = list(self.entries(**filters))
        per = {}
        for c in connections:
            per.setdefault(c.table, []).append(c.key)
        return self._reap_keys(per, Reason.DELETE, True, 0)

    def flush(self):
        """Delete every connection (DESTROY events say reason FLUSH)."""
        per = {}
        for t in (Table.ESTABLISHED, Table.EMBRYONIC):
            m = self._tables[t]
            keys = _np_keys(m)
            per[t] = keys if keys is not None else list(m.keys())
        return self._reap_keys(per, Reason.FLUSH, True, 0)

    def sweep(self, now=None):
        """Delete the connections whose timeout has passed.

        Reads both tables with BPF_MAP_LOOKUP_BATCH (into numpy arrays when
        numpy is installed), then hands the expired keys to the ct_reap
        program, which checks each again (a packet may have refreshed it),
        deletes it and emits its DESTROY event (reason TIMEOUT). ``now``:
        CLOCK_MONOTONIC seconds to sweep as of (default: now). Packets also
        replace an expired entry they find, so sweeping only frees memory
        and reports; call it every few seconds. Returns a SweepResult."""
        t0 = time.perf_counter()
        clock = self._clock
        now_t = clock.now() if now is None else clock.ticks_at(now)
        scanned = 0
        per = {}
        for t in (Table.ESTABLISHED, Table.EMBRYONIC):
            m = self._tables[t]
            got = _np_read(m)
            if got is not None:
                keys, vals = got
                scanned += len(keys)
                per[t] = keys[vals["expires"] <= now_t]
            else:
                items = m.lookup_batch()
                scanned += len(items)
                per[t] = [k for k, v in items.items() if v.expires <= now_t]
        t1 = time.perf_counter()
        expired = sum(len(k) for k in per.values())
        deleted = self._reap_keys(per, Reason.TIMEOUT, False, now_t) if expired else 0
        t2 = time.perf_counter()
        return SweepResult(scanned, expired, deleted, t2 - t0, t1 - t0, t2 - t1)

    # -- events and counters -------------------------------------------------------
    def events(self):
        """An :class:`EventStream` of NEW/UPDATE/DESTROY events."""
        return EventStream(self._ring, self._clock)

    def counts(self):
        """(established, embryonic) entry counts: exact and cheap on
        Linux >= 6.6 (bpf_map_sum_elem_count), else by walking the keys."""
        if self._count is not None and self._globals is not None:
            try:
                self._count.test_run(_RUN_FRAME)
                c = self._globals[abi.COUNT]
                if c[0] >= 0 and c[1] >= 0:
                    return int(c[0]), int(c[1])
            except OSError:
                pass
        return len(self.established), len(self.embryonic)

    def stats(self):
        """A :class:`ConntrackStats` snapshot."""
        s = self._stats_map.sum(0)
        est, emb = self.counts()
        return ConntrackStats(
            established=est, embryonic=emb,
            max_established=self.established.max_entries,
            max_embryonic=self.embryonic.max_entries,
            evicted_established=max(0, s.inserts[0] - s.deletes[0] - est),
            evicted_embryonic=max(0, s.inserts[1] - s.deletes[1] - emb),
            packets=s.packets, untracked=s.untracked, invalid=s.invalid,
            ignored=s.ignored, created=s.created, promoted=s.promoted,
            reopened=s.reopened, reset_before_reply=s.reset_before_reply,
            expired=s.expired, reaped=s.reaped, busy=s.busy,
            events_lost=s.events_lost, insert_failed=s.insert_failed,
            nat_alias_stale=s.nat_alias_stale)


@attrs.frozen
class RunningTracker:
    """A tracker found in the kernel: the id of its ct_established map, its
    maps by name and the programs that use them (name -> id)."""

    map_id: int
    maps: dict
    program_ids: dict

    @property
    def programs(self):
        return tuple(sorted(self.program_ids))


def running():
    """Trackers loaded in the kernel (any object that includes
    pybn_conntrack.h): a list of RunningTracker, ordered by map id. Needs
    CAP_SYS_ADMIN."""
    wanted = {abi.ESTABLISHED, abi.EMBRYONIC, abi.STATS, abi.EVENTS}
    by_id = {m.id: m.name for m in _bn.maps()}
    progs = _bn.programs()
    found = {}
    for p in progs:
        names = {by_id[i]: i for i in p.map_ids if i in by_id}
        if wanted <= names.keys():
            found.setdefault(names[abi.ESTABLISHED], {n: names[n] for n in wanted})
    by_stats = {maps[abi.STATS]: mid for mid, maps in found.items()}
    ids = {mid: {} for mid in found}
    for p in progs:
        for i in p.map_ids:
            if i in by_stats:
                ids[by_stats[i]][p.name] = p.id
    return [RunningTracker(mid, found[mid], ids[mid]) for mid in sorted(found)]


# A frame for running the helper programs (they ignore it).
_RUN_FRAME = bytes(12) + b"\x88\xb5" + bytes(50)


def _raw(b):
    return bytes(b).ljust(16, b"\0")


def _have_numpy():
    import importlib.util
    return importlib.util.find_spec("numpy") is not None


def _np_read(m):
    if not _have_numpy():
        return None
    return m.lookup_batch(numpy=True)


def _np_keys(m):
    got = _np_read(m)
    return None if got is None else got[0]


def configure(spec, options):
    """Apply ConntrackOptions to an ObjectSpec that includes
    pybn_conntrack.h (before load): table and ring sizes, ct_cfg, and the
    ct_count program left out on kernels without bpf_map_sum_elem_count."""
    if options.max_entries < 1 or options.embryonic_entries < 1:
        raise ValueError("table sizes must be positive")
    ring = options.event_buffer
    page = os.sysconf("SC_PAGE_SIZE")
    if ring < page or ring & (ring - 1):
        raise ValueError("event_buffer must be a power of two of at least %d bytes, "
                         "got %r" % (page, ring))
    spec.maps[abi.ESTABLISHED].max_entries = options.max_entries
    spec.maps[abi.EMBRYONIC].max_entries = options.embryonic_entries
    spec.maps[abi.EVENTS].max_entries = ring
    if abi.ALIAS in spec.maps:
        spec.maps[abi.ALIAS].max_entries = options.max_entries + options.embryonic_entries
    spec.globals[abi.CONFIG] = options.config()
    if abi.PROG_COUNT in spec.programs and _kernel_version() < (6, 6):
        spec.programs[abi.PROG_COUNT].autoload = False
    return spec


def _kernel_version():
    parts = platform.release().split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (0, 0)
