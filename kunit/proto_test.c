// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite for drivers/knbd/proto.c: the NBD protocol logic and the
 * server-to-server frame checks, which need no socket and no file.  One
 * behaviour per case.  Encodings are compared with byte arrays written out
 * by hand from the protocol documents, never with the headers' own macros,
 * so a wrong constant shows up as well.
 *
 * Run with scripts/kunit.sh.
 */
#include <kunit/test.h>
#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/limits.h>
#include <linux/string.h>
#include <asm/unaligned.h>

#include "knbd.h"

/* KNBD_NBD_REP_ERR_INVALID as it is on the wire: error bit | 3. */
#define REP_ERR_INVALID		0x80000003U

/* Reply error values of the protocol document. */
#define E_PERM			1U
#define E_INVAL			22U
#define E_NOSPC			28U

#define REQ_MAX			(32U << 20)

/* A 1 MiB read-write export with 512-byte blocks. */
static const struct knbd_export_info ei_rw = {
	.size = 1 << 20,
	.min_block = 512,
	.pref_block = 4096,
	.max_block = REQ_MAX,
};

static const struct knbd_export_info ei_ro = {
	.size = 1 << 20,
	.min_block = 512,
	.pref_block = 4096,
	.max_block = REQ_MAX,
	.readonly = true,
};

/* Large enough for every length a request can carry. */
static const struct knbd_export_info ei_big = {
	.size = 1ULL << 40,
	.min_block = 512,
	.pref_block = 4096,
	.max_block = REQ_MAX,
};

/* Byte granular: no alignment constraint at all. */
static const struct knbd_export_info ei_byte = {
	.size = 1000,
	.min_block = 1,
	.pref_block = 4096,
	.max_block = REQ_MAX,
};

/* ---- helpers ---- */

static void expect_bytes(struct kunit *test, const void *got, size_t got_len,
			 const u8 *want, size_t want_len, const char *what)
{
	KUNIT_ASSERT_EQ_MSG(test, got_len, want_len, "%s: wire size", what);
	KUNIT_EXPECT_EQ_MSG(test, memcmp(got, want, want_len), 0,
			    "%s:\n got  %*ph\n want %*ph", what,
			    (int)want_len, got, (int)want_len, want);
}

#define EXPECT_WIRE(test, obj, want) \
	expect_bytes(test, &(obj), sizeof(obj), want, sizeof(want), #obj)

static const char *verdict_name(enum knbd_req_verdict v)
{
	switch (v) {
	case KNBD_REQ_OK:
		return "OK";
	case KNBD_REQ_ERROR:
		return "ERROR";
	case KNBD_REQ_DISC:
		return "DISC";
	case KNBD_REQ_FATAL:
		return "FATAL";
	}
	return "?";
}

/*
 * Check one request header against an export.  *nbd_err is preset to junk,
 * so every verdict other than ERROR must also be seen to clear it.
 */
static void expect_verdict(struct kunit *test, const struct knbd_export_info *ei,
			   u16 type, u16 flags, u64 offset, u32 len,
			   enum knbd_req_verdict want, u32 want_err)
{
	struct knbd_cmd cmd = {
		.cookie = 0x1122334455667788ULL,
		.offset = offset,
		.len = len,
		.type = type,
		.flags = flags,
	};
	u32 err = 0xdeadbeef;
	enum knbd_req_verdict got;

	got = knbd_proto_check_request(&cmd, ei, &err);
	KUNIT_EXPECT_EQ_MSG(test, (int)got, (int)want,
			    "type %u flags %#x offset %#llx len %#x ro %d: got %s want %s",
			    type, flags, offset, len, ei->readonly,
			    verdict_name(got), verdict_name(want));
	KUNIT_EXPECT_EQ_MSG(test, err, want_err,
			    "type %u flags %#x offset %#llx len %#x ro %d: nbd_err",
			    type, flags, offset, len, ei->readonly);
}

static void expect_ok(struct kunit *test, const struct knbd_export_info *ei,
		      u16 type, u16 flags, u64 offset, u32 len)
{
	expect_verdict(test, ei, type, flags, offset, len, KNBD_REQ_OK, 0);
}

static void expect_err(struct kunit *test, const struct knbd_export_info *ei,
		       u16 type, u16 flags, u64 offset, u32 len, u32 nbd_err)
{
	expect_verdict(test, ei, type, flags, offset, len, KNBD_REQ_ERROR, nbd_err);
}

static void decode_wire_request(const u8 *bytes, struct nbd_wire_request *wire)
{
	memcpy(wire, bytes, sizeof(*wire));
}

/* ---- greeting and client flags ---- */

static void encode_hello_bytes(struct kunit *test)
{
	static const u8 want[] = {
		'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
		0x00, 0x03,	/* FIXED_NEWSTYLE | NO_ZEROES */
	};
	struct nbd_wire_hello hello;

	memset(&hello, 0xa5, sizeof(hello));
	knbd_proto_encode_hello(&hello);
	EXPECT_WIRE(test, hello, want);
}

static void client_flags_fixed_newstyle(struct kunit *test)
{
	bool no_zeroes = true;

	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x1, &no_zeroes), 0);
	KUNIT_EXPECT_FALSE(test, no_zeroes);
}

static void client_flags_no_zeroes(struct kunit *test)
{
	bool no_zeroes = false;

	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x3, &no_zeroes), 0);
	KUNIT_EXPECT_TRUE(test, no_zeroes);
}

static void client_flags_fixed_newstyle_required(struct kunit *test)
{
	bool no_zeroes = false;

	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x0, &no_zeroes), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x2, &no_zeroes), -EPROTO);
}

static void client_flags_unknown_bits(struct kunit *test)
{
	bool no_zeroes = false;

	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x5, &no_zeroes), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x7, &no_zeroes), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0x80000001, &no_zeroes),
			-EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_proto_check_client_flags(0xffffffff, &no_zeroes),
			-EPROTO);
}

/* ---- option haggling ---- */

static void decode_opt_fields(struct kunit *test)
{
	static const u8 bytes[] = {
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
		0x00, 0x00, 0x00, 0x07,		/* KNBD_NBD_OPT_GO */
		0x00, 0x00, 0x01, 0x0a,		/* 266 bytes of data */
	};
	struct nbd_wire_opt wire;
	u32 option = 0, len = 0;

	KUNIT_ASSERT_EQ(test, sizeof(wire), sizeof(bytes));
	memcpy(&wire, bytes, sizeof(wire));
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_opt(&wire, &option, &len), 0);
	KUNIT_EXPECT_EQ(test, option, 7U);
	KUNIT_EXPECT_EQ(test, len, 266U);
}

