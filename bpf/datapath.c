// SPDX-License-Identifier: GPL-2.0
/* meshctl datapath: tc programs on the node side of each pod's veth.
 *
 *   from_pod  tc ingress: packets the pod sends; E = endpoint(saddr), EGRESS policy,
 *             peer = ipcache(daddr).
 *   to_pod    tc egress: packets to the pod; E = endpoint(daddr), INGRESS policy,
 *             peer = ipcache(saddr).
 *
 * Order: parse -> policy revision -> (service translation, the proxy's sockets) -> endpoint ->
 * conntrack -> enforcement -> policy -> audit (staged policies, endpoints that have them) ->
 * verdict (or the L7 proxy: lib/proxy.h).
 * Conntrack: a reply passes; a forward packet passes when its connection was judged at the
 * current policy revision, else it is judged again like a new one (and dropped, with a flow
 * event naming the policy, when the policy no longer allows it).
 * This file only glues the headers of lib/ together. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/config.h"
#include "lib/endpoint.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/flow.h"
#include "lib/lb.h"
#include "lib/proxy.h"

/* Put into the object's BTF the structs no top-level map definition carries: flow_event (the
 * ringbuf record) and the inner policy map's key and value (see policy.h). */
struct flow_event *unused_flow_event __attribute__((unused));
struct policy_key unused_policy_key __attribute__((unused));
struct policy_value unused_policy_value __attribute__((unused));
struct lb_slot_key unused_lb_slot_key __attribute__((unused));

static __always_inline int verdict_pass(struct verdict_info *vi, const struct pkt *p, __u64 now, int emit)
{
	vi->verdict = VERDICT_FORWARDED;
	metrics_count(vi, p->len);
	if (emit)
		flow_emit(vi, p, now);
	return TC_ACT_OK;
}

static __always_inline int verdict_drop(struct verdict_info *vi, const struct pkt *p, __u64 now, __u8 reason)
{
	vi->verdict = VERDICT_DROPPED;
	vi->reason = reason;
	metrics_count(vi, p->len);
	flow_emit(vi, p, now);
	return TC_ACT_SHOT;
}

/* Staged policies: judge the new connection again with them (the endpoint's enforced+staged map)
 * and report an AUDIT flow, carrying the staged verdict's reason and rule, when it differs from
 * the enforced one. Forwarding never depends on it. */
static __always_inline void audit(const struct verdict_info *enforced, const struct pkt *p, __u64 now,
				  __u32 peer, __u8 dir, int allowed)
{
	struct verdict_info vi = *enforced;
	__u32 cookie = 0;
	__u16 proxy_port;
	int staged = policy_lookup(enforced->endpoint_id | AUDIT_MAP_BIT, peer, dir, p->protocol,
				   p->policy_dport, &cookie, &proxy_port);

	if ((staged == POLICY_ALLOW) == allowed)
		return;
	vi.verdict = VERDICT_AUDIT;
	vi.cookie = cookie;
	vi.reason = staged == POLICY_ALLOW ? REASON_ALLOWED :
		    staged == POLICY_DENY ? REASON_EXPLICIT_DENY : REASON_DEFAULT_DENY;
	metrics_count(&vi, p->len);
	flow_emit(&vi, p, now);
}

/* Let a judged packet through: a new connection is tracked and reported, a tracked one refreshed
 * with the revision it was judged at. */
static __always_inline int admit(struct verdict_info *vi, const struct pkt *p, __u8 dir,
				 const struct datapath_config *cfg, __u64 now, struct ct_value *fwd, __u32 rev)
{
	if (fwd) {
		ct_pass_fwd(fwd, p, cfg, now, rev, vi->cookie);
		return verdict_pass(vi, p, now, 0);
	}
	ct_create(p, dir, cfg, now, rev, vi->cookie, 0);
	return verdict_pass(vi, p, now, 1);
}

/* A UDP datagram to a port the proxy judges (DNS): to the proxy's socket, every one of them
 * (the flow's entry carries CT_F_PROXY, so it is judged again rather than passed as
 * established); the proxy answers from the original destination, a reply of the entry. */
static __always_inline int to_proxy_udp(struct __sk_buff *skb, struct verdict_info *vi, const struct pkt *p,
					__u8 dir, const struct datapath_config *cfg, __u64 now, struct ct_value *fwd,
					__u32 rev, __u16 port)
{
	if (proxy_redirect_udp(skb, p, port))
		return verdict_drop(vi, p, now, REASON_PROXY_DOWN);
	vi->reason = REASON_PROXY_REDIRECT;
	if (fwd) {
		ct_pass_fwd(fwd, p, cfg, now, rev, vi->cookie);
		return verdict_pass(vi, p, now, 0);
	}
	ct_create(p, dir, cfg, now, rev, vi->cookie, CT_F_PROXY);
	return verdict_pass(vi, p, now, 1);
}

/* The ingress policy of a pod of this node sends this new connection's port to the proxy: the
 * redirect must happen here, at tc ingress (to_pod runs after routing, too late to redirect). */
