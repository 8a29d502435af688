"""Active health checks for the load balancer: TCP connect and HTTP GET
probes with interval, timeout and rise/fall thresholds.

One thread runs every probe with non-blocking sockets and a selector, so
a slow or silent backend never delays the checks of the others. The thread
switches into the LB's network namespace once, when it starts (``netns``:
a netlab Namespace, a name in /run/netns, a path or an fd; None: where
the caller is), so every probe comes from the LB's addresses and routes.
"""

import errno
import heapq
import ipaddress
import logging
import selectors
import socket
import threading
import time

import attrs

from pybpfnet import _netlink
from pybpfnet.dataplanes._lb_config import HealthCheck

__all__ = ["HealthChecker", "HealthState", "Target", "probe"]

_MAX_RESPONSE = 4096
_log = logging.getLogger("pybpfnet.lb")


@attrs.frozen
class Target:
    """What to check: ``address``:``port`` with ``check``."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address = attrs.field(
        converter=ipaddress.ip_address)
    port: int
    check: HealthCheck


@attrs.frozen
class HealthState:
    """The health of one target: ``healthy``, the current run of
    ``successes``/``failures`` in a row, the number of ``checks`` done,
    the reason of the last failure (``last_error``, "" after a success)
    and when the state last changed (``since``, clock seconds)."""

    healthy: bool = True
    successes: int = 0
    failures: int = 0
    checks: int = 0
    last_error: str = ""
    since: float = 0.0

    def record(self, ok, error, check, now):
        """The next state after one probe; (state, changed)."""
        if ok:
            succ, fail = self.successes + 1, 0
            healthy = self.healthy or succ >= check.rise
            error = ""
        else:
            succ, fail = 0, self.failures + 1
            healthy = self.healthy and fail < check.fall
        changed = healthy != self.healthy
        return HealthState(healthy, succ, fail, self.checks + 1, error,
                           now if changed else self.since), changed


class _Probe:
    __slots__ = ("key", "target", "sock", "deadline", "phase", "buf", "out")

    def __init__(self, key, target, deadline):
        self.key = key
        self.target = target
        self.sock = None
        self.deadline = deadline
        self.phase = "connect"
        self.buf = b""
        self.out = b""


def _request(target):
    c = target.check
    host = c.host or (("[%s]" if target.address.version == 6 else "%s") % target.address)
    return ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: pybpfnet-lb-health\r\n"
            "Connection: close\r\n\r\n" % (c.path, host)).encode()


def _status(buf, check):
    """(ok, error) from the first bytes of an HTTP response, or None if the
    status line is not complete yet."""
    end = buf.find(b"\r\n")
    if end < 0:
        end = buf.find(b"\n")
    if end < 0:
        return None if len(buf) < 256 else (False, "no HTTP status line")
    parts = buf[:end].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "not an HTTP response: %r" % bytes(buf[:40])
    status = int(parts[1])
    lo, hi = check.expect
    if lo <= status <= hi:
        return True, ""
    return False, "HTTP status %d (expected %d-%d)" % (status, lo, hi)


class _Runner:
    """Non-blocking probes driven by one selector (used by the checker
    thread and by ``probe``)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.active = {}

    def start(self, key, target, now):
        p = _Probe(key, target, now + target.check.timeout)
        if target.check.kind == "none":
            return p, True, ""
        fam = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
        try:
            p.sock = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                   | socket.SOCK_CLOEXEC)
            err = p.sock.connect_ex((str(target.address), target.port))
        except OSError as exc:
            self._close(p)
            return p, False, "socket: %s" % (exc.strerror or exc)
        if err not in (0, errno.EINPROGRESS):
            self._close(p)
            return p, False, "connect: %s" % errno.errorcode.get(err, err)
        self.sel.register(p.sock, selectors.EVENT_WRITE, p)
        self.active[key] = p
        return p, None, None

    def _close(self, p):
        if p.sock is not None:
            try:
                self.sel.unregister(p.sock)
            except (KeyError, ValueError):
                pass
            p.sock.close()
            p.sock = None
        self.active.pop(p.key, None)

    def _step(self, p):
        """Advance a probe whose socket is ready; (ok, error) when done."""
        if p.phase == "connect":
            err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return False, "connect: %s" % errno.errorcode.get(err, err)
            if p.target.check.kind == "tcp":
                return True, ""
            p.phase = "send"
            p.out = _request(p.target)
        if p.phase == "send":
            try:
                n = p.sock.send(p.out)
            except BlockingIOError:
                return None
            except OSError as exc:
                return False, "send: %s" % (exc.strerror or exc)
            p.out = p.out[n:]
            if p.out:
                return None
            p.phase = "recv"
            self.sel.modify(p.sock, selectors.EVENT_READ, p)
            return None
        try:
            data = p.sock.recv(_MAX_RESPONSE)
        except BlockingIOError:
            return None
        except OSError as exc:
            return False, "recv: %s" % (exc.strerror or exc)
        p.buf += data
        verdict = _status(p.buf, p.target.check)
        if verdict is None and not data:
            return False, "connection closed before the HTTP status line"
        return verdict

    def poll(self, timeout, now_fn):
        """Wait up to ``timeout`` for socket events; [(probe, ok, error)] of
        the probes that finished (including those that timed out)."""
        done = []
        for skey, _ in self.sel.select(max(0.0, timeout)):
            p = skey.data
            if p is None:                # a wakeup socket (registered with data None)
                try:
                    skey.fileobj.recv(4096)
                except BlockingIOError:
                    pass
                continue
            verdict = self._step(p)
            if verdict is not None:
                self._close(p)
                done.append((p, verdict[0], verdict[1]))
        now = now_fn()
        for p in list(self.active.values()):
            if now >= p.deadline:
                self._close(p)
                done.append((p, False, "timeout after %gs" % p.target.check.timeout))
        return done

    def cancel(self, key):
        p = self.active.get(key)
        if p is not None:
            self._close(p)

    def close(self):
        for p in list(self.active.values()):
            self._close(p)
        self.sel.close()


