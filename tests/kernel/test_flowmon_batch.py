"""Batch reading of flow monitor records (FlowMonitor.read_batch /
poll_batch / sweep(batch=True), RingBuf.consume_raw): the columns, the numpy
view and the lazily built FlowRecords equal what the generic BTF codec
decodes from the same bytes, record for record."""

import struct

import pytest

from pybpfnet.dataplanes import _flow_abi
from pybpfnet.dataplanes._flow_batch import FlowBatch, _leaves, columns_of
from pybpfnet.dataplanes.flowmon import FlowMonitor
from pybpfnet.packet import ICMP, TCP, UDP, Ethernet, IPv4, IPv6

np = pytest.importorskip("numpy")


def frames():
    """A mix of flows: IPv4/IPv6, TCP handshakes with RTT, FIN and RST
    exports, UDP and ICMP."""
    out = []
    for i in range(40):
        if i % 4 == 0:
            ip = IPv4(src="10.0.%d.1" % i, dst="10.9.0.2")
            out.append(("egress", bytes(Ethernet() / ip / UDP(sport=1000 + i, dport=53) / (b"q" * i))))
        elif i % 4 == 1:
            ip = IPv6(src="fd00::%x" % (i + 1), dst="fd00::2")
            syn = Ethernet() / ip / TCP(sport=2000 + i, dport=80, flags="S")
            ack = Ethernet() / IPv6(src="fd00::2", dst="fd00::%x" % (i + 1)) / TCP(
                sport=80, dport=2000 + i, flags="SA")
            fin = Ethernet() / ip / TCP(sport=2000 + i, dport=80, flags="FA") / b"bye"
            out += [("egress", bytes(syn)), ("ingress", bytes(ack)), ("egress", bytes(fin))]
        elif i % 4 == 2:
            ip = IPv4(src="192.168.1.%d" % i, dst="192.168.1.250")
            out.append(("ingress", bytes(Ethernet() / ip / TCP(sport=3000 + i, dport=443,
                                                               flags="RA"))))
        else:
            ip = IPv4(src="172.16.0.%d" % i, dst="172.16.0.1")
            out.append(("egress", bytes(Ethernet() / ip / ICMP(type=8, code=0) / b"ping")))
    return out


def codec_records(fm, batch):
    """The reference: the generic BTF codec on the batch's bytes, then
    FlowMonitor's per-object constructor."""
    reasons = fm._abi.reasons
    return [fm._record(e.key, e.stats, reasons.get(e.reason, str(e.reason)))
            for e in fm._abi.record.decode_many(batch.data, len(batch))]


@pytest.fixture
def fm():
    with FlowMonitor(max_flows=8, ring_size=1 << 16) as fm:
        yield fm


def drive(fm):
    for direction, frame in frames():
        fm.program(direction).test_run(frame, repeat=2)


def test_batch_equals_per_record_decode(fm):
    drive(fm)                 # FIN/RST exports and, past 8 flows, "full" records
    batch = fm.read_batch()
    assert isinstance(batch, FlowBatch) and len(batch) > 20
    assert {r.reason for r in batch} >= {"fin", "rst", "full"}
    want = codec_records(fm, batch)
    assert batch.records() == want
    assert [batch[i] for i in range(len(batch))] == want and batch[-1] == want[-1]
    with pytest.raises(IndexError):
        batch[len(batch)]
    # columns, without numpy and with it, say the same
    arr = batch.array()
    assert batch.columns == _flow_abi.RECORD_COLUMNS == columns_of(fm._abi.record)
    for name in batch.columns:
        col = batch.column(name)
        assert len(col) == len(batch)
        assert list(col) == arr[name].tolist(), name
    assert list(batch.column("packets")) == [r.packets for r in want]
    assert list(batch.column("bytes")) == [r.bytes for r in want]
    assert [batch.reasons[v] for v in batch.column("reason")] == [r.reason for r in want]
    assert [bytes(a)[12:] for a in arr["saddr"][arr["family"] == 4]] == \
        [r.src.packed for r in want if r.family == 4]
    assert batch.tuples()[0][_flow_abi.RECORD_COLUMNS.index("sport")] == want[0].sport
    # the ring is empty now
    assert len(fm.read_batch()) == 0 and fm.read_batch().records() == []


def test_sweep_and_flush_batches(fm):
    for i in range(5):
        fm.program("egress").test_run(bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2")
                                            / UDP(sport=i + 1, dport=9) / b"x"), repeat=i + 1)
    snap = {r.sport: r for r in fm.active()}
    fm.idle_timeout = 0.0
    batch = fm.sweep(batch=True)
    assert len(batch) == 5 and {r.reason for r in batch} == {"idle"}
    assert sorted(zip(batch.column("sport"), batch.column("packets"))) == \
        [(i + 1, i + 1) for i in range(5)]
    for r in batch.records():
        assert (r.packets, r.bytes, r.first_ns) == (snap[r.sport].packets, snap[r.sport].bytes,
                                                    snap[r.sport].first_ns)
    assert batch.records() == codec_records(fm, batch)
    assert fm.stats().active_flows == 0
    both = batch + fm.read_batch()
    assert len(both) == 5


def test_poll_batch_runs_the_sweep(fm):
    fm.program("egress").test_run(bytes(Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2")
                                        / UDP(sport=7, dport=9)))
    fm.idle_timeout = 0.0
    fm.sweep_interval = 0.0
    batch = fm.poll_batch(timeout=0)
    assert [(r.sport, r.reason) for r in batch] == [(7, "idle")]


def test_ring_consume_raw(fm):
    drive(fm)
    ring = fm.ring
    size = fm._abi.record.size
    before = ring.received
    data, n = ring.consume_raw()
    assert n > 0 and len(data) == n * size and ring.received == before + n
    # exactly the bytes the decoded path would see: the reason column is
    # a known enum value in every record
    off = {name: o for name, o, *_ in _leaves(fm._abi.record)}
    reasons = [struct.unpack_from("=I", data, i * size + off["reason"])[0] for i in range(n)]
    assert set(reasons) <= set(fm._abi.reasons)
    assert ring.consume_raw() == (b"", 0)
    assert not ring.wait(0.01)
    fm.program("egress").test_run(bytes(Ethernet() / IPv4() / TCP(flags="R")))
    assert ring.wait(1)
    data, n = ring.consume_raw(record_size=64)      # cut to 64 bytes: counted
    assert (len(data), n) == (64, 1) and ring.mismatched >= 1
