// SPDX-License-Identifier: GPL-2.0
/*
 * configfs interface, modelled on nvmet:
 *
 *   /sys/kernel/config/knbd/nodes/<node>/{listen_addr,listen_port,
 *       max_connections,enable,clients}
 *   /sys/kernel/config/knbd/nodes/<node>/volumes/<vol>/{backing_path,size,
 *       block_size,readonly,description,enable,stats}
 *
 * (Documentation/configfs.md and Documentation/ABI/testing/configfs-knbd
 * list them all.)  clients and routing_table are binary attributes: they
 * read whole at any size, configfs asking first for the size (a NULL
 * buffer) and then filling a buffer of that size (knbd_cfg_pad()).
 *
 * Attributes that shape a live object return -EBUSY while it is enabled;
 * values that make no sense return -EINVAL, with the reason in the log.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/inet.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/wait_bit.h>

#include "knbd.h"

static inline struct knbd_node *to_knbd_node(struct config_item *item)
{
	return container_of(to_config_group(item), struct knbd_node, group);
}

static inline struct knbd_volume *to_knbd_volume(struct config_item *item)
{
	return container_of(to_config_group(item), struct knbd_volume, group);
}

static const struct config_item_type knbd_volume_type;
static const struct config_item_type knbd_peer_type;

/*
 * Where a refused value was written, for the log: "node", "node/volume"
 * or "node/peers/peer" (volumes and peers sit two levels under their node).
 */
static const char *knbd_cfg_node(struct config_item *item)
{
	if ((item->ci_type == &knbd_volume_type || item->ci_type == &knbd_peer_type) &&
	    item->ci_parent && item->ci_parent->ci_parent)
		return config_item_name(item->ci_parent->ci_parent);
	return NULL;
}

static const char *knbd_cfg_sep(struct config_item *item)
{
	if (!knbd_cfg_node(item))
		return "";
	return item->ci_type == &knbd_peer_type ? "/peers/" : "/";
}

#define knbd_cfg_warn(item, fmt, ...)						\
	do {									\
		struct config_item *__it = (item);				\
										\
		pr_warn_ratelimited("%s%s%s: " fmt, knbd_cfg_node(__it) ?: "",	\
				    knbd_cfg_sep(__it), config_item_name(__it),	\
				    ##__VA_ARGS__);				\
	} while (0)

/*
 * A boolean attribute takes 0/1 (y/n, on/off) as the whole value, a
 * trailing newline allowed: kstrtobool() alone reads only the first
 * characters, so "nonsense" would be false and "10" true.
 */
static const char * const knbd_bool_true[] = { "1", "y", "Y", "on" };
static const char * const knbd_bool_false[] = { "0", "n", "N", "off" };

static int knbd_parse_bool(const char *page, bool *val)
{
	if (sysfs_match_string(knbd_bool_true, page) >= 0) {
		*val = true;
		return 0;
	}
	if (sysfs_match_string(knbd_bool_false, page) >= 0) {
		*val = false;
		return 0;
	}
	return -EINVAL;
}

/* A number in min..max, base 10 ("010" is ten), or EINVAL with the reason logged. */
static int knbd_cfg_u32(struct config_item *item, const char *page, u32 min, u32 max,
			const char *what, const char *unit, u32 *val)
{
	if (kstrtou32(page, 10, val) || *val < min || *val > max) {
		knbd_cfg_warn(item, "%s must be %u..%u%s\n", what, min, max, unit);
		return -EINVAL;
	}
	return 0;
}

/*
 * A byte count in base 10 with an optional K/M/G/T suffix (powers of 2):
 * memparse() would read "010" as 8 and "0x10" as 16.
 */
static int knbd_parse_size(const char *page, u64 *val)
{
	size_t len = strcspn(page, "\n");
	unsigned int shift = 0;
	char buf[24];
	u64 v;

	if (!len || len >= sizeof(buf) || (page[len] && page[len + 1]))
		return -EINVAL;
	memcpy(buf, page, len);
	buf[len] = '\0';
	switch (buf[len - 1]) {
	case 'k': case 'K':
		shift = 10;
		break;
	case 'm': case 'M':
		shift = 20;
		break;
	case 'g': case 'G':
		shift = 30;
		break;
	case 't': case 'T':
		shift = 40;
		break;
	}
	if (shift)
		buf[len - 1] = '\0';
	if (kstrtou64(buf, 10, &v) || v > (U64_MAX >> shift))
		return -EINVAL;
	*val = v << shift;
	return 0;
}

/*
 * configfs shows a binary attribute's buffer whole, at the size the first
 * read() call returned, whatever the second one filled: what changed in
 * between (connections closed, a shorter table) leaves @len < @size.  Pad
 * with blanks so that the text stays whole lines: the last line gets
 * trailing blanks (a lone blank line if there was none).
 */
static void knbd_cfg_pad(char *buf, size_t len, size_t size)
{
	if (len >= size)
		return;
	if (len && buf[len - 1] == '\n')
		len--;
	memset(buf + len, ' ', size - len - 1);
	buf[size - 1] = '\n';
}

/* ---- volume attributes ---- */

static ssize_t knbd_volume_backing_path_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret;

	mutex_lock(&vol->node->lock);
	ret = sysfs_emit(page, "%s\n", vol->backing_path ?: "");
	mutex_unlock(&vol->node->lock);
	return ret;
}

/* Copy a user string without its trailing newline; NULL-safe length check. */
static char *knbd_strdup_line(const char *page, size_t count, size_t max)
{
	size_t len = strcspn(page, "\n");

	if (len > count)
		len = count;
	if (len > max)
		return ERR_PTR(-EINVAL);
	return kmemdup_nul(page, len, GFP_KERNEL) ?: ERR_PTR(-ENOMEM);
}

static ssize_t knbd_volume_backing_path_store(struct config_item *item,
					      const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	char *path;
	ssize_t ret = count;

	path = knbd_strdup_line(page, count, PATH_MAX - 1);
	if (IS_ERR(path)) {
		knbd_cfg_warn(item, "backing_path too long\n");
		return PTR_ERR(path);
	}
	if (path[0] != '/') {
		knbd_cfg_warn(item, "backing_path must be absolute\n");
		kfree(path);
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled) {
		knbd_cfg_warn(item, "cannot change backing_path while enabled\n");
		ret = -EBUSY;
	} else {
		swap(vol->backing_path, path);
	}
	mutex_unlock(&vol->node->lock);
	kfree(path);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, backing_path);

static ssize_t knbd_volume_size_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);

	return sysfs_emit(page, "%llu\n", vol->enabled ? vol->info.size :
			  vol->size_cfg);
}

static ssize_t knbd_volume_size_store(struct config_item *item,
				      const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	u64 size;
	ssize_t ret = count;

	if (knbd_parse_size(page, &size)) {
		knbd_cfg_warn(item, "size: not a number (base 10, K/M/G/T suffix)\n");
		return -EINVAL;
	}
	if (size > (u64)LLONG_MAX) {
		knbd_cfg_warn(item, "size: too large\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled) {
		knbd_cfg_warn(item, "cannot change size while enabled\n");
		ret = -EBUSY;
	} else {
		vol->size_cfg = size;
	}
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, size);

static ssize_t knbd_volume_block_size_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_volume(item)->min_block);
}

static ssize_t knbd_volume_block_size_store(struct config_item *item,
					    const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret = count;
	u32 bs;

	if (kstrtou32(page, 10, &bs) || !is_power_of_2(bs) ||
	    bs > KNBD_MAX_MIN_BLOCK) {
		knbd_cfg_warn(item, "block_size must be a power of two from 1 to %u\n",
			      KNBD_MAX_MIN_BLOCK);
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled) {
		knbd_cfg_warn(item, "cannot change block_size while enabled\n");
		ret = -EBUSY;
	} else {
		vol->min_block = bs;
	}
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, block_size);

