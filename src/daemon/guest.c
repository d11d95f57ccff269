#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "vhost_user.h"

#define GUEST_TICK_MS	500	/* residency refresh and boot watch period */
#define UML_VIRTIO_BALLOON 5	/* virtio device id, virtio_ids.h */
#define UML_VIRTIO_BLOCK 2	/* virtio device id, virtio_ids.h */

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
	struct blk *disks[GUEST_MAX_DISKS];	/* NULL once stopped */
	struct disk_ref disk_refs[GUEST_MAX_DISKS];
	char disk_role[GUEST_MAX_DISKS][GUEST_ROLE_MAX];
	char disk_sock[GUEST_MAX_DISKS][300];
	unsigned ndisks;
	struct loop_timer *tick;	/* residency + boot watch */
	struct loop_timer *kill_timer;	/* grace period after a stop */
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

/* A stopped guest's block devices go at once: their backends hold host
 * memory (tmem pages) and files that belong to no one any more. */
static void free_disks(struct guest *g)
{
	for (unsigned i = 0; i < g->ndisks; i++) {
		blk_free(g->disks[i]);
		g->disks[i] = NULL;
	}
}

/* Every state change goes through here, so events cannot be missed. */
static void set_state(struct guest *g, enum guest_state to)
{
	enum guest_state from = g->state;

	if (from == to)
		return;
	/* stopped and failed are final. */
	if (from == GUEST_STOPPED || from == GUEST_FAILED)
		return;
	g->state = to;
	if (to == GUEST_STOPPED || to == GUEST_FAILED)
		free_disks(g);
	log_info(g->name, "%s -> %s", guest_state_name(from),
		 guest_state_name(to));
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

static const struct balloon_events balloon_ev = {
	.target_reached = on_balloon_reached,
	.returned = on_balloon_returned,
	.mem_table = on_balloon_mem_table,
	.failed = on_balloon_failed,
};

/* Every device gets the guest's memory table; the balloon's is the usual
 * source.  A VMM without a vhost-user balloon (QEMU has none) connects
 * only disks, whose tables map the same RAM file. */
int guest_refresh_resident(struct guest *g, uint64_t *out)
{
	uint64_t r;
	int rc = balloon_resident_bytes(g->balloon, &r);

	for (unsigned i = 0; rc == -ENOTCONN && i < g->ndisks; i++) {
		const struct guestmem *gm;

		if (!g->disks[i])
			continue;
		gm = vu_dev_mem(blk_vu(g->disks[i]));
		if (gm->nregions)
			rc = gm_resident_bytes(gm, &r);
	}
	if (rc == 0)
		g->resident_bytes = r;
	if (out)
		*out = g->resident_bytes;
	return rc;
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
		set_state(g, GUEST_RUNNING);
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
	g->exit_status = status;
	log_info(g->name, "UML exited (%s %d)",
		 WIFEXITED(status) ? "status" : "signal",
		 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	/* A guest nobody asked to stop that died before it came up failed. */
	set_state(g, g->state == GUEST_STARTING ? GUEST_FAILED : GUEST_STOPPED);
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

/* Child side of the fork: only async-signal-safe calls until exec. */
static void exec_uml(const struct guest *g, char *const argv[], int stdin_fd,
		     int log_fd)
{
	setsid();
	/* Without address randomisation every boot of the same guest has
	 * the same layout and the same footprint (ASLR varies UML's usable
	 * memory and its boot footprint by up to 18 MiB). */
	personality(ADDR_NO_RANDOMIZE);
	dup2(stdin_fd, 0);
	dup2(log_fd, 1);
	dup2(log_fd, 2);
	/* Default signal dispositions and mask for the guest. */
	execv(argv[0], argv);
	_exit(127);
}

#define MAX_ARGS 64

int guest_start(const struct guest_env *env, const struct guest_config *cfg,
		const struct guest_events *ev, void *opaque,
		struct guest **out)
{
	char a_mem[32], a_initrd[300], a_balloon[340], a_name[64];
	char a_umldir[280], a_disk[GUEST_MAX_DISKS][340];
	unsigned ndone = 0;
	char *argv[MAX_ARGS];
	char *extra = NULL;
	int argc = 0, pipefd[2], log_fd, rc;
	struct guest *g;
	sigset_t all, old;
	pid_t pid;

	/* UML takes mem= in whole megabytes. */
	if (!guest_name_valid(cfg->name) || cfg->ndisks > GUEST_MAX_DISKS ||
	    cfg->mem_bytes < (32ull << 20) || cfg->mem_bytes % (1ull << 20)) {
		rc = -EINVAL;
		goto err_backends;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		rc = -ENOMEM;
		goto err_backends;
	}
	g->env = env;
	g->ev = ev;
	g->opaque = opaque;
	g->pidfd = -1;
	g->console_fd = -1;
	g->mem_bytes = cfg->mem_bytes;
	g->state = GUEST_STARTING;
	snprintf(g->name, sizeof(g->name), "%s", cfg->name);
	snprintf(g->dir, sizeof(g->dir), "%s/%s", env->run_dir, cfg->name);
	snprintf(g->balloon_sock, sizeof(g->balloon_sock), "%s/balloon.sock",
		 g->dir);
	snprintf(g->log_path, sizeof(g->log_path), "%s/%s.log", env->log_dir,
		 cfg->name);

	rc = mkdir_p(g->dir);
	if (rc < 0)
		goto err_free;
	rc = mkdir_p(env->log_dir);
	if (rc < 0)
		goto err_free;
	{
		char bname[GUEST_NAME_MAX + 16];

		snprintf(bname, sizeof(bname), "%s/balloon", g->name);
		rc = balloon_new(env->loop, g->balloon_sock, bname,
				 !cfg->no_reporting, &balloon_ev, g,
				 &g->balloon);
	}
	if (rc < 0)
		goto err_rmdir;
	for (; ndone < cfg->ndisks; ndone++) {
		const struct guest_disk *dk = &cfg->disks[ndone];
		char dname[GUEST_NAME_MAX + GUEST_ROLE_MAX + 1];

		snprintf(g->disk_role[ndone], GUEST_ROLE_MAX, "%s", dk->role);
		snprintf(g->disk_sock[ndone], sizeof(g->disk_sock[ndone]),
			 "%s/%s.sock", g->dir, dk->role);
		snprintf(dname, sizeof(dname), "%s/%s", g->name, dk->role);
		g->disk_refs[ndone] = (struct disk_ref){ g, ndone };
		rc = blk_new(env->loop, g->disk_sock[ndone], dname, &dk->back,
			     &dk->params, &disk_ev, &g->disk_refs[ndone],
			     &g->disks[ndone]);
		if (rc < 0)
			goto err_disks;
		g->ndisks = ndone + 1;
	}

	if (cfg->external) {
		g->external = true;
		rc = loop_timer_add(env->loop, GUEST_TICK_MS, GUEST_TICK_MS,
				    on_tick, g, &g->tick);
		if (rc < 0)
			goto err_disks;
		log_info(g->name, "serving devices for an external VMM at %s",
			 g->dir);
		*out = g;
		return 0;
	}

	/* 1. The UML command line. */
	snprintf(a_mem, sizeof(a_mem), "mem=%lluM",
		 (unsigned long long)(cfg->mem_bytes >> 20));
	snprintf(a_initrd, sizeof(a_initrd), "initrd=%s", env->initrd);
	snprintf(a_balloon, sizeof(a_balloon), "virtio_uml.device=%s:%d",
		 g->balloon_sock, UML_VIRTIO_BALLOON);
	snprintf(a_name, sizeof(a_name), "ebb.name=%s", g->name);
	snprintf(a_umldir, sizeof(a_umldir), "uml_dir=%s", g->dir);
	argv[argc++] = (char *)env->kernel;
	argv[argc++] = a_mem;
	argv[argc++] = a_initrd;
	argv[argc++] = (char *)"con=null";
	argv[argc++] = (char *)"con0=fd:0,fd:1";
	argv[argc++] = (char *)"ssl=null";
	/* Free pages are reported in 2 MiB blocks: one host huge page each. */
	argv[argc++] = (char *)"page_reporting.page_reporting_order=9";
	argv[argc++] = a_balloon;
	for (unsigned i = 0; i < g->ndisks; i++) {
		snprintf(a_disk[i], sizeof(a_disk[i]), "virtio_uml.device=%s:%d",
			 g->disk_sock[i], UML_VIRTIO_BLOCK);
		argv[argc++] = a_disk[i];
	}
	argv[argc++] = a_name;
	/* 256 legacy ptys cost 1-2 s of boot and nobody uses them. */
	argv[argc++] = (char *)"pty.legacy_count=0";
	/* UML's pid files go to the guest's run directory, not ~/.uml. */
	argv[argc++] = a_umldir;
	argv[argc++] = (char *)"quiet";
	if (cfg->cmdline && *cfg->cmdline) {
		char *save = NULL;

		extra = strdup(cfg->cmdline);
		if (!extra) {
			rc = -ENOMEM;
			goto err_disks;
		}
		for (char *t = strtok_r(extra, " \t", &save); t;
		     t = strtok_r(NULL, " \t", &save)) {
			if (argc >= MAX_ARGS - 1) {
				rc = -E2BIG;
				goto err_extra;
			}
			argv[argc++] = t;
		}
	}
	argv[argc] = NULL;

	/* 2. Console: a pipe in, a log file out. */
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		rc = -errno;
		goto err_extra;
	}
	log_fd = open(g->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		      0640);
	if (log_fd < 0) {
		rc = -errno;
		goto err_pipe;
	}

	/* 3. Fork with signals blocked so the child starts clean. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		if (env->ram_dir)
			setenv("TMPDIR", env->ram_dir, 1);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		exec_uml(g, argv, pipefd[0], log_fd);
	}
	rc = -errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(log_fd);
	close(pipefd[0]);
	pipefd[0] = -1;
	if (pid < 0)
		goto err_pipe;
	g->pid = pid;
	g->console_fd = pipefd[1];
	fcntl(g->console_fd, F_SETFL, O_NONBLOCK);
	free(extra);
	extra = NULL;

	/* 4. Watch for its exit. */
	g->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (g->pidfd < 0 ||
	    loop_watch_add(env->loop, g->pidfd, EPOLLIN, on_exit_fd, g,
			   &g->pid_w) < 0 ||
	    loop_timer_add(env->loop, GUEST_TICK_MS, GUEST_TICK_MS, on_tick, g,
			   &g->tick) < 0) {
		rc = -errno ? -errno : -ENOMEM;
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		g->pid = 0;
		goto err_console;
	}
	log_info(g->name, "started UML pid %d, %llu MiB, console log %s",
		 (int)pid, (unsigned long long)(cfg->mem_bytes >> 20),
		 g->log_path);
	*out = g;
	return 0;

err_console:
	loop_watch_del(g->pid_w);
	if (g->pidfd >= 0)
		close(g->pidfd);
	close_console(g);
	goto err_disks;
err_pipe:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	close(pipefd[1]);
err_extra:
	free(extra);
err_disks:
	free_disks(g);
	balloon_free(g->balloon);
err_rmdir:
	rmdir(g->dir);
err_free:
	free(g);
err_backends:
	/* The backends no device took (blk_new leaves a failed one's with
	 * us) are destroyed here, as the contract says. */
	for (unsigned i = ndone; i < cfg->ndisks && i < GUEST_MAX_DISKS; i++)
		if (cfg->disks[i].back.ops && cfg->disks[i].back.ops->destroy)
			cfg->disks[i].back.ops->destroy(cfg->disks[i].back.be);
	return rc;
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
		set_state(g, GUEST_STOPPING);
		set_state(g, GUEST_STOPPED);
		return 0;
	}
	set_state(g, GUEST_STOPPING);
	/* Ask the agent in words, then end its input (which the agent also
	 * takes as "power off"); the kill timer covers a wedged guest. */
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
		waitpid(g->pid, NULL, 0);
		loop_watch_del(g->pid_w);
		close(g->pidfd);
	}
	loop_timer_del(g->tick);
	loop_timer_del(g->kill_timer);
	close_console(g);
	free_disks(g);
	balloon_free(g->balloon);
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
	balloon_get_info(g->balloon, &out->balloon);
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
	const struct gm_region *r = gm_largest(vu_dev_mem(balloon_vu(g->balloon)));

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
