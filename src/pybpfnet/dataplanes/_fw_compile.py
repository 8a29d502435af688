"""The rule compiler: a RuleSet -> the bit-vector tables of one generation.

Deciding rules (pass, drop, rate_limit) get ids 0.. in order, count rules
ids 0.. in a 64-bit lane of their own. For every field the compiler
enumerates the distinct values that matter and, for each, the set of rules
that value satisfies, as a Python int used as a bit set:

* addresses: one entry per distinct prefix (and /0) of each of the four
  tries (source/destination x IPv4/IPv6); the entry holds every rule whose
  prefix contains it, so a longest-prefix match returns exactly the rules
  whose prefix contains the address;
* protocol/aux: direction x (protocol | TCP flags | ICMP type | ICMPv6
  type), 2 x 1024 slots;
* ports: the elementary intervals between range boundaries (a sweep),
  at most 2 N + 1 per field, and an index port -> interval.

``Tables.search`` runs the kernel's search over these tables in Python (for
tests of the compiler without a kernel).
"""

import array
import ipaddress
import struct

import attrs

from pybpfnet.dataplanes._fw_abi import abi
from pybpfnet.dataplanes._fw_model import FRAG, bucket_keys
from pybpfnet.dataplanes._fw_rules import Action, RateLimit, RuleError

__all__ = ["Tables", "compile_ruleset", "check_limits", "summary", "words"]

M64 = (1 << 64) - 1
_TAGS = ((0, "src", 4), (1, "dst", 4), (2, "src", 6), (3, "dst", 6))
_WORDS_FMT = struct.Struct("<64Q")


def words(bits):
    """The 64 u64 words of a 4096-bit set, lowest first."""
    return _WORDS_FMT.unpack(bits.to_bytes(512, "little"))


def summary(bits):
    """Bit j set when word j of ``bits`` is non-zero."""
    s = 0
    j = 0
    while bits:
        if bits & M64:
            s |= 1 << j
        bits >>= 64
        j += 1
    return s


@attrs.frozen
class Tables:
    """The compiled form of a RuleSet (no generation numbers yet).

    ``classes``: class id -> (deciding bits, count bits); ``lpm``: list of
    (tag, network, bits, count bits), every distinct prefix of each address
    field with the rules whose prefix contains it (the trie entries, or the
    hash entries, by ``meta["addr_mode"]``); ``port_index``: array of class ids
    (source ports then destination ports); ``rules``: per deciding id a
    dict for struct fw_rule; ``deciding``/``counting``: rule-set indexes
    by id; ``counter_index``: per rule-set index, its slot in the
    counters map; ``meta``: struct fw_meta fields."""

    classes: dict
    lpm: list
    port_index: array.array
    rules: list
    deciding: tuple
    counting: tuple
    counter_index: tuple
    meta: dict

    @property
    def nclasses(self):
        return max(self.classes) + 1

    def search(self, p, direction):
        """The kernel's classification of parsed packet ``p`` (kind IP or
        FRAG) with these tables: (deciding id or None, count ids)."""
        a = abi()
        dirn = 0 if direction == "ingress" else 1
        fields = []
        for tag, field, fam in _TAGS:
            if fam != p.family:
                continue
            addr = getattr(p, field)
            best = None
            for t, net, bits, cbits in self.lpm:
                if t == tag and addr in net and (best is None or
                                                 net.prefixlen > best[0].prefixlen):
                    best = (net, bits, cbits)
            fields.append(best[1:])
        fields.append(self.classes[a.class_pa + dirn * a.pa_slots + p.pa])
        if p.kind == FRAG:
            fields += [self.classes[a.class_l4any]] * 2
        else:
            fields.append(self.classes[self.port_index[p.sport]])
            fields.append(self.classes[self.port_index[65536 + p.dport]])
        bits = cbits = -1
        for b, c in fields:
            bits &= b
            cbits &= c
        winner = None
        if bits:
            winner = (bits & -bits).bit_length() - 1
            cbits &= self.rules[winner]["count_before"]
        else:
            cbits &= self.meta["count_all"]
        return winner, [j for j in range(64) if cbits >> j & 1]


