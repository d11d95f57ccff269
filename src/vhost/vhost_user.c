/*
 * vhost_user: the backend side of vhost-user (API, lifecycle and the
 * hostile-frontend rules in vhost_user.h).
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "usock.h"
#include "vsession.h"

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
	char why[96];		/* a violation's formatted reason */
	vu_fd_hook fd_hook;	/* told of session fds (NULL: nobody) */
	void *fd_hook_opaque;
	/* The session kept in a memfd (vu_dev_keep_session), l NULL if not:
	 * every negotiated value is written there as it is accepted. */
	struct vsession vs;
	uint8_t no_state[VS_DEV_BYTES];	/* vu_dev_state() without one */
};

/* The session record, or NULL when none is kept. */
static struct vs_layout *rec(struct vu_dev *dev)
{
	return dev->vs.l;
}

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

void vu_dev_set_fd_hook(struct vu_dev *dev, vu_fd_hook hook, void *opaque)
{
	dev->fd_hook = hook;
	dev->fd_hook_opaque = opaque;
}

/* The name a session fd is held under: @kind, "/<q>" for ring @q >= 0. */
static const char *kind_name(char k[24], const char *kind, int q)
{
	if (q >= 0)
		snprintf(k, 24, "%s/%d", kind, q);
	else
		snprintf(k, 24, "%s", kind);
	return k;
}

/* Tell the fd hook that @kind (with ring @q if >= 0) is now @fd (-1: gone). */
static void fd_note(struct vu_dev *dev, const char *kind, int q, int fd)
{
	char k[24];

	if (dev->fd_hook)
		dev->fd_hook(dev->fd_hook_opaque, dev, kind_name(k, kind, q), fd);
}

void vu_dev_report_fds(struct vu_dev *dev)
{
	if (dev->vs.l)
		fd_note(dev, "session", -1, dev->vs.fd);
	if (dev->conn_fd < 0)
		return;
	fd_note(dev, "conn", -1, dev->conn_fd);
	if (dev->backend_fd >= 0)
		fd_note(dev, "backend", -1, dev->backend_fd);
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
		if (dev->vqs[q].kick_fd >= 0)
			fd_note(dev, "kick", (int)q, dev->vqs[q].kick_fd);
		if (dev->vqs[q].call_fd >= 0)
			fd_note(dev, "call", (int)q, dev->vqs[q].call_fd);
	}
	for (unsigned i = 0; i < dev->mem.nregions; i++)
		fd_note(dev, "mem", (int)i, dev->mem.r[i].fd);
}

/* ---- connection teardown ---------------------------------------------- */

static void reset_state(struct vu_dev *dev)
{
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
		loop_watch_del(dev->kick_w[q]);
		dev->kick_w[q] = NULL;
		if (dev->vqs[q].kick_fd >= 0)
			fd_note(dev, "kick", (int)q, -1);
		if (dev->vqs[q].call_fd >= 0)
			fd_note(dev, "call", (int)q, -1);
		vq_reset(&dev->vqs[q]);
	}
	for (unsigned i = 0; i < dev->mem.nregions; i++)
		fd_note(dev, "mem", (int)i, -1);
	guestmem_clear(&dev->mem);
	if (dev->backend_fd >= 0) {
		fd_note(dev, "backend", -1, -1);
		close(dev->backend_fd);
	}
	dev->backend_fd = -1;
	dev->features = 0;
	dev->protocol_features = 0;
	dev->have = 0;
	close_msg_fds(dev);
	vs_clear_session(&dev->vs);
}

static void disconnect(struct vu_dev *dev)
{
	if (dev->conn_fd < 0)
		return;
	loop_watch_del(dev->conn_w);
	dev->conn_w = NULL;
	fd_note(dev, "conn", -1, -1);
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

/* ---- payload layouts ---------------------------------------------------- */

/*
 * The payloads ebb reads and writes, as vhost-user.rst defines them.  The
 * protocol carries numbers in the host's byte order (both ends run on one
 * machine), so they are copied, never byte-swapped.  Every payload is
 * copied out of the message buffer before use: the buffer has no alignment
 * guarantee past the 12-byte header.
 *
 * u64 (SET_FEATURES, SET_PROTOCOL_FEATURES, SET_STATUS, SET_VRING_KICK,
 * SET_VRING_CALL, SET_VRING_ERR; the reply of every GET_* but the ring
 * base and the config, and the REPLY_ACK status):
 *
 *   offset  size  field
 *        0     8  value (ring fd messages: ring index in bits 0-7,
 *                 VU_VRING_NOFD in bit 8, the rest reserved)
 *
 * vring state (SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ENABLE,
 * GET_VRING_BASE and its reply):
 *
 *   offset  size  field
 *        0     4  index    ring index
 *        4     4  num      ring size, base index, or enable (0/1)
 *
 * vring address (SET_VRING_ADDR):
 *
 *   offset  size  field
 *        0     4  index    ring index
 *        4     4  flags    (logging; not offered)
 *        8     8  desc     descriptor table, frontend user address
 *       16     8  used     used ring, ditto
 *       24     8  avail    available ring, ditto
 *       32     8  log      (logging; not offered)
 *
 * memory table (SET_MEM_TABLE; one fd per region):
 *
 *   offset  size  field
 *        0     4  nregions
 *        4     4  padding
 *        8  32*n  regions: struct guestmem_region_desc each
 *                   +0  8  guest_addr
 *                   +8  8  size
 *                  +16  8  user_addr
 *                  +24  8  mmap_offset
 *
 * config (GET_CONFIG, SET_CONFIG; the reply to GET_CONFIG has the same
 * layout):
 *
 *   offset  size  field
 *        0     4  offset   into the device's config space
 *        4     4  size     bytes of config that follow
 *        8     4  flags
 *       12  size  config bytes
 */
struct vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc;
	uint64_t used;
	uint64_t avail;
	uint64_t log;
};

