"""Capture filter expressions: a tcpdump-like subset parsed here, compiled
to the disjunctive normal form the BPF program evaluates (struct
cap_config in csrc/bpf/capture/cap_structs.h), and two pure-Python
evaluators used as references: one of the expression tree, one of the
compiled form (what the kernel must agree with).

Grammar (as in pcap-filter(7), ``and``/``or`` of equal precedence, left
to right; ``not`` binds tightest)::

    expr      := unary (("and" | "&&" | "or" | "||") unary)*
    unary     := ("not" | "!") unary | "(" expr ")" | primitive
    primitive := [src | dst] host ADDR | (src | dst) ADDR
               | [src | dst] net CIDR
               | [src | dst] port PORT
               | (tcp | udp | sctp) [[src | dst] port PORT]
               | icmp | icmp6 | ip | ip6
               | [ip | ip6] proto NUMBER
"""

import ipaddress
import re
import socket
import struct

import attrs

__all__ = ["CaptureFilter", "Lit", "PacketFields", "compile_filter", "packet_fields",
           "parse_filter", "evaluate", "MAX_EXPANSION"]

FAMILY, PROTO, SADDR, DADDR, SPORT, DPORT, ADDR, PORT = (
    "family", "proto", "saddr", "daddr", "sport", "dport", "addr", "port")
_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
_PORT_PROTOS = frozenset(_PROTOS.values())
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_MAX_EXT = 8                # CAP_MAX_EXT of cap_parse.h
MAX_EXPANSION = 4096        # terms while distributing, before simplification
_TOKEN = re.compile(r"\s*(?:(\(|\)|&&|\|\||!)|([^\s()!&|]+))")
_KEYWORDS = frozenset(("host", "net", "port", "src", "dst", "tcp", "udp", "sctp", "icmp",
                       "icmp6", "ip", "ip6", "proto", "not", "and", "or"))


@attrs.frozen
class Lit:
    """One field test of the compiled filter (struct cap_lit without the
    negation): ``field`` is one of family/proto/saddr/daddr/sport/dport,
    or addr/port (either source or destination)."""

    field: str
    family: int = 0
    proto: int = 0
    port: int = 0
    addr: bytes = bytes(16)
    mask: bytes = bytes(16)

    def test(self, p):
        """The test on PacketFields ``p`` (not negated)."""
        f = self.field
        if f == FAMILY:
            return p.family == self.family
        if f == PROTO:
            return bool(p.family) and p.proto == self.proto and \
                (not self.family or self.family == p.family)
        if f in (SADDR, DADDR, ADDR):
            addrs = {SADDR: (p.saddr,), DADDR: (p.daddr,), ADDR: (p.saddr, p.daddr)}[f]
            return p.family == self.family and any(
                bytes(x & m for x, m in zip(a, self.mask)) == self.addr for a in addrs)
        if f in (SPORT, DPORT, PORT):
            ports = {SPORT: (p.sport,), DPORT: (p.dport,), PORT: (p.sport, p.dport)}[f]
            return p.has_ports and self.port in ports
        raise ValueError("unknown capture filter field %r" % (f,))

    def __str__(self):
        if self.field == FAMILY:
            return "ip" if self.family == 4 else "ip6"
        if self.field == PROTO:
            name = {(0, 6): "tcp", (0, 17): "udp", (0, 132): "sctp", (4, 1): "icmp",
                    (6, 58): "icmp6"}.get((self.family, self.proto))
            if name:
                return name
            return "%sproto %d" % ({4: "ip ", 6: "ip6 "}.get(self.family, ""), self.proto)
        qual = {SADDR: "src ", SPORT: "src ", DADDR: "dst ", DPORT: "dst "}.get(self.field, "")
        if self.field in (SPORT, DPORT, PORT):
            return "%sport %d" % (qual, self.port)
        bits = sum(bin(b).count("1") for b in self.mask)
        if self.family == 4:
            net = ipaddress.ip_network((self.addr[12:], bits))
        else:
            net = ipaddress.ip_network((self.addr, bits))
        if net.prefixlen == net.max_prefixlen:
            return "%shost %s" % (qual, net.network_address)
        return "%snet %s" % (qual, net)


@attrs.frozen
class PacketFields:
    """What the filter sees of a packet (struct cap_pkt): ``family`` 4, 6
    or 0 (not IP), L4 ``proto``, 16-byte addresses (IPv4 as ::ffff:a.b.c.d)
    and ports when ``has_ports``."""

    family: int = 0
    proto: int = 0
    saddr: bytes = bytes(16)
    daddr: bytes = bytes(16)
    has_ports: bool = False
    sport: int = 0
    dport: int = 0


