"""Names for addresses: the pluggable resolvers that fill the workload
names of flow and L7 records (``FlowRecord.src_name``/``dst_name``,
``DnsRecord``/``HttpRecord.client_name``/``server_name``).

A resolver is any object with ``name(addr) -> str | None`` (the
:class:`Resolver` protocol); ``addr`` is an ``ipaddress`` address. It is
called for every record made, so it must be fast and must not block (no
DNS lookups: put a cache in front of anything slow).

* :class:`StaticResolver` -- a fixed table of addresses and networks,
  longest-prefix match; from a file with :meth:`StaticResolver.from_file`.
* :class:`CachingResolver` -- remembers another resolver's answers.
* :class:`ChainResolver` -- the first resolver that knows a name wins.

A Kubernetes-aware resolver (pod and service IPs) will implement the same
protocol. No privileges needed.
"""

import collections
import ipaddress
import os
import threading
import tomllib
import typing

__all__ = ["Resolver", "StaticResolver", "CachingResolver", "ChainResolver"]


@typing.runtime_checkable
class Resolver(typing.Protocol):
    """What the monitors call to name an address."""

    def name(self, addr) -> typing.Optional[str]:
        """The workload name of ``addr`` (an ipaddress address), or None."""


class StaticResolver:
    """Names from a fixed table of addresses and networks (IPv4 and IPv6):
    the longest matching prefix wins, so "10.0.0.0/8 cluster" and
    "10.0.0.5 db" name 10.0.0.5 "db" and 10.1.2.3 "cluster".

    ``entries``: a mapping or pairs of (address or CIDR string / ipaddress
    object, name). Raises ValueError naming the bad entry.
    """

    def __init__(self, entries=()):
        self._nets = {4: {}, 6: {}}     # version -> {prefixlen: {network int: name}}
        items = entries.items() if hasattr(entries, "items") else entries
        for where, item in enumerate(items, 1):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError("entry %d: expected a (CIDR-or-IP, name) pair, not %r"
                                 % (where, item))
            self._add(item[0], item[1], "entry %d" % where)

    def _add(self, net, name, where):
        if not isinstance(name, str) or not name:
            raise ValueError("%s: the name must be a non-empty string, not %r" % (where, name))
        try:
            network = ipaddress.ip_network(net, strict=False) \
                if not isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else net
        except (ValueError, TypeError):
            raise ValueError("%s: %r is not an IP address or CIDR network" % (where, net)) \
                from None
        table = self._nets[network.version].setdefault(network.prefixlen, {})
        table[int(network.network_address)] = name

    @classmethod
    def from_file(cls, path):
        """A resolver from a file: TOML (``*.toml``: a ``[names]`` table of
        ``"CIDR-or-IP" = "name"``) or plain lines ``CIDR-or-IP name``
        (``#`` starts a comment; blank lines are skipped). Raises
        FileNotFoundError, or ValueError naming ``file:line``."""
        path = os.fspath(path)
        self = cls()
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                try:
                    doc = tomllib.load(f)
                except tomllib.TOMLDecodeError as e:
                    raise ValueError("%s: %s" % (path, e)) from None
            names = doc.get("names")
            if not isinstance(names, dict):
                raise ValueError("%s: expected a [names] table of \"CIDR-or-IP\" = \"name\""
                                 % path)
            for net, name in names.items():
                self._add(net, name, "%s: [names] %r" % (path, net))
            return self
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split("#", 1)[0].split()
                if not fields:
                    continue
                where = "%s:%d" % (path, lineno)
                if len(fields) != 2:
                    raise ValueError("%s: expected 'CIDR-or-IP name', got %r"
                                     % (where, line.strip()))
                self._add(fields[0], fields[1], where)
        return self

    def name(self, addr):
        """The name of the longest prefix holding ``addr`` (None: none does)."""
        if not isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            addr = ipaddress.ip_address(addr)
        if addr.version == 6 and addr.ipv4_mapped is not None and self._nets[4]:
            addr = addr.ipv4_mapped
        value = int(addr)
        bits = addr.max_prefixlen
        tables = self._nets[addr.version]
        for plen in sorted(tables, reverse=True):
            name = tables[plen].get(value >> (bits - plen) << (bits - plen))
            if name is not None:
                return name
        return None

    def __len__(self):
        """The number of addresses and networks in the table."""
        return sum(len(t) for v in self._nets.values() for t in v.values())

    def __repr__(self):
        return "<StaticResolver %d entries>" % len(self)


class CachingResolver:
    """Remembers up to ``maxsize`` answers (None too) of ``resolver`` (least
    recently used go first). Thread-safe. Raises ValueError for a
    ``maxsize`` below 1."""

    def __init__(self, resolver, maxsize=65536):
        if int(maxsize) < 1:
            raise ValueError("maxsize must be at least 1, not %r" % (maxsize,))
        self.resolver = resolver
        self.maxsize = int(maxsize)
        self._cache = collections.OrderedDict()
        self._lock = threading.Lock()

    def name(self, addr):
        """The wrapped resolver's answer for ``addr``, remembered."""
        with self._lock:
            if addr in self._cache:
                self._cache.move_to_end(addr)
                return self._cache[addr]
        value = self.resolver.name(addr)
        with self._lock:
            self._cache[addr] = value
            if len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        return value

    def clear(self):
        """Forget every remembered answer."""
        with self._lock:
            self._cache.clear()


class ChainResolver:
    """Asks ``resolvers`` in order; the first name that is not None wins."""

    def __init__(self, *resolvers):
        self.resolvers = resolvers

    def name(self, addr):
        """The first name a resolver gives ``addr`` (None: none does)."""
        for r in self.resolvers:
            value = r.name(addr)
            if value is not None:
                return value
        return None
