// SPDX-License-Identifier: GPL-2.0
/*
 * Load monitor: one kthread per enabled node samples, every tick, the
 * operations, bytes and service time of each connection, turns them into
 * one load figure per connection, per volume and per node (load.c), sends
 * the node's figure to every peer, and runs the connection manager
 * (connmgr.c) on the group's figures.  Peers' figures land in their
 * knbd_peer with the time they arrived, so every member knows the group's
 * load and how fresh each figure is; knbd_group_load() offers the table to
 * the ip_vs_knbd scheduler.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/in.h>
#include <linux/in6.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/rculist.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <net/ipv6.h>

#include <knbd/knbd_group.h>

#include "knbd.h"

/* Enabled nodes of this kernel, for knbd_group_load(). */
static LIST_HEAD(knbd_group_nodes);
static DEFINE_SPINLOCK(knbd_group_lock);

/* Scratch of one monitor thread, allocated once: no allocation per tick. */
struct knbd_monitor {
	struct knbd_node *node;
	struct knbd_cm_member members[KNBD_MAX_MEMBERS + 1];
	/* Candidates for a move; past this many, the oldest are considered. */
	u64 conn_load[512];
	u64 conn_id[512];
	/* One decision's moves (knbd_cm_pick_batch()). */
	int pick[KNBD_CM_MAX_BATCH];
	u64 pick_load[KNBD_CM_MAX_BATCH];
	/* ... their loads again, 0 for those the client safety rule keeps */
	u64 conn_safe[512];
	u32 conn_key[512];
	u8 conn_mv[512];
	struct knbd_cm_tally tally;
};

/*
 * A client connection that serves, for the counts and the choice: one
 * with a drain asked for is as good as gone, even before its io_work has
 * seen the request (the next decision must not count on it).
 */
static bool knbd_cm_serving(struct knbd_conn *conn)
{
	return READ_ONCE(conn->state) == KNBD_CONN_TRANSMISSION &&
	       !READ_ONCE(conn->nbd.drain_req);
}

static u32 knbd_lat_us(u64 ns, u64 ops)
{
	return ops ? min_t(u64, div64_u64(ns, ops * NSEC_PER_USEC), U32_MAX) : 0;
}

static void knbd_load_sample_conns(struct knbd_node *node, u32 elapsed_ms)
{
	u64 clients = 0, members = 0, lat_ns = 0, lat_ops = 0;
	unsigned int nr_clients = 0, inflight = 0;
	struct knbd_volume *vol;
	struct knbd_conn *conn;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		u64 ops = atomic64_read(&conn->ops);
		u64 bytes = atomic64_read(&conn->bytes);
		u64 lat = atomic64_read(&conn->lat_ns);
		u64 dops = ops - conn->load_ops;
		u64 dlat = lat - conn->load_lat_ns;
		u64 sample = knbd_load_sample(dops, bytes - conn->load_bytes,
					      elapsed_ms);

		if (dops)
			WRITE_ONCE(conn->lat_us,
				   knbd_load_ewma(conn->lat_us,
						  knbd_lat_us(dlat, dops),
						  KNBD_LOAD_EWMA_SHIFT));
		conn->load_ops = ops;
		conn->load_bytes = bytes;
		conn->load_lat_ns = lat;
		WRITE_ONCE(conn->load, knbd_load_ewma(READ_ONCE(conn->load), sample,
						      KNBD_LOAD_EWMA_SHIFT));
		if (conn->is_peer) {
			members += conn->load;
			continue;
		}
		clients += conn->load;
		/* serving ones only: a drained one is as good as gone */
		if (knbd_cm_serving(conn))
			nr_clients++;
		/* a gauge for the stats: a stale value is as good as any */
		inflight += data_race(conn->inflight);
		lat_ns += dlat;
		lat_ops += dops;
	}
	mutex_unlock(&node->conns_lock);
	WRITE_ONCE(node->load, clients);
	WRITE_ONCE(node->peer_load, members);
	WRITE_ONCE(node->client_conns, nr_clients);
	WRITE_ONCE(node->inflight, inflight);
	if (lat_ops)
		WRITE_ONCE(node->lat_us, knbd_load_ewma(node->lat_us,
							knbd_lat_us(lat_ns, lat_ops),
							KNBD_LOAD_EWMA_SHIFT));

	/* Per volume: what its attached clients bring. */
	mutex_lock(&node->lock);
	list_for_each_entry(vol, &node->volumes, node_entry) {
		u64 vload = 0;

		mutex_lock(&node->conns_lock);
		list_for_each_entry(conn, &node->conns, node_entry)
			if (READ_ONCE(conn->vol) == vol)
				vload += conn->load;
		mutex_unlock(&node->conns_lock);
		WRITE_ONCE(vol->load, vload);
	}
	mutex_unlock(&node->lock);
}

