/*
 * Tests for pagestate (src/pagestate/pagestate.h): the discard steps on a
 * table in plain memory (2 MiB runs first, bounds, filters, a failing
 * punch, hostile bytes, bad arguments), and the protocol under
 * concurrency: a "guest" thread allocating, freeing and marking pages
 * volatile with the driver's CAS rules against a "host" thread discarding
 * and evicting, the punch simulated by zeroing a fake page array.  Also
 * run under ThreadSanitizer (suite 'tsan').
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pagestate.h"

#define WORDS	8	/* 64-bit words per fake page: enough to check */

struct fake {
	uint8_t *table;
	uint64_t first_pfn;
	uint64_t npages;
	uint64_t (*pages)[WORDS];	/* contents; a punch zeroes them */
	uint64_t punch_calls;
	uint64_t punched_pages;
	uint64_t huge_aligned;		/* punches of 512 at an aligned pfn */
	int fail_with;			/* a punch returns this if < 0 */
	uint64_t max_run;		/* longest run punched */
};

static int fake_punch(void *opaque, uint64_t pfn, uint64_t count)
{
	struct fake *f = opaque;
	uint64_t i = pfn - f->first_pfn;

	assert_true(pfn >= f->first_pfn && i + count <= f->npages);
	assert_true(count >= 1 && count <= PAGESTATE_RUN_PAGES);
	/* Every page of the run is held by the host while it punches. */
	for (uint64_t k = 0; k < count; k++)
		assert_int_equal(__atomic_load_n(&f->table[i + k], __ATOMIC_RELAXED),
				 PS_DISCARDING);
	if (f->fail_with < 0)
		return f->fail_with;
	memset(f->pages[i], 0, count * sizeof(f->pages[0]));
	f->punch_calls++;
	f->punched_pages += count;
	if (count == PAGESTATE_RUN_PAGES && pfn % PAGESTATE_RUN_PAGES == 0)
		f->huge_aligned++;
	if (count > f->max_run)
		f->max_run = count;
	return 0;
}

static struct pagestate *setup(struct fake *f, uint64_t first_pfn,
			       uint64_t npages, uint8_t fill)
{
	struct pagestate *ps;

	memset(f, 0, sizeof(*f));
	f->first_pfn = first_pfn;
	f->npages = npages;
	f->table = malloc(npages);
	f->pages = calloc(npages, sizeof(f->pages[0]));
	assert_non_null(f->table);
	assert_non_null(f->pages);
	memset(f->table, fill, npages);
	for (uint64_t i = 0; i < npages; i++)
		f->pages[i][0] = i + 1;
	assert_int_equal(pagestate_new(fake_punch, f, 42, &ps), 0);
	assert_int_equal(pagestate_attach(ps, f->table, first_pfn, npages), 0);
	return ps;
}

static void teardown(struct fake *f, struct pagestate *ps)
{
	pagestate_free(ps);
	free(f->table);
	free(f->pages);
}

static uint64_t count_of(struct pagestate *ps, enum pagestate_state s)
{
	uint64_t c[PS_NSTATES + 1];

	assert_int_equal(pagestate_count(ps, c), 0);
	return c[s];
}

/* A stable page in block 1 keeps that block out of the huge pass; the
 * small pass then takes the rest of it in two runs around that page. */
