"""A Maglev L4 load balancer: the control plane.

::

    from pybpfnet.dataplanes.lb import Backend, HealthCheck, LoadBalancer, Service

    web = Service("web", vip="10.99.0.1", port=80, mode="dsr-ipip",
                  backends=[Backend("b1", "10.2.0.11"), Backend("b2", "10.2.0.12")],
                  health=HealthCheck("http", path="/healthz", interval=1, fall=3))
    with LoadBalancer("eth0", [web], netns=lb_ns) as lb:
        lb.drain("web", "b2")            # weight 0: no new flows, established ones go on
        lb.set_weight("web", "b2", 2)
        print(lb.status().table())       # services, backends, health, shares, traffic

The data plane (XDP, csrc/bpf/lb, :mod:`._lb_dataplane`) keeps one Maglev
table per service and a flow table; this class decides what is in the
tables. Every change -- a service, a backend, a weight, a drain, a health
check taking a backend out or putting it back -- rebuilds the service's
Maglev table (:mod:`.maglev`) and swaps it in with one map update (a
map-in-map slot), so a packet sees the old table or the new one, never a
half-written one. Established flows keep their backend through table
changes (the flow table); only a backend that fails its health checks, or
is removed, loses its flows.

Health checks (:mod:`._lb_health`) run in a thread inside the LB's network
namespace. See docs/lb.md.
"""

import collections
import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import warnings

import attrs

from pybpfnet import _netlink
from pybpfnet.dataplanes import _pins
from pybpfnet.dataplanes._lb_config import (DEFAULT_TABLE_SIZE, MODES, Backend, HealthCheck,
                                            LbConfig, LbConfigError, Service, load_config,
                                            parse_toml)
from pybpfnet.dataplanes._lb_health import HealthChecker, HealthState, Target
from pybpfnet.dataplanes.maglev import Maglev

__all__ = ["LoadBalancer", "Service", "Backend", "HealthCheck", "LbConfig", "LbConfigError",
           "LbStatus", "ServiceStatus", "BackendStatus", "LbEvent", "load_config",
           "parse_config", "MODES"]

#: Control-plane mode names -> data-plane mode names (``_lb_abi.Mode.parse``).
_DP_MODE = {"dsr-ipip": "ipip", "dsr-gue": "gue", "l2-dsr": "l2", "nat": "nat"}
_STATE_CHUNK = 4096
_STATE_CHUNKS = 256
_STATE_MAP = "lb_ctl_state"


def parse_config(text, source="<config>"):
    """An LbConfig from TOML text (see docs/lb.md).

    Pure Python (no kernel, no capability). Raises LbConfigError naming
    ``source``, the line and the reason; nothing of a bad text is used."""
    return parse_toml(text, source)


@attrs.frozen
class BackendStatus:
    """One backend of a service as the LB sees it.

    ``state``: "up" (in the table), "drained" (weight 0: no new flows),
    "down" (failing health checks; out of the table). ``slots``/``share``:
    its Maglev table entries and their fraction. ``packets``/``bytes``/
    ``new_flows``: what the data plane sent it; ``traffic_share`` its
    fraction of the service's packets."""

    name: str
    address: object
    port: int | None
    weight: int
    state: str
    healthy: bool
    health: str
    slots: int
    share: float
    packets: int
    bytes: int
    new_flows: int
    traffic_share: float
    id: int

    def to_dict(self):
        d = attrs.asdict(self)
        d["address"] = str(self.address)
        return d


@attrs.frozen
class ServiceStatus:
    """One service: its definition and the status of each backend."""

    name: str
    vip: object
    port: int
    protocol: str
    mode: str
    table_size: int
    packets: int
    bytes: int
    new_flows: int
    health: str
    backends: tuple
    affinity: str = "none"

    def to_dict(self):
        d = {k: getattr(self, k) for k in ("name", "port", "protocol", "mode", "affinity",
                                            "table_size", "packets", "bytes", "new_flows",
                                            "health")}
        d["vip"] = str(self.vip)
        d["backends"] = [b.to_dict() for b in self.backends]
        return d


