/*
 * benchstat: sorting and percentiles for the benchmarks.  See benchstat.h.
 */
#include "benchstat.h"

#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void bench_sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

uint64_t bench_percentile(uint64_t *v, size_t n, unsigned pct)
{
	bench_sort_u64(v, n);
	return v[(n - 1) * pct / 100];
}

uint64_t bench_median(uint64_t *v, size_t n)
{
	bench_sort_u64(v, n);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
