/* SPDX-License-Identifier: Apache-2.0 */
/* Local endpoints: which pod owns an address, its identity and whether it enforces policy. */
#ifndef MESHCTL_ENDPOINT_H
#define MESHCTL_ENDPOINT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
} endpoints SEC(".maps");

static __always_inline struct endpoint_value *endpoint_lookup(__be32 addr)
{
	struct endpoint_key key = { .addr = addr };

	return bpf_map_lookup_elem(&endpoints, &key);
}

static __always_inline int endpoint_enforces(const struct endpoint_value *ep, __u8 dir)
{
	__u32 bit = dir == DIR_EGRESS ? ENDPOINT_F_ENFORCE_EGRESS : ENDPOINT_F_ENFORCE_INGRESS;

	return (ep->flags & bit) != 0;
}

static __always_inline int endpoint_audits(const struct endpoint_value *ep, __u8 dir)
{
	__u32 bit = dir == DIR_EGRESS ? ENDPOINT_F_AUDIT_EGRESS : ENDPOINT_F_AUDIT_INGRESS;

	return (ep->flags & bit) != 0;
}

#endif /* MESHCTL_ENDPOINT_H */
