/*
 * pagestate: the host's half of the page-state table (docs/ebb-device.md,
 * section 6): discarding unused and volatile guest pages by
 * compare-and-swap on a table the guest shares with us.
 *
 * Owns: nothing in guest memory.  It borrows a table (one byte per guest
 * page, @npages bytes describing pages first_pfn .. first_pfn + npages - 1)
 * that lives in guest RAM mapped by ebbd, and a punch callback that removes
 * the backing of a run of those pages (for ebbd, a hole in the RAM file).
 * It owns only its counters and its evictor's random state.
 *
 * The guest's kernel changes the same bytes at any time, through its own
 * mapping of the same file.  So every access to an entry is an __atomic
 * operation on that byte, and every move the host makes is a
 * compare-and-swap:
 *
 *   1. CAS unused|volatile -> discarding, one entry at a time, building a
 *      run of consecutive entries this call now holds;
 *   2. punch the run (one callback call per run);
 *   3. CAS discarding -> discarded with release ordering, so a guest that
 *      loads discarded with acquire finds the backing already gone; or, if
 *      the punch failed, store each entry's previous state back (the guest
 *      waits while an entry is discarding and retries once it is not).
 *
 * Whole 2 MiB-aligned runs (PAGESTATE_RUN_PAGES entries starting at a pfn
 * that is a multiple of 512) are taken first: they keep host huge pages
 * whole and cost one punch per 2 MiB.  Smaller runs follow when asked for.
 *
 * The table is hostile: any byte may hold any value and change between two
 * loads.  Values other than the five states are counted as "other" and
 * never discarded; an entry the guest moves while we hold it discarding is
 * left as the guest wrote it (counted in violations), since only the guest
 * can be hurt by that.
 *
 * Work is bounded per call: a call discards at most its max_pages and holds
 * at most one run (PAGESTATE_RUN_PAGES entries) discarding at a time; a
 * scan reads each entry once, and table_max_pages bounds the table.
 *
 * Threading: one thread (ebbd's loop thread) makes every call on one
 * struct pagestate; the guest is the only concurrent party, through the
 * shared bytes.  The punch callback runs on the calling thread.
 */
#ifndef EBB_PAGESTATE_H
#define EBB_PAGESTATE_H

#include <stdbool.h>
#include <stdint.h>

#define PAGESTATE_PAGE_SIZE	4096u	/* bytes per entry's page */
#define PAGESTATE_RUN_PAGES	512u	/* entries in a 2 MiB run */

/* Entry values (docs/ebb-device.md, section 6). */
enum pagestate_state {
	PS_STABLE = 0,		/* in use: keep it */
	PS_UNUSED = 1,		/* free in the guest: may be discarded */
	PS_VOLATILE = 2,	/* clean page cache: may be discarded */
	PS_DISCARDING = 3,	/* held by the host while it punches */
	PS_DISCARDED = 4,	/* gone: reads as zeros */
	PS_NSTATES,
	PS_OTHER = PS_NSTATES,	/* counting slot for any other byte value */
};

/* What a discard may take: a mask of (1u << PS_UNUSED|PS_VOLATILE). */
#define PAGESTATE_UNUSED	(1u << PS_UNUSED)
#define PAGESTATE_VOLATILE	(1u << PS_VOLATILE)
#define PAGESTATE_ALL		(PAGESTATE_UNUSED | PAGESTATE_VOLATILE)

/* How a discard walks the table. */
#define PAGESTATE_HUGE		0x1u	/* whole 2 MiB-aligned runs */
#define PAGESTATE_SMALL		0x2u	/* then any run of discardable entries */

/*
 * Remove the backing of pages @pfn .. @pfn + @count - 1 (all inside the
 * table).  Returns 0, or -errno: the pages then keep their contents and go
 * back to their previous state.
 */
typedef int (*pagestate_punch_fn)(void *opaque, uint64_t pfn, uint64_t count);

/* Cumulative counters, since pagestate_new(). */
struct pagestate_stats {
	uint64_t discarded_pages;	/* entries moved to discarded */
	uint64_t discarded_bytes;	/* the same in bytes */
	uint64_t huge_runs;		/* of which whole 2 MiB runs */
	uint64_t punches;		/* punch callback calls that succeeded */
	uint64_t punch_failures;	/* ... that failed (pages restored) */
	uint64_t cas_failures;		/* CASes lost to the guest */
	uint64_t violations;		/* entries the guest moved while held */
	uint64_t evicted_pages;		/* of discarded_pages, by the evictor */
};

/* One discard or evictor call's result. */
struct pagestate_pass {
	uint64_t discarded_pages;	/* entries this call discarded */
	uint64_t punches;		/* runs punched */
	uint64_t scanned;		/* entries examined */
	bool complete;			/* stopped at the table's end, not at
					 * max_pages */
};

struct pagestate;

/* A pagestate with no table attached.  -EINVAL if @punch is NULL. */
int pagestate_new(pagestate_punch_fn punch, void *opaque, uint64_t seed,
		  struct pagestate **out);
void pagestate_free(struct pagestate *ps);

/*
 * Use @table (@npages bytes, already checked by the caller to lie in guest
 * memory it maps) for pages @first_pfn on.  Replaces an attached table.
 * -EINVAL for a NULL table, npages 0 or a pfn range that overflows.
 */
int pagestate_attach(struct pagestate *ps, uint8_t *table, uint64_t first_pfn,
		     uint64_t npages);
/* Forget the table (before its mapping goes away).  Counters stay. */
void pagestate_detach(struct pagestate *ps);
bool pagestate_attached(const struct pagestate *ps);

/*
 * Discard up to @max_pages entries whose state is in @what
 * (PAGESTATE_UNUSED, _VOLATILE or both), walking per @how (PAGESTATE_HUGE,
 * PAGESTATE_SMALL or both: huge runs over the whole table first).
 * Returns 0 with *@out filled, -ENODEV with no table, -EINVAL for an
 * empty @what or @how or bits outside them.
 */
int pagestate_discard(struct pagestate *ps, unsigned what, unsigned how,
		      uint64_t max_pages, struct pagestate_pass *out);

/*
 * The random evictor (the test mode's "fake hypervisor"): look at random
 * windows of the table (single pages, short runs and whole 2 MiB blocks)
 * and discard whatever in them is in @what, until @max_pages are
 * discarded or 8 * @max_pages + 1024 entries have been examined.
 */
int pagestate_evict_random(struct pagestate *ps, unsigned what,
			   uint64_t max_pages, struct pagestate_pass *out);

/* Entries per state: counts[PS_STABLE .. PS_DISCARDED], counts[PS_OTHER].
 * -ENODEV with no table (counts are then zero). */
int pagestate_count(const struct pagestate *ps,
		    uint64_t counts[PS_NSTATES + 1]);

void pagestate_get_stats(const struct pagestate *ps,
			 struct pagestate_stats *out);

/* "unused", "volatile", "all" -> a @what mask; -EINVAL otherwise. */
int pagestate_what_parse(const char *s, unsigned *what);
const char *pagestate_state_name(enum pagestate_state s);

#endif
