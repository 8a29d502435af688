"""Hypothesis strategies shared by the test suite (one place, per STYLE.md).

Sections: packets (``pybpfnet.packet``). Add new sections below the last one.
"""

import ipaddress

from hypothesis import strategies as st

from pybpfnet import packet as pk

# ===========================================================================
# packets
#
# ``packets()`` draws "canonical" stacks: every length/checksum/protocol field
# is auto, no fragment flags, no trailing EOL/padding options, UDP payloads
# never on the GUE port unless GUE follows. For those,
# ``parse(bytes(p)) == p.complete()`` holds exactly.

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

macs = st.binary(min_size=6, max_size=6).map(pk.mac)
ipv4_addresses = st.builds(ipaddress.IPv4Address, u32)
ipv6_addresses = st.builds(ipaddress.IPv6Address, st.integers(0, (1 << 128) - 1))
payloads = st.binary(max_size=64)

# -- options ---------------------------------------------------------------

_ipv4_option_items = st.one_of(
    st.just(pk.NOP()),
    st.builds(pk.RouterAlert, u16),
    st.builds(pk.RecordRoute, addresses=st.lists(ipv4_addresses, max_size=3), pointer=u8),
    st.builds(pk.LooseSourceRoute, addresses=st.lists(ipv4_addresses, max_size=2),
              pointer=u8),
    st.builds(pk.StrictSourceRoute, addresses=st.lists(ipv4_addresses, max_size=2),
              pointer=u8),
    # generic options whose numbers neither our classes nor scapy's decode
    # (scapy would re-encode its own timestamp, security... formats)
    st.builds(pk.IPv4Option, st.sampled_from([0x05, 0x0D, 0x1E, 0x4F, 0x8A, 0x99, 0x9E]),
              st.binary(max_size=6)),
)


def _fits(limit):
    return lambda opts: len(pk._options.encode_options(opts)) <= limit


def _one_source_route(opts):
    return sum(type(o) in (pk.LooseSourceRoute, pk.StrictSourceRoute) for o in opts) <= 1


ipv4_options = st.lists(_ipv4_option_items, max_size=4).filter(_fits(40)).filter(
    _one_source_route).map(tuple)

_tcp_option_items = st.one_of(
    st.just(pk.NOP()),
    st.builds(pk.MSS, u16),
    st.builds(pk.WindowScale, u8),
    st.just(pk.SackPermitted()),
    st.builds(pk.Sack, st.lists(st.tuples(u32, u32), min_size=1, max_size=3)),
    st.builds(pk.Timestamps, u32, u32),
    # kinds scapy has no format for (it re-encodes MD5, UTO, TFO... its own way)
    st.builds(pk.TCPOption, st.sampled_from([6, 7, 9, 16, 27, 30, 253, 254]),
              st.binary(max_size=8)),
)
tcp_options = st.lists(_tcp_option_items, max_size=5).filter(_fits(40)).map(tuple)

_ipv6_option_items = st.one_of(
    st.just(pk.Pad1()),
    st.builds(pk.PadN, st.integers(0, 5)),
    # types without a special class in scapy (no alignment rules), not Pad1/PadN
    st.builds(pk.IPv6Option, st.sampled_from([0x07, 0x1E, 0x3E, 0x8B, 0xEE]),
              st.binary(max_size=10)),
)


def _no_trailing_pad(opts):
    return not opts or type(opts[-1]) not in (pk.Pad1, pk.PadN)


ipv6_tlv_options = st.lists(_ipv6_option_items, max_size=4).filter(_no_trailing_pad).map(
    tuple)

# -- headers -----------------------------------------------------------------

ethernets = st.builds(pk.Ethernet, dst=macs, src=macs)
dot1qs = st.builds(pk.Dot1Q, vid=st.integers(0, 0xFFF), pcp=st.integers(0, 7),
                   dei=st.integers(0, 1))
