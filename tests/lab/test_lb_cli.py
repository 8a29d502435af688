"""``pybpfnet lb``: apply pins a load balancer that keeps running after the
command; status/drain/weight work on it from other invocations; run does
the health checks; remove takes it away."""

import collections
import json
import os

import pytest

from pybpfnet import testing
from pybpfnet.dataplanes import _pins

pytestmark = pytest.mark.skipif(not testing.have_cap_bpf(), reason="needs CAP_BPF")

CONFIG = """\
[lb]
interface = "eth0"

[[service]]
name = "web"
vip = "10.99.0.1"
port = 80
mode = "dsr-ipip"

[service.health]
kind = "http"
path = "/healthz"
interval = 0.1
timeout = 0.1
fall = 2
rise = 1

[[service.backend]]
name = "b1"
address = "10.2.0.11"

[[service.backend]]
name = "b2"
address = "10.2.0.12"
weight = %d

[[service.backend]]
name = "b3"
address = "10.2.0.13"
"""


def cli(ns, capsys, *argv):
    from pybpfnet import cli as pcli
    rc = ns.run(pcli.main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_apply_status_drain_run_remove(lab, tmp_path, capsys):
    from pybpfnet.dataplanes import lb_cli
    from pybpfnet.dataplanes._lb_testing import LbLab, drive
    ll = LbLab(lab, 3)
    conf = tmp_path / "lb.toml"
    conf.write_text(CONFIG % 1)
    path = ll.lb.run(lb_cli.pin_dir, "eth0")
    try:
        rc, out, err = cli(ll.lb, capsys, "lb", "apply", str(conf))
        assert rc == 0, err
        assert "attached a load balancer to eth0: 1 services, 3 backends" in out
        assert os.path.isdir(path)
        # the command is over; the LB balances on its own
        replies = drive(ll.client, "10.99.0.1", count=300)
        assert not [r for r in replies if r.error]
        counts = collections.Counter(r.backend for r in replies)
        assert set(counts) == {"b1", "b2", "b3"}

        rc, out, err = cli(ll.lb, capsys, "lb", "status", "--json")
        assert rc == 0, err
        st = json.loads(out)["eth0"]["services"][0]
        assert st["name"] == "web" and st["new_flows"] == 300
        assert {b["name"]: b["new_flows"] for b in st["backends"]} == dict(counts)
        assert {b["state"] for b in st["backends"]} == {"up"}

        rc, out, err = cli(ll.lb, capsys, "lb", "drain", "web", "b1")
        assert rc == 0, err
        assert "drained web/b1 on eth0" in out and "b1 0" in out
        replies = drive(ll.client, "10.99.0.1", count=200)
        assert not [r for r in replies if r.error]
        assert "b1" not in {r.backend for r in replies}
        rc, out, err = cli(ll.lb, capsys, "lb", "status")
        line = next(x for x in out.splitlines() if x.strip().startswith("b1"))
        assert "drained" in line

        rc, out, err = cli(ll.lb, capsys, "lb", "weight", "web", "b1", "2")
        assert rc == 0, err
        rc, out, err = cli(ll.lb, capsys, "lb", "status", "--json")
        b1 = json.loads(out)["eth0"]["services"][0]["backends"][0]
        assert b1["weight"] == 2 and b1["state"] == "up"

        # health checks run in `lb run`: b2's server dies -> b2 leaves the table
        ll.kill_server("b2")
        rc, out, err = cli(ll.lb, capsys, "lb", "run", str(conf), "--duration", "1.5",
                           "--every", "0.5")
        assert rc == 0, err
        assert "updated the load balancer on eth0" in out
        assert "web/b2 down: 2 checks failed: connect: ECONNREFUSED" in out
        rc, out, err = cli(ll.lb, capsys, "lb", "status", "--json")
        backends = json.loads(out)["eth0"]["services"][0]["backends"]
        b2 = next(b for b in backends if b["name"] == "b2")
        assert b2["state"] == "down" and b2["slots"] == 0 and "ECONNREFUSED" in b2["health"]
        # apply re-read the file: b1's weight is 1 again
        assert backends[0]["weight"] == 1
        replies = drive(ll.client, "10.99.0.1", count=200)
        assert not [r for r in replies if r.error]
        assert "b2" not in {r.backend for r in replies}

        # a bad file is rejected whole, naming the line; the LB is untouched
        # (the first service would change: a new backend, other weights)
        rc, out, err = cli(ll.lb, capsys, "lb", "status", "--json")
        before = json.loads(out)["eth0"]["services"]
        bad = tmp_path / "bad.toml"
        bad.write_text((CONFIG % 5).replace('mode = "dsr-ipip"', 'mode = "dsr"')
                       + '\n[[service.backend]]\nname = "b4"\naddress = "10.2.0.14"\n')
        rc, out, err = cli(ll.lb, capsys, "lb", "apply", str(bad))
        assert rc == 1 and "bad.toml:8: service 1 (web): mode: one of" in err
        rc, out, err = cli(ll.lb, capsys, "lb", "status", "--json")
        after = json.loads(out)["eth0"]["services"]
        for svc in before + after:          # traffic counters may tick; the config may not
            for b in svc["backends"]:
                for key in ("packets", "bytes", "new_flows", "traffic_share", "health"):
                    b.pop(key)
            for key in ("packets", "bytes", "new_flows"):
                svc.pop(key)
        assert after == before

        rc, out, err = cli(ll.lb, capsys, "lb", "drain", "web", "nope")
        assert rc == 1 and "has no backend 'nope'" in err

        rc, out, err = cli(ll.lb, capsys, "lb", "remove")
        assert rc == 0, err
        assert not os.path.exists(path)
        rc, out, err = cli(ll.lb, capsys, "lb", "status")
        assert "no load balancers" in out
        rc, out, err = cli(ll.lb, capsys, "lb", "drain", "web", "b1")
        assert rc == 1 and "no load balancer in this network namespace" in err
    finally:
        if os.path.isdir(path):
            from pybpfnet.dataplanes.lb import LoadBalancer
            LoadBalancer.open_pinned(path).remove()
            _pins.prune(lb_cli.PIN_ROOT)
        ll.close()


def test_state_is_shared_between_processes(lab, tmp_path, capsys):
    """apply in one process, run (health checks) in a second, drain from a
    third while run is busy: the LB runs without any of them, and neither
    the drain nor the health verdict is lost."""
    import subprocess
    import sys
    import time

    from pybpfnet.dataplanes import lb_cli
    from pybpfnet.dataplanes._lb_testing import LbLab, drive
    ll = LbLab(lab, 3)
    conf = tmp_path / "lb.toml"
    conf.write_text(CONFIG % 1)
    path = ll.lb.run(lb_cli.pin_dir, "eth0")
    cmd = [sys.executable, "-m", "pybpfnet.cli", "lb"]
    try:
        p = ll.lb.run_process(cmd + ["apply", str(conf)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        replies = drive(ll.client, "10.99.0.1", count=150)
        assert not [r for r in replies if r.error]
        assert {r.backend for r in replies} == {"b1", "b2", "b3"}

        run = ll.lb.popen(cmd + ["run", str(conf), "--duration", "3", "--every", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        ll.kill_server("b2")
        rc, out, err = cli(ll.lb, capsys, "lb", "drain", "web", "b1")
        assert rc == 0, err
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        assert "web/b2 down" in out

        p = ll.lb.run_process(cmd + ["status", "--json"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        backends = {b["name"]: b for b in json.loads(p.stdout)["eth0"]["services"][0]["backends"]}
        assert backends["b1"]["state"] == "drained" and backends["b1"]["weight"] == 0
        assert backends["b2"]["state"] == "down"
        assert backends["b3"]["state"] == "up" and backends["b3"]["slots"] == 65537
        replies = drive(ll.client, "10.99.0.1", count=150)
        assert not [r for r in replies if r.error]
        assert {r.backend for r in replies} == {"b3"}

        p = ll.lb.run_process(cmd + ["remove"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert not os.path.exists(path)
    finally:
        if os.path.isdir(path):
            from pybpfnet.dataplanes.lb import LoadBalancer
            LoadBalancer.open_pinned(path).remove()
            _pins.prune(lb_cli.PIN_ROOT)
        ll.close()