static ssize_t knbd_volume_readonly_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", to_knbd_volume(item)->readonly);
}

static ssize_t knbd_volume_readonly_store(struct config_item *item,
					  const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret = count;
	bool ro;

	if (knbd_parse_bool(page, &ro)) {
		knbd_cfg_warn(item, "readonly must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled) {
		knbd_cfg_warn(item, "cannot change readonly while enabled\n");
		ret = -EBUSY;
	} else {
		vol->readonly = ro;
	}
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, readonly);

static ssize_t knbd_volume_description_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret;

	mutex_lock(&vol->node->lock);
	ret = sysfs_emit(page, "%s\n", vol->description ?: "");
	mutex_unlock(&vol->node->lock);
	return ret;
}

/* The description may change while enabled: new sessions see the new one. */
static ssize_t knbd_volume_description_store(struct config_item *item,
					     const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	char *desc;

	desc = knbd_strdup_line(page, count, KNBD_NBD_MAX_STRING);
	if (IS_ERR(desc)) {
		knbd_cfg_warn(item, "description longer than %d bytes\n",
			      KNBD_NBD_MAX_STRING);
		return PTR_ERR(desc);
	}
	if (!desc[0]) {
		kfree(desc);
		desc = NULL;
	}
	mutex_lock(&vol->node->lock);
	swap(vol->description, desc);
	mutex_unlock(&vol->node->lock);
	kfree(desc);
	return count;
}
CONFIGFS_ATTR(knbd_volume_, description);

static const char * const knbd_dio_names[] = {
	[KNBD_DIO_AUTO]	= "auto",
	[KNBD_DIO_OFF]	= "0",
	[KNBD_DIO_ON]	= "1",
};

static ssize_t knbd_volume_direct_io_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%s\n", knbd_dio_names[to_knbd_volume(item)->direct_io]);
}

/*
 * auto: bios for a block device, O_DIRECT for a file that has it;
 * 0: the page cache; 1: direct, or enabling fails.
 */
static ssize_t knbd_volume_direct_io_store(struct config_item *item,
					   const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	int mode = sysfs_match_string(knbd_dio_names, page);
	ssize_t ret = count;

	if (mode < 0) {
		knbd_cfg_warn(item, "direct_io must be auto, 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled) {
		knbd_cfg_warn(item, "cannot change direct_io while enabled\n");
		ret = -EBUSY;
	} else {
		vol->direct_io = mode;
	}
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, direct_io);

static ssize_t knbd_volume_extent_size_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%llu\n", 1ULL << to_knbd_volume(item)->extent_shift);
}

static ssize_t knbd_volume_extent_size_store(struct config_item *item,
					     const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret = count;
	u64 es;

	if (knbd_parse_size(page, &es) || !is_power_of_2(es) ||
	    es < (1ULL << KNBD_EXTENT_MIN_SHIFT) || es > (1ULL << KNBD_EXTENT_MAX_SHIFT)) {
		knbd_cfg_warn(item, "extent_size must be a power of two from 64K to 1G\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (vol->enabled || rcu_access_pointer(vol->route)) {
		knbd_cfg_warn(item, "cannot change extent_size while enabled or routed\n");
		ret = -EBUSY;
	} else {
		vol->extent_shift = ilog2(es);
	}
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_volume_, extent_size);

static ssize_t knbd_volume_routing_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_route *rt;
	ssize_t len = 0;

	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	if (rt)
		len = knbd_route_format(rt, page, PAGE_SIZE);
	rcu_read_unlock();
	return len;
}

/*
 * Writing a table publishes it at once (knbd_volume_set_route()), unless
 * it changes the owner of an extent of the enabled volume.  A read longer
 * than a page ends in "# ... N more lines: read routing_table".
 */
static ssize_t knbd_volume_routing_store(struct config_item *item,
					 const char *page, size_t count)
{
	return knbd_volume_set_route(to_knbd_volume(item), page, count, false) ?: count;
}
CONFIGFS_ATTR(knbd_volume_, routing);

static ssize_t knbd_volume_allowed_hosts_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t len;

	rcu_read_lock();
	len = knbd_acl_format(rcu_dereference(vol->acl), page, PAGE_SIZE);
	rcu_read_unlock();
	return len;
}

/*
 * May change while enabled: handshakes that follow see the new list,
 * connections already attached stay (as an NFS export change would).
 */
static ssize_t knbd_volume_allowed_hosts_store(struct config_item *item,
					       const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_acl *acl;
	const char *why;

	acl = knbd_acl_parse(page, count, &why);
	if (IS_ERR(acl)) {
		if (why)
			knbd_cfg_warn(item, "allowed_hosts: %s\n", why);
		return PTR_ERR(acl);
	}
	mutex_lock(&vol->node->lock);
	acl = rcu_replace_pointer(vol->acl, acl, lockdep_is_held(&vol->node->lock));
	mutex_unlock(&vol->node->lock);
	if (acl)
		kfree_rcu(acl, rcu);
	return count;
}
CONFIGFS_ATTR(knbd_volume_, allowed_hosts);
/* The same, owner changes allowed: the admin takes the data loss. */
static ssize_t knbd_volume_routing_force_store(struct config_item *item,
					       const char *page, size_t count)
{
	return knbd_volume_set_route(to_knbd_volume(item), page, count, true) ?: count;
}
CONFIGFS_ATTR_WO(knbd_volume_, routing_force);

/*
 * routing_table: the same table at any size.  read(NULL) sizes it; the
 * second read prints into a bounce buffer (the printer wants room for a
 * NUL) whatever table is current then: another one may have been
 * published in between, cut ("# ...") or padded to the size asked.
 */
static ssize_t knbd_volume_routing_table_read(struct config_item *item, void *buf,
					      size_t size)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_route *rt;
	char *text = NULL;
	size_t len = 0;

	if (buf) {
		text = kvmalloc(size + 1, GFP_KERNEL);
		if (!text)
			return -ENOMEM;
	}
	/*
	 * RCU, as routing_show: a reader (any user may read) must not hold
	 * node->lock, which handshakes and the load monitor take.
	 */
	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	if (rt && !buf)
		len = knbd_route_format_len(rt);
	else if (rt)
		len = knbd_route_format(rt, text, size + 1);
	rcu_read_unlock();
	if (!buf)
		return len;
	memcpy(buf, text, len);
	kvfree(text);
	knbd_cfg_pad(buf, len, size);
	return size;
}

/*
 * Called at close(2) with everything written (configfs buffers it):
 * published as through routing, refused for the same reasons; configfs
 * drops the return value, hence routing_status.
 */
static ssize_t knbd_volume_routing_table_write(struct config_item *item, const void *buf,
					       size_t count)
{
	return knbd_volume_set_route(to_knbd_volume(item), buf, count, false) ?: count;
}

/* Writes beyond KNBD_ROUTE_TEXT_MAX are refused; reads get the header too. */
CONFIGFS_BIN_ATTR(knbd_volume_, routing_table, NULL, KNBD_ROUTE_TEXT_MAX + PAGE_SIZE);

static ssize_t knbd_volume_routing_status_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	ssize_t ret;

	mutex_lock(&vol->node->lock);
	ret = sysfs_emit(page, "%s\n", vol->route_status[0] ? vol->route_status : "none");
	mutex_unlock(&vol->node->lock);
	return ret;
}
CONFIGFS_ATTR_RO(knbd_volume_, routing_status);

static ssize_t knbd_volume_enable_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", to_knbd_volume(item)->enabled);
}

