"""The firewall engine against its reference model: hypothesis-made rule sets
and packets (VLAN, IPv4 options, IPv6 extension headers, fragments,
truncated and corrupted frames) run through BPF_PROG_TEST_RUN at XDP and
TC ingress/egress; verdicts and counters must equal the model's."""

import errno
import ipaddress

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import pybpfnet as bn
from pybpfnet.dataplanes import _fw_model
from pybpfnet.dataplanes.firewall import Action, Firewall, Reason, Rule, RuleSet

from strategies import fw_packets, fw_rulesets

HOOKS = [("xdp", "ingress"), ("tc", "ingress"), ("tc", "egress")]
SLOW = settings(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def fw():
    with Firewall() as f:
        yield f


def kernel_action(fw, packet, hook, direction):
    """The engine's Action, or None when test_run refuses the input (TC
    needs a whole IP header after an IP ethertype)."""
    try:
        return fw.run(packet, direction, hook=hook)
    except bn.BpfError as e:
        if e.errno != errno.EINVAL:
            raise
        eth = int.from_bytes(packet[12:14], "big") if len(packet) >= 14 else 0
        short = len(packet) < 14 or (hook == "tc" and (
            (eth == 0x0800 and len(packet) < 34) or (eth == 0x86DD and len(packet) < 54)))
        assert short, "test_run refused a %d-byte packet: %s" % (len(packet), e)
        return None


def counters(fw):
    s = fw.stats()
    return [(r.packets, r.bytes, r.drops) for r in s.rules], dict(s.reasons)


def model_counters(model):
    return [tuple(c) for c in model.counters], {r: tuple(c) for r, c in model.reasons.items()}


def delta(after, before):
    (ra, xa), (rb, xb) = after, before
    return ([tuple(x - y for x, y in zip(a, b)) for a, b in zip(ra, rb)],
            {k: tuple(x - y for x, y in zip(xa[k], xb[k])) for k in xa})


def reset_rate_state(fw):
    fw.object.maps["fw_buckets"].clear()
    fw.model.buckets.clear()


def check(fw, packets, hook, direction):
    """Run packets through kernel and model; compare every verdict, then the
    counter deltas."""
    kb, mb = counters(fw), model_counters(fw.model)
    for data in packets:
        got = kernel_action(fw, data, hook, direction)
        if got is None:
            continue
        want = fw.evaluate(data, direction)
        if got is not want.action:
            raise AssertionError(
                "kernel %s, model %s at %s %s\npacket %s\nparsed %s\nrules %s" % (
                    got, want, hook, direction, data.hex(), _fw_model.parse(data),
                    "\n  ".join(r.describe() for r in fw.rules)))
    kd = delta(counters(fw), kb)
    md = delta(model_counters(fw.model), mb)
    assert kd == md, "counters differ: kernel %s, model %s" % (kd, md)


def with_many_lengths(ruleset):
    """The rule set plus prefixes of five lengths in every address field,
    so that they are looked up in the LPM trie instead of the hash."""
    extra = []
    for n in (8, 12, 16, 20, 24):
        extra += [Rule("drop", protocol=253, src="10.0.0.0/%d" % n),
                  Rule("drop", protocol=253, dst="10.0.0.0/%d" % n)]
    for n in (32, 40, 48, 56, 64):
        extra += [Rule("drop", protocol=253, src="2001:db8::/%d" % n),
                  Rule("drop", protocol=253, dst="2001:db8::/%d" % n)]
    return RuleSet(ruleset.rules + tuple(extra), **ruleset.policies())


@settings(SLOW, max_examples=150)
@given(ruleset=fw_rulesets(), packets=st.lists(fw_packets(), min_size=1, max_size=20),
       where=st.sampled_from(HOOKS), lpm=st.booleans())
def test_kernel_agrees_with_model(fw, ruleset, packets, where, lpm):
    if lpm:
        ruleset = with_many_lengths(ruleset)
    fw.apply(ruleset)
    reset_rate_state(fw)
    note("\n".join(r.describe() for r in ruleset.rules))
    check(fw, packets, *where)


# a fixed rule set with every kind of condition: many hostile packets each
@pytest.fixture
def busy_fw():
    rules = [
        Rule("count", protocol="tcp"),
        Rule("pass", protocol="tcp", dport=22, src="10.0.0.0/8"),
        Rule("drop", protocol="tcp", dport="0-1023"),
        Rule("drop", protocol=["udp", "udplite", "sctp"], dport="53"),
        Rule("drop", protocol="udp", sport="1000-2000", dst="2001:db8::/32"),
        Rule("drop", src="198.51.100.0/24"),
        Rule("drop", protocol="tcp", tcp_flags="syn,!ack"),
        Rule("drop", protocol="icmp", icmp_type=8),
        Rule("drop", protocol="icmpv6", icmp_type=128, direction="egress"),
        Rule("pass", dst="255.255.255.255/32"),
        Rule("drop", protocol=47),
        Rule("count", protocol="udp", dport="0-1023"),
        Rule("drop", protocol="udp", dport="1-1023"),
    ]
    with Firewall(None, rules, default="pass") as f:
        yield f


@settings(SLOW, max_examples=1500)
@given(packet=fw_packets(), where=st.sampled_from(HOOKS))
def test_hostile_packets(busy_fw, packet, where):
    check(busy_fw, [packet], *where)


def _many_rules(n):
    """n rules over distinct /24s and ports, every kind of action."""
    rules = []
    for i in range(n):
        net = ipaddress.ip_network("10.%d.%d.0/24" % (i // 256, i % 256))
        kind = i % 4
        if kind == 0:
            rules.append(Rule("drop", src=net, protocol="tcp", dport=1 + i % 1000))
        elif kind == 1:
            rules.append(Rule("pass", dst=net, protocol="udp", sport="%d-%d" % (i, i + 10)))
        elif kind == 2:
            rules.append(Rule("drop", src=net))
        else:
            rules.append(Rule("pass", protocol="tcp", dport=1 + i % 1000, tcp_flags="ack"))
    return rules


def _many_packets(n, count):
    from pybpfnet import packet as pk
    out = []
    for k in range(count):
        i = (k * 7919) % n
        a = "10.%d.%d.%d" % (i // 256, i % 256, 1 + k % 250)
        out.append(bytes(pk.tcp_packet(a, "10.255.0.1", 40000 + k, 1 + i % 1000,
                                       flags="SA" if k % 3 else "S")))
        out.append(bytes(pk.udp_packet("192.0.2.1", a, i + k % 12, 53)))
    return out


@pytest.mark.parametrize("n", [64, 4096])
def test_large_rule_sets(fw, n):
    """Rules in every word of the bit vector; the last of 4,096 rules and
    the default are reached."""
    rules = _many_rules(n)
    fw.apply(RuleSet(rules, default="drop"))
    packets = _many_packets(n, 150)
    from pybpfnet import packet as pk
    packets.append(bytes(pk.tcp_packet("10.%d.%d.9" % ((n - 2) // 256, (n - 2) % 256),
                                       "1.1.1.1", 1, 9)))
    packets.append(bytes(pk.udp_packet("192.0.2.1", "192.0.2.2", 1, 2)))
    for hook, d in HOOKS:
        check(fw, packets, hook, d)
    verdicts = [fw.evaluate(p) for p in packets[-2:]]
    assert verdicts[0].rule == n - 2 and verdicts[0].action is Action.DROP
    assert verdicts[1].reason is Reason.DEFAULT


def test_rule_limits(fw):
    from pybpfnet.dataplanes.firewall import RuleError
    with pytest.raises(RuleError, match="more than 4096 pass/drop/rate_limit rules"):
        fw.apply([Rule("drop", protocol="tcp", dport=1)] * 4097)
    with pytest.raises(RuleError, match="more than 64 count rules"):
        fw.apply([Rule("count", protocol="tcp", dport=1)] * 65)
    fw.apply([Rule("count", protocol="tcp", dport=p) for p in range(64)]
             + [Rule("drop", protocol="tcp", dport=5)] * 4096)
    assert fw.run(bytes(__import__("pybpfnet.packet", fromlist=["x"]).tcp_packet(
        "1.1.1.1", "2.2.2.2", 1, 5))) is Action.DROP
    s = fw.stats()
    assert s.rules[5].packets == 1 and s.rules[64].packets == 1


def test_with_the_testing_differential_helper():
    """The same check through pybpfnet.testing.differential (what users of
    the SDK call): an XDP firewall and its model on the plugin's default
    packet generator (well formed, hostile and malformed frames), with the
    packet shrunk to the minimal disagreement on failure."""
    from pybpfnet.testing import differential, packets
    rules = [Rule("drop", protocol="tcp", dport=22),
             Rule("drop", src="10.1.0.0/16"),
             Rule("pass", protocol="udp", dport="1000-2000"),
             Rule("drop", src="2001:db8::/32", protocol="icmpv6"),
             Rule("drop", protocol="udp")]
    with Firewall(rules=rules) as f:
        verdicts = {Action.DROP: bn.XdpAction.DROP, Action.PASS: bn.XdpAction.PASS}
        differential(f.program("xdp"), lambda pkt: verdicts[f.evaluate(pkt).action],
                     packets(ports=(22, 53, 1500, 8080)), max_examples=300)
