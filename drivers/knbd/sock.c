// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel socket helpers.  Everything that moves bytes is non-blocking
 * (MSG_DONTWAIT): the caller is an io_work that must never sleep on a
 * socket, and comes back when sk_data_ready or sk_write_space says so.
 */
#define pr_fmt(fmt) "knbd: " fmt

#include <linux/cpumask.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/uio.h>
#include <net/ipv6.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "knbd.h"

/* Bytes read, -EAGAIN when nothing is there, -ENODATA at the end of the stream. */
int knbd_sock_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = buf, .iov_len = len };
	int ret;

	ret = kernel_recvmsg(sock, &msg, &iov, 1, len, msg.msg_flags);
	return ret ? ret : -ENODATA;
}

/* Like knbd_sock_recv(), into an iterator (request pages), which it advances. */
int knbd_sock_recv_iter(struct socket *sock, struct iov_iter *iter)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	int ret;

	msg.msg_iter = *iter;
	ret = sock_recvmsg(sock, &msg, msg.msg_flags);
	if (ret > 0)
		*iter = msg.msg_iter;
	return ret ? ret : -ENODATA;
}

/* Bytes sent (maybe fewer than @len), or -EAGAIN, or an error. */
int knbd_sock_send(struct socket *sock, const void *buf, size_t len, bool more)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };
	int ret;

	if (more)
		msg.msg_flags |= MSG_MORE;
	ret = kernel_sendmsg(sock, &msg, &iov, 1, len);
	return ret ? ret : -EAGAIN;
}

/*
 * Send @len bytes of request pages from byte @off, without copying: the
 * socket takes its own reference on each page, so the pages may be freed
 * as soon as this returns.  A page sendpage may not take (slab memory)
 * is copied instead.  Pages are full but the last (knbd_req_iter()).
 */
int knbd_sock_send_pages(struct socket *sock, const struct bio_vec *bvec,
			 u32 off, u32 len, bool more)
{
	int sent = 0;

	while (len) {
		const struct bio_vec *bv = &bvec[off >> PAGE_SHIFT];
		u32 in = offset_in_page(off);
		u32 chunk = min(bv->bv_len - in, len);
		int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
		int ret;

		if (more || chunk < len)
			flags |= MSG_MORE | MSG_SENDPAGE_NOTLAST;
		if (sendpage_ok(bv->bv_page))
			ret = kernel_sendpage(sock, bv->bv_page, bv->bv_offset + in,
					      chunk, flags);
		else
			ret = sock_no_sendpage(sock, bv->bv_page, bv->bv_offset + in,
					       chunk, flags);
		if (ret <= 0) {
			if (sent)
				break;
			return ret ? ret : -EAGAIN;
		}
		sent += ret;
		off += ret;
		len -= ret;
		if (ret < chunk)
			break;
	}
	return sent;
}

/* Take over a socket's callbacks; @user is what they find in sk_user_data. */
void knbd_sock_hook(struct socket *sock, void *user, const struct knbd_sock_cbs *ours,
		    struct knbd_sock_cbs *saved)
{
	struct sock *sk = sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	saved->data_ready = sk->sk_data_ready;
	saved->write_space = sk->sk_write_space;
	saved->state_change = sk->sk_state_change;
	sk->sk_user_data = user;
	sk->sk_data_ready = ours->data_ready;
	sk->sk_write_space = ours->write_space;
	sk->sk_state_change = ours->state_change;
	write_unlock_bh(&sk->sk_callback_lock);
}

/* After this no callback of ours runs for @sock, nor is running. */
void knbd_sock_unhook(struct socket *sock, const struct knbd_sock_cbs *saved)
{
	struct sock *sk = sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data) {
		sk->sk_user_data = NULL;
		sk->sk_data_ready = saved->data_ready;
		sk->sk_write_space = saved->write_space;
		sk->sk_state_change = saved->state_change;
	}
	write_unlock_bh(&sk->sk_callback_lock);
}

/* Data queued to read (lockless: a hint, the reader finds out for sure). */
bool knbd_sock_has_data(struct socket *sock)
{
	return !skb_queue_empty_lockless(&sock->sk->sk_receive_queue);
}

/* Everything written to @sock has left at least once (a reset drops the rest). */
bool knbd_sock_sent_all(struct socket *sock)
{
	const struct tcp_sock *tp = tcp_sk(sock->sk);

	return READ_ONCE(tp->snd_nxt) == READ_ONCE(tp->write_seq);
}

/*
 * Where the connection's io_work runs: the CPU its packets arrive on, as
 * nvmet-tcp does, so that its data is cache-hot; any CPU until one is known.
 */
