/*
 * Tests for fdhold and ebb-holder (the real program, $EBB_HOLDER): fds
 * round-trip with their names, a drop closes the holder's copy, a device
 * connection hanging up takes its device's fds with it, and every kind of
 * malformed message is refused with an error answer, its fds closed,
 * while the holder goes on serving.  The systemd back end is checked
 * against a datagram socket standing in for NOTIFY_SOCKET.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fdhold.h"
#include "holdproto.h"
#include "usock.h"

struct env {
	char dir[64];		/* the run directory */
	char sock[128];		/* its holder.sock */
	char log[128];		/* the holder's stderr */
	struct fdhold *h;	/* ebbd's side */
	pid_t holder;		/* the holder fdhold_open started */
};

static const char *holder_exe(void)
{
	const char *p = getenv("EBB_HOLDER");

	return p ? p : "build/src/ebb-holder";
}

static int setup(void **state)
{
	static struct env e;
	const char *what;

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "/tmp/ebb-fdhold-XXXXXX");
	assert_non_null(mkdtemp(e.dir));
	snprintf(e.sock, sizeof(e.sock), "%s/%s", e.dir, HOLD_SOCK_NAME);
	snprintf(e.log, sizeof(e.log), "%s/holder.log", e.dir);
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(fdhold_open(FDHOLD_AUTO, e.dir, holder_exe(), e.log,
				     &e.h), 0);
	what = fdhold_describe(e.h);
	assert_int_equal(sscanf(what, "ebb-holder (pid %d)", &e.holder), 1);
	assert_true(e.holder > 1);
	*state = &e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	int now = 0;

	/* The holder now running, if a test had it replaced. */
	sscanf(fdhold_describe(e->h), "ebb-holder (pid %d)", &now);
	char line[512];
	FILE *f;

	fdhold_close(e->h, false);
	kill(e->holder, SIGKILL);
	if (now > 1 && now != e->holder)
		kill(now, SIGKILL);
	/* Under ASan/UBSan (the sanitizer runs) a holder that erred said so
	 * on its stderr; every refusal it logged is fine. */
	f = fopen(e->log, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "Sanitizer") || strstr(line, "runtime error"))
			fail_msg("ebb-holder: %s", line);
	if (f)
		fclose(f);
	unlink(e->log);
	unlink(e->sock);
	rmdir(e->dir);
	return 0;
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Take everything through a second connection (a restarted ebbd). */
static unsigned take_all(struct env *e, struct fdhold_fd **v)
{
	struct fdhold *h2;
	unsigned n;

	assert_int_equal(fdhold_open(FDHOLD_HOLDER, e->dir, holder_exe(), NULL,
				     &h2), 0);
	assert_int_equal(fdhold_take(h2, v, &n), 0);
	fdhold_close(h2, false);
	return n;
}

static int find(struct fdhold_fd *v, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return (int)i;
	return -1;
}

static void free_all(struct fdhold_fd *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(v[i].fd);
	free(v);
}

/* Does reading @rfd see end of file within 2 s (the last writer closed)? */
static bool reaches_eof(int rfd)
{
	char c;

	fcntl(rfd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 200; i++) {
		ssize_t n = read(rfd, &c, 1);

		if (n == 0)
			return true;
		usleep(10000);
	}
	return false;
}

