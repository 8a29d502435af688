"""Pure-Python reference model of the connection tracker.

It does with a frame what csrc/bpf/include/pybn_conntrack.h (and the
headers it includes) does, written independently from the same rules:
the tests feed the same packets to the kernel program (BPF_PROG_TEST_RUN)
and to this model and compare every entry, counter and event after every
packet. No privileges, no kernel.

Time is the caller's: ``process(frame, now)`` with ``now`` in nanoseconds.
"""

import struct

import attrs

from pybpfnet.dataplanes._ct_abi import (CtState, CtStatus, EventType, Reason, Table,
                                        TcpDirFlags, Verdict, TIMEOUT_SLOTS, EVMASK_ALL)

M32 = 0xFFFFFFFF

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (1 << i for i in range(8))
# packet classes
I_SYN, I_SYNACK, I_FIN, I_ACK, I_RST, I_NONE = range(6)
ORIG, REPLY = 0, 1
IV, IG = "IV", "IG"           # invalid, ignore

S = CtState
# Next state by (direction, state) for each class (SYN, SYN+ACK, FIN, ACK,
# RST, none): nf_conntrack's TCP transition table, as documented in
# net/netfilter/nf_conntrack_proto_tcp.c.
_NEXT = {
    ORIG: {
        S.NONE: (S.SYN_SENT, IV, IV, S.ESTABLISHED, IV, IV),
        S.SYN_SENT: (S.SYN_SENT, IV, IV, IV, S.CLOSE, IV),
        S.SYN_RECV: (IG, S.SYN_RECV, S.FIN_WAIT, S.ESTABLISHED, S.CLOSE, IV),
        S.ESTABLISHED: (IG, IV, S.FIN_WAIT, S.ESTABLISHED, S.CLOSE, IV),
        S.FIN_WAIT: (IG, IV, S.LAST_ACK, S.CLOSE_WAIT, S.CLOSE, IV),
        S.CLOSE_WAIT: (IG, IV, S.LAST_ACK, S.CLOSE_WAIT, S.CLOSE, IV),
        S.LAST_ACK: (IG, IV, S.LAST_ACK, S.TIME_WAIT, S.CLOSE, IV),
        S.TIME_WAIT: (S.SYN_SENT, IV, S.TIME_WAIT, S.TIME_WAIT, S.CLOSE, IV),
        S.CLOSE: (S.SYN_SENT, IV, S.CLOSE, S.CLOSE, S.CLOSE, IV),
        S.SYN_SENT2: (S.SYN_SENT2, S.SYN_RECV, IV, IV, S.CLOSE, IV),
    },
    REPLY: {
        S.NONE: (IV, IV, IV, IV, IV, IV),
        S.SYN_SENT: (S.SYN_SENT2, S.SYN_RECV, IV, IG, S.CLOSE, IV),
        S.SYN_RECV: (IV, IG, S.FIN_WAIT, S.SYN_RECV, S.CLOSE, IV),
        S.ESTABLISHED: (IV, IG, S.FIN_WAIT, S.ESTABLISHED, S.CLOSE, IV),
        S.FIN_WAIT: (IV, IG, S.LAST_ACK, S.CLOSE_WAIT, S.CLOSE, IV),
        S.CLOSE_WAIT: (IV, IG, S.LAST_ACK, S.CLOSE_WAIT, S.CLOSE, IV),
        S.LAST_ACK: (IV, IG, S.LAST_ACK, S.TIME_WAIT, S.CLOSE, IV),
        S.TIME_WAIT: (S.SYN_SENT, IG, S.TIME_WAIT, S.TIME_WAIT, S.CLOSE, IV),
        S.CLOSE: (IV, IG, S.CLOSE, S.CLOSE, S.CLOSE, IV),
        S.SYN_SENT2: (S.SYN_SENT2, S.SYN_RECV, IV, IG, S.CLOSE, IV),
    },
}

_VALID_FLAGS = {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG,
                ACK, ACK | URG}

# actions
A_ACCEPT, A_KEEP, A_IGNORE, A_INVALID, A_KILL, A_REOPEN = range(6)

TO = {name: i for i, name in enumerate(TIMEOUT_SLOTS)}


def before(a, b):
    d = (a - b) & M32
    return d >= 0x80000000


def after(a, b):
    return before(b, a)


def flags_valid(flags):
    return flags & (FIN | SYN | RST | ACK | URG) in _VALID_FLAGS


