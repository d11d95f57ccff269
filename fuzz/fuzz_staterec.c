/*
 * libFuzzer target: ebbd's state records (staterec).  A record on disk is
 * hostile input: anyone who can write the state directory, a torn disk or
 * an older or newer ebbd may have put any bytes there.
 *
 * Input: the bytes of a file, decoded as a guest record and as a pool
 * record.  Because the checksum makes random inputs fail early, an input
 * whose first byte is odd is first resealed (magic, version, kind, length
 * and checksum made right) so the field checks behind them get fuzzed too.
 *
 * Oracle, beyond ASan/UBSan: a decode either fails with -EBADMSG and a
 * terminated message, or succeeds, and then encoding the result gives
 * back exactly the input bytes (one encoding per value: no field or byte
 * of a record goes unchecked).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "staterec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Make the header right for @kind over @len bytes of @buf. */
static void reseal(uint8_t *buf, size_t len, uint32_t kind)
{
	uint32_t v = STATEREC_VERSION, l = (uint32_t)len, zero = 0;
	uint64_t sum = 0;

	memcpy(buf, "EBBSTATE", 8);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 12, &kind, 4);
	memcpy(buf + 16, &l, 4);
	memcpy(buf + 20, &zero, 4);
	memcpy(buf + 24, &sum, 8);
	sum = XXH3_64bits(buf, len);
	memcpy(buf + 24, &sum, 8);
}

static void one_guest(const uint8_t *buf, size_t len)
{
	struct staterec_guest g;
	char why[STATEREC_WHY_MAX];
	uint8_t back[1024];
	int rc = staterec_guest_decode(buf, len, &g, why);

	if (rc < 0) {
		if (rc != -EBADMSG || !memchr(why, '\0', sizeof(why)))
			abort();
		return;
	}
	if (staterec_guest_encode(&g, back, sizeof(back)) != 0 ||
	    len != staterec_guest_size() || memcmp(back, buf, len))
		abort();
}

static void one_pool(const uint8_t *buf, size_t len)
{
	struct staterec_pool p;
	char why[STATEREC_WHY_MAX];
	uint8_t back[256];
	int rc = staterec_pool_decode(buf, len, &p, why);

	if (rc < 0) {
		if (rc != -EBADMSG || !memchr(why, '\0', sizeof(why)))
			abort();
		return;
	}
	if (staterec_pool_encode(&p, back, sizeof(back)) != 0 ||
	    len != staterec_pool_size() || memcmp(back, buf, len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf;

	if (size > 4096)
		return 0;
	/* An exact-size copy, so ASan sees any read past the end. */
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	one_guest(buf, size);
	one_pool(buf, size);
	if (size && (data[0] & 1)) {
		if (size >= staterec_guest_size()) {
			reseal(buf, staterec_guest_size(), STATEREC_GUEST);
			one_guest(buf, staterec_guest_size());
		}
		if (size >= staterec_pool_size()) {
			memcpy(buf, data, size);
			reseal(buf, staterec_pool_size(), STATEREC_POOL);
			one_pool(buf, staterec_pool_size());
		}
	}
	free(buf);
	return 0;
}
