// SPDX-License-Identifier: GPL-2.0
/*
 * Volumes: enable and disable, the routing table's publication, and the
 * lookups the transports use.  An enabled volume has a percpu_ref: client
 * connections attached to it (GO) and member requests in flight hold one;
 * disable kills it, closes the attached clients and waits for the rest.
 * Member requests name a volume by id (node->vol_by_id, RCU), which holds
 * enabled volumes only.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/slab.h>
#include <linux/string.h>

#include "knbd.h"

static bool knbd_name_eq(struct knbd_volume *vol, const char *name, u32 len)
{
	const char *vname = knbd_vol_name(vol);

	return strlen(vname) == len && !memcmp(vname, name, len);
}

/*
 * An enabled volume by export name; called with node->lock held.  The
 * empty name is the protocol's default export: it names the volume only
 * when the node exports exactly one.
 */
struct knbd_volume *knbd_volume_find(struct knbd_node *node, const char *name, u32 len)
{
	struct knbd_volume *vol, *found = NULL;
	unsigned int enabled = 0;

	lockdep_assert_held(&node->lock);
	list_for_each_entry(vol, &node->volumes, node_entry) {
		if (!vol->enabled)
			continue;
		enabled++;
		if (len && knbd_name_eq(vol, name, len))
			return vol;
		if (!len)
			found = vol;
	}
	return enabled == 1 ? found : NULL;
}

/* Enabled volume @vid if it is still the one of generation @gen, with a reference. */
struct knbd_volume *knbd_volume_get_by_id(struct knbd_node *node, u32 vid, u32 gen)
{
	struct knbd_volume *vol;

	if (vid >= KNBD_MAX_VOLUMES)
		return NULL;
	rcu_read_lock();
	vol = rcu_dereference(node->vol_by_id[vid]);
	if (vol && (vol->gen != gen || !percpu_ref_tryget_live(&vol->ref)))
		vol = NULL;
	rcu_read_unlock();
	return vol;
}

void knbd_volume_put(struct knbd_volume *vol)
{
	percpu_ref_put(&vol->ref);
}

static void knbd_volume_ref_release(struct percpu_ref *ref)
{
	struct knbd_volume *vol = container_of(ref, struct knbd_volume, ref);

	complete(&vol->ref_done);
}

void knbd_volume_init(struct knbd_volume *vol, struct knbd_node *node)
{
	vol->node = node;
	vol->min_block = KNBD_DEFAULT_MIN_BLOCK;
	vol->extent_shift = KNBD_DEFAULT_EXTENT_SHIFT;
	vol->direct_io = KNBD_DIO_AUTO;
	/* never 0: a member's binding of 0 means none */
	vol->gen = atomic_inc_return(&knbd_vol_gen) ?: atomic_inc_return(&knbd_vol_gen);
	init_completion(&vol->ref_done);
}

/* This node's id and its peers' (node->lock held); returns how many. */
static unsigned int knbd_volume_members(struct knbd_node *node, u32 *ids)
{
	struct knbd_peer *peer;
	unsigned int nr = 0;

	lockdep_assert_held(&node->lock);
	ids[nr++] = node->node_id;
	list_for_each_entry(peer, &node->peers, node_entry)
		if (peer->node_id && nr < KNBD_MAX_MEMBERS)
			ids[nr++] = peer->node_id;
	return nr;
}

/*
 * Every member @rt names must be this node or a configured peer: a piece
 * for anyone else could only fail.  Checked when a table is written and
 * again at enable, as a peer may have been removed or renumbered since.
 * @why (@len bytes), if not NULL, gets the reason for routing_status.
 */
static int knbd_volume_check_members(struct knbd_volume *vol, const struct knbd_route *rt,
				     char *why, size_t len)
{
	struct knbd_node *node = vol->node;
	u32 ids[KNBD_MAX_MEMBERS], unknown;
	unsigned int nr = knbd_volume_members(node, ids);
	char reason[96];

	if (knbd_route_members_known(rt, ids, nr, &unknown))
		return 0;
	snprintf(reason, sizeof(reason),
		 "names member %u, which is neither this node (%u) nor a configured peer",
		 unknown, node->node_id);
	pr_warn_ratelimited("%s/%s: routing epoch %llu %s\n", knbd_node_name(node),
			    knbd_vol_name(vol), rt->epoch, reason);
	if (why)
		strscpy(why, reason, len);
	return -EINVAL;
}

