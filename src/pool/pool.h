/*
 * pool: the host memory pool — a budget of host pages shared by all guests,
 * per-guest accounting, and claims (Xen's XENMEM_claim_pages semantics).
 *
 * What it owns.  The numbers, not the memory: a budget, and per guest how
 * many host pages it has resident (tot), may ever have (max), and has staked
 * but not yet populated (claim).  Populating and freeing the pages is the
 * caller's business (see populate.h); the caller tells the pool what it did
 * (pool_grow / pool_shrink) or what it measured (pool_set_resident).  A
 * guest is named by an opaque 64-bit id the caller chooses.
 *
 * Units.  All counts are 4 KiB pages (POOL_PAGE_SIZE) and say so: _pages.
 * Only the budget is given in bytes (rounded down to whole pages).
 *
 *	free      = budget_pages - Σtot - Σstore
 *	unclaimed = free - Σclaim	(what new claims and growth beyond a
 *					 guest's own claim may use)
 *
 * Claims.  A claim states the total a guest is going to have; the pool
 * stores the outstanding difference (claim = total - tot) and takes it off
 * unclaimed at once.  Staking a claim costs a few arithmetic operations
 * under the lock, whatever its size: that is the whole point (two launches
 * that would not both fit are decided in microseconds, before either spends
 * minutes populating).  Growth consumes the guest's own claim first; the
 * part beyond it must fit in unclaimed, so no guest grows into memory
 * claimed by another.  A claim that is fully consumed is gone.
 *
 * Invariants (asserted under the lock after every change):
 *	1. per guest: tot + claim <= max;
 *	2. Σtot + Σstore + Σclaim <= budget_pages, unless reality put it over:
 *	   pool_set_resident recorded pages that did not fit, or
 *	   pool_set_budget cut the budget below what was committed.  Then
 *	   no other operation may make the overshoot larger, and it is back
 *	   to strict as soon as the overshoot is gone.
 *
 * Threading: every function may be called from any thread.  One mutex per
 * pool guards every field of the pool and of its guests, and each call is
 * atomic with respect to the others.  Nothing sleeps or does I/O under it;
 * only pool_guest_add may allocate under it (when its table grows).
 * pool_destroy must not race with any other call on the same pool.
 *
 * Errors: every function returns 0 or -errno; results go through
 * out-parameters.  A failed call changes nothing.
 */
#ifndef EBB_POOL_H
#define EBB_POOL_H

#include <stdbool.h>
#include <stdint.h>

#define POOL_PAGE_SHIFT		12
#define POOL_PAGE_SIZE		(1ull << POOL_PAGE_SHIFT)

/* Largest max_pages a guest may have (2^40 pages = 4 PiB), and most guests
 * a pool holds.  Together they keep every sum far from overflowing 64 bits,
 * so the arithmetic inside needs no overflow checks beyond argument ones. */
#define POOL_GUEST_MAX_PAGES	(1ull << 40)
#define POOL_MAX_GUESTS		(1u << 20)

struct pool;

struct pool_info {
	uint64_t budget_bytes;		/* as last set */
	uint64_t budget_pages;		/* budget_bytes / POOL_PAGE_SIZE */
	uint64_t tot_pages;		/* Σ guests' resident pages */
	uint64_t store_pages;		/* Σ pages held for guests outside
					 * their RAM (tmem) */
	uint64_t claim_pages;		/* Σ outstanding claims */
	uint64_t free_pages;		/* budget - Σtot - Σstore, 0 if below */
	uint64_t unclaimed_pages;	/* free - Σclaim, 0 if below: room for new
					 * claims and unclaimed growth */
	uint64_t over_pages;		/* Σtot + Σstore + Σclaim - budget if above, else 0 */
	uint32_t guests;		/* guests in the pool */
};

struct pool_guest_info {
	uint64_t tot_pages;		/* host-resident pages */
	uint64_t max_pages;		/* configured size; tot + claim never above */
	uint64_t claim_pages;		/* outstanding claim, 0 if none */
	uint64_t store_pages;		/* held for it outside its RAM (tmem) */
	uint64_t excess_pages;		/* pages pool_set_resident recorded that did
					 * not fit, still uncovered (<= over_pages) */
	bool over_budget;		/* excess_pages > 0 */
};

/* Create a pool of @budget_bytes.  -ENOMEM, or the mutex's error. */
int pool_create(uint64_t budget_bytes, struct pool **out);

/* Free the pool and every guest record in it.  NULL is fine. */
void pool_destroy(struct pool *pool);

/* Change the budget.  Lowering it below Σtot + Σstore + Σclaim is allowed: existing
 * claims stay valid (their guests may still grow into them), but no new
 * claim or unclaimed growth fits until the pool is back under budget. */
int pool_set_budget(struct pool *pool, uint64_t budget_bytes);

