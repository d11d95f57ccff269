/*
 * pagestate: discarding guest pages by compare-and-swap on the page-state
 * table the guest shares with ebbd (contract, steps and threading rule in
 * pagestate.h; the protocol in docs/ebb-device.md, section 6).
 */
#include "pagestate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pagestate {
	pagestate_punch_fn punch;	/* removes a run's backing */
	void *opaque;			/* its argument */
	uint8_t *table;			/* shared with the guest; NULL: none */
	uint64_t first_pfn;		/* pfn of entry 0 */
	uint64_t npages;		/* entries */
	uint64_t rng;			/* evictor's xorshift state, never 0 */
	struct pagestate_stats st;	/* cumulative counters */
	/* The states the run held now (step 1) had before we took it, to put
	 * back if its punch fails.  A run is never longer. */
	uint8_t prev[PAGESTATE_RUN_PAGES];
};

static const char *const state_names[PS_NSTATES + 1] = {
	[PS_STABLE] = "stable",
	[PS_UNUSED] = "unused",
	[PS_VOLATILE] = "volatile",
	[PS_DISCARDING] = "discarding",
	[PS_DISCARDED] = "discarded",
	[PS_OTHER] = "other",
};

const char *pagestate_state_name(enum pagestate_state s)
{
	return (unsigned)s <= PS_OTHER ? state_names[s] : "?";
}

int pagestate_what_parse(const char *s, unsigned *what)
{
	if (!strcmp(s, "unused"))
		*what = PAGESTATE_UNUSED;
	else if (!strcmp(s, "volatile"))
		*what = PAGESTATE_VOLATILE;
	else if (!strcmp(s, "all"))
		*what = PAGESTATE_ALL;
	else
		return -EINVAL;
	return 0;
}

int pagestate_new(pagestate_punch_fn punch, void *opaque, uint64_t seed,
		  struct pagestate **out)
{
	struct pagestate *ps;

	if (!punch)
		return -EINVAL;
	ps = calloc(1, sizeof(*ps));
	if (!ps)
		return -ENOMEM;
	ps->punch = punch;
	ps->opaque = opaque;
	ps->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
	*out = ps;
	return 0;
}

void pagestate_free(struct pagestate *ps)
{
	free(ps);
}

int pagestate_attach(struct pagestate *ps, uint8_t *table, uint64_t first_pfn,
		     uint64_t npages)
{
	if (!table || npages == 0 || first_pfn + npages < first_pfn ||
	    first_pfn + npages > UINT64_MAX / PAGESTATE_PAGE_SIZE)
		return -EINVAL;
	ps->table = table;
	ps->first_pfn = first_pfn;
	ps->npages = npages;
	return 0;
}

void pagestate_detach(struct pagestate *ps)
{
	ps->table = NULL;
	ps->first_pfn = ps->npages = 0;
}

bool pagestate_attached(const struct pagestate *ps)
{
	return ps->table != NULL;
}

/* Relaxed: a value only picks a candidate; the CAS decides. */
static uint8_t load(const struct pagestate *ps, uint64_t i)
{
	return __atomic_load_n(&ps->table[i], __ATOMIC_RELAXED);
}

static bool takes(unsigned what, uint8_t v)
{
	return (v == PS_UNUSED || v == PS_VOLATILE) && (what & (1u << v));
}

/*
 * Step 1: hold entries i, i+1, ... (at most @len, at most a run) by CAS to
 * discarding while each is in @what and its CAS wins.  Returns how many
 * are held; their old values are in ps->prev.  Acquire on success: the
 * punch that follows must not be ordered before the guest's release store
 * that made the page unused (its last writes to the page come first).
 */
static uint64_t claim(struct pagestate *ps, uint64_t i, uint64_t len,
		      unsigned what)
{
	uint64_t n;

	if (len > PAGESTATE_RUN_PAGES)
		len = PAGESTATE_RUN_PAGES;
	for (n = 0; n < len; n++) {
		uint8_t v = load(ps, i + n);

		if (!takes(what, v))
			break;
		if (!__atomic_compare_exchange_n(&ps->table[i + n], &v,
						 PS_DISCARDING, false,
						 __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED)) {
			ps->st.cas_failures++;
			break;
		}
		ps->prev[n] = v;
	}
	return n;
}