/* Called with state_lock and lock held. */
int knbd_volume_enable(struct knbd_volume *vol)
{
	struct knbd_node *node = vol->node;
	struct knbd_route *rt;
	int ret;

	lockdep_assert_held(&node->state_lock);
	lockdep_assert_held(&node->lock);
	ret = knbd_backing_open(vol);
	if (ret)
		return ret;
	rt = rcu_dereference_protected(vol->route, lockdep_is_held(&node->lock));
	if (rt && rt->size != vol->info.size) {
		pr_warn_ratelimited("%s/%s: routing was made for %llu bytes, volume has %llu\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), rt->size,
				    vol->info.size);
		ret = -EINVAL;
		goto err;
	}
	/* A peer the table names may have gone since it was written. */
	if (rt) {
		ret = knbd_volume_check_members(vol, rt, NULL, 0);
		if (ret)
			goto err;
	}
	ret = percpu_ref_init(&vol->ref, knbd_volume_ref_release, 0, GFP_KERNEL);
	if (ret)
		goto err;
	reinit_completion(&vol->ref_done);
	vol->enabled = true;
	rcu_assign_pointer(node->vol_by_id[vol->vid], vol);
	pr_info("%s/%s: exported, %llu bytes from %s%s (%s)\n",
		knbd_node_name(vol->node), knbd_vol_name(vol),
		vol->info.size, vol->backing_path, vol->readonly ? ", read-only" : "",
		knbd_backing_mode(vol));
	return 0;
err:
	knbd_backing_close(vol);
	return ret;
}

/*
 * Called with state_lock but not lock held: the connections we wait for
 * may need lock to finish a handshake or a member's lookup.  Bounded: the
 * attached clients are shut down, a member's WRITE still receiving its
 * payload lets the volume go at once (knbd_pserve_tick()), member requests
 * executing finish on their own (local I/O only), whatever their
 * connections do.  What is left is backing I/O and forwarded pieces (which
 * have deadlines): if that hangs, say so.
 */
void knbd_volume_disable(struct knbd_volume *vol)
{
	struct knbd_node *node = vol->node;
	unsigned int waited = 0;

	lockdep_assert_held(&node->state_lock);
	mutex_lock(&node->lock);
	vol->enabled = false;
	RCU_INIT_POINTER(node->vol_by_id[vol->vid], NULL);
	mutex_unlock(&node->lock);
	/* Dying before the kick: the member connections' io_work sees it. */
	percpu_ref_kill(&vol->ref);
	knbd_node_close_conns(node, vol);
	knbd_node_kick_members(node);
	while (!wait_for_completion_timeout(&vol->ref_done, 10 * HZ)) {
		waited += 10;
		pr_warn("%s/%s: disabling, requests still in flight after %u s: backing I/O (or a forwarded piece) not completing\n",
			knbd_node_name(node), knbd_vol_name(vol), waited);
	}
	percpu_ref_exit(&vol->ref);
	knbd_backing_close(vol);
	pr_info("%s/%s: disabled\n", knbd_node_name(vol->node), knbd_vol_name(vol));
}

/*
 * The safety rail: knbd moves no data, so a table that gives an extent of
 * an enabled volume to another owner changes what its clients read there.
 * Refused unless written to routing_force.  A disabled volume has no
 * clients to surprise; a new epoch with the same owners is harmless.
 */
static int knbd_volume_check_moves(struct knbd_volume *vol, const struct knbd_route *old,
				   const struct knbd_route *rt, bool force,
				   char *why, size_t len)
{
	struct knbd_node *node = vol->node;
	struct knbd_route_move mv;
	const char *what;
	u64 moved, epoch;

	if (!vol->enabled)
		return 0;
	moved = knbd_route_diff(old, rt, node->node_id, &mv);
	if (!moved)
		return 0;
	/* No new table: the old one is removed, every extent comes back here. */
	what = rt ? "" : "removal, ";
	epoch = rt ? rt->epoch : old->epoch;
	if (!force) {
		snprintf(why, len,
			 "it moves %llu extent(s) of the enabled volume, first extent %llu (offset %llu) from member %u to member %u; knbd moves no data, write the table to routing_force to publish it anyway",
			 moved, mv.extent, mv.offset, mv.from, mv.to);
		pr_warn_ratelimited("%s/%s: routing %sepoch %llu refused: %s\n",
				    knbd_node_name(node), knbd_vol_name(vol), what, epoch, why);
		return -EBUSY;
	}
	pr_warn("%s/%s: routing_force: %sepoch %llu moves %llu extent(s), first extent %llu (offset %llu) from member %u to member %u, without moving their data: clients see the new owners' content\n",
		knbd_node_name(node), knbd_vol_name(vol), what, epoch, moved, mv.extent, mv.offset,
		mv.from, mv.to);
	return 0;
}

/* Only blanks: the table is removed.  @text need not be NUL terminated. */
static bool knbd_route_text_blank(const char *text, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n')
			return false;
	return true;
}

