/*
 * control: the server side of the control protocol (docs/control.md; API
 * in control.h): clients, dispatch, events and the listening socket.  The
 * request-line parser and argument readers are control_request.c.
 *
 * One client's data path:
 *
 *   socket --recv--> in[] --split at '\n'--> parse --> dispatch --+
 *   socket <--send-- out[] <---------- reply ---------------------+
 *                      ^--- control_event() appends to every client
 *
 * Reading is gated, never the output of a reply:
 *   1. recv at most the free space of in[] per callback (in[] holds one
 *      maximal line plus its '\n', so that is the bound on work per tick);
 *   2. run complete lines until the client's unsent output passes
 *      CONTROL_OUT_HIGH; leftover lines wait in in[] and EPOLLIN is masked,
 *      so the kernel socket buffer fills and a flooding client blocks on its
 *      own writes instead of growing our memory;
 *   3. when output drains below the mark, step 2 resumes from in[] before
 *      EPOLLIN is unmasked.  Level-triggered epoll will not report bytes
 *      already taken out of the socket, so while unprocessed lines remain
 *      the client keeps EPOLLOUT armed: its writable socket is the wakeup.
 * Events cannot wait for a client, so one that would push its unsent output
 * past CONTROL_OUT_MAX disconnects that client instead.
 *
 * Client lifetime: open -> closing (peer sent EOF, or an overlong line) ->
 * dropped once its output is flushed; any socket error, or an event
 * overflow, drops at once.  client_drop() closes the fd and unlinks the
 * client immediately but frees it only when no callback of its own is on
 * the stack (in_cb): a handler's control_event() may drop the very client
 * whose request it is serving.
 */
#include "control_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "size.h"
#include "usock.h"

#define WHO			"control"
#define IN_CAP_MAX		(CONTROL_LINE_MAX + 1)	/* a line and its '\n' */
#define IN_CAP_MIN		4096u	/* first in[] allocation; most requests fit */
#define ACCEPT_BATCH		16	/* accepts per callback: bounded work */
#define ACCEPT_PAUSE_MS		200	/* back-off after EMFILE and friends */
#define LISTEN_BACKLOG		32

struct client {
	struct control *ctl;
	struct client *next;		/* ctl->clients list */
	int fd;				/* -1 once dropped */
	unsigned id;			/* for log lines only */
	struct loop_watch *watch;
	uint32_t events;		/* epoll mask currently registered */
	char *in;			/* unconsumed request bytes */
	size_t in_len;			/* bytes in in[] */
	size_t in_cap;			/* allocated, <= IN_CAP_MAX */
	size_t in_scanned;		/* leading bytes of in[] known '\n'-free */
	char *out;			/* reply and event bytes */
	size_t out_off;			/* first unsent byte */
	size_t out_len;			/* end of queued bytes */
	size_t out_cap;			/* allocated */
	bool eof;			/* peer will send no more */
	bool closing;			/* read no more; drop once out drains */
	bool dead;			/* dropped; free when !in_cb */
	bool in_cb;			/* on_client() for it is on the stack */
};

struct control {
	struct loop *loop;
	int listen_fd;
	struct loop_watch *listen_watch;
	struct loop_timer *accept_timer; /* resumes accepting after EMFILE */
	char *path;			/* socket file we created */
	dev_t dev;			/* its identity, so close() unlinks */
	ino_t ino;			/* only our own file */
	const struct control_cmd *cmds;	/* caller's table, NULL-name ended */
	void *ctx;			/* passed to every handler */
	struct client *clients;		/* connected, not yet dropped */
	unsigned nclients;		/* length of clients */
	unsigned next_id;		/* client ids for logs */
	char *greeting;			/* the first line every client gets */
	/* Events sent, by name (metrics).  Names are the callers' string
	 * literals, compared by content. */
	struct {
		char name[32];
		uint64_t count;
	} events[CONTROL_EVENT_NAMES];
	unsigned nevents;		/* used entries of events */
};

