/*
 * cachedisk: see cachedisk.h for the contract, the sharing rule and the
 * coherence protocol.  This comment is about the registry and the request
 * paths.
 *
 * Registry.  One list per process of open images (struct cachedisk_image), under
 * registry_lock, which is only held to find, add or remove an entry and
 * its user list: never during I/O or a tmem call.  Lock order: an image's
 * lock, then the tmem store's lock (inside tmem calls).  The charge hook
 * runs under the store lock and must not call back here (tmem's rule).
 *
 * Read, per page of the request:
 *   1. tmem_get, straight into guest memory when the whole page lies in
 *      one segment.  Any failure counts as a miss: the file is the truth.
 *   2. Misses gather into a run of contiguous pages (at most
 *      CACHEDISK_RUN_PAGES), ended by a hit, a gap, a full run[] or the
 *      end of the request.
 *   3. A run: note the generation, pread the whole pages (up to the end
 *      of the file, zeros after), copy the requested bytes out, and put
 *      every page if the generation has not moved.
 *
 * Write, in chunks of at most CACHEDISK_RUN_PAGES pages, under the image
 * lock: copy the chunk's bytes into run[] at their page offsets, pwrite
 * them, bump the generation, put each whole page from run[] and flush the
 * partial ones (all of them if the pwrite failed: the file's content is
 * then unknown).
 */
#include "cachedisk.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iovcur.h"
#include "pio.h"

#define PG		TMEM_PAGE_SIZE
#define RUN_BYTES	(CACHEDISK_RUN_PAGES * PG)

/* An image some instances have open. */
struct cachedisk_image {
	struct tmem_store *store;	/* key; registry_lock */
	dev_t dev;			/* key; registry_lock */
	ino_t ino;			/* key; registry_lock */
	struct tmem_uuid uuid;		/* names the shared pool; constant */
	pthread_mutex_t lock;		/* orders image changes against fills */
	uint64_t gen;			/* lock: bumped by every image change */
	struct cachedisk *users;	/* registry_lock: via next_user */
	struct cachedisk_image *next;		/* registry_lock */
};

struct cachedisk_counters {
	_Atomic uint64_t hits;
	_Atomic uint64_t misses;
	_Atomic uint64_t fills;
	_Atomic uint64_t fills_refused;
	_Atomic uint64_t fills_raced;
	_Atomic uint64_t updates;
	_Atomic uint64_t updates_refused;
	_Atomic uint64_t invalidated_pages;
	_Atomic uint64_t file_read_bytes;
	_Atomic uint64_t file_write_bytes;
	_Atomic uint64_t io_errors;
};

struct cachedisk {
	struct tmem_store *store;	/* not owned */
	uint32_t client_id;		/* tmem client, the caller's */
	uint32_t pool_id;		/* the client's id for the shared pool */
	struct cachedisk_image *img;		/* registry entry; constant */
	struct cachedisk *next_user;	/* img->users; registry_lock */
	int fd;				/* the image */
	bool read_only;
	uint64_t file_bytes;		/* image size at open */
	uint64_t capacity;		/* file_bytes rounded down to 512 */
	uint8_t *run;			/* RUN_BYTES: miss runs, write chunks */
	uint8_t *page;			/* PG: bounce for split reads */
	/* Image bytes [fill_from, fill_end) were read by consecutive miss
	 * runs of this instance and are all in the tmem cache. */
	uint64_t fill_from, fill_end;
	struct cachedisk_counters c;		/* relaxed atomics */
};

/* Bytes the host page cache may put in one folio: page cache advice only
 * drops folios wholly inside its range, and large folios reach 2 MiB. */
#define FOLIO_MAX	(2u << 20)

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cachedisk_image *registry;	/* registry_lock */

static void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t ctr_get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- registry ---- */

