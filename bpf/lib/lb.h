/* SPDX-License-Identifier: Apache-2.0 */
/* Load balancer (kube-proxy replacement), after Cilium's lb.h / nodeport.h, written anew.
 *
 * East-west: from_pod translates client -> frontend into client -> backend BEFORE policy, so the
 * egress policy sees the backend's identity (as Cilium's bpf_lxc does); to_pod restores the
 * frontend as the source of the replies (LB_FLOW_REV entry made at translation time).
 *
 * North-south (from_netdev / to_netdev on the node's underlay interface): a packet to an
 * external frontend is translated to a backend; a local backend only needs DNAT (its replies are
 * reverse-translated by to_netdev); a remote one is either SNATed to this node's address (the
 * replies come back here) or sent with the frontend in a DSR IP option: the backend's node
 * records the option in its LB_FLOW_REV entry, strips it, and its to_netdev writes the frontend
 * as the source of the replies, which go straight to the client.
 *
 * Backend choice: an established flow keeps its backend while that backend exists; else
 * sessionAffinity, else the Maglev table (hash of the 5-tuple mod table size: the same on every
 * node) or a random slot. */
#ifndef MESHCTL_LB_H
#define MESHCTL_LB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"
#include "parse.h"

#define BPF_F_INNER_MAP_FLAG (1U << 12)  /* BPF_F_INNER_MAP: inner maps may differ in size */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_SERVICES_MAP_SIZE);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service_value);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_BACKENDS_MAP_SIZE);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_SLOTS_MAP_SIZE);
	__type(key, struct lb_slot_key);
	__type(value, __u32);
} lb_slots SEC(".maps");

struct lb_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP_FLAG);
	__uint(max_entries, LB_MAGLEV_DEFAULT_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, LB_MAGLEV_OUTER_MAP_SIZE);
	__type(key, __u32);
	__array(values, struct lb_maglev_inner);
} lb_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_FLOWS_MAP_SIZE);
	__type(key, struct lb_flow_key);
	__type(value, struct lb_flow_value);
} lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_AFFINITY_MAP_SIZE);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_value);
} lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_node_config);
} lb_config SEC(".maps");

enum lb_result {
	LB_NONE = 0,                 /* not a service packet: continue */
	LB_XLATED = 1,               /* translated in place: continue */
	LB_NO_BACKEND = 2,           /* a frontend with no usable backend: drop */
	LB_ERROR = 3,                /* rewrite failed: drop */
	LB_REDIRECT = 4,             /* north-south: sent out with bpf_redirect_neigh */
};

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + 10)
#define IP_SRC_OFF (IP_OFF + 12)
#define IP_DST_OFF (IP_OFF + 16)

static __always_inline struct lb_node_config lb_node_config_read(void)
{
	struct lb_node_config out = {};
	__u32 zero = 0;
	struct lb_node_config *c = bpf_map_lookup_elem(&lb_config, &zero);

	if (c)
		out = *c;
	return out;
}

/* Byte offset of the L4 header, or < 0. */
static __always_inline int lb_l4_off(struct __sk_buff *skb)
{
	__u8 vihl;

	if (bpf_skb_load_bytes(skb, IP_OFF, &vihl, 1) < 0)
		return -1;
	return IP_OFF + (vihl & 0x0f) * 4;
}

static __always_inline int lb_csum_off(__u8 protocol)
{
	if (protocol == IPPROTO_TCP)
		return offsetof(struct tcphdr, check);
	if (protocol == IPPROTO_UDP)
		return offsetof(struct udphdr, check);
	return -1;
}