#define VU_MEM_TABLE_HDR	8	/* nregions + padding */
#define VU_MEM_REGION_SIZE	32

struct vu_config_hdr {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
};

_Static_assert(sizeof(struct vu_hdr) == VU_HDR_SIZE, "vhost-user header");
_Static_assert(sizeof(struct vu_vring_state) == 8, "vring state payload");
_Static_assert(sizeof(struct vu_vring_addr) == 40, "vring address payload");
_Static_assert(sizeof(struct guestmem_region_desc) == VU_MEM_REGION_SIZE,
	       "memory region payload");
_Static_assert(sizeof(struct vu_config_hdr) == 12, "config payload header");
_Static_assert(VU_MEM_TABLE_HDR + VU_MEM_REGION_SIZE * GUESTMEM_MAX_REGIONS <=
	       VU_MAX_PAYLOAD, "a full memory table fits a message");
_Static_assert(sizeof(struct vu_config_hdr) + VU_MAX_CONFIG <= VU_MAX_PAYLOAD,
	       "a full config access fits a message");

/* ---- message handlers ------------------------------------------------- */

/* One received message, as the handlers see it. */
struct vu_msg {
	int fd;				/* connection, for replies */
	const struct vu_hdr *h;		/* its header */
	const uint8_t *p;		/* its payload, h->size bytes */
};

/* Check a vring-state or vring-fd message's queue index. */
static struct vq *msg_vq(struct vu_dev *dev, uint32_t index, const char **why)
{
	if (index >= dev->ops->nqueues) {
		*why = "ring index out of range";
		return NULL;
	}
	return &dev->vqs[index];
}

static uint64_t msg_u64(const struct vu_msg *m)
{
	uint64_t v;

	memcpy(&v, m->p, sizeof(v));
	return v;
}

static struct vu_vring_state msg_state(const struct vu_msg *m)
{
	struct vu_vring_state st;

	memcpy(&st, m->p, sizeof(st));
	return st;
}

static void on_kick(void *opaque, uint32_t events);

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
	/* The table allows at most one fd; whether one is due depends on
	 * the NOFD bit of the payload. */
	if (nofd != (dev->nfds == 0)) {
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
		if (vq->kick_fd >= 0 || fd >= 0)
			fd_note(dev, "kick", (int)q, fd);
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
		vq->kick_fd = fd;
		vq->started = true;
		if (rec(dev)) {
			rec(dev)->ring[q].has_kick = fd >= 0;
			rec(dev)->ring[q].started = 1;
		}
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
		if (vq->call_fd >= 0 || fd >= 0)
			fd_note(dev, "call", (int)q, fd);
		if (vq->call_fd >= 0)
			close(vq->call_fd);
		vq->call_fd = fd;
		if (rec(dev))
			rec(dev)->ring[q].has_call = fd >= 0;
		break;
	default:		/* SET_VRING_ERR: we never signal errors there */
		if (fd >= 0)
			close(fd);
		break;
	}
	return 0;
}

static int h_vring_fd(struct vu_dev *dev, const struct vu_msg *m,
		      const char **why)
{
	return set_vring_fd(dev, m->h->request, msg_u64(m), why);
}

static int h_set_mem_table(struct vu_dev *dev, const struct vu_msg *m,
			   const char **why)
{
	struct guestmem_region_desc d[GUESTMEM_MAX_REGIONS];
	int fds[GUESTMEM_MAX_REGIONS];
	uint32_t n, size = m->h->size;
	int rc;

	memcpy(&n, m->p, sizeof(n));
	/* QEMU sends exactly n regions; UML sends the whole 8-slot table
	 * with the unused slots zeroed.  Accept both, nothing else. */
	if (n == 0 || n > GUESTMEM_MAX_REGIONS ||
	    size < VU_MEM_TABLE_HDR + VU_MEM_REGION_SIZE * n ||
	    size > VU_MEM_TABLE_HDR + VU_MEM_REGION_SIZE * GUESTMEM_MAX_REGIONS) {
		*why = "memory table region count does not match its size";
		return -EINVAL;
	}
	if (dev->nfds != n) {
		*why = "memory table needs one fd per region";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		memcpy(&d[i], m->p + VU_MEM_TABLE_HDR + VU_MEM_REGION_SIZE * i,
		       VU_MEM_REGION_SIZE);
		fds[i] = take_fd(dev, i);
	}
	for (unsigned i = 0; i < dev->mem.nregions; i++)
		fd_note(dev, "mem", (int)i, -1);
	if (rec(dev))
		rec(dev)->nregions = 0;
	rc = guestmem_set_table(&dev->mem, d, fds, n);
	for (unsigned i = 0; rc == 0 && i < dev->mem.nregions; i++)
		fd_note(dev, "mem", (int)i, dev->mem.r[i].fd);
	if (rc == 0 && rec(dev)) {
		/* After the files are held: a record never names a region
		 * whose file a restarted ebbd could not get back. */
		memcpy(rec(dev)->regions, d, sizeof(d[0]) * n);
		__atomic_store_n(&rec(dev)->nregions, n, __ATOMIC_RELEASE);
	}
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
		  (unsigned long long)(guestmem_total_bytes(&dev->mem) >> 20));
	if (dev->ops->mem_table_set)
		dev->ops->mem_table_set(dev->opaque);
	return 0;
}

