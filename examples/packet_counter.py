"""Placeholder until the lab example lands: count test packets with xdp_count."""
import struct

import pybpfnet as bn


def ipv4_frame(src):
    eth = b"\xff" * 6 + b"\x02" + b"\0" * 5 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes(src), bytes([10, 0, 0, 2]))
    return eth + ip + b"\0" * 8


with bn.load_bundled("xdp_count") as obj:
    prog = obj.programs["xdp_count"]
    for i, src in enumerate(([10, 0, 0, 1], [10, 0, 0, 7], [192, 168, 1, 1])):
        prog.test_run(ipv4_frame(src), repeat=i + 1)
    for key, c in sorted(obj.maps["per_source"].items()):
        print("%-15s packets=%d bytes=%d" % (".".join(map(str, key.addr.to_bytes(4, "little"))), c.packets, c.bytes))
    print("total:", obj.maps["totals"].sum(0))
