"""The firewall's reference model and rule compiler, without a kernel: the
parser against pybpfnet.packet, the compiled bit-vector tables (searched in
Python) against the model's linear first-match scan, the token bucket."""


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpfnet import packet as pk
from pybpfnet.dataplanes import _fw_compile, _fw_model
from pybpfnet.dataplanes._fw_abi import abi
from pybpfnet.dataplanes.firewall import (Action, FirewallModel, Reason, Rule, RuleSet,
                                          parse, rate_limit)

from strategies import fw_packets, fw_rulesets, packets


def udp(src="10.0.0.1"):
    return bytes(pk.udp_packet(src, "10.0.0.2", 1234, 5678))


@settings(max_examples=300, deadline=None)
@given(packets(gue=False, max_depth=0))
def test_parse_agrees_with_packet_flow(p):
    """On canonical packets the parser finds what pybpfnet.packet.flow()
    does (an independent implementation)."""
    got = parse(bytes(p))
    f = pk.flow(p)
    layers = [type(x) for x in p.layers]
    if f is None:
        assert got.kind == ("non_ip" if len(layers) < 2 or layers[-1] is pk.ARP
                            else got.kind)
        return
    if pk.Dot1Q in layers and layers.count(pk.Dot1Q) > abi().max_vlans:
        assert got.kind == "malformed"
        return
    if got.kind == "malformed":
        # a transport header shorter than the engine needs, or too many
        # extension headers
        return
    assert (got.src, got.dst, got.proto) == (f.src, f.dst, f.proto)
    if f.proto in (6, 17) and got.kind == "ip":
        assert (got.sport, got.dport) == (f.sport, f.dport)


def test_parse_fields():
    p = parse(bytes(pk.with_vlan(pk.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, flags="SA"),
                                 5, 6)))
    a = abi()
    assert (p.kind, p.family, p.proto, p.sport, p.dport) == ("ip", 4, 6, 1, 2)
    assert p.pa == a.pa_tcp + 0x12
    p = parse(bytes(pk.icmp_echo("2001:db8::1", "2001:db8::2")))
    assert (p.family, p.proto, p.pa) == (6, 58, a.pa_icmp6 + 128)
    p = parse(bytes(pk.fragment(pk.udp_packet("10.0.0.1", "10.0.0.2", 1, 2, b"x" * 40),
                                16)[1]))
    assert (p.kind, p.proto, p.sport, p.pa) == ("fragment", 17, 0, 17)
    assert parse(b"\x00" * 14).kind == "non_ip"
    assert parse(b"\x00" * 13).kind == "malformed"


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ruleset=fw_rulesets(max_rules=12), packets=st.lists(fw_packets(), max_size=12),
       direction=st.sampled_from(["ingress", "egress"]))
def test_compiled_tables_agree_with_linear_scan(ruleset, packets, direction):
    tables = _fw_compile.compile_ruleset(ruleset)
    for data in packets:
        p = parse(data)
        if p.kind not in ("ip", "fragment"):
            continue
        if p.kind == "fragment" and ruleset.fragments != "addresses":
            continue
        winner, counted = tables.search(p, direction)
        order = [i for i, r in enumerate(ruleset.rules)
                 if _fw_model.matches(r, p, direction)]
        deciding = [i for i in order if ruleset.rules[i].decides]
        want = deciding[0] if deciding else None
        assert (tables.deciding[winner] if winner is not None else None) == want
        stop = want if want is not None else len(ruleset.rules)
        assert [tables.counting[j] for j in counted] == [
            i for i in order if i < stop and not ruleset.rules[i].decides]


def test_tables_size_and_sharing():
    a = abi()
    rules = [Rule("drop", protocol="tcp", dport=i + 1, src="10.%d.%d.0/24" % (i // 256, i % 256))
             for i in range(a.max_rules)]
    t = _fw_compile.compile_ruleset(RuleSet(rules))
    # one port class per elementary interval: at most 2 n + 1 per field
    assert t.nclasses <= a.max_classes
    assert len(t.lpm) == 4 + a.max_rules
    # IPv4 sources in the hash of prefixes (one length), nothing else
    mode = {v: k for k, v in a.enums["addr_mode"].items()}
    assert [mode[m] for m in t.meta["addr_mode"]] == [
        "FW_ADDR_HASH", "FW_ADDR_ANY", "FW_ADDR_ANY", "FW_ADDR_ANY"]
    assert t.meta["lengths"][0] == bytes([24, 0, 0, 0])
    many = [Rule("drop", src="10.0.0.0/%d" % n) for n in (8, 12, 16, 20, 24)]
    t = _fw_compile.compile_ruleset(RuleSet(many))
    assert mode[t.meta["addr_mode"][0]] == "FW_ADDR_LPM"


def test_model_counts_and_verdicts():
    rs = RuleSet([Rule("count", protocol="udp"), Rule("drop", dst="10.0.0.2"),
                  Rule("pass", protocol="udp")], default="drop", malformed="pass")
    m = FirewallModel(rs)
    v = m.evaluate(udp())
    assert (v.action, v.reason, v.rule, v.counted) == (Action.DROP, Reason.RULE, 1, (0,))
    v = m.evaluate(bytes(pk.udp_packet("10.0.0.1", "10.0.0.3", 1, 2)))
    assert (v.action, v.rule) == (Action.PASS, 2)
    v = m.evaluate(bytes(pk.tcp_packet("10.0.0.1", "10.0.0.3", 1, 2)))
    assert (v.action, v.reason, v.rule) == (Action.DROP, Reason.DEFAULT, None)
    v = m.evaluate(udp()[:20])
    assert (v.action, v.reason) == (Action.PASS, Reason.MALFORMED)
    assert m.counters == [[2, 2 * len(udp()), 0], [1, len(udp()), 1], [1, len(udp()), 0]]
    assert m.reasons[Reason.MALFORMED] == [1, 20, 0]


def test_model_replace_carries_counters_and_buckets():
    limit = Rule(rate_limit(1, burst=1), protocol="udp")
    m = FirewallModel(RuleSet([limit]), clock=lambda: 0)
    assert m.evaluate(udp()).passed
    m.replace(RuleSet([Rule("drop", protocol="tcp"), limit]))
    v = m.evaluate(udp())
    assert (v.action, v.reason, v.rule) == (Action.DROP, Reason.RATE_LIMITED, 1)
    assert m.counters == [[0, 0, 0], [2, 2 * len(udp()), 1]]
    m.replace(RuleSet([Rule(rate_limit(1, burst=2), protocol="udp")]))
    assert m.evaluate(udp()).passed and m.counters == [[1, len(udp()), 0]]


def test_model_token_bucket():
    now = [0]
    m = FirewallModel(RuleSet([Rule(rate_limit(10, burst=2), protocol="udp")]),
                      clock=lambda: now[0])
    out = []
    for t_ms in (0, 0, 0, 50, 99, 100, 150, 200, 200, 200, 1000, 1000, 1000):
        now[0] = t_ms * 1_000_000
        out.append(m.evaluate(udp()).action is Action.PASS)
    # 2 at once, then one per 100 ms; a quiet second refills only the burst
    assert out == [True, True, False, False, False, True, False, True, False, False,
                   True, True, False]
    v = m.evaluate(udp(), now=1_000_000_000)
    assert v.reason is Reason.RATE_LIMITED and v.rule == 0
    assert m.counters[0] == [14, 14 * len(udp()), 8]
