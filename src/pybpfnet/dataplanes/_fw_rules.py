"""Firewall values: rules, rule sets, verdicts (frozen attrs classes, no
kernel state)."""

import enum
import ipaddress

import attrs

__all__ = ["Action", "RateLimit", "rate_limit", "PortRange", "TcpFlags", "Rule",
           "RuleSet", "Reason", "Verdict", "RuleError", "PROTOCOLS"]


class RuleError(ValueError):
    """A rule or rule set that cannot be compiled; the message names the
    field (and, for files, the line)."""


class Action(enum.Enum):
    """What a rule does with the packets it matches. ``COUNT`` counts them
    and lets the next rules decide."""
    PASS = "pass"
    DROP = "drop"
    COUNT = "count"

    def __str__(self):
        return self.value


@attrs.frozen
class RateLimit:
    """Pass up to ``pps`` packets per second per source address, with
    bursts of up to ``burst`` packets; drop the excess. A token bucket
    kept as a GCRA theoretical arrival time in the kernel."""

    pps: int = attrs.field()
    burst: int = attrs.field()

    @pps.validator
    def _check_pps(self, attribute, value):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**9:
            raise RuleError("rate_limit pps must be an int in 1..1000000000, got %r"
                            % (value,))

    @burst.validator
    def _check_burst(self, attribute, value):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**9:
            raise RuleError("rate_limit burst must be an int in 1..1000000000, got %r"
                            % (value,))

    @property
    def cost_ns(self):
        """Nanoseconds of credit one packet costs."""
        return 10**9 // self.pps

    @property
    def tolerance_ns(self):
        """How far ahead of now a source's schedule may run (burst - 1
        packets)."""
        return (self.burst - 1) * self.cost_ns

    def __str__(self):
        return "rate_limit(%d pps, burst %d)" % (self.pps, self.burst)


def rate_limit(pps, burst=None):
    """A rate-limit action: ``pps`` packets per second per source address,
    ``burst`` packets at once (default: one second's worth, ``pps``)."""
    return RateLimit(pps, pps if burst is None else burst)


#: Protocol names accepted by rules.
PROTOCOLS = {"icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17, "ipv6": 41,
             "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58,
             "sctp": 132, "udplite": 136}
_PROTO_NAMES = {v: k for k, v in reversed(list(PROTOCOLS.items()))}
_PORT_PROTOCOLS = frozenset((6, 17, 132, 136))
_ICMP_PROTOCOLS = frozenset((1, 58))

_TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10,
              "urg": 0x20, "ece": 0x40, "cwr": 0x80}

_ICMP_TYPES = {
    1: {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4,
        "redirect": 5, "echo-request": 8, "router-advertisement": 9,
        "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
        "timestamp-request": 13, "timestamp-reply": 14},
    58: {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
         "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
         "router-solicitation": 133, "router-advertisement": 134,
         "neighbor-solicitation": 135, "neighbor-advertisement": 136, "redirect": 137},
}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


@attrs.frozen(order=True)
class PortRange:
    """An inclusive range of ports, ``lo``..``hi``."""

    lo: int
    hi: int

    def __attrs_post_init__(self):
        if not (_is_int(self.lo) and _is_int(self.hi) and 0 <= self.lo <= self.hi <= 65535):
            raise RuleError("port range must be 0 <= lo <= hi <= 65535, got %r-%r"
                            % (self.lo, self.hi))

    def __contains__(self, port):
        return self.lo <= port <= self.hi

    def __str__(self):
        return str(self.lo) if self.lo == self.hi else "%d-%d" % (self.lo, self.hi)

    @classmethod
    def parse(cls, value, what="port"):
        """An int, "80", "1000-2000", a (lo, hi) pair or a PortRange."""
        if isinstance(value, PortRange):
            return value
        try:
            if _is_int(value):
                return cls(value, value)
            if isinstance(value, str):
                lo, sep, hi = value.strip().partition("-")
                return cls(int(lo), int(hi) if sep else int(lo))
            if isinstance(value, (tuple, list)) and len(value) == 2:
                return cls(*value)
        except (ValueError, TypeError) as e:
            if isinstance(e, RuleError):
                raise RuleError("%s: %s" % (what, e)) from None
        raise RuleError("%s: expected a port (0..65535), 'lo-hi' or a (lo, hi) pair, got %r"
                        % (what, value))