/* Rewrite the source (src=1) or destination address and port, fixing both checksums. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, __u8 protocol, int src, __be32 old_addr,
				      __be32 new_addr, __be16 old_port, __be16 new_port)
{
	int l4 = lb_l4_off(skb), csum = lb_csum_off(protocol);
	__u64 l4flags = protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4 < 0 || csum < 0)
		return -1;
	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, l4 + csum, old_addr, new_addr, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, src ? IP_SRC_OFF : IP_DST_OFF, &new_addr, 4, 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, l4 + csum, old_port, new_port, l4flags | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, l4 + (src ? 0 : 2), &new_port, 2, 0) < 0)
			return -1;
	}
	return 0;
}

static __always_inline void lb_flow_key_of(struct lb_flow_key *k, __be32 saddr, __be32 daddr, __be16 sport,
					   __be16 dport, __u8 protocol, __u8 kind)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->protocol = protocol;
	k->kind = kind;
}

/* The 5-tuple hash for Maglev: the same function on every node, so every node picks alike. */
static __always_inline __u32 lb_tuple_hash(const struct pkt *p)
{
	__u32 h = 0x9e3779b9;

	h ^= bpf_ntohl(p->saddr);
	h *= 0x85ebca6b;
	h ^= bpf_ntohl(p->daddr) + ((__u32)bpf_ntohs(p->sport) << 16 | bpf_ntohs(p->dport));
	h *= 0xc2b2ae35;
	h ^= p->protocol;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 lb_pick(const struct lb_service_value *svc, const struct pkt *p)
{
	__u32 backend_id = 0;

	if (svc->flags & LB_SVC_F_MAGLEV) {
		__u32 id = svc->service_id, idx;
		void *table = bpf_map_lookup_elem(&lb_maglev, &id);
		__u32 *slot;

		if (!table || !svc->maglev_size)
			return 0;
		idx = lb_tuple_hash(p) % svc->maglev_size;
		slot = bpf_map_lookup_elem(table, &idx);
		if (slot)
			backend_id = *slot;
	} else {
		struct lb_slot_key sk = { .service_id = svc->service_id };
		__u32 *slot;

		if (!svc->backend_count)
			return 0;
		sk.slot = 1 + bpf_get_prandom_u32() % svc->backend_count;
		slot = bpf_map_lookup_elem(&lb_slots, &sk);
		if (slot)
			backend_id = *slot;
	}
	return backend_id;
}

/* The backend for a new flow of service svc (affinity first), or 0. */
static __always_inline __u32 lb_select(const struct lb_service_value *svc, const struct pkt *p, __u64 now)
{
	struct lb_affinity_key ak = { .client = p->saddr, .service_id = svc->service_id };
	struct lb_affinity_value av = {};
	__u32 backend_id;

	if (svc->flags & LB_SVC_F_AFFINITY) {
		struct lb_affinity_value *hit = bpf_map_lookup_elem(&lb_affinity, &ak);

		if (hit && now - hit->last_ns < (__u64)svc->affinity_timeout_s * 1000000000ULL &&
		    bpf_map_lookup_elem(&lb_backends, &hit->backend_id)) {
			hit->last_ns = now;
			return hit->backend_id;
		}
	}
	backend_id = lb_pick(svc, p);
	if (backend_id && (svc->flags & LB_SVC_F_AFFINITY)) {
		av.last_ns = now;
		av.backend_id = backend_id;
		bpf_map_update_elem(&lb_affinity, &ak, &av, BPF_ANY);
	}
	return backend_id;
}

/* Look up (or make) the SVC flow entry of a packet to a frontend; *be is its backend. */
static __always_inline int lb_flow(struct pkt *p, const struct lb_service_value *svc, __u64 now,
				   struct lb_flow_value *out, struct lb_backend *be)
{
	struct lb_flow_key fk;
	struct lb_flow_value *fv;
	struct lb_backend *b;
	__u32 backend_id;

	lb_flow_key_of(&fk, p->saddr, p->daddr, p->sport, p->dport, p->protocol, LB_FLOW_SVC);
	fv = bpf_map_lookup_elem(&lb_flows, &fk);
	if (fv && fv->service_id == svc->service_id) {
		b = bpf_map_lookup_elem(&lb_backends, &fv->backend_id);
		if (b) {   /* established: keep the backend while it exists */
			__sync_fetch_and_add(&fv->packets, 1);
			*out = *fv;
			*be = *b;
			return 1;
		}
	}
	backend_id = lb_select(svc, p, now);
	if (!backend_id)
		return 0;
	b = bpf_map_lookup_elem(&lb_backends, &backend_id);
	if (!b)
		return 0;
	__builtin_memset(out, 0, sizeof(*out));
	out->backend_id = backend_id;
	out->service_id = svc->service_id;
	out->addr = b->addr;
	out->port = b->port;
	out->packets = 1;
	*be = *b;
	return 2;
}

/* Remember how to reverse-translate the replies of a new flow. */
static __always_inline void lb_rev_put(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 protocol,
				       __be32 frontend, __be16 fport, __be32 client, __be16 cport,
				       __u32 service_id, __u32 flags)
{
	struct lb_flow_key rk;
	struct lb_flow_value rv = {};

	lb_flow_key_of(&rk, saddr, daddr, sport, dport, protocol, LB_FLOW_REV);
	rv.service_id = service_id;
	rv.addr = frontend;
	rv.port = fport;
	rv.addr2 = client;
	rv.port2 = cport;
	rv.flags = flags;
	bpf_map_update_elem(&lb_flows, &rk, &rv, BPF_ANY);
}

static __always_inline int lb_is_l4(__u8 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

/* from_pod: client -> frontend becomes client -> backend; p is updated for policy. */
static __always_inline int lb_xlate_pod(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct lb_service_key sk = {};
	struct lb_service_value *svc;
	struct lb_flow_value fv;
	struct lb_backend be;
	struct lb_flow_key fk;
	int made;

	if (!lb_is_l4(p->protocol))
		return LB_NONE;
	sk.addr = p->daddr;
	sk.dport = p->dport;
	sk.protocol = p->protocol;
	svc = bpf_map_lookup_elem(&lb_services, &sk);
	if (!svc)
		return LB_NONE;
	made = lb_flow(p, svc, now, &fv, &be);
	if (!made)
		return LB_NO_BACKEND;
	if (made == 2) {
		lb_flow_key_of(&fk, p->saddr, p->daddr, p->sport, p->dport, p->protocol, LB_FLOW_SVC);
		bpf_map_update_elem(&lb_flows, &fk, &fv, BPF_ANY);
	}
	/* Always (re)write the reverse entry: cheap, and it survives LRU eviction of the pair. */
	lb_rev_put(fv.addr, p->saddr, fv.port, p->sport, p->protocol, p->daddr, p->dport, 0, 0,
		   fv.service_id, 0);
	if (lb_rewrite(skb, p->protocol, 0, p->daddr, fv.addr, p->dport, fv.port) < 0)
		return LB_ERROR;
	p->daddr = fv.addr;
	p->dport = fv.port;
	p->policy_dport = fv.port;
	return LB_XLATED;
}

/* A reply (to_pod, to_netdev): restore the frontend as source; SNAT replies also get the
 * client back as destination. Entries made at the netdev serve to_netdev, the others to_pod.
 * Returns LB_XLATED when it rewrote. */
static __always_inline int lb_rev_xlate(struct __sk_buff *skb, const struct pkt *p, int netdev)
{
	struct lb_flow_key rk;
	struct lb_flow_value *rv;
	struct lb_flow_value v;

	if (!lb_is_l4(p->protocol))
		return LB_NONE;
	lb_flow_key_of(&rk, p->saddr, p->daddr, p->sport, p->dport, p->protocol, LB_FLOW_REV);
	rv = bpf_map_lookup_elem(&lb_flows, &rk);
	if (!rv || !(rv->flags & LB_FLOW_F_NETDEV) != !netdev)
		return LB_NONE;
	__sync_fetch_and_add(&rv->packets, 1);
	v = *rv;
	if (lb_rewrite(skb, p->protocol, 1, p->saddr, v.addr, p->sport, v.port) < 0)
		return LB_ERROR;
	if ((v.flags & LB_FLOW_F_SNAT) &&
	    lb_rewrite(skb, p->protocol, 0, p->daddr, v.addr2, p->dport, v.port2) < 0)
		return LB_ERROR;
	return LB_XLATED;
}

/* A SNAT port for (backend, snat address) that no other client holds: the client's port if
 * free, else a few pseudo-random tries. 0 = none found. */
static __always_inline __be16 lb_snat_port(const struct pkt *p, const struct lb_flow_value *fv, __be32 snat)
{
	struct lb_flow_key rk;
	struct lb_flow_value *rv;
	__u16 port = bpf_ntohs(p->sport);
	int i;

	for (i = 0; i < 8; i++) {
		lb_flow_key_of(&rk, fv->addr, snat, fv->port, bpf_htons(port), p->protocol, LB_FLOW_REV);
		rv = bpf_map_lookup_elem(&lb_flows, &rk);
		if (!rv || (rv->addr2 == p->saddr && rv->port2 == p->sport))
			return bpf_htons(port);
		port = 32768 + (bpf_get_prandom_u32() % 28232);
	}
	return 0;
}

/* Insert the DSR option (frontend address and port) after the IPv4 header (which has none). */
static __always_inline int lb_dsr_push(struct __sk_buff *skb, __be32 frontend, __be16 fport)
{
	struct iphdr ip;
	__u8 opt[DSR_IPV4_OPT_LEN];
	__s64 sum;

	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)) < 0 || ip.ihl != 5)
		return -1;
	if (bpf_skb_adjust_room(skb, DSR_IPV4_OPT_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	opt[0] = DSR_IPV4_OPT_TYPE;
	opt[1] = DSR_IPV4_OPT_LEN;
	__builtin_memcpy(&opt[2], &fport, 2);
	__builtin_memcpy(&opt[4], &frontend, 4);
	ip.ihl = 7;
	ip.tot_len = bpf_htons(bpf_ntohs(ip.tot_len) + DSR_IPV4_OPT_LEN);
	ip.check = 0;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)opt, sizeof(opt), sum);
	if (sum < 0)
		return -1;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip.check = ~sum & 0xffff;
	if (bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, IP_OFF + sizeof(ip), opt, sizeof(opt), 0) < 0)
		return -1;
	return 0;
}

