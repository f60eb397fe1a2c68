/* SPDX-License-Identifier: Apache-2.0 */
/* Policy: per-endpoint LPM tries of (peer identity, direction, protocol, port prefix) entries.
 *
 * Like Cilium's __policy_can_access (LPM policy maps, v1.16+): one lookup with the peer
 * identity (L3), one with IDENTITY_ANY (L4-only). A deny found by either lookup wins; else an
 * identity-specific allow is reported before a wildcard one (our policy_value has no prefix
 * length, so unlike Cilium a longer wildcard prefix does not take the cookie: the verdict is
 * the same). Nothing found = default deny. */
#ifndef MESHCTL_POLICY_H
#define MESHCTL_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

struct policy_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, POLICY_MAP_SIZE);
	/* Sizes, not __type: clang emits structs reached through two pointers (outer -> inner ->
	 * key) as forward declarations, which libbpf cannot size. datapath.c anchors the full
	 * types in the BTF. */
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, POLICY_OUTER_MAP_SIZE);
	__type(key, __u32);
	__array(values, struct policy_inner);
} policy_maps SEC(".maps");

/* The policy revision (common.h): one __u32 that reconcile bumps once a change is fully written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} policy_rev SEC(".maps");

/* Read before any policy lookup: a verdict recorded with this revision is never newer than the
 * maps it was computed from, so a bump after the write always forces one more judgement. */
static __always_inline __u32 policy_revision(void)
{
	__u32 zero = 0;
	__u32 *rev = bpf_map_lookup_elem(&policy_rev, &zero);

	return rev ? *rev : 0;
}

enum policy_verdict {
	POLICY_NO_MATCH = 0,
	POLICY_ALLOW = 1,
	POLICY_DENY = 2,
};

static __always_inline int policy_lookup(__u32 endpoint_id, __u32 peer_identity, __u8 dir,
					 __u8 protocol, __be16 dport, __u32 *cookie, __u16 *proxy_port)
{
	struct policy_key key = {
		.prefixlen = POLICY_PREFIX_FULL,
		.identity = peer_identity,
		.egress = dir,
		.protocol = protocol,
		.dport = dport,
	};
	struct policy_value *l3, *l4;
	void *inner;

	*cookie = 0;
	*proxy_port = 0;
	inner = bpf_map_lookup_elem(&policy_maps, &endpoint_id);
	if (!inner)
		return POLICY_NO_MATCH;

	l3 = bpf_map_lookup_elem(inner, &key);
	if (l3 && (l3->flags & POLICY_F_DENY)) {
		*cookie = l3->cookie;
		return POLICY_DENY;
	}
	key.identity = IDENTITY_ANY;
	l4 = bpf_map_lookup_elem(inner, &key);
	if (l4 && (l4->flags & POLICY_F_DENY)) {
		*cookie = l4->cookie;
		return POLICY_DENY;
	}
	if (l3) {
		*cookie = l3->cookie;
		*proxy_port = l3->proxy_port;
		return POLICY_ALLOW;
	}
	if (l4) {
		*cookie = l4->cookie;
		*proxy_port = l4->proxy_port;
		return POLICY_ALLOW;
	}
	return POLICY_NO_MATCH;
}

#endif /* MESHCTL_POLICY_H */