static void decode_opt_big_endian(struct kunit *test)
{
	static const u8 bytes[] = {
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
		0x80, 0x11, 0x22, 0x33,
		0xfe, 0xdc, 0xba, 0x98,
	};
	struct nbd_wire_opt wire;
	u32 option = 0, len = 0;

	memcpy(&wire, bytes, sizeof(wire));
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_opt(&wire, &option, &len), 0);
	KUNIT_EXPECT_EQ(test, option, 0x80112233U);
	KUNIT_EXPECT_EQ(test, len, 0xfedcba98U);
}

static void decode_opt_bad_magic(struct kunit *test)
{
	static const u8 init_magic[] = {
		'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
		0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
	};
	static const u8 last_byte_off[] = {
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'U',
		0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
	};
	struct nbd_wire_opt wire;
	u32 option, len;

	memcpy(&wire, init_magic, sizeof(wire));
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_opt(&wire, &option, &len), -EPROTO);
	memcpy(&wire, last_byte_off, sizeof(wire));
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_opt(&wire, &option, &len), -EPROTO);
}

static void encode_opt_reply_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
		0x00, 0x00, 0x00, 0x07,		/* KNBD_NBD_OPT_GO */
		0x00, 0x00, 0x00, 0x03,		/* KNBD_NBD_REP_INFO */
		0x00, 0x00, 0x00, 0x0c,		/* 12 bytes */
	};
	struct nbd_wire_opt_reply reply;

	memset(&reply, 0xa5, sizeof(reply));
	knbd_proto_encode_opt_reply(&reply, 7, 3, 12);
	EXPECT_WIRE(test, reply, want);
}

static void encode_opt_reply_error_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
		0x12, 0x34, 0x56, 0x78,		/* unknown option echoed */
		0x80, 0x00, 0x00, 0x01,		/* KNBD_NBD_REP_ERR_UNSUP */
		0x00, 0x00, 0x00, 0x00,
	};
	struct nbd_wire_opt_reply reply;

	memset(&reply, 0xa5, sizeof(reply));
	knbd_proto_encode_opt_reply(&reply, 0x12345678, 0x80000001, 0);
	EXPECT_WIRE(test, reply, want);
}

/* ---- KNBD_NBD_OPT_GO / KNBD_NBD_OPT_INFO data ---- */

static void parse_go_name_only(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x00,
	};
	struct knbd_go_req req;

	memset(&req, 0xff, sizeof(req));
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
	KUNIT_EXPECT_PTR_EQ(test, req.name, (const char *)data + 4);
	KUNIT_EXPECT_EQ(test, req.name_len, 4U);
	KUNIT_EXPECT_FALSE(test, req.want_name);
	KUNIT_EXPECT_FALSE(test, req.want_description);
	KUNIT_EXPECT_FALSE(test, req.want_block_size);
}

static void parse_go_all_info_requests(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x03,
		0x00, 0x01,	/* NAME */
		0x00, 0x02,	/* DESCRIPTION */
		0x00, 0x03,	/* BLOCK_SIZE */
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
	KUNIT_EXPECT_EQ(test, req.name_len, 4U);
	KUNIT_EXPECT_TRUE(test, req.want_name);
	KUNIT_EXPECT_TRUE(test, req.want_description);
	KUNIT_EXPECT_TRUE(test, req.want_block_size);
}

static void parse_go_block_size_only(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x01, 'x',
		0x00, 0x01,
		0x00, 0x03,	/* BLOCK_SIZE */
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
	KUNIT_EXPECT_FALSE(test, req.want_name);
	KUNIT_EXPECT_FALSE(test, req.want_description);
	KUNIT_EXPECT_TRUE(test, req.want_block_size);
}

static void parse_go_unknown_info_ignored(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x01, 'x',
		0x00, 0x04,
		0x00, 0x00,	/* EXPORT: always sent, nothing to ask for */
		0x12, 0x34,
		0xff, 0xff,
		0x00, 0x02,	/* DESCRIPTION */
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
	KUNIT_EXPECT_FALSE(test, req.want_name);
	KUNIT_EXPECT_TRUE(test, req.want_description);
	KUNIT_EXPECT_FALSE(test, req.want_block_size);
}

static void parse_go_empty_name(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x00,
		0x00, 0x01,
		0x00, 0x01,	/* NAME */
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
	KUNIT_EXPECT_EQ(test, req.name_len, 0U);
	KUNIT_EXPECT_TRUE(test, req.want_name);
}

static void parse_go_too_short(struct kunit *test)
{
	static const u8 data[6] = { 0 };
	struct knbd_go_req req;
	u32 len;

	/* Six bytes (empty name, no requests) is the least there can be. */
	for (len = 0; len < sizeof(data); len++)
		KUNIT_EXPECT_EQ_MSG(test, knbd_proto_parse_go(data, len, &req),
				    REP_ERR_INVALID, "len %u", len);
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req), 0U);
}

static void parse_go_name_past_end(struct kunit *test)
{
	/* Name length 5, but only 4 name bytes before the count. */
	static const u8 one_over[] = {
		0x00, 0x00, 0x00, 0x05, 'd', 'i', 's', 'k',
		0x00, 0x00,
	};
	/* Name length that would wrap a 32-bit sum. */
	static const u8 huge[] = {
		0xff, 0xff, 0xff, 0xff, 'd', 'i', 's', 'k',
		0x00, 0x00,
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(one_over, sizeof(one_over), &req),
			REP_ERR_INVALID);
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(huge, sizeof(huge), &req),
			REP_ERR_INVALID);
}

/* Option data with a name of @name_len 'a's and no info requests. */
static u8 *go_long_name(struct kunit *test, u32 name_len, u32 *len)
{
	u8 *data;

	*len = 4 + name_len + 2;
	data = kunit_kzalloc(test, *len, GFP_KERNEL);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, data);
	put_unaligned_be32(name_len, data);
	memset(data + 4, 'a', name_len);
	return data;
}

static void parse_go_name_max_len(struct kunit *test)
{
	struct knbd_go_req req;
	u32 len;
	u8 *data = go_long_name(test, 4096, &len);

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, len, &req), 0U);
	KUNIT_EXPECT_EQ(test, req.name_len, 4096U);
}

static void parse_go_name_too_long(struct kunit *test)
{
	struct knbd_go_req req;
	u32 len;
	u8 *data = go_long_name(test, 4097, &len);

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, len, &req), REP_ERR_INVALID);
}

static void parse_go_trailing_junk(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x01,
		0x00, 0x03,
		0x00,		/* one byte too many */
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req),
			REP_ERR_INVALID);
}

static void parse_go_count_mismatch(struct kunit *test)
{
	static const u8 too_high[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x02,	/* two announced */
		0x00, 0x03,	/* one sent */
	};
	static const u8 too_low[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x01,	/* one announced */
		0x00, 0x03,	/* two sent */
		0x00, 0x01,
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(too_high, sizeof(too_high), &req),
			REP_ERR_INVALID);
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(too_low, sizeof(too_low), &req),
			REP_ERR_INVALID);
}

