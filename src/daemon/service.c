/*
 * service: sd_notify() for readiness, status, watchdog and stop (API in
 * service.h).
 */
#include "service.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "loop.h"

#define STATUS_MIN_MS	1000	/* status lines at most this often */

struct service {
	struct loop_timer *watchdog;	/* pings, NULL when off */
	uint64_t watchdog_ms;		/* its period */
	char last[256];			/* the status sent last */
	uint64_t last_ms;		/* when (loop_now_ms) */
};

static void on_watchdog(void *opaque)
{
	sd_notify(0, "WATCHDOG=1");
}

int service_open(struct loop *loop, struct service **out)
{
	struct service *s = calloc(1, sizeof(*s));
	uint64_t usec = 0;
	int rc;

	if (!s)
		return -ENOMEM;
	/* > 0: the manager wants pings from this process every usec. */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec) {
		s->watchdog_ms = usec / 2000;
		if (!s->watchdog_ms)
			s->watchdog_ms = 1;
		rc = loop_timer_add(loop, s->watchdog_ms, s->watchdog_ms,
				    on_watchdog, s, &s->watchdog);
		if (rc < 0) {
			free(s);
			return rc;
		}
		log_info(NULL, "watchdog: pinging every %llu ms",
			 (unsigned long long)s->watchdog_ms);
	}
	*out = s;
	return 0;
}

void service_close(struct service *s)
{
	if (!s)
		return;
	loop_timer_del(s->watchdog);
	free(s);
}

void service_ready(struct service *s, const char *status)
{
	snprintf(s->last, sizeof(s->last), "%s", status);
	s->last_ms = loop_now_ms();
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void service_status(struct service *s, const char *status)
{
	uint64_t now = loop_now_ms();

	if (!strcmp(s->last, status) || now - s->last_ms < STATUS_MIN_MS)
		return;
	snprintf(s->last, sizeof(s->last), "%s", status);
	s->last_ms = now;
	sd_notifyf(0, "STATUS=%s", status);
}

void service_stopping(struct service *s)
{
	if (s)
		sd_notify(0, "STOPPING=1\nSTATUS=stopping every guest");
}

uint64_t service_watchdog_ms(const struct service *s)
{
	return s->watchdog_ms;
}
