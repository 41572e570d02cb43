// SPDX-License-Identifier: GPL-2.0
/*
 * Server-to-server links between the members of a group.
 *
 * Each member opens one outgoing link to every configured peer and sends
 * it the pieces of client requests that the peer owns; the peer serves
 * them from its own store through an ordinary knbd_conn marked is_peer
 * (knbd_peer_serve()).  So every link carries requests one way and
 * replies the other.
 *
 * The outgoing side keeps the pieces it sent on a pending list keyed by
 * cookie.  Whatever ends a link (a bad frame, a send error, a peer that
 * stops answering, the admin) fails every pending piece with EIO, and the
 * link reconnects with exponential backoff unless it is being stopped.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/net.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/wait_bit.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "knbd.h"

#define peer_name(p)	config_item_name(&(p)->group.cg_item)

static const char * const knbd_peer_state_names[] = {
	[KNBD_PEER_DOWN]	= "down",
	[KNBD_PEER_CONNECTING]	= "connecting",
	[KNBD_PEER_UP]		= "up",
};

const char *knbd_peer_state_name(enum knbd_peer_state state)
{
	return knbd_peer_state_names[state];
}

static int knbd_send_hello(struct socket *sock, struct knbd_node *node)
{
	struct {
		struct knbd_peer_hdr hdr;
		struct knbd_peer_hello hello;
	} __packed msg = { };

	knbd_peer_encode_hdr(&msg.hdr, KNBD_PEER_HELLO, sizeof(msg.hello));
	msg.hello.node_id = cpu_to_be32(node->node_id);
	msg.hello.group_id = cpu_to_be32(node->group_id);
	return knbd_send(sock, &msg, sizeof(msg), 0);
}

static int knbd_recv_hello(struct socket *sock, u32 *node_id, u32 *group_id)
{
	struct knbd_peer_hello hello;
	struct knbd_peer_hdr hdr;
	u16 type;
	u32 len;
	int ret;

	ret = knbd_recv(sock, &hdr, sizeof(hdr));
	if (ret)
		return ret;
	ret = knbd_peer_decode_hdr(&hdr, &type, &len);
	if (ret)
		return ret;
	if (type != KNBD_PEER_HELLO || len != sizeof(hello))
		return -EPROTO;
	ret = knbd_recv(sock, &hello, sizeof(hello));
	if (ret)
		return ret;
	*node_id = be32_to_cpu(hello.node_id);
	*group_id = be32_to_cpu(hello.group_id);
	return 0;
}

/* ---- outgoing link ---- */

static void knbd_fwd_finish(struct knbd_peer *peer, struct knbd_fwd *fwd)
{
	complete(&fwd->done);
}

/* End the current link: fail what is pending, maybe schedule a reconnect. */
static void knbd_peer_link_down(struct knbd_peer *peer, const char *why)
{
	struct knbd_fwd *fwd, *tmp;
	LIST_HEAD(dead);
	bool was_up;

	spin_lock(&peer->pending_lock);
	was_up = peer->link_up;
	peer->link_up = false;
	list_splice_init(&peer->pending, &dead);
	peer->inflight = 0;
	wake_up_all(&peer->wait);
	spin_unlock(&peer->pending_lock);

	mutex_lock(&peer->send_lock);
	if (peer->sock)
		kernel_sock_shutdown(peer->sock, SHUT_RDWR);
	mutex_unlock(&peer->send_lock);

	list_for_each_entry_safe(fwd, tmp, &dead, entry) {
		list_del(&fwd->entry);
		fwd->nbd_err = KNBD_NBD_EIO;
		atomic64_inc(&peer->failed);
		knbd_fwd_finish(peer, fwd);
	}
	WRITE_ONCE(peer->state, KNBD_PEER_DOWN);
	if (was_up)
		pr_warn_ratelimited("peer %s (node %u): link down: %s\n",
				    peer_name(peer), peer->node_id, why);
	if (!READ_ONCE(peer->stopping))
		queue_delayed_work(knbd_wq, &peer->connect_work,
				   msecs_to_jiffies(peer->backoff_ms));
}

static struct knbd_fwd *knbd_peer_take(struct knbd_peer *peer, u64 cookie)
{
	struct knbd_fwd *fwd;

	spin_lock(&peer->pending_lock);
	list_for_each_entry(fwd, &peer->pending, entry) {
		if (fwd->cookie == cookie) {
			list_del(&fwd->entry);
			peer->inflight--;
			wake_up(&peer->wait);
			spin_unlock(&peer->pending_lock);
			return fwd;
		}
	}
	spin_unlock(&peer->pending_lock);
	return NULL;
}

