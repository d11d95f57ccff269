/*
 * blkback: what a block device's storage looks like to the virtio-blk
 * device model (blk.c).  The device parses and checks requests from the
 * guest; a backend only stores bytes.  Two backends exist:
 *
 *   swapstore   a swap device: pages live in the guest's persistent tmem
 *               pool, or in a per-guest backing file when the pool refuses
 *               them (swapstore.h);
 *   cachedisk   a data disk: an image file, with reads cached in an
 *               ephemeral tmem pool shared by every guest using the same
 *               image (cachedisk.h).
 *
 * Units.  Offsets and lengths are bytes.  The device guarantees every
 * offset and length is a multiple of BLKBACK_SECTOR (512) and that
 * [off, off + len) lies inside the capacity the backend announced; a
 * backend need not check again, but must cope with requests that are not
 * 4 KiB-aligned (read-modify-write) and with any iovec split (segments of
 * any length, not necessarily sector multiples, summing to a multiple).
 *
 * Errors.  0 or -errno.  The device turns -ENOTSUP into
 * VIRTIO_BLK_S_UNSUPP and any other error into VIRTIO_BLK_S_IOERR.  A
 * failed write may have written part of the range, as with real disks; it
 * must never leave a page that reads back as something the guest never
 * wrote there (a stale older copy counts as that).
 *
 * Threading.  The device calls a backend from one thread at a time.
 */
#ifndef EBB_BLKBACK_H
#define EBB_BLKBACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define BLKBACK_SECTOR		512u
#define BLKBACK_SERIAL_MAX	20u	/* VIRTIO_BLK_ID_BYTES */

struct blkback_ops {
	/* Fill the iovec with [off, off + sum of iov lengths).  Never-written
	 * ranges read as zeros. */
	int (*read)(void *be, uint64_t off, const struct iovec *iov,
		    unsigned iovcnt);
	/* Store the iovec's bytes at [off, ...). */
	int (*write)(void *be, uint64_t off, const struct iovec *iov,
		     unsigned iovcnt);
	/* Make every completed write durable as the backend defines it
	 * (fdatasync of a backing file; nothing for memory).  May be NULL:
	 * nothing to do. */
	int (*flush)(void *be);
	/* The guest no longer needs [off, off + len): drop it.  Later reads
	 * may return zeros or the old data (virtio allows both), so a backend
	 * may ignore parts it cannot drop.  NULL: DISCARD is not offered. */
	int (*discard)(void *be, uint64_t off, uint64_t len);
	/* [off, off + len) must read as zeros afterwards; @may_unmap lets the
	 * backend deallocate instead of writing.  NULL: WRITE_ZEROES is not
	 * offered. */
	int (*write_zeroes)(void *be, uint64_t off, uint64_t len,
			    bool may_unmap);
	/* Release everything the backend holds.  The device calls it once,
	 * when the device is freed. */
	void (*destroy)(void *be);
};

struct blkback {
	const struct blkback_ops *ops;
	void *be;			/* first argument of every op */
	uint64_t capacity_bytes;	/* multiple of BLKBACK_SECTOR */
	bool read_only;			/* VIRTIO_BLK_F_RO: writes fail */
	char serial[BLKBACK_SERIAL_MAX + 1];	/* GET_ID answer, NUL-terminated;
					 * the guest sees it in
					 * /sys/block/vdX/serial */
};

#endif
