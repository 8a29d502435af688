"""The load balancer's XDP data plane, low level: load the BPF object
(csrc/bpf/lb), publish services, backends and Maglev tables into its maps,
read counters and flows. The control plane (``pybpfnet.dataplanes.lb``)
builds on it; see docs/lb-dataplane.md.

::

    with LbDataplane() as dp:
        dp.set_config(src4="192.0.2.1", mtu=1500)
        dp.put_backend(0, "10.0.0.2", mac="02:00:00:00:00:02")
        dp.put_service(("192.0.2.10", 80, "tcp"), mode="ipip")
        dp.install_table(("192.0.2.10", 80, "tcp"), [0] * 7)   # a Maglev table
        verdict, out = dp.run(frame)                          # BPF_PROG_TEST_RUN
        dp.attach("eth0")

The backends run :class:`Decap` when the mode encapsulates.
"""

import array
import contextlib
import ipaddress
import os

import attrs

from pybpfnet._map import ArrayMap, possible_cpus, sum_values
from pybpfnet._object import open_bundled
from pybpfnet._program import XdpAction
from pybpfnet.dataplanes import _lb_abi as abi
from pybpfnet.dataplanes._lb_abi import DropReason, Mode, Proto
from pybpfnet.dataplanes._lb_model import CtPeer, FlowEntry, LbModel, ModelConfig, addr16
from pybpfnet.dataplanes._owner import _LinkOwner
from pybpfnet.packet import mac_bytes

__all__ = ["LbDataplane", "Decap", "ServiceKey", "Counters", "LbStats", "Flow", "Mode",
           "Proto", "DropReason", "UnknownServiceError", "UnknownBackendError",
           "is_prime"]


class UnknownServiceError(KeyError):
    """No such service (also a ``KeyError``)."""


class UnknownBackendError(KeyError):
    """No such backend (also a ``KeyError``)."""


def _ip(value):
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address, got %r" % (value,)) from None


def _port(value, what="port", zero=False):
    if not isinstance(value, int) or isinstance(value, bool) \
            or not (0 if zero else 1) <= value <= 65535:
        raise ValueError("%s must be an int in %d..65535, got %r" % (what, 0 if zero else 1,
                                                                    value))
    return value


@attrs.frozen
class ServiceKey:
    """A service: VIP, port and protocol ("tcp"/"udp")."""

    vip: object = attrs.field(converter=_ip)
    port: int = attrs.field(converter=lambda v: _port(v, "service port"))
    proto: Proto = attrs.field(converter=Proto.parse)

    @classmethod
    def of(cls, value):
        """A ServiceKey from a ServiceKey or a (vip, port, proto) tuple."""
        if isinstance(value, cls):
            return value
        if isinstance(value, tuple) and len(value) == 3:
            return cls(*value)
        raise ValueError("a service is a ServiceKey or a (vip, port, proto) tuple, got %r"
                         % (value,))

    def __str__(self):
        vip = "[%s]" % self.vip if self.vip.version == 6 else str(self.vip)
        return "%s:%d/%s" % (vip, self.port, self.proto)


@attrs.frozen
class Counters:
    """Packets, bytes and new flows, summed over CPUs."""

    packets: int
    bytes: int
    new_flows: int


@attrs.frozen
class LbStats:
    """Data-plane totals, summed over CPUs. ``flow_misses``: packets to a
    service without a usable flow entry (hashed through the table);
    ``table_swaps``: times a CPU hashed with a newer table than before."""

    packets: int
    vip_packets: int
    flow_misses: int
    new_flows: int
    table_swaps: int
    nat_replies: int
    icmp_forwarded: int
    too_big_sent: int
    passed: int
    drops: dict
    #: TCP SYNs (without ACK) that found a flow entry and were hashed again
    #: as new connections (tracked NAT: connections the tracker reopened)
    syn_rehash: int = 0

    def to_dict(self):
        d = attrs.asdict(self)
        d["drops"] = {str(k): v for k, v in self.drops.items()}
        return d


@attrs.frozen
class Flow:
    """A flow the data plane has pinned to a backend."""

    client: object
    client_port: int
    vip: object
    port: int
    proto: Proto
    backend_id: int
    service_id: int


@attrs.frozen
class _Service:
    id: int
    mode: Mode
    source_affinity: bool
    epoch: int


_NO_SERVICE = dict(id=0, epoch=0, mode=0, flags=0, pad=0)


@attrs.frozen
class _Backend:
    address: object
    mac: bytes
    port: int


