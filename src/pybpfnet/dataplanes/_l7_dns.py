"""DNS wire format (RFC 1035) parser for the L7 monitor: header, the first
question, and the answer section's A, AAAA, CNAME, PTR and NS records.

Pure Python, no privileges. ``parse_dns`` and ``parse_dns_tcp`` raise only
:class:`ParseError` (a ValueError) on malformed input and run in time
linear in the input: a compression pointer must point strictly backwards
(so pointers cannot loop) and a name is at most 255 bytes.
"""

import ipaddress
import struct

import attrs

__all__ = ["ParseError", "DnsMessage", "parse_dns", "parse_dns_tcp", "build_query",
           "QTYPES", "RCODES", "qtype_name", "rcode_name"]

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
          47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS",
          99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}
QTYPE_NUMBERS = {v: k for k, v in QTYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}

_HEADER = struct.Struct("!HHHHHH")
_MAX_NAME = 255
_MAX_ANSWERS = 64


class ParseError(ValueError):
    """The bytes are not a (complete enough) DNS message; the message says
    what was expected where."""


def qtype_name(qtype):
    """"A", "AAAA", ... or "TYPE<n>" (RFC 3597) for types without a name."""
    return QTYPES.get(qtype, "TYPE%d" % qtype)


def rcode_name(rcode):
    """"NOERROR", "NXDOMAIN", ... or "RCODE<n>"."""
    return RCODES.get(rcode, "RCODE%d" % rcode)


@attrs.frozen(slots=True)
class DnsMessage:
    """One parsed DNS message. ``qname`` has no trailing dot ("." for the
    root); labels keep their case, bytes outside printable ASCII and dots
    inside a label are escaped as ``\\DDD`` (as dig prints them).
    ``answers`` holds the answer section's A/AAAA addresses and
    CNAME/PTR/NS targets as strings, in order; ``truncated`` is True when
    the sample ended before the answer section did (the answers are then
    those that fit)."""

    id: int
    response: bool
    opcode: int
    rcode: int
    qname: str
    qtype: int
    qclass: int
    answers: tuple = ()
    truncated: bool = False

    @property
    def qtype_name(self):
        """"A", "AAAA", ... or "TYPE<n>"."""
        return qtype_name(self.qtype)

    @property
    def rcode_name(self):
        """"NOERROR", "NXDOMAIN", ... or "RCODE<n>"."""
        return rcode_name(self.rcode)


def _label_text(raw):
    out = []
    for b in raw:
        if b == 0x2E or b == 0x5C or b < 0x21 or b > 0x7E:
            out.append("\\%03d" % b)
        else:
            out.append(chr(b))
    return "".join(out)


def _name(data, pos):
    """(name, position after the name in the message)."""
    labels = []
    total = 0
    end = None
    limit = pos          # pointers must go strictly below where they are
    n = len(data)
    while True:
        if pos >= n:
            raise ParseError("DNS name runs past the end of the message at byte %d" % pos)
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise ParseError("DNS compression pointer cut at byte %d" % pos)
            target = (length & 0x3F) << 8 | data[pos + 1]
            if end is None:
                end = pos + 2
            if target >= limit:
                raise ParseError("DNS compression pointer at byte %d points forward (to %d)"
                                 % (pos, target))
            limit = target
            pos = target
            continue
        if length & 0xC0:
            raise ParseError("DNS label type 0x%02x at byte %d not supported" % (length, pos))
        pos += 1
        if length == 0:
            break
        if pos + length > n:
            raise ParseError("DNS label at byte %d runs past the end" % (pos - 1))
        total += length + 1
        if total > _MAX_NAME:
            raise ParseError("DNS name longer than 255 bytes at byte %d" % pos)
        labels.append(_label_text(data[pos:pos + length]))
        pos += length
    return (".".join(labels) or "."), (pos if end is None else end)


