/*
 * ebbctl: the command-line client of ebbd's control socket
 * (docs/control.md).
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
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <jansson.h>

#include "control.h"
#include "size.h"

#define EXIT_FAIL		1
#define EXIT_USAGE		2
#define REPLY_MAX		(16u << 20)	/* bytes of one reply line */
#define DEFAULT_TIMEOUT_MS	30000
#define BALLOON_POLL_MS		500	/* guest-list poll while --wait */

static struct {
	const char *socket;	/* control socket path */
	bool json;		/* print raw return objects */
	int64_t timeout_ms;	/* per reply; -1 waits forever */
} opt = {
	.socket = NULL,
	.timeout_ms = DEFAULT_TIMEOUT_MS,
};

struct conn {
	int fd;
	char *buf;		/* received bytes */
	size_t len;		/* bytes in buf */
	size_t cap;		/* allocated */
	size_t skip;		/* the line last returned, dropped next read */
	json_int_t next_id;	/* request ids: 1, 2, ... */
};

/* Called for every event seen while waiting for a reply. */
typedef void (*event_fn)(void *ctx, json_t *ev);

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void errmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("ebbctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_err(const char *fmt, ...)
{
	va_list ap;

	fputs("ebbctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see 'ebbctl help')\n", stderr);
	return EXIT_USAGE;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deadline @ms from now; -1 (forever) stays -1. */
static int64_t deadline_in(int64_t ms)
{
	return ms < 0 ? -1 : now_ms() + ms;
}

static int poll_until(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int64_t left = deadline < 0 ? -1 : deadline - now_ms();
		int n;

		if (deadline >= 0 && left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* ---- connection ---- */

/* Next line, NUL-terminated, valid until the next call.  0, -ETIMEDOUT,
 * -EPIPE (daemon closed), -EMSGSIZE, or -errno. */
static int conn_read_line(struct conn *cn, int64_t deadline, char **line)
{
	if (cn->skip) {
		memmove(cn->buf, cn->buf + cn->skip, cn->len - cn->skip);
		cn->len -= cn->skip;
		cn->skip = 0;
	}
	for (size_t scanned = 0;;) {
		char *nl = cn->len ? memchr(cn->buf + scanned, '\n',
					    cn->len - scanned) : NULL;
		ssize_t n;
		int rc;

		if (nl) {
			*nl = '\0';
			*line = cn->buf;
			cn->skip = (size_t)(nl - cn->buf) + 1;
			return 0;
		}
		scanned = cn->len;
		if (cn->len == cn->cap) {
			size_t cap = cn->cap ? cn->cap * 2 : 65536;
			char *p;

			if (cap > REPLY_MAX)
				return -EMSGSIZE;
			p = realloc(cn->buf, cap);
			if (!p)
				return -ENOMEM;
			cn->buf = p;
			cn->cap = cap;
		}
		rc = poll_until(cn->fd, POLLIN, deadline);
		if (rc)
			return rc;
		n = recv(cn->fd, cn->buf + cn->len, cn->cap - cn->len, MSG_DONTWAIT);
		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return errno == ECONNRESET ? -EPIPE : -errno;
		}
		cn->len += (size_t)n;
	}
}

static void report_read_error(int rc)
{
	if (rc == -ETIMEDOUT)
		errmsg("no reply from ebbd within %g s (see --timeout)",
		       (double)opt.timeout_ms / 1000.0);
	else if (rc == -EPIPE)
		errmsg("ebbd closed the connection");
	else if (rc == -EMSGSIZE)
		errmsg("reply from ebbd longer than %u bytes", REPLY_MAX);
	else
		errmsg("reading from %s: %s", opt.socket, strerror(-rc));
}

/* Next JSON message (blank lines skipped).  0 or a read error; a line that
 * is not a JSON object is reported here and gives -EBADMSG. */
static int conn_read_msg(struct conn *cn, int64_t deadline, json_t **msg)
{
	json_error_t jerr;
	char *line;
	int rc;

	do {
		rc = conn_read_line(cn, deadline, &line);
		if (rc)
			return rc;
	} while (line[strspn(line, " \t\r")] == '\0');
	*msg = json_loads(line, 0, &jerr);
	if (!*msg) {
		errmsg("bad reply from ebbd: %s", jerr.text);
		return -EBADMSG;
	}
	return 0;
}

static int conn_write(struct conn *cn, const char *data, size_t len)
{
	int64_t deadline = deadline_in(opt.timeout_ms);

	while (len) {
		ssize_t n = send(cn->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		int rc;

		if (n > 0) {
			data += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			errmsg("writing to %s: %s", opt.socket, strerror(errno));
			return EXIT_FAIL;
		}
		rc = poll_until(cn->fd, POLLOUT, deadline);
		if (rc) {
			errmsg("ebbd does not read its socket (%s)", strerror(-rc));
			return EXIT_FAIL;
		}
	}
	return 0;
}

static const char *error_desc(json_t *msg)
{
	const char *d = json_string_value(json_object_get(
				json_object_get(msg, "error"), "desc"));

	return d ? d : "error without a description";
}

static int conn_open(struct conn *cn)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 0 };
	json_t *greet;
	int rc;

	memset(cn, 0, sizeof(*cn));
	cn->fd = -1;
	cn->next_id = 1;
	if (strlen(opt.socket) >= sizeof(sa.sun_path)) {
		errmsg("socket path too long: %s", opt.socket);
		return EXIT_FAIL;
	}
	strcpy(sa.sun_path, opt.socket);
	cn->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cn->fd < 0) {
		errmsg("socket: %s", strerror(errno));
		return EXIT_FAIL;
	}
	/* A unix connect blocks only while the listener's backlog is full;
	 * SO_SNDTIMEO bounds that wait. */
	if (opt.timeout_ms > 0) {
		tv.tv_sec = opt.timeout_ms / 1000;
		tv.tv_usec = (opt.timeout_ms % 1000) * 1000;
		setsockopt(cn->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (connect(cn->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		errmsg("cannot connect to %s: %s%s", opt.socket, strerror(e),
		       e == ENOENT || e == ECONNREFUSED ? " (is ebbd running?)" : "");
		return EXIT_FAIL;
	}
	fcntl(cn->fd, F_SETFL, fcntl(cn->fd, F_GETFL) | O_NONBLOCK);
	rc = conn_read_msg(cn, deadline_in(opt.timeout_ms), &greet);
	if (rc) {
		if (rc != -EBADMSG)
			report_read_error(rc);
		return EXIT_FAIL;
	}
	if (json_object_get(greet, "error")) {
		errmsg("%s", error_desc(greet));
		rc = EXIT_FAIL;
	} else if (!json_is_object(json_object_get(greet, "ebb"))) {
		errmsg("%s is not an ebbd control socket", opt.socket);
		rc = EXIT_FAIL;
	}
	json_decref(greet);
	return rc;
}

static void conn_close(struct conn *cn)
{
	if (cn->fd >= 0)
		close(cn->fd);
	free(cn->buf);
}

/*
 * Execute @cmd with @args (stolen; NULL for none).  Events that arrive
 * first go to @on_event.  Returns 0 with *@ret the "return" value, or
 * EXIT_FAIL after printing why.
 */
static int conn_call(struct conn *cn, const char *cmd, json_t *args,
		     event_fn on_event, void *ev_ctx, json_t **ret)
{
	json_int_t id = cn->next_id++;
	json_t *req = json_pack("{s:s, s:I}", "execute", cmd, "id", id);
	int64_t deadline;
	char *line;
	int rc;

	if (!req) {
		json_decref(args);
		errmsg("out of memory");
		return EXIT_FAIL;
	}
	if (args)
		json_object_set_new(req, "arguments", args);
	line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!line) {
		errmsg("cannot encode the request (invalid UTF-8 in an argument?)");
		return EXIT_FAIL;
	}
	rc = conn_write(cn, line, strlen(line));
	if (!rc)
		rc = conn_write(cn, "\n", 1);
	free(line);
	if (rc)
		return rc;
	deadline = deadline_in(opt.timeout_ms);
	for (;;) {
		json_t *msg, *rid;

		rc = conn_read_msg(cn, deadline, &msg);
		if (rc) {
			if (rc != -EBADMSG)
				report_read_error(rc);
			return EXIT_FAIL;
		}
		if (json_object_get(msg, "event")) {
			if (on_event)
				on_event(ev_ctx, msg);
			json_decref(msg);
			continue;
		}
		rid = json_object_get(msg, "id");
		if (rid && !(json_is_integer(rid) && json_integer_value(rid) == id)) {
			json_decref(msg);	/* not ours */
			continue;
		}
		if (json_object_get(msg, "error")) {
			errmsg("%s", error_desc(msg));
			json_decref(msg);
			return EXIT_FAIL;
		}
		*ret = json_incref(json_object_get(msg, "return"));
		json_decref(msg);
		if (!*ret) {
			errmsg("bad reply from ebbd: no 'return' member");
			return EXIT_FAIL;
		}
		return 0;
	}
}

/* ---- formatting ---- */

/* @obj's string member @key, or "?" when missing. */
static const char *jstr(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "?";
}

/* A size in bytes for people: "512M"; "-" when missing. */
static const char *fmt_size(json_t *v, char *buf, size_t len)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return size_format((uint64_t)json_integer_value(v), buf, len);
	if (!v)
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_boolean(v))
		return json_is_true(v) ? "yes" : "no";
	if (json_is_integer(v)) {
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	}
	if (json_is_real(v)) {
		snprintf(buf, len, "%g", json_real_value(v));
		return buf;
	}
	if (json_is_null(v))
		return "-";
	{
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

		snprintf(buf, len, "%s", s ? s : "?");
		free(s);
	}
	return buf;
}

/* Any value for people: numbers as they are. */
static const char *fmt_value(json_t *v, char *buf, size_t len)
{
	if (json_is_integer(v)) {
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	}
	return fmt_size(v, buf, len);
}

static bool in_list(const char *const *list, const char *key)
{
	for (; *list; list++) {
		if (strcmp(*list, key) == 0)
			return true;
	}
	return false;
}

/* Keys whose numbers are bytes, in every reply and event. */
static const char *const size_keys[] = {
	"mem", "min", "target", "actual", "resident", "claim", "claims",
	"budget", "free", "balloon_target", "balloon_actual", "reported",
	"returned", "size", "total", "available", "caches", "swap_in",
	"swap_out", "unclaimed", "over", "inflated", "oom_deflated", NULL,
};

static bool is_size_key(const char *key)
{
	size_t n = strlen(key);

	return in_list(size_keys, key) ||
	       (n >= 5 && strcmp(key + n - 5, "bytes") == 0);
}

static const char *fmt_keyed(const char *key, json_t *v, char *buf, size_t len)
{
	return is_size_key(key) ? fmt_size(v, buf, len) : fmt_value(v, buf, len);
}

/* A table of strings, printed with columns aligned. */
struct table {
	size_t ncols;
	char **head;		/* ncols names */
	bool *right;		/* ncols: right-align (numbers) */
	char **cell;		/* nrows * ncols, NULL prints "-" */
	size_t nrows;
};

static int table_col(struct table *t, const char *head, bool right)
{
	char **h = realloc(t->head, (t->ncols + 1) * sizeof(*h));
	bool *r;

	if (!h)
		return -ENOMEM;
	t->head = h;
	r = realloc(t->right, (t->ncols + 1) * sizeof(*r));
	if (!r)
		return -ENOMEM;
	t->right = r;
	t->head[t->ncols] = strdup(head);
	t->right[t->ncols] = right;
	t->ncols++;
	return t->head[t->ncols - 1] ? 0 : -ENOMEM;
}

/* Add a row (columns must all exist by now); returns its index or -1. */
static long table_row(struct table *t)
{
	char **c = realloc(t->cell, (t->nrows + 1) * t->ncols * sizeof(*c));

	if (!c)
		return -1;
	t->cell = c;
	memset(c + t->nrows * t->ncols, 0, t->ncols * sizeof(*c));
	return (long)t->nrows++;
}

static void table_set(struct table *t, long row, size_t col, const char *s)
{
	char **p = &t->cell[(size_t)row * t->ncols + col];

	free(*p);
	*p = strdup(s);
}

static void table_print(const struct table *t)
{
	size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof(*w));

	if (!w)
		return;
	for (size_t c = 0; c < t->ncols; c++) {
		w[c] = strlen(t->head[c]);
		for (size_t r = 0; r < t->nrows; r++) {
			const char *s = t->cell[r * t->ncols + c];
			size_t n = s ? strlen(s) : 1;

			if (n > w[c])
				w[c] = n;
		}
	}
	for (size_t r = 0; r <= t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = r ? t->cell[(r - 1) * t->ncols + c] : t->head[c];
			bool last = c + 1 == t->ncols;

			if (!s)
				s = "-";
			if (t->right[c])
				printf("%*s%s", (int)w[c], s, last ? "" : "  ");
			else if (last)
				printf("%s", s);
			else
				printf("%-*s  ", (int)w[c], s);
		}
		putchar('\n');
	}
	free(w);
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cell[i]);
	for (size_t i = 0; i < t->ncols; i++)
		free(t->head[i]);
	free(t->cell);
	free(t->head);
	free(t->right);
}

