/* SPDX-License-Identifier: GPL-2.0 */
/*
 * knbd private definitions shared by the files of the module.
 *
 * Object model (see Documentation/design.rst):
 *   knbd_node    one member server: a listener in one network namespace,
 *                created with mkdir under configfs nodes/.
 *   knbd_volume  one export of a node, backed by a file or block device.
 *   knbd_conn    one client TCP connection, refcounted; the receive work
 *                owns the initial reference, each request in flight one more.
 *   knbd_req     one NBD command between parsing and its reply.
 */
#ifndef _KNBD_H
#define _KNBD_H

#include <linux/atomic.h>
#include <linux/bvec.h>
#include <linux/completion.h>
#include <linux/configfs.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/sizes.h>
#include <linux/socket.h>
#include <linux/types.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <knbd/nbd_proto.h>
#include <knbd/peer_proto.h>

#define KNBD_DEFAULT_PORT		10809
#define KNBD_DEFAULT_MAX_CONNS		64
#define KNBD_MAX_CONNS_LIMIT		WQ_UNBOUND_MAX_ACTIVE
#define KNBD_MAX_VOLUMES		64

/* Largest READ or WRITE payload accepted (advertised as maximum block size). */
#define KNBD_MAX_REQ_BYTES		SZ_32M
#define KNBD_PREF_BLOCK			4096U
#define KNBD_DEFAULT_MIN_BLOCK		512U
#define KNBD_MAX_MIN_BLOCK		4096U

/*
 * Per-connection bounds: a client may keep this many requests and payload
 * bytes in flight before the receive side stops reading its socket and
 * TCP flow control pushes back.
 */
#define KNBD_CONN_MAX_INFLIGHT		256U
#define KNBD_CONN_MAX_BYTES		SZ_64M

/* Handshake limits: option data we parse, drain, or consider hostile. */
#define KNBD_OPT_MAX_PARSE		(KNBD_NBD_MAX_STRING + 4 + 2 + 2 * 64)
#define KNBD_OPT_MAX_DRAIN		SZ_1M
#define KNBD_MAX_OPTIONS		256
#define KNBD_HANDSHAKE_TIMEOUT		(30 * HZ)
#define KNBD_SEND_TIMEOUT_SECS		30

/*
 * In transmission the receiver wakes this often when idle, to notice a
 * drain; a request that makes no progress for KNBD_CONN_STALLS polls in
 * a row is given up (the client is gone or hostile).
 */
#define KNBD_CONN_POLL			(HZ / 5)
#define KNBD_CONN_STALLS		150		/* 30 s */
/* A draining connection serves what is queued for at most this long ... */
#define KNBD_DRAIN_READ_TIME		(2 * HZ)
/* ... gathers the replies of what it read for at most this long ... */
#define KNBD_DRAIN_GATHER_TIME		(10 * HZ)
/* ... holds them once nothing is queued and waits this long for stragglers ... */
#define KNBD_DRAIN_QUIET_MS		100
/* ... and waits this long for them to leave before its reset. */
#define KNBD_DRAIN_CLOSE_TIME		(5 * HZ)

/* Server-to-server links. */
#define KNBD_DEFAULT_PEER_PORT		10810
#define KNBD_PEER_MAX_INFLIGHT		128U
#define KNBD_PEER_IO_TIMEOUT		(30 * HZ)	/* no reply this long: link dead */
#define KNBD_PEER_POLL			(5 * HZ)	/* how often the reader checks */
#define KNBD_PEER_HELLO_TIMEOUT		(5 * HZ)
#define KNBD_PEER_BACKOFF_MIN_MS	100
#define KNBD_PEER_BACKOFF_MAX_MS	5000

/* ---- pure protocol logic (proto.c): no sockets, no files ---- */

/* A decoded transmission request. */
struct knbd_cmd {
	u64 cookie;
	u64 offset;
	u32 len;
	u16 type;
	u16 flags;
};

/* What a client may do with an export, as advertised in the handshake. */
struct knbd_export_info {
	u64 size;
	u32 min_block;
	u32 pref_block;
	u32 max_block;
	bool readonly;
};

