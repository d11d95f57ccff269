/*
 * balloon: virtio-balloon over vhost-user: inflate, deflate, statistics
 * and free page reporting (API and events in balloon.h).
 */
#include "balloon.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hugeblocks.h"
#include "log.h"
#include "vsession.h"
#include "vhost_user.h"

#include <linux/virtio_balloon.h>

#define Q_INFLATE	0
#define Q_DEFLATE	1

#define STATS_MAX	64	/* entries we accept in one report */

/* Config space (5.5.4): only the fields for the features we offer. */
struct balloon_config {
	uint32_t num_pages;	/* le32, written by us */
	uint32_t actual;	/* le32, written by the driver */
	uint32_t free_page_hint_cmd_id;
	uint32_t poison_val;
};

struct balloon {
	struct vu_dev *vu;
	struct loop *loop;
	const struct balloon_events *ev;
	void *opaque;
	char name[64];
	struct balloon_info info;	/* counters, target, actual, stats */
	bool reached_sent;	/* target_reached sent for this target */
	bool stats_held;	/* we hold the driver's stats buffer */
	uint16_t stats_head;	/* its chain head, valid if stats_held */
	struct loop_timer *stats_timer;
	uint64_t stats_interval_ms;
	struct vu_dev_ops ops;	/* balloon_ops, less what this guest is not offered */
	uint64_t keep_wait_ms;	/* keep 2 MiB blocks whole; 0 off */
	struct hugeblocks *hb;	/* the RAM file's blocks, while a table is set */
	struct loop_timer *keep_timer;	/* expires waiting blocks */
	struct vq_elem elem;	/* scratch for vq_pop: large, keep off stack */
};

/*
 * What the balloon must find again after ebbd restarts (issue 15), kept
 * in the session record (vu_dev_state): the sizes the driver and ebbd
 * agreed on, and the counters the OOM-deflate judgement depends on.
 * Written after every change, read back in adopted().
 */
#define BALLOON_STATE_MAGIC 0x45424231u	/* "EBB1" */

struct balloon_durable {
	uint32_t magic;
	uint32_t target_pages;
	uint32_t actual_pages;
	uint32_t pad;
	uint64_t inflated_pages;
	uint64_t deflated_pages;
	uint64_t oom_deflated_pages;
	uint64_t reported_bytes;
	uint64_t returned_bytes;
};

_Static_assert(sizeof(struct balloon_durable) <= VS_DEV_BYTES,
	       "balloon state fits the session record");

static void save_state(struct balloon *b)
{
	struct balloon_durable st = {
		.magic = BALLOON_STATE_MAGIC,
		.target_pages = b->info.target_pages,
		.actual_pages = b->info.actual_pages,
		.inflated_pages = b->info.inflated_pages,
		.deflated_pages = b->info.deflated_pages,
		.oom_deflated_pages = b->info.oom_deflated_pages,
		.reported_bytes = b->info.reported_bytes,
		.returned_bytes = b->info.returned_bytes,
	};

	memcpy(vu_dev_state(b->vu), &st, sizeof(st));
}

static unsigned q_stats(const struct balloon *b)
{
	return (vu_dev_features(b->vu) & (1ull << VIRTIO_BALLOON_F_STATS_VQ)) ? 2 : ~0u;
}

static unsigned q_report(const struct balloon *b)
{
	uint64_t f = vu_dev_features(b->vu);

	if (!(f & (1ull << VIRTIO_BALLOON_F_REPORTING)))
		return ~0u;
	return (f & (1ull << VIRTIO_BALLOON_F_STATS_VQ)) ? 3 : 2;
}

static void check_reached(struct balloon *b)
{
	if (b->reached_sent || b->info.actual_pages != b->info.target_pages)
		return;
	b->reached_sent = true;
	log_info(b->name, "balloon reached target: %u pages (%llu MiB)",
		 b->info.actual_pages,
		 (unsigned long long)b->info.actual_pages * BALLOON_PAGE_SIZE >> 20);
	if (b->ev && b->ev->target_reached)
		b->ev->target_reached(b->opaque, b->info.actual_pages);
}

/*
 * Give [gpa, gpa+len) back to the host, or, when blocks are kept whole,
 * hand it to hugeblocks, which punches whole blocks and lets 4 KiB
 * leftovers wait (@reported: the guest takes the range back as soon as
 * the buffer returns, so nothing of it may wait).  Only ranges in the RAM
 * file (the largest region) have blocks to keep; the caller has checked
 * that [gpa, gpa+len) lies in guest memory.
 */