static void parse_go_nul_in_name(struct kunit *test)
{
	static const u8 middle[] = {
		0x00, 0x00, 0x00, 0x04, 'd', '\0', 's', 'k',
		0x00, 0x00,
	};
	static const u8 last[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', '\0',
		0x00, 0x00,
	};
	struct knbd_go_req req;

	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(middle, sizeof(middle), &req),
			REP_ERR_INVALID);
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(last, sizeof(last), &req),
			REP_ERR_INVALID);
}

static void parse_go_error_clears_req(struct kunit *test)
{
	static const u8 data[] = {
		0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k',
		0x00, 0x02,
		0x00, 0x01,
	};
	struct knbd_go_req req;

	memset(&req, 0xff, sizeof(req));
	KUNIT_EXPECT_EQ(test, knbd_proto_parse_go(data, sizeof(data), &req),
			REP_ERR_INVALID);
	KUNIT_EXPECT_NULL(test, req.name);
	KUNIT_EXPECT_EQ(test, req.name_len, 0U);
	KUNIT_EXPECT_FALSE(test, req.want_name);
	KUNIT_EXPECT_FALSE(test, req.want_description);
	KUNIT_EXPECT_FALSE(test, req.want_block_size);
}

/* ---- export information ---- */

static void transmission_flags_rw(struct kunit *test)
{
	/* HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES | CAN_MULTI_CONN */
	KUNIT_EXPECT_EQ(test, knbd_proto_transmission_flags(&ei_rw), (u16)0x016d);
}

static void transmission_flags_ro(struct kunit *test)
{
	/* HAS_FLAGS | READ_ONLY | SEND_FLUSH | CAN_MULTI_CONN */
	KUNIT_EXPECT_EQ(test, knbd_proto_transmission_flags(&ei_ro), (u16)0x0107);
}

static void encode_info_export_rw_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x00, 0x00,					/* KNBD_NBD_INFO_EXPORT */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,	/* size */
		0x01, 0x6d,					/* flags */
	};
	struct knbd_export_info ei = ei_rw;
	struct nbd_wire_info_export info;

	ei.size = 0x0102030405060708ULL;
	memset(&info, 0xa5, sizeof(info));
	knbd_proto_encode_info_export(&info, &ei);
	EXPECT_WIRE(test, info, want);
}

static void encode_info_export_ro_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,	/* 1 MiB */
		0x01, 0x07,
	};
	struct nbd_wire_info_export info;

	memset(&info, 0xa5, sizeof(info));
	knbd_proto_encode_info_export(&info, &ei_ro);
	EXPECT_WIRE(test, info, want);
}

static void encode_info_block_size_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x00, 0x03,			/* KNBD_NBD_INFO_BLOCK_SIZE */
		0x00, 0x00, 0x02, 0x00,		/* minimum 512 */
		0x00, 0x00, 0x10, 0x00,		/* preferred 4096 */
		0x02, 0x00, 0x00, 0x00,		/* maximum 32 MiB */
	};
	struct nbd_wire_info_block_size info;

	memset(&info, 0xa5, sizeof(info));
	knbd_proto_encode_info_block_size(&info, &ei_rw);
	EXPECT_WIRE(test, info, want);
}

/* ---- transmission: request header ---- */

static void decode_request_fields(struct kunit *test)
{
	static const u8 bytes[] = {
		0x25, 0x60, 0x95, 0x13,				/* magic */
		0x00, 0x01,					/* FUA */
		0x00, 0x01,					/* WRITE */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,	/* cookie */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,	/* offset 1 MiB */
		0x00, 0x00, 0x10, 0x00,				/* len 4096 */
	};
	struct nbd_wire_request wire;
	struct knbd_cmd cmd;

	KUNIT_ASSERT_EQ(test, sizeof(wire), sizeof(bytes));
	decode_wire_request(bytes, &wire);
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_request(&wire, &cmd), 0);
	KUNIT_EXPECT_EQ(test, cmd.flags, (u16)1);
	KUNIT_EXPECT_EQ(test, cmd.type, (u16)1);
	KUNIT_EXPECT_EQ(test, cmd.cookie, 0x0102030405060708ULL);
	KUNIT_EXPECT_EQ(test, cmd.offset, 0x100000ULL);
	KUNIT_EXPECT_EQ(test, cmd.len, 4096U);
}

static void decode_request_big_endian(struct kunit *test)
{
	static const u8 bytes[] = {
		0x25, 0x60, 0x95, 0x13,
		0x80, 0x10,
		0x12, 0x34,
		0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87,
		0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88,
		0xfe, 0xdc, 0xba, 0x98,
	};
	struct nbd_wire_request wire;
	struct knbd_cmd cmd;

	decode_wire_request(bytes, &wire);
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_request(&wire, &cmd), 0);
	KUNIT_EXPECT_EQ(test, cmd.flags, (u16)0x8010);
	KUNIT_EXPECT_EQ(test, cmd.type, (u16)0x1234);
	KUNIT_EXPECT_EQ(test, cmd.cookie, 0xf0e1d2c3b4a59687ULL);
	KUNIT_EXPECT_EQ(test, cmd.offset, 0xffeeddccbbaa9988ULL);
	KUNIT_EXPECT_EQ(test, cmd.len, 0xfedcba98U);
}

static void decode_request_bad_magic(struct kunit *test)
{
	static const u8 swapped[] = {
		0x13, 0x95, 0x60, 0x25,		/* little endian request magic */
		0x00, 0x00, 0x00, 0x00,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	static const u8 reply_magic[] = {
		0x67, 0x44, 0x66, 0x98,
		0x00, 0x00, 0x00, 0x00,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	struct nbd_wire_request wire;
	struct knbd_cmd cmd;

	decode_wire_request(swapped, &wire);
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_request(&wire, &cmd), -EPROTO);
	decode_wire_request(reply_magic, &wire);
	KUNIT_EXPECT_EQ(test, knbd_proto_decode_request(&wire, &cmd), -EPROTO);
}

/* ---- transmission: checking a request (types 0 READ .. 6 WRITE_ZEROES) ---- */

static void check_read_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 0, 0, 0, 4096);
}

static void check_write_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 1, 0, 4096, 512);
}

static void check_flush_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 3, 0, 0, 0);
}

static void check_trim_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 4, 0, 8192, 65536);
}

static void check_write_zeroes_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 6, 0, 0, 1 << 20);
}

static void check_disc(struct kunit *test)
{
	expect_verdict(test, &ei_rw, 2, 0, 0, 0, KNBD_REQ_DISC, 0);
	/* Nothing else about the header matters, not even on a read-only export. */
	expect_verdict(test, &ei_ro, 2, 0xffff, ~0ULL, ~0U, KNBD_REQ_DISC, 0);
}

static void check_unknown_type_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 5, 0, 0, 4096, E_INVAL);	/* CACHE: not advertised */
	expect_err(test, &ei_rw, 7, 0, 0, 4096, E_INVAL);	/* BLOCK_STATUS */
	expect_err(test, &ei_rw, 8, 0, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 0xffff, 0, 0, 4096, E_INVAL);
	expect_err(test, &ei_ro, 5, 0, 0, 4096, E_INVAL);
}

