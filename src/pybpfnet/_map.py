"""BPF maps as Python mappings, typed from BTF.

``Map`` is the live handle (an fd); one subclass per map family. Keys and
values go through codecs compiled once per type (see _codec), so single-
element calls cost one syscall plus a struct pack/unpack, and batch calls
convert whole buffers at once.
"""

import array
import collections.abc
import contextlib
import enum
import errno as _errno
import gc
import ipaddress
import os
import socket
import sys
import typing
import warnings

from pybpfnet import _binding as _b
from pybpfnet import _codec
from pybpfnet._errors import BpfError, CodecError, MapKeyError

__all__ = [
    "MapType", "UpdateFlags", "Map", "HashMap", "ArrayMap", "PerCpuHashMap",
    "PerCpuArrayMap", "LruHashMap", "LruPerCpuHashMap", "LpmTrieMap",
    "ProgArray", "DevMap", "DevMapHash", "CpuMap", "XskMap", "QueueMap",
    "StackMap", "ArrayOfMaps", "HashOfMaps", "possible_cpus",
]


class MapType(enum.IntEnum):
    """``enum bpf_map_type`` (include/uapi/linux/bpf.h)."""
    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper().replace("-", "_")]
            except KeyError:
                raise ValueError("unknown map type %r; expected one of %s" % (
                    value, ", ".join(m.name.lower() for m in cls))) from None
        try:
            return cls(value)
        except ValueError:
            raise ValueError("unknown map type %r" % (value,)) from None


class UpdateFlags(enum.IntFlag):
    """Flags of a map update (BPF_ANY/NOEXIST/EXIST/F_LOCK)."""
    ANY = 0       # create or replace
    NOEXIST = 1   # create only
    EXIST = 2     # replace only
    LOCK = 4      # spin-lock protected value


_PERCPU = frozenset((MapType.PERCPU_HASH, MapType.PERCPU_ARRAY,
                     MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE))
_NCPU = None


_tls = _b.ValueBuffer._tls
_MISSING = object()
_lookup_elem = _b.lookup_elem
_lookup_int = _b.lookup_int
_last_err = _b.last_err
_update_elem = _b.update_elem


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic GC while a batch builds many small tuples: each
    burst of allocations would otherwise trigger collections scanning the
    whole, growing result (it holds no cycles)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def possible_cpus():
    """Number of possible CPUs: the length of every per-CPU value list."""
    global _NCPU
    if _NCPU is None:
        _NCPU = _b.possible_cpus()
    return _NCPU


def _creation_site():
    f = sys._getframe(1)
    here = __file__.rsplit("/", 1)[0]
    while f is not None and f.f_code.co_filename.startswith(here):
        f = f.f_back
    return "%s:%d" % (f.f_code.co_filename, f.f_lineno) if f else "?"


class FdHandle:
    """Base of every handle that owns a kernel fd: idempotent ``close()``,
    context manager, and a finalizer that closes a forgotten handle with a
    ResourceWarning naming where it was made."""

    _fd = -1
    _owns_fd = False
    _site = "?"

    @property
    def fd(self):
        """The raw file descriptor (low-level; stays owned by this handle)."""
        if self._fd < 0:
            raise ValueError("%s is closed" % self._what())
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def _what(self):
        return type(self).__name__

    def close(self):
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._owns_fd:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if self._fd >= 0 and self._owns_fd:
            warnings.warn("%s was never closed (made at %s)" % (self._what(), self._site),
                          ResourceWarning, source=self)
            self.close()


K = typing.TypeVar("K")
V = typing.TypeVar("V")