static ssize_t knbd_volume_enable_store(struct config_item *item,
					const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	bool enable;
	int ret = 0;

	if (knbd_parse_bool(page, &enable)) {
		knbd_cfg_warn(item, "enable must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->state_lock);
	if (enable && !vol->enabled) {
		mutex_lock(&vol->node->lock);
		ret = knbd_volume_enable(vol);
		mutex_unlock(&vol->node->lock);
	} else if (!enable && vol->enabled) {
		knbd_volume_disable(vol);
	}
	mutex_unlock(&vol->node->state_lock);
	return ret ? ret : count;
}
CONFIGFS_ATTR(knbd_volume_, enable);

static ssize_t knbd_volume_stats_show(struct config_item *item, char *page)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_vol_stats *st = &vol->stats;
	const char *io_path;

	mutex_lock(&vol->node->lock);
	io_path = knbd_backing_mode(vol);
	mutex_unlock(&vol->node->lock);
	return sysfs_emit(page,
			  "reads %lld\nwrites %lld\nread_bytes %lld\nwrite_bytes %lld\n"
			  "flushes %lld\ntrims %lld\nwrite_zeroes %lld\nerrors %lld\n"
			  "local_ios %lld\nforwarded_ios %lld\npeer_ios %lld\n"
			  "epoch_mismatches %lld\nfallback_ios %lld\nio_path %s\n"
			  "lat_us_sum %lld\nlat_ops %lld\n",
			  atomic64_read(&st->reads), atomic64_read(&st->writes),
			  atomic64_read(&st->read_bytes), atomic64_read(&st->write_bytes),
			  atomic64_read(&st->flushes), atomic64_read(&st->trims),
			  atomic64_read(&st->write_zeroes), atomic64_read(&st->errors),
			  atomic64_read(&st->local_ios), atomic64_read(&st->forwarded_ios),
			  atomic64_read(&st->peer_ios), atomic64_read(&st->epoch_mismatches),
			  atomic64_read(&st->fallback_ios), io_path,
			  atomic64_read(&st->lat_us_sum), atomic64_read(&st->lat_ops));
}
CONFIGFS_ATTR_RO(knbd_volume_, stats);

static struct configfs_attribute *knbd_volume_attrs[] = {
	&knbd_volume_attr_backing_path,
	&knbd_volume_attr_size,
	&knbd_volume_attr_block_size,
	&knbd_volume_attr_readonly,
	&knbd_volume_attr_description,
	&knbd_volume_attr_extent_size,
	&knbd_volume_attr_direct_io,
	&knbd_volume_attr_routing,
	&knbd_volume_attr_allowed_hosts,
	&knbd_volume_attr_routing_force,
	&knbd_volume_attr_enable,
	&knbd_volume_attr_stats,
	&knbd_volume_attr_routing_status,
	NULL,
};

static struct configfs_bin_attribute *knbd_volume_bin_attrs[] = {
	&knbd_volume_attr_routing_table,
	NULL,
};

static void knbd_volume_release(struct config_item *item)
{
	struct knbd_volume *vol = to_knbd_volume(item);

	knbd_route_free(rcu_dereference_protected(vol->route, 1));
	knbd_acl_free(rcu_dereference_protected(vol->acl, 1));
	ida_free(&vol->node->vol_ida, vol->vid);
	kfree(vol->backing_path);
	kfree(vol->description);
	kfree(vol);
}

static struct configfs_item_operations knbd_volume_item_ops = {
	.release	= knbd_volume_release,
};

static const struct config_item_type knbd_volume_type = {
	.ct_item_ops	= &knbd_volume_item_ops,
	.ct_attrs	= knbd_volume_attrs,
	.ct_bin_attrs	= knbd_volume_bin_attrs,
	.ct_owner	= THIS_MODULE,
};

static struct config_group *knbd_volume_make(struct config_group *group,
					     const char *name)
{
	struct knbd_node *node = container_of(group, struct knbd_node, volumes_group);
	struct knbd_volume *vol;
	int ret;

	if (strlen(name) > NAME_MAX) {
		pr_warn_ratelimited("%s: volume name longer than %d bytes\n",
				    config_item_name(&node->group.cg_item), NAME_MAX);
		return ERR_PTR(-EINVAL);
	}
	vol = kzalloc(sizeof(*vol), GFP_KERNEL);
	if (!vol)
		return ERR_PTR(-ENOMEM);
	knbd_volume_init(vol, node);
	config_group_init_type_name(&vol->group, name, &knbd_volume_type);

	mutex_lock(&node->lock);
	ret = ida_alloc_max(&node->vol_ida, KNBD_MAX_VOLUMES - 1, GFP_KERNEL);
	if (ret < 0) {
		mutex_unlock(&node->lock);
		pr_warn_ratelimited("node %s: at most %d volumes\n",
				    config_item_name(&node->group.cg_item),
				    KNBD_MAX_VOLUMES);
		kfree(vol);
		return ERR_PTR(ret == -ENOMEM ? ret : -ENOSPC);
	}
	vol->vid = ret;
	list_add_tail(&vol->node_entry, &node->volumes);
	node->nr_volumes++;
	mutex_unlock(&node->lock);
	return &vol->group;
}

static void knbd_volume_drop(struct config_group *group, struct config_item *item)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_node *node = vol->node;

	mutex_lock(&node->state_lock);
	if (vol->enabled)
		knbd_volume_disable(vol);
	mutex_lock(&node->lock);
	list_del(&vol->node_entry);
	node->nr_volumes--;
	mutex_unlock(&node->lock);
	mutex_unlock(&node->state_lock);
	config_item_put(item);
}

static struct configfs_group_operations knbd_volumes_group_ops = {
	.make_group	= knbd_volume_make,
	.drop_item	= knbd_volume_drop,
};

static const struct config_item_type knbd_volumes_type = {
	.ct_group_ops	= &knbd_volumes_group_ops,
	.ct_owner	= THIS_MODULE,
};

/* ---- peers: links to the other members ---- */

static inline struct knbd_peer *to_knbd_peer(struct config_item *item)
{
	return container_of(to_config_group(item), struct knbd_peer, group);
}

static ssize_t knbd_peer_addr_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%pISc\n", &to_knbd_peer(item)->addr);
}

static ssize_t knbd_peer_addr_store(struct config_item *item, const char *page,
				    size_t count)
{
	struct knbd_peer *peer = to_knbd_peer(item);
	struct sockaddr_storage ss = { };
	ssize_t ret = count;
	char *addr;

	addr = knbd_strdup_line(page, count, INET6_ADDRSTRLEN);
	if (IS_ERR(addr)) {
		if (PTR_ERR(addr) == -ENOMEM)
			return -ENOMEM;
		knbd_cfg_warn(item, "addr longer than %d characters: not an IPv4 or IPv6 address\n",
			      INET6_ADDRSTRLEN);
		return -EINVAL;
	}
	ret = inet_pton_with_scope(&init_net, AF_UNSPEC, addr, NULL, &ss);
	kfree(addr);
	if (ret) {
		knbd_cfg_warn(item, "addr is not an IPv4 or IPv6 address\n");
		return -EINVAL;
	}
	ret = count;
	mutex_lock(&peer->node->lock);
	if (peer->node->enabled) {
		knbd_cfg_warn(item, "cannot change a peer while the node is enabled\n");
		ret = -EBUSY;
	} else {
		peer->addr = ss;
	}
	mutex_unlock(&peer->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_peer_, addr);

static ssize_t knbd_peer_port_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_peer(item)->port);
}

static ssize_t knbd_peer_port_store(struct config_item *item, const char *page,
				    size_t count)
{
	struct knbd_peer *peer = to_knbd_peer(item);
	ssize_t ret = count;
	u16 port;

	if (kstrtou16(page, 10, &port) || !port) {
		knbd_cfg_warn(item, "port must be 1..65535\n");
		return -EINVAL;
	}
	mutex_lock(&peer->node->lock);
	if (peer->node->enabled) {
		knbd_cfg_warn(item, "cannot change a peer while the node is enabled\n");
		ret = -EBUSY;
	} else {
		peer->port = port;
	}
	mutex_unlock(&peer->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_peer_, port);

static ssize_t knbd_peer_node_id_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_peer(item)->node_id);
}

