// SPDX-License-Identifier: GPL-2.0
/*
 * Outgoing member links: each member opens one link to every configured
 * peer and sends it the pieces of client requests that the peer owns; the
 * peer serves them (peer_serve.c) and answers each with an IO_REPLY.
 *
 * Completion-driven: knbd_peer_forward() only queues a piece under the
 * link's lock and kicks the link's io_work, which sends frames (a WRITE's
 * data from the client's pages, without a copy), reads replies (a READ's
 * data straight into the client's pages) and completes the pieces; nothing
 * waits for a reply.  Every piece has a deadline (the node's io_timeout from
 * when it was queued) that a timer enforces whatever the link does: the
 * first one missed takes the link down.  Whatever ends a link (a bad
 * frame, an error, a missed deadline, the admin) fails every piece on it
 * with EIO, and the link reconnects with exponential backoff unless it is
 * being stopped.  Connecting is non-blocking too: io_work notices the
 * established socket, sends HELLO and waits for the peer's.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/net.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "knbd.h"

static const char * const knbd_peer_state_names[] = {
	[KNBD_PEER_DOWN]	= "down",
	[KNBD_PEER_CONNECTING]	= "connecting",
	[KNBD_PEER_UP]		= "up",
};

const char *knbd_peer_state_name(enum knbd_peer_state state)
{
	return knbd_peer_state_names[state];
}

static void knbd_peer_kick(struct knbd_peer *peer)
{
	queue_work_on(peer->cpu >= 0 ? peer->cpu : WORK_CPU_UNBOUND, knbd_io_wq, &peer->io_work);
}

static void knbd_peer_sk_event(struct sock *sk)
{
	struct knbd_peer *peer;

	read_lock_bh(&sk->sk_callback_lock);
	peer = sk->sk_user_data;
	if (likely(peer))
		knbd_peer_kick(peer);
	read_unlock_bh(&sk->sk_callback_lock);
}

static void knbd_peer_write_space(struct sock *sk)
{
	if (sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		knbd_peer_sk_event(sk);
	}
}

static const struct knbd_sock_cbs knbd_peer_cbs = {
	.data_ready	= knbd_peer_sk_event,
	.write_space	= knbd_peer_write_space,
	.state_change	= knbd_peer_sk_event,
};

/* Deadlines: the oldest piece's (all have the same timeout), HELLO's. */
static void knbd_peer_timer(struct timer_list *t)
{
	struct knbd_peer *peer = from_timer(peer, t, timer);
	struct knbd_piece *oldest;

	spin_lock_bh(&peer->lock);
	oldest = list_first_entry_or_null(&peer->pending, struct knbd_piece, fwd.entry);
	if (oldest && time_after_eq(jiffies, oldest->fwd.deadline))
		peer->expired = true;
	else if (oldest)
		mod_timer(&peer->timer, oldest->fwd.deadline);
	/* An older link's deadline may fire first: HELLO's must stay armed. */
	if (READ_ONCE(peer->state) == KNBD_PEER_CONNECTING &&
	    time_before(jiffies, READ_ONCE(peer->hello_deadline)))
		timer_reduce(&peer->timer, READ_ONCE(peer->hello_deadline));
	spin_unlock_bh(&peer->lock);
	knbd_peer_kick(peer);
}

/* ---- link lifetime ---- */

/* End the current link (io_work, or stop): fail every piece on it. */
static void knbd_peer_link_down(struct knbd_peer *peer, const char *why)
{
	struct knbd_piece *piece, *tmp;
	struct socket *sock;
	bool was_up, stopping;
	LIST_HEAD(dead);

	spin_lock_bh(&peer->lock);
	was_up = peer->link_up;
	peer->link_up = false;
	peer->expired = false;
	list_splice_init(&peer->pending, &dead);
	INIT_LIST_HEAD(&peer->send_queue);
	hash_init(peer->cookies);
	peer->inflight = 0;
	stopping = peer->stopping;
	sock = peer->sock;
	WRITE_ONCE(peer->sock, NULL);
	spin_unlock_bh(&peer->lock);

	if (sock) {
		knbd_sock_unhook(sock, &peer->saved_cbs);
		sock_release(sock);
	}
	peer->snd_piece = NULL;
	peer->rcv_piece = NULL;
	peer->ctl_len = 0;
	peer->ctl_off = 0;
	peer->rcv_off = 0;
	list_for_each_entry_safe(piece, tmp, &dead, fwd.entry) {
		list_del_init(&piece->fwd.entry);
		atomic64_inc(&peer->failed);
		knbd_piece_done(piece, -EIO);
	}
	WRITE_ONCE(peer->state, KNBD_PEER_DOWN);
	if (was_up)
		pr_warn_ratelimited("node %s: peer %s (node %u): link down: %s\n",
				    knbd_node_name(peer->node), knbd_peer_name(peer), peer->node_id,
				    why);
	else if (sock)
		pr_debug("peer %s: connect failed: %s\n", knbd_peer_name(peer), why);
	if (sock && !stopping) {
		queue_delayed_work(knbd_wq, &peer->connect_work,
				   msecs_to_jiffies(peer->backoff_ms));
		peer->backoff_ms = min(peer->backoff_ms * 2, KNBD_PEER_BACKOFF_MAX_MS);
	}
}

