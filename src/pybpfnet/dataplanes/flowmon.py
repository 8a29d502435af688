"""Flow monitor: per-flow packets, bytes, TCP flags, timestamps and TCP
handshake RTT, aggregated in BPF at TC ingress/egress (IPv4 and IPv6).

::

    from pybpfnet.dataplanes.flowmon import FlowMonitor

    with FlowMonitor(["eth0"], idle_timeout=10, active_timeout=60) as fm:
        for record in fm:                 # FlowRecords as flows end
            print(record.to_json())
        print(fm.rtt_histogram())         # bcc tcprtt-style log2 histogram

The design follows the netobserv eBPF agent: flows are aggregated in a BPF
hash keyed by 5-tuple + ifindex + direction; a TCP FIN or RST exports the
flow at once through a ring buffer; user space sweeps the table for idle
and active timeouts (in BPF: one bpf_for_each_map_elem pass run through
BPF_PROG_TEST_RUN); when the table is full a packet goes to the ring as a
one-packet record, so no flow is lost silently -- only a full table *and*
a full ring lose data, and that is counted (``stats().lost_*``).
See docs/flowmon.md.
"""

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import time

import attrs

from pybpfnet._errors import NotSupportedError
from pybpfnet._object import open_bundled
from pybpfnet.dataplanes import _flow_abi
from pybpfnet.dataplanes._flow_abi import abi
from pybpfnet.dataplanes._flow_hist import Log2Histogram

__all__ = ["FlowMonitor", "FlowRecord", "FlowMonitorStats", "Log2Histogram",
           "TCP_FLAGS", "write_jsonl"]

TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08),
             ("ACK", 0x10), ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
