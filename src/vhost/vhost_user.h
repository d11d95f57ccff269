/*
 * vhost_user: the backend side of the vhost-user protocol (QEMU's
 * docs/interop/vhost-user.rst) on a unix socket, for one virtio device.
 *
 * Owns: the listening socket, at most one frontend connection, the guest
 * memory table that connection sent, every virtqueue and the backend
 * request channel (the "slave" fd) used for config-change notifications.
 * The virtio device itself (balloon, blk) plugs in through vu_dev_ops and
 * never touches the socket.
 *
 * Lifecycle: vu_dev_new() listens; a frontend connects (UML does so while
 * booting, before its driver module loads); the device runs; when the
 * connection drops or violates the protocol, every ring and the memory
 * table are torn down and the device listens again.
 *
 * Hostile frontends: every message is checked against its type before its
 * payload is used (size, fd count, ring index, ring size, region table).
 * A malformed message fails the device: it is logged with the device's
 * name, ops->failed() is told why, the connection is closed, and the rest
 * of the daemon is untouched.  A malformed ring (seen by the device in
 * vq_pop) fails the device the same way through vu_dev_fail().
 *
 * Threading: everything runs on the loop thread.
 */
#ifndef EBB_VHOST_USER_H
#define EBB_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guestmem.h"
#include "loop.h"
#include "virtq.h"

#include <linux/virtio_config.h>

#define VU_MAX_QUEUES	8
#define VU_MAX_CONFIG	256	/* config space bytes a message may carry */
#define VU_MAX_FDS	8	/* fds accepted with one message */
#define VU_MAX_PAYLOAD	4096	/* larger messages fail the device */

/* Request codes (frontend to backend) we know of. */
enum vu_request {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_RESET_DEVICE = 34,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_SET_STATUS = 39,
	VU_GET_STATUS = 40,
};

/* Backend-to-frontend requests. */
#define VU_BACKEND_CONFIG_CHANGE_MSG 2

/* Protocol feature bits. */
#define VU_PF_MQ		0
#define VU_PF_REPLY_ACK		3
#define VU_PF_BACKEND_REQ	5
#define VU_PF_CONFIG		9
#define VU_PF_RESET_DEVICE	13
#define VU_PF_STATUS		16

#define VU_F_PROTOCOL_FEATURES	30	/* in GET_FEATURES */
/* VIRTIO_F_VERSION_1 and the other transport bits: <linux/virtio_config.h>. */

struct vu_dev;

struct vu_dev_ops {
	const char *type;		/* "balloon", "blk": for messages */
	uint64_t features;		/* device feature bits we offer */
	uint64_t protocol_features;	/* beyond REPLY_ACK|BACKEND_REQ|CONFIG */
	unsigned nqueues;		/* queues the device can use */
	unsigned config_len;		/* bytes of config space */
	/* Fill @cfg (config_len bytes) with the current config space. */
	void (*get_config)(void *opaque, uint8_t *cfg);
	/* The driver wrote @len bytes at @off (already range-checked). */
	int (*set_config)(void *opaque, uint32_t off, const uint8_t *data,
			  uint32_t len);
	/* The driver negotiated @features. */
	void (*features_set)(void *opaque, uint64_t features);
	/* Queue @q has (or may have) new buffers. */
	void (*queue_kick)(void *opaque, struct vu_dev *dev, unsigned q);
	/* The frontend went away or was disconnected; state was reset. */
	void (*disconnected)(void *opaque);
	/* The device failed for @why (hostile or broken frontend). */
	void (*failed)(void *opaque, const char *why);
	/* A new memory table arrived (e.g. to re-measure residency).  The
	 * old table's mappings are already gone: host pointers taken from
	 * it must be forgotten here. */
	void (*mem_table_set)(void *opaque);
	/* The frontend reset the device (RESET_OWNER, RESET_DEVICE, or
	 * SET_STATUS 0): its rings are gone and whatever the driver set up
	 * through requests no longer holds. */
	void (*reset)(void *opaque);
	/* A restarted ebbd adopted the session (vu_dev_adopt): restore what
	 * the device keeps in vu_dev_state().  0, or -errno (the adoption
	 * fails: a record the device does not understand). */
	int (*adopted)(void *opaque);
};

/*
 * Listen on @path (replacing a stale socket) for a frontend of a device
 * described by @ops.  @name tags log lines ("g1/balloon").  The socket
 * file (mode 0660) appears only once it accepts (usock.h), so a VMM may
 * connect as soon as it sees the file.
 */
int vu_dev_new(struct loop *loop, const char *path, const char *name,
	       const struct vu_dev_ops *ops, void *opaque,
	       struct vu_dev **out);
/* Close everything and unlink the socket. */
void vu_dev_free(struct vu_dev *dev);

