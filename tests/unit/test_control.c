/*
 * Tests for the control socket (src/daemon/control.c) and, end to end, the ebbctl
 * client (src/cli/).
 *
 * Each test gets a fresh server on a real unix socket in a temporary
 * directory, with its loop running in a second thread; the test thread is
 * the client, with blocking sockets and a receive timeout so a bug fails a
 * test instead of hanging it.  Handlers run on the loop thread: the state
 * they share with the test thread is only read after the reply that
 * follows their write has been received.
 *
 * The ebbctl tests run the built binary (found next to this one in the
 * build tree, or at $EBBCTL) against handlers returning canned data, so
 * they exercise the real argument parsing, protocol and formatting.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "control.h"
#include "loop.h"

extern char **environ;

#define RECV_TIMEOUT_S	5

struct fx {
	char dir[64];			/* mkdtemp'd */
	char path[96];			/* dir/ctl.sock */
	struct loop *loop;
	struct control *ctl;
	pthread_t thread;
	json_t *last_args;		/* copy of the latest guest-run etc. args */
	int calls;			/* handler calls that record last_args */
};

/* ---- handlers ---- */

static int h_echo(void *ctx, json_t *args, json_t **ret, char **err)
{
	*ret = json_incref(args);
	return 0;
}

static int h_fail(void *ctx, json_t *args, json_t **ret, char **err)
{
	json_t *e = json_object_get(args, "errno");
	const char *desc = json_string_value(json_object_get(args, "desc"));

	/* A handler that sets *ret and still fails: the server drops it. */
	*ret = json_object();
	if (desc)
		*err = strdup(desc);
	return (int)json_integer_value(e);
}

static int h_typed(void *ctx, json_t *args, json_t **ret, char **err)
{
	const char *name;
	uint64_t mem;
	bool force = false;
	int rc;

	if ((rc = control_arg_str(args, "name", true, &name, err)) ||
	    (rc = control_arg_size(args, "mem", true, &mem, err)) ||
	    (rc = control_arg_bool(args, "force", false, &force, err)))
		return rc;
	*ret = json_pack("{s:s, s:I, s:b}", "name", name, "mem",
			 (json_int_t)mem, "force", force);
	return 0;
}

static int h_emit(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;
	uint64_t count = 1, size = 0;
	const char *name = "TEST_EVENT";
	int rc;

	if ((rc = control_arg_size(args, "count", false, &count, err)) ||
	    (rc = control_arg_size(args, "size", false, &size, err)) ||
	    (rc = control_arg_str(args, "name", false, &name, err)))
		return rc;
	for (uint64_t i = 0; i < count; i++) {
		char *pad = malloc(size + 1);

		memset(pad, 'x', size);
		pad[size] = '\0';
		control_event(fx->ctl, name, json_pack("{s:I, s:s}", "i",
				(json_int_t)i, "pad", pad));
		free(pad);
	}
	return 0;
}

static int h_nclients(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;

	*ret = json_pack("{s:i}", "clients", (int)control_client_count(fx->ctl));
	return 0;
}

static int h_blob(void *ctx, json_t *args, json_t **ret, char **err)
{
	char *s = malloc(64 * 1024 + 1);

	memset(s, 'b', 64 * 1024);
	s[64 * 1024] = '\0';
	*ret = json_pack("{s:s}", "blob", s);
	free(s);
	return 0;
}

/* Canned daemon replies for ebbctl. */
#define MiB(n)	((json_int_t)(n) << 20)

static void record(struct fx *fx, json_t *args)
{
	json_decref(fx->last_args);
	fx->last_args = json_deep_copy(args);
	fx->calls++;
}

static int h_guest_list(void *ctx, json_t *args, json_t **ret, char **err)
{
	*ret = json_pack("{s:[{s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b},"
			 "{s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b},"
			 "{s:s, s:s, s:i, s:I, s:I, s:I},"
			 "{s:s, s:s, s:i, s:I, s:I, s:I}]}",
		"guests",
		"name", "web1", "state", "running", "pid", 1234, "mem", MiB(512),
		"balloon_target", MiB(384), "balloon_actual", MiB(384),
		"resident", (json_int_t)315621376, "claim", (json_int_t)0,
		"reported", MiB(12), "returned", MiB(128), "discarded", MiB(90),
		"over_budget", 0,
		"name", "db", "state", "starting", "pid", 1240, "mem", MiB(1024),
		"balloon_target", MiB(1024), "balloon_actual", MiB(1024),
		"resident", MiB(100), "claim", MiB(924), "reported", (json_int_t)0,
		"returned", (json_int_t)0, "over_budget", 1,
		"name", "evt", "state", "running", "pid", 1300, "mem", MiB(512),
		"balloon_target", MiB(256), "balloon_actual", MiB(300),
		"name", "slow", "state", "running", "pid", 1301, "mem", MiB(512),
		"balloon_target", MiB(256), "balloon_actual", MiB(512));
	return 0;
}

static int h_info(void *ctx, json_t *args, json_t **ret, char **err)
{
	*ret = json_pack("{s:I, s:I, s:I, s:I, s:i}", "budget", MiB(4096),
			 "resident", MiB(1228), "free", MiB(2868), "claims",
			 MiB(924), "guests", 2);
	return 0;
}

static int h_guest_stats(void *ctx, json_t *args, json_t **ret, char **err)
{
	const char *name;
	int rc = control_arg_str(args, "name", true, &name, err);

	if (rc)
		return rc;
	if (strcmp(name, "web1")) {
		if (asprintf(err, "no guest named '%s'", name) < 0)
			*err = NULL;
		return -ENOENT;
	}
	*ret = json_pack("{s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
			 " s:I, s:I, s:I, s:{s:b, s:I, s:I, s:I, s:I, s:I, s:I}}",
			 "name", name, "stats",
			 "swap_in", (json_int_t)0, "swap_out", MiB(4),
			 "major_faults", (json_int_t)12, "minor_faults",
			 (json_int_t)123456, "free", MiB(100), "total", MiB(496),
			 "available", MiB(300), "caches", MiB(150),
			 "stats_age_ms", (json_int_t)1234, "resident",
			 (json_int_t)315621376, "balloon_actual", MiB(384),
			 "page_states", "table", 1, "discarded_bytes", MiB(90),
			 "stable", (json_int_t)80000, "unused", (json_int_t)20000,
			 "volatile", (json_int_t)0, "discarding", (json_int_t)0,
			 "discarded", (json_int_t)23040);
	return 0;
}

/* What ebbd says while a --prealloc launch populates: a progress event,
 * an event for another guest (to be ignored), then done. */
static void prealloc_later(void *opaque)
{
	struct fx *fx = opaque;
	const char *ev[] = { "PREALLOC_PROGRESS", "PREALLOC_DONE", "PREALLOC_DONE" };
	const char *who[] = { "web1", "other", "web1" };

	for (int i = 0; i < 3; i++)
		control_event(fx->ctl, ev[i],
			      json_pack("{s:s, s:I, s:I, s:i, s:i, s:f}", "name",
					who[i], "done", (json_int_t)MiB(i ? 256 : 64),
					"total", (json_int_t)MiB(256), "chunks",
					i ? 128 : 32, "fallback_pages", 0, "seconds",
					0.25));
}

static int h_guest_run(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;
	const char *name;
	uint64_t mem, min = 0;
	bool prealloc = false, external = false;
	int rc;

	record(fx, args);
	if ((rc = control_arg_str(args, "name", true, &name, err)) ||
	    (rc = control_arg_size(args, "mem", true, &mem, err)) ||
	    (rc = control_arg_size(args, "min", false, &min, err)) ||
	    (rc = control_arg_bool(args, "prealloc", false, &prealloc, err)) ||
	    (rc = control_arg_bool(args, "external", false, &external, err)))
		return rc;
	if (prealloc)
		loop_timer_add(fx->loop, 100, 0, prealloc_later, fx, NULL);
	*ret = json_pack("{s:s, s:i, s:I, s:I}", "name", name,
			 "pid", external ? 0 : 1234, "mem", (json_int_t)mem,
			 "claim", (json_int_t)(min ? min : mem));
	if (external)
		json_object_set_new(*ret, "sockets", json_pack("{s:s, s:s}",
			"balloon", "/run/ebb/x/balloon.sock",
			"swap", "/run/ebb/x/swap.sock"));
	return 0;
}

