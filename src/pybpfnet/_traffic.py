"""Live-frames traffic generator: push a packet set out of an interface at a
chosen rate or count with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES.

In live-frames mode (Linux >= 5.18) the kernel runs an XDP program on
``repeat`` frames made from one input packet, as if they had arrived on the
interface named in the context (``xdp_md.ingress_ifindex``), and really
carries out the verdict: the bundled program ``xdp_traffic_gen`` answers
XDP_TX, so every frame leaves through that interface's ``ndo_xdp_xmit`` (on
a veth: straight into the peer's XDP receive ring). No socket, no skb, no
qdisc: a few hundred ns per frame on one CPU.

Kernel quirk (seen on 6.18): a test run with ``repeat > 1`` adds the
program to the kernel's XDP dispatcher before the run and removes it after,
and each change waits for an RCU grace period: 15-50 ms of dead time per
call. Nothing is paid while the program already sits in the dispatcher, so
a generator anchors its program there for its lifetime by attaching it
(generic XDP) to the loopback device of a private, unnamed network
namespace that no packet ever reaches. That keeps every call at ~20 us of
overhead and lets the generator pace in small chunks. Where the anchor
cannot be made (no CAP_SYS_ADMIN), it sends in larger chunks instead.
"""

import contextlib
import errno as _errno
import fcntl
import math
import os
import signal
import socket
import struct
import threading
import time
import warnings

import attrs

from pybpfnet import _binding as _b
from pybpfnet import _netlink
from pybpfnet import _object
from pybpfnet._errors import BpfError, NotSupportedError
from pybpfnet._link import _resolve_iface
from pybpfnet._map import _creation_site, possible_cpus
from pybpfnet._program import AttachType

__all__ = ["TrafficGenerator", "TrafficResult", "Sweep", "live_frames_supported"]

OBJECT = "xdp_traffic_gen"
PROGRAM = "xdp_traffic_gen"
PROBE_PROGRAM = "xdp_traffic_probe"
SEQ_MAP = "sweep_seq"

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
XDP_FLAGS_SKB_MODE = 1 << 1
ETH_HLEN = 14
VLAN_HLEN = 4
_VLAN_TYPES = (0x8100, 0x88A8)
# A live frame must fit one page with the kernel's bookkeeping (XDP
# headroom, skb_shared_info, the test run's page header): 3408 bytes on
# 4 KiB pages with Linux 6.18. The exact figure is probed (_live_frame_limit)
# when a frame longer than this floor is to be sent.
_LIVE_FRAME_FLOOR = 1518
# the kernel's TEST_XDP_MAX_BATCH (net/bpf/test_run.c)
MAX_BATCH = 256
_MAX_REPEAT = (1 << 32) - 1
_ARPHRD_ETHER = 1
_SIOCGIFMTU = 0x8921
_SIOCGIFHWADDR = 0x8927

# Seconds of sending per kernel call: short with the dispatcher anchor (a
# call then costs ~20 us), long without (each call costs 15-50 ms).
_CALL_SECONDS = 0.02
_CALL_SECONDS_UNANCHORED = 1.0
_FIRST_CHUNK = 4096
# the smallest pause between paced calls
_PACE_SECONDS = 0.0005
# Signals that report a fault of the thread itself; every other one is
# blocked in sender threads, so a signal never cuts a run short (the
# kernel would return EINTR without saying how many frames went out).
_SYNC_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                 signal.SIGTRAP, signal.SIGABRT, signal.SIGSYS}

_probe_lock = threading.Lock()
_probe_result = None
_frame_limit = None


