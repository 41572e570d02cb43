// SPDX-License-Identifier: GPL-2.0
/*
 * Client access control: a volume's allowed_hosts, a list of IPv4 and IPv6
 * prefixes (CIDR) a client's source address must fall in for the volume to
 * be listed and served to it.
 *
 * Entries are separated by spaces, commas or newlines; a bare address is a
 * host (/32, /128).  IPv4 entries are kept in their IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d, prefix + 96), as a dual-stack listener sees IPv4
 * clients: one compare then serves both families, and an IPv4 client of
 * a listener on :: matches the IPv4 entries.  Addresses are parsed here,
 * not with in4_pton()/in6_pton(), so that the unit needs no networking
 * core (KUnit: kunit/acl_test.c) and rejects what inet_aton() would take
 * in octal or shorthand ("010.1", "10.1"), which reads as another host
 * than the admin meant.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/ctype.h>
#include <linux/err.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "knbd.h"

/* Longest entry: a full IPv6 address with an IPv4 tail, then "/128". */
#define KNBD_ACL_TOKEN		64

static const u8 knbd_acl_v4_mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

void knbd_acl_free(struct knbd_acl *acl)
{
	kfree(acl);
}

static bool knbd_acl_is_sep(char c)
{
	return isspace(c) || c == ',';
}

/* Dotted quad, each part 0..255 in decimal without leading zeros. */
static bool knbd_acl_parse_v4(const char *s, size_t len, u8 out[4])
{
	size_t i = 0;
	int part;

	for (part = 0; part < 4; part++) {
		size_t start;
		u32 v = 0;

		if (part && (i >= len || s[i++] != '.'))
			return false;
		start = i;
		while (i < len && isdigit(s[i]) && i - start < 3)
			v = v * 10 + (s[i++] - '0');
		if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
			return false;
		out[part] = v;
	}
	return i == len;
}

/* RFC 4291 text: 1..4 hex digits per group, one "::", an IPv4 tail. */
static bool knbd_acl_parse_v6(const char *s, size_t len, u8 out[16])
{
	u16 words[8];
	int n = 0, gap = -1, i;
	size_t pos = 0;

	if (len >= 2 && s[0] == ':' && s[1] == ':') {
		gap = 0;
		pos = 2;
	} else if (len && s[0] == ':') {
		return false;
	}
	while (pos < len) {
		size_t start = pos;
		u32 v = 0;

		while (pos < len && isxdigit(s[pos]) && pos - start < 4)
			v = (v << 4) | hex_to_bin(s[pos++]);
		if (pos < len && s[pos] == '.') {
			u8 q[4];

			/* The last 32 bits as a dotted quad. */
			if (n > 6 || !knbd_acl_parse_v4(s + start, len - start, q))
				return false;
			words[n++] = q[0] << 8 | q[1];
			words[n++] = q[2] << 8 | q[3];
			pos = len;
			break;
		}
		if (pos == start || n >= 8)
			return false;
		words[n++] = v;
		if (pos == len)
			break;
		if (s[pos++] != ':' || pos == len)
			return false;
		if (s[pos] == ':') {
			if (gap >= 0)
				return false;
			gap = n;
			pos++;
		}
	}
	/* "::" stands for at least one group of zeros. */
	if (gap < 0 ? n != 8 : n > 7)
		return false;
	memset(out, 0, 16);
	for (i = 0; i < n; i++) {
		int at = gap >= 0 && i >= gap ? 8 - n + i : i;

		out[2 * at] = words[i] >> 8;
		out[2 * at + 1] = words[i] & 0xff;
	}
	return true;
}

/* Do the first @bits bits of @a and @b agree? */
static bool knbd_acl_prefix_eq(const u8 *a, const u8 *b, u32 bits)
{
	u32 bytes = bits / 8, rem = bits % 8;

	if (memcmp(a, b, bytes))
		return false;
	return !rem || !((a[bytes] ^ b[bytes]) & (u8)(0xff << (8 - rem)));
}

/* Are the bits of @a after the first @bits all zero? */
static bool knbd_acl_host_bits_clear(const u8 *a, u32 bits)
{
	static const u8 zero[16];
	u8 tmp[16];

	memcpy(tmp, a, 16);
	/* Agreeing with zero past the prefix: compare the low part only. */
	memset(tmp, 0, bits / 8);
	if (bits % 8)
		tmp[bits / 8] &= 0xff >> (bits % 8);
	return !memcmp(tmp, zero, 16);
}

