/*
 * fdhold: the fd holder's two back ends (contract in fdhold.h).
 */
#include "fdhold.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#define HOLDER_CONNECT_MS	3000	/* a started holder listens by then */
#define HOLDER_IO_SEC		5	/* a stalled holder fails the call */

struct fdhold_ops {
	const char *name;
	int (*put)(struct fdhold *h, const char *name, int fd);
	int (*drop)(struct fdhold *h, const char *name);
	int (*take)(struct fdhold *h, struct fdhold_fd **out, unsigned *n);
	void (*close)(struct fdhold *h, bool quit);
};

struct fdhold {
	const struct fdhold_ops *ops;
	int sock;		/* holder: the connection; -1 otherwise */
	bool taken;		/* systemd: LISTEN_FDS already read */
	char what[64];		/* fdhold_describe() */
	/* holder: how to start another one if it dies (copies). */
	char *run_dir, *exe, *log_path;
	void (*restarted)(void *opaque);	/* fdhold_on_restart() */
	void *restarted_opaque;
	bool restarting;	/* inside restarted(): no second restart */
};

static int open_holder(struct fdhold *h, const char *run_dir, const char *exe,
		       const char *log_path);

/* ---- systemd's fd store ------------------------------------------------ */

static int sd_drop(struct fdhold *h, const char *name)
{
	char msg[64 + HOLD_NAME_MAX];
	int rc;

	if (!hold_name_valid(name))
		return -EINVAL;
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	rc = sd_pid_notify(0, 0, msg);
	return rc < 0 ? rc : rc == 0 ? -ENOTCONN : 0;
}

static int sd_put(struct fdhold *h, const char *name, int fd)
{
	char msg[64 + HOLD_NAME_MAX];
	int rc;

	/* systemd polls a stored fd and drops it on POLLHUP/POLLERR unless
	 * FDPOLL=0: for a device's connection that is right (its guest is
	 * gone); eventfds and memfds never hang up. */
	/* The store keeps every fd sent under a name (it merges only
	 * duplicates of one open file): a replaced fd (a ring's new kick)
	 * must go first, as the holder's PUT replaces. */
	rc = sd_drop(h, name);
	if (rc < 0)
		return rc;
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	rc = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	return rc < 0 ? rc : rc == 0 ? -ENOTCONN : 0;
}

static int sd_take(struct fdhold *h, struct fdhold_fd **out, unsigned *n)
{
	char **names = NULL;
	int count;

	*out = NULL;
	*n = 0;
	if (h->taken)
		return 0;
	h->taken = true;
	/* Unsets LISTEN_* so that no child (a guest) sees them. */
	count = sd_listen_fds_with_names(1, &names);
	if (count <= 0) {
		free(names);
		return count;
	}
	*out = calloc((size_t)count, sizeof(**out));
	for (int i = 0; i < count; i++) {
		int fd = SD_LISTEN_FDS_START + i;

		/* Inherited without close-on-exec: a guest must not get them. */
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (*out) {
			snprintf((*out)[i].name, HOLD_NAME_MAX, "%s",
				 names && names[i] ? names[i] : "unknown");
			(*out)[i].fd = fd;
		} else {
			close(fd);
		}
		free(names ? names[i] : NULL);
	}
	free(names);
	if (!*out)
		return -ENOMEM;
	*n = (unsigned)count;
	return 0;
}

static void sd_close(struct fdhold *h, bool quit)
{
}

static const struct fdhold_ops systemd_ops = {
	.name = "systemd",
	.put = sd_put,
	.drop = sd_drop,
	.take = sd_take,
	.close = sd_close,
};

/* ---- ebb-holder --------------------------------------------------------- */

/* One request, one DONE answer: its result. */
static int holder_call_once(struct fdhold *h, uint32_t op, const char *name,
			    int fd)
{
	struct hold_msg m;
	const char *why;
	int rc, rfd;

	if (h->sock < 0)
		return -ENOTCONN;
	rc = hold_msg_send(h->sock, op, name, 0, 0, fd);
	if (rc < 0)
		return rc;
	rc = hold_msg_recv(h->sock, &m, &rfd, &why);
	if (rc < 0)
		return rc;
	if (rfd >= 0)
		close(rfd);
	return m.op == HOLD_DONE ? m.result : -EPROTO;
}