class Map(FdHandle, collections.abc.MutableMapping, typing.Generic[K, V]):
    """A live BPF map: ``m[k]``, ``m[k] = v``, ``del m[k]``, ``k in m``,
    ``len(m)``, iteration, ``items()``, ``get()``, plus batch operations.

    Keys and values are Python values typed by ``key_type``/``value_type``
    (codecs from BTF, or raw ``bytes`` for maps without BTF). Requires
    CAP_BPF (or root). Raises :class:`MapKeyError` (a ``KeyError``) for a
    missing key, :class:`CodecError` for a value of the wrong shape or range
    and :class:`BpfError` for kernel errors; a rejected write leaves the map
    unchanged.
    """

    map_type = None  # set by subclasses

    def __init__(self, fd, *, name, type, key_size, value_size, max_entries,
                 flags=0, key_type=None, value_type=None, owns_fd=True, btf=None):
        self._site = _creation_site()
        self._fd = fd
        self._owns_fd = owns_fd
        self.name = name
        try:
            self.type = MapType.parse(type)
        except ValueError:
            if not isinstance(type, int):
                raise
            self.type = type  # newer than this pybpfnet: generic access
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.btf = btf
        self.key_type = self._pick_codec(key_type, key_size, "key")
        self.value_type = self._pick_codec(value_type, value_size, "value")
        self.percpu = self.type in _PERCPU
        self._setup_paths()

    def _pick_codec(self, codec, size, what):
        if size == 0:
            return None
        if codec is None:
            # without BTF: indexes and fd/ifindex/cpu slots are u32 by ABI
            if size == 4 and self.type in (_U32_KEYED if what == "key" else _FD_VALUED):
                return _codec.from_description("u32", what)
            return _codec.RawCodec(size)
        codec = _codec.from_description(codec, what)
        if codec.size != size:
            raise CodecError("%s type %s is %d bytes but the map's %s size is %d"
                             % (what, codec.c_type, codec.size, what, size))
        return codec

    def _setup_paths(self):
        kc, vc = self.key_type, self.value_type
        self._kenc = kc.encode if kc else None
        self._kdec = kc.decode if kc else None
        if self.percpu:
            ncpu = possible_cpus()
            stride = _codec.round_up8(self.value_size)
            self._vstride = stride * ncpu
            dec = vc.decode
            self._vdec = lambda buf, off=0: [dec(buf, off + i * stride) for i in range(ncpu)]
            self._venc = self._encode_percpu
        else:
            self._vstride = self.value_size
            self._vdec = vc.decode if vc else None
            self._venc = vc.encode if vc else None
        # integer fast path: no per-call buffer, no struct pack
        self._int_kv = (isinstance(kc, _codec.IntCodec) and isinstance(vc, _codec.IntCodec)
                        and type(kc) is _codec.IntCodec and type(vc) is _codec.IntCodec
                        and kc.fmt in "BHIQ" and vc.fmt in "BHIQ" and not self.percpu)
        self._big = self._vstride > _b.ValueBuffer.CAPACITY

    def _what(self):
        return "map %r" % self.name

    def __repr__(self):
        state = "closed" if self._fd < 0 else "fd=%d" % self._fd
        return "<%s %r %s key=%s value=%s max_entries=%d>" % (
            type(self).__name__, self.name, state,
            self.key_type.c_type if self.key_type else "-",
            self.value_type.c_type if self.value_type else "-", self.max_entries)

    # -- construction -----------------------------------------------------
    @classmethod
    def _wrap(cls, fd, desc, key_type=None, value_type=None, owns_fd=True, btf=None):
        klass = _CLASSES.get(desc["type"], Map)
        if cls is not Map and not issubclass(klass, cls):
            if owns_fd:
                os.close(fd)
            raise TypeError("map %r is a %s, not a %s" % (
                desc["name"], MapType.parse(desc["type"]).name, cls.__name__))
        return klass._from_desc(fd, desc, key_type, value_type, owns_fd, btf)

    @classmethod
    def _from_desc(cls, fd, desc, key_type, value_type, owns_fd, btf):
        return cls(fd, name=desc["name"], type=desc["type"], key_size=desc["key_size"],
                   value_size=desc["value_size"], max_entries=desc["max_entries"],
                   flags=desc.get("flags", 0), key_type=key_type, value_type=value_type,
                   owns_fd=owns_fd, btf=btf)

    @classmethod
    def create(cls, type=None, key_size=None, value_size=None, max_entries=1, *,
               key=None, value=None, name="", flags=0, inner_map=None,
               map_extra=0):
        """Create a standalone map (no BTF): sizes come from ``key``/``value``
        type descriptions ("u32", "char[16]", [("a", "u32"), ...]) or from
        ``key_size``/``value_size`` for raw bytes. ``type`` is a MapType, its
        name ("hash", "percpu_array", ...) or, on a subclass, implied.
        Requires CAP_BPF. Raises ValueError/CodecError for bad arguments and
        BpfError when the kernel refuses."""
        if type is None:
            if cls.map_type is None:
                raise ValueError("Map.create needs a map type, e.g. type='hash'")
            type = cls.map_type
        mtype = MapType.parse(type)
        kc = _codec.from_description(key, "key") if key is not None else None
        vc = _codec.from_description(value, "value") if value is not None else None
        if kc is not None:
            if key_size is not None and key_size != kc.size:
                raise ValueError("key_size=%d disagrees with key type %s (%d bytes)"
                                 % (key_size, kc.c_type, kc.size))
            key_size = kc.size
        if vc is not None:
            if value_size is not None and value_size != vc.size:
                raise ValueError("value_size=%d disagrees with value type %s (%d bytes)"
                                 % (value_size, vc.c_type, vc.size))
            value_size = vc.size
        key_size = _default_size(mtype, "key", key_size)
        value_size = _default_size(mtype, "value", value_size)
        if mtype == MapType.LPM_TRIE:
            flags |= 1  # BPF_F_NO_PREALLOC is mandatory for LPM tries
        inner_fd = inner_map.fd if inner_map is not None else None
        for n, v in (("key_size", key_size), ("value_size", value_size),
                     ("max_entries", max_entries)):
            if not isinstance(v, int) or v < 0 or v >= 1 << 32:
                raise ValueError("%s must be an int in 0..2**32-1, got %r" % (n, v))
        fd = _b.map_create(mtype, name, key_size, value_size, max_entries, flags,
                           inner_map_fd=inner_fd, map_extra=map_extra)
        desc = dict(name=name, type=mtype, key_size=key_size, value_size=value_size,
                    max_entries=max_entries, flags=flags)
        try:
            return cls._wrap(fd, desc, kc, vc)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def from_fd(cls, fd, *, key=None, value=None, owns_fd=True):
        """Wrap an existing map fd (takes ownership unless owns_fd=False);
        types come from the map's BTF when it has some."""
        try:
            info = _b.map_info(fd)
        except BaseException:
            if owns_fd:
                os.close(fd)
            raise
        kc, vc, btf = key, value, None
        if info["btf_id"] and (key is None or value is None):
            try:
                from pybpfnet import _btf
                btf = _btf.parse(_b.btf_raw_by_id(info["btf_id"]))
                if key is None and info["btf_key_type_id"]:
                    kc = _codec.from_btf(btf, info["btf_key_type_id"])
                if value is None and info["btf_value_type_id"]:
                    vc = _codec.from_btf(btf, info["btf_value_type_id"])
            except (BpfError, CodecError):
                btf = None
        return cls._wrap(fd, info, kc, vc, owns_fd=owns_fd, btf=btf)

    @classmethod
    def from_pinned(cls, path, *, key=None, value=None):
        """Open a map pinned in bpffs. Raises FileNotFoundError-like BpfError
        (errno ENOENT) when nothing is pinned there."""
        return cls.from_fd(_b.get_pinned(path), key=key, value=value)

    @classmethod
    def from_id(cls, map_id, *, key=None, value=None):
        """Open a map by its kernel id (as listed by ``bpftool map``)."""
        return cls.from_fd(_b.fd_by_id("map", map_id), key=key, value=value)

    def clone(self):
        """A second handle on the same kernel map that owns its own fd
        (outlives the object this map came from)."""
        desc = dict(name=self.name, type=self.type, key_size=self.key_size,
                    value_size=self.value_size, max_entries=self.max_entries,
                    flags=self.flags)
        return type(self)._from_desc(_b.dup(self.fd), desc, self.key_type,
                                     self.value_type, True, self.btf)

    # -- info -------------------------------------------------------------
    def info(self):
        """The kernel's bpf_map_info for this map, as a dict."""
        return _b.map_info(self.fd)

    @property
    def id(self):
        return self.info()["id"]

    def pin(self, path):
        """Pin the map at ``path`` in bpffs so it outlives this process."""
        _b.pin(self.fd, path, "map %r" % self.name)

    def freeze(self):
        """Make the map read-only for user space (BPF_MAP_FREEZE)."""
        _b.freeze(self.fd)

    # -- element access ---------------------------------------------------
    def _encode_key(self, key):
        return self._kenc(key)

    def _encode_percpu(self, value):
        ncpu = possible_cpus()
        stride = _codec.round_up8(self.value_size)
        enc = self.value_type.encode
        if isinstance(value, list):
            if len(value) != ncpu:
                raise CodecError("per-CPU map %r takes a list of %d values (one per "
                                 "possible CPU) or a single value for all; got %d"
                                 % (self.name, ncpu, len(value)))
            parts = []
            for cpu, v in enumerate(value):
                try:
                    parts.append(enc(v))
                except CodecError as e:
                    raise CodecError("per-CPU map %r, value for CPU %d: %s (a list "
                                     "gives one value per CPU)" % (self.name, cpu, e)) from None
        else:
            parts = [enc(value)] * ncpu
        pad = b"\0" * (stride - self.value_size)
        return b"".join(p + pad for p in parts)

    def _fail(self, err, op, key):
        if self._fd < 0:
            raise ValueError("%s is closed" % self._what())
        if err == _errno.ENOENT:
            raise MapKeyError(key, self.name)
        raise _b.error(err, "%s %r in map %r" % (op, key, self.name))

    def _lookup_raw(self, key):
        """A bytes view of key's value (valid until the next lookup on this
        thread), or None when missing."""
        c, view = _b.new_buffer(self._vstride) if self._big else _b.ValueBuffer.get()
        rc = _lookup_elem(self._fd, self._kenc(key), c)
        if rc:
            if rc == -_errno.ENOENT and self._fd >= 0:
                return None
            self._fail(-rc, "look up", key)
        return view

    def __getitem__(self, key):
        # integer maps skip the extra call through get() (measured ~10% of
        # a lookup); misses and errors take the common path
        if self._int_kv:
            try:
                v = _lookup_int(self._fd, key, self.key_size, self.value_size)
            except (TypeError, OverflowError):
                pass            # get() below names the C type expected
            else:
                if v or not _last_err():
                    return v
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise MapKeyError(key, self.name)
        return value

    def get(self, key, default=None):
        """The value for key, or default; a miss raises nothing."""
        if self._int_kv:
            try:
                v = _b.lookup_int(self._fd, key, self.key_size, self.value_size)
            except (TypeError, OverflowError):
                self.key_type.check(key, "")
                raise
            if v or not _b.last_err():
                return v
            err = _b.last_err()
            if err == _errno.ENOENT and self._fd >= 0:
                return default
            if err == _errno.EOVERFLOW:
                self.key_type.check(key, "")
            self._fail(err, "look up", key)
        if self._big:
            c, view = _b.new_buffer(self._vstride)
        else:
            try:
                c, view = _tls.bv
            except AttributeError:
                c, view = _b.ValueBuffer.get()
        rc = _lookup_elem(self._fd, self._kenc(key), c)
        if rc:
            if rc == -_errno.ENOENT and self._fd >= 0:
                return default
            self._fail(-rc, "look up", key)
        return self._vdec(view)

    def __setitem__(self, key, value):
        if self._int_kv:
            self.set(key, value)
            return
        rc = _update_elem(self._fd, self._kenc(key), self._venc(value), 0)
        if rc:
            self._update_error(-rc, key, 0)

    def _setitem_via_set(self, key, value):
        self.set(key, value)

    def set(self, key, value, flags=UpdateFlags.ANY):
        """Update with BPF_ANY/NOEXIST/EXIST semantics (``flags``)."""
        if self._int_kv:
            try:
                rc = _b.update_int(self._fd, key, self.key_size, value,
                                   self.value_size, flags)
            except (TypeError, OverflowError):
                self.key_type.check(key, "")
                self.value_type.check(value, "")
                raise
            if rc == 0:
                return
            if rc == -_errno.EOVERFLOW:
                self.key_type.check(key, "")
            if rc == -_errno.ERANGE:
                self.value_type.check(value, "")
            self._update_error(-rc, key, flags)
        rc = _update_elem(self._fd, self._kenc(key), self._venc(value), flags)
        if rc:
            self._update_error(-rc, key, flags)

    def _update_error(self, err, key, flags):
        if err == _errno.EEXIST and flags & UpdateFlags.NOEXIST:
            raise BpfError(err, "insert %r into map %r" % (key, self.name),
                           "key already exists")
        if err == _errno.ENOENT and flags & UpdateFlags.EXIST:
            raise MapKeyError(key, self.name)
        if err == _errno.E2BIG:
            raise BpfError(err, "update %r in map %r" % (key, self.name),
                           "map is full (max_entries=%d)" % self.max_entries)
        self._fail(err, "update", key)

    def insert(self, key, value):
        """Add a new element; BpfError(EEXIST) if the key exists."""
        self.set(key, value, UpdateFlags.NOEXIST)

    def __delitem__(self, key):
        if not self.delete(key):
            raise MapKeyError(key, self.name)

    def delete(self, key):
        """Delete key; returns False when it was not there."""
        if self._int_kv:
            try:
                rc = _b.delete_int(self._fd, key, self.key_size)
            except (TypeError, OverflowError):
                self.key_type.check(key, "")
                raise
            if rc == -_errno.EOVERFLOW:
                self.key_type.check(key, "")
        else:
            rc = _b.delete_elem(self._fd, self._encode_key(key))
        if rc == 0:
            return True
        if rc == -_errno.ENOENT and self._fd >= 0:
            return False
        self._fail(-rc, "delete", key)

    def pop(self, key, *default):
        """Remove key and return its value (lookup then delete)."""
        view = self._lookup_raw(key)
        if view is None:
            if default:
                return default[0]
            raise MapKeyError(key, self.name)
        value = self._vdec(view)
        if not self.delete(key) and not default:
            raise MapKeyError(key, self.name)
        return value

    def __contains__(self, key):
        if self._int_kv:
            try:
                v = _b.lookup_int(self._fd, key, self.key_size, self.value_size)
            except (TypeError, OverflowError):
                return False
            return bool(v) or _b.last_err() == 0
        try:
            return self._lookup_raw(key) is not None
        except CodecError:
            return False

    # -- iteration --------------------------------------------------------
    def _raw_keys(self):
        """Distinct raw keys, snapshotted with a bounded GET_NEXT_KEY walk:
        concurrent deletes restart the kernel's walk, so the snapshot is
        bounded by max_entries and de-duplicated."""
        ks = self.key_size
        blob = _b.map_keys(self.fd, ks, max(self.max_entries, 1) * 2)
        raw = dict.fromkeys(blob[i:i + ks] for i in range(0, len(blob), ks))
        return list(raw)

    def keys(self):
        """A list of the keys present now."""
        dec = self._kdec
        return [dec(k) for k in self._raw_keys()]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._raw_keys())

    def items(self):
        """A list of (key, value) pairs, read with the kernel's batch lookup
        where the map type has one."""
        if self.type in _b.BATCH_TYPES:
            out = []
            with _gc_paused():
                for keys, vals in self._batch_items():
                    out.extend(zip(keys, vals))
            return out
        return list(self._items_by_key())

    def values(self):
        return [v for _, v in self.items()]

    def _items_by_key(self):
        kdec, vdec = self._kdec, self._vdec
        for raw in self._raw_keys():
            c, view = _b.new_buffer(self._vstride)
            if _b.lookup_elem(self._fd, raw, c) == 0:
                yield kdec(raw), vdec(view)

    def _batch_chunks(self, chunk=None, delete=False):
        """(keys view, values view, count) chunks from BPF_MAP_LOOKUP_BATCH."""
        ks, vs = self.key_size, self._vstride
        chunk = chunk or max(1, min(self.max_entries, 8192))
        while True:
            kc, kview = _b.new_buffer(ks * chunk)
            vc, vview = _b.new_buffer(vs * chunk)
            try:
                for n in _b.lookup_batch(self.fd, ks, vs, kview, vview, chunk, delete):
                    yield kview, vview, n
                return
            except BpfError as e:
                # a hash bucket with more elements than the chunk: grow
                if e.errno == _errno.ENOSPC and chunk < self.max_entries * 2:
                    chunk *= 4
                    continue
                raise

    def _batch_items(self, delete=False):
        """Chunks of (keys list, values list) from the kernel's batch lookup."""
        kc, vc = self.key_type, self.value_type
        for kview, vview, n in self._batch_chunks(delete=delete):
            keys = kc.decode_many(kview, n)
            if self.percpu:
                vdec = self._vdec
                vals = [vdec(vview, i * self._vstride) for i in range(n)]
            else:
                vals = vc.decode_many(vview, n)
            yield keys, vals

    def clear(self):
        """Delete every element."""
        keys = self._raw_keys()
        if keys:
            self.delete_batch_raw(b"".join(keys), len(keys))

    # -- batch ------------------------------------------------------------
    def lookup_batch(self, keys=None, *, numpy=False, delete=False):
        """Read many elements.

        With no ``keys``: the whole map via BPF_MAP_LOOKUP_BATCH (per-element
        fallback for map types without it) as a dict ``{key: value}``; with
        ``numpy=True`` a pair of numpy arrays (keys, values) whose dtypes are
        derived from BTF, filled by the kernel with no per-element copy.
        ``delete=True`` uses LOOKUP_AND_DELETE_BATCH (reads and empties).
        With ``keys``: a dict of those keys that are present."""
        if keys is not None:
            out = {}
            for k in keys:
                view = self._lookup_raw(k)
                if view is not None:
                    out[k] = self._vdec(view)
            return out
        if numpy:
            return self._lookup_batch_numpy(delete)
        if self.type in _b.BATCH_TYPES:
            out = {}
            with _gc_paused():
                for keys, vals in self._batch_items(delete):
                    out.update(zip(keys, vals))
            return out
        items = dict(self._items_by_key())
        if delete:
            for k in items:
                self.delete(k)
        return items

    def numpy_dtypes(self):
        """(key dtype, value dtype) for numpy batch I/O (per-CPU values are
        sub-arrays of possible_cpus() padded elements)."""
        import numpy as np
        kd = self.key_type.numpy_dtype()
        vd = self.value_type.numpy_dtype()
        if self.percpu:
            stride = _codec.round_up8(self.value_size)
            if vd.itemsize != stride:
                vd = np.dtype({"names": ["value"], "formats": [vd], "offsets": [0],
                               "itemsize": stride})
            vd = np.dtype((vd, (possible_cpus(),)))
        return kd, vd

    def _lookup_batch_numpy(self, delete=False):
        import numpy as np
        kd, vd = self.numpy_dtypes()
        if self.type not in _b.BATCH_TYPES:
            pairs = self.lookup_batch(delete=delete)
            keys = np.empty(len(pairs), kd)
            vals = np.empty(len(pairs), vd)
            kraw = b"".join(self.key_type.encode(k) for k in pairs)
            vraw = b"".join(self._venc(v) for v in pairs.values())
            keys.view(np.uint8)[:] = np.frombuffer(kraw, np.uint8)
            vals.view(np.uint8)[:] = np.frombuffer(vraw, np.uint8)
            return keys, vals
        cap = max(1, self.max_entries) if self.type in (MapType.ARRAY, MapType.PERCPU_ARRAY) \
            else max(1, min(self.max_entries, 1 << 20))
        keys = np.empty(cap, kd)
        vals = np.empty(cap, vd)
        total = 0
        chunk = max(1, min(cap, 8192))
        in_done = False
        while not in_done:
            try:
                for n in self._np_batches(keys, vals, chunk, delete):
                    total = n
                in_done = True
            except BpfError as e:
                if e.errno == _errno.ENOSPC and chunk < cap:
                    chunk = min(cap, chunk * 4)
                    continue
                raise
        return keys[:total], vals[:total]

    def _np_batches(self, keys, vals, chunk, delete):
        """Kernel batches written straight into the numpy arrays; yields the
        running total. Grows the arrays if the map holds more than they do."""
        import numpy as np
        total = 0
        ks, vs = self.key_size, self._vstride
        kbytes = keys.view(np.uint8).reshape(-1)
        vbytes = vals.view(np.uint8).reshape(-1)
        kbuf, kview = _b.new_buffer(ks * chunk)
        vbuf, vview = _b.new_buffer(vs * chunk)
        for n in _b.lookup_batch(self.fd, ks, vs, kview, vview, chunk, delete):
            if total + n > len(keys):
                raise BpfError(_errno.EOVERFLOW, "batch lookup of map %r" % self.name,
                               "map grew while being read")
            kbytes[total * ks:(total + n) * ks] = np.frombuffer(kview[:n * ks], np.uint8)
            vbytes[total * vs:(total + n) * vs] = np.frombuffer(vview[:n * vs], np.uint8)
            total += n
            yield total

    def update_batch(self, items, *, flags=UpdateFlags.ANY):
        """Write many elements with one BPF_MAP_UPDATE_BATCH call (per-element
        fallback for map types without it). ``items``: a mapping, an iterable
        of (key, value) pairs, or a (keys, values) pair of numpy arrays or
        of ``array.array`` s whose item sizes are the key and value sizes.
        Every element is encoded (and checked) before anything is written, so
        a bad element leaves the map unchanged. Returns the count written."""
        kraw, vraw, n = self._encode_batch(items)
        if n == 0:
            return 0
        self._check_batch_keys(kraw, n)
        ks, vs = self.key_size, self._vstride
        # the kernel's batch update takes no NOEXIST/EXIST (only F_LOCK)
        if self.type in _b.BATCH_TYPES and self.type not in (
                MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS) and \
                not flags & (UpdateFlags.NOEXIST | UpdateFlags.EXIST):
            try:
                return _b.update_batch(self.fd, kraw, vraw, n, flags)
            except BpfError as e:
                # a refusal before the first write leaves count unchanged
                done, err = (e.done if e.done < n else 0), e.errno
        else:
            for done in range(n):
                rc = _update_elem(self._fd, bytes(memoryview(kraw)[done * ks:(done + 1) * ks]),
                                  bytes(memoryview(vraw)[done * vs:(done + 1) * vs]), flags)
                if rc:
                    err = -rc
                    break
            else:
                return n
        key = self._kdec(bytes(memoryview(kraw)[done * ks:(done + 1) * ks]))
        failed = done
        if done and flags & UpdateFlags.NOEXIST:
            # everything written so far was new: take it out again
            self.delete_batch_raw(bytes(memoryview(kraw)[:done * ks]), done)
            done = 0
        reason = ("map is full (max_entries=%d)" % self.max_entries if err == _errno.E2BIG
                  else "key exists" if err == _errno.EEXIST
                  else "key not found" if err == _errno.ENOENT else os.strerror(err))
        exc = _b.error(err, "batch update of map %r" % self.name,
                       "element %d of %d (key %r): %s%s" % (
                           failed, n, key, reason,
                           "; the %d elements before it were written" % done if done else ""))
        exc.done = done
        raise exc

    def _check_batch_keys(self, kraw, n):
        """Refuse, before anything is written, keys the kernel would refuse
        part-way through a batch (subclasses know their key rules)."""

    def _encode_batch(self, items):
        np_pair = (isinstance(items, tuple) and len(items) == 2
                   and hasattr(items[0], "dtype") and hasattr(items[1], "dtype"))
        if (isinstance(items, tuple) and len(items) == 2
                and isinstance(items[0], array.array) and isinstance(items[1], array.array)):
            # (keys, values) as array.array of fixed-size integers: raw bytes
            # as they are, like numpy arrays but without numpy
            keys, vals = items
            if len(keys) != len(vals):
                raise ValueError("array batch: %d keys but %d values" % (len(keys), len(vals)))
            if keys.itemsize != self.key_size or vals.itemsize != self.value_size or \
                    self.percpu:
                raise CodecError("array batch for map %r: key/value itemsize %d/%d, "
                                 "expected %d/%d (and not a per-CPU map)" % (
                                     self.name, keys.itemsize, vals.itemsize,
                                     self.key_size, self.value_size))
            return memoryview(keys).cast("B"), memoryview(vals).cast("B"), len(keys)
        if np_pair:
            keys, vals = items
            kd, vd = self.numpy_dtypes()
            if len(keys) != len(vals):
                raise ValueError("numpy batch: %d keys but %d values" % (len(keys), len(vals)))
            if keys.dtype.itemsize != kd.itemsize or vals.dtype.itemsize != vd.itemsize:
                raise CodecError("numpy batch for map %r: key/value itemsize %d/%d, "
                                 "expected %d/%d (use map.numpy_dtypes())" % (
                                     self.name, keys.dtype.itemsize, vals.dtype.itemsize,
                                     kd.itemsize, vd.itemsize))
            import numpy as np
            # flat byte views: element i's key is bytes [i*key_size, (i+1)*key_size)
            return (np.ascontiguousarray(keys).view(np.uint8).reshape(-1),
                    np.ascontiguousarray(vals).view(np.uint8).reshape(-1), len(keys))
        if isinstance(items, collections.abc.Mapping):
            keys, values = list(items.keys()), list(items.values())
        else:
            keys, values = [], []
            for pair in items:
                try:
                    k, v = pair
                except (TypeError, ValueError):
                    raise CodecError("update_batch takes a mapping or (key, value) "
                                     "pairs, got %r" % (pair,)) from None
                keys.append(k)
                values.append(v)
        if self._kenc is self.key_type.encode:
            kraw = self.key_type.encode_many(keys)
        else:
            kraw = b"".join(map(self._kenc, keys))
        if self.percpu:
            vraw = b"".join(map(self._venc, values))
        else:
            vraw = self.value_type.encode_many(values)
        return kraw, vraw, len(keys)

    def delete_batch(self, keys):
        """Delete many keys with BPF_MAP_DELETE_BATCH (per-element fallback).
        Missing keys raise MapKeyError before anything is deleted when the
        kernel call is used per element; returns the count deleted."""
        if hasattr(keys, "dtype"):
            import numpy as np
            kd, _ = self.numpy_dtypes()
            if keys.dtype.itemsize != kd.itemsize:
                raise CodecError("numpy keys itemsize %d, expected %d" % (
                    keys.dtype.itemsize, kd.itemsize))
            return self.delete_batch_raw(np.ascontiguousarray(keys), len(keys))
        keys = list(keys)
        raw = b"".join(self._encode_key(k) for k in keys)
        return self.delete_batch_raw(raw, len(keys))

    def delete_batch_raw(self, raw, n):
        if n == 0:
            return 0
        if self.type in _b.BATCH_TYPES and self.type not in (
                MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.ARRAY_OF_MAPS):
            try:
                return _b.delete_batch(self.fd, raw, n)
            except BpfError as e:
                if e.errno == _errno.ENOENT:
                    raise MapKeyError(self._kdec(bytes(memoryview(raw)[
                        e.done * self.key_size:(e.done + 1) * self.key_size])),
                        self.name) from None
                raise
        ks = self.key_size
        done = 0
        for i in range(n):
            rc = _b.delete_elem(self._fd, bytes(memoryview(raw)[i * ks:(i + 1) * ks]))
            if rc and rc != -_errno.ENOENT:
                raise _b.error(-rc, "delete element %d in map %r" % (i, self.name))
            done += rc == 0
        return done


