// SPDX-License-Identifier: GPL-2.0
/*
 * Graceful close of an NBD connection: how the connection manager (or an
 * admin, through configfs) moves a client away without failing its I/O.
 *
 * The drain is a state machine run by the connection's io_work after each
 * round and on its timer (knbd_drain_tick()):
 *
 *   READING  serve what the client has already sent; at the first request
 *            boundary with nothing queued, stop reading and hold the replies;
 *   QUIET    wait KNBD_DRAIN_QUIET_MS for stragglers (a request provoked by
 *            a reply that left just before): one arrives, serve it (READING);
 *   GATHER   hold the replies until every request read has its reply ready;
 *   SENDING  let them all go into the corked socket, where they wait for the
 *            reset; something new queued meanwhile: serve it too (READING);
 *   CLOSING  uncork, and reset the connection right behind the replies once
 *            they have left; a request read meanwhile is served (READING,
 *            corked again) until KNBD_DRAIN_LATE_TIME, then counted and
 *            never executed.
 *
 * Reading with the replies flowing stops after KNBD_DRAIN_READ_TIME
 * whatever happens (a busy client never pauses).  Why a reset and not a
 * FIN: nbd.ko marks a connection dead only when its receiver reads the
 * end of the stream, after completing the replies before it, and each
 * completion may put a new request on the half-closed socket, which still
 * sends; that request would wait for the client's timeout.  The reset
 * arrives with the replies and closes the client's socket at once: the
 * replies already queued there are still read, and a request sent after
 * it fails to send, which nbd.ko requeues on another connection at once.
 * A request that slips in between the last check and the reset is counted
 * (drain_dropped); the client retries it after its timeout.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include "knbd.h"

/* At a request boundary: nothing of a request half read, none waiting for room. */
static bool knbd_drain_boundary(struct knbd_conn *conn)
{
	return conn->nbd.phase == KNBD_NBD_REQ_HDR && conn->rcv_state == KNBD_RCV_BUF &&
	       !conn->rcv_off;
}

static bool knbd_drain_may_read_more(struct knbd_conn *conn, unsigned long now)
{
	return knbd_sock_has_data(conn->sock) &&
	       time_before(now, conn->nbd.drain_at + KNBD_DRAIN_READ_TIME);
}

/* Replies held: every request read has finished and waits on the send list. */
static bool knbd_drain_replies_ready(struct knbd_conn *conn)
{
	return conn->nr_ready >= conn->inflight;
}

/* Serve what came: read again, replies flow again. */
static void knbd_drain_read_again(struct knbd_conn *conn)
{
	conn->replies_held = false;
	conn->snd_at = jiffies;
	conn->nbd.drain = KNBD_DRAIN_READING;
	knbd_nbd_next_request(conn);
	knbd_conn_kick(conn);
}

static void knbd_drain_hold(struct knbd_conn *conn, enum knbd_drain_phase phase,
			    unsigned long until)
{
	conn->replies_held = true;
	conn->rcv_state = KNBD_RCV_STOP;
	conn->nbd.drain = phase;
	conn->nbd.drain_until = until;
}

