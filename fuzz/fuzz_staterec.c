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
 * Resealing uses version 1 (a guest record's shorter payload, what the
 * ebbd an upgrade replaces wrote) when the first byte's second bit is set.
 *
 * Oracle, beyond ASan/UBSan: a decode either fails with -EBADMSG and a
 * terminated message, or succeeds, and then encoding the result gives
 * back exactly the input bytes (one encoding per value: no field or byte
 * of a record goes unchecked).  A version 1 record encodes as the current
 * version: that encoding must decode to the same value, with no policy
 * settings.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "staterec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The version in a record's header. */
static uint32_t version_of(const uint8_t *buf, size_t len)
{
	uint32_t v = 0;

	if (len >= 12)
		memcpy(&v, buf + 8, 4);
	return v;
}

/* Make the header right for @kind and version @v over @len bytes. */
static void reseal(uint8_t *buf, size_t len, uint32_t kind, uint32_t v)
{
	uint32_t l = (uint32_t)len, zero = 0;
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
	if (staterec_guest_encode(&g, back, sizeof(back)) != 0)
		abort();
	if (version_of(buf, len) == STATEREC_VERSION) {
		if (len != staterec_guest_size() || memcmp(back, buf, len))
			abort();
	} else {
		struct staterec_guest g2;

		if (g.policy_flags || g.shares || g.policy_min_bytes ||
		    g.policy_max_bytes ||
		    staterec_guest_decode(back, staterec_guest_size(), &g2,
					  why) != 0 ||
		    memcmp(&g, &g2, sizeof(g)))
			abort();
	}
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
	    len != staterec_pool_size())
		abort();
	/* The same bytes but for a version 1 header's version field. */
	if (version_of(buf, len) != STATEREC_VERSION) {
		memcpy(back + 8, buf + 8, 4);
		memcpy(back + 24, buf + 24, 8);
	}
	if (memcmp(back, buf, len))
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
		uint32_t v = (data[0] & 2) ? 1 : STATEREC_VERSION;
		/* A version 1 guest payload is version 2's less its last 24
		 * bytes (staterec.h). */
		size_t glen = staterec_guest_size() - (v == 1 ? 24 : 0);

		if (size >= glen) {
			reseal(buf, glen, STATEREC_GUEST, v);
			one_guest(buf, glen);
		}
		if (size >= staterec_pool_size()) {
			memcpy(buf, data, size);
			reseal(buf, staterec_pool_size(), STATEREC_POOL, v);
			one_pool(buf, staterec_pool_size());
		}
	}
	free(buf);
	return 0;
}