static void knbd_peer_connect_work(struct work_struct *work)
{
	struct knbd_peer *peer = container_of(to_delayed_work(work),
					      struct knbd_peer, connect_work);
	struct sockaddr_storage addr = peer->addr;
	struct socket *sock;
	int addrlen, ret;

	if (READ_ONCE(peer->stopping))
		return;
	knbd_sock_addr_port(&addr, peer->port, &addrlen);
	ret = knbd_sock_create(peer->node->net, addr.ss_family, &sock);
	if (ret) {
		queue_delayed_work(knbd_wq, &peer->connect_work,
				   msecs_to_jiffies(peer->backoff_ms));
		return;
	}
	peer->hello_sent = false;
	peer->hello_deadline = jiffies + KNBD_PEER_HELLO_TIMEOUT;
	peer->ctl_len = 0;
	peer->ctl_off = 0;
	peer->rcv_off = 0;
	peer->snd_piece = NULL;
	peer->rcv_piece = NULL;
	memset(peer->bound, 0, sizeof(peer->bound));
	WRITE_ONCE(peer->state, KNBD_PEER_CONNECTING);
	knbd_sock_hook(sock, peer, &knbd_peer_cbs, &peer->saved_cbs);
	ret = kernel_connect(sock, (struct sockaddr *)&addr, addrlen, O_NONBLOCK);
	if (ret && ret != -EINPROGRESS)
		pr_debug("peer %s: connect to %pISpc: %d\n", knbd_peer_name(peer), &addr, ret);

	/* Published last: io_work acts on the socket only from here on. */
	spin_lock_bh(&peer->lock);
	peer->gen++;
	/* pairs with smp_load_acquire() in knbd_peer_io_work() */
	smp_store_release(&peer->sock, sock);
	spin_unlock_bh(&peer->lock);
	timer_reduce(&peer->timer, peer->hello_deadline);
	knbd_peer_kick(peer);
}

/* The socket is connecting: send HELLO once it is up; fail if it will not be. */
static int knbd_peer_connecting(struct knbd_peer *peer, const char **why)
{
	struct sock *sk = peer->sock->sk;

	if (time_after_eq(jiffies, peer->hello_deadline)) {
		*why = "no HELLO in time";
		return -ETIMEDOUT;
	}
	if (sk->sk_state == TCP_CLOSE) {
		*why = "connection refused or unreachable";
		return -ECONNREFUSED;
	}
	if (sk->sk_state != TCP_ESTABLISHED || peer->hello_sent)
		return 0;
	knbd_auth_nonce(peer->nonce);
	knbd_peer_encode_hello(peer->ctl, peer->node->node_id, peer->node->group_id,
			       knbd_auth_flags(peer->node), peer->nonce, NULL);
	peer->ctl_len = KNBD_PEER_HELLO_FRAME;
	peer->ctl_off = 0;
	peer->hello_sent = true;
	return 0;
}

/*
 * The server's HELLO: it must be the member we meant, in our mode, and
 * prove it holds the group key; then we prove it in turn (AUTH, sent
 * before anything else) and the link is up.
 */
