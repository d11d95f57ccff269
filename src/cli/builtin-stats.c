/*
 * ebbctl stats: a guest's fields and its balloon statistics as one aligned
 * list.  Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <stdio.h>
#include <string.h>

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
	kv_print(all, skip);
	json_decref(all);
}

int ebbctl_stats(int argc, char **argv)
{
	return one_name_cmd(argc, argv, "guest-stats", print_stats);
}
