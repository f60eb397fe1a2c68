/* SPDX-License-Identifier: Apache-2.0 */
/* Datapath settings: one struct datapath_config in an ARRAY map, read once per packet.
 * A zero field means "use the default" so an unwritten (all-zero) entry is a sane config. */
#ifndef MESHCTL_CONFIG_H
#define MESHCTL_CONFIG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

#define CT_DEFAULT_TCP_S 21600
#define CT_DEFAULT_NON_TCP_S 60
#define CT_DEFAULT_SYN_S 60
#define CT_DEFAULT_CLOSE_S 10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct datapath_config);
} config SEC(".maps");

/* A private copy with every default filled in. */
static __always_inline void config_read(struct datapath_config *out)
{
	__u32 zero = 0;
	struct datapath_config *cfg = bpf_map_lookup_elem(&config, &zero);

	__builtin_memset(out, 0, sizeof(*out));
	if (cfg)
		*out = *cfg;
	if (!out->ct_timeout_tcp_s)
		out->ct_timeout_tcp_s = CT_DEFAULT_TCP_S;
	if (!out->ct_timeout_non_tcp_s)
		out->ct_timeout_non_tcp_s = CT_DEFAULT_NON_TCP_S;
	if (!out->ct_timeout_syn_s)
		out->ct_timeout_syn_s = CT_DEFAULT_SYN_S;
	if (!out->ct_timeout_close_s)
		out->ct_timeout_close_s = CT_DEFAULT_CLOSE_S;
}

#endif /* MESHCTL_CONFIG_H */
