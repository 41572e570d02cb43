/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What drivers/knbd/connmgr.c and load.c take from the kernel, in
 * userspace, so that cmsim runs the policy's own code (built with
 * -include shim.h; include/linux/ holds empty stand-ins for the kernel
 * headers they include).  Debian's kernel runs at HZ=250.
 */
#ifndef _CMSIM_SHIM_H
#define _CMSIM_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

#define U16_MAX		UINT16_MAX
#define U32_MAX		UINT32_MAX
#define U64_MAX		UINT64_MAX
#define HZ		250

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define min(a, b)	({ typeof(a) _a = (a); typeof(b) _b = (b); _a < _b ? _a : _b; })
#define max(a, b)	({ typeof(a) _a = (a); typeof(b) _b = (b); _a > _b ? _a : _b; })
#define min_t(t, a, b)	min((t)(a), (t)(b))
#define max_t(t, a, b)	max((t)(a), (t)(b))
#define clamp(v, lo, hi) min(max(v, lo), hi)

#define time_after(a, b)	((long)((b) - (a)) < 0)
#define time_before(a, b)	time_after(b, a)
#define time_after_eq(a, b)	((long)((a) - (b)) >= 0)
#define time_before_eq(a, b)	time_after_eq(b, a)

static inline unsigned long msecs_to_jiffies(unsigned int m)
{
	return (m + (1000 / HZ) - 1) / (1000 / HZ);
}

static inline unsigned int jiffies_to_msecs(unsigned long j)
{
	return j * (1000 / HZ);
}

static inline u64 div_u64(u64 a, u32 b) { return a / b; }
static inline u64 div64_u64(u64 a, u64 b) { return a / b; }
static inline u64 mul_u64_u32_div(u64 a, u32 mul, u32 div)
{
	return (u64)((unsigned __int128)a * mul / div);
}

#define pr_info(...)			do { } while (0)
#define pr_warn(...)			do { } while (0)
#define pr_err(...)			do { } while (0)
#define pr_debug(...)			do { } while (0)
#define pr_info_ratelimited(...)	do { } while (0)
#define pr_warn_ratelimited(...)	do { } while (0)
#define WRITE_ONCE(x, v)		((x) = (v))
#define READ_ONCE(x)			(x)
#define EXPORT_SYMBOL_GPL(s)
#define __maybe_unused			__attribute__((unused))

#define BIT(n)		(1UL << (n))

/*
 * The client safety rule's hashes: any good mix will do here (the
 * simulator's clients carry no addresses or handshakes).
 */
static inline u32 cmsim_mix(u32 h)
{
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	return h ^ (h >> 16);
}

static inline u32 hash_32(u32 v, unsigned int bits)
{
	return (v * 0x61C88647u) >> (32 - bits);
}

static inline u32 jhash_1word(u32 a, u32 initval)
{
	return cmsim_mix(a ^ cmsim_mix(initval));
}

static inline u32 jhash(const void *key, u32 len, u32 initval)
{
	const u8 *k = key;
	u32 h = cmsim_mix(initval ^ len);

	while (len--)
		h = cmsim_mix(h ^ *k++);
	return h;
}

/* Types the policy's prototypes may name only by pointer. */
struct knbd_node;
struct knbd_conn;
struct knbd_volume;

#endif
