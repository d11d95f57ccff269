/*
 * ebbd.h: what the daemon's files share (src/daemon/): ebbd.c (main),
 * commands.c (control command handlers), slots.c (the guest table),
 * hinting.c (page hinting policy: the pressure trigger and the test
 * evictor), exporter.c (the Prometheus page).
 *
 * One event loop serves everything: the control socket, every guest's
 * vhost-user devices, guest process exits, periodic accounting, the
 * metrics endpoint and the service manager's watchdog.  ebbd
 * is the glue: it keeps the guest table, turns control requests into
 * guest/pool calls and guest happenings into control events.
 *
 * Admission (claims): a launch first adds the guest to the host pool and
 * stakes a claim for its memory (or for --min), all under the pool's lock,
 * before any process exists.  A launch that does not fit is refused in
 * microseconds with the numbers that made it not fit.
 *
 * Accounting from reality: UML guests populate memory by touching it, so
 * every ACCOUNT_MS (and right after memory is given back) the resident
 * size of each RAM file is measured and handed to pool_set_resident(),
 * which consumes the guest's claim first and flags growth that the pool
 * cannot back.
 */
#ifndef EBB_EBBD_H
#define EBB_EBBD_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "control.h"
#include "guest.h"
#include "guest_run.h"
#include "loop.h"
#include "hostmem.h"
#include "policy.h"
#include "options.h"
#include "pool.h"
#include "prealloc.h"
#include "tmem.h"
#include "swapstore.h"
#include "cachedisk.h"
#include "staterec.h"
#include "fdhold.h"

#define MAX_GUESTS	256
#define ACCOUNT_MS	500	/* residency measurement period */
#define STOP_GRACE_MS	10000	/* power-off time before a kill */
#define MAX_FOUND	MAX_GUESTS	/* earlier ebbd's records looked at */

#ifndef EBB_DEFAULT_KERNEL
#define EBB_DEFAULT_KERNEL "/usr/local/share/ebb/linux"
#endif
#ifndef EBB_DEFAULT_INITRD
#define EBB_DEFAULT_INITRD "/usr/local/share/ebb/initramfs.cpio.gz"
#endif

/*
 * A slot's preallocation (guest-run prealloc=true): populate the RAM file
 * when it arrives, holding the guest's boot meanwhile.  Every move goes
 * through slot_prealloc_set_state(), checked against its table in slots.c;
 * this diagram is that table:
 *
 *   none --asked for--> waiting --RAM file arrived--> running --+--> done
 *                          |                             |      +--> failed
 *                          +--cannot start--> cancelled <+ guest stopped
 *
 *   Every end state (done, failed, cancelled), and waiting, go back to
 *   none when a new guest takes the slot.
 */
enum slot_prealloc {
	PRE_NONE,		/* not asked for */
	PRE_WAITING,		/* asked; the RAM file has not arrived */
	PRE_RUNNING,		/* the worker populates (slot.pre is set) */
	PRE_DONE,		/* populated; the boot went on */
	PRE_FAILED,		/* the worker failed; the guest was killed */
	PRE_CANCELLED,		/* could not start, or the guest stopped */
	PRE_NSTATES,
};