arps = st.builds(pk.ARP, op=st.sampled_from([1, 2]), hwsrc=macs, psrc=ipv4_addresses,
                 hwdst=macs, pdst=ipv4_addresses)

ipv4s = st.builds(
    pk.IPv4, src=ipv4_addresses, dst=ipv4_addresses, tos=u8, id=u16,
    flags=st.sampled_from([0, pk.IPv4Flags.DF, pk.IPv4Flags.RESERVED]), ttl=u8,
    options=st.one_of(st.just(()), ipv4_options))
ipv6s = st.builds(pk.IPv6, src=ipv6_addresses, dst=ipv6_addresses, traffic_class=u8,
                  flow_label=st.integers(0, 0xFFFFF), hop_limit=u8)

hopbyhops = st.builds(pk.IPv6HopByHop, options=ipv6_tlv_options)
destopts = st.builds(pk.IPv6DestOpts, options=ipv6_tlv_options)
routings = st.one_of(
    st.builds(pk.IPv6Routing, addresses=st.lists(ipv6_addresses, max_size=3),
              routing_type=st.sampled_from([0, 2]), segments_left=st.none() | u8,
              reserved=u32),
    st.builds(pk.IPv6Routing, addresses=st.lists(ipv6_addresses, max_size=2),
              routing_type=st.just(4), segments_left=st.just(0), reserved=u32),
)
atomic_fragments = st.builds(pk.IPv6Fragment, offset=st.just(0), more=st.just(False), id=u32,
                             reserved=u8, res=st.integers(0, 3))
ipv6_extension_chains = st.lists(st.one_of(destopts, routings, atomic_fragments),
                                 max_size=3).flatmap(
    lambda rest: st.one_of(st.just(rest), hopbyhops.map(lambda h: [h] + rest)))

tcps = st.builds(pk.TCP, sport=u16, dport=u16, seq=u32, ack=u32,
                 flags=st.integers(0, 0x1FF).map(pk.TCPFlags), window=u16, urgent=u16,
                 options=st.one_of(st.just(()), tcp_options), reserved=st.integers(0, 7))
udps = st.builds(pk.UDP, sport=u16, dport=u16.filter(lambda p: p != pk.GUE_PORT))
_echo = st.sampled_from([0, 8])
icmps = st.builds(pk.ICMP, type=st.one_of(_echo, st.sampled_from([3, 5, 11, 12])),
                  code=u8, id=u16, seq=u16)
icmpv6s = st.builds(pk.ICMPv6, type=st.one_of(st.sampled_from([128, 129]), u8), code=u8,
                    id=u16, seq=u16)
gues = st.builds(pk.GUE, flags=u16, extensions=st.binary(max_size=12).map(
    lambda b: b + bytes(-len(b) & 3)))


@st.composite
def transports(draw, family):
    """A transport stack for an IP header of ``family`` (4 or 6)."""
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "raw", "none"]))
    if kind == "tcp":
        return [draw(tcps)] + _raw(draw(payloads))
    if kind == "udp":
        return [draw(udps)] + _raw(draw(payloads))
    if kind == "icmp":
        return [draw(icmps if family == 4 else icmpv6s)] + _raw(draw(payloads))
    if kind == "raw":
        return [pk.Raw(draw(st.binary(min_size=1, max_size=64)))]
    return []


def _raw(data):
    return [pk.Raw(data)] if data else []


@st.composite
def ip_stacks(draw, depth=1, gue=True):
    """IPv4 or IPv6 (with extension headers) over a transport, IPIP or GUE."""
    family = draw(st.sampled_from([4, 6]))
    layers = [draw(ipv4s)] if family == 4 else [draw(ipv6s)] + draw(ipv6_extension_chains)
    inner = draw(st.sampled_from(["transport", "ipip", "gue0", "gue1"]) if depth
                 else st.just("transport"))
    if inner == "ipip":
        return layers + draw(ip_stacks(depth=depth - 1))
    if inner in ("gue0", "gue1") and gue:
        udp = pk.UDP(sport=draw(u16), dport=pk.GUE_PORT)
        head = [udp, draw(gues)] if inner == "gue0" else [udp]
        return layers + head + draw(ip_stacks(depth=depth - 1))
    return layers + draw(transports(family))


