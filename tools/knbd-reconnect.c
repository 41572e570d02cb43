// SPDX-License-Identifier: GPL-2.0
/*
 * knbd-reconnect: keep an nbd.ko device fully connected.
 *
 * nbd.ko (netlink mode, several connections: nbd-client -C N) announces every
 * connection that dies with an NBD_CMD_LINK_DEAD multicast on the "nbd"
 * generic netlink family. This helper listens for those events for one
 * device, opens a new TCP connection to the group address, does the NBD
 * fixed newstyle handshake (NBD_OPT_GO) itself and hands the socket to
 * nbd.ko with NBD_CMD_RECONFIGURE, which puts it in the place of a dead
 * connection. See Documentation/reconnect.md.
 *
 * Build: make -C tools (needs libnl-3-dev libnl-genl-3-dev).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <linux/nbd-netlink.h>
#include <netlink/netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>

#include <knbd/nbd_proto.h>

/* ------------------------------------------------ NBD protocol constants -- */

/* The wire constants: the module's one copy (include/knbd/nbd_proto.h). */
#define NBD_MAGIC_OLDSTYLE	0x0000420281861253ULL	/* refused: oldstyle server */
#define NBD_MAX_NAME		4096	/* protocol limit for export names */
#define NBD_MAX_REPLY		65536	/* longest option reply we accept */
#define NBD_MAX_REPLIES		64	/* option replies to one GO */

/* ---------------------------------------------------------------- options -- */

#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		2000
#define HANDSHAKE_MS		5000
#define TICK_MS			1000
#define FAIL_LOG_EVERY_MS	30000
#define MAX_PENDING		1024

static const char *prog = "knbd-reconnect";

static struct {
	int index;		/* nbd device index, -1 if none (-c) */
	const char *host;
	const char *port;
	const char *export_name;
	const char *backend;	/* NBD_ATTR_BACKEND_IDENTIFIER, NULL: from sysfs */
	long long dead_timeout;	/* -D, -1: leave as is */
	bool startup_reconnect;	/* -r */
	bool check_only;	/* -c */
	bool exit_on_disconnect; /* -x */
	bool verbose;		/* -v */
	bool nbdtab;		/* -t: host, port, export from the nbdtab entry */
	const char *nbdtab_file; /* -f, default /etc/nbdtab */
	bool print_config;	/* --print-config */
} opt = {
	.index = -1,
	.port = "10809",
	.export_name = "",
	.dead_timeout = -1,
	.nbdtab_file = "/etc/nbdtab",
};

#ifndef KNBD_VERSION
#define KNBD_VERSION "unknown"
#endif

/* ---------------------------------------------------------------- logging -- */

static char dev_name[32] = "-";

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02d %02d:%02d:%02d.%03ld %s %s: ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, prog, dev_name);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n = strlen(line);
	line[n++] = '\n';
	/* one write per line: lines of several processes do not mix */
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nothing sensible to do */
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- signals -- */

static volatile sig_atomic_t stop_signal;
static sigset_t wait_mask;	/* the mask ppoll() runs with: signals open */

static void on_signal(int sig)
{
	stop_signal = sig;
}

static void setup_signals(void)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	/* signals are only delivered inside ppoll(): no race with the flag */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGHUP);
}

/* poll one fd until DEADLINE (monotonic ms); 1 ready, 0 timeout, -1 stop */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int64_t left = deadline - now_ms();
		struct timespec ts;
		int r;

		if (stop_signal)
			return -1;
		if (left <= 0)
			return 0;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		r = ppoll(&pfd, 1, &ts, &wait_mask);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return 1;	/* let the following I/O report it */
	}
}

/* -------------------------------------------------------------- handshake -- */

struct export_info {
	uint64_t size;
	uint16_t flags;
	bool have_bs;
	uint32_t min_bs, pref_bs, max_bs;
	bool via_export_name;
};

static char hs_err[512];

static int hs_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int hs_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hs_err, sizeof(hs_err), fmt, ap);
	va_end(ap);
	return -1;
}

static int read_full(int fd, void *buf, size_t len, int64_t deadline, const char *what)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= n;
			continue;
		}
		if (n == 0)
			return hs_fail("server closed the connection while we read %s", what);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return hs_fail("reading %s: %s", what, strerror(errno));
		n = wait_fd(fd, POLLIN, deadline);
		if (n < 0)
			return hs_fail("interrupted");
		if (n == 0)
			return hs_fail("timed out reading %s (handshake limit %d ms)", what,
				       HANDSHAKE_MS);
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, int64_t deadline, const char *what)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return hs_fail("sending %s: %s", what, strerror(errno));
		n = wait_fd(fd, POLLOUT, deadline);
		if (n < 0)
			return hs_fail("interrupted");
		if (n == 0)
			return hs_fail("timed out sending %s", what);
	}
	return 0;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

static uint16_t get_be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return be16toh(v);
}

static uint8_t *put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
	return p + 8;
}

static uint8_t *put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
	return p + 4;
}

static uint8_t *put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
	return p + 2;
}

