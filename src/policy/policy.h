/*
 * policy: ebbd's host memory policy, the decision half.  A pure function
 * from one snapshot of the host and its guests (struct policy_input) to a
 * list of actions (struct policy_decision); ebbd's glue (src/daemon/
 * policyd.c) gathers the snapshot, carries the actions out and reports
 * each one as an event.  Nothing here does I/O, so the unit tests feed it
 * recorded inputs (tests/unit/test_policy.c).
 *
 * What it keeps the host inside.  The host's free memory is the smaller
 * of the pool's (budget - resident - store, minus what the pool is over)
 * and, when ebbd runs in a memory cgroup with a limit, the cgroup's room
 * (limit - working set).  Two watermarks bound it:
 *
 *   free < low, or host pressure (PSI) while free < high  -> reclaim
 *   reclaiming and free >= high                           -> stop
 *
 * Reclaim in order of cost (the numbered steps the body refers to), each
 * step taking only what the previous ones did not cover of need = high -
 * free:
 *
 *   1. drop ephemeral tmem pages (clean cache the guests can re-read);
 *   2. discard pages the guests published as unused, then volatile ones,
 *      through their page-state tables (no I/O, no guest involvement);
 *   3. inflate the balloons of guests holding memory they are not using
 *      (resident above used + margin), at most step_bytes per guest per
 *      decision, the need split in proportion to idle memory / shares, so
 *      a guest with twice the shares gives half as much;
 *   4. refuse tmem puts that would grow the store (the swap devices write
 *      to their backing files instead);
 *   5. host swap: page out part of the RAM of the guest with the most
 *      resident memory above its min per share.
 *
 * No step ever takes a guest below its min: the balloon never leaves it
 * less than min_bytes, and host swap leaves it min_bytes resident.
 *
 * Idle trim (off unless idle_trim_bytes is set).  Above the high
 * watermark nothing is reclaimed, except this: a guest that shows no
 * pressure (no major faults, no swap-ins, available above the margin) and
 * holds more than twice the margin above its use gives idle_trim_bytes per
 * decision, down to its use plus the margin.  It trades the high
 * watermark's "stop" for a smaller footprint; a burst gets the memory
 * back through giving back below.
 *
 * Giving back.  A guest under pressure (major faults or swap-ins since the
 * last snapshot at or above the thresholds, or available memory below
 * half the margin) whose balloon holds memory gets up to step_bytes of it
 * back, if the host stays above the low watermark afterwards, and never
 * beyond its max.  A guest whose max was lowered under what it keeps is
 * ballooned down to it.
 *
 * States (policy_next_state() and the glue's setter check every move
 * against policy_state_allowed(); this diagram is that table):
 *
 *        +-- free < low, or pressure and free < high --+
 *        |                                             v
 *   off <-> ok <------- free >= high ------------- reclaim
 *           | ^                                      |  ^
 *           | |                 steps 1-3 not enough v  | steps 1-3 enough
 *           | +------- free >= high ------------- last_resort
 *           +---- short, and steps 1-3 not enough ---^
 *
 *   off: the policy is switched off (--policy off); it goes to ok and back
 *   only when switched.
 *
 * Threading: none of its own; the functions are pure.
 */
#ifndef EBB_POLICY_H
#define EBB_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POLICY_NAME_MAX		32	/* guest name, NUL included */
#define POLICY_MAX_ACTIONS	64	/* actions one decision may hold */
#define POLICY_REASON_MAX	96	/* bytes of an action's reason */
#define POLICY_SHARES_DEFAULT	100u
#define POLICY_SHARES_MAX	10000u

enum policy_state {
	POLICY_OFF,		/* switched off: decides nothing */
	POLICY_OK,		/* free memory above the low watermark */
	POLICY_RECLAIM,		/* reclaiming (steps 1-3) up to the high one */
	POLICY_LAST_RESORT,	/* steps 1-3 were not enough: 4 and 5 too */
	POLICY_NSTATES,
};

/* How an action moves memory; the order of the reclaim steps is the
 * order of these values up to POLICY_HOST_SWAP. */
enum policy_mech {
	POLICY_DROP_EPHEMERAL,	/* step 1: host-wide */
	POLICY_DISCARD_UNUSED,	/* step 2: one guest */
	POLICY_DISCARD_VOLATILE,	/* step 2: one guest */
	POLICY_BALLOON_INFLATE,	/* step 3 (or a lowered max): one guest */
	POLICY_STORE_REFUSE,	/* step 4: host-wide, store growth refused */
	POLICY_HOST_SWAP,	/* step 5: one guest */
	POLICY_BALLOON_DEFLATE,	/* giving back: one guest */
	POLICY_STORE_ALLOW,	/* step 4 undone: host-wide */
	POLICY_NMECHS,
};

