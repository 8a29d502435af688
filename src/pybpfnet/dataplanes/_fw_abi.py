"""What the firewall's BPF object publishes about itself: limits, class
layout and enums (``fw_abi``, ``fw_layout_enums``) and the layouts of the
values user space encodes (``fw_layout_*``), all read from the bundled
object's BTF and .rodata -- no syscalls, no privileges."""

import functools

import attrs

from pybpfnet._object import open_bundled

OBJECT = "firewall"

# Map and program names (the BPF side defines them in fw_maps.h and
# firewall.bpf.c).
MAP_LPM = "fw_lpm"
MAP_PREFIXES = "fw_prefixes"
MAP_CLASSES = "fw_classes"
MAP_RULES = "fw_rules"
MAP_COUNTERS = "fw_counters"
MAP_STATE = "fw_state"
MAP_BUCKETS = "fw_buckets"
MAP_EVENTS = "fw_events"
MAP_BARRIER = "fw_barrier"
PINNED_MAPS = (MAP_STATE, MAP_LPM, MAP_PREFIXES, MAP_CLASSES, MAP_RULES, MAP_COUNTERS,
               MAP_BUCKETS, MAP_EVENTS, MAP_BARRIER)
#: created by user space: the pinned firewall's description (JSON)
MAP_CONFIG = "fw_config"
PROG_XDP = "fw_xdp"
PROG_TC = {"ingress": "fw_tc_ingress", "egress": "fw_tc_egress"}


@attrs.frozen
class Abi:
    """Limits, class ids and enum values of the BPF engine."""

    max_rules: int
    max_count_rules: int
    max_vlans: int
    max_ext: int
    lpm_entries: int
    port_index: int
    max_classes: int
    class_l4any: int
    class_any: int
    class_pa: int
    class_portidx: int
    port_ids: int
    class_ports: int
    pa_tcp: int
    pa_icmp: int
    pa_icmp6: int
    pa_slots: int
    cnt_count: int
    cnt_reason: int
    cnt_entries: int
    nreasons: int
    nevents: int
    hash_lengths: int
    enums: dict
    layouts: dict

    def enum(self, kind, name):
        """The value of enumerator ``name`` of ``enum fw_<kind>``."""
        return self.enums[kind][name]


@functools.lru_cache(maxsize=None)
def abi():
    """The firewall object's ABI (cached; reads the bundled ELF once)."""
    spec = open_bundled(OBJECT)
    g = spec.globals
    numbers = g["fw_abi"]._asdict()
    enums = {}
    ecodec = g.type_of("fw_layout_enums")
    for name, field in zip(ecodec.field_names, ecodec.fields):
        enums[name] = {m.name: int(m) for m in field.codec.py_type}
    layouts = {name[len("fw_layout_"):]: g.type_of(name) for name in g
               if name.startswith("fw_layout_") and name != "fw_layout_enums"}
    return Abi(enums=enums, layouts=layouts, **numbers)