struct slot {
	struct ebbd *d;
	struct guest *g;	/* NULL: free slot */
	uint64_t id;		/* pool guest id; 0 once removed from the pool */
	bool over_budget;	/* last pool_set_resident verdict */
	/* --prealloc: populate prealloc_bytes when the RAM file arrives.
	 * The worker owns the pool entry's growth while it runs
	 * (account_guest skips the guest). */
	enum slot_prealloc pre_state;	/* see the diagram above */
	uint64_t prealloc_bytes;	/* how much; 0 unless asked for */
	struct prealloc *pre;		/* the worker, set only while running */
	uint64_t hold_token;		/* the boot hold, while running */
	struct prealloc_status pre_last;	/* final status, for guest-list */
	/* tmem: the guest's client in the store (its id is the slot's
	 * index), and the bytes the store has charged it, which the pool
	 * sees rounded up to pages. */
	bool tmem_client;
	bool adopting;		/* slot_adopt runs: charges count already */
	uint64_t store_bytes;
	/* Its block devices' backends (owned by the devices in guest.c; valid
	 * while guest_disk_info() answers for them), for their counters. */
	int swap_disk, data_disk;	/* disk index, -1 none */
	struct swapstore *swap;
	struct cachedisk *disk;
	/* The swap device's map memfd and backing file (swapstore_fds: the
	 * swapstore's own), for the fd holder; -1 none. */
	int swap_map_fd, swap_file_fd;
	/* The host policy's view of the guest (policyd.c).  min doubles as
	 * the claim (guest_run_claim_bytes). */
	uint64_t pol_min_bytes;		/* never ballooned below */
	uint64_t pol_max_bytes;		/* never given more (<= mem) */
	uint32_t pol_shares;		/* 1..POLICY_SHARES_MAX */
	bool pol_manual;		/* an operator set the balloon */
	bool pol_cgroup;		/* it runs in its own memory cgroup, */
	char pol_cg_name[GUEST_NAME_MAX];	/* made for this name */
	uint64_t pol_stats_ms;		/* stats report the deltas are from */
	uint64_t pol_major_faults;	/* that report's counters */
	uint64_t pol_swap_in_bytes;
	uint64_t pol_faults_delta;	/* since the report before */
	uint64_t pol_swap_in_delta;	/* pages */
	uint64_t pol_swapped_bytes;	/* its RAM in host swap (its cgroup) */
	/* Its record on disk (adopt.c): settings as launched, claim as
	 * staked (0 none), balloon target as last set. */
	bool has_rec;			/* written, not yet removed */
	struct staterec_guest rec;
};

/* A guest record an earlier ebbd left in <state_dir>/guests (adopt.c):
 * reported, not adopted, and left alone. */
struct found_guest {
	char name[GUEST_NAME_MAX];	/* from the file name */
	char file[600];			/* the record's path */
	bool bad;			/* the record failed a check */
	bool alive;			/* its process runs: same pid and start */
	bool external;
	pid_t pid;			/* as recorded, 0 if bad or external */
	uint64_t start_ticks;		/* as recorded (same_process) */
	uint64_t mem_bytes, claim_bytes;	/* as recorded */
	unsigned fds;			/* device fds got back from the holder */
	char why[STATEREC_WHY_MAX + 512];	/* what was found, or the refusal */
	struct staterec_guest rec;	/* the record, if !bad */
};

/* One action the policy took, for `ebbctl policy` (a ring of them). */
struct policy_record {
	uint64_t wall_ms;		/* when (CLOCK_REALTIME) */
	char name[GUEST_NAME_MAX];	/* guest, "" host-wide */
	enum policy_mech mech;
	uint64_t bytes;			/* what it moved (or set out to) */
	uint64_t target_bytes;		/* balloon: memory left to the guest */
	int result;			/* 0 or -errno */
	char reason[POLICY_REASON_MAX];
};

#define POLICY_RECORDS	32		/* actions `ebbctl policy` shows */
#define POLICY_TICK_MS	1000		/* the policy's timer */
#define POLICY_KICK_MIN_MS	200	/* an event runs it at most this often */

