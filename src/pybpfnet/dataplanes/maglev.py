"""Maglev consistent hashing: the lookup table of a Maglev L4 load balancer.

::

    from pybpfnet import Maglev

    m = Maglev(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])
    m.lookup(0x9E3779B9)                   # the backend for a 5-tuple hash
    m2 = m.with_backends(["10.0.0.1:80", "10.0.0.3:80"])
    m.disruption(m2)                       # ~1/3: only the removed backend's slots move

The table is populated as in Eisenbud et al., "Maglev: A Fast and Reliable
Software Network Load Balancer" (NSDI 2016), section 3.4 and Pseudocode 1:
each backend has a permutation of the table's slots, ``(offset + j * skip)
mod M``, and the backends take turns claiming their next preferred empty
slot until the table is full. The hot loop runs in C
(csrc/glue/pybn_maglev.c through :mod:`pybpfnet._maglev`);
:func:`maglev_table_py` is a pure-Python reference that the tests compare it
with, entry for entry. Weights, the hashes and the canonical order are
described in docs/maglev.md.

Pure user space: no kernel feature or capability is needed.
"""

import array
import warnings
from collections.abc import Mapping

from pybpfnet import _maglev

__all__ = ["Maglev", "DEFAULT_SIZE", "maglev_table_py", "maglev_hashes",
           "maglev_permutation", "is_prime"]

DEFAULT_SIZE = 65537          # the paper's M: a prime, ~65 slots per backend at N=1000
MAX_SIZE = 0x7FFFFFFF         # table entries are int32 backend indices
MAX_WEIGHT = 0xFFFFFFFF
_BASIS1 = _maglev.BASIS1
_BASIS2 = _maglev.BASIS2
_FNV_PRIME = 0x100000001B3
_M64 = 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------- helpers

def is_prime(n):
    """True if the integer ``n`` is prime (deterministic for n < 3.2e9)."""
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    # bases 2, 3, 5, 7 decide every n < 3,215,031,751 (Jaeschke 1993)
    for a in (2, 3, 5, 7):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _nearest_primes(n):
    lo = n - 1
    while lo >= 2 and not is_prime(lo):
        lo -= 1
    hi = n + 1
    while not is_prime(hi):
        hi += 1
    return (lo if lo >= 2 else None), hi


def _check_size(size):
    if size == DEFAULT_SIZE and type(size) is int:
        return size
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError("Maglev table size must be an int (a prime), got %r" % (size,))
    if not 2 <= size <= MAX_SIZE:
        raise ValueError("Maglev table size must be a prime in [2, %d], got %d"
                         % (MAX_SIZE, size))
    if not is_prime(size):
        lo, hi = _nearest_primes(size)
        raise ValueError("Maglev table size must be a prime number, got %d (nearest "
                         "primes: %s)" % (size, ", ".join(str(p) for p in (lo, hi) if p)))
    return size


def _encode(name):
    if isinstance(name, str):
        try:
            return name.encode()
        except UnicodeEncodeError as exc:
            raise ValueError("Maglev backend name %r is not valid UTF-8: %s"
                             % (name, exc)) from None
    if isinstance(name, (bytes, bytearray, memoryview)):
        return bytes(name)
    raise TypeError("Maglev backend name must be str or bytes, got %r" % (name,))


def _canonical(backends, fast=True):
    """``(names, encoded, weights, blob)`` sorted by encoded name; weights
    are ints in [0, 2**32); either ``encoded`` is the list of encoded names
    or ``blob`` is them joined by NUL bytes (the other is None)."""
    if isinstance(backends, (str, bytes, bytearray)):
        raise TypeError("Maglev backends must be an iterable of names or a mapping "
                        "name -> weight, got the single name %r" % (backends,))
    if isinstance(backends, Mapping):
        weighted = True
        given = list(backends)
    else:
        weighted = False
        given = backends if type(backends) is list else list(backends)
    if fast and given:
        # Only a shortcut for the common case (str names without NUL): one
        # encode of the NUL-joined names. UTF-8 preserves code point order,
        # so sorting the str sorts the encoded names.
        try:
            joined = "".join(given)             # TypeError unless all are str
        except TypeError:
            joined = "\0"
        if "\0" not in joined:
            names = sorted(given)
            try:
                blob = "\0".join(names).encode()
            except UnicodeEncodeError:
                blob = None
            if blob is not None and names[0] and len(set(names)) == len(names):
                if not weighted:
                    return tuple(names), None, [1] * len(names), blob
                weights = list(map(backends.__getitem__, names))
                if set(map(type, weights)) == {int} and (
                        0 <= min(weights) and max(weights) <= MAX_WEIGHT):
                    return tuple(names), None, weights, blob
    # the general path: any mix of str and bytes, and every error message
    if weighted:
        pairs = list(backends.items())
        for name, w in pairs:
            if isinstance(w, bool) or not isinstance(w, int):
                raise TypeError("Maglev weight of backend %r must be an int >= 0, got %r"
                                % (name, w))
            if not 0 <= w <= MAX_WEIGHT:
                raise ValueError("Maglev weight of backend %r must be in [0, %d], got %d"
                                 % (name, MAX_WEIGHT, w))
    else:
        pairs = [(name, 1) for name in given]
    keyed = [(_encode(name), name, w) for name, w in pairs]
    # bytearray/memoryview names are kept as bytes (hashable, immutable)
    keyed = [(e, n if isinstance(n, (str, bytes)) else e, w) for e, n, w in keyed]
    keyed.sort(key=lambda t: t[0])
    encoded = [k[0] for k in keyed]
    for i in range(1, len(encoded)):
        if encoded[i] == encoded[i - 1]:
            raise ValueError("duplicate Maglev backend name %r" % (keyed[i][1],))
    if encoded and not encoded[0]:
        raise ValueError("Maglev backend names must not be empty")
    return (tuple(k[1] for k in keyed), encoded, [k[2] for k in keyed], None)