/* "key:  value" lines with the values aligned. */
static void kv_print(json_t *obj, const char *const *skip)
{
	const char *key;
	json_t *v;
	size_t w = 0;
	char buf[128];

	json_object_foreach(obj, key, v) {
		if (!(skip && in_list(skip, key)) && strlen(key) > w)
			w = strlen(key);
	}
	json_object_foreach(obj, key, v) {
		if (skip && in_list(skip, key))
			continue;
		printf("%s:%*s  %s\n", key, (int)(w - strlen(key)), "",
		       fmt_keyed(key, v, buf, sizeof(buf)));
	}
}

static void print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s)
		puts(s);
	free(s);
}

/* ---- argument parsing ---- */

static int parse_size(const char *what, const char *s, uint64_t *out)
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
static int parse_seconds(const char *what, const char *s, int64_t *ms)
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

enum { OPT_SOCKET = 0x100, OPT_JSON, OPT_TIMEOUT, OPT_HELP };

#define GLOBAL_OPTIONS \
	{ "socket", required_argument, NULL, OPT_SOCKET }, \
	{ "json", no_argument, NULL, OPT_JSON }, \
	{ "timeout", required_argument, NULL, OPT_TIMEOUT }, \
	{ "help", no_argument, NULL, OPT_HELP }

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
static int parse_opts(int argc, char **argv, const char *shortopts,
		      const struct option *longopts,
		      int (*each)(int c, const char *arg, void *ctx), void *ctx)
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
static int want_args(int argc, char **argv, int n, const char *names)
{
	int have = argc - optind;

	if (have < n)
		return usage_err("%s: missing %s", argv[0], names);
	if (have > n)
		return usage_err("%s: unexpected argument '%s'", argv[0],
				 argv[optind + n]);
	return 0;
}

