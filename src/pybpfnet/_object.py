"""Object specs (plain data, nothing in the kernel) and loaded objects.

``open()`` reads an ELF object into an :class:`ObjectSpec`: its programs,
maps and global variables, typed from BTF, all editable. ``spec.load()``
creates the kernel objects and returns a :class:`BpfObject`, which owns
them. The phases are those of libbpf: open -> (modify) -> load -> attach.
"""

import builtins
import collections.abc
import errno as _errno
import importlib.resources
import mmap
import os
import struct
import warnings

from pybpfnet import _binding as _b
from pybpfnet import _btf, _codec
from pybpfnet._errors import BpfError, CodecError, ObjectFormatError
from pybpfnet._map import Map, MapType, _creation_site
from pybpfnet._program import ProgramType, Program
from pybpfnet import _ringbuf  # noqa: F401  (registers RingBuf)

__all__ = ["ObjectSpec", "MapSpec", "ProgramSpec", "BpfObject", "open", "load",
           "load_bundled", "bundled"]

_GLOBAL_SECTIONS = (".data", ".rodata", ".bss")


class _Named(collections.abc.Mapping):
    """A read-only name -> item mapping whose misses name the choices.
    Items given as zero-argument callables are built on first access (so a
    load does not pay for codecs nobody uses)."""

    def __init__(self, items, what, lazy=False):
        self._items = dict(items)
        self._lazy = lazy
        self._what = what

    def __getitem__(self, name):
        try:
            item = self._items[name]
        except KeyError:
            raise KeyError("no %s named %r; there are: %s" % (
                self._what, name, ", ".join(sorted(self._items)) or "none")) from None
        if self._lazy and callable(item) and not isinstance(item, type):
            item = self._items[name] = item()
        return item

    def built(self):
        """Items already built (lazy mappings)."""
        return [v for v in self._items.values() if not callable(v) or isinstance(v, type)
                or not self._lazy]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return "{%s}" % ", ".join("%r: %r" % (k, self[k]) for k in self._items)


