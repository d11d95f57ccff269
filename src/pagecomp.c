/*
 * Two thin adapters from the pagecomp contract to liblz4 and libzstd.
 *
 * lz4: LZ4_compress_fast_extState() with a state allocated once per
 * context, so a page compression never touches the stack for 16 KiB of
 * hash table.  (The "fastReset" variant that skips re-initialising the
 * table is not exported by Debian's shared liblz4, and the streaming
 * LZ4_resetStream_fast() route measured slower on 4 KiB pages.)
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

#define PAGECOMP_LZ4_ACCEL	1	/* 1 = LZ4_compress_default's ratio */
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

const struct pagecomp_ops pagecomp_lz4 = {
	.name = "lz4",
	.ctx_new = lz4_ctx_new,
	.ctx_free = lz4_ctx_free,
	.compress = lz4_compress,
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
