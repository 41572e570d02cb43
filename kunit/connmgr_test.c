// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for the connection manager policy of drivers/knbd/connmgr.c:
 * combining the members' reports (stale ones left out), when a member is
 * over-utilised (threshold, hysteresis, hold time, rate, waiting for moved
 * clients to land when that matters) and which connections it moves.
 *
 * Run with scripts/kunit.sh.
 */
#include <kunit/test.h>
#include <linux/in.h>
#include <linux/jiffies.h>

#include "knbd.h"

static const struct knbd_cm_params cm_defaults = {
	.threshold_pct = 130,
	.clear_pct = 110,
	.hold_ms = 1000,
	.interval_ms = 500,
	.min_load = 1000,
};

#define M(_id, _load)		{ .id = (_id), .load = (_load), .fresh = true }
#define STALE(_id, _load)	{ .id = (_id), .load = (_load), .fresh = false }

static void cm_group_mean_min_max(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 9000), M(2, 3000), M(3, 0) };
	struct knbd_cm_group g;

	knbd_cm_group(m, ARRAY_SIZE(m), &g);
	KUNIT_EXPECT_EQ(test, g.nr, 3U);
	KUNIT_EXPECT_EQ(test, g.mean, 4000ULL);
	KUNIT_EXPECT_EQ(test, g.min, 0ULL);
	KUNIT_EXPECT_EQ(test, g.max, 9000ULL);
	KUNIT_EXPECT_EQ(test, g.max_id, 1U);
}

static void cm_group_skips_stale(struct kunit *test)
{
	/* A member gone quiet is unknown, not idle: it must not pull the mean down. */
	struct knbd_cm_member m[] = { M(1, 9000), STALE(2, 0), M(3, 3000) };
	struct knbd_cm_group g;

	knbd_cm_group(m, ARRAY_SIZE(m), &g);
	KUNIT_EXPECT_EQ(test, g.nr, 2U);
	KUNIT_EXPECT_EQ(test, g.mean, 6000ULL);
	KUNIT_EXPECT_EQ(test, g.min, 3000ULL);
}

static void cm_group_tie_lowest_id(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(7, 5000), M(3, 5000), M(5, 1000) };
	struct knbd_cm_group g;

	knbd_cm_group(m, ARRAY_SIZE(m), &g);
	KUNIT_EXPECT_EQ(test, g.max_id, 3U);
}

static void cm_group_none_fresh(struct kunit *test)
{
	struct knbd_cm_member m[] = { STALE(1, 5000), STALE(2, 1) };
	struct knbd_cm_group g;

	knbd_cm_group(m, ARRAY_SIZE(m), &g);
	KUNIT_EXPECT_EQ(test, g.nr, 0U);
	KUNIT_EXPECT_EQ(test, g.mean, 0ULL);
	KUNIT_EXPECT_EQ(test, g.min, 0ULL);
}

static void cm_assess_alone_is_idle(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 90000), STALE(2, 0) };
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 2, 0, 1000),
			KNBD_CM_IDLE);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 1, 0, 1000),
			KNBD_CM_IDLE);
}

static void cm_assess_balanced_is_idle(struct kunit *test)
{
	/* 12000 vs mean 10000: 120% < 130% threshold. */
	struct knbd_cm_member m[] = { M(1, 12000), M(2, 9000), M(3, 9000) };
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000),
			KNBD_CM_IDLE);
	KUNIT_EXPECT_FALSE(test, st.active);
}

static void cm_assess_hold_then_move(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 30000), M(2, 0), M(3, 0) };
	unsigned long hold = msecs_to_jiffies(1000);
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_TRUE(test, st.active);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000 + hold - 1),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000 + hold),
			KNBD_CM_MOVE);
}

static void cm_assess_interval_between_moves(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 30000), M(2, 0), M(3, 0) };
	unsigned long hold = msecs_to_jiffies(1000), ival = msecs_to_jiffies(500);
	unsigned long t = 1000 + hold;
	struct knbd_cm_state st = { };

	knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000);
	KUNIT_ASSERT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t), KNBD_CM_MOVE);
	st.last_move = t;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t + 1),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t + ival - 1),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t + ival),
			KNBD_CM_MOVE);
}

static void cm_assess_waits_for_move_to_land(struct kunit *test)
{
	/* 6 client connections in the group, all on member 1 */
	struct knbd_cm_member m[] = { { .id = 1, .load = 30000, .conns = 6, .fresh = true },
				      { .id = 2, .load = 0, .conns = 0, .fresh = true },
				      { .id = 3, .load = 0, .conns = 0, .fresh = true } };
	unsigned long hold = msecs_to_jiffies(1000), ival = msecs_to_jiffies(500);
	unsigned long t = 1000 + hold, back;
	struct knbd_cm_state st = { };

	knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000);
	KUNIT_ASSERT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t), KNBD_CM_MOVE);
	/* a sixth of the group's load: it shows in the mean */
	knbd_cm_moved(&st, m, 3, t, 5000);
	KUNIT_EXPECT_EQ(test, st.conns_before, 6U);
	/* drained, client not back yet: 5 in the group, long past the interval */
	m[0].conns = 5;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, t + 2 * ival),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_TRUE(test, st.landing);
	/* back on member 2: the interval runs from here */
	back = t + 3 * ival;
	m[1].conns = 1;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, back),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_FALSE(test, st.landing);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, back + ival - 1),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, back + ival),
			KNBD_CM_MOVE);
}