/* The config access a GET_CONFIG or SET_CONFIG names, checked against the
 * message and the device's config space. */
static int config_access(struct vu_dev *dev, const struct vu_msg *m,
			 struct vu_config_hdr *c, const char **why)
{
	memcpy(c, m->p, sizeof(*c));
	if (c->size > VU_MAX_CONFIG || m->h->size != sizeof(*c) + c->size ||
	    c->offset > dev->ops->config_len ||
	    c->size > dev->ops->config_len - c->offset) {
		*why = "config access out of range";
		return -EINVAL;
	}
	return 0;
}

static int h_get_config(struct vu_dev *dev, const struct vu_msg *m,
			const char **why)
{
	uint8_t cfg[VU_MAX_CONFIG] = { 0 };
	uint8_t out[sizeof(struct vu_config_hdr) + VU_MAX_CONFIG];
	struct vu_config_hdr c;
	int rc = config_access(dev, m, &c, why);

	if (rc)
		return rc;
	dev->ops->get_config(dev->opaque, cfg);
	memcpy(out, m->p, sizeof(c));
	/* UML asks for [0, off+len) with offset 0 and copies from off. */
	memcpy(out + sizeof(c), cfg + c.offset, c.size);
	return send_reply(dev, m->fd, m->h, out, (uint32_t)sizeof(c) + c.size);
}

static int h_set_config(struct vu_dev *dev, const struct vu_msg *m,
			const char **why)
{
	struct vu_config_hdr c;
	int rc = config_access(dev, m, &c, why);

	if (rc)
		return rc;
	if (!dev->ops->set_config)
		return -ENOTSUP;
	return dev->ops->set_config(dev->opaque, c.offset, m->p + sizeof(c),
				    c.size);
}

static int h_get_features(struct vu_dev *dev, const struct vu_msg *m,
			  const char **why)
{
	return reply_u64(dev, m->fd, m->h, offered_features(dev));
}

static int h_set_features(struct vu_dev *dev, const struct vu_msg *m,
			  const char **why)
{
	uint64_t v = msg_u64(m);

	if (v & ~offered_features(dev)) {
		*why = "driver accepted features we did not offer";
		return -EINVAL;
	}
	dev->features = v;
	if (rec(dev))
		rec(dev)->features = v;
	if (dev->ops->features_set)
		dev->ops->features_set(dev->opaque, v);
	return 0;
}

static int h_get_protocol_features(struct vu_dev *dev, const struct vu_msg *m,
				   const char **why)
{
	return reply_u64(dev, m->fd, m->h, offered_protocol_features(dev));
}

static int h_set_protocol_features(struct vu_dev *dev, const struct vu_msg *m,
				   const char **why)
{
	uint64_t v = msg_u64(m);

	if (v & ~offered_protocol_features(dev)) {
		*why = "frontend set protocol features we did not offer";
		return -EINVAL;
	}
	dev->protocol_features = v;
	if (rec(dev))
		rec(dev)->protocol_features = v;
	return 0;
}

/* SET_OWNER: nothing to do, but acked. */
static int h_accept(struct vu_dev *dev, const struct vu_msg *m,
		    const char **why)
{
	return 0;
}

static int h_reset(struct vu_dev *dev, const struct vu_msg *m,
		   const char **why)
{
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
		loop_watch_del(dev->kick_w[q]);
		dev->kick_w[q] = NULL;
		vq_reset(&dev->vqs[q]);
	}
	if (dev->ops->reset)
		dev->ops->reset(dev->opaque);
	return 0;
}

/* SET_STATUS: acked; status 0 is a device reset (virtio 2.1), which the
 * device must hear about (the ebb device drops a registered table). */
static int h_set_status(struct vu_dev *dev, const struct vu_msg *m,
			const char **why)
{
	if (msg_u64(m) == 0 && dev->ops->reset)
		dev->ops->reset(dev->opaque);
	return 0;
}

static int h_get_queue_num(struct vu_dev *dev, const struct vu_msg *m,
			   const char **why)
{
	return reply_u64(dev, m->fd, m->h, dev->ops->nqueues);
}

static int h_get_max_mem_slots(struct vu_dev *dev, const struct vu_msg *m,
			       const char **why)
{
	return reply_u64(dev, m->fd, m->h, GUESTMEM_MAX_REGIONS);
}

static int h_get_status(struct vu_dev *dev, const struct vu_msg *m,
			const char **why)
{
	return reply_u64(dev, m->fd, m->h, 0);
}

