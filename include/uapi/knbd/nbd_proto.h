/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NBD wire format as spoken by knbd: newstyle fixed handshake and
 * simple replies.  Values follow the NBD protocol document (doc/proto.md
 * of the nbd project); everything on the wire is big endian.
 *
 * The one copy of these numbers: the module, tools/knbd-reconnect (this
 * header builds in userspace too, so it uses only <linux/types.h>) and the
 * Python tests (scripts/tests/nbdwire.py reads the #defines from here)
 * share it.  The KNBD_NBD_ prefix keeps them apart from <linux/nbd.h>,
 * which packs command flags differently (NBD_CMD_FLAG_FUA is 1 << 16 there,
 * 1 << 0 on the wire).
 */
#ifndef _KNBD_NBD_PROTO_H
#define _KNBD_NBD_PROTO_H

#include <linux/types.h>

#define KNBD_NBD_MAGIC_INIT			0x4e42444d41474943ULL	/* "NBDMAGIC" */
#define KNBD_NBD_MAGIC_IHAVEOPT			0x49484156454f5054ULL	/* "IHAVEOPT" */
#define KNBD_NBD_MAGIC_OPT_REPLY		0x0003e889045565a9ULL
#define KNBD_NBD_MAGIC_REQUEST			0x25609513U
#define KNBD_NBD_MAGIC_SIMPLE_REPLY		0x67446698U

/* Handshake flags (server) and client flags. */
#define KNBD_NBD_HS_FLAG_FIXED_NEWSTYLE		(1U << 0)
#define KNBD_NBD_HS_FLAG_NO_ZEROES		(1U << 1)
#define KNBD_NBD_CL_FLAG_FIXED_NEWSTYLE		(1U << 0)
#define KNBD_NBD_CL_FLAG_NO_ZEROES		(1U << 1)

/* Options. */
#define KNBD_NBD_OPT_EXPORT_NAME		1
#define KNBD_NBD_OPT_ABORT			2
#define KNBD_NBD_OPT_LIST			3
#define KNBD_NBD_OPT_PEEK_EXPORT		4
#define KNBD_NBD_OPT_STARTTLS			5
#define KNBD_NBD_OPT_INFO			6
#define KNBD_NBD_OPT_GO				7
#define KNBD_NBD_OPT_STRUCTURED_REPLY		8
#define KNBD_NBD_OPT_LIST_META_CONTEXT		9
#define KNBD_NBD_OPT_SET_META_CONTEXT		10
#define KNBD_NBD_OPT_EXTENDED_HEADERS		11

/* Option reply types. */
#define KNBD_NBD_REP_ACK			1
#define KNBD_NBD_REP_SERVER			2
#define KNBD_NBD_REP_INFO			3
#define KNBD_NBD_REP_FLAG_ERROR			(1U << 31)
#define KNBD_NBD_REP_ERR_UNSUP			(KNBD_NBD_REP_FLAG_ERROR | 1)
#define KNBD_NBD_REP_ERR_POLICY			(KNBD_NBD_REP_FLAG_ERROR | 2)
#define KNBD_NBD_REP_ERR_INVALID		(KNBD_NBD_REP_FLAG_ERROR | 3)
#define KNBD_NBD_REP_ERR_PLATFORM		(KNBD_NBD_REP_FLAG_ERROR | 4)
#define KNBD_NBD_REP_ERR_TLS_REQD		(KNBD_NBD_REP_FLAG_ERROR | 5)
#define KNBD_NBD_REP_ERR_UNKNOWN		(KNBD_NBD_REP_FLAG_ERROR | 6)
#define KNBD_NBD_REP_ERR_SHUTDOWN		(KNBD_NBD_REP_FLAG_ERROR | 7)
#define KNBD_NBD_REP_ERR_BLOCK_SIZE_REQD	(KNBD_NBD_REP_FLAG_ERROR | 8)
#define KNBD_NBD_REP_ERR_TOO_BIG		(KNBD_NBD_REP_FLAG_ERROR | 9)

/* KNBD_NBD_REP_INFO types. */
#define KNBD_NBD_INFO_EXPORT			0
#define KNBD_NBD_INFO_NAME			1
#define KNBD_NBD_INFO_DESCRIPTION		2
#define KNBD_NBD_INFO_BLOCK_SIZE		3

/* Transmission flags. */
#define KNBD_NBD_FLAG_HAS_FLAGS			(1U << 0)
#define KNBD_NBD_FLAG_READ_ONLY			(1U << 1)
#define KNBD_NBD_FLAG_SEND_FLUSH		(1U << 2)
#define KNBD_NBD_FLAG_SEND_FUA			(1U << 3)
#define KNBD_NBD_FLAG_ROTATIONAL		(1U << 4)
#define KNBD_NBD_FLAG_SEND_TRIM			(1U << 5)
#define KNBD_NBD_FLAG_SEND_WRITE_ZEROES		(1U << 6)
#define KNBD_NBD_FLAG_SEND_DF			(1U << 7)
#define KNBD_NBD_FLAG_CAN_MULTI_CONN		(1U << 8)

/* Commands and command flags. */
#define KNBD_NBD_CMD_READ			0
#define KNBD_NBD_CMD_WRITE			1
#define KNBD_NBD_CMD_DISC			2
#define KNBD_NBD_CMD_FLUSH			3
#define KNBD_NBD_CMD_TRIM			4
#define KNBD_NBD_CMD_CACHE			5
#define KNBD_NBD_CMD_WRITE_ZEROES		6
#define KNBD_NBD_CMD_BLOCK_STATUS		7

#define KNBD_NBD_CMD_FLAG_FUA			(1U << 0)
#define KNBD_NBD_CMD_FLAG_NO_HOLE		(1U << 1)
#define KNBD_NBD_CMD_FLAG_DF			(1U << 2)
#define KNBD_NBD_CMD_FLAG_REQ_ONE		(1U << 3)
#define KNBD_NBD_CMD_FLAG_FAST_ZERO		(1U << 4)

/* Error values carried in replies (independent of the host's errno). */
#define KNBD_NBD_EPERM				1
#define KNBD_NBD_EIO				5
#define KNBD_NBD_ENOMEM				12
#define KNBD_NBD_EINVAL				22
#define KNBD_NBD_ENOSPC				28
#define KNBD_NBD_EOVERFLOW			75
#define KNBD_NBD_ENOTSUP			95
#define KNBD_NBD_ESHUTDOWN			108

/* S: initial greeting of the newstyle handshake. */
struct nbd_wire_hello {
	__be64 magic;		/* KNBD_NBD_MAGIC_INIT */
	__be64 opt_magic;	/* KNBD_NBD_MAGIC_IHAVEOPT */
	__be16 flags;		/* NBD_HS_FLAG_* */
} __attribute__((packed));

/* C: option header, followed by len bytes of option data. */
struct nbd_wire_opt {
	__be64 magic;		/* KNBD_NBD_MAGIC_IHAVEOPT */
	__be32 option;
	__be32 len;
} __attribute__((packed));

/* S: option reply header, followed by len bytes of reply data. */
struct nbd_wire_opt_reply {
	__be64 magic;		/* KNBD_NBD_MAGIC_OPT_REPLY */
	__be32 option;
	__be32 type;
	__be32 len;
} __attribute__((packed));

/* S: reply to KNBD_NBD_OPT_EXPORT_NAME (followed by 124 zeroes unless NO_ZEROES). */
struct nbd_wire_export_name_reply {
	__be64 size;
	__be16 flags;
} __attribute__((packed));

/* S: KNBD_NBD_REP_INFO payloads. */
struct nbd_wire_info_export {
	__be16 type;		/* KNBD_NBD_INFO_EXPORT */
	__be64 size;
	__be16 flags;
} __attribute__((packed));

struct nbd_wire_info_block_size {
	__be16 type;		/* KNBD_NBD_INFO_BLOCK_SIZE */
	__be32 min;
	__be32 preferred;
	__be32 max;
} __attribute__((packed));

/* C: transmission request, followed by len bytes for KNBD_NBD_CMD_WRITE. */
struct nbd_wire_request {
	__be32 magic;		/* KNBD_NBD_MAGIC_REQUEST */
	__be16 flags;
	__be16 type;
	__be64 cookie;
	__be64 offset;
	__be32 len;
} __attribute__((packed));

/* S: simple reply, followed by the data of a successful KNBD_NBD_CMD_READ. */
struct nbd_wire_simple_reply {
	__be32 magic;		/* KNBD_NBD_MAGIC_SIMPLE_REPLY */
	__be32 error;
	__be64 cookie;
} __attribute__((packed));

#define KNBD_NBD_EXPORT_NAME_PAD		124
#define KNBD_NBD_MAX_STRING			4096

#endif /* _KNBD_NBD_PROTO_H */
