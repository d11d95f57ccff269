/*
 * guest_run: the arguments of the control command guest-run, defined once
 * (GUEST_RUN_ARGS below).  ebbctl's `run` parser (src/cli/builtin-run.c),
 * the command's registration and ebbd's handler (src/daemon/commands.c)
 * all derive from that list: the struct that holds the values, the
 * argument names the control socket accepts, and guest_run_args[], the
 * table the parsers walk.
 */
#ifndef EBB_GUEST_RUN_H
#define EBB_GUEST_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum guest_run_kind {
	GR_STR,		/* a string */
	GR_SIZE,	/* bytes: an integer, or "512M" and the like */
	GR_BOOL,	/* true or false */
	GR_UINT,	/* a non-negative integer (at most GUEST_RUN_UINT_MAX) */
};

#define GUEST_RUN_UINT_MAX	1000000u

/*
 * One line per argument:
 *   field     its JSON name and its member of struct guest_run
 *   kind      GR_STR, GR_SIZE or GR_BOOL
 *   required  the request must carry it
 *   option    ebbctl's long option; NULL: the positional NAME
 *   flag      GR_BOOL: the value ebbctl's option sends (--no-claim sends
 *             false); the value when absent is its opposite
 *   omit0     GR_SIZE, GR_UINT: ebbctl leaves it out when zero (zero
 *             means none, or the default)
 */
#define GUEST_RUN_ARGS(X)						\
	/* field      kind     required option          flag   omit0 */	\
	X(name,       GR_STR,  true,    NULL,           true,  false)	\
	X(mem,        GR_SIZE, true,    "mem",          true,  false)	\
	X(min,        GR_SIZE, false,   "min",          true,  false)	\
	X(max,        GR_SIZE, false,   "max",          true,  true)	\
	X(shares,     GR_UINT, false,   "shares",       true,  true)	\
	X(cmdline,    GR_STR,  false,   "cmdline",      true,  false)	\
	X(external,   GR_BOOL, false,   "external",     true,  false)	\
	X(reporting,  GR_BOOL, false,   "no-reporting", false, false)	\
	X(prealloc,   GR_BOOL, false,   "prealloc",     true,  false)	\
	X(claim,      GR_BOOL, false,   "no-claim",     false, false)	\
	X(swap,       GR_SIZE, false,   "swap",         true,  true)	\
	X(swap_quota, GR_SIZE, false,   "swap-quota",   true,  true)	\
	X(disk,       GR_STR,  false,   "disk",         true,  false)	\
	X(disk_ro,    GR_BOOL, false,   "disk-ro",      true,  false)	\
	X(page_states, GR_BOOL, false,  "no-page-states", false, false)

#define GR_CTYPE_GR_STR		const char *
#define GR_CTYPE_GR_SIZE	uint64_t
#define GR_CTYPE_GR_BOOL	bool
#define GR_CTYPE_GR_UINT	uint64_t
#define GR_FIELD(field, kind, ...)	GR_CTYPE_##kind field;
#define GR_KEY(field, ...)		#field " "
#define GR_ONE(field, ...)		+ 1

/* How many arguments guest-run has. */
enum { GUEST_RUN_NARGS = 0 GUEST_RUN_ARGS(GR_ONE) };

/* The values of one guest-run request (strings point into its JSON). */
struct guest_run {
	GUEST_RUN_ARGS(GR_FIELD)
};

/* "name mem min ...": the argument names, for the command's registration. */
#define GUEST_RUN_KEYS	GUEST_RUN_ARGS(GR_KEY)

struct guest_run_arg {
	const char *key;		/* JSON name */
	enum guest_run_kind kind;
	bool required;
	const char *option;		/* ebbctl's long option, NULL: NAME */
	bool flag;			/* GR_BOOL: the value the option sets */
	bool omit_zero;			/* GR_SIZE: not sent when zero */
	size_t offset;			/* of its member of struct guest_run */
};

extern const struct guest_run_arg guest_run_args[];
extern const size_t guest_run_nargs;

/* Every argument at its value when absent. */
void guest_run_defaults(struct guest_run *r);
/* Read a request's arguments over the defaults: 0, or -EINVAL with *@err
 * a malloc'd message naming the argument (control_arg_*). */
int guest_run_parse(json_t *args, struct guest_run *r, char **err);

/* Where @a's value lives in @r. */
static inline void *guest_run_field(struct guest_run *r,
				    const struct guest_run_arg *a)
{
	return (char *)r + a->offset;
}

/* The memory a guest-run claims: --min when given, else all of --mem. */
static inline uint64_t guest_run_claim_bytes(const struct guest_run *r)
{
	return r->min ? r->min : r->mem;
}

#endif
