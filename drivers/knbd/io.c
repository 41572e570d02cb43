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

	if (cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE)
		nr = DIV_ROUND_UP(cmd->len, PAGE_SIZE);

	req = kzalloc(struct_size(req, inline_bvec,
				  nr <= KNBD_INLINE_BVECS ? nr : 0), GFP_KERNEL);
	if (!req)
		return NULL;
	req->conn = conn;
	req->cmd = *cmd;
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

static int knbd_io_read(struct file *file, struct knbd_req *req)
{
	struct iov_iter iter;
	loff_t pos = req->cmd.offset;
	ssize_t ret;

	iov_iter_bvec(&iter, ITER_DEST, req->bvec, req->nr_bvec, req->cmd.len);
	while (iov_iter_count(&iter)) {
		ret = vfs_iter_read(file, &iter, &pos, 0);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			/* Past the end of a sparse file smaller than the export. */
			iov_iter_zero(iov_iter_count(&iter), &iter);
			break;
		}
	}
	return 0;
}

static int knbd_io_write_iter(struct file *file, struct iov_iter *iter,
			      loff_t pos, bool fua)
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

static int knbd_io_write(struct file *file, struct knbd_req *req)
{
	struct iov_iter iter;

	iov_iter_bvec(&iter, ITER_SOURCE, req->bvec, req->nr_bvec, req->cmd.len);
	return knbd_io_write_iter(file, &iter, req->cmd.offset,
				  req->cmd.flags & NBD_CMD_FLAG_FUA);
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
		ret = knbd_io_write_iter(file, &iter, pos, false);
		if (ret)
			return ret;
		pos += chunk;
		len -= chunk;
		cond_resched();
	}
	return 0;
}

static int knbd_io_zero(struct file *file, struct knbd_req *req)
{
	loff_t pos = req->cmd.offset;
	u64 len = req->cmd.len;
	int mode, ret;

	/* Without NO_HOLE the client allows deallocation: punch a hole. */
	if (req->cmd.flags & NBD_CMD_FLAG_NO_HOLE)
		mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	else
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	ret = vfs_fallocate(file, mode, pos, len);
	if (ret == -EOPNOTSUPP && (mode & FALLOC_FL_ZERO_RANGE)) {
		/* Allocate, then punch: leaves allocated zeroes where possible. */
		ret = vfs_fallocate(file, FALLOC_FL_KEEP_SIZE, pos, len);
		if (!ret)
			ret = -EOPNOTSUPP;
	}
	if (ret == -EOPNOTSUPP || ret == -ENODEV)
		ret = knbd_io_write_zero_pages(file, pos, len);
	if (!ret && (req->cmd.flags & NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + len - 1, 1);
	return ret;
}

static int knbd_io_trim(struct file *file, struct knbd_req *req)
{
	loff_t pos = req->cmd.offset;
	int ret;

	ret = vfs_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    pos, req->cmd.len);
	/* TRIM is advisory: a store that cannot deallocate ignores it. */
	if (ret == -EOPNOTSUPP || ret == -ENODEV)
		ret = 0;
	if (!ret && (req->cmd.flags & NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + req->cmd.len - 1, 1);
	return ret;
}

static void knbd_io_work(struct work_struct *work)
{
	struct knbd_req *req = container_of(work, struct knbd_req, work);
	struct knbd_conn *conn = req->conn;
	struct knbd_volume *vol = conn->vol;
	struct knbd_vol_stats *st = &vol->stats;
	struct file *file = vol->backing;
	u32 mem = knbd_cmd_mem_bytes(&req->cmd);
	u32 reply_len = 0;
	int ret;

	switch (req->cmd.type) {
	case NBD_CMD_READ:
		ret = knbd_io_read(file, req);
		if (!ret) {
			reply_len = req->cmd.len;
			atomic64_inc(&st->reads);
			atomic64_add(req->cmd.len, &st->read_bytes);
		}
		break;
	case NBD_CMD_WRITE:
		ret = knbd_io_write(file, req);
		if (!ret) {
			atomic64_inc(&st->writes);
			atomic64_add(req->cmd.len, &st->write_bytes);
		}
		break;
	case NBD_CMD_FLUSH:
		ret = vfs_fsync(file, 0);
		atomic64_inc(&st->flushes);
		break;
	case NBD_CMD_TRIM:
		ret = knbd_io_trim(file, req);
		atomic64_inc(&st->trims);
		break;
	case NBD_CMD_WRITE_ZEROES:
		ret = knbd_io_zero(file, req);
		atomic64_inc(&st->write_zeroes);
		break;
	default:
		ret = -EINVAL;	/* knbd_proto_check_request() let it through */
		break;
	}
	if (ret) {
		atomic64_inc(&st->errors);
		pr_warn_ratelimited("volume %s: %s offset %llu len %u failed: %d\n",
				    config_item_name(&vol->group.cg_item),
				    knbd_proto_cmd_name(req->cmd.type),
				    req->cmd.offset, req->cmd.len, ret);
	}
	req->nbd_err = knbd_proto_errno_to_nbd(ret);

	knbd_conn_send_reply(conn, req->cmd.cookie, req->nbd_err, req->bvec,
			     req->nr_bvec, reply_len);
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
