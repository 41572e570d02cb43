// SPDX-License-Identifier: GPL-2.0
/*
 * Member authentication: the group key and the MACs of the member
 * handshake (peer_proto.h).  Both ends prove they hold the key with an
 * HMAC-SHA256 over both fresh nonces, so a stranger who reaches the member
 * port learns nothing it could replay, and a recorded handshake is worth
 * nothing on the next connection.
 *
 * The key is set through configfs while the node is disabled, never read
 * back; enable makes the transform.  A node with peers and no key refuses
 * to enable unless the admin asked for insecure_peers.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <crypto/algapi.h>
#include <crypto/hash.h>
#include <linux/ctype.h>
#include <linux/err.h>
#include <linux/kernel_read_file.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/vmalloc.h>

#include "knbd.h"

/* A key file holds the key in hex; anything much longer is not one. */
#define KNBD_KEY_FILE_MAX	1024

/* @text (no NUL needed): hex digits, surrounding whitespace ignored. */
static int knbd_auth_parse_hex(const char *text, size_t len, u8 *key, u8 *key_len,
			       const char **why)
{
	while (len && isspace(*text)) {
		text++;
		len--;
	}
	while (len && isspace(text[len - 1]))
		len--;
	if (len % 2 || len / 2 < KNBD_GROUP_KEY_MIN || len / 2 > KNBD_GROUP_KEY_MAX) {
		*why = "want 32 to 128 hex digits (16 to 64 bytes)";
		return -EINVAL;
	}
	if (hex2bin(key, text, len / 2)) {
		*why = "not hex";
		return -EINVAL;
	}
	*key_len = len / 2;
	return 0;
}

/*
 * Parse what the admin wrote to group_key: the key in hex, a file holding
 * it in hex (an absolute path), or nothing to remove the key.
 */
int knbd_auth_parse_key(const char *page, size_t count, u8 *key, u8 *key_len,
			const char **why)
{
	void *buf = NULL;
	char *path;
	ssize_t ret;

	if (count && page[count - 1] == '\n')
		count--;
	if (!count) {
		*key_len = 0;
		return 0;
	}
	if (page[0] != '/')
		return knbd_auth_parse_hex(page, count, key, key_len, why);

	path = kstrndup(page, count, GFP_KERNEL);
	if (!path)
		return -ENOMEM;
	ret = kernel_read_file_from_path(path, 0, &buf, KNBD_KEY_FILE_MAX, NULL,
					 READING_UNKNOWN);
	kfree(path);
	if (ret < 0) {
		*why = ret == -EFBIG ? "key file too big" : "cannot read the key file";
		return ret == -EFBIG ? -EINVAL : ret;
	}
	ret = knbd_auth_parse_hex(buf, ret, key, key_len, why);
	memzero_explicit(buf, KNBD_KEY_FILE_MAX);
	vfree(buf);
	return ret;
}

/* Called with state_lock and lock held, before the links start. */
int knbd_auth_start(struct knbd_node *node)
{
	struct crypto_shash *tfm;
	int ret;

	if (!node->group_key_len) {
		if (list_empty(&node->peers) || node->insecure_peers)
			return 0;
		pr_warn("node %s: member links need a group_key (or insecure_peers 1)\n",
			knbd_node_name(node));
		return -ENOKEY;
	}
	tfm = crypto_alloc_shash("hmac(sha256)", 0, 0);
	if (IS_ERR(tfm)) {
		pr_warn("node %s: no hmac(sha256): %pe\n", knbd_node_name(node), tfm);
		return PTR_ERR(tfm);
	}
	ret = crypto_shash_setkey(tfm, node->group_key, node->group_key_len);
	if (ret) {
		crypto_free_shash(tfm);
		return ret;
	}
	node->auth_tfm = tfm;
	return 0;
}

/* Once no link or member connection can use it. */
void knbd_auth_stop(struct knbd_node *node)
{
	crypto_free_shash(node->auth_tfm);
	node->auth_tfm = NULL;
}

/* Serve member links at all: keyed, or insecure by the admin's choice. */
bool knbd_auth_enabled(const struct knbd_node *node)
{
	return node->auth_tfm || node->insecure_peers;
}

/* The HELLO flags this node sends and expects. */
u32 knbd_auth_flags(const struct knbd_node *node)
{
	return node->auth_tfm ? 0 : KNBD_HELLO_F_INSECURE;
}

void knbd_auth_nonce(u8 *nonce)
{
	get_random_bytes(nonce, KNBD_PEER_NONCE_LEN);
}

/* The MAC of one side; all zero on an insecure node. */
int knbd_auth_mac(struct knbd_node *node, bool server, u32 client_id, u32 server_id,
		  const u8 *client_nonce, const u8 *server_nonce, u8 *mac)
{
	struct knbd_peer_auth_transcript t;

	if (!node->auth_tfm) {
		memset(mac, 0, KNBD_PEER_MAC_LEN);
		return 0;
	}
	knbd_peer_auth_transcript(&t, server, client_id, server_id, node->group_id,
				  knbd_auth_flags(node), client_nonce, server_nonce);
	return crypto_shash_tfm_digest(node->auth_tfm, (const u8 *)&t, sizeof(t), mac);
}

/* Does @mac prove the other side holds our key?  In constant time. */
bool knbd_auth_verify(struct knbd_node *node, bool server, u32 client_id, u32 server_id,
		      const u8 *client_nonce, const u8 *server_nonce, const u8 *mac)
{
	u8 want[KNBD_PEER_MAC_LEN];
	bool ok;

	if (knbd_auth_mac(node, server, client_id, server_id, client_nonce,
			  server_nonce, want))
		return false;
	ok = !crypto_memneq(want, mac, KNBD_PEER_MAC_LEN);
	memzero_explicit(want, sizeof(want));
	return ok;
}
