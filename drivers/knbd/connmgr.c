// SPDX-License-Identifier: GPL-2.0
/*
 * Connection manager policy, pure (KUnit: kunit/connmgr_test.c): when is
 * this member over-utilised compared with its group, and which client
 * connection should it move.  monitor.c runs it every load tick and
 * core.c drains the chosen connection.
 *
 * Loads are client loads (load.c units).  A member is over-utilised when
 * its load exceeds threshold_pct of the group mean; it stays so
 * (hysteresis) until its load is back under clear_pct of the mean.  (Not
 * "only the busiest": with noisy loads the busiest changes from tick to
 * tick and each change would restart the hold time of both.)  It moves
 * its first connection only after hold_ms of that, then at most one every
 * interval_ms, and only interval_ms after the client of the last one is
 * back in the group's connection count: the loads must show a move before
 * the next decision.  Not at all while another member says it is moving
 * connections: only one member answers a given imbalance.  Members whose
 * report is stale are left out of the mean, never counted as idle.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/hash.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/jhash.h>
#include <linux/jiffies.h>
#include <linux/math64.h>

#include "knbd.h"

void knbd_cm_group(const struct knbd_cm_member *m, unsigned int nr,
		   struct knbd_cm_group *g)
{
	u64 sum = 0;
	unsigned int i;

	memset(g, 0, sizeof(*g));
	g->min = U64_MAX;
	for (i = 0; i < nr; i++) {
		if (!m[i].fresh)
			continue;
		sum += m[i].load;
		g->nr++;
		if (m[i].load < g->min)
			g->min = m[i].load;
		if (g->nr == 1 || m[i].load > g->max ||
		    (m[i].load == g->max && m[i].id < g->max_id)) {
			g->max = m[i].load;
			g->max_id = m[i].id;
		}
	}
	if (!g->nr) {
		g->min = 0;
		return;
	}
	g->mean = div_u64(sum, g->nr);
}

/* load > mean * pct / 100 (128-bit intermediate: no overflow) */
static bool knbd_cm_above(u64 load, u64 mean, u32 pct)
{
	return load > mul_u64_u32_div(mean, pct, 100);
}

/*
 * One tick of the policy for member m[self].  Updates @st and says
 * whether to move a connection now; the caller records a move it really
 * started with knbd_cm_moved(), a decision without one with
 * st->last_move = now.
 */
enum knbd_cm_verdict knbd_cm_assess(const struct knbd_cm_params *p,
				    struct knbd_cm_state *st,
				    const struct knbd_cm_member *m, unsigned int nr,
				    unsigned int self, unsigned long now)
{
	const struct knbd_cm_member *me = &m[self];
	struct knbd_cm_group g;
	unsigned int i;
	bool over;

	knbd_cm_group(m, nr, &g);
	if (st->landing) {
		u32 conns = 0;

		for (i = 0; i < nr; i++)
			conns += m[i].fresh ? m[i].conns : 0;
		if (conns >= st->conns_before ||
		    time_after_eq(now, st->last_move + KNBD_CM_LAND_TIME)) {
			st->landing = false;
			st->landed_at = now ?: 1;
		}
	}
	/* Alone (or nobody else known): nothing to compare with. */
	if (g.nr < 2 || !me->fresh)
		goto idle;
	/*
	 * Views of the group differ by a tick or so between members, so two
	 * may both think they lead and move connections to the same idle
	 * member at once.  Each says when it is shedding; the one with the
	 * higher id gives way, so exactly one goes on.
	 */
	for (i = 0; i < nr; i++)
		if (i != self && m[i].fresh && m[i].shedding && m[i].id < me->id)
			g.other_shedding = true;

	if (me->load < p->min_load)
		goto idle;
	if (st->active)
		over = knbd_cm_above(me->load, g.mean, p->clear_pct);
	else
		over = knbd_cm_above(me->load, g.mean, p->threshold_pct);
	if (!over)
		goto idle;
	if (g.other_shedding) {
		/* Someone else is answering an imbalance: start the hold again. */
		st->over_since = 0;
		st->active = false;
		return KNBD_CM_DEFER;
	}
	if (!st->over_since)
		st->over_since = now ?: 1;
	st->active = true;
	if (time_before(now, st->over_since + msecs_to_jiffies(p->hold_ms)))
		return KNBD_CM_WAIT;
	if (st->last_move &&
	    time_before(now, st->last_move + msecs_to_jiffies(p->interval_ms)))
		return KNBD_CM_WAIT;
	/*
	 * The loads show a move only once its client is back and has run
	 * a while on its new member; before that the next decision would
	 * see the old imbalance and move again.
	 */
	if (st->landing)
		return KNBD_CM_WAIT;
	if (st->landed_at &&
	    time_before(now, st->landed_at + msecs_to_jiffies(p->interval_ms)))
		return KNBD_CM_WAIT;
	return KNBD_CM_MOVE;
idle:
	st->over_since = 0;
	st->active = false;
	return KNBD_CM_IDLE;
}