static __always_inline struct endpoint_value *local_l7_port(const struct pkt *p, __u32 src_identity, __u16 *port)
{
	struct endpoint_value *dst = endpoint_lookup(p->daddr);
	__u32 cookie;

	if (!dst || !endpoint_enforces(dst, DIR_INGRESS))
		return 0;
	if (policy_lookup(dst->endpoint_id, src_identity, DIR_INGRESS, p->protocol, p->policy_dport,
			  &cookie, port) != POLICY_ALLOW || !*port)
		return 0;
	return dst;
}

/* An allowed new connection to an L7 port: its SYN goes to the proxy, or is dropped when the
 * proxy does not listen (fail closed). Any other packet is dropped: a connection opened before
 * the L7 rule must not go on unchecked. */
static __always_inline int to_proxy(struct __sk_buff *skb, struct verdict_info *vi, const struct pkt *p, __u8 dir,
				    const struct datapath_config *cfg, __u64 now, struct ct_value *fwd, __u32 rev,
				    __u16 port)
{
	if (p->protocol == IPPROTO_UDP)
		return to_proxy_udp(skb, vi, p, dir, cfg, now, fwd, rev, port);
	if (!tcp_syn(p))
		return verdict_drop(vi, p, now, REASON_PROXY_REQUIRED);
	if (proxy_redirect(skb, p, port))
		return verdict_drop(vi, p, now, REASON_PROXY_DOWN);
	vi->reason = REASON_PROXY_REDIRECT;
	return admit(vi, p, dir, cfg, now, fwd, rev);
}

/* Admit a new connection leaving a pod, unless the ingress of its destination on this node is L7. */
static __always_inline int admit_egress(struct __sk_buff *skb, struct verdict_info *vi, const struct pkt *p,
					const struct datapath_config *cfg, __u64 now, struct ct_value *fwd, __u32 rev)
{
	__u16 port = 0;

	if ((cfg->flags & CONFIG_F_PROXY) && p->protocol == IPPROTO_TCP && local_l7_port(p, vi->src_identity, &port))
		return to_proxy(skb, vi, p, DIR_EGRESS, cfg, now, fwd, rev, port);
	return admit(vi, p, DIR_EGRESS, cfg, now, fwd, rev);
}

/* Admit an allowed connection whose entry may name the proxy: egress goes to the proxy; an
 * ingress L7 port takes only the proxy's upstream connections. */
static __always_inline int admit_allowed(struct __sk_buff *skb, struct verdict_info *vi, const struct pkt *p,
					 __u8 dir, const struct datapath_config *cfg, __u64 now, struct ct_value *fwd,
					 __u32 rev, __u16 proxy_port)
{
	if (dir == DIR_EGRESS)
		return proxy_port ? to_proxy(skb, vi, p, dir, cfg, now, fwd, rev, proxy_port) :
				    admit_egress(skb, vi, p, cfg, now, fwd, rev);
	if (proxy_port && !from_proxy(skb))
		return verdict_drop(vi, p, now, REASON_PROXY_REQUIRED);
	return admit(vi, p, dir, cfg, now, fwd, rev);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct datapath_config cfg;
	struct verdict_info vi = { .direction = dir };
	struct pkt p = {};
	struct endpoint_value *ep;
	struct ct_value *fwd = 0;
	__u64 now = bpf_ktime_get_ns();
	__u32 peer, rev, cookie = 0;
	__u16 proxy_port = 0;
	int res;

	res = parse_packet(skb, &p);
	if (res == PARSE_OTHER)
		return TC_ACT_OK;
	config_read(&cfg);
	if (res == PARSE_IPV6) {
		if (cfg.flags & CONFIG_F_IPV6_PASS) {
			vi.reason = REASON_NOT_ENFORCED;
			return verdict_pass(&vi, &p, now, 0);
		}
		return verdict_drop(&vi, &p, now, REASON_IPV6);
	}
	if (res == PARSE_MALFORMED)
		return verdict_drop(&vi, &p, now, REASON_MALFORMED);
	rev = policy_revision();   /* before every lookup a verdict depends on */

	/* Services: translate to the backend before policy, so policy sees the backend's identity. */
	if (dir == DIR_EGRESS) {
		res = lb_xlate_pod(skb, &p, now);
		if (res == LB_NO_BACKEND || res == LB_ERROR) {
			vi.src_identity = ipcache_identity(p.saddr);
			vi.dst_identity = ipcache_identity(p.daddr);
			return verdict_drop(&vi, &p, now, res == LB_ERROR ? REASON_MALFORMED : REASON_NO_SERVICE_BACKEND);
		}
		/* Judged when it began: a packet of a connection the proxy holds goes to its socket. */
		if ((cfg.flags & CONFIG_F_PROXY) && proxy_established(skb, &p))
			return TC_ACT_OK;
	}

	ep = endpoint_lookup(dir == DIR_EGRESS ? p.saddr : p.daddr);
	peer = ipcache_identity(dir == DIR_EGRESS ? p.daddr : p.saddr);
	if (!ep) {
		__u32 local = ipcache_identity(dir == DIR_EGRESS ? p.saddr : p.daddr);

		vi.src_identity = dir == DIR_EGRESS ? local : peer;
		vi.dst_identity = dir == DIR_EGRESS ? peer : local;
		return verdict_drop(&vi, &p, now, REASON_NO_ENDPOINT);
	}
	vi.endpoint_id = ep->endpoint_id;
	vi.src_identity = dir == DIR_EGRESS ? ep->identity : peer;
	vi.dst_identity = dir == DIR_EGRESS ? peer : ep->identity;

	switch (ct_lookup(&p, dir, &cfg, now, &fwd, &cookie)) {
	case CT_REPLY:
		vi.cookie = cookie;
		vi.reason = cookie ? REASON_ALLOWED : REASON_NOT_ENFORCED;
		return verdict_pass(&vi, &p, now, 0);
	case CT_ESTABLISHED:
		if (fwd->policy_rev == rev && !(fwd->flags & CT_F_PROXY)) {
			ct_touch(fwd, &p, &cfg, now, 0);
			vi.cookie = fwd->cookie;
			vi.reason = vi.cookie ? REASON_ALLOWED : REASON_NOT_ENFORCED;
			return verdict_pass(&vi, &p, now, 0);
		}
		break;   /* the policy changed since this connection was judged: judge it again */
	}

	if (!endpoint_enforces(ep, dir)) {
		vi.reason = REASON_NOT_ENFORCED;
		if (endpoint_audits(ep, dir))
			audit(&vi, &p, now, peer, dir, 1);
		if (dir == DIR_EGRESS)
			return admit_egress(skb, &vi, &p, &cfg, now, fwd, rev);
		return admit(&vi, &p, dir, &cfg, now, fwd, rev);
	}

	res = policy_lookup(ep->endpoint_id, peer, dir, p.protocol, p.policy_dport, &cookie, &proxy_port);
	if (endpoint_audits(ep, dir))
		audit(&vi, &p, now, peer, dir, res == POLICY_ALLOW);
	switch (res) {
	case POLICY_ALLOW:
		vi.cookie = cookie;
		vi.reason = REASON_ALLOWED;
		return admit_allowed(skb, &vi, &p, dir, &cfg, now, fwd, rev, proxy_port);
	case POLICY_DENY:
		vi.cookie = cookie;
		return verdict_drop(&vi, &p, now, REASON_EXPLICIT_DENY);
	default:
		return verdict_drop(&vi, &p, now, REASON_DEFAULT_DENY);
	}
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	int ret = handle(skb, DIR_INGRESS);

	/* A reply of a service flow this node translated: the frontend becomes its source again. */
	if (ret == TC_ACT_OK && parse_packet(skb, &p) == PARSE_IPV4 && lb_rev_xlate(skb, &p, 0) == LB_ERROR)
		return TC_ACT_SHOT;
	return ret;
}

