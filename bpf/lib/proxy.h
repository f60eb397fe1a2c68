/* SPDX-License-Identifier: Apache-2.0 */
/* L7 redirect: hand a TCP connection to the node's proxy (Envoy), as Cilium's
 * ctx_redirect_to_proxy does on kernels with bpf_sk_assign, at tc ingress:
 *
 *  - a new connection whose policy entry carries a proxy port: its SYN is assigned to the
 *    proxy's listener (127.0.0.1:port, a transparent socket), so the accepted socket's local
 *    address is the original destination;
 *  - every later packet of a connection the proxy holds: the client's packets (the accepted
 *    socket) and a backend's replies (the proxy's upstream socket, bound transparently to the
 *    original client address) are assigned to that socket.
 *
 * MARK_TO_PROXY makes the node's policy routing rule deliver the packet locally (the address it
 * carries is not the node's). bpf_sk_assign was chosen over iptables TPROXY: no netfilter rule
 * to keep in step, the decision stays in the one place that knows the policy, and a missing
 * listener is seen here, where it becomes a drop with a reason. */
#ifndef MESHCTL_PROXY_H
#define MESHCTL_PROXY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"
#include "parse.h"

#define PROXY_LISTEN_ADDR 0x7f000001 /* 127.0.0.1 */

/* Hand the packet to `sk` (looked up by the caller, released here); 0 when assigned. */
static __always_inline int proxy_take(struct __sk_buff *skb, struct bpf_sock *sk)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (err)
		return -1;
	skb->mark = MARK_TO_PROXY;
	return 0;
}

static __always_inline int proxy_assign(struct __sk_buff *skb, struct bpf_sock_tuple *t, int listener)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, sizeof(t->ipv4), BPF_F_CURRENT_NETNS, 0);

	if (!sk)
		return -1;
	if ((sk->state == BPF_TCP_LISTEN) != listener) {
		bpf_sk_release(sk);
		return -1;
	}
	return proxy_take(skb, sk);
}

/* A packet of a connection the proxy (or any socket of the node) already holds: assigned,
 * returns 1; else 0. Only TCP. */
static __always_inline int proxy_established(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};

	if (p->protocol != IPPROTO_TCP)
		return 0;
	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = p->daddr;
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	return proxy_assign(skb, &t, 0) == 0;
}

/* The first packet of a connection to an L7 port: assigned to the proxy's listener, returns 0;
 * -1 when the proxy does not listen (the caller drops: fail closed). */
static __always_inline int proxy_redirect(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct bpf_sock_tuple t = {};

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = bpf_htonl(PROXY_LISTEN_ADDR);
	t.ipv4.sport = p->sport;
	t.ipv4.dport = bpf_htons(port);
	return proxy_assign(skb, &t, 1);
}

/* A datagram to a port the proxy judges (DNS): assigned to the proxy's unconnected UDP socket
 * at 127.0.0.1:port (transparent; IP_RECVORIGDSTADDR gives it the original destination);
 * -1 when the proxy does not listen. Every datagram of the flow comes here (CT_F_PROXY). */
static __always_inline int proxy_redirect_udp(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = bpf_htonl(PROXY_LISTEN_ADDR);
	t.ipv4.sport = p->sport;
	t.ipv4.dport = bpf_htons(port);
	sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	return sk ? proxy_take(skb, sk) : -1;
}

static __always_inline int tcp_syn(const struct pkt *p)
{
	return p->protocol == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

static __always_inline int from_proxy(const struct __sk_buff *skb)
{
	return (skb->mark & MARK_PROXY_MASK) == MARK_FROM_PROXY;
}

#endif /* MESHCTL_PROXY_H */
