/* SPDX-License-Identifier: Apache-2.0 */
/* Every map key/value struct and enum of the meshctl datapath.
 *
 * Mirrored field by field in meshctl/dataplane/structs.py; tests/privileged/test_structs_btf.py
 * checks sizes and offsets against the BTF of the compiled object. Change both together and
 * bump MESHCTL_ABI_VERSION. Every struct is padded explicitly: hash and LPM keys compare
 * byte-for-byte, so no implicit padding may exist.
 */
#ifndef MESHCTL_COMMON_H
#define MESHCTL_COMMON_H

#include <linux/types.h>

#define MESHCTL_ABI_VERSION 2

/* Reserved numeric identities (Cilium's pkg/identity/numericidentity.go). */
enum reserved_identity {
	IDENTITY_ANY = 0,           /* policy key wildcard: any peer */
	IDENTITY_HOST = 1,
	IDENTITY_WORLD = 2,         /* ipcache miss */
	IDENTITY_UNMANAGED = 3,
	IDENTITY_HEALTH = 4,
	IDENTITY_INIT = 5,
	IDENTITY_REMOTE_NODE = 6,
	IDENTITY_KUBE_APISERVER = 7,
	IDENTITY_INGRESS = 8,
};
#define CLUSTER_IDENTITY_MIN 256
#define CIDR_IDENTITY_MIN (1 << 24)

enum direction {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
};

enum verdict {
	VERDICT_FORWARDED = 1,
	VERDICT_DROPPED = 2,
	VERDICT_AUDIT = 4,           /* Hubble's AUDIT: staged policies would decide otherwise */
};

/* Why a verdict was reached. Forwarded flows: ALLOWED or NOT_ENFORCED; drops: the rest. */
enum flow_reason {
	REASON_ALLOWED = 0,          /* a policy allow entry matched (cookie says which) */
	REASON_NOT_ENFORCED = 1,     /* endpoint not isolated in this direction */
	REASON_DEFAULT_DENY = 2,     /* isolated and nothing allowed it */
	REASON_EXPLICIT_DENY = 3,    /* a deny entry matched (cookie says which) */
	REASON_IPV6 = 4,             /* IPv6 dropped by setting (CONFIG_F_IPV6_PASS unset) */
	REASON_MALFORMED = 5,        /* truncated or unparseable packet */
	REASON_NO_ENDPOINT = 6,      /* packet on a pod veth for an address with no endpoint entry */
	/* 7 is REASON_NO_SERVICE_BACKEND (load balancer, below). */
	REASON_PROXY_DOWN = 8,       /* an L7 port, and the node's proxy does not listen: fail closed */
	REASON_PROXY_REQUIRED = 9,   /* an L7 port reached outside the proxy (a connection opened
	                              * before the L7 rule, or a packet that bypassed the redirect) */
	REASON_PROXY_REDIRECT = 10,  /* forwarded: allowed at L4 and handed to the L7 proxy */
};

/* ipcache: LPM trie, IPv4 prefix -> identity. No match means IDENTITY_WORLD. */
struct ipcache_key {
	__u32 prefixlen;             /* 0..32: bits of addr that count */
	__be32 addr;
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;                 /* reserved, 0 */
};

/* Local endpoints (pods on this node): hash, pod IPv4 -> endpoint. */
struct endpoint_key {
	__be32 addr;
};

#define ENDPOINT_F_ENFORCE_INGRESS (1 << 0)
#define ENDPOINT_F_ENFORCE_EGRESS (1 << 1)
/* Staged (audit-mode) policies select the endpoint in this direction: its verdicts are also
 * computed with them (inner map endpoint_id | AUDIT_MAP_BIT, enforcing in this direction) and an
 * AUDIT flow reports every difference. Unset = the endpoint pays nothing. */
#define ENDPOINT_F_AUDIT_INGRESS (1 << 2)
#define ENDPOINT_F_AUDIT_EGRESS (1 << 3)
/* policy_maps key of an endpoint's enforced+staged map; endpoint ids stay below this bit. */
#define AUDIT_MAP_BIT (1U << 31)

struct endpoint_value {
	__u32 endpoint_id;           /* key of the endpoint's inner policy map in policy_maps */
	__u32 identity;
	__u32 flags;                 /* ENDPOINT_F_* */
};

/* Policy: policy_maps is a HASH_OF_MAPS endpoint_id -> inner LPM trie of policy entries, so an
 * endpoint's whole policy is replaced by swapping one pointer.
 *
 * Inner key: prefixlen counts the bits after it: identity (32) + egress (8) are always exact
 * (POLICY_PREFIX_STATIC); protocol 0 with prefixlen 40 = any protocol; prefixlen 48 = one
 * protocol, all ports; 48 + n = the first n bits of dport (port ranges become prefixes).
 * Lookup is done twice, with the peer identity and with IDENTITY_ANY. Deny beats allow;
 * otherwise an identity-specific allow is reported before a wildcard one. The compiler makes
 * sure a broader deny is never shadowed by a longer allow prefix of the same identity. */
