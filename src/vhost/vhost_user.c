/*
 * vhost-user backend.
 *
 * Message framing (vhost-user.rst, "Message Specification"): a 12-byte
 * header {u32 request; u32 flags; u32 size} followed by size bytes of
 * payload; file descriptors ride as SCM_RIGHTS ancillary data on the
 * header's bytes.  We read the connection non-blocking into a per-device
 * buffer, so a message split across reads is reassembled and a frontend
 * that stalls mid-message never blocks the loop.
 *
 * Replies: GET_* requests always get a reply.  Other requests get a u64
 * status reply only when REPLY_ACK was negotiated and the frontend set
 * NEED_REPLY (UML sets it on every such message and waits for it).
 *
 * Order of a UML frontend (arch/um/drivers/virtio_uml.c, Linux 6.1):
 * SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_BACKEND_REQ_FD
 * at boot; then, once the driver binds: GET_CONFIG, SET_FEATURES,
 * SET_MEM_TABLE, per queue SET_VRING_CALL/NUM/BASE/ADDR, then per queue
 * SET_VRING_KICK and SET_VRING_ENABLE.
 */
#include "vhost_user.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "usock.h"

#define VU_VERSION		0x1
#define VU_FLAG_VERSION_MASK	0x3
#define VU_FLAG_REPLY		(1u << 2)
#define VU_FLAG_NEED_REPLY	(1u << 3)
#define VU_HDR_SIZE		12
#define VU_VRING_IDX_MASK	0xffu
#define VU_VRING_NOFD		(1u << 8)

/* Protocol features every ebb device offers. */
#define VU_PF_BASE ((1ull << VU_PF_REPLY_ACK) | (1ull << VU_PF_BACKEND_REQ) | \
		    (1ull << VU_PF_CONFIG))

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
};

struct vu_dev {
	struct loop *loop;
	const struct vu_dev_ops *ops;
	void *opaque;
	char name[64];		/* "guest/type", for log lines */
	char *path;		/* listening socket path, NULL if none */
	int listen_fd;		/* -1 if none */
	struct loop_watch *listen_w;
	int conn_fd;		/* frontend connection, -1 if none */
	struct loop_watch *conn_w;
	int backend_fd;		/* backend request channel, -1 if none */
	bool failed;		/* a violation was seen; cleared on reconnect */
	uint64_t conn_gen;	/* bumped at every connect and disconnect */
	/* A held message (vu_dev_hold): its ack is owed, reading paused. */
	bool hold_asked;	/* set by vu_dev_hold during a handler */
	bool held;
	struct vu_hdr held_hdr;
	uint64_t features;	/* negotiated virtio features */
	uint64_t protocol_features;	/* negotiated protocol features */
	struct guestmem mem;
	struct vq vqs[VU_MAX_QUEUES];
	struct loop_watch *kick_w[VU_MAX_QUEUES];
	/* Reassembly of one message. */
	uint8_t buf[VU_HDR_SIZE + VU_MAX_PAYLOAD];
	size_t have;		/* bytes of buf filled */
	int fds[VU_MAX_FDS];	/* fds received with the current message */
	unsigned nfds;
};

/* ---- small helpers ---------------------------------------------------- */

static void close_msg_fds(struct vu_dev *dev)
{
	for (unsigned i = 0; i < dev->nfds; i++)
		if (dev->fds[i] >= 0)
			close(dev->fds[i]);
	dev->nfds = 0;
}

/* Take ownership of received fd @i (so close_msg_fds leaves it). */
static int take_fd(struct vu_dev *dev, unsigned i)
{
	int fd = dev->fds[i];

	dev->fds[i] = -1;
	return fd;
}

static uint64_t offered_features(const struct vu_dev *dev)
{
	return dev->ops->features | (1ull << VIRTIO_F_VERSION_1) |
	       (1ull << VU_F_PROTOCOL_FEATURES);
}

static uint64_t offered_protocol_features(const struct vu_dev *dev)
{
	return VU_PF_BASE | dev->ops->protocol_features;
}

const char *vu_dev_name(const struct vu_dev *dev)
{
	return dev->name;
}

bool vu_dev_connected(const struct vu_dev *dev)
{
	return dev->conn_fd >= 0;
}