static void huge_runs_first(void **state)
{
	struct pagestate_stats st;
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 0, 4 * 512, PS_UNUSED);

	f.table[512 + 100] = PS_STABLE;
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, PAGESTATE_HUGE,
					   UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 3 * 512);
	assert_int_equal(f.huge_aligned, 3);
	assert_true(p.complete);
	assert_int_equal(f.table[512 + 99], PS_UNUSED);
	assert_int_equal(f.table[0], PS_DISCARDED);
	assert_int_equal(f.pages[0][0], 0);
	assert_int_equal(f.pages[512 + 99][0], 512 + 99 + 1);

	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED,
					   PAGESTATE_HUGE | PAGESTATE_SMALL,
					   UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 511);
	assert_int_equal(p.punches, 2);
	assert_int_equal(f.pages[512 + 100][0], 512 + 100 + 1);
	assert_int_equal(count_of(ps, PS_DISCARDED), 4 * 512 - 1);
	assert_int_equal(count_of(ps, PS_STABLE), 1);
	pagestate_get_stats(ps, &st);
	assert_int_equal(st.discarded_pages, 4 * 512 - 1);
	assert_int_equal(st.discarded_bytes, (4 * 512 - 1) * 4096ull);
	assert_int_equal(st.huge_runs, 3);
	assert_int_equal(st.punches, 5);
	assert_int_equal(st.punches, f.punch_calls);
	teardown(&f, ps);
}

/* A table starting mid-block: huge runs stay aligned in pfn space. */
static void huge_runs_aligned_in_pfns(void **state)
{
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 100, 3 * 512, PS_UNUSED);

	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, PAGESTATE_HUGE,
					   UINT64_MAX, &p), 0);
	/* pfns 100..1635: only 512..1023 and 1024..1535 are whole blocks. */
	assert_int_equal(p.discarded_pages, 1024);
	assert_int_equal(f.huge_aligned, 2);
	assert_int_equal(f.table[511 - 100], PS_UNUSED);
	assert_int_equal(f.table[512 - 100], PS_DISCARDED);
	assert_int_equal(f.table[1536 - 100], PS_UNUSED);
	teardown(&f, ps);
}

static void max_pages_bounds_a_call(void **state)
{
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 0, 4 * 512, PS_UNUSED);

	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED,
					   PAGESTATE_HUGE | PAGESTATE_SMALL,
					   700, &p), 0);
	assert_int_equal(p.discarded_pages, 700);
	assert_false(p.complete);
	assert_int_equal(f.huge_aligned, 1);
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, PAGESTATE_SMALL,
					   10, &p), 0);
	assert_int_equal(p.discarded_pages, 10);
	assert_int_equal(count_of(ps, PS_DISCARDED), 710);
	/* The rest, in runs of at most 512. */
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, PAGESTATE_SMALL,
					   UINT64_MAX, &p), 0);
	assert_true(p.complete);
	assert_int_equal(count_of(ps, PS_DISCARDED), 4 * 512);
	assert_true(f.max_run <= PAGESTATE_RUN_PAGES);
	teardown(&f, ps);
}

