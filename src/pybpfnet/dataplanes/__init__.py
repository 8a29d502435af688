"""Ready data planes built on the pybpfnet core: each is a BPF program
(csrc/bpf/<plane>) plus a Python module that owns it and a pure-Python
reference model of what it does to a packet.

* :mod:`pybpfnet.dataplanes.firewall` -- XDP firewall and TC filters.
* :mod:`pybpfnet.dataplanes.conntrack` -- connection tracking (TC, XDP, and a
  header for other programs), checked against nf_conntrack.
* :mod:`pybpfnet.dataplanes.flowmon` -- per-flow records and handshake RTT at TC.
"""

from pybpfnet.dataplanes.firewall import (Action, Firewall, FirewallModel, FirewallStats,
                                          RateLimit, Reason, Rule, RuleError, RuleSet,
                                          RuleStats, Verdict, load_rules, rate_limit)

__all__ = ["Firewall", "FirewallModel", "FirewallStats", "RuleStats", "Rule", "RuleSet",
           "Action", "RateLimit", "rate_limit", "Reason", "Verdict", "RuleError",
           "load_rules"]