static void count_event(struct control *c, const char *name)
{
	unsigned i;

	for (i = 0; i < c->nevents; i++) {
		if (!strcmp(c->events[i].name, name)) {
			c->events[i].count++;
			return;
		}
	}
	if (i == CONTROL_EVENT_NAMES)
		return;
	snprintf(c->events[i].name, sizeof(c->events[i].name), "%s", name);
	c->events[i].count = 1;
	c->nevents++;
}

void control_event_counts(const struct control *c,
			  void (*fn)(void *opaque, const char *name,
				     uint64_t count),
			  void *opaque)
{
	for (unsigned i = 0; i < c->nevents; i++)
		fn(opaque, c->events[i].name, c->events[i].count);
}

static const char oom_reply[] =
	"{\"error\":{\"class\":\"GenericError\",\"desc\":\"out of memory\"}}\n";

const char *control_error_class(int rc)
{
	switch (rc) {
	case -ENOENT:		return "NotFound";
	case -EINVAL:		return "InvalidParameter";
	case -ENOMEM:		return "NoMemory";
	case -EEXIST:		return "AlreadyExists";
	case -EBUSY:		return "Busy";
	case -ENOSPC:		return "NoSpace";
	case -ENOTSUP:		return "NotSupported";
#if EOPNOTSUPP != ENOTSUP
	case -EOPNOTSUPP:	return "NotSupported";
#endif
	default:		return "GenericError";
	}
}

/* {"error": {"class", "desc"}, "id"}.  Takes @desc (may be NULL). */
static json_t *error_reply(const char *cls, char *desc, json_t *id)
{
	json_t *reply, *err;

	if (desc)
		desc_clean(desc);
	err = json_object();
	json_object_set_new(err, "class", json_string(cls));
	json_object_set_new(err, "desc", json_string(desc ? desc : "out of memory"));
	free(desc);
	reply = json_object();
	if (json_object_set_new(reply, "error", err) < 0) {
		json_decref(reply);
		return NULL;
	}
	if (id)
		json_object_set(reply, "id", id);
	return reply;
}

/* ---- commands ---- */

static bool word_in_list(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; *p; ) {
		size_t w;

		while (*p == ' ')
			p++;
		w = strcspn(p, " ");
		if (w && w == n && memcmp(p, word, n) == 0)
			return true;
		p += w;
	}
	return false;
}

static int builtin_query_commands(void *ctx, json_t *args, json_t **ret,
				  char **err);

static const struct control_cmd builtins[] = {
	{ .name = "query-commands", .fn = builtin_query_commands, .args = "",
	  .help = "list the commands this daemon accepts" },
	{ .name = NULL },
};

static json_t *cmd_describe(const struct control_cmd *cmd)
{
	json_t *o = json_object();

	json_object_set_new(o, "name", json_string(cmd->name));
	if (cmd->help)
		json_object_set_new(o, "help", json_string(cmd->help));
	if (cmd->args) {
		json_t *a = json_array();

		for (const char *p = cmd->args; *p; ) {
			size_t w;

			while (*p == ' ')
				p++;
			w = strcspn(p, " ");
			if (w)
				json_array_append_new(a, json_stringn(p, w));
			p += w;
		}
		json_object_set_new(o, "args", a);
	}
	return o;
}

static int builtin_query_commands(void *ctx, json_t *args, json_t **ret,
				  char **err)
{
	struct control *c = ctx;
	json_t *list = json_array();

	if (!list)
		return -ENOMEM;
	for (const struct control_cmd *cmd = builtins; cmd->name; cmd++)
		json_array_append_new(list, cmd_describe(cmd));
	for (const struct control_cmd *cmd = c->cmds; cmd && cmd->name; cmd++)
		json_array_append_new(list, cmd_describe(cmd));
	*ret = json_pack("{s:o}", "commands", list);
	return *ret ? 0 : -ENOMEM;
}

static const struct control_cmd *cmd_find(const struct control_cmd *table,
					  const char *name)
{
	for (const struct control_cmd *cmd = table; cmd && cmd->name; cmd++) {
		if (strcmp(cmd->name, name) == 0)
			return cmd;
	}
	return NULL;
}

