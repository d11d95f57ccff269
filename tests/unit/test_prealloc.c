/*
 * Tests for prealloc: populating a real memfd on the worker thread while
 * the pool is charged, refusal by the pool part way (the late failure of a
 * launch without a claim), and cancellation.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "loop.h"
#include "pool.h"
#include "prealloc.h"

#define MiB (1ull << 20)
#define PAGES(b) ((b) / POOL_PAGE_SIZE)

struct run {
	struct loop *loop;
	int calls;
	int result;
};

static void on_done(void *opaque, int result)
{
	struct run *r = opaque;

	r->calls++;
	r->result = result;
	loop_stop(r->loop);
}

static void on_timeout(void *opaque)
{
	loop_stop(opaque);
}

static uint64_t allocated(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Run @len of prealloc on a fresh @file_bytes memfd for guest 1 of @pool;
 * returns the final status. */
static struct prealloc_status run_one(struct pool *pool, uint64_t file_bytes,
				      uint64_t len, int *fd_out, struct run *r)
{
	struct prealloc_status st;
	struct prealloc *p;
	struct loop_timer *t;
	int fd = memfd_create("ram", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)file_bytes), 0);
	assert_int_equal(loop_new(&r->loop), 0);
	assert_int_equal(loop_timer_add(r->loop, 10000, 0, on_timeout, r->loop, &t), 0);
	assert_int_equal(prealloc_start(r->loop, fd, 0, len, pool, 1, on_done, r,
					&p), 0);
	assert_int_equal(loop_run(r->loop), 0);
	assert_int_equal(r->calls, 1);
	prealloc_status(p, &st);
	assert_true(st.finished);
	prealloc_free(p);
	loop_timer_del(t);
	loop_free(r->loop);
	*fd_out = fd;
	return st;
}

static void populates_and_consumes_the_claim(void **state)
{
	struct pool *pool;
	struct pool_guest_info gi;
	struct prealloc_status st;
	struct run r = { 0 };
	int fd;

	(void)state;
	assert_int_equal(pool_create(64 * MiB, &pool), 0);
	assert_int_equal(pool_guest_add(pool, 1, PAGES(32 * MiB)), 0);
	assert_int_equal(pool_claim(pool, 1, PAGES(32 * MiB)), 0);
	st = run_one(pool, 32 * MiB, 32 * MiB, &fd, &r);
	assert_int_equal(r.result, 0);
	assert_int_equal(st.result, 0);
	assert_int_equal(st.done_bytes, 32 * MiB);
	assert_int_equal(st.chunks, 16);
	assert_int_equal(allocated(fd), 32 * MiB);
	assert_int_equal(pool_guest_info(pool, 1, &gi), 0);
	assert_int_equal(gi.tot_pages, PAGES(32 * MiB));
	assert_int_equal(gi.claim_pages, 0);	/* consumed as it went */
	assert_int_equal(st.charged_pages, PAGES(32 * MiB));
	assert_int_equal(pool_check(pool), 0);
	close(fd);
	pool_destroy(pool);
}

static void refused_growth_stops_it_part_way(void **state)
{
	struct pool *pool;
	struct pool_guest_info gi;
	struct pool_info pi;
	struct prealloc_status st;
	struct run r = { 0 };
	int fd;

	(void)state;
	/* No claim and room for 10 MiB: the naive launch. */
	assert_int_equal(pool_create(10 * MiB, &pool), 0);
	assert_int_equal(pool_guest_add(pool, 1, PAGES(32 * MiB)), 0);
	st = run_one(pool, 32 * MiB, 32 * MiB, &fd, &r);
	assert_int_equal(r.result, -ENOMEM);
	assert_int_equal(st.result, -ENOMEM);
	assert_true(st.done_bytes < 32 * MiB);
	assert_int_equal(pool_guest_info(pool, 1, &gi), 0);
	/* Charged what fit, never beyond the budget. */
	assert_true(gi.tot_pages <= PAGES(10 * MiB));
	assert_int_equal(pool_info(pool, &pi), 0);
	assert_int_equal(pi.over_pages, 0);
	assert_int_equal(pool_check(pool), 0);
	close(fd);
	pool_destroy(pool);
}

static void never_charges_beyond_max(void **state)
{
	struct pool *pool;
	struct pool_guest_info gi;
	struct run r = { 0 };
	int fd;

	(void)state;
	/* The file holds more than the guest's max (UML's RAM file does):
	 * the charge stops at max and populating goes on. */
	assert_int_equal(pool_create(64 * MiB, &pool), 0);
	assert_int_equal(pool_guest_add(pool, 1, PAGES(16 * MiB)), 0);
	run_one(pool, 20 * MiB, 20 * MiB, &fd, &r);
	assert_int_equal(r.result, 0);
	assert_int_equal(pool_guest_info(pool, 1, &gi), 0);
	assert_int_equal(gi.tot_pages, PAGES(16 * MiB));
	close(fd);
	pool_destroy(pool);
}

static void free_cancels_a_running_prealloc(void **state)
{
	struct pool *pool;
	struct prealloc *p;
	struct loop *loop;
	struct run r = { 0 };
	int fd = memfd_create("ram", MFD_CLOEXEC);

	(void)state;
	assert_int_equal(pool_create(2048 * MiB, &pool), 0);
	assert_int_equal(pool_guest_add(pool, 1, PAGES(1024 * MiB)), 0);
	assert_int_equal(ftruncate(fd, (off_t)(1024 * MiB)), 0);
	assert_int_equal(loop_new(&loop), 0);
	r.loop = loop;
	assert_int_equal(prealloc_start(loop, fd, 0, 1024 * MiB, pool, 1, on_done,
					&r, &p), 0);
	prealloc_free(p);	/* joins: must not hang, must not call done */
	assert_int_equal(r.calls, 0);
	assert_int_equal(pool_check(pool), 0);
	loop_free(loop);
	close(fd);
	pool_destroy(pool);
}

static void bad_arguments_are_refused(void **state)
{
	struct pool *pool;
	struct prealloc *p;
	struct loop *loop;

	(void)state;
	assert_int_equal(pool_create(64 * MiB, &pool), 0);
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(prealloc_start(loop, 0, 0, 4096, pool, 7, NULL, NULL, &p),
			 -ENOENT);
	assert_int_equal(pool_guest_add(pool, 7, 16), 0);
	assert_int_equal(prealloc_start(loop, 0, 1, 4096, pool, 7, NULL, NULL, &p),
			 -EINVAL);
	assert_int_equal(prealloc_start(loop, 0, 0, 100, pool, 7, NULL, NULL, &p),
			 -EINVAL);
	assert_int_equal(prealloc_start(loop, 0, 0, 0, pool, 7, NULL, NULL, &p),
			 -EINVAL);
	assert_int_equal(prealloc_start(loop, -1, 0, 4096, pool, 7, NULL, NULL, &p),
			 -EBADF);
	loop_free(loop);
	pool_destroy(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(populates_and_consumes_the_claim),
		cmocka_unit_test(refused_growth_stops_it_part_way),
		cmocka_unit_test(never_charges_beyond_max),
		cmocka_unit_test(free_cancels_a_running_prealloc),
		cmocka_unit_test(bad_arguments_are_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
