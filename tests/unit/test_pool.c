/*
 * Tests for pool (claims and accounting) and populate.
 *
 * pool.c is included rather than linked so that one test can corrupt the
 * pool's internals and prove pool_check notices: the stress test relies on
 * pool_check as its oracle.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "pool.c"
#include "populate.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define PAGES(bytes) ((uint64_t)(bytes) / POOL_PAGE_SIZE)

static struct pool *new_pool(uint64_t budget_pages)
{
	struct pool *pool = NULL;

	assert_int_equal(pool_create(budget_pages * POOL_PAGE_SIZE, &pool), 0);
	assert_non_null(pool);
	return pool;
}

static struct pool_info info_of(struct pool *pool)
{
	struct pool_info in;

	memset(&in, 0xa5, sizeof(in));
	assert_int_equal(pool_info(pool, &in), 0);
	assert_int_equal(pool_check(pool), 0);
	return in;
}

static struct pool_guest_info guest_of(struct pool *pool, uint64_t g)
{
	struct pool_guest_info gi;

	memset(&gi, 0xa5, sizeof(gi));
	assert_int_equal(pool_guest_info(pool, g, &gi), 0);
	return gi;
}

/* tot, claim of guest @g, and the pool's Σtot, Σclaim, all at once. */
static void expect(struct pool *pool, uint64_t g, uint64_t tot, uint64_t claim,
		   uint64_t sum_tot, uint64_t sum_claim)
{
	struct pool_guest_info gi = guest_of(pool, g);
	struct pool_info in = info_of(pool);

	assert_int_equal(gi.tot_pages, tot);
	assert_int_equal(gi.claim_pages, claim);
	assert_int_equal(in.tot_pages, sum_tot);
	assert_int_equal(in.claim_pages, sum_claim);
}

/* ---- pool basics ------------------------------------------------------- */

static void create_rounds_budget_down(void **state)
{
	struct pool *pool = NULL;
	struct pool_info in;

	(void)state;
	assert_int_equal(pool_create(10 * POOL_PAGE_SIZE + 100, &pool), 0);
	in = info_of(pool);
	assert_int_equal(in.budget_bytes, 10 * POOL_PAGE_SIZE + 100);
	assert_int_equal(in.budget_pages, 10);
	assert_int_equal(in.tot_pages, 0);
	assert_int_equal(in.claim_pages, 0);
	assert_int_equal(in.free_pages, 10);
	assert_int_equal(in.unclaimed_pages, 10);
	assert_int_equal(in.over_pages, 0);
	assert_int_equal(in.guests, 0);
	pool_destroy(pool);
	pool_destroy(NULL);
}

static void guest_add_remove_errors(void **state)
{
	struct pool *pool = new_pool(100);
	struct pool_guest_info gi;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 7, 50), 0);
	assert_int_equal(pool_guest_add(pool, 7, 60), -EEXIST);
	assert_int_equal(guest_of(pool, 7).max_pages, 50);
	assert_int_equal(pool_guest_add(pool, 8, POOL_GUEST_MAX_PAGES + 1), -EINVAL);
	assert_int_equal(pool_guest_add(pool, 8, POOL_GUEST_MAX_PAGES), 0);
	assert_int_equal(pool_guest_add(pool, UINT64_MAX, 0), 0);
	assert_int_equal(info_of(pool).guests, 3);

	assert_int_equal(pool_guest_remove(pool, 9), -ENOENT);
	assert_int_equal(pool_guest_remove(pool, 8), 0);
	assert_int_equal(pool_guest_remove(pool, 8), -ENOENT);
	assert_int_equal(pool_guest_info(pool, 8, &gi), -ENOENT);
	assert_int_equal(info_of(pool).guests, 2);

	/* Every per-guest call names a missing guest the same way. */
	assert_int_equal(pool_claim(pool, 8, 1), -ENOENT);
	assert_int_equal(pool_claim(pool, 8, 0), -ENOENT);
	assert_int_equal(pool_grow(pool, 8, 1), -ENOENT);
	assert_int_equal(pool_shrink(pool, 8, 0), -ENOENT);
	assert_int_equal(pool_set_resident(pool, 8, 0, NULL), -ENOENT);
	pool_destroy(pool);
}

/* Many guests added in scrambled order are each found again (the sorted
 * table and its growth). */
static void many_guests(void **state)
{
	struct pool *pool = new_pool(100000);

	(void)state;
	for (uint64_t i = 0; i < 1000; i++) {
		uint64_t id = (i * 7919) % 1000;

		assert_int_equal(pool_guest_add(pool, id, id + 1), 0);
		assert_int_equal(pool_grow(pool, id, id % 5), 0);
	}
	assert_int_equal(info_of(pool).guests, 1000);
	for (uint64_t id = 0; id < 1000; id += 3)
		assert_int_equal(pool_guest_remove(pool, id), 0);
	for (uint64_t id = 0; id < 1000; id++) {
		struct pool_guest_info gi;
		int rc = pool_guest_info(pool, id, &gi);

		if (id % 3 == 0) {
			assert_int_equal(rc, -ENOENT);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(gi.max_pages, id + 1);
			assert_int_equal(gi.tot_pages, id % 5);
		}
	}
	assert_int_equal(info_of(pool).guests, 666);
	pool_destroy(pool);
}

