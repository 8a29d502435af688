"""The main demo: a Maglev L4 load balancer (XDP) in front of five HTTP
servers, with health checks, a backend failure and a drain.

    python examples/load_balancer.py [--mode dsr-ipip|dsr-gue|l2-dsr|nat] [--plain]

It builds a lab of network namespaces (a client, the LB, five backends
on one L2 segment), starts an HTTP server in each backend, puts the LB in
front of them and sends a steady stream of HTTP requests, each over a
fresh TCP connection, to the virtual IP. A live table shows what every
backend served, its health and its share of the Maglev table. Then one
backend's server is killed: the health checks take it out of the table
and only its share of the flows moves. It comes back, another backend is
drained, and the demo ends with a summary; the lab is removed (nothing is
left behind). About 20 seconds. Needs root (CAP_BPF, CAP_NET_ADMIN,
CAP_SYS_ADMIN). With `rich` installed the table is live; ``--plain`` (or
a non-terminal output) prints snapshots.
"""

import argparse
import collections
import sys
import threading
import time

from pybpfnet.dataplanes._lb_testing import VIPS, KeepAlive, LbLab, drive
from pybpfnet.dataplanes.lb import Backend, HealthCheck, LoadBalancer, Service
from pybpfnet.netlab import Lab


class Traffic:
    """Requests from the client in the background (batches of 40), counted
    per backend; ``errors``: (when the batch started, error, when it
    ended; monotonic seconds). What the
    thread fails with is raised again on leaving the ``with``."""

    def __init__(self, ns, vip):
        self.ns, self.vip = ns, vip
        self._counts = collections.Counter()
        self.errors = []
        self.total = 0
        self.failure = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def counts(self):
        """{backend: requests it answered} so far (a copy)."""
        with self._lock:
            return dict(self._counts)

    def _run(self):
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                replies = drive(self.ns, self.vip, count=40, threads=2, timeout=2.0)
                ended = time.monotonic()
                with self._lock:
                    for r in replies:
                        self.total += 1
                        if r.error:
                            self.errors.append((started, r.error, ended))
                        else:
                            self._counts[r.backend] += 1
                time.sleep(0.01)
        except BaseException as exc:       # handed to __exit__
            self.failure = exc

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self.failure is not None and exc[0] is None:
            raise RuntimeError("the traffic thread failed") from self.failure


def snapshot(lb, traffic, since):
    """Rows for the table: one per backend."""
    st = lb.status().service("web")
    counts = traffic.counts
    served = sum(counts.values()) or 1
    rows = []
    for b in st.backends:
        got = counts.get(b.name, 0)
        rows.append(dict(backend=b.name, address=str(b.address), state=b.state,
                         health=b.health, weight=b.weight, slots=b.slots,
                         share="%.1f%%" % (100 * b.share),
                         requests=got - since.get(b.name, 0),
                         seen="%.1f%%" % (100 * got / served),
                         flows=b.new_flows))
    return rows


COLUMNS = ("backend", "address", "state", "weight", "slots", "share", "requests", "seen",
           "flows", "health")
HEADINGS = ("backend", "address", "state", "weight", "Maglev slots", "table share",
            "requests this phase", "share of all requests", "LB new flows", "health check")


