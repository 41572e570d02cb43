// SPDX-License-Identifier: GPL-2.0
/*
 * knbd core: module entry, node listeners and client connections.
 *
 * A node listens in the network namespace of the process that enabled it.
 * Each accepted connection gets a long-running receive work item that
 * performs the handshake and then reads requests; every request runs as
 * its own work item (io.c) and sends its reply when done, so one
 * connection has many requests in flight and replies may be reordered,
 * as NBD allows.  Teardown shuts sockets down to wake blocked workers,
 * then waits for the counts of connections to drain.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/inet.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/wait_bit.h>
#include <net/net_namespace.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <asm/unaligned.h>

#include "knbd.h"

struct workqueue_struct *knbd_wq;
struct workqueue_struct *knbd_io_wq;

/* All client connections of all nodes: each holds a worker of knbd_wq. */
static atomic_t knbd_total_conns = ATOMIC_INIT(0);

/* ---- socket helpers ---- */

/*
 * Read exactly @len bytes; @flags apply to the first read only (e.g.
 * MSG_DONTWAIT: "only if something is there").  -ETIMEDOUT (the socket's
 * receive timeout) only when nothing at all arrived, so a caller that
 * polls with a timeout never loses its place in the stream; once part of
 * the message is in, up to @max_stalls timeouts in a row are tolerated.
 */
int knbd_recv_stalls(struct socket *sock, void *buf, size_t len, int flags,
		     unsigned int max_stalls)
{
	struct msghdr msg = { };
	struct kvec iov = { .iov_base = buf, .iov_len = len };
	unsigned int stalls = 0;
	int ret;

	iov_iter_kvec(&msg.msg_iter, ITER_DEST, &iov, 1, len);
	while (msg_data_left(&msg)) {
		ret = sock_recvmsg(sock, &msg, MSG_WAITALL | MSG_NOSIGNAL | flags);
		flags = 0;
		if (ret == -EAGAIN) {
			if (msg_data_left(&msg) == len)
				return -ETIMEDOUT;
			/* Mid-message: wait a little longer, not for ever. */
			if (++stalls > max_stalls)
				return -ECONNRESET;
			continue;
		}
		if (ret <= 0)
			return ret ? ret : -ECONNRESET;
		stalls = 0;
	}
	return 0;
}

int knbd_recv(struct socket *sock, void *buf, size_t len)
{
	return knbd_recv_stalls(sock, buf, len, 0, 3);
}

/* Like knbd_recv_stalls(), for a payload: -ETIMEDOUT after @max_stalls. */
int knbd_recv_iter_stalls(struct socket *sock, struct iov_iter *iter,
			  unsigned int max_stalls)
{
	struct msghdr msg = { };
	unsigned int stalls = 0;
	int ret;

	msg.msg_iter = *iter;
	while (msg_data_left(&msg)) {
		ret = sock_recvmsg(sock, &msg, MSG_WAITALL | MSG_NOSIGNAL);
		if (ret == -EAGAIN) {
			if (++stalls > max_stalls)
				return -ETIMEDOUT;
			continue;
		}
		if (ret <= 0)
			return ret ? ret : -ECONNRESET;
		stalls = 0;
	}
	*iter = msg.msg_iter;
	return 0;
}

int knbd_recv_iter(struct socket *sock, struct iov_iter *iter)
{
	return knbd_recv_iter_stalls(sock, iter, 0);
}

static int knbd_send_msg(struct socket *sock, struct msghdr *msg)
{
	int ret;

	while (msg_data_left(msg)) {
		ret = sock_sendmsg(sock, msg);
		if (ret <= 0)
			return ret ? ret : -EPIPE;
	}
	return 0;
}

int knbd_send_iter(struct socket *sock, struct iov_iter *iter, int flags)
{
	struct msghdr msg = { .msg_flags = flags | MSG_NOSIGNAL };

	msg.msg_iter = *iter;
	return knbd_send_msg(sock, &msg);
}

int knbd_send(struct socket *sock, const void *buf, size_t len, int flags)
{
	struct msghdr msg = { .msg_flags = flags | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };

	iov_iter_kvec(&msg.msg_iter, ITER_SOURCE, &iov, 1, len);
	return knbd_send_msg(sock, &msg);
}

/* Read and discard a payload we refused, so the stream stays in step. */
int knbd_drain(struct knbd_conn *conn, u32 len)
{
	int ret;

	/* In transmission the socket polls (KNBD_CONN_POLL): allow for it. */
	unsigned int stalls = READ_ONCE(conn->state) == KNBD_CONN_HANDSHAKE ?
			      3 : KNBD_CONN_STALLS;

	while (len) {
		u32 chunk = min_t(u32, len, KNBD_OPT_MAX_PARSE);

		ret = knbd_recv_stalls(conn->sock, conn->buf, chunk, 0, stalls);
		if (ret)
			return ret;
		len -= chunk;
	}
	return 0;
}

/* ---- connection lifetime and accounting ---- */

