/*
 * ebbctl: the command-line client of ebbd's control socket
 * (docs/control.md): its main, global options, option parsing and the
 * command table.  Each command is a builtin-<command>.c; the connection
 * is conn.c, output formatting format.c; all are declared in ebbctl.h.
 *
 * One connection per invocation: read the greeting, send a request (a few,
 * for balloon --wait), print the reply, exit.  Events that arrive while a
 * reply is awaited are skipped, except by the commands that want them.
 * Output is a table or "key: value" lines for people, or with --json the
 * daemon's return object as one line for scripts.
 *
 * Exit status: 0 done, 1 the daemon refused or the connection failed,
 * 2 the command line was wrong.  Every failure is one "ebbctl: ..." line on
 * stderr.
 */
#include "ebbctl.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "size.h"

#define DEFAULT_TIMEOUT_MS	30000

struct ebbctl_opts opt = {
	.socket = NULL,
	.timeout_ms = DEFAULT_TIMEOUT_MS,
};

void errmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("ebbctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int usage_err(const char *fmt, ...)
{
	va_list ap;

	fputs("ebbctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see 'ebbctl help')\n", stderr);
	return EXIT_USAGE;
}

/* ---- argument parsing ---- */

int parse_size(const char *what, const char *s, uint64_t *out)
{
	int rc = size_parse(s, out);

	if (rc == -ERANGE || (!rc && *out > (uint64_t)INT64_MAX))
		return usage_err("size too large for %s: '%s'", what, s);
	if (rc)
		return usage_err("invalid size for %s: '%s' (use bytes or a "
				 "K/M/G/T suffix, e.g. 512M)", what, s);
	return 0;
}

/* Seconds as a non-negative number ("30", "0.5") into milliseconds. */
int parse_seconds(const char *what, const char *s, int64_t *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 1e7)
		return usage_err("invalid number of seconds for %s: '%s'", what, s);
	*ms = (int64_t)(v * 1000.0);
	return 0;
}

static void usage(FILE *f);

/* Options every command accepts, before or after its name.  Returns 0
 * when handled, -1 for "not a global option", or an exit status. */
static int global_opt(int c, const char *arg)
{
	switch (c) {
	case OPT_SOCKET:
		opt.socket = arg;
		return 0;
	case OPT_JSON:
		opt.json = true;
		return 0;
	case OPT_TIMEOUT:
		if (parse_seconds("--timeout", arg, &opt.timeout_ms))
			return EXIT_USAGE;
		if (opt.timeout_ms == 0)
			opt.timeout_ms = -1;
		return 0;
	case OPT_HELP:
		usage(stdout);
		exit(0);
	}
	return -1;
}

/* getopt_long over a command's own argv, globals included.  Calls
 * @each(c, optarg, ctx) for command options.  Returns 0 or an exit status. */
int parse_opts(int argc, char **argv, const char *shortopts,
	       const struct option *longopts, int (*each)(int c,
	       const char *arg, void *ctx), void *ctx)
{
	int c;

	optind = 0;	/* glibc: full re-initialisation */
	opterr = 0;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		int rc;

		if (c == '?')
			return usage_err("%s: unknown option '%s'", argv[0],
					 argv[optind - 1]);
		if (c == ':')
			return usage_err("%s: option '%s' needs a value", argv[0],
					 argv[optind - 1]);
		rc = global_opt(c, optarg);
		if (rc < 0)
			rc = each ? each(c, optarg, ctx) : EXIT_USAGE;
		if (rc)
			return rc;
	}
	return 0;
}

/* Exactly @n positional arguments after the options. */
int want_args(int argc, char **argv, int n, const char *names)
{
	int have = argc - optind;

	if (have < n)
		return usage_err("%s: missing %s", argv[0], names);
	if (have > n)
		return usage_err("%s: unexpected argument '%s'", argv[0],
				 argv[optind + n]);
	return 0;
}

int simple_opts(int argc, char **argv)
{
	static const struct option lo[] = { GLOBAL_OPTIONS, { 0 } };

	return parse_opts(argc, argv, ":", lo, NULL, NULL);
}

static int ebbctl_help(int argc, char **argv)
{
	usage(stdout);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", ebbctl_run },
	{ "list", ebbctl_list },
	{ "balloon", ebbctl_balloon },
	{ "discard", ebbctl_discard },
	{ "policy", ebbctl_policy },
	{ "stats", ebbctl_stats },
	{ "stop", ebbctl_stop },
	{ "exec", ebbctl_exec },
	{ "info", ebbctl_info },
	{ "upgrade", ebbctl_upgrade },
	{ "claim", ebbctl_claim },
	{ "tmem", ebbctl_tmem },
	{ "events", ebbctl_events },
	{ "top", ebbctl_top },
	{ "raw", ebbctl_raw },
	{ "help", ebbctl_help },
};