static int knbd_peer_got_hello(struct knbd_peer *peer, const char **why)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)peer->rcv_hdr;
	struct knbd_peer_hello *hello = (struct knbd_peer_hello *)(hdr + 1);
	struct knbd_peer_auth *auth;
	struct knbd_node *node = peer->node;
	u32 id, group, flags, len;
	u16 type;

	if (knbd_peer_decode_hdr(hdr, &type, &len) || type != KNBD_PEER_HELLO ||
	    len != sizeof(*hello) || knbd_peer_decode_hello(hello, &id, &group, &flags)) {
		*why = "bad HELLO";
		return -EPROTO;
	}
	if (id != peer->node_id || group != node->group_id) {
		pr_warn_ratelimited("node %s: peer %s: %pISc is node %u of group %u, expected node %u of group %u\n",
				    knbd_node_name(node), knbd_peer_name(peer), &peer->addr, id,
				    group,
				    peer->node_id, node->group_id);
		*why = "wrong member";
		return -EPROTO;
	}
	if (flags != knbd_auth_flags(node)) {
		pr_warn_ratelimited("node %s: peer %s: %s\n",
				    knbd_node_name(node), knbd_peer_name(peer),
				    flags & KNBD_HELLO_F_INSECURE ?
				    "it has no group key, we have one" :
				    "it has a group key, we have none");
		*why = "group key mismatch";
		return -EACCES;
	}
	if (!knbd_auth_verify(node, true, node->node_id, id, peer->nonce, hello->nonce,
			      hello->mac)) {
		pr_warn_ratelimited("node %s: peer %s (%pISc) failed authentication: not our group key\n",
				    knbd_node_name(node), knbd_peer_name(peer), &peer->addr);
		*why = "authentication failed";
		return -EACCES;
	}
	hdr = (struct knbd_peer_hdr *)peer->ctl;
	auth = (struct knbd_peer_auth *)(hdr + 1);
	knbd_peer_encode_hdr(hdr, KNBD_PEER_AUTH, sizeof(*auth));
	if (knbd_auth_mac(node, false, node->node_id, id, peer->nonce, hello->nonce,
			  auth->mac)) {
		*why = "cannot compute the MAC";
		return -EIO;
	}
	peer->ctl_len = KNBD_PEER_AUTH_FRAME;
	peer->ctl_off = 0;
	spin_lock_bh(&peer->lock);
	peer->link_up = true;
	spin_unlock_bh(&peer->lock);
	peer->backoff_ms = KNBD_PEER_BACKOFF_MIN_MS;
	atomic64_inc(&peer->connects);
	WRITE_ONCE(peer->state, KNBD_PEER_UP);
	pr_info("node %s: peer %s (node %u): link up to %pISc port %u\n",
		knbd_node_name(peer->node), knbd_peer_name(peer),
		peer->node_id, &peer->addr, peer->port);
	return 0;
}

/* ---- forwarding ---- */

/*
 * Send one piece to its owner.  Once this returns 0 the piece's completion
 * always comes, from a reply or from the link failing; -EHOSTUNREACH: no
 * link now, the caller completes it.  Called under rcu_read_lock()
 * (knbd_peer_find()), so it never sleeps.
 */
int knbd_peer_forward(struct knbd_peer *peer, struct knbd_piece *piece)
{
	struct knbd_volume *vol = piece->req->vol;
	/* The node's io_timeout: how long a client may wait for anything. */
	unsigned long deadline = jiffies + READ_ONCE(peer->node->io_timeout) * HZ;

	spin_lock_bh(&peer->lock);
	if (peer->stopping || !peer->link_up) {
		spin_unlock_bh(&peer->lock);
		return -EHOSTUNREACH;
	}
	piece->fwd.peer = peer;
	piece->fwd.cookie = ++peer->next_cookie;
	piece->fwd.deadline = deadline;
	piece->fwd.handle = vol->vid;
	piece->fwd.vol_gen = vol->gen;
	piece->fwd.status = KNBD_PEER_OK;
	hash_add(peer->cookies, &piece->fwd.hnode, piece->fwd.cookie);
	list_add_tail(&piece->fwd.entry, &peer->pending);
	list_add_tail(&piece->fwd.send_entry, &peer->send_queue);
	peer->inflight++;
	if (peer->inflight > peer->inflight_max)
		peer->inflight_max = peer->inflight;
	spin_unlock_bh(&peer->lock);
	atomic64_inc(&peer->forwarded);
	timer_reduce(&peer->timer, deadline);
	knbd_peer_kick(peer);
	return 0;
}

