// SPDX-License-Identifier: GPL-2.0
/*
 * Routing tables of partitioned volumes: which member owns each extent.
 *
 * A table is parsed from text written to configfs, identical on every
 * member, and identified by its epoch and a checksum over its content.
 * Lookup is one array index; splitting a request walks the extents it
 * touches and merges neighbours with the same owner.  Comparing two tables
 * (which extents change owner) and checking the members a table names
 * back the safety rail of volume.c, which moves no data.  Nothing here
 * touches sockets or files (KUnit: kunit/route_test.c).
 *
 * Text format, one directive per line or per ';' ('#' starts a comment):
 *   epoch <u64>                 required, > 0
 *   stripe <id> [<id> ...]      extent i belongs to id[i % n]
 *   <first>[-<last>] <id>       explicit extent ranges (inclusive)
 * Either one stripe line or ranges that cover every extent exactly once.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/crc32.h>
#include <linux/ctype.h>
#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "knbd.h"

static struct knbd_route *knbd_route_alloc(u32 nr_extents)
{
	struct knbd_route *rt;

	rt = kvzalloc(struct_size(rt, owner, nr_extents), GFP_KERNEL);
	if (rt)
		rt->nr_extents = nr_extents;
	return rt;
}

void knbd_route_free(struct knbd_route *rt)
{
	kvfree(rt);
}

/* Index of @id in the member list, adding it if new; -1 when full. */
static int knbd_route_member(struct knbd_route *rt, u32 id)
{
	int i;

	for (i = 0; i < rt->nr_members; i++)
		if (rt->members[i] == id)
			return i;
	if (rt->nr_members >= KNBD_MAX_MEMBERS)
		return -1;
	rt->members[rt->nr_members] = id;
	return rt->nr_members++;
}

/* Split the next whitespace-separated token off *p (within end). */
static bool knbd_next_token(const char **p, const char *end, char *tok, size_t size)
{
	const char *s = *p;
	size_t n = 0;

	while (s < end && isspace(*s))
		s++;
	if (s >= end)
		return false;
	while (s < end && !isspace(*s)) {
		if (n + 1 >= size)
			return false;
		tok[n++] = *s++;
	}
	tok[n] = '\0';
	*p = s;
	return true;
}

static int knbd_parse_u64(const char *tok, u64 *val)
{
	return kstrtou64(tok, 10, val);	/* "epoch 010" is 10, not 8 */
}

static u32 knbd_route_compute_checksum(const struct knbd_route *rt)
{
	__le64 hdr[3] = {
		cpu_to_le64(rt->epoch),
		cpu_to_le64(rt->size),
		cpu_to_le64(rt->extent_shift),
	};
	u32 crc = crc32_le(~0, (const u8 *)hdr, sizeof(hdr));
	u32 i;

	/* Over owner ids, not indexes: the member order is not significant. */
	for (i = 0; i < rt->nr_extents; i++) {
		__le32 id = cpu_to_le32(rt->members[rt->owner[i]]);

		crc = crc32_le(crc, (const u8 *)&id, sizeof(id));
	}
	return ~crc;
}

#define KNBD_ROUTE_TOKEN	32

/* A directive ends at a newline or a ';' (one-line tables for echo). */
static const char *knbd_route_eol(const char *p, const char *end)
{
	for (; p < end; p++)
		if (*p == '\n' || *p == ';')
			return p;
	return NULL;
}

/*
 * Parse a routing table for a volume of @size bytes cut in extents of
 * 1 << @extent_shift bytes.  On error returns an ERR_PTR and points @why
 * at a static explanation.
 */
