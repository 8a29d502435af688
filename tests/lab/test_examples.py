"""examples/ run and count what was really sent."""

import importlib.util
import io
import pathlib
import socket
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_example(name):
    spec = importlib.util.spec_from_file_location("example_" + name,
                                                  ROOT / "examples" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_packet_counter_counts_exactly_what_was_sent(lab):
    pc = load_example("packet_counter")
    hosts = lab.two_hosts()
    counter = pc.Counter()
    try:
        with hosts.server.enter():
            link = counter.prog.attach_xdp(hosts.server_if, mode="native")
        with link:
            s4 = hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s6 = hosts.client.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            for i in range(200):
                s4.sendto(b"a" * 10, (str(hosts.server_ip), 9))
            for i in range(50):
                s6.sendto(b"b" * 20, (str(hosts.server_ip6), 9))
            time.sleep(0.2)
            rows = {name: (p, b) for name, p, b, _ in counter.rows()}
        # UDP over IPv4: 14 + 20 + 8 + 10 bytes; IPv6: 14 + 40 + 8 + 20
        assert rows["10.0.0.1"] == (200, 200 * 52)
        assert rows["fd00::1"][0] >= 50          # + neighbour discovery from fd00::1
        out = io.StringIO()
        pc.show(counter, "t", 1.0, out=out)
        assert "10.0.0.1" in out.getvalue() and "packets" in out.getvalue()
    finally:
        counter.close()


def test_packet_counter_demo_runs():
    pc = load_example("packet_counter")
    totals = pc.demo(seconds=1)
    assert totals["10.0.0.1"] > 0 and totals["fd00::1"] > 0


def test_packet_counter_on_an_interface_argument(lab, capsys):
    pc = load_example("packet_counter")
    hosts = lab.two_hosts(v6=False)
    sock = hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    done = threading.Event()

    def send():
        while not done.is_set():
            sock.sendto(b"x", (str(hosts.server_ip), 9))
            time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with hosts.server.enter():
            pc.watch_interface(hosts.server_if.name, 1.5)
    finally:
        done.set()
        sender.join()
    out = capsys.readouterr().out
    assert "packets per source on eth0" in out
    row = next(line for line in out.splitlines() if line.startswith("10.0.0.1"))
    assert int(row.split()[1]) > 0


def test_load_balancer_demo(capsys):
    lbd = load_example("load_balancer")
    out = io.StringIO()
    r = lbd.demo(out=out, plain=True, steady=1.0, refresh=0.5)
    text = out.getvalue()
    assert r["requests"] > 500 and set(r["counts"]) == {"b1", "b2", "b3", "b4", "b5"}
    # failures only while b3 was dead and still in the table: none in batches
    # that started after the health checks took it out
    assert not r["errors_after_removal"], r["errors_after_removal"][:3]
    assert all("refused" in e.lower() or "reset" in e.lower() for _, e, _ in r["errors"])
    down = next(e for e in r["events"] if e.what == "down")
    assert down.backend == "b3" and down.health.failures == 3
    # minimal disruption: b3's fifth of the table, and under 1% of the rest
    assert 0.19 < r["disruption"] < 0.22
    assert r["others_moved"] < r["table_size"] // 100
    assert r["restored"]
    assert not r["errors_before_kill"], r["errors_before_kill"][:3]
    final = {row["backend"]: row for row in r["final"]}
    drained = r["drained"]
    assert final[drained]["state"] == "drained" and final[drained]["slots"] == 0
    assert final["b3"]["state"] == "up" or drained == "b3"
    # the drained backend's long-lived connections were still served by it
    assert r["drained_still"] and set(r["drained_still"]) == {drained}
    assert "health checks took b3 out after 3 failed checks" in text
    assert "a hash % N table would have moved 80%" in text

