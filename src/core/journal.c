/*
 * journal: structured entries for systemd's journal (API in journal.h).
 */
#include "journal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
/* The call site here says nothing about the line logged: no CODE_FILE,
 * CODE_LINE or CODE_FUNC fields. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>
#include <unistd.h>

static int active = -1;		/* -1: not decided yet */

/* JOURNAL_STREAM=<dev>:<ino> of the stream systemd connected stderr
 * to; if stderr is still that stream, the journal wants our lines
 * (a shell redirection in between means it does not). */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

bool journal_active(void)
{
	int a = __atomic_load_n(&active, __ATOMIC_RELAXED);

	if (a < 0) {
		const char *e = getenv("EBB_LOG");

		if (e && !strcmp(e, "journal"))
			a = 1;
		else if (e && !strcmp(e, "stderr"))
			a = 0;
		else
			a = stderr_is_journal();
		__atomic_store_n(&active, a, __ATOMIC_RELAXED);
	}
	return a;
}

int journal_send(int level, const char *guest, const char *message)
{
	/* log.h's levels to syslog's: error 3, warning 4, info 6, debug 7. */
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	int p = prio[level < 0 ? 0 : level > 3 ? 3 : level];

	if (guest)
		return sd_journal_send("MESSAGE=%s", message, "PRIORITY=%d", p,
				       "SYSLOG_IDENTIFIER=ebbd",
				       "EBB_GUEST=%s", guest, NULL);
	return sd_journal_send("MESSAGE=%s", message, "PRIORITY=%d", p,
			       "SYSLOG_IDENTIFIER=ebbd", NULL);
}
