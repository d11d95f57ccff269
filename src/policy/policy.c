/*
 * policy: the decision function (contract, steps and state diagram in
 * policy.h).  Pure: a snapshot in, actions out.
 */
#include "policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MiB		(1ull << 20)
#define PAGE_BYTES	4096ull

static const char *const state_names[POLICY_NSTATES] = {
	[POLICY_OFF] = "off",
	[POLICY_OK] = "ok",
	[POLICY_RECLAIM] = "reclaim",
	[POLICY_LAST_RESORT] = "last_resort",
};

static const char *const mech_names[POLICY_NMECHS] = {
	[POLICY_DROP_EPHEMERAL] = "drop_ephemeral",
	[POLICY_DISCARD_UNUSED] = "discard_unused",
	[POLICY_DISCARD_VOLATILE] = "discard_volatile",
	[POLICY_BALLOON_INFLATE] = "balloon_inflate",
	[POLICY_STORE_REFUSE] = "store_refuse",
	[POLICY_HOST_SWAP] = "host_swap",
	[POLICY_BALLOON_DEFLATE] = "balloon_deflate",
	[POLICY_STORE_ALLOW] = "store_allow",
};

/* allowed[from][to], the diagram in policy.h.  Staying put is always
 * allowed and not listed. */
static const bool allowed[POLICY_NSTATES][POLICY_NSTATES] = {
	[POLICY_OFF] = { [POLICY_OK] = true },
	[POLICY_OK] = {
		[POLICY_OFF] = true, [POLICY_RECLAIM] = true,
		[POLICY_LAST_RESORT] = true,
	},
	[POLICY_RECLAIM] = {
		[POLICY_OFF] = true, [POLICY_OK] = true,
		[POLICY_LAST_RESORT] = true,
	},
	[POLICY_LAST_RESORT] = {
		[POLICY_OFF] = true, [POLICY_OK] = true,
		[POLICY_RECLAIM] = true,
	},
};

const char *policy_state_name(enum policy_state s)
{
	return (unsigned)s < POLICY_NSTATES ? state_names[s] : "?";
}

const char *policy_mech_name(enum policy_mech m)
{
	return (unsigned)m < POLICY_NMECHS ? mech_names[m] : "?";
}

bool policy_mech_gives(enum policy_mech m)
{
	return m == POLICY_BALLOON_DEFLATE || m == POLICY_STORE_ALLOW;
}

bool policy_state_allowed(enum policy_state from, enum policy_state to)
{
	if ((unsigned)from >= POLICY_NSTATES || (unsigned)to >= POLICY_NSTATES)
		return false;
	return from == to || allowed[from][to];
}

