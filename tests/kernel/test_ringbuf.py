"""Ring buffers: batch-decoded records, blocking, asyncio, several rings."""

import asyncio
import threading

import pytest

import pybpfnet as bn


def emit(obj, n):
    """Run the 'emit' program once: it writes n (<= 64) events."""
    obj.programs["emit"].test_run(bytes([n]) + bytes(63))


@pytest.fixture
def events(maps_all):
    rb = maps_all.maps["events"]
    assert isinstance(rb, bn.RingBuf)
    rb.set_event_type(maps_all.globals.type_of("last_event"))
    return rb


def test_poll_decodes_typed_records(maps_all, events):
    assert events.poll(timeout=0) == []
    emit(maps_all, 3)
    recs = events.poll(timeout=1)
    assert [r.seq for r in recs] == [5, 6, 7]
    assert all(r.len == 8080 and r.tag == b"event!!\0" for r in recs)
    assert events.received == 3 and events.mismatched == 0


def test_raw_records_without_event_type(maps_all):
    rb = maps_all.maps["events"]
    emit(maps_all, 2)
    recs = rb.poll(timeout=1)
    assert len(recs) == 2 and all(isinstance(r, bytes) and len(r) == 24 for r in recs)


def test_description_event_type(maps_all):
    rb = maps_all.maps["events"].set_event_type(
        [("seq", "u64"), ("cpu", "u32"), ("len", "u32"), ("tag", "char[8]")])
    emit(maps_all, 1)
    (r,) = rb.poll(timeout=1)
    assert r.seq == 5 and r.tag == b"event!!\0"


def test_many_events_none_lost(maps_all, events):
    total = 0
    for _ in range(100):
        emit(maps_all, 64)
        total += len(events.consume())
    assert total == 6400
    # ring of 64 KiB holds 2048 32-byte records: fill without draining
    for _ in range(20):
        emit(maps_all, 64)
    assert len(events.consume()) == 1280


def test_poll_blocks_until_a_producer_writes(maps_all, events):
    t = threading.Timer(0.2, emit, args=(maps_all, 1))
    t.start()
    recs = events.poll(timeout=5)
    t.join()
    assert len(recs) == 1


def test_poll_times_out(events):
    assert events.poll(timeout=0.05) == []


def test_blocking_iterator(maps_all, events):
    emit(maps_all, 5)
    it = iter(events)
    got = [next(it) for _ in range(5)]
    assert [r.seq for r in got] == [5, 6, 7, 8, 9]


def test_fileno_is_pollable(maps_all, events):
    import select
    p = select.poll()
    p.register(events.fileno(), select.POLLIN)
    assert p.poll(0) == []
    emit(maps_all, 1)
    assert p.poll(1000)


def test_async_iteration(maps_all, events):
    async def main():
        async def consume(n):
            out = []
            async for rec in events:
                out.append(rec)
                if len(out) == n:
                    return out

        task = asyncio.ensure_future(consume(4))
        await asyncio.sleep(0.05)
        emit(maps_all, 2)
        await asyncio.sleep(0.05)
        emit(maps_all, 2)
        return await asyncio.wait_for(task, 5)

    recs = asyncio.run(main())
    assert [r.seq for r in recs] == [5, 6, 7, 8]


def test_poller_consumes_several_rings(maps_all, events):
    other = maps_all.maps["events2"]
    with bn.RingBufPoller(events, other) as poller:
        emit(maps_all, 3)
        got = poller.poll(timeout=1)
        assert [(rb.name, r.seq) for rb, r in got] == [("events", 5), ("events", 6),
                                                        ("events", 7)]
        seen = []
        poller.remove(events)
        poller.add(events, callback=seen.append)
        emit(maps_all, 2)
        assert poller.poll(timeout=1) == []
        assert [r.seq for r in seen] == [8, 9]


def test_poller_async(maps_all, events):
    async def main():
        with bn.RingBufPoller(events) as poller:
            emit(maps_all, 2)
            out = []
            async for ring, rec in poller:
                out.append(rec.seq)
                if len(out) == 2:
                    return out

    assert asyncio.run(main()) == [5, 6]


def test_standalone_ringbuf_and_no_keys():
    with bn.Map.create("ringbuf", max_entries=4096) as rb:
        assert isinstance(rb, bn.RingBuf)
        assert rb.poll(0) == []
        with pytest.raises(TypeError, match="no keys"):
            rb[0]


def test_closed_object_closes_ring(test_objects):
    obj = bn.load(test_objects["maps_all"])
    rb = obj.maps["events"]
    rb.poll(0)
    obj.close()
    assert rb.closed
    with pytest.raises(ValueError, match="closed"):
        rb.poll(0)
