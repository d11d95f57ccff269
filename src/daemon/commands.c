/*
 * ebbd's control commands: one handler per command of the control
 * protocol (docs/control.md), and the table that registers them with
 * the control socket.  Declared in ebbd.h.
 */
#include "ebbd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guest_run.h"
#include "log.h"
#include "loop.h"

static int lookup(struct ebbd *d, json_t *args, struct slot **out, char **err)
{
	const char *name;
	int rc = control_arg_str(args, "name", true, &name, err);

	if (rc)
		return rc;
	*out = find_slot(d, name);
	if (!*out) {
		*err = errf("no guest named '%s'", name);
		return -ENOENT;
	}
	return 0;
}

static json_t *tmem_stats_json(const struct tmem_stats *t)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:I, s:f, s:f}",
		"persistent_pages", (json_int_t)t->persistent_pages,
		"ephemeral_pages", (json_int_t)t->ephemeral_pages,
		"zero_pages", (json_int_t)t->zero_pages,
		"raw_pages", (json_int_t)t->raw_pages,
		"logical_bytes", (json_int_t)t->logical_bytes,
		"compressed_bytes", (json_int_t)t->compressed_bytes,
		"stored_bytes", (json_int_t)t->stored_bytes,
		"charged_bytes", (json_int_t)t->charged_bytes,
		"puts", (json_int_t)t->puts,
		"gets", (json_int_t)t->gets,
		"hits", (json_int_t)t->hits,
		"misses", (json_int_t)t->misses,
		"evictions", (json_int_t)t->evictions,
		"refused_puts", (json_int_t)t->refused_puts,
		"compression_ratio", t->compression_ratio,
		"dedup_ratio", t->dedup_ratio);
}


/* guest-run's checks that need no slot: sizes and the name. */
static int check_run(const struct guest_run *r, char **err)
{
	if (r->swap % POOL_PAGE_SIZE || r->swap > SWAPSTORE_MAX_BYTES ||
	    (r->swap && r->swap < (1ull << 20))) {
		*err = errf("swap must be whole pages, at least 1M and at most %llu GiB",
			    (unsigned long long)(SWAPSTORE_MAX_BYTES >> 30));
		return -EINVAL;
	}
	if (!guest_name_valid(r->name)) {
		*err = errf("invalid guest name '%s' (1-31 of A-Z a-z 0-9 - _ ., "
			    "not starting with - or .)", r->name);
		return -EINVAL;
	}
	if (!guest_mem_valid(r->mem) ||
	    r->mem > POOL_GUEST_MAX_PAGES * POOL_PAGE_SIZE) {
		*err = errf("mem must be a whole number of MiB, at least 32M");
		return -EINVAL;
	}
	if (r->min > r->mem || (r->min && r->min % POOL_PAGE_SIZE)) {
		*err = errf("min must be whole pages and at most mem");
		return -EINVAL;
	}
	if (r->max > r->mem || r->max % POOL_PAGE_SIZE ||
	    (r->max && r->max < r->min)) {
		*err = errf("max must be whole pages, at least min and at most mem");
		return -EINVAL;
	}
	if (r->shares > POLICY_SHARES_MAX) {
		*err = errf("shares must be from 1 to %u (0: the default %u)",
			    POLICY_SHARES_MAX, POLICY_SHARES_DEFAULT);
		return -EINVAL;
	}
	return 0;
}

/* The GUEST_STARTED event and the reply: pid, sizes, device sockets. */
static json_t *guest_started(struct ebbd *d, struct slot *s,
			     const struct guest_run *r)
{
	const char *role, *sock;
	struct guest_info gi;
	struct blk_info bi;
	json_t *ret, *socks;

	guest_get_info(s->g, &gi);
	control_event(d->ctl, "GUEST_STARTED",
		      json_pack("{s:s, s:i}", "name", r->name, "pid", (int)gi.pid));
	ret = json_pack("{s:s, s:i, s:I, s:I, s:{s:s}}", "name", r->name,
			"pid", (int)gi.pid, "mem", (json_int_t)r->mem,
			"claim", (json_int_t)(r->claim ? guest_run_claim_bytes(r) : 0),
			"sockets", "balloon", guest_balloon_socket(s->g));
	socks = json_object_get(ret, "sockets");
	if (guest_ebb_socket(s->g))
		json_object_set_new(socks, "ebb", json_string(guest_ebb_socket(s->g)));
	for (unsigned i = 0; guest_disk_info(s->g, i, &role, &sock, &bi) == 0; i++)
		json_object_set_new(socks, role, json_string(sock));
	return ret;
}

