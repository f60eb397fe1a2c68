// SPDX-License-Identifier: GPL-2.0
/* bpf/datapath.c with its pod programs replaced by ones that drop every packet (TC_ACT_SHOT)
 * and record nothing: a broken build for the apply tests. The maps (names, types, layouts) are
 * the real datapath's, so the apply can load it over a node's pinned maps. */
#define from_pod real_from_pod
#define to_pod real_to_pod
#include "../../../bpf/datapath.c"
#undef from_pod
#undef to_pod

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}