def tcp_index(flags):
    if flags & RST:
        return I_RST
    if flags & SYN:
        return I_SYNACK if flags & ACK else I_SYN
    if flags & FIN:
        return I_FIN
    if flags & ACK:
        return I_ACK
    return I_NONE


# -- packets ------------------------------------------------------------------
OK, UNTRACKED, INVALID = 0, 1, 2


@attrs.define
class Pkt:
    """A frame reduced to what the tracker needs (struct ct_pkt)."""
    status: int = UNTRACKED
    src: bytes = bytes(16)
    dst: bytes = bytes(16)
    sport: int = 0
    dport: int = 0
    proto: int = 0
    family: int = 0
    seq: int = 0
    ack: int = 0
    length: int = 0          # layer 3 length
    payload: int = 0
    win: int = 0
    tcp_flags: int = 0
    wscale: int = 0xFF
    sack_perm: int = 0
    has_opts: int = 0
    icmp_request: int = 0

    @property
    def tuple(self):
        return (self.src, self.dst, self.sport, self.dport, self.proto, self.family)


def tcp_options(opts):
    """(wscale or 0xFF, sack_perm) read from SYN options the way
    nf_conntrack's tcp_options() reads them."""
    wscale, sack = 0xFF, 0
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if n - i < 2:
            break
        size = opts[i + 1]
        if size < 2 or size > n - i:
            break
        if kind == 4 and size == 2:
            sack = 1
        elif kind == 3 and size == 3:
            wscale = opts[i + 2]
        i += size
    return wscale, sack


def parse(frame):
    """A frame (from its Ethernet header) as the BPF parser sees it."""
    p = Pkt()
    end = len(frame)
    if end < 14:
        return p
    proto = frame[12] << 8 | frame[13]
    off = 14
    for _ in range(2):
        if proto not in (0x8100, 0x88A8):
            break
        if off + 4 > end:
            return p
        proto = frame[off + 2] << 8 | frame[off + 3]
        off += 4
    l3 = off
    if proto == 0x0800:
        if l3 + 20 > end or frame[l3] >> 4 != 4:
            return p
        hlen = (frame[l3] & 0xF) * 4
        if hlen < 20 or l3 + hlen > end:
            return p
        tot = frame[l3 + 2] << 8 | frame[l3 + 3]
        if tot < hlen:
            return p
        if (frame[l3 + 6] << 8 | frame[l3 + 7]) & 0x1FFF:
            return p
        more_frags = frame[l3 + 6] & 0x20
        p.family = 4
        p.src = frame[l3 + 12:l3 + 16] + bytes(12)
        p.dst = frame[l3 + 16:l3 + 20] + bytes(12)
        p.length = tot
        l4proto = frame[l3 + 9]
        hdr = hlen
    elif proto == 0x86DD:
        if l3 + 40 > end or frame[l3] >> 4 != 6:
            return p
        p.family = 6
        p.src = frame[l3 + 8:l3 + 24]
        p.dst = frame[l3 + 24:l3 + 40]
        p.length = 40 + (frame[l3 + 4] << 8 | frame[l3 + 5])
        nh = frame[l3 + 6]
        hdr = 40
        more_frags = 0
        for _ in range(6):
            x = l3 + hdr
            if nh not in (0, 43, 60, 51, 44):
                break
            if x + 8 > end:
                return p
            if nh == 44:
                if (frame[x + 2] << 8 | frame[x + 3]) & 0xFFF8:
                    return p
                more_frags = frame[x + 3] & 1
                size = 8
            elif nh == 51:
                size = (frame[x + 1] + 2) * 4
            else:
                size = (frame[x + 1] + 1) * 8
            nh, hdr = frame[x], hdr + size
        if nh in (0, 43, 60, 51, 44):
            return p
        l4proto = nh
    else:
        return p

    p.proto = l4proto
    l4 = l3 + hdr
    if l4proto == 6:
        p.status = INVALID
        if l4 + 20 > end or hdr + 20 > p.length:
            return p
        doff = (frame[l4 + 12] >> 4) * 4
        if doff < 20 or hdr + doff > p.length or l4 + doff > end:
            return p
        p.sport, p.dport, p.seq, p.ack = struct.unpack_from("!HHII", frame, l4)
        p.tcp_flags = frame[l4 + 13]
        p.win = frame[l4 + 14] << 8 | frame[l4 + 15]
        p.payload = (p.length - hdr - doff) & M32
        p.has_opts = int(doff > 20)
        if p.tcp_flags & SYN and doff > 20:
            p.wscale, p.sack_perm = tcp_options(frame[l4 + 20:l4 + doff])
        p.status = OK
    elif l4proto == 17:
        p.status = INVALID
        if l4 + 8 > end or hdr + 8 > p.length:
            return p
        ulen = frame[l4 + 4] << 8 | frame[l4 + 5]
        if ulen < 8 or (ulen > p.length - hdr and not more_frags):
            return p
        p.sport, p.dport = struct.unpack_from("!HH", frame, l4)
        p.status = OK
    elif (l4proto == 1 and p.family == 4) or (l4proto == 58 and p.family == 6):
        req, rep = (8, 0) if l4proto == 1 else (128, 129)
        p.status = INVALID
        if l4 + 8 > end or hdr + 8 > p.length:
            return p
        if frame[l4] not in (req, rep):
            p.status = UNTRACKED
            return p
        p.icmp_request = int(frame[l4] == req)
        p.sport = p.dport = frame[l4 + 4] << 8 | frame[l4 + 5]
        p.status = OK
    else:
        p.status = UNTRACKED
    return p