/*
 * Has the oldest pending piece waited longer than the I/O timeout?  The
 * socket's receive timeout only says how long the reader has waited,
 * which on an idle link is unrelated to any request.
 */
static bool knbd_peer_overdue(struct knbd_peer *peer)
{
	struct knbd_fwd *oldest;
	bool overdue = false;

	spin_lock(&peer->pending_lock);
	oldest = list_first_entry_or_null(&peer->pending, struct knbd_fwd, entry);
	if (oldest)
		overdue = time_after(jiffies, oldest->sent_at + KNBD_PEER_IO_TIMEOUT);
	spin_unlock(&peer->pending_lock);
	return overdue;
}

/* Read replies until the link fails. */
static void knbd_peer_recv_work(struct work_struct *work)
{
	struct knbd_peer *peer = container_of(work, struct knbd_peer, recv_work);
	struct socket *sock = peer->sock;	/* stable until connect_work runs */
	struct knbd_peer_io_reply reply;
	struct knbd_peer_hdr hdr;
	const char *why = "connection closed";
	struct knbd_fwd *fwd;
	u32 len, err, status;
	u16 type;
	int ret;

	for (;;) {
		ret = knbd_recv(sock, &hdr, sizeof(hdr));
		if (ret == -ETIMEDOUT) {
			if (!knbd_peer_overdue(peer))
				continue;
			why = "no reply within the I/O timeout";
			break;
		}
		if (ret)
			break;
		if (knbd_peer_decode_hdr(&hdr, &type, &len) ||
		    type != KNBD_PEER_IO_REPLY || len < sizeof(reply)) {
			why = "bad frame";
			break;
		}
		if (knbd_recv(sock, &reply, sizeof(reply)))
			break;
		fwd = knbd_peer_take(peer, be64_to_cpu(reply.cookie));
		if (!fwd) {
			why = "reply with an unknown cookie";
			break;
		}
		err = be32_to_cpu(reply.error);
		status = be32_to_cpu(reply.status);
		if (knbd_peer_check_reply(len, err, status, fwd->cmd, fwd->len)) {
			fwd->nbd_err = KNBD_NBD_EIO;
			knbd_fwd_finish(peer, fwd);
			why = "reply of the wrong length";
			break;
		}
		if (len > sizeof(reply) && knbd_recv_iter(sock, &fwd->iter)) {
			fwd->nbd_err = KNBD_NBD_EIO;
			knbd_fwd_finish(peer, fwd);
			break;
		}
		fwd->status = status;
		fwd->remote_epoch = be64_to_cpu(reply.epoch);
		fwd->nbd_err = status == KNBD_PEER_OK ? err : KNBD_NBD_EIO;
		knbd_fwd_finish(peer, fwd);
	}
	knbd_peer_link_down(peer, why);
}

static void knbd_peer_connect_work(struct work_struct *work)
{
	struct knbd_peer *peer = container_of(to_delayed_work(work),
					      struct knbd_peer, connect_work);
	struct knbd_node *node = peer->node;
	struct sockaddr_storage addr = peer->addr;
	struct socket *sock, *old;
	u32 id, group;
	int addrlen, ret;

	if (READ_ONCE(peer->stopping))
		return;
	WRITE_ONCE(peer->state, KNBD_PEER_CONNECTING);
	if (addr.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&addr)->sin6_port = htons(peer->port);
		addrlen = sizeof(struct sockaddr_in6);
	} else {
		((struct sockaddr_in *)&addr)->sin_port = htons(peer->port);
		addrlen = sizeof(struct sockaddr_in);
	}
	ret = sock_create_kern(node->net, addr.ss_family, SOCK_STREAM,
			       IPPROTO_TCP, &sock);
	if (ret)
		goto retry;
	tcp_sock_set_nodelay(sock->sk);
	sock_set_sndtimeo(sock->sk, KNBD_SEND_TIMEOUT_SECS);
	knbd_sock_set_rcvtimeo(sock, KNBD_PEER_HELLO_TIMEOUT);
	ret = kernel_connect(sock, (struct sockaddr *)&addr, addrlen, 0);
	if (!ret)
		ret = knbd_send_hello(sock, node);
	if (!ret)
		ret = knbd_recv_hello(sock, &id, &group);
	if (!ret && (id != peer->node_id || group != node->group_id)) {
		pr_warn_ratelimited("peer %s: %pISpc is node %u of group %u, expected node %u of group %u\n",
				    peer_name(peer), &addr, id, group,
				    peer->node_id, node->group_id);
		ret = -EPROTO;
	}
	if (ret) {
		sock_release(sock);
		goto retry;
	}
	knbd_sock_set_rcvtimeo(sock, KNBD_PEER_POLL);

	mutex_lock(&peer->send_lock);
	old = peer->sock;
	peer->sock = sock;
	spin_lock(&peer->pending_lock);
	peer->gen++;
	peer->link_up = true;
	spin_unlock(&peer->pending_lock);
	mutex_unlock(&peer->send_lock);
	if (old)
		sock_release(old);

	peer->backoff_ms = KNBD_PEER_BACKOFF_MIN_MS;
	atomic64_inc(&peer->connects);
	WRITE_ONCE(peer->state, KNBD_PEER_UP);
	pr_info("peer %s (node %u): link up to %pISpc\n", peer_name(peer),
		peer->node_id, &addr);
	queue_work(knbd_wq, &peer->recv_work);
	return;