/* ---- claims ------------------------------------------------------------ */

static void claim_stores_target_minus_tot(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 50), 0);
	assert_int_equal(pool_grow(pool, 1, 10), 0);
	assert_int_equal(pool_claim(pool, 1, 30), 0);
	expect(pool, 1, 10, 20, 10, 20);
	assert_int_equal(info_of(pool).free_pages, 90);
	assert_int_equal(info_of(pool).unclaimed_pages, 70);
	pool_destroy(pool);
}

static void claim_einval_cases(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 50), 0);
	assert_int_equal(pool_grow(pool, 1, 10), 0);

	/* At or below tot: nothing to stake. */
	assert_int_equal(pool_claim(pool, 1, 10), -EINVAL);
	assert_int_equal(pool_claim(pool, 1, 9), -EINVAL);
	assert_int_equal(pool_claim(pool, 1, 1), -EINVAL);
	/* Above max. */
	assert_int_equal(pool_claim(pool, 1, 51), -EINVAL);
	assert_int_equal(pool_claim(pool, 1, UINT64_MAX), -EINVAL);
	expect(pool, 1, 10, 0, 10, 0);

	/* Exactly max is fine; then a second claim, of any size, is not. */
	assert_int_equal(pool_claim(pool, 1, 50), 0);
	assert_int_equal(pool_claim(pool, 1, 50), -EINVAL);
	assert_int_equal(pool_claim(pool, 1, 20), -EINVAL);
	expect(pool, 1, 10, 40, 10, 40);
	pool_destroy(pool);
}

static void claim_enomem_boundary(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 1000), 0);
	assert_int_equal(pool_guest_add(pool, 2, 1000), 0);
	assert_int_equal(pool_guest_add(pool, 3, 1000), 0);
	assert_int_equal(pool_grow(pool, 1, 30), 0);

	/* free 70; guest 2 stakes 40, leaving 30 unclaimed. */
	assert_int_equal(pool_claim(pool, 2, 40), 0);
	assert_int_equal(pool_claim(pool, 3, 31), -ENOMEM);
	expect(pool, 3, 0, 0, 30, 40);
	assert_int_equal(pool_claim(pool, 3, 30), 0);
	assert_int_equal(info_of(pool).unclaimed_pages, 0);

	/* Guest 1 already has 30: a total of 31 needs 1 more, which is gone. */
	assert_int_equal(pool_claim(pool, 1, 31), -ENOMEM);
	/* A claim bigger than the whole budget is ENOMEM, not EINVAL. */
	assert_int_equal(pool_claim(pool, 3, 0), 0);
	assert_int_equal(pool_claim(pool, 3, 101), -ENOMEM);
	expect(pool, 3, 0, 0, 30, 40);
	pool_destroy(pool);
}

static void claim_cancel(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	/* Cancel without a claim is fine. */
	assert_int_equal(pool_claim(pool, 1, 0), 0);
	expect(pool, 1, 0, 0, 0, 0);

	assert_int_equal(pool_claim(pool, 1, 60), 0);
	assert_int_equal(pool_grow(pool, 1, 25), 0);
	expect(pool, 1, 25, 35, 25, 35);
	/* Cancel releases the unconsumed remainder, keeps what is resident. */
	assert_int_equal(pool_claim(pool, 1, 0), 0);
	expect(pool, 1, 25, 0, 25, 0);
	assert_int_equal(info_of(pool).unclaimed_pages, 75);
	/* And a new claim may be staked after a cancel. */
	assert_int_equal(pool_claim(pool, 1, 100), 0);
	expect(pool, 1, 25, 75, 25, 75);
	pool_destroy(pool);
}

/* tools/tests/mem-claim in Xen, replayed: claim 4M, populate 2M of it, the
 * outstanding remainder is 2M, destroying the domain takes it to zero. */
static void xen_mem_claim_sequence(void **state)
{
	struct pool *pool = new_pool(PAGES(1 * GiB));
	struct pool_info in;

	(void)state;
	in = info_of(pool);
	assert_int_equal(in.claim_pages, 0);
	assert_int_equal(pool_guest_add(pool, 1, POOL_GUEST_MAX_PAGES), 0);
	assert_int_equal(info_of(pool).claim_pages, 0);

	assert_int_equal(pool_claim(pool, 1, PAGES(4 * MiB)), 0);
	assert_int_equal(info_of(pool).claim_pages, PAGES(4 * MiB));

	assert_int_equal(pool_grow(pool, 1, PAGES(2 * MiB)), 0);
	in = info_of(pool);
	assert_int_equal(in.claim_pages, PAGES(2 * MiB));
	assert_int_equal(in.tot_pages, PAGES(2 * MiB));

	assert_int_equal(pool_guest_remove(pool, 1), 0);
	in = info_of(pool);
	assert_int_equal(in.claim_pages, 0);
	assert_int_equal(in.tot_pages, 0);
	assert_int_equal(in.free_pages, PAGES(1 * GiB));
	assert_int_equal(in.guests, 0);
	pool_destroy(pool);
}

