// SPDX-License-Identifier: GPL-2.0
/*
 * NBD protocol logic with no socket or file behind it: decoding and
 * checking what a client sends, encoding what the server answers.  Kept
 * apart so that KUnit can drive every branch directly (kunit/proto_test.c).
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/string.h>
#include <linux/overflow.h>
#include <asm/byteorder.h>
#include <asm/unaligned.h>

#include "knbd.h"

void knbd_proto_encode_hello(struct nbd_wire_hello *hello)
{
	hello->magic = cpu_to_be64(KNBD_NBD_MAGIC_INIT);
	hello->opt_magic = cpu_to_be64(KNBD_NBD_MAGIC_IHAVEOPT);
	hello->flags = cpu_to_be16(KNBD_NBD_HS_FLAG_FIXED_NEWSTYLE |
				   KNBD_NBD_HS_FLAG_NO_ZEROES);
}

/*
 * Only fixed newstyle clients are served: without that flag a client cannot
 * understand option errors, so every unsupported option would end the
 * session.  Unknown client flags are a protocol error as well.
 */
int knbd_proto_check_client_flags(u32 flags, bool *no_zeroes)
{
	if (!(flags & KNBD_NBD_CL_FLAG_FIXED_NEWSTYLE))
		return -EPROTO;
	if (flags & ~(KNBD_NBD_CL_FLAG_FIXED_NEWSTYLE | KNBD_NBD_CL_FLAG_NO_ZEROES))
		return -EPROTO;
	*no_zeroes = flags & KNBD_NBD_CL_FLAG_NO_ZEROES;
	return 0;
}

int knbd_proto_decode_opt(const struct nbd_wire_opt *wire, u32 *option, u32 *len)
{
	if (be64_to_cpu(wire->magic) != KNBD_NBD_MAGIC_IHAVEOPT)
		return -EPROTO;
	*option = be32_to_cpu(wire->option);
	*len = be32_to_cpu(wire->len);
	return 0;
}

void knbd_proto_encode_opt_reply(struct nbd_wire_opt_reply *reply, u32 option,
				 u32 type, u32 len)
{
	reply->magic = cpu_to_be64(KNBD_NBD_MAGIC_OPT_REPLY);
	reply->option = cpu_to_be32(option);
	reply->type = cpu_to_be32(type);
	reply->len = cpu_to_be32(len);
}

/*
 * Parse the data of KNBD_NBD_OPT_INFO / KNBD_NBD_OPT_GO:
 *   u32 name length, name, u16 number of info requests, u16 each.
 * Returns 0 or the NBD_REP_ERR_* to answer with.  Unknown info requests
 * are ignored as the protocol asks.
 */
u32 knbd_proto_parse_go(const void *data, u32 len, struct knbd_go_req *req)
{
	const u8 *p = data;
	u32 name_len;
	u16 nr, i;

	memset(req, 0, sizeof(*req));
	if (len < 4 + 2)
		return KNBD_NBD_REP_ERR_INVALID;
	name_len = get_unaligned_be32(p);
	if (name_len > KNBD_NBD_MAX_STRING || name_len > len - 4 - 2)
		return KNBD_NBD_REP_ERR_INVALID;
	nr = get_unaligned_be16(p + 4 + name_len);
	if (len != 4 + name_len + 2 + 2 * (u32)nr)
		return KNBD_NBD_REP_ERR_INVALID;
	if (memchr(p + 4, '\0', name_len))
		return KNBD_NBD_REP_ERR_INVALID;

	req->name = (const char *)p + 4;
	req->name_len = name_len;
	for (i = 0; i < nr; i++) {
		switch (get_unaligned_be16(p + 4 + name_len + 2 + 2 * i)) {
		case KNBD_NBD_INFO_NAME:
			req->want_name = true;
			break;
		case KNBD_NBD_INFO_DESCRIPTION:
			req->want_description = true;
			break;
		case KNBD_NBD_INFO_BLOCK_SIZE:
			req->want_block_size = true;
			break;
		default:
			break;
		}
	}
	return 0;
}

u16 knbd_proto_transmission_flags(const struct knbd_export_info *ei)
{
	u16 flags = KNBD_NBD_FLAG_HAS_FLAGS | KNBD_NBD_FLAG_SEND_FLUSH |
		    KNBD_NBD_FLAG_CAN_MULTI_CONN;

	if (ei->readonly)
		return flags | KNBD_NBD_FLAG_READ_ONLY;
	return flags | KNBD_NBD_FLAG_SEND_FUA | KNBD_NBD_FLAG_SEND_TRIM |
	       KNBD_NBD_FLAG_SEND_WRITE_ZEROES;
}

