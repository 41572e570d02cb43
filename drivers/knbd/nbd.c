// SPDX-License-Identifier: GPL-2.0
/*
 * The NBD transport: fixed newstyle handshake, then transmission with
 * simple replies, as a state machine the connection engine (conn.c) drives
 * from its io_work.  Each complete piece of input lands in rcv_done():
 * client flags, an option header, option data, a request header, a WRITE
 * payload.  Option replies go out as control messages, in order, before
 * the next option is read; request replies leave in completion order, as
 * NBD allows.  The graceful close that moves a client away is drain.c.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/slab.h>
#include <linux/string.h>
#include <asm/unaligned.h>

#include "knbd.h"

static void knbd_nbd_next_option(struct knbd_conn *conn)
{
	conn->nbd.phase = KNBD_NBD_HS_OPT;
	knbd_conn_recv_into(conn, &conn->nbd.hdr.opt, sizeof(conn->nbd.hdr.opt));
}

void knbd_nbd_next_request(struct knbd_conn *conn)
{
	conn->nbd.phase = KNBD_NBD_REQ_HDR;
	knbd_conn_recv_into(conn, &conn->nbd.hdr.req, sizeof(conn->nbd.hdr.req));
}

/* ---- handshake ---- */

static int knbd_nbd_opt_reply(struct knbd_conn *conn, u32 option, u32 type,
			      const void *data, u32 len)
{
	u8 *p = knbd_conn_ctl_put(conn, sizeof(struct nbd_wire_opt_reply) + len);

	if (!p)
		return -ENOMEM;
	knbd_proto_encode_opt_reply((struct nbd_wire_opt_reply *)p, option, type, len);
	if (len)
		memcpy(p + sizeof(struct nbd_wire_opt_reply), data, len);
	return 0;
}

/*
 * May this client see @vol?  Called with node->lock held, under which
 * allowed_hosts is replaced: the list cannot go away while we look.
 */
static bool knbd_nbd_allowed(struct knbd_conn *conn, struct knbd_volume *vol)
{
	return knbd_acl_match(rcu_dereference_protected(vol->acl,
							lockdep_is_held(&conn->node->lock)),
			      &conn->peer);
}

static int knbd_nbd_opt_list(struct knbd_conn *conn)
{
	struct knbd_node *node = conn->node;
	struct knbd_volume *vol;
	size_t cap, used = 0;
	u8 *buf;
	int ret = 0;

	if (!READ_ONCE(node->allow_list)) {
		pr_info_ratelimited("node %s: client %pISpc: LIST refused (list is 0)\n",
				    knbd_node_name(node), &conn->peer);
		return knbd_nbd_opt_reply(conn, KNBD_NBD_OPT_LIST, KNBD_NBD_REP_ERR_POLICY,
					  NULL, 0);
	}
	mutex_lock(&node->lock);
	/* Each entry: reply header, name length, name, description as details. */
	cap = node->nr_volumes * (sizeof(struct nbd_wire_opt_reply) + 4 + NAME_MAX +
				  KNBD_NBD_MAX_STRING);
	buf = kvmalloc(cap ?: 1, GFP_KERNEL);
	if (!buf) {
		mutex_unlock(&node->lock);
		return knbd_nbd_opt_reply(conn, KNBD_NBD_OPT_LIST, KNBD_NBD_REP_ERR_PLATFORM,
					  NULL, 0);
	}
	list_for_each_entry(vol, &node->volumes, node_entry) {
		const char *name = config_item_name(&vol->group.cg_item);
		u32 nlen = min_t(size_t, strlen(name), NAME_MAX);
		u32 dlen = vol->description ?
			   min_t(size_t, strlen(vol->description), KNBD_NBD_MAX_STRING) : 0;

		/* A volume this client may not use is not listed either. */
		if (!vol->enabled || !knbd_nbd_allowed(conn, vol))
			continue;
		knbd_proto_encode_opt_reply((void *)(buf + used), KNBD_NBD_OPT_LIST,
					    KNBD_NBD_REP_SERVER, 4 + nlen + dlen);
		used += sizeof(struct nbd_wire_opt_reply);
		put_unaligned_be32(nlen, buf + used);
		memcpy(buf + used + 4, name, nlen);
		if (dlen)
			memcpy(buf + used + 4 + nlen, vol->description, dlen);
		used += 4 + nlen + dlen;
	}
	mutex_unlock(&node->lock);

	if (used)
		ret = knbd_conn_queue_ctl(conn, buf, used);
	kvfree(buf);
	return ret ?: knbd_nbd_opt_reply(conn, KNBD_NBD_OPT_LIST, KNBD_NBD_REP_ACK, NULL, 0);
}

