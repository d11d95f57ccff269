/*
 * Stress test for pool: threads hammer one pool with random claims, growth,
 * shrinking, cancels, measurements and guest removal/re-adding, and after
 * every step check that
 *	- pool_check() finds the accounting consistent,
 *	- Σtot + Σclaim <= budget (strictly: no step here may go over budget;
 *	  set_resident is only given values inside the guest's own claim),
 *	- the guests a thread owns look exactly as that thread's model of them
 *	  says, whatever the other threads did,
 *	- a growth covered by the guest's own claim never fails.
 *
 * Each thread owns a few guests (only it touches them, so it can model them
 * exactly) and all threads share a few more (only the invariants hold
 * there).  The budget is much smaller than the guests' max, so threads
 * really compete and ENOMEM really happens; the test asserts that it did.
 *
 * cmocka's asserts longjmp and are not for other threads: workers record
 * the first failure and stop; the main thread reports it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "pool.h"

#define NR_THREADS		8
#define OPS_PER_THREAD		100000
#define OWN_GUESTS		4	/* per thread */
#define SHARED_GUESTS		4
#define BUDGET_PAGES		4096
#define GUEST_MAX_PAGES		1536	/* 36 guests * 1536 >> 4096 */

enum op { OP_CLAIM, OP_CANCEL, OP_GROW, OP_SHRINK, OP_RESIDENT, OP_READD,
	  OP_MISSING, NR_OPS };

struct model {			/* what a thread knows of a guest it owns */
	uint64_t id;
	bool present;
	uint64_t tot, claim, max;
};

struct worker {
	pthread_t thread;
	pthread_barrier_t *start;	/* all threads begin together */
	struct pool *pool;
	unsigned idx;
	uint64_t rng;
	struct model own[OWN_GUESTS];
	/* results, for the main thread */
	unsigned long ok[NR_OPS], enomem[NR_OPS];
	char failure[256];
};