class MapSpec:
    """A map as the object declares it. ``max_entries`` and ``flags`` may
    be changed before load."""

    def __init__(self, desc, spec):
        self._spec = spec
        self._desc = desc
        self.name = desc["name"]
        # a map type newer than this pybpfnet stays a plain int
        self.type = _as_enum(MapType, desc["type"])
        self.key_size = desc["key_size"]
        self.value_size = desc["value_size"]
        self._max_entries = desc["max_entries"]
        self._flags = desc["flags"]
        self.internal = desc["internal"]
        self.section = None
        self._reuse = None

    @property
    def key_type(self):
        """Codec of the key (None: no BTF, keys are bytes)."""
        return self._spec._codec(self._desc["btf_key_type_id"], self.name, "key",
                                 self.key_size)

    @property
    def value_type(self):
        """Codec of the value (None: no BTF, values are bytes)."""
        if self.internal:
            return None
        return self._spec._codec(self._desc["btf_value_type_id"], self.name, "value",
                                 self.value_size)

    @property
    def max_entries(self):
        return self._max_entries

    @max_entries.setter
    def max_entries(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n < 1 << 32:
            raise ValueError("max_entries of map %r must be an int in 1..2**32-1, got %r"
                             % (self.name, n))
        if self.type == MapType.RINGBUF and (n & (n - 1) or n % 4096):
            raise ValueError("ring buffer %r size must be a power of 2 and a multiple "
                             "of the page size, got %d" % (self.name, n))
        self._max_entries = n

    @property
    def flags(self):
        return self._flags

    @flags.setter
    def flags(self, f):
        if not isinstance(f, int) or f < 0:
            raise ValueError("map flags must be a non-negative int, got %r" % (f,))
        self._flags = f

    def reuse(self, map):
        """Load the object with this existing map instead of creating one
        (shares it between objects; types and sizes must match)."""
        if map is not None and (map.type != self.type or map.key_size != self.key_size
                                or map.value_size != self.value_size):
            raise ValueError("map %r (%s, key %d, value %d) cannot stand in for %r "
                             "(%s, key %d, value %d)" % (
                                 map.name, _type_name(map.type), map.key_size, map.value_size,
                                 self.name, _type_name(self.type), self.key_size, self.value_size))
        self._reuse = map

    def __repr__(self):
        return "<MapSpec %r %s key=%s value=%s max_entries=%d>" % (
            self.name, _type_name(self.type),
            self.key_type.c_type if self.key_type else self.key_size,
            self.value_type.c_type if self.value_type else self.value_size,
            self.max_entries)


class ProgramSpec:
    """A program as the object declares it: ``autoload``, ``type`` and
    ``expected_attach_type`` may be changed before load."""

    def __init__(self, desc):
        self.name = desc["name"]
        self.section = desc["section"]
        self.type = _as_enum(ProgramType, desc["type"])
        self.expected_attach_type = desc["expected_attach_type"]
        self.insn_count = desc["insn_count"]
        self.autoload = desc["autoload"]

    def __repr__(self):
        return "<ProgramSpec %r section=%r %s insns=%d>" % (
            self.name, self.section, getattr(self.type, "name", self.type),
            self.insn_count)


def _type_name(t):
    return getattr(t, "name", "type %s" % t)


def _as_enum(cls, v):
    try:
        return cls(v)
    except ValueError:
        return v


class _Var:
    __slots__ = ("name", "section", "offset", "codec", "readonly")

    def __init__(self, name, section, offset, codec):
        self.name = name
        self.section = section
        self.offset = offset
        self.codec = codec
        self.readonly = section.startswith(".rodata")


class Globals(collections.abc.MutableMapping):
    """Global variables by name (``.data``, ``.rodata``, ``.bss``), typed
    from BTF. Assignment is type-checked; the set of names is fixed. On a
    spec the values are the initial image; on a loaded object they are the
    live, mmaped memory (``.rodata`` is then read-only)."""

    def __init__(self, variables, images, live):
        self._vars = variables
        self._images = images      # section -> writable buffer
        self._live = live

    def _var(self, name):
        try:
            return self._vars[name]
        except KeyError:
            raise KeyError("no global variable named %r; there are: %s" % (
                name, ", ".join(sorted(self._vars)) or "none")) from None

    def __getitem__(self, name):
        v = self._var(name)
        buf = self._images.get(v.section)
        if buf is None:
            raise BpfError(_errno.ENODEV, "read global %r" % name,
                           "section %s is not mapped" % v.section)
        return v.codec.decode(buf, v.offset)

    def __setitem__(self, name, value):
        v = self._var(name)
        if self._live and v.readonly:
            raise BpfError(_errno.EPERM, "set global %r" % name,
                           "it lives in %s, which is read-only after load; set it "
                           "on the spec before load()" % v.section)
        data = v.codec.encode(value)
        buf = self._images[v.section]
        buf[v.offset:v.offset + len(data)] = data

    def __delitem__(self, name):
        raise TypeError("global variables cannot be deleted")

    def __iter__(self):
        return iter(self._vars)

    def __len__(self):
        return len(self._vars)

    def type_of(self, name):
        """The codec of a variable."""
        return self._var(name).codec

    def section_of(self, name):
        return self._var(name).section

    def __repr__(self):
        return "<Globals %s>" % ", ".join(sorted(self._vars))


class ObjectSpec:
    """A BPF ELF object, opened but not loaded: plain data, no kernel state.

    ``programs``/``maps`` map names to ProgramSpec/MapSpec; ``globals``
    holds .data/.rodata/.bss variables; ``btf`` the parsed type info.
    ``load()`` may be called more than once; each call creates new kernel
    objects."""

    def __init__(self, data, name):
        self.name = name
        self._data = bytes(data)
        _check_btf(self._data, name)
        handle = _b.obj_open(self._data, name)
        try:
            self._btf_raw = _b.obj_btf_raw(handle)
            self._btf = None
            self._globals = None
            maps, self._init_images = {}, {}
            for m in _b.obj_maps(handle):
                d = _b.map_desc(m)
                maps[d["name"]] = MapSpec(d, self)
                if d["internal"] and d["btf_value_type_id"]:
                    init = _b.map_initial_value(m)
                    self._init_images[d["name"]] = (
                        d["btf_value_type_id"],
                        bytes(init[:]) if init is not None else bytes(d["value_size"]))
            self.maps = _Named(maps, "map")
            self.programs = _Named(((d["name"], ProgramSpec(d)) for d in
                                    map(_b.prog_desc, _b.obj_programs(handle))), "program")
        except BaseException:
            _b.obj_close(handle)
            raise
        self._handle = handle  # reused by the first load()

    @property
    def btf(self):
        """The object's BTF type model (parsed on first use), or None."""
        if self._btf is None and self._btf_raw:
            self._btf = _btf.parse(self._btf_raw)
        return self._btf

    @property
    def globals(self):
        """Global variables of .data/.rodata/.bss by name (initial values)."""
        if self._globals is None:
            images, variables = {}, {}
            btf = self.btf
            for map_name, (type_id, init) in self._init_images.items():
                sec = btf[type_id] if btf is not None else None
                if sec is None or sec.kind != _btf.Kind.DATASEC or \
                        not sec.name.startswith(_GLOBAL_SECTIONS):
                    continue
                images[sec.name] = bytearray(init)
                self.maps[map_name].section = sec.name
                for member in sec.members:
                    var = btf[member.type_id]
                    if var.kind != _btf.Kind.VAR:
                        continue
                    try:
                        codec = _codec.from_btf(btf, var.type_id)
                    except CodecError:
                        continue
                    if member.bit_offset // 8 + codec.size > len(init):
                        continue  # outside its section: corrupt BTF
                    variables[var.name] = _Var(var.name, sec.name,
                                               member.bit_offset // 8, codec)
            self._globals = Globals(variables, images, live=False)
        return self._globals

    def _codec(self, type_id, map_name, what, size):
        if not size:
            return None
        if not type_id or not self._btf_raw:
            return None
        try:
            return _codec.from_btf(self.btf, type_id)
        except CodecError as e:
            warnings.warn("map %r: %s type has no codec (%s); using bytes" % (
                map_name, what, e))
            return None

    def __repr__(self):
        return "<ObjectSpec %r programs=%s maps=%s>" % (
            self.name, list(self.programs), [m for m in self.maps if not self.maps[m].internal])

    def __del__(self):
        h = getattr(self, "_handle", None)
        if h is not None:
            self._handle = None
            _b.obj_close(h)

    def load(self):
        """Create the maps and load the programs into the kernel.

        Needs CAP_BPF (+ CAP_NET_ADMIN / CAP_PERFMON by program type).
        Raises VerifierError (with the full log) when a program is rejected
        and BpfError/BpfPermissionError for other failures; nothing is left
        in the kernel after a failure."""
        handle, self._handle = self._handle, None
        if handle is None:
            handle = _b.obj_open(self._data, self.name)
        owner = None
        try:
            maps = _b.obj_maps(handle)
            by_name = {}
            for m in maps:
                d = _b.map_desc(m)
                spec = self.maps[d["name"]]
                by_name[d["name"]] = m
                _b.map_configure(m, max_entries=spec.max_entries
                                 if spec.max_entries != d["max_entries"] else None,
                                 flags=spec.flags if spec.flags != d["flags"] else None)
                if spec._reuse is not None:
                    _b.map_reuse_fd(m, spec._reuse.fd, spec.name)
                if self._globals is not None and spec.section is not None:
                    init = _b.map_initial_value(m)
                    if init is not None:
                        init[:] = bytes(self._globals._images[spec.section])
            for p in _b.obj_programs(handle):
                d = _b.prog_desc(p)
                ps = self.programs[d["name"]]
                _b.prog_configure(
                    p, autoload=ps.autoload if ps.autoload != d["autoload"] else None,
                    type=int(ps.type) if int(ps.type) != d["type"] else None,
                    expected_attach_type=ps.expected_attach_type
                    if ps.expected_attach_type != d["expected_attach_type"] else None)
            _b.obj_load(handle, self.name)
            owner = BpfObject(self, handle, maps)
            return owner
        except BaseException:
            if owner is None:
                _b.obj_close(handle)
            raise


class BpfObject:
    """A loaded object: it owns its programs and maps; ``close()`` (or the
    ``with`` block) releases all of them. Maps and programs taken from it
    are valid until then (``clone()`` one to keep it longer)."""

    def __init__(self, spec, handle, map_ptrs):
        self._site = _creation_site()
        self.spec = spec
        self.name = spec.name
        self._handle = handle
        self._globals = None
        self._sections = {}
        maps = {}
        for m in map_ptrs:
            d = _b.map_desc(m)
            fd = _b.map_fd(m)
            if fd < 0:
                continue
            if d["internal"]:
                self._sections[d["name"]] = (fd, d["value_size"])
                continue
            maps[d["name"]] = self._map_factory(fd, d)
        progs = {}
        for p in _b.obj_programs(handle):
            d = _b.prog_desc(p)
            fd = _b.prog_fd(p)
            if fd < 0:
                continue
            progs[d["name"]] = Program(fd, name=d["name"], type=d["type"],
                                       section=d["section"],
                                       expected_attach_type=d["expected_attach_type"],
                                       owns_fd=False)
        self.maps = _Named(maps, "map", lazy=True)
        self.programs = _Named(progs, "program")

    def _map_factory(self, fd, desc):
        def build():
            if self._handle is None:
                raise ValueError("BPF object %r is closed" % self.name)
            ms = self.spec.maps[desc["name"]]
            return Map._wrap(fd, desc, ms.key_type, ms.value_type, owns_fd=False,
                             btf=self.spec._btf)
        return build

    @property
    def globals(self):
        """Live global variables: .data/.bss read and written through the
        kernel's mmap of the map (.rodata read-only)."""
        if self._globals is None:
            if self._handle is None:
                raise ValueError("BPF object %r is closed" % self.name)
            spec_globals = self.spec.globals
            images = {}
            for map_name, (fd, size) in self._sections.items():
                sec = self.spec.maps[map_name].section
                if sec is not None:
                    images[sec] = _mmap_section(fd, size, sec)
            self._globals = Globals(spec_globals._vars, images, live=True)
        return self._globals

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Unload: close every map and program fd of this object (pinned
        objects and attached links keep theirs alive in the kernel)."""
        h, self._handle = self._handle, None
        if h is None:
            return
        for m in self.maps.built():
            if getattr(m, "_consumer", None) is not None:
                m._consumer.close()
                m._consumer = None
            m._fd = -1
        for p in self.programs.values():
            p._fd = -1
        if self._globals is not None:
            for img in self._globals._images.values():
                img.close()
            self._globals._images.clear()
        _b.obj_close(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            warnings.warn("BPF object %r was never closed (loaded at %s)" % (
                self.name, self._site), ResourceWarning, source=self)
            self.close()

    def __repr__(self):
        return "<BpfObject %r %s programs=%s maps=%s>" % (
            self.name, "closed" if self.closed else "loaded", list(self.programs),
            list(self.maps))


def _elf_section(data, want):
    """The bytes of section ``want`` of a little-endian ELF64 image, or None."""
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        entsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if entsize < 64:
            return None
        strtab = struct.unpack_from("<IIQQQQ", data, shoff + shstrndx * entsize)[4]
        for i in range(shnum):
            name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * entsize)
            end = data.find(b"\0", strtab + name)
            if data[strtab + name:end] == want and off + size <= len(data):
                return data[off:off + size]
    except struct.error:
        return None
    return None


def _check_btf(data, name):
    # libbpf 1.1 follows BTF type ids without range checks (a corrupt .BTF
    # crashes the process at open); validate with the pure-Python parser first
    raw = _elf_section(data, b".BTF")
    if raw is not None:
        try:
            _btf.parse(raw)
        except ObjectFormatError as e:
            raise ObjectFormatError(_errno.EINVAL, "open BPF object %r" % name,
                                    "its .BTF section is corrupt (%s)" % e) from None


def _mmap_section(fd, size, section):
    # libbpf 1.1 keeps a private copy of .data/.bss after load unless the
    # object is a skeleton, so map the kernel's array ourselves (the map is
    # BPF_F_MMAPABLE; .rodata is frozen and can only be mapped read-only).
    readonly = section.startswith(".rodata")
    prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
    length = max(size, 1)
    return mmap.mmap(fd, length, mmap.MAP_SHARED, prot)


def open(source, name=None):
    """Read a BPF ELF object (a path, or the bytes of one) into an
    ObjectSpec. No syscalls. Raises ObjectFormatError for anything that is
    not a BPF object and FileNotFoundError for a missing path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "object"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with builtins.open(path, "rb") as f:
            data = f.read()
        base = os.path.basename(path)
        name = name or base.split(".")[0] or "object"
    else:
        raise TypeError("open() takes a path or the bytes of an ELF object, got %s"
                        % type(source).__name__)
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ObjectFormatError(_errno.ENOEXEC, "open BPF object %r" % name,
                                "not an ELF file (expected a clang -target bpf object)")
    return ObjectSpec(data, name)


def load(source, name=None):
    """``open(source).load()``."""
    return open(source, name).load()


def bundled():
    """Names of the BPF objects shipped inside the package."""
    d = importlib.resources.files("pybpfnet") / "bpf"
    try:
        return sorted(p.name[:-len(".bpf.o")] for p in d.iterdir()
                      if p.name.endswith(".bpf.o"))
    except FileNotFoundError:
        return []


def open_bundled(name):
    """The ObjectSpec of a BPF object shipped inside the package."""
    path = importlib.resources.files("pybpfnet") / "bpf" / (name + ".bpf.o")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError("no bundled BPF object %r; bundled: %s" % (
            name, ", ".join(bundled()) or "none")) from None
    return ObjectSpec(data, name)


def load_bundled(name):
    """Load a BPF object shipped inside the package (see ``bundled()``)."""
    return open_bundled(name).load()