static void check_fua_on_writes_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 1, 0x1, 0, 4096);
	expect_ok(test, &ei_rw, 4, 0x1, 0, 4096);
	expect_ok(test, &ei_rw, 6, 0x1, 0, 4096);
}

static void check_fua_on_read_flush_ignored(struct kunit *test)
{
	expect_ok(test, &ei_rw, 0, 0x1, 0, 4096);
	expect_ok(test, &ei_rw, 3, 0x1, 0, 0);
}

static void check_no_hole_on_write_zeroes_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 6, 0x2, 0, 4096);
	expect_ok(test, &ei_rw, 6, 0x3, 0, 4096);
}

static void check_no_hole_elsewhere_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0x2, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 1, 0x2, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 3, 0x2, 0, 0, E_INVAL);
	expect_err(test, &ei_rw, 4, 0x2, 0, 4096, E_INVAL);
}

static void check_df_einval(struct kunit *test)
{
	/* DF needs structured replies, which knbd does not negotiate. */
	expect_err(test, &ei_rw, 0, 0x4, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 1, 0x4, 0, 4096, E_INVAL);
}

static void check_req_one_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0x8, 0, 4096, E_INVAL);
}

static void check_fast_zero_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 6, 0x10, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 6, 0x13, 0, 4096, E_INVAL);
}

static void check_unknown_flags_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0x20, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 1, 0x100, 0, 4096, E_INVAL);
	expect_err(test, &ei_rw, 3, 0x8000, 0, 0, E_INVAL);
	expect_err(test, &ei_rw, 6, 0xffff, 0, 4096, E_INVAL);
}

static void check_readonly_writes_eperm(struct kunit *test)
{
	expect_err(test, &ei_ro, 1, 0, 0, 4096, E_PERM);
	expect_err(test, &ei_ro, 4, 0, 0, 4096, E_PERM);
	expect_err(test, &ei_ro, 6, 0, 0, 4096, E_PERM);
	expect_err(test, &ei_ro, 1, 0x1, 0, 4096, E_PERM);
}

static void check_readonly_read_flush_ok(struct kunit *test)
{
	expect_ok(test, &ei_ro, 0, 0, 0, 4096);
	expect_ok(test, &ei_ro, 3, 0, 0, 0);
}

static void check_zero_length_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0, 0, 0, E_INVAL);
	expect_err(test, &ei_rw, 1, 0, 0, 0, E_INVAL);
	expect_err(test, &ei_rw, 4, 0, 0, 0, E_INVAL);
	expect_err(test, &ei_rw, 6, 0, 0, 0, E_INVAL);
}

static void check_read_max_len(struct kunit *test)
{
	expect_ok(test, &ei_big, 0, 0, 0, REQ_MAX);
}

static void check_read_too_long_einval(struct kunit *test)
{
	/* The header is all there is: refuse it, keep the connection. */
	expect_err(test, &ei_big, 0, 0, 0, REQ_MAX + 512, E_INVAL);
	expect_err(test, &ei_big, 0, 0, 0, 0xfffffe00, E_INVAL);
}

static void check_write_max_len(struct kunit *test)
{
	expect_ok(test, &ei_big, 1, 0, 0, REQ_MAX);
}

static void check_write_too_long_fatal(struct kunit *test)
{
	expect_verdict(test, &ei_big, 1, 0, 0, REQ_MAX + 512, KNBD_REQ_FATAL, 0);
	expect_verdict(test, &ei_big, 1, 0, 0, REQ_MAX + 1, KNBD_REQ_FATAL, 0);
	expect_verdict(test, &ei_big, 1, 0, 0, 0xffffffff, KNBD_REQ_FATAL, 0);
}

static void check_write_too_long_fatal_first(struct kunit *test)
{
	/* Its payload cannot be skipped, whatever else is wrong with it. */
	expect_verdict(test, &ei_ro, 1, 0, 0, REQ_MAX + 512, KNBD_REQ_FATAL, 0);
	expect_verdict(test, &ei_rw, 1, 0x4, 0, REQ_MAX + 512, KNBD_REQ_FATAL, 0);
	expect_verdict(test, &ei_rw, 1, 0, 3, REQ_MAX + 512, KNBD_REQ_FATAL, 0);
}

static void check_trim_write_zeroes_unbounded(struct kunit *test)
{
	/* No payload: only the export size limits them. */
	expect_ok(test, &ei_big, 4, 0, 0, 0xfffffe00);
	expect_ok(test, &ei_big, 6, 0, 0, 0xfffffe00);
}

static void check_misaligned_offset_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0, 256, 512, E_INVAL);
	expect_err(test, &ei_rw, 1, 0, 1, 512, E_INVAL);
	expect_err(test, &ei_rw, 4, 0, 511, 512, E_INVAL);
	expect_err(test, &ei_rw, 6, 0, 4097, 512, E_INVAL);
}

static void check_misaligned_length_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0, 0, 100, E_INVAL);
	expect_err(test, &ei_rw, 1, 0, 0, 513, E_INVAL);
	expect_err(test, &ei_rw, 4, 0, 512, 1023, E_INVAL);
	expect_err(test, &ei_rw, 6, 0, 512, 1, E_INVAL);
}

static void check_min_block_4096(struct kunit *test)
{
	struct knbd_export_info ei = ei_rw;

	ei.min_block = 4096;
	expect_err(test, &ei, 0, 0, 512, 4096, E_INVAL);
	expect_err(test, &ei, 1, 0, 4096, 512, E_INVAL);
	expect_ok(test, &ei, 1, 0, 8192, 4096);
}

static void check_min_block_1_any_alignment(struct kunit *test)
{
	expect_ok(test, &ei_byte, 0, 0, 3, 5);
	expect_ok(test, &ei_byte, 1, 0, 999, 1);
	expect_ok(test, &ei_byte, 4, 0, 1, 997);
}

static void check_end_at_size_ok(struct kunit *test)
{
	expect_ok(test, &ei_rw, 0, 0, (1 << 20) - 512, 512);
	expect_ok(test, &ei_rw, 1, 0, (1 << 20) - 512, 512);
	expect_ok(test, &ei_rw, 6, 0, 0, 1 << 20);
	expect_ok(test, &ei_byte, 0, 0, 0, 1000);
}

static void check_past_end_write_enospc(struct kunit *test)
{
	/* WRITE and WRITE_ZEROES: "SHOULD return ENOSPC" (NBD protocol). */
	expect_err(test, &ei_rw, 1, 0, (1 << 20) - 512, 1024, E_NOSPC);
	expect_err(test, &ei_rw, 6, 0, 0, (1 << 20) + 512, E_NOSPC);
	expect_err(test, &ei_byte, 1, 0, 999, 2, E_NOSPC);
}

