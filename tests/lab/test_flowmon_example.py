"""examples/flowmon.py and the ``flows`` command run in a lab and report
what was sent."""

import argparse
import importlib.util
import io
import json
import pathlib
import socket
import time

from flowlab import run_beside
from pybpfnet.dataplanes import flowmon_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_example(name):
    spec = importlib.util.spec_from_file_location("example_" + name,
                                                  ROOT / "examples" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_demo():
    ex = load_example("flowmon")
    out = io.StringIO()
    records = ex.demo(out=out)
    text = out.getvalue()
    assert "usecs               : count     distribution" in text
    assert "lost_records=0" in text
    udp = [r for r in records if r.protocol == 17 and r.direction == "egress"]
    assert sum(r.bytes for r in udp) == sum(14 + 20 + 8 + n for n in (10, 100, 1000))
    fins = [r for r in records if r.reason == "fin"]
    assert len(fins) == 6 and all(r.rtt_ns for r in fins)


def test_flows_command_json(lab, capsys):
    hosts = lab.two_hosts(v6=False)
    parser = argparse.ArgumentParser(prog="pybpfnet")
    flowmon_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flows", "eth0", "--direction", "egress", "--json",
                              "--seconds", "1.0", "--rtt-hist"])
    out = io.StringIO()

    def traffic():
        time.sleep(0.3)
        with hosts.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                hosts.client.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((str(hosts.server_ip), 4000))
            tx.bind((str(hosts.client_ip), 4001))
            for _ in range(5):
                tx.sendto(b"p" * 30, ("10.0.0.2", 4000))

    def flows():
        with hosts.client.enter():
            return flowmon_cli.cmd_flows(args, out=out)

    assert run_beside(traffic, flows) == 0
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    udp = [d for d in lines if d.get("sport") == 4001]
    assert len(udp) == 1 and udp[0]["packets"] == 5 and udp[0]["bytes"] == 5 * (14 + 20 + 8 + 30)
    assert lines[-1]["rtt_histogram"]["total"] == 0
    assert "flowmon: packets=" in capsys.readouterr().err
