"""What the capture program's BPF object publishes about itself: map and
program names (defined once more in csrc/bpf/capture), the ring record
header, the config layout and the enums, read from the bundled object's
BTF -- no syscalls, no privileges."""

import functools

import attrs

from pybpfnet._object import open_bundled
from pybpfnet.dataplanes._tc_monitor import layout_enums, short

OBJECT = "capture"

MAP_CONFIG = "capture_config"
MAP_EVENTS = "capture_events"
MAP_STATS = "capture_stats"
PROG = {"ingress": "capture_ingress", "egress": "capture_egress"}
PROG_XDP = "capture_xdp"
VAR_ACTIVE = "capture_active"           # the capture_config slot in use (0 or 1)
DIRECTIONS = ("ingress", "egress")      # CAP_DIR_INGRESS = 0, CAP_DIR_EGRESS = 1


@attrs.frozen
class Abi:
    """Layouts and limits of the capture program."""

    header: object          # codec of struct cap_hdr (ring record header)
    config: object          # codec of struct cap_config (capture_config's value)
    stats: dict             # short name ("lost", ...) -> index
    fields: dict            # short name ("saddr", ...) -> enum cap_field value
    max_terms: int          # CAP_MAX_TERMS
    max_lits: int           # CAP_MAX_LITS
    max_snaplen: int        # CAP_MAX_SNAPLEN


@functools.lru_cache(maxsize=None)
def abi():
    """The capture object's ABI (cached; reads the bundled ELF once)."""
    spec = open_bundled(OBJECT)
    g = spec.globals
    enums = layout_enums(g, "capture_layout_enums")
    config = g.type_of("capture_layout_config")
    cfg_fields = dict(zip(config.field_names, config.fields))
    terms = cfg_fields["terms"].codec
    term_fields = dict(zip(terms.elem.field_names, terms.elem.fields))
    scratch = spec.maps["capture_scratch"].value_type
    header = g.type_of("capture_layout_hdr")
    return Abi(
        header=header, config=config,
        stats={short(m.name, "CAP_STAT_"): int(m) for m in enums["stat"]
               if m.name != "CAP_STAT_MAX"},
        fields={short(m.name, "CAP_F_"): int(m) for m in enums["field"]},
        max_terms=terms.n, max_lits=term_fields["lits"].codec.n,
        max_snaplen=scratch.size - header.size)
