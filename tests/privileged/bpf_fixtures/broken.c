// SPDX-License-Identifier: GPL-2.0
/* Rejected by the verifier (reads past the packet without a bounds check): the load error
 * must carry the verifier log. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int bad(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	return data[20];
}

char _license[] SEC("license") = "GPL";
