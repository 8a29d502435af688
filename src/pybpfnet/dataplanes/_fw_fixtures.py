"""Fixture tables for the firewall (Katran style): rows of (description,
input packet, direction, expected verdict), each table with the rule set it
runs against. The kernel tests run them through BPF_PROG_TEST_RUN and the
model; benchmarks/bench_firewall.py times the same packets."""

import attrs

from pybpfnet import packet as pk
from pybpfnet.dataplanes._fw_rules import Action, Reason, Rule, RuleSet, rate_limit

__all__ = ["Fixture", "TABLES"]

ADMIN = "192.0.2.10"
CLIENT = "203.0.113.5"
SERVER = "10.0.0.2"
BAD = "198.51.100.7"
CLIENT6 = "2001:db8:1::5"
SERVER6 = "2001:db8:2::2"
BAD6 = "2001:db8:bad::1"


@attrs.frozen
class Fixture:
    """One row: ``packet`` seen in ``direction`` gets ``action`` for
    ``reason``, decided by the rule named ``rule`` (None: no rule)."""

    description: str
    packet: bytes
    action: Action
    reason: Reason
    rule: object = None
    direction: str = "ingress"


MAIN = RuleSet([
    Rule("count", protocol="tcp", name="tcp-seen"),
    Rule("pass", protocol="tcp", dport=22, src="192.0.2.0/24", name="ssh-admin"),
    Rule("drop", protocol="tcp", dport=22, name="ssh"),
    Rule("drop", protocol="udp", dport="5000-5999", name="udp-5k"),
    Rule("drop", src="198.51.100.0/24", name="bad-net"),
    Rule("drop", src="2001:db8:bad::/48", name="bad-net6"),
    Rule("drop", protocol="tcp", dport=8080, tcp_flags="syn,!ack", name="no-syn-8080"),
    Rule("drop", protocol="icmp", icmp_type="echo-request", name="no-ping"),
    Rule("pass", protocol="icmpv6", name="icmpv6"),
    Rule("drop", protocol="udp", dport=53, direction="egress", name="no-dns-out"),
    Rule("drop", protocol="sctp", dport=9, name="sctp-discard"),
    Rule(rate_limit(1, burst=1000000), protocol="udp", dport=123, name="ntp-limit"),
], default="pass", fragments="addresses", malformed="drop", non_ip="pass")


def _b(p):
    return bytes(p)


def _tcp(src=CLIENT, dst=SERVER, sport=40000, dport=22, flags="S"):
    return pk.tcp_packet(src, dst, sport, dport, flags=flags)


def _udp(src=CLIENT, dst=SERVER, sport=40000, dport=53, payload=b"x" * 8):
    return pk.udp_packet(src, dst, sport, dport, payload)


def _ipv4_bytes(p, **changes):
    """The packet with IPv4 header fields overwritten (no recompute)."""
    i = p.index(pk.IPv4)
    return bytes(p.complete().evolve(i, **changes))


def _ipv6_bytes(p, **changes):
    i = p.index(pk.IPv6)
    return bytes(p.complete().evolve(i, **changes))


def _with_ah(p, units=1, size=None):
    """An IPv6 packet with an Authentication Header after the fixed header:
    its length field says (units + 2) * 4 bytes; ``size`` bytes are there."""
    data = bytes(p)
    size = (units + 2) * 4 if size is None else size
    ah = bytes([data[14 + 6], units, 0, 0]) + bytes(size - 4)
    out = bytearray(data[:54] + ah + data[54:])
    out[14 + 6] = 51
    out[14 + 4:14 + 6] = (int.from_bytes(data[18:20], "big") + size).to_bytes(2, "big")
    return bytes(out)


def _retype(p, eth_type):
    data = bytearray(_b(p))
    data[12:14] = eth_type.to_bytes(2, "big")
    return bytes(data)


