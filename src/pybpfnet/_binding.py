"""Low-level border to libbpf (the cffi extension ``pybpfnet._libbpf``).

This is the only module that touches cffi's ``ffi``/``lib``. Everything it
exports speaks Python types (ints, bytes, writable buffers) or opaque handles;
every negative return code passes through :func:`check`, which turns it into
a typed exception with context. Not public API: it may change without notice.
"""

import errno as _errno
import logging
import os
import re
import threading

from pybpfnet import _errors
from pybpfnet._errors import (BpfError, BpfPermissionError, NotSupportedError,
                              ObjectFormatError, VerifierError)
from pybpfnet._version import __version__

try:
    from pybpfnet._libbpf import ffi, lib
except ImportError as exc:  # pragma: no cover - a broken install
    raise ImportError(
        "pybpfnet's compiled binding is missing (%s): reinstall with "
        "'pip install pybpfnet' on a machine with libbpf-dev, clang and a C "
        "compiler" % exc) from exc

_built = ffi.string(lib.pybn_build_version()).decode()
if _built != __version__:  # pragma: no cover - stale in-place build
    raise ImportError("pybpfnet binding was built for version %s but the Python "
                      "package is %s: rebuild it (pip install -e .)"
                      % (_built, __version__))

LIBBPF_VERSION = (lib.libbpf_major_version(), lib.libbpf_minor_version())
NULL = ffi.NULL

# ---------------------------------------------------------------- errors

_PERM = (_errno.EPERM, _errno.EACCES)
ENOTSUPP = 524  # kernel-internal "not supported", leaks out of some calls


