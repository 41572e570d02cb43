// SPDX-License-Identifier: GPL-2.0
/*
 * Load monitor: one kthread per enabled node samples, every tick, the
 * operations and bytes of each connection, turns them into one load
 * figure per connection, per volume and per node (load.c), and sends the
 * node's figure to every peer.  Peers' figures land in their knbd_peer
 * with the time they arrived, so every member knows the group's load and
 * how fresh each figure is.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/rculist.h>
#include <linux/sched.h>

#include "knbd.h"

static void knbd_load_sample_conns(struct knbd_node *node, u32 elapsed_ms)
{
	struct knbd_volume *vol;
	struct knbd_conn *conn;
	u64 total = 0;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		u64 ops = atomic64_read(&conn->ops);
		u64 bytes = atomic64_read(&conn->bytes);
		u64 sample = knbd_load_sample(ops - conn->load_ops, bytes - conn->load_bytes,
					      elapsed_ms);

		conn->load_ops = ops;
		conn->load_bytes = bytes;
		WRITE_ONCE(conn->load, knbd_load_ewma(READ_ONCE(conn->load), sample,
						      KNBD_LOAD_EWMA_SHIFT));
		total += conn->load;
	}
	mutex_unlock(&node->conns_lock);
	WRITE_ONCE(node->load, total);

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

static int knbd_load_thread(void *data)
{
	struct knbd_peer *peers[KNBD_MAX_MEMBERS];
	struct knbd_node *node = data;
	unsigned long last = jiffies;
	unsigned int i, n;

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

		/* Pin the links under RCU, send outside it: sending sleeps. */
		n = 0;
		rcu_read_lock();
		list_for_each_entry_rcu(peer, &node->peers, node_entry) {
			if (n == ARRAY_SIZE(peers) || READ_ONCE(peer->stopping))
				continue;
			atomic_inc(&peer->users);
			peers[n++] = peer;
		}
		rcu_read_unlock();
		for (i = 0; i < n; i++) {
			knbd_peer_send_load(peers[i], node->load,
					    atomic_read(&node->nr_conns), node->load_seq);
			knbd_peer_put(peers[i]);
		}
	}
	return 0;
}

int knbd_load_start(struct knbd_node *node)
{
	struct task_struct *t;

	t = kthread_run(knbd_load_thread, node, "knbd-load/%s",
			config_item_name(&node->group.cg_item));
	if (IS_ERR(t))
		return PTR_ERR(t);
	node->load_task = t;
	return 0;
}

void knbd_load_stop(struct knbd_node *node)
{
	if (node->load_task) {
		kthread_stop(node->load_task);
		node->load_task = NULL;
	}
	WRITE_ONCE(node->load, 0);
}
