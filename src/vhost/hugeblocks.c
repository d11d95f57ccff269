/*
 * hugeblocks: per-2 MiB-block accounting of freed guest pages, so the RAM
 * file is punched in whole host huge pages (the rules, their numbers 1-4
 * and the safety argument are in hugeblocks.h).
 */
#include "hugeblocks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORDS	(HUGEBLOCK_PAGES / 64)

struct block {
	uint64_t bits[WORDS];	/* page i freed and not punched */
	uint64_t since_ms;	/* when the first pending page came */
	uint32_t count;		/* bits set */
};

struct hugeblocks {
	const struct hugeblocks_ops *ops;
	void *opaque;
	uint64_t file_bytes;	/* accounted file size */
	uint64_t nblocks;	/* whole blocks in the file */
	uint64_t wait_ms;	/* longest wait of a partly freed block */
	struct hugeblocks_info info;	/* counters; pending_* kept live */
	struct block *b;	/* nblocks entries */
};

int hugeblocks_new(uint64_t file_bytes, uint64_t wait_ms,
		   const struct hugeblocks_ops *ops, void *opaque,
		   struct hugeblocks **out)
{
	struct hugeblocks *hb;

	if (!ops || !ops->punch || !ops->has_hole)
		return -EINVAL;
	hb = calloc(1, sizeof(*hb));
	if (!hb)
		return -ENOMEM;
	hb->ops = ops;
	hb->opaque = opaque;
	hb->file_bytes = file_bytes;
	hb->nblocks = file_bytes / HUGEBLOCK_BYTES;
	hb->wait_ms = wait_ms;
	if (hb->nblocks) {
		hb->b = calloc(hb->nblocks, sizeof(*hb->b));
		if (!hb->b) {
			free(hb);
			return -ENOMEM;
		}
	}
	*out = hb;
	return 0;
}

void hugeblocks_free(struct hugeblocks *hb)
{
	if (!hb)
		return;
	free(hb->b);
	free(hb);
}

static bool range_ok(const struct hugeblocks *hb, uint64_t off, uint64_t len)
{
	return len && off % HUGEBLOCK_PAGE == 0 && len % HUGEBLOCK_PAGE == 0 &&
	       off + len > off && off + len <= hb->file_bytes;
}

static void do_punch(struct hugeblocks *hb, uint64_t off, uint64_t len,
		     uint64_t *counter)
{
	if (hb->ops->punch(hb->opaque, off, len) < 0) {
		hb->info.failed_punches++;
		return;
	}
	hb->info.punched_bytes += len;
	if (counter)
		*counter += len;
}

/* Set (or clear) pages [first, first+n) of @blk; returns how many bits
 * changed.  Word by word: a whole freed run is a few masks, not n bits. */
static uint32_t change_bits(struct block *blk, uint64_t first, uint64_t n,
			    bool set)
{
	uint32_t changed = 0;

	while (n) {
		uint64_t w = first / 64, bit = first % 64;
		uint64_t take = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = (take == 64 ? ~0ull : ((1ull << take) - 1)) << bit;
		uint64_t old = blk->bits[w];

		blk->bits[w] = set ? old | mask : old & ~mask;
		changed += (uint32_t)__builtin_popcountll((old ^ blk->bits[w]));
		first += take;
		n -= take;
	}
	if (set)
		blk->count += changed;
	else
		blk->count -= changed;
	if (blk->count == 0)
		blk->since_ms = 0;
	return changed;
}

static uint64_t pending_in(const struct block *blk, uint64_t first, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t p = first; p < first + n; p++)
		c += (blk->bits[p / 64] >> (p % 64)) & 1;
	return c;
}

static void block_clear(struct hugeblocks *hb, struct block *blk)
{
	if (blk->count) {
		hb->info.pending_bytes -= blk->count * HUGEBLOCK_PAGE;
		hb->info.pending_blocks--;
	}
	memset(blk, 0, sizeof(*blk));
}

/* Rule 1/2: the whole block goes, pending pages with it. */
static void punch_whole(struct hugeblocks *hb, uint64_t bi, bool completed)
{
	block_clear(hb, &hb->b[bi]);
	do_punch(hb, bi * HUGEBLOCK_BYTES, HUGEBLOCK_BYTES, NULL);
	hb->info.whole_blocks++;
	if (completed)
		hb->info.completed_blocks++;
}