static void reached_later(void *opaque)
{
	struct fx *fx = opaque;

	control_event(fx->ctl, "BALLOON_TARGET_REACHED",
		      json_pack("{s:s, s:I}", "name", "evt", "actual", MiB(256)));
}

static int h_balloon(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;
	const char *name;
	uint64_t target;
	int rc;

	record(fx, args);
	if ((rc = control_arg_str(args, "name", true, &name, err)) ||
	    (rc = control_arg_size(args, "target", true, &target, err)))
		return rc;
	if (strcmp(name, "evt") == 0)
		loop_timer_add(fx->loop, 200, 0, reached_later, fx, NULL);
	*ret = json_pack("{s:s, s:I, s:I}", "name", name, "target",
			 (json_int_t)target, "actual", MiB(512));
	return 0;
}

static int h_claim(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;
	const char *name;
	uint64_t size;
	int rc;

	record(fx, args);
	if ((rc = control_arg_str(args, "name", true, &name, err)) ||
	    (rc = control_arg_size(args, "size", true, &size, err)))
		return rc;
	if (size > (uint64_t)MiB(4096)) {
		*err = strdup("cannot claim: only 2.8G unclaimed");
		return -ENOMEM;
	}
	*ret = json_pack("{s:s, s:I}", "name", name, "claim", (json_int_t)size);
	return 0;
}

static int h_record(void *ctx, json_t *args, json_t **ret, char **err)
{
	record(ctx, args);
	return 0;
}

static int h_tmem(void *ctx, json_t *args, json_t **ret, char **err)
{
	/* ebbd's shape, trimmed; ebbctl picks its columns and ignores the
	 * rest (here "note" and "puts"). */
	*ret = json_pack("{s:{s:i, s:i, s:I, s:I, s:f, s:i}, "
			 "s:[{s:s, s:i, s:I, s:f, s:s}], "
			 "s:{s:s, s:I, s:I, s:f, s:I}, "
			 "s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
			 "total", "persistent_pages", 512, "ephemeral_pages", 7,
			 "logical_bytes", MiB(2), "stored_bytes", MiB(1),
			 "compression_ratio", 2.0, "puts", 10,
			 "guests", "name", "web1", "persistent_pages", 512,
			 "stored_bytes", MiB(1), "compression_ratio", 2.0,
			 "note", "ignored",
			 "store", "compressor", "lz4-fast", "slab_bytes", MiB(2),
			 "slab_used_bytes", MiB(1), "slab_frag_pct", 50.0,
			 "meta_bytes", MiB(1) / 16,
			 "latency", "put_timed", 5, "put_p50_ns", 4200,
			 "put_p99_ns", 61000, "get_timed", 9, "get_p50_ns", 1250,
			 "get_p99_ns", 20000);
	return 0;
}

/* policy: a policy reclaiming, two guests, two recent actions. */
static int h_policy(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;

	record(fx, args);
	*ret = json_pack("{s:s, s:s, s:{s:I, s:I}, s:I, s:I, s:I, s:I, s:b, s:f, "
			 "s:{s:s, s:I, s:I, s:I, s:I}, s:b, s:b, s:I, "
			 "s:[{s:s, s:I, s:I, s:i, s:b, s:I, s:I}, "
			 "{s:s, s:I, s:I, s:i, s:b, s:I, s:I}], "
			 "s:[{s:f, s:s, s:s, s:I, s:I, s:s}, {s:f, s:s, s:I, s:s}]}",
			 "mode", "on", "state", "reclaim",
			 "watermarks", "low", MiB(64), "high", MiB(128),
			 "step", MiB(64), "margin", MiB(32),
			 "free", MiB(40), "need", MiB(88), "pressure", 0,
			 "psi_some_avg10", 1.5,
			 "cgroup", "path", "/sys/fs/cgroup/memory/box",
			 "limit", MiB(640), "usage", MiB(600),
			 "working_set", MiB(580), "swap", 0,
			 "host_swap", 1, "store_refusing", 0, "ticks", 42,
			 "guests", "name", "web1", "min", MiB(64), "max", MiB(512),
			 "shares", 100, "manual", 0, "keep", MiB(384),
			 "resident", MiB(301),
			 "name", "db", "min", 0, "max", MiB(1024), "shares", 200,
			 "manual", 1, "keep", MiB(1024), "resident", MiB(100),
			 "actions", "time", 0.0, "name", "web1",
			 "mechanism", "balloon_inflate", "bytes", MiB(48),
			 "target", MiB(336), "reason", "uses 200 MiB, holds 301 MiB",
			 "time", 0.0, "mechanism", "drop_ephemeral",
			 "bytes", MiB(8), "reason", "clean cache goes first");
	return 0;
}

static int h_guest_policy(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct fx *fx = ctx;

	record(fx, args);
	*ret = json_pack("{s:s, s:I, s:I, s:i, s:b}", "name", "web1",
			 "min", MiB(64), "max", MiB(512), "shares", 200,
			 "manual", 0);
	return 0;
}

static const struct control_cmd test_cmds[] = {
	{ .name = "echo", .fn = h_echo, .help = "return the arguments" },
	{ .name = "fail", .fn = h_fail, .args = "errno desc" },
	{ .name = "typed", .fn = h_typed, .args = "name mem force" },
	{ .name = "emit", .fn = h_emit, .args = "count size name" },
	{ .name = "nclients", .fn = h_nclients, .args = "" },
	{ .name = "blob", .fn = h_blob, .args = "" },
	{ .name = "guest-list", .fn = h_guest_list, .args = "" },
	{ .name = "info", .fn = h_info, .args = "" },
	{ .name = "guest-stats", .fn = h_guest_stats, .args = "name" },
	{ .name = "guest-run", .fn = h_guest_run,
	  .args = "name mem min max shares prealloc cmdline external swap" },
	{ .name = "policy", .fn = h_policy, .args = "mode low high" },
	{ .name = "guest-policy", .fn = h_guest_policy,
	  .args = "name min max shares" },
	{ .name = "balloon", .fn = h_balloon, .args = "name target" },
	{ .name = "claim", .fn = h_claim, .args = "name size" },
	{ .name = "guest-stop", .fn = h_record, .args = "name force" },
	{ .name = "guest-exec", .fn = h_record, .args = "name command" },
	{ .name = "tmem", .fn = h_tmem, .args = "" },
	{ .name = NULL },
};

/* ---- fixture ---- */

static void *loop_thread(void *opaque)
{
	struct fx *fx = opaque;

	loop_run(fx->loop);
	return NULL;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	strcpy(fx->dir, "/tmp/ebb-ctl-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	/* A parent that does not exist yet: control_open creates it. */
	snprintf(fx->path, sizeof(fx->path), "%s/run/ctl.sock", fx->dir);
	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(control_open(fx->loop, fx->path, test_cmds, fx, &fx->ctl), 0);
	assert_int_equal(pthread_create(&fx->thread, NULL, loop_thread, fx), 0);
	/* loop_run() clears a loop_stop() that came before it: make sure it
	 * runs (a greeting proves it) before any teardown can stop it. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		struct timeval tv = { .tv_sec = RECV_TIMEOUT_S };
		char c = 0;
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx->path);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		while (c != '\n')
			assert_int_equal(recv(fd, &c, 1, 0), 1);
		close(fd);
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char sub[96];

	loop_stop(fx->loop);
	pthread_join(fx->thread, NULL);
	control_close(fx->ctl);
	loop_free(fx->loop);
	/* control_close() unlinked the socket; the directories are empty. */
	snprintf(sub, sizeof(sub), "%s/run", fx->dir);
	assert_int_equal(access(fx->path, F_OK), -1);
	assert_int_equal(rmdir(sub), 0);
	assert_int_equal(rmdir(fx->dir), 0);
	json_decref(fx->last_args);
	free(fx);
	return 0;
}

/* ---- a blocking test client ---- */

struct cli {
	int fd;
	char *buf;
	size_t len, cap;
};

static int cli_connect(struct cli *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = RECV_TIMEOUT_S };

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	return connect(c->fd, (struct sockaddr *)&sa, sizeof(sa));
}

