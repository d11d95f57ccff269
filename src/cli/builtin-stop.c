/*
 * ebbctl stop: power a guest off (--force: kill it).  Entry point in
 * ebbctl.h.
 */
#include "ebbctl.h"

#include <getopt.h>

static int stop_opt(int c, const char *arg, void *ctx)
{
	*(bool *)ctx = true;
	return 0;
}

int ebbctl_stop(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force", no_argument, NULL, 'f' },
		GLOBAL_OPTIONS, { 0 },
	};
	bool force = false;
	json_t *args;
	int rc = parse_opts(argc, argv, ":f", lo, stop_opt, &force);

	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (rc)
		return rc;
	args = json_pack("{s:s}", "name", argv[optind]);
	if (args && force)
		json_object_set_new(args, "force", json_true());
	return call_and_print("guest-stop", args, true, NULL);
}
