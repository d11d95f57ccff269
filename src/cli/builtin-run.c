/*
 * ebbctl run: launch a guest (guest-run), and with --prealloc follow its
 * PREALLOC_* events until its memory is populated.  Entry point in
 * ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest_run.h"

/* What `run`'s options gave, per guest_run_args[] (guest_run.h). */
struct run_opts {
	struct guest_run v;
	bool given[GUEST_RUN_NARGS];	/* by index in guest_run_args[] */
};

/* getopt codes: the argument's index in guest_run_args[] above this. */
#define RUN_OPT_BASE	0x200

static int run_opt(int c, const char *arg, void *ctx)
{
	struct run_opts *r = ctx;
	const struct guest_run_arg *a;
	char what[40];

	if (c < RUN_OPT_BASE || (size_t)(c - RUN_OPT_BASE) >= guest_run_nargs)
		return EXIT_USAGE;
	a = &guest_run_args[c - RUN_OPT_BASE];
	r->given[c - RUN_OPT_BASE] = true;
	switch (a->kind) {
	case GR_SIZE:
		snprintf(what, sizeof(what), "--%s", a->option);
		return parse_size(what, arg, guest_run_field(&r->v, a));
	case GR_STR:
		*(const char **)guest_run_field(&r->v, a) = arg;
		return 0;
	case GR_UINT: {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(arg, &end, 10);
		if (errno || end == arg || *end || arg[0] == '-' ||
		    v > GUEST_RUN_UINT_MAX)
			return usage_err("run: --%s takes a whole number from 0 "
					 "to %u", a->option, GUEST_RUN_UINT_MAX);
		*(uint64_t *)guest_run_field(&r->v, a) = v;
		return 0;
	}
	default:
		*(bool *)guest_run_field(&r->v, a) = a->flag;
		return 0;
	}
}

/* The request's arguments into *@out: NAME, then every option given, as
 * the daemon reads them.  0, or EXIT_USAGE after reporting why. */
static int run_args(const struct run_opts *r, const char *name, json_t **out)
{
	json_t *args;

	for (size_t i = 0; i < guest_run_nargs; i++) {
		const struct guest_run_arg *a = &guest_run_args[i];

		if (a->option && a->required && !r->given[i])
			return usage_err("run: missing --%s %s", a->option,
					 a->kind == GR_SIZE ? "SIZE" : "VALUE");
	}
	args = json_object();
	if (!args)
		return EXIT_FAIL;
	for (size_t i = 0; i < guest_run_nargs; i++) {
		const struct guest_run_arg *a = &guest_run_args[i];
		const void *v = (const char *)&r->v + a->offset;
		json_t *j;

		if (!a->option)
			j = json_string(name);
		else if (!r->given[i] ||
			 ((a->kind == GR_SIZE || a->kind == GR_UINT) &&
			  a->omit_zero && !*(const uint64_t *)v))
			continue;
		else if (a->kind == GR_SIZE || a->kind == GR_UINT)
			j = json_integer((json_int_t)*(const uint64_t *)v);
		else if (a->kind == GR_BOOL)
			j = json_boolean(*(const bool *)v);
		else
			j = json_string(*(const char *const *)v);
		/* json_string() fails only on invalid UTF-8 (or no memory). */
		if (!j) {
			json_decref(args);
			if (!a->option)
				return usage_err("run: NAME must be valid UTF-8");
			return usage_err("run: --%s must be valid UTF-8", a->option);
		}
		json_object_set_new(args, a->key, j);
	}
	*out = args;
	return 0;
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
	static const struct option globals[] = { GLOBAL_OPTIONS };
	struct option lo[GUEST_RUN_NARGS + sizeof(globals) / sizeof(globals[0]) + 1];
	struct run_opts r = { .v.name = NULL };
	struct conn cn;
	json_t *args = NULL, *ret = NULL;
	size_t n = 0;
	int rc;

	/* One long option per argument that has one (guest_run.h). */
	for (size_t i = 0; i < GUEST_RUN_NARGS; i++) {
		const struct guest_run_arg *a = &guest_run_args[i];

		if (a->option)
			lo[n++] = (struct option){ a->option,
				a->kind == GR_BOOL ? no_argument : required_argument,
				NULL, RUN_OPT_BASE + (int)i };
	}
	for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++)
		lo[n++] = globals[i];
	lo[n] = (struct option){ 0 };
	guest_run_defaults(&r.v);
	rc = parse_opts(argc, argv, ":", lo, run_opt, &r);
	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (!rc)
		rc = run_args(&r, argv[optind], &args);
	if (rc)
		return rc;
	if (!r.v.prealloc)
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
