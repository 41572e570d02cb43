// SPDX-License-Identifier: GPL-2.0
/*
 * The member transport: another member's link to us, over which it sends
 * the pieces of its clients' requests that we own (peer_link.c is the
 * other end).  Driven by the connection engine like an NBD client: frames
 * in, IO_REPLY frames out in completion order, the same request pool,
 * budget and backing I/O.  A piece is served from this member's store
 * only, never forwarded again, so no chain of members can wait on itself.
 *
 * Frames: HELLO and AUTH (once: who the peer is, and its proof that it
 * holds the group key), then LOAD (the peer's load report), BIND (a volume
 * handle for the IO frames that follow) and IO.  Until AUTH has checked,
 * nothing else is read and nothing is allocated.  Anything malformed
 * closes this link only.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/slab.h>

#include "knbd.h"

static void knbd_pserve_next_frame(struct knbd_conn *conn)
{
	conn->pserve.phase = KNBD_PSERVE_HDR;
	knbd_conn_recv_into(conn, &conn->pserve.buf.hdr, sizeof(conn->pserve.buf.hdr));
}

static int knbd_pserve_bad(struct knbd_conn *conn, const char *why)
{
	pr_warn_ratelimited("node %s: bad frame from member %u (%pISpc): %s, closing\n",
			    knbd_node_name(conn->node), conn->peer_id, &conn->peer, why);
	return -EPROTO;
}

static int knbd_pserve_refused(struct knbd_conn *conn, u32 id, const char *why)
{
	pr_warn_ratelimited("node %s: member link from %pISpc (says node %u) refused: %s\n",
			    knbd_node_name(conn->node), &conn->peer, id, why);
	return -EACCES;
}

/*
 * The client's HELLO: a configured peer, from its configured address, in
 * our group and mode.  Answer with our nonce and proof; then only AUTH.
 */
static int knbd_pserve_got_hello(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	struct knbd_node *node = conn->node;
	u8 mac[KNBD_PEER_MAC_LEN];
	u32 id, group, flags;
	void *frame;
	int ret;

	if (knbd_peer_decode_hello(&p->buf.hello, &id, &group, &flags))
		return knbd_pserve_bad(conn, "bad HELLO");
	if (group != node->group_id)
		return knbd_pserve_refused(conn, id, "another group");
	if (!knbd_peer_addr_match(node, id, &conn->peer))
		return knbd_pserve_refused(conn, id, "not a configured peer at that address");
	if (flags != knbd_auth_flags(node))
		return knbd_pserve_refused(conn, id, flags & KNBD_HELLO_F_INSECURE ?
					   "it has no group key" : "we have no group key");
	conn->peer_id = id;
	memcpy(p->client_nonce, p->buf.hello.nonce, KNBD_PEER_NONCE_LEN);
	knbd_auth_nonce(p->server_nonce);
	ret = knbd_auth_mac(node, true, id, node->node_id, p->client_nonce,
			    p->server_nonce, mac);
	if (ret)
		return ret;
	frame = knbd_conn_ctl_put(conn, KNBD_PEER_HELLO_FRAME);
	if (!frame)
		return -ENOMEM;
	knbd_peer_encode_hello(frame, node->node_id, node->group_id, flags,
			       p->server_nonce, mac);
	p->phase = KNBD_PSERVE_AUTH_HDR;
	knbd_conn_recv_into(conn, &p->buf.hdr, sizeof(p->buf.hdr));
	return 0;
}

/* The client's proof: from here on it is the member it said it is. */
static int knbd_pserve_got_auth(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	struct knbd_node *node = conn->node;
	int ret;

	if (!knbd_auth_verify(node, false, conn->peer_id, node->node_id, p->client_nonce,
			      p->server_nonce, p->buf.auth.mac))
		return knbd_pserve_refused(conn, conn->peer_id,
					   "authentication failed: not our group key");
	ret = knbd_conn_alloc_pool(conn, KNBD_PEER_QUEUE_DEPTH, KNBD_PEER_MAX_BYTES);
	if (ret)
		return ret;
	WRITE_ONCE(conn->state, KNBD_CONN_TRANSMISSION);
	pr_info_ratelimited("node %s: member %u authenticated from %pISpc\n",
			    knbd_node_name(node), conn->peer_id, &conn->peer);
	knbd_pserve_next_frame(conn);
	return 0;
}

