/*
 * libFuzzer target: ebb's page compressor on guest-chosen page contents.
 * A page a guest swaps out is whatever the guest wrote, so its bytes are
 * hostile input to the compressor.
 *
 * Input:
 *   byte 0     min_match: 4 + b % 5
 *   bytes 1-2  output cap (u16 LE), at most 65536 + 512
 *   bytes 3-   the data to compress (at most LZ4PAGE_MAX_INPUT bytes)
 *
 * Oracle, beyond ASan/UBSan: the output buffer is allocated exactly @cap
 * bytes (so ASan catches a write past it); a success expands back with
 * liblz4's LZ4_decompress_safe() to exactly the input; -E2BIG only when
 * the cap is below the worst case an LZ4 block needs (LZ4_compressBound).
 */
#include <errno.h>
#include <lz4.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lz4page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct lz4page z;
	const uint8_t *src;
	size_t len, cap, n = 0;
	uint8_t *dst, *back;
	int rc;

	if (size < 3)
		return 0;
	if (lz4page_init(&z, 4 + data[0] % 5))
		abort();
	cap = (size_t)data[1] | (size_t)data[2] << 8;
	src = data + 3;
	len = size - 3;
	if (len > LZ4PAGE_MAX_INPUT)
		len = LZ4PAGE_MAX_INPUT;
	dst = malloc(cap ? cap : 1);
	back = malloc(len ? len : 1);
	if (!dst || !back)
		abort();
	rc = lz4page_compress(&z, src, len, dst, cap, &n);
	if (rc == 0) {
		if (n > cap ||
		    LZ4_decompress_safe((const char *)dst, (char *)back, (int)n,
					(int)len) != (int)len ||
		    memcmp(back, src, len))
			abort();
	} else if (rc != -E2BIG || cap >= (size_t)LZ4_compressBound((int)len) + 16) {
		abort();
	}
	free(dst);
	free(back);
	return 0;
}