_U32_KEYED = frozenset((MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY,
                        MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP,
                        MapType.XSKMAP, MapType.ARRAY_OF_MAPS, MapType.PERF_EVENT_ARRAY,
                        MapType.CGROUP_ARRAY))
_FD_VALUED = frozenset((MapType.PROG_ARRAY, MapType.DEVMAP, MapType.DEVMAP_HASH,
                        MapType.CPUMAP, MapType.XSKMAP, MapType.ARRAY_OF_MAPS,
                        MapType.HASH_OF_MAPS, MapType.PERF_EVENT_ARRAY,
                        MapType.CGROUP_ARRAY))


def _default_size(mtype, what, size):
    if size is not None:
        return size
    fixed = {
        (MapType.RINGBUF, "key"): 0, (MapType.RINGBUF, "value"): 0,
        (MapType.USER_RINGBUF, "key"): 0, (MapType.USER_RINGBUF, "value"): 0,
        (MapType.QUEUE, "key"): 0, (MapType.STACK, "key"): 0,
        (MapType.BLOOM_FILTER, "key"): 0,
        (MapType.PROG_ARRAY, "key"): 4, (MapType.PROG_ARRAY, "value"): 4,
        (MapType.DEVMAP, "key"): 4, (MapType.DEVMAP, "value"): 4,
        (MapType.DEVMAP_HASH, "key"): 4, (MapType.DEVMAP_HASH, "value"): 4,
        (MapType.CPUMAP, "key"): 4, (MapType.CPUMAP, "value"): 4,
        (MapType.XSKMAP, "key"): 4, (MapType.XSKMAP, "value"): 4,
        (MapType.ARRAY_OF_MAPS, "key"): 4, (MapType.ARRAY_OF_MAPS, "value"): 4,
        (MapType.HASH_OF_MAPS, "value"): 4,
        (MapType.ARRAY, "key"): 4, (MapType.PERCPU_ARRAY, "key"): 4,
        (MapType.PERF_EVENT_ARRAY, "key"): 4, (MapType.PERF_EVENT_ARRAY, "value"): 4,
    }
    if (mtype, what) in fixed:
        return fixed[(mtype, what)]
    raise ValueError("a %s map needs a %s type (%s='u32', ...) or %s_size" % (
        mtype.name.lower(), what, what, what))


