// SPDX-License-Identifier: GPL-2.0
/*
 * IPVS:        knbd load scheduling module
 *
 * Client allocation over a knbd group address: a new connection to the
 * virtual service goes to the member (real server) with the smallest
 * knbd load, in weighted operations per second per unit of IPVS weight,
 * as the knbd nodes of this kernel know it (knbd_group_load(), exported
 * by knbd.ko).  Setup and limits: Documentation/client-allocation.md.
 *
 * Modelled on ip_vs_lc.c, ip_vs_wlc.c (weights) and ip_vs_rr.c (position).
 *
 * Choice, among destinations without IP_VS_DEST_F_OVERLOAD and with
 * weight > 0:
 *  - If knbd knows the load of at least one of them, only those with a
 *    known load compete: a member knbd knows nothing about (-ENOENT) or
 *    has not heard from lately (-ESTALE) is unknown, and unknown must
 *    never look idle.  Lowest estimated load / weight wins, then fewer
 *    active connections per weight, then the round robin position.
 *  - If no load is known, weighted least-connection (as ip_vs_wlc, the
 *    same as ip_vs_lc with equal weights), ties by round robin position.
 */

#define KMSG_COMPONENT "IPVS"
#define pr_fmt(fmt) KMSG_COMPONENT ": " fmt

#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/rculist.h>
#include <linux/slab.h>

#include <net/ip_vs.h>

#include <knbd/knbd_group.h>

/* One weighted operation per second: knbd loads are in thousandths. */
#define IP_VS_KNBD_UNIT		1000U

/* Scheduler state of one virtual service, in svc->sched_data. */
struct ip_vs_knbd_data {
	/* the last destination chosen (n_list), or the list head */
	struct list_head *last;
	/* the last choice knew no load (only to log changes) */
	bool fallback;
	struct rcu_head rcu_head;
};

/* One destination as the scheduler sees it. */
struct ip_vs_knbd_cand {
	struct ip_vs_dest *dest;
	u64 score;		/* estimated knbd load * 1000 / weight */
	int overhead;		/* ip_vs_dest_conn_overhead(), for fallback */
	int active;
	int weight;
	unsigned int rank;	/* 0 = next in round robin order */
};

static bool ip_vs_knbd_usable(struct ip_vs_dest *dest)
{
	return !(dest->flags & IP_VS_DEST_F_OVERLOAD) &&
	       atomic_read(&dest->weight) > 0;
}

static int ip_vs_knbd_load(struct ip_vs_dest *dest, u64 *load, u32 *conns)
{
	return knbd_group_load(dest->af, &dest->addr, load, conns);
}

/*
 * The estimated load of a destination per unit of weight.
 *
 * knbd measures load once per tick (200 ms by default) and smooths it
 * over several ticks, so a connection IPVS has just sent to a member
 * weighs nothing in that member's figure yet: without damping, a burst
 * of new clients within one tick would all go to the same member, the
 * one that looked least loaded when the burst began.  Damping: every
 * active IPVS connection to the member beyond the connections knbd
 * counted there (@conns) is taken as "pending" and charged the average
 * load per connection of the known members (@per_conn, at least one
 * unit), i.e. a new client is expected to bring what an average client
 * brings now.  Once knbd has counted them the charge disappears and the
 * measured figure takes over.  The estimate errs on the low side when a
 * member also has clients that do not come through this service (knbd
 * counts them, IPVS does not); the tie-breaks (fewer active connections,
 * round robin) still spread a burst over members of equal load.
 *
 * The result is rounded down to whole units before dividing by the
 * weight: an idle member's smoothed figure ends a few thousandths above
 * zero, and that residue must not decide between otherwise equal members.
 * Saturates instead of overflowing.
 */
