"""What the L7 sampler's BPF object publishes about itself: map, program
and variable names (defined once more in csrc/bpf/l7), the ring sample
layout and the enums, read from the bundled object's BTF -- no syscalls,
no privileges."""

import functools

import attrs

from pybpfnet._object import open_bundled
from pybpfnet.dataplanes._tc_monitor import layout_enums, short

OBJECT = "l7"

MAP_PORTS = "l7_ports"
MAP_EVENTS = "l7_events"
MAP_STATS = "l7_stats"
MAP_H2 = "l7_h2_conns"
PROG = {"ingress": "l7_ingress", "egress": "l7_egress"}
VAR_SNAPLEN = "l7_snaplen"
VAR_H2_ANY = "l7_h2_any_port"
DIRECTIONS = ("ingress", "egress")      # L7_DIR_INGRESS = 0, L7_DIR_EGRESS = 1


@attrs.frozen
class Abi:
    """Sample codec and enum values of the BPF program."""

    sample: object          # codec of struct l7_sample
    kinds: dict             # short name ("dns", "http", "h2") -> bit
    stats: dict             # short name ("sampled", ...) -> index
    max_snap: int           # size of l7_sample.data


@functools.lru_cache(maxsize=None)
def abi():
    """The L7 sampler object's ABI (cached; reads the bundled ELF once)."""
    spec = open_bundled(OBJECT)
    g = spec.globals
    enums = layout_enums(g, "l7_layout_enums")
    kinds = {short(m.name, "L7_KIND_"): int(m) for m in enums["kind"]}
    stats = {short(m.name, "L7_STAT_"): int(m) for m in enums["stat"]
             if m.name != "L7_STAT_MAX"}
    sample = g.type_of("l7_layout_sample")
    data = sample.fields[sample.field_names.index("data")]
    return Abi(sample=sample, kinds=kinds, stats=stats, max_snap=data.codec.size)
