/*
 * virtq: the device side of a split virtqueue; every guest index and
 * address is checked before use (API in virtq.h).
 */
#include "virtq.h"

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "vsession.h"

void vq_init(struct vq *vq, unsigned index)
{
	/* Only the fields up to the resubmit list: 2 KiB of it is dead
	 * until a restart fills it, and nresubmit bounds what is read. */
	memset(vq, 0, offsetof(struct vq, resubmit));
	vq->nresubmit = vq->resubmit_next = 0;
	vq->kick_fd = -1;
	vq->call_fd = -1;
	vq->index = index;
}

void vq_reset(struct vq *vq)
{
	struct vs_ring *rec = vq->rec;

	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	if (vq->call_fd >= 0)
		close(vq->call_fd);
	vq_init(vq, vq->index);
	vq->rec = rec;
	if (rec)
		vs_clear_ring(rec);
}

int vq_map(struct vq *vq, const struct guestmem *gm)
{
	uint64_t n = vq->num;

	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	if (!vq->addr_set)
		return 0;
	/* Power-of-two sizes only (split rings, 2.7); alignment per 2.7.1. */
	if (n == 0 || n > VQ_MAX_SIZE || (n & (n - 1)))
		return -EINVAL;
	if ((vq->desc_addr & 15) || (vq->avail_addr & 1) || (vq->used_addr & 3))
		return -EINVAL;
	vq->desc = guestmem_translate_user(gm, vq->desc_addr, 16 * n);
	/* avail: flags, idx, ring[n], used_event */
	vq->avail = guestmem_translate_user(gm, vq->avail_addr, 6 + 2 * n);
	/* used: flags, idx, ring[n], avail_event */
	vq->used = guestmem_translate_user(gm, vq->used_addr, 6 + 8 * n);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		return -EFAULT;
	}
	/* The guest addresses are aligned, but a region's file offset may
	 * not be: check what we will actually dereference atomically. */
	if (((uintptr_t)vq->desc & 15) || ((uintptr_t)vq->avail & 1) ||
	    ((uintptr_t)vq->used & 3)) {
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		return -EINVAL;
	}
	return 0;
}

bool vq_ready(const struct vq *vq)
{
	return vq->desc && vq->started && vq->enabled;
}

int vq_pop(struct vq *vq, const struct guestmem *gm, struct vq_elem *elem,
	   const char **why)
{
	uint16_t avail_idx, head, i;
	unsigned count = 0;
	bool seen_write = false, resubmit = false;

	if (!vq_ready(vq))
		return 0;
	if (vq->resubmit_next < vq->nresubmit) {
		/* Still in flight from before a restart (and still marked
		 * so in the record): the same head, walked again. */
		resubmit = true;
		head = vq->resubmit[vq->resubmit_next];
	} else {
		avail_idx = le16toh(__atomic_load_n(&vq->avail->idx,
						    __ATOMIC_ACQUIRE));
		if (avail_idx == vq->last_avail)
			return 0;
		/* The driver can be at most num entries ahead of us. */
		if ((uint16_t)(avail_idx - vq->last_avail) > vq->num) {
			*why = "avail index moved more than the ring size";
			return -EINVAL;
		}
		head = le16toh(vq->avail->ring[vq->last_avail % vq->num]);
	}
	if (head >= vq->num) {
		*why = "avail ring entry out of range";
		return -EINVAL;
	}
	elem->head = head;
	elem->nbufs = 0;
	elem->nout = 0;
	i = head;
	for (;;) {
		struct vring_desc d;
		struct vq_buf *b;

		/* Copy once: the guest may change the descriptor under us. */
		memcpy(&d, &vq->desc[i], sizeof(d));
		d.addr = le64toh(d.addr);
		d.len = le32toh(d.len);
		d.flags = le16toh(d.flags);
		d.next = le16toh(d.next);
		if (++count > vq->num) {
			*why = "descriptor chain loops or exceeds the ring size";
			return -EINVAL;
		}
		if (d.flags & VRING_DESC_F_INDIRECT) {
			*why = "indirect descriptor (not negotiated)";
			return -EINVAL;
		}
		if (d.flags & VRING_DESC_F_WRITE) {
			seen_write = true;
		} else if (seen_write) {
			*why = "device-readable descriptor after a writable one";
			return -EINVAL;
		}
		b = &elem->bufs[elem->nbufs];
		b->gpa = d.addr;
		b->len = d.len;
		b->write = d.flags & VRING_DESC_F_WRITE;
		b->hva = NULL;
		if (d.len) {
			b->hva = guestmem_translate(gm, d.addr, d.len);
			if (!b->hva) {
				*why = "descriptor buffer outside guest memory";
				return -EFAULT;
			}
		}
		elem->nbufs++;
		if (!b->write)
			elem->nout++;
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= vq->num) {
			*why = "descriptor next index out of range";
			return -EINVAL;
		}
		i = d.next;
	}
	if (resubmit) {
		vq->resubmit_next++;
		return 1;
	}
	vq->last_avail++;
	if (vq->rec) {
		/* After the chain is read: a crash before this store leaves
		 * the head unrecorded, and recovery pops it again from the
		 * avail ring (vs_ring_recover counts only marked heads). */
		vq->rec->counter++;
		__atomic_store_n(&vq->rec->inflight[head], vq->rec->counter,
				 __ATOMIC_RELEASE);
	}
	return 1;
}

void vq_push(struct vq *vq, uint16_t head, uint32_t len)
{
	struct vring_used_elem *e = &vq->used->ring[vq->used_idx % vq->num];
	struct vs_ring *r = vq->rec;

	/* Recovery settles a push torn after the ring's index by this head,
	 * so it is named before anything the driver can see. */
	if (r)
		__atomic_store_n(&r->last_batch_head, head, __ATOMIC_RELEASE);
	e->id = htole32(head);
	e->len = htole32(len);
	vq->used_idx++;
	/* Publish the element before the index that makes it visible.
	 * Sequentially consistent, not just release: vq_notify() then loads
	 * the driver's flags, and that load must not move before this store
	 * (the driver's mirror image is store flags, load used->idx). */
	__atomic_store_n(&vq->used->idx, htole16(vq->used_idx), __ATOMIC_SEQ_CST);
	if (r) {
		/* Mark first, index second: in between, recovery sees the
		 * ring one past the record and clears the (already clear)
		 * mark; the other order would leave a used head marked. */
		__atomic_store_n(&r->inflight[head], 0, __ATOMIC_RELEASE);
		__atomic_store_n(&r->used_idx, vq->used_idx, __ATOMIC_RELEASE);
	}
}

int vq_notify(struct vq *vq)
{
	uint64_t one = 1;
	uint16_t flags;

	if (vq->call_fd < 0 || !vq->avail)
		return 0;
	/* Seq-cst pairs with the store in vq_push(). */
	flags = le16toh(__atomic_load_n(&vq->avail->flags, __ATOMIC_SEQ_CST));
	if (flags & VRING_AVAIL_F_NO_INTERRUPT)
		return 0;
	/* UML's call fd is a pipe: a full pipe already means "interrupt
	 * pending", so EAGAIN is success. */
	if (write(vq->call_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int vq_drain_kick(struct vq *vq)
{
	uint64_t v;

	if (vq->kick_fd < 0)
		return 0;
	for (;;) {
		ssize_t n = read(vq->kick_fd, &v, sizeof(v));

		if (n == (ssize_t)sizeof(v))
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		/* End of file or a short read: the fd would stay readable
		 * and spin the loop. */
		return n < 0 ? -errno : -EPIPE;
	}
}