/* Give held entries back unpunched: each to its value before step 1.
 * Release: whatever we did while holding them is ordered before. */
static void unclaim(struct pagestate *ps, uint64_t i, uint64_t n)
{
	for (uint64_t k = 0; k < n; k++) {
		uint8_t exp = PS_DISCARDING;

		if (!__atomic_compare_exchange_n(&ps->table[i + k], &exp,
						 ps->prev[k], false,
						 __ATOMIC_RELEASE,
						 __ATOMIC_RELAXED))
			ps->st.violations++;
	}
}

/*
 * Steps 2 and 3 for @n held entries from @i.  Discarded is published with
 * release, after the punch returned: a guest that reads discarded (acquire)
 * and then touches the page finds the hole, never the old contents.
 * Returns 0, or the punch's -errno (the entries are back as they were).
 */
static int finish(struct pagestate *ps, uint64_t i, uint64_t n,
		  struct pagestate_pass *out)
{
	int rc = ps->punch(ps->opaque, ps->first_pfn + i, n);

	if (rc < 0) {
		ps->st.punch_failures++;
		unclaim(ps, i, n);
		return rc;
	}
	for (uint64_t k = 0; k < n; k++) {
		uint8_t exp = PS_DISCARDING;

		/* A CAS, not a store: an entry the guest trampled while we
		 * held it stays as the guest left it. */
		if (!__atomic_compare_exchange_n(&ps->table[i + k], &exp,
						 PS_DISCARDED, false,
						 __ATOMIC_RELEASE,
						 __ATOMIC_RELAXED))
			ps->st.violations++;
	}
	ps->st.punches++;
	ps->st.discarded_pages += n;
	ps->st.discarded_bytes += n * PAGESTATE_PAGE_SIZE;
	if (n == PAGESTATE_RUN_PAGES && (ps->first_pfn + i) % PAGESTATE_RUN_PAGES == 0)
		ps->st.huge_runs++;
	out->discarded_pages += n;
	out->punches++;
	return 0;
}

/* Are all @n entries from @i in @what right now?  A cheap look before
 * holding any of them, so a block the guest uses costs no CAS. */
static bool all_take(const struct pagestate *ps, uint64_t i, uint64_t n,
		     unsigned what)
{
	for (uint64_t k = 0; k < n; k++)
		if (!takes(what, load(ps, i + k)))
			return false;
	return true;
}

/* The huge pass: whole 2 MiB-aligned blocks only.  A block the guest
 * takes a page of mid-way is given back whole, for the small pass. */
static int huge_pass(struct pagestate *ps, unsigned what, uint64_t max_pages,
		     struct pagestate_pass *out)
{
	uint64_t i = (PAGESTATE_RUN_PAGES - ps->first_pfn % PAGESTATE_RUN_PAGES) %
		     PAGESTATE_RUN_PAGES;

	for (; i < ps->npages && ps->npages - i >= PAGESTATE_RUN_PAGES;
	     i += PAGESTATE_RUN_PAGES) {
		uint64_t n;
		int rc;

		if (max_pages - out->discarded_pages < PAGESTATE_RUN_PAGES)
			return 0;
		out->scanned += PAGESTATE_RUN_PAGES;
		if (!all_take(ps, i, PAGESTATE_RUN_PAGES, what))
			continue;
		n = claim(ps, i, PAGESTATE_RUN_PAGES, what);
		if (n < PAGESTATE_RUN_PAGES) {
			unclaim(ps, i, n);
			continue;
		}
		rc = finish(ps, i, n, out);
		if (rc < 0)
			return rc;
	}
	out->complete = true;
	return 0;
}

/* Discard runs of entries in @what within [@from, @to), each run at most
 * PAGESTATE_RUN_PAGES, until the range ends or max_pages are discarded. */
