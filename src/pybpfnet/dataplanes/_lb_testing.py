"""A load-balancer lab for tests, docs and the demo: clients, an LB and
HTTP backends on one L2 segment, in namespaces of a :class:`~pybpfnet.netlab.Lab`.

::

    switch: br0 ---+--- client  eth0 10.1.0.10/24  (DSR clients; VIPs via 10.1.0.1)
                   +--- nclient eth0 10.3.0.10/24  (NAT clients; VIPs via 10.3.0.1)
                   +--- lb      eth0 10.1.0.1, 10.2.0.1, 10.3.0.1 (+ fd01::1, fd02::1)
                   +--- b1..bN  eth0 10.2.0.11.. /24, the VIPs on lo,
                                10.1.0.0/24 on-link (DSR replies go straight
                                back), 10.3.0.0/24 via 10.2.0.1 (NAT replies
                                return through the LB)

Each backend runs an HTTP server (a subprocess, see ``serve``) on port 80
that answers ``GET /`` with its name and the peer it saw, and ``GET
/healthz`` with 200; the lab stops them at teardown. Backends have the
decapsulation program (IPIP and GUE) on eth0 and ARP settings that keep
them from answering for the VIPs.
"""

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import attrs

_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17

__all__ = ["LbLab", "Reply", "KeepAlive", "fetch", "drive", "udp_exchange", "serve",
           "set_tx_checksum", "VIPS", "VIPS6", "UDP_PORT"]

#: One VIP per forwarding mode, so one lab serves every mode at once.
VIPS = {"dsr-ipip": "10.99.0.1", "dsr-gue": "10.99.0.2", "l2-dsr": "10.99.0.3",
        "nat": "10.99.0.4"}
VIPS6 = {"dsr-ipip": "fd99::1", "dsr-gue": "fd99::2", "l2-dsr": "fd99::3"}
LB_DSR = "10.1.0.1"
LB_BACKENDS = "10.2.0.1"
LB_NAT = "10.3.0.1"
#: The backends' UDP responder (see ``serve``).
UDP_PORT = 5300


@attrs.frozen
class Reply:
    """One HTTP exchange: the client's source port, the backend that
    answered (None on error), the error ("" if none)."""

    sport: int
    backend: str | None
    error: str = ""


