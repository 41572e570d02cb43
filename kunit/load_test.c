// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for the pure load arithmetic of drivers/knbd/load.c:
 * samples in milli weighted operations per second, the EWMA and the
 * ageing of peers' reports.
 *
 * Run with scripts/kunit.sh.
 */
#include <kunit/test.h>
#include <linux/jiffies.h>

#include "knbd.h"

static void load_sample_ops_only(struct kunit *test)
{
	/* 100 empty operations in one second: 100 ops/s = 100000 milli. */
	KUNIT_EXPECT_EQ(test, knbd_load_sample(100, 0, 1000), 100000ULL);
}

static void load_sample_scales_with_time(struct kunit *test)
{
	/* The same 10 ops in 200 ms are 50 ops/s. */
	KUNIT_EXPECT_EQ(test, knbd_load_sample(10, 0, 200), 50000ULL);
}

static void load_sample_weights_bytes(struct kunit *test)
{
	/* One 64 KiB op weighs two; sixteen 4 KiB ops weigh seventeen. */
	KUNIT_EXPECT_EQ(test, knbd_load_sample(1, 65536, 1000), 2000ULL);
	KUNIT_EXPECT_EQ(test, knbd_load_sample(16, 16 * 4096, 1000), 17000ULL);
}

static void load_sample_zero_time(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_load_sample(5, 5, 0), 0ULL);
}

static void load_sample_large_counts(struct kunit *test)
{
	/* 1 GiB/s of 1 MiB requests: 1024 ops weighing 17 each. */
	KUNIT_EXPECT_EQ(test, knbd_load_sample(1024, 1ULL << 30, 1000), 17408000ULL);
}

static void load_ewma_moves_quarter(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_load_ewma(0, 4000, 2), 1000ULL);
	KUNIT_EXPECT_EQ(test, knbd_load_ewma(4000, 0, 2), 3000ULL);
	KUNIT_EXPECT_EQ(test, knbd_load_ewma(1000, 1000, 2), 1000ULL);
}

static void load_ewma_converges(struct kunit *test)
{
	u64 avg = 0;
	int i;

	for (i = 0; i < 40; i++)
		avg = knbd_load_ewma(avg, 80000, 2);
	KUNIT_EXPECT_GE(test, avg, 79900ULL);
	KUNIT_EXPECT_LE(test, avg, 80000ULL);
}

static void load_fresh_within_window(struct kunit *test)
{
	unsigned long tick = 50, at = 1000;

	KUNIT_EXPECT_TRUE(test, knbd_load_fresh(at, at, tick));
	KUNIT_EXPECT_TRUE(test, knbd_load_fresh(at + KNBD_LOAD_STALE_TICKS * tick, at, tick));
	KUNIT_EXPECT_FALSE(test, knbd_load_fresh(at + KNBD_LOAD_STALE_TICKS * tick + 1,
						 at, tick));
}

static void load_fresh_never_reported(struct kunit *test)
{
	/* No report at all is unknown, never "idle". */
	KUNIT_EXPECT_FALSE(test, knbd_load_fresh(1000, 0, 50));
}

static void load_fresh_jiffies_wrap(struct kunit *test)
{
	unsigned long at = ULONG_MAX - 10;

	KUNIT_EXPECT_TRUE(test, knbd_load_fresh(at + 20, at, 50));
	KUNIT_EXPECT_FALSE(test, knbd_load_fresh(at + 20 + KNBD_LOAD_STALE_TICKS * 50,
						 at, 50));
}

static struct kunit_case knbd_load_cases[] = {
	KUNIT_CASE(load_sample_ops_only),
	KUNIT_CASE(load_sample_scales_with_time),
	KUNIT_CASE(load_sample_weights_bytes),
	KUNIT_CASE(load_sample_zero_time),
	KUNIT_CASE(load_sample_large_counts),
	KUNIT_CASE(load_ewma_moves_quarter),
	KUNIT_CASE(load_ewma_converges),
	KUNIT_CASE(load_fresh_within_window),
	KUNIT_CASE(load_fresh_never_reported),
	KUNIT_CASE(load_fresh_jiffies_wrap),
	{}
};

static struct kunit_suite knbd_load_suite = {
	.name = "knbd_load",
	.test_cases = knbd_load_cases,
};
kunit_test_suite(knbd_load_suite);

MODULE_LICENSE("GPL");