void knbd_proto_encode_info_export(struct nbd_wire_info_export *info,
				   const struct knbd_export_info *ei)
{
	info->type = cpu_to_be16(KNBD_NBD_INFO_EXPORT);
	info->size = cpu_to_be64(ei->size);
	info->flags = cpu_to_be16(knbd_proto_transmission_flags(ei));
}

void knbd_proto_encode_info_block_size(struct nbd_wire_info_block_size *info,
				       const struct knbd_export_info *ei)
{
	info->type = cpu_to_be16(KNBD_NBD_INFO_BLOCK_SIZE);
	info->min = cpu_to_be32(ei->min_block);
	info->preferred = cpu_to_be32(ei->pref_block);
	info->max = cpu_to_be32(ei->max_block);
}

int knbd_proto_decode_request(const struct nbd_wire_request *wire,
			      struct knbd_cmd *cmd)
{
	if (be32_to_cpu(wire->magic) != KNBD_NBD_MAGIC_REQUEST)
		return -EPROTO;
	cmd->flags = be16_to_cpu(wire->flags);
	cmd->type = be16_to_cpu(wire->type);
	cmd->cookie = be64_to_cpu(wire->cookie);
	cmd->offset = be64_to_cpu(wire->offset);
	cmd->len = be32_to_cpu(wire->len);
	return 0;
}

static u16 knbd_cmd_allowed_flags(u16 type)
{
	switch (type) {
	case KNBD_NBD_CMD_WRITE:
	case KNBD_NBD_CMD_TRIM:
		return KNBD_NBD_CMD_FLAG_FUA;
	case KNBD_NBD_CMD_WRITE_ZEROES:
		return KNBD_NBD_CMD_FLAG_FUA | KNBD_NBD_CMD_FLAG_NO_HOLE;
	default:
		/* FUA means nothing here, but harmless: accept and ignore it. */
		return KNBD_NBD_CMD_FLAG_FUA;
	}
}

/*
 * Decide what to do with a decoded request before any payload is read.
 * The order of the checks fixes which error a request with several faults
 * gets: unknown command, bad flags, read-only, size, alignment, range.
 * Only a WRITE whose payload cannot be bounded is fatal: its bytes would
 * otherwise have to be read and thrown away to find the next header.
 */
enum knbd_req_verdict knbd_proto_check_request(const struct knbd_cmd *cmd,
					       const struct knbd_export_info *ei,
					       u32 *nbd_err)
{
	bool is_write = false;
	u64 end;

	*nbd_err = 0;
	switch (cmd->type) {
	case KNBD_NBD_CMD_DISC:
		return KNBD_REQ_DISC;
	case KNBD_NBD_CMD_WRITE:
		if (cmd->len > KNBD_MAX_REQ_BYTES)
			return KNBD_REQ_FATAL;
		fallthrough;
	case KNBD_NBD_CMD_TRIM:
	case KNBD_NBD_CMD_WRITE_ZEROES:
		is_write = true;
		break;
	case KNBD_NBD_CMD_READ:
		break;
	case KNBD_NBD_CMD_FLUSH:
		/* Offset and length of FLUSH are reserved; clients send 0. */
		if (cmd->flags & ~knbd_cmd_allowed_flags(cmd->type))
			goto einval;
		return KNBD_REQ_OK;
	default:
		goto einval;
	}

	if (cmd->flags & ~knbd_cmd_allowed_flags(cmd->type))
		goto einval;
	if (is_write && ei->readonly) {
		*nbd_err = KNBD_NBD_EPERM;
		return KNBD_REQ_ERROR;
	}
	if (cmd->len == 0)
		goto einval;
	if (cmd->type == KNBD_NBD_CMD_READ && cmd->len > KNBD_MAX_REQ_BYTES)
		goto einval;
	if (ei->min_block > 1 &&
	    ((cmd->offset | cmd->len) & (ei->min_block - 1)))
		goto einval;
	/* The protocol: ENOSPC for writes past the end, EINVAL for read and trim. */
	if (check_add_overflow(cmd->offset, (u64)cmd->len, &end) ||
	    end > ei->size) {
		*nbd_err = is_write && cmd->type != KNBD_NBD_CMD_TRIM ?
			   KNBD_NBD_ENOSPC : KNBD_NBD_EINVAL;
		return KNBD_REQ_ERROR;
	}
	return KNBD_REQ_OK;

einval:
	*nbd_err = KNBD_NBD_EINVAL;
	return KNBD_REQ_ERROR;
}

