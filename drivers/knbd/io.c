// SPDX-License-Identifier: GPL-2.0
/*
 * Backing store I/O: a regular file or a block device opened through the
 * VFS.  Each request runs as its own work item on knbd_io_wq, so the
 * receive side of a connection keeps reading while earlier requests wait
 * for the disk, and replies leave in order of completion.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/highmem.h>
#include <linux/slab.h>
#include <linux/uio.h>

#include "knbd.h"

/* Requests up to this many pages keep their bio_vec array inline. */
#define KNBD_INLINE_BVECS	16

int knbd_backing_open(struct knbd_volume *vol)
{
	struct file *file;
	struct inode *inode;
	u64 dev_size;
	int flags = O_LARGEFILE | (vol->readonly ? O_RDONLY : O_RDWR);
	int ret;

	if (!vol->backing_path) {
		pr_warn_ratelimited("volume %s: backing_path is not set\n",
				    config_item_name(&vol->group.cg_item));
		return -EINVAL;
	}
	file = filp_open(vol->backing_path, flags, 0);
	if (IS_ERR(file)) {
		pr_warn_ratelimited("volume %s: cannot open %s: %ld\n",
				    config_item_name(&vol->group.cg_item),
				    vol->backing_path, PTR_ERR(file));
		return PTR_ERR(file);
	}

	inode = file->f_mapping->host;
	ret = -EINVAL;
	if (!S_ISREG(file_inode(file)->i_mode) &&
	    !S_ISBLK(file_inode(file)->i_mode)) {
		pr_warn_ratelimited("volume %s: %s is not a regular file or block device\n",
				    config_item_name(&vol->group.cg_item),
				    vol->backing_path);
		goto err;
	}
	if (!file->f_op->read_iter ||
	    (!vol->readonly && !file->f_op->write_iter)) {
		pr_warn_ratelimited("volume %s: %s does not support read/write iterators\n",
				    config_item_name(&vol->group.cg_item),
				    vol->backing_path);
		goto err;
	}

	dev_size = i_size_read(inode);
	if (vol->size_cfg) {
		/* A regular file may be smaller: it is sparse and grows. */
		if (S_ISBLK(inode->i_mode) && vol->size_cfg > dev_size) {
			pr_warn_ratelimited("volume %s: size %llu exceeds block device size %llu\n",
					    config_item_name(&vol->group.cg_item),
					    vol->size_cfg, dev_size);
			goto err;
		}
		vol->info.size = vol->size_cfg;
	} else {
		vol->info.size = round_down(dev_size, vol->min_block);
	}
	if (!vol->info.size) {
		pr_warn_ratelimited("volume %s: size is 0 (set size or use a non-empty backing)\n",
				    config_item_name(&vol->group.cg_item));
		goto err;
	}
	if (vol->info.size & (vol->min_block - 1)) {
		pr_warn_ratelimited("volume %s: size %llu is not a multiple of block_size %u\n",
				    config_item_name(&vol->group.cg_item),
				    vol->info.size, vol->min_block);
		goto err;
	}

	vol->info.min_block = vol->min_block;
	vol->info.pref_block = max(KNBD_PREF_BLOCK, vol->min_block);
	vol->info.max_block = KNBD_MAX_REQ_BYTES;
	vol->info.readonly = vol->readonly;
	vol->backing = file;
	return 0;
err:
	fput(file);
	return ret;
}

void knbd_backing_close(struct knbd_volume *vol)
{
	if (vol->backing) {
		fput(vol->backing);
		vol->backing = NULL;
	}
}

struct knbd_req *knbd_req_alloc(struct knbd_conn *conn, const struct knbd_cmd *cmd)
{
	unsigned int nr = 0, i;
	struct knbd_req *req;
	u32 left;

	if (cmd->type == KNBD_NBD_CMD_READ || cmd->type == KNBD_NBD_CMD_WRITE)
		nr = DIV_ROUND_UP(cmd->len, PAGE_SIZE);

	req = kzalloc(struct_size(req, inline_bvec,
				  nr <= KNBD_INLINE_BVECS ? nr : 0), GFP_KERNEL);
	if (!req)
		return NULL;
	req->conn = conn;
	req->cmd = *cmd;
	req->start_ns = ktime_get_ns();
	if (nr > KNBD_INLINE_BVECS) {
		req->bvec = kvmalloc_array(nr, sizeof(*req->bvec), GFP_KERNEL);
		if (!req->bvec)
			goto err;
	} else {
		req->bvec = req->inline_bvec;
	}

	left = cmd->len;
	for (i = 0; i < nr; i++) {
		struct page *page = alloc_page(GFP_KERNEL);
		u32 chunk = min_t(u32, left, PAGE_SIZE);

		if (!page)
			goto err;
		bvec_set_page(&req->bvec[i], page, chunk, 0);
		req->nr_bvec++;
		left -= chunk;
	}
	return req;
err:
	knbd_req_free(req);
	return NULL;
}

