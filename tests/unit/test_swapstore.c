/*
 * Tests for swapstore: a real tmem store (with a charge hook the tests can
 * tighten), a real backing file in a mkdtemp'd directory, and a reference
 * copy of the device the tests keep in step with every write.  Every
 * request goes through a random iovec split (segments of any length,
 * empty ones included), and after operations tmem_check() and the
 * counters are checked against each other: the pool holds exactly the
 * pages the swapstore says it holds (so a failed put never left a stale
 * copy), and the hook's running total equals tmem's charge.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "swapstore.h"
#include "tmem.h"
#include "blkio.h"

#define PG		TMEM_PAGE_SIZE
#define SEC		BLKBACK_SECTOR
#define NPAGES		256u
#define CAP		((uint64_t)NPAGES * PG)
#define CLIENT		7u
#define MAX_IOV		64u

/* ---- random ---- */

/* Bytes a guest might swap: zeros, noise, text, or a repeated pattern. */
static void fill(uint8_t *p, size_t n)
{
	static const char text[] = "anonymous memory of a guest process ";
	size_t i;
	uint8_t b;

	switch (blkio_rnd(4)) {
	case 0:
		memset(p, 0, n);
		break;
	case 1:
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)blkio_rng();
		break;
	case 2:
		b = (uint8_t)blkio_rnd(32);
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)text[(i + b) % (sizeof(text) - 1)];
		break;
	default:
		b = (uint8_t)blkio_rng();
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)(b + i / 64);
		break;
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)blkio_rng();
}

/* ---- charge hook: refuse growth past a limit ---- */

struct hook {
	int64_t total;		/* accepted deltas */
	int64_t limit;		/* refuse growth past this; < 0: no limit */
	unsigned refusals;
};

static int hook_fn(void *opaque, uint32_t id, int64_t delta)
{
	struct hook *h = opaque;

	assert_int_equal(id, CLIENT);
	if (delta > 0 && h->limit >= 0 && h->total + delta > h->limit) {
		h->refusals++;
		return -ENOMEM;
	}
	h->total += delta;
	return 0;
}

/* ---- fixture ---- */

struct fx {
	struct tmem_store *s;
	struct hook hook;
	char dir[64];
	char path[96];
	struct blkback bb;
	struct swapstore *ss;
	uint8_t ref[CAP];	/* what the device must read as */
	uint8_t buf[CAP];
	struct iovec iov[MAX_IOV];
};

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct tmem_store_config cfg = { .charge = hook_fn };

	assert_non_null(f);
	f->hook.limit = -1;
	cfg.charge_opaque = &f->hook;
	assert_int_equal(tmem_store_new(&cfg, &f->s), 0);
	assert_int_equal(tmem_client_new(f->s, CLIENT, "guest", NULL), 0);
	strcpy(f->dir, "/tmp/ebb-swapstore-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/swap", f->dir);
	return f;
}

static void fx_open(struct fx *f)
{
	assert_int_equal(swapstore_new(f->s, CLIENT, CAP, f->path, &f->bb), 0);
	f->ss = swapstore_from(&f->bb);
	assert_non_null(f->ss);
}

static struct swapstore_stats st(struct fx *f)
{
	struct swapstore_stats s;

	assert_int_equal(swapstore_stats(f->ss, &s), 0);
	return s;
}

static struct tmem_stats cst(struct fx *f)
{
	struct tmem_stats s;

	assert_int_equal(tmem_client_stats(f->s, CLIENT, &s), 0);
	return s;
}

/* The pool holds exactly what the map says; charges add up. */
static void fx_check(struct fx *f)
{
	struct swapstore_stats s = st(f);
	struct tmem_stats c = cst(f);

	assert_int_equal(tmem_check(f->s), 0);
	assert_int_equal(c.persistent_pages, s.tmem_pages);
	assert_int_equal(c.ephemeral_pages, 0);
	assert_int_equal((int64_t)c.charged_bytes, f->hook.total);
	assert_true(s.tmem_pages + s.file_pages + s.lost_pages <= NPAGES);
}

