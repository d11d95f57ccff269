/*
 * guest: one UML guest launched and served by ebbd (API, states and their
 * diagram in guest.h): its launch as named steps with one undo, its state
 * machine, its process, console and devices.
 */
#include "guest.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/virtio_ids.h>

#include "fdhold.h"
#include "hugeblocks.h"
#include "hugeram.h"
#include "log.h"
#include "vhost_user.h"

#define GUEST_TICK_MS	500	/* residency refresh and boot watch period */
#define SMAPS_IDLE_EVERY 10	/* see guest_refresh_resident */

struct guest;

/* blk_events.failed has only the device's opaque: one per disk. */
struct disk_ref {
	struct guest *g;
	unsigned i;
};

struct guest {
	const struct guest_env *env;
	const struct guest_events *ev;
	void *opaque;
	char name[GUEST_NAME_MAX];
	char dir[256];		/* <run_dir>/<name> */
	char balloon_sock[300];
	char log_path[300];
	uint64_t mem_bytes;
	enum guest_state state;
	pid_t pid;		/* UML kernel process, session leader */
	int pidfd;		/* readable once the process exits */
	struct loop_watch *pid_w;
	int console_fd;		/* write end of the guest's stdin, -1 closed */
	int exit_status;
	uint64_t resident_bytes;
	bool external;		/* no process of ours */
	struct balloon *balloon;
	struct ebbdev *ebb;	/* NULL: page_states off */
	char ebb_sock[300];
	struct blk *disks[GUEST_MAX_DISKS];	/* NULL once stopped */
	struct disk_ref disk_refs[GUEST_MAX_DISKS];
	char disk_role[GUEST_MAX_DISKS][GUEST_ROLE_MAX];
	char disk_sock[GUEST_MAX_DISKS][300];
	unsigned ndisks;
	struct loop_timer *tick;	/* residency + boot watch */
	struct loop_timer *kill_timer;	/* grace period after a stop */
	char ram_dir[300];	/* <dir>/ram: its huge-page tmpfs */
	bool ram_mounted;	/* ram_dir is mounted (ours to detach) */
	uint64_t huge_mapped_bytes;	/* tick: smaps ShmemPmdMapped */
	uint64_t intact_blocks, shattered_blocks;	/* last block scan */
	uint64_t scan_ms;	/* when they were taken (loop_now_ms), */
	uint64_t scan_resident;	/* at these resident bytes */
	unsigned smaps_idle;	/* coverage reads while it was 0 */
};

static const char *const state_names[] = {
	[GUEST_STARTING] = "starting",
	[GUEST_RUNNING] = "running",
	[GUEST_STOPPING] = "stopping",
	[GUEST_STOPPED] = "stopped",
	[GUEST_FAILED] = "failed",
};

const char *guest_state_name(enum guest_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ?
	       state_names[s] : "?";
}

bool guest_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= GUEST_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			return false;
	}
	return true;
}

bool guest_mem_valid(uint64_t bytes)
{
	return bytes >= (32ull << 20) && bytes % (1ull << 20) == 0;
}

/* A stopped guest's block devices go at once: their backends hold host
 * memory (tmem pages) and files that belong to no one any more. */
static void free_disks(struct guest *g)
{
	for (unsigned i = 0; i < g->ndisks; i++) {
		blk_free(g->disks[i]);
		g->disks[i] = NULL;
	}
}

/*
 * The guest's state machine (drawn in guest.h): allowed[from][to] lists
 * every move, and guest_set_state() is the only place the state changes,
 * so no event is missed.  Staying in a state is not a move (a second stop
 * of a stopping guest changes nothing); stopped and failed are final.
 */
static const bool allowed[GUEST_NSTATES][GUEST_NSTATES] = {
	[GUEST_STARTING] = {
		[GUEST_RUNNING] = true,		/* a driver is ready */
		[GUEST_STOPPING] = true,	/* stop asked */
		[GUEST_FAILED] = true,		/* process died first */
	},
	[GUEST_RUNNING] = {
		[GUEST_STOPPING] = true,	/* stop asked */
		[GUEST_STOPPED] = true,		/* process exited */
	},
	[GUEST_STOPPING] = {
		[GUEST_STOPPED] = true,		/* exited; external: at once */
	},
};

static void guest_set_state(struct guest *g, enum guest_state to,
			    const char *why)
{
	enum guest_state from = g->state;

	if (from == to)
		return;
	assert(allowed[from][to]);
	g->state = to;
	if (to == GUEST_STOPPED || to == GUEST_FAILED)
		free_disks(g);
	log_info(g->name, "%s -> %s (%s)", guest_state_name(from),
		 guest_state_name(to), why);
	if (g->ev && g->ev->state_changed)
		g->ev->state_changed(g->opaque, g, from);
}

static void on_balloon_reached(void *opaque, uint32_t actual_pages)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->balloon_reached)
		g->ev->balloon_reached(g->opaque, g,
				       (uint64_t)actual_pages * BALLOON_PAGE_SIZE);
}

static void on_balloon_returned(void *opaque, uint64_t bytes)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->memory_returned)
		g->ev->memory_returned(g->opaque, g);
}

static void on_balloon_failed(void *opaque, const char *why)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->device_failed)
		g->ev->device_failed(g->opaque, g, "balloon", why);
}

static void on_disk_failed(void *opaque, const char *why)
{
	const struct disk_ref *r = opaque;

	if (r->g->ev && r->g->ev->device_failed)
		r->g->ev->device_failed(r->g->opaque, r->g,
					r->g->disk_role[r->i], why);
}

