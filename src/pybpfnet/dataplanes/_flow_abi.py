"""What the flow monitor's BPF object publishes about itself: map and
program names (defined once more in csrc/bpf/flowmon), the ring record
layout and the enums, read from the bundled object's BTF -- no syscalls,
no privileges."""

import functools

import attrs

from pybpfnet._object import open_bundled

OBJECT = "flowmon"

MAP_FLOWS = "flowmon_flows"
MAP_EVENTS = "flowmon_events"
MAP_STATS = "flowmon_stats"
MAP_RTT_HIST = "flowmon_rtt_hist"
PROG = {"ingress": "flowmon_ingress", "egress": "flowmon_egress"}
PROG_DROP = "flowmon_drop"
PROG_SWEEP = "flowmon_sweep"
VAR_SWEEP_NOW = "flowmon_sweep_now"
VAR_SWEEP_IDLE = "flowmon_sweep_idle_ns"
VAR_SWEEP_ACTIVE = "flowmon_sweep_active_ns"
VAR_SWEEP_DEFERRED = "flowmon_sweep_deferred"
VAR_NETNS = "flowmon_netns_ino"
DIRECTIONS = ("ingress", "egress")      # FM_DIR_INGRESS = 0, FM_DIR_EGRESS = 1


@attrs.frozen
class Abi:
    """Record codec and enum values of the BPF program."""

    record: object          # codec of struct flow_record
    reasons: dict           # value -> short name ("fin", "rst", ...)
    stats: dict             # short name ("lost_records", ...) -> index
    rtt_slots: int


def _short(name, prefix):
    return name[len(prefix):].lower()


@functools.lru_cache(maxsize=None)
def abi():
    """The flow monitor object's ABI (cached; reads the bundled ELF once)."""
    spec = open_bundled(OBJECT)
    g = spec.globals
    ecodec = g.type_of("flowmon_layout_enums")
    enums = {name: field.codec.py_type for name, field in zip(ecodec.field_names, ecodec.fields)}
    reasons = {int(m): _short(m.name, "FM_REASON_") for m in enums["reason"]}
    stats = {_short(m.name, "FM_STAT_"): int(m) for m in enums["stat"] if m.name != "FM_STAT_MAX"}
    return Abi(record=g.type_of("flowmon_layout_record"), reasons=reasons, stats=stats,
               rtt_slots=spec.maps[MAP_RTT_HIST].max_entries)