def _grouped(rules, key):
    """{key(rule): (deciding bits, count bits)} over (rule, id, is_count)."""
    out = {}
    for r, i, is_count in rules:
        k = key(r)
        b, c = out.get(k, (0, 0))
        if is_count:
            c |= 1 << i
        else:
            b |= 1 << i
        out[k] = (b, c)
    return out


def _pa_slots(r, a):
    """The (direction, slot) pairs a rule's protocol/flags/type condition
    accepts."""
    slots = []
    protos = range(256) if r.protocol is None else sorted(r.protocol)
    if r.tcp_flags is None and r.icmp_type is None:
        slots += protos
    if (r.protocol is None or 6 in r.protocol) and r.icmp_type is None:
        slots += [a.pa_tcp + f for f in range(256)
                  if r.tcp_flags is None or r.tcp_flags.matches(f)]
    for proto, base in ((1, a.pa_icmp), (58, a.pa_icmp6)):
        if (r.protocol is None or proto in r.protocol) and r.tcp_flags is None:
            slots += [base + t for t in range(256)
                      if r.icmp_type is None or r.icmp_type == t]
    dirs = (0, 1) if r.direction is None else ((0,) if r.direction == "ingress" else (1,))
    return [(d, s) for d in dirs for s in slots]


def _ports(items, base):
    """Elementary intervals of one port field: (index array part, classes)."""
    any_b = any_c = 0
    events = {}
    for (b, c), rng in items:
        if rng is None:
            any_b |= b
            any_c |= c
            continue
        for at in (rng.lo, rng.hi + 1):
            if at <= 65535:
                eb, ec = events.get(at, (0, 0))
                events[at] = (eb ^ b, ec ^ c)
    points = sorted(set(events) | {0})
    index = array.array("I", bytes(4 * 65536))
    classes = {}
    cur_b = cur_c = 0
    for k, start in enumerate(points):
        eb, ec = events.get(start, (0, 0))
        cur_b ^= eb
        cur_c ^= ec
        end = points[k + 1] if k + 1 < len(points) else 65536
        cid = base + k
        classes[cid] = (cur_b | any_b, cur_c | any_c)
        index[start:end] = array.array("I", [cid]) * (end - start)
    return index, classes


def check_limits(ruleset):
    """Raise RuleError (with ``rule_index``, the first rule over the limit)
    when ``ruleset`` has more deciding or count rules than the engine
    holds."""
    a = abi()
    deciding = counting = 0
    for idx, r in enumerate(ruleset.rules):
        if r.action is Action.COUNT:
            counting += 1
            if counting == a.max_count_rules + 1:
                e = RuleError("more than %d count rules (the engine holds at most %d)"
                              % (a.max_count_rules, a.max_count_rules))
                e.rule_index = idx
                raise e
        else:
            deciding += 1
            if deciding == a.max_rules + 1:
                e = RuleError("more than %d pass/drop/rate_limit rules (the engine holds "
                              "at most %d)" % (a.max_rules, a.max_rules))
                e.rule_index = idx
                raise e