@st.composite
def packets(draw, gue=True, max_depth=1):
    """Canonical Ethernet packets: optional VLAN tags, then ARP or an IP stack."""
    layers = [draw(ethernets)] + draw(st.lists(dot1qs, max_size=2))
    if draw(st.integers(0, 9)) == 0:
        layers.append(draw(arps))
    else:
        layers += draw(ip_stacks(depth=draw(st.integers(0, max_depth)), gue=gue))
    return pk.Packet(layers)


# ===========================================================================
# codec strategies
#
# Type descriptions for ``pybpfnet._codec.from_description``, and for any
# codec: valid Python values (``codec_values``), the value a round trip must
# give back (``canonical``), values it must refuse (``bad_codec_values``) and
# arbitrary junk (``junk``).

import struct as _struct  # noqa: E402

from pybpfnet import _codec as _c  # noqa: E402

#: scalar and array element names of from_description
CODEC_SCALARS = ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "bool",
                 "float", "double", "int", "unsigned long", "__u16", "int64_t")
CODEC_ARRAY_ELEMS = ("char", "u8", "u16", "u32", "u64", "s16", "s32", "double")


def type_descriptions(max_leaves=8):
    """Descriptions: scalar names, arrays ('u32[3]', 'char[5]', 'u16[2][3]')
    and structs as lists of (field, description) pairs, nested."""
    scalars = st.sampled_from(CODEC_SCALARS)
    arrays = st.builds("{}[{}]".format, st.sampled_from(CODEC_ARRAY_ELEMS),
                       st.integers(1, 6)) | \
        st.builds("{}[{}][{}]".format, st.sampled_from(CODEC_ARRAY_ELEMS),
                  st.integers(1, 3), st.integers(1, 3))

    def structs(children):
        return st.lists(children, min_size=1, max_size=5).map(
            lambda ds: [("f%d" % i, d) for i, d in enumerate(ds)])
    return st.recursive(scalars | arrays, structs, max_leaves=max_leaves)


def _int_range(codec, field=None):
    if field is not None and field.bit_size:
        if getattr(codec, "signed", False):
            return -(1 << (field.bit_size - 1)), (1 << (field.bit_size - 1)) - 1
        return 0, (1 << field.bit_size) - 1
    return codec.lo, codec.hi


def codec_values(codec, field=None):
    """Valid values for ``codec`` in every accepted form: struct classes,
    dicts (some fields left out) and tuples; str or bytes for char arrays;
    tuples or lists for arrays; one-member dicts for unions."""
    c = codec
    if isinstance(c, _c.IntCodec):
        if c.is_bool:
            return st.booleans() | st.sampled_from([0, 1])
        lo, hi = _int_range(c, field)
        ints = st.integers(lo, hi) | st.sampled_from([lo, hi, 0])
        if isinstance(c, _c.EnumCodec) and c.py_type is not None and field is None:
            members = [m for m in c.py_type if lo <= m <= hi]
            if members:
                ints = ints | st.sampled_from(members)
        return ints
    if isinstance(c, _c.FloatCodec):
        return st.floats(width=32 if c.size == 4 else 64, allow_nan=False)
    if isinstance(c, _c.RawCodec):
        return st.binary(min_size=c.size, max_size=c.size)
    if isinstance(c, _c.BytesCodec):
        return st.binary(max_size=c.size) | st.text(
            st.characters(min_codepoint=1, max_codepoint=0x7FF), max_size=c.size).filter(
                lambda s: len(s.encode()) <= c.size)
    if isinstance(c, _c.ArrayCodec):
        items = st.lists(codec_values(c.elem), min_size=c.n, max_size=c.n)
        return items.map(tuple) | items
    if isinstance(c, _c.UnionCodec):
        return st.sampled_from(range(len(c.fields))).flatmap(
            lambda i: codec_values(c.fields[i].codec, c.fields[i]).map(
                lambda v: {c.field_names[i]: v}))
    if isinstance(c, _c.StructCodec):
        parts = st.tuples(*[codec_values(f.codec, f) for f in c.fields])

        def forms(t):
            return st.sampled_from([
                t, list(t), c.py_type(*t), dict(zip(c.field_names, t)),
                {n: v for n, v, f in zip(c.field_names, t, c.fields)
                 if v != canonical(f.codec, f.codec.zero())}])
        return parts.flatmap(forms)
    raise TypeError("no value strategy for %r" % codec)


