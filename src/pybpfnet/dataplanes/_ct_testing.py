"""Test support for connection tracking: a harness that runs frames
through the kernel tracker (BPF_PROG_TEST_RUN) and the Python model side
by side and compares everything after every frame, and hypothesis
strategies for packet sequences (valid and hostile). Used by the tests
and the benchmark; imports hypothesis lazily."""

import ipaddress

import attrs

from pybpfnet.dataplanes import _ct_abi as abi
from pybpfnet.dataplanes._ct_model import (ACK, FIN, PSH, RST, SYN, CtModel, ModelConfig,
                                           ModelEvent)


class Mismatch(AssertionError):
    """The kernel and the model disagree; the message shows the history."""


def _tuple_of(t):
    return (bytes(t.src), bytes(t.dst), t.sport, t.dport, t.proto, t.family)


def _key_of(k):
    return (bytes(k.a), bytes(k.b), k.aport, k.bport, k.proto, k.family)


def _kernel_entry(v):
    return (_tuple_of(v.orig), _tuple_of(v.reply), tuple(v.packets), tuple(v.bytes),
            tuple((d.end, d.maxend, d.maxwin, d.scale, d.flags) for d in v.tcp),
            v.state, v.status, tuple(v.tcp_flags), v.last_index, v.last_dir)


def _model_entry(e):
    return (e.orig, e.reply, tuple(e.packets), tuple(e.bytes),
            tuple(d.as_tuple() for d in e.tcp),
            int(e.state), int(e.status), tuple(e.tcp_flags), e.last_index, e.last_dir)


def _kernel_event(ev):
    return ModelEvent(ev.type, ev.state, ev.old_state, ev.status, ev.reason, ev.table,
                      _tuple_of(ev.orig), tuple(ev.packets), tuple(ev.bytes))


def model_config(obj_or_spec):
    """The ModelConfig matching an object's (or spec's) ct_cfg."""
    cfg = obj_or_spec.globals[abi.CONFIG]
    return ModelConfig(tuple(cfg.timeout_ms), cfg.udp_stream_ms, bool(cfg.tcp_loose),
                       bool(cfg.tcp_liberal), cfg.events)


class Harness:
    """Kernel tracker and model fed the same frames.

    ``obj``: a loaded object with the tracker (the bundled "conntrack", or
    any object including pybn_conntrack.h) and a TC or XDP program
    ``prog`` that runs ct_process on each frame and drops INVALID ones
    (ct_cfg.drop_invalid).
    """

    def __init__(self, obj, prog=abi.PROG_TC):
        self.obj = obj
        self.prog = obj.programs[prog]
        self.tables = [obj.maps[name] for name in abi.TABLES]
        self.stats = obj.maps[abi.STATS]
        self.events = obj.maps[abi.EVENTS]
        self.events.set_event_type(obj.globals.type_of(abi.LAYOUT_EVENT))
        self.config = model_config(obj)
        self.reset()

    def _stats(self):
        s = self.stats.sum(0)
        return {f: getattr(s, f) for f in ("packets", "untracked", "invalid", "ignored",
                                           "created", "promoted", "reopened",
                                           "reset_before_reply", "expired")}, \
            (tuple(s.inserts), tuple(s.deletes))

    def reset(self):
        for t in self.tables:
            t.clear()
        self.events.consume()
        self.model = CtModel(self.config)
        self._base = self._stats()
        self.history = []

    def kernel_state(self):
        return [{_key_of(k): _kernel_entry(v) for k, v in t.items()} for t in self.tables]

    def model_state(self):
        return [{k: _model_entry(e) for k, e in t.items()} for t in self.model.tables]

    def send(self, frame, label=""):
        """Run one frame through both; raise Mismatch on any difference."""
        frame = bytes(frame)
        self.history.append((label, frame))
        got = self.prog.test_run(frame)
        want = self.model.process(frame)
        dropped = getattr(got.verdict, "name", "") in ("SHOT", "DROP")
        if dropped != (want.verdict == abi.Verdict.INVALID):
            self._fail("verdict: kernel %s, model %s" % (got.verdict, want))
        ks, ms = self.kernel_state(), self.model_state()
        for i, name in enumerate(abi.TABLES):
            if ks[i] != ms[i]:
                self._fail("table %s:\n  kernel %r\n  model  %r" % (name, ks[i], ms[i]))
        kev = [_kernel_event(e) for e in self.events.consume()]
        if kev != self.model.events:
            self._fail("events:\n  kernel %r\n  model  %r" % (kev, self.model.events))
        self.model.events.clear()
        stats, tables = self._stats()
        base_stats, base_tables = self._base
        delta = {k: stats[k] - base_stats[k] for k in stats}
        mstats = {k: self.model.stats[k] for k in stats}
        if delta != mstats:
            self._fail("stats: kernel %r, model %r" % (delta, mstats))
        mt = (tuple(self.model.inserts), tuple(self.model.deletes))
        kt = tuple(tuple(a - b for a, b in zip(x, y)) for x, y in zip(tables, base_tables))
        if kt != mt:
            self._fail("inserts/deletes: kernel %r, model %r" % (kt, mt))
        return want

    def _fail(self, what):
        from pybpfnet.packet import parse
        lines = []
        for label, f in self.history:
            try:
                summary = parse(f, strict=False).summary()
            except Exception:          # the summary is only for the report
                summary = f.hex()
            lines.append("  %s %s" % (label, summary))
        raise Mismatch("after %d frames, %s\nframes:\n%s" % (
            len(self.history), what, "\n".join(lines)))


