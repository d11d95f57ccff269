/*
 * ebbctl tmem: the page store's counters, per guest and in total, and its
 * put/get latency.  Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <stdio.h>

/* One row of `ebbctl tmem`: the counters an operator reads first. */
static void tmem_row(struct table *t, const char *name, json_t *g)
{
	static const struct {
		const char *key;
		bool size;
	} cols[] = {
		{ "persistent_pages", false }, { "ephemeral_pages", false },
		{ "logical_bytes", true }, { "stored_bytes", true },
		{ "charged_bytes", true }, { "compression_ratio", false },
		{ "dedup_ratio", false }, { "hits", false }, { "misses", false },
		{ "evictions", false }, { "refused_puts", false },
	};
	long row = table_row(t);
	char buf[64];

	if (row < 0)
		return;
	table_set(t, row, 0, name);
	for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		json_t *v = json_object_get(g, cols[c].key);

		if (!v)
			continue;
		if (json_is_real(v))
			snprintf(buf, sizeof(buf), "%.2f", json_real_value(v));
		else if (cols[c].size)
			fmt_size(v, buf, sizeof(buf));
		else
			fmt_value(v, buf, sizeof(buf));
		table_set(t, row, c + 1, buf);
	}
}

static void print_tmem_latency(json_t *lat)
{
	json_int_t pn = json_integer_value(json_object_get(lat, "put_timed"));
	json_int_t gn = json_integer_value(json_object_get(lat, "get_timed"));

	if (!json_is_object(lat) || (!pn && !gn))
		return;
	printf("latency: put p50 %.1f us p99 %.1f us, get p50 %.1f us p99 %.1f us "
	       "(%lld puts and %lld gets timed)\n",
	       json_integer_value(json_object_get(lat, "put_p50_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "put_p99_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "get_p50_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "get_p99_ns")) / 1e3,
	       (long long)pn, (long long)gn);
}

static void print_tmem(json_t *r)
{
	static const char *const heads[] = {
		"NAME", "PERSISTENT", "EPHEMERAL", "LOGICAL", "STORED",
		"CHARGED", "RATIO", "DEDUP", "HITS", "MISSES", "EVICTED",
		"REFUSED",
	};
	json_t *store = json_object_get(r, "store");
	struct table t = { 0 };
	size_t i;
	json_t *g;

	for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++)
		table_col(&t, heads[i], i > 0);
	json_array_foreach(json_object_get(r, "guests"), i, g)
		tmem_row(&t, jstr(g, "name"), g);
	if (json_is_object(json_object_get(r, "total")))
		tmem_row(&t, "TOTAL", json_object_get(r, "total"));
	table_print(&t);
	table_free(&t);
	if (json_is_object(store)) {
		char b1[32], b2[32], b3[32];

		printf("store (%s): %s in slabs, %s used (%.1f%% slack), %s records\n",
		       jstr(store, "compressor"),
		       fmt_size(json_object_get(store, "slab_bytes"), b1, sizeof(b1)),
		       fmt_size(json_object_get(store, "slab_used_bytes"), b2,
				sizeof(b2)),
		       json_number_value(json_object_get(store, "slab_frag_pct")),
		       fmt_size(json_object_get(store, "meta_bytes"), b3, sizeof(b3)));
	}
	print_tmem_latency(json_object_get(r, "latency"));
}

int ebbctl_tmem(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("tmem", NULL, false, print_tmem);
}
