/* SPDX-License-Identifier: Apache-2.0 */
/* ipcache: the security identity of any IPv4 address, by longest prefix. Miss = world. */
#ifndef MESHCTL_IPCACHE_H
#define MESHCTL_IPCACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
} ipcache SEC(".maps");

static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct ipcache_value *val = bpf_map_lookup_elem(&ipcache, &key);

	return val ? val->identity : IDENTITY_WORLD;
}

#endif /* MESHCTL_IPCACHE_H */