struct policy_config {
	uint64_t low_bytes;	/* reclaim below this much free memory */
	uint64_t high_bytes;	/* ... until this much is free (> low) */
	uint64_t step_bytes;	/* most one guest's balloon moves, and most
				 * one guest pages out, per decision */
	uint64_t margin_bytes;	/* memory a guest keeps above its use */
	double psi_some_pct;	/* host PSI some avg10 that counts as
				 * pressure; 0: ignore PSI */
	uint64_t give_major_faults;	/* major faults per snapshot that make a
					 * guest "under pressure"; 0: ignore */
	uint64_t give_swap_ins;	/* guest swap-ins per snapshot, likewise */
	bool host_swap;		/* step 5 is possible on this host */
	uint64_t idle_trim_bytes;	/* above the high watermark: balloon this
					 * much per decision off guests idle
					 * with more than 2 margins unused;
					 * 0: off (the default) */
};

/* One guest as the policy sees it.  Sizes in bytes. */
struct policy_guest {
	char name[POLICY_NAME_MAX];	/* for reasons */
	uint64_t mem_bytes;	/* configured memory */
	uint64_t min_bytes;	/* never ballooned below; 0: none */
	uint64_t max_bytes;	/* never given more than this (<= mem) */
	uint32_t shares;	/* 1..POLICY_SHARES_MAX: more gives less */
	bool manual;		/* an operator set its balloon: hands off */
	uint64_t resident_bytes;	/* host memory its RAM holds */
	uint64_t keep_bytes;	/* memory its balloon leaves it (actual) */
	bool balloon_ready;	/* a balloon driver is there to inflate */
	bool stats_valid;	/* the fields below are known */
	uint64_t total_bytes;	/* the guest's MemTotal as it reports it */
	uint64_t available_bytes;	/* its MemAvailable */
	uint64_t major_faults_delta;	/* since the previous snapshot */
	uint64_t swap_ins_delta;	/* pages swapped in, likewise */
	uint64_t unused_bytes;	/* pages its table says unused (0: no table) */
	uint64_t volatile_bytes;	/* ... volatile */
	bool can_swap;		/* step 5 works for this guest */
};

struct policy_host {
	uint64_t pool_free_bytes;	/* budget - resident - store */
	uint64_t pool_over_bytes;	/* what the pool is over its budget */
	uint64_t cg_limit_bytes;	/* ebbd's memory cgroup; 0: no limit */
	uint64_t cg_used_bytes;	/* its working set (usage - inactive file) */
	double psi_some_pct;	/* /proc/pressure/memory some avg10; <0: none */
	uint64_t ephemeral_bytes;	/* the store's ephemeral pages */
	bool store_refusing;	/* step 4 is in force */
};

struct policy_input {
	struct policy_host host;
	const struct policy_guest *guests;
	size_t nguests;
};

struct policy_action {
	enum policy_mech mech;
	int guest;		/* index into the input's guests; -1 host-wide */
	uint64_t bytes;		/* memory it is meant to move */
	uint64_t target_bytes;	/* balloon: the memory the guest will keep */
	char reason[POLICY_REASON_MAX];
};

struct policy_decision {
	enum policy_state state;	/* after this decision */
	int64_t free_bytes;	/* host free memory as computed (may be < 0) */
	uint64_t need_bytes;	/* high - free while reclaiming, else 0 */
	bool pressure;		/* PSI above its threshold */
	size_t nactions;
	struct policy_action actions[POLICY_MAX_ACTIONS];
};

const char *policy_state_name(enum policy_state s);
const char *policy_mech_name(enum policy_mech m);
/* The mechanisms that give memory to a guest (events say POLICY_GIVE). */
bool policy_mech_gives(enum policy_mech m);
/* May the state go from @from to @to (the diagram above)? */
bool policy_state_allowed(enum policy_state from, enum policy_state to);

/* 0, or -EINVAL naming nothing: watermarks 0 < low < high, a step. */
int policy_config_check(const struct policy_config *cfg);

/*
 * Decide, from state @prev and snapshot @in, what to do now.  Fills @out
 * (its state is the state to move to).  With @prev POLICY_OFF, decides
 * nothing and stays off.  0, or -EINVAL for a bad config or input (a
 * guest with shares 0, min above mem).
 */
int policy_decide(const struct policy_config *cfg, enum policy_state prev,
		  const struct policy_input *in, struct policy_decision *out);

#endif
