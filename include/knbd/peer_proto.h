/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Server-to-server wire format between knbd members (big endian).
 *
 * Every frame starts with struct knbd_peer_hdr; len counts the bytes that
 * follow it.  The connecting member sends HELLO first, the accepting one
 * answers with its own HELLO; then the connecting side sends AUTH, then IO
 * frames, and the accepting side answers each with an IO_REPLY carrying
 * the cookie.
 *
 * Version 3 authenticates both ends with the group key (HMAC-SHA256, a
 * challenge-response over fresh nonces): the client's HELLO carries its
 * nonce; the server's HELLO its own nonce and the MAC proving it knows the
 * key; AUTH the client's MAC.  The two MACs are over the same transcript
 * (knbd_peer_auth_transcript()) but a different role label, so neither
 * can be replayed as the other.  The server reads nothing but AUTH until
 * the client is proven, and reveals nothing but its ids and nonce before.
 * A group without a key (insecure_peers) sends KNBD_HELLO_F_INSECURE and
 * zero MACs; a keyed member refuses it.
 *
 * Version 2 names the volume of an IO frame by a handle, not by its name:
 * before the first IO frame of a volume on a link, the connecting side
 * sends BIND (handle, name) once; TCP keeps it ahead of the IO frames that
 * use it.  A handle the serving side cannot resolve (no enabled volume of
 * that name) answers KNBD_PEER_NO_VOLUME, and the sender binds again.
 */
#ifndef _KNBD_PEER_PROTO_H
#define _KNBD_PEER_PROTO_H

#include <linux/types.h>

#define KNBD_PEER_MAGIC			0x4b4e4244U	/* "KNBD" */
#define KNBD_PEER_VERSION		3

#define KNBD_PEER_HELLO			1
#define KNBD_PEER_IO			2
#define KNBD_PEER_IO_REPLY		3
#define KNBD_PEER_LOAD			4	/* one way, no reply */
#define KNBD_PEER_BIND			5	/* one way, no reply */
#define KNBD_PEER_AUTH			6	/* client's proof, once after HELLO */

/* IO_REPLY status, besides the NBD error. */
#define KNBD_PEER_OK			0
#define KNBD_PEER_NO_VOLUME		1	/* no enabled volume behind the handle */
#define KNBD_PEER_EPOCH_MISMATCH	2	/* routing tables differ */
#define KNBD_PEER_NOT_OWNER		3	/* the range is not ours */
#define KNBD_PEER_BAD_REQUEST		4

#define KNBD_PEER_MAX_NAME		255
#define KNBD_PEER_MAX_HANDLES		64	/* handles are 0..63 */

struct knbd_peer_hdr {
	__be32 magic;
	__be16 version;
	__be16 type;
	__be32 len;
} __packed;

#define KNBD_PEER_NONCE_LEN		32
#define KNBD_PEER_MAC_LEN		32	/* HMAC-SHA256 */

/* knbd_peer_hello::flags */
#define KNBD_HELLO_F_INSECURE		0x1	/* no group key: no MACs */
#define KNBD_HELLO_F_KNOWN		0x1

struct knbd_peer_hello {
	__be32 node_id;
	__be32 group_id;
	__be32 flags;
	__be32 reserved;
	u8 nonce[KNBD_PEER_NONCE_LEN];
	u8 mac[KNBD_PEER_MAC_LEN];	/* server's proof; zero from the client */
} __packed;

struct knbd_peer_auth {
	u8 mac[KNBD_PEER_MAC_LEN];	/* client's proof */
} __packed;

/* What each MAC is computed over (knbd_peer_auth_transcript()). */
#define KNBD_PEER_AUTH_LABEL_LEN	16
struct knbd_peer_auth_transcript {
	u8 label[KNBD_PEER_AUTH_LABEL_LEN];	/* "knbd3 server" or "knbd3 client" */
	__be32 client_id;
	__be32 server_id;
	__be32 group_id;
	__be32 flags;
	u8 client_nonce[KNBD_PEER_NONCE_LEN];
	u8 server_nonce[KNBD_PEER_NONCE_LEN];
} __packed;

/* Followed by name_len bytes of volume name. */
struct knbd_peer_bind {
	__be32 handle;
	__be16 name_len;
	__be16 reserved;
} __packed;

/* Followed by the WRITE payload. */
struct knbd_peer_io {
	__be64 cookie;
	__be64 epoch;
	__be32 checksum;
	__be16 cmd;
	__be16 flags;
	__be64 offset;
	__be32 len;
	__be32 handle;		/* volume, as bound by a BIND frame */
} __packed;

/* Followed by the READ payload when error == 0 and status == OK. */
struct knbd_peer_io_reply {
	__be64 cookie;
	__be32 error;
	__be32 status;
	__be64 epoch;
	__be32 checksum;
	__be32 reserved;
} __packed;

/* knbd_peer_load::flags */
#define KNBD_LOAD_F_SHEDDING		0x1	/* moving client connections away */
#define KNBD_LOAD_F_KNOWN		0x1	/* flags this version understands */

/* A member's load report, sent every load monitor tick. */
struct knbd_peer_load {
	__be32 node_id;
	__be32 seq;
	__be64 load;		/* milli weighted ops per second, clients only */
	__be32 connections;
	__be32 flags;		/* was reserved (0) in the first version */
} __packed;

#endif /* _KNBD_PEER_PROTO_H */
