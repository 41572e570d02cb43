// SPDX-License-Identifier: GPL-2.0
/*
 * cmsim: the connection manager of drivers/knbd (connmgr.c, load.c, built
 * unchanged) run over a simulated group, to see how its pacing rules scale
 * (tools/cmsim/README.md).
 *
 * Time runs in steps of STEP_MS.  Every member has a load tick (200 ms)
 * at its own phase; at its tick it does what monitor.c does: sample each
 * client connection (demand, with noise, EWMA 1/4), sum them (node load),
 * smooth its own and its peers' figures once more (EWMA 1/8, peers from
 * their last LOAD report, which is at least one step old), run
 * knbd_cm_assess(), and on KNBD_CM_MOVE pick with knbd_cm_target() /
 * knbd_cm_pick(), drain, book the move, then send its report.
 * A drained connection leaves its member at once and comes back after
 * drain + reconnect delay, through the group address: the member the
 * ip_vs_knbd scheduler picks from the reports (least load plus pending
 * connections charged the mean load per connection, then fewer active
 * connections, then round robin), where its load ramps in with the EWMA.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "knbd.h"

#define STEP_MS		10
#define TICK_MS		200
#define BASE_JIFFIES	100000UL
#define WASTE_MS	10000	/* a move undone or repeated within this is wasted */
#define MAX_M		64	/* KNBD_MAX_MEMBERS */
#define MAX_CAND	512	/* monitor.c's candidate array */
#define UNIT		1000ULL	/* one weighted op/s, in load units */

struct conn {
	u64 demand;		/* load units it brings when served */
	u64 load;		/* its member's EWMA of it */
	int member;		/* -1: in transit or gone */
	bool alive;
	bool hot;		/* in the hot set: 3x its demand */
	bool ipvs;		/* came through the group address (IPVS active) */
	long back_at;		/* in transit: reconnects then (ms) */
	int from[2];		/* the members it was moved off, last first */
	long from_at[2];
	long moved_at;		/* its last move (ms), -1 none */
};

struct member {
	u32 id;
	long phase;		/* its ticks at phase + k * TICK_MS */
	int *conns;		/* connection indices, oldest first */
	int nr, cap;
	u64 load;		/* node->load */
	u64 cm_load;		/* node->cm_load */
	u32 client_conns;
	bool shedding;
	struct knbd_cm_state st;
	/* its view of each peer (knbd_peer: cm_load, cm_fresh) */
	u64 peer_cm[MAX_M];
	bool peer_fresh[MAX_M];
	/* its last report, as the peers and the IPVS director read it */
	u64 rep_load;
	u32 rep_conns;
	bool rep_shed;
	unsigned long rep_at;
	int ipvs_active;
	long last_sent, last_got;	/* moved connections, for the flips */
};

/* knbd_cm_tick()'s ARRAY_SIZE(mon->pick); --batch to try others */
static unsigned int batch = KNBD_CM_MAX_BATCH;
static bool verbose;
/* --noise: every scenario's sample noise instead of its own (< 0: own) */
static double noise_override = -1;

struct sim;
typedef void (*event_fn)(struct sim *s);

struct scenario {
	const char *name;
	const char *what;
	int members;
	int conns;
	int hot;		/* all connections start on the first `hot` members */
	long run_ms;
	double noise;		/* per-sample relative noise, uniform +-noise */
	int demand_kind;	/* 0 equal, 1 heavy+light, 2 lognormal */
	long shift_ms;		/* demand shift period (0: none) */
	double churn_per_s;	/* arrivals per s (departures at the same rate) */
	double goal_s;		/* balanced within this after each skew (0: no skew) */
	double goal_moves;	/* moves <= goal_moves * min (+ goal_slack) */
	int goal_slack;
	int goal_wasted_pct;	/* wasted moves <= this % of the moves */
	int goal_bal_pct;	/* balanced at least this % of the time */
	bool quick;		/* in the --quick set */
};

struct period {
	long start;		/* ms */
	long balanced_at;	/* end of the last unbalanced stretch, -1: never balanced */
	bool unbalanced_now;
	int moves;
	int min_moves;
	int wasted;
};

