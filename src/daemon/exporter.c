/*
 * exporter: ebbd's numbers as a Prometheus page (the collect function
 * behind metrics.h's endpoint).  Declared in ebbd.h.
 *
 * Names follow Prometheus' conventions: the ebb_ prefix, base units
 * (_bytes, _seconds), _total on counters, one HELP and TYPE per family,
 * and per-guest series labelled guest="<name>".  The list, with what
 * each means, is ebbd(8)'s METRICS section.
 *
 * Cost: one pass over the guest table to take a row per guest (the
 * same reads as guest-list and tmem), then one line per family and
 * guest; the histograms are a fixed walk of the store's latency
 * buckets.  Nothing here grows with guest memory, pages or time.
 */
#include "ebbd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "promtext.h"

/* What one scrape reads of one guest. */
struct row {
	struct guest_info gi;
	struct pool_guest_info pi;	/* zero once out of the pool */
	bool has_tmem;
	struct tmem_stats tm;
	unsigned ndisks;
	struct { const char *role; bool failed; } disks[4];
};

/* Prometheus histogram bounds for tmem put/get, in ns: from a cached
 * compressed page (~1 us) to a put stuck behind the store's lock. */
static const uint64_t lat_le_ns[] = {
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
	10000000,
};
#define NLAT (sizeof(lat_le_ns) / sizeof(lat_le_ns[0]))

static void take_row(struct ebbd *d, struct slot *s, struct row *r)
{
	const char *sock;
	struct blk_info bi;

	memset(r, 0, sizeof(*r));
	guest_get_info(s->g, &r->gi);
	if (s->id)
		pool_guest_info(d->pool, s->id, &r->pi);
	r->has_tmem = s->tmem_client &&
		      tmem_client_stats(d->store, client_of(s), &r->tm) == 0;
	for (unsigned i = 0; i < 4 &&
	     guest_disk_info(s->g, i, &r->disks[i].role, &sock, &bi) == 0; i++) {
		r->disks[i].failed = bi.failed;
		r->ndisks = i + 1;
	}
}

/* A per-guest family: one gauge or counter sample per guest, the value
 * picked by @get. */
static void per_guest(struct promtext *p, const struct row *rows, unsigned n,
		      const char *name, const char *type, const char *help,
		      uint64_t (*get)(const struct row *r))
{
	promtext_family(p, name, type, help);
	for (unsigned i = 0; i < n; i++) {
		const char *l[] = { "guest", rows[i].gi.name, NULL };

		promtext_u64(p, name, l, get(&rows[i]));
	}
}

static uint64_t g_mem(const struct row *r) { return r->gi.mem_bytes; }
static uint64_t g_resident(const struct row *r) { return r->gi.resident_bytes; }
static uint64_t g_target(const struct row *r)
{
	return r->gi.mem_bytes -
	       (uint64_t)r->gi.balloon.target_pages * BALLOON_PAGE_SIZE;
}
static uint64_t g_actual(const struct row *r)
{
	return r->gi.mem_bytes -
	       (uint64_t)r->gi.balloon.actual_pages * BALLOON_PAGE_SIZE;
}
static uint64_t g_claim(const struct row *r)
{
	return r->pi.claim_pages * POOL_PAGE_SIZE;
}
static uint64_t g_store(const struct row *r)
{
	return r->pi.store_pages * POOL_PAGE_SIZE;
}
static uint64_t g_reported(const struct row *r)
{
	return r->gi.balloon.reported_bytes;
}
static uint64_t g_returned(const struct row *r)
{
	return r->gi.balloon.returned_bytes;
}
static uint64_t g_discarded(const struct row *r)
{
	return r->gi.ebb.ps.discarded_bytes;
}
static uint64_t g_over(const struct row *r) { return r->pi.over_budget; }

/* tmem families: only guests with a store client have samples. */
static void per_tmem(struct promtext *p, const struct row *rows, unsigned n,
		     const char *name, const char *help, size_t off)
{
	promtext_family(p, name, "counter", help);
	for (unsigned i = 0; i < n; i++) {
		const char *l[] = { "guest", rows[i].gi.name, NULL };
		uint64_t v;

		if (!rows[i].has_tmem)
			continue;
		memcpy(&v, (const char *)&rows[i].tm + off, sizeof(v));
		promtext_u64(p, name, l, v);
	}
}