static const struct blk_events disk_ev = {
	.failed = on_disk_failed,
};

static void on_balloon_mem_table(void *opaque)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->ram_ready)
		g->ev->ram_ready(g->opaque, g);
}

static void on_ebb_returned(void *opaque, uint64_t bytes)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->memory_returned)
		g->ev->memory_returned(g->opaque, g);
}

static void on_ebb_failed(void *opaque, const char *why)
{
	struct guest *g = opaque;

	if (g->ev && g->ev->device_failed)
		g->ev->device_failed(g->opaque, g, "ebb", why);
}

static const struct ebbdev_events ebb_ev = {
	.returned = on_ebb_returned,
	.failed = on_ebb_failed,
};

static const struct balloon_events balloon_ev = {
	.target_reached = on_balloon_reached,
	.returned = on_balloon_returned,
	.mem_table = on_balloon_mem_table,
	.failed = on_balloon_failed,
};

/* Intact and shattered 2 MiB blocks of the RAM file: a scan per extent,
 * as cheap as the residency measurement it goes with. */
static void refresh_blocks(struct guest *g)
{
	const struct guestmem_region *r =
		guestmem_largest(vu_dev_mem(balloon_vu(g->balloon)));

	if (r)
		hugeblocks_scan_file(r->fd, r->mmap_offset + r->size,
				     &g->intact_blocks, &g->shattered_blocks);
}

/* Every device gets the guest's memory table; the balloon's is the usual
 * source.  A VMM without a vhost-user balloon (QEMU has none) connects
 * only disks, whose tables map the same RAM file. */
int guest_refresh_resident(struct guest *g, uint64_t *out)
{
	uint64_t r, now;
	int rc = balloon_resident_bytes(g->balloon, &r);

	for (unsigned i = 0; rc == -ENOTCONN && i < g->ndisks; i++) {
		const struct guestmem *gm;

		if (!g->disks[i])
			continue;
		gm = vu_dev_mem(blk_vu(g->disks[i]));
		if (gm->nregions)
			rc = guestmem_resident_bytes(gm, &r);
	}
	if (rc == 0)
		g->resident_bytes = r;
	/*
	 * The block scan and the huge coverage (guest-list and metrics only)
	 * cost per page of RAM: the SEEK_DATA walk two syscalls per extent,
	 * tens of thousands in a swapping guest's file; smaps_rollup walks
	 * every page table of the UML process.  With 10 swapping guests they
	 * were a third of ebbd's CPU.  So they are taken at most once per
	 * half tick (this runs on the guest's tick and on ebbd's accounting
	 * tick, both GUEST_TICK_MS), and the coverage, while it reads 0 for
	 * a guest whose RAM is not on a huge tmpfs of its own (usually: the
	 * host gives that RAM no huge pages), one time in SMAPS_IDLE_EVERY.
	 * Both are taken again at once when the resident bytes fell since
	 * (memory went back): from before, they could read above them (a
	 * coverage of 0 cannot).
	 */
	now = loop_now_ms();
	if (g->scan_ms && now - g->scan_ms < GUEST_TICK_MS / 2 &&
	    g->resident_bytes >= g->scan_resident)
		goto out;
	g->scan_ms = now;
	g->scan_resident = g->resident_bytes;
	refresh_blocks(g);
	if (g->pid > 0 && g->pidfd >= 0 &&
	    (g->ram_mounted || g->huge_mapped_bytes ||
	     g->smaps_idle++ % SMAPS_IDLE_EVERY == 0))
		hugeram_pmd_mapped_bytes(g->pid, &g->huge_mapped_bytes);
out:
	if (out)
		*out = g->resident_bytes;
	return rc;
}

void guest_seed_resident(struct guest *g, uint64_t bytes)
{
	if (!g->resident_bytes)
		g->resident_bytes = bytes;
}

/* A guest runs once its balloon driver is up; another VMM's guest may
 * have no balloon (QEMU has no vhost-user one), so any driver will do. */
static bool driver_ready(struct guest *g)
{
	struct balloon_info bi;
	struct blk_info di;

	balloon_get_info(g->balloon, &bi);
	if (bi.ready || !g->external)
		return bi.ready;
	for (unsigned i = 0; i < g->ndisks; i++) {
		if (!g->disks[i])
			continue;
		blk_get_info(g->disks[i], &di);
		if (di.ready)
			return true;
	}
	return false;
}

static void on_tick(void *opaque)
{
	struct guest *g = opaque;

	guest_refresh_resident(g, NULL);
	if (g->state == GUEST_STARTING && driver_ready(g))
		guest_set_state(g, GUEST_RUNNING, "a driver is ready");
}

static void unmount_ram(struct guest *g)
{
	int rc;

	if (!g->ram_mounted)
		return;
	g->ram_mounted = false;
	rc = hugeram_umount(g->ram_dir);
	if (rc < 0)
		log_warn(g->name, "cannot unmount %s: %s", g->ram_dir,
			 strerror(-rc));
}

static void close_console(struct guest *g)
{
	if (g->console_fd >= 0)
		close(g->console_fd);
	g->console_fd = -1;
}