/* A packet from another node: the proxy's connections, and new connections to an L7 port of a
 * pod here (the redirect must happen at tc ingress). */
static __always_inline int netdev_proxy(struct __sk_buff *skb, const struct pkt *p)
{
	struct verdict_info vi = { .direction = DIR_INGRESS, .verdict = VERDICT_DROPPED };
	struct endpoint_value *dst;
	__u64 now = bpf_ktime_get_ns();
	__u16 port = 0;

	if (proxy_established(skb, p) || !tcp_syn(p))
		return TC_ACT_OK;   /* not new: to_pod judges it (an L7 port admits only the proxy) */
	vi.src_identity = ipcache_identity(p->saddr);
	dst = local_l7_port(p, vi.src_identity, &port);
	if (!dst)
		return TC_ACT_OK;
	vi.endpoint_id = dst->endpoint_id;
	vi.dst_identity = dst->identity;
	if (proxy_redirect(skb, p, port))
		return verdict_drop(&vi, p, now, REASON_PROXY_DOWN);
	vi.reason = REASON_PROXY_REDIRECT;
	return verdict_pass(&vi, p, now, 1);
}

/* from_netdev  tc ingress of the node's underlay interface: north-south service translation,
 *              DSR arrivals, SNAT replies, the L7 redirect. No policy here: pods enforce theirs. */
SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	struct datapath_config cfg;
	struct pkt p = {};

	if (parse_packet(skb, &p) != PARSE_IPV4)
		return TC_ACT_OK;
	switch (lb_netdev_ingress(skb, &p, bpf_ktime_get_ns())) {
	case LB_REDIRECT:
		return TC_ACT_REDIRECT;
	case LB_NO_BACKEND:
	case LB_ERROR:
		return TC_ACT_SHOT;
	default:
		if (p.protocol != IPPROTO_TCP)
			return TC_ACT_OK;
		config_read(&cfg);
		return (cfg.flags & CONFIG_F_PROXY) ? netdev_proxy(skb, &p) : TC_ACT_OK;
	}
}

/* to_netdev  tc egress of the underlay interface: replies of local backends (DNAT and DSR flows)
 *            leave with the frontend as their source. */
SEC("tc")
int to_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (parse_packet(skb, &p) != PARSE_IPV4)
		return TC_ACT_OK;
	return lb_rev_xlate(skb, &p, 1) == LB_ERROR ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