def packet_fields(data):
    """PacketFields of an Ethernet frame, parsed as cap_parse.h does: one
    optional 802.1Q/802.1ad tag, IPv4 (ports only in first fragments),
    IPv6 with up to eight extension headers (hop-by-hop, routing,
    destination options, fragment); ports of TCP, UDP and SCTP."""
    data = bytes(data)
    n = len(data)
    if n < 14:
        return PacketFields()
    etype = struct.unpack_from("!H", data, 12)[0]
    off = 14
    if etype in (0x8100, 0x88A8):
        if n < 18:
            return PacketFields()
        etype = struct.unpack_from("!H", data, 16)[0]
        off = 18
    if etype == 0x0800:
        if n < off + 20 or data[off] >> 4 != 4:
            return PacketFields()
        proto = data[off + 9]
        saddr = _V4_MAPPED + data[off + 12:off + 16]
        daddr = _V4_MAPPED + data[off + 16:off + 20]
        ihl = (data[off] & 0xF) * 4
        frag = struct.unpack_from("!H", data, off + 6)[0] & 0x1FFF
        if ihl < 20 or frag:
            return PacketFields(4, proto, saddr, daddr)
        return _ports(PacketFields(4, proto, saddr, daddr), data, off + ihl)
    if etype == 0x86DD:
        if n < off + 40 or data[off] >> 4 != 6:
            return PacketFields()
        saddr, daddr = data[off + 8:off + 24], data[off + 24:off + 40]
        nh = data[off + 6]
        pos = off + 40
        for _ in range(_MAX_EXT):
            if nh in (0, 43, 60):
                if pos + 8 > n:
                    return PacketFields(6, nh, saddr, daddr)
                nh, pos = data[pos], pos + (data[pos + 1] + 1) * 8
            elif nh == 44:
                if pos + 8 > n:
                    return PacketFields(6, nh, saddr, daddr)
                nh, frag = data[pos], struct.unpack_from("!H", data, pos + 2)[0] & 0xFFF8
                pos += 8
                if frag:
                    return PacketFields(6, nh, saddr, daddr)
            else:
                break
        return _ports(PacketFields(6, nh, saddr, daddr), data, pos)
    return PacketFields()


def _ports(p, data, pos):
    if p.proto not in _PORT_PROTOS or pos + 4 > len(data):
        return p
    sport, dport = struct.unpack_from("!HH", data, pos)
    return attrs.evolve(p, has_ports=True, sport=sport, dport=dport)


# ------------------------------------------------------------------ parsing