retry:
	WRITE_ONCE(peer->state, KNBD_PEER_DOWN);
	pr_debug("peer %s: connect failed: %d\n", peer_name(peer), ret);
	if (!READ_ONCE(peer->stopping))
		queue_delayed_work(knbd_wq, &peer->connect_work,
				   msecs_to_jiffies(peer->backoff_ms));
	peer->backoff_ms = min(peer->backoff_ms * 2, KNBD_PEER_BACKOFF_MAX_MS);
}

void knbd_peer_init(struct knbd_peer *peer, struct knbd_node *node)
{
	peer->node = node;
	peer->port = KNBD_DEFAULT_PEER_PORT;
	INIT_DELAYED_WORK(&peer->connect_work, knbd_peer_connect_work);
	INIT_WORK(&peer->recv_work, knbd_peer_recv_work);
	mutex_init(&peer->send_lock);
	spin_lock_init(&peer->pending_lock);
	INIT_LIST_HEAD(&peer->pending);
	init_waitqueue_head(&peer->wait);
}

/* Called with state_lock held when the node is enabled. */
void knbd_peer_start(struct knbd_peer *peer)
{
	lockdep_assert_held(&peer->node->state_lock);
	if (peer->running)
		return;
	peer->stopping = false;
	peer->running = true;
	peer->backoff_ms = KNBD_PEER_BACKOFF_MIN_MS;
	queue_delayed_work(knbd_wq, &peer->connect_work, 0);
}

/*
 * Stop the link and wait until nothing uses it.  The order matters: stop
 * reconnects, wake the reader, wait for it, then cancel any reconnect it
 * queued on its way out.
 */
void knbd_peer_stop(struct knbd_peer *peer)
{
	lockdep_assert_held(&peer->node->state_lock);
	if (!peer->running)
		return;
	WRITE_ONCE(peer->stopping, true);
	cancel_delayed_work_sync(&peer->connect_work);
	mutex_lock(&peer->send_lock);
	if (peer->sock)
		kernel_sock_shutdown(peer->sock, SHUT_RDWR);
	mutex_unlock(&peer->send_lock);
	cancel_work_sync(&peer->recv_work);
	cancel_delayed_work_sync(&peer->connect_work);
	knbd_peer_link_down(peer, "stopped");
	cancel_delayed_work_sync(&peer->connect_work);
	wait_var_event(&peer->users, !atomic_read(&peer->users));
	if (peer->sock) {
		sock_release(peer->sock);
		peer->sock = NULL;
	}
	peer->running = false;
}

/* Find the link to member @node_id; the caller puts it after use. */
struct knbd_peer *knbd_peer_get(struct knbd_node *node, u32 node_id)
{
	struct knbd_peer *peer;

	rcu_read_lock();
	list_for_each_entry_rcu(peer, &node->peers, node_entry) {
		if (peer->node_id == node_id && !READ_ONCE(peer->stopping)) {
			atomic_inc(&peer->users);
			rcu_read_unlock();
			return peer;
		}
	}
	rcu_read_unlock();
	return NULL;
}

void knbd_peer_put(struct knbd_peer *peer)
{
	if (atomic_dec_and_test(&peer->users))
		wake_up_var(&peer->users);
}

static bool knbd_peer_has_room(struct knbd_peer *peer)
{
	bool room;

	spin_lock(&peer->pending_lock);
	room = !peer->link_up || peer->inflight < KNBD_PEER_MAX_INFLIGHT;
	spin_unlock(&peer->pending_lock);
	return room;
}