/* Best effort: a report that cannot go now is replaced by the next one. */
void knbd_peer_send_load(struct knbd_peer *peer, u64 load, u32 conns, u32 seq,
			 u32 flags)
{
	bool up;

	spin_lock_bh(&peer->lock);
	up = peer->link_up;
	if (up) {
		peer->load_out.node_id = cpu_to_be32(peer->node->node_id);
		peer->load_out.seq = cpu_to_be32(seq);
		peer->load_out.load = cpu_to_be64(load);
		peer->load_out.connections = cpu_to_be32(conns);
		peer->load_out.flags = cpu_to_be32(flags);
		peer->load_dirty = true;
	}
	spin_unlock_bh(&peer->lock);
	if (up)
		knbd_peer_kick(peer);
}

/* Record a member's report in our link to it (the member transport got it). */
void knbd_peer_got_load(struct knbd_node *node, const struct knbd_peer_load *rep)
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

/* ---- io_work: send ---- */

static int knbd_peer_send_ctl(struct knbd_peer *peer, bool more)
{
	int ret;

	while (peer->ctl_off < peer->ctl_len) {
		ret = knbd_sock_send(peer->sock, peer->ctl + peer->ctl_off,
				     peer->ctl_len - peer->ctl_off, more);
		if (ret < 0)
			return ret;
		peer->ctl_off += ret;
	}
	peer->ctl_len = 0;
	peer->ctl_off = 0;
	return 0;
}

/* A load report, if one waits and the control buffer is free. */
static bool knbd_peer_prepare_load(struct knbd_peer *peer)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)peer->ctl;
	bool dirty;

	spin_lock_bh(&peer->lock);
	dirty = peer->load_dirty;
	if (dirty) {
		memcpy(hdr + 1, &peer->load_out, sizeof(peer->load_out));
		peer->load_dirty = false;
	}
	spin_unlock_bh(&peer->lock);
	if (!dirty)
		return false;
	knbd_peer_encode_hdr(hdr, KNBD_PEER_LOAD, sizeof(struct knbd_peer_load));
	peer->ctl_len = sizeof(*hdr) + sizeof(struct knbd_peer_load);
	peer->ctl_off = 0;
	return true;
}

/* BIND the piece's volume first if this socket has not seen it yet. */
static void knbd_peer_prepare_bind(struct knbd_peer *peer, struct knbd_piece *piece)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)peer->ctl;
	struct knbd_peer_bind *bind = (struct knbd_peer_bind *)(hdr + 1);
	const char *name = config_item_name(&piece->req->vol->group.cg_item);
	u16 len = min_t(size_t, strlen(name), KNBD_PEER_MAX_NAME);
	u32 handle = piece->fwd.handle;

	if (peer->bound[handle] == piece->fwd.vol_gen)
		return;
	knbd_peer_encode_hdr(hdr, KNBD_PEER_BIND, sizeof(*bind) + len);
	bind->handle = cpu_to_be32(handle);
	bind->name_len = cpu_to_be16(len);
	bind->reserved = 0;
	memcpy(bind + 1, name, len);
	peer->ctl_len = sizeof(*hdr) + sizeof(*bind) + len;
	peer->ctl_off = 0;
	peer->bound[handle] = piece->fwd.vol_gen;
}

static void knbd_peer_encode_io(struct knbd_peer *peer, struct knbd_piece *piece)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)peer->snd_hdr;
	struct knbd_peer_io *io = (struct knbd_peer_io *)(hdr + 1);
	const struct knbd_req *req = piece->req;
	u32 payload = req->cmd.type == KNBD_NBD_CMD_WRITE ? piece->len : 0;

	knbd_peer_encode_hdr(hdr, KNBD_PEER_IO, sizeof(*io) + payload);
	io->cookie = cpu_to_be64(piece->fwd.cookie);
	io->epoch = cpu_to_be64(req->rid.epoch);
	io->checksum = cpu_to_be32(req->rid.checksum);
	io->cmd = cpu_to_be16(req->cmd.type);
	io->flags = cpu_to_be16(req->cmd.flags);
	io->offset = cpu_to_be64(piece->offset);
	io->len = cpu_to_be32(piece->len);
	io->handle = cpu_to_be32(piece->fwd.handle);
}