static void on_exit_fd(void *opaque, uint32_t events)
{
	struct guest *g = opaque;
	int status = 0;
	pid_t r = waitpid(g->pid, &status, WNOHANG);

	if (r == 0)
		return;		/* spurious */
	/* A guest adopted after a crash is not our child (after an upgrade
	 * it still is: the pid stayed): the pidfd says it exited, and there
	 * is no wait status to read. */
	if (r < 0)
		status = 0;
	/* The kernel process is gone; its helper processes share its
	 * process group and must not outlive it. */
	kill(-g->pid, SIGKILL);
	loop_watch_del(g->pid_w);
	g->pid_w = NULL;
	close(g->pidfd);
	g->pidfd = -1;
	loop_timer_del(g->kill_timer);
	g->kill_timer = NULL;
	loop_timer_del(g->tick);
	g->tick = NULL;
	close_console(g);
	unmount_ram(g);
	g->exit_status = status;
	if (r < 0)
		log_info(g->name, "UML exited (not our child: status unknown)");
	else
		log_info(g->name, "UML exited (%s %d)",
			 WIFEXITED(status) ? "status" : "signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) :
					     WTERMSIG(status));
	/* A guest nobody asked to stop that died before it came up failed. */
	if (g->state == GUEST_STARTING)
		guest_set_state(g, GUEST_FAILED, "process exited before it came up");
	else
		guest_set_state(g, GUEST_STOPPED, "process exited");
}

static void on_kill_timer(void *opaque)
{
	struct guest *g = opaque;

	g->kill_timer = NULL;
	if (g->pid > 0 && g->pidfd >= 0) {
		log_warn(g->name, "did not power off in time; killing");
		kill(-g->pid, SIGKILL);
	}
}

