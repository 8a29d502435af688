"""An XDP firewall and TC filters: ordered rules, first match wins.

::

    from pybpfnet.dataplanes.firewall import Firewall, Rule, rate_limit

    fw = Firewall("eth0", [Rule("drop", protocol="tcp", dport=22, src="10.0.0.0/8"),
                           Rule(rate_limit(100, burst=20), protocol="icmp")],
                  default="pass")
    fw.apply(new_rules)          # atomic: a packet sees the old set or the new
    print(fw.stats())            # per-rule packets/bytes/drops
    fw.evaluate(packet_bytes)    # the pure-Python reference model -> Verdict
    fw.close()

The engine (csrc/bpf/firewall) classifies with a bit vector per field --
addresses, protocol/flags, ports -- so the cost per packet does not grow
with the number of rules (up to 4,096 pass/drop/rate_limit rules and 64
count rules). The same compiled tables serve XDP and TC ingress/egress.
See docs/firewall.md.
"""

import contextlib
import json
import os
import threading
import time

import attrs

from pybpfnet._hooks import TcFilter, XdpProgram
from pybpfnet._link import Link
from pybpfnet._map import Map, possible_cpus
from pybpfnet._object import open_bundled
from pybpfnet._program import TcAction, XdpAction
from pybpfnet.dataplanes import _fw_abi
from pybpfnet.dataplanes import _pins
from pybpfnet.dataplanes._fw_abi import abi
from pybpfnet.dataplanes._fw_compile import compile_ruleset, summary, words
from pybpfnet.dataplanes._fw_model import FirewallModel, Parsed, parse
from pybpfnet.dataplanes._fw_rules import (Action, PortRange, RateLimit, Reason, Rule,
                                           RuleError, RuleSet, TcpFlags, Verdict,
                                           rate_limit)

__all__ = ["Firewall", "FirewallModel", "Rule", "RuleSet", "Action", "RateLimit",
           "rate_limit", "PortRange", "TcpFlags", "Verdict", "Reason", "RuleError",
           "RuleStats", "FirewallStats", "parse", "Parsed", "load_rules", "parse_rules"]

_HOOKS = ("xdp", "tc")
_REASONS = (("FW_R_DEFAULT", Reason.DEFAULT), ("FW_R_MALFORMED", Reason.MALFORMED),
            ("FW_R_FRAGMENT", Reason.FRAGMENT), ("FW_R_NON_IP", Reason.NON_IP))


@attrs.frozen
class RuleStats:
    """Counters of one rule, summed over CPUs. ``drops`` counts the packets
    the rule dropped (all of them for a drop rule, the excess for a rate
    limit)."""

    index: int
    rule: Rule
    packets: int
    bytes: int
    drops: int


