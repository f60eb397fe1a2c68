// SPDX-License-Identifier: GPL-2.0
/* A program that is not meshctl's: passes every packet. Attached next to meshctl's programs to
 * check that plan, drift and status report it (it would end a tcx chain before meshctl's). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int pass_all(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