class HashMap(Map):
    """BPF_MAP_TYPE_HASH."""
    map_type = MapType.HASH


class LruHashMap(HashMap):
    """BPF_MAP_TYPE_LRU_HASH: full maps evict the least recently used."""
    map_type = MapType.LRU_HASH


class _PerCpuMixin:
    def sum(self, key):
        """The per-CPU values of key added up (ints, or structs field by
        field)."""
        return sum_values(self[key])


def sum_values(values):
    """Add per-CPU values: ints, floats, or namedtuple structs field-wise."""
    values = list(values)
    if not values:
        return 0
    first = values[0]
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)._make(sum_values(col) if isinstance(col[0], (int, float, tuple))
                                 else col[0] for col in zip(*values))
    if isinstance(first, tuple):
        return tuple(sum_values(col) for col in zip(*values))
    return sum(values)


class PerCpuHashMap(_PerCpuMixin, Map):
    """BPF_MAP_TYPE_PERCPU_HASH: each value is a list, one per possible CPU."""
    map_type = MapType.PERCPU_HASH


class LruPerCpuHashMap(_PerCpuMixin, Map):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH: per-CPU values, LRU eviction."""
    map_type = MapType.LRU_PERCPU_HASH


class ArrayMap(Map):
    """BPF_MAP_TYPE_ARRAY: keys 0..max_entries-1 always exist; elements
    cannot be deleted (``clear()`` zeroes them)."""
    map_type = MapType.ARRAY

    def _check_batch_keys(self, kraw, n):
        indexes = memoryview(kraw).cast("B")[:n * 4].cast("I")
        if max(indexes, default=0) < self.max_entries:
            return
        for i, k in enumerate(indexes):
            if k >= self.max_entries:
                raise BpfError(_errno.E2BIG, "batch update of map %r" % self.name,
                               "element %d: index %d is out of range 0..%d; nothing "
                               "was written" % (i, k, self.max_entries - 1))

    def _update_error(self, err, key, flags):
        if err == _errno.E2BIG:
            raise BpfError(err, "update map %r" % self.name,
                           "index %r is out of range 0..%d" % (key, self.max_entries - 1))
        super()._update_error(err, key, flags)

    def __len__(self):
        return self.max_entries

    def keys(self):
        return list(range(self.max_entries))

    def __contains__(self, key):
        return isinstance(key, int) and 0 <= key < self.max_entries

    def delete(self, key):
        raise TypeError("elements of array map %r cannot be deleted; assign a zero "
                        "value instead" % self.name)

    def clear(self):
        zero = self.value_type.zero()
        if self.percpu:
            zero = [zero] * possible_cpus()
        self.update_batch((i, zero) for i in range(self.max_entries))


class PerCpuArrayMap(_PerCpuMixin, ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY: each value is a list, one per possible CPU."""
    map_type = MapType.PERCPU_ARRAY


