"""Whole rule-set replacement: atomic under load, counters carried over,
failed updates leave the running set alone."""

import threading
import time

import pytest

from pybpfnet import packet as pk
from pybpfnet.dataplanes.firewall import (Action, Firewall, FirewallModel, Rule, RuleError,
                                          RuleSet)

BASE = [
    Rule("drop", protocol="tcp", dport=80, src="10.1.0.0/16"),
    Rule("pass", protocol="tcp", dport=80),
    Rule("drop", src="10.0.0.0/8"),
    Rule("pass", protocol="udp", dport=53, dst="192.0.2.0/24"),
    Rule("drop", protocol="udp"),
    Rule("count", protocol="tcp", tcp_flags="syn"),
    Rule("drop", protocol="tcp", dport="8000-8999", tcp_flags="syn,!ack"),
]


def dummies(n, offset=0):
    """Rules no test packet matches (they shift the ids of the others)."""
    return [Rule("drop", protocol=99, src="203.0.113.%d/32" % ((offset + i) % 256))
            for i in range(n)]


def packets():
    out = []
    for src in ("10.1.1.1", "10.2.2.2", "172.16.0.1"):
        for dport in (80, 81, 8080):
            for flags in ("S", "SA", "A"):
                out.append(bytes(pk.tcp_packet(src, "192.0.2.1", 40000, dport, flags=flags)))
        for dst in ("192.0.2.7", "198.51.100.1"):
            for dport in (53, 54):
                out.append(bytes(pk.udp_packet(src, dst, 40000, dport)))
    return out


def verdicts(ruleset, pkts):
    m = FirewallModel(ruleset)
    return [m.evaluate(p).action for p in pkts]


def hammer(fw, sets, pkts, seconds=1.5):
    """Swap between ``sets`` in a thread while running ``pkts`` through the
    engine; returns the (packet index, Action) pairs seen and the swap count."""
    stop = threading.Event()
    swaps = [0]
    errors = []

    def swapper():
        try:
            i = 0
            while not stop.is_set():
                i += 1
                fw.apply(sets[i % len(sets)])
                swaps[0] += 1
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=swapper)
    seen = []
    t.start()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for i, p in enumerate(pkts):
                seen.append((i, fw.run(p)))
    finally:
        stop.set()
        t.join()
    if errors:
        raise errors[0]
    return seen, swaps[0]


@pytest.fixture
def fw():
    with Firewall() as f:
        yield f


def test_swap_never_mixes_equivalent_layouts(fw):
    """A and B decide every packet alike but number the rules differently
    (3 vs 70 never-matching rules in front: other words of the bit vector).
    Tables mixed from both would decide some packets otherwise."""
    a = RuleSet(dummies(3) + BASE, default="pass")
    b = RuleSet(dummies(70, 5) + BASE[:3] + dummies(40, 100) + BASE[3:], default="pass")
    pkts = packets()
    want = verdicts(a, pkts)
    assert want == verdicts(b, pkts)
    assert len(set(want)) == 2
    fw.apply(a)
    seen, swaps = hammer(fw, [a, b], pkts)
    assert swaps >= 10
    bad = [(i, got) for i, got in seen if got is not want[i]]
    assert not bad, "%d of %d verdicts from mixed tables, e.g. packet %d: %s" % (
        len(bad), len(seen), bad[0][0], bad[0][1])
    assert fw.stats().stale == 0


def test_swap_gives_old_or_new_verdict(fw):
    """A and B disagree; every verdict is A's or B's, and both are seen."""
    a = RuleSet(BASE, default="pass")
    b = RuleSet(list(reversed(BASE)) + dummies(64), default="drop")
    pkts = packets()
    va, vb = verdicts(a, pkts), verdicts(b, pkts)
    differ = [i for i in range(len(pkts)) if va[i] is not vb[i]]
    assert differ
    fw.apply(a)
    seen, swaps = hammer(fw, [a, b], pkts)
    assert swaps >= 10
    for i, got in seen:
        assert got in (va[i], vb[i]), "packet %d: %s is neither set's verdict" % (i, got)
    kinds = {got is va[i] for i, got in seen if i in differ}
    assert kinds == {True, False}, "the swaps were not seen by the packets"


def test_counters_carry_over(fw):
    pkts = packets()
    fw.apply(RuleSet(BASE, default="pass"))
    for p in pkts:
        fw.run(p)
    first = fw.stats()
    before = {s.rule: s for s in first.rules}
    assert sum(s.packets for s in first.rules) > 0
    fw.apply([Rule("drop", protocol="tcp", dport=81)] + BASE[1:])
    after = fw.stats()
    assert after.generation == first.generation + 1
    assert after.rules[0].packets == 0          # a new rule starts at zero
    for s in after.rules[1:]:                   # kept rules keep their counts
        assert (s.packets, s.bytes, s.drops) == (before[s.rule].packets,
                                                  before[s.rule].bytes,
                                                  before[s.rule].drops)
    assert after.reasons == first.reasons


def test_failed_apply_leaves_running_set(fw):
    rs = RuleSet(BASE, default="drop")
    fw.apply(rs)
    gen = fw.generation
    with pytest.raises(RuleError):
        fw.apply([Rule("drop", protocol="tcp", dport=1)] * 5000)
    with pytest.raises(RuleError):
        fw.apply(BASE, default="maybe")
    assert fw.generation == gen and fw.ruleset == rs
    pkts = packets()
    assert [fw.run(p) for p in pkts] == verdicts(rs, pkts)


def test_apply_keeps_policies_and_rules(fw):
    fw.apply(BASE, default="drop", fragments="drop")
    fw.apply(default="pass")
    assert fw.ruleset.rules == tuple(BASE)
    assert fw.ruleset.default is Action.PASS and fw.ruleset.fragments == "drop"
    fw.apply([])
    assert fw.rules == () and fw.ruleset.fragments == "drop"
