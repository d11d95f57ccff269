/*
 * ebbctl policy: the host memory policy's state, watermarks, inputs and
 * last actions (policy); with NAME, a guest's min, max and shares
 * (guest-policy).  Entry point in ebbctl.h.
 *
 *   ebbctl policy [--on | --off] [--low SIZE] [--high SIZE]
 *   ebbctl policy NAME [--min SIZE] [--max SIZE] [--shares N]
 */
#include "ebbctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct policy_opts {
	const char *mode;		/* "on", "off", NULL: unchanged */
	uint64_t low, high;		/* 0: unchanged */
	uint64_t min, max;
	bool min_set, max_set;
	long long shares;		/* -1: unchanged */
};

static int policy_opt(int c, const char *arg, void *ctx)
{
	struct policy_opts *o = ctx;
	char *end;

	switch (c) {
	case 'o': o->mode = "on"; return 0;
	case 'f': o->mode = "off"; return 0;
	case 'l': return parse_size("--low", arg, &o->low);
	case 'h': return parse_size("--high", arg, &o->high);
	case 'n': o->min_set = true; return parse_size("--min", arg, &o->min);
	case 'x': o->max_set = true; return parse_size("--max", arg, &o->max);
	case 's':
		errno = 0;
		o->shares = strtoll(arg, &end, 10);
		if (errno || end == arg || *end || o->shares < 1 || o->shares > 10000)
			return usage_err("policy: --shares takes 1 to 10000");
		return 0;
	default:
		return usage_err("policy: unknown option");
	}
}

static const char *size_or(json_t *o, const char *key, char *buf, size_t len)
{
	return fmt_size(json_object_get(o, key), buf, len);
}

static void print_guests(json_t *guests)
{
	struct table t = { 0 };
	static const char *const head[] = {
		"NAME", "MIN", "MAX", "SHARES", "KEEP", "RESIDENT", "MODE",
	};
	size_t i;
	json_t *g;

	for (size_t c = 0; c < sizeof(head) / sizeof(head[0]); c++)
		table_col(&t, head[c], c > 0 && c < 6);
	json_array_foreach(guests, i, g) {
		long row = table_row(&t);
		char b[32], n[16];

		table_set(&t, row, 0, jstr(g, "name"));
		table_set(&t, row, 1, size_or(g, "min", b, sizeof(b)));
		table_set(&t, row, 2, size_or(g, "max", b, sizeof(b)));
		snprintf(n, sizeof(n), "%lld",
			 (long long)json_integer_value(json_object_get(g, "shares")));
		table_set(&t, row, 3, n);
		table_set(&t, row, 4, size_or(g, "keep", b, sizeof(b)));
		table_set(&t, row, 5, size_or(g, "resident", b, sizeof(b)));
		table_set(&t, row, 6, json_is_true(json_object_get(g, "manual")) ?
			  "manual" : "policy");
	}
	table_print(&t);
	table_free(&t);
}

static void print_actions(json_t *actions)
{
	struct table t = { 0 };
	static const char *const head[] = {
		"TIME", "GUEST", "MECHANISM", "BYTES", "TARGET", "REASON",
	};
	size_t i;
	json_t *a;

	for (size_t c = 0; c < sizeof(head) / sizeof(head[0]); c++)
		table_col(&t, head[c], c == 3 || c == 4);
	json_array_foreach(actions, i, a) {
		long row = table_row(&t);
		time_t when = (time_t)json_number_value(json_object_get(a, "time"));
		char b[32], tm[16];
		struct tm lt;

		strftime(tm, sizeof(tm), "%H:%M:%S", localtime_r(&when, &lt));
		table_set(&t, row, 0, tm);
		table_set(&t, row, 1, json_is_string(json_object_get(a, "name")) ?
			  jstr(a, "name") : "(host)");
		table_set(&t, row, 2, jstr(a, "mechanism"));
		table_set(&t, row, 3, size_or(a, "bytes", b, sizeof(b)));
		table_set(&t, row, 4, json_object_get(a, "target") ?
			  size_or(a, "target", b, sizeof(b)) : "-");
		table_set(&t, row, 5, jstr(a, "reason"));
	}
	table_print(&t);
	table_free(&t);
}