# ---------------------------------------------------------------- reference

def _fnv1a64(data, basis):
    h = basis
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _M64
    return h


def _fmix64(h):
    # MurmurHash3's 64-bit finalizer (avalanche: every input bit flips each
    # output bit with probability ~1/2)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def maglev_hashes(name):
    """Maglev's ``(h1, h2)`` of a backend name (str is UTF-8 encoded):
    MurmurHash3's fmix64 finalizer over FNV-1a-64, started from the FNV
    offset basis (h1) and from that basis rotated by 32 bits (h2)."""
    data = _encode(name)
    return _fmix64(_fnv1a64(data, _BASIS1)), _fmix64(_fnv1a64(data, _BASIS2))


def maglev_permutation(name, size):
    """``(offset, skip)`` of ``name``'s permutation in a table of ``size``
    entries: ``h1 % size`` and ``h2 % (size - 1) + 1``."""
    h1, h2 = maglev_hashes(name)
    return h1 % size, h2 % (size - 1) + 1


def maglev_table_py(backends, size=DEFAULT_SIZE):
    """The Maglev lookup table, computed in pure Python (the reference the
    C implementation is tested against; slow: use :class:`Maglev`).

    ``backends`` and ``size`` are as for :class:`Maglev`. Returns a list of
    ``size`` indices into the canonical (sorted) backend order, -1 where
    empty. Raises ValueError/TypeError as :class:`Maglev` does.
    """
    _check_size(size)
    _, encoded, weights, _ = _canonical(backends, fast=False)
    n = len(encoded)
    perms = [maglev_permutation(e, size) for e in encoded]
    table = [-1] * size
    wmax = max(weights, default=0)
    if wmax == 0:
        return table
    nxt = [0] * n                    # Pseudocode 1's next[i]
    target = [wmax] * n
    filled = 0
    rnd = 0
    while True:
        rnd += 1
        for i in range(n):
            # weighted turn taking: see docs/maglev.md
            if rnd * weights[i] < target[i]:
                continue
            target[i] += wmax
            offset, skip = perms[i]
            c = (offset + nxt[i] * skip) % size
            while table[c] >= 0:
                nxt[i] += 1
                c = (offset + nxt[i] * skip) % size
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                return table


# ---------------------------------------------------------------- Maglev