def canonical(codec, value):
    """What ``codec.decode(codec.encode(value))`` must equal."""
    c = codec
    if isinstance(c, _c.IntCodec):
        return bool(value) if c.is_bool else int(value)
    if isinstance(c, _c.FloatCodec):
        return _struct.unpack("=" + c.fmt, _struct.pack("=" + c.fmt, value))[0]
    if isinstance(c, _c.BytesCodec):
        b = value.encode() if isinstance(value, str) else bytes(value)
        return b.ljust(c.size, b"\0")
    if isinstance(c, _c.ArrayCodec):
        return tuple(canonical(c.elem, v) for v in value)
    if isinstance(c, _c.UnionCodec):
        if isinstance(value, dict):
            (name, v), = value.items()
            f = c.fields[c.field_names.index(name)]
            raw = f.codec.encode(v).ljust(c.size, b"\0")
        else:
            raw = c.encode(value)
        return c.decode(raw)
    if isinstance(c, _c.StructCodec):
        if isinstance(value, dict):
            t = [value.get(n, f.codec.zero()) for n, f in zip(c.field_names, c.fields)]
        else:
            t = list(value)
        return c.py_type(*[canonical(f.codec, v) for f, v in zip(c.fields, t)])
    raise TypeError("no canonical form for %r" % codec)


def junk():
    """Values of every Python shape, mostly wrong for any C type."""
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
        st.floats(), st.text(max_size=20), st.binary(max_size=40),
        st.lists(st.integers(-300, 300), max_size=6).map(tuple),
        st.dictionaries(st.text(max_size=5), st.integers(-300, 300), max_size=4),
        st.just(object()), st.just(1j), st.just(b"\0" * 4096))


