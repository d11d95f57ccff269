/*
 * policyd: the host memory policy inside ebbd (declared in ebbd.h; the
 * decisions themselves are src/policy/policy.h's).  Each decision:
 *
 *   1. snapshot: every running guest's balloon statistics (available,
 *      MemTotal, major faults and swap-ins since its previous report),
 *      resident memory as the pool last measured it, what its balloon
 *      leaves it, its page-state counts, its min/max/shares; the pool's
 *      free memory and overshoot; the store's ephemeral charge; PSI and
 *      the memory cgroup (hostmem.h);
 *   2. policy_decide();
 *   3. carry out each action through the mechanism that owns it (tmem
 *      shrink, hinting's discard, the balloon, the store's charge hook,
 *      hostmem's pageout), record it in a ring for `ebbctl policy`, and
 *      send an event: POLICY_RECLAIM, or POLICY_GIVE for memory given to
 *      a guest, with the guest, mechanism, bytes and reason;
 *   4. move the state (policy_set_state: checked against the table in
 *      policy.c, logged, and a POLICY_STATE event).
 *
 * It runs every POLICY_TICK_MS and, when a guest grows past what the pool
 * can back, at once (policy_kick from the accounting), at most every
 * POLICY_KICK_MIN_MS.  Work per decision is bounded by the decision: at
 * most step_bytes per guest per mechanism.  Host swap (a cgroup limit
 * squeeze, hostmem.h) blocks the loop while the kernel reclaims, at most
 * step_bytes of one guest per action: tens of ms per 64 MiB on this host.
 */
#include "ebbd.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define MiB	(1ull << 20)
/* Statistics older than this are not used (the guest stopped sending). */
#define POLICY_STATS_MAX_AGE_MS	5000

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void policy_set_state(struct ebbd *d, enum policy_state to,
			     const char *why)
{
	enum policy_state from = d->pol_state;

	if (from == to)
		return;
	assert(policy_state_allowed(from, to));
	d->pol_state = to;
	log_info(NULL, "policy %s -> %s (%s)", policy_state_name(from),
		 policy_state_name(to), why);
	control_event(d->ctl, "POLICY_STATE", json_pack("{s:s, s:s, s:s}",
		      "from", policy_state_name(from), "to",
		      policy_state_name(to), "reason", why));
}

/* ---- 1. the snapshot -------------------------------------------------- */

/* New counters since the guest's previous statistics report; zero when no
 * new report came since the last decision. */
static void take_deltas(struct slot *s, const struct balloon_info *b)
{
	uint64_t mf = b->stats[VIRTIO_BALLOON_S_MAJFLT];
	uint64_t si = b->stats[VIRTIO_BALLOON_S_SWAP_IN];

	s->pol_faults_delta = s->pol_swap_in_delta = 0;
	if (!b->stats_ms || b->stats_ms == s->pol_stats_ms)
		return;
	if (s->pol_stats_ms) {
		s->pol_faults_delta = mf > s->pol_major_faults ?
				      mf - s->pol_major_faults : 0;
		/* SWAP_IN is in bytes (virtio 5.5.6.3). */
		s->pol_swap_in_delta = si > s->pol_swap_in_bytes ?
				       (si - s->pol_swap_in_bytes) / 4096 : 0;
	}
	s->pol_stats_ms = b->stats_ms;
	s->pol_major_faults = mf;
	s->pol_swap_in_bytes = si;
}

static bool slot_snapshot(struct ebbd *d, struct slot *s,
			  struct policy_guest *pg)
{
	const uint32_t need = (1u << VIRTIO_BALLOON_S_MEMTOT) |
			      (1u << VIRTIO_BALLOON_S_AVAIL);
	struct pool_guest_info pi;
	struct guest_info gi;
	uint64_t c[PS_NSTATES + 1];