/* The parsed data of KNBD_NBD_OPT_INFO / KNBD_NBD_OPT_GO. */
struct knbd_go_req {
	const char *name;	/* points into the option data, not NUL terminated */
	u32 name_len;
	bool want_name;
	bool want_description;
	bool want_block_size;
};

/* Verdict for one request header. */
enum knbd_req_verdict {
	KNBD_REQ_OK,		/* execute it */
	KNBD_REQ_ERROR,		/* reply with *nbd_err (after draining any payload) */
	KNBD_REQ_DISC,		/* orderly disconnect */
	KNBD_REQ_FATAL,		/* protocol violation: close the connection */
};

void knbd_proto_encode_hello(struct nbd_wire_hello *hello);
int knbd_proto_check_client_flags(u32 flags, bool *no_zeroes);
int knbd_proto_decode_opt(const struct nbd_wire_opt *wire, u32 *option, u32 *len);
void knbd_proto_encode_opt_reply(struct nbd_wire_opt_reply *reply, u32 option,
				 u32 type, u32 len);
u32 knbd_proto_parse_go(const void *data, u32 len, struct knbd_go_req *req);
u16 knbd_proto_transmission_flags(const struct knbd_export_info *ei);
void knbd_proto_encode_info_export(struct nbd_wire_info_export *info,
				   const struct knbd_export_info *ei);
void knbd_proto_encode_info_block_size(struct nbd_wire_info_block_size *info,
				       const struct knbd_export_info *ei);
int knbd_proto_decode_request(const struct nbd_wire_request *wire,
			      struct knbd_cmd *cmd);
enum knbd_req_verdict knbd_proto_check_request(const struct knbd_cmd *cmd,
					       const struct knbd_export_info *ei,
					       u32 *nbd_err);
u32 knbd_proto_payload_len(const struct knbd_cmd *cmd);
void knbd_proto_encode_reply(struct nbd_wire_simple_reply *reply, u64 cookie,
			     u32 nbd_err);
u32 knbd_proto_errno_to_nbd(int err);
int knbd_proto_nbd_to_errno(u32 nbd_err);
const char *knbd_proto_cmd_name(u16 type);

/* ---- routing of partitioned volumes (route.c): pure ---- */

#define KNBD_MAX_MEMBERS		64
#define KNBD_EXTENT_MIN_SHIFT		16	/* 64 KiB */
#define KNBD_EXTENT_MAX_SHIFT		30	/* 1 GiB */
#define KNBD_DEFAULT_EXTENT_SHIFT	20	/* 1 MiB */
#define KNBD_ROUTE_MAX_EXTENTS		BIT(24)

/*
 * Owner of every extent of a volume.  Published with RCU in
 * knbd_volume::route; immutable once published.
 */
struct knbd_route {
	struct rcu_head rcu;
	u64 epoch;
	u64 size;
	u32 extent_shift;
	u32 nr_extents;
	u32 checksum;
	u16 nr_members;
	u16 nr_stripe;			/* > 0: made by a stripe line */
	u32 members[KNBD_MAX_MEMBERS];	/* node ids; owner[] indexes this */
	u32 stripe[KNBD_MAX_MEMBERS];
	u16 owner[];
};

/* One piece of a request that a single member serves. */
struct knbd_seg {
	u64 offset;
	u64 len;
	u32 owner;
};

/* What a forwarded piece carries so the owner can check our table matches. */
struct knbd_route_id {
	u64 epoch;
	u32 checksum;
};

struct knbd_route *knbd_route_parse(const char *text, size_t len, u64 size,
				    u32 extent_shift, const char **why);
void knbd_route_free(struct knbd_route *rt);
u32 knbd_route_owner(const struct knbd_route *rt, u64 offset);
u32 knbd_route_split(const struct knbd_route *rt, u64 offset, u64 len,
		     struct knbd_seg *segs, u32 max);
bool knbd_route_owns(const struct knbd_route *rt, u64 offset, u64 len, u32 id);
u64 knbd_route_count(const struct knbd_route *rt, u32 id);
int knbd_route_format(const struct knbd_route *rt, char *buf, size_t size);

/* ---- server-to-server frames (proto.c): pure ---- */

#define KNBD_PEER_MAX_FRAME	(sizeof(struct knbd_peer_io) + KNBD_PEER_MAX_NAME + \
				 KNBD_MAX_REQ_BYTES)

