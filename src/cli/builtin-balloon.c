/*
 * ebbctl balloon: set the memory a guest is left with after ballooning;
 * --wait follows it until the guest gets there.  Entry point in
 * ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#define BALLOON_POLL_MS		500	/* guest-list poll while --wait */

/* balloon --wait: done when the daemon says so, by event or by numbers. */
struct balloon_wait {
	const char *name;
	bool reached;		/* BALLOON_TARGET_REACHED seen for name */
	json_int_t actual;	/* from that event, -1 unknown */
};

static void balloon_event(void *ctx, json_t *ev)
{
	struct balloon_wait *bw = ctx;
	json_t *data = json_object_get(ev, "data");
	const char *name = json_string_value(json_object_get(data, "name"));

	if (name && strcmp(name, bw->name) == 0 &&
	    strcmp(jstr(ev, "event"), "BALLOON_TARGET_REACHED") == 0) {
		bw->reached = true;
		if (json_is_integer(json_object_get(data, "actual")))
			bw->actual = json_integer_value(json_object_get(data, "actual"));
	}
}

static json_t *find_guest(json_t *list, const char *name)
{
	size_t i;
	json_t *g;

	json_array_foreach(json_object_get(list, "guests"), i, g) {
		const char *n = json_string_value(json_object_get(g, "name"));

		if (n && strcmp(n, name) == 0)
			return g;
	}
	return NULL;
}

static void print_balloon(json_t *r, bool done)
{
	char b1[32], b2[32];

	if (opt.json) {
		print_json(r);
		return;
	}
	printf("%s: balloon target %s%s, actual %s\n",
	       jstr(r, "name"),
	       fmt_size(json_object_get(r, "target"), b1, sizeof(b1)),
	       done ? " reached" : "",
	       fmt_size(json_object_get(r, "actual"), b2, sizeof(b2)));
}

static int balloon_wait(struct conn *cn, json_t *ret, const char *name,
			int64_t wait_ms)
{
	struct balloon_wait bw = { .name = name, .actual = -1 };
	int64_t deadline = now_ms() + wait_ms;
	char b1[32], b2[32];

	if (json_equal(json_object_get(ret, "target"), json_object_get(ret, "actual")))
		goto done;
	for (;;) {
		json_t *list, *g, *msg;
		char state[32];
		int64_t until;
		int rc;

		rc = conn_call(cn, "guest-list", NULL, balloon_event, &bw, &list);
		if (rc)
			return rc;
		g = find_guest(list, name);
		if (!g) {
			json_decref(list);
			errmsg("%s: guest is gone", name);
			return EXIT_FAIL;
		}
		/* Copy what we need: @list goes away below. The daemon's
		 * balloon_target is the effective one (it may round). */
		snprintf(state, sizeof(state), "%s", jstr(g, "state"));
		json_object_set(ret, "actual", json_object_get(g, "balloon_actual"));
		if (json_is_integer(json_object_get(g, "balloon_target")))
			json_object_set(ret, "target", json_object_get(g, "balloon_target"));
		if (json_equal(json_object_get(ret, "target"), json_object_get(ret, "actual")))
			bw.reached = true;
		json_decref(list);
		if (bw.reached)
			break;
		if (strcmp(state, "stopping") == 0 || strcmp(state, "stopped") == 0 ||
		    strcmp(state, "failed") == 0) {
			errmsg("%s: guest is %s", name, state);
			return EXIT_FAIL;
		}
		if (now_ms() >= deadline) {
			errmsg("%s: balloon actual %s did not reach target %s within %.1f s",
			       name, fmt_size(json_object_get(ret, "actual"), b1, sizeof(b1)),
			       fmt_size(json_object_get(ret, "target"), b2, sizeof(b2)),
			       (double)wait_ms / 1000.0);
			return EXIT_FAIL;
		}
		/* Between polls, listen: the event usually comes first. */
		until = now_ms() + BALLOON_POLL_MS;
		if (until > deadline)
			until = deadline;
		while (!bw.reached && (rc = conn_read_msg(cn, until, &msg)) == 0) {
			if (json_object_get(msg, "event"))
				balloon_event(&bw, msg);
			json_decref(msg);
		}
		if (bw.reached)
			break;
		if (rc != -ETIMEDOUT) {
			if (rc != -EBADMSG)
				report_read_error(rc);
			return EXIT_FAIL;
		}
	}
	if (bw.actual >= 0)
		json_object_set_new(ret, "actual", json_integer(bw.actual));
done:
	print_balloon(ret, true);
	return 0;
}

static int balloon_opt(int c, const char *arg, void *ctx)
{
	return parse_seconds("--wait", arg, ctx);
}

int ebbctl_balloon(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "wait", required_argument, NULL, 'w' },
		GLOBAL_OPTIONS, { 0 },
	};
	int64_t wait_ms = -1;
	uint64_t size;
	struct conn cn;
	json_t *args, *ret;
	int rc = parse_opts(argc, argv, ":", lo, balloon_opt, &wait_ms);

	if (!rc)
		rc = want_args(argc, argv, 2, "NAME and SIZE");
	if (!rc)
		rc = parse_size("balloon", argv[optind + 1], &size);
	if (rc)
		return rc;
	args = json_pack("{s:s, s:I}", "name", argv[optind], "target",
			 (json_int_t)size);
	if (!args)
		return usage_err("balloon: NAME must be valid UTF-8");
	rc = conn_open(&cn);
	if (!rc)
		rc = conn_call(&cn, "balloon", args, NULL, NULL, &ret);
	else
		json_decref(args);
	if (!rc) {
		if (wait_ms >= 0)
			rc = balloon_wait(&cn, ret, argv[optind], wait_ms);
		else
			print_balloon(ret, false);
		json_decref(ret);
	}
	conn_close(&cn);
	return rc;
}