def compile_ruleset(ruleset):
    """Compile ``ruleset`` into Tables. Raises RuleError when it has more
    deciding or count rules than the engine holds."""
    a = abi()
    check_limits(ruleset)
    deciding, counting, entries = [], [], []
    for idx, r in enumerate(ruleset.rules):
        if r.action is Action.COUNT:
            entries.append((r, len(counting), True))
            counting.append(idx)
        else:
            entries.append((r, len(deciding), False))
            deciding.append(idx)

    classes = {}
    # protocol/aux slots
    pa = {}
    for sig, bc in _grouped(entries, lambda r: (r.direction, r.protocol, r.tcp_flags,
                                                  r.icmp_type)).items():
        rep = next(r for r, _, _ in entries if (r.direction, r.protocol, r.tcp_flags,
                                                r.icmp_type) == sig)
        for d, s in _pa_slots(rep, a):
            key = a.class_pa + d * a.pa_slots + s
            b, c = pa.get(key, (0, 0))
            pa[key] = (b | bc[0], c | bc[1])
    for d in (0, 1):
        for s in range(a.pa_slots):
            key = a.class_pa + d * a.pa_slots + s
            classes[key] = pa.get(key, (0, 0))
    # no L4 condition: what non-first fragments can match
    l4 = _grouped(entries, lambda r: r.has_l4).get(False, (0, 0))
    classes[a.class_l4any] = l4
    # addresses
    lpm = []
    modes, lengths_of = [], []
    for tag, field, fam in _TAGS:
        usable = [(r, i, c) for r, i, c in entries if r.family in (None, fam)]
        by_net = _grouped(usable, lambda r: getattr(r, field))
        any_bits = by_net.pop(None, (0, 0))
        zero = ipaddress.ip_network("0.0.0.0/0" if fam == 4 else "::/0")
        nets = set(by_net) | {zero}
        lengths = sorted({n.prefixlen for n in nets})
        for net in nets:
            b, c = any_bits
            for length in lengths:
                if length > net.prefixlen:
                    break
                hit = by_net.get(net.supernet(new_prefix=length) if length < net.prefixlen
                                 else net)
                if hit:
                    b |= hit[0]
                    c |= hit[1]
            lpm.append((tag, net, b, c))
            if net.prefixlen == 0:
                classes[a.class_any + tag] = (b, c)
        used = sorted((n for n in lengths if n), reverse=True)
        if not used:
            mode = "FW_ADDR_ANY"
        elif len(used) <= a.hash_lengths:
            mode = "FW_ADDR_HASH"
        else:
            mode = "FW_ADDR_LPM"
        modes.append(a.enum("addr_mode", mode))
        lengths_of.append(bytes(used + [0] * a.hash_lengths)[:a.hash_lengths]
                          if mode == "FW_ADDR_HASH" else bytes(a.hash_lengths))
    # ports
    sidx, scls = _ports([(bc, rng) for rng, bc in _grouped(
        entries, lambda r: r.sport).items()], a.class_ports)
    didx, dcls = _ports([(bc, rng) for rng, bc in _grouped(
        entries, lambda r: r.dport).items()], a.class_ports + len(scls))
    classes.update(scls)
    classes.update(dcls)
    # deciding rules
    keys = bucket_keys(ruleset)
    rules = []
    for idx in deciding:
        r = ruleset.rules[idx]
        before = 0
        for j, cidx in enumerate(counting):
            if cidx > idx:
                break
            before |= 1 << j
        if isinstance(r.action, RateLimit):
            act = a.enum("action", "FW_ACT_RATE")
            cost, tol = r.action.cost_ns, r.action.tolerance_ns
        else:
            act = a.enum("action", "FW_ACT_DROP" if r.action is Action.DROP
                         else "FW_ACT_PASS")
            cost = tol = 0
        rules.append(dict(action=act, bucket_key=keys[idx], count_before=before,
                          cost_ns=cost, tolerance_ns=tol))
    frag = {"addresses": "FW_FRAG_ADDRESSES", "drop": "FW_FRAG_DROP",
            "pass": "FW_FRAG_PASS"}[ruleset.fragments]

    def act(action):
        return a.enum("action", "FW_ACT_DROP" if action is Action.DROP else "FW_ACT_PASS")
    meta = dict(default_action=act(ruleset.default), frag_policy=a.enum("frag_policy", frag),
                malformed_action=act(ruleset.malformed), non_ip_action=act(ruleset.non_ip),
                addr_mode=bytes(modes), lengths=tuple(lengths_of), nrules=len(deciding),
                count_all=(1 << len(counting)) - 1)
    counter_index = [0] * len(ruleset.rules)
    for i, idx in enumerate(deciding):
        counter_index[idx] = i
    for j, idx in enumerate(counting):
        counter_index[idx] = a.cnt_count + j
    return Tables(classes=classes, lpm=lpm, port_index=sidx + didx, rules=rules,
                  deciding=tuple(deciding), counting=tuple(counting),
                  counter_index=tuple(counter_index), meta=meta)
