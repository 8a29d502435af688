"""HTTP/1.x and HTTP/2 (with gRPC) message-head parser for the L7 monitor.

Pure Python, no privileges. :func:`parse_http` takes the head of a TCP
payload (what the BPF sampler copied) and raises only
:class:`ParseError` (a ValueError) on malformed input, in time linear in
the input.

What is detected:

* HTTP/1.0 and HTTP/1.1 request lines (method, target, version) and
  status lines (version, status), and the ``Host`` and ``Content-Type``
  header when they are within the sample;
* the HTTP/2 connection preface (RFC 9113 3.4), then the frames after it;
* HTTP/2 HEADERS frames (any segment of a connection known to be HTTP/2):
  the header block is decoded with the HPACK static table (RFC 7541
  appendix A) and literal fields, Huffman-coded or not (appendix B). The
  per-connection dynamic table is not kept (the samples do not hold every
  frame of a connection, and a table missing one insertion would give
  wrong values): fields that refer to it are not decoded (None). gRPC is
  a HEADERS frame whose ``content-type`` starts with ``application/grpc``
  (decoded, or as literal bytes in the block).
"""

import attrs

from pybpfnet.dataplanes._l7_dns import ParseError

__all__ = ["ParseError", "HttpRequest", "HttpResponse", "H2Headers", "H2_PREFACE",
           "parse_http", "parse_h2_frames", "huffman_decode"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS",
                      b"TRACE", b"PATCH"))
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   b"abcdefghijklmnopqrstuvwxyz")
_MAX_LINE = 8192
_GRPC = b"application/grpc"

# RFC 7541 appendix A (index 1..61): (name, value)
_STATIC = (
    None, (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""))


@attrs.frozen(slots=True)
class HttpRequest:
    """An HTTP/1.x request head: ``version`` is "HTTP/1.0" or "HTTP/1.1"."""

    method: str
    path: str
    version: str
    host: object = None
    content_type: object = None


@attrs.frozen(slots=True)
class HttpResponse:
    """An HTTP/1.x status line (and Content-Type when sampled)."""

    version: str
    status: int
    content_type: object = None


@attrs.frozen(slots=True)
class H2Headers:
    """One HTTP/2 HEADERS frame: its stream, the pseudo-headers that could
    be decoded (None otherwise) and whether it says gRPC."""

    stream: int
    method: object = None
    path: object = None
    authority: object = None
    status: object = None
    grpc: bool = False
    end_stream: bool = False


@attrs.frozen(slots=True)
class H2Frames:
    """What a segment of an HTTP/2 connection held: ``preface`` when it
    starts with the connection preface; the HEADERS frames in it."""

    preface: bool
    headers: tuple = ()


def _text(raw):
    return raw.decode("latin-1")


def _headers(lines):
    host = ctype = None
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"host" and host is None:
            host = _text(value.strip())
        elif key == b"content-type" and ctype is None:
            ctype = _text(value.strip())
    return host, ctype


def _http1(data):
    head = data[:_MAX_LINE * 4]
    end = head.find(b"\r\n\r\n")
    block = head if end < 0 else head[:end]
    lines = block.split(b"\r\n")
    first = lines[0]
    if len(first) > _MAX_LINE:
        raise ParseError("HTTP start line longer than %d bytes" % _MAX_LINE)
    if b"\r\n" not in head:
        raise ParseError("HTTP start line not terminated within the sample")
    parts = first.split(b" ", 2)
    if first.startswith(b"HTTP/"):
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1"):
            raise ParseError("HTTP status line %r: expected 'HTTP/1.x NNN reason'" % first[:64])
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise ParseError("HTTP status %r is not three digits" % code[:16])
        _, ctype = _headers(lines[1:])
        return HttpResponse(version=_text(parts[0]), status=int(code), content_type=ctype)
    if len(parts) != 3:
        raise ParseError("HTTP request line %r: expected 'METHOD target HTTP/1.x'" % first[:64])
    method, target, version = parts
    if method not in _METHODS and not (method and set(method) <= _TOKEN):
        raise ParseError("HTTP method %r is not a token" % method[:16])
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise ParseError("HTTP version %r: expected HTTP/1.0 or HTTP/1.1" % version[:16])
    if not target or any(b <= 0x20 or b == 0x7F for b in target):
        raise ParseError("HTTP request target %r is empty or has controls" % target[:64])
    host, ctype = _headers(lines[1:])
    return HttpRequest(method=_text(method), path=_text(target), version=_text(version),
                       host=host, content_type=ctype)


def _hint(data, pos, prefix):
    """HPACK integer (RFC 7541 5.1) with an N-bit prefix -> (value, pos)."""
    if pos >= len(data):
        raise ParseError("HPACK integer cut")
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise ParseError("HPACK integer cut")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if shift > 28:
            raise ParseError("HPACK integer too large")
        if not b & 0x80:
            return value, pos


# RFC 7541 appendix B: the code length in bits of each symbol 0..256 (256 is
# EOS). The code is canonical (codes of one length are consecutive, in
# symbol order), so the lengths define the codes.
_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28,
    30, 28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6,
    6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5,
    6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20,
    22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23,
    23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21,
    22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20,
    19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21,
    21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26,
    23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30)