@attrs.frozen
class TcpFlags:
    """Matches TCP packets whose flags byte, masked with ``mask``, equals
    ``value`` (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20,
    ECE 0x40, CWR 0x80)."""

    value: int
    mask: int

    def __attrs_post_init__(self):
        if not (_is_int(self.value) and _is_int(self.mask) and 0 <= self.mask <= 255
                and self.value & ~self.mask == 0):
            raise RuleError("tcp_flags: value %r must be within mask %r (0..255)"
                            % (self.value, self.mask))

    def matches(self, flags):
        return flags & self.mask == self.value

    @classmethod
    def parse(cls, value):
        """"syn" (SYN set), "syn,!ack" (SYN set, ACK clear), "syn/syn,ack"
        (value/mask, as nftables' ``tcp flags & (syn|ack) == syn``), an int
        (that exact flags byte), a (value, mask) pair or a TcpFlags."""
        if isinstance(value, TcpFlags):
            return value
        if _is_int(value):
            return cls(value, 0xFF)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(*value)
        if not isinstance(value, str):
            raise RuleError("tcp_flags: expected a string such as 'syn,!ack', an int or "
                            "a (value, mask) pair, got %r" % (value,))
        text, sep, masktext = value.lower().replace("|", ",").partition("/")
        val = mask = 0
        for part in filter(None, (p.strip() for p in text.split(","))):
            neg = part.startswith("!")
            bit = _TCP_FLAGS.get(part.lstrip("!"))
            if bit is None:
                raise RuleError("tcp_flags: unknown flag %r (flags: %s)"
                                % (part, ", ".join(_TCP_FLAGS)))
            mask |= bit
            if not neg:
                val |= bit
        if sep:
            mask = 0
            for part in filter(None, (p.strip() for p in masktext.split(","))):
                bit = _TCP_FLAGS.get(part)
                if bit is None:
                    raise RuleError("tcp_flags: unknown flag %r in the mask" % part)
                mask |= bit
        if not mask:
            raise RuleError("tcp_flags: %r names no flag" % value)
        return cls(val, mask)

    def __str__(self):
        names = [n for n, b in _TCP_FLAGS.items() if self.mask & b]
        return ",".join(n if self.value & _TCP_FLAGS[n] else "!" + n for n in names)


def _network(value, what):
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(value)
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value.strip())
        except ValueError as e:
            raise RuleError("%s: %s" % (what, e)) from None
    raise RuleError("%s: expected an address or prefix such as '10.0.0.0/8', got %r"
                    % (what, value))


def _protocols(value):
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int)) else value
    try:
        items = list(items)
    except TypeError:
        raise RuleError("protocol: expected a name, a number or a list of them, got %r"
                        % (value,)) from None
    out = set()
    for item in items:
        if isinstance(item, str):
            name = item.strip().lower()
            if name.isdigit():
                item = int(name)
            elif name in PROTOCOLS:
                item = PROTOCOLS[name]
            else:
                raise RuleError("protocol: unknown name %r (names: %s; or a number)"
                                % (item, ", ".join(sorted(PROTOCOLS))))
        if not _is_int(item) or not 0 <= item <= 255:
            raise RuleError("protocol: expected 0..255, got %r" % (item,))
        out.add(item)
    if not out:
        raise RuleError("protocol: empty list (leave it out to match any protocol)")
    return frozenset(out)


def _ports(what):
    return lambda v: None if v is None else PortRange.parse(v, what)