static bool knbd_name_eq(struct knbd_volume *vol, const char *name, u32 len)
{
	const char *vname = config_item_name(&vol->group.cg_item);

	return strlen(vname) == len && !memcmp(vname, name, len);
}

static void knbd_conn_release(struct kref *ref)
{
	struct knbd_conn *conn = container_of(ref, struct knbd_conn, ref);
	struct knbd_volume *vol = conn->vol;
	struct knbd_node *node = conn->node;

	sock_release(conn->sock);
	kfree(conn->buf);
	kfree(conn);

	/* Waiters key on the addresses only; they may free the objects. */
	if (vol)
		knbd_volume_put_user(vol);
	if (atomic_dec_and_test(&node->nr_conns))
		wake_up_var(&node->nr_conns);
	atomic_dec(&knbd_total_conns);
}

/*
 * An enabled volume by exact name, for a peer's request; the caller
 * drops the user reference with knbd_volume_put_user().
 */
struct knbd_volume *knbd_node_get_volume(struct knbd_node *node, const char *name,
					 u32 len)
{
	struct knbd_volume *vol;

	mutex_lock(&node->lock);
	list_for_each_entry(vol, &node->volumes, node_entry) {
		if (vol->enabled && knbd_name_eq(vol, name, len)) {
			atomic_inc(&vol->nr_conns);
			mutex_unlock(&node->lock);
			return vol;
		}
	}
	mutex_unlock(&node->lock);
	return NULL;
}

void knbd_volume_put_user(struct knbd_volume *vol)
{
	if (atomic_dec_and_test(&vol->nr_conns))
		wake_up_var(&vol->nr_conns);
}

void knbd_conn_put(struct knbd_conn *conn)
{
	kref_put(&conn->ref, knbd_conn_release);
}

bool knbd_conn_has_room(struct knbd_conn *conn, u32 bytes)
{
	bool room;

	spin_lock(&conn->lock);
	room = !conn->inflight ||
	       (conn->inflight < KNBD_CONN_MAX_INFLIGHT &&
		conn->inflight_bytes + bytes <= KNBD_CONN_MAX_BYTES);
	if (room) {
		conn->inflight++;
		conn->inflight_bytes += bytes;
	}
	spin_unlock(&conn->lock);
	return room;
}

void knbd_conn_unreserve(struct knbd_conn *conn, u32 bytes)
{
	spin_lock(&conn->lock);
	conn->inflight--;
	conn->inflight_bytes -= bytes;
	wake_up(&conn->wait);
	spin_unlock(&conn->lock);
}

static bool knbd_conn_idle(struct knbd_conn *conn)
{
	bool idle;

	spin_lock(&conn->lock);
	idle = !conn->inflight;
	spin_unlock(&conn->lock);
	return idle;
}

/* A request finished and replied: give back its budget and reference. */
void knbd_conn_req_done(struct knbd_conn *conn, u32 bytes)
{
	knbd_conn_unreserve(conn, bytes);
	knbd_conn_put(conn);
}

int knbd_conn_send_reply(struct knbd_conn *conn, u64 cookie, u32 nbd_err,
			 struct bio_vec *bvec, unsigned int nr_bvec, u32 len)
{
	struct nbd_wire_simple_reply hdr;
	int ret;

	knbd_proto_encode_reply(&hdr, cookie, nbd_err);
	/* knbd_conn_drain_gather() may be holding the lock: count us in */
	atomic_inc(&conn->reply_waiters);
	if (READ_ONCE(conn->draining))
		wake_up(&conn->wait);
	mutex_lock(&conn->send_lock);
	atomic_dec(&conn->reply_waiters);
	ret = knbd_send(conn->sock, &hdr, sizeof(hdr), len ? MSG_MORE : 0);
	if (!ret && len) {
		struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };

		iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, bvec, nr_bvec, len);
		ret = knbd_send_msg(conn->sock, &msg);
	}
	mutex_unlock(&conn->send_lock);
	if (ret) {
		/* A torn reply leaves the stream unusable: end the connection. */
		pr_debug("conn %llu: send failed: %d\n", conn->id, ret);
		kernel_sock_shutdown(conn->sock, SHUT_RDWR);
	}
	return ret;
}

/* ---- handshake ---- */

static int knbd_opt_reply(struct knbd_conn *conn, u32 option, u32 type,
			  const void *data, u32 len)
{
	struct nbd_wire_opt_reply hdr;
	int ret;

	knbd_proto_encode_opt_reply(&hdr, option, type, len);
	ret = knbd_send(conn->sock, &hdr, sizeof(hdr), len ? MSG_MORE : 0);
	if (!ret && len)
		ret = knbd_send(conn->sock, data, len, 0);
	return ret;
}

/*
 * Find an enabled volume by export name; called with node->lock held.
 * The empty name is the protocol's default export: it names the volume
 * only when the node exports exactly one.
 */