static void tmem_families(struct promtext *p, const struct row *rows,
			  unsigned n)
{
	promtext_family(p, "ebb_guest_tmem_pages", "gauge",
			"Pages the guest keeps in the tmem store, by pool kind.");
	for (unsigned i = 0; i < n; i++) {
		const char *lp[] = { "guest", rows[i].gi.name, "kind",
				     "persistent", NULL };
		const char *le[] = { "guest", rows[i].gi.name, "kind",
				     "ephemeral", NULL };

		if (!rows[i].has_tmem)
			continue;
		promtext_u64(p, "ebb_guest_tmem_pages", lp,
			     rows[i].tm.persistent_pages);
		promtext_u64(p, "ebb_guest_tmem_pages", le,
			     rows[i].tm.ephemeral_pages);
	}
	per_tmem(p, rows, n, "ebb_guest_tmem_puts_total",
		 "tmem puts by the guest.", offsetof(struct tmem_stats, puts));
	per_tmem(p, rows, n, "ebb_guest_tmem_gets_total",
		 "tmem gets by the guest.", offsetof(struct tmem_stats, gets));
	per_tmem(p, rows, n, "ebb_guest_tmem_hits_total",
		 "tmem gets that returned a page.",
		 offsetof(struct tmem_stats, hits));
	per_tmem(p, rows, n, "ebb_guest_tmem_misses_total",
		 "tmem gets that found no page.",
		 offsetof(struct tmem_stats, misses));
	per_tmem(p, rows, n, "ebb_guest_tmem_refused_puts_total",
		 "tmem puts refused for lack of room.",
		 offsetof(struct tmem_stats, refused_puts));
	per_tmem(p, rows, n, "ebb_guest_tmem_evictions_total",
		 "Ephemeral pages of the guest the store dropped.",
		 offsetof(struct tmem_stats, evictions));
}

/* One sample per device of every guest, 1 if it failed on hostile input
 * (sticky: the device stays failed until the guest stops). */
static void failure_family(struct promtext *p, const struct row *rows,
			   unsigned n)
{
	uint64_t failed = 0;

	promtext_family(p, "ebb_guest_device_failed", "gauge",
			"1 if the guest's device failed on hostile input.");
	for (unsigned i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		const char *lb[] = { "guest", r->gi.name, "device", "balloon", NULL };

		promtext_u64(p, "ebb_guest_device_failed", lb, r->gi.balloon.failed);
		failed += r->gi.balloon.failed;
		if (r->gi.has_ebb) {
			const char *le[] = { "guest", r->gi.name, "device",
					     "ebb", NULL };

			promtext_u64(p, "ebb_guest_device_failed", le,
				     r->gi.ebb.failed);
			failed += r->gi.ebb.failed;
		}
		for (unsigned k = 0; k < r->ndisks; k++) {
			const char *ld[] = { "guest", r->gi.name, "device",
					     r->disks[k].role, NULL };

			promtext_u64(p, "ebb_guest_device_failed", ld,
				     r->disks[k].failed);
			failed += r->disks[k].failed;
		}
	}
	promtext_family(p, "ebb_device_failures", "gauge",
			"Devices of running guests that failed on hostile input.");
	promtext_u64(p, "ebb_device_failures", NULL, failed);
}

static void histogram(struct promtext *p, struct tmem_store *store, bool get)
{
	const char *name = get ? "ebb_tmem_get_latency_seconds" :
				 "ebb_tmem_put_latency_seconds";
	uint64_t cum[NLAT], count, sum_ns;
	char bucket[64], sumn[64], countn[64], le[32];

	if (tmem_store_latency(store, get, lat_le_ns, NLAT, cum, &count,
			       &sum_ns) < 0)
		return;
	promtext_family(p, name, "histogram", get ?
		"Time of a tmem get, lock wait included (one call in 8 is timed)." :
		"Time of a tmem put, lock wait included (one call in 8 is timed).");
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	for (unsigned i = 0; i < NLAT; i++) {
		const char *l[] = { "le", le, NULL };

		snprintf(le, sizeof(le), "%g", lat_le_ns[i] / 1e9);
		promtext_u64(p, bucket, l, cum[i]);
	}
	{
		const char *l[] = { "le", "+Inf", NULL };

		promtext_u64(p, bucket, l, count);
	}
	snprintf(sumn, sizeof(sumn), "%s_sum", name);
	snprintf(countn, sizeof(countn), "%s_count", name);
	promtext_f64(p, sumn, NULL, sum_ns / 1e9);
	promtext_u64(p, countn, NULL, count);
}

