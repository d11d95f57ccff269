/*
 * swapstore: see swapstore.h for the contract.  This comment is about how
 * a request is carried out.
 *
 * Map: 2 bits per page packed 32 pages to a uint64_t, so a discard of a
 * large never-used range skips a whole word with one compare (Linux
 * discards the entire device at swapon).  Only map_set() changes a page's
 * state, and it keeps the per-state page counters with it.
 *
 * Write, per page, in order (a request is cut into pages at 4 KiB
 * boundaries; at most the first and last are partial):
 *   1. Build the page's new content in the next free slot of run[]: a
 *      whole page is copied from the iovec; a partial one is loaded from
 *      wherever it is and the written bytes laid over it.
 *   2. All zero: drop it (flush from the pool / queue a punch), map NONE.
 *   3. Else tmem_put.  Success: map TMEM, and if it was FILE queue a punch.
 *   4. Put failed: the pool now holds nothing for the page (tmem's
 *      contract), so the content exists only in run[]; map LOST until step
 *      5 writes it.  The slot stays and the page joins the write run.
 *      After a refusal (-ENOSPC/-ENOMEM) the rest of the request skips
 *      step 3: the host is short now, and compressing pages only to have
 *      them refused costs ~8 us each.  A skipped page's old pool copy is
 *      flushed by hand, as a failed put would have.  The next request
 *      tries the pool again.
 *   5. The write run (pages contiguous on the device and in run[]) goes to
 *      the file in one pwrite when the next page is not its successor, when
 *      run[] is full, and at the end.  Written pages become FILE; pages a
 *      failed pwrite did not fully cover stay LOST.
 * The run and the punch queue are always flushed before a request returns,
 * error or not, so no state outlives a request except the map.
 *
 * Read, per page: NONE zero-fills, TMEM gets (straight into guest memory
 * when the whole page lies in one segment), FILE extends a read run that
 * one pread fetches into run[] and copies out.
 */
#include "swapstore.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iovcur.h"
#include "pio.h"
#include "log.h"

#define PG		TMEM_PAGE_SIZE
#define RUN_BYTES	(SWAPSTORE_RUN_PAGES * PG)
#define MAP_PAGES	32u	/* pages per map word */

enum page_state {
	PS_NONE = 0,	/* reads as zeros; must be 0: calloc'd map */
	PS_TMEM = 1,
	PS_FILE = 2,
	PS_LOST = 3,
};

/* Written by the device thread, read by anyone: relaxed atomics. */
struct swapstore_counters {
	_Atomic uint64_t tmem_pages;		/* map entries TMEM */
	_Atomic uint64_t file_pages;		/* map entries FILE */
	_Atomic uint64_t lost_pages;		/* map entries LOST */
	_Atomic uint64_t file_write_bytes;
	_Atomic uint64_t file_read_bytes;
	_Atomic uint64_t punched_bytes;
	_Atomic uint64_t refused_puts;
	_Atomic uint64_t put_errors;
	_Atomic uint64_t io_errors;
	_Atomic uint64_t zero_pages_written;
	_Atomic uint64_t backoff_pages;
};

struct swapstore {
	struct tmem_store *store;	/* not owned */
	uint32_t client_id;		/* tmem client, the caller's */
	uint32_t pool_id;		/* our private persistent pool */
	struct tmem_oid oid;		/* the one object holding every page */
	uint64_t npages;		/* capacity in pages */
	uint64_t *map;			/* 2 bits per page, MAP_PAGES per word */
	int fd;				/* backing file */
	char *path;			/* its name, unlinked on destroy */
	uint8_t *run;			/* RUN_BYTES: file runs, pages being built */
	bool backoff;			/* the pool refused a put in this request */
	uint8_t *page;			/* PG: bounce for split reads */
	uint64_t wrun_first;		/* first page of the write run */
	uint32_t wrun_n;		/* its pages, in run[0 .. wrun_n) */
	uint64_t punch_first;		/* first page of the punch queue */
	uint64_t punch_n;		/* its pages */
	/* File bytes [wb_lo, wb_hi) span every page ever written to the
	 * file (wb_hi == 0: none), so every page cache copy of its data. */
	uint64_t wb_lo, wb_hi;
	struct swapstore_counters c;		/* relaxed atomics */
};

static void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void ctr_sub(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_sub_explicit(c, n, memory_order_relaxed);
}

static uint64_t ctr_get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- map ---- */