static struct knbd_volume *knbd_find_volume(struct knbd_node *node,
					    const char *name, u32 len)
{
	struct knbd_volume *vol, *found = NULL;
	unsigned int enabled = 0;

	list_for_each_entry(vol, &node->volumes, node_entry) {
		if (!vol->enabled)
			continue;
		enabled++;
		if (len && knbd_name_eq(vol, name, len))
			return vol;
		if (!len)
			found = vol;
	}
	return enabled == 1 ? found : NULL;
}

static void knbd_conn_attach(struct knbd_conn *conn, struct knbd_volume *vol)
{
	lockdep_assert_held(&conn->node->lock);
	atomic_inc(&vol->nr_conns);
	WRITE_ONCE(conn->vol, vol);
}

static int knbd_opt_list(struct knbd_conn *conn)
{
	struct knbd_node *node = conn->node;
	struct knbd_volume *vol;
	size_t cap, used = 0;
	u8 *buf;
	int ret;

	mutex_lock(&node->lock);
	/* Each entry: reply header, name length, name, description as details. */
	cap = node->nr_volumes * (sizeof(struct nbd_wire_opt_reply) + 4 + NAME_MAX +
				  KNBD_NBD_MAX_STRING);
	buf = kvmalloc(cap ?: 1, GFP_KERNEL);
	if (!buf) {
		mutex_unlock(&node->lock);
		return knbd_opt_reply(conn, KNBD_NBD_OPT_LIST, KNBD_NBD_REP_ERR_PLATFORM, NULL, 0);
	}
	list_for_each_entry(vol, &node->volumes, node_entry) {
		const char *name = config_item_name(&vol->group.cg_item);
		u32 nlen = min_t(size_t, strlen(name), NAME_MAX);
		u32 dlen = vol->description ?
			   min_t(size_t, strlen(vol->description), KNBD_NBD_MAX_STRING) : 0;

		if (!vol->enabled)
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

	ret = used ? knbd_send(conn->sock, buf, used, MSG_MORE) : 0;
	kvfree(buf);
	if (ret)
		return ret;
	return knbd_opt_reply(conn, KNBD_NBD_OPT_LIST, KNBD_NBD_REP_ACK, NULL, 0);
}

static int knbd_send_info_string(struct knbd_conn *conn, u32 option, u16 type,
				 const char *str, u32 len)
{
	u8 *buf = kmalloc(2 + len, GFP_KERNEL);
	int ret;

	if (!buf)
		return -ENOMEM;
	put_unaligned_be16(type, buf);
	memcpy(buf + 2, str, len);
	ret = knbd_opt_reply(conn, option, KNBD_NBD_REP_INFO, buf, 2 + len);
	kfree(buf);
	return ret;
}

/* KNBD_NBD_OPT_INFO and KNBD_NBD_OPT_GO; returns 1 when transmission begins. */
static int knbd_opt_info_go(struct knbd_conn *conn, u32 option, u32 len)
{
	struct knbd_node *node = conn->node;
	struct nbd_wire_info_block_size bs;
	struct nbd_wire_info_export ie;
	struct knbd_export_info ei;
	struct knbd_go_req go;
	struct knbd_volume *vol;
	char *desc = NULL, *name = NULL;
	u32 err;
	int ret;

	err = knbd_proto_parse_go(conn->buf, len, &go);
	if (err)
		return knbd_opt_reply(conn, option, err, NULL, 0);

	mutex_lock(&node->lock);
	vol = knbd_find_volume(node, go.name, go.name_len);
	if (vol) {
		ei = vol->info;
		/* Copies: after unlock an INFO-only session holds no reference. */
		if (go.want_description && vol->description)
			desc = kstrdup(vol->description, GFP_KERNEL);
		if (go.want_name)
			name = kstrdup(config_item_name(&vol->group.cg_item),
				       GFP_KERNEL);
		if (option == KNBD_NBD_OPT_GO)
			knbd_conn_attach(conn, vol);
	}
	mutex_unlock(&node->lock);
	if (!vol) {
		pr_info_ratelimited("client %pISpc: unknown export '%.*s'\n",
				    &conn->peer, (int)min_t(u32, go.name_len, 64),
				    go.name);
		return knbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_UNKNOWN, NULL, 0);
	}

	knbd_proto_encode_info_export(&ie, &ei);
	ret = knbd_opt_reply(conn, option, KNBD_NBD_REP_INFO, &ie, sizeof(ie));
	if (!ret && name)
		ret = knbd_send_info_string(conn, option, KNBD_NBD_INFO_NAME,
					    name, strlen(name));
	if (!ret && desc)
		ret = knbd_send_info_string(conn, option, KNBD_NBD_INFO_DESCRIPTION,
					    desc, strlen(desc));
	kfree(name);
	kfree(desc);
	/* Sent unasked too: the protocol lets clients ignore unknown info. */
	knbd_proto_encode_info_block_size(&bs, &ei);
	if (!ret)
		ret = knbd_opt_reply(conn, option, KNBD_NBD_REP_INFO, &bs, sizeof(bs));
	if (!ret)
		ret = knbd_opt_reply(conn, option, KNBD_NBD_REP_ACK, NULL, 0);
	if (ret)
		return ret;
	return option == KNBD_NBD_OPT_GO ? 1 : 0;
}