static int uuid_random(struct tmem_uuid *u)
{
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(u->b)) {
		n = getrandom(u->b + got, sizeof(u->b) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	u->b[0] |= 1;	/* all-zero means "no UUID" to tmem */
	return 0;
}

/* Find or make @cd's image entry and join it. */
static int image_join(struct cachedisk *cd, const struct stat *st)
{
	struct cachedisk_image *img;
	struct cachedisk *u;
	int rc = 0;

	pthread_mutex_lock(&registry_lock);
	for (img = registry; img; img = img->next)
		if (img->store == cd->store && img->dev == st->st_dev &&
		    img->ino == st->st_ino)
			break;
	if (img) {
		for (u = img->users; u; u = u->next_user)
			if (u->client_id == cd->client_id)
				rc = -EBUSY;
		if (rc)
			goto out;
	} else {
		img = calloc(1, sizeof(*img));
		if (!img) {
			rc = -ENOMEM;
			goto out;
		}
		rc = uuid_random(&img->uuid);
		if (!rc)
			rc = -pthread_mutex_init(&img->lock, NULL);
		if (rc) {
			free(img);
			goto out;
		}
		img->store = cd->store;
		img->dev = st->st_dev;
		img->ino = st->st_ino;
		img->next = registry;
		registry = img;
	}
	cd->next_user = img->users;
	img->users = cd;
	cd->img = img;
out:
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

static void image_leave(struct cachedisk *cd)
{
	struct cachedisk_image *img = cd->img, **ip;
	struct cachedisk **up;

	pthread_mutex_lock(&registry_lock);
	for (up = &img->users; *up != cd; up = &(*up)->next_user)
		assert(*up);
	*up = cd->next_user;
	if (!img->users) {
		for (ip = &registry; *ip != img; ip = &(*ip)->next)
			assert(*ip);
		*ip = img->next;
		pthread_mutex_destroy(&img->lock);
		free(img);
	}
	pthread_mutex_unlock(&registry_lock);
	cd->img = NULL;
}

static uint64_t image_gen(struct cachedisk_image *img)
{
	uint64_t g;

	pthread_mutex_lock(&img->lock);
	g = img->gen;
	pthread_mutex_unlock(&img->lock);
	return g;
}

/* ---- cache and file ---- */

static struct tmem_oid page_oid(uint64_t p)
{
	struct tmem_oid o = { { p / CACHEDISK_OBJ_PAGES, CACHEDISK_OID_W1, 0 } };

	return o;
}

static int cache_get(struct cachedisk *cd, uint64_t p, uint8_t *buf)
{
	struct tmem_oid o = page_oid(p);

	return tmem_get(cd->store, cd->client_id, cd->pool_id, &o,
			(uint32_t)(p % CACHEDISK_OBJ_PAGES), buf, PG);
}

static int cache_put(struct cachedisk *cd, uint64_t p, const uint8_t *buf)
{
	struct tmem_oid o = page_oid(p);

	return tmem_put(cd->store, cd->client_id, cd->pool_id, &o,
			(uint32_t)(p % CACHEDISK_OBJ_PAGES), buf, PG);
}

/* Drop pages [first, end) from the cache: whole objects where the range
 * covers them, page by page elsewhere.  -ENOENT (not cached) is the
 * common answer and not an error.  Caller holds the image lock. */
static void cache_invalidate(struct cachedisk *cd, uint64_t first, uint64_t end)
{
	uint64_t p = first;

	ctr_add(&cd->c.invalidated_pages, end - first);
	while (p < end) {
		struct tmem_oid o = page_oid(p);

		if (p % CACHEDISK_OBJ_PAGES == 0 &&
		    end - p >= CACHEDISK_OBJ_PAGES) {
			(void)tmem_flush_object(cd->store, cd->client_id,
						cd->pool_id, &o);
			p += CACHEDISK_OBJ_PAGES;
			continue;
		}
		(void)tmem_flush_page(cd->store, cd->client_id, cd->pool_id,
				      &o, (uint32_t)(p % CACHEDISK_OBJ_PAGES));
		p++;
	}
}

/* Image bytes [start, start + len), read by a miss run, are now all in the
 * tmem cache: the host page cache's copy is a second one that the pool
 * does not see, so drop it (POSIX_FADV_DONTNEED drops clean pages at
 * once).  The kernel drops only folios wholly inside the advised range,
 * and a folio may be larger than a run, so the range reaches back over
 * the runs just before this one that were cached too (a sequential read
 * drops everything behind it), but never to pages not in the cache.
 * Folios straddling a run nobody read stay for the host to reclaim.
 * Advice only: a failure changes nothing.  A run with a refused put is
 * not dropped at all: the host is short, and its page cache is then the
 * better judge of what to keep. */
static void drop_page_cache(struct cachedisk *cd, uint64_t start, size_t len)
{
	uint64_t from = start;

	if (cd->fill_end == start && cd->fill_from < start)
		from = start - cd->fill_from > FOLIO_MAX ? start - FOLIO_MAX
							 : cd->fill_from;
	else
		cd->fill_from = start;
	cd->fill_end = start + len;
	/* The advice leaves a partial last page; at the end of the file,
	 * advise to the end (length 0) to take the tail page too. */
	(void)posix_fadvise(cd->fd, (off_t)from,
			    cd->fill_end == cd->file_bytes
				    ? 0 : (off_t)(cd->fill_end - from),
			    POSIX_FADV_DONTNEED);
}

/* Step 3 of the read: pages [first, first + n) missed; the request wants
 * device bytes [want, want_end) of them, at request offset want - @off. */
static int miss_fill(struct cachedisk *cd, struct iovcur *c, uint64_t off,
		     uint64_t first, uint32_t n, uint64_t want,
		     uint64_t want_end)
{
	uint64_t start = first * PG, gen;
	size_t len = (size_t)n * PG, valid, done;
	uint32_t i, fill_ok = 0;
	int rc;

	/* Pages of a request lie below capacity <= file_bytes. */
	assert(start < cd->file_bytes);
	valid = cd->file_bytes - start < len ? (size_t)(cd->file_bytes - start)
					     : len;
	gen = image_gen(cd->img);
	rc = pio_full(false, cd->fd, cd->run, valid, start, &done);
	ctr_add(&cd->c.file_read_bytes, done);
	if (rc) {
		ctr_add(&cd->c.io_errors, 1);
		return rc;
	}
	memset(cd->run + valid, 0, len - valid);
	iovcur_put(c, want - off, cd->run + (want - start),
		   (size_t)(want_end - want));

	pthread_mutex_lock(&cd->img->lock);
	if (cd->img->gen != gen) {
		ctr_add(&cd->c.fills_raced, n);
	} else {
		for (i = 0; i < n; i++)
			if (!cache_put(cd, first + i, cd->run + (size_t)i * PG))
				fill_ok++;
		ctr_add(&cd->c.fills, fill_ok);
		ctr_add(&cd->c.fills_refused, n - fill_ok);
	}
	pthread_mutex_unlock(&cd->img->lock);
	/* Outside the image lock: a syscall need not hold up the image's
	 * other users (the fill streak is this instance's own). */
	if (fill_ok == n)
		drop_page_cache(cd, start, valid);
	else
		cd->fill_end = cd->fill_from = 0;
	return 0;
}

/* ---- blkback ops ---- */

static bool in_range(const struct cachedisk *cd, uint64_t off, uint64_t len)
{
	return off <= cd->capacity && len <= cd->capacity - off;
}

static int cachedisk_read(void *be, uint64_t off, const struct iovec *iov,
		   unsigned iovcnt)
{
	struct cachedisk *cd = be;
	uint64_t len = iovcur_total(iov, iovcnt), pos = off, end = off + len;
	uint64_t miss_first = 0, want = 0;
	uint32_t miss_n = 0;
	struct iovcur c;
	int rc;

	if (!in_range(cd, off, len))
		return -EINVAL;
	iovcur_init(&c, iov, iovcnt);
	while (pos < end) {
		uint64_t p = pos / PG, pstart = p * PG;
		size_t in = (size_t)(pos - pstart);
		size_t n = (size_t)((end < pstart + PG ? end : pstart + PG) - pos);
		uint8_t *dst;

		/* 2. */
		if (miss_n && (miss_first + miss_n != p ||
			       miss_n == CACHEDISK_RUN_PAGES)) {
			rc = miss_fill(cd, &c, off, miss_first, miss_n, want, pos);
			if (rc)
				return rc;
			miss_n = 0;
		}
		/* 1. */
		dst = n == PG ? iovcur_contig(&c, pos - off, PG) : NULL;
		if (cache_get(cd, p, dst ? dst : cd->page) == 0) {
			/* A hit ends the run of misses before it, even when
			 * its page number continues the run (the check at 2.
			 * only sees page numbers, and this page is not one of
			 * the run's). */
			if (miss_n) {
				rc = miss_fill(cd, &c, off, miss_first, miss_n,
					       want, pos);
				if (rc)
					return rc;
				miss_n = 0;
			}
			ctr_add(&cd->c.hits, 1);
			if (!dst)
				iovcur_put(&c, pos - off, cd->page + in, n);
		} else {
			ctr_add(&cd->c.misses, 1);
			if (!miss_n) {
				miss_first = p;
				want = pos;
			}
			miss_n++;
		}
		pos += n;
	}
	if (miss_n)
		return miss_fill(cd, &c, off, miss_first, miss_n, want, end);
	return 0;
}

static int cachedisk_write(void *be, uint64_t off, const struct iovec *iov,
		    unsigned iovcnt)
{
	struct cachedisk *cd = be;
	uint64_t len = iovcur_total(iov, iovcnt), pos = off, end = off + len;
	struct iovcur c;
	size_t done;
	int rc = 0;

	if (cd->read_only)
		return -EROFS;
	if (!in_range(cd, off, len))
		return -EINVAL;
	iovcur_init(&c, iov, iovcnt);
	pthread_mutex_lock(&cd->img->lock);
	while (pos < end) {
		uint64_t p0 = pos / PG, base = p0 * PG, cend, p;
		size_t in = (size_t)(pos - base);

		cend = base + RUN_BYTES < end ? base + RUN_BYTES : end;
		iovcur_get(&c, pos - off, cd->run + in, (size_t)(cend - pos));
		rc = pio_full(true, cd->fd, cd->run + in, (size_t)(cend - pos),
			      pos, &done);
		ctr_add(&cd->c.file_write_bytes, done);
		if (rc)
			ctr_add(&cd->c.io_errors, 1);
		cd->img->gen++;
		for (p = p0; p * PG < cend; p++) {
			if (!rc && p * PG >= pos && (p + 1) * PG <= cend) {
				if (cache_put(cd, p, cd->run + (p - p0) * PG))
					ctr_add(&cd->c.updates_refused, 1);
				else
					ctr_add(&cd->c.updates, 1);
			} else {
				cache_invalidate(cd, p, p + 1);
			}
		}
		if (rc)
			break;
		pos = cend;
	}
	pthread_mutex_unlock(&cd->img->lock);
	return rc;
}

static int cachedisk_flush(void *be)
{
	struct cachedisk *cd = be;

	if (fdatasync(cd->fd)) {
		ctr_add(&cd->c.io_errors, 1);
		return -errno;
	}
	return 0;
}

/* Pages touched by [off, off + len): first and one past the last. */
static void touched(uint64_t off, uint64_t len, uint64_t *first, uint64_t *end)
{
	*first = off / PG;
	*end = (off + len + PG - 1) / PG;
}

/* Write zeros over [off, off + len), RUN_BYTES at a time. */
static int write_zeros(struct cachedisk *cd, uint64_t off, uint64_t len)
{
	size_t n, done;
	int rc;

	memset(cd->run, 0, RUN_BYTES);
	while (len) {
		n = len < RUN_BYTES ? (size_t)len : RUN_BYTES;
		rc = pio_full(true, cd->fd, cd->run, n, off, &done);
		ctr_add(&cd->c.file_write_bytes, done);
		if (rc)
			return rc;
		off += n;
		len -= n;
	}
	return 0;
}

static int cachedisk_discard(void *be, uint64_t off, uint64_t len)
{
	struct cachedisk *cd = be;
	uint64_t first, end;
	int rc = 0;

	if (!in_range(cd, off, len))
		return -EINVAL;
	if (!len)
		return 0;
	touched(off, len, &first, &end);
	pthread_mutex_lock(&cd->img->lock);
	if (fallocate(cd->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len)) {
		/* A filesystem that cannot punch just keeps the data. */
		if (errno != EOPNOTSUPP) {
			rc = -errno;
			ctr_add(&cd->c.io_errors, 1);
		}
	}
	cd->img->gen++;
	cache_invalidate(cd, first, end);
	pthread_mutex_unlock(&cd->img->lock);
	return rc;
}

static int cachedisk_write_zeroes(void *be, uint64_t off, uint64_t len,
			   bool may_unmap)
{
	struct cachedisk *cd = be;
	uint64_t first, end;
	int rc = 0;

	if (!in_range(cd, off, len))
		return -EINVAL;
	if (!len)
		return 0;
	touched(off, len, &first, &end);
	pthread_mutex_lock(&cd->img->lock);
	/* Deallocate only when allowed; each fallback keeps that promise:
	 * ZERO_RANGE keeps blocks allocated, and writing zeros always works
	 * where the filesystem has neither. */
	errno = EOPNOTSUPP;
	if (may_unmap &&
	    fallocate(cd->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		goto done;
	if (errno == EOPNOTSUPP &&
	    fallocate(cd->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		goto done;
	if (errno == EOPNOTSUPP)
		rc = write_zeros(cd, off, len);
	else
		rc = -errno;
	if (rc)
		ctr_add(&cd->c.io_errors, 1);
done:
	cd->img->gen++;
	cache_invalidate(cd, first, end);
	pthread_mutex_unlock(&cd->img->lock);
	return rc;
}

static void cachedisk_destroy(void *be)
{
	struct cachedisk *cd = be;

	if (!cd)
		return;
	/* -ESRCH if the caller destroyed the client first: it left the
	 * pool then. */
	(void)tmem_pool_destroy(cd->store, cd->client_id, cd->pool_id);
	image_leave(cd);
	close(cd->fd);
	free(cd->page);
	free(cd->run);
	free(cd);
}

static const struct blkback_ops cachedisk_ops = {
	.read = cachedisk_read,
	.write = cachedisk_write,
	.flush = cachedisk_flush,
	.discard = cachedisk_discard,
	.write_zeroes = cachedisk_write_zeroes,
	.destroy = cachedisk_destroy,
};

/* Nothing to make durable and nothing to drop on a read-only disk, so
 * FLUSH, DISCARD and WRITE_ZEROES are not offered. */
static const struct blkback_ops cachedisk_ro_ops = {
	.read = cachedisk_read,
	.write = cachedisk_write,	/* -EROFS, should the device call it */
	.destroy = cachedisk_destroy,
};

/* ---- public ---- */

int cachedisk_new(struct tmem_store *s, uint32_t client_id,
		  const char *image_path, bool read_only, struct blkback *out)
{
	struct cachedisk *cd;
	struct stat st;
	off_t size;
	int rc;

	if (!s || !image_path || !out)
		return -EINVAL;
	cd = calloc(1, sizeof(*cd));
	if (!cd)
		return -ENOMEM;
	cd->store = s;
	cd->client_id = client_id;
	cd->read_only = read_only;
	cd->run = aligned_alloc(PG, RUN_BYTES);
	cd->page = aligned_alloc(PG, PG);
	if (!cd->run || !cd->page) {
		rc = -ENOMEM;
		goto err_alloc;
	}

	cd->fd = open(image_path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (cd->fd < 0) {
		rc = -errno;
		goto err_alloc;
	}
	/* lseek rather than st_size: block devices report st_size 0. */
	size = lseek(cd->fd, 0, SEEK_END);
	if (size < 0 || fstat(cd->fd, &st)) {
		rc = -errno;
		goto err_file;
	}
	cd->file_bytes = (uint64_t)size;
	cd->capacity = cd->file_bytes / BLKBACK_SECTOR * BLKBACK_SECTOR;

	rc = image_join(cd, &st);
	if (rc)
		goto err_file;
	rc = tmem_pool_new(s, client_id, TMEM_POOL_SHARED, &cd->img->uuid,
			   &cd->pool_id);
	if (rc)
		goto err_image;

	memset(out, 0, sizeof(*out));
	out->ops = read_only ? &cachedisk_ro_ops : &cachedisk_ops;
	out->be = cd;
	out->capacity_bytes = cd->capacity;
	out->read_only = read_only;
	strcpy(out->serial, CACHEDISK_SERIAL);
	return 0;

err_image:
	image_leave(cd);
err_file:
	close(cd->fd);
err_alloc:
	free(cd->page);
	free(cd->run);
	free(cd);
	return rc;
}

struct cachedisk *cachedisk_from(const struct blkback *bb)
{
	if (!bb || (bb->ops != &cachedisk_ops && bb->ops != &cachedisk_ro_ops))
		return NULL;
	return bb->be;
}

int cachedisk_stats(const struct cachedisk *cd, struct cachedisk_stats *out)
{
	if (!cd || !out)
		return -EINVAL;
	out->capacity_bytes = cd->capacity;
	out->hits = ctr_get(&cd->c.hits);
	out->misses = ctr_get(&cd->c.misses);
	out->fills = ctr_get(&cd->c.fills);
	out->fills_refused = ctr_get(&cd->c.fills_refused);
	out->fills_raced = ctr_get(&cd->c.fills_raced);
	out->updates = ctr_get(&cd->c.updates);
	out->updates_refused = ctr_get(&cd->c.updates_refused);
	out->invalidated_pages = ctr_get(&cd->c.invalidated_pages);
	out->file_read_bytes = ctr_get(&cd->c.file_read_bytes);
	out->file_write_bytes = ctr_get(&cd->c.file_write_bytes);
	out->io_errors = ctr_get(&cd->c.io_errors);
	return 0;
}
