/*
 * libFuzzer target: ebbd's config file reader (config.c over inih, every
 * value parser in options.c).  The file is an operator's, but a parser
 * that crashes on a typo is a daemon that does not start, so any bytes
 * must give either settings or one error naming a line.
 *
 * Input: the file's text (NUL bytes included: they end the text early).
 *
 * Oracle, beyond ASan/UBSan/LeakSanitizer: the result is 0 or -EINVAL;
 * an error message starts with "f.conf:LINE: " with LINE between 1 and
 * the number of lines; the options are freed with nothing left behind.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ebbd_options o;
	char *text, err[1024];
	int rc, line, lines = 1;

	if (size > 65536)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (size_t i = 0; i < strlen(text); i++)
		lines += text[i] == '\n';
	if (options_init(&o, "/k", "/i") < 0) {
		free(text);
		return 0;
	}
	err[0] = '\0';
	rc = config_load_string(text, "f.conf", &o, err, sizeof(err));
	if (rc != 0 && rc != -EINVAL && rc != -ENOMEM)
		abort();
	if (rc == -EINVAL) {
		if (sscanf(err, "f.conf:%d: ", &line) != 1 || line < 1 ||
		    line > lines)
			abort();
	}
	options_free(&o);
	free(text);
	return 0;
}