static int cmd_guest_run(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct guest_run r;
	struct slot *s;
	int rc;

	if ((rc = guest_run_parse(args, &r, err)) || (rc = check_run(&r, err)))
		return rc;
	if (d->shutting_down)
		return -ESHUTDOWN;
	rc = slot_launch(d, &r, &s, err);
	if (rc)
		return rc;
	*ret = guest_started(d, s, &r);
	return 0;
}

/* The ebb device's page states and counters: null without the device;
 * "table": false while its driver has registered none (a kernel without
 * the driver, or not booted that far). */
static json_t *page_states_json(const struct guest *g,
				const struct guest_info *gi)
{
	const struct pagestate_stats *st = &gi->ebb.ps;
	uint64_t c[PS_NSTATES + 1];
	json_t *o;

	if (!gi->has_ebb)
		return json_null();
	o = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		      "table", gi->ebb.table,
		      "discarded_bytes", (json_int_t)st->discarded_bytes,
		      "discarded_pages", (json_int_t)st->discarded_pages,
		      "huge_runs", (json_int_t)st->huge_runs,
		      "punches", (json_int_t)st->punches,
		      "cas_failures", (json_int_t)st->cas_failures,
		      "evicted_pages", (json_int_t)st->evicted_pages,
		      "invalid_requests", (json_int_t)gi->ebb.invalid);
	if (guest_page_states(g, c) < 0)
		return o;
	json_object_set_new(o, "pages", json_integer((json_int_t)gi->ebb.npages));
	for (int k = 0; k <= PS_OTHER; k++)
		json_object_set_new(o, pagestate_state_name(k),
				    json_integer((json_int_t)c[k]));
	return o;
}

static json_t *guest_json(struct ebbd *d, struct slot *s)
{
	struct pool_guest_info pi = { 0 };
	struct guest_info gi;
	uint64_t balloon_bytes;

	guest_get_info(s->g, &gi);
	if (s->id)
		pool_guest_info(d->pool, s->id, &pi);
	balloon_bytes = (uint64_t)gi.balloon.target_pages * BALLOON_PAGE_SIZE;
	return json_pack("{s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:b, s:b}",
		"name", gi.name,
		"state", guest_state_name(gi.state),
		"pid", (int)gi.pid,
		"mem", (json_int_t)gi.mem_bytes,
		"balloon_target", (json_int_t)(gi.mem_bytes - balloon_bytes),
		"balloon_actual", (json_int_t)(gi.mem_bytes -
			(uint64_t)gi.balloon.actual_pages * BALLOON_PAGE_SIZE),
		"resident", (json_int_t)gi.resident_bytes,
		"claim", (json_int_t)(pi.claim_pages * POOL_PAGE_SIZE),
		"reported", (json_int_t)gi.balloon.reported_bytes,
		"returned", (json_int_t)gi.balloon.returned_bytes,
		"inflated", (json_int_t)(gi.balloon.inflated_pages * BALLOON_PAGE_SIZE),
		"oom_deflated", (json_int_t)(gi.balloon.oom_deflated_pages *
					     BALLOON_PAGE_SIZE),
		"over_budget", s->over_budget,
		"device_failed", gi.balloon.failed);
}

/*
 * Huge pages (issue 13): how much of the guest's RAM the host maps with
 * 2 MiB pages, how many 2 MiB blocks of its RAM file are intact (fully
 * allocated) or shattered (partly), and, with --ram-hugepages, what the
 * balloon's block keeping did and what still waits for its block.
 */
