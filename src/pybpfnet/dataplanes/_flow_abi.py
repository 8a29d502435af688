"""What the flow monitor's BPF object publishes about itself: map and
program names (defined once more in csrc/bpf/flowmon), the ring record
layout and the enums, read from the bundled object's BTF -- no syscalls,
no privileges."""

import functools

import attrs

from pybpfnet._object import open_bundled
from pybpfnet.dataplanes._flow_batch import columns_of
from pybpfnet.dataplanes._tc_monitor import layout_enums, short

OBJECT = "flowmon"

MAP_FLOWS = "flowmon_flows"
MAP_EVENTS = "flowmon_events"
MAP_STATS = "flowmon_stats"
MAP_RTT_HIST = "flowmon_rtt_hist"
MAP_SRTT_HIST = "flowmon_srtt_hist"
PROG = {"ingress": "flowmon_ingress", "egress": "flowmon_egress"}
PROG_DROP = "flowmon_drop"
PROG_SRTT = "flowmon_srtt"
PROG_SWEEP = "flowmon_sweep"
VAR_SWEEP_NOW = "flowmon_sweep_now"
VAR_SWEEP_IDLE = "flowmon_sweep_idle_ns"
VAR_SWEEP_ACTIVE = "flowmon_sweep_active_ns"
VAR_SWEEP_DEFERRED = "flowmon_sweep_deferred"
VAR_NETNS = "flowmon_netns_ino"
VAR_EXACT_CLOCK = "flowmon_exact_clock"
DIRECTIONS = ("ingress", "egress")      # FM_DIR_INGRESS = 0, FM_DIR_EGRESS = 1
# struct flow_record's members in layout order, padding left out: the flat
# tuples FlowBatch decodes (checked against the BTF in abi())
RECORD_COLUMNS = ("saddr", "daddr", "sport", "dport", "proto", "family", "direction",
                  "ifindex", "first_ns", "last_ns", "packets", "bytes", "syn_ns", "rtt_ns",
                  "tcp_flags", "drops", "srtt_us", "reason")


@attrs.frozen
class Abi:
    """Record codec and enum values of the BPF program."""

    record: object          # codec of struct flow_record
    reasons: dict           # value -> short name ("fin", "rst", ...)
    stats: dict             # short name ("lost_records", ...) -> index
    rtt_slots: int


@functools.lru_cache(maxsize=None)
def abi():
    """The flow monitor object's ABI (cached; reads the bundled ELF once)."""
    spec = open_bundled(OBJECT)
    g = spec.globals
    enums = layout_enums(g, "flowmon_layout_enums")
    reasons = {int(m): short(m.name, "FM_REASON_") for m in enums["reason"]}
    stats = {short(m.name, "FM_STAT_"): int(m) for m in enums["stat"] if m.name != "FM_STAT_MAX"}
    record = g.type_of("flowmon_layout_record")
    if columns_of(record) != RECORD_COLUMNS:
        raise ValueError("flowmon object: struct flow_record has members %s, expected %s"
                         % (columns_of(record), RECORD_COLUMNS))
    return Abi(record=record, reasons=reasons, stats=stats,
               rtt_slots=spec.maps[MAP_RTT_HIST].max_entries)