static ssize_t knbd_peer_node_id_store(struct config_item *item, const char *page,
				       size_t count)
{
	struct knbd_peer *peer = to_knbd_peer(item);
	struct knbd_peer *other;
	ssize_t ret = count;
	u32 id;

	if (kstrtou32(page, 10, &id) || !id) {
		knbd_cfg_warn(item, "node_id must be a number > 0\n");
		return -EINVAL;
	}
	mutex_lock(&peer->node->lock);
	if (peer->node->enabled) {
		knbd_cfg_warn(item, "cannot change a peer while the node is enabled\n");
		ret = -EBUSY;
		goto out;
	}
	if (id == peer->node->node_id) {
		knbd_cfg_warn(item, "node_id %u is this node's own id\n", id);
		ret = -EINVAL;
		goto out;
	}
	list_for_each_entry(other, &peer->node->peers, node_entry) {
		if (other != peer && other->node_id == id) {
			knbd_cfg_warn(item, "node_id %u already used by peer %s\n", id,
				      config_item_name(&other->group.cg_item));
			ret = -EINVAL;
			goto out;
		}
	}
	peer->node_id = id;
out:
	mutex_unlock(&peer->node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_peer_, node_id);

static ssize_t knbd_peer_state_show(struct config_item *item, char *page)
{
	struct knbd_peer *peer = to_knbd_peer(item);
	unsigned int inflight, inflight_max;

	spin_lock_bh(&peer->lock);
	inflight = peer->inflight;
	inflight_max = peer->inflight_max;
	spin_unlock_bh(&peer->lock);
	return sysfs_emit(page,
			  "state %s\ninflight %u\ninflight_max %u\nforwarded %lld\nfailed %lld\nconnects %lld\nepoch_mismatches %lld\n",
			  knbd_peer_state_name(READ_ONCE(peer->state)), inflight, inflight_max,
			  atomic64_read(&peer->forwarded), atomic64_read(&peer->failed),
			  atomic64_read(&peer->connects), atomic64_read(&peer->mismatches));
}
CONFIGFS_ATTR_RO(knbd_peer_, state);

static struct configfs_attribute *knbd_peer_attrs[] = {
	&knbd_peer_attr_addr,
	&knbd_peer_attr_port,
	&knbd_peer_attr_node_id,
	&knbd_peer_attr_state,
	NULL,
};

static void knbd_peer_release(struct config_item *item)
{
	kfree(to_knbd_peer(item));
}

static struct configfs_item_operations knbd_peer_item_ops = {
	.release	= knbd_peer_release,
};

static const struct config_item_type knbd_peer_type = {
	.ct_item_ops	= &knbd_peer_item_ops,
	.ct_attrs	= knbd_peer_attrs,
	.ct_owner	= THIS_MODULE,
};

static struct config_group *knbd_peer_make(struct config_group *group,
					   const char *name)
{
	struct knbd_node *node = container_of(group, struct knbd_node, peers_group);
	struct knbd_peer *peer, *other;
	unsigned int n = 0;

	peer = kzalloc(sizeof(*peer), GFP_KERNEL);
	if (!peer)
		return ERR_PTR(-ENOMEM);
	knbd_peer_init(peer, node);
	config_group_init_type_name(&peer->group, name, &knbd_peer_type);

	mutex_lock(&node->state_lock);
	mutex_lock(&node->lock);
	if (node->enabled) {
		mutex_unlock(&node->lock);
		mutex_unlock(&node->state_lock);
		pr_warn_ratelimited("node %s: add peers while the node is disabled\n",
				    config_item_name(&node->group.cg_item));
		kfree(peer);
		return ERR_PTR(-EBUSY);
	}
	list_for_each_entry(other, &node->peers, node_entry)
		n++;
	if (n >= KNBD_MAX_MEMBERS - 1) {
		mutex_unlock(&node->lock);
		mutex_unlock(&node->state_lock);
		pr_warn_ratelimited("node %s: at most %d peers\n",
				    config_item_name(&node->group.cg_item),
				    KNBD_MAX_MEMBERS - 1);
		kfree(peer);
		return ERR_PTR(-ENOSPC);
	}
	list_add_tail_rcu(&peer->node_entry, &node->peers);
	mutex_unlock(&node->lock);
	mutex_unlock(&node->state_lock);
	return &peer->group;
}

static void knbd_peer_drop(struct config_group *group, struct config_item *item)
{
	struct knbd_peer *peer = to_knbd_peer(item);
	struct knbd_node *node = peer->node;
	struct knbd_volume *vol;
	struct knbd_route *rt;

	mutex_lock(&node->state_lock);
	mutex_lock(&node->lock);
	list_del_rcu(&peer->node_entry);
	/* Tables are checked against the peers when written and at enable only. */
	list_for_each_entry(vol, &node->volumes, node_entry) {
		rt = rcu_dereference_protected(vol->route, lockdep_is_held(&node->lock));
		if (rt && peer->node_id && knbd_route_count(rt, peer->node_id))
			pr_warn("%s/%s: routing epoch %llu names member %u of the removed peer %s: its extents fail until a table without it is published\n",
				config_item_name(&node->group.cg_item),
				config_item_name(&vol->group.cg_item), rt->epoch,
				peer->node_id, config_item_name(item));
	}
	mutex_unlock(&node->lock);
	/*
	 * Unlinked, then a grace period: no forwarder, monitor or load report
	 * (all under RCU) can find it any more.  Only then stop it (which
	 * fails what is queued on it and quiesces its work and timer), and
	 * free it last (config_item_put() -> knbd_peer_release()).
	 */
	synchronize_rcu();
	knbd_peer_stop(peer);
	mutex_unlock(&node->state_lock);
	config_item_put(item);
}

static struct configfs_group_operations knbd_peers_group_ops = {
	.make_group	= knbd_peer_make,
	.drop_item	= knbd_peer_drop,
};

static const struct config_item_type knbd_peers_type = {
	.ct_group_ops	= &knbd_peers_group_ops,
	.ct_owner	= THIS_MODULE,
};

/* ---- node attributes ---- */

static ssize_t knbd_node_listen_addr_show(struct config_item *item, char *page)
{
	struct knbd_node *node = to_knbd_node(item);

	return sysfs_emit(page, "%pISc\n", &node->listen_addr);
}

static ssize_t knbd_node_listen_addr_store(struct config_item *item,
					   const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	struct sockaddr_storage ss;
	char *addr;
	ssize_t ret = count;

	addr = knbd_strdup_line(page, count, INET6_ADDRSTRLEN);
	if (IS_ERR(addr)) {
		knbd_cfg_warn(item, "listen_addr is not an IPv4 or IPv6 address\n");
		return PTR_ERR(addr) == -ENOMEM ? -ENOMEM : -EINVAL;
	}
	memset(&ss, 0, sizeof(ss));
	if (inet_pton_with_scope(&init_net, AF_UNSPEC, addr, NULL, &ss)) {
		knbd_cfg_warn(item, "listen_addr '%s' is not an IPv4 or IPv6 address\n",
			      addr);
		kfree(addr);
		return -EINVAL;
	}
	kfree(addr);
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change listen_addr while enabled\n");
		ret = -EBUSY;
	} else {
		node->listen_addr = ss;
	}
	mutex_unlock(&node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_node_, listen_addr);

static ssize_t knbd_node_listen_port_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->listen_port);
}

