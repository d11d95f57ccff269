/*
 * ebbctl's output: sizes and values as people read them, aligned tables,
 * "key: value" lists, and --json.  Declared in ebbctl.h.
 */
#include "ebbctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "size.h"

/* @obj's string member @key, or "?" when missing. */
const char *jstr(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "?";
}

/* A size in bytes for people: "512M"; "-" when missing. */
const char *fmt_size(json_t *v, char *buf, size_t len)
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
const char *fmt_value(json_t *v, char *buf, size_t len)
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
	"swap_out", "unclaimed", "over", "inflated", "oom_deflated",
	"discarded",
	"huge_mapped", "blocks_waiting", "blocks_holey", "blocks_report_split",
	"blocks_expired", NULL,
};

static bool is_size_key(const char *key)
{
	size_t n = strlen(key);

	return in_list(size_keys, key) ||
	       (n >= 5 && strcmp(key + n - 5, "bytes") == 0);
}

const char *fmt_keyed(const char *key, json_t *v, char *buf, size_t len)
{
	return is_size_key(key) ? fmt_size(v, buf, len) : fmt_value(v, buf, len);
}

/* A table of strings, printed with columns aligned. */
int table_col(struct table *t, const char *head, bool right)
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
long table_row(struct table *t)
{
	char **c = realloc(t->cell, (t->nrows + 1) * t->ncols * sizeof(*c));

	if (!c)
		return -1;
	t->cell = c;
	memset(c + t->nrows * t->ncols, 0, t->ncols * sizeof(*c));
	return (long)t->nrows++;
}

void table_set(struct table *t, long row, size_t col, const char *s)
{
	char **p = &t->cell[(size_t)row * t->ncols + col];

	free(*p);
	*p = strdup(s);
}

void table_print(const struct table *t)
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

void table_free(struct table *t)
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
void kv_print(json_t *obj, const char *const *skip)
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

void print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s)
		puts(s);
	free(s);
}
