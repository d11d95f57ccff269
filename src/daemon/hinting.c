/*
 * hinting: ebbd's page-hinting policy (declared in ebbd.h).  Two users of
 * the guests' page-state tables, on one timer:
 *
 *   - the pressure trigger (--discard-below SIZE): while the pool's free
 *     memory is below SIZE, discard every guest's unused pages, all of
 *     them and not just the shortfall, over as many ticks as it takes
 *     or until free memory is twice SIZE (they cost the guest nothing,
 *     and the next burst of allocations then lands in memory the host
 *     has, instead of in host swap), and
 *     volatile pages while the shortfall is not covered (they cost the
 *     guest a re-read); within each, whole
 *     2 MiB runs of every guest before any smaller run (they keep host
 *     huge pages whole);
 *   - the test evictor (--test-evictor N): every guest loses random
 *     discardable pages at N pages per second (the "fake
 *     hypervisor" that checks the guest's side of the protocol).
 *
 * The host policy (policyd.c) takes its step 2 through
 * hinting_discard_guest(), the same passes for one guest.
 *
 * Both are bounded per tick (HINT_TICK_MS): the pressure trigger by
 * PRESSURE_TICK_PAGES, the evictor by its rate, so the loop stays
 * responsive to the guests' devices.  Residency is re-measured as each
 * guest gives memory back (the devices' returned event), so the next tick
 * sees the pool's new free memory.
 */
#include "ebbd.h"

#include <errno.h>

#include "log.h"

#define HINT_TICK_MS		100
/* 64 MiB per tick: a few ms of hole punching, 640 MiB/s at most. */
#define PRESSURE_TICK_PAGES	((64ull << 20) / PAGESTATE_PAGE_SIZE)

/* One pass of @what per @how over one guest, up to @room pages: the
 * step both the pressure trigger and the host policy take. */
static uint64_t discard_one(struct slot *s, unsigned what, unsigned how,
			    uint64_t room)
{
	struct pagestate_pass p;

	if (!s->g || !room ||
	    guest_discard(s->g, what, how, room, &p) < 0)
		return 0;
	return p.discarded_pages;
}

/* One pass of @what per @how over every guest, up to @room pages. */
static uint64_t discard_across(struct ebbd *d, unsigned what, unsigned how,
			       uint64_t room)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < MAX_GUESTS && done < room; i++)
		done += discard_one(&d->slots[i], what, how, room - done);
	return done;
}

uint64_t hinting_discard_guest(struct ebbd *d, struct slot *s, unsigned what,
			       uint64_t max_pages)
{
	uint64_t done = discard_one(s, what, PAGESTATE_HUGE, max_pages);

	done += discard_one(s, what, PAGESTATE_SMALL, max_pages - done);
	d->pressure_pages += done;
	return done;
}

static void pressure_tick(struct ebbd *d)
{
	static const struct { unsigned what, how; } order[] = {
		{ PAGESTATE_UNUSED, PAGESTATE_HUGE },
		{ PAGESTATE_UNUSED, PAGESTATE_SMALL },
		{ PAGESTATE_VOLATILE, PAGESTATE_HUGE },
		{ PAGESTATE_VOLATILE, PAGESTATE_SMALL },
	};
	uint64_t free_bytes, want, done = 0, unused;
	struct pool_info pi;

	if (pool_info(d->pool, &pi) < 0)
		return;
	free_bytes = pi.free_pages * POOL_PAGE_SIZE;
	/*
	 * A drain ends when no unused page is left, or once free memory is
	 * twice the line: a guest that keeps freeing pages would otherwise
	 * keep it going long after the pressure is gone.
	 */
	if (free_bytes >= 2 * d->discard_below_bytes)
		d->pressure_draining = false;
	if (free_bytes >= d->discard_below_bytes && !d->pressure_draining) {
		d->pressure_dry = false;
		return;
	}
	/* Unused pages: as many as a tick takes, until none is left. */
	for (size_t k = 0; k < 2; k++)
		done += discard_across(d, order[k].what, order[k].how,
				       PRESSURE_TICK_PAGES - done);
	unused = done;
	d->pressure_draining = unused > 0;
	want = 0;
	if (free_bytes < d->discard_below_bytes)
		want = (d->discard_below_bytes - free_bytes +
			PAGESTATE_PAGE_SIZE - 1) / PAGESTATE_PAGE_SIZE;
	if (want > PRESSURE_TICK_PAGES)
		want = PRESSURE_TICK_PAGES;
	for (size_t k = 2; k < sizeof(order) / sizeof(order[0]) && done < want; k++)
		done += discard_across(d, order[k].what, order[k].how, want - done);
	if (done == 0) {
		if (!d->pressure_dry && free_bytes < d->discard_below_bytes)
			log_warn(NULL, "free memory %llu MiB below --discard-below "
				 "%llu MiB, and no guest has pages to discard",
				 (unsigned long long)(free_bytes >> 20),
				 (unsigned long long)(d->discard_below_bytes >> 20));
		d->pressure_dry = true;
		return;
	}
	d->pressure_dry = false;
	d->pressure_pages += done;
	log_info(NULL, "host pressure (free %llu MiB): discarded %llu MiB of "
		 "unused and %llu MiB of volatile guest pages",
		 (unsigned long long)(free_bytes >> 20),
		 (unsigned long long)(unused * PAGESTATE_PAGE_SIZE >> 20),
		 (unsigned long long)((done - unused) * PAGESTATE_PAGE_SIZE >> 20));
	control_event(d->ctl, "PAGES_DISCARDED", json_pack("{s:s, s:I, s:I}",
		      "reason", "pressure", "bytes",
		      (json_int_t)(done * PAGESTATE_PAGE_SIZE),
		      "free", (json_int_t)free_bytes));
}

/* Every guest gets the evictor's rate; the fraction of a page a tick
 * leaves over is carried to the next. */
static void evict_tick(struct ebbd *d)
{
	uint64_t mpages = d->evict_pages_per_sec * HINT_TICK_MS +
			  d->evict_carry_mpages;
	uint64_t pages = mpages / 1000;

	d->evict_carry_mpages = mpages % 1000;
	if (!pages)
		return;
	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		struct pagestate_pass p;

		if (d->slots[i].g &&
		    guest_evict(d->slots[i].g, PAGESTATE_ALL, pages, &p) == 0)
			d->evicted_pages += p.discarded_pages;
	}
}

static void on_hint_tick(void *opaque)
{
	struct ebbd *d = opaque;

	if (d->discard_below_bytes)
		pressure_tick(d);
	if (d->evict_pages_per_sec)
		evict_tick(d);
}

int hinting_start(struct ebbd *d)
{
	if (!d->discard_below_bytes && !d->evict_pages_per_sec)
		return 0;
	if (d->evict_pages_per_sec)
		log_warn(NULL, "test evictor on: every guest loses random "
			 "discardable pages at %llu pages/s",
			 (unsigned long long)d->evict_pages_per_sec);
	return loop_timer_add(d->loop, HINT_TICK_MS, HINT_TICK_MS, on_hint_tick,
			      d, &d->hint_timer);
}

void hinting_stop(struct ebbd *d)
{
	loop_timer_del(d->hint_timer);
	d->hint_timer = NULL;
}
