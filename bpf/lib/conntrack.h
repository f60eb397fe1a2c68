/* SPDX-License-Identifier: Apache-2.0 */
/* Connection tracking: an LRU hash keyed by the 5-tuple and the direction in which the owning
 * endpoint first saw the connection.
 *
 * For endpoint E handling a packet in direction dir, {fwd tuple, dir} is an established
 * connection E opened (or accepted) and {reversed tuple, !dir} is a reply to one. Replies pass
 * without policy. A forward packet goes to policy on a miss, and on a hit whose policy_rev is not
 * the current policy revision (policy.h): as in Cilium, a policy that stops allowing a connection
 * stops it at once. A denied forward packet leaves its entry untouched (not deleted, not
 * refreshed; cilium/cilium#9187), so a re-allow lets the connection continue. An entry past
 * expires_ns is a miss and gets re-evaluated. */
#ifndef MESHCTL_CONNTRACK_H
#define MESHCTL_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "common.h"
#include "parse.h"

#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT_MAP_SIZE);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
} ct SEC(".maps");

enum ct_status {
	CT_NEW = 0,
	CT_ESTABLISHED = 1,          /* same direction as the first packet */
	CT_REPLY = 2,                /* the other way */
};

static __always_inline void ct_key_fwd(struct ct_key *k, const struct pkt *p, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->protocol = p->protocol;
	k->direction = dir;
}

static __always_inline void ct_key_rev(struct ct_key *k, const struct pkt *p, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->saddr = p->daddr;
	k->daddr = p->saddr;
	k->sport = p->dport;
	k->dport = p->sport;
	k->protocol = p->protocol;
	k->direction = dir == DIR_EGRESS ? DIR_INGRESS : DIR_EGRESS;
}

/* Lifetime for an entry in state `flags` (after this packet), in ns. */
static __always_inline __u64 ct_lifetime(const struct datapath_config *cfg, __u8 protocol, __u32 flags)
{
	__u32 s;

	if (protocol != IPPROTO_TCP)
		s = cfg->ct_timeout_non_tcp_s;
	else if (flags & CT_F_CLOSING)
		s = cfg->ct_timeout_close_s;
	else if (flags & CT_F_SEEN_REPLY)
		s = cfg->ct_timeout_tcp_s;
	else
		s = cfg->ct_timeout_syn_s;
	return (__u64)s * NSEC_PER_SEC;
}

static __always_inline __u32 ct_flags_for(const struct pkt *p, __u32 flags)
{
	if (p->protocol == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= CT_F_CLOSING;
	return flags;
}

static __always_inline void ct_touch(struct ct_value *v, const struct pkt *p,
				     const struct datapath_config *cfg, __u64 now, int reply)
{
	__u32 flags = ct_flags_for(p, v->flags);

	if (reply)
		flags |= CT_F_SEEN_REPLY;
	if (flags != v->flags)
		v->flags = flags;
	v->expires_ns = now + ct_lifetime(cfg, p->protocol, flags);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
}

/* Look the packet up. CT_ESTABLISHED: *fwd is the live forward entry, untouched (the caller
 * refreshes it once the packet passes). CT_REPLY: the entry is refreshed, *cookie set. */
static __always_inline int ct_lookup(const struct pkt *p, __u8 dir, const struct datapath_config *cfg,
				     __u64 now, struct ct_value **fwd, __u32 *cookie)
{
	struct ct_key key;
	struct ct_value *v;

	ct_key_fwd(&key, p, dir);
	v = bpf_map_lookup_elem(&ct, &key);
	if (v && v->expires_ns > now) {
		*fwd = v;
		return CT_ESTABLISHED;
	}
	ct_key_rev(&key, p, dir);
	v = bpf_map_lookup_elem(&ct, &key);
	if (v && v->expires_ns > now) {
		ct_touch(v, p, cfg, now, 1);
		*cookie = v->cookie;
		return CT_REPLY;
	}
	return CT_NEW;
}

/* A forward packet of a tracked connection passed, judged at revision rev with this cookie. */
static __always_inline void ct_pass_fwd(struct ct_value *v, const struct pkt *p, const struct datapath_config *cfg,
					__u64 now, __u32 rev, __u32 cookie)
{
	ct_touch(v, p, cfg, now, 0);
	if (v->policy_rev != rev || v->cookie != cookie) {
		v->cookie = cookie;
		v->policy_rev = rev;
	}
}

/* Record a connection the verdict let through (replaces an expired entry of the same key). */
static __always_inline void ct_create(const struct pkt *p, __u8 dir, const struct datapath_config *cfg,
				      __u64 now, __u32 rev, __u32 cookie, __u32 flags)
{
	struct ct_key key;
	struct ct_value v = {};

	ct_key_fwd(&key, p, dir);
	v.flags = ct_flags_for(p, flags);
	v.expires_ns = now + ct_lifetime(cfg, p->protocol, v.flags);
	v.packets = 1;
	v.bytes = p->len;
	v.cookie = cookie;
	v.policy_rev = rev;
	bpf_map_update_elem(&ct, &key, &v, BPF_ANY);
}

#endif /* MESHCTL_CONNTRACK_H */
