"""Typed Python modules generated from an object's BTF (``pybpfnet stubs``).

What bpf2go does for Go: one ``NamedTuple`` class per struct/union used by a
map or a global variable, ``IntEnum`` classes for enums, and a typed wrapper
class giving attribute access to the object's maps (as ``Map[K, V]``),
programs and globals, so IDEs and type checkers know every type. Values
decoded at run time are pybpfnet's own classes with the same fields; the
generated classes encode correctly because encoding accepts any tuple in
field order.
"""

import re

from pybpfnet import _codec
from pybpfnet._codec import _identifier as _ident

__all__ = ["generate"]


def _camel(name):
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[\W_]+", name) if p) or "Object"


class _Gen:
    def __init__(self):
        self.classes = {}   # codec id -> (class name, source)
        self.order = []
        self.names = set()

    def _name_for(self, base):
        name = _ident(base)
        n, i = name, 2
        while n in self.names:
            n = "%s_%d" % (name, i)
            i += 1
        self.names.add(n)
        return n

    def annotation(self, codec):
        if codec is None:
            return "bytes"
        if isinstance(codec, _codec.StructCodec):
            return self.struct(codec)
        if isinstance(codec, _codec.EnumCodec) and codec.py_type is not None:
            return self.enum(codec)
        if isinstance(codec, _codec.ArrayCodec):
            return "Tuple[%s, ...]" % self.annotation(codec.elem)
        if isinstance(codec, _codec.BytesCodec):
            return "bytes"
        if isinstance(codec, _codec.FloatCodec):
            return "float"
        if isinstance(codec, _codec.IntCodec) and codec.is_bool:
            return "bool"
        return "int"

    def enum(self, codec):
        key = id(codec)
        if key in self.classes:
            return self.classes[key][0]
        name = self._name_for(codec.py_type.__name__)
        self.classes[key] = (name, None)
        lines = ["class %s(IntEnum):" % name,
                 '    """enum %s"""' % codec.py_type.__name__]
        for m in codec.py_type:
            lines.append("    %s = %d" % (m.name, m.value))
        self.classes[key] = (name, "\n".join(lines))
        self.order.append(key)
        return name

    def struct(self, codec):
        key = id(codec)
        if key in self.classes:
            return self.classes[key][0]
        name = self._name_for(codec.py_type.__name__)
        self.classes[key] = (name, None)
        fields = []
        for fname, f in zip(codec.field_names, codec.fields):
            ann = self.annotation(f.codec)
            fields.append("    %s: %s  # %s%s, offset %d" % (
                fname, ann, f.codec.c_type, ":%d" % f.bit_size if f.bit_size else "",
                f.offset))
        lines = ["class %s(NamedTuple):" % name,
                 '    """%s (%d bytes)"""' % (codec.c_type, codec.size)] + (
            fields or ["    pass"])
        self.classes[key] = (name, "\n".join(lines))
        self.order.append(key)
        return name


def generate(spec, module_doc=None):
    """Python source of a typed module for ``spec`` (an ObjectSpec)."""
    from pybpfnet._map import _CLASSES, Map
    g = _Gen()
    map_lines, prog_lines, glob_lines = [], [], []
    for name in spec.maps:
        ms = spec.maps[name]
        if ms.internal:
            continue
        cls = _CLASSES.get(ms.type, Map).__name__
        if ms.key_type is None and ms.value_type is None:
            map_lines.append("        self.%s: pybpfnet.%s = obj.maps[%r]" % (
                _ident(name), cls, name))
            continue
        k = g.annotation(ms.key_type) if ms.key_size else "None"
        v = g.annotation(ms.value_type) if ms.value_size else "None"
        if ms.type in (5, 6, 10):  # per-CPU: values are lists
            v = "List[%s]" % v
        map_lines.append("        self.%s: pybpfnet.%s[%s, %s] = obj.maps[%r]" % (
            _ident(name), cls, k, v, name))
    for name in spec.programs:
        prog_lines.append("        self.%s: pybpfnet.Program = obj.programs[%r]" % (
            _ident(name), name))
    for name in spec.globals:
        codec = spec.globals.type_of(name)
        ann = g.annotation(codec)
        ro = spec.globals.section_of(name).startswith(".rodata")
        glob_lines.append(
            "    @property\n"
            "    def %s(self) -> %s:\n"
            '        """%s %s in %s%s."""\n'
            "        return self.obj.globals[%r]\n" % (
                _ident(name), ann, codec.c_type, name, spec.globals.section_of(name),
                " (read-only after load)" if ro else "", name))
        if not ro:
            glob_lines.append(
                "    @%s.setter\n"
                "    def %s(self, value: %s) -> None:\n"
                "        self.obj.globals[%r] = value\n" % (
                    _ident(name), _ident(name), ann, name))
    wrapper = _camel(spec.name)
    out = ['"""%s"""' % (module_doc or "Typed access to the BPF object %r, generated by "
                         "`pybpfnet stubs`. Do not edit." % spec.name),
           "",
           "from enum import IntEnum",
           "from typing import List, NamedTuple, Tuple",
           "",
           "import pybpfnet",
           "",
           "OBJECT_NAME = %r" % spec.name,
           ""]
    for key in g.order:
        out += ["", g.classes[key][1], ""]
    out += ["",
            "class %s:" % wrapper,
            '    """Typed view of a loaded %r object: maps, programs and globals '
            'as attributes."""' % spec.name,
            "",
            "    def __init__(self, obj: pybpfnet.BpfObject) -> None:",
            "        self.obj = obj"]
    out += map_lines + prog_lines
    out += [""]
    if glob_lines:
        out += [ln for block in glob_lines for ln in block.rstrip("\n").split("\n") + [""]]
    out += ["    def close(self) -> None:",
            "        self.obj.close()",
            "",
            "    def __enter__(self) -> \"%s\":" % wrapper,
            "        return self",
            "",
            "    def __exit__(self, *exc: object) -> None:",
            "        self.close()",
            ""]
    return "\n".join(out) + "\n"