@attrs.frozen
class FirewallStats:
    """Per-rule counters (``rules``, in rule order), counters of the packets
    decided without a rule (``reasons``: Reason -> (packets, bytes,
    drops)), and ``stale`` (packets passed because the active slot did not
    hold the active generation: 0 unless two processes updated the
    firewall at once)."""

    generation: int
    rules: tuple
    reasons: dict
    stale: int = 0

    def to_dict(self):
        return {"generation": self.generation, "stale": self.stale,
                "rules": [dict(index=s.index, rule=s.rule.describe(), name=s.rule.name,
                               packets=s.packets, bytes=s.bytes, drops=s.drops)
                          for s in self.rules],
                "reasons": {str(r): dict(packets=p, bytes=b, drops=d)
                            for r, (p, b, d) in self.reasons.items()}}

    def table(self):
        """The counters as a text table."""
        rows = [("#", "rule", "packets", "bytes", "drops")]
        for s in self.rules:
            rows.append((str(s.index), (s.rule.name + ": " if s.rule.name else "")
                         + s.rule.describe(), str(s.packets), str(s.bytes), str(s.drops)))
        for r, (p, b, d) in self.reasons.items():
            rows.append(("-", "(%s)" % r, str(p), str(b), str(d)))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for row in rows:
            lines.append("  ".join(c.rjust(w) if i in (0, 2, 3, 4) else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def parse_rules(text, source="<rules>"):
    """A RuleSet from TOML text. Raises RuleError naming ``source``, the
    line and the reason; nothing is half-applied."""
    from pybpfnet.dataplanes._fw_config import parse_toml
    return parse_toml(text, source)


def load_rules(path):
    """A RuleSet from a TOML file (see docs/firewall.md for the format).
    Raises RuleError with the file, line and reason."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuleError("%s: not UTF-8 text (%s)" % (path, e)) from None
    return parse_rules(text, os.fspath(path))


def _ruleset(rules, policies):
    given = {k: v for k, v in policies.items() if v is not None}
    if isinstance(rules, RuleSet):
        return attrs.evolve(rules, **given) if given else rules
    return RuleSet(() if rules is None else rules, **given)


class Firewall:
    """A firewall data plane: the BPF engine loaded, a rule set published,
    and optionally attached to interfaces.

    ``iface``: an interface name or ifindex (or a list; resolved in the
    calling thread's network namespace), or None to only load (then
    ``run`` tests packets through BPF_PROG_TEST_RUN). ``rules``: a RuleSet
    or Rules; ``default``/``fragments``/``malformed``/``non_ip`` override
    its policies. ``hook``: "xdp" (ingress) or "tc" (``directions``:
    ingress and/or egress). ``mode``: the XDP mode ("auto", "native",
    "generic"). ``clock``: the model's clock (nanoseconds, CLOCK_MONOTONIC
    like the kernel's).

    Needs CAP_BPF and CAP_NET_ADMIN (root), Linux >= 5.18
    (bpf_xdp_load_bytes); tcx attach on Linux >= 6.6 (legacy TC before).
    Raises RuleError for a rule set the engine cannot hold, BpfError /
    VerifierError from the kernel, HookBusyError when the hook is taken.
    Close it (or use ``with``) to detach and unload.
    """

    def __init__(self, iface=None, rules=None, *, hook="xdp",
                 directions=("ingress", "egress"), mode="auto", default=None,
                 fragments=None, malformed=None, non_ip=None, clock=time.monotonic_ns):
        if hook not in _HOOKS:
            raise ValueError("hook must be 'xdp' or 'tc', got %r" % (hook,))
        if isinstance(directions, str):
            directions = (directions,)
        for d in directions:
            if d not in ("ingress", "egress"):
                raise ValueError("directions: 'ingress' and/or 'egress', got %r" % (d,))
        ruleset = _ruleset(rules, dict(default=default, fragments=fragments,
                                       malformed=malformed, non_ip=non_ip))
        tables = compile_ruleset(ruleset)
        self.hook = hook
        self.directions = tuple(directions) if hook == "tc" else ("ingress",)
        self.mode = mode
        self._init_state()
        self.model = FirewallModel(ruleset, clock=clock)
        try:
            self._obj = self._stack.enter_context(open_bundled(_fw_abi.OBJECT).load())
            self._publish(ruleset, tables)
            if iface is not None:
                self.attach(iface)
        except BaseException:
            self._stack.close()
            raise

    def _init_state(self):
        self._lock = threading.RLock()
        self._stack = contextlib.ExitStack()
        self._hooks = []
        self._obj = None
        self._gen = 0
        self._active = None        # (RuleSet, Tables) of the active generation
        self._bucket_ids = {}
        self._barrier = None
        self._raw_maps = {}
        self._pinned_maps = None
        self._pinned_links = []
        self._config = None
        self.pin_path = None
        self._stack.callback(self._close_own_maps)

    # -- rule sets ------------------------------------------------------------
    @property
    def ruleset(self):
        """The active RuleSet."""
        return self._active[0]

    @property
    def rules(self):
        return self.ruleset.rules

    @property
    def generation(self):
        """How many rule sets were published (1 after construction)."""
        return self._gen

    def apply(self, rules=None, *, default=None, fragments=None, malformed=None,
              non_ip=None):
        """Replace the whole rule set atomically: every packet is decided by
        the old set or by the new one, never a mix. ``rules``: a RuleSet or
        Rules (None keeps the rules); the policies not given are kept.
        Counters of rules present in both sets carry over; rate-limit
        rules kept keep their token buckets. One update at a time per
        firewall (this object serializes its own calls). Raises RuleError
        (then the running set is untouched)."""
        with self._lock:
            cur = self.ruleset
            if rules is None:
                rules = cur.rules
            if not isinstance(rules, RuleSet):
                rules = RuleSet(rules, **cur.policies())
            ruleset = _ruleset(rules, dict(default=default, fragments=fragments,
                                           malformed=malformed, non_ip=non_ip))
            tables = compile_ruleset(ruleset)
            self._publish(ruleset, tables)
            self.model.replace(ruleset)
            if self._config is not None:
                self._write_config()
            return self

    def _outer(self, name):
        """One of the object's maps."""
        if self._pinned_maps is not None:
            return self._pinned_maps[name]
        return self._obj.maps[name]

    def _raw(self, name):
        """A second handle on map ``name`` whose values are raw bytes (the
        bitmaps are encoded once and shared between classes)."""
        m = self._raw_maps.get(name)
        if m is None:
            outer = self._outer(name)
            fd = os.dup(outer.fd)
            m = self._raw_maps[name] = self._stack.enter_context(
                Map.from_fd(fd, key=outer.key_type, value=outer.value_size))
        return m

    def _bucket(self, key):
        if key not in self._bucket_ids:
            self._bucket_ids[key] = len(self._bucket_ids) + 1
        return self._bucket_ids[key]

    def _wait_for_readers(self):
        """Wait until every program run that started before now has ended
        (an RCU grace period): a map-in-map update waits for them."""
        if self._barrier is None:
            self._barrier = Map.create("array", key="u32", value="u32", max_entries=1,
                                       name=_fw_abi.MAP_BARRIER)
        self._outer(_fw_abi.MAP_BARRIER)[0] = self._barrier

    def _publish(self, ruleset, tables):
        a = abi()
        L = a.layouts
        with self._lock:
            gen = self._gen + 1
            slot = gen & 1
            carried = self._carry(ruleset, tables) if self._gen else {}
            if self._gen > 1:
                # packets that read generation gen - 2 (this slot) are done
                self._wait_for_readers()
            bitmap = L["bitmap"]
            memo = {}

            def bm(bits, cbits):
                raw = memo.get((bits, cbits))
                if raw is None:
                    raw = memo[bits, cbits] = bitmap.encode(dict(
                        gen=gen, summary=summary(bits), count=cbits, w=words(bits)))
                return raw

            modes = tables.meta["addr_mode"]
            lpm_mode = a.enum("addr_mode", "FW_ADDR_LPM")
            hash_mode = a.enum("addr_mode", "FW_ADDR_HASH")
            lpm = self._raw(_fw_abi.MAP_LPM)
            stale = [k for k in lpm.keys() if k.data[0] >> 2 == slot]
            if stale:
                lpm.delete_batch(stale)
            lpm.update_batch(
                [(dict(prefixlen=8 + net.prefixlen,
                       data=bytes([slot << 2 | tag]) + net.network_address.packed),
                  bm(b, c)) for tag, net, b, c in tables.lpm if modes[tag] == lpm_mode])
            prefixes = self._raw(_fw_abi.MAP_PREFIXES)
            stale = [k for k in prefixes.keys() if k.slot_tag >> 2 == slot]
            if stale:
                prefixes.delete_batch(stale)
            prefixes.update_batch(
                [(dict(slot_tag=slot << 2 | tag, len=net.prefixlen,
                       addr=net.network_address.packed), bm(b, c))
                 for tag, net, b, c in tables.lpm
                 if modes[tag] == hash_mode and net.prefixlen])

            base = slot * a.max_classes
            rows = [(base + cid, bm(b, c)) for cid, (b, c) in tables.classes.items()]
            # the port index: gen + a u32[port_ids] slice each, spliced in at
            # the field's BTF offset
            portidx, n = L["portidx"], a.port_ids
            head = portidx.encode(dict(gen=gen))
            at = portidx.fields[portidx.field_names.index("ids")].offset
            ids = tables.port_index
            rows += [(base + a.class_portidx + k, head[:at] + ids[k * n:(k + 1) * n].tobytes()
                      + head[at + 4 * n:]) for k in range(len(ids) // n)]
            classes = self._raw(_fw_abi.MAP_CLASSES)
            classes.update_batch(rows)

            rows = []
            for i, r in enumerate(tables.rules):
                r = dict(r, gen=gen)
                key = r.pop("bucket_key")
                r["bucket"] = self._bucket(key) if key is not None else 0
                rows.append((slot * a.max_rules + i, r))
            if rows:
                self._outer(_fw_abi.MAP_RULES).update_batch(rows)

            ncpu = possible_cpus()
            zero = dict(packets=0, bytes=0, drops=0)
            cbase = slot * a.cnt_entries
            rows = [(cbase + i, zero) for i in range(a.cnt_entries) if i not in carried]
            rows += [(cbase + i, [dict(packets=p, bytes=b, drops=d)] + [zero] * (ncpu - 1))
                     for i, (p, b, d) in carried.items()]
            self._outer(_fw_abi.MAP_COUNTERS).update_batch(rows)

            # the meta entry last: a slot is complete when it matches gen
            classes[base] = L["meta"].encode(dict(tables.meta, gen=gen))
            self._outer(_fw_abi.MAP_STATE)[0] = dict(gen=gen)
            self._gen = gen
            self._active = (ruleset, tables)

    def _carry(self, ruleset, tables):
        """Counter values of the active generation to seed the next one
        with: rules present in both (by value and occurrence) and the
        reason counters. (Packets counted between this read and the swap
        are not carried.)"""
        a = abi()
        cur_rules, cur_tables = self._active
        totals = self._read_counters()
        old = {}
        for idx, r in enumerate(cur_rules.rules):
            old.setdefault(r, []).append(totals.get(cur_tables.counter_index[idx]))
        out = {}
        for idx, r in enumerate(ruleset.rules):
            prev = old.get(r)
            if prev:
                value = prev.pop(0)
                if value is not None:
                    out[tables.counter_index[idx]] = value
        for i in range(a.nreasons):
            value = totals.get(a.cnt_reason + i)
            if value is not None:
                out[a.cnt_reason + i] = value
        return out

    def _read_counters(self):
        """{counter index: (packets, bytes, drops)} of the active slot,
        summed over CPUs (zeros left out)."""
        a = abi()
        m = self._outer(_fw_abi.MAP_COUNTERS)
        cbase = (self._gen & 1) * a.cnt_entries
        wanted = list(self._active[1].counter_index) + \
            [a.cnt_reason + i for i in range(a.nreasons)]
        out = {}
        for idx in wanted:
            p = b = d = 0
            for v in m[cbase + idx]:
                p += v.packets
                b += v.bytes
                d += v.drops
            if p or b or d:
                out[idx] = (p, b, d)
        return out

    # -- observing ------------------------------------------------------------
    def stats(self):
        """Counters of the active rule set (FirewallStats), summed over CPUs."""
        a = abi()
        with self._lock:
            ruleset, tables = self._active
            totals = self._read_counters()
            gen = self._gen
        rows = []
        for idx, r in enumerate(ruleset.rules):
            p, b, d = totals.get(tables.counter_index[idx], (0, 0, 0))
            rows.append(RuleStats(idx, r, p, b, d))
        reasons = {}
        for name, reason in _REASONS:
            reasons[reason] = totals.get(a.cnt_reason + a.enum("reason", name), (0, 0, 0))
        events = self._outer(_fw_abi.MAP_EVENTS)
        stale = events.sum(a.enum("event", "FW_EV_STALE"))
        return FirewallStats(gen, tuple(rows), reasons, stale)

    def evaluate(self, packet, direction="ingress", *, now=None):
        """The reference model's Verdict for ``packet`` under the active rule
        set (pure Python; also advances the model's counters and buckets)."""
        return self.model.evaluate(packet, direction, now=now)

    def program(self, hook=None, direction="ingress"):
        """The BPF program of ``hook`` ("xdp", "tc"; default: this
        firewall's) and ``direction`` (TC)."""
        hook = hook or self.hook
        if self._obj is None:
            raise ValueError("a firewall opened from pins has no programs to run; "
                             "use the process that loaded it, or evaluate() the model")
        if hook == "xdp":
            if direction != "ingress":
                raise ValueError("XDP only sees ingress packets")
            return self._obj.programs[_fw_abi.PROG_XDP]
        if hook == "tc":
            return self._obj.programs[_fw_abi.PROG_TC[direction]]
        raise ValueError("hook must be 'xdp' or 'tc', got %r" % (hook,))

    def run(self, packet, direction="ingress", *, hook=None, repeat=1):
        """Run ``packet`` through the kernel engine (BPF_PROG_TEST_RUN) and
        return its Action (PASS or DROP). Counters and token buckets
        change as for a real packet."""
        prog = self.program(hook, direction)
        v = prog.test_run(packet, repeat=repeat).verdict
        drop, keep = ((XdpAction.DROP, XdpAction.PASS) if prog.name == _fw_abi.PROG_XDP
                      else (TcAction.SHOT, TcAction.UNSPEC))
        if v is drop:
            return Action.DROP
        if v is keep:
            return Action.PASS
        raise RuntimeError("firewall program %r returned %r" % (prog.name, v))

    @property
    def object(self):
        """The loaded BpfObject (maps and programs)."""
        return self._obj

    # -- attaching --------------------------------------------------------------
    def attach(self, iface):
        """Attach to ``iface`` (a name, an ifindex or a list) at this
        firewall's hook. All or nothing."""
        ifaces = list(iface) if isinstance(iface, (list, tuple)) else [iface]
        made = []
        try:
            if self.hook == "xdp":
                h = XdpProgram(self._obj, _fw_abi.PROG_XDP, mode=self.mode)
                made.append(h)
                h.attach(ifaces)
            else:
                for d in self.directions:
                    h = TcFilter(self._obj, _fw_abi.PROG_TC[d], direction=d)
                    made.append(h)
                    h.attach(ifaces)
        except BaseException:
            for h in reversed(made):
                h.close()
            raise
        self._hooks.extend(made)
        return self

    def detach(self):
        """Detach from every interface (the rule set stays loaded). Links
        pinned with ``pin()`` stay attached until unpinned."""
        hooks, self._hooks = self._hooks, []
        for h in reversed(hooks):
            h.close()

    @property
    def interfaces(self):
        """Names of the interfaces this firewall is attached to."""
        if self._obj is None:
            return list(self.iface_names)
        out = []
        for h in self._hooks:
            for name in h.interfaces:
                if name not in out:
                    out.append(name)
        return out

    @property
    def links(self):
        return [link for h in self._hooks for link in h.links]


    # -- pinning (state that outlives the process) ---------------------------
    def pin(self, path):
        """Pin the firewall under ``path`` (a new directory on bpffs): its
        links, maps and a description of its rule set, so it keeps running
        after this process exits and ``Firewall.open_pinned(path)`` can
        update it or read its counters. Closing this object then leaves it
        attached; ``unpin()`` (or ``remove()`` on a pinned handle) takes it
        down. Raises BpfError (EEXIST: path taken)."""
        path = os.fspath(path)
        if self._obj is None:
            raise ValueError("already pinned at %s" % self.pin_path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.mkdir(path)
        done = []
        try:
            for name in _fw_abi.PINNED_MAPS:
                self._obj.maps[name].pin(os.path.join(path, name))
                done.append(name)
            self._config = Map.create("array", key="u32", value=_CONFIG_CHUNK,
                                      max_entries=_CONFIG_CHUNKS, name=_fw_abi.MAP_CONFIG)
            self._write_config()
            self._config.pin(os.path.join(path, _fw_abi.MAP_CONFIG))
            done.append(_fw_abi.MAP_CONFIG)
            for i, link in enumerate(self.links):
                link.pin(os.path.join(path, "link%d" % i))
                done.append("link%d" % i)
        except BaseException:
            _pins.remove_pins(path)
            if self._config is not None:
                self._config.close()
                self._config = None
            raise
        self.pin_path = path
        return self

    def unpin(self):
        """Remove the pins (the firewall then goes away when the last handle
        closes)."""
        if self.pin_path is None:
            raise ValueError("this firewall is not pinned")
        _pins.remove_pins(self.pin_path)
        self.pin_path = None

    def remove(self):
        """Detach and unload a pinned firewall: remove its pins, then close
        this handle."""
        try:
            if self.pin_path is not None:
                self.unpin()
            for link in self._pinned_links:
                if link.attached:
                    link.detach()
        finally:
            self.close()

    @classmethod
    def open_pinned(cls, path, *, clock=time.monotonic_ns):
        """Open a firewall pinned with ``pin(path)`` (by this or another
        process): ``apply``, ``stats``, ``evaluate`` and ``remove`` work;
        ``run`` and ``attach`` do not (no programs here). Raises
        FileNotFoundError when nothing is pinned there."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError("no firewall pinned at %s" % path)
        self = cls.__new__(cls)
        self._init_state()
        self.pin_path = path
        try:
            maps = {}
            for name in _fw_abi.PINNED_MAPS:
                maps[name] = self._stack.enter_context(
                    Map.from_pinned(os.path.join(path, name)))
            self._pinned_maps = maps
            self._config = self._stack.enter_context(
                Map.from_pinned(os.path.join(path, _fw_abi.MAP_CONFIG)))
            conf = self._read_config()
            self.hook = conf["hook"]
            self.directions = tuple(conf["directions"])
            self.mode = conf["mode"]
            self.iface_names = conf["ifaces"]
            ruleset = RuleSet.from_dict(conf["ruleset"])
            self._bucket_ids = {(Rule.from_dict(r), k): i for r, k, i in conf["buckets"]}
            self._gen = maps[_fw_abi.MAP_STATE][0].gen
            self._active = (ruleset, compile_ruleset(ruleset))
            self.model = FirewallModel(ruleset, clock=clock)
            for name in sorted(os.listdir(path)):
                if name.startswith("link"):
                    self._pinned_links.append(self._stack.enter_context(
                        Link.from_pinned(os.path.join(path, name))))
        except BaseException:
            self._stack.close()
            raise
        return self

    def _write_config(self):
        conf = {"version": 1, "hook": self.hook, "directions": list(self.directions),
                "mode": self.mode, "ifaces": self.interfaces or
                list(getattr(self, "iface_names", [])),
                "ruleset": self.ruleset.to_dict(),
                "buckets": [[r.to_dict(), k, i] for (r, k), i in self._bucket_ids.items()]}
        data = json.dumps(conf, separators=(",", ":")).encode()
        blob = len(data).to_bytes(8, "little") + data
        if len(blob) > _CONFIG_CHUNK * _CONFIG_CHUNKS:
            raise RuleError("the rule set is too large to pin (%d bytes of JSON)" % len(data))
        chunks = [blob[i:i + _CONFIG_CHUNK].ljust(_CONFIG_CHUNK, b"\0")
                  for i in range(0, len(blob), _CONFIG_CHUNK)]
        self._config.update_batch(list(enumerate(chunks)))

    def _read_config(self):
        first = self._config[0]
        size = int.from_bytes(first[:8], "little")
        n = (size + 8 + _CONFIG_CHUNK - 1) // _CONFIG_CHUNK
        blob = b"".join(self._config[i] for i in range(n))
        return json.loads(blob[8:8 + size])

    # -- lifetime ---------------------------------------------------------------
    def _close_own_maps(self):
        for m in (self._barrier, self._config if self._obj is not None else None):
            if m is not None:
                m.close()
        self._barrier = None

    def close(self):
        """Detach (unless pinned), then unload everything this handle holds.
        Idempotent."""
        try:
            self.detach()       # pinned links stay attached
        finally:
            self._stack.close()
            self._obj = None
            self._pinned_maps = None

    @property
    def closed(self):
        return self._stack is None or (self._obj is None and self._pinned_maps is None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        where = ", ".join(self.interfaces) or "not attached"
        return "<Firewall %s %d rules gen %d on %s>" % (
            self.hook, len(self.rules) if self._active else 0, self._gen, where)


_CONFIG_CHUNK = 4096
_CONFIG_CHUNKS = 1024