class LbLab:
    """The topology above, built in ``lab`` (a netlab.Lab) with
    ``backends`` backend namespaces (named b1..bN). ``decap``: attach the
    Decap program on the backends. ``v6``: IPv6 addresses too (VIPs6 on
    lo, the LB at fd01::1 / fd02::1).

    Attributes: ``client``, ``nat_client``, ``lb``, ``switch`` (Namespaces),
    ``backends`` ({name: Namespace}), ``addresses`` ({name: IPv4Address}),
    ``addresses6``, ``lb_iface`` ("eth0" in ``lb``).
    """

    def __init__(self, lab, backends=3, *, decap=True, v6=False, serve=True,
                 xdp_mode="native"):
        self.lab = lab
        self.v6 = v6
        self.xdp_mode = xdp_mode
        self._closers = []
        self.servers = {}
        try:
            self._build(lab, backends, decap, v6, serve, xdp_mode)
        except BaseException:
            self.close()
            raise

    def _build(self, lab, backends, decap, v6, serve, xdp_mode):
        self.switch = lab.netns("switch")
        self.client = lab.netns("client")
        self.nat_client = lab.netns("nclient")
        self.lb = lab.netns("lb")
        self.backends = {}
        self.addresses = {}
        self.addresses6 = {}
        ports = []
        for i, ns in enumerate((self.client, self.nat_client, self.lb)):
            ports.append(lab.veth(ns, self.switch, name_a="eth0", name_b="p%d" % i).b)
        self.lb_iface = "eth0"
        self.client.add_address("eth0", "10.1.0.10/24")
        self.nat_client.add_address("eth0", "10.3.0.10/24")
        for a in ("10.1.0.1/24", "10.2.0.1/24", "10.3.0.1/24"):
            self.lb.add_address("eth0", a)
        for vip in VIPS.values():
            self.client.add_route(vip + "/32", via=LB_DSR)
            self.nat_client.add_route(vip + "/32", via=LB_NAT)
        # keep the kernel's ephemeral ports apart from those drive() picks
        for ns in (self.client, self.nat_client):
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 9999")
        if v6:
            self.client.add_address("eth0", "fd01::10/64")
            self.lb.add_address("eth0", "fd01::1/64")
            self.lb.add_address("eth0", "fd02::1/64")
            for vip in VIPS6.values():
                self.client.add_route(vip + "/128", via="fd01::1")
        for i in range(1, backends + 1):
            name = "b%d" % i
            ns = lab.netns(name)
            ports.append(lab.veth(ns, self.switch, name_a="eth0",
                                  name_b="p%d" % (i + 2)).b)
            addr = ipaddress.ip_address("10.2.0.%d" % (10 + i))
            ns.add_address("eth0", "%s/24" % addr)
            for vip in VIPS.values():
                ns.add_address("lo", vip + "/32")
            ns.add_route("10.1.0.0/24", dev="eth0")
            ns.add_route("10.3.0.0/24", via=LB_BACKENDS)
            for key, value in (("net.ipv4.conf.all.arp_ignore", 1),
                               ("net.ipv4.conf.all.arp_announce", 2),
                               ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.eth0.rp_filter", 0),
                               ("net.ipv4.conf.lo.rp_filter", 0)):
                ns.sysctl(key, value)
            if v6:
                a6 = ipaddress.ip_address("fd02::%d" % (10 + i))
                ns.add_address("eth0", "%s/64" % a6)
                for vip in VIPS6.values():
                    ns.add_address("lo", vip + "/128")
                ns.add_route("fd01::/64", dev="eth0")
                self.addresses6[name] = a6
            self.backends[name] = ns
            self.addresses[name] = addr
        self.bridge = lab.bridge(self.switch, "br0", ports=ports)
        self.ports = ports
        self._peer_xdp(ports[2])
        if xdp_mode == "native":
            self._no_tx_checksum_offload()
        if decap:
            self._decap()
        if serve:
            for name in self.backends:
                self.start_server(name)
            for name in self.backends:
                self.wait_server(name)

    def _no_tx_checksum_offload(self):
        # veth hands CHECKSUM_PARTIAL skbs over with the TCP/UDP checksum not
        # filled in; native XDP works on the raw frame, so what the LB sends
        # on with XDP_TX would carry that unfinished checksum and be dropped.
        # Hosts whose packets cross the LB compute checksums in software.
        for ns in [self.client, self.nat_client] + list(self.backends.values()):
            ns.run(set_tx_checksum, "eth0", False)

    def _peer_xdp(self, port):
        # XDP_TX on a veth hands the frame to the peer's NAPI queue, which
        # exists only while the peer has an XDP program (or GRO) on: without
        # one the kernel drops what the LB transmits (veth_xdp_xmit).
        if self.xdp_mode != "native":
            return
        from pybpfnet import load_bundled
        obj = load_bundled("xdp_count")
        self._closers.append(obj.close)
        with self.switch.enter():
            link = obj.programs["xdp_count"].attach_xdp(port.name, mode="native")
        self._closers.append(link.close)

    def _decap(self):
        from pybpfnet.dataplanes._lb_dataplane import Decap
        for name, ns in self.backends.items():
            d = Decap()
            self._closers.append(d.close)
            d.add_address(self.addresses[name])
            if name in self.addresses6:
                d.add_address(self.addresses6[name])
            with ns.enter():
                link = d.attach("eth0", mode=self.xdp_mode)
            self._closers.append(link.close)

    # -- backend servers

    def start_server(self, name):
        """(Re)start the HTTP server of backend ``name`` (a running one is
        killed first)."""
        ns = self.backends[name]
        if name in self.servers and self.servers[name].poll() is None:
            self.kill_server(name)
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        proc = ns.popen([sys.executable, "-c",
                         "from pybpfnet.dataplanes._lb_testing import serve; serve(%r)" % name],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, env=env)
        self.servers[name] = proc
        return proc

    def wait_server(self, name, timeout=10.0):
        """Wait until backend ``name``'s server accepts connections."""
        ns = self.backends[name]
        deadline = time.monotonic() + timeout
        while True:
            try:
                ns.create_connection((str(self.addresses[name]), 80), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.servers[name].poll() is not None:
                    raise RuntimeError("the HTTP server of backend %s did not start" % name)
                time.sleep(0.02)

    def kill_server(self, name):
        """Kill backend ``name``'s server (SIGKILL): its port refuses
        connections from then on."""
        proc = self.servers[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass                     # it has exited already; wait() reaps it
        proc.wait()

    def close(self):
        """Stop the backends' servers and detach the programs this helper
        attached (the Lab removes the rest). Idempotent."""
        for name, proc in list(self.servers.items()):
            if proc.poll() is None:
                self.kill_server(name)
        closers, self._closers = self._closers, []
        for c in reversed(closers):
            c()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def client_for(self, mode):
        """The client namespace that reaches the VIP of ``mode``."""
        return self.nat_client if mode == "nat" else self.client


def set_tx_checksum(iface, on):
    """Turn TX checksum offload of ``iface`` (in the calling thread's
    namespace) on or off: the ETHTOOL_STXCSUM ioctl, as ``ethtool -K iface
    tx on|off``. Needs CAP_NET_ADMIN."""
    import ctypes
    import fcntl
    import struct
    value = ctypes.create_string_buffer(struct.pack("=II", _ETHTOOL_STXCSUM, int(bool(on))))
    ifreq = struct.pack("16sP", iface.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifreq)


# ------------------------------------------------------------------ clients

def fetch(sock_factory, address, path="/", timeout=5.0, sport=0, source=None):
    """One HTTP/1.0 GET over a fresh TCP connection (from source port
    ``sport``, 0: the kernel's choice, and address ``source``, None: the
    kernel's): (sport, body)."""
    sock = sock_factory()
    try:
        sock.settimeout(timeout)
        if sport or source:
            any_ = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((str(source) if source else any_, sport))
        sock.connect(address)
        sport = sock.getsockname()[1]
        sock.sendall(b"GET %s HTTP/1.0\r\nHost: lb\r\n\r\n" % path.encode())
        chunks = []
        while True:
            data = sock.recv(4096)
            if not data:
                break
            chunks.append(data)
        raw = b"".join(chunks)
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
            raise OSError("bad response %r" % raw[:60])
        return sport, body.decode()
    finally:
        sock.close()


_next_port = {}
_port_lock = threading.Lock()


def _source_ports(ns, n):
    """``n`` source ports for ``ns`` that it has not used yet (10000 and up,
    wrapping after 65535)."""
    with _port_lock:
        start = _next_port.get(ns.name, 10000)
        ports = [10000 + (start - 10000 + i) % 55536 for i in range(n)]
        _next_port[ns.name] = ports[-1] + 1 if ports else start
    return ports


class KeepAlive:
    """A long-lived HTTP/1.1 connection from namespace ``ns`` to
    ``vip``:``port``: ``request()`` -> the name of the backend that
    answered. ``sport`` is its source port."""

    def __init__(self, ns, vip, port=80, timeout=5.0):
        fam = socket.AF_INET6 if ":" in str(vip) else socket.AF_INET
        self.sock = ns.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((str(vip), port))
        self.sport = self.sock.getsockname()[1]
        self._buf = b""

    def request(self, path="/"):
        """One GET on this connection; the backend's name. Raises OSError
        (ConnectionResetError, TimeoutError, ...) when the connection breaks."""
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: lb\r\n\r\n" % path.encode())
        while b"\r\n\r\n" not in self._buf:
            self._recv()
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self._buf) < length:
            self._recv()
        body, self._buf = self._buf[:length], self._buf[length:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError("bad response %r" % head[:40])
        return body.split()[0].decode()

    def _recv(self):
        data = self.sock.recv(4096)
        if not data:
            raise ConnectionAbortedError("the server closed the connection")
        self._buf += data

    def close(self):
        self.sock.close()


def udp_exchange(ns, vip, port=UDP_PORT, *, count=200, timeout=1.0, max_errors=10):
    """``count`` UDP request/replies from ``ns`` to ``vip``:``port``, each
    from a fresh source port; a list of Reply (backend: who answered).
    Stops early after ``max_errors`` failures."""
    fam = socket.AF_INET6 if ":" in str(vip) else socket.AF_INET
    out = []
    with ns.enter():
        for sport in _source_ports(ns, count):
            if sum(1 for r in out if r.error) >= max_errors:
                break
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.settimeout(timeout)
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
                s.connect((str(vip), port))
                s.send(b"ping %d" % sport)
                data = s.recv(2048).split()
                if data[1:] != [b"ping", b"%d" % sport]:
                    raise OSError("bad reply %r" % data)
                out.append(Reply(sport, data[0].decode()))
            except OSError as exc:
                out.append(Reply(sport, None, "%s: %s" % (type(exc).__name__, exc)))
            finally:
                s.close()
    return out


def drive(ns, vip, port=80, *, count=1000, threads=4, timeout=5.0, fresh_ports=True,
          source=None):
    """``count`` GETs from namespace ``ns`` to ``vip``:``port``, each over a
    fresh TCP connection, from ``threads`` threads; a list of Reply (one
    per request, errors included).

    ``fresh_ports``: every connection gets a source port this namespace has
    not used before (until ~55,000 connections), so each one is a new
    5-tuple. Left to the kernel, ports are picked at random and reused at
    once (the server closes first, so the client keeps no TIME_WAIT): a
    reused 5-tuple would follow the LB's flow entry of the old connection.
    ``source``: the client address to use (one of ``ns``'s).
    """
    fam = socket.AF_INET6 if ":" in str(vip) else socket.AF_INET
    address = (str(vip), port)
    out = []
    lock = threading.Lock()
    failure = []
    per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    ports = _source_ports(ns, count) if fresh_ports else [0] * count
    chunks, at = [], 0
    for n in per:
        chunks.append(ports[at:at + n])
        at += n

    def worker(mine_ports):
        try:
            with ns.enter():
                mine = []
                for sport in mine_ports:
                    try:
                        sport, body = fetch(lambda: socket.socket(fam, socket.SOCK_STREAM),
                                            address, timeout=timeout, sport=sport,
                                            source=source)
                        mine.append(Reply(sport, body.split()[0]))
                    except OSError as exc:
                        mine.append(Reply(sport, None, "%s: %s" % (type(exc).__name__, exc)))
            with lock:
                out.extend(mine)
        except BaseException as exc:        # setns failed: report, do not hang
            failure.append(exc)

    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks if c]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if failure:
        raise failure[0]
    return out


# ------------------------------------------------------------------ server

def serve(name, port=80, udp_port=UDP_PORT):
    """Run a backend's HTTP server (blocks): ``GET /`` answers
    "<name> <peer ip> <peer port>"; ``/healthz`` answers "ok". HTTP/1.1
    keep-alive works (long-lived connections), HTTP/1.0 closes. UDP
    sockets on ``udp_port`` answer every datagram with "<name> <payload>"
    from the address it was sent to."""
    import http.server

    def udp_echo():
        # Reply from the address the datagram was sent to (the VIP in the
        # DSR modes), not from the one the route would pick: IP_PKTINFO.
        import selectors
        import struct
        ip_pktinfo = getattr(socket, "IP_PKTINFO", 8)
        v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        v4.setsockopt(socket.IPPROTO_IP, ip_pktinfo, 1)
        v4.bind(("0.0.0.0", udp_port))
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        v6.bind(("::", udp_port))
        sel = selectors.DefaultSelector()
        sel.register(v4, selectors.EVENT_READ)
        sel.register(v6, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                u = key.fileobj
                data, anc, _, peer = u.recvmsg(2048, 256)
                reply = name.encode() + b" " + data
                cmsg = []
                for level, kind, value in anc:
                    if u is v4 and level == socket.IPPROTO_IP and kind == ip_pktinfo:
                        dst = value[8:12]
                        cmsg = [(level, kind, struct.pack("=i4s4s", 0, dst, bytes(4)))]
                    elif u is v6 and kind == socket.IPV6_PKTINFO:
                        cmsg = [(level, kind, value[:16] + bytes(4))]
                u.sendmsg([reply], cmsg, 0, peer)

    threading.Thread(target=udp_echo, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/healthz":
                body = b"ok\n"
            else:
                body = ("%s %s %d\n" % (name, self.client_address[0],
                                        self.client_address[1])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            if self.request_version == "HTTP/1.0":
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True
        request_queue_size = 256

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    with Server(("::", port), Handler) as srv:
        srv.serve_forever()
