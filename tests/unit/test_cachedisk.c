/*
 * Tests for cachedisk: a real tmem store with a charge hook, a real image
 * file of random content in a mkdtemp'd directory (by default ending in a
 * partial page whose size is not even a sector multiple), and a reference
 * copy of the image the tests keep in step.  Reads and writes go through
 * random iovec splits.  The property checked throughout is coherence: what
 * any instance reads equals the image file's bytes, however pages were
 * cached, evicted, refused, rewritten or invalidated by another instance.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "cachedisk.h"
#include "tmem.h"
#include "blkio.h"

#define PG		TMEM_PAGE_SIZE
#define SEC		BLKBACK_SECTOR
#define IMG_PAGES	200u
/* 200 pages, 3 sectors and 100 bytes: the last page is partial and the
 * capacity drops the 100 bytes. */
#define IMG_BYTES	((uint64_t)IMG_PAGES * PG + 3 * SEC + 100)
#define CAP		((uint64_t)IMG_PAGES * PG + 3 * SEC)
#define A		1u	/* tmem clients */
#define B		2u
#define NCLIENTS	4u
#define MAX_IOV		64u

/* ---- random ---- */

static void fill(uint8_t *p, size_t n)
{
	static const char text[] = "a shared base image of a root filesystem ";
	size_t i;
	uint8_t b = (uint8_t)blkio_rng();

	switch (blkio_rnd(3)) {
	case 0:
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)blkio_rng();
		break;
	case 1:
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)text[(i + b) % (sizeof(text) - 1)];
		break;
	default:
		memset(p, blkio_rnd(2) ? 0 : b, n);
		break;
	}
}

/* ---- charge hook ---- */

struct hook {
	pthread_mutex_t lock;		/* tests with threads */
	int64_t total[NCLIENTS];	/* accepted deltas */
	bool refuse;			/* refuse all growth */
};