static ssize_t knbd_node_listen_port_store(struct config_item *item,
					   const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	u16 port;

	if (kstrtou16(page, 10, &port) || !port) {
		knbd_cfg_warn(item, "listen_port must be 1..65535\n");
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change listen_port while enabled\n");
		ret = -EBUSY;
	} else {
		node->listen_port = port;
	}
	mutex_unlock(&node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_node_, listen_port);

static ssize_t knbd_node_max_connections_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->max_conns);
}

static ssize_t knbd_node_max_connections_store(struct config_item *item,
					       const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	u32 max;

	if (kstrtou32(page, 10, &max) || !max || max > KNBD_MAX_CONNS_LIMIT) {
		knbd_cfg_warn(item, "max_connections must be 1..%d\n",
			      KNBD_MAX_CONNS_LIMIT);
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change max_connections while enabled\n");
		ret = -EBUSY;
	} else {
		WRITE_ONCE(node->max_conns, max);
	}
	mutex_unlock(&node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_node_, max_connections);

static ssize_t knbd_node_max_conns_per_host_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->max_conns_per_host));
}

/* Client connections from one source address; 0: no limit.  Live: new accepts. */
static ssize_t knbd_node_max_conns_per_host_store(struct config_item *item,
						  const char *page, size_t count)
{
	u32 max;

	if (knbd_cfg_u32(item, page, 0, KNBD_MAX_CONNS_LIMIT, "max_conns_per_host",
			 " (0: no limit)", &max))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->max_conns_per_host, max);
	return count;
}
CONFIGFS_ATTR(knbd_node_, max_conns_per_host);

static ssize_t knbd_node_list_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", READ_ONCE(to_knbd_node(item)->allow_list));
}

/* 0: NBD_OPT_LIST is refused with ERR_POLICY, export names stay secret.  Live. */
static ssize_t knbd_node_list_store(struct config_item *item, const char *page,
				    size_t count)
{
	bool on;

	if (knbd_parse_bool(page, &on)) {
		knbd_cfg_warn(item, "list must be 0 or 1\n");
		return -EINVAL;
	}
	WRITE_ONCE(to_knbd_node(item)->allow_list, on);
	return count;
}
CONFIGFS_ATTR(knbd_node_, list);

static ssize_t knbd_node_queue_depth_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->queue_depth));
}

/* Requests in flight per client connection; new connections take a change. */
static ssize_t knbd_node_queue_depth_store(struct config_item *item,
					   const char *page, size_t count)
{
	u32 depth;

	if (knbd_cfg_u32(item, page, 1, KNBD_MAX_QUEUE_DEPTH, "queue_depth", "", &depth))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->queue_depth, depth);
	return count;
}
CONFIGFS_ATTR(knbd_node_, queue_depth);

static ssize_t knbd_node_io_timeout_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->io_timeout));
}

/*
 * Seconds a connection may leave its replies unread, or a request half
 * sent, before it is closed; connections read it as they go.
 */
static ssize_t knbd_node_io_timeout_store(struct config_item *item,
					  const char *page, size_t count)
{
	u32 secs;

	if (knbd_cfg_u32(item, page, 1, KNBD_MAX_IO_TIMEOUT, "io_timeout", " seconds", &secs))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->io_timeout, secs);
	return count;
}
CONFIGFS_ATTR(knbd_node_, io_timeout);

/* Seconds from accept to GO; connections accepted from now on take a change. */
static ssize_t knbd_node_handshake_timeout_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->handshake_timeout));
}

static ssize_t knbd_node_handshake_timeout_store(struct config_item *item,
						 const char *page, size_t count)
{
	u32 secs;

	if (knbd_cfg_u32(item, page, 1, KNBD_MAX_HANDSHAKE_TIMEOUT, "handshake_timeout",
			 " seconds", &secs))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->handshake_timeout, secs);
	return count;
}
CONFIGFS_ATTR(knbd_node_, handshake_timeout);

static ssize_t knbd_node_idle_timeout_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->idle_timeout));
}

/*
 * Seconds a client with nothing in flight may stay silent; 0: forever.
 * Connections idle already arm their timer for it when kicked.
 */
static ssize_t knbd_node_idle_timeout_store(struct config_item *item,
					    const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	struct knbd_conn *conn;
	u32 secs;

	if (knbd_cfg_u32(item, page, 0, KNBD_MAX_IDLE_TIMEOUT, "idle_timeout", " seconds",
			 &secs))
		return -EINVAL;
	WRITE_ONCE(node->idle_timeout, secs);
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry)
		knbd_conn_kick(conn);
	mutex_unlock(&node->conns_lock);
	return count;
}
CONFIGFS_ATTR(knbd_node_, idle_timeout);

static ssize_t knbd_node_max_inflight_mb_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->max_inflight_mb));
}

/*
 * MiB of request payload all connections of the node may pin beyond the
 * one request each is always allowed; live: a lower value holds new
 * requests back until enough have finished.
 */
static ssize_t knbd_node_max_inflight_mb_store(struct config_item *item,
					       const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	u32 mb;

	if (knbd_cfg_u32(item, page, KNBD_MIN_INFLIGHT_MB, KNBD_MAX_INFLIGHT_MB,
			 "max_inflight_mb", "", &mb))
		return -EINVAL;
	spin_lock(&node->budget_lock);
	WRITE_ONCE(node->max_inflight_mb, mb);
	/* More room: the first waiter may fit now. */
	if (!list_empty(&node->budget_waiters))
		knbd_conn_kick(list_first_entry(&node->budget_waiters, struct knbd_conn,
						budget_entry));
	spin_unlock(&node->budget_lock);
	return count;
}
CONFIGFS_ATTR(knbd_node_, max_inflight_mb);

static ssize_t knbd_node_peer_port_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->peer_port);
}

/* 0 disables the listener for other members. */
static ssize_t knbd_node_peer_port_store(struct config_item *item,
					 const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	u16 port;

	if (kstrtou16(page, 10, &port)) {
		knbd_cfg_warn(item, "peer_port must be 0..65535\n");
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change peer_port while enabled\n");
		ret = -EBUSY;
	} else {
		node->peer_port = port;
	}
	mutex_unlock(&node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_node_, peer_port);

static ssize_t knbd_node_u32_store(struct config_item *item, const char *page,
				   size_t count, u32 *field, const char *what)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	u32 val;

	if (kstrtou32(page, 10, &val) || !val) {
		knbd_cfg_warn(item, "%s must be a number > 0\n", what);
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change %s while enabled\n", what);
		ret = -EBUSY;
	} else {
		*field = val;
	}
	mutex_unlock(&node->lock);
	return ret;
}

static ssize_t knbd_node_node_id_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->node_id);
}

static ssize_t knbd_node_node_id_store(struct config_item *item,
				       const char *page, size_t count)
{
	return knbd_node_u32_store(item, page, count, &to_knbd_node(item)->node_id,
				   "node_id");
}
CONFIGFS_ATTR(knbd_node_, node_id);

static ssize_t knbd_node_group_id_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->group_id);
}

static ssize_t knbd_node_group_id_store(struct config_item *item,
					const char *page, size_t count)
{
	return knbd_node_u32_store(item, page, count, &to_knbd_node(item)->group_id,
				   "group_id");
}
CONFIGFS_ATTR(knbd_node_, group_id);

/*
 * The member group key: hex, or the absolute path of a file holding it in
 * hex; an empty write removes it.  Write-only: it is never shown.
 */