def _main_rows():
    ssh = _tcp()
    ssh6 = _tcp(CLIENT6, SERVER6)
    frags = pk.fragment(pk.tcp_packet(CLIENT, SERVER, 40000, 22, payload=b"p" * 64), [8, 80])
    frags_big = pk.fragment(pk.tcp_packet(CLIENT, SERVER, 40000, 22, payload=b"p" * 64),
                            [24, 80])
    bad_frags = pk.fragment(pk.tcp_packet(BAD, SERVER, 40000, 22, payload=b"p" * 64), [24, 80])
    frags6 = pk.fragment(pk.tcp_packet(CLIENT6, SERVER6, 40000, 22, payload=b"p" * 64),
                         [24, 80])
    sctp = pk.Packet((pk.Ethernet(), pk.IPv4(src=CLIENT, dst=SERVER, proto=132),
                      pk.Raw(b"\x9c\x40\x00\x09" + bytes(8))))
    tagged3 = pk.with_vlan(ssh, 10, 20, 30)
    hbh_late = pk.with_ipv6_extensions(ssh6, [pk.IPv6DestOpts(options=(pk.PadN(4),)),
                                             pk.IPv6HopByHop(options=(pk.PadN(4),))])
    nine = pk.with_ipv6_extensions(ssh6, [pk.IPv6DestOpts(options=(pk.PadN(4),))] * 9)
    eight = pk.with_ipv6_extensions(ssh6, [pk.IPv6DestOpts(options=(pk.PadN(4),))] * 8)
    ssh_bytes = _b(ssh)
    D, P = Action.DROP, Action.PASS
    R, DEF, MAL, NON = Reason.RULE, Reason.DEFAULT, Reason.MALFORMED, Reason.NON_IP
    return [
        Fixture("TCP 22 from the admin net passes", _b(_tcp(ADMIN)), P, R, "ssh-admin"),
        Fixture("TCP 22 from elsewhere drops", ssh_bytes, D, R, "ssh"),
        Fixture("TCP 80 passes by default", _b(_tcp(dport=80)), P, DEF),
        Fixture("TCP 22 behind 40 bytes of IPv4 options drops",
                _b(pk.with_ipv4_options(ssh)), D, R, "ssh"),
        Fixture("TCP 22 in an 802.1Q tag drops", _b(pk.with_vlan(ssh, 100)), D, R, "ssh"),
        Fixture("TCP 22 in QinQ (802.1ad + 802.1Q) drops", _b(pk.with_vlan(ssh, 100, 200)),
                D, R, "ssh"),
        Fixture("three VLAN tags are malformed", _b(tagged3), D, MAL),
        Fixture("IPv6 TCP 22 drops", _b(ssh6), D, R, "ssh"),
        Fixture("IPv6 TCP 22 behind HBH, DestOpts, SRH, atomic fragment, DestOpts drops",
                _b(pk.with_ipv6_extensions(ssh6)), D, R, "ssh"),
        Fixture("IPv6 TCP 22 behind 8 extension headers drops", _b(eight), D, R, "ssh"),
        Fixture("IPv6 with 9 extension headers is malformed", _b(nine), D, MAL),
        Fixture("IPv6 Hop-by-Hop after another header is malformed", _b(hbh_late), D, MAL),
        Fixture("UDP 5500 drops", _b(_udp(dport=5500)), D, R, "udp-5k"),
        Fixture("UDP 4999 passes", _b(_udp(dport=4999)), P, DEF),
        Fixture("UDP 6000 passes", _b(_udp(dport=6000)), P, DEF),
        Fixture("anything from the bad net drops", _b(_udp(BAD, dport=80)), D, R, "bad-net"),
        Fixture("anything from the bad IPv6 net drops", _b(_udp(BAD6, SERVER6, dport=80)),
                D, R, "bad-net6"),
        Fixture("SYN to 8080 drops", _b(_tcp(dport=8080, flags="S")), D, R, "no-syn-8080"),
        Fixture("SYN-ACK to 8080 passes", _b(_tcp(dport=8080, flags="SA")), P, DEF),
        Fixture("ICMP echo request drops", _b(pk.icmp_echo(CLIENT, SERVER)), D, R, "no-ping"),
        Fixture("ICMP echo reply passes", _b(pk.icmp_echo(CLIENT, SERVER, reply=True)), P, DEF),
        Fixture("ICMPv6 echo request passes by rule",
                _b(pk.icmp_echo(CLIENT6, SERVER6)), P, R, "icmpv6"),
        Fixture("UDP 53 at TC egress drops", _b(_udp(dport=53)), D, R, "no-dns-out",
                "egress"),
        Fixture("UDP 53 at ingress passes", _b(_udp(dport=53)), P, DEF),
        Fixture("SCTP to port 9 drops", _b(sctp), D, R, "sctp-discard"),
        Fixture("NTP within its rate passes", _b(_udp(dport=123)), P, R, "ntp-limit"),
        Fixture("ARP passes (not IP)", _b(pk.Packet((pk.Ethernet(), pk.ARP()))), P, NON),
        Fixture("tiny first fragment (8 bytes of TCP) is malformed", _b(frags[0]), D, MAL),
        Fixture("first fragment holding the TCP header to 22 drops", _b(frags_big[0]),
                D, R, "ssh"),
        Fixture("non-first fragment to 22 passes (port rules skip it)", _b(frags_big[1]),
                P, DEF),
        Fixture("non-first fragment from the bad net drops", _b(bad_frags[1]),
                D, R, "bad-net"),
        Fixture("IPv6 non-first fragment to 22 passes", _b(frags6[1]), P, DEF),
        Fixture("IPv4 header cut short is malformed", ssh_bytes[:14 + 12], D, MAL),
        Fixture("TCP header cut short is malformed", ssh_bytes[:14 + 20 + 10], D, MAL),
        Fixture("IPv4 total length beyond the frame is malformed",
                _ipv4_bytes(ssh, total_length=1000), D, MAL),
        Fixture("IPv4 IHL below 5 is malformed", _ipv4_bytes(ssh, ihl=4), D, MAL),
        Fixture("IPv4 ethertype with version 6 is malformed", _ipv4_bytes(ssh, version=6),
                D, MAL),
        Fixture("IPv4 total length 0 (BIG TCP) reaches to the frame end",
                _ipv4_bytes(ssh, total_length=0), D, R, "ssh"),
        Fixture("Ethernet padding after the datagram is ignored",
                ssh_bytes + bytes(20), D, R, "ssh"),
        Fixture("a frame shorter than Ethernet is malformed", ssh_bytes[:13], D, MAL),
        Fixture("GRE passes (no ports)",
                _b(pk.Packet((pk.Ethernet(), pk.IPv4(src=CLIENT, dst=SERVER, proto=47),
                              pk.Raw(bytes(8))))), P, DEF),
        Fixture("IPv6 ethertype on an IPv4 header is malformed", _retype(ssh, 0x86DD),
                D, MAL),
        Fixture("fragment offset 0x1000 alone makes a non-first fragment",
                _ipv4_bytes(_tcp(dport=22), frag_offset=0x1000), P, DEF),
        Fixture("IPv6 payload length 0 (jumbogram) reaches to the frame end",
                _ipv6_bytes(ssh6, payload_length=0), D, R, "ssh"),
        Fixture("IPv6 payload length beyond the frame is malformed",
                _ipv6_bytes(ssh6, payload_length=100), D, MAL),
        Fixture("IPv6 TCP 22 behind an Authentication Header drops", _with_ah(ssh6), D, R,
                "ssh"),
        Fixture("IPv6 AH longer than the datagram is malformed", _with_ah(ssh6, 30, 12),
                D, MAL),
        Fixture("IPv4 TCP behind protocol 51 is not parsed as AH",
                _b(pk.Packet((pk.Ethernet(), pk.IPv4(src=CLIENT, dst=SERVER, proto=51),
                              pk.Raw(bytes([6, 1, 0, 0]) + bytes(8) + bytes(20))))), P, DEF),
    ]