struct sim {
	const struct scenario *sc;
	struct knbd_cm_params p;
	u64 rng;
	long now_ms;
	struct member m[MAX_M];
	int nm;
	struct conn *c;
	int nc, ccap;
	int ipvs_last;
	/* totals */
	int moves, wasted, wasted_twice, flips, skipped, deferred, churn_in, churn_out;
	int max_transit;
	struct period per[64];
	int np;
	long bal_ticks, ticks;
	int hot_base;		/* first member of the current hot set */
	u64 seed;
	FILE *csv, *csvsum;
	struct knbd_cm_member mv[MAX_M + 1];
	u64 cand_load[MAX_CAND];
	int cand_idx[MAX_CAND];
	int pick[KNBD_CM_MAX_BATCH];
	u64 pick_load[KNBD_CM_MAX_BATCH];
};

/* ---- random numbers (xorshift64*), deterministic per seed ---- */

static u64 rnd(struct sim *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 2685821657736338717ULL;
}

static double rnd01(struct sim *s)
{
	return (rnd(s) >> 11) * (1.0 / 9007199254740992.0);
}

static unsigned long jiffies_at(long ms)
{
	return BASE_JIFFIES + msecs_to_jiffies(ms);
}

/* ---- placement ---- */

static void member_add(struct member *mb, int ci)
{
	if (mb->nr == mb->cap) {
		mb->cap = mb->cap ? 2 * mb->cap : 64;
		mb->conns = realloc(mb->conns, mb->cap * sizeof(int));
		if (!mb->conns)
			exit(1);
	}
	mb->conns[mb->nr++] = ci;
}

static void member_del(struct member *mb, int ci)
{
	int i;

	for (i = 0; i < mb->nr; i++)
		if (mb->conns[i] == ci)
			break;
	if (i == mb->nr)
		return;
	memmove(&mb->conns[i], &mb->conns[i + 1], (mb->nr - i - 1) * sizeof(int));
	mb->nr--;
}

static int conn_new(struct sim *s, u64 demand)
{
	struct conn *c;

	if (s->nc == s->ccap) {
		s->ccap = s->ccap ? 2 * s->ccap : 1024;
		s->c = realloc(s->c, s->ccap * sizeof(*s->c));
		if (!s->c)
			exit(1);
	}
	c = &s->c[s->nc];
	memset(c, 0, sizeof(*c));
	c->demand = demand;
	c->member = -1;
	c->alive = true;
	c->from[0] = c->from[1] = -1;
	c->moved_at = -1;
	return s->nc++;
}

static void conn_attach(struct sim *s, int ci, int mi, bool ipvs)
{
	struct conn *c = &s->c[ci];

	c->member = mi;
	c->load = 0;
	c->ipvs = ipvs;
	if (ipvs)
		s->m[mi].ipvs_active++;
	member_add(&s->m[mi], ci);
}

static void conn_detach(struct sim *s, int ci)
{
	struct conn *c = &s->c[ci];

	if (c->member < 0)
		return;
	if (c->ipvs)
		s->m[c->member].ipvs_active--;
	member_del(&s->m[c->member], ci);
	c->member = -1;
}

/* ---- the IPVS director: ip_vs_knbd_schedule() on the reports ---- */