static void test_round_trip(void **state)
{
	struct env *e = *state;
	int ev = eventfd(0, EFD_CLOEXEC), mfd = memfd_create("t", MFD_CLOEXEC);
	int p[2], ev2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct fdhold_fd *v;
	uint64_t val = 7;
	unsigned n;
	int i;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g1/g1/balloon/kick/0", ev), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g1/g1/balloon/mem", mfd), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g1/g1/swap/conn", p[1]), 0);
	/* A re-put replaces. */
	assert_int_equal(fdhold_put(e->h, "guest/g1/g1/balloon/kick/0", ev2), 0);
	/* Invalid names never leave ebbd. */
	assert_int_equal(fdhold_put(e->h, "bad name", ev), -EINVAL);
	assert_int_equal(fdhold_put(e->h, "a:b", ev), -EINVAL);

	n = take_all(e, &v);
	assert_int_equal(n, 3);
	i = find(v, n, "guest/g1/g1/balloon/kick/0");
	/* Every eventfd is the same anon inode: tell them by the counter
	 * (the replaced one would leave ev2's at 0, EAGAIN). */
	assert_true(i >= 0);
	assert_int_equal(write(v[i].fd, &val, 8), 8);
	assert_int_equal(read(ev2, &val, 8), 8);
	assert_int_equal(val, 7);
	i = find(v, n, "guest/g1/g1/balloon/mem");
	assert_true(i >= 0 && same_file(v[i].fd, mfd));
	i = find(v, n, "guest/g1/g1/swap/conn");
	assert_true(i >= 0 && same_file(v[i].fd, p[1]));
	/* The holder kept its copies: a second take gets them again. */
	free_all(v, n);
	n = take_all(e, &v);
	assert_int_equal(n, 3);
	free_all(v, n);
	close(ev);
	close(ev2);
	close(mfd);
	close(p[0]);
	close(p[1]);
}

static void test_drop_closes(void **state)
{
	struct env *e = *state;
	struct fdhold_fd *v;
	int p[2];
	unsigned n;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g2/g2/swap/backend", p[1]), 0);
	close(p[1]);
	/* The holder's copy keeps the pipe open... */
	char c;
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	assert_int_equal(read(p[0], &c, 1), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(fdhold_drop(e->h, "guest/g2/g2/swap/backend"), 0);
	/* ...until the drop closes it. */
	assert_true(reaches_eof(p[0]));
	assert_int_equal(fdhold_drop(e->h, "guest/g2/g2/swap/backend"), -ENOENT);
	n = take_all(e, &v);
	assert_int_equal(find(v, n, "guest/g2/g2/swap/backend"), -1);
	free_all(v, n);
	close(p[0]);
}

static void test_conn_hangup_drops_device(void **state)
{
	struct env *e = *state;
	int sp[2], ev = eventfd(0, EFD_CLOEXEC), other = eventfd(0, EFD_CLOEXEC);
	struct fdhold_fd *v;
	unsigned n = 0;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g3/g3/balloon/conn", sp[0]), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g3/g3/balloon/call/0", ev), 0);
	assert_int_equal(fdhold_put(e->h, "guest/g3/g3/ebb/call/0", other), 0);
	close(sp[0]);
	close(sp[1]);		/* the guest is gone */
	for (int i = 0; i < 100; i++) {
		n = take_all(e, &v);
		if (find(v, n, "guest/g3/g3/balloon/conn") < 0)
			break;
		free_all(v, n);
		usleep(20000);
	}
	assert_int_equal(find(v, n, "guest/g3/g3/balloon/conn"), -1);
	assert_int_equal(find(v, n, "guest/g3/g3/balloon/call/0"), -1);
	/* Another device of the guest is not that connection's. */
	assert_true(find(v, n, "guest/g3/g3/ebb/call/0") >= 0);
	free_all(v, n);
	close(ev);
	close(other);
}

static unsigned restarts;

static void count_restart(void *opaque)
{
	struct env *e = opaque;
	int fd = eventfd(0, EFD_CLOEXEC);

	restarts++;
	/* What ebbd does here: put everything again.  (An eventfd: a
	 * socket whose peer is closed would hang up and be dropped.) */
	assert_int_equal(fdhold_put(e->h, "guest/r/r/balloon/backend", fd), 0);
	close(fd);
}