class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = []        # (word, position)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                rest = text[pos:].lstrip()
                if rest:
                    self.fail(len(text) - len(rest), "a word, '(', ')', '!', '&&' or '||'",
                              repr(rest[0]))
                break
            start = m.start(1) if m.group(1) else m.start(2)
            self.tokens.append(((m.group(1) or m.group(2)), start))
            pos = m.end()
        self.i = 0

    def fail(self, pos, expected, found=None):
        if found is None:
            found = "%r" % self.tokens[self.i][0] if self.i < len(self.tokens) else "the end"
        raise ValueError("capture filter %r: expected %s at position %d, found %s"
                         % (self.text, expected, pos, found))

    def peek(self):
        return self.tokens[self.i][0].lower() if self.i < len(self.tokens) else None

    def pos(self):
        return self.tokens[self.i][1] if self.i < len(self.tokens) else len(self.text)

    def take(self):
        tok = self.tokens[self.i][0]
        self.i += 1
        return tok

    def expect_value(self, what, convert):
        pos = self.pos()
        if self.peek() is None or self.peek() in _KEYWORDS or self.peek() in "()!":
            self.fail(pos, what)
        tok = self.take()
        try:
            return convert(tok)
        except ValueError as e:
            self.i -= 1
            self.fail(pos, "%s (%s)" % (what, e))

    def parse(self):
        if not self.tokens:
            self.fail(0, "a filter expression")
        node = self.expr()
        if self.i < len(self.tokens):
            self.fail(self.pos(), "'and', 'or' or the end")
        return node

    def expr(self):
        node = self.unary()
        while self.peek() in ("and", "&&", "or", "||"):
            op = "and" if self.take().lower() in ("and", "&&") else "or"
            rhs = self.unary()
            # a chain of one operator is one n-ary node (associative)
            node = (op, node[1] + (rhs,)) if node[0] == op else (op, (node, rhs))
        return node

    def unary(self):
        tok = self.peek()
        if tok in ("not", "!"):
            self.take()
            return ("not", self.unary())
        if tok == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                self.fail(self.pos(), "')'")
            self.take()
            return node
        return self.primitive()

    def primitive(self):
        pos, tok = self.pos(), self.peek()
        if tok in ("src", "dst"):
            self.take()
            nxt = self.peek()
            if nxt == "host":
                self.take()
                return self.host(tok)
            if nxt == "net":
                self.take()
                return self.net(tok)
            if nxt == "port":
                self.take()
                return self.port(tok)
            if nxt is not None and nxt not in _KEYWORDS and nxt not in "()!":
                return self.host(tok)
            self.fail(self.pos(), "'host', 'net', 'port' or an address after %r" % tok)
        if tok == "host":
            self.take()
            return self.host(None)
        if tok == "net":
            self.take()
            return self.net(None)
        if tok == "port":
            self.take()
            return self.port(None)
        if tok == "proto":
            self.take()
            return ("lit", Lit(PROTO, proto=self.expect_value("a protocol number", _proto)))
        if tok in _PROTOS:
            self.take()
            node = ("lit", Lit(PROTO, proto=_PROTOS[tok]))
            qual = None
            if self.peek() in ("src", "dst") and self.i + 1 < len(self.tokens) and \
                    self.tokens[self.i + 1][0].lower() == "port":
                qual = self.take().lower()
            if self.peek() == "port":
                self.take()
                node = ("and", (node, self.port(qual)))
            return node
        if tok == "icmp":
            self.take()
            return ("lit", Lit(PROTO, family=4, proto=1))
        if tok == "icmp6":
            self.take()
            return ("lit", Lit(PROTO, family=6, proto=58))
        if tok in ("ip", "ip6"):
            self.take()
            family = 4 if tok == "ip" else 6
            if self.peek() == "proto":
                self.take()
                return ("lit", Lit(PROTO, family=family,
                                   proto=self.expect_value("a protocol number", _proto)))
            return ("lit", Lit(FAMILY, family=family))
        self.fail(pos, "a primitive (host, net, port, src, dst, tcp, udp, sctp, icmp, "
                  "icmp6, ip, ip6, proto), 'not' or '('")

    def host(self, qual):
        addr = self.expect_value("an IPv4 or IPv6 address", ipaddress.ip_address)
        return _addr_node(qual, ipaddress.ip_network(addr))

    def net(self, qual):
        net = self.expect_value("a network such as 10.0.0.0/8 or fd00::/64",
                                lambda s: ipaddress.ip_network(s, strict=True))
        return _addr_node(qual, net)

    def port(self, qual):
        port = self.expect_value("a port number or service name", _port)
        return ("lit", Lit({"src": SPORT, "dst": DPORT, None: PORT}[qual], port=port))


def _proto(tok):
    n = int(tok, 0)
    if not 0 <= n <= 255:
        raise ValueError("0 to 255")
    return n


def _port(tok):
    try:
        n = int(tok, 0)
    except ValueError:
        try:
            return socket.getservbyname(tok)
        except OSError:
            raise ValueError("unknown service") from None
    if not 0 <= n <= 65535:
        raise ValueError("0 to 65535")
    return n


def _addr_node(qual, net):
    if net.version == 4:
        family, addr = 4, bytes(12) + net.network_address.packed
        mask = bytes(12) + net.netmask.packed
    else:
        family, addr, mask = 6, net.network_address.packed, net.netmask.packed
    field = {"src": SADDR, "dst": DADDR, None: ADDR}[qual]
    return ("lit", Lit(field, family=family, addr=addr, mask=mask))


def parse_filter(text):
    """The expression tree of a filter: nested tuples ("and", (a, b)),
    ("or", (a, b)), ("not", a), ("lit", Lit). Raises ValueError naming the
    position of the first token that does not fit the grammar."""
    if not isinstance(text, str):
        raise TypeError("capture filter must be a str, not %s" % type(text).__name__)
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise ValueError("capture filter %r: nested too deeply" % (text[:80],)) from None


def evaluate(node, fields):
    """Whether PacketFields ``fields`` match the expression tree ``node``
    (the reference semantics, straight from the tree)."""
    kind = node[0]
    if kind == "lit":
        return node[1].test(fields)
    if kind == "not":
        return not evaluate(node[1], fields)
    if kind == "and":
        return all(evaluate(n, fields) for n in node[1])
    return any(evaluate(n, fields) for n in node[1])


# ------------------------------------------------------------------ compiling

