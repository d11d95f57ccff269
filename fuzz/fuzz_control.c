/*
 * libFuzzer target: the control socket's request-line parser
 * (control_request_parse) and the argument readers handlers use on what it
 * returns (control_arg_str/size/bool).
 *
 * Input: bytes as a client would send them.  They are split at '\n' like
 * the server does; each line of at most CONTROL_LINE_MAX bytes (a trailing
 * '\r' dropped) is parsed, and a parsed request's arguments are read with
 * every helper under the names ebbd uses.
 *
 * Oracle, beyond ASan/UBSan:
 *   - a refused line names its class (ParseError, InvalidRequest, or
 *     GenericError for out of memory) and its description is what the
 *     server may put on the wire: valid UTF-8, no control characters, at
 *     most 512 bytes;
 *   - an accepted line has a command name and an arguments object;
 *   - a helper returns 0 (and leaves its error alone) or -EINVAL with a
 *     message, and a present, well-typed argument always reads back.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "fuzz_control: check failed: %s (line %d)\n", \
			#cond, __LINE__); \
		abort(); \
	} \
} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_desc(const char *desc)
{
	json_t *probe;

	if (!desc)	/* out of memory: the server sends a fixed line */
		return;
	CHECK(strlen(desc) <= 512);
	for (const char *p = desc; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
	probe = json_string(desc);
	CHECK(probe);
	json_decref(probe);
}

static void read_args(json_t *args)
{
	static const char *const keys[] = {
		"name", "mem", "min", "target", "size", "force", "prealloc",
		"cmdline", "command", "",
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(args, keys[i]);
		const char *s = NULL;
		uint64_t n = 0;
		bool b = false;
		char *err;
		int rc;

		for (int required = 0; required <= 1; required++) {
			err = NULL;
			rc = control_arg_str(args, keys[i], required, &s, &err);
			CHECK(rc == 0 ? !err : rc == -EINVAL);
			CHECK(rc != 0 || !v || s == json_string_value(v));
			free(err);

			err = NULL;
			rc = control_arg_size(args, keys[i], required, &n, &err);
			CHECK(rc == 0 ? !err : rc == -EINVAL);
			CHECK(!(json_is_integer(v) && json_integer_value(v) >= 0) ||
			      (rc == 0 && n == (uint64_t)json_integer_value(v)));
			free(err);

			err = NULL;
			rc = control_arg_bool(args, keys[i], required, &b, &err);
			CHECK(rc == 0 ? !err : rc == -EINVAL);
			CHECK(!json_is_boolean(v) || (rc == 0 && b == json_is_true(v)));
			free(err);
		}
	}
}

static void parse_line(const char *line, size_t len)
{
	struct control_request req;
	const char *cls;
	char *desc;
	int rc;

	if (len && line[len - 1] == '\r')
		len--;
	rc = control_request_parse(line, len, &req, &cls, &desc);
	if (rc == 0) {
		CHECK(!desc && req.execute && json_is_object(req.args));
		CHECK(json_is_object(req.root));
		read_args(req.args);
		(void)control_error_class(-(int)(len % 200));
	} else {
		CHECK(rc == -EINVAL || rc == -ENOMEM);
		CHECK(cls && (!strcmp(cls, "ParseError") ||
			      !strcmp(cls, "InvalidRequest") ||
			      !strcmp(cls, "GenericError")));
		check_desc(desc);
		free(desc);
	}
	control_request_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);

		if (len <= CONTROL_LINE_MAX)
			parse_line(p, len);
		p += len + (nl ? 1 : 0);
	}
	return 0;
}