static uint64_t next_rand(uint64_t *s)
{
	/* xorshift64*: fast, good enough to pick ops, seeded per thread. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static uint64_t rand_upto(struct worker *w, uint64_t n)	/* [0, n] */
{
	return next_rand(&w->rng) % (n + 1);
}

#define FAIL_IF(w, cond, ...)						\
	do {								\
		if (cond) {						\
			int n_ = snprintf((w)->failure, sizeof((w)->failure), \
					  "thread %u line %d: ", (w)->idx, \
					  __LINE__);			\
			snprintf((w)->failure + n_, sizeof((w)->failure) - \
				 (size_t)n_, __VA_ARGS__);		\
			return false;					\
		}							\
	} while (0)

/* The checks after every step. */
static bool check_pool(struct worker *w)
{
	struct pool_info in;
	int rc;

	rc = pool_check(w->pool);
	FAIL_IF(w, rc != 0, "pool_check %d", rc);
	rc = pool_info(w->pool, &in);
	FAIL_IF(w, rc != 0, "pool_info %d", rc);
	FAIL_IF(w, in.tot_pages + in.claim_pages > in.budget_pages,
		"over budget: tot %" PRIu64 " + claim %" PRIu64 " > %" PRIu64,
		in.tot_pages, in.claim_pages, in.budget_pages);
	FAIL_IF(w, in.over_pages != 0, "over_pages %" PRIu64, in.over_pages);
	return true;
}

static bool check_model(struct worker *w, const struct model *m)
{
	struct pool_guest_info gi;
	int rc = pool_guest_info(w->pool, m->id, &gi);

	if (!m->present) {
		FAIL_IF(w, rc != -ENOENT, "removed guest %" PRIu64 ": %d",
			m->id, rc);
		return true;
	}
	FAIL_IF(w, rc != 0, "guest %" PRIu64 " info %d", m->id, rc);
	FAIL_IF(w, gi.tot_pages != m->tot || gi.claim_pages != m->claim ||
		   gi.max_pages != m->max || gi.over_budget,
		"guest %" PRIu64 ": pool says tot %" PRIu64 " claim %" PRIu64
		" max %" PRIu64 " over %d, model %" PRIu64 "/%" PRIu64 "/%"
		PRIu64, m->id, gi.tot_pages, gi.claim_pages, gi.max_pages,
		gi.over_budget, m->tot, m->claim, m->max);
	return true;
}

static void count(struct worker *w, enum op op, int rc)
{
	if (rc == 0)
		w->ok[op]++;
	else if (rc == -ENOMEM)
		w->enomem[op]++;
}

/* One random step on a guest this thread owns; the model predicts the
 * result wherever it does not depend on other threads. */
static bool step_own(struct worker *w, struct model *m)
{
	enum op op = (enum op)rand_upto(w, NR_OPS - 1);
	bool over = true;
	uint64_t n;
	int rc;

	if (!m->present && op != OP_MISSING)
		op = OP_READD;
	switch (op) {
	case OP_CLAIM:
		n = rand_upto(w, m->max + 2);
		rc = pool_claim(w->pool, m->id, n);
		if (n == 0) {
			FAIL_IF(w, rc != 0, "cancel %d", rc);
			m->claim = 0;
		} else if (m->claim || n <= m->tot || n > m->max) {
			FAIL_IF(w, rc != -EINVAL, "claim %" PRIu64 ": %d",
				n, rc);
		} else {
			FAIL_IF(w, rc != 0 && rc != -ENOMEM,
				"claim %" PRIu64 ": %d", n, rc);
			if (rc == 0)
				m->claim = n - m->tot;
		}
		break;
	case OP_CANCEL:
		rc = pool_claim(w->pool, m->id, 0);
		FAIL_IF(w, rc != 0, "cancel %d", rc);
		m->claim = 0;
		break;
	case OP_GROW:
		/* Mostly within the claim, so that claims get used. */
		n = rand_upto(w, 3) ? rand_upto(w, m->claim) :
				      rand_upto(w, m->max - m->tot + 2);
		rc = pool_grow(w->pool, m->id, n);
		if (m->tot + n > m->max) {
			FAIL_IF(w, rc != -E2BIG, "grow %" PRIu64 ": %d", n, rc);
		} else if (n <= m->claim) {
			/* The point of a claim: this cannot fail. */
			FAIL_IF(w, rc != 0, "claimed grow %" PRIu64 ": %d",
				n, rc);
		} else {
			FAIL_IF(w, rc != 0 && rc != -ENOMEM,
				"grow %" PRIu64 ": %d", n, rc);
		}
		if (rc == 0) {
			m->claim -= n < m->claim ? n : m->claim;
			m->tot += n;
		}
		break;
	case OP_SHRINK:
		n = rand_upto(w, m->tot + 1);
		rc = pool_shrink(w->pool, m->id, n);
		FAIL_IF(w, rc != (n > m->tot ? -EINVAL : 0),
			"shrink %" PRIu64 " of %" PRIu64 ": %d", n, m->tot, rc);
		if (rc == 0)
			m->tot -= n;
		break;
	case OP_RESIDENT:
		/* Anywhere from 0 to all of its claim used: always fits. */
		n = rand_upto(w, m->tot + m->claim);
		rc = pool_set_resident(w->pool, m->id, n, &over);
		FAIL_IF(w, rc != 0 || over, "set_resident %" PRIu64 ": %d %d",
			n, rc, over);
		if (n > m->tot)
			m->claim -= n - m->tot;
		m->tot = n;
		break;
	case OP_READD:
		if (m->present) {
			rc = pool_guest_remove(w->pool, m->id);
			FAIL_IF(w, rc != 0, "remove %d", rc);
			m->present = false;
			m->tot = m->claim = 0;
			break;
		}
		m->max = 1 + rand_upto(w, GUEST_MAX_PAGES - 1);
		rc = pool_guest_add(w->pool, m->id, m->max);
		FAIL_IF(w, rc != 0, "add %d", rc);
		m->present = true;
		break;
	case OP_MISSING:
		rc = pool_grow(w->pool, m->id + 1000000, 1);
		FAIL_IF(w, rc != -ENOENT, "grow missing: %d", rc);
		break;
	default:
		FAIL_IF(w, true, "op %d", op);
	}
	count(w, op, rc);
	return true;
}

/* A step on a guest every thread touches: only the pool's word counts. */
static bool step_shared(struct worker *w, uint64_t id)
{
	struct pool_guest_info gi;
	int rc;

	rc = pool_guest_info(w->pool, id, &gi);
	FAIL_IF(w, rc != 0, "shared info %d", rc);
	switch (rand_upto(w, 3)) {
	case 0:
		rc = pool_claim(w->pool, id, gi.tot_pages + 1 +
				rand_upto(w, 64));
		/* Another thread may have claimed or grown meanwhile. */
		FAIL_IF(w, rc != 0 && rc != -ENOMEM && rc != -EINVAL,
			"shared claim %d", rc);
		count(w, OP_CLAIM, rc);
		break;
	case 1:
		rc = pool_claim(w->pool, id, 0);
		FAIL_IF(w, rc != 0, "shared cancel %d", rc);
		break;
	case 2:
		rc = pool_grow(w->pool, id, rand_upto(w, 32));
		FAIL_IF(w, rc != 0 && rc != -ENOMEM && rc != -E2BIG,
			"shared grow %d", rc);
		count(w, OP_GROW, rc);
		break;
	default:
		rc = pool_shrink(w->pool, id, rand_upto(w, gi.tot_pages));
		FAIL_IF(w, rc != 0 && rc != -EINVAL, "shared shrink %d", rc);
		break;
	}
	return true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->start);
	for (unsigned i = 0; i < OPS_PER_THREAD; i++) {
		bool ok;

		if (rand_upto(w, 4) == 0) {
			ok = step_shared(w, 1 + rand_upto(w, SHARED_GUESTS - 1));
		} else {
			struct model *m = &w->own[rand_upto(w, OWN_GUESTS - 1)];

			ok = step_own(w, m) && check_model(w, m);
		}
		if (!ok || !check_pool(w))
			break;
	}
	return NULL;
}