/*
 * A move is booked at once (the smoothed figures take seconds to show
 * it; until then the next decision would see the same imbalance): it
 * left us and, in all likelihood, went to the member the group address
 * sends a client to, the least loaded one.  Several moves go to several
 * members, as the scheduler spreads them.
 */
static void knbd_cm_book(struct knbd_node *node, struct knbd_cm_member *m,
			 unsigned int nr, u64 l)
{
	unsigned int i, lo = 0;

	WRITE_ONCE(node->cm_load, node->cm_load > l ? node->cm_load - l : 0);
	for (i = 1; i < nr; i++)
		if (m[i].fresh && (!lo || m[i].load < m[lo].load))
			lo = i;
	if (lo)
		m[lo].load += l;
}

/* The booked figures back into the peers (same order as m[1..]). */
static void knbd_cm_book_peers(struct knbd_node *node,
			       const struct knbd_cm_member *m, unsigned int nr)
{
	struct knbd_peer *peer;
	unsigned int i = 1;

	rcu_read_lock();
	list_for_each_entry_rcu(peer, &node->peers, node_entry) {
		if (i == nr)
			break;
		if (m[i].id == peer->node_id && peer->cm_fresh)
			WRITE_ONCE(peer->cm_load, m[i].load);
		i++;
	}
	rcu_read_unlock();
}

/*
 * The client safety rule, every tick (the clients attribute shows it with
 * the manager off too): which connections may move without breaking their
 * client.  Under conns_lock, which also guards the proof table.
 */
static void knbd_cm_classify(struct knbd_monitor *mon)
{
	struct knbd_node *node = mon->node;
	struct knbd_conn *conn;

	knbd_cm_tally_reset(&mon->tally);
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry)
		if (!conn->is_peer && knbd_cm_serving(conn))
			knbd_cm_tally_add(&mon->tally, conn->nbd.client_key);
	list_for_each_entry(conn, &node->conns, node_entry) {
		u32 key = conn->nbd.client_key;

		if (conn->is_peer || !knbd_cm_serving(conn))
			continue;
		WRITE_ONCE(conn->nbd.movable,
			   knbd_cm_movable(knbd_cm_tally_count(&mon->tally, key),
					   knbd_cm_proven(&node->cm_proof, key)));
	}
	mutex_unlock(&node->conns_lock);
}

/*
 * The clients of the moves still landing are back in the group's count,
 * wherever they landed: they reconnect, so their other connections here
 * may move too.
 */
static void knbd_cm_note_landing(struct knbd_node *node, const struct knbd_cm_member *m,
				 unsigned int nr, unsigned long now)
{
	unsigned int i;

	if (!knbd_cm_back_in_group(&node->cm_state, m, nr, now))
		return;
	mutex_lock(&node->conns_lock);
	for (i = 0; i < node->cm_moved_nr; i++)
		knbd_cm_proof_back(&node->cm_proof, node->cm_moved_key[i], now);
	mutex_unlock(&node->conns_lock);
	node->cm_moved_nr = 0;
}

/*
 * The connection the rule kept, by its client's address: once per
 * over-utilised spell and connection, as the next decisions, a second
 * apart, usually keep the same one.
 */
static void knbd_cm_report_kept(struct knbd_node *node, u64 id)
{
	struct knbd_conn *conn;

	if (node->cm_told_kept == id)
		return;
	node->cm_told_kept = id;
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		if (conn->id != id)
			continue;
		pr_info_ratelimited("node %s: not moving client connection %llu from %pISc (client=%08x): it is the client's only one here and the client has not shown it reconnects (balance_clients=safe)\n",
				    knbd_node_name(node), id, &conn->peer,
				    conn->nbd.client_key);
		break;
	}
	mutex_unlock(&node->conns_lock);
}

/*
 * A client kept served only by its other connections here (multi, not
 * proven) must keep one: one decision takes at most all but one of them.
 */