@attrs.frozen
class Sweep:
    """A field that takes a different value in each frame, rewritten by the
    XDP program as the frame leaves: ``start``, ``start + 1``, ...,
    ``start + count - 1``, then ``start`` again (one sequence per sending
    CPU, restarted by every run).

    ``offset``: byte offset of the field in the frame (even: the program
    writes 16-bit words), ``size``: 2 or 4 bytes, big-endian. ``start``:
    default the field's value in the first packet. ``checksums``: offsets of
    up to two 16-bit internet checksums that cover the field (an IPv4
    header checksum, a TCP/UDP checksum over the pseudo-header), updated
    incrementally (RFC 1624); a checksum of 0 is left alone (UDP without a
    checksum). Example: UDP source ports of an untagged IPv4 packet without
    options: ``Sweep(offset=34, count=1000, checksums=(40,))``.
    """

    offset: int
    count: int
    size: int = 2
    start: int = None
    checksums: tuple = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self):
        for name in ("offset", "count", "size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError("Sweep.%s must be an int, got %r" % (name, v))
        if self.size not in (2, 4):
            raise ValueError("Sweep.size must be 2 or 4 bytes, got %d" % self.size)
        if self.offset < 0 or self.offset % 2:
            raise ValueError("Sweep.offset must be even and >= 0, got %d" % self.offset)
        if not 1 <= self.count < 1 << 32:
            raise ValueError("Sweep.count must be in 1..2**32-1, got %d" % self.count)
        if self.start is not None and (isinstance(self.start, bool)
                                       or not isinstance(self.start, int)
                                       or not 0 <= self.start < 1 << (8 * self.size)):
            raise ValueError("Sweep.start must be an int in 0..%d, got %r"
                             % ((1 << (8 * self.size)) - 1, self.start))
        if len(self.checksums) > 2:
            raise ValueError("a Sweep updates at most 2 checksums, got %d"
                             % len(self.checksums))
        for c in self.checksums:
            if isinstance(c, bool) or not isinstance(c, int) or c <= 0 or c % 2:
                raise ValueError("Sweep.checksums are even offsets > 0, got %r" % (c,))
            if c < self.offset + self.size and self.offset < c + 2:
                raise ValueError("checksum at offset %d overlaps the swept field" % c)


@attrs.frozen
class TrafficResult:
    """What one run of a :class:`TrafficGenerator` sent.

    ``frames``: frames the XDP program sent out (every kernel call that
    returned success ran it on all its frames), ``bytes``: their total
    length (Ethernet header included, no FCS), ``elapsed``: seconds from the
    common start of the sender threads to the end of the last one,
    ``per_packet``: frames of each packet of the set, ``per_cpu``: {cpu:
    frames}, ``calls``: kernel calls made, ``rate_pps``: the rate asked for
    (None: as fast as possible). Delivery is not confirmed here: count at
    the receiver.
    """

    frames: int
    bytes: int
    elapsed: float
    per_packet: tuple
    per_cpu: dict
    calls: int
    rate_pps: float = None

    @property
    def pps(self):
        """Frames per second achieved."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def bps(self):
        """Bits per second of frame data (no preamble, FCS or gap)."""
        return 8 * self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    def __str__(self):
        return "%d frames in %.3f s: %.3f Mpps, %.1f Mbit/s" % (
            self.frames, self.elapsed, self.pps / 1e6, self.bps / 1e6)


def live_frames_supported():
    """True if this kernel runs XDP programs on live frames
    (BPF_F_TEST_XDP_LIVE_FRAMES, Linux >= 5.18). Probed once per process
    by running a program that drops its one frame. Needs CAP_BPF and
    CAP_NET_ADMIN (else BpfPermissionError)."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            with _object.load_bundled(OBJECT) as obj:
                _probe_result = _probe(obj.programs[PROBE_PROGRAM].fd)
        return _probe_result


def _probe(fd):
    try:
        _b.test_run(fd, bytes(ETH_HLEN + 46), 0, None, 0, 1, BPF_F_TEST_XDP_LIVE_FRAMES,
                    0, 0)
    except BpfError as e:
        # kernels before 5.18 refuse the unknown flag with EINVAL
        if e.errno == _errno.EINVAL:
            return False
        raise _b.error(e.errno, "probe XDP live frames") from None
    return True


def _live_frame_limit():
    """The longest frame this kernel takes in live-frames mode, found by
    bisection with the probe program (which drops its frames)."""
    global _frame_limit
    with _probe_lock:
        if _frame_limit is None:
            with _object.load_bundled(OBJECT) as obj:
                fd = obj.programs[PROBE_PROGRAM].fd
                lo, hi = ETH_HLEN, os.sysconf("SC_PAGE_SIZE")
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    try:
                        _b.test_run(fd, bytes(mid), 0, None, 0, 1,
                                    BPF_F_TEST_XDP_LIVE_FRAMES, 0, 0)
                        lo = mid
                    except BpfError as e:
                        if e.errno != _errno.EINVAL:
                            raise _b.error(e.errno, "probe the live frame size") from None
                        hi = mid - 1
                _frame_limit = lo
        return _frame_limit


def _as_bytes(p, i):
    if isinstance(p, (bytes, bytearray, memoryview)):
        return bytes(p)
    if hasattr(p, "__bytes__"):
        return bytes(p)
    raise TypeError("packet %d: expected bytes or an object with __bytes__ (e.g. a "
                    "scapy packet), got %s" % (i, type(p).__name__))


def _packet_set(packets):
    if isinstance(packets, (bytes, bytearray, memoryview)) or hasattr(packets, "__bytes__"):
        return (_as_bytes(packets, 0),)
    if isinstance(packets, str):
        raise TypeError("packets must be bytes (or a list of them), not str")
    try:
        items = list(packets)
    except TypeError:
        raise TypeError("packets must be bytes, an object with __bytes__, or an iterable "
                        "of those; got %s" % type(packets).__name__) from None
    return tuple(_as_bytes(p, i) for i, p in enumerate(items))


def _positive(name, value, kind=(int, float)):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError("%s must be a positive number, got %r" % (name, value))
    if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError("%s must be > 0, got %r" % (name, value))
    return value


def _cpu_list(cpus):
    allowed = sorted(os.sched_getaffinity(0))
    if isinstance(cpus, bool):
        raise TypeError("cpus is a count or a list of CPU numbers, got %r" % (cpus,))
    if isinstance(cpus, int):
        if not 1 <= cpus <= len(allowed):
            raise ValueError("cpus=%d: this process may run on %d CPU(s) (%s)"
                             % (cpus, len(allowed), ",".join(map(str, allowed))))
        return tuple(allowed[:cpus])
    try:
        chosen = [int(c) for c in cpus]
    except (TypeError, ValueError):
        raise TypeError("cpus is a count or a list of CPU numbers, got %r" % (cpus,)) from None
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError("cpus must name distinct CPUs, got %r" % (cpus,))
    bad = [c for c in chosen if c not in allowed]
    if bad:
        raise ValueError("cpus %s: this process may only run on %s"
                         % (bad, ",".join(map(str, allowed))))
    return tuple(chosen)


def _own_netns_fd(netns):
    """An fd of our own for ``netns`` (None: the calling thread's namespace)."""
    if netns is None:
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if isinstance(netns, int) and not isinstance(netns, bool):
        return os.dup(netns)
    if hasattr(netns, "fileno"):
        return os.dup(netns.fileno())
    if isinstance(netns, (str, os.PathLike)):
        path = _netlink.netns_path(netns)
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _netlink.error(e.errno, "open netns %s" % path) from None
    raise TypeError("netns is a lab Namespace, a name in /run/netns, a path or an fd; "
                    "got %r" % (netns,))


def _same_netns(fd):
    a, b = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _in_netns(fd):
    """Switch the calling thread into the namespace open as ``fd`` for a
    block, unless it is there already (setns needs CAP_SYS_ADMIN even for
    the namespace a thread is in)."""
    return contextlib.nullcontext() if _same_netns(fd) else _netlink.in_netns(fd)


def _link_layer(ifname):
    """(mtu, ARPHRD type) of an interface of the current namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16s16x", ifname.encode())
        mtu = struct.unpack_from("i", fcntl.ioctl(s, _SIOCGIFMTU, req), 16)[0]
        hwtype = struct.unpack_from("H", fcntl.ioctl(s, _SIOCGIFHWADDR, req), 16)[0]
    return mtu, hwtype


class _Anchor:
    """Keeps a program in the kernel's XDP dispatcher: a generic-XDP link on
    the loopback device of a private, unnamed namespace (see the module
    docstring). Owns the link fd and the namespace fd."""

    def __init__(self, prog_fd):
        self.netns_fd = self.link_fd = -1
        self.netns_fd = _netlink.unnamed_netns()
        try:
            with _netlink.in_netns(self.netns_fd):
                lo = socket.if_nametoindex("lo")
                fd = _b.link_create(prog_fd, lo, AttachType.XDP, XDP_FLAGS_SKB_MODE)
            if fd < 0:
                raise _b.error(-fd, "anchor the traffic generator in the XDP dispatcher")
            self.link_fd = fd
        except BaseException:
            self.close()
            raise

    def close(self):
        link, self.link_fd = self.link_fd, -1
        ns, self.netns_fd = self.netns_fd, -1
        if link >= 0:
            os.close(link)
        if ns >= 0:
            os.close(ns)


class _Run:
    """The state one start() .. wait() shares with its sender threads."""

    def __init__(self, n):
        self.stop = threading.Event()
        self.t0 = None
        self.errors = []
        self.stats = [None] * n
        self.threads = []
        self.result = None


class TrafficGenerator:
    """Send a packet set out of a network interface as XDP live frames:
    a given count, for a given time, at a given rate, from one or more CPUs.

    ``iface``: a name, an ifindex or a netlab Interface, looked up in
    ``netns`` -- a lab Namespace, a name in /run/netns, a path or an fd --
    or, by default, in the namespace of the thread that makes the
    generator (so ``with ns.enter(): TrafficGenerator("eth0", ...)`` works).
    The sender threads switch into that namespace themselves: ``run()``
    may be called from anywhere. ``packets``: one packet (bytes, or anything
    with ``__bytes__``) or a sequence of them; each is a whole Ethernet
    frame, 14 bytes up to MTU + 14 (+4 when VLAN-tagged) and at most one
    page's worth (3408 bytes on 4 KiB pages with Linux 6.18; probed). The
    set is sent in turn, in chunks: every packet gets an equal share of
    ``count`` (the first ones one more when it does not divide), and
    ``sweep`` (a :class:`Sweep`) varies one field frame by frame.

    ``count``: frames to send in all; ``duration``: seconds; both: whichever
    ends first; neither: until ``stop()``. ``rate_pps``: frames per second
    in all (default: as fast as the kernel goes), held on average over
    chunks of a few ms (bursts at full speed between pauses), split evenly
    over the sending CPUs. ``cpus``: a number of sender threads, each pinned
    to one CPU this process may use (the first ones), or a list of CPUs.
    ``ingress``: the interface the frames appear to arrive on (default
    ``iface``; another one makes the program bpf_redirect() to ``iface``).
    ``batch_size``: frames per kernel batch (1..256, default 64).

    ``run()`` sends and returns a :class:`TrafficResult`; ``start()`` /
    ``stop()`` / ``wait()`` do it in the background. A generator can run
    many times; ``close()`` (or the ``with`` block) frees its BPF object.

    Frames leave through the driver's ndo_xdp_xmit: on a veth the peer must
    run an XDP program (or have GRO on), else the veth drops them all;
    loopback and devices without XDP transmit cannot be used.

    Linux >= 5.18. Needs CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN for
    another namespace and the dispatcher anchor). Raises NotSupportedError
    without live frames, BpfError(ENODEV) for a missing interface,
    ValueError/TypeError for bad packets or options.
    """

    def __init__(self, iface, packets, *, rate_pps=None, count=None, duration=None,
                 cpus=1, netns=None, sweep=None, ingress=None, batch_size=None):
        self._site = _creation_site()
        self._obj = None
        self._anchor = None
        self._netns_fd = -1
        self._run = None
        self._lock = threading.Lock()
        self.packets = _packet_set(packets)
        if not self.packets:
            raise ValueError("the packet set is empty")
        self.rate_pps = _positive("rate_pps", rate_pps)
        self.count = _positive("count", count, int)
        self.duration = _positive("duration", duration)
        self.cpus = _cpu_list(cpus)
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                    or not 1 <= batch_size <= MAX_BATCH:
                raise ValueError("batch_size must be in 1..%d, got %r"
                                 % (MAX_BATCH, batch_size))
        self.batch_size = batch_size or 0
        if sweep is not None and not isinstance(sweep, Sweep):
            raise TypeError("sweep must be a Sweep, got %r" % (sweep,))
        self.sweep = sweep
        for i, p in enumerate(self.packets):
            if len(p) < ETH_HLEN:
                raise ValueError("packet %d is %d bytes: a frame needs at least the "
                                 "%d-byte Ethernet header" % (i, len(p), ETH_HLEN))
            if sweep is not None:
                end = max([sweep.offset + sweep.size] + [c + 2 for c in sweep.checksums])
                if len(p) < end:
                    raise ValueError("packet %d is %d bytes: too short for the sweep, "
                                     "which needs %d" % (i, len(p), end))

        self._netns_fd = _own_netns_fd(netns)
        try:
            self._setup(iface, ingress)
        except BaseException:
            self.close()
            raise

    def _setup(self, iface, ingress):
        with _in_netns(self._netns_fd):
            doing = "send traffic out of"
            self.ifindex, self.ifname = _resolve_iface(iface, doing)
            if ingress is None:
                self.ingress_ifindex = self.ifindex
            else:
                self.ingress_ifindex = _resolve_iface(ingress, "receive traffic on")[0]
            mtu, hwtype = _link_layer(self.ifname)
        if hwtype != _ARPHRD_ETHER:
            raise NotSupportedError(
                "live frames out of %s" % self.ifname, detail="not an Ethernet device "
                "(ARPHRD %d); frames leave through a driver's XDP transmit (veth, most "
                "NICs)" % hwtype)
        self.mtu = mtu
        if not live_frames_supported():
            raise NotSupportedError("XDP live frames (BPF_F_TEST_XDP_LIVE_FRAMES)", "5.18")
        for i, p in enumerate(self.packets):
            tagged = int.from_bytes(p[12:14], "big") in _VLAN_TYPES
            limit = mtu + ETH_HLEN + (VLAN_HLEN if tagged else 0)
            if len(p) > limit:
                raise ValueError(
                    "packet %d is %d bytes: longer than %s allows (%d: MTU %d + %d-byte "
                    "header%s)" % (i, len(p), self.ifname, limit, mtu, ETH_HLEN,
                                   " + VLAN tag" if tagged else ""))
            if len(p) > _LIVE_FRAME_FLOOR and len(p) > _live_frame_limit():
                raise ValueError(
                    "packet %d is %d bytes: live frames must fit one page, at most %d "
                    "bytes here" % (i, len(p), _live_frame_limit()))
        spec = _object.open_bundled(OBJECT)
        if self.ingress_ifindex != self.ifindex:
            spec.globals["redirect_ifindex"] = self.ifindex
        sw = self.sweep
        if sw is not None:
            start = sw.start
            if start is None:
                start = int.from_bytes(self.packets[0][sw.offset:sw.offset + sw.size], "big")
            if start + sw.count - 1 >= 1 << (8 * sw.size):
                raise ValueError("Sweep from %d over %d values overflows a %d-byte field"
                                 % (start, sw.count, sw.size))
            spec.globals["sweep_offset"] = sw.offset
            spec.globals["sweep_size"] = sw.size
            spec.globals["sweep_start"] = start
            spec.globals["sweep_count"] = sw.count
            unused = len(spec.globals["sweep_csum"]) - len(sw.checksums)   # TG_MAX_CSUMS
            spec.globals["sweep_csum"] = tuple(sw.checksums) + (0,) * unused
        self._obj = spec.load()
        self._prog = self._obj.programs[PROGRAM]
        try:
            self._anchor = _Anchor(self._prog.fd)
        except OSError:
            # no CAP_SYS_ADMIN or no generic XDP: correct, only slower to start calls
            self._anchor = None

    # -- lifetime -------------------------------------------------------------

    def __repr__(self):
        state = "closed" if self.closed else ("running" if self.running else "idle")
        return "<TrafficGenerator %s (ifindex %d) %d packet(s) cpus=%s %s>" % (
            getattr(self, "ifname", "?"), getattr(self, "ifindex", 0), len(self.packets),
            ",".join(map(str, self.cpus)), state)

    @property
    def closed(self):
        return self._obj is None

    @property
    def running(self):
        r = self._run
        return r is not None and any(t.is_alive() for t in r.threads)

    @property
    def program(self):
        """The loaded ``xdp_traffic_gen`` Program (owned by the generator)."""
        if self._obj is None:
            raise ValueError("the traffic generator is closed")
        return self._prog

    def close(self):
        """Stop a run in progress and free the BPF object, the dispatcher
        anchor and the namespace handle. Idempotent."""
        if self._run is not None and self.running:
            self._run.stop.set()
            for t in self._run.threads:
                t.join()
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()
        fd, self._netns_fd = self._netns_fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_obj", None) is not None:
            warnings.warn("TrafficGenerator was never closed (made at %s)" % self._site,
                          ResourceWarning, source=self)
            self.close()

    # -- running --------------------------------------------------------------

    def run(self):
        """Send until ``count`` frames went out, ``duration`` passed or
        ``stop()`` was called (from another thread); return the
        :class:`TrafficResult`. Ctrl-C stops the senders, then propagates."""
        self.start()
        try:
            return self.wait()
        except BaseException:
            self._run.stop.set()
            for t in self._run.threads:
                t.join()
            raise

    def start(self):
        """Start sending in the background; returns self. Raises
        RuntimeError when a run is already in progress."""
        with self._lock:
            if self._obj is None:
                raise ValueError("the traffic generator is closed")
            if self.running:
                raise RuntimeError("the traffic generator is already running")
            self._reset_sequence()
            n = len(self.cpus)
            run = _Run(n)
            plan = self._plan(n)
            rate = self.rate_pps / n if self.rate_pps else None

            def begin():
                run.t0 = time.monotonic()

            barrier = threading.Barrier(n, action=begin)
            for w, cpu in enumerate(self.cpus):
                t = threading.Thread(target=self._sender, name="pybpfnet-traffic-%d" % cpu,
                                     args=(run, w, cpu, plan[w], rate, barrier), daemon=True)
                run.threads.append(t)
            self._run = run
            for t in run.threads:
                t.start()
        return self

    def stop(self):
        """Stop a background run and return its :class:`TrafficResult` (None
        if none was started)."""
        if self._run is None:
            return None
        self._run.stop.set()
        return self.wait()

    def wait(self, timeout=None):
        """Wait for the background run to end; return its
        :class:`TrafficResult`, or None if ``timeout`` seconds passed first.
        Re-raises a sender thread's error."""
        run = self._run
        if run is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in run.threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return None
        if run.errors:
            raise run.errors[0]
        if run.result is None:
            run.result = self._result(run)
        return run.result

    def _reset_sequence(self):
        if self.sweep is not None:
            seq = self._obj.maps[SEQ_MAP]
            seq[0] = [0] * possible_cpus()

    def _plan(self, n):
        """Frames of each packet for each of n senders (None: unlimited)."""
        k = len(self.packets)
        if self.count is None:
            return [[None] * k for _ in range(n)]
        per_packet = [self.count // k + (i < self.count % k) for i in range(k)]
        return [[c // n + (w < c % n) for c in per_packet] for w in range(n)]

    def _result(self, run):
        k = len(self.packets)
        per_packet = [0] * k
        per_cpu = {}
        calls = 0
        end = run.t0 or 0.0
        for w, st in enumerate(run.stats):
            if st is None:
                continue
            for i in range(k):
                per_packet[i] += st["frames"][i]
            per_cpu[self.cpus[w]] = sum(st["frames"])
            calls += st["calls"]
            end = max(end, st["end"])
        frames = sum(per_packet)
        return TrafficResult(
            frames=frames, bytes=sum(f * len(p) for f, p in zip(per_packet, self.packets)),
            elapsed=max(0.0, end - run.t0) if run.t0 is not None else 0.0,
            per_packet=tuple(per_packet), per_cpu=per_cpu, calls=calls,
            rate_pps=self.rate_pps)

    def _sender(self, run, w, cpu, remaining, rate, barrier):
        frames = [0] * len(self.packets)
        st = {"frames": frames, "calls": 0, "end": 0.0}
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _SYNC_SIGNALS)
            if not _same_netns(self._netns_fd):
                _netlink.setns(self._netns_fd, "enter the traffic generator's netns")
            os.sched_setaffinity(0, {cpu})
            fd = self._prog.fd
            ctxs = [struct.pack("6I", 0, len(p), 0, self.ingress_ifindex, 0, 0)
                    for p in self.packets]
            batch = self.batch_size
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        except BaseException as e:
            barrier.abort()
            run.errors.append(e)
            return
        run.stats[w] = st
        try:
            self._send(run, fd, ctxs, batch, remaining, rate, frames, st)
        except BaseException as e:
            run.errors.append(e)
            run.stop.set()
        finally:
            st["end"] = time.monotonic()

    def _send(self, run, fd, ctxs, batch, remaining, rate, frames, st):
        packets = self.packets
        k = len(packets)
        t0 = run.t0
        deadline = t0 + self.duration if self.duration else None
        call_s = _CALL_SECONDS if self._anchor is not None else _CALL_SECONDS_UNANCHORED
        est = None          # frames/s of this sender inside kernel calls
        quantum = max(1, int(rate * _PACE_SECONDS)) if rate is not None else 0
        sent = 0
        i = -1
        stop = run.stop
        while not stop.is_set():
            # next packet with frames left, in turn
            for _ in range(k):
                i = (i + 1) % k
                if remaining[i] is None or remaining[i] > 0:
                    break
            else:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if rate is not None:
                # frames due by now on a schedule starting at t0, sent in
                # quanta of >= 0.5 ms (a call per frame would keep a CPU busy)
                owed = int(rate * (now - t0)) + 1 - sent
                want = quantum if remaining[i] is None else min(quantum, remaining[i])
                if owed < want:
                    wait = t0 + (sent + want - 1) / rate - now
                    if deadline is not None:
                        wait = min(wait, deadline - now)
                    if wait > 0.001:
                        stop.wait(wait)
                    elif wait > 0:
                        time.sleep(wait)
                    i -= 1      # the same packet's turn again
                    continue
                n = min(owed, max(1, int(rate * call_s)))
            else:
                n = int(est * call_s) if est else _FIRST_CHUNK
            if deadline is not None and est:
                n = min(n, int(est * (deadline - now)) + 1)
            if remaining[i] is not None:
                n = min(n, remaining[i])
            n = max(1, min(n, _MAX_REPEAT))
            try:
                _, _, ns_per_frame, _ = _b.test_run(
                    fd, packets[i], 0, ctxs[i], 0, n, BPF_F_TEST_XDP_LIVE_FRAMES, 0, batch)
            except BpfError as e:
                raise _b.error(e.errno, "send %d live frame(s) of packet %d (%d bytes) out "
                               "of %s (ifindex %d)" % (n, i, len(packets[i]), self.ifname,
                                                       self.ifindex)) from None
            st["calls"] += 1
            frames[i] += n
            sent += n
            if remaining[i] is not None:
                remaining[i] -= n
            if ns_per_frame > 0 and n >= 64:
                est = 1e9 / ns_per_frame
