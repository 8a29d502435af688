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

import gc
import json
import os
import time

import attrs

from pybpfnet._object import open_bundled
from pybpfnet.dataplanes import _flow_abi
from pybpfnet.dataplanes._flow_abi import abi
from pybpfnet.dataplanes._flow_batch import FlowBatch
from pybpfnet.dataplanes._flow_hist import Log2Histogram
from pybpfnet.dataplanes._tc_monitor import address as _address, endpoint as _endpoint, \
    ip as _ip, mono_to_wall as _mono_to_wall, protocol_name as _protocol_name
from pybpfnet.dataplanes import _tc_monitor

__all__ = ["FlowMonitor", "FlowRecord", "FlowMonitorStats", "FlowBatch", "Log2Histogram",
           "TCP_FLAGS", "write_jsonl"]

TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08),
             ("ACK", 0x10), ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
_SWEEP_FRAME = bytes(64)                 # the sweep program ignores its packet


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
    ``srtt_us`` is the kernel's smoothed RTT of the TCP connection
    (tcp_sock srtt_us, microseconds) when the segment it received last
    before the export was seen by ``FlowMonitor(srtt=True)``; None when
    unknown. ``src_name``/``dst_name`` are the workload names the
    monitor's ``resolver`` gave the addresses (None: no resolver, or not
    known to it); ``str()`` shows them after the address, "10.0.0.1:80(db)".
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
    srtt_us: object = None
    src_name: object = None
    dst_name: object = None

    @property
    def key(self):
        """The flow's identity: (src, dst, sport, dport, protocol, ifindex, direction)."""
        return (self.src, self.dst, self.sport, self.dport, self.protocol, self.ifindex,
                self.direction)

    @property
    def family(self):
        """4 or 6."""
        return self.src.version

    @property
    def protocol_name(self):
        """"TCP", "UDP", "ICMP", ... (the number as text when unnamed)."""
        return _protocol_name(self.protocol)

    @property
    def flags(self):
        """Names of the TCP flags seen, e.g. ("SYN", "ACK")."""
        return tuple(n for n, bit in TCP_FLAGS if self.tcp_flags & bit)

    @property
    def duration(self):
        """Seconds from the first to the last packet of the record."""
        return (self.last_ns - self.first_ns) / 1e9

    def merge(self, other):
        """This record and a later one of the same flow added up. Raises
        ValueError when ``other`` is not a record of the same flow (key)."""
        if other.key != self.key:
            raise ValueError("merge: expected a record of flow %s, got one of %s"
                             % (self.key, other.key))
        return attrs.evolve(
            self, packets=self.packets + other.packets, bytes=self.bytes + other.bytes,
            tcp_flags=self.tcp_flags | other.tcp_flags,
            first_ns=min(self.first_ns, other.first_ns), last_ns=max(self.last_ns, other.last_ns),
            start=min(self.start, other.start), end=max(self.end, other.end),
            rtt_ns=self.rtt_ns if self.rtt_ns is not None else other.rtt_ns,
            srtt_us=other.srtt_us if other.srtt_us is not None else self.srtt_us,
            drops=self.drops + other.drops, reason=other.reason)

    def to_dict(self):
        """JSON-friendly fields (addresses as strings, times as ISO-less
        epoch seconds, flags as names)."""
        return {"src": str(self.src), "dst": str(self.dst), "sport": self.sport,
                "dport": self.dport, "protocol": self.protocol_name,
                "family": self.family, "interface": self.interface, "ifindex": self.ifindex,
                "direction": self.direction, "packets": self.packets, "bytes": self.bytes,
                "tcp_flags": list(self.flags), "start": self.start, "end": self.end,
                "rtt_ns": self.rtt_ns, "srtt_us": self.srtt_us, "drops": self.drops,
                "reason": self.reason,
                **({"src_name": self.src_name, "dst_name": self.dst_name}
                   if self.src_name is not None or self.dst_name is not None else {})}

    def to_json(self):
        """One line of JSON (for JSON-lines output)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self):
        """One line as ``pybpfnet flows`` prints it: interface, endpoints
        (names after the address when set), protocol, direction, counts,
        drops, flags, RTTs and the export reason."""
        a = _endpoint(self.src, self.sport, self.src_name)
        b = _endpoint(self.dst, self.dport, self.dst_name)
        rtt = " rtt=%.3fms" % (self.rtt_ns / 1e6) if self.rtt_ns else ""
        if self.srtt_us:
            rtt += " srtt=%.3fms" % (self.srtt_us / 1e3)
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
    table; ``srtt_samples`` smoothed-RTT samples (segments received by
    established TCP sockets of the namespace, with ``srtt=True``).
    ``active_flows`` is the table's size now."""

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
    srtt_samples: int = 0
    active_flows: int = 0

    def to_dict(self):
        """The counters as a dict (field name -> int)."""
        return attrs.asdict(self)


