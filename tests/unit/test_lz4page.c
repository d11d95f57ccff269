/*
 * lz4page: every block it writes must expand back with liblz4's decoder,
 * obey the LZ4 block format's end rules, respect the output cap, and
 * take no match shorter than asked.  Checked on page kinds chosen to hit
 * each path: literal runs of every length class, matches at the very end,
 * overlapping matches (short periods), incompressible and tiny inputs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <lz4.h>

#include "lz4page.h"

#define PG	4096

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

enum kind { K_ZERO, K_RANDOM, K_TEXT, K_WORDS, K_PERIOD, K_HALF, K_TAIL, K_NKINDS };

/* Fill @len bytes of kind @k; @param varies it (period, seed). */
static void fill(uint8_t *p, size_t len, enum kind k, unsigned param)
{
	static const char *const words[] = { "page ", "memory ", "guest ",
		"the ", "host ", "swap ", "balloon ", "of " };
	size_t i;

	switch (k) {
	case K_ZERO:
		memset(p, 0, len);
		break;
	case K_RANDOM:
		for (i = 0; i < len; i++)
			p[i] = (uint8_t)rng();
		break;
	case K_TEXT:
		for (i = 0; i < len;) {
			const char *w = words[rng() % 8];
			size_t n = strlen(w);

			if (n > len - i)
				n = len - i;
			memcpy(p + i, w, n);
			i += n;
		}
		break;
	case K_WORDS:	/* 8-byte words: pointers, small ints, zeros */
		for (i = 0; i + 8 <= len; i += 8) {
			uint64_t r = rng(), w = r % 3 == 0 ? 0x00005581a3c00000ull +
					(r >> 40) * 16 : r % 3 == 1 ? (r >> 50) : 0;

			memcpy(p + i, &w, 8);
		}
		for (; i < len; i++)
			p[i] = 0;
		break;
	case K_PERIOD:	/* repeats with period 1..16: overlapping matches */
		for (i = 0; i < len; i++)
			p[i] = (uint8_t)(i % (param % 16 + 1) * 37 + 1);
		break;
	case K_HALF:	/* random first half, copy of it after: one long match */
		for (i = 0; i < len / 2; i++)
			p[i] = (uint8_t)rng();
		memcpy(p + len / 2, p, len / 2);
		if (len % 2)
			p[len - 1] = 0;
		break;
	default:	/* random, then a run at the very end */
		for (i = 0; i < len; i++)
			p[i] = i + 40 > len ? 'x' : (uint8_t)rng();
		break;
	}
}

/* A 4-bit length from a token, plus its continuation bytes if it is 15. */
static size_t read_len(const uint8_t **ipp, const uint8_t *end, unsigned nibble)
{
	size_t n = nibble;
	unsigned x;

	if (nibble != 15)
		return n;
	do {
		assert_true(*ipp < end);
		x = *(*ipp)++;
		n += x;
	} while (x == 255);
	return n;
}

/* Walk a block's sequences: offsets in range, no match shorter than
 * @min_match, the last 5 bytes literal, the last match starting at least
 * 12 bytes before the end.  Returns the bytes the block expands to. */
static size_t check_format(const uint8_t *b, size_t blen, size_t len,
			   unsigned min_match)
{
	const uint8_t *ip = b, *end = b + blen;
	size_t out = 0, last_match_start = 0, last_match_end = 0;
	int had_match = 0;

	for (;;) {
		unsigned token;
		size_t ll, ml, off;

		assert_true(ip < end);
		token = *ip++;
		ll = read_len(&ip, end, token >> 4);
		assert_true(ll <= (size_t)(end - ip));
		ip += ll;
		out += ll;
		if (ip == end)
			break;
		assert_true(end - ip >= 2);
		off = (size_t)ip[0] | (size_t)ip[1] << 8;
		ip += 2;
		assert_true(off >= 1 && off <= out);
		ml = read_len(&ip, end, token & 15) + 4;
		assert_true(ml >= min_match);
		last_match_start = out;
		out += ml;
		last_match_end = out;
		had_match = 1;
	}
	assert_int_equal(out, len);
	if (had_match) {
		assert_true(last_match_end + 5 <= len);
		assert_true(last_match_start + 12 <= len);
	}
	return out;
}

