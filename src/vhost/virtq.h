/*
 * virtq: the device side of a split virtqueue (virtio 1.x, section 2.7).
 *
 * Owns one ring's addresses, its indices and its kick/call descriptors.
 * Walks descriptor chains the driver made available and returns them as a
 * list of host buffers, and publishes used elements back.
 *
 * Everything in the ring is written by the guest and is hostile: the avail
 * index may jump, a head or next index may be out of range, a chain may
 * loop, a buffer may point outside guest memory or straddle two regions,
 * a device-readable descriptor may follow a device-writable one.  vq_pop()
 * rejects each of these with -EINVAL/-EFAULT and a reason string, and the
 * caller then fails the device.  Indirect descriptors and EVENT_IDX are not
 * offered by ebb's devices, so a descriptor with VRING_DESC_F_INDIRECT is a
 * protocol violation too.  (Offering INDIRECT_DESC was measured at stop 8:
 * UML guests verifying 96 MiB swapped onto ebb ran slower with it, median
 * 14.5 s against 12.8 s over three side-by-side pairs, writes unchanged;
 * the guest then allocates a table per request while short of memory.
 * EVENT_IDX would need the devices, which stop at a per-kick budget, to
 * reschedule themselves, since a driver kicks only past avail_event.)
 *
 * Memory ordering: the driver writes ring entries then avail->idx; we load
 * avail->idx with acquire so the entries read after it are the ones it
 * published.  We write used entries then used->idx (seq-cst, which also
 * orders it before vq_notify's load of the driver's flags) so the driver,
 * reading idx first, sees complete entries.
 *
 * Threading: owned by the loop thread.
 */
#ifndef EBB_VIRTQ_H
#define EBB_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "guestmem.h"

#include <linux/virtio_ring.h>

#define VQ_MAX_SIZE	1024	/* largest ring we accept (UML uses 256) */
#define VQ_MAX_BUFS	VQ_MAX_SIZE	/* a chain cannot be longer than the ring */

/* The split ring's layout (struct vring_desc, vring_avail, vring_used and
 * the VRING_* flags) is <linux/virtio_ring.h>'s.  Every field is
 * little-endian (virtio 1.0): read with le16/32/64toh, written with
 * htole16/32. */

struct vq {
	uint16_t num;		/* ring size, 0 until SET_VRING_NUM */
	uint64_t desc_addr;	/* frontend addresses from SET_VRING_ADDR */
	uint64_t avail_addr;
	uint64_t used_addr;
	bool addr_set;		/* SET_VRING_ADDR seen */
	struct vring_desc *desc;	/* host pointers, valid once mapped */
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail;	/* next avail entry to consume */
	uint16_t used_idx;	/* next used entry to fill */
	int kick_fd;		/* eventfd the driver writes; -1 if none */
	int call_fd;		/* we write here to interrupt; -1 if none */
	bool enabled;		/* SET_VRING_ENABLE state */
	bool started;		/* kick fd received: ring is live */
	unsigned index;		/* queue number, for messages */
	/* The in-flight record this ring keeps (vsession.h), NULL: none.
	 * vq_init clears the pointer; vq_reset keeps it and clears the
	 * record. */
	struct vs_ring *rec;
	/* Heads a restarted ebbd found in flight, popped again first, in
	 * the order they were first popped (vs_ring_recover). */
	uint16_t resubmit[VQ_MAX_SIZE];
	unsigned nresubmit, resubmit_next;
};

/* One buffer of a chain, already translated. */
struct vq_buf {
	uint64_t gpa;
	uint32_t len;
	bool write;		/* device-writable */
	void *hva;
};

struct vq_elem {
	uint16_t head;		/* id to give back in vq_push() */
	unsigned nbufs;
	unsigned nout;		/* device-readable buffers come first */
	struct vq_buf bufs[VQ_MAX_BUFS];
};

struct vs_ring;

void vq_init(struct vq *vq, unsigned index);
/* Close kick/call fds and forget the ring (device reset); its in-flight
 * record, if any, is cleared and stays attached. */
void vq_reset(struct vq *vq);

/*
 * Translate the ring addresses through @gm.  Returns 0, or -EFAULT if any
 * part of the three areas lies outside guest memory, -EINVAL if the size
 * or an alignment is wrong.  Must be redone after a new memory table.
 */
int vq_map(struct vq *vq, const struct guestmem *gm);
bool vq_ready(const struct vq *vq);

/*
 * Take the next available chain (first the heads left to run again after
 * a restart, then the avail ring), and mark it in flight in the record.
 * Returns 1 with *elem filled, 0 if the ring is empty, or -EINVAL/-EFAULT for a malformed ring, with *why set to
 * a static description.  @elem may be large: callers keep one per device.
 */
int vq_pop(struct vq *vq, const struct guestmem *gm, struct vq_elem *elem,
	   const char **why);
/* Give a chain back with @len bytes written into it, and clear its
 * in-flight mark (the order of the stores is vsession.h's). */
void vq_push(struct vq *vq, uint16_t head, uint32_t len);
/* Interrupt the driver unless it asked not to be.  Returns 0 or -errno. */
int vq_notify(struct vq *vq);
/* Consume pending kicks on kick_fd (non-blocking).  Returns 0 or -errno. */
int vq_drain_kick(struct vq *vq);

#endif