/* KNBD_NBD_OPT_EXPORT_NAME has no error reply: an unknown name ends the session. */
static int knbd_opt_export_name(struct knbd_conn *conn, u32 len)
{
	struct knbd_node *node = conn->node;
	struct {
		struct nbd_wire_export_name_reply r;
		u8 pad[KNBD_NBD_EXPORT_NAME_PAD];
	} __packed reply = { };
	struct knbd_volume *vol = NULL;

	mutex_lock(&node->lock);
	if (!memchr(conn->buf, '\0', len))
		vol = knbd_find_volume(node, conn->buf, len);
	if (vol) {
		reply.r.size = cpu_to_be64(vol->info.size);
		reply.r.flags = cpu_to_be16(knbd_proto_transmission_flags(&vol->info));
		knbd_conn_attach(conn, vol);
	}
	mutex_unlock(&node->lock);
	if (!vol) {
		pr_info_ratelimited("client %pISpc: unknown export '%.*s'\n",
				    &conn->peer, (int)min_t(u32, len, 64),
				    (char *)conn->buf);
		return -ENOENT;
	}
	return knbd_send(conn->sock, &reply, conn->no_zeroes ?
			 sizeof(reply.r) : sizeof(reply), 0) ?: 1;
}

/* Returns 1 when transmission begins, 0 to read the next option, or < 0. */
static int knbd_handle_option(struct knbd_conn *conn, u32 option, u32 len)
{
	switch (option) {
	case KNBD_NBD_OPT_EXPORT_NAME:
		return knbd_opt_export_name(conn, len);
	case KNBD_NBD_OPT_ABORT:
		knbd_opt_reply(conn, option, KNBD_NBD_REP_ACK, NULL, 0);
		return -ECONNABORTED;
	case KNBD_NBD_OPT_LIST:
		if (len)
			return knbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_INVALID,
					      NULL, 0);
		return knbd_opt_list(conn);
	case KNBD_NBD_OPT_INFO:
	case KNBD_NBD_OPT_GO:
		return knbd_opt_info_go(conn, option, len);
	default:
		/* STARTTLS, STRUCTURED_REPLY, meta contexts and the unknown. */
		return knbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_UNSUP, NULL, 0);
	}
}

