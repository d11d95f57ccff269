/*
 * blk: virtio-blk over vhost-user, on a storage backend (API in blk.h,
 * the backend contract in blkback.h).
 *
 * Serving one chain (serve()):
 *   1. Measure the two streams: R readable bytes (bufs[0, nout)), W
 *      writable bytes (bufs[nout, nbufs)).  R < 16 or W < 1 leaves no
 *      header or no status byte: the only answer is failing the device.
 *   2. Copy the header out of guest memory once (the guest may change it
 *      under us), then never look at those bytes again.
 *   3. out-data = readable bytes [16, R); in-data = writable bytes
 *      [0, W - 1); status = writable byte W - 1.
 *   4. Per type, check everything against the config we offered and
 *      build an iovec straight onto guest memory (no bounce buffer), call
 *      the backend, and turn its result into a status.
 *   5. Write the status; the used length is what step 4 wrote plus one.
 *
 * All lengths are summed in 64 bits: a chain holds at most VQ_MAX_BUFS
 * buffers of at most 4 GiB each.  Sector ranges are checked as
 * "sector <= cap && n <= cap - sector", which cannot overflow.
 */
#include "blk.h"

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "log.h"
#include "vhost_user.h"
#include "virtq.h"

#include <linux/virtio_blk.h>

/* Feature bits (5.2.3). */
/* Feature bits, request types, status values and the discard/write-zeroes
 * segment are <linux/virtio_blk.h>'s. */
#define HDR_BYTES	sizeof(struct virtio_blk_outhdr)	/* type, ioprio, sector */
#define DISCARD_SEG_BYTES	sizeof(struct virtio_blk_discard_write_zeroes)

#define Q_REQUEST	0

/* Config space (5.2.4), little-endian, as far as the features we offer
 * reach; fields of features not offered stay zero. */
struct blk_config {
	uint64_t capacity;		/* 512-byte sectors */
	uint32_t size_max;		/* bytes per data segment */
	uint32_t seg_max;		/* data segments per request */
	uint16_t cylinders;		/* geometry: not offered */
	uint8_t heads;
	uint8_t sectors;
	uint32_t blk_size;		/* logical block, bytes */
	uint8_t physical_block_exp;	/* log2(physical / logical) */
	uint8_t alignment_offset;
	uint16_t min_io_size;		/* logical blocks */
	uint32_t opt_io_size;		/* logical blocks */
	uint8_t writeback;		/* CONFIG_WCE: not offered */
	uint8_t unused0;
	uint16_t num_queues;		/* MQ: not offered */
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
};

#define CONFIG_LEN (offsetof(struct blk_config, unused1) + 3)

_Static_assert(offsetof(struct blk_config, blk_size) == 20, "layout");
_Static_assert(offsetof(struct blk_config, writeback) == 32, "layout");
_Static_assert(offsetof(struct blk_config, max_discard_sectors) == 36,
	       "layout");
_Static_assert(offsetof(struct blk_config, write_zeroes_may_unmap) == 56,
	       "layout");
_Static_assert(CONFIG_LEN == 60 && CONFIG_LEN <= VU_MAX_CONFIG, "layout");

struct blk {
	struct vu_dev *vu;
	struct blkback back;	/* copy of the caller's; the backend is ours */
	const struct blk_events *ev;
	void *opaque;
	char name[64];
	uint64_t capacity_sectors;	/* back.capacity_bytes / 512 */
	uint32_t seg_max;	/* data segments per request we accept */
	uint32_t max_discard_sectors;	/* per discard/write-zeroes segment */
	bool warned_backend;	/* first backend error logged; later ones not */
	struct blk_config cfg;	/* built once in blk_new */
	struct blk_info info;	/* counters and state */
	struct vu_dev_ops ops;	/* blk_ops with this device's features */
	/* Scratch for one request: large, so kept off the stack. */
	struct vq_elem elem;
	struct iovec iov[VQ_MAX_BUFS];
};

/* What serving one request produced. */
struct outcome {
	uint8_t status;		/* S_* */
	uint32_t written;	/* bytes written before the status byte */
};