static ssize_t knbd_node_group_key_store(struct config_item *item,
					 const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	u8 key[KNBD_GROUP_KEY_MAX], len;
	const char *why = NULL;
	ssize_t ret;

	ret = knbd_auth_parse_key(page, count, key, &len, &why);
	if (ret) {
		if (why)
			knbd_cfg_warn(item, "group_key: %s\n", why);
		else
			knbd_cfg_warn(item, "group_key: %pe\n", ERR_PTR(ret));
		goto out;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change group_key while enabled\n");
		ret = -EBUSY;
	} else {
		memcpy(node->group_key, key, len);
		memzero_explicit(node->group_key + len, sizeof(node->group_key) - len);
		node->group_key_len = len;
		ret = count;
	}
	mutex_unlock(&node->lock);
out:
	memzero_explicit(key, sizeof(key));
	return ret;
}
CONFIGFS_ATTR_WO(knbd_node_, group_key);

static ssize_t knbd_node_insecure_peers_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", to_knbd_node(item)->insecure_peers);
}

static ssize_t knbd_node_insecure_peers_store(struct config_item *item,
					      const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	bool val;

	if (knbd_parse_bool(page, &val)) {
		knbd_cfg_warn(item, "insecure_peers must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_cfg_warn(item, "cannot change insecure_peers while enabled\n");
		ret = -EBUSY;
	} else {
		node->insecure_peers = val;
	}
	mutex_unlock(&node->lock);
	return ret;
}
CONFIGFS_ATTR(knbd_node_, insecure_peers);

/* How member links are authenticated, without showing the key. */
static ssize_t knbd_node_peer_auth_show(struct config_item *item, char *page)
{
	struct knbd_node *node = to_knbd_node(item);
	const char *mode;

	mutex_lock(&node->lock);
	if (node->group_key_len)
		mode = "hmac-sha256";
	else if (node->insecure_peers)
		mode = "none (insecure_peers)";
	else
		mode = "none (member links refused)";
	mutex_unlock(&node->lock);
	return sysfs_emit(page, "%s\n", mode);
}
CONFIGFS_ATTR_RO(knbd_node_, peer_auth);

static ssize_t knbd_node_load_tick_ms_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", to_knbd_node(item)->load_tick_ms);
}

/* May change while enabled: the monitor reads it every tick. */
static ssize_t knbd_node_load_tick_ms_store(struct config_item *item,
					    const char *page, size_t count)
{
	u32 ms;

	if (knbd_cfg_u32(item, page, KNBD_MIN_LOAD_TICK_MS, KNBD_MAX_LOAD_TICK_MS,
			 "load_tick_ms", "", &ms))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->load_tick_ms, ms);
	return count;
}
CONFIGFS_ATTR(knbd_node_, load_tick_ms);

/* Loads are kept in milli weighted ops/s and shown in units, 3 decimals. */
struct knbd_load_str {
	char s[24];
};

static struct knbd_load_str knbd_load_fmt(u64 milli)
{
	struct knbd_load_str out;
	u32 frac;
	u64 whole = div_u64_rem(milli, 1000, &frac);

	snprintf(out.s, sizeof(out.s), "%llu.%03u", whole, frac);
	return out;
}

static ssize_t knbd_node_stats_show(struct config_item *item, char *page)
{
	struct knbd_node *node = to_knbd_node(item);
	unsigned long tick = msecs_to_jiffies(READ_ONCE(node->load_tick_ms));
	unsigned long now = jiffies;
	struct knbd_volume *vol;
	struct knbd_peer *peer;
	u64 l = READ_ONCE(node->load);
	int len;

	len = sysfs_emit(page, "node %u load %s connections %u tick_ms %u\n",
			 node->node_id, knbd_load_fmt(l).s, READ_ONCE(node->client_conns),
			 node->load_tick_ms);
	len += sysfs_emit_at(page, len,
			     "serving_members load %s\nlatency_us %u inflight %u io_timeouts %lld\n",
			     knbd_load_fmt(READ_ONCE(node->peer_load)).s,
			     READ_ONCE(node->lat_us), READ_ONCE(node->inflight),
			     atomic64_read(&node->timeouts));
	len += sysfs_emit_at(page, len,
			     "balance %s state %s smoothed %s moves %lld admin_drains %lld no_fit %lld deferred %lld drain_dropped %lld would_break %lld drain_late %lld\n",
			     READ_ONCE(node->cm_enabled) ? "on" : "off",
			     knbd_cm_verdict_name(READ_ONCE(node->cm_verdict)),
			     knbd_load_fmt(READ_ONCE(node->cm_load)).s,
			     atomic64_read(&node->cm_moves), atomic64_read(&node->cm_drains),
			     atomic64_read(&node->cm_skipped), atomic64_read(&node->cm_deferred),
			     atomic64_read(&node->drain_dropped),
			     atomic64_read(&node->cm_would_break),
			     atomic64_read(&node->drain_late));
	spin_lock(&node->budget_lock);
	len += sysfs_emit_at(page, len,
			     "budget max_mb %u used %llu floor %llu peak %llu waiting %zu waits %lld handshake_timeouts %lld idle_closes %lld\n",
			     READ_ONCE(node->max_inflight_mb),
			     node->budget_used - node->budget_floor, node->budget_floor,
			     node->budget_peak, list_count_nodes(&node->budget_waiters),
			     atomic64_read(&node->budget_waits),
			     atomic64_read(&node->hs_timeouts),
			     atomic64_read(&node->idle_closes));
	spin_unlock(&node->budget_lock);
	rcu_read_lock();
	list_for_each_entry_rcu(peer, &node->peers, node_entry) {
		unsigned long at = READ_ONCE(peer->remote_at);

		l = READ_ONCE(peer->remote_load);
		if (knbd_load_fresh(now, at, tick))
			len += sysfs_emit_at(page, len,
					     "peer %u load %s connections %u age_ms %u%s\n",
					     peer->node_id, knbd_load_fmt(l).s,
					     READ_ONCE(peer->remote_conns),
					     jiffies_to_msecs(now - at),
					     READ_ONCE(peer->remote_flags) & KNBD_LOAD_F_SHEDDING ?
					     " shedding" : "");
		else
			len += sysfs_emit_at(page, len, "peer %u load unknown\n",
					     peer->node_id);
	}
	rcu_read_unlock();
	mutex_lock(&node->lock);
	list_for_each_entry(vol, &node->volumes, node_entry) {
		if (len > PAGE_SIZE - 128)
			break;
		l = READ_ONCE(vol->load);
		len += sysfs_emit_at(page, len, "volume %s load %s\n",
				     config_item_name(&vol->group.cg_item),
				     knbd_load_fmt(l).s);
	}
	mutex_unlock(&node->lock);
	return len;
}
CONFIGFS_ATTR_RO(knbd_node_, stats);

static ssize_t knbd_node_enable_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", to_knbd_node(item)->enabled);
}

