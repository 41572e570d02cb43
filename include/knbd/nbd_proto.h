/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NBD wire format as spoken by knbd: newstyle fixed handshake and
 * simple replies.  Values follow the NBD protocol document (doc/proto.md
 * of the nbd project); everything on the wire is big endian.
 */
#ifndef _KNBD_NBD_PROTO_H
#define _KNBD_NBD_PROTO_H

#include <linux/bits.h>
#include <linux/types.h>

#define NBD_MAGIC_INIT			0x4e42444d41474943ULL	/* "NBDMAGIC" */
#define NBD_MAGIC_IHAVEOPT		0x49484156454f5054ULL	/* "IHAVEOPT" */
#define NBD_MAGIC_OPT_REPLY		0x0003e889045565a9ULL
#define NBD_MAGIC_REQUEST		0x25609513U
#define NBD_MAGIC_SIMPLE_REPLY		0x67446698U

/* Handshake flags (server) and client flags. */
#define NBD_HS_FLAG_FIXED_NEWSTYLE	BIT(0)
#define NBD_HS_FLAG_NO_ZEROES		BIT(1)
#define NBD_CL_FLAG_FIXED_NEWSTYLE	BIT(0)
#define NBD_CL_FLAG_NO_ZEROES		BIT(1)

/* Options. */
#define NBD_OPT_EXPORT_NAME		1
#define NBD_OPT_ABORT			2
#define NBD_OPT_LIST			3
#define NBD_OPT_PEEK_EXPORT		4
#define NBD_OPT_STARTTLS		5
#define NBD_OPT_INFO			6
#define NBD_OPT_GO			7
#define NBD_OPT_STRUCTURED_REPLY	8
#define NBD_OPT_LIST_META_CONTEXT	9
#define NBD_OPT_SET_META_CONTEXT	10
#define NBD_OPT_EXTENDED_HEADERS	11

/* Option reply types. */
#define NBD_REP_ACK			1
#define NBD_REP_SERVER			2
#define NBD_REP_INFO			3
#define NBD_REP_FLAG_ERROR		BIT(31)
#define NBD_REP_ERR_UNSUP		(NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY		(NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID		(NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM		(NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD		(NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN		(NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN		(NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD	(NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG		(NBD_REP_FLAG_ERROR | 9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT			0
#define NBD_INFO_NAME			1
#define NBD_INFO_DESCRIPTION		2
#define NBD_INFO_BLOCK_SIZE		3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS		BIT(0)
#define NBD_FLAG_READ_ONLY		BIT(1)
#define NBD_FLAG_SEND_FLUSH		BIT(2)
#define NBD_FLAG_SEND_FUA		BIT(3)
#define NBD_FLAG_ROTATIONAL		BIT(4)
#define NBD_FLAG_SEND_TRIM		BIT(5)
#define NBD_FLAG_SEND_WRITE_ZEROES	BIT(6)
#define NBD_FLAG_SEND_DF		BIT(7)
#define NBD_FLAG_CAN_MULTI_CONN		BIT(8)

/* Commands and command flags. */
#define NBD_CMD_READ			0
#define NBD_CMD_WRITE			1
#define NBD_CMD_DISC			2
#define NBD_CMD_FLUSH			3
#define NBD_CMD_TRIM			4
#define NBD_CMD_CACHE			5
#define NBD_CMD_WRITE_ZEROES		6
#define NBD_CMD_BLOCK_STATUS		7

#define NBD_CMD_FLAG_FUA		BIT(0)
#define NBD_CMD_FLAG_NO_HOLE		BIT(1)
#define NBD_CMD_FLAG_DF			BIT(2)
#define NBD_CMD_FLAG_REQ_ONE		BIT(3)
#define NBD_CMD_FLAG_FAST_ZERO		BIT(4)

/* Error values carried in replies (independent of the host's errno). */
#define NBD_EPERM			1
#define NBD_EIO				5
#define NBD_ENOMEM			12
#define NBD_EINVAL			22
#define NBD_ENOSPC			28
#define NBD_EOVERFLOW			75
#define NBD_ENOTSUP			95
#define NBD_ESHUTDOWN			108

/* S: initial greeting of the newstyle handshake. */
struct nbd_wire_hello {
	__be64 magic;		/* NBD_MAGIC_INIT */
	__be64 opt_magic;	/* NBD_MAGIC_IHAVEOPT */
	__be16 flags;		/* NBD_HS_FLAG_* */
} __packed;

/* C: option header, followed by len bytes of option data. */
struct nbd_wire_opt {
	__be64 magic;		/* NBD_MAGIC_IHAVEOPT */
	__be32 option;
	__be32 len;
} __packed;

/* S: option reply header, followed by len bytes of reply data. */
struct nbd_wire_opt_reply {
	__be64 magic;		/* NBD_MAGIC_OPT_REPLY */
	__be32 option;
	__be32 type;
	__be32 len;
} __packed;

/* S: reply to NBD_OPT_EXPORT_NAME (followed by 124 zeroes unless NO_ZEROES). */
struct nbd_wire_export_name_reply {
	__be64 size;
	__be16 flags;
} __packed;

/* S: NBD_REP_INFO payloads. */
struct nbd_wire_info_export {
	__be16 type;		/* NBD_INFO_EXPORT */
	__be64 size;
	__be16 flags;
} __packed;

struct nbd_wire_info_block_size {
	__be16 type;		/* NBD_INFO_BLOCK_SIZE */
	__be32 min;
	__be32 preferred;
	__be32 max;
} __packed;

/* C: transmission request, followed by len bytes for NBD_CMD_WRITE. */
struct nbd_wire_request {
	__be32 magic;		/* NBD_MAGIC_REQUEST */
	__be16 flags;
	__be16 type;
	__be64 cookie;
	__be64 offset;
	__be32 len;
} __packed;

/* S: simple reply, followed by the data of a successful NBD_CMD_READ. */
struct nbd_wire_simple_reply {
	__be32 magic;		/* NBD_MAGIC_SIMPLE_REPLY */
	__be32 error;
	__be64 cookie;
} __packed;

#define NBD_EXPORT_NAME_PAD		124
#define NBD_MAX_STRING			4096

#endif /* _KNBD_NBD_PROTO_H */