static int ipvs_pick(struct sim *s)
{
	unsigned long now = jiffies_at(s->now_ms), tick = msecs_to_jiffies(TICK_MS);
	u64 sum_load = 0, per_conn, best_score = 0;
	u32 sum_conns = 0;
	int i, best = -1, best_active = 0, best_rank = 0;

	for (i = 0; i < s->nm; i++) {
		if (!knbd_load_fresh(now, s->m[i].rep_at, tick))
			continue;
		sum_load += s->m[i].rep_load;
		sum_conns += s->m[i].rep_conns;
	}
	per_conn = sum_conns ? sum_load / sum_conns : 0;
	per_conn = max_t(u64, per_conn, UNIT);
	for (i = 0; i < s->nm; i++) {
		struct member *mb = &s->m[i];
		u64 pending = 0, score;
		int rank = (i - s->ipvs_last - 1 + 2 * s->nm) % s->nm;

		if (!knbd_load_fresh(now, mb->rep_at, tick))
			continue;
		if (mb->ipvs_active > 0 && (u32)mb->ipvs_active > mb->rep_conns)
			pending = mb->ipvs_active - mb->rep_conns;
		score = (mb->rep_load + pending * per_conn) / UNIT * UNIT;
		if (best < 0 || score < best_score ||
		    (score == best_score && (mb->ipvs_active < best_active ||
		     (mb->ipvs_active == best_active && rank < best_rank)))) {
			best = i;
			best_score = score;
			best_active = mb->ipvs_active;
			best_rank = rank;
		}
	}
	if (best < 0)	/* nothing known: least connection */
		for (i = 0; i < s->nm; i++)
			if (best < 0 || s->m[i].ipvs_active < s->m[best].ipvs_active)
				best = i;
	s->ipvs_last = best;
	return best;
}

/* ---- metrics ---- */

static u64 true_load(struct sim *s, int mi)
{
	u64 sum = 0;
	int i;

	for (i = 0; i < s->m[mi].nr; i++)
		sum += s->c[s->m[mi].conns[i]].demand;
	return sum;
}