def bad_codec_values(codec, field=None):
    """Values ``codec.encode`` must refuse with a CodecError: out of range,
    wrong type, too long, wrong length, unknown field, one bad field."""
    c = codec
    wrong_type = st.sampled_from([None, "1", 1.5, object(), [1], {"x": 1}, 1j])
    if isinstance(c, _c.IntCodec):
        lo, hi = _int_range(c, field)
        out = st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1) | \
            st.sampled_from([lo - 1, hi + 1])
        if c.is_bool:
            return out | st.sampled_from([None, "yes", 0.5, object(), [1]])
        return out | wrong_type | st.floats()
    if isinstance(c, _c.FloatCodec):
        big = st.sampled_from([10 ** 400, -10 ** 400]) if c.size == 8 else \
            st.sampled_from([1e39, -1e300, 10 ** 400])
        return big | st.sampled_from([None, "1.0", object(), [1.0], b"\0" * c.size])
    if isinstance(c, _c.RawCodec):
        return st.binary().filter(lambda b: len(b) != c.size) | st.sampled_from(
            [None, 5, [0] * c.size])
    if isinstance(c, _c.BytesCodec):
        return st.binary(min_size=c.size + 1, max_size=c.size + 20) | \
            st.text(min_size=c.size + 1, max_size=c.size + 20) | \
            st.sampled_from([None, 5, 1.5, [1, 2], (b"a",), {"a": 1}])
    if isinstance(c, _c.ArrayCodec):
        good = st.lists(codec_values(c.elem), min_size=c.n, max_size=c.n)
        one_bad = st.tuples(good, st.integers(0, c.n - 1), bad_codec_values(c.elem)).map(
            lambda t: t[0][:t[1]] + [t[2]] + t[0][t[1] + 1:])
        wrong_len = st.integers(0, c.n + 3).filter(lambda n: n != c.n).flatmap(
            lambda n: st.lists(codec_values(c.elem), min_size=n, max_size=n))
        return one_bad | wrong_len | st.sampled_from(
            [None, 3, "x" * c.n, b"\1" * c.n, dict.fromkeys(range(c.n), 0),
             set(range(c.n))])
    if isinstance(c, _c.UnionCodec):
        return st.sampled_from([None, 5, {}, {"no_such_member": 1},
                                dict.fromkeys(c.field_names, 0) if len(c.fields) > 1
                                else {"zz": 0}]) | \
            st.sampled_from(range(len(c.fields))).flatmap(
                lambda i: bad_codec_values(c.fields[i].codec, c.fields[i]).map(
                    lambda v: {c.field_names[i]: v}))
    if isinstance(c, _c.StructCodec):
        n = len(c.fields)
        one_bad = st.sampled_from(range(n)).flatmap(
            lambda i: bad_codec_values(c.fields[i].codec, c.fields[i]).map(
                lambda v: {c.field_names[i]: v}))
        return one_bad | st.sampled_from([
            None, 5, "x", {"no_such_field": 1}, tuple(range(n + 1)), [0] * (n + 2)])
    raise TypeError("no bad-value strategy for %r" % codec)


# ===========================================================================
# firewall strategies
#
# Rules and packets drawn from small pools of addresses and ports, so that
# rules and packets meet; packets include the hostile variants the engine
# must see through (VLAN tags, IPv4 options, IPv6 extension headers,
# fragments) and broken ones (truncated, corrupted, padded). ``fw_packets``
# gives bytes of at least 14 (an Ethernet header: test_run's minimum).

from pybpfnet.dataplanes import firewall as _fw  # noqa: E402

FW_V4 = tuple(ipaddress.IPv4Address(a) for a in (
    "10.0.0.1", "10.0.0.2", "10.1.2.3", "192.0.2.1", "198.51.100.7", "0.0.0.0",
    "255.255.255.255"))
FW_V6 = tuple(ipaddress.IPv6Address(a) for a in (
    "2001:db8::1", "2001:db8::2", "2001:db8:1::5", "fe80::1", "::", "ffff::1"))
FW_PORTS = (0, 1, 22, 53, 80, 443, 1023, 1024, 5000, 65535)
FW_PROTOCOLS = (None, "tcp", "udp", "icmp", "icmpv6", ("tcp", "udp"), "sctp", "udplite",
                47, 50, 0, 255)


def fw_addresses(family):
    pool = FW_V4 if family == 4 else FW_V6
    return st.sampled_from(pool) | (ipv4_addresses if family == 4 else ipv6_addresses)