static unsigned map_get(const struct swapstore *ss, uint64_t p)
{
	return (unsigned)(ss->map[p / MAP_PAGES] >> (p % MAP_PAGES * 2)) & 3u;
}

static _Atomic uint64_t *state_ctr(struct swapstore *ss, unsigned st)
{
	switch (st) {
	case PS_TMEM:
		return &ss->c.tmem_pages;
	case PS_FILE:
		return &ss->c.file_pages;
	case PS_LOST:
		return &ss->c.lost_pages;
	default:
		return NULL;
	}
}

/* The only place a page changes state. */
static void map_set(struct swapstore *ss, uint64_t p, unsigned st)
{
	unsigned old = map_get(ss, p), shift = p % MAP_PAGES * 2;
	uint64_t *w = &ss->map[p / MAP_PAGES];

	if (old == st)
		return;
	*w = (*w & ~(3ull << shift)) | ((uint64_t)st << shift);
	if (state_ctr(ss, old))
		ctr_sub(state_ctr(ss, old), 1);
	if (state_ctr(ss, st))
		ctr_add(state_ctr(ss, st), 1);
}

/* ---- backing file ---- */

/* Deallocate pages [first, first + n) of the file.  Failure is counted, not
 * returned: the map already says nothing is there, so what a failed punch
 * leaves is never read (only the disk space is not returned). */
static void punch(struct swapstore *ss, uint64_t first, uint64_t n)
{
	if (!n)
		return;
	if (fallocate(ss->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(first * PG), (off_t)(n * PG)) == 0)
		ctr_add(&ss->c.punched_bytes, n * PG);
	else
		ctr_add(&ss->c.io_errors, 1);
}

static void punch_flush(struct swapstore *ss)
{
	punch(ss, ss->punch_first, ss->punch_n);
	ss->punch_n = 0;
}

static void punch_queue(struct swapstore *ss, uint64_t p)
{
	if (ss->punch_n && ss->punch_first + ss->punch_n == p) {
		ss->punch_n++;
		return;
	}
	punch_flush(ss);
	ss->punch_first = p;
	ss->punch_n = 1;
}

/* ---- the backing file ---- */

/* Move file bytes [off, off + len) to (@write) or from @buf, counted.
 *
 * Then let the host page cache's copies go: a page is kept by the guest
 * (read back) or by the file (written), so a third copy in host memory,
 * which no pool charges, only takes room from a host that is already
 * short (why the page is here and not in tmem).  POSIX_FADV_DONTNEED
 * drops clean pages at once and starts writeback of dirty ones without
 * waiting.  It is given the whole span ever written, not just this I/O:
 * the kernel drops only folios wholly inside the range, and the host's
 * large folios outgrow a run; pages this write dirtied go out to disk
 * and a later I/O drops them.  Advice only: its failure changes nothing.
 * The cost is that a page written and soon punched may reach the disk
 * where the kernel would have let it expire. */
static int file_io(struct swapstore *ss, bool write, uint8_t *buf,
		   size_t len, uint64_t off, size_t *done)
{
	int rc;

	rc = pio_full(write, ss->fd, buf, len, off, done);
	ctr_add(write ? &ss->c.file_write_bytes : &ss->c.file_read_bytes,
		*done);
	if (rc)
		ctr_add(&ss->c.io_errors, 1);
	if (write && *done) {
		if (ss->wb_hi == 0 || off < ss->wb_lo)
			ss->wb_lo = off;
		if (off + *done > ss->wb_hi)
			ss->wb_hi = off + *done;
	}
	if (ss->wb_hi)
		(void)posix_fadvise(ss->fd, (off_t)ss->wb_lo,
				    (off_t)(ss->wb_hi - ss->wb_lo),
				    POSIX_FADV_DONTNEED);
	return rc;
}

/* Step 5 of the write: the write run to the file. */
static int wrun_flush(struct swapstore *ss)
{
	size_t done;
	uint32_t i;
	int rc;

	if (!ss->wrun_n)
		return 0;
	rc = file_io(ss, true, ss->run, (size_t)ss->wrun_n * PG,
		     ss->wrun_first * PG, &done);
	for (i = 0; i < ss->wrun_n && (i + 1u) * (size_t)PG <= done; i++)
		map_set(ss, ss->wrun_first + i, PS_FILE);
	ss->wrun_n = 0;
	return rc;
}

/* ---- pages ---- */