/* ---- growth ------------------------------------------------------------ */

static void grow_consumes_own_claim_first(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 40), 0);
	assert_int_equal(pool_grow(pool, 1, 15), 0);
	expect(pool, 1, 15, 25, 15, 25);
	assert_int_equal(info_of(pool).unclaimed_pages, 60);
	/* Growth past the claim: 25 from the claim, 5 from unclaimed; the
	 * claim, fully consumed, is released. */
	assert_int_equal(pool_grow(pool, 1, 30), 0);
	expect(pool, 1, 45, 0, 45, 0);
	assert_int_equal(info_of(pool).unclaimed_pages, 55);
	/* Released means a new claim is allowed again. */
	assert_int_equal(pool_claim(pool, 1, 50), 0);
	expect(pool, 1, 45, 5, 45, 5);
	pool_destroy(pool);
}

static void grow_into_other_claim_refused(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 90), 0);

	/* 10 unclaimed: guest 2 may take those and not one page more, though
	 * 100 pages are free. */
	assert_int_equal(info_of(pool).free_pages, 100);
	assert_int_equal(pool_grow(pool, 2, 11), -ENOMEM);
	expect(pool, 2, 0, 0, 0, 90);
	assert_int_equal(pool_grow(pool, 2, 10), 0);
	assert_int_equal(pool_grow(pool, 2, 1), -ENOMEM);
	/* A claim for guest 2 is refused too: the room is claimed. */
	assert_int_equal(pool_claim(pool, 2, 11), -ENOMEM);

	/* Guest 1 still gets every page it claimed. */
	assert_int_equal(pool_grow(pool, 1, 90), 0);
	expect(pool, 1, 90, 0, 100, 0);
	assert_int_equal(info_of(pool).free_pages, 0);
	pool_destroy(pool);
}

static void store_charges_count_against_the_budget(void **state)
{
	struct pool *pool = new_pool(100);
	struct pool_info in;
	bool over = true;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 50), 0);
	assert_int_equal(pool_guest_add(pool, 2, 50), 0);
	assert_int_equal(pool_claim(pool, 2, 40), 0);
	/* 60 unclaimed: store pages may use them, not guest 2's claim, and
	 * not beyond max (store pages are not RAM). */
	assert_int_equal(pool_charge_store(pool, 1, 61), -ENOMEM);
	assert_int_equal(pool_charge_store(pool, 1, 55), 0);
	assert_int_equal(guest_of(pool, 1).store_pages, 55);
	in = info_of(pool);
	assert_int_equal(in.store_pages, 55);
	assert_int_equal(in.free_pages, 45);
	assert_int_equal(in.unclaimed_pages, 5);
	/* RAM measurements leave the store charge alone. */
	assert_int_equal(pool_set_resident(pool, 1, 5, &over), 0);
	assert_false(over);
	assert_int_equal(guest_of(pool, 1).store_pages, 55);
	assert_int_equal(pool_charge_store(pool, 1, 1), -ENOMEM);
	/* Guest 2 still gets all of its claim. */
	assert_int_equal(pool_grow(pool, 2, 40), 0);
	/* Shrinking: not below zero; INT64_MIN is just too much. */
	assert_int_equal(pool_charge_store(pool, 1, -56), -EINVAL);
	assert_int_equal(pool_charge_store(pool, 1, INT64_MIN), -EINVAL);
	assert_int_equal(pool_charge_store(pool, 1, -50), 0);
	assert_int_equal(pool_charge_store(pool, 9, 1), -ENOENT);
	/* Removing the guest releases its store pages. */
	assert_int_equal(pool_guest_remove(pool, 1), 0);
	in = info_of(pool);
	assert_int_equal(in.store_pages, 0);
	assert_int_equal(in.free_pages, 60);
	pool_destroy(pool);
}

static void grow_partly_claimed(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 5), 0);
	assert_int_equal(pool_claim(pool, 2, 92), 0);
	/* unclaimed 3: guest 1 may grow 5 + 3, not 5 + 4. */
	assert_int_equal(pool_grow(pool, 1, 9), -ENOMEM);
	expect(pool, 1, 0, 5, 0, 97);
	assert_int_equal(pool_grow(pool, 1, 8), 0);
	expect(pool, 1, 8, 0, 8, 92);
	assert_int_equal(info_of(pool).unclaimed_pages, 0);
	pool_destroy(pool);
}