static const char *rep_err_name(uint32_t t)
{
	switch (t) {
	case KNBD_NBD_REP_ERR_UNSUP: return "NBD_REP_ERR_UNSUP";
	case KNBD_NBD_REP_ERR_POLICY: return "NBD_REP_ERR_POLICY";
	case KNBD_NBD_REP_ERR_INVALID: return "NBD_REP_ERR_INVALID";
	case KNBD_NBD_REP_ERR_PLATFORM: return "NBD_REP_ERR_PLATFORM";
	case KNBD_NBD_REP_ERR_TLS_REQD: return "NBD_REP_ERR_TLS_REQD";
	case KNBD_NBD_REP_ERR_UNKNOWN: return "NBD_REP_ERR_UNKNOWN";
	case KNBD_NBD_REP_ERR_SHUTDOWN: return "NBD_REP_ERR_SHUTDOWN";
	case KNBD_NBD_REP_ERR_BLOCK_SIZE_REQD: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
	case KNBD_NBD_REP_ERR_TOO_BIG: return "NBD_REP_ERR_TOO_BIG";
	default: return "NBD_REP_ERR_?";
	}
}

/* printable copy of a server message, bounded */
static void printable(char *dst, size_t dlen, const uint8_t *src, size_t slen)
{
	size_t i, j = 0;

	for (i = 0; i < slen && j + 1 < dlen; i++)
		dst[j++] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
	dst[j] = '\0';
}

