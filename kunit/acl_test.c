// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for drivers/knbd/acl.c: parsing allowed_hosts, matching
 * client addresses (IPv4, IPv6, IPv4-mapped) against it, formatting it
 * back, and the same-host test of max_conns_per_host.  One behaviour per
 * case.
 *
 * Run with scripts/kunit.sh.
 */
#include <kunit/test.h>
#include <linux/err.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/string.h>

#include "knbd.h"

static struct knbd_acl *parse_ok(struct kunit *test, const char *text)
{
	const char *why = NULL;
	struct knbd_acl *acl = knbd_acl_parse(text, strlen(text), &why);

	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR(acl), "'%s': %s", text, why ?: "?");
	KUNIT_ASSERT_NOT_NULL_MSG(test, acl, "'%s' parsed as empty", text);
	return acl;
}

/* The reason a bad list is refused, or NULL if it was accepted. */
static const char *parse_err(const char *text)
{
	const char *why = NULL;
	struct knbd_acl *acl = knbd_acl_parse(text, strlen(text), &why);

	if (!IS_ERR(acl)) {
		knbd_acl_free(acl);
		return NULL;
	}
	return why ?: "no reason";
}

static struct sockaddr_storage v4(u8 a, u8 b, u8 c, u8 d)
{
	struct sockaddr_storage ss = { };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	u8 *p = (u8 *)&sin->sin_addr;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	p[0] = a;
	p[1] = b;
	p[2] = c;
	p[3] = d;
	return ss;
}

/* An IPv6 address from its 16 bytes (in6 is big-endian, as written). */
static struct sockaddr_storage v6(const u8 bytes[16])
{
	struct sockaddr_storage ss = { };
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(40001);
	memcpy(&sin6->sin6_addr, bytes, 16);
	return ss;
}

/* ::ffff:a.b.c.d, as a dual-stack listener sees an IPv4 client. */
static struct sockaddr_storage mapped(u8 a, u8 b, u8 c, u8 d)
{
	const u8 x[16] = { [10] = 0xff, [11] = 0xff, [12] = a, [13] = b, [14] = c, [15] = d };

	return v6(x);
}

static const u8 ip6_loop[16] = { [15] = 1 };				/* ::1 */
static const u8 ip6_db8_1[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };	/* 2001:db8::1 */
static const u8 ip6_db9_1[16] = { 0x20, 0x01, 0x0d, 0xb9, [15] = 1 };	/* 2001:db9::1 */

static bool match(const struct knbd_acl *acl, struct sockaddr_storage ss)
{
	return knbd_acl_match(acl, &ss);
}

static void acl_empty_is_any(struct kunit *test)
{
	const char *why = "unset";
	struct knbd_acl *acl;

	acl = knbd_acl_parse("", 0, &why);
	KUNIT_EXPECT_NULL(test, acl);
	KUNIT_EXPECT_NULL(test, why);
	acl = knbd_acl_parse(" ,\n\t,", 5, &why);
	KUNIT_EXPECT_NULL(test, acl);
	/* No list: every client, of either family, and one of unknown address. */
	KUNIT_EXPECT_TRUE(test, match(NULL, v4(203, 0, 113, 9)));
	KUNIT_EXPECT_TRUE(test, match(NULL, v6(ip6_db8_1)));
	KUNIT_EXPECT_TRUE(test, match(NULL, (struct sockaddr_storage){ }));
}

static void acl_bare_v4_is_host(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "192.0.2.7");

	KUNIT_EXPECT_EQ(test, acl->nr, 1U);
	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 7)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 2, 6)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 2, 8)));
	knbd_acl_free(acl);
}

static void acl_v4_slash32(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "10.1.2.3/32");

	KUNIT_EXPECT_TRUE(test, match(acl, v4(10, 1, 2, 3)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(10, 1, 2, 2)));
	knbd_acl_free(acl);
}

static void acl_v4_prefix_edges(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "192.0.2.0/24 198.51.100.128/25 10.0.0.0/7");

	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 0)));
	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 255)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 3, 0)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 1, 255)));
	KUNIT_EXPECT_TRUE(test, match(acl, v4(198, 51, 100, 128)));
	KUNIT_EXPECT_TRUE(test, match(acl, v4(198, 51, 100, 255)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(198, 51, 100, 127)));
	/* /7: a prefix that ends inside a byte. */
	KUNIT_EXPECT_TRUE(test, match(acl, v4(11, 255, 255, 255)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(12, 0, 0, 0)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(9, 255, 255, 255)));
	knbd_acl_free(acl);
}

