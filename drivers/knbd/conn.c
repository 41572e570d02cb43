// SPDX-License-Identifier: GPL-2.0
/*
 * The connection engine, shared by the NBD transport (nbd.c) and the member
 * transport (peer_serve.c), modelled on nvmet-tcp's queue.
 *
 * One io_work per connection does all of its socket I/O with MSG_DONTWAIT,
 * queued by sk_data_ready / sk_write_space on the CPU the packets arrive
 * on, with per-round budgets; no thread ever blocks on a socket.  The
 * receive side reads what the transport asks for next (a header into a
 * buffer, a WRITE payload straight into the pages that go to the backing
 * store, a refused payload to drop) and hands each complete piece up.
 * Requests come from a pool preallocated when transmission starts; when
 * the pool, the connection's byte budget or the node's (max_inflight_mb)
 * is used up, the connection stops reading its socket and TCP flow control
 * pushes back on the client.  Finished
 * requests come back on a lock-free list from whatever context finished
 * them; io_work sends their replies in batches (MSG_MORE), READ data from
 * the request's pages without a copy.  A timer watches the deadlines, all
 * counted from a fixed point, never pushed back by a trickle of bytes: the
 * handshake (handshake_timeout from accept), a request whose rest does not
 * come within io_timeout of its first byte, a reply not taken within
 * io_timeout of reaching the head of the queue, an idle connection.
 *
 * Teardown: knbd_conn_close() (io_work only) stops the connection and
 * kills the reference of the requests in flight; release_work waits for
 * them, and only then lets the peer see the close (FIN or reset), then
 * frees everything.  Anyone else asks with knbd_conn_shutdown().
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/wait_bit.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "knbd.h"

/* A handshake reply, or any other message that is not a request's reply. */
struct knbd_ctl {
	struct list_head entry;
	u32 len;
	u32 off;
	u8 data[];
};

static const char * const knbd_conn_state_names[] = {
	[KNBD_CONN_HANDSHAKE]		= "handshake",
	[KNBD_CONN_TRANSMISSION]	= "transmission",
	[KNBD_CONN_DRAINING]		= "draining",
	[KNBD_CONN_CLOSING]		= "closing",
};

const char *knbd_conn_state_name(enum knbd_conn_state state)
{
	return knbd_conn_state_names[state];
}

void knbd_conn_kick(struct knbd_conn *conn)
{
	queue_work_on(conn->cpu >= 0 ? conn->cpu : knbd_sock_cpu(conn->sock),
		      knbd_io_wq, &conn->io_work);
}

static void knbd_conn_data_ready(struct sock *sk)
{
	struct knbd_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (likely(conn))
		knbd_conn_kick(conn);
	read_unlock_bh(&sk->sk_callback_lock);
}