/*
 * Send one piece to its owner.  Returns 0 once the piece is pending: its
 * completion then always comes, from a reply or from the link failing.
 * Returns < 0 if it was never sent (no link).
 */
int knbd_peer_forward(struct knbd_peer *peer, struct knbd_volume *vol,
		      const struct knbd_route_id *rid, struct knbd_fwd *fwd)
{
	const char *name = config_item_name(&vol->group.cg_item);
	struct {
		struct knbd_peer_hdr hdr;
		struct knbd_peer_io io;
	} __packed msg;
	u16 name_len = strlen(name);
	u32 payload = fwd->cmd == KNBD_NBD_CMD_WRITE ? fwd->len : 0;
	struct iov_iter data;
	u32 gen;
	int ret;

	init_completion(&fwd->done);
	fwd->status = KNBD_PEER_OK;
	if (!wait_event_timeout(peer->wait, knbd_peer_has_room(peer),
				KNBD_PEER_IO_TIMEOUT))
		return -ETIMEDOUT;

	spin_lock(&peer->pending_lock);
	if (!peer->link_up) {
		spin_unlock(&peer->pending_lock);
		return -EHOSTUNREACH;
	}
	fwd->cookie = ++peer->next_cookie;
	fwd->sent_at = jiffies;
	list_add_tail(&fwd->entry, &peer->pending);
	peer->inflight++;
	gen = peer->gen;
	spin_unlock(&peer->pending_lock);

	knbd_peer_encode_hdr(&msg.hdr, KNBD_PEER_IO,
			     sizeof(msg.io) + name_len + payload);
	msg.io.cookie = cpu_to_be64(fwd->cookie);
	msg.io.epoch = cpu_to_be64(rid->epoch);
	msg.io.checksum = cpu_to_be32(rid->checksum);
	msg.io.cmd = cpu_to_be16(fwd->cmd);
	msg.io.flags = cpu_to_be16(fwd->flags);
	msg.io.offset = cpu_to_be64(fwd->offset);
	msg.io.len = cpu_to_be32(fwd->len);
	msg.io.name_len = cpu_to_be16(name_len);
	msg.io.reserved = 0;

	mutex_lock(&peer->send_lock);
	/* A new link since we queued: the old one already failed this piece. */
	if (peer->gen != gen) {
		mutex_unlock(&peer->send_lock);
		return 0;
	}
	ret = knbd_send(peer->sock, &msg, sizeof(msg), MSG_MORE);
	if (!ret)
		ret = knbd_send(peer->sock, name, name_len, payload ? MSG_MORE : 0);
	if (!ret && payload) {
		data = fwd->iter;
		ret = knbd_send_iter(peer->sock, &data, 0);
	}
	if (ret)
		kernel_sock_shutdown(peer->sock, SHUT_RDWR);
	mutex_unlock(&peer->send_lock);
	atomic64_inc(&peer->forwarded);
	return 0;
}

/* Best effort: a report that cannot go now is replaced by the next one. */
void knbd_peer_send_load(struct knbd_peer *peer, u64 load, u32 conns, u32 seq,
			 u32 flags)
{
	struct {
		struct knbd_peer_hdr hdr;
		struct knbd_peer_load load;
	} __packed msg = { };
	bool up;

	spin_lock(&peer->pending_lock);
	up = peer->link_up;
	spin_unlock(&peer->pending_lock);
	if (!up)
		return;
	knbd_peer_encode_hdr(&msg.hdr, KNBD_PEER_LOAD, sizeof(msg.load));
	msg.load.node_id = cpu_to_be32(peer->node->node_id);
	msg.load.seq = cpu_to_be32(seq);
	msg.load.load = cpu_to_be64(load);
	msg.load.connections = cpu_to_be32(conns);
	msg.load.flags = cpu_to_be32(flags);
	if (!mutex_trylock(&peer->send_lock))
		return;		/* busy with I/O: skip this tick rather than queue */
	if (peer->sock && knbd_send(peer->sock, &msg, sizeof(msg), 0))
		kernel_sock_shutdown(peer->sock, SHUT_RDWR);
	mutex_unlock(&peer->send_lock);
}