static void grow_past_max(void **state)
{
	struct pool *pool = new_pool(10);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 20), 0);
	assert_int_equal(pool_grow(pool, 1, 0), 0);
	assert_int_equal(pool_grow(pool, 1, 5), 0);
	/* Past max is E2BIG even when it would not fit either. */
	assert_int_equal(pool_grow(pool, 1, 16), -E2BIG);
	assert_int_equal(pool_grow(pool, 1, UINT64_MAX), -E2BIG);
	assert_int_equal(pool_grow(pool, 1, UINT64_MAX - 4), -E2BIG);
	/* Up to max it is a budget question: ENOMEM. */
	assert_int_equal(pool_grow(pool, 1, 15), -ENOMEM);
	expect(pool, 1, 5, 0, 5, 0);
	pool_destroy(pool);
}

static void shrink_keeps_claim_and_frees(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 80), 0);
	assert_int_equal(pool_grow(pool, 1, 60), 0);
	expect(pool, 1, 60, 20, 60, 20);
	assert_int_equal(pool_grow(pool, 2, 21), -ENOMEM);

	/* Shrinking does not give the claim back ... */
	assert_int_equal(pool_shrink(pool, 1, 30), 0);
	expect(pool, 1, 30, 20, 30, 20);
	/* ... but it does give the pages to others. */
	assert_int_equal(pool_grow(pool, 2, 50), 0);
	assert_int_equal(pool_grow(pool, 2, 1), -ENOMEM);

	assert_int_equal(pool_shrink(pool, 1, 31), -EINVAL);
	assert_int_equal(pool_shrink(pool, 1, UINT64_MAX), -EINVAL);
	assert_int_equal(pool_shrink(pool, 1, 0), 0);
	expect(pool, 1, 30, 20, 80, 20);
	assert_int_equal(pool_shrink(pool, 1, 30), 0);
	expect(pool, 1, 0, 20, 50, 20);
	pool_destroy(pool);
}

/* ---- set_resident ------------------------------------------------------ */

static void set_resident_within_budget(void **state)
{
	struct pool *pool = new_pool(100);
	bool over = true;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 50), 0);
	assert_int_equal(pool_set_resident(pool, 1, 30, &over), 0);
	assert_false(over);
	expect(pool, 1, 30, 20, 30, 20);
	/* 20 from the claim, 10 from unclaimed: fits. */
	over = true;
	assert_int_equal(pool_set_resident(pool, 1, 60, &over), 0);
	assert_false(over);
	expect(pool, 1, 60, 0, 60, 0);
	/* Lower: like shrink, and the claim stays gone. */
	assert_int_equal(pool_set_resident(pool, 1, 10, &over), 0);
	assert_false(over);
	expect(pool, 1, 10, 0, 10, 0);
	/* Same value is a no-op; NULL flag is fine. */
	assert_int_equal(pool_set_resident(pool, 1, 10, NULL), 0);
	expect(pool, 1, 10, 0, 10, 0);
	/* Above max is refused and changes nothing. */
	assert_int_equal(pool_set_resident(pool, 1, 101, &over), -EINVAL);
	expect(pool, 1, 10, 0, 10, 0);
	pool_destroy(pool);
}

static void set_resident_over_budget(void **state)
{
	struct pool *pool = new_pool(100);
	struct pool_guest_info gi;
	struct pool_info in;
	bool over = false;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 200), 0);
	assert_int_equal(pool_guest_add(pool, 2, 200), 0);
	assert_int_equal(pool_claim(pool, 2, 30), 0);
	assert_int_equal(pool_claim(pool, 1, 50), 0);
	/* Guest 1 measured at 90: 50 claimed, 20 unclaimed, 20 that do not
	 * fit anywhere (guest 2's claim is not touched). */
	assert_int_equal(pool_set_resident(pool, 1, 90, &over), 0);
	assert_true(over);
	expect(pool, 1, 90, 0, 90, 30);
	gi = guest_of(pool, 1);
	assert_true(gi.over_budget);
	assert_int_equal(gi.excess_pages, 20);
	assert_false(guest_of(pool, 2).over_budget);
	in = info_of(pool);	/* pool_check passes: reality is allowed */
	assert_int_equal(in.over_pages, 20);
	assert_int_equal(in.unclaimed_pages, 0);
	assert_int_equal(in.free_pages, 10);

	/* While over, nothing new fits; guest 2's own claim still does. */
	assert_int_equal(pool_claim(pool, 1, 0), 0);
	assert_int_equal(pool_claim(pool, 1, 91), -ENOMEM);
	assert_int_equal(pool_grow(pool, 1, 1), -ENOMEM);
	assert_int_equal(pool_grow(pool, 2, 30), 0);
	expect(pool, 2, 30, 0, 120, 0);
	assert_int_equal(pool_grow(pool, 2, 1), -ENOMEM);

	/* Guest 1 gives back 5: 15 over still. */
	assert_int_equal(pool_shrink(pool, 1, 5), 0);
	gi = guest_of(pool, 1);
	assert_int_equal(gi.excess_pages, 15);
	/* Guest 2 gives back 10: others' freeing covers 10 of the excess. */
	assert_int_equal(pool_shrink(pool, 2, 10), 0);
	gi = guest_of(pool, 1);
	assert_true(gi.over_budget);
	assert_int_equal(gi.excess_pages, 5);
	assert_int_equal(info_of(pool).over_pages, 5);
	/* Guest 1 measured lower: under budget again, flag gone. */
	assert_int_equal(pool_set_resident(pool, 1, 80, &over), 0);
	assert_false(over);
	gi = guest_of(pool, 1);
	assert_false(gi.over_budget);
	assert_int_equal(gi.excess_pages, 0);
	in = info_of(pool);
	assert_int_equal(in.over_pages, 0);
	assert_int_equal(in.tot_pages, 100);
	pool_destroy(pool);
}

