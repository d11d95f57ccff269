/*
 * holdproto: ebbd <-> ebb-holder messages (format and rules in
 * holdproto.h).  Linked into ebb-holder on its own, so it uses nothing
 * else of libebb.
 */
#include "holdproto.h"

#include "usock.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Fds a refused message may bring and still be closed one by one; the
 * kernel drops (closes) any beyond this itself and sets MSG_CTRUNC. */
#define HOLD_RECV_FDS	8

bool hold_name_valid(const char *name)
{
	size_t n = strnlen(name, HOLD_NAME_MAX);

	if (n == 0 || n == HOLD_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		/* FDNAME= rules (printable, no ':'), and no space so that
		 * a name is one word in ebbd's log lines. */
		if (c <= 0x20 || c >= 0x7f || c == ':')
			return false;
	}
	return true;
}

bool hold_op_wants_fd(uint32_t op)
{
	return op == HOLD_PUT || op == HOLD_ENTRY;
}

static bool op_known(uint32_t op)
{
	return op == HOLD_PUT || op == HOLD_DROP || op == HOLD_TAKE ||
	       op == HOLD_QUIT || op == HOLD_ENTRY || op == HOLD_DONE;
}

int hold_msg_send(int sock, uint32_t op, const char *name, int32_t result,
		  uint32_t count, int fd)
{
	struct hold_msg m = {
		.magic = HOLD_MAGIC, .op = op, .result = result, .count = count,
	};
	ssize_t n;

	if (name && name[0]) {
		if (strlen(name) >= HOLD_NAME_MAX)
			return -ENAMETOOLONG;
		if (!hold_name_valid(name))
			return -EINVAL;
		memcpy(m.name, name, strlen(name));
	}
	n = usock_send_fds(sock, &m, sizeof(m), &fd, fd >= 0);
	if (n < 0)
		return n == -EWOULDBLOCK ? -EAGAIN : (int)n;
	return n == (ssize_t)sizeof(m) ? 0 : -EIO;
}

/* Every fd in @mh's control data, closed (a refused message's). */
static void close_all(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t n;
		int fd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

int hold_msg_recv(int sock, struct hold_msg *m, int *fd, const char **why)
{
	/* One byte more than a message: a longer one shows as MSG_TRUNC
	 * (or as the extra byte) instead of passing for a valid one. */
	uint8_t buf[sizeof(*m) + 1];
	union {
		char buf[CMSG_SPACE(HOLD_RECV_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	unsigned nfds = 0;
	ssize_t n;

	*fd = -1;
	*why = NULL;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	/* A SOCK_SEQPACKET read of 0 is the end of the stream (an empty
	 * message reads the same, and ends the connection too). */
	if (n == 0) {
		close_all(&mh);
		return -ECONNRESET;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len >= CMSG_LEN(0))
			nfds += (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		else
			*why = "control data other than SCM_RIGHTS";
	}
	if (mh.msg_flags & MSG_CTRUNC)
		*why = "more fds than any message carries";
	else if (nfds > 1)
		*why = "more than one fd";
	else if ((mh.msg_flags & MSG_TRUNC) || n != (ssize_t)sizeof(*m))
		*why = "message of the wrong size";
	if (*why) {
		close_all(&mh);
		return -EBADMSG;
	}
	memcpy(m, buf, sizeof(*m));
	if (m->magic != HOLD_MAGIC)
		*why = "bad magic";
	else if (!op_known(m->op))
		*why = "unknown op";
	else if (!memchr(m->name, '\0', sizeof(m->name)))
		*why = "name without a terminator";
	else if (m->name[0] && !hold_name_valid(m->name))
		*why = "name with a forbidden byte";
	if (*why) {
		close_all(&mh);
		return -EBADMSG;
	}
	if (nfds == 1)
		memcpy(fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	return 0;
}