u32 knbd_proto_payload_len(const struct knbd_cmd *cmd)
{
	return cmd->type == KNBD_NBD_CMD_WRITE ? cmd->len : 0;
}

void knbd_proto_encode_reply(struct nbd_wire_simple_reply *reply, u64 cookie,
			     u32 nbd_err)
{
	reply->magic = cpu_to_be32(KNBD_NBD_MAGIC_SIMPLE_REPLY);
	reply->error = cpu_to_be32(nbd_err);
	reply->cookie = cpu_to_be64(cookie);
}

/* Map a kernel errno from the backing store to the protocol's small set. */
u32 knbd_proto_errno_to_nbd(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -EPERM:
	case -EACCES:
	case -EROFS:
		return KNBD_NBD_EPERM;
	case -ENOMEM:
		return KNBD_NBD_ENOMEM;
	case -EINVAL:
		return KNBD_NBD_EINVAL;
	case -ENOSPC:
	case -EDQUOT:
	case -EFBIG:
		return KNBD_NBD_ENOSPC;
	case -EOPNOTSUPP:
		return KNBD_NBD_ENOTSUP;
	case -ESHUTDOWN:
		return KNBD_NBD_ESHUTDOWN;
	default:
		return KNBD_NBD_EIO;
	}
}

/* The inverse, for errors a peer reports about a forwarded piece. */
int knbd_proto_nbd_to_errno(u32 nbd_err)
{
	switch (nbd_err) {
	case 0:
		return 0;
	case KNBD_NBD_EPERM:
		return -EPERM;
	case KNBD_NBD_ENOMEM:
		return -ENOMEM;
	case KNBD_NBD_EINVAL:
		return -EINVAL;
	case KNBD_NBD_ENOSPC:
		return -ENOSPC;
	case KNBD_NBD_ENOTSUP:
		return -EOPNOTSUPP;
	case KNBD_NBD_ESHUTDOWN:
		return -ESHUTDOWN;
	default:
		return -EIO;
	}
}

const char *knbd_proto_cmd_name(u16 type)
{
	switch (type) {
	case KNBD_NBD_CMD_READ:
		return "READ";
	case KNBD_NBD_CMD_WRITE:
		return "WRITE";
	case KNBD_NBD_CMD_DISC:
		return "DISC";
	case KNBD_NBD_CMD_FLUSH:
		return "FLUSH";
	case KNBD_NBD_CMD_TRIM:
		return "TRIM";
	case KNBD_NBD_CMD_WRITE_ZEROES:
		return "WRITE_ZEROES";
	default:
		return "UNKNOWN";
	}
}

/* ---- server-to-server frames ---- */

void knbd_peer_encode_hdr(struct knbd_peer_hdr *hdr, u16 type, u32 len)
{
	hdr->magic = cpu_to_be32(KNBD_PEER_MAGIC);
	hdr->version = cpu_to_be16(KNBD_PEER_VERSION);
	hdr->type = cpu_to_be16(type);
	hdr->len = cpu_to_be32(len);
}

int knbd_peer_decode_hdr(const struct knbd_peer_hdr *hdr, u16 *type, u32 *len)
{
	if (be32_to_cpu(hdr->magic) != KNBD_PEER_MAGIC)
		return -EPROTO;
	if (be16_to_cpu(hdr->version) != KNBD_PEER_VERSION)
		return -EPROTONOSUPPORT;
	*type = be16_to_cpu(hdr->type);
	*len = be32_to_cpu(hdr->len);
	if (*len > KNBD_PEER_MAX_FRAME)
		return -EMSGSIZE;
	return 0;
}

/*
 * Validate an IO frame whose header announced @frame_len bytes.  The
 * frame must hold exactly the fixed part and a WRITE's payload, so that
 * the stream cannot get out of step.
 */
