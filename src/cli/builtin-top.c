/*
 * ebbctl top: a live view of the host and every guest, refreshed every
 * --interval seconds and whenever an event arrives, sorted by resident
 * memory, with the most recent events below.  Quits on q (or Ctrl-C).
 * Entry point in ebbctl.h.
 *
 * A plain terminal is enough: the screen is redrawn with two ANSI
 * sequences (cursor home, clear), and the keyboard is read with the
 * terminal in non-canonical mode, no curses.  When stdout is not a
 * terminal, frames are printed one after another instead, so the output
 * can be piped or logged; --count ends after that many frames.
 *
 * One connection: guest-list and info are called on it each frame; the
 * events ebbd broadcasts to every client arrive on the same connection,
 * between replies or while waiting, and are kept in a small ring.
 */
#include "ebbctl.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_EVENTS	8	/* recent events shown (and kept) */
#define TOP_EVENT_LEN	160	/* one event line, truncated */

struct top {
	struct conn cn;
	int64_t interval_ms;		/* between frames without events */
	long count;			/* frames left, -1 forever */
	char events[TOP_EVENTS][TOP_EVENT_LEN];	/* ring, oldest first */
	unsigned nevents;		/* events seen in all */
	bool tty;			/* stdout is a terminal */
	bool keys;			/* stdin is a terminal we read keys from */
};

static struct termios saved_termios;
static bool termios_changed;
static volatile sig_atomic_t stop_requested;

static void restore_terminal(void)
{
	if (termios_changed) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
		termios_changed = false;
	}
}

static void on_stop_signal(int sig)
{
	stop_requested = 1;
}

/* Keys without Enter and without echo; output processing stays on. */
static void raw_keys(void)
{
	struct termios t;

	if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return;
	t = saved_termios;
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
		termios_changed = true;
		atexit(restore_terminal);
	}
}

/* "12:00:01 BALLOON_TARGET_REACHED name=g1 actual=64M" into the ring. */
static void on_event(void *ctx, json_t *ev)
{
	struct top *t = ctx;
	json_t *ts = json_object_get(ev, "timestamp");
	time_t sec = (time_t)json_integer_value(json_object_get(ts, "seconds"));
	char *line = t->events[t->nevents % TOP_EVENTS];
	const char *key;
	size_t n;
	struct tm tm;
	json_t *v;

	if (!localtime_r(&sec, &tm) ||
	    !strftime(line, TOP_EVENT_LEN, "%H:%M:%S ", &tm))
		line[0] = '\0';
	n = strlen(line);
	snprintf(line + n, TOP_EVENT_LEN - n, "%s", jstr(ev, "event"));
	json_object_foreach(json_object_get(ev, "data"), key, v) {
		char buf[64];

		n = strlen(line);
		snprintf(line + n, TOP_EVENT_LEN - n, " %s=%s", key,
			 fmt_keyed(key, v, buf, sizeof(buf)));
	}
	t->nevents++;
}

static int by_resident(const void *a, const void *b)
{
	json_int_t ra = json_integer_value(json_object_get(*(json_t *const *)a,
							   "resident"));
	json_int_t rb = json_integer_value(json_object_get(*(json_t *const *)b,
							   "resident"));

	/* Ties by name, so equal guests do not swap places between frames. */
	if (ra != rb)
		return ra < rb ? 1 : -1;
	return strcmp(jstr(*(json_t *const *)a, "name"),
		      jstr(*(json_t *const *)b, "name"));
}

static unsigned screen_rows(const struct top *t)
{
	struct winsize ws;

	if (t->tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row)
		return ws.ws_row;
	return 1000;
}

static void draw(struct top *t, json_t *info, json_t *list)
{
	static const struct { const char *head, *key; bool size; } cols[] = {
		{ "NAME", "name", false }, { "STATE", "state", false },
		{ "MEM", "mem", true }, { "RESIDENT", "resident", true },
		{ "TARGET", "balloon_target", true },
		{ "ACTUAL", "balloon_actual", true },
		{ "CLAIM", "claim", true }, { "STORE", "store", true },
	};
	const size_t ncols = sizeof(cols) / sizeof(cols[0]);
	json_t *guests = json_object_get(list, "guests"), **rows;
	size_t n = json_array_size(guests), i;
	unsigned room = screen_rows(t), shown;
	struct table tb = { 0 };
	char a[5][32], when[16];
	time_t now = time(NULL);
	struct tm tm;

	if (!localtime_r(&now, &tm) ||
	    !strftime(when, sizeof(when), "%H:%M:%S", &tm))
		when[0] = '\0';
	if (t->tty)
		fputs("\033[H\033[2J", stdout);
	printf("ebb top  %s  %s  (q quits)\n", when, opt.socket ? opt.socket : "");
	printf("host: budget %s  resident %s  free %s  claims %s  store %s  "
	       "guests %lld\n\n",
	       fmt_size(json_object_get(info, "budget"), a[0], sizeof(a[0])),
	       fmt_size(json_object_get(info, "resident"), a[1], sizeof(a[1])),
	       fmt_size(json_object_get(info, "free"), a[2], sizeof(a[2])),
	       fmt_size(json_object_get(info, "claims"), a[3], sizeof(a[3])),
	       fmt_size(json_object_get(info, "store"), a[4], sizeof(a[4])),
	       (long long)json_integer_value(json_object_get(info, "guests")));
	rows = calloc(n ? n : 1, sizeof(*rows));
	if (!rows)
		return;
	for (i = 0; i < n; i++)
		rows[i] = json_array_get(guests, i);
	qsort(rows, n, sizeof(*rows), by_resident);
	/* Rows for the header (3), the table's head (1), the events (2 +
	 * TOP_EVENTS); the guests get what is left, at least 1. */
	shown = room > 6 + TOP_EVENTS + 1 ? room - 6 - TOP_EVENTS : 1;
	for (i = 0; i < ncols; i++)
		table_col(&tb, cols[i].head, cols[i].size);
	for (i = 0; i < n && i < shown; i++) {
		long row = table_row(&tb);
		char buf[64];

		if (row < 0)
			break;
		for (size_t c = 0; c < ncols; c++) {
			json_t *v = json_object_get(rows[i], cols[c].key);

			if (v)
				table_set(&tb, row, c, cols[c].size ?
					  fmt_size(v, buf, sizeof(buf)) :
					  fmt_value(v, buf, sizeof(buf)));
		}
	}
	table_print(&tb);
	table_free(&tb);
	if (n > shown)
		printf("(%zu more)\n", n - shown);
	free(rows);
	printf("\nrecent events:\n");
	for (unsigned k = t->nevents > TOP_EVENTS ? t->nevents - TOP_EVENTS : 0;
	     k < t->nevents; k++)
		printf("  %s\n", t->events[k % TOP_EVENTS]);
	if (!t->tty)
		putchar('\n');
	fflush(stdout);
}