void knbd_req_free(struct knbd_req *req)
{
	unsigned int i;

	for (i = 0; i < req->nr_bvec; i++)
		__free_page(req->bvec[i].bv_page);
	if (req->bvec && req->bvec != req->inline_bvec)
		kvfree(req->bvec);
	kfree(req);
}

/* ---- local I/O on one range of the backing store ---- */

static int knbd_io_read(struct file *file, loff_t pos, struct iov_iter *iter)
{
	ssize_t ret;

	while (iov_iter_count(iter)) {
		ret = vfs_iter_read(file, iter, &pos, 0);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			/* Past the end of a sparse file smaller than the export. */
			iov_iter_zero(iov_iter_count(iter), iter);
			break;
		}
	}
	return 0;
}

static int knbd_io_write(struct file *file, loff_t pos, struct iov_iter *iter,
			 bool fua)
{
	ssize_t ret = 0;

	file_start_write(file);
	while (iov_iter_count(iter)) {
		ret = vfs_iter_write(file, iter, &pos, fua ? RWF_DSYNC : 0);
		if (ret < 0)
			break;
		if (ret == 0) {
			ret = -EIO;
			break;
		}
	}
	file_end_write(file);
	return ret < 0 ? ret : 0;
}

/* Fallback when the backing cannot zero a range itself (e.g. tmpfs). */
static int knbd_io_write_zero_pages(struct file *file, loff_t pos, u64 len)
{
	struct bio_vec bv[16];
	struct iov_iter iter;
	int i, ret;

	for (i = 0; i < ARRAY_SIZE(bv); i++)
		bvec_set_page(&bv[i], ZERO_PAGE(0), PAGE_SIZE, 0);
	while (len) {
		u64 chunk = min_t(u64, len, ARRAY_SIZE(bv) * PAGE_SIZE);

		iov_iter_bvec(&iter, ITER_SOURCE, bv, ARRAY_SIZE(bv), chunk);
		ret = knbd_io_write(file, pos, &iter, false);
		if (ret)
			return ret;
		pos += chunk;
		len -= chunk;
		cond_resched();
	}
	return 0;
}

