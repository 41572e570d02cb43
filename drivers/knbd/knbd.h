/* SPDX-License-Identifier: GPL-2.0 */
/*
 * knbd private definitions shared by the files of the module.
 *
 * Floors, calls going down only (Documentation/design.md):
 *
 *   configfs.c                       the admin's tree
 *   node.c volume.c                  objects: enable, disable, publish a route
 *   listener.c                       accepts, hands sockets to a transport
 *   nbd.c drain.c peer_serve.c       transports: NBD clients, other members
 *   conn.c sock.c                    the connection engine shared by both
 *   req.c                            core: a request split into pieces
 *   backing.c peer_link.c            where pieces go: the local store, a member
 *   auth.c                           the group key, the member handshake's MACs
 *   proto.c route.c load.c connmgr.c pure logic, no sockets (KUnit)
 *   acl.c                            pure too: a volume's allowed_hosts
 *
 * monitor.c (the load thread) sits beside node.c.  Callbacks go up only
 * through function pointers: a piece's completion (knbd_piece_done()) and a
 * request's transport (knbd_conn_ops::queue_reply), as in nvmet.
 */
#ifndef _KNBD_H
#define _KNBD_H

#include <linux/atomic.h>
#include <linux/bvec.h>
#include <linux/completion.h>
#include <linux/configfs.h>
#include <linux/fs.h>
#include <linux/hashtable.h>
#include <linux/idr.h>
#include <linux/list.h>
#include <linux/llist.h>
#include <linux/mutex.h>
#include <linux/percpu-refcount.h>
#include <linux/sizes.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/types.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <knbd/nbd_proto.h>
#include <knbd/peer_proto.h>

#define KNBD_DEFAULT_PORT		10809
#define KNBD_DEFAULT_MAX_CONNS		64
#define KNBD_MAX_CONNS_LIMIT		65536
#define KNBD_MAX_VOLUMES		KNBD_PEER_MAX_HANDLES

/* Largest READ or WRITE payload accepted (advertised as maximum block size). */
#define KNBD_MAX_REQ_BYTES		SZ_32M
#define KNBD_PREF_BLOCK			4096U
#define KNBD_DEFAULT_MIN_BLOCK		512U
#define KNBD_MAX_MIN_BLOCK		4096U

/*
 * Per-connection bounds: a client may keep queue_depth requests (the pool
 * preallocated when transmission starts) and this many payload bytes in
 * flight; beyond that the connection stops reading its socket and TCP flow
 * control pushes back.  128 is nbd.ko's depth per connection.
 */
#define KNBD_DEFAULT_QUEUE_DEPTH	128U
#define KNBD_MAX_QUEUE_DEPTH		1024U
#define KNBD_CONN_MAX_BYTES		SZ_64M
/* A member link serves the pieces of many clients: a deeper pool. */
#define KNBD_PEER_QUEUE_DEPTH		512U
#define KNBD_PEER_MAX_BYTES		SZ_128M

/*
 * The node's payload budget (max_inflight_mb), shared by all its
 * connections: a connection with nothing in flight is always admitted one
 * request, outside the budget, so that no connection is starved by the
 * others and members never wait on each other's budgets in a circle; any
 * further request waits (KNBD_RCV_ROOM, in turn) until the budget has room.
 * The minimum holds the largest request.
 */
#define KNBD_DEFAULT_MAX_INFLIGHT_MB	1024U
#define KNBD_MIN_INFLIGHT_MB		(KNBD_MAX_REQ_BYTES >> 20)
#define KNBD_MAX_INFLIGHT_MB		1048576U	/* 1 TiB */

/*
 * io_work budgets, as nvmet-tcp: so many receives and sends per round,
 * so many rounds before the work yields and requeues itself.
 */
#define KNBD_RECV_BUDGET		8
#define KNBD_SEND_BUDGET		8
#define KNBD_IO_WORK_BUDGET		64
/* A WRITE payload gets pages this far ahead of what has arrived, no more. */
#define KNBD_RECV_AHEAD			SZ_64K

/* Handshake limits: option data we parse, drain, or consider hostile. */
#define KNBD_OPT_MAX_PARSE		(KNBD_NBD_MAX_STRING + 4 + 2 + 2 * 64)
#define KNBD_OPT_MAX_DRAIN		SZ_1M
#define KNBD_MAX_OPTIONS		256
/* Seconds from accept to GO (or a member's HELLO), in all: handshake_timeout. */
#define KNBD_DEFAULT_HANDSHAKE_TIMEOUT	60
#define KNBD_MAX_HANDSHAKE_TIMEOUT	3600

/*
 * A connection that makes no progress for io_timeout seconds while it owes
 * us the rest of a request, or while its replies wait to be read, is
 * closed: the client is gone, hostile, or does not read.
 */
#define KNBD_DEFAULT_IO_TIMEOUT		30
#define KNBD_MAX_IO_TIMEOUT		3600

/*
 * idle_timeout: a client connection with nothing in flight that sent
 * nothing this long is closed; 0 (the default) never: nbd.ko keeps idle
 * connections for hours.  A member link carries a LOAD frame every load
 * tick of its sender (load_tick_ms, at most KNBD_MAX_LOAD_TICK_MS), so
 * one silent for three of the longest ticks is dead.
 */
#define KNBD_MAX_IDLE_TIMEOUT		(7 * 24 * 3600)
#define KNBD_PEER_IDLE_TIMEOUT		msecs_to_jiffies(3 * KNBD_MAX_LOAD_TICK_MS)