def _action(value):
    if isinstance(value, (Action, RateLimit)):
        return value
    if isinstance(value, str):
        try:
            return Action(value.strip().lower())
        except ValueError:
            pass
    raise RuleError("action: expected 'pass', 'drop', 'count' or rate_limit(pps, burst), "
                    "got %r" % (value,))


def _direction(value):
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("ingress", "egress"):
        return value.strip().lower()
    raise RuleError("direction: expected 'ingress' or 'egress', got %r" % (value,))


def _name(value):
    if not isinstance(value, str):
        raise RuleError("name: expected a string, got %r" % (value,))
    return value


@attrs.frozen
class Rule:
    """One firewall rule: an action and the conditions a packet must meet
    (all of them; a condition left out matches anything).

    ``src``/``dst``: an IPv4 or IPv6 prefix of any length (a rule with one
    only matches packets of that family). ``protocol``: a name ("tcp"), a
    number, or several. ``sport``/``dport``: a port or an inclusive range
    (needs protocol tcp, udp, udplite or sctp). ``tcp_flags``: see
    :class:`TcpFlags` (needs protocol tcp). ``icmp_type``: a number or a
    name (needs protocol icmp or icmpv6). ``direction``: "ingress" or
    "egress" (XDP only sees ingress). Raises :class:`RuleError`.
    """

    action: object = attrs.field(converter=_action)
    src: object = attrs.field(default=None, kw_only=True,
                              converter=lambda v: _network(v, "src"))
    dst: object = attrs.field(default=None, kw_only=True,
                              converter=lambda v: _network(v, "dst"))
    protocol: object = attrs.field(default=None, kw_only=True, converter=_protocols)
    sport: object = attrs.field(default=None, kw_only=True, converter=_ports("sport"))
    dport: object = attrs.field(default=None, kw_only=True, converter=_ports("dport"))
    tcp_flags: object = attrs.field(
        default=None, kw_only=True, converter=lambda v: None if v is None else TcpFlags.parse(v))
    icmp_type: object = attrs.field(default=None, kw_only=True)
    direction: object = attrs.field(default=None, kw_only=True, converter=_direction)
    name: str = attrs.field(default="", kw_only=True, converter=_name)

    def __attrs_post_init__(self):
        if self.src is not None and self.dst is not None and \
                self.src.version != self.dst.version:
            raise RuleError("src %s and dst %s are of different IP versions"
                            % (self.src, self.dst))
        proto = self.protocol
        if (self.sport is not None or self.dport is not None) and (
                proto is None or not proto <= _PORT_PROTOCOLS):
            raise RuleError("sport/dport need protocol tcp, udp, udplite or sctp (got %s)"
                            % (self._proto_text() or "any protocol"))
        if self.tcp_flags is not None and proto != frozenset((6,)):
            raise RuleError("tcp_flags needs protocol tcp (got %s)"
                            % (self._proto_text() or "any protocol"))
        if self.icmp_type is not None:
            if proto is None or not proto <= _ICMP_PROTOCOLS:
                raise RuleError("icmp_type needs protocol icmp or icmpv6 (got %s)"
                                % (self._proto_text() or "any protocol"))
            t = self.icmp_type
            if isinstance(t, str):
                name = t.strip().lower()
                if name.isdigit():
                    t = int(name)
                elif len(proto) == 1 and name in _ICMP_TYPES[next(iter(proto))]:
                    t = _ICMP_TYPES[next(iter(proto))][name]
                else:
                    raise RuleError("icmp_type: unknown name %r for %s (names: %s)" % (
                        t, self._proto_text(), ", ".join(
                            _ICMP_TYPES[next(iter(proto))]) if len(proto) == 1 else
                        "use a number when both icmp and icmpv6 are given"))
            if not _is_int(t) or not 0 <= t <= 255:
                raise RuleError("icmp_type: expected 0..255, got %r" % (self.icmp_type,))
            object.__setattr__(self, "icmp_type", t)
        fam = self.family
        if fam is not None and proto is not None and (
                (fam == 4 and proto == frozenset((58,))) or
                (fam == 6 and proto == frozenset((1,)))):
            raise RuleError("protocol %s never appears in IPv%d packets; use %s" % (
                self._proto_text(), fam, "icmp" if fam == 4 else "icmpv6"))

    def _proto_text(self):
        if self.protocol is None:
            return ""
        return ",".join(_PROTO_NAMES.get(p, str(p)) for p in sorted(self.protocol))

    @property
    def family(self):
        """4 or 6 when a prefix ties the rule to one IP version, else None."""
        for net in (self.src, self.dst):
            if net is not None:
                return net.version
        return None

    @property
    def has_l4(self):
        """True if the rule looks at ports, TCP flags or the ICMP type (such
        rules never match non-first fragments)."""
        return (self.sport is not None or self.dport is not None
                or self.tcp_flags is not None or self.icmp_type is not None)

    @property
    def decides(self):
        """False for ``count`` rules, which let later rules decide."""
        return self.action is not Action.COUNT

    def describe(self):
        """A one-line summary ("drop tcp dport 22 from 10.0.0.0/8")."""
        parts = [str(self.action)]
        if self.protocol is not None:
            parts.append(self._proto_text())
        if self.sport is not None:
            parts.append("sport %s" % self.sport)
        if self.dport is not None:
            parts.append("dport %s" % self.dport)
        if self.tcp_flags is not None:
            parts.append("flags %s" % self.tcp_flags)
        if self.icmp_type is not None:
            parts.append("type %d" % self.icmp_type)
        if self.src is not None:
            parts.append("from %s" % self.src)
        if self.dst is not None:
            parts.append("to %s" % self.dst)
        if self.direction is not None:
            parts.append(self.direction)
        return " ".join(parts)

    def to_dict(self):
        """The rule as TOML/JSON-friendly data (``Rule.from_dict`` reads it)."""
        d = {}
        if self.name:
            d["name"] = self.name
        if isinstance(self.action, RateLimit):
            d.update(action="rate_limit", pps=self.action.pps, burst=self.action.burst)
        else:
            d["action"] = self.action.value
        for key in ("src", "dst"):
            if getattr(self, key) is not None:
                d[key] = str(getattr(self, key))
        if self.protocol is not None:
            names = [_PROTO_NAMES.get(p, p) for p in sorted(self.protocol)]
            d["protocol"] = names[0] if len(names) == 1 else names
        for key in ("sport", "dport", "tcp_flags"):
            if getattr(self, key) is not None:
                d[key] = str(getattr(self, key))
        if self.icmp_type is not None:
            d["icmp_type"] = self.icmp_type
        if self.direction is not None:
            d["direction"] = self.direction
        return d

    @classmethod
    def from_dict(cls, data):
        """A rule from a mapping of field names (the TOML ``[[rule]]``
        format: ``action = "rate_limit"`` takes ``pps`` and ``burst``).
        Raises RuleError naming an unknown key."""
        data = dict(data)
        action = data.pop("action", None)
        if action is None:
            raise RuleError("action: missing (pass, drop, count or rate_limit)")
        if isinstance(action, str) and action.strip().lower() in ("rate_limit", "rate-limit"):
            if "pps" not in data:
                raise RuleError("pps: rate_limit needs pps (packets per second)")
            action = rate_limit(data.pop("pps"), data.pop("burst", None))
        else:
            for key in ("pps", "burst"):
                if key in data:
                    raise RuleError("%s: only a rate_limit action takes %s" % (key, key))
        fields = {a.name for a in attrs.fields(cls)} - {"action"}
        for key in data:
            if key not in fields:
                raise RuleError("%s: unknown key (rule keys: action, pps, burst, %s)"
                                % (key, ", ".join(sorted(fields))))
        return cls(action, **data)