static int hook_fn(void *opaque, uint32_t id, int64_t delta)
{
	struct hook *h = opaque;
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	if (id >= NCLIENTS)
		rc = -EINVAL;	/* checked below, outside the store lock */
	else if (delta > 0 && h->refuse)
		rc = -ENOMEM;
	else
		h->total[id] += delta;
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* ---- fixture ---- */

struct fx {
	struct tmem_store *s;
	struct hook hook;
	char dir[64];
	char path[96];
	int fd;				/* the test's own view of the image */
	struct blkback a, b;		/* instances of clients A and B */
	uint8_t ref[IMG_BYTES];		/* the image's bytes, kept in step */
	uint8_t buf[IMG_BYTES];
	uint8_t tmp[IMG_BYTES];
	struct iovec iov[MAX_IOV];
};

static void make_image(struct fx *f, uint64_t bytes)
{
	unsigned i;

	for (i = 0; i < bytes / PG + 1; i++)
		fill(f->ref + (uint64_t)i * PG,
		     (uint64_t)i * PG + PG <= bytes ? PG : bytes - (uint64_t)i * PG);
	assert_int_equal(ftruncate(f->fd, 0), 0);
	assert_int_equal(pwrite(f->fd, f->ref, bytes, 0), (ssize_t)bytes);
}

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct tmem_store_config cfg = { .charge = hook_fn };

	assert_non_null(f);
	assert_int_equal(pthread_mutex_init(&f->hook.lock, NULL), 0);
	cfg.charge_opaque = &f->hook;
	assert_int_equal(tmem_store_new(&cfg, &f->s), 0);
	assert_int_equal(tmem_client_new(f->s, A, "a", NULL), 0);
	assert_int_equal(tmem_client_new(f->s, B, "b", NULL), 0);
	strcpy(f->dir, "/tmp/ebb-cachedisk-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/image", f->dir);
	f->fd = open(f->path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(f->fd >= 0);
	make_image(f, IMG_BYTES);
	return f;
}

static void open_disk(struct fx *f, uint32_t client, bool ro,
		      struct blkback *bb)
{
	assert_int_equal(cachedisk_new(f->s, client, f->path, ro, bb), 0);
	assert_non_null(cachedisk_from(bb));
}

static void close_disk(struct blkback *bb)
{
	if (bb->ops) {
		bb->ops->destroy(bb->be);
		memset(bb, 0, sizeof(*bb));
	}
}

static struct cachedisk_stats st(const struct blkback *bb)
{
	struct cachedisk_stats s;

	assert_int_equal(cachedisk_stats(cachedisk_from(bb), &s), 0);
	return s;
}

static struct tmem_store_stats sst(struct fx *f)
{
	struct tmem_store_stats s;

	assert_int_equal(tmem_store_stats(f->s, &s), 0);
	return s;
}

/* Store consistent, hook agrees with every client's charge, and the
 * image file holds exactly the reference bytes. */
static void fx_check(struct fx *f)
{
	struct tmem_stats c;
	struct stat sb;
	uint32_t id;
	ssize_t n;

	assert_int_equal(tmem_check(f->s), 0);
	for (id = 0; id < NCLIENTS; id++) {
		if (tmem_client_stats(f->s, id, &c) == 0) {
			assert_int_equal((int64_t)c.charged_bytes,
					 f->hook.total[id]);
			assert_int_equal(c.persistent_pages, 0);
		}
	}
	assert_int_equal(fstat(f->fd, &sb), 0);
	assert_int_equal(sb.st_size, IMG_BYTES);
	n = pread(f->fd, f->tmp, IMG_BYTES, 0);
	assert_int_equal(n, IMG_BYTES);
	assert_memory_equal(f->tmp, f->ref, IMG_BYTES);
}

static int setup(void **state)
{
	struct fx *f = fx_new();

	open_disk(f, A, false, &f->a);
	open_disk(f, B, false, &f->b);
	*state = f;
	return 0;
}

static int setup_closed(void **state)
{
	*state = fx_new();
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	fx_check(f);
	close_disk(&f->a);
	close_disk(&f->b);
	/* The pool died with its last user. */
	assert_int_equal(sst(f).pools, 0);
	assert_int_equal(tmem_check(f->s), 0);
	tmem_store_free(f->s);
	close(f->fd);
	unlink(f->path);
	assert_int_equal(rmdir(f->dir), 0);
	pthread_mutex_destroy(&f->hook.lock);
	free(f);
	return 0;
}

/* ---- I/O through random iovec splits ---- */

static int dev_read(struct fx *f, struct blkback *bb, uint64_t off,
		    uint8_t *out, size_t len)
{
	return blkio_read(bb, off, out, len, f->buf, f->iov, MAX_IOV);
}

static int dev_write(struct fx *f, struct blkback *bb, uint64_t off,
		     const uint8_t *data, size_t len)
{
	return blkio_write(bb, off, data, len, f->buf, f->iov, MAX_IOV);
}

static void verify(struct fx *f, struct blkback *bb, uint64_t off, size_t len)
{
	assert_int_equal(dev_read(f, bb, off, f->tmp, len), 0);
	assert_memory_equal(f->tmp, f->ref + off, len);
}

static void write_ref(struct fx *f, struct blkback *bb, uint64_t off,
		      size_t len)
{
	uint8_t *data = malloc(len);

	assert_non_null(data);
	fill(data, len);
	assert_int_equal(dev_write(f, bb, off, data, len), 0);
	memcpy(f->ref + off, data, len);
	free(data);
}

static void random_range(uint64_t cap, uint64_t max_sectors, uint64_t *off,
			 uint64_t *len)
{
	*off = blkio_rnd(cap / SEC) * SEC;
	*len = (1 + blkio_rnd(max_sectors)) * SEC;
	if (*off + *len > cap)
		*len = cap - *off;
}

/* ---- tests ---- */

static void new_errors(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;
	struct blkback bb;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/nope", f->dir);
	assert_int_equal(cachedisk_new(NULL, A, f->path, false, &bb), -EINVAL);
	assert_int_equal(cachedisk_new(f->s, A, NULL, false, &bb), -EINVAL);
	assert_int_equal(cachedisk_new(f->s, A, f->path, false, NULL), -EINVAL);
	assert_int_equal(cachedisk_new(f->s, A, missing, false, &bb), -ENOENT);
	assert_int_equal(cachedisk_new(f->s, 3, f->path, false, &bb), -ESRCH);
	assert_int_equal(sst(f).pools, 0);

	open_disk(f, A, false, &f->a);
	/* One client, one instance per image: they would share a pool id. */
	assert_int_equal(cachedisk_new(f->s, A, f->path, true, &bb), -EBUSY);
	open_disk(f, B, true, &f->b);
	assert_int_equal(sst(f).pools, 1);

	assert_int_equal(cachedisk_stats(NULL, &s), -EINVAL);
	assert_int_equal(cachedisk_stats(cachedisk_from(&f->a), NULL), -EINVAL);
	assert_null(cachedisk_from(NULL));
	memset(&bb, 0, sizeof(bb));
	assert_null(cachedisk_from(&bb));
}

static void new_alloc_failure_leaves_nothing(void **state)
{
	struct fx *f = *state;
	struct blkback bb;

	assert_int_equal(tmem_debug_fail_alloc(f->s, 1), 0);
	assert_int_equal(cachedisk_new(f->s, A, f->path, false, &bb), -ENOMEM);
	assert_int_equal(sst(f).pools, 0);
	/* The registry forgot the image too: a new open works. */
	open_disk(f, A, false, &f->a);
	verify(f, &f->a, 0, CAP);
}

static void geometry_and_ops(void **state)
{
	struct fx *f = *state;

	assert_int_equal(f->a.capacity_bytes, CAP);
	assert_false(f->a.read_only);
	assert_string_equal(f->a.serial, "ebb-disk");
	assert_non_null(f->a.ops->flush);
	assert_non_null(f->a.ops->discard);
	assert_non_null(f->a.ops->write_zeroes);
	assert_int_equal(st(&f->a).capacity_bytes, CAP);
	assert_int_equal(f->a.ops->flush(f->a.be), 0);

	close_disk(&f->b);
	open_disk(f, B, true, &f->b);
	assert_true(f->b.read_only);
	assert_int_equal(f->b.capacity_bytes, CAP);
	assert_null(f->b.ops->flush);
	assert_null(f->b.ops->discard);
	assert_null(f->b.ops->write_zeroes);

	/* Reads beyond the capacity are refused (the device never sends
	 * them). */
	assert_int_equal(dev_read(f, &f->a, CAP - SEC, f->tmp, 2 * SEC), -EINVAL);
}

static void miss_then_hit(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;

	verify(f, &f->a, 0, 16 * PG);
	s = st(&f->a);
	assert_int_equal(s.misses, 16);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.fills, 16);
	assert_int_equal(s.file_read_bytes, 16 * PG);
	assert_int_equal(sst(f).total.ephemeral_pages, 16);

	verify(f, &f->a, 0, 16 * PG);
	s = st(&f->a);
	assert_int_equal(s.hits, 16);
	assert_int_equal(s.misses, 16);
	assert_int_equal(s.file_read_bytes, 16 * PG);

	/* Sub-page reads are served from whole cached pages. */
	verify(f, &f->a, 3 * PG + 5 * SEC, 2 * SEC);
	verify(f, &f->a, 5 * PG - SEC, 2 * SEC);
	s = st(&f->a);
	assert_int_equal(s.hits, 16 + 3);
	assert_int_equal(s.file_read_bytes, 16 * PG);
	fx_check(f);
}

