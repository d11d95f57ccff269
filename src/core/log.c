/*
 * log: levelled one-line diagnostics on stderr, tagged with the guest they
 * are about (API in log.h).
 */
#include "log.h"

#include "journal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int cur_level = -1;	/* -1: not yet read from the environment */

void log_set_level(enum log_level level)
{
	__atomic_store_n(&cur_level, (int)level, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
	int l = __atomic_load_n(&cur_level, __ATOMIC_RELAXED);

	if (l < 0) {
		const char *e = getenv("EBB_DEBUG");

		l = (e && *e && *e != '0') ? LOG_DEBUG : LOG_INFO;
		__atomic_store_n(&cur_level, l, __ATOMIC_RELAXED);
	}
	return (enum log_level)l;
}

void log_msg(enum log_level level, const char *who, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	struct timespec ts;
	va_list ap;
	int n, m;

	if (level > log_get_level())
		return;
	/* Under systemd: one journal entry, its fields carrying what the
	 * stderr line spells out (level, guest); stderr if that fails. */
	if (journal_active()) {
		va_start(ap, fmt);
		m = vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		if (m >= 0 && journal_send((int)level, who, line) == 0)
			return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof(line), "%5lld.%03ld ebb%s%s%s %s: ",
		     (long long)ts.tv_sec, ts.tv_nsec / 1000000,
		     who ? "[" : "", who ? who : "", who ? "]" : "",
		     names[level]);
	if (n < 0 || n >= (int)sizeof(line))
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write so concurrent lines do not interleave mid-line. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