static void cli_close(struct cli *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->len = c->cap = 0;
}

/* One line without its '\n' (malloc'd), or NULL on EOF or timeout. */
static char *cli_line(struct cli *c)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - c->buf);
			char *line = strndup(c->buf, l);

			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return line;
		}
		if (c->len == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 4096;
			c->buf = realloc(c->buf, c->cap);
			assert_non_null(c->buf);
		}
		n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n <= 0)
			return NULL;
		c->len += (size_t)n;
	}
}

/* Next message; every line the server sends must be one JSON object. */
static json_t *cli_msg(struct cli *c)
{
	char *line = cli_line(c);
	json_error_t jerr;
	json_t *m;

	if (!line)
		return NULL;
	m = json_loads(line, 0, &jerr);
	if (!m)
		fail_msg("not JSON: %s: %.200s", jerr.text, line);
	assert_true(json_is_object(m));
	free(line);
	return m;
}

static json_t *cli_reply(struct cli *c)
{
	for (;;) {
		json_t *m = cli_msg(c);

		if (!m || !json_object_get(m, "event"))
			return m;
		json_decref(m);
	}
}

static void cli_send(struct cli *c, const char *data, size_t len)
{
	while (len) {
		ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

static void cli_sends(struct cli *c, const char *s)
{
	cli_send(c, s, strlen(s));
}

static json_t *cli_call(struct cli *c, const char *line)
{
	cli_sends(c, line);
	cli_sends(c, "\n");
	return cli_reply(c);
}

/* Read and discard until EOF; true if EOF came before the timeout. */
static bool cli_eof(struct cli *c, size_t *bytes)
{
	char buf[65536];
	size_t total = c->len;

	c->len = 0;
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n == 0)
			break;
		if (n < 0) {
			if (errno == ECONNRESET)
				break;
			return false;
		}
		total += (size_t)n;
	}
	if (bytes)
		*bytes = total;
	return true;
}

static void cli_open(struct fx *fx, struct cli *c)
{
	json_t *g;

	assert_int_equal(cli_connect(c, fx->path), 0);
	g = cli_msg(c);
	assert_non_null(g);
	assert_string_equal(json_string_value(json_object_get(
		json_object_get(g, "ebb"), "version")), CONTROL_VERSION);
	json_decref(g);
}

static void assert_error(json_t *reply, const char *cls)
{
	json_t *e = json_object_get(reply, "error");

	if (!e)
		fail_msg("expected error %s", cls);
	assert_string_equal(json_string_value(json_object_get(e, "class")), cls);
	assert_true(json_is_string(json_object_get(e, "desc")));
	assert_null(json_object_get(reply, "return"));
}

static const char *error_desc(json_t *reply)
{
	return json_string_value(json_object_get(json_object_get(reply, "error"),
						 "desc"));
}

static int server_clients(struct fx *fx)
{
	struct cli c;
	json_t *r;
	int n;

	cli_open(fx, &c);
	r = cli_call(&c, "{\"execute\":\"nclients\"}");
	assert_non_null(r);
	n = (int)json_integer_value(json_object_get(json_object_get(r, "return"),
						    "clients"));
	json_decref(r);
	cli_close(&c);
	return n - 1;	/* not counting the asking client */
}

/* The server notices closes asynchronously: wait for the count. */
static void wait_clients(struct fx *fx, int want)
{
	for (int i = 0; i < 200; i++) {
		if (server_clients(fx) == want)
			return;
		usleep(10000);
	}
	fail_msg("server never got to %d clients", want);
}

/* ---- protocol tests ---- */

static void greeting(void **state)
{
	struct fx *fx = *state;
	struct cli c;
	char *line;

	assert_int_equal(cli_connect(&c, fx->path), 0);
	line = cli_line(&c);
	assert_non_null(line);
	assert_string_equal(line, "{\"ebb\":{\"version\":\"0.1.0\","
			    "\"capabilities\":[\"events\"]}}");
	free(line);
	cli_close(&c);
}

static void returns_and_echoes_id(void **state)
{
	static const char *const ids[] = {
		"42", "\"abc\"", "{\"x\":[1,2]}", "null", "-1.5", "true",
	};
	struct fx *fx = *state;
	struct cli c;
	json_t *r, *want;

	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char req[128];

		snprintf(req, sizeof(req), "{\"execute\":\"echo\",\"arguments\":"
			 "{\"a\":1},\"id\":%s}", ids[i]);
		r = cli_call(&c, req);
		assert_non_null(r);
		want = json_loads(ids[i], JSON_DECODE_ANY, NULL);
		assert_true(json_equal(json_object_get(r, "id"), want));
		assert_int_equal(json_integer_value(json_object_get(
			json_object_get(r, "return"), "a")), 1);
		json_decref(want);
		json_decref(r);
	}
	/* No id in, no id out; no arguments: the handler sees {}. */
	r = cli_call(&c, "{\"execute\":\"echo\"}");
	assert_null(json_object_get(r, "id"));
	assert_true(json_is_object(json_object_get(r, "return")));
	assert_int_equal(json_object_size(json_object_get(r, "return")), 0);
	json_decref(r);
	cli_close(&c);
}

static void errno_to_class(void **state)
{
	static const struct {
		int err;
		const char *cls;
	} map[] = {
		{ ENOENT, "NotFound" }, { EINVAL, "InvalidParameter" },
		{ ENOMEM, "NoMemory" }, { EEXIST, "AlreadyExists" },
		{ EBUSY, "Busy" }, { ENOSPC, "NoSpace" },
		{ ENOTSUP, "NotSupported" }, { EOPNOTSUPP, "NotSupported" },
		{ EIO, "GenericError" }, { EPERM, "GenericError" },
	};
	struct fx *fx = *state;
	struct cli c;
	json_t *r;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		assert_string_equal(control_error_class(-map[i].err), map[i].cls);
	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		char req[160];

		snprintf(req, sizeof(req), "{\"execute\":\"fail\",\"arguments\":"
			 "{\"errno\":%d,\"desc\":\"failed %zu\"},\"id\":%zu}",
			 -map[i].err, i, i);
		r = cli_call(&c, req);
		assert_error(r, map[i].cls);
		assert_int_equal(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
	}
	/* No description from the handler: strerror. */
	r = cli_call(&c, "{\"execute\":\"fail\",\"arguments\":{\"errno\":-2}}");
	assert_error(r, "NotFound");
	assert_string_equal(error_desc(r), strerror(ENOENT));
	json_decref(r);
	/* Not a -errno at all: a handler bug, reported, never a crash. */
	r = cli_call(&c, "{\"execute\":\"fail\",\"arguments\":{\"errno\":7}}");
	assert_error(r, "GenericError");
	json_decref(r);
	r = cli_call(&c, "{\"execute\":\"fail\",\"arguments\":"
		     "{\"errno\":-2147483648}}");
	assert_error(r, "GenericError");
	json_decref(r);
	/* A description with a newline and invalid UTF-8 stays one line. */
	r = cli_call(&c, "{\"execute\":\"fail\",\"arguments\":{\"errno\":-22,"
		     "\"desc\":\"two\\nlines\"}}");
	assert_string_equal(error_desc(r), "two lines");
	json_decref(r);
	cli_close(&c);
}

static void unknown_command(void **state)
{
	struct fx *fx = *state;
	struct cli c;
	json_t *r;

	cli_open(fx, &c);
	r = cli_call(&c, "{\"execute\":\"no-such\",\"id\":\"x\"}");
	assert_error(r, "CommandNotFound");
	assert_string_equal(json_string_value(json_object_get(r, "id")), "x");
	assert_non_null(strstr(error_desc(r), "no-such"));
	json_decref(r);
	cli_close(&c);
}