static int setup(void **state)
{
	struct fx *f = fx_new();

	fx_open(f);
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

	if (f->ss) {
		fx_check(f);
		f->bb.ops->destroy(f->bb.be);
	}
	assert_int_equal(tmem_check(f->s), 0);
	tmem_store_free(f->s);
	unlink(f->path);
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

/* ---- I/O through random iovec splits ---- */

static int dev_write(struct fx *f, uint64_t off, const uint8_t *data, size_t len)
{
	return blkio_write(&f->bb, off, data, len, f->buf, f->iov, MAX_IOV);
}

static int dev_read(struct fx *f, uint64_t off, uint8_t *out, size_t len)
{
	return blkio_read(&f->bb, off, out, len, f->buf, f->iov, MAX_IOV);
}

/* Write @len random-kind bytes at @off to device and reference. */
static void write_ref(struct fx *f, uint64_t off, size_t len)
{
	uint8_t *data = malloc(len);

	assert_non_null(data);
	fill(data, len);
	assert_int_equal(dev_write(f, off, data, len), 0);
	memcpy(f->ref + off, data, len);
	free(data);
}

static void verify(struct fx *f, uint64_t off, size_t len)
{
	uint8_t *out = malloc(len);

	assert_non_null(out);
	assert_int_equal(dev_read(f, off, out, len), 0);
	assert_memory_equal(out, f->ref + off, len);
	free(out);
}

static void verify_all(struct fx *f)
{
	verify(f, 0, CAP);
}

/* ---- backing file inspection ---- */

static uint64_t file_blocks_bytes(struct fx *f)
{
	struct stat sb;

	assert_int_equal(stat(f->path, &sb), 0);
	return (uint64_t)sb.st_blocks * 512;
}

/* Does the file hold data anywhere in [off, off + len)? */
static bool file_has_data(struct fx *f, uint64_t off, uint64_t len)
{
	int fd = open(f->path, O_RDONLY);
	off_t d;

	assert_true(fd >= 0);
	d = lseek(fd, (off_t)off, SEEK_DATA);
	close(fd);
	return d >= 0 && (uint64_t)d < off + len;
}

/* ---- tests ---- */

static void new_errors(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	struct blkback bb;
	struct stat sb;

	assert_int_equal(swapstore_new(NULL, CLIENT, CAP, f->path, &bb), -EINVAL);
	assert_int_equal(swapstore_new(f->s, CLIENT, CAP, NULL, &bb), -EINVAL);
	assert_int_equal(swapstore_new(f->s, CLIENT, CAP, f->path, NULL), -EINVAL);
	assert_int_equal(swapstore_new(f->s, CLIENT, 0, f->path, &bb), -EINVAL);
	assert_int_equal(swapstore_new(f->s, CLIENT, PG + SEC, f->path, &bb),
			 -EINVAL);
	assert_int_equal(swapstore_new(f->s, CLIENT, SWAPSTORE_MAX_BYTES + PG,
				       f->path, &bb), -EINVAL);
	assert_int_equal(swapstore_new(f->s, 99, CAP, f->path, &bb), -ESRCH);
	assert_int_equal(stat(f->path, &sb), -1);

	/* An existing file is never adopted (it would be unlinked). */
	fx_open(f);
	assert_int_equal(swapstore_new(f->s, CLIENT, CAP, f->path, &bb), -EEXIST);
	assert_int_equal(stat(f->path, &sb), 0);

	/* The failed attempts left no pool behind. */
	assert_int_equal(swapstore_stats(NULL, &s), -EINVAL);
	assert_int_equal(swapstore_stats(f->ss, NULL), -EINVAL);
	assert_null(swapstore_from(NULL));
	memset(&bb, 0, sizeof(bb));
	assert_null(swapstore_from(&bb));
	fx_check(f);
}

static void new_alloc_failure_leaves_nothing(void **state)
{
	struct fx *f = *state;
	struct tmem_store_stats ss;
	struct stat sb;

	assert_int_equal(tmem_debug_fail_alloc(f->s, 1), 0);
	assert_int_equal(swapstore_new(f->s, CLIENT, CAP, f->path, &f->bb),
			 -ENOMEM);
	assert_int_equal(stat(f->path, &sb), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(tmem_store_stats(f->s, &ss), 0);
	assert_int_equal(ss.pools, 0);
	assert_int_equal(tmem_check(f->s), 0);
	fx_open(f);	/* disarmed by the one injection */
}

static void fresh_device(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s = st(f);
	struct stat sb;

	assert_ptr_equal(f->bb.be, f->ss);
	assert_int_equal(f->bb.capacity_bytes, CAP);
	assert_false(f->bb.read_only);
	assert_string_equal(f->bb.serial, "ebb-swap");
	assert_null(f->bb.ops->flush);
	assert_non_null(f->bb.ops->discard);
	assert_non_null(f->bb.ops->write_zeroes);
	assert_int_equal(s.capacity_pages, NPAGES);
	assert_int_equal(s.tmem_pages + s.file_pages + s.lost_pages, 0);

	/* Sparse, private, capacity-sized scratch file. */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_size, CAP);
	assert_int_equal(sb.st_blocks, 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	verify_all(f);
}

static void page_roundtrip_and_zero_pages(void **state)
{
	struct fx *f = *state;
	uint8_t page[PG];
	struct swapstore_stats s;

	fill_random(page, PG);
	assert_int_equal(dev_write(f, 3 * PG, page, PG), 0);
	memcpy(f->ref + 3 * PG, page, PG);
	s = st(f);
	assert_int_equal(s.tmem_pages, 1);
	assert_int_equal(s.file_pages, 0);
	verify_all(f);

	/* A zero page is NONE: no tmem record at all. */
	memset(page, 0, PG);
	assert_int_equal(dev_write(f, 3 * PG, page, PG), 0);
	memset(f->ref + 3 * PG, 0, PG);
	s = st(f);
	assert_int_equal(s.tmem_pages, 0);
	assert_int_equal(s.zero_pages_written, 1);
	assert_int_equal(cst(f).persistent_pages, 0);
	verify_all(f);

	/* Rewriting the same content is free and stays one page. */
	fill_random(page, PG);
	assert_int_equal(dev_write(f, 0, page, PG), 0);
	assert_int_equal(dev_write(f, 0, page, PG), 0);
	memcpy(f->ref, page, PG);
	assert_int_equal(st(f).tmem_pages, 1);
	verify_all(f);
	assert_int_equal(file_blocks_bytes(f), 0);
	fx_check(f);
}

static void random_roundtrip(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	unsigned i;

	for (i = 0; i < 4000; i++) {
		uint64_t off = blkio_rnd(NPAGES * (PG / SEC)) * SEC;
		uint64_t len = (1 + blkio_rnd(24 * (PG / SEC))) * SEC;
		uint8_t *out;

		if (off + len > CAP)
			len = CAP - off;
		/* Phases of 500 ops: tight (most puts refused), then room. */
		if (i % 1000 == 0)
			f->hook.limit = f->hook.total + 40 * 1024;
		if (i % 1000 == 500)
			f->hook.limit = -1;

		switch (blkio_rnd(10)) {
		case 0:
			assert_int_equal(f->bb.ops->discard(f->bb.be, off, len), 0);
			/* Whole pages drop to zeros; partial edges stay. */
			{
				uint64_t a = (off + PG - 1) / PG * PG;
				uint64_t b = (off + len) / PG * PG;

				if (a < b)
					memset(f->ref + a, 0, b - a);
			}
			break;
		case 1:
			assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, off,
					 len, blkio_rnd(2)), 0);
			memset(f->ref + off, 0, len);
			break;
		case 2: case 3: case 4:
			out = malloc(len);
			assert_non_null(out);
			assert_int_equal(dev_read(f, off, out, len), 0);
			assert_memory_equal(out, f->ref + off, len);
			free(out);
			break;
		default:
			write_ref(f, off, len);
			break;
		}
		if (i % 97 == 0)
			fx_check(f);
	}
	f->hook.limit = -1;
	verify_all(f);
	fx_check(f);
	s = st(f);
	/* The tight phases must really have used the file. */
	assert_true(s.refused_puts > 0);
	assert_true(s.file_write_bytes > 0);
	assert_true(s.punched_bytes > 0);
	assert_int_equal(s.lost_pages, 0);
	assert_int_equal(s.put_errors, 0);
	assert_int_equal(s.io_errors, 0);
}