static void cm_assess_lost_client_lands_late(struct kunit *test)
{
	/* A moved client that never comes back holds up moves only so long. */
	struct knbd_cm_member m[] = { { .id = 1, .load = 30000, .conns = 6, .fresh = true },
				      { .id = 2, .load = 0, .fresh = true },
				      { .id = 3, .load = 0, .fresh = true } };
	unsigned long hold = msecs_to_jiffies(1000), ival = msecs_to_jiffies(500);
	unsigned long t = 1000 + hold;
	struct knbd_cm_state st = { };

	knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 1000);
	knbd_cm_moved(&st, m, 3, t, 5000);
	m[0].conns = 5;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0,
					     t + KNBD_CM_LAND_TIME - 1), KNBD_CM_WAIT);
	KUNIT_EXPECT_TRUE(test, st.landing);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0,
					     t + KNBD_CM_LAND_TIME), KNBD_CM_WAIT);
	KUNIT_EXPECT_FALSE(test, st.landing);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0,
					     t + KNBD_CM_LAND_TIME + ival), KNBD_CM_MOVE);
}

static void cm_assess_hysteresis(struct kunit *test)
{
	/* Once active, 120% of the mean (under threshold, over clear) keeps going. */
	struct knbd_cm_member hi[] = { M(1, 30000), M(2, 0), M(3, 0) };
	struct knbd_cm_member mid[] = { M(1, 12000), M(2, 9000), M(3, 9000) };
	struct knbd_cm_member low[] = { M(1, 10500), M(2, 9800), M(3, 9700) };
	struct knbd_cm_state st = { };

	knbd_cm_assess(&cm_defaults, &st, hi, 3, 0, 100);
	KUNIT_ASSERT_TRUE(test, st.active);
	KUNIT_EXPECT_NE(test, knbd_cm_assess(&cm_defaults, &st, mid, 3, 0, 101),
			KNBD_CM_IDLE);
	KUNIT_EXPECT_TRUE(test, st.active);
	/* 10500 vs mean 10000 = 105% < 110%: cleared. */
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, low, 3, 0, 102),
			KNBD_CM_IDLE);
	KUNIT_EXPECT_FALSE(test, st.active);
	/* ... and 120% is not enough to start again. */
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, mid, 3, 0, 103),
			KNBD_CM_IDLE);
}

static void cm_assess_dip_restarts_hold(struct kunit *test)
{
	struct knbd_cm_member hi[] = { M(1, 30000), M(2, 0), M(3, 0) };
	struct knbd_cm_member ok[] = { M(1, 1000), M(2, 1000), M(3, 1000) };
	unsigned long hold = msecs_to_jiffies(1000);
	struct knbd_cm_state st = { };

	knbd_cm_assess(&cm_defaults, &st, hi, 3, 0, 100);
	knbd_cm_assess(&cm_defaults, &st, ok, 3, 0, 100 + hold / 2);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, hi, 3, 0, 100 + hold),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, hi, 3, 0,
					     100 + hold / 2 + hold + 1),
			KNBD_CM_WAIT);
}

static void cm_assess_any_member_over(struct kunit *test)
{
	/*
	 * Members 1 and 2 are both over: both hold (whichever leads by a few
	 * ticks of noise); a member near the mean stays put.
	 */
	struct knbd_cm_member m[] = { M(2, 20000), M(1, 30000), M(3, 0), M(4, 0) };
	struct knbd_cm_member n[] = { M(3, 13000), M(1, 30000), M(2, 7000), M(4, 0) };
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 4, 0, 100),
			KNBD_CM_WAIT);
	memset(&st, 0, sizeof(st));
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 4, 1, 100),
			KNBD_CM_WAIT);
	memset(&st, 0, sizeof(st));
	/* mean 12500: 13000 is 104% */
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, n, 4, 0, 100),
			KNBD_CM_IDLE);
}

static void cm_assess_sheds_alongside_others(struct kunit *test)
{
	/*
	 * Each sheds only its own excess and those add up to what the
	 * members under the mean lack: a peer shedding (lower id or not) does
	 * not hold us back.
	 */
	struct knbd_cm_member me2[] = { M(2, 31000), { .id = 1, .load = 29000,
		.fresh = true, .shedding = true }, M(3, 0), M(4, 0) };
	unsigned long hold = msecs_to_jiffies(1000);
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me2, 4, 0, 100),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_TRUE(test, st.active);
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me2, 4, 0, 100 + hold),
			KNBD_CM_MOVE);
}

