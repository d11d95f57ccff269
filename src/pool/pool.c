/*
 * pool: budget, per-guest accounting and claims.  See pool.h for the
 * contract; this comment is about how it is kept.
 *
 * Layout.  One mutex, the pool's totals, and an array of guest records
 * sorted by id (binary search: guests come and go rarely, are looked up on
 * every call, and number in the tens to thousands).  The totals are kept
 * incrementally, so every call but add/remove/check is O(log guests) and
 * independent of the sizes involved.
 *
 * Arithmetic.  "commit" is Σtot + Σstore + Σclaim.  Then
 *	unclaimed = budget - commit	(clamped at 0)
 *	over      = commit - budget	(clamped at 0)
 * and at most one of them is non-zero.  Xen states its checks as "free
 * minus outstanding claims"; budget - commit is the same number.
 *
 * Growth that is partly claimed.  Xen's allocator admits an allocation if
 * the domain's own claim covers all of it, else requires all of it to fit
 * in unclaimed memory.  Here the request is split: the claimed part always
 * succeeds and only the rest must fit in unclaimed.  That is exactly the
 * condition under which invariant 2 still holds afterwards, so nothing that
 * fits is refused.
 *
 * Overshoot.  Invariant 2 may be broken by two things only: a measurement
 * (pool_set_resident) and an operator (pool_set_budget).  over_allowed_pages
 * records how far they took it.  Every other call must leave over no larger
 * than it found it, and lowers over_allowed_pages with it, so pool_check can
 * tell a legitimate overshoot from an accounting bug even with asserts off.
 */
#include "pool.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool_guest {
	uint64_t id;			/* caller's name; sort key; pool->lock */
	uint64_t tot_pages;		/* resident pages; pool->lock */
	uint64_t max_pages;		/* configured pages; pool->lock */
	uint64_t claim_pages;		/* outstanding claim; pool->lock */
	uint64_t excess_pages;		/* recorded beyond budget by set_resident,
					 * not yet given back; pool->lock */
	uint64_t store_pages;		/* held for it outside its RAM; pool->lock */
};

