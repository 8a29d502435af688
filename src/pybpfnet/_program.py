"""Loaded BPF programs: identity, pinning and test runs."""

import enum
import errno as _errno

import attrs

from pybpfnet import _binding as _b
from pybpfnet._errors import BpfError
from pybpfnet._map import FdHandle, _creation_site

__all__ = ["ProgramType", "AttachType", "XdpAction", "TcAction",
           "TestRunResult", "Program"]


class ProgramType(enum.IntEnum):
    """``enum bpf_prog_type`` (include/uapi/linux/bpf.h)."""
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(enum.IntEnum):
    """``enum bpf_attach_type`` (the values pybpfnet uses by name)."""
    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    CGROUP_DEVICE = 6
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    CGROUP_INET_SOCK_RELEASE = 34
    XDP = 37
    PERF_EVENT = 41
    TCX_INGRESS = 46
    TCX_EGRESS = 47


class XdpAction(enum.IntEnum):
    """XDP program verdicts (enum xdp_action)."""
    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class TcAction(enum.IntEnum):
    """TC_ACT_* verdicts of a direct-action classifier."""
    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7


_VERDICTS = {ProgramType.XDP: XdpAction, ProgramType.SCHED_CLS: TcAction,
             ProgramType.SCHED_ACT: TcAction}


@attrs.frozen
class TestRunResult:
    """What BPF_PROG_TEST_RUN reported: the program's return value, the
    packet as the program left it, the average run time per repetition and
    the context out (when one was passed). ``verdict`` is an XdpAction or
    TcAction for those program types, else the raw return value."""

    __test__ = False  # not a pytest test class

    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes = None
    program_type: int = 0

    @property
    def verdict(self):
        enum_cls = _VERDICTS.get(self.program_type)
        if enum_cls is None:
            return self.retval
        signed = self.retval - (1 << 32) if self.retval >> 31 else self.retval
        try:
            return enum_cls(signed)
        except ValueError:
            return self.retval


