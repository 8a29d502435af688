"""Names and numbers shared with the BPF side of connection tracking
(csrc/bpf/include/pybn_ct_structs.h, pybn_ct_maps.h). Struct layouts are
not repeated here: they come from the object's BTF."""

import enum

OBJECT = "conntrack"                 # the bundled standalone tracker

# maps
ESTABLISHED = "ct_established"
EMBRYONIC = "ct_embryonic"
ALIAS = "ct_alias"                   # only with PYBN_CT_NAT
EVENTS = "ct_events"
STATS = "ct_stats"
TABLES = (ESTABLISHED, EMBRYONIC)    # indexed by Table

# programs
PROG_TC = "ct_tc"
PROG_XDP = "ct_xdp"
PROG_REAP = "ct_reap"
PROG_COUNT = "ct_count_elems"
PROG_CLOCK = "ct_clock"

# globals
CONFIG = "ct_cfg"
REAP_BUF = "ct_reap_buf"
REAP_N = "ct_reap_n"
REAP_NOW = "ct_reap_now"
REAP_DELETED = "ct_reap_deleted"
COUNT = "ct_count"
LAYOUT_EVENT = "ct_layout_event"
LAYOUT_REAP_REQ = "ct_layout_reap_req"

REAP_BATCH = 4096                    # PYBN_CT_REAP_BATCH
ICMP_PROTOS = (1, 58)


class CtState(enum.IntEnum):
    """State of a tracked connection. TCP states are numbered as the
    kernel's ``enum tcp_conntrack`` (nf_conntrack); UDP and ICMP use
    UNREPLIED, REPLIED and (UDP only) ASSURED."""
    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9
    UNREPLIED = 10
    REPLIED = 11
    ASSURED = 12


class CtStatus(enum.IntFlag):
    SEEN_REPLY = 0x01
    ASSURED = 0x02
    SIMOPEN = 0x04
    NAT = 0x08


class TcpDirFlags(enum.IntFlag):
    WSCALE = 0x01
    SACK_PERM = 0x02
    CLOSE_INIT = 0x04
    LIBERAL = 0x08
    DATA_UNACK = 0x10


class Table(enum.IntEnum):
    ESTABLISHED = 0
    EMBRYONIC = 1


class Verdict(enum.IntEnum):
    """What ct_process() says about a packet (nf_conntrack's ctstate)."""
    NEW = 1
    ESTABLISHED = 2
    INVALID = 3
    UNTRACKED = 4


class EventType(enum.IntEnum):
    NEW = 1
    UPDATE = 2
    DESTROY = 3


class Reason(enum.IntEnum):
    """Why a connection was destroyed."""
    NONE = 0
    TIMEOUT = 1      # swept after its timeout
    EXPIRED = 2      # a packet found it expired
    RESET = 3        # RST before any reply
    REOPEN = 4       # a new SYN on a closing connection
    DELETE = 5       # deleted from user space
    FLUSH = 6


# ct_config.timeout_ms slots, in order (enum ct_timeout)
TIMEOUT_SLOTS = ("syn_sent", "syn_recv", "established", "fin_wait", "close_wait",
                 "last_ack", "time_wait", "close", "syn_sent2", "unacknowledged",
                 "udp", "udp_stream", "icmp")
EVMASK_ALL = (1 << EventType.NEW) | (1 << EventType.UPDATE) | (1 << EventType.DESTROY)

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}