def fw_prefixes(family):
    bits = 32 if family == 4 else 128
    lengths = st.sampled_from([0, 8, 16, 24, bits // 2, bits - 1, bits]) | st.integers(0, bits)
    return st.builds(lambda a, n: ipaddress.ip_network("%s/%d" % (a, n), strict=False),
                     fw_addresses(family), lengths)


fw_ports = st.sampled_from(FW_PORTS) | u16
fw_port_ranges = fw_ports | st.tuples(fw_ports, fw_ports).map(lambda t: tuple(sorted(t)))


@st.composite
def fw_rules(draw, actions=("pass", "drop", "count", "rate_limit")):
    """A valid firewall Rule; rate limits are 1 pps with bursts of 1-3
    (deterministic within a test example shorter than a second)."""
    action = draw(st.sampled_from(actions))
    if action == "rate_limit":
        action = _fw.rate_limit(1, draw(st.integers(1, 3)))
    family = draw(st.sampled_from([None, 4, 6]))
    kw = {}
    if family is not None:
        for field in draw(st.sampled_from([("src",), ("dst",), ("src", "dst")])):
            kw[field] = draw(fw_prefixes(family))
    proto = draw(st.sampled_from(FW_PROTOCOLS))
    if family == 4 and proto == "icmpv6":
        proto = "icmp"
    if family == 6 and proto == "icmp":
        proto = "icmpv6"
    if proto is not None:
        kw["protocol"] = proto
    protos = {proto} if isinstance(proto, str) else set(proto) if isinstance(proto, tuple) \
        else set()
    if protos and protos <= {"tcp", "udp", "sctp", "udplite"}:
        for field in ("sport", "dport"):
            if draw(st.booleans()):
                kw[field] = draw(fw_port_ranges)
    if proto == "tcp" and draw(st.booleans()):
        mask = draw(st.integers(1, 255))
        kw["tcp_flags"] = (draw(st.integers(0, 255)) & mask, mask)
    if proto in ("icmp", "icmpv6") and draw(st.booleans()):
        kw["icmp_type"] = draw(st.sampled_from([0, 3, 8, 11, 128, 129]) | u8)
    kw["direction"] = draw(st.sampled_from([None, None, "ingress", "egress"]))
    return _fw.Rule(action, **kw)


def fw_rulesets(max_rules=10, actions=("pass", "drop", "count", "rate_limit")):
    """RuleSets of up to ``max_rules`` rules with any policies."""
    return st.builds(
        _fw.RuleSet, st.lists(fw_rules(actions), max_size=max_rules),
        default=st.sampled_from(["pass", "drop"]),
        fragments=st.sampled_from(["addresses", "addresses", "drop", "pass"]),
        malformed=st.sampled_from(["drop", "pass"]),
        non_ip=st.sampled_from(["pass", "drop"]))


def _with_ah(ip6, units):
    """IPv6 header bytes + an Authentication Header ((units + 2) * 4 bytes,
    RFC 4302) before what followed the fixed header."""
    size = (units + 2) * 4
    ah = bytes([ip6[6], units, 0, 0]) + bytes(range(1, size - 3))
    out = bytearray(ip6[:40] + ah + ip6[40:])
    out[6] = 51
    out[4:6] = (int.from_bytes(ip6[4:6], "big") + size).to_bytes(2, "big")
    return bytes(out)


def _mutate_ip_field(draw, data):
    """Overwrite one structural field of the first IP header (version/IHL,
    lengths, fragment offset, protocol) with a boundary value."""
    off = 14
    while off + 4 <= len(data) and data[off - 2:off] in (b"\x81\x00", b"\x88\xa8",
                                                         b"\x91\x00"):
        off += 4
    size = len(data) - off
    pools = {
        b"\x08\x00": [(0, 1, [0x40, 0x44, 0x45, 0x46, 0x4F, 0x55, 0x65]),
                      (2, 2, [0, 1, 19, 20, size - 1, size, size + 1, 0xFFFF]),
                      (6, 2, [0x2000, 0x1000, 0x0001, 0x4000, 0x3FFF, 0x1FFF]),
                      (9, 1, [6, 17, 1, 58, 132, 136, 51, 0])],
        b"\x86\xdd": [(0, 1, [0x60, 0x40, 0x70, 0x6F]),
                      (4, 2, [0, 1, size - 41, size - 40, size - 39, 0xFFFF]),
                      (6, 1, [0, 43, 44, 51, 60, 59, 6, 17, 58, 135])],
    }.get(bytes(data[off - 2:off]))
    if not pools:
        return
    rel, width, values = draw(st.sampled_from(pools))
    if off + rel + width > len(data):
        return
    top = (1 << (8 * width)) - 1
    value = draw(st.sampled_from([v for v in values if 0 <= v <= top]) |
                 st.integers(0, top))
    data[off + rel:off + rel + width] = value.to_bytes(width, "big")


def _fw_ip(draw, family, proto=None):
    src, dst = draw(fw_addresses(family)), draw(fw_addresses(family))
    if family == 4:
        return pk.IPv4(src=src, dst=dst, proto=proto,
                       flags=draw(st.sampled_from([0, pk.IPv4Flags.DF])))
    return pk.IPv6(src=src, dst=dst, next_header=proto)


@st.composite
def fw_packets(draw):
    """Bytes of a frame for the firewall: mostly IP with transport headers
    from the pools, sometimes anything ``packets()`` makes, often hostile
    or broken."""
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "sctp", "other", "generic"]))
    if kind == "generic":
        p = draw(packets(gue=False, max_depth=0))
    else:
        family = draw(st.sampled_from([4, 6]))
        eth = pk.Ethernet(dst=draw(macs), src=draw(macs))
        payload = pk.Raw(draw(st.binary(min_size=1, max_size=16)))
        if kind == "tcp":
            l4 = [pk.TCP(sport=draw(fw_ports), dport=draw(fw_ports),
                         flags=pk.TCPFlags(draw(st.integers(0, 255)))), payload]
            ip = _fw_ip(draw, family)
        elif kind == "udp":
            l4 = [pk.UDP(sport=draw(fw_ports), dport=draw(fw_ports)), payload]
            ip = _fw_ip(draw, family, draw(st.sampled_from([None, None, 136])))
        elif kind == "icmp":
            t = draw(st.sampled_from([0, 3, 8, 11, 128, 129]) | u8)
            l4 = [(pk.ICMP if family == 4 else pk.ICMPv6)(type=t, code=draw(u8)), payload]
            ip = _fw_ip(draw, family)
        elif kind == "sctp":
            ports = draw(fw_ports).to_bytes(2, "big") + draw(fw_ports).to_bytes(2, "big")
            l4 = [pk.Raw(ports + bytes(8))]
            ip = _fw_ip(draw, family, 132)
        else:
            proto = draw(st.sampled_from([47, 50, 59, 4, 41, 1, 58, 136]) | u8)
            l4 = [payload]
            ip = _fw_ip(draw, family, proto)
        p = pk.Packet([eth, ip] + l4)
        if family == 4 and draw(st.sampled_from([False, False, True])):
            p = pk.with_ipv4_options(p, draw(ipv4_options))
        if family == 6 and draw(st.sampled_from([False, True])):
            chain = draw(st.one_of(
                ipv6_extension_chains,
                st.integers(7, 10).map(lambda n: [pk.IPv6DestOpts()] * n),
                st.tuples(destopts, hopbyhops).map(list)))
            p = pk.with_ipv6_extensions(p, chain)
        frag = draw(st.sampled_from(["whole", "whole", "later", "later", "first"]))
        if frag != "whole":
            frags = pk.fragment(p, [draw(st.sampled_from([24, 16, 8])), 1024])
            p = frags[-1 if frag == "later" else 0]
        if family == 6 and draw(st.sampled_from([False, False, True])):
            p = pk.Packet((pk.Ethernet(dst=eth.dst, src=eth.src, type=0x86DD),
                           pk.Raw(_with_ah(bytes(p)[14:], draw(st.integers(0, 4))))))
        tags = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
        if tags:
            p = pk.with_vlan(p, *draw(st.lists(st.integers(0, 4095), min_size=tags,
                                                max_size=tags)))
    data = bytearray(bytes(p))
    mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "corrupt", "pad",
                                     "field", "field"]))
    if mutation == "field":
        _mutate_ip_field(draw, data)
    elif mutation == "truncate":
        del data[draw(st.integers(14, max(14, len(data)))):]
    elif mutation == "corrupt":
        for _ in range(draw(st.integers(1, 2))):
            data[draw(st.integers(12, len(data) - 1))] = draw(u8)
    elif mutation == "pad":
        data += bytes(draw(st.integers(1, 40)))
    if len(data) < 14:
        data += bytes(14 - len(data))
    return bytes(data)