def _huffman_table():
    table = {}
    code = prev = 0
    for i, sym in enumerate(sorted(range(257), key=lambda s: (_HUFFMAN_LENGTHS[s], s))):
        n = _HUFFMAN_LENGTHS[sym]
        if i:
            code = (code + 1) << (n - prev)
        prev = n
        table[(n, code)] = sym
    return table


_HUFFMAN = _huffman_table()
_EOS = 256


def huffman_decode(raw):
    """Bytes of an HPACK Huffman-coded string (RFC 7541 5.2) -> bytes.
    Raises ParseError for EOS inside the string or bad padding."""
    out = bytearray()
    code = n = 0
    table = _HUFFMAN
    for byte in raw:
        for shift in range(7, -1, -1):
            code = code << 1 | (byte >> shift) & 1
            n += 1
            sym = table.get((n, code)) if n >= 5 else None
            if sym is not None:
                if sym == _EOS:
                    raise ParseError("HPACK Huffman string holds EOS")
                out.append(sym)
                code = n = 0
            elif n > 30:
                raise ParseError("HPACK Huffman code longer than 30 bits")
    if n > 7 or code != (1 << n) - 1:
        raise ParseError("HPACK Huffman padding is not an EOS prefix")
    return bytes(out)


def _hstr(data, pos):
    """HPACK string -> (str, pos)."""
    if pos >= len(data):
        raise ParseError("HPACK string cut")
    huffman = data[pos] & 0x80
    length, pos = _hint(data, pos, 7)
    if pos + length > len(data):
        raise ParseError("HPACK string runs past the block")
    raw = data[pos:pos + length]
    return _text(huffman_decode(raw) if huffman else raw), pos + length


def _hpack(block, out):
    """Decode what can be decoded of a header block into ``out``, a list of
    (name, value) with None for what needs the dynamic table or Huffman
    decoding (what decoded before a ParseError stays in ``out``)."""
    pos = 0
    while pos < len(block):
        b = block[pos]
        if b & 0x80:                                   # indexed field
            idx, pos = _hint(block, pos, 7)
            if idx == 0:
                raise ParseError("HPACK index 0")
            out.append(_STATIC[idx] if idx < len(_STATIC) else (None, None))
            continue
        if b & 0xE0 == 0x20:                           # dynamic table size update
            _, pos = _hint(block, pos, 5)
            continue
        prefix = 6 if b & 0x40 else 4                  # literal (indexing / not / never)
        idx, pos = _hint(block, pos, prefix)
        if idx:
            name = _STATIC[idx][0] if idx < len(_STATIC) else None
        else:
            name, pos = _hstr(block, pos)
        value, pos = _hstr(block, pos)
        out.append((name, value))


def _headers_frame(flags, stream, payload):
    pos = 0
    end = len(payload)
    if flags & 0x08:                                   # PADDED
        if not payload:
            raise ParseError("HTTP/2 padded HEADERS without a pad length")
        end -= payload[0]
        pos = 1
    if flags & 0x20:                                   # PRIORITY
        pos += 5
    if end < pos:
        raise ParseError("HTTP/2 HEADERS padding longer than the frame")
    block = payload[pos:end]
    decoded = []
    try:
        _hpack(block, decoded)
    except ParseError:
        pass                                           # a cut block: keep what decoded
    fields = {}
    for name, value in decoded:
        if name is not None and name not in fields:
            fields[name] = value
    ctype = fields.get("content-type")
    grpc = (ctype or "").startswith("application/grpc") or _GRPC in block
    status = fields.get(":status")
    return H2Headers(stream=stream, method=fields.get(":method"), path=fields.get(":path"),
                     authority=fields.get(":authority"),
                     status=int(status) if status and status.isdigit() else None,
                     grpc=grpc, end_stream=bool(flags & 0x01))


def parse_h2_frames(data):
    """HTTP/2 frames at the start of a segment (after the preface if there
    is one) -> H2Frames with the HEADERS frames found (a HEADERS frame cut
    by the sample is decoded as far as it goes). Raises ParseError when
    the bytes do not start with a frame header of a known type."""
    data = bytes(data)
    preface = data.startswith(H2_PREFACE)
    pos = len(H2_PREFACE) if preface else 0
    if not preface and H2_PREFACE.startswith(data[:len(H2_PREFACE)]) and data:
        return H2Frames(preface=True)                  # preface cut by the sample
    headers = []
    first = True
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        stream = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        if ftype > 0x9 and first and not preface:
            raise ParseError("HTTP/2 frame type 0x%x at the start of a segment" % ftype)
        if length > 1 << 24:
            raise ParseError("HTTP/2 frame length %d" % length)
        payload = data[pos + 9:pos + 9 + length]
        if ftype == 0x1 and stream:
            headers.append(_headers_frame(flags, stream, payload))
        pos += 9 + length
        first = False
    if not preface and first:
        raise ParseError("no HTTP/2 frame header in %d bytes" % len(data))
    return H2Frames(preface=preface, headers=tuple(headers))


def parse_http(data):
    """The head of a TCP payload -> HttpRequest, HttpResponse or (for the
    HTTP/2 preface) H2Frames. Raises ParseError for anything else."""
    data = bytes(data)
    if data.startswith(H2_PREFACE[:4]):
        if not H2_PREFACE.startswith(data[:len(H2_PREFACE)]):
            raise ParseError("'PRI' without the HTTP/2 connection preface")
        return parse_h2_frames(data)
    return _http1(data)