/* ---- streams over a chain ---------------------------------------------- */

/*
 * Describe bytes [skip, skip + len) of the stream @bufs[0, n) as an iovec
 * onto guest memory, leaving out empty pieces.  Returns the number of
 * entries, or -E2BIG if that would be more than @max or a piece would be
 * longer than @piece_max.  The caller has checked the stream holds
 * skip + len bytes.
 */
static int stream_iov(const struct vq_buf *bufs, unsigned n, uint64_t skip,
		      uint64_t len, struct iovec *iov, unsigned max,
		      uint64_t piece_max)
{
	unsigned cnt = 0;

	for (unsigned i = 0; i < n && len; i++) {
		uint64_t l = bufs[i].len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		if (l > len)
			l = len;
		if (cnt == max || l > piece_max)
			return -E2BIG;
		iov[cnt].iov_base = (uint8_t *)bufs[i].hva + skip;
		iov[cnt].iov_len = l;
		cnt++;
		len -= l;
		skip = 0;
	}
	return (int)cnt;
}

/* Copy @len bytes at @skip of the stream out to @dst (the caller has
 * checked the stream holds them). */
static void stream_gather(const struct vq_buf *bufs, unsigned n,
			  uint64_t skip, void *dst, uint64_t len)
{
	uint8_t *d = dst;

	for (unsigned i = 0; i < n && len; i++) {
		uint64_t l = bufs[i].len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		if (l > len)
			l = len;
		memcpy(d, (const uint8_t *)bufs[i].hva + skip, l);
		d += l;
		len -= l;
		skip = 0;
	}
}

static uint64_t stream_bytes(const struct vq_buf *bufs, unsigned n)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++)
		sum += bufs[i].len;
	return sum;
}

static void iov_copy_in(const struct iovec *iov, unsigned cnt,
			const void *src, size_t len)
{
	const uint8_t *s = src;

	for (unsigned i = 0; i < cnt && len; i++) {
		size_t l = iov[i].iov_len < len ? iov[i].iov_len : len;

		memcpy(iov[i].iov_base, s, l);
		s += l;
		len -= l;
	}
}

static void iov_zero(const struct iovec *iov, unsigned cnt)
{
	for (unsigned i = 0; i < cnt; i++)
		memset(iov[i].iov_base, 0, iov[i].iov_len);
}

/* ---- requests ------------------------------------------------------------ */

/* Is [sector, sector + bytes / 512) inside the disk?  Overflow-free. */
static bool range_ok(const struct blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t n = bytes / BLKBACK_SECTOR;

	return sector <= b->capacity_sectors &&
	       n <= b->capacity_sectors - sector;
}

static uint8_t backend_status(struct blk *b, const char *op, int rc)
{
	if (rc == 0)
		return VIRTIO_BLK_S_OK;
	if (rc == -ENOTSUP)
		return VIRTIO_BLK_S_UNSUPP;
	/* A dying disk fails every request: say so once, not per request. */
	if (!b->warned_backend) {
		b->warned_backend = true;
		log_warn(b->name, "backend %s failed: %s (further errors "
			 "are counted, not logged)", op, strerror(-rc));
	}
	return VIRTIO_BLK_S_IOERR;
}

/* @in, @nin: the writable stream; @out, @nout: the readable one past the
 * header.  in_len/out_len are the data bytes in each. */
struct streams {
	const struct vq_buf *in;
	unsigned nin;
	uint64_t in_len;
	const struct vq_buf *out;
	unsigned nout;
	uint64_t out_len;
};