/* At the backend's node: read and strip a DSR option; 1 when one was there. */
static __always_inline int lb_dsr_pull(struct __sk_buff *skb, __be32 *frontend, __be16 *fport)
{
	struct iphdr ip;
	__u8 opt[DSR_IPV4_OPT_LEN];
	__s64 sum;

	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)) < 0 || ip.ihl != 7)
		return 0;
	if (bpf_skb_load_bytes(skb, IP_OFF + sizeof(ip), opt, sizeof(opt)) < 0)
		return 0;
	if (opt[0] != DSR_IPV4_OPT_TYPE || opt[1] != DSR_IPV4_OPT_LEN)
		return 0;
	__builtin_memcpy(fport, &opt[2], 2);
	__builtin_memcpy(frontend, &opt[4], 4);
	ip.ihl = 5;
	ip.tot_len = bpf_htons(bpf_ntohs(ip.tot_len) - DSR_IPV4_OPT_LEN);
	ip.check = 0;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (sum < 0)
		return -1;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip.check = ~sum & 0xffff;
	if (bpf_skb_adjust_room(skb, -DSR_IPV4_OPT_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) < 0)
		return -1;
	return 1;
}

/* from_netdev: a packet arriving on the underlay. DSR arrivals are recorded and stripped;
 * SNAT replies go back to their client; packets to an external frontend get translated. */