static int cmp_u64_desc(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * The most loaded member of a good placement of all served connections:
 * largest first onto the least loaded member (LPT, within 4/3 of the
 * best there is), and never under the mean or the largest connection.
 */
static u64 best_max(struct sim *s)
{
	u64 *d, load[MAX_M] = { 0 }, mx = 0, sum = 0;
	int n = 0, i, j;

	d = malloc((s->nc + 1) * sizeof(*d));
	for (i = 0; i < s->nc; i++)
		if (s->c[i].alive && s->c[i].member >= 0)
			d[n++] = s->c[i].demand;
	qsort(d, n, sizeof(*d), cmp_u64_desc);
	for (i = 0; i < n; i++) {
		int lo = 0;

		for (j = 1; j < s->nm; j++)
			if (load[j] < load[lo])
				lo = j;
		load[lo] += d[i];
		sum += d[i];
	}
	for (j = 0; j < s->nm; j++)
		mx = max(mx, load[j]);
	free(d);
	return mx;
}

/*
 * Balanced: max/min <= 1.5, or (connection sizes permitting no better)
 * the most loaded member within 10 % of a good placement's.
 */
static bool balanced(struct sim *s, u64 bmax)
{
	u64 mx = 0, mn = U64_MAX;
	int i;

	for (i = 0; i < s->nm; i++) {
		u64 l = true_load(s, i);

		mx = max(mx, l);
		mn = min(mn, l);
	}
	if (!mx)
		return true;
	if (mx * 2 <= mn * 3)
		return true;
	return mx * 10 <= bmax * 11;
}

/*
 * A lower bound for the moves: to bring every member down to a good
 * placement's maximum, each must move at least its largest connections
 * until what is left fits.
 */
static int min_moves(struct sim *s)
{
	u64 cap = best_max(s), *d;
	int i, j, moves = 0;

	for (i = 0; i < s->nm; i++) {
		struct member *mb = &s->m[i];
		u64 kept = 0;

		d = malloc((mb->nr + 1) * sizeof(*d));
		for (j = 0; j < mb->nr; j++)
			d[j] = s->c[mb->conns[j]].demand;
		qsort(d, mb->nr, sizeof(*d), cmp_u64_desc);
		for (j = 0; j < mb->nr; j++)
			kept += d[j];
		/* the fewest that must go: the largest first */
		for (j = 0; j < mb->nr && kept > cap; j++) {
			kept -= d[j];
			moves++;
		}
		free(d);
	}
	return moves;
}

static void period_start(struct sim *s)
{
	struct period *pd;

	if (s->np == (int)ARRAY_SIZE(s->per))
		return;
	pd = &s->per[s->np++];
	memset(pd, 0, sizeof(*pd));
	pd->start = s->now_ms;
	pd->balanced_at = -1;
	pd->unbalanced_now = true;
	pd->min_moves = min_moves(s);
}

static void period_sample(struct sim *s)
{
	struct period *pd = &s->per[s->np - 1];
	bool ok = balanced(s, best_max(s));

	s->ticks++;
	s->bal_ticks += ok;
	if (ok && pd->unbalanced_now)
		pd->balanced_at = s->now_ms;
	if (!ok)
		pd->balanced_at = -1;
	pd->unbalanced_now = !ok;
}

/* ---- a member's load tick: monitor.c's knbd_cm_tick() ---- */

static void record_move(struct sim *s, int mi, int ci)
{
	struct conn *c = &s->c[ci];
	struct period *pd = &s->per[s->np - 1];

	/* moved twice within 10 s */
	if (c->moved_at >= 0 && s->now_ms - c->moved_at < WASTE_MS) {
		s->wasted_twice++;
		s->wasted++;
		pd->wasted++;
	}
	c->from[1] = c->from[0];
	c->from_at[1] = c->from_at[0];
	c->from[0] = mi;
	c->from_at[0] = s->now_ms;
	c->moved_at = s->now_ms;
	if (s->now_ms - s->m[mi].last_got < WASTE_MS && s->m[mi].last_got)
		s->flips++;
	s->m[mi].last_sent = s->now_ms;
	s->moves++;
	pd->moves++;
}

static void cm_tick(struct sim *s, int self)
{
	struct member *me = &s->m[self];
	unsigned long now = jiffies_at(s->now_ms), tick = msecs_to_jiffies(TICK_MS);
	struct knbd_cm_member *m = s->mv;
	int map[MAX_M + 1], nr = 1, nc = 0, i, k, np;
	enum knbd_cm_verdict v;
	struct knbd_cm_group g;
	u64 target, own, l;

	me->cm_load = knbd_load_ewma(me->cm_load, me->load, KNBD_CM_EWMA_SHIFT);
	m[0] = (struct knbd_cm_member){ .id = me->id, .load = me->cm_load,
		.conns = me->client_conns, .fresh = true, .shedding = me->shedding };
	map[0] = self;
	for (i = 0; i < s->nm; i++) {
		struct member *pe = &s->m[i];
		bool fresh;

		if (i == self)
			continue;
		fresh = knbd_load_fresh(now, pe->rep_at, tick);
		me->peer_cm[i] = !fresh ? 0 : !me->peer_fresh[i] ? pe->rep_load :
			knbd_load_ewma(me->peer_cm[i], pe->rep_load, KNBD_CM_EWMA_SHIFT);
		me->peer_fresh[i] = fresh;
		map[nr] = i;
		m[nr++] = (struct knbd_cm_member){ .id = pe->id, .load = me->peer_cm[i],
			.conns = pe->rep_conns, .fresh = fresh, .shedding = pe->rep_shed };
	}
	v = knbd_cm_assess(&s->p, &me->st, m, nr, 0, now);
	me->shedding = v == KNBD_CM_WAIT || v == KNBD_CM_MOVE;
	if (v == KNBD_CM_DEFER)
		s->deferred++;
	if (v != KNBD_CM_MOVE)
		return;

	knbd_cm_group(m, nr, &g);
	target = knbd_cm_target(&g, m[0].load);
	for (i = 0; i < me->nr && nc < MAX_CAND; i++) {
		s->cand_idx[nc] = me->conns[i];
		s->cand_load[nc++] = s->c[me->conns[i]].load;
	}
	me->st.last_move = now ?: 1;
	for (i = 0, own = 0; i < nc; i++)
		own += s->cand_load[i];
	np = nc < 2 ? 0 : knbd_cm_pick_batch(s->cand_load, nc, own, g.min, target,
					     s->pick, s->pick_load,
					     min(batch, knbd_cm_batch_max(m, nr, 0, &g)));
	if (!np) {
		s->skipped++;
		return;
	}
	for (k = 0, l = 0; k < np; k++)
		l += s->pick_load[k];
	knbd_cm_moved(&me->st, m, nr, now, l);
	for (k = 0; k < np; k++) {
		int ci = s->cand_idx[s->pick[k]];
		unsigned int lo = 0;

		/* knbd_cm_book(): off us, onto the least loaded member */
		l = s->pick_load[k];
		me->cm_load = me->cm_load > l ? me->cm_load - l : 0;
		for (i = 1; i < nr; i++)
			if (m[i].fresh && (!lo || m[i].load < m[lo].load))
				lo = i;
		if (lo)
			m[lo].load += l;
		record_move(s, self, ci);
		conn_detach(s, ci);
		/* drain (>= 100 ms of waiting for stragglers), then the client's reconnect */
		s->c[ci].back_at = s->now_ms + 150 + 500 + (long)(rnd01(s) * 1500);
	}
	/* knbd_cm_book_peers() */
	for (i = 1; i < nr; i++)
		if (me->peer_fresh[map[i]])
			me->peer_cm[map[i]] = m[i].load;
}

static void member_tick(struct sim *s, int mi)
{
	struct member *mb = &s->m[mi];
	double nz = noise_override >= 0 ? noise_override : s->sc->noise;
	u64 sum = 0;
	int i;

	for (i = 0; i < mb->nr; i++) {
		struct conn *c = &s->c[mb->conns[i]];
		double f = 1.0 + nz * (2 * rnd01(s) - 1);
		u64 sample = (u64)(c->demand * f);

		c->load = knbd_load_ewma(c->load, sample, KNBD_LOAD_EWMA_SHIFT);
		sum += c->load;
	}
	mb->load = sum;
	mb->client_conns = mb->nr;
	cm_tick(s, mi);
	mb->rep_load = mb->load;
	mb->rep_conns = mb->client_conns;
	mb->rep_shed = mb->shedding;
	mb->rep_at = jiffies_at(s->now_ms);
}

/* ---- clients ---- */

static void reconnects(struct sim *s)
{
	int ci, transit = 0;

	for (ci = 0; ci < s->nc; ci++) {
		struct conn *c = &s->c[ci];
		int mi;

		if (!c->alive || c->member >= 0)
			continue;
		if (c->back_at > s->now_ms) {
			transit++;
			continue;
		}
		mi = ipvs_pick(s);
		/* back on a member it was moved off within 10 s */
		if ((c->from[0] == mi && s->now_ms - c->from_at[0] < WASTE_MS) ||
		    (c->from[1] == mi && s->now_ms - c->from_at[1] < WASTE_MS)) {
			s->wasted++;
			s->per[s->np - 1].wasted++;
		}
		if (s->now_ms - s->m[mi].last_sent < WASTE_MS && s->m[mi].last_sent)
			s->flips++;
		s->m[mi].last_got = s->now_ms;
		conn_attach(s, ci, mi, true);
	}
	s->max_transit = max(s->max_transit, transit);
}

static u64 demand_of(struct sim *s, int i)
{
	const u64 base = 500 * UNIT;	/* 500 weighted ops/s */

	switch (s->sc->demand_kind) {
	case 1:		/* one heavy client (2 connections) of 4x, the rest light */
		return i < 2 ? 4 * base : base;
	case 2: {	/* unequal: lognormal, sigma 0.6, median base */
		double u1 = rnd01(s) + 1e-12, u2 = rnd01(s);
		double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);

		return (u64)(base * exp(0.6 * z)) + UNIT;
	}
	default:
		return base;
	}
}

