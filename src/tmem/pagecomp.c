/*
 * pagecomp: thin adapters from the pagecomp contract (pagecomp.h) to the
 * compressors.
 *
 * lz4, lz4-fast: ebb's page compressor (lz4page.c) writes standard LZ4
 * blocks, liblz4's LZ4_decompress_safe() reads them.  The two differ in
 * the shortest match they take (6 and 8 bytes; lz4-fast falls back to 6
 * for a page that 8 cannot shrink enough).
 *
 * liblz4: liblz4's own compressor, LZ4_compress_fast_extState() with a
 * state allocated once per context, so a page compression never touches
 * the stack for 16 KiB of hash table.  Kept as the reference the
 * benchmarks compare against.  (The "fastReset" variant that skips
 * re-initialising the table is not exported by Debian's shared liblz4,
 * and the streaming LZ4_resetStream_fast() route measured slower.)
 *
 * zstd: level 1, one CCtx and one DCtx per context, reused across calls.
 */
#include "pagecomp.h"

#include <errno.h>
#include <limits.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "lz4page.h"

#define PAGECOMP_LZ4_ACCEL	1	/* 1 = LZ4_compress_default's ratio */
#define PAGECOMP_LZ4_MIN_MATCH	6	/* liblz4's ratio, fewer sequences */
#define PAGECOMP_LZ4_FAST_MIN_MATCH 8	/* decompression speed first */
#define PAGECOMP_ZSTD_LEVEL	1	/* denser than lz4, still ~200 MB/s */

/* ---- lz4 ---- */

static int lz4_ctx_new(void **ctx)
{
	void *state = malloc((size_t)LZ4_sizeofState());

	if (!state)
		return -ENOMEM;
	*ctx = state;
	return 0;
}

static void lz4_ctx_free(void *ctx)
{
	free(ctx);
}

static int lz4_compress(void *ctx, const void *src, size_t src_len,
			void *dst, size_t dst_cap, size_t *dst_len)
{
	int n;

	if (src_len > LZ4_MAX_INPUT_SIZE)
		return -EINVAL;
	if (dst_cap > INT_MAX)
		dst_cap = INT_MAX;
	/* Returns 0 when the output would exceed dst_cap: stop early rather
	 * than produce a blob we would throw away. */
	n = LZ4_compress_fast_extState(ctx, src, dst, (int)src_len,
				       (int)dst_cap, PAGECOMP_LZ4_ACCEL);
	if (n <= 0)
		return -E2BIG;
	*dst_len = (size_t)n;
	return 0;
}

static int lz4_decompress(void *ctx, const void *src, size_t src_len,
			  void *dst, size_t dst_len)
{
	int n;

	(void)ctx;
	if (src_len > INT_MAX || dst_len > INT_MAX)
		return -EBADMSG;
	n = LZ4_decompress_safe(src, dst, (int)src_len, (int)dst_len);
	if (n < 0 || (size_t)n != dst_len)
		return -EBADMSG;
	return 0;
}

const struct pagecomp_ops pagecomp_liblz4 = {
	.name = "liblz4",
	.ctx_new = lz4_ctx_new,
	.ctx_free = lz4_ctx_free,
	.compress = lz4_compress,
	.decompress = lz4_decompress,
};

/* ---- lz4page (ebb's compressor, liblz4's decompressor) ---- */

static int lz4page_ctx_new_mm(void **ctx, unsigned min_match)
{
	struct lz4page *z = malloc(sizeof(*z));
	int rc;

	if (!z)
		return -ENOMEM;
	rc = lz4page_init(z, min_match);
	if (rc) {
		free(z);
		return rc;
	}
	*ctx = z;
	return 0;
}

static int lz4page_ctx_new(void **ctx)
{
	return lz4page_ctx_new_mm(ctx, PAGECOMP_LZ4_MIN_MATCH);
}

static int lz4page_fast_ctx_new(void **ctx)
{
	return lz4page_ctx_new_mm(ctx, PAGECOMP_LZ4_FAST_MIN_MATCH);
}