_SWEEP_FRAME = bytes(64)                 # the sweep program ignores its packet
_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def _mono_to_wall():
    """Seconds to add to a CLOCK_MONOTONIC time (what bpf_ktime_get_ns
    counts) to get the wall clock."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


_ADDRESSES = {}


def _address(raw, family):
    """The ipaddress object of a key's 16-byte address (cached: records
    of one host pair share them)."""
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


def _ip(value):
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value)


@attrs.frozen
class FlowRecord:
    """One flow (or the part of it since its previous export) at one hook.

    ``packets``/``bytes`` count segments and L2 bytes as on the wire (a GSO
    packet counts as the segments it becomes). ``first_ns``/``last_ns`` are
    CLOCK_MONOTONIC nanoseconds (the BPF clock); ``start``/``end`` the same
    as wall-clock seconds. ``rtt_ns`` is the TCP handshake RTT seen at this
    hook (SYN to SYN-ACK; None if not measured). ``drops`` counts packets
    of the flow the kernel dropped after the hook (kfree_skb with a drop
    reason: no socket, full buffers, netfilter, qdisc ...). ``reason`` says why the
    record was exported: "fin", "rst", "full" (table full: a one-packet
    record), "idle", "active", "flush", or None for a live snapshot.
    For ICMP, ``sport``/``dport`` hold the ICMP type and code."""

    src: object = attrs.field(converter=_ip)
    dst: object = attrs.field(converter=_ip)
    sport: int
    dport: int
    protocol: int
    ifindex: int
    direction: str
    packets: int
    bytes: int
    tcp_flags: int
    first_ns: int
    last_ns: int
    rtt_ns: object = None
    drops: int = 0
    reason: object = None
    interface: object = None
    start: float = 0.0
    end: float = 0.0

    @property
    def key(self):
        """The flow's identity: (src, dst, sport, dport, protocol, ifindex, direction)."""
        return (self.src, self.dst, self.sport, self.dport, self.protocol, self.ifindex,
                self.direction)

    @property
    def family(self):
        return self.src.version

    @property
    def protocol_name(self):
        return _PROTOCOLS.get(self.protocol, str(self.protocol))

    @property
    def flags(self):
        """Names of the TCP flags seen, e.g. ("SYN", "ACK")."""
        return tuple(n for n, bit in TCP_FLAGS if self.tcp_flags & bit)

    @property
    def duration(self):
        return (self.last_ns - self.first_ns) / 1e9

    def merge(self, other):
        """This record and a later one of the same flow added up."""
        if other.key != self.key:
            raise ValueError("merge: different flows %s and %s" % (self, other))
        return attrs.evolve(
            self, packets=self.packets + other.packets, bytes=self.bytes + other.bytes,
            tcp_flags=self.tcp_flags | other.tcp_flags,
            first_ns=min(self.first_ns, other.first_ns), last_ns=max(self.last_ns, other.last_ns),
            start=min(self.start, other.start), end=max(self.end, other.end),
            rtt_ns=self.rtt_ns if self.rtt_ns is not None else other.rtt_ns,
            drops=self.drops + other.drops, reason=other.reason)

    def to_dict(self):
        """JSON-friendly fields (addresses as strings, times as ISO-less
        epoch seconds, flags as names)."""
        return {"src": str(self.src), "dst": str(self.dst), "sport": self.sport,
                "dport": self.dport, "protocol": self.protocol_name,
                "family": self.family, "interface": self.interface, "ifindex": self.ifindex,
                "direction": self.direction, "packets": self.packets, "bytes": self.bytes,
                "tcp_flags": list(self.flags), "start": self.start, "end": self.end,
                "rtt_ns": self.rtt_ns, "drops": self.drops, "reason": self.reason}

    def to_json(self):
        """One line of JSON (for JSON-lines output)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self):
        if self.src.version == 6:
            a, b = "[%s]:%d" % (self.src, self.sport), "[%s]:%d" % (self.dst, self.dport)
        else:
            a, b = "%s:%d" % (self.src, self.sport), "%s:%d" % (self.dst, self.dport)
        rtt = " rtt=%.3fms" % (self.rtt_ns / 1e6) if self.rtt_ns else ""
        flags = " [%s]" % ",".join(self.flags) if self.tcp_flags else ""
        drops = " %d dropped" % self.drops if self.drops else ""
        return "%s %s -> %s %s %s: %d pkts %d bytes%s%s%s%s" % (
            self.interface or self.ifindex, a, b, self.protocol_name, self.direction,
            self.packets, self.bytes, drops, flags, rtt,
            " (%s)" % self.reason if self.reason else "")


def write_jsonl(records, fp):
    """Write records as JSON lines to a text file object; returns the count."""
    n = 0
    for r in records:
        fp.write(r.to_json())
        fp.write("\n")
        n += 1
    return n


@attrs.frozen
class FlowMonitorStats:
    """Counters of the BPF side, summed over CPUs. ``lost_records``,
    ``lost_packets`` and ``lost_bytes`` are what a full table *and* a full
    ring lost; ``full`` counts one-packet records sent because the table was
    full; ``ring_deferred`` FIN/RST records left in the table (for the
    sweep) because the ring was full; ``drops`` kernel drops of IP packets
    in the monitored namespace, ``drops_unmatched`` those of no flow in the
    table. ``active_flows`` is the table's size now."""

    packets: int
    non_ip: int
    full: int
    lost_records: int
    lost_packets: int
    lost_bytes: int
    ring_deferred: int
    rtt_samples: int
    drops: int = 0
    drops_unmatched: int = 0
    active_flows: int = 0

    def to_dict(self):
        return attrs.asdict(self)


