"""Run every benchmark for C (the floor), pybpfnet and bcc in one session
and print one table of medians and ratios (also written to RESULTS.md).

    python run.py [--rounds 7] [--quick] [--build build] [--bcc-python /usr/bin/python3]

Each round starts a fresh process per side and benchmark; the sides run
each benchmark back to back, in an order that rotates every round. Every
figure is the median over rounds of a per-process median (benchlib.REPS
passes); every ratio is the median over rounds of the ratio within a round.
Targets are shown next to the ratios and never asserted.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SINGLE_KEYS = 10_000
PACED_RATE = 2_000_000      # events/s offered in the paced ring runs


class Unavailable(Exception):
    pass


# ------------------------------------------------------------------ running

class Runner:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.quick = args.quick
        self.single_ops = 20_000 if args.quick else 100_000
        self.paced_events = 500_000 if args.quick else 2_000_000
        self.flat_events = 2_000_000 if args.quick else 8_000_000
        self.load_iters = 20 if args.quick else 50
        self.bcc_load_iters = 2 if args.quick else 3
        ncpu = os.cpu_count() or 1
        self.cpu, self.pcpu = (0, 1) if ncpu >= 2 else (-1, -1)
        self.bcc_env = None
        self.bcc_reason = None
        self.results = {"c": {}, "pybpfnet": {}, "bcc": {}}
        self.errors = []
        self._init_bcc()

    def _init_bcc(self):
        status_path = os.path.join(self.build, "bcc.json")
        try:
            with open(status_path) as f:
                status = json.load(f)
        except (OSError, ValueError) as e:
            self.bcc_reason = "no setup status (%s); run make -C benchmarks" % e
            return
        if not status.get("ok"):
            self.bcc_reason = status.get("reason", "setup failed")
            return
        env = dict(os.environ)
        if status.get("kernel_source"):
            env["BCC_KERNEL_SOURCE"] = status["kernel_source"]
        self.bcc_env = env

    def b(self, name):
        return os.path.join(self.build, name)

    def _run(self, cmd, env=None, timeout=900):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE,
                             timeout=timeout)
        if res.returncode != 0:
            tail = [ln for ln in res.stderr.strip().splitlines() if ln.strip()][-3:]
            raise RuntimeError("%s failed (exit %d): %s" % (
                " ".join(os.path.basename(c) for c in cmd[:3]), res.returncode,
                " | ".join(tail) or "no output"))
        lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError("%s printed no result" % " ".join(cmd[:3]))
        return json.loads(lines[-1])

    def record(self, side, key, value):
        self.results[side].setdefault(key, {})[str(self.round)] = value

    # one process per (side, benchmark)
    def c_maps(self):
        out = self._run([self.b("maps"), self.b("maps.bpf.o"), str(self.single_ops),
                         str(SINGLE_KEYS)])
        for k, v in out["single"].items():
            self.record("c", "single." + k, v)
        for k, by_chunk in out["batch"].items():
            self.record("c", "batch." + k, min(by_chunk.values()))
            for chunk, v in by_chunk.items():
                self.record("c", "batch.%s@%s" % (k, chunk), v)
        for k, v in out["array"].items():
            self.record("c", "array." + k, v)

    def c_load(self):
        out = self._run([self.b("load"), self.b("xdp_trivial.bpf.o"), str(self.load_iters)])
        self.record("c", "load.ms", out["median_ms"])

    def c_ring(self, mode, rate, events, obj):
        out = self._run([self.b("ringbuf"), self.b(obj), self.b("rb_producer"), str(events),
                         str(rate), mode, str(self.cpu), str(self.pcpu)])
        self.record("c", ring_key(mode, rate), out)

    def py(self, *args):
        return self._run([self.args.py, "pybpfnet_bench.py", *map(str, args)])

    def py_maps(self):
        out = self.py("maps", self.b("maps.bpf.o"), self.single_ops, SINGLE_KEYS)
        for section in ("single", "batch", "array"):
            for k, v in out[section].items():
                self.record("pybpfnet", "%s.%s" % (section, k), v)

    def py_breakdown(self):
        out = self.py("breakdown", self.b("maps.bpf.o"), self.single_ops, SINGLE_KEYS)
        for k, v in out.items():
            self.record("pybpfnet", "breakdown." + k, v)

    def py_load(self):
        self.record("pybpfnet", "load.ms",
                    self.py("load", self.b("xdp_trivial.bpf.o"), self.load_iters)["median_ms"])

    def py_ring(self, mode, rate, events, obj):
        out = self.py("ring", self.b(obj), self.b("rb_producer"), mode, rate, events,
                      self.cpu, self.pcpu)
        self.record("pybpfnet", ring_key(mode, rate), out)

    def bcc(self, *args):
        if self.bcc_env is None:
            raise Unavailable(self.bcc_reason)
        try:
            return self._run([self.args.bcc_python, "bcc_bench.py", *map(str, args)],
                             env=self.bcc_env)
        except RuntimeError as e:
            if not self.results["bcc"]:
                # bcc never worked in this session: report it, don't crash
                self.bcc_env = None
                self.bcc_reason = str(e)
                raise Unavailable(self.bcc_reason) from None
            raise

    def bcc_maps(self):
        out = self.bcc("maps", "bpf/bcc_maps.bcc.c", self.single_ops, SINGLE_KEYS)
        for section in ("single", "batch", "array"):
            for k, v in out[section].items():
                self.record("bcc", "%s.%s" % (section, k), v)

    def bcc_load(self):
        self.record("bcc", "load.ms", self.bcc("load", "bpf/xdp_trivial.bpf.c",
                                               self.bcc_load_iters)["median_ms"])

    def bcc_ring(self, mode, rate, events, obj):
        extra = ["-DSUBMIT_FLAGS=BPF_RB_NO_WAKEUP"] if obj.startswith("ringbuf_nowakeup") else []
        out = self.bcc("ring", "bpf/bcc_ringbuf.bcc.c", self.b("rb_producer"), mode, rate,
                       events, self.cpu, self.pcpu, *extra)
        self.record("bcc", ring_key(mode, rate), out)

    def ring_cases(self):
        paced, flat = self.paced_events, self.flat_events
        return [("poll-decode", PACED_RATE, paced, "ringbuf.bpf.o"),
                ("poll-count", PACED_RATE, paced, "ringbuf.bpf.o"),
                ("poll-decode", 0, flat, "ringbuf.bpf.o"),
                ("poll-count", 0, flat, "ringbuf.bpf.o"),
                ("busy-decode", PACED_RATE, paced, "ringbuf_nowakeup.bpf.o")]

    def round_tasks(self):
        """[(task, {side: callable})]: the same task of every side runs
        back to back, so its runs are seconds apart."""
        tasks = [("maps", {"c": self.c_maps, "pybpfnet": self.py_maps, "bcc": self.bcc_maps}),
                 ("breakdown", {"pybpfnet": self.py_breakdown}),
                 ("load", {"c": self.c_load, "pybpfnet": self.py_load, "bcc": self.bcc_load})]
        for case in self.ring_cases():
            tasks.append(("ring %s %s" % case[:2], {
                "c": lambda c=case: self.c_ring(*c),
                "pybpfnet": lambda c=case: self.py_ring(*c),
                "bcc": lambda c=case: self.bcc_ring(*c)}))
        return tasks

    def run(self):
        order = ["c", "pybpfnet", "bcc"]
        t0 = time.monotonic()
        for r in range(self.args.rounds):
            self.round = r
            rot = order[r % 3:] + order[:r % 3]
            for task, by_side in self.round_tasks():
                for side in rot:
                    if side not in by_side:
                        continue
                    try:
                        by_side[side]()
                    except Unavailable:
                        pass
                    except (RuntimeError, ValueError, KeyError, OSError,
                            subprocess.TimeoutExpired) as e:
                        # keep going: one broken run must not cost the others
                        self.errors.append("round %d, %s, %s: %s" % (r + 1, side, task, e))
                        print("error: %s" % self.errors[-1], file=sys.stderr, flush=True)
            print("round %d/%d done (%.0f s)" % (r + 1, self.args.rounds,
                                                 time.monotonic() - t0),
                  file=sys.stderr, flush=True)
        return self.results


def ring_key(mode, rate):
    return "ring.%s.%s" % (mode, "paced" if rate else "flat")


# ------------------------------------------------------------------ reporting

def per_round(results, side, key, field=None):
    """{round: value} of one measurement; ring runs give their ``field``
    ("rate" in events/s or "drop_pct")."""
    runs = results[side].get(key) if key else None
    if not runs:
        return {}
    out = {}
    for r, v in runs.items():
        if isinstance(v, dict):
            if field == "rate":
                v = v["consumed"] / v["seconds"] if v["seconds"] > 0 else 0.0
            elif field == "drop_pct":
                v = 100.0 * v["drops"] / v["produced"]
            else:
                v = v["produced"] - v["consumed"] - v["drops"]
        out[r] = v
    return out


def med(results, side, key, field=None):
    vals = per_round(results, side, key, field)
    return statistics.median(vals.values()) if vals else None


def paired_ratio(num, den):
    """Median over rounds of num/den, pairing the runs of the same round
    (they ran seconds apart, so background load hits both alike)."""
    common = [r for r in num if r in den and den[r]]
    return statistics.median(num[r] / den[r] for r in common) if common else None


def fmt_num(x):
    if x is None:
        return "—"
    if x >= 1000:
        return "{:,.0f}".format(x)
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def fmt_ring(v):
    if v is None:
        return "—"
    return "%.2fM/s, %s%% drop" % (v["rate"] / 1e6, fmt_pct(v["drop_pct"]))


def fmt_pct(p):
    if p == 0:
        return "0"
    return "%.1f" % p if p >= 0.1 else "<0.1"


def fmt_ratio(r):
    return "—" if r is None else "%.2fx" % r


class Table:
    def __init__(self, results, bcc_reason):
        self.res = results
        self.bcc_reason = bcc_reason
        self.rows = []
        self.warnings = []

    def m(self, side, key, field=None):
        return med(self.res, side, key, field)

    def pr(self, side, key, field=None):
        return per_round(self.res, side, key, field)

    def section(self, title):
        self.rows.append(("section", title))

    def _cells(self, keys):
        c, py, bc = (self.m(side, k) for side, k in zip(("c", "pybpfnet", "bcc"), keys))
        rounds = [self.pr(side, k) for side, k in zip(("c", "pybpfnet", "bcc"), keys)]
        return c, py, bc, paired_ratio(rounds[1], rounds[0]), paired_ratio(rounds[2], rounds[0]), rounds

    def row(self, label, unit, keys, target=None, bound=None):
        """keys: (c_key, py_key, bcc_key); bound: pybpfnet/C ratio target."""
        c, py, bc, rp, rb, _ = self._cells(keys)
        met = "—" if bound is None or rp is None else ("yes" if rp <= bound else "no")
        self.rows.append(("row", [label, unit, fmt_num(c), fmt_num(py), fmt_num(bc),
                                  fmt_ratio(rp), fmt_ratio(rb), target or "", met]))

    def speedup_row(self, label, keys, goal):
        c, py, bc, rp, rb, rounds = self._cells(keys)
        sp = paired_ratio(rounds[2], rounds[1])
        met = "—" if sp is None else ("yes" if sp >= goal else "no")
        self.rows.append(("row", [label, "ns/elem", fmt_num(c), fmt_num(py), fmt_num(bc),
                                  fmt_ratio(rp), fmt_ratio(rb),
                                  ">= %dx faster than bcc items(): %s" % (
                                      goal, "—" if sp is None else "%.1fx" % sp), met]))

    def abs_row(self, label, unit, keys, limit):
        c, py, bc, rp, rb, _ = self._cells(keys)
        met = "—" if py is None else ("yes" if py <= limit else "no")
        self.rows.append(("row", [label, unit, "%.3f" % c if c is not None else "—",
                                  "%.3f" % py if py is not None else "—", fmt_num(bc),
                                  fmt_ratio(rp), fmt_ratio(rb), "<= %g ms" % limit, met]))

    def ring_row(self, label, key, target, min_rate=None, no_drops=False):
        sides = ("c", "pybpfnet", "bcc")
        cells = {}
        for side, name in zip(sides, ("C", "pybpfnet", "bcc")):
            if not self.pr(side, key):
                cells[side] = None
                continue
            lost = max(self.pr(side, key).values())
            if lost:
                self.warnings.append("%s, %s: %d records neither consumed nor counted as "
                                     "dropped" % (label, name, lost))
            cells[side] = {"rate": self.m(side, key, "rate"),
                           "drop_pct": self.m(side, key, "drop_pct")}
        # a rate is a throughput: the cost ratio is C's rate over the other's
        crate = self.pr("c", key, "rate")
        rp = paired_ratio(crate, self.pr("pybpfnet", key, "rate"))
        rb = paired_ratio(crate, self.pr("bcc", key, "rate"))
        c, py = cells["c"], cells["pybpfnet"]
        met = "—"
        if py is not None and min_rate is not None:
            met = "yes" if py["rate"] >= min_rate else "no"
        elif py is not None and no_drops and c is not None and c["drop_pct"] == 0:
            # only meaningful where the C consumer keeps up
            met = "yes" if py["drop_pct"] == 0 else "no"
        self.rows.append(("row", [label, "events/s", fmt_ring(c), fmt_ring(py),
                                  fmt_ring(cells["bcc"]), fmt_ratio(rp), fmt_ratio(rb),
                                  target, met]))

    def markdown(self, errors=()):
        head = ["operation", "unit", "C (floor)", "pybpfnet", "bcc", "pybpfnet/C",
                "bcc/C", "target (pybpfnet)", "met"]
        out = ["| " + " | ".join(head) + " |",
               "| " + " | ".join(["---", "---"] + ["---:"] * 5 + ["---", "---"]) + " |"]
        for kind, data in self.rows:
            if kind == "section":
                out.append("| **%s** |" % data + " |" * (len(head) - 1))
            else:
                out.append("| " + " | ".join(data) + " |")
        if self.bcc_reason:
            out.append("")
            out.append("bcc: unavailable (%s)" % self.bcc_reason)
        if self.warnings:
            out.append("")
            out += ["Warning: %s" % w for w in self.warnings]
        if errors:
            out.append("")
            out.append("Failed runs (their figures are missing from the medians above):")
            out += ["- %s" % e for e in errors]
        return "\n".join(out)


def build_table(results, bcc_reason):
    t = Table(results, bcc_reason)
    t.section("1. single element, BPF_MAP_TYPE_HASH, %s keys present" % "{:,}".format(SINGLE_KEYS))
    t.row("u32 -> u64 lookup `m[k]`", "ns/op",
          ("single.u64_lookup",) * 3, "<= 1.3x C", 1.3)
    t.row("u32 -> u64 update `m[k] = v`", "ns/op",
          ("single.u64_update",) * 3, "<= 1.3x C", 1.3)
    t.row("u32 -> struct flow_rec (40 B) lookup", "ns/op",
          ("single.rec_lookup",) * 3, "<= 1.5x C", 1.5)
    t.row("u32 -> struct flow_rec update", "ns/op",
          ("single.rec_update",) * 3, "<= 1.5x C", 1.5)
    for vt, *title in (("u64", "2a", "u32 -> u64"), ("rec", "2b", "u32 -> struct flow_rec")):
        t.section("%s. batch, HASH of 100,000 entries, %s (C: fastest chunk size)" % tuple(title))
        t.row("update from Python objects", "ns/elem",
              ("batch.%s_update" % vt, "batch.%s_update_py" % vt, "batch.%s_update_py" % vt),
              "<= 1.5x C", 1.5)
        t.row("update from numpy arrays (bcc: prebuilt ctypes arrays)", "ns/elem",
              ("batch.%s_update" % vt, "batch.%s_update_np" % vt, "batch.%s_update_ct" % vt),
              "<= 1.1x C", 1.1)
        t.row("lookup into Python objects (bcc: items_lookup_batch)", "ns/elem",
              ("batch.%s_lookup" % vt, "batch.%s_lookup_py" % vt, "batch.%s_lookup_py" % vt),
              "<= 1.5x C", 1.5)
        t.row("lookup into numpy arrays", "ns/elem",
              ("batch.%s_lookup" % vt, "batch.%s_lookup_np" % vt, None), "<= 1.1x C", 1.1)
        t.speedup_row("read all into Python (pybpfnet lookup_batch() vs bcc items())",
                      ("batch.%s_lookup" % vt, "batch.%s_lookup_py" % vt,
                       "batch.%s_items" % vt), 10)
    t.section("3. fill a 65,537-entry ARRAY (u32 -> u64)")
    t.row("one update per element", "ms", ("array.loop_ms",) * 3, "<= 1.3x C", 1.3)
    t.row("one batch from Python objects", "ms",
          ("array.batch_ms", "array.batch_py_ms", "array.batch_py_ms"), "<= 1.5x C", 1.5)
    t.row("one batch from numpy (bcc: prebuilt ctypes arrays)", "ms",
          ("array.batch_ms", "array.batch_np_ms", "array.batch_ct_ms"), "<= 1.1x C", 1.1)
    t.section("4. open + load a trivial XDP object, in-process (bcc: compile + load)")
    t.abs_row("open+load+close, median", "ms", ("load.ms",) * 3, 2)
    t.section("5. ring buffer, 32-byte events, producer = BPF_PROG_TEST_RUN on another CPU")
    t.ring_row("2M ev/s offered, poll, read 2 fields per event",
               "ring.poll-decode.paced", "no drops where C has none", no_drops=True)
    t.ring_row("2M ev/s offered, poll, count only (pybpfnet: decoded, not read)",
               "ring.poll-count.paced", "no drops where C has none", no_drops=True)
    t.ring_row("producer flat out, poll, read 2 fields per event",
               "ring.poll-decode.flat", ">= 2M ev/s decoded", min_rate=2e6)
    t.ring_row("producer flat out, poll, count only (pybpfnet: decoded, not read)",
               "ring.poll-count.flat", ">= 2M ev/s decoded", min_rate=2e6)
    t.ring_row("2M ev/s offered, busy consume() loop, BPF_RB_NO_WAKEUP",
               "ring.busy-decode.paced", "no drops where C has none", no_drops=True)
    return t


def breakdown_table(results):
    """Where one pybpfnet m[k] goes, next to C's whole call."""
    def p(k):
        return med(results, "pybpfnet", "breakdown." + k)

    def c(k):
        return med(results, "c", "single." + k)

    if p("loop") is None:
        return ""
    rows = [
        ("benchmark loop + a no-op Python call (included in every row below)", p("loop")),
        ("bare cffi call into the binding, no syscall", p("ffi_call")),
        ("C: bpf_map_lookup_elem (u64 value)", c("u64_lookup")),
        ("cffi `pybn_lookup_int` (syscall included)", p("u64_raw_lookup")),
        ("`m[k]` u32 -> u64 (whole call)", p("u64_getitem")),
        ("C: bpf_map_lookup_elem (struct value)", c("rec_lookup")),
        ("cffi `bpf_map_lookup_elem`, key pre-encoded", p("rec_raw_lookup")),
        ("key encode `key_type.encode` (u32 -> bytes), alone", p("rec_key_encode")),
        ("value decode (40 B -> namedtuple), alone", p("rec_value_decode")),
        ("`ValueBuffer.get()` (per-thread scratch buffer), alone", p("rec_buffer_get")),
        ("`m._lookup_raw(k)`: encode + buffer + cffi call", p("rec_lookup_raw")),
        ("`m[k]` u32 -> struct (whole call)", p("rec_getitem")),
        ("C: bpf_map_update_elem (struct value)", c("rec_update")),
        ("cffi `bpf_map_update_elem`, pre-encoded", p("rec_raw_update")),
        ("value encode (namedtuple -> 40 B), alone", p("rec_value_encode")),
        ("`m[k] = v` u32 -> struct (whole call)", p("rec_setitem")),
    ]
    out = ["| component (medians, same run) | ns/op |", "| --- | ---: |"]
    out += ["| %s | %s |" % (name, fmt_num(v)) for name, v in rows if v is not None]
    spec = p("open_spec_ms")
    if spec is not None:
        out.append("| `bn.open()` of the trivial object (spec only, no syscalls) | %.3f ms |"
                   % spec)
    return "\n".join(out)