/* TCP keepalive on every connection: a peer that vanished goes in ~2 min. */
#define KNBD_KEEPALIVE_IDLE		60
#define KNBD_KEEPALIVE_INTVL		10
#define KNBD_KEEPALIVE_CNT		6

/* A draining connection serves what is queued for at most this long ... */
#define KNBD_DRAIN_READ_TIME		(2 * HZ)
/* ... gathers the replies of what it read for at most this long ... */
#define KNBD_DRAIN_GATHER_TIME		(10 * HZ)
/* ... holds them once nothing is queued and waits this long for stragglers ... */
#define KNBD_DRAIN_QUIET_MS		100
/* ... and waits this long for them to leave before its reset. */
#define KNBD_DRAIN_CLOSE_TIME		(5 * HZ)
/*
 * A request that comes in the last step (replies corked, or leaving) is
 * served until this long after the drain began; past it, dropped.
 */
#define KNBD_DRAIN_LATE_TIME		(4 * HZ)

/* Server-to-server links. */
#define KNBD_DEFAULT_PEER_PORT		10810
#define KNBD_GROUP_KEY_MIN		16	/* bytes of the member group key */
#define KNBD_GROUP_KEY_MAX		64
#define KNBD_PEER_HELLO_TIMEOUT		(5 * HZ)
/* An incoming member link proves itself in this long (or handshake_timeout). */
#define KNBD_PEER_AUTH_TIMEOUT		(2 * KNBD_PEER_HELLO_TIMEOUT)
#define KNBD_PEER_BACKOFF_MIN_MS	100
#define KNBD_PEER_BACKOFF_MAX_MS	5000
#define KNBD_PEER_COOKIE_BITS		10		/* hash of pending pieces */

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
 * The longest table text taken (routing_table; routing takes a page).  Its
 * printed form is at most a header line longer: routing_table reads up to
 * KNBD_ROUTE_TEXT_MAX + PAGE_SIZE, so any table taken reads back whole.
 */
#define KNBD_ROUTE_TEXT_MAX		(4U << 20)
#define KNBD_ROUTE_STATUS_LEN		320	/* "ok epoch N" or "refused: ..." */

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

/* The first extent a new table gives to another member (knbd_route_diff()). */
struct knbd_route_move {
	u64 extent;			/* index, in the finer extent size of the two */
	u64 offset;			/* its first byte */
	u32 from;
	u32 to;
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
size_t knbd_route_format_len(const struct knbd_route *rt);
u64 knbd_route_diff(const struct knbd_route *old, const struct knbd_route *new,
		    u32 self, struct knbd_route_move *mv);
bool knbd_route_members_known(const struct knbd_route *rt, const u32 *ids,
			      unsigned int nr, u32 *unknown);

/* ---- client access control (acl.c): pure ---- */

#define KNBD_ACL_MAX_ENTRIES		64

/*
 * A volume's allowed_hosts.  IPv4 entries are kept IPv4-mapped
 * (::ffff:a.b.c.d, prefix + 96): one compare serves IPv4 clients and the
 * mapped ones of a dual-stack listener.  Published with RCU in
 * knbd_volume::acl (NULL: any host); immutable once published.
 */
struct knbd_acl_entry {
	u8 addr[16];
	u8 prefix;			/* leading bits of addr that must match */
	bool v4;			/* written, and shown, as IPv4 */
};

struct knbd_acl {
	struct rcu_head rcu;
	u32 nr;
	struct knbd_acl_entry e[];
};

struct knbd_acl *knbd_acl_parse(const char *text, size_t len, const char **why);
void knbd_acl_free(struct knbd_acl *acl);
bool knbd_acl_match(const struct knbd_acl *acl, const struct sockaddr_storage *ss);
bool knbd_acl_same_host(const struct sockaddr_storage *a,
			const struct sockaddr_storage *b);
int knbd_acl_format(const struct knbd_acl *acl, char *buf, size_t size);

/* ---- server-to-server frames (proto.c): pure ---- */

#define KNBD_PEER_MAX_FRAME	(sizeof(struct knbd_peer_io) + KNBD_MAX_REQ_BYTES)
#define KNBD_PEER_HELLO_FRAME	(sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_hello))
#define KNBD_PEER_AUTH_FRAME	(sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_auth))

void knbd_peer_encode_hdr(struct knbd_peer_hdr *hdr, u16 type, u32 len);
int knbd_peer_decode_hdr(const struct knbd_peer_hdr *hdr, u16 *type, u32 *len);
int knbd_peer_decode_io(const struct knbd_peer_io *io, u32 frame_len,
			struct knbd_cmd *cmd, u64 *epoch, u32 *checksum,
			u32 *handle);
int knbd_peer_decode_bind(const struct knbd_peer_bind *bind, u32 frame_len,
			  u32 *handle, u16 *name_len);
int knbd_peer_check_reply(u32 frame_len, u32 error, u32 status, u16 cmd,
			  u32 len);
void knbd_peer_encode_hello(void *buf, u32 node_id, u32 group_id, u32 flags,
			    const u8 *nonce, const u8 *mac);
int knbd_peer_decode_hello(const struct knbd_peer_hello *hello, u32 *id, u32 *group,
			   u32 *flags);
void knbd_peer_auth_transcript(struct knbd_peer_auth_transcript *t, bool server,
			       u32 client_id, u32 server_id, u32 group_id, u32 flags,
			       const u8 *client_nonce, const u8 *server_nonce);

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
/* Connections one decision may move (a burst of reconnects at most this big). */
#define KNBD_CM_MAX_BATCH		32
/* ... and per member under the mean, shared by the members shedding at once */
#define KNBD_CM_PER_RECEIVER		2

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
	u64 moved_load;		/* what the last decision moved */
	bool landing;		/* the moved client has not reconnected yet */
	bool active;		/* above threshold, not yet under clear */
};