@attrs.frozen
class LbStatus:
    """Every service (``services``, in configuration order), where the LB is
    attached, the data plane's global counters (``stats``, a dict), whether
    this handle runs the health checks and how NAT flows are tracked."""

    services: tuple
    interfaces: tuple
    stats: dict
    health_checks: bool
    nat_tracking: str = "lru"

    def service(self, name):
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError("no service %r" % (name,))

    def to_dict(self):
        return {"interfaces": list(self.interfaces), "health_checks": self.health_checks,
                "nat_tracking": self.nat_tracking,
                "stats": self.stats, "services": [s.to_dict() for s in self.services]}

    def table(self):
        """The status as a text table (what ``pybpfnet lb status`` prints)."""
        lines = []
        for s in self.services:
            lines.append("%s  %s:%d/%s  %s%s  table %d  packets %d  new flows %d  health %s"
                         % (s.name, s.vip, s.port, s.protocol, s.mode,
                            "  affinity source" if s.affinity == "source" else "",
                            s.table_size, s.packets, s.new_flows, s.health))
            rows = [("backend", "address", "weight", "state", "slots", "share", "packets",
                     "traffic", "health")]
            for b in s.backends:
                addr = str(b.address) + (":%d" % b.port if b.port else "")
                rows.append((b.name, addr, str(b.weight), b.state, str(b.slots),
                             "%.1f%%" % (100 * b.share), str(b.packets),
                             "%.1f%%" % (100 * b.traffic_share), b.health))
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                lines.append("  " + "  ".join(
                    c.rjust(w) if i in (2, 4, 5, 6, 7) else c.ljust(w)
                    for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if not self.services:
            lines.append("no services")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


@attrs.frozen
class LbEvent:
    """Something the control plane did: ``what`` is "up", "down" (health),
    "drain", "weight", "add", "remove" (or "sweep": a failed conntrack
    sweep, service "*"); ``disruption`` the fraction of the
    service's table entries that changed backend; ``health`` the
    HealthState that made a health change (None otherwise)."""

    time: float
    service: str
    backend: str | None
    what: str
    detail: str
    disruption: float
    health: HealthState | None = None

    def __str__(self):
        return "%s %s%s %s%s (%.1f%% of the table moved)" % (
            time.strftime("%H:%M:%S", time.localtime(self.time)), self.service,
            "/" + self.backend if self.backend else "", self.what,
            ": " + self.detail if self.detail else "", 100 * self.disruption)


class _Be:
    """A backend's mutable control-plane state."""

    __slots__ = ("backend", "id", "healthy", "health", "mac", "note")

    def __init__(self, backend, id, mac):
        self.backend = backend
        self.id = id
        self.healthy = True
        self.health = None      # the last HealthState (health checks in this process)
        self.mac = mac
        self.note = ""          # why it is (un)healthy


class _Svc:
    __slots__ = ("service", "key", "id", "backends", "maglev")

    def __init__(self, service, key):
        self.service = service
        self.key = key
        self.id = None
        self.backends = {}
        self.maglev = None


def _dp_module():
    from pybpfnet.dataplanes import _lb_dataplane
    return _lb_dataplane


class LoadBalancer:
    """A Maglev L4 load balancer on one interface (XDP).

    ``iface``: where clients' packets for the VIPs arrive (None: attach
    later with :meth:`attach`). ``services``: Service values (or an
    :class:`LbConfig`). ``netns``: the LB's network namespace (a netlab
    Namespace, a name in /run/netns, a path or an fd; None: the caller's):
    the interface, the routes and neighbours towards the backends and the
    health checks are all looked up or run there. ``table_size``: the
    default Maglev table size (a prime). ``health_checks``: run the
    services' health checks (a thread; False: every backend is taken as
    healthy unless :meth:`set_health` says otherwise). ``src4``/``src6``:
    outer source addresses for IPIP/GUE (default: the route's source
    address towards the first backend of each family). ``xdp_mode``:
    "native", "generic" or "auto". ``max_flows``: size of the flow table.
    ``nat_tracking``: how NAT services track flows, "lru" (a flow table)
    or "conntrack" (the connection tracker: TCP states, closed connections
    leave; expired ones are swept every ``sweep_interval`` seconds while
    the health checks run); None: the config's (default "lru").
    ``on_event``: called with each :class:`LbEvent` (from the health
    thread, too; under the LB's lock, so it must not block on another
    thread that calls into the LB).

    Needs CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN with ``netns``), Linux >=
    5.10 (map-in-map tables of different sizes). Raises LbConfigError for
    a bad configuration, OSError when a backend's MAC cannot be resolved,
    BpfError/VerifierError from the kernel; nothing stays loaded when it
    raises. A context manager: closing stops the health checks, detaches
    and unloads (unless pinned).
    """

    def __init__(self, iface=None, services=(), *, netns=None, table_size=None,
                 health_checks=True, src4=None, src6=None, mtu=1500, gue_port=6080,
                 xdp_mode="native", max_flows=65536, max_services=256, max_backends=4096,
                 nat_tracking=None, sweep_interval=5.0, on_event=None, resolve_timeout=1.0):
        config = services if isinstance(services, LbConfig) else LbConfig(services=services)
        if table_size is None:
            table_size = config.table_size
        if nat_tracking is None:
            nat_tracking = config.nat_tracking
        config = attrs.evolve(config, table_size=table_size, nat_tracking=nat_tracking)
        if not isinstance(sweep_interval, (int, float)) or not sweep_interval > 0:
            raise ValueError("sweep_interval: seconds > 0 expected, got %r" % (sweep_interval,))
        self._init_state(netns, on_event)
        self.sweep_interval = sweep_interval
        self.xdp_mode = xdp_mode
        self.resolve_timeout = resolve_timeout
        self._table_size = table_size
        self._src = {4: src4, 6: src6}
        self._dp_config = dict(mtu=mtu, gue_port=gue_port)
        dpmod = _dp_module()
        try:
            self._dp = self._stack.enter_context(dpmod.LbDataplane(
                max_services=max_services, max_backends=max_backends, max_flows=max_flows,
                nat_tracking=nat_tracking))
            self._max_backends = max_backends
            self._push_dp_config()
            with self._lock:
                for s in config.services:
                    self._add_service(s, self._resolve_new(s))
            if iface is None:
                iface = config.interface
            if iface is not None:
                self.attach(iface)
            if health_checks:
                self.start_health_checks()
        except BaseException:
            self.close()
            raise

    def _init_state(self, netns, on_event):
        self.netns = netns
        self._lock = threading.RLock()
        self._stack = contextlib.ExitStack()
        self._svcs = {}               # name -> _Svc, in insertion order
        self._links = []
        self._iface_names = []
        self._checker = None
        self._sweeper = None
        self.sweep_interval = 5.0
        self._events = collections.deque(maxlen=200)
        self.on_event = on_event
        self._dp = None
        self._state_map = None
        self.pin_path = None
        self._sync_gen = 0
        self._max_backends = 4096
        self._table_size = DEFAULT_TABLE_SIZE
        self._src = {4: None, 6: None}
        self._dp_config = dict(mtu=1500, gue_port=6080)
        self.xdp_mode = "native"
        self.resolve_timeout = 1.0

    @classmethod
    def from_config(cls, config, iface=None, **kwargs):
        """A LoadBalancer from an LbConfig, TOML file path or ``Path``;
        ``iface`` overrides the config's interface, ``kwargs`` go to the
        constructor. Kernel, capabilities and errors as for the class, plus
        OSError when the file cannot be read."""
        if not isinstance(config, LbConfig):
            config = load_config(config)
        return cls(iface, config, **kwargs)

    # -- configuration ----------------------------------------------------------

    @property
    def config(self):
        """The current configuration (LbConfig; weights included)."""
        with self._lock:
            return LbConfig(services=[self._current(s) for s in self._svcs.values()],
                            interface=self._iface_names[0] if self._iface_names else None,
                            table_size=self._table_size, nat_tracking=self.nat_tracking)

    @property
    def nat_tracking(self):
        """How NAT flows are tracked: "lru" or "conntrack" (see the class)."""
        return self._dp.nat_tracking

    @property
    def services(self):
        """{name: Service} as configured now."""
        with self._lock:
            return {n: self._current(s) for n, s in self._svcs.items()}

    def _current(self, svc):
        return attrs.evolve(svc.service, backends=[b.backend for b in svc.backends.values()])

    def add_service(self, service):
        """Add a service (or replace the one of the same name: backends that
        stay keep their flows).

        Linux >= 5.10, CAP_BPF (+ CAP_SYS_ADMIN with ``netns``). Raises
        TypeError for a non-Service, LbConfigError for a clash with another
        service's (vip, port, protocol), OSError when a backend's MAC cannot
        be resolved; then nothing has changed.
        """
        if not isinstance(service, Service):
            raise TypeError("add_service: a Service expected, got %s" % type(service).__name__)
        with self._mutation():
            self._check_clash(service)
            macs = self._resolve_new(service)        # may raise: nothing changed yet
            if service.name in self._svcs:
                self._replace_service(service, macs)
            else:
                self._add_service(service, macs)
            self._sync_checks()

    def remove_service(self, name):
        """Remove a service: its VIP:port stops being balanced, its flows and
        backends go. Linux >= 5.10, CAP_BPF. Raises KeyError naming the
        services there are if there is no such service."""
        with self._mutation():
            self._drop_service(self._svc(name))
            self._sync_checks()

    def add_backend(self, service, backend):
        """Add a backend to a service (or replace the one of the same name).
        Its share of new flows starts at once; established flows stay.

        Linux >= 5.10, CAP_BPF (+ CAP_SYS_ADMIN with ``netns``). Raises
        TypeError for a non-Backend, KeyError for an unknown service,
        LbConfigError when the backend does not fit the service (family,
        port, duplicate) or the data plane is full, OSError when its MAC
        cannot be resolved; then the tables and this object are unchanged.
        """
        if not isinstance(backend, Backend):
            raise TypeError("add_backend: a Backend expected, got %s" % type(backend).__name__)
        with self._mutation():
            svc = self._svc(service)
            attrs.evolve(svc.service, backends=[b.backend for b in svc.backends.values()
                                                if b.backend.name != backend.name]
                         + [backend])          # validates the combination
            old = svc.backends.get(backend.name)
            moved = old is not None and (old.backend.address, old.backend.port) != (
                backend.address, backend.port)
            mac = self._resolve(backend, svc.service) if old is None or moved else None
            retired = []
            with self._undo_on_error(svc):
                if old is not None and not moved:
                    old.backend = backend
                else:
                    if old is not None:
                        retired.append(svc.backends.pop(backend.name))
                    self._put_backend(svc, backend, mac, exclude={b.id for b in retired})
                self._rebuild(svc, backend.name, "add" if old is None else "weight",
                              "weight %d" % backend.weight)
            self._retire(retired)
            self._sync_checks()

    def remove_backend(self, service, backend):
        """Remove a backend: it leaves the table, and its established flows
        are forgotten (they move to other backends). Linux >= 5.10,
        CAP_BPF. Raises KeyError naming the service's backends if unknown."""
        with self._mutation():
            svc = self._svc(service)
            be = self._be(svc, backend)
            with self._undo_on_error(svc):
                del svc.backends[backend]
                self._rebuild(svc, backend, "remove", "")
            self._retire([be])
            self._sync_checks()

    def set_weight(self, service, backend, weight):
        """Change a backend's weight (0..1000; 0 drains it). Linux >= 5.10,
        CAP_BPF. Raises KeyError for an unknown service or backend,
        LbConfigError naming the range for a bad weight (nothing changes)."""
        with self._mutation():
            svc = self._svc(service)
            be = self._be(svc, backend)
            new = attrs.evolve(be.backend, weight=weight)     # validates
            with self._undo_on_error(svc):
                be.backend = new
                self._rebuild(svc, backend, "drain" if weight == 0 else "weight",
                              "weight %d" % weight)

    def drain(self, service, backend):
        """Drain a backend (weight 0): it gets no new flows, while its
        established flows go on until they end. ``set_weight`` undoes it.
        Linux >= 5.10, CAP_BPF. Raises KeyError for an unknown service or
        backend."""
        self.set_weight(service, backend, 0)

    def apply(self, config):
        """Make the LB run ``config`` (an LbConfig, a TOML path, or Service
        values): services and backends that did not change keep their ids,
        flows and health state; the others are added, changed or removed
        (weights, drains included: the LB ends up as the config says).

        Linux >= 5.10, CAP_BPF (+ CAP_SYS_ADMIN with ``netns``). A bad
        config raises LbConfigError (a file: naming its line), a backend
        whose MAC cannot be resolved OSError, ``nat_tracking`` other than
        the loaded one LbConfigError: in each case before anything changes.
        """
        if not isinstance(config, LbConfig):
            if isinstance(config, (str, os.PathLike)):
                config = load_config(config)
            else:
                config = LbConfig(services=config, table_size=self._table_size,
                                  nat_tracking=self.nat_tracking)
        if config.nat_tracking != self.nat_tracking:
            raise LbConfigError("nat_tracking: %r expected (the loaded data plane's; it "
                                "changes only by loading the LB again), got %r"
                                % (self.nat_tracking, config.nat_tracking))
        with self._mutation():
            # every MAC first: an unreachable backend stops the apply here
            macs = {s.name: self._resolve_new(s) for s in config.services}
            # services that go, or move to another VIP:port, leave first, so
            # no (vip, port, protocol) is held twice on the way
            wanted = {s.name: s.key for s in config.services}
            for name in [n for n, svc in self._svcs.items()
                         if wanted.get(n) != svc.service.key]:
                self._drop_service(self._svcs[name])
            self._table_size = config.table_size
            for s in config.services:
                if s.name in self._svcs:
                    self._replace_service(s, macs[s.name])
                else:
                    self._add_service(s, macs[s.name])
            self._sync_checks()

    def set_health(self, service, backend, healthy, reason="set by hand"):
        """Mark a backend healthy or not (what a failing health check does:
        an unhealthy backend leaves the table and its flows move). Linux >=
        5.10, CAP_BPF. Raises KeyError for an unknown service or backend."""
        with self._mutation():
            svc = self._svc(service)
            self._set_health(svc, self._be(svc, backend), healthy, reason)

    # -- internals --------------------------------------------------------------

    def _svc(self, name):
        try:
            return self._svcs[name]
        except KeyError:
            raise KeyError("no service %r (services: %s)" % (
                name, ", ".join(self._svcs) or "none")) from None

    def _be(self, svc, name):
        try:
            return svc.backends[name]
        except KeyError:
            raise KeyError("service %s has no backend %r (backends: %s)" % (
                svc.service.name, name, ", ".join(svc.backends) or "none")) from None

    def _check_clash(self, service):
        for other in self._svcs.values():
            if other.service.name != service.name and other.service.key == service.key:
                raise LbConfigError("service %s: service %s already has %s port %d/%s" % (
                    service.name, other.service.name, service.vip, service.port,
                    service.protocol))

    def _push_dp_config(self):
        self._dp.set_config(src4=self._src[4], src6=self._src[6], **self._dp_config)

    def _add_service(self, service, macs):
        """Put a new service, its backends (``macs``: {name: mac}, every
        one resolved) and its table; on failure take all of it out again."""
        self._check_clash(service)
        svc = _Svc(service, (service.vip, service.port, service.protocol))
        svc.id = self._dp.put_service(svc.key, mode=_DP_MODE[service.mode],
                                      source_affinity=service.affinity == "source")
        self._svcs[service.name] = svc          # before _put_backend: _alloc_id looks here
        try:
            for b in service.backends:
                self._put_backend(svc, b, macs[b.name])
            self._rebuild(svc, None, "add", "service added")
        except BaseException:
            del self._svcs[service.name]
            self._dp.delete_service(svc.key)
            self._retire(svc.backends.values())
            raise

    def _drop_service(self, svc):
        del self._svcs[svc.service.name]
        self._dp.delete_service(svc.key)
        self._retire(svc.backends.values())
        self._event(svc.service.name, None, "remove", "service removed", 1.0)

    def _replace_service(self, service, macs):
        """Change a service in place (same name; ``macs``: the resolved MACs
        of its new or moved backends)."""
        svc = self._svcs[service.name]
        if svc.service.key != service.key:
            # another VIP:port: a new service under the old name
            self._drop_service(svc)
            self._add_service(service, macs)
            return
        self._check_clash(service)
        retired = [svc.backends[n] for n in list(svc.backends)
                   if n not in {b.name for b in service.backends} or n in macs]
        with self._undo_on_error(svc):
            old = svc.service
            svc.service = service
            if (old.mode, old.affinity) != (service.mode, service.affinity):
                self._dp.put_service(svc.key, mode=_DP_MODE[service.mode],
                                     source_affinity=service.affinity == "source")
            for be in retired:
                del svc.backends[be.backend.name]
            for b in service.backends:
                if b.name in macs:
                    self._put_backend(svc, b, macs[b.name],
                                      exclude={be.id for be in retired})
                else:
                    svc.backends[b.name].backend = b
            # keep configuration order
            svc.backends = {b.name: svc.backends[b.name] for b in service.backends}
            self._rebuild(svc, None, "weight", "configuration applied")
        self._retire(retired)

    @contextlib.contextmanager
    def _undo_on_error(self, svc):
        """Run a change of ``svc``; if it raises, restore its Python state,
        re-install its previous table and delete the backends the change
        put, so that a failed change leaves the LB as it was."""
        service, maglev = svc.service, svc.maglev
        backends = dict(svc.backends)
        saved = {n: (be.backend, be.healthy, be.note) for n, be in backends.items()}
        try:
            yield
        except BaseException as exc:
            added = {be.id for be in svc.backends.values()} - {be.id for be in backends.values()}
            svc.service, svc.maglev, svc.backends = service, maglev, backends
            for n, (b, healthy, note) in saved.items():
                be = backends[n]
                be.backend, be.healthy, be.note = b, healthy, note
            try:
                self._dp.put_service(svc.key, mode=_DP_MODE[service.mode],
                                     source_affinity=service.affinity == "source")
                if maglev is not None:
                    self._dp.install_table(svc.key, self._table_ids(svc, maglev))
                for i in added:
                    self._dp.delete_backend(i)
            except Exception as undo_exc:
                exc.add_note("undoing the change of service %s failed too: %r"
                             % (service.name, undo_exc))
            raise

    def _resolve_new(self, service):
        """{name: mac} of the backends of ``service`` that the data plane
        does not hold yet (new, moved, or all of them for a new service or
        one that moves to another VIP:port)."""
        svc = self._svcs.get(service.name)
        if svc is not None and svc.service.key != service.key:
            svc = None
        out = {}
        for b in service.backends:
            cur = svc.backends.get(b.name) if svc is not None else None
            if cur is None or (cur.backend.address, cur.backend.port) != (b.address, b.port):
                out[b.name] = self._resolve(b, service)
        return out

    def _resolve(self, backend, service):
        # every mode rewrites the destination MAC: the backend's (on-link) or
        # the gateway's towards it
        mac, route = _resolve_mac(backend.address, self.netns, self.resolve_timeout)
        v = backend.address.version
        if service.mode in ("dsr-ipip", "dsr-gue") and self._src[v] is None:
            if route.source is None:
                raise OSError(errno.EADDRNOTAVAIL, "no source address towards backend %s "
                              "(%s) for %s encapsulation; pass src%d=" % (
                                  backend.name, backend.address, service.mode, v))
            self._src[v] = route.source
            self._push_dp_config()
        return mac

    def _alloc_id(self, exclude=()):
        used = {be.id for s in self._svcs.values() for be in s.backends.values()}
        used.update(exclude)
        for i in range(self._max_backends):
            if i not in used:
                return i
        raise LbConfigError("too many backends (the data plane holds %d)" % self._max_backends)

    def _put_backend(self, svc, backend, mac, exclude=()):
        be = _Be(backend, self._alloc_id(exclude), mac)
        self._dp.put_backend(be.id, backend.address, mac=mac,
                             port=(backend.port or 0) if svc.service.mode == "nat" else 0)
        svc.backends[backend.name] = be
        return be

    def _retire(self, backends):
        """Delete backends that no table names any more, and their flows."""
        for be in list(backends):
            self._dp.delete_backend(be.id)
            self._dp.purge_backend(be.id)

    def _weights(self, svc):
        return {name: (be.backend.weight if be.healthy else 0)
                for name, be in svc.backends.items()}

    def _rebuild(self, svc, backend, what, detail, health=None):
        """Compute the service's Maglev table and swap it in."""
        size = svc.service.table_size or self._table_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # small tables in tests
            m = Maglev(self._weights(svc), size)
        self._dp.install_table(svc.key, self._table_ids(svc, m))
        old, svc.maglev = svc.maglev, m
        disruption = 1.0 if old is None or old.size != m.size else old.disruption(m)
        self._event(svc.service.name, backend, what, detail, disruption, health)

    @staticmethod
    def _table_ids(svc, maglev):
        """The Maglev table as data-plane backend ids (-1: empty slot)."""
        ids = [svc.backends[n].id for n in maglev.backends] + [-1]
        return [ids[i] for i in maglev.table]      # index -1 -> the last entry, -1

    def _set_health(self, svc, be, healthy, reason, state=None):
        if be.healthy == healthy:
            return
        with self._undo_on_error(svc):
            be.healthy = healthy
            be.note = reason
            self._rebuild(svc, be.backend.name, "up" if healthy else "down", reason, state)
        if not healthy:
            # its flows re-hash through the new table (a dead server would
            # answer them with resets anyway)
            self._dp.purge_backend(be.id)

    def _event(self, service, backend, what, detail, disruption, health=None):
        ev = LbEvent(time.time(), service, backend, what, detail, disruption, health)
        self._events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def events(self):
        """The last (up to 200) LbEvents, oldest first."""
        with self._lock:
            return list(self._events)

    def maglev(self, service):
        """The Maglev table the service runs now."""
        with self._lock:
            return self._svc(service).maglev

    def backend_id(self, service, backend):
        """The data plane's id of a backend (what ``flows()`` report)."""
        with self._lock:
            return self._be(self._svc(service), backend).id

    def service_key(self, service):
        """(vip, port, protocol) of a service as the data plane knows it."""
        with self._lock:
            return self._svc(service).key

    @property
    def dataplane(self):
        """The low-level :class:`~pybpfnet.dataplanes._lb_dataplane.LbDataplane`."""
        return self._dp

    # -- health checks ----------------------------------------------------------

    def start_health_checks(self):
        """Start checking every backend per its service's HealthCheck (a
        thread in the LB's namespace; with ``nat_tracking="conntrack"`` a
        second one sweeps expired connections). Idempotent.

        Needs CAP_SYS_ADMIN with ``netns``. Raises the OSError of entering
        ``netns``; then no thread runs."""
        with self._lock:
            if self._checker is None:
                checker = HealthChecker(self._on_health, netns=self.netns)
                try:
                    checker.start()
                except BaseException:
                    checker.close()
                    raise
                self._checker = checker
                self._sync_checks()
            if self._sweeper is None and self.nat_tracking == "conntrack":
                self._sweeper = _Sweeper(self, self.sweep_interval)
        return self

    def stop_health_checks(self):
        """Stop the health checks (backends keep their last health) and
        the conntrack sweeper. Idempotent."""
        with self._lock:
            checker, self._checker = self._checker, None
            sweeper, self._sweeper = self._sweeper, None
        # outside the lock: the threads take it to report
        if sweeper is not None:
            sweeper.close()
        if checker is not None:
            checker.close()

    @property
    def health_checks(self):
        """True while this handle runs the health checks."""
        return self._checker is not None

    def sweep(self):
        """Delete expired tracked NAT connections now (``nat_tracking=
        "conntrack"``; what the sweeper thread does every
        ``sweep_interval``); a conntrack SweepResult. Linux >= 5.10,
        CAP_BPF. Raises ValueError with ``nat_tracking="lru"``."""
        with self._lock:
            return self._dp.conntrack.sweep()

    def _sync_checks(self):
        if self._checker is None:
            return
        targets = {}
        for name, svc in self._svcs.items():
            hc = svc.service.health
            if hc.kind == "none":
                continue
            for bname, be in svc.backends.items():
                b = be.backend
                port = hc.port or (b.port if svc.service.mode == "nat" and b.port else
                                   svc.service.port)
                targets[(name, bname)] = Target(b.address, port, hc)
        self._checker.update(targets)

    def _on_health(self, key, state):
        """A checked backend went down or came back (the checker thread)."""
        with self._mutation():
            checker = self._checker
            current = checker.states().get(key) if checker is not None else None
            if current is None or current.healthy != state.healthy:
                # checks stopped, or the target was replaced (a new address)
                # while this verdict was on its way: it is about the old one
                return
            svc = self._svcs.get(key[0])
            be = svc.backends.get(key[1]) if svc is not None else None
            if be is None:
                return
            be.health = state
            self._set_health(svc, be, state.healthy,
                             "%d checks failed: %s" % (state.failures, state.last_error)
                             if not state.healthy else
                             "%d checks passed" % state.successes, state)

    def health(self):
        """{(service, backend): HealthState} of the checked backends ({}
        when this handle runs no health checks)."""
        checker = self._checker          # stop_health_checks may clear it meanwhile
        return {} if checker is None else checker.states()

    # -- status -----------------------------------------------------------------

    def status(self):
        """An LbStatus: services, backends, health, Maglev shares and the
        traffic each backend got (read from the kernel's counters now).
        Linux >= 5.10, CAP_BPF. Raises BpfError if a map cannot be read."""
        with self._lock:
            self._reload()
            hstates = self.health()
            services = []
            for name, svc in self._svcs.items():
                sc = self._dp.service_counters(svc.key)
                balance = svc.maglev.balance() if svc.maglev is not None else {}
                size = svc.maglev.size if svc.maglev is not None else 0
                rows = []
                counters = {n: self._dp.backend_counters(be.id)
                            for n, be in svc.backends.items()}
                total = sum(c.packets for c in counters.values())
                for bname, be in svc.backends.items():
                    b = be.backend
                    c = counters[bname]
                    if not be.healthy:
                        state = "down"
                    elif b.weight == 0:
                        state = "drained"
                    else:
                        state = "up"
                    hs = hstates.get((name, bname))
                    if svc.service.health.kind == "none":
                        hdesc = "not checked"
                    elif hs is None:
                        hdesc = "ok" if be.healthy else "failing"
                        if be.note:
                            hdesc += ": " + be.note
                        elif self._checker is None:
                            hdesc += " (not checked: `pybpfnet lb run`)"
                    elif not hs.checks:
                        hdesc = "ok (not checked yet)"
                    elif hs.healthy:
                        hdesc = "ok (%d in a row)" % hs.successes if hs.successes else \
                            "ok (%d failed of fall %d): %s" % (
                                hs.failures, svc.service.health.fall, hs.last_error)
                    else:
                        hdesc = ("failing (%d in a row): %s" % (hs.failures, hs.last_error)
                                 if hs.failures else "failing (%d passed of rise %d)" % (
                                     hs.successes, svc.service.health.rise))
                    slots = balance.get(bname, 0)
                    rows.append(BackendStatus(
                        name=bname, address=b.address, port=b.port, weight=b.weight,
                        state=state, healthy=be.healthy, health=hdesc, slots=slots,
                        share=slots / size if size else 0.0, packets=c.packets,
                        bytes=c.bytes, new_flows=c.new_flows,
                        traffic_share=c.packets / total if total else 0.0, id=be.id))
                services.append(ServiceStatus(
                    name=name, vip=svc.service.vip, port=svc.service.port,
                    protocol=svc.service.protocol, mode=svc.service.mode, table_size=size,
                    packets=sc.packets, bytes=sc.bytes, new_flows=sc.new_flows,
                    health=svc.service.health.describe(), backends=tuple(rows),
                    affinity=svc.service.affinity))
            st = self._dp.stats()
            stats = {k: (v if not isinstance(v, dict) else {str(r): n for r, n in v.items()})
                     for k, v in attrs.asdict(st, recurse=False).items()}
            return LbStatus(services=tuple(services), interfaces=tuple(self.interfaces),
                            stats=stats, health_checks=self._checker is not None,
                            nat_tracking=self.nat_tracking)

    # -- attaching --------------------------------------------------------------

    def attach(self, iface):
        """Attach the XDP program to ``iface`` (a name in the LB's
        namespace) in ``xdp_mode``; returns self.

        Linux >= 5.10 (native XDP needs driver support; "generic" works
        everywhere), CAP_NET_ADMIN (+ CAP_SYS_ADMIN with ``netns``). Raises
        BpfError naming the interface (e.g. ENODEV: no such interface,
        EBUSY: another XDP program is there)."""
        with self._lock:
            with _netlink.in_netns(self.netns):
                link = self._dp.attach(iface, mode=self.xdp_mode)
            self._links.append(link)
            self._iface_names.append(str(iface))
        return self

    def detach(self):
        """Detach from every interface (links pinned with ``pin()`` stay).
        Idempotent; CAP_NET_ADMIN."""
        with self._lock:
            links, self._links = self._links, []
            self._iface_names = [] if self.pin_path is None else self._iface_names
        for link in reversed(links):
            link.close()

    @property
    def interfaces(self):
        return list(self._iface_names)

    # -- pinning ----------------------------------------------------------------

    def pin(self, path):
        """Pin the LB under ``path`` (a new directory on bpffs): maps, links
        and the control-plane state, so that it keeps balancing after this
        process exits and ``LoadBalancer.open_pinned(path)`` (another
        process: ``pybpfnet lb status|drain|run``) can read and change it.

        Linux >= 5.10, CAP_BPF and bpffs mounted. Raises ValueError if
        already pinned, FileExistsError if ``path`` exists, BpfError from
        the kernel (then no pin is left)."""
        from pybpfnet._map import Map
        path = os.fspath(path)
        with self._lock:
            if self.pin_path is not None:
                raise ValueError("already pinned at %s" % self.pin_path)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.mkdir(path)
            try:
                self._dp.pin(path)
                self._state_map = Map.create("array", key="u32", value=_STATE_CHUNK,
                                             max_entries=_STATE_CHUNKS, name=_STATE_MAP)
                self._stack.callback(self._state_map.close)
                self._sync_gen = 1
                self._write_state()
                self._state_map.pin(os.path.join(path, _STATE_MAP))
                for i, link in enumerate(self._links):
                    link.pin(os.path.join(path, "link%d" % i))
            except BaseException:
                _pins.remove_pins(path)
                if self._state_map is not None:
                    self._state_map.close()
                    self._state_map = None
                raise
            self.pin_path = path
        return self

    @classmethod
    def open_pinned(cls, path, *, netns=None, on_event=None):
        """Open an LB pinned with ``pin(path)`` (by this or another process).
        Changes made through it are seen by every other handle (each change
        re-reads the shared state under a lock). Health checks are not
        started (``start_health_checks()``).

        Linux >= 5.10, CAP_BPF. Raises FileNotFoundError when nothing (or
        a pin of an older build) is pinned there, BpfError from the kernel;
        nothing stays open when it raises."""
        from pybpfnet._link import Link
        from pybpfnet._map import Map
        path = os.fspath(path)
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, _STATE_MAP)):
            raise FileNotFoundError("no load balancer pinned at %s" % path)
        self = cls.__new__(cls)
        self._init_state(netns, on_event)
        try:
            self._dp = _open_pinned_dp(path)
            self._state_map = self._stack.enter_context(
                Map.from_pinned(os.path.join(path, _STATE_MAP)))
            self.pin_path = path
            for name in sorted(os.listdir(path)):
                if name.startswith("link"):
                    self._links.append(self._stack.enter_context(
                        Link.from_pinned(os.path.join(path, name))))
            self._reload(force=True)
        except BaseException:
            self.close()
            raise
        return self

    def unpin(self):
        """Remove the pins (the LB then goes away when the last handle
        closes). Raises ValueError if this LB is not pinned."""
        with self._lock:
            if self.pin_path is None:
                raise ValueError("this load balancer is not pinned")
            _pins.remove_pins(self.pin_path)
            self.pin_path = None

    def remove(self):
        """Detach and unload a pinned LB: remove its pins, then close
        (closes even when unpinning fails). CAP_BPF, CAP_NET_ADMIN."""
        try:
            if self.pin_path is not None:
                self.unpin()
        finally:
            self.close()

    @contextlib.contextmanager
    def _mutation(self):
        """The lock around a change; for a pinned LB also the cross-process
        lock, re-reading the shared state first and writing it after."""
        with self._lock:
            if self.pin_path is None:
                yield
                return
            fd = os.open(self.pin_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._reload()
                yield
                self._sync_gen += 1
                self._write_state()
            finally:
                os.close(fd)

    def _state(self):
        svcs = []
        for name, svc in self._svcs.items():
            svcs.append({"service": self._current(svc).to_dict(),
                         "id": svc.id,
                         "backends": {n: {"id": be.id, "healthy": be.healthy, "mac": be.mac,
                                          "note": be.note}
                                      for n, be in svc.backends.items()}})
        return {"version": 1, "gen": self._sync_gen, "nat_tracking": self.nat_tracking,
                "table_size": self._table_size,
                "ifaces": self._iface_names, "src": {str(k): str(v) if v else None
                                                     for k, v in self._src.items()},
                "dp_config": self._dp_config, "xdp_mode": self.xdp_mode,
                "services": svcs}

    def _write_state(self):
        data = json.dumps(self._state(), separators=(",", ":")).encode()
        blob = len(data).to_bytes(8, "little") + data
        if len(blob) > _STATE_CHUNK * _STATE_CHUNKS:
            raise LbConfigError("the configuration is too large to pin (%d bytes of JSON)"
                                % len(data))
        chunks = [blob[i:i + _STATE_CHUNK].ljust(_STATE_CHUNK, b"\0")
                  for i in range(0, len(blob), _STATE_CHUNK)]
        self._state_map.update_batch(list(enumerate(chunks)))

    def _read_state(self):
        first = self._state_map[0]
        size = int.from_bytes(first[:8], "little")
        n = (size + 8 + _STATE_CHUNK - 1) // _STATE_CHUNK
        blob = b"".join(self._state_map[i] for i in range(n))
        return json.loads(blob[8:8 + size])

    def _reload(self, force=False):
        """Adopt the shared state of a pinned LB if another handle changed it."""
        if self.pin_path is None or self._state_map is None:
            return
        st = self._read_state()
        if not force and st["gen"] == self._sync_gen:
            return
        import ipaddress
        if not force:
            # another handle changed the maps: read the data plane back too
            old, self._dp = self._dp, _open_pinned_dp(self.pin_path)
            old.close()
        self._sync_gen = st["gen"]
        self._table_size = st["table_size"]
        self._iface_names = list(st["ifaces"])
        self._src = {int(k): ipaddress.ip_address(v) if v else None
                     for k, v in st["src"].items()}
        self._dp_config = st["dp_config"]
        self.xdp_mode = st["xdp_mode"]
        svcs = {}
        for item in st["services"]:
            service = Service.from_dict(item["service"])
            svc = _Svc(service, (service.vip, service.port, service.protocol))
            svc.id = item["id"]
            old = self._svcs.get(service.name)
            for b in service.backends:
                info = item["backends"][b.name]
                be = _Be(b, info["id"], info["mac"])
                be.healthy = info["healthy"]
                be.note = info.get("note", "")
                if old is not None and b.name in old.backends:
                    be.health = old.backends[b.name].health
                svc.backends[b.name] = be
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                svc.maglev = Maglev(self._weights(svc), service.table_size or self._table_size)
            svcs[service.name] = svc
        self._svcs = svcs
        self._sync_checks()

    # -- lifetime ---------------------------------------------------------------

    def close(self):
        """Stop the health checks, detach (unless pinned) and unload.
        Idempotent."""
        self.stop_health_checks()
        self.detach()                # pinned links stay attached (the pin holds them)
        stack, self._stack = self._stack, contextlib.ExitStack()
        stack.close()
        if self._dp is not None:
            self._dp.close()
        self._dp = None

    @property
    def closed(self):
        return self._dp is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<LoadBalancer %d services on %s%s>" % (
            len(self._svcs), ", ".join(self._iface_names) or "no interface",
            " pinned at %s" % self.pin_path if self.pin_path else "")


class _Sweeper:
    """A thread that sweeps the LB's expired tracked NAT connections every
    ``interval`` seconds; errors go to the LB's events (what "sweep")."""

    def __init__(self, lb, interval):
        self._lb = lb
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pybpfnet-lb-sweep",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self._interval):
            try:
                self._lb.sweep()
            except OSError as exc:       # keep sweeping; say why this one failed
                with self._lb._lock:
                    self._lb._event("*", None, "sweep", "conntrack sweep failed: %s" % exc,
                                    0.0)

    def close(self):
        self._stop.set()
        self._thread.join()


def _open_pinned_dp(path):
    return _dp_module().LbDataplane.open_pinned(path)


def _resolve_mac(address, netns, timeout):
    from pybpfnet.dataplanes._lb_net import resolve_mac
    return resolve_mac(address, netns=netns, timeout=timeout)