static int mkdir_p(const char *path)
{
	char tmp[256];
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The fd the guest keeps its own console write end on (see exec_uml). */
#define CONSOLE_KEEPER_FD 3

/*
 * Child side of the fork: only async-signal-safe calls until exec.
 *
 * The guest must outlive ebbd (issue 15), so nothing ebbd holds may end it
 * when ebbd dies:
 * - its own session and process group (setsid), so no signal meant for
 *   ebbd's group reaches it, and no parent-death signal (none is set);
 * - its console: UML hangs its tty up when console input reaches end of
 *   file, and the guest agent powers off on that.  ebbd's write end closes
 *   when ebbd dies, so the guest keeps a write end of its own pipe
 *   (CONSOLE_KEEPER_FD, without close-on-exec): the pipe never reaches end
 *   of file, and a restarted ebbd can reopen it through
 *   /proc/PID/fd/CONSOLE_KEEPER_FD.  Stopping therefore asks in words
 *   (guest_stop) and kills after the grace period.
 */
static void exec_uml(const struct guest *g, char *const argv[], int stdin_fd,
		     int log_fd, int keeper_fd, const char *cgroup_procs)
{
	setsid();
	/* Join the guest's own memory cgroup before exec, so every page
	 * UML touches from its first on is charged there (the policy's
	 * host-swap rung reclaims from it).  A failure leaves the guest in
	 * ebbd's cgroup: it runs, only that rung cannot pick it. */
	if (cgroup_procs) {
		int fd = open(cgroup_procs, O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (write(fd, "0", 1) < 0) {
				/* nothing to do in the child */
			}
			close(fd);
		}
	}
	/* Without address randomisation every boot of the same guest has
	 * the same layout and the same footprint (ASLR varies UML's usable
	 * memory and its boot footprint by up to 18 MiB). */
	personality(ADDR_NO_RANDOMIZE);
	dup2(stdin_fd, 0);
	dup2(log_fd, 1);
	dup2(log_fd, 2);
	/* After 0-2: any of the fds above may itself have been fd 3. */
	if (keeper_fd == CONSOLE_KEEPER_FD)
		fcntl(keeper_fd, F_SETFD, 0);
	else
		dup2(keeper_fd, CONSOLE_KEEPER_FD);
	/* Default signal dispositions and mask for the guest. */
	execv(argv[0], argv);
	_exit(127);
}

/* ---- launching: named steps with one undo ------------------------------ */

#define MAX_ARGS	64
#define ARG_BYTES	4096	/* storage for the formatted arguments */

/* The UML command line under construction; every append checks its room. */
struct uml_argv {
	char *argv[MAX_ARGS];
	unsigned argc;
	char buf[ARG_BYTES];	/* formatted arguments live here */
	size_t used;		/* bytes of buf taken */
	char *extra;		/* copy of cfg->cmdline its words point into */
};

static int argv_add(struct uml_argv *a, const char *arg)
{
	/* One slot stays for the terminating NULL. */
	if (a->argc >= MAX_ARGS - 1)
		return -E2BIG;
	a->argv[a->argc++] = (char *)arg;
	return 0;
}

static int argv_addf(struct uml_argv *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int argv_addf(struct uml_argv *a, const char *fmt, ...)
{
	size_t room = sizeof(a->buf) - a->used;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(a->buf + a->used, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room)
		return -E2BIG;
	a->used += (size_t)n + 1;
	return argv_add(a, a->buf + a->used - (size_t)n - 1);
}

/* guest_start's working state, handed from step to step. */
struct launch {
	const struct guest_env *env;
	const struct guest_config *cfg;
	const struct guest_events *ev;
	void *opaque;
	struct guest *g;	/* from START_ALLOC */
	unsigned ndone;		/* disks whose device took their backend */
	struct uml_argv av;	/* from START_ARGV */
	int pipe_rd, pipe_wr;	/* console pipe, until the spawn takes it */
	int log_fd;		/* console log, until the spawn takes it */
	bool adopting;		/* guest_adopt: sessions come from records */
};

/* The steps, in order.  An external guest skips ARGV, CONSOLE and SPAWN. */
enum start_step {
	START_NOTHING,		/* only the backends are ours to destroy */
	START_ALLOC,		/* struct guest allocated */
	START_DIRS,		/* run and log directories exist */
	START_DEVICES,		/* balloon and disks listen */
	START_RAM,		/* huge-page RAM tmpfs mounted, if asked */
	START_ARGV,		/* command line built */
	START_CONSOLE,		/* console pipe and log file open */
	START_SPAWN,		/* UML process running */
	START_WATCH,		/* exit and tick watched: done */
};

static int check_config(struct launch *l)
{
	const struct guest_config *cfg = l->cfg;

	if (!guest_name_valid(cfg->name) || cfg->ndisks > GUEST_MAX_DISKS ||
	    !guest_mem_valid(cfg->mem_bytes))
		return -EINVAL;
	return 0;
}

static int alloc_guest(struct launch *l)
{
	const struct guest_config *cfg = l->cfg;
	struct guest *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	g->env = l->env;
	g->ev = l->ev;
	g->opaque = l->opaque;
	g->pidfd = -1;
	g->console_fd = -1;
	g->mem_bytes = cfg->mem_bytes;
	g->state = GUEST_STARTING;
	g->external = cfg->external;
	snprintf(g->name, sizeof(g->name), "%s", cfg->name);
	snprintf(g->dir, sizeof(g->dir), "%s/%s", l->env->run_dir, cfg->name);
	snprintf(g->balloon_sock, sizeof(g->balloon_sock), "%s/balloon.sock",
		 g->dir);
	snprintf(g->ebb_sock, sizeof(g->ebb_sock), "%s/ebb.sock", g->dir);
	snprintf(g->log_path, sizeof(g->log_path), "%s/%s.log",
		 l->env->log_dir, cfg->name);
	l->g = g;
	return 0;
}

static int make_dirs(struct launch *l)
{
	int rc = mkdir_p(l->g->dir);

	return rc < 0 ? rc : mkdir_p(l->env->log_dir);
}

/*
 * A device's session fd arrived or went (vu_dev_set_fd_hook): hold it as
 * "guest/<guest>/<device>/<kind>" so that it outlives ebbd (fdhold.h),
 * or drop it.  A failure costs the guest only its survival of a crash.
 */
static void on_dev_fd(void *opaque, const struct vu_dev *dev, const char *kind,
		      int fd)
{
	struct guest *g = opaque;
	char name[HOLD_NAME_MAX];
	int rc;

	if (!g->env->hold)
		return;
	snprintf(name, sizeof(name), "guest/%s/%s", vu_dev_name(dev), kind);
	rc = fd >= 0 ? fdhold_put(g->env->hold, name, fd) :
		       fdhold_drop(g->env->hold, name);
	if (rc < 0 && !(fd < 0 && rc == -ENOENT))
		log_warn(g->name, "cannot %s %s in %s: %s",
			 fd >= 0 ? "hold" : "drop", name,
			 fdhold_describe(g->env->hold), strerror(-rc));
	else if (fd >= 0 && !strcmp(kind, "conn"))
		log_info(g->name, "holding %s in %s", name,
			 fdhold_describe(g->env->hold));
}

/* Every device of the guest, for the loops over all of them. */
static unsigned guest_devs(struct guest *g, struct vu_dev **v)
{
	unsigned n = 0;

	if (g->balloon)
		v[n++] = balloon_vu(g->balloon);
	if (g->ebb)
		v[n++] = ebbdev_vu(g->ebb);
	for (unsigned i = 0; i < g->ndisks; i++)
		if (g->disks[i])
			v[n++] = blk_vu(g->disks[i]);
	return n;
}

static void hold_device_fds(struct guest *g)
{
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	unsigned n = guest_devs(g, v);

	for (unsigned i = 0; i < n; i++)
		vu_dev_set_fd_hook(v[i], on_dev_fd, g);
}

void guest_hold_again(struct guest *g)
{
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	unsigned n = guest_devs(g, v);

	for (unsigned i = 0; i < n; i++)
		vu_dev_report_fds(v[i]);
}

/* Record each device's session in a memfd held with its fds, so that a
 * restarted ebbd can adopt it (vsession.h).  A failure costs the guest
 * only its survival of a crash. */
static void keep_sessions(struct guest *g)
{
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	unsigned n = guest_devs(g, v);

	for (unsigned i = 0; i < n; i++) {
		int rc = vu_dev_keep_session(v[i]);

		if (rc < 0)
			log_warn(g->name, "cannot record %s's session: %s",
				 vu_dev_name(v[i]), strerror(-rc));
	}
}

/* The balloon, then one blk device per disk.  On failure this step takes
 * back its own devices; the backends no device took stay for undo. */
static int open_devices(struct launch *l)
{
	struct guest *g = l->g;
	char bname[GUEST_NAME_MAX + 16];
	int rc;

	snprintf(bname, sizeof(bname), "%s/balloon", g->name);
	rc = balloon_new(l->env->loop, g->balloon_sock, bname,
			 !l->cfg->no_reporting, &balloon_ev, g, &g->balloon);
	if (rc < 0)
		return rc;
	/* The guest's running state never waits for the ebb device: a
	 * kernel without its driver leaves it unbound (driver_ready looks
	 * at the balloon and disks only). */
	if (l->cfg->page_states) {
		snprintf(bname, sizeof(bname), "%s/ebb", g->name);
		rc = ebbdev_new(l->env->loop, g->ebb_sock, bname, &ebb_ev, g,
				&g->ebb);
		if (rc < 0) {
			balloon_free(g->balloon);
			g->balloon = NULL;
			return rc;
		}
	}
	for (; l->ndone < l->cfg->ndisks; l->ndone++) {
		const struct guest_disk *dk = &l->cfg->disks[l->ndone];
		unsigned i = l->ndone;
		char dname[GUEST_NAME_MAX + GUEST_ROLE_MAX + 1];

		snprintf(g->disk_role[i], GUEST_ROLE_MAX, "%s", dk->role);
		snprintf(g->disk_sock[i], sizeof(g->disk_sock[i]), "%s/%s.sock",
			 g->dir, dk->role);
		snprintf(dname, sizeof(dname), "%s/%s", g->name, dk->role);
		g->disk_refs[i] = (struct disk_ref){ g, i };
		rc = blk_new(l->env->loop, g->disk_sock[i], dname, &dk->back,
			     &dk->params, &disk_ev, &g->disk_refs[i],
			     &g->disks[i]);
		if (rc < 0) {
			free_disks(g);
			ebbdev_free(g->ebb);
			g->ebb = NULL;
			balloon_free(g->balloon);
			g->balloon = NULL;
			return rc;
		}
		g->ndisks = i + 1;
	}
	hold_device_fds(g);
	if (g->env->hold && !l->adopting)
		keep_sessions(g);
	return 0;
}

/* --ram-hugepages: the guest's own huge-page tmpfs for its RAM file, and
 * a balloon that keeps its blocks whole. */
static int mount_ram(struct launch *l)
{
	struct guest *g = l->g;
	int rc;

	if (!l->env->ram_hugepages)
		return 0;
	snprintf(g->ram_dir, sizeof(g->ram_dir), "%s/ram", g->dir);
	rc = hugeram_mount(g->ram_dir, l->cfg->mem_bytes);
	if (rc < 0) {
		log_err(g->name, "cannot mount a huge-page tmpfs at %s: %s",
			  g->ram_dir, strerror(-rc));
		return rc;
	}
	g->ram_mounted = true;
	return l->env->keep_wait_ms ?
	       balloon_keep_blocks(g->balloon, l->env->keep_wait_ms) : 0;
}

static int build_argv(struct launch *l)
{
	const struct guest_env *env = l->env;
	struct uml_argv *a = &l->av;
	struct guest *g = l->g;
	int rc;

	if ((rc = argv_add(a, env->kernel)) ||
	    (rc = argv_addf(a, "mem=%lluM",
			    (unsigned long long)(l->cfg->mem_bytes >> 20))) ||
	    (rc = argv_addf(a, "initrd=%s", env->initrd)) ||
	    (rc = argv_add(a, "con=null")) ||
	    (rc = argv_add(a, "con0=fd:0,fd:1")) ||
	    (rc = argv_add(a, "ssl=null")) ||
	    /* Free pages are reported in 2 MiB blocks: one host huge page
	     * each. */
	    (rc = argv_add(a, "page_reporting.page_reporting_order=9")) ||
	    (rc = argv_addf(a, "virtio_uml.device=%s:%d", g->balloon_sock,
			    VIRTIO_ID_BALLOON)))
		return rc;
	for (unsigned i = 0; i < g->ndisks; i++) {
		rc = argv_addf(a, "virtio_uml.device=%s:%d", g->disk_sock[i],
			       VIRTIO_ID_BLOCK);
		if (rc)
			return rc;
	}
	/* After the disks, so their /dev/vdX names do not depend on it. */
	if (g->ebb && (rc = argv_addf(a, "virtio_uml.device=%s:%d", g->ebb_sock,
				      VIRTIO_ID_EBB)))
		return rc;
	if ((rc = argv_addf(a, "ebb.name=%s", g->name)) ||
	    /* 256 legacy ptys cost 1-2 s of boot and nobody uses them. */
	    (rc = argv_add(a, "pty.legacy_count=0")) ||
	    /* UML's pid files go to the guest's run directory, not ~/.uml. */
	    (rc = argv_addf(a, "uml_dir=%s", g->dir)) ||
	    (rc = argv_add(a, "quiet")))
		return rc;
	if (l->cfg->cmdline && *l->cfg->cmdline) {
		char *save = NULL;

		a->extra = strdup(l->cfg->cmdline);
		if (!a->extra)
			return -ENOMEM;
		for (char *t = strtok_r(a->extra, " \t", &save); t;
		     t = strtok_r(NULL, " \t", &save)) {
			rc = argv_add(a, t);
			if (rc)
				return rc;
		}
	}
	a->argv[a->argc] = NULL;
	return 0;
}

/* Console: a pipe in, a log file out. */
static int open_console(struct launch *l)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	l->pipe_rd = p[0];
	l->pipe_wr = p[1];
	l->log_fd = open(l->g->log_path,
			 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	return l->log_fd < 0 ? -errno : 0;
}

/* Fork with signals blocked so the child starts clean.  The console's
 * write end becomes the guest's; the rest is closed either way. */
static int spawn(struct launch *l)
{
	struct guest *g = l->g;
	sigset_t all, old;
	pid_t pid;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		if (g->ram_mounted)
			setenv("TMPDIR", g->ram_dir, 1);
		else if (l->env->ram_dir)
			setenv("TMPDIR", l->env->ram_dir, 1);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		exec_uml(g, l->av.argv, l->pipe_rd, l->log_fd, l->pipe_wr,
			 l->cfg->cgroup_procs);
	}
	rc = -errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(l->log_fd);
	close(l->pipe_rd);
	l->log_fd = l->pipe_rd = -1;
	if (pid < 0)
		return rc;
	g->pid = pid;
	g->console_fd = l->pipe_wr;
	l->pipe_wr = -1;
	fcntl(g->console_fd, F_SETFL, O_NONBLOCK);
	free(l->av.extra);
	l->av.extra = NULL;
	return 0;
}

static int watch_process(struct launch *l)
{
	struct guest *g = l->g;

	g->pidfd = (int)syscall(SYS_pidfd_open, g->pid, 0);
	if (g->pidfd < 0 ||
	    loop_watch_add(l->env->loop, g->pidfd, EPOLLIN, on_exit_fd, g,
			   &g->pid_w) < 0 ||
	    loop_timer_add(l->env->loop, GUEST_TICK_MS, GUEST_TICK_MS, on_tick,
			   g, &g->tick) < 0)
		return -errno ? -errno : -ENOMEM;
	log_info(g->name, "started UML pid %d, %llu MiB, console log %s",
		 (int)g->pid, (unsigned long long)(l->cfg->mem_bytes >> 20),
		 g->log_path);
	return 0;
}

/* An external guest has no process: only the tick watches it come up. */
static int watch_external(struct launch *l)
{
	struct guest *g = l->g;
	int rc = loop_timer_add(l->env->loop, GUEST_TICK_MS, GUEST_TICK_MS,
				on_tick, g, &g->tick);

	if (rc < 0)
		return rc;
	log_info(g->name, "serving devices for an external VMM at %s", g->dir);
	return 0;
}

/* Take back every step up to and including @reached, newest first. */
static void start_undo(struct launch *l, enum start_step reached)
{
	struct guest *g = l->g;

	if (reached >= START_SPAWN) {
		/* The process runs but cannot be watched: it must not live
		 * on unobserved. */
		kill(-g->pid, SIGKILL);
		waitpid(g->pid, NULL, 0);
		g->pid = 0;
		loop_watch_del(g->pid_w);
		g->pid_w = NULL;
		if (g->pidfd >= 0)
			close(g->pidfd);
		g->pidfd = -1;
		close_console(g);
	}
	/* A step's own loose ends (-1 and NULL when it never got there, or
	 * when spawn() handed them over), whichever step failed. */
	if (l->pipe_rd >= 0)
		close(l->pipe_rd);
	if (l->pipe_wr >= 0)
		close(l->pipe_wr);
	if (l->log_fd >= 0)
		close(l->log_fd);
	free(l->av.extra);
	if (reached >= START_RAM)
		unmount_ram(g);
	if (reached >= START_DEVICES) {
		free_disks(g);
		ebbdev_free(g->ebb);
		balloon_free(g->balloon);
	}
	if (reached >= START_DIRS)
		rmdir(g->dir);
	if (reached >= START_ALLOC)
		free(g);
	/* The backends no device took (blk_new leaves a failed one's with
	 * us) are destroyed here, as the contract says. */
	for (unsigned i = l->ndone; i < l->cfg->ndisks && i < GUEST_MAX_DISKS; i++)
		if (l->cfg->disks[i].back.ops && l->cfg->disks[i].back.ops->destroy)
			l->cfg->disks[i].back.ops->destroy(l->cfg->disks[i].back.be);
}

int guest_start(const struct guest_env *env, const struct guest_config *cfg,
		const struct guest_events *ev, void *opaque,
		struct guest **out)
{
	enum { BOTH, UML, EXTERNAL };
	/* Each step, the step it completes, and which guests take it. */
	static const struct {
		int (*run)(struct launch *l);
		enum start_step done;
		int kind;
	} steps[] = {
		{ check_config, START_NOTHING, BOTH },
		{ alloc_guest, START_ALLOC, BOTH },
		{ make_dirs, START_DIRS, BOTH },
		{ open_devices, START_DEVICES, BOTH },
		{ mount_ram, START_RAM, UML },
		{ build_argv, START_ARGV, UML },
		{ open_console, START_CONSOLE, UML },
		{ spawn, START_SPAWN, UML },
		{ watch_process, START_WATCH, UML },
		{ watch_external, START_WATCH, EXTERNAL },
	};
	struct launch l = {
		.env = env, .cfg = cfg, .ev = ev, .opaque = opaque,
		.pipe_rd = -1, .pipe_wr = -1, .log_fd = -1,
	};
	enum start_step reached = START_NOTHING;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int rc;

		if (steps[i].kind == (cfg->external ? UML : EXTERNAL))
			continue;
		rc = steps[i].run(&l);
		if (rc < 0) {
			start_undo(&l, reached);
			return rc;
		}
		reached = steps[i].done;
	}
	*out = l.g;
	return 0;
}