def parse_dns(data):
    """A DNS message (UDP payload, or one TCP message without its length
    prefix) -> DnsMessage. Needs the header and the first question whole;
    a sample cut inside the answer section gives ``truncated=True``.
    Raises ParseError."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise ParseError("DNS message of %d bytes: a header needs 12" % len(data))
    ident, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    if qd < 1:
        raise ParseError("DNS message without a question")
    qname, pos = _name(data, _HEADER.size)
    if pos + 4 > len(data):
        raise ParseError("DNS question cut after its name")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    response = bool(flags & 0x8000)
    answers = []
    truncated = False
    if response:
        try:
            for _ in range(qd - 1):                    # further questions (rare)
                _, pos = _name(data, pos)
                pos += 4
            for _ in range(min(an, _MAX_ANSWERS)):
                _, pos = _name(data, pos)
                if pos + 10 > len(data):
                    raise ParseError("DNS record header cut")
                rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
                pos += 10
                if pos + rdlen > len(data):
                    raise ParseError("DNS record data cut")
                if rtype == 1 and rdlen == 4:
                    answers.append(str(ipaddress.IPv4Address(data[pos:pos + 4])))
                elif rtype == 28 and rdlen == 16:
                    answers.append(str(ipaddress.IPv6Address(data[pos:pos + 16])))
                elif rtype in (2, 5, 12):
                    target, after = _name(data, pos)
                    if after > pos + rdlen:
                        raise ParseError("DNS name runs past its record")
                    answers.append(target)
                pos += rdlen
        except ParseError:
            truncated = True
    return DnsMessage(id=ident, response=response, opcode=(flags >> 11) & 0xF,
                      rcode=flags & 0xF, qname=qname, qtype=qtype, qclass=qclass,
                      answers=tuple(answers), truncated=truncated)


def parse_dns_tcp(data):
    """The DNS messages at the start of a TCP payload (each after its
    2-byte length prefix, RFC 1035 4.2.2) -> list of DnsMessage; a last
    message cut by the sample is parsed as far as it goes. Raises
    ParseError when not even the first message parses."""
    data = bytes(data)
    out = []
    pos = 0
    while pos + 2 <= len(data):
        (length,) = struct.unpack_from("!H", data, pos)
        if length < _HEADER.size:
            if out:
                break
            raise ParseError("DNS-over-TCP length prefix %d is shorter than a header" % length)
        try:
            out.append(parse_dns(data[pos + 2:pos + 2 + length]))
        except ParseError:
            if not out:
                raise
            break
        pos += 2 + length
    if not out:
        raise ParseError("DNS-over-TCP segment of %d bytes holds no message" % len(data))
    return out


def build_query(qname, qtype="A", ident=0, *, tcp=False, recursion=True):
    """A DNS query message (bytes) for ``qname`` and ``qtype`` (a name such
    as "AAAA" or a number); ``tcp`` adds the 2-byte length prefix. Raises
    ValueError for a name that cannot be encoded."""
    qt = QTYPE_NUMBERS.get(qtype, qtype) if isinstance(qtype, str) else int(qtype)
    if isinstance(qt, str):
        if not qt.startswith("TYPE") or not qt[4:].isdigit():
            raise ValueError("unknown DNS type %r (a name such as 'A' or 'TYPE65')" % qtype)
        qt = int(qt[4:])
    wire = bytearray()
    for label in qname.rstrip(".").split(".") if qname not in ("", ".") else ():
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError("DNS label %r must be 1..63 bytes" % label)
        wire += bytes([len(raw)]) + raw
    wire += b"\x00"
    if len(wire) > _MAX_NAME:
        raise ValueError("DNS name %r is longer than 255 bytes" % qname)
    msg = _HEADER.pack(ident & 0xFFFF, 0x0100 if recursion else 0, 1, 0, 0, 0) + bytes(wire) \
        + struct.pack("!HH", qt, 1)
    return struct.pack("!H", len(msg)) + msg if tcp else msg
