/*
 * ebbctl's connection to ebbd: open the control socket, read the greeting,
 * send a request and wait for its reply (events seen meanwhile go to a
 * callback), under the per-reply deadline.  Declared in ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define REPLY_MAX		(16u << 20)	/* bytes of one reply line */

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deadline @ms from now; -1 (forever) stays -1. */
int64_t deadline_in(int64_t ms)
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
int conn_read_line(struct conn *cn, int64_t deadline, char **line)
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

void report_read_error(int rc)
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
int conn_read_msg(struct conn *cn, int64_t deadline, json_t **msg)
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

int conn_write(struct conn *cn, const char *data, size_t len)
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

const char *error_desc(json_t *msg)
{
	const char *d = json_string_value(json_object_get(
				json_object_get(msg, "error"), "desc"));

	return d ? d : "error without a description";
}

int conn_open(struct conn *cn)
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

void conn_close(struct conn *cn)
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
int conn_call(struct conn *cn, const char *cmd, json_t *args, event_fn on_event,
	      void *ev_ctx, json_t **ret)
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

/* Connect, call, and hand the return value to @print (or print it as JSON
 * with --json).  The common shape of most commands. */
int call_and_print(const char *cmd, json_t *args, bool need_args,
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

int one_name_cmd(int argc, char **argv, const char *cmd,
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
