"""Packet capture on a real veth in a lab: traffic between two namespaces,
captured with a filter, written as pcap and read back by tshark and scapy
(independent readers) -- exactly the expected packets, with their
addresses, ports, lengths and snap-length truncation; nothing the filter
rejects. Also the ``pybpfnet capture`` command line."""

import shutil
import socket
import subprocess
import threading
import time

import pytest

scapy_utils = pytest.importorskip("scapy.utils")
from scapy.layers.inet import IP, UDP  # noqa: E402  (binds Ethernet/IP for rdpcap)
from scapy.layers.inet6 import IPv6  # noqa: E402

from pybpfnet.cli import main
from pybpfnet.dataplanes.capture import Capture

PORT = 9999
OTHER = 9998
SIZES = (10, 300, 1000)
SNAPLEN = 128


@pytest.fixture
def hosts(lab):
    return lab.two_hosts()


def tshark_fields(path, *fields):
    """Rows of ``tshark -r path -T fields -e ...`` (one list per packet)."""
    if shutil.which("tshark") is None:
        pytest.fail("tshark is not installed (Makefile SYS_PKGS has it: make sysdeps)")
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line.split("|") for line in res.stdout.splitlines()]


def ip_of(hosts, v6, side):
    return str(getattr(hosts, side + ("_ip6" if v6 else "_ip")))


