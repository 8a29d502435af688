"""Pure-Python reference model of the load balancer's XDP data plane
(csrc/bpf/lb/lb.bpf.c): frame bytes and table state in, verdict and output
bytes out, with the same flow hash, the same checksum arithmetic and the
same flow/NAT state changes. The kernel tests compare the two bit for bit.

No privileges, no kernel: usable anywhere (tests/unit/test_lb_model.py).
"""

import ipaddress
import struct

import attrs

from pybpfnet._program import XdpAction
from pybpfnet.dataplanes import _ct_model as ctm
from pybpfnet.dataplanes._ct_abi import CtStatus, Table
from pybpfnet.dataplanes._lb_abi import (DEFAULT_MTU, EMPTY, FLOW_FWD, FLOW_REV, GUE_PORT,
                                         ICMP4_QUOTE, ICMP6_QUOTE, NAT_TRACKING, TTL,
                                         DropReason, Mode, Proto)

__all__ = ["flow_hash", "LbModel", "ModelResult", "ModelConfig", "ModelBackend", "FlowEntry",
           "NatCtModel", "CtPeer", "csum_fold", "csum", "csum_replace", "addr16"]

_M32 = 0xFFFFFFFF
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_ETH_IP, _ETH_IP6 = 0x0800, 0x86DD


# ---------------------------------------------------------------- hashing