static void acl_v4_slash0_all_v4(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "0.0.0.0/0");

	KUNIT_EXPECT_TRUE(test, match(acl, v4(0, 0, 0, 0)));
	KUNIT_EXPECT_TRUE(test, match(acl, v4(255, 255, 255, 255)));
	KUNIT_EXPECT_TRUE(test, match(acl, mapped(203, 0, 113, 1)));
	/* Every IPv4 client, no native IPv6 one. */
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_loop)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_db8_1)));
	knbd_acl_free(acl);
}

static void acl_v6_slash0_all(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "::/0");

	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_loop)));
	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_db9_1)));
	/* An IPv4 client is ::ffff:a.b.c.d to a dual-stack listener: inside ::/0. */
	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 1)));
	knbd_acl_free(acl);
}

static void acl_v6_bare_and_128(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "::1");

	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_loop)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_db8_1)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(127, 0, 0, 1)));
	knbd_acl_free(acl);
	acl = parse_ok(test, "2001:db8::1/128");
	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_db8_1)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_loop)));
	knbd_acl_free(acl);
}

static void acl_v6_slash127(struct kunit *test)
{
	/* 2001:db8::/127 holds ::0 and ::1 only. */
	struct knbd_acl *acl = parse_ok(test, "2001:db8::/127");
	u8 a[16];

	memcpy(a, ip6_db8_1, 16);
	KUNIT_EXPECT_TRUE(test, match(acl, v6(a)));
	a[15] = 0;
	KUNIT_EXPECT_TRUE(test, match(acl, v6(a)));
	a[15] = 2;
	KUNIT_EXPECT_FALSE(test, match(acl, v6(a)));
	a[15] = 1;
	a[14] = 1;
	KUNIT_EXPECT_FALSE(test, match(acl, v6(a)));
	knbd_acl_free(acl);
}

static void acl_v6_slash32(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "2001:db8::/32");

	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_db8_1)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_db9_1)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_loop)));
	knbd_acl_free(acl);
}

static void acl_v4_mapped_client_matches_v4(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "192.0.2.0/24");

	KUNIT_EXPECT_TRUE(test, match(acl, mapped(192, 0, 2, 200)));
	KUNIT_EXPECT_FALSE(test, match(acl, mapped(192, 0, 3, 200)));
	knbd_acl_free(acl);
}

static void acl_v4_mapped_entry_matches_v4(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "::ffff:192.0.2.0/120");

	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 5)));
	KUNIT_EXPECT_TRUE(test, match(acl, mapped(192, 0, 2, 5)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 3, 5)));
	knbd_acl_free(acl);
}

static void acl_v6_forms(struct kunit *test)
{
	/* The same address in the ways RFC 4291 allows writing it. */
	static const char * const forms[] = {
		"2001:db8:0:0:0:0:0:1", "2001:DB8::1", "2001:0db8:0000::0001",
		"2001:db8::0:1", "2001:db8:0:0:0:0:0.0.0.1",
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(forms); i++) {
		struct knbd_acl *acl = parse_ok(test, forms[i]);

		KUNIT_EXPECT_TRUE_MSG(test, match(acl, v6(ip6_db8_1)), "%s", forms[i]);
		KUNIT_EXPECT_FALSE_MSG(test, match(acl, v6(ip6_db9_1)), "%s", forms[i]);
		knbd_acl_free(acl);
	}
}

static void acl_v6_trailing_gap(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "fe80::/10 1:2:3:4:5:6:7::");
	const u8 ll[16] = { 0xfe, 0xbf, [15] = 9 };
	const u8 seven[16] = { 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0 };

	KUNIT_EXPECT_TRUE(test, match(acl, v6(ll)));
	KUNIT_EXPECT_TRUE(test, match(acl, v6(seven)));
	KUNIT_EXPECT_FALSE(test, match(acl, v6(ip6_loop)));
	knbd_acl_free(acl);
}

static void acl_separators(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "192.0.2.1,192.0.2.2\n \t192.0.2.3, \t,::1\n");

	KUNIT_EXPECT_EQ(test, acl->nr, 4U);
	KUNIT_EXPECT_TRUE(test, match(acl, v4(192, 0, 2, 3)));
	KUNIT_EXPECT_TRUE(test, match(acl, v6(ip6_loop)));
	KUNIT_EXPECT_FALSE(test, match(acl, v4(192, 0, 2, 4)));
	knbd_acl_free(acl);
}