static unsigned int knbd_cm_keep_one(struct knbd_monitor *mon, unsigned int np)
{
	unsigned int i, j, kept = 0, same;

	for (i = 0; i < np; i++) {
		int c = mon->pick[i];

		if (mon->conn_mv[c] == KNBD_CM_MOVABLE_MULTI) {
			for (j = 0, same = 0; j < kept; j++)
				same += mon->conn_key[mon->pick[j]] == mon->conn_key[c];
			if (same + 1 >= knbd_cm_tally_count(&mon->tally, mon->conn_key[c]))
				continue;
		}
		mon->pick_load[kept] = mon->pick_load[i];
		mon->pick[kept++] = c;
	}
	return kept;
}

/*
 * The connection manager's tick: the group as this node sees it, the
 * policy's verdict, and the connections of one decision drained.
 */
static void knbd_cm_tick(struct knbd_monitor *mon, unsigned long now,
			 unsigned long tick)
{
	struct knbd_node *node = mon->node;
	struct knbd_cm_member *m = mon->members;
	unsigned int nr = 1, nc = 0, i, np, moved = 0;
	struct knbd_cm_params p;
	enum knbd_cm_verdict v;
	struct knbd_peer *peer;
	struct knbd_conn *conn;
	struct knbd_cm_group g;
	u64 target, own, moved_load = 0;
	bool all;

	if (!READ_ONCE(node->cm_enabled)) {
		memset(&node->cm_state, 0, sizeof(node->cm_state));
		WRITE_ONCE(node->cm_load, 0);
		WRITE_ONCE(node->cm_verdict, KNBD_CM_IDLE);
		WRITE_ONCE(node->cm_shedding, false);
		return;
	}
	p.threshold_pct = READ_ONCE(node->cm.threshold_pct);
	p.clear_pct = READ_ONCE(node->cm.clear_pct);
	p.hold_ms = READ_ONCE(node->cm.hold_ms);
	p.interval_ms = READ_ONCE(node->cm.interval_ms);
	p.min_load = READ_ONCE(node->cm.min_load);
	all = READ_ONCE(node->cm_clients_all);

	/* Only this thread writes the cm_load figures. */
	WRITE_ONCE(node->cm_load, knbd_load_ewma(node->cm_load, READ_ONCE(node->load),
						 KNBD_CM_EWMA_SHIFT));
	m[0] = (struct knbd_cm_member){
		.id = node->node_id,
		.load = node->cm_load,
		.conns = READ_ONCE(node->client_conns),
		.fresh = true,
		.shedding = READ_ONCE(node->cm_shedding),
	};
	rcu_read_lock();
	list_for_each_entry_rcu(peer, &node->peers, node_entry) {
		unsigned long at = READ_ONCE(peer->remote_at);
		bool fresh = knbd_load_fresh(now, at, tick);
		u64 l = READ_ONCE(peer->remote_load);

		if (nr == ARRAY_SIZE(mon->members))
			break;
		/* a member back from silence starts from its report, not from 0 */
		WRITE_ONCE(peer->cm_load, !fresh ? 0 : !peer->cm_fresh ? l :
			   knbd_load_ewma(peer->cm_load, l, KNBD_CM_EWMA_SHIFT));
		peer->cm_fresh = fresh;
		m[nr++] = (struct knbd_cm_member){
			.id = peer->node_id,
			.load = peer->cm_load,
			.conns = READ_ONCE(peer->remote_conns),
			.fresh = fresh,
			.shedding = READ_ONCE(peer->remote_flags) & KNBD_LOAD_F_SHEDDING,
		};
	}
	rcu_read_unlock();

	knbd_cm_note_landing(node, m, nr, now);
	v = knbd_cm_assess(&p, &node->cm_state, m, nr, 0, now);
	if (v == KNBD_CM_IDLE) {
		node->cm_told_kept = 0;
		node->cm_told_skip = false;
	}
	WRITE_ONCE(node->cm_verdict, v);
	WRITE_ONCE(node->cm_shedding, v == KNBD_CM_WAIT || v == KNBD_CM_MOVE);
	if (v == KNBD_CM_DEFER)
		atomic64_inc(&node->cm_deferred);
	if (v != KNBD_CM_MOVE)
		return;

	knbd_cm_group(m, nr, &g);
	target = knbd_cm_target(&g, m[0].load);
	/* Oldest first (list order): ties go to the longest-lived connection. */
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		if (nc == ARRAY_SIZE(mon->conn_load))
			break;
		if (conn->is_peer || !knbd_cm_serving(conn))
			continue;
		mon->conn_load[nc] = READ_ONCE(conn->load);
		mon->conn_mv[nc] = READ_ONCE(conn->nbd.movable);
		mon->conn_safe[nc] = all || mon->conn_mv[nc] != KNBD_CM_MOVABLE_NO ?
				     mon->conn_load[nc] : 0;
		mon->conn_key[nc] = conn->nbd.client_key;
		mon->conn_id[nc++] = conn->id;
	}
	mutex_unlock(&node->conns_lock);
	node->cm_state.last_move = now ?: 1;

	/*
	 * Compare connections with what they add up to now, not with the
	 * smoothed figure (which lags and holds booked moves): against a
	 * stale larger total the only busy connection would look movable.
	 */
	for (i = 0, own = 0; i < nc; i++)
		own += mon->conn_load[i];
	np = nc < 2 ? 0 : knbd_cm_pick_batch(mon->conn_load, nc, own, g.min, target,
					     mon->pick, mon->pick_load,
					     knbd_cm_batch_max(m, nr, 0, &g));
	/*
	 * A pick would break its client: count the decision the rule
	 * changed, and take the best of those that keep their client.
	 */
	for (i = 0; i < np && mon->conn_safe[mon->pick[i]]; i++)
		;
	if (i < np) {
		atomic64_inc(&node->cm_would_break);
		knbd_cm_report_kept(node, mon->conn_id[mon->pick[i]]);
		np = knbd_cm_pick_batch(mon->conn_safe, nc, own, g.min, target,
					mon->pick, mon->pick_load,
					knbd_cm_batch_max(m, nr, 0, &g));
		if (!np)
			return;
	}
	if (!all)
		np = knbd_cm_keep_one(mon, np);
	if (!np) {
		atomic64_inc(&node->cm_skipped);
		/* a member left with one big connection is so for a while */
		if (node->cm_told_skip)
			return;
		node->cm_told_skip = true;
		pr_info_ratelimited("node %s: over-utilised (load %llu, least loaded member %llu) but none of its %u client connections would even it out\n",
				    config_item_name(&node->group.cg_item),
				    div_u64(m[0].load, 1000), div_u64(g.min, 1000), nc);
		return;
	}
	for (i = 0; i < np; i++) {
		u64 id = mon->conn_id[mon->pick[i]];
		int ret = knbd_conn_drain(node, id, false);

		/* One line per connection: the admin follows a client by its id. */
		pr_info_ratelimited("node %s: over-utilised (load %llu, group of %u: min %llu, mean %llu): %s client connection %llu (load %llu, %u of %u, wanted %llu)\n",
				    config_item_name(&node->group.cg_item),
				    div_u64(m[0].load, 1000), g.nr, div_u64(g.min, 1000),
				    div_u64(g.mean, 1000), ret ? "could not move" : "moving",
				    id, div_u64(mon->pick_load[i], 1000), i + 1, np,
				    div_u64(target, 1000));
		if (ret) {
			mon->pick_load[i] = 0;	/* not booked */
			continue;
		}
		moved_load += mon->pick_load[i];
		moved++;
	}
	if (moved) {
		/* moved again before the last ones landed: they land together */
		if (!node->cm_state.landing)
			node->cm_moved_nr = 0;
		for (i = 0; i < np; i++)
			if (mon->pick_load[i] && node->cm_moved_nr < KNBD_CM_MAX_BATCH)
				node->cm_moved_key[node->cm_moved_nr++] =
					mon->conn_key[mon->pick[i]];
		/* m[] as assessed: its counts are from before the drains */
		knbd_cm_moved(&node->cm_state, m, nr, now, moved_load);
		for (i = 0; i < np; i++)
			knbd_cm_book(node, m, nr, mon->pick_load[i]);
		knbd_cm_book_peers(node, m, nr);
	}
}