static bool page_is_zero(const uint8_t *p)
{
	return p[0] == 0 && memcmp(p, p + 1, PG - 1) == 0;
}

static int page_get(struct swapstore *ss, uint64_t p, uint8_t *buf)
{
	int rc = tmem_get(ss->store, ss->client_id, ss->pool_id, &ss->oid,
			  (uint32_t)p, buf, PG);

	if (rc) {
		/* Persistent pages are never dropped: the store or the
		 * caller (client destroyed under us) broke the contract. */
		log_err(NULL, "swapstore %s: page %llu missing from tmem (%d)",
			ss->path, (unsigned long long)p, rc);
		return -EIO;
	}
	return 0;
}

/* Current content of page @p into @buf. */
static int page_load(struct swapstore *ss, uint64_t p, uint8_t *buf)
{
	size_t done;

	switch (map_get(ss, p)) {
	case PS_NONE:
		memset(buf, 0, PG);
		return 0;
	case PS_TMEM:
		return page_get(ss, p, buf);
	case PS_FILE:
		return file_io(ss, false, buf, PG, p * PG, &done);
	default:
		return -EIO;
	}
}

/* Make page @p NONE.  A file copy is punched through the queue if
 * @queue_punch, else the caller punches the range itself. */
static void page_drop(struct swapstore *ss, uint64_t p, bool queue_punch)
{
	switch (map_get(ss, p)) {
	case PS_TMEM:
		/* Only -ENOENT could come back here, and the map says the
		 * page is there; either way it is gone afterwards. */
		(void)tmem_flush_page(ss->store, ss->client_id, ss->pool_id,
				      &ss->oid, (uint32_t)p);
		break;
	case PS_FILE:
		if (queue_punch)
			punch_queue(ss, p);
		break;
	default:
		break;
	}
	map_set(ss, p, PS_NONE);
}

/* Steps 2-4: store @buf as page @p.  true: it must go to the file (map
 * LOST until wrun_flush writes it). */
static bool page_store(struct swapstore *ss, uint64_t p, const uint8_t *buf)
{
	unsigned old = map_get(ss, p);
	int rc;

	if (page_is_zero(buf)) {
		ctr_add(&ss->c.zero_pages_written, 1);
		page_drop(ss, p, true);
		return false;
	}
	if (ss->backoff) {
		if (old == PS_TMEM)
			(void)tmem_flush_page(ss->store, ss->client_id,
					      ss->pool_id, &ss->oid, (uint32_t)p);
		ctr_add(&ss->c.backoff_pages, 1);
		map_set(ss, p, PS_LOST);
		return true;
	}
	rc = tmem_put(ss->store, ss->client_id, ss->pool_id, &ss->oid,
		      (uint32_t)p, buf, PG);
	if (rc == 0) {
		if (old == PS_FILE)
			punch_queue(ss, p);
		map_set(ss, p, PS_TMEM);
		return false;
	}
	if (rc == -ENOSPC || rc == -ENOMEM) {
		ctr_add(&ss->c.refused_puts, 1);
		ss->backoff = true;
	} else {
		ctr_add(&ss->c.put_errors, 1);
	}
	map_set(ss, p, PS_LOST);
	return true;
}

/* Store device bytes [pos, end) from request offset pos - @req_off of @c,
 * or zeros if @c is NULL.  Stops at the first error, but always writes
 * out the pages already built (their tmem copies are gone). */
static int store_range(struct swapstore *ss, uint64_t pos, uint64_t end,
		       struct iovcur *c, uint64_t req_off)
{
	int rc = 0, rc2;

	ss->backoff = false;	/* a new request tries the pool again */
	while (pos < end) {
		uint64_t p = pos / PG, pstart = p * PG;
		size_t in = (size_t)(pos - pstart);
		size_t n = (size_t)((end < pstart + PG ? end : pstart + PG) - pos);
		uint8_t *slot;

		if (ss->wrun_n && ss->wrun_first + ss->wrun_n != p) {
			rc = wrun_flush(ss);
			if (rc)
				break;
		}
		/* 1. */
		slot = ss->run + (size_t)ss->wrun_n * PG;
		if (n < PG) {
			rc = page_load(ss, p, slot);
			if (rc)
				break;
		}
		if (c)
			iovcur_get(c, pos - req_off, slot + in, n);
		else
			memset(slot + in, 0, n);
		/* 2.-4. */
		if (page_store(ss, p, slot)) {
			if (!ss->wrun_n)
				ss->wrun_first = p;
			if (++ss->wrun_n == SWAPSTORE_RUN_PAGES) {
				rc = wrun_flush(ss);
				if (rc)
					break;
			}
		}
		pos += n;
	}
	rc2 = wrun_flush(ss);
	punch_flush(ss);
	return rc ? rc : rc2;
}