class LpmTrieMap(Map):
    """BPF_MAP_TYPE_LPM_TRIE. Besides struct keys, accepts prefixes as
    strings or ``ipaddress`` networks ("10.0.0.0/8") when the key is
    {u32 prefixlen; u8 data[4 or 16]}; ``longest_match(addr)`` looks up an
    address."""
    map_type = MapType.LPM_TRIE

    def _setup_paths(self):
        super()._setup_paths()
        raw = self._kenc

        def kenc(key):
            if isinstance(key, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)):
                key = self._prefix_key(key)
            return raw(key)
        self._kenc = kenc

    def _prefix_key(self, key):
        try:
            net = ipaddress.ip_network(key, strict=False) if isinstance(key, str) else key
        except ValueError as e:
            raise CodecError("LPM key %r for map %r (C type %s): %s" % (
                key, self.name, self.key_type.c_type, e)) from None
        data_len = self.key_size - 4
        packed = net.network_address.packed
        if len(packed) != data_len:
            raise CodecError("LPM map %r holds %d-byte addresses; %r is IPv%d" % (
                self.name, data_len, key, net.version))
        kc = self.key_type
        if isinstance(kc, _codec.StructCodec) and len(kc.fields) == 2:
            return kc.py_type(net.prefixlen, packed)
        return net.prefixlen.to_bytes(4, sys.byteorder) + packed

    def _check_batch_keys(self, kraw, n):
        bits = (self.key_size - 4) * 8
        ks = self.key_size
        for i in range(n):
            plen = int.from_bytes(kraw[i * ks:i * ks + 4], sys.byteorder)
            if plen > bits:
                raise BpfError(_errno.EINVAL, "batch update of map %r" % self.name,
                               "element %d: prefix length %d exceeds the %d-bit key; "
                               "nothing was written" % (i, plen, bits))

    def longest_match(self, address, default=None):
        """The value of the longest prefix containing ``address``."""
        addr = ipaddress.ip_address(address)
        bits = 32 if addr.version == 4 else 128
        return self.get(ipaddress.ip_network("%s/%d" % (addr, bits)), default)