static void check_past_end_trim_einval(struct kunit *test)
{
	/*
	 * "SHOULD return EINVAL if it receives a read or trim request including
	 * one or more sectors beyond the size of the device" (NBD protocol).
	 */
	expect_err(test, &ei_rw, 4, 0, (1 << 20) - 512, 1024, E_INVAL);
	expect_err(test, &ei_rw, 4, 0, U64_MAX & ~511ULL, 1024, E_INVAL);
}

static void check_past_end_read_einval(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0, (1 << 20) - 512, 1024, E_INVAL);
	expect_err(test, &ei_byte, 0, 0, 0, 1001, E_INVAL);
}

static void check_offset_at_size(struct kunit *test)
{
	expect_err(test, &ei_rw, 0, 0, 1 << 20, 512, E_INVAL);
	expect_err(test, &ei_rw, 1, 0, 1 << 20, 512, E_NOSPC);
}

static void check_offset_len_overflow(struct kunit *test)
{
	/* An export so big that only a checked sum can see these run past it. */
	struct knbd_export_info ei = ei_rw;
	u64 offset = U64_MAX & ~511ULL;

	ei.size = U64_MAX & ~511ULL;
	expect_err(test, &ei, 0, 0, offset, 1024, E_INVAL);
	expect_err(test, &ei, 1, 0, offset, 1024, E_NOSPC);
	expect_err(test, &ei, 6, 0, offset, 0xfffffe00, E_NOSPC);
	expect_ok(test, &ei, 0, 0, offset - 1024, 1024);
}

static void check_flush_ignores_offset_len(struct kunit *test)
{
	expect_ok(test, &ei_rw, 3, 0, 12345, 777);
	expect_ok(test, &ei_rw, 3, 0, U64_MAX, 0xffffffff);
	expect_ok(test, &ei_ro, 3, 0, 1 << 20, 512);
}

static void check_error_precedence(struct kunit *test)
{
	/* unknown command, bad flags, read-only, length, alignment, range */
	expect_err(test, &ei_ro, 7, 0x4, 0, 0, E_INVAL);
	expect_err(test, &ei_ro, 1, 0x4, 0, 4096, E_INVAL);
	expect_err(test, &ei_ro, 4, 0, 0, 0, E_PERM);
	expect_err(test, &ei_ro, 6, 0, 3, 5, E_PERM);
	expect_err(test, &ei_ro, 1, 0, 2 << 20, 512, E_PERM);
	expect_err(test, &ei_rw, 1, 0, (1 << 20) - 256, 1024, E_INVAL);
}

static void payload_len_write_only(struct kunit *test)
{
	struct knbd_cmd cmd = { .offset = 0, .len = 4096 };

	cmd.type = 1;
	KUNIT_EXPECT_EQ(test, knbd_proto_payload_len(&cmd), 4096U);
	for (cmd.type = 0; cmd.type < 8; cmd.type++) {
		if (cmd.type == 1)
			continue;
		KUNIT_EXPECT_EQ_MSG(test, knbd_proto_payload_len(&cmd), 0U,
				    "type %u", cmd.type);
	}
}

/* ---- transmission: replies ---- */

static void encode_reply_ok_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x67, 0x44, 0x66, 0x98,				/* magic */
		0x00, 0x00, 0x00, 0x00,				/* error */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,	/* cookie */
	};
	struct nbd_wire_simple_reply reply;

	memset(&reply, 0xa5, sizeof(reply));
	knbd_proto_encode_reply(&reply, 0x0102030405060708ULL, 0);
	EXPECT_WIRE(test, reply, want);
}

static void encode_reply_error_bytes(struct kunit *test)
{
	static const u8 want[] = {
		0x67, 0x44, 0x66, 0x98,
		0x00, 0x00, 0x00, 0x1c,				/* ENOSPC */
		0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88,
	};
	struct nbd_wire_simple_reply reply;

	memset(&reply, 0xa5, sizeof(reply));
	knbd_proto_encode_reply(&reply, 0xffeeddccbbaa9988ULL, 28);
	EXPECT_WIRE(test, reply, want);
}

/* ---- errno mapping ---- */

static void errno_success(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(0), 0U);
}

static void errno_permission(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EPERM), 1U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EACCES), 1U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EROFS), 1U);
}

static void errno_nomem(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-ENOMEM), 12U);
}

static void errno_invalid(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EINVAL), 22U);
}

static void errno_no_space(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-ENOSPC), 28U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EDQUOT), 28U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EFBIG), 28U);
}

static void errno_not_supported(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EOPNOTSUPP), 95U);
}

static void errno_shutdown(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-ESHUTDOWN), 108U);
}

static void errno_others_eio(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-EIO), 5U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-ENXIO), 5U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(-ETIMEDOUT), 5U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(EPERM), 5U);
	KUNIT_EXPECT_EQ(test, knbd_proto_errno_to_nbd(INT_MIN), 5U);
}

/* The inverse, for errors a peer reports about a forwarded piece. */
static void nbd_to_errno_known(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(0), 0);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(1), -EPERM);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(12), -ENOMEM);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(22), -EINVAL);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(28), -ENOSPC);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(95), -EOPNOTSUPP);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(108), -ESHUTDOWN);
}

static void nbd_to_errno_others_eio(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(5), -EIO);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(75), -EIO);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(2), -EIO);
	KUNIT_EXPECT_EQ(test, knbd_proto_nbd_to_errno(0xffffffff), -EIO);
}

static void errno_round_trip(struct kunit *test)
{
	static const int errs[] = {
		0, -EPERM, -EIO, -ENOMEM, -EINVAL, -ENOSPC, -EOPNOTSUPP, -ESHUTDOWN,
	};
	int i;

	for (i = 0; i < ARRAY_SIZE(errs); i++)
		KUNIT_EXPECT_EQ(test,
				knbd_proto_nbd_to_errno(knbd_proto_errno_to_nbd(errs[i])),
				errs[i]);
}

/* ---- server-to-server frames ---- */

/* sizeof(struct knbd_peer_io) + 32 MiB, written out. */
#define PEER_MAX_FRAME		(40U + (32U << 20))

static void peer_encode_hdr_bytes(struct kunit *test)
{
	static const u8 want[] = {
		'K', 'N', 'B', 'D',
		0x00, 0x03,		/* version 3 */
		0x00, 0x02,		/* IO */
		0x00, 0x01, 0x23, 0x45,
	};
	struct knbd_peer_hdr hdr;

	memset(&hdr, 0xa5, sizeof(hdr));
	knbd_peer_encode_hdr(&hdr, 2, 0x12345);
	EXPECT_WIRE(test, hdr, want);
}

