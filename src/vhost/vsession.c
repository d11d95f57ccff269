/*
 * vsession: a vhost-user device's session in a memfd (API, layout and the
 * in-flight protocol in vsession.h).
 */
#include "vsession.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(struct vs_ring) % 8 == 0, "ring record is 8-aligned");
_Static_assert(sizeof(struct vs_layout) % 8 == 0, "layout is 8-aligned");

static int map_layout(int fd, struct vs_layout **out)
{
	void *p = mmap(NULL, sizeof(struct vs_layout), PROT_READ | PROT_WRITE,
		       MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	return 0;
}

int vs_create(const char *name, struct vsession *out)
{
	char mname[80];
	int fd, rc;

	snprintf(mname, sizeof(mname), "ebb-session:%s", name);
	fd = memfd_create(mname, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sizeof(struct vs_layout)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rc = map_layout(fd, &out->l);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	out->fd = fd;
	/* A new memfd reads as zeroes: only the identity needs writing. */
	memcpy(out->l->magic, VS_MAGIC, sizeof(out->l->magic));
	out->l->version = VS_VERSION;
	out->l->size = sizeof(struct vs_layout);
	return 0;
}

int vs_open(int fd, struct vsession *out, char *why, unsigned nqueues)
{
	struct stat st;
	int rc;

	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(why, 96, "session record unreadable: %s", strerror(-rc));
		close(fd);
		return rc;
	}
	if ((uint64_t)st.st_size != sizeof(struct vs_layout)) {
		snprintf(why, 96, "session record is %lld bytes, not %zu",
			 (long long)st.st_size, sizeof(struct vs_layout));
		close(fd);
		return -EBADMSG;
	}
	rc = map_layout(fd, &out->l);
	if (rc < 0) {
		snprintf(why, 96, "cannot map the session record: %s",
			 strerror(-rc));
		close(fd);
		return rc;
	}
	out->fd = fd;
	rc = vs_check(out->l, (uint64_t)st.st_size, nqueues, why, 96);
	if (rc < 0)
		vs_close(out);
	return rc;
}

void vs_close(struct vsession *vs)
{
	if (vs->l)
		munmap(vs->l, sizeof(*vs->l));
	if (vs->fd >= 0)
		close(vs->fd);
	vs->l = NULL;
	vs->fd = -1;
}

static bool bool_ok(uint32_t v)
{
	return v <= 1;
}

#define BAD(...) do { snprintf(why, whylen, __VA_ARGS__); return -EBADMSG; } while (0)

int vs_check(const struct vs_layout *l, uint64_t file_size, unsigned nqueues,
	     char *why, unsigned whylen)
{
	if (file_size != sizeof(*l) || memcmp(l->magic, VS_MAGIC, 8))
		BAD("not a session record (magic)");
	if (l->version != VS_VERSION || l->size != sizeof(*l))
		BAD("session record version %u size %u, expected %u and %zu",
		    l->version, l->size, VS_VERSION, sizeof(*l));
	if (!bool_ok(l->connected) || !bool_ok(l->has_backend))
		BAD("session record flags out of range");
	if (l->nregions > GUESTMEM_MAX_REGIONS)
		BAD("session record has %u memory regions", l->nregions);
	for (unsigned i = 0; i < l->nregions; i++) {
		const struct guestmem_region_desc *d = &l->regions[i];

		if (!d->size || d->guest_addr + d->size < d->guest_addr ||
		    d->user_addr + d->size < d->user_addr ||
		    d->mmap_offset + d->size < d->mmap_offset)
			BAD("session record memory region %u out of range", i);
	}
	if (l->msg_state > VS_MSG_HANDLING || l->msg_len > VS_MSG_MAX ||
	    l->msg_nfds > 8 ||
	    (l->msg_state == VS_MSG_HANDLING && l->msg_len < 12))
		BAD("session record's pending message out of range");
	for (unsigned q = 0; q < VS_QUEUES; q++) {
		const struct vs_ring *r = &l->ring[q];

		if (q >= nqueues && (r->num || r->started || r->has_kick ||
				     r->has_call))
			BAD("session record uses ring %u of a %u-ring device",
			    q, nqueues);
		if (r->num > VQ_MAX_SIZE || (r->num & (r->num - 1)))
			BAD("session record ring %u size %u", q, r->num);
		if (r->addr_set > 1 || r->enabled > 1 || r->started > 1 ||
		    r->has_kick > 1 || r->has_call > 1)
			BAD("session record ring %u flags out of range", q);
		if (r->num && r->last_batch_head >= r->num)
			BAD("session record ring %u last head %u out of range",
			    q, r->last_batch_head);
		for (unsigned h = 0; h < VQ_MAX_SIZE; h++) {
			if (!r->inflight[h])
				continue;
			if (h >= r->num || r->inflight[h] > r->counter)
				BAD("session record ring %u in-flight head %u "
				    "out of range", q, h);
		}
	}
	return 0;
}

#undef BAD

void vs_clear_ring(struct vs_ring *r)
{
	memset(r, 0, sizeof(*r));
}

void vs_clear_session(struct vsession *vs)
{
	struct vs_layout *l = vs->l;

	if (!l)
		return;
	l->connected = 0;
	l->has_backend = 0;
	l->features = l->protocol_features = 0;
	l->nregions = 0;
	memset(l->regions, 0, sizeof(l->regions));
	l->msg_state = VS_MSG_NONE;
	for (unsigned q = 0; q < VS_QUEUES; q++)
		vs_clear_ring(&l->ring[q]);
}

int vs_ring_recover(struct vs_ring *r, struct vq *vq, uint16_t *heads,
		    unsigned *n, char *why, unsigned whylen)
{
	uint16_t used, avail, last;
	unsigned k = 0;

	*n = 0;
	if (!vq->used || !vq->avail) {
		snprintf(why, whylen, "ring %u is not mapped", vq->index);
		return -EBADMSG;
	}
	used = le16toh(__atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE));
	if (used != r->used_idx) {
		/* The push got as far as the ring's index but not the
		 * record's: its head is complete, whether or not its
		 * in-flight mark was cleared. */
		if ((uint16_t)(used - r->used_idx) != 1) {
			snprintf(why, whylen, "ring %u: used index %u is not "
				 "the recorded %u or one past it", vq->index,
				 used, r->used_idx);
			return -EBADMSG;
		}
		r->inflight[r->last_batch_head] = 0;
		r->used_idx = used;
	}
	for (unsigned h = 0; h < vq->num; h++) {
		unsigned j;

		if (!r->inflight[h])
			continue;
		/* Insertion by pop order: at most a ring's worth. */
		for (j = k; j > 0 && r->inflight[heads[j - 1]] > r->inflight[h];
		     j--)
			heads[j] = heads[j - 1];
		heads[j] = (uint16_t)h;
		k++;
	}
	last = (uint16_t)(used + k);
	avail = le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE));
	if ((uint16_t)(avail - last) > vq->num) {
		snprintf(why, whylen, "ring %u: %u in flight past used index "
			 "%u, beyond the driver's avail index %u", vq->index,
			 k, used, avail);
		return -EBADMSG;
	}
	vq->used_idx = used;
	vq->last_avail = last;
	*n = k;
	return 0;
}