static void churn(struct sim *s)
{
	double p = s->sc->churn_per_s * STEP_MS / 1000.0;
	int ci;

	if (rnd01(s) < p) {
		ci = conn_new(s, demand_of(s, 2 + (int)(rnd(s) % 1000)));
		conn_attach(s, ci, ipvs_pick(s), true);
		s->churn_in++;
	}
	if (rnd01(s) < p) {
		int n = 0, pickn;

		for (ci = 0; ci < s->nc; ci++)
			n += s->c[ci].alive && s->c[ci].member >= 0;
		if (n <= 2)
			return;
		pickn = rnd(s) % n;
		for (ci = 0; ci < s->nc; ci++) {
			if (!s->c[ci].alive || s->c[ci].member < 0)
				continue;
			if (!pickn--)
				break;
		}
		conn_detach(s, ci);
		s->c[ci].alive = false;
		s->churn_out++;
	}
}

/*
 * The hot set moves: the connections on 8 (or members / 8) members in a
 * row, starting elsewhere each time, bring 3x their demand; the last hot
 * set is back to normal.
 */
static void shift(struct sim *s)
{
	int k = max(1, s->nm / 8), i, j;

	for (i = 0; i < s->nc; i++) {
		if (s->c[i].hot)
			s->c[i].demand /= 3;
		s->c[i].hot = false;
	}
	s->hot_base = (s->hot_base + s->nm / 3 + 1) % s->nm;
	for (i = 0; i < k; i++) {
		struct member *mb = &s->m[(s->hot_base + i) % s->nm];

		for (j = 0; j < mb->nr; j++) {
			s->c[mb->conns[j]].demand *= 3;
			s->c[mb->conns[j]].hot = true;
		}
	}
}