static int knbd_pserve_got_hdr(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	u32 want;

	if (knbd_peer_decode_hdr(&p->buf.hdr, &p->type, &p->len))
		return knbd_pserve_bad(conn, "bad header");
	switch (p->type) {
	case KNBD_PEER_LOAD:
		if (p->len != sizeof(p->buf.load))
			return knbd_pserve_bad(conn, "LOAD of the wrong length");
		want = sizeof(p->buf.load);
		break;
	case KNBD_PEER_BIND:
		if (p->len <= sizeof(p->buf.bind))
			return knbd_pserve_bad(conn, "BIND too short");
		want = sizeof(p->buf.bind);
		break;
	case KNBD_PEER_IO:
		if (p->len < sizeof(p->buf.io))
			return knbd_pserve_bad(conn, "IO too short");
		want = sizeof(p->buf.io);
		break;
	default:
		return knbd_pserve_bad(conn, "unexpected frame type");
	}
	p->phase = KNBD_PSERVE_BODY;
	knbd_conn_recv_more(conn, &p->buf, want);
	return 0;
}

/* Which of our volumes a handle names: by the name it was bound with. */
static void knbd_pserve_resolve(struct knbd_conn *conn, struct knbd_pserve_bind *b)
{
	struct knbd_node *node = conn->node;
	struct knbd_volume *vol;

	b->gen = 0;
	mutex_lock(&node->lock);
	vol = knbd_volume_find(node, b->name, b->name_len);
	if (vol && vol->enabled) {
		b->vid = vol->vid;
		b->gen = vol->gen;
	}
	mutex_unlock(&node->lock);
}

/*
 * The volume behind @handle, with a reference for the request.  A handle
 * whose volume was disabled or replaced since it was bound is looked up
 * by its name again: the same name may be a volume enabled since.
 */
static struct knbd_volume *knbd_pserve_volume(struct knbd_conn *conn, u32 handle)
{
	struct knbd_pserve_bind *b = &conn->pserve.binds[handle];
	struct knbd_volume *vol;

	if (!b->name_len)
		return NULL;
	vol = b->gen ? knbd_volume_get_by_id(conn->node, b->vid, b->gen) : NULL;
	if (vol)
		return vol;
	knbd_pserve_resolve(conn, b);
	return b->gen ? knbd_volume_get_by_id(conn->node, b->vid, b->gen) : NULL;
}

/* Decide whether this member serves the piece; returns a KNBD_PEER_* status. */
static u32 knbd_pserve_check(struct knbd_conn *conn, struct knbd_req *req,
			     struct knbd_volume *vol)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	const struct knbd_cmd *cmd = &req->cmd;
	u32 status = KNBD_PEER_OK;
	struct knbd_route *rt;

	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	req->rid.epoch = rt ? rt->epoch : 0;
	req->rid.checksum = rt ? rt->checksum : 0;
	if (!rt || rt->epoch != p->epoch || rt->checksum != p->checksum) {
		status = KNBD_PEER_EPOCH_MISMATCH;
		atomic64_inc(&vol->stats.epoch_mismatches);
		pr_warn_ratelimited("%s/%s: member %u forwards with epoch %llu/%08x, ours is %llu/%08x: refusing\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), conn->peer_id,
				    p->epoch, p->checksum,
				    req->rid.epoch, req->rid.checksum);
	} else if (cmd->type != KNBD_NBD_CMD_FLUSH &&
		   (cmd->offset > vol->info.size ||
		    cmd->len > vol->info.size - cmd->offset ||
		    !knbd_route_owns(rt, cmd->offset, cmd->len, conn->node->node_id))) {
		status = KNBD_PEER_NOT_OWNER;
		pr_warn_ratelimited("%s/%s: member %u sent a piece we do not own (offset %llu len %u)\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), conn->peer_id,
				    cmd->offset, cmd->len);
	}
	rcu_read_unlock();
	if (status == KNBD_PEER_OK &&
	    knbd_proto_check_request(cmd, &vol->info, &req->nbd_err) != KNBD_REQ_OK &&
	    !req->nbd_err)
		req->nbd_err = KNBD_NBD_EINVAL;
	return status;
}

static void knbd_pserve_encode(struct knbd_req *req)
{
	struct knbd_peer_hdr *hdr = (struct knbd_peer_hdr *)req->hdr;
	struct knbd_peer_io_reply *r = (struct knbd_peer_io_reply *)(hdr + 1);

	req->data_len = 0;
	if (!req->nbd_err && req->status == KNBD_PEER_OK &&
	    req->cmd.type == KNBD_NBD_CMD_READ)
		req->data_len = req->cmd.len;
	knbd_peer_encode_hdr(hdr, KNBD_PEER_IO_REPLY, sizeof(*r) + req->data_len);
	r->cookie = cpu_to_be64(req->cmd.cookie);
	r->error = cpu_to_be32(req->nbd_err);
	r->status = cpu_to_be32(req->status);
	r->epoch = cpu_to_be64(req->rid.epoch);
	r->checksum = cpu_to_be32(req->rid.checksum);
	r->reserved = 0;
	req->hdr_len = sizeof(*hdr) + sizeof(*r);
}