struct knbd_route *knbd_route_parse(const char *text, size_t len, u64 size,
				    u32 extent_shift, const char **why)
{
	const char *p = text, *end = text + len;
	char tok[KNBD_ROUTE_TOKEN];
	struct knbd_route *rt;
	bool striped = false, ranged = false, have_epoch = false;
	u64 nr64;
	u32 i;
	int ret = -EINVAL;
	u8 *seen = NULL;

	*why = NULL;
	if (extent_shift < KNBD_EXTENT_MIN_SHIFT || extent_shift > KNBD_EXTENT_MAX_SHIFT) {
		*why = "extent size out of range";
		return ERR_PTR(-EINVAL);
	}
	if (!size) {
		*why = "volume size is 0";
		return ERR_PTR(-EINVAL);
	}
	nr64 = DIV_ROUND_UP_ULL(size, 1ULL << extent_shift);
	if (nr64 > KNBD_ROUTE_MAX_EXTENTS) {
		*why = "too many extents (raise extent_size)";
		return ERR_PTR(-EINVAL);
	}
	rt = knbd_route_alloc(nr64);
	if (!rt)
		return ERR_PTR(-ENOMEM);
	rt->size = size;
	rt->extent_shift = extent_shift;
	/* One byte per extent to catch gaps and overlaps of explicit ranges. */
	seen = kvzalloc(rt->nr_extents, GFP_KERNEL);
	if (!seen) {
		ret = -ENOMEM;
		goto err;
	}

	while (p < end) {
		const char *eol = knbd_route_eol(p, end);
		const char *hash, *lend = eol ? eol : end;
		const char *q = p;

		hash = memchr(p, '#', lend - p);
		if (hash)
			lend = hash;
		p = eol ? eol + 1 : end;

		if (!knbd_next_token(&q, lend, tok, sizeof(tok))) {
			if (q < lend) {
				*why = "token too long";
				goto err;
			}
			continue;	/* blank line */
		}
		if (!strcmp(tok, "epoch")) {
			if (have_epoch || !knbd_next_token(&q, lend, tok, sizeof(tok)) ||
			    knbd_parse_u64(tok, &rt->epoch) || !rt->epoch) {
				*why = "epoch must appear once, as a number > 0";
				goto err;
			}
			have_epoch = true;
		} else if (!strcmp(tok, "stripe")) {
			u64 id;
			int n = 0, idx[KNBD_MAX_MEMBERS];

			if (striped || ranged) {
				*why = "stripe must be the only layout line";
				goto err;
			}
			while (knbd_next_token(&q, lend, tok, sizeof(tok))) {
				if (knbd_parse_u64(tok, &id) || id > U32_MAX) {
					*why = "member id must be a 32-bit number";
					goto err;
				}
				if (n >= KNBD_MAX_MEMBERS) {
					*why = "too many members in stripe";
					goto err;
				}
				idx[n] = knbd_route_member(rt, id);
				if (idx[n] < 0) {
					*why = "too many members";
					goto err;
				}
				n++;
			}
			if (!n) {
				*why = "stripe needs at least one member id";
				goto err;
			}
			for (i = 0; i < rt->nr_extents; i++) {
				rt->owner[i] = idx[i % n];
				seen[i] = 1;
			}
			for (i = 0; i < n; i++)
				rt->stripe[i] = rt->members[idx[i]];
			rt->nr_stripe = n;
			striped = true;
		} else {
			u64 first, last, id;
			char *dash = strchr(tok, '-');
			int idx;

			if (striped) {
				*why = "ranges cannot follow stripe";
				goto err;
			}
			if (dash)
				*dash = '\0';
			if (knbd_parse_u64(tok, &first) ||
			    knbd_parse_u64(dash ? dash + 1 : tok, &last)) {
				*why = "expected 'epoch', 'stripe' or '<first>[-<last>] <id>'";
				goto err;
			}
			if (first > last || last >= rt->nr_extents) {
				*why = "extent range outside the volume";
				goto err;
			}
			if (!knbd_next_token(&q, lend, tok, sizeof(tok)) ||
			    knbd_parse_u64(tok, &id) || id > U32_MAX) {
				*why = "range needs a 32-bit member id";
				goto err;
			}
			idx = knbd_route_member(rt, id);
			if (idx < 0) {
				*why = "too many members";
				goto err;
			}
			for (i = first; i <= last; i++) {
				if (seen[i]) {
					*why = "extent ranges overlap";
					goto err;
				}
				seen[i] = 1;
				rt->owner[i] = idx;
			}
			ranged = true;
		}
		if (knbd_next_token(&q, lend, tok, sizeof(tok))) {
			*why = "trailing text on a line";
			goto err;
		}
	}

	if (!have_epoch) {
		*why = "missing epoch";
		goto err;
	}
	if (!striped && !ranged) {
		*why = "missing stripe or extent ranges";
		goto err;
	}
	for (i = 0; i < rt->nr_extents; i++) {
		if (!seen[i]) {
			*why = "some extents have no owner";
			goto err;
		}
	}
	kvfree(seen);
	rt->checksum = knbd_route_compute_checksum(rt);
	return rt;
err:
	kvfree(seen);
	knbd_route_free(rt);
	return ERR_PTR(ret);
}

