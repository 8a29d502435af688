"""Hypothesis strategies for network packets (used by pybpfnet.testing).

Imported lazily: hypothesis is a test dependency, not a runtime one.
Frames are drawn from small address and port pools so that generated rule
sets and packets actually meet, and include the hostile shapes a data plane
must survive: VLAN tags (one or two), IPv4 options, IPv6 extension-header
chains, first and non-first fragments, truncated frames and random bytes.
"""


from hypothesis import strategies as st

from pybpfnet import packet as pk

__all__ = ["packets", "well_formed_packets", "DEFAULT_V4", "DEFAULT_V6", "DEFAULT_PORTS"]

DEFAULT_V4 = ("10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.1.1", "172.16.0.9")
DEFAULT_V6 = ("fd00::1", "fd00::2", "2001:db8::7", "fe80::1")
DEFAULT_PORTS = (22, 53, 80, 443, 8080, 1024, 40000, 65535)


def _addr_pairs(v4, v6, ipv4, ipv6):
    pools = []
    if ipv4:
        pools.append(st.tuples(st.sampled_from(v4), st.sampled_from(v4)))
    if ipv6:
        pools.append(st.tuples(st.sampled_from(v6), st.sampled_from(v6)))
    return st.one_of(pools)


def _ports(ports):
    return st.one_of(st.sampled_from(ports), st.integers(0, 0xFFFF))


@st.composite
def well_formed_packets(draw, *, v4=DEFAULT_V4, v6=DEFAULT_V6, ports=DEFAULT_PORTS,
                        ipv4=True, ipv6=True, max_payload=64):
    """Ethernet frames with TCP, UDP or ICMP/ICMPv6 echo over IPv4/IPv6, as
    ``pybpfnet.packet.Packet`` objects."""
    src, dst = draw(_addr_pairs(v4, v6, ipv4, ipv6))
    payload = draw(st.binary(max_size=max_payload))
    kind = draw(st.sampled_from(("tcp", "udp", "icmp")))
    if kind == "tcp":
        flags = draw(st.integers(0, 0xFF))
        return pk.tcp_packet(src, dst, draw(_ports(ports)), draw(_ports(ports)),
                             flags=pk.TCPFlags(flags), payload=payload,
                             seq=draw(st.integers(0, 2**32 - 1)))
    if kind == "udp":
        return pk.udp_packet(src, dst, draw(_ports(ports)), draw(_ports(ports)), payload)
    return pk.icmp_echo(src, dst, id=draw(st.integers(0, 0xFFFF)),
                        seq=draw(st.integers(0, 0xFFFF)), payload=payload,
                        reply=draw(st.booleans()))


def _is_v4(p):
    return pk.IPv4 in p


@st.composite
def _hostile(draw, base):
    p = draw(base)
    mods = draw(st.lists(st.sampled_from(("vlan", "qinq", "options", "fragment")),
                         max_size=2, unique=True))
    if "options" in mods:
        if _is_v4(p):
            p = pk.with_ipv4_options(p)
        else:
            p = pk.with_ipv6_extensions(p)
    if "fragment" in mods:
        frags = pk.fragment(p, draw(st.sampled_from((8, 16, [8, 64]))))
        p = frags[draw(st.integers(0, len(frags) - 1))]
    if "qinq" in mods:
        p = pk.with_vlan(p, draw(st.integers(1, 4094)), draw(st.integers(1, 4094)))
    elif "vlan" in mods:
        p = pk.with_vlan(p, draw(st.integers(1, 4094)))
    return p


@st.composite
def packets(draw, *, v4=DEFAULT_V4, v6=DEFAULT_V6, ports=DEFAULT_PORTS, ipv4=True,
            ipv6=True, hostile=True, malformed=True, max_payload=64):
    """Frames as ``bytes``: well formed, hostile (VLAN/QinQ, IPv4 options,
    IPv6 extension headers, fragments) and malformed (truncated at any
    point, or random bytes of at least an Ethernet header)."""
    base = well_formed_packets(v4=v4, v6=v6, ports=ports, ipv4=ipv4, ipv6=ipv6,
                               max_payload=max_payload)
    choices = [base]
    if hostile:
        choices.append(_hostile(base))
    frame = bytes(draw(st.one_of(choices)))
    if malformed:
        how = draw(st.sampled_from(("keep", "keep", "keep", "truncate", "random")))
        if how == "truncate":
            frame = frame[:draw(st.integers(14, max(14, len(frame) - 1)))]
        elif how == "random":
            frame = draw(st.binary(min_size=14, max_size=128))
    return frame