static void knbd_conn_write_space(struct sock *sk)
{
	struct knbd_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (likely(conn) && sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		knbd_conn_kick(conn);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

/* The end of the stream, a reset: the next read finds out which. */
static void knbd_conn_state_change(struct sock *sk)
{
	knbd_conn_data_ready(sk);
}

static const struct knbd_sock_cbs knbd_conn_cbs = {
	.data_ready	= knbd_conn_data_ready,
	.write_space	= knbd_conn_write_space,
	.state_change	= knbd_conn_state_change,
};

static void knbd_conn_timer(struct timer_list *t)
{
	struct knbd_conn *conn = from_timer(conn, t, timer);

	knbd_conn_kick(conn);
}

/* Come back by @at at the latest (io_work re-evaluates every deadline). */
void knbd_conn_note_timer(struct knbd_conn *conn, unsigned long at)
{
	timer_reduce(&conn->timer, at);
}

/* ---- receive side ---- */

/* The next read continues the message (a frame's body): @len bytes into @buf. */
void knbd_conn_recv_more(struct knbd_conn *conn, void *buf, u32 len)
{
	conn->rcv_state = KNBD_RCV_BUF;
	conn->rcv_buf = buf;
	conn->rcv_len = len;
	conn->rcv_off = 0;
}

/* The next read: @len bytes into @buf; a new message begins. */
void knbd_conn_recv_into(struct knbd_conn *conn, void *buf, u32 len)
{
	knbd_conn_recv_more(conn, buf, len);
	conn->rcv_msg = false;
}

/*
 * The next reads continue the message, which keeps its deadline: @len
 * bytes to drop, or @req's WRITE payload.
 */
void knbd_conn_recv_discard(struct knbd_conn *conn, u32 len)
{
	conn->rcv_state = KNBD_RCV_DISCARD;
	conn->rcv_left = len;
}

void knbd_conn_recv_data(struct knbd_conn *conn, struct knbd_req *req)
{
	conn->rcv_state = KNBD_RCV_DATA;
	conn->rcv_req = req;
	conn->rcv_off = 0;
}

/* Bytes came: the first of a message starts its clock. */
static void knbd_conn_got_bytes(struct knbd_conn *conn)
{
	conn->rx_at = jiffies;
	if (!conn->rcv_msg) {
		conn->rcv_msg = true;
		conn->rcv_at = conn->rx_at;
	}
}

/*
 * Inside a message: the client owes us all of it within io_timeout of its
 * first byte (or of its admission, when its header waited for room).
 */
static bool knbd_conn_mid_message(struct knbd_conn *conn)
{
	switch (conn->rcv_state) {
	case KNBD_RCV_BUF:
		return conn->rcv_msg;
	case KNBD_RCV_DATA:
	case KNBD_RCV_DISCARD:
		return true;
	default:
		return false;
	}
}

static int knbd_conn_recv_buf(struct knbd_conn *conn)
{
	int ret;

	ret = knbd_sock_recv(conn->sock, conn->rcv_buf + conn->rcv_off,
			     conn->rcv_len - conn->rcv_off);
	if (ret < 0)
		return ret;
	conn->rcv_off += ret;
	knbd_conn_got_bytes(conn);
	if (conn->rcv_off < conn->rcv_len)
		return 0;
	return conn->transport->rcv_done(conn);
}

static int knbd_conn_recv_drop(struct knbd_conn *conn)
{
	int ret;

	ret = knbd_sock_recv(conn->sock, conn->buf,
			     min_t(u32, conn->rcv_left, KNBD_OPT_MAX_PARSE));
	if (ret < 0)
		return ret;
	conn->rcv_left -= ret;
	knbd_conn_got_bytes(conn);
	if (conn->rcv_left)
		return 0;
	return conn->transport->rcv_done(conn);
}

/*
 * Pages for a WRITE payload come as its bytes do, KNBD_RECV_AHEAD ahead at
 * most: a header alone pins no memory.  Out of memory: the payload is
 * dropped and the request answered with ENOMEM (req->error).
 */
static int knbd_conn_recv_payload(struct knbd_conn *conn)
{
	struct knbd_req *req = conn->rcv_req;
	u32 len = req->cmd.len;
	struct iov_iter iter;
	u32 have;
	int ret;

	if (!knbd_sock_has_data(conn->sock) && conn->sock->sk->sk_state == TCP_ESTABLISHED)
		return -EAGAIN;
	have = req->nr_bvec << PAGE_SHIFT;
	if (have < len && have < conn->rcv_off + KNBD_RECV_AHEAD) {
		ret = knbd_req_add_pages(req, min_t(u32, len, conn->rcv_off + KNBD_RECV_AHEAD));
		if (ret) {
			/* rcv_done() answers it when the rest is dropped */
			req->error = ret;
			knbd_conn_recv_discard(conn, len - conn->rcv_off);
			return 0;
		}
		have = req->nr_bvec << PAGE_SHIFT;
	}
	knbd_req_iter(req, &iter, ITER_DEST, conn->rcv_off,
		      min(len, have) - conn->rcv_off);
	ret = knbd_sock_recv_iter(conn->sock, &iter);
	if (ret < 0)
		return ret;
	conn->rcv_off += ret;
	knbd_conn_got_bytes(conn);
	if (conn->rcv_off < len)
		return 0;
	return conn->transport->rcv_done(conn);
}

static bool knbd_conn_room(struct knbd_conn *conn, u32 mem)
{
	if (list_empty(&conn->free_list))
		return false;
	return !conn->inflight || conn->inflight_bytes + mem <= conn->max_bytes;
}

/* ---- the node's payload budget ---- */

static u64 knbd_budget_max(struct knbd_node *node)
{
	return (u64)READ_ONCE(node->max_inflight_mb) << 20;
}

/* The first waiter goes on if what it waits for fits now. */
static void knbd_budget_wake(struct knbd_node *node)
{
	struct knbd_conn *head;

	lockdep_assert_held(&node->budget_lock);
	head = list_first_entry_or_null(&node->budget_waiters, struct knbd_conn,
					budget_entry);
	if (head && node->budget_used - node->budget_floor + head->budget_want <=
		    knbd_budget_max(node))
		knbd_conn_kick(head);
}

/*
 * Admit @mem payload bytes in the node's budget (@take), or only look
 * whether they would fit.  A connection with nothing in flight is always
 * admitted, outside the budget (*floor): no connection starves, and two
 * members serving each other never wait on each other's budgets.  Others
 * take it in turn: while connections wait, only the first may take, so a
 * large request is not passed forever by smaller ones.  One that does not
 * fit queues itself; knbd_budget_put() kicks it when there is room.
 */
static bool knbd_budget_get(struct knbd_conn *conn, u32 mem, bool take, bool *floor)
{
	struct knbd_node *node = conn->node;
	struct knbd_conn *head;
	u64 used;
	bool ok;

	*floor = mem && !conn->inflight;
	if (!mem)
		return true;
	spin_lock(&node->budget_lock);
	head = list_first_entry_or_null(&node->budget_waiters, struct knbd_conn,
					budget_entry);
	used = node->budget_used - node->budget_floor;
	ok = *floor || ((!head || head == conn) && used + mem <= knbd_budget_max(node));
	if (!ok) {
		conn->budget_want = mem;
		if (!conn->budget_waiting) {
			list_add_tail(&conn->budget_entry, &node->budget_waiters);
			conn->budget_waiting = true;
			atomic64_inc(&node->budget_waits);
		}
	} else if (take) {
		node->budget_used += mem;
		if (*floor)
			node->budget_floor += mem;
		else if (used + mem > node->budget_peak)
			node->budget_peak = used + mem;
		if (conn->budget_waiting) {
			list_del_init(&conn->budget_entry);
			conn->budget_waiting = false;
			knbd_budget_wake(node);
		}
	}
	spin_unlock(&node->budget_lock);
	return ok;
}

static void knbd_budget_put(struct knbd_conn *conn, struct knbd_req *req)
{
	struct knbd_node *node = conn->node;

	if (!req->mem)
		return;
	spin_lock(&node->budget_lock);
	node->budget_used -= req->mem;
	if (req->mem_floor)
		node->budget_floor -= req->mem;
	knbd_budget_wake(node);
	spin_unlock(&node->budget_lock);
}

/*
 * No longer waiting (draining, closing): let the next one go.  Only the
 * connection's own io_work links or unlinks it, so budget_waiting needs
 * no lock to be read there.
 */
static void knbd_budget_leave(struct knbd_conn *conn)
{
	struct knbd_node *node = conn->node;

	if (!conn->budget_waiting)
		return;
	spin_lock(&node->budget_lock);
	list_del_init(&conn->budget_entry);
	conn->budget_waiting = false;
	knbd_budget_wake(node);
	spin_unlock(&node->budget_lock);
}

/*
 * Returns > 0 if it made progress and may make more, 0 if it has to wait
 * (nothing to read, no room), < 0 if the connection must close.
 */
static int knbd_conn_try_recv(struct knbd_conn *conn, int budget, int *ops)
{
	int ret, progress = 0;
	bool floor;

	/* A handshake reads its next option once its replies are out. */
	if (conn->state == KNBD_CONN_HANDSHAKE && !list_empty(&conn->ctl_list))
		return 0;
	while (budget-- > 0) {
		switch (conn->rcv_state) {
		case KNBD_RCV_BUF:
			ret = knbd_conn_recv_buf(conn);
			break;
		case KNBD_RCV_DATA:
			ret = knbd_conn_recv_payload(conn);
			break;
		case KNBD_RCV_DISCARD:
			ret = knbd_conn_recv_drop(conn);
			break;
		case KNBD_RCV_ROOM:
			if (!knbd_conn_room(conn, conn->rcv_room) ||
			    !knbd_budget_get(conn, conn->rcv_room, false, &floor))
				return progress;
			/* The wait was ours: the client's clock starts now. */
			conn->rcv_at = jiffies;
			ret = conn->transport->rcv_done(conn);
			break;
		default:
			return progress;
		}
		if (ret == -EAGAIN)
			return progress;
		if (ret == -ENODATA && conn->state != KNBD_CONN_HANDSHAKE &&
		    !knbd_conn_mid_message(conn) &&
		    (conn->inflight || knbd_conn_sending(conn))) {
			/*
			 * The client is done sending, at a request boundary:
			 * answer what it sent, then close.  (Halfway through a
			 * request it can never finish it: close now.)
			 */
			conn->rcv_state = KNBD_RCV_STOP;
			conn->eof = true;
			return progress;
		}
		if (ret < 0)
			return ret;
		progress = 1;
		(*ops)++;
	}
	return progress;
}

/* ---- request pool ---- */

/*
 * The pool, allocated once the connection is known to be real (after GO,
 * after a member's HELLO): @depth requests, @max_bytes of payload.
 */
int knbd_conn_alloc_pool(struct knbd_conn *conn, unsigned int depth, u64 max_bytes)
{
	unsigned int i;

	conn->reqs = kvcalloc(depth, sizeof(*conn->reqs), GFP_KERNEL);
	if (!conn->reqs)
		return -ENOMEM;
	conn->nr_reqs = depth;
	conn->max_bytes = max_bytes;
	for (i = 0; i < depth; i++) {
		conn->reqs[i].conn = conn;
		list_add_tail(&conn->reqs[i].entry, &conn->free_list);
	}
	return 0;
}

/*
 * A request for @cmd from the pool, @mem payload bytes counted in the
 * budget, or NULL: no room now.  The connection then waits in
 * KNBD_RCV_ROOM and calls rcv_done() again once there is room, so the
 * transport runs the same header through the same path.
 */
struct knbd_req *knbd_conn_req_get(struct knbd_conn *conn, const struct knbd_cmd *cmd,
				   u32 mem)
{
	struct knbd_req *req;
	bool floor;

	if (!knbd_conn_room(conn, mem) || !knbd_budget_get(conn, mem, true, &floor)) {
		conn->rcv_state = KNBD_RCV_ROOM;
		conn->rcv_room = mem;
		return NULL;
	}
	req = list_first_entry(&conn->free_list, struct knbd_req, entry);
	list_del(&req->entry);
	req->vol = NULL;
	req->cmd = *cmd;
	req->mem = mem;
	req->mem_floor = floor;
	req->start_ns = ktime_get_ns();
	req->error = 0;
	req->nbd_err = 0;
	req->status = KNBD_PEER_OK;
	req->own_vol_ref = false;
	req->bvec = req->inline_bvec;
	req->nr_bvec = 0;
	req->max_bvec = KNBD_INLINE_BVECS;
	req->nr_pieces = 0;
	req->pieces = NULL;
	req->rid = (struct knbd_route_id){ };
	req->data_len = 0;
	req->hdr_len = 0;
	conn->inflight++;
	conn->inflight_bytes += mem;
	return req;
}

/* Room for the page array of a @len byte payload; the pages come later. */
static int knbd_req_payload(struct knbd_req *req, u32 len)
{
	unsigned int nr = DIV_ROUND_UP(len, PAGE_SIZE);

	if (nr <= KNBD_INLINE_BVECS)
		return 0;
	req->bvec = kvmalloc_array(nr, sizeof(*req->bvec), GFP_KERNEL);
	if (!req->bvec) {
		req->bvec = req->inline_bvec;
		return -ENOMEM;
	}
	req->max_bvec = nr;
	return 0;
}

/* Pages covering the first @upto bytes of the payload (of cmd.len). */
int knbd_req_add_pages(struct knbd_req *req, u32 upto)
{
	u32 len = req->cmd.len;
	int ret;

	if (req->bvec == req->inline_bvec && DIV_ROUND_UP(len, PAGE_SIZE) > KNBD_INLINE_BVECS) {
		ret = knbd_req_payload(req, len);
		if (ret)
			return ret;
	}
	while ((req->nr_bvec << PAGE_SHIFT) < upto) {
		u32 off = req->nr_bvec << PAGE_SHIFT;
		struct page *page = alloc_page(GFP_KERNEL);

		if (!page)
			return -ENOMEM;
		bvec_set_page(&req->bvec[req->nr_bvec++], page,
			      min_t(u32, PAGE_SIZE, len - off), 0);
	}
	return 0;
}

/* All the pages of a READ, before it is executed. */
int knbd_req_alloc_pages(struct knbd_req *req, u32 len)
{
	return knbd_req_add_pages(req, len);
}

/* Back to the pool: the reply has left, or never will. */
static void knbd_conn_req_put(struct knbd_conn *conn, struct knbd_req *req)
{
	unsigned int i;

	/* A member's WRITE cut off in its payload never reached completion. */
	if (req->own_vol_ref) {
		req->own_vol_ref = false;
		percpu_ref_put(&req->vol->ref);
	}
	for (i = 0; i < req->nr_bvec; i++)
		put_page(req->bvec[i].bv_page);
	if (req->bvec != req->inline_bvec)
		kvfree(req->bvec);
	if (req->pieces && req->pieces != &req->inline_piece)
		kfree(req->pieces);
	req->pieces = NULL;
	req->nr_bvec = 0;
	req->bvec = req->inline_bvec;
	conn->inflight--;
	conn->inflight_bytes -= req->mem;
	knbd_budget_put(conn, req);
	list_add(&req->entry, &conn->free_list);
}

/* A reply decided by io_work itself (a refused request): nothing to execute. */
void knbd_conn_reply_now(struct knbd_req *req)
{
	struct knbd_conn *conn = req->conn;

	if (!conn->snd_req && list_empty(&conn->send_list))
		conn->snd_at = jiffies;
	list_add_tail(&req->entry, &conn->send_list);
	conn->nr_ready++;
}

/* Execute @req (core); its reply comes back through ops->queue_reply. */
void knbd_conn_submit(struct knbd_req *req)
{
	percpu_ref_get(&req->conn->ref);
	knbd_req_execute(req);
}

/*
 * The transport encoded @req's reply: hand it to io_work.  Any context,
 * once per submitted request.  The reference goes last: release_work may
 * free the connection as soon as it does.
 */
void knbd_conn_queue_reply(struct knbd_req *req)
{
	struct knbd_conn *conn = req->conn;

	llist_add(&req->lentry, &conn->resp_list);
	knbd_conn_kick(conn);
	percpu_ref_put(&conn->ref);
}

/* ---- send side ---- */

/*
 * Room for a @len byte message to the client that goes before any reply
 * (handshake), queued: the caller fills it in before io_work goes on.
 */
void *knbd_conn_ctl_put(struct knbd_conn *conn, u32 len)
{
	struct knbd_ctl *ctl;

	ctl = kvmalloc(struct_size(ctl, data, len), GFP_KERNEL);
	if (!ctl)
		return NULL;
	ctl->len = len;
	ctl->off = 0;
	if (list_empty(&conn->ctl_list))
		conn->snd_at = jiffies;
	list_add_tail(&ctl->entry, &conn->ctl_list);
	return ctl->data;
}

int knbd_conn_queue_ctl(struct knbd_conn *conn, const void *data, u32 len)
{
	void *p = knbd_conn_ctl_put(conn, len);

	if (!p)
		return -ENOMEM;
	memcpy(p, data, len);
	return 0;
}

/* Move what finished meanwhile to the send list, in the order it finished. */
static void knbd_conn_gather(struct knbd_conn *conn)
{
	struct llist_node *node = llist_del_all(&conn->resp_list);
	struct knbd_req *req, *tmp;

	if (!node)
		return;
	if (!conn->snd_req && list_empty(&conn->send_list))
		conn->snd_at = jiffies;
	node = llist_reverse_order(node);
	llist_for_each_entry_safe(req, tmp, node, lentry) {
		list_add_tail(&req->entry, &conn->send_list);
		conn->nr_ready++;
	}
}

/* Something waits to be sent (held replies do not count). */
bool knbd_conn_sending(struct knbd_conn *conn)
{
	if (!list_empty(&conn->ctl_list))
		return true;
	if (conn->replies_held)
		return false;
	return conn->snd_req || !list_empty(&conn->send_list);
}

static int knbd_conn_send_ctls(struct knbd_conn *conn)
{
	struct knbd_ctl *ctl;
	int ret, progress = 0;

	while ((ctl = list_first_entry_or_null(&conn->ctl_list, struct knbd_ctl, entry))) {
		ret = knbd_sock_send(conn->sock, ctl->data + ctl->off, ctl->len - ctl->off,
				     !list_is_last(&ctl->entry, &conn->ctl_list));
		if (ret < 0)
			return ret == -EAGAIN ? progress : ret;
		ctl->off += ret;
		progress = 1;
		if (ctl->off < ctl->len)
			return 0;
		list_del(&ctl->entry);
		kvfree(ctl);
		/* The next one is first now: its io_timeout starts. */
		conn->snd_at = jiffies;
	}
	return progress;
}

/* Send the rest of @req's reply: header, then its data from the pages. */
static int knbd_conn_send_req(struct knbd_conn *conn, struct knbd_req *req, bool more)
{
	u32 total = req->hdr_len + req->data_len;
	int ret;

	while (conn->snd_off < total) {
		if (conn->snd_off < req->hdr_len)
			ret = knbd_sock_send(conn->sock, req->hdr + conn->snd_off,
					     req->hdr_len - conn->snd_off,
					     req->data_len || more);
		else
			ret = knbd_sock_send_pages(conn->sock, req->bvec,
						   conn->snd_off - req->hdr_len,
						   total - conn->snd_off, more);
		if (ret < 0)
			return ret;
		conn->snd_off += ret;
	}
	return 0;
}

static int knbd_conn_try_send(struct knbd_conn *conn, int budget, int *ops)
{
	struct knbd_req *req;
	int ret, progress;

	progress = knbd_conn_send_ctls(conn);
	if (progress < 0)
		return progress;
	if (!list_empty(&conn->ctl_list))
		return progress;
	knbd_conn_gather(conn);
	if (conn->replies_held)
		return progress;
	while (budget-- > 0) {
		req = conn->snd_req;
		if (!req) {
			if (list_empty(&conn->send_list))
				knbd_conn_gather(conn);
			req = list_first_entry_or_null(&conn->send_list, struct knbd_req, entry);
			if (!req)
				return progress;
			list_del(&req->entry);
			conn->snd_req = req;
			conn->snd_off = 0;
		}
		ret = knbd_conn_send_req(conn, req, budget > 0 && !list_empty(&conn->send_list));
		if (ret == -EAGAIN)
			return progress;
		if (ret < 0)
			return ret;
		conn->snd_req = NULL;
		conn->nr_ready--;
		knbd_conn_req_put(conn, req);
		/* The next reply is first now: its io_timeout starts. */
		conn->snd_at = jiffies;
		progress = 1;
		(*ops)++;
	}
	return 1;
}

/* ---- deadlines ---- */

/* Keep the earliest of the deadlines seen so far in *next. */
static void knbd_conn_arm(unsigned long at, unsigned long *next, bool *armed)
{
	if (!*armed || time_before(at, *next))
		*next = at;
	*armed = true;
}

/*
 * Waiting for the next message, nothing owed either way: a client with
 * nothing in flight, or a member link, whatever it has in flight (it
 * sends LOAD frames all the time, and the budget never holds it for long).
 */
static unsigned long knbd_conn_idle_limit(struct knbd_conn *conn)
{
	if (conn->state != KNBD_CONN_TRANSMISSION || conn->rcv_state != KNBD_RCV_BUF ||
	    conn->rcv_msg)
		return 0;
	if (conn->is_peer)
		return KNBD_PEER_IDLE_TIMEOUT;
	if (conn->inflight || knbd_conn_sending(conn))
		return 0;
	return READ_ONCE(conn->node->idle_timeout) * HZ;
}

static int knbd_conn_check(struct knbd_conn *conn)
{
	struct knbd_node *node = conn->node;
	unsigned long now = jiffies, next = now + MAX_JIFFY_OFFSET;
	unsigned long timeout = READ_ONCE(node->io_timeout) * HZ;
	unsigned long idle;
	bool armed = false;
	int ret;

	if (READ_ONCE(conn->killed))
		return -ESHUTDOWN;
	if (conn->eof && !conn->inflight && !knbd_conn_sending(conn))
		return -ENODATA;
	/* Admitted, or no longer reading: the next waiter may go. */
	if (conn->rcv_state != KNBD_RCV_ROOM)
		knbd_budget_leave(conn);
	if (conn->state == KNBD_CONN_HANDSHAKE) {
		if (time_after_eq(now, conn->hs_deadline)) {
			atomic64_inc(&node->hs_timeouts);
			pr_warn_ratelimited("node %s: %s %pISpc: handshake not done in time, closing\n",
					    knbd_node_name(node), conn->transport->name,
					    &conn->peer);
			return -ETIMEDOUT;
		}
		knbd_conn_arm(conn->hs_deadline, &next, &armed);
	}
	if (knbd_conn_mid_message(conn)) {
		if (time_after_eq(now, conn->rcv_at + timeout)) {
			atomic64_inc(&node->timeouts);
			pr_warn_ratelimited("node %s: %s %pISpc: a request not all sent %lu s after it began, closing\n",
					    knbd_node_name(node), conn->transport->name,
					    &conn->peer,
					    timeout / HZ);
			return -ETIMEDOUT;
		}
		knbd_conn_arm(conn->rcv_at + timeout, &next, &armed);
	}
	if (knbd_conn_sending(conn)) {
		if (time_after_eq(now, conn->snd_at + timeout)) {
			atomic64_inc(&node->timeouts);
			pr_warn_ratelimited("node %s: %s %pISpc: does not read its replies (%u waiting, the first for %lu s), closing\n",
					    knbd_node_name(node), conn->transport->name,
					    &conn->peer,
					    conn->nr_ready, timeout / HZ);
			return -ETIMEDOUT;
		}
		knbd_conn_arm(conn->snd_at + timeout, &next, &armed);
	}
	idle = knbd_conn_idle_limit(conn);
	if (idle) {
		if (time_after_eq(now, conn->rx_at + idle)) {
			atomic64_inc(&node->idle_closes);
			pr_info_ratelimited("node %s: %s %pISpc: idle for %lu s, closing\n",
					    knbd_node_name(node), conn->transport->name,
					    &conn->peer,
					    idle / HZ);
			return -ETIMEDOUT;
		}
		knbd_conn_arm(conn->rx_at + idle, &next, &armed);
	}
	if (conn->transport->tick) {
		unsigned long at = now + MAX_JIFFY_OFFSET;

		ret = conn->transport->tick(conn, &at);
		if (ret)
			return ret;
		if (at != now + MAX_JIFFY_OFFSET)
			knbd_conn_arm(at, &next, &armed);
	}
	if (armed)
		knbd_conn_note_timer(conn, next);
	return 0;
}

/* ---- io_work and teardown ---- */

/* io_work only: stop for good; release_work frees it. */
static void knbd_conn_close(struct knbd_conn *conn, int err)
{
	if (conn->state == KNBD_CONN_CLOSING)
		return;
	WRITE_ONCE(conn->state, KNBD_CONN_CLOSING);
	knbd_budget_leave(conn);
	pr_debug("%s %pISpc (connection %llu): closing: %d\n", conn->transport->name,
		 &conn->peer, conn->id, err);
	/*
	 * Out of time: a reset, not a FIN queued behind replies a client that
	 * does not read would never take, while the socket kept their pages.
	 * Either waits in release_work for the requests in flight.
	 */
	conn->close_reset = err == -ETIMEDOUT;
	percpu_ref_kill(&conn->ref);
	queue_work(knbd_wq, &conn->release_work);
}

/* Closing: replies that still come back are dropped. */
static void knbd_conn_reap(struct knbd_conn *conn)
{
	struct knbd_req *req, *tmp;

	knbd_conn_gather(conn);
	if (conn->snd_req) {
		list_add(&conn->snd_req->entry, &conn->send_list);
		conn->snd_req = NULL;
	}
	list_for_each_entry_safe(req, tmp, &conn->send_list, entry) {
		list_del(&req->entry);
		conn->nr_ready--;
		knbd_conn_req_put(conn, req);
	}
}

static void knbd_conn_io_work(struct work_struct *w)
{
	struct knbd_conn *conn = container_of(w, struct knbd_conn, io_work);
	int ret, ops = 0;
	bool pending;

	if (conn->state == KNBD_CONN_CLOSING) {
		knbd_conn_reap(conn);
		return;
	}
	/* Shut down from outside: admit nothing the socket still holds. */
	if (READ_ONCE(conn->killed)) {
		ret = -ESHUTDOWN;
		goto fail;
	}
	do {
		pending = false;
		ret = knbd_conn_try_recv(conn, KNBD_RECV_BUDGET, &ops);
		if (ret > 0)
			pending = true;
		else if (ret < 0)
			goto fail;
		ret = knbd_conn_try_send(conn, KNBD_SEND_BUDGET, &ops);
		if (ret > 0)
			pending = true;
		else if (ret < 0)
			goto fail;
	} while (pending && ops < KNBD_IO_WORK_BUDGET);

	ret = knbd_conn_check(conn);
	if (ret)
		goto fail;
	if (pending)
		knbd_conn_kick(conn);
	return;
fail:
	knbd_conn_close(conn, ret);
	knbd_conn_reap(conn);
}

static void knbd_conn_ref_release(struct percpu_ref *ref)
{
	struct knbd_conn *conn = container_of(ref, struct knbd_conn, ref);

	complete(&conn->ref_done);
}

static void knbd_conn_free(struct knbd_conn *conn)
{
	if (conn->transport->release)
		conn->transport->release(conn);
	kvfree(conn->reqs);
	kfree(conn->buf);
	percpu_ref_exit(&conn->ref);
	kfree(conn);
}

static void knbd_conn_release_work(struct work_struct *w)
{
	struct knbd_conn *conn = container_of(w, struct knbd_conn, release_work);
	struct knbd_node *node = conn->node;
	struct knbd_volume *vol = conn->vol;
	struct knbd_ctl *ctl, *tmp;

	/* After this nobody finds it to shut it down or drain it. */
	mutex_lock(&node->conns_lock);
	list_del(&conn->node_entry);
	mutex_unlock(&node->conns_lock);
	knbd_sock_unhook(conn->sock, &conn->saved_cbs);
	del_timer_sync(&conn->timer);

	/* Bounded: backing I/O completes, forwarded pieces have deadlines. */
	while (!wait_for_completion_timeout(&conn->ref_done, 60 * HZ))
		pr_warn("node %s: %s %pISpc: closing, still waiting for requests in flight\n",
			knbd_node_name(conn->node), conn->transport->name, &conn->peer);
	/*
	 * Only now may the client see the close.  A client that resends the
	 * requests of a dead connection at once (nbd.ko with patches/nbd,
	 * a multipath initiator) must not have an old WRITE still in the
	 * backing land after the one it sent again, or after the next WRITE
	 * to the same blocks.  The drain has its own reset, after the same.
	 */
	if (conn->close_reset)
		knbd_sock_reset(conn->sock);
	kernel_sock_shutdown(conn->sock, SHUT_RDWR);
	cancel_work_sync(&conn->io_work);
	del_timer_sync(&conn->timer);
	knbd_conn_reap(conn);
	if (conn->rcv_req) {
		knbd_conn_req_put(conn, conn->rcv_req);
		conn->rcv_req = NULL;
	}
	list_for_each_entry_safe(ctl, tmp, &conn->ctl_list, entry)
		kvfree(ctl);
	WARN_ON_ONCE(conn->inflight);
	sock_release(conn->sock);
	knbd_conn_free(conn);

	/* Waiters key on the addresses only; they may free the objects. */
	if (vol)
		knbd_volume_put(vol);
	if (atomic_dec_and_test(&node->nr_conns))
		wake_up_var(&node->nr_conns);
}

/* Ask a connection to close, from outside its io_work. */
void knbd_conn_shutdown(struct knbd_conn *conn)
{
	WRITE_ONCE(conn->killed, true);
	/*
	 * Not a FIN yet (release_work sends it once the requests in flight
	 * are done): only stop reading, which the peer does not see.
	 */
	kernel_sock_shutdown(conn->sock, SHUT_RD);
	knbd_conn_kick(conn);
}

/*
 * A new connection on @sock (accepted, callbacks reset) for transport
 * @ops; it owns the socket from here on, even when this fails.
 */
int knbd_conn_create(struct knbd_node *node, const struct knbd_conn_ops *ops,
		     struct socket *sock)
{
	struct knbd_conn *conn;
	int ret = -ENOMEM;

	conn = kzalloc(sizeof(*conn), GFP_KERNEL);
	if (!conn)
		goto err_sock;
	conn->buf = kmalloc(KNBD_OPT_MAX_PARSE, GFP_KERNEL);
	if (!conn->buf)
		goto err_conn;
	ret = percpu_ref_init(&conn->ref, knbd_conn_ref_release, 0, GFP_KERNEL);
	if (ret)
		goto err_buf;
	init_completion(&conn->ref_done);
	conn->transport = ops;
	conn->node = node;
	conn->sock = sock;
	conn->is_peer = ops->is_peer;
	conn->hs_deadline = jiffies + READ_ONCE(node->handshake_timeout) * HZ;
	conn->rx_at = jiffies;
	conn->cpu = knbd_io_cpu();
	INIT_WORK(&conn->io_work, knbd_conn_io_work);
	INIT_WORK(&conn->release_work, knbd_conn_release_work);
	timer_setup(&conn->timer, knbd_conn_timer, 0);
	init_llist_head(&conn->resp_list);
	INIT_LIST_HEAD(&conn->send_list);
	INIT_LIST_HEAD(&conn->ctl_list);
	INIT_LIST_HEAD(&conn->free_list);
	INIT_LIST_HEAD(&conn->budget_entry);
	if (kernel_getpeername(sock, (struct sockaddr *)&conn->peer) < 0)
		conn->peer.ss_family = AF_UNSPEC;
	/* Replies are batched with MSG_MORE already: Nagle would only add delay. */
	tcp_sock_set_nodelay(sock->sk);
	knbd_sock_keepalive(sock);

	ret = ops->start(conn);
	if (ret)
		goto err_start;

	atomic_inc(&node->nr_conns);
	mutex_lock(&node->conns_lock);
	conn->id = node->next_conn_id++;
	list_add_tail(&conn->node_entry, &node->conns);
	mutex_unlock(&node->conns_lock);

	knbd_sock_hook(sock, conn, &knbd_conn_cbs, &conn->saved_cbs);
	knbd_conn_note_timer(conn, conn->hs_deadline);
	knbd_conn_kick(conn);
	return 0;

err_start:
	if (ops->release)
		ops->release(conn);
	percpu_ref_exit(&conn->ref);
err_buf:
	kfree(conn->buf);
err_conn:
	kfree(conn);
err_sock:
	sock_release(sock);
	return ret;
}