static int simple_opts(int argc, char **argv)
{
	static const struct option lo[] = { GLOBAL_OPTIONS, { 0 } };

	return parse_opts(argc, argv, ":", lo, NULL, NULL);
}

/* ---- commands ---- */

/* Connect, call, and hand the return value to @print (or print it as JSON
 * with --json).  The common shape of most commands. */
static int call_and_print(const char *cmd, json_t *args, bool need_args,
			  void (*print)(json_t *))
{
	struct conn cn;
	json_t *ret = NULL;
	int rc;

	/* json_pack() fails only on invalid UTF-8 (or out of memory). */
	if (need_args && !args)
		return usage_err("%s: arguments must be valid UTF-8", cmd);
	rc = conn_open(&cn);

	if (rc) {
		json_decref(args);
		conn_close(&cn);
		return rc;
	}
	rc = conn_call(&cn, cmd, args, NULL, NULL, &ret);
	conn_close(&cn);
	if (rc)
		return rc;
	if (opt.json)
		print_json(ret);
	else if (print)
		print(ret);
	json_decref(ret);
	return 0;
}

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

static int cmd_run(int argc, char **argv)
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

static void print_list(json_t *r)
{
	static const struct {
		const char *head, *key;
		bool size;
	} cols[] = {
		{ "NAME", "name", false },
		{ "STATE", "state", false },
		{ "PID", "pid", false },
		{ "MEM", "mem", true },
		{ "TARGET", "balloon_target", true },
		{ "ACTUAL", "balloon_actual", true },
		{ "RESIDENT", "resident", true },
		{ "CLAIM", "claim", true },
		{ "REPORTED", "reported", true },
		{ "RETURNED", "returned", true },
		{ "OVER", "over_budget", false },
	};
	struct table t = { 0 };
	size_t i;
	json_t *g;

	for (i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
		table_col(&t, cols[i].head, i >= 2 && i + 1 < sizeof(cols) / sizeof(cols[0]));
	json_array_foreach(json_object_get(r, "guests"), i, g) {
		long row = table_row(&t);
		char buf[64];

		if (row < 0)
			break;
		for (size_t c = 0; c < t.ncols; c++) {
			json_t *v = json_object_get(g, cols[c].key);

			if (v)
				table_set(&t, row, c, cols[c].size ?
					  fmt_size(v, buf, sizeof(buf)) :
					  fmt_value(v, buf, sizeof(buf)));
		}
	}
	table_print(&t);
	table_free(&t);
}

static int cmd_list(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("guest-list", NULL, false, print_list);
}

static void print_info(json_t *r)
{
	kv_print(r, NULL);
}

static int cmd_info(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("info", NULL, false, print_info);
}

static void print_stats(json_t *r)
{
	static const char *const skip[] = { "stats", "stats_age_ms", NULL };
	json_t *age = json_object_get(r, "stats_age_ms");
	json_t *stats = json_object_get(r, "stats");
	json_t *all = json_deep_copy(r);
	const char *key;
	json_t *v;

	/* One aligned list: the guest's fields, then its balloon stats. */
	if (!all)
		return;
	json_object_del(all, "stats");
	json_object_del(all, "stats_age_ms");
	if (json_is_integer(age)) {
		char buf[64];

		/* Negative: the guest has not sent statistics yet. */
		if (json_integer_value(age) < 0)
			snprintf(buf, sizeof(buf), "none received yet");
		else
			snprintf(buf, sizeof(buf), "%.1f s",
				 (double)json_integer_value(age) / 1000.0);
		json_object_set_new(all, "stats_age", json_string(buf));
	}
	json_object_foreach(stats, key, v)
		json_object_set(all, key, v);
	kv_print(all, skip);
	json_decref(all);
}

static int one_name_cmd(int argc, char **argv, const char *cmd,
			void (*print)(json_t *))
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (rc)
		return rc;
	return call_and_print(cmd, json_pack("{s:s}", "name", argv[optind]), true,
			      print);
}

