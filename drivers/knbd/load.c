// SPDX-License-Identifier: GPL-2.0
/*
 * Load arithmetic, pure (KUnit: kunit/load_test.c); the thread that
 * gathers the counters and exchanges figures with peers is monitor.c.
 *
 * Load is measured in "weighted operations per second", in thousandths:
 *   sample = 1000 * (ops + bytes / 64 KiB) / seconds
 * so a 64 KiB request counts twice a 4 KiB one; the figure is smoothed
 * with an EWMA of weight 1/4 per tick (half-life about 2.4 ticks).
 * A peer figure older than KNBD_LOAD_STALE_TICKS ticks is unknown, not 0.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/jiffies.h>
#include <linux/math64.h>

#include "knbd.h"

/* Load of @ops operations moving @bytes during @elapsed_ms, in milli-ops/s. */
u64 knbd_load_sample(u64 ops, u64 bytes, u32 elapsed_ms)
{
	u64 weighted;

	if (!elapsed_ms)
		return 0;
	weighted = ops * KNBD_LOAD_BYTES_PER_OP + bytes;
	/* milli-units per second: weighted / unit * 1000 / (ms / 1000) */
	return div64_u64(weighted * 1000 * 1000 / KNBD_LOAD_BYTES_PER_OP,
			 elapsed_ms);
}

/* EWMA with weight 1 / 2^shift for the new sample. */
u64 knbd_load_ewma(u64 avg, u64 sample, unsigned int shift)
{
	if (sample >= avg)
		return avg + ((sample - avg) >> shift);
	return avg - ((avg - sample) >> shift);
}

/*
 * Is a report received at @at (jiffies) still usable at @now?  Unknown
 * members must not look idle: callers skip them rather than count 0.
 */
bool knbd_load_fresh(unsigned long now, unsigned long at, unsigned long tick)
{
	if (!at)
		return false;
	return time_before_eq(now, at + KNBD_LOAD_STALE_TICKS * tick);
}
