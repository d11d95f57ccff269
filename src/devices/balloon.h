/*
 * balloon: a virtio-balloon device (virtio 1.x, section 5.5) served over
 * vhost-user.
 *
 * Owns one vu_dev and everything the balloon protocol carries: the target
 * the host set (num_pages), the size the guest reports (actual), the
 * latest memory statistics, and counters of memory given back.
 *
 * Offered features: VERSION_1, MUST_TELL_HOST, STATS_VQ, DEFLATE_ON_OOM,
 * REPORTING.  Queues, in the order the driver creates them when it accepts
 * all of these: 0 inflate, 1 deflate, 2 stats, 3 reporting (the reporting
 * queue is 2 when the driver declines STATS_VQ).
 *
 * Memory goes back to the host by punching holes in the guest's RAM file:
 * inflated pages as soon as the guest hands them over (contiguous pfns are
 * punched as one range), reported free blocks (2 MiB with
 * page_reporting_order=9) before the buffer is returned.  With
 * balloon_keep_blocks() (huge-page backing) 4 KiB inflate leftovers wait
 * until their 2 MiB block is entirely free, or for a bounded time.  Deflated pages
 * need nothing: the guest's next touch faults in a fresh zero page.
 *
 * Hostile input: a pfn outside guest memory, a pfn buffer whose length is
 * not a multiple of 4, a readable buffer on the reporting queue, a stats
 * buffer whose length is not a multiple of 10 or that is writable: each
 * fails the device (vu_dev_fail) and nothing else.  Unknown stats tags are
 * ignored, as the spec asks.
 *
 * Threading: loop thread only.
 */
#ifndef EBB_BALLOON_H
#define EBB_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

#include "hugeblocks.h"
#include "loop.h"

#include <linux/virtio_balloon.h>

#define BALLOON_PAGE_SIZE 4096u	/* the balloon's unit, whatever the guest's */
#define BALLOON_KEEP_TICK_MS 500u	/* how often waiting blocks expire */

/* Statistics tags (virtio 5.5.6.3) are <linux/virtio_balloon.h>'s
 * VIRTIO_BALLOON_S_*; tags at or past VIRTIO_VIRTIO_BALLOON_S_NR are ignored. */

struct balloon_info {
	bool connected;		/* a frontend is attached */
	bool ready;		/* the driver set up its queues */
	bool failed;		/* device failed on hostile input */
	uint32_t target_pages;	/* pages we asked the guest to give up */
	uint32_t actual_pages;	/* pages the guest says it gave up */
	uint64_t inflated_pages;	/* cumulative pages inflated */
	uint64_t deflated_pages;	/* cumulative pages deflated */
	uint64_t oom_deflated_pages;	/* deflated without being asked */
	uint64_t reported_bytes;	/* cumulative free-page reports */
	uint64_t returned_bytes;	/* cumulative bytes punched out */
	uint64_t stats[VIRTIO_BALLOON_S_NR];	/* latest values (bytes or counts) */
	uint32_t stats_valid;	/* bit per tag present in the last report */
	uint64_t stats_ms;	/* loop_now_ms() of the last report, 0 none */
	bool keep_blocks;	/* balloon_keep_blocks() is on */
	struct hugeblocks_info blocks;	/* its counters (this table's), zero
					 * while off or before a table */
};

struct balloon_events {
	/* actual_pages became equal to target_pages. */
	void (*target_reached)(void *opaque, uint32_t actual_pages);
	/* Memory was given back (inflate or report): re-measure residency. */
	void (*returned)(void *opaque, uint64_t bytes);
	/* The device failed on hostile input. */
	void (*failed)(void *opaque, const char *why);
	/* The frontend sent its memory table (the guest's RAM file is known:
	 * vu_dev_mem(balloon_vu())).  May call vu_dev_hold() to keep the
	 * guest waiting. */
	void (*mem_table)(void *opaque);
};

struct balloon;

/*
 * Listen on @sock_path; @name tags log lines; @ev may have NULL members.
 * @reporting false leaves REPORTING out of the offered features (for
 * comparisons: the guest then keeps its free pages).
 */
int balloon_new(struct loop *loop, const char *sock_path, const char *name,
		bool reporting, const struct balloon_events *ev, void *opaque,
		struct balloon **out);
void balloon_free(struct balloon *b);

/*
 * Ask the guest to hold @pages pages in its balloon.  Returns 0, or
 * -ENOTCONN if no driver is attached yet (the target still applies when
 * it attaches).
 */
int balloon_set_target(struct balloon *b, uint32_t pages);
void balloon_get_info(const struct balloon *b, struct balloon_info *out);
/* Host-resident bytes of this guest's RAM, -ENOTCONN before the memory
 * table arrives. */
int balloon_resident_bytes(const struct balloon *b, uint64_t *out);
/*
 * Keep the RAM file's 2 MiB blocks whole (huge-page backing): punch freed
 * ranges in whole blocks and let 4 KiB leftovers wait for their block up
 * to @wait_ms (hugeblocks.h has the rules).  Call once, before or after
 * the memory table arrives.  0 or -errno.
 */
int balloon_keep_blocks(struct balloon *b, uint64_t wait_ms);
/* The host is short of memory: punch every waiting page now, shattering
 * their blocks. */
void balloon_release_waiting(struct balloon *b);
/* How often to ask the guest for fresh statistics; 0 stops asking. */
void balloon_set_stats_interval(struct balloon *b, uint64_t ms);

struct vu_dev;
struct vu_dev *balloon_vu(struct balloon *b);

#endif