static void peer_decode_hdr_fields(struct kunit *test)
{
	static const u8 bytes[] = {
		'K', 'N', 'B', 'D', 0x00, 0x03, 0x00, 0x03, 0x00, 0x00, 0x01, 0x2c,
	};
	struct knbd_peer_hdr hdr;
	u16 type = 0;
	u32 len = 0;

	KUNIT_ASSERT_EQ(test, sizeof(hdr), sizeof(bytes));
	memcpy(&hdr, bytes, sizeof(hdr));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), 0);
	KUNIT_EXPECT_EQ(test, type, (u16)3);
	KUNIT_EXPECT_EQ(test, len, 300U);
}

static void peer_decode_hdr_bad_magic(struct kunit *test)
{
	static const u8 bytes[] = {
		'D', 'B', 'N', 'K', 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10,
	};
	struct knbd_peer_hdr hdr;
	u16 type;
	u32 len;

	memcpy(&hdr, bytes, sizeof(hdr));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), -EPROTO);
}

/*
 * Version 2 had no authentication (and 1 named volumes in every IO frame):
 * a member that speaks either is refused, as is a newer one.
 */
static void peer_decode_hdr_bad_version(struct kunit *test)
{
	static const u8 v2[] = {
		'K', 'N', 'B', 'D', 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10,
	};
	static const u8 v4[] = {
		'K', 'N', 'B', 'D', 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10,
	};
	struct knbd_peer_hdr hdr;
	u16 type;
	u32 len;

	memcpy(&hdr, v2, sizeof(hdr));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), -EPROTONOSUPPORT);
	memcpy(&hdr, v4, sizeof(hdr));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), -EPROTONOSUPPORT);
}

static void peer_decode_hdr_frame_too_big(struct kunit *test)
{
	struct knbd_peer_hdr hdr;
	u16 type;
	u32 len;

	knbd_peer_encode_hdr(&hdr, 2, PEER_MAX_FRAME);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), 0);
	KUNIT_EXPECT_EQ(test, len, PEER_MAX_FRAME);
	knbd_peer_encode_hdr(&hdr, 2, PEER_MAX_FRAME + 1);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), -EMSGSIZE);
	knbd_peer_encode_hdr(&hdr, 2, 0xffffffff);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr(&hdr, &type, &len), -EMSGSIZE);
}

/* An IO frame's fixed part; frame lengths below count 40 bytes for it. */
static void peer_io(struct knbd_peer_io *io, u16 cmd, u32 len, u32 handle)
{
	memset(io, 0, sizeof(*io));
	io->cmd = cpu_to_be16(cmd);
	io->len = cpu_to_be32(len);
	io->handle = cpu_to_be32(handle);
}

static int peer_decode(const struct knbd_peer_io *io, u32 frame_len)
{
	struct knbd_cmd cmd;
	u64 epoch;
	u32 checksum;
	u32 handle;

	return knbd_peer_decode_io(io, frame_len, &cmd, &epoch, &checksum, &handle);
}

static void peer_decode_io_fields(struct kunit *test)
{
	static const u8 bytes[] = {
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,	/* cookie */
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,	/* epoch */
		0xa1, 0xb2, 0xc3, 0xd4,				/* checksum */
		0x00, 0x01,					/* WRITE */
		0x00, 0x01,					/* FUA */
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00,	/* offset */
		0x00, 0x00, 0x10, 0x00,				/* len 4096 */
		0x00, 0x00, 0x00, 0x2a,				/* handle 42 */
	};
	struct knbd_peer_io io;
	struct knbd_cmd cmd;
	u64 epoch = 0;
	u32 checksum = 0;
	u32 handle = 0;

	KUNIT_ASSERT_EQ(test, sizeof(io), sizeof(bytes));
	memcpy(&io, bytes, sizeof(io));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_io(&io, 40 + 4096, &cmd, &epoch,
						  &checksum, &handle), 0);
	KUNIT_EXPECT_EQ(test, cmd.cookie, 0x0102030405060708ULL);
	KUNIT_EXPECT_EQ(test, cmd.type, (u16)1);
	KUNIT_EXPECT_EQ(test, cmd.flags, (u16)1);
	KUNIT_EXPECT_EQ(test, cmd.offset, 0x100000200ULL);
	KUNIT_EXPECT_EQ(test, cmd.len, 4096U);
	KUNIT_EXPECT_EQ(test, epoch, 0x1112131415161718ULL);
	KUNIT_EXPECT_EQ(test, checksum, 0xa1b2c3d4U);
	KUNIT_EXPECT_EQ(test, handle, 42U);
}

static void peer_decode_io_handle(struct kunit *test)
{
	struct knbd_peer_io io;

	peer_io(&io, 0, 4096, 0);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	peer_io(&io, 0, 4096, KNBD_PEER_MAX_HANDLES - 1);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	peer_io(&io, 0, 4096, KNBD_PEER_MAX_HANDLES);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 0, 4096, 0xffffffff);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
}

static void peer_decode_io_frame_len_read(struct kunit *test)
{
	struct knbd_peer_io io;

	/* A READ carries no payload towards the owner. */
	peer_io(&io, 0, 4096, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 39), -EPROTO);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 41), -EPROTO);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + 4096), -EPROTO);
}

static void peer_decode_io_frame_len_write(struct kunit *test)
{
	struct knbd_peer_io io;

	peer_io(&io, 1, 4096, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + 4096), 0);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + 4095), -EPROTO);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + 4097), -EPROTO);
}

static void peer_decode_io_read_write_len(struct kunit *test)
{
	struct knbd_peer_io io;

	peer_io(&io, 0, 0, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 1, 0, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 0, REQ_MAX, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	peer_io(&io, 1, REQ_MAX, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + REQ_MAX), 0);
	peer_io(&io, 0, REQ_MAX + 1, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 1, REQ_MAX + 1, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40 + REQ_MAX + 1), -EPROTO);
}

static void peer_decode_io_no_payload_cmds(struct kunit *test)
{
	struct knbd_peer_io io;

	peer_io(&io, 3, 0, 4);		/* FLUSH */
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	peer_io(&io, 4, 1 << 30, 4);	/* TRIM: no payload, no 32 MiB limit */
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
	peer_io(&io, 6, 1 << 30, 4);	/* WRITE_ZEROES */
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), 0);
}

static void peer_decode_io_bad_cmd(struct kunit *test)
{
	struct knbd_peer_io io;

	peer_io(&io, 2, 0, 4);		/* DISC is not forwarded */
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 5, 4096, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 7, 4096, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
	peer_io(&io, 0xffff, 4096, 4);
	KUNIT_EXPECT_EQ(test, peer_decode(&io, 40), -EPROTO);
}

static void peer_bind(struct knbd_peer_bind *b, u32 handle, u16 name_len)
{
	memset(b, 0, sizeof(*b));
	b->handle = cpu_to_be32(handle);
	b->name_len = cpu_to_be16(name_len);
}