/* ---- a run ---- */

static void sim_init(struct sim *s, const struct scenario *sc, u64 seed)
{
	int i;

	memset(s, 0, sizeof(*s));
	s->sc = sc;
	s->seed = seed;
	s->rng = seed * 0x9E3779B97F4A7C15ULL + 1;
	s->p = (struct knbd_cm_params){
		.threshold_pct = KNBD_CM_DEFAULT_THRESHOLD_PCT,
		.clear_pct = KNBD_CM_DEFAULT_CLEAR_PCT,
		.hold_ms = KNBD_CM_DEFAULT_HOLD_MS,
		.interval_ms = KNBD_CM_DEFAULT_INTERVAL_MS,
		.min_load = KNBD_CM_DEFAULT_MIN_LOAD,
	};
	s->nm = sc->members;
	for (i = 0; i < s->nm; i++) {
		s->m[i].id = i + 1;
		s->m[i].phase = (rnd(s) % (TICK_MS / STEP_MS)) * STEP_MS;
	}
	for (i = 0; i < sc->conns; i++) {
		int ci = conn_new(s, demand_of(s, i)), lo = i % sc->hot, j;

		/* a group in use starts balanced: each on the least loaded */
		if (sc->hot == sc->members)
			for (j = 0; j < s->nm; j++)
				if (true_load(s, j) < true_load(s, lo))
					lo = j;
		/* a group in use: its clients came through the group address */
		conn_attach(s, ci, lo, sc->hot == sc->members);
	}
	s->ipvs_last = s->nm - 1;
}

static void sim_free(struct sim *s)
{
	int i;

	for (i = 0; i < s->nm; i++)
		free(s->m[i].conns);
	free(s->c);
}

static void csv_row(struct sim *s)
{
	u64 mx = 0, mn = U64_MAX, sum = 0;
	int i, transit = 0;

	for (i = 0; i < s->nm; i++) {
		u64 l = true_load(s, i);

		mx = max(mx, l);
		mn = min(mn, l);
		sum += l;
	}
	for (i = 0; i < s->nc; i++)
		transit += s->c[i].alive && s->c[i].member < 0;
	fprintf(s->csv, "%.1f,%.1f,%.1f,%.1f,%.3f,%d,%d\n", s->now_ms / 1000.0,
		mx / 1000.0, mn / 1000.0, sum / 1000.0 / s->nm,
		mn ? (double)mx / mn : 0.0, s->moves, transit);
}

static void sim_run(struct sim *s, const char *csvdir)
{
	const struct scenario *sc = s->sc;
	char path[512];
	int i;

	if (csvdir) {
		snprintf(path, sizeof(path), "%s/%s.csv", csvdir, sc->name);
		s->csv = fopen(path, "w");
		if (s->csv)
			fprintf(s->csv, "t_s,max,min,mean,max_over_min,moves,in_transit\n");
	}
	period_start(s);
	for (s->now_ms = 0; s->now_ms < sc->run_ms; s->now_ms += STEP_MS) {
		if (sc->shift_ms && s->now_ms && s->now_ms % sc->shift_ms == 0) {
			shift(s);
			period_start(s);
		}
		if (sc->churn_per_s)
			churn(s);
		reconnects(s);
		for (i = 0; i < s->nm; i++)
			if ((s->now_ms - s->m[i].phase) % TICK_MS == 0)
				member_tick(s, i);
		if (s->now_ms % TICK_MS == 0) {
			period_sample(s);
			if (s->csv)
				csv_row(s);
		}
	}
	if (s->csv)
		fclose(s->csv);
}