enum knbd_cm_verdict {
	KNBD_CM_IDLE,		/* balanced enough, or not our turn */
	KNBD_CM_WAIT,		/* over-utilised; hold time or interval not over */
	KNBD_CM_MOVE,		/* move one connection now */
	KNBD_CM_DEFER,		/* no longer decided: members shed at once */
};

/* Group figures of the fresh members (own always counts). */
struct knbd_cm_group {
	u64 mean;
	u64 min;
	u64 max;
	u32 nr;
	u32 max_id;		/* the most loaded member, lowest id on ties */
};

void knbd_cm_group(const struct knbd_cm_member *m, unsigned int nr,
		   struct knbd_cm_group *g);
enum knbd_cm_verdict knbd_cm_assess(const struct knbd_cm_params *p,
				    struct knbd_cm_state *st,
				    const struct knbd_cm_member *m, unsigned int nr,
				    unsigned int self, unsigned long now);
void knbd_cm_moved(struct knbd_cm_state *st, const struct knbd_cm_member *m,
		   unsigned int nr, unsigned long now, u64 load);
u64 knbd_cm_target(const struct knbd_cm_group *g, u64 own);
unsigned int knbd_cm_batch_max(const struct knbd_cm_member *m, unsigned int nr,
			       unsigned int self, const struct knbd_cm_group *g);
int knbd_cm_pick(const u64 *conn_load, unsigned int nr, u64 own, u64 min,
		 u64 target);
unsigned int knbd_cm_pick_batch(u64 *conn_load, unsigned int nr, u64 own,
				u64 min, u64 target, int *picks, u64 *pick_load,
				unsigned int max);
const char *knbd_cm_verdict_name(enum knbd_cm_verdict v);

/*
 * The client safety rule (connmgr.c): a connection is moved only when its
 * client keeps service.
 */
enum knbd_cm_movable {
	KNBD_CM_MOVABLE_NO,	/* its only connection here, never seen back */
	KNBD_CM_MOVABLE_MULTI,	/* the client has another live connection here */
	KNBD_CM_MOVABLE_PROVEN,	/* the client came back after a drain */
};

#define KNBD_CM_TALLY_BITS	10
#define KNBD_CM_TALLY_SLOTS	BIT(KNBD_CM_TALLY_BITS)
#define KNBD_CM_TALLY_PROBES	32

/* Live connections per client key, rebuilt every tick (count 0: free). */
struct knbd_cm_tally {
	u32 key[KNBD_CM_TALLY_SLOTS];
	u16 count[KNBD_CM_TALLY_SLOTS];
};

/* Drained clients, and those that came back; the oldest entry gives way. */
#define KNBD_CM_PROOF_SLOTS	256
/* A drained client back later than this proves nothing. */
#define KNBD_CM_PROOF_TIME	(30 * HZ)

struct knbd_cm_proof_entry {
	u32 key;
	bool proven;
	unsigned long at;	/* last drained (jiffies); 0: free */
};

struct knbd_cm_proof {
	struct knbd_cm_proof_entry e[KNBD_CM_PROOF_SLOTS];
};

u32 knbd_cm_fp_init(u32 cflags);
u32 knbd_cm_fp_add(u32 fp, u32 option);
u32 knbd_cm_client_key(const struct sockaddr_storage *ss, const char *vol,
		       size_t vol_len, u32 fp);
enum knbd_cm_movable knbd_cm_movable(unsigned int live, bool proven);
const char *knbd_cm_movable_name(enum knbd_cm_movable mv);
void knbd_cm_tally_reset(struct knbd_cm_tally *t);
void knbd_cm_tally_add(struct knbd_cm_tally *t, u32 key);
unsigned int knbd_cm_tally_count(const struct knbd_cm_tally *t, u32 key);
void knbd_cm_proof_drained(struct knbd_cm_proof *pt, u32 key, unsigned long now);
bool knbd_cm_proof_back(struct knbd_cm_proof *pt, u32 key, unsigned long now);
bool knbd_cm_proven(const struct knbd_cm_proof *pt, u32 key);
bool knbd_cm_back_in_group(const struct knbd_cm_state *st,
			   const struct knbd_cm_member *m, unsigned int nr,
			   unsigned long now);

/* ---- objects ---- */

/* The socket callbacks knbd takes over (sock.c), and what it saved. */
struct knbd_sock_cbs {
	void (*data_ready)(struct sock *sk);
	void (*write_space)(struct sock *sk);
	void (*state_change)(struct sock *sk);
};

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
	atomic64_t fallback_ios;	/* local pieces a worker had to run */
	atomic64_t lat_us_sum;		/* client requests: header read to completion */
	atomic64_t lat_ops;		/* ... and how many requests that sum covers */
};

struct crypto_shash;
struct knbd_node;
struct knbd_monitor;
struct knbd_conn;
struct knbd_req;
struct knbd_conn_ops;
struct knbd_piece;
struct knbd_volume;

