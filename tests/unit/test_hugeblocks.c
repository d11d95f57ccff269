/*
 * Unit tests for hugeblocks (src/vhost/hugeblocks.h): whole blocks punched
 * at once, 4 KiB leftovers kept per block until it is entirely free, pages
 * the guest takes back while their block waits, timeouts and host
 * pressure, reported ranges that cannot wait, hostile ranges; and the
 * SEEK_DATA/SEEK_HOLE block scan on a real tmpfs file.
 *
 * The RAM file is simulated: one flag per 4 KiB page (allocated or hole),
 * every punch recorded, so each test can say exactly what was punched.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "hugeblocks.h"

#define BLK	HUGEBLOCK_BYTES
#define PG	HUGEBLOCK_PAGE
#define NBLK	8
#define FILE_BYTES	(NBLK * BLK)
#define WAIT_MS	1000

struct fake_file {
	uint8_t hole[FILE_BYTES / PG];	/* 1: page punched */
	unsigned punches;		/* punch calls */
	uint64_t last_off, last_len;	/* the latest punch */
	int fail;			/* next punch returns this */
};

static int fake_punch(void *opaque, uint64_t off, uint64_t len)
{
	struct fake_file *f = opaque;

	assert_true(off % PG == 0 && len % PG == 0 && off + len <= FILE_BYTES);
	if (f->fail) {
		int rc = f->fail;

		f->fail = 0;
		return rc;
	}
	f->punches++;
	f->last_off = off;
	f->last_len = len;
	memset(f->hole + off / PG, 1, len / PG);
	return 0;
}

static bool fake_has_hole(void *opaque, uint64_t off)
{
	struct fake_file *f = opaque;

	for (uint64_t p = off / PG; p < (off + BLK) / PG; p++)
		if (f->hole[p])
			return true;
	return false;
}

static const struct hugeblocks_ops fake_ops = {
	.punch = fake_punch,
	.has_hole = fake_has_hole,
};

struct fixture {
	struct fake_file f;
	struct hugeblocks *hb;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(hugeblocks_new(FILE_BYTES, WAIT_MS, &fake_ops, &fx->f,
					&fx->hb), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	hugeblocks_free(fx->hb);
	free(fx);
	return 0;
}

static struct hugeblocks_info info_of(struct fixture *fx)
{
	struct hugeblocks_info i;