/* Make whole pages [first, end) NONE, with one punch for the lot. */
static void drop_pages(struct swapstore *ss, uint64_t first, uint64_t end)
{
	bool in_file = false;
	uint64_t p = first;

	while (p < end) {
		if (p % MAP_PAGES == 0 && end - p >= MAP_PAGES &&
		    ss->map[p / MAP_PAGES] == 0) {
			p += MAP_PAGES;
			continue;
		}
		if (map_get(ss, p) == PS_FILE)
			in_file = true;
		page_drop(ss, p, false);
		p++;
	}
	if (in_file)
		punch(ss, first, end - first);
}

/* ---- blkback ops ---- */

static bool in_range(const struct swapstore *ss, uint64_t off, uint64_t len)
{
	uint64_t cap = ss->npages * PG;

	return off <= cap && len <= cap - off;
}

static int swapstore_read(void *be, uint64_t off, const struct iovec *iov,
		   unsigned iovcnt)
{
	struct swapstore *ss = be;
	uint64_t len = iovcur_total(iov, iovcnt), pos = off, end = off + len;
	uint64_t run_off = 0;
	size_t run_len = 0, done;
	struct iovcur c;
	int rc;

	if (!in_range(ss, off, len))
		return -EINVAL;
	iovcur_init(&c, iov, iovcnt);
	while (pos <= end) {
		uint64_t p = pos / PG, pstart = p * PG;
		size_t n = pos == end ? 0 :
			(size_t)((end < pstart + PG ? end : pstart + PG) - pos);
		unsigned st = n ? map_get(ss, p) : PS_NONE;
		uint8_t *dst;

		/* The read run ends before a page that does not extend it,
		 * when run[] could not take another page, and at the end. */
		if (run_len && (st != PS_FILE || run_len + n > RUN_BYTES)) {
			rc = file_io(ss, false, ss->run, run_len, run_off,
				     &done);
			if (rc)
				return rc;
			iovcur_put(&c, run_off - off, ss->run, run_len);
			run_len = 0;
		}
		if (!n)
			break;
		switch (st) {
		case PS_NONE:
			iovcur_put(&c, pos - off, NULL, n);
			break;
		case PS_TMEM:
			dst = n == PG ? iovcur_contig(&c, pos - off, PG) : NULL;
			if (dst)
				rc = page_get(ss, p, dst);
			else
				rc = page_get(ss, p, ss->page);
			if (rc)
				return rc;
			if (!dst)
				iovcur_put(&c, pos - off, ss->page + (pos - pstart), n);
			break;
		case PS_FILE:
			if (!run_len)
				run_off = pos;
			run_len += n;
			break;
		default:
			return -EIO;
		}
		pos += n;
	}
	return 0;
}

static int swapstore_write(void *be, uint64_t off, const struct iovec *iov,
		    unsigned iovcnt)
{
	struct swapstore *ss = be;
	uint64_t len = iovcur_total(iov, iovcnt);
	struct iovcur c;

	if (!in_range(ss, off, len))
		return -EINVAL;
	iovcur_init(&c, iov, iovcnt);
	return store_range(ss, off, off + len, &c, off);
}

static int swapstore_discard(void *be, uint64_t off, uint64_t len)
{
	struct swapstore *ss = be;
	uint64_t first = (off + PG - 1) / PG, end = (off + len) / PG;

	if (!in_range(ss, off, len))
		return -EINVAL;
	/* Partial pages at the edges are left as they are: virtio lets a
	 * discarded range keep its old data. */
	if (first < end)
		drop_pages(ss, first, end);
	return 0;
}

static int swapstore_write_zeroes(void *be, uint64_t off, uint64_t len,
			   bool may_unmap)
{
	struct swapstore *ss = be;
	uint64_t first = (off + PG - 1) / PG, end = (off + len) / PG;
	int rc = 0;

	if (!in_range(ss, off, len))
		return -EINVAL;
	/* NONE reads as zeros whatever may_unmap says, and is the cheapest
	 * way to hold zeros, so whole pages are always deallocated. */
	(void)may_unmap;
	if (first > end)	/* inside one page */
		return store_range(ss, off, off + len, NULL, 0);
	if (first < end)
		drop_pages(ss, first, end);
	if (off < first * PG)
		rc = store_range(ss, off, first * PG, NULL, 0);
	if (!rc && end * PG < off + len)
		rc = store_range(ss, end * PG, off + len, NULL, 0);
	return rc;
}

