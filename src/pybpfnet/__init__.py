"""pybpfnet: a Python SDK for programmable Linux data planes.

Load precompiled CO-RE BPF objects, use their maps as typed Python mappings,
run programs on packets, and attach them. The phases follow libbpf:
``open()`` -> (modify the spec) -> ``load()`` -> attach.
"""

from pybpfnet._version import __version__
from pybpfnet._errors import (BpfError, BpfPermissionError, CodecError, MapKeyError,
                              NotSupportedError, ObjectFormatError, VerifierError)
from pybpfnet._map import (ArrayMap, ArrayOfMaps, CpuMap, DevMap, DevMapHash, HashMap,
                           HashOfMaps, LpmTrieMap, LruHashMap, LruPerCpuHashMap, Map,
                           MapType, PerCpuArrayMap, PerCpuHashMap, ProgArray, QueueMap,
                           StackMap, UpdateFlags, XskMap, possible_cpus, sum_values)
from pybpfnet._ringbuf import RingBuf, RingBufPoller
from pybpfnet._program import (AttachType, Program, ProgramType, TcAction, TestRunResult,
                               XdpAction)
from pybpfnet._object import (BpfObject, MapSpec, ObjectSpec, ProgramSpec, bundled, load,
                              load_bundled, open, open_bundled)
from pybpfnet._link import (AttachmentState, HookBusyError, Link, LinkInfo, LinkType,
                            TcLink, TcxLink, XdpLink, XdpNetlinkLink, tcx_supported)
from pybpfnet._hooks import TcFilter, XdpProgram
from pybpfnet._system import (MapInfo, ProgramInfo, links, maps, net_attachments,
                              programs)
from pybpfnet._traffic import (Sweep, TrafficGenerator, TrafficResult,
                               live_frames_supported)

__all__ = [
    "__version__",
    # objects
    "open", "load", "load_bundled", "open_bundled", "bundled",
    "ObjectSpec", "MapSpec", "ProgramSpec", "BpfObject",
    # maps
    "Map", "MapType", "UpdateFlags", "HashMap", "ArrayMap", "PerCpuHashMap",
    "PerCpuArrayMap", "LruHashMap", "LruPerCpuHashMap", "LpmTrieMap", "ProgArray",
    "DevMap", "DevMapHash", "CpuMap", "XskMap", "QueueMap", "StackMap",
    "ArrayOfMaps", "HashOfMaps", "RingBuf", "RingBufPoller", "possible_cpus",
    "sum_values",
    # programs
    "Program", "ProgramType", "AttachType", "XdpAction", "TcAction", "TestRunResult",
    # attach (issue 3)
    "Link", "LinkType", "LinkInfo", "XdpLink", "XdpNetlinkLink", "TcxLink", "TcLink",
    "AttachmentState", "HookBusyError", "tcx_supported", "XdpProgram", "TcFilter",
    "programs", "maps", "links", "net_attachments", "ProgramInfo", "MapInfo",
    # traffic generation (issue 3)
    "TrafficGenerator", "TrafficResult", "Sweep", "live_frames_supported",
    # errors
    "BpfError", "BpfPermissionError", "MapKeyError", "VerifierError",
    "NotSupportedError", "ObjectFormatError", "CodecError",
    # data planes (imported on first use: the core never imports them)
    "Firewall", "Rule", "Conntrack", "Connection", "FlowMonitor", "FlowRecord",
    "L7Monitor", "DnsRecord", "HttpRecord",
    "Maglev", "LoadBalancer", "Service", "Backend",
    "Capture", "CapturedPacket",
]

# The data planes sit a layer above the core; their classes are importable
# from here (the product's public names) but loaded only when first used.
_DATAPLANES = {
    "Firewall": "pybpfnet.dataplanes.firewall",
    "Rule": "pybpfnet.dataplanes.firewall",
    "Conntrack": "pybpfnet.dataplanes.conntrack",
    "Connection": "pybpfnet.dataplanes.conntrack",
    "FlowMonitor": "pybpfnet.dataplanes.flowmon",
    "FlowRecord": "pybpfnet.dataplanes.flowmon",
    "L7Monitor": "pybpfnet.dataplanes.l7",
    "DnsRecord": "pybpfnet.dataplanes.l7",
    "HttpRecord": "pybpfnet.dataplanes.l7",
    "Maglev": "pybpfnet.dataplanes.maglev",
    "LoadBalancer": "pybpfnet.dataplanes.lb",
    "Service": "pybpfnet.dataplanes.lb",
    "Backend": "pybpfnet.dataplanes.lb",
    "Capture": "pybpfnet.dataplanes.capture",
    "CapturedPacket": "pybpfnet.dataplanes.capture",
}


def __getattr__(name):
    module = _DATAPLANES.get(name)
    if module is None:
        raise AttributeError("module 'pybpfnet' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