static void cm_moved_again_while_landing(struct kunit *test)
{
	/*
	 * A second decision before the first one's clients are back: the
	 * count before the first stays the mark, and the load in transit
	 * adds up (the mean misses both).
	 */
	struct knbd_cm_member m[] = { M(1, 9000), M(2, 1000), M(3, 1000) };
	struct knbd_cm_state st = { };

	m[0].conns = 6;
	m[1].conns = 1;
	m[2].conns = 1;
	knbd_cm_moved(&st, m, 3, 1000, 2000);
	m[0].conns = 5;
	knbd_cm_moved(&st, m, 3, 1010, 3000);
	KUNIT_EXPECT_TRUE(test, st.landing);
	KUNIT_EXPECT_EQ(test, st.conns_before, 8U);
	KUNIT_EXPECT_EQ(test, st.moved_load, 5000ULL);
	KUNIT_EXPECT_EQ(test, st.last_move, 1010UL);
}

static void cm_assess_small_move_needs_no_landing(struct kunit *test)
{
	/*
	 * 16 members, mean 2500: moving 3000 misses from the mean by 187,
	 * under the 10 % hysteresis (250): the next decision comes after the
	 * interval, clients back or not, and their landing adds no wait.
	 */
	struct knbd_cm_member three[] = { { .id = 1, .load = 9000, .conns = 6, .fresh = true },
					  M(2, 0), M(3, 0) };
	struct knbd_cm_member m[16];
	unsigned long hold = msecs_to_jiffies(1000), ival = msecs_to_jiffies(500);
	unsigned long t = 1000 + hold;
	struct knbd_cm_state st = { };
	unsigned int i;

	for (i = 0; i < 16; i++)
		m[i] = (struct knbd_cm_member){ .id = i + 1, .load = i < 2 ? 20000 : 0,
						.conns = i < 2 ? 40 : 0, .fresh = true };
	knbd_cm_assess(&cm_defaults, &st, m, 16, 0, 1000);
	KUNIT_ASSERT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 16, 0, t), KNBD_CM_MOVE);
	knbd_cm_moved(&st, m, 16, t, 3000);
	st.last_move = t;
	m[0].conns = 34;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 16, 0, t + ival),
			KNBD_CM_MOVE);
	KUNIT_EXPECT_TRUE(test, st.landing);
	/* back: no interval from the landing on */
	st.last_move = t;
	m[5].conns = 6;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 16, 0, t + ival + 1),
			KNBD_CM_MOVE);
	KUNIT_EXPECT_FALSE(test, st.landing);
	KUNIT_EXPECT_EQ(test, st.landed_at, 0UL);
	/* the same move among 3 members at mean 3000 is a third of it: wait */
	knbd_cm_moved(&st, three, 3, t, 3000);
	three[0].conns = 5;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, three, 3, 0, t + ival),
			KNBD_CM_WAIT);
	KUNIT_EXPECT_TRUE(test, st.landing);
}

static void cm_assess_min_load(struct kunit *test)
{
	/* 900 vs 0: a huge ratio but nothing worth moving. */
	struct knbd_cm_member m[] = { M(1, 900), M(2, 0), M(3, 0) };
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 100),
			KNBD_CM_IDLE);
}

static void cm_assess_no_overflow(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, U64_MAX / 2), M(2, U64_MAX / 4),
				      M(3, U64_MAX / 4) };
	struct knbd_cm_state st = { };

	/* mean = U64_MAX/3: 150% of it does not fit in 64 bits naively. */
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, m, 3, 0, 100),
			KNBD_CM_WAIT);
}

static u64 cm_target_of(const struct knbd_cm_member *m, unsigned int nr,
			unsigned int self)
{
	struct knbd_cm_group g;

	knbd_cm_group(m, nr, &g);
	return knbd_cm_target(&g, m[self].load);
}

static void cm_target_down_to_mean(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 6000), M(2, 0), M(3, 0) };
	struct knbd_cm_member n[] = { M(1, 6000), M(2, 3000), M(3, 3000) };

	/* mean 2000: 4000, which the group address spreads over 2 and 3 */
	KUNIT_EXPECT_EQ(test, cm_target_of(m, 3, 0), 4000ULL);
	/* mean 4000: 2000, not capped by what the least loaded can take */
	KUNIT_EXPECT_EQ(test, cm_target_of(n, 3, 0), 2000ULL);
	/* under the mean: nothing */
	KUNIT_EXPECT_EQ(test, cm_target_of(n, 3, 1), 0ULL);
}