static int lz4page_compress_op(void *ctx, const void *src, size_t src_len,
			       void *dst, size_t dst_cap, size_t *dst_len)
{
	return lz4page_compress(ctx, src, src_len, dst, dst_cap, dst_len);
}

/* 8+ first; a page that does not fit the cap that way (the store would
 * keep it raw) gets the 6+ parse before giving up.  On real guest swap
 * 0-1% of pages take the second pass, on prose 8% (its matches are short
 * words); it is what keeps lz4-fast from storing text raw. */
static int lz4page_fast_compress_op(void *ctx, const void *src, size_t src_len,
				    void *dst, size_t dst_cap, size_t *dst_len)
{
	struct lz4page *z = ctx;
	int rc = lz4page_compress(z, src, src_len, dst, dst_cap, dst_len);

	if (rc != -E2BIG)
		return rc;
	z->min_match = PAGECOMP_LZ4_MIN_MATCH;
	rc = lz4page_compress(z, src, src_len, dst, dst_cap, dst_len);
	z->min_match = PAGECOMP_LZ4_FAST_MIN_MATCH;
	return rc;
}

const struct pagecomp_ops pagecomp_lz4 = {
	.name = "lz4",
	.ctx_new = lz4page_ctx_new,
	.ctx_free = lz4_ctx_free,	/* both are one malloc */
	.compress = lz4page_compress_op,
	.decompress = lz4_decompress,
};

const struct pagecomp_ops pagecomp_lz4_fast = {
	.name = "lz4-fast",
	.ctx_new = lz4page_fast_ctx_new,
	.ctx_free = lz4_ctx_free,
	.compress = lz4page_fast_compress_op,
	.decompress = lz4_decompress,
};

/* ---- zstd ---- */

struct zstd_ctx {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
};

static void zstd_ctx_free(void *ctx)
{
	struct zstd_ctx *z = ctx;

	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
}

static int zstd_ctx_new(void **ctx)
{
	struct zstd_ctx *z = calloc(1, sizeof(*z));

	if (!z)
		return -ENOMEM;
	z->cctx = ZSTD_createCCtx();
	z->dctx = ZSTD_createDCtx();
	if (!z->cctx || !z->dctx) {
		zstd_ctx_free(z);
		return -ENOMEM;
	}
	*ctx = z;
	return 0;
}

static int zstd_compress(void *ctx, const void *src, size_t src_len,
			 void *dst, size_t dst_cap, size_t *dst_len)
{
	struct zstd_ctx *z = ctx;
	size_t n;

	n = ZSTD_compressCCtx(z->cctx, dst, dst_cap, src, src_len,
			      PAGECOMP_ZSTD_LEVEL);
	if (ZSTD_isError(n)) {
		if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall)
			return -E2BIG;
		return -EINVAL;
	}
	*dst_len = n;
	return 0;
}

static int zstd_decompress(void *ctx, const void *src, size_t src_len,
			   void *dst, size_t dst_len)
{
	struct zstd_ctx *z = ctx;
	size_t n;

	n = ZSTD_decompressDCtx(z->dctx, dst, dst_len, src, src_len);
	if (ZSTD_isError(n) || n != dst_len)
		return -EBADMSG;
	return 0;
}

const struct pagecomp_ops pagecomp_zstd = {
	.name = "zstd",
	.ctx_new = zstd_ctx_new,
	.ctx_free = zstd_ctx_free,
	.compress = zstd_compress,
	.decompress = zstd_decompress,
};

int pagecomp_find(const char *name, const struct pagecomp_ops **out)
{
	static const struct pagecomp_ops *const all[] = {
		&pagecomp_lz4,
		&pagecomp_lz4_fast,
		&pagecomp_liblz4,
		&pagecomp_zstd,
	};
	size_t i;

	if (!name)
		return -ENOENT;
	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(all[i]->name, name) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return -ENOENT;
}