static void host_gauge(struct promtext *p, const char *name, const char *help,
		       uint64_t v)
{
	promtext_family(p, name, "gauge", help);
	promtext_u64(p, name, NULL, v);
}

static void on_event_count(void *opaque, const char *name, uint64_t count)
{
	const char *l[] = { "event", name, NULL };

	promtext_u64(opaque, "ebb_events_total", l, count);
}

static void host_families(struct ebbd *d, struct promtext *p)
{
	struct pool_info pi = { 0 };

	pool_info(d->pool, &pi);
	host_gauge(p, "ebb_budget_bytes", "Host memory budget of the pool.",
		   pi.budget_bytes);
	host_gauge(p, "ebb_resident_bytes",
		   "Host memory resident in guests' RAM.",
		   pi.tot_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_claims_bytes", "Outstanding claims.",
		   pi.claim_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_free_bytes",
		   "Budget not resident and not in the store.",
		   pi.free_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_unclaimed_bytes", "Free memory not claimed.",
		   pi.unclaimed_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_over_bytes",
		   "Resident, store and claims beyond the budget.",
		   pi.over_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_store_bytes",
		   "Memory the tmem store holds for guests, charged in pages.",
		   pi.store_pages * POOL_PAGE_SIZE);
	host_gauge(p, "ebb_guests", "Guests in the guest table.", pi.guests);
	host_gauge(p, "ebb_control_clients", "Connected control clients.",
		   control_client_count(d->ctl));
	promtext_family(p, "ebb_pressure_discarded_pages_total", "counter",
			"Pages discarded because free memory fell below "
			"discard-below.");
	promtext_u64(p, "ebb_pressure_discarded_pages_total", NULL,
		     d->pressure_pages);
	promtext_family(p, "ebb_events_total", "counter",
			"Control events sent, by event name.");
	control_event_counts(d->ctl, on_event_count, p);
	if (d->metrics) {
		promtext_family(p, "ebb_metrics_collect_seconds", "gauge",
				"Time the previous metrics page took to build.");
		promtext_f64(p, "ebb_metrics_collect_seconds", NULL,
			     metrics_last_collect_ns(d->metrics) / 1e9);
	}
}

int ebbd_metrics_collect(void *opaque, struct promtext *p)
{
	struct ebbd *d = opaque;
	struct row *rows = calloc(MAX_GUESTS, sizeof(*rows));
	unsigned n = 0;

	if (!rows)
		return -ENOMEM;
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g)
			take_row(d, &d->slots[i], &rows[n++]);
	host_families(d, p);
	per_guest(p, rows, n, "ebb_guest_memory_bytes", "gauge",
		  "Configured guest memory.", g_mem);
	per_guest(p, rows, n, "ebb_guest_resident_bytes", "gauge",
		  "Host-resident bytes of the guest's RAM file.", g_resident);
	per_guest(p, rows, n, "ebb_guest_balloon_target_bytes", "gauge",
		  "Memory the guest is asked to keep (balloon target).",
		  g_target);
	per_guest(p, rows, n, "ebb_guest_balloon_actual_bytes", "gauge",
		  "Memory the guest keeps by its balloon.", g_actual);
	per_guest(p, rows, n, "ebb_guest_claim_bytes", "gauge",
		  "The guest's outstanding claim.", g_claim);
	per_guest(p, rows, n, "ebb_guest_store_bytes", "gauge",
		  "Store memory charged to the guest.", g_store);
	per_guest(p, rows, n, "ebb_guest_over_budget", "gauge",
		  "1 if the guest grew beyond what the pool could back.",
		  g_over);
	per_guest(p, rows, n, "ebb_guest_reported_bytes_total", "counter",
		  "Free memory the guest reported.", g_reported);
	per_guest(p, rows, n, "ebb_guest_returned_bytes_total", "counter",
		  "Memory returned to the host from the guest's balloon and "
		  "reports.", g_returned);
	per_guest(p, rows, n, "ebb_guest_discarded_bytes_total", "counter",
		  "Pages discarded by page hinting.", g_discarded);
	promtext_family(p, "ebb_guest_state", "gauge",
			"1 for the guest's current state.");
	for (unsigned i = 0; i < n; i++) {
		const char *l[] = { "guest", rows[i].gi.name, "state",
				    guest_state_name(rows[i].gi.state), NULL };

		promtext_u64(p, "ebb_guest_state", l, 1);
	}
	tmem_families(p, rows, n);
	failure_family(p, rows, n);
	histogram(p, d->store, false);
	histogram(p, d->store, true);
	free(rows);
	return 0;
}