/* TCP connection to host:port with a deadline; returns fd or -1 */
static int tcp_connect(int64_t deadline)
{
	struct addrinfo hints, *res, *ai;
	char why[256] = "no address";
	int fd = -1, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	r = getaddrinfo(opt.host, opt.port, &hints, &res);
	if (r)
		return hs_fail("resolving %s port %s: %s", opt.host, opt.port, gai_strerror(r));

	for (ai = res; ai; ai = ai->ai_next) {
		int err = 0;
		socklen_t el = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			snprintf(why, sizeof(why), "socket: %s", strerror(errno));
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			snprintf(why, sizeof(why), "connect: %s", strerror(errno));
			goto next;
		}
		r = wait_fd(fd, POLLOUT, deadline);
		if (r <= 0) {
			snprintf(why, sizeof(why), "connect: %s",
				 r < 0 ? "interrupted" : "timed out");
			goto next;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (!err)
			break;
		snprintf(why, sizeof(why), "connect: %s", strerror(err));
next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return hs_fail("%s:%s: %s", opt.host, opt.port, why);
	return fd;
}

/* KNBD_NBD_OPT_EXPORT_NAME, for servers without KNBD_NBD_OPT_GO */
static int hs_export_name(int fd, bool no_zeroes, struct export_info *ei, int64_t dl)
{
	uint8_t hdr[16], rep[10 + 124];
	size_t nlen = strlen(opt.export_name);

	put_be32(put_be32(put_be64(hdr, KNBD_NBD_MAGIC_IHAVEOPT), KNBD_NBD_OPT_EXPORT_NAME), nlen);
	if (write_full(fd, hdr, sizeof(hdr), dl, "KNBD_NBD_OPT_EXPORT_NAME") ||
	    write_full(fd, opt.export_name, nlen, dl, "the export name"))
		return -1;
	if (read_full(fd, rep, no_zeroes ? 10 : sizeof(rep), dl,
		      "the KNBD_NBD_OPT_EXPORT_NAME reply (the server closes it for an unknown export)"))
		return -1;
	ei->size = get_be64(rep);
	ei->flags = get_be16(rep + 8);
	ei->via_export_name = true;
	return 0;
}

/*
 * Fixed newstyle handshake up to the transmission phase. Returns 0 and fills
 * EI, or -1 with hs_err set.
 */
static int handshake(int fd, struct export_info *ei, int64_t dl)
{
	static uint8_t buf[NBD_MAX_REPLY];
	uint8_t greet[18], *p;
	uint64_t magic;
	uint16_t hflags;
	uint32_t cflags;
	size_t nlen = strlen(opt.export_name);
	bool have_export = false, no_zeroes;
	int i;

	memset(ei, 0, sizeof(*ei));
	if (read_full(fd, greet, 16, dl, "the server greeting"))
		return -1;
	if (get_be64(greet) != KNBD_NBD_MAGIC_INIT)
		return hs_fail("not an NBD server (bad greeting magic)");
	magic = get_be64(greet + 8);
	if (magic == NBD_MAGIC_OLDSTYLE)
		return hs_fail("oldstyle NBD server: not supported");
	if (magic != KNBD_NBD_MAGIC_IHAVEOPT)
		return hs_fail("bad greeting magic 0x%016" PRIx64, magic);
	if (read_full(fd, greet + 16, 2, dl, "the handshake flags"))
		return -1;
	hflags = get_be16(greet + 16);
	if (!(hflags & KNBD_NBD_HS_FLAG_FIXED_NEWSTYLE))
		return hs_fail("server does not offer fixed newstyle (flags 0x%x)", hflags);
	no_zeroes = hflags & KNBD_NBD_HS_FLAG_NO_ZEROES;
	cflags = KNBD_NBD_CL_FLAG_FIXED_NEWSTYLE | (no_zeroes ? KNBD_NBD_CL_FLAG_NO_ZEROES : 0);
	put_be32(greet, cflags);
	if (write_full(fd, greet, 4, dl, "the client flags"))
		return -1;

	/* KNBD_NBD_OPT_GO: name, one info request (block size) */
	p = put_be64(buf, KNBD_NBD_MAGIC_IHAVEOPT);
	p = put_be32(p, KNBD_NBD_OPT_GO);
	p = put_be32(p, 4 + nlen + 2 + 2);
	p = put_be32(p, nlen);
	memcpy(p, opt.export_name, nlen);
	p += nlen;
	p = put_be16(p, 1);
	p = put_be16(p, KNBD_NBD_INFO_BLOCK_SIZE);
	if (write_full(fd, buf, p - buf, dl, "KNBD_NBD_OPT_GO"))
		return -1;

	for (i = 0; i < NBD_MAX_REPLIES; i++) {
		uint8_t rh[20];
		uint32_t ropt, type, len;

		if (read_full(fd, rh, sizeof(rh), dl, "an option reply"))
			return -1;
		if (get_be64(rh) != KNBD_NBD_MAGIC_OPT_REPLY)
			return hs_fail("bad option reply magic 0x%016" PRIx64, get_be64(rh));
		ropt = get_be32(rh + 8);
		type = get_be32(rh + 12);
		len = get_be32(rh + 16);
		if (ropt != KNBD_NBD_OPT_GO)
			return hs_fail("reply to option %u, expected KNBD_NBD_OPT_GO", ropt);
		if (len > sizeof(buf))
			return hs_fail("option reply of %u bytes (limit %zu)", len, sizeof(buf));
		if (read_full(fd, buf, len, dl, "option reply data"))
			return -1;

		if (type & KNBD_NBD_REP_FLAG_ERROR) {
			char msg[201];

			if (type == KNBD_NBD_REP_ERR_UNSUP && !have_export)
				return hs_export_name(fd, no_zeroes, ei, dl);
			printable(msg, sizeof(msg), buf, len);
			return hs_fail("server refused export '%s': %s%s%s", opt.export_name,
				       rep_err_name(type), msg[0] ? ": " : "", msg);
		}
		if (type == KNBD_NBD_REP_ACK) {
			if (!have_export)
				return hs_fail("KNBD_NBD_REP_ACK without KNBD_NBD_INFO_EXPORT");
			return 0;
		}
		if (type != KNBD_NBD_REP_INFO)
			return hs_fail("unexpected option reply type %u", type);
		if (len < 2)
			return hs_fail("KNBD_NBD_REP_INFO of %u bytes", len);
		switch (get_be16(buf)) {
		case KNBD_NBD_INFO_EXPORT:
			if (len != 12)
				return hs_fail("KNBD_NBD_INFO_EXPORT of %u bytes", len);
			ei->size = get_be64(buf + 2);
			ei->flags = get_be16(buf + 10);
			have_export = true;
			break;
		case KNBD_NBD_INFO_BLOCK_SIZE:
			if (len != 14)
				return hs_fail("KNBD_NBD_INFO_BLOCK_SIZE of %u bytes", len);
			ei->min_bs = get_be32(buf + 2);
			ei->pref_bs = get_be32(buf + 6);
			ei->max_bs = get_be32(buf + 10);
			ei->have_bs = true;
			break;
		default:
			break;	/* name, description: not needed */
		}
	}
	return hs_fail("more than %d replies to KNBD_NBD_OPT_GO", NBD_MAX_REPLIES);
}

/* ------------------------------------------------------------- the device -- */

static int read_sysfs(const char *attr, char *buf, size_t len)
{
	char path[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/block/nbd%d/%s", opt.index, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

/* started by nbd-client (the pid attribute exists while it is) */
static bool dev_connected(void)
{
	char b[32];

	return read_sysfs("pid", b, sizeof(b)) == 0;
}

/* size in 512-byte sectors, 0 if unknown */
static uint64_t dev_sectors(void)
{
	char b[32];

	if (read_sysfs("size", b, sizeof(b)))
		return 0;
	return strtoull(b, NULL, 10);
}

static int dev_ro(void)
{
	char b[8];

	if (read_sysfs("ro", b, sizeof(b)))
		return -1;
	return b[0] == '1';
}

/* ---------------------------------------------------------------- netlink -- */

static struct nl_sock *cmd_sk, *ev_sk;
static int nbd_family;

static uint64_t n_events, n_reconnects, n_failures, n_unconfirmed;
static unsigned int pending;		/* dead links not yet replaced */
static bool probing;			/* -r: reconnect until nbd.ko has no dead slot */
static bool overflowed;
static int64_t ev_time[MAX_PENDING];	/* FIFO: when each pending link died */
static unsigned int ev_head;		/* index of the oldest */
static int64_t probe_since;

static void pending_push(int64_t t)
{
	if (pending < MAX_PENDING) {
		ev_time[(ev_head + pending) % MAX_PENDING] = t;
		pending++;
	}
}

/* drop the oldest pending link; returns when it died */
static int64_t pending_pop(void)
{
	int64_t t;

	if (!pending)
		return probe_since;
	t = ev_time[ev_head];
	ev_head = (ev_head + 1) % MAX_PENDING;
	pending--;
	return t;
}

static int ev_valid(struct nl_msg *msg, void *arg)
{
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct genlmsghdr *gh;
	struct nlattr *tb[NBD_ATTR_MAX + 1];
	uint32_t index;

	(void)arg;
	if (nlh->nlmsg_type != nbd_family)
		return NL_SKIP;
	if (genlmsg_parse(nlh, 0, tb, NBD_ATTR_MAX, NULL) < 0 || !tb[NBD_ATTR_INDEX])
		return NL_SKIP;
	gh = nlmsg_data(nlh);
	if (gh->cmd != NBD_CMD_LINK_DEAD)
		return NL_SKIP;
	index = nla_get_u32(tb[NBD_ATTR_INDEX]);
	if ((int)index != opt.index) {
		if (opt.verbose)
			logmsg("link dead on nbd%u (not watched)", index);
		return NL_SKIP;
	}
	n_events++;
	pending_push(now_ms());
	logmsg("LINK_DEAD event #%" PRIu64 ": a connection died (%u to restore)",
	       n_events, pending);
	return NL_OK;
}

static int nl_open(void)
{
	int grp, err;

	cmd_sk = nl_socket_alloc();
	ev_sk = nl_socket_alloc();
	if (!cmd_sk || !ev_sk) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return -1;
	}
	err = genl_connect(cmd_sk);
	if (!err)
		err = genl_connect(ev_sk);
	if (err) {
		fprintf(stderr, "%s: generic netlink: %s\n", prog, nl_geterror(err));
		return -1;
	}
	nbd_family = genl_ctrl_resolve(cmd_sk, NBD_GENL_FAMILY_NAME);
	if (nbd_family < 0) {
		fprintf(stderr, "%s: generic netlink family \"%s\": %s (is nbd.ko loaded?)\n",
			prog, NBD_GENL_FAMILY_NAME, nl_geterror(nbd_family));
		return -1;
	}
	grp = genl_ctrl_resolve_grp(cmd_sk, NBD_GENL_FAMILY_NAME, NBD_GENL_MCAST_GROUP_NAME);
	if (grp < 0) {
		fprintf(stderr, "%s: multicast group \"%s\": %s\n", prog,
			NBD_GENL_MCAST_GROUP_NAME, nl_geterror(grp));
		return -1;
	}
	nl_socket_disable_seq_check(ev_sk);
	nl_socket_modify_cb(ev_sk, NL_CB_VALID, NL_CB_CUSTOM, ev_valid, NULL);
	err = nl_socket_add_membership(ev_sk, grp);
	if (err) {
		fprintf(stderr, "%s: joining \"%s\": %s\n", prog, NBD_GENL_MCAST_GROUP_NAME,
			nl_geterror(err));
		return -1;
	}
	nl_socket_set_buffer_size(ev_sk, 1 << 20, 0);
	nl_socket_set_nonblocking(ev_sk);

	/* a kernel that never answers must not hang us */
	{
		struct timeval tv = { .tv_sec = 5 };

		setsockopt(nl_socket_get_fd(cmd_sk), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return 0;
}

/* NBD_CMD_RECONFIGURE for the device; FD >= 0 adds a socket; DEAD_TMO >= 0 sets it */
static int nbd_reconfigure(int fd, long long dead_tmo)
{
	char backend[256] = "";
	struct nl_msg *msg;
	struct nlattr *socks, *item;
	int err;

	if (opt.backend)
		snprintf(backend, sizeof(backend), "%s", opt.backend);
	else
		read_sysfs("backend", backend, sizeof(backend));

	msg = nlmsg_alloc();
	if (!msg)
		return -NLE_NOMEM;
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, nbd_family, 0, 0,
			 NBD_CMD_RECONFIGURE, NBD_GENL_VERSION))
		goto full;
	if (nla_put_u32(msg, NBD_ATTR_INDEX, opt.index))
		goto full;
	if (backend[0] && nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, backend))
		goto full;
	if (dead_tmo >= 0 && nla_put_u64(msg, NBD_ATTR_DEAD_CONN_TIMEOUT, dead_tmo))
		goto full;
	if (fd >= 0) {
		socks = nla_nest_start(msg, NBD_ATTR_SOCKETS);
		if (!socks)
			goto full;
		item = nla_nest_start(msg, NBD_SOCK_ITEM);
		if (!item || nla_put_u32(msg, NBD_SOCK_FD, fd))
			goto full;
		nla_nest_end(msg, item);
		nla_nest_end(msg, socks);
	}
	err = nl_send_sync(cmd_sk, msg);	/* frees msg */
	return err;
full:
	nlmsg_free(msg);
	return -NLE_NOMEM;
}

static void drain_events(void)
{
	struct nl_cb *cb = nl_socket_get_cb(ev_sk);
	int i;

	/* nl_recvmsgs_report(): messages handled, 0 when nothing is queued */
	for (i = 0; i < 256; i++) {
		int err = nl_recvmsgs_report(ev_sk, cb);

		if (err > 0)
			continue;
		if (err == 0 || err == -NLE_AGAIN)
			break;
		if (err == -NLE_NOMEM) {
			/* ENOBUFS: the socket overflowed and events were lost */
			if (!overflowed)
				logmsg("netlink event queue overflowed: some events lost");
			overflowed = true;
			if (!probing)
				probe_since = now_ms();
			probing = true;
			continue;
		}
		logmsg("netlink events: %s", nl_geterror(err));
		break;
	}
	nl_cb_put(cb);
}

/* -------------------------------------------------------------- reconnect -- */

static int handshake_to_group(struct export_info *ei)
{
	int64_t dl = now_ms() + HANDSHAKE_MS;
	int fd, one = 1;

	fd = tcp_connect(dl);
	if (fd < 0)
		return -1;
	if (handshake(fd, ei, dl)) {
		close(fd);
		return -1;
	}
	/* nbd.ko reads with sock_recvmsg(): blocking, no timeouts of ours */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		hs_fail("fcntl: %s", strerror(errno));
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	return fd;
}

static bool export_matches(const struct export_info *ei)
{
	uint64_t sectors = dev_sectors();
	int ro = dev_ro();

	if (sectors && (ei->size >> 9) != sectors) {
		hs_fail("export '%s' has %" PRIu64 " bytes, nbd%d has %" PRIu64
			": not the same export", opt.export_name, ei->size, opt.index,
			sectors << 9);
		return false;
	}
	if (ro == 0 && (ei->flags & KNBD_NBD_FLAG_READ_ONLY)) {
		hs_fail("export '%s' is read-only now, nbd%d is writable", opt.export_name,
			opt.index);
		return false;
	}
	return true;
}

enum { RC_FAIL, RC_ADOPTED, RC_UNCONFIRMED, RC_NOSLOT };

static int reconnect_once(char *detail, size_t dlen)
{
	struct export_info ei;
	struct timeval tv;
	socklen_t tl = sizeof(tv);
	int fd, err;

	fd = handshake_to_group(&ei);
	if (fd < 0)
		return RC_FAIL;
	if (!export_matches(&ei)) {
		close(fd);
		return RC_FAIL;
	}
	err = nbd_reconfigure(fd, -1);
	if (err < 0) {
		close(fd);
		hs_fail("NBD_CMD_RECONFIGURE: %s%s", nl_geterror(err),
			err == -NLE_INVAL ? " (device not configured, or backend mismatch)" : "");
		return RC_FAIL;
	}
	snprintf(detail, dlen, "export size %" PRIu64 " flags 0x%x%s", ei.size, ei.flags,
		 ei.via_export_name ? " (KNBD_NBD_OPT_EXPORT_NAME)" : "");
	/*
	 * nbd.ko answers 0 also when it had no dead connection to replace (it
	 * then drops the socket). When it takes the socket and the device has a
	 * request timeout (nbd-client -t), it sets the socket's send timeout to
	 * it: that is how we tell the two apart.
	 */
	memset(&tv, 0, sizeof(tv));
	getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl);
	close(fd);
	if (tv.tv_sec || tv.tv_usec)
		return RC_ADOPTED;
	return RC_UNCONFIRMED;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: %s -d DEV -H HOST [-p PORT] [-N EXPORT] [-D SECS] [-r] [-x] [-b BACKEND] [-v]\n"
"       %s -d DEV [-t] [-f FILE] [options]    (host, port, export from /etc/nbdtab)\n"
"       %s -c -H HOST [-p PORT] [-N EXPORT] [-d DEV]\n"
"\n"
"Keep an nbd.ko device fully connected: on every NBD_CMD_LINK_DEAD event for\n"
"DEV, connect to HOST:PORT (the group address), negotiate EXPORT (NBD_OPT_GO)\n"
"and hand the socket to nbd.ko (NBD_CMD_RECONFIGURE), which puts it in the\n"
"place of the dead connection. Retries with backoff (%d ms .. %d s).\n"
"\n"
"  -d, --device DEV           /dev/nbdN, nbdN or N\n"
"  -H, --host HOST            server or group address (name or IP)\n"
"  -p, --port PORT            TCP port (default 10809)\n"
"  -N, --export NAME          export name (default: \"\")\n"
"  -t, --nbdtab               take host, export and port= of DEV's entry in the\n"
"                             nbdtab (nbdtab(5)); the default when -H is not\n"
"                             given; options given here win\n"
"  -f, --nbdtab-file FILE     read FILE instead of /etc/nbdtab (implies -t)\n"
"  -D, --dead-timeout SECS    set the device's dead-connection timeout: with\n"
"                             every connection down, I/O waits up to SECS for a\n"
"                             reconnect instead of failing (set again whenever\n"
"                             the device gets connected)\n"
"  -r, --startup-reconnect    at startup, restore connections already dead\n"
"  -x, --exit-on-disconnect   exit when the device is disconnected (nbd-client -d)\n"
"  -b, --backend ID           backend identifier (default: /sys/block/nbdN/backend)\n"
"  -c, --check                check only: handshake, print the export size and\n"
"                             flags, exit\n"
"  -P, --print-config         print the settings (after the nbdtab) and exit\n"
"  -v, --verbose              also log events of other devices\n"
"  -V, --version              print the version and exit\n"
"  -h, --help                 this help\n"
"\n"
"Logs one line per event to stderr. SIGTERM/SIGINT: exit 0 with a summary.\n"
"See knbd-reconnect(8).\n",
		prog, prog, prog, BACKOFF_MIN_MS, BACKOFF_MAX_MS / 1000);
}