/* Run a parsed request; returns the reply (NULL only when out of memory). */
static json_t *dispatch(struct control *c, struct control_request *req)
{
	const struct control_cmd *cmd = cmd_find(builtins, req->execute);
	void *ctx = c;
	json_t *ret = NULL, *reply;
	const char *key;
	json_t *val;
	char *err = NULL;
	int rc;

	if (!cmd) {
		cmd = cmd_find(c->cmds, req->execute);
		ctx = c->ctx;
	}
	if (!cmd)
		return error_reply("CommandNotFound",
				   strdupf("unknown command '" NAME_IN_DESC "'",
					   req->execute), req->id);
	if (cmd->args) {
		json_object_foreach(req->args, key, val) {
			if (!word_in_list(cmd->args, key))
				return error_reply("InvalidParameter",
					strdupf("unknown argument '" NAME_IN_DESC
						"' for %s", key, cmd->name),
					req->id);
		}
	}
	log_debug(WHO, "execute %s", cmd->name);
	rc = cmd->fn(ctx, req->args, &ret, &err);
	if (rc == 0) {
		free(err);
		if (!ret)
			ret = json_object();
		reply = json_object();
		if (json_object_set_new(reply, "return", ret) < 0) {
			json_decref(reply);
			return NULL;
		}
		if (req->id)
			json_object_set(reply, "id", req->id);
		return reply;
	}
	json_decref(ret);
	if (rc > 0 || rc < -4095) {
		log_err(WHO, "handler for %s returned %d, not -errno",
			cmd->name, rc);
		rc = -EIO;
	}
	if (!err)
		err = strdup(strerror(-rc));
	return error_reply(control_error_class(rc), err, req->id);
}

/* ---- clients ---- */

static size_t out_pending(const struct client *cl)
{
	return cl->out_len - cl->out_off;
}

static int out_append(struct client *cl, const char *data, size_t len)
{
	if (cl->out_off && cl->out_len + len > cl->out_cap) {
		memmove(cl->out, cl->out + cl->out_off, out_pending(cl));
		cl->out_len -= cl->out_off;
		cl->out_off = 0;
	}
	if (cl->out_len + len > cl->out_cap) {
		size_t cap = cl->out_cap ? cl->out_cap : 4096;
		char *p;

		while (cap < cl->out_len + len)
			cap *= 2;
		p = realloc(cl->out, cap);
		if (!p)
			return -ENOMEM;
		cl->out = p;
		cl->out_cap = cap;
	}
	memcpy(cl->out + cl->out_len, data, len);
	cl->out_len += len;
	return 0;
}

static void client_free(struct client *cl)
{
	free(cl->in);
	free(cl->out);
	free(cl);
}

static void client_drop(struct client *cl)
{
	struct client **pp;

	if (cl->dead)
		return;
	cl->dead = true;
	for (pp = &cl->ctl->clients; *pp; pp = &(*pp)->next) {
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	}
	cl->ctl->nclients--;
	loop_watch_del(cl->watch);
	close(cl->fd);
	cl->fd = -1;
	log_debug(WHO, "client %u: disconnected", cl->id);
	if (!cl->in_cb)
		client_free(cl);
}