static void roundtrip(const uint8_t *src, size_t len, unsigned min_match,
		      size_t cap)
{
	static struct lz4page z;
	static uint8_t dst[70000 + 64], back[70000];
	size_t n = 0;
	int rc;

	assert_int_equal(lz4page_init(&z, min_match), 0);
	memset(dst, 0xa5, cap + 64);
	rc = lz4page_compress(&z, src, len, dst, cap, &n);
	if (rc == -E2BIG)
		return;
	assert_int_equal(rc, 0);
	assert_true(n <= cap);
	for (size_t i = cap; i < cap + 64; i++)
		assert_int_equal(dst[i], 0xa5);	/* nothing past the cap */
	check_format(dst, n, len, min_match);
	assert_int_equal(LZ4_decompress_safe((const char *)dst, (char *)back,
					     (int)n, (int)len), (int)len);
	assert_memory_equal(back, src, len);
}

static void every_kind_every_min_match(void **state)
{
	static uint8_t p[PG];
	unsigned k, mm, v;

	(void)state;
	for (k = 0; k < K_NKINDS; k++)
		for (v = 0; v < 17; v++) {
			fill(p, PG, (enum kind)k, v);
			for (mm = 4; mm <= 8; mm++)
				roundtrip(p, PG, mm, PG + PG / 255 + 16);
		}
}

/* Inputs of every small length (the format's special cases below 13
 * bytes) and odd sizes up to the 64 KiB limit. */
static void lengths(void **state)
{
	static uint8_t p[65536];
	size_t len;
	unsigned k;

	(void)state;
	for (k = 0; k < K_NKINDS; k++) {
		for (len = 0; len < 80; len++) {
			fill(p, len, (enum kind)k, (unsigned)len);
			roundtrip(p, len, 4, len + len / 255 + 16);
			roundtrip(p, len, 8, len + len / 255 + 16);
		}
		fill(p, 65536, (enum kind)k, 3);
		roundtrip(p, 65536, 6, 65536 + 65536 / 255 + 16);
		roundtrip(p, 12345, 6, 12345 + 12345 / 255 + 16);
	}
}

/* Every cap from 0 to past the page: either -E2BIG or a block within it. */
static void cap_is_respected(void **state)
{
	static uint8_t p[PG];
	unsigned k;
	size_t cap;

	(void)state;
	for (k = 0; k < K_NKINDS; k++) {
		fill(p, PG, (enum kind)k, 5);
		for (cap = 0; cap <= PG + 32; cap += (cap < 64 ? 1 : 37))
			roundtrip(p, PG, 6, cap);
	}
}

/* Compressible pages do shrink; incompressible ones hit the cap. */
static void compresses(void **state)
{
	static uint8_t p[PG], dst[PG];
	struct lz4page z;
	size_t n;

	(void)state;
	assert_int_equal(lz4page_init(&z, 6), 0);
	fill(p, PG, K_ZERO, 0);
	assert_int_equal(lz4page_compress(&z, p, PG, dst, sizeof(dst), &n), 0);
	assert_true(n < 40);
	fill(p, PG, K_TEXT, 0);
	assert_int_equal(lz4page_compress(&z, p, PG, dst, sizeof(dst), &n), 0);
	assert_true(n < PG / 2);
	fill(p, PG, K_RANDOM, 0);
	assert_int_equal(lz4page_compress(&z, p, PG, dst, PG * 3 / 4, &n), -E2BIG);
}

static void errors(void **state)
{
	static uint8_t p[65537], dst[16];
	struct lz4page z;
	size_t n;

	(void)state;
	assert_int_equal(lz4page_init(&z, 3), -EINVAL);
	assert_int_equal(lz4page_init(&z, 9), -EINVAL);
	assert_int_equal(lz4page_init(NULL, 6), -EINVAL);
	assert_int_equal(lz4page_init(&z, 6), 0);
	assert_int_equal(lz4page_compress(&z, p, sizeof(p), dst, sizeof(dst), &n),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_kind_every_min_match),
		cmocka_unit_test(lengths),
		cmocka_unit_test(cap_is_respected),
		cmocka_unit_test(compresses),
		cmocka_unit_test(errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