void knbd_peer_encode_hdr(struct knbd_peer_hdr *hdr, u16 type, u32 len);
int knbd_peer_decode_hdr(const struct knbd_peer_hdr *hdr, u16 *type, u32 *len);
int knbd_peer_decode_io(const struct knbd_peer_io *io, u32 frame_len,
			struct knbd_cmd *cmd, u64 *epoch, u32 *checksum,
			u16 *name_len);
int knbd_peer_check_reply(u32 frame_len, u32 error, u32 status, u16 cmd,
			  u32 len);

/* ---- load arithmetic (load.c): pure ---- */

#define KNBD_LOAD_BYTES_PER_OP		65536ULL
#define KNBD_LOAD_EWMA_SHIFT		2
#define KNBD_LOAD_STALE_TICKS		5
#define KNBD_DEFAULT_LOAD_TICK_MS	200
#define KNBD_MIN_LOAD_TICK_MS		20
#define KNBD_MAX_LOAD_TICK_MS		10000

u64 knbd_load_sample(u64 ops, u64 bytes, u32 elapsed_ms);
u64 knbd_load_ewma(u64 avg, u64 sample, unsigned int shift);
bool knbd_load_fresh(unsigned long now, unsigned long at, unsigned long tick);

/* ---- connection manager policy (connmgr.c): pure ---- */

#define KNBD_CM_DEFAULT_THRESHOLD_PCT	130
#define KNBD_CM_DEFAULT_CLEAR_PCT	110
#define KNBD_CM_DEFAULT_HOLD_MS		1000
#define KNBD_CM_DEFAULT_INTERVAL_MS	1000
/*
 * The policy looks at loads smoothed further (weight 1/8 per tick, ~1.6 s
 * at 200 ms): a move costs the client a reconnect, so a few noisy ticks
 * must not trigger one.
 */
#define KNBD_CM_EWMA_SHIFT		3
/* A moved client not back in the group's connection count by then is gone. */
#define KNBD_CM_LAND_TIME		(3 * HZ)
#define KNBD_CM_DEFAULT_MIN_LOAD	20000	/* milli: 20 weighted ops/s */
#define KNBD_CM_MAX_PCT			1000
#define KNBD_CM_MAX_MS			600000

/* Tunables, from configfs (nodes/<n>/balance_*). */
struct knbd_cm_params {
	u32 threshold_pct;	/* over-utilised above mean * pct / 100 */
	u32 clear_pct;		/* ... until back under mean * clear / 100 */
	u32 hold_ms;		/* over-utilised this long before the first move */
	u32 interval_ms;	/* at least this long between two moves */
	u64 min_load;		/* never shed below this load (milli) */
};

/* One member as this node sees it at a tick; own entry included. */
struct knbd_cm_member {
	u32 id;
	u64 load;
	u32 conns;		/* its client connections */
	bool fresh;		/* report recent enough to use */
	bool shedding;		/* says it is moving connections now */
};

/* What the policy remembers between ticks (jiffies; 0 = never). */
struct knbd_cm_state {
	unsigned long over_since;
	unsigned long last_move;
	unsigned long landed_at;	/* the last moved client seen back */
	u32 conns_before;	/* the group's client connections at the move */
	bool landing;		/* the moved client has not reconnected yet */
	bool active;		/* above threshold, not yet under clear */
};

enum knbd_cm_verdict {
	KNBD_CM_IDLE,		/* balanced enough, or not our turn */
	KNBD_CM_WAIT,		/* over-utilised; hold time or interval not over */
	KNBD_CM_MOVE,		/* move one connection now */
	KNBD_CM_DEFER,		/* over-utilised, but a busier member is moving */
};

/* Group figures of the fresh members (own always counts). */
struct knbd_cm_group {
	u64 mean;
	u64 min;
	u64 max;
	u32 nr;
	u32 max_id;		/* the most loaded member, lowest id on ties */
	bool other_shedding;
};

void knbd_cm_group(const struct knbd_cm_member *m, unsigned int nr,
		   struct knbd_cm_group *g);