/* Record a member's report in our link to it. */
static void knbd_peer_got_load(struct knbd_node *node, const struct knbd_peer_load *rep)
{
	u32 id = be32_to_cpu(rep->node_id);
	struct knbd_peer *peer;

	rcu_read_lock();
	list_for_each_entry_rcu(peer, &node->peers, node_entry) {
		if (peer->node_id != id)
			continue;
		WRITE_ONCE(peer->remote_load, be64_to_cpu(rep->load));
		WRITE_ONCE(peer->remote_conns, be32_to_cpu(rep->connections));
		WRITE_ONCE(peer->remote_seq, be32_to_cpu(rep->seq));
		/* Unknown bits are a newer member's business: ignore them. */
		WRITE_ONCE(peer->remote_flags, be32_to_cpu(rep->flags) & KNBD_LOAD_F_KNOWN);
		WRITE_ONCE(peer->remote_at, jiffies ?: 1);
		break;
	}
	rcu_read_unlock();
}

/* ---- serving other members (incoming links) ---- */

int knbd_peer_send_reply(struct knbd_conn *conn, struct knbd_req *req,
			 const struct knbd_route_id *rid)
{
	struct {
		struct knbd_peer_hdr hdr;
		struct knbd_peer_io_reply reply;
	} __packed msg = { };
	u32 data = 0;
	int ret;

	if (!req->nbd_err && req->peer_status == KNBD_PEER_OK &&
	    req->cmd.type == KNBD_NBD_CMD_READ)
		data = req->cmd.len;
	knbd_peer_encode_hdr(&msg.hdr, KNBD_PEER_IO_REPLY, sizeof(msg.reply) + data);
	msg.reply.cookie = cpu_to_be64(req->cmd.cookie);
	msg.reply.error = cpu_to_be32(req->nbd_err);
	msg.reply.status = cpu_to_be32(req->peer_status);
	msg.reply.epoch = cpu_to_be64(rid->epoch);
	msg.reply.checksum = cpu_to_be32(rid->checksum);

	mutex_lock(&conn->send_lock);
	ret = knbd_send(conn->sock, &msg, sizeof(msg), data ? MSG_MORE : 0);
	if (!ret && data) {
		struct iov_iter iter;

		iov_iter_bvec(&iter, ITER_SOURCE, req->bvec, req->nr_bvec, data);
		ret = knbd_send_iter(conn->sock, &iter, 0);
	}
	mutex_unlock(&conn->send_lock);
	if (ret)
		kernel_sock_shutdown(conn->sock, SHUT_RDWR);
	return ret;
}

static void knbd_volume_route_id(struct knbd_volume *vol, struct knbd_route_id *rid)
{
	struct knbd_route *rt;

	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	rid->epoch = rt ? rt->epoch : 0;
	rid->checksum = rt ? rt->checksum : 0;
	rcu_read_unlock();
}

/* Answer a piece we will not serve, after reading and dropping its payload. */
static int knbd_peer_refuse(struct knbd_conn *conn, struct knbd_req *tmp,
			    struct knbd_volume *vol)
{
	struct knbd_route_id rid = { };
	int ret;

	ret = knbd_drain(conn, knbd_proto_payload_len(&tmp->cmd));
	if (ret)
		return ret;
	if (vol)
		knbd_volume_route_id(vol, &rid);
	return knbd_peer_send_reply(conn, tmp, &rid);
}

/* Decide whether this member serves the piece; returns a KNBD_PEER_* status. */
static u32 knbd_peer_check(struct knbd_conn *conn, struct knbd_volume *vol,
			   const struct knbd_cmd *cmd, u64 epoch, u32 checksum,
			   u32 *nbd_err)
{
	struct knbd_route *rt;
	u32 status = KNBD_PEER_OK;

	*nbd_err = 0;
	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	if (!rt || rt->epoch != epoch || rt->checksum != checksum) {
		status = KNBD_PEER_EPOCH_MISMATCH;
		atomic64_inc(&vol->stats.epoch_mismatches);
		pr_warn_ratelimited("volume %s: member %u forwards with epoch %llu/%08x, ours is %llu/%08x: refusing\n",
				    config_item_name(&vol->group.cg_item), conn->peer_id,
				    epoch, checksum, rt ? rt->epoch : 0,
				    rt ? rt->checksum : 0);
	} else if (cmd->type != KNBD_NBD_CMD_FLUSH &&
		   (cmd->offset > vol->info.size ||
		    cmd->len > vol->info.size - cmd->offset ||
		    !knbd_route_owns(rt, cmd->offset, cmd->len, conn->node->node_id))) {
		status = KNBD_PEER_NOT_OWNER;
		pr_warn_ratelimited("volume %s: member %u sent a piece we do not own (offset %llu len %u)\n",
				    config_item_name(&vol->group.cg_item), conn->peer_id,
				    cmd->offset, cmd->len);
	}
	rcu_read_unlock();
	if (status == KNBD_PEER_OK &&
	    knbd_proto_check_request(cmd, &vol->info, nbd_err) != KNBD_REQ_OK &&
	    !*nbd_err)
		*nbd_err = KNBD_NBD_EINVAL;
	return status;
}