def is_prime(n):
    """True when n is a prime (trial division; n up to MAX_TABLE_SIZE)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _xdp_mode(mode):
    if mode not in ("native", "generic", "auto"):
        raise ValueError("XDP mode must be 'native', 'generic' or 'auto', got %r" % (mode,))
    return mode


class LbDataplane(_LinkOwner):
    """The load balancer's XDP program and maps (low-level API).

    ``max_services``/``max_backends``/``max_flows`` size the maps before
    load (backend ids are 0 .. max_backends-1, chosen by the caller).
    ``spec``: an ObjectSpec of another build of the same program (e.g. the
    benchmark's, which wraps it); default the bundled object.
    ``nat_tracking``: "lru" (default: every mode's flows in the LRU table,
    program ``lb_xdp``) or "conntrack" (program ``lb_xdp_ct``: NAT
    services tracked by the connection tracker, see :attr:`conntrack`;
    Linux >= 5.18 for bpf_xdp_load_bytes); ``ct_options``: the tracker's
    ConntrackOptions then (default: max_flows established entries,
    max_flows // 4 embryonic).
    Needs CAP_BPF (CAP_NET_ADMIN to attach), Linux >= 5.10. Raises
    BpfError/VerifierError from the kernel, ValueError for bad arguments
    (nothing is written then). A context manager; ``close()`` detaches and
    unloads (idempotent).
    """

    def __init__(self, *, max_services=abi.MAX_SERVICES, max_backends=abi.MAX_BACKENDS,
                 max_flows=abi.MAX_FLOWS, spec=None, nat_tracking="lru", ct_options=None):
        for name, v in (("max_services", max_services), ("max_backends", max_backends),
                        ("max_flows", max_flows)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1 << 24:
                raise ValueError("%s must be an int in 1..%d, got %r" % (name, 1 << 24, v))
        ct_options = self._ct_options(nat_tracking, ct_options, max_flows)
        if spec is None:
            spec = open_bundled(abi.OBJECT)
        self._configure_tracking(spec, nat_tracking, ct_options)
        spec.maps[abi.MAP_SERVICES].max_entries = max_services
        spec.maps[abi.MAP_SVC].max_entries = max_services
        spec.maps[abi.MAP_TABLES].max_entries = max_services
        spec.maps[abi.MAP_SVC_COUNTERS].max_entries = max_services
        spec.maps[abi.MAP_BACKENDS].max_entries = max_backends
        spec.maps[abi.MAP_BE_COUNTERS].max_entries = max_backends
        spec.maps[abi.MAP_BE_ADDRS].max_entries = max_backends
        spec.maps[abi.MAP_FLOWS].max_entries = max_flows
        self._load(spec, fresh=True)

    @staticmethod
    def _ct_options(nat_tracking, ct_options, max_flows):
        from pybpfnet.dataplanes.conntrack import ConntrackOptions
        if nat_tracking not in abi.NAT_TRACKING:
            raise ValueError("nat_tracking must be one of %s, got %r"
                             % (", ".join(map(repr, abi.NAT_TRACKING)), nat_tracking))
        if nat_tracking == "lru":
            if ct_options is not None:
                raise ValueError("ct_options only apply with nat_tracking='conntrack'")
            # the tracker's maps exist in the object: as small as they go
            return ConntrackOptions(max_entries=1, embryonic_entries=1, events=False,
                                    event_buffer=os.sysconf("SC_PAGE_SIZE"))
        if ct_options is None:
            return ConntrackOptions(max_entries=max_flows,
                                    embryonic_entries=max(1, max_flows // 4))
        if not isinstance(ct_options, ConntrackOptions):
            raise ValueError("ct_options must be a ConntrackOptions, got %r" % (ct_options,))
        return ct_options

    @staticmethod
    def _configure_tracking(spec, nat_tracking, ct_options):
        from pybpfnet.dataplanes.conntrack import configure
        tracked = nat_tracking == "conntrack"
        configure(spec, ct_options)
        spec.maps[abi.MAP_CT_PEERS].max_entries = (
            ct_options.max_entries + ct_options.embryonic_entries if tracked else 1)
        spec.globals[abi.GLOBAL_NAT_CT] = int(tracked)
        spec.programs[abi.PROG_XDP if tracked else abi.PROG_XDP_CT].autoload = False
        if not tracked:
            # the tracker's helper programs (bpf_loop: Linux >= 5.17) are
            # not needed: the LRU program keeps its Linux >= 5.10
            from pybpfnet.dataplanes import _ct_abi
            for name in (_ct_abi.PROG_REAP, _ct_abi.PROG_CLOCK, _ct_abi.PROG_COUNT):
                if name in spec.programs:
                    spec.programs[name].autoload = False

    def _load(self, spec, fresh):
        self._init_owner()
        self.nat_tracking = ("conntrack" if spec.globals[abi.GLOBAL_NAT_CT] else "lru")
        self._conntrack = None
        self._services = {}
        self._backends = {}
        self._tables = {}          # service id -> (list of ids, generation)
        self._generation = 0
        self._epoch = 0
        self._config = ModelConfig()
        try:
            abi.check()
            self._obj = self._stack.enter_context(spec.load())
            m = self._obj.maps
            self._m_services = m[abi.MAP_SERVICES]
            self._m_svc = m[abi.MAP_SVC]
            self._m_addrs = m[abi.MAP_VIP_ADDRS]
            self._m_backends = m[abi.MAP_BACKENDS]
            self._m_tables = m[abi.MAP_TABLES]
            self._m_flows = m[abi.MAP_FLOWS]
            self._m_config = m[abi.MAP_CONFIG]
            self._m_svc_counters = m[abi.MAP_SVC_COUNTERS]
            self._m_be_counters = m[abi.MAP_BE_COUNTERS]
            self._m_stats = m[abi.MAP_STATS]
            self.max_services = self._m_services.max_entries
            self.max_backends = self._m_backends.max_entries
            self._m_ct_peers = m[abi.MAP_CT_PEERS]
            self._m_be_addrs = m[abi.MAP_BE_ADDRS]
            self.program = self._obj.programs[abi.PROG_XDP_CT if self.nat_tracking ==
                                              "conntrack" else abi.PROG_XDP]
            if self.nat_tracking == "conntrack":
                from pybpfnet.dataplanes.conntrack import Conntrack
                self._conntrack = Conntrack.from_object(self._obj)
                self._stack.callback(self._conntrack.close)
            if fresh:
                self._write_config(self._config)
            else:
                self._read_back()
        except BaseException:
            self._stack.close()
            self._closed = True
            raise

    # ------------------------------------------------------------- pinning
    def pin(self, path):
        """Pin every map in the directory ``path`` (created if missing), so
        that the tables outlive this process (:meth:`open_pinned`). Links
        are pinned separately (``Link.pin``). Needs CAP_BPF and a bpffs."""
        os.makedirs(path, exist_ok=True)
        for name in self._pinnable(self._obj.maps):
            self._obj.maps[name].pin(os.path.join(path, name))

    @staticmethod
    def _pinnable(maps):
        return [n for n in maps if "." not in n]      # not .rodata/.bss

    @classmethod
    def open_pinned(cls, path, *, spec=None, ct_options=None):
        """A data plane over the maps pinned in ``path`` by :meth:`pin`
        (another process's, say): a new program object sharing them, its
        Python-side state (services, backends, tables, configuration) read
        back from the maps; NAT tracking as the pinned data plane's (the
        tracker's timeouts: ``ct_options``, default ConntrackOptions()).
        Raises FileNotFoundError naming a missing map, BpfError from the
        kernel."""
        from pybpfnet._map import Map
        if spec is None:
            spec = open_bundled(abi.OBJECT)
        pinned = {}
        try:
            for name in cls._pinnable(spec.maps):
                p = os.path.join(path, name)
                if not os.path.exists(p):
                    raise FileNotFoundError("no load balancer data plane pinned at %s "
                                            "(missing %s)" % (path, name))
                pinned[name] = Map.from_pinned(p)
            tracking = "conntrack" if pinned[abi.MAP_CT_PEERS].max_entries > 1 else "lru"
            if tracking == "lru":
                ct_options = None
            cls._configure_tracking(spec, tracking, cls._ct_options(tracking, ct_options, 1))
            for name, m in pinned.items():
                spec.maps[name].max_entries = m.max_entries
                spec.maps[name].reuse(m)
            self = cls.__new__(cls)
            self._load(spec, fresh=False)
        finally:
            for m in pinned.values():
                m.close()             # the object holds its own reference
        return self

    def _read_back(self):
        from pybpfnet._map import Map

        def addr(raw, family):
            return ipaddress.ip_address(bytes(raw[:4] if family == 4 else raw[:16]))

        svc = dict(self._m_svc.items())
        for k, sid in self._m_services.items():
            v = svc[sid]
            self._services[ServiceKey(addr(k.addr, k.family), k.port, k.proto)] = _Service(
                sid, Mode(v.mode), bool(v.flags & abi.F_SRC_HASH), v.epoch)
        for bid, b in self._m_backends.items():
            if b.valid:
                self._backends[bid] = _Backend(addr(b.addr, b.family), bytes(b.mac), b.port)
        for s in self._services.values():
            try:
                inner_id = self._m_tables[s.id]
            except KeyError:
                continue
            with Map.from_id(inner_id, key="u32", value="u32") as inner:
                values = dict(inner.items())
            m, gen = values[0], values[1]
            self._tables[s.id] = ([-1 if values[i] == abi.EMPTY else values[i]
                                   for i in range(abi.TABLE_HDR, abi.TABLE_HDR + m)], gen)
            self._generation = max(self._generation, gen)
        self._epoch = max([s.epoch for s in self._services.values()] + [0])
        c = self._m_config[0]
        self._config = ModelConfig(
            src4=ipaddress.IPv4Address(bytes(c.src4)) if c.has_src4 else None,
            src6=ipaddress.IPv6Address(bytes(c.src6)) if c.has_src6 else None,
            mtu=c.mtu or abi.DEFAULT_MTU, gue_port=c.gue_port, hash_seed=c.hash_seed)

    # ---------------- lifetime (close, context manager, finalizer: _LinkOwner)
    def __repr__(self):
        if self._closed:
            return "<LbDataplane closed>"
        return "<LbDataplane services=%d backends=%d links=%d>" % (
            len(self._services), len(self._backends), len(self._links))

    @property
    def object(self):
        """The loaded BpfObject (its maps, for tools)."""
        return self._obj

    @property
    def conntrack(self):
        """With ``nat_tracking="conntrack"``: a pybpfnet
        :class:`~pybpfnet.dataplanes.conntrack.Conntrack` over this data
        plane's connection tables (not loading anything; closed with the
        data plane): ``entries()`` lists the NAT'd connections with their
        states (the reply tuple's source is the backend), ``sweep()``
        deletes expired ones (call it periodically), ``events()``,
        ``stats()``, ``delete()``, ``flush()``. Raises ValueError with the
        LRU table (``nat_tracking="lru"``)."""
        if self._conntrack is None:
            raise ValueError("this data plane keeps NAT flows in its LRU table; "
                             "LbDataplane(nat_tracking='conntrack') tracks them")
        return self._conntrack

    def attach(self, iface, mode="native"):
        """Attach the XDP program to ``iface`` (name or ifindex in the
        calling thread's network namespace); mode "native", "generic" or
        "auto". Returns the Link (also closed by ``close()``). Needs
        CAP_NET_ADMIN; raises HookBusyError when the hook is taken."""
        return self._keep(self.program.attach_xdp(iface, _xdp_mode(mode)))

    def run(self, packet):
        """One BPF_PROG_TEST_RUN: (XdpAction, output bytes)."""
        r = self.program.test_run(packet)
        return r.verdict, r.data

    # -------------------------------------------------------------- config
    @property
    def config(self):
        """The current configuration (a ModelConfig)."""
        return self._config

    def set_config(self, *, src4=None, src6=None, mtu=abi.DEFAULT_MTU, gue_port=abi.GUE_PORT,
                   hash_seed=0):
        """Outer source addresses of IPIP/GUE (None: that family cannot be
        encapsulated: FAMILY drops), the MTU an encapsulated packet must
        fit (68..65535), the GUE destination port and the flow hash seed.
        Raises ValueError; nothing is written then."""
        if src4 is not None:
            src4 = _ip(src4)
            if src4.version != 4:
                raise ValueError("src4 must be an IPv4 address, got %s" % src4)
        if src6 is not None:
            src6 = _ip(src6)
            if src6.version != 6:
                raise ValueError("src6 must be an IPv6 address, got %s" % src6)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
            raise ValueError("mtu must be an int in 68..65535, got %r" % (mtu,))
        _port(gue_port, "gue_port")
        if not isinstance(hash_seed, int) or not 0 <= hash_seed < 1 << 32:
            raise ValueError("hash_seed must be an int in 0..2**32-1, got %r" % (hash_seed,))
        cfg = ModelConfig(src4=src4, src6=src6, mtu=mtu, gue_port=gue_port,
                          hash_seed=hash_seed)
        self._write_config(cfg)
        self._config = cfg

    def _write_config(self, cfg):
        self._m_config[0] = dict(
            src4=cfg.src4.packed if cfg.src4 else bytes(4),
            src6=cfg.src6.packed if cfg.src6 else bytes(16),
            mtu=cfg.mtu, gue_port=cfg.gue_port, hash_seed=cfg.hash_seed,
            has_src4=int(cfg.src4 is not None), has_src6=int(cfg.src6 is not None),
            pad=bytes(2))

    # ------------------------------------------------------------ services
    def _service(self, key):
        key = ServiceKey.of(key)
        try:
            return key, self._services[key]
        except KeyError:
            raise UnknownServiceError("no service %s" % key) from None

    def put_service(self, key, *, mode, source_affinity=False):
        """Add a service or change its mode/affinity in place; returns its
        id (stable while it exists). Until a table is installed its packets
        drop (NO_BACKEND). ``key``: ServiceKey or (vip, port, proto)."""
        key = ServiceKey.of(key)
        mode = Mode.parse(mode)
        old = self._services.get(key)
        if old is None:
            used = {s.id for s in self._services.values()}
            sid = next((i for i in range(self.max_services) if i not in used), None)
            if sid is None:
                raise ValueError("no room for service %s: all %d service ids are used"
                                 % (key, self.max_services))
        else:
            sid = old.id
            if old.mode == mode and old.source_affinity == bool(source_affinity):
                return sid
        self._epoch = (self._epoch % 0xFFFFFFFF) + 1
        value = dict(id=sid, epoch=self._epoch, mode=int(mode),
                     flags=abi.F_SRC_HASH if source_affinity else 0, pad=0)
        if old is None:
            ncpu = possible_cpus()
            zero = dict(packets=0, bytes=0, new_flows=0, gen_seen=0, pad=0)
            self._m_svc_counters[sid] = [zero] * ncpu
            with contextlib.suppress(KeyError):
                del self._m_tables[sid]
            akey = self._addr_key(key.vip)
            n = self._m_addrs.get(akey, 0)
            self._m_addrs[akey] = n + 1
            try:
                self._m_svc[sid] = value
                self._m_services[self._vip_key(key)] = sid
            except BaseException:
                self._m_svc[sid] = _NO_SERVICE
                self._addr_release(akey)
                raise
        else:
            # a new epoch: the service's flows are hashed again
            self._m_svc[sid] = value
        self._services[key] = _Service(sid, mode, bool(source_affinity), self._epoch)
        return sid

    def delete_service(self, key):
        """Remove a service (its flows stay until purged or evicted).
        Raises UnknownServiceError."""
        key, svc = self._service(key)
        del self._m_services[self._vip_key(key)]
        self._m_svc[svc.id] = _NO_SERVICE
        with contextlib.suppress(KeyError):
            del self._m_tables[svc.id]
        self._addr_release(self._addr_key(key.vip))
        self._tables.pop(svc.id, None)
        del self._services[key]

    def services(self):
        """{ServiceKey: (service id, Mode, source_affinity)}"""
        return {k: (s.id, s.mode, s.source_affinity) for k, s in self._services.items()}

    def service_id(self, key):
        """The id of a service (its counters' and table's index)."""
        return self._service(key)[1].id

    @staticmethod
    def _vip_key(key):
        return dict(addr=addr16(key.vip), port=key.port, proto=int(key.proto),
                    family=key.vip.version)

    @staticmethod
    def _addr_key(vip):
        return dict(addr=addr16(vip), family=vip.version, pad=bytes(3))

    def _addr_release(self, akey):
        n = self._m_addrs.get(akey, 0)
        if n <= 1:
            with contextlib.suppress(KeyError):
                del self._m_addrs[akey]
        else:
            self._m_addrs[akey] = n - 1

    # ------------------------------------------------------------ backends
    def _check_bid(self, backend_id):
        if not isinstance(backend_id, int) or isinstance(backend_id, bool) \
                or not 0 <= backend_id < self.max_backends:
            raise ValueError("backend id must be an int in 0..%d, got %r"
                             % (self.max_backends - 1, backend_id))
        return backend_id

    def put_backend(self, backend_id, address, *, mac, port=0):
        """Add or change backend ``backend_id``: its address (outer
        destination for IPIP/GUE, new destination for NAT), the destination
        MAC of the frames sent to it (its own, or the next hop's), and for
        NAT the port at the backend (0: the service's)."""
        self._check_bid(backend_id)
        address = _ip(address)
        try:
            mac = mac_bytes(mac)
        except (ValueError, TypeError):
            raise ValueError("mac must be a MAC address ('02:00:00:00:00:01' or 6 bytes), "
                             "got %r" % (mac,)) from None
        _port(port, "backend port", zero=True)
        old = self._backends.get(backend_id)
        if old is None or old.address != address:
            akey = self._addr_key(address)
            self._m_be_addrs[akey] = self._m_be_addrs.get(akey, 0) + 1
        self._m_backends[backend_id] = dict(addr=addr16(address), mac=mac, port=port,
                                            family=address.version, valid=1, pad=bytes(2))
        if old is not None and old.address != address:
            self._be_addr_release(old.address)
        if backend_id not in self._backends:
            ncpu = possible_cpus()
            self._m_be_counters[backend_id] = [dict(packets=0, bytes=0, new_flows=0,
                                                    gen_seen=0, pad=0)] * ncpu
        self._backends[backend_id] = _Backend(address, mac, port)

    def delete_backend(self, backend_id):
        """Remove a backend. Refused (ValueError) while a table still names
        it: install tables without it first. Its flows move to the table's
        choice on their next packet; :meth:`purge_backend` removes them now."""
        self._check_bid(backend_id)
        if backend_id not in self._backends:
            raise UnknownBackendError("no backend %d" % backend_id)
        for key, svc in self._services.items():
            if backend_id in self._tables.get(svc.id, ((), 0))[0]:
                raise ValueError("backend %d is in the table of service %s: install a "
                                 "table without it first" % (backend_id, key))
        self._m_backends[backend_id] = dict(addr=bytes(16), mac=bytes(6), port=0, family=0,
                                            valid=0, pad=bytes(2))
        self._be_addr_release(self._backends.pop(backend_id).address)

    def _be_addr_release(self, address):
        akey = self._addr_key(address)
        n = self._m_be_addrs.get(akey, 0)
        if n <= 1:
            with contextlib.suppress(KeyError):
                del self._m_be_addrs[akey]
        else:
            self._m_be_addrs[akey] = n - 1

    def backends(self):
        """{backend id: (address, mac bytes, port)}"""
        return {k: (b.address, b.mac, b.port) for k, b in self._backends.items()}

    # -------------------------------------------------------------- tables
    def install_table(self, key, backend_ids):
        """Install a Maglev table for a service: ``backend_ids`` has one
        entry per slot (M entries, M prime, 2..16,777,213), each the id of
        a backend that exists, or -1 for an empty slot. Atomic: a fresh
        inner map is filled, then swapped into the service's slot of
        lb_tables with one update; packets see the old table or the new.
        Raises ValueError naming the problem (nothing written)."""
        key, svc = self._service(key)
        try:
            # one C-level copy (Maglev tables are already array('i'))
            ids = array.array("i", backend_ids)
        except (TypeError, OverflowError):
            raise ValueError("backend_ids must be a sequence of ints (backend ids, -1 for "
                             "empty), got %r" % (backend_ids,)) from None
        m = len(ids)
        if not 2 <= m <= abi.MAX_TABLE_SIZE or not is_prime(m):
            raise ValueError("a table has a prime number of slots in 2..%d, got %d"
                             % (abi.MAX_TABLE_SIZE, m))
        unknown = sorted(set(ids).difference(self._backends, (-1,)))
        if unknown:
            raise ValueError("table for %s names backends that do not exist: %s"
                             % (key, ", ".join(map(str, unknown[:10]))))
        self._generation = (self._generation % 0xFFFFFFFF) + 1
        gen = self._generation
        # [M, generation, ids...]; -1 as a u32 is abi.EMPTY
        values = array.array("I", (m, gen))
        values.frombytes(ids.tobytes())
        with ArrayMap.create(key="u32", value="u32", max_entries=m + abi.TABLE_HDR,
                             flags=abi.BPF_F_INNER_MAP, name="lb_table") as inner:
            inner.update_batch((array.array("I", range(len(values))), values))
            self._m_tables[svc.id] = inner
        self._tables[svc.id] = (ids, gen)

    def table(self, key):
        """The installed table of a service (a list of backend ids, -1 for
        empty slots), or None."""
        entry = self._tables.get(self._service(key)[1].id)
        return None if entry is None else list(entry[0])

    # ------------------------------------------------------------ counters
    def service_counters(self, key):
        """Counters of a service (every packet matched to it)."""
        c = sum_values(self._m_svc_counters[self._service(key)[1].id])
        return Counters(c.packets, c.bytes, c.new_flows)

    def backend_counters(self, backend_id):
        """Counters of a backend (packets sent to it)."""
        c = sum_values(self._m_be_counters[self._check_bid(backend_id)])
        return Counters(c.packets, c.bytes, c.new_flows)

    def stats(self):
        """LbStats summed over CPUs."""
        s = sum_values(self._m_stats[0])
        d = s._asdict()
        drops = d.pop("drops")
        return LbStats(drops={r: drops[int(r)] for r in DropReason}, **d)

    # --------------------------------------------------------------- flows
    def flows(self):
        """The flows pinned to backends (a list of Flow; NAT reply entries
        are not listed)."""
        out = []
        for k, v in self._m_flows.items():
            if v.type != abi.FLOW_FWD:
                continue
            n = 4 if k.family == 4 else 16
            out.append(Flow(ipaddress.ip_address(k.src[:n]), k.sport,
                            ipaddress.ip_address(k.dst[:n]), k.dport, Proto.parse(k.proto),
                            v.backend_id, v.service_id))
        if self.nat_tracking == "conntrack":
            peers = {self._ct_key(k): v for k, v in self._m_ct_peers.items()}
            for c in self.conntrack.entries():
                peer = peers.get(self._ct_key(c.key))
                if peer is None or not c.nat:
                    continue
                out.append(Flow(c.src, c.sport, c.dst, c.dport, Proto.parse(c.protocol),
                                peer.backend_id, peer.service_id))
        return out

    @staticmethod
    def _ct_key(k):
        return (bytes(k.a), bytes(k.b), k.aport, k.bport, k.proto, k.family)

    def purge_backend(self, backend_id):
        """Delete the flows (and NAT reply entries) pinned to a backend;
        returns how many flows went."""
        self._check_bid(backend_id)
        keys = [(k, v.type) for k, v in self._m_flows.items() if v.backend_id == backend_id]
        for k, _ in keys:
            with contextlib.suppress(KeyError):
                del self._m_flows[k]
        n = sum(1 for _, t in keys if t == abi.FLOW_FWD)
        be = self._backends.get(backend_id)
        if self.nat_tracking == "conntrack" and be is not None:
            # tracked NAT connections: the backend is their reply's source
            conns = [c for c in self.conntrack.entries()
                     if c.nat and c.reply_src == be.address]
            if conns:
                n += self.conntrack.delete(*conns)
            for c in conns:
                with contextlib.suppress(KeyError):
                    del self._m_ct_peers[c.key]
        return n

    def flush_flows(self):
        """Forget every flow and NAT entry (each flow is hashed again on its
        next packet; tracked NAT: every connection); returns how many flows
        went."""
        n = len(self.flows())
        self._m_flows.clear()
        if self.nat_tracking == "conntrack":
            self.conntrack.flush()
            self._m_ct_peers.clear()
        return n

    def model(self):
        """An LbModel holding this data plane's state now (services,
        backends, tables, configuration and flows; counters start at
        zero): the expected behaviour of the next packet."""
        m = LbModel(self._config, nat_tracking=self.nat_tracking,
                    ct_config=self._ct_model_config())
        for key, s in self._services.items():
            m.put_service(key.vip, key.port, key.proto, s.id, s.mode, s.source_affinity,
                          epoch=s.epoch)
        for bid, b in self._backends.items():
            m.put_backend(bid, b.address, b.mac, b.port)
        for sid, (ids, gen) in self._tables.items():
            m.install_table(sid, [abi.EMPTY if b == -1 else b for b in ids], gen)
        for k, v in self._m_flows.items():
            m.flows[(k.src, k.dst, k.sport, k.dport, k.proto, k.family)] = FlowEntry(
                v.type, v.backend_id, v.service_id, v.epoch, v.client_mac, v.vip, v.vport)
        if m.ct is not None:
            self._ct_into_model(m)
        return m

    def _ct_model_config(self):
        if self.nat_tracking != "conntrack":
            return None
        from pybpfnet.dataplanes import _ct_model as ctm
        c = self._obj.globals["ct_cfg"]
        return ctm.ModelConfig(timeout_ms=tuple(c.timeout_ms), udp_stream_ms=c.udp_stream_ms,
                               tcp_loose=bool(c.tcp_loose), tcp_liberal=bool(c.tcp_liberal),
                               events=c.events)

    def _ct_into_model(self, m):
        """The tracker's tables, aliases and lb_ct_peers into m (times in
        the tracker's ticks: the model's clock stays at 0, nothing expires)."""
        from pybpfnet.dataplanes import _ct_model as ctm
        from pybpfnet.dataplanes._ct_abi import ALIAS, EMBRYONIC, ESTABLISHED

        def tup(t):
            return (bytes(t.src), bytes(t.dst), t.sport, t.dport, t.proto, t.family)

        def key(k):
            return (bytes(k.a), bytes(k.b), k.aport, k.bport, k.proto, k.family)

        maps = self._obj.maps
        for table, name in ((0, ESTABLISHED), (1, EMBRYONIC)):
            for k, v in maps[name].items():
                e = ctm.Entry(tup(v.orig), tup(v.reply), v.first_seen, v.last_seen, v.expires,
                              list(v.packets), list(v.bytes),
                              [ctm.TcpDir(d.end, d.maxend, d.maxwin, d.scale, d.flags)
                               for d in v.tcp],
                              v.state, v.status, list(v.tcp_flags), v.last_index, v.last_dir)
                dict.__setitem__(m.ct.tables[table], key(k), e)
        for k, v in maps[ALIAS].items():
            m.ct.alias[key(k)] = key(v)
        for k, v in self._m_ct_peers.items():
            m.ct_peers[key(k)] = CtPeer(v.backend_id, v.service_id, bytes(v.client_mac))


class Decap(_LinkOwner):
    """The backends' decapsulator: an XDP program (or its TC ingress
    variant, :meth:`attach_tc`) that strips the outer IPIP / IPv6-in-IP /
    GUE headers of packets to one of ``addresses`` (the backend's own
    addresses the load balancer sends to) and passes the inner packet to
    the stack; everything else passes untouched.

    Needs CAP_BPF (CAP_NET_ADMIN to attach), Linux >= 5.10. A context
    manager; ``close()`` detaches and unloads (idempotent).
    """

    def __init__(self, addresses=(), *, gue_port=abi.GUE_PORT):
        _port(gue_port, "gue_port")
        self._init_owner()
        try:
            self._obj = self._stack.enter_context(open_bundled(abi.DECAP_OBJECT).load())
            self._m_addrs = self._obj.maps[abi.MAP_DECAP_ADDRS]
            self._m_stats = self._obj.maps[abi.MAP_DECAP_STATS]
            self._obj.maps[abi.MAP_DECAP_CONFIG][0] = dict(gue_port=gue_port, pad=0)
            self.program = self._obj.programs[abi.PROG_DECAP_XDP]
            self.tc_program = self._obj.programs[abi.PROG_DECAP_TC]
            for a in addresses:
                self.add_address(a)
        except BaseException:
            self._stack.close()
            self._closed = True
            raise

    def add_address(self, address):
        """Accept tunnels to ``address``."""
        a = _ip(address)
        self._m_addrs[dict(addr=addr16(a), family=a.version, pad=bytes(3))] = 1

    def remove_address(self, address):
        """Stop accepting tunnels to ``address`` (KeyError if not added)."""
        a = _ip(address)
        del self._m_addrs[dict(addr=addr16(a), family=a.version, pad=bytes(3))]

    def attach(self, iface, mode="native"):
        """Attach to ``iface`` in the calling thread's network namespace;
        returns the Link (also closed by ``close()``)."""
        return self._keep(self.program.attach_xdp(iface, _xdp_mode(mode)))

    def attach_tc(self, iface):
        """Attach the TC variant to ``iface``'s ingress (works on any device
        and on GRO-merged packets; 4in6/6in4 need Linux >= 6.3); returns
        the Link (also closed by ``close()``)."""
        return self._keep(self.tc_program.attach_tc(iface, "ingress"))

    def run(self, packet, hook="xdp"):
        """One BPF_PROG_TEST_RUN of the XDP or TC variant: (verdict, output
        bytes); the verdict is an XdpAction or a TcAction."""
        if hook not in ("xdp", "tc"):
            raise ValueError("hook must be 'xdp' or 'tc', got %r" % (hook,))
        r = (self.program if hook == "xdp" else self.tc_program).test_run(packet)
        return r.verdict, r.data

    def stats(self):
        """{"packets", "decapped", "passed"} summed over CPUs."""
        return sum_values(self._m_stats[0])._asdict()


def decap_model(packet, addresses, gue_port=abi.GUE_PORT):
    """What :class:`Decap` does with a frame: (XdpAction.PASS, output bytes)."""
    data = bytes(packet)
    accepted = {addr16(_ip(a)) + bytes([_ip(a).version]) for a in addresses}
    if len(data) < 14:
        return XdpAction.PASS, data
    etype = int.from_bytes(data[12:14], "big")
    if etype == 0x0800:
        if len(data) < 34 or data[14] != 0x45 or int.from_bytes(data[20:22], "big") & 0x3FFF:
            return XdpAction.PASS, data
        hl, proto, dst, fam = 20, data[23], data[30:34] + bytes(12), 4
    elif etype == 0x86DD:
        if len(data) < 54:
            return XdpAction.PASS, data
        hl, proto, dst, fam = 40, data[20], data[38:54], 6
    else:
        return XdpAction.PASS, data
    l4 = 14 + hl
    if proto in (4, 41):
        strip, inner = hl, 0x0800 if proto == 4 else 0x86DD
    elif proto == 17:
        if len(data) < l4 + 9 or int.from_bytes(data[l4 + 2:l4 + 4], "big") != gue_port:
            return XdpAction.PASS, data
        v = data[l4 + 8] >> 4
        if v not in (4, 6):
            return XdpAction.PASS, data
        strip, inner = hl + 8, 0x0800 if v == 4 else 0x86DD
    else:
        return XdpAction.PASS, data
    if dst + bytes([fam]) not in accepted:
        return XdpAction.PASS, data
    return XdpAction.PASS, data[:12] + inner.to_bytes(2, "big") + data[14 + strip:]