static struct outcome do_rw(struct blk *b, uint32_t type, uint64_t sector,
			    const struct streams *s)
{
	struct outcome o = { VIRTIO_BLK_S_IOERR, 0 };
	bool in = type == VIRTIO_BLK_T_IN;
	uint64_t len = in ? s->in_len : s->out_len;
	int cnt, rc;

	/* Data flows one way only: a read has nothing to read from the
	 * guest, a write nothing to write to it. */
	if ((in ? s->out_len : s->in_len) != 0)
		return o;
	if (!in && b->back.read_only)
		return o;
	if (len % BLKBACK_SECTOR || !range_ok(b, sector, len))
		return o;
	if (in)
		cnt = stream_iov(s->in, s->nin, 0, len, b->iov, b->seg_max,
				 BLK_SIZE_MAX);
	else
		cnt = stream_iov(s->out, s->nout, HDR_BYTES, len, b->iov,
				 b->seg_max, BLK_SIZE_MAX);
	if (cnt < 0)
		return o;
	if (len) {
		uint64_t off = sector * BLKBACK_SECTOR;

		if (in)
			rc = b->back.ops->read(b->back.be, off, b->iov,
					       (unsigned)cnt);
		else
			rc = b->back.ops->write(b->back.be, off, b->iov,
						(unsigned)cnt);
		o.status = backend_status(b, in ? "read" : "write", rc);
	} else {
		o.status = VIRTIO_BLK_S_OK;
	}
	if (in) {
		/* A failed read may have filled part of the buffers: zero
		 * them so "written" is exactly the data length either way. */
		if (o.status != VIRTIO_BLK_S_OK)
			iov_zero(b->iov, (unsigned)cnt);
		o.written = (uint32_t)len;
	}
	if (o.status == VIRTIO_BLK_S_OK) {
		if (in) {
			b->info.reads++;
			b->info.read_bytes += len;
		} else {
			b->info.writes++;
			b->info.write_bytes += len;
		}
	}
	return o;
}

static struct outcome do_flush(struct blk *b, const struct streams *s)
{
	struct outcome o = { VIRTIO_BLK_S_IOERR, 0 };

	if (s->in_len || s->out_len)
		return o;
	o.status = VIRTIO_BLK_S_OK;
	if (b->back.ops->flush)
		o.status = backend_status(b, "flush",
					  b->back.ops->flush(b->back.be));
	if (o.status == VIRTIO_BLK_S_OK)
		b->info.flushes++;
	return o;
}

static struct outcome do_get_id(struct blk *b, const struct streams *s)
{
	struct outcome o = { VIRTIO_BLK_S_IOERR, 0 };
	uint8_t id[BLKBACK_SERIAL_MAX] = { 0 };
	uint64_t n = s->in_len < sizeof(id) ? s->in_len : sizeof(id);
	int cnt;

	if (s->out_len)
		return o;
	/* NUL-padded, unterminated when 20 bytes long (5.2.6). */
	memcpy(id, b->back.serial,
	       strnlen(b->back.serial, BLKBACK_SERIAL_MAX));
	cnt = stream_iov(s->in, s->nin, 0, n, b->iov, VQ_MAX_BUFS, UINT64_MAX);
	iov_copy_in(b->iov, (unsigned)cnt, id, n);
	o.status = VIRTIO_BLK_S_OK;
	o.written = (uint32_t)n;
	b->info.get_ids++;
	return o;
}

/* One discard/write-zeroes segment, in host byte order. */
struct discard_seg {
	uint64_t sector;
	uint32_t num;		/* sectors */
	uint32_t flags;		/* VIRTIO_BLK_WRITE_ZEROES_FLAG_* */
};

/*
 * DISCARD and WRITE_ZEROES: a list of 16-byte segments.  Copy the whole
 * list out of guest memory and decode it once, then check every segment
 * before acting on any, so a malformed list changes nothing.  Unknown
 * flags answer UNSUPP before any range is looked at (5.2.6.2 names UNSUPP
 * for them).
 */
