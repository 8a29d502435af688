/* Limits of xdp_traffic_gen.bpf.c. pybpfnet/_traffic.py checks a Sweep
 * against TG_MAX_CSUMS (the length of the sweep_csum global in BTF). */
#ifndef TRAFFIC_GEN_H
#define TRAFFIC_GEN_H

/* checksums a swept field may be covered by (IPv4 header + TCP/UDP) */
#define TG_MAX_CSUMS 2
/* live frames fit in one page: offsets stay below 4096 */
#define TG_OFFSET_MASK 0xfff

#endif