def key_of(tup, request):
    """The connection key of a tuple (struct ct_key, zone 0)."""
    src, dst, sport, dport, proto, family = tup
    if proto in (1, 58):
        src_first = bool(request)
    else:
        src_first = (src, sport) <= (dst, dport)
    if src_first:
        return (src, dst, sport, dport, proto, family)
    return (dst, src, dport, sport, proto, family)


def invert(tup):
    src, dst, sport, dport, proto, family = tup
    return (dst, src, dport, sport, proto, family)


# -- entries ------------------------------------------------------------------
@attrs.define
class TcpDir:
    end: int = 0
    maxend: int = 0
    maxwin: int = 0
    scale: int = 0
    flags: int = 0

    def as_tuple(self):
        return (self.end, self.maxend, self.maxwin, self.scale, self.flags)


@attrs.define
class Entry:
    orig: tuple
    reply: tuple
    first_seen: int = 0
    last_seen: int = 0
    expires: int = 0
    packets: list = attrs.Factory(lambda: [0, 0])
    bytes: list = attrs.Factory(lambda: [0, 0])
    tcp: list = attrs.Factory(lambda: [TcpDir(), TcpDir()])
    state: int = 0
    status: int = 0
    tcp_flags: list = attrs.Factory(lambda: [0, 0])
    last_index: int = 0
    last_dir: int = 0

    def copy(self):
        return Entry(self.orig, self.reply, self.first_seen, self.last_seen, self.expires,
                     list(self.packets), list(self.bytes),
                     [attrs.evolve(d) for d in self.tcp], self.state, self.status,
                     list(self.tcp_flags), self.last_index, self.last_dir)


@attrs.frozen
class ModelConfig:
    """Mirror of struct ct_config (timeouts in milliseconds)."""
    timeout_ms: tuple = (120_000, 60_000, 21_600_000, 120_000, 60_000, 30_000, 120_000,
                         10_000, 120_000, 300_000, 30_000, 120_000, 30_000)
    udp_stream_ms: int = 2000
    tcp_loose: bool = True
    tcp_liberal: bool = False
    events: int = EVMASK_ALL


@attrs.frozen
class ModelEvent:
    type: int
    state: int
    old_state: int
    status: int
    reason: int
    table: int
    orig: tuple
    packets: tuple
    bytes: tuple


@attrs.frozen
class Result:
    verdict: int
    dir: int = 0
    state: int = 0
    table: int = 0
    created: bool = False
    ignored: bool = False
    destroyed: bool = False


STAT_FIELDS = ("packets", "untracked", "invalid", "ignored", "created", "promoted",
               "reopened", "reset_before_reply", "expired", "busy", "events_lost",
               "insert_failed")


