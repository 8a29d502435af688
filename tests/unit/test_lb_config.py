"""Load balancer configuration: value classes and TOML files (any error
rejects the whole file with its line and reason); health-check state
machine (rise/fall)."""

import ipaddress

import pytest

from pybpfnet.dataplanes._lb_health import HealthState, _status
from pybpfnet.dataplanes.lb import (Backend, HealthCheck, LbConfig, LbConfigError, Service,
                                    load_config, parse_config)

GOOD = """\
# two services
[lb]
interface = "eth0"
table_size = 251

[[service]]
name = "web"
vip = "10.99.0.1"
port = 80
mode = "dsr-ipip"
affinity = "source"

[service.health]
kind = "http"
path = "/healthz"
interval = 0.5
timeout = 0.2
rise = 1
fall = 2
expect = "200-299"

[[service.backend]]
name = "b1"
address = "10.2.0.11"

[[service.backend]]
name = "b2"
address = "10.2.0.12"
weight = 3

[[service]]
name = "dns"
vip = "fd99::53"
port = 53
protocol = "udp"
mode = "nat"
table_size = 4099
backend = [{name = "r1", address = "fd02::1", port = 5353}]
"""


def test_good_file(tmp_path):
    path = tmp_path / "lb.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.interface == "eth0" and cfg.table_size == 251
    web, dns = cfg.services
    assert web.vip == ipaddress.ip_address("10.99.0.1") and web.port == 80
    assert web.protocol == "tcp" and web.mode == "dsr-ipip" and web.table_size is None
    assert web.affinity == "source" and dns.affinity == "none"
    assert web.health == HealthCheck("http", path="/healthz", interval=0.5, timeout=0.2,
                                     rise=1, fall=2, expect=(200, 299))
    assert [(b.name, str(b.address), b.weight) for b in web.backends] == [
        ("b1", "10.2.0.11", 1), ("b2", "10.2.0.12", 3)]
    assert dns.protocol == "udp" and dns.mode == "nat" and dns.table_size == 4099
    assert dns.backends == (Backend("r1", "fd02::1", port=5353),)
    assert dns.health == HealthCheck()             # tcp connect, the defaults
    assert cfg.service("dns") is dns
    with pytest.raises(KeyError, match="no service 'x'"):
        cfg.service("x")


def test_round_trip_through_toml_text():
    cfg = parse_config(GOOD)
    assert parse_config(cfg.to_toml()) == cfg
    assert LbConfig.from_dict(cfg.to_dict()) == cfg


def test_converters_and_defaults():
    b = Backend("b1", "10.0.0.1")
    assert b.address == ipaddress.IPv4Address("10.0.0.1") and b.weight == 1 and b.port is None
    s = Service("s", "fd00::1", 443, backends=[b, {"name": "b2", "address": "fd00::2"}])
    assert s.vip.version == 6 and s.mode == "dsr-ipip" and len(s.backends) == 2
    assert s.backend("b2").address == ipaddress.ip_address("fd00::2")
    assert s.key == (s.vip, 443, "tcp")
    with pytest.raises(KeyError, match="has no backend 'b9'"):
        s.backend("b9")
    assert HealthCheck(expect=204).expect == (204, 204)
    assert "http GET /x" in HealthCheck("http", path="/x").describe()


@pytest.mark.parametrize("make, message", [
    (lambda: Backend("b 1", "10.0.0.1"), "backend name"),
    (lambda: Backend("b1", "10.0.0.300"), "address: an IPv4 or IPv6 address"),
    (lambda: Backend("b1", "10.0.0.1", weight=-1), "weight: an int in 0..1000"),
    (lambda: Backend("b1", "10.0.0.1", weight=True), "weight"),
    (lambda: Backend("b1", "10.0.0.1", port=0), "port: a port number"),
    (lambda: Service("s", "10.0.0.1", 70000), "port: a port number"),
    (lambda: Service("s", "nope", 80), "vip: an IPv4 or IPv6 address"),
    (lambda: Service("s", "10.0.0.1", 80, protocol="sctp"), "protocol"),
    (lambda: Service("s", "10.0.0.1", 80, mode="dsr"), "mode: one of"),
    (lambda: Service("s", "10.0.0.1", 80, affinity="cookie"), "affinity: \"none\" or"),
    (lambda: Service("s", "10.0.0.1", 80, table_size=100), "table_size: a prime"),
    (lambda: Service("s", "10.0.0.1", 80, backends=[Backend("a", "10.0.0.2"),
                                                    Backend("a", "10.0.0.3")]),
     "duplicate name"),
    (lambda: Service("s", "10.0.0.1", 80, mode="nat", backends=[Backend("a", "fd00::2")]),
     "needs one family"),
    (lambda: Service("s", "10.0.0.1", 80, backends=[Backend("a", "10.0.0.2", port=8080)]),
     "only NAT rewrites the port"),
    (lambda: HealthCheck("icmp"), "kind: one of"),
    (lambda: HealthCheck(interval=0), "interval: seconds"),
    (lambda: HealthCheck(interval=1, timeout=2), "timeout: at most interval"),
    (lambda: HealthCheck(rise=0), "rise: an int in 1..100"),
    (lambda: HealthCheck(path="healthz"), "path: an absolute HTTP path"),
    (lambda: HealthCheck(expect="2xx"), "expect: an HTTP status or range"),
    (lambda: HealthCheck(expect="300-200"), "low <= high"),
    (lambda: LbConfig(services=[Service("a", "10.0.0.1", 80), Service("b", "10.0.0.1", 80)]),
     "already has 10.0.0.1 port 80/tcp"),
    (lambda: LbConfig(services=[Service("a", "10.0.0.1", 80), Service("a", "10.0.0.2", 80)]),
     "service a: duplicate name"),
    (lambda: LbConfig(table_size=65536), "table_size: a prime"),
])
def test_bad_values(make, message):
    with pytest.raises(LbConfigError, match=message):
        make()