static void refused_puts_go_to_file_and_back(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	const unsigned n = 64;

	/* Room for about a third of 64 incompressible pages. */
	f->hook.limit = 20 * (PG + 256);
	fill_random(f->ref, n * PG);
	assert_int_equal(dev_write(f, 0, f->ref, n * PG), 0);
	s = st(f);
	assert_int_equal(s.tmem_pages + s.file_pages, n);
	assert_true(s.file_pages > 0);
	assert_true(s.tmem_pages > 0);
	/* One refusal; the rest of the request backs off to the file. */
	assert_int_equal(s.refused_puts, 1);
	assert_int_equal(s.backoff_pages, s.file_pages - 1);
	assert_int_equal(s.file_write_bytes, s.file_pages * PG);
	assert_int_equal(s.lost_pages, 0);
	assert_true(file_blocks_bytes(f) >= s.file_pages * PG);
	assert_true(file_has_data(f, 0, n * PG));
	fx_check(f);	/* pool holds exactly the TMEM pages: no stale copies */
	verify_all(f);

	/* Room returns: rewriting moves every page back, the file is
	 * punched empty. */
	f->hook.limit = -1;
	assert_int_equal(dev_write(f, 0, f->ref, n * PG), 0);
	s = st(f);
	assert_int_equal(s.tmem_pages, n);
	assert_int_equal(s.file_pages, 0);
	assert_true(s.punched_bytes >= s.file_write_bytes);
	assert_int_equal(file_blocks_bytes(f), 0);
	assert_false(file_has_data(f, 0, CAP));
	fx_check(f);
	verify_all(f);
}

