/* SPDX-License-Identifier: Apache-2.0 */
/* Packet parsing: Ethernet, IPv4 and the first bytes of TCP/UDP/ICMP, every access bounds-checked.
 *
 * The result is one flat struct pkt so policy and conntrack never touch packet memory.
 * Ports are kept twice: the conntrack ports (ICMP echo: the echo id on both sides) and the
 * policy port (ICMP: the type in dport, as Cilium does with enable_icmp_rule). */
#ifndef MESHCTL_PARSE_H
#define MESHCTL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define IP_FRAG_OFFSET_MASK 0x1fff

/* linux/icmp.h drags in libc socket headers that do not build for -target bpf. */
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

enum parse_result {
	PARSE_IPV4 = 0,
	PARSE_IPV6 = 1,
	PARSE_OTHER = 2,             /* ARP and every other non-IP ethertype */
	PARSE_MALFORMED = 3,
};

struct pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;                /* conntrack ports */
	__be16 dport;
	__be16 policy_dport;         /* port used for the policy lookup */
	__u8 protocol;
	__u8 tcp_flags;
	__u32 len;
};

/* The 13th byte of the TCP header holds CWR..FIN; struct tcphdr exposes them as bitfields. */
static __always_inline __u8 tcp_flags_byte(const struct tcphdr *tcp)
{
	return ((const __u8 *)tcp)[13];
}

static __always_inline int parse_l4(struct pkt *p, void *l4, void *data_end)
{
	switch (p->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->policy_dport = tcp->dest;
		p->tcp_flags = tcp_flags_byte(tcp);
		return PARSE_IPV4;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->policy_dport = udp->dest;
		return PARSE_IPV4;
	}
	case IPPROTO_SCTP: {
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			return PARSE_MALFORMED;
		p->sport = ports[0];
		p->dport = ports[1];
		p->policy_dport = ports[1];
		return PARSE_IPV4;
	}
	case IPPROTO_ICMP: {
		struct icmp_echo_hdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end)
			return PARSE_MALFORMED;
		if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY) {
			p->sport = icmp->id;
			p->dport = icmp->id;
		}
		p->policy_dport = bpf_htons((__u16)icmp->type);
		return PARSE_IPV4;
	}
	default:
		return PARSE_IPV4;   /* other protocols: no ports */
	}
}

/* Fill *p from the frame; returns enum parse_result. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	p->len = skb->len;
	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return PARSE_IPV6;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_OTHER;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	ihl = ip->ihl;
	if (ip->version != 4 || ihl < 5)
		return PARSE_MALFORMED;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->protocol = ip->protocol;
	/* Non-first fragments carry no L4 header: ports stay 0, so only all-port entries match. */
	if (ip->frag_off & bpf_htons(IP_FRAG_OFFSET_MASK))
		return PARSE_IPV4;
	return parse_l4(p, (void *)ip + ihl * 4, data_end);
}

#endif /* MESHCTL_PARSE_H */