static void print_policy(json_t *r)
{
	json_t *w = json_object_get(r, "watermarks"), *cg = json_object_get(r, "cgroup");
	json_t *psi = json_object_get(r, "psi_some_avg10");
	char b1[32], b2[32], b3[32], b4[32];

	printf("policy: %s, state %s, %lld decisions\n", jstr(r, "mode"),
	       jstr(r, "state"),
	       (long long)json_integer_value(json_object_get(r, "ticks")));
	printf("watermarks: low %s, high %s (step %s, margin %s)\n",
	       size_or(w, "low", b1, sizeof(b1)), size_or(w, "high", b2, sizeof(b2)),
	       size_or(r, "step", b3, sizeof(b3)), size_or(r, "margin", b4, sizeof(b4)));
	printf("host: free %s, need %s, pressure %s (PSI some avg10 %s%%)\n",
	       json_integer_value(json_object_get(r, "free")) < 0 ? "below 0" :
	       size_or(r, "free", b1, sizeof(b1)), size_or(r, "need", b2, sizeof(b2)),
	       json_is_true(json_object_get(r, "pressure")) ? "yes" : "no",
	       json_is_number(psi) ? (snprintf(b3, sizeof(b3), "%.2f",
					       json_number_value(psi)), b3) : "-");
	if (json_is_object(cg))
		printf("cgroup: %s: limit %s, working set %s, swap %s\n",
		       jstr(cg, "path"), size_or(cg, "limit", b1, sizeof(b1)),
		       size_or(cg, "working_set", b2, sizeof(b2)),
		       size_or(cg, "swap", b3, sizeof(b3)));
	printf("store: %s; host swap: %s\n",
	       json_is_true(json_object_get(r, "store_refusing")) ?
	       "refusing growth" : "taking puts",
	       json_is_true(json_object_get(r, "host_swap")) ?
	       "by per-guest cgroup" : "unavailable");
	printf("\n");
	print_guests(json_object_get(r, "guests"));
	if (json_array_size(json_object_get(r, "actions"))) {
		printf("\nlast actions:\n");
		print_actions(json_object_get(r, "actions"));
	}
}

static void print_guest_policy(json_t *r)
{
	char b1[32], b2[32];

	printf("%s: min %s, max %s, shares %lld, %s\n", jstr(r, "name"),
	       size_or(r, "min", b1, sizeof(b1)), size_or(r, "max", b2, sizeof(b2)),
	       (long long)json_integer_value(json_object_get(r, "shares")),
	       json_is_true(json_object_get(r, "manual")) ? "manual" :
	       "managed by the policy");
}

int ebbctl_policy(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "on", no_argument, NULL, 'o' },
		{ "off", no_argument, NULL, 'f' },
		{ "low", required_argument, NULL, 'l' },
		{ "high", required_argument, NULL, 'h' },
		{ "min", required_argument, NULL, 'n' },
		{ "max", required_argument, NULL, 'x' },
		{ "shares", required_argument, NULL, 's' },
		GLOBAL_OPTIONS, { 0 },
	};
	struct policy_opts o = { .shares = -1 };
	json_t *args;
	int rc = parse_opts(argc, argv, ":", lo, policy_opt, &o);

	if (rc)
		return rc;
	if (argc - optind > 1)
		return usage_err("policy: unexpected argument '%s'", argv[optind + 1]);
	if (argc - optind == 0) {
		if (o.min_set || o.max_set || o.shares >= 0)
			return usage_err("policy: --min, --max and --shares need a NAME");
		args = json_object();
		if (o.mode)
			json_object_set_new(args, "mode", json_string(o.mode));
		if (o.low)
			json_object_set_new(args, "low", json_integer((json_int_t)o.low));
		if (o.high)
			json_object_set_new(args, "high", json_integer((json_int_t)o.high));
		return call_and_print("policy", args, true, print_policy);
	}
	if (o.mode || o.low || o.high)
		return usage_err("policy: --on, --off, --low and --high take no NAME");
	args = json_pack("{s:s}", "name", argv[optind]);
	if (!args)
		return usage_err("policy: NAME must be valid UTF-8");
	if (o.min_set)
		json_object_set_new(args, "min", json_integer((json_int_t)o.min));
	if (o.max_set)
		json_object_set_new(args, "max", json_integer((json_int_t)o.max));
	if (o.shares >= 0)
		json_object_set_new(args, "shares", json_integer(o.shares));
	return call_and_print("guest-policy", args, true, print_guest_policy);
}