/* A listening socket of a node: clients, or other members. */
struct knbd_listener {
	struct knbd_node *node;
	struct socket *sock;
	const struct knbd_conn_ops *ops;	/* the transport of its connections */
	void (*saved_data_ready)(struct sock *sk);
	struct work_struct accept_work;
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
	struct ida vol_ida;		/* volume ids: member links name volumes by them */
	struct sockaddr_storage listen_addr;
	u16 listen_port;
	u16 peer_port;
	u32 max_conns;
	u32 queue_depth;		/* requests in flight per client connection */
	u32 io_timeout;			/* seconds; see KNBD_DEFAULT_IO_TIMEOUT */
	u32 handshake_timeout;		/* seconds, accept to GO */
	u32 idle_timeout;		/* seconds, 0: off; clients only */
	u32 max_inflight_mb;		/* payload budget of all connections */
	u32 node_id;
	u32 group_id;
	u32 max_conns_per_host;		/* client connections per source address; 0: any */
	bool allow_list;		/* answer NBD_OPT_LIST (else ERR_POLICY) */
	bool enabled;

	/* Member authentication (auth.c); the key is set while disabled. */
	u8 group_key[KNBD_GROUP_KEY_MAX];
	u8 group_key_len;		/* 0: no key */
	bool insecure_peers;		/* the admin allows links without a key */
	struct crypto_shash *auth_tfm;	/* while enabled with a key */

	/* Valid while enabled. */
	struct net *net;
	struct knbd_listener clients;
	struct knbd_listener peers_listener;

	/* Enabled volumes by id, for the member transport (RCU; writers hold lock). */
	struct knbd_volume __rcu *vol_by_id[KNBD_MAX_VOLUMES];

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
	/* The client safety rule (connmgr.c); the proof table under conns_lock. */
	bool cm_clients_all;		/* balance_clients=all: move any connection */
	atomic64_t cm_would_break;	/* decisions whose pick would break its client */
	struct knbd_cm_proof cm_proof;
	u32 cm_moved_key[KNBD_CM_MAX_BATCH];	/* clients still landing */
	unsigned int cm_moved_nr;		/* (monitor only) */
	/* Said once per over-utilised spell (monitor only), counted always. */
	u64 cm_told_kept;		/* id of the connection last kept, or 0 */
	bool cm_told_skip;		/* "none would even it out" */
	atomic64_t drain_dropped;	/* requests unread when a drain closed */
	atomic64_t drain_late;		/* ... served all the same, in the last step */
	atomic64_t timeouts;		/* connections closed by io_timeout */
	atomic64_t hs_timeouts;		/* ... by handshake_timeout */
	atomic64_t idle_closes;		/* ... by idle_timeout, dead member links */

	/*
	 * Payload budget (conn.c): bytes admitted, those admitted outside it
	 * (a connection's first request), and connections waiting for room,
	 * in turn.  Innermost lock: taken in io_work, never held to wait.
	 */
	spinlock_t budget_lock;
	u64 budget_used;
	u64 budget_floor;
	u64 budget_peak;		/* budget_used - budget_floor, highest */
	struct list_head budget_waiters;
	atomic64_t budget_waits;	/* headers that had to wait */

	/* Client and member connections; lock order: lock -> conns_lock. */
	struct mutex conns_lock;
	struct list_head conns;
	atomic_t nr_conns;
	u64 next_conn_id;
};

/* volume direct_io: how the backing is reached. */
enum knbd_dio {
	KNBD_DIO_AUTO,		/* direct where the backing allows it */
	KNBD_DIO_OFF,		/* through the page cache */
	KNBD_DIO_ON,		/* direct, or refuse to enable */
};

struct knbd_volume {
	struct config_group group;
	struct knbd_node *node;
	struct list_head node_entry;	/* node->volumes, under node->lock */
	u32 vid;			/* index in node->vol_by_id */
	u32 gen;			/* which volume of that name (a new one after rmdir) */

	/* Configuration, under node->lock; frozen while enabled. */
	char *backing_path;
	char *description;
	u64 size_cfg;
	u32 min_block;
	u32 extent_shift;
	enum knbd_dio direct_io;
	bool readonly;
	bool enabled;

	/* Valid while enabled (backing.c). */
	struct file *backing;		/* buffered access (page cache) */
	struct file *backing_direct;	/* O_DIRECT access to a regular file */
	struct block_device *bdev;	/* bios straight to a block device */
	u32 dio_align;			/* what the direct paths need aligned */
	struct knbd_export_info info;

	/*
	 * Users while enabled: attached client connections and member
	 * requests in flight.  Killed by disable, which waits for ref_done.
	 */
	struct percpu_ref ref;
	struct completion ref_done;

	/* NULL: every extent is local.  Replaced under node->lock. */
	struct knbd_route __rcu *route;
	/* Outcome of the last table written, under node->lock ("": none yet). */
	char route_status[KNBD_ROUTE_STATUS_LEN];

	/* allowed_hosts; NULL: any host.  Replaced under node->lock. */
	struct knbd_acl __rcu *acl;

	struct knbd_vol_stats stats;
	u64 load;			/* of the clients attached here */
};

enum knbd_peer_state {
	KNBD_PEER_DOWN,
	KNBD_PEER_CONNECTING,
	KNBD_PEER_UP,
};

/*
 * The outgoing link to another member, which serves our forwarded pieces
 * (peer_link.c).  One socket at a time, driven by io_work; forwarders only
 * queue pieces under lock and kick it.
 */
struct knbd_peer {
	struct config_group group;
	struct knbd_node *node;
	struct list_head node_entry;	/* node->peers (RCU) */

	/* Configuration, under node->lock; frozen while the node is enabled. */
	struct sockaddr_storage addr;
	u16 port;
	u32 node_id;