/* Regression: a hit right after misses must end the miss run, or filling
 * the run copies file bytes over the hit page (and past what was read). */
static void miss_hit_miss_in_one_request(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;

	verify(f, &f->a, 2 * PG, PG);		/* only page 2 cached */
	verify(f, &f->a, 5 * PG, PG);		/* and page 5 */
	verify(f, &f->b, 0, 4 * PG);		/* miss miss hit miss */
	s = st(&f->b);
	assert_int_equal(s.hits, 1);
	assert_int_equal(s.misses, 3);
	verify(f, &f->b, PG + SEC, 4 * PG);	/* 1-3 hit, 4 misses, 5 hits */
	s = st(&f->b);
	assert_int_equal(s.hits, 1 + 4);
	assert_int_equal(s.misses, 3 + 1);
	verify(f, &f->a, 4 * PG - SEC, 2 * PG + 2 * SEC);
	verify(f, &f->a, 0, 8 * PG);
	fx_check(f);
}

static void random_reads_match_image(void **state)
{
	struct fx *f = *state;
	unsigned i;

	for (i = 0; i < 2000; i++) {
		uint64_t off, len;

		random_range(CAP, 48 * (PG / SEC), &off, &len);
		verify(f, i % 2 ? &f->a : &f->b, off, len);
		if (i % 101 == 0)
			fx_check(f);
	}
	assert_true(st(&f->a).hits > 0);
	assert_true(st(&f->b).hits > 0);
	verify(f, &f->a, 0, CAP);
	fx_check(f);
}

