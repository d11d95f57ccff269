/*
 * promtext: Prometheus text format writer (API in promtext.h).
 */
#include "promtext.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void promtext_init(struct promtext *p)
{
	memset(p, 0, sizeof(*p));
}

void promtext_free(struct promtext *p)
{
	free(p->buf);
	memset(p, 0, sizeof(*p));
}

/* Room for @more bytes plus the NUL. */
static int grow(struct promtext *p, size_t more)
{
	size_t cap = p->cap ? p->cap : 4096;
	char *nb;

	if (p->err)
		return p->err;
	while (cap < p->len + more + 1)
		cap *= 2;
	if (cap == p->cap)
		return 0;
	nb = realloc(p->buf, cap);
	if (!nb) {
		p->err = -ENOMEM;
		return p->err;
	}
	p->buf = nb;
	p->cap = cap;
	return 0;
}

static void put(struct promtext *p, const char *s, size_t n)
{
	if (grow(p, n) < 0)
		return;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

static void putf(struct promtext *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void putf(struct promtext *p, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	/* Callers format names and numbers only: never near 256 bytes. */
	if (n > 0)
		put(p, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A label value, with \\, \" and \n escaped as the format requires. */
static void put_escaped(struct promtext *p, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			put(p, "\\\\", 2);
		else if (*v == '"')
			put(p, "\\\"", 2);
		else if (*v == '\n')
			put(p, "\\n", 2);
		else
			put(p, v, 1);
	}
}

void promtext_family(struct promtext *p, const char *name, const char *type,
		     const char *help)
{
	putf(p, "# HELP %s ", name);
	/* HELP text escapes only backslash and newline. */
	for (const char *h = help; *h; h++) {
		if (*h == '\\')
			put(p, "\\\\", 2);
		else if (*h == '\n')
			put(p, "\\n", 2);
		else
			put(p, h, 1);
	}
	putf(p, "\n# TYPE %s %s\n", name, type);
}

static void put_name_labels(struct promtext *p, const char *name,
			    const char *const *labels)
{
	put(p, name, strlen(name));
	if (!labels || !labels[0])
		return;
	put(p, "{", 1);
	for (unsigned i = 0; labels[i] && labels[i + 1]; i += 2) {
		if (i)
			put(p, ",", 1);
		put(p, labels[i], strlen(labels[i]));
		put(p, "=\"", 2);
		put_escaped(p, labels[i + 1]);
		put(p, "\"", 1);
	}
	put(p, "}", 1);
}

void promtext_u64(struct promtext *p, const char *name,
		  const char *const *labels, uint64_t value)
{
	put_name_labels(p, name, labels);
	putf(p, " %llu\n", (unsigned long long)value);
}

void promtext_f64(struct promtext *p, const char *name,
		  const char *const *labels, double value)
{
	put_name_labels(p, name, labels);
	putf(p, " %.17g\n", value);
}

int promtext_done(const struct promtext *p)
{
	return p->err;
}