static void malformed_json(void **state)
{
	static const char *const bad[] = {
		"{", "{\"execute\":}", "}{", "{\"execute\":\"echo\"} trailing",
		"{'execute':'echo'}", "{\"execute\":\"echo\",\"execute\":\"x\"}",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
		"{\"execute\":\"\xff\xfe\"}", "{\"execute\":\"a\\u0000b\"}",
		"nul\0byte",
	};
	struct fx *fx = *state;
	struct cli c;
	json_t *r;

	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t len = i + 1 == sizeof(bad) / sizeof(bad[0]) ? 8 : strlen(bad[i]);

		cli_send(&c, bad[i], len);
		cli_sends(&c, "\n");
		r = cli_reply(&c);
		assert_error(r, "ParseError");
		assert_null(json_object_get(r, "id"));
		json_decref(r);
	}
	/* Deep nesting beyond jansson's limit is refused, not recursed. */
	{
		size_t n = 60000;
		char *deep = malloc(n + 1);

		memset(deep, '[', n);
		deep[n] = '\n';
		cli_send(&c, deep, n + 1);
		free(deep);
		r = cli_reply(&c);
		assert_error(r, "ParseError");
		json_decref(r);
	}
	/* The connection survives all of it. */
	r = cli_call(&c, "{\"execute\":\"echo\",\"id\":1}");
	assert_non_null(json_object_get(r, "return"));
	json_decref(r);
	cli_close(&c);
}

static void bad_request_shape(void **state)
{
	static const struct {
		const char *req;
		const char *cls;
		bool has_id;
	} cases[] = {
		{ "[1,2]", "InvalidRequest", false },
		{ "42", "InvalidRequest", false },
		{ "\"execute\"", "InvalidRequest", false },
		{ "{}", "InvalidRequest", false },
		{ "{\"id\":5}", "InvalidRequest", true },
		{ "{\"execute\":5,\"id\":5}", "InvalidRequest", true },
		{ "{\"execute\":null,\"id\":5}", "InvalidRequest", true },
		{ "{\"execute\":\"echo\",\"arguments\":[],\"id\":5}", "InvalidRequest", true },
		{ "{\"execute\":\"echo\",\"arguments\":null,\"id\":5}", "InvalidRequest", true },
		{ "{\"execute\":\"echo\",\"bogus\":1,\"id\":5}", "InvalidRequest", true },
	};
	struct fx *fx = *state;
	struct cli c;
	json_t *r;

	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = cli_call(&c, cases[i].req);
		assert_error(r, cases[i].cls);
		assert_int_equal(json_object_get(r, "id") != NULL, cases[i].has_id);
		json_decref(r);
	}
	cli_close(&c);
}

static void wrong_argument_types(void **state)
{
	static const struct {
		const char *args;
		const char *cls;
		const char *desc;	/* substring */
	} cases[] = {
		{ "{\"mem\":1}", "InvalidParameter", "missing argument 'name'" },
		{ "{\"name\":5,\"mem\":1}", "InvalidParameter",
		  "argument 'name' must be a string, not an integer" },
		{ "{\"name\":\"a\"}", "InvalidParameter", "missing argument 'mem'" },
		{ "{\"name\":\"a\",\"mem\":\"64Q\"}", "InvalidParameter",
		  "argument 'mem' is not a size: '64Q'" },
		{ "{\"name\":\"a\",\"mem\":-1}", "InvalidParameter", "negative" },
		{ "{\"name\":\"a\",\"mem\":1.5}", "InvalidParameter",
		  "not a fractional number" },
		{ "{\"name\":\"a\",\"mem\":[1]}", "InvalidParameter", "not an array" },
		{ "{\"name\":\"a\",\"mem\":\"99999999999T\"}", "InvalidParameter",
		  "too large" },
		{ "{\"name\":\"a\",\"mem\":1,\"force\":\"yes\"}", "InvalidParameter",
		  "argument 'force' must be a boolean, not a string" },
		{ "{\"name\":\"a\",\"mem\":1,\"force\":null}", "InvalidParameter",
		  "not null" },
		{ "{\"name\":\"a\",\"mem\":1,\"forse\":true}", "InvalidParameter",
		  "unknown argument 'forse' for typed" },
	};
	struct fx *fx = *state;
	struct cli c;
	json_t *r, *ret;

	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char req[256];

		snprintf(req, sizeof(req), "{\"execute\":\"typed\",\"arguments\":%s}",
			 cases[i].args);
		r = cli_call(&c, req);
		assert_error(r, cases[i].cls);
		if (!strstr(error_desc(r), cases[i].desc))
			fail_msg("'%s' lacks '%s'", error_desc(r), cases[i].desc);
		json_decref(r);
	}
	r = cli_call(&c, "{\"execute\":\"typed\",\"arguments\":"
		     "{\"name\":\"a\",\"mem\":\"64M\",\"force\":true}}");
	ret = json_object_get(r, "return");
	assert_int_equal(json_integer_value(json_object_get(ret, "mem")), 64 << 20);
	assert_true(json_is_true(json_object_get(ret, "force")));
	json_decref(r);
	r = cli_call(&c, "{\"execute\":\"typed\",\"arguments\":"
		     "{\"name\":\"a\",\"mem\":4096}}");
	ret = json_object_get(r, "return");
	assert_int_equal(json_integer_value(json_object_get(ret, "mem")), 4096);
	assert_true(json_is_false(json_object_get(ret, "force")));
	json_decref(r);
	cli_close(&c);
}

static void arg_helpers_direct(void **state)
{
	json_t *args = json_pack("{s:s, s:I, s:s, s:b}", "s", "str", "n",
				 (json_int_t)7, "z", "1.5K", "b", 1);
	const char *s = "default";
	uint64_t n = 99;
	bool b = false;
	char *err = NULL;

	(void)state;
	assert_int_equal(control_arg_str(args, "absent", false, &s, &err), 0);
	assert_string_equal(s, "default");
	assert_int_equal(control_arg_size(args, "absent", false, &n, &err), 0);
	assert_int_equal(n, 99);
	assert_null(err);
	assert_int_equal(control_arg_size(args, "n", true, &n, &err), 0);
	assert_int_equal(n, 7);
	assert_int_equal(control_arg_size(args, "z", true, &n, &err), 0);
	assert_int_equal(n, 1536);
	assert_int_equal(control_arg_bool(args, "b", true, &b, &err), 0);
	assert_true(b);
	assert_int_equal(control_arg_bool(args, "s", true, &b, &err), -EINVAL);
	assert_string_equal(err, "argument 's' must be a boolean, not a string");
	free(err);
	err = NULL;
	assert_int_equal(control_arg_str(args, "absent", true, &s, &err), -EINVAL);
	assert_string_equal(err, "missing argument 'absent'");
	free(err);
	err = NULL;
	/* Integers: JSON integers in range only (shares). */
	assert_int_equal(control_arg_uint(args, "n", true, 10, &n, &err), 0);
	assert_int_equal(n, 7);
	assert_int_equal(control_arg_uint(args, "n", true, 6, &n, &err), -EINVAL);
	assert_string_equal(err, "argument 'n' must be from 0 to 6");
	free(err);
	err = NULL;
	assert_int_equal(control_arg_uint(args, "z", true, 10, &n, &err), -EINVAL);
	assert_string_equal(err, "argument 'z' must be an integer, not a string");
	free(err);
	json_decref(args);
}

static void parser_direct(void **state)
{
	struct control_request req;
	const char *cls;
	char *desc;
	json_t *probe;

	(void)state;
	assert_int_equal(control_request_parse("{\"execute\":\"x\",\"id\":3}", 22,
					       &req, &cls, &desc), 0);
	assert_string_equal(req.execute, "x");
	assert_int_equal(json_integer_value(req.id), 3);
	assert_true(json_is_object(req.args));
	control_request_free(&req);
	/* An untrusted member name with invalid UTF-8 (jansson rejects it
	 * as a parse error) and one with control characters: the
	 * description is always a valid JSON string. */
	assert_int_equal(control_request_parse("{\"\xc3\":1}", 7, &req, &cls,
					       &desc), -EINVAL);
	assert_string_equal(cls, "ParseError");
	probe = json_string(desc);
	assert_non_null(probe);
	json_decref(probe);
	free(desc);
	control_request_free(&req);
	assert_int_equal(control_request_parse("{\"a\\tb\\u00e9\":1,\"id\":[]}",
					       24, &req, &cls, &desc), -EINVAL);
	assert_string_equal(cls, "InvalidRequest");
	assert_non_null(strstr(desc, "'a b\xc3\xa9'"));
	assert_true(json_is_array(req.id));
	free(desc);
	control_request_free(&req);
}