static void cm_batch_max_per_receiver(struct kunit *test)
{
	/* 6 under the mean, 2 shedding (self and member 2): 6 * 2 / 2 */
	struct knbd_cm_member m[] = { M(1, 30000), { .id = 2, .load = 30000,
		.fresh = true, .shedding = true }, M(3, 0), M(4, 0), M(5, 0),
		M(6, 0), M(7, 0), M(8, 0), STALE(9, 0) };
	struct knbd_cm_member two[] = { M(1, 30000), M(2, 0) };
	struct knbd_cm_member big[KNBD_MAX_MEMBERS];
	struct knbd_cm_group g;
	unsigned int i;

	knbd_cm_group(m, ARRAY_SIZE(m), &g);
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(m, ARRAY_SIZE(m), 0, &g), 6U);
	/* our own shedding flag is not counted twice */
	m[0].shedding = true;
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(m, ARRAY_SIZE(m), 0, &g), 6U);
	/* member 2 sees 1 shedding besides itself */
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(m, ARRAY_SIZE(m), 1, &g), 6U);
	knbd_cm_group(two, 2, &g);
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(two, 2, 0, &g), 2U);
	for (i = 0; i < ARRAY_SIZE(big); i++)
		big[i] = (struct knbd_cm_member){ .id = i + 1, .load = i ? 0 : 90000,
						  .fresh = true };
	knbd_cm_group(big, ARRAY_SIZE(big), &g);
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(big, ARRAY_SIZE(big), 0, &g),
			(unsigned int)KNBD_CM_MAX_BATCH);
	/* nobody under the mean (all equal): still one */
	for (i = 0; i < ARRAY_SIZE(big); i++)
		big[i].load = 1000;
	knbd_cm_group(big, ARRAY_SIZE(big), &g);
	KUNIT_EXPECT_EQ(test, knbd_cm_batch_max(big, ARRAY_SIZE(big), 0, &g), 1U);
}

static void cm_pick_closest_to_target(struct kunit *test)
{
	u64 loads[] = { 500, 1900, 2600, 4000 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 4, 8000, 0, 2000), 1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 4, 8000, 0, 2400), 2);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 4, 8000, 0, 0), 0);
}

static void cm_pick_never_overshoots(struct kunit *test)
{
	/* Moving 4000 from 5000 to a member at 1000 only swaps the roles. */
	u64 loads[] = { 4000 };
	u64 two[] = { 4000, 3500 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 1, 5000, 1000, 2000), -1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(two, 2, 5000, 1000, 2000), 1);
}

static void cm_pick_single_connection(struct kunit *test)
{
	/* The only connection carries all the load: moving it moves the problem. */
	u64 loads[] = { 9000 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 1, 9000, 0, 3000), -1);
}

static void cm_pick_ignores_idle(struct kunit *test)
{
	u64 loads[] = { 0, 0, 3000, 6000 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 4, 9000, 0, 0), 2);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 2, 9000, 0, 3000), -1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 0, 9000, 0, 3000), -1);
}

static void cm_pick_skips_tiny(struct kunit *test)
{
	/* Under a quarter of the wanted load: a reconnect for next to nothing. */
	u64 small[] = { 100, 700 };
	u64 enough[] = { 100, 750 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(small, 2, 9000, 0, 3000), -1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(enough, 2, 9000, 0, 3000), 1);
}

static void cm_pick_tie_oldest(struct kunit *test)
{
	u64 loads[] = { 3000, 3000, 3000 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 3, 9000, 0, 3000), 0);
}

static void cm_pick_own_not_above_min(struct kunit *test)
{
	u64 loads[] = { 100 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 1, 1000, 1000, 0), -1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(loads, 1, 1000, 2000, 0), -1);
}

static void cm_pick_batch_sums_to_target(struct kunit *test)
{
	/* 3500 of ten 1000s: three; a fourth would overshoot as much */
	u64 loads[10] = { 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000 };
	u64 pl[KNBD_CM_MAX_BATCH];
	int picks[KNBD_CM_MAX_BATCH];

	KUNIT_ASSERT_EQ(test, knbd_cm_pick_batch(loads, 10, 10000, 0, 3500, picks, pl,
						 KNBD_CM_MAX_BATCH), 3U);
	/* oldest first; picked ones zeroed */
	KUNIT_EXPECT_EQ(test, picks[0], 0);
	KUNIT_EXPECT_EQ(test, picks[1], 1);
	KUNIT_EXPECT_EQ(test, picks[2], 2);
	KUNIT_EXPECT_EQ(test, pl[2], 1000ULL);
	KUNIT_EXPECT_EQ(test, loads[0], 0ULL);
	KUNIT_EXPECT_EQ(test, loads[3], 1000ULL);
}

static void cm_pick_batch_largest_first(struct kunit *test)
{
	/*
	 * A gap bigger than any connection: the largest (fewest moves);
	 * knbd_cm_pick()'s quarter rule would refuse every 100-odd against
	 * 30000.  Then the closest to what is left (3000 for 4000), then
	 * stop: 2000 for 1000 would overshoot as much as it closes.
	 */
	u64 loads[] = { 2600, 5000, 3000, 2000 };
	u64 small[200], pl[KNBD_CM_MAX_BATCH];
	int picks[KNBD_CM_MAX_BATCH];
	unsigned int i;

	KUNIT_ASSERT_EQ(test, knbd_cm_pick_batch(loads, 4, 12600, 0, 9000, picks, pl,
						 KNBD_CM_MAX_BATCH), 2U);
	KUNIT_EXPECT_EQ(test, picks[0], 1);
	KUNIT_EXPECT_EQ(test, picks[1], 2);
	for (i = 0; i < ARRAY_SIZE(small); i++)
		small[i] = 100 + i;
	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(small, 200, 39900, 0, 30000, picks, pl,
						 4), 4U);
	KUNIT_EXPECT_EQ(test, picks[0], 199);
	KUNIT_EXPECT_EQ(test, pl[3], 296ULL);
}