def _rotl(x, r):
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix(h, k):
    k = (k * 0xCC9E2D51) & _M32
    k = _rotl(k, 15)
    k = (k * 0x1B873593) & _M32
    h ^= k
    h = _rotl(h, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _fmix(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def addr16(address):
    """An address as the data plane stores it: 16 bytes, network order,
    IPv4 in the first 4 (the rest zero). Takes an ip_address, a string or
    4/16 bytes."""
    if isinstance(address, (bytes, bytearray)):
        if len(address) == 4:
            return bytes(address) + bytes(12)
        if len(address) == 16:
            return bytes(address)
        raise ValueError("an address is 4 or 16 bytes, got %d" % len(address))
    ip = ipaddress.ip_address(address)
    return ip.packed + bytes(16 - len(ip.packed))


def flow_hash(src, dst, sport, dport, proto, *, source_only=False, seed=0):
    """The data plane's 32-bit flow hash (lb_hash.h): murmur3 mixing over
    the 16-byte addresses read as little-endian 32-bit words, then
    ``sport << 16 | dport``, then the protocol; with ``source_only`` the
    source address alone. Addresses: ip_address, string or bytes."""
    h = seed & _M32
    for w in struct.unpack("<4I", addr16(src)):
        h = _mix(h, w)
    if not source_only:
        for w in struct.unpack("<4I", addr16(dst)):
            h = _mix(h, w)
        h = _mix(h, ((sport & 0xFFFF) << 16) | (dport & 0xFFFF))
        h = _mix(h, int(proto) & 0xFF)
    return _fmix(h)


# -------------------------------------------------------------- checksums

def csum_fold(s):
    """End-around-carry fold of a sum of 16-bit words to 16 bits."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data):
    n = len(data) // 2
    return sum(struct.unpack("!%dH" % n, data[:2 * n]))


def csum(data):
    """The Internet checksum of ``data`` (even length)."""
    return ~csum_fold(_sum16(data)) & 0xFFFF


def csum_replace(check, old, new):
    """RFC 1624 eqn. 3 as lb_csum_replace does it: the checksum after the
    words ``old`` (bytes) become ``new``."""
    s = ~check & 0xFFFF
    for o, n in zip(struct.unpack("!%dH" % (len(old) // 2), old),
                    struct.unpack("!%dH" % (len(new) // 2), new)):
        s += (~o & 0xFFFF) + n
    return ~csum_fold(s) & 0xFFFF


# ---------------------------------------------------------- tracked NAT

class _AliasedTable(dict):
    """A tracker table in which, while one packet is processed, the
    packet's own key stands for the connection's key (ct_lookup's ref.key,
    which differs for a reply of a NAT'd connection)."""

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def _k(self, key):
        cur = self._owner._cur
        return cur[1] if cur is not None and key == cur[0] else key

    def get(self, key, default=None):
        return super().get(self._k(key), default)

    def pop(self, key, *default):
        return super().pop(self._k(key), *default)

    def __getitem__(self, key):
        return super().__getitem__(self._k(key))

    def __setitem__(self, key, value):
        super().__setitem__(self._k(key), value)

    def __delitem__(self, key):
        super().__delitem__(self._k(key))

    def __contains__(self, key):
        return super().__contains__(self._k(key))


class NatCtModel(ctm.CtModel):
    """The connection tracker's model (``_ct_model.CtModel``) with
    pybn_conntrack.h's PYBN_CT_NAT additions: a new connection may get a
    reply tuple other than the inverse of its original (status NAT), and
    ``alias`` maps the key of that reply tuple to the connection's key, so
    replies find it (ct_lookup) and it goes with the connection
    (ct_destroy). Times are the model's ``now`` (0 unless given)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.alias = {}
        self.tables = (_AliasedTable(self), _AliasedTable(self))
        self._cur = None
        self._nat_reply = None

    def ref(self, p):
        """ct_lookup: (key, table, entry, dir, conflict) of a ctm.Pkt; a
        stale alias (its connection gone) is deleted, as the kernel does."""
        if p.status != ctm.OK:
            return None, None, None, ctm.ORIG, False
        key = ctm.key_of(p.tuple, p.icmp_request)
        table, e = self._find(key)
        if e is None and key in self.alias:
            primary = self.alias[key]
            table, e = self._find(primary)
            if e is None:
                del self.alias[key]
            else:
                key = primary
        if e is None:
            return key, None, None, ctm.ORIG, False
        if p.proto in (1, 58):
            d = ctm.ORIG if p.icmp_request else ctm.REPLY
        elif p.tuple == e.orig:
            d = ctm.ORIG
        elif p.tuple == e.reply:
            d = ctm.REPLY
        else:
            return key, None, None, ctm.ORIG, True
        return key, table, e, d, False

    def _find(self, key):
        for table in (Table.ESTABLISHED, Table.EMBRYONIC):
            e = dict.get(self.tables[table], key)
            if e is not None:
                return table, e
        return None, None

    def process_nat(self, p, nat_reply=None, now=0):
        """ct_lookup + ct_update(p, &ref, nat_reply): a ctm.Result.
        ``nat_reply``: the reply tuple of a connection the packet creates
        (None: the inverse of its tuple)."""
        key = self.ref(p)[0]
        own = ctm.key_of(p.tuple, p.icmp_request) if p.status == ctm.OK else None
        self._cur = (own, key)
        self._nat_reply = nat_reply
        try:
            return self.process_pkt(p, now)
        finally:
            self._cur = None
            self._nat_reply = None

    def _create(self, p, key, now):
        r = super()._create(p, key, now)
        if r.created and self._nat_reply is not None:
            e = self.tables[Table.EMBRYONIC][key]
            e.reply = tuple(self._nat_reply)
            if e.reply != ctm.invert(p.tuple):
                e.status |= CtStatus.NAT
                self.alias[ctm.key_of(e.reply, 0)] = self.tables[Table.EMBRYONIC]._k(key)
        return r

    def _destroy(self, key, table, reason):
        e = self.tables[table].get(key)
        if e is not None and e.status & CtStatus.NAT:
            self.alias.pop(ctm.key_of(e.reply, 0), None)
        super()._destroy(key, table, reason)

    def clear(self):
        super().clear()
        self.alias.clear()


@attrs.frozen
class CtPeer:
    """An lb_ct_peers value: what a tracked NAT connection's entry does not
    hold."""

    backend_id: int
    service_id: int
    client_mac: bytes


# ------------------------------------------------------------------ state

@attrs.frozen
class ModelConfig:
    """lb_config: outer sources (None: none), MTU, GUE port, hash seed."""

    src4: object = None
    src6: object = None
    mtu: int = DEFAULT_MTU
    gue_port: int = GUE_PORT
    hash_seed: int = 0


@attrs.frozen
class ModelBackend:
    address: object
    mac: bytes
    port: int = 0

    @property
    def family(self):
        return ipaddress.ip_address(self.address).version

    @property
    def addr(self):
        return addr16(self.address)


@attrs.frozen
class FlowEntry:
    """An lb_flows value: ``kind`` FLOW_FWD (client -> VIP: the backend)
    or FLOW_REV (NAT reply: the VIP and port to put back)."""

    kind: int
    backend_id: int
    service_id: int
    epoch: int
    client_mac: bytes
    vip: bytes = bytes(16)
    vport: int = 0


@attrs.frozen
class ModelResult:
    """Verdict, output frame, and why it was dropped (None if it was not)."""

    verdict: XdpAction
    data: bytes
    reason: object = None


@attrs.define
class _Pkt:
    family: int = 0
    src: bytes = bytes(16)
    dst: bytes = bytes(16)
    sport: int = 0
    dport: int = 0
    proto: int = 0
    l3_len: int = 0
    tos: int = 0
    df: bool = False
    smac: bytes = b""
    dmac: bytes = b""
    length: int = 0
    tcp_flags: int = 0

    def key(self):
        return (self.src, self.dst, self.sport, self.dport, self.proto, self.family)


class _Drop(Exception):
    def __init__(self, reason):
        self.reason = reason


class LbModel:
    """The data plane as Python: the same maps as dicts (``services``:
    (addr16, port, proto, family) -> service id; ``svc``: service id ->
    (epoch, Mode, flags); ``backends``: id -> ModelBackend; ``tables``:
    service id -> (slots, generation); ``flows``: flow key -> FlowEntry;
    counters) and :meth:`run`.
    LRU eviction is not modelled (the tests stay far from the limits).

    ``nat_tracking="conntrack"``: NAT services go through ``ct`` (a
    :class:`NatCtModel`, configured by ``ct_config``, a _ct_model
    ModelConfig) and ``ct_peers`` (ct key -> :class:`CtPeer`), as
    ``lb_xdp_ct`` does."""

    def __init__(self, config=None, *, nat_tracking="lru", ct_config=None):
        if nat_tracking not in NAT_TRACKING:
            raise ValueError("nat_tracking must be one of %s, got %r"
                             % (", ".join(NAT_TRACKING), nat_tracking))
        self.nat_tracking = nat_tracking
        self.ct = NatCtModel(ct_config) if nat_tracking == "conntrack" else None
        self.ct_peers = {}
        self.config = config or ModelConfig()
        self.services = {}
        self.svc = {}
        self._epoch = 0
        self.vip_addrs = {}
        self.backends = {}
        self.tables = {}
        self.flows = {}
        self.stats = dict(packets=0, vip_packets=0, flow_misses=0, new_flows=0,
                          table_swaps=0, nat_replies=0, icmp_forwarded=0, too_big_sent=0,
                          passed=0, syn_rehash=0)
        self.drops = {r: 0 for r in DropReason}
        self.svc_counters = {}
        self.be_counters = {}

    # -- state changes (what LbDataplane does to the maps)
    def put_service(self, vip, port, proto, sid, mode, source_affinity=False, epoch=None):
        """Add or change a service (``epoch``: its new epoch, default the
        next one)."""
        key = (addr16(vip), int(port), int(Proto.parse(proto)),
               ipaddress.ip_address(vip).version)
        if key not in self.services:
            akey = (key[0], key[3])
            self.vip_addrs[akey] = self.vip_addrs.get(akey, 0) + 1
        if epoch is None:
            self._epoch += 1
            epoch = self._epoch
        self.services[key] = sid
        self.svc[sid] = (epoch, Mode.parse(mode), 1 if source_affinity else 0)

    def delete_service(self, vip, port, proto):
        key = (addr16(vip), int(port), int(Proto.parse(proto)),
               ipaddress.ip_address(vip).version)
        sid = self.services.pop(key)
        self.svc.pop(sid, None)
        self.tables.pop(sid, None)
        akey = (key[0], key[3])
        self.vip_addrs[akey] -= 1
        if not self.vip_addrs[akey]:
            del self.vip_addrs[akey]

    def purge_backend(self, bid):
        self.flows = {k: v for k, v in self.flows.items() if v.backend_id != bid}
        if self.ct is not None:
            be = self.backends.get(bid)
            for table in (Table.ESTABLISHED, Table.EMBRYONIC):
                for key, e in list(self.ct.tables[table].items()):
                    if e.status & CtStatus.NAT and be is not None \
                            and (e.reply[0], e.reply[5]) == (be.addr, be.family):
                        self.ct._destroy(key, table, ctm.Reason.DELETE)
                        self.ct_peers.pop(key, None)

    def put_backend(self, bid, address, mac, port=0):
        self.backends[bid] = ModelBackend(address, bytes(mac), port)

    def delete_backend(self, bid):
        self.backends.pop(bid, None)

    def install_table(self, sid, slots, generation):
        self.tables[sid] = (list(slots), generation)

    # -- helpers
    def _counters(self, table, key):
        return table.setdefault(key, dict(packets=0, bytes=0, new_flows=0, gen_seen=0))

    def _pass(self, data):
        self.stats["passed"] += 1
        return ModelResult(XdpAction.PASS, data)

    def _bad(self, data, p, reason):
        if (p.dst, p.family) in self.vip_addrs:
            raise _Drop(reason)
        return self._pass(data)

    def run(self, frame):
        """What the data plane does with ``frame`` (bytes): a ModelResult;
        the model's maps and counters change as the kernel's do."""
        data = bytes(frame)
        try:
            return self._run(data)
        except _Drop as d:
            self.drops[d.reason] += 1
            return ModelResult(XdpAction.DROP, data, d.reason)

    def _run(self, data):
        self.stats["packets"] += 1
        if len(data) < 14:
            return self._pass(data)
        p = _Pkt(length=len(data), dmac=data[0:6], smac=data[6:12])
        etype = struct.unpack_from("!H", data, 12)[0]
        if etype == _ETH_IP:
            return self._ipv4(data, p)
        if etype == _ETH_IP6:
            return self._ipv6(data, p)
        return self._pass(data)

    def _ipv4(self, data, p):
        if len(data) < 34 or data[14] >> 4 != 4:
            return self._pass(data)
        p.family = 4
        p.src = data[26:30] + bytes(12)
        p.dst = data[30:34] + bytes(12)
        proto = data[23]
        ihl = (data[14] & 0xF) * 4
        tot = struct.unpack_from("!H", data, 16)[0]
        avail = len(data) - 14
        frag = struct.unpack_from("!H", data, 20)[0]
        p.tos = data[15]
        p.df = bool(frag & 0x4000)
        p.l3_len = tot
        frag &= 0x3FFF
        if proto == _ICMP:
            if ihl != 20 or frag or tot > avail or tot < 56:
                return self._pass(data)
            icmp, inner = 34, 42
            if data[icmp] != 3 or data[icmp + 1] != 4 or data[inner] != 0x45 \
                    or data[inner + 9] not in (_TCP, _UDP):
                return self._pass(data)
            p.src = data[inner + 16:inner + 20] + bytes(12)
            p.dst = data[inner + 12:inner + 16] + bytes(12)
            isport, idport = struct.unpack_from("!HH", data, inner + 20)
            p.sport, p.dport, p.proto = idport, isport, data[inner + 9]
            return self._icmp_error(data, p)
        if proto not in (_TCP, _UDP):
            return self._pass(data)
        p.proto = proto
        need = 20 if proto == _TCP else 8
        if ihl < 20:
            return self._bad(data, p, DropReason.MALFORMED)
        if frag:
            return self._bad(data, p, DropReason.FRAGMENT)
        if tot > avail or tot < ihl + need:
            return self._bad(data, p, DropReason.MALFORMED)
        if ihl != 20:
            return self._bad(data, p, DropReason.UNSUPPORTED)
        p.sport, p.dport = struct.unpack_from("!HH", data, 34)
        if proto == _TCP:
            p.tcp_flags = data[34 + 13]
        return self._l4(data, p)

    def _ipv6(self, data, p):
        if len(data) < 54 or data[14] >> 4 != 6:
            return self._pass(data)
        p.family = 6
        p.src = data[22:38]
        p.dst = data[38:54]
        nh = data[20]
        plen = struct.unpack_from("!H", data, 18)[0]
        avail = len(data) - 14
        p.tos = ((data[14] << 4) | (data[15] >> 4)) & 0xFF
        p.df = True
        p.l3_len = 40 + plen
        if nh == _ICMP6:
            if 40 + plen > avail or plen < 56:
                return self._pass(data)
            icmp, inner = 54, 62
            if data[icmp] != 2 or data[icmp + 1] != 0 or data[inner] >> 4 != 6 \
                    or data[inner + 6] not in (_TCP, _UDP):
                return self._pass(data)
            p.src = data[inner + 24:inner + 40]
            p.dst = data[inner + 8:inner + 24]
            isport, idport = struct.unpack_from("!HH", data, inner + 40)
            p.sport, p.dport, p.proto = idport, isport, data[inner + 6]
            return self._icmp_error(data, p)
        if nh == 44:
            return self._bad(data, p, DropReason.FRAGMENT)
        if nh in (0, 43, 60):
            return self._bad(data, p, DropReason.UNSUPPORTED)
        if nh not in (_TCP, _UDP):
            return self._pass(data)
        p.proto = nh
        need = 20 if nh == _TCP else 8
        if 40 + plen > avail or plen < need:
            return self._bad(data, p, DropReason.MALFORMED)
        p.sport, p.dport = struct.unpack_from("!HH", data, 54)
        if nh == _TCP:
            p.tcp_flags = data[54 + 13]
        return self._l4(data, p)

    def _service(self, p):
        """(sid, epoch, mode, flags) the packet's destination names, or None."""
        sid = self.services.get((p.dst, p.dport, p.proto, p.family))
        if sid is None or sid not in self.svc:
            return None
        return (sid,) + self.svc[sid]

    def _flow_service(self, f):
        """((sid, epoch, mode, flags), backend or None) of a valid flow entry,
        or (None, None)."""
        svc = self.svc.get(f.service_id)
        if svc is None or svc[0] != f.epoch:
            return None, None
        return (f.service_id,) + svc, self.backends.get(f.backend_id)

    def _table_pick(self, p, sid, flags, sc):
        """(backend id, ModelBackend or None)"""
        if sid not in self.tables:
            return None, None
        slots, gen = self.tables[sid]
        if not slots:
            return None, None
        if sc is not None and sc["gen_seen"] != gen:
            sc["gen_seen"] = gen
            self.stats["table_swaps"] += 1
        h = flow_hash(p.src, p.dst, p.sport, p.dport, p.proto,
                      source_only=bool(flags & 1), seed=self.config.hash_seed)
        bid = slots[h % len(slots)]
        if bid == EMPTY or bid < 0:
            return None, None
        return bid, self.backends.get(bid)

    def _family_ok(self, mode, be, p):
        if mode == Mode.NAT:
            return be.family == p.family
        if mode in (Mode.IPIP, Mode.GUE):
            return (self.config.src4 if be.family == 4 else self.config.src6) is not None
        return True

    @staticmethod
    def _is_syn(p):
        return p.proto == _TCP and p.tcp_flags & 0x12 == 0x02

    def _l4(self, data, p):
        f = self.flows.get(p.key())
        svc = be = old_be = None
        if f is not None:
            if f.kind == FLOW_REV:
                out = self._nat(data, p, False, f.vip, f.vport)
                out = f.client_mac + p.dmac + out[12:]
                self.stats["nat_replies"] += 1
                return ModelResult(XdpAction.TX, out)
            svc, be = self._flow_service(f)
            if svc is not None and be is not None and self._is_syn(p):
                # a new connection reusing the 5-tuple: hashed again
                self.stats["syn_rehash"] += 1
                old_be, be = be, None
        if svc is None:
            be = None
            svc = self._service(p)
            if self.ct is not None and (svc[2] == Mode.NAT if svc is not None
                                        else self._from_backend(p)):
                return self._ct_nat(data, p)
            if svc is None:
                return self._pass(data)
        sid, epoch, mode, flags = svc
        bid = f.backend_id if be is not None else None
        self.stats["vip_packets"] += 1
        sc = self._counters(self.svc_counters, sid)
        sc["packets"] += 1
        sc["bytes"] += p.length
        fresh = be is None
        if fresh:
            self.stats["flow_misses"] += 1
            bid, be = self._table_pick(p, sid, flags, sc)
            if be is None:
                raise _Drop(DropReason.NO_BACKEND)
        if not self._family_ok(mode, be, p):
            raise _Drop(DropReason.FAMILY)
        gue = mode == Mode.GUE
        if mode in (Mode.IPIP, Mode.GUE):
            over = (20 if be.family == 4 else 40) + (8 if gue else 0)
            if p.l3_len + over > self.config.mtu:
                if p.family == 4 and not p.df:
                    raise _Drop(DropReason.TOO_BIG)
                self.stats["too_big_sent"] += 1
                return ModelResult(XdpAction.TX,
                                   self._too_big(data, p, self.config.mtu - over))
        bc = self._counters(self.be_counters, bid)
        if fresh:
            self.flows[p.key()] = FlowEntry(FLOW_FWD, bid, sid, epoch, p.smac)
            if mode == Mode.NAT and old_be is not None:
                self.flows.pop((old_be.addr, p.src, old_be.port or p.dport, p.sport, p.proto,
                                p.family), None)
            if mode == Mode.NAT:
                rk = (be.addr, p.src, be.port or p.dport, p.sport, p.proto, p.family)
                self.flows[rk] = FlowEntry(FLOW_REV, bid, sid, epoch, p.smac, p.dst, p.dport)
            self.stats["new_flows"] += 1
            sc["new_flows"] += 1
            bc["new_flows"] += 1
        bc["packets"] += 1
        bc["bytes"] += p.length
        if mode == Mode.L2:
            out = be.mac + p.dmac + data[12:]
        elif mode == Mode.NAT:
            out = self._nat(data, p, True, be.addr, be.port or p.dport)
            out = be.mac + p.dmac + out[12:]
        else:
            out = self._encap(data, p, be, gue)
        return ModelResult(XdpAction.TX, out)

    def _from_backend(self, p):
        """lb_from_backend: is the source a backend's address (lb_be_addrs)?"""
        return any(b.addr == p.src and b.family == p.family for b in self.backends.values())

    def _ct_nat(self, data, p):
        """lb_ct: a packet without an lb_flows entry that is a NAT
        service's or maybe the tracker's."""
        cp = ctm.parse(data)
        key, _, e, d, _ = self.ct.ref(cp)
        if e is not None and d == ctm.REPLY:
            if not e.status & CtStatus.NAT:
                return self._pass(data)
            peer = self.ct_peers.get(key)
            if peer is None:
                raise _Drop(DropReason.INVALID)
            out = ctm.invert(e.orig)
            r = self.ct.process_nat(cp)
            if r.verdict == ctm.Verdict.INVALID:
                raise _Drop(DropReason.INVALID)
            res = self._nat(data, p, False, out[0], out[2])
            self.stats["nat_replies"] += 1
            return ModelResult(XdpAction.TX, peer.client_mac + p.dmac + res[12:])
        svc = self._service(p)
        if svc is None or svc[2] != Mode.NAT:
            return self._pass(data)
        sid, _, _, flags = svc
        self.stats["vip_packets"] += 1
        sc = self._counters(self.svc_counters, sid)
        sc["packets"] += 1
        sc["bytes"] += p.length
        peer = out = None
        if e is not None:
            if not e.status & CtStatus.NAT:
                raise _Drop(DropReason.INVALID)
            peer = self.ct_peers.get(key)
            if peer is None:
                raise _Drop(DropReason.INVALID)
            out = ctm.invert(e.reply)
        pick = e is None or self._is_syn(p)
        reply = None
        if pick:
            self.stats["flow_misses"] += 1
            nbid, nbe = self._table_pick(p, sid, flags, sc)
            if nbe is None:
                raise _Drop(DropReason.NO_BACKEND)
            if not self._family_ok(Mode.NAT, nbe, p):
                raise _Drop(DropReason.FAMILY)
            reply = (nbe.addr, p.src, nbe.port or p.dport, p.sport, p.proto, p.family)
        r = self.ct.process_nat(cp, reply)
        if r.verdict == ctm.Verdict.INVALID:
            raise _Drop(DropReason.INVALID)
        if r.created:
            if e is not None:
                self.stats["syn_rehash"] += 1
            be, bid = nbe, nbid
            self.ct_peers[key] = CtPeer(bid, sid, p.smac)
            bc = self._counters(self.be_counters, bid)
            self.stats["new_flows"] += 1
            sc["new_flows"] += 1
            bc["new_flows"] += 1
            out = ctm.invert(reply)
        elif e is not None:
            bid = peer.backend_id
            be = self.backends.get(bid)
            if be is None:
                raise _Drop(DropReason.NO_BACKEND)
            bc = self._counters(self.be_counters, bid)
        else:
            raise _Drop(DropReason.INVALID)
        bc["packets"] += 1
        bc["bytes"] += p.length
        res = self._nat(data, p, True, out[1], out[3])
        return ModelResult(XdpAction.TX, be.mac + p.dmac + res[12:])

    def _ct_backend(self, p):
        """lb_ct_backend: the backend of the tracked connection an ICMP
        error quotes, or None."""
        cp = ctm.Pkt(status=ctm.OK, src=p.src, dst=p.dst, sport=p.sport, dport=p.dport,
                     proto=p.proto, family=p.family)
        key, _, e, d, _ = self.ct.ref(cp)
        if e is None or d != ctm.ORIG:
            return None
        peer = self.ct_peers.get(key)
        if peer is None:
            return None
        return self.backends.get(peer.backend_id)

    def _icmp_error(self, data, p):
        svc = self._service(p)
        if svc is None:
            return self._pass(data)
        sid, _, mode, flags = svc
        be = None
        if self.ct is not None and mode == Mode.NAT:
            be = self._ct_backend(p)
        else:
            f = self.flows.get(p.key())
            if f is not None and f.kind == FLOW_FWD and f.service_id == sid:
                _, be = self._flow_service(f)
        if be is None:
            _, be = self._table_pick(p, sid, flags, None)
        if be is None:
            raise _Drop(DropReason.NO_BACKEND)
        if not self._family_ok(mode, be, p):
            raise _Drop(DropReason.FAMILY)
        if mode == Mode.L2:
            out = be.mac + p.dmac + data[12:]
        elif mode == Mode.NAT:
            out = be.mac + p.dmac + self._icmp_nat(data, p, be)[12:]
        else:
            out = self._encap(data, p, be, mode == Mode.GUE)
        self.stats["icmp_forwarded"] += 1
        return ModelResult(XdpAction.TX, out)

    # -- packet surgery
    def _nat(self, data, p, dst_side, addr, port):
        out = bytearray(data)
        l3 = 14
        l4 = l3 + (20 if p.family == 4 else 40)
        coff = l4 + (6 if p.proto == _UDP else 16)
        check = struct.unpack_from("!H", out, coff)[0]
        has = p.proto != _UDP or check != 0
        n = 4 if p.family == 4 else 16
        if p.family == 4:
            aoff = l3 + (16 if dst_side else 12)
            old = bytes(out[aoff:aoff + 4])
            ipc = struct.unpack_from("!H", out, l3 + 10)[0]
            struct.pack_into("!H", out, l3 + 10, csum_replace(ipc, old, addr[:4]))
        else:
            aoff = l3 + (24 if dst_side else 8)
            old = bytes(out[aoff:aoff + 16])
        if has:
            check = csum_replace(check, old, addr[:n])
        out[aoff:aoff + n] = addr[:n]
        poff = l4 + (2 if dst_side else 0)
        oldp = bytes(out[poff:poff + 2])
        newp = struct.pack("!H", port)
        if oldp != newp:
            if has:
                check = csum_replace(check, oldp, newp)
            out[poff:poff + 2] = newp
        if p.proto == _UDP and has and check == 0:
            check = 0xFFFF
        if has:
            struct.pack_into("!H", out, coff, check)
        return bytes(out)

    def _icmp_nat(self, data, p, be):
        """An ICMP error about a NAT flow, translated for the backend."""
        out = bytearray(data)
        nport = struct.pack("!H", be.port or p.dport)

        def get16(off):
            return struct.unpack_from("!H", out, off)[0]

        def put16(off, v):
            struct.pack_into("!H", out, off, v)

        if p.family == 4:
            icmp, inner = 34, 42
            put16(24, csum_replace(get16(24), bytes(out[30:34]), be.addr[:4]))
            out[30:34] = be.addr[:4]
            old_inner = bytes(out[inner + 10:inner + 12])
            put16(inner + 10, csum_replace(get16(inner + 10), bytes(out[inner + 12:inner + 16]),
                                           be.addr[:4]))
            c = csum_replace(get16(icmp + 2), bytes(out[inner + 12:inner + 16]), be.addr[:4])
            c = csum_replace(c, old_inner, bytes(out[inner + 10:inner + 12]))
            out[inner + 12:inner + 16] = be.addr[:4]
            ports = inner + 20
        else:
            icmp, inner = 54, 62
            c = csum_replace(get16(icmp + 2), bytes(out[38:54]), be.addr)
            out[38:54] = be.addr
            c = csum_replace(c, bytes(out[inner + 8:inner + 24]), be.addr)
            out[inner + 8:inner + 24] = be.addr
            ports = inner + 40
        if bytes(out[ports:ports + 2]) != nport:
            c = csum_replace(c, bytes(out[ports:ports + 2]), nport)
            out[ports:ports + 2] = nport
        put16(icmp + 2, c)
        return bytes(out)

    def _ip4(self, tos, tot, proto, src, dst):
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, tot, 0, 0, TTL, proto, 0,
                                    src[:4], dst[:4]))
        struct.pack_into("!H", hdr, 10, csum(bytes(hdr)))
        return bytes(hdr)

    def _ip6(self, tc, plen, nh, src, dst):
        return struct.pack("!IHBB16s16s", 0x60000000 | (tc << 20), plen, nh, TTL, src, dst)

    def _encap(self, data, p, be, gue):
        inner = 4 if p.family == 4 else 41
        ul = 8 if gue else 0
        if be.family == 4:
            eth = be.mac + p.dmac + struct.pack("!H", _ETH_IP)
            hdr = self._ip4(p.tos, 20 + ul + p.l3_len, _UDP if gue else inner,
                            addr16(self.config.src4), be.addr)
        else:
            eth = be.mac + p.dmac + struct.pack("!H", _ETH_IP6)
            hdr = self._ip6(p.tos, ul + p.l3_len, _UDP if gue else inner,
                            addr16(self.config.src6), be.addr)
        if gue:
            hdr += struct.pack("!HHHH", p.sport, self.config.gue_port, 8 + p.l3_len, 0)
        return eth + hdr + data[14:]

    def _too_big(self, data, p, mtu):
        if p.family == 4:
            quote = data[14:14 + ICMP4_QUOTE]
            icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, mtu & 0xFFFF) + quote)
            struct.pack_into("!H", icmp, 2, csum(bytes(icmp)))
            ip = self._ip4(0, 20 + len(icmp), _ICMP, p.dst, p.src)
            return p.smac + p.dmac + struct.pack("!H", _ETH_IP) + ip + bytes(icmp)
        quote = data[14:14 + ICMP6_QUOTE]
        icmp = bytearray(struct.pack("!BBHI", 2, 0, 0, mtu & 0xFFFFFFFF) + quote)
        pseudo = p.dst + p.src + struct.pack("!IxxxB", len(icmp), _ICMP6)
        struct.pack_into("!H", icmp, 2, csum(pseudo + bytes(icmp)))
        ip = self._ip6(0, len(icmp), _ICMP6, p.dst, p.src)
        return p.smac + p.dmac + struct.pack("!H", _ETH_IP6) + ip + bytes(icmp)