/* Answer now: refused, or failed before execution. */
static void knbd_pserve_refuse(struct knbd_conn *conn, struct knbd_req *req)
{
	if (req->own_vol_ref) {
		percpu_ref_put(&req->vol->ref);
		req->own_vol_ref = false;
	}
	if (!req->nbd_err)
		req->nbd_err = KNBD_NBD_EIO;
	knbd_pserve_encode(req);
	knbd_conn_reply_now(req);
}

static int knbd_pserve_got_io(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	struct knbd_volume *vol;
	struct knbd_req *req;
	u32 payload;

	/* Decoded again when room came (KNBD_RCV_ROOM): it is the same frame. */
	if (knbd_peer_decode_io(&p->buf.io, p->len, &p->cmd, &p->epoch, &p->checksum,
				&p->handle))
		return knbd_pserve_bad(conn, "bad IO frame");
	req = knbd_conn_req_get(conn, &p->cmd, knbd_cmd_mem_bytes(&p->cmd));
	if (!req)
		return 0;
	payload = knbd_proto_payload_len(&p->cmd);

	vol = knbd_pserve_volume(conn, p->handle);
	if (!vol) {
		req->status = KNBD_PEER_NO_VOLUME;
		knbd_pserve_refuse(conn, req);
		goto drop;
	}
	req->vol = vol;
	req->own_vol_ref = true;
	req->status = knbd_pserve_check(conn, req, vol);
	if (req->status != KNBD_PEER_OK || req->nbd_err) {
		knbd_pserve_refuse(conn, req);
		goto drop;
	}
	if (p->cmd.type == KNBD_NBD_CMD_READ && knbd_req_alloc_pages(req, p->cmd.len)) {
		req->nbd_err = KNBD_NBD_ENOMEM;
		knbd_pserve_refuse(conn, req);
		goto drop;
	}
	atomic64_inc(&vol->stats.peer_ios);
	if (payload) {
		p->phase = KNBD_PSERVE_DATA;
		knbd_conn_recv_data(conn, req);
		return 0;
	}
	knbd_conn_submit(req);
	knbd_pserve_next_frame(conn);
	return 0;

drop:
	if (payload) {
		p->phase = KNBD_PSERVE_DROP;
		knbd_conn_recv_discard(conn, payload);
	} else {
		knbd_pserve_next_frame(conn);
	}
	return 0;
}

static int knbd_pserve_got_body(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	struct knbd_pserve_bind *b;
	u16 name_len;

	switch (p->type) {
	case KNBD_PEER_LOAD:
		if (be32_to_cpu(p->buf.load.node_id) != conn->peer_id)
			return knbd_pserve_bad(conn, "LOAD for another member");
		knbd_peer_got_load(conn->node, &p->buf.load);
		knbd_pserve_next_frame(conn);
		return 0;
	case KNBD_PEER_BIND:
		if (knbd_peer_decode_bind(&p->buf.bind, p->len, &p->handle, &name_len))
			return knbd_pserve_bad(conn, "bad BIND frame");
		b = &p->binds[p->handle];
		b->name_len = name_len;
		b->gen = 0;
		p->phase = KNBD_PSERVE_NAME;
		knbd_conn_recv_more(conn, b->name, name_len);
		return 0;
	default:
		return knbd_pserve_got_io(conn);
	}
}