/* The connection is gone, not slow: the holder died (or was killed). */
static bool holder_gone(int rc)
{
	return rc == -EPIPE || rc == -ECONNRESET || rc == -ENOTCONN ||
	       rc == -ECONNREFUSED;
}

/*
 * A request; if the holder has died, start another one, make the
 * request there and have everything put again (fdhold_on_restart).  A
 * stalled holder (-EAGAIN after HOLDER_IO_SEC) is not replaced: it may
 * still hold everything.
 */
static int holder_call(struct fdhold *h, uint32_t op, const char *name, int fd)
{
	int rc = holder_call_once(h, op, name, fd);

	if (!holder_gone(rc) || h->restarting || op == HOLD_QUIT)
		return rc;
	if (h->sock >= 0)
		close(h->sock);
	h->sock = -1;
	if (open_holder(h, h->run_dir, h->exe, h->log_path) < 0)
		return rc;
	rc = holder_call_once(h, op, name, fd);
	if (h->restarted) {
		h->restarting = true;
		h->restarted(h->restarted_opaque);
		h->restarting = false;
	}
	return rc;
}

static int holder_put(struct fdhold *h, const char *name, int fd)
{
	return holder_call(h, HOLD_PUT, name, fd);
}

static int holder_drop(struct fdhold *h, const char *name)
{
	return holder_call(h, HOLD_DROP, name, -1);
}

static int holder_take(struct fdhold *h, struct fdhold_fd **out, unsigned *n)
{
	struct fdhold_fd *v = NULL;
	unsigned cap = 0, got = 0;
	struct hold_msg m;
	const char *why;
	int rc, fd;

	*out = NULL;
	*n = 0;
	rc = hold_msg_send(h->sock, HOLD_TAKE, NULL, 0, 0, -1);
	while (rc == 0) {
		rc = hold_msg_recv(h->sock, &m, &fd, &why);
		if (rc < 0)
			break;
		if (m.op == HOLD_DONE) {
			rc = m.result < 0 ? m.result :
			     m.count == got ? 0 : -EPROTO;
			break;
		}
		/* The holder is ours, but its answers are checked too. */
		if (m.op != HOLD_ENTRY || fd < 0 || !m.name[0]) {
			if (fd >= 0)
				close(fd);
			rc = -EPROTO;
			break;
		}
		if (got == cap) {
			struct fdhold_fd *nv;

			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				close(fd);
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		snprintf(v[got].name, HOLD_NAME_MAX, "%s", m.name);
		v[got++].fd = fd;
	}
	if (rc < 0) {
		for (unsigned i = 0; i < got; i++)
			close(v[i].fd);
		free(v);
		return rc;
	}
	*out = v;
	*n = got;
	return 0;
}

static void holder_close(struct fdhold *h, bool quit)
{
	if (quit && h->sock >= 0)
		holder_call(h, HOLD_QUIT, NULL, -1);
	if (h->sock >= 0)
		close(h->sock);
	h->sock = -1;
}

static const struct fdhold_ops holder_ops = {
	.name = "holder",
	.put = holder_put,
	.drop = holder_drop,
	.take = holder_take,
	.close = holder_close,
};

static int holder_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = HOLDER_IO_SEC };
	int fd;

	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	memcpy(a.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

/*
 * Start the holder detached from ebbd: fork, setsid, fork again (so it is
 * nobody's child that waits for it, and no session leader that could get
 * a terminal), default signal mask, only stdin/out/err open.
 */
static int holder_spawn(const char *exe, const char *path, const char *log_path)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigset_t none;
		int in, out;

		setsid();
		if (fork() != 0)
			_exit(0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		in = open("/dev/null", O_RDONLY);
		out = log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND,
				      0640) : -1;
		if (out < 0)
			out = open("/dev/null", O_WRONLY);
		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
		    dup2(out, 2) < 0)
			_exit(126);
		close_range(3, ~0u, 0);
		execl(exe, "ebb-holder", path, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static int open_holder(struct fdhold *h, const char *run_dir, const char *exe,
		       const char *log_path)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	struct ucred cr;
	socklen_t len = sizeof(cr);
	int fd, rc;

	if (snprintf(path, sizeof(path), "%s/%s", run_dir, HOLD_SOCK_NAME) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = holder_connect(path);
	if (fd == -ECONNREFUSED || fd == -ENOENT) {
		if (!exe || access(exe, X_OK) < 0)
			return -ENOENT;
		rc = holder_spawn(exe, path, log_path);
		if (rc < 0)
			return rc;
		for (int ms = 0; ms < HOLDER_CONNECT_MS; ms += 10) {
			fd = holder_connect(path);
			if (fd >= 0)
				break;
			nanosleep(&pause, NULL);
		}
	}
	if (fd < 0)
		return fd;
	h->sock = fd;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0)
		snprintf(h->what, sizeof(h->what), "ebb-holder (pid %d)",
			 (int)cr.pid);
	else
		snprintf(h->what, sizeof(h->what), "ebb-holder");
	return 0;
}

