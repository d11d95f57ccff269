/*
 * log: one-line diagnostics to stderr, tagged with a level and (where there
 * is one) the guest the line is about, so a daemon log of many guests reads
 * as "which guest did what".  Under systemd the same facts go to the
 * journal as fields (PRIORITY, EBB_GUEST; journal.h) instead.
 *
 * Threading: safe from any thread; each line is written with one write(2).
 */
#ifndef EBB_LOG_H
#define EBB_LOG_H

enum log_level {
	LOG_ERR,	/* something failed and was refused or torn down */
	LOG_WARN,	/* hostile or odd input, handled */
	LOG_INFO,	/* lifecycle: guest started, device ready, ... */
	LOG_DEBUG,	/* per-message detail, off unless EBB_DEBUG is set */
};

/* Lines above this level are dropped.  Default LOG_INFO; EBB_DEBUG=1 in the
 * environment raises it to LOG_DEBUG, log_set_level() sets it outright. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Write "ebb[<who>] <level>: <message>\n".  @who may be NULL. */
void log_msg(enum log_level level, const char *who, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_err(who, ...)   log_msg(LOG_ERR, who, __VA_ARGS__)
#define log_warn(who, ...)  log_msg(LOG_WARN, who, __VA_ARGS__)
#define log_info(who, ...)  log_msg(LOG_INFO, who, __VA_ARGS__)
#define log_debug(who, ...) \
	do { if (log_get_level() >= LOG_DEBUG) log_msg(LOG_DEBUG, who, __VA_ARGS__); } while (0)

#endif