def error(err, context, detail=None):
    """The exception for errno ``err`` while doing ``context``."""
    if err in _PERM:
        return BpfPermissionError(err, context, detail)
    if err in (_errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(context, detail=detail or os.strerror(
            err if err != ENOTSUPP else _errno.EOPNOTSUPP), err=err)
    return BpfError(err, context, detail)


def check(rc, context):
    """Return ``rc`` if it is >= 0; raise the matching exception otherwise.

    ``context`` is a string or a zero-argument callable that builds one (so
    the hot path formats nothing)."""
    if rc < 0:
        raise error(-rc, context() if callable(context) else context)
    return rc


def close_fd(fd):
    if fd is not None and fd >= 0:
        os.close(fd)


# ---------------------------------------------------------------- logging

log = logging.getLogger("pybpfnet.libbpf")
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_capture = threading.local()


@ffi.def_extern()
def _pybn_log(level, msg):
    text = ffi.string(msg).decode("utf-8", "replace")
    lines = getattr(_capture, "lines", None)
    if lines is not None and level != 2:
        lines.append(text)
        return
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", text.rstrip("\n"))


def set_debug(enabled):
    """Forward libbpf's debug messages to the ``pybpfnet.libbpf`` logger."""
    lib.pybn_log_debug(1 if enabled else 0)


lib.pybn_log_install()
set_debug(log.isEnabledFor(logging.DEBUG))


class _Capture:
    """Collect libbpf's warnings on this thread (load failures, verifier
    logs) instead of logging them."""

    def __enter__(self):
        self.outer = getattr(_capture, "lines", None)
        self.lines = _capture.lines = []
        return self

    def __exit__(self, *exc):
        _capture.lines = self.outer
        return False

    @property
    def text(self):
        return "".join(self.lines)


# ---------------------------------------------------------------- objects

def obj_open(data, name):
    """Open an ELF image held in ``data`` (bytes, kept alive by the caller
    until load). Returns an opaque handle."""
    opts = ffi.new("struct bpf_object_open_opts *")
    opts.sz = ffi.sizeof("struct bpf_object_open_opts")
    cname = ffi.new("char[]", name.encode())
    opts.object_name = cname
    with _Capture() as cap:
        ptr = lib.bpf_object__open_mem(data, len(data), opts)
    if ptr == NULL:
        err = ffi.errno or _errno.EINVAL
        detail = cap.text.strip().replace("libbpf: ", "") or os.strerror(err)
        if err in (_errno.ENOMEM,):
            raise error(err, "open BPF object %r" % name, detail)
        raise ObjectFormatError(err, "open BPF object %r" % name,
                                "not a valid BPF ELF object (%s)" % detail)
    return ptr


def obj_close(ptr):
    lib.bpf_object__close(ptr)


_LOG_RE = re.compile(r"prog '([^']*)': -- BEGIN PROG LOAD LOG --\n(.*?)"
                     r"-- END PROG LOAD LOG --", re.S)
_FAILED_RE = re.compile(r"prog '([^']*)': failed to load: (-?\d+)")


def obj_load(ptr, name):
    with _Capture() as cap:
        rc = lib.bpf_object__load(ptr)
    if rc >= 0:
        return
    err = -rc
    text = cap.text
    m = _LOG_RE.search(text)
    if m and m.group(2).strip():
        raise VerifierError(err, m.group(1), m.group(2))
    failed = _FAILED_RE.search(text)
    context = ("load program %r of %r" % (failed.group(1), name) if failed
               else "load BPF object %r" % name)
    detail = None
    if err not in _PERM:
        lines = [ln.replace("libbpf: ", "") for ln in text.strip().split("\n") if ln]
        detail = "%s; libbpf said: %s" % (os.strerror(err), " | ".join(lines[-4:])) \
            if lines else None
    exc = error(err, context, detail)
    if isinstance(exc, BpfPermissionError):
        exc = _trampoline_error(ptr, name, exc) or exc
    raise exc


def obj_btf_raw(ptr):
    btf = lib.bpf_object__btf(ptr)
    if btf == NULL:
        return None
    size = ffi.new("__u32 *")
    raw = lib.btf__raw_data(btf, size)
    return bytes(ffi.buffer(raw, size[0]))


def obj_maps(ptr):
    out = []
    m = lib.bpf_object__next_map(ptr, NULL)
    while m != NULL:
        out.append(m)
        m = lib.bpf_object__next_map(ptr, m)
    return out


def obj_programs(ptr):
    out = []
    p = lib.bpf_object__next_program(ptr, NULL)
    while p != NULL:
        out.append(p)
        p = lib.bpf_object__next_program(ptr, p)
    return out


def map_desc(m):
    """Static description of an object's map (before or after load)."""
    return dict(
        name=ffi.string(lib.bpf_map__name(m)).decode(errors="backslashreplace"),
        type=lib.bpf_map__type(m),
        key_size=lib.bpf_map__key_size(m),
        value_size=lib.bpf_map__value_size(m),
        max_entries=lib.bpf_map__max_entries(m),
        flags=lib.bpf_map__map_flags(m),
        btf_key_type_id=lib.bpf_map__btf_key_type_id(m),
        btf_value_type_id=lib.bpf_map__btf_value_type_id(m),
        internal=bool(lib.bpf_map__is_internal(m)),
    )


def map_configure(m, max_entries=None, flags=None):
    if max_entries is not None:
        check(lib.bpf_map__set_max_entries(m, max_entries), "set max_entries")
    if flags is not None:
        check(lib.bpf_map__set_map_flags(m, flags), "set map flags")


def map_initial_value(m):
    """A writable buffer over the map's initial value (.data/.rodata/.bss
    image before load; the live mmap after load), or None."""
    size = ffi.new("size_t *")
    p = lib.bpf_map__initial_value(m, size)
    if p == NULL:
        return None
    return ffi.buffer(p, size[0])


def map_reuse_fd(m, fd, name):
    check(lib.bpf_map__reuse_fd(m, fd), "reuse an existing map for %r" % name)


def map_fd(m):
    return lib.bpf_map__fd(m)


def prog_desc(p):
    return dict(
        name=ffi.string(lib.bpf_program__name(p)).decode(errors="backslashreplace"),
        section=ffi.string(lib.bpf_program__section_name(p)).decode(errors="backslashreplace"),
        type=lib.bpf_program__type(p),
        expected_attach_type=lib.bpf_program__expected_attach_type(p),
        insn_count=lib.bpf_program__insn_cnt(p),
        autoload=bool(lib.bpf_program__autoload(p)),
    )


def prog_configure(p, autoload=None, type=None, expected_attach_type=None,
                   ifindex=None):
    if autoload is not None:
        check(lib.bpf_program__set_autoload(p, autoload), "set autoload")
    if type is not None:
        check(lib.bpf_program__set_type(p, type), "set program type")
    if expected_attach_type is not None:
        check(lib.bpf_program__set_expected_attach_type(p, expected_attach_type),
              "set expected attach type")
    if ifindex is not None:
        lib.bpf_program__set_ifindex(p, ifindex)


def prog_fd(p):
    return lib.bpf_program__fd(p)


def dup(fd):
    """A new fd for the same kernel object (close-on-exec)."""
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


# ---------------------------------------------------------------- BTF

def btf_raw_by_id(btf_id):
    """The raw BTF blob the kernel holds under ``btf_id`` (bytes)."""
    btf = lib.btf__load_from_kernel_by_id(btf_id)
    if btf == NULL:
        raise error(ffi.errno or _errno.ENOENT, "read BTF id %d" % btf_id)
    try:
        size = ffi.new("__u32 *")
        raw = lib.btf__raw_data(btf, size)
        return bytes(ffi.buffer(raw, size[0]))
    finally:
        lib.btf__free(btf)


# ---------------------------------------------------------------- info

def _info(fd, ctype, what):
    info = ffi.new(ctype + " *")
    size = ffi.new("__u32 *", ffi.sizeof(ctype))
    check(lib.bpf_obj_get_info_by_fd(fd, info, size), what)
    return info


def map_info(fd):
    i = _info(fd, "struct bpf_map_info", "get map info")
    return dict(type=i.type, id=i.id, key_size=i.key_size,
                value_size=i.value_size, max_entries=i.max_entries,
                flags=i.map_flags, name=ffi.string(i.name).decode(),
                btf_id=i.btf_id, btf_key_type_id=i.btf_key_type_id,
                btf_value_type_id=i.btf_value_type_id, map_extra=i.map_extra)


def prog_info(fd):
    i = _info(fd, "struct bpf_prog_info", "get program info")
    return dict(type=i.type, id=i.id, tag=bytes(ffi.buffer(i.tag)).hex(),
                name=ffi.string(i.name).decode(), btf_id=i.btf_id,
                xlated_len=i.xlated_prog_len, jited_len=i.jited_prog_len,
                run_time_ns=i.run_time_ns, run_count=i.run_cnt,
                load_time=i.load_time, uid=i.created_by_uid,
                nr_map_ids=i.nr_map_ids, ifindex=i.ifindex)


def prog_map_ids(fd, count):
    ids = ffi.new("__u32[]", max(count, 1))
    info = ffi.new("struct bpf_prog_info *")
    info.nr_map_ids = count
    info.map_ids = int(ffi.cast("uintptr_t", ids))
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    check(lib.bpf_obj_get_info_by_fd(fd, info, size), "get program map ids")
    return [ids[i] for i in range(min(count, info.nr_map_ids))]


def link_info(fd):
    i = _info(fd, "struct bpf_link_info", "get link info")
    return dict(type=i.type, id=i.id, prog_id=i.prog_id)


def next_ids(kind):
    """All ids of kind 'prog', 'map' or 'link' currently in the kernel."""
    fn = {"prog": lib.bpf_prog_get_next_id, "map": lib.bpf_map_get_next_id,
          "link": lib.bpf_link_get_next_id}[kind]
    out, cur = [], ffi.new("__u32 *")
    start = 0
    while fn(start, cur) == 0:
        out.append(cur[0])
        start = cur[0]
    return out


def fd_by_id(kind, obj_id):
    fn = {"prog": lib.bpf_prog_get_fd_by_id, "map": lib.bpf_map_get_fd_by_id,
          "link": lib.bpf_link_get_fd_by_id, "btf": lib.bpf_btf_get_fd_by_id}[kind]
    return check(fn(obj_id), lambda: "open %s id %d" % (kind, obj_id))


# ---------------------------------------------------------------- pins

def pin(fd, path, what):
    from pybpfnet._fs import ensure_bpffs
    ensure_bpffs(os.path.dirname(os.path.abspath(path)) or "/")
    check(lib.bpf_obj_pin(fd, os.fsencode(path)),
          lambda: "pin %s at %s" % (what, path))


def get_pinned(path):
    return check(lib.bpf_obj_get(os.fsencode(path)),
                 lambda: "open pinned object %s" % path)


# ---------------------------------------------------------------- maps

def map_create(map_type, name, key_size, value_size, max_entries, flags=0,
               inner_map_fd=None, btf_fd=None, btf_key_type_id=0,
               btf_value_type_id=0, map_extra=0, numa_node=None):
    opts = ffi.new("struct bpf_map_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_create_opts")
    opts.map_flags = flags
    opts.map_extra = map_extra
    if inner_map_fd is not None:
        opts.inner_map_fd = inner_map_fd
    if btf_fd is not None:
        opts.btf_fd = btf_fd
        opts.btf_key_type_id = btf_key_type_id
        opts.btf_value_type_id = btf_value_type_id
    if numa_node is not None:
        opts.numa_node = numa_node
    cname = name.encode()[:15] if name else NULL
    return check(lib.bpf_map_create(map_type, cname, key_size, value_size,
                                    max_entries, opts),
                 lambda: "create map %r (type %d, key %d, value %d, max_entries %d)"
                 % (name, map_type, key_size, value_size, max_entries))


lookup_int = lib.pybn_lookup_int
update_int = lib.pybn_update_int
delete_int = lib.pybn_delete_int
last_err = lib.pybn_last_err
lookup_elem = lib.bpf_map_lookup_elem
lookup_elem_flags = lib.bpf_map_lookup_elem_flags
update_elem = lib.bpf_map_update_elem
delete_elem = lib.bpf_map_delete_elem
lookup_and_delete_elem = lib.bpf_map_lookup_and_delete_elem


def freeze(fd):
    check(lib.bpf_map_freeze(fd), "freeze map")


class ValueBuffer:
    """Per-thread scratch buffers for single-element map I/O.

    cffi releases the GIL during the syscall, so a buffer shared by all
    threads could be overwritten by another thread's lookup before it is
    decoded; each thread gets its own."""

    __slots__ = ()
    _tls = threading.local()
    CAPACITY = 1 << 16

    @classmethod
    def get(cls):
        """(cdata char[CAPACITY], memoryview over it) for this thread."""
        try:
            return cls._tls.bv
        except AttributeError:
            c = ffi.new("char[]", cls.CAPACITY)
            cls._tls.bv = bv = (c, memoryview(ffi.buffer(c)))
            return bv


def new_buffer(size):
    """(cdata char[size], memoryview) owned by the caller."""
    c = ffi.new("char[]", max(size, 1))
    return c, memoryview(ffi.buffer(c))[:size]


def from_buffer(buf, require_writable=False):
    """A cdata pointer into a Python buffer (bytearray, numpy array...)."""
    return ffi.from_buffer(buf, require_writable=require_writable)


def map_keys(fd, key_size, max_keys):
    """Up to ``max_keys`` keys from BPF_MAP_GET_NEXT_KEY, as one bytes blob."""
    c, view = new_buffer(key_size * max(max_keys, 1))
    n = lib.pybn_map_keys(fd, key_size, c, max_keys)
    if n < 0:
        raise error(-n, "iterate map keys")
    return bytes(view[:n * key_size])


def _batch_opts(elem_flags=0):
    opts = ffi.new("struct bpf_map_batch_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
    opts.elem_flags = elem_flags
    return opts


def lookup_batch(fd, key_size, value_stride, keys_out, values_out, chunk,
                 delete=False):
    """Generator over kernel batch lookups. Each step fills keys_out and
    values_out (writable buffers of at least chunk elements) and yields the
    element count. Raises NotSupportedError when the map type has no batch
    operations."""
    fn = lib.bpf_map_lookup_and_delete_batch if delete else lib.bpf_map_lookup_batch
    opts = _batch_opts()
    cursor_size = max(key_size, 8)
    in_b = ffi.new("char[]", cursor_size)
    out_b = ffi.new("char[]", cursor_size)
    count = ffi.new("__u32 *")
    kp = ffi.from_buffer(keys_out, require_writable=True)
    vp = ffi.from_buffer(values_out, require_writable=True)
    first = True
    while True:
        count[0] = chunk
        rc = fn(fd, NULL if first else in_b, out_b, kp, vp, count, opts)
        if rc < 0 and -rc != _errno.ENOENT:
            if -rc == _errno.EINVAL and first and lookup_batch_unsupported(fd):
                raise NotSupportedError("batch lookup on this map type")
            raise error(-rc, "batch lookup")
        if count[0]:
            yield count[0]
        if rc < 0:  # ENOENT: no more elements
            return
        first = False
        ffi.memmove(in_b, out_b, cursor_size)


def lookup_batch_unsupported(fd):
    info = map_info(fd)
    return info["type"] not in BATCH_TYPES


# map types whose kernel implementation has the batch operations (6.x):
# hash, array, percpu hash/array, lru hash/percpu hash, hash of maps,
# array of maps (lookup only).
BATCH_TYPES = frozenset((1, 2, 5, 6, 9, 10, 12, 13))


def update_batch(fd, keys, values, count, flags=0):
    """Update ``count`` elements; returns how many the kernel applied before
    an error (raised with that number in ``.done``)."""
    n = ffi.new("__u32 *", count)
    rc = lib.bpf_map_update_batch(fd, ffi.from_buffer(keys), ffi.from_buffer(values),
                                  n, _batch_opts(flags))
    if rc < 0:
        exc = error(-rc, "batch update")
        exc.done = n[0]
        raise exc
    return n[0]


def delete_batch(fd, keys, count):
    n = ffi.new("__u32 *", count)
    rc = lib.bpf_map_delete_batch(fd, ffi.from_buffer(keys), n, _batch_opts())
    if rc < 0:
        exc = error(-rc, "batch delete")
        exc.done = n[0]
        raise exc
    return n[0]


def possible_cpus():
    return check(lib.libbpf_num_possible_cpus(), "count possible CPUs")


# ---------------------------------------------------------------- ring buffer

class RingConsumer:
    """The mmaped consumer side of a ring buffer map (see csrc/glue)."""

    def __init__(self, fd, size):
        self._rb = lib.pybn_ringbuf_open(fd, size)
        if self._rb == NULL:
            raise error(ffi.errno, "mmap ring buffer")
        self._used = ffi.new("size_t *")
        self._mismatch = ffi.new("uint64_t *")
        self.mismatch = 0

    def consume(self, out_c, out_size, rec_size):
        """Copy records into out_c; returns (count, bytes used)."""
        n = lib.pybn_ringbuf_consume(self._rb, out_c, out_size, rec_size,
                                     self._used, self._mismatch)
        self.mismatch = self._mismatch[0]
        return n, self._used[0]

    def available(self):
        return lib.pybn_ringbuf_avail(self._rb)

    def close(self):
        if self._rb is not None:
            lib.pybn_ringbuf_close(self._rb)
            self._rb = None


# ---------------------------------------------------------------- programs

def test_run(fd, data, data_out_size, ctx=None, ctx_out_size=0, repeat=1,
             flags=0, cpu=0, batch_size=0):
    """BPF_PROG_TEST_RUN. Returns (retval, data_out bytes, duration_ns,
    ctx_out bytes or None)."""
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    keep = []
    if data is not None:
        din = ffi.from_buffer(data)
        keep.append(din)
        opts.data_in = din
        opts.data_size_in = len(data)
    dout = None
    if data_out_size:
        dout = ffi.new("char[]", data_out_size)
        opts.data_out = dout
        opts.data_size_out = data_out_size
    if ctx is not None:
        # a writable buffer (bytearray) is passed as is: SYSCALL programs
        # write their context back into ctx_in
        cin = ffi.from_buffer(ctx, require_writable=isinstance(ctx, bytearray))
        keep.append(cin)
        opts.ctx_in = cin
        opts.ctx_size_in = len(ctx)
    cout = None
    if ctx_out_size:
        cout = ffi.new("char[]", ctx_out_size)
        opts.ctx_out = cout
        opts.ctx_size_out = ctx_out_size
    opts.repeat = repeat
    opts.flags = flags
    opts.cpu = cpu
    opts.batch_size = batch_size
    check(lib.bpf_prog_test_run_opts(fd, opts), "test run")
    out = bytes(ffi.buffer(dout, opts.data_size_out)) if dout is not None else b""
    cout_b = bytes(ffi.buffer(cout, opts.ctx_size_out)) if cout is not None else None
    return opts.retval, out, opts.duration, cout_b


def link_create_raw(prog_fd, target_fd, attach_type, flags=0, relative=0,
                    expected_revision=0):
    return lib.pybn_link_create_raw(prog_fd, target_fd, attach_type, flags,
                                    relative, expected_revision)


__all__ = [n for n in dir() if not n.startswith("__")]
del _errors


# ================================================================ attach (issue 3)
# Links, XDP/TC netlink attach (libbpf), tcx and queries the system libbpf
# 1.1 does not know (raw bpf() in csrc/glue), perf tracepoints, setns.

import struct as _struct

CLONE_NEWNET = 0x40000000
# enum bpf_perf_event_type
PERF_EVENT_TRACEPOINT = 5
# enum bpf_link_type values whose info carries a name buffer
_LINK_RAW_TRACEPOINT = 1
_LINK_PERF_EVENT = 7


def link_create(prog_fd, target_fd, attach_type, flags=0, target_btf_id=0):
    """BPF_LINK_CREATE through libbpf; returns the link fd or -errno
    (callers add the context: the errno decides fallbacks)."""
    opts = ffi.new("struct bpf_link_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_link_create_opts")
    opts.flags = flags
    opts.target_btf_id = target_btf_id
    return lib.bpf_link_create(prog_fd, target_fd, attach_type, opts)


def link_update(link_fd, new_prog_fd, old_prog_fd=None):
    """BPF_LINK_UPDATE (BPF_F_REPLACE with old_prog_fd); 0 or -errno."""
    opts = ffi.new("struct bpf_link_update_opts *")
    opts.sz = ffi.sizeof("struct bpf_link_update_opts")
    if old_prog_fd is not None:
        opts.flags = 1 << 2  # BPF_F_REPLACE
        opts.old_prog_fd = old_prog_fd
    return lib.bpf_link_update(link_fd, new_prog_fd, opts)


def link_detach(link_fd):
    return lib.bpf_link_detach(link_fd)


def raw_tracepoint_open(name, prog_fd):
    """BPF_RAW_TRACEPOINT_OPEN (name None: the program's BTF target, for
    tp_btf/fentry/fexit/lsm); the link fd or -errno."""
    return lib.bpf_raw_tracepoint_open(name.encode() if name is not None else NULL,
                                       prog_fd)


def perf_tracepoint_open(tp_id):
    return lib.pybn_perf_tracepoint_open(tp_id)


def link_info_full(fd):
    """Everything BPF_OBJ_GET_INFO_BY_FD says about a link, decoded from the
    kernel's layout (the system headers predate tcx/netkit)."""
    size = 256
    buf = ffi.new("char[]", size)
    n = ffi.new("__u32 *", size)
    check(lib.bpf_obj_get_info_by_fd(fd, buf, n), "get link info")
    raw = bytes(ffi.buffer(buf, size))
    ltype, lid, prog_id = _struct.unpack_from("=III", raw, 0)
    out = dict(type=ltype, id=lid, prog_id=prog_id, raw=raw[16:n[0]])
    name_at = None
    if ltype == _LINK_RAW_TRACEPOINT:
        name_at = 16
    elif ltype == _LINK_PERF_EVENT and _struct.unpack_from("=I", raw, 16)[0] \
            == PERF_EVENT_TRACEPOINT:
        name_at = 24
    if name_at is not None:
        name = ffi.new("char[]", 256)
        buf2 = ffi.new("char[]", size)
        _struct.pack_into("=QI", ffi.buffer(buf2), name_at,
                          int(ffi.cast("uintptr_t", name)), 256)
        if name_at == 24:
            _struct.pack_into("=I", ffi.buffer(buf2), 16, PERF_EVENT_TRACEPOINT)
        n[0] = size
        if lib.bpf_obj_get_info_by_fd(fd, buf2, n) == 0:
            out["name"] = ffi.string(name).decode("utf-8", "replace")
    return out


def prog_query(target, attach_type, with_links=False):
    """BPF_PROG_QUERY: (prog ids, link ids or None, revision or None,
    attach_flags). with_links needs kernel >= 6.6 (mprog hooks: tcx)."""
    count = ffi.new("uint32_t *", 0)
    flags = ffi.new("uint32_t *")
    rev = ffi.new("uint64_t *") if with_links else NULL
    for _ in range(4):
        cap = count[0]
        progs = ffi.new("uint32_t[]", max(cap, 1))
        links = ffi.new("uint32_t[]", max(cap, 1)) if with_links else NULL
        rc = lib.pybn_prog_query_raw(target, attach_type, 0, flags,
                                     progs if cap else NULL,
                                     links if cap and with_links else NULL,
                                     count, rev)
        if rc == -_errno.ENOSPC:
            continue
        check(rc, lambda: "query programs attached (attach type %d)" % attach_type)
        if count[0] <= cap:
            n = count[0]
            return ([progs[i] for i in range(n)],
                    [links[i] for i in range(n)] if with_links else None,
                    rev[0] if with_links else None, flags[0])
    raise BpfError(_errno.EAGAIN, "query attached programs", "list kept changing")


def xdp_query(ifindex):
    """dict(prog_id, drv_prog_id, skb_prog_id, hw_prog_id, attach_mode) of
    an interface in the current network namespace."""
    opts = ffi.new("struct bpf_xdp_query_opts *")
    opts.sz = ffi.sizeof("struct bpf_xdp_query_opts")
    check(lib.bpf_xdp_query(ifindex, 0, opts),
          lambda: "query XDP on ifindex %d" % ifindex)
    return dict(prog_id=opts.prog_id, drv_prog_id=opts.drv_prog_id,
                skb_prog_id=opts.skb_prog_id, hw_prog_id=opts.hw_prog_id,
                attach_mode=opts.attach_mode)


def xdp_attach(ifindex, prog_fd, flags, old_prog_fd=None):
    """Netlink XDP attach (prog_fd -1: detach); 0 or -errno. old_prog_fd
    makes it a compare-and-swap (XDP_FLAGS_REPLACE)."""
    opts = ffi.new("struct bpf_xdp_attach_opts *")
    opts.sz = ffi.sizeof("struct bpf_xdp_attach_opts")
    if old_prog_fd is not None:
        opts.old_prog_fd = old_prog_fd
    return lib.bpf_xdp_attach(ifindex, prog_fd, flags, opts)


def _tc_hook(ifindex, attach_point):
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = attach_point
    return hook


def _tc_opts(prog_fd=0, flags=0, handle=0, priority=0):
    opts = ffi.new("struct bpf_tc_opts *")
    opts.sz = ffi.sizeof("struct bpf_tc_opts")
    opts.prog_fd = prog_fd
    opts.flags = flags
    opts.handle = handle
    opts.priority = priority
    return opts


def tc_hook_create(ifindex, attach_point):
    """Create the clsact qdisc; 0, or -EEXIST when it is already there."""
    return lib.bpf_tc_hook_create(_tc_hook(ifindex, attach_point))


def tc_hook_destroy(ifindex):
    """Delete the clsact qdisc (and with it every filter on it)."""
    return lib.bpf_tc_hook_destroy(_tc_hook(ifindex, lib.BPF_TC_INGRESS | lib.BPF_TC_EGRESS))


def tc_attach(ifindex, attach_point, prog_fd, handle=0, priority=0, replace=False):
    """Add a cls_bpf direct-action filter: (rc, handle, priority, prog_id)."""
    opts = _tc_opts(prog_fd, 1 if replace else 0, handle, priority)
    rc = lib.bpf_tc_attach(_tc_hook(ifindex, attach_point), opts)
    return rc, opts.handle, opts.priority, opts.prog_id


def tc_detach(ifindex, attach_point, handle, priority):
    return lib.bpf_tc_detach(_tc_hook(ifindex, attach_point),
                             _tc_opts(handle=handle, priority=priority))


def tc_query(ifindex, attach_point, handle, priority):
    """The program id of one cls_bpf filter, or -errno (-ENOENT: none)."""
    opts = _tc_opts(handle=handle, priority=priority)
    rc = lib.bpf_tc_query(_tc_hook(ifindex, attach_point), opts)
    return rc if rc < 0 else opts.prog_id


def setns(fd, nstype=CLONE_NEWNET):
    check(lib.pybn_setns(fd, nstype), "switch network namespace")


# Loading fentry/fexit/fmod_ret/lsm/freplace needs a BPF trampoline. Where
# the kernel refuses it with EPERM although this process holds CAP_BPF and
# CAP_PERFMON (a sandbox, lockdown, no trampoline support), the failure is
# "not supported here", not a missing privilege: obj_load is refined to say so.
_TRAMPOLINE_KINDS = {(26, 24): "fentry", (26, 25): "fexit", (26, 26): "fmod_ret",
                     (29, 27): "lsm", (28, None): "freplace"}


def trampoline_kind(prog_type, expected_attach_type):
    """'fentry', 'fexit', 'fmod_ret', 'lsm', 'freplace' or None."""
    return (_TRAMPOLINE_KINDS.get((prog_type, expected_attach_type))
            or _TRAMPOLINE_KINDS.get((prog_type, None)))


def have_tracing_caps():
    try:
        with open("/proc/self/status") as f:
            caps = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    cap_sys_admin, cap_perfmon, cap_bpf = 21, 38, 39
    return bool(caps & (1 << cap_sys_admin)) or (
        bool(caps & (1 << cap_bpf)) and bool(caps & (1 << cap_perfmon)))


def trampoline_refused(what, kind, err):
    """The NotSupportedError for a trampoline program the kernel refused
    (``what``: 'load program ...' / 'attach program ...')."""
    return NotSupportedError(
        "BPF trampoline (%s)" % kind, err=err,
        detail="the kernel refused to %s with %s although this process has "
               "CAP_BPF and CAP_PERFMON: trampoline programs (fentry, fexit, "
               "fmod_ret, lsm, freplace) are disabled on this system (a sandbox, "
               "kernel lockdown or no trampoline support); tp_btf and raw_tp "
               "programs need no trampoline and still work"
               % (what, _errno.errorcode.get(err, err)))


def _trampoline_error(ptr, name, exc):
    """The NotSupportedError for an EPERM load of a trampoline program by a
    process that holds the capabilities, or None."""
    if not have_tracing_caps():
        return None
    m = re.match(r"load program '([^']*)'", exc.context or "")
    for p in obj_programs(ptr):
        d = prog_desc(p)
        kind = trampoline_kind(d["type"], d["expected_attach_type"])
        if kind and d["autoload"] and (m is None or m.group(1) == d["name"]):
            return trampoline_refused("load program %r (section %r) of %r" % (
                d["name"], d["section"], name), kind, exc.errno)
    return None


# -- Maglev table population (csrc/glue/pybn_maglev.c; used by _maglev) ------
def maglev_hash(data, basis):
    return lib.pybn_maglev_hash(data, len(data), basis)


def maglev_permutations(blob, ends, n, size, offsets, skips):
    """Fill offsets/skips (writable uint32 buffers); returns the C rc."""
    return lib.pybn_maglev_permutations(
        blob, len(blob), ffi.NULL if ends is None else ffi.from_buffer("uint32_t[]", ends),
        n, size, ffi.from_buffer("uint32_t[]", offsets, require_writable=True),
        ffi.from_buffer("uint32_t[]", skips, require_writable=True))


def maglev_fill(offsets, skips, weights, n, size, table):
    """Fill table (writable int32 buffer); returns the C rc."""
    return lib.pybn_maglev_fill(
        ffi.from_buffer("uint32_t[]", offsets), ffi.from_buffer("uint32_t[]", skips),
        ffi.NULL if weights is None else ffi.from_buffer("uint32_t[]", weights),
        n, size, ffi.from_buffer("int32_t[]", table, require_writable=True))
