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
 * is the host's, the same in both images), the new one reads it when
 * every guest is adopted and again when every guest has been served once
 * (upgrade_adopted, upgrade_served).
 *
 * The pause is CPU work done while every guest waits for it, on a host
 * whose guests keep its cores busy (a swapping UML guest is a CPU hog),
 * and ebbd at its normal priority is one runnable task among them.  So
 * from the exec until every guest is served again ebbd runs at nice
 * UPGRADE_NICE (when it may: root or CAP_SYS_NICE), then goes back to its
 * own priority; a crash restart does the same for its adoption.
 *
 * The exec itself tears down the old image's memory: every guest RAM
 * mapping its devices touched and the page store's arena, up to a
 * million page-table entries with 10 swapping guests (exec to the new
 * image's first log line was 40-200 ms there, on a loaded machine).
 * None of it needs to happen before the new image runs, so a process
 * sharing the old image's memory (clone(CLONE_VM), keep_mm) holds it
 * across the exec and lets go when the exec closes its pipe: the
 * teardown runs in that process, beside the new image.  The new image
 * reaps it (upgrade_reap).
 *
 * Pages the balloon keeps waiting for the rest of their 2 MiB block
 * (hugeblocks) are punched before the exec: their list is in this image's
 * heap only.  A crash forgets them (they stay allocated until the guest
 * frees them again).
 *
 * Refused (with the reason) while a guest is starting (a probe's setup
 * messages carry fds that would die with the old image), while a
 * preallocation worker runs, or without an fd holder.
 */
#include "ebbd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define UPGRADE_ENV	"EBB_UPGRADE_T0"
#define KEEPER_ENV	"EBB_UPGRADE_KEEPER"	/* pid of keep_mm's process */
#define KEEPER_STACK	(64u << 10)
#define NICE_ENV	"EBB_UPGRADE_NICE"	/* the priority to go back to */
#define UPGRADE_NICE	(-10)

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

/*
 * keep_mm's process: close its copy of every fd but its pipe end (an
 * exiting process tears its memory down before it closes its files, and
 * the new image must be able to bind the control socket meanwhile), say
 * so, wait for the exec to close the pipe, then exit, dropping the last
 * reference to the old image's memory.  @arg: keep_mm's p[].
 */
static int keeper_main(void *arg)
{
	const int *p = arg;
	char c = 0;

	/* Keep p[0] and p[2] (above it, keep_mm sees to it). */
	if (p[0] > 3)
		close_range(3, (unsigned)p[0] - 1, 0);
	if (p[2] > p[0] + 1)
		close_range((unsigned)p[0] + 1, (unsigned)p[2] - 1, 0);
	close_range((unsigned)p[2] + 1, ~0u, 0);
	while (write(p[2], &c, 1) < 0 && errno == EINTR)
		;
	close(p[2]);
	while (read(p[0], &c, 1) < 0 && errno == EINTR)
		;
	_exit(0);
}

/* Start the process that keeps the old image's memory across the exec;
 * its pid, or -1 (then the exec tears it down itself, just slower). */
static pid_t keep_mm(void)
{
	/* Read by the child on the shared memory: {exec pipe read end, its
	 * write end (ours), ready pipe write end, its read end (ours)}. */
	static int p[4];
	int e[2], r[2];
	char *stack, c;
	pid_t pid;

	if (pipe2(e, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(r, O_CLOEXEC) < 0) {
		close(e[0]);
		close(e[1]);
		return -1;
	}
	/* The child keeps p[0] and p[2] only: put p[2] above p[0]. */
	p[0] = e[0];
	p[1] = e[1];
	p[2] = fcntl(r[1], F_DUPFD_CLOEXEC, e[0] + 1);
	p[3] = r[0];
	close(r[1]);
	/* Never freed: after the exec the memory is only the keeper's. */
	stack = p[2] < 0 ? NULL : malloc(KEEPER_STACK);
	pid = stack ? clone(keeper_main, stack + KEEPER_STACK,
			    CLONE_VM | SIGCHLD, p) : -1;
	close(p[0]);
	if (p[2] >= 0)
		close(p[2]);
	/* Its fds closed (or it died): then the exec may go on. */
	while (pid > 0 && read(p[3], &c, 1) < 0 && errno == EINTR)
		;
	close(p[3]);
	if (pid < 0) {
		close(p[1]);
		free(stack);
		return -1;
	}
	return pid;	/* p[1] closes at the exec */
}

void upgrade_reap(struct ebbd *d)
{
	if (d->keeper_pid > 0 && waitpid(d->keeper_pid, NULL, WNOHANG) != 0)
		d->keeper_pid = 0;
}

static void on_upgrade_timer(void *opaque)
{
	struct ebbd *d = opaque;
	char t0[32], nice[16], keeper[16];
	char *err = NULL;
	pid_t kpid;

	d->upgrade_timer = NULL;
	/* Checked again: the loop ran since the request was accepted. */
	if (upgrade_check(d, &err) < 0) {
		log_warn(NULL, "upgrade abandoned: %s", err);
		free(err);
		return;
	}
	/* 4 KiB pages waiting for the rest of their 2 MiB block are known
	 * only to this image (hugeblocks' bitmap): given back now, or the
	 * new one would never punch them. */
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g)
			balloon_release_waiting(guest_balloon_dev(d->slots[i].g));
	log_info(NULL, "upgrade: executing %s (pid %d stays)", d->exe_path,
		 (int)getpid());
	snprintf(nice, sizeof(nice), "%d", d->nice);
	setenv(NICE_ENV, nice, 1);
	kpid = keep_mm();
	snprintf(keeper, sizeof(keeper), "%d", (int)kpid);
	setenv(KEEPER_ENV, keeper, 1);
	/* The exec tears down every guest RAM mapping: already urgent. */
	setpriority(PRIO_PROCESS, 0, UPGRADE_NICE);
	snprintf(t0, sizeof(t0), "%" PRIu64, mono_ns());
	setenv(UPGRADE_ENV, t0, 1);
	/* Every fd of ours is close-on-exec; the holder keeps the devices'. */
	execv(d->exe_path, d->argv);
	log_err(NULL, "upgrade: cannot execute %s: %s; serving on",
		d->exe_path, strerror(errno));
	setpriority(PRIO_PROCESS, 0, d->nice);
	unsetenv(UPGRADE_ENV);
	unsetenv(NICE_ENV);
	unsetenv(KEEPER_ENV);
	if (kpid > 0) {
		d->keeper_pid = kpid;	/* its pipe is ours: close it */
		kill(kpid, SIGKILL);
		upgrade_reap(d);
	}
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
	const char *t0 = getenv(UPGRADE_ENV), *nice = getenv(NICE_ENV);
	const char *keeper = getenv(KEEPER_ENV);
	char *end;

	d->start_ns = mono_ns();
	d->restart_how = "start";
	errno = 0;
	d->nice = getpriority(PRIO_PROCESS, 0);
	if (errno)
		d->nice = 0;
	if (nice) {
		long v = strtol(nice, &end, 10);

		if (!*end && v >= -20 && v <= 19)
			d->nice = (int)v;
		unsetenv(NICE_ENV);
	}
	if (keeper) {
		long v = strtol(keeper, &end, 10);

		if (!*end && v > 0)
			d->keeper_pid = (pid_t)v;
		unsetenv(KEEPER_ENV);
	}
	/* Until every guest is served again (upgrade_served). */
	if (d->nice > UPGRADE_NICE)
		setpriority(PRIO_PROCESS, 0, UPGRADE_NICE);
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

/*
 * Two ends of the pause.  "Adopted": every guest's devices are watched
 * again, so any request from now on is served as usual; this is the
 * device pause (pause_us).  "Served": each adopted guest has also had
 * its left-over requests answered and one pass over its rings, one guest
 * after the other (served_us); a request that waited in a ring during
 * the pause completes by then.
 */
void upgrade_adopted(struct ebbd *d)
{
	d->adopted_ns = mono_ns();
}

void upgrade_served(struct ebbd *d)
{
	uint64_t now = mono_ns();

	d->startup_us = (now - d->start_ns) / 1000;
	setpriority(PRIO_PROCESS, 0, d->nice);
	if (!d->upgrade_t0_ns)
		return;
	if (!d->adopted_ns)
		d->adopted_ns = now;
	d->restart_pause_us = (d->adopted_ns - d->upgrade_t0_ns) / 1000;
	d->restart_served_us = (now - d->upgrade_t0_ns) / 1000;
	log_info(NULL, "upgrade: every guest adopted %" PRIu64 ".%03" PRIu64
		 " ms after the exec, served %" PRIu64 ".%03" PRIu64 " ms "
		 "after (%u guest(s) adopted, %u left)",
		 d->restart_pause_us / 1000, d->restart_pause_us % 1000,
		 d->restart_served_us / 1000, d->restart_served_us % 1000,
		 d->restart_adopted, d->nfound);
}