static struct knbd_piece *knbd_peer_next_piece(struct knbd_peer *peer)
{
	struct knbd_piece *piece;

	spin_lock_bh(&peer->lock);
	piece = list_first_entry_or_null(&peer->send_queue, struct knbd_piece,
					 fwd.send_entry);
	if (piece)
		list_del_init(&piece->fwd.send_entry);
	spin_unlock_bh(&peer->lock);
	return piece;
}

static bool knbd_peer_more_to_send(struct knbd_peer *peer)
{
	return !list_empty(&peer->send_queue);	/* a hint, lockless */
}

/* The rest of the current piece: its frame, then a WRITE's data. */
static int knbd_peer_send_piece(struct knbd_peer *peer, bool more)
{
	struct knbd_piece *piece = peer->snd_piece;
	const struct knbd_req *req = piece->req;
	u32 hdr_len = sizeof(peer->snd_hdr);
	u32 payload = req->cmd.type == KNBD_NBD_CMD_WRITE ? piece->len : 0;
	int ret;

	while (peer->snd_off < hdr_len + payload) {
		if (peer->snd_off < hdr_len)
			ret = knbd_sock_send(peer->sock, peer->snd_hdr + peer->snd_off,
					     hdr_len - peer->snd_off, payload || more);
		else
			ret = knbd_sock_send_pages(peer->sock, req->bvec,
						   piece->data_off + peer->snd_off - hdr_len,
						   hdr_len + payload - peer->snd_off, more);
		if (ret < 0)
			return ret;
		peer->snd_off += ret;
	}
	peer->snd_piece = NULL;
	return 0;
}

static int knbd_peer_try_send(struct knbd_peer *peer, int budget, int *ops)
{
	int ret, progress = 0;

	if (!peer->hello_sent)
		return 0;
	while (budget-- > 0) {
		if (peer->ctl_len) {
			ret = knbd_peer_send_ctl(peer, peer->snd_piece ||
						 knbd_peer_more_to_send(peer));
			if (ret)
				return ret == -EAGAIN ? progress : ret;
		}
		if (READ_ONCE(peer->state) != KNBD_PEER_UP)
			return progress;
		if (!peer->snd_piece) {
			if (knbd_peer_prepare_load(peer))
				continue;
			peer->snd_piece = knbd_peer_next_piece(peer);
			if (!peer->snd_piece)
				return progress;
			peer->snd_off = 0;
			knbd_peer_encode_io(peer, peer->snd_piece);
			knbd_peer_prepare_bind(peer, peer->snd_piece);
			if (peer->ctl_len)
				continue;
		}
		ret = knbd_peer_send_piece(peer, budget > 0 && knbd_peer_more_to_send(peer));
		if (ret)
			return ret == -EAGAIN ? progress : ret;
		progress = 1;
		(*ops)++;
	}
	return 1;
}

/* ---- io_work: receive ---- */

/* A piece's reply is in (and its data, if any): complete it. */
static void knbd_peer_finish(struct knbd_peer *peer, struct knbd_piece *piece, u32 nbd_err)
{
	struct knbd_volume *vol = piece->req->vol;
	int err = 0;

	spin_lock_bh(&peer->lock);
	list_del_init(&piece->fwd.entry);
	peer->inflight--;
	spin_unlock_bh(&peer->lock);

	switch (piece->fwd.status) {
	case KNBD_PEER_OK:
		err = knbd_proto_nbd_to_errno(nbd_err);
		break;
	case KNBD_PEER_EPOCH_MISMATCH:
		atomic64_inc(&vol->stats.epoch_mismatches);
		atomic64_inc(&peer->mismatches);
		pr_warn_ratelimited("%s/%s: member %u has routing epoch %llu, ours is %llu: not forwarding\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), peer->node_id,
				    piece->fwd.remote_epoch, piece->req->rid.epoch);
		err = -EIO;
		break;
	case KNBD_PEER_NO_VOLUME:
		/* bind again next time: the peer may have it by then */
		peer->bound[piece->fwd.handle] = 0;
		fallthrough;
	default:
		err = -EIO;
		break;
	}
	knbd_piece_done(piece, err);
}

static struct knbd_piece *knbd_peer_take(struct knbd_peer *peer, u64 cookie)
{
	struct knbd_piece *piece;