static void eviction_reads_from_file(void **state)
{
	struct fx *f = *state;
	uint64_t freed = 0;

	verify(f, &f->a, 0, CAP);
	assert_int_equal(sst(f).total.ephemeral_pages, IMG_PAGES + 1);
	assert_int_equal(tmem_shrink(f->s, UINT64_MAX, &freed), 0);
	assert_true(freed > 0);
	assert_int_equal(sst(f).total.ephemeral_pages, 0);
	verify(f, &f->a, 0, CAP);
	assert_int_equal(st(&f->a).misses, 2 * (IMG_PAGES + 1));

	/* Partial eviction: whatever is left is still right. */
	assert_int_equal(tmem_shrink(f->s, 40 * PG, NULL), 0);
	assert_true(sst(f).total.ephemeral_pages < IMG_PAGES + 1);
	verify(f, &f->b, 0, CAP);
	fx_check(f);
}

static void two_clients_share(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;

	verify(f, &f->a, 0, 64 * PG);
	assert_int_equal(st(&f->a).misses, 64);
	verify(f, &f->b, 0, 64 * PG);
	s = st(&f->b);
	assert_int_equal(s.hits, 64);
	assert_int_equal(s.misses, 0);
	assert_int_equal(s.file_read_bytes, 0);
	assert_int_equal(sst(f).pools, 1);
	assert_int_equal(sst(f).total.ephemeral_pages, 64);
	fx_check(f);
}

static void hard_link_shares_too(void **state)
{
	struct fx *f = *state;
	char other[128];
	struct blkback c;

	snprintf(other, sizeof(other), "%s/link", f->dir);
	assert_int_equal(link(f->path, other), 0);
	assert_int_equal(tmem_client_new(f->s, 3, "c", NULL), 0);
	assert_int_equal(cachedisk_new(f->s, 3, other, true, &c), 0);
	verify(f, &f->a, 0, 8 * PG);
	verify(f, &c, 0, 8 * PG);
	assert_int_equal(st(&c).hits, 8);
	close_disk(&c);
	assert_int_equal(unlink(other), 0);
}

static void write_by_one_seen_by_other(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;

	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);	/* all hits: everything cached */
	assert_int_equal(st(&f->b).misses, 0);

	/* Whole pages 10..13 and a partial 20. */
	write_ref(f, &f->a, 10 * PG, 4 * PG);
	write_ref(f, &f->a, 20 * PG + SEC, 2 * SEC);
	s = st(&f->a);
	assert_int_equal(s.updates, 4);
	assert_int_equal(s.invalidated_pages, 1);
	assert_int_equal(s.file_write_bytes, 4 * PG + 2 * SEC);

	verify(f, &f->b, 0, CAP);
	s = st(&f->b);
	/* The updated pages were hits, the invalidated one a miss. */
	assert_int_equal(s.misses, 1);
	fx_check(f);

	/* Unaligned across pages, written by B, read by A. */
	write_ref(f, &f->b, 30 * PG - 3 * SEC, 2 * PG + 5 * SEC);
	verify(f, &f->a, 0, CAP);
	fx_check(f);
}

static void read_only_refuses_writes(void **state)
{
	struct fx *f = *state;
	struct iovec v = { f->tmp, PG };

	open_disk(f, A, false, &f->a);
	open_disk(f, B, true, &f->b);
	memset(f->tmp, 0x77, PG);
	assert_int_equal(f->b.ops->write(f->b.be, 0, &v, 1), -EROFS);
	fx_check(f);	/* image unchanged */
	assert_int_equal(st(&f->b).file_write_bytes, 0);

	/* The writable sharer's writes reach the read-only reader. */
	verify(f, &f->b, 0, 8 * PG);
	write_ref(f, &f->a, 2 * PG, PG + SEC);
	verify(f, &f->b, 0, 8 * PG);
	fx_check(f);
}

