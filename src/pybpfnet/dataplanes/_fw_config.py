"""Firewall rule files in TOML (stdlib tomllib)::

    [firewall]              # policies, all optional
    default = "pass"        # no rule matched: "pass" or "drop"
    fragments = "addresses" # non-first fragments: "addresses", "drop", "pass"
    malformed = "drop"
    non_ip = "pass"

    [[rule]]                # in order; the first that matches decides
    name = "ssh-admin"
    action = "pass"         # "pass", "drop", "count", "rate_limit"
    protocol = "tcp"
    dport = 22              # or "1000-2000"
    src = "192.0.2.0/24"

    [[rule]]
    action = "rate_limit"
    pps = 100
    burst = 20
    protocol = "icmp"

A file with any error is rejected whole: RuleError("FILE:LINE: reason").
"""

import re

from pybpfnet.dataplanes import _toml
from pybpfnet.dataplanes._fw_compile import check_limits
from pybpfnet.dataplanes._fw_rules import Rule, RuleError, RuleSet

__all__ = ["parse_toml"]

_POLICIES = ("default", "fragments", "malformed", "non_ip")


class _Lines:
    """Where tables and keys are in the text: header lines of [firewall] and
    of each [[rule]], and the line of each key in them."""

    def __init__(self, text):
        self.firewall = None
        self.rules = []          # header line of each [[rule]]
        self.keys = {}           # (section, index) -> {key: line}
        self.top = {}            # top-level key -> line
        section = None
        for n, bracket, name, key in _toml.lines(text):
            if key is None:
                name = name.strip().strip("\"'")
                if bracket == "[[" and name == "rule":
                    self.rules.append(n)
                    section = ("rule", len(self.rules) - 1)
                elif bracket == "[" and name == "firewall":
                    self.firewall = n
                    section = ("firewall", 0)
                else:
                    section = ("other", name)
                    self.top.setdefault(name, n)
            elif section is None:
                self.top.setdefault(key, n)
            else:
                self.keys.setdefault(section, {}).setdefault(key, n)

    def rule(self, i, key=None):
        keys = self.keys.get(("rule", i), {})
        if key in keys:
            return keys[key]
        if i < len(self.rules):
            return self.rules[i]
        return self.top.get("rule", 1)

    def policy(self, key):
        return self.keys.get(("firewall", 0), {}).get(key, self.firewall or
                                                      self.top.get("firewall", 1))


def _field(message):
    m = re.match(r"([a-z_]+)(?:/[a-z_]+)?: ", message)
    return m.group(1) if m else None


def parse_toml(text, source="<rules>"):
    """A RuleSet from TOML text; RuleError("source:line: reason") on the
    first problem."""
    data = _toml.loads(text, source, RuleError)
    where = _Lines(text)

    def fail(line, message):
        raise RuleError("%s:%s: %s" % (source, line, message))

    for key in data:
        if key not in ("firewall", "rule"):
            fail(where.top.get(key, 1), "unknown table or key %r (expected [firewall] "
                 "and [[rule]])" % key)
    policies = data.get("firewall", {})
    if not isinstance(policies, dict):
        fail(where.top.get("firewall", 1), "firewall must be a table of policies")
    for key in policies:
        if key not in _POLICIES:
            fail(where.policy(key), "[firewall] %s: unknown policy (policies: %s)"
                 % (key, ", ".join(_POLICIES)))
    rules_data = data.get("rule", [])
    if not isinstance(rules_data, list):
        fail(where.top.get("rule", 1), "rule must be an array of tables ([[rule]])")
    rules = []
    for i, item in enumerate(rules_data):
        if not isinstance(item, dict):
            fail(where.rule(i), "rule %d: expected a table" % (i + 1))
        try:
            rules.append(Rule.from_dict(item))
        except RuleError as e:
            fail(where.rule(i, _field(str(e))), "rule %d%s: %s" % (
                i + 1, " (%s)" % item["name"] if isinstance(item.get("name"), str) else "",
                e))
    try:
        ruleset = RuleSet(rules, **policies)
    except RuleError as e:
        fail(where.policy(_field(str(e))), "[firewall] %s" % e)
    try:
        check_limits(ruleset)
    except RuleError as e:
        fail(where.rule(getattr(e, "rule_index", len(rules) - 1)), str(e))
    return ruleset