	spin_lock_bh(&peer->lock);
	hash_for_each_possible(peer->cookies, piece, fwd.hnode, cookie) {
		if (piece->fwd.cookie == cookie) {
			hash_del(&piece->fwd.hnode);
			spin_unlock_bh(&peer->lock);
			return piece;
		}
	}
	spin_unlock_bh(&peer->lock);
	return NULL;
}

static int knbd_peer_got_reply(struct knbd_peer *peer, const char **why)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)peer->rcv_hdr;
	struct knbd_peer_io_reply *r = (struct knbd_peer_io_reply *)(hdr + 1);
	struct knbd_piece *piece;
	u32 len, err, status;
	u16 type;

	if (knbd_peer_decode_hdr(hdr, &type, &len) || type != KNBD_PEER_IO_REPLY ||
	    len < sizeof(*r)) {
		*why = "bad frame";
		return -EPROTO;
	}
	piece = knbd_peer_take(peer, be64_to_cpu(r->cookie));
	if (!piece) {
		*why = "reply with an unknown cookie";
		return -EPROTO;
	}
	/* Still (to be) sent from its pages: no reply can be due yet. */
	if (piece == peer->snd_piece || !list_empty(&piece->fwd.send_entry)) {
		*why = "reply to a piece not sent yet";
		return -EPROTO;
	}
	err = be32_to_cpu(r->error);
	status = be32_to_cpu(r->status);
	piece->fwd.status = status;
	piece->fwd.remote_epoch = be64_to_cpu(r->epoch);
	if (knbd_peer_check_reply(len, err, status, piece->req->cmd.type, piece->len)) {
		*why = "reply of the wrong length";
		return -EPROTO;		/* link down fails the piece, still pending */
	}
	peer->rcv_off = 0;
	if (len > sizeof(*r)) {
		peer->rcv_piece = piece;
		peer->rcv_data_off = 0;
		return 0;
	}
	knbd_peer_finish(peer, piece, err);
	return 0;
}

static int knbd_peer_recv_data(struct knbd_peer *peer)
{
	struct knbd_piece *piece = peer->rcv_piece;
	struct iov_iter iter;
	int ret;

	knbd_req_iter(piece->req, &iter, ITER_DEST, piece->data_off + peer->rcv_data_off,
		      piece->len - peer->rcv_data_off);
	ret = knbd_sock_recv_iter(peer->sock, &iter);
	if (ret < 0)
		return ret;
	peer->rcv_data_off += ret;
	if (peer->rcv_data_off == piece->len) {
		peer->rcv_piece = NULL;
		knbd_peer_finish(peer, piece, 0);
	}
	return 0;
}

static int knbd_peer_try_recv(struct knbd_peer *peer, int budget, int *ops,
			      const char **why)
{
	bool up = READ_ONCE(peer->state) == KNBD_PEER_UP;
	u32 want = up ? sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_io_reply) :
		   KNBD_PEER_HELLO_FRAME;
	int ret, progress = 0;

	if (!peer->hello_sent)
		return 0;
	while (budget-- > 0) {
		if (peer->rcv_piece) {
			ret = knbd_peer_recv_data(peer);
		} else {
			ret = knbd_sock_recv(peer->sock, peer->rcv_hdr + peer->rcv_off,
					     want - peer->rcv_off);
			if (ret > 0) {
				peer->rcv_off += ret;
				ret = 0;
				if (peer->rcv_off == want && up) {
					ret = knbd_peer_got_reply(peer, why);
				} else if (peer->rcv_off == want) {
					peer->rcv_off = 0;
					ret = knbd_peer_got_hello(peer, why);
					if (!ret)
						return 1;	/* sending may start */
				}
			}
		}
		if (ret == -EAGAIN)
			return progress;
		if (ret < 0) {
			if (!*why)
				*why = ret == -ENODATA || ret == -ECONNRESET ?
				       "connection closed" : "receive error";
			return ret;
		}
		progress = 1;
		(*ops)++;
	}
	return 1;
}