static u64 ip_vs_knbd_score(u64 load, u32 conns, int active, u64 per_conn,
			    int weight)
{
	u64 pending = 0, est, extra;

	if (active > 0 && (u32)active > conns)
		pending = (u32)active - conns;
	if (check_mul_overflow(pending, per_conn, &extra) ||
	    check_add_overflow(load, extra, &est))
		est = U64_MAX;
	est = div_u64(est, IP_VS_KNBD_UNIT) * IP_VS_KNBD_UNIT;
	return div_u64(est, weight);
}

/* Fewer active connections per weight, then the round robin order. */
static bool ip_vs_knbd_conns_first(const struct ip_vs_knbd_cand *a,
				   const struct ip_vs_knbd_cand *b)
{
	s64 x = (s64)a->active * b->weight, y = (s64)b->active * a->weight;

	if (x != y)
		return x < y;
	return a->rank < b->rank;
}

static bool ip_vs_knbd_load_first(const struct ip_vs_knbd_cand *a,
				  const struct ip_vs_knbd_cand *b)
{
	if (a->score != b->score)
		return a->score < b->score;
	return ip_vs_knbd_conns_first(a, b);
}

/* Weighted least-connection, as ip_vs_wlc, then the round robin order. */
static bool ip_vs_knbd_lc_first(const struct ip_vs_knbd_cand *a,
				const struct ip_vs_knbd_cand *b)
{
	s64 x = (s64)a->overhead * b->weight, y = (s64)b->overhead * a->weight;

	if (x != y)
		return x < y;
	return a->rank < b->rank;
}

static void ip_vs_knbd_log_mode(struct ip_vs_service *svc, bool fallback)
{
	const char *what = fallback ?
		"no destination has a known knbd load, least-connection until one has" :
		"knbd loads known again";

	if (svc->fwmark) {
		pr_info_ratelimited("knbd: FWM %u: %s\n", svc->fwmark, what);
#ifdef CONFIG_IP_VS_IPV6
	} else if (svc->af == AF_INET6) {
		pr_info_ratelimited("knbd: %s [%pI6c]:%u: %s\n",
				    ip_vs_proto_name(svc->protocol),
				    &svc->addr.in6, ntohs(svc->port), what);
#endif
	} else {
		pr_info_ratelimited("knbd: %s %pI4:%u: %s\n",
				    ip_vs_proto_name(svc->protocol),
				    &svc->addr.ip, ntohs(svc->port), what);
	}
}

static int ip_vs_knbd_init_svc(struct ip_vs_service *svc)
{
	struct ip_vs_knbd_data *data;

	data = kzalloc(sizeof(*data), GFP_KERNEL);
	if (!data)
		return -ENOMEM;
	data->last = &svc->destinations;
	svc->sched_data = data;
	return 0;
}

static void ip_vs_knbd_done_svc(struct ip_vs_service *svc)
{
	struct ip_vs_knbd_data *data = svc->sched_data;

	/* schedule() may still be reading it under RCU */
	kfree_rcu(data, rcu_head);
}

static int ip_vs_knbd_del_dest(struct ip_vs_service *svc,
			       struct ip_vs_dest *dest)
{
	struct ip_vs_knbd_data *data = svc->sched_data;

	spin_lock_bh(&svc->sched_lock);
	/*
	 * dest is already unlinked: its prev is not valid but its next is;
	 * use it to reach the previous entry (as ip_vs_rr).
	 */
	if (data->last == &dest->n_list)
		data->last = dest->n_list.next->prev;
	spin_unlock_bh(&svc->sched_lock);
	return 0;
}

static struct ip_vs_dest *
ip_vs_knbd_schedule(struct ip_vs_service *svc, const struct sk_buff *skb,
		    struct ip_vs_iphdr *iph)
{
	struct ip_vs_knbd_data *data = svc->sched_data;
	struct ip_vs_knbd_cand best = {}, lc = {}, c;
	struct ip_vs_dest *dest;
	unsigned int n = 0, pos = 0, idx = 0;
	u64 load, sum_load = 0, per_conn;
	u32 conns, sum_conns = 0;
	bool fallback, changed = false;

	IP_VS_DBG(6, "%s(): Scheduling...\n", __func__);