	struct delayed_work connect_work;
	struct work_struct io_work;
	int cpu;			/* where io_work runs; < 0: any */
	struct timer_list timer;	/* deadlines: hello, the oldest piece */
	unsigned int backoff_ms;
	enum knbd_peer_state state;
	bool running;			/* started by node enable, under state_lock */

	/* Pieces and link state; bh: the timer takes it too. */
	spinlock_t lock;
	bool stopping;
	bool link_up;			/* HELLO done: pieces may be queued */
	bool expired;			/* the timer found a deadline passed */
	u32 gen;			/* socket generation */
	u64 next_cookie;
	unsigned int inflight;
	unsigned int inflight_max;
	struct list_head pending;	/* queued or sent, oldest first */
	struct list_head send_queue;	/* not sent yet */
	DECLARE_HASHTABLE(cookies, KNBD_PEER_COOKIE_BITS);

	/* The current socket and its I/O state: io_work only (and stop). */
	struct socket *sock;
	struct knbd_sock_cbs saved_cbs;
	unsigned long hello_deadline;
	bool hello_sent;
	u8 nonce[KNBD_PEER_NONCE_LEN];	/* ours, in this socket's HELLO */
	u32 bound[KNBD_MAX_VOLUMES];	/* volume gen bound to each handle, 0: none */
	u8 ctl[64 + KNBD_PEER_MAX_NAME]; /* HELLO, BIND or LOAD being sent */
	u32 ctl_len;
	u32 ctl_off;
	struct knbd_piece *snd_piece;	/* being sent: frame, then WRITE data */
	u32 snd_off;
	u8 snd_hdr[sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_io)];
	u8 rcv_hdr[KNBD_PEER_HELLO_FRAME];	/* the peer's HELLO, then IO_REPLY heads */
	u32 rcv_off;
	struct knbd_piece *rcv_piece;	/* receiving its READ data */
	u32 rcv_data_off;

	/* The latest load report to send (monitor), and whether it went. */
	struct knbd_peer_load load_out;
	bool load_dirty;

	/* The peer's last load report; remote_at == 0: none yet. */
	u64 remote_load;
	u32 remote_conns;
	u32 remote_seq;
	unsigned long remote_at;
	u32 remote_flags;		/* KNBD_LOAD_F_* */
	u64 cm_load;			/* remote_load smoothed for the policy */
	bool cm_fresh;

	atomic64_t forwarded;
	atomic64_t failed;
	atomic64_t connects;
	atomic64_t mismatches;
};

/*
 * One piece of a request that a single member serves: the whole request
 * when the volume is not partitioned.  Its data is the slice
 * [data_off, data_off + len) of the request's pages.
 */
struct knbd_piece {
	struct knbd_req *req;
	u64 offset;			/* in the volume */
	u32 len;
	u32 data_off;
	u32 owner;
	u32 done;			/* bytes done by a NOWAIT attempt */
	int err;
	union {
		struct kiocb iocb;	/* local: file I/O */
		struct {		/* remote: on a member link */
			struct knbd_peer *peer;
			struct list_head entry;		/* peer->pending */
			struct list_head send_entry;	/* peer->send_queue */
			struct hlist_node hnode;	/* peer->cookies */
			u64 cookie;
			unsigned long deadline;
			u32 status;
			u64 remote_epoch;
			u32 handle;
			u32 vol_gen;
		} fwd;
	};
	struct work_struct work;	/* local: what must block runs here */
};

/*
 * One request between its header and its reply: from a connection's pool,
 * on the connection's free list, then in flight (pieces), then on its
 * reply list until the reply has left.
 */
struct knbd_req {
	struct knbd_conn *conn;
	struct knbd_volume *vol;
	struct knbd_cmd cmd;
	u64 start_ns;			/* header read: for the service time */
	struct list_head entry;		/* conn free list or send list */
	struct llist_node lentry;	/* conn->resp_list */
	atomic_t pending;		/* pieces in flight, + 1 while issuing */
	int error;			/* the first error of a piece */
	u32 nbd_err;
	u32 status;			/* member transport: KNBD_PEER_* */
	bool own_vol_ref;		/* member transport: holds a vol->ref */
	bool mem_floor;			/* admitted outside the node budget */
	u32 mem;			/* payload bytes counted in the budget */

	/* Payload: full pages but the last; pages allocated so far. */
	struct bio_vec *bvec;
	unsigned int nr_bvec;
	unsigned int max_bvec;

	unsigned int nr_pieces;
	struct knbd_piece *pieces;
	struct knbd_route_id rid;	/* the table the pieces were cut by */

	/* The reply: a header encoded by the transport, then data_len bytes. */
	u32 data_len;
	u8 hdr_len;
	u8 hdr[sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_io_reply)];

	struct knbd_piece inline_piece;
#define KNBD_INLINE_BVECS	4
	struct bio_vec inline_bvec[KNBD_INLINE_BVECS];
};

/* Payload memory a request pins while in flight, counted against the budget. */
static inline u32 knbd_cmd_mem_bytes(const struct knbd_cmd *cmd)
{
	if (cmd->type == KNBD_NBD_CMD_READ || cmd->type == KNBD_NBD_CMD_WRITE)
		return cmd->len;
	return 0;
}

enum knbd_conn_state {
	KNBD_CONN_HANDSHAKE,
	KNBD_CONN_TRANSMISSION,
	KNBD_CONN_DRAINING,		/* serving what is queued, then closing */
	KNBD_CONN_CLOSING,
};