/* The last step: reset behind the replies; returns what closes the connection. */
static int knbd_drain_close(struct knbd_conn *conn, unsigned long now, unsigned long *next)
{
	struct knbd_nbd_conn *n = &conn->nbd;

	/* Still reading what came after the replies (knbd_drain_drop_request()). */
	if ((knbd_sock_has_data(conn->sock) || conn->rcv_state != KNBD_RCV_BUF ||
	     conn->rcv_off) && conn->rcv_state != KNBD_RCV_STOP &&
	    time_before(now, n->drain_until)) {
		/* arrived between two looks: nothing else would wake io_work */
		if (knbd_sock_has_data(conn->sock))
			knbd_conn_kick(conn);
		*next = n->drain_until;
		return 0;
	}
	if (n->corked) {
		knbd_sock_cork(conn->sock, false);
		n->corked = false;
	}
	if (!knbd_sock_sent_all(conn->sock) && time_before(now, n->drain_until)) {
		*next = now + 1;
		return 0;
	}
	if (!knbd_sock_sent_all(conn->sock))
		pr_info_ratelimited("node %s: client %pISpc: drained connection still has replies unsent after %d s, resetting it\n",
				    knbd_node_name(conn->node), &conn->peer,
				    KNBD_DRAIN_CLOSE_TIME / HZ);
	if (n->dropped) {
		atomic64_add(n->dropped, &conn->node->drain_dropped);
		pr_info_ratelimited("node %s: client %pISpc: %u request(s) sent after the drain left unanswered, for the client to retry\n",
				    knbd_node_name(conn->node), &conn->peer, n->dropped);
	}
	knbd_sock_reset(conn->sock);
	return -ECONNRESET;
}

/*
 * A request header read in CLOSING: serve it (READING again, the replies
 * corked again) rather than leave it to the client's timeout, until
 * KNBD_DRAIN_LATE_TIME.  While the replies were still corked the client
 * sent it before it could see them, and what it can send without answers
 * is bounded by its queue depth: a busy client that never paused still
 * has the requests the last replies before the hold provoked on their way
 * (make bench-balance, heavy4: 4 dropped, each waited the client's 30 s).
 * After the uncork it answers a reply that left before the reset could
 * follow it (the push was deferred): the next round usually resets right
 * behind the replies.
 */
bool knbd_drain_serve_late(struct knbd_conn *conn)
{
	struct knbd_nbd_conn *n = &conn->nbd;

	if (!time_before(jiffies, n->drain_at + KNBD_DRAIN_LATE_TIME))
		return false;
	if (!n->corked) {
		knbd_sock_cork(conn->sock, true);
		n->corked = true;
	}
	atomic64_inc(&conn->node->drain_late);
	conn->replies_held = false;
	conn->snd_at = jiffies;
	n->drain = KNBD_DRAIN_READING;
	return true;
}

/* A request header read in CLOSING: counted, its payload dropped, never run. */
int knbd_drain_drop_request(struct knbd_conn *conn)
{
	struct knbd_cmd cmd;
	u32 payload;

	if (knbd_proto_decode_request(&conn->nbd.hdr.req, &cmd) ||
	    cmd.type == KNBD_NBD_CMD_DISC) {
		conn->rcv_state = KNBD_RCV_STOP;
		return 0;
	}
	conn->nbd.dropped++;
	payload = knbd_proto_payload_len(&cmd);
	if (payload > KNBD_MAX_REQ_BYTES) {
		conn->rcv_state = KNBD_RCV_STOP;
		return 0;
	}
	if (payload) {
		conn->nbd.phase = KNBD_NBD_REQ_DROP;
		knbd_conn_recv_discard(conn, payload);
		return 0;
	}
	knbd_nbd_next_request(conn);
	return 0;
}

