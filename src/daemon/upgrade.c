/*
 * upgrade: `ebbctl upgrade` and SIGHUP replace the running ebbd with the
 * ebbd binary on disk, without stopping a guest (issue 15; design in
 * docs/restart.md 2.6).  Declared in ebbd.h.
 *
 * The handover is the crash path, taken on purpose: every device's fds and
 * its session record are already held (fdhold.h, vsession.h) and every
 * guest's state record is already on disk, so ebbd only has to execve()
 * itself between two loop events, when no request is half-handled.  The
 * new image starts like any ebbd, takes the fds back from the holder and
 * adopts every guest (adopt.c).  Using one path for both means the crash
 * path is exercised by every upgrade, and an upgrade that fails before
 * serving leaves everything where a crash would: the next start adopts.
 *
 * The device pause is measured across the exec: the old image passes its
 * CLOCK_MONOTONIC time just before execve() in EBB_UPGRADE_T0 (the clock
 * is the host's, the same in both images), the new one reads it when it
 * has adopted and resumed every guest.
 *
 * Refused (with the reason) while a guest is starting (a probe's setup
 * messages carry fds that would die with the old image), while a
 * preallocation worker runs, or without an fd holder.
 */
#include "ebbd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define UPGRADE_ENV	"EBB_UPGRADE_T0"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int upgrade_check(struct ebbd *d, char **err)
{
	if (!d->hold) {
		*err = errf("upgrade needs an fd holder (--fd-hold auto, holder "
			    "or systemd): the devices' fds must outlive the "
			    "exec");
		return -ENOTSUP;
	}
	if (!d->exe_path[0] || access(d->exe_path, X_OK) < 0) {
		*err = errf("no ebbd binary to run at '%s'", d->exe_path);
		return -ENOENT;
	}
	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		struct slot *s = &d->slots[i];

		if (!s->g)
			continue;
		if (guest_get_state(s->g) == GUEST_STARTING) {
			*err = errf("guest '%s' is starting: its devices are "
				    "in setup; try again when it runs",
				    guest_name(s->g));
			return -EBUSY;
		}
		if (s->pre_state == PRE_RUNNING || s->pre_state == PRE_WAITING) {
			*err = errf("guest '%s' is being preallocated; try "
				    "again when it is done", guest_name(s->g));
			return -EBUSY;
		}
	}
	return 0;
}

static void on_upgrade_timer(void *opaque)
{
	struct ebbd *d = opaque;
	char t0[32];
	char *err = NULL;

	d->upgrade_timer = NULL;
	/* Checked again: the loop ran since the request was accepted. */
	if (upgrade_check(d, &err) < 0) {
		log_warn(NULL, "upgrade abandoned: %s", err);
		free(err);
		return;
	}
	log_info(NULL, "upgrade: executing %s (pid %d stays)", d->exe_path,
		 (int)getpid());
	snprintf(t0, sizeof(t0), "%" PRIu64, mono_ns());
	setenv(UPGRADE_ENV, t0, 1);
	/* Every fd of ours is close-on-exec; the holder keeps the devices'. */
	execv(d->exe_path, d->argv);
	log_err(NULL, "upgrade: cannot execute %s: %s; serving on",
		d->exe_path, strerror(errno));
	unsetenv(UPGRADE_ENV);
}

int upgrade_start(struct ebbd *d, char **err)
{
	int rc = upgrade_check(d, err);

	if (rc < 0)
		return rc;
	if (d->upgrade_timer)
		return 0;	/* already on its way */
	/* Not from inside the request: its reply must leave first. */
	rc = loop_timer_add(d->loop, 20, 0, on_upgrade_timer, d,
			    &d->upgrade_timer);
	if (rc < 0)
		*err = errf("cannot schedule the upgrade: %s", strerror(-rc));
	return rc;
}

void upgrade_started(struct ebbd *d)
{
	const char *t0 = getenv(UPGRADE_ENV);
	char *end;

	d->start_ns = mono_ns();
	d->restart_how = "start";
	if (!t0)
		return;
	d->upgrade_t0_ns = strtoull(t0, &end, 10);
	if (*end || !d->upgrade_t0_ns)
		d->upgrade_t0_ns = 0;
	else
		d->restart_how = "upgrade";
	/* Not for our children (guests) or a later exec of our own. */
	unsetenv(UPGRADE_ENV);
}

void upgrade_served(struct ebbd *d)
{
	d->startup_us = (mono_ns() - d->start_ns) / 1000;
	if (!d->upgrade_t0_ns)
		return;
	d->restart_pause_us = (mono_ns() - d->upgrade_t0_ns) / 1000;
	log_info(NULL, "upgrade: serving again %" PRIu64 ".%03" PRIu64 " ms "
		 "after the exec (%u guest(s) adopted, %u left)",
		 d->restart_pause_us / 1000, d->restart_pause_us % 1000,
		 d->restart_adopted, d->nfound);
}