static int parse_dev(const char *s)
{
	const char *p = s;
	char *end;
	long v;

	if (!strncmp(p, "/dev/", 5))
		p += 5;
	if (!strncmp(p, "nbd", 3))
		p += 3;
	errno = 0;
	v = strtol(p, &end, 10);
	if (errno || end == p || *end || v < 0 || v > INT_MAX)
		return -1;
	return (int)v;
}

/* ----------------------------------------------------------------- nbdtab -- */

/*
 * /etc/nbdtab, as nbd-client(8) reads it (nbdtab(5)): one device a line,
 * "DEV HOST EXPORT [OPTION,OPTION...]", '#' starts a comment line, fields
 * separated by blanks. DEV is nbdN or /dev/nbdN. Of the options, port=N
 * gives the port; unix and the TLS ones (certfile=, keyfile=, cacertfile=,
 * tlshostname=) ask for what this helper cannot do and are refused; the
 * others (conns=, timeout=, bs=, persist, swap, ...) are nbd-client's and
 * ignored. Values given on the command line win over the entry's.
 * Returns 0, or 2 after printing "FILE:LINE: reason".
 */
static int nbdtab_option(const char *file, int ln, char *o, bool port_set)
{
	static const char *const refused[] = {
		"unix", "certfile", "keyfile", "cacertfile", "tlshostname", "tls", NULL,
	};
	char *eq = strchr(o, '=');
	size_t klen = eq ? (size_t)(eq - o) : strlen(o);
	int i;

	if (!klen) {
		fprintf(stderr, "%s: %s:%d: empty option\n", prog, file, ln);
		return 2;
	}
	for (i = 0; refused[i]; i++) {
		if (strlen(refused[i]) == klen && !strncmp(o, refused[i], klen)) {
			fprintf(stderr, "%s: %s:%d: option '%.*s' is not supported by %s\n",
				prog, file, ln, (int)klen, o, prog);
			return 2;
		}
	}
	if (klen == 4 && !strncmp(o, "port", 4)) {
		char *end;
		long v;

		errno = 0;
		v = eq ? strtol(eq + 1, &end, 10) : -1;
		if (!eq || errno || end == eq + 1 || *end || v < 1 || v > 65535) {
			fprintf(stderr, "%s: %s:%d: bad port in '%s' (1..65535)\n", prog, file,
				ln, o);
			return 2;
		}
		if (!port_set) {
			opt.port = strdup(eq + 1);
			if (!opt.port)
				return 2;
		}
	}
	return 0;
}

