/*
 * staterec: ebbd's records on disk, the part of its state a restarted ebbd
 * needs to find (and one day adopt) the guests an earlier ebbd launched.
 *
 * What it owns.  The file format and the files: one record per guest,
 * <state_dir>/guests/<name>.rec, and one for the pool,
 * <state_dir>/pool.rec.  Nothing in memory outlives a call.
 *
 * Format (docs/restart.md has the why).  Host byte order (a record never
 * leaves the host that wrote it), fixed size, no pointers:
 *
 *   offset size field
 *        0    8 magic "EBBSTATE"
 *        8    4 version (STATEREC_VERSION)
 *       12    4 kind (STATEREC_GUEST or STATEREC_POOL)
 *       16    4 length: bytes of the whole record, header included
 *       20    4 reserved, 0
 *       24    8 checksum: XXH3-64 of the record with this field zeroed
 *       32    - the payload (staterec.c): a guest's is version 1's 624
 *               bytes, then in version 2 its policy settings (24 bytes);
 *               a pool's is the same in both
 *
 * A record is hostile input: staterec_decode() checks magic, version,
 * kind, length, checksum and then every field's range, and says in @why
 * which check failed.  It never trusts a string to be terminated.
 *
 * Writes are atomic: a temp file in the same directory, written whole,
 * fsync'd, renamed over the record, and the directory fsync'd, so a crash
 * at any point leaves either the old record or the new one, never a mix;
 * a failed write leaves the old record as it was.
 *
 * Errors: 0 or -errno; -EBADMSG for a record that fails a check.
 * Threading: none; every call is self-contained.
 */
#ifndef EBB_STATEREC_H
#define EBB_STATEREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Version 2 added the policy settings (max, shares, a policy min, an
 * operator's balloon).  A version 1 record, written by the ebbd an
 * upgrade replaces, is still read: its guest gets the policy's defaults
 * for those, as before. */
#define STATEREC_VERSION	2
#define STATEREC_VERSION_MIN	1
#define STATEREC_NAME_MAX	32	/* = GUEST_NAME_MAX, NUL included */
#define STATEREC_STR_MAX	256	/* cmdline, disk path: NUL included */
#define STATEREC_WHY_MAX	160	/* room a caller gives @why */

enum staterec_kind {
	STATEREC_GUEST = 1,
	STATEREC_POOL = 2,
};

/* The guest's state as last written (guest.h's enum, but with values fixed
 * for the file: never renumber). */
enum staterec_state {
	SR_STARTING = 1,
	SR_RUNNING = 2,
	SR_STOPPING = 3,
	SR_STOPPED = 4,
	SR_FAILED = 5,
};

/* Settings flags (the guest-run booleans, as launched). */
#define SR_F_EXTERNAL		(1u << 0)
#define SR_F_REPORTING		(1u << 1)
#define SR_F_PREALLOC		(1u << 2)
#define SR_F_CLAIM		(1u << 3)
#define SR_F_PAGE_STATES	(1u << 4)
#define SR_F_DISK_RO		(1u << 5)
#define SR_F_RAM_HUGEPAGES	(1u << 6)	/* RAM on its own huge tmpfs */
#define SR_F_ALL		((1u << 7) - 1)
#define STATEREC_CLIENT_MAX	65535	/* highest tmem client id */

/* Policy flags (version 2). */
#define SR_P_SET		(1u << 0)	/* the policy fields are there
						 * (not in a version 1 record) */
#define SR_P_MANUAL		(1u << 1)	/* an operator set the balloon:
						 * the policy keeps off */
#define SR_P_ALL		((1u << 2) - 1)
#define SR_SHARES_MAX		10000u		/* = POLICY_SHARES_MAX */

/* One guest, in memory (decoded and checked). */
struct staterec_guest {
	char name[STATEREC_NAME_MAX];	/* a valid guest name */
	enum staterec_state state;
	uint32_t flags;			/* SR_F_* */
	uint64_t mem_bytes;		/* configured memory, whole MiB, >= 32 MiB */
	uint64_t min_bytes;		/* --min, 0 none; <= mem */
	uint64_t claim_bytes;		/* outstanding claim when written; <= mem */
	uint64_t balloon_target_bytes;	/* what the guest keeps; <= mem, 0 none */
	uint64_t swap_bytes;		/* swap device size, 0 none */
	uint64_t swap_quota_bytes;	/* its host-memory quota, 0 default */
	uint64_t pool_id;		/* its id in the pool, > 0 */
	uint32_t client_id;		/* its tmem client id (ebbd's slot
					 * index): the store's pages are keyed
					 * by it; <= STATEREC_CLIENT_MAX */
	int32_t pid;			/* UML process; 0 for an external guest */
	uint64_t start_ticks;		/* /proc/PID/stat field 22, clock ticks
					 * after boot; 0 with pid 0 */
	char cmdline[STATEREC_STR_MAX];	/* extra kernel parameters, may be "" */
	char disk[STATEREC_STR_MAX];	/* data disk image, may be "" */
	/* The host policy's settings for it as last set (guest-run, then
	 * guest-policy and balloon); all 0 unless SR_P_SET. */
	uint32_t policy_flags;		/* SR_P_* */
	uint32_t shares;		/* 1..SR_SHARES_MAX */
	uint64_t policy_min_bytes;	/* <= mem */
	uint64_t policy_max_bytes;	/* <= mem, 0: mem */
};

/* The pool, in memory. */
struct staterec_pool {
	uint64_t budget_bytes;		/* > 0 */
	uint64_t next_id;		/* the next pool id ebbd hands out */
	uint32_t nguests;		/* guest records that go with it */
	uint64_t claim_bytes;		/* Σ outstanding claims */
};

/* Sizes of the encoded records (header + payload). */
size_t staterec_guest_size(void);
size_t staterec_pool_size(void);

/* Encode into @buf of @len bytes (at least the kind's size).  0 or
 * -EINVAL (a field out of range: ebbd never writes what it would refuse to
 * read) / -ENOSPC. */
int staterec_guest_encode(const struct staterec_guest *g, void *buf,
			  size_t len);
int staterec_pool_encode(const struct staterec_pool *p, void *buf, size_t len);

/* Check and decode @len bytes.  0, or -EBADMSG with @why (at least
 * STATEREC_WHY_MAX bytes) saying what was wrong. */
int staterec_guest_decode(const void *buf, size_t len,
			  struct staterec_guest *out, char *why);
int staterec_pool_decode(const void *buf, size_t len,
			 struct staterec_pool *out, char *why);

/* Write @len bytes as @dir/@file atomically (see above). */
int staterec_write_atomic(const char *dir, const char *file, const void *buf,
			  size_t len);

/* <dir>/guests/<name>.rec: write, read (with @why on -EBADMSG, or the
 * -errno of open/read), remove (-ENOENT is not an error). */
int staterec_guest_save(const char *state_dir, const struct staterec_guest *g);
int staterec_guest_load(const char *path, struct staterec_guest *out,
			char *why);
int staterec_guest_remove(const char *state_dir, const char *name);
int staterec_pool_save(const char *state_dir, const struct staterec_pool *p);
int staterec_pool_load(const char *state_dir, struct staterec_pool *out,
		       char *why);

/* The start time of process @pid: field 22 of /proc/PID/stat, in clock
 * ticks since boot.  -ENOENT if no such process, -ESRCH if it has exited
 * and waits to be reaped (a zombie). */
int staterec_proc_start(pid_t pid, uint64_t *ticks);

const char *staterec_state_name(enum staterec_state s);

#endif