static int cmd_stats(int argc, char **argv)
{
	return one_name_cmd(argc, argv, "guest-stats", print_stats);
}

static int stop_opt(int c, const char *arg, void *ctx)
{
	*(bool *)ctx = true;
	return 0;
}

static int cmd_stop(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force", no_argument, NULL, 'f' },
		GLOBAL_OPTIONS, { 0 },
	};
	bool force = false;
	json_t *args;
	int rc = parse_opts(argc, argv, ":f", lo, stop_opt, &force);

	if (!rc)
		rc = want_args(argc, argv, 1, "NAME");
	if (rc)
		return rc;
	args = json_pack("{s:s}", "name", argv[optind]);
	if (args && force)
		json_object_set_new(args, "force", json_true());
	return call_and_print("guest-stop", args, true, NULL);
}

static int cmd_exec(int argc, char **argv)
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

static void print_claim(json_t *r)
{
	json_t *claim = json_object_get(r, "claim");
	const char *name = jstr(r, "name");
	char buf[32];

	if (json_is_integer(claim) && json_integer_value(claim) == 0)
		printf("%s: no claim outstanding\n", name);
	else
		printf("%s: claim %s\n", name, fmt_size(claim, buf, sizeof(buf)));
}

static int cmd_claim(int argc, char **argv)
{
	uint64_t size;
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 2, "NAME and SIZE");
	if (!rc)
		rc = parse_size("claim", argv[optind + 1], &size);
	if (rc)
		return rc;
	return call_and_print("claim", json_pack("{s:s, s:I}", "name", argv[optind],
						 "size", (json_int_t)size),
			      true, print_claim);
}