static ssize_t knbd_node_enable_store(struct config_item *item,
				      const char *page, size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	bool enable;
	int ret = 0;

	if (knbd_parse_bool(page, &enable)) {
		knbd_cfg_warn(item, "enable must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&node->state_lock);
	if (enable && !node->enabled) {
		mutex_lock(&node->lock);
		ret = knbd_node_enable(node);
		if (!ret)
			node->enabled = true;
		mutex_unlock(&node->lock);
	} else if (!enable && node->enabled) {
		knbd_node_disable(node);
	}
	mutex_unlock(&node->state_lock);
	return ret ? ret : count;
}
CONFIGFS_ATTR(knbd_node_, enable);

/*
 * Connection manager tunables: may change while enabled, the monitor
 * reads them every tick.  threshold >= clear >= 100 always holds.
 */
static ssize_t knbd_node_balance_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", READ_ONCE(to_knbd_node(item)->cm_enabled));
}

static ssize_t knbd_node_balance_store(struct config_item *item,
				       const char *page, size_t count)
{
	bool on;

	if (knbd_parse_bool(page, &on)) {
		knbd_cfg_warn(item, "balance must be 0 or 1\n");
		return -EINVAL;
	}
	WRITE_ONCE(to_knbd_node(item)->cm_enabled, on);
	return count;
}
CONFIGFS_ATTR(knbd_node_, balance);

static ssize_t knbd_node_cm_pct_store(struct config_item *item, const char *page,
				      size_t count, bool threshold)
{
	struct knbd_node *node = to_knbd_node(item);
	ssize_t ret = count;
	u32 pct;

	if (kstrtou32(page, 10, &pct) || pct < 100 || pct > KNBD_CM_MAX_PCT) {
		knbd_cfg_warn(item, "balance_%s_pct must be 100..%d\n",
			      threshold ? "threshold" : "clear", KNBD_CM_MAX_PCT);
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (threshold ? pct < node->cm.clear_pct : pct > node->cm.threshold_pct) {
		knbd_cfg_warn(item, "balance_clear_pct (%u) must not exceed balance_threshold_pct (%u)\n",
			      threshold ? node->cm.clear_pct : pct,
			      threshold ? pct : node->cm.threshold_pct);
		ret = -EINVAL;
	} else if (threshold) {
		WRITE_ONCE(node->cm.threshold_pct, pct);
	} else {
		WRITE_ONCE(node->cm.clear_pct, pct);
	}
	mutex_unlock(&node->lock);
	return ret;
}

static ssize_t knbd_node_balance_threshold_pct_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->cm.threshold_pct));
}

static ssize_t knbd_node_balance_threshold_pct_store(struct config_item *item,
						     const char *page, size_t count)
{
	return knbd_node_cm_pct_store(item, page, count, true);
}
CONFIGFS_ATTR(knbd_node_, balance_threshold_pct);

static ssize_t knbd_node_balance_clear_pct_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->cm.clear_pct));
}

static ssize_t knbd_node_balance_clear_pct_store(struct config_item *item,
						 const char *page, size_t count)
{
	return knbd_node_cm_pct_store(item, page, count, false);
}
CONFIGFS_ATTR(knbd_node_, balance_clear_pct);

static ssize_t knbd_node_cm_ms_store(struct config_item *item, const char *page,
				     size_t count, u32 *field, const char *what)
{
	u32 ms;

	if (knbd_cfg_u32(item, page, 0, KNBD_CM_MAX_MS, what, "", &ms))
		return -EINVAL;
	WRITE_ONCE(*field, ms);
	return count;
}

static ssize_t knbd_node_balance_hold_ms_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->cm.hold_ms));
}

static ssize_t knbd_node_balance_hold_ms_store(struct config_item *item,
					       const char *page, size_t count)
{
	return knbd_node_cm_ms_store(item, page, count, &to_knbd_node(item)->cm.hold_ms,
				     "balance_hold_ms");
}
CONFIGFS_ATTR(knbd_node_, balance_hold_ms);

static ssize_t knbd_node_balance_interval_ms_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(to_knbd_node(item)->cm.interval_ms));
}

static ssize_t knbd_node_balance_interval_ms_store(struct config_item *item,
						   const char *page, size_t count)
{
	return knbd_node_cm_ms_store(item, page, count,
				     &to_knbd_node(item)->cm.interval_ms,
				     "balance_interval_ms");
}
CONFIGFS_ATTR(knbd_node_, balance_interval_ms);

/* In load units (weighted ops/s), like the stats; kept in thousandths. */
static ssize_t knbd_node_balance_min_load_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%llu\n",
			  div_u64(READ_ONCE(to_knbd_node(item)->cm.min_load), 1000));
}

static ssize_t knbd_node_balance_min_load_store(struct config_item *item,
						const char *page, size_t count)
{
	u32 v;

	if (knbd_cfg_u32(item, page, 0, 100000000, "balance_min_load", " (ops/s)", &v))
		return -EINVAL;
	WRITE_ONCE(to_knbd_node(item)->cm.min_load, (u64)v * 1000);
	return count;
}
CONFIGFS_ATTR(knbd_node_, balance_min_load);

/*
 * Which client connections the manager may move: "safe" (those whose
 * client keeps service: connmgr.c's safety rule) or "all" (for groups
 * whose clients all reconnect).
 */
static ssize_t knbd_node_balance_clients_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%s\n",
			  READ_ONCE(to_knbd_node(item)->cm_clients_all) ? "all" : "safe");
}

static ssize_t knbd_node_balance_clients_store(struct config_item *item,
					       const char *page, size_t count)
{
	bool all;

	if (sysfs_streq(page, "safe")) {
		all = false;
	} else if (sysfs_streq(page, "all")) {
		all = true;
	} else {
		knbd_cfg_warn(item, "balance_clients must be safe or all\n");
		return -EINVAL;
	}
	WRITE_ONCE(to_knbd_node(item)->cm_clients_all, all);
	return count;
}
CONFIGFS_ATTR(knbd_node_, balance_clients);

/* Admin: "echo ID > drain" moves client connection ID away gracefully. */
static ssize_t knbd_node_drain_store(struct config_item *item, const char *page,
				     size_t count)
{
	struct knbd_node *node = to_knbd_node(item);
	u64 id;
	int ret;

	if (kstrtou64(page, 10, &id)) {
		knbd_cfg_warn(item, "drain takes a connection id (first column of clients)\n");
		return -EINVAL;
	}
	ret = knbd_conn_drain(node, id, true);
	if (ret == -ENOENT)
		knbd_cfg_warn(item, "no connection %llu\n", id);
	else if (ret == -EINVAL)
		knbd_cfg_warn(item, "connection %llu is a member link, not a client\n", id);
	else if (ret == -EBUSY)
		knbd_cfg_warn(item, "connection %llu is not in transmission (handshake, draining or closing)\n",
			      id);
	else
		pr_info("node %s: admin drains client connection %llu\n",
			config_item_name(item), id);
	return ret ? ret : count;
}
CONFIGFS_ATTR_WO(knbd_node_, drain);

/*
 * Longest clients line: a u64 id, an IPv6 address with scope and port, a
 * volume name (NAME_MAX), the state and five numbers, the client key and
 * its movable verdict (31 bytes): under 500.
 */
#define KNBD_CLIENTS_LINE_MAX	640
/*
 * Room a line may grow by between the sizing and the filling read (the
 * same read(2)): counters gaining digits, a state name getting longer,
 * "client=- movable=-" becoming a key and a verdict.  Without it a line
 * that grew would push the rest of the list out.
 */
#define KNBD_CLIENTS_LINE_SLACK	48
/* Never reached: KNBD_MAX_CONNS_LIMIT clients and the member links. */
#define KNBD_CLIENTS_MAX_SIZE	(64U << 20)

static int knbd_conn_line(struct knbd_conn *conn, char *line)
{
	struct knbd_volume *vol = READ_ONCE(conn->vol);
	u64 load = READ_ONCE(conn->load);
	/* io_work's own count: a gauge, a stale value is as good as any */
	unsigned int inflight = data_race(conn->inflight);
	int n;

	n = scnprintf(line, KNBD_CLIENTS_LINE_MAX,
		      "%llu %pISpc %s state=%s inflight=%u ops=%lld bytes=%lld load=%s lat_us=%u",
		      conn->id, &conn->peer,
		      conn->is_peer ? "(member)" :
		      vol ? config_item_name(&vol->group.cg_item) : "-",
		      knbd_conn_state_name(READ_ONCE(conn->state)),
		      inflight, atomic64_read(&conn->ops),
		      atomic64_read(&conn->bytes), knbd_load_fmt(load).s,
		      READ_ONCE(conn->lat_us));
	/* The key is set before transmission, under conns_lock (held here). */
	if (conn->is_peer || !vol)
		return n + scnprintf(line + n, KNBD_CLIENTS_LINE_MAX - n,
				     " client=- movable=-\n");
	return n + scnprintf(line + n, KNBD_CLIENTS_LINE_MAX - n,
			     " client=%08x movable=%s\n", conn->nbd.client_key,
			     knbd_cm_movable_name(READ_ONCE(conn->nbd.movable)));
}