struct ebbd {
	struct loop *loop;
	struct control *ctl;
	struct pool *pool;
	struct tmem_store *store;
	const struct ebbd_options *opts;	/* every setting (options.h) */
	const char *state_dir;	/* swap backing files */
	struct guest_env env;
	struct slot slots[MAX_GUESTS];
	uint64_t next_id;
	int sigfd;
	struct loop_watch *sig_w;
	struct loop_timer *account_timer;
	bool shutting_down;
	struct metrics *metrics;	/* the endpoint, NULL when off */
	struct service *svc;		/* sd_notify (service.h) */
	/* Page hinting policy (hinting.c), on the hint timer. */
	uint64_t discard_below_bytes;	/* --discard-below; 0 off */
	uint64_t evict_pages_per_sec;	/* --test-evictor; 0 off */
	struct loop_timer *hint_timer;	/* runs while either is on */
	bool pressure_dry;		/* last pressure tick found nothing */
	bool pressure_draining;		/* discarding every unused page */
	uint64_t pressure_pages;	/* pages discarded under pressure */
	uint64_t evicted_pages;		/* pages the test evictor discarded */
	uint64_t evict_carry_mpages;	/* evictor budget carried, 1/1000 pages */
	/* The host policy (policyd.c), on its own timer. */
	bool policy_on;			/* --policy on (default) */
	struct policy_config pol_cfg;	/* watermarks, step, thresholds */
	bool pol_low_set, pol_high_set;	/* given, not derived from the budget */
	enum policy_state pol_state;
	struct policy_decision pol_last;	/* the last decision */
	struct hostmem_sample pol_host;	/* the host as last sampled */
	struct hostmem *hostmem;	/* PSI and memory cgroup readers */
	struct loop_timer *policy_timer;
	uint64_t pol_last_ms;		/* loop_now_ms() of the last decision */
	bool store_refusing;		/* step 4: store growth refused */
	uint64_t pol_ticks;		/* decisions made */
	uint64_t pol_actions[POLICY_NMECHS];	/* actions per mechanism */
	uint64_t pol_bytes[POLICY_NMECHS];	/* bytes per mechanism */
	struct policy_record pol_rec[POLICY_RECORDS];	/* ring */
	unsigned pol_rec_next;		/* next slot of the ring */
	uint64_t pol_rec_count;		/* records ever made */
	/* Guests an earlier ebbd left (adopt.c), found at start. */
	struct found_guest found[MAX_FOUND];
	unsigned nfound;
	/* Device fds held across ebbd's death (fdhold.h; adopt.c). */
	const char *holder_exe;		/* ebb-holder beside ebbd */
	struct fdhold *hold;		/* NULL: --fd-hold off or unavailable */
	bool hold_warned;		/* its restart failure was logged */
	struct fdhold_fd *kept;		/* got back for found guests, open */
	unsigned nkept;
	/* Upgrades (upgrade.c): re-exec the binary ebbd was started from. */
	char exe_path[4096];		/* realpath of /proc/self/exe at start */
	char **argv;			/* main's, passed on unchanged */
	struct loop_timer *upgrade_timer;	/* an accepted upgrade's exec */
	const char *restart_how;	/* "start" or "upgrade" */
	const char *store_backing;	/* "huge tmpfs", "memfd" or "heap" */
	uint64_t upgrade_t0_ns;		/* CLOCK_MONOTONIC before the exec */
	uint64_t restart_pause_us;	/* exec to every guest adopted */
	uint64_t restart_served_us;	/* exec to every guest's first pass */
	uint64_t adopted_ns;		/* CLOCK_MONOTONIC: all adopted */
	uint64_t start_ns;		/* CLOCK_MONOTONIC at main's start */
	uint64_t startup_us;		/* main's start to serving, any start */
	int nice;			/* priority to return to once serving */
	pid_t keeper_pid;		/* the old image's memory keeper, to reap */
	unsigned restart_adopted;	/* guests adopted at start */
	/* The page store's memfd as the holder gave it back, until
	 * open_services adopts it; -1 none. */
	int held_store_fd;
	/* Outstanding claims in a memfd (claimshm.c), and its fd as the
	 * holder gave it back until claimshm_open; -1 none. */
	struct claimshm *claims;
	int claims_fd, held_claims_fd;
	/* Store clients (= slots) of found guests left for the operator:
	 * their swapped pages stay, no new guest takes the slot. */
	bool client_reserved[MAX_GUESTS];
};

/* Hold names beside the devices' (fdhold.h): the page store, and a swap
 * device's map and backing file. */