/* Wait until @pid is gone (or a zombie: it is not our child). */
static void wait_dead(pid_t pid)
{
	char path[64], st[256];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 300; i++) {
		FILE *f = fopen(path, "r");
		char *p;

		if (!f)
			return;
		p = fgets(st, sizeof(st), f) ? strrchr(st, ')') : NULL;
		fclose(f);
		if (p && p[2] == 'Z')
			return;
		usleep(10000);
	}
	fail_msg("pid %d did not die", (int)pid);
}

static void test_holder_restarted(void **state)
{
	struct env *e = *state;
	int ev = eventfd(0, EFD_CLOEXEC), pid2 = 0, pid3 = 0;
	struct fdhold_fd *v;
	unsigned n;

	restarts = 0;
	fdhold_on_restart(e->h, count_restart, e);
	assert_int_equal(fdhold_put(e->h, "guest/r/r/balloon/conn", ev), 0);
	/* 1. It dies; the timer's check starts another, which gets
	 * everything put again. */
	kill(e->holder, SIGKILL);
	wait_dead(e->holder);
	assert_int_equal(fdhold_check(e->h), 1);
	assert_int_equal(restarts, 1);
	assert_int_equal(sscanf(fdhold_describe(e->h), "ebb-holder (pid %d)",
				&pid2), 1);
	assert_true(pid2 > 1 && pid2 != e->holder);
	assert_int_equal(fdhold_check(e->h), 0);
	n = take_all(e, &v);
	assert_true(find(v, n, "guest/r/r/balloon/backend") >= 0);
	free_all(v, n);
	/* 2. It dies again; this time a put finds out, and still holds. */
	kill(pid2, SIGKILL);
	wait_dead(pid2);
	assert_int_equal(fdhold_put(e->h, "guest/r/r/balloon/kick/0", ev), 0);
	assert_int_equal(restarts, 2);
	assert_int_equal(sscanf(fdhold_describe(e->h), "ebb-holder (pid %d)",
				&pid3), 1);
	assert_true(pid3 != pid2);
	n = take_all(e, &v);
	assert_true(find(v, n, "guest/r/r/balloon/kick/0") >= 0);
	assert_true(find(v, n, "guest/r/r/balloon/backend") >= 0);
	free_all(v, n);
	fdhold_on_restart(e->h, NULL, NULL);
	close(ev);
}

/* A raw connection to the holder, for messages fdhold would never send. */
static int raw_connect(struct env *e)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	memcpy(a.sun_path, e->sock, strlen(e->sock));
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Send @len bytes of @buf with @nfds copies of @fd. */
static void raw_send(int sock, const void *buf, size_t len, int fd,
		     unsigned nfds)
{
	int fds[USOCK_MAX_FDS];

	assert_true(nfds <= USOCK_MAX_FDS);
	for (unsigned i = 0; i < nfds; i++)
		fds[i] = fd;
	assert_int_equal(usock_send_fds(sock, buf, len, fds, nfds), (ssize_t)len);
}

/* The answer to a refused message: DONE, -EBADMSG, no fd. */
static void expect_refused(int sock)
{
	struct hold_msg m;
	const char *why;
	int fd;

	assert_int_equal(hold_msg_recv(sock, &m, &fd, &why), 0);
	assert_int_equal(m.op, HOLD_DONE);
	assert_int_equal(m.result, -EBADMSG);
	assert_int_equal(fd, -1);
}

