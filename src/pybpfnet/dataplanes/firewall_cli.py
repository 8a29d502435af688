"""``pybpfnet fw``: put a firewall on an interface from a TOML rule file,
show its counters, take it off.

    pybpfnet fw apply rules.toml --iface eth0 [--hook xdp|tc] [--mode auto]
    pybpfnet fw check rules.toml
    pybpfnet fw stats [--iface eth0] [--json]
    pybpfnet fw remove --iface eth0

The firewall outlives the command: its links and maps are pinned under
/sys/fs/bpf/pybpfnet/firewall/<netns>-<iface>/, and ``apply`` on an
interface that has one replaces its rule set atomically. A rule file with
an error is rejected whole (file:line: reason) and the running rule set is
left untouched. Needs root (CAP_BPF + CAP_NET_ADMIN).
"""

import argparse
import json
import os
import sys

from pybpfnet.dataplanes import _pins

PIN_ROOT = "/sys/fs/bpf/pybpfnet/firewall"

__all__ = ["add_parser", "pin_dir", "PIN_ROOT"]


def pin_dir(iface, root=PIN_ROOT):
    """Where the firewall of ``iface`` (in the calling thread's network
    namespace) is pinned."""
    return _pins.pin_dir(root, iface)


def cmd_apply(args):
    """Load a rule file and put it on an interface (atomically replacing the
    rule set of a firewall already there)."""
    from pybpfnet.dataplanes.firewall import Firewall, load_rules
    rules = load_rules(args.rules)          # a bad file stops here
    path = pin_dir(args.iface)
    if os.path.isdir(path):
        with Firewall.open_pinned(path) as fw:
            if fw.hook != args.hook:
                raise ValueError("%s runs the firewall at %s, not %s; "
                                 "`pybpfnet fw remove --iface %s` first"
                                 % (args.iface, fw.hook, args.hook, args.iface))
            fw.apply(rules)
            gen = fw.generation
        what = "replaced the rule set of"
    else:
        fw = Firewall(args.iface, rules, hook=args.hook, mode=args.mode)
        try:
            fw.pin(path)
            gen = fw.generation
        finally:
            fw.close()
        what = "attached a firewall to"
    print("%s %s (%s): %d rules, default %s, generation %d"
          % (what, args.iface, args.hook, len(rules.rules), rules.default, gen))
    return 0


def cmd_check(args):
    """Check a rule file without touching the kernel."""
    from pybpfnet.dataplanes.firewall import load_rules
    rules = load_rules(args.rules)
    for i, r in enumerate(rules.rules):
        print("%4d  %s%s" % (i, (r.name + ": ") if r.name else "", r.describe()))
    print("%s: %d rules, default %s, fragments %s, malformed %s, non_ip %s" % (
        args.rules, len(rules.rules), rules.default, rules.fragments, rules.malformed,
        rules.non_ip))
    return 0


def cmd_stats(args):
    """Per-rule counters of the pinned firewalls (a table, or --json)."""
    from pybpfnet.dataplanes.firewall import Firewall
    found = _pins.pinned(PIN_ROOT)
    if args.iface is not None:
        if args.iface not in found:
            raise FileNotFoundError("no firewall on %s (pybpfnet fw apply ... --iface %s)"
                                    % (args.iface, args.iface))
        found = {args.iface: found[args.iface]}
    out = {}
    for iface, path in found.items():
        with Firewall.open_pinned(path) as fw:
            out[iface] = (fw.hook, fw.stats())
    if args.json:
        json.dump({iface: dict(s.to_dict(), hook=hook) for iface, (hook, s) in out.items()},
                  sys.stdout, indent=2)
        print()
        return 0
    if not out:
        print("no firewalls")
    for iface, (hook, s) in out.items():
        print("%s (%s, generation %d%s)" % (iface, hook, s.generation,
                                            ", %d stale" % s.stale if s.stale else ""))
        print(s.table())
    return 0


def cmd_remove(args):
    """Detach and unload the firewall of an interface."""
    from pybpfnet.dataplanes.firewall import Firewall
    path = pin_dir(args.iface)
    if not os.path.isdir(path):
        raise FileNotFoundError("no firewall on %s" % args.iface)
    Firewall.open_pinned(path).remove()
    _pins.prune(PIN_ROOT)
    print("removed the firewall of %s" % args.iface)
    return 0


def add_parser(subparsers):
    """Add the ``fw`` command (and its subcommands) to an argparse
    subparsers object; each sets ``func`` returning an exit status."""
    fw = subparsers.add_parser("fw", help="XDP/TC firewall: apply rules, stats, remove",
                               description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = fw.add_subparsers(dest="fw_command", metavar="SUBCOMMAND")
    fw.set_defaults(func=lambda args: fw.print_help() or 2)

    a = sub.add_parser("apply", help=cmd_apply.__doc__, description=cmd_apply.__doc__)
    a.add_argument("rules", help="TOML rule file")
    a.add_argument("--iface", required=True, help="interface name")
    a.add_argument("--hook", choices=("xdp", "tc"), default="xdp",
                   help="xdp (ingress, default) or tc (ingress and egress)")
    a.add_argument("--mode", choices=("auto", "native", "generic"), default="auto",
                   help="XDP mode (default: auto)")
    a.set_defaults(func=cmd_apply)

    c = sub.add_parser("check", help=cmd_check.__doc__, description=cmd_check.__doc__)
    c.add_argument("rules", help="TOML rule file")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("stats", help=cmd_stats.__doc__, description=cmd_stats.__doc__)
    s.add_argument("--iface", help="only this interface")
    s.add_argument("--json", action="store_true", help="JSON output")
    s.set_defaults(func=cmd_stats)

    r = sub.add_parser("remove", help=cmd_remove.__doc__, description=cmd_remove.__doc__)
    r.add_argument("--iface", required=True, help="interface name")
    r.set_defaults(func=cmd_remove)
    return fw