static int knbd_handshake(struct knbd_conn *conn)
{
	unsigned long deadline = jiffies + 2 * KNBD_HANDSHAKE_TIMEOUT;
	struct nbd_wire_hello hello;
	struct nbd_wire_opt opt;
	u32 option, len;
	__be32 cflags;
	int ret, n;

	knbd_proto_encode_hello(&hello);
	ret = knbd_send(conn->sock, &hello, sizeof(hello), 0);
	if (ret)
		return ret;
	ret = knbd_recv(conn->sock, &cflags, sizeof(cflags));
	if (ret)
		return ret;
	ret = knbd_proto_check_client_flags(be32_to_cpu(cflags), &conn->no_zeroes);
	if (ret) {
		pr_warn_ratelimited("client %pISpc: unsupported client flags %#x\n",
				    &conn->peer, be32_to_cpu(cflags));
		return ret;
	}

	for (n = 0; n < KNBD_MAX_OPTIONS; n++) {
		/* The receive timeout bounds each read; this bounds them all. */
		if (time_after(jiffies, deadline)) {
			pr_warn_ratelimited("client %pISpc: handshake too slow, closing\n",
					    &conn->peer);
			return -ETIMEDOUT;
		}
		ret = knbd_recv(conn->sock, &opt, sizeof(opt));
		if (ret)
			return ret;
		ret = knbd_proto_decode_opt(&opt, &option, &len);
		if (ret) {
			pr_warn_ratelimited("client %pISpc: bad option magic\n",
					    &conn->peer);
			return ret;
		}
		if (len > KNBD_OPT_MAX_PARSE) {
			if (len > KNBD_OPT_MAX_DRAIN || option == KNBD_NBD_OPT_EXPORT_NAME) {
				pr_warn_ratelimited("client %pISpc: option %u length %u too large\n",
						    &conn->peer, option, len);
				return -EMSGSIZE;
			}
			ret = knbd_drain(conn, len);
			if (!ret)
				ret = knbd_opt_reply(conn, option, KNBD_NBD_REP_ERR_TOO_BIG,
						     NULL, 0);
			if (ret)
				return ret;
			continue;
		}
		ret = knbd_recv(conn->sock, conn->buf, len);
		if (ret)
			return ret;
		ret = knbd_handle_option(conn, option, len);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	pr_warn_ratelimited("client %pISpc: more than %d options, closing\n",
			    &conn->peer, KNBD_MAX_OPTIONS);
	return -E2BIG;
}

/* ---- transmission ---- */

static int knbd_reject(struct knbd_conn *conn, const struct knbd_cmd *cmd,
		       u32 nbd_err)
{
	int ret = knbd_drain(conn, knbd_proto_payload_len(cmd));

	if (ret)
		return ret;
	atomic64_inc(&conn->vol->stats.errors);
	return knbd_conn_send_reply(conn, cmd->cookie, nbd_err, NULL, 0, 0);
}

/* Data queued to read (lockless: a hint, the reader finds out for sure). */
static bool knbd_sock_has_data(struct socket *sock)
{
	return !skb_queue_empty_lockless(&sock->sk->sk_receive_queue);
}

/*
 * A draining receiver found nothing queued: hold the replies back (take
 * send_lock) and make sure nothing more comes.  A request that a reply
 * sent just before provoked may still be on its way: wait a moment, and
 * if one arrives, let go and serve it.  True: quiet, replies held.
 */
static bool knbd_conn_drain_hold(struct knbd_conn *conn)
{
	unsigned long until = jiffies + msecs_to_jiffies(KNBD_DRAIN_QUIET_MS);

	mutex_lock(&conn->send_lock);
	for (;;) {
		if (knbd_sock_has_data(conn->sock))
			break;
		if (time_after(jiffies, until)) {
			conn->replies_held = true;
			return true;
		}
		usleep_range(1000, 2000);
	}
	mutex_unlock(&conn->send_lock);
	return false;
}

/*
 * Serve requests until the client goes (false) or, while draining, until
 * nothing more is queued (true: the replies are held, knbd_conn_drain_hold()).
 */
static bool knbd_transmission(struct knbd_conn *conn)
{
	struct knbd_volume *vol = conn->vol;
	struct nbd_wire_request wire;
	enum knbd_req_verdict verdict;
	struct knbd_req *req;
	struct knbd_cmd cmd;
	u32 nbd_err, mem;

	for (;;) {
		/* pairs with knbd_conn_drain(): drain_at is set before the flag */
		bool draining = smp_load_acquire(&conn->draining);
		int ret;

		/*
		 * Draining: serve what the client has already sent, but stop
		 * at the first request boundary with nothing queued, and after
		 * KNBD_DRAIN_READ_TIME in any case (a busy client never pauses).
		 */
		if (draining && time_after(jiffies, conn->drain_at + KNBD_DRAIN_READ_TIME))
			return false;
		ret = knbd_recv_stalls(conn->sock, &wire, sizeof(wire),
				       draining ? MSG_DONTWAIT : 0, KNBD_CONN_STALLS);
		if (ret == -ETIMEDOUT) {
			if (draining && knbd_conn_drain_hold(conn))
				return true;
			continue;	/* idle, or more came: look again */
		}
		if (ret)
			return false;
		if (knbd_proto_decode_request(&wire, &cmd)) {
			pr_warn_ratelimited("client %pISpc: bad request magic %#x, closing\n",
					    &conn->peer, be32_to_cpu(wire.magic));
			return false;
		}
		verdict = knbd_proto_check_request(&cmd, &vol->info, &nbd_err);
		switch (verdict) {
		case KNBD_REQ_DISC:
			return false;
		case KNBD_REQ_FATAL:
			pr_warn_ratelimited("client %pISpc: %s length %u over %u, closing\n",
					    &conn->peer, knbd_proto_cmd_name(cmd.type),
					    cmd.len, KNBD_MAX_REQ_BYTES);
			return false;
		case KNBD_REQ_ERROR:
			if (knbd_reject(conn, &cmd, nbd_err))
				return false;
			continue;
		case KNBD_REQ_OK:
			break;
		}

		mem = knbd_cmd_mem_bytes(&cmd);
		wait_event(conn->wait, knbd_conn_has_room(conn, mem));
		req = knbd_req_alloc(conn, &cmd);
		if (!req) {
			knbd_conn_unreserve(conn, mem);
			if (knbd_reject(conn, &cmd, KNBD_NBD_ENOMEM))
				return false;
			continue;
		}
		req->vol = vol;
		if (cmd.type == KNBD_NBD_CMD_WRITE) {
			struct iov_iter iter;

			iov_iter_bvec(&iter, ITER_DEST, req->bvec, req->nr_bvec, cmd.len);
			if (knbd_recv_iter_stalls(conn->sock, &iter, KNBD_CONN_STALLS)) {
				knbd_req_free(req);
				knbd_conn_unreserve(conn, mem);
				return false;
			}
		}
		kref_get(&conn->ref);
		knbd_io_submit(req);
	}
}

static bool knbd_conn_replies_ready(struct knbd_conn *conn)
{
	bool ready;

	spin_lock(&conn->lock);
	ready = atomic_read(&conn->reply_waiters) >= conn->inflight;
	spin_unlock(&conn->lock);
	return ready;
}

/*
 * A drain stopped reading: hold the replies back (if the receiver does not
 * already, knbd_conn_drain_hold()) until every request in flight has its
 * reply ready.  Then knbd_conn_drain_release() lets them all go at once,
 * corked, so that they leave together with the reset that follows.  Sent
 * one by one, each reply would let the client send a new request on this
 * connection before it sees the reset, and such a request gets no answer
 * (nbd.ko retries it only after its timeout).
 */
static void knbd_conn_drain_gather(struct knbd_conn *conn)
{
	unsigned long deadline = jiffies + KNBD_DRAIN_GATHER_TIME;
	bool ready;

	if (!conn->replies_held) {
		mutex_lock(&conn->send_lock);
		conn->replies_held = true;
	}
	/* short waits: a reply may have counted itself before the drain began */
	while (!(ready = knbd_conn_replies_ready(conn)) && time_before(jiffies, deadline))
		wait_event_timeout(conn->wait, knbd_conn_replies_ready(conn), HZ / 50);
	if (!ready)
		pr_info_ratelimited("client %pISpc: replies of a drained connection still not ready after %d s, sending what is\n",
				    &conn->peer, KNBD_DRAIN_GATHER_TIME / HZ);
}

static void knbd_conn_drain_unhold(struct knbd_conn *conn)
{
	conn->replies_held = false;
	mutex_unlock(&conn->send_lock);
}

/* Gathered replies go into the corked socket, to wait there for the reset. */
static void knbd_conn_drain_release(struct knbd_conn *conn)
{
	knbd_conn_drain_gather(conn);
	tcp_sock_set_cork(conn->sock->sk, true);
	knbd_conn_drain_unhold(conn);
}

/* Requests came while the drain held back: serve them, if not read long enough. */
static bool knbd_conn_drain_more(struct knbd_conn *conn)
{
	return knbd_sock_has_data(conn->sock) &&
	       time_before(jiffies, conn->drain_at + KNBD_DRAIN_READ_TIME);
}

/*
 * The receiver stopped at a quiet request boundary with the replies held.
 * Whatever comes in meanwhile was sent before the client could see any of
 * them (a late request, or one it sent on its own): serve it too (false)
 * rather than leave it unanswered.  Once the replies are ready and nothing
 * came, they go into the corked socket, where they wait for the reset, and
 * the socket is checked once more.  True: done, close.
 */
static bool knbd_conn_drain_settled(struct knbd_conn *conn)
{
	knbd_conn_drain_gather(conn);
	if (knbd_conn_drain_more(conn)) {
		knbd_conn_drain_unhold(conn);
		return false;
	}
	knbd_conn_drain_release(conn);
	wait_event(conn->wait, knbd_conn_idle(conn));
	return !knbd_conn_drain_more(conn);
}

/* Everything written to @sock has left at least once (a reset drops the rest). */
static bool knbd_sock_sent_all(struct socket *sock)
{
	const struct tcp_sock *tp = tcp_sk(sock->sk);

	return READ_ONCE(tp->snd_nxt) == READ_ONCE(tp->write_seq);
}

/*
 * The last step of a drain, once every request read has been answered:
 * send the replies and reset the connection right behind them.  Not a
 * FIN: nbd.ko marks a connection dead only when its receiver reads the
 * end of the stream, after completing the replies before it, and each
 * completion may put a new request on the half-closed socket, which still
 * sends; that request gets no reply until the client's timeout.  The
 * reset, sent the moment the replies have left, arrives with them and
 * closes the client's socket at once: the replies already queued there
 * are still read, and a request sent after it fails to send, which nbd.ko
 * requeues on another connection at once.  Requests that reached us after
 * the last read are counted here, never executed: the client retries them
 * (after its timeout).
 */
static void knbd_conn_drain_close(struct knbd_conn *conn)
{
	unsigned long deadline = jiffies + KNBD_DRAIN_CLOSE_TIME;
	struct sockaddr unspec = { .sa_family = AF_UNSPEC };
	struct nbd_wire_request wire;
	unsigned int dropped = 0;
	struct knbd_cmd cmd;

	while (time_before(jiffies, deadline) &&
	       !knbd_recv_stalls(conn->sock, &wire, sizeof(wire), MSG_DONTWAIT, 5)) {
		if (knbd_proto_decode_request(&wire, &cmd) || cmd.type == KNBD_NBD_CMD_DISC)
			break;
		dropped++;
		if (knbd_proto_payload_len(&cmd) > KNBD_MAX_REQ_BYTES ||
		    knbd_drain(conn, knbd_proto_payload_len(&cmd)))
			break;
	}
	if (dropped) {
		atomic64_add(dropped, &conn->node->drain_dropped);
		pr_info_ratelimited("client %pISpc: %u request(s) sent after the drain left unanswered, for the client to retry\n",
				    &conn->peer, dropped);
	}

	tcp_sock_set_cork(conn->sock->sk, false);
	while (!knbd_sock_sent_all(conn->sock) && time_before(jiffies, deadline))
		usleep_range(100, 200);
	if (!knbd_sock_sent_all(conn->sock))
		pr_info_ratelimited("client %pISpc: drained connection still has replies unsent after %d s, resetting it\n",
				    &conn->peer, KNBD_DRAIN_CLOSE_TIME / HZ);
	/* connect(AF_UNSPEC): tcp_disconnect(), a reset now, not at release */
	kernel_connect(conn->sock, &unspec, sizeof(unspec), 0);
}

/*
 * Move a client away gracefully: stop taking requests on connection @id
 * once those already queued are read, answer all, then close (above).
 * The receiver notices within KNBD_CONN_POLL.
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
		else if (READ_ONCE(conn->state) != KNBD_CONN_TRANSMISSION)
			ret = -EBUSY;
		else
			ret = 0;
		if (ret)
			break;
		conn->drain_at = jiffies;
		WRITE_ONCE(conn->state, KNBD_CONN_DRAINING);
		/* drain_at first: the receiver reads it once it sees the flag */
		smp_store_release(&conn->draining, true);
		atomic64_inc(by_admin ? &node->cm_drains : &node->cm_moves);
		break;
	}
	mutex_unlock(&node->conns_lock);
	return ret;
}

