"""Classic pcap files (the libpcap format tcpdump, tshark and scapy read).

::

    from pybpfnet.packet.pcap import PcapWriter, read_pcap

    with PcapWriter("out.pcap", snaplen=262) as w:
        w.write(frame, timestamp_ns=time.time_ns())   # orig_len defaults to len(frame)
    for rec in read_pcap("out.pcap"):
        print(rec.timestamp_ns, rec.orig_len, len(rec.data))

The writer produces the nanosecond-resolution variant (magic 0xa1b23c4d,
version 2.4, host byte order, LINKTYPE_ETHERNET unless told otherwise);
the reader accepts both resolutions in either byte order. Layout from the
libpcap file format description (draft-ietf-opsawg-pcap): a 24-byte file
header, then per packet a 16-byte record header (seconds, sub-seconds,
captured length, original length) and the captured bytes.
"""

import os
import struct

import attrs

__all__ = ["PcapWriter", "PcapRecord", "read_pcap", "LINKTYPE_ETHERNET", "MAGIC_NS",
           "MAGIC_US"]

LINKTYPE_ETHERNET = 1
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
_FILE_HDR = struct.Struct("=IHHiIII")
_REC_HDR = "IIII"
_REC = struct.Struct("=" + _REC_HDR)


@attrs.frozen
class PcapRecord:
    """One packet of a pcap file.

    Wall-clock ``timestamp_ns`` (epoch nanoseconds), the captured ``data`` and the packet's ``orig_len`` on
    the wire (larger than ``len(data)`` when the snap length cut it)."""

    timestamp_ns: int
    data: bytes
    orig_len: int

    @property
    def timestamp(self):
        """Epoch seconds as a float."""
        return self.timestamp_ns / 1e9

    @property
    def truncated(self):
        return self.orig_len > len(self.data)


class PcapWriter:
    """Write packets to a pcap file (nanosecond timestamps).

    ``dest`` is a path (created or truncated) or a binary file object (left
    open by ``close()``). ``snaplen`` goes into the file header; ``linktype`` is a LINKTYPE_*
    number (1: Ethernet). Raises OSError when the file cannot be written,
    ValueError for a packet longer than ``snaplen`` or an ``orig_len``
    shorter than the data."""

    def __init__(self, dest, *, snaplen=262144, linktype=LINKTYPE_ETHERNET):
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise ValueError("pcap snaplen must be 1 .. 2**31-1, not %r" % (snaplen,))
        if isinstance(dest, (str, bytes, os.PathLike)):
            self._fp = open(dest, "wb")
            self._own = True
        else:
            self._fp = dest
            self._own = False
        self.snaplen = snaplen
        self.count = 0
        self._fp.write(_FILE_HDR.pack(MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def write(self, data, timestamp_ns, orig_len=None):
        """Append one packet captured at ``timestamp_ns`` (epoch
        nanoseconds) whose original length was ``orig_len`` (default:
        ``len(data)``)."""
        data = bytes(data)
        n = len(data)
        if orig_len is None:
            orig_len = n
        if n > self.snaplen:
            raise ValueError("pcap: packet of %d bytes is longer than the snaplen %d"
                             % (n, self.snaplen))
        if orig_len < n:
            raise ValueError("pcap: orig_len %d is shorter than the %d captured bytes"
                             % (orig_len, n))
        sec, nsec = divmod(int(timestamp_ns), 1_000_000_000)
        self._fp.write(_REC.pack(sec, nsec, n, orig_len) + data)
        self.count += 1

    def write_records(self, records):
        """Append many packets: an iterable of (timestamp_ns, data,
        orig_len) tuples (one write call; checked as ``write``)."""
        pack, snaplen = _REC.pack, self.snaplen
        parts = []
        for ts, data, orig_len in records:
            n = len(data)
            if n > snaplen or orig_len < n:
                self.write(data, ts, orig_len)      # raises the ValueError
            sec, nsec = divmod(ts, 1_000_000_000)
            parts.append(pack(sec, nsec, n, orig_len))
            parts.append(data)
        self._fp.write(b"".join(parts))
        self.count += len(parts) // 2

    def flush(self):
        self._fp.flush()

    def close(self):
        """Flush; close the file when this writer opened it (idempotent)."""
        if self._fp is not None:
            self._fp.flush()
            if self._own:
                self._fp.close()
            self._fp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_pcap(source):
    """The PcapRecords of a pcap file (path, bytes, or binary file object).
    Accepts microsecond and nanosecond files in either byte order; raises
    ValueError for another format (pcapng: convert it with editcap) or a
    file cut inside a record."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            raw = f.read()
    else:
        raw = source.read()
    if len(raw) < 24:
        raise ValueError("pcap: %d bytes is shorter than a file header" % len(raw))
    for order in ("<", ">"):
        magic = struct.unpack_from(order + "I", raw)[0]
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        raise ValueError("pcap: unknown magic 0x%08x (expected 0xa1b2c3d4 or 0xa1b23c4d)"
                         % struct.unpack_from("<I", raw)[0])
    scale = 1 if magic == MAGIC_NS else 1000
    rec = struct.Struct(order + _REC_HDR)
    out = []
    pos = 24
    while pos < len(raw):
        if pos + 16 > len(raw):
            raise ValueError("pcap: record header cut at byte %d" % pos)
        sec, sub, incl, orig = rec.unpack_from(raw, pos)
        pos += 16
        if pos + incl > len(raw):
            raise ValueError("pcap: record of %d bytes cut at byte %d" % (incl, pos))
        out.append(PcapRecord(sec * 1_000_000_000 + sub * scale, raw[pos:pos + incl], orig))
        pos += incl
    return out