static int sweep(struct pagestate *ps, unsigned what, uint64_t from,
		 uint64_t to, uint64_t max_pages, struct pagestate_pass *out)
{
	uint64_t i = from;

	while (i < to) {
		uint64_t room = max_pages - out->discarded_pages, n;
		int rc;

		if (room == 0)
			return 0;
		out->scanned++;
		if (!takes(what, load(ps, i))) {
			i++;
			continue;
		}
		n = claim(ps, i, to - i < room ? to - i : room, what);
		if (n == 0) {
			i++;	/* lost the CAS: the guest has it */
			continue;
		}
		rc = finish(ps, i, n, out);
		if (rc < 0)
			return rc;
		out->scanned += n - 1;
		i += n;
	}
	return 0;
}

static int check_args(const struct pagestate *ps, unsigned what)
{
	if (!ps->table)
		return -ENODEV;
	if (!what || (what & ~PAGESTATE_ALL))
		return -EINVAL;
	return 0;
}

int pagestate_discard(struct pagestate *ps, unsigned what, unsigned how,
		      uint64_t max_pages, struct pagestate_pass *out)
{
	int rc = check_args(ps, what);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	if (!how || (how & ~(PAGESTATE_HUGE | PAGESTATE_SMALL)))
		return -EINVAL;
	if (how & PAGESTATE_HUGE) {
		rc = huge_pass(ps, what, max_pages, out);
		if (rc < 0 || !(how & PAGESTATE_SMALL))
			return rc;
	}
	out->complete = false;
	rc = sweep(ps, what, 0, ps->npages, max_pages, out);
	if (rc == 0 && out->discarded_pages < max_pages)
		out->complete = true;
	return rc;
}

/* xorshift64*: fast, and good enough to scatter an evictor's picks. */
static uint64_t next_random(struct pagestate *ps)
{
	ps->rng ^= ps->rng >> 12;
	ps->rng ^= ps->rng << 25;
	ps->rng ^= ps->rng >> 27;
	return ps->rng * 0x2545f4914f6cdd1dull;
}

int pagestate_evict_random(struct pagestate *ps, unsigned what,
			   uint64_t max_pages, struct pagestate_pass *out)
{
	uint64_t limit, examined = 0;
	int rc = check_args(ps, what);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	limit = max_pages > (UINT64_MAX - 1024) / 8 ? UINT64_MAX :
		8 * max_pages + 1024;
	while (out->discarded_pages < max_pages && examined < limit) {
		uint64_t r = next_random(ps), start, len, before;

		/* A quarter of the picks are a whole aligned 2 MiB block (as
		 * the policy prefers), the rest single pages and short runs,
		 * which split blocks and race the guest's allocator hardest. */
		start = (r >> 8) % ps->npages;
		switch (r & 3) {
		case 0: {
			uint64_t off = (ps->first_pfn + start) % PAGESTATE_RUN_PAGES;

			/* The table may start mid-block: then its head. */
			start = off > start ? 0 : start - off;
			len = PAGESTATE_RUN_PAGES;
			break;
		}
		case 1:
			len = 1;
			break;
		default:
			len = 1 + (r >> 2) % 64;
			break;
		}
		if (len > ps->npages - start)
			len = ps->npages - start;
		before = out->discarded_pages;
		rc = sweep(ps, what, start, start + len, max_pages, out);
		ps->st.evicted_pages += out->discarded_pages - before;
		if (rc < 0)
			return rc;
		examined += len;
	}
	out->complete = out->discarded_pages < max_pages;
	return 0;
}

int pagestate_count(const struct pagestate *ps, uint64_t counts[PS_NSTATES + 1])
{
	memset(counts, 0, sizeof(uint64_t) * (PS_NSTATES + 1));
	if (!ps->table)
		return -ENODEV;
	for (uint64_t i = 0; i < ps->npages; i++) {
		uint8_t v = load(ps, i);

		counts[v < PS_NSTATES ? v : PS_OTHER]++;
	}
	return 0;
}

void pagestate_get_stats(const struct pagestate *ps, struct pagestate_stats *out)
{
	*out = ps->st;
}