struct policy_key {
	__u32 prefixlen;
	__u32 identity;              /* peer identity, IDENTITY_ANY = any peer */
	__u8 egress;                 /* enum direction */
	__u8 protocol;               /* IPPROTO_*, 0 = any */
	__be16 dport;
};
#define POLICY_PREFIX_STATIC 40
#define POLICY_PREFIX_PROTO 48
#define POLICY_PREFIX_FULL 64

#define POLICY_F_DENY (1 << 0)

struct policy_value {
	__u32 cookie;                /* stable id of the rule that made this entry */
	__u8 flags;                  /* POLICY_F_* */
	__u8 pad;
	__u16 proxy_port;            /* allow with L7 rules: the node's proxy listener (host order) */
};

/* L7 proxy redirect (lib/proxy.h). The datapath marks a packet it hands to the proxy with
 * MARK_TO_PROXY (a policy routing rule of the node delivers it locally); the proxy marks its
 * upstream connections MARK_FROM_PROXY, and an L7 port admits only those. */
#define MARK_PROXY_MASK 0xf00
#define MARK_TO_PROXY 0x200
#define MARK_FROM_PROXY 0xa00

/* Connection tracking: LRU hash on the 5-tuple plus the direction in which the connection was
 * first seen by this node's endpoint (ingress at the receiver, egress at the sender).
 * ICMP echo: sport = dport = echo id. */
struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 direction;              /* enum direction */
	__u8 pad[2];
};

#define CT_F_SEEN_REPLY (1 << 0)
#define CT_F_CLOSING (1 << 1)        /* FIN or RST seen: short lifetime */
#define CT_F_PROXY (1 << 2)          /* a UDP flow the proxy judges: every datagram goes to it */

struct ct_value {
	__u64 expires_ns;            /* bpf_ktime_get_ns() deadline; past = expired = miss */
	__u64 packets;
	__u64 bytes;
	__u32 cookie;                /* policy entry that admitted it (0 when not enforced) */
	__u32 flags;                 /* CT_F_* */
	__u32 policy_rev;            /* policy_rev value when the forward direction was last judged */
	__u32 pad;
};

/* Flow events on the ringbuf: one per new connection verdict and per drop. */
struct flow_event {
	__u64 timestamp_ns;          /* bpf_ktime_get_ns() */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 direction;              /* enum direction: policy direction evaluated */
	__u8 verdict;                /* enum verdict */
	__u8 reason;                 /* enum flow_reason */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 endpoint_id;
	__u32 cookie;                /* matching policy entry, 0 for default deny / not enforced */
	__u8 tcp_flags;              /* TCP flags byte of the packet, 0 otherwise */
	__u8 pad[3];
	__u32 length;                /* packet length */
};

