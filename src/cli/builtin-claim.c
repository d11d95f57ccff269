/*
 * ebbctl claim: stake host memory for a guest, or cancel its claim.  Entry
 * point in ebbctl.h.
 */
#include "ebbctl.h"

#include <getopt.h>
#include <stdio.h>

static void print_claim(json_t *r)
{
	json_t *claim = json_object_get(r, "claim");
	const char *name = jstr(r, "name");
	char buf[32];

	if (json_is_integer(claim) && json_integer_value(claim) == 0)
		printf("%s: no claim outstanding\n", name);
	else
		printf("%s: claim %s\n", name, fmt_size(claim, buf, sizeof(buf)));
}

int ebbctl_claim(int argc, char **argv)
{
	uint64_t size;
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 2, "NAME and SIZE");
	if (!rc)
		rc = parse_size("claim", argv[optind + 1], &size);
	if (rc)
		return rc;
	return call_and_print("claim", json_pack("{s:s, s:I}", "name", argv[optind],
						 "size", (json_int_t)size),
			      true, print_claim);
}