static void huge_json(json_t *o, const struct guest_info *gi)
{
	const struct hugeblocks_info *h = &gi->balloon.blocks;

	json_object_set_new(o, "ram_hugepages", json_boolean(gi->ram_hugepages));
	json_object_set_new(o, "huge_mapped",
			    json_integer((json_int_t)gi->huge_mapped_bytes));
	json_object_set_new(o, "intact_blocks",
			    json_integer((json_int_t)gi->intact_blocks));
	json_object_set_new(o, "shattered_blocks",
			    json_integer((json_int_t)gi->shattered_blocks));
	if (!gi->balloon.keep_blocks)
		return;
	json_object_set_new(o, "blocks_waiting",
			    json_integer((json_int_t)h->pending_bytes));
	json_object_set_new(o, "blocks", json_pack(
		"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"waiting", (json_int_t)h->pending_bytes,
		"waiting_blocks", (json_int_t)h->pending_blocks,
		"whole_punched", (json_int_t)h->whole_blocks,
		"completed", (json_int_t)h->completed_blocks,
		"holey", (json_int_t)h->holey_bytes,
		"report_split", (json_int_t)h->report_split_bytes,
		"expired", (json_int_t)h->expired_bytes,
		"failed_punches", (json_int_t)h->failed_punches));
}


/*
 * guest_json plus page hinting (bytes discarded, the page states), huge
 * pages, the store, and the preallocation's state if the guest asked for
 * one.
 */
static json_t *guest_json_full(struct ebbd *d, struct slot *s)
{
	json_t *o = guest_json(d, s);
	struct prealloc_status st = s->pre_last;
	struct pool_guest_info pi = { 0 };
	struct guest_info gi;

	guest_get_info(s->g, &gi);
	json_object_set_new(o, "discarded",
			    json_integer((json_int_t)gi.ebb.ps.discarded_bytes));
	json_object_set_new(o, "page_states", page_states_json(s->g, &gi));
	json_object_set_new(o, "policy", policy_guest_json(s));
	huge_json(o, &gi);
	if (s->id && pool_guest_info(d->pool, s->id, &pi) == 0)
		json_object_set_new(o, "store",
				    json_integer((json_int_t)(pi.store_pages *
							      POOL_PAGE_SIZE)));

	if (s->pre_state == PRE_NONE)
		return o;
	if (s->pre_state == PRE_RUNNING)
		prealloc_status(s->pre, &st);
	json_object_set_new(o, "prealloc", prealloc_json(&st));
	json_object_set_new(json_object_get(o, "prealloc"), "state",
			    json_string(slot_prealloc_state_name(s->pre_state)));
	return o;
}

static int cmd_list(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	json_t *arr = json_array();

	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g)
			json_array_append_new(arr, guest_json_full(d, &d->slots[i]));
	*ret = json_pack("{s:o, s:o}", "guests", arr, "found", adopt_json(d));
	return 0;
}

static int cmd_balloon(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct guest_info gi;
	struct slot *s;
	uint64_t target;
	int rc;

	if ((rc = lookup(d, args, &s, err)) ||
	    (rc = control_arg_size(args, "target", true, &target, err)))
		return rc;
	guest_get_info(s->g, &gi);
	if (gi.state != GUEST_RUNNING && gi.state != GUEST_STARTING) {
		*err = errf("guest '%s' is %s", gi.name,
			    guest_state_name(gi.state));
		return -EINVAL;
	}
	if (target > gi.mem_bytes || target % BALLOON_PAGE_SIZE) {
		char a[16];

		*err = errf("balloon target must be whole pages and at most "
			    "the guest's memory (%s)", fmt_size(gi.mem_bytes, a));
		return -EINVAL;
	}
	rc = guest_balloon(s->g, target);
	/* An operator's target: the policy keeps its hands off this guest
	 * until guest-policy gives it back. */
	policy_slot_manual(s);
	if (rc < 0 && rc != -ENOTCONN) {
		*err = errf("cannot notify the balloon driver: %s",
			    strerror(-rc));
		return rc;
	}
	s->rec.balloon_target_bytes = target;
	slot_record_save(d, s);
	guest_get_info(s->g, &gi);
	*ret = json_pack("{s:s, s:I, s:I}", "name", gi.name, "target",
			 (json_int_t)target, "actual",
			 (json_int_t)(gi.mem_bytes -
				      (uint64_t)gi.balloon.actual_pages *
				      BALLOON_PAGE_SIZE));
	return 0;
}

