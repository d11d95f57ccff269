/*
 * usock: a listening Unix socket that appears at its path only once it
 * accepts (API in usock.h).
 */
#include "usock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int usock_listen(const char *path, mode_t mode, int backlog, struct stat *st)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, n, rc;

	/* The temporary name carries the pid: two processes setting up the
	 * same path never bind each other's. */
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d.new", path,
		     (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A leftover of this pid's earlier life (pids are reused). */
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (chmod(sa.sun_path, mode) < 0 || listen(fd, backlog) < 0 ||
	    (st && stat(sa.sun_path, st) < 0) || rename(sa.sun_path, path) < 0) {
		rc = -errno;
		unlink(sa.sun_path);
		close(fd);
		return rc;
	}
	return fd;
}

ssize_t usock_send_fds(int sock, const void *buf, size_t len, const int *fds,
		       unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(USOCK_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > USOCK_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}