/*
 * A connection was moved: count the group's client connections (m[] as
 * given to knbd_cm_assess()), so that the next decisions wait until its
 * client is back somewhere.
 */
void knbd_cm_moved(struct knbd_cm_state *st, const struct knbd_cm_member *m,
		   unsigned int nr, unsigned long now)
{
	unsigned int i;

	st->last_move = now ?: 1;
	st->conns_before = 0;
	for (i = 0; i < nr; i++)
		st->conns_before += m[i].fresh ? m[i].conns : 0;
	st->landing = true;
	st->landed_at = 0;
}

/*
 * How much load a member at @own should hand over: down to the mean of
 * group @g, but not more than its least loaded member can take before it
 * passes the mean.
 */
u64 knbd_cm_target(const struct knbd_cm_group *g, u64 own)
{
	if (!g->nr || own <= g->mean)
		return 0;
	return min(own - g->mean, g->mean - g->min);
}

/*
 * The connection whose load is closest to @target, among those that
 * improve things: moving load L from us (at @own) to the least loaded
 * member (at @min) must leave it below where we were (min + L < own), and
 * it must carry at least a quarter of @target (an idle one moves nothing).
 * Ties go to the lower index (older connection: the caller lists them
 * oldest first).  -1: none fits.
 */
int knbd_cm_pick(const u64 *conn_load, unsigned int nr, u64 own, u64 min,
		 u64 target)
{
	u64 best_dist = U64_MAX;
	int best = -1;
	unsigned int i;

	if (own <= min)
		return -1;
	for (i = 0; i < nr; i++) {
		u64 l = conn_load[i], dist;

		/*
		 * A move costs its client a reconnect: one that closes less
		 * than a quarter of the gap is not worth it.
		 */
		if (!l || l < target / 4 || l >= own - min)
			continue;
		dist = l > target ? l - target : target - l;
		if (dist < best_dist) {
			best_dist = dist;
			best = i;
		}
	}
	return best;
}

const char *knbd_cm_verdict_name(enum knbd_cm_verdict v)
{
	switch (v) {
	case KNBD_CM_IDLE:
		return "idle";
	case KNBD_CM_WAIT:
		return "over";
	case KNBD_CM_MOVE:
		return "moving";
	case KNBD_CM_DEFER:
		return "deferring";
	}
	return "?";
}

/*
 * ---- The client safety rule: never move a client that cannot come back ----
 *
 * A client is (source address, volume, fingerprint of its handshake): the
 * option codes it sent, in order, and its client flags.  nbd.ko's
 * connections of one device all negotiate alike (nbd-client -C N, and
 * knbd-reconnect's own handshake is the same GO), while a libnbd or QEMU
 * client on the same host negotiates otherwise and is another client.
 * Moving one of its connections keeps a client served when another of its
 * connections stays (multi) or when it has shown that it reconnects
 * (proven): one of its connections came back after a drain.
 */
#define KNBD_CM_FP_SEED		0x6b6e6264	/* "knbd" */

u32 knbd_cm_fp_init(u32 cflags)
{
	return jhash_1word(cflags, KNBD_CM_FP_SEED);
}

u32 knbd_cm_fp_add(u32 fp, u32 option)
{
	return jhash_1word(option, fp);
}

/* Without the port: every connection of a client has its own. */
u32 knbd_cm_client_key(const struct sockaddr_storage *ss, const char *vol,
		       size_t vol_len, u32 fp)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	u32 h = fp;

	if (ss->ss_family == AF_INET)
		h = jhash(&s4->sin_addr, sizeof(s4->sin_addr), h);
	else if (ss->ss_family == AF_INET6)
		h = jhash(&s6->sin6_addr, sizeof(s6->sin6_addr), h);
	return jhash(vol, vol_len, h);
}

