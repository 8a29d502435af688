"""What the ``flows`` and ``l7`` commands share: the poll loop, the
``--names`` resolver and the counters line. Private."""

import argparse
import sys
import time


def seconds(text):
    """argparse type: a number of seconds > 0 (the error says so)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds > 0, not %r" % text) from None
    if not v > 0:
        raise argparse.ArgumentTypeError("expected seconds > 0, not %s" % text)
    return v


def command_parser(subparsers, name, help, doc):
    """The ``name`` subcommand's parser with what both commands take:
    interfaces, ``--direction``, ``--json``, ``--seconds`` and ``--names``."""
    p = subparsers.add_parser(name, help=help, description=doc.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("iface", nargs="+", help="interface name(s)")
    p.add_argument("--direction", choices=("both", "ingress", "egress"), default="both")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--seconds", type=seconds, metavar="S",
                   help="stop after this long (default: Ctrl-C)")
    p.add_argument("--names", metavar="FILE",
                   help="name addresses from FILE ('CIDR-or-IP name' lines or TOML [names])")
    return p


def directions(args):
    """The monitor's ``directions`` of ``--direction``."""
    d = getattr(args, "direction", "both")
    return ("ingress", "egress") if d == "both" else (d,)


def resolver(path):
    """A StaticResolver of ``--names FILE`` (None without one). Raises
    FileNotFoundError, or ValueError naming the bad ``file:line``."""
    if path is None:
        return None
    from pybpfnet.dataplanes.resolver import StaticResolver
    return StaticResolver.from_file(path)


def printer(out, json_lines):
    """An emit function writing a record's JSON line or ``str()`` line to ``out``."""
    if json_lines:
        return lambda r: out.write(r.to_json() + "\n")
    return lambda r: out.write(str(r) + "\n")


def poll_until(monitors, emit, out, seconds):
    """``emit`` every record the monitors' ``poll()`` return until
    ``seconds`` passed (None: until Ctrl-C, which ends the loop quietly),
    then every record their ``flush()`` returns. ``monitors``: one monitor
    or a sequence of them (polled in turn, the wait shared)."""
    if not isinstance(monitors, (list, tuple)):
        monitors = (monitors,)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            for monitor in monitors:
                for r in monitor.poll(timeout=left / len(monitors)):
                    emit(r)
            out.flush()
    except KeyboardInterrupt:
        pass
    for monitor in monitors:
        for r in monitor.flush():
            emit(r)


def print_stats(what, stats):
    """``what: name=value, ...`` of a stats object's ``to_dict()`` on stderr."""
    print("%s: %s" % (what, ", ".join("%s=%d" % kv for kv in stats.to_dict().items())),
          file=sys.stderr)
