"""The flow monitor's clock: exact per packet with exact_clock=True; by
default a cached per-CPU reading for packets without SYN/FIN/RST, never
later than the real time and at most one scheduler tick earlier (HZ >= 100:
10 ms), while SYN/FIN/RST always read the clock."""

import time

import pytest

from pybpfnet.dataplanes.flowmon import FlowMonitor
from pybpfnet.packet import tcp_packet, udp_packet

TICK_NS = 10_000_000          # 1/CONFIG_HZ is at most 10 ms


def mono():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@pytest.mark.parametrize("exact", [False, True], ids=["cached", "exact"])
def test_timestamps_bounded_by_the_real_clock(exact):
    frame = udp_packet("10.0.0.1", "10.0.0.2", 1000, 53, b"x")
    with FlowMonitor(max_flows=16, exact_clock=exact) as fm:
        prog = fm.program("egress")
        t0 = mono()
        prog.test_run(frame, repeat=50)
        t1 = mono()
        time.sleep(0.03)                  # several ticks: the next reading is fresh
        t2 = mono()
        prog.test_run(frame)
        t3 = mono()
        (rec,) = fm.active()
    slack = 0 if exact else TICK_NS
    assert t0 - slack <= rec.first_ns <= t1
    assert t2 - slack <= rec.last_ns <= t3
    assert rec.last_ns - rec.first_ns >= t2 - t1 - slack


def test_fin_and_syn_read_the_clock():
    with FlowMonitor(max_flows=16) as fm:
        prog = fm.program("egress")
        prog.test_run(udp_packet("10.0.0.1", "10.0.0.2", 1000, 53, b"x"), repeat=5)  # caches
        t0 = mono()
        prog.test_run(tcp_packet("10.0.0.1", "10.0.0.2", 4000, 80, flags="S"))
        t1 = mono()
        prog.test_run(tcp_packet("10.0.0.1", "10.0.0.2", 4000, 80, flags="FA"))
        t2 = mono()
        (fin,) = [r for r in fm.poll(0) if r.reason == "fin"]
    assert t0 <= fin.first_ns <= t1 <= fin.last_ns <= t2