	if (!s->g || !s->id || s->pre_state == PRE_RUNNING ||
	    pool_guest_info(d->pool, s->id, &pi) < 0)
		return false;
	guest_get_info(s->g, &gi);
	if (gi.state != GUEST_RUNNING)
		return false;
	memset(pg, 0, sizeof(*pg));
	snprintf(pg->name, sizeof(pg->name), "%s", gi.name);
	pg->mem_bytes = gi.mem_bytes;
	pg->min_bytes = s->pol_min_bytes;
	pg->max_bytes = s->pol_max_bytes ? s->pol_max_bytes : gi.mem_bytes;
	pg->shares = s->pol_shares ? s->pol_shares : POLICY_SHARES_DEFAULT;
	pg->manual = s->pol_manual;
	pg->resident_bytes = pi.tot_pages * POOL_PAGE_SIZE;
	/* A RAM file's allocated size counts its pages in host swap too
	 * (tmpfs keeps them in i_blocks): what the host really holds is
	 * less by what its cgroup has in swap. */
	s->pol_swapped_bytes = 0;
	if (s->pol_cgroup &&
	    hostmem_guest_swap(d->hostmem, s->pol_cg_name, &s->pol_swapped_bytes) == 0)
		pg->resident_bytes -= s->pol_swapped_bytes < pg->resident_bytes ?
				      s->pol_swapped_bytes : pg->resident_bytes;
	/* Everything below comes from the guest: a driver that claims more
	 * balloon than memory, or statistics beyond its size, is clamped
	 * rather than believed (policy_decide refuses an input whose keep is
	 * above mem, which would stop the policy for every guest). */
	pg->keep_bytes = gi.mem_bytes -
			 min_u64((uint64_t)gi.balloon.actual_pages * BALLOON_PAGE_SIZE,
				 gi.mem_bytes);
	pg->balloon_ready = gi.balloon.ready && !gi.balloon.failed;
	take_deltas(s, &gi.balloon);
	pg->stats_valid = (gi.balloon.stats_valid & need) == need &&
			  gi.balloon.stats_ms &&
			  loop_now_ms() - gi.balloon.stats_ms < POLICY_STATS_MAX_AGE_MS;
	pg->total_bytes = min_u64(gi.balloon.stats[VIRTIO_BALLOON_S_MEMTOT],
				  gi.mem_bytes);
	pg->available_bytes = min_u64(gi.balloon.stats[VIRTIO_BALLOON_S_AVAIL],
				      pg->total_bytes);
	pg->major_faults_delta = s->pol_faults_delta;
	pg->swap_ins_delta = s->pol_swap_in_delta;
	if (gi.has_ebb && gi.ebb.table && guest_page_states(s->g, c) == 0) {
		pg->unused_bytes = c[PS_UNUSED] * PAGESTATE_PAGE_SIZE;
		pg->volatile_bytes = c[PS_VOLATILE] * PAGESTATE_PAGE_SIZE;
	}
	pg->can_swap = s->pol_cgroup && d->pol_cfg.host_swap;
	return true;
}

static void host_snapshot(struct ebbd *d, struct policy_host *h)
{
	struct tmem_store_stats ts;
	struct pool_info pi;

	memset(h, 0, sizeof(*h));
	if (pool_info(d->pool, &pi) == 0) {
		h->pool_free_bytes = pi.free_pages * POOL_PAGE_SIZE;
		h->pool_over_bytes = pi.over_pages * POOL_PAGE_SIZE;
	}
	hostmem_sample(d->hostmem, &d->pol_host);
	if (d->pol_host.cgroup) {
		h->cg_limit_bytes = d->pol_host.limit_bytes;
		h->cg_used_bytes = d->pol_host.working_set_bytes;
	}
	h->psi_some_pct = d->pol_host.psi_some_avg10;
	/* Host swap needs somewhere to swap to: a squeeze without swap only
	 * makes the kernel scan in vain. */
	d->pol_cfg.host_swap = hostmem_can_swap(d->hostmem) &&
			       d->pol_host.swap_total_bytes > 0;
	/* The store's charge is compressed bytes: the ephemeral part of it
	 * is what dropping clean cache can give back. */
	if (tmem_store_stats(d->store, &ts) == 0 &&
	    ts.total.persistent_pages + ts.total.ephemeral_pages)
		h->ephemeral_bytes = (uint64_t)((double)ts.total.charged_bytes *
			ts.total.ephemeral_pages /
			(ts.total.persistent_pages + ts.total.ephemeral_pages));
	h->store_refusing = d->store_refusing;
}