/*
 * Parse @text into *@rt for @vol (NULL: blank text, no table); node->lock
 * held.  On error @why gets the reason and the log says it too.
 */
static int knbd_volume_parse_route(struct knbd_volume *vol, const char *text, size_t count,
				   struct knbd_route **rt, char *why, size_t len)
{
	struct knbd_node *node = vol->node;
	u64 size = vol->enabled ? vol->info.size : vol->size_cfg;
	const char *reason;
	int ret;

	*rt = NULL;
	if (count > KNBD_ROUTE_TEXT_MAX) {
		snprintf(why, len, "table text of %zu bytes, more than %u", count,
			 KNBD_ROUTE_TEXT_MAX);
		pr_warn_ratelimited("%s/%s: routing: %s\n", knbd_node_name(node),
				    knbd_vol_name(vol), why);
		return -EFBIG;
	}
	if (knbd_route_text_blank(text, count))
		return 0;
	if (!size) {
		strscpy(why, "set size before routing", len);
		pr_warn_ratelimited("%s/%s: %s\n", knbd_node_name(node), knbd_vol_name(vol), why);
		return -EINVAL;
	}
	*rt = knbd_route_parse(text, count, size, vol->extent_shift, &reason);
	if (!IS_ERR(*rt))
		return 0;
	ret = PTR_ERR(*rt);
	*rt = NULL;
	strscpy(why, ret == -EINVAL ? reason : "out of memory", len);
	pr_warn_ratelimited("%s/%s: routing: %s\n", knbd_node_name(node), knbd_vol_name(vol), why);
	return ret;
}

/*
 * routing_status: "ok epoch N", "ok removed" or "refused: <reason> (<errno
 * name>)".  node->lock held.
 */
static void knbd_volume_route_outcome(struct knbd_volume *vol, const struct knbd_route *rt,
				      int err, const char *why)
{
	char name[24];

	lockdep_assert_held(&vol->node->lock);
	if (!err && rt) {
		snprintf(vol->route_status, sizeof(vol->route_status), "ok epoch %llu", rt->epoch);
	} else if (!err) {
		strscpy(vol->route_status, "ok removed", sizeof(vol->route_status));
	} else {
		snprintf(name, sizeof(name), "%pe", ERR_PTR(err));
		snprintf(vol->route_status, sizeof(vol->route_status), "refused: %s (%s)", why,
			 name[0] == '-' ? name + 1 : name);
	}
}

/*
 * Publish a routing table (see route.c for the format) at once, also while
 * the volume serves: that is how a group moves to a new epoch.  Blank text
 * removes the table (every extent local).  Readers hold RCU only.  @force:
 * written to routing_force, owner changes of an enabled volume allowed.
 * @text need not be NUL terminated (routing_table hands its buffer).  The
 * outcome is kept for routing_status.
 */
int knbd_volume_set_route(struct knbd_volume *vol, const char *text, size_t count,
			  bool force)
{
	struct knbd_node *node = vol->node;
	struct knbd_route *rt, *old;
	char why[KNBD_ROUTE_STATUS_LEN - 32];
	int ret;

	mutex_lock(&node->lock);
	ret = knbd_volume_parse_route(vol, text, count, &rt, why, sizeof(why));
	if (ret)
		goto refused;
	old = rcu_dereference_protected(vol->route, lockdep_is_held(&node->lock));
	if (rt && old && rt->epoch < old->epoch) {
		snprintf(why, sizeof(why), "epoch %llu is older than the current %llu",
			 rt->epoch, old->epoch);
		pr_warn_ratelimited("%s/%s: routing %s\n", knbd_node_name(node),
				    knbd_vol_name(vol), why);
		ret = -EINVAL;
		goto refused;
	}
	if (rt) {
		ret = knbd_volume_check_members(vol, rt, why, sizeof(why));
		if (ret)
			goto refused;
	}
	ret = knbd_volume_check_moves(vol, old, rt, force, why, sizeof(why));
	if (ret)
		goto refused;
	rcu_assign_pointer(vol->route, rt);
	knbd_volume_route_outcome(vol, rt, 0, NULL);
	/* under the lock: the next writer may free @rt as soon as it is dropped */
	if (rt)
		pr_info("%s/%s: routing epoch %llu checksum %08x, %u extents, this member (%u) owns %llu\n",
			knbd_node_name(node), knbd_vol_name(vol), rt->epoch, rt->checksum,
			rt->nr_extents,
			node->node_id, knbd_route_count(rt, node->node_id));
	mutex_unlock(&node->lock);
	if (old) {
		synchronize_rcu();
		knbd_route_free(old);
	}
	return 0;
refused:
	knbd_volume_route_outcome(vol, NULL, ret, why);
	mutex_unlock(&node->lock);
	knbd_route_free(rt);
	return ret;
}