def udp_traffic(hosts, v6, sizes=SIZES, others=2):
    """From the client: one datagram of each size to the server's PORT and
    ``others`` to OTHER (both bound, so no ICMP errors); the server answers
    the first with a datagram from PORT. Returns the client's source port."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    server = ip_of(hosts, v6, "server")
    srv = hosts.server.socket(fam, socket.SOCK_DGRAM)
    srv2 = hosts.server.socket(fam, socket.SOCK_DGRAM)
    cli = hosts.client.socket(fam, socket.SOCK_DGRAM)
    with srv, srv2, cli:
        srv.bind((server, PORT))
        srv2.bind((server, OTHER))
        cli.bind((ip_of(hosts, v6, "client"), 0))
        for i, n in enumerate(sizes):
            cli.sendto(bytes([65 + i]) * n, (server, PORT))
        for _ in range(others):
            cli.sendto(b"o" * 50, (server, OTHER))
        srv.settimeout(5)
        for _ in sizes:
            _, peer = srv.recvfrom(65536)
        srv.sendto(b"reply", peer)
        cli.settimeout(5)
        cli.recvfrom(100)
        return cli.getsockname()[1]


def run_cli_during(argv, traffic, rounds):
    """Run ``pybpfnet`` with ``argv`` in a thread and call ``traffic()``
    every 50 ms (at most ``rounds`` times) until the command ends (it
    attaches in its own time); returns its exit status."""
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    t.start()
    try:
        for _ in range(rounds):
            if not t.is_alive():
                break
            traffic()
            time.sleep(0.05)
    finally:
        t.join(60)
    return result.get("rc")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_filtered_pcap_read_by_tshark_and_scapy(hosts, v6, tmp_path):
    server = ip_of(hosts, v6, "server")
    client = ip_of(hosts, v6, "client")
    expr = "udp and dst port %d and dst host %s" % (PORT, server)
    with hosts.client.enter():
        cap = Capture(["eth0"], filter=expr, snaplen=SNAPLEN)
    path = tmp_path / "udp.pcap"
    with cap:
        t0 = time.time_ns()
        sport = udp_traffic(hosts, v6)
        t1 = time.time_ns()
        assert cap.write_pcap(path, count=len(SIZES), duration=30) == len(SIZES)
        assert cap.poll(0) == []
        stats = cap.stats()
    assert stats.captured == len(SIZES) and stats.lost == 0
    assert stats.filtered >= 3                # the 2 datagrams to OTHER and the reply
    assert stats.seen >= stats.captured + stats.filtered     # (IPv6 ND may be in flight)

    l3 = 40 if v6 else 20
    want_len = [14 + l3 + 8 + n for n in SIZES]
    ipf = "ipv6" if v6 else "ip"
    rows = tshark_fields(path, "frame.len", "frame.cap_len", ipf + ".src", ipf + ".dst",
                         "udp.srcport", "udp.dstport", "frame.time_epoch")
    assert [r[:6] for r in rows] == [
        [str(n), str(min(n, SNAPLEN)), client, server, str(sport), str(PORT)] for n in want_len]
    for r in rows:      # wall-clock times from bpf_ktime_get_ns (10 ms slack for the conversion)
        assert t0 - 10**7 <= float(r[6]) * 1e9 <= t1 + 10**7

    pkts = scapy_utils.rdpcap(str(path))
    assert len(pkts) == len(SIZES)
    for i, (p, n) in enumerate(zip(pkts, want_len)):
        ip = p[IPv6] if v6 else p[IP]
        assert (ip.src, ip.dst, p[UDP].sport, p[UDP].dport) == (client, server, sport, PORT)
        assert p.wirelen == n and len(bytes(p)) == min(n, SNAPLEN)
        payload = bytes(p)[14 + l3 + 8:]
        assert payload == bytes([65 + i]) * len(payload)


def test_ping_both_directions(hosts):
    server = str(hosts.server_ip)
    with hosts.client.enter():
        cap = Capture(["eth0"], filter="icmp and host %s" % server, snaplen=64)
    with cap:
        assert hosts.client.ping(server, count=3) == 3
        got = list(cap.packets(count=6, duration=30))
        assert cap.poll(0) == []
    assert len(got) == 6
    seen = sorted((p.direction, p.data[14 + 20], int.from_bytes(p.data[14 + 26:14 + 28], "big"))
                  for p in got)
    assert seen == [("egress", 8, 1), ("egress", 8, 2), ("egress", 8, 3),
                    ("ingress", 0, 1), ("ingress", 0, 2), ("ingress", 0, 3)]
    assert {p.interface for p in got} == {"eth0"}
    assert all(p.orig_len == 14 + 20 + 8 + 56 and p.truncated for p in got)


@pytest.mark.parametrize("mode", ["auto", "generic"])
def test_xdp_hook_sees_ingress(hosts, tmp_path, mode):
    server = str(hosts.server_ip)
    with hosts.client.enter():
        cap = Capture(["eth0"], filter="icmp and src host %s" % server, hook="xdp",
                      xdp_mode=mode)
    with cap:
        assert hosts.client.ping(server, count=3) == 3
        n = cap.write_pcap(tmp_path / "xdp.pcap", count=3, duration=30)
        assert n == 3 and cap.poll(0) == []
    rows = tshark_fields(tmp_path / "xdp.pcap", "ip.src", "ip.dst", "icmp.type", "icmp.seq",
                         "frame.len")
    assert rows == [[server, str(hosts.client_ip), "0", str(i), "98"] for i in (1, 2, 3)]


def test_cli_writes_pcap(hosts, tmp_path):
    path = tmp_path / "cli.pcap"
    argv = ["capture", "--netns", hosts.client.name, "-c", "4", "-w", str(path), "-s", "100",
            "eth0", "udp", "and", "dst", "port", str(PORT)]
    # traffic until the command has its 4 packets
    assert run_cli_during(argv, lambda: udp_traffic(hosts, False, sizes=(200,), others=1),
                          600) == 0
    rows = tshark_fields(path, "ip.src", "ip.dst", "udp.dstport", "frame.len", "frame.cap_len")
    assert rows == [[str(hosts.client_ip), str(hosts.server_ip), str(PORT), "242", "100"]] * 4


def test_cli_prints_lines_and_rejects_bad_filters(hosts, capsys):
    argv = ["capture", "--netns", hosts.client.name, "eth0", "--duration", "0",
            "--filter", "udp port"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "expected a port number or service name at position 8" in err
    assert main(["capture", "--netns", hosts.client.name, "nosuch0"]) == 1
    assert "no interface 'nosuch0'" in capsys.readouterr().err

    argv = ["capture", "--netns", hosts.client.name, "-c", "2", "eth0", "icmp"]
    assert run_cli_during(argv, lambda: hosts.client.ping(str(hosts.server_ip), count=1),
                          300) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all("eth0" in ln and "IPv4 %s > %s" % (hosts.client_ip, hosts.server_ip) in ln
               or "IPv4 %s > %s" % (hosts.server_ip, hosts.client_ip) in ln for ln in lines)


def test_cli_pcap_to_stdout(hosts, capsysbinary):
    from pybpfnet.packet.pcap import read_pcap
    argv = ["capture", "--netns", hosts.client.name, "-c", "2", "-w", "-",
            "--direction", "ingress", "eth0", "icmp"]
    assert run_cli_during(argv, lambda: hosts.client.ping(str(hosts.server_ip), count=1),
                          300) == 0
    out = capsysbinary.readouterr()
    recs = read_pcap(out.out)
    assert len(recs) == 2 and all(r.data[14 + 20] == 0 for r in recs)     # echo replies
    assert b"captured=" in out.err