static int knbd_nbd_info_string(struct knbd_conn *conn, u32 option, u16 type,
				const char *str)
{
	u32 len = strlen(str);
	u8 *p = knbd_conn_ctl_put(conn, sizeof(struct nbd_wire_opt_reply) + 2 + len);

	if (!p)
		return -ENOMEM;
	knbd_proto_encode_opt_reply((struct nbd_wire_opt_reply *)p, option,
				    KNBD_NBD_REP_INFO, 2 + len);
	p += sizeof(struct nbd_wire_opt_reply);
	put_unaligned_be16(type, p);
	memcpy(p + 2, str, len);
	return 0;
}

/*
 * Transmission begins: the request pool, then the first request header.
 * Requests the client sends right behind GO wait in the socket until the
 * replies to the handshake are out (the engine sends those first).
 */
static int knbd_nbd_begin(struct knbd_conn *conn, struct knbd_volume *vol)
{
	const char *name;
	int ret;

	ret = knbd_conn_alloc_pool(conn, READ_ONCE(conn->node->queue_depth),
				   KNBD_CONN_MAX_BYTES);
	if (ret)
		return ret;
	/*
	 * A disable kills the reference and then closes the connections on the
	 * volume under conns_lock: publish conn->vol under that lock and look
	 * at the reference, so that one of the two sees the other.
	 */
	name = knbd_vol_name(vol);
	conn->nbd.client_key = knbd_cm_client_key(&conn->peer, name, strlen(name),
						  conn->nbd.fp);
	mutex_lock(&conn->node->conns_lock);
	if (!percpu_ref_is_dying(&vol->ref))
		WRITE_ONCE(conn->vol, vol);
	/* A client drained from here is back: it reconnects. */
	if (conn->vol && knbd_cm_proof_back(&conn->node->cm_proof, conn->nbd.client_key,
					    jiffies))
		pr_info_ratelimited("node %s: client %pISc (client=%08x) came back after a drain: it reconnects, its connections may be moved\n",
				    knbd_node_name(conn->node), &conn->peer,
				    conn->nbd.client_key);
	mutex_unlock(&conn->node->conns_lock);
	if (!conn->vol)
		return -ESHUTDOWN;
	WRITE_ONCE(conn->state, KNBD_CONN_TRANSMISSION);
	knbd_nbd_next_request(conn);
	return 1;
}

/*
 * The volume an INFO or GO names, with what the replies need; with @attach
 * (GO) a reference the connection keeps.  NULL: unknown, or disabled;
 * ERR_PTR(-EACCES): the client's address is not in its allowed_hosts.
 */
static struct knbd_volume *knbd_nbd_lookup(struct knbd_conn *conn, const struct knbd_go_req *go,
					   bool attach, struct knbd_export_info *ei,
					   char **name, char **desc)
{
	struct knbd_node *node = conn->node;
	struct knbd_volume *vol;

	mutex_lock(&node->lock);
	vol = knbd_volume_find(node, go->name, go->name_len);
	if (vol && !knbd_nbd_allowed(conn, vol)) {
		pr_info_ratelimited("node %s/%s: client %pISpc not in allowed_hosts, refused\n",
				    knbd_node_name(node), knbd_vol_name(vol), &conn->peer);
		vol = ERR_PTR(-EACCES);
	} else if (vol && attach && !percpu_ref_tryget_live(&vol->ref)) {
		vol = NULL;
	}
	if (!IS_ERR_OR_NULL(vol)) {
		*ei = vol->info;
		/* Copies: after unlock an INFO-only session holds no reference. */
		if (go->want_description && vol->description)
			*desc = kstrdup(vol->description, GFP_KERNEL);
		if (go->want_name)
			*name = kstrdup(config_item_name(&vol->group.cg_item), GFP_KERNEL);
	}
	mutex_unlock(&node->lock);
	return vol;
}

