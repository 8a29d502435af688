"""The BPF connection tracker against its Python reference model: packet
sequences (valid and hostile) run through BPF_PROG_TEST_RUN and the model;
tables, counters and events must agree after every packet."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import pybpfnet as bn
from pybpfnet.dataplanes import _ct_abi as abi
from pybpfnet.dataplanes._ct_testing import Harness, tcp_sequences, udp_icmp_sequences
from pybpfnet.dataplanes.conntrack import ConntrackOptions, configure
from pybpfnet.testing import packets

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


def _load(**options):
    spec = bn.open_bundled(abi.OBJECT)
    configure(spec, ConntrackOptions(drop_invalid=True, **options))
    return spec.load()


class _Pair:
    # the harnesses are made with the object: the ring buffer consumer they
    # open lives as long as the module's object, not one test
    def __init__(self, obj):
        self.tc = Harness(obj)
        self.xdp = Harness(obj, abi.PROG_XDP)


@pytest.fixture(scope="module")
def ct_default():
    # udp_stream_after=0: a UDP flow is a stream as soon as it is two-way,
    # so the outcome does not depend on how fast the test runs
    with _load(udp_stream_after=0) as obj:
        yield _Pair(obj)


@pytest.fixture(scope="module")
def ct_strict():
    # no pick-up of mid-stream connections, UDP never a stream
    with _load(tcp_loose=False, udp_stream_after=10**6) as obj:
        yield _Pair(obj)


@pytest.fixture(scope="module")
def ct_liberal():
    with _load(tcp_liberal=True, udp_stream_after=0) as obj:
        yield _Pair(obj)


def _run(harness, frames):
    harness.reset()
    for label, frame in frames:
        harness.send(frame, label)


@settings(max_examples=250, **SETTINGS)
@given(frames=tcp_sequences())
def test_tcp_sequences_agree(ct_default, frames):
    _run(ct_default.tc, frames)


@settings(max_examples=60, **SETTINGS)
@given(frames=tcp_sequences())
def test_tcp_sequences_agree_without_pickup(ct_strict, frames):
    _run(ct_strict.tc, frames)


@settings(max_examples=60, **SETTINGS)
@given(frames=tcp_sequences())
def test_tcp_sequences_agree_liberal(ct_liberal, frames):
    _run(ct_liberal.tc, frames)


@settings(max_examples=120, **SETTINGS)
@given(frames=udp_icmp_sequences())
def test_udp_and_icmp_sequences_agree(ct_default, frames):
    _run(ct_default.tc, frames)


@settings(max_examples=40, **SETTINGS)
@given(frames=udp_icmp_sequences())
def test_udp_never_a_stream_agrees(ct_strict, frames):
    _run(ct_strict.tc, frames)


@settings(max_examples=400, **SETTINGS)
@given(frames=st.lists(packets(), min_size=1, max_size=3))
def test_hostile_frames_agree_at_xdp(ct_default, frames):
    """Any frame (VLAN, options, extension headers, fragments, truncated,
    random bytes) gets the same verdict and the same entry from both."""
    h = ct_default.xdp
    h.reset()
    for frame in frames:
        if len(frame) >= 14:
            h.send(frame)


@settings(max_examples=100, **SETTINGS)
@given(first=tcp_sequences(max_extra=2), second=udp_icmp_sequences(max_len=4),
       data=st.data())
def test_interleaved_connections_agree(ct_default, first, second, data):
    """Two connections' packets interleaved: keys keep them apart."""
    frames = list(first)
    for item in second:
        frames.insert(data.draw(st.integers(0, len(frames))), item)
    _run(ct_default.tc, frames)


def test_harness_sees_a_wrong_model(ct_default, monkeypatch):
    """The comparison is not vacuous: a model that forgets window check II
    (retransmitted data is ignored) is caught."""
    from pybpfnet.dataplanes import _ct_model as M
    from pybpfnet.dataplanes._ct_testing import Mismatch
    from pybpfnet.packet import tcp_packet

    real = M.CtModel._in_window

    def forgetful(self, e, dir, old, p):
        r = real(self, e, dir, old, p)
        return M.A_ACCEPT if r == M.A_IGNORE else r

    monkeypatch.setattr(M.CtModel, "_in_window", forgetful)
    h = ct_default.tc
    h.reset()
    seq = [("S", 1000, 0, b""), ("SA", 5000, 1001), ("A", 1001, 5001),
           ("PA", 1001, 5001, b"x" * 1000), ("PA", 1001 - 200000, 5001, b"x")]
    with pytest.raises(Mismatch, match="table"):
        for i, (flags, s, a, *data) in enumerate(seq):
            back = flags == "SA"
            src, dst, sp, dp = ("10.0.0.2", "10.0.0.1", 80, 40000) if back else \
                ("10.0.0.1", "10.0.0.2", 40000, 80)
            h.send(tcp_packet(src, dst, sp, dp, flags=flags, seq=s % (1 << 32), ack=a,
                              payload=data[0] if data else b""), flags)