static void partial_last_page(void **state)
{
	struct fx *f = *state;
	uint64_t last = (uint64_t)IMG_PAGES * PG;
	struct stat sb;

	/* The last sectors, twice: a miss, then a hit of the same page
	 * (cached with zero padding past the end of the file). */
	verify(f, &f->a, last, 3 * SEC);
	verify(f, &f->a, last + SEC, SEC);
	assert_int_equal(st(&f->a).hits, 1);
	verify(f, &f->b, last - PG, PG + 3 * SEC);
	assert_int_equal(st(&f->b).hits, 1);	/* page 200; 199 was new */
	assert_int_equal(st(&f->b).misses, 1);

	/* Writing the last sectors: the page is not whole, so it is
	 * invalidated, and the 100 bytes past the capacity stay as they
	 * were (fx_check compares the whole file). */
	write_ref(f, &f->a, last + SEC, 2 * SEC);
	assert_int_equal(st(&f->a).updates, 0);
	verify(f, &f->b, last - 2 * SEC, 5 * SEC);
	assert_int_equal(fstat(f->fd, &sb), 0);
	assert_int_equal(sb.st_size, IMG_BYTES);
	fx_check(f);
}

static void page_multiple_image(void **state)
{
	struct fx *f = *state;
	struct blkback bb;

	/* An image of whole pages only, and one smaller than a page. */
	make_image(f, 8 * PG);
	assert_int_equal(cachedisk_new(f->s, A, f->path, false, &bb), 0);
	assert_int_equal(bb.capacity_bytes, 8 * PG);
	verify(f, &bb, 0, 8 * PG);
	verify(f, &bb, 0, 8 * PG);
	assert_int_equal(st(&bb).hits, 8);
	close_disk(&bb);

	make_image(f, 1000);
	assert_int_equal(cachedisk_new(f->s, A, f->path, false, &bb), 0);
	assert_int_equal(bb.capacity_bytes, SEC);
	verify(f, &bb, 0, SEC);
	verify(f, &bb, 0, SEC);
	assert_int_equal(st(&bb).hits, 1);
	close_disk(&bb);
	make_image(f, IMG_BYTES);	/* what teardown compares */
}

static void discard_and_write_zeroes(void **state)
{
	struct fx *f = *state;
	struct stat sb0, sb1;
	ssize_t n;

	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);
	assert_int_equal(fsync(f->fd), 0);
	assert_int_equal(fstat(f->fd, &sb0), 0);

	/* Discard an unaligned range: the file decides what it reads as
	 * now (ext4 and tmpfs: zeros); both instances must agree with it. */
	assert_int_equal(f->a.ops->discard(f->a.be, 3 * PG + SEC,
					   20 * PG + 2 * SEC), 0);
	n = pread(f->fd, f->ref, IMG_BYTES, 0);
	assert_int_equal(n, IMG_BYTES);
	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);
	assert_int_equal(st(&f->a).invalidated_pages, 21);	/* 3..23 */
	assert_int_equal(fstat(f->fd, &sb1), 0);
	assert_true(sb1.st_blocks < sb0.st_blocks);

	/* write_zeroes both ways, unaligned, from the other instance. */
	assert_int_equal(f->b.ops->write_zeroes(f->b.be, 40 * PG - SEC,
						10 * PG, true), 0);
	memset(f->ref + 40 * PG - SEC, 0, 10 * PG);
	assert_int_equal(f->b.ops->write_zeroes(f->b.be, 60 * PG + 3 * SEC,
						5 * PG + SEC, false), 0);
	memset(f->ref + 60 * PG + 3 * SEC, 0, 5 * PG + SEC);
	/* And the partial last page. */
	assert_int_equal(f->b.ops->write_zeroes(f->b.be, CAP - 2 * SEC,
						2 * SEC, true), 0);
	memset(f->ref + CAP - 2 * SEC, 0, 2 * SEC);
	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);
	assert_int_equal(f->a.ops->flush(f->a.be), 0);
	fx_check(f);
}