static void cm_pick_batch_same_size(struct kunit *test)
{
	/*
	 * A heavy client and light ones: the heavy goes alone (the group
	 * address could put a light one next to it); the lights, next time,
	 * together.
	 */
	u64 loads[] = { 1000, 5000, 1000, 1000, 1000, 1000 };
	u64 pl[KNBD_CM_MAX_BATCH];
	int picks[KNBD_CM_MAX_BATCH];

	KUNIT_ASSERT_EQ(test, knbd_cm_pick_batch(loads, 6, 10000, 0, 8000, picks, pl,
						 KNBD_CM_MAX_BATCH), 1U);
	KUNIT_EXPECT_EQ(test, picks[0], 1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 6, 5000, 0, 3000, picks, pl,
						 KNBD_CM_MAX_BATCH), 3U);
}

static void cm_pick_batch_not_worth_it(struct kunit *test)
{
	/*
	 * 8300 cannot go (the receiver at 3000 would end above us); the 100
	 * next to it closes 3 % of the 3600 wanted: no decision, even one
	 * move at most.  The loads are left as they were.
	 */
	u64 loads[] = { 8300, 100 };
	u64 pl[KNBD_CM_MAX_BATCH];
	int picks[KNBD_CM_MAX_BATCH];

	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 2, 8400, 3000, 3600, picks, pl,
						 KNBD_CM_MAX_BATCH), 0U);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 2, 8400, 3000, 3600, picks, pl, 1),
			0U);
	KUNIT_EXPECT_EQ(test, loads[1], 100ULL);
}

static void cm_pick_batch_max(struct kunit *test)
{
	u64 loads[] = { 1000, 1000, 1000, 1000 };
	u64 pl[1];
	int picks[1];

	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 4, 4000, 0, 3000, picks, pl, 1),
			1U);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 4, 4000, 0, 3000, picks, pl, 0),
			0U);
}

static void cm_pick_batch_stays_above_min(struct kunit *test)
{
	/*
	 * At 9000 against a member at 4000: one 3000 goes (6000 left), a
	 * second would leave us at 3000, under where the receiver ends.
	 */
	u64 loads[] = { 3000, 3000, 3000 };
	u64 one[] = { 9000 };
	u64 pl[KNBD_CM_MAX_BATCH];
	int picks[KNBD_CM_MAX_BATCH];

	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(loads, 3, 9000, 4000, 6000, picks, pl,
						 KNBD_CM_MAX_BATCH), 1U);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick_batch(one, 1, 9000, 0, 6000, picks, pl,
						 KNBD_CM_MAX_BATCH), 0U);
}

/* Six equal clients all on member 1 of 3: the policy ends at 2/2/2. */
static void cm_converges_simulated(struct kunit *test)
{
	u64 conns[3][6] = { { 1000, 1000, 1000, 1000, 1000, 1000 } };
	unsigned int nr[3] = { 6, 0, 0 }, i, moves = 0;
	struct knbd_cm_state st[3] = { };
	unsigned long t = 1000;

	for (; t < 1000 + 100 * HZ; t++) {
		for (i = 0; i < 3; i++) {
			struct knbd_cm_member m[3];
			unsigned int j, k, lo = 0;
			u64 target;
			int pick;

			for (j = 0; j < 3; j++) {
				unsigned int x = (i + j) % 3;

				m[j] = (struct knbd_cm_member){ .id = x + 1, .fresh = true };
				for (k = 0; k < nr[x]; k++)
					m[j].load += conns[x][k];
			}
			if (knbd_cm_assess(&cm_defaults, &st[i], m, 3, 0, t) != KNBD_CM_MOVE)
				continue;
			for (j = 1; j < 3; j++)
				if (nr[(i + j) % 3] < nr[lo])
					lo = (i + j) % 3;
			target = cm_target_of(m, 3, 0);
			pick = knbd_cm_pick(conns[i], nr[i], m[0].load,
					    min(m[1].load, m[2].load), target);
			st[i].last_move = t;
			if (pick < 0)
				continue;
			/* The moved client reconnects to the least loaded member. */
			conns[lo][nr[lo]++] = conns[i][pick];
			conns[i][pick] = conns[i][--nr[i]];
			moves++;
		}
	}
	KUNIT_EXPECT_EQ(test, nr[0], 2U);
	KUNIT_EXPECT_EQ(test, nr[1], 2U);
	KUNIT_EXPECT_EQ(test, nr[2], 2U);
	KUNIT_EXPECT_EQ(test, moves, 4U);
}

