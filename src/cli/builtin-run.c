/*
 * ebbctl run: launch a guest (guest-run), and with --prealloc follow its
 * PREALLOC_* events until its memory is populated.  Entry point in
 * ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct run_opts {
	uint64_t mem, min;
	bool have_mem, have_min, prealloc, no_claim, no_reporting, external;
	bool disk_ro;
	uint64_t swap, swap_quota;
	const char *cmdline, *disk;
};

static int run_opt(int c, const char *arg, void *ctx)
{
	struct run_opts *r = ctx;

	switch (c) {
	case 'm':
		r->have_mem = true;
		return parse_size("--mem", arg, &r->mem);
	case 'n':
		r->have_min = true;
		return parse_size("--min", arg, &r->min);
	case 'p':
		r->prealloc = true;
		return 0;
	case 'c':
		r->cmdline = arg;
		return 0;
	case 'N':
		r->no_claim = true;
		return 0;
	case 'R':
		r->no_reporting = true;
		return 0;
	case 'x':
		r->external = true;
		return 0;
	case 'w':
		return parse_size("--swap", arg, &r->swap);
	case 'q':
		return parse_size("--swap-quota", arg, &r->swap_quota);
	case 'd':
		r->disk = arg;
		return 0;
	case 'o':
		r->disk_ro = true;
		return 0;
	}
	return EXIT_USAGE;
}

/* run --prealloc: follow the daemon's PREALLOC_* events for @name until
 * the guest's memory is populated (exit 0) or the launch failed late. */
struct prealloc_wait {
	const char *name;
	bool tty;		/* draw a bar on stderr */
	enum { PW_RUNNING, PW_DONE, PW_FAILED } state;
	json_t *last;		/* the final event's data */
};

static void prealloc_bar(const struct prealloc_wait *pw, json_t *data)
{
	double done = (double)json_integer_value(json_object_get(data, "done"));
	double total = (double)json_integer_value(json_object_get(data, "total"));
	double frac = total > 0 ? done / total : 0;
	char bar[41];
	int n = (int)(frac * 40);

	if (!pw->tty)
		return;
	memset(bar, '#', (size_t)n);
	memset(bar + n, '.', (size_t)(40 - n));
	bar[40] = 0;
	fprintf(stderr, "\r%s: prealloc [%s] %3.0f%% %.0f/%.0f MiB", pw->name,
		bar, frac * 100, done / (1 << 20), total / (1 << 20));
	fflush(stderr);
}

static void prealloc_event(void *ctx, json_t *ev)
{
	struct prealloc_wait *pw = ctx;
	json_t *data = json_object_get(ev, "data");
	const char *name = json_string_value(json_object_get(data, "name"));
	const char *what = jstr(ev, "event");

	if (!name || strcmp(name, pw->name) != 0 || pw->state != PW_RUNNING)
		return;
	if (strcmp(what, "PREALLOC_PROGRESS") == 0) {
		prealloc_bar(pw, data);
	} else if (strcmp(what, "PREALLOC_DONE") == 0) {
		prealloc_bar(pw, data);
		pw->state = PW_DONE;
		pw->last = json_incref(data);
	} else if (strcmp(what, "PREALLOC_FAILED") == 0 ||
		   strcmp(what, "GUEST_STOPPED") == 0) {
		pw->state = PW_FAILED;
		pw->last = json_incref(data);
	}
}

static int prealloc_wait(struct conn *cn, const char *name)
{
	struct prealloc_wait pw = { .name = name, .tty = isatty(2) };
	char b1[32], b2[32], b3[32];
	int rc = 0;

	while (pw.state == PW_RUNNING) {
		json_t *msg;

		/* Progress events come every half second while it runs; the
		 * per-reply timeout bounds a daemon that has gone quiet. */
		rc = conn_read_msg(cn, deadline_in(opt.timeout_ms), &msg);
		if (rc) {
			if (rc != -EBADMSG)
				report_read_error(rc);
			return EXIT_FAIL;
		}
		if (json_object_get(msg, "event"))
			prealloc_event(&pw, msg);
		json_decref(msg);
	}
	if (pw.tty)
		fputc('\n', stderr);
	if (pw.state == PW_DONE) {
		printf("%s: preallocated %s in %.2f s (%s chunks of 2 MiB or less, "
		       "%s pages by 4 KiB)\n", name,
		       fmt_size(json_object_get(pw.last, "done"), b1, sizeof(b1)),
		       json_number_value(json_object_get(pw.last, "seconds")),
		       fmt_value(json_object_get(pw.last, "chunks"), b2, sizeof(b2)),
		       fmt_value(json_object_get(pw.last, "fallback_pages"), b3,
				 sizeof(b3)));
	} else {
		const char *why = json_string_value(json_object_get(pw.last, "reason"));

		errmsg("%s: %s", name, why ? why : "guest stopped during prealloc");
	}
	json_decref(pw.last);
	return pw.state == PW_DONE ? 0 : EXIT_FAIL;
}