#define HOLD_STORE	"tmem/store"
#define HOLD_CLAIMS	"pool/claims"
#define HOLD_SWAP_FMT	"guest/%s/swap/%s"	/* guest, "map" or "file" */


extern const struct control_cmd ebbd_commands[];
extern const struct guest_events ebbd_guest_events;

/* slots.c: "2 guests, 310M resident of 1G budget, 600M free" for the
 * service manager's STATUS= (also sent from the accounting tick). */
void ebbd_status_line(struct ebbd *d, char *buf, size_t len);

/* exporter.c: the Prometheus page (metrics.h's collect function). */
struct promtext;
int ebbd_metrics_collect(void *opaque, struct promtext *p);

/* hinting.c: start the hint timer if --discard-below or --test-evictor
 * asked for it.  0 or -errno. */
int hinting_start(struct ebbd *d);
void hinting_stop(struct ebbd *d);

/* policyd.c: the host memory policy's glue: its timer, the snapshot it
 * decides on, carrying out and reporting the actions, its commands. */
int policy_start(struct ebbd *d);
void policy_stop(struct ebbd *d);
/* Switch the policy on or off at run time (control's policy command).
 * Off undoes what is in force (store refusal); 0 or -errno. */
int policy_switch(struct ebbd *d, bool on);
/* Something happened (a guest over budget): decide now, at most every
 * POLICY_KICK_MIN_MS. */
void policy_kick(struct ebbd *d);
/* A guest-run's policy settings for its slot, and its own cgroup when the
 * host swap rung can work (*@procs: the path its process joins, or NULL;
 * free it). */
void policy_slot_init(struct ebbd *d, struct slot *s, const struct guest_run *r,
		      char **procs);
void policy_slot_release(struct ebbd *d, struct slot *s);
/* The operator set a balloon target: the policy leaves the guest alone
 * until guest-policy is called for it. */
void policy_slot_manual(struct slot *s);
json_t *policy_guest_json(const struct slot *s);

/* hinting.c: discard up to @max_pages of @what (PAGESTATE_UNUSED or
 * _VOLATILE) from one guest, whole 2 MiB runs first; the pages it took. */
uint64_t hinting_discard_guest(struct ebbd *d, struct slot *s, unsigned what,
			       uint64_t max_pages);

/* slots.c */
/* A malloc'd message for a command's error reply (NULL if out of memory). */
char *errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct slot *find_slot(struct ebbd *d, const char *name);
const char *fmt_size(uint64_t bytes, char *buf);
json_t *prealloc_json(const struct prealloc_status *st);
void on_account(void *opaque);
uint32_t client_of(const struct slot *s);
int store_charge(void *opaque, uint32_t client, int64_t delta);
int claim_with_room(struct ebbd *d, uint64_t guest, uint64_t total_pages,
		    const char *name);
/* -ENOMEM with *@err saying what the pool lacked for a claim of @want. */
int claim_refused(struct ebbd *d, const char *name, uint64_t want,
		  char **err);
/* guest-run, its arguments checked: take a slot, admit the guest to the
 * pool (its claim), make its devices and start it.  On failure nothing is
 * left (slot free, no pool entry, no store client). */
int slot_launch(struct ebbd *d, const struct guest_run *r, struct slot **out,
		char **err);
/* Release the slot's store client and pool entry (the guest's teardown). */
void slot_release(struct ebbd *d, struct slot *s);
/* Adopt the guest @rec describes, found running with its device fds held
 * (adopt.c): in the slot its record names, with its pool id and claim.
 * 0, or -errno with the reason in @a->why; nothing of the guest is
 * touched then. */
int slot_adopt(struct ebbd *d, const struct staterec_guest *rec,
	       struct guest_adoption *a);
void slot_prealloc_set_state(struct slot *s, enum slot_prealloc to,
			     const char *why);
const char *slot_prealloc_state_name(enum slot_prealloc st);