u32 knbd_route_owner(const struct knbd_route *rt, u64 offset)
{
	return rt->members[rt->owner[offset >> rt->extent_shift]];
}

/*
 * Cut [offset, offset + len) at every change of owner.  Fills at most @max
 * segments and returns how many the range needs, so a caller may size its
 * array and call again.  The range must lie inside the volume.
 */
u32 knbd_route_split(const struct knbd_route *rt, u64 offset, u64 len,
		     struct knbd_seg *segs, u32 max)
{
	u64 pos = offset, end = offset + len;
	u32 n = 0;

	while (pos < end) {
		u64 ext = pos >> rt->extent_shift;
		u16 owner = rt->owner[ext];
		u64 next = (ext + 1) << rt->extent_shift;

		/* Extend over following extents of the same owner. */
		while (next < end && rt->owner[next >> rt->extent_shift] == owner)
			next += 1ULL << rt->extent_shift;
		next = min(next, end);
		if (n < max) {
			segs[n].offset = pos;
			segs[n].len = next - pos;
			segs[n].owner = rt->members[owner];
		}
		n++;
		pos = next;
	}
	return n;
}

/* Does @id own every extent that [offset, offset + len) touches? */
bool knbd_route_owns(const struct knbd_route *rt, u64 offset, u64 len, u32 id)
{
	u64 ext, last;

	if (!len)
		return true;
	last = (offset + len - 1) >> rt->extent_shift;
	for (ext = offset >> rt->extent_shift; ext <= last; ext++)
		if (rt->members[rt->owner[ext]] != id)
			return false;
	return true;
}

/* Number of extents owned by @id. */
u64 knbd_route_count(const struct knbd_route *rt, u32 id)
{
	u64 n = 0;
	u32 i;

	for (i = 0; i < rt->nr_extents; i++)
		n += rt->members[rt->owner[i]] == id;
	return n;
}

/*
 * Where the text of a table goes: @buf of @size bytes (always NUL
 * terminated), or nowhere (@buf NULL) to count its length.  A line that
 * does not fit whole is not written and sets @full.
 */
struct knbd_route_out {
	char *buf;
	size_t size;
	size_t len;
	bool full;
};

static __printf(2, 3) bool knbd_route_put(struct knbd_route_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->full)
		return false;
	va_start(ap, fmt);
	if (!o->buf) {
		n = vsnprintf(NULL, 0, fmt, ap);
	} else {
		n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
		if (n >= o->size - o->len) {
			o->buf[o->len] = '\0';	/* no torn line */
			o->full = true;
			n = 0;
		}
	}
	va_end(ap);
	o->len += n;
	return !o->full;
}

/* Lines of explicit ranges from extent @start on (owner changes + 1). */
static u32 knbd_route_ranges_from(const struct knbd_route *rt, u32 start)
{
	u32 i, n = 1;

	for (i = start + 1; i < rt->nr_extents; i++)
		n += rt->owner[i] != rt->owner[i - 1];
	return n;
}

/*
 * Room kept, once the text is known not to fit, for a range line (at most
 * 33 bytes) and then the "# ... N more lines" one that ends a cut table.
 */
#define KNBD_ROUTE_CUT_ROOM	96