static void overlong_line(void **state)
{
	struct fx *fx = *state;
	size_t n = CONTROL_LINE_MAX + 100;
	char *big = malloc(n);
	struct cli c;
	json_t *r;

	cli_open(fx, &c);
	memset(big, 'a', n);
	cli_send(&c, big, n);
	r = cli_reply(&c);
	assert_error(r, "InvalidRequest");
	assert_non_null(strstr(error_desc(r), "longer than 65536 bytes"));
	json_decref(r);
	assert_true(cli_eof(&c, NULL));
	cli_close(&c);

	/* Exactly CONTROL_LINE_MAX bytes is fine; one more is not. */
	for (int extra = 0; extra <= 1; extra++) {
		static const char head[] = "{\"execute\":\"echo\",\"id\":\"";
		size_t len = CONTROL_LINE_MAX + (size_t)extra;
		char *line = malloc(len + 1);

		memset(line, 'i', len);
		memcpy(line, head, strlen(head));
		memcpy(line + len - 2, "\"}", 2);
		line[len] = '\n';
		cli_open(fx, &c);
		cli_send(&c, line, len + 1);
		r = cli_reply(&c);
		if (extra) {
			assert_error(r, "InvalidRequest");
		} else {
			assert_non_null(json_object_get(r, "return"));
			assert_int_equal(strlen(json_string_value(
				json_object_get(r, "id"))),
				CONTROL_LINE_MAX - strlen(head) - 2);
		}
		json_decref(r);
		free(line);
		cli_close(&c);
	}
	free(big);
}

static void pipelined(void **state)
{
	struct fx *fx = *state;
	size_t n = 1000, len = 0;
	char *all = malloc(n * 64);
	struct cli c;

	cli_open(fx, &c);
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(all + len, "{\"execute\":\"echo\",\"id\":%zu}\n", i);
	cli_send(&c, all, len);
	for (size_t i = 0; i < n; i++) {
		json_t *r = cli_reply(&c);

		assert_non_null(r);
		assert_int_equal(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
	}
	free(all);
	cli_close(&c);
}

static void partial_lines(void **state)
{
	/* Pieces that split requests mid-token, and join the end of one
	 * to the start of the next; blank and CRLF lines on the way. */
	static const char *const pieces[] = {
		"{\"exe", "cute\":\"ec", "ho\",\"id\":1", "}\n{\"execute\":",
		"\"echo\",\"id\":2}\r\n\n  \n{", "\"execute\":\"echo\",\"id\":3}", "\n",
	};
	struct fx *fx = *state;
	struct cli c;

	cli_open(fx, &c);
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		cli_sends(&c, pieces[i]);
		usleep(20000);
	}
	for (int id = 1; id <= 3; id++) {
		json_t *r = cli_reply(&c);

		assert_non_null(json_object_get(r, "return"));
		assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
		json_decref(r);
	}
	/* Nothing else: the blank lines got no reply. */
	{
		struct timeval tv = { .tv_usec = 100000 };

		setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		assert_null(cli_line(&c));
	}
	cli_close(&c);
}

static void disconnect_mid_line(void **state)
{
	struct fx *fx = *state;
	struct cli c;

	cli_open(fx, &c);
	cli_sends(&c, "{\"execute\":\"ec");
	usleep(20000);
	cli_close(&c);
	wait_clients(fx, 0);
	/* Disconnect with replies unread and requests pending. */
	cli_open(fx, &c);
	for (int i = 0; i < 50; i++)
		cli_sends(&c, "{\"execute\":\"blob\"}\n");
	cli_close(&c);
	wait_clients(fx, 0);
}

static void half_close_gets_reply(void **state)
{
	struct fx *fx = *state;
	struct cli c;
	json_t *r;

	cli_open(fx, &c);
	cli_sends(&c, "{\"execute\":\"echo\",\"id\":1}\n{\"execute\":\"echo\",\"id\":2}\n"
		  "{\"execute\":\"ec");
	shutdown(c.fd, SHUT_WR);
	for (int id = 1; id <= 2; id++) {
		r = cli_reply(&c);
		assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
		json_decref(r);
	}
	/* The partial third request is dropped and the server hangs up. */
	assert_true(cli_eof(&c, NULL));
	cli_close(&c);
}

static void event_broadcast(void **state)
{
	struct fx *fx = *state;
	struct cli a, b;
	json_t *m, *ts;
	time_t now = time(NULL);

	cli_open(fx, &a);
	cli_open(fx, &b);
	cli_sends(&a, "{\"execute\":\"emit\",\"arguments\":{\"name\":\"GUEST_STARTED\"},"
		  "\"id\":9}\n");
	/* The requester sees the event before its reply. */
	m = cli_msg(&a);
	assert_string_equal(json_string_value(json_object_get(m, "event")),
			    "GUEST_STARTED");
	json_decref(m);
	m = cli_msg(&a);
	assert_int_equal(json_integer_value(json_object_get(m, "id")), 9);
	json_decref(m);
	m = cli_msg(&b);
	assert_string_equal(json_string_value(json_object_get(m, "event")),
			    "GUEST_STARTED");
	assert_int_equal(json_integer_value(json_object_get(
		json_object_get(m, "data"), "i")), 0);
	ts = json_object_get(m, "timestamp");
	assert_true(json_integer_value(json_object_get(ts, "seconds")) >= now - 1);
	assert_true(json_integer_value(json_object_get(ts, "seconds")) <= now + 5);
	assert_in_range(json_integer_value(json_object_get(ts, "microseconds")),
			0, 999999);
	json_decref(m);
	cli_close(&a);
	cli_close(&b);
}

static void slow_client_dropped(void **state)
{
	struct fx *fx = *state;
	struct cli slow, fast;
	size_t got = 0;

	cli_open(fx, &slow);
	cli_open(fx, &fast);
	/* 24 rounds of 64 x 4 KiB events: 6 MiB for a client that never
	 * reads, far past its socket buffer plus CONTROL_OUT_MAX. */
	for (int round = 0; round < 24; round++) {
		int events = 0;
		json_t *m;

		cli_sends(&fast, "{\"execute\":\"emit\",\"arguments\":"
			  "{\"count\":64,\"size\":4096}}\n");
		while ((m = cli_msg(&fast)) && json_object_get(m, "event")) {
			events++;
			json_decref(m);
		}
		assert_non_null(m);
		assert_non_null(json_object_get(m, "return"));
		json_decref(m);
		assert_int_equal(events, 64);
	}
	/* The slow one was cut off: what it can still read is bounded. */
	assert_true(cli_eof(&slow, &got));
	assert_true(got <= CONTROL_OUT_MAX + 4 * 1024 * 1024);
	assert_true(got < 24u * 64 * 4200);
	cli_close(&slow);
	assert_int_equal(server_clients(fx), 1);
	cli_close(&fast);
}

static void own_event_overflow(void **state)
{
	struct fx *fx = *state;
	struct cli c;
	struct pollfd pfd;

	/* A handler whose events overflow the very client it serves: that
	 * client is dropped mid-dispatch (and freed after), no reply. */
	cli_open(fx, &c);
	cli_sends(&c, "{\"execute\":\"emit\",\"arguments\":"
		  "{\"count\":400,\"size\":8192}}\n");
	/* Not reading until the server has dropped us.  The hangup shows
	 * without reading; only then may another client connect (to count),
	 * or it could be accepted before the emit runs, get the 400 events
	 * too, and be dropped for not reading them. */
	pfd.fd = c.fd;
	pfd.events = POLLRDHUP;
	assert_int_equal(poll(&pfd, 1, RECV_TIMEOUT_S * 1000), 1);
	assert_true(pfd.revents & (POLLRDHUP | POLLHUP));
	wait_clients(fx, 0);
	assert_true(cli_eof(&c, NULL));
	cli_close(&c);
}