bool vu_dev_is_failed(const struct vu_dev *dev)
{
	return dev->failed;
}

uint64_t vu_dev_features(const struct vu_dev *dev)
{
	return dev->features;
}

struct vq *vu_dev_vq(struct vu_dev *dev, unsigned q)
{
	return q < dev->ops->nqueues ? &dev->vqs[q] : NULL;
}

struct guestmem *vu_dev_mem(struct vu_dev *dev)
{
	return &dev->mem;
}

/* ---- connection teardown ---------------------------------------------- */

static void reset_state(struct vu_dev *dev)
{
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
		loop_watch_del(dev->kick_w[q]);
		dev->kick_w[q] = NULL;
		vq_reset(&dev->vqs[q]);
	}
	gm_clear(&dev->mem);
	if (dev->backend_fd >= 0)
		close(dev->backend_fd);
	dev->backend_fd = -1;
	dev->features = 0;
	dev->protocol_features = 0;
	dev->have = 0;
	close_msg_fds(dev);
}

static void disconnect(struct vu_dev *dev)
{
	if (dev->conn_fd < 0)
		return;
	loop_watch_del(dev->conn_w);
	dev->conn_w = NULL;
	close(dev->conn_fd);
	dev->conn_fd = -1;
	dev->conn_gen++;
	dev->held = dev->hold_asked = false;
	reset_state(dev);
	if (dev->ops->disconnected)
		dev->ops->disconnected(dev->opaque);
}

void vu_dev_fail(struct vu_dev *dev, const char *why)
{
	if (dev->failed)
		return;
	dev->failed = true;
	log_warn(dev->name, "device failed: %s; disconnecting frontend", why);
	if (dev->ops->failed)
		dev->ops->failed(dev->opaque, why);
	disconnect(dev);
}

/* ---- replies ---------------------------------------------------------- */

static int send_reply(struct vu_dev *dev, int fd, const struct vu_hdr *req,
		      const void *payload, uint32_t size)
{
	uint8_t out[VU_HDR_SIZE + VU_MAX_PAYLOAD];
	struct vu_hdr h = {
		.request = req->request,
		.flags = VU_VERSION | VU_FLAG_REPLY,
		.size = size,
	};
	size_t len = VU_HDR_SIZE + size, off = 0;

	memcpy(out, &h, VU_HDR_SIZE);
	memcpy(out + VU_HDR_SIZE, payload, size);
	/* Replies are tiny; a frontend that does not drain its socket is
	 * broken, and blocking would stall every guest, so give up. */
	while (off < len) {
		ssize_t n = send(fd, out + off, len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		off += (size_t)n;
	}
	return 0;
}

static int reply_u64(struct vu_dev *dev, int fd, const struct vu_hdr *req,
		     uint64_t v)
{
	return send_reply(dev, fd, req, &v, sizeof(v));
}

/* ---- message handlers ------------------------------------------------- */

/* Check a vring-state or vring-fd message's queue index. */
static struct vq *msg_vq(struct vu_dev *dev, uint32_t index, const char **why)
{
	if (index >= dev->ops->nqueues) {
		*why = "ring index out of range";
		return NULL;
	}
	return &dev->vqs[index];
}

static void on_kick(void *opaque, uint32_t events);

struct kick_ctx {
	struct vu_dev *dev;
	unsigned q;
};

static int set_vring_fd(struct vu_dev *dev, uint32_t req, uint64_t v,
			const char **why)
{
	unsigned q = (unsigned)(v & VU_VRING_IDX_MASK);
	bool nofd = v & VU_VRING_NOFD;
	struct vq *vq;
	int fd = -1;

	if (v & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD)) {
		*why = "reserved bits set in ring fd message";
		return -EINVAL;
	}
	vq = msg_vq(dev, (uint32_t)q, why);
	if (!vq)
		return -EINVAL;
	if (nofd != (dev->nfds == 0) || dev->nfds > 1) {
		*why = "ring fd message with wrong number of fds";
		return -EINVAL;
	}
	if (!nofd) {
		fd = take_fd(dev, 0);
		/* Never block the loop on a guest's fd. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	}
	switch (req) {
	case VU_SET_VRING_KICK:
		loop_watch_del(dev->kick_w[q]);
		dev->kick_w[q] = NULL;
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
		vq->kick_fd = fd;
		vq->started = true;
		if (fd >= 0) {
			/* q fits in the pointer: avoids a per-queue alloc. */
			int rc = loop_watch_add(dev->loop, fd, EPOLLIN, on_kick,
						&dev->vqs[q], &dev->kick_w[q]);
			if (rc < 0) {
				/* A regular file (EPERM) or worse: the ring
				 * could never be kicked, so the device would
				 * hang silently.  Hostile or broken: fail it. */
				*why = "kick fd cannot be polled";
				return -EINVAL;
			}
		}
		/* Buffers may already be waiting. */
		if (vq_ready(vq) && dev->ops->queue_kick)
			dev->ops->queue_kick(dev->opaque, dev, q);
		break;
	case VU_SET_VRING_CALL:
		if (vq->call_fd >= 0)
			close(vq->call_fd);
		vq->call_fd = fd;
		break;
	default:		/* SET_VRING_ERR: we never signal errors there */
		if (fd >= 0)
			close(fd);
		break;
	}
	return 0;
}

