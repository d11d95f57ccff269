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
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "iovcur.h"
#include "pio.h"
#include "log.h"

#define PG		TMEM_PAGE_SIZE
#define RUN_BYTES	(SWAPSTORE_RUN_PAGES * PG)
#define MAP_PAGES	32u	/* pages per map word */
#define MAP_HDR_BYTES	4096u	/* the map memfd's header page */
#define MAP_MAGIC	0x3150415753424245ull	/* "EBBSWAP1" */
#define MAP_VERSION	1u

/* Keeps the compiler from moving a store across a commit point (see
 * "Restart" in swapstore.h): the map and tmem are changed in an order
 * whose every prefix is a valid state. */
#define COMMIT()	atomic_signal_fence(memory_order_seq_cst)

/* The map memfd's first page.  Written once, at creation. */
struct map_hdr {
	uint64_t magic;			/* MAP_MAGIC, written last */
	uint32_t version;		/* MAP_VERSION */
	uint32_t page_bytes;		/* PG */
	uint64_t npages;		/* capacity in pages */
	uint32_t client_id;		/* tmem client */
	uint32_t pool_id;		/* its persistent pool */
	uint64_t oid_w0;		/* SWAPSTORE_OID_W0 */
	uint64_t check;			/* XXH3-64 of version .. oid_w0 */
};

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
	_Atomic uint64_t adopt_lost_pages;
	_Atomic uint64_t adopt_orphans;
};

