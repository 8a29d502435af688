"""The firewall's reference model: what the BPF engine must do with a
packet, in plain Python (a linear first-match scan, independent of the
bit-vector tables the kernel uses). The parser mirrors
csrc/bpf/firewall/fw_parse.h rule for rule."""

import ipaddress
import time

import attrs

from pybpfnet.dataplanes._fw_abi import abi
from pybpfnet.dataplanes._fw_rules import (Action, RateLimit, Reason, RuleSet, Verdict)

__all__ = ["Parsed", "parse", "FirewallModel", "bucket_keys"]

IP, FRAG, MALFORMED, NON_IP = "ip", "fragment", "malformed", "non_ip"

_VLAN = (0x8100, 0x88A8, 0x9100)
_EXT8 = frozenset((43, 60, 135, 139, 140))
_EXT = _EXT8 | {0, 44, 51}


@attrs.frozen
class Parsed:
    """What the engine extracts from a packet. ``pa`` is the protocol/aux
    slot: the protocol, or for TCP abi.pa_tcp + flags, for ICMP(v6)
    abi.pa_icmp(6) + type."""

    kind: str
    family: int = 0
    src: object = None
    dst: object = None
    proto: int = 0
    sport: int = 0
    dport: int = 0
    pa: int = 0


def _u16(b, off):
    return b[off] << 8 | b[off + 1]


def parse(data):
    """Parse an Ethernet frame the way the BPF engine does -> Parsed."""
    a = abi()
    b = bytes(data)
    n = len(b)
    if n < 14:
        return Parsed(MALFORMED)
    eth = _u16(b, 12)
    off = 14
    for _ in range(a.max_vlans):
        if eth not in _VLAN:
            break
        if off + 4 > n:
            return Parsed(MALFORMED)
        eth = _u16(b, off + 2)
        off += 4
    if eth in _VLAN:
        return Parsed(MALFORMED)
    if eth == 0x0800:
        if off + 20 > n:
            return Parsed(MALFORMED)
        if b[off] >> 4 != 4 or b[off] & 15 < 5:
            return Parsed(MALFORMED)
        hl = (b[off] & 15) * 4
        tot = _u16(b, off + 2)
        if tot == 0:
            ip_end = n
        else:
            if tot < hl:
                return Parsed(MALFORMED)
            ip_end = off + tot
        if ip_end > n or off + hl > ip_end:
            return Parsed(MALFORMED)
        family, nh = 4, b[off + 9]
        src = ipaddress.IPv4Address(b[off + 12:off + 16])
        dst = ipaddress.IPv4Address(b[off + 16:off + 20])
        l4 = off + hl
        if _u16(b, off + 6) & 0x1FFF:
            return Parsed(FRAG, family, src, dst, nh, pa=nh)
    elif eth == 0x86DD:
        if off + 40 > n:
            return Parsed(MALFORMED)
        if b[off] >> 4 != 6:
            return Parsed(MALFORMED)
        plen = _u16(b, off + 4)
        ip_end = off + 40 + plen if plen else n
        if ip_end > n:
            return Parsed(MALFORMED)
        family, nh = 6, b[off + 6]
        src = ipaddress.IPv6Address(b[off + 8:off + 24])
        dst = ipaddress.IPv6Address(b[off + 24:off + 40])
        l4 = off + 40
        for i in range(a.max_ext):
            if nh not in _EXT:
                break
            if nh == 0 and i > 0:
                return Parsed(MALFORMED)
            if l4 + 8 > ip_end:
                return Parsed(MALFORMED)
            if nh == 44:
                if _u16(b, l4 + 2) & 0xFFF8:
                    return Parsed(FRAG, family, src, dst, b[l4], pa=b[l4])
                hl = 8
            elif nh == 51:
                hl = (b[l4 + 1] + 2) * 4
            else:
                hl = (b[l4 + 1] + 1) * 8
            nh = b[l4]
            l4 += hl
            if l4 > ip_end:
                return Parsed(MALFORMED)
        if nh in _EXT:
            return Parsed(MALFORMED)
    else:
        return Parsed(NON_IP)

    def need(size):
        return l4 + size <= ip_end

    if nh == 6:
        if not need(20):
            return Parsed(MALFORMED)
        return Parsed(IP, family, src, dst, nh, _u16(b, l4), _u16(b, l4 + 2),
                      a.pa_tcp + b[l4 + 13])
    if nh in (17, 136):
        if not need(8):
            return Parsed(MALFORMED)
        return Parsed(IP, family, src, dst, nh, _u16(b, l4), _u16(b, l4 + 2), nh)
    if nh == 132:
        if not need(12):
            return Parsed(MALFORMED)
        return Parsed(IP, family, src, dst, nh, _u16(b, l4), _u16(b, l4 + 2), nh)
    if (nh == 1 and family == 4) or (nh == 58 and family == 6):
        if not need(8):
            return Parsed(MALFORMED)
        return Parsed(IP, family, src, dst, nh,
                      pa=(a.pa_icmp if family == 4 else a.pa_icmp6) + b[l4])
    return Parsed(IP, family, src, dst, nh, pa=nh)


