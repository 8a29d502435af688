"""TrafficGenerator and Sweep argument checks: they fail before anything
touches the kernel, so they run without privileges."""

import pytest

import pybpfnet as bn

FRAME = bytes(60)


def test_sweep_errors():
    with pytest.raises(ValueError, match="even"):
        bn.Sweep(offset=35, count=2)
    with pytest.raises(ValueError, match="2 or 4"):
        bn.Sweep(offset=34, count=2, size=3)
    with pytest.raises(ValueError, match="count"):
        bn.Sweep(offset=34, count=0)
    with pytest.raises(TypeError, match="offset"):
        bn.Sweep(offset="34", count=2)
    with pytest.raises(ValueError, match="at most 2"):
        bn.Sweep(offset=34, count=2, checksums=(24, 40, 50))
    with pytest.raises(ValueError, match="overlaps"):
        bn.Sweep(offset=34, count=2, checksums=(34,))
    with pytest.raises(ValueError, match="start"):
        bn.Sweep(offset=34, count=2, start=70_000)
    s = bn.Sweep(offset=26, size=4, count=4, checksums=[24])
    assert s.checksums == (24,) and s.start is None


@pytest.mark.parametrize("packets, kw, err, match", [
    ([], {}, ValueError, "empty"),
    ([FRAME, bytes(13)], {}, ValueError, "packet 1 is 13 bytes"),
    ("abc", {}, TypeError, "str"),
    (42, {}, TypeError, "packets must be"),
    ([FRAME, 1], {}, TypeError, "packet 1"),
    (FRAME, {"count": 0}, ValueError, "count"),
    (FRAME, {"count": 2.5}, TypeError, "count"),
    (FRAME, {"rate_pps": -1}, ValueError, "rate_pps"),
    (FRAME, {"rate_pps": float("inf")}, ValueError, "rate_pps"),
    (FRAME, {"duration": 0}, ValueError, "duration"),
    (FRAME, {"cpus": 0}, ValueError, "cpus"),
    (FRAME, {"cpus": True}, TypeError, "cpus"),
    (FRAME, {"cpus": [0, 0]}, ValueError, "distinct"),
    (FRAME, {"cpus": [100_000]}, ValueError, "may only run on"),
    (FRAME, {"batch_size": 0}, ValueError, "batch_size"),
    (FRAME, {"batch_size": 257}, ValueError, "batch_size"),
    (FRAME, {"sweep": 34}, TypeError, "Sweep"),
    (FRAME[:30], {"sweep": bn.Sweep(offset=34, count=2)}, ValueError, "too short"),
])
def test_bad_arguments(packets, kw, err, match):
    with pytest.raises(err, match=match):
        bn.TrafficGenerator("eth0", packets, **kw)


def test_result_record():
    r = bn.TrafficResult(frames=1000, bytes=60_000, elapsed=0.5, per_packet=(1000,),
                         per_cpu={0: 1000}, calls=3)
    assert r.pps == 2000 and r.bps == 960_000
    assert str(r) == "1000 frames in 0.500 s: 0.002 Mpps, 1.0 Mbit/s"
