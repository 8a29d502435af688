"""Health checks against real sockets in a lab: TCP connect, HTTP GET
(status ranges), timeouts, and the checker thread's fall/rise decisions,
all made from inside the checking namespace."""

import http.server
import socketserver
import threading
import time

import pytest


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, sock):
        socketserver.BaseServer.__init__(self, None, _Handler)
        self.socket = sock

    def server_bind(self):
        pass


@pytest.fixture
def http_server(lab):
    hosts = lab.two_hosts(v6=False)
    srv = _Server(hosts.server.create_server((str(hosts.server_ip), 8080)))
    t = threading.Thread(target=srv.serve_forever)
    t.start()
    try:
        yield hosts, srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_probe_kinds(lab, http_server):
    from pybpfnet.dataplanes._lb_health import probe
    from pybpfnet.dataplanes.lb import HealthCheck
    hosts, _ = http_server
    ip = hosts.server_ip
    c = hosts.client
    assert probe(ip, 8080, HealthCheck(), netns=c) == (True, "")
    assert probe(ip, 8080, HealthCheck("http", path="/ok"), netns=c) == (True, "")
    assert probe(ip, 8080, HealthCheck("http", path="/bad"), netns=c) == (
        False, "HTTP status 503 (expected 200-399)")
    assert probe(ip, 8080, HealthCheck("http", path="/bad", expect="500-599"),
                 netns=c) == (True, "")
    assert probe(ip, 8081, HealthCheck(), netns=c) == (False, "connect: ECONNREFUSED")
    # nobody at .9: ARP goes unanswered, the probe times out
    assert probe("10.0.0.9", 80, HealthCheck(timeout=0.2), netns=c) == (
        False, "timeout after 0.2s")
    assert probe(ip, 8080, HealthCheck("none"), netns=c) == (True, "")
    # the probe runs in ``netns``: from a namespace without routes the same
    # server is unreachable
    empty = lab.netns("empty")
    assert probe(ip, 8080, HealthCheck(), netns=empty) == (False, "connect: ENETUNREACH")


def test_checker_takes_targets_down_and_up(http_server):
    from pybpfnet.dataplanes._lb_health import HealthChecker, Target
    from pybpfnet.dataplanes.lb import HealthCheck
    hosts, srv = http_server
    changes = []
    results = []
    fast = dict(interval=0.05, timeout=0.05)
    checker = HealthChecker(lambda k, s: changes.append((k, s)), netns=hosts.client,
                            on_result=lambda k, s: results.append(k))
    checker.update({
        "ok": Target(hosts.server_ip, 8080, HealthCheck("http", path="/ok", fall=2, **fast)),
        "refused": Target(hosts.server_ip, 8081, HealthCheck(fall=2, **fast)),
        "silent": Target("10.0.0.9", 80, HealthCheck(fall=3, **fast)),
    })
    with checker:
        deadline = time.monotonic() + 10
        while len({k for k, _ in changes}) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        states = checker.states()
        assert states["ok"].healthy and states["ok"].failures == 0
        assert not states["refused"].healthy and states["refused"].last_error == \
            "connect: ECONNREFUSED"
        assert not states["silent"].healthy and "timeout" in states["silent"].last_error
        down = {k: s for k, s in changes}
        assert down["refused"].failures == 2 and down["silent"].failures == 3
        # the server goes away: "ok" falls after 2 failures
        srv.shutdown()
        srv.server_close()
        while "ok" not in {k for k, _ in changes} and time.monotonic() < deadline:
            time.sleep(0.02)
        ok_change = [s for k, s in changes if k == "ok"]
        assert ok_change and not ok_change[0].healthy and ok_change[0].failures == 2
        # a target removed is no longer checked
        checker.update({"refused": checker.targets()["refused"]})
        n = len(results)
        time.sleep(0.2)
        assert set(results[n + 2:]) <= {"refused"}
    assert not checker.running and not checker.errors


def test_checker_namespace_error_is_raised(lab):
    from pybpfnet.dataplanes._lb_health import HealthChecker
    checker = HealthChecker(netns="/nonexistent/netns")
    with pytest.raises(OSError):
        checker.start()
    checker.close()