static void peer_decode_bind_fields(struct kunit *test)
{
	static const u8 bytes[] = {
		0x00, 0x00, 0x00, 0x07,		/* handle */
		0x00, 0x04,			/* name_len */
		0x00, 0x00,
	};
	struct knbd_peer_bind b;
	u32 handle = 0;
	u16 name_len = 0;

	KUNIT_ASSERT_EQ(test, sizeof(b), sizeof(bytes));
	memcpy(&b, bytes, sizeof(b));
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 4, &handle, &name_len), 0);
	KUNIT_EXPECT_EQ(test, handle, 7U);
	KUNIT_EXPECT_EQ(test, name_len, (u16)4);
}

/* The frame holds exactly the name; names are 1..255 bytes, handles 0..63. */
static void peer_decode_bind_lengths(struct kunit *test)
{
	struct knbd_peer_bind b;
	u32 handle;
	u16 n;

	peer_bind(&b, 0, 4);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 3, &handle, &n), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 5, &handle, &n), -EPROTO);
	peer_bind(&b, 0, 0);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8, &handle, &n), -EPROTO);
	peer_bind(&b, 0, 255);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 255, &handle, &n), 0);
	peer_bind(&b, 0, 256);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 256, &handle, &n), -EPROTO);
	peer_bind(&b, KNBD_PEER_MAX_HANDLES - 1, 1);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 1, &handle, &n), 0);
	peer_bind(&b, KNBD_PEER_MAX_HANDLES, 1);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_bind(&b, 8 + 1, &handle, &n), -EPROTO);
}

static void peer_check_reply_read(struct kunit *test)
{
	/* struct knbd_peer_io_reply is 32 bytes; a good READ reply adds the data. */
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32 + 4096, 0, 0, 0, 4096), 0);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32, 0, 0, 0, 4096), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32 + 4095, 0, 0, 0, 4096), -EPROTO);
}

static void peer_check_reply_no_data(struct kunit *test)
{
	/* Failed READs and every other command: the fixed part only. */
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32, 5, 0, 0, 4096), 0);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32, 0, 2, 0, 4096), 0);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32 + 4096, 5, 0, 0, 4096), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32, 0, 0, 1, 4096), 0);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32 + 4096, 0, 0, 1, 4096), -EPROTO);
	KUNIT_EXPECT_EQ(test, knbd_peer_check_reply(32, 0, 0, 3, 0), 0);
}

/* ---- command names ---- */

static void peer_hello_round_trip(struct kunit *test)
{
	u8 frame[sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_hello)];
	struct knbd_peer_hello *hello = (void *)(frame + sizeof(struct knbd_peer_hdr));
	u8 nonce[KNBD_PEER_NONCE_LEN], mac[KNBD_PEER_MAC_LEN];
	u32 id, group, flags, len;
	u16 type;

	KUNIT_ASSERT_EQ(test, sizeof(frame), 12U + 16U + 32U + 32U);
	memset(nonce, 0x11, sizeof(nonce));
	memset(mac, 0x22, sizeof(mac));
	memset(frame, 0xa5, sizeof(frame));
	knbd_peer_encode_hello(frame, 7, 0x01020304, KNBD_HELLO_F_INSECURE, nonce, mac);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hdr((void *)frame, &type, &len), 0);
	KUNIT_EXPECT_EQ(test, type, (u16)KNBD_PEER_HELLO);
	KUNIT_EXPECT_EQ(test, len, 80U);
	/* node id right after the header, big endian */
	KUNIT_EXPECT_EQ(test, frame[12 + 3], 7);
	KUNIT_EXPECT_EQ(test, frame[16], 1);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hello(hello, &id, &group, &flags), 0);
	KUNIT_EXPECT_EQ(test, id, 7U);
	KUNIT_EXPECT_EQ(test, group, 0x01020304U);
	KUNIT_EXPECT_EQ(test, flags, (u32)KNBD_HELLO_F_INSECURE);
	KUNIT_EXPECT_EQ(test, memcmp(hello->nonce, nonce, sizeof(nonce)), 0);
	KUNIT_EXPECT_EQ(test, memcmp(hello->mac, mac, sizeof(mac)), 0);

	/* the client's HELLO carries no MAC: zeros, not what was there */
	knbd_peer_encode_hello(frame, 7, 1, 0, nonce, NULL);
	memset(mac, 0, sizeof(mac));
	KUNIT_EXPECT_EQ(test, memcmp(hello->mac, mac, sizeof(mac)), 0);
}

/* Unknown flags or reserved bits: a member we do not understand is refused. */
static void peer_hello_unknown_bits(struct kunit *test)
{
	u8 frame[sizeof(struct knbd_peer_hdr) + sizeof(struct knbd_peer_hello)] = {};
	struct knbd_peer_hello *hello = (void *)(frame + sizeof(struct knbd_peer_hdr));
	u8 nonce[KNBD_PEER_NONCE_LEN] = {};
	u32 id, group, flags;

	knbd_peer_encode_hello(frame, 1, 1, 0x2, nonce, NULL);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hello(hello, &id, &group, &flags), -EPROTO);
	knbd_peer_encode_hello(frame, 1, 1, 0, nonce, NULL);
	hello->reserved = cpu_to_be32(1);
	KUNIT_EXPECT_EQ(test, knbd_peer_decode_hello(hello, &id, &group, &flags), -EPROTO);
}

/*
 * The two proofs of one handshake differ only in the label, and each
 * covers the ids, group, mode and both nonces: a changed byte anywhere
 * changes the transcript (so the MAC).  The Python member in the tests
 * builds the same bytes (scripts/tests/peerwire.py).
 */
static void peer_auth_transcript_layout(struct kunit *test)
{
	struct knbd_peer_auth_transcript s, c;
	u8 cn[KNBD_PEER_NONCE_LEN], sn[KNBD_PEER_NONCE_LEN];
	const u8 *b = (const u8 *)&s;

	memset(cn, 0xc1, sizeof(cn));
	memset(sn, 0x5e, sizeof(sn));
	KUNIT_ASSERT_EQ(test, sizeof(s), 16U + 16U + 64U);
	knbd_peer_auth_transcript(&s, true, 2, 3, 7, 0, cn, sn);
	knbd_peer_auth_transcript(&c, false, 2, 3, 7, 0, cn, sn);
	KUNIT_EXPECT_EQ(test, memcmp(b, "knbd3 server\0\0\0\0", 16), 0);
	KUNIT_EXPECT_EQ(test, memcmp((const u8 *)&c, "knbd3 client\0\0\0\0", 16), 0);
	KUNIT_EXPECT_EQ(test, memcmp(b + 16, &c.client_id, sizeof(s) - 16), 0);
	KUNIT_EXPECT_EQ(test, b[16 + 3], 2);	/* client id */
	KUNIT_EXPECT_EQ(test, b[20 + 3], 3);	/* server id */
	KUNIT_EXPECT_EQ(test, b[24 + 3], 7);	/* group */
	KUNIT_EXPECT_EQ(test, b[32], 0xc1);
	KUNIT_EXPECT_EQ(test, b[64], 0x5e);
	/* swapping the roles' nonces is another transcript */
	knbd_peer_auth_transcript(&c, true, 2, 3, 7, 0, sn, cn);
	KUNIT_EXPECT_NE(test, memcmp(b, &c, sizeof(s)), 0);
}