/* One frame: ask, draw.  0 or an exit status. */
static int frame(struct top *t)
{
	json_t *info = NULL, *list = NULL;
	int rc;

	rc = conn_call(&t->cn, "info", NULL, on_event, t, &info);
	if (!rc)
		rc = conn_call(&t->cn, "guest-list", NULL, on_event, t, &list);
	if (!rc)
		draw(t, info, list);
	json_decref(info);
	json_decref(list);
	return rc;
}

/* A whole line already buffered on the connection. */
static bool line_buffered(const struct conn *cn)
{
	return cn->len > cn->skip &&
	       memchr(cn->buf + cn->skip, '\n', cn->len - cn->skip);
}

/*
 * Wait up to the next frame.  Returns 1 to draw now (an event came or
 * the interval passed), 0 to quit (q, a signal), or -exit status.
 */
static int wait_input(struct top *t)
{
	int64_t deadline = now_ms() + t->interval_ms;
	bool got_event = false;

	while (!stop_requested) {
		struct pollfd p[2] = {
			{ .fd = t->cn.fd, .events = POLLIN },
			{ .fd = t->keys ? STDIN_FILENO : -1, .events = POLLIN },
		};
		int64_t left = deadline - now_ms();
		int n;

		if (got_event || left <= 0)
			return 1;
		n = line_buffered(&t->cn) ? 1 : poll(p, 2, (int)left);
		if (n < 0 && errno != EINTR)
			return -EXIT_FAIL;
		if (n <= 0)
			continue;
		if (p[1].revents) {
			char c;
			ssize_t r = read(STDIN_FILENO, &c, 1);

			if (r == 1 && (c == 'q' || c == 'Q'))
				return 0;
			if (r == 0)
				t->keys = false;	/* no more keys */
		}
		if (line_buffered(&t->cn) || p[0].revents) {
			json_t *msg;
			int rc = conn_read_msg(&t->cn, now_ms() + 1000, &msg);

			if (rc) {
				if (rc != -EBADMSG)
					report_read_error(rc);
				return -EXIT_FAIL;
			}
			if (json_object_get(msg, "event")) {
				on_event(t, msg);
				got_event = true;
			}
			json_decref(msg);
		}
	}
	return 0;
}

enum { OPT_INTERVAL = 0x200, OPT_COUNT };

static int top_opt(int c, const char *arg, void *ctx)
{
	struct top *t = ctx;
	char *end;

	switch (c) {
	case OPT_INTERVAL:
		if (parse_seconds("--interval", arg, &t->interval_ms))
			return EXIT_USAGE;
		if (t->interval_ms < 100)
			return usage_err("top: --interval must be at least 0.1");
		return 0;
	case OPT_COUNT:
		t->count = strtol(arg, &end, 10);
		if (*end || end == arg || t->count < 1)
			return usage_err("top: bad --count '%s'", arg);
		return 0;
	}
	return usage_err("top: unknown option");
}

int ebbctl_top(int argc, char **argv)
{
	static const struct option lo[] = {
		GLOBAL_OPTIONS,
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ 0 },
	};
	struct top t = { .interval_ms = 1000, .count = -1 };
	struct sigaction sa = { .sa_handler = on_stop_signal };
	int rc;

	rc = parse_opts(argc, argv, ":", lo, top_opt, &t);
	if (!rc)
		rc = want_args(argc, argv, 0, "");
	if (rc)
		return rc;
	rc = conn_open(&t.cn);
	if (rc)
		return rc;
	t.tty = isatty(STDOUT_FILENO);
	t.keys = isatty(STDIN_FILENO);
	if (t.keys)
		raw_keys();
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (;;) {
		rc = frame(&t);
		if (rc || (t.count > 0 && --t.count == 0))
			break;
		rc = wait_input(&t);
		if (rc <= 0) {
			rc = -rc;
			break;
		}
	}
	restore_terminal();
	conn_close(&t.cn);
	return rc;
}