/* ---- scenarios ---- */

static const struct scenario scenarios[] = {
	{ .name = "3x6", .what = "3 members, 3 clients x 2 conns, all on m1",
	  .members = 3, .conns = 6, .hot = 1, .run_ms = 60000, .noise = 0.1,
	  .goal_s = 10, .goal_moves = 1.0, .goal_slack = 1, .quick = true },
	{ .name = "4heavy", .what = "4 members, 1 heavy (4x) + 3 light clients x 2, all on m1",
	  .members = 4, .conns = 8, .hot = 1, .run_ms = 60000, .noise = 0.1,
	  .demand_kind = 1, .goal_s = 10, .goal_moves = 1.0, .goal_slack = 1,
	  .quick = true },
	{ .name = "4churn", .what = "4 members, 16 unequal conns, 1 arrival + 1 departure / 5 s",
	  .members = 4, .conns = 16, .hot = 4, .run_ms = 300000, .noise = 0.1,
	  .demand_kind = 2, .churn_per_s = 0.2, .goal_wasted_pct = 34, .goal_bal_pct = 50,
	  .quick = true },
	{ .name = "16x1000", .what = "16 members, 1000 unequal conns, all on 2",
	  .members = 16, .conns = 1000, .hot = 2, .run_ms = 90000, .noise = 0.1,
	  .demand_kind = 2, .goal_s = 60, .goal_moves = 1.1, .goal_wasted_pct = 1,
	  .quick = true },
	{ .name = "64x4000", .what = "64 members, 4000 unequal conns, all on 8",
	  .members = 64, .conns = 4000, .hot = 8, .run_ms = 120000, .noise = 0.1,
	  .demand_kind = 2, .goal_s = 60, .goal_moves = 1.1, .goal_wasted_pct = 1,
	  .quick = true },
	{ .name = "64shift", .what = "64 x 4000 balanced, a hot set (8 members' conns x3) moving every 60 s",
	  .members = 64, .conns = 4000, .hot = 64, .run_ms = 300000, .noise = 0.1,
	  .demand_kind = 2, .shift_ms = 60000, .goal_s = 60, .goal_moves = 1.1,
	  .goal_wasted_pct = 1 },
};

