"""Firewall rule files: TOML in, RuleSet out; any error rejects the whole
file with its line and reason."""

import pytest

from pybpfnet.dataplanes.firewall import (Action, PortRange, RateLimit, RuleError, RuleSet,
                                          load_rules, parse_rules)

GOOD = """\
# a small rule set
[firewall]
default = "drop"
fragments = "drop"

[[rule]]
name = "ssh-admin"
action = "pass"
protocol = "tcp"
dport = 22
src = "192.0.2.0/24"

[[rule]]
action = "rate_limit"
pps = 100
burst = 20
protocol = "icmp"
icmp_type = "echo-request"

[[rule]]
action = "count"
protocol = ["tcp", "udp"]
sport = "1024-65535"
direction = "egress"
"""


def test_good_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    rs = load_rules(path)
    assert isinstance(rs, RuleSet) and len(rs.rules) == 3
    assert rs.default is Action.DROP and rs.fragments == "drop" and rs.malformed is Action.DROP
    assert rs.rules[0].name == "ssh-admin" and rs.rules[0].dport == PortRange(22, 22)
    assert rs.rules[1].action == RateLimit(100, 20) and rs.rules[1].icmp_type == 8
    assert rs.rules[2].protocol == frozenset((6, 17))


def test_round_trip_through_toml_text():
    rs = parse_rules(GOOD)
    lines = []
    d = rs.to_dict()
    lines.append("[firewall]")
    lines += ['%s = "%s"' % kv for kv in d["firewall"].items()]
    for rule in d["rule"]:
        lines.append("[[rule]]")
        for k, v in rule.items():
            lines.append("%s = %s" % (k, repr(v).replace("'", '"')))
    assert parse_rules("\n".join(lines)) == rs


def test_empty_file_is_the_default_policy():
    rs = parse_rules("")
    assert rs == RuleSet()


@pytest.mark.parametrize("text, where, reason", [
    ("[firewall\n", 1, "TOML syntax"),
    ('[[rule]]\naction = "drop"\nprotocol = "tcp"\ndport = 70000\n', 4,
     "rule 1: dport: port range"),
    ('[[rule]]\naction = "drop"\n\n[[rule]]\nname = "web"\naction = "pass"\n'
     'protocol = "tcp"\nsrc = "10.0.0.1/8"\n', 8, r"rule 2 \(web\): src: .*host bits"),
    ('[[rule]]\naction = "drop"\nport = 22\n', 3, "rule 1: port: unknown key"),
    ('[[rule]]\naction = "reject"\n', 2, "rule 1: action: expected"),
    ('[[rule]]\nprotocol = "tcp"\n', 1, "rule 1: action: missing"),
    ('[[rule]]\naction = "drop"\ndport = 22\n', 1, "need protocol"),
    ('[firewall]\ndefault = "drop"\nfragment = "drop"\n', 3, "fragment: unknown policy"),
    ('[firewall]\nmalformed = "count"\n', 2, "malformed: expected 'pass' or 'drop'"),
    ('[rules]\naction = "drop"\n', 1, "unknown table or key 'rules'"),
    ('rule = 5\n', 1, r"rule must be an array of tables"),
    ('[[rule]]\naction = "rate_limit"\nprotocol = "udp"\n', 1, "pps: rate_limit needs pps"),
])
def test_errors_name_line_and_reason(text, where, reason):
    with pytest.raises(RuleError, match=r"^rules\.toml:%d: .*%s" % (where, reason)):
        parse_rules(text, "rules.toml")


def test_too_many_rules_names_the_first_rule_over():
    text = '[[rule]]\naction = "count"\nprotocol = "tcp"\n' * 65
    with pytest.raises(RuleError, match=r"^r:193: more than 64 count rules"):
        parse_rules(text, "r")


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RuleError, match="not UTF-8"):
        load_rules(path)