static void cmd_name_known(struct kunit *test)
{
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(0), "READ");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(1), "WRITE");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(2), "DISC");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(3), "FLUSH");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(4), "TRIM");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(6), "WRITE_ZEROES");
}

static void cmd_name_unknown(struct kunit *test)
{
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(5), "UNKNOWN");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(7), "UNKNOWN");
	KUNIT_EXPECT_STREQ(test, knbd_proto_cmd_name(0xffff), "UNKNOWN");
}

static struct kunit_case knbd_proto_cases[] = {
	KUNIT_CASE(encode_hello_bytes),
	KUNIT_CASE(client_flags_fixed_newstyle),
	KUNIT_CASE(client_flags_no_zeroes),
	KUNIT_CASE(client_flags_fixed_newstyle_required),
	KUNIT_CASE(client_flags_unknown_bits),
	KUNIT_CASE(decode_opt_fields),
	KUNIT_CASE(decode_opt_big_endian),
	KUNIT_CASE(decode_opt_bad_magic),
	KUNIT_CASE(encode_opt_reply_bytes),
	KUNIT_CASE(encode_opt_reply_error_bytes),
	KUNIT_CASE(parse_go_name_only),
	KUNIT_CASE(parse_go_all_info_requests),
	KUNIT_CASE(parse_go_block_size_only),
	KUNIT_CASE(parse_go_unknown_info_ignored),
	KUNIT_CASE(parse_go_empty_name),
	KUNIT_CASE(parse_go_too_short),
	KUNIT_CASE(parse_go_name_past_end),
	KUNIT_CASE(parse_go_name_max_len),
	KUNIT_CASE(parse_go_name_too_long),
	KUNIT_CASE(parse_go_trailing_junk),
	KUNIT_CASE(parse_go_count_mismatch),
	KUNIT_CASE(parse_go_nul_in_name),
	KUNIT_CASE(parse_go_error_clears_req),
	KUNIT_CASE(transmission_flags_rw),
	KUNIT_CASE(transmission_flags_ro),
	KUNIT_CASE(encode_info_export_rw_bytes),
	KUNIT_CASE(encode_info_export_ro_bytes),
	KUNIT_CASE(encode_info_block_size_bytes),
	KUNIT_CASE(decode_request_fields),
	KUNIT_CASE(decode_request_big_endian),
	KUNIT_CASE(decode_request_bad_magic),
	KUNIT_CASE(check_read_ok),
	KUNIT_CASE(check_write_ok),
	KUNIT_CASE(check_flush_ok),
	KUNIT_CASE(check_trim_ok),
	KUNIT_CASE(check_write_zeroes_ok),
	KUNIT_CASE(check_disc),
	KUNIT_CASE(check_unknown_type_einval),
	KUNIT_CASE(check_fua_on_writes_ok),
	KUNIT_CASE(check_fua_on_read_flush_ignored),
	KUNIT_CASE(check_no_hole_on_write_zeroes_ok),
	KUNIT_CASE(check_no_hole_elsewhere_einval),
	KUNIT_CASE(check_df_einval),
	KUNIT_CASE(check_req_one_einval),
	KUNIT_CASE(check_fast_zero_einval),
	KUNIT_CASE(check_unknown_flags_einval),
	KUNIT_CASE(check_readonly_writes_eperm),
	KUNIT_CASE(check_readonly_read_flush_ok),
	KUNIT_CASE(check_zero_length_einval),
	KUNIT_CASE(check_read_max_len),
	KUNIT_CASE(check_read_too_long_einval),
	KUNIT_CASE(check_write_max_len),
	KUNIT_CASE(check_write_too_long_fatal),
	KUNIT_CASE(check_write_too_long_fatal_first),
	KUNIT_CASE(check_trim_write_zeroes_unbounded),
	KUNIT_CASE(check_misaligned_offset_einval),
	KUNIT_CASE(check_misaligned_length_einval),
	KUNIT_CASE(check_min_block_4096),
	KUNIT_CASE(check_min_block_1_any_alignment),
	KUNIT_CASE(check_end_at_size_ok),
	KUNIT_CASE(check_past_end_write_enospc),
	KUNIT_CASE(check_past_end_trim_einval),
	KUNIT_CASE(check_past_end_read_einval),
	KUNIT_CASE(check_offset_at_size),
	KUNIT_CASE(check_offset_len_overflow),
	KUNIT_CASE(check_flush_ignores_offset_len),
	KUNIT_CASE(check_error_precedence),
	KUNIT_CASE(payload_len_write_only),
	KUNIT_CASE(encode_reply_ok_bytes),
	KUNIT_CASE(encode_reply_error_bytes),
	KUNIT_CASE(errno_success),
	KUNIT_CASE(errno_permission),
	KUNIT_CASE(errno_nomem),
	KUNIT_CASE(errno_invalid),
	KUNIT_CASE(errno_no_space),
	KUNIT_CASE(errno_not_supported),
	KUNIT_CASE(errno_shutdown),
	KUNIT_CASE(errno_others_eio),
	KUNIT_CASE(nbd_to_errno_known),
	KUNIT_CASE(nbd_to_errno_others_eio),
	KUNIT_CASE(errno_round_trip),
	KUNIT_CASE(peer_encode_hdr_bytes),
	KUNIT_CASE(peer_decode_hdr_fields),
	KUNIT_CASE(peer_decode_hdr_bad_magic),
	KUNIT_CASE(peer_decode_hdr_bad_version),
	KUNIT_CASE(peer_decode_hdr_frame_too_big),
	KUNIT_CASE(peer_decode_io_fields),
	KUNIT_CASE(peer_decode_io_handle),
	KUNIT_CASE(peer_decode_bind_fields),
	KUNIT_CASE(peer_decode_bind_lengths),
	KUNIT_CASE(peer_decode_io_frame_len_read),
	KUNIT_CASE(peer_decode_io_frame_len_write),
	KUNIT_CASE(peer_decode_io_read_write_len),
	KUNIT_CASE(peer_decode_io_no_payload_cmds),
	KUNIT_CASE(peer_decode_io_bad_cmd),
	KUNIT_CASE(peer_check_reply_read),
	KUNIT_CASE(peer_check_reply_no_data),
	KUNIT_CASE(peer_hello_round_trip),
	KUNIT_CASE(peer_hello_unknown_bits),
	KUNIT_CASE(peer_auth_transcript_layout),
	KUNIT_CASE(cmd_name_known),
	KUNIT_CASE(cmd_name_unknown),
	{}
};

static struct kunit_suite knbd_proto_suite = {
	.name = "knbd_proto",
	.test_cases = knbd_proto_cases,
};

kunit_test_suite(knbd_proto_suite);

MODULE_LICENSE("GPL");