def plain_table(title, rows):
    cells = [HEADINGS] + [tuple(str(r[c]) for c in COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [title]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


RICH_COLUMNS = ("backend", "state", "weight", "share", "requests", "seen", "health")


def rich_table(title, rows):
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for c in RICH_COLUMNS:
        h = HEADINGS[COLUMNS.index(c)]
        t.add_column(h, justify="left" if c in ("backend", "state", "health") else "right")
    colour = {"up": "green", "down": "red", "drained": "yellow"}
    for r in rows:
        cells = [str(r[c]) for c in RICH_COLUMNS]
        cells[1] = "[%s]%s[/]" % (colour.get(r["state"], "white"), r["state"])
        t.add_row(*cells)
    return t


class View:
    """The live table: rich.Live on a terminal, else text snapshots."""

    def __init__(self, out, plain):
        self.out = out
        self.live = None
        if not plain:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                plain = True
            else:
                console = Console(file=out)
                plain = not console.is_terminal
                if not plain:
                    self.live = Live(console=console, refresh_per_second=4)
        self.plain = plain

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def show(self, title, rows):
        if self.live is not None:
            self.live.update(rich_table(title, rows))
        else:
            print(plain_table(title, rows) + "\n", file=self.out, flush=True)

    def say(self, text):
        if self.live is not None:
            self.live.console.print(text)
        else:
            print(text, file=self.out, flush=True)


def modulo_moved(n_before, n_after, size):
    """Fraction of hash values whose backend changes with ``hash % N``
    when N goes from n_before to n_after (what Maglev avoids)."""
    return sum(1 for h in range(size) if h % n_before != h % n_after) / size


def demo(mode="dsr-ipip", backends=5, out=sys.stdout, plain=False, steady=3.0,
         refresh=1.0):
    """Run the demo; returns a summary dict (requests, errors, events, ...)."""
    result = {}
    events = []           # (monotonic time it arrived, LbEvent)
    with Lab() as lab, LbLab(lab, backends) as ll:
        health = HealthCheck("http", path="/healthz", interval=0.2, timeout=0.2, fall=3,
                             rise=2)
        web = Service("web", VIPS[mode], 80, mode=mode, health=health,
                      backends=[Backend(n, a) for n, a in ll.addresses.items()])
        client = ll.client_for(mode)

        def seen(what):
            return [ev for _, ev in events if ev.what == what]

        with LoadBalancer(ll.lb_iface, [web], netns=ll.lb,
                          on_event=lambda ev: events.append((time.monotonic(), ev))) as lb, \
                View(out, plain) as view:
            view.say("pybpfnet Maglev load balancer: VIP %s:80 (%s) -> %d HTTP backends; "
                     "health: %s" % (VIPS[mode], mode, backends, health.describe()))
            first = lb.maglev("web")
            with Traffic(client, VIPS[mode]) as traffic:

                def phase(title, seconds, until=None):
                    since = traffic.counts
                    deadline = time.monotonic() + seconds
                    while True:
                        view.show("%s  (%d requests, %d errors)" % (
                            title, traffic.total, len(traffic.errors)),
                            snapshot(lb, traffic, since))
                        if time.monotonic() >= deadline and (until is None or until()):
                            break
                        if time.monotonic() >= deadline + 15:
                            raise RuntimeError("timed out in phase %r" % title)
                        time.sleep(refresh)

                phase("steady state", steady)
                victim = "b3"
                ll.kill_server(victim)
                killed = time.monotonic()
                view.say("killed the HTTP server of %s" % victim)
                phase("%s failing" % victim, 0, until=lambda: seen("down"))
                removed_at, down = next((t, ev) for t, ev in events if ev.what == "down")
                second = lb.maglev("web")
                old, new = first.names(), second.names()
                moved = [i for i in range(first.size) if old[i] != new[i]]
                others = sum(1 for i in moved if old[i] != victim)
                view.say("health checks took %s out after %d failed checks (%.1f s): %s"
                         % (victim, down.health.failures, removed_at - killed, down.detail))
                view.say("Maglev moved %.1f%% of the table: %s's %d slots, and %d others "
                         "(%.2f%%); a hash %% N table would have moved %.0f%%"
                         % (100 * down.disruption, victim, first.balance()[victim],
                            others, 100 * others / first.size,
                            100 * modulo_moved(backends, backends - 1, first.size)))
                phase("%s out of the table" % victim, steady)
                ll.start_server(victim)
                view.say("restarted %s" % victim)
                phase("%s recovering" % victim, 0, until=lambda: seen("up"))
                restored = lb.maglev("web") == first
                view.say("%s is back; the table is the one we started with: %s"
                         % (victim, "yes" if restored else "no"))
                # long-lived connections, then drain the backend of the first
                conns = [KeepAlive(client, VIPS[mode]) for _ in range(10)]
                try:
                    owners = [c.request() for c in conns]
                    drained = owners[0]
                    lb.drain("web", drained)
                    view.say("drained %s: no new flows; its %d established connections "
                             "go on" % (drained, owners.count(drained)))
                    phase("%s drained" % drained, steady)
                    still = [c.request() for c, o in zip(conns, owners) if o == drained]
                finally:
                    for c in conns:
                        c.close()
                view.say("the %d connections on %s answered by: %s; then they closed"
                         % (len(still), drained, ", ".join(sorted(set(still)))))
                result["final"] = snapshot(lb, traffic, {})
            result.update(
                requests=traffic.total, errors=list(traffic.errors),
                counts=traffic.counts, events=[ev for _, ev in events],
                disruption=down.disruption, victim=victim, drained=drained,
                drained_still=still, others_moved=others, table_size=first.size,
                errors_before_kill=[e for e in traffic.errors if e[2] < killed],
                errors_after_removal=[e for e in traffic.errors if e[0] > removed_at],
                restored=restored)
            clean = not result["errors_before_kill"] and not result["errors_after_removal"]
            view.say("done: %d requests over fresh TCP connections, %d failed%s"
                     % (traffic.total, len(traffic.errors),
                        " (all while %s was dead and not yet out of the table)" % victim
                        if clean and traffic.errors else ""))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=tuple(VIPS), default="dsr-ipip",
                   help="forwarding mode (default: dsr-ipip)")
    p.add_argument("--plain", action="store_true", help="text snapshots, no live table")
    args = p.parse_args(argv)
    start = time.monotonic()
    demo(args.mode, plain=args.plain)
    print("(%.1f s)" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