class CtModel:
    """The tracker's tables, statistics and events, in Python."""

    def __init__(self, config=None):
        self.config = config or ModelConfig()
        self.tables = ({}, {})            # Table.ESTABLISHED, Table.EMBRYONIC
        self.stats = dict.fromkeys(STAT_FIELDS, 0)
        self.inserts = [0, 0]
        self.deletes = [0, 0]
        self.events = []

    # -- helpers --------------------------------------------------------
    def _timeout_ns(self, slot):
        return self.config.timeout_ms[slot] * 1_000_000

    def _emit(self, e, type, old_state, reason, table):
        if self.config.events & (1 << type):
            self.events.append(ModelEvent(type, e.state, old_state, e.status, reason, table,
                                          e.orig, tuple(e.packets), tuple(e.bytes)))

    def _destroy(self, key, table, reason):
        e = self.tables[table].pop(key)
        self._emit(e, EventType.DESTROY, e.state, reason, table)
        self.deletes[table] += 1

    def lookup(self, key):
        for table in (Table.ESTABLISHED, Table.EMBRYONIC):
            e = self.tables[table].get(key)
            if e is not None:
                return table, e
        return None, None

    # -- TCP --------------------------------------------------------------
    def _tcp_options(self, d, p):
        if not p.has_opts:
            return
        d.scale = 0
        d.flags &= TcpDirFlags.LIBERAL
        if p.sack_perm:
            d.flags |= TcpDirFlags.SACK_PERM
        if p.wscale != 0xFF:
            d.scale = min(p.wscale, 14)
            d.flags |= TcpDirFlags.WSCALE

    def _init_sender(self, s, r, p, end, dir):
        s.end = s.maxend = end
        s.maxwin = p.win or 1
        self._tcp_options(s, p)
        if dir == REPLY and not (s.flags & TcpDirFlags.WSCALE and r.flags & TcpDirFlags.WSCALE):
            s.scale = r.scale = 0

    @staticmethod
    def _end(p):
        return (p.seq + p.payload + bool(p.tcp_flags & SYN) + bool(p.tcp_flags & FIN)) & M32

    def _tcp_new(self, e, p):
        s = e.tcp[ORIG]
        end = self._end(p)
        s.end = end
        s.maxwin = p.win or 1
        if p.tcp_flags & SYN:
            s.maxend = end
            self._tcp_options(s, p)
        else:
            s.maxend = (end + s.maxwin) & M32
            s.flags = TcpDirFlags.SACK_PERM | TcpDirFlags.LIBERAL
            e.tcp[REPLY].flags = TcpDirFlags.SACK_PERM | TcpDirFlags.LIBERAL

    def _in_window(self, e, dir, old, p):
        s, r = e.tcp[dir], e.tcp[1 - dir]
        flags = p.tcp_flags
        seq, ack, win = p.seq, p.ack, p.win
        end = self._end(p)
        if s.maxwin == 0:
            if flags & SYN:
                self._init_sender(s, r, p, end, dir)
                if not flags & ACK:
                    return A_ACCEPT
            else:
                swin = (win << s.scale) & M32
                s.end = end
                s.maxwin = swin or 1
                s.maxend = (end + s.maxwin) & M32
                if r.maxwin == 0:
                    r.end = r.maxend = ack
                elif ack == (r.end + 1) & M32:
                    r.end = (r.end + 1) & M32
        elif flags & SYN and after(end, s.end) and old in (S.SYN_SENT, S.SYN_RECV):
            self._init_sender(s, r, p, end, dir)
            if dir == REPLY and not flags & ACK:
                return A_ACCEPT

        if not flags & ACK:
            ack = r.end
        elif flags & (ACK | RST) == ACK | RST and ack == 0:
            ack = r.end
        if flags & RST and seq == 0 and old == S.SYN_SENT:
            seq = end = s.end

        liberal = self.config.tcp_liberal or bool(s.flags & TcpDirFlags.LIBERAL)
        maxack = s.maxwin if s.maxwin > 66000 else 66000
        if not before(seq, (s.maxend + 1) & M32):
            return A_ACCEPT if liberal else A_INVALID
        if not before(ack, (r.end + 1) & M32):
            return A_ACCEPT if liberal else A_INVALID
        if r.maxwin and not after(end, (s.end - r.maxwin - 1) & M32):
            return A_ACCEPT if liberal else A_IGNORE
        if not after(ack, (r.end - maxack - 1) & M32):
            return A_ACCEPT if liberal else A_IGNORE

        if not flags & SYN:
            win = (win << s.scale) & M32
        if s.maxwin < win:
            s.maxwin = win
        if after(end, s.end):
            s.end = end
            s.flags |= TcpDirFlags.DATA_UNACK
        if r.maxwin != 0 and after(end, s.maxend):
            r.maxwin = (r.maxwin + end - s.maxend) & M32
        if after((ack + win) & M32, (r.maxend - 1) & M32):
            r.maxend = (ack + win) & M32
            if win == 0:
                r.maxend = (r.maxend + 1) & M32
        if ack == r.end:
            r.flags &= ~TcpDirFlags.DATA_UNACK & 0xFF
        return A_ACCEPT

    def _tcp_packet(self, e, dir, p):
        """(action, timeout slot) for a TCP packet on e."""
        old = e.state
        index = tcp_index(p.tcp_flags)
        nxt = _NEXT[dir][S(old)][index]
        if nxt == S.SYN_SENT and old >= S.TIME_WAIT:
            if ((e.tcp[0].flags | e.tcp[1].flags) & TcpDirFlags.CLOSE_INIT or
                    (e.last_dir == dir and e.last_index == I_RST)):
                return A_REOPEN, None
            nxt = IG
        if nxt == IG:
            e.last_index, e.last_dir = index, dir
            return A_IGNORE, None
        if nxt == IV:
            return A_INVALID, None
        if nxt == S.SYN_SENT2:
            e.status |= CtStatus.SIMOPEN
        if (nxt == S.SYN_RECV and dir == REPLY and index == I_ACK
                and e.status & CtStatus.SIMOPEN):
            nxt = S.ESTABLISHED
        res = self._in_window(e, dir, old, p)
        if res != A_ACCEPT:
            return res, None
        e.last_index, e.last_dir = index, dir
        e.state = nxt
        if old != nxt and nxt == S.FIN_WAIT:
            e.tcp[dir].flags |= TcpDirFlags.CLOSE_INIT
        t = nxt - 1
        tmo = self.config.timeout_ms
        if index == I_RST:
            t = TO["close"]
        elif ((e.tcp[0].flags | e.tcp[1].flags) & TcpDirFlags.DATA_UNACK
              and tmo[t] > tmo[TO["unacknowledged"]]):
            t = TO["unacknowledged"]
        if not e.status & CtStatus.SEEN_REPLY:
            if index == I_RST:
                return A_KILL, t
            if index == I_SYN and old == S.SYN_SENT:
                return A_KEEP, t
            if nxt == S.ESTABLISHED and tmo[t] > tmo[TO["unacknowledged"]]:
                t = TO["unacknowledged"]
        elif (not e.status & CtStatus.ASSURED and old in (S.SYN_RECV, S.ESTABLISHED)
              and nxt == S.ESTABLISHED):
            e.status |= CtStatus.ASSURED
        return A_ACCEPT, t

    # -- the packet path --------------------------------------------------
    def _create(self, p, key, now):
        cfg = self.config
        if p.proto == 6:
            first = _NEXT[ORIG][S.NONE][tcp_index(p.tcp_flags)]
            if not flags_valid(p.tcp_flags):
                return self._invalid()
            if first != S.SYN_SENT and not (first == S.ESTABLISHED and cfg.tcp_loose):
                return self._invalid()
        elif p.proto in (1, 58) and not p.icmp_request:
            return self._invalid()
        e = Entry(p.tuple, invert(p.tuple), first_seen=now)
        if p.proto == 6:
            self._tcp_new(e, p)
            action, t = self._tcp_packet(e, ORIG, p)
            if action != A_ACCEPT:
                return self._invalid()
        else:
            e.state = S.UNREPLIED
            t = TO["udp"] if p.proto == 17 else TO["icmp"]
        e.packets[0], e.bytes[0], e.tcp_flags[0] = 1, p.length, p.tcp_flags
        e.last_seen = now
        e.expires = now + self._timeout_ns(t)
        emb = self.tables[Table.EMBRYONIC]
        if key in emb:
            self.stats["insert_failed"] += 1
        else:
            emb[key] = e
            self.inserts[Table.EMBRYONIC] += 1
            self.stats["created"] += 1
        self._emit(e, EventType.NEW, S.NONE, Reason.NONE, Table.EMBRYONIC)
        return Result(Verdict.NEW, ORIG, e.state, Table.EMBRYONIC, created=True)

    def _invalid(self):
        self.stats["invalid"] += 1
        return Result(Verdict.INVALID)

    def process(self, frame, now=0):
        """Track one frame at time ``now`` (ns); returns a Result."""
        p = parse(bytes(frame))
        return self.process_pkt(p, now)

    def process_pkt(self, p, now=0):
        self.stats["packets"] += 1
        if p.status == UNTRACKED:
            self.stats["untracked"] += 1
            return Result(Verdict.UNTRACKED)
        key = key_of(p.tuple, p.icmp_request)
        table, e = self.lookup(key)
        conflict = False
        dir = ORIG
        if e is not None:
            if p.proto in (1, 58):
                dir = ORIG if p.icmp_request else REPLY
            elif p.tuple == e.orig:
                dir = ORIG
            elif p.tuple == e.reply:
                dir = REPLY
            else:
                conflict, e = True, None
        if p.status != OK or conflict or (p.proto == 6 and not flags_valid(p.tcp_flags)):
            if e is not None and e.expires <= now:
                self._destroy(key, table, Reason.EXPIRED)
                self.stats["expired"] += 1
            return self._invalid()
        if e is not None and e.expires <= now:
            self._destroy(key, table, Reason.EXPIRED)
            self.stats["expired"] += 1
            e = None
        if e is None:
            return self._create(p, key, now)

        old_state, old_status = e.state, e.status
        action, t = A_ACCEPT, None
        if p.proto == 6:
            action, t = self._tcp_packet(e, dir, p)
        elif p.proto == 17:
            t = TO["udp"]
            if e.status & CtStatus.SEEN_REPLY:
                if now >= e.first_seen + self.config.udp_stream_ms * 1_000_000:
                    t = TO["udp_stream"]
                    if not e.status & CtStatus.ASSURED:
                        e.status |= CtStatus.ASSURED
                        e.state = S.ASSURED
        else:
            t = TO["icmp"]
        if action in (A_ACCEPT, A_KILL):
            e.packets[dir] += 1
            e.bytes[dir] += p.length
            e.tcp_flags[dir] |= p.tcp_flags
            e.last_seen = now
            if action == A_ACCEPT:
                e.expires = now + self._timeout_ns(t)
        if dir == REPLY and action not in (A_INVALID, A_REOPEN):
            e.status |= CtStatus.SEEN_REPLY
            if e.state == S.UNREPLIED:
                e.state = S.REPLIED
        promote = False
        if table == Table.EMBRYONIC and action == A_ACCEPT:
            if p.proto == 6:
                promote = bool(e.status & CtStatus.ASSURED)
            else:
                promote = dir == ORIG and bool(old_status & CtStatus.SEEN_REPLY)

        verdict = (Verdict.NEW if dir == ORIG and not old_status & CtStatus.SEEN_REPLY
                   else Verdict.ESTABLISHED)
        if action == A_INVALID:
            return self._invalid()
        ignored = action in (A_IGNORE, A_KEEP)
        if action == A_IGNORE:
            self.stats["ignored"] += 1
        if action == A_KILL:
            self._destroy(key, table, Reason.RESET)
            self.stats["reset_before_reply"] += 1
            return Result(verdict, dir, e.state, table, ignored=ignored, destroyed=True)
        if action == A_REOPEN:
            self._destroy(key, table, Reason.REOPEN)
            self.stats["reopened"] += 1
            r = self._create(p, key, now)
            return attrs.evolve(r, destroyed=True)
        if e.state != old_state or (e.status ^ old_status) & (CtStatus.SEEN_REPLY |
                                                            CtStatus.ASSURED):
            self._emit(e, EventType.UPDATE, old_state, Reason.NONE, table)
        if promote:
            moved = e.copy()
            self.tables[Table.ESTABLISHED][key] = moved
            del self.tables[Table.EMBRYONIC][key]
            self.deletes[Table.EMBRYONIC] += 1
            self.inserts[Table.ESTABLISHED] += 1
            self.stats["promoted"] += 1
            table = Table.ESTABLISHED
        return Result(verdict, dir, e.state, table, ignored=ignored)

    # -- user-space operations ------------------------------------------
    def reap(self, now, reason=Reason.TIMEOUT):
        """What a sweep at ``now`` removes: every expired entry."""
        n = 0
        for table in (Table.ESTABLISHED, Table.EMBRYONIC):
            for key in [k for k, e in self.tables[table].items() if e.expires <= now]:
                self._destroy(key, table, reason)
                n += 1
        return n

    def clear(self):
        self.tables[0].clear()
        self.tables[1].clear()
        self.events.clear()