static int knbd_load_thread(void *data)
{
	struct knbd_monitor *mon = data;
	struct knbd_node *node = mon->node;
	unsigned long last = jiffies;

	while (!kthread_should_stop()) {
		unsigned long tick = msecs_to_jiffies(READ_ONCE(node->load_tick_ms));
		unsigned long now;
		struct knbd_peer *peer;

		schedule_timeout_idle(tick);
		if (kthread_should_stop())
			break;
		now = jiffies;
		knbd_load_sample_conns(node, jiffies_to_msecs(now - last) ?: 1);
		last = now;
		node->load_seq++;
		knbd_cm_classify(mon);
		knbd_cm_tick(mon, now, tick);

		/* Non-blocking: the link's io_work sends it. */
		rcu_read_lock();
		list_for_each_entry_rcu(peer, &node->peers, node_entry)
			knbd_peer_send_load(peer, node->load, READ_ONCE(node->client_conns),
					    node->load_seq, READ_ONCE(node->cm_shedding) ?
					    KNBD_LOAD_F_SHEDDING : 0);
		rcu_read_unlock();
	}
	return 0;
}

int knbd_load_start(struct knbd_node *node)
{
	struct knbd_monitor *mon;
	struct task_struct *t;

	/* ~23 KB of scratch: no need for contiguous pages */
	mon = kvzalloc(sizeof(*mon), GFP_KERNEL);
	if (!mon)
		return -ENOMEM;
	mon->node = node;
	memset(&node->cm_state, 0, sizeof(node->cm_state));
	node->cm_shedding = false;
	node->cm_verdict = KNBD_CM_IDLE;
	t = kthread_run(knbd_load_thread, mon, "knbd-load/%s",
			config_item_name(&node->group.cg_item));
	if (IS_ERR(t)) {
		kvfree(mon);
		return PTR_ERR(t);
	}
	node->load_task = t;
	node->load_mon = mon;
	knbd_group_add(node);
	return 0;
}