int knbd_drain_tick(struct knbd_conn *conn, unsigned long *next)
{
	struct knbd_nbd_conn *n = &conn->nbd;
	unsigned long now = jiffies;

	if (n->drain == KNBD_DRAIN_NONE) {
		if (conn->state != KNBD_CONN_TRANSMISSION)
			return 0;
		n->drain = KNBD_DRAIN_READING;
		n->drain_at = now;
		WRITE_ONCE(conn->state, KNBD_CONN_DRAINING);
	}

	for (;;) {
		switch (n->drain) {
		case KNBD_DRAIN_READING:
			if (!knbd_drain_boundary(conn)) {
				/* Past it, the next boundary comes with a kick, not a tick. */
				if (time_before(now, n->drain_at + KNBD_DRAIN_READ_TIME))
					*next = n->drain_at + KNBD_DRAIN_READ_TIME;
				return 0;
			}
			if (time_after_eq(now, n->drain_at + KNBD_DRAIN_READ_TIME)) {
				knbd_drain_hold(conn, KNBD_DRAIN_GATHER,
						now + KNBD_DRAIN_GATHER_TIME);
				continue;
			}
			/* io_work reads it (data_ready, or the round ran out of budget) */
			if (knbd_sock_has_data(conn->sock))
				return 0;
			knbd_drain_hold(conn, KNBD_DRAIN_QUIET,
					now + msecs_to_jiffies(KNBD_DRAIN_QUIET_MS));
			continue;
		case KNBD_DRAIN_QUIET:
			if (knbd_sock_has_data(conn->sock)) {
				knbd_drain_read_again(conn);
				return 0;
			}
			if (time_before(now, n->drain_until)) {
				*next = n->drain_until;
				return 0;
			}
			n->drain = KNBD_DRAIN_GATHER;
			n->drain_until = now + KNBD_DRAIN_GATHER_TIME;
			continue;
		case KNBD_DRAIN_GATHER:
			/* completions kick io_work: each one brings us back here */
			if (!knbd_drain_replies_ready(conn) && time_before(now, n->drain_until)) {
				*next = n->drain_until;
				return 0;
			}
			if (!knbd_drain_replies_ready(conn))
				pr_info_ratelimited("node %s: client %pISpc: replies of a drained connection still not ready after %d s, sending what is\n",
						    knbd_node_name(conn->node), &conn->peer,
						    KNBD_DRAIN_GATHER_TIME / HZ);
			if (knbd_drain_may_read_more(conn, now)) {
				knbd_drain_read_again(conn);
				return 0;
			}
			knbd_sock_cork(conn->sock, true);
			n->corked = true;
			conn->replies_held = false;
			conn->snd_at = jiffies;
			n->drain = KNBD_DRAIN_SENDING;
			knbd_conn_kick(conn);
			return 0;
		case KNBD_DRAIN_SENDING:
			if (conn->inflight)
				return 0;
			if (knbd_drain_may_read_more(conn, now)) {
				knbd_drain_read_again(conn);
				return 0;
			}
			/*
			 * Straight on to the reset, in this same call: each
			 * round between the last look at the socket and the
			 * reset is a window for a request the client then
			 * waits its timeout for (stock nbd.ko requeues only
			 * what it could not send).
			 */
			n->drain = KNBD_DRAIN_CLOSING;
			n->drain_until = now + KNBD_DRAIN_CLOSE_TIME;
			knbd_nbd_next_request(conn);
			/* what came already woke io_work while it was not reading */
			if (knbd_sock_has_data(conn->sock)) {
				knbd_conn_kick(conn);
				return 0;
			}
			continue;
		case KNBD_DRAIN_CLOSING:
			return knbd_drain_close(conn, now, next);
		default:
			return 0;
		}
	}
}

/*
 * Move a client away gracefully: connection @id stops taking requests once
 * those already queued are read, answers all, then closes (above).
 */
int knbd_conn_drain(struct knbd_node *node, u64 id, bool by_admin)
{
	struct knbd_conn *conn;
	int ret = -ENOENT;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		if (conn->id != id)
			continue;
		if (conn->is_peer)
			ret = -EINVAL;
		else if (READ_ONCE(conn->state) != KNBD_CONN_TRANSMISSION ||
			 READ_ONCE(conn->nbd.drain_req))
			ret = -EBUSY;
		else
			ret = 0;
		if (ret)
			break;
		conn->nbd.by_admin = by_admin;
		/* Whoever drains it: the client may now show that it comes back. */
		knbd_cm_proof_drained(&node->cm_proof, conn->nbd.client_key, jiffies);
		/* by_admin first: io_work reads it once it sees the request */
		smp_store_release(&conn->nbd.drain_req, true);
		knbd_conn_kick(conn);
		atomic64_inc(by_admin ? &node->cm_drains : &node->cm_moves);
		break;
	}
	mutex_unlock(&node->conns_lock);
	return ret;
}