class Program(FdHandle):
    """A loaded BPF program. Attach operations (``attach_xdp``, ...) return
    Links; ``test_run`` runs it on a packet in the kernel."""

    def __init__(self, fd, *, name, type, section="", expected_attach_type=0,
                 owns_fd=True):
        self._site = _creation_site()
        self._fd = fd
        self._owns_fd = owns_fd
        self.name = name
        try:
            self.type = ProgramType(type)
        except ValueError:
            self.type = type
        self.section = section
        self.expected_attach_type = expected_attach_type

    def _what(self):
        return "program %r" % self.name

    def __repr__(self):
        return "<Program %r %s %s>" % (
            self.name, getattr(self.type, "name", self.type),
            "closed" if self._fd < 0 else "fd=%d" % self._fd)

    @classmethod
    def from_fd(cls, fd, owns_fd=True):
        try:
            info = _b.prog_info(fd)
        except BaseException:
            if owns_fd:
                _b.close_fd(fd)
            raise
        return cls(fd, name=info["name"], type=info["type"], owns_fd=owns_fd)

    @classmethod
    def from_pinned(cls, path):
        """Open a program pinned in bpffs."""
        return cls.from_fd(_b.get_pinned(path))

    @classmethod
    def from_id(cls, prog_id):
        return cls.from_fd(_b.fd_by_id("prog", prog_id))

    def clone(self):
        """A handle owning its own fd (outlives the object it came from)."""
        p = Program(_b.dup(self.fd), name=self.name, type=self.type,
                    section=self.section,
                    expected_attach_type=self.expected_attach_type)
        return p

    def info(self):
        """The kernel's bpf_prog_info as a dict (id, tag, run counts...)."""
        return _b.prog_info(self.fd)

    @property
    def id(self):
        return self.info()["id"]

    @property
    def tag(self):
        return self.info()["tag"]

    def map_ids(self):
        info = self.info()
        return _b.prog_map_ids(self.fd, info["nr_map_ids"])

    def pin(self, path):
        """Pin the program at ``path`` in bpffs."""
        _b.pin(self.fd, path, "program %r" % self.name)

    def test_run(self, packet=b"", repeat=1, ctx=None, *, data_out_size=None,
                 flags=0, cpu=0, batch_size=0):
        """Run the program in the kernel on ``packet`` (bytes or anything with
        ``__bytes__``, e.g. a scapy packet) ``repeat`` times
        (BPF_PROG_TEST_RUN). ``ctx``: bytes of the context struct (e.g. an
        xdp_md with ingress_ifindex). A SYSCALL program (Linux >= 5.14)
        runs once on ``ctx`` alone and the result's ``ctx`` is the context
        as the program left it. Needs CAP_BPF (CAP_NET_ADMIN for
        networking programs). Raises BpfError (EINVAL: the program type has
        no test run or the packet is too short for it), ValueError for a
        packet or ``repeat`` given to a SYSCALL program."""
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            if hasattr(packet, "__bytes__"):
                packet = bytes(packet)
            else:
                raise TypeError("test_run takes bytes or an object with __bytes__ "
                                "(e.g. a scapy packet), got %s" % type(packet).__name__)
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError("repeat must be a positive int, got %r" % (repeat,))
        if ctx is not None and hasattr(ctx, "__bytes__") and not isinstance(ctx, bytes):
            ctx = bytes(ctx)
        if self.type == ProgramType.SYSCALL:
            return self._test_run_syscall(packet, repeat, ctx, flags)
        size = data_out_size or len(packet) + 4096
        for _ in range(4):
            try:
                retval, out, dur, ctx_out = _b.test_run(
                    self.fd, packet if len(packet) else None, size, ctx,
                    len(ctx) if ctx is not None else 0, repeat, flags, cpu, batch_size)
                break
            except BpfError as e:
                if e.errno == _errno.ENOSPC and data_out_size is None:
                    size *= 4
                    continue
                raise _b.error(e.errno, "test run of program %r (%d-byte packet)"
                               % (self.name, len(packet))) from None
        else:
            raise BpfError(_errno.ENOSPC, "test run of program %r" % self.name,
                           "output larger than %d bytes" % size)
        return TestRunResult(retval, out, dur, ctx_out, int(self.type))

    def _test_run_syscall(self, packet, repeat, ctx, flags):
        # The kernel runs a SYSCALL program once, on ctx only: it refuses
        # data, repeat, flags and ctx_out (bpf_prog_test_run_syscall, 5.14+)
        # and writes the context back into ctx_in.
        if len(packet) or repeat != 1 or flags:
            raise ValueError("a SYSCALL program runs once on ctx only: no packet, "
                             "repeat or flags (got %d-byte packet, repeat=%d, flags=%#x)"
                             % (len(packet), repeat, flags))
        buf = bytearray(ctx) if ctx is not None else None
        try:
            retval, _, _, _ = _b.test_run(self.fd, None, 0, buf,
                                          0, 0, 0, 0, 0)
        except BpfError as e:
            raise _b.error(e.errno, "test run of SYSCALL program %r" % self.name) from None
        return TestRunResult(retval, b"", 0, bytes(buf) if buf is not None else None,
                             int(self.type))

    # -- attach (issue 3): the implementations live in _link -----------------
    def attach_xdp(self, iface, mode="auto", *, replace=None, backend="auto"):
        """Attach this XDP program to an interface (name or ifindex, in the
        current network namespace); returns an XdpLink.

        ``mode``: "auto" (native where the driver supports it), "native" or
        "generic". ``backend``: "auto" (a bpf_link, Linux >= 5.9, falling
        back to netlink), "link" or "netlink". ``replace``: swap atomically
        for the program now attached -- its Link, a Program or program id
        it must be (compare-and-swap), or True for whatever is there.
        Needs CAP_NET_ADMIN + CAP_BPF. Raises HookBusyError naming the
        program already attached, BpfError(ENODEV) for a missing interface,
        BpfError(EINVAL) for a non-XDP program, ValueError for a bad mode,
        NotSupportedError for native mode on a driver without XDP."""
        from pybpfnet import _link
        return _link.attach_xdp(self, iface, mode, replace=replace, backend=backend)

    def attach_tc(self, iface, direction="ingress", *, backend="auto", priority=None,
                  handle=None, first=False, last=False, before=None, after=None,
                  replace=None):
        """Attach this SCHED_CLS program to an interface's TC ingress or
        egress hook; returns a TcxLink or a TcLink.

        ``backend``: "tcx" (a tcx link, Linux >= 6.6), "legacy" (clsact
        qdisc + cls_bpf direct-action filter) or "auto" (tcx when the
        kernel has it, unless ``priority``/``handle`` ask for a legacy
        filter). tcx order: ``first``, ``last``, ``before=``/``after=`` a
        TcxLink, Program or program id (default: appended). Legacy order:
        ``priority`` 1..65535 (lower runs first) and ``handle``.
        ``replace``: a Link of this hook whose program is swapped
        atomically. Needs CAP_NET_ADMIN + CAP_BPF. Raises BpfError(ENODEV)
        for a missing interface, BpfError(EINVAL) for a program of another
        type, HookBusyError when the filter slot is taken, ValueError for
        contradictory options, NotSupportedError for tcx on older kernels."""
        from pybpfnet import _link
        return _link.attach_tc(self, iface, direction, backend=backend, priority=priority,
                               handle=handle, first=first, last=last, before=before,
                               after=after, replace=replace)

    def attach_tracepoint(self, category, name):
        """Attach this TRACEPOINT program to ``category:name`` (e.g.
        "syscalls", "sys_enter_getpid"); returns a Link.

        Linux >= 5.15 (perf links). Mounts tracefs at /sys/kernel/tracing
        when it is missing and this process is root (else the error says
        the command to run). Needs CAP_PERFMON + CAP_BPF. Raises
        BpfError(ENOENT) for an unknown tracepoint."""
        from pybpfnet import _link
        return _link.attach_tracepoint(self, category, name)

    def attach_raw_tracepoint(self, name):
        """Attach this RAW_TRACEPOINT program to the raw tracepoint
        ``name`` (e.g. "sys_enter"); returns a Link. Needs CAP_PERFMON +
        CAP_BPF. Raises BpfError(ENOENT) for an unknown tracepoint."""
        from pybpfnet import _link
        return _link.attach_raw_tracepoint(self, name)

    def attach_trace(self):
        """Attach a BTF-enabled tracing program (tp_btf, fentry, fexit,
        fmod_ret, lsm) to the target named in its section; returns a Link.
        Needs CAP_PERFMON + CAP_BPF. Raises NotSupportedError where the
        kernel refuses BPF trampolines (fentry/fexit/fmod_ret/lsm)."""
        from pybpfnet import _link
        return _link.attach_trace(self)

    def attach_cgroup(self, path, attach_type=None):
        """Attach this cgroup program to the cgroup v2 directory ``path``;
        returns a Link (Linux >= 5.7).

        ``attach_type``: an AttachType or its name ("egress", "ingress",
        "sock_create", "inet4_connect", ...); default: the program's
        expected attach type from its section. Needs CAP_NET_ADMIN +
        CAP_BPF. Raises BpfError(ENOENT) for a missing directory and
        BpfError(EINVAL) for an attach type the program cannot take."""
        from pybpfnet import _link
        return _link.attach_cgroup(self, path, attach_type)
