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
	/* ... their loads again, 0 for those the client safety rule keeps */
	u64 conn_safe[512];
	u32 conn_key[512];
	struct knbd_cm_tally tally;
};

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
		if (READ_ONCE(conn->state) == KNBD_CONN_TRANSMISSION)
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
		if (!conn->is_peer && READ_ONCE(conn->state) == KNBD_CONN_TRANSMISSION)
			knbd_cm_tally_add(&mon->tally, conn->nbd.client_key);
	list_for_each_entry(conn, &node->conns, node_entry) {
		u32 key = conn->nbd.client_key;

		if (conn->is_peer || READ_ONCE(conn->state) != KNBD_CONN_TRANSMISSION)
			continue;
		WRITE_ONCE(conn->nbd.movable,
			   knbd_cm_movable(knbd_cm_tally_count(&mon->tally, key),
					   knbd_cm_proven(&node->cm_proof, key)));
	}
	mutex_unlock(&node->conns_lock);
}

/*
 * The last move's client is back in the group's count, wherever it
 * landed: it reconnects, so its other connections here may move too.
 */
static void knbd_cm_note_landing(struct knbd_node *node, const struct knbd_cm_member *m,
				 unsigned int nr, unsigned long now)
{
	if (!knbd_cm_back_in_group(&node->cm_state, m, nr, now))
		return;
	mutex_lock(&node->conns_lock);
	knbd_cm_proof_back(&node->cm_proof, node->cm_moved_key, now);
	mutex_unlock(&node->conns_lock);
}

/* Ratelimited: the connection the rule kept, by its client's address. */
static void knbd_cm_report_kept(struct knbd_node *node, u64 id)
{
	struct knbd_conn *conn;

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
 * The connection manager's tick: the group as this node sees it, the
 * policy's verdict, and at most one connection drained.
 */
static void knbd_cm_tick(struct knbd_monitor *mon, unsigned long now,
			 unsigned long tick)
{
	struct knbd_node *node = mon->node;
	struct knbd_cm_member *m = mon->members;
	struct knbd_cm_params p;
	enum knbd_cm_verdict v;
	struct knbd_peer *peer;
	struct knbd_conn *conn;
	unsigned int nr = 1, nc = 0, i;
	struct knbd_cm_group g;
	u64 target, own;
	int pick, ret;
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
		if (conn->is_peer || READ_ONCE(conn->state) != KNBD_CONN_TRANSMISSION)
			continue;
		mon->conn_load[nc] = READ_ONCE(conn->load);
		mon->conn_safe[nc] = all || READ_ONCE(conn->nbd.movable) != KNBD_CM_MOVABLE_NO ?
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
	pick = nc < 2 ? -1 : knbd_cm_pick(mon->conn_load, nc, own, g.min, target);
	/*
	 * The best pick would break its client: count the move the rule
	 * prevented, and take the best of those that keep their client.
	 */
	if (pick >= 0 && !mon->conn_safe[pick]) {
		atomic64_inc(&node->cm_would_break);
		knbd_cm_report_kept(node, mon->conn_id[pick]);
		pick = knbd_cm_pick(mon->conn_safe, nc, own, g.min, target);
		if (pick < 0)
			return;
	}
	if (pick < 0) {
		atomic64_inc(&node->cm_skipped);
		pr_info_ratelimited("node %s: over-utilised (load %llu, least loaded member %llu) but none of its %u client connections would even it out\n",
				    config_item_name(&node->group.cg_item),
				    div_u64(m[0].load, 1000), div_u64(g.min, 1000), nc);
		return;
	}
	ret = knbd_conn_drain(node, mon->conn_id[pick], false);
	if (!ret) {
		knbd_cm_moved(&node->cm_state, m, nr, now);
		node->cm_moved_key = mon->conn_key[pick];
		/*
		 * The smoothed figures take seconds to show a move; until
		 * then the next decision would see the same imbalance and
		 * move again.  Book the move now: it left us, and (in all
		 * likelihood) it lands on the least loaded member.
		 */
		u64 l = mon->conn_load[pick];

		WRITE_ONCE(node->cm_load, node->cm_load > l ? node->cm_load - l : 0);
		rcu_read_lock();
		list_for_each_entry_rcu(peer, &node->peers, node_entry) {
			if (peer->cm_fresh && peer->cm_load == g.min) {
				WRITE_ONCE(peer->cm_load, peer->cm_load + l);
				break;
			}
		}
		rcu_read_unlock();
	}
	pr_info_ratelimited("node %s: over-utilised (load %llu, group of %u: min %llu, mean %llu): %s client connection %llu (load %llu, wanted %llu)\n",
			    config_item_name(&node->group.cg_item),
			    div_u64(m[0].load, 1000), g.nr, div_u64(g.min, 1000),
			    div_u64(g.mean, 1000), ret ? "could not move" : "moving",
			    mon->conn_id[pick], div_u64(mon->conn_load[pick], 1000),
			    div_u64(target, 1000));
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

	mon = kzalloc(sizeof(*mon), GFP_KERNEL);
	if (!mon)
		return -ENOMEM;
	mon->node = node;
	memset(&node->cm_state, 0, sizeof(node->cm_state));
	node->cm_shedding = false;
	node->cm_verdict = KNBD_CM_IDLE;
	t = kthread_run(knbd_load_thread, mon, "knbd-load/%s",
			config_item_name(&node->group.cg_item));
	if (IS_ERR(t)) {
		kfree(mon);
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
		kfree(node->load_mon);
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