class FlowMonitor(_tc_monitor._TcMonitor):
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
    ``srtt``: also attach the tcp:tcp_probe tracer (tp_btf) that keeps the
    kernel's smoothed RTT of every TCP socket in the calling thread's
    network namespace: in a log2 histogram (``srtt_histogram()``) and, for
    flows in the table, as ``FlowRecord.srtt_us`` (``srtt_visible`` says
    whether it is attached; it runs for every TCP segment received).
    ``exact_clock``: read the clock for every packet. By default a packet
    without SYN/FIN/RST may reuse its CPU's cached reading (for as long as
    jiffies has not moved, at most 32 packets): ``last_ns``/``first_ns``
    are then up to one scheduler tick (1/CONFIG_HZ) early, never late,
    and an existing flow's update costs ~30 ns less on a VM clocksource;
    the handshake RTT and FIN/RST exports always use exact times.

    ``resolver``: fills records' ``src_name``/``dst_name`` (any object
    with ``name(addr)``, see :mod:`pybpfnet.dataplanes.resolver`).

    Needs Linux >= 5.13 (ring buffer, bpf_for_each_map_elem; 5.17 with
    ``drops``; tcx links from 6.6, else clsact), CAP_BPF and CAP_NET_ADMIN.
    Raises ValueError for a bad ``directions``/``position``, a ``ring_size``
    that is not a power of two of at least a page, a negative timeout or
    interval, or ``max_flows`` < 1; FileNotFoundError for an interface
    that does not exist; BpfError (and subclasses) when load or attach
    fails; nothing stays attached then.
    """

    _PROG = _flow_abi.PROG

    def __init__(self, interfaces=None, *, directions=("ingress", "egress"), max_flows=65536,
                 ring_size=1 << 20, idle_timeout=15.0, active_timeout=60.0,
                 sweep_interval=1.0, drops=True, position="first", srtt=False,
                 exact_clock=False, resolver=None):
        interfaces, self.directions = _tc_monitor.check_options(interfaces, directions,
                                                                position)
        self.idle_timeout = _tc_monitor.check_number("idle_timeout", idle_timeout)
        self.active_timeout = _tc_monitor.check_number("active_timeout", active_timeout)
        self.sweep_interval = _tc_monitor.check_number("sweep_interval", sweep_interval)
        max_flows = _tc_monitor.check_number("max_flows", max_flows, int, 1)
        ring_size = _tc_monitor.check_ring_size(ring_size)
        self.resolver = resolver
        self._abi = abi()
        self._init_handles()
        self._last_sweep = time.monotonic()
        self._wall = _mono_to_wall()
        try:
            spec = open_bundled(_flow_abi.OBJECT)
            spec.maps[_flow_abi.MAP_FLOWS].max_entries = int(max_flows)
            spec.maps[_flow_abi.MAP_EVENTS].max_entries = int(ring_size)
            spec.globals[_flow_abi.VAR_NETNS] = os.stat("/proc/thread-self/ns/net").st_ino
            spec.globals[_flow_abi.VAR_EXACT_CLOCK] = 1 if exact_clock else 0
            if not drops:
                spec.programs[_flow_abi.PROG_DROP].autoload = False
            if not srtt:
                spec.programs[_flow_abi.PROG_SRTT].autoload = False
            self._obj = self._stack.enter_context(spec.load())
            self._flows = self._obj.maps[_flow_abi.MAP_FLOWS]
            self._ring = self._obj.maps[_flow_abi.MAP_EVENTS]
            self._ring.set_event_type(self._abi.record)
            self._stats = self._obj.maps[_flow_abi.MAP_STATS]
            self._hist = self._obj.maps[_flow_abi.MAP_RTT_HIST]
            self._srtt_hist = self._obj.maps[_flow_abi.MAP_SRTT_HIST]
            self._sweeper = self._obj.programs[_flow_abi.PROG_SWEEP]
            _tc_monitor.attach_all(self, interfaces, "flow monitor", position)
            self.drops_visible = False
            if drops and interfaces:
                link = self._obj.programs[_flow_abi.PROG_DROP].attach_trace()
                self._stack.enter_context(link)
                self._links.append(link)
                self.drops_visible = True
            self.srtt_visible = False
            if srtt:
                link = self._obj.programs[_flow_abi.PROG_SRTT].attach_trace()
                self._stack.enter_context(link)
                self._links.append(link)
                self.srtt_visible = True
        except BaseException:
            self._stack.close()
            raise

    # -- handles (program, links, ring, fileno: _TcMonitor) ---------------------
    @property
    def flows_map(self):
        """The BPF flow table (HashMap of flow_key -> flow_stats)."""
        return self._flows

    @property
    def _poll_wait(self):
        # for/async for: poll() waits for the ring until the next sweep is due
        return self.sweep_interval

    # -- records -------------------------------------------------------------
    def _record(self, key, st, reason):
        first, last = st.first_ns, st.last_ns
        return self._with_names(FlowRecord(
            src=_address(key.saddr, key.family), dst=_address(key.daddr, key.family),
            sport=key.sport, dport=key.dport, protocol=key.proto, ifindex=key.ifindex,
            direction=_flow_abi.DIRECTIONS[key.direction & 1], packets=st.packets,
            bytes=st.bytes, tcp_flags=st.tcp_flags, first_ns=first, last_ns=last,
            rtt_ns=st.rtt_ns or None, srtt_us=st.srtt_us or None, drops=st.drops, reason=reason,
            interface=self._names.get(key.ifindex),
            start=first / 1e9 + self._wall, end=last / 1e9 + self._wall))

    def _with_names(self, record):
        """The record with src_name/dst_name from the resolver (if any)."""
        r = self.resolver
        if r is None:
            return record
        return attrs.evolve(record, src_name=r.name(record.src), dst_name=r.name(record.dst))

    def _records_from(self, tuples):
        """FlowRecords of flat record tuples (columns in
        _flow_abi.RECORD_COLUMNS order, as FlowBatch yields them)."""
        reasons, names, wall = self._abi.reasons, self._names, self._wall
        dirs = _flow_abi.DIRECTIONS
        out = []
        append = out.append
        was = gc.isenabled()
        gc.disable()            # a burst of new objects: no full collections meanwhile
        try:
            for (sa, da, sport, dport, proto, family, direction, ifindex, first, last, packets,
                 nbytes, _syn, rtt, flags, drops, srtt, reason) in tuples:
                append(FlowRecord(
                    src=_address(sa, family), dst=_address(da, family), sport=sport,
                    dport=dport, protocol=proto, ifindex=ifindex, direction=dirs[direction & 1],
                    packets=packets, bytes=nbytes, tcp_flags=flags, first_ns=first,
                    last_ns=last, rtt_ns=rtt or None, srtt_us=srtt or None, drops=drops,
                    reason=reasons.get(reason, str(reason)), interface=names.get(ifindex),
                    start=first / 1e9 + wall, end=last / 1e9 + wall))
        finally:
            if was:
                gc.enable()
        if self.resolver is not None:
            out = [self._with_names(r) for r in out]
        return out

    def _batch(self, data, count):
        return FlowBatch(data, count, self._abi.record, self._records_from, self._abi.reasons)

    def _drain(self, timeout=0):
        return self._drain_batch(timeout).records()

    def _drain_batch(self, timeout=0):
        if timeout is None or timeout > 0:
            self._ring.wait(timeout)
        return self._batch(*self._ring.consume_raw())

    def read_batch(self, timeout=0):
        """What the ring holds now (waiting up to ``timeout`` seconds for
        the first record; None: until one comes) as one FlowBatch: the raw
        records in one buffer, read as columns (``column()``, or numpy's
        ``array()``) without a Python object per record; ``records()``
        builds FlowRecords when wanted. No sweep runs (see
        ``poll_batch()``)."""
        return self._drain_batch(timeout)

    def sweep(self, now_ns=None, *, batch=False):
        """Export the flows that timed out and return every record the ring
        then holds. Idle flows (no packet for ``idle_timeout``) and TCP
        flows whose FIN/RST found the ring full leave the table; flows older
        than ``active_timeout`` are exported as a slice and stay, with the
        exported counts subtracted atomically in BPF (packets counted
        meanwhile go to the next slice: nothing is lost). The pass runs in
        the kernel (``flowmon_sweep`` through BPF_PROG_TEST_RUN, one
        bpf_for_each_map_elem); flows the ring has no room for wait for the
        next pass, which runs at once after draining the ring. ``batch=True``
        returns one FlowBatch instead of a list of FlowRecords."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        g = self._obj.globals
        g[_flow_abi.VAR_SWEEP_NOW] = now
        g[_flow_abi.VAR_SWEEP_IDLE] = int(self.idle_timeout * 1e9)
        g[_flow_abi.VAR_SWEEP_ACTIVE] = int(self.active_timeout * 1e9)
        self._wall = _mono_to_wall()        # follow wall-clock steps (NTP)
        out = self._batch(b"", 0)
        for _ in range(1 + self._flows.max_entries):
            self._sweeper.test_run(_SWEEP_FRAME)
            out = out + self._drain_batch(0)
            if not g[_flow_abi.VAR_SWEEP_DEFERRED]:
                break
        self._last_sweep = time.monotonic()
        return out if batch else out.records()

    def poll_batch(self, timeout=0):
        """``poll()`` as one FlowBatch: the ring's records and, when
        ``sweep_interval`` passed, a sweep's (``sweep(batch=True)``)."""
        due = self._last_sweep + self.sweep_interval - time.monotonic()
        wait = max(0.0, due) if timeout is None else min(timeout, max(0.0, due))
        out = self._drain_batch(wait)
        if time.monotonic() >= self._last_sweep + self.sweep_interval:
            out = out + self.sweep(batch=True) + self._drain_batch(0)
        return out

    def poll(self, timeout=0):
        """Records exported since the last call: from the ring (waiting up
        to ``timeout`` seconds for the first; None: until one comes or a
        sweep is due) and from a sweep when ``sweep_interval`` passed."""
        return self.poll_batch(timeout).records()

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

    def srtt_histogram(self):
        """The kernel's smoothed RTT (tcp_sock srtt_us) in microseconds as a
        Log2Histogram, one sample per segment received by an established
        TCP socket of the monitored network namespace (as bcc's tcprtt
        samples tcp_rcv_established); empty unless ``srtt=True``."""
        return Log2Histogram(tuple(self._srtt_hist.sum(i) for i in range(self._abi.rtt_slots)),
                             "usecs")

    def histogram_buckets(self, which="rtt"):
        """Cumulative histogram buckets for exporters (Prometheus): a list of
        (upper bound in seconds, cumulative count) ending with (inf, total),
        of the handshake RTT (``which="rtt"``) or the smoothed RTT
        (``"srtt"``). A log2 slot i holds microsecond values < 2**i, so its
        upper bound is (2**i - 1) us; empty slots are kept so the bounds
        are the same on every scrape."""
        if which not in ("rtt", "srtt"):
            raise ValueError("histogram_buckets: which must be 'rtt' or 'srtt', not %r"
                             % (which,))
        hist = self.rtt_histogram() if which == "rtt" else self.srtt_histogram()
        out, seen = [], 0
        for i, c in enumerate(hist.counts):
            seen += c
            out.append((((1 << i) - 1) / 1e6, seen))
        out.append((float("inf"), seen))
        return out

    def reset_histogram(self):
        """Zero the handshake RTT and smoothed RTT histograms."""
        for m in (self._hist, self._srtt_hist):
            for i in range(self._abi.rtt_slots):
                m[i] = [0] * len(m[i])

    def __repr__(self):
        ifaces = ", ".join(self._names.get(i, str(i)) for i in self._names) or "not attached"
        return "<FlowMonitor %s %s>" % (ifaces, "/".join(self.directions))
