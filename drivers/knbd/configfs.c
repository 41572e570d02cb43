// SPDX-License-Identifier: GPL-2.0
/*
 * configfs interface, modelled on nvmet:
 *
 *   /sys/kernel/config/knbd/nodes/<node>/{listen_addr,listen_port,
 *       max_connections,enable,clients}
 *   /sys/kernel/config/knbd/nodes/<node>/volumes/<vol>/{backing_path,size,
 *       block_size,readonly,description,enable,stats}
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

#define knbd_cfg_warn(item, fmt, ...) \
	pr_warn_ratelimited("%s: " fmt, config_item_name(item), ##__VA_ARGS__)

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
	char *end;
	u64 size;
	ssize_t ret = count;

	/* memparse() accepts the K/M/G/T suffixes an admin expects. */
	size = memparse(page, &end);
	if (end == page || (*end && *end != '\n')) {
		knbd_cfg_warn(item, "size: not a number\n");
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

	if (kstrtou32(page, 0, &bs) || !is_power_of_2(bs) ||
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

	if (kstrtobool(page, &ro)) {
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

	desc = knbd_strdup_line(page, count, NBD_MAX_STRING);
	if (IS_ERR(desc)) {
		knbd_cfg_warn(item, "description longer than %d bytes\n",
			      NBD_MAX_STRING);
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

static ssize_t knbd_volume_enable_show(struct config_item *item, char *page)
{
	return sysfs_emit(page, "%d\n", to_knbd_volume(item)->enabled);
}

static int knbd_volume_enable(struct knbd_volume *vol)
{
	int ret;

	lockdep_assert_held(&vol->node->lock);
	ret = knbd_backing_open(vol);
	if (ret)
		return ret;
	vol->enabled = true;
	pr_info("volume %s: exported, %llu bytes from %s%s\n",
		config_item_name(&vol->group.cg_item), vol->info.size,
		vol->backing_path, vol->readonly ? " (read-only)" : "");
	return 0;
}

static void knbd_volume_disable(struct knbd_volume *vol)
{
	lockdep_assert_held(&vol->node->lock);
	vol->enabled = false;
	knbd_node_close_volume_conns(vol->node, vol);
	wait_var_event(&vol->nr_conns, !atomic_read(&vol->nr_conns));
	knbd_backing_close(vol);
	pr_info("volume %s: disabled\n", config_item_name(&vol->group.cg_item));
}

static ssize_t knbd_volume_enable_store(struct config_item *item,
					const char *page, size_t count)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	bool enable;
	int ret = 0;

	if (kstrtobool(page, &enable)) {
		knbd_cfg_warn(item, "enable must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&vol->node->lock);
	if (enable && !vol->enabled)
		ret = knbd_volume_enable(vol);
	else if (!enable && vol->enabled)
		knbd_volume_disable(vol);
	mutex_unlock(&vol->node->lock);
	return ret ? ret : count;
}
CONFIGFS_ATTR(knbd_volume_, enable);

static ssize_t knbd_volume_stats_show(struct config_item *item, char *page)
{
	struct knbd_vol_stats *st = &to_knbd_volume(item)->stats;

	return sysfs_emit(page,
			  "reads %lld\nwrites %lld\nread_bytes %lld\nwrite_bytes %lld\n"
			  "flushes %lld\ntrims %lld\nwrite_zeroes %lld\nerrors %lld\n"
			  "connections %d\n",
			  atomic64_read(&st->reads), atomic64_read(&st->writes),
			  atomic64_read(&st->read_bytes), atomic64_read(&st->write_bytes),
			  atomic64_read(&st->flushes), atomic64_read(&st->trims),
			  atomic64_read(&st->write_zeroes), atomic64_read(&st->errors),
			  atomic_read(&to_knbd_volume(item)->nr_conns));
}
CONFIGFS_ATTR_RO(knbd_volume_, stats);

static struct configfs_attribute *knbd_volume_attrs[] = {
	&knbd_volume_attr_backing_path,
	&knbd_volume_attr_size,
	&knbd_volume_attr_block_size,
	&knbd_volume_attr_readonly,
	&knbd_volume_attr_description,
	&knbd_volume_attr_enable,
	&knbd_volume_attr_stats,
	NULL,
};

static void knbd_volume_release(struct config_item *item)
{
	struct knbd_volume *vol = to_knbd_volume(item);

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
	.ct_owner	= THIS_MODULE,
};

static struct config_group *knbd_volume_make(struct config_group *group,
					     const char *name)
{
	struct knbd_node *node = container_of(group, struct knbd_node, volumes_group);
	struct knbd_volume *vol;

	if (strlen(name) > NAME_MAX) {
		pr_warn_ratelimited("volume name too long\n");
		return ERR_PTR(-EINVAL);
	}
	vol = kzalloc(sizeof(*vol), GFP_KERNEL);
	if (!vol)
		return ERR_PTR(-ENOMEM);
	vol->node = node;
	vol->min_block = KNBD_DEFAULT_MIN_BLOCK;
	config_group_init_type_name(&vol->group, name, &knbd_volume_type);

	mutex_lock(&node->lock);
	if (node->nr_volumes >= KNBD_MAX_VOLUMES) {
		mutex_unlock(&node->lock);
		pr_warn_ratelimited("node %s: at most %d volumes\n",
				    config_item_name(&node->group.cg_item),
				    KNBD_MAX_VOLUMES);
		kfree(vol);
		return ERR_PTR(-ENOSPC);
	}
	list_add_tail(&vol->node_entry, &node->volumes);
	node->nr_volumes++;
	mutex_unlock(&node->lock);
	return &vol->group;
}

static void knbd_volume_drop(struct config_group *group, struct config_item *item)
{
	struct knbd_volume *vol = to_knbd_volume(item);
	struct knbd_node *node = vol->node;

	mutex_lock(&node->lock);
	if (vol->enabled)
		knbd_volume_disable(vol);
	list_del(&vol->node_entry);
	node->nr_volumes--;
	mutex_unlock(&node->lock);
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

	if (kstrtou16(page, 0, &port) || !port) {
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

	if (kstrtou32(page, 0, &max) || !max || max > KNBD_MAX_CONNS_LIMIT) {
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

	if (kstrtobool(page, &enable)) {
		knbd_cfg_warn(item, "enable must be 0 or 1\n");
		return -EINVAL;
	}
	mutex_lock(&node->lock);
	if (enable && !node->enabled) {
		ret = knbd_node_enable(node);
		if (!ret)
			node->enabled = true;
	} else if (!enable && node->enabled) {
		knbd_node_disable(node);
		node->enabled = false;
	}
	mutex_unlock(&node->lock);
	return ret ? ret : count;
}
CONFIGFS_ATTR(knbd_node_, enable);

static const char * const knbd_conn_state_names[] = {
	[KNBD_CONN_HANDSHAKE]		= "handshake",
	[KNBD_CONN_TRANSMISSION]	= "transmission",
	[KNBD_CONN_CLOSING]		= "closing",
};

static ssize_t knbd_node_clients_show(struct config_item *item, char *page)
{
	struct knbd_node *node = to_knbd_node(item);
	struct knbd_conn *conn;
	int len = 0;

	mutex_lock(&node->conns_lock);
	list_for_each_entry(conn, &node->conns, node_entry) {
		struct knbd_volume *vol = READ_ONCE(conn->vol);
		unsigned int inflight;

		spin_lock(&conn->lock);
		inflight = conn->inflight;
		spin_unlock(&conn->lock);
		/* Stop at the page end rather than emit a torn line. */
		if (len > PAGE_SIZE - 160)
			break;
		len += sysfs_emit_at(page, len,
				     "%llu %pISpc %s state=%s inflight=%u ops=%lld bytes=%lld\n",
				     conn->id, &conn->peer,
				     vol ? config_item_name(&vol->group.cg_item) : "-",
				     knbd_conn_state_names[READ_ONCE(conn->state)],
				     inflight, atomic64_read(&conn->ops),
				     atomic64_read(&conn->bytes));
	}
	mutex_unlock(&node->conns_lock);
	return len;
}
CONFIGFS_ATTR_RO(knbd_node_, clients);

static struct configfs_attribute *knbd_node_attrs[] = {
	&knbd_node_attr_listen_addr,
	&knbd_node_attr_listen_port,
	&knbd_node_attr_max_connections,
	&knbd_node_attr_enable,
	&knbd_node_attr_clients,
	NULL,
};

static void knbd_node_release(struct config_item *item)
{
	kfree(to_knbd_node(item));
}

static struct configfs_item_operations knbd_node_item_ops = {
	.release	= knbd_node_release,
};

static const struct config_item_type knbd_node_type = {
	.ct_item_ops	= &knbd_node_item_ops,
	.ct_attrs	= knbd_node_attrs,
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
	mutex_init(&node->lock);
	mutex_init(&node->conns_lock);
	INIT_LIST_HEAD(&node->volumes);
	INIT_LIST_HEAD(&node->conns);
	sin = (struct sockaddr_in *)&node->listen_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_ANY);
	node->listen_port = KNBD_DEFAULT_PORT;
	node->max_conns = KNBD_DEFAULT_MAX_CONNS;
	knbd_node_init_work(node);

	config_group_init_type_name(&node->group, name, &knbd_node_type);
	config_group_init_type_name(&node->volumes_group, "volumes",
				    &knbd_volumes_type);
	configfs_add_default_group(&node->volumes_group, &node->group);
	return &node->group;
}

static void knbd_node_drop(struct config_group *group, struct config_item *item)
{
	struct knbd_node *node = to_knbd_node(item);

	mutex_lock(&node->lock);
	if (node->enabled) {
		knbd_node_disable(node);
		node->enabled = false;
	}
	mutex_unlock(&node->lock);
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
		pr_err("cannot register configfs subsystem: %d\n", ret);
	return ret;
}

void knbd_configfs_exit(void)
{
	configfs_unregister_subsystem(&knbd_subsys);
}