static struct outcome do_discard_write_zeroes(struct blk *b, uint32_t type,
					      const struct streams *s)
{
	struct outcome o = { VIRTIO_BLK_S_UNSUPP, 0 };
	struct virtio_blk_discard_write_zeroes raw[BLK_DISCARD_SEG_MAX];
	struct discard_seg seg[BLK_DISCARD_SEG_MAX];
	bool discard = type == VIRTIO_BLK_T_DISCARD;
	unsigned nseg;

	if (b->back.read_only ||
	    (discard ? !b->back.ops->discard : !b->back.ops->write_zeroes))
		return o;	/* not offered */
	o.status = VIRTIO_BLK_S_IOERR;
	if (s->in_len || s->out_len == 0 || s->out_len % DISCARD_SEG_BYTES ||
	    s->out_len / DISCARD_SEG_BYTES > BLK_DISCARD_SEG_MAX)
		return o;
	nseg = (unsigned)(s->out_len / DISCARD_SEG_BYTES);
	stream_gather(s->out, s->nout, HDR_BYTES, raw, s->out_len);
	for (unsigned i = 0; i < nseg; i++) {
		seg[i].sector = le64toh(raw[i].sector);
		seg[i].num = le32toh(raw[i].num_sectors);
		seg[i].flags = le32toh(raw[i].flags);
	}

	for (unsigned i = 0; i < nseg; i++) {
		uint32_t flags = seg[i].flags;

		if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ||
		    (discard && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))) {
			o.status = VIRTIO_BLK_S_UNSUPP;
			return o;
		}
	}
	for (unsigned i = 0; i < nseg; i++) {
		if (seg[i].num > b->max_discard_sectors ||
		    !range_ok(b, seg[i].sector,
			      (uint64_t)seg[i].num * BLKBACK_SECTOR))
			return o;
	}
	for (unsigned i = 0; i < nseg; i++) {
		uint64_t off = seg[i].sector * BLKBACK_SECTOR;
		uint64_t len = (uint64_t)seg[i].num * BLKBACK_SECTOR;
		int rc;

		if (seg[i].num == 0)
			continue;
		if (discard)
			rc = b->back.ops->discard(b->back.be, off, len);
		else
			rc = b->back.ops->write_zeroes(b->back.be, off, len,
				seg[i].flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
		/* Segments already done stay done: the spec leaves them
		 * indeterminate after IOERR. */
		o.status = backend_status(b, discard ? "discard" :
					  "write-zeroes", rc);
		if (o.status != VIRTIO_BLK_S_OK)
			return o;
	}
	o.status = VIRTIO_BLK_S_OK;
	if (discard)
		b->info.discards++;
	else
		b->info.write_zeroes++;
	return o;
}

/*
 * Serve one chain (steps in the file comment).  Returns 0 with *used set,
 * or -EINVAL with *why when the chain cannot be answered at all.
 */
static int serve(struct blk *b, const struct vq_elem *e, uint32_t *used,
		 const char **why)
{
	struct streams s = {
		.in = e->bufs + e->nout,
		.nin = e->nbufs - e->nout,
		.out = e->bufs,
		.nout = e->nout,
	};
	uint64_t r = stream_bytes(s.out, s.nout);
	uint64_t w = stream_bytes(s.in, s.nin);
	uint8_t hdr[HDR_BYTES], *status = NULL;
	struct outcome o = { VIRTIO_BLK_S_UNSUPP, 0 };
	uint32_t type;
	uint64_t sector;

	/* 1. */
	if (r < HDR_BYTES) {
		*why = "request without a 16-byte readable header";
		return -EINVAL;
	}
	if (w < 1) {
		*why = "request without a writable status byte";
		return -EINVAL;
	}
	for (unsigned i = s.nin; i-- > 0;) {
		if (s.in[i].len) {
			status = (uint8_t *)s.in[i].hva + s.in[i].len - 1;
			break;
		}
	}
	/* 2. */
	stream_gather(s.out, s.nout, 0, hdr, HDR_BYTES);
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);
	type = le32toh(type);
	sector = le64toh(sector);
	/* 3. */
	s.out_len = r - HDR_BYTES;
	s.in_len = w - 1;
	/* 4. */
	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		o = do_rw(b, type, sector, &s);
		break;
	case VIRTIO_BLK_T_FLUSH:
		o = do_flush(b, &s);
		break;
	case VIRTIO_BLK_T_GET_ID:
		o = do_get_id(b, &s);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		o = do_discard_write_zeroes(b, type, &s);
		break;
	default:
		break;		/* UNSUPP */
	}
	if (o.status == VIRTIO_BLK_S_IOERR)
		b->info.ioerr++;
	else if (o.status == VIRTIO_BLK_S_UNSUPP)
		b->info.unsupp++;
	if (o.status != VIRTIO_BLK_S_OK)
		log_debug(b->name, "request type %u sector %llu: status %u",
			  type, (unsigned long long)sector, o.status);
	/* 5. */
	*status = o.status;
	*used = o.written + 1;
	return 0;
}