static void refusal_backs_off_for_the_rest_of_the_request(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	const unsigned n = 32;

	/* Every page in the pool, compressible. */
	memset(f->ref, 0x41, n * PG);
	for (unsigned i = 0; i < n; i++)
		f->ref[i * PG] = (uint8_t)i;
	assert_int_equal(dev_write(f, 0, f->ref, n * PG), 0);
	assert_int_equal(st(f).tmem_pages, n);

	/* No growth allowed: rewriting them incompressible is refused at the
	 * first page, and the other 31 go to the file without a put.  Their
	 * old pool copies must go too (fx_check: the pool holds exactly the
	 * TMEM pages), and every page reads back as the new content. */
	f->hook.limit = f->hook.total;
	fill_random(f->ref, n * PG);
	assert_int_equal(dev_write(f, 0, f->ref, n * PG), 0);
	s = st(f);
	assert_int_equal(s.refused_puts, 1);
	assert_int_equal(s.backoff_pages, n - 1);
	assert_int_equal(s.tmem_pages, 0);
	assert_int_equal(s.file_pages, n);
	assert_int_equal(cst(f).persistent_pages, 0);
	fx_check(f);
	verify_all(f);

	/* The next request tries the pool again. */
	f->hook.limit = -1;
	assert_int_equal(dev_write(f, 0, f->ref, PG), 0);
	s = st(f);
	assert_int_equal(s.refused_puts, 1);
	assert_int_equal(s.tmem_pages, 1);
	fx_check(f);
	verify_all(f);
}