static int h_set_backend_req_fd(struct vu_dev *dev, const struct vu_msg *m,
				const char **why)
{
	if (dev->backend_fd >= 0)
		close(dev->backend_fd);
	dev->backend_fd = take_fd(dev, 0);
	fcntl(dev->backend_fd, F_SETFL,
	      fcntl(dev->backend_fd, F_GETFL) | O_NONBLOCK);
	fd_note(dev, "backend", -1, dev->backend_fd);
	if (rec(dev))
		rec(dev)->has_backend = 1;
	return 0;
}

static int h_set_vring_num(struct vu_dev *dev, const struct vu_msg *m,
			   const char **why)
{
	struct vu_vring_state st = msg_state(m);
	struct vq *vq = msg_vq(dev, st.index, why);

	if (!vq)
		return -EINVAL;
	if (st.num == 0 || st.num > VQ_MAX_SIZE || (st.num & (st.num - 1))) {
		*why = "ring size not a power of two up to 1024";
		return -EINVAL;
	}
	vq->num = (uint16_t)st.num;
	if (rec(dev))
		rec(dev)->ring[st.index].num = vq->num;
	if (vq_map(vq, &dev->mem) < 0) {
		*why = "ring outside guest memory";
		return -EFAULT;
	}
	return 0;
}

static int h_set_vring_addr(struct vu_dev *dev, const struct vu_msg *m,
			    const char **why)
{
	struct vu_vring_addr a;
	struct vq *vq;

	memcpy(&a, m->p, sizeof(a));
	vq = msg_vq(dev, a.index, why);
	if (!vq)
		return -EINVAL;
	vq->desc_addr = a.desc;
	vq->used_addr = a.used;
	vq->avail_addr = a.avail;
	vq->addr_set = true;
	if (rec(dev)) {
		struct vs_ring *r = &rec(dev)->ring[a.index];

		r->desc_addr = a.desc;
		r->used_addr = a.used;
		r->avail_addr = a.avail;
		r->addr_set = 1;
	}
	if (vq_map(vq, &dev->mem) < 0) {
		*why = "ring address outside guest memory or misaligned";
		return -EFAULT;
	}
	return 0;
}

static int h_set_vring_base(struct vu_dev *dev, const struct vu_msg *m,
			    const char **why)
{
	struct vu_vring_state st = msg_state(m);
	struct vq *vq = msg_vq(dev, st.index, why);

	if (!vq)
		return -EINVAL;
	if (st.num > 0xffff) {
		*why = "ring base beyond 16 bits";
		return -EINVAL;
	}
	vq->last_avail = (uint16_t)st.num;
	vq->used_idx = (uint16_t)st.num;
	if (vq->rec) {
		/* A new base: nothing of the old position is in flight. */
		memset(vq->rec->inflight, 0, sizeof(vq->rec->inflight));
		vq->rec->used_idx = vq->used_idx;
	}
	return 0;
}

static int h_get_vring_base(struct vu_dev *dev, const struct vu_msg *m,
			    const char **why)
{
	struct vu_vring_state st = msg_state(m), out;
	struct vq *vq = msg_vq(dev, st.index, why);

	if (!vq)
		return -EINVAL;
	/* Stops the ring (spec: "stop ring upon receiving"). */
	loop_watch_del(dev->kick_w[st.index]);
	dev->kick_w[st.index] = NULL;
	out.index = st.index;
	out.num = vq->last_avail;
	if (vq->kick_fd >= 0) {
		fd_note(dev, "kick", (int)st.index, -1);
		close(vq->kick_fd);
	}
	vq->kick_fd = -1;
	vq->started = false;
	if (vq->rec)
		vq->rec->started = vq->rec->has_kick = 0;
	return send_reply(dev, m->fd, m->h, &out, sizeof(out));
}

static int h_set_vring_enable(struct vu_dev *dev, const struct vu_msg *m,
			      const char **why)
{
	struct vu_vring_state st = msg_state(m);
	struct vq *vq = msg_vq(dev, st.index, why);

	if (!vq)
		return -EINVAL;
	if (st.num > 1) {
		*why = "ring enable value not 0 or 1";
		return -EINVAL;
	}
	vq->enabled = st.num;
	if (vq->rec)
		vq->rec->enabled = (uint8_t)st.num;
	if (vq_ready(vq) && dev->ops->queue_kick)
		dev->ops->queue_kick(dev->opaque, dev, st.index);
	return 0;
}

/* ---- the rules table ---------------------------------------------------- */

/*
 * One row per request ebb serves: the payload size it must have (exact
 * when min == max; a variable layout's own bounds are checked by its
 * handler), how many fds it may carry (a payload-dependent exact count,
 * like one per memory region, is checked by the handler), whether it is
 * always answered (GET_*: the handler sends the reply) or acked only on
 * NEED_REPLY, and its handler.  handle_msg() checks size and fds here, in
 * one place, before any handler runs.
 */
struct vu_rule {
	uint32_t request;		/* VU_* */
	const char *name;		/* for errors and logs */
	uint32_t min_size, max_size;	/* payload bytes */
	uint8_t min_fds, max_fds;	/* fds riding on the message */
	bool replies;			/* the handler sends the reply */
	int (*handle)(struct vu_dev *dev, const struct vu_msg *m,
		      const char **why);
};