struct pool {
	pthread_mutex_t lock;		/* guards everything below */
	uint64_t budget_bytes;		/* as set; lock */
	uint64_t budget_pages;		/* budget_bytes >> POOL_PAGE_SHIFT; lock */
	uint64_t tot_pages;		/* Σ guests' tot_pages; lock */
	uint64_t claim_pages;		/* Σ guests' claim_pages; lock */
	uint64_t excess_pages;		/* Σ guests' excess_pages; lock */
	uint64_t store_pages;		/* Σ guests' store_pages; lock */
	uint64_t over_allowed_pages;	/* overshoot reality allowed; lock */
	struct pool_guest *guests;	/* sorted by id, nr_guests used; lock */
	uint32_t nr_guests;		/* lock */
	uint32_t cap_guests;		/* slots allocated in guests; lock */
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t commit_pages(const struct pool *pool)
{
	return pool->tot_pages + pool->store_pages + pool->claim_pages;
}

static uint64_t unclaimed_pages(const struct pool *pool)
{
	uint64_t c = commit_pages(pool);

	return pool->budget_pages > c ? pool->budget_pages - c : 0;
}

static uint64_t over_pages(const struct pool *pool)
{
	uint64_t c = commit_pages(pool);

	return c > pool->budget_pages ? c - pool->budget_pages : 0;
}

/* Index of @id in the sorted array, or where it would be inserted. */
static uint32_t guest_slot(const struct pool *pool, uint64_t id, bool *found)
{
	uint32_t lo = 0, hi = pool->nr_guests;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (pool->guests[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < pool->nr_guests && pool->guests[lo].id == id;
	return lo;
}

static struct pool_guest *guest_find(struct pool *pool, uint64_t id)
{
	bool found;
	uint32_t i = guest_slot(pool, id, &found);

	return found ? &pool->guests[i] : NULL;
}

static void guest_assert(const struct pool_guest *g)
{
	assert(g->max_pages <= POOL_GUEST_MAX_PAGES);
	assert(g->tot_pages <= g->max_pages);
	assert(g->claim_pages <= g->max_pages - g->tot_pages);
	(void)g;
}

/* Give back @pages of @g's excess (they were the ones that did not fit). */
static void guest_drop_excess(struct pool *pool, struct pool_guest *g,
			      uint64_t pages)
{
	uint64_t n = min_u64(g->excess_pages, pages);

	g->excess_pages -= n;
	pool->excess_pages -= n;
}

/* @g gave back @pages of its tot (they were resident; the claim is not
 * restored, as in Xen). */
static void guest_give_back(struct pool *pool, struct pool_guest *g,
			    uint64_t pages)
{
	g->tot_pages -= pages;
	pool->tot_pages -= pages;
	guest_drop_excess(pool, g, pages);
}

/*
 * End of every change, under the lock.  @forced: the change was a
 * measurement or a budget cut, which may leave the pool over budget.
 */
static void pool_settle(struct pool *pool, bool forced)
{
	uint64_t over = over_pages(pool);

	if (forced) {
		pool->over_allowed_pages = over;
	} else {
		/* Nothing the pool can refuse may push it further over. */
		assert(over <= pool->over_allowed_pages);
		pool->over_allowed_pages = min_u64(pool->over_allowed_pages, over);
	}
	if (over == 0 && pool->excess_pages) {
		/* Back under budget: nobody is over it any more.  O(guests),
		 * but only on the way out of an overshoot. */
		for (uint32_t i = 0; i < pool->nr_guests; i++)
			pool->guests[i].excess_pages = 0;
		pool->excess_pages = 0;
	}
}

int pool_create(uint64_t budget_bytes, struct pool **out)
{
	struct pool *pool;
	int rc;

	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	rc = pthread_mutex_init(&pool->lock, NULL);
	if (rc)
		goto err_free;
	pool->budget_bytes = budget_bytes;
	pool->budget_pages = budget_bytes >> POOL_PAGE_SHIFT;
	*out = pool;
	return 0;

err_free:
	free(pool);
	return -rc;
}

void pool_destroy(struct pool *pool)
{
	if (!pool)
		return;
	pthread_mutex_destroy(&pool->lock);
	free(pool->guests);
	free(pool);
}

int pool_set_budget(struct pool *pool, uint64_t budget_bytes)
{
	pthread_mutex_lock(&pool->lock);
	pool->budget_bytes = budget_bytes;
	pool->budget_pages = budget_bytes >> POOL_PAGE_SHIFT;
	pool_settle(pool, true);
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

int pool_guest_add(struct pool *pool, uint64_t guest, uint64_t max_pages)
{
	struct pool_guest *g;
	uint32_t i;
	bool found;
	int rc = 0;

	if (max_pages > POOL_GUEST_MAX_PAGES)
		return -EINVAL;
	pthread_mutex_lock(&pool->lock);
	i = guest_slot(pool, guest, &found);
	if (found) {
		rc = -EEXIST;
		goto out;
	}
	if (pool->nr_guests >= POOL_MAX_GUESTS) {
		rc = -ENOSPC;
		goto out;
	}
	if (pool->nr_guests == pool->cap_guests) {
		uint32_t cap = pool->cap_guests ? pool->cap_guests * 2 : 16;

		g = realloc(pool->guests, (size_t)cap * sizeof(*g));
		if (!g) {
			rc = -ENOMEM;
			goto out;
		}
		pool->guests = g;
		pool->cap_guests = cap;
	}
	g = &pool->guests[i];
	memmove(g + 1, g, (size_t)(pool->nr_guests - i) * sizeof(*g));
	*g = (struct pool_guest){ .id = guest, .max_pages = max_pages };
	pool->nr_guests++;
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_guest_remove(struct pool *pool, uint64_t guest)
{
	struct pool_guest *g;
	uint32_t i;
	bool found;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	i = guest_slot(pool, guest, &found);
	if (!found) {
		rc = -ENOENT;
		goto out;
	}
	g = &pool->guests[i];
	pool->tot_pages -= g->tot_pages;
	pool->claim_pages -= g->claim_pages;
	pool->excess_pages -= g->excess_pages;
	pool->store_pages -= g->store_pages;
	memmove(g, g + 1, (size_t)(pool->nr_guests - i - 1) * sizeof(*g));
	pool->nr_guests--;
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_claim(struct pool *pool, uint64_t guest, uint64_t total_pages)
{
	struct pool_guest *g;
	uint64_t claim;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	if (total_pages == 0) {
		pool->claim_pages -= g->claim_pages;
		g->claim_pages = 0;
		goto settle;
	}
	/* One claim at a time: a second one would have to say whether it
	 * replaces or adds to the first, and Xen refuses to guess. */
	if (g->claim_pages) {
		rc = -EINVAL;
		goto out;
	}
	/* A claim is a total to grow to: at or below tot there is nothing to
	 * stake, and above max the guest could never use it. */
	if (total_pages <= g->tot_pages || total_pages > g->max_pages) {
		rc = -EINVAL;
		goto out;
	}
	claim = total_pages - g->tot_pages;
	if (claim > unclaimed_pages(pool)) {
		rc = -ENOMEM;
		goto out;
	}
	g->claim_pages = claim;
	pool->claim_pages += claim;
settle:
	guest_assert(g);
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

/*
 * Move @pages into @g's tot: claimed part first, then unclaimed.  Returns
 * how many pages of the rest did not fit in unclaimed (and were recorded
 * anyway); pool_grow checks beforehand that this is 0.
 */
static uint64_t guest_take(struct pool *pool, struct pool_guest *g,
			   uint64_t pages)
{
	uint64_t from_claim = min_u64(g->claim_pages, pages);
	uint64_t rest = pages - from_claim;
	uint64_t unfit = rest - min_u64(rest, unclaimed_pages(pool));

	g->claim_pages -= from_claim;
	pool->claim_pages -= from_claim;
	g->tot_pages += pages;
	pool->tot_pages += pages;
	return unfit;
}

int pool_grow(struct pool *pool, uint64_t guest, uint64_t pages)
{
	struct pool_guest *g;
	uint64_t rest;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	if (pages > g->max_pages - g->tot_pages) {
		rc = -E2BIG;
		goto out;
	}
	rest = pages - min_u64(g->claim_pages, pages);
	if (rest > unclaimed_pages(pool)) {
		rc = -ENOMEM;
		goto out;
	}
	rest = guest_take(pool, g, pages);
	assert(rest == 0);
	guest_assert(g);
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_shrink(struct pool *pool, uint64_t guest, uint64_t pages)
{
	struct pool_guest *g;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	if (pages > g->tot_pages) {
		rc = -EINVAL;
		goto out;
	}
	guest_give_back(pool, g, pages);
	guest_assert(g);
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_set_resident(struct pool *pool, uint64_t guest, uint64_t tot_pages,
		      bool *over_budget)
{
	struct pool_guest *g;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	if (tot_pages > g->max_pages) {
		rc = -EINVAL;
		goto out;
	}
	if (tot_pages >= g->tot_pages) {
		uint64_t unfit = guest_take(pool, g, tot_pages - g->tot_pages);

		g->excess_pages += unfit;
		pool->excess_pages += unfit;
	} else {
		guest_give_back(pool, g, g->tot_pages - tot_pages);
	}
	guest_assert(g);
	pool_settle(pool, true);
	if (over_budget)
		*over_budget = min_u64(g->excess_pages, over_pages(pool)) > 0;
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_charge_store(struct pool *pool, uint64_t guest, int64_t delta_pages)
{
	struct pool_guest *g;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	if (delta_pages >= 0) {
		/* A claim stakes RAM to be populated, not store pages: those
		 * must fit in what nobody has claimed. */
		if ((uint64_t)delta_pages > unclaimed_pages(pool)) {
			rc = -ENOMEM;
			goto out;
		}
		g->store_pages += (uint64_t)delta_pages;
		pool->store_pages += (uint64_t)delta_pages;
	} else {
		uint64_t drop = (uint64_t)-(delta_pages + 1) + 1;

		if (drop > g->store_pages) {
			rc = -EINVAL;
			goto out;
		}
		g->store_pages -= drop;
		pool->store_pages -= drop;
	}
	pool_settle(pool, false);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_info(struct pool *pool, struct pool_info *out)
{
	uint64_t used;

	pthread_mutex_lock(&pool->lock);
	used = pool->tot_pages + pool->store_pages;
	out->budget_bytes = pool->budget_bytes;
	out->budget_pages = pool->budget_pages;
	out->tot_pages = pool->tot_pages;
	out->store_pages = pool->store_pages;
	out->claim_pages = pool->claim_pages;
	out->free_pages = pool->budget_pages > used ?
			  pool->budget_pages - used : 0;
	out->unclaimed_pages = unclaimed_pages(pool);
	out->over_pages = over_pages(pool);
	out->guests = pool->nr_guests;
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

int pool_guest_info(struct pool *pool, uint64_t guest,
		    struct pool_guest_info *out)
{
	struct pool_guest *g;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	g = guest_find(pool, guest);
	if (!g) {
		rc = -ENOENT;
		goto out;
	}
	out->tot_pages = g->tot_pages;
	out->max_pages = g->max_pages;
	out->claim_pages = g->claim_pages;
	out->store_pages = g->store_pages;
	/* Others giving back pages covers part of this guest's excess. */
	out->excess_pages = min_u64(g->excess_pages, over_pages(pool));
	out->over_budget = out->excess_pages > 0;
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int pool_check(struct pool *pool)
{
	uint64_t tot = 0, claim = 0, excess = 0, store = 0;
	int rc = 0;

	pthread_mutex_lock(&pool->lock);
	if (pool->nr_guests > pool->cap_guests)
		rc = -EFAULT;
	for (uint32_t i = 0; rc == 0 && i < pool->nr_guests; i++) {
		const struct pool_guest *g = &pool->guests[i];

		if (i && pool->guests[i - 1].id >= g->id)
			rc = -EFAULT;
		if (g->max_pages > POOL_GUEST_MAX_PAGES ||
		    g->tot_pages > g->max_pages ||
		    g->claim_pages > g->max_pages - g->tot_pages)
			rc = -EFAULT;
		tot += g->tot_pages;
		claim += g->claim_pages;
		excess += g->excess_pages;
		store += g->store_pages;
	}
	if (rc == 0 && (tot != pool->tot_pages || claim != pool->claim_pages ||
			excess != pool->excess_pages || store != pool->store_pages))
		rc = -EFAULT;
	if (rc == 0 && pool->budget_pages != pool->budget_bytes >> POOL_PAGE_SHIFT)
		rc = -EFAULT;
	/* Invariant 2: within budget, or no further over than reality took it. */
	if (rc == 0 && over_pages(pool) > pool->over_allowed_pages)
		rc = -EFAULT;
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

/* ---- default budget ---------------------------------------------------- */

/* Read a one-number file: a decimal, or "max" (cgroup v2) as UINT64_MAX.
 * -ENOENT and friends if it cannot be read, -EINVAL if it is not that. */
static int read_limit_file(const char *path, uint64_t *out)
{
	char buf[64], *end;
	unsigned long long v;
	size_t n;
	FILE *f;

	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strcmp(buf, "max") == 0) {
		*out = UINT64_MAX;
		return 0;
	}
	if (!isdigit((unsigned char)buf[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || *end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Smallest limit in @file of cgroup @cg (a path like "/a/b") and each of
 * its ancestors under the hierarchy mounted at @mnt: a child never gets more
 * than its parent allows, and the limit may sit anywhere up the tree.  Files
 * that are missing (root of v2, a cgroup namespace hiding the real path) are
 * skipped.  UINT64_MAX if none has a limit.
 */
static uint64_t cgroup_min_limit(const char *mnt, const char *cg,
				 const char *file)
{
	char dir[PATH_MAX], path[PATH_MAX];
	uint64_t best = UINT64_MAX, v = 0;
	size_t len;
	int n;

	n = snprintf(dir, sizeof(dir), "%s", cg);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return best;
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		dir[--len] = '\0';
	for (;;) {
		n = snprintf(path, sizeof(path), "%s%s/%s", mnt,
			     strcmp(dir, "/") == 0 ? "" : dir, file);
		if (n >= 0 && (size_t)n < sizeof(path) &&
		    read_limit_file(path, &v) == 0 && v < best)
			best = v;
		if (len <= 1)
			break;
		while (len > 0 && dir[len - 1] != '/')
			dir[--len] = '\0';
		while (len > 1 && dir[len - 1] == '/')
			dir[--len] = '\0';
		if (len == 0)
			break;
	}
	return best;
}

/* From "<root>/proc/self/cgroup" (lines "id:controllers:path") the v1 memory
 * path and the v2 path, each "" if absent. */
static void cgroup_paths(const char *root, char *v1, char *v2, size_t size)
{
	char path[PATH_MAX];
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	v1[0] = v2[0] = '\0';
	if (snprintf(path, sizeof(path), "%s/proc/self/cgroup", root) >=
	    (int)sizeof(path))
		return;
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		char *ctl = strchr(line, ':'), *cg, *tok, *save;
		bool memory = false;

		if (!ctl)
			continue;
		*ctl++ = '\0';
		cg = strchr(ctl, ':');
		if (!cg)
			continue;
		*cg++ = '\0';
		cg[strcspn(cg, "\n")] = '\0';
		if (cg[0] != '/' || strlen(cg) >= size)
			continue;
		if (strcmp(line, "0") == 0 && ctl[0] == '\0') {
			strcpy(v2, cg);
			continue;
		}
		for (tok = strtok_r(ctl, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save))
			memory |= strcmp(tok, "memory") == 0;
		if (memory)
			strcpy(v1, cg);
	}
	free(line);
	fclose(f);
}

static int meminfo_total_bytes(const char *root, uint64_t *out)
{
	char path[PATH_MAX];
	char *line = NULL;
	size_t cap = 0;
	unsigned long long kb;
	int rc = -EIO;
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/proc/meminfo", root) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char unit[4];

		if (sscanf(line, "MemTotal: %llu %3s", &kb, unit) == 2 &&
		    strcmp(unit, "kB") == 0 && kb <= UINT64_MAX >> 10) {
			*out = (uint64_t)kb << 10;
			rc = 0;
			break;
		}
	}
	free(line);
	fclose(f);
	return rc;
}

int pool_default_budget_bytes(const char *root, uint64_t *out_bytes,
			      enum pool_budget_source *source)
{
	char v1[PATH_MAX], v2[PATH_MAX], mnt[PATH_MAX];
	uint64_t total = 0, reserve, lim1 = UINT64_MAX, lim2 = UINT64_MAX;
	int rc;

	if (!root)
		root = "";
	rc = meminfo_total_bytes(root, &total);
	if (rc)
		return rc;
	cgroup_paths(root, v1, v2, sizeof(v1));
	if (v1[0] && snprintf(mnt, sizeof(mnt), "%s/sys/fs/cgroup/memory",
			      root) < (int)sizeof(mnt))
		lim1 = cgroup_min_limit(mnt, v1, "memory.limit_in_bytes");
	if (v2[0] && snprintf(mnt, sizeof(mnt), "%s/sys/fs/cgroup", root) <
		     (int)sizeof(mnt))
		lim2 = cgroup_min_limit(mnt, v2, "memory.max");

	/* A limit at or above MemTotal (v1 says "unlimited" as ~2^63) limits
	 * nothing: the host reserve rule applies instead. */
	if (min_u64(lim1, lim2) < total) {
		*out_bytes = min_u64(lim1, lim2);
		if (source)
			*source = lim1 <= lim2 ? POOL_BUDGET_CGROUP_V1 :
						 POOL_BUDGET_CGROUP_V2;
		return 0;
	}
	reserve = total / 100 * POOL_RESERVE_PERCENT;
	if (reserve < POOL_RESERVE_MIN_BYTES)
		reserve = POOL_RESERVE_MIN_BYTES;
	if (total <= reserve)
		return -ENOMEM;
	*out_bytes = total - reserve;
	if (source)
		*source = POOL_BUDGET_MEMINFO;
	return 0;
}