static int knbd_pserve_rcv_done(struct knbd_conn *conn)
{
	struct knbd_pserve_conn *p = &conn->pserve;
	struct knbd_req *req;

	switch (p->phase) {
	case KNBD_PSERVE_HELLO_HDR:
		if (knbd_peer_decode_hdr(&p->buf.hdr, &p->type, &p->len) ||
		    p->type != KNBD_PEER_HELLO || p->len != sizeof(p->buf.hello))
			return knbd_pserve_bad(conn, "no HELLO");
		p->phase = KNBD_PSERVE_HELLO;
		knbd_conn_recv_more(conn, &p->buf.hello, sizeof(p->buf.hello));
		return 0;
	case KNBD_PSERVE_HELLO:
		return knbd_pserve_got_hello(conn);
	case KNBD_PSERVE_AUTH_HDR:
		if (knbd_peer_decode_hdr(&p->buf.hdr, &p->type, &p->len) ||
		    p->type != KNBD_PEER_AUTH || p->len != sizeof(p->buf.auth))
			return knbd_pserve_refused(conn, conn->peer_id, "no AUTH");
		p->phase = KNBD_PSERVE_AUTH;
		knbd_conn_recv_into(conn, &p->buf.auth, sizeof(p->buf.auth));
		return 0;
	case KNBD_PSERVE_AUTH:
		return knbd_pserve_got_auth(conn);
	case KNBD_PSERVE_HDR:
		return knbd_pserve_got_hdr(conn);
	case KNBD_PSERVE_BODY:
		return knbd_pserve_got_body(conn);
	case KNBD_PSERVE_NAME:
		knbd_pserve_resolve(conn, &p->binds[p->handle]);
		knbd_pserve_next_frame(conn);
		return 0;
	case KNBD_PSERVE_DATA:
		req = conn->rcv_req;
		conn->rcv_req = NULL;
		if (req->error) {
			req->nbd_err = knbd_proto_errno_to_nbd(req->error);
			knbd_pserve_refuse(conn, req);
		} else {
			knbd_conn_submit(req);
		}
		knbd_pserve_next_frame(conn);
		return 0;
	case KNBD_PSERVE_DROP:
		knbd_pserve_next_frame(conn);
		return 0;
	default:
		return -EINVAL;
	}
}

static void knbd_pserve_queue_reply(struct knbd_req *req)
{
	knbd_pserve_encode(req);
	knbd_conn_queue_reply(req);
}

/*
 * A WRITE whose payload is still arriving holds its volume, and a disable
 * waits for the volume's users: a member that stalls mid-payload (or a
 * stranger posing as one) would hold the disable, and every configuration
 * change of the node behind it, until io_timeout.  Once the volume is
 * being disabled the piece cannot be served anyway: let the volume go now,
 * drop the rest of the payload and answer NO_VOLUME, as for a piece that
 * came after the disable.  The link stays up for the other volumes' pieces;
 * a stalled one still ends at io_timeout, without holding anything.
 * Runs in io_work (knbd_conn_check()); knbd_volume_disable() kicks it.
 */
static int knbd_pserve_tick(struct knbd_conn *conn, unsigned long *next)
{
	struct knbd_req *req = conn->rcv_req;
	struct knbd_volume *vol;

	if (!req || !req->own_vol_ref || !percpu_ref_is_dying(&req->vol->ref))
		return 0;
	vol = req->vol;
	pr_warn_ratelimited("%s/%s: member %u (%pISpc) is %u of %u bytes into a WRITE of the volume being disabled: dropping the rest, not waiting for it\n",
			    knbd_node_name(conn->node), config_item_name(&vol->group.cg_item),
			    conn->peer_id, &conn->peer, conn->rcv_off, req->cmd.len);
	req->own_vol_ref = false;
	req->vol = NULL;
	req->status = KNBD_PEER_NO_VOLUME;
	if (!req->error)
		req->error = -ESHUTDOWN;
	/* Already dropping it (no pages): rcv_left counts what is left. */
	if (conn->rcv_state == KNBD_RCV_DATA)
		knbd_conn_recv_discard(conn, req->cmd.len - conn->rcv_off);
	percpu_ref_put(&vol->ref);
	return 0;
}

static int knbd_pserve_start(struct knbd_conn *conn)
{
	conn->pserve.binds = kcalloc(KNBD_PEER_MAX_HANDLES, sizeof(*conn->pserve.binds),
				     GFP_KERNEL);
	if (!conn->pserve.binds)
		return -ENOMEM;
	conn->pserve.phase = KNBD_PSERVE_HELLO_HDR;
	knbd_conn_recv_into(conn, &conn->pserve.buf.hdr, sizeof(conn->pserve.buf.hdr));
	/* A member says who it is at once: a stranger gets seconds, not a minute. */
	if (time_before(jiffies + KNBD_PEER_AUTH_TIMEOUT, conn->hs_deadline))
		conn->hs_deadline = jiffies + KNBD_PEER_AUTH_TIMEOUT;
	return 0;
}

static void knbd_pserve_release(struct knbd_conn *conn)
{
	kfree(conn->pserve.binds);
}

const struct knbd_conn_ops knbd_pserve_ops = {
	.name		= "member",
	.is_peer	= true,
	.start		= knbd_pserve_start,
	.rcv_done	= knbd_pserve_rcv_done,
	.queue_reply	= knbd_pserve_queue_reply,
	.tick		= knbd_pserve_tick,
	.release	= knbd_pserve_release,
};
