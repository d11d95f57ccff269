/*
 * hostmem: the host's own memory numbers for the policy, and the host-swap
 * rung's tool.
 *
 * Reads: /proc/pressure/memory (PSI "some" avg10, where the kernel has
 * it), and the memory cgroup ebbd runs in, or the ancestor whose limit
 * binds it (cgroup v1: memory.limit_in_bytes, usage_in_bytes, memsw, the
 * stat file's total_inactive_file; v2: memory.max, memory.current,
 * memory.swap.current, inactive_file).  The working set is usage less
 * inactive file cache, which the kernel drops before anything else.
 *
 * Host swap, done deliberately (cgroup v1 memory controller, ebbd root):
 * each guest's UML process runs in a child cgroup of ebbd's own,
 * "ebb-<ebbd pid>-<name>", joined by the child process before exec.  To
 * page out N bytes of a guest, its limit is lowered to its usage minus N
 * and put back at once: the kernel reclaims exactly that guest's pages,
 * coldest first by its own LRU of that cgroup, into swap (RAM-file pages
 * are shmem, so they go to swap, not to a file).  Why not MADV_PAGEOUT:
 * it only walks the caller's page tables (ebbd never touches guest RAM,
 * so its mapping has nothing to page out) and skips pages mapped by more
 * than one process (every RAM page is mapped by UML's kernel process and
 * often by a guest process too); process_madvise on the UML process has
 * the second problem.  The limit squeeze has neither and uses the
 * kernel's own notion of cold.
 *
 * Every path is under a root prefix (tests pass a fake tree).
 * Threading: loop thread only.  Errors: 0 or -errno.
 */
#ifndef EBB_HOSTMEM_H
#define EBB_HOSTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hostmem;

struct hostmem_sample {
	bool cgroup;		/* a limiting memory cgroup was found */
	uint64_t limit_bytes;	/* its limit */
	uint64_t usage_bytes;	/* its usage (page cache included) */
	uint64_t working_set_bytes;	/* usage - inactive file cache */
	uint64_t swap_bytes;	/* its swap usage, 0 unknown */
	double psi_some_avg10;	/* percent; -1 without PSI */
	uint64_t swap_total_bytes;	/* the host's swap (SwapTotal) */
};

/* Find ebbd's memory cgroup under @root ("" or NULL: the real one). */
int hostmem_open(const char *root, struct hostmem **out);
void hostmem_close(struct hostmem *h);
int hostmem_sample(struct hostmem *h, struct hostmem_sample *out);
/* The limiting cgroup's directory, "" if none. */
const char *hostmem_cgroup_dir(const struct hostmem *h);

/* Per-guest cgroups (v1 only): can they be made here? */
bool hostmem_can_swap(const struct hostmem *h);
/* Make @name's cgroup; *@procs gets the file its process writes "0" to
 * (a malloc'd path).  -ENOTSUP without the v1 controller. */
int hostmem_guest_create(struct hostmem *h, const char *name, char **procs);
/* Page out about @bytes of @name's memory; *@done what its usage fell. */
int hostmem_guest_pageout(struct hostmem *h, const char *name, uint64_t bytes,
			  uint64_t *done);
/* How much of @name's memory is in swap (its cgroup's total_swap). */
int hostmem_guest_swap(struct hostmem *h, const char *name, uint64_t *bytes);
/* Remove @name's cgroup (its processes have exited). */
void hostmem_guest_remove(struct hostmem *h, const char *name);
/* Remove every guest cgroup this ebbd made (at exit: waits up to
 * @wait_ms for killed guests' processes to leave them). */
void hostmem_guest_remove_all(struct hostmem *h, unsigned wait_ms);

/* Parse PSI text ("some avg10=1.23 ..."): the some avg10, or -EINVAL. */
int hostmem_parse_psi(const char *text, double *some_avg10);

#endif