/* Counters: per-CPU hash (verdict, reason, direction) -> packets, bytes. */
struct metrics_key {
	__u8 verdict;
	__u8 reason;
	__u8 direction;
	__u8 pad;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* Datapath settings: ARRAY with one entry (key 0). */
#define CONFIG_F_IPV6_PASS (1 << 0)  /* pass IPv6 unenforced; unset = drop with REASON_IPV6 */
#define CONFIG_F_PROXY (1 << 1)      /* L7 ports here: look up the proxy's sockets (lib/proxy.h) */

struct datapath_config {
	__u32 flags;                 /* CONFIG_F_* */
	__u32 ct_timeout_tcp_s;      /* established TCP, default 21600 */
	__u32 ct_timeout_non_tcp_s;  /* UDP, ICMP, other; default 60 */
	__u32 ct_timeout_syn_s;      /* TCP before the reply is seen; default 60 */
	__u32 ct_timeout_close_s;    /* TCP after FIN/RST; default 10 */
	__u32 pad;
};

/* Policy revision: ARRAY with one __u32 (key 0), runtime state, not intent. Reconcile bumps it
 * after it has written ipcache, policies and endpoints; a forward packet of a tracked connection
 * whose ct_value.policy_rev differs is judged by policy again (see datapath.c). */

/* Map capacities. */
#define IPCACHE_MAP_SIZE 512000
#define ENDPOINTS_MAP_SIZE 65536
#define POLICY_OUTER_MAP_SIZE 65536
#define POLICY_MAP_SIZE 16384
#define CT_MAP_SIZE 262144
#define EVENTS_RINGBUF_SIZE (16 * 1024 * 1024)
#define METRICS_MAP_SIZE 1024

/* ---- Load balancer (kube-proxy replacement; bpf/lib/lb.h) ----
 * One lb_services entry per frontend (ClusterIP:port, NodePort, LoadBalancer/external IP:port);
 * service_id names the frontend's backend slots (random) or Maglev table, and its reverse NAT. */
#define REASON_NO_SERVICE_BACKEND 7  /* enum flow_reason: a service with no usable backend */

struct lb_service_key {
	__be32 addr;                 /* frontend address */
	__be16 dport;                /* frontend port */
	__u8 protocol;               /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

#define LB_SVC_F_MAGLEV (1 << 0)     /* pick through lb_maglev[service_id]; else random slot */
#define LB_SVC_F_AFFINITY (1 << 1)   /* sessionAffinity ClientIP */
#define LB_SVC_F_EXTERNAL (1 << 2)   /* NodePort / LoadBalancer / externalIP: translated at the netdev */
#define LB_SVC_F_DSR (1 << 3)        /* north-south to a remote backend: DSR (IP option), else SNAT */

struct lb_service_value {
	__u32 service_id;            /* > 0 */
	__u32 backend_count;         /* slots 1..backend_count in lb_slots */
	__u32 maglev_size;           /* entries of the inner Maglev table (LB_SVC_F_MAGLEV) */
	__u32 affinity_timeout_s;    /* LB_SVC_F_AFFINITY */
	__u32 flags;                 /* LB_SVC_F_* */
};

/* Random selection: hash (service_id, slot 1..backend_count) -> backend_id. */
struct lb_slot_key {
	__u32 service_id;
	__u32 slot;
};

#define LB_BE_F_LOCAL (1 << 0)       /* the backend runs on this node */

struct lb_backend {
	__be32 addr;
	__be16 port;
	__u8 protocol;
	__u8 flags;                  /* LB_BE_F_* */
};

/* Translation state (LRU). LB_FLOW_SVC: the client's tuple towards the frontend, at the node that
 * translated it -> the backend chosen (and the SNAT address). LB_FLOW_REV: a reply's tuple as
 * it arrives (backend -> client, or backend -> SNAT address) -> the frontend to restore as source
 * (and, for SNAT, the client to restore as destination). */
#define LB_FLOW_SVC 0
#define LB_FLOW_REV 1

struct lb_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 kind;                   /* LB_FLOW_* */
	__u8 pad[2];
};

#define LB_FLOW_F_SNAT (1 << 0)
#define LB_FLOW_F_DSR (1 << 1)
#define LB_FLOW_F_NETDEV (1 << 2)    /* made at the underlay interface (north-south) */

struct lb_flow_value {
	__u32 backend_id;            /* SVC */
	__u32 service_id;
	__be32 addr;                 /* SVC: backend address; REV: frontend address (new source) */
	__be32 addr2;                /* SVC+SNAT: SNAT source; REV+SNAT: client (new destination) */
	__be16 port;                 /* SVC: backend port; REV: frontend port */
	__be16 port2;                /* SVC+SNAT: SNAT port; REV+SNAT: client port */
	__u32 flags;                 /* LB_FLOW_F_* */
	__u64 packets;
};

/* sessionAffinity ClientIP: LRU (client, service_id) -> backend. */
struct lb_affinity_key {
	__be32 client;
	__u32 service_id;
};

struct lb_affinity_value {
	__u64 last_ns;
	__u32 backend_id;
	__u32 pad;
};

/* Node settings of the load balancer: ARRAY with one entry (key 0). */
#define LB_CFG_F_ENABLED (1 << 0)    /* kubeProxyReplacement */

struct lb_node_config {
	__be32 snat_addr;            /* this node's underlay address (SNAT source, NodePort) */
	__u32 flags;                 /* LB_CFG_F_* */
};

/* DSR dispatch in an IPv4 option, after Cilium's dsrDispatch=opt: type, length 8, then the
 * frontend port and address in network order. */
#define DSR_IPV4_OPT_TYPE 0x9a       /* IPOPT_COPY | 26 */
#define DSR_IPV4_OPT_LEN 8

#define LB_SERVICES_MAP_SIZE 65536
#define LB_BACKENDS_MAP_SIZE 65536
#define LB_SLOTS_MAP_SIZE 262144
#define LB_MAGLEV_OUTER_MAP_SIZE 65536
#define LB_MAGLEV_DEFAULT_SIZE 16381
#define LB_FLOWS_MAP_SIZE 262144
#define LB_AFFINITY_MAP_SIZE 65536

#endif /* MESHCTL_COMMON_H */