static void usage(FILE *f)
{
	fputs(
"usage: ebbctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND ...\n"
"\n"
"  run NAME --mem SIZE [--min SIZE] [--max SIZE] [--shares N]\n"
"      [--prealloc] [--cmdline STR]\n"
"      [--no-reporting] [--no-page-states] [--external] [--no-claim]\n"
"      [--swap SIZE [--swap-quota SIZE]] [--disk IMAGE [--disk-ro]]\n"
"                              launch a guest; --prealloc populates its\n"
"                              memory before it boots (progress bar on a\n"
"                              terminal); --no-claim skips admission (the\n"
"                              naive toolstack, for benchmarks only);\n"
"                              --swap: a swap device kept in host memory\n"
"                              (tmem), up to --swap-quota (default: --mem)\n"
"                              there, the rest in a backing file; --disk: an\n"
"                              image as /dev/vdX, reads cached in host\n"
"                              memory shared by the guests using it;\n"
"                              --min: never ballooned below (and the claim),\n"
"                              --max: the policy never gives more, --shares:\n"
"                              more shares give less (default 100)\n"
"  list                        guests and their memory\n"
"  balloon NAME SIZE [--wait SECONDS]\n"
"                              set the guest's memory left after ballooning;\n"
"                              --wait until the guest gets there\n"
"  discard NAME [--unused|--volatile|--all] [--max SIZE]\n"
"                              give the guest's unused (default) and/or\n"
"                              volatile pages back to the host at once\n"
"                              (page hinting; needs its kernel's ebb driver)\n"
"  policy [--on|--off] [--low SIZE] [--high SIZE]\n"
"                              the host memory policy: state, watermarks,\n"
"                              guests, last actions; switch it or move its\n"
"                              watermarks\n"
"  policy NAME [--min SIZE] [--max SIZE] [--shares N]\n"
"                              a guest's policy settings (also hands a guest\n"
"                              an operator ballooned back to the policy)\n"
"  stats NAME                  the guest's balloon statistics and page states\n"
"  stop NAME [--force]         stop a guest\n"
"  exec NAME COMMAND...        run a shell line on the guest's console\n"
"  info                        host budget, residency and claims\n"
"  upgrade                     re-execute the ebbd binary on disk; guests\n"
"                              run on; prints how long devices paused\n"
"  claim NAME SIZE|0           stake host memory for a guest (0 cancels)\n"
"  tmem                        transcendent memory pools\n"
"  events                      print events as they arrive\n"
"  top [--interval SECONDS] [--count N]\n"
"                              live view of the host and its guests, sorted\n"
"                              by resident memory, with recent events;\n"
"                              refreshes every second (and on events);\n"
"                              q quits; --count: stop after N frames\n"
"  raw JSON                    send one request line, print the reply line\n"
"  help                        this text\n"
"\n"
"SIZE is bytes or a number with a K, M, G or T suffix (binary): 512M, 1.5G.\n"
"The socket is --socket, else $EBB_SOCKET, else " CONTROL_DEFAULT_PATH ".\n"
"--timeout bounds the wait for each reply (default 30, 0 waits forever).\n"
"--json prints the daemon's return object as one JSON line.\n"
"Exit status: 0 ok, 1 error from ebbd or the connection, 2 usage error.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { GLOBAL_OPTIONS, { 0 } };
	int c, rc;

	opt.socket = getenv("EBB_SOCKET");
	if (!opt.socket || !*opt.socket)
		opt.socket = CONTROL_DEFAULT_PATH;
	opterr = 0;
	/* '+': stop at the command name; its options are its own. */
	while ((c = getopt_long(argc, argv, "+:", lo, NULL)) != -1) {
		if (c == '?')
			return usage_err("unknown option '%s'", argv[optind - 1]);
		if (c == ':')
			return usage_err("option '%s' needs a value", argv[optind - 1]);
		rc = global_opt(c, optarg);
		if (rc)
			return rc;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			rc = commands[i].fn(argc - optind, argv + optind);
			if (fflush(stdout) != 0 || ferror(stdout)) {
				errmsg("writing output: %s", strerror(errno));
				return EXIT_FAIL;
			}
			return rc;
		}
	}
	return usage_err("unknown command '%s'", argv[optind]);
}