/* Send what the socket takes.  0, or -errno when the client is gone. */
static int client_flush(struct client *cl)
{
	while (out_pending(cl)) {
		ssize_t n = send(cl->fd, cl->out + cl->out_off, out_pending(cl),
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		cl->out_off += (size_t)n;
	}
	cl->out_off = cl->out_len = 0;
	return 0;
}

static bool client_may_read(const struct client *cl)
{
	return !cl->eof && !cl->closing && out_pending(cl) < CONTROL_OUT_HIGH;
}

/* Flush, then make the epoll mask match the client's state; may drop it. */
static void client_kick(struct client *cl)
{
	uint32_t want = 0;

	if (cl->dead)
		return;
	if (client_flush(cl) < 0) {
		client_drop(cl);
		return;
	}
	if (cl->closing && !out_pending(cl)) {
		client_drop(cl);
		return;
	}
	if (client_may_read(cl))
		want |= EPOLLIN;
	/* Lines left in in[] by backpressure need a wakeup that new socket
	 * bytes will not give: a writable socket is one (step 3 above). */
	if (out_pending(cl) || (!cl->closing && cl->in_scanned < cl->in_len))
		want |= EPOLLOUT;
	if (want != cl->events) {
		if (loop_watch_mod(cl->watch, want) < 0) {
			client_drop(cl);
			return;
		}
		cl->events = want;
	}
}

/* Queue one JSON message as a line; takes @msg.  Replies are never refused
 * for size: reading stops at CONTROL_OUT_HIGH, which bounds them. */
static void client_send(struct client *cl, json_t *msg)
{
	char *s = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
	int rc;

	json_decref(msg);
	if (s) {
		size_t n = strlen(s);

		s[n] = '\n';	/* json_dumps' NUL becomes the newline */
		rc = out_append(cl, s, n + 1);
		free(s);
	} else {
		rc = out_append(cl, oom_reply, sizeof(oom_reply) - 1);
	}
	if (rc < 0) {
		log_err(WHO, "client %u: out of memory queueing a reply", cl->id);
		client_drop(cl);
	}
}

static bool line_is_blank(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	}
	return true;
}

static void client_line(struct client *cl, const char *line, size_t len)
{
	struct control_request req;
	const char *cls;
	char *desc;
	json_t *reply;

	if (line_is_blank(line, len))
		return;
	if (line[len - 1] == '\r')	/* be kind to CRLF tools (socat crlf) */
		len--;
	if (control_request_parse(line, len, &req, &cls, &desc) < 0) {
		log_debug(WHO, "client %u: %s: %s", cl->id, cls,
			  desc ? desc : "out of memory");
		reply = error_reply(cls, desc, req.id);
	} else {
		reply = dispatch(cl->ctl, &req);
	}
	if (cl->dead)		/* a handler's event overflowed this client */
		json_decref(reply);
	else
		client_send(cl, reply);
	control_request_free(&req);
}

/* Run the complete lines in in[] while output is below the mark. */
static void client_process(struct client *cl)
{
	size_t start = 0, scan = cl->in_scanned;
	bool more = false;

	while (cl->in_len > scan && !cl->dead && !cl->closing) {
		char *nl;

		if (out_pending(cl) >= CONTROL_OUT_HIGH) {
			more = true;
			break;
		}
		nl = memchr(cl->in + scan, '\n', cl->in_len - scan);
		if (!nl)
			break;
		client_line(cl, cl->in + start, (size_t)(nl - (cl->in + start)));
		start = scan = (size_t)(nl - cl->in) + 1;
	}
	if (cl->dead)
		return;
	if (start) {
		memmove(cl->in, cl->in + start, cl->in_len - start);
		cl->in_len -= start;
	}
	/* Backpressure stopped us: what is left may hold lines; rescan. */
	cl->in_scanned = more ? 0 : cl->in_len;
	if (more || cl->closing)
		return;
	if (cl->in_len == IN_CAP_MAX) {
		log_warn(WHO, "client %u: request line longer than %u bytes, "
			 "disconnecting", cl->id, CONTROL_LINE_MAX);
		client_send(cl, error_reply("InvalidRequest",
			strdupf("request line longer than %u bytes",
				CONTROL_LINE_MAX), NULL));
		cl->closing = true;
	} else if (cl->eof) {
		/* A partial last line is dropped: the peer cannot finish it. */
		cl->closing = true;
	}
	if (cl->closing) {
		free(cl->in);
		cl->in = NULL;
		cl->in_len = cl->in_cap = cl->in_scanned = 0;
	}
}