static int cmd_stats(void *ctx, json_t *args, json_t **ret, char **err)
{
	static const char *const tags[VIRTIO_BALLOON_S_NR] = {
		"swap_in", "swap_out", "major_faults", "minor_faults", "free",
		"total", "available", "caches", "hugetlb_allocations",
		"hugetlb_failures",
	};
	struct ebbd *d = ctx;
	struct guest_info gi;
	struct slot *s;
	json_t *st;
	int rc;

	if ((rc = lookup(d, args, &s, err)))
		return rc;
	guest_get_info(s->g, &gi);
	st = json_object();
	for (unsigned t = 0; t < VIRTIO_BALLOON_S_NR; t++)
		if (gi.balloon.stats_valid & (1u << t))
			json_object_set_new(st, tags[t],
					    json_integer((json_int_t)gi.balloon.stats[t]));
	*ret = json_pack("{s:s, s:o, s:I, s:I, s:I}", "name", gi.name,
			 "stats", st,
			 "stats_age_ms", gi.balloon.stats_ms ?
				(json_int_t)(loop_now_ms() - gi.balloon.stats_ms) :
				(json_int_t)-1,
			 "resident", (json_int_t)gi.resident_bytes,
			 "balloon_actual", (json_int_t)(gi.mem_bytes -
				(uint64_t)gi.balloon.actual_pages *
				BALLOON_PAGE_SIZE));
	json_object_set_new(*ret, "page_states", page_states_json(s->g, &gi));
	huge_json(*ret, &gi);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* guest-discard: every page of @what at once (or max_bytes of them), 2 MiB
 * runs first.  Unbounded on purpose: it is an explicit request, and a
 * table walk is bounded by table_max_pages. */
static int cmd_discard(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	const char *what_s = "unused";
	struct pagestate_pass p;
	uint64_t max_bytes = 0, t0, ns;
	unsigned what;
	struct slot *s;
	int rc;

	if ((rc = lookup(d, args, &s, err)) ||
	    (rc = control_arg_str(args, "what", false, &what_s, err)) ||
	    (rc = control_arg_size(args, "max_bytes", false, &max_bytes, err)))
		return rc;
	if (pagestate_what_parse(what_s, &what) < 0) {
		*err = errf("what must be unused, volatile or all");
		return -EINVAL;
	}
	t0 = now_ns();
	rc = guest_discard(s->g, what, PAGESTATE_HUGE | PAGESTATE_SMALL,
			   max_bytes ? max_bytes / PAGESTATE_PAGE_SIZE : UINT64_MAX,
			   &p);
	ns = now_ns() - t0;
	if (rc == -ENODEV) {
		*err = errf("guest '%s' has no page-state table (page_states "
			    "off, or its kernel has no ebb driver)",
			    guest_name(s->g));
		return -ENOTSUP;	/* NotSupported: for this guest */
	}
	if (rc < 0) {
		*err = errf("discard failed after %llu pages: %s",
			    (unsigned long long)p.discarded_pages, strerror(-rc));
		return rc;
	}
	log_info(guest_name(s->g), "discarded %llu %s pages (%llu MiB) in %.1f ms",
		 (unsigned long long)p.discarded_pages, what_s,
		 (unsigned long long)(p.discarded_pages * PAGESTATE_PAGE_SIZE >> 20),
		 ns / 1e6);
	control_event(d->ctl, "PAGES_DISCARDED", json_pack("{s:s, s:s, s:I}",
		      "name", guest_name(s->g), "reason", "command", "bytes",
		      (json_int_t)(p.discarded_pages * PAGESTATE_PAGE_SIZE)));
	*ret = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f}",
			 "name", guest_name(s->g), "what", what_s,
			 "pages", (json_int_t)p.discarded_pages,
			 "bytes", (json_int_t)(p.discarded_pages * PAGESTATE_PAGE_SIZE),
			 "punches", (json_int_t)p.punches,
			 "ms", ns / 1e6);
	return 0;
}

static int cmd_stop(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	bool force = false;
	struct slot *s;
	int rc;

	if ((rc = lookup(d, args, &s, err)) ||
	    (rc = control_arg_bool(args, "force", false, &force, err)))
		return rc;
	rc = guest_stop(s->g, force ? 0 : STOP_GRACE_MS);
	if (rc == -EINVAL) {
		*err = errf("guest '%s' is not running", guest_name(s->g));
		return rc;
	}
	return rc;
}