static int set_mem_table(struct vu_dev *dev, const uint8_t *p, uint32_t size,
			 const char **why)
{
	struct gm_region_desc d[GM_MAX_REGIONS];
	int fds[GM_MAX_REGIONS];
	uint32_t n;
	int rc;

	if (size < 8) {
		*why = "short memory table";
		return -EINVAL;
	}
	memcpy(&n, p, 4);
	/* QEMU sends exactly n regions; UML sends the whole 8-slot table
	 * with the unused slots zeroed.  Accept both, nothing else. */
	if (n == 0 || n > GM_MAX_REGIONS || size < 8 + 32 * n ||
	    size > 8 + 32 * GM_MAX_REGIONS) {
		*why = "memory table region count does not match its size";
		return -EINVAL;
	}
	if (dev->nfds != n) {
		*why = "memory table needs one fd per region";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		memcpy(&d[i], p + 8 + 32 * i, 32);
		fds[i] = take_fd(dev, i);
	}
	rc = gm_set_table(&dev->mem, d, fds, n);
	if (rc < 0) {
		/* The old table is gone and the rings pointed into it: whatever
		 * the reason (bad region, unmappable fd), the device cannot go
		 * on, so this is a violation that fails it. */
		for (unsigned q = 0; q < dev->ops->nqueues; q++) {
			dev->vqs[q].desc = NULL;
			dev->vqs[q].avail = NULL;
			dev->vqs[q].used = NULL;
		}
		*why = "invalid memory region (overlap, overflow, short or unmappable file)";
		return -EINVAL;
	}
	/* Rings live in guest memory: re-translate them. */
	for (unsigned q = 0; q < dev->ops->nqueues; q++) {
		if (vq_map(&dev->vqs[q], &dev->mem) < 0) {
			*why = "ring lies outside the new memory table";
			return -EFAULT;
		}
	}
	log_debug(dev->name, "memory table: %u region(s), %llu MiB", n,
		  (unsigned long long)(gm_total_bytes(&dev->mem) >> 20));
	if (dev->ops->mem_table_set)
		dev->ops->mem_table_set(dev->opaque);
	return 0;
}

static int handle_config(struct vu_dev *dev, int fd, const struct vu_hdr *h,
			 const uint8_t *p, bool *replied, const char **why)
{
	uint8_t cfg[VU_MAX_CONFIG] = { 0 };
	uint8_t out[12 + VU_MAX_CONFIG];
	uint32_t off, len;

	if (h->size < 12) {
		*why = "short config message";
		return -EINVAL;
	}
	memcpy(&off, p, 4);
	memcpy(&len, p + 4, 4);
	if (len > VU_MAX_CONFIG || h->size != 12 + len ||
	    off > dev->ops->config_len || len > dev->ops->config_len - off) {
		*why = "config access out of range";
		return -EINVAL;
	}
	if (h->request == VU_SET_CONFIG) {
		if (!dev->ops->set_config)
			return -ENOTSUP;
		return dev->ops->set_config(dev->opaque, off, p + 12, len);
	}
	dev->ops->get_config(dev->opaque, cfg);
	memcpy(out, p, 12);
	/* UML asks for [0, off+len) with offset 0 and copies from off. */
	memcpy(out + 12, cfg + off, len);
	*replied = true;
	return send_reply(dev, fd, h, out, 12 + len);
}