int policy_config_check(const struct policy_config *cfg)
{
	if (!cfg->low_bytes || cfg->high_bytes <= cfg->low_bytes ||
	    !cfg->step_bytes || cfg->psi_some_pct < 0 || cfg->psi_some_pct > 100)
		return -EINVAL;
	return 0;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Appends an action; a full list drops the rest (the next decision
 * sees what is left). */
static struct policy_action *add(struct policy_decision *out,
				 enum policy_mech mech, int guest,
				 uint64_t bytes, uint64_t target,
				 const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static struct policy_action *add(struct policy_decision *out,
				 enum policy_mech mech, int guest,
				 uint64_t bytes, uint64_t target,
				 const char *fmt, ...)
{
	struct policy_action *a;
	va_list ap;

	if (out->nactions >= POLICY_MAX_ACTIONS)
		return NULL;
	a = &out->actions[out->nactions++];
	a->mech = mech;
	a->guest = guest;
	a->bytes = bytes;
	a->target_bytes = target;
	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
	va_end(ap);
	return a;
}

/* Memory the guest uses, by its own numbers: MemTotal - MemAvailable,
 * less the balloon when the guest still counts balloon pages in MemTotal
 * (it does with DEFLATE_ON_OOM, which ebb offers: then they look used). */
static uint64_t guest_used(const struct policy_guest *g)
{
	uint64_t used, balloon;

	if (g->available_bytes >= g->total_bytes)
		return 0;
	used = g->total_bytes - g->available_bytes;
	balloon = g->mem_bytes > g->keep_bytes ? g->mem_bytes - g->keep_bytes : 0;
	if (g->total_bytes > g->keep_bytes)
		used = used > balloon ? used - balloon : 0;
	return used;
}

/* The least a balloon may leave @g: its min, and what it uses plus the
 * margin. */
static uint64_t guest_floor(const struct policy_config *cfg,
			    const struct policy_guest *g)
{
	return max_u64(g->min_bytes, guest_used(g) + cfg->margin_bytes);
}

static bool guest_balloonable(const struct policy_guest *g)
{
	return g->balloon_ready && g->stats_valid && !g->manual;
}

static bool guest_pressed(const struct policy_config *cfg,
			  const struct policy_guest *g)
{
	return (cfg->give_major_faults &&
		g->major_faults_delta >= cfg->give_major_faults) ||
	       (cfg->give_swap_ins && g->swap_ins_delta >= cfg->give_swap_ins) ||
	       g->available_bytes < cfg->margin_bytes / 2;
}

/* Step 1: clean cache in the store. */
static uint64_t step_ephemeral(const struct policy_input *in, uint64_t need,
			       struct policy_decision *out)
{
	uint64_t take = min_u64(need, in->host.ephemeral_bytes);

	if (take)
		add(out, POLICY_DROP_EPHEMERAL, -1, take, 0,
		    "host short by %llu MiB: clean cache goes first",
		    (unsigned long long)(need / MiB));
	return take;
}

/* Step 2: pages the guests published as unused (then volatile).  What a
 * discard frees is at most what is resident; the next snapshot shows the
 * truth. */
static uint64_t step_discard(const struct policy_input *in, uint64_t need,
			     bool vol, struct policy_decision *out)
{
	uint64_t done = 0;

	for (size_t i = 0; i < in->nguests && done < need; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t have = vol ? g->volatile_bytes : g->unused_bytes;
		uint64_t take = min_u64(min_u64(have, g->resident_bytes),
					need - done);

		if (take < PAGE_BYTES)
			continue;
		add(out, vol ? POLICY_DISCARD_VOLATILE : POLICY_DISCARD_UNUSED,
		    (int)i, take, 0, "%llu MiB of its pages are %s",
		    (unsigned long long)(have / MiB), vol ? "volatile" : "unused");
		done += take;
	}
	return done;
}

/*
 * Step 3: balloons, in bounded steps weighted by shares.  Each candidate's
 * gain is resident above its floor, at most step_bytes.  The need is split
 * in proportion to gain / shares (pass 1); what the rounding or the caps
 * left is taken from the highest gain / shares first (pass 2).
 */
static uint64_t step_balloon(const struct policy_config *cfg,
			     const struct policy_input *in, uint64_t need,
			     struct policy_decision *out)
{
	uint64_t gain[POLICY_MAX_ACTIONS] = { 0 }, take[POLICY_MAX_ACTIONS] = { 0 };
	double weight[POLICY_MAX_ACTIONS] = { 0 }, sum = 0;
	size_t n = in->nguests < POLICY_MAX_ACTIONS ? in->nguests : POLICY_MAX_ACTIONS;
	uint64_t done = 0;

	for (size_t i = 0; i < n; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t floor, base;

		if (!guest_balloonable(g))
			continue;
		floor = guest_floor(cfg, g);
		base = min_u64(g->keep_bytes, g->resident_bytes);
		if (base <= floor + MiB)
			continue;
		gain[i] = min_u64(base - floor, cfg->step_bytes);
		weight[i] = (double)gain[i] / g->shares;
		sum += weight[i];
	}
	if (sum <= 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!gain[i])
			continue;
		take[i] = min_u64(gain[i], (uint64_t)((double)need * weight[i] / sum));
		take[i] -= take[i] % PAGE_BYTES;
		done += take[i];
	}
	while (done < need) {
		size_t best = n;

		for (size_t i = 0; i < n; i++)
			if (take[i] < gain[i] &&
			    (best == n || weight[i] > weight[best]))
				best = i;
		if (best == n)
			break;
		{
			uint64_t more = min_u64(gain[best] - take[best], need - done);

			more = (more + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
			more = min_u64(more, gain[best] - take[best]);
			take[best] += more;
			done += more;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t base, target;

		if (take[i] < PAGE_BYTES)
			continue;
		base = min_u64(g->keep_bytes, g->resident_bytes);
		target = max_u64(base - take[i], guest_floor(cfg, g));
		add(out, POLICY_BALLOON_INFLATE, (int)i, base - target, target,
		    "uses %llu MiB, holds %llu MiB (shares %u)",
		    (unsigned long long)(guest_used(g) / MiB),
		    (unsigned long long)(g->resident_bytes / MiB), g->shares);
	}
	return done;
}

/* What @g will hold once this decision's balloon action (if any) is
 * done: host swap must not count the same memory twice, nor go below
 * min because of it. */
static uint64_t resident_after(const struct policy_decision *out, size_t i,
			       const struct policy_guest *g)
{
	for (size_t k = 0; k < out->nactions; k++)
		if (out->actions[k].mech == POLICY_BALLOON_INFLATE &&
		    out->actions[k].guest == (int)i)
			return min_u64(g->resident_bytes,
				       out->actions[k].target_bytes);
	return g->resident_bytes;
}

/* Step 5: page out RAM of the guests with the most resident memory above
 * their min per share, step_bytes each at most. */
static void step_host_swap(const struct policy_config *cfg,
			   const struct policy_input *in, uint64_t need,
			   struct policy_decision *out)
{
	bool used[POLICY_MAX_ACTIONS] = { false };
	size_t n = in->nguests < POLICY_MAX_ACTIONS ? in->nguests : POLICY_MAX_ACTIONS;

	while (need) {
		size_t best = n;
		double best_score = 0;

		for (size_t i = 0; i < n; i++) {
			const struct policy_guest *g = &in->guests[i];
			double score;

			uint64_t res = resident_after(out, i, g);

			if (used[i] || !g->can_swap || res <= g->min_bytes + MiB)
				continue;
			score = (double)(res - g->min_bytes) / g->shares;
			if (best == n || score > best_score) {
				best = i;
				best_score = score;
			}
		}
		if (best == n)
			return;
		used[best] = true;
		{
			const struct policy_guest *g = &in->guests[best];
			uint64_t take = min_u64(min_u64(need, cfg->step_bytes),
						resident_after(out, best, g) -
						g->min_bytes);

			take -= take % PAGE_BYTES;
			add(out, POLICY_HOST_SWAP, (int)best, take, 0,
			    "still short by %llu MiB after steps 1-4",
			    (unsigned long long)(need / MiB));
			need -= min_u64(need, take);
		}
	}
}

/* Giving back: guests under pressure whose balloon holds memory, while
 * the host stays above its low watermark. */
static void give_back(const struct policy_config *cfg,
		      const struct policy_input *in, int64_t free_bytes,
		      struct policy_decision *out)
{
	for (size_t i = 0; i < in->nguests; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t give;

		if (!guest_balloonable(g) || g->keep_bytes >= g->max_bytes ||
		    !guest_pressed(cfg, g))
			continue;
		give = min_u64(cfg->step_bytes, g->max_bytes - g->keep_bytes);
		if (free_bytes - (int64_t)give < (int64_t)cfg->low_bytes)
			continue;
		free_bytes -= (int64_t)give;
		add(out, POLICY_BALLOON_DEFLATE, (int)i, give, g->keep_bytes + give,
		    "under pressure: +%llu major faults, +%llu swap-ins, "
		    "%llu MiB available",
		    (unsigned long long)g->major_faults_delta,
		    (unsigned long long)g->swap_ins_delta,
		    (unsigned long long)(g->available_bytes / MiB));
	}
}

/* Idle trim (policy.h): memory an idle guest holds well above its use. */
static void idle_trim(const struct policy_config *cfg,
		      const struct policy_input *in, struct policy_decision *out)
{
	for (size_t i = 0; i < in->nguests && cfg->idle_trim_bytes; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t base, floor, take;

		if (!guest_balloonable(g) || guest_pressed(cfg, g) ||
		    g->major_faults_delta || g->swap_ins_delta ||
		    g->available_bytes < cfg->margin_bytes)
			continue;
		base = min_u64(g->keep_bytes, g->resident_bytes);
		floor = guest_floor(cfg, g);
		if (base <= floor + 2 * cfg->margin_bytes)
			continue;
		take = min_u64(cfg->idle_trim_bytes, base - floor - cfg->margin_bytes);
		take -= take % PAGE_BYTES;
		if (!take)
			continue;
		add(out, POLICY_BALLOON_INFLATE, (int)i, take, base - take,
		    "idle: uses %llu MiB, holds %llu MiB",
		    (unsigned long long)(guest_used(g) / MiB),
		    (unsigned long long)(g->resident_bytes / MiB));
	}
}

/* A lowered max: the balloon takes the guest down to it. */
static void enforce_max(const struct policy_input *in,
			struct policy_decision *out)
{
	for (size_t i = 0; i < in->nguests; i++) {
		const struct policy_guest *g = &in->guests[i];
		uint64_t target = max_u64(g->max_bytes, g->min_bytes);

		if (g->manual || !g->balloon_ready || g->keep_bytes <= target)
			continue;
		add(out, POLICY_BALLOON_INFLATE, (int)i, g->keep_bytes - target,
		    target, "its max is %llu MiB",
		    (unsigned long long)(g->max_bytes / MiB));
	}
}

static int check_input(const struct policy_input *in)
{
	for (size_t i = 0; i < in->nguests; i++) {
		const struct policy_guest *g = &in->guests[i];

		if (!g->shares || g->shares > POLICY_SHARES_MAX ||
		    g->min_bytes > g->mem_bytes || g->max_bytes > g->mem_bytes ||
		    g->keep_bytes > g->mem_bytes)
			return -EINVAL;
	}
	return 0;
}

/* The host's free memory: the pool's, or the cgroup's room if smaller. */
static int64_t host_free(const struct policy_host *h)
{
	int64_t f = (int64_t)h->pool_free_bytes - (int64_t)h->pool_over_bytes;

	if (h->cg_limit_bytes) {
		int64_t room = (int64_t)h->cg_limit_bytes - (int64_t)h->cg_used_bytes;

		if (room < f)
			f = room;
	}
	return f;
}

int policy_decide(const struct policy_config *cfg, enum policy_state prev,
		  const struct policy_input *in, struct policy_decision *out)
{
	bool reclaim;
	uint64_t need, left;

	memset(out, 0, sizeof(*out));
	out->state = prev;
	if (policy_config_check(cfg) < 0 || (unsigned)prev >= POLICY_NSTATES ||
	    check_input(in) < 0)
		return -EINVAL;
	if (prev == POLICY_OFF)
		return 0;
	out->free_bytes = host_free(&in->host);
	out->pressure = cfg->psi_some_pct > 0 &&
			in->host.psi_some_pct >= cfg->psi_some_pct;
	/* Hysteresis: start below low (or under pressure below high), go on
	 * until high. */
	if (prev == POLICY_OK)
		reclaim = out->free_bytes < (int64_t)cfg->low_bytes ||
			  (out->pressure && out->free_bytes < (int64_t)cfg->high_bytes);
	else
		reclaim = out->free_bytes < (int64_t)cfg->high_bytes;
	enforce_max(in, out);
	if (!reclaim) {
		out->state = POLICY_OK;
		if (in->host.store_refusing)
			add(out, POLICY_STORE_ALLOW, -1, 0, 0,
			    "free %lld MiB is above the high watermark",
			    (long long)(out->free_bytes / (int64_t)MiB));
		give_back(cfg, in, out->free_bytes, out);
		if (!out->pressure && out->free_bytes >= (int64_t)cfg->high_bytes)
			idle_trim(cfg, in, out);
		return 0;
	}
	need = (uint64_t)((int64_t)cfg->high_bytes - out->free_bytes);
	out->need_bytes = need;
	left = need;
	left -= step_ephemeral(in, left, out);		/* step 1 */
	if (left)
		left -= step_discard(in, left, false, out);	/* step 2 */
	if (left)
		left -= step_discard(in, left, true, out);
	if (left)
		left -= min_u64(left, step_balloon(cfg, in, left, out));	/* 3 */
	if (!left) {
		out->state = POLICY_RECLAIM;
		return 0;
	}
	out->state = POLICY_LAST_RESORT;
	if (!in->host.store_refusing)				/* step 4 */
		add(out, POLICY_STORE_REFUSE, -1, 0, 0,
		    "short by %llu MiB after clean cache, discards and balloons",
		    (unsigned long long)(left / MiB));
	if (cfg->host_swap)					/* step 5 */
		step_host_swap(cfg, in, left, out);
	return 0;
}