/* @cut: the text does not fit: stop at KNBD_ROUTE_CUT_ROOM, say how much is left. */
static void knbd_route_print(const struct knbd_route *rt, struct knbd_route_out *o, bool cut)
{
	u32 i, start;

	knbd_route_put(o, "# checksum %08x extent_size %llu extents %u members %u\nepoch %llu\n",
		       rt->checksum, 1ULL << rt->extent_shift, rt->nr_extents,
		       rt->nr_members, rt->epoch);
	if (rt->nr_stripe) {
		knbd_route_put(o, "stripe");
		for (i = 0; i < rt->nr_stripe; i++)
			knbd_route_put(o, " %u", rt->stripe[i]);
		knbd_route_put(o, "\n");
		return;
	}
	for (start = 0, i = 1; i <= rt->nr_extents; i++) {
		if (i < rt->nr_extents && rt->owner[i] == rt->owner[start])
			continue;
		if (cut && o->size - o->len < KNBD_ROUTE_CUT_ROOM) {
			/* a buffer too small for that still says it is cut */
			if (!knbd_route_put(o, "# ... %u more lines: read routing_table\n",
					    knbd_route_ranges_from(rt, start))) {
				o->full = false;
				knbd_route_put(o, "# ...\n");
			}
			break;
		}
		if (i - 1 == start)
			knbd_route_put(o, "%u %u\n", start, rt->members[rt->owner[start]]);
		else
			knbd_route_put(o, "%u-%u %u\n", start, i - 1,
				       rt->members[rt->owner[start]]);
		start = i;
	}
}

/*
 * Print the table in the format knbd_route_parse() reads, ranges merged,
 * preceded by comment lines with the checksum and shape; NUL terminated.
 * Returns the length written.  When @size is too small for the whole text
 * it ends, with whole lines only, in "# ... N more lines: read
 * routing_table" (the configfs attribute that reads any size).
 */
int knbd_route_format(const struct knbd_route *rt, char *buf, size_t size)
{
	struct knbd_route_out o = { .buf = buf, .size = size };

	if (!size)
		return 0;
	knbd_route_print(rt, &o, false);
	if (o.full) {
		o.len = 0;
		o.full = false;
		knbd_route_print(rt, &o, true);
	}
	return o.len;
}

/* Length of the whole text knbd_route_format() prints, without the NUL. */
size_t knbd_route_format_len(const struct knbd_route *rt)
{
	struct knbd_route_out o = { };

	knbd_route_print(rt, &o, false);
	return o.len;
}

/* Owner of @offset by @rt; no table: every extent is @self's. */
static u32 knbd_route_owner_or(const struct knbd_route *rt, u64 offset, u32 self)
{
	return rt ? knbd_route_owner(rt, offset) : self;
}

/*
 * How many extents change owner from @old to @new; either may be NULL (no
 * table: every extent owned by @self).  @mv gets the first that does.  The
 * walk goes by the finer extent size of the two, over the bytes both
 * tables cover; a volume's tables have the same shape anyway (its size and
 * extent size are fixed while it is routed and enabled).
 */
u64 knbd_route_diff(const struct knbd_route *old, const struct knbd_route *new,
		    u32 self, struct knbd_route_move *mv)
{
	u32 shift = KNBD_EXTENT_MAX_SHIFT;
	u64 size = U64_MAX, off, moved = 0;
	u32 from, to;

	if (old) {
		shift = min(shift, old->extent_shift);
		size = min(size, old->size);
	}
	if (new) {
		shift = min(shift, new->extent_shift);
		size = min(size, new->size);
	}
	if (!old && !new)
		return 0;
	for (off = 0; off < size; off += 1ULL << shift) {
		from = knbd_route_owner_or(old, off, self);
		to = knbd_route_owner_or(new, off, self);
		if (from == to)
			continue;
		if (!moved++) {
			mv->offset = off;
			mv->extent = off >> shift;
			mv->from = from;
			mv->to = to;
		}
	}
	return moved;
}

/*
 * Does every member @rt names appear in @ids (@nr of them)?  If not,
 * *@unknown is the first one that does not.
 */
bool knbd_route_members_known(const struct knbd_route *rt, const u32 *ids,
			      unsigned int nr, u32 *unknown)
{
	unsigned int i, j;

	for (i = 0; i < rt->nr_members; i++) {
		for (j = 0; j < nr; j++)
			if (ids[j] == rt->members[i])
				break;
		if (j == nr) {
			*unknown = rt->members[i];
			return false;
		}
	}
	return true;
}
