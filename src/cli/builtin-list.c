/*
 * ebbctl list: the guests and their memory, one table row each.  Entry
 * point in ebbctl.h.
 */
#include "ebbctl.h"

/*
 * HUGE: RAM the host maps with 2 MiB pages, then intact of allocated 2 MiB
 * blocks of the RAM file ("24M 12/13"); "-" from a daemon without them.
 */
static const char *huge_cell(json_t *g, char *buf, size_t len)
{
	json_t *mapped = json_object_get(g, "huge_mapped");
	json_t *intact = json_object_get(g, "intact_blocks");
	json_t *shattered = json_object_get(g, "shattered_blocks");
	char size[32];

	if (!json_is_integer(mapped) || !json_is_integer(intact) ||
	    !json_is_integer(shattered))
		return "-";
	snprintf(buf, len, "%s %lld/%lld", fmt_size(mapped, size, sizeof(size)),
		 (long long)json_integer_value(intact),
		 (long long)(json_integer_value(intact) +
			     json_integer_value(shattered)));
	return buf;
}

static void print_list(json_t *r)
{
	static const struct {
		const char *head, *key;
		bool size;
	} cols[] = {
		{ "NAME", "name", false },
		{ "STATE", "state", false },
		{ "PID", "pid", false },
		{ "MEM", "mem", true },
		{ "TARGET", "balloon_target", true },
		{ "ACTUAL", "balloon_actual", true },
		{ "RESIDENT", "resident", true },
		{ "CLAIM", "claim", true },
		{ "REPORTED", "reported", true },
		{ "RETURNED", "returned", true },
		{ "DISCARDED", "discarded", true },
		{ "HUGE", NULL, false },
		{ "OVER", "over_budget", false },
	};
	struct table t = { 0 };
	size_t i;
	json_t *g;

	for (i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
		table_col(&t, cols[i].head, i >= 2 && i + 1 < sizeof(cols) / sizeof(cols[0]));
	json_array_foreach(json_object_get(r, "guests"), i, g) {
		long row = table_row(&t);
		char buf[64];

		if (row < 0)
			break;
		for (size_t c = 0; c < t.ncols; c++) {
			json_t *v = cols[c].key ? json_object_get(g, cols[c].key) : NULL;

			if (!cols[c].key) {
				table_set(&t, row, c, huge_cell(g, buf, sizeof(buf)));
				continue;
			}
			if (v)
				table_set(&t, row, c, cols[c].size ?
					  fmt_size(v, buf, sizeof(buf)) :
					  fmt_value(v, buf, sizeof(buf)));
		}
	}
	table_print(&t);
	table_free(&t);
	/* Guests an earlier ebbd left (not adopted): one line each, after
	 * the table, so scripts reading the table see it unchanged. */
	json_array_foreach(json_object_get(r, "found"), i, g)
		printf("found %s: %s (record %s)\n",
		       json_string_value(json_object_get(g, "name")),
		       json_string_value(json_object_get(g, "reason")),
		       json_string_value(json_object_get(g, "record")));
}

int ebbctl_list(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("guest-list", NULL, false, print_list);
}