def _dnf(node, neg, text):
    """A list of terms (frozensets of (Lit, negated)) equivalent to node
    (negated when neg)."""
    kind = node[0]
    if kind == "lit":
        return [frozenset(((node[1], neg),))]
    if kind == "not":
        return _dnf(node[1], not neg, text)
    parts = [_dnf(n, neg, text) for n in node[1]]
    if (kind == "or") != neg:
        return _simplify([t for p in parts for t in p])
    out = [frozenset()]
    for p in parts:
        if len(out) * len(p) > MAX_EXPANSION:
            raise ValueError("capture filter %r: more than %d terms while expanding to "
                             "disjunctive normal form; simplify it" % (text, MAX_EXPANSION))
        out = [a | b for a in out for b in p]
    return _simplify(out)


def _simplify(terms):
    """Drop contradictory terms (x and not x), duplicates, and terms that
    contain another term (A or (A and B) == A)."""
    seen = []
    for t in sorted(set(terms), key=len):
        if any((lit, not neg) in t for lit, neg in t):
            continue
        if any(s <= t for s in seen):
            continue
        seen.append(t)
    return seen


def _term_key(t):
    return sorted((lit.field, lit.family, lit.proto, lit.port, lit.addr, lit.mask, neg)
                  for lit, neg in t)


@attrs.frozen
class CaptureFilter:
    """A compiled capture filter: ``terms`` is a tuple of conjunctions,
    each a tuple of (Lit, negated); a packet matches when all tests of any
    term hold (no terms: nothing matches; one empty term: everything).
    ``expression`` is the source text (None: match all)."""

    expression: object
    terms: tuple

    def matches_fields(self, fields):
        """The compiled form's verdict on PacketFields (the kernel's reference)."""
        return any(all(lit.test(fields) != neg for lit, neg in t) for t in self.terms)

    def matches(self, frame):
        """Whether an Ethernet frame (bytes) passes the filter."""
        return self.matches_fields(packet_fields(frame))

    def config(self, snaplen, fields, max_terms, max_lits):
        """The value of capture_config (struct cap_config) as a dict."""
        empty_lit = {"field": 0, "negate": 0, "family": 0, "proto": 0, "port": 0, "pad": 0,
                     "addr": bytes(16), "mask": bytes(16)}
        terms = []
        for t in self.terms:
            lits = [{"field": fields[lit.field], "negate": int(neg), "family": lit.family,
                     "proto": lit.proto, "port": lit.port, "pad": 0, "addr": lit.addr,
                     "mask": lit.mask} for lit, neg in t]
            lits += [empty_lit] * (max_lits - len(lits))
            terms.append({"nlits": len(t), "pad": 0, "lits": tuple(lits)})
        terms += [{"nlits": 0, "pad": 0, "lits": (empty_lit,) * max_lits}] * \
            (max_terms - len(terms))
        return {"snaplen": snaplen, "nterms": len(self.terms), "terms": tuple(terms)}

    def __str__(self):
        if not self.terms:
            return "(matches nothing)"
        return " or ".join(
            "(%s)" % (" and ".join(("not " if neg else "") + str(lit) for lit, neg in t)
                      or "true") for t in self.terms)


def compile_filter(expression, *, max_terms=None, max_lits=None):
    """Compile a filter expression (None or "": everything) for the BPF
    side. Raises ValueError with the position of a syntax error, or naming
    the limit a filter does not fit (``max_terms`` conjunctions of at most
    ``max_lits`` tests each; defaults: the bundled program's limits)."""
    if max_terms is None or max_lits is None:
        from pybpfnet.dataplanes._cap_abi import abi
        a = abi()
        max_terms = a.max_terms if max_terms is None else max_terms
        max_lits = a.max_lits if max_lits is None else max_lits
    if expression is None or (isinstance(expression, str) and not expression.strip()):
        return CaptureFilter(None, ((),))
    try:
        terms = _dnf(parse_filter(expression), False, expression)
    except RecursionError:
        raise ValueError("capture filter %r: nested too deeply" % (expression[:80],)) from None
    terms = tuple(tuple(sorted(t, key=lambda ln: _term_key((ln,)))) for t in
                  sorted(terms, key=_term_key))
    if len(terms) > max_terms:
        raise ValueError("capture filter %r needs %d terms in disjunctive normal form; the "
                         "BPF program holds at most %d (an 'and' of 'or's multiplies): "
                         "simplify it"
                         % (expression, len(terms), max_terms))
    longest = max((len(t) for t in terms), default=0)
    if longest > max_lits:
        raise ValueError("capture filter %r has a term of %d tests; the BPF program holds at "
                         "most %d tests per term" % (expression, longest, max_lits))
    return CaptureFilter(expression, terms)