/* ---- vu_dev_ops ---------------------------------------------------------- */

static void queue_kick(void *opaque, struct vu_dev *dev, unsigned q)
{
	struct blk *b = opaque;
	struct vq *vq = vu_dev_vq(dev, q);
	struct guestmem *gm = vu_dev_mem(dev);
	const char *why = NULL;
	bool pushed = false;
	int rc;

	if (!vq)
		return;
	/* Bounded: at most one ring's worth per kick.  Chains the driver
	 * adds meanwhile come with a kick of their own (we never suppress
	 * notifications), so nothing is left waiting. */
	for (unsigned budget = vq->num; budget; budget--) {
		uint32_t used;

		rc = vq_pop(vq, gm, &b->elem, &why);
		if (rc == 0)
			break;
		if (rc < 0 || serve(b, &b->elem, &used, &why) < 0)
			goto fail;
		vq_push(vq, b->elem.head, used);
		pushed = true;
	}
	if (pushed && vq_notify(vq) < 0)
		log_warn(b->name, "cannot interrupt the request queue");
	return;
fail:
	/* Chains pushed before this one are lost with the connection. */
	vu_dev_fail(dev, why ? why : "malformed ring");
}

static void get_config(void *opaque, uint8_t *cfg)
{
	struct blk *b = opaque;

	memcpy(cfg, &b->cfg, CONFIG_LEN);
}

static void features_set(void *opaque, uint64_t features)
{
	struct blk *b = opaque;

	b->info.ready = true;
	b->info.features = features;
	log_info(b->name, "driver ready, features %#llx",
		 (unsigned long long)features);
}

static void disconnected(void *opaque)
{
	struct blk *b = opaque;

	b->info.ready = false;
	b->info.features = 0;
}

static void failed(void *opaque, const char *why)
{
	struct blk *b = opaque;

	b->info.failed = true;
	if (b->ev && b->ev->failed)
		b->ev->failed(b->opaque, why);
}

/* No set_config: writeback (CONFIG_WCE) is the only writable field and
 * is not offered; vhost_user.c refuses SET_CONFIG for us. */
static const struct vu_dev_ops blk_ops = {
	.type = "blk",
	.features = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
		    (1ull << VIRTIO_BLK_F_BLK_SIZE),
	.nqueues = 1,
	.config_len = CONFIG_LEN,
	.get_config = get_config,
	.features_set = features_set,
	.queue_kick = queue_kick,
	.disconnected = disconnected,
	.failed = failed,
};

/* ---- lifecycle ----------------------------------------------------------- */

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static unsigned log2u(uint32_t v)
{
	unsigned n = 0;

	while (v >>= 1)
		n++;
	return n;
}

