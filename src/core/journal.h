/*
 * journal: log lines as structured journal entries when ebbd runs under
 * systemd, through libsystemd's sd_journal_send().
 *
 * Used by log.c, which decides per line: journal_active() is true when
 * stderr is the journal stream systemd gave us (JOURNAL_STREAM names
 * its device and inode, the documented test) or EBB_LOG=journal forces
 * it; otherwise lines stay on stderr.  A field per fact: PRIORITY
 * (syslog's numbers), EBB_GUEST (the guest a line is about, if any),
 * SYSLOG_IDENTIFIER=ebbd, MESSAGE.
 *
 * Kept apart from log.c because <systemd/sd-journal.h> brings
 * <syslog.h>, whose LOG_ERR/LOG_INFO macros collide with log.h's enum.
 *
 * Threading: safe from any thread (sd_journal_send is).
 */
#ifndef EBB_JOURNAL_H
#define EBB_JOURNAL_H

#include <stdbool.h>

/* Decide once (first call) whether lines go to the journal. */
bool journal_active(void);

/* Send one entry; @level is log.h's (0 error .. 3 debug), @guest may be
 * NULL.  0 or -errno (then the caller writes to stderr instead). */
int journal_send(int level, const char *guest, const char *message);

#endif
