/*
 * ebb-holder: keeps ebbd's device fds open while no ebbd runs
 * (docs/restart.md 2.1; the wire format is holdproto.h).
 *
 *   ebb-holder SOCKET [IDLE_SEC]
 *
 * ebbd starts it (double-forked, its own session) when no systemd fd
 * store is there, and finds it again on SOCKET (<run-dir>/holder.sock)
 * after a restart.  It holds fds by name and does nothing else, so it
 * never needs upgrading with ebbd: PUT keeps one, DROP closes one, TAKE
 * sends every one back (the holder keeps its own), QUIT ends it if it
 * holds nothing.
 *
 * Every message is hostile input: holdproto.c refuses malformed ones
 * (and closes the fds they brought); here an op's rules are checked
 * (PUT needs a name and exactly one fd, the others no fd), and a
 * refusal is answered with DONE and an error, never a crash.  Only its
 * own uid (or root) may connect (SO_PEERCRED).
 *
 * Two bounds: at most HOLDER_CLIENTS connections at once (ebbd keeps one
 * for its life; a second ebbd or a test is the rare extra) and
 * HOLDER_MAX_FDS fds (256 guests * ~90 fds each, docs/restart.md, with
 * room).  A client that does not read its TAKE answers for
 * HOLDER_SEND_SEC is dropped, so no client can stall the holder.
 *
 * Clean-up without ebbd: every held fd sits in the epoll set with no
 * events asked, so a socket whose peer has gone reports HUP.  A device's
 * connection ("<...>/conn") hanging up means its guest is gone (UML never
 * reconnects), so everything held under that device's prefix is closed.
 * Once it holds nothing and no client has been connected for IDLE_SEC
 * (default 60), it exits.
 *
 * Single-threaded; lookups are linear in the fds held (a hash would do
 * for the 23 000 of a full host; a put is not on any I/O path).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "holdproto.h"

#define HOLDER_CLIENTS	8
#define HOLDER_MAX_FDS	32768
#define HOLDER_SEND_SEC	5

enum { T_LISTEN = 1, T_CLIENT = 2, T_HELD = 3 };

struct held {
	char name[HOLD_NAME_MAX];
	int fd;
};

static struct {
	int ep;			/* epoll set */
	int listen_fd;
	int clients[HOLDER_CLIENTS];	/* -1: free */
	unsigned nclients;
	struct held *held;	/* grown by doubling, never past MAX_FDS */
	unsigned nheld, cap;
	time_t idle_since;	/* last time a client was connected */
} h;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "ebb-holder[%d]: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint64_t tag(int type, int fd)
{
	return ((uint64_t)type << 32) | (uint32_t)fd;
}

static int find(const char *name)
{
	for (unsigned i = 0; i < h.nheld; i++)
		if (!strcmp(h.held[i].name, name))
			return (int)i;
	return -1;
}

static void drop_at(unsigned i)
{
	epoll_ctl(h.ep, EPOLL_CTL_DEL, h.held[i].fd, NULL);
	close(h.held[i].fd);
	h.held[i] = h.held[--h.nheld];
}

