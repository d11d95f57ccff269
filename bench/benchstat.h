/*
 * benchstat: the statistics every benchmark here prints.  Timing itself
 * uses loop_now_ns() (src/core/loop.h, CLOCK_MONOTONIC).
 */
#ifndef EBB_BENCHSTAT_H
#define EBB_BENCHSTAT_H

#include <stddef.h>
#include <stdint.h>

/* Sort @v ascending. */
void bench_sort_u64(uint64_t *v, size_t n);
/* The @pct-th percentile (nearest rank, rounding down) of @v; sorts @v. */
uint64_t bench_percentile(uint64_t *v, size_t n, unsigned pct);
/* The median of @v, the mean of the middle two if @n is even; sorts @v. */
uint64_t bench_median(uint64_t *v, size_t n);

#endif