static int cmd_exec(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	const char *command;
	struct slot *s;
	int rc;

	if ((rc = lookup(d, args, &s, err)) ||
	    (rc = control_arg_str(args, "command", true, &command, err)))
		return rc;
	rc = guest_exec(s->g, command);
	if (rc == -EINVAL)
		*err = errf("command must be one non-empty line");
	else if (rc == -EPIPE)
		*err = errf("guest '%s' no longer reads its console",
			    guest_name(s->g));
	return rc;
}

static int cmd_info(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct pool_info pi;
	int rc = pool_info(d->pool, &pi);

	if (rc < 0)
		return rc;
	*ret = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i}",
			 "budget", (json_int_t)pi.budget_bytes,
			 "resident", (json_int_t)(pi.tot_pages * POOL_PAGE_SIZE),
			 "free", (json_int_t)(pi.free_pages * POOL_PAGE_SIZE),
			 "claims", (json_int_t)(pi.claim_pages * POOL_PAGE_SIZE),
			 "unclaimed", (json_int_t)(pi.unclaimed_pages * POOL_PAGE_SIZE),
			 "over", (json_int_t)(pi.over_pages * POOL_PAGE_SIZE),
			 "guests", (int)pi.guests);
	json_object_set_new(*ret, "store",
			    json_integer((json_int_t)(pi.store_pages * POOL_PAGE_SIZE)));
	json_object_set_new(*ret, "store_backing",
			    json_string(d->store_backing ? d->store_backing : "heap"));
	json_object_set_new(*ret, "pid", json_integer(getpid()));
	json_object_set_new(*ret, "restart", json_pack(
		"{s:s, s:i, s:I, s:I, s:I}",
		"how", d->restart_how ? d->restart_how : "start",
		"adopted", (int)d->restart_adopted,
		"pause_us", (json_int_t)d->restart_pause_us,
		"served_us", (json_int_t)d->restart_served_us,
		"startup_us", (json_int_t)d->startup_us));
	return 0;
}

static int cmd_upgrade(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	int rc = upgrade_start(d, err);

	if (rc < 0)
		return rc;
	*ret = json_pack("{s:i, s:s}", "pid", (int)getpid(), "exe", d->exe_path);
	return 0;
}

static void slot_backend_json(struct slot *s, unsigned i, json_t *dv)
{
	if ((int)i == s->swap_disk && s->swap) {
		struct swapstore_stats st;

		if (swapstore_stats(s->swap, &st) < 0)
			return;
		json_object_set_new(dv, "swap", json_pack(
			"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			"capacity_pages", (json_int_t)st.capacity_pages,
			"tmem_pages", (json_int_t)st.tmem_pages,
			"file_pages", (json_int_t)st.file_pages,
			"lost_pages", (json_int_t)st.lost_pages,
			"file_write_bytes", (json_int_t)st.file_write_bytes,
			"file_read_bytes", (json_int_t)st.file_read_bytes,
			"refused_puts", (json_int_t)st.refused_puts,
			"io_errors", (json_int_t)st.io_errors,
			"zero_pages_written", (json_int_t)st.zero_pages_written,
			"backoff_pages", (json_int_t)st.backoff_pages));
	} else if ((int)i == s->data_disk && s->disk) {
		struct cachedisk_stats st;

		if (cachedisk_stats(s->disk, &st) < 0)
			return;
		json_object_set_new(dv, "cache", json_pack(
			"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			"capacity_bytes", (json_int_t)st.capacity_bytes,
			"hits", (json_int_t)st.hits,
			"misses", (json_int_t)st.misses,
			"fills", (json_int_t)st.fills,
			"fills_refused", (json_int_t)st.fills_refused,
			"invalidated_pages", (json_int_t)st.invalidated_pages,
			"file_read_bytes", (json_int_t)st.file_read_bytes,
			"file_write_bytes", (json_int_t)st.file_write_bytes,
			"io_errors", (json_int_t)st.io_errors));
	}
}

