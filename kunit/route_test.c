// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for drivers/knbd/route.c: parsing routing tables, O(1)
 * lookup, splitting requests by owner, ownership checks and the checksum
 * that members compare.  One behaviour per case.
 *
 * Run with scripts/kunit.sh.
 */
#include <kunit/test.h>
#include <linux/err.h>
#include <linux/string.h>

#include "knbd.h"

#define MiB	(1ULL << 20)

static struct knbd_route *parse_ok(struct kunit *test, const char *text, u64 size,
				   u32 shift)
{
	const char *why = NULL;
	struct knbd_route *rt = knbd_route_parse(text, strlen(text), size, shift, &why);

	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR(rt), "parse failed: %s", why ?: "?");
	return rt;
}

static const char *parse_err(const char *text, u64 size, u32 shift)
{
	const char *why = NULL;
	struct knbd_route *rt = knbd_route_parse(text, strlen(text), size, shift, &why);

	if (!IS_ERR(rt)) {
		knbd_route_free(rt);
		return NULL;
	}
	return why ?: "no reason";
}

static void route_stripe_owners(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1\nstripe 1 2 3\n", 10 * MiB, 20);

	KUNIT_EXPECT_EQ(test, rt->nr_extents, 10U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 0), 1U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, MiB - 1), 1U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, MiB), 2U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 2 * MiB), 3U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 3 * MiB), 1U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 10 * MiB - 1), 1U);
	knbd_route_free(rt);
}

static void route_semicolons_and_comments(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "# table\nepoch 9; stripe 4 5 # two\n",
					 4 * MiB, 20);

	KUNIT_EXPECT_EQ(test, rt->epoch, 9ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 3 * MiB), 5U);
	knbd_route_free(rt);
}

static void route_ranges(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 2; 0-1 7; 2 8; 3-3 9", 4 * MiB, 20);

	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 0), 7U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 2 * MiB - 1), 7U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 2 * MiB), 8U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 3 * MiB + 5), 9U);
	KUNIT_EXPECT_EQ(test, rt->nr_members, 3);
	knbd_route_free(rt);
}

static void route_partial_last_extent(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2", 2 * MiB + 512, 20);

	KUNIT_EXPECT_EQ(test, rt->nr_extents, 3U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 2 * MiB + 511), 1U);
	knbd_route_free(rt);
}

static void route_rejects_missing_epoch(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("stripe 1 2", 4 * MiB, 20));
}

static void route_rejects_zero_epoch(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 0; stripe 1", 4 * MiB, 20));
}

static void route_rejects_two_epochs(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; epoch 2; stripe 1", 4 * MiB, 20));
}

static void route_rejects_no_layout(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1", 4 * MiB, 20));
}

static void route_rejects_gap(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-1 1; 3 2", 4 * MiB, 20));
}

static void route_rejects_overlap(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-2 1; 2-3 2", 4 * MiB, 20));
}

static void route_rejects_range_past_end(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-4 1", 4 * MiB, 20));
}

static void route_rejects_reversed_range(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 3-0 1", 4 * MiB, 20));
}

static void route_rejects_stripe_with_ranges(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-3 1; stripe 1 2", 4 * MiB, 20));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 1 2; 0 1", 4 * MiB, 20));
}

static void route_rejects_empty_stripe(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe", 4 * MiB, 20));
}

static void route_rejects_bad_numbers(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch x; stripe 1", 4 * MiB, 20));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 1 4294967296", 4 * MiB, 20));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-3", 4 * MiB, 20));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; 0-3 1 junk", 4 * MiB, 20));
	/* base 10 only, as every other number an admin writes */
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 0x10; stripe 1", 4 * MiB, 20));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 0x2", 4 * MiB, 20));
}

static void route_numbers_are_decimal(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 010; 00-01 07; 2-3 010", 4 * MiB, 20);

	KUNIT_EXPECT_EQ(test, rt->epoch, 10ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 0), 7U);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, 3 * MiB), 10U);
	knbd_route_free(rt);
}

static void route_rejects_long_token(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test,
			      parse_err("epoch 1; stripe 123456789012345678901234567890123456",
					4 * MiB, 20));
}

static void route_rejects_bad_extent_size(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 1", 4 * MiB, 15));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 1", 4 * MiB, 31));
}

static void route_rejects_too_many_extents(struct kunit *test)
{
	/* 2^24 extents is the limit: 2^40 bytes in 64 KiB extents is 2^24. */
	KUNIT_EXPECT_NOT_NULL(test, parse_err("epoch 1; stripe 1", (1ULL << 40) + 1, 16));
}