/* Rules 3/4: punch the pending pages of block @bi as runs. */
static void punch_pending(struct hugeblocks *hb, uint64_t bi, uint64_t *counter)
{
	struct block *blk = &hb->b[bi];
	uint64_t base = bi * HUGEBLOCK_BYTES;
	uint64_t p = 0;

	while (p < HUGEBLOCK_PAGES) {
		uint64_t start;

		if (!((blk->bits[p / 64] >> (p % 64)) & 1)) {
			p++;
			continue;
		}
		start = p;
		while (p < HUGEBLOCK_PAGES && ((blk->bits[p / 64] >> (p % 64)) & 1))
			p++;
		do_punch(hb, base + start * HUGEBLOCK_PAGE,
			 (p - start) * HUGEBLOCK_PAGE, counter);
	}
	block_clear(hb, blk);
}

/* Add pages to block @bi's bitmap, keeping the live totals. */
static void add_pending(struct hugeblocks *hb, uint64_t bi, uint64_t first,
			uint64_t n, uint64_t now_ms)
{
	struct block *blk = &hb->b[bi];
	bool was_empty = blk->count == 0;
	uint32_t added = change_bits(blk, first, n, true);

	hb->info.pending_bytes += added * HUGEBLOCK_PAGE;
	if (was_empty && added) {
		hb->info.pending_blocks++;
		/* 0 means "nothing waits": a start at 0 would never expire. */
		blk->since_ms = now_ms ? now_ms : 1;
	}
}

int hugeblocks_give(struct hugeblocks *hb, uint64_t off, uint64_t len,
		    uint64_t now_ms)
{
	if (!range_ok(hb, off, len))
		return -EINVAL;
	while (len) {
		uint64_t bi = off / HUGEBLOCK_BYTES;
		uint64_t boff = off % HUGEBLOCK_BYTES;
		uint64_t n = HUGEBLOCK_BYTES - boff < len ? HUGEBLOCK_BYTES - boff : len;

		if (bi >= hb->nblocks) {
			do_punch(hb, off, len, NULL);	/* tail: no huge page */
			return 0;
		}
		if (n == HUGEBLOCK_BYTES) {
			punch_whole(hb, bi, false);
		} else {
			add_pending(hb, bi, boff / HUGEBLOCK_PAGE,
				    n / HUGEBLOCK_PAGE, now_ms);
			if (hb->b[bi].count == HUGEBLOCK_PAGES)
				punch_whole(hb, bi, true);
			else if (hb->ops->has_hole(hb->opaque, bi * HUGEBLOCK_BYTES))
				punch_pending(hb, bi, &hb->info.holey_bytes);
		}
		off += n;
		len -= n;
	}
	return 0;
}

int hugeblocks_report(struct hugeblocks *hb, uint64_t off, uint64_t len)
{
	if (!range_ok(hb, off, len))
		return -EINVAL;
	while (len) {
		uint64_t bi = off / HUGEBLOCK_BYTES;
		uint64_t boff = off % HUGEBLOCK_BYTES;
		uint64_t n = HUGEBLOCK_BYTES - boff < len ? HUGEBLOCK_BYTES - boff : len;

		if (bi >= hb->nblocks) {
			do_punch(hb, off, len, NULL);
			return 0;
		}
		if (n == HUGEBLOCK_BYTES) {
			punch_whole(hb, bi, false);
		} else {
			const struct block *blk = &hb->b[bi];
			uint64_t pages = n / HUGEBLOCK_PAGE;
			uint64_t fresh = pages - pending_in(blk, boff / HUGEBLOCK_PAGE, pages);

			/* Balloon pages plus this report make the whole block
			 * free right now: it can go whole. */
			if (blk->count + fresh == HUGEBLOCK_PAGES)
				punch_whole(hb, bi, true);
			else
				do_punch(hb, off, n, &hb->info.report_split_bytes);
		}
		off += n;
		len -= n;
	}
	return 0;
}