#define U64	8, 8			/* payload sizes, per layout above */
#define STATE	8, 8
#define NONE	0, 0
#define ANY	0, VU_MAX_PAYLOAD

static const struct vu_rule vu_rules[] = {
	{ VU_GET_FEATURES, "GET_FEATURES", NONE, 0, 0, true, h_get_features },
	{ VU_SET_FEATURES, "SET_FEATURES", U64, 0, 0, false, h_set_features },
	{ VU_SET_OWNER, "SET_OWNER", NONE, 0, 0, false, h_accept },
	{ VU_RESET_OWNER, "RESET_OWNER", NONE, 0, 0, false, h_reset },
	{ VU_SET_MEM_TABLE, "SET_MEM_TABLE", VU_MEM_TABLE_HDR, VU_MAX_PAYLOAD,
	  0, GUESTMEM_MAX_REGIONS, false, h_set_mem_table },
	{ VU_SET_VRING_NUM, "SET_VRING_NUM", STATE, 0, 0, false,
	  h_set_vring_num },
	{ VU_SET_VRING_ADDR, "SET_VRING_ADDR", sizeof(struct vu_vring_addr),
	  sizeof(struct vu_vring_addr), 0, 0, false, h_set_vring_addr },
	{ VU_SET_VRING_BASE, "SET_VRING_BASE", STATE, 0, 0, false,
	  h_set_vring_base },
	{ VU_GET_VRING_BASE, "GET_VRING_BASE", STATE, 0, 0, true,
	  h_get_vring_base },
	{ VU_SET_VRING_KICK, "SET_VRING_KICK", U64, 0, 1, false, h_vring_fd },
	{ VU_SET_VRING_CALL, "SET_VRING_CALL", U64, 0, 1, false, h_vring_fd },
	{ VU_SET_VRING_ERR, "SET_VRING_ERR", U64, 0, 1, false, h_vring_fd },
	{ VU_GET_PROTOCOL_FEATURES, "GET_PROTOCOL_FEATURES", NONE, 0, 0, true,
	  h_get_protocol_features },
	{ VU_SET_PROTOCOL_FEATURES, "SET_PROTOCOL_FEATURES", U64, 0, 0, false,
	  h_set_protocol_features },
	{ VU_GET_QUEUE_NUM, "GET_QUEUE_NUM", NONE, 0, 0, true,
	  h_get_queue_num },
	{ VU_SET_VRING_ENABLE, "SET_VRING_ENABLE", STATE, 0, 0, false,
	  h_set_vring_enable },
	/* Its payload was never looked at; any is still accepted. */
	{ VU_SET_BACKEND_REQ_FD, "SET_BACKEND_REQ_FD", ANY, 1, 1, false,
	  h_set_backend_req_fd },
	/* A config message may be as large as any message: its own size
	 * field is checked against the payload (config_access). */
	{ VU_GET_CONFIG, "GET_CONFIG", sizeof(struct vu_config_hdr),
	  VU_MAX_PAYLOAD, 0, 0, true, h_get_config },
	{ VU_SET_CONFIG, "SET_CONFIG", sizeof(struct vu_config_hdr),
	  VU_MAX_PAYLOAD, 0, 0, false, h_set_config },
	{ VU_RESET_DEVICE, "RESET_DEVICE", NONE, 0, 0, false, h_reset },
	{ VU_GET_MAX_MEM_SLOTS, "GET_MAX_MEM_SLOTS", NONE, 0, 0, true,
	  h_get_max_mem_slots },
	{ VU_SET_STATUS, "SET_STATUS", U64, 0, 0, false, h_set_status },
	{ VU_GET_STATUS, "GET_STATUS", NONE, 0, 0, true, h_get_status },
};

#undef U64
#undef STATE
#undef NONE
#undef ANY

static const struct vu_rule *vu_rule_find(uint32_t request)
{
	for (size_t i = 0; i < sizeof(vu_rules) / sizeof(vu_rules[0]); i++)
		if (vu_rules[i].request == request)
			return &vu_rules[i];
	return NULL;
}

/* The words of a wrong fd count (frontend tests and logs look for them). */
static const char *fds_wrong(const struct vu_rule *r)
{
	if (!r->max_fds)
		return "unexpected file descriptors";
	if (r->min_fds == 1 && r->max_fds == 1)
		return "message without one fd";
	return "wrong number of fds";
}

/*
 * Handle one complete message: find its rule, check its payload size and
 * fd count, run its handler.  Returns 0, or -errno with *why set; a
 * protocol violation (-EINVAL/-EFAULT) fails the device, other errors are
 * reported to the frontend in the ack.  *rule is the message's row, NULL
 * for a request ebb does not serve.
 */
static int handle_msg(struct vu_dev *dev, const struct vu_msg *m,
		      const struct vu_rule **rule, const char **why)
{
	const struct vu_rule *r = vu_rule_find(m->h->request);

	*rule = r;
	if (!r) {
		/* Logging and other optional requests we did not offer. */
		if (dev->nfds) {
			*why = "unexpected file descriptors";
			return -EINVAL;
		}
		*why = "unsupported request";
		return -ENOTSUP;
	}
	if (m->h->size < r->min_size || m->h->size > r->max_size) {
		/* Bytes where none belong mean the frontend and we disagree
		 * about the message: a violation, whatever the request. */
		if (r->min_size == r->max_size)
			snprintf(dev->why, sizeof(dev->why),
				 "wrong payload size %u (takes %u)", m->h->size,
				 r->min_size);
		else
			snprintf(dev->why, sizeof(dev->why),
				 "wrong payload size %u (takes %u to %u)",
				 m->h->size, r->min_size, r->max_size);
		*why = dev->why;
		return -EINVAL;
	}
	if (dev->nfds < r->min_fds || dev->nfds > r->max_fds) {
		*why = fds_wrong(r);
		return -EINVAL;
	}
	return r->handle(dev, m, why);
}