/* ---- adoption by a restarted ebbd (issue 15) --------------------------- */

struct adopt_ctx {
	struct guest_adoption *a;
	const struct vu_dev *dev;
};

/* vu_fd_take for one device: its held fds are "guest/<dev name>/<kind>". */
static int take_dev_fd(void *opaque, const char *kind)
{
	struct adopt_ctx *c = opaque;
	char name[HOLD_NAME_MAX];

	snprintf(name, sizeof(name), "guest/%s/%s", vu_dev_name(c->dev), kind);
	return c->a->take(c->a->opaque, name);
}

/* Give up an adoption halfway: nothing recorded or held changes, the
 * backends stay the caller's, the process is left running. */
static void adopt_undo(struct guest *g)
{
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	unsigned n = guest_devs(g, v);

	for (unsigned i = 0; i < n; i++)
		vu_dev_abandon(v[i]);
	for (unsigned i = 0; i < g->ndisks; i++)
		blk_free_keep_backend(g->disks[i]);
	g->ndisks = 0;
	ebbdev_free(g->ebb);
	balloon_free(g->balloon);
	loop_watch_del(g->pid_w);
	loop_timer_del(g->tick);
	if (g->pidfd >= 0)
		close(g->pidfd);
	close_console(g);
	free(g);
}