# ===========================================================================
# maglev strategies
#
# Backend sets for pybpfnet.Maglev: names are str (any Unicode that UTF-8
# can encode, NUL included) or bytes, unique by their UTF-8 bytes;
# ``maglev_sizes`` are primes (small enough for the pure-Python reference).

_MAGLEV_PRIMES = [p for p in range(2, 6000)
                  if all(p % d for d in range(2, int(p ** 0.5) + 1))]

maglev_sizes = st.sampled_from([p for p in _MAGLEV_PRIMES if p >= 3])


def _maglev_key(name):
    return name.encode() if isinstance(name, str) else name


maglev_names = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.text("abcdef0123456789.:-", min_size=1, max_size=16),
    st.binary(min_size=1, max_size=12),
    st.builds(lambda a, b: "10.%d.%d.1:80" % (a, b), u8, u8),
)


def maglev_backends(min_size=0, max_size=40):
    """A list of distinct backend names."""
    return st.lists(maglev_names, min_size=min_size, max_size=max_size,
                    unique_by=_maglev_key)


def maglev_weighted(min_size=0, max_size=40, max_weight=20):
    """A dict name -> weight (0..max_weight, zero now and then)."""
    return maglev_backends(min_size, max_size).flatmap(
        lambda names: st.lists(st.one_of(st.integers(0, max_weight), st.just(0)),
                               min_size=len(names), max_size=len(names)).map(
            lambda ws: dict(zip(names, ws))))