/* The guest's line, then one line per device socket: a VMM that ebbd did
 * not launch (--external) needs the paths to connect to. */
static void print_run(json_t *r)
{
	char b1[32], b2[32], b3[32];
	json_t *socks = json_object_get(r, "sockets"), *path;
	const char *role;

	printf("%s: started, pid %s, mem %s, claim %s\n",
	       jstr(r, "name"),
	       fmt_value(json_object_get(r, "pid"), b1, sizeof(b1)),
	       fmt_size(json_object_get(r, "mem"), b2, sizeof(b2)),
	       fmt_size(json_object_get(r, "claim"), b3, sizeof(b3)));
	json_object_foreach(socks, role, path) {
		if (json_is_string(path))
			printf("  %s socket: %s\n", role, json_string_value(path));
	}
}

int ebbctl_run(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "min", required_argument, NULL, 'n' },
		{ "prealloc", no_argument, NULL, 'p' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "no-claim", no_argument, NULL, 'N' },
		{ "no-reporting", no_argument, NULL, 'R' },
		{ "external", no_argument, NULL, 'x' },
		{ "swap", required_argument, NULL, 'w' },
		{ "swap-quota", required_argument, NULL, 'q' },
		{ "disk", required_argument, NULL, 'd' },
		{ "disk-ro", no_argument, NULL, 'o' },
		GLOBAL_OPTIONS, { 0 },
	};
	struct run_opts r = { 0 };
	struct conn cn;
	json_t *args, *ret = NULL;
	int rc;

	rc = parse_opts(argc, argv, ":", lo, run_opt, &r);
	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (rc)
		return rc;
	if (!r.have_mem)
		return usage_err("run: missing --mem SIZE");
	args = json_pack("{s:s, s:I}", "name", argv[optind], "mem", (json_int_t)r.mem);
	if (!args)
		return usage_err("run: NAME must be valid UTF-8");
	if (r.have_min)
		json_object_set_new(args, "min", json_integer((json_int_t)r.min));
	if (r.prealloc)
		json_object_set_new(args, "prealloc", json_true());
	if (r.no_claim)
		json_object_set_new(args, "claim", json_false());
	if (r.no_reporting)
		json_object_set_new(args, "reporting", json_false());
	if (r.external)
		json_object_set_new(args, "external", json_true());
	if (r.swap)
		json_object_set_new(args, "swap", json_integer((json_int_t)r.swap));
	if (r.swap_quota)
		json_object_set_new(args, "swap_quota",
				    json_integer((json_int_t)r.swap_quota));
	if (r.disk_ro)
		json_object_set_new(args, "disk_ro", json_true());
	if (r.disk) {
		json_t *dp = json_string(r.disk);

		if (!dp) {
			json_decref(args);
			return usage_err("run: --disk must be valid UTF-8");
		}
		json_object_set_new(args, "disk", dp);
	}
	if (r.cmdline) {
		json_t *cl = json_string(r.cmdline);

		if (!cl) {
			json_decref(args);
			return usage_err("run: --cmdline must be valid UTF-8");
		}
		json_object_set_new(args, "cmdline", cl);
	}
	if (!r.prealloc)
		return call_and_print("guest-run", args, true, print_run);
	/* With --prealloc the launch is not over when the reply comes: stay
	 * on the same connection (events are already flowing) until the
	 * memory is there or the launch failed late. */
	rc = conn_open(&cn);
	if (rc) {
		json_decref(args);
		conn_close(&cn);
		return rc;
	}
	rc = conn_call(&cn, "guest-run", args, NULL, NULL, &ret);
	if (!rc) {
		if (opt.json)
			print_json(ret);
		else
			print_run(ret);
		fflush(stdout);
		rc = prealloc_wait(&cn, argv[optind]);
	}
	json_decref(ret);
	conn_close(&cn);
	return rc;
}
