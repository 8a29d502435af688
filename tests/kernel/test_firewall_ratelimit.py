"""rate_limit rules: a token bucket (GCRA) per source address, in the kernel
and in the model with an injected clock."""

from pybpfnet import packet as pk
from pybpfnet.dataplanes.firewall import Action, Firewall, Rule, rate_limit

UDP = Rule(rate_limit(1, burst=3), protocol="udp", name="udp-limit")


def udp(src="10.0.0.1"):
    return bytes(pk.udp_packet(src, "10.0.0.2", 1234, 5678))


def test_burst_then_drop_per_source():
    """At 1 pps, a burst of 3 passes and the rest drop, for each source
    address separately (the test takes far less than a second)."""
    with Firewall(None, [UDP]) as fw:
        got = [fw.run(udp()) for _ in range(6)]
        other = [fw.run(udp("10.0.0.9")) for _ in range(4)]
        v6 = [fw.run(bytes(pk.udp_packet("2001:db8::1", "2001:db8::2", 1, 2)))
              for _ in range(4)]
        assert got == [Action.PASS] * 3 + [Action.DROP] * 3
        assert other == v6 == [Action.PASS] * 3 + [Action.DROP]
        s = fw.stats().rules[0]
        assert (s.packets, s.drops) == (14, 5)


def test_repeat_counts_every_run():
    with Firewall(None, [UDP]) as fw:
        assert fw.run(udp(), repeat=100) is Action.DROP
        s = fw.stats().rules[0]
        assert (s.packets, s.drops) == (100, 97)


def test_buckets_survive_updates_of_other_rules():
    with Firewall(None, [UDP]) as fw:
        for _ in range(3):
            assert fw.run(udp()) is Action.PASS
        fw.apply([Rule("drop", protocol="tcp"), UDP])      # the same limit, moved
        assert fw.run(udp()) is Action.DROP
        fw.apply([Rule(rate_limit(2, burst=3), protocol="udp")])    # a new limit
        assert fw.run(udp()) is Action.PASS