void knbd_sock_set_rcvtimeo(struct socket *sock, long timeo)
{
	lock_sock(sock->sk);
	sock->sk->sk_rcvtimeo = timeo;
	release_sock(sock->sk);
}

static void knbd_conn_recv_work(struct work_struct *work)
{
	struct knbd_conn *conn = container_of(work, struct knbd_conn, recv_work);
	struct knbd_node *node = conn->node;

	if (conn->is_peer) {
		knbd_peer_serve(conn);
	} else if (!knbd_handshake(conn) && conn->vol) {
		knbd_sock_set_rcvtimeo(conn->sock, KNBD_CONN_POLL);
		WRITE_ONCE(conn->state, KNBD_CONN_TRANSMISSION);
		while (knbd_transmission(conn) && !knbd_conn_drain_settled(conn))
			;
	}

	/* Answer everything already read before the socket goes away. */
	WRITE_ONCE(conn->state, KNBD_CONN_CLOSING);
	if (READ_ONCE(conn->draining))
		knbd_conn_drain_release(conn);
	wait_event(conn->wait, knbd_conn_idle(conn));
	if (READ_ONCE(conn->draining))
		knbd_conn_drain_close(conn);

	mutex_lock(&node->conns_lock);
	list_del(&conn->node_entry);
	mutex_unlock(&node->conns_lock);
	knbd_conn_put(conn);
}