def _ifindex(iface):
    if isinstance(iface, int):
        return iface
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise BpfError(_errno.ENODEV, "interface %r" % (iface,), "no such interface") from None


class ProgArray(Map):
    """BPF_MAP_TYPE_PROG_ARRAY (tail calls): assign a Program (or a program
    fd); reading gives the program id."""
    __setitem__ = Map._setitem_via_set
    map_type = MapType.PROG_ARRAY

    def set(self, key, value, flags=UpdateFlags.ANY):
        fd = value.fd if hasattr(value, "fd") else value
        super().set(key, fd, flags)


class DevMap(Map):
    """BPF_MAP_TYPE_DEVMAP: slot -> interface (name or ifindex) for
    bpf_redirect_map."""
    __setitem__ = Map._setitem_via_set
    map_type = MapType.DEVMAP

    def set(self, key, value, flags=UpdateFlags.ANY):
        if isinstance(value, str):
            value = _ifindex(value)
            if not isinstance(self.value_type, _codec.IntCodec):
                value = {"ifindex": value} if isinstance(self.value_type, _codec.StructCodec) \
                    else value.to_bytes(4, sys.byteorder)
        super().set(key, value, flags)


class DevMapHash(DevMap):
    """BPF_MAP_TYPE_DEVMAP_HASH: like DevMap with sparse keys."""
    map_type = MapType.DEVMAP_HASH


