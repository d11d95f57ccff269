/*
 * ebbctl list: the guests and their memory, one table row each.  Entry
 * point in ebbctl.h.
 */
#include "ebbctl.h"

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
			json_t *v = json_object_get(g, cols[c].key);

			if (v)
				table_set(&t, row, c, cols[c].size ?
					  fmt_size(v, buf, sizeof(buf)) :
					  fmt_value(v, buf, sizeof(buf)));
		}
	}
	table_print(&t);
	table_free(&t);
}

int ebbctl_list(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("guest-list", NULL, false, print_list);
}
