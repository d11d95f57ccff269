/*
 * control_request: the control protocol's request-line parser (also the
 * fuzz target's entry point) and the argument readers command handlers
 * use; both only ever see untrusted input.  API in control.h, the
 * helpers it shares with control.c in control_int.h.
 */
#include "control_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "size.h"

char *strdupf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

/*
 * Descriptions quote untrusted bytes (command and member names, jansson's
 * "near '...'" excerpts), and every reply must be one line of valid JSON.
 * So: cap the length on a UTF-8 boundary, turn control characters into
 * spaces, and if the result still is not valid UTF-8, replace every
 * non-ASCII byte.  Idempotent.
 */
void desc_clean(char *s)
{
	size_t n = strlen(s);
	json_t *probe;

	if (n > DESC_MAX) {
		n = DESC_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
		s[n] = '\0';
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			s[i] = ' ';
	}
	probe = json_string(s);
	if (probe) {
		json_decref(probe);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] >= 0x80)
			s[i] = '?';
	}
}
/* ---- the request-line parser ---- */

static int bad_request(const char **cls, char **desc, const char *c, char *d)
{
	*cls = c;
	*desc = d;
	if (d)
		desc_clean(d);
	return d ? -EINVAL : -ENOMEM;
}

int control_request_parse(const char *line, size_t len,
			  struct control_request *req, const char **cls,
			  char **desc)
{
	json_error_t jerr;
	const char *key;
	json_t *val, *exec, *args;

	memset(req, 0, sizeof(*req));
	*cls = NULL;
	*desc = NULL;
	/* DECODE_ANY: a bare 42 is valid JSON but not a request, and gets the
	 * more useful InvalidRequest rather than ParseError. */
	req->root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
			       &jerr);
	if (!req->root)
		return bad_request(cls, desc, "ParseError",
				   strdupf("invalid JSON at byte %d: %s",
					   jerr.position, jerr.text));
	if (!json_is_object(req->root))
		return bad_request(cls, desc, "InvalidRequest",
				   strdupf("request must be a JSON object"));
	req->id = json_object_get(req->root, "id");
	json_object_foreach(req->root, key, val) {
		if (strcmp(key, "execute") && strcmp(key, "arguments") &&
		    strcmp(key, "id"))
			return bad_request(cls, desc, "InvalidRequest",
					   strdupf("unknown member '" NAME_IN_DESC
						   "' in request", key));
	}
	exec = json_object_get(req->root, "execute");
	if (!exec)
		return bad_request(cls, desc, "InvalidRequest",
				   strdupf("request has no 'execute' member"));
	if (!json_is_string(exec))
		return bad_request(cls, desc, "InvalidRequest",
				   strdupf("'execute' must be a string"));
	args = json_object_get(req->root, "arguments");
	if (args && !json_is_object(args))
		return bad_request(cls, desc, "InvalidRequest",
				   strdupf("'arguments' must be an object"));
	req->args = args ? json_incref(args) : json_object();
	if (!req->args)
		return bad_request(cls, desc, "GenericError", NULL);
	req->execute = json_string_value(exec);
	return 0;
}

void control_request_free(struct control_request *req)
{
	json_decref(req->args);
	json_decref(req->root);
	memset(req, 0, sizeof(*req));
}

/* ---- argument readers ---- */

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:	return "an object";
	case JSON_ARRAY:	return "an array";
	case JSON_STRING:	return "a string";
	case JSON_INTEGER:	return "an integer";
	case JSON_REAL:		return "a fractional number";
	case JSON_TRUE:
	case JSON_FALSE:	return "a boolean";
	case JSON_NULL:		return "null";
	}
	return "unknown";
}

/* Look up @key; 1 if present, 0 if absent and optional, -EINVAL if absent
 * and required. */
static int arg_get(json_t *args, const char *key, bool required, json_t **v,
		   char **err)
{
	*v = json_is_object(args) ? json_object_get(args, key) : NULL;
	if (*v)
		return 1;
	if (!required)
		return 0;
	*err = strdupf("missing argument '%s'", key);
	return -EINVAL;
}

static int arg_type_err(const char *key, const char *want, const json_t *v,
			char **err)
{
	*err = strdupf("argument '%s' must be %s, not %s", key, want,
		       type_name(v));
	return -EINVAL;
}

int control_arg_str(json_t *args, const char *key, bool required,
		    const char **out, char **err)
{
	json_t *v;
	int rc = arg_get(args, key, required, &v, err);

	if (rc <= 0)
		return rc;
	if (!json_is_string(v))
		return arg_type_err(key, "a string", v, err);
	*out = json_string_value(v);
	return 0;
}

int control_arg_size(json_t *args, const char *key, bool required,
		     uint64_t *out, char **err)
{
	json_t *v;
	int rc = arg_get(args, key, required, &v, err);
	uint64_t bytes;

	if (rc <= 0)
		return rc;
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0) {
			*err = strdupf("argument '%s' must not be negative", key);
			return -EINVAL;
		}
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return arg_type_err(key, "a size (bytes, or a string like \"64M\")",
				    v, err);
	rc = size_parse(json_string_value(v), &bytes);
	if (rc == -ERANGE) {
		*err = strdupf("argument '%s' is too large: '" NAME_IN_DESC "'",
			       key, json_string_value(v));
		return -EINVAL;
	}
	if (rc) {
		*err = strdupf("argument '%s' is not a size: '" NAME_IN_DESC
			       "' (use bytes or a K/M/G/T suffix)",
			       key, json_string_value(v));
		return -EINVAL;
	}
	*out = bytes;
	return 0;
}

int control_arg_uint(json_t *args, const char *key, bool required,
		     uint64_t max, uint64_t *out, char **err)
{
	json_t *v;
	int rc = arg_get(args, key, required, &v, err);

	if (rc <= 0)
		return rc;
	if (!json_is_integer(v))
		return arg_type_err(key, "an integer", v, err);
	if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
		*err = strdupf("argument '%s' must be from 0 to %llu", key,
			       (unsigned long long)max);
		return -EINVAL;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int control_arg_bool(json_t *args, const char *key, bool required,
		     bool *out, char **err)
{
	json_t *v;
	int rc = arg_get(args, key, required, &v, err);

	if (rc <= 0)
		return rc;
	if (!json_is_boolean(v))
		return arg_type_err(key, "a boolean", v, err);
	*out = json_is_true(v);
	return 0;
}