class CpuMap(Map):
    """BPF_MAP_TYPE_CPUMAP: cpu -> queue size (or struct bpf_cpumap_val)."""
    __setitem__ = Map._setitem_via_set
    map_type = MapType.CPUMAP

    def set(self, key, value, flags=UpdateFlags.ANY):
        if isinstance(value, int) and isinstance(self.value_type, _codec.StructCodec):
            value = {self.value_type.field_names[0]: value}
        super().set(key, value, flags)


class XskMap(Map):
    """BPF_MAP_TYPE_XSKMAP: queue -> AF_XDP socket (a socket or its fd)."""
    __setitem__ = Map._setitem_via_set
    map_type = MapType.XSKMAP

    def set(self, key, value, flags=UpdateFlags.ANY):
        fd = value.fileno() if hasattr(value, "fileno") else value
        super().set(key, fd, flags)


class _MapOfMaps(Map):
    __setitem__ = Map._setitem_via_set
    def set(self, key, value, flags=UpdateFlags.ANY):
        fd = value.fd if isinstance(value, Map) else value
        super().set(key, fd, flags)

    def get_map(self, key, *, key_type=None, value_type=None):
        """The inner map stored at key, as a new Map handle (types from its
        BTF, or the given descriptions)."""
        return Map.from_id(self[key], key=key_type, value=value_type)