static void route_rejects_too_many_members(struct kunit *test)
{
	char buf[512];
	int i, len = scnprintf(buf, sizeof(buf), "epoch 1; stripe");

	for (i = 1; i <= KNBD_MAX_MEMBERS + 1; i++)
		len += scnprintf(buf + len, sizeof(buf) - len, " %d", i);
	KUNIT_EXPECT_NOT_NULL(test, parse_err(buf, 1024 * MiB, 20));
}

static void route_one_tebibyte(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 3; stripe 1 2 3", 1ULL << 40, 22);

	KUNIT_EXPECT_EQ(test, rt->nr_extents, 1U << 18);
	KUNIT_EXPECT_EQ(test, knbd_route_owner(rt, (1ULL << 40) - 1),
			(u32)(((1U << 18) - 1) % 3 + 1));
	knbd_route_free(rt);
}

static void route_split_inside_one_extent(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2", 4 * MiB, 20);
	struct knbd_seg segs[4];

	KUNIT_EXPECT_EQ(test, knbd_route_split(rt, 4096, 8192, segs, 4), 1U);
	KUNIT_EXPECT_EQ(test, segs[0].offset, 4096ULL);
	KUNIT_EXPECT_EQ(test, segs[0].len, 8192ULL);
	KUNIT_EXPECT_EQ(test, segs[0].owner, 1U);
	knbd_route_free(rt);
}

static void route_split_three_members(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2 3", 6 * MiB, 20);
	struct knbd_seg segs[4];

	/* From the middle of extent 0 to the middle of extent 2. */
	KUNIT_ASSERT_EQ(test, knbd_route_split(rt, MiB / 2, 2 * MiB, segs, 4), 3U);
	KUNIT_EXPECT_EQ(test, segs[0].offset, MiB / 2);
	KUNIT_EXPECT_EQ(test, segs[0].len, MiB / 2);
	KUNIT_EXPECT_EQ(test, segs[0].owner, 1U);
	KUNIT_EXPECT_EQ(test, segs[1].offset, MiB);
	KUNIT_EXPECT_EQ(test, segs[1].len, MiB);
	KUNIT_EXPECT_EQ(test, segs[1].owner, 2U);
	KUNIT_EXPECT_EQ(test, segs[2].offset, 2 * MiB);
	KUNIT_EXPECT_EQ(test, segs[2].len, MiB / 2);
	KUNIT_EXPECT_EQ(test, segs[2].owner, 3U);
	knbd_route_free(rt);
}

static void route_split_merges_same_owner(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; 0-2 1; 3 2", 4 * MiB, 20);
	struct knbd_seg segs[4];

	KUNIT_ASSERT_EQ(test, knbd_route_split(rt, 0, 4 * MiB, segs, 4), 2U);
	KUNIT_EXPECT_EQ(test, segs[0].len, 3 * MiB);
	KUNIT_EXPECT_EQ(test, segs[1].offset, 3 * MiB);
	KUNIT_EXPECT_EQ(test, segs[1].owner, 2U);
	knbd_route_free(rt);
}

static void route_split_reports_needed(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2", 8 * MiB, 20);
	struct knbd_seg segs[2];

	/* Eight extents alternate owners: eight pieces, only two filled. */
	KUNIT_EXPECT_EQ(test, knbd_route_split(rt, 0, 8 * MiB, segs, 2), 8U);
	KUNIT_EXPECT_EQ(test, segs[1].offset, MiB);
	knbd_route_free(rt);
}

static void route_split_boundary_exact(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2", 4 * MiB, 20);
	struct knbd_seg segs[4];

	/* Ends exactly at an extent boundary: no empty trailing piece. */
	KUNIT_EXPECT_EQ(test, knbd_route_split(rt, MiB, MiB, segs, 4), 1U);
	KUNIT_EXPECT_EQ(test, segs[0].owner, 2U);
	KUNIT_EXPECT_EQ(test, knbd_route_split(rt, MiB - 512, 1024, segs, 4), 2U);
	KUNIT_EXPECT_EQ(test, segs[0].len, 512ULL);
	KUNIT_EXPECT_EQ(test, segs[1].len, 512ULL);
	knbd_route_free(rt);
}

static void route_split_max_request(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2 3", 64 * MiB, 20);
	struct knbd_seg segs[40];
	u64 total = 0;
	u32 i, n;

	n = knbd_route_split(rt, 512, 32 * MiB, segs, 40);
	KUNIT_ASSERT_EQ(test, n, 33U);
	for (i = 0; i < n; i++) {
		total += segs[i].len;
		if (i)
			KUNIT_EXPECT_EQ(test, segs[i].offset,
					segs[i - 1].offset + segs[i - 1].len);
	}
	KUNIT_EXPECT_EQ(test, total, 32 * MiB);
	knbd_route_free(rt);
}