static void knbd_peer_io_work(struct work_struct *w)
{
	struct knbd_peer *peer = container_of(w, struct knbd_peer, io_work);
	const char *why = NULL;
	int ret, ops = 0;
	bool pending;

	if (READ_ONCE(peer->stopping)) {
		knbd_peer_link_down(peer, "stopped");
		return;
	}
	/* pairs with knbd_peer_connect_work(): the socket's state is set up */
	if (!smp_load_acquire(&peer->sock))
		return;
	if (READ_ONCE(peer->expired)) {
		why = "no reply within the I/O timeout";
		goto down;
	}
	if (READ_ONCE(peer->state) == KNBD_PEER_CONNECTING &&
	    knbd_peer_connecting(peer, &why))
		goto down;
	do {
		pending = false;
		ret = knbd_peer_try_recv(peer, KNBD_RECV_BUDGET, &ops, &why);
		if (ret < 0)
			goto down;
		pending |= ret > 0;
		ret = knbd_peer_try_send(peer, KNBD_SEND_BUDGET, &ops);
		if (ret < 0) {
			why = "send error";
			goto down;
		}
		pending |= ret > 0;
	} while (pending && ops < KNBD_IO_WORK_BUDGET);
	if (pending)
		knbd_peer_kick(peer);
	return;
down:
	knbd_peer_link_down(peer, why);
}

/* ---- configuration ---- */

void knbd_peer_init(struct knbd_peer *peer, struct knbd_node *node)
{
	peer->node = node;
	peer->port = KNBD_DEFAULT_PEER_PORT;
	peer->cpu = knbd_io_cpu();
	INIT_DELAYED_WORK(&peer->connect_work, knbd_peer_connect_work);
	INIT_WORK(&peer->io_work, knbd_peer_io_work);
	timer_setup(&peer->timer, knbd_peer_timer, 0);
	spin_lock_init(&peer->lock);
	INIT_LIST_HEAD(&peer->pending);
	INIT_LIST_HEAD(&peer->send_queue);
	hash_init(peer->cookies);
}

/* Called with state_lock held when the node is enabled. */
void knbd_peer_start(struct knbd_peer *peer)
{
	lockdep_assert_held(&peer->node->state_lock);
	if (peer->running)
		return;
	spin_lock_bh(&peer->lock);
	peer->stopping = false;
	spin_unlock_bh(&peer->lock);
	peer->running = true;
	peer->backoff_ms = KNBD_PEER_BACKOFF_MIN_MS;
	queue_delayed_work(knbd_wq, &peer->connect_work, 0);
}

/*
 * Stop the link and fail what is on it.  The order matters: no new
 * socket (stopping, connect_work cancelled), no timer, then io_work takes
 * the link down (unhooking the socket: no callback queues it again).
 * An io_work that read stopping just before we set it may still queue a
 * reconnect: connect_work is cancelled again once io_work is idle, or it
 * would run on a peer that knbd_peer_drop() frees next.
 */
void knbd_peer_stop(struct knbd_peer *peer)
{
	lockdep_assert_held(&peer->node->state_lock);
	if (!peer->running) {
		/* A forwarder that raced an earlier stop may have kicked us since. */
		del_timer_sync(&peer->timer);
		cancel_work_sync(&peer->io_work);
		cancel_delayed_work_sync(&peer->connect_work);
		return;
	}
	spin_lock_bh(&peer->lock);
	peer->stopping = true;
	spin_unlock_bh(&peer->lock);
	cancel_delayed_work_sync(&peer->connect_work);
	del_timer_sync(&peer->timer);
	knbd_peer_kick(peer);
	flush_work(&peer->io_work);
	cancel_work_sync(&peer->io_work);
	knbd_peer_link_down(peer, "stopped");
	cancel_delayed_work_sync(&peer->connect_work);
	del_timer_sync(&peer->timer);
	peer->running = false;
}

/* Is @from the address of the configured peer that is member @node_id? */
bool knbd_peer_addr_match(struct knbd_node *node, u32 node_id,
			  const struct sockaddr_storage *from)
{
	struct knbd_peer *peer;
	bool ok;

	rcu_read_lock();
	peer = knbd_peer_find(node, node_id);
	ok = peer && knbd_sock_addr_eq(&peer->addr, from);
	rcu_read_unlock();
	return ok;
}

/* The link to member @node_id; the caller holds rcu_read_lock(). */
struct knbd_peer *knbd_peer_find(struct knbd_node *node, u32 node_id)
{
	struct knbd_peer *peer;

	list_for_each_entry_rcu(peer, &node->peers, node_entry)
		if (peer->node_id == node_id)
			return peer;
	return NULL;
}
