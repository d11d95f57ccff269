/*
 * ebbctl stats: a guest's fields and its balloon statistics as one aligned
 * list.  Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <stdio.h>
#include <string.h>

/* The ebb device's page states as one line ("2351 stable, 40120
 * unused, ..."), and bytes discarded, in place of its object. */
static void page_states_line(json_t *all)
{
	static const char *const states[] = { "stable", "unused", "volatile",
					      "discarding", "discarded" };
	json_t *ps = json_object_get(all, "page_states");
	char line[256];
	size_t n = 0;

	if (!ps)
		return;		/* an ebbd from before page hinting */
	if (!json_is_object(ps)) {
		json_object_set_new(all, "page_states", json_string("off"));
		return;
	}
	json_object_set(all, "discarded",
			json_object_get(ps, "discarded_bytes"));
	if (!json_is_integer(json_object_get(ps, "stable"))) {
		json_object_set_new(all, "page_states",
				    json_string("no table (no ebb driver)"));
		return;
	}
	line[0] = 0;
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%lld %s",
				      i ? ", " : "",
				      (long long)json_integer_value(
					      json_object_get(ps, states[i])),
				      states[i]);
	json_object_set_new(all, "page_states", json_string(line));
}

static void print_stats(json_t *r)
{
	static const char *const skip[] = { "stats", "stats_age_ms", NULL };
	json_t *age = json_object_get(r, "stats_age_ms");
	json_t *stats = json_object_get(r, "stats");
	json_t *blocks = json_object_get(r, "blocks");
	json_t *all = json_deep_copy(r);
	const char *key;
	json_t *v;

	/* One aligned list: the guest's fields, then its balloon stats. */
	if (!all)
		return;
	json_object_del(all, "stats");
	json_object_del(all, "stats_age_ms");
	if (json_is_integer(age)) {
		char buf[64];

		/* Negative: the guest has not sent statistics yet. */
		if (json_integer_value(age) < 0)
			snprintf(buf, sizeof(buf), "none received yet");
		else
			snprintf(buf, sizeof(buf), "%.1f s",
				 (double)json_integer_value(age) / 1000.0);
		json_object_set_new(all, "stats_age", json_string(buf));
	}
	/* --ram-hugepages' block keeping, flattened as blocks_<counter>
	 * (its "waiting" is already there as blocks_waiting). */
	json_object_del(all, "blocks");
	json_object_foreach(blocks, key, v) {
		char name[64];

		if (strcmp(key, "waiting") == 0)
			continue;
		snprintf(name, sizeof(name), "blocks_%s", key);
		json_object_set(all, name, v);
	}
	json_object_foreach(stats, key, v)
		json_object_set(all, key, v);
	page_states_line(all);
	kv_print(all, skip);
	json_decref(all);
}

int ebbctl_stats(int argc, char **argv)
{
	return one_name_cmd(argc, argv, "guest-stats", print_stats);
}