static void refused_fills_are_fine(void **state)
{
	struct fx *f = *state;
	struct cachedisk_stats s;
	size_t k;

	f->hook.refuse = true;
	verify(f, &f->a, 0, CAP);
	verify(f, &f->a, 0, CAP);
	s = st(&f->a);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.fills, 0);
	assert_int_equal(s.fills_refused, 2 * (IMG_PAGES + 1));
	assert_int_equal(sst(f).total.ephemeral_pages, 0);
	/* A refused update on write leaves nothing stale either: cache
	 * zero pages (tiny), then overwrite them with noise, which is
	 * growth the hook refuses. */
	f->hook.refuse = false;
	memset(f->ref, 0, 4 * PG);
	assert_int_equal(dev_write(f, &f->a, 0, f->ref, 4 * PG), 0);
	assert_int_equal(st(&f->a).updates, 4);
	verify(f, &f->b, 0, 4 * PG);
	assert_int_equal(st(&f->b).hits, 4);
	f->hook.refuse = true;
	for (k = 0; k < 4 * PG; k++)
		f->ref[k] = (uint8_t)blkio_rng();
	assert_int_equal(dev_write(f, &f->a, 0, f->ref, 4 * PG), 0);
	assert_int_equal(st(&f->a).updates_refused, 4);
	verify(f, &f->b, 0, 4 * PG);
	assert_int_equal(st(&f->b).hits, 4);	/* all four missed */
	f->hook.refuse = false;
	fx_check(f);
}

/* Missed runs leave the host page cache once the tmem cache holds them
 * (a sequential read drops everything behind it, whatever the page
 * cache's folio sizes); runs with a refused put stay there.  (On tmpfs
 * the page cache is the file: nothing to drop, nothing to check.) */
static void filled_pages_leave_the_host_page_cache(void **state)
{
	struct fx *f = *state;

	if (blkio_on_tmpfs(f->fd)) {
		print_message("image on tmpfs: page cache is the file\n");
		return;
	}
	/* Written back, the image is clean; then out of the page cache. */
	assert_int_equal(fdatasync(f->fd), 0);
	assert_int_equal(blkio_pages_cached(f->fd, 0, IMG_PAGES + 1), IMG_PAGES + 1);
	assert_int_equal(posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	assert_int_equal(blkio_pages_cached(f->fd, 0, IMG_PAGES + 1), 0);

	f->hook.refuse = true;
	verify(f, &f->a, 0, 16 * PG);
	assert_int_equal(st(&f->a).fills_refused, 16);
	assert_int_equal(blkio_pages_cached(f->fd, 0, 16), 16);

	f->hook.refuse = false;
	verify(f, &f->a, 0, IMG_BYTES / SEC * SEC);
	assert_int_equal(st(&f->a).fills, IMG_PAGES + 1);
	assert_int_equal(blkio_pages_cached(f->fd, 0, IMG_PAGES + 1), 0);
	/* Hits read no file. */
	verify(f, &f->a, 0, IMG_BYTES / SEC * SEC);
	assert_int_equal(blkio_pages_cached(f->fd, 0, IMG_PAGES + 1), 0);
	fx_check(f);
}

static void alloc_failures_stay_coherent(void **state)
{
	struct fx *f = *state;
	struct tmem_debug d;
	uint64_t nth;

	for (nth = 1; nth <= 100; nth++) {
		uint64_t off, len;
		struct blkback *bb = nth % 2 ? &f->a : &f->b;

		random_range(CAP, 16 * (PG / SEC), &off, &len);
		assert_int_equal(tmem_debug_fail_alloc(f->s, nth % 40 + 1), 0);
		if (blkio_rnd(2))
			write_ref(f, bb, off, len);
		else
			verify(f, bb, off, len);
		assert_int_equal(tmem_debug_fail_alloc(f->s, 0), 0);
		verify(f, nth % 2 ? &f->b : &f->a, off, len);
		fx_check(f);
	}
	assert_int_equal(tmem_debug_get(f->s, &d), 0);
	assert_true(d.injected > 0);
	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);
}

