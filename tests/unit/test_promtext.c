/*
 * promtext: the Prometheus text format as promtool reads it: HELP and
 * TYPE lines, labels escaped, integers exact, and a failed allocation
 * that sticks instead of a truncated page.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "lathist.h"
#include "promtext.h"

static void family_and_samples(void **state)
{
	struct promtext p;
	const char *l[] = { "guest", "web1", NULL };
	const char *l2[] = { "guest", "a\"b\\c\nd", "kind", "x", NULL };

	(void)state;
	promtext_init(&p);
	promtext_family(&p, "ebb_x_bytes", "gauge", "Help with \\ and\nnewline.");
	promtext_u64(&p, "ebb_x_bytes", NULL, 18446744073709551615ull);
	promtext_u64(&p, "ebb_x_bytes", l, 0);
	promtext_u64(&p, "ebb_x_bytes", l2, 7);
	promtext_f64(&p, "ebb_y_seconds", NULL, 0.25);
	assert_int_equal(promtext_done(&p), 0);
	assert_string_equal(p.buf,
		"# HELP ebb_x_bytes Help with \\\\ and\\nnewline.\n"
		"# TYPE ebb_x_bytes gauge\n"
		"ebb_x_bytes 18446744073709551615\n"
		"ebb_x_bytes{guest=\"web1\"} 0\n"
		"ebb_x_bytes{guest=\"a\\\"b\\\\c\\nd\",kind=\"x\"} 7\n"
		"ebb_y_seconds 0.25\n");
	assert_int_equal(p.len, strlen(p.buf));
	promtext_free(&p);
}

/* Pages far beyond the first allocation grow without loss. */
static void grows(void **state)
{
	struct promtext p;
	char want[64];

	(void)state;
	promtext_init(&p);
	for (unsigned i = 0; i < 10000; i++)
		promtext_u64(&p, "ebb_n", NULL, i);
	assert_int_equal(promtext_done(&p), 0);
	snprintf(want, sizeof(want), "ebb_n 9999\n");
	assert_string_equal(p.buf + p.len - strlen(want), want);
	promtext_free(&p);
}

/* The histogram's cumulative counts: exact at bucket edges, never more
 * than the samples at or below the bound. */
static void lathist_buckets(void **state)
{
	static struct lathist h;
	const uint64_t le[] = { 10, 1024, 5000, 1000000 };
	uint64_t cum[4];

	(void)state;
	lathist_reset(&h);
	for (uint64_t v = 1; v <= 10; v++)
		lathist_add(&h, v);			/* exact range */
	lathist_add(&h, 1024);				/* an edge */
	lathist_add(&h, 1025);
	lathist_add(&h, 4999);
	lathist_add(&h, 2000000);
	lathist_cumulative(&h, le, 4, cum);
	assert_int_equal(cum[0], 10);
	/* 1024 starts a bucket of width 64 ([1024, 1088)), which does not
	 * lie wholly at or below 1024: counted from the next bound on. */
	assert_int_equal(cum[1], 10);
	assert_in_range(cum[2], 12, 13);	/* 4999's bucket may end past 5000 */
	assert_int_equal(cum[3], 13);
	assert_int_equal(h.n, 14);
	assert_int_equal(h.sum_ns, 55 + 1024 + 1025 + 4999 + 2000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(family_and_samples),
		cmocka_unit_test(grows),
		cmocka_unit_test(lathist_buckets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