/* What the engine reads next (conn.c). */
enum knbd_rcv_state {
	KNBD_RCV_BUF,		/* rcv_len bytes into rcv_buf */
	KNBD_RCV_DATA,		/* a WRITE payload into rcv_req's pages */
	KNBD_RCV_DISCARD,	/* rcv_left bytes of a refused payload */
	KNBD_RCV_ROOM,		/* a header waits for room in the budget */
	KNBD_RCV_STOP,		/* not reading (drained, closing) */
};

/*
 * A transport: what a connection's bytes mean.  The engine calls up into
 * it; the core calls queue_reply when a request has finished, from any
 * context (a bio's end_io too): it must not sleep.
 */
struct knbd_conn_ops {
	const char *name;
	bool is_peer;
	/* Set up the first read (and any greeting); io_work. */
	int (*start)(struct knbd_conn *conn);
	/* The current read is complete (or room came for KNBD_RCV_ROOM). */
	int (*rcv_done)(struct knbd_conn *conn);
	/* Encode req's reply and hand it to the engine. */
	void (*queue_reply)(struct knbd_req *req);
	/* After each io_work round and timer: the transport's own clock. */
	int (*tick)(struct knbd_conn *conn, unsigned long *next);
	/* Free what start() and the transport allocated. */
	void (*release)(struct knbd_conn *conn);
};

/* NBD transport state (nbd.c, drain.c). */
enum knbd_nbd_phase {
	KNBD_NBD_HS_FLAGS,	/* client flags */
	KNBD_NBD_HS_OPT,	/* option header */
	KNBD_NBD_HS_OPT_DATA,	/* option data into conn->buf */
	KNBD_NBD_HS_OPT_BIG,	/* option data too long to parse: dropped */
	KNBD_NBD_REQ_HDR,
	KNBD_NBD_REQ_DATA,
	KNBD_NBD_REQ_DROP,	/* a refused WRITE's payload */
};

enum knbd_drain_phase {
	KNBD_DRAIN_NONE,
	KNBD_DRAIN_READING,	/* serve what was sent before the drain */
	KNBD_DRAIN_QUIET,	/* nothing queued: replies held, wait for stragglers */
	KNBD_DRAIN_GATHER,	/* replies held until every one is ready */
	KNBD_DRAIN_SENDING,	/* replies corked into the socket */
	KNBD_DRAIN_CLOSING,	/* replies left: reset behind them */
};

struct knbd_nbd_conn {
	enum knbd_nbd_phase phase;
	unsigned int nr_opts;
	u32 option;
	u32 opt_len;
	bool no_zeroes;
	bool disc;			/* DISC or ABORT: close once idle */
	union {
		__be32 cflags;
		struct nbd_wire_opt opt;
		struct nbd_wire_request req;
	} hdr;
	struct knbd_cmd cmd;		/* the request being admitted */

	/* Graceful close (drain.c). */
	enum knbd_drain_phase drain;
	unsigned long drain_at;		/* when it began */
	unsigned long drain_until;	/* end of the current wait */
	unsigned int dropped;
	bool corked;
	bool by_admin;
	bool drain_req;			/* asked for (knbd_conn_drain()) */

	/* Who the client is (connmgr.c's safety rule). */
	u32 fp;				/* its handshake so far */
	u32 client_key;			/* set when transmission begins */
	enum knbd_cm_movable movable;	/* the monitor's last verdict */
};

/* Member transport state (peer_serve.c). */
enum knbd_pserve_phase {
	KNBD_PSERVE_HELLO_HDR,
	KNBD_PSERVE_HELLO,
	KNBD_PSERVE_AUTH_HDR,	/* nothing else is read before the client's proof */
	KNBD_PSERVE_AUTH,
	KNBD_PSERVE_HDR,
	KNBD_PSERVE_BODY,	/* LOAD, BIND or the fixed part of IO */
	KNBD_PSERVE_NAME,	/* a BIND's name */
	KNBD_PSERVE_DATA,
	KNBD_PSERVE_DROP,	/* a refused WRITE's payload */
};

struct knbd_pserve_bind {
	u32 vid;
	u32 gen;			/* 0: unbound */
	u16 name_len;
	char name[KNBD_PEER_MAX_NAME];
};

struct knbd_pserve_conn {
	enum knbd_pserve_phase phase;
	u16 type;
	u32 len;
	u32 handle;
	u64 epoch;
	u32 checksum;
	union {
		struct knbd_peer_hdr hdr;
		struct knbd_peer_hello hello;
		struct knbd_peer_auth auth;
		struct knbd_peer_load load;
		struct knbd_peer_bind bind;
		struct knbd_peer_io io;
	} buf;
	struct knbd_cmd cmd;
	struct knbd_pserve_bind *binds;	/* KNBD_PEER_MAX_HANDLES of them */
	u8 client_nonce[KNBD_PEER_NONCE_LEN];
	u8 server_nonce[KNBD_PEER_NONCE_LEN];
};

/*
 * A TCP connection (conn.c): a client's or another member's.  One io_work
 * does all its socket I/O, without ever blocking; replies come back from
 * any context through resp_list.  Freed by release_work once closed and
 * every request in flight has finished (ref).
 */
struct knbd_conn {
	const struct knbd_conn_ops *transport;
	struct knbd_node *node;
	struct socket *sock;
	struct list_head node_entry;	/* node->conns, under conns_lock */
	u64 id;
	struct sockaddr_storage peer;
	enum knbd_conn_state state;
	bool is_peer;			/* another member, not an NBD client */
	u32 peer_id;
	struct knbd_volume *vol;	/* client: attached at GO, holds vol->ref */

