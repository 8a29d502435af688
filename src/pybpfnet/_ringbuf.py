"""Ring buffers (BPF_MAP_TYPE_RINGBUF): records decoded in batches.

The consumer reads the mmaped ring in C (csrc/glue) and copies every
committed record into one buffer per call; Python then decodes the whole
buffer with one ``struct.iter_unpack`` when the records have a fixed type.
The map fd is pollable, so a ring plugs into ``select``/``epoll``/asyncio.
"""

import asyncio
import select
import threading
import time

from pybpfnet import _binding as _b
from pybpfnet import _codec
from pybpfnet._map import Map, MapType, _NoKeys, register

__all__ = ["RingBuf", "RingBufPoller"]


class RingBuf(_NoKeys, Map):
    """A BPF ring buffer, consumed from Python.

    ``event_type`` (a codec or type description such as
    ``[("pid", "u32"), ("comm", "char[16]")]``, or a struct class/codec from
    an object's BTF) fixes the record layout; without one, records are
    ``bytes`` of their exact length. ``poll(timeout)`` returns a list of
    records; iterating blocks for more; ``async for`` works under asyncio;
    ``fileno()`` is epoll-able. One consumer per ring: calls are serialized
    by a lock. Needs CAP_BPF.
    """

    map_type = MapType.RINGBUF

    def __init__(self, *args, event_type=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._consumer = None
        self._lock = threading.Lock()
        self.received = 0
        self.set_event_type(event_type)

    def set_event_type(self, event_type):
        """Decode records as ``event_type`` (None: raw bytes)."""
        if event_type is not None and hasattr(event_type, "_codec"):
            event_type = event_type._codec
        codec = _codec.from_description(event_type, "event") if event_type is not None else None
        if codec is not None and codec.fmt is None:
            codec = None
        self.event_type = codec
        # one ring's worth of records fits in one consume call
        self._out_size = max(self.max_entries, 4096)
        self._out_c, self._out_view = _b.new_buffer(self._out_size)
        return self

    @property
    def mismatched(self):
        """Records whose length differed from event_type's size (padded or
        cut to fit; see the ring's producer)."""
        return self._consumer.mismatch if self._consumer else 0

    def fileno(self):
        return self.fd

    def _ensure(self):
        if self._consumer is None:
            self._consumer = _b.RingConsumer(self.fd, self.max_entries)
        return self._consumer

    def close(self):
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        super().close()

    def available(self):
        """Bytes committed by producers and not yet consumed."""
        return self._ensure().available()

    def consume(self):
        """Every record available now (no waiting), decoded."""
        with self._lock:
            cons = self._ensure()
            out = []
            codec = self.event_type
            rec = codec.size if codec is not None else 0
            while True:
                n, used = cons.consume(self._out_c, self._out_size, rec)
                if n == 0:
                    break
                view = self._out_view
                if codec is not None:
                    out.extend(codec.decode_many(view, n))
                else:
                    out.extend(_split_records(view, used))
                if used < self._out_size // 2:
                    break
            self.received += len(out)
            return out

    def consume_raw(self, record_size=None):
        """Every record available now (no waiting), undecoded: ``(data,
        count)`` where ``data`` is one ``bytes`` holding ``count`` records
        of ``record_size`` bytes back to back (default: the event type's
        size; shorter records are zero padded, longer ones cut, both
        counted in ``mismatched``). For batch decoding (numpy
        ``frombuffer``, ``struct.iter_unpack``) without a Python object per
        record."""
        rec = record_size if record_size is not None else (
            self.event_type.size if self.event_type is not None else 0)
        if rec <= 0:
            raise ValueError("consume_raw: needs a record_size (the ring has no event type)")
        with self._lock:
            cons = self._ensure()
            chunks, total = [], 0
            while True:
                n, used = cons.consume(self._out_c, self._out_size, rec)
                if n == 0:
                    break
                chunks.append(bytes(self._out_view[:used]))
                total += n
                if used < self._out_size // 2:
                    break
            self.received += total
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return data, total

    def wait(self, timeout=None):
        """Wait until the ring has data or ``timeout`` seconds passed (None:
        forever); True when data is available. Consumes nothing."""
        if self.available():
            return True
        return bool(self._wait_for(self.available, timeout))

    def poll(self, timeout=None):
        """Records available within ``timeout`` seconds (None: wait for at
        least one; 0: don't wait). Returns a possibly empty list."""
        out = self.consume()
        if out or timeout == 0:
            return out
        return self._wait_for(self.consume, timeout)

    def _wait_for(self, check, timeout):
        """Sleep on the ring's fd (None: no time limit) until ``check()``
        returns something true or ``timeout`` seconds passed; returns what
        ``check()`` returned last."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            p.poll(None if left is None else int(left * 1000) + 1)
            got = check()
            if got or (deadline is not None and time.monotonic() >= deadline):
                return got

    def __iter__(self):
        """Block for records forever (until the ring is closed)."""
        while self._fd >= 0:
            yield from self.poll(timeout=0.5)

    def __aiter__(self):
        return _aiter(self)

    def __repr__(self):
        return "<RingBuf %r size=%d event=%s>" % (
            self.name, self.max_entries,
            self.event_type.c_type if self.event_type else "bytes")


def _split_records(view, used):
    out = []
    pos = 0
    mv = memoryview(view)
    while pos < used:
        n = int.from_bytes(mv[pos:pos + 4], "little")
        out.append(bytes(mv[pos + 4:pos + 4 + n]))
        pos += 4 + ((n + 3) & ~3)
    return out


async def _aiter(rb):
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(rb.fd, ready.set)
    try:
        while rb._fd >= 0:
            recs = rb.consume()
            if recs:
                for r in recs:
                    yield r
                continue
            ready.clear()
            recs = rb.consume()
            if recs:
                for r in recs:
                    yield r
                continue
            await ready.wait()
    finally:
        if rb._fd >= 0:
            loop.remove_reader(rb.fd)


class RingBufPoller:
    """Consume several ring buffers from one loop (one epoll set).

    ``poll(timeout)`` returns a list of (ring, record) pairs; a callback
    registered with ``add(ring, callback)`` is called per record instead.
    Iteration blocks for more; ``async for`` works under asyncio.
    """

    def __init__(self, *rings):
        self._ep = select.epoll()
        self._rings = {}
        self._callbacks = {}
        for r in rings:
            self.add(r)

    def add(self, ring, callback=None):
        self._rings[ring.fd] = ring
        if callback is not None:
            self._callbacks[ring.fd] = callback
        self._ep.register(ring.fd, select.EPOLLIN)
        return self

    def remove(self, ring):
        self._ep.unregister(ring.fd)
        self._rings.pop(ring.fd, None)
        self._callbacks.pop(ring.fd, None)

    def fileno(self):
        return self._ep.fileno()

    def _drain(self, fds):
        out = []
        for fd in fds:
            ring = self._rings[fd]
            recs = ring.consume()
            cb = self._callbacks.get(fd)
            if cb is not None:
                for r in recs:
                    cb(r)
            else:
                out.extend((ring, r) for r in recs)
        return out

    def poll(self, timeout=None):
        out = self._drain(list(self._rings))
        if out or timeout == 0:
            return out
        events = self._ep.poll(-1 if timeout is None else timeout)
        return self._drain([fd for fd, _ in events])

    def __iter__(self):
        while self._rings:
            yield from self.poll(timeout=0.5)

    async def __aiter__(self):
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self._ep.fileno(), ready.set)
        try:
            while self._rings:
                ready.clear()
                out = self._drain(list(self._rings))
                for item in out:
                    yield item
                if not out:
                    await ready.wait()
        finally:
            loop.remove_reader(self._ep.fileno())

    def close(self):
        self._ep.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


register(MapType.RINGBUF, RingBuf)