/* ---- 3. actions ------------------------------------------------------- */

static void record(struct ebbd *d, const char *name,
		   const struct policy_action *a, uint64_t done, int rc)
{
	struct policy_record *r = &d->pol_rec[d->pol_rec_next];
	json_t *ev;

	d->pol_rec_next = (d->pol_rec_next + 1) % POLICY_RECORDS;
	d->pol_rec_count++;
	r->wall_ms = wall_ms();
	snprintf(r->name, sizeof(r->name), "%s", name ? name : "");
	r->mech = a->mech;
	r->bytes = done;
	r->target_bytes = a->target_bytes;
	r->result = rc;
	snprintf(r->reason, sizeof(r->reason), "%s", a->reason);
	d->pol_actions[a->mech]++;
	d->pol_bytes[a->mech] += done;

	ev = json_pack("{s:s?, s:s, s:I, s:I, s:s}", "name", name,
		       "mechanism", policy_mech_name(a->mech),
		       "bytes", (json_int_t)done, "asked", (json_int_t)a->bytes,
		       "reason", a->reason);
	if (a->mech == POLICY_BALLOON_INFLATE || a->mech == POLICY_BALLOON_DEFLATE)
		json_object_set_new(ev, "target", json_integer((json_int_t)a->target_bytes));
	if (rc < 0)
		json_object_set_new(ev, "error", json_string(strerror(-rc)));
	log_info(name, "policy: %s %llu KiB%s (%s)%s%s",
		 policy_mech_name(a->mech), (unsigned long long)(done >> 10),
		 a->target_bytes ? ", balloon target set" : "", a->reason,
		 rc < 0 ? ": " : "", rc < 0 ? strerror(-rc) : "");
	control_event(d->ctl, policy_mech_gives(a->mech) ? "POLICY_GIVE" :
		      "POLICY_RECLAIM", ev);
}

static void act(struct ebbd *d, struct slot *s, const struct policy_action *a)
{
	const char *name = s ? guest_name(s->g) : NULL;
	uint64_t done = a->bytes, pages;
	int rc = 0;

	switch (a->mech) {
	case POLICY_DROP_EPHEMERAL:
		done = 0;
		rc = tmem_shrink(d->store, a->bytes, &done);
		break;
	case POLICY_DISCARD_UNUSED:
	case POLICY_DISCARD_VOLATILE:
		pages = hinting_discard_guest(d, s, a->mech == POLICY_DISCARD_UNUSED ?
					      PAGESTATE_UNUSED : PAGESTATE_VOLATILE,
					      a->bytes / PAGESTATE_PAGE_SIZE);
		done = pages * PAGESTATE_PAGE_SIZE;
		break;
	case POLICY_BALLOON_INFLATE:
	case POLICY_BALLOON_DEFLATE:
		rc = guest_balloon(s->g, a->target_bytes);
		if (rc == -ENOTCONN)	/* applies once the driver is there */
			rc = 0;
		break;
	case POLICY_STORE_REFUSE:
		d->store_refusing = true;
		break;
	case POLICY_STORE_ALLOW:
		d->store_refusing = false;
		break;
	case POLICY_HOST_SWAP:
		rc = hostmem_guest_pageout(d->hostmem, name, a->bytes, &done);
		break;
	default:
		return;
	}
	record(d, name, a, done, rc);
}