const char *vu_dev_name(const struct vu_dev *dev);
bool vu_dev_connected(const struct vu_dev *dev);
bool vu_dev_is_failed(const struct vu_dev *dev);
uint64_t vu_dev_features(const struct vu_dev *dev);
struct vq *vu_dev_vq(struct vu_dev *dev, unsigned q);
struct guestmem *vu_dev_mem(struct vu_dev *dev);

/*
 * Fail the device: log @why with the device's name, tell ops->failed(),
 * stop serving its rings and drop the connection.  For protocol and ring
 * violations.  Safe to call from inside ops callbacks.
 */
void vu_dev_fail(struct vu_dev *dev, const char *why);

/*
 * Make the frontend wait: called from inside ops->mem_table_set, it keeps
 * the ack of that SET_MEM_TABLE back and stops reading the connection
 * until vu_dev_release(@token).  A frontend that asked for the ack (UML
 * always does) blocks in its probe meanwhile: that is how ebbd holds a
 * guest's boot while it preallocates the guest's RAM.  One without
 * REPLY_ACK runs on and its later messages queue in the socket.
 * -EINVAL if no frontend is connected or a hold is already in force.
 */
int vu_dev_hold(struct vu_dev *dev, uint64_t *token);
/*
 * End the hold taken with @token: send the owed ack (failure if @result
 * < 0) and resume reading.  A no-op if that connection has gone since
 * (the token names the connection), so it is safe to call late.
 */
void vu_dev_release(struct vu_dev *dev, uint64_t token, int result);

/*
 * Report every fd the device's session depends on as it arrives and as it
 * goes, so that ebbd can hold them across its own death (fdhold.h): @kind
 * is "conn", "backend", "kick/<q>", "call/<q>" or "mem/<region>" (the
 * memory table's files); @fd is the device's own
 * fd (the hook may send a copy, never close it) or -1 once it is closed.
 * A replaced fd is reported once, with the new one.  Set before a
 * frontend connects; @hook NULL stops the reports.
 */
typedef void (*vu_fd_hook)(void *opaque, const struct vu_dev *dev,
			   const char *kind, int fd);
void vu_dev_set_fd_hook(struct vu_dev *dev, vu_fd_hook hook, void *opaque);
/* Report every session fd the device has now to its hook again (the
 * holder was replaced and holds none of them). */
void vu_dev_report_fds(struct vu_dev *dev);

/*
 * Keep the device's session in a memfd (vsession.h) from now on, so that a
 * restarted ebbd can adopt it: call before a frontend connects.  The memfd
 * is reported to the fd hook as "session".  0, -EBUSY (connected) or
 * -errno.
 */
int vu_dev_keep_session(struct vu_dev *dev);
/*
 * The device's own durable state (VS_DEV_BYTES, zeroed at first): kept in
 * the session record when there is one, so a device writes there what it
 * must find again after a restart (the balloon's actual size, the ebb
 * device's table).  Valid for the device's life.
 */
uint8_t *vu_dev_state(struct vu_dev *dev);

#define VU_WHY_MAX 160

/* Get the held fd of @kind (as the fd hook named it) for the adopting
 * device to own, or -1 if none is held. */
typedef int (*vu_fd_take)(void *opaque, const char *kind);

/*
 * Adopt the session an earlier ebbd recorded in @session_fd (taken over,
 * closed on failure), on a device made with vu_dev_new and no frontend
 * yet: check the record, get its fds through @take (the connection, the
 * backend channel, each memory region's file, each ring's kick and call),
 * map the memory table, rebuild each ring and recover its in-flight
 * requests, watch the connection.  The device's features_set and
 * mem_table_set ops are called as a new session would.  The device then
 * restores its own state (vu_dev_state) and calls vu_dev_resume.  0, or
 * -errno with the reason in @why (VU_WHY_MAX bytes): the device is left
 * without a frontend and the record untouched.
 */
int vu_dev_adopt(struct vu_dev *dev, int session_fd, vu_fd_take take,
		 void *opaque, char *why);
/*
 * Let go of the session without touching its record or telling the fd
 * hook (which is removed): for an adoption given up halfway, before
 * vu_dev_free, so that what the holder keeps stays as it was.
 */
void vu_dev_abandon(struct vu_dev *dev);
/*
 * Serve again: answer the request the earlier ebbd left unanswered, run
 * the requests it left in flight, look at every ring and signal each once.
 */
void vu_dev_resume(struct vu_dev *dev);

/* Tell the driver its config space changed (backend request channel). */
int vu_dev_config_changed(struct vu_dev *dev);

/*
 * Use @fd, an already connected stream socket, as the frontend connection
 * (for tests and fuzzing, or a VMM that hands over a socketpair).  With
 * @path NULL, vu_dev_new() creates a device that does not listen.
 * Returns 0, or -EBUSY if a frontend is already connected.
 */
int vu_dev_attach(struct vu_dev *dev, int fd);
/* Read and handle whatever is pending on the connection, as the loop does
 * on EPOLLIN.  Returns 0, or -ECONNRESET once the connection is gone. */
int vu_dev_process(struct vu_dev *dev);

#endif
