/*
 * ebbctl info: the host budget, residency and claims.  Entry point in
 * ebbctl.h.
 */
#include "ebbctl.h"

static void print_info(json_t *r)
{
	kv_print(r, NULL);
}

int ebbctl_info(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("info", NULL, false, print_info);
}