/* The guest's block devices and their counters, as @o's "devices". */
static void slot_devices_json(struct slot *s, json_t *o)
{
	json_t *arr = json_array();
	const char *role, *sock;
	struct blk_info bi;

	for (unsigned i = 0; guest_disk_info(s->g, i, &role, &sock, &bi) == 0; i++) {
		json_t *dv = json_pack("{s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I, s:I, "
				       "s:I, s:I, s:I}",
			"role", role, "socket", sock,
			"connected", bi.connected, "failed", bi.failed,
			"reads", (json_int_t)bi.reads,
			"writes", (json_int_t)bi.writes,
			"read_bytes", (json_int_t)bi.read_bytes,
			"write_bytes", (json_int_t)bi.write_bytes,
			"flushes", (json_int_t)bi.flushes,
			"discards", (json_int_t)bi.discards,
			"ioerr", (json_int_t)bi.ioerr,
			"unsupp", (json_int_t)bi.unsupp);

		slot_backend_json(s, i, dv);
		json_array_append_new(arr, dv);
	}
	json_object_set_new(o, "devices", arr);
}

static int cmd_tmem(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct tmem_store_stats ss;
	json_t *guests = json_array();
	int rc = tmem_store_stats(d->store, &ss);

	if (rc < 0) {
		json_decref(guests);
		return rc;
	}
	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		struct slot *s = &d->slots[i];
		struct tmem_stats t;
		json_t *o;

		if (!s->g || !s->tmem_client ||
		    tmem_client_stats(d->store, client_of(s), &t) < 0)
			continue;
		o = tmem_stats_json(&t);
		json_object_set_new(o, "name", json_string(guest_name(s->g)));
		slot_devices_json(s, o);
		json_array_append_new(guests, o);
	}
	*ret = json_pack("{s:o, s:o, s:{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f},"
			 " s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
			 "total", tmem_stats_json(&ss.total),
			 "guests", guests,
			 "store", "compressor", ss.compressor,
			 "clients", (json_int_t)ss.clients,
			 "pools", (json_int_t)ss.pools,
			 "objects", (json_int_t)ss.objects,
			 "blobs", (json_int_t)ss.blobs,
			 "meta_bytes", (json_int_t)ss.meta_bytes,
			 "slabs", (json_int_t)ss.slabs,
			 "slab_bytes", (json_int_t)ss.slab_bytes,
			 "slab_used_bytes", (json_int_t)ss.slab_used_bytes,
			 "slab_frag_pct", ss.slab_frag_pct,
			 "latency",
			 "put_timed", (json_int_t)ss.put_timed,
			 "put_p50_ns", (json_int_t)ss.put_p50_ns,
			 "put_p99_ns", (json_int_t)ss.put_p99_ns,
			 "get_timed", (json_int_t)ss.get_timed,
			 "get_p50_ns", (json_int_t)ss.get_p50_ns,
			 "get_p99_ns", (json_int_t)ss.get_p99_ns);
	return 0;
}

static int cmd_claim(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct pool_guest_info gi;
	uint64_t size;
	struct slot *s;
	int rc;

	if ((rc = lookup(d, args, &s, err)) ||
	    (rc = control_arg_size(args, "size", true, &size, err)))
		return rc;
	if (!s->id) {
		*err = errf("guest '%s' is not running", guest_name(s->g));
		return -EINVAL;
	}
	pool_guest_info(d->pool, s->id, &gi);
	rc = size ? claim_with_room(d, s->id, size / POOL_PAGE_SIZE, guest_name(s->g))
		  : pool_claim(d->pool, s->id, 0);
	claimshm_note(d, s);
	if (rc == -ENOMEM)
		return claim_refused(d, guest_name(s->g),
				     size - gi.tot_pages * POOL_PAGE_SIZE, err);
	if (rc == -EINVAL) {
		char a[16], b[16];

		if (gi.claim_pages)
			*err = errf("guest '%s' already has a claim outstanding "
				    "(cancel it with 0 first)", guest_name(s->g));
		else
			*err = errf("a claim must be above the guest's resident "
				    "%s and at most its memory %s",
				    fmt_size(gi.tot_pages * POOL_PAGE_SIZE, a),
				    fmt_size(gi.max_pages * POOL_PAGE_SIZE, b));
		return rc;
	}
	if (rc < 0)
		return rc;
	s->rec.claim_bytes = size;
	slot_record_save(d, s);
	pool_guest_info(d->pool, s->id, &gi);
	*ret = json_pack("{s:s, s:I}", "name", guest_name(s->g), "claim",
			 (json_int_t)(gi.claim_pages * POOL_PAGE_SIZE));
	return 0;
}