/* An old excess must not come back when the pool goes over again for an
 * unrelated reason (a budget cut). */
static void excess_forgotten_once_covered(void **state)
{
	struct pool *pool = new_pool(100);
	bool over = false;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 200), 0);
	assert_int_equal(pool_guest_add(pool, 2, 200), 0);
	assert_int_equal(pool_grow(pool, 2, 50), 0);
	assert_int_equal(pool_set_resident(pool, 1, 60, &over), 0);
	assert_true(over);
	assert_int_equal(guest_of(pool, 1).excess_pages, 10);
	assert_int_equal(pool_shrink(pool, 2, 50), 0);	/* covered by guest 2 */
	assert_false(guest_of(pool, 1).over_budget);
	assert_int_equal(pool_set_budget(pool, 50 * POOL_PAGE_SIZE), 0);
	assert_int_equal(info_of(pool).over_pages, 10);
	assert_false(guest_of(pool, 1).over_budget);
	pool_destroy(pool);
}

/* ---- budget changes ---------------------------------------------------- */

static void budget_cut_keeps_claims(void **state)
{
	struct pool *pool = new_pool(100);
	struct pool_info in;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_grow(pool, 1, 40), 0);
	assert_int_equal(pool_claim(pool, 2, 40), 0);

	assert_int_equal(pool_set_budget(pool, 50 * POOL_PAGE_SIZE + 1), 0);
	in = info_of(pool);
	assert_int_equal(in.budget_pages, 50);
	assert_int_equal(in.over_pages, 30);
	assert_int_equal(in.free_pages, 10);
	assert_int_equal(in.unclaimed_pages, 0);
	/* Nobody caused it by growing: no guest is over budget. */
	assert_false(guest_of(pool, 1).over_budget);

	/* The existing claim is honoured ... */
	assert_int_equal(pool_grow(pool, 2, 40), 0);
	/* ... new claims and unclaimed growth are not. */
	assert_int_equal(pool_claim(pool, 1, 41), -ENOMEM);
	assert_int_equal(pool_grow(pool, 1, 1), -ENOMEM);
	assert_int_equal(pool_grow(pool, 2, 1), -ENOMEM);
	in = info_of(pool);
	assert_int_equal(in.tot_pages, 80);
	assert_int_equal(in.free_pages, 0);

	/* Raising it again makes room. */
	assert_int_equal(pool_set_budget(pool, 90 * POOL_PAGE_SIZE), 0);
	in = info_of(pool);
	assert_int_equal(in.over_pages, 0);
	assert_int_equal(in.unclaimed_pages, 10);
	assert_int_equal(pool_claim(pool, 1, 50), 0);
	assert_int_equal(pool_claim(pool, 2, 81), -ENOMEM);
	pool_destroy(pool);
}

static void remove_releases_everything(void **state)
{
	struct pool *pool = new_pool(100);
	struct pool_info in;

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 70), 0);
	assert_int_equal(pool_grow(pool, 1, 20), 0);
	assert_int_equal(pool_claim(pool, 2, 31), -ENOMEM);
	assert_int_equal(pool_guest_remove(pool, 1), 0);
	in = info_of(pool);
	assert_int_equal(in.tot_pages, 0);
	assert_int_equal(in.claim_pages, 0);
	assert_int_equal(in.unclaimed_pages, 100);
	assert_int_equal(pool_claim(pool, 2, 100), 0);
	/* Re-added, the guest starts from zero. */
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	expect(pool, 1, 0, 0, 0, 100);
	pool_destroy(pool);
}

/* pool_check is the stress test's oracle: show that it can say no. */
static void check_catches_corruption(void **state)
{
	struct pool *pool = new_pool(100);

	(void)state;
	assert_int_equal(pool_guest_add(pool, 1, 100), 0);
	assert_int_equal(pool_guest_add(pool, 2, 100), 0);
	assert_int_equal(pool_claim(pool, 1, 30), 0);
	assert_int_equal(pool_check(pool), 0);

	pool->tot_pages++;			/* sum disagrees */
	assert_int_equal(pool_check(pool), -EFAULT);
	pool->tot_pages--;
	pool->guests[0].claim_pages = 101;	/* tot + claim > max */
	pool->claim_pages = 101;
	assert_int_equal(pool_check(pool), -EFAULT);
	pool->guests[0].claim_pages = 30;
	pool->claim_pages = 30;
	pool->guests[1].tot_pages = 71;		/* over budget, not allowed */
	pool->tot_pages = 71;
	assert_int_equal(pool_check(pool), -EFAULT);
	pool->guests[1].tot_pages = 0;
	pool->tot_pages = 0;
	pool->guests[1].id = 1;			/* table out of order */
	assert_int_equal(pool_check(pool), -EFAULT);
	pool->guests[1].id = 2;
	assert_int_equal(pool_check(pool), 0);
	pool_destroy(pool);
}