struct swapstore {
	struct tmem_store *store;	/* not owned */
	uint32_t client_id;		/* tmem client, the caller's */
	uint32_t pool_id;		/* our private persistent pool */
	struct tmem_oid oid;		/* the one object holding every page */
	uint64_t npages;		/* capacity in pages */
	_Atomic uint64_t *map;		/* 2 bits per page, MAP_PAGES per word,
					 * in map_mem past the header */
	void *map_mem;			/* mapping of the map memfd */
	size_t map_bytes;		/* its length */
	int map_fd;			/* the map memfd */
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

static uint64_t map_word(const struct swapstore *ss, uint64_t w)
{
	return atomic_load_explicit(&ss->map[w], memory_order_relaxed);
}

static unsigned map_get(const struct swapstore *ss, uint64_t p)
{
	return (unsigned)(map_word(ss, p / MAP_PAGES) >> (p % MAP_PAGES * 2)) & 3u;
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

/* The only place a page changes state: one aligned 64-bit store, which a
 * SIGKILL cannot tear, between commit points. */
static void map_set(struct swapstore *ss, uint64_t p, unsigned st)
{
	unsigned old = map_get(ss, p), shift = p % MAP_PAGES * 2;
	_Atomic uint64_t *w = &ss->map[p / MAP_PAGES];
	uint64_t v = atomic_load_explicit(w, memory_order_relaxed);

	if (old == st)
		return;
	COMMIT();
	atomic_store_explicit(w, (v & ~(3ull << shift)) | ((uint64_t)st << shift),
			      memory_order_relaxed);
	COMMIT();
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
	unsigned old = map_get(ss, p);

	/* Map first: a crash between the two leaves a pool page the map
	 * does not name, which adoption flushes (the reverse would leave
	 * the map naming a page the pool lost). */
	map_set(ss, p, PS_NONE);
	switch (old) {
	case PS_TMEM:
		/* Only -ENOENT could come back here, and the map said the
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
		map_set(ss, p, PS_LOST);	/* before the flush: page_drop() */
		if (old == PS_TMEM)
			(void)tmem_flush_page(ss->store, ss->client_id,
					      ss->pool_id, &ss->oid, (uint32_t)p);
		ctr_add(&ss->c.backoff_pages, 1);
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
		    map_word(ss, p / MAP_PAGES) == 0) {
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

/* The process-local part of a swapstore. */
static void ss_free(struct swapstore *ss)
{
	if (ss->map_mem)
		munmap(ss->map_mem, ss->map_bytes);
	if (ss->map_fd >= 0)
		close(ss->map_fd);
	if (ss->fd >= 0)
		close(ss->fd);
	free(ss->path);
	free(ss->page);
	free(ss->run);
	free(ss);
}

static void swapstore_destroy(void *be)
{
	struct swapstore *ss = be;

	if (!ss)
		return;
	/* -ESRCH if the caller destroyed the client first: the pool went
	 * with it. */
	(void)tmem_pool_destroy(ss->store, ss->client_id, ss->pool_id);
	if (unlink(ss->path))
		log_warn(NULL, "swapstore: unlink %s: %s", ss->path,
			 strerror(errno));
	ss_free(ss);
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

static uint64_t map_hdr_check(const struct map_hdr *h)
{
	return XXH3_64bits(&h->version, offsetof(struct map_hdr, check) -
					 offsetof(struct map_hdr, version));
}

static size_t map_len(uint64_t npages)
{
	uint64_t words = (npages + MAP_PAGES - 1) / MAP_PAGES;

	return MAP_HDR_BYTES + (size_t)words * sizeof(uint64_t);
}

/* The process-local part, for @npages; map and files not yet there. */
static int ss_alloc(struct tmem_store *s, uint32_t client_id,
		    uint64_t npages, const char *path, struct swapstore **out)
{
	struct swapstore *ss = calloc(1, sizeof(*ss));

	if (!ss)
		return -ENOMEM;
	ss->store = s;
	ss->client_id = client_id;
	ss->oid.w[0] = SWAPSTORE_OID_W0;
	ss->npages = npages;
	ss->fd = -1;
	ss->map_fd = -1;
	ss->map_bytes = map_len(npages);
	ss->run = aligned_alloc(PG, RUN_BYTES);
	ss->page = aligned_alloc(PG, PG);
	ss->path = strdup(path);
	if (!ss->run || !ss->page || !ss->path) {
		ss_free(ss);
		return -ENOMEM;
	}
	*out = ss;
	return 0;
}

static int map_mmap(struct swapstore *ss)
{
	void *p = mmap(NULL, ss->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		       ss->map_fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	ss->map_mem = p;
	ss->map = (_Atomic uint64_t *)((uint8_t *)p + MAP_HDR_BYTES);
	return 0;
}

static void fill_blkback(struct swapstore *ss, struct blkback *out);

int swapstore_new(struct tmem_store *s, uint32_t client_id,
		  uint64_t capacity_bytes, const char *backing_path,
		  struct blkback *out)
{
	struct swapstore *ss;
	struct map_hdr *h;
	int rc;

	if (!s || !backing_path || !out || !capacity_bytes ||
	    capacity_bytes % PG || capacity_bytes > SWAPSTORE_MAX_BYTES)
		return -EINVAL;
	rc = ss_alloc(s, client_id, capacity_bytes / PG, backing_path, &ss);
	if (rc)
		return rc;
	ss->map_fd = memfd_create("ebb-swapmap", MFD_CLOEXEC);
	if (ss->map_fd < 0 || ftruncate(ss->map_fd, (off_t)ss->map_bytes)) {
		rc = -errno;
		goto err_alloc;
	}
	rc = map_mmap(ss);
	if (rc)
		goto err_alloc;

	rc = tmem_pool_new(s, client_id, TMEM_POOL_PERSISTENT, NULL,
			   &ss->pool_id);
	if (rc)
		goto err_alloc;
	h = ss->map_mem;
	h->version = MAP_VERSION;
	h->page_bytes = PG;
	h->npages = ss->npages;
	h->client_id = client_id;
	h->pool_id = ss->pool_id;
	h->oid_w0 = SWAPSTORE_OID_W0;
	h->check = map_hdr_check(h);
	COMMIT();
	h->magic = MAP_MAGIC;

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

	fill_blkback(ss, out);
	return 0;

err_file:
	close(ss->fd);
	ss->fd = -1;
	unlink(backing_path);
err_pool:
	tmem_pool_destroy(s, client_id, ss->pool_id);
err_alloc:
	ss_free(ss);
	return rc;
}

static void fill_blkback(struct swapstore *ss, struct blkback *out)
{
	memset(out, 0, sizeof(*out));
	out->ops = &swapstore_ops;
	out->be = ss;
	out->capacity_bytes = ss->npages * PG;
	out->read_only = false;
	strcpy(out->serial, SWAPSTORE_SERIAL);
}

int swapstore_fds(const struct blkback *bb, int *map_fd, int *file_fd)
{
	const struct swapstore *ss = swapstore_from(bb);

	if (!ss || !map_fd || !file_fd)
		return -EINVAL;
	*map_fd = ss->map_fd;
	*file_fd = ss->fd;
	return 0;
}

void swapstore_release(struct blkback *bb)
{
	struct swapstore *ss = swapstore_from(bb);

	if (ss)
		ss_free(ss);
	if (bb)
		memset(bb, 0, sizeof(*bb));
}

/* Adoption, step 3: which pages the pool holds. */
struct present {
	uint64_t *bits;			/* [npages] */
	uint64_t npages;
	uint32_t *orphans;		/* indexes past the device's end */
	size_t norphans, cap;
	bool nomem;
};

static void present_cb(void *arg, uint32_t index)
{
	struct present *pr = arg;

	if (index < pr->npages) {
		pr->bits[index / 64] |= 1ull << (index % 64);
		return;
	}
	if (pr->norphans == pr->cap) {
		size_t cap = pr->cap ? pr->cap * 2 : 64;
		uint32_t *v = realloc(pr->orphans, cap * sizeof(*v));

		if (!v) {
			pr->nomem = true;
			return;
		}
		pr->orphans = v;
		pr->cap = cap;
	}
	pr->orphans[pr->norphans++] = index;
}

/* Adoption, step 1: the header says this is the map of @client_id's
 * swapstore in a pool that is still there. */
static int map_hdr_load(int map_fd, uint32_t client_id, struct map_hdr *h)
{
	struct stat st;

	if (fstat(map_fd, &st))
		return errno == EBADF ? -EINVAL : -errno;
	if (pread(map_fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h) ||
	    h->magic != MAP_MAGIC)
		return -EUCLEAN;
	if (h->version != MAP_VERSION)
		return -EPROTONOSUPPORT;
	if (h->check != map_hdr_check(h) || h->page_bytes != PG ||
	    !h->npages || h->npages > SWAPSTORE_MAX_BYTES / PG ||
	    h->oid_w0 != SWAPSTORE_OID_W0 ||
	    h->pool_id >= TMEM_MAX_POOLS_PER_CLIENT ||
	    (uint64_t)st.st_size < map_len(h->npages))
		return -EUCLEAN;
	if (h->client_id != client_id)
		return -ESRCH;
	return 0;
}

int swapstore_adopt(struct tmem_store *s, uint32_t client_id, int map_fd,
		    int file_fd, const char *backing_path, struct blkback *out)
{
	struct present pr = { 0 };
	struct swapstore *ss;
	struct map_hdr h;
	struct stat st;
	uint32_t flags;
	uint64_t p;
	size_t i;
	int rc;

	if (!s || map_fd < 0 || file_fd < 0 || !backing_path || !out)
		return -EINVAL;
	/* 1. */
	rc = map_hdr_load(map_fd, client_id, &h);
	if (rc)
		return rc;
	rc = tmem_pool_flags(s, client_id, h.pool_id, &flags);
	if (rc)
		return rc;
	if (flags != TMEM_POOL_PERSISTENT)
		return -EUCLEAN;
	if (fstat(file_fd, &st))
		return errno == EBADF ? -EINVAL : -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < h.npages * PG)
		return -EUCLEAN;
	/* 2. */
	rc = ss_alloc(s, client_id, h.npages, backing_path, &ss);
	if (rc)
		return rc;
	ss->pool_id = h.pool_id;
	ss->map_fd = fcntl(map_fd, F_DUPFD_CLOEXEC, 3);
	ss->fd = fcntl(file_fd, F_DUPFD_CLOEXEC, 3);
	if (ss->map_fd < 0 || ss->fd < 0) {
		rc = -errno;
		goto err;
	}
	rc = map_mmap(ss);
	if (rc)
		goto err;
	/* 3. */
	pr.npages = ss->npages;
	pr.bits = calloc((size_t)(ss->npages + 63) / 64, sizeof(uint64_t));
	if (!pr.bits) {
		rc = -ENOMEM;
		goto err;
	}
	rc = tmem_object_indexes(s, client_id, ss->pool_id, &ss->oid,
				 present_cb, &pr);
	if (!rc && pr.nomem)
		rc = -ENOMEM;
	if (rc)
		goto err_bits;
	/* 4. */
	for (i = 0; i < pr.norphans; i++) {
		(void)tmem_flush_page(s, client_id, ss->pool_id, &ss->oid,
				      pr.orphans[i]);
		ctr_add(&ss->c.adopt_orphans, 1);
	}
	for (p = 0; p < ss->npages; p++) {
		unsigned st2 = map_get(ss, p);
		bool in_pool = pr.bits[p / 64] >> (p % 64) & 1;

		/* The pool lost a page the map names (a damaged arena):
		 * it reads as an I/O error, never as zeros. */
		if (st2 == PS_TMEM && !in_pool) {
			map_set(ss, p, PS_LOST);
			ctr_add(&ss->c.adopt_lost_pages, 1);
		}
		/* A put that had not reached the map yet (page_store())
		 * or a drop that had not reached the pool (page_drop()). */
		if (in_pool && st2 != PS_TMEM) {
			(void)tmem_flush_page(s, client_id, ss->pool_id,
					      &ss->oid, (uint32_t)p);
			ctr_add(&ss->c.adopt_orphans, 1);
		}
	}
	/* map_set() above moved counters that started at 0: count anew. */
	atomic_store(&ss->c.tmem_pages, 0);
	atomic_store(&ss->c.file_pages, 0);
	atomic_store(&ss->c.lost_pages, 0);
	for (p = 0; p < ss->npages; p++) {
		_Atomic uint64_t *c = state_ctr(ss, map_get(ss, p));

		if (c)
			ctr_add(c, 1);
	}
	free(pr.bits);
	free(pr.orphans);
	fill_blkback(ss, out);
	return 0;
err_bits:
	free(pr.bits);
	free(pr.orphans);
err:
	ss_free(ss);
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
	out->adopt_lost_pages = ctr_get(&ss->c.adopt_lost_pages);
	out->adopt_orphans = ctr_get(&ss->c.adopt_orphans);
	return 0;
}
