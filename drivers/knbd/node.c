// SPDX-License-Identifier: GPL-2.0
/*
 * Nodes: enable (listeners, member links, the load monitor) and disable
 * (the same stopped, then every connection closed and waited for).  A node
 * lives in the network namespace of the process that enabled it.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/nsproxy.h>
#include <linux/wait_bit.h>
#include <net/net_namespace.h>

#include "knbd.h"

void knbd_node_init(struct knbd_node *node)
{
	knbd_listener_init(&node->clients, node, &knbd_nbd_ops);
	knbd_listener_init(&node->peers_listener, node, &knbd_pserve_ops);
}

/* Called with state_lock and lock held. */
int knbd_node_enable(struct knbd_node *node)
{
	struct knbd_peer *peer;
	int ret;

	lockdep_assert_held(&node->state_lock);
	lockdep_assert_held(&node->lock);
	ret = knbd_auth_start(node);
	if (ret)
		return ret;
	/* Kernel sockets do not pin their namespace: hold it ourselves. */
	node->net = get_net(current->nsproxy->net_ns);
	ret = knbd_listener_start(&node->clients, node->net, &node->listen_addr,
				  node->listen_port);
	if (ret)
		goto err_net;
	/* A member with no peers serves no members: leave the port free. */
	if (node->peer_port && !list_empty(&node->peers)) {
		ret = knbd_listener_start(&node->peers_listener, node->net,
					  &node->listen_addr, node->peer_port);
		if (ret)
			goto err_clients;
	}
	list_for_each_entry(peer, &node->peers, node_entry)
		knbd_peer_start(peer);
	ret = knbd_load_start(node);
	if (ret)
		goto err_peers;
	return 0;

err_peers:
	list_for_each_entry(peer, &node->peers, node_entry)
		knbd_peer_stop(peer);
	knbd_listener_stop(&node->peers_listener);
err_clients:
	knbd_listener_stop(&node->clients);
err_net:
	put_net(node->net);
	node->net = NULL;
	knbd_auth_stop(node);
	return ret;
}

/* Shut down every connection of a node (vol == NULL) or the clients of one volume. */
void knbd_node_close_conns(struct knbd_node *node, struct knbd_volume *vol)
{
	struct knbd_conn *conn;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry)
		if (!vol || READ_ONCE(conn->vol) == vol)
			knbd_conn_shutdown(conn);
	mutex_unlock(&node->conns_lock);
}

/*
 * Run the member connections' io_work: one that is receiving a WRITE for
 * a volume being disabled lets it go (knbd_pserve_tick()).
 */
void knbd_node_kick_members(struct knbd_node *node)
{
	struct knbd_conn *conn;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry)
		if (conn->is_peer)
			knbd_conn_kick(conn);
	mutex_unlock(&node->conns_lock);
}

/*
 * Called with state_lock but not lock held; lock is only taken at the end.
 * The node stays "enabled" for configuration (frozen attributes) until the
 * last connection is gone.
 */
void knbd_node_disable(struct knbd_node *node)
{
	struct knbd_peer *peer;

	lockdep_assert_held(&node->state_lock);
	knbd_load_stop(node);
	knbd_listener_stop(&node->clients);
	knbd_listener_stop(&node->peers_listener);
	/* Fails forwarded pieces in flight, so client requests can finish. */
	list_for_each_entry(peer, &node->peers, node_entry)
		knbd_peer_stop(peer);

	knbd_node_close_conns(node, NULL);
	wait_var_event(&node->nr_conns, !atomic_read(&node->nr_conns));

	mutex_lock(&node->lock);
	node->enabled = false;
	mutex_unlock(&node->lock);
	knbd_auth_stop(node);
	put_net(node->net);
	node->net = NULL;
	pr_info("node %s: disabled\n", config_item_name(&node->group.cg_item));
}
