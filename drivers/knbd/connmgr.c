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
