/* pybpfnet L4 load balancer: structures shared by the BPF side and user
 * space (user space reads their layout from BTF). Addresses are in network
 * order (IPv4 in the first 4 bytes, the rest zero), ports in host order. */
#ifndef LB_STRUCTS_H
#define LB_STRUCTS_H

#include <linux/types.h>
#include "lb_consts.h"

/* A service: VIP, port, protocol. */
struct lb_vip_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 family;		/* 4 or 6 */
};

/* lb_svc[id]: what a service does. epoch changes whenever the service is
 * made or changed (0: no service): a flow made under another epoch is
 * hashed again. Table swaps keep the epoch (established flows drain). */
struct lb_service {
	__u32 id;		/* index into lb_svc, lb_tables and lb_svc_counters */
	__u32 epoch;
	__u8 mode;		/* enum lb_mode */
	__u8 flags;		/* LB_F_* */
	__u16 pad;
};

/* A VIP address (any port): packets to it that cannot be matched to a
 * service by port are dropped, not passed. Value: number of services. */
struct lb_addr_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

struct lb_backend {
	__u8 addr[16];
	__u8 mac[6];		/* destination MAC of packets sent to it */
	__u16 port;		/* NAT: destination port at the backend, 0: the VIP's */
	__u8 family;
	__u8 valid;
	__u8 pad[2];
};

/* A packet's flow as it is on the wire (client -> VIP, or for a NAT reply
 * backend -> client). */
struct lb_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

#define LB_FLOW_FWD 1	/* client -> VIP: the flow's backend */
#define LB_FLOW_REV 2	/* NAT backend -> client: translate back to VIP -> client */

/* lb_flows value, for both entry types. */
struct lb_flow {
	__u32 backend_id;
	__u32 service_id;
	__u32 epoch;		/* the service's epoch when the flow was made */
	__u8 type;		/* LB_FLOW_* */
	__u8 client_mac[6];	/* where the flow's first packet came from */
	__u8 pad;
	__u8 vip[16];		/* REV: the address and port to put back */
	__u16 vport;
	__u8 pad2[6];
};

struct lb_config {
	__u8 src4[4];		/* outer source of IPv4 encapsulation */
	__u8 src6[16];
	__u16 mtu;		/* largest outer L3 length an encapsulated packet may have */
	__u16 gue_port;		/* GUE destination port */
	__u32 hash_seed;
	__u8 has_src4;
	__u8 has_src6;
	__u8 pad[2];
};

/* Per service / per backend, per CPU. gen_seen: the table generation this
 * CPU last hashed with (service counters only). */
struct lb_counters {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u32 gen_seen;
	__u32 pad;
};

struct lb_stats {
	__u64 packets;		/* all packets seen */
	__u64 vip_packets;	/* matched to a service */
	__u64 flow_misses;	/* matched, no (usable) flow entry: hashed */
	__u64 new_flows;
	__u64 table_swaps;	/* a CPU hashed with a new table generation */
	__u64 nat_replies;
	__u64 icmp_forwarded;
	__u64 too_big_sent;
	__u64 passed;
	__u64 drops[LB_NDROPS];
	__u64 syn_rehash;	/* a SYN (no ACK) on a flow entry: hashed again, entry replaced */
};

/* Tracked NAT (lb_nat_ct): per connection (the tracker's key), what the
 * tracker's entry does not hold: the backend id (its address and port
 * are the entry's reply tuple), the service and the client's MAC. */
struct lb_ct_peer {
	__u32 backend_id;
	__u32 service_id;
	__u8 client_mac[6];
	__u8 pad[2];
};

struct lb_decap_config {
	__u16 gue_port;
	__u16 pad;
};

struct lb_decap_stats {
	__u64 packets;
	__u64 decapped;
	__u64 passed;
};

/* Enum anchor for BTF (user space reads names and values from it). */
struct lb_layout_enums {
	enum lb_mode mode;
	enum lb_drop drop;
};

#endif