static void test_malformed_refused(void **state)
{
	struct env *e = *state;
	int sock = raw_connect(e), p[2], rc;
	struct hold_msg m;
	uint8_t big[sizeof(m) + 64];
	struct fdhold_fd *v;
	unsigned n;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	memset(&m, 0, sizeof(m));
	m.magic = HOLD_MAGIC;
	m.op = HOLD_PUT;
	snprintf(m.name, sizeof(m.name), "guest/h/h/balloon/conn");

	/* 1. Bad lengths: short, long (with an fd each, which must be
	 * closed). */
	raw_send(sock, &m, 10, p[1], 1);
	expect_refused(sock);
	memset(big, 0, sizeof(big));
	memcpy(big, &m, sizeof(m));
	raw_send(sock, big, sizeof(big), p[1], 1);
	expect_refused(sock);
	/* 2. PUT without an fd. */
	raw_send(sock, &m, sizeof(m), -1, 0);
	expect_refused(sock);
	/* 3. Too many fds: 3 (received and closed), then 20 (more than a
	 * message is read with: truncated by the kernel). */
	raw_send(sock, &m, sizeof(m), p[1], 3);
	expect_refused(sock);
	raw_send(sock, &m, sizeof(m), p[1], 20);
	expect_refused(sock);
	/* 4. A name without a terminator. */
	memset(m.name, 'a', sizeof(m.name));
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);
	/* 5. A name with a forbidden byte, an empty name. */
	snprintf(m.name, sizeof(m.name), "guest/h/h:x");
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);
	memset(m.name, 0, sizeof(m.name));
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);
	/* 6. Bad magic, unknown op, a reply op, DROP with an fd. */
	snprintf(m.name, sizeof(m.name), "guest/h/h/balloon/conn");
	m.magic = 0xdeadbeef;
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);
	m.magic = HOLD_MAGIC;
	m.op = 99;
	raw_send(sock, &m, sizeof(m), -1, 0);
	expect_refused(sock);
	m.op = HOLD_ENTRY;
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);
	m.op = HOLD_DROP;
	raw_send(sock, &m, sizeof(m), p[1], 1);
	expect_refused(sock);

	/* Not one of those fds was kept: with ours closed, the pipe ends. */
	close(p[1]);
	assert_true(reaches_eof(p[0]));
	close(p[0]);
	/* The holder lives and serves, the same connection included. */
	assert_int_equal(kill(e->holder, 0), 0);
	rc = hold_msg_send(sock, HOLD_TAKE, NULL, 0, 0, -1);
	assert_int_equal(rc, 0);
	close(sock);
	n = take_all(e, &v);
	assert_int_equal(find(v, n, "guest/h/h/balloon/conn"), -1);
	free_all(v, n);
}

/* hold_msg_recv on its own, for what the holder never sends. */
static void test_recv_checks_replies(void **state)
{
	int sp[2], fd;
	struct hold_msg m;
	const char *why;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
				    sp), 0);
	memset(&m, 0, sizeof(m));
	m.magic = HOLD_MAGIC;
	m.op = HOLD_ENTRY;
	memset(m.name, 'x', sizeof(m.name));
	raw_send(sp[0], &m, sizeof(m), sp[0], 1);
	assert_int_equal(hold_msg_recv(sp[1], &m, &fd, &why), -EBADMSG);
	assert_string_equal(why, "name without a terminator");
	assert_int_equal(fd, -1);
	raw_send(sp[0], &m, 3, -1, 0);
	assert_int_equal(hold_msg_recv(sp[1], &m, &fd, &why), -EBADMSG);
	assert_string_equal(why, "message of the wrong size");
	close(sp[0]);
	assert_int_equal(hold_msg_recv(sp[1], &m, &fd, &why), -ECONNRESET);
	close(sp[1]);
}

/* ---- systemd's fd store, against a stand-in NOTIFY_SOCKET -------------- */