/* One row of `ebbctl tmem`: the counters an operator reads first. */
static void tmem_row(struct table *t, const char *name, json_t *g)
{
	static const struct {
		const char *key;
		bool size;
	} cols[] = {
		{ "persistent_pages", false }, { "ephemeral_pages", false },
		{ "logical_bytes", true }, { "stored_bytes", true },
		{ "charged_bytes", true }, { "compression_ratio", false },
		{ "dedup_ratio", false }, { "hits", false }, { "misses", false },
		{ "evictions", false }, { "refused_puts", false },
	};
	long row = table_row(t);
	char buf[64];

	if (row < 0)
		return;
	table_set(t, row, 0, name);
	for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		json_t *v = json_object_get(g, cols[c].key);

		if (!v)
			continue;
		if (json_is_real(v))
			snprintf(buf, sizeof(buf), "%.2f", json_real_value(v));
		else if (cols[c].size)
			fmt_size(v, buf, sizeof(buf));
		else
			fmt_value(v, buf, sizeof(buf));
		table_set(t, row, c + 1, buf);
	}
}

static void print_tmem_latency(json_t *lat)
{
	json_int_t pn = json_integer_value(json_object_get(lat, "put_timed"));
	json_int_t gn = json_integer_value(json_object_get(lat, "get_timed"));

	if (!json_is_object(lat) || (!pn && !gn))
		return;
	printf("latency: put p50 %.1f us p99 %.1f us, get p50 %.1f us p99 %.1f us "
	       "(%lld puts and %lld gets timed)\n",
	       json_integer_value(json_object_get(lat, "put_p50_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "put_p99_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "get_p50_ns")) / 1e3,
	       json_integer_value(json_object_get(lat, "get_p99_ns")) / 1e3,
	       (long long)pn, (long long)gn);
}