def noise_note(results):
    """How much the C floor moved between rounds: background load shows here."""
    vals = list(per_round(results, "c", "single.u64_lookup").values())
    if len(vals) < 2 or min(vals) <= 0:
        return "C floor spread across rounds: n/a"
    spread = max(vals) / min(vals)
    note = "C floor spread across rounds (u32 -> u64 lookup, max/min): %.2fx" % spread
    if spread > 1.25:
        note += (" -- the machine was busy during this run: absolute figures are "
                 "inflated and ratios noisier than usual; rerun on a quiet machine")
    return note


def environment(args):
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "kernel": platform.release(),
        "cpu": "%s x %d" % (cpu, os.cpu_count() or 1),
        "load": "%.2f %.2f %.2f" % os.getloadavg(),
        "pybpfnet": cmd([args.py, "-c", "import pybpfnet, sys; from pybpfnet import _binding as b; "
                         "print(pybpfnet.__version__, 'libbpf %d.%d' % b.LIBBPF_VERSION, "
                         "'Python', sys.version.split()[0])"]),
        "bcc": cmd([args.bcc_python, "-c", "import bcc, sys; print(bcc.__version__, 'Python', "
                    "sys.version.split()[0])"]) or "not importable",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke test)")
    ap.add_argument("--build", default=os.path.join(HERE, "build"))
    ap.add_argument("--py", default=sys.executable, help="Python with pybpfnet installed")
    ap.add_argument("--bcc-python", default="/usr/bin/python3")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--render", metavar="JSON",
                    help="only rebuild the table from a saved build/results.json")
    args = ap.parse_args()

    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        env, results, elapsed = saved["env"], saved["results"], saved["elapsed"]
        bcc_reason, args.rounds, args.quick = saved["bcc_reason"], saved["rounds"], saved["quick"]
        errors = saved.get("errors", [])
    else:
        env = environment(args)
        runner = Runner(args)
        t0 = time.monotonic()
        results = runner.run()
        elapsed = time.monotonic() - t0
        bcc_reason = runner.bcc_reason
        errors = runner.errors
        with open(os.path.join(runner.build, "results.json"), "w") as f:
            json.dump({"env": env, "results": results, "elapsed": elapsed,
                       "bcc_reason": bcc_reason, "rounds": args.rounds,
                       "quick": args.quick, "errors": errors}, f, indent=1)

    table = build_table(results, bcc_reason).markdown(errors)
    bd = breakdown_table(results)
    doc = ["# Benchmark results", "",
           "Generated by `make bench` (benchmarks/run.py); see README.md for what each "
           "row measures. Medians of %d rounds (fresh processes), %s; ratios are "
           "X / C measured in the same run (for ring rows: C's rate / X's rate)."
           % (args.rounds, "quick counts" if args.quick else "full counts"), "",
           "- date: %s, wall time %.0f s" % (env["date"], elapsed),
           "- kernel %s; CPU %s; load average at start %s" % (env["kernel"], env["cpu"],
                                                             env["load"]),
           "- %s" % noise_note(results),
           "- pybpfnet %s" % env["pybpfnet"],
           "- bcc %s" % env["bcc"], "",
           table, ""]
    if bd:
        doc += ["## Where a pybpfnet single-element call spends its time", "", bd, ""]
    text = "\n".join(doc)
    with open(args.results, "w") as f:
        f.write(text)
    print(text)
    # the table is written regardless, but a failed C or pybpfnet run fails
    # `make bench` (bcc and the diagnostic breakdown are reported only)
    return 1 if any(", bcc, " not in e and ", breakdown:" not in e for e in errors) else 0


if __name__ == "__main__":
    sys.exit(main())