static int put(const char *name, int fd)
{
	struct epoll_event ev = { .events = 0, .data.u64 = tag(T_HELD, fd) };
	int i = find(name);

	if (i >= 0) {
		drop_at((unsigned)i);	/* a re-put replaces */
	} else if (h.nheld == h.cap) {
		unsigned cap = h.cap ? h.cap * 2 : 64;
		struct held *n;

		if (h.cap >= HOLDER_MAX_FDS)
			return -ENOSPC;
		n = realloc(h.held, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		h.held = n;
		h.cap = cap;
	}
	/* No events asked: only HUP and ERR report, which is all we watch
	 * for.  Files epoll cannot watch (EPERM: memfds, regular files)
	 * are simply held. */
	if (epoll_ctl(h.ep, EPOLL_CTL_ADD, fd, &ev) < 0 && errno != EPERM)
		return -errno;
	snprintf(h.held[h.nheld].name, HOLD_NAME_MAX, "%s", name);
	h.held[h.nheld++].fd = fd;
	return 0;
}

/* A held fd hung up.  A device connection's end takes its device's other
 * fds with it (same prefix up to and including the last '/'). */
static void on_held_hup(int fd)
{
	char prefix[HOLD_NAME_MAX];
	size_t len, n;
	char *slash;
	int i = -1;

	for (unsigned k = 0; k < h.nheld; k++)
		if (h.held[k].fd == fd)
			i = (int)k;
	if (i < 0) {
		epoll_ctl(h.ep, EPOLL_CTL_DEL, fd, NULL);
		return;
	}
	snprintf(prefix, sizeof(prefix), "%s", h.held[i].name);
	drop_at((unsigned)i);
	len = strlen(prefix);
	slash = strrchr(prefix, '/');
	if (len < 5 || strcmp(prefix + len - 5, "/conn") || !slash) {
		say("%s hung up: closed", prefix);
		return;
	}
	slash[1] = '\0';
	n = strlen(prefix);
	for (unsigned k = 0; k < h.nheld;) {
		if (!strncmp(h.held[k].name, prefix, n))
			drop_at(k);
		else
			k++;
	}
	say("%sconn hung up: its device is gone, closed everything under %s",
	    prefix, prefix);
}

static void client_close(unsigned slot)
{
	epoll_ctl(h.ep, EPOLL_CTL_DEL, h.clients[slot], NULL);
	close(h.clients[slot]);
	h.clients[slot] = -1;
	h.nclients--;
	h.idle_since = time(NULL);
}

static void on_listen(void)
{
	struct timeval tv = { .tv_sec = HOLDER_SEND_SEC };
	struct ucred cr;
	socklen_t len = sizeof(cr);
	unsigned slot;
	int fd = accept4(h.listen_fd, NULL, NULL, SOCK_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag(T_CLIENT, fd) };

	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
	    (cr.uid != getuid() && cr.uid != 0)) {
		say("refused a connection from another user");
		close(fd);
		return;
	}
	for (slot = 0; slot < HOLDER_CLIENTS && h.clients[slot] >= 0; slot++)
		;
	if (slot == HOLDER_CLIENTS) {
		say("refused a connection: %d clients already", HOLDER_CLIENTS);
		close(fd);
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (epoll_ctl(h.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		return;
	}
	h.clients[slot] = fd;
	h.nclients++;
}

/* TAKE: every entry, then DONE with the count.  -errno if the client
 * stopped reading. */
static int send_all(int fd)
{
	int rc;

	for (unsigned i = 0; i < h.nheld; i++) {
		rc = hold_msg_send(fd, HOLD_ENTRY, h.held[i].name, 0, 0,
				   h.held[i].fd);
		if (rc < 0)
			return rc;
	}
	return hold_msg_send(fd, HOLD_DONE, NULL, 0, h.nheld, -1);
}

/* One message from client @slot.  Returns false if the holder should
 * exit (QUIT while empty). */
static bool on_client(unsigned slot)
{
	int cfd = h.clients[slot], fd, rc;
	struct hold_msg m;
	const char *why;

	rc = hold_msg_recv(cfd, &m, &fd, &why);
	if (rc == -EAGAIN)
		return true;
	if (rc == -EBADMSG) {
		say("refused a message: %s", why);
		if (hold_msg_send(cfd, HOLD_DONE, NULL, -EBADMSG, 0, -1) < 0)
			client_close(slot);
		return true;
	}
	if (rc < 0) {
		client_close(slot);
		return true;
	}
	/* The op's own rules: which ops a client may send, with an fd or
	 * not, and a name where one is needed. */
	if (hold_op_wants_fd(m.op) != (fd >= 0))
		why = fd >= 0 ? "an fd with an op that takes none" :
				"PUT without an fd";
	else if (m.op != HOLD_PUT && m.op != HOLD_DROP && m.op != HOLD_TAKE &&
		 m.op != HOLD_QUIT)
		why = "a reply op from a client";
	else if ((m.op == HOLD_PUT || m.op == HOLD_DROP) && !m.name[0])
		why = "no name";
	if (why) {
		say("refused a message: %s", why);
		if (fd >= 0)
			close(fd);
		rc = -EBADMSG;
	} else if (m.op == HOLD_PUT) {
		rc = put(m.name, fd);
		if (rc < 0)
			close(fd);
	} else if (m.op == HOLD_DROP) {
		int i = find(m.name);

		rc = i < 0 ? -ENOENT : 0;
		if (i >= 0)
			drop_at((unsigned)i);
	} else if (m.op == HOLD_TAKE) {
		if (send_all(cfd) < 0)
			client_close(slot);
		return true;
	} else {
		rc = h.nheld ? -EBUSY : 0;
	}
	if (hold_msg_send(cfd, HOLD_DONE, NULL, rc, 0, -1) < 0)
		client_close(slot);
	return !(m.op == HOLD_QUIT && rc == 0);
}

static int open_socket(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(a.sun_path)) {
		say("socket path too long: %s", path);
		return -1;
	}
	memcpy(a.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	/* ebbd starts a holder only when none answers on the path, so a
	 * file there is a dead holder's. */
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 16) < 0) {
		say("cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct epoll_event ev[64];
	struct rlimit rl;
	long idle_sec = 60;
	sigset_t none;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: ebb-holder SOCKET [IDLE_SEC]\n");
		return 2;
	}
	if (argc == 3) {
		char *end;

		idle_sec = strtol(argv[2], &end, 10);
		if (*end || idle_sec < 0 || idle_sec > 86400) {
			fprintf(stderr, "ebb-holder: bad IDLE_SEC '%s'\n", argv[2]);
			return 2;
		}
	}
	/* ebbd blocks SIGTERM for its signalfd and ignores SIGPIPE; an
	 * operator's kill must work on the holder as on any process. */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);	/* sends use MSG_NOSIGNAL anyway */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	umask(077);
	for (unsigned i = 0; i < HOLDER_CLIENTS; i++)
		h.clients[i] = -1;
	h.ep = epoll_create1(EPOLL_CLOEXEC);
	h.listen_fd = h.ep < 0 ? -1 : open_socket(argv[1]);
	if (h.listen_fd < 0)
		return 1;
	ev[0] = (struct epoll_event){ .events = EPOLLIN,
				      .data.u64 = tag(T_LISTEN, h.listen_fd) };
	if (epoll_ctl(h.ep, EPOLL_CTL_ADD, h.listen_fd, &ev[0]) < 0)
		return 1;
	h.idle_since = time(NULL);
	say("holding fds on %s", argv[1]);
	for (;;) {
		int n = epoll_wait(h.ep, ev, 64, 1000);

		for (int i = 0; i < n; i++) {
			int type = (int)(ev[i].data.u64 >> 32);
			int fd = (int)(uint32_t)ev[i].data.u64;

			if (type == T_LISTEN) {
				on_listen();
			} else if (type == T_HELD) {
				on_held_hup(fd);
			} else {
				for (unsigned s = 0; s < HOLDER_CLIENTS; s++) {
					if (h.clients[s] != fd)
						continue;
					if (!on_client(s)) {
						say("asked to quit, holding nothing");
						unlink(argv[1]);
						return 0;
					}
					break;
				}
			}
		}
		if (!h.nheld && !h.nclients &&
		    time(NULL) - h.idle_since >= idle_sec) {
			say("holding nothing and idle for %ld s: exiting",
			    idle_sec);
			/* The socket file stays: a newer holder may have
			 * taken the path since, and ebbd replaces a dead
			 * one's file anyway. */
			return 0;
		}
	}
}