# -- sequences of packets -------------------------------------------------------
ADDRS4 = ("10.0.0.1", "10.0.0.2", "192.168.7.9")
ADDRS6 = ("fd00::1", "fd00::2", "2001:db8::ff")
PORTS = (80, 443, 1024, 40000, 65535)


@attrs.define
class _Side:
    addr: object
    port: int
    isn: int
    nxt: int = 0        # next sequence number to send
    rcv: int = 0        # what it acknowledges


def _build_tcp(src, dst, flags, seq, ack, win, payload, options):
    from pybpfnet.packet import tcp_packet
    return bytes(tcp_packet(src.addr, dst.addr, src.port, dst.port, flags=flags,
                            payload=payload, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                            window=win, options=options))


# Connection scripts the sequences start from: (sender, kind) steps
SCRIPTS = (
    # open, transfer both ways, close from the client, reopen with a new SYN
    [("c", "syn"), ("s", "synack"), ("c", "ack"), ("c", "data"), ("s", "ack"),
     ("s", "data"), ("c", "ack"), ("c", "fin"), ("s", "ack"), ("s", "fin"), ("c", "ack"),
     ("c", "newsyn"), ("s", "synack"), ("c", "ack")],
    # half-close: the server closes first, the client keeps sending
    [("c", "syn"), ("s", "synack"), ("c", "ack"), ("s", "fin"), ("c", "ack"),
     ("c", "data"), ("s", "ack"), ("c", "data"), ("c", "fin"), ("s", "ack")],
    # connection refused, then retried
    [("c", "syn"), ("s", "rstack"), ("c", "syn"), ("s", "synack"), ("c", "ack")],
    # simultaneous open and simultaneous close
    [("c", "syn"), ("s", "syn"), ("s", "synack"), ("c", "synack"), ("c", "ack"),
     ("s", "ack"), ("c", "fin"), ("s", "fin"), ("c", "ack"), ("s", "ack")],
    # retransmitted SYN, then a reset of an established connection
    [("c", "syn"), ("c", "syn"), ("s", "synack"), ("s", "synack"), ("c", "ack"),
     ("c", "data"), ("s", "rst"), ("c", "newsyn"), ("s", "synack")],
    # picked up mid-stream
    [("c", "data"), ("s", "ack"), ("s", "data"), ("c", "ack"), ("c", "fin"), ("s", "fin"),
     ("c", "ack")],
)
_FLAGS = {"syn": SYN, "newsyn": SYN, "synack": SYN | ACK, "ack": ACK, "data": ACK | PSH,
          "fin": FIN | ACK, "rst": RST, "rstack": RST | ACK}


