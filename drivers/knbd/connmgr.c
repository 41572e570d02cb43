// SPDX-License-Identifier: GPL-2.0
/*
 * Connection manager policy, pure (KUnit: kunit/connmgr_test.c): when is
 * this member over-utilised compared with its group, and which client
 * connections should it move.  monitor.c runs it every load tick and
 * drain.c drains the chosen connections.
 *
 * Loads are client loads (load.c units).  A member is over-utilised when
 * its load exceeds threshold_pct of the group mean; it stays so
 * (hysteresis) until its load is back under clear_pct of the mean.  (Not
 * "only the busiest": with noisy loads the busiest changes from tick to
 * tick and each change would restart the hold time of both.)  It decides
 * first only after hold_ms of that, then at most once every interval_ms,
 * and, while what it moved is a large part of the group's load, only
 * interval_ms after those clients are back in the group's connection
 * count: the loads must show a move before the next decision.  A
 * decision moves connections adding up to its load above the mean, at
 * most two per member under the mean shared among the members shedding
 * at once.  Each member sheds only its own excess, and all the excesses
 * add up to what the members under the mean lack, so several can shed
 * at once (tools/cmsim: one at a time takes minutes in a large group).
 * Members whose report is stale are left out of the mean, never counted
 * as idle.
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
 * Must the next decision wait until the last one's clients are back?
 * Until then their load is missing from the group's mean, by moved /
 * members; while that is within the hysteresis (clear_pct) no decision
 * goes wrong by it, so in a large group the next moves need not wait.
 */
static bool knbd_cm_must_land(const struct knbd_cm_params *p,
			      const struct knbd_cm_state *st,
			      const struct knbd_cm_group *g)
{
	return knbd_cm_above(st->moved_load, g->mean,
			     (p->clear_pct - 100) * g->nr);
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
			st->landed_at = knbd_cm_must_land(p, st, &g) ? now ?: 1 : 0;
		}
	}
	/* Alone (or nobody else known): nothing to compare with. */
	if (g.nr < 2 || !me->fresh)
		goto idle;
	if (me->load < p->min_load)
		goto idle;
	if (st->active)
		over = knbd_cm_above(me->load, g.mean, p->clear_pct);
	else
		over = knbd_cm_above(me->load, g.mean, p->threshold_pct);
	if (!over)
		goto idle;
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
	if (st->landing && knbd_cm_must_land(p, st, &g))
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
 * Connections carrying @load were moved: count the group's client
 * connections (m[] as given to knbd_cm_assess()), so that the next
 * decisions wait until their clients are back somewhere.
 */
void knbd_cm_moved(struct knbd_cm_state *st, const struct knbd_cm_member *m,
		   unsigned int nr, unsigned long now, u64 load)
{
	unsigned int i;

	st->last_move = now ?: 1;
	/*
	 * Moved again before the last ones landed: they are still missing
	 * from the counts and from the mean, so keep the count from before
	 * them and add up what is in transit.
	 */
	if (st->landing) {
		st->moved_load += load;
		st->landed_at = 0;
		return;
	}
	st->moved_load = load;
	st->conns_before = 0;
	for (i = 0; i < nr; i++)
		st->conns_before += m[i].fresh ? m[i].conns : 0;
	st->landing = true;
	st->landed_at = 0;
}

/*
 * How much load a member at @own should hand over: down to the mean of
 * group @g.  Not capped by what the least loaded member can take: the
 * moved clients come back through the group address, whose scheduler
 * spreads them over every member under the mean, and what all members
 * over the mean shed adds up to what those under it lack.
 */