	hugeblocks_get_info(fx->hb, &i);
	return i;
}

static unsigned holes_in(const struct fake_file *f, uint64_t off, uint64_t len)
{
	unsigned n = 0;

	for (uint64_t p = off / PG; p < (off + len) / PG; p++)
		n += f->hole[p];
	return n;
}

/* Rule 1: a range covering blocks 1 and 2 whole, with 4 KiB leftovers in
 * blocks 0 and 3: two whole-block punches, the leftovers wait. */
static void whole_blocks_punched_at_once(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	assert_int_equal(hugeblocks_give(fx->hb, BLK - 3 * PG, 2 * BLK + 5 * PG, 10), 0);
	assert_int_equal(fx->f.punches, 2);
	assert_int_equal(holes_in(&fx->f, BLK, 2 * BLK), 2 * BLK / PG);
	assert_int_equal(holes_in(&fx->f, 0, BLK), 0);
	assert_int_equal(holes_in(&fx->f, 3 * BLK, BLK), 0);
	i = info_of(fx);
	assert_int_equal(i.whole_blocks, 2);
	assert_int_equal(i.pending_bytes, 5 * PG);
	assert_int_equal(i.pending_blocks, 2);
}

/* Rule 2: a block freed page by page in scattered order is punched once,
 * whole, when its last page comes. */
static void partial_block_punched_once_full(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	for (uint64_t k = 0; k < HUGEBLOCK_PAGES; k++) {
		uint64_t p = (k * 37) % HUGEBLOCK_PAGES;	/* 37 is coprime */

		assert_int_equal(hugeblocks_give(fx->hb, 4 * BLK + p * PG, PG, 10), 0);
		if (k + 1 < HUGEBLOCK_PAGES)
			assert_int_equal(fx->f.punches, 0);
	}
	assert_int_equal(fx->f.punches, 1);
	assert_int_equal(fx->f.last_off, 4 * BLK);
	assert_int_equal(fx->f.last_len, BLK);
	i = info_of(fx);
	assert_int_equal(i.whole_blocks, 1);
	assert_int_equal(i.completed_blocks, 1);
	assert_int_equal(i.pending_bytes, 0);
	assert_int_equal(i.pending_blocks, 0);
	/* The same page twice counts once. */
	assert_int_equal(hugeblocks_give(fx->hb, 5 * BLK, PG, 10), 0);
	assert_int_equal(hugeblocks_give(fx->hb, 5 * BLK, PG, 10), 0);
	assert_int_equal(info_of(fx).pending_bytes, PG);
}

/* The guest takes back part of a waiting block (deflate): those pages
 * leave the bitmap, so the block is not complete until they come again,
 * and they are never punched while the guest has them. */
static void reuse_while_waiting(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	assert_int_equal(hugeblocks_give(fx->hb, 2 * BLK, BLK - PG, 10), 0);
	assert_int_equal(info_of(fx).pending_bytes, BLK - PG);
	hugeblocks_reuse(fx->hb, 2 * BLK + 100 * PG, 10 * PG);
	i = info_of(fx);
	assert_int_equal(i.pending_bytes, BLK - 11 * PG);
	/* The last page: still 10 short, nothing punched. */
	assert_int_equal(hugeblocks_give(fx->hb, 3 * BLK - PG, PG, 20), 0);
	assert_int_equal(fx->f.punches, 0);
	/* Expiry punches what waits, never the pages the guest took. */
	hugeblocks_expire(fx->hb, 10 + WAIT_MS, false, NULL);
	assert_int_equal(holes_in(&fx->f, 2 * BLK + 100 * PG, 10 * PG), 0);
	assert_int_equal(holes_in(&fx->f, 2 * BLK, BLK), HUGEBLOCK_PAGES - 10);
	i = info_of(fx);
	assert_int_equal(i.expired_bytes, BLK - 10 * PG);
	assert_int_equal(i.pending_bytes, 0);
	/* A reuse of a whole waiting block empties it. */
	assert_int_equal(hugeblocks_give(fx->hb, 6 * BLK, 3 * PG, 30), 0);
	hugeblocks_reuse(fx->hb, 6 * BLK, 3 * PG);
	i = info_of(fx);
	assert_int_equal(i.pending_blocks, 0);
	hugeblocks_expire(fx->hb, 1 << 30, true, NULL);
	assert_int_equal(holes_in(&fx->f, 6 * BLK, BLK), 0);
}

/* Rule 4: a block waits wait_ms from its first pending page, not its
 * latest; host pressure (all) takes every block at once. */
static void timeouts(void **state)
{
	struct fixture *fx = *state;
	uint64_t bytes = 0;

	assert_int_equal(hugeblocks_give(fx->hb, 0, PG, 100), 0);
	assert_int_equal(hugeblocks_give(fx->hb, PG, PG, 900), 0);
	assert_int_equal(hugeblocks_give(fx->hb, BLK, 2 * PG, 500), 0);
	hugeblocks_expire(fx->hb, 100 + WAIT_MS - 1, false, &bytes);
	assert_int_equal(bytes, 0);
	hugeblocks_expire(fx->hb, 100 + WAIT_MS, false, &bytes);
	/* Block 0's two pages went as one run; block 1 still waits. */
	assert_int_equal(bytes, 2 * PG);
	assert_int_equal(fx->f.punches, 1);
	assert_int_equal(info_of(fx).pending_bytes, 2 * PG);
	hugeblocks_expire(fx->hb, 0, true, &bytes);
	assert_int_equal(bytes, 4 * PG);
	assert_int_equal(info_of(fx).pending_blocks, 0);
	/* A wait that starts at time 0 still ends. */
	assert_int_equal(hugeblocks_give(fx->hb, 3 * BLK, PG, 0), 0);
	hugeblocks_expire(fx->hb, WAIT_MS + 1, false, &bytes);
	assert_int_equal(bytes, 5 * PG);
}

/* Rule 3: a block that already has a hole is 4 KiB pages anyway: its
 * leftovers, and what waited there, go at once. */
static void holey_block_not_kept(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	fx->f.hole[7 * HUGEBLOCK_PAGES + 3] = 1;	/* guest never touched it */
	assert_int_equal(hugeblocks_give(fx->hb, 7 * BLK + 10 * PG, 2 * PG, 5), 0);
	i = info_of(fx);
	assert_int_equal(i.pending_bytes, 0);
	assert_int_equal(i.holey_bytes, 2 * PG);
	assert_int_equal(holes_in(&fx->f, 7 * BLK, BLK), 3);
}

/* A reported range is the guest's again when its buffer returns: its
 * leftovers are punched at once, unless with the balloon's pages waiting
 * there they free the whole block. */
static void report_cannot_wait(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	assert_int_equal(hugeblocks_report(fx->hb, 2 * BLK, BLK), 0);
	assert_int_equal(info_of(fx).whole_blocks, 1);
	assert_int_equal(hugeblocks_report(fx->hb, 0, 4 * PG), 0);
	i = info_of(fx);
	assert_int_equal(i.report_split_bytes, 4 * PG);
	assert_int_equal(i.pending_bytes, 0);
	/* Balloon holds the first half of block 1, the report the rest. */
	assert_int_equal(hugeblocks_give(fx->hb, BLK, BLK / 2, 5), 0);
	assert_int_equal(hugeblocks_report(fx->hb, BLK + BLK / 2, BLK / 2), 0);
	i = info_of(fx);
	assert_int_equal(i.completed_blocks, 1);
	assert_int_equal(i.whole_blocks, 2);
	assert_int_equal(i.pending_bytes, 0);
	assert_int_equal(fx->f.last_off, BLK);
	assert_int_equal(fx->f.last_len, BLK);
}

/* Hostile or broken ranges are refused whole, before anything changes. */
static void bad_ranges(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(hugeblocks_give(fx->hb, 1, PG, 0), -EINVAL);
	assert_int_equal(hugeblocks_give(fx->hb, 0, PG + 1, 0), -EINVAL);
	assert_int_equal(hugeblocks_give(fx->hb, 0, 0, 0), -EINVAL);
	assert_int_equal(hugeblocks_give(fx->hb, FILE_BYTES - PG, 2 * PG, 0), -EINVAL);
	assert_int_equal(hugeblocks_give(fx->hb, UINT64_MAX - PG + 1, PG, 0), -EINVAL);
	assert_int_equal(hugeblocks_report(fx->hb, FILE_BYTES, PG), -EINVAL);
	hugeblocks_reuse(fx->hb, UINT64_MAX - PG + 1, 2 * PG);
	hugeblocks_reuse(fx->hb, FILE_BYTES, PG);
	assert_int_equal(fx->f.punches, 0);
	assert_int_equal(info_of(fx).pending_bytes, 0);
}

/* A failed punch is counted and the block forgotten, not retried forever;
 * forget drops waiting pages without punching them. */
static void failures_and_forget(void **state)
{
	struct fixture *fx = *state;
	struct hugeblocks_info i;

	fx->f.fail = -EIO;
	assert_int_equal(hugeblocks_give(fx->hb, 0, BLK, 0), 0);
	i = info_of(fx);
	assert_int_equal(i.failed_punches, 1);
	assert_int_equal(i.punched_bytes, 0);
	assert_int_equal(hugeblocks_give(fx->hb, BLK, 5 * PG, 0), 0);
	hugeblocks_forget(fx->hb);
	hugeblocks_expire(fx->hb, 0, true, NULL);
	assert_int_equal(fx->f.punches, 0);
	assert_int_equal(info_of(fx).pending_blocks, 0);
}

/* A file whose size is not whole blocks: its tail is no huge page and is
 * punched at once. */
static void tail_punched_at_once(void **state)
{
	struct fake_file *f = calloc(1, sizeof(*f));
	struct hugeblocks *hb;

	(void)state;
	assert_non_null(f);
	assert_int_equal(hugeblocks_new(BLK + 8 * PG, WAIT_MS, &fake_ops, f, &hb), 0);
	assert_int_equal(hugeblocks_give(hb, BLK + PG, PG, 0), 0);
	assert_int_equal(f->punches, 1);
	assert_int_equal(hugeblocks_give(hb, BLK - PG, 2 * PG, 0), 0);
	assert_int_equal(f->punches, 2);
	hugeblocks_free(hb);
	free(f);
}

/* Write [off, off+len) with data: fallocated pages that were never
 * written are holes to SEEK_DATA on tmpfs. */
static void fill(int fd, uint64_t off, uint64_t len)
{
	static char page[PG];

	memset(page, 1, sizeof(page));
	for (uint64_t o = off; o < off + len; o += PG)
		assert_int_equal(pwrite(fd, page, PG, (off_t)o), (ssize_t)PG);
}

/* The block scan on a real tmpfs file: intact, shattered, empty. */
static void scan_real_file(void **state)
{
	int fd = memfd_create("hugeblocks-test", 0);
	uint64_t intact, partial;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 6 * BLK + 8 * PG), 0);
	assert_int_equal(hugeblocks_scan_file(fd, 6 * BLK + 8 * PG, &intact, &partial), 0);
	assert_int_equal(intact + partial, 0);
	/* Blocks 0-2 whole; 1 then loses a page; 4 one page; tail whole. */
	fill(fd, 0, 3 * BLK);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   BLK + 5 * PG, PG), 0);
	fill(fd, 4 * BLK + 7 * PG, PG);
	fill(fd, 6 * BLK, 8 * PG);
	assert_int_equal(hugeblocks_scan_file(fd, 6 * BLK + 8 * PG, &intact, &partial), 0);
	assert_int_equal(intact, 3);	/* 0, 2, the tail */
	assert_int_equal(partial, 2);	/* 1, 4 */
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(whole_blocks_punched_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(partial_block_punched_once_full, setup, teardown),
		cmocka_unit_test_setup_teardown(reuse_while_waiting, setup, teardown),
		cmocka_unit_test_setup_teardown(timeouts, setup, teardown),
		cmocka_unit_test_setup_teardown(holey_block_not_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(report_cannot_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(failures_and_forget, setup, teardown),
		cmocka_unit_test(tail_punched_at_once),
		cmocka_unit_test(scan_real_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