/*
 * The same with decisions of several moves (as monitor.c): still 2/2/2
 * in 4 moves, and in fewer decisions.
 */
static void cm_converges_batch_simulated(struct kunit *test)
{
	u64 conns[3][6] = { { 1000, 1000, 1000, 1000, 1000, 1000 } };
	unsigned int nr[3] = { 6, 0, 0 }, i, moves = 0, decisions = 0;
	struct knbd_cm_state st[3] = { };
	unsigned long t = 1000;

	for (; t < 1000 + 100 * HZ; t++) {
		for (i = 0; i < 3; i++) {
			struct knbd_cm_member m[3];
			int picks[KNBD_CM_MAX_BATCH];
			u64 pl[KNBD_CM_MAX_BATCH], own = 0, loads[6];
			struct knbd_cm_group g;
			unsigned int j, k, np;

			for (j = 0; j < 3; j++) {
				unsigned int x = (i + j) % 3;

				m[j] = (struct knbd_cm_member){ .id = x + 1, .fresh = true,
								.conns = nr[x] };
				for (k = 0; k < nr[x]; k++)
					m[j].load += conns[x][k];
			}
			if (knbd_cm_assess(&cm_defaults, &st[i], m, 3, 0, t) != KNBD_CM_MOVE)
				continue;
			knbd_cm_group(m, 3, &g);
			memcpy(loads, conns[i], sizeof(loads));
			own = m[0].load;
			np = knbd_cm_pick_batch(loads, nr[i], own, g.min,
						knbd_cm_target(&g, own), picks, pl,
						knbd_cm_batch_max(m, 3, 0, &g));
			st[i].last_move = t;
			decisions++;
			if (!np)
				continue;
			for (k = 0, own = 0; k < np; k++)
				own += pl[k];
			knbd_cm_moved(&st[i], m, 3, t, own);
			/* the group address spreads them: least loaded first */
			for (k = 0; k < np; k++) {
				unsigned int lo = (i + 1) % 3, hi = (i + 2) % 3;

				if (nr[hi] < nr[lo])
					lo = hi;
				conns[lo][nr[lo]++] = 1000;
				moves++;
			}
			for (k = 0, j = 0; k < nr[i]; k++)
				if (loads[k])
					conns[i][j++] = loads[k];
			nr[i] = j;
		}
	}
	KUNIT_EXPECT_EQ(test, nr[0], 2U);
	KUNIT_EXPECT_EQ(test, nr[1], 2U);
	KUNIT_EXPECT_EQ(test, nr[2], 2U);
	KUNIT_EXPECT_EQ(test, moves, 4U);
	KUNIT_EXPECT_LT(test, decisions, 4U);
}

/* ---- the client safety rule ---- */

static struct sockaddr_storage cm_v4(u32 addr, u16 port)
{
	struct sockaddr_storage ss = { };
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

	s4->sin_family = AF_INET;
	s4->sin_addr.s_addr = htonl(addr);
	s4->sin_port = htons(port);
	return ss;
}

static u32 cm_fp(u32 cflags, const u32 *opts, unsigned int nr)
{
	u32 fp = knbd_cm_fp_init(cflags);
	unsigned int i;

	for (i = 0; i < nr; i++)
		fp = knbd_cm_fp_add(fp, opts[i]);
	return fp;
}

static void cm_fp_is_the_option_sequence(struct kunit *test)
{
	/* nbd-client and knbd-reconnect: GO; libnbd asks for structured replies first. */
	static const u32 go[] = { KNBD_NBD_OPT_GO };
	static const u32 sr_go[] = { KNBD_NBD_OPT_STRUCTURED_REPLY, KNBD_NBD_OPT_GO };
	static const u32 go_sr[] = { KNBD_NBD_OPT_GO, KNBD_NBD_OPT_STRUCTURED_REPLY };

	KUNIT_EXPECT_EQ(test, cm_fp(3, go, 1), cm_fp(3, go, 1));
	KUNIT_EXPECT_NE(test, cm_fp(3, go, 1), cm_fp(3, sr_go, 2));
	KUNIT_EXPECT_NE(test, cm_fp(3, sr_go, 2), cm_fp(3, go_sr, 2));
	KUNIT_EXPECT_NE(test, cm_fp(3, go, 1), cm_fp(1, go, 1));
	KUNIT_EXPECT_NE(test, cm_fp(3, go, 1), cm_fp(3, NULL, 0));
}

static void cm_key_is_host_volume_handshake(struct kunit *test)
{
	struct sockaddr_storage a1 = cm_v4(0xc00002fe, 40001);
	struct sockaddr_storage a2 = cm_v4(0xc00002fe, 40002);
	struct sockaddr_storage b = cm_v4(0xc00002fd, 40001);
	u32 k = knbd_cm_client_key(&a1, "v1", 2, 7);

	/* Another connection of the same client: only the port differs. */
	KUNIT_EXPECT_EQ(test, k, knbd_cm_client_key(&a2, "v1", 2, 7));
	KUNIT_EXPECT_NE(test, k, knbd_cm_client_key(&b, "v1", 2, 7));
	KUNIT_EXPECT_NE(test, k, knbd_cm_client_key(&a1, "v2", 2, 7));
	KUNIT_EXPECT_NE(test, k, knbd_cm_client_key(&a1, "v1", 2, 8));
}

