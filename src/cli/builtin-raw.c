/*
 * ebbctl raw: send one request line as given and print the reply line
 * untouched.  Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

int ebbctl_raw(int argc, char **argv)
{
	struct conn cn;
	const char *req;
	int64_t deadline;
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 1, "JSON");
	if (rc)
		return rc;
	req = argv[optind];
	if (strchr(req, '\n'))
		return usage_err("raw: the request must be one line");
	rc = conn_open(&cn);
	if (!rc)
		rc = conn_write(&cn, req, strlen(req));
	if (!rc)
		rc = conn_write(&cn, "\n", 1);
	deadline = deadline_in(opt.timeout_ms);
	while (!rc) {
		char *line;
		json_t *msg;
		int err = conn_read_line(&cn, deadline, &line);

		if (err) {
			report_read_error(err);
			rc = EXIT_FAIL;
			break;
		}
		msg = json_loads(line, 0, NULL);
		if (json_object_get(msg, "event")) {
			json_decref(msg);
			continue;
		}
		/* Our one request is answered first: print it untouched. */
		puts(line);
		if (!msg || json_object_get(msg, "error")) {
			errmsg("%s", msg ? error_desc(msg) : "bad reply from ebbd");
			rc = EXIT_FAIL;
		}
		json_decref(msg);
		break;
	}
	conn_close(&cn);
	return rc;
}