/*
 * One line per connection, whole at any size.  read(NULL) sizes it, with
 * KNBD_CLIENTS_LINE_SLACK per line; the second read fills whole lines up to
 * @size: connections opened in between are left out, closed ones and the
 * unused slack leave padding (knbd_cfg_pad()).
 */
static ssize_t knbd_node_clients_read(struct config_item *item, void *buf, size_t size)
{
	struct knbd_node *node = to_knbd_node(item);
	struct knbd_conn *conn;
	size_t len = 0;
	char *line;
	int n;

	line = kmalloc(KNBD_CLIENTS_LINE_MAX, GFP_KERNEL);
	if (!line)
		return -ENOMEM;
	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		n = knbd_conn_line(conn, line);
		if (buf) {
			if (len + n > size)
				break;
			memcpy(buf + len, line, n);
		} else {
			n += KNBD_CLIENTS_LINE_SLACK;
		}
		len += n;
	}
	mutex_unlock(&node->conns_lock);
	kfree(line);
	if (!buf)
		return len;
	knbd_cfg_pad(buf, len, size);
	return size;
}
CONFIGFS_BIN_ATTR_RO(knbd_node_, clients, NULL, KNBD_CLIENTS_MAX_SIZE);

static struct configfs_attribute *knbd_node_attrs[] = {
	&knbd_node_attr_listen_addr,
	&knbd_node_attr_listen_port,
	&knbd_node_attr_max_connections,
	&knbd_node_attr_max_conns_per_host,
	&knbd_node_attr_list,
	&knbd_node_attr_queue_depth,
	&knbd_node_attr_io_timeout,
	&knbd_node_attr_handshake_timeout,
	&knbd_node_attr_idle_timeout,
	&knbd_node_attr_max_inflight_mb,
	&knbd_node_attr_peer_port,
	&knbd_node_attr_node_id,
	&knbd_node_attr_group_id,
	&knbd_node_attr_group_key,
	&knbd_node_attr_insecure_peers,
	&knbd_node_attr_peer_auth,
	&knbd_node_attr_load_tick_ms,
	&knbd_node_attr_balance,
	&knbd_node_attr_balance_threshold_pct,
	&knbd_node_attr_balance_clear_pct,
	&knbd_node_attr_balance_hold_ms,
	&knbd_node_attr_balance_interval_ms,
	&knbd_node_attr_balance_min_load,
	&knbd_node_attr_balance_clients,
	&knbd_node_attr_drain,
	&knbd_node_attr_stats,
	&knbd_node_attr_enable,
	NULL,
};

static struct configfs_bin_attribute *knbd_node_bin_attrs[] = {
	&knbd_node_attr_clients,
	NULL,
};

static void knbd_node_release(struct config_item *item)
{
	struct knbd_node *node = to_knbd_node(item);

	ida_destroy(&node->vol_ida);
	memzero_explicit(node->group_key, sizeof(node->group_key));
	kfree(node);
}

static struct configfs_item_operations knbd_node_item_ops = {
	.release	= knbd_node_release,
};

static const struct config_item_type knbd_node_type = {
	.ct_item_ops	= &knbd_node_item_ops,
	.ct_attrs	= knbd_node_attrs,
	.ct_bin_attrs	= knbd_node_bin_attrs,
	.ct_owner	= THIS_MODULE,
};

static struct config_group *knbd_node_make(struct config_group *group,
					   const char *name)
{
	struct knbd_node *node;
	struct sockaddr_in *sin;

	node = kzalloc(sizeof(*node), GFP_KERNEL);
	if (!node)
		return ERR_PTR(-ENOMEM);
	mutex_init(&node->state_lock);
	mutex_init(&node->lock);
	mutex_init(&node->conns_lock);
	INIT_LIST_HEAD(&node->volumes);
	INIT_LIST_HEAD(&node->conns);
	INIT_LIST_HEAD(&node->peers);
	sin = (struct sockaddr_in *)&node->listen_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_ANY);
	node->listen_port = KNBD_DEFAULT_PORT;
	node->max_conns = KNBD_DEFAULT_MAX_CONNS;
	node->allow_list = true;
	node->peer_port = KNBD_DEFAULT_PEER_PORT;
	node->load_tick_ms = KNBD_DEFAULT_LOAD_TICK_MS;
	/*
	 * Off until the admin says the clients come back: a client whose
	 * connections are all moved fails its I/O unless it reconnects
	 * (tools/knbd-reconnect through the group address).
	 */
	node->cm_enabled = false;
	node->cm.threshold_pct = KNBD_CM_DEFAULT_THRESHOLD_PCT;
	node->cm.clear_pct = KNBD_CM_DEFAULT_CLEAR_PCT;
	node->cm.hold_ms = KNBD_CM_DEFAULT_HOLD_MS;
	node->cm.interval_ms = KNBD_CM_DEFAULT_INTERVAL_MS;
	node->cm.min_load = KNBD_CM_DEFAULT_MIN_LOAD;
	INIT_LIST_HEAD(&node->group_entry);
	node->node_id = 1;
	node->group_id = 1;
	node->queue_depth = KNBD_DEFAULT_QUEUE_DEPTH;
	node->io_timeout = KNBD_DEFAULT_IO_TIMEOUT;
	node->handshake_timeout = KNBD_DEFAULT_HANDSHAKE_TIMEOUT;
	node->max_inflight_mb = KNBD_DEFAULT_MAX_INFLIGHT_MB;
	spin_lock_init(&node->budget_lock);
	INIT_LIST_HEAD(&node->budget_waiters);
	ida_init(&node->vol_ida);
	knbd_node_init(node);

	config_group_init_type_name(&node->group, name, &knbd_node_type);
	config_group_init_type_name(&node->volumes_group, "volumes",
				    &knbd_volumes_type);
	configfs_add_default_group(&node->volumes_group, &node->group);
	config_group_init_type_name(&node->peers_group, "peers", &knbd_peers_type);
	configfs_add_default_group(&node->peers_group, &node->group);
	return &node->group;
}

static void knbd_node_drop(struct config_group *group, struct config_item *item)
{
	struct knbd_node *node = to_knbd_node(item);

	mutex_lock(&node->state_lock);
	if (node->enabled)
		knbd_node_disable(node);
	mutex_unlock(&node->state_lock);
	config_item_put(item);
}

static struct configfs_group_operations knbd_nodes_group_ops = {
	.make_group	= knbd_node_make,
	.drop_item	= knbd_node_drop,
};

static const struct config_item_type knbd_nodes_type = {
	.ct_group_ops	= &knbd_nodes_group_ops,
	.ct_owner	= THIS_MODULE,
};

static const struct config_item_type knbd_root_type = {
	.ct_owner	= THIS_MODULE,
};

static struct config_group knbd_nodes_group;

static struct configfs_subsystem knbd_subsys = {
	.su_group = {
		.cg_item = {
			.ci_namebuf	= "knbd",
			.ci_type	= &knbd_root_type,
		},
	},
};

int knbd_configfs_init(void)
{
	int ret;

	config_group_init(&knbd_subsys.su_group);
	mutex_init(&knbd_subsys.su_mutex);
	config_group_init_type_name(&knbd_nodes_group, "nodes", &knbd_nodes_type);
	configfs_add_default_group(&knbd_nodes_group, &knbd_subsys.su_group);

	ret = configfs_register_subsystem(&knbd_subsys);
	if (ret)
		pr_err("cannot register configfs subsystem: %pe\n", ERR_PTR(ret));
	return ret;
}

void knbd_configfs_exit(void)
{
	configfs_unregister_subsystem(&knbd_subsys);
}