static void backpressure_keeps_client(void **state)
{
	struct fx *fx = *state;
	size_t n = 64;
	struct cli c;

	/* 64 replies of 64 KiB = 4 MiB requested at once, read late: the
	 * server stops reading instead of buffering or disconnecting. */
	cli_open(fx, &c);
	for (size_t i = 0; i < n; i++)
		cli_sends(&c, "{\"execute\":\"blob\"}\n");
	usleep(200000);
	for (size_t i = 0; i < n; i++) {
		json_t *r = cli_reply(&c);

		assert_non_null(r);
		assert_int_equal(strlen(json_string_value(json_object_get(
			json_object_get(r, "return"), "blob"))), 64 * 1024);
		json_decref(r);
	}
	cli_close(&c);
}

static void too_many_clients(void **state)
{
	struct fx *fx = *state;
	struct cli c[CONTROL_MAX_CLIENTS], extra;
	json_t *r;

	for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++)
		cli_open(fx, &c[i]);
	assert_int_equal(cli_connect(&extra, fx->path), 0);
	r = cli_msg(&extra);
	assert_error(r, "Busy");
	assert_string_equal(error_desc(r), "too many clients (limit 64)");
	json_decref(r);
	assert_true(cli_eof(&extra, NULL));
	cli_close(&extra);
	/* Everyone admitted still works. */
	r = cli_call(&c[CONTROL_MAX_CLIENTS - 1], "{\"execute\":\"echo\"}");
	assert_non_null(json_object_get(r, "return"));
	json_decref(r);
	cli_close(&c[0]);
	wait_clients(fx, CONTROL_MAX_CLIENTS - 1);
	for (unsigned i = 1; i < CONTROL_MAX_CLIENTS; i++)
		cli_close(&c[i]);
}

static void query_commands(void **state)
{
	struct fx *fx = *state;
	struct cli c;
	json_t *r, *cmd;
	size_t i;
	bool saw_builtin = false, saw_echo = false;

	cli_open(fx, &c);
	r = cli_call(&c, "{\"execute\":\"query-commands\"}");
	json_array_foreach(json_object_get(json_object_get(r, "return"),
					   "commands"), i, cmd) {
		const char *name = json_string_value(json_object_get(cmd, "name"));

		if (strcmp(name, "query-commands") == 0)
			saw_builtin = true;
		if (strcmp(name, "echo") == 0) {
			saw_echo = true;
			assert_string_equal(json_string_value(json_object_get(cmd, "help")),
					    "return the arguments");
		}
		if (strcmp(name, "typed") == 0)
			assert_int_equal(json_array_size(json_object_get(cmd, "args")), 3);
	}
	assert_true(saw_builtin && saw_echo);
	json_decref(r);
	r = cli_call(&c, "{\"execute\":\"query-commands\",\"arguments\":{\"x\":1}}");
	assert_error(r, "InvalidParameter");
	json_decref(r);
	cli_close(&c);
}