/*
 * The message in dev->buf is being handled: record it, so that a
 * restarted ebbd answers it if this one dies first (the frontend waits
 * for the answer forever otherwise).  Its fds are not recorded: they die
 * with this process, so such a message cannot be handled again.
 */
static void msg_begin(struct vu_dev *dev, uint32_t len)
{
	struct vs_layout *l = rec(dev);

	if (!l)
		return;
	memcpy(l->msg, dev->buf, len);
	l->msg_len = len;
	l->msg_nfds = dev->nfds;
	__atomic_store_n(&l->msg_state, VS_MSG_HANDLING, __ATOMIC_RELEASE);
}

/* The recorded message is answered (or needs no answer). */
static void msg_end(struct vu_dev *dev)
{
	if (rec(dev))
		__atomic_store_n(&rec(dev)->msg_state, VS_MSG_NONE,
				 __ATOMIC_RELEASE);
}

/* A complete message is in dev->buf: check, dispatch, ack. */
static int dispatch(struct vu_dev *dev, int fd)
{
	struct vu_hdr h;
	struct vu_msg m = { .fd = fd, .h = &h, .p = dev->buf + VU_HDR_SIZE };
	const struct vu_rule *r;
	const char *why = "error";
	int rc, wr;

	memcpy(&h, dev->buf, VU_HDR_SIZE);
	msg_begin(dev, VU_HDR_SIZE + h.size);
	dev->hold_asked = false;
	rc = handle_msg(dev, &m, &r, &why);
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
		return 0;	/* still being handled: msg_end at release */
	}
	dev->hold_asked = false;
	if (rc == -EINVAL || rc == -EFAULT) {
		char msg[160];

		snprintf(msg, sizeof(msg), "request %u: %s: %s", h.request,
			 r ? r->name : "unknown", why);
		vu_dev_fail(dev, msg);
		return -ECONNRESET;
	}
	if (rc < 0)
		log_warn(dev->name, "request %u (%s) refused: %s (%s)", h.request,
			 r ? r->name : "unknown", why, strerror(-rc));
	if (!(r && r->replies) && (h.flags & VU_FLAG_NEED_REPLY) &&
	    (dev->protocol_features & (1ull << VU_PF_REPLY_ACK))) {
		wr = reply_u64(dev, fd, &h, rc < 0 ? 1 : 0);
		if (wr < 0)
			return wr;
	}
	msg_end(dev);
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

/*
 * Read one message with one recvmsg when the socket already holds all of
 * it, so that a crash can never leave half a message read: the stream
 * would be out of step for the next ebbd (docs/restart.md 2.2).  UML and
 * QEMU send each message with one sendmsg, so it is whole unless the
 * frontend is slow or hostile.  0 with the message in dev->buf, -EAGAIN
 * (nothing there), -EINPROGRESS (only part of it is there: the caller
 * reassembles as it arrives, as before) or -errno.
 *
 * A peek without a control buffer leaves any fds queued with the data
 * (the kernel drops only its peeked duplicates).
 */
static int recv_whole(struct vu_dev *dev)
{
	struct vu_hdr h;
	ssize_t n = recv(dev->conn_fd, &h, VU_HDR_SIZE, MSG_PEEK | MSG_DONTWAIT);
	size_t want;
	int rc;

	if (n < 0)
		return (errno == EAGAIN || errno == EINTR) ? -EAGAIN : -errno;
	if (n == 0)
		return -ECONNRESET;
	if (n < VU_HDR_SIZE || h.size > VU_MAX_PAYLOAD)
		return -EINPROGRESS;	/* the usual path judges it */
	want = VU_HDR_SIZE + h.size;
	n = recv(dev->conn_fd, dev->buf, want, MSG_PEEK | MSG_DONTWAIT);
	if (n < (ssize_t)want)
		return n < 0 && errno != EAGAIN && errno != EINTR ?
		       -errno : -EINPROGRESS;
	rc = recv_some(dev, want);
	if (rc == 0 && dev->have < want)
		return -EINPROGRESS;	/* cut short after all: reassemble */
	return rc;
}

