"""``pybpfnet top`` on a real TCP stream in a lab: JSON frames whose totals
match what the socket sent, rates that add up to the totals, and the plain
and rich renderings naming the flow."""

import contextlib
import io
import json
import socket
import threading

import pytest

from flowlab import drain, serve_one
from pybpfnet.cli import main
from pybpfnet.dataplanes.flow_top import run_top
from pybpfnet.dataplanes.flowmon import FlowMonitor


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


@contextlib.contextmanager
def stream(hosts, chunk=20_000):
    """A TCP connection from client to server sending ``chunk`` bytes every
    20 ms while the block runs; yields a dict with the client port and
    the bytes sent so far."""
    state = {"sent": 0}
    stop = threading.Event()
    with hosts.server.create_server((str(hosts.server_ip), 0)) as srv, serve_one(srv), \
            hosts.client.create_connection(srv.getsockname()) as c:
        state["port"] = c.getsockname()[1]

        def send():
            while not stop.wait(0.02):
                c.sendall(b"s" * chunk)
                state["sent"] += chunk

        w = threading.Thread(target=send)
        w.start()
        try:
            yield state
        finally:
            stop.set()
            w.join()
            c.shutdown(socket.SHUT_WR)
            drain(c)


def test_top_json_frames_follow_the_stream(hosts, capsys):
    with stream(hosts) as st:
        with hosts.client.enter():
            rc = main(["top", "eth0", "--direction", "egress", "--interval", "0.3",
                       "--iterations", "5", "--json"])
        sent = st["sent"]
    assert rc == 0
    frames = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(frames) == 5 and frames[0]["interval"] is None
    # the first frame comes right after attaching: the flow may not be there yet
    seen = []
    for f in frames:
        rows = [r for r in f["flows"] if r["sport"] == st["port"] and r["protocol"] == "TCP"]
        assert len(rows) <= 1, f
        if rows or seen:
            assert rows, f                    # once there, it stays (the stream goes on)
            seen.append((f, rows[0]))
    assert len(seen) >= 4
    mine = [r for _, r in seen]
    # totals grow; each frame's rate is its growth over its interval
    for (_, prev), (f, cur) in zip(seen, seen[1:]):
        assert cur["bytes"] >= prev["bytes"]
        assert cur["bytes_per_s"] == pytest.approx((cur["bytes"] - prev["bytes"])
                                                   / f["interval"])
        assert cur["packets_per_s"] == pytest.approx((cur["packets"] - prev["packets"])
                                                     / f["interval"])
    assert mine[-1]["bytes"] > mine[0]["bytes"] and mine[-1]["bytes_per_s"] > 0
    # payload seen by the last frame never exceeds what was sent by the end
    # (+ headers: at most 66 bytes per segment, the SYN 8 more)
    assert mine[-1]["bytes"] <= sent + mine[-1]["packets"] * 66 + 8


def test_top_renders_plain_and_rich(hosts):
    with hosts.client.enter():
        fm = FlowMonitor(["eth0"], directions=("egress",))
    with fm, stream(hosts) as st:
        plain = io.StringIO()
        assert run_top(fm, interval=0.2, iterations=2, mode="plain", out=plain) == 2
        text = plain.getvalue()
        want = "%s:%d" % (hosts.client_ip, st["port"])
        last = text.split("pybpfnet top:")[-1]
        (line,) = [ln for ln in last.splitlines() if want in ln]
        assert "%s:" % hosts.server_ip in line and "/s" in line and "TCP" in line
        pytest.importorskip("rich")
        fancy = io.StringIO()
        assert run_top(fm, interval=0.2, iterations=2, mode="rich", out=fancy) == 2
        assert want in fancy.getvalue() and "BYTES/S" in fancy.getvalue()