static void open_errors(void **state)
{
	static const struct control_cmd dup[] = {
		{ .name = "a", .fn = h_echo }, { .name = "a", .fn = h_echo },
		{ .name = NULL },
	};
	static const struct control_cmd builtin[] = {
		{ .name = "query-commands", .fn = h_echo }, { .name = NULL },
	};
	static const struct control_cmd nofn[] = {
		{ .name = "a" }, { .name = NULL },
	};
	struct fx *fx = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c2;
	struct loop *loop;
	char path[96], longpath[200];
	int fd;

	assert_int_equal(loop_new(&loop), 0);
	/* Someone is listening there: refuse, leave it alone. */
	assert_int_equal(control_open(loop, fx->path, NULL, NULL, &c2), -EADDRINUSE);
	assert_int_equal(access(fx->path, F_OK), 0);
	/* Not a socket: refuse. */
	snprintf(path, sizeof(path), "%s/file", fx->dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	assert_int_equal(control_open(loop, path, NULL, NULL, &c2), -EEXIST);
	unlink(path);
	/* A stale socket (bound, never unlinked, nobody listening). */
	snprintf(path, sizeof(path), "%s/stale.sock", fx->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(control_open(loop, path, NULL, NULL, &c2), 0);
	control_close(c2);
	assert_int_equal(access(path, F_OK), -1);
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(control_open(loop, longpath, NULL, NULL, &c2), -ENAMETOOLONG);
	assert_int_equal(control_open(loop, path, dup, NULL, &c2), -EEXIST);
	assert_int_equal(control_open(loop, path, builtin, NULL, &c2), -EEXIST);
	assert_int_equal(control_open(loop, path, nofn, NULL, &c2), -EINVAL);
	assert_int_equal(control_open(loop, "", NULL, NULL, &c2), -EINVAL);
	assert_int_equal(access(path, F_OK), -1);
	loop_free(loop);
	control_close(NULL);
}

/* ---- ebbctl end to end ---- */

static char ebbctl_path[PATH_MAX];

static bool find_ebbctl(void)
{
	const char *env = getenv("EBBCTL");
	char self[PATH_MAX - 32];
	ssize_t n;
	char *slash;

	if (env && *env) {
		snprintf(ebbctl_path, sizeof(ebbctl_path), "%s", env);
		return access(ebbctl_path, X_OK) == 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return false;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return false;
	*slash = '\0';
	/* build/tests/unit/test_control -> build/src/ebbctl */
	snprintf(ebbctl_path, sizeof(ebbctl_path), "%s/../../src/ebbctl", self);
	return access(ebbctl_path, X_OK) == 0;
}

struct run {
	int status;		/* exit status, or 128+signal */
	char out[16384];
	char err[4096];
};

/* Run ebbctl with --socket pointing at the fixture (unless @env_socket),
 * argv ending in NULL; capture stdout and stderr. */
static void ebbctl(struct fx *fx, struct run *r, int env_socket, ...)
{
	const char *argv[32];
	char **envp;
	char envsock[160];
	size_t argc = 0, nenv = 0;
	int out[2], err[2], st;
	posix_spawn_file_actions_t fa;
	struct pollfd p[2];
	pid_t pid;
	va_list ap;

	if (!ebbctl_path[0] && !find_ebbctl())
		skip();
	argv[argc++] = ebbctl_path;
	if (!env_socket) {
		argv[argc++] = "--socket";
		argv[argc++] = fx->path;
	}
	va_start(ap, env_socket);
	while ((argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	while (environ[nenv])
		nenv++;
	envp = calloc(nenv + 2, sizeof(*envp));
	for (size_t i = 0; i < nenv; i++)
		envp[i] = environ[i];
	snprintf(envsock, sizeof(envsock), "EBB_SOCKET=%s", fx->path);
	if (env_socket)
		envp[nenv] = envsock;
	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(err), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err[1], 2);
	posix_spawn_file_actions_addclose(&fa, out[0]);
	posix_spawn_file_actions_addclose(&fa, err[0]);
	assert_int_equal(posix_spawn(&pid, ebbctl_path, &fa, NULL,
				     (char **)argv, envp), 0);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	close(out[1]);
	close(err[1]);
	memset(r, 0, sizeof(*r));
	p[0] = (struct pollfd){ .fd = out[0], .events = POLLIN };
	p[1] = (struct pollfd){ .fd = err[0], .events = POLLIN };
	/* Both pipes until EOF; outputs are small. */
	while (p[0].fd >= 0 || p[1].fd >= 0) {
		if (poll(p, 2, 20000) <= 0)
			break;
		for (int i = 0; i < 2; i++) {
			char tmp[4096];
			char *buf = i ? r->err : r->out;
			size_t cap = i ? sizeof(r->err) : sizeof(r->out);
			ssize_t n;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			n = read(p[i].fd, tmp, sizeof(tmp));
			if (n <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				continue;
			}
			if (strlen(buf) + (size_t)n < cap)
				strncat(buf, tmp, (size_t)n);
		}
	}
	for (int i = 0; i < 2; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Exit status, showing what ebbctl said when it is not the expected one. */
#define assert_status(r, want) do { \
	if ((r).status != (want)) \
		fail_msg("ebbctl exited %d, not %d; stdout:\n%s\nstderr:\n%s", \
			 (r).status, (want), (r).out, (r).err); \
} while (0)

#define assert_contains(hay, needle) do { \
	if (!strstr((hay), (needle))) \
		fail_msg("missing '%s' in:\n%s", (needle), (hay)); \
} while (0)

/* ebbctl top, not on a terminal: frames one after another; guests sorted
 * by resident (a guest without a resident value counts as 0). */
static void ebbctl_top_frames(void **state)
{
	struct fx *fx = *state;
	struct run r;
	const char *web1, *db, *evt;

	ebbctl(fx, &r, false, "top", "--count", "2", "--interval", "0.1", NULL);
	assert_status(r, 0);
	assert_string_equal(r.err, "");
	assert_contains(r.out, "host: budget 4G  resident 1.2G  free 2.8G  "
			"claims 924M  store -  guests 2\n");
	assert_contains(r.out,
"NAME  STATE      MEM  RESIDENT  TARGET  ACTUAL  CLAIM  STORE\n"
"web1  running   512M      301M    384M    384M     0B      -\n"
"db    starting    1G      100M      1G      1G   924M      -\n"
"evt   running   512M         -    256M    300M      -      -\n"
"slow  running   512M         -    256M    512M      -      -\n");
	web1 = strstr(r.out, "web1 ");
	db = strstr(r.out, "db ");
	evt = strstr(r.out, "evt ");
	assert_true(web1 && db && evt && web1 < db && db < evt);
	/* Two frames, no terminal escapes. */
	assert_non_null(strstr(strstr(r.out, "recent events:") + 1,
			       "recent events:"));
	assert_null(strchr(r.out, '\033'));

	ebbctl(fx, &r, false, "top", "--interval", "0.01", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "--interval must be at least 0.1");
}

static void ebbctl_list_info_stats(void **state)
{
	struct fx *fx = *state;
	struct run r;

	ebbctl(fx, &r, false, "list", NULL);
	assert_status(r, 0);
	assert_string_equal(r.err, "");
	assert_string_equal(r.out,
"NAME  STATE      PID   MEM  TARGET  ACTUAL  RESIDENT  CLAIM  REPORTED  RETURNED  DISCARDED  HUGE  OVER\n"
"web1  running   1234  512M    384M    384M      301M     0B       12M      128M        90M     -  no\n"
"db    starting  1240    1G      1G      1G      100M   924M        0B        0B          -     -  yes\n"
"evt   running   1300  512M    256M    300M         -      -         -         -          -     -  -\n"
"slow  running   1301  512M    256M    512M         -      -         -         -          -     -  -\n");

	ebbctl(fx, &r, false, "info", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out,
			    "budget:    4G\n"
			    "resident:  1.2G\n"
			    "free:      2.8G\n"
			    "claims:    924M\n"
			    "guests:    2\n");

	ebbctl(fx, &r, false, "stats", "web1", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out,
			    "name:            web1\n"
			    "resident:        301M\n"
			    "balloon_actual:  384M\n"
			    "page_states:     80000 stable, 20000 unused, 0 volatile, 0 discarding, 23040 discarded\n"
			    "stats_age:       1.2 s\n"
			    "swap_in:         0B\n"
			    "swap_out:        4M\n"
			    "major_faults:    12\n"
			    "minor_faults:    123456\n"
			    "free:            100M\n"
			    "total:           496M\n"
			    "available:       300M\n"
			    "caches:          150M\n"
			    "discarded:       90M\n");

	/* --json: the return object, one line, before or after the command. */
	ebbctl(fx, &r, false, "--json", "info", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "{\"budget\":4294967296,\"resident\":1287651328,"
			    "\"free\":3007315968,\"claims\":968884224,\"guests\":2}\n");
	ebbctl(fx, &r, false, "list", "--json", NULL);
	assert_status(r, 0);
	assert_int_equal(strchr(r.out, '\n') - r.out + 1, (long)strlen(r.out));

	/* The socket from the environment. */
	ebbctl(fx, &r, true, "info", NULL);
	assert_status(r, 0);
	assert_contains(r.out, "budget:");
}

static void ebbctl_errors(void **state)
{
	struct fx *fx = *state;
	struct fx other = *fx;
	struct run r;
	int calls;

	ebbctl(fx, &r, false, "stats", "nosuch", NULL);
	assert_status(r, 1);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err, "ebbctl: no guest named 'nosuch'\n");

	ebbctl(fx, &r, false, "claim", "web1", "8G", NULL);
	assert_status(r, 1);
	assert_string_equal(r.err, "ebbctl: cannot claim: only 2.8G unclaimed\n");

	/* Usage errors: exit 2, and the daemon never hears of them. */
	calls = fx->calls;
	ebbctl(fx, &r, false, "run", "web1", "--mem", "12Q", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "ebbctl: invalid size for --mem: '12Q'");
	ebbctl(fx, &r, false, "run", "web1", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "missing --mem");
	ebbctl(fx, &r, false, "run", "--mem", "1G", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "run: missing NAME");
	ebbctl(fx, &r, false, "balloon", "web1", "-5M", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "balloon", "web1", "1M", "--wait", "soon", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "claim", "web1", "99999999999999T", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "too large");
	ebbctl(fx, &r, false, "list", "extra", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "stop", "web1", "--frobnicate", NULL);
	assert_status(r, 2);
	assert_contains(r.err, "unknown option '--frobnicate'");
	ebbctl(fx, &r, false, "frobnicate", NULL);
	assert_status(r, 2);
	assert_string_equal(r.err, "ebbctl: unknown command 'frobnicate' "
			    "(see 'ebbctl help')\n");
	ebbctl(fx, &r, false, NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "--timeout", NULL);
	assert_status(r, 2);
	assert_int_equal(fx->calls, calls);

	ebbctl(fx, &r, false, "help", NULL);
	assert_status(r, 0);
	assert_contains(r.out, "usage: ebbctl");

	/* No daemon. */
	snprintf(other.path, sizeof(other.path), "%s/none.sock", fx->dir);
	ebbctl(&other, &r, false, "list", NULL);
	assert_status(r, 1);
	assert_string_equal(r.out, "");
	assert_contains(r.err, "ebbctl: cannot connect to ");
	assert_contains(r.err, "none.sock: No such file or directory "
			"(is ebbd running?)\n");
}

static void ebbctl_timeout(void **state)
{
	struct fx *fx = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fx mute = *fx;
	struct run r;
	int64_t t0;
	int fd;

	/* A socket that accepts (in the backlog) but never speaks. */
	snprintf(mute.path, sizeof(mute.path), "%s/mute.sock", fx->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", mute.path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	t0 = (int64_t)loop_now_ms();
	ebbctl(&mute, &r, false, "--timeout", "0.5", "list", NULL);
	assert_status(r, 1);
	assert_string_equal(r.err, "ebbctl: no reply from ebbd within 0.5 s "
			    "(see --timeout)\n");
	assert_true((int64_t)loop_now_ms() - t0 < 5000);
	close(fd);
	unlink(mute.path);
}

#define POLICY_TEXT \
"policy: on, state reclaim, 42 decisions\n" \
"watermarks: low 64M, high 128M (step 64M, margin 32M)\n" \
"host: free 40M, need 88M, pressure no (PSI some avg10 1.50%)\n" \
"cgroup: /sys/fs/cgroup/memory/box: limit 640M, working set 580M, swap 0B\n" \
"store: taking puts; host swap: by per-guest cgroup\n" \
"\n" \
"NAME  MIN   MAX  SHARES  KEEP  RESIDENT  MODE\n" \
"web1  64M  512M     100  384M      301M  policy\n" \
"db     0B    1G     200    1G      100M  manual\n" \
"\n" \
"last actions:\n" \
"TIME      GUEST   MECHANISM        BYTES  TARGET  REASON\n" \
"00:00:00  web1    balloon_inflate    48M    336M  uses 200 MiB, holds 301 MiB\n" \
"00:00:00  (host)  drop_ephemeral      8M       -  clean cache goes first\n"

/* ebbctl policy: the daemon's picture as text; switches, watermarks and
 * a guest's settings as arguments; usage errors before any request. */
static void ebbctl_policy_cmd(void **state)
{
	struct fx *fx = *state;
	struct run r;
	int calls;

	setenv("TZ", "UTC", 1);
	ebbctl(fx, &r, false, "policy", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, POLICY_TEXT);

	ebbctl(fx, &r, false, "policy", "--off", "--low", "64M", "--high", "1G", NULL);
	assert_status(r, 0);
	assert_string_equal(json_string_value(json_object_get(fx->last_args, "mode")),
			    "off");
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "low")),
			 MiB(64));
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "high")),
			 MiB(1024));

	ebbctl(fx, &r, false, "policy", "web1", "--shares", "200", "--min", "64M", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "web1: min 64M, max 512M, shares 200, "
			    "managed by the policy\n");
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "shares")),
			 200);
	assert_null(json_object_get(fx->last_args, "max"));

	calls = fx->calls;
	ebbctl(fx, &r, false, "policy", "--shares", "5", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "policy", "web1", "--on", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "policy", "web1", "--shares", "0", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "policy", "web1", "db", NULL);
	assert_status(r, 2);
	ebbctl(fx, &r, false, "run", "w", "--mem", "1G", "--shares", "x1", NULL);
	assert_status(r, 2);
	assert_int_equal(fx->calls, calls);

	ebbctl(fx, &r, false, "run", "w", "--mem", "1G", "--shares", "300",
	       "--max", "512M", NULL);
	assert_status(r, 0);
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "shares")),
			 300);
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "max")),
			 MiB(512));
}