int guest_adopt(const struct guest_env *env, const struct guest_config *cfg,
		struct guest_adoption *a, const struct guest_events *ev,
		void *opaque, struct guest **out)
{
	struct launch l = {
		.env = env, .cfg = cfg, .ev = ev, .opaque = opaque,
		.pipe_rd = -1, .pipe_wr = -1, .log_fd = -1, .adopting = true,
	};
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	struct guest *g;
	char path[64];
	unsigned n;
	int rc;

	a->why[0] = '\0';
	if (cfg->external) {
		snprintf(a->why, sizeof(a->why), "adopting an external VMM's "
			 "devices is not supported");
		return -ENOTSUP;
	}
	if ((rc = check_config(&l)) < 0 || (rc = alloc_guest(&l)) < 0) {
		snprintf(a->why, sizeof(a->why), "%s", strerror(-rc));
		return rc;
	}
	g = l.g;
	if ((rc = make_dirs(&l)) < 0 || (rc = open_devices(&l)) < 0) {
		snprintf(a->why, sizeof(a->why), "cannot open its devices: %s",
			 strerror(-rc));
		/* open_devices took back its own devices on failure, and
		 * left the backends no device took. */
		for (unsigned i = 0; i < g->ndisks; i++)
			blk_free_keep_backend(g->disks[i]);
		g->ndisks = 0;
		ebbdev_free(g->ebb);
		balloon_free(g->balloon);
		free(g);
		return rc;
	}
	g->pid = a->pid;
	g->pidfd = -1;
	if (env->ram_hugepages) {
		/* Still mounted: the earlier ebbd mounted it, the guest's RAM
		 * file is in it. */
		snprintf(g->ram_dir, sizeof(g->ram_dir), "%s/ram", g->dir);
		g->ram_mounted = true;
		if (env->keep_wait_ms)
			balloon_keep_blocks(g->balloon, env->keep_wait_ms);
	}
	n = guest_devs(g, v);
	for (unsigned i = 0; i < n; i++) {
		struct adopt_ctx c = { a, v[i] };
		char why[VU_WHY_MAX];
		int fd = take_dev_fd(&c, "session");

		if (fd < 0) {
			snprintf(a->why, sizeof(a->why), "%s: no session record "
				 "is held", vu_dev_name(v[i]));
			rc = -ENOENT;
			goto undo;
		}
		rc = vu_dev_adopt(v[i], fd, take_dev_fd, &c, why);
		if (rc < 0) {
			snprintf(a->why, sizeof(a->why), "%s: %s",
				 vu_dev_name(v[i]), why);
			goto undo;
		}
	}
	/* Its console: the write end the guest keeps for itself. */
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)g->pid,
		 CONSOLE_KEEPER_FD);
	g->console_fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (g->console_fd < 0) {
		rc = -errno;
		snprintf(a->why, sizeof(a->why), "cannot reopen its console "
			 "%s: %s", path, strerror(-rc));
		goto undo;
	}
	g->pidfd = (int)syscall(SYS_pidfd_open, g->pid, 0);
	if (g->pidfd < 0 ||
	    loop_watch_add(env->loop, g->pidfd, EPOLLIN, on_exit_fd, g,
			   &g->pid_w) < 0 ||
	    loop_timer_add(env->loop, GUEST_TICK_MS, GUEST_TICK_MS, on_tick,
			   g, &g->tick) < 0) {
		rc = -errno ? -errno : -ENOMEM;
		snprintf(a->why, sizeof(a->why), "cannot watch process %d: %s",
			 (int)g->pid, strerror(-rc));
		goto undo;
	}
	/* Serving starts at guest_resume: a failure above left every ring as
	 * the earlier ebbd did. */
	if (driver_ready(g))
		g->state = GUEST_RUNNING;
	log_info(g->name, "adopted UML pid %d with %u device(s)", (int)g->pid,
		 n);
	*out = g;
	return 0;