int knbd_sock_cpu(struct socket *sock)
{
	int cpu = READ_ONCE(sock->sk->sk_incoming_cpu);

	if (cpu < 0 || cpu >= nr_cpu_ids || !cpu_online(cpu))
		return WORK_CPU_UNBOUND;
	return cpu;
}

static bool knbd_io_spread;
module_param_named(io_spread, knbd_io_spread, bool, 0644);
MODULE_PARM_DESC(io_spread, "spread new connections' I/O over the CPUs in turn (default: the CPU their packets arrive on)");

/*
 * The CPU for a new connection's io_work. By default -1: the CPU its
 * packets arrive on (sk_incoming_cpu), as nvmet-tcp does; the bench
 * measured it best on block devices and with several connections
 * (Documentation/bench.md). io_spread deals connections out in turn, as
 * nvme-tcp spreads its queues: it helps one busy connection whose
 * client runs on the same CPU as its packets (a local client), at the
 * cost of a cross-CPU hop for every wakeup.
 */
int knbd_io_cpu(void)
{
	static atomic_t next = ATOMIC_INIT(0);

	if (!READ_ONCE(knbd_io_spread))
		return -1;
	return cpumask_local_spread((unsigned int)atomic_inc_return(&next) % num_online_cpus(),
				    NUMA_NO_NODE);
}

void knbd_sock_cork(struct socket *sock, bool on)
{
	tcp_sock_set_cork(sock->sk, on);
}

/*
 * A peer that vanished without a FIN or a reset (powered off, cut off)
 * leaves an idle connection nothing else would ever close.
 */
void knbd_sock_keepalive(struct socket *sock)
{
	sock_set_keepalive(sock->sk);
	tcp_sock_set_keepidle(sock->sk, KNBD_KEEPALIVE_IDLE);
	tcp_sock_set_keepintvl(sock->sk, KNBD_KEEPALIVE_INTVL);
	tcp_sock_set_keepcnt(sock->sk, KNBD_KEEPALIVE_CNT);
}

/* connect(AF_UNSPEC): tcp_disconnect(), a reset now rather than a FIN at release. */
void knbd_sock_reset(struct socket *sock)
{
	struct sockaddr unspec = { .sa_family = AF_UNSPEC };

	kernel_connect(sock, &unspec, sizeof(unspec), 0);
}

void knbd_sock_addr_port(struct sockaddr_storage *addr, u16 port, int *len)
{
	if (addr->ss_family == AF_INET6) {
		((struct sockaddr_in6 *)addr)->sin6_port = htons(port);
		*len = sizeof(struct sockaddr_in6);
	} else {
		((struct sockaddr_in *)addr)->sin_port = htons(port);
		*len = sizeof(struct sockaddr_in);
	}
}

int knbd_sock_create(struct net *net, int family, struct socket **sockp)
{
	int ret;

	ret = sock_create_kern(net, family, SOCK_STREAM, IPPROTO_TCP, sockp);
	if (ret)
		return ret;
	tcp_sock_set_nodelay((*sockp)->sk);
	knbd_sock_keepalive(*sockp);
	return 0;
}

int knbd_sock_listen(struct net *net, const struct sockaddr_storage *base,
		     u16 port, struct socket **sockp)
{
	struct sockaddr_storage addr = *base;
	struct socket *sock;
	int addrlen, ret;

	knbd_sock_addr_port(&addr, port, &addrlen);
	ret = sock_create_kern(net, addr.ss_family, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (ret)
		return ret;
	sock_set_reuseaddr(sock->sk);
	ret = kernel_bind(sock, (struct sockaddr *)&addr, addrlen);
	if (!ret)
		ret = kernel_listen(sock, SOMAXCONN);
	if (ret) {
		sock_release(sock);
		return ret;
	}
	*sockp = sock;
	return 0;
}

/* An IPv4 address, also when an IPv6 socket shows it v4-mapped; false if not one. */
static bool knbd_sock_addr_v4(const struct sockaddr_storage *ss, __be32 *v4)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET) {
		*v4 = ((const struct sockaddr_in *)ss)->sin_addr.s_addr;
		return true;
	}
	if (ss->ss_family == AF_INET6 && ipv6_addr_v4mapped(&s6->sin6_addr)) {
		*v4 = s6->sin6_addr.s6_addr32[3];
		return true;
	}
	return false;
}

/* Same host address (ports ignored): is a connection from the member we know? */
bool knbd_sock_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	__be32 a4, b4;
	bool av4 = knbd_sock_addr_v4(a, &a4), bv4 = knbd_sock_addr_v4(b, &b4);

	if (av4 || bv4)
		return av4 && bv4 && a4 == b4;
	if (a->ss_family != AF_INET6 || b->ss_family != AF_INET6)
		return false;
	return ipv6_addr_equal(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr);
}
