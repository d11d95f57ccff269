/*
 * hugeblocks: keeping a guest's RAM file in whole 2 MiB blocks while the
 * guest gives memory back (ebbd --ram-hugepages).
 *
 * On a huge=always tmpfs every 2 MiB-aligned block of the RAM file is one
 * host huge page.  Punching 4 KiB out of it splits that page for good
 * (refaults come back as 4 KiB pages), so the host TLB cost of the whole
 * block rises to save 4 KiB.  This module decides when to punch:
 *
 *   1. A freed range that covers whole blocks: those blocks are punched at
 *      once, whole.
 *   2. The 4 KiB pages left over (a block only partly covered) are recorded
 *      in the block's bitmap of freed-but-not-punched pages.  The block is
 *      punched whole once every one of its 512 pages is in the bitmap.
 *   3. If the block already has a hole (it is 4 KiB pages anyway), its
 *      pending pages are punched at once: nothing left to keep whole.
 *   4. A block that has waited wait_ms with pages pending has them punched
 *      (hugeblocks_expire): memory wins over the block.  The host may also
 *      ask for everything pending at once when it is short of memory.
 *
 * Only pages the host owns may wait: balloon pages, which are the host's
 * from inflate until deflate (the driver negotiates MUST_TELL_HOST, so a
 * deflated page leaves the bitmap, hugeblocks_reuse, before the guest
 * touches it again).  A reported free range is the guest's again as soon
 * as its buffer goes back, so it cannot wait: hugeblocks_report punches
 * its leftovers at once unless they complete a block with pages pending.
 *
 * Cost: pending pages are guest memory the host has not got back yet.
 * There are at most the balloon's pages in partly covered blocks (never
 * more than 511 per block), each for at most wait_ms; pending_bytes in
 * hugeblocks_info shows it.
 *
 * Offsets are RAM-file offsets (host huge pages align to the file, not to
 * guest-physical addresses); every range is checked against the file size.
 *
 * Threading: none of its own; the owner's thread (ebbd: the loop thread).
 */
#ifndef EBB_HUGEBLOCKS_H
#define EBB_HUGEBLOCKS_H

#include <stdbool.h>
#include <stdint.h>

#define HUGEBLOCK_BYTES	(2ull << 20)	/* one x86-64 PMD page */
#define HUGEBLOCK_PAGE	4096ull		/* the balloon's unit */
#define HUGEBLOCK_PAGES	(HUGEBLOCK_BYTES / HUGEBLOCK_PAGE)	/* 512 */

/* How the module reaches the RAM file.  Both are required. */
struct hugeblocks_ops {
	/* Give [off, off+len) back to the host (punch a hole).  0 or -errno. */
	int (*punch)(void *opaque, uint64_t off, uint64_t len);
	/* Does the block starting at @off have a hole (or an error)?  Such a
	 * block is no host huge page any more. */
	bool (*has_hole)(void *opaque, uint64_t off);
};

struct hugeblocks_info {
	uint64_t pending_bytes;		/* freed, waiting for their block */
	uint64_t pending_blocks;	/* blocks with pages waiting */
	uint64_t whole_blocks;		/* cumulative: blocks punched whole */
	uint64_t completed_blocks;	/* of those, completed by waiting pages */
	uint64_t holey_bytes;		/* cumulative: punched at once, the
					 * block already had a hole */
	uint64_t report_split_bytes;	/* cumulative: reported leftovers
					 * punched at once (could not wait) */
	uint64_t expired_bytes;		/* cumulative: punched after waiting
					 * wait_ms or on host pressure */
	uint64_t punched_bytes;		/* cumulative: every byte punched */
	uint64_t failed_punches;	/* punch calls that returned an error */
};

struct hugeblocks;

/*
 * Account a RAM file of @file_bytes (pages past the last whole block are
 * punched at once, they are no huge page).  @wait_ms: how long a partly
 * freed block may wait.  Returns 0 or -errno.
 */
int hugeblocks_new(uint64_t file_bytes, uint64_t wait_ms,
		   const struct hugeblocks_ops *ops, void *opaque,
		   struct hugeblocks **out);
void hugeblocks_free(struct hugeblocks *hb);

/*
 * The guest gave [off, off+len) to the host until it takes it back with
 * hugeblocks_reuse (balloon inflate).  Whole blocks are punched now, the
 * rest waits (steps 1-3).  @now_ms starts a block's wait.  -EINVAL for a
 * range that is not whole pages inside the file; else 0 (a failed punch
 * is counted, not returned: the memory just stays).
 */
int hugeblocks_give(struct hugeblocks *hb, uint64_t off, uint64_t len,
		    uint64_t now_ms);
/*
 * [off, off+len) is free only until this call returns (free page
 * reporting).  Whole blocks, and leftovers that complete a block with
 * pages pending, are punched whole; other leftovers are punched at once.
 * Same returns as hugeblocks_give.
 */
int hugeblocks_report(struct hugeblocks *hb, uint64_t off, uint64_t len);
/* The guest takes [off, off+len) back (deflate): it leaves the bitmap.
 * Out-of-file parts are ignored (the caller has checked the range). */
void hugeblocks_reuse(struct hugeblocks *hb, uint64_t off, uint64_t len);
/*
 * Punch the pending pages of every block that has waited wait_ms by
 * @now_ms, or of every block if @all.  Adds what it punched to *@bytes
 * (may be NULL).  Bounded by the number of blocks.
 */
void hugeblocks_expire(struct hugeblocks *hb, uint64_t now_ms, bool all,
		       uint64_t *bytes);
/* Forget every pending page without punching (the guest reset: its
 * balloon is empty, every page is the guest's again). */
void hugeblocks_forget(struct hugeblocks *hb);
void hugeblocks_get_info(const struct hugeblocks *hb,
			 struct hugeblocks_info *out);

/*
 * Classify the 2 MiB blocks of [0, @file_bytes) of @fd by allocation
 * (SEEK_DATA/SEEK_HOLE, so work is per extent, not per block): @intact
 * fully allocated, @partial partly allocated (shattered).  A trailing
 * part-block counts as a block.  0 or -errno.
 */
int hugeblocks_scan_file(int fd, uint64_t file_bytes, uint64_t *intact,
			 uint64_t *partial);

#endif