static void give_back(struct balloon *b, struct guestmem *gm, uint64_t gpa,
		      uint64_t len, bool reported)
{
	const struct guestmem_region *r = guestmem_largest(gm);
	struct hugeblocks_info before, after;
	uint64_t off;
	int rc;

	if (!b->hb || !r || gpa < r->guest_addr ||
	    gpa - r->guest_addr > r->size || len > r->size - (gpa - r->guest_addr)) {
		rc = guestmem_discard(gm, gpa, len);
		if (rc == 0)
			b->info.returned_bytes += len;
		else
			log_warn(b->name, "punching %llu bytes failed: %s",
				 (unsigned long long)len, strerror(-rc));
		return;
	}
	off = r->mmap_offset + (gpa - r->guest_addr);
	hugeblocks_get_info(b->hb, &before);
	rc = reported ? hugeblocks_report(b->hb, off, len) :
			hugeblocks_give(b->hb, off, len, loop_now_ms());
	hugeblocks_get_info(b->hb, &after);
	if (rc < 0)
		log_warn(b->name, "range not whole pages of the RAM file");
	b->info.returned_bytes += after.punched_bytes - before.punched_bytes;
}

/* A deflated run is the guest's again: it must not wait to be punched. */
static void take_back(struct balloon *b, struct guestmem *gm, uint64_t gpa,
		      uint64_t len)
{
	const struct guestmem_region *r = guestmem_largest(gm);

	if (!b->hb || !r || gpa < r->guest_addr ||
	    gpa - r->guest_addr > r->size || len > r->size - (gpa - r->guest_addr))
		return;
	hugeblocks_reuse(b->hb, r->mmap_offset + (gpa - r->guest_addr), len);
}

static void flush_run(struct balloon *b, struct guestmem *gm, bool inflate,
		      uint64_t start, uint64_t len)
{
	if (!len)
		return;
	if (inflate)
		give_back(b, gm, start, len, false);
	else
		take_back(b, gm, start, len);
}

/*
 * Walk the pfns of an inflate or deflate buffer, checking each against
 * guest memory.  Inflate (@punch) gives the pages back to the host at once,
 * coalescing runs of consecutive pfns: the driver hands them over in runs
 * more often than not, and one fallocate per run is far cheaper than one
 * per page.  Deflate needs nothing punched: the guest's next touch faults
 * in a fresh zero page; but pages waiting for their block to be punched
 * whole must leave the bitmap before the guest has them back.
 */
static int walk_pfns(struct balloon *b, struct guestmem *gm,
		     const struct vq_elem *e, bool punch, uint64_t *pages,
		     const char **why)
{
	uint64_t run_start = 0, run_len = 0;
	uint64_t n = 0;

	for (unsigned i = 0; i < e->nbufs; i++) {
		const struct vq_buf *buf = &e->bufs[i];

		if (buf->write || buf->len % 4) {
			*why = "pfn buffer writable or not whole pfns";
			return -EINVAL;
		}
		for (uint32_t off = 0; off < buf->len; off += 4) {
			uint32_t pfn;
			uint64_t gpa;

			memcpy(&pfn, (uint8_t *)buf->hva + off, 4);
			gpa = (uint64_t)le32toh(pfn) * BALLOON_PAGE_SIZE;
			if (!guestmem_translate(gm, gpa, BALLOON_PAGE_SIZE)) {
				*why = "pfn outside guest memory";
				return -EFAULT;
			}
			n++;
			if (!punch && !b->hb)
				continue;
			if (run_len && gpa == run_start + run_len) {
				run_len += BALLOON_PAGE_SIZE;
				continue;
			}
			flush_run(b, gm, punch, run_start, run_len);
			run_start = gpa;
			run_len = BALLOON_PAGE_SIZE;
		}
	}
	flush_run(b, gm, punch, run_start, run_len);
	*pages = n;
	return 0;
}

static int do_report(struct balloon *b, struct guestmem *gm,
		     const struct vq_elem *e, const char **why)
{
	for (unsigned i = 0; i < e->nbufs; i++) {
		const struct vq_buf *buf = &e->bufs[i];

		/* page_reporting adds its scatterlist as device-writable. */
		if (!buf->write || buf->len == 0 || buf->len % BALLOON_PAGE_SIZE ||
		    buf->gpa % BALLOON_PAGE_SIZE) {
			*why = "reported range not whole writable pages";
			return -EINVAL;
		}
		if (!guestmem_translate(gm, buf->gpa, buf->len)) {
			*why = "reported range outside guest memory";
			return -EFAULT;
		}
		b->info.reported_bytes += buf->len;
		give_back(b, gm, buf->gpa, buf->len, true);
	}
	return 0;
}