undo:
	adopt_undo(g);
	return rc;
}

void guest_resume(struct guest *g)
{
	struct vu_dev *v[2 + GUEST_MAX_DISKS];
	unsigned n = guest_devs(g, v);

	for (unsigned i = 0; i < n; i++)
		vu_dev_resume(v[i]);
}

int guest_disk_info(const struct guest *g, unsigned i, const char **role,
		    const char **sock, struct blk_info *info)
{
	if (i >= g->ndisks || !g->disks[i])
		return -ENOENT;
	*role = g->disk_role[i];
	*sock = g->disk_sock[i];
	blk_get_info(g->disks[i], info);
	return 0;
}

int guest_stop(struct guest *g, uint64_t grace_ms)
{
	if (g->state == GUEST_STOPPED || g->state == GUEST_FAILED)
		return -EINVAL;
	if (g->external) {
		loop_timer_del(g->tick);
		g->tick = NULL;
		guest_set_state(g, GUEST_STOPPING, "stop asked");
		guest_set_state(g, GUEST_STOPPED, "external: service ended");
		return 0;
	}
	guest_set_state(g, GUEST_STOPPING, "stop asked");
	/* Ask the agent in words; the guest holds a write end of its own
	 * console (exec_uml), so closing ours ends nothing, and the kill
	 * timer covers an agent busy with a command or a wedged guest. */
	if (grace_ms)
		guest_exec(g, "poweroff -f");
	close_console(g);
	if (grace_ms == 0) {
		kill(-g->pid, SIGKILL);
		return 0;
	}
	if (!g->kill_timer)
		return loop_timer_add(g->env->loop, grace_ms, 0, on_kill_timer,
				      g, &g->kill_timer);
	return 0;
}

