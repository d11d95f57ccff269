/*
 * holdproto: the wire format between ebbd and ebb-holder, the process that
 * keeps ebbd's device fds open while no ebbd runs (docs/restart.md 2.1).
 *
 * One SOCK_SEQPACKET connection, so every message arrives whole or not at
 * all and its length is known.  Every message, both ways, is one struct
 * hold_msg (exact size, host byte order: both ends are on one host) and at
 * most one fd in SCM_RIGHTS:
 *
 *   offset size field
 *        0    4 magic   HOLD_MAGIC
 *        4    4 op      enum hold_op
 *        8    4 result  replies: 0 or -errno
 *       12    4 count   HOLD_DONE after HOLD_TAKE: entries sent
 *       16  256 name    NUL-terminated hold name, NUL-padded
 *
 *   ebbd -> holder          holder -> ebbd
 *   PUT name + 1 fd         DONE result        (a PUT of a held name
 *   DROP name               DONE result         replaces its fd)
 *   TAKE                    ENTRY name + 1 fd, ..., DONE result count
 *   QUIT                    DONE result        (-EBUSY: still holds fds)
 *
 * A hold name is what systemd's FDNAME= accepts and a little less:
 * 1..255 bytes of printable ASCII without spaces and ':'
 * ("guest/g1/g1/balloon/conn").
 *
 * hold_msg_recv() is the one reader on both sides and treats its input as
 * hostile: a message of the wrong size, with an unknown magic or op, with
 * more than one fd, with truncated control data or with a name that is
 * unterminated or has a forbidden byte is refused with -EBADMSG and a
 * reason, and every fd that came with it is closed.  Whether an op needs
 * an fd is the caller's rule (hold_op_wants_fd()).
 */
#ifndef EBB_HOLDPROTO_H
#define EBB_HOLDPROTO_H

#include <stdbool.h>
#include <stdint.h>

#define HOLD_MAGIC	0x31484245u	/* "EBH1" */
#define HOLD_NAME_MAX	256		/* bytes including the NUL */
#define HOLD_SOCK_NAME	"holder.sock"	/* in ebbd's run directory */

enum hold_op {
	HOLD_PUT = 1,
	HOLD_DROP = 2,
	HOLD_TAKE = 3,
	HOLD_QUIT = 4,
	HOLD_ENTRY = 16,
	HOLD_DONE = 17,
};

struct hold_msg {
	uint32_t magic;			/* HOLD_MAGIC */
	uint32_t op;			/* enum hold_op */
	int32_t result;			/* replies: 0 or -errno */
	uint32_t count;			/* DONE after TAKE: entries sent */
	char name[HOLD_NAME_MAX];	/* NUL-terminated, NUL-padded */
};

_Static_assert(sizeof(struct hold_msg) == 16 + HOLD_NAME_MAX,
	       "hold_msg layout is the wire format");

/* Is @name a valid hold name (see above)? */
bool hold_name_valid(const char *name);
/* Does a message with @op carry exactly one fd (PUT, ENTRY)? */
bool hold_op_wants_fd(uint32_t op);

/*
 * Send one message of @op with @name (NULL: none), @result, @count and
 * @fd (-1: none).  Never raises SIGPIPE.  0 or -errno (-ENAMETOOLONG,
 * -EINVAL for an invalid non-empty name).
 */
int hold_msg_send(int sock, uint32_t op, const char *name, int32_t result,
		  uint32_t count, int fd);
/*
 * Receive one message into @m and its fd into *@fd (-1 if none; the
 * caller owns it, close-on-exec set).  0; -ECONNRESET at end of stream;
 * -EAGAIN (non-blocking, or a timeout); -EBADMSG with *@why set for a
 * refused message (its fds already closed); other -errno.
 */
int hold_msg_recv(int sock, struct hold_msg *m, int *fd, const char **why);

#endif