/*
 * Handle one complete message.  Returns 0, or -errno with *why set; a
 * protocol violation (-EINVAL/-EFAULT/-EPROTO) fails the device, other
 * errors are reported to the frontend in the ack.
 */
static int handle_msg(struct vu_dev *dev, int fd, const struct vu_hdr *h,
		      const uint8_t *p, bool *replied, const char **why)
{
	uint64_t v = 0;
	uint32_t st[2] = { 0, 0 };	/* vring state: index, num */
	struct vq *vq;

	*replied = false;
	/* Fixed-size payloads first: anything else is a violation. */
	switch (h->request) {
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES:
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
	case VU_SET_STATUS:
		if (h->size != 8) {
			*why = "u64 message with wrong payload size";
			return -EINVAL;
		}
		memcpy(&v, p, 8);
		break;
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		if (h->size != 8) {
			*why = "vring state message with wrong payload size";
			return -EINVAL;
		}
		memcpy(st, p, 8);
		break;
	case VU_SET_VRING_ADDR:
		if (h->size != 40) {
			*why = "vring address message with wrong payload size";
			return -EINVAL;
		}
		break;
	case VU_GET_FEATURES:
	case VU_GET_PROTOCOL_FEATURES:
	case VU_SET_OWNER:
	case VU_RESET_OWNER:
	case VU_RESET_DEVICE:
	case VU_GET_QUEUE_NUM:
	case VU_GET_MAX_MEM_SLOTS:
	case VU_GET_STATUS:
		/* These take no payload; bytes there mean the frontend and
		 * we disagree about the message. */
		if (h->size != 0) {
			*why = "payload on a message that takes none";
			return -EINVAL;
		}
		break;
	default:
		break;
	}
	/* Only these requests carry fds. */
	if (dev->nfds && h->request != VU_SET_MEM_TABLE &&
	    h->request != VU_SET_VRING_KICK && h->request != VU_SET_VRING_CALL &&
	    h->request != VU_SET_VRING_ERR &&
	    h->request != VU_SET_BACKEND_REQ_FD) {
		*why = "unexpected file descriptors";
		return -EINVAL;
	}

	switch (h->request) {
	case VU_GET_FEATURES:
		*replied = true;
		return reply_u64(dev, fd, h, offered_features(dev));
	case VU_SET_FEATURES:
		if (v & ~offered_features(dev)) {
			*why = "driver accepted features we did not offer";
			return -EINVAL;
		}
		dev->features = v;
		if (dev->ops->features_set)
			dev->ops->features_set(dev->opaque, v);
		return 0;
	case VU_GET_PROTOCOL_FEATURES:
		*replied = true;
		return reply_u64(dev, fd, h, offered_protocol_features(dev));
	case VU_SET_PROTOCOL_FEATURES:
		if (v & ~offered_protocol_features(dev)) {
			*why = "frontend set protocol features we did not offer";
			return -EINVAL;
		}
		dev->protocol_features = v;
		return 0;
	case VU_SET_OWNER:
		return 0;
	case VU_RESET_OWNER:
	case VU_RESET_DEVICE:
		for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
			loop_watch_del(dev->kick_w[q]);
			dev->kick_w[q] = NULL;
			vq_reset(&dev->vqs[q]);
		}
		return 0;
	case VU_GET_QUEUE_NUM:
		*replied = true;
		return reply_u64(dev, fd, h, dev->ops->nqueues);
	case VU_GET_MAX_MEM_SLOTS:
		*replied = true;
		return reply_u64(dev, fd, h, GM_MAX_REGIONS);
	case VU_SET_MEM_TABLE:
		return set_mem_table(dev, p, h->size, why);
	case VU_SET_BACKEND_REQ_FD:
		if (dev->nfds != 1) {
			*why = "backend request fd message without one fd";
			return -EINVAL;
		}
		if (dev->backend_fd >= 0)
			close(dev->backend_fd);
		dev->backend_fd = take_fd(dev, 0);
		fcntl(dev->backend_fd, F_SETFL,
		      fcntl(dev->backend_fd, F_GETFL) | O_NONBLOCK);
		return 0;
	case VU_SET_VRING_NUM:
		vq = msg_vq(dev, st[0], why);
		if (!vq)
			return -EINVAL;
		if (st[1] == 0 || st[1] > VQ_MAX_SIZE || (st[1] & (st[1] - 1))) {
			*why = "ring size not a power of two up to 1024";
			return -EINVAL;
		}
		vq->num = (uint16_t)st[1];
		if (vq_map(vq, &dev->mem) < 0) {
			*why = "ring outside guest memory";
			return -EFAULT;
		}
		return 0;
	case VU_SET_VRING_ADDR: {
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} a;

		memcpy(&a, p, sizeof(a));
		vq = msg_vq(dev, a.index, why);
		if (!vq)
			return -EINVAL;
		vq->desc_addr = a.desc;
		vq->used_addr = a.used;
		vq->avail_addr = a.avail;
		vq->addr_set = true;
		if (vq_map(vq, &dev->mem) < 0) {
			*why = "ring address outside guest memory or misaligned";
			return -EFAULT;
		}
		return 0;
	}
	case VU_SET_VRING_BASE:
		vq = msg_vq(dev, st[0], why);
		if (!vq)
			return -EINVAL;
		if (st[1] > 0xffff) {
			*why = "ring base beyond 16 bits";
			return -EINVAL;
		}
		vq->last_avail = (uint16_t)st[1];
		vq->used_idx = (uint16_t)st[1];
		return 0;
	case VU_GET_VRING_BASE: {
		uint32_t out[2];

		vq = msg_vq(dev, st[0], why);
		if (!vq)
			return -EINVAL;
		/* Stops the ring (spec: "stop ring upon receiving"). */
		loop_watch_del(dev->kick_w[st[0]]);
		dev->kick_w[st[0]] = NULL;
		out[0] = st[0];
		out[1] = vq->last_avail;
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
		vq->kick_fd = -1;
		vq->started = false;
		*replied = true;
		return send_reply(dev, fd, h, out, sizeof(out));
	}
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		return set_vring_fd(dev, h->request, v, why);
	case VU_SET_VRING_ENABLE:
		vq = msg_vq(dev, st[0], why);
		if (!vq)
			return -EINVAL;
		if (st[1] > 1) {
			*why = "ring enable value not 0 or 1";
			return -EINVAL;
		}
		vq->enabled = st[1];
		if (vq_ready(vq) && dev->ops->queue_kick)
			dev->ops->queue_kick(dev->opaque, dev, st[0]);
		return 0;
	case VU_GET_CONFIG:
	case VU_SET_CONFIG:
		return handle_config(dev, fd, h, p, replied, why);
	case VU_SET_STATUS:
		return 0;
	case VU_GET_STATUS:
		*replied = true;
		return reply_u64(dev, fd, h, 0);
	default:
		/* Logging and other optional requests we did not offer. */
		*why = "unsupported request";
		return -ENOTSUP;
	}
}