void guest_free(struct guest *g)
{
	if (!g)
		return;
	if (g->pidfd >= 0) {
		kill(-g->pid, SIGKILL);
		waitpid(g->pid, NULL, 0);	/* ECHILD if not ours */
		loop_watch_del(g->pid_w);
		close(g->pidfd);
	}
	loop_timer_del(g->tick);
	loop_timer_del(g->kill_timer);
	close_console(g);
	free_disks(g);
	ebbdev_free(g->ebb);
	balloon_free(g->balloon);
	unmount_ram(g);
	rmdir(g->dir);
	free(g);
}

int guest_exec(struct guest *g, const char *command)
{
	size_t n = strlen(command);
	char *line;
	ssize_t w;

	if (n == 0 || strchr(command, '\n') || strchr(command, '\r'))
		return -EINVAL;
	if (g->console_fd < 0)
		return -EPIPE;
	line = malloc(n + 1);
	if (!line)
		return -ENOMEM;
	memcpy(line, command, n);
	line[n] = '\n';
	/* A line up to PIPE_BUF goes in whole or not at all. */
	w = write(g->console_fd, line, n + 1);
	free(line);
	if (w < 0)
		return errno == EAGAIN ? -EBUSY : -errno;
	return w == (ssize_t)(n + 1) ? 0 : -EIO;
}

int guest_balloon(struct guest *g, uint64_t target_bytes)
{
	uint64_t pages;

	if (target_bytes > g->mem_bytes)
		return -EINVAL;
	pages = (g->mem_bytes - target_bytes) / BALLOON_PAGE_SIZE;
	return balloon_set_target(g->balloon, (uint32_t)pages);
}

void guest_get_info(const struct guest *g, struct guest_info *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", g->name);
	out->state = g->state;
	out->pid = g->pid;
	out->exit_status = g->exit_status;
	out->mem_bytes = g->mem_bytes;
	out->resident_bytes = g->resident_bytes;
	out->ram_hugepages = g->ram_mounted;
	out->huge_mapped_bytes = g->huge_mapped_bytes;
	out->intact_blocks = g->intact_blocks;
	out->shattered_blocks = g->shattered_blocks;
	balloon_get_info(g->balloon, &out->balloon);
	out->has_ebb = g->ebb != NULL;
	if (g->ebb)
		ebbdev_get_info(g->ebb, &out->ebb);
}

int guest_discard(struct guest *g, unsigned what, unsigned how,
		  uint64_t max_pages, struct pagestate_pass *out)
{
	if (!g->ebb) {
		memset(out, 0, sizeof(*out));
		return -ENODEV;
	}
	return ebbdev_discard(g->ebb, what, how, max_pages, out);
}

int guest_evict(struct guest *g, unsigned what, uint64_t max_pages,
		struct pagestate_pass *out)
{
	if (!g->ebb) {
		memset(out, 0, sizeof(*out));
		return -ENODEV;
	}
	return ebbdev_evict(g->ebb, what, max_pages, out);
}

int guest_page_states(const struct guest *g, uint64_t counts[PS_NSTATES + 1])
{
	if (!g->ebb) {
		memset(counts, 0, sizeof(uint64_t) * (PS_NSTATES + 1));
		return -ENODEV;
	}
	return ebbdev_count(g->ebb, counts);
}

const char *guest_ebb_socket(const struct guest *g)
{
	return g->ebb ? g->ebb_sock : NULL;
}

const char *guest_name(const struct guest *g)
{
	return g->name;
}

enum guest_state guest_get_state(const struct guest *g)
{
	return g->state;
}

const char *guest_balloon_socket(const struct guest *g)
{
	return g->balloon_sock;
}

struct balloon *guest_balloon_dev(struct guest *g)
{
	return g->balloon;
}

int guest_ram_file(struct guest *g, int *fd, uint64_t *off, uint64_t *size)
{
	const struct guestmem_region *r = guestmem_largest(vu_dev_mem(balloon_vu(g->balloon)));

	if (!r)
		return -ENOTCONN;
	*fd = r->fd;
	*off = r->mmap_offset;
	*size = r->size;
	return 0;
}

int guest_hold_boot(struct guest *g, uint64_t *token)
{
	return vu_dev_hold(balloon_vu(g->balloon), token);
}

void guest_release_boot(struct guest *g, uint64_t token, int result)
{
	vu_dev_release(balloon_vu(g->balloon), token, result);
}