static void acl_unknown_family_refused(struct kunit *test)
{
	struct knbd_acl *acl = parse_ok(test, "0.0.0.0/0 ::/0");
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };

	KUNIT_EXPECT_FALSE(test, match(acl, ss));
	knbd_acl_free(acl);
}

static void acl_rejects_host_bits(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.1/24"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("10.0.0.0/7 11.0.0.0/7"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("2001:db8::1/127"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("1.2.3.4/0"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("::1/0"));
	KUNIT_EXPECT_STREQ(test, parse_err("192.0.2.1/24"),
			   "address has bits set past the prefix length");
}

static void acl_rejects_bad_prefix(struct kunit *test)
{
	KUNIT_EXPECT_STREQ(test, parse_err("192.0.2.0/33"), "IPv4 prefix length must be 0..32");
	KUNIT_EXPECT_STREQ(test, parse_err("::/129"), "IPv6 prefix length must be 0..128");
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/-1"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/+24"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/024"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/24/24"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.0/0x18"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("::/1000"));
}

static void acl_rejects_bad_v4(struct kunit *test)
{
	static const char * const bad[] = {
		"192.0.2", "192.0.2.1.5", "256.0.0.1", "192.0.2.", ".1.2.3",
		"010.0.0.1", "1..2.3", "1.2.3.4x", "0x7f.0.0.1", "1.2.3.-4",
		"1.2.3.1000", "host.example", "*", "any",
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(bad); i++)
		KUNIT_EXPECT_NOT_NULL_MSG(test, parse_err(bad[i]), "'%s' accepted", bad[i]);
	KUNIT_EXPECT_STREQ(test, parse_err("256.0.0.1"), "not an IPv4 or IPv6 address");
}

static void acl_rejects_bad_v6(struct kunit *test)
{
	static const char * const bad[] = {
		":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1::",
		"1:", "12345::", "g::1", "fe80::1%eth0", "::1.2.3", "1:2:3:4:5:6:7:1.2.3.4",
		"1:2:3:4:5:6::1.2.3.4", "::1.2.3.4:5", "[::1]",
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(bad); i++)
		KUNIT_EXPECT_NOT_NULL_MSG(test, parse_err(bad[i]), "'%s' accepted", bad[i]);
}

static void acl_rejects_whole_list_on_one_bad(struct kunit *test)
{
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.1 bogus ::1"));
	KUNIT_EXPECT_NOT_NULL(test, parse_err("192.0.2.1;192.0.2.2"));
}

static void acl_rejects_too_many(struct kunit *test)
{
	char *buf = kunit_kzalloc(test, 32 * (KNBD_ACL_MAX_ENTRIES + 1), GFP_KERNEL);
	struct knbd_acl *acl;
	const char *why;
	int i, len = 0;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	for (i = 0; i < KNBD_ACL_MAX_ENTRIES; i++)
		len += sprintf(buf + len, "10.0.%d.%d ", i / 256, i % 256);
	acl = knbd_acl_parse(buf, len, &why);
	KUNIT_ASSERT_FALSE(test, IS_ERR_OR_NULL(acl));
	KUNIT_EXPECT_EQ(test, acl->nr, (u32)KNBD_ACL_MAX_ENTRIES);
	knbd_acl_free(acl);
	len += sprintf(buf + len, "192.0.2.1");
	KUNIT_EXPECT_STREQ(test, parse_err(buf), "too many entries (at most 64)");
}

static void acl_rejects_long_and_nul(struct kunit *test)
{
	static const char nul[] = "192.0.2.1\0 ::1";
	static const char *long_entry =
		"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd";
	const char *why;

	KUNIT_EXPECT_STREQ(test, parse_err(long_entry), "entry too long");
	KUNIT_EXPECT_TRUE(test, IS_ERR(knbd_acl_parse(nul, sizeof(nul) - 1, &why)));
}