static void refused_replace_leaves_no_stale_copy(void **state)
{
	struct fx *f = *state;
	uint8_t a[PG], b[PG], c[PG];

	/* A and C compress well, B not at all: replacing A with B is growth
	 * the hook can refuse (a same-size replacement nets 0 and passes). */
	memset(a, 0x5a, PG);
	fill_random(b, PG);
	memset(c, 0x33, PG);
	assert_int_equal(dev_write(f, 5 * PG, a, PG), 0);
	assert_int_equal(cst(f).persistent_pages, 1);

	/* Refused: B goes to the file and A is gone from tmem. */
	f->hook.limit = f->hook.total;
	assert_int_equal(dev_write(f, 5 * PG, b, PG), 0);
	memcpy(f->ref + 5 * PG, b, PG);
	assert_int_equal(cst(f).persistent_pages, 0);
	assert_int_equal(st(f).file_pages, 1);
	assert_true(file_has_data(f, 5 * PG, PG));
	verify_all(f);
	fx_check(f);

	/* Room: C goes to tmem and the file copy of B is punched. */
	f->hook.limit = -1;
	assert_int_equal(dev_write(f, 5 * PG, c, PG), 0);
	memcpy(f->ref + 5 * PG, c, PG);
	assert_int_equal(st(f).file_pages, 0);
	assert_false(file_has_data(f, 0, CAP));
	verify_all(f);

	/* Refused sub-page write onto a TMEM page: read-modify-write lands
	 * the merged page in the file, nothing left in tmem. */
	f->hook.limit = f->hook.total;
	fill_random(a, SEC);
	assert_int_equal(dev_write(f, 5 * PG + 3 * SEC, a, SEC), 0);
	memcpy(f->ref + 5 * PG + 3 * SEC, a, SEC);
	assert_int_equal(cst(f).persistent_pages, 0);
	assert_int_equal(st(f).file_pages, 1);
	verify_all(f);
	fx_check(f);
}

static void subpage_writes_in_every_state(void **state)
{
	struct fx *f = *state;
	unsigned page, k;

	/* Page 0 NONE, page 1 TMEM, page 2 FILE. */
	write_ref(f, 1 * PG, PG);
	f->hook.limit = 0;
	fill_random(f->ref + 2 * PG, PG);
	assert_int_equal(dev_write(f, 2 * PG, f->ref + 2 * PG, PG), 0);
	assert_int_equal(st(f).file_pages, 1);
	f->hook.limit = -1;

	for (page = 0; page < 3; page++) {
		for (k = 0; k < 8; k++) {
			uint64_t off = page * PG + blkio_rnd(PG / SEC) * SEC;
			uint64_t len = SEC * (1 + blkio_rnd((page * PG + PG - off) / SEC));

			write_ref(f, off, len);
			verify(f, 0, 4 * PG);
		}
	}
	/* Straddling page boundaries with odd sector counts. */
	write_ref(f, PG - SEC, 3 * SEC);
	write_ref(f, 2 * PG - 5 * SEC, PG + 7 * SEC);
	verify_all(f);
	fx_check(f);
}

/* Pages 0..15: even ones in tmem, odd ones in the file. */
static void mixed_pages(struct fx *f)
{
	unsigned i;

	for (i = 0; i < 16; i++) {
		f->hook.limit = i % 2 ? 0 : -1;
		fill_random(f->ref + i * PG, PG);
		assert_int_equal(dev_write(f, i * PG, f->ref + i * PG, PG), 0);
	}
	f->hook.limit = -1;
	assert_int_equal(st(f).tmem_pages, 8);
	assert_int_equal(st(f).file_pages, 8);
}

