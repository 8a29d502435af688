"""Katran-style fixture tables (description, input packet, expected verdict)
through the reference model and the kernel engine at XDP and TC."""

import errno
import re

import pytest

import pybpfnet as bn
from pybpfnet.dataplanes import _fw_fixtures
from pybpfnet.dataplanes.firewall import Action, Firewall, Reason

TABLES = _fw_fixtures.tables()
ROWS = [(name, fx) for name, (_, rows) in TABLES.items() for fx in rows]


def _id(row):
    name, fx = row
    return "%s-%s" % (name, re.sub(r"[^a-z0-9]+", "-", fx.description.lower()).strip("-"))


@pytest.fixture(scope="module")
def firewalls():
    made = {}
    try:
        for name, (ruleset, _) in TABLES.items():
            made[name] = Firewall(None, ruleset)
        yield made
    finally:
        for fw in made.values():
            fw.close()


def _expected_rule(name, fx):
    rules = TABLES[name][0].rules
    return None if fx.rule is None else [r.name for r in rules].index(fx.rule)


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_fixture(firewalls, row):
    name, fx = row
    fw = firewalls[name]
    v = fw.evaluate(fx.packet, fx.direction)
    assert (v.action, v.reason, v.rule) == (fx.action, fx.reason, _expected_rule(name, fx)), v
    hooks = ["tc"] if fx.direction == "egress" else ["xdp", "tc"]
    ran = 0
    for hook in hooks:
        try:
            got = fw.run(fx.packet, fx.direction, hook=hook)
        except bn.BpfError as e:
            # test_run refuses frames shorter than Ethernet, and at TC an IP
            # ethertype without a whole IP header
            assert e.errno == errno.EINVAL and len(fx.packet) < 54, e
            continue
        ran += 1
        assert got is fx.action, "%s at %s" % (got, hook)
    assert ran or len(fx.packet) < 14


def test_fixture_tables_cover_every_reason_and_rule():
    reasons = {fx.reason for _, fx in ROWS}
    assert reasons == set(Reason) - {Reason.RATE_LIMITED}
    for name, (ruleset, rows) in TABLES.items():
        used = {fx.rule for fx in rows}
        for r in ruleset.rules:
            assert r.action is Action.COUNT or r.name in used, \
                "rule %s has no fixture row" % r.name
