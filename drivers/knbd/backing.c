// SPDX-License-Identifier: GPL-2.0
/*
 * The backing store: where this member's pieces are read and written, the
 * way nvmet's io-cmd-bdev.c and io-cmd-file.c do it.
 *
 *   block device   bios built on the request's pages, completed in end_io;
 *   file, direct   O_DIRECT kiocb with ki_complete (async), when the file
 *                  system offers O_DIRECT and the piece is aligned for it;
 *   file, buffered a non-blocking (IOCB_NOWAIT) attempt in place when the
 *                  file supports it, else a worker.
 *
 * Whatever must block (buffered I/O that would, fsync, fallocate) runs on
 * knbd_backing_wq, which only ever waits for the store: never for a socket
 * or another member, so it cannot take part in a deadlock.  The volume's
 * direct_io attribute chooses: auto (direct where possible), 0, 1.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/falloc.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/uio.h>

#include "knbd.h"

static int knbd_backing_open_direct(struct knbd_volume *vol, struct file *file, int flags)
{
	struct inode *inode = file->f_mapping->host;
	struct file *dfile;

	if (vol->direct_io == KNBD_DIO_OFF)
		return 0;
	if (S_ISBLK(inode->i_mode)) {
		vol->bdev = I_BDEV(inode);
		vol->dio_align = bdev_logical_block_size(vol->bdev);
		return 0;
	}
	dfile = filp_open(vol->backing_path, flags | O_DIRECT, 0);
	if (IS_ERR(dfile)) {
		if (vol->direct_io == KNBD_DIO_AUTO)
			return 0;	/* tmpfs, for one: buffered it is */
		pr_warn_ratelimited("%s/%s: direct_io is 1 but %s cannot be opened with O_DIRECT: %pe\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol),
				    vol->backing_path, dfile);
		return PTR_ERR(dfile);
	}
	vol->backing_direct = dfile;
	vol->dio_align = inode->i_sb->s_bdev ?
			 bdev_logical_block_size(inode->i_sb->s_bdev) : SECTOR_SIZE;
	return 0;
}