/* what picks unused, volatile or both; nothing else is ever touched. */
static void what_filters_states(void **state)
{
	static const uint8_t mix[] = { PS_STABLE, PS_UNUSED, PS_VOLATILE,
				       PS_DISCARDING, PS_DISCARDED, 5, 0xff };
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 0, 7 * 100, 0);
	uint64_t c[PS_NSTATES + 1];

	for (unsigned i = 0; i < 700; i++)
		f.table[i] = mix[i % 7];
	assert_int_equal(pagestate_count(ps, c), 0);
	assert_int_equal(c[PS_STABLE], 100);
	assert_int_equal(c[PS_OTHER], 200);
	assert_int_equal(pagestate_discard(ps, PAGESTATE_VOLATILE,
					   PAGESTATE_HUGE | PAGESTATE_SMALL,
					   UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 100);
	assert_int_equal(count_of(ps, PS_UNUSED), 100);
	assert_int_equal(pagestate_discard(ps, PAGESTATE_ALL, PAGESTATE_SMALL,
					   UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 100);
	assert_int_equal(pagestate_count(ps, c), 0);
	assert_int_equal(c[PS_STABLE], 100);
	assert_int_equal(c[PS_DISCARDING], 100);	/* the guest's, untouched */
	assert_int_equal(c[PS_DISCARDED], 300);
	assert_int_equal(c[PS_OTHER], 200);
	for (unsigned i = 0; i < 700; i++)
		if (mix[i % 7] == PS_STABLE || mix[i % 7] > PS_DISCARDED)
			assert_int_equal(f.pages[i][0], i + 1);
	teardown(&f, ps);
}

/* A punch that fails leaves the pages as they were, states included. */
static void failed_punch_restores(void **state)
{
	struct pagestate_stats st;
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 0, 1024, PS_UNUSED);

	for (unsigned i = 0; i < 1024; i += 3)
		f.table[i] = PS_VOLATILE;
	f.fail_with = -EIO;
	assert_int_equal(pagestate_discard(ps, PAGESTATE_ALL,
					   PAGESTATE_HUGE | PAGESTATE_SMALL,
					   UINT64_MAX, &p), -EIO);
	assert_int_equal(p.discarded_pages, 0);
	for (unsigned i = 0; i < 1024; i++) {
		assert_int_equal(f.table[i], i % 3 ? PS_UNUSED : PS_VOLATILE);
		assert_int_equal(f.pages[i][0], i + 1);
	}
	pagestate_get_stats(ps, &st);
	assert_int_equal(st.punch_failures, 1);
	assert_int_equal(st.discarded_pages, 0);
	f.fail_with = 0;
	assert_int_equal(pagestate_discard(ps, PAGESTATE_ALL, PAGESTATE_HUGE,
					   UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 1024);
	teardown(&f, ps);
}

static void evictor_takes_only_discardable(void **state)
{
	struct pagestate_stats st;
	struct pagestate_pass p;
	struct fake f;
	struct pagestate *ps = setup(&f, 0, 8192, PS_STABLE);
	uint64_t total = 0;

	for (unsigned i = 0; i < 8192; i += 2)
		f.table[i] = i % 4 ? PS_VOLATILE : PS_UNUSED;
	assert_int_equal(pagestate_evict_random(ps, PAGESTATE_ALL, 100, &p), 0);
	assert_int_equal(p.discarded_pages, 100);
	total += p.discarded_pages;
	for (int k = 0; k < 200; k++) {
		assert_int_equal(pagestate_evict_random(ps, PAGESTATE_UNUSED,
							1000, &p), 0);
		total += p.discarded_pages;
	}
	for (unsigned i = 1; i < 8192; i += 2) {
		assert_int_equal(f.table[i], PS_STABLE);
		assert_int_equal(f.pages[i][0], i + 1);
	}
	/* Random picks cover the table: every unused page is gone. */
	assert_int_equal(count_of(ps, PS_UNUSED), 0);
	pagestate_get_stats(ps, &st);
	assert_int_equal(st.evicted_pages, total);
	assert_int_equal(st.discarded_pages, total);
	assert_int_equal(f.punched_pages, total);
	teardown(&f, ps);
}

static void bad_arguments(void **state)
{
	struct pagestate_pass p;
	struct pagestate *ps;
	uint64_t c[PS_NSTATES + 1];
	uint8_t t[16] = { 0 };
	unsigned what;
	struct fake f = { 0 };

	assert_int_equal(pagestate_new(NULL, NULL, 1, &ps), -EINVAL);
	assert_int_equal(pagestate_new(fake_punch, &f, 0, &ps), 0);
	assert_false(pagestate_attached(ps));
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, PAGESTATE_HUGE,
					   1, &p), -ENODEV);
	assert_int_equal(pagestate_evict_random(ps, PAGESTATE_UNUSED, 1, &p),
			 -ENODEV);
	assert_int_equal(pagestate_count(ps, c), -ENODEV);
	assert_int_equal(pagestate_attach(ps, NULL, 0, 16), -EINVAL);
	assert_int_equal(pagestate_attach(ps, t, 0, 0), -EINVAL);
	assert_int_equal(pagestate_attach(ps, t, UINT64_MAX - 4, 16), -EINVAL);
	assert_int_equal(pagestate_attach(ps, t, UINT64_MAX / 4096, 16), -EINVAL);
	assert_int_equal(pagestate_attach(ps, t, 0, 16), 0);
	assert_true(pagestate_attached(ps));
	assert_int_equal(pagestate_discard(ps, 0, PAGESTATE_HUGE, 1, &p), -EINVAL);
	assert_int_equal(pagestate_discard(ps, 1u << PS_DISCARDED,
					   PAGESTATE_HUGE, 1, &p), -EINVAL);
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, 0, 1, &p),
			 -EINVAL);
	assert_int_equal(pagestate_discard(ps, PAGESTATE_UNUSED, 4, 1, &p),
			 -EINVAL);
	assert_int_equal(pagestate_evict_random(ps, 8, 1, &p), -EINVAL);
	pagestate_detach(ps);
	assert_false(pagestate_attached(ps));
	assert_int_equal(pagestate_what_parse("unused", &what), 0);
	assert_int_equal(what, PAGESTATE_UNUSED);
	assert_int_equal(pagestate_what_parse("all", &what), 0);
	assert_int_equal(what, PAGESTATE_ALL);
	assert_int_equal(pagestate_what_parse("stable", &what), -EINVAL);
	assert_string_equal(pagestate_state_name(PS_DISCARDING), "discarding");
	pagestate_free(ps);
}

