/*
 * libFuzzer target: a device's session record (vsession.h) as a restarted
 * ebbd loads it, and the ring recovery that trusts what the check passed.
 * The record lives in a memfd any process holding it could have written.
 *
 * Input: byte 0 picks the device's queue count (1..8) and whether the
 * rest is laid over a valid, empty record from its version field on, or
 * only past its identity (so the field checks get fuzzed, not just the
 * magic); the last 4 bytes also give a ring's used and avail indices.
 *
 * Oracle, beyond ASan/UBSan: vs_check either refuses with a terminated
 * reason, or every later step stays in bounds: each ring the record
 * describes is recovered against a real ring in guest memory, and a
 * recovered ring never has more heads in flight than its size, nor a
 * resubmitted head outside it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guestmem.h"
#include "virtq.h"
#include "vsession.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vsession vs = { .fd = -1 };
	static struct vq vq;
	struct vs_layout *l;
	unsigned nq, n;
	char why[96];

	if (size < 5)
		return 0;
	if (!vs.l && vs_create("fuzz", &vs) < 0)
		abort();
	l = vs.l;
	memset(l, 0, sizeof(*l));
	memcpy(l->magic, VS_MAGIC, 8);
	l->version = VS_VERSION;
	l->size = sizeof(*l);
	nq = 1 + data[0] % VS_QUEUES;
	/* The top bit of byte 0: overwrite the version and size too;
	 * otherwise the identity (magic, version, size) stays whole. */
	if (data[0] & 0x80)
		memcpy((uint8_t *)l + 8, data + 1,
		       size - 5 < sizeof(*l) - 8 ? size - 5 : sizeof(*l) - 8);
	else
		memcpy((uint8_t *)l + 16, data + 1,
		       size - 5 < sizeof(*l) - 16 ? size - 5 : sizeof(*l) - 16);
	why[0] = '\0';
	if (vs_check(l, sizeof(*l), nq, why, sizeof(why)) < 0) {
		if (!memchr(why, '\0', sizeof(why)) || !why[0])
			abort();
		return 0;
	}
	for (unsigned q = 0; q < nq; q++) {
		struct vs_ring *r = &l->ring[q];
		/* Recovery reads only the two indices of the ring. */
		static uint8_t ring_mem[2 * 4096] __attribute__((aligned(4096)));
		uint16_t used, avail;

		if (!r->num)
			continue;
		/* A ring in memory, its indices from the input's tail. */
		memcpy(&used, data + size - 4, 2);
		memcpy(&avail, data + size - 2, 2);
		memset(ring_mem, 0, sizeof(ring_mem));
		vq_init(&vq, q);
		vq.num = r->num;
		vq.avail = (struct vring_avail *)ring_mem;
		vq.used = (struct vring_used *)(ring_mem + 4096);
		vq.avail->idx = avail;
		vq.used->idx = used;
		if (vs_ring_recover(r, &vq, vq.resubmit, &n, why, sizeof(why)) < 0)
			continue;
		if (n > r->num)
			abort();
		for (unsigned i = 0; i < n; i++)
			if (vq.resubmit[i] >= r->num)
				abort();
	}
	return 0;
}