void hugeblocks_reuse(struct hugeblocks *hb, uint64_t off, uint64_t len)
{
	if (!len || off % HUGEBLOCK_PAGE || len % HUGEBLOCK_PAGE ||
	    off + len < off)
		return;
	while (len && off / HUGEBLOCK_BYTES < hb->nblocks) {
		uint64_t bi = off / HUGEBLOCK_BYTES;
		uint64_t boff = off % HUGEBLOCK_BYTES;
		uint64_t n = HUGEBLOCK_BYTES - boff < len ? HUGEBLOCK_BYTES - boff : len;
		struct block *blk = &hb->b[bi];

		if (blk->count) {
			uint32_t gone = change_bits(blk, boff / HUGEBLOCK_PAGE,
						    n / HUGEBLOCK_PAGE, false);

			hb->info.pending_bytes -= gone * HUGEBLOCK_PAGE;
			if (blk->count == 0)
				hb->info.pending_blocks--;
		}
		off += n;
		len -= n;
	}
}

void hugeblocks_expire(struct hugeblocks *hb, uint64_t now_ms, bool all,
		       uint64_t *bytes)
{
	uint64_t before = hb->info.expired_bytes;

	for (uint64_t bi = 0; bi < hb->nblocks && hb->info.pending_blocks; bi++) {
		const struct block *blk = &hb->b[bi];

		if (!blk->count)
			continue;
		if (all || now_ms - blk->since_ms >= hb->wait_ms)
			punch_pending(hb, bi, &hb->info.expired_bytes);
	}
	if (bytes)
		*bytes += hb->info.expired_bytes - before;
}

void hugeblocks_forget(struct hugeblocks *hb)
{
	for (uint64_t bi = 0; bi < hb->nblocks && hb->info.pending_blocks; bi++)
		if (hb->b[bi].count)
			block_clear(hb, &hb->b[bi]);
}

void hugeblocks_get_info(const struct hugeblocks *hb,
			 struct hugeblocks_info *out)
{
	*out = hb->info;
}

/* hugeblocks_scan_file's running classification: extents come sorted, so
 * only the block they are in the middle of needs a sum. */
struct scan {
	uint64_t cur;		/* block being summed, UINT64_MAX none */
	uint64_t bytes;		/* its allocated bytes so far */
	uint64_t file_bytes;
	uint64_t intact, partial;
};

static void scan_flush(struct scan *s)
{
	uint64_t start = s->cur * HUGEBLOCK_BYTES;
	uint64_t size = s->file_bytes - start < HUGEBLOCK_BYTES ?
			s->file_bytes - start : HUGEBLOCK_BYTES;

	if (s->cur == UINT64_MAX || !s->bytes)
		return;
	if (s->bytes >= size)
		s->intact++;
	else
		s->partial++;
	s->cur = UINT64_MAX;
	s->bytes = 0;
}

int hugeblocks_scan_file(int fd, uint64_t file_bytes, uint64_t *intact,
			 uint64_t *partial)
{
	struct scan s = { .cur = UINT64_MAX, .file_bytes = file_bytes };
	uint64_t pos = 0;

	while (pos < file_bytes) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		off_t hole;
		uint64_t a, b;

		if (data < 0) {
			if (errno == ENXIO)
				break;	/* no data past pos */
			return -errno;
		}
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		a = (uint64_t)data;
		b = (uint64_t)hole < file_bytes ? (uint64_t)hole : file_bytes;
		if (a >= b)
			break;
		while (a < b) {
			uint64_t bi = a / HUGEBLOCK_BYTES;
			uint64_t end = (bi + 1) * HUGEBLOCK_BYTES;

			if (bi != s.cur) {
				scan_flush(&s);
				s.cur = bi;
			}
			/* Whole blocks inside the extent: counted, not summed. */
			if (a == bi * HUGEBLOCK_BYTES && b >= end) {
				uint64_t k = (b - a) / HUGEBLOCK_BYTES;

				s.cur = UINT64_MAX;
				s.intact += k;
				a += k * HUGEBLOCK_BYTES;
				continue;
			}
			end = end < b ? end : b;
			s.bytes += end - a;
			a = end;
		}
		pos = b;
	}
	scan_flush(&s);
	*intact = s.intact;
	*partial = s.partial;
	return 0;
}