static __always_inline int lb_netdev_ingress(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct lb_service_key sk = {};
	struct lb_service_value *svc;
	struct lb_node_config cfg;
	struct lb_flow_value fv;
	struct lb_flow_key fk;
	struct lb_backend be;
	__be32 frontend;
	__be16 fport;
	int made, r;

	if (!lb_is_l4(p->protocol))
		return LB_NONE;
	cfg = lb_node_config_read();
	if (!(cfg.flags & LB_CFG_F_ENABLED))
		return LB_NONE;

	r = lb_dsr_pull(skb, &frontend, &fport);
	if (r < 0)
		return LB_ERROR;
	if (r) {   /* we host the backend: its replies must carry the frontend as source */
		lb_rev_put(p->daddr, p->saddr, p->dport, p->sport, p->protocol, frontend, fport, 0, 0, 0,
			   LB_FLOW_F_DSR | LB_FLOW_F_NETDEV);
		return LB_XLATED;
	}

	if (p->daddr == cfg.snat_addr) {   /* maybe a reply of a SNATed flow */
		struct lb_flow_key rk;
		struct lb_flow_value *rv;

		lb_flow_key_of(&rk, p->saddr, p->daddr, p->sport, p->dport, p->protocol, LB_FLOW_REV);
		rv = bpf_map_lookup_elem(&lb_flows, &rk);
		if (rv && (rv->flags & LB_FLOW_F_SNAT)) {
			if (lb_rev_xlate(skb, p, 1) != LB_XLATED)
				return LB_ERROR;
			bpf_redirect_neigh(skb->ifindex, 0, 0, 0);
			return LB_REDIRECT;
		}
	}

	sk.addr = p->daddr;
	sk.dport = p->dport;
	sk.protocol = p->protocol;
	svc = bpf_map_lookup_elem(&lb_services, &sk);
	if (!svc || !(svc->flags & LB_SVC_F_EXTERNAL))
		return LB_NONE;
	made = lb_flow(p, svc, now, &fv, &be);
	if (!made)
		return LB_NO_BACKEND;
	if (made == 2) {
		fv.flags = LB_FLOW_F_NETDEV;
		if (!(be.flags & LB_BE_F_LOCAL)) {
			if (svc->flags & LB_SVC_F_DSR) {
				fv.flags |= LB_FLOW_F_DSR;
			} else {
				fv.flags |= LB_FLOW_F_SNAT;
				fv.addr2 = cfg.snat_addr;
				fv.port2 = lb_snat_port(p, &fv, cfg.snat_addr);
				if (!fv.port2)
					return LB_ERROR;
			}
		}
		lb_flow_key_of(&fk, p->saddr, p->daddr, p->sport, p->dport, p->protocol, LB_FLOW_SVC);
		bpf_map_update_elem(&lb_flows, &fk, &fv, BPF_ANY);
	}

	if (fv.flags & LB_FLOW_F_SNAT) {
		lb_rev_put(fv.addr, fv.addr2, fv.port, fv.port2, p->protocol, p->daddr, p->dport, p->saddr,
			   p->sport, fv.service_id, LB_FLOW_F_SNAT | LB_FLOW_F_NETDEV);
		if (lb_rewrite(skb, p->protocol, 0, p->daddr, fv.addr, p->dport, fv.port) < 0 ||
		    lb_rewrite(skb, p->protocol, 1, p->saddr, fv.addr2, p->sport, fv.port2) < 0)
			return LB_ERROR;
		bpf_redirect_neigh(skb->ifindex, 0, 0, 0);
		return LB_REDIRECT;
	}
	if (fv.flags & LB_FLOW_F_DSR) {
		int first = p->protocol != IPPROTO_TCP || (p->tcp_flags & TCP_FLAG_SYN);

		if (lb_rewrite(skb, p->protocol, 0, p->daddr, fv.addr, p->dport, fv.port) < 0)
			return LB_ERROR;
		/* The option rides the first packet only (TCP SYN; every UDP datagram): the backend's
		 * node keeps it in its LB_FLOW_REV entry, and no full-size segment grows past MTU. */
		if (first && lb_dsr_push(skb, p->daddr, p->dport) < 0)
			return LB_ERROR;
		bpf_redirect_neigh(skb->ifindex, 0, 0, 0);
		return LB_REDIRECT;
	}
	/* Local backend: DNAT; the stack forwards to the pod, to_netdev fixes the replies. */
	lb_rev_put(fv.addr, p->saddr, fv.port, p->sport, p->protocol, p->daddr, p->dport, 0, 0, fv.service_id,
		   LB_FLOW_F_NETDEV);
	if (lb_rewrite(skb, p->protocol, 0, p->daddr, fv.addr, p->dport, fv.port) < 0)
		return LB_ERROR;
	return LB_XLATED;
}

#endif /* MESHCTL_LB_H */