static void client_read(struct client *cl)
{
	ssize_t n;

	if (cl->in_len == cl->in_cap) {
		size_t cap = cl->in_cap ? cl->in_cap * 2 : IN_CAP_MIN;
		char *p;

		if (cap > IN_CAP_MAX)
			cap = IN_CAP_MAX;
		if (cap == cl->in_cap)
			return;		/* full: client_process() decides */
		p = realloc(cl->in, cap);
		if (!p) {
			log_err(WHO, "client %u: out of memory", cl->id);
			client_drop(cl);
			return;
		}
		cl->in = p;
		cl->in_cap = cap;
	}
	n = recv(cl->fd, cl->in + cl->in_len, cl->in_cap - cl->in_len,
		 MSG_DONTWAIT);
	if (n > 0) {
		cl->in_len += (size_t)n;
	} else if (n == 0) {
		cl->eof = true;
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		log_debug(WHO, "client %u: recv: %s", cl->id, strerror(errno));
		client_drop(cl);
	}
}

static void on_client(void *opaque, uint32_t events)
{
	struct client *cl = opaque;

	cl->in_cb = true;
	if (out_pending(cl) && client_flush(cl) < 0)
		client_drop(cl);
	if (!cl->dead && client_may_read(cl) &&
	    (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		client_read(cl);
	if (!cl->dead)
		client_process(cl);
	client_kick(cl);
	cl->in_cb = false;
	if (cl->dead)
		client_free(cl);
}

static void client_new(struct control *c, int fd)
{
	struct client *cl = calloc(1, sizeof(*cl));

	if (!cl)
		goto err_close;
	cl->ctl = c;
	cl->fd = fd;
	cl->id = ++c->next_id;
	cl->events = EPOLLIN;
	if (out_append(cl, c->greeting, strlen(c->greeting)) < 0)
		goto err_free;
	if (loop_watch_add(c->loop, fd, cl->events, on_client, cl,
			   &cl->watch) < 0)
		goto err_free;
	cl->next = c->clients;
	c->clients = cl;
	c->nclients++;
	log_debug(WHO, "client %u: connected (%u clients)", cl->id, c->nclients);
	client_kick(cl);
	return;

err_free:
	client_free(cl);
err_close:
	log_err(WHO, "cannot set up a client: out of memory");
	close(fd);
}

static void on_accept_resume(void *opaque)
{
	struct control *c = opaque;

	loop_watch_mod(c->listen_watch, EPOLLIN);
}

static void on_listen(void *opaque, uint32_t events)
{
	static const char busy[] =
		"{\"error\":{\"class\":\"Busy\",\"desc\":\"too many clients"
		" (limit " "64" ")\"}}\n";
	struct control *c = opaque;

	_Static_assert(CONTROL_MAX_CLIENTS == 64, "update the busy line");
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(c->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* Out of fds or memory: the listener would stay
			 * readable and spin the loop; stop listening a while. */
			log_warn(WHO, "accept: %s; pausing %d ms",
				 strerror(errno), ACCEPT_PAUSE_MS);
			if (!c->accept_timer) {
				if (loop_timer_add(c->loop, ACCEPT_PAUSE_MS, 0,
						   on_accept_resume, c,
						   &c->accept_timer) < 0)
					return;
			} else {
				loop_timer_arm(c->accept_timer, ACCEPT_PAUSE_MS);
			}
			loop_watch_mod(c->listen_watch, 0);
			return;
		}
		if (c->nclients >= CONTROL_MAX_CLIENTS) {
			log_warn(WHO, "refusing a client: %u connected already",
				 c->nclients);
			if (send(fd, busy, sizeof(busy) - 1,
				 MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				log_debug(WHO, "busy line: %s", strerror(errno));
			close(fd);
			continue;
		}
		client_new(c, fd);
	}
}

/* ---- events ---- */

void control_event(struct control *c, const char *name, json_t *data)
{
	struct timespec ts;
	json_t *ev = json_object(), *stamp = json_object();
	char *line;
	size_t len;

	count_event(c, name);
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(stamp, "seconds", json_integer(ts.tv_sec));
	json_object_set_new(stamp, "microseconds", json_integer(ts.tv_nsec / 1000));
	json_object_set_new(ev, "event", json_string(name));
	json_object_set_new(ev, "data", data ? data : json_object());
	json_object_set_new(ev, "timestamp", stamp);
	line = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	if (!line) {
		log_err(WHO, "cannot encode event %s", name);
		return;
	}
	len = strlen(line);
	line[len++] = '\n';
	log_debug(WHO, "event %s", name);
	for (struct client *cl = c->clients, *next; cl; cl = next) {
		next = cl->next;
		if (cl->closing)
			continue;
		if (out_pending(cl) + len > CONTROL_OUT_MAX) {
			log_warn(WHO, "client %u: %zu bytes unread, disconnecting "
				 "(it does not read its events)", cl->id,
				 out_pending(cl));
			client_drop(cl);
			continue;
		}
		if (out_append(cl, line, len) < 0) {
			client_drop(cl);
			continue;
		}
		client_kick(cl);
	}
	free(line);
}

unsigned control_client_count(const struct control *c)
{
	return c->nclients;
}

/* ---- the listening socket ---- */

static int mkdir_parents(const char *path)
{
	char *dir = strdup(path);
	int rc = 0;

	if (!dir)
		return -ENOMEM;
	for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		*p = '/';
	}
	free(dir);
	return rc;
}

/* Remove a socket file nobody listens on; refuse to touch anything else. */
static int clear_stale(const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, rc;

	if (lstat(sa->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Non-blocking connect: 0 or EAGAIN (backlog full) means a live
	 * listener, ECONNREFUSED a leftover from a dead one. */
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 ? -errno : 0;
	close(fd);
	if (rc == 0 || rc == -EAGAIN)
		return -EADDRINUSE;
	if (rc != -ECONNREFUSED)
		return rc;
	log_info(WHO, "removing stale socket %s", sa->sun_path);
	if (unlink(sa->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int check_table(const struct control_cmd *cmds)
{
	for (const struct control_cmd *a = cmds; a && a->name; a++) {
		if (!a->fn || !a->name[0])
			return -EINVAL;
		if (cmd_find(builtins, a->name))
			return -EEXIST;
		for (const struct control_cmd *b = cmds; b < a; b++) {
			if (strcmp(a->name, b->name) == 0)
				return -EEXIST;
		}
	}
	return 0;
}

static char *make_greeting(void)
{
	json_t *g = json_pack("{s:{s:s, s:[s]}}", "ebb", "version",
			      CONTROL_VERSION, "capabilities", "events");
	char *s = g ? json_dumps(g, JSON_COMPACT) : NULL;
	char *line = s ? strdupf("%s\n", s) : NULL;

	free(s);
	json_decref(g);
	return line;
}

int control_open(struct loop *loop, const char *path,
		 const struct control_cmd *cmds, void *ctx,
		 struct control **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c;
	struct stat st;
	int rc;

	if (!path || !path[0])
		return -EINVAL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	rc = check_table(cmds);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->cmds = cmds;
	c->ctx = ctx;
	c->path = strdup(path);
	c->greeting = make_greeting();
	if (!c->path || !c->greeting) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = mkdir_parents(path);
	if (rc)
		goto err_free;
	rc = clear_stale(&sa);
	if (rc)
		goto err_free;
	/* The parent directory (0750 when we create it) is the real gate; the
	 * mode keeps the socket itself from being world-connectable. */
	c->listen_fd = usock_listen(path, 0660, LISTEN_BACKLOG, &st);
	if (c->listen_fd < 0) {
		rc = c->listen_fd;
		goto err_free;
	}
	c->dev = st.st_dev;
	c->ino = st.st_ino;
	rc = loop_watch_add(loop, c->listen_fd, EPOLLIN, on_listen, c,
			    &c->listen_watch);
	if (rc)
		goto err_unlink;
	log_info(WHO, "listening on %s", path);
	*out = c;
	return 0;

err_unlink:
	unlink(path);
	close(c->listen_fd);
err_free:
	free(c->greeting);
	free(c->path);
	free(c);
	return rc;
}

void control_close(struct control *c)
{
	struct stat st;

	if (!c)
		return;
	while (c->clients)
		client_drop(c->clients);
	loop_timer_del(c->accept_timer);
	loop_watch_del(c->listen_watch);
	close(c->listen_fd);
	/* Only unlink our own file: a successor may have replaced it. */
	if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
		unlink(c->path);
	free(c->greeting);
	free(c->path);
	free(c);
}
