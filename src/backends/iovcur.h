/*
 * iovcur: a cursor over a request's iovec, for block backends.
 *
 * A virtio-blk request's data arrives split however the guest chose
 * (segments of any length, empty ones included); backends work in pages.
 * Requests are walked front to back, so a cursor that only moves forward
 * (and restarts if asked to go back) makes a whole walk O(segments +
 * pages).  Positions are byte offsets from the start of the request.
 *
 * The caller guarantees every position and length lies within the
 * iovec's total (asserted).  No state beyond the cursor; not thread-safe.
 */
#ifndef EBB_IOVCUR_H
#define EBB_IOVCUR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct iovcur {
	const struct iovec *iov;
	unsigned cnt;
	unsigned i;		/* segment holding byte `pos` */
	size_t seg_off;		/* pos's offset inside iov[i] */
	uint64_t pos;		/* request offset the cursor is at */
};

void iovcur_init(struct iovcur *c, const struct iovec *iov, unsigned cnt);
/* Move to request offset @pos (the end of the request is allowed). */
void iovcur_seek(struct iovcur *c, uint64_t pos);
/* Copy @n bytes from @src (NULL: zeros) to request offset @pos. */
void iovcur_put(struct iovcur *c, uint64_t pos, const uint8_t *src, size_t n);
/* Copy @n bytes at request offset @pos into @dst. */
void iovcur_get(struct iovcur *c, uint64_t pos, uint8_t *dst, size_t n);
/* The buffer holding [pos, pos + n) if it lies in one segment, else NULL. */
uint8_t *iovcur_contig(struct iovcur *c, uint64_t pos, size_t n);
/* Sum of the segments' lengths. */
uint64_t iovcur_total(const struct iovec *iov, unsigned cnt);

#endif