static void test_systemd_store(void **state)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/ebb-notify-XXXXXX", buf[512];
	union {
		char b[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
	int ev = eventfd(0, EFD_CLOEXEC), s, got;
	struct fdhold *h;
	struct cmsghdr *c;
	ssize_t n;
	pid_t pid;
	int status;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", dir);
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	setenv("NOTIFY_SOCKET", a.sun_path, 1);
	assert_int_equal(fdhold_open(FDHOLD_AUTO, dir, NULL, NULL, &h), 0);
	assert_string_equal(fdhold_describe(h), "the systemd fd store");

	assert_int_equal(fdhold_put(h, "guest/g1/g1/balloon/conn", ev), 0);
	/* First whatever the name held before (a put replaces)... */
	n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "FDSTOREREMOVE=1\nFDNAME=guest/g1/g1/balloon/conn");
	assert_null(CMSG_FIRSTHDR(&mh));
	/* ...then the fd with its name. */
	mh.msg_controllen = sizeof(ctl.b);
	n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "FDSTORE=1\nFDNAME=guest/g1/g1/balloon/conn");
	c = CMSG_FIRSTHDR(&mh);
	assert_non_null(c);
	assert_int_equal(c->cmsg_type, SCM_RIGHTS);
	assert_int_equal(c->cmsg_len, CMSG_LEN(sizeof(int)));
	memcpy(&got, CMSG_DATA(c), sizeof(int));
	assert_true(same_file(got, ev));
	close(got);

	assert_int_equal(fdhold_drop(h, "guest/g1/g1/balloon/conn"), 0);
	mh.msg_controllen = sizeof(ctl.b);
	n = recvmsg(s, &mh, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "FDSTOREREMOVE=1\nFDNAME=guest/g1/g1/balloon/conn");
	assert_null(CMSG_FIRSTHDR(&mh));
	assert_int_equal(fdhold_put(h, "no:colons", ev), -EINVAL);
	fdhold_close(h, true);

	/* Taking back: what PID 1 would pass, as LISTEN_FDS at fds 3, 4. */
	pid = fork();
	if (pid == 0) {
		struct fdhold_fd *v;
		unsigned k;
		int ok;
		char num[16];

		dup2(ev, 3);
		dup2(s, 4);
		snprintf(num, sizeof(num), "%d", (int)getpid());
		setenv("LISTEN_PID", num, 1);
		setenv("LISTEN_FDS", "2", 1);
		setenv("LISTEN_FDNAMES", "guest/g1/g1/balloon/conn:guest/g1/g1/swap/conn", 1);
		if (fdhold_open(FDHOLD_SYSTEMD, "/nonexistent", NULL, NULL, &h) ||
		    fdhold_take(h, &v, &k))
			_exit(10);
		ok = k == 2 && !strcmp(v[0].name, "guest/g1/g1/balloon/conn") &&
		     v[0].fd == 3 && !strcmp(v[1].name, "guest/g1/g1/swap/conn") &&
		     v[1].fd == 4 && (fcntl(3, F_GETFD) & FD_CLOEXEC) &&
		     !getenv("LISTEN_FDS");
		free(v);
		/* Only the first take returns them. */
		if (!ok || fdhold_take(h, &v, &k) || k != 0)
			_exit(11);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	unsetenv("NOTIFY_SOCKET");
	close(s);
	close(ev);
	unlink(a.sun_path);
	rmdir(dir);
}

static void test_no_holder_program(void **state)
{
	char dir[] = "/tmp/ebb-noholder-XXXXXX";
	struct fdhold *h;
	enum fdhold_mode m;

	(void)state;
	assert_non_null(mkdtemp(dir));
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(fdhold_open(FDHOLD_HOLDER, dir, "/nonexistent/ebb-holder",
				     NULL, &h), -ENOENT);
	assert_int_equal(fdhold_open(FDHOLD_SYSTEMD, dir, NULL, NULL, &h),
			 -ENOTSUP);
	assert_int_equal(fdhold_open(FDHOLD_OFF, dir, NULL, NULL, &h), -ENOTSUP);
	assert_int_equal(fdhold_mode_parse("holder", &m), 0);
	assert_int_equal(m, FDHOLD_HOLDER);
	assert_int_equal(fdhold_mode_parse("Holder", &m), -EINVAL);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conn_hangup_drops_device,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_holder_restarted, setup,
						teardown),
		cmocka_unit_test(test_recv_checks_replies),
		cmocka_unit_test(test_systemd_store),
		cmocka_unit_test(test_no_holder_program),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