static void discard_drops_whole_pages(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;

	mixed_pages(f);
	/* [1.5 pages, 14.25 pages): pages 2..13 drop, 1 and 14 stay. */
	assert_int_equal(f->bb.ops->discard(f->bb.be, PG + PG / 2,
					    12 * PG + PG / 2 + PG / 4), 0);
	memset(f->ref + 2 * PG, 0, 12 * PG);
	verify_all(f);
	s = st(f);
	assert_int_equal(s.tmem_pages, 2);	/* 0, 14 */
	assert_int_equal(s.file_pages, 2);	/* 1, 15 */
	assert_false(file_has_data(f, 2 * PG, 12 * PG));
	assert_true(file_has_data(f, 15 * PG, PG));
	fx_check(f);

	/* Inside one page: nothing to drop, nothing changes. */
	assert_int_equal(f->bb.ops->discard(f->bb.be, PG + SEC, SEC), 0);
	verify_all(f);
	/* The whole device. */
	assert_int_equal(f->bb.ops->discard(f->bb.be, 0, CAP), 0);
	memset(f->ref, 0, CAP);
	verify_all(f);
	s = st(f);
	assert_int_equal(s.tmem_pages + s.file_pages, 0);
	assert_int_equal(file_blocks_bytes(f), 0);
	fx_check(f);
}

static void write_zeroes_zeroes_everything(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;

	mixed_pages(f);
	/* Unaligned both ends: the edges are zeroed by read-modify-write. */
	assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, PG + 3 * SEC,
						 10 * PG, false), 0);
	memset(f->ref + PG + 3 * SEC, 0, 10 * PG);
	verify_all(f);
	s = st(f);
	assert_int_equal(s.tmem_pages + s.file_pages, 16 - 9);
	fx_check(f);

	/* Inside one page, and across one boundary without a whole page. */
	assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, 12 * PG + SEC,
						 2 * SEC, true), 0);
	memset(f->ref + 12 * PG + SEC, 0, 2 * SEC);
	assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, 14 * PG - SEC,
						 2 * SEC, true), 0);
	memset(f->ref + 14 * PG - SEC, 0, 2 * SEC);
	verify_all(f);

	/* Everything: back to an empty device and file. */
	assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, 0, CAP, false), 0);
	memset(f->ref, 0, CAP);
	verify_all(f);
	s = st(f);
	assert_int_equal(s.tmem_pages + s.file_pages, 0);
	assert_int_equal(file_blocks_bytes(f), 0);
	fx_check(f);
}

static void destroy_unlinks_and_releases(void **state)
{
	struct fx *f = *state;
	struct tmem_store_stats ss;
	struct tmem_stats c;
	struct stat sb;

	mixed_pages(f);
	assert_int_equal(stat(f->path, &sb), 0);
	f->bb.ops->destroy(f->bb.be);
	f->ss = NULL;
	assert_int_equal(stat(f->path, &sb), -1);
	assert_int_equal(errno, ENOENT);
	c = cst(f);
	assert_int_equal(c.persistent_pages, 0);
	assert_int_equal(c.charged_bytes, 0);
	assert_int_equal(f->hook.total, 0);
	assert_int_equal(tmem_store_stats(f->s, &ss), 0);
	assert_int_equal(ss.pools, 0);
	assert_int_equal(tmem_check(f->s), 0);

	/* The path is free again, and a new device starts empty. */
	fx_open(f);
	memset(f->ref, 0, CAP);
	verify_all(f);
}

static void alloc_failures_never_lose_data(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	struct tmem_debug d;
	uint64_t nth;

	for (nth = 1; nth <= 120; nth++) {
		uint64_t off = blkio_rnd(NPAGES - 16) * PG + blkio_rnd(PG / SEC) * SEC;
		uint64_t len = (1 + blkio_rnd(16 * (PG / SEC) - 8)) * SEC;

		assert_int_equal(tmem_debug_fail_alloc(f->s, nth), 0);
		write_ref(f, off, len);
		assert_int_equal(tmem_debug_fail_alloc(f->s, 0), 0);
		verify(f, off & ~(uint64_t)(PG - 1), 17 * PG);
		fx_check(f);
	}
	verify_all(f);
	assert_int_equal(tmem_debug_get(f->s, &d), 0);
	assert_true(d.injected > 0);
	s = st(f);
	assert_true(s.refused_puts > 0);	/* -ENOMEM counts as refused */
	assert_true(s.file_write_bytes > 0);
	assert_int_equal(s.lost_pages, 0);
}