# ===========================================================================
# capture filter expressions
#
# Addresses, networks and ports come from the pools of pybpfnet._strategies
# so that filters and generated packets meet.

from pybpfnet._strategies import DEFAULT_PORTS, DEFAULT_V4, DEFAULT_V6  # noqa: E402

NETS = ("10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/16", "192.168.0.0/16", "0.0.0.0/0",
        "fd00::/64", "fd00::/16", "2001:db8::/32", "fe80::/10", "::/0")
PROTOS = (0, 1, 6, 17, 43, 44, 58, 132)


def primitives(ports=DEFAULT_PORTS):
    """One primitive as text, e.g. ``src host 10.0.0.1`` or ``udp dst port 53``."""
    qual = st.sampled_from(("", "src ", "dst "))
    addr = st.sampled_from(DEFAULT_V4 + DEFAULT_V6)
    port = st.sampled_from(ports)
    return st.one_of(
        st.builds("{}host {}".format, qual, addr),
        st.builds("{}{}".format, st.sampled_from(("src ", "dst ")), addr),
        st.builds("{}net {}".format, qual, st.sampled_from(NETS)),
        st.builds("{}port {}".format, qual, port),
        st.sampled_from(("tcp", "udp", "sctp", "icmp", "icmp6", "ip", "ip6")),
        st.builds("{} {}port {}".format, st.sampled_from(("tcp", "udp")), qual, port),
        st.builds("{}proto {}".format, st.sampled_from(("", "ip ", "ip6 ")),
                  st.sampled_from(PROTOS)),
    )


def filter_expressions(max_leaves=6):
    """Filter expressions combining primitives with and/or/not (also as
    &&, ||, !) and parentheses; some chains are left unparenthesized so
    the left-to-right rule matters."""
    def extend(children):
        op = st.sampled_from((" and ", " or ", " && ", " || "))
        return st.one_of(
            st.builds("not {}".format, children),
            st.builds("!{}".format, children),
            st.builds("({})".format, children),
            st.builds("{}{}{}".format, children, op, children),
            st.builds("({}){}({})".format, children, op, children),
        )
    return st.recursive(primitives(), extend, max_leaves=max_leaves)