int vu_dev_process(struct vu_dev *dev)
{
	/* Bounded: at most this many messages per wakeup, so one chatty
	 * frontend cannot starve the other guests. */
	for (int budget = 64; budget > 0 && dev->conn_fd >= 0 && !dev->held;
	     budget--) {
		struct vu_hdr h;
		int rc;

		if (dev->have == 0) {
			rc = recv_whole(dev);
			if (rc == -EAGAIN)
				return 0;
			if (rc == -EMSGSIZE) {
				vu_dev_fail(dev, "too many file descriptors in one message");
				return -ECONNRESET;
			}
			if (rc < 0 && rc != -EINPROGRESS)
				goto gone;
		}
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
	fd_note(dev, "conn", -1, fd);
	if (rec(dev))
		rec(dev)->connected = 1;
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
	msg_end(dev);
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
	dev->vs.fd = -1;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	guestmem_init(&dev->mem);
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
		fd_note(dev, "conn", -1, -1);
		close(dev->conn_fd);
		dev->conn_fd = -1;
	}
	reset_state(dev);
	if (dev->vs.l) {
		fd_note(dev, "session", -1, -1);
		vs_close(&dev->vs);
	}
	if (dev->listen_fd >= 0) {
		loop_watch_del(dev->listen_w);
		close(dev->listen_fd);
		unlink(dev->path);
	}
	free(dev->path);
	free(dev);
}

/* ---- the session kept across ebbd's death ------------------------------ */

static void attach_record(struct vu_dev *dev, struct vsession *vs)
{
	dev->vs = *vs;
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
		dev->vqs[q].rec = q < VS_QUEUES ? &vs->l->ring[q] : NULL;
}

int vu_dev_keep_session(struct vu_dev *dev)
{
	struct vsession vs;
	int rc;

	if (dev->vs.l)
		return 0;
	if (dev->conn_fd >= 0)
		return -EBUSY;	/* what was negotiated so far is unrecorded */
	rc = vs_create(dev->name, &vs);
	if (rc < 0)
		return rc;
	attach_record(dev, &vs);
	fd_note(dev, "session", -1, vs.fd);
	return 0;
}

uint8_t *vu_dev_state(struct vu_dev *dev)
{
	return dev->vs.l ? dev->vs.l->dev : dev->no_state;
}

/* Take the held fd of @kind (ring @q if >= 0) through @take; -1 if none. */
static int take_kind(vu_fd_take take, void *opaque, const char *kind, int q)
{
	char k[24];

	return take(opaque, kind_name(k, kind, q));
}

#define WHY(...) snprintf(why, VU_WHY_MAX, __VA_ARGS__)

/* A ring's held kick or call fd into *@fd, non-blocking. */
static int take_ring_fd(vu_fd_take take, void *opaque, const char *kind,
			unsigned q, int *fd, char *why)
{
	*fd = take_kind(take, opaque, kind, (int)q);
	if (*fd < 0) {
		WHY("ring %u's %s fd is not held", q, kind);
		return -ENOENT;
	}
	fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
	return 0;
}

/* Rebuild one ring from its record and its held fds.  0 or -errno. */
static int adopt_ring(struct vu_dev *dev, unsigned q, vu_fd_take take,
		      void *opaque, char *why)
{
	struct vq *vq = &dev->vqs[q];
	struct vs_ring *r = vq->rec;
	int rc;

	vq->num = r->num;
	vq->desc_addr = r->desc_addr;
	vq->avail_addr = r->avail_addr;
	vq->used_addr = r->used_addr;
	vq->addr_set = r->addr_set;
	vq->enabled = r->enabled;
	vq->started = r->started;
	if (r->has_call &&
	    (rc = take_ring_fd(take, opaque, "call", q, &vq->call_fd, why)) < 0)
		return rc;
	if (r->has_kick) {
		rc = take_ring_fd(take, opaque, "kick", q, &vq->kick_fd, why);
		if (rc < 0)
			return rc;
		rc = loop_watch_add(dev->loop, vq->kick_fd, EPOLLIN, on_kick,
				    vq, &dev->kick_w[q]);
		if (rc < 0) {
			WHY("ring %u's kick fd cannot be polled", q);
			return rc;
		}
	}
	if (!r->num || !r->addr_set)
		return 0;
	if (vq_map(vq, &dev->mem) < 0) {
		WHY("ring %u lies outside the recorded memory table", q);
		return -EBADMSG;
	}
	rc = vs_ring_recover(r, vq, vq->resubmit, &vq->nresubmit, why,
			     VU_WHY_MAX);
	vq->resubmit_next = 0;
	if (rc == 0 && vq->nresubmit)
		log_info(dev->name, "ring %u: %u request(s) in flight, run again",
			 q, vq->nresubmit);
	return rc;
}

