/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What knbd.ko exports to other modules of the same kernel: the group
 * load table, for the ip_vs_knbd IPVS scheduler (client allocation).
 */
#ifndef _KNBD_GROUP_H
#define _KNBD_GROUP_H

#include <linux/in6.h>
#include <linux/types.h>

/*
 * knbd_group_load() - the load of the member that serves clients at @addr
 * @af:		AF_INET or AF_INET6
 * @addr:	the member's address (struct in_addr or struct in6_addr)
 * @load:	out: milli weighted operations per second (Documentation/design.md)
 * @conns:	out, may be NULL: its client connections
 *
 * Looks at every enabled node in this kernel: a node listening on @addr
 * gives its own figure; otherwise the freshest report that some node has
 * received from a peer configured at @addr.  The port is not compared:
 * a member's client and member ports share its address.
 *
 * Return: 0, -ENOENT if no node knows a member at @addr, or -ESTALE if
 * the only figure known is too old to use (a member gone quiet is
 * unknown, never idle).  Safe from any context that may sleep or not: it
 * takes no mutex (RCU only).
 */
int knbd_group_load(int af, const void *addr, u64 *load, u32 *conns);

#endif /* _KNBD_GROUP_H */
