"""What the load balancer needs to know about its namespace's network:
the route (next hop, interface, source address) towards a backend and the
next hop's MAC address (every forwarding mode rewrites the destination
MAC), asked of the kernel through pybpfnet's rtnetlink handle inside the
LB's namespace."""

import errno
import ipaddress
import socket
import time

from pybpfnet import _netlink

__all__ = ["Route", "route_to", "neighbours", "resolve_mac"]


class Route(tuple):
    """(gateway or None, oif, prefsrc or None) of the route to one address."""

    __slots__ = ()

    @property
    def gateway(self):
        return self[0]

    @property
    def oif(self):
        return self[1]

    @property
    def source(self):
        return self[2]


def route_to(address, *, netns=None):
    """The kernel's route to ``address`` from ``netns`` (a Route). Raises
    OSError (ENETUNREACH, ...) naming the address."""
    ip = ipaddress.ip_address(address)
    with _netlink.Rtnl(netns) as rt:
        try:
            return Route(rt.route_get(ip))
        except _netlink.NetlinkError as exc:
            raise OSError(exc.errno, "no route to backend %s: %s"
                          % (ip, exc.strerror)) from None


def neighbours(*, netns=None):
    """{(ifindex, ip_address): mac} of the usable neighbour entries (ARP and
    NDP) of ``netns``."""
    with _netlink.Rtnl(netns) as rt:
        return rt.neighbours()


def resolve_mac(address, *, netns=None, timeout=1.0):
    """(mac, route) of the next hop towards ``address`` from ``netns``: the
    address itself when it is on-link, else its gateway. When the kernel
    has no neighbour entry yet, a UDP datagram to the discard port (9)
    makes it resolve one (ARP/NDP), waiting up to ``timeout`` seconds.

    Raises OSError: EHOSTUNREACH naming the address when nothing answers,
    ENETUNREACH when there is no route.
    """
    ip = ipaddress.ip_address(address)
    route = route_to(ip, netns=netns)
    hop = route.gateway or ip
    deadline = time.monotonic() + timeout
    poked = False
    with _netlink.Rtnl(netns) as rt:
        while True:
            mac = rt.neighbours().get((route.oif, hop))
            if mac is not None:
                return mac, route
            if time.monotonic() >= deadline:
                raise OSError(errno.EHOSTUNREACH, "cannot resolve the MAC address of %s%s "
                              "(no ARP/NDP answer within %gs)"
                              % (hop, " (gateway to %s)" % ip if route.gateway else "",
                                 timeout))
            if not poked:
                fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
                with _netlink.in_netns(netns):
                    s = socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                with s:
                    try:
                        s.sendto(b"", (str(ip), 9))
                    except OSError:
                        # only a nudge: a neighbour entry that failed before
                        # makes sendto fail (EHOSTUNREACH) while the kernel
                        # still probes; the loop's deadline decides
                        pass
                poked = True
            time.sleep(0.01)