/* NBD_OPT_INFO and NBD_OPT_GO; returns 1 when transmission begins. */
static int knbd_nbd_opt_info_go(struct knbd_conn *conn, u32 option, u32 len)
{
	struct nbd_wire_info_block_size bs;
	struct nbd_wire_info_export ie;
	struct knbd_export_info ei;
	struct knbd_go_req go;
	struct knbd_volume *vol;
	char *desc = NULL, *name = NULL;
	bool attach = option == KNBD_NBD_OPT_GO;
	u32 err;
	int ret;

	err = knbd_proto_parse_go(conn->buf, len, &go);
	if (err)
		return knbd_nbd_opt_reply(conn, option, err, NULL, 0);
	vol = knbd_nbd_lookup(conn, &go, attach, &ei, &name, &desc);
	if (IS_ERR(vol))
		return knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_POLICY, NULL, 0);
	if (!vol) {
		pr_info_ratelimited("node %s: client %pISpc: unknown export '%.*s'\n",
				    knbd_node_name(conn->node), &conn->peer,
				    (int)min_t(u32, go.name_len, 64), go.name);
		return knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_UNKNOWN, NULL, 0);
	}

	knbd_proto_encode_info_export(&ie, &ei);
	ret = knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_INFO, &ie, sizeof(ie));
	if (!ret && name)
		ret = knbd_nbd_info_string(conn, option, KNBD_NBD_INFO_NAME, name);
	if (!ret && desc)
		ret = knbd_nbd_info_string(conn, option, KNBD_NBD_INFO_DESCRIPTION, desc);
	kfree(name);
	kfree(desc);
	/* Sent unasked too: the protocol lets clients ignore unknown info. */
	knbd_proto_encode_info_block_size(&bs, &ei);
	if (!ret)
		ret = knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_INFO, &bs, sizeof(bs));
	if (!ret)
		ret = knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ACK, NULL, 0);
	if (!ret && attach)
		ret = knbd_nbd_begin(conn, vol);
	if (ret < 0 && attach)
		knbd_volume_put(vol);
	return ret;
}

/*
 * NBD_OPT_EXPORT_NAME has no error reply: an unknown name, or a volume the
 * client may not use, ends the session.
 */
static int knbd_nbd_opt_export_name(struct knbd_conn *conn, u32 len)
{
	struct {
		struct nbd_wire_export_name_reply r;
		u8 pad[KNBD_NBD_EXPORT_NAME_PAD];
	} __packed reply = { };
	struct knbd_go_req go = { .name = conn->buf, .name_len = len };
	struct knbd_export_info ei;
	struct knbd_volume *vol = NULL;
	char *unused = NULL;
	int ret;

	if (!memchr(conn->buf, '\0', len))
		vol = knbd_nbd_lookup(conn, &go, true, &ei, &unused, &unused);
	if (IS_ERR(vol))
		return PTR_ERR(vol);
	if (!vol) {
		pr_info_ratelimited("node %s: client %pISpc: unknown export '%.*s'\n",
				    knbd_node_name(conn->node), &conn->peer,
				    (int)min_t(u32, len, 64), (char *)conn->buf);
		return -ENOENT;
	}
	reply.r.size = cpu_to_be64(ei.size);
	reply.r.flags = cpu_to_be16(knbd_proto_transmission_flags(&ei));
	ret = knbd_conn_queue_ctl(conn, &reply, conn->nbd.no_zeroes ?
				  sizeof(reply.r) : sizeof(reply));
	if (!ret)
		ret = knbd_nbd_begin(conn, vol);
	if (ret < 0)
		knbd_volume_put(vol);
	return ret;
}

/* Returns 1 when transmission begins, 0 to read the next option, or < 0. */
static int knbd_nbd_handle_option(struct knbd_conn *conn, u32 option, u32 len)
{
	switch (option) {
	case KNBD_NBD_OPT_EXPORT_NAME:
		return knbd_nbd_opt_export_name(conn, len);
	case KNBD_NBD_OPT_ABORT:
		/* Answer, then close once the answer is out (knbd_nbd_tick()). */
		conn->nbd.disc = true;
		conn->rcv_state = KNBD_RCV_STOP;
		return knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ACK, NULL, 0) ?: 1;
	case KNBD_NBD_OPT_LIST:
		if (len)
			return knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_INVALID,
						  NULL, 0);
		return knbd_nbd_opt_list(conn);
	case KNBD_NBD_OPT_INFO:
	case KNBD_NBD_OPT_GO:
		return knbd_nbd_opt_info_go(conn, option, len);
	default:
		/* STARTTLS, STRUCTURED_REPLY, meta contexts and the unknown. */
		return knbd_nbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_UNSUP, NULL, 0);
	}
}