def matches(rule, p, direction):
    """Does ``rule`` match parsed packet ``p`` (kind IP or FRAG) seen in
    ``direction``? The specification the compiled tables implement."""
    a = abi()
    if rule.direction is not None and rule.direction != direction:
        return False
    fam = rule.family
    if fam is not None and fam != p.family:
        return False
    if rule.src is not None and p.src not in rule.src:
        return False
    if rule.dst is not None and p.dst not in rule.dst:
        return False
    if rule.protocol is not None and p.proto not in rule.protocol:
        return False
    if p.kind == FRAG:
        return not rule.has_l4
    if rule.sport is not None and p.sport not in rule.sport:
        return False
    if rule.dport is not None and p.dport not in rule.dport:
        return False
    if rule.tcp_flags is not None and not (
            a.pa_tcp <= p.pa < a.pa_icmp and rule.tcp_flags.matches(p.pa - a.pa_tcp)):
        return False
    if rule.icmp_type is not None and not (
            a.pa_icmp <= p.pa < a.pa_slots and p.pa & 0xFF == rule.icmp_type):
        return False
    return True


def bucket_keys(ruleset):
    """One identity per rate-limit rule (None for others): the rule value
    and its occurrence, so a rule kept across rule-set updates keeps its
    token buckets."""
    seen = {}
    out = []
    for r in ruleset.rules:
        if isinstance(r.action, RateLimit):
            k = seen.get(r, 0)
            seen[r] = k + 1
            out.append((r, k))
        else:
            out.append(None)
    return out


class FirewallModel:
    """The reference model of a firewall running ``ruleset``: ``evaluate``
    gives each packet's Verdict and keeps counters and token buckets like
    the kernel does. ``clock``: a function returning nanoseconds (the
    kernel's bpf_ktime_get_ns is CLOCK_MONOTONIC: ``time.monotonic_ns``,
    the default); ``evaluate(..., now=ns)`` overrides it per packet."""

    def __init__(self, ruleset=None, *, clock=time.monotonic_ns):
        self.clock = clock
        self.ruleset = RuleSet() if ruleset is None else ruleset
        self._keys = bucket_keys(self.ruleset)
        self.buckets = {}          # (bucket key, family, address) -> tat
        self.reset_counters()

    def reset_counters(self):
        n = len(self.ruleset.rules)
        self.counters = [[0, 0, 0] for _ in range(n)]     # packets, bytes, drops
        self.reasons = {r: [0, 0, 0] for r in (Reason.DEFAULT, Reason.MALFORMED,
                                               Reason.FRAGMENT, Reason.NON_IP)}

    def replace(self, ruleset):
        """Switch to ``ruleset``: buckets of rate-limit rules kept in it
        survive; counters of rules kept unchanged carry over."""
        old = {}
        for r, c in zip(self.ruleset.rules, self.counters):
            old.setdefault(r, []).append(c)
        self.ruleset = ruleset
        keys = set(k for k in bucket_keys(ruleset) if k is not None)
        self.buckets = {k: v for k, v in self.buckets.items() if k[0] in keys}
        self._keys = bucket_keys(ruleset)
        self.counters = [old[r].pop(0) if old.get(r) else [0, 0, 0] for r in ruleset.rules]

    def evaluate(self, packet, direction="ingress", *, now=None):
        """The Verdict for ``packet`` (bytes, or anything with ``__bytes__``)
        seen in ``direction`` ("ingress"; "egress" at TC egress)."""
        data = bytes(packet)
        p = parse(data)
        rs = self.ruleset
        if p.kind == NON_IP:
            return self._policy(rs.non_ip, Reason.NON_IP, len(data))
        if p.kind == MALFORMED:
            return self._policy(rs.malformed, Reason.MALFORMED, len(data))
        if p.kind == FRAG and rs.fragments != "addresses":
            return self._policy(Action.DROP if rs.fragments == "drop" else Action.PASS,
                                Reason.FRAGMENT, len(data))
        counted = []
        winner = None
        for i, rule in enumerate(rs.rules):
            if not matches(rule, p, direction):
                continue
            if rule.action is Action.COUNT:
                counted.append(i)
                continue
            winner = i
            break
        for i in counted:
            c = self.counters[i]
            c[0] += 1
            c[1] += len(data)
        if winner is None:
            v = self._policy(rs.default, Reason.DEFAULT, len(data))
            return attrs.evolve(v, counted=tuple(counted))
        rule = rs.rules[winner]
        action, reason = rule.action, Reason.RULE
        if isinstance(action, RateLimit):
            ok = self._conforms(self._keys[winner], action, p,
                                self.clock() if now is None else now)
            action = Action.PASS if ok else Action.DROP
            if not ok:
                reason = Reason.RATE_LIMITED
        c = self.counters[winner]
        c[0] += 1
        c[1] += len(data)
        c[2] += action is Action.DROP
        return Verdict(action, reason, winner, tuple(counted))

    def _policy(self, action, reason, size):
        c = self.reasons[reason]
        c[0] += 1
        c[1] += size
        c[2] += action is Action.DROP
        return Verdict(action, reason)

    def _conforms(self, key, limit, p, now):
        bkey = (key, p.family, p.src)
        tat = self.buckets.get(bkey)
        cost = limit.cost_ns
        if tat is None or tat < now:
            self.buckets[bkey] = now + cost
            return True
        if tat - now > limit.tolerance_ns:
            return False
        self.buckets[bkey] = tat + cost
        return True
