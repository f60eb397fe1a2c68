/* SPDX-License-Identifier: Apache-2.0 */
/* Observability: flow events on the `events` ringbuf (new-connection verdicts and drops) and
 * per-CPU counters by (verdict, reason, direction) for every packet that reaches a verdict. */
#ifndef MESHCTL_FLOW_H
#define MESHCTL_FLOW_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RINGBUF_SIZE);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, METRICS_MAP_SIZE);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
} metrics SEC(".maps");

/* Everything a verdict says about a packet, filled by the glue before reporting. */
struct verdict_info {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 endpoint_id;
	__u32 cookie;
	__u8 direction;
	__u8 verdict;
	__u8 reason;
};

static __always_inline void metrics_count(const struct verdict_info *vi, __u32 len)
{
	struct metrics_key key = {
		.verdict = vi->verdict,
		.reason = vi->reason,
		.direction = vi->direction,
	};
	struct metrics_value *val = bpf_map_lookup_elem(&metrics, &key);

	if (val) {
		val->packets += 1;   /* per-CPU value: no other writer */
		val->bytes += len;
		return;
	}
	struct metrics_value init = { .packets = 1, .bytes = len };

	bpf_map_update_elem(&metrics, &key, &init, BPF_NOEXIST);
}

static __always_inline void flow_emit(const struct verdict_info *vi, const struct pkt *p, __u64 now)
{
	struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev)
		return;   /* ringbuf full: the counters still see the packet */
	ev->timestamp_ns = now;
	ev->saddr = p->saddr;
	ev->daddr = p->daddr;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->protocol = p->protocol;
	ev->direction = vi->direction;
	ev->verdict = vi->verdict;
	ev->reason = vi->reason;
	ev->src_identity = vi->src_identity;
	ev->dst_identity = vi->dst_identity;
	ev->endpoint_id = vi->endpoint_id;
	ev->cookie = vi->cookie;
	ev->tcp_flags = p->tcp_flags;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	ev->pad[2] = 0;
	ev->length = p->len;
	bpf_ringbuf_submit(ev, 0);
}

#endif /* MESHCTL_FLOW_H */