static int read_nbdtab(bool host_set, bool port_set, bool export_set)
{
	const char *file = opt.nbdtab_file;
	char line[8192];
	int ln = 0, rc = 2;
	FILE *f;

	f = fopen(file, "re");
	if (!f) {
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *dev, *host, *exp, *opts, *extra, *o;

		ln++;
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(stderr, "%s: %s:%d: line too long\n", prog, file, ln);
			goto out;
		}
		dev = strtok_r(line, " \t\r\n", &save);
		if (!dev || dev[0] == '#')
			continue;
		if (parse_dev(dev) != opt.index)
			continue;	/* another device, or one we cannot parse: nbd-client's */
		host = strtok_r(NULL, " \t\r\n", &save);
		exp = strtok_r(NULL, " \t\r\n", &save);
		opts = strtok_r(NULL, " \t\r\n", &save);
		extra = strtok_r(NULL, " \t\r\n", &save);
		if (!host || !exp) {
			fprintf(stderr, "%s: %s:%d: %s: want \"%s HOST EXPORT [OPTIONS]\"\n",
				prog, file, ln, dev, dev);
			goto out;
		}
		if (extra && extra[0] != '#') {
			fprintf(stderr, "%s: %s:%d: unexpected '%s' after the options\n", prog,
				file, ln, extra);
			goto out;
		}
		if (opts && opts[0] == '#')
			opts = NULL;
		for (o = opts ? strtok_r(opts, ",", &save) : NULL; o;
		     o = strtok_r(NULL, ",", &save)) {
			if (nbdtab_option(file, ln, o, port_set))
				goto out;
		}
		if (!host_set)
			opt.host = strdup(host);
		if (!export_set)
			opt.export_name = strdup(exp);
		if (!opt.host || !opt.export_name)
			goto out;
		rc = 0;
		goto out;
	}
	if (ferror(f))
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
	else
		fprintf(stderr, "%s: %s: no entry for nbd%d\n", prog, file, opt.index);
