"""What is loaded and attached on the system, as Python records.

``programs()``, ``maps()`` and ``links()`` list every BPF program, map and
link in the kernel (like ``bpftool prog``/``map``/``link``);
``net_attachments()`` lists the XDP and tcx programs of the interfaces of
the current network namespace (like ``bpftool net``). All need CAP_SYS_ADMIN
(opening objects by id); objects that vanish while being listed are skipped.
"""

import errno as _errno
import os
import socket

import attrs

from pybpfnet import _binding as _b
from pybpfnet._link import (AttachmentState, LinkInfo, LinkType, _XDP_MODE_OF_ATTACHED,
                            _resolve_iface, _xdp_held, tcx_supported)
from pybpfnet._map import MapType
from pybpfnet._program import AttachType, ProgramType

__all__ = ["ProgramInfo", "MapInfo", "programs", "maps", "links", "net_attachments"]


def _enum(cls, v):
    try:
        return cls(v)
    except ValueError:
        return v


@attrs.frozen
class ProgramInfo:
    """One loaded BPF program (bpf_prog_info). ``load_time_ns`` counts from
    boot; ``run_count``/``run_time_ns`` are kept only while
    kernel.bpf_stats_enabled is set."""

    id: int
    name: str
    type: object          # ProgramType (or the raw int)
    tag: str
    map_ids: tuple
    btf_id: int
    uid: int
    load_time_ns: int
    run_count: int
    run_time_ns: int
    xlated_size: int
    jited_size: int


@attrs.frozen
class MapInfo:
    """One BPF map (bpf_map_info)."""

    id: int
    name: str
    type: object          # MapType (or the raw int)
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_id: int


def _each(kind, read):
    out = []
    for obj_id in _b.next_ids(kind):
        try:
            fd = _b.fd_by_id(kind, obj_id)
        except OSError as e:
            if e.errno == _errno.ENOENT:
                continue  # gone since the id was listed
            raise
        try:
            out.append(read(fd))
        except OSError as e:
            if e.errno != _errno.ENOENT:
                raise
        finally:
            os.close(fd)
    return out


def _program(fd):
    i = _b.prog_info(fd)
    return ProgramInfo(
        id=i["id"], name=i["name"], type=_enum(ProgramType, i["type"]), tag=i["tag"],
        map_ids=tuple(_b.prog_map_ids(fd, i["nr_map_ids"])) if i["nr_map_ids"] else (),
        btf_id=i["btf_id"], uid=i["uid"], load_time_ns=i["load_time"],
        run_count=i["run_count"], run_time_ns=i["run_time_ns"],
        xlated_size=i["xlated_len"], jited_size=i["jited_len"])


def _map(fd):
    i = _b.map_info(fd)
    return MapInfo(id=i["id"], name=i["name"], type=_enum(MapType, i["type"]),
                   key_size=i["key_size"], value_size=i["value_size"],
                   max_entries=i["max_entries"], flags=i["flags"], btf_id=i["btf_id"])


def programs():
    """Every BPF program loaded in the kernel, as ProgramInfo records
    sorted by id."""
    return _each("prog", _program)


def maps():
    """Every BPF map in the kernel, as MapInfo records sorted by id."""
    return _each("map", _map)


def links():
    """Every BPF link in the kernel (XDP, tcx, cgroup, tracing, ...), as
    LinkInfo records sorted by id. Netlink attachments (legacy TC filters,
    netlink XDP) are no links: see net_attachments()."""
    return _each("link", lambda fd: LinkInfo._from_kernel(_b.link_info_full(fd)))


def net_attachments(iface=None):
    """The XDP and tcx programs attached to the interfaces of the current
    network namespace (or to ``iface`` only), as AttachmentState records in
    run order. Legacy cls_bpf filters are not listed (libbpf has no filter
    dump; ``tc filter show`` lists them)."""
    if iface is None:
        ifaces = sorted(socket.if_nameindex())
    else:
        idx, name = _resolve_iface(iface, "list attachments of")
        ifaces = [(idx, name)]
    by_prog = {}
    for info in links():
        if info.type in (LinkType.XDP, LinkType.TCX) and info.ifindex:
            by_prog.setdefault((info.type, info.prog_id, info.ifindex), info.id)
    out = []
    tcx = tcx_supported()
    for idx, name in ifaces:
        try:
            q = _b.xdp_query(idx)
        except OSError as e:
            if e.errno == _errno.ENODEV:
                continue
            raise
        held = _xdp_held(q)
        if held:
            link_id = by_prog.get((LinkType.XDP, held, idx))
            out.append(AttachmentState(
                iface=name, ifindex=idx, hook="xdp",
                backend="link" if link_id else "netlink", prog_id=held, attached=True,
                link_id=link_id, mode=_XDP_MODE_OF_ATTACHED.get(q["attach_mode"])))
        if not tcx:
            continue
        for direction, at in (("ingress", AttachType.TCX_INGRESS),
                              ("egress", AttachType.TCX_EGRESS)):
            prog_ids, link_ids, _, _ = _b.prog_query(idx, at, with_links=True)
            for pos, (pid, lid) in enumerate(zip(prog_ids, link_ids)):
                out.append(AttachmentState(
                    iface=name, ifindex=idx, hook="tc " + direction, backend="tcx",
                    prog_id=pid, attached=True, link_id=lid or None, position=pos))
    return out