static void cm_movable_rule(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_cm_movable(2, false), KNBD_CM_MOVABLE_MULTI);
	KUNIT_EXPECT_EQ(test, knbd_cm_movable(3, true), KNBD_CM_MOVABLE_MULTI);
	KUNIT_EXPECT_EQ(test, knbd_cm_movable(1, true), KNBD_CM_MOVABLE_PROVEN);
	KUNIT_EXPECT_EQ(test, knbd_cm_movable(1, false), KNBD_CM_MOVABLE_NO);
	/* not counted (the tally was full): alone, the safe side */
	KUNIT_EXPECT_EQ(test, knbd_cm_movable(0, false), KNBD_CM_MOVABLE_NO);
	KUNIT_EXPECT_STREQ(test, knbd_cm_movable_name(KNBD_CM_MOVABLE_PROVEN), "proven");
}

static void cm_tally_counts_per_key(struct kunit *test)
{
	struct knbd_cm_tally *t = kunit_kzalloc(test, sizeof(*t), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, t);
	knbd_cm_tally_reset(t);
	knbd_cm_tally_add(t, 5);
	knbd_cm_tally_add(t, 0);
	knbd_cm_tally_add(t, 5);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 5), 2U);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 0), 1U);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 6), 0U);
	knbd_cm_tally_reset(t);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 5), 0U);
}

static void cm_tally_full_counts_none(struct kunit *test)
{
	struct knbd_cm_tally *t = kunit_kzalloc(test, sizeof(*t), GFP_KERNEL);
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, t);
	for (i = 0; i < KNBD_CM_TALLY_SLOTS; i++)
		knbd_cm_tally_add(t, i * 7919);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 7919), 1U);
	/* No room: never counted, so never "multi" by mistake. */
	knbd_cm_tally_add(t, 1);
	knbd_cm_tally_add(t, 1);
	KUNIT_EXPECT_EQ(test, knbd_cm_tally_count(t, 1), 0U);
}

static void cm_proof_back_in_time(struct kunit *test)
{
	struct knbd_cm_proof *pt = kunit_kzalloc(test, sizeof(*pt), GFP_KERNEL);
	unsigned long t = 5000;

	KUNIT_ASSERT_NOT_NULL(test, pt);
	/* never drained: a new client proves nothing */
	KUNIT_EXPECT_FALSE(test, knbd_cm_proof_back(pt, 42, t));
	knbd_cm_proof_drained(pt, 42, t);
	KUNIT_EXPECT_FALSE(test, knbd_cm_proven(pt, 42));
	KUNIT_EXPECT_TRUE(test, knbd_cm_proof_back(pt, 42, t + 10 * HZ));
	KUNIT_EXPECT_TRUE(test, knbd_cm_proven(pt, 42));
	/* once is news, then it simply stays proven */
	KUNIT_EXPECT_FALSE(test, knbd_cm_proof_back(pt, 42, t + 11 * HZ));
	knbd_cm_proof_drained(pt, 42, t + 100 * HZ);
	KUNIT_EXPECT_TRUE(test, knbd_cm_proven(pt, 42));
}

static void cm_proof_too_late(struct kunit *test)
{
	struct knbd_cm_proof *pt = kunit_kzalloc(test, sizeof(*pt), GFP_KERNEL);
	unsigned long t = 5000;

	KUNIT_ASSERT_NOT_NULL(test, pt);
	knbd_cm_proof_drained(pt, 42, t);
	/* a client started again by hand is not one that reconnects */
	KUNIT_EXPECT_FALSE(test, knbd_cm_proof_back(pt, 42, t + KNBD_CM_PROOF_TIME + 1));
	KUNIT_EXPECT_FALSE(test, knbd_cm_proven(pt, 42));
	KUNIT_EXPECT_FALSE(test, knbd_cm_proven(pt, 43));
}

static void cm_proof_oldest_gives_way(struct kunit *test)
{
	struct knbd_cm_proof *pt = kunit_kzalloc(test, sizeof(*pt), GFP_KERNEL);
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, pt);
	for (i = 0; i < KNBD_CM_PROOF_SLOTS; i++) {
		/* the oldest one in the middle of the table */
		knbd_cm_proof_drained(pt, 1000 + i, i == 100 ? 10 : 100 + i);
		knbd_cm_proof_back(pt, 1000 + i, i == 100 ? 11 : 101 + i);
	}
	knbd_cm_proof_drained(pt, 7, 1000);
	KUNIT_EXPECT_FALSE(test, knbd_cm_proven(pt, 1100));
	KUNIT_EXPECT_TRUE(test, knbd_cm_proven(pt, 1000));
	KUNIT_EXPECT_TRUE(test, knbd_cm_proven(pt, 1000 + KNBD_CM_PROOF_SLOTS - 1));
	KUNIT_EXPECT_TRUE(test, knbd_cm_proof_back(pt, 7, 1001));
}

