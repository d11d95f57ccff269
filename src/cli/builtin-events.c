/*
 * ebbctl events: print ebbd's events as they arrive, one line each.
 * Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "2024-05-01 12:00:00.123456 GUEST_STARTED name=web1 pid=1234" */
static void print_event(json_t *ev)
{
	json_t *ts = json_object_get(ev, "timestamp");
	json_t *data = json_object_get(ev, "data");
	time_t sec = (time_t)json_integer_value(json_object_get(ts, "seconds"));
	long usec = (long)json_integer_value(json_object_get(ts, "microseconds"));
	const char *key;
	json_t *v;
	char when[64];
	struct tm tm;

	if (opt.json) {
		print_json(ev);
		fflush(stdout);
		return;
	}
	if (!localtime_r(&sec, &tm) || !strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(when, sizeof(when), "%lld", (long long)sec);
	printf("%s.%06ld %s", when, usec,
	       jstr(ev, "event"));
	json_object_foreach(data, key, v) {
		char buf[256];
		const char *s = fmt_keyed(key, v, buf, sizeof(buf));

		/* Strings with spaces are quoted so the line stays parseable. */
		if (json_is_string(v) && (!*s || strpbrk(s, " \t\"="))) {
			char *q = json_dumps(v, JSON_ENCODE_ANY);

			printf(" %s=%s", key, q ? q : "?");
			free(q);
		} else {
			printf(" %s=%s", key, s);
		}
	}
	putchar('\n');
	fflush(stdout);
}

int ebbctl_events(int argc, char **argv)
{
	struct conn cn;
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	if (rc)
		return rc;
	rc = conn_open(&cn);
	while (!rc) {
		json_t *msg;

		rc = conn_read_msg(&cn, -1, &msg);
		if (rc) {
			if (rc != -EBADMSG)
				report_read_error(rc);
			rc = EXIT_FAIL;
			break;
		}
		if (json_object_get(msg, "event"))
			print_event(msg);
		json_decref(msg);
	}
	conn_close(&cn);
	return rc;
}