	struct work_struct io_work;
	int cpu;			/* where io_work runs; < 0: sk_incoming_cpu */
	struct work_struct release_work;
	struct timer_list timer;
	unsigned long hs_deadline;	/* end of the handshake */
	bool killed;			/* shut down from outside: close */
	bool eof;			/* the client sent all it will: finish, close */
	bool close_reset;		/* closed for a timeout: reset, not FIN */
	struct knbd_sock_cbs saved_cbs;

	/* Receive side (io_work only). */
	enum knbd_rcv_state rcv_state;
	void *rcv_buf;
	u32 rcv_len;
	u32 rcv_off;
	u32 rcv_left;
	u32 rcv_room;			/* payload bytes a KNBD_RCV_ROOM header needs */
	struct knbd_req *rcv_req;
	bool rcv_msg;			/* a message has begun: rcv_at runs */
	unsigned long rcv_at;		/* when it began (or was admitted) */
	unsigned long rx_at;		/* when bytes last came: idle_timeout */
	struct list_head budget_entry;	/* node->budget_waiters, under budget_lock */
	u32 budget_want;		/* what it waits for there */
	bool budget_waiting;		/* on the list: only its io_work changes it */

	/* Send side. */
	struct llist_head resp_list;	/* finished requests, any context */
	struct list_head send_list;	/* io_work only, in order */
	struct list_head ctl_list;	/* handshake replies, before any reply */
	unsigned int nr_ready;		/* on send_list */
	struct knbd_req *snd_req;
	u32 snd_off;
	unsigned long snd_at;		/* when the first waiting message became first */
	bool replies_held;		/* drain: gather replies, send none */

	/* Request pool and budget (io_work only). */
	struct knbd_req *reqs;
	unsigned int nr_reqs;
	struct list_head free_list;
	unsigned int inflight;		/* taken from the pool, until the reply left */
	u64 inflight_bytes;
	u64 max_bytes;

	/* Requests executing (core), plus the connection's own reference. */
	struct percpu_ref ref;
	struct completion ref_done;

	atomic64_t ops;
	atomic64_t bytes;
	atomic64_t lat_ns;		/* service time of the replied requests */
	u64 load_ops;			/* counters at the last load tick */
	u64 load_bytes;
	u64 load_lat_ns;
	u64 load;			/* smoothed, milli weighted ops/s */
	u32 lat_us;			/* smoothed mean service time */

	union {
		struct knbd_nbd_conn nbd;
		struct knbd_pserve_conn pserve;
	};

	/* Option data, names and dropped payload land here. */
	void *buf;
};

/* Names in messages: configfs directory names; a volume is "node/volume". */
static inline const char *knbd_node_name(struct knbd_node *node)
{
	return config_item_name(&node->group.cg_item);
}

static inline const char *knbd_vol_name(struct knbd_volume *vol)
{
	return config_item_name(&vol->group.cg_item);
}

static inline const char *knbd_peer_name(struct knbd_peer *peer)
{
	return config_item_name(&peer->group.cg_item);
}

/* main.c */
extern struct workqueue_struct *knbd_io_wq;
extern struct workqueue_struct *knbd_backing_wq;
extern struct workqueue_struct *knbd_wq;
extern atomic_t knbd_vol_gen;

/*
 * Request pages are full pages but the last, so the slice of the payload
 * at byte @off starts in page off >> PAGE_SHIFT.
 */
static inline void knbd_req_iter(struct knbd_req *req, struct iov_iter *iter,
				 unsigned int dir, u32 off, u32 len)
{
	unsigned int idx = off >> PAGE_SHIFT;
	u32 in = offset_in_page(off);

	iov_iter_bvec(iter, dir, req->bvec + idx, req->nr_bvec - idx, in + len);
	iov_iter_advance(iter, in);
}

/* sock.c: kernel socket helpers; all I/O is non-blocking */
int knbd_sock_recv(struct socket *sock, void *buf, size_t len);
int knbd_sock_recv_iter(struct socket *sock, struct iov_iter *iter);
int knbd_sock_send(struct socket *sock, const void *buf, size_t len, bool more);
int knbd_sock_send_pages(struct socket *sock, const struct bio_vec *bvec,
			 u32 off, u32 len, bool more);
void knbd_sock_hook(struct socket *sock, void *user, const struct knbd_sock_cbs *ours,
		    struct knbd_sock_cbs *saved);
void knbd_sock_unhook(struct socket *sock, const struct knbd_sock_cbs *saved);
bool knbd_sock_has_data(struct socket *sock);
bool knbd_sock_sent_all(struct socket *sock);
int knbd_sock_cpu(struct socket *sock);
int knbd_io_cpu(void);
void knbd_sock_cork(struct socket *sock, bool on);
void knbd_sock_keepalive(struct socket *sock);
void knbd_sock_reset(struct socket *sock);
int knbd_sock_listen(struct net *net, const struct sockaddr_storage *base,
		     u16 port, struct socket **sockp);
int knbd_sock_create(struct net *net, int family, struct socket **sockp);
void knbd_sock_addr_port(struct sockaddr_storage *addr, u16 port, int *len);
bool knbd_sock_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* conn.c: the connection engine */
int knbd_conn_create(struct knbd_node *node, const struct knbd_conn_ops *ops,
		     struct socket *sock);
