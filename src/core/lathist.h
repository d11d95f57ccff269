/*
 * lathist: a latency histogram cheap enough to feed from a hot path, and
 * the percentiles read back from it.
 *
 * Buckets are log-linear: exact below 16 ns, then 16 buckets per power of
 * two, so any percentile is known to within 1/16 (6%) of its value, from
 * nanoseconds to centuries, in a fixed 7.7 KiB and with no allocation.
 * Adding is an index computation and an increment; a percentile walks the
 * buckets.  Why not keep samples: a store serves millions of pages, and a
 * ring of recent samples would make the percentiles depend on its size.
 *
 * Not thread-safe: the owner serialises adds and reads (the tmem store
 * does both under its lock).
 */
#ifndef EBB_LATHIST_H
#define EBB_LATHIST_H

#include <stdint.h>

#define LATHIST_SUB_BITS	4
#define LATHIST_SUB		(1u << LATHIST_SUB_BITS)
/* Values below LATHIST_SUB are exact; each power of two from there up to
 * 2^63 has LATHIST_SUB buckets. */
#define LATHIST_BUCKETS		((64 - LATHIST_SUB_BITS + 1) * LATHIST_SUB)

struct lathist {
	uint64_t n;			/* samples added */
	uint64_t sum_ns;		/* their sum (a histogram's _sum) */
	uint64_t count[LATHIST_BUCKETS];
};

/* Count one sample of @ns. */
void lathist_add(struct lathist *h, uint64_t ns);

/* The @pct-th percentile (0..100, nearest rank) of the samples: the middle
 * of its bucket, so within 1/32 of the true value for values >= 16.  0 if
 * there are no samples. */
uint64_t lathist_percentile(const struct lathist *h, unsigned pct);

/*
 * Cumulative counts at the bounds @le_ns[0..@n) (ascending), as a
 * Prometheus histogram's buckets: @out[i] is the number of samples whose
 * bucket lies wholly at or below @le_ns[i], so a bound that cuts a
 * bucket undercounts by at most that bucket (1/16 of the value).  One
 * walk over the fixed buckets, whatever the number of samples.
 */
void lathist_cumulative(const struct lathist *h, const uint64_t *le_ns,
			unsigned n, uint64_t *out);

/* Forget every sample. */
void lathist_reset(struct lathist *h);

#endif