/* ---- the loop --------------------------------------------------------- */

static void policy_run(struct ebbd *d)
{
	/* static: MAX_GUESTS snapshots are ~45 KiB, kept off the stack;
	 * only the loop thread gets here. */
	static struct policy_guest pg[MAX_GUESTS];
	struct slot *map[MAX_GUESTS];
	struct policy_input in = { .guests = pg };
	struct policy_decision *dec = &d->pol_last;
	uint64_t swapped = 0;
	char why[96];
	int rc;

	if (!d->policy_on || d->shutting_down)
		return;
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (slot_snapshot(d, &d->slots[i], &pg[in.nguests])) {
			swapped += d->slots[i].pol_swapped_bytes;
			map[in.nguests++] = &d->slots[i];
		}
	host_snapshot(d, &in.host);
	/* The pool counts guests' pages in host swap as resident; the host
	 * does not hold them in memory (see slot_snapshot). */
	if (swapped >= in.host.pool_over_bytes) {
		in.host.pool_free_bytes += swapped - in.host.pool_over_bytes;
		in.host.pool_over_bytes = 0;
	} else {
		in.host.pool_over_bytes -= swapped;
	}
	rc = policy_decide(&d->pol_cfg, d->pol_state, &in, dec);
	d->pol_last_ms = loop_now_ms();
	d->pol_ticks++;
	if (rc < 0) {
		log_warn(NULL, "policy: cannot decide: %s", strerror(-rc));
		return;
	}
	for (size_t k = 0; k < dec->nactions; k++) {
		const struct policy_action *a = &dec->actions[k];

		act(d, a->guest >= 0 ? map[a->guest] : NULL, a);
	}
	snprintf(why, sizeof(why), "free %lld MiB, low %llu MiB, high %llu MiB%s",
		 (long long)(dec->free_bytes / (int64_t)MiB),
		 (unsigned long long)(d->pol_cfg.low_bytes / MiB),
		 (unsigned long long)(d->pol_cfg.high_bytes / MiB),
		 dec->pressure ? ", host under pressure" : "");
	policy_set_state(d, dec->state, why);
}

static void on_policy_tick(void *opaque)
{
	policy_run(opaque);
}

void policy_kick(struct ebbd *d)
{
	if (d->policy_on && d->policy_timer &&
	    loop_now_ms() - d->pol_last_ms >= POLICY_KICK_MIN_MS)
		policy_run(d);
}

int policy_start(struct ebbd *d)
{
	struct pool_info pi;
	int rc;

	rc = hostmem_open(NULL, &d->hostmem);
	if (rc < 0)
		return rc;
	pool_info(d->pool, &pi);
	/* Watermarks from the budget unless given: low 1/16 of it (32 MiB to
	 * 1 GiB), high twice low. */
	if (!d->pol_low_set) {
		d->pol_cfg.low_bytes = pi.budget_bytes / 16;
		if (d->pol_cfg.low_bytes < 32 * MiB)
			d->pol_cfg.low_bytes = 32 * MiB;
		if (d->pol_cfg.low_bytes > 1024 * MiB)
			d->pol_cfg.low_bytes = 1024 * MiB;
	}
	if (!d->pol_high_set)
		d->pol_cfg.high_bytes = 2 * d->pol_cfg.low_bytes;
	d->pol_cfg.step_bytes = 64 * MiB;
	d->pol_cfg.margin_bytes = 32 * MiB;
	d->pol_cfg.psi_some_pct = 10;
	/* A few dozen major faults a second is a guest re-reading what it
	 * lost; a page of swap-in a second is a guest swapping. */
	d->pol_cfg.give_major_faults = 50;
	d->pol_cfg.give_swap_ins = 16;
	d->pol_cfg.host_swap = hostmem_can_swap(d->hostmem);
	if (policy_config_check(&d->pol_cfg) < 0) {
		log_warn(NULL, "policy: low watermark must be below the high one");
		return -EINVAL;
	}
	d->pol_state = POLICY_OFF;
	if (!d->policy_on)
		return 0;
	policy_set_state(d, POLICY_OK, "--policy on");
	log_info(NULL, "policy on: low %llu MiB, high %llu MiB, host swap %s%s",
		 (unsigned long long)(d->pol_cfg.low_bytes / MiB),
		 (unsigned long long)(d->pol_cfg.high_bytes / MiB),
		 d->pol_cfg.host_swap ? "by cgroup " : "unavailable",
		 d->pol_cfg.host_swap ? hostmem_cgroup_dir(d->hostmem) : "");
	return loop_timer_add(d->loop, POLICY_TICK_MS, POLICY_TICK_MS,
			      on_policy_tick, d, &d->policy_timer);
}