/* ---- default budget ---------------------------------------------------- */

static char tmp_root[PATH_MAX];

static void put_file(const char *rel, const char *text)
{
	char path[PATH_MAX * 2], dir[PATH_MAX * 2], *p;
	FILE *f;

	snprintf(path, sizeof(path), "%s%s", tmp_root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	for (p = dir + strlen(tmp_root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(dir, 0755);
		*p = '/';
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void rm_file(const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s%s", tmp_root, rel);
	assert_int_equal(unlink(path), 0);
}

static int budget_setup(void **state)
{
	(void)state;
	snprintf(tmp_root, sizeof(tmp_root), "/tmp/ebb-pool-test-XXXXXX");
	return mkdtemp(tmp_root) ? 0 : -1;
}

static int budget_teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
	return system(cmd) == 0 ? 0 : -1;
}

static const char meminfo_4g[] =
	"MemFree:         1000000 kB\n"
	"MemTotal:        4194304 kB\n"
	"Buffers:             100 kB\n";

static void budget_from_meminfo(void **state)
{
	enum pool_budget_source src = POOL_BUDGET_CGROUP_V1;
	uint64_t b = 0;

	(void)state;
	/* No /proc/self/cgroup at all: MemTotal - 512 MiB (5% is less). */
	put_file("/proc/meminfo", meminfo_4g);
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 4 * GiB - 512 * MiB);
	assert_int_equal(src, POOL_BUDGET_MEMINFO);

	/* 64 GiB: 5% (3.2 GiB) is more than 512 MiB. */
	put_file("/proc/meminfo", "MemTotal:       67108864 kB\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, NULL), 0);
	assert_int_equal(b, 64 * GiB - 64 * GiB / 100 * 5);

	/* Nothing left after the reserve. */
	put_file("/proc/meminfo", "MemTotal:         524288 kB\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, NULL), -ENOMEM);
	/* No MemTotal line, or in other units. */
	put_file("/proc/meminfo", "MemFree: 1000 kB\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, NULL), -EIO);
	put_file("/proc/meminfo", "MemTotal: 4194304 MB\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, NULL), -EIO);
	/* No meminfo at all. */
	rm_file("/proc/meminfo");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, NULL), -ENOENT);
}

static void budget_from_cgroup_v1(void **state)
{
	enum pool_budget_source src = POOL_BUDGET_MEMINFO;
	uint64_t b = 0;

	(void)state;
	put_file("/proc/meminfo", meminfo_4g);
	put_file("/proc/self/cgroup",
		 "9:name=systemd:/\n"
		 "4:memory:/vms/ebb\n"
		 "3:cpu,cpuacct:/\n"
		 "0::/\n");
	put_file("/sys/fs/cgroup/memory/memory.limit_in_bytes",
		 "9223372036854771712\n");
	put_file("/sys/fs/cgroup/memory/vms/ebb/memory.limit_in_bytes",
		 "2147483648\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 2 * GiB);
	assert_int_equal(src, POOL_BUDGET_CGROUP_V1);

	/* A tighter parent wins. */
	put_file("/sys/fs/cgroup/memory/vms/memory.limit_in_bytes",
		 "1073741824\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 1 * GiB);

	/* Unlimited everywhere ("unlimited" is ~2^63): MemTotal rule. */
	put_file("/sys/fs/cgroup/memory/vms/memory.limit_in_bytes",
		 "9223372036854771712\n");
	put_file("/sys/fs/cgroup/memory/vms/ebb/memory.limit_in_bytes",
		 "9223372036854771712\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 4 * GiB - 512 * MiB);
	assert_int_equal(src, POOL_BUDGET_MEMINFO);

	/* A limit above MemTotal limits nothing; garbage is ignored. */
	put_file("/sys/fs/cgroup/memory/vms/ebb/memory.limit_in_bytes",
		 "8589934592\n");
	put_file("/sys/fs/cgroup/memory/vms/memory.limit_in_bytes", "junk\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 4 * GiB - 512 * MiB);
	assert_int_equal(src, POOL_BUDGET_MEMINFO);
}

static void budget_from_cgroup_v2(void **state)
{
	enum pool_budget_source src = POOL_BUDGET_MEMINFO;
	uint64_t b = 0;

	(void)state;
	put_file("/proc/meminfo", meminfo_4g);
	put_file("/proc/self/cgroup", "0::/system.slice/ebbd.service\n");
	put_file("/sys/fs/cgroup/system.slice/ebbd.service/memory.max", "max\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 4 * GiB - 512 * MiB);
	assert_int_equal(src, POOL_BUDGET_MEMINFO);

	put_file("/sys/fs/cgroup/system.slice/ebbd.service/memory.max",
		 "3221225472\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 3 * GiB);
	assert_int_equal(src, POOL_BUDGET_CGROUP_V2);

	put_file("/sys/fs/cgroup/system.slice/memory.max", "1610612736\n");
	assert_int_equal(pool_default_budget_bytes(tmp_root, &b, &src), 0);
	assert_int_equal(b, 3 * GiB / 2);
	assert_int_equal(src, POOL_BUDGET_CGROUP_V2);
}

/* The machine's own files: whatever they say, the answer is sane. */
static void budget_from_this_host(void **state)
{
	uint64_t b = 0;

	(void)state;
	assert_int_equal(pool_default_budget_bytes(NULL, &b, NULL), 0);
	assert_true(b > 0);
	assert_true(b < (uint64_t)sysconf(_SC_PHYS_PAGES) *
			(uint64_t)sysconf(_SC_PAGESIZE));
}

/* ---- populate ---------------------------------------------------------- */

#define MAX_CALLS 4096
static struct {
	uint64_t off, len;
} calls[MAX_CALLS];
static unsigned nr_calls;
static uint64_t fail_2m_at = UINT64_MAX;	/* a piece of this offset: ENOSPC */
static uint64_t full_from = UINT64_MAX;		/* anything ending past: ENOSPC */
static int hard_errno;				/* != 0: every call fails so */
static int eintr_left;

static int fake_fallocate(int fd, int mode, off_t off, off_t len)
{
	(void)fd;
	assert_int_equal(mode, 0);
	if (nr_calls < MAX_CALLS) {
		calls[nr_calls].off = (uint64_t)off;
		calls[nr_calls].len = (uint64_t)len;
	}
	nr_calls++;
	if (eintr_left > 0) {
		eintr_left--;
		errno = EINTR;
		return -1;
	}
	if (hard_errno) {
		errno = hard_errno;
		return -1;
	}
	if (((uint64_t)off == fail_2m_at && (uint64_t)len > 4096) ||
	    (uint64_t)(off + len) > full_from) {
		errno = ENOSPC;
		return -1;
	}
	return 0;
}

static int fake_reset(void **state)
{
	(void)state;
	nr_calls = 0;
	fail_2m_at = UINT64_MAX;
	full_from = UINT64_MAX;
	hard_errno = 0;
	eintr_left = 0;
	return 0;
}

static void populate_cuts_at_2m(void **state)
{
	struct populate_progress r;

	(void)state;
	/* 1 MiB .. 6 MiB + 8 KiB: head 1 MiB, 2 x 2 MiB, tail 8 KiB. */
	assert_int_equal(populate_file_with(fake_fallocate, 3, 1 * MiB,
					    5 * MiB + 8192, NULL, NULL, &r), 0);
	assert_int_equal(nr_calls, 4);
	assert_int_equal(calls[0].off, 1 * MiB);
	assert_int_equal(calls[0].len, 1 * MiB);
	assert_int_equal(calls[1].off, 2 * MiB);
	assert_int_equal(calls[1].len, 2 * MiB);
	assert_int_equal(calls[2].off, 4 * MiB);
	assert_int_equal(calls[2].len, 2 * MiB);
	assert_int_equal(calls[3].off, 6 * MiB);
	assert_int_equal(calls[3].len, 8192);
	assert_int_equal(r.done_bytes, 5 * MiB + 8192);
	assert_int_equal(r.len_bytes, 5 * MiB + 8192);
	assert_int_equal(r.chunks, 4);
	assert_int_equal(r.fallback_pages, 0);
}

static void populate_falls_back_to_4k(void **state)
{
	struct populate_progress r;

	(void)state;
	fail_2m_at = 2 * MiB;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 6 * MiB,
					    NULL, NULL, &r), 0);
	assert_int_equal(r.done_bytes, 6 * MiB);
	assert_int_equal(r.chunks, 2);
	assert_int_equal(r.fallback_pages, 512);
	/* 1 + (1 failed + 512) + 1 */
	assert_int_equal(nr_calls, 515);
	assert_int_equal(calls[2].off, 2 * MiB);
	assert_int_equal(calls[2].len, 4096);
	assert_int_equal(calls[513].off, 4 * MiB - 4096);
	assert_int_equal(calls[514].off, 4 * MiB);
	assert_int_equal(calls[514].len, 2 * MiB);
}

static void populate_stops_when_full(void **state)
{
	struct populate_progress r;

	(void)state;
	/* Room for 3 MiB + 12 KiB: the second chunk gets 1 MiB + 12 KiB in
	 * 4 KiB pages, then ENOSPC with done_bytes saying how far. */
	full_from = 3 * MiB + 12288;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 8 * MiB,
					    NULL, NULL, &r), -ENOSPC);
	assert_int_equal(r.done_bytes, 3 * MiB + 12288);
	assert_int_equal(r.chunks, 1);
	assert_int_equal(r.fallback_pages, 259);
}

static void populate_hard_error_no_fallback(void **state)
{
	struct populate_progress r;

	(void)state;
	hard_errno = EOPNOTSUPP;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 4 * MiB,
					    NULL, NULL, &r), -EOPNOTSUPP);
	assert_int_equal(nr_calls, 1);
	assert_int_equal(r.done_bytes, 0);
	/* EINTR is retried, not reported. */
	fake_reset(NULL);
	eintr_left = 3;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 2 * MiB,
					    NULL, NULL, &r), 0);
	assert_int_equal(nr_calls, 4);
	assert_int_equal(r.chunks, 1);
}

static void populate_rejects_bad_ranges(void **state)
{
	struct populate_progress r;

	(void)state;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 100, 4096,
					    NULL, NULL, &r), -EINVAL);
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 4095,
					    NULL, NULL, &r), -EINVAL);
	assert_int_equal(populate_file_with(fake_fallocate, 3,
					    (uint64_t)INT64_MAX - 4095, 8192,
					    NULL, NULL, &r), -EINVAL);
	assert_int_equal(nr_calls, 0);
	/* Nothing to do is done. */
	assert_int_equal(populate_file_with(fake_fallocate, 3, 4096, 0,
					    NULL, NULL, &r), 0);
	assert_int_equal(nr_calls, 0);
	assert_int_equal(r.done_bytes, 0);
}

