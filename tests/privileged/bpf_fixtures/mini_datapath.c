// SPDX-License-Identifier: GPL-2.0
/* A tiny stand-in for bpf/datapath.c with the same maps (names, types, layouts) and the same
 * program names, for the kernel-binding tests. from_pod emits one flow_event per packet, counts
 * it in metrics and returns TC_ACT_SHOT (2) when the inner policy map of endpoint 1 holds a deny
 * entry for (identity 7, egress, tcp/80), else config.flags (so tests can see config writes). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"

#ifndef VARIANT
#define VARIANT 0
#endif

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, struct datapath_config); } config SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, ENDPOINTS_MAP_SIZE);
	 __type(key, struct endpoint_key); __type(value, struct endpoint_value); } endpoints SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(map_flags, BPF_F_NO_PREALLOC);
	 __uint(max_entries, IPCACHE_MAP_SIZE);
	 __type(key, struct ipcache_key); __type(value, struct ipcache_value); } ipcache SEC(".maps");
struct policy_inner { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(map_flags, BPF_F_NO_PREALLOC);
	 __uint(max_entries, POLICY_MAP_SIZE);
	 __uint(key_size, sizeof(struct policy_key)); __uint(value_size, sizeof(struct policy_value)); };
struct { __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS); __uint(max_entries, POLICY_OUTER_MAP_SIZE);
	 __type(key, __u32); __array(values, struct policy_inner); } policy_maps SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, CT_MAP_SIZE);
	 __type(key, struct ct_key); __type(value, struct ct_value); } ct SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, EVENTS_RINGBUF_SIZE); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, METRICS_MAP_SIZE);
	 __type(key, struct metrics_key); __type(value, struct metrics_value); } metrics SEC(".maps");

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	__u32 zero = 0, ep = 1;
	struct datapath_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct policy_key pk = { .prefixlen = POLICY_PREFIX_FULL, .identity = 7, .egress = DIR_EGRESS,
				 .protocol = 6, .dport = bpf_htons(80) };
	struct metrics_key mk = { .verdict = VERDICT_FORWARDED, .direction = dir };
	struct metrics_value one = { .packets = 1, .bytes = skb->len }, *mv;
	struct policy_value *pv;
	struct flow_event *ev;
	struct ct_key ck = {};
	struct ct_value *cv = bpf_map_lookup_elem(&ct, &ck);
	void *inner;
	int ret = cfg ? (int)cfg->flags : 0;

	inner = bpf_map_lookup_elem(&policy_maps, &ep);
	if (inner) {
		pv = bpf_map_lookup_elem(inner, &pk);
		if (pv && (pv->flags & POLICY_F_DENY)) {
			ret = 2;
			mk.verdict = VERDICT_DROPPED;
			mk.reason = REASON_EXPLICIT_DENY;
		}
	}
	mv = bpf_map_lookup_elem(&metrics, &mk);
	if (mv) {
		mv->packets += 1;
		mv->bytes += skb->len;
	} else {
		bpf_map_update_elem(&metrics, &mk, &one, BPF_NOEXIST);
	}
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (ev) {
		__builtin_memset(ev, 0, sizeof(*ev));
		ev->timestamp_ns = bpf_ktime_get_ns();
		ev->direction = dir;
		ev->verdict = mk.verdict;
		ev->reason = mk.reason;
		ev->length = skb->len;
		ev->cookie = cv ? cv->cookie : 0;
		ev->dport = bpf_htons(80);
		ev->tcp_flags = VARIANT;
		bpf_ringbuf_submit(ev, 0);
	}
	return ret;
}

SEC("tc")
int from_pod(struct __sk_buff *skb) { return handle(skb, DIR_EGRESS); }

SEC("tc")
int to_pod(struct __sk_buff *skb) { return handle(skb, DIR_INGRESS); }

char _license[] SEC("license") = "GPL";