int policy_switch(struct ebbd *d, bool on)
{
	int rc;

	if (on == d->policy_on)
		return 0;
	if (on && !d->policy_timer &&
	    (rc = loop_timer_add(d->loop, POLICY_TICK_MS, POLICY_TICK_MS,
				 on_policy_tick, d, &d->policy_timer)) < 0)
		return rc;
	d->policy_on = on;
	if (!on)
		d->store_refusing = false;	/* off means nothing stays in force */
	policy_set_state(d, on ? POLICY_OK : POLICY_OFF,
			 on ? "switched on" : "switched off");
	return 0;
}

void policy_stop(struct ebbd *d)
{
	loop_timer_del(d->policy_timer);
	d->policy_timer = NULL;
	/* The guests were killed just before: their processes may take a
	 * moment to leave their cgroups. */
	hostmem_guest_remove_all(d->hostmem, 2000);
	hostmem_close(d->hostmem);
	d->hostmem = NULL;
}

/* ---- slots ------------------------------------------------------------ */

void policy_slot_init(struct ebbd *d, struct slot *s, const struct guest_run *r,
		      char **procs)
{
	/* A preallocated guest was promised its claim: the policy never
	 * takes it below that. */
	s->pol_min_bytes = r->prealloc ? guest_run_claim_bytes(r) : r->min;
	s->pol_max_bytes = r->max;
	s->pol_shares = r->shares ? (uint32_t)r->shares : POLICY_SHARES_DEFAULT;
	s->pol_manual = false;
	s->pol_cgroup = false;
	s->pol_stats_ms = s->pol_major_faults = s->pol_swap_in_bytes = 0;
	s->pol_faults_delta = s->pol_swap_in_delta = 0;
	*procs = NULL;
	if (!d->policy_on || !hostmem_can_swap(d->hostmem) || r->external)
		return;
	if (hostmem_guest_create(d->hostmem, r->name, procs) == 0) {
		s->pol_cgroup = true;
		snprintf(s->pol_cg_name, sizeof(s->pol_cg_name), "%s", r->name);
	}
	else
		log_warn(r->name, "no memory cgroup of its own: host swap "
			 "cannot pick it");
}

void policy_slot_release(struct ebbd *d, struct slot *s)
{
	if (s->pol_cgroup && d->hostmem)
		hostmem_guest_remove(d->hostmem, s->pol_cg_name);
	s->pol_cgroup = false;
}

void policy_slot_manual(struct slot *s)
{
	s->pol_manual = true;
}

json_t *policy_guest_json(const struct slot *s)
{
	struct guest_info gi;

	guest_get_info(s->g, &gi);
	return json_pack("{s:s, s:I, s:I, s:i, s:b, s:b}",
			 "name", gi.name,
			 "min", (json_int_t)s->pol_min_bytes,
			 "max", (json_int_t)(s->pol_max_bytes ? s->pol_max_bytes :
					     gi.mem_bytes),
			 "shares", (int)s->pol_shares,
			 "manual", s->pol_manual,
			 "cgroup", s->pol_cgroup);
}