static int knbd_nbd_got_flags(struct knbd_conn *conn)
{
	u32 cflags = be32_to_cpu(conn->nbd.hdr.cflags);

	if (knbd_proto_check_client_flags(cflags, &conn->nbd.no_zeroes)) {
		pr_warn_ratelimited("node %s: client %pISpc: unsupported client flags %#x\n",
				    knbd_node_name(conn->node), &conn->peer, cflags);
		return -EPROTO;
	}
	conn->nbd.fp = knbd_cm_fp_init(cflags);
	knbd_nbd_next_option(conn);
	return 0;
}

/* An option was answered: read the next one, unless transmission began (1). */
static int knbd_nbd_answered(struct knbd_conn *conn, int ret)
{
	if (ret < 0)
		return ret;
	if (!ret)
		knbd_nbd_next_option(conn);
	return 0;
}

static int knbd_nbd_got_option(struct knbd_conn *conn)
{
	struct knbd_nbd_conn *n = &conn->nbd;

	if (knbd_proto_decode_opt(&n->hdr.opt, &n->option, &n->opt_len)) {
		pr_warn_ratelimited("node %s: client %pISpc: bad option magic\n",
				    knbd_node_name(conn->node), &conn->peer);
		return -EPROTO;
	}
	n->fp = knbd_cm_fp_add(n->fp, n->option);
	if (++n->nr_opts > KNBD_MAX_OPTIONS) {
		pr_warn_ratelimited("node %s: client %pISpc: more than %d options, closing\n",
				    knbd_node_name(conn->node), &conn->peer, KNBD_MAX_OPTIONS);
		return -E2BIG;
	}
	if (n->opt_len > KNBD_OPT_MAX_PARSE) {
		if (n->opt_len > KNBD_OPT_MAX_DRAIN || n->option == KNBD_NBD_OPT_EXPORT_NAME) {
			pr_warn_ratelimited("node %s: client %pISpc: option %u length %u too large\n",
					    knbd_node_name(conn->node), &conn->peer, n->option,
					    n->opt_len);
			return -EMSGSIZE;
		}
		n->phase = KNBD_NBD_HS_OPT_BIG;
		knbd_conn_recv_discard(conn, n->opt_len);
		return 0;
	}
	if (n->opt_len) {
		n->phase = KNBD_NBD_HS_OPT_DATA;
		knbd_conn_recv_more(conn, conn->buf, n->opt_len);
		return 0;
	}
	return knbd_nbd_answered(conn, knbd_nbd_handle_option(conn, n->option, 0));
}

/* ---- transmission ---- */

/* Answer @req now with @nbd_err: a request refused before execution. */
static void knbd_nbd_refuse(struct knbd_conn *conn, struct knbd_req *req, u32 nbd_err)
{
	atomic64_inc(&conn->vol->stats.errors);
	req->nbd_err = nbd_err;
	req->vol = conn->vol;
	knbd_proto_encode_reply((struct nbd_wire_simple_reply *)req->hdr,
				req->cmd.cookie, nbd_err);
	req->hdr_len = sizeof(struct nbd_wire_simple_reply);
	knbd_conn_reply_now(req);
}

static void knbd_nbd_execute(struct knbd_conn *conn, struct knbd_req *req)
{
	req->vol = conn->vol;
	knbd_conn_submit(req);
}

static int knbd_nbd_got_request(struct knbd_conn *conn)
{
	struct knbd_volume *vol = conn->vol;
	struct knbd_cmd *cmd = &conn->nbd.cmd;
	enum knbd_req_verdict verdict;
	struct knbd_req *req;
	u32 nbd_err, payload;

	if (knbd_proto_decode_request(&conn->nbd.hdr.req, cmd)) {
		pr_warn_ratelimited("node %s: client %pISpc: bad request magic %#x, closing\n",
				    knbd_node_name(conn->node), &conn->peer,
				    be32_to_cpu(conn->nbd.hdr.req.magic));
		return -EPROTO;
	}
	verdict = knbd_proto_check_request(cmd, &vol->info, &nbd_err);
	payload = knbd_proto_payload_len(cmd);
	switch (verdict) {
	case KNBD_REQ_DISC:
		/* Finish what is in flight, then close (knbd_nbd_tick()). */
		conn->nbd.disc = true;
		conn->rcv_state = KNBD_RCV_STOP;
		return 0;
	case KNBD_REQ_FATAL:
		pr_warn_ratelimited("node %s: client %pISpc: %s length %u over %u, closing\n",
				    knbd_node_name(conn->node), &conn->peer,
				    knbd_proto_cmd_name(cmd->type),
				    cmd->len, KNBD_MAX_REQ_BYTES);
		return -EMSGSIZE;
	case KNBD_REQ_ERROR:
		req = knbd_conn_req_get(conn, cmd, 0);
		if (!req)
			return 0;
		knbd_nbd_refuse(conn, req, nbd_err);
		break;
	case KNBD_REQ_OK:
		req = knbd_conn_req_get(conn, cmd, knbd_cmd_mem_bytes(cmd));
		if (!req)
			return 0;
		if (cmd->type == KNBD_NBD_CMD_READ && knbd_req_alloc_pages(req, cmd->len)) {
			knbd_nbd_refuse(conn, req, KNBD_NBD_ENOMEM);
			break;
		}
		if (cmd->type == KNBD_NBD_CMD_WRITE) {
			conn->nbd.phase = KNBD_NBD_REQ_DATA;
			knbd_conn_recv_data(conn, req);
			return 0;
		}
		knbd_nbd_execute(conn, req);
		break;
	}
	if (verdict == KNBD_REQ_ERROR && payload) {
		conn->nbd.phase = KNBD_NBD_REQ_DROP;
		knbd_conn_recv_discard(conn, payload);
		return 0;
	}
	knbd_nbd_next_request(conn);
	return 0;
}