static int do_stats(struct balloon *b, const struct vq_elem *e,
		    const char **why)
{
	uint8_t raw[STATS_MAX * sizeof(struct virtio_balloon_stat)];
	size_t len = 0;

	/* The driver sends one readable buffer; gather in case it splits. */
	for (unsigned i = 0; i < e->nbufs; i++) {
		const struct vq_buf *buf = &e->bufs[i];

		if (buf->write || buf->len > sizeof(raw) - len) {
			*why = "stats buffer writable or too large";
			return -EINVAL;
		}
		if (buf->len)
			memcpy(raw + len, buf->hva, buf->len);
		len += buf->len;
	}
	if (len % sizeof(struct virtio_balloon_stat)) {
		*why = "stats buffer not a whole number of entries";
		return -EINVAL;
	}
	b->info.stats_valid = 0;
	for (size_t off = 0; off < len; off += sizeof(struct virtio_balloon_stat)) {
		uint16_t tag;
		uint64_t val;

		memcpy(&tag, raw + off, 2);
		memcpy(&val, raw + off + 2, 8);
		tag = le16toh(tag);
		val = le64toh(val);
		if (tag >= VIRTIO_BALLOON_S_NR)
			continue;	/* newer drivers know more tags */
		b->info.stats[tag] = val;
		b->info.stats_valid |= 1u << tag;
	}
	b->info.stats_ms = loop_now_ms();
	return 0;
}

static void queue_kick(void *opaque, struct vu_dev *dev, unsigned q)
{
	struct balloon *b = opaque;
	struct vq *vq = vu_dev_vq(dev, q);
	struct guestmem *gm = vu_dev_mem(dev);
	bool pushed = false;
	const char *why = NULL;
	int rc;

	if (!vq)
		return;
	/* Bounded: the ring holds at most num chains. */
	for (unsigned budget = vq->num; budget; budget--) {
		uint64_t pages = 0;
		uint64_t before = b->info.returned_bytes;

		rc = vq_pop(vq, gm, &b->elem, &why);
		if (rc == 0)
			break;
		if (rc < 0)
			goto fail;
		if (q == Q_INFLATE) {
			rc = walk_pfns(b, gm, &b->elem, true, &pages, &why);
			b->info.inflated_pages += pages;
		} else if (q == Q_DEFLATE) {
			uint64_t in_balloon = b->info.inflated_pages -
					      b->info.deflated_pages;

			rc = walk_pfns(b, gm, &b->elem, false, &pages, &why);
			/* Shrinking below a target we did not lower is the
			 * driver's OOM notifier at work (DEFLATE_ON_OOM). */
			if (rc == 0 && in_balloon <= b->info.target_pages)
				b->info.oom_deflated_pages += pages;
			b->info.deflated_pages += pages;
		} else if (q == q_stats(b)) {
			rc = do_stats(b, &b->elem, &why);
			if (rc == 0) {
				/* Keep the buffer: returning it is how we
				 * ask for the next report. */
				b->stats_head = b->elem.head;
				b->stats_held = true;
				continue;
			}
		} else if (q == q_report(b)) {
			rc = do_report(b, gm, &b->elem, &why);
		} else {
			why = "buffer on a queue the device does not use";
			rc = -EINVAL;
		}
		if (rc < 0)
			goto fail;
		/* The counters are only counters (actual_pages, from the
		 * driver, is what the host trusts): a crash between this
		 * and the push runs the request again and counts it twice. */
		save_state(b);
		vq_push(vq, b->elem.head, 0);
		pushed = true;
		if (b->info.returned_bytes > before && b->ev && b->ev->returned)
			b->ev->returned(b->opaque, b->info.returned_bytes - before);
	}
	if (pushed && vq_notify(vq) < 0)
		log_warn(b->name, "cannot interrupt queue %u", q);
	return;
fail:
	vu_dev_fail(dev, why ? why : "malformed ring");
}

static void request_stats(void *opaque)
{
	struct balloon *b = opaque;
	struct vq *vq;

	if (!b->stats_held || vu_dev_is_failed(b->vu))
		return;
	vq = vu_dev_vq(b->vu, q_stats(b));
	if (!vq || !vq_ready(vq))
		return;
	b->stats_held = false;
	vq_push(vq, b->stats_head, 0);
	vq_notify(vq);
}

static void get_config(void *opaque, uint8_t *cfg)
{
	struct balloon *b = opaque;
	struct balloon_config c = {
		.num_pages = htole32(b->info.target_pages),
		.actual = htole32(b->info.actual_pages),
	};

	memcpy(cfg, &c, sizeof(c));
}