static int knbd_conn_create(struct knbd_listener *l, struct socket *sock)
{
	struct knbd_node *node = l->node;
	struct knbd_conn *conn;

	conn = kzalloc(sizeof(*conn), GFP_KERNEL);
	if (!conn)
		return -ENOMEM;
	conn->buf = kmalloc(KNBD_OPT_MAX_PARSE, GFP_KERNEL);
	if (!conn->buf) {
		kfree(conn);
		return -ENOMEM;
	}
	kref_init(&conn->ref);
	conn->node = node;
	conn->sock = sock;
	conn->is_peer = l->peer;
	mutex_init(&conn->send_lock);
	spin_lock_init(&conn->lock);
	init_waitqueue_head(&conn->wait);
	INIT_WORK(&conn->recv_work, knbd_conn_recv_work);
	if (kernel_getpeername(sock, (struct sockaddr *)&conn->peer) < 0)
		conn->peer.ss_family = AF_UNSPEC;

	/*
	 * The child inherited the listener's callback and user data; the
	 * listener's callback would swallow the wakeups of our receiver.
	 */
	write_lock_bh(&sock->sk->sk_callback_lock);
	sock->sk->sk_data_ready = l->saved_data_ready;
	sock->sk->sk_user_data = NULL;
	write_unlock_bh(&sock->sk->sk_callback_lock);

	tcp_sock_set_nodelay(sock->sk);
	sock_set_sndtimeo(sock->sk, KNBD_SEND_TIMEOUT_SECS);
	knbd_sock_set_rcvtimeo(sock, KNBD_HANDSHAKE_TIMEOUT);

	atomic_inc(&node->nr_conns);
	atomic_inc(&knbd_total_conns);
	mutex_lock(&node->conns_lock);
	conn->id = node->next_conn_id++;
	list_add_tail(&conn->node_entry, &node->conns);
	mutex_unlock(&node->conns_lock);

	queue_work(knbd_wq, &conn->recv_work);
	return 0;
}

/* ---- node listeners ---- */

static void knbd_accept_work(struct work_struct *work)
{
	struct knbd_listener *l = container_of(work, struct knbd_listener, accept_work);
	struct knbd_node *node = l->node;
	struct socket *sock;
	int ret;

	for (;;) {
		ret = kernel_accept(l->sock, &sock, O_NONBLOCK);
		if (ret < 0) {
			if (ret != -EAGAIN)
				pr_warn_ratelimited("node %s: accept failed: %d\n",
						    config_item_name(&node->group.cg_item),
						    ret);
			return;
		}
		if (atomic_read(&node->nr_conns) >= READ_ONCE(node->max_conns) +
		    (l->peer ? KNBD_MAX_MEMBERS : 0) ||
		    atomic_read(&knbd_total_conns) >= KNBD_MAX_CONNS_LIMIT) {
			pr_warn_ratelimited("node %s: connection limit reached, refusing %s\n",
					    config_item_name(&node->group.cg_item),
					    l->peer ? "member" : "client");
			sock_release(sock);
			continue;
		}
		ret = knbd_conn_create(l, sock);
		if (ret) {
			pr_warn_ratelimited("node %s: cannot set up connection: %d\n",
					    config_item_name(&node->group.cg_item), ret);
			sock_release(sock);
		}
	}
}

