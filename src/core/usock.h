/*
 * usock: a listening Unix stream socket that appears at its path only
 * once it accepts connections.
 *
 * bind() creates the socket file, and until listen() a client that sees
 * the file and connects is refused (ECONNREFUSED).  Clients of ebbd (a
 * script waiting for the control socket, another VMM waiting for a device
 * socket) reasonably take "the file exists" to mean "ready", so the
 * socket is bound under a temporary name beside the path, given its mode,
 * put to listening, and only then renamed onto the path (rename replaces
 * whatever was there, atomically).
 */
#ifndef EBB_USOCK_H
#define EBB_USOCK_H

#include <sys/stat.h>
#include <sys/types.h>

/* Listen on @path (its directory must exist) with file mode @mode and
 * @backlog; the socket is non-blocking and close-on-exec.  The file at
 * @path, if any, is replaced: the caller decides beforehand whether that
 * is safe.  *@st gets the socket file's stat (to recognise it later), if
 * @st is not NULL.  Returns the fd, or -ENAMETOOLONG (no room for the
 * temporary name in sun_path) or -errno; on failure nothing is left at
 * either name. */
int usock_listen(const char *path, mode_t mode, int backlog, struct stat *st);

#define USOCK_MAX_FDS 32	/* fds one usock_send_fds() call can pass */

/* Send @len bytes of @buf on @sock with @nfds fds from @fds as SCM_RIGHTS
 * (none if 0), without SIGPIPE, retrying on EINTR.  Returns the bytes
 * sent, or -EINVAL (more than USOCK_MAX_FDS fds) or -errno. */
ssize_t usock_send_fds(int sock, const void *buf, size_t len, const int *fds,
		       unsigned nfds);

#endif