static void file_write_error_loses_only_unwritten_pages(void **state)
{
	struct fx *f = *state;
	struct rlimit old, lim;
	struct swapstore_stats s;
	uint8_t page[PG];
	void (*oldsig)(int);
	unsigned i;

	/* Everything to the file, and the file may not grow past 8 pages:
	 * pwrite at or beyond that offset fails with EFBIG. */
	f->hook.limit = 0;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 8 * PG;
	oldsig = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	fill_random(f->buf, 16 * PG);
	{
		struct iovec v = { f->buf, 16 * PG };
		int rc = f->bb.ops->write(f->bb.be, 0, &v, 1);

		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		signal(SIGXFSZ, oldsig);
		assert_int_equal(rc, -EFBIG);
	}
	memcpy(f->ref, f->buf, 8 * PG);	/* these made it */
	s = st(f);
	assert_int_equal(s.file_pages, 8);
	assert_int_equal(s.lost_pages, 8);
	assert_true(s.io_errors > 0);
	verify(f, 0, 8 * PG);
	for (i = 8; i < 16; i++)
		assert_int_equal(dev_read(f, i * PG, page, SEC), -EIO);
	/* A sub-page write cannot rebuild a lost page... */
	assert_int_equal(dev_write(f, 9 * PG, page, SEC), -EIO);
	fx_check(f);

	/* ...a whole-page write, a discard or write_zeroes can. */
	f->hook.limit = -1;
	write_ref(f, 8 * PG, 2 * PG);
	assert_int_equal(f->bb.ops->discard(f->bb.be, 10 * PG, 3 * PG), 0);
	assert_int_equal(f->bb.ops->write_zeroes(f->bb.be, 13 * PG, 3 * PG,
						 false), 0);
	assert_int_equal(st(f).lost_pages, 0);
	verify_all(f);
	fx_check(f);
}

static void long_runs_use_few_syscalls(void **state)
{
	struct fx *f = *state;
	struct swapstore_stats s;
	const unsigned n = 100;

	f->hook.limit = 0;
	fill_random(f->ref + PG, n * PG);
	assert_int_equal(dev_write(f, PG, f->ref + PG, n * PG), 0);
	s = st(f);
	assert_int_equal(s.file_pages, n);
	assert_int_equal(s.file_write_bytes, n * PG);
	verify(f, 0, (n + 2) * PG);
	assert_int_equal(st(f).file_read_bytes, n * PG);
	/* Unaligned read inside the run: only the asked bytes are read. */
	verify(f, PG + 5 * SEC, 3 * PG);
	assert_int_equal(st(f).file_read_bytes, n * PG + 3 * PG);
	verify_all(f);
	fx_check(f);
}

/* Pages in the backing file leave the host page cache: every file I/O
 * drops the clean ones and starts writeback of the dirty ones.  (On tmpfs
 * the page cache is the file: nothing to check.) */
static void file_pages_leave_the_host_page_cache(void **state)
{
	struct fx *f = *state;
	const unsigned n = 100;
	int fd;

	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	if (blkio_on_tmpfs(fd)) {
		print_message("backing file on tmpfs: page cache is the file\n");
		close(fd);
		return;
	}
	f->hook.limit = 0;
	fill_random(f->ref, n * PG);
	assert_int_equal(dev_write(f, 0, f->ref, n * PG), 0);
	assert_int_equal(st(f).file_pages, n);
	/* Written back (the device does not wait for that itself), the
	 * pages are clean, so the next I/O drops every one. */
	assert_int_equal(fdatasync(fd), 0);
	verify(f, 0, 4 * PG);
	assert_int_equal(blkio_pages_cached(fd, 0, n), 0);

	write_ref(f, (n + 10) * PG, 4 * PG);
	assert_int_equal(fdatasync(fd), 0);
	verify(f, (n - 1) * PG, PG);
	assert_int_equal(blkio_pages_cached(fd, 0, n + 14), 0);
	assert_int_equal(close(fd), 0);
	verify_all(f);
	fx_check(f);
}