static void knbd_listen_data_ready(struct sock *sk)
{
	struct knbd_listener *l;

	read_lock_bh(&sk->sk_callback_lock);
	l = sk->sk_user_data;
	if (l && sk->sk_state == TCP_LISTEN)
		queue_work(system_wq, &l->accept_work);
	read_unlock_bh(&sk->sk_callback_lock);
}

void knbd_node_init_work(struct knbd_node *node)
{
	node->clients.node = node;
	INIT_WORK(&node->clients.accept_work, knbd_accept_work);
	node->peers_listener.node = node;
	node->peers_listener.peer = true;
	INIT_WORK(&node->peers_listener.accept_work, knbd_accept_work);
}

static int knbd_listener_start(struct knbd_listener *l, struct net *net,
			       const struct sockaddr_storage *base, u16 port)
{
	struct sockaddr_storage addr = *base;
	struct socket *sock;
	int addrlen, ret;

	if (addr.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
		addrlen = sizeof(struct sockaddr_in6);
	} else {
		((struct sockaddr_in *)&addr)->sin_port = htons(port);
		addrlen = sizeof(struct sockaddr_in);
	}
	ret = sock_create_kern(net, addr.ss_family, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (ret)
		return ret;
	sock_set_reuseaddr(sock->sk);
	ret = kernel_bind(sock, (struct sockaddr *)&addr, addrlen);
	if (ret) {
		pr_warn_ratelimited("node %s: cannot bind %pISpc: %d\n",
				    config_item_name(&l->node->group.cg_item), &addr, ret);
		goto err;
	}
	ret = kernel_listen(sock, 128);
	if (ret)
		goto err;

	l->sock = sock;
	write_lock_bh(&sock->sk->sk_callback_lock);
	sock->sk->sk_user_data = l;
	l->saved_data_ready = sock->sk->sk_data_ready;
	sock->sk->sk_data_ready = knbd_listen_data_ready;
	write_unlock_bh(&sock->sk->sk_callback_lock);
	/* Connections that arrived before the callback was in place. */
	queue_work(system_wq, &l->accept_work);
	pr_info("node %s: listening for %s on %pISpc\n",
		config_item_name(&l->node->group.cg_item),
		l->peer ? "members" : "clients", &addr);
	return 0;
err:
	sock_release(sock);
	return ret;
}

static void knbd_listener_stop(struct knbd_listener *l)
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

int knbd_node_enable(struct knbd_node *node)
{
	struct knbd_peer *peer;
	int ret;

	lockdep_assert_held(&node->state_lock);
	lockdep_assert_held(&node->lock);
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
	return ret;
}

/* Shut down the sockets of all clients of a node (vol == NULL) or of one volume. */
void knbd_node_close_volume_conns(struct knbd_node *node, struct knbd_volume *vol)
{
	struct knbd_conn *conn;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry)
		if (!vol || READ_ONCE(conn->vol) == vol)
			kernel_sock_shutdown(conn->sock, SHUT_RDWR);
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

	knbd_node_close_volume_conns(node, NULL);
	wait_var_event(&node->nr_conns, !atomic_read(&node->nr_conns));

	mutex_lock(&node->lock);
	node->enabled = false;
	mutex_unlock(&node->lock);
	put_net(node->net);
	node->net = NULL;
	pr_info("node %s: disabled\n", config_item_name(&node->group.cg_item));
}

static int __init knbd_init(void)
{
	int ret = -ENOMEM;

	/*
	 * No WQ_MEM_RECLAIM: receive work runs for a connection's lifetime and
	 * I/O work may wait for a peer, either would pin a rescuer thread.
	 */
	knbd_wq = alloc_workqueue("knbd", WQ_UNBOUND, WQ_UNBOUND_MAX_ACTIVE);
	if (!knbd_wq)
		goto err;
	knbd_io_wq = alloc_workqueue("knbd_io", WQ_UNBOUND, WQ_UNBOUND_MAX_ACTIVE);
	if (!knbd_io_wq)
		goto err_wq;
	ret = knbd_configfs_init();
	if (ret)
		goto err_io_wq;
	pr_info("loaded\n");
	return 0;

err_io_wq:
	destroy_workqueue(knbd_io_wq);
err_wq:
	destroy_workqueue(knbd_wq);
err:
	return ret;
}

static void __exit knbd_exit(void)
{
	/* configfs pins the module while any node exists: nothing is left. */
	knbd_configfs_exit();
	destroy_workqueue(knbd_io_wq);
	destroy_workqueue(knbd_wq);
	pr_info("unloaded\n");
}

module_init(knbd_init);
module_exit(knbd_exit);
MODULE_DESCRIPTION("knbd: in-kernel scale-out NBD server");
MODULE_LICENSE("GPL");