static void acl_format_round_trip(struct kunit *test)
{
	static const char text[] =
		"192.0.2.0/24, 10.0.0.1 ::1 2001:DB8:0::/32 ::ffff:198.51.100.0/120";
	struct knbd_acl *acl = parse_ok(test, text), *again;
	char buf[256];
	const char *why;
	int len;

	len = knbd_acl_format(acl, buf, sizeof(buf));
	KUNIT_EXPECT_EQ(test, len, (int)strlen(buf));
	KUNIT_EXPECT_STREQ(test, buf,
			   "192.0.2.0/24\n10.0.0.1/32\n::1/128\n2001:db8::/32\n::ffff:198.51.100.0/120\n");
	again = knbd_acl_parse(buf, len, &why);
	KUNIT_ASSERT_FALSE(test, IS_ERR_OR_NULL(again));
	KUNIT_EXPECT_EQ(test, again->nr, acl->nr);
	KUNIT_EXPECT_EQ(test, memcmp(again->e, acl->e, acl->nr * sizeof(acl->e[0])), 0);
	knbd_acl_free(again);
	knbd_acl_free(acl);
	KUNIT_EXPECT_EQ(test, knbd_acl_format(NULL, buf, sizeof(buf)), 0);
}

static void acl_format_fits_a_page(struct kunit *test)
{
	char *in = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);
	char *out = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);
	struct knbd_acl *acl;
	int i, len = 0;

	KUNIT_ASSERT_NOT_NULL(test, in);
	KUNIT_ASSERT_NOT_NULL(test, out);
	/* The longest entries there are, as many as allowed. */
	for (i = 0; i < KNBD_ACL_MAX_ENTRIES; i++)
		len += sprintf(in + len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:%x/128\n", 0xff00 + i);
	acl = parse_ok(test, in);
	len = knbd_acl_format(acl, out, PAGE_SIZE);
	KUNIT_EXPECT_LT(test, len, (int)PAGE_SIZE - 1);
	KUNIT_EXPECT_STREQ(test, in, out);
	knbd_acl_free(acl);
}

static void acl_same_host(struct kunit *test)
{
	struct sockaddr_storage a = v4(192, 0, 2, 1), b = v4(192, 0, 2, 1);
	struct sockaddr_storage c = mapped(192, 0, 2, 1), none = { };

	/* Ports differ: still the same host. */
	((struct sockaddr_in *)&b)->sin_port = htons(1);
	KUNIT_EXPECT_TRUE(test, knbd_acl_same_host(&a, &b));
	KUNIT_EXPECT_TRUE(test, knbd_acl_same_host(&a, &c));
	b = v4(192, 0, 2, 2);
	KUNIT_EXPECT_FALSE(test, knbd_acl_same_host(&a, &b));
	b = v6(ip6_loop);
	c = v6(ip6_loop);
	KUNIT_EXPECT_TRUE(test, knbd_acl_same_host(&b, &c));
	KUNIT_EXPECT_FALSE(test, knbd_acl_same_host(&a, &c));
	KUNIT_EXPECT_FALSE(test, knbd_acl_same_host(&none, &none));
}

static struct kunit_case knbd_acl_cases[] = {
	KUNIT_CASE(acl_empty_is_any),
	KUNIT_CASE(acl_bare_v4_is_host),
	KUNIT_CASE(acl_v4_slash32),
	KUNIT_CASE(acl_v4_prefix_edges),
	KUNIT_CASE(acl_v4_slash0_all_v4),
	KUNIT_CASE(acl_v6_slash0_all),
	KUNIT_CASE(acl_v6_bare_and_128),
	KUNIT_CASE(acl_v6_slash127),
	KUNIT_CASE(acl_v6_slash32),
	KUNIT_CASE(acl_v4_mapped_client_matches_v4),
	KUNIT_CASE(acl_v4_mapped_entry_matches_v4),
	KUNIT_CASE(acl_v6_forms),
	KUNIT_CASE(acl_v6_trailing_gap),
	KUNIT_CASE(acl_separators),
	KUNIT_CASE(acl_unknown_family_refused),
	KUNIT_CASE(acl_rejects_host_bits),
	KUNIT_CASE(acl_rejects_bad_prefix),
	KUNIT_CASE(acl_rejects_bad_v4),
	KUNIT_CASE(acl_rejects_bad_v6),
	KUNIT_CASE(acl_rejects_whole_list_on_one_bad),
	KUNIT_CASE(acl_rejects_too_many),
	KUNIT_CASE(acl_rejects_long_and_nul),
	KUNIT_CASE(acl_format_round_trip),
	KUNIT_CASE(acl_format_fits_a_page),
	KUNIT_CASE(acl_same_host),
	{}
};

static struct kunit_suite knbd_acl_suite = {
	.name = "knbd_acl",
	.test_cases = knbd_acl_cases,
};

kunit_test_suite(knbd_acl_suite);

MODULE_LICENSE("GPL");
