// SPDX-License-Identifier: GPL-2.0
/*
 * The core: a request executed against a volume, whichever transport it
 * came on.  A request of a partitioned volume is cut by the routing table
 * into pieces, one per run of extents with the same owner; this member's
 * pieces go to the backing store (backing.c), the others to their owners
 * over member links (peer_link.c).  Nothing waits: each piece completes on
 * its own (knbd_piece_done()), and the request completes with its last
 * piece, handing its reply to the transport (knbd_conn_ops::queue_reply).
 * A request from another member is served from this member's store only.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/math64.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>

#include "knbd.h"

#define KNBD_ONSTACK_SEGS	4

void knbd_piece_iter(struct knbd_piece *piece, struct iov_iter *iter, unsigned int dir)
{
	knbd_req_iter(piece->req, iter, dir, piece->data_off + piece->done,
		      piece->len - piece->done);
}

static void knbd_req_complete(struct knbd_req *req)
{
	struct knbd_conn *conn = req->conn;
	struct knbd_volume *vol = req->vol;
	int err = READ_ONCE(req->error);
	u64 lat_ns;

	if (err) {
		atomic64_inc(&vol->stats.errors);
		pr_warn_ratelimited("%s/%s: %s offset %llu len %u failed: %pe\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol),
				    knbd_proto_cmd_name(req->cmd.type),
				    req->cmd.offset, req->cmd.len, ERR_PTR(err));
	}
	req->nbd_err = knbd_proto_errno_to_nbd(err);
	lat_ns = ktime_get_ns() - req->start_ns;
	atomic64_add(lat_ns, &conn->lat_ns);
	if (!conn->is_peer) {
		/* rounded per request: a sum of truncations would drift low */
		atomic64_add(div_u64(lat_ns + NSEC_PER_USEC / 2, NSEC_PER_USEC),
			     &vol->stats.lat_us_sum);
		atomic64_inc(&vol->stats.lat_ops);
	}
	atomic64_inc(&conn->ops);
	atomic64_add(req->cmd.len, &conn->bytes);
	/* The reply needs nothing of the volume: let a disable go on. */
	if (req->own_vol_ref) {
		req->own_vol_ref = false;
		percpu_ref_put(&vol->ref);
	}
	conn->transport->queue_reply(req);
}

/* A piece finished (any context): the request with its last piece. */
void knbd_piece_done(struct knbd_piece *piece, int err)
{
	struct knbd_req *req = piece->req;

	if (err)
		cmpxchg(&req->error, 0, err);
	if (atomic_dec_and_test(&req->pending))
		knbd_req_complete(req);
}

static int knbd_req_set_pieces(struct knbd_req *req, const struct knbd_seg *segs, u32 n)
{
	u32 i;

	if (n <= 1) {
		req->pieces = &req->inline_piece;
	} else {
		req->pieces = kmalloc_array(n, sizeof(*req->pieces), GFP_KERNEL);
		if (!req->pieces)
			return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct knbd_piece *piece = &req->pieces[i];

		piece->req = req;
		piece->offset = segs[i].offset;
		piece->len = segs[i].len;
		piece->owner = segs[i].owner;
		piece->data_off = segs[i].len ? segs[i].offset - req->cmd.offset : 0;
		piece->done = 0;
		piece->err = 0;
	}
	req->nr_pieces = n;
	return 0;
}

/*
 * Cut @req by the current table.  The table may be replaced while the
 * pieces are in flight: they carry the epoch they were cut with, and the
 * owners refuse them if theirs differs.
 */
static int knbd_req_plan(struct knbd_req *req, bool *routed)
{
	struct knbd_seg onstack[KNBD_ONSTACK_SEGS], *segs = onstack;
	const struct knbd_cmd *cmd = &req->cmd;
	u32 node_id = req->conn->node->node_id;
	u32 max = KNBD_ONSTACK_SEGS, n, i;
	struct knbd_route *rt;
	int ret;

	for (;;) {
		rcu_read_lock();
		rt = req->conn->is_peer ? NULL : rcu_dereference(req->vol->route);
		if (!rt) {
			rcu_read_unlock();
			*routed = false;
			onstack[0] = (struct knbd_seg){ cmd->offset, cmd->len, node_id };
			ret = knbd_req_set_pieces(req, onstack, 1);
			break;
		}
		*routed = true;
		req->rid.epoch = rt->epoch;
		req->rid.checksum = rt->checksum;
		if (cmd->type == KNBD_NBD_CMD_FLUSH) {
			/* A flush goes to every member that stores part of the volume. */
			n = rt->nr_members;
			for (i = 0; i < min(n, max); i++)
				segs[i] = (struct knbd_seg){ 0, 0, rt->members[i] };
		} else {
			n = knbd_route_split(rt, cmd->offset, cmd->len, segs, max);
		}
		rcu_read_unlock();
		if (n <= max) {
			ret = knbd_req_set_pieces(req, segs, n);
			break;
		}
		/* Allocating may sleep: out of RCU, then cut again by the current table. */
		if (segs != onstack)
			kfree(segs);
		segs = kmalloc_array(n, sizeof(*segs), GFP_KERNEL);
		if (!segs)
			return -ENOMEM;
		max = n;
	}
	if (segs != onstack)
		kfree(segs);
	return ret;
}

static void knbd_req_forward(struct knbd_req *req, struct knbd_piece *piece)
{
	struct knbd_volume *vol = req->vol;
	struct knbd_peer *peer;
	int ret = -EHOSTUNREACH;

	rcu_read_lock();
	peer = knbd_peer_find(req->conn->node, piece->owner);
	if (peer)
		ret = knbd_peer_forward(peer, piece);
	else
		pr_warn_ratelimited("%s/%s: no link to member %u (owner of offset %llu)\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), piece->owner,
				    piece->offset);
	rcu_read_unlock();
	if (ret)
		knbd_piece_done(piece, ret);
	else
		atomic64_inc(&vol->stats.forwarded_ios);
}

/* io_work of the transport, process context: may allocate, never waits. */
void knbd_req_execute(struct knbd_req *req)
{
	u32 node_id = req->conn->node->node_id;
	struct knbd_vol_stats *st = &req->vol->stats;
	bool routed;
	unsigned int i;
	int ret;

	/* Nothing to move: done (FLUSH has no length and always runs). */
	if (!req->cmd.len && req->cmd.type != KNBD_NBD_CMD_FLUSH) {
		knbd_req_complete(req);
		return;
	}
	ret = knbd_req_plan(req, &routed);
	if (ret) {
		req->error = ret;
		knbd_req_complete(req);
		return;
	}
	atomic_set(&req->pending, req->nr_pieces + 1);
	/* Remote pieces first, so the owners work while we do ours. */
	for (i = 0; i < req->nr_pieces; i++)
		if (req->pieces[i].owner != node_id)
			knbd_req_forward(req, &req->pieces[i]);
	for (i = 0; i < req->nr_pieces; i++) {
		if (req->pieces[i].owner != node_id)
			continue;
		if (routed)
			atomic64_inc(&st->local_ios);
		knbd_backing_submit(&req->pieces[i]);
	}
	if (atomic_dec_and_test(&req->pending))
		knbd_req_complete(req);
}