static int set_config(void *opaque, uint32_t off, const uint8_t *data,
		      uint32_t len)
{
	struct balloon *b = opaque;
	struct balloon_config c = {
		.num_pages = htole32(b->info.target_pages),
		.actual = htole32(b->info.actual_pages),
	};

	memcpy((uint8_t *)&c + off, data, len);
	/* num_pages is ours: a driver writing it is ignored, not obeyed. */
	if (le32toh(c.num_pages) != b->info.target_pages)
		log_warn(b->name, "driver wrote num_pages; ignored");
	b->info.actual_pages = le32toh(c.actual);
	save_state(b);
	check_reached(b);
	return 0;
}

static void features_set(void *opaque, uint64_t features)
{
	struct balloon *b = opaque;

	b->info.ready = true;
	log_info(b->name, "driver ready, features %#llx",
		 (unsigned long long)features);
}

/* ---- keeping 2 MiB blocks whole (hugeblocks.h) ------------------------ */

static int keep_punch(void *opaque, uint64_t off, uint64_t len)
{
	struct balloon *b = opaque;
	const struct guestmem_region *r = guestmem_largest(vu_dev_mem(b->vu));

	if (!r)
		return -ENOTCONN;
	if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

static bool keep_has_hole(void *opaque, uint64_t off)
{
	struct balloon *b = opaque;
	const struct guestmem_region *r = guestmem_largest(vu_dev_mem(b->vu));
	off_t h;

	if (!r)
		return true;
	h = lseek(r->fd, (off_t)off, SEEK_HOLE);
	/* An error says nothing is worth keeping: punch as before. */
	return h < 0 || (uint64_t)h < off + HUGEBLOCK_BYTES;
}

static const struct hugeblocks_ops keep_ops = {
	.punch = keep_punch,
	.has_hole = keep_has_hole,
};

/* Drop the block accounting (disconnect, new table).  Waiting pages are
 * forgotten, not punched: after a reset the guest's balloon is empty and
 * every page may be the guest's. */
static void keep_stop(struct balloon *b)
{
	struct hugeblocks_info hi;

	if (!b->hb)
		return;
	hugeblocks_get_info(b->hb, &hi);
	if (hi.pending_bytes)
		log_info(b->name, "forgetting %llu KiB waiting for their blocks",
			 (unsigned long long)(hi.pending_bytes >> 10));
	hugeblocks_free(b->hb);
	b->hb = NULL;
}

static void keep_start(struct balloon *b)
{
	const struct guestmem_region *r = guestmem_largest(vu_dev_mem(b->vu));
	int rc;

	keep_stop(b);
	if (!b->keep_wait_ms || !r)
		return;
	rc = hugeblocks_new(r->mmap_offset + r->size, b->keep_wait_ms,
			    &keep_ops, b, &b->hb);
	if (rc < 0)
		log_warn(b->name, "cannot keep 2 MiB blocks whole (%s): "
			 "punching as freed", strerror(-rc));
}

static void expire_blocks(struct balloon *b, bool all)
{
	uint64_t bytes = 0;

	if (!b->hb)
		return;
	hugeblocks_expire(b->hb, loop_now_ms(), all, &bytes);
	b->info.returned_bytes += bytes;
	if (bytes && b->ev && b->ev->returned)
		b->ev->returned(b->opaque, bytes);
}

static void on_keep_timer(void *opaque)
{
	expire_blocks(opaque, false);
}

static void disconnected(void *opaque)
{
	struct balloon *b = opaque;

	keep_stop(b);
	b->info.ready = false;
	b->stats_held = false;
	b->info.actual_pages = 0;
	save_state(b);
}

/* A restarted ebbd adopted the session: the sizes are the ones before. */
static int adopted(void *opaque)
{
	struct balloon *b = opaque;
	struct balloon_durable st;

	memcpy(&st, vu_dev_state(b->vu), sizeof(st));
	if (st.magic == 0)
		return 0;	/* nothing happened to record yet */
	if (st.magic != BALLOON_STATE_MAGIC || st.pad ||
	    st.deflated_pages > st.inflated_pages)
		return -EBADMSG;
	b->info.target_pages = st.target_pages;
	b->info.actual_pages = st.actual_pages;
	b->info.inflated_pages = st.inflated_pages;
	b->info.deflated_pages = st.deflated_pages;
	b->info.oom_deflated_pages = st.oom_deflated_pages;
	b->info.reported_bytes = st.reported_bytes;
	b->info.returned_bytes = st.returned_bytes;
	b->reached_sent = st.target_pages == st.actual_pages;
	return 0;
}

static void failed(void *opaque, const char *why)
{
	struct balloon *b = opaque;

	b->info.failed = true;
	if (b->ev && b->ev->failed)
		b->ev->failed(b->opaque, why);
}

/* A frontend sent its memory table: a (re)connected driver is starting,
 * so an earlier failure no longer describes the device. */
static void mem_table_set(void *opaque)
{
	struct balloon *b = opaque;

	b->info.failed = false;
	keep_start(b);
	if (b->ev && b->ev->mem_table)
		b->ev->mem_table(b->opaque);
}

static const struct vu_dev_ops balloon_ops = {
	.type = "balloon",
	.features = (1ull << VIRTIO_BALLOON_F_MUST_TELL_HOST) | (1ull << VIRTIO_BALLOON_F_STATS_VQ) |
		    (1ull << VIRTIO_BALLOON_F_DEFLATE_ON_OOM) | (1ull << VIRTIO_BALLOON_F_REPORTING),
	.nqueues = 4,
	.config_len = sizeof(struct balloon_config),
	.get_config = get_config,
	.set_config = set_config,
	.features_set = features_set,
	.queue_kick = queue_kick,
	.disconnected = disconnected,
	.failed = failed,
	.mem_table_set = mem_table_set,
	.adopted = adopted,
};

int balloon_new(struct loop *loop, const char *sock_path, const char *name,
		bool reporting, const struct balloon_events *ev, void *opaque,
		struct balloon **out)
{
	struct balloon *b = calloc(1, sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	b->loop = loop;
	b->ev = ev;
	b->opaque = opaque;
	b->reached_sent = true;	/* target 0 == actual 0: nothing to say */
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->ops = balloon_ops;
	if (!reporting)
		b->ops.features &= ~(1ull << VIRTIO_BALLOON_F_REPORTING);
	rc = vu_dev_new(loop, sock_path, name, &b->ops, b, &b->vu);
	if (rc < 0)
		goto err_free;
	b->stats_interval_ms = 1000;
	rc = loop_timer_add(loop, b->stats_interval_ms, b->stats_interval_ms,
			    request_stats, b, &b->stats_timer);
	if (rc < 0)
		goto err_vu;
	*out = b;
	return 0;

err_vu:
	vu_dev_free(b->vu);
err_free:
	free(b);
	return rc;
}

void balloon_free(struct balloon *b)
{
	if (!b)
		return;
	loop_timer_del(b->stats_timer);
	loop_timer_del(b->keep_timer);
	vu_dev_free(b->vu);
	hugeblocks_free(b->hb);
	free(b);
}

int balloon_keep_blocks(struct balloon *b, uint64_t wait_ms)
{
	int rc;

	if (!wait_ms || b->keep_wait_ms)
		return wait_ms ? -EALREADY : -EINVAL;
	/* Expiry granularity: a block waits at most wait_ms plus a tick. */
	rc = loop_timer_add(b->loop, BALLOON_KEEP_TICK_MS, BALLOON_KEEP_TICK_MS,
			    on_keep_timer, b, &b->keep_timer);
	if (rc < 0)
		return rc;
	b->keep_wait_ms = wait_ms;
	b->info.keep_blocks = true;
	if (vu_dev_mem(b->vu)->nregions)
		keep_start(b);
	return 0;
}

void balloon_release_waiting(struct balloon *b)
{
	expire_blocks(b, true);
}

int balloon_set_target(struct balloon *b, uint32_t pages)
{
	b->info.target_pages = pages;
	b->reached_sent = false;
	save_state(b);
	if (!b->info.ready)
		return -ENOTCONN;
	check_reached(b);
	return vu_dev_config_changed(b->vu);
}

void balloon_get_info(const struct balloon *b, struct balloon_info *out)
{
	*out = b->info;
	if (b->hb)
		hugeblocks_get_info(b->hb, &out->blocks);
	out->connected = vu_dev_connected(b->vu);
	out->failed = b->info.failed;
}

int balloon_resident_bytes(const struct balloon *b, uint64_t *out)
{
	struct guestmem *gm = vu_dev_mem(b->vu);

	if (gm->nregions == 0)
		return -ENOTCONN;
	return guestmem_resident_bytes(gm, out);
}

void balloon_set_stats_interval(struct balloon *b, uint64_t ms)
{
	b->stats_interval_ms = ms;
	loop_timer_del(b->stats_timer);
	b->stats_timer = NULL;
	if (ms)
		loop_timer_add(b->loop, ms, ms, request_stats, b,
			       &b->stats_timer);
}

struct vu_dev *balloon_vu(struct balloon *b)
{
	return b->vu;
}
