/*
 * hugeram: guest RAM on host huge pages (ebbd --ram-hugepages).
 *
 * UML creates its RAM file in $TMPDIR.  With huge-page backing ebbd mounts
 * a tmpfs of its own per guest, <run_dir>/<name>/ram, with
 * huge=within_size and sized to the guest's memory, and points the guest's
 * TMPDIR there: every 2 MiB block of the RAM file is then one host huge
 * page, independent of the host-wide default for tmpfs mounts
 * (/sys/kernel/mm/transparent_hugepage/shmem_enabled), unless that says
 * "deny" (no huge pages on any tmpfs: refused at start) or "force" (huge
 * pages everywhere, also for guests without the option: a warning).
 *
 * Why within_size and not always: UML sizes the file to mem= before it
 * touches a page, so both give every whole block a huge page; within_size
 * alone never allocates a huge page that reaches past the end of the file
 * (a guest of an odd number of MiB).
 *
 * The mount is detached (MNT_DETACH) when the guest's process exits or the
 * guest is freed, so ebbd's own open RAM file fd (in the balloon's memory
 * table) does not keep it busy; the kernel frees it with the last fd.
 * Mounts left by an ebbd that died are detached at start
 * (hugeram_clean_stale).
 *
 * Threading: any thread; no state.
 */
#ifndef EBB_HUGERAM_H
#define EBB_HUGERAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HUGERAM_SOURCE "ebb-ram"	/* mount source: how stale ones are found */

/*
 * Can this host back guest RAM with tmpfs huge pages?  0, or -errno with
 * @why (size @n) saying what to change.  A "force" host answers 0 with a
 * warning in @why (empty otherwise).
 */
int hugeram_check_host(char *why, size_t n);
/* Mount a huge-page tmpfs for @mem_bytes of guest RAM at @dir (created).
 * 0 or -errno. */
int hugeram_mount(const char *dir, uint64_t mem_bytes);
/*
 * A new empty file on huge pages that no path names: an O_TMPFILE on a
 * tmpfs of its own (huge=always, size @limit_bytes rounded up to 2 MiB)
 * made with the new mount API and never attached anywhere, so nothing
 * shows in any mount table and the kernel frees it all with the last fd.
 * A memfd that a shared mapping backs with 2 MiB pages whatever the host's
 * shmem_enabled default says (short of "deny").  What the page store's
 * arena lives in: a new process maps it with one page-table entry per
 * 2 MiB instead of per 4 KiB (docs/restart.md).  The fd (O_CLOEXEC), or
 * -errno: -EOPNOTSUPP on a host whose tmpfs cannot use huge pages, -EPERM
 * without CAP_SYS_ADMIN, -ENOSYS on a kernel older than 5.2.
 */
int hugeram_tmpfile(uint64_t limit_bytes);
/* Detach the mount at @dir and remove the directory.  0 or -errno. */
int hugeram_umount(const char *dir);
/* Detach every HUGERAM_SOURCE mount under @run_dir; returns how many. */
int hugeram_clean_stale(const char *run_dir);
/*
 * Bytes of shmem that process @pid maps with 2 MiB host pages
 * (ShmemPmdMapped in /proc/PID/smaps_rollup): for a UML guest, its RAM
 * on huge pages.  0 or -errno.
 */
int hugeram_pmd_mapped_bytes(pid_t pid, uint64_t *out);

#endif