/* ---- the interface ------------------------------------------------------ */

int fdhold_open(enum fdhold_mode mode, const char *run_dir,
		const char *holder_exe, const char *log_path,
		struct fdhold **out)
{
	struct fdhold *h;
	int rc = 0;

	if (mode == FDHOLD_AUTO)
		mode = getenv("NOTIFY_SOCKET") ? FDHOLD_SYSTEMD : FDHOLD_HOLDER;
	if (mode == FDHOLD_OFF ||
	    (mode == FDHOLD_SYSTEMD && !getenv("NOTIFY_SOCKET")))
		return -ENOTSUP;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->sock = -1;
	if (mode == FDHOLD_SYSTEMD) {
		h->ops = &systemd_ops;
		snprintf(h->what, sizeof(h->what), "the systemd fd store");
	} else {
		h->ops = &holder_ops;
		h->run_dir = strdup(run_dir);
		h->exe = holder_exe ? strdup(holder_exe) : NULL;
		h->log_path = log_path ? strdup(log_path) : NULL;
		rc = !h->run_dir || (holder_exe && !h->exe) ||
		     (log_path && !h->log_path) ? -ENOMEM :
		     open_holder(h, run_dir, holder_exe, log_path);
	}
	if (rc < 0) {
		free(h->run_dir);
		free(h->exe);
		free(h->log_path);
		free(h);
		return rc;
	}
	*out = h;
	return 0;
}

const char *fdhold_describe(const struct fdhold *h)
{
	return h->what;
}

int fdhold_put(struct fdhold *h, const char *name, int fd)
{
	return h->ops->put(h, name, fd);
}

int fdhold_drop(struct fdhold *h, const char *name)
{
	return h->ops->drop(h, name);
}

int fdhold_take(struct fdhold *h, struct fdhold_fd **out, unsigned *n)
{
	return h->ops->take(h, out, n);
}

int fdhold_check(struct fdhold *h)
{
	struct pollfd p;
	int rc;

	if (h->ops != &holder_ops)
		return 0;
	/* After a failed restart the timer does not try again (a start
	 * that never listens costs HOLDER_CONNECT_MS of the loop); the
	 * next put does. */
	if (h->sock < 0)
		return -ENOTCONN;
	p = (struct pollfd){ .fd = h->sock, .events = POLLIN };
	if (poll(&p, 1, 0) == 0)
		return 0;
	close(h->sock);
	h->sock = -1;
	rc = open_holder(h, h->run_dir, h->exe, h->log_path);
	if (rc < 0)
		return rc;
	if (h->restarted) {
		h->restarting = true;
		h->restarted(h->restarted_opaque);
		h->restarting = false;
	}
	return 1;
}

void fdhold_on_restart(struct fdhold *h, void (*fn)(void *opaque),
		       void *opaque)
{
	h->restarted = fn;
	h->restarted_opaque = opaque;
}

void fdhold_close(struct fdhold *h, bool quit)
{
	if (!h)
		return;
	h->ops->close(h, quit);
	free(h->run_dir);
	free(h->exe);
	free(h->log_path);
	free(h);
}

static const char *const mode_names[] = {
	[FDHOLD_AUTO] = "auto",
	[FDHOLD_HOLDER] = "holder",
	[FDHOLD_SYSTEMD] = "systemd",
	[FDHOLD_OFF] = "off",
};

int fdhold_mode_parse(const char *s, enum fdhold_mode *out)
{
	for (unsigned i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		if (!strcmp(s, mode_names[i])) {
			*out = (enum fdhold_mode)i;
			return 0;
		}
	return -EINVAL;
}

const char *fdhold_mode_name(enum fdhold_mode m)
{
	return (unsigned)m < sizeof(mode_names) / sizeof(mode_names[0]) ?
		mode_names[m] : "?";
}