/* ---- the host policy ---------------------------------------------------- */

static json_t *policy_counters_json(const struct ebbd *d)
{
	json_t *o = json_object();

	for (int m = 0; m < POLICY_NMECHS; m++)
		json_object_set_new(o, policy_mech_name(m), json_pack("{s:I, s:I}",
				    "actions", (json_int_t)d->pol_actions[m],
				    "bytes", (json_int_t)d->pol_bytes[m]));
	return o;
}

/* The last actions, oldest first. */
static json_t *policy_records_json(const struct ebbd *d)
{
	json_t *arr = json_array();
	uint64_t n = d->pol_rec_count < POLICY_RECORDS ? d->pol_rec_count :
							 POLICY_RECORDS;

	for (uint64_t k = 0; k < n; k++) {
		const struct policy_record *r =
			&d->pol_rec[(d->pol_rec_next + POLICY_RECORDS - n + k) %
				    POLICY_RECORDS];
		json_t *o = json_pack("{s:f, s:s?, s:s, s:I, s:s}",
			"time", r->wall_ms / 1000.0,
			"name", r->name[0] ? r->name : NULL,
			"mechanism", policy_mech_name(r->mech),
			"bytes", (json_int_t)r->bytes, "reason", r->reason);

		if (r->target_bytes)
			json_object_set_new(o, "target",
					    json_integer((json_int_t)r->target_bytes));
		if (r->result < 0)
			json_object_set_new(o, "error", json_string(strerror(-r->result)));
		json_array_append_new(arr, o);
	}
	return arr;
}

static json_t *policy_json(struct ebbd *d)
{
	const struct hostmem_sample *h = &d->pol_host;
	json_t *guests = json_array(), *o;

	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		struct slot *s = &d->slots[i];
		struct pool_guest_info pi = { 0 };
		struct guest_info gi;
		json_t *g;

		if (!s->g)
			continue;
		guest_get_info(s->g, &gi);
		if (s->id)
			pool_guest_info(d->pool, s->id, &pi);
		g = policy_guest_json(s);
		json_object_set_new(g, "keep", json_integer((json_int_t)(gi.mem_bytes -
			(uint64_t)gi.balloon.actual_pages * BALLOON_PAGE_SIZE)));
		json_object_set_new(g, "resident",
				    json_integer((json_int_t)(pi.tot_pages * POOL_PAGE_SIZE)));
		json_array_append_new(guests, g);
	}
	o = json_pack("{s:s, s:s, s:{s:I, s:I}, s:I, s:I, s:I, s:I, s:b, s:b, "
		      "s:b, s:I, s:o, s:o, s:o}",
		"mode", d->policy_on ? "on" : "off",
		"state", policy_state_name(d->pol_state),
		"watermarks", "low", (json_int_t)d->pol_cfg.low_bytes,
			      "high", (json_int_t)d->pol_cfg.high_bytes,
		"step", (json_int_t)d->pol_cfg.step_bytes,
		"margin", (json_int_t)d->pol_cfg.margin_bytes,
		"free", (json_int_t)d->pol_last.free_bytes,
		"need", (json_int_t)d->pol_last.need_bytes,
		"pressure", d->pol_last.pressure,
		"host_swap", d->pol_cfg.host_swap,
		"store_refusing", d->store_refusing,
		"ticks", (json_int_t)d->pol_ticks,
		"counters", policy_counters_json(d),
		"guests", guests,
		"actions", policy_records_json(d));
	json_object_set_new(o, "psi_some_avg10", h->psi_some_avg10 >= 0 ?
			    json_real(h->psi_some_avg10) : json_null());
	json_object_set_new(o, "cgroup", !h->cgroup ? json_null() :
		json_pack("{s:s, s:I, s:I, s:I, s:I}",
			  "path", hostmem_cgroup_dir(d->hostmem),
			  "limit", (json_int_t)h->limit_bytes,
			  "usage", (json_int_t)h->usage_bytes,
			  "working_set", (json_int_t)h->working_set_bytes,
			  "swap", (json_int_t)h->swap_bytes));
	return o;
}

