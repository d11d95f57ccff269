/*
 * fdhold: keeps the fds a guest's devices depend on open in a process
 * that outlives ebbd, and hands them to the next ebbd (docs/restart.md
 * 2.1).  UML's virtio_uml never reconnects: a device whose connection
 * socket closes is gone from the guest for good, so a crash of ebbd must
 * not close it.
 *
 * ebbd puts each fd under a name as it gets it ("guest/g1/g1/balloon/
 * conn", holdproto.h's name rules) and drops the name when the fd goes;
 * at start it takes everything held back as (name, fd) pairs.  Putting
 * costs one message per fd at device setup, nothing per I/O: ebbd keeps
 * using its own copy.
 *
 * Two back ends behind one const ops table:
 *   systemd  NOTIFY_SOCKET is set: sd_pid_notify_with_fds() with
 *            FDSTORE=1 and FDNAME= (the unit needs
 *            FileDescriptorStoreMax=), FDSTOREREMOVE=1 to drop; the next
 *            ebbd gets them as LISTEN_FDS with LISTEN_FDNAMES.
 *   holder   otherwise: ebb-holder (src/holder/) on <run-dir>/holder.sock,
 *            started by ebbd if none answers there.
 *
 * Failures are the caller's to log; a guest runs on without its fds held
 * (it just would not survive an ebbd crash).  Threading: loop thread only
 * (calls block for at most a few seconds if the holder stalls).
 */
#ifndef EBB_FDHOLD_H
#define EBB_FDHOLD_H

#include <stdbool.h>

#include "holdproto.h"

enum fdhold_mode {
	FDHOLD_AUTO,		/* systemd if NOTIFY_SOCKET, else holder */
	FDHOLD_HOLDER,
	FDHOLD_SYSTEMD,
	FDHOLD_OFF,
};

/* One fd got back from the holder or the fd store; the caller owns fd. */
struct fdhold_fd {
	char name[HOLD_NAME_MAX];
	int fd;
};

struct fdhold;

/*
 * Open the back end @mode picks.  holder: connect to <@run_dir>/holder.sock,
 * or start @holder_exe there (its stderr to @log_path, NULL: /dev/null)
 * and connect.  0, or -errno (-ENOENT: no holder program; -ENOTSUP:
 * systemd asked without NOTIFY_SOCKET).  FDHOLD_OFF gives -ENOTSUP too.
 */
int fdhold_open(enum fdhold_mode mode, const char *run_dir,
		const char *holder_exe, const char *log_path,
		struct fdhold **out);
/* "holder (pid N)" or "systemd fd store", for log lines. */
const char *fdhold_describe(const struct fdhold *h);

/* Hold @fd (a copy of it; the caller keeps its own) under @name,
 * replacing what @name held.  0 or -errno. */
int fdhold_put(struct fdhold *h, const char *name, int fd);
/* Close what @name holds.  0, -ENOENT (nothing under it) or -errno. */
int fdhold_drop(struct fdhold *h, const char *name);
/*
 * Everything held, as a malloc'd array of *@n entries (free it; close
 * the fds not kept).  The holder keeps its copies.  Under systemd the
 * fds are the ones this process was started with, so only the first
 * take returns any.
 */
int fdhold_take(struct fdhold *h, struct fdhold_fd **out, unsigned *n);
/*
 * @fn(@opaque) is called when the holder had died and a new one was
 * started in its place (by a put or drop that found the connection
 * gone): the new one holds nothing put before, so @fn puts everything
 * again.  Puts made from @fn do not restart the holder again.  Only the
 * holder back end calls it (the fd store lives as long as the unit).
 */
void fdhold_on_restart(struct fdhold *h, void (*fn)(void *opaque),
		       void *opaque);
/*
 * Is the holder still there?  A non-blocking look at the connection (the
 * holder never speaks unasked, so anything readable is its end); if it
 * has died, start another and call the restart function.  For a timer:
 * without it a dead holder is noticed only at the next put or drop, and
 * a crash of ebbd before that would lose every device.  0 (fine, or not
 * the holder back end), 1 (restarted) or -errno (could not restart).
 */
int fdhold_check(struct fdhold *h);
/* Disconnect; with @quit, the holder exits if it holds nothing (a clean
 * ebbd exit, every guest stopped). */
void fdhold_close(struct fdhold *h, bool quit);

/* Parse "auto", "holder", "systemd", "off". 0 or -EINVAL. */
int fdhold_mode_parse(const char *s, enum fdhold_mode *out);
const char *fdhold_mode_name(enum fdhold_mode m);

#endif