enum knbd_cm_movable knbd_cm_movable(unsigned int live, bool proven)
{
	if (live >= 2)
		return KNBD_CM_MOVABLE_MULTI;
	return proven ? KNBD_CM_MOVABLE_PROVEN : KNBD_CM_MOVABLE_NO;
}

const char *knbd_cm_movable_name(enum knbd_cm_movable mv)
{
	switch (mv) {
	case KNBD_CM_MOVABLE_NO:
		return "no";
	case KNBD_CM_MOVABLE_MULTI:
		return "multi";
	case KNBD_CM_MOVABLE_PROVEN:
		return "proven";
	}
	return "?";
}

/*
 * Live connections per client key, counted afresh every tick in a fixed
 * open-addressed table (no allocation per connection).  A key that finds
 * no room counts 0: its connections look alone, the safe side.
 */
void knbd_cm_tally_reset(struct knbd_cm_tally *t)
{
	memset(t->count, 0, sizeof(t->count));
}

static int knbd_cm_tally_slot(const struct knbd_cm_tally *t, u32 key)
{
	unsigned int i, s = hash_32(key, KNBD_CM_TALLY_BITS);

	for (i = 0; i < KNBD_CM_TALLY_SLOTS; i++, s = (s + 1) % KNBD_CM_TALLY_SLOTS)
		if (!t->count[s] || t->key[s] == key)
			return s;
	return -1;
}

void knbd_cm_tally_add(struct knbd_cm_tally *t, u32 key)
{
	int s = knbd_cm_tally_slot(t, key);

	if (s < 0)
		return;
	t->key[s] = key;
	if (t->count[s] < U16_MAX)
		t->count[s]++;
}

unsigned int knbd_cm_tally_count(const struct knbd_cm_tally *t, u32 key)
{
	int s = knbd_cm_tally_slot(t, key);

	return s < 0 ? 0 : t->count[s];
}

/*
 * Proof of reconnecting: the keys of drained connections, with when, in a
 * fixed table (the oldest entry gives way).  A connection of the same key
 * in transmission again within KNBD_CM_PROOF_TIME proves its client.
 */
static struct knbd_cm_proof_entry *knbd_cm_proof_find(struct knbd_cm_proof *pt, u32 key)
{
	unsigned int i;

	for (i = 0; i < KNBD_CM_PROOF_SLOTS; i++)
		if (pt->e[i].at && pt->e[i].key == key)
			return &pt->e[i];
	return NULL;
}

void knbd_cm_proof_drained(struct knbd_cm_proof *pt, u32 key, unsigned long now)
{
	struct knbd_cm_proof_entry *e = knbd_cm_proof_find(pt, key);
	unsigned int i;

	if (!e) {
		e = &pt->e[0];
		for (i = 0; i < KNBD_CM_PROOF_SLOTS && e->at; i++)
			if (!pt->e[i].at || time_before(pt->e[i].at, e->at))
				e = &pt->e[i];
		e->key = key;
		e->proven = false;
	}
	/* A proven client stays proven: this is one more chance to show it. */
	e->at = now ?: 1;
}

bool knbd_cm_proof_back(struct knbd_cm_proof *pt, u32 key, unsigned long now)
{
	struct knbd_cm_proof_entry *e = knbd_cm_proof_find(pt, key);

	if (!e || e->proven || time_after(now, e->at + KNBD_CM_PROOF_TIME))
		return false;
	e->proven = true;
	return true;
}

bool knbd_cm_proven(const struct knbd_cm_proof *pt, u32 key)
{
	unsigned int i;

	for (i = 0; i < KNBD_CM_PROOF_SLOTS; i++)
		if (pt->e[i].at && pt->e[i].key == key)
			return pt->e[i].proven;
	return false;
}

/*
 * The last move has landed by the group's count (knbd_cm_assess()'s
 * landing rule): the group's client connections are back to what they
 * were before it, before the landing time ran out.
 */
bool knbd_cm_back_in_group(const struct knbd_cm_state *st,
			   const struct knbd_cm_member *m, unsigned int nr,
			   unsigned long now)
{
	u32 conns = 0;
	unsigned int i;

	if (!st->landing || time_after_eq(now, st->last_move + KNBD_CM_LAND_TIME))
		return false;
	for (i = 0; i < nr; i++)
		conns += m[i].fresh ? m[i].conns : 0;
	return conns >= st->conns_before;
}
