/*
 * lz4page: an LZ4 block compressor specialised for single pages.
 *
 * Its output is the standard LZ4 block format (lz4_Block_format.md), so
 * liblz4's LZ4_decompress_safe() expands it; only the compressing side is
 * ebb's own.  Why not liblz4's compressor: it is written for any input up
 * to 2 GiB and clears a 16 KiB table per call; a page needs positions of
 * 16 bits and an 8 KiB table, and its parse can be tuned for what the store
 * does with the result.  That tuning is @min_match: LZ4 lets a match be as
 * short as 4 bytes, but each match is a sequence the decompressor pays for
 * on every get, and a 4-byte match saves about one byte.  Taking matches
 * of 6 or more keeps liblz4's ratio on real guest swap (sometimes beats
 * it: a greedy short match no longer hides a longer one a byte later)
 * with fewer sequences; 8 trades ratio for decompression speed
 * (bench/README.md, real_swap).
 *
 * Limits: input at most 65536 bytes (positions are 16-bit).
 * Threading: one context per thread at a time; no global state.
 */
#ifndef EBB_LZ4PAGE_H
#define EBB_LZ4PAGE_H

#include <stddef.h>
#include <stdint.h>

#define LZ4PAGE_MAX_INPUT	65536
#define LZ4PAGE_HASH_LOG	12

struct lz4page {
	unsigned min_match;	/* 4..8: shortest match worth a sequence */
	uint16_t table[1u << LZ4PAGE_HASH_LOG];	/* hash -> last position */
};

/* Set up @z for matches of at least @min_match bytes.  0 or -EINVAL
 * (@min_match outside 4..8). */
int lz4page_init(struct lz4page *z, unsigned min_match);

/* Compress @len bytes of @src into at most @cap bytes at @dst.  0 and
 * *@out set; -E2BIG when the block would not fit in @cap (possibly
 * reported a few bytes early: callers keep such pages raw anyway);
 * -EINVAL when @len exceeds LZ4PAGE_MAX_INPUT. */
int lz4page_compress(struct lz4page *z, const void *src, size_t len,
		     void *dst, size_t cap, size_t *out);

#endif