static void print_tmem(json_t *r)
{
	static const char *const heads[] = {
		"NAME", "PERSISTENT", "EPHEMERAL", "LOGICAL", "STORED",
		"CHARGED", "RATIO", "DEDUP", "HITS", "MISSES", "EVICTED",
		"REFUSED",
	};
	json_t *store = json_object_get(r, "store");
	struct table t = { 0 };
	size_t i;
	json_t *g;

	for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++)
		table_col(&t, heads[i], i > 0);
	json_array_foreach(json_object_get(r, "guests"), i, g)
		tmem_row(&t, jstr(g, "name"), g);
	if (json_is_object(json_object_get(r, "total")))
		tmem_row(&t, "TOTAL", json_object_get(r, "total"));
	table_print(&t);
	table_free(&t);
	if (json_is_object(store)) {
		char b1[32], b2[32], b3[32];

		printf("store (%s): %s in slabs, %s used (%.1f%% slack), %s records\n",
		       jstr(store, "compressor"),
		       fmt_size(json_object_get(store, "slab_bytes"), b1, sizeof(b1)),
		       fmt_size(json_object_get(store, "slab_used_bytes"), b2,
				sizeof(b2)),
		       json_number_value(json_object_get(store, "slab_frag_pct")),
		       fmt_size(json_object_get(store, "meta_bytes"), b3, sizeof(b3)));
	}
	print_tmem_latency(json_object_get(r, "latency"));
}

static int cmd_tmem(int argc, char **argv)
{
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	return rc ? rc : call_and_print("tmem", NULL, false, print_tmem);
}

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

static int cmd_events(int argc, char **argv)
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

static int cmd_raw(int argc, char **argv)
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

static int cmd_balloon(int argc, char **argv)
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

static int cmd_help(int argc, char **argv)
{
	usage(stdout);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", cmd_run },
	{ "list", cmd_list },
	{ "balloon", cmd_balloon },
	{ "stats", cmd_stats },
	{ "stop", cmd_stop },
	{ "exec", cmd_exec },
	{ "info", cmd_info },
	{ "claim", cmd_claim },
	{ "tmem", cmd_tmem },
	{ "events", cmd_events },
	{ "raw", cmd_raw },
	{ "help", cmd_help },
};

static void usage(FILE *f)
{
	fputs(
"usage: ebbctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND ...\n"
"\n"
"  run NAME --mem SIZE [--min SIZE] [--prealloc] [--cmdline STR]\n"
"      [--no-reporting] [--external] [--no-claim]\n"
"      [--swap SIZE [--swap-quota SIZE]] [--disk IMAGE [--disk-ro]]\n"
"                              launch a guest; --prealloc populates its\n"
"                              memory before it boots (progress bar on a\n"
"                              terminal); --no-claim skips admission (the\n"
"                              naive toolstack, for benchmarks only);\n"
"                              --swap: a swap device kept in host memory\n"
"                              (tmem), up to --swap-quota (default: --mem)\n"
"                              there, the rest in a backing file; --disk: an\n"
"                              image as /dev/vdX, reads cached in host\n"
"                              memory shared by the guests using it\n"
"  list                        guests and their memory\n"
"  balloon NAME SIZE [--wait SECONDS]\n"
"                              set the guest's memory left after ballooning;\n"
"                              --wait until the guest gets there\n"
"  stats NAME                  the guest's balloon statistics\n"
"  stop NAME [--force]         stop a guest\n"
"  exec NAME COMMAND...        run a shell line on the guest's console\n"
"  info                        host budget, residency and claims\n"
"  claim NAME SIZE|0           stake host memory for a guest (0 cancels)\n"
"  tmem                        transcendent memory pools\n"
"  events                      print events as they arrive\n"
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