/* ---- host and guest as threads ---------------------------------------- */

#define SIM_PAGES	(8 * 512)
#define SIM_OPS		400000

struct sim {
	struct fake f;
	struct pagestate *ps;
	int done;		/* atomic: the guest has finished */
	uint64_t host_discarded;	/* sum of the host's passes */
	uint64_t guest_zero_allocs;	/* allocations that found discarded */
	uint64_t guest_rereads;		/* volatile pages found discarded */
	uint64_t guest_waits;		/* allocations that found discarding */
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(uint64_t *page, uint64_t tag)
{
	for (int w = 0; w < WORDS; w++)
		page[w] = tag;
}

static void expect(const uint64_t *page, uint64_t tag)
{
	for (int w = 0; w < WORDS; w++)
		assert_true(page[w] == tag);
}

/*
 * The driver's rule for taking a page it does not hold (alloc, or use of
 * a volatile page): CAS to stable; wait while discarding (the entry then
 * becomes discarded or, after a failed punch, its old state again);
 * discarded is taken by CAS too.  Returns the state it took it from.
 */
static uint8_t guest_take(struct sim *s, uint64_t i, uint8_t from)
{
	uint8_t *e = &s->f.table[i];

	for (;;) {
		uint8_t v = __atomic_load_n(e, __ATOMIC_ACQUIRE);

		if (v == PS_DISCARDING) {
			s->guest_waits++;
			sched_yield();
			continue;
		}
		assert_true(v == from || v == PS_DISCARDED);
		if (__atomic_compare_exchange_n(e, &v, PS_STABLE, false,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return v;
	}
}

/* The guest: pages it holds (tag != 0) must never change; a page it finds
 * discarded must read as zeros; a volatile page comes back intact or
 * discarded.  Free is a release store of unused. */
static void *guest_thread(void *arg)
{
	struct sim *s = arg;
	uint64_t *tag = calloc(SIM_PAGES, sizeof(*tag));
	uint8_t *vol = calloc(SIM_PAGES, 1);
	uint64_t seed = 0x1234567;

	assert_non_null(tag);
	assert_non_null(vol);
	for (uint64_t op = 1; op <= SIM_OPS; op++) {
		uint64_t r = rnd(&seed), i = r % SIM_PAGES;
		uint64_t *page = s->f.pages[i];
		uint8_t was;

		if (tag[i] && !vol[i]) {
			expect(page, tag[i]);
			if ((r >> 32) % 3 == 0) {
				vol[i] = 1;	/* clean page cache */
				__atomic_store_n(&s->f.table[i], PS_VOLATILE,
						 __ATOMIC_RELEASE);
			} else {
				tag[i] = 0;
				__atomic_store_n(&s->f.table[i], PS_UNUSED,
						 __ATOMIC_RELEASE);
			}
		} else if (vol[i]) {
			was = guest_take(s, i, PS_VOLATILE);
			vol[i] = 0;
			if (was == PS_DISCARDED) {
				expect(page, 0);
				s->guest_rereads++;
				fill(page, tag[i]);	/* read it again */
			}
			expect(page, tag[i]);
		} else {
			was = guest_take(s, i, PS_UNUSED);
			if (was == PS_DISCARDED) {
				expect(page, 0);
				s->guest_zero_allocs++;
			}
			tag[i] = (op << 16) | (i & 0xffff);
			fill(page, tag[i]);
		}
	}
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	free(tag);
	free(vol);
	return NULL;
}

static void *host_thread(void *arg)
{
	struct sim *s = arg;
	uint64_t seed = 99;

	while (!__atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
		struct pagestate_pass p;
		uint64_t r = rnd(&seed);

		if (r % 4 == 0)
			assert_int_equal(pagestate_discard(s->ps, PAGESTATE_ALL,
				PAGESTATE_HUGE | PAGESTATE_SMALL, 1 + r % 2048, &p), 0);
		else
			assert_int_equal(pagestate_evict_random(s->ps,
				r & 4 ? PAGESTATE_ALL : PAGESTATE_UNUSED, 256, &p), 0);
		s->host_discarded += p.discarded_pages;
	}
	return NULL;
}

static void guest_and_host_race(void **state)
{
	struct pagestate_stats st;
	struct sim *s = calloc(1, sizeof(*s));
	pthread_t g, h;
	uint64_t c[PS_NSTATES + 1], sum = 0;

	assert_non_null(s);
	/* Every page starts unused with non-zero contents. */
	s->ps = setup(&s->f, 0, SIM_PAGES, PS_UNUSED);
	assert_int_equal(pthread_create(&h, NULL, host_thread, s), 0);
	assert_int_equal(pthread_create(&g, NULL, guest_thread, s), 0);
	pthread_join(g, NULL);
	pthread_join(h, NULL);

	pagestate_get_stats(s->ps, &st);
	assert_int_equal(st.discarded_pages, s->host_discarded);
	assert_int_equal(st.discarded_pages, s->f.punched_pages);
	assert_int_equal(st.punches, s->f.punch_calls);
	assert_int_equal(st.discarded_bytes, st.discarded_pages * 4096);
	assert_int_equal(st.violations, 0);
	assert_int_equal(st.punch_failures, 0);
	assert_int_equal(pagestate_count(s->ps, c), 0);
	for (int k = 0; k <= PS_NSTATES; k++)
		sum += c[k];
	assert_int_equal(sum, SIM_PAGES);
	assert_int_equal(c[PS_DISCARDING], 0);
	assert_int_equal(c[PS_OTHER], 0);
	/* Discarded now + taken back by the guest = all ever discarded. */
	assert_int_equal(c[PS_DISCARDED] + s->guest_zero_allocs + s->guest_rereads,
			 st.discarded_pages);
	/* The race was real: both sides got somewhere. */
	assert_true(st.discarded_pages > 1000);
	assert_true(s->guest_zero_allocs > 100);
	print_message("# discarded %llu pages in %llu punches (%llu huge), "
		      "CAS lost %llu, guest: %llu zero allocs, %llu re-reads, "
		      "%llu waits\n",
		      (unsigned long long)st.discarded_pages,
		      (unsigned long long)st.punches,
		      (unsigned long long)st.huge_runs,
		      (unsigned long long)st.cas_failures,
		      (unsigned long long)s->guest_zero_allocs,
		      (unsigned long long)s->guest_rereads,
		      (unsigned long long)s->guest_waits);
	teardown(&s->f, s->ps);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(huge_runs_first),
		cmocka_unit_test(huge_runs_aligned_in_pfns),
		cmocka_unit_test(max_pages_bounds_a_call),
		cmocka_unit_test(what_filters_states),
		cmocka_unit_test(failed_punch_restores),
		cmocka_unit_test(evictor_takes_only_discardable),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(guest_and_host_race),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