class ArrayOfMaps(_MapOfMaps):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS: assign a Map; reading gives the inner map id."""
    map_type = MapType.ARRAY_OF_MAPS


class HashOfMaps(_MapOfMaps):
    """BPF_MAP_TYPE_HASH_OF_MAPS: assign a Map; reading gives the inner map id."""
    map_type = MapType.HASH_OF_MAPS


class _NoKeys:
    """Map types without keys: mapping operations are refused."""

    def _nokeys(self, *a, **k):
        raise TypeError("%s has no keys: use push()/pop()/peek()" % self._what())

    __getitem__ = __setitem__ = __delitem__ = set = delete = get = _nokeys
    keys = items = values = lookup_batch = update_batch = delete_batch = _nokeys

    def __contains__(self, key):
        self._nokeys()

    def __iter__(self):
        self._nokeys()

    def __len__(self):
        self._nokeys()


class QueueMap(_NoKeys, Map):
    """BPF_MAP_TYPE_QUEUE (FIFO): push/pop/peek."""
    map_type = MapType.QUEUE

    def push(self, value, flags=0):
        """Append; with flags=BPF_EXIST (2) the oldest is dropped when full."""
        rc = _b.update_elem(self.fd, _b.NULL, self.value_type.encode(value), flags)
        if rc:
            if rc == -_errno.E2BIG:
                raise BpfError(-rc, "push to %s" % self._what(),
                               "full (max_entries=%d)" % self.max_entries)
            raise _b.error(-rc, "push to %s" % self._what())

    def _take(self, delete):
        c, view = _b.new_buffer(self.value_size)
        fn = _b.lookup_and_delete_elem if delete else _b.lookup_elem
        rc = fn(self.fd, _b.NULL, c)
        if rc == -_errno.ENOENT:
            return None
        if rc:
            raise _b.error(-rc, "read %s" % self._what())
        return (self.value_type.decode(view),)

    def pop(self, *default):
        """Remove and return the next value; IndexError when empty (or the
        default, if given)."""
        got = self._take(True)
        if got is None:
            if default:
                return default[0]
            raise IndexError("%s is empty" % self._what())
        return got[0]

    def peek(self, *default):
        got = self._take(False)
        if got is None:
            if default:
                return default[0]
            raise IndexError("%s is empty" % self._what())
        return got[0]

    def drain(self):
        """Pop everything; returns the list."""
        out = []
        while True:
            got = self._take(True)
            if got is None:
                return out
            out.append(got[0])


class StackMap(QueueMap):
    """BPF_MAP_TYPE_STACK (LIFO): push/pop/peek."""
    map_type = MapType.STACK


_CLASSES = {
    MapType.HASH: HashMap, MapType.ARRAY: ArrayMap,
    MapType.PERCPU_HASH: PerCpuHashMap, MapType.PERCPU_ARRAY: PerCpuArrayMap,
    MapType.LRU_HASH: LruHashMap, MapType.LRU_PERCPU_HASH: LruPerCpuHashMap,
    MapType.LPM_TRIE: LpmTrieMap, MapType.PROG_ARRAY: ProgArray,
    MapType.DEVMAP: DevMap, MapType.DEVMAP_HASH: DevMapHash,
    MapType.CPUMAP: CpuMap, MapType.XSKMAP: XskMap,
    MapType.QUEUE: QueueMap, MapType.STACK: StackMap,
    MapType.ARRAY_OF_MAPS: ArrayOfMaps, MapType.HASH_OF_MAPS: HashOfMaps,
}


def register(map_type, cls):
    """Used by _ringbuf to add its class without an import cycle."""
    _CLASSES[map_type] = cls
