// SPDX-License-Identifier: GPL-2.0
/*
 * Node listeners: one for clients (the NBD transport) and, in a group, one
 * for other members (the member transport).  sk_data_ready on the
 * listening socket queues the accept work, which accepts without blocking
 * and hands each socket to its transport (knbd_conn_create()).
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/net.h>
#include <net/sock.h>

#include "knbd.h"

/*
 * Is @sock's source host already at max_conns_per_host client connections?
 * A walk of node->conns, no longer than max_connections: accepts are rare
 * next to I/O, and no index to keep in step with every close.  Accepts of
 * one listener are serialised (one work item), so the count cannot race
 * with another accept from the same host.
 */
static bool knbd_listener_host_full(struct knbd_node *node, struct socket *sock,
				    struct sockaddr_storage *addr)
{
	u32 max = READ_ONCE(node->max_conns_per_host);
	struct knbd_conn *conn;
	u32 n = 0;

	if (!max)
		return false;
	/* Without its address a connection cannot be counted: it is refused. */
	if (kernel_getpeername(sock, (struct sockaddr *)addr) < 0)
		return true;
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		if (!conn->is_peer && knbd_acl_same_host(&conn->peer, addr) && ++n >= max)
			break;
	}
	mutex_unlock(&node->conns_lock);
	return n >= max;
}

static void knbd_listener_accept_work(struct work_struct *work)
{
	struct knbd_listener *l = container_of(work, struct knbd_listener, accept_work);
	struct knbd_node *node = l->node;
	struct sockaddr_storage addr;
	struct socket *sock;
	int ret;

	for (;;) {
		ret = kernel_accept(l->sock, &sock, O_NONBLOCK);
		if (ret < 0) {
			if (ret != -EAGAIN)
				pr_warn_ratelimited("node %s: accept failed: %pe\n",
						    knbd_node_name(node), ERR_PTR(ret));
			return;
		}
		if (atomic_read(&node->nr_conns) >= READ_ONCE(node->max_conns) +
		    (l->ops->is_peer ? KNBD_MAX_MEMBERS : 0)) {
			pr_warn_ratelimited("node %s: connection limit reached, refusing %s\n",
					    knbd_node_name(node), l->ops->name);
			sock_release(sock);
			continue;
		}
		if (!l->ops->is_peer && knbd_listener_host_full(node, sock, &addr)) {
			pr_warn_ratelimited("node %s: %pISc has max_conns_per_host (%u) connections, refusing another\n",
					    knbd_node_name(node), &addr,
					    READ_ONCE(node->max_conns_per_host));
			sock_release(sock);
			continue;
		}
		/*
		 * The child inherited the listener's callback and user data;
		 * the transport takes over from the defaults.
		 */
		write_lock_bh(&sock->sk->sk_callback_lock);
		sock->sk->sk_data_ready = l->saved_data_ready;
		sock->sk->sk_user_data = NULL;
		write_unlock_bh(&sock->sk->sk_callback_lock);
		ret = knbd_conn_create(node, l->ops, sock);
		if (ret)
			pr_warn_ratelimited("node %s: cannot set up a %s connection: %pe\n",
					    knbd_node_name(node), l->ops->name, ERR_PTR(ret));
		cond_resched();
	}
}

static void knbd_listener_data_ready(struct sock *sk)
{
	struct knbd_listener *l;

	read_lock_bh(&sk->sk_callback_lock);
	l = sk->sk_user_data;
	if (l && sk->sk_state == TCP_LISTEN)
		queue_work(knbd_wq, &l->accept_work);
	read_unlock_bh(&sk->sk_callback_lock);
}

void knbd_listener_init(struct knbd_listener *l, struct knbd_node *node,
			const struct knbd_conn_ops *ops)
{
	l->node = node;
	l->ops = ops;
	INIT_WORK(&l->accept_work, knbd_listener_accept_work);
}

int knbd_listener_start(struct knbd_listener *l, struct net *net,
			const struct sockaddr_storage *base, u16 port)
{
	struct sockaddr_storage addr = *base;
	struct socket *sock;
	int addrlen, ret;

	knbd_sock_addr_port(&addr, port, &addrlen);
	ret = knbd_sock_listen(net, base, port, &sock);
	if (ret) {
		pr_warn_ratelimited("node %s: cannot listen on %pISpc: %pe\n",
				    knbd_node_name(l->node), &addr, ERR_PTR(ret));
		return ret;
	}
	l->sock = sock;
	write_lock_bh(&sock->sk->sk_callback_lock);
	sock->sk->sk_user_data = l;
	l->saved_data_ready = sock->sk->sk_data_ready;
	sock->sk->sk_data_ready = knbd_listener_data_ready;
	write_unlock_bh(&sock->sk->sk_callback_lock);
	/* Connections that arrived before the callback was in place. */
	queue_work(knbd_wq, &l->accept_work);
	pr_info("node %s: listening for %ss on %pISpc\n", knbd_node_name(l->node),
		l->ops->name, &addr);
	return 0;
}

void knbd_listener_stop(struct knbd_listener *l)
{
	struct socket *sock = l->sock;

	if (!sock)
		return;
	write_lock_bh(&sock->sk->sk_callback_lock);
	sock->sk->sk_data_ready = l->saved_data_ready;
	sock->sk->sk_user_data = NULL;
	write_unlock_bh(&sock->sk->sk_callback_lock);
	cancel_work_sync(&l->accept_work);
	sock_release(sock);
	l->sock = NULL;
}