	spin_lock_bh(&svc->sched_lock);

	/*
	 * First pass: the position of the last choice and the average load
	 * per connection of the known members.
	 */
	list_for_each_entry_rcu(dest, &svc->destinations, n_list) {
		n++;
		if (&dest->n_list == data->last)
			pos = n;
		if (!ip_vs_knbd_usable(dest) ||
		    ip_vs_knbd_load(dest, &load, &conns))
			continue;
		if (check_add_overflow(sum_load, load, &sum_load))
			sum_load = U64_MAX;
		if (check_add_overflow(sum_conns, conns, &sum_conns))
			sum_conns = U32_MAX;
	}
	per_conn = sum_conns ? div_u64(sum_load, sum_conns) : 0;
	per_conn = max_t(u64, per_conn, IP_VS_KNBD_UNIT);

	/*
	 * Second pass: the best known member and, in case no load is known
	 * (any more), the weighted least-connection choice.  A figure may
	 * change between the passes; that only shifts the estimate a bit.
	 */
	list_for_each_entry_rcu(dest, &svc->destinations, n_list) {
		idx++;
		if (!ip_vs_knbd_usable(dest))
			continue;
		c.dest = dest;
		c.weight = atomic_read(&dest->weight);
		c.active = atomic_read(&dest->activeconns);
		c.overhead = ip_vs_dest_conn_overhead(dest);
		/* the one after the last choice first; no division */
		c.rank = idx > pos ? idx - pos - 1 : n - pos + idx - 1;
		c.score = 0;
		if (!lc.dest || ip_vs_knbd_lc_first(&c, &lc))
			lc = c;
		if (ip_vs_knbd_load(dest, &load, &conns))
			continue;
		c.score = ip_vs_knbd_score(load, conns, c.active, per_conn,
					   c.weight);
		if (!best.dest || ip_vs_knbd_load_first(&c, &best))
			best = c;
	}

	fallback = !best.dest;
	if (fallback)
		best = lc;
	if (best.dest) {
		data->last = &best.dest->n_list;
		if (data->fallback != fallback) {
			data->fallback = fallback;
			changed = true;
		}
	}
	spin_unlock_bh(&svc->sched_lock);

	if (!best.dest) {
		ip_vs_scheduler_err(svc, "no destination available");
		return NULL;
	}
	if (changed)
		ip_vs_knbd_log_mode(svc, fallback);

	IP_VS_DBG_BUF(6, "KNBD: server %s:%u activeconns %d weight %d %s %llu\n",
		      IP_VS_DBG_ADDR(best.dest->af, &best.dest->addr),
		      ntohs(best.dest->port), best.active, best.weight,
		      fallback ? "overhead" : "score",
		      fallback ? (u64)best.overhead : best.score);

	return best.dest;
}

static struct ip_vs_scheduler ip_vs_knbd_scheduler = {
	.name =			"knbd",
	.refcnt =		ATOMIC_INIT(0),
	.module =		THIS_MODULE,
	.n_list =		LIST_HEAD_INIT(ip_vs_knbd_scheduler.n_list),
	.init_service =		ip_vs_knbd_init_svc,
	.done_service =		ip_vs_knbd_done_svc,
	.del_dest =		ip_vs_knbd_del_dest,
	.schedule =		ip_vs_knbd_schedule,
};

static int __init ip_vs_knbd_init(void)
{
	return register_ip_vs_scheduler(&ip_vs_knbd_scheduler);
}

static void __exit ip_vs_knbd_cleanup(void)
{
	unregister_ip_vs_scheduler(&ip_vs_knbd_scheduler);
	synchronize_rcu();
}

module_init(ip_vs_knbd_init);
module_exit(ip_vs_knbd_cleanup);
MODULE_DESCRIPTION("IPVS scheduler: least knbd load (knbd group client allocation)");
MODULE_LICENSE("GPL");
MODULE_VERSION(KNBD_VERSION);