/* policy: the state, watermarks, inputs and last actions; with arguments,
 * switch it (mode on/off) or move its watermarks first. */
static int cmd_policy(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct policy_config c = d->pol_cfg;
	const char *mode = NULL;
	int rc;

	if ((rc = control_arg_str(args, "mode", false, &mode, err)) ||
	    (rc = control_arg_size(args, "low", false, &c.low_bytes, err)) ||
	    (rc = control_arg_size(args, "high", false, &c.high_bytes, err)))
		return rc;
	if (mode && strcmp(mode, "on") && strcmp(mode, "off")) {
		*err = errf("mode must be on or off");
		return -EINVAL;
	}
	if (policy_config_check(&c) < 0) {
		*err = errf("watermarks must be 0 < low < high");
		return -EINVAL;
	}
	d->pol_cfg = c;
	if (mode && (rc = policy_switch(d, strcmp(mode, "on") == 0)) < 0)
		return rc;
	*ret = policy_json(d);
	return 0;
}

/* guest-policy: a guest's min, max and shares; hands a guest an operator
 * ballooned back to the policy. */
static int cmd_guest_policy(void *ctx, json_t *args, json_t **ret, char **err)
{
	struct ebbd *d = ctx;
	struct guest_info gi;
	struct slot *s;
	uint64_t min, max, shares;
	int rc;

	if ((rc = lookup(d, args, &s, err)))
		return rc;
	guest_get_info(s->g, &gi);
	min = s->pol_min_bytes;
	max = s->pol_max_bytes ? s->pol_max_bytes : gi.mem_bytes;
	shares = s->pol_shares;
	if ((rc = control_arg_size(args, "min", false, &min, err)) ||
	    (rc = control_arg_size(args, "max", false, &max, err)) ||
	    (rc = control_arg_uint(args, "shares", false, POLICY_SHARES_MAX,
				   &shares, err)))
		return rc;
	if (!max)
		max = gi.mem_bytes;
	if (min % POOL_PAGE_SIZE || max % POOL_PAGE_SIZE || max > gi.mem_bytes ||
	    min > max) {
		char a[16];

		*err = errf("min and max must be whole pages, min <= max <= the "
			    "guest's memory (%s)", fmt_size(gi.mem_bytes, a));
		return -EINVAL;
	}
	if (!shares) {
		*err = errf("shares must be from 1 to %u", POLICY_SHARES_MAX);
		return -EINVAL;
	}
	s->pol_min_bytes = min;
	s->pol_max_bytes = max;
	s->pol_shares = (uint32_t)shares;
	s->pol_manual = false;
	slot_record_save(d, s);	/* an adopting ebbd keeps them */
	*ret = policy_guest_json(s);
	return 0;
}

const struct control_cmd ebbd_commands[] = {
	{ "guest-run", cmd_guest_run, GUEST_RUN_KEYS,
	  "claim memory for a guest and launch it" },
	{ "guest-list", cmd_list, "", "list guests" },
	{ "balloon", cmd_balloon, "name target",
	  "set the memory a guest keeps (balloon the rest)" },
	{ "guest-stats", cmd_stats, "name", "a guest's memory statistics" },
	{ "guest-discard", cmd_discard, "name what max_bytes",
	  "discard a guest's unused and/or volatile pages (page hinting)" },
	{ "guest-stop", cmd_stop, "name force", "power a guest off" },
	{ "guest-exec", cmd_exec, "name command",
	  "run a shell line in the guest" },
	{ "info", cmd_info, "", "host pool: budget, resident, free, claims" },
	{ "upgrade", cmd_upgrade, "",
	  "re-exec the ebbd binary on disk; guests keep running" },
	{ "claim", cmd_claim, "name size",
	  "stake (or with 0 cancel) a claim for a guest" },
	{ "tmem", cmd_tmem, "",
	  "transcendent memory: per-guest and total pages, ratios, hits" },
	{ "policy", cmd_policy, "mode low high",
	  "the host memory policy: state, watermarks, last actions; switch it" },
	{ "guest-policy", cmd_guest_policy, "name min max shares",
	  "a guest's policy settings: min, max, shares" },
	{ NULL, NULL, NULL, NULL },
};
