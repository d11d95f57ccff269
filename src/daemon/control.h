/*
 * control: ebbd's control socket, a QMP-like protocol of newline-delimited
 * JSON on a unix stream socket.  docs/control.md is the wire contract; this
 * header is the contract with the daemon.
 *
 * Owns: the listening socket (and the socket file, which it unlinks on
 * close), every client connection and its input and output buffers.  The
 * command table and the handlers' context stay owned by the caller and must
 * outlive the control.
 *
 * Threading: everything runs on the loop thread.  Handlers are called
 * synchronously from the loop, one request at a time, and may call
 * control_event(): the event is queued to every client at once, so the
 * requesting client sees it before its own reply.  Handlers must not call
 * control_close().
 *
 * Bounds (hostile clients cost at most this much, and are then cut off):
 *   - a request line is at most CONTROL_LINE_MAX bytes before its '\n'; a
 *     longer one is answered with an InvalidRequest error and the connection
 *     is closed once the reply is flushed;
 *   - at most CONTROL_MAX_CLIENTS connections; one more is sent a Busy error
 *     line and closed;
 *   - a client's unsent output is bounded: above CONTROL_OUT_HIGH the server
 *     stops reading that client's requests until it reads its replies
 *     (backpressure), and an event that would push it past CONTROL_OUT_MAX
 *     disconnects the client instead (events cannot wait).
 */
#ifndef EBB_CONTROL_H
#define EBB_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define CONTROL_VERSION		"0.1.0"
#define CONTROL_DEFAULT_PATH	"/run/ebb/ebbd.sock"
#define CONTROL_LINE_MAX	(64u * 1024)	/* bytes per request, '\n' excluded */
#define CONTROL_MAX_CLIENTS	64u		/* connections at once */
#define CONTROL_OUT_HIGH	(256u * 1024)	/* unsent bytes: stop reading requests */
#define CONTROL_OUT_MAX		(1024u * 1024)	/* unsent bytes: an event disconnects */

struct loop;
struct control;

/*
 * A command handler.  @args is the request's "arguments" object, never NULL
 * ({} when absent), borrowed.  Returns 0 and sets *@ret to a new reference
 * (NULL means {}), or -errno and may set *@err to a malloc'd one-line
 * description (NULL: strerror is used).  The errno picks the error class:
 * see control_error_class().
 */
typedef int (*control_fn)(void *ctx, json_t *args, json_t **ret, char **err);

struct control_cmd {
	const char *name;	/* "guest-run"; NULL name ends the table */
	control_fn fn;		/* called with the ctx given to control_open() */
	const char *args;	/* accepted argument names, space separated
				 * ("name mem min"); others are refused with
				 * InvalidParameter.  NULL: accept anything */
	const char *help;	/* one line, reported by query-commands */
};

/*
 * Listen on @path (creating missing parent directories with mode 0750;
 * the socket is made 0660).  A stale socket file is replaced; a live one
 * (something accepts connections on it) gives -EADDRINUSE, and a path that
 * exists but is not a socket gives -EEXIST.  @cmds is terminated by an entry
 * with a NULL name; "query-commands" is built in.  Returns 0 or -errno.
 */
int control_open(struct loop *loop, const char *path,
		 const struct control_cmd *cmds, void *ctx,
		 struct control **out);
/* Disconnect every client, close and unlink the socket.  Safe on NULL. */
void control_close(struct control *c);

/* Broadcast {"event": @name, "data": @data, "timestamp": wall clock} to
 * every client.  @data is stolen; NULL sends {}. */
void control_event(struct control *c, const char *name, json_t *data);

/* How many events of each name were sent since control_open(): calls
 * @fn once per name seen, in first-seen order.  At most
 * CONTROL_EVENT_NAMES names are counted; later new names are not. */
#define CONTROL_EVENT_NAMES	32
void control_event_counts(const struct control *c,
			  void (*fn)(void *opaque, const char *name,
				     uint64_t count),
			  void *opaque);

/* Connected clients (for metrics and tests). */
unsigned control_client_count(const struct control *c);

/* The protocol's error class for a handler's -errno: "NotFound",
 * "InvalidParameter", "NoMemory", ... "GenericError" for anything else. */
const char *control_error_class(int rc);

/*
 * Typed argument readers for handlers.  Each returns 0 with *@out set, or 0
 * with *@out untouched when the argument is absent and not @required (so
 * preset the default), or -EINVAL with *@err a malloc'd message naming the
 * argument.  A handler can pass its own @err straight through:
 *	if ((rc = control_arg_str(args, "name", true, &name, err)))
 *		return rc;
 */
int control_arg_str(json_t *args, const char *key, bool required,
		    const char **out, char **err);
/* A non-negative integer of bytes, or a size string like "64M" (size.h). */
int control_arg_size(json_t *args, const char *key, bool required,
		     uint64_t *out, char **err);
int control_arg_bool(json_t *args, const char *key, bool required,
		     bool *out, char **err);
/* An integer from 0 to @max (a JSON integer; strings are refused). */
int control_arg_uint(json_t *args, const char *key, bool required,
		     uint64_t max, uint64_t *out, char **err);

/*
 * The request-line parser, exposed for the fuzz target and the unit tests;
 * the daemon does not need it.  On success returns 0 with @req filled.  On
 * failure returns -EINVAL (or -ENOMEM) with *@cls the error class
 * ("ParseError", "InvalidRequest") and *@desc a malloc'd, printable, valid
 * UTF-8 description; req->id is still set if the request carried one, so the
 * error reply can echo it.  Either way, release with control_request_free().
 */
struct control_request {
	json_t *root;		/* the parsed line; owns execute and id */
	const char *execute;	/* command name, or NULL */
	json_t *args;		/* own reference: "arguments" or a new {} */
	json_t *id;		/* borrowed from root; NULL when absent */
};

int control_request_parse(const char *line, size_t len,
			  struct control_request *req, const char **cls,
			  char **desc);
void control_request_free(struct control_request *req);

#endif