/* Receive loop of a connection from another member. */
void knbd_peer_serve(struct knbd_conn *conn)
{
	struct knbd_node *node = conn->node;
	struct knbd_peer_hdr hdr;
	struct knbd_peer_io io;
	struct knbd_req tmp = { };
	struct knbd_volume *vol;
	struct knbd_req *req;
	u32 len, checksum, group, mem;
	u16 type, name_len;
	u64 epoch;

	if (knbd_recv_hello(conn->sock, &conn->peer_id, &group))
		return;
	if (group != node->group_id) {
		pr_warn_ratelimited("node %s: member %u from %pISpc is in group %u, not %u\n",
				    config_item_name(&node->group.cg_item),
				    conn->peer_id, &conn->peer, group, node->group_id);
		return;
	}
	if (knbd_send_hello(conn->sock, node))
		return;
	knbd_sock_set_rcvtimeo(conn->sock, MAX_SCHEDULE_TIMEOUT);
	WRITE_ONCE(conn->state, KNBD_CONN_TRANSMISSION);

	for (;;) {
		if (knbd_recv(conn->sock, &hdr, sizeof(hdr)))
			return;
		if (knbd_peer_decode_hdr(&hdr, &type, &len))
			goto bad;
		if (type == KNBD_PEER_LOAD) {
			struct knbd_peer_load rep;

			if (len != sizeof(rep))
				goto bad;
			if (knbd_recv(conn->sock, &rep, sizeof(rep)))
				return;
			if (be32_to_cpu(rep.node_id) != conn->peer_id)
				goto bad;
			knbd_peer_got_load(node, &rep);
			continue;
		}
		if (type != KNBD_PEER_IO || len < sizeof(io))
			goto bad;
		if (knbd_recv(conn->sock, &io, sizeof(io)))
			return;
		if (knbd_peer_decode_io(&io, len, &tmp.cmd, &epoch, &checksum, &name_len))
			goto bad;
		if (knbd_recv(conn->sock, conn->buf, name_len))
			return;

		vol = knbd_node_get_volume(node, conn->buf, name_len);
		tmp.peer_status = KNBD_PEER_NO_VOLUME;
		tmp.nbd_err = KNBD_NBD_EIO;
		if (vol)
			tmp.peer_status = knbd_peer_check(conn, vol, &tmp.cmd, epoch,
							  checksum, &tmp.nbd_err);
		if (tmp.peer_status != KNBD_PEER_OK || tmp.nbd_err) {
			int ret = knbd_peer_refuse(conn, &tmp, vol);

			if (vol)
				knbd_volume_put_user(vol);
			if (ret)
				return;
			continue;
		}

		mem = knbd_cmd_mem_bytes(&tmp.cmd);
		wait_event(conn->wait, knbd_conn_has_room(conn, mem));
		req = knbd_req_alloc(conn, &tmp.cmd);
		if (!req) {
			knbd_conn_unreserve(conn, mem);
			tmp.nbd_err = KNBD_NBD_ENOMEM;
			if (knbd_peer_refuse(conn, &tmp, vol)) {
				knbd_volume_put_user(vol);
				return;
			}
			knbd_volume_put_user(vol);
			continue;
		}
		req->vol = vol;		/* the request now owns the user reference */
		if (tmp.cmd.type == KNBD_NBD_CMD_WRITE) {
			struct iov_iter iter;

			iov_iter_bvec(&iter, ITER_DEST, req->bvec, req->nr_bvec,
				      tmp.cmd.len);
			if (knbd_recv_iter(conn->sock, &iter)) {
				knbd_req_free(req);
				knbd_volume_put_user(vol);
				knbd_conn_unreserve(conn, mem);
				return;
			}
		}
		atomic64_inc(&vol->stats.peer_ios);
		kref_get(&conn->ref);
		knbd_io_submit(req);
	}
bad:
	pr_warn_ratelimited("node %s: bad frame from member %u (%pISpc), closing\n",
			    config_item_name(&node->group.cg_item), conn->peer_id,
			    &conn->peer);
}