static int report(struct sim *s, bool check)
{
	const struct scenario *sc = s->sc;
	int i, moves = 0, minm = 0, fail = 0;
	long worst = 0;
	char tb[32], mb[32];
	double bal = s->ticks ? 100.0 * s->bal_ticks / s->ticks : 0.0;

	/* a churn run has no skew to recover from: its time and bound say nothing */
	for (i = 0; i < s->np; i++) {
		struct period *pd = &s->per[i];
		long t = pd->balanced_at < 0 ? -1 : pd->balanced_at - pd->start;

		moves += pd->moves;
		if (!sc->goal_s || (sc->shift_ms && !i))
			continue;
		minm += pd->min_moves;
		if (worst >= 0 && (t < 0 || t > worst))
			worst = t;
		if (check && (t < 0 || t > sc->goal_s * 1000))
			fail = 1;
		if (check && pd->moves > sc->goal_moves * pd->min_moves + sc->goal_slack)
			fail = 1;
	}
	if (check && s->wasted * 100 > sc->goal_wasted_pct * moves)
		fail = 1;
	if (check && bal < sc->goal_bal_pct)
		fail = 1;
	if (!sc->goal_s)
		snprintf(tb, sizeof(tb), "-");
	else if (worst < 0)
		snprintf(tb, sizeof(tb), "never");
	else
		snprintf(tb, sizeof(tb), "%.1f", worst / 1000.0);
	if (sc->goal_s)
		snprintf(mb, sizeof(mb), "%d", minm);
	else
		snprintf(mb, sizeof(mb), "-");
	printf("%-9s %5d %5d %4llu %7s %6d %6s %6.2f %6d %5d %7d %8d %6.1f %s\n",
	       sc->name, sc->members, s->nc, (unsigned long long)s->seed, tb, moves, mb,
	       minm ? (double)moves / minm : 0.0, s->wasted, s->flips,
	       s->skipped, s->max_transit, bal,
	       check ? (fail ? "FAIL" : "ok") : "");
	if (s->csvsum)
		fprintf(s->csvsum, "%s,%d,%d,%llu,%s,%d,%s,%.3f,%d,%d,%d,%d,%.1f\n",
			sc->name, sc->members, s->nc, (unsigned long long)s->seed, tb,
			moves, mb, minm ? (double)moves / minm : 0.0, s->wasted,
			s->flips, s->skipped, s->max_transit, bal);
	if (verbose) {
		printf("  %s; wasted: %d moved twice within 10 s, %d back where they left\n",
		       sc->what, s->wasted_twice, s->wasted - s->wasted_twice);
		for (i = 0; i < s->np; i++)
			printf("  period %d at %.0f s: balanced after %.1f s, moves %d (min %d), wasted %d\n",
			       i, s->per[i].start / 1000.0,
			       s->per[i].balanced_at < 0 ? -1.0 :
			       (s->per[i].balanced_at - s->per[i].start) / 1000.0,
			       s->per[i].moves, s->per[i].min_moves, s->per[i].wasted);
	}
	return fail;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cmsim [--seed N] [--seeds K] [--quick] [--check] [--csv DIR] [--only NAME]\n"
		"             [--verbose] [--batch N] [--noise X]\n"
		"  Runs the connection manager policy over simulated groups; prints one row per\n"
		"  scenario (and seed). --check: exit 1 unless every scenario meets its goals.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "seeds", required_argument, NULL, 'k' },
		{ "quick", no_argument, NULL, 'q' },
		{ "check", no_argument, NULL, 'c' },
		{ "csv", required_argument, NULL, 'o' },
		{ "only", required_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "batch", required_argument, NULL, 'b' },
		{ "noise", required_argument, NULL, 'z' },
		{ "help", no_argument, NULL, 'h' },
		{ }
	};
	const char *csvdir = NULL, *only = NULL;
	FILE *sum = NULL;
	bool quick = false, check = false;
	u64 seed = 1;
	int seeds = 1, opt, fails = 0;
	unsigned int i;
	struct sim *s = malloc(sizeof(*s));

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'k': seeds = atoi(optarg); break;
		case 'q': quick = true; break;
		case 'c': check = true; break;
		case 'o': csvdir = optarg; break;
		case 'n': only = optarg; break;
		case 'v': verbose = true; break;
		case 'z': noise_override = atof(optarg); break;
		case 'b': batch = clamp(atoi(optarg), 1, KNBD_CM_MAX_BATCH); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (csvdir) {
		char path[512];

		snprintf(path, sizeof(path), "%s/summary.csv", csvdir);
		sum = fopen(path, "w");
		if (!sum) {
			perror(path);
			return 2;
		}
		fprintf(sum, "scenario,members,conns,seed,balanced_s,moves,min_moves,ratio,wasted,flips,no_fit,max_in_transit,balanced_pct\n");
	}
	printf("%-9s %5s %5s %4s %7s %6s %6s %6s %6s %5s %7s %8s %6s\n", "scenario",
	       "membr", "conns", "seed", "bal_s", "moves", "min", "ratio", "wasted",
	       "flips", "no_fit", "transit", "bal%");
	for (i = 0; i < ARRAY_SIZE(scenarios); i++) {
		const struct scenario *sc = &scenarios[i];
		int k;

		if (quick && !sc->quick)
			continue;
		if (only && strcmp(only, sc->name))
			continue;
		for (k = 0; k < seeds; k++) {
			sim_init(s, sc, seed + k);
			s->csvsum = sum;
			sim_run(s, k ? NULL : csvdir);
			fails += report(s, check);
			sim_free(s);
		}
	}
	free(s);
	if (sum)
		fclose(sum);
	return fails ? 1 : 0;
}
