/* pybpfnet L4 load balancer: constants shared by the BPF side and user
 * space (which reads the enums from BTF through lb_layout_enums). */
#ifndef LB_CONSTS_H
#define LB_CONSTS_H

#define LB_MAX_SERVICES 256
#define LB_MAX_BACKENDS 4096
#define LB_MAX_FLOWS 65536
#define LB_MAX_VIP_ADDRS 1024

/* Inner table layout: [0] = M (slots), [1] = generation, [2 .. M+1] =
 * backend ids (LB_EMPTY: no backend). */
#define LB_TABLE_HDR 2
#define LB_EMPTY 0xffffffffU

#define LB_GUE_PORT 6080
#define LB_DEFAULT_MTU 1500
#define LB_TTL 64

/* lb_service.flags */
#define LB_F_SRC_HASH 0x01	/* hash the source address only (affinity) */

enum lb_mode {
	LB_M_NAT = 0,
	LB_M_IPIP = 1,
	LB_M_GUE = 2,
	LB_M_L2 = 3,
	LB_NMODES = 4,
};

enum lb_drop {
	LB_D_MALFORMED = 0,	/* to a VIP address, headers truncated or bad */
	LB_D_FRAGMENT = 1,	/* to a VIP address, an IP fragment */
	LB_D_UNSUPPORTED = 2,	/* to a VIP address, IPv4 options or IPv6 extension headers */
	LB_D_NO_BACKEND = 3,	/* no table, empty slot, or a slot naming a deleted backend */
	LB_D_TOO_BIG = 4,	/* encapsulated length over the MTU, IPv4 without DF */
	LB_D_FAMILY = 5,	/* NAT across families, or no outer source of the backend's family */
	LB_D_ADJUST = 6,	/* bpf_xdp_adjust_head/tail refused */
	LB_D_INVALID = 7,	/* tracked NAT: the connection tracker judged it invalid */
	LB_NDROPS = 8,
};

#endif