static int knbd_io_zero(struct file *file, loff_t pos, u64 len, u16 flags)
{
	int mode, ret;

	/* Without NO_HOLE the client allows deallocation: punch a hole. */
	if (flags & KNBD_NBD_CMD_FLAG_NO_HOLE)
		mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	else
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	ret = vfs_fallocate(file, mode, pos, len);
	if (ret == -EOPNOTSUPP && (mode & FALLOC_FL_ZERO_RANGE)) {
		/* Allocate first, so the zero pages below land in real blocks. */
		ret = vfs_fallocate(file, FALLOC_FL_KEEP_SIZE, pos, len);
		if (!ret)
			ret = -EOPNOTSUPP;
	}
	if (ret == -EOPNOTSUPP || ret == -ENODEV)
		ret = knbd_io_write_zero_pages(file, pos, len);
	if (!ret && (flags & KNBD_NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + len - 1, 1);
	return ret;
}

static int knbd_io_trim(struct file *file, loff_t pos, u64 len, u16 flags)
{
	int ret;

	ret = vfs_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    pos, len);
	/* TRIM is advisory: a store that cannot deallocate ignores it. */
	if (ret == -EOPNOTSUPP || ret == -ENODEV)
		ret = 0;
	if (!ret && (flags & KNBD_NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + len - 1, 1);
	return ret;
}

/* Execute one command, or one piece of it, on this member's store. */
static int knbd_io_local(struct knbd_volume *vol, u16 type, u16 flags,
			 u64 offset, u64 len, struct iov_iter *iter)
{
	struct knbd_vol_stats *st = &vol->stats;
	struct file *file = vol->backing;

	switch (type) {
	case KNBD_NBD_CMD_READ:
		atomic64_inc(&st->reads);
		atomic64_add(len, &st->read_bytes);
		return knbd_io_read(file, offset, iter);
	case KNBD_NBD_CMD_WRITE:
		atomic64_inc(&st->writes);
		atomic64_add(len, &st->write_bytes);
		return knbd_io_write(file, offset, iter, flags & KNBD_NBD_CMD_FLAG_FUA);
	case KNBD_NBD_CMD_FLUSH:
		atomic64_inc(&st->flushes);
		return vfs_fsync(file, 0);
	case KNBD_NBD_CMD_TRIM:
		atomic64_inc(&st->trims);
		return knbd_io_trim(file, offset, len, flags);
	case KNBD_NBD_CMD_WRITE_ZEROES:
		atomic64_inc(&st->write_zeroes);
		return knbd_io_zero(file, offset, len, flags);
	default:
		return -EINVAL;	/* knbd_proto_check_request() let it through */
	}
}

/* ---- partitioned volumes: split by owner, forward the remote pieces ---- */

#define KNBD_ONSTACK_SEGS	4

struct knbd_route_plan {
	struct knbd_route_id rid;
	u32 nr_segs;
	struct knbd_seg *segs;
	struct knbd_seg onstack[KNBD_ONSTACK_SEGS];
};

/*
 * Take the pieces of a request from the current table.  The table may be
 * replaced while we work: the plan keeps the epoch it was made with, and
 * the owners refuse it if theirs differs.
 */
static int knbd_route_plan(struct knbd_volume *vol, const struct knbd_cmd *cmd,
			   struct knbd_route_plan *plan)
{
	struct knbd_route *rt;
	u32 n, i;

	plan->segs = plan->onstack;
	rcu_read_lock();
	rt = rcu_dereference(vol->route);
	if (!rt) {
		rcu_read_unlock();
		plan->nr_segs = 0;
		return 0;
	}
	plan->rid.epoch = rt->epoch;
	plan->rid.checksum = rt->checksum;
	if (cmd->type == KNBD_NBD_CMD_FLUSH) {
		/* A flush goes to every member that stores part of the volume. */
		n = rt->nr_members;
		if (n > KNBD_ONSTACK_SEGS) {
			rcu_read_unlock();
			plan->segs = kmalloc_array(n, sizeof(*plan->segs), GFP_KERNEL);
			if (!plan->segs)
				return -ENOMEM;
			rcu_read_lock();
			rt = rcu_dereference(vol->route);
			n = rt ? min_t(u32, n, rt->nr_members) : 0;
		}
		for (i = 0; i < n; i++) {
			plan->segs[i].offset = 0;
			plan->segs[i].len = 0;
			plan->segs[i].owner = rt->members[i];
		}
		rcu_read_unlock();
		plan->nr_segs = n;
		return 0;
	}
	n = knbd_route_split(rt, cmd->offset, cmd->len, plan->segs, KNBD_ONSTACK_SEGS);
	if (n > KNBD_ONSTACK_SEGS) {
		/* Allocating may sleep: drop RCU, retry against the current table. */
		struct knbd_seg *segs;
		u32 want = n;

		rcu_read_unlock();
		segs = kmalloc_array(want, sizeof(*segs), GFP_KERNEL);
		if (!segs)
			return -ENOMEM;
		rcu_read_lock();
		rt = rcu_dereference(vol->route);
		n = rt ? knbd_route_split(rt, cmd->offset, cmd->len, segs, want) : 0;
		if (!rt || n > want) {
			rcu_read_unlock();
			kfree(segs);
			return -EAGAIN;
		}
		plan->rid.epoch = rt->epoch;
		plan->rid.checksum = rt->checksum;
		plan->segs = segs;
	}
	rcu_read_unlock();
	plan->nr_segs = n;
	return 0;
}

static void knbd_route_plan_free(struct knbd_route_plan *plan)
{
	if (plan->segs != plan->onstack)
		kfree(plan->segs);
}

static int knbd_io_routed(struct knbd_req *req, struct knbd_route_plan *plan)
{
	struct knbd_volume *vol = req->vol;
	struct knbd_node *node = vol->node;
	const struct knbd_cmd *cmd = &req->cmd;
	struct knbd_fwd *fwds;
	struct knbd_peer **peers;
	struct iov_iter whole, piece;
	u32 i, nr_remote = 0;
	int ret = 0, err;

	fwds = kcalloc(plan->nr_segs, sizeof(*fwds), GFP_KERNEL);
	peers = kcalloc(plan->nr_segs, sizeof(*peers), GFP_KERNEL);
	if (!fwds || !peers) {
		ret = -ENOMEM;
		goto out;
	}
	iov_iter_bvec(&whole, cmd->type == KNBD_NBD_CMD_READ ? ITER_DEST : ITER_SOURCE,
		      req->bvec, req->nr_bvec, req->nr_bvec ? cmd->len : 0);

	/* Remote pieces first, so the owners work while we do ours. */
	for (i = 0; i < plan->nr_segs; i++) {
		struct knbd_seg *seg = &plan->segs[i];
		struct knbd_fwd *fwd = &fwds[i];

		if (seg->owner == node->node_id)
			continue;
		fwd->cmd = cmd->type;
		fwd->flags = cmd->flags;
		fwd->offset = seg->offset;
		fwd->len = seg->len;
		piece = whole;
		if (req->nr_bvec) {
			iov_iter_advance(&piece, seg->offset - cmd->offset);
			iov_iter_truncate(&piece, seg->len);
		}
		fwd->iter = piece;
		peers[i] = knbd_peer_get(node, seg->owner);
		if (!peers[i]) {
			pr_warn_ratelimited("volume %s: no link to member %u (owner of offset %llu)\n",
					    config_item_name(&vol->group.cg_item),
					    seg->owner, seg->offset);
			ret = ret ?: -EHOSTUNREACH;
			continue;
		}
		err = knbd_peer_forward(peers[i], vol, &plan->rid, fwd);
		if (err) {
			knbd_peer_put(peers[i]);
			peers[i] = NULL;
			ret = ret ?: err;
			continue;
		}
		atomic64_inc(&vol->stats.forwarded_ios);
		nr_remote++;
	}

	for (i = 0; i < plan->nr_segs; i++) {
		struct knbd_seg *seg = &plan->segs[i];

		if (seg->owner != node->node_id)
			continue;
		piece = whole;
		if (req->nr_bvec) {
			iov_iter_advance(&piece, seg->offset - cmd->offset);
			iov_iter_truncate(&piece, seg->len);
		}
		err = knbd_io_local(vol, cmd->type, cmd->flags, seg->offset,
				    seg->len, &piece);
		atomic64_inc(&vol->stats.local_ios);
		ret = ret ?: err;
	}

	for (i = 0; i < plan->nr_segs; i++) {
		struct knbd_fwd *fwd = &fwds[i];

		if (!peers[i])
			continue;
		wait_for_completion(&fwd->done);
		knbd_peer_put(peers[i]);
		if (fwd->status == KNBD_PEER_EPOCH_MISMATCH) {
			atomic64_inc(&vol->stats.epoch_mismatches);
			atomic64_inc(&peers[i]->mismatches);
			pr_warn_ratelimited("volume %s: member %u has routing epoch %llu, ours is %llu: not forwarding\n",
					    config_item_name(&vol->group.cg_item),
					    plan->segs[i].owner, fwd->remote_epoch,
					    plan->rid.epoch);
		}
		if (fwd->nbd_err && !ret)
			ret = knbd_proto_nbd_to_errno(fwd->nbd_err);
	}
out:
	kfree(peers);
	kfree(fwds);
	return ret;
}

static void knbd_io_work(struct work_struct *work)
{
	struct knbd_req *req = container_of(work, struct knbd_req, work);
	struct knbd_conn *conn = req->conn;
	struct knbd_volume *vol = req->vol;
	struct knbd_route_plan plan = { };
	u32 mem = knbd_cmd_mem_bytes(&req->cmd);
	struct iov_iter iter;
	u32 reply_len = 0;
	int ret;

	iov_iter_bvec(&iter, req->cmd.type == KNBD_NBD_CMD_READ ? ITER_DEST : ITER_SOURCE,
		      req->bvec, req->nr_bvec, req->nr_bvec ? req->cmd.len : 0);
	if (conn->is_peer) {
		/* Another member's piece: it checked that we own it. */
		ret = knbd_io_local(vol, req->cmd.type, req->cmd.flags,
				    req->cmd.offset, req->cmd.len, &iter);
	} else {
		do {
			ret = knbd_route_plan(vol, &req->cmd, &plan);
		} while (ret == -EAGAIN);
		if (!ret && plan.nr_segs)
			ret = knbd_io_routed(req, &plan);
		else if (!ret)
			ret = knbd_io_local(vol, req->cmd.type, req->cmd.flags,
					    req->cmd.offset, req->cmd.len, &iter);
	}
	if (ret) {
		atomic64_inc(&vol->stats.errors);
		pr_warn_ratelimited("volume %s: %s offset %llu len %u failed: %d\n",
				    config_item_name(&vol->group.cg_item),
				    knbd_proto_cmd_name(req->cmd.type),
				    req->cmd.offset, req->cmd.len, ret);
	}
	req->nbd_err = knbd_proto_errno_to_nbd(ret);
	if (!ret && req->cmd.type == KNBD_NBD_CMD_READ)
		reply_len = req->cmd.len;

	if (conn->is_peer) {
		knbd_peer_send_reply(conn, req, &plan.rid);
		knbd_volume_put_user(vol);
	} else {
		knbd_conn_send_reply(conn, req->cmd.cookie, req->nbd_err, req->bvec,
				     req->nr_bvec, reply_len);
	}
	knbd_route_plan_free(&plan);
	atomic64_add(ktime_get_ns() - req->start_ns, &conn->lat_ns);
	atomic64_inc(&conn->ops);
	atomic64_add(req->cmd.len, &conn->bytes);
	knbd_req_free(req);
	knbd_conn_req_done(conn, mem);
}

void knbd_io_submit(struct knbd_req *req)
{
	INIT_WORK(&req->work, knbd_io_work);
	queue_work(knbd_io_wq, &req->work);
}