def probe(address, port, check=HealthCheck(), *, netns=None):
    """Run one health check now; returns (ok, reason) where reason says
    why it failed ("" on success). ``netns`` as for HealthChecker.

    Needs CAP_SYS_ADMIN to switch namespaces (not when ``netns`` is None).
    """
    target = Target(address, port, check)
    with _netlink.in_netns(netns):
        runner = _Runner()
        try:
            p, ok, err = runner.start(None, target, time.monotonic())
            while ok is None:
                left = p.deadline - time.monotonic()
                for _, ok2, err2 in runner.poll(min(left, 0.05), time.monotonic):
                    ok, err = ok2, err2
            return ok, err
        finally:
            runner.close()


class HealthChecker:
    """Checks a set of targets periodically in a background thread.

    ``on_change(key, state)`` is called from that thread whenever a target
    goes down or comes back (``state`` a HealthState); ``on_result(key,
    state)``, if given, after every probe. Targets are set with
    ``update({key: Target})`` (keys are any hashable: the LB uses
    (service, backend)); a target whose address, port and check did not
    change keeps its state. Every target starts healthy and is first probed
    within its interval (spread so that checks do not all fire at once).

    Use as a context manager or ``start()``/``close()``. Needs
    CAP_SYS_ADMIN when ``netns`` is given. Exceptions from callbacks are
    logged (logger "pybpfnet.lb") and kept in ``errors``; the checker goes
    on.
    """

    def __init__(self, on_change=None, *, netns=None, on_result=None,
                 clock=time.monotonic):
        self._on_change = on_change
        self._on_result = on_result
        self._netns = netns
        self._clock = clock
        self._lock = threading.Lock()
        self._targets = {}
        self._states = {}
        self._due = []             # heap of (time, seq, key, epoch)
        self._epoch = {}           # key -> epoch of its current Target
        self._seq = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._thread = None
        self._started = threading.Event()
        self.errors = []

    # -- targets

    def update(self, targets):
        """Replace the set of targets ({key: Target}); returns the keys
        added."""
        if self._wake_w.fileno() < 0:
            raise ValueError("this HealthChecker is closed")
        now = self._clock()
        added = []
        with self._lock:
            for key in list(self._targets):
                if key not in targets:
                    del self._targets[key]
                    self._states.pop(key, None)
                    self._epoch.pop(key, None)
            new = [k for k, t in targets.items() if self._targets.get(k) != t]
            for i, key in enumerate(new):
                t = targets[key]
                if not isinstance(t, Target):
                    raise TypeError("targets must map keys to Target, not %s"
                                    % type(t).__name__)
                self._targets[key] = t
                self._states[key] = HealthState(since=now)
                self._seq += 1
                self._epoch[key] = self._seq      # older heap entries of the key lapse
                self._schedule(key, now + t.check.interval * (i + 1) / (len(new) + 1))
                added.append(key)
        self._wake()
        return added

    def _schedule(self, key, when):
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, key, self._epoch[key]))

    def targets(self):
        """{key: Target} being checked."""
        with self._lock:
            return dict(self._targets)

    def states(self):
        """{key: HealthState} of every target."""
        with self._lock:
            return dict(self._states)

    def state(self, key):
        """The HealthState of one target (KeyError if unknown)."""
        with self._lock:
            return self._states[key]

    # -- thread

    def start(self):
        """Start the checking thread (idempotent). Raises the error of
        switching into ``netns`` if that fails."""
        if self._thread is not None:
            return self
        if self._wake_r.fileno() < 0:
            raise ValueError("this HealthChecker is closed")
        self._stop.clear()
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._main, name="pybpfnet-lb-health",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def stop(self):
        """Stop the thread and wait for it (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake()
        self._thread.join()
        self._thread = None

    def close(self):
        """Stop, and release the wakeup sockets (idempotent; ``update``
        after it raises ValueError)."""
        self.stop()
        for s in (self._wake_r, self._wake_w):
            s.close()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass                 # the buffer is full: the thread is woken already

    def _main(self):
        try:
            ctx = _netlink.in_netns(self._netns)
            ctx.__enter__()
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        runner = _Runner()
        runner.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._started.set()
        try:
            self._loop(runner)
        finally:
            runner.sel.unregister(self._wake_r)
            runner.close()
            ctx.__exit__(None, None, None)

    def _loop(self, runner):
        while not self._stop.is_set():
            now = self._clock()
            instant = []
            with self._lock:
                while self._due and self._due[0][0] <= now:
                    when, _, key, epoch = heapq.heappop(self._due)
                    t = self._targets.get(key)
                    if t is None or self._epoch.get(key) != epoch:
                        continue            # removed or replaced
                    # fixed rate: the next check is one interval after this one was due
                    self._schedule(key, max(when + t.check.interval, now))
                    if key in runner.active:
                        continue            # the last probe is still running (timeout == interval)
                    p, ok, err = runner.start(key, t, now)
                    if ok is not None:
                        instant.append((p, ok, err))
                next_due = self._due[0][0] if self._due else now + 1.0
            for p, ok, err in instant:
                self._record(p, ok, err)
            deadlines = [p.deadline for p in runner.active.values()]
            timeout = min([next_due] + deadlines) - self._clock()
            for p, ok, err in runner.poll(min(timeout, 1.0), self._clock):
                self._record(p, ok, err)

    def _record(self, p, ok, err):
        with self._lock:
            if self._targets.get(p.key) != p.target:
                return           # removed or replaced while the probe ran
            state, changed = self._states[p.key].record(ok, err, p.target.check,
                                                        self._clock())
            self._states[p.key] = state
        for cb, call in ((self._on_result, True), (self._on_change, changed)):
            if cb is not None and call:
                try:
                    cb(p.key, state)
                except Exception as exc:       # a callback bug must not stop the checks
                    _log.exception("health check callback for %r failed", p.key)
                    self.errors.append(exc)
