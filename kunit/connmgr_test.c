// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for the connection manager policy of drivers/knbd/connmgr.c:
 * combining the members' reports (stale ones left out), when a member is
 * over-utilised (threshold, hysteresis, hold time, rate, deference to a
 * busier member) and which connection it moves.
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
	knbd_cm_moved(&st, m, 3, t);
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
	knbd_cm_moved(&st, m, 3, t);
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

static void cm_assess_defers_to_lower_id_shedder(struct kunit *test)
{
	/*
	 * Views a tick apart: 1 and 2 each see themselves as the busiest.
	 * 2 gives way while 1 is shedding; 1 goes on whatever 2 says.
	 */
	struct knbd_cm_member me1[] = { M(1, 30000), { .id = 2, .load = 28000,
		.fresh = true, .shedding = true }, M(3, 0) };
	struct knbd_cm_member me2[] = { M(2, 31000), { .id = 1, .load = 29000,
		.fresh = true, .shedding = true }, M(3, 0) };
	struct knbd_cm_state st = { };

	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me1, 3, 0, 100),
			KNBD_CM_WAIT);
	memset(&st, 0, sizeof(st));
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me2, 3, 0, 100),
			KNBD_CM_DEFER);
	KUNIT_EXPECT_FALSE(test, st.active);
	KUNIT_EXPECT_EQ(test, st.over_since, 0UL);
	/* 1 stopped shedding: 2 starts its own hold. */
	me2[1].shedding = false;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me2, 3, 0, 101),
			KNBD_CM_WAIT);
	/* a stale report's flag does not count */
	me2[1].shedding = true;
	me2[1].fresh = false;
	KUNIT_EXPECT_EQ(test, knbd_cm_assess(&cm_defaults, &st, me2, 3, 0, 102),
			KNBD_CM_WAIT);
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

static void cm_target_between_mean_and_min(struct kunit *test)
{
	struct knbd_cm_member m[] = { M(1, 6000), M(2, 0), M(3, 0) };
	struct knbd_cm_member n[] = { M(1, 6000), M(2, 3000), M(3, 3000) };

	/* mean 2000: shed 4000 would push a member to 4000; take 2000. */
	KUNIT_EXPECT_EQ(test, cm_target_of(m, 3, 0), 2000ULL);
	/* mean 4000, min 3000: 1000. */
	KUNIT_EXPECT_EQ(test, cm_target_of(n, 3, 0), 1000ULL);
	/* under the mean: nothing */
	KUNIT_EXPECT_EQ(test, cm_target_of(n, 3, 1), 0ULL);
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
	knbd_cm_moved(&st, m, ARRAY_SIZE(m), t);
	KUNIT_EXPECT_EQ(test, st.conns_before, 6U);
	/* the moved connection is gone ... */
	m[0].conns = 3;
	KUNIT_EXPECT_FALSE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 10));
	/* ... and back on another member */
	m[1].conns = 3;
	KUNIT_EXPECT_TRUE(test, knbd_cm_back_in_group(&st, m, ARRAY_SIZE(m), t + 20));
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
	KUNIT_CASE(cm_assess_defers_to_lower_id_shedder),
	KUNIT_CASE(cm_assess_min_load),
	KUNIT_CASE(cm_assess_no_overflow),
	KUNIT_CASE(cm_target_between_mean_and_min),
	KUNIT_CASE(cm_pick_closest_to_target),
	KUNIT_CASE(cm_pick_never_overshoots),
	KUNIT_CASE(cm_pick_single_connection),
	KUNIT_CASE(cm_pick_ignores_idle),
	KUNIT_CASE(cm_pick_skips_tiny),
	KUNIT_CASE(cm_pick_tie_oldest),
	KUNIT_CASE(cm_pick_own_not_above_min),
	KUNIT_CASE(cm_converges_simulated),
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
