// SPDX-License-Identifier: GPL-2.0
/*
 * knbd: an in-kernel, scale-out NBD server.  Module entry and the
 * workqueues; everything else hangs off the configfs tree (configfs.c).
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/module.h>
#include <linux/workqueue.h>

#include "knbd.h"

/* Every connection's and member link's io_work: never blocks (nvmet_tcp_wq). */
struct workqueue_struct *knbd_io_wq;
/*
 * Backing I/O that must block: waits for the store only, never the network.
 * Per-CPU and concurrency-managed, as nvmet's buffered_io_wq: a piece runs
 * on the CPU that received it, one kworker at a time while none sleeps.
 * Unbound, a QD32 stream on a tmpfs file woke a kworker per piece on other
 * CPUs, all queueing on the inode lock (Documentation/bench.md).
 */
struct workqueue_struct *knbd_backing_wq;
/* Accepting, connecting, freeing connections: short, may sleep. */
struct workqueue_struct *knbd_wq;

atomic_t knbd_vol_gen = ATOMIC_INIT(0);

static int __init knbd_init(void)
{
	int ret = -ENOMEM;

	knbd_io_wq = alloc_workqueue("knbd_io", WQ_MEM_RECLAIM | WQ_HIGHPRI, 0);
	if (!knbd_io_wq)
		goto err;
	knbd_backing_wq = alloc_workqueue("knbd_backing", WQ_MEM_RECLAIM, 0);
	if (!knbd_backing_wq)
		goto err_io_wq;
	knbd_wq = alloc_workqueue("knbd", WQ_UNBOUND, 0);
	if (!knbd_wq)
		goto err_backing_wq;
	ret = knbd_configfs_init();
	if (ret)
		goto err_wq;
	pr_info("loaded\n");
	return 0;

err_wq:
	destroy_workqueue(knbd_wq);
err_backing_wq:
	destroy_workqueue(knbd_backing_wq);
err_io_wq:
	destroy_workqueue(knbd_io_wq);
err:
	return ret;
}

static void __exit knbd_exit(void)
{
	/* configfs pins the module while any node exists: nothing is left. */
	knbd_configfs_exit();
	destroy_workqueue(knbd_wq);
	destroy_workqueue(knbd_backing_wq);
	destroy_workqueue(knbd_io_wq);
	pr_info("unloaded\n");
}

module_init(knbd_init);
module_exit(knbd_exit);
MODULE_DESCRIPTION("knbd: in-kernel scale-out NBD server");
MODULE_LICENSE("GPL");
MODULE_VERSION(KNBD_VERSION);
