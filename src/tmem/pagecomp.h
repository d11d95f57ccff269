/*
 * pagecomp: page compressors behind one ops table, so the tmem store (and
 * anything else that keeps pages compressed) can swap lz4 for zstd without
 * knowing either library.
 *
 * Owns: nothing global.  Each user creates its own context with ctx_new();
 * a context holds the compressor's scratch state (lz4: a 16 KiB hash table,
 * zstd: CCtx + DCtx) so that no call allocates.
 *
 * Contract of every implementation:
 *   - compress() never writes more than @dst_cap bytes.  When the output
 *     would not fit it returns -E2BIG, which is the normal "store it raw"
 *     signal, not an error to log.
 *   - decompress() succeeds only if the blob expands to exactly @dst_len
 *     bytes; anything else (corrupt or truncated blob) is -EBADMSG and
 *     @dst holds garbage.
 *   - Output is deterministic for a given input, level and library version
 *     (the store does not rely on it: dedup compares decompressed bytes).
 *
 * Threading: a context is used by one thread at a time (the caller locks).
 * The ops tables themselves are immutable and shared.
 */
#ifndef EBB_PAGECOMP_H
#define EBB_PAGECOMP_H

#include <stddef.h>

struct pagecomp_ops {
	const char *name;	/* "lz4", "zstd": for logs, stats, CLI */
	/* Allocate a context.  0 or -ENOMEM. */
	int (*ctx_new)(void **ctx);
	/* Free a context; NULL is a no-op. */
	void (*ctx_free)(void *ctx);
	/* Compress @src_len bytes.  0 and *@dst_len set, or -E2BIG (does not
	 * fit in @dst_cap), or -EINVAL (@src_len too large for the library). */
	int (*compress)(void *ctx, const void *src, size_t src_len,
			void *dst, size_t dst_cap, size_t *dst_len);
	/* Expand @src_len bytes into exactly @dst_len bytes.  0 or -EBADMSG. */
	int (*decompress)(void *ctx, const void *src, size_t src_len,
			  void *dst, size_t dst_len);
};

/* LZ4 blocks from ebb's page compressor (src/lz4page.h), taking matches
 * of 6 bytes or more; liblz4 decompresses.  The store's default when its
 * config names none: liblz4's ratio on real guest swap (within 1.3%), its
 * blocks expand 1-7% faster (bench/README.md, real_swap). */
extern const struct pagecomp_ops pagecomp_lz4;

/* The same with matches of 8 bytes or more: fewer sequences, so gets
 * expand 19-40% faster, for 7% less compression on average on real guest
 * swap (bench/README.md, real_swap).  A page that would not fit the cap
 * this way (would be kept raw) is compressed again with 6+.  ebbd's
 * default. */
extern const struct pagecomp_ops pagecomp_lz4_fast;

/* liblz4's own compressor (LZ4_compress_fast, acceleration 1): the
 * reference the benchmarks compare against. */
extern const struct pagecomp_ops pagecomp_liblz4;

/* zstd level 1: 1.2-1.5x denser than lz4 on heap- and text-like pages, at
 * about half the compress speed and a quarter of the decompress speed
 * (bench/README.md).  The optional denser tier, for cold pages. */
extern const struct pagecomp_ops pagecomp_zstd;

/* Look up "lz4", "lz4-fast", "liblz4" or "zstd".  0 or -ENOENT. */
int pagecomp_find(const char *name, const struct pagecomp_ops **out);

#endif