enum knbd_cm_verdict knbd_cm_assess(const struct knbd_cm_params *p,
				    struct knbd_cm_state *st,
				    const struct knbd_cm_member *m, unsigned int nr,
				    unsigned int self, unsigned long now);
void knbd_cm_moved(struct knbd_cm_state *st, const struct knbd_cm_member *m,
		   unsigned int nr, unsigned long now);
u64 knbd_cm_target(const struct knbd_cm_group *g, u64 own);
int knbd_cm_pick(const u64 *conn_load, unsigned int nr, u64 own, u64 min,
		 u64 target);
const char *knbd_cm_verdict_name(enum knbd_cm_verdict v);

/* ---- objects ---- */

struct knbd_vol_stats {
	atomic64_t reads;
	atomic64_t writes;
	atomic64_t read_bytes;
	atomic64_t write_bytes;
	atomic64_t flushes;
	atomic64_t trims;
	atomic64_t write_zeroes;
	atomic64_t errors;
	atomic64_t local_ios;		/* pieces served from this member's store */
	atomic64_t forwarded_ios;	/* pieces sent to their owner */
	atomic64_t peer_ios;		/* pieces served for other members */
	atomic64_t epoch_mismatches;
};

struct knbd_node;
struct knbd_monitor;

/* A listening socket of a node: clients, or other members. */
struct knbd_listener {
	struct knbd_node *node;
	struct socket *sock;
	void (*saved_data_ready)(struct sock *sk);
	struct work_struct accept_work;
	bool peer;
};

struct knbd_node {
	struct config_group group;
	struct config_group volumes_group;
	struct config_group peers_group;

	/*
	 * state_lock serialises enabling and disabling the node, its volumes
	 * and its peers, and is held while waiting for connections to go.
	 * lock protects configuration, enable flags and the volume list; it
	 * is never held while waiting, as handshakes and peer lookups take it.
	 * Order: state_lock -> lock -> conns_lock.
	 */
	struct mutex state_lock;	/* enable/disable transitions */
	struct mutex lock;		/* configuration, flags, volumes */
	struct list_head volumes;
	unsigned int nr_volumes;
	struct sockaddr_storage listen_addr;
	u16 listen_port;
	u16 peer_port;
	u32 max_conns;
	u32 node_id;
	u32 group_id;
	bool enabled;

	/* Valid while enabled. */
	struct net *net;
	struct knbd_listener clients;
	struct knbd_listener peers_listener;

	/* Peer links, RCU list; writers hold lock. */
	struct list_head peers;

	/* Load monitor (monitor.c), running while enabled. */
	struct task_struct *load_task;
	struct knbd_monitor *load_mon;	/* its scratch space */
	struct list_head group_entry;	/* knbd_group_nodes (RCU) while enabled */
	u32 load_tick_ms;
	u32 load_seq;
	u64 load;			/* client connections: what balancing moves */
	u64 peer_load;			/* serving other members' forwarded pieces */
	u32 client_conns;
	u32 lat_us;			/* smoothed mean service time of a request */
	u32 inflight;			/* client requests in flight at the last tick */

	/* Connection manager (connmgr.c policy, monitor.c driver). */
	struct knbd_cm_params cm;
	struct knbd_cm_state cm_state;
	bool cm_enabled;
	bool cm_shedding;		/* advertised to peers */
	u64 cm_load;			/* node->load smoothed for the policy */
	enum knbd_cm_verdict cm_verdict;
	atomic64_t cm_moves;		/* connections drained by the manager */
	atomic64_t cm_drains;		/* by an admin, through configfs */
	atomic64_t cm_skipped;		/* over-utilised but no connection fits */
	atomic64_t cm_deferred;		/* another member was moving already */
	atomic64_t drain_dropped;	/* requests unread when a drain closed */

	/* Client and peer-server connections; lock order: lock -> conns_lock. */
	struct mutex conns_lock;
	struct list_head conns;
	atomic_t nr_conns;
	u64 next_conn_id;
};

struct knbd_volume {
	struct config_group group;
	struct knbd_node *node;
	struct list_head node_entry;	/* node->volumes, under node->lock */

	/* Configuration, under node->lock; frozen while enabled. */
	char *backing_path;
	char *description;
	u64 size_cfg;
	u32 min_block;
	u32 extent_shift;
	bool readonly;
	bool enabled;

