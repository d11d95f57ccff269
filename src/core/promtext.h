/*
 * promtext: the Prometheus text exposition format (version 0.0.4),
 * written into a growing buffer.  Small enough to write here; the
 * library that serves it is libmicrohttpd (metrics.c).
 *
 * A family is opened with its HELP and TYPE lines, then its samples
 * follow.  Label values are escaped (backslash, quote, newline), so any
 * string a guest or an operator chose is safe in a label.  The first
 * allocation failure sticks: later calls do nothing and promtext_done()
 * reports -ENOMEM, so a scrape never serves a truncated page.
 *
 * Not thread-safe: one writer per buffer.
 */
#ifndef EBB_PROMTEXT_H
#define EBB_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

struct promtext {
	char *buf;	/* the page, NUL-terminated while err is 0 */
	size_t len;	/* bytes written, without the NUL */
	size_t cap;	/* bytes allocated */
	int err;	/* 0, or -ENOMEM after a failed growth */
};

void promtext_init(struct promtext *p);
void promtext_free(struct promtext *p);

/* "# HELP @name @help" and "# TYPE @name @type" (counter, gauge,
 * histogram). */
void promtext_family(struct promtext *p, const char *name, const char *type,
		     const char *help);

/*
 * One sample: @name{l1="v1",...} @value.  @labels is a NULL-ended list
 * of name, value pairs, or NULL for none.  The u64 form prints integers
 * exactly (byte counters exceed a double's 2^53 only past 8 PiB, but
 * exact is free).
 */
void promtext_u64(struct promtext *p, const char *name,
		  const char *const *labels, uint64_t value);
void promtext_f64(struct promtext *p, const char *name,
		  const char *const *labels, double value);

/* 0 with the page in p->buf / p->len, or -ENOMEM. */
int promtext_done(const struct promtext *p);

#endif