static int knbd_nbd_got_payload(struct knbd_conn *conn)
{
	struct knbd_req *req = conn->rcv_req;

	conn->rcv_req = NULL;
	if (req->error)
		knbd_nbd_refuse(conn, req, knbd_proto_errno_to_nbd(req->error));
	else
		knbd_nbd_execute(conn, req);
	knbd_nbd_next_request(conn);
	return 0;
}

static int knbd_nbd_rcv_done(struct knbd_conn *conn)
{
	struct knbd_nbd_conn *n = &conn->nbd;

	switch (n->phase) {
	case KNBD_NBD_HS_FLAGS:
		return knbd_nbd_got_flags(conn);
	case KNBD_NBD_HS_OPT:
		return knbd_nbd_got_option(conn);
	case KNBD_NBD_HS_OPT_DATA:
		return knbd_nbd_answered(conn, knbd_nbd_handle_option(conn, n->option,
								      n->opt_len));
	case KNBD_NBD_HS_OPT_BIG:
		return knbd_nbd_answered(conn, knbd_nbd_opt_reply(conn, n->option,
								  KNBD_NBD_REP_ERR_TOO_BIG,
								  NULL, 0));
	case KNBD_NBD_REQ_HDR:
		if (n->drain == KNBD_DRAIN_CLOSING)
			return knbd_drain_drop_request(conn);
		return knbd_nbd_got_request(conn);
	case KNBD_NBD_REQ_DATA:
		return knbd_nbd_got_payload(conn);
	case KNBD_NBD_REQ_DROP:
		knbd_nbd_next_request(conn);
		return 0;
	default:
		return -EINVAL;
	}
}

static void knbd_nbd_queue_reply(struct knbd_req *req)
{
	knbd_proto_encode_reply((struct nbd_wire_simple_reply *)req->hdr,
				req->cmd.cookie, req->nbd_err);
	req->hdr_len = sizeof(struct nbd_wire_simple_reply);
	if (!req->nbd_err && req->cmd.type == KNBD_NBD_CMD_READ)
		req->data_len = req->cmd.len;
	knbd_conn_queue_reply(req);
}

static int knbd_nbd_start(struct knbd_conn *conn)
{
	struct nbd_wire_hello hello;

	knbd_proto_encode_hello(&hello);
	conn->nbd.phase = KNBD_NBD_HS_FLAGS;
	knbd_conn_recv_into(conn, &conn->nbd.hdr.cflags, sizeof(conn->nbd.hdr.cflags));
	return knbd_conn_queue_ctl(conn, &hello, sizeof(hello));
}

static int knbd_nbd_tick(struct knbd_conn *conn, unsigned long *next)
{
	/* DISC or ABORT: once every reply is out, close. */
	if (conn->nbd.disc)
		return conn->inflight || knbd_conn_sending(conn) ? 0 : -ECONNRESET;
	if (conn->nbd.drain != KNBD_DRAIN_NONE || READ_ONCE(conn->nbd.drain_req))
		return knbd_drain_tick(conn, next);
	return 0;
}

const struct knbd_conn_ops knbd_nbd_ops = {
	.name		= "client",
	.is_peer	= false,
	.start		= knbd_nbd_start,
	.rcv_done	= knbd_nbd_rcv_done,
	.queue_reply	= knbd_nbd_queue_reply,
	.tick		= knbd_nbd_tick,
};
