/*
 * service: ebbd and its service manager (systemd), through libsystemd's
 * sd_notify().  Every call is a no-op when ebbd was not started by one
 * (no NOTIFY_SOCKET), so running by hand costs nothing.
 *
 *   READY=1      once, after the control socket listens (a client that
 *                connects from then on is accepted), so `systemctl start`
 *                returns when ebbctl works.
 *   STATUS=...   "N guests, X resident of Y budget, Z free", on every
 *                change of those, at most once a second.
 *   WATCHDOG=1   from a loop timer at half of WatchdogSec: the pings stop
 *                when the loop is stuck, which is what the watchdog is
 *                meant to catch.
 *   STOPPING=1   when a signal starts the shutdown.
 *
 * Threading: the loop thread only.
 */
#ifndef EBB_SERVICE_H
#define EBB_SERVICE_H

#include <stdint.h>

struct loop;
struct service;

/* Start watchdog pings if the manager asked for them (WATCHDOG_USEC).
 * 0 or -errno. */
int service_open(struct loop *loop, struct service **out);
void service_close(struct service *s);

/* READY=1 with the first status line. */
void service_ready(struct service *s, const char *status);
/* STATUS=@status, unless it is the one sent last or the last was sent
 * less than a second ago (then it is sent on the next call). */
void service_status(struct service *s, const char *status);
void service_stopping(struct service *s);

/* Watchdog period in ms (half of WatchdogSec), 0 when off. */
uint64_t service_watchdog_ms(const struct service *s);

#endif
