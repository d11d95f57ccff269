/*
 * ebbctl discard: give a guest's unused (or volatile, or both) pages back
 * to the host at once through its page-state table (page hinting), and
 * say how much and how fast.  Entry point in ebbctl.h.
 */
#include "ebbctl.h"

#include <stdio.h>
#include <string.h>

struct discard_opts {
	const char *what;	/* "unused", "volatile", "all" */
	uint64_t max_bytes;	/* 0: no limit */
};

static int discard_opt(int c, const char *arg, void *ctx)
{
	struct discard_opts *o = ctx;

	switch (c) {
	case 'u': o->what = "unused"; return 0;
	case 'v': o->what = "volatile"; return 0;
	case 'a': o->what = "all"; return 0;
	case 'm': return parse_size("--max", arg, &o->max_bytes);
	default: return usage_err("discard: unknown option");
	}
}

static void print_discard(json_t *r)
{
	char b1[32];
	json_t *ms = json_object_get(r, "ms");

	printf("%s: discarded %s of %s pages (%lld pages, %lld punches) in %.1f ms\n",
	       jstr(r, "name"), fmt_size(json_object_get(r, "bytes"), b1, sizeof(b1)),
	       jstr(r, "what"),
	       (long long)json_integer_value(json_object_get(r, "pages")),
	       (long long)json_integer_value(json_object_get(r, "punches")),
	       json_is_number(ms) ? json_number_value(ms) : 0.0);
}

int ebbctl_discard(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "unused", no_argument, NULL, 'u' },
		{ "volatile", no_argument, NULL, 'v' },
		{ "all", no_argument, NULL, 'a' },
		{ "max", required_argument, NULL, 'm' },
		GLOBAL_OPTIONS, { 0 },
	};
	struct discard_opts o = { .what = "unused" };
	json_t *args;
	int rc = parse_opts(argc, argv, ":", lo, discard_opt, &o);

	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (rc)
		return rc;
	args = json_pack("{s:s, s:s}", "name", argv[optind], "what", o.what);
	if (!args)
		return usage_err("discard: NAME must be valid UTF-8");
	if (o.max_bytes)
		json_object_set_new(args, "max_bytes",
				    json_integer((json_int_t)o.max_bytes));
	return call_and_print("guest-discard", args, true, print_discard);
}
