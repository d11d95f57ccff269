/*
 * lathist: a log-linear latency histogram: exact below LATHIST_SUB,
 * then LATHIST_SUB buckets per power of two (API in lathist.h).
 */
/*
 * Bucket index of a value v >= LATHIST_SUB with top bit e (2^e <= v <
 * 2^(e+1)): the top LATHIST_SUB_BITS + 1 bits of v pick one of LATHIST_SUB
 * equal slices of [2^e, 2^(e+1)), and each e past the exact range gets its
 * own row of LATHIST_SUB buckets after the LATHIST_SUB exact ones.
 */
#include "lathist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
	unsigned e;

	if (v < LATHIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return (e - LATHIST_SUB_BITS + 1) * LATHIST_SUB +
	       (unsigned)((v >> (e - LATHIST_SUB_BITS)) & (LATHIST_SUB - 1));
}

/* The smallest value that lands in bucket @b, and the bucket's width. */
static void bucket_range(unsigned b, uint64_t *lo, uint64_t *width)
{
	unsigned row = b / LATHIST_SUB, sub = b % LATHIST_SUB, e;

	if (row == 0) {
		*lo = b;
		*width = 1;
		return;
	}
	e = row + LATHIST_SUB_BITS - 1;
	*width = 1ull << (e - LATHIST_SUB_BITS);
	*lo = (1ull << e) + (uint64_t)sub * *width;
}

void lathist_add(struct lathist *h, uint64_t ns)
{
	h->count[bucket_of(ns)]++;
	h->n++;
	h->sum_ns += ns;
}

uint64_t lathist_percentile(const struct lathist *h, unsigned pct)
{
	uint64_t rank, seen = 0, lo, width;
	unsigned b;

	if (!h->n)
		return 0;
	if (pct > 100)
		pct = 100;
	/* nearest rank: the smallest sample with at least pct% at or below */
	rank = (h->n * pct + 99) / 100;
	if (rank == 0)
		rank = 1;
	for (b = 0; b < LATHIST_BUCKETS; b++) {
		seen += h->count[b];
		if (seen >= rank)
			break;
	}
	bucket_range(b, &lo, &width);
	return lo + width / 2;
}

void lathist_cumulative(const struct lathist *h, const uint64_t *le_ns,
			unsigned n, uint64_t *out)
{
	uint64_t seen = 0, lo, width;
	unsigned b = 0, i;

	for (i = 0; i < n; i++) {
		/* Add every bucket whose last value is <= the bound. */
		for (; b < LATHIST_BUCKETS; b++) {
			bucket_range(b, &lo, &width);
			if (lo + width - 1 > le_ns[i])
				break;
			seen += h->count[b];
		}
		out[i] = seen;
	}
}

void lathist_reset(struct lathist *h)
{
	memset(h, 0, sizeof(*h));
}
