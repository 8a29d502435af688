"""Katran-style fixture tables for the load balancer: every row's frame
through BPF_PROG_TEST_RUN and through the reference model, in order (flows
carry over), against the verdict and output frame the table expects."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpfnet import packet as pk
from pybpfnet._program import TcAction, XdpAction
from pybpfnet.dataplanes import _lb_fixtures
from pybpfnet.dataplanes._lb_abi import GUE_PORT, DropReason
from pybpfnet.dataplanes._lb_dataplane import Decap, LbDataplane, decap_model
from pybpfnet.testing import packets

TABLES = _lb_fixtures.tables()


def _apply(dp, before):
    for name, *args in before:
        getattr(dp, name)(*args)


def _hexdiff(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "first difference at byte %d: got %s want %s" % (
                i, got[i:i + 8].hex(), want[i:i + 8].hex())
    return "lengths %d vs %d" % (len(got), len(want))


@pytest.mark.parametrize("name", sorted(TABLES))
def test_fixture_table(name):
    table = TABLES[name]
    failures = []
    with LbDataplane(nat_tracking=table.nat_tracking) as dp:
        table.setup(dp)
        for fx in table.rows:
            _apply(dp, fx.before)
            model = dp.model()
            want = model.run(fx.packet)
            verdict, data = dp.run(fx.packet)
            problems = []
            if verdict != fx.verdict:
                problems.append("kernel verdict %s, expected %s" % (verdict, fx.verdict))
            elif data != fx.expected:
                problems.append("kernel output differs: " + _hexdiff(data, fx.expected))
            if want.verdict != fx.verdict:
                problems.append("model verdict %s" % want.verdict)
            elif want.data != fx.expected:
                problems.append("model output differs: " + _hexdiff(want.data, fx.expected))
            if fx.reason is not None and want.reason is not fx.reason:
                problems.append("model reason %s, expected %s" % (want.reason, fx.reason))
            if problems:
                failures.append("%s: %s" % (fx.description, "; ".join(problems)))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_fixture_drop_reasons_counted(name):
    """Each DROP row adds one to its reason's counter in the kernel."""
    table = TABLES[name]
    with LbDataplane(nat_tracking=table.nat_tracking) as dp:
        table.setup(dp)
        for fx in table.rows:
            _apply(dp, fx.before)
            before = dp.stats().drops
            dp.run(fx.packet)
            after = dp.stats().drops
            changed = {r for r in DropReason if after[r] != before[r]}
            assert changed == ({fx.reason} if fx.verdict == XdpAction.DROP else set()), \
                fx.description


def test_fixture_outputs_have_valid_checksums():
    """Independent of both implementations: every transmitted frame's IP,
    TCP/UDP and ICMP checksums verify (pybpfnet.packet's checker)."""
    for name, table in TABLES.items():
        for fx in table.rows:
            if fx.verdict != XdpAction.TX:
                continue
            parsed = pk.parse(fx.expected, strict=False)
            errors = [e for e in pk.checksum_errors(parsed)
                      if not _gue_zero_checksum(parsed, e)]
            assert not errors, "%s/%s: %s" % (name, fx.description, errors)


def _gue_zero_checksum(parsed, error):
    # the GUE encapsulation sends UDP checksum 0, over IPv6 too (RFC 6935)
    layer = parsed.layers[error.index]
    return error.layer == "UDP" and error.found == 0 and layer.dport == GUE_PORT


def test_tables_cover_every_mode_family_and_reason():
    rows = [fx for t in TABLES.values() for fx in t.rows]
    reasons = {fx.reason for fx in rows if fx.reason is not None}
    assert reasons == set(DropReason) - {DropReason.ADJUST}
    combos = {(svc[3], ":" in svc[0], svc[2]) for t in TABLES.values() for svc in t.services}
    for mode in ("ipip", "gue", "l2", "nat"):
        for v6 in (False, True):
            for proto in ("tcp", "udp"):
                assert (mode, v6, proto) in combos, (mode, v6, proto)


def _encapsulated_rows():
    for name, table in TABLES.items():
        for fx in table.rows:
            if fx.verdict == XdpAction.TX:
                yield name, fx


def test_decap_strips_every_encapsulation_the_lb_makes():
    backends = [a for a, _, _ in _lb_fixtures.BACKENDS.values()]
    rows = [(n, fx) for n, fx in _encapsulated_rows()
            if fx.expected[14:] != fx.packet[14:]
            and len(fx.expected) - len(fx.packet) in (20, 28, 40, 48)]
    assert len(rows) >= 10
    with Decap(backends) as decap, Decap(["10.255.0.1"]) as other:
        for name, fx in rows:
            verdict, data = decap.run(fx.expected)
            assert verdict == XdpAction.PASS
            assert data == fx.expected[:12] + fx.packet[12:], "%s/%s" % (name, fx.description)
            assert (verdict, data) == decap_model(fx.expected, backends)
            # the TC variant does the same
            assert decap.run(fx.expected, hook="tc") == (TcAction.OK, data)
            # not one of its addresses: untouched
            assert other.run(fx.expected) == (XdpAction.PASS, fx.expected)
        st = decap.stats()
        assert st["decapped"] == 2 * len(rows) and st["packets"] == 2 * len(rows)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    packets(v4=["10.0.0.10", "10.0.0.1"], v6=["fd00::10", "fd00::1"]),
    st.tuples(packets(ipv6=False, malformed=False), st.sampled_from(["ipip", "gue"]),
              st.sampled_from([("10.0.0.1", "10.0.0.10"), ("fd00::1", "fd00::10"),
                               ("10.0.0.1", "10.0.0.99")]))
    .map(lambda t: _wrap(*t))))
def test_decap_agrees_with_its_model(decap, frame):
    verdict, data = decap_model(frame, DECAP_ADDRS)
    assert decap.run(frame) == (verdict, data)
    if len(frame) >= 54 or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
        # (TC's test run refuses a frame with an IP ethertype but no IP header)
        assert decap.run(frame, hook="tc") == (TcAction.OK, data)


DECAP_ADDRS = ["10.0.0.10", "fd00::10"]


def _wrap(frame, how, addrs):
    p = pk.parse(frame, strict=False)
    try:
        if how == "ipip":
            return bytes(pk.encap_ipip(p, *addrs))
        return bytes(pk.encap_gue(p, *addrs, sport=1234, dport=GUE_PORT))
    except (ValueError, pk.BuildError):
        return frame


@pytest.fixture(scope="module")
def decap():
    with Decap(DECAP_ADDRS) as d:
        yield d