class FlowMonitor:
    """The flow monitor data plane: the BPF program loaded and attached at
    TC ``directions`` ("ingress", "egress") of ``interfaces`` (names or
    ifindexes, resolved in the calling thread's network namespace), or
    only loaded with ``interfaces=None`` (then ``program(direction)``
    test-runs packets).

    ``max_flows`` sizes the flow table, ``ring_size`` the ring buffer
    (bytes, a power of two). ``idle_timeout``/``active_timeout`` (seconds)
    drive ``sweep()``, which ``poll()`` runs every ``sweep_interval``.
    ``drops``: also attach the kfree_skb tracer (tp_btf, Linux >= 5.17)
    that counts each flow's dropped packets in the calling thread's
    network namespace (``drops_visible`` says whether it is attached).
    ``position``: where in the interface's tcx chain the monitor goes:
    "first" (default: it sees every packet before other programs' verdicts,
    and their TC drops show up as ``drops``) or "last" (only what they let
    through). Without tcx (Linux < 6.6) a clsact filter is used and
    ``position`` does not apply.

    Needs Linux >= 5.13 (ring buffer, bpf_for_each_map_elem; 5.17 with
    ``drops``; tcx links from 6.6, else clsact), CAP_BPF and CAP_NET_ADMIN. Raises BpfError (and subclasses) when load
    or attach fails; nothing stays attached then.
    """

    def __init__(self, interfaces=None, *, directions=("ingress", "egress"), max_flows=65536,
                 ring_size=1 << 20, idle_timeout=15.0, active_timeout=60.0,
                 sweep_interval=1.0, drops=True, position="first"):
        if isinstance(interfaces, (str, int)):
            interfaces = [interfaces]
        if isinstance(directions, str):
            directions = (directions,)
        if position not in ("first", "last"):
            raise ValueError("position must be 'first' or 'last', not %r" % (position,))
        for d in directions:
            if d not in _flow_abi.DIRECTIONS:
                raise ValueError("direction must be 'ingress' or 'egress', not %r" % (d,))
        self.directions = tuple(directions)
        self.idle_timeout = float(idle_timeout)
        self.active_timeout = float(active_timeout)
        self.sweep_interval = float(sweep_interval)
        self._abi = abi()
        self._stack = contextlib.ExitStack()
        self._names = {}
        self._links = []
        self._closed = False
        self._last_sweep = time.monotonic()
        self._wall = _mono_to_wall()
        try:
            spec = open_bundled(_flow_abi.OBJECT)
            spec.maps[_flow_abi.MAP_FLOWS].max_entries = int(max_flows)
            spec.maps[_flow_abi.MAP_EVENTS].max_entries = int(ring_size)
            spec.globals[_flow_abi.VAR_NETNS] = os.stat("/proc/thread-self/ns/net").st_ino
            if not drops:
                spec.programs[_flow_abi.PROG_DROP].autoload = False
            self._obj = self._stack.enter_context(spec.load())
            self._flows = self._obj.maps[_flow_abi.MAP_FLOWS]
            self._ring = self._obj.maps[_flow_abi.MAP_EVENTS]
            self._ring.set_event_type(self._abi.record)
            self._stats = self._obj.maps[_flow_abi.MAP_STATS]
            self._hist = self._obj.maps[_flow_abi.MAP_RTT_HIST]
            self._sweeper = self._obj.programs[_flow_abi.PROG_SWEEP]
            for iface in interfaces or ():
                ifindex, name = _resolve(iface)
                self._names[ifindex] = name
                for d in self.directions:
                    link = _attach(self.program(d), ifindex, d, position)
                    self._stack.enter_context(link)
                    self._links.append(link)
            self.drops_visible = False
            if drops and interfaces:
                link = self._obj.programs[_flow_abi.PROG_DROP].attach_trace()
                self._stack.enter_context(link)
                self._links.append(link)
                self.drops_visible = True
        except BaseException:
            self._stack.close()
            raise

    # -- handles -------------------------------------------------------------
    def program(self, direction):
        """The loaded program of one direction (for test_run or own attach)."""
        return self._obj.programs[_flow_abi.PROG[direction]]

    @property
    def links(self):
        return tuple(self._links)

    @property
    def flows_map(self):
        """The BPF flow table (HashMap of flow_key -> flow_stats)."""
        return self._flows

    @property
    def ring(self):
        return self._ring

    def fileno(self):
        """The ring buffer's fd: readable when BPF exported records."""
        return self._ring.fileno()

    # -- records -------------------------------------------------------------
    def _record(self, key, st, reason):
        first, last = st.first_ns, st.last_ns
        return FlowRecord(
            src=_address(key.saddr, key.family), dst=_address(key.daddr, key.family),
            sport=key.sport, dport=key.dport, protocol=key.proto, ifindex=key.ifindex,
            direction=_flow_abi.DIRECTIONS[key.direction & 1], packets=st.packets,
            bytes=st.bytes, tcp_flags=st.tcp_flags, first_ns=first, last_ns=last,
            rtt_ns=st.rtt_ns or None, drops=st.drops, reason=reason, interface=self._names.get(key.ifindex),
            start=first / 1e9 + self._wall, end=last / 1e9 + self._wall)

    def _drain(self, timeout=0):
        reasons = self._abi.reasons
        return [self._record(e.key, e.stats, reasons.get(e.reason, str(e.reason)))
                for e in self._ring.poll(timeout)]

    def sweep(self, now_ns=None):
        """Export the flows that timed out and return every record the ring
        then holds. Idle flows (no packet for ``idle_timeout``) and TCP
        flows whose FIN/RST found the ring full leave the table; flows older
        than ``active_timeout`` are exported as a slice and stay, with the
        exported counts subtracted atomically in BPF (packets counted
        meanwhile go to the next slice: nothing is lost). The pass runs in
        the kernel (``flowmon_sweep`` through BPF_PROG_TEST_RUN, one
        bpf_for_each_map_elem); flows the ring has no room for wait for the
        next pass, which runs at once after draining the ring."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        g = self._obj.globals
        g[_flow_abi.VAR_SWEEP_NOW] = now
        g[_flow_abi.VAR_SWEEP_IDLE] = int(self.idle_timeout * 1e9)
        g[_flow_abi.VAR_SWEEP_ACTIVE] = int(self.active_timeout * 1e9)
        self._wall = _mono_to_wall()        # follow wall-clock steps (NTP)
        out = []
        for _ in range(1 + self._flows.max_entries):
            self._sweeper.test_run(_SWEEP_FRAME)
            out.extend(self._drain(0))
            if not g[_flow_abi.VAR_SWEEP_DEFERRED]:
                break
        self._last_sweep = time.monotonic()
        return out

    def poll(self, timeout=0):
        """Records exported since the last call: from the ring (waiting up
        to ``timeout`` seconds for the first; None: until one comes or a
        sweep is due) and from a sweep when ``sweep_interval`` passed."""
        due = self._last_sweep + self.sweep_interval - time.monotonic()
        wait = max(0.0, due) if timeout is None else min(timeout, max(0.0, due))
        out = self._drain(wait)
        if time.monotonic() >= self._last_sweep + self.sweep_interval:
            out.extend(self.sweep())
            out.extend(self._drain(0))
        return out

    def __iter__(self):
        """FlowRecords as they are exported, forever (until closed)."""
        while not self._closed:
            yield from self.poll(timeout=None)

    def __aiter__(self):
        """``async for record in monitor``: records as they are exported
        (the ring's fd is watched by the event loop; sweeps run every
        ``sweep_interval``)."""
        return self._aiter()

    async def _aiter(self):
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = self._ring.fileno()
        loop.add_reader(fd, ready.set)
        try:
            while not self._closed:
                ready.clear()
                recs = self.poll(0)
                for r in recs:
                    yield r
                if not recs:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(ready.wait(), self.sweep_interval)
        finally:
            if not self._closed:
                loop.remove_reader(fd)

    def flush(self):
        """Every record: what the ring holds, then every flow still in the
        table (reason "flush"); the table is left empty."""
        out = self._drain(0)
        for key, st in self._flows.lookup_batch(delete=True).items():
            out.append(self._record(key, st, "flush"))
        out.extend(self._drain(0))
        return out

    def active(self):
        """A snapshot of the flows in the table (reason None); nothing is removed."""
        return [self._record(k, v, None) for k, v in self._flows.lookup_batch().items()]

    def stats(self):
        """FlowMonitorStats summed over CPUs."""
        idx = self._abi.stats
        vals = {name: self._stats.sum(i) for name, i in idx.items()}
        return FlowMonitorStats(active_flows=len(self._flows), **vals)

    def rtt_histogram(self):
        """Handshake RTTs (SYN to SYN-ACK at the hook) in microseconds as a
        Log2Histogram; ``print()`` it for bcc tcprtt's layout."""
        return Log2Histogram(tuple(self._hist.sum(i) for i in range(self._abi.rtt_slots)),
                             "usecs")

    def reset_histogram(self):
        for i in range(self._abi.rtt_slots):
            self._hist[i] = [0] * len(self._hist[i])

    # -- lifetime --------------------------------------------------------------
    def close(self):
        """Detach and unload (idempotent). Flows still in the table are
        dropped: call ``flush()`` first to keep them."""
        if not self._closed:
            self._closed = True
            self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        ifaces = ", ".join(self._names.get(i, str(i)) for i in self._names) or "not attached"
        return "<FlowMonitor %s %s>" % (ifaces, "/".join(self.directions))


def _attach(prog, ifindex, direction, position):
    try:
        return prog.attach_tc(ifindex, direction, **{position: True})
    except NotSupportedError:        # no tcx (Linux < 6.6): a clsact filter, unordered
        return prog.attach_tc(ifindex, direction)


def _resolve(iface):
    if isinstance(iface, int):
        return iface, socket.if_indextoname(iface)
    try:
        return socket.if_nametoindex(iface), iface
    except OSError:
        raise FileNotFoundError("flow monitor: no interface %r in this network namespace"
                                % (iface,)) from None
