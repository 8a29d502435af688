"""Pure-Python reference model of the flow monitor's per-packet work:
which flow a frame belongs to, how many bytes and TCP flags it adds, and
whether it ends the flow (FIN/RST). Mirrors csrc/bpf/flowmon/flowmon_parse.h
byte by byte, for differential tests against BPF_PROG_TEST_RUN."""

import attrs

_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"
_EXT = (0, 43, 60)          # hop-by-hop, routing, destination options
_MAX_EXT = 4


@attrs.frozen
class PacketFlow:
    """The flow key fields of one frame (addresses in the 16-byte form the
    BPF side uses) and what the frame adds to it."""

    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    proto: int
    family: int
    tcp_flags: int = 0
    hdr_len: int = 0

    @property
    def key(self):
        return (self.saddr, self.daddr, self.sport, self.dport, self.proto, self.family)

    @property
    def ends_flow(self):
        return self.proto == 6 and bool(self.tcp_flags & 0x05)


def _l4(frame, pos, proto):
    n = len(frame)
    if proto == 6 and pos + 20 <= n:
        return dict(sport=int.from_bytes(frame[pos:pos + 2], "big"),
                    dport=int.from_bytes(frame[pos + 2:pos + 4], "big"),
                    tcp_flags=frame[pos + 13], hdr_len=pos + (frame[pos + 12] >> 4) * 4)
    if proto == 17 and pos + 8 <= n:
        return dict(sport=int.from_bytes(frame[pos:pos + 2], "big"),
                    dport=int.from_bytes(frame[pos + 2:pos + 4], "big"), hdr_len=pos + 8)
    if proto in (1, 58) and pos + 2 <= n:
        return dict(sport=frame[pos], dport=frame[pos + 1])
    return {}


def classify(frame):
    """The PacketFlow of an Ethernet frame, or None when it is not IPv4/IPv6
    (the BPF side counts those as ``non_ip``)."""
    frame = bytes(frame)
    n = len(frame)
    if n < 14:
        return None
    etype, pos = int.from_bytes(frame[12:14], "big"), 14
    if etype in (0x8100, 0x88A8):
        if pos + 4 > n:
            return None
        etype, pos = int.from_bytes(frame[16:18], "big"), 18
    if etype == 0x0800:
        if pos + 20 > n or frame[pos] >> 4 != 4:
            return None
        ihl, proto = (frame[pos] & 15) * 4, frame[pos + 9]
        base = dict(saddr=_V4_PREFIX + frame[pos + 12:pos + 16],
                    daddr=_V4_PREFIX + frame[pos + 16:pos + 20], proto=proto, family=4,
                    sport=0, dport=0)
        if ihl < 20 or int.from_bytes(frame[pos + 6:pos + 8], "big") & 0x1FFF:
            return PacketFlow(**base)
        return PacketFlow(**{**base, **_l4(frame, pos + ihl, proto)})
    if etype == 0x86DD:
        if pos + 40 > n:
            return None
        base = dict(saddr=frame[pos + 8:pos + 24], daddr=frame[pos + 24:pos + 40], family=6,
                    sport=0, dport=0)
        nh, pos = frame[pos + 6], pos + 40
        for _ in range(_MAX_EXT):
            if nh in _EXT:
                if pos + 8 > n:
                    break
                nh, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
            elif nh == 44:
                if pos + 8 > n:
                    break
                offset = int.from_bytes(frame[pos + 2:pos + 4], "big") & 0xFFF8
                nh, pos = frame[pos], pos + 8
                if offset:
                    return PacketFlow(proto=nh, **base)
            else:
                break
        return PacketFlow(proto=nh, **{**base, **_l4(frame, pos, nh)})
    return None