int vu_dev_adopt(struct vu_dev *dev, int session_fd, vu_fd_take take,
		 void *opaque, char *why)
{
	int fds[GUESTMEM_MAX_REGIONS];
	uint8_t state[VS_DEV_BYTES];
	struct vsession vs;
	struct vs_layout *l;
	struct vu_hdr h;
	int conn, rc;

	if (dev->vs.l || dev->conn_fd >= 0) {
		close(session_fd);
		WHY("device already has a session");
		return -EBUSY;
	}
	rc = vs_open(session_fd, &vs, why, dev->ops->nqueues);
	if (rc < 0)
		return rc;
	l = vs.l;
	if (!l->connected) {
		WHY("no frontend was connected when ebbd stopped");
		rc = -ENOTCONN;
		goto err_vs;
	}
	if (l->msg_state == VS_MSG_HANDLING) {
		memcpy(&h, l->msg, VU_HDR_SIZE);
		if (l->msg_nfds) {
			WHY("request %u was being handled with its fds, which "
			    "died with ebbd (the device was in setup)",
			    h.request);
			rc = -EBADMSG;
			goto err_vs;
		}
		if (h.size > VU_MAX_PAYLOAD || l->msg_len != VU_HDR_SIZE + h.size) {
			WHY("recorded request's length does not match it");
			rc = -EBADMSG;
			goto err_vs;
		}
	}
	for (unsigned i = 0; i < l->nregions; i++) {
		fds[i] = take_kind(take, opaque, "mem", (int)i);
		if (fds[i] < 0) {
			WHY("memory region %u's file is not held", i);
			while (i--)
				close(fds[i]);
			rc = -ENOENT;
			goto err_vs;
		}
	}
	if (l->nregions &&
	    guestmem_set_table(&dev->mem, l->regions, fds, l->nregions) < 0) {
		WHY("recorded memory table cannot be mapped again");
		rc = -EBADMSG;
		goto err_vs;
	}
	attach_record(dev, &vs);
	dev->features = l->features;
	dev->protocol_features = l->protocol_features;
	if (l->has_backend) {
		dev->backend_fd = take_kind(take, opaque, "backend", -1);
		if (dev->backend_fd < 0) {
			WHY("backend channel is not held");
			rc = -ENOENT;
			goto err_dev;
		}
		fcntl(dev->backend_fd, F_SETFL,
		      fcntl(dev->backend_fd, F_GETFL) | O_NONBLOCK);
	}
	for (unsigned q = 0; q < dev->ops->nqueues; q++) {
		rc = adopt_ring(dev, q, take, opaque, why);
		if (rc < 0)
			goto err_dev;
	}
	conn = take_kind(take, opaque, "conn", -1);
	if (conn < 0) {
		WHY("connection is not held");
		rc = -ENOENT;
		goto err_dev;
	}
	rc = vu_dev_attach(dev, conn);
	if (rc < 0) {
		close(conn);
		WHY("cannot watch the connection: %s", strerror(-rc));
		goto err_dev;
	}
	/* As a session would have told the device, in the same order; those
	 * calls forget what a new driver would not have set up yet, so the
	 * device state is given back as the earlier ebbd left it. */
	memcpy(state, l->dev, VS_DEV_BYTES);
	if (dev->features && dev->ops->features_set)
		dev->ops->features_set(dev->opaque, dev->features);
	if (dev->mem.nregions && dev->ops->mem_table_set)
		dev->ops->mem_table_set(dev->opaque);
	memcpy(l->dev, state, VS_DEV_BYTES);
	if (dev->ops->adopted && (rc = dev->ops->adopted(dev->opaque)) < 0) {
		WHY("the %s device's own state is not valid", dev->ops->type);
		goto err_dev;
	}
	return 0;

err_dev:
	/* Leave the record as it was, for the operator or another try: the
	 * rings must not clear it on the way out. */
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
		dev->vqs[q].rec = NULL;
	dev->vs.l = NULL;
	dev->vs.fd = -1;
	if (dev->conn_fd >= 0) {
		loop_watch_del(dev->conn_w);
		dev->conn_w = NULL;
		close(dev->conn_fd);
		dev->conn_fd = -1;
	}
	{
		vu_fd_hook hook = dev->fd_hook;

		/* Nothing here was put by us: the holder keeps its copies. */
		dev->fd_hook = NULL;
		reset_state(dev);
		dev->fd_hook = hook;
	}
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
		vq_init(&dev->vqs[q], q);
err_vs:
	vs_close(&vs);
	return rc;
}

void vu_dev_abandon(struct vu_dev *dev)
{
	dev->fd_hook = NULL;
	for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
		dev->vqs[q].rec = NULL;
	if (dev->vs.l) {
		munmap(dev->vs.l, sizeof(*dev->vs.l));
		close(dev->vs.fd);
	}
	dev->vs.l = NULL;
	dev->vs.fd = -1;
}

void vu_dev_resume(struct vu_dev *dev)
{
	struct vs_layout *l = rec(dev);

	if (!l || dev->conn_fd < 0)
		return;
	if (l->msg_state == VS_MSG_HANDLING) {
		struct vu_hdr h;

		/* Read but not answered by the ebbd that died: the frontend
		 * is still waiting for the answer. */
		memcpy(dev->buf, l->msg, l->msg_len);
		memcpy(&h, dev->buf, VU_HDR_SIZE);
		dev->nfds = 0;
		log_info(dev->name, "answering request %u left unanswered "
			 "by the previous ebbd", h.request);
		if (dispatch(dev, dev->conn_fd) < 0 && dev->conn_fd >= 0) {
			log_info(dev->name, "frontend disconnected");
			disconnect(dev);
			return;
		}
		dev->have = 0;
	}
	if (dev->conn_fd < 0)
		return;
	for (unsigned q = 0; q < dev->ops->nqueues; q++) {
		struct vq *vq = &dev->vqs[q];

		if (!vq_ready(vq))
			continue;
		/* Kicks that came while no ebbd ran are counted in the
		 * eventfd; the ring is looked at anyway. */
		vq_drain_kick(vq);
		if (dev->ops->queue_kick)
			dev->ops->queue_kick(dev->opaque, dev, q);
		if (dev->conn_fd < 0)
			return;
		/* A completion published just before the crash may never
		 * have been signalled; a spurious interrupt is harmless. */
		vq_notify(vq);
	}
}

#undef WHY

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