/* Add guest @guest with @max_pages, resident 0, no claim.
 * -EEXIST (already there), -EINVAL (max_pages > POOL_GUEST_MAX_PAGES),
 * -ENOSPC (POOL_MAX_GUESTS reached), -ENOMEM. */
int pool_guest_add(struct pool *pool, uint64_t guest, uint64_t max_pages);

/* Remove @guest: its resident pages and its claim go back to the pool, as
 * when Xen destroys a domain.  -ENOENT. */
int pool_guest_remove(struct pool *pool, uint64_t guest);

/* Stake a claim so that @guest may grow to @total_pages in all.
 * @total_pages == 0 cancels the outstanding claim (fine if there is none).
 * -ENOENT: no such guest.
 * -EINVAL: a claim is already outstanding (cancel it first), or
 *          @total_pages <= tot, or @total_pages > max.
 * -ENOMEM: total_pages - tot is more than unclaimed. */
int pool_claim(struct pool *pool, uint64_t guest, uint64_t total_pages);

/* @guest became resident in @pages more pages (it populated them).
 * Its own claim is consumed first; the rest must fit in unclaimed.
 * -ENOENT; -E2BIG: tot + @pages > max (as Xen's assign_pages refuses
 * over-allocation; checked first, because no amount of freeing fixes it);
 * -ENOMEM: the part beyond the guest's claim does not fit.
 * @pages == 0 is a successful no-op. */
int pool_grow(struct pool *pool, uint64_t guest, uint64_t pages);

/* @guest gave back @pages pages (balloon inflate, free page reporting,
 * hole punched).  The claim is not restored.  -ENOENT; -EINVAL if @pages >
 * tot (the caller's accounting is wrong: use pool_set_resident). */
int pool_shrink(struct pool *pool, uint64_t guest, uint64_t pages);

/* Reconcile with a measurement: @guest is resident in @tot_pages.  Higher
 * than recorded: the claim is consumed first, then unclaimed; what does not
 * fit is recorded anyway (reality cannot be refused) and the guest is over
 * budget.  Lower: as pool_shrink.  *@over_budget (may be NULL) tells whether
 * the guest is over budget after the call.  -ENOENT; -EINVAL if @tot_pages >
 * max (no RAM file holds more than its size: the caller has the wrong guest
 * or the wrong max). */
int pool_set_resident(struct pool *pool, uint64_t guest, uint64_t tot_pages,
		      bool *over_budget);

/* Host memory held on @guest's behalf outside its RAM file (its pages in
 * the tmem store) grew by @delta_pages (> 0) or shrank (< 0).  It counts
 * against the budget like resident pages but is kept apart from tot, which
 * measurements of the RAM file overwrite, and from max.  Growth must fit
 * in unclaimed memory (a claim stakes RAM, not store pages): -ENOMEM
 * otherwise, which the store turns into a refused put.  -ENOENT;
 * -EINVAL if a shrink is larger than what is charged. */
int pool_charge_store(struct pool *pool, uint64_t guest, int64_t delta_pages);

/* Snapshot of the pool's totals. */
int pool_info(struct pool *pool, struct pool_info *out);

/* Snapshot of one guest.  -ENOENT. */
int pool_guest_info(struct pool *pool, uint64_t guest,
		    struct pool_guest_info *out);

/* Recount every guest under the lock and check the sums and both
 * invariants above.  0, or -EFAULT if anything disagrees.  O(guests); for
 * tests and debug commands, not hot paths. */
int pool_check(struct pool *pool);

/* Where pool_default_budget_bytes() found its number. */
enum pool_budget_source {
	POOL_BUDGET_CGROUP_V1,	/* memory.limit_in_bytes */
	POOL_BUDGET_CGROUP_V2,	/* memory.max */
	POOL_BUDGET_MEMINFO,	/* MemTotal minus the reserve */
};

/* The reserve kept for the host when the budget comes from MemTotal. */
#define POOL_RESERVE_MIN_BYTES	(512ull << 20)
#define POOL_RESERVE_PERCENT	5

/* The default budget for ebbd.  If ebbd's memory cgroup, or any ancestor of
 * it, has a limit below MemTotal, the smallest such limit (cgroup v1
 * <root>/sys/fs/cgroup/memory/<path>/memory.limit_in_bytes, else v2
 * <root>/sys/fs/cgroup/<path>/memory.max, <path> from
 * <root>/proc/self/cgroup).  Otherwise MemTotal (<root>/proc/meminfo) minus
 * max(POOL_RESERVE_MIN_BYTES, POOL_RESERVE_PERCENT % of it).  @root is a
 * prefix for tests; NULL or "" means the real files.  @source may be NULL.
 * -ENOENT / -EIO: /proc/meminfo missing or unreadable; -ENOMEM: MemTotal is
 * no larger than the reserve. */
int pool_default_budget_bytes(const char *root, uint64_t *out_bytes,
			      enum pool_budget_source *source);

#endif