u64 knbd_cm_target(const struct knbd_cm_group *g, u64 own)
{
	if (!g->nr || own <= g->mean)
		return 0;
	return own - g->mean;
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

/*
 * How many connections one decision of m[self] may move: about
 * KNBD_CM_PER_RECEIVER per member under the mean, shared among the
 * members shedding (self included).  The moved clients come back
 * through the group address, whose scheduler sees an arrival's load
 * only a second or so later: more arrivals per member than that pile
 * onto whichever looked least loaded, which then sheds them again.
 */
unsigned int knbd_cm_batch_max(const struct knbd_cm_member *m, unsigned int nr,
			       unsigned int self, const struct knbd_cm_group *g)
{
	unsigned int i, under = 0, shedders = 1, n;

	for (i = 0; i < nr; i++) {
		if (!m[i].fresh)
			continue;
		if (m[i].load < g->mean)
			under++;
		if (i != self && m[i].shedding)
			shedders++;
	}
	n = under * KNBD_CM_PER_RECEIVER / shedders;
	return clamp(n, 1U, (unsigned int)KNBD_CM_MAX_BATCH);
}

/* The largest connection knbd_cm_pick() could move, 0 if none. */
static u64 knbd_cm_largest(const u64 *conn_load, unsigned int nr, u64 own,
			   u64 min)
{
	u64 best = 0;
	unsigned int i;

	for (i = 0; i < nr; i++)
		if (conn_load[i] > best && own > min && conn_load[i] < own - min)
			best = conn_load[i];
	return best;
}

/*
 * The connections one decision moves, for a shortfall of @target: while
 * some of it is left, the connection closest to what is left, or the
 * largest one while what is left is more than any one carries (fewest
 * moves), as long as it brings the total closer to @target (less than
 * twice what is left), is of the size of the first (within a factor of
 * 2) and leaves us above the least loaded member.  A group far out of
 * balance needs many moves; one per decision, each waiting for its
 * client to come back, takes minutes at a few hundred connections, and
 * against a gap of many connections no single one is "worth a move" by
 * knbd_cm_pick()'s quarter rule: the decision as a whole must be.
 * Picked entries of @conn_load are set to 0 (so not picked again); their
 * indices go to @picks and their loads to @pick_load, at most @max of
 * them.  Returns how many.
 */
unsigned int knbd_cm_pick_batch(u64 *conn_load, unsigned int nr, u64 own,
				u64 min, u64 target, int *picks, u64 *pick_load,
				unsigned int max)
{
	u64 left = target, moved = 0, worth, l;
	unsigned int n = 0, i;
	int pick;

	if (!nr)
		return 0;
	/*
	 * A move costs its client a reconnect: a decision that closes less
	 * than a quarter of what @max of our average connections would (or
	 * of @target) is not worth it, e.g. an idle connection next to the
	 * one that carries all the load.
	 */
	worth = min_t(u64, target, max * div_u64(own, nr)) / 4;
	while (n < max) {
		l = knbd_cm_largest(conn_load, nr, own, min);
		pick = knbd_cm_pick(conn_load, nr, own, min, min(left, l));
		if (pick < 0)
			break;
		l = conn_load[pick];
		if (n && l >= 2 * left)
			break;
		/*
		 * The group address cannot tell a heavy arrival from a light
		 * one: of a heavy and a light client coming back at once, the
		 * second may join the first on the member both saw least
		 * loaded (tools/cmsim, 4heavy).  One decision moves only
		 * connections within a factor of 2 of its first.
		 */
		if (n && (l < pick_load[0] / 2 || l > 2 * pick_load[0]))
			break;
		picks[n] = pick;
		pick_load[n++] = l;
		conn_load[pick] = 0;
		own -= l;
		moved += l;
		if (l >= left)
			break;
		left -= l;
	}
	if (moved >= worth)
		return n;
	for (i = 0; i < n; i++)
		conn_load[picks[i]] = pick_load[i];
	return 0;
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

	/* bounded under conns_lock, whatever the number of clients */
	for (i = 0; i < KNBD_CM_TALLY_PROBES; i++, s = (s + 1) % KNBD_CM_TALLY_SLOTS)
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
 * The last decision has landed by the group's count: the group's client
 * connections are back to exactly what they were before it, within the
 * landing time.  Exactly: another client arriving as well would make up
 * for one that did not come back.  (A departure and an arrival together
 * still can: the proof is evidence, not certainty; design.md.)
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
	return conns == st->conns_before;
}
