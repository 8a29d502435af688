"""Firewall rule values: conversion, validation, text forms."""

import ipaddress

import pytest
from hypothesis import given, settings

from pybpfnet.dataplanes.firewall import (Action, PortRange, RateLimit, Rule, RuleError,
                                          RuleSet, TcpFlags, Verdict, Reason, rate_limit)

from strategies import fw_rules, fw_rulesets


def test_rule_conversions():
    r = Rule("DROP", src="10.0.0.0/8", protocol=["tcp", "udp"], dport="1000-2000",
             direction="Ingress", name="x")
    assert r.action is Action.DROP
    assert r.src == ipaddress.ip_network("10.0.0.0/8") and r.family == 4
    assert r.protocol == frozenset((6, 17))
    assert r.dport == PortRange(1000, 2000) and 1500 in r.dport and 999 not in r.dport
    assert r.direction == "ingress" and r.has_l4 and r.decides
    assert Rule("pass", dst="2001:db8::1").dst.prefixlen == 128
    assert Rule("count").decides is False
    assert Rule(rate_limit(100)).action == RateLimit(100, 100)
    assert Rule("pass", protocol="icmp", icmp_type="echo-request").icmp_type == 8
    assert Rule("pass", protocol="icmpv6", icmp_type="echo-request").icmp_type == 128
    assert Rule("pass", protocol="tcp", sport=(1, 2)).sport == PortRange(1, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(src="10.0.0.1/8"), "src: .*host bits"),
    (dict(src="10.0.0.0/8", dst="::/0"), "different IP versions"),
    (dict(dport=22), "need protocol tcp, udp"),
    (dict(protocol="icmp", dport=22), "need protocol tcp, udp"),
    (dict(protocol="udp", tcp_flags="syn"), "tcp_flags needs protocol tcp"),
    (dict(protocol="tcp", icmp_type=8), "icmp_type needs protocol icmp"),
    (dict(protocol="icmp", icmp_type="nope"), "unknown name 'nope'"),
    (dict(protocol="icmp", icmp_type=256), "icmp_type: expected 0..255"),
    (dict(protocol="nope"), "protocol: unknown name"),
    (dict(protocol=300), "protocol: expected 0..255"),
    (dict(protocol=[]), "empty list"),
    (dict(protocol="tcp", dport="80-70"), "dport: port range"),
    (dict(protocol="tcp", dport=70000), "dport: port range"),
    (dict(protocol="tcp", dport="http"), "dport: expected a port"),
    (dict(protocol="tcp", tcp_flags="syn,bogus"), "unknown flag 'bogus'"),
    (dict(direction="sideways"), "direction: expected"),
    (dict(src="10.0.0.0/8", protocol="icmpv6"), "never appears in IPv4"),
])
def test_rule_errors(kwargs, message):
    with pytest.raises(RuleError, match=message):
        Rule("drop", **kwargs)


def test_actions_and_policies():
    with pytest.raises(RuleError, match="action: expected"):
        Rule("reject")
    with pytest.raises(RuleError, match="pps must be"):
        rate_limit(0)
    with pytest.raises(RuleError, match="burst must be"):
        rate_limit(10, 0)
    assert rate_limit(3).cost_ns == 333333333 and rate_limit(3, 2).tolerance_ns == 333333333
    with pytest.raises(RuleError, match="default: expected"):
        RuleSet(default="count")
    with pytest.raises(RuleError, match="fragments: expected"):
        RuleSet(fragments="reassemble")
    with pytest.raises(RuleError, match="rule 2: expected a Rule"):
        RuleSet([Rule("drop"), "drop"])
    rs = RuleSet([{"action": "drop", "protocol": "tcp", "dport": 22}], default="drop")
    assert rs.rules[0].dport == PortRange(22, 22) and rs.default is Action.DROP


def test_tcp_flags():
    assert TcpFlags.parse("syn") == TcpFlags(0x02, 0x02)
    assert TcpFlags.parse("SYN,!ack") == TcpFlags(0x02, 0x12)
    assert TcpFlags.parse("syn/syn,ack") == TcpFlags(0x02, 0x12)
    assert TcpFlags.parse("syn|fin") == TcpFlags(0x03, 0x03)
    assert TcpFlags.parse(0x12) == TcpFlags(0x12, 0xFF)
    assert TcpFlags.parse((0, 0x04)).matches(0x10) and not TcpFlags(0, 4).matches(4)
    assert str(TcpFlags.parse("syn,!ack")) == "syn,!ack"
    with pytest.raises(RuleError, match="within mask"):
        TcpFlags(0x02, 0x01)


def test_describe_and_verdict_text():
    r = Rule("drop", protocol="tcp", dport=22, src="10.0.0.0/8")
    assert r.describe() == "drop tcp dport 22 from 10.0.0.0/8"
    assert Rule(rate_limit(5, 2), protocol="icmp", icmp_type=8).describe() == \
        "rate_limit(5 pps, burst 2) icmp type 8"
    v = Verdict(Action.DROP, Reason.RULE, 3)
    assert str(v) == "drop: rule (rule 3)" and not v.passed


@settings(max_examples=300)
@given(fw_rules())
def test_rule_dict_round_trip(rule):
    assert Rule.from_dict(rule.to_dict()) == rule


@settings(max_examples=100)
@given(fw_rulesets())
def test_ruleset_dict_round_trip(rs):
    assert RuleSet.from_dict(rs.to_dict()) == rs


def test_from_dict_errors():
    with pytest.raises(RuleError, match="action: missing"):
        Rule.from_dict({"protocol": "tcp"})
    with pytest.raises(RuleError, match="pps: rate_limit needs pps"):
        Rule.from_dict({"action": "rate_limit"})
    with pytest.raises(RuleError, match="pps: only a rate_limit action"):
        Rule.from_dict({"action": "drop", "pps": 3})
    with pytest.raises(RuleError, match="port: unknown key"):
        Rule.from_dict({"action": "drop", "port": 3})