out:
	fclose(f);
	return rc;
}

static void print_config(void)
{
	printf("device nbd%d\nhost %s\nport %s\nexport %s\n", opt.index, opt.host, opt.port,
	       opt.export_name);
	if (opt.nbdtab)
		printf("nbdtab %s\n", opt.nbdtab_file);
	if (opt.dead_timeout >= 0)
		printf("dead-timeout %lld\n", opt.dead_timeout);
	if (opt.backend)
		printf("backend %s\n", opt.backend);
	printf("startup-reconnect %d\nexit-on-disconnect %d\n", opt.startup_reconnect,
	       opt.exit_on_disconnect);
}

static int check_only(void)
{
	struct export_info ei;
	int fd;

	fd = handshake_to_group(&ei);
	if (fd < 0) {
		logmsg("handshake with %s:%s failed: %s", opt.host, opt.port, hs_err);
		return 1;
	}
	close(fd);
	if (opt.index >= 0 && !export_matches(&ei)) {
		logmsg("%s", hs_err);
		return 1;
	}
	printf("export '%s' size %" PRIu64 " flags 0x%x", opt.export_name, ei.size, ei.flags);
	if (ei.have_bs)
		printf(" block sizes %u/%u/%u", ei.min_bs, ei.pref_bs, ei.max_bs);
	printf("%s\n", ei.via_export_name ? " (KNBD_NBD_OPT_EXPORT_NAME)" : "");
	return 0;
}