static void swapstore_destroy(void *be)
{
	struct swapstore *ss = be;

	if (!ss)
		return;
	/* -ESRCH if the caller destroyed the client first: the pool went
	 * with it. */
	(void)tmem_pool_destroy(ss->store, ss->client_id, ss->pool_id);
	close(ss->fd);
	if (unlink(ss->path))
		log_warn(NULL, "swapstore: unlink %s: %s", ss->path,
			 strerror(errno));
	free(ss->path);
	free(ss->page);
	free(ss->run);
	free(ss->map);
	free(ss);
}

static const struct blkback_ops swapstore_ops = {
	.read = swapstore_read,
	.write = swapstore_write,
	.flush = NULL,
	.discard = swapstore_discard,
	.write_zeroes = swapstore_write_zeroes,
	.destroy = swapstore_destroy,
};

/* ---- public ---- */

int swapstore_new(struct tmem_store *s, uint32_t client_id,
		  uint64_t capacity_bytes, const char *backing_path,
		  struct blkback *out)
{
	struct swapstore *ss;
	uint64_t words;
	int rc;

	if (!s || !backing_path || !out || !capacity_bytes ||
	    capacity_bytes % PG || capacity_bytes > SWAPSTORE_MAX_BYTES)
		return -EINVAL;
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	ss->store = s;
	ss->client_id = client_id;
	ss->oid.w[0] = SWAPSTORE_OID_W0;
	ss->npages = capacity_bytes / PG;
	ss->fd = -1;
	words = (ss->npages + MAP_PAGES - 1) / MAP_PAGES;
	ss->map = calloc((size_t)words, sizeof(*ss->map));
	ss->run = aligned_alloc(PG, RUN_BYTES);
	ss->page = aligned_alloc(PG, PG);
	ss->path = strdup(backing_path);
	if (!ss->map || !ss->run || !ss->page || !ss->path) {
		rc = -ENOMEM;
		goto err_alloc;
	}

	rc = tmem_pool_new(s, client_id, TMEM_POOL_PERSISTENT, NULL,
			   &ss->pool_id);
	if (rc)
		goto err_alloc;

	ss->fd = open(backing_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
		      0600);
	if (ss->fd < 0) {
		rc = -errno;
		goto err_pool;
	}
	if (ftruncate(ss->fd, (off_t)capacity_bytes)) {
		rc = -errno;
		goto err_file;
	}

	memset(out, 0, sizeof(*out));
	out->ops = &swapstore_ops;
	out->be = ss;
	out->capacity_bytes = capacity_bytes;
	out->read_only = false;
	strcpy(out->serial, SWAPSTORE_SERIAL);
	return 0;

err_file:
	close(ss->fd);
	unlink(backing_path);
err_pool:
	tmem_pool_destroy(s, client_id, ss->pool_id);
err_alloc:
	free(ss->path);
	free(ss->page);
	free(ss->run);
	free(ss->map);
	free(ss);
	return rc;
}

struct swapstore *swapstore_from(const struct blkback *bb)
{
	return bb && bb->ops == &swapstore_ops ? bb->be : NULL;
}

int swapstore_stats(const struct swapstore *ss, struct swapstore_stats *out)
{
	if (!ss || !out)
		return -EINVAL;
	out->capacity_pages = ss->npages;
	out->tmem_pages = ctr_get(&ss->c.tmem_pages);
	out->file_pages = ctr_get(&ss->c.file_pages);
	out->lost_pages = ctr_get(&ss->c.lost_pages);
	out->file_write_bytes = ctr_get(&ss->c.file_write_bytes);
	out->file_read_bytes = ctr_get(&ss->c.file_read_bytes);
	out->punched_bytes = ctr_get(&ss->c.punched_bytes);
	out->refused_puts = ctr_get(&ss->c.refused_puts);
	out->put_errors = ctr_get(&ss->c.put_errors);
	out->io_errors = ctr_get(&ss->c.io_errors);
	out->zero_pages_written = ctr_get(&ss->c.zero_pages_written);
	out->backoff_pages = ctr_get(&ss->c.backoff_pages);
	return 0;
}