/* A complete message is in dev->buf: check, dispatch, ack. */
static int dispatch(struct vu_dev *dev, int fd)
{
	struct vu_hdr h;
	const char *why = "error";
	bool replied;
	int rc, wr;

	memcpy(&h, dev->buf, VU_HDR_SIZE);
	dev->hold_asked = false;
	rc = handle_msg(dev, fd, &h, dev->buf + VU_HDR_SIZE, &replied, &why);
	close_msg_fds(dev);
	if (rc == -EPIPE)
		return rc;
	if (rc == 0 && dev->hold_asked && dev->conn_fd >= 0) {
		/* The device wants the frontend to wait (vu_dev_hold): owe
		 * the ack and read nothing more until vu_dev_release. */
		dev->hold_asked = false;
		dev->held = true;
		dev->held_hdr = h;
		loop_watch_mod(dev->conn_w, 0);
		return 0;
	}
	dev->hold_asked = false;
	if (rc == -EINVAL || rc == -EFAULT) {
		char msg[128];

		snprintf(msg, sizeof(msg), "request %u: %s", h.request, why);
		vu_dev_fail(dev, msg);
		return -ECONNRESET;
	}
	if (rc < 0)
		log_warn(dev->name, "request %u refused: %s (%s)", h.request,
			 why, strerror(-rc));
	if (!replied && (h.flags & VU_FLAG_NEED_REPLY) &&
	    (dev->protocol_features & (1ull << VU_PF_REPLY_ACK))) {
		wr = reply_u64(dev, fd, &h, rc < 0 ? 1 : 0);
		if (wr < 0)
			return wr;
	}
	return 0;
}