	/* Valid while enabled. */
	struct file *backing;
	struct knbd_export_info info;

	/* NULL: every extent is local.  Replaced under node->lock. */
	struct knbd_route __rcu *route;

	/* Users: attached connections and peer requests in flight. */
	atomic_t nr_conns;
	struct knbd_vol_stats stats;
	u64 load;			/* of the clients attached here */
};

enum knbd_peer_state {
	KNBD_PEER_DOWN,
	KNBD_PEER_CONNECTING,
	KNBD_PEER_UP,
};

/* The outgoing link to another member, which serves our forwarded pieces. */
struct knbd_peer {
	struct config_group group;
	struct knbd_node *node;
	struct list_head node_entry;	/* node->peers (RCU) */

	/* Configuration, under node->lock; frozen while the node is enabled. */
	struct sockaddr_storage addr;
	u16 port;
	u32 node_id;

	/* Link. */
	struct delayed_work connect_work;
	struct work_struct recv_work;
	unsigned int backoff_ms;
	enum knbd_peer_state state;
	bool stopping;
	bool running;			/* started by node enable */
	u32 remote_group;

	/* Serialises frames on the socket; sock and gen change under it too. */
	struct mutex send_lock;
	struct socket *sock;

	/* Forwarded pieces waiting for their reply. */
	spinlock_t pending_lock;
	struct list_head pending;
	bool link_up;
	u32 gen;
	u64 next_cookie;
	unsigned int inflight;
	wait_queue_head_t wait;

	/* The peer's last load report; remote_at == 0: none yet. */
	u64 remote_load;
	u32 remote_conns;
	u32 remote_seq;
	unsigned long remote_at;
	u32 remote_flags;		/* KNBD_LOAD_F_* */
	u64 cm_load;			/* remote_load smoothed for the policy */
	bool cm_fresh;

	atomic_t users;			/* forwarders inside knbd_peer_forward() */
	atomic64_t forwarded;
	atomic64_t failed;
	atomic64_t connects;
	atomic64_t mismatches;
};

/* One piece of a client request on its way to its owner. */
struct knbd_fwd {
	struct list_head entry;
	struct completion done;
	u64 cookie;
	unsigned long sent_at;		/* jiffies, for the I/O timeout */
	u16 cmd;
	u16 flags;
	u64 offset;
	u32 len;
	struct iov_iter iter;		/* WRITE source or READ destination */
	u32 nbd_err;
	u32 status;
	u64 remote_epoch;
};

enum knbd_conn_state {
	KNBD_CONN_HANDSHAKE,
	KNBD_CONN_TRANSMISSION,
	KNBD_CONN_DRAINING,		/* serving what is queued, then closing */
	KNBD_CONN_CLOSING,
};

struct knbd_conn {
	struct kref ref;
	struct knbd_node *node;
	struct knbd_volume *vol;	/* client: set once under node->lock at GO */
	struct socket *sock;
	struct list_head node_entry;	/* node->conns, under conns_lock */
	struct work_struct recv_work;
	u64 id;
	struct sockaddr_storage peer;
	enum knbd_conn_state state;
	bool no_zeroes;
	bool is_peer;			/* another member, not an NBD client */
	u32 peer_id;

	/* Serialises replies: header and data of one reply stay together. */
	struct mutex send_lock;

	/* In-flight accounting; the receive side waits here for room. */
	spinlock_t lock;
	unsigned int inflight;
	u64 inflight_bytes;
	wait_queue_head_t wait;

	atomic64_t ops;
	atomic64_t bytes;
	atomic64_t lat_ns;		/* service time of the replied requests */
	u64 load_ops;			/* counters at the last load tick */
	u64 load_bytes;
	u64 load_lat_ns;
	u64 load;			/* smoothed, milli weighted ops/s */
	u32 lat_us;			/* smoothed mean service time */

	/* Graceful close (connection manager or admin): see knbd_conn_drain(). */
	bool draining;
	unsigned long drain_at;
	atomic_t reply_waiters;		/* replies ready, held back by a drain */
	bool replies_held;		/* the receiver holds send_lock for it */

	/* Scratch space for the handshake and for draining refused payloads. */
	void *buf;
};