def tcp_sequences(max_extra=12):
    """Strategy: lists of (label, frame) for one TCP connection between two
    endpoints played by two TCP-like peers: a connection script (open,
    transfer, close, reset, simultaneous open, pick-up...) perturbed at
    every step (dropped, duplicated, reordered, random flags, sequence and
    acknowledgment numbers in and out of the window, window scaling
    options), then random steps."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        v6 = draw(st.booleans())
        pool = ADDRS6 if v6 else ADDRS4
        caddr, saddr = draw(st.permutations(pool))[:2]
        if draw(st.integers(0, 9)) == 0:
            saddr = caddr                       # both ends on one host
        cport, sport = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
        isn = st.one_of(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFF0]),
                        st.integers(0, 0xFFFFFFFF))
        c = _Side(ipaddress.ip_address(caddr), cport, draw(isn))
        s = _Side(ipaddress.ip_address(saddr), sport, draw(isn))
        c.nxt, s.nxt = c.isn, s.isn
        wscale = draw(st.sampled_from([None, 0, 7, 14, 15]))
        steps = list(draw(st.sampled_from(SCRIPTS)))
        for _ in range(draw(st.integers(0, max_extra))):
            steps.append((draw(st.sampled_from("cs")), draw(st.sampled_from(
                ["syn", "synack", "ack", "data", "fin", "rst", "rstack", "flags"]))))
        frames = []
        i = 0
        while i < len(steps):
            who, kind = steps[i]
            i += 1
            fate = draw(st.sampled_from(["keep"] * 8 + ["drop", "dup", "swap", "mangle",
                                                       "replay"]))
            if fate == "drop":
                continue
            if fate == "swap" and i < len(steps):
                steps[i - 1], steps[i] = steps[i], steps[i - 1]
                who, kind = steps[i - 1]
            if fate == "replay" and frames:
                label, f = draw(st.sampled_from(frames))
                frames.append(("replay " + label, f))
            snd, rcv = (c, s) if who == "c" else (s, c)
            flags = _FLAGS.get(kind)
            if flags is None or fate == "mangle":
                flags = draw(st.integers(0, 255))
            length = 0
            if kind == "data" or draw(st.integers(0, 9)) == 0:
                length = draw(st.sampled_from([1, 10, 100, 1000, 1400]))
            if kind == "newsyn":
                snd.isn = snd.nxt + draw(st.sampled_from([1, 100000, 1 << 31]))
                snd.nxt = snd.isn
            seqmode, ackmode = "ok", "ok"
            if fate == "mangle" or draw(st.integers(0, 5)) == 0:
                seqmode = draw(st.sampled_from(["old", "future", "random", "zero"]))
                ackmode = draw(st.sampled_from(["ok", "zero", "random", "ahead"]))
            seq = {"ok": snd.nxt, "old": snd.nxt - draw(st.integers(1, 5000)), "zero": 0,
                   "future": snd.nxt + draw(st.sampled_from([1, 1000, 70000, 1 << 30])),
                   "random": draw(st.integers(0, 0xFFFFFFFF))}[seqmode]
            if flags & SYN and not flags & ACK and seqmode == "ok":
                seq = snd.isn
            if flags & SYN and flags & ACK and seqmode == "ok":
                seq = snd.isn
            ack = {"ok": rcv.nxt, "zero": 0, "random": draw(st.integers(0, 0xFFFFFFFF)),
                   "ahead": rcv.nxt + draw(st.integers(1, 100000))}[ackmode]
            win = draw(st.sampled_from([65535, 65535, 29200, 512, 1, 0]))
            options = b""
            if flags & SYN:
                if wscale is not None and draw(st.integers(0, 3)):
                    options = bytes([2, 4, 5, 0xB4, 4, 2, 1, 3, 3, wscale])
                else:
                    options = draw(st.sampled_from([
                        b"", bytes([2, 4, 5, 0xB4, 4, 2, 8, 10] + [0] * 8 + [1, 3, 3, 7]),
                        bytes([1, 3, 3, 14]), bytes([3, 3, 15, 1]), bytes([4, 2, 0, 0]),
                        bytes([1, 1, 3, 3, 2, 0]), bytes([3, 2, 9, 0]), bytes([8, 40, 0, 0]),
                        bytes([3, 3, 0, 0]) * 10, bytes([1] * 38 + [4, 2])]))
            frame = _build_tcp(snd, rcv, flags, seq, ack, win, b"x" * length, options)
            if seqmode == "ok" and not flags & RST:
                snd.nxt = seq + length + bool(flags & SYN) + bool(flags & FIN)
            frames.append(("%s %s%s seq=%s ack=%s len=%d win=%d" % (
                who, kind, "" if fate == "keep" else "(%s flags=0x%02x)" % (fate, flags),
                seqmode, ackmode, length, win), frame))
            if fate == "dup":
                frames.append(("dup", frame))
        return frames

    return build()


def udp_icmp_sequences(max_len=12):
    """Strategy: lists of (label, frame) mixing UDP exchanges and ICMP/ICMPv6
    echoes between a few endpoints (including replies to nothing)."""
    from hypothesis import strategies as st
    from pybpfnet.packet import icmp_echo, udp_packet

    @st.composite
    def build(draw):
        v6 = draw(st.booleans())
        pool = ADDRS6 if v6 else ADDRS4
        a, b = draw(st.permutations(pool))[:2]
        pa, pb = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
        out = []
        for _ in range(draw(st.integers(1, max_len))):
            fwd = draw(st.booleans())
            src, dst, sp, dp = (a, b, pa, pb) if fwd else (b, a, pb, pa)
            if draw(st.booleans()):
                payload = b"u" * draw(st.sampled_from([0, 1, 50, 1000]))
                out.append(("udp %s" % ("a>b" if fwd else "b>a"),
                            bytes(udp_packet(src, dst, sp, dp, payload))))
            else:
                reply = draw(st.booleans())
                ident = draw(st.sampled_from([0, 7, 0xFFFF]))
                out.append(("icmp %s %s" % ("reply" if reply else "request",
                                            "a>b" if fwd else "b>a"),
                            bytes(icmp_echo(src, dst, ident, draw(st.integers(0, 3)),
                                            reply=reply))))
        return out

    return build()