static void route_owns(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; 0-1 1; 2-3 2", 4 * MiB, 20);

	KUNIT_EXPECT_TRUE(test, knbd_route_owns(rt, 0, 2 * MiB, 1));
	KUNIT_EXPECT_FALSE(test, knbd_route_owns(rt, 0, 2 * MiB + 1, 1));
	KUNIT_EXPECT_TRUE(test, knbd_route_owns(rt, 2 * MiB, 2 * MiB, 2));
	KUNIT_EXPECT_FALSE(test, knbd_route_owns(rt, MiB, 4096, 2));
	KUNIT_EXPECT_TRUE(test, knbd_route_owns(rt, MiB, 0, 2));
	knbd_route_free(rt);
}

static void route_count(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 1 2 3", 10 * MiB, 20);

	KUNIT_EXPECT_EQ(test, knbd_route_count(rt, 1), 4ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_count(rt, 2), 3ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_count(rt, 4), 0ULL);
	knbd_route_free(rt);
}

static void route_checksum_same_content(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 5; stripe 1 2", 4 * MiB, 20);
	struct knbd_route *b = parse_ok(test, "epoch 5; 0 1; 1 2; 2 1; 3 2", 4 * MiB, 20);

	/* The same owners written two ways are the same table. */
	KUNIT_EXPECT_EQ(test, a->checksum, b->checksum);
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_checksum_differs(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 5; stripe 1 2", 4 * MiB, 20);
	struct knbd_route *b = parse_ok(test, "epoch 5; stripe 2 1", 4 * MiB, 20);
	struct knbd_route *c = parse_ok(test, "epoch 6; stripe 1 2", 4 * MiB, 20);
	struct knbd_route *d = parse_ok(test, "epoch 5; stripe 1 2", 8 * MiB, 20);

	KUNIT_EXPECT_NE(test, a->checksum, b->checksum);
	KUNIT_EXPECT_NE(test, a->checksum, c->checksum);
	KUNIT_EXPECT_NE(test, a->checksum, d->checksum);
	knbd_route_free(a);
	knbd_route_free(b);
	knbd_route_free(c);
	knbd_route_free(d);
}

static void route_format_round_trip(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 4; 0-2 3; 3 1; 4-5 3", 6 * MiB, 20);
	struct knbd_route *b;
	char *buf = kunit_kzalloc(test, 4096, GFP_KERNEL);
	int len;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	len = knbd_route_format(a, buf, 4096);
	KUNIT_EXPECT_NOT_NULL(test, strstr(buf, "0-2 3\n3 1\n4-5 3\n"));
	b = parse_ok(test, buf, 6 * MiB, 20);
	KUNIT_EXPECT_EQ(test, a->checksum, b->checksum);
	KUNIT_EXPECT_EQ(test, (size_t)len, strlen(buf));
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_format_stripe(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 4; stripe 3 1 2", 1024 * MiB, 20);
	char *buf = kunit_kzalloc(test, 4096, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, buf);
	knbd_route_format(a, buf, 4096);
	KUNIT_EXPECT_NOT_NULL(test, strstr(buf, "epoch 4\nstripe 3 1 2\n"));
	knbd_route_free(a);
}

static void route_format_truncates(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 1; 0 1; 1 2; 2 1; 3 2; 4 1; 5 2",
					6 * MiB, 20);
	char buf[80];	/* the whole text takes 92 bytes */
	int len = knbd_route_format(a, buf, sizeof(buf));

	KUNIT_EXPECT_LT(test, len, (int)sizeof(buf));
	KUNIT_EXPECT_NOT_NULL(test, strstr(buf, "# ..."));
	knbd_route_free(a);
}

/* A table of @n extents of 64 KiB, owners alternating 1, 2, 1, ... */
static struct knbd_route *alternating(struct kunit *test, u32 n)
{
	size_t size = 16 + (size_t)n * 20;
	char *text = kunit_kzalloc(test, size, GFP_KERNEL);
	int len;
	u32 i;

	KUNIT_ASSERT_NOT_NULL(test, text);
	len = scnprintf(text, size, "epoch 7\n");
	for (i = 0; i < n; i++)
		len += scnprintf(text + len, size - len, "%u %u\n", i, 1 + (i & 1));
	return parse_ok(test, text, (u64)n << 16, 16);
}

static void route_format_len_exact(struct kunit *test)
{
	struct knbd_route *a = alternating(test, 1000);
	struct knbd_route *b = parse_ok(test, "epoch 4; stripe 3 1 2", 1024 * MiB, 20);
	size_t need = knbd_route_format_len(a);
	char *buf = kunit_kzalloc(test, need + 1, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, buf);
	/* exactly the length plus the NUL: whole, not cut */
	KUNIT_EXPECT_EQ(test, (size_t)knbd_route_format(a, buf, need + 1), need);
	KUNIT_EXPECT_EQ(test, strlen(buf), need);
	KUNIT_EXPECT_NULL(test, strstr(buf, "# ..."));
	KUNIT_EXPECT_NOT_NULL(test, strstr(buf, "\n998 1\n999 2\n"));
	/* one byte less: cut */
	KUNIT_EXPECT_LT(test, (size_t)knbd_route_format(a, buf, need), need);
	KUNIT_EXPECT_NOT_NULL(test, strstr(buf, "# ..."));
	KUNIT_EXPECT_EQ(test, (size_t)knbd_route_format(b, buf, need + 1),
			knbd_route_format_len(b));
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_format_cut_counts_rest(struct kunit *test)
{
	struct knbd_route *a = alternating(test, 1000);
	char *buf = kunit_kzalloc(test, 4096, GFP_KERNEL);
	const char *p, *last = NULL;
	unsigned int shown = 0;
	char want[64];
	int len;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	len = knbd_route_format(a, buf, 4096);
	KUNIT_EXPECT_LT(test, len, 4096);
	KUNIT_EXPECT_EQ(test, (size_t)len, strlen(buf));
	KUNIT_EXPECT_EQ(test, buf[len - 1], '\n');
	for (p = buf; *p; p = strchr(p, '\n') + 1) {
		if (*p != '#' && strncmp(p, "epoch", 5))
			shown++;
		last = p;
	}
	KUNIT_ASSERT_NOT_NULL(test, last);
	KUNIT_EXPECT_GT(test, shown, 100U);
	/* the last line says how many of the 1000 were left out */
	snprintf(want, sizeof(want), "# ... %u more lines: read routing_table\n", 1000 - shown);
	KUNIT_EXPECT_STREQ(test, last, want);
	knbd_route_free(a);
}

static void route_diff_same_owners(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 1; stripe 1 2 3", 8 * MiB, 20);
	struct knbd_route *b = parse_ok(test, "epoch 2; 0 1; 1 2; 2 3; 3 1; 4 2; 5 3; 6 1; 7 2",
					8 * MiB, 20);
	struct knbd_route_move mv = { };

	KUNIT_EXPECT_EQ(test, knbd_route_diff(a, b, 1, &mv), 0ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_diff(a, a, 1, &mv), 0ULL);
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_diff_first_move(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 1; stripe 1 2", 8 * MiB, 20);
	struct knbd_route *b = parse_ok(test, "epoch 2; 0-4 1; 5-7 2", 8 * MiB, 20);
	struct knbd_route_move mv = { };

	/* 1 2 1 2 1 2 1 2 -> 1 1 1 1 1 2 2 2: extents 1, 3 and 6 move */
	KUNIT_EXPECT_EQ(test, knbd_route_diff(a, b, 1, &mv), 3ULL);
	KUNIT_EXPECT_EQ(test, mv.extent, 1ULL);
	KUNIT_EXPECT_EQ(test, mv.offset, MiB);
	KUNIT_EXPECT_EQ(test, mv.from, 2U);
	KUNIT_EXPECT_EQ(test, mv.to, 1U);
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_diff_no_table_is_self(struct kunit *test)
{
	struct knbd_route *all1 = parse_ok(test, "epoch 1; stripe 1", 4 * MiB, 20);
	struct knbd_route *half = parse_ok(test, "epoch 1; 0-1 1; 2-3 7", 4 * MiB, 20);
	struct knbd_route_move mv = { };

	KUNIT_EXPECT_EQ(test, knbd_route_diff(NULL, all1, 1, &mv), 0ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_diff(NULL, all1, 2, &mv), 4ULL);
	KUNIT_EXPECT_EQ(test, knbd_route_diff(NULL, half, 1, &mv), 2ULL);
	KUNIT_EXPECT_EQ(test, mv.extent, 2ULL);
	KUNIT_EXPECT_EQ(test, mv.from, 1U);
	KUNIT_EXPECT_EQ(test, mv.to, 7U);
	/* removing the table gives every extent back to this node */
	KUNIT_EXPECT_EQ(test, knbd_route_diff(half, NULL, 1, &mv), 2ULL);
	KUNIT_EXPECT_EQ(test, mv.from, 7U);
	KUNIT_EXPECT_EQ(test, mv.to, 1U);
	KUNIT_EXPECT_EQ(test, knbd_route_diff(NULL, NULL, 1, &mv), 0ULL);
	knbd_route_free(all1);
	knbd_route_free(half);
}

static void route_diff_finer_extents(struct kunit *test)
{
	struct knbd_route *a = parse_ok(test, "epoch 1; stripe 1", 4 * MiB, 21);
	struct knbd_route *b = parse_ok(test, "epoch 2; 0-2 1; 3 2", 4 * MiB, 20);
	struct knbd_route_move mv = { };

	KUNIT_EXPECT_EQ(test, knbd_route_diff(a, b, 1, &mv), 1ULL);
	KUNIT_EXPECT_EQ(test, mv.offset, 3 * MiB);
	KUNIT_EXPECT_EQ(test, mv.extent, 3ULL);
	knbd_route_free(a);
	knbd_route_free(b);
}

static void route_members_known(struct kunit *test)
{
	struct knbd_route *rt = parse_ok(test, "epoch 1; stripe 3 1 2", 8 * MiB, 20);
	const u32 all[] = { 1, 2, 3, 4 }, some[] = { 2, 1 };
	u32 unknown = 0;

	KUNIT_EXPECT_TRUE(test, knbd_route_members_known(rt, all, ARRAY_SIZE(all), &unknown));
	KUNIT_EXPECT_FALSE(test, knbd_route_members_known(rt, some, ARRAY_SIZE(some), &unknown));
	KUNIT_EXPECT_EQ(test, unknown, 3U);
	KUNIT_EXPECT_FALSE(test, knbd_route_members_known(rt, all, 0, &unknown));
	knbd_route_free(rt);
}

static struct kunit_case knbd_route_cases[] = {
	KUNIT_CASE(route_stripe_owners),
	KUNIT_CASE(route_semicolons_and_comments),
	KUNIT_CASE(route_ranges),
	KUNIT_CASE(route_partial_last_extent),
	KUNIT_CASE(route_rejects_missing_epoch),
	KUNIT_CASE(route_rejects_zero_epoch),
	KUNIT_CASE(route_rejects_two_epochs),
	KUNIT_CASE(route_rejects_no_layout),
	KUNIT_CASE(route_rejects_gap),
	KUNIT_CASE(route_rejects_overlap),
	KUNIT_CASE(route_rejects_range_past_end),
	KUNIT_CASE(route_rejects_reversed_range),
	KUNIT_CASE(route_rejects_stripe_with_ranges),
	KUNIT_CASE(route_rejects_empty_stripe),
	KUNIT_CASE(route_rejects_bad_numbers),
	KUNIT_CASE(route_numbers_are_decimal),
	KUNIT_CASE(route_rejects_long_token),
	KUNIT_CASE(route_rejects_bad_extent_size),
	KUNIT_CASE(route_rejects_too_many_extents),
	KUNIT_CASE(route_rejects_too_many_members),
	KUNIT_CASE(route_one_tebibyte),
	KUNIT_CASE(route_split_inside_one_extent),
	KUNIT_CASE(route_split_three_members),
	KUNIT_CASE(route_split_merges_same_owner),
	KUNIT_CASE(route_split_reports_needed),
	KUNIT_CASE(route_split_boundary_exact),
	KUNIT_CASE(route_split_max_request),
	KUNIT_CASE(route_owns),
	KUNIT_CASE(route_count),
	KUNIT_CASE(route_checksum_same_content),
	KUNIT_CASE(route_checksum_differs),
	KUNIT_CASE(route_format_round_trip),
	KUNIT_CASE(route_format_stripe),
	KUNIT_CASE(route_format_truncates),
	KUNIT_CASE(route_format_len_exact),
	KUNIT_CASE(route_format_cut_counts_rest),
	KUNIT_CASE(route_diff_same_owners),
	KUNIT_CASE(route_diff_first_move),
	KUNIT_CASE(route_diff_no_table_is_self),
	KUNIT_CASE(route_diff_finer_extents),
	KUNIT_CASE(route_members_known),
	{}
};

static struct kunit_suite knbd_route_suite = {
	.name = "knbd_route",
	.test_cases = knbd_route_cases,
};
kunit_test_suite(knbd_route_suite);

MODULE_LICENSE("GPL");
