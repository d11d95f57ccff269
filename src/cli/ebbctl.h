/*
 * ebbctl.h: what ebbctl's files share (src/cli/).  ebbctl.c holds main,
 * the global options and option parsing; conn.c the connection to ebbd;
 * format.c output; each builtin-<command>.c one command, entered through
 * ebbctl_<command>(argc, argv), which returns the process exit status.
 */
#ifndef EBB_EBBCTL_H
#define EBB_EBBCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define EXIT_FAIL		1
#define EXIT_USAGE		2

/* The global options, set by main and by every command's parser. */
struct ebbctl_opts {
	const char *socket;	/* control socket path */
	bool json;		/* print raw return objects */
	int64_t timeout_ms;	/* per reply; -1 waits forever */
};
extern struct ebbctl_opts opt;

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

enum { OPT_SOCKET = 0x100, OPT_JSON, OPT_TIMEOUT, OPT_HELP };

#define GLOBAL_OPTIONS \
	{ "socket", required_argument, NULL, OPT_SOCKET }, \
	{ "json", no_argument, NULL, OPT_JSON }, \
	{ "timeout", required_argument, NULL, OPT_TIMEOUT }, \
	{ "help", no_argument, NULL, OPT_HELP }

struct table {
	size_t ncols;
	char **head;		/* ncols names */
	bool *right;		/* ncols: right-align (numbers) */
	char **cell;		/* nrows * ncols, NULL prints "-" */
	size_t nrows;
};

/* ebbctl.c */
void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the message and a pointer to 'ebbctl help'; returns EXIT_USAGE. */
int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int parse_size(const char *what, const char *s, uint64_t *out);
int parse_seconds(const char *what, const char *s, int64_t *ms);
int parse_opts(int argc, char **argv, const char *shortopts,
	       const struct option *longopts,
	       int (*each)(int c, const char *arg, void *ctx), void *ctx);
int want_args(int argc, char **argv, int n, const char *names);
int simple_opts(int argc, char **argv);

/* conn.c */
int64_t now_ms(void);
int64_t deadline_in(int64_t ms);
int conn_read_line(struct conn *cn, int64_t deadline, char **line);
void report_read_error(int rc);
int conn_read_msg(struct conn *cn, int64_t deadline, json_t **msg);
int conn_write(struct conn *cn, const char *data, size_t len);
const char *error_desc(json_t *msg);
int conn_open(struct conn *cn);
void conn_close(struct conn *cn);
int conn_call(struct conn *cn, const char *cmd, json_t *args, event_fn on_event,
	      void *ev_ctx, json_t **ret);
int call_and_print(const char *cmd, json_t *args, bool need_args,
		   void (*print)(json_t *));
int one_name_cmd(int argc, char **argv, const char *cmd,
		 void (*print)(json_t *));

/* format.c */
const char *jstr(json_t *obj, const char *key);
const char *fmt_size(json_t *v, char *buf, size_t len);
const char *fmt_value(json_t *v, char *buf, size_t len);
const char *fmt_keyed(const char *key, json_t *v, char *buf, size_t len);
int table_col(struct table *t, const char *head, bool right);
long table_row(struct table *t);
void table_set(struct table *t, long row, size_t col, const char *s);
void table_print(const struct table *t);
void table_free(struct table *t);
void kv_print(json_t *obj, const char *const *skip);
void print_json(json_t *v);

/* builtin-run.c */
int ebbctl_run(int argc, char **argv);

/* builtin-list.c */
int ebbctl_list(int argc, char **argv);

/* builtin-info.c */
int ebbctl_info(int argc, char **argv);

/* builtin-stats.c */
int ebbctl_stats(int argc, char **argv);

/* builtin-stop.c */
int ebbctl_stop(int argc, char **argv);

/* builtin-exec.c */
int ebbctl_exec(int argc, char **argv);

/* builtin-claim.c */
int ebbctl_claim(int argc, char **argv);

/* builtin-tmem.c */
int ebbctl_tmem(int argc, char **argv);

/* builtin-events.c */
int ebbctl_events(int argc, char **argv);

/* builtin-raw.c */
int ebbctl_raw(int argc, char **argv);

/* builtin-balloon.c */
int ebbctl_balloon(int argc, char **argv);

/* builtin-top.c */
int ebbctl_top(int argc, char **argv);

/* builtin-discard.c */
int ebbctl_discard(int argc, char **argv);

/* builtin-policy.c */
int ebbctl_policy(int argc, char **argv);

/* builtin-upgrade.c */
int ebbctl_upgrade(int argc, char **argv);

#endif