static void random_mixed_two_instances(void **state)
{
	struct fx *f = *state;
	unsigned i;

	for (i = 0; i < 3000; i++) {
		struct blkback *bb = blkio_rnd(2) ? &f->a : &f->b;
		uint64_t off, len;

		random_range(CAP, 24 * (PG / SEC), &off, &len);
		f->hook.refuse = i % 1000 >= 700;
		switch (blkio_rnd(12)) {
		case 0:
			assert_int_equal(bb->ops->write_zeroes(bb->be, off, len,
							       blkio_rnd(2)), 0);
			memset(f->ref + off, 0, len);
			break;
		case 1:
			assert_int_equal(bb->ops->discard(bb->be, off, len), 0);
			assert_int_equal(pread(f->fd, f->ref + off, len,
					       (off_t)off), (ssize_t)len);
			break;
		case 2:
			assert_int_equal(tmem_shrink(f->s, blkio_rnd(64) * PG, NULL), 0);
			break;
		case 3: case 4: case 5:
			write_ref(f, bb, off, len);
			break;
		default:
			verify(f, bb, off, len);
			break;
		}
		if (i % 97 == 0)
			fx_check(f);
	}
	f->hook.refuse = false;
	verify(f, &f->a, 0, CAP);
	verify(f, &f->b, 0, CAP);
	assert_true(st(&f->a).hits > 0 && st(&f->b).hits > 0);
	assert_int_equal(st(&f->a).io_errors + st(&f->b).io_errors, 0);
	fx_check(f);
}

/* ---- concurrency: one writer, one reader, on the same image ----
 *
 * The writer stamps whole pages of a small hot region with increasing
 * versions and publishes each version once its write has returned; the
 * reader evicts the cache every other read, so its reads miss and fill
 * while the writer is busy.  A read must never return a version older
 * than one whose write completed before the read began: a fill that
 * cached data older than a completed write (the race the generation
 * number exists for) is caught by the next read of that page.  Torn
 * pages are allowed, as on any disk, stale ones are not. */

#define HOT_PAGES	6u
#define WORDS		(PG / 8)

struct thr {
	struct fx *f;
	struct blkback *bb;
	uint64_t seed;
	unsigned ops;
	uint64_t *done;		/* per hot page: last completed version */
	uint64_t bad;		/* reader: stale or torn pages seen */
};

static uint64_t trng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t stamp(uint64_t page, uint64_t version)
{
	return page << 40 | version;
}

static void *writer_main(void *arg)
{
	struct thr *t = arg;
	uint64_t ver[HOT_PAGES] = { 0 }, *data = malloc(2 * PG);
	struct iovec v;
	unsigned i, k, w;

	if (!data)
		return arg;
	for (i = 0; i < t->ops; i++) {
		uint64_t p = trng(&t->seed) % HOT_PAGES;
		unsigned n = p + 1 < HOT_PAGES ? 1 + trng(&t->seed) % 2 : 1;

		for (k = 0; k < n; k++)
			for (w = 0; w < WORDS; w++)
				data[k * WORDS + w] = stamp(p + k, ver[p + k] + 1);
		v.iov_base = data;
		v.iov_len = n * PG;
		if (t->bb->ops->write(t->bb->be, p * PG, &v, 1))
			break;
		for (k = 0; k < n; k++)
			__atomic_store_n(&t->done[p + k], ++ver[p + k],
					 __ATOMIC_RELEASE);
	}
	free(data);
	return i == t->ops ? NULL : arg;
}

static void *reader_main(void *arg)
{
	struct thr *t = arg;
	uint64_t lo[2], *data = malloc(2 * PG);
	struct iovec v;
	unsigned i, k, w;

	if (!data)
		return arg;
	for (i = 0; i < t->ops; i++) {
		uint64_t p = trng(&t->seed) % HOT_PAGES;
		unsigned n = p + 1 < HOT_PAGES ? 1 + trng(&t->seed) % 2 : 1;

		for (k = 0; k < n; k++)
			lo[k] = __atomic_load_n(&t->done[p + k], __ATOMIC_ACQUIRE);
		v.iov_base = data;
		v.iov_len = n * PG;
		if (t->bb->ops->read(t->bb->be, p * PG, &v, 1))
			break;
		/* Every word, not just the first: a read racing a write
		 * may see a page half old, half new (Linux does not make a
		 * buffered pread atomic against a pwrite), but never older
		 * than lo. */
		for (k = 0; k < n; k++)
			for (w = 0; w < WORDS; w++) {
				uint64_t s = data[k * WORDS + w];

				if (s >> 40 != p + k ||
				    (s & ((1ull << 40) - 1)) < lo[k])
					t->bad++;
			}
		if (i % 2 == 0)
			(void)tmem_shrink(t->f->s, UINT64_MAX, NULL);
	}
	free(data);
	return i == t->ops ? NULL : arg;
}