/* Check @back and @p, and fill in b's limits, features and config. */
static int configure(struct blk *b, const struct blkback *back,
		     const struct blk_params *p)
{
	const struct blkback_ops *ops = back->ops;
	struct blk_params d = { 0 };
	uint32_t align_sectors;

	if (!ops || !ops->read || (!back->read_only && !ops->write) ||
	    back->capacity_bytes % BLKBACK_SECTOR)
		return -EINVAL;
	if (p)
		d = *p;
	if (!d.block_size)
		d.block_size = BLKBACK_SECTOR;
	if (!d.seg_max)
		d.seg_max = BLK_SEG_MAX_DEFAULT;
	if (!d.max_discard_sectors)
		d.max_discard_sectors = BLK_DISCARD_SECTORS_DEFAULT;
	if (!pow2(d.block_size) || d.block_size < BLKBACK_SECTOR ||
	    d.block_size > 4096 || d.seg_max > VQ_MAX_SIZE - 2 ||
	    (d.phys_block_size && (!pow2(d.phys_block_size) ||
				   d.phys_block_size > 65536)))
		return -EINVAL;

	b->back = *back;
	b->capacity_sectors = back->capacity_bytes / BLKBACK_SECTOR;
	b->seg_max = d.seg_max;
	b->max_discard_sectors = d.max_discard_sectors;
	b->ops = blk_ops;
	b->cfg.capacity = htole64(b->capacity_sectors);
	b->cfg.size_max = htole32(BLK_SIZE_MAX);
	b->cfg.seg_max = htole32(d.seg_max);
	b->cfg.blk_size = htole32(d.block_size);
	b->cfg.num_queues = htole16(1);
	align_sectors = d.block_size / BLKBACK_SECTOR;
	if (d.phys_block_size > d.block_size) {
		uint32_t per = d.phys_block_size / d.block_size;

		b->ops.features |= 1ull << VIRTIO_BLK_F_TOPOLOGY;
		b->cfg.physical_block_exp = (uint8_t)log2u(per);
		b->cfg.min_io_size = htole16((uint16_t)per);
		align_sectors = d.phys_block_size / BLKBACK_SECTOR;
	}
	if (back->read_only)
		b->ops.features |= 1ull << VIRTIO_BLK_F_RO;
	if (ops->flush)
		b->ops.features |= 1ull << VIRTIO_BLK_F_FLUSH;
	/* Discarding or zeroing is writing: a read-only disk offers neither. */
	if (ops->discard && !back->read_only) {
		b->ops.features |= 1ull << VIRTIO_BLK_F_DISCARD;
		b->cfg.max_discard_sectors = htole32(d.max_discard_sectors);
		b->cfg.max_discard_seg = htole32(BLK_DISCARD_SEG_MAX);
		/* The granule the backend frees in: Linux's
		 * discard_granularity. */
		b->cfg.discard_sector_alignment = htole32(align_sectors);
	}
	if (ops->write_zeroes && !back->read_only) {
		b->ops.features |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
		b->cfg.max_write_zeroes_sectors = htole32(d.max_discard_sectors);
		b->cfg.max_write_zeroes_seg = htole32(BLK_DISCARD_SEG_MAX);
		/* blkback lets the backend deallocate when asked to. */
		b->cfg.write_zeroes_may_unmap = 1;
	}
	return 0;
}

int blk_new(struct loop *loop, const char *sock_path, const char *name,
	    const struct blkback *back, const struct blk_params *p,
	    const struct blk_events *ev, void *opaque, struct blk **out)
{
	struct blk *b;
	int rc;

	if (!back)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->ev = ev;
	b->opaque = opaque;
	snprintf(b->name, sizeof(b->name), "%s", name);
	rc = configure(b, back, p);
	if (rc < 0)
		goto err_free;
	rc = vu_dev_new(loop, sock_path, name, &b->ops, b, &b->vu);
	if (rc < 0)
		goto err_free;
	log_debug(b->name, "%llu sectors%s, features %#llx",
		  (unsigned long long)b->capacity_sectors,
		  back->read_only ? " read-only" : "",
		  (unsigned long long)b->ops.features);
	*out = b;
	return 0;

err_free:
	free(b);
	return rc;
}

void blk_free(struct blk *b)
{
	if (!b)
		return;
	/* The connection first: nothing may reach the backend after. */
	vu_dev_free(b->vu);
	if (b->back.ops && b->back.ops->destroy)
		b->back.ops->destroy(b->back.be);
	free(b);
}

void blk_free_keep_backend(struct blk *b)
{
	if (!b)
		return;
	b->back.ops = NULL;
	blk_free(b);
}

void blk_get_info(const struct blk *b, struct blk_info *out)
{
	*out = b->info;
	out->connected = vu_dev_connected(b->vu);
}

struct vu_dev *blk_vu(struct blk *b)
{
	return b->vu;
}
