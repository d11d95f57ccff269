/*
 * ebbctl exec: run a shell line on a guest's console agent.  Entry point
 * in ebbctl.h.
 */
#include "ebbctl.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int ebbctl_exec(int argc, char **argv)
{
	static const struct option lo[] = { GLOBAL_OPTIONS, { 0 } };
	size_t len = 0;
	char *line;
	json_t *args;
	/* '+': stop at NAME, so the guest command keeps its own options. */
	int rc = parse_opts(argc, argv, "+:", lo, NULL, NULL);

	if (rc)
		return rc;
	if (argc - optind < 2)
		return usage_err("exec: missing %s", argc - optind ? "COMMAND" : "NAME");
	for (int i = optind + 1; i < argc; i++)
		len += strlen(argv[i]) + 1;
	line = calloc(1, len);
	if (!line)
		return EXIT_FAIL;
	for (int i = optind + 1; i < argc; i++) {
		if (i > optind + 1)
			strcat(line, " ");
		strcat(line, argv[i]);
	}
	args = json_pack("{s:s, s:s}", "name", argv[optind], "command", line);
	free(line);
	return call_and_print("guest-exec", args, true, NULL);
}