/* One entry, "addr" or "addr/len"; NULL or a reason. */
static const char *knbd_acl_parse_entry(const char *tok, struct knbd_acl_entry *e)
{
	const char *slash = strchr(tok, '/');
	size_t alen = slash ? slash - tok : strlen(tok);
	u32 max, plen;

	e->v4 = !memchr(tok, ':', alen);
	if (e->v4) {
		memcpy(e->addr, knbd_acl_v4_mapped, sizeof(knbd_acl_v4_mapped));
		if (!knbd_acl_parse_v4(tok, alen, e->addr + 12))
			return "not an IPv4 or IPv6 address";
		max = 32;
	} else {
		if (!knbd_acl_parse_v6(tok, alen, e->addr))
			return "not an IPv4 or IPv6 address";
		max = 128;
	}
	plen = max;
	if (slash) {
		const char *p = slash + 1;
		size_t n = strlen(p);

		/* Decimal, no sign, no leading zero: "/024" is not a length. */
		if (!n || n > 3 || !isdigit(p[0]) || (p[0] == '0' && n > 1) ||
		    kstrtou32(p, 10, &plen))
			return "prefix length must be a decimal number";
		if (plen > max)
			return e->v4 ? "IPv4 prefix length must be 0..32" :
				       "IPv6 prefix length must be 0..128";
	}
	e->prefix = plen + (e->v4 ? 96 : 0);
	if (!knbd_acl_host_bits_clear(e->addr, e->prefix))
		return "address has bits set past the prefix length";
	return NULL;
}

/*
 * Parse allowed_hosts.  Returns NULL when @text holds no entry (any host
 * may connect), an ERR_PTR with a static reason in @why on bad input.
 */
struct knbd_acl *knbd_acl_parse(const char *text, size_t len, const char **why)
{
	const char *p = text, *end = text + len;
	char tok[KNBD_ACL_TOKEN];
	struct knbd_acl *acl;

	*why = NULL;
	/* Room for the most entries: 1.2 KiB, and a list is rarely rewritten. */
	acl = kmalloc(struct_size(acl, e, KNBD_ACL_MAX_ENTRIES), GFP_KERNEL);
	if (!acl)
		return ERR_PTR(-ENOMEM);
	acl->nr = 0;
	while (p < end) {
		size_t n = 0;

		while (p < end && knbd_acl_is_sep(*p))
			p++;
		if (p >= end)
			break;
		while (p < end && !knbd_acl_is_sep(*p)) {
			if (!*p || n + 1 >= sizeof(tok)) {
				*why = *p ? "entry too long" : "NUL byte in the list";
				goto err;
			}
			tok[n++] = *p++;
		}
		tok[n] = '\0';
		if (acl->nr >= KNBD_ACL_MAX_ENTRIES) {
			*why = "too many entries (at most 64)";
			goto err;
		}
		*why = knbd_acl_parse_entry(tok, &acl->e[acl->nr]);
		if (*why)
			goto err;
		acl->nr++;
	}
	if (!acl->nr) {
		knbd_acl_free(acl);
		return NULL;
	}
	return acl;
err:
	knbd_acl_free(acl);
	return ERR_PTR(-EINVAL);
}

/* @ss as 16 bytes, IPv4 mapped; false for a family without an address. */
static bool knbd_acl_addr(const struct sockaddr_storage *ss, u8 out[16])
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		memcpy(out, knbd_acl_v4_mapped, sizeof(knbd_acl_v4_mapped));
		memcpy(out + 12, &sin->sin_addr, 4);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		memcpy(out, &sin6->sin6_addr, 16);
		return true;
	}
	return false;
}

/*
 * May a client from @ss see the volume?  Any may when there is no list;
 * with one, an address we could not learn matches nothing.
 */
bool knbd_acl_match(const struct knbd_acl *acl, const struct sockaddr_storage *ss)
{
	u8 a[16];
	u32 i;

	if (!acl)
		return true;
	if (!knbd_acl_addr(ss, a))
		return false;
	for (i = 0; i < acl->nr; i++)
		if (knbd_acl_prefix_eq(a, acl->e[i].addr, acl->e[i].prefix))
			return true;
	return false;
}

/* Same source host, ports aside, an IPv4 client and its mapped form alike. */
bool knbd_acl_same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	u8 x[16], y[16];

	return knbd_acl_addr(a, x) && knbd_acl_addr(b, y) && !memcmp(x, y, 16);
}

/*
 * One entry per line, in the family it was written in, with its prefix
 * length; knbd_acl_parse() reads it back.  Returns the length written.
 */
int knbd_acl_format(const struct knbd_acl *acl, char *buf, size_t size)
{
	int len = 0;
	u32 i;

	for (i = 0; acl && i < acl->nr; i++) {
		const struct knbd_acl_entry *e = &acl->e[i];

		if (e->v4)
			len += scnprintf(buf + len, size - len, "%pI4/%u\n", e->addr + 12,
					 e->prefix - 96);
		else
			len += scnprintf(buf + len, size - len, "%pI6c/%u\n", e->addr,
					 e->prefix);
	}
	return len;
}
