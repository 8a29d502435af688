"""Generate docs/api.md from the docstrings of pybpfnet's public API.

    python docs/gen_api.py          # rewrite docs/api.md
    python docs/gen_api.py --check  # exit 1 if docs/api.md is stale (the suite runs this)
"""

import inspect
import pathlib
import sys

import pybpfnet

OUT = pathlib.Path(__file__).with_name("api.md")
MODULES = ["pybpfnet"]
EXTRA = ["pybpfnet.testing", "pybpfnet.netlab", "pybpfnet.packet", "pybpfnet.dataplanes.firewall", "pybpfnet.dataplanes.conntrack",
         "pybpfnet.dataplanes.flowmon", "pybpfnet.dataplanes.l7", "pybpfnet.dataplanes.resolver",
         "pybpfnet.dataplanes.flow_export", "pybpfnet.dataplanes.flow_top",
         "pybpfnet.dataplanes.capture", "pybpfnet.dataplanes.maglev",
         "pybpfnet.dataplanes.lb"]


def _sig(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj):
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _private_function(member):
    fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
    return getattr(fn, "__name__", "").startswith("_")


def _own_vars(cls):
    """vars(cls) with what it inherits from private (``_``-named) bases:
    their public members are part of ``cls``'s API (a public name bound to
    a private function, such as a refused operation, is not). The MRO
    decides which definition a name documents."""
    found = dict(vars(cls))
    for klass in cls.__mro__[1:]:
        if klass.__name__.startswith("_"):
            for name, member in vars(klass).items():
                if name not in found and not _private_function(member):
                    found[name] = member
    return found


def _members(cls):
    for name, member in sorted(_own_vars(cls).items()):
        if name.startswith("_") and name not in ("__init__",):
            continue
        if isinstance(member, property):
            yield name, None, member
        elif inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
            fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            yield name, fn, member


def render_module(modname):
    import importlib
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        return []
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    out = ["## `%s`" % modname, ""]
    doc = _doc(mod)
    if doc:
        out += [doc, ""]
    for name in names:
        obj = getattr(mod, name, None)
        if obj is None or name.startswith("__"):
            continue
        qual = "%s.%s" % (modname, name)
        if inspect.isclass(obj):
            if issubclass(obj, BaseException):
                out += ["### exception `%s`" % qual, "", _doc(obj) or "", ""]
                continue
            import enum
            if issubclass(obj, enum.Enum):
                members = ", ".join(m.name for m in obj)
                out += ["### enum `%s`" % qual, "", _doc(obj) or "", "",
                        "Members: %s" % members, ""]
                continue
            out += ["### class `%s%s`" % (qual, _sig(obj)), "", _doc(obj), ""]
            for mname, fn, raw in _members(obj):
                if mname == "__init__":
                    continue
                if fn is None:
                    d = _doc(raw)
                    out += ["- `%s` (property)%s" % (mname, ": " + d.split("\n")[0] if d else "")]
                else:
                    d = _doc(fn)
                    kind = "classmethod " if isinstance(raw, classmethod) else ""
                    out += ["- %s`%s%s`%s" % (kind, mname, _sig(fn),
                                             ": " + d.split("\n\n")[0].replace("\n", " ")
                                             if d else "")]
            out += [""]
        elif callable(obj):
            out += ["### `%s%s`" % (qual, _sig(obj)), "", _doc(obj), ""]
    return out


def render():
    lines = ["# API reference", "",
             "Generated from docstrings by `docs/gen_api.py`; the test suite fails when "
             "this page is stale. Low-level modules (`pybpfnet._binding`) are not "
             "public API.", ""]
    for m in MODULES + EXTRA:
        lines += render_module(m)
    text = "\n".join(lines).rstrip() + "\n"
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def main(argv):
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api.md is stale: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print("wrote %s" % OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