static void concurrent_writer_and_reader(void **state)
{
	struct fx *f = *state;
	uint64_t done[HOT_PAGES] = { 0 }, *page = malloc(HOT_PAGES * PG);
	struct thr w = { f, &f->a, 0x1234567ull, 20000, done, 0 };
	struct thr r = { f, &f->b, 0x7654321ull, 20000, done, 0 };
	pthread_t tw, tr;
	unsigned i;
	void *ret;

	assert_non_null(page);
	for (i = 0; i < HOT_PAGES * WORDS; i++)
		page[i] = stamp(i / WORDS, 0);
	assert_int_equal(dev_write(f, &f->a, 0, (uint8_t *)page, HOT_PAGES * PG), 0);
	free(page);

	assert_int_equal(pthread_create(&tw, NULL, writer_main, &w), 0);
	assert_int_equal(pthread_create(&tr, NULL, reader_main, &r), 0);
	assert_int_equal(pthread_join(tw, &ret), 0);
	assert_null(ret);
	assert_int_equal(pthread_join(tr, &ret), 0);
	assert_null(ret);
	assert_int_equal(r.bad, 0);

	/* Quiet now: every cached page must equal the file. */
	assert_int_equal(pread(f->fd, f->ref, IMG_BYTES, 0), (ssize_t)IMG_BYTES);
	verify(f, &f->b, 0, CAP);
	verify(f, &f->a, 0, CAP);
	fx_check(f);
}

static void last_user_drops_the_pool(void **state)
{
	struct fx *f = *state;

	verify(f, &f->a, 0, 8 * PG);
	close_disk(&f->a);
	assert_int_equal(sst(f).pools, 1);
	verify(f, &f->b, 0, 8 * PG);
	assert_int_equal(st(&f->b).hits, 8);
	close_disk(&f->b);
	assert_int_equal(sst(f).pools, 0);
	assert_int_equal(sst(f).total.ephemeral_pages, 0);
	assert_int_equal(f->hook.total[A] + f->hook.total[B], 0);

	/* A later open starts cold (a change made meanwhile is safe). */
	make_image(f, IMG_BYTES);
	open_disk(f, A, false, &f->a);
	verify(f, &f->a, 0, 8 * PG);
	assert_int_equal(st(&f->a).hits, 0);
	assert_int_equal(st(&f->a).misses, 8);
}

static void client_destroyed_first(void **state)
{
	struct fx *f = *state;

	/* The caller breaks the order; destroy must still be clean. */
	verify(f, &f->a, 0, 8 * PG);
	assert_int_equal(tmem_client_destroy(f->s, A), 0);
	verify(f, &f->b, 0, 8 * PG);	/* B's own pool handle still works */
	close_disk(&f->a);
	assert_int_equal(tmem_client_new(f->s, A, "a", NULL), 0);
}

#define T(fn)	cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TC(fn)	cmocka_unit_test_setup_teardown(fn, setup_closed, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TC(new_errors),
		TC(new_alloc_failure_leaves_nothing),
		T(geometry_and_ops),
		T(miss_then_hit),
		T(miss_hit_miss_in_one_request),
		T(random_reads_match_image),
		T(eviction_reads_from_file),
		T(two_clients_share),
		T(hard_link_shares_too),
		T(write_by_one_seen_by_other),
		TC(read_only_refuses_writes),
		T(partial_last_page),
		TC(page_multiple_image),
		T(discard_and_write_zeroes),
		T(refused_fills_are_fine),
		T(filled_pages_leave_the_host_page_cache),
		T(alloc_failures_stay_coherent),
		T(random_mixed_two_instances),
		T(concurrent_writer_and_reader),
		T(last_user_drops_the_pool),
		T(client_destroyed_first),
	};

	blkio_seed(0x9e3779b97f4a7c15ull);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