static void ebbctl_run_and_friends(void **state)
{
	struct fx *fx = *state;
	struct run r;

	ebbctl(fx, &r, false, "run", "web1", "--mem", "512M", "--min", "256M",
	       "--prealloc", "--cmdline", "quiet loglevel=3", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "web1: started, pid 1234, mem 512M, claim 256M\n"
			    "web1: preallocated 256M in 0.25 s (128 chunks of 2 MiB "
			    "or less, 0 pages by 4 KiB)\n");
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "mem")),
			 512 << 20);
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "min")),
			 256 << 20);
	assert_true(json_is_true(json_object_get(fx->last_args, "prealloc")));
	assert_string_equal(json_string_value(json_object_get(fx->last_args,
				"cmdline")), "quiet loglevel=3");

	/* Another VMM connects to the device sockets: they are printed. */
	ebbctl(fx, &r, false, "run", "x", "--mem", "128M", "--external",
	       "--swap", "256M", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "x: started, pid 0, mem 128M, claim 128M\n"
			    "  balloon socket: /run/ebb/x/balloon.sock\n"
			    "  swap socket: /run/ebb/x/swap.sock\n");

	ebbctl(fx, &r, false, "claim", "web1", "0", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "web1: no claim outstanding\n");
	ebbctl(fx, &r, false, "claim", "web1", "1.5G", NULL);
	assert_string_equal(r.out, "web1: claim 1.5G\n");
	assert_int_equal(json_integer_value(json_object_get(fx->last_args, "size")),
			 3ll << 29);

	ebbctl(fx, &r, false, "exec", "web1", "ls", "-l", "/proc", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "");
	assert_string_equal(json_string_value(json_object_get(fx->last_args,
				"command")), "ls -l /proc");

	ebbctl(fx, &r, false, "stop", "web1", "--force", NULL);
	assert_status(r, 0);
	assert_true(json_is_true(json_object_get(fx->last_args, "force")));
	ebbctl(fx, &r, false, "stop", "web1", NULL);
	assert_null(json_object_get(fx->last_args, "force"));

	ebbctl(fx, &r, false, "balloon", "web1", "256M", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "web1: balloon target 256M, actual 512M\n");

	ebbctl(fx, &r, false, "tmem", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out,
			    "NAME   PERSISTENT  EPHEMERAL  LOGICAL  STORED  CHARGED  "
			    "RATIO  DEDUP  HITS  MISSES  EVICTED  REFUSED\n"
			    "web1          512          -        -      1M        -   "
			    "2.00      -     -       -        -        -\n"
			    "TOTAL         512          7       2M      1M        -   "
			    "2.00      -     -       -        -        -\n"
			    "store (lz4-fast): 2M in slabs, 1M used (50.0% slack), "
			    "64K records\n"
			    "latency: put p50 4.2 us p99 61.0 us, get p50 1.2 us "
			    "p99 20.0 us (5 puts and 9 gets timed)\n");

	ebbctl(fx, &r, false, "raw", "{\"execute\":\"echo\",\"arguments\":{\"a\":1},"
	       "\"id\":\"r\"}", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "{\"return\":{\"a\":1},\"id\":\"r\"}\n");
	ebbctl(fx, &r, false, "raw", "{not json", NULL);
	assert_status(r, 1);
	assert_contains(r.out, "\"ParseError\"");
	assert_contains(r.err, "ebbctl: invalid JSON");
}

static void ebbctl_balloon_wait(void **state)
{
	struct fx *fx = *state;
	struct run r;
	int64_t t0;

	/* Reached by event (the poll alone would never see it). */
	ebbctl(fx, &r, false, "balloon", "evt", "256M", "--wait", "10", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "evt: balloon target 256M reached, actual 256M\n");
	/* Reached by poll: guest-list shows actual == target. */
	ebbctl(fx, &r, false, "balloon", "web1", "384M", "--wait", "10", NULL);
	assert_status(r, 0);
	assert_string_equal(r.out, "web1: balloon target 384M reached, actual 384M\n");
	/* Never reached. */
	t0 = (int64_t)loop_now_ms();
	ebbctl(fx, &r, false, "balloon", "slow", "256M", "--wait", "1", NULL);
	assert_status(r, 1);
	assert_string_equal(r.err, "ebbctl: slow: balloon actual 512M did not "
			    "reach target 256M within 1.0 s\n");
	assert_true((int64_t)loop_now_ms() - t0 >= 1000);
	ebbctl(fx, &r, false, "balloon", "gone", "256M", "--wait", "1", NULL);
	assert_status(r, 1);
	assert_string_equal(r.err, "ebbctl: gone: guest is gone\n");
}

static void ebbctl_events(void **state)
{
	struct fx *fx = *state;
	const char *argv[] = { ebbctl_path, "--socket", fx->path, "events", NULL };
	posix_spawn_file_actions_t fa;
	char buf[1024] = "";
	size_t len = 0;
	struct pollfd p;
	struct cli c;
	json_t *r;
	int out[2], st;
	pid_t pid;

	if (!ebbctl_path[0] && !find_ebbctl())
		skip();
	argv[0] = ebbctl_path;
	assert_int_equal(pipe(out), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_addclose(&fa, out[0]);
	assert_int_equal(posix_spawn(&pid, ebbctl_path, &fa, NULL, (char **)argv,
				     environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	wait_clients(fx, 1);
	cli_open(fx, &c);
	r = cli_call(&c, "{\"execute\":\"emit\",\"arguments\":"
		     "{\"name\":\"GUEST_STARTED\",\"count\":2}}");
	json_decref(r);
	cli_close(&c);
	p = (struct pollfd){ .fd = out[0], .events = POLLIN };
	while (!strstr(buf, "i=1 pad=\"\"\n") && poll(&p, 1, 5000) > 0) {
		ssize_t n = read(out[0], buf + len, sizeof(buf) - len - 1);

		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
	}
	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	close(out[0]);
	/* "2024-05-01 12:00:00.123456 GUEST_STARTED i=0 pad=\"\"" */
	assert_contains(buf, " GUEST_STARTED i=0 pad=\"\"\n");
	assert_contains(buf, " GUEST_STARTED i=1 pad=\"\"\n");
	assert_true(buf[4] == '-' && buf[10] == ' ' && buf[19] == '.');
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(greeting),
		T(returns_and_echoes_id),
		T(errno_to_class),
		T(unknown_command),
		T(malformed_json),
		T(bad_request_shape),
		T(wrong_argument_types),
		cmocka_unit_test(arg_helpers_direct),
		cmocka_unit_test(parser_direct),
		T(overlong_line),
		T(pipelined),
		T(partial_lines),
		T(disconnect_mid_line),
		T(half_close_gets_reply),
		T(event_broadcast),
		T(slow_client_dropped),
		T(own_event_overflow),
		T(backpressure_keeps_client),
		T(too_many_clients),
		T(query_commands),
		T(open_errors),
		T(ebbctl_list_info_stats),
		T(ebbctl_top_frames),
		T(ebbctl_errors),
		T(ebbctl_timeout),
		T(ebbctl_run_and_friends),
		T(ebbctl_policy_cmd),
		T(ebbctl_balloon_wait),
		T(ebbctl_events),
	};
#undef T

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
