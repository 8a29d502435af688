"""Load balancer configuration: the value classes (``Service``, ``Backend``,
``HealthCheck``, ``LbConfig``; frozen attrs, no kernel state) and the TOML
file format::

    [lb]                        # optional
    interface = "eth0"          # where `pybpfnet lb apply` attaches (--iface wins)
    table_size = 65537          # default Maglev table size (a prime)
    nat_tracking = "lru"        # NAT flows: "lru" table or "conntrack" (TCP states)

    [[service]]
    name = "web"
    vip = "10.0.0.100"
    port = 80
    protocol = "tcp"            # "tcp" or "udp"
    mode = "dsr-ipip"           # "dsr-ipip", "dsr-gue", "l2-dsr" or "nat"
    affinity = "none"           # "source": one client address, one backend

    [service.health]            # optional; "tcp" connect by default
    kind = "http"               # "tcp", "http" or "none"
    path = "/healthz"
    interval = 1.0              # seconds between checks of one backend
    timeout = 0.5
    rise = 2                    # successes in a row to come back
    fall = 3                    # failures in a row to be taken out

    [[service.backend]]
    name = "web1"
    address = "10.0.0.11"
    weight = 1                  # 0 = drained

A file with any error is rejected whole: LbConfigError("FILE:LINE: reason").
"""

import ipaddress
import re

import attrs

from pybpfnet.dataplanes import _toml
from pybpfnet.dataplanes.maglev import is_prime

__all__ = ["Backend", "Service", "HealthCheck", "LbConfig", "LbConfigError", "MODES",
           "AFFINITIES", "PROTOCOLS", "HEALTH_KINDS", "NAT_TRACKING", "DEFAULT_TABLE_SIZE",
           "MAX_WEIGHT", "parse_toml", "load_config"]

#: Forwarding modes: IP-in-IP and GUE (UDP) encapsulation to the backend,
#: which decapsulates and answers the client directly; L2 DSR (only the
#: destination MAC is rewritten; backends share the LB's L2 segment);
#: NAT (destination address/port rewritten, replies return through the LB).
MODES = ("dsr-ipip", "dsr-gue", "l2-dsr", "nat")
PROTOCOLS = {"tcp": 6, "udp": 17}
#: How flows are hashed: "none" (the 5-tuple: every connection on its own)
#: or "source" (the client address only: a client sticks to one backend).
AFFINITIES = ("none", "source")
HEALTH_KINDS = ("tcp", "http", "none")
#: How NAT services track their flows: "lru" (a flow table) or "conntrack"
#: (the connection tracker: real TCP states, closed connections leave).
NAT_TRACKING = ("lru", "conntrack")
DEFAULT_TABLE_SIZE = 65537
MAX_WEIGHT = 1000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


