"""The ``pybpfnet`` command line."""

import argparse
import os
import sys

from pybpfnet._version import __version__


def _open_spec(source):
    import pybpfnet
    if os.path.exists(source) or os.sep in source or source.endswith(".o"):
        return pybpfnet.open(source)
    return pybpfnet.open_bundled(source)


def cmd_stubs(args):
    """Write a typed Python module for an object's maps, programs and globals."""
    from pybpfnet._stubs import generate
    spec = _open_spec(args.object)
    src = generate(spec)
    if args.output in (None, "-"):
        sys.stdout.write(src)
    else:
        with open(args.output, "w") as f:
            f.write(src)
        print("wrote %s (%d lines)" % (args.output, src.count("\n")), file=sys.stderr)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="pybpfnet", description=__doc__)
    p.add_argument("--version", action="version", version="pybpfnet " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("stubs", help=cmd_stubs.__doc__, description=cmd_stubs.__doc__)
    s.add_argument("object", help="path of a .bpf.o, or the name of a bundled object")
    s.add_argument("-o", "--output", help="output .py/.pyi file (default: stdout)")
    s.set_defaults(func=cmd_stubs)
    from pybpfnet.dataplanes import conntrack_cli, firewall_cli, flowmon_cli, l7_cli
    from pybpfnet.dataplanes import flow_views_cli
    from pybpfnet.dataplanes import capture_cli
    from pybpfnet.dataplanes import lb_cli
    for plane in (firewall_cli, conntrack_cli, flowmon_cli, l7_cli, flow_views_cli,
                  capture_cli, lb_cli):
        plane.add_parser(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError) as e:
        print("pybpfnet %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