static void cm_back_in_group_by_count(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 9000), M(2, 1000), STALE(3, 0) };
	struct knbd_cm_state st = { };
	unsigned long t = 1000;

	m[0].conns = 4;
	m[1].conns = 2;
	m[2].conns = 5;
	knbd_cm_moved(&st, m, ARRAY_SIZE(m), t, 1000);
	KUNIT_EXPECT_EQ(test, st.conns_before, 6U);
	/* the moved connection is gone ... */
	m[0].conns = 3;
	KUNIT_EXPECT_FALSE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 10));
	/* ... and back on another member */
	m[1].conns = 3;
	KUNIT_EXPECT_TRUE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 20));
	/* one more than before: someone else arrived, no proof of anybody */
	m[1].conns = 4;
	KUNIT_EXPECT_FALSE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 20));
	m[1].conns = 3;
	/* the landing time is over: whoever arrives now proves nothing */
	KUNIT_EXPECT_FALSE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m),
						       t + KNBD_CM_LAND_TIME));
	st.landing = false;
	KUNIT_EXPECT_FALSE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 20));
}

static void cm_pick_among_safe(struct kunit *test)
{
	/*
	 * monitor.c zeroes the loads the rule keeps: the best pick (the only
	 * connection of a client) gives way to the best of the others.
	 */
	u64 all[] = { 1000, 5000, 2000 };
	u64 safe[] = { 1000, 0, 2000 };

	KUNIT_EXPECT_EQ(test, knbd_cm_pick(all, 3, 8000, 0, 4000), 1);
	KUNIT_EXPECT_EQ(test, knbd_cm_pick(safe, 3, 8000, 0, 4000), 2);
}

static struct kunit_case knbd_connmgr_cases[] = {
	KUNIT_CASE(cm_group_mean_min_max),
	KUNIT_CASE(cm_group_skips_stale),
	KUNIT_CASE(cm_group_tie_lowest_id),
	KUNIT_CASE(cm_group_none_fresh),
	KUNIT_CASE(cm_assess_alone_is_idle),
	KUNIT_CASE(cm_assess_balanced_is_idle),
	KUNIT_CASE(cm_assess_hold_then_move),
	KUNIT_CASE(cm_assess_interval_between_moves),
	KUNIT_CASE(cm_assess_waits_for_move_to_land),
	KUNIT_CASE(cm_assess_lost_client_lands_late),
	KUNIT_CASE(cm_assess_hysteresis),
	KUNIT_CASE(cm_assess_dip_restarts_hold),
	KUNIT_CASE(cm_assess_any_member_over),
	KUNIT_CASE(cm_assess_sheds_alongside_others),
	KUNIT_CASE(cm_assess_small_move_needs_no_landing),
	KUNIT_CASE(cm_moved_again_while_landing),
	KUNIT_CASE(cm_assess_min_load),
	KUNIT_CASE(cm_assess_no_overflow),
	KUNIT_CASE(cm_target_down_to_mean),
	KUNIT_CASE(cm_batch_max_per_receiver),
	KUNIT_CASE(cm_pick_closest_to_target),
	KUNIT_CASE(cm_pick_never_overshoots),
	KUNIT_CASE(cm_pick_single_connection),
	KUNIT_CASE(cm_pick_ignores_idle),
	KUNIT_CASE(cm_pick_skips_tiny),
	KUNIT_CASE(cm_pick_tie_oldest),
	KUNIT_CASE(cm_pick_own_not_above_min),
	KUNIT_CASE(cm_pick_batch_sums_to_target),
	KUNIT_CASE(cm_pick_batch_largest_first),
	KUNIT_CASE(cm_pick_batch_same_size),
	KUNIT_CASE(cm_pick_batch_not_worth_it),
	KUNIT_CASE(cm_pick_batch_max),
	KUNIT_CASE(cm_pick_batch_stays_above_min),
	KUNIT_CASE(cm_converges_simulated),
	KUNIT_CASE(cm_converges_batch_simulated),
	KUNIT_CASE(cm_fp_is_the_option_sequence),
	KUNIT_CASE(cm_key_is_host_volume_handshake),
	KUNIT_CASE(cm_movable_rule),
	KUNIT_CASE(cm_tally_counts_per_key),
	KUNIT_CASE(cm_tally_full_counts_none),
	KUNIT_CASE(cm_proof_back_in_time),
	KUNIT_CASE(cm_proof_too_late),
	KUNIT_CASE(cm_proof_oldest_gives_way),
	KUNIT_CASE(cm_back_in_group_by_count),
	KUNIT_CASE(cm_pick_among_safe),
	{}
};

static struct kunit_suite knbd_connmgr_suite = {
	.name = "knbd_connmgr",
	.test_cases = knbd_connmgr_cases,
};
kunit_test_suite(knbd_connmgr_suite);

MODULE_LICENSE("GPL");