def _error(text):
    with pytest.raises(LbConfigError) as info:
        parse_config(text, "lb.toml")
    return str(info.value)


@pytest.mark.parametrize("text, line, message", [
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\nmode = "dsr"\n', 5, "mode: one of"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = "http"\n', 4, "port: a port number"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\n', 1, "port: missing"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\ncolour = 1\n', 5,
     "colour: unknown key"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\n\n[service.health]\nkind = "tcp"\n'
     'timeout = 5.0\n', 8, "timeout: at most interval"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\n\n[service.health]\nfall = 0\n',
     7, "health fall: an int"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\n\n[[service.backend]]\nname = "x"\n'
     'address = "10.0.0.2"\n\n[[service.backend]]\nname = "y"\naddress = "10.0.0.3"\n'
     'weight = 5000\n', 13, "backend 2 (y): weight"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\n\n[[service.backend]]\nname = "x"\n'
     'address = "10.0.0.2"\n\n[[service.backend]]\nname = "x"\naddress = "10.0.0.3"\n',
     10, "backend x: duplicate name"),
    ('[[service]]\nname = "a"\nvip = "10.0.0.1"\nport = 80\n[[service]]\nname = "b"\n'
     'vip = "10.0.0.1"\nport = 80\n', 8, "already has 10.0.0.1 port 80"),
    ('[lb]\ntable_size = 10\n', 2, "[lb] table_size: a prime"),
    ('[lb]\nmtu = 9000\n', 2, "mtu: unknown key"),
    ('[balancer]\nx = 1\n', 1, "unknown table or key 'balancer'"),
    ('[[service]]\nname = "a"\nvip = \n', 3, "TOML syntax"),
    ('service = 3\n', 1, "service must be an array of tables"),
])
def test_errors_name_file_and_line(text, line, message):
    err = _error(text)
    assert err.startswith("lb.toml:%d: " % line), err
    assert message in err, err


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[lb]\n# \xff\n")
    with pytest.raises(LbConfigError, match="not UTF-8"):
        load_config(path)


def _run(state, results, check):
    changes = []
    for i, ok in enumerate(results):
        state, changed = state.record(ok, "" if ok else "refused", check, float(i))
        if changed:
            changes.append((i, state.healthy))
    return state, changes


def test_health_fall_and_rise_thresholds():
    check = HealthCheck(fall=3, rise=2)
    # healthy: two failures are not enough, the third takes it down
    state, changes = _run(HealthState(), [True, False, False, True, False, False, False], check)
    assert changes == [(6, False)] and not state.healthy and state.failures == 3
    assert state.last_error == "refused" and state.since == 6.0 and state.checks == 7
    # down: one success is not enough, two in a row bring it back
    state, changes = _run(state, [True, False, True, True], check)
    assert changes == [(3, True)] and state.healthy and state.successes == 2


def test_http_status_parsing():
    check = HealthCheck("http", expect="200-299")
    assert _status(b"HTTP/1.0 200 OK\r\n", check) == (True, "")
    assert _status(b"HTTP/1.1 503 Service Unavailable\r\n", check) == (
        False, "HTTP status 503 (expected 200-299)")
    assert _status(b"HTTP/1.1 20", check) is None          # status line not complete
    assert _status(b"SSH-2.0-OpenSSH\r\n", check)[0] is False


def test_nat_tracking():
    cfg = parse_config('[lb]\nnat_tracking = "conntrack"\n')
    assert cfg.nat_tracking == "conntrack" and LbConfig().nat_tracking == "lru"
    assert parse_config(cfg.to_toml()) == cfg
    assert "nat_tracking" not in LbConfig().to_dict()["lb"]
    err = _error('[lb]\ntable_size = 251\nnat_tracking = "nf"\n')
    assert err.startswith("lb.toml:3: [lb] nat_tracking: \"lru\" or \"conntrack\" expected"), err