class LbConfigError(ValueError):
    """A load balancer configuration that cannot be used; the message names
    the field (and, for files, the line)."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_name(what):
    def check(inst, attribute, value):
        if not isinstance(value, str) or not _NAME.match(value):
            raise LbConfigError("%s name: 1..32 characters [A-Za-z0-9_.-] starting with a "
                                "letter or digit expected, got %r" % (what, value))
    return check


def _check_port(optional):
    def check(inst, attribute, value):
        if value is None and optional:
            return
        if not _is_int(value) or not 1 <= value <= 65535:
            raise LbConfigError("%s: a port number in 1..65535 expected, got %r"
                                % (attribute.name, value))
    return check


def _address(value):
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise LbConfigError("address: an IPv4 or IPv6 address expected, got %r"
                            % (value,)) from None


def _vip(value):
    try:
        return _address(value)
    except LbConfigError:
        raise LbConfigError("vip: an IPv4 or IPv6 address expected, got %r"
                            % (value,)) from None


def _seconds(name, lo=0.001, hi=3600.0):
    def check(inst, attribute, value):
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not lo <= value <= hi):
            raise LbConfigError("%s: seconds in %g..%g expected, got %r" % (name, lo, hi, value))
    return check


def _count(name, hi=100):
    def check(inst, attribute, value):
        if not _is_int(value) or not 1 <= value <= hi:
            raise LbConfigError("%s: an int in 1..%d expected, got %r" % (name, hi, value))
    return check


def _check_table_size(optional):
    def check(inst, attribute, value):
        if value is None and optional:
            return
        if not _is_int(value) or not 3 <= value <= 1 << 20 or not is_prime(value):
            raise LbConfigError("table_size: a prime in 3..1048576 expected (e.g. 251, "
                                "4099, 65537), got %r" % (value,))
    return check


def _status_range(value):
    if isinstance(value, tuple) and len(value) == 2:
        lo, hi = value
    elif _is_int(value):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\d{3}(-\d{3})?", value.strip()):
        lo, _, hi = value.strip().partition("-")
        lo, hi = int(lo), int(hi or lo)
    else:
        raise LbConfigError("expect: an HTTP status or range (\"200-399\") expected, got %r"
                            % (value,))
    if not (_is_int(lo) and _is_int(hi) and 100 <= lo <= hi <= 599):
        raise LbConfigError("expect: statuses in 100..599, low <= high expected, got %r"
                            % (value,))
    return (lo, hi)


@attrs.frozen
class HealthCheck:
    """How the LB checks a backend (from its own network namespace).

    ``kind``: "tcp" (a TCP connect succeeds), "http" (``GET path`` answers
    with a status in ``expect``) or "none" (always healthy). ``port``:
    where to check (default: the backend's port, else the service port).
    Every ``interval`` seconds, each check given ``timeout`` seconds; a
    healthy backend goes down after ``fall`` failures in a row, a down one
    comes back after ``rise`` successes in a row. Backends start healthy.
    """

    kind: str = attrs.field(default="tcp")
    port: int | None = attrs.field(default=None, validator=_check_port(True))
    path: str = attrs.field(default="/")
    interval: float = attrs.field(default=1.0, validator=_seconds("interval"))
    timeout: float = attrs.field(default=0.5, validator=_seconds("timeout"))
    rise: int = attrs.field(default=2, validator=_count("rise"))
    fall: int = attrs.field(default=3, validator=_count("fall"))
    expect: tuple = attrs.field(default=(200, 399), converter=_status_range)
    host: str | None = attrs.field(default=None)

    @kind.validator
    def _check_kind(self, attribute, value):
        if value not in HEALTH_KINDS:
            raise LbConfigError("kind: one of %s expected, got %r"
                                % (", ".join(map(repr, HEALTH_KINDS)), value))

    @path.validator
    def _check_path(self, attribute, value):
        if (not isinstance(value, str) or not value.startswith("/")
                or any(c in value for c in " \r\n\t") or len(value) > 1024):
            raise LbConfigError("path: an absolute HTTP path (\"/healthz\") without "
                                "whitespace expected, got %r" % (value,))

    @host.validator
    def _check_host(self, attribute, value):
        if value is not None and (not isinstance(value, str) or not value
                                  or any(c in value for c in " \r\n\t/")):
            raise LbConfigError("host: an HTTP Host header value expected, got %r" % (value,))

    def __attrs_post_init__(self):
        if self.timeout > self.interval:
            raise LbConfigError("timeout: at most interval (%g s) expected, got %g"
                                % (self.interval, self.timeout))

    def to_dict(self):
        d = {"kind": self.kind, "path": self.path, "interval": self.interval,
             "timeout": self.timeout, "rise": self.rise, "fall": self.fall,
             "expect": "%d-%d" % self.expect}
        if self.port is not None:
            d["port"] = self.port
        if self.host is not None:
            d["host"] = self.host
        return d

    @classmethod
    def from_dict(cls, d):
        _known("health", d, ("kind", "port", "path", "interval", "timeout", "rise", "fall",
                             "expect", "host"))
        return cls(**d)

    def describe(self):
        if self.kind == "none":
            return "none"
        what = "http GET %s" % self.path if self.kind == "http" else "tcp connect"
        return "%s%s every %gs (timeout %gs, rise %d, fall %d)" % (
            what, " :%d" % self.port if self.port else "", self.interval, self.timeout,
            self.rise, self.fall)


@attrs.frozen
class Backend:
    """A real server behind a service: ``name`` (unique in the service; the
    Maglev permutation is derived from it, so a backend keeps its slots
    across restarts and changes), ``address`` (where packets go: the outer
    destination for IPIP/GUE, the new destination for NAT, the host whose
    MAC L2 DSR uses), ``weight`` (relative share, 0..1000; 0 = drained: no
    new flows, established ones go on) and ``port`` (NAT only: the
    backend's port, default the service port)."""

    name: str = attrs.field(validator=_check_name("backend"))
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = attrs.field(converter=_address)
    weight: int = attrs.field(default=1)
    port: int | None = attrs.field(default=None, validator=_check_port(True))

    @weight.validator
    def _check_weight(self, attribute, value):
        if not _is_int(value) or not 0 <= value <= MAX_WEIGHT:
            raise LbConfigError("weight: an int in 0..%d expected, got %r"
                                % (MAX_WEIGHT, value))

    def to_dict(self):
        d = {"name": self.name, "address": str(self.address), "weight": self.weight}
        if self.port is not None:
            d["port"] = self.port
        return d

    @classmethod
    def from_dict(cls, d):
        _known("backend", d, ("name", "address", "weight", "port"))
        for key in ("name", "address"):
            if key not in d:
                raise LbConfigError("%s: missing (every backend needs a name and an "
                                    "address)" % key)
        return cls(**d)


def _backends(value):
    if isinstance(value, Backend):
        value = (value,)
    out = []
    for b in value:
        out.append(b if isinstance(b, Backend) else Backend.from_dict(dict(b)))
    return tuple(out)


def _health(value):
    if value is None:
        return HealthCheck()
    if isinstance(value, HealthCheck):
        return value
    if isinstance(value, dict):
        return HealthCheck.from_dict(value)
    raise LbConfigError("health: a HealthCheck or a table expected, got %r" % (value,))


@attrs.frozen
class Service:
    """A virtual service: clients connect to ``vip``:``port`` (``protocol``
    "tcp" or "udp"); the LB spreads flows over ``backends`` with a Maglev
    table of ``table_size`` slots (None: the LB's default) and forwards in
    ``mode`` (see MODES). ``affinity``: "none" (flows hashed by 5-tuple)
    or "source" (by client address: all of a client's connections go to
    one backend). ``health`` says how backends are checked."""

    name: str = attrs.field(validator=_check_name("service"))
    vip: ipaddress.IPv4Address | ipaddress.IPv6Address = attrs.field(converter=_vip)
    port: int = attrs.field(validator=_check_port(False))
    protocol: str = attrs.field(default="tcp")
    mode: str = attrs.field(default="dsr-ipip")
    backends: tuple = attrs.field(default=(), converter=_backends)
    health: HealthCheck = attrs.field(default=None, converter=_health)
    table_size: int | None = attrs.field(default=None, validator=_check_table_size(True))
    affinity: str = attrs.field(default="none")

    @affinity.validator
    def _check_affinity(self, attribute, value):
        if value not in AFFINITIES:
            raise LbConfigError("affinity: \"none\" or \"source\" expected, got %r"
                                % (value,))

    @protocol.validator
    def _check_protocol(self, attribute, value):
        if value not in PROTOCOLS:
            raise LbConfigError("protocol: \"tcp\" or \"udp\" expected, got %r" % (value,))

    @mode.validator
    def _check_mode(self, attribute, value):
        if value not in MODES:
            raise LbConfigError("mode: one of %s expected, got %r"
                                % (", ".join(map(repr, MODES)), value))

    @backends.validator
    def _check_backends(self, attribute, value):
        seen = set()
        for b in value:
            if b.name in seen:
                raise LbConfigError("backend %s: duplicate name in service %s"
                                    % (b.name, self.name))
            seen.add(b.name)
            if b.address.version != self.vip.version and self.mode in ("nat", "l2-dsr"):
                raise LbConfigError("backend %s: %s is IPv%d but the vip is IPv%d (mode %s "
                                    "needs one family)" % (b.name, b.address,
                                                           b.address.version,
                                                           self.vip.version, self.mode))
            if b.port is not None and self.mode != "nat":
                raise LbConfigError("backend %s: port: only NAT rewrites the port (mode is "
                                    "%s)" % (b.name, self.mode))

    @property
    def key(self):
        """(vip, port, protocol): what identifies the service on the wire."""
        return (self.vip, self.port, self.protocol)

    def backend(self, name):
        """The backend called ``name``; KeyError if there is none."""
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError("service %s has no backend %r (backends: %s)"
                       % (self.name, name, ", ".join(b.name for b in self.backends) or "none"))

    def to_dict(self):
        d = {"name": self.name, "vip": str(self.vip), "port": self.port,
             "protocol": self.protocol, "mode": self.mode,
             "health": self.health.to_dict(),
             "backend": [b.to_dict() for b in self.backends]}
        if self.table_size is not None:
            d["table_size"] = self.table_size
        if self.affinity != "none":
            d["affinity"] = self.affinity
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        _known("service", d, ("name", "vip", "port", "protocol", "mode", "affinity",
                              "health", "backend", "backends", "table_size"))
        for key in ("name", "vip", "port"):
            if key not in d:
                raise LbConfigError("%s: missing (every service needs a name, a vip and a "
                                    "port)" % key)
        if "backend" in d:
            d["backends"] = d.pop("backend")
        return cls(**d)


@attrs.frozen
class LbConfig:
    """A whole configuration: ``services`` plus defaults (``interface`` to
    attach to, Maglev ``table_size``) and ``nat_tracking`` (see
    NAT_TRACKING; fixed when the LB is loaded)."""

    services: tuple = attrs.field(default=(), converter=lambda v: tuple(
        s if isinstance(s, Service) else Service.from_dict(s) for s in v))
    interface: str | None = attrs.field(default=None)
    table_size: int = attrs.field(default=DEFAULT_TABLE_SIZE,
                                  validator=_check_table_size(False))
    nat_tracking: str = attrs.field(default="lru")

    @services.validator
    def _check_services(self, attribute, value):
        names, keys = set(), set()
        for s in value:
            if s.name in names:
                raise LbConfigError("service %s: duplicate name" % s.name)
            if s.key in keys:
                raise LbConfigError("service %s: another service already has %s port %d/%s"
                                    % (s.name, s.vip, s.port, s.protocol))
            names.add(s.name)
            keys.add(s.key)

    @interface.validator
    def _check_interface(self, attribute, value):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) < 16
                                  or any(c in value for c in "/: \t\n")):
            raise LbConfigError("interface: an interface name expected, got %r" % (value,))

    @nat_tracking.validator
    def _check_nat_tracking(self, attribute, value):
        if value not in NAT_TRACKING:
            raise LbConfigError("nat_tracking: \"lru\" or \"conntrack\" expected, got %r"
                                % (value,))

    def service(self, name):
        """The service called ``name``; KeyError if there is none."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError("no service %r (services: %s)"
                       % (name, ", ".join(s.name for s in self.services) or "none"))

    def to_dict(self):
        lb = {"table_size": self.table_size}
        if self.nat_tracking != "lru":
            lb["nat_tracking"] = self.nat_tracking
        if self.interface is not None:
            lb["interface"] = self.interface
        return {"lb": lb, "service": [s.to_dict() for s in self.services]}

    @classmethod
    def from_dict(cls, d):
        lb = dict(d.get("lb", {}))
        _known("lb", lb, ("interface", "table_size", "nat_tracking"))
        return cls(services=d.get("service", ()), **lb)

    def to_toml(self):
        """The configuration as TOML text (``parse_toml`` reads it back)."""
        def val(v):
            if isinstance(v, str):
                return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
            return repr(v)
        out = ["[lb]"]
        out += ["%s = %s" % (k, val(v)) for k, v in self.to_dict()["lb"].items()]
        for s in self.services:
            d = s.to_dict()
            out += ["", "[[service]]"]
            out += ["%s = %s" % (k, val(v)) for k, v in d.items()
                    if k not in ("health", "backend")]
            out += ["", "[service.health]"]
            out += ["%s = %s" % (k, val(v)) for k, v in d["health"].items()]
            for b in d["backend"]:
                out += ["", "[[service.backend]]"]
                out += ["%s = %s" % (k, val(v)) for k, v in b.items()]
        return "\n".join(out) + "\n"


def _known(what, d, keys):
    for key in d:
        if key not in keys:
            raise LbConfigError("%s: unknown key (%s keys: %s)" % (key, what, ", ".join(keys)))


# ------------------------------------------------------------------ TOML with lines



class _Lines:
    """Lines of the tables and keys of a config file: [lb], each
    [[service]], its [service.health] and each [[service.backend]]."""

    def __init__(self, text):
        self.tables = {}        # ("lb",) / ("service", i) / ("health", i) / ("backend", i, j)
        self.keys = {}          # table id -> {key: line}
        self.top = {}
        section = None
        n_service = -1
        n_backend = {}
        for n, bracket, name, key in _toml.lines(text):
            if key is None:
                name = re.sub(r"\s*\.\s*", ".", name.strip().replace('"', "").replace("'", ""))
                if bracket == "[[" and name == "service":
                    n_service += 1
                    section = ("service", n_service)
                elif bracket == "[" and name == "service.health":
                    section = ("health", n_service)
                elif bracket == "[[" and name == "service.backend":
                    j = n_backend.get(n_service, -1) + 1
                    n_backend[n_service] = j
                    section = ("backend", n_service, j)
                elif bracket == "[" and name == "lb":
                    section = ("lb",)
                else:
                    section = ("other", name)
                    self.top.setdefault(name.split(".")[0], n)
                self.tables.setdefault(section, n)
            elif section is None:
                self.top.setdefault(key, n)
            else:
                self.keys.setdefault(section, {}).setdefault(key, n)

    def line(self, table, key=None):
        keys = self.keys.get(table, {})
        if key is not None and key in keys:
            return keys[key]
        if table in self.tables:
            return self.tables[table]
        if table[0] in ("health", "backend") and ("service", table[1]) in self.tables:
            # inline table / array in the service: the key naming it
            return self.line(("service", table[1]), "health" if table[0] == "health"
                             else "backend")
        return self.top.get(table[0], 1)


def _field(message):
    m = re.match(r"([a-z_]+): ", message)
    return m.group(1) if m else None


def parse_toml(text, source="<config>"):
    """An LbConfig from TOML text; LbConfigError("source:line: reason") on
    the first problem (nothing is half-used)."""
    data = _toml.loads(text, source, LbConfigError)
    where = _Lines(text)

    def fail(line, message):
        raise LbConfigError("%s:%s: %s" % (source, line, message))

    for key in data:
        if key not in ("lb", "service"):
            fail(where.top.get(key, 1), "unknown table or key %r (expected [lb] and "
                 "[[service]])" % key)
    lb = data.get("lb", {})
    if not isinstance(lb, dict):
        fail(where.top.get("lb", 1), "lb must be a table")
    try:
        _known("lb", lb, ("interface", "table_size", "nat_tracking"))
        base = LbConfig(**lb)
    except LbConfigError as e:
        fail(where.line(("lb",), _field(str(e))), "[lb] %s" % e)
    services_data = data.get("service", [])
    if not isinstance(services_data, list):
        fail(where.top.get("service", 1), "service must be an array of tables ([[service]])")
    services = []
    for i, item in enumerate(services_data):
        label = "service %d%s" % (i + 1, " (%s)" % item["name"]
                                  if isinstance(item, dict)
                                  and isinstance(item.get("name"), str) else "")
        if not isinstance(item, dict):
            fail(where.line(("service", i)), "%s: expected a table" % label)
        health = item.get("health")
        if health is not None:
            if not isinstance(health, dict):
                fail(where.line(("service", i), "health"),
                     "%s: health must be a table ([service.health])" % label)
            try:
                HealthCheck.from_dict(health)
            except LbConfigError as e:
                fail(where.line(("health", i), _field(str(e))), "%s: health %s" % (label, e))
        backends = item.get("backend", [])
        if not isinstance(backends, list):
            fail(where.line(("service", i), "backend"),
                 "%s: backend must be an array of tables ([[service.backend]])" % label)
        for j, b in enumerate(backends):
            if not isinstance(b, dict):
                fail(where.line(("backend", i, j)), "%s: backend %d: expected a table"
                     % (label, j + 1))
            try:
                Backend.from_dict(b)
            except LbConfigError as e:
                fail(where.line(("backend", i, j), _field(str(e))), "%s: backend %d%s: %s" % (
                    label, j + 1, " (%s)" % b["name"] if isinstance(b.get("name"), str)
                    else "", e))
        try:
            services.append(Service.from_dict(item))
        except LbConfigError as e:
            msg = str(e)
            m = re.match(r"backend (\S+): (?:([a-z_]+): )?", msg)
            if m and not msg.startswith("backend: "):
                # the last backend of that name (for a duplicate: the second)
                j = max((j for j, b in enumerate(backends) if b.get("name") == m.group(1)),
                        default=0)
                line = where.line(("backend", i, j), m.group(2))
            else:
                line = where.line(("service", i), _field(msg))
            fail(line, "%s: %s" % (label, msg))
    try:
        return attrs.evolve(base, services=services)
    except LbConfigError as e:
        m = re.match(r"service (\S+): ", str(e))
        i = next((i for i, s in enumerate(services) if m and s.name == m.group(1)), 0)
        fail(where.line(("service", i), "port" if "port" in str(e) else "name"), str(e))


def load_config(path):
    """An LbConfig from a TOML file. Raises LbConfigError with the file, line
    and reason, OSError if the file cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LbConfigError("%s: not UTF-8 text (%s)" % (path, e)) from None
    return parse_toml(text, str(path))
