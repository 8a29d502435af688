"""Packet builders and parsers with checksums (pure Python, no privileges).

Headers are frozen value classes composed with ``/``::

    pkt = Ethernet() / IPv4(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hi"
    data = bytes(pkt)             # lengths, protocol numbers and checksums filled in
    again = parse(data)           # -> Packet; again[UDP].dport == 2

Fields documented as *auto* default to ``None`` and are computed by
``bytes()``; explicit values are kept even when wrong (for broken-on-purpose
test packets). ``parse`` fills every field explicitly, so
``bytes(parse(data)) == data`` and ``parse(bytes(p)) == p.complete()``.
``Template`` builds many variants of one packet fast. See docs/packet.md.
"""

from pybpfnet.packet._base import (BuildError, Header, Packet, Padding, ParseError, Raw,
                                   checksum, incremental_checksum, l4_checksum, mac,
                                   mac_bytes, pseudo_header)
from pybpfnet.packet._headers import (ARP, GUE, GUE_PORT, ICMP, TCP, UDP, ARPOp, Dot1Q,
                                      Ethernet, EtherType, ICMPType, ICMPv6, ICMPv6Type,
                                      IPProto, IPv4, IPv4Flags, IPv6, IPv6DestOpts,
                                      IPv6Fragment, IPv6HopByHop, IPv6Routing, TCPFlags)
from pybpfnet.packet._options import (EOL, MSS, NOP, IPv4Option, IPv6Option,
                                      LooseSourceRoute, Pad1, PadN, RecordRoute, RouterAlert,
                                      Sack, SackPermitted, StrictSourceRoute, TCPOption,
                                      Timestamps, WindowScale)
from pybpfnet.packet._parse import FIRST_LAYERS, parse
from pybpfnet.packet._template import Template
from pybpfnet.packet.pcap import PcapRecord, PcapWriter, read_pcap
from pybpfnet.packet._tools import (HOSTILE_IPV4_OPTIONS, ChecksumMismatch, FlowTuple,
                                    checksum_errors, decap, encap_gue, encap_ipip, flow,
                                    fragment, icmp_echo, tcp_packet, udp_packet,
                                    with_ipv4_options, with_ipv6_extensions, with_vlan)

__all__ = [
    # model
    "Packet", "Header", "Raw", "Padding",
    # headers
    "Ethernet", "Dot1Q", "ARP", "IPv4", "IPv6", "IPv6HopByHop", "IPv6Routing",
    "IPv6Fragment", "IPv6DestOpts", "TCP", "UDP", "ICMP", "ICMPv6", "GUE",
    # options
    "EOL", "NOP", "IPv4Option", "RouterAlert", "RecordRoute", "LooseSourceRoute",
    "StrictSourceRoute", "TCPOption", "MSS", "WindowScale", "SackPermitted", "Sack",
    "Timestamps", "Pad1", "PadN", "IPv6Option",
    # numbers and flags
    "EtherType", "IPProto", "ICMPType", "ICMPv6Type", "ARPOp", "IPv4Flags", "TCPFlags",
    "GUE_PORT",
    # parsing
    "parse", "FIRST_LAYERS", "ParseError", "BuildError",
    # checksums and addresses
    "checksum", "pseudo_header", "l4_checksum", "incremental_checksum", "checksum_errors",
    "ChecksumMismatch", "mac", "mac_bytes",
    # fast building
    "Template",
    # helpers
    "udp_packet", "tcp_packet", "icmp_echo", "flow", "FlowTuple", "encap_ipip",
    "encap_gue", "decap", "with_vlan", "with_ipv4_options", "HOSTILE_IPV4_OPTIONS",
    "with_ipv6_extensions", "fragment",
    # pcap files
    "PcapWriter", "PcapRecord", "read_pcap",
]