static void iovec_edge_cases(void **state)
{
	struct fx *f = *state;
	struct iovec v[6];
	uint8_t a[2 * PG], out[2 * PG];

	fill_random(a, sizeof(a));
	/* Empty segments around a whole-page write. */
	v[0] = (struct iovec){ a, 0 };
	v[1] = (struct iovec){ a, PG };
	v[2] = (struct iovec){ NULL, 0 };
	assert_int_equal(f->bb.ops->write(f->bb.be, 0, v, 3), 0);
	/* One byte, then the rest of two pages. */
	v[0] = (struct iovec){ a, 1 };
	v[1] = (struct iovec){ a + 1, 2 * PG - 1 };
	assert_int_equal(f->bb.ops->write(f->bb.be, 4 * PG, v, 2), 0);
	memcpy(f->ref, a, PG);
	memcpy(f->ref + 4 * PG, a, 2 * PG);

	/* Read a TMEM page split mid-page (bounce) and whole (direct). */
	memset(out, 0, sizeof(out));
	v[0] = (struct iovec){ out, 100 };
	v[1] = (struct iovec){ NULL, 0 };
	v[2] = (struct iovec){ out + 100, PG - 100 };
	v[3] = (struct iovec){ out + PG, PG };
	assert_int_equal(f->bb.ops->read(f->bb.be, 4 * PG, v, 4), 0);
	assert_memory_equal(out, a, 2 * PG);
	/* Zero-length request. */
	assert_int_equal(f->bb.ops->read(f->bb.be, CAP, v, 0), 0);
	assert_int_equal(f->bb.ops->write(f->bb.be, 0, v, 0), 0);
	verify_all(f);
	fx_check(f);
}

struct reader {
	struct swapstore *ss;
	volatile bool stop;
	unsigned snapshots;
};

static void *stats_reader(void *arg)
{
	struct reader *r = arg;
	struct swapstore_stats s;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		if (swapstore_stats(r->ss, &s) || s.capacity_pages != NPAGES)
			return arg;
		r->snapshots++;
	}
	return NULL;
}

static void stats_from_another_thread(void **state)
{
	struct fx *f = *state;
	struct reader r = { .ss = f->ss };
	pthread_t th;
	void *ret;
	unsigned i;

	assert_int_equal(pthread_create(&th, NULL, stats_reader, &r), 0);
	for (i = 0; i < 200; i++) {
		f->hook.limit = i % 3 ? -1 : 0;
		write_ref(f, blkio_rnd(NPAGES - 4) * PG, 4 * PG);
	}
	__atomic_store_n(&r.stop, true, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_null(ret);
	f->hook.limit = -1;
	verify_all(f);
	fx_check(f);
}

#define T(fn)	cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TC(fn)	cmocka_unit_test_setup_teardown(fn, setup_closed, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TC(new_errors),
		TC(new_alloc_failure_leaves_nothing),
		T(fresh_device),
		T(page_roundtrip_and_zero_pages),
		T(random_roundtrip),
		T(refused_puts_go_to_file_and_back),
		T(refusal_backs_off_for_the_rest_of_the_request),
		T(refused_replace_leaves_no_stale_copy),
		T(subpage_writes_in_every_state),
		T(discard_drops_whole_pages),
		T(write_zeroes_zeroes_everything),
		T(destroy_unlinks_and_releases),
		T(alloc_failures_never_lose_data),
		T(file_write_error_loses_only_unwritten_pages),
		T(long_runs_use_few_syscalls),
		T(file_pages_leave_the_host_page_cache),
		T(iovec_edge_cases),
		T(stats_from_another_thread),
	};

	blkio_seed(0x2545f4914f6cdd1dull);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