static int knbd_backing_size(struct knbd_volume *vol, struct inode *inode)
{
	u64 dev_size = i_size_read(inode);

	if (vol->size_cfg) {
		/* A regular file may be smaller: it is sparse and grows. */
		if (S_ISBLK(inode->i_mode) && vol->size_cfg > dev_size) {
			pr_warn_ratelimited("%s/%s: size %llu exceeds block device size %llu\n",
					    knbd_node_name(vol->node), knbd_vol_name(vol),
					    vol->size_cfg, dev_size);
			return -EINVAL;
		}
		vol->info.size = vol->size_cfg;
	} else {
		vol->info.size = round_down(dev_size, vol->info.min_block);
	}
	if (!vol->info.size) {
		pr_warn_ratelimited("%s/%s: size is 0 (set size or use a non-empty backing)\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol));
		return -EINVAL;
	}
	if (vol->info.size & (vol->info.min_block - 1)) {
		pr_warn_ratelimited("%s/%s: size %llu is not a multiple of block_size %u\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol), vol->info.size,
				    vol->info.min_block);
		return -EINVAL;
	}
	return 0;
}

int knbd_backing_open(struct knbd_volume *vol)
{
	int flags = O_LARGEFILE | (vol->readonly ? O_RDONLY : O_RDWR);
	struct inode *inode;
	struct file *file;
	int ret;

	if (!vol->backing_path) {
		pr_warn_ratelimited("%s/%s: backing_path is not set\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol));
		return -EINVAL;
	}
	file = filp_open(vol->backing_path, flags, 0);
	if (IS_ERR(file)) {
		pr_warn_ratelimited("%s/%s: cannot open %s: %pe\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol),
				    vol->backing_path, file);
		return PTR_ERR(file);
	}
	vol->backing = file;
	inode = file->f_mapping->host;
	ret = -EINVAL;
	if (!S_ISREG(file_inode(file)->i_mode) && !S_ISBLK(file_inode(file)->i_mode)) {
		pr_warn_ratelimited("%s/%s: %s is not a regular file or block device\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol),
				    vol->backing_path);
		goto err;
	}
	if (!file->f_op->read_iter || (!vol->readonly && !file->f_op->write_iter)) {
		pr_warn_ratelimited("%s/%s: %s does not support read/write iterators\n",
				    knbd_node_name(vol->node), knbd_vol_name(vol),
				    vol->backing_path);
		goto err;
	}
	ret = knbd_backing_open_direct(vol, file, flags);
	if (ret)
		goto err;

	vol->info.min_block = vol->min_block;
	/* Bios must be whole logical blocks: clients are told so. */
	if (vol->bdev && vol->info.min_block < vol->dio_align) {
		pr_info("%s/%s: block size %u raised to the device's logical block size %u\n",
			knbd_node_name(vol->node), knbd_vol_name(vol), vol->info.min_block,
			vol->dio_align);
		vol->info.min_block = vol->dio_align;
	}
	ret = knbd_backing_size(vol, inode);
	if (ret)
		goto err;
	vol->info.pref_block = max(KNBD_PREF_BLOCK, vol->info.min_block);
	vol->info.max_block = KNBD_MAX_REQ_BYTES;
	vol->info.readonly = vol->readonly;
	return 0;
err:
	knbd_backing_close(vol);
	return ret;
}

void knbd_backing_close(struct knbd_volume *vol)
{
	if (vol->backing_direct)
		fput(vol->backing_direct);
	if (vol->backing)
		fput(vol->backing);
	vol->backing_direct = NULL;
	vol->backing = NULL;
	vol->bdev = NULL;
}

const char *knbd_backing_mode(const struct knbd_volume *vol)
{
	if (!vol->backing)
		return "-";
	if (vol->bdev)
		return "bio";
	return vol->backing_direct ? "direct" : "buffered";
}

/* ---- what blocks: a worker ---- */

static int knbd_file_read(struct file *file, struct knbd_piece *piece)
{
	struct iov_iter iter;
	loff_t pos = piece->offset + piece->done;
	ssize_t ret;

	knbd_piece_iter(piece, &iter, ITER_DEST);
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

static int knbd_file_write(struct file *file, struct knbd_piece *piece, bool fua)
{
	struct iov_iter iter;
	loff_t pos = piece->offset + piece->done;
	ssize_t ret = 0;

	knbd_piece_iter(piece, &iter, ITER_SOURCE);
	file_start_write(file);
	while (iov_iter_count(&iter)) {
		ret = vfs_iter_write(file, &iter, &pos, fua ? RWF_DSYNC : 0);
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
static int knbd_file_write_zero_pages(struct file *file, loff_t pos, u64 len)
{
	struct bio_vec bv[16];
	struct iov_iter iter;
	ssize_t ret;
	int i;

	for (i = 0; i < ARRAY_SIZE(bv); i++)
		bvec_set_page(&bv[i], ZERO_PAGE(0), PAGE_SIZE, 0);
	file_start_write(file);
	while (len) {
		u64 chunk = min_t(u64, len, ARRAY_SIZE(bv) * PAGE_SIZE);

		iov_iter_bvec(&iter, ITER_SOURCE, bv, ARRAY_SIZE(bv), chunk);
		ret = vfs_iter_write(file, &iter, &pos, 0);
		if (ret <= 0) {
			file_end_write(file);
			return ret ? ret : -EIO;
		}
		len -= ret;
		cond_resched();
	}
	file_end_write(file);
	return 0;
}

static int knbd_file_zero(struct file *file, loff_t pos, u64 len, u16 flags)
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
		ret = knbd_file_write_zero_pages(file, pos, len);
	if (!ret && (flags & KNBD_NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + len - 1, 1);
	return ret;
}

static int knbd_file_trim(struct file *file, loff_t pos, u64 len, u16 flags)
{
	int ret;

	ret = vfs_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pos, len);
	/* TRIM is advisory: a store that cannot deallocate ignores it. */
	if (ret == -EOPNOTSUPP || ret == -ENODEV)
		ret = 0;
	if (!ret && (flags & KNBD_NBD_CMD_FLAG_FUA))
		ret = vfs_fsync_range(file, pos, pos + len - 1, 1);
	return ret;
}

static void knbd_backing_work(struct work_struct *w)
{
	struct knbd_piece *piece = container_of(w, struct knbd_piece, work);
	const struct knbd_cmd *cmd = &piece->req->cmd;
	struct file *file = piece->req->vol->backing;
	int ret;

	switch (cmd->type) {
	case KNBD_NBD_CMD_READ:
		ret = knbd_file_read(file, piece);
		break;
	case KNBD_NBD_CMD_WRITE:
		ret = knbd_file_write(file, piece, cmd->flags & KNBD_NBD_CMD_FLAG_FUA);
		break;
	case KNBD_NBD_CMD_FLUSH:
		ret = vfs_fsync(file, 0);
		break;
	case KNBD_NBD_CMD_TRIM:
		ret = knbd_file_trim(file, piece->offset, piece->len, cmd->flags);
		break;
	case KNBD_NBD_CMD_WRITE_ZEROES:
		ret = knbd_file_zero(file, piece->offset, piece->len, cmd->flags);
		break;
	default:
		ret = -EINVAL;	/* knbd_proto_check_request() let it through */
		break;
	}
	knbd_piece_done(piece, ret);
}

/* Any context (a short async read completes in irq): the rest on a worker. */
static void knbd_backing_defer(struct knbd_piece *piece)
{
	atomic64_inc(&piece->req->vol->stats.fallback_ios);
	INIT_WORK(&piece->work, knbd_backing_work);
	queue_work(knbd_backing_wq, &piece->work);
}

/* ---- files: kiocb ---- */

static bool knbd_piece_is_write(const struct knbd_piece *piece)
{
	return piece->req->cmd.type == KNBD_NBD_CMD_WRITE;
}

static bool knbd_piece_fua(const struct knbd_piece *piece)
{
	return piece->req->cmd.flags & KNBD_NBD_CMD_FLAG_FUA;
}

static void knbd_file_aio_done(struct kiocb *iocb, long ret)
{
	struct knbd_piece *piece = container_of(iocb, struct knbd_piece, iocb);

	if (ret < 0) {
		knbd_piece_done(piece, ret);
		return;
	}
	piece->done += ret;
	if (piece->done == piece->len) {
		knbd_piece_done(piece, 0);
		return;
	}
	/* Short: the end of a sparse file (zeroes), or the rest to write. */
	knbd_backing_defer(piece);
}

static ssize_t knbd_file_rw(struct knbd_piece *piece, struct file *file, int flags,
			    void (*done)(struct kiocb *iocb, long ret))
{
	struct kiocb *iocb = &piece->iocb;
	bool write = knbd_piece_is_write(piece);
	struct iov_iter iter;

	init_sync_kiocb(iocb, file);
	iocb->ki_pos = piece->offset + piece->done;
	iocb->ki_flags |= flags;
	if (write && knbd_piece_fua(piece))
		iocb->ki_flags |= IOCB_DSYNC;
	iocb->ki_complete = done;
	knbd_piece_iter(piece, &iter, write ? ITER_SOURCE : ITER_DEST);
	return write ? call_write_iter(file, iocb, &iter) : call_read_iter(file, iocb, &iter);
}

static void knbd_file_aio(struct knbd_piece *piece, struct file *file)
{
	ssize_t ret = knbd_file_rw(piece, file, 0, knbd_file_aio_done);

	if (ret != -EIOCBQUEUED)
		knbd_file_aio_done(&piece->iocb, ret);
}

/*
 * Buffered: try without blocking, in place (page cache hits cost no
 * context switch).  False: the worker does the rest.
 */
static bool knbd_file_try_nowait(struct knbd_piece *piece)
{
	struct file *file = piece->req->vol->backing;
	bool write = knbd_piece_is_write(piece);
	ssize_t ret;

	if (!(file->f_mode & FMODE_NOWAIT) || (write && knbd_piece_fua(piece)))
		return false;
	/* As io_uring: a buffered write honours IOCB_NOWAIT only where it says so. */
	if (write && !(file->f_mode & FMODE_BUF_WASYNC))
		return false;
	if (write && !file_start_write_trylock(file))
		return false;
	ret = knbd_file_rw(piece, file, IOCB_NOWAIT, NULL);
	if (write)
		file_end_write(file);
	if (ret == -EAGAIN || ret == -EOPNOTSUPP)
		return false;
	if (ret < 0) {
		knbd_piece_done(piece, ret);
		return true;
	}
	piece->done += ret;
	if (piece->done < piece->len)
		return false;
	knbd_piece_done(piece, 0);
	return true;
}

/* ---- block devices: bios ---- */

static void knbd_bio_done(struct bio *bio)
{
	struct knbd_piece *piece = bio->bi_private;
	int err = blk_status_to_errno(bio->bi_status);

	bio_put(bio);
	knbd_piece_done(piece, err);
}

static struct bio *knbd_bio_alloc(struct block_device *bdev, unsigned int nr_pages,
				  blk_opf_t opf, sector_t sector)
{
	struct bio *bio = bio_alloc(bdev, bio_max_segs(nr_pages), opf, GFP_KERNEL);

	bio->bi_iter.bi_sector = sector;
	return bio;
}

/* One chain of bios over the piece's pages; the first completes last (as nvmet). */
static void knbd_bio_rw(struct knbd_piece *piece)
{
	struct knbd_req *req = piece->req;
	struct block_device *bdev = req->vol->bdev;
	blk_opf_t opf = REQ_OP_READ;
	sector_t sector = piece->offset >> SECTOR_SHIFT;
	u32 off = piece->data_off, left = piece->len;
	struct bio *bio;

	if (knbd_piece_is_write(piece)) {
		opf = REQ_OP_WRITE | REQ_SYNC | REQ_IDLE;
		if (knbd_piece_fua(piece))
			opf |= REQ_FUA;
	}
	bio = knbd_bio_alloc(bdev, DIV_ROUND_UP(offset_in_page(off) + left, PAGE_SIZE),
			     opf, sector);
	bio->bi_private = piece;
	bio->bi_end_io = knbd_bio_done;
	while (left) {
		const struct bio_vec *bv = &req->bvec[off >> PAGE_SHIFT];
		u32 in = offset_in_page(off);
		u32 chunk = min(bv->bv_len - in, left);

		while (bio_add_page(bio, bv->bv_page, chunk, bv->bv_offset + in) != chunk) {
			struct bio *prev = bio;

			bio = knbd_bio_alloc(bdev, DIV_ROUND_UP(in + left, PAGE_SIZE), opf,
					     sector);
			bio_chain(bio, prev);
			submit_bio(prev);
		}
		sector += chunk >> SECTOR_SHIFT;
		off += chunk;
		left -= chunk;
	}
	submit_bio(bio);
}

static void knbd_bio_flush(struct knbd_piece *piece)
{
	struct bio *bio = bio_alloc(piece->req->vol->bdev, 0,
				    REQ_OP_WRITE | REQ_PREFLUSH, GFP_KERNEL);

	bio->bi_private = piece;
	bio->bi_end_io = knbd_bio_done;
	submit_bio(bio);
}

/* ---- dispatch ---- */

static bool knbd_piece_aligned(const struct knbd_piece *piece, u32 align)
{
	return !((piece->offset | piece->len | offset_in_page(piece->data_off)) & (align - 1));
}

static void knbd_backing_count(struct knbd_vol_stats *st, u16 type, u32 len)
{
	switch (type) {
	case KNBD_NBD_CMD_READ:
		atomic64_inc(&st->reads);
		atomic64_add(len, &st->read_bytes);
		break;
	case KNBD_NBD_CMD_WRITE:
		atomic64_inc(&st->writes);
		atomic64_add(len, &st->write_bytes);
		break;
	case KNBD_NBD_CMD_FLUSH:
		atomic64_inc(&st->flushes);
		break;
	case KNBD_NBD_CMD_TRIM:
		atomic64_inc(&st->trims);
		break;
	case KNBD_NBD_CMD_WRITE_ZEROES:
		atomic64_inc(&st->write_zeroes);
		break;
	}
}

/* Serve one piece from this member's store; knbd_piece_done() follows. */
void knbd_backing_submit(struct knbd_piece *piece)
{
	struct knbd_volume *vol = piece->req->vol;
	u16 type = piece->req->cmd.type;

	knbd_backing_count(&vol->stats, type, piece->len);
	switch (type) {
	case KNBD_NBD_CMD_READ:
	case KNBD_NBD_CMD_WRITE:
		if (vol->bdev && knbd_piece_aligned(piece, vol->dio_align)) {
			knbd_bio_rw(piece);
			return;
		}
		if (vol->backing_direct && knbd_piece_aligned(piece, vol->dio_align)) {
			knbd_file_aio(piece, vol->backing_direct);
			return;
		}
		if (knbd_file_try_nowait(piece))
			return;
		break;
	case KNBD_NBD_CMD_FLUSH:
		if (vol->bdev) {
			knbd_bio_flush(piece);
			return;
		}
		break;
	default:
		break;
	}
	knbd_backing_defer(piece);
}