STRICT = RuleSet([
    Rule("pass", protocol="tcp", dport=443, name="https"),
    Rule("pass", protocol="udp", sport=53, name="dns-replies"),
], default="drop", fragments="drop", malformed="pass", non_ip="drop")


def _strict_rows():
    frags = pk.fragment(pk.tcp_packet(CLIENT, SERVER, 40000, 443, payload=b"p" * 64),
                        [24, 80])
    D, P = Action.DROP, Action.PASS
    return [
        Fixture("HTTPS passes", _b(_tcp(dport=443)), P, Reason.RULE, "https"),
        Fixture("SSH drops by default", _b(_tcp()), D, Reason.DEFAULT),
        Fixture("DNS replies pass", _b(_udp(sport=53, dport=40000)), P, Reason.RULE,
                "dns-replies"),
        Fixture("first fragment to 443 passes", _b(frags[0]), P, Reason.RULE, "https"),
        Fixture("non-first fragments drop (fragments='drop')", _b(frags[1]), D,
                Reason.FRAGMENT),
        Fixture("malformed passes (malformed='pass')", _b(_tcp())[:30], P, Reason.MALFORMED),
        Fixture("ARP drops (non_ip='drop')", _b(pk.Packet((pk.Ethernet(), pk.ARP()))), D,
                Reason.NON_IP),
    ]


def tables():
    """{name: (RuleSet, [Fixture])}."""
    return {"main": (MAIN, _main_rows()), "strict": (STRICT, _strict_rows())}


TABLES = ("main", "strict")