void knbd_load_stop(struct knbd_node *node)
{
	if (node->load_task) {
		knbd_group_del(node);
		kthread_stop(node->load_task);
		node->load_task = NULL;
		kvfree(node->load_mon);
		node->load_mon = NULL;
	}
	WRITE_ONCE(node->load, 0);
	WRITE_ONCE(node->peer_load, 0);
	WRITE_ONCE(node->client_conns, 0);
	WRITE_ONCE(node->cm_shedding, false);
}

/* ---- the group load table, for other modules (ip_vs_knbd) ---- */

void knbd_group_add(struct knbd_node *node)
{
	spin_lock(&knbd_group_lock);
	list_add_tail_rcu(&node->group_entry, &knbd_group_nodes);
	spin_unlock(&knbd_group_lock);
}

void knbd_group_del(struct knbd_node *node)
{
	spin_lock(&knbd_group_lock);
	list_del_rcu(&node->group_entry);
	spin_unlock(&knbd_group_lock);
	synchronize_rcu();
	INIT_LIST_HEAD(&node->group_entry);
}

static bool knbd_addr_match(const struct sockaddr_storage *ss, int af,
			    const void *addr)
{
	if (ss->ss_family != af)
		return false;
	if (af == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
		       ((const struct in_addr *)addr)->s_addr;
	if (af == AF_INET6)
		return ipv6_addr_equal(&((const struct sockaddr_in6 *)ss)->sin6_addr,
				       addr);
	return false;
}

int knbd_group_load(int af, const void *addr, u64 *load, u32 *conns)
{
	unsigned long now = jiffies, best_at = 0;
	struct knbd_node *node;
	struct knbd_peer *peer;
	int ret = -ENOENT;

	rcu_read_lock();
	list_for_each_entry_rcu(node, &knbd_group_nodes, group_entry) {
		unsigned long tick = msecs_to_jiffies(READ_ONCE(node->load_tick_ms));

		if (knbd_addr_match(&node->listen_addr, af, addr)) {
			*load = READ_ONCE(node->load);
			if (conns)
				*conns = READ_ONCE(node->client_conns);
			ret = 0;
			goto out;
		}
		list_for_each_entry_rcu(peer, &node->peers, node_entry) {
			unsigned long at = READ_ONCE(peer->remote_at);

			if (!knbd_addr_match(&peer->addr, af, addr))
				continue;
			if (!knbd_load_fresh(now, at, tick)) {
				if (ret == -ENOENT)
					ret = -ESTALE;
				continue;
			}
			if (best_at && !time_after(at, best_at))
				continue;
			best_at = at;
			*load = READ_ONCE(peer->remote_load);
			if (conns)
				*conns = READ_ONCE(peer->remote_conns);
			ret = 0;
		}
	}
out:
	rcu_read_unlock();
	return ret;
}
EXPORT_SYMBOL_GPL(knbd_group_load);