_ACTIONS = (Action.PASS, Action.DROP)
_FRAGMENTS = ("addresses", "drop", "pass")


def _policy(what):
    def convert(value):
        if isinstance(value, str):
            try:
                value = Action(value.strip().lower())
            except ValueError:
                pass
        if value not in _ACTIONS:
            raise RuleError("%s: expected 'pass' or 'drop', got %r" % (what, value))
        return value
    return convert


def _fragments(value):
    if isinstance(value, str) and value.strip().lower() in _FRAGMENTS:
        return value.strip().lower()
    raise RuleError("fragments: expected one of %s, got %r" % (", ".join(_FRAGMENTS), value))


def _rules(value):
    if isinstance(value, Rule):
        value = [value]
    out = []
    for i, r in enumerate(value):
        if isinstance(r, dict):
            try:
                r = Rule.from_dict(r)
            except RuleError as e:
                raise RuleError("rule %d: %s" % (i + 1, e)) from None
        if not isinstance(r, Rule):
            raise RuleError("rule %d: expected a Rule, got %r" % (i + 1, r))
        out.append(r)
    return tuple(out)


@attrs.frozen
class RuleSet:
    """An ordered list of rules (the first that matches decides) and the
    policies for everything else.

    ``default``: action when no rule matches ("pass"). ``fragments``:
    non-first IP fragments are matched on addresses and protocol only
    ("addresses": rules with ports, TCP flags or an ICMP type never match
    them), or all dropped ("drop") or passed ("pass") before the rules.
    ``malformed``: packets whose headers do not parse ("drop").
    ``non_ip``: frames that are neither IPv4 nor IPv6, e.g. ARP ("pass")."""

    rules: tuple = attrs.field(default=(), converter=_rules)
    default: Action = attrs.field(default=Action.PASS, kw_only=True,
                                  converter=_policy("default"))
    fragments: str = attrs.field(default="addresses", kw_only=True, converter=_fragments)
    malformed: Action = attrs.field(default=Action.DROP, kw_only=True,
                                    converter=_policy("malformed"))
    non_ip: Action = attrs.field(default=Action.PASS, kw_only=True,
                                 converter=_policy("non_ip"))

    def policies(self):
        """The policies as keyword arguments (``RuleSet(rules, **p)``)."""
        return dict(default=self.default, fragments=self.fragments,
                    malformed=self.malformed, non_ip=self.non_ip)

    def to_dict(self):
        """TOML/JSON-friendly data (``RuleSet.from_dict`` reads it)."""
        return {"firewall": {"default": self.default.value, "fragments": self.fragments,
                             "malformed": self.malformed.value,
                             "non_ip": self.non_ip.value},
                "rule": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, data):
        """From ``{"firewall": {policies}, "rule": [rule tables]}``."""
        policies = dict(data.get("firewall", {}))
        return cls(data.get("rule", ()), **policies)


class Reason(enum.Enum):
    """Why a packet got its verdict."""
    RULE = "rule"                  # a pass/drop rule, or a rate limit within its rate
    RATE_LIMITED = "rate_limited"  # a rate-limit rule over its rate
    DEFAULT = "default"            # no rule matched
    MALFORMED = "malformed"
    FRAGMENT = "fragment"          # a non-first fragment, fragments="drop"/"pass"
    NON_IP = "non_ip"

    def __str__(self):
        return self.value


@attrs.frozen
class Verdict:
    """The fate of one packet: ``action`` (Action.PASS or Action.DROP),
    ``reason``, ``rule`` (index of the deciding rule in the rule set, or
    None) and ``counted`` (indexes of the ``count`` rules it went through)."""

    action: Action
    reason: Reason
    rule: object = None
    counted: tuple = ()

    @property
    def passed(self):
        return self.action is Action.PASS

    def __str__(self):
        where = " (rule %d)" % self.rule if self.rule is not None else ""
        return "%s: %s%s" % (self.action, self.reason, where)
