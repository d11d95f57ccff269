/*
 * libFuzzer target: the ebb-holder wire format (holdproto).  Both ends
 * read with hold_msg_recv(); the holder's peer is any process of its uid,
 * so every byte and every fd count is hostile.
 *
 * Input: byte 0 says how many fds (0..15, of /dev/null) go with the
 * message; the rest is the message, sent as one SOCK_SEQPACKET datagram
 * (an empty one is the end of the stream).
 *
 * Oracle, beyond ASan/UBSan: a message is accepted only with the right
 * magic, a known op, a terminated and valid (or empty) name and at most
 * one fd; a refusal names its reason; and no fd leaks either way (the
 * lowest free fd number is the same before and after).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "holdproto.h"
#include "usock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int lowest_free_fd(void)
{
	int fd = dup(0);

	if (fd >= 0)
		close(fd);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned nfds;
	int sp[2], fds[16], before, fd, rc;
	struct hold_msg m;
	const char *why;

	if (size < 1 || size > 2 * sizeof(m))
		return 0;
	nfds = data[0] & 15;
	before = lowest_free_fd();
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return 0;
	for (unsigned i = 0; i < nfds; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (usock_send_fds(sp[0], data + 1, size - 1, fds, nfds) < 0)
		abort();
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	close(sp[0]);
	rc = hold_msg_recv(sp[1], &m, &fd, &why);
	if (rc == 0) {
		if (m.magic != HOLD_MAGIC || nfds > 1 || (fd >= 0) != (nfds == 1) ||
		    !memchr(m.name, '\0', sizeof(m.name)) ||
		    (m.name[0] && !hold_name_valid(m.name)) || size - 1 != sizeof(m))
			abort();
		if (fd >= 0)
			close(fd);
	} else if (rc == -EBADMSG) {
		if (!why || fd != -1)
			abort();
	} else if (rc != -ECONNRESET || size != 1) {
		abort();
	}
	close(sp[1]);
	if (lowest_free_fd() != before)
		abort();
	return 0;
}