static int cancel_after(const struct populate_progress *p, void *opaque)
{
	unsigned *left = opaque;

	assert_true(p->done_bytes <= p->len_bytes);
	return (*left)-- == 0;
}

static void populate_progress_cancels(void **state)
{
	struct populate_progress r;
	unsigned left = 2;

	(void)state;
	assert_int_equal(populate_file_with(fake_fallocate, 3, 0, 10 * MiB,
					    cancel_after, &left, &r), -ECANCELED);
	assert_int_equal(r.done_bytes, 6 * MiB);
	assert_int_equal(nr_calls, 3);
}

/* The real thing, on a memfd (tmpfs): the file ends up allocated. */
static void populate_real_tmpfs(void **state)
{
	struct populate_progress r;
	struct stat st;
	int fd;

	(void)state;
	fd = memfd_create("ebb-test-populate", 0);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 8 * MiB), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_blocks, 0);
	assert_int_equal(populate_file(fd, 1 * MiB, 4 * MiB + 4096, NULL, NULL,
				       &r), 0);
	assert_int_equal(r.done_bytes, 4 * MiB + 4096);
	assert_int_equal(fstat(fd, &st), 0);
	/* Exactly the range, unless tmpfs rounded a piece up to a huge page. */
	assert_true((uint64_t)st.st_blocks * 512 >= 4 * MiB + 4096);
	assert_true((uint64_t)st.st_blocks * 512 <= 8 * MiB);
	assert_int_equal(st.st_size, 8 * MiB);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_rounds_budget_down),
		cmocka_unit_test(guest_add_remove_errors),
		cmocka_unit_test(many_guests),
		cmocka_unit_test(claim_stores_target_minus_tot),
		cmocka_unit_test(claim_einval_cases),
		cmocka_unit_test(claim_enomem_boundary),
		cmocka_unit_test(claim_cancel),
		cmocka_unit_test(xen_mem_claim_sequence),
		cmocka_unit_test(grow_consumes_own_claim_first),
		cmocka_unit_test(grow_into_other_claim_refused),
		cmocka_unit_test(grow_partly_claimed),
		cmocka_unit_test(grow_past_max),
		cmocka_unit_test(shrink_keeps_claim_and_frees),
		cmocka_unit_test(set_resident_within_budget),
		cmocka_unit_test(set_resident_over_budget),
		cmocka_unit_test(excess_forgotten_once_covered),
		cmocka_unit_test(budget_cut_keeps_claims),
		cmocka_unit_test(remove_releases_everything),
		cmocka_unit_test(check_catches_corruption),
		cmocka_unit_test_setup_teardown(budget_from_meminfo,
						budget_setup, budget_teardown),
		cmocka_unit_test_setup_teardown(budget_from_cgroup_v1,
						budget_setup, budget_teardown),
		cmocka_unit_test_setup_teardown(budget_from_cgroup_v2,
						budget_setup, budget_teardown),
		cmocka_unit_test(store_charges_count_against_the_budget),
		cmocka_unit_test(budget_from_this_host),
		cmocka_unit_test_setup(populate_cuts_at_2m, fake_reset),
		cmocka_unit_test_setup(populate_falls_back_to_4k, fake_reset),
		cmocka_unit_test_setup(populate_stops_when_full, fake_reset),
		cmocka_unit_test_setup(populate_hard_error_no_fallback, fake_reset),
		cmocka_unit_test_setup(populate_rejects_bad_ranges, fake_reset),
		cmocka_unit_test_setup(populate_progress_cancels, fake_reset),
		cmocka_unit_test(populate_real_tmpfs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