/* adopt.c: at start, read <state_dir>/guests and log each record found.
 * 0 or -errno (the directory cannot be read). */
int adopt_scan(struct ebbd *d);
/* After adopt_scan: open the fd holder (--fd-hold), take back what an
 * earlier ebbd held, keep the fds of found guests that live (or whose
 * record is unreadable) open and counted, and drop the rest.  Logged;
 * without a holder guests run on, unprotected. */
void adopt_fds(struct ebbd *d);
/* Once the loop, pool and store exist: adopt every found guest that runs
 * and whose device fds came back (slot_adopt); the others stay found,
 * with the reason, and untouched. */
void adopt_guests(struct ebbd *d);
/* claimshm.c: the outstanding claims, kept across ebbd's death.  open:
 * adopt the held record or make one (with a holder only); note: record
 * a slot's claim and resident pages as the pool has them now; get: the
 * recorded ones of the guest with @pool_id in @slot, if valid (-ENOENT);
 * close: unmap, and with @drop take it from the holder. */
struct claimshm;
void claimshm_open(struct ebbd *d);
void claimshm_hold_again(struct ebbd *d);
void claimshm_note(struct ebbd *d, struct slot *s);
int claimshm_get(struct ebbd *d, unsigned slot, uint64_t pool_id,
		 uint64_t max_pages, uint64_t *pages, uint64_t *tot_pages);
void claimshm_close(struct ebbd *d, bool drop);
/* Put the page store's memfd in the fd holder (a memfd store only). */
void hold_store(struct ebbd *d);
/* slots.c: put (or drop) a guest's swap map and backing file in the fd
 * holder. */
void slot_hold_swap(struct ebbd *d, struct slot *s);
void slot_drop_swap(struct ebbd *d, struct slot *s);

/* upgrade.c: re-exec ebbd without stopping a guest.  upgrade_check: why
 * not now (-errno, *err set); upgrade_start: checked, then exec'd from
 * the loop shortly after (the request's reply leaves first);
 * upgrade_started: at start, before anything (reads the old image's
 * time, raises the priority for the adoption); upgrade_adopted: every
 * guest adopted, its devices watched (the pause ends); upgrade_served:
 * every adopted guest served once (the priority back). */
int upgrade_check(struct ebbd *d, char **err);
int upgrade_start(struct ebbd *d, char **err);
void upgrade_started(struct ebbd *d);
void upgrade_adopted(struct ebbd *d);
void upgrade_served(struct ebbd *d);
/* Reap the process that kept the old image's memory (accounting tick). */
void upgrade_reap(struct ebbd *d);
/* Every accounting tick: a found guest whose process has exited gets
 * its kept fds closed and dropped from the holder. */
void adopt_watch(struct ebbd *d);
/* At exit: close the kept fds (the holder keeps its copies) and the
 * holder connection; @quit asks the holder to exit if it holds nothing. */
void adopt_fds_close(struct ebbd *d, bool quit);
/* The found guest that keeps a launch from taking @name (its process
 * lives, or its record could not be read), else NULL. */
const struct found_guest *adopt_blocking(const struct ebbd *d,
					 const char *name);
/* A launch replaced @name's record: drop it from the found list. */
void adopt_forget(struct ebbd *d, const char *name);
/* Is any found guest alive or unreadable (its files must be kept)? */
bool adopt_any_alive(const struct ebbd *d);
/* guest-list's "found": one object per found guest. */
json_t *adopt_json(const struct ebbd *d);
/* The slot's record: fill it from the launch (after guest_start), write it
 * (with the pool's, and the slot's policy settings) on every change,
 * remove it when the guest is gone.
 * A write that fails is logged; the guest goes on. */
void slot_record_init(struct ebbd *d, struct slot *s,
		      const struct guest_run *r);
void slot_record_save(struct ebbd *d, struct slot *s);
void slot_record_remove(struct ebbd *d, struct slot *s);

#endif