static void stress(void **state)
{
	static struct worker workers[NR_THREADS];
	pthread_barrier_t start;
	unsigned long ok = 0, enomem = 0, grows_ok = 0;
	uint64_t sum_tot = 0, sum_claim = 0;
	struct pool_info in;
	struct pool *pool;

	(void)state;
	assert_int_equal(pool_create(BUDGET_PAGES * POOL_PAGE_SIZE, &pool), 0);
	for (uint64_t id = 1; id <= SHARED_GUESTS; id++)
		assert_int_equal(pool_guest_add(pool, id, GUEST_MAX_PAGES), 0);
	memset(workers, 0, sizeof(workers));
	assert_int_equal(pthread_barrier_init(&start, NULL, NR_THREADS), 0);
	for (unsigned t = 0; t < NR_THREADS; t++) {
		struct worker *w = &workers[t];

		w->pool = pool;
		w->start = &start;
		w->idx = t;
		w->rng = 0x9e3779b97f4a7c15ull * (t + 1);
		for (unsigned g = 0; g < OWN_GUESTS; g++) {
			w->own[g].id = 100 + t * OWN_GUESTS + g;
			w->own[g].max = GUEST_MAX_PAGES;
			w->own[g].present = true;
			assert_int_equal(pool_guest_add(pool, w->own[g].id,
							GUEST_MAX_PAGES), 0);
		}
	}
	for (unsigned t = 0; t < NR_THREADS; t++)
		assert_int_equal(pthread_create(&workers[t].thread, NULL,
						worker_main, &workers[t]), 0);
	for (unsigned t = 0; t < NR_THREADS; t++)
		assert_int_equal(pthread_join(workers[t].thread, NULL), 0);
	pthread_barrier_destroy(&start);

	for (unsigned t = 0; t < NR_THREADS; t++) {
		struct worker *w = &workers[t];

		if (w->failure[0])
			fail_msg("%s", w->failure);
		for (unsigned op = 0; op < NR_OPS; op++) {
			ok += w->ok[op];
			enomem += w->enomem[op];
		}
		grows_ok += w->ok[OP_GROW];
		for (unsigned g = 0; g < OWN_GUESTS; g++) {
			sum_tot += w->own[g].tot;
			sum_claim += w->own[g].claim;
		}
	}
	/* Not vacuous: things succeeded, and the budget really ran out. */
	print_message("# %lu ops succeeded, %lu refused ENOMEM\n", ok, enomem);
	assert_true(ok > NR_THREADS * OPS_PER_THREAD / 4);
	assert_true(enomem > 100);
	assert_true(grows_ok > 1000);

	/* Once quiet, the models of owned guests plus the shared guests add
	 * up to the pool's totals. */
	for (uint64_t id = 1; id <= SHARED_GUESTS; id++) {
		struct pool_guest_info gi;

		assert_int_equal(pool_guest_info(pool, id, &gi), 0);
		sum_tot += gi.tot_pages;
		sum_claim += gi.claim_pages;
	}
	assert_int_equal(pool_info(pool, &in), 0);
	assert_int_equal(in.tot_pages, sum_tot);
	assert_int_equal(in.claim_pages, sum_claim);
	assert_int_equal(pool_check(pool), 0);

	/* Removing everyone leaves an empty pool. */
	for (uint64_t id = 1; id <= SHARED_GUESTS; id++)
		assert_int_equal(pool_guest_remove(pool, id), 0);
	for (unsigned t = 0; t < NR_THREADS; t++)
		for (unsigned g = 0; g < OWN_GUESTS; g++)
			assert_int_equal(pool_guest_remove(pool,
				workers[t].own[g].id),
				workers[t].own[g].present ? 0 : -ENOENT);
	assert_int_equal(pool_info(pool, &in), 0);
	assert_int_equal(in.tot_pages, 0);
	assert_int_equal(in.claim_pages, 0);
	assert_int_equal(in.guests, 0);
	assert_int_equal(in.unclaimed_pages, BUDGET_PAGES);
	pool_destroy(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stress),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
