"""Names and constants of the load balancer's BPF objects (csrc/bpf/lb):
map and program names in one place, the enums (checked against the
object's BTF by :func:`check`), limits and defaults."""

import enum
import functools

from pybpfnet._object import open_bundled

OBJECT = "lb"
DECAP_OBJECT = "lb_decap"

PROG_XDP = "lb_xdp"
PROG_XDP_CT = "lb_xdp_ct"      # the same with NAT through the connection tracker
PROG_DECAP_XDP = "lb_decap_xdp"
PROG_DECAP_TC = "lb_decap_tc"

MAP_SERVICES = "lb_services"
MAP_SVC = "lb_svc"
MAP_VIP_ADDRS = "lb_vip_addrs"
MAP_BACKENDS = "lb_backends"
MAP_TABLES = "lb_tables"
MAP_FLOWS = "lb_flows"
MAP_CONFIG = "lb_config"
MAP_SVC_COUNTERS = "lb_svc_counters"
MAP_BE_COUNTERS = "lb_be_counters"
MAP_STATS = "lb_stats"
MAP_BE_ADDRS = "lb_be_addrs"   # backend address -> number of backends with it
MAP_CT_PEERS = "lb_ct_peers"   # tracked NAT: ct key -> backend id, service, client MAC
GLOBAL_NAT_CT = "lb_nat_ct"    # .rodata: 1 = NAT services through the tracker
#: LbDataplane(nat_tracking=...)
NAT_TRACKING = ("lru", "conntrack")

MAP_DECAP_ADDRS = "lb_decap_addrs"
MAP_DECAP_CONFIG = "lb_decap_config"
MAP_DECAP_STATS = "lb_decap_stats"

#: lb_consts.h
MAX_SERVICES = 256
MAX_BACKENDS = 4096
MAX_FLOWS = 65536
MAX_VIP_ADDRS = 1024
TABLE_HDR = 2             # inner table: [0] = M, [1] = generation, then M backend ids
EMPTY = 0xFFFFFFFF        # an empty table slot
GUE_PORT = 6080
DEFAULT_MTU = 1500
TTL = 64
F_SRC_HASH = 0x01
FLOW_FWD = 1              # lb_flows entry: client -> VIP, the flow's backend
FLOW_REV = 2              # lb_flows entry: NAT reply backend -> client
#: BPF_F_INNER_MAP (include/uapi/linux/bpf.h): inner maps of varying size
BPF_F_INNER_MAP = 0x1000
#: the largest table (slots) accepted
MAX_TABLE_SIZE = 16_777_213

#: ICMP quotes in the too-big replies: the IP header and 8 bytes
ICMP4_QUOTE = 28
ICMP6_QUOTE = 48


def _parse(cls, value):
    """The member of the IntEnum ``cls`` that ``value`` is or names (its
    name in any case, or its value; not a bool); None when none."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return cls(value)
        except ValueError:
            return None
    return None


class Mode(enum.IntEnum):
    """Forwarding mode of a service (enum lb_mode)."""

    NAT = 0     #: DNAT to the backend; replies come back through the LB
    IPIP = 1    #: DSR, IP-in-IP (outer family: the backend's)
    GUE = 2     #: DSR, outer IP / UDP / inner IP (GUE variant 1)
    L2 = 3      #: DSR, destination MAC rewrite only

    def __str__(self):
        return self.name.lower()

    @classmethod
    def parse(cls, value):
        """A Mode from a Mode, its value or its name ("nat", "ipip", "gue", "l2")."""
        mode = _parse(cls, value)
        if mode is None:
            raise ValueError("mode must be one of %s, got %r"
                             % (", ".join(str(m) for m in cls), value))
        return mode


class Proto(enum.IntEnum):
    """Service protocol."""

    TCP = 6
    UDP = 17

    def __str__(self):
        return self.name.lower()

    @classmethod
    def parse(cls, value):
        """A Proto from a Proto, 6/17 or "tcp"/"udp"."""
        proto = _parse(cls, value)
        if proto is None:
            raise ValueError("protocol must be 'tcp' or 'udp', got %r" % (value,))
        return proto


class DropReason(enum.IntEnum):
    """Why the data plane dropped a packet (enum lb_drop)."""

    MALFORMED = 0     #: to a VIP address, headers truncated or inconsistent
    FRAGMENT = 1      #: to a VIP address, an IP fragment
    UNSUPPORTED = 2   #: to a VIP address, IPv4 options or IPv6 extension headers
    NO_BACKEND = 3    #: no table, an empty slot, or a deleted backend
    TOO_BIG = 4       #: encapsulated length over the MTU and IPv4 DF clear
    FAMILY = 5        #: NAT across families / no outer source of the backend's family
    ADJUST = 6        #: the kernel refused to resize the frame
    INVALID = 7       #: tracked NAT: the connection tracker judged the packet invalid

    def __str__(self):
        return self.name.lower()


@functools.lru_cache(maxsize=None)
def check():
    """Compare the enums above with the bundled object's BTF; raises
    RuntimeError naming the first difference (a build out of step)."""
    codec = open_bundled(OBJECT).globals.type_of("lb_layout_enums")
    enums = {name: {m.name: int(m) for m in field.codec.py_type}
             for name, field in zip(codec.field_names, codec.fields)}
    for prefix, kind, cls in (("LB_M_", "mode", Mode), ("LB_D_", "drop", DropReason)):
        for member in cls:
            got = enums[kind].get(prefix + member.name)
            if got != int(member):
                raise RuntimeError("lb object: %s%s is %r, _lb_abi says %d"
                                   % (prefix, member.name, got, int(member)))
    return True
