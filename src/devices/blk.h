/*
 * blk: a virtio-blk device (virtio 1.x, section 5.2) served over
 * vhost-user, storing through a blkback (blkback.h).
 *
 * Owns one vu_dev, one request queue, a copy of the struct blkback it was
 * given (and, from blk_new's success on, the backend behind it: blk_free
 * destroys it), the config space, and counters of what the guest did.
 *
 * Offered features: SIZE_MAX, SEG_MAX and BLK_SIZE always; FLUSH if the
 * backend has a flush op; RO if it is read-only; DISCARD and WRITE_ZEROES
 * if it has those ops and is writable; TOPOLOGY if the caller gives a
 * physical block larger than the logical one.  (VERSION_1 and the
 * vhost-user protocol bit come from vhost_user.c.)  Not offered: MQ (one
 * queue), GEOMETRY, CONFIG_WCE, SECURE_ERASE, LIFETIME, ZONED, indirect
 * descriptors and EVENT_IDX (virtq.c rejects both).  A QEMU frontend must
 * therefore be started with num-queues=1.
 *
 * Config space: struct virtio_blk_config up to and including unused1
 * (60 bytes, little-endian), fixed at blk_new: capacity never changes.
 *
 * Requests (5.2.6).  A chain is read as two byte streams, whatever its
 * descriptor boundaries: the device-readable bytes (16-byte header, then
 * any out-data) and the device-writable bytes (any in-data, then the
 * status byte, the very last writable byte).  Header and data may share a
 * descriptor or be split anywhere; zero-length descriptors are skipped.
 * IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES are served; any other
 * type is answered VIRTIO_BLK_S_UNSUPP, as are DISCARD/WRITE_ZEROES when
 * not offered.  FLUSH without a flush op succeeds (nothing to make
 * durable).  The header's reserved (ioprio) field and the sector of
 * non-IN/OUT requests are ignored: Linux fills in ioprio.
 *
 * Hostile input, in two classes:
 *   - no status byte to answer in (fewer than 16 readable bytes, or no
 *     writable byte): the chain is unanswerable, so the device fails
 *     (vu_dev_fail: logged with its name, ev->failed told, frontend
 *     dropped); the daemon and other devices carry on.  Ring violations
 *     found by vq_pop fail it the same way.
 *   - anything else wrong with a request gets VIRTIO_BLK_S_IOERR (or
 *     UNSUPP where the spec says so) and the device keeps serving: a
 *     sector range outside the capacity (checked without overflow), data
 *     not a multiple of 512 bytes, data in the wrong direction for the
 *     type (or any data on FLUSH), a write to a read-only device, more
 *     data segments than seg_max or one longer than size_max, a
 *     discard/write-zeroes segment list that is empty, not a multiple of
 *     16 bytes or longer than max_*_seg, a segment over max_*_sectors;
 *     unknown flag bits and DISCARD's unmap flag give UNSUPP (5.2.6.2).
 *     Segments are copied out of guest memory once and all are checked
 *     before any reaches the backend.
 * Backend errors: -ENOTSUP gives UNSUPP, anything else IOERR.
 *
 * Used length: the bytes the device wrote into the chain: in-data plus
 * the status byte for a served IN (a failed backend read zero-fills the
 * in-data, so this holds there too), the ID bytes plus status for GET_ID,
 * 1 otherwise.
 *
 * Work is synchronous on the loop thread: a kick pops at most one ring's
 * worth of chains, serves each, pushes it, and interrupts the driver once
 * for the batch.
 *
 * Threading: loop thread only.
 */
#ifndef EBB_BLK_H
#define EBB_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "blkback.h"
#include "loop.h"

#define BLK_SEG_MAX_DEFAULT	126	/* + header + status fits a 128 ring */
/* size_max: the longest data segment.  With seg_max it bounds one
 * request's synchronous work (126 * 256 KiB = 31.5 MiB), which otherwise
 * only the guest's memory size would: descriptors may overlap.  Linux
 * sends at most max_sectors_kb (1280 KiB by default) per request anyway. */
#define BLK_SIZE_MAX		(256u * 1024)
#define BLK_DISCARD_SEG_MAX	32	/* segments per discard/write-zeroes */
/* One discard or write-zeroes segment at most this long: the backend
 * works synchronously on the loop, so keep one request's work bounded. */
#define BLK_DISCARD_SECTORS_DEFAULT	(64u * 1024 * 2)	/* 64 MiB */

struct blk_params {
	uint32_t block_size;	/* bytes, power of two 512..4096: blk_size
				 * (the guest's logical block); 0 = 512 */
	uint32_t phys_block_size; /* bytes, power of two up to 64 KiB; if
				 * larger than block_size, TOPOLOGY is offered
				 * with it as the physical block; 0 = none */
	uint32_t seg_max;	/* data segments per request, 1..VQ_MAX_SIZE-2;
				 * 0 = BLK_SEG_MAX_DEFAULT */
	uint32_t max_discard_sectors; /* 512-byte sectors per discard or
				 * write-zeroes segment; 0 =
				 * BLK_DISCARD_SECTORS_DEFAULT */
};

struct blk_info {
	bool connected;		/* a frontend is attached */
	bool ready;		/* the driver negotiated features */
	bool failed;		/* the device failed on hostile input (sticky) */
	uint64_t features;	/* negotiated virtio features, 0 until ready */
	uint64_t reads;		/* IN requests served OK */
	uint64_t writes;	/* OUT requests served OK */
	uint64_t read_bytes;	/* bytes of those reads */
	uint64_t write_bytes;	/* bytes of those writes */
	uint64_t flushes;	/* FLUSH requests served OK */
	uint64_t discards;	/* DISCARD requests served OK */
	uint64_t write_zeroes;	/* WRITE_ZEROES requests served OK */
	uint64_t get_ids;	/* GET_ID requests served OK */
	uint64_t ioerr;		/* requests answered VIRTIO_BLK_S_IOERR */
	uint64_t unsupp;	/* requests answered VIRTIO_BLK_S_UNSUPP */
};

struct blk_events {
	/* The device failed on hostile input; @why is a static string. */
	void (*failed)(void *opaque, const char *why);
};

struct blk;

/*
 * Serve @back as a virtio-blk device on @sock_path (NULL: do not listen;
 * attach a connection with vu_dev_attach(blk_vu(b), fd)).  @name tags log
 * lines ("g1/swap"); @p may be NULL for defaults; @ev may be NULL or have
 * NULL members.  *@back is copied; back->ops must outlive the device.
 * Returns 0, or -EINVAL for an unusable backend (no read op, no write op
 * on a writable device, capacity not a multiple of 512) or parameters,
 * -ENOMEM, or vu_dev_new's error.  On failure the backend is still the
 * caller's; on success it is the device's.
 */
int blk_new(struct loop *loop, const char *sock_path, const char *name,
	    const struct blkback *back, const struct blk_params *p,
	    const struct blk_events *ev, void *opaque, struct blk **out);
/* Close the device and destroy its backend (back->ops->destroy).  NULL ok. */
void blk_free(struct blk *b);

void blk_get_info(const struct blk *b, struct blk_info *out);

struct vu_dev;
struct vu_dev *blk_vu(struct blk *b);
/* blk_free, but the backend stays alive and the caller's again (an
 * adoption given up: the backend's state belongs to the guest still). */
void blk_free_keep_backend(struct blk *b);

#endif