/* ---- reading ---------------------------------------------------------- */

static int recv_some(struct vu_dev *dev, size_t want)
{
	union {
		char buf[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { dev->buf + dev->have, want - dev->have };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	ssize_t n = recvmsg(dev->conn_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	if (n < 0)
		return (errno == EAGAIN || errno == EINTR) ? -EAGAIN : -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t nf;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nf = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nf; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (dev->nfds < VU_MAX_FDS)
				dev->fds[dev->nfds++] = f;
			else
				close(f);
		}
	}
	dev->have += (size_t)n;
	if (mh.msg_flags & MSG_CTRUNC)
		return -EMSGSIZE;
	return 0;
}

int vu_dev_process(struct vu_dev *dev)
{
	/* Bounded: at most this many messages per wakeup, so one chatty
	 * frontend cannot starve the other guests. */
	for (int budget = 64; budget > 0 && dev->conn_fd >= 0 && !dev->held;
	     budget--) {
		struct vu_hdr h;
		int rc;

		if (dev->have < VU_HDR_SIZE) {
			rc = recv_some(dev, VU_HDR_SIZE);
			if (rc == -EAGAIN)
				return 0;
			if (rc == -EMSGSIZE) {
				vu_dev_fail(dev, "too many file descriptors in one message");
				return -ECONNRESET;
			}
			if (rc < 0)
				goto gone;
			if (dev->have < VU_HDR_SIZE)
				continue;
		}
		memcpy(&h, dev->buf, VU_HDR_SIZE);
		if ((h.flags & VU_FLAG_VERSION_MASK) != VU_VERSION ||
		    (h.flags & VU_FLAG_REPLY)) {
			vu_dev_fail(dev, "bad message version or flags");
			return -ECONNRESET;
		}
		if (h.size > VU_MAX_PAYLOAD) {
			vu_dev_fail(dev, "message payload too large");
			return -ECONNRESET;
		}
		if (dev->have < VU_HDR_SIZE + h.size) {
			rc = recv_some(dev, VU_HDR_SIZE + h.size);
			if (rc == -EAGAIN)
				return 0;
			if (rc == -EMSGSIZE) {
				vu_dev_fail(dev, "too many file descriptors in one message");
				return -ECONNRESET;
			}
			if (rc < 0)
				goto gone;
			if (dev->have < VU_HDR_SIZE + h.size)
				continue;
		}
		rc = dispatch(dev, dev->conn_fd);
		dev->have = 0;
		if (rc == -ECONNRESET)
			return rc;
		if (rc < 0)
			goto gone;
	}
	return 0;
gone:
	log_info(dev->name, "frontend disconnected");
	disconnect(dev);
	return -ECONNRESET;
}

static void on_conn(void *opaque, uint32_t events)
{
	struct vu_dev *dev = opaque;

	if (dev->held && !(events & (EPOLLHUP | EPOLLERR)))
		return;
	if (vu_dev_process(dev) == 0 && (events & (EPOLLHUP | EPOLLERR)) &&
	    !(events & EPOLLIN)) {
		log_info(dev->name, "frontend hung up");
		disconnect(dev);
	}
}

static void on_kick(void *opaque, uint32_t events)
{
	struct vq *vq = opaque;
	/* vqs[] is embedded in vu_dev: recover the device from the ring. */
	struct vu_dev *dev = (struct vu_dev *)((char *)(vq - vq->index) -
					       offsetof(struct vu_dev, vqs));

	if (vq_drain_kick(vq) < 0) {
		vu_dev_fail(dev, "kick fd unreadable");
		return;
	}
	if (!dev->failed && vq_ready(vq) && dev->ops->queue_kick)
		dev->ops->queue_kick(dev->opaque, dev, vq->index);
}

int vu_dev_attach(struct vu_dev *dev, int fd)
{
	int rc;

	if (dev->conn_fd >= 0)
		return -EBUSY;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	rc = loop_watch_add(dev->loop, fd, EPOLLIN, on_conn, dev, &dev->conn_w);
	if (rc < 0)
		return rc;
	dev->conn_fd = fd;
	dev->conn_gen++;
	dev->failed = false;
	return 0;
}

int vu_dev_hold(struct vu_dev *dev, uint64_t *token)
{
	if (dev->conn_fd < 0 || dev->held)
		return -EINVAL;
	dev->hold_asked = true;
	*token = dev->conn_gen;
	return 0;
}

void vu_dev_release(struct vu_dev *dev, uint64_t token, int result)
{
	struct vu_hdr h = dev->held_hdr;

	if (!dev->held || token != dev->conn_gen)
		return;		/* that connection is gone: nobody waits */
	dev->held = false;
	if ((h.flags & VU_FLAG_NEED_REPLY) &&
	    (dev->protocol_features & (1ull << VU_PF_REPLY_ACK)) &&
	    reply_u64(dev, dev->conn_fd, &h, result < 0 ? 1 : 0) < 0) {
		log_info(dev->name, "frontend disconnected");
		disconnect(dev);
		return;
	}
	/* Level-triggered: whatever the frontend queued meanwhile is read
	 * on the next loop iteration. */
	loop_watch_mod(dev->conn_w, EPOLLIN);
}

static void on_listen(void *opaque, uint32_t events)
{
	struct vu_dev *dev = opaque;
	int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	/* One frontend per device: a second one is turned away. */
	if (vu_dev_attach(dev, fd) < 0) {
		log_warn(dev->name, "refusing a second frontend connection");
		close(fd);
		return;
	}
	log_info(dev->name, "frontend connected");
}

int vu_dev_new(struct loop *loop, const char *path, const char *name,
	       const struct vu_dev_ops *ops, void *opaque,
	       struct vu_dev **out)
{
	struct vu_dev *dev;
	int rc;

	if (ops->nqueues == 0 || ops->nqueues > VU_MAX_QUEUES ||
	    ops->config_len > VU_MAX_CONFIG)
		return -EINVAL;
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->loop = loop;
	dev->ops = ops;
	dev->opaque = opaque;
	dev->listen_fd = -1;
	dev->conn_fd = -1;
	dev->backend_fd = -1;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	gm_init(&dev->mem);
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
		vq_init(&dev->vqs[q], q);
	if (!path) {
		*out = dev;
		return 0;
	}
	dev->path = strdup(path);
	if (!dev->path) {
		rc = -ENOMEM;
		goto err_free;
	}
	dev->listen_fd = usock_listen(path, 0660, 4, NULL);
	if (dev->listen_fd < 0) {
		rc = dev->listen_fd;
		dev->listen_fd = -1;
		goto err_free;
	}
	rc = loop_watch_add(loop, dev->listen_fd, EPOLLIN, on_listen, dev,
			    &dev->listen_w);
	if (rc < 0)
		goto err_unlink;
	*out = dev;
	return 0;

err_unlink:
	unlink(path);
	close(dev->listen_fd);
err_free:
	free(dev->path);
	free(dev);
	return rc;
}

void vu_dev_free(struct vu_dev *dev)
{
	if (!dev)
		return;
	if (dev->conn_fd >= 0) {
		loop_watch_del(dev->conn_w);
		close(dev->conn_fd);
		dev->conn_fd = -1;
	}
	reset_state(dev);
	if (dev->listen_fd >= 0) {
		loop_watch_del(dev->listen_w);
		close(dev->listen_fd);
		unlink(dev->path);
	}
	free(dev->path);
	free(dev);
}

int vu_dev_config_changed(struct vu_dev *dev)
{
	struct vu_hdr h = {
		.request = VU_BACKEND_CONFIG_CHANGE_MSG,
		.flags = VU_VERSION,	/* no NEED_REPLY: UML answers on a pipe */
		.size = 0,
	};

	if (dev->backend_fd < 0 ||
	    !(dev->protocol_features & (1ull << VU_PF_BACKEND_REQ)))
		return -ENOTCONN;
	if (write(dev->backend_fd, &h, sizeof(h)) != (ssize_t)sizeof(h)) {
		/* A full pipe means earlier notifications are unread: the
		 * driver re-reads the whole config anyway. */
		if (errno == EAGAIN)
			return 0;
		return -errno;
	}
	return 0;
}