int knbd_peer_decode_io(const struct knbd_peer_io *io, u32 frame_len,
			struct knbd_cmd *cmd, u64 *epoch, u32 *checksum,
			u32 *handle)
{
	u64 want;

	cmd->cookie = be64_to_cpu(io->cookie);
	cmd->type = be16_to_cpu(io->cmd);
	cmd->flags = be16_to_cpu(io->flags);
	cmd->offset = be64_to_cpu(io->offset);
	cmd->len = be32_to_cpu(io->len);
	*epoch = be64_to_cpu(io->epoch);
	*checksum = be32_to_cpu(io->checksum);
	*handle = be32_to_cpu(io->handle);

	if (*handle >= KNBD_PEER_MAX_HANDLES)
		return -EPROTO;
	switch (cmd->type) {
	case KNBD_NBD_CMD_READ:
	case KNBD_NBD_CMD_WRITE:
		if (!cmd->len || cmd->len > KNBD_MAX_REQ_BYTES)
			return -EPROTO;
		break;
	case KNBD_NBD_CMD_FLUSH:
	case KNBD_NBD_CMD_TRIM:
	case KNBD_NBD_CMD_WRITE_ZEROES:
		break;
	default:
		return -EPROTO;
	}
	want = sizeof(*io) + knbd_proto_payload_len(cmd);
	if (frame_len != want)
		return -EPROTO;
	return 0;
}

/* Validate a BIND frame of @frame_len bytes: a handle and a name. */
int knbd_peer_decode_bind(const struct knbd_peer_bind *bind, u32 frame_len,
			  u32 *handle, u16 *name_len)
{
	*handle = be32_to_cpu(bind->handle);
	*name_len = be16_to_cpu(bind->name_len);
	if (*handle >= KNBD_PEER_MAX_HANDLES)
		return -EPROTO;
	if (!*name_len || *name_len > KNBD_PEER_MAX_NAME)
		return -EPROTO;
	if (frame_len != sizeof(*bind) + *name_len)
		return -EPROTO;
	return 0;
}

/* Is an IO_REPLY of @frame_len bytes consistent with the piece we sent? */
int knbd_peer_check_reply(u32 frame_len, u32 error, u32 status, u16 cmd, u32 len)
{
	u32 want = sizeof(struct knbd_peer_io_reply);

	if (!error && status == KNBD_PEER_OK && cmd == KNBD_NBD_CMD_READ)
		want += len;
	return frame_len == want ? 0 : -EPROTO;
}

/* HELLO, header included, into @buf (KNBD_PEER_HELLO_FRAME bytes); @mac NULL: zero. */
void knbd_peer_encode_hello(void *buf, u32 node_id, u32 group_id, u32 flags,
			    const u8 *nonce, const u8 *mac)
{
	struct knbd_peer_hdr *hdr = buf;
	struct knbd_peer_hello *hello = (struct knbd_peer_hello *)(hdr + 1);

	knbd_peer_encode_hdr(hdr, KNBD_PEER_HELLO, sizeof(*hello));
	hello->node_id = cpu_to_be32(node_id);
	hello->group_id = cpu_to_be32(group_id);
	hello->flags = cpu_to_be32(flags);
	hello->reserved = 0;
	memcpy(hello->nonce, nonce, KNBD_PEER_NONCE_LEN);
	if (mac)
		memcpy(hello->mac, mac, KNBD_PEER_MAC_LEN);
	else
		memset(hello->mac, 0, KNBD_PEER_MAC_LEN);
}

/* The body of a HELLO whose header said HELLO of the right length. */
int knbd_peer_decode_hello(const struct knbd_peer_hello *hello, u32 *id, u32 *group,
			   u32 *flags)
{
	*id = be32_to_cpu(hello->node_id);
	*group = be32_to_cpu(hello->group_id);
	*flags = be32_to_cpu(hello->flags);
	if (*flags & ~KNBD_HELLO_F_KNOWN || hello->reserved)
		return -EPROTO;
	return 0;
}

/*
 * What a MAC of the handshake covers: both ids, the group, the mode and
 * both nonces, under a label naming whose proof it is.  Fixed layout, so
 * both ends and the tests build the same bytes.
 */
void knbd_peer_auth_transcript(struct knbd_peer_auth_transcript *t, bool server,
			       u32 client_id, u32 server_id, u32 group_id, u32 flags,
			       const u8 *client_nonce, const u8 *server_nonce)
{
	static const char labels[2][KNBD_PEER_AUTH_LABEL_LEN] = {
		"knbd3 client", "knbd3 server",
	};

	memcpy(t->label, labels[server], KNBD_PEER_AUTH_LABEL_LEN);
	t->client_id = cpu_to_be32(client_id);
	t->server_id = cpu_to_be32(server_id);
	t->group_id = cpu_to_be32(group_id);
	t->flags = cpu_to_be32(flags);
	memcpy(t->client_nonce, client_nonce, KNBD_PEER_NONCE_LEN);
	memcpy(t->server_nonce, server_nonce, KNBD_PEER_NONCE_LEN);
}