struct knbd_req {
	struct knbd_conn *conn;
	struct knbd_volume *vol;
	struct work_struct work;
	struct knbd_cmd cmd;
	u64 start_ns;			/* header read: for the service time */
	u32 nbd_err;
	u32 peer_status;		/* peer-server requests: KNBD_PEER_* */
	unsigned int nr_bvec;
	struct bio_vec *bvec;
	struct bio_vec inline_bvec[];
};

/* Payload memory a request pins while in flight, counted against the budget. */
static inline u32 knbd_cmd_mem_bytes(const struct knbd_cmd *cmd)
{
	if (cmd->type == KNBD_NBD_CMD_READ || cmd->type == KNBD_NBD_CMD_WRITE)
		return cmd->len;
	return 0;
}

/* core.c */
extern struct workqueue_struct *knbd_wq;
extern struct workqueue_struct *knbd_io_wq;
void knbd_node_init_work(struct knbd_node *node);
int knbd_node_enable(struct knbd_node *node);
void knbd_node_disable(struct knbd_node *node);
void knbd_node_close_volume_conns(struct knbd_node *node, struct knbd_volume *vol);
struct knbd_volume *knbd_node_get_volume(struct knbd_node *node, const char *name,
					 u32 len);
void knbd_volume_put_user(struct knbd_volume *vol);
void knbd_conn_put(struct knbd_conn *conn);
void knbd_conn_req_done(struct knbd_conn *conn, u32 data_len);
bool knbd_conn_has_room(struct knbd_conn *conn, u32 bytes);
void knbd_conn_unreserve(struct knbd_conn *conn, u32 bytes);
int knbd_conn_send_reply(struct knbd_conn *conn, u64 cookie, u32 nbd_err,
			 struct bio_vec *bvec, unsigned int nr_bvec, u32 len);
int knbd_recv(struct socket *sock, void *buf, size_t len);
int knbd_recv_stalls(struct socket *sock, void *buf, size_t len, int flags,
		     unsigned int max_stalls);
int knbd_recv_iter(struct socket *sock, struct iov_iter *iter);
int knbd_recv_iter_stalls(struct socket *sock, struct iov_iter *iter,
			  unsigned int max_stalls);
int knbd_conn_drain(struct knbd_node *node, u64 id, bool by_admin);
int knbd_send(struct socket *sock, const void *buf, size_t len, int flags);
int knbd_send_iter(struct socket *sock, struct iov_iter *iter, int flags);
int knbd_drain(struct knbd_conn *conn, u32 len);
void knbd_sock_set_rcvtimeo(struct socket *sock, long timeo);

/* io.c */
int knbd_backing_open(struct knbd_volume *vol);
void knbd_backing_close(struct knbd_volume *vol);
struct knbd_req *knbd_req_alloc(struct knbd_conn *conn, const struct knbd_cmd *cmd);
void knbd_req_free(struct knbd_req *req);
void knbd_io_submit(struct knbd_req *req);

/* peer.c */
void knbd_peer_init(struct knbd_peer *peer, struct knbd_node *node);
void knbd_peer_start(struct knbd_peer *peer);
void knbd_peer_stop(struct knbd_peer *peer);
struct knbd_peer *knbd_peer_get(struct knbd_node *node, u32 node_id);
void knbd_peer_put(struct knbd_peer *peer);
int knbd_peer_forward(struct knbd_peer *peer, struct knbd_volume *vol,
		      const struct knbd_route_id *rid, struct knbd_fwd *fwd);
void knbd_peer_serve(struct knbd_conn *conn);
int knbd_peer_send_reply(struct knbd_conn *conn, struct knbd_req *req,
			 const struct knbd_route_id *rid);
const char *knbd_peer_state_name(enum knbd_peer_state state);
void knbd_peer_send_load(struct knbd_peer *peer, u64 load, u32 conns, u32 seq,
			 u32 flags);

/* monitor.c */
int knbd_load_start(struct knbd_node *node);
void knbd_load_stop(struct knbd_node *node);
void knbd_group_add(struct knbd_node *node);
void knbd_group_del(struct knbd_node *node);

/* configfs.c */
int knbd_configfs_init(void);
void knbd_configfs_exit(void);

#endif /* _KNBD_H */