static void apply_dead_timeout(void)
{
	int err;

	if (opt.dead_timeout < 0)
		return;
	err = nbd_reconfigure(-1, opt.dead_timeout);
	if (err < 0)
		logmsg("setting the dead-connection timeout to %llds: %s", opt.dead_timeout,
		       nl_geterror(err));
	else
		logmsg("dead-connection timeout set to %llds", opt.dead_timeout);
}

int main(int argc, char **argv)
{
	int c, backoff = BACKOFF_MIN_MS;
	int64_t next_try = 0, next_tick = 0, last_fail_log = 0;
	char last_err[sizeof(hs_err)] = "";
	bool connected;

	static const struct option longopts[] = {
		{ "device",		required_argument,	NULL, 'd' },
		{ "host",		required_argument,	NULL, 'H' },
		{ "port",		required_argument,	NULL, 'p' },
		{ "export",		required_argument,	NULL, 'N' },
		{ "nbdtab",		no_argument,		NULL, 't' },
		{ "nbdtab-file",	required_argument,	NULL, 'f' },
		{ "dead-timeout",	required_argument,	NULL, 'D' },
		{ "startup-reconnect",	no_argument,		NULL, 'r' },
		{ "exit-on-disconnect",	no_argument,		NULL, 'x' },
		{ "backend",		required_argument,	NULL, 'b' },
		{ "check",		no_argument,		NULL, 'c' },
		{ "print-config",	no_argument,		NULL, 'P' },
		{ "verbose",		no_argument,		NULL, 'v' },
		{ "version",		no_argument,		NULL, 'V' },
		{ "help",		no_argument,		NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool port_set = false, export_set = false;

	while ((c = getopt_long(argc, argv, "d:H:p:N:tf:D:rxb:cPvVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			opt.index = parse_dev(optarg);
			if (opt.index < 0) {
				fprintf(stderr, "%s: bad device '%s'\n", prog, optarg);
				return 2;
			}
			break;
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = optarg; port_set = true; break;
		case 'N': opt.export_name = optarg; export_set = true; break;
		case 't': opt.nbdtab = true; break;
		case 'f': opt.nbdtab_file = optarg; opt.nbdtab = true; break;
		case 'D': {
			char *end;

			errno = 0;
			opt.dead_timeout = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || opt.dead_timeout < 0 ||
			    opt.dead_timeout > 86400 * 365) {
				fprintf(stderr, "%s: bad -D '%s'\n", prog, optarg);
				return 2;
			}
			break;
		}
		case 'r': opt.startup_reconnect = true; break;
		case 'x': opt.exit_on_disconnect = true; break;
		case 'b': opt.backend = optarg; break;
		case 'c': opt.check_only = true; break;
		case 'P': opt.print_config = true; break;
		case 'v': opt.verbose = true; break;
		case 'V': printf("%s %s\n", prog, KNBD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		usage(stderr);
		return 2;
	}
	/* no -H: the device's nbdtab entry, as nbd-client would use it */
	if (!opt.host && opt.index >= 0)
		opt.nbdtab = true;
	if (opt.nbdtab) {
		if (opt.index < 0) {
			fprintf(stderr, "%s: --nbdtab needs -d DEV\n", prog);
			return 2;
		}
		c = read_nbdtab(opt.host != NULL, port_set, export_set);
		if (c)
			return c;
	}
	if (!opt.host || (opt.index < 0 && !opt.check_only)) {
		usage(stderr);
		return 2;
	}
	if (strlen(opt.export_name) > NBD_MAX_NAME) {
		fprintf(stderr, "%s: export name longer than %d bytes\n", prog, NBD_MAX_NAME);
		return 2;
	}
	if (opt.backend && strlen(opt.backend) > 255) {
		fprintf(stderr, "%s: backend identifier too long\n", prog);
		return 2;
	}
	if (opt.index >= 0)
		snprintf(dev_name, sizeof(dev_name), "nbd%d", opt.index);
	if (opt.print_config) {
		print_config();
		return 0;
	}
	setup_signals();

	if (opt.check_only)
		return check_only();

	if (nl_open())
		return 1;
	connected = dev_connected();
	logmsg("watching nbd%d (%s), group %s port %s export '%s'", opt.index,
	       connected ? "connected" : "not connected", opt.host, opt.port, opt.export_name);
	if (connected) {
		apply_dead_timeout();
		if (opt.startup_reconnect) {
			probing = true;
			probe_since = now_ms();
		}
	}

	while (!stop_signal) {
		struct pollfd pfd = { .fd = nl_socket_get_fd(ev_sk), .events = POLLIN };
		bool want = (pending || probing) && connected;
		int64_t now = now_ms(), wait = next_tick - now;
		struct timespec ts;
		int r;

		if (want && next_try - now < wait)
			wait = next_try - now;
		if (wait < 0)
			wait = 0;
		ts.tv_sec = wait / 1000;
		ts.tv_nsec = (wait % 1000) * 1000000;
		r = ppoll(&pfd, 1, &ts, &wait_mask);
		if (stop_signal)
			break;
		if (r < 0 && errno != EINTR) {
			logmsg("ppoll: %s", strerror(errno));
			break;
		}
		if (r > 0)
			drain_events();

		now = now_ms();
		if (now >= next_tick) {
			bool c2 = dev_connected();

			next_tick = now + TICK_MS;
			if (c2 && !connected) {
				logmsg("device connected");
				apply_dead_timeout();
			} else if (!c2 && connected) {
				logmsg("device disconnected%s",
				       pending || probing ? ": dropping the pending reconnects" : "");
				pending = 0;
				probing = false;
				if (opt.exit_on_disconnect)
					break;
			}
			connected = c2;
		}
		if (!(pending || probing) || !connected || now < next_try)
			continue;

		{
			char detail[256] = "";
			int64_t since;
			int rc;

			rc = reconnect_once(detail, sizeof(detail));
			now = now_ms();
			if (rc == RC_FAIL) {
				if (stop_signal)
					break;
				n_failures++;
				if (strcmp(hs_err, last_err) ||
				    now - last_fail_log >= FAIL_LOG_EVERY_MS) {
					logmsg("reconnect attempt failed (%" PRIu64
					       " so far), retrying in %d ms: %s",
					       n_failures, backoff, hs_err);
					snprintf(last_err, sizeof(last_err), "%s", hs_err);
					last_fail_log = now;
				}
				next_try = now + backoff;
				backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
				continue;
			}
			backoff = BACKOFF_MIN_MS;
			next_try = now;
			last_err[0] = '\0';
			if (rc == RC_ADOPTED) {
				n_reconnects++;
				since = pending_pop();
				logmsg("reconnected #%" PRIu64 ": new connection to %s:%s taken by nbd.ko, "
				       "%" PRId64 " ms after the %s (%s; %u still to restore)",
				       n_reconnects, opt.host, opt.port, now - since,
				       pending || !probing ? "event" : "start", detail, pending);
			} else if (probing && !pending) {
				/* nothing (more) was dead, or cannot tell: stop probing */
				probing = false;
				logmsg("no dead connection left (nbd.ko did not take the socket, "
				       "or cannot tell: device without -t timeout)");
			} else {
				n_unconfirmed++;
				n_reconnects++;
				since = pending_pop();
				logmsg("reconnected #%" PRIu64 " (unconfirmed: device without a -t "
				       "timeout, or nothing left to replace), %" PRId64
				       " ms after the event (%s; %u still to restore)",
				       n_reconnects, now - since, detail, pending);
			}
			if (!pending && !probing)
				overflowed = false;
		}
	}

	logmsg("exiting%s: %" PRIu64 " LINK_DEAD events, %" PRIu64 " reconnects (%" PRIu64
	       " unconfirmed), %" PRIu64 " failed attempts, %u still dead",
	       stop_signal == SIGTERM ? " on SIGTERM" : stop_signal == SIGINT ? " on SIGINT" :
	       stop_signal ? " on a signal" : "", n_events, n_reconnects, n_unconfirmed,
	       n_failures, pending);
	nl_socket_free(ev_sk);
	nl_socket_free(cmd_sk);
	return 0;
}
