#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "lathist.h"

static struct lathist *new_hist(void)
{
	struct lathist *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	return h;
}

static void empty_is_zero(void **state)
{
	struct lathist *h = new_hist();

	(void)state;
	assert_int_equal(lathist_percentile(h, 50), 0);
	assert_int_equal(lathist_percentile(h, 99), 0);
	free(h);
}

/* Below 16 every value has its own bucket. */
static void small_values_exact(void **state)
{
	struct lathist *h = new_hist();
	uint64_t v;

	(void)state;
	for (v = 0; v < 16; v++)
		lathist_add(h, v);
	assert_int_equal(h->n, 16);
	assert_int_equal(lathist_percentile(h, 0), 0);
	assert_int_equal(lathist_percentile(h, 50), 7);	/* rank 8 */
	assert_int_equal(lathist_percentile(h, 100), 15);
	free(h);
}

/* Any value comes back within 1/32 of itself, across the whole range. */
static void relative_error_bounded(void **state)
{
	uint64_t v;
	unsigned shift;

	(void)state;
	for (shift = 4; shift < 63; shift++) {
		for (v = 1ull << shift; v < (2ull << shift) && v; v += (1ull << shift) / 7 + 1) {
			struct lathist *h = new_hist();
			uint64_t got;
			double err;

			lathist_add(h, v);
			got = lathist_percentile(h, 50);
			err = got > v ? (double)(got - v) : (double)(v - got);
			assert_true(err <= (double)v / 32.0 + 1.0);
			free(h);
		}
	}
}

static void top_of_range(void **state)
{
	struct lathist *h = new_hist();
	uint64_t got;

	(void)state;
	lathist_add(h, UINT64_MAX);
	got = lathist_percentile(h, 100);
	assert_true(got >= UINT64_MAX - (UINT64_MAX >> 5));
	free(h);
}

/* Percentiles pick by rank: 90 samples at ~1000 ns and 10 at ~50000 ns
 * give p50 near 1000 and p99 near 50000; p90 is still the fast ones. */
static void percentiles_by_rank(void **state)
{
	struct lathist *h = new_hist();
	unsigned i;

	(void)state;
	for (i = 0; i < 90; i++)
		lathist_add(h, 1000 + i);
	for (i = 0; i < 10; i++)
		lathist_add(h, 50000 + i);
	assert_in_range(lathist_percentile(h, 50), 1000 - 32, 1100 + 35);
	assert_in_range(lathist_percentile(h, 90), 1000 - 32, 1100 + 35);
	assert_in_range(lathist_percentile(h, 91), 50000 - 1600, 50000 + 1600);
	assert_in_range(lathist_percentile(h, 99), 50000 - 1600, 50000 + 1600);
	/* out-of-range pct is clamped, not an overrun */
	assert_in_range(lathist_percentile(h, 1000), 50000 - 1600, 50000 + 1600);
	lathist_reset(h);
	assert_int_equal(h->n, 0);
	assert_int_equal(lathist_percentile(h, 50), 0);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_is_zero),
		cmocka_unit_test(small_values_exact),
		cmocka_unit_test(relative_error_bounded),
		cmocka_unit_test(top_of_range),
		cmocka_unit_test(percentiles_by_rank),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