void knbd_conn_kick(struct knbd_conn *conn);
void knbd_conn_shutdown(struct knbd_conn *conn);
void knbd_conn_recv_into(struct knbd_conn *conn, void *buf, u32 len);
void knbd_conn_recv_more(struct knbd_conn *conn, void *buf, u32 len);
void knbd_conn_recv_discard(struct knbd_conn *conn, u32 len);
void knbd_conn_recv_data(struct knbd_conn *conn, struct knbd_req *req);
int knbd_conn_queue_ctl(struct knbd_conn *conn, const void *data, u32 len);
void *knbd_conn_ctl_put(struct knbd_conn *conn, u32 len);
int knbd_conn_alloc_pool(struct knbd_conn *conn, unsigned int depth, u64 max_bytes);
struct knbd_req *knbd_conn_req_get(struct knbd_conn *conn, const struct knbd_cmd *cmd,
				   u32 mem);
int knbd_req_alloc_pages(struct knbd_req *req, u32 len);
int knbd_req_add_pages(struct knbd_req *req, u32 upto);
void knbd_conn_queue_reply(struct knbd_req *req);
void knbd_conn_reply_now(struct knbd_req *req);
void knbd_conn_submit(struct knbd_req *req);
bool knbd_conn_sending(struct knbd_conn *conn);
void knbd_conn_note_timer(struct knbd_conn *conn, unsigned long at);
const char *knbd_conn_state_name(enum knbd_conn_state state);

/* nbd.c, drain.c: the NBD transport */
extern const struct knbd_conn_ops knbd_nbd_ops;
void knbd_nbd_next_request(struct knbd_conn *conn);
int knbd_conn_drain(struct knbd_node *node, u64 id, bool by_admin);
int knbd_drain_tick(struct knbd_conn *conn, unsigned long *next);
int knbd_drain_drop_request(struct knbd_conn *conn);
bool knbd_drain_serve_late(struct knbd_conn *conn);

/* peer_serve.c: the member transport */
extern const struct knbd_conn_ops knbd_pserve_ops;

/* req.c: the core */
void knbd_req_execute(struct knbd_req *req);
void knbd_piece_done(struct knbd_piece *piece, int err);
void knbd_piece_iter(struct knbd_piece *piece, struct iov_iter *iter,
		     unsigned int dir);

/* backing.c */
int knbd_backing_open(struct knbd_volume *vol);
void knbd_backing_close(struct knbd_volume *vol);
void knbd_backing_submit(struct knbd_piece *piece);
const char *knbd_backing_mode(const struct knbd_volume *vol);

/* peer_link.c: outgoing member links */
void knbd_peer_init(struct knbd_peer *peer, struct knbd_node *node);
void knbd_peer_start(struct knbd_peer *peer);
void knbd_peer_stop(struct knbd_peer *peer);
struct knbd_peer *knbd_peer_find(struct knbd_node *node, u32 node_id);
int knbd_peer_forward(struct knbd_peer *peer, struct knbd_piece *piece);
void knbd_peer_send_load(struct knbd_peer *peer, u64 load, u32 conns, u32 seq,
			 u32 flags);
void knbd_peer_got_load(struct knbd_node *node, const struct knbd_peer_load *rep);
const char *knbd_peer_state_name(enum knbd_peer_state state);
bool knbd_peer_addr_match(struct knbd_node *node, u32 node_id,
			  const struct sockaddr_storage *from);

/* auth.c: the group key and the member handshake's MACs */
int knbd_auth_parse_key(const char *page, size_t count, u8 *key, u8 *key_len,
			const char **why);
int knbd_auth_start(struct knbd_node *node);
void knbd_auth_stop(struct knbd_node *node);
bool knbd_auth_enabled(const struct knbd_node *node);
u32 knbd_auth_flags(const struct knbd_node *node);
void knbd_auth_nonce(u8 *nonce);
int knbd_auth_mac(struct knbd_node *node, bool server, u32 client_id, u32 server_id,
		  const u8 *client_nonce, const u8 *server_nonce, u8 *mac);
bool knbd_auth_verify(struct knbd_node *node, bool server, u32 client_id, u32 server_id,
		      const u8 *client_nonce, const u8 *server_nonce, const u8 *mac);

/* volume.c */
void knbd_volume_init(struct knbd_volume *vol, struct knbd_node *node);
int knbd_volume_enable(struct knbd_volume *vol);
void knbd_volume_disable(struct knbd_volume *vol);
int knbd_volume_set_route(struct knbd_volume *vol, const char *text, size_t len,
			  bool force);
struct knbd_volume *knbd_volume_find(struct knbd_node *node, const char *name, u32 len);
struct knbd_volume *knbd_volume_get_by_id(struct knbd_node *node, u32 vid, u32 gen);
void knbd_volume_put(struct knbd_volume *vol);

/* listener.c */
void knbd_listener_init(struct knbd_listener *l, struct knbd_node *node,
			const struct knbd_conn_ops *ops);
int knbd_listener_start(struct knbd_listener *l, struct net *net,
			const struct sockaddr_storage *base, u16 port);
void knbd_listener_stop(struct knbd_listener *l);

/* node.c */
void knbd_node_init(struct knbd_node *node);
int knbd_node_enable(struct knbd_node *node);
void knbd_node_disable(struct knbd_node *node);
void knbd_node_close_conns(struct knbd_node *node, struct knbd_volume *vol);
void knbd_node_kick_members(struct knbd_node *node);

/* monitor.c */
int knbd_load_start(struct knbd_node *node);
void knbd_load_stop(struct knbd_node *node);
void knbd_group_add(struct knbd_node *node);
void knbd_group_del(struct knbd_node *node);

/* configfs.c */
int knbd_configfs_init(void);
void knbd_configfs_exit(void);

#endif /* _KNBD_H */
