/*
 * config: the config file through inih (API in config.h).
 *
 * inih calls the handler once per "key = value" and, when a handler
 * refuses or a line is not INI, returns the first bad line's number
 * (it goes on parsing after an error, so the handler keeps only the
 * first message and ignores everything after it).  Which of the two the
 * returned line was is known from the line the handler refused on:
 * inih reads through our reader, which counts lines, because Debian's
 * libinih is built without INI_HANDLER_LINENO.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

struct config_ctx {
	struct ebbd_options *o;
	char why[512];		/* the first refusal's reason */
	int rc;			/* the first refusal's -errno, 0 none */
	int rc_line;		/* the line it was on */
	int line;		/* lines read so far */
	int long_line;		/* the first line inih had to split, 0 none */
	int max_line;		/* inih's line buffer, for the message */
	FILE *f;		/* reading a file, or */
	const char *text;	/* the rest of a string */
};

/* inih's line reader: one line (at most @num - 1 bytes) per call. */
static char *read_line(char *str, int num, void *stream)
{
	struct config_ctx *c = stream;
	const char *nl;
	size_t n;

	if (c->f) {
		if (!fgets(str, num, c->f))
			return NULL;
	} else {
		if (!*c->text)
			return NULL;
		nl = strchr(c->text, '\n');
		n = nl ? (size_t)(nl - c->text) + 1 : strlen(c->text);
		if (n > (size_t)num - 1)
			n = (size_t)num - 1;
		memcpy(str, c->text, n);
		str[n] = '\0';
		c->text += n;
	}
	/* A line longer than inih's buffer arrives in pieces, which inih
	 * would parse as lines of their own (a path cut short, then junk):
	 * the first such line fails the file, whatever inih makes of it. */
	if (strchr(str, '\n') || (c->f ? feof(c->f) : !*c->text)) {
		c->line++;
	} else if (!c->long_line) {
		c->long_line = c->line + 1;
		c->max_line = num - 1;
	}
	return str;
}

static int on_key(void *user, const char *section, const char *name,
		  const char *value)
{
	struct config_ctx *c = user;
	const struct option_def *def;
	char why[256];
	int rc;

	if (c->rc)
		return 0;	/* after the first error, only count lines */
	c->rc_line = c->line;
	if (!section[0]) {
		snprintf(c->why, sizeof(c->why), "key '%s' outside a section "
			 "([daemon], [guests], [memory], [policy], [tmem], [metrics])",
			 name);
		c->rc = -EINVAL;
		return 0;
	}
	def = options_by_key(section, name);
	if (!def) {
		snprintf(c->why, sizeof(c->why), "unknown key '%s' in [%s]",
			 name, section);
		c->rc = -EINVAL;
		return 0;
	}
	rc = options_set(c->o, def, value, why, sizeof(why));
	if (rc) {
		if (rc == -EINVAL)
			snprintf(c->why, sizeof(c->why), "key '%s' in [%s]: %s",
				 name, section, why);
		else
			snprintf(c->why, sizeof(c->why), "key '%s' in [%s]: %s",
				 name, section, strerror(-rc));
		c->rc = rc;
		return 0;
	}
	return 1;
}

/* ini_parse*'s result into 0/-errno and @err. */
static int verdict(int line, struct config_ctx *c, const char *name,
		   char *err, size_t err_len)
{
	if (c->long_line && line >= 0) {
		snprintf(err, err_len, "%s:%d: line longer than %d bytes", name,
			 c->long_line, c->max_line);
		return -EINVAL;
	}
	if (line == 0)
		return 0;
	if (line == -1) {
		snprintf(err, err_len, "%s: %s", name, strerror(errno));
		return errno ? -errno : -EIO;
	}
	if (line < 0) {
		snprintf(err, err_len, "%s: out of memory", name);
		return -ENOMEM;
	}
	if (c->rc && c->rc_line == line) {
		snprintf(err, err_len, "%s:%d: %s", name, line, c->why);
		return c->rc == -ENOMEM ? -ENOMEM : -EINVAL;
	}
	/* A line the handler never saw: no '=', an unclosed '[', or longer
	 * than inih's line limit. */
	snprintf(err, err_len, "%s:%d: not 'key = value' or '[section]'",
		 name, line);
	return -EINVAL;
}

int config_load(const char *path, struct ebbd_options *o, char *err,
		size_t err_len)
{
	struct config_ctx c = { .o = o };
	FILE *f = fopen(path, "re");
	int line;

	if (!f) {
		int e = errno;

		snprintf(err, err_len, "%s: %s", path, strerror(e));
		return -e;
	}
	c.f = f;
	line = ini_parse_stream(read_line, &c, on_key, &c);
	fclose(f);
	return verdict(line, &c, path, err, err_len);
}

int config_load_string(const char *text, const char *name,
		       struct ebbd_options *o, char *err, size_t err_len)
{
	struct config_ctx c = { .o = o, .text = text };

	return verdict(ini_parse_stream(read_line, &c, on_key, &c), &c, name,
		       err, err_len);
}