class Maglev:
    """A Maglev lookup table over named backends.

    ``backends`` is an iterable of names (str, UTF-8 encoded, or bytes), all
    of weight 1, or a mapping name -> weight (int >= 0; a backend's share of
    the table is proportional to its weight, weight 0 gets no slot). The
    table depends only on the set of names, their weights and ``size``,
    never on the order they were given in: backends are kept sorted by
    their encoded names (:attr:`backends`).

    ``size`` (M) must be a prime; the paper's default 65,537 suits up to
    ~650 backends at its 1% imbalance bound, since M should be >= 100 x the
    number of backends (a ``UserWarning`` says so when it is not).

    Minimum kernel: none (pure user space); capability: none.

    Raises:
        ValueError: ``size`` not a prime in [2, 2**31), a negative or
            too large weight, a duplicate or empty name.
        TypeError: a name that is not str/bytes, a weight that is not an int.
    """

    __slots__ = ("_size", "_names", "_encoded", "_weights", "_table", "_filled",
                 "_balance")

    def __init__(self, backends=(), size=DEFAULT_SIZE):
        self._build(backends, size, 3)

    def _build(self, backends, size, stacklevel):
        _check_size(size)
        names, encoded, weights, blob = _canonical(backends)
        distinct = set(weights)
        active = len(weights) - (weights.count(0) if 0 in distinct else 0)
        if size < 100 * active:
            warnings.warn("Maglev table size %d is below 100 x %d backends: expect "
                          "shares to differ by more than ~1%% (the paper's bound); use "
                          "a prime >= %d" % (size, active, 100 * active),
                          UserWarning, stacklevel=stacklevel)
        if blob is None:
            offsets, skips = _maglev.permutations(encoded, size)
        else:
            offsets, skips = _maglev.permutations_joined(blob, len(names), size)
        # equal weights (the common case) take the C fast path
        uniform = len(distinct) <= 1 and 0 not in distinct
        self._table, self._filled = _maglev.fill(
            offsets, skips, None if uniform else array.array("I", weights), size)
        self._size = size
        self._names = names
        self._encoded = encoded
        self._weights = weights
        self._balance = None

    def _enc(self):
        if self._encoded is None:
            self._encoded = [name.encode() for name in self._names]
        return self._encoded

    # -- the table

    @property
    def size(self):
        """M, the number of table entries (a prime)."""
        return self._size

    @property
    def backends(self):
        """The backend names in canonical order (sorted by encoded name);
        table entries index this tuple."""
        return self._names

    @property
    def weights(self):
        """A new dict name -> weight, in canonical order."""
        return dict(zip(self._names, self._weights))

    @property
    def table(self):
        """``array.array('i')`` of :attr:`size` indices into
        :attr:`backends`, -1 where empty (only when no backend has a
        weight). Shared, not a copy: do not modify it."""
        return self._table

    @property
    def empty(self):
        """True when the table has no backend (no backends, or all of
        weight 0)."""
        return self._filled == 0

    def names(self):
        """A list of the backend name of every slot (None where empty)."""
        ext = self._names + (None,)            # index -1 -> None
        return list(map(ext.__getitem__, self._table))

    def lookup(self, hash_value):
        """The backend name for a flow hash: ``backends[table[hash_value % size]]``.

        Raises:
            LookupError: the table is empty (no backend of weight > 0).
            TypeError: ``hash_value`` is not an int.
        """
        if self._filled == 0:
            raise LookupError("Maglev table is empty: no backend with a weight > 0")
        return self._names[self._table[hash_value % self._size]]

    # -- analysis

    def balance(self):
        """A dict name -> number of table entries, every backend included
        (weight-0 backends with 0), in canonical order."""
        if self._balance is None:
            counts = [0] * (len(self._names) + 1)
            for i in self._table:
                counts[i] += 1
            self._balance = counts[:-1]
        return dict(zip(self._names, self._balance))

    def disruption(self, other):
        """The fraction (0.0 to 1.0) of table entries whose backend name
        differs between this table and ``other`` (a :class:`Maglev` of the
        same size). Names are compared, not indices, so backends that move
        in the canonical order do not count; an empty slot differs from a
        filled one.

        Raises:
            ValueError: the sizes differ.
            TypeError: ``other`` is not a Maglev.
        """
        if not isinstance(other, Maglev):
            raise TypeError("Maglev.disruption expects a Maglev, got %r"
                            % type(other).__name__)
        if other._size != self._size:
            raise ValueError("Maglev.disruption needs tables of the same size, got %d "
                             "and %d" % (self._size, other._size))
        if other._enc() == self._enc():
            changed = sum(1 for a, b in zip(self._table, other._table) if a != b)
        else:
            mine = {e: i for i, e in enumerate(self._enc())}
            # other's index -> this table's index for the same name
            # (-2: a name this table lacks; the last entry maps -1 to -1)
            remap = [mine.get(e, -2) for e in other._enc()] + [-1]
            changed = sum(1 for a, b in zip(self._table, other._table) if a != remap[b])
        return changed / self._size

    # -- derived tables

    def with_backends(self, backends):
        """A new :class:`Maglev` of the same size over ``backends`` (names
        or a mapping name -> weight)."""
        return _derived(backends, self._size)

    def replace(self, *, backends=None, size=None):
        """A new :class:`Maglev` with ``backends`` and/or ``size`` changed
        (the others kept, weights included)."""
        return _derived(self.weights if backends is None else backends,
                        self._size if size is None else size)

    # -- value semantics

    def __eq__(self, other):
        if not isinstance(other, Maglev):
            return NotImplemented
        return (self._size == other._size and self._weights == other._weights
                and self._enc() == other._enc())

    def __hash__(self):
        return hash((self._size, tuple(self._enc()), tuple(self._weights)))

    def __repr__(self):
        if len(self._names) <= 4:
            what = repr(self.weights if len(set(self._weights)) > 1 else list(self._names))
        else:
            what = "<%d backends>" % len(self._names)
        return "Maglev(%s, size=%d)" % (what, self._size)


def _derived(backends, size):
    m = Maglev.__new__(Maglev)
    m._build(backends, size, 4)       # warn at the caller of with_backends/replace
    return m
