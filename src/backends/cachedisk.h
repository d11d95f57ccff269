/*
 * cachedisk: a data disk backed by an image file, whose reads are cached
 * in an ephemeral tmem pool shared by every guest using the same image
 * (tmem "precache").  A blkback backend.
 *
 * Owns: the image's file descriptor, the instance's handle on the shared
 * pool (opened in cachedisk_new, closed on destroy; the pool itself dies
 * with its last user), and its share of an in-process registry entry for
 * the image.
 *
 * Who shares.  The registry keys an image by (tmem store, st_dev, st_ino):
 * exactly the instances of one store that have the same file open share
 * one pool, whatever path or hard link they opened it by.  The pool's
 * UUID is drawn at random when the first of them opens the image, so no
 * one outside ebbd (say a guest with its own tmem frontend) can guess it
 * and read another guest's disk through it.  While any instance has the
 * file open, the inode cannot be freed and reused, so the key is unique
 * for the pool's whole life.  Two instances of one client on one image
 * are refused (-EBUSY): tmem gives a client one pool id per UUID, so the
 * first to close would close the pool under the other.
 *
 * Cache content.  Page i of the image is at (oid {i / CACHEDISK_OBJ_PAGES,
 * CACHEDISK_OID_W1, 0}, index i % CACHEDISK_OBJ_PAGES), so a discard of a
 * whole GiB drops one object instead of 2^18 pages.  Whole 4 KiB pages
 * only; the page holding the end of the file is cached with zeros past
 * the end (capacity rounds the size down to 512, so those bytes are never
 * returned to a guest, and the cache is never written back to the file).
 *
 * Coherence among instances.  Invariant: a cached page equals the file's
 * page, except while a write to it is in progress.  Each image has a lock
 * and a generation number:
 *   - write, discard, write_zeroes hold the lock across the file change,
 *     bump the generation, then put the new content of each whole page
 *     written (a failed put leaves nothing, which is also coherent) and
 *     flush every other page touched;
 *   - a read miss notes the generation (under the lock) before its pread,
 *     and puts what it read only if the generation has not moved, under
 *     the lock.  Otherwise a write may have landed between its pread and
 *     its put, and it would cache the old data over the new.
 * Hits take no image lock: a read racing a write may see old or new data,
 * as on any disk.  Written data is copied out of guest memory once and
 * both the pwrite and the put use that copy, so a guest changing its
 * buffer mid-request cannot make file and cache disagree.
 *
 * Not coherent: changes to the image made outside this process's
 * cachedisks of this store while any of them has it open (another
 * program, another ebbd, a second tmem store).  The cache would keep
 * serving the old pages until evicted or rewritten.  That is the same rule
 * as for the guests themselves, whose page cache and filesystem do not
 * survive the disk changing under them either.  A change made while no
 * instance has the image open is harmless: the pool died with its last
 * user, so the next open starts with an empty cache.  (Keying by size and
 * mtime instead would not help: ebb's own writes change the mtime, and
 * instances opened before and after a write would stop sharing and then
 * invalidate only their own copies.)
 *
 * Host page cache.  The image is opened without O_DIRECT (which needs
 * aligned I/O and is not supported by every filesystem: tmpfs before 6.6),
 * so the host kernel caches what is read.  Once a missed run's pages are
 * all in the tmem cache, their page cache copy is dropped
 * (POSIX_FADV_DONTNEED), so an image read once is held once, compressed
 * and charged, rather than twice.  That advice applies to the file, so a
 * program outside ebb reading the same image loses those cached pages
 * too.  Pages a write dirtied stay in the page cache until written back;
 * on tmpfs the page cache is the file itself and nothing is dropped.
 *
 * Read-only instances (@read_only) open the file O_RDONLY, announce
 * read_only, offer no FLUSH, DISCARD or WRITE_ZEROES, and fail write with
 * -EROFS.  Writable ones make FLUSH an fdatasync, DISCARD a hole punch
 * (ignored where the filesystem cannot punch: virtio lets discard do
 * nothing), WRITE_ZEROES a PUNCH_HOLE (may_unmap) or ZERO_RANGE, falling
 * back to writing zeros.
 *
 * Threading: the ops follow blkback's rule (one thread at a time per
 * instance); different instances, also on the same image, may run in
 * different threads at once.  cachedisk_new and destroy may run in any
 * thread.  cachedisk_stats may be called from any thread at any time
 * (relaxed atomic counters).
 */
#ifndef EBB_CACHEDISK_H
#define EBB_CACHEDISK_H

#include <stdbool.h>
#include <stdint.h>

#include "blkback.h"
#include "tmem.h"

#define CACHEDISK_SERIAL	"ebb-disk"
#define CACHEDISK_RUN_PAGES	32u		/* pages per image syscall */
#define CACHEDISK_OBJ_PAGES	(1u << 18)	/* pages per tmem object: 1 GiB */
#define CACHEDISK_OID_W1	0x6b7369642d626265ull	/* "ebb-disk" */

struct cachedisk;

struct cachedisk_stats {
	uint64_t capacity_bytes;	/* announced size */
	uint64_t hits;			/* pages read from the cache */
	uint64_t misses;		/* pages read from the image */
	uint64_t fills;			/* missed pages put into the cache */
	uint64_t fills_refused;		/* fill puts that failed (fine: a cache) */
	uint64_t fills_raced;		/* fills skipped: the image changed meanwhile */
	uint64_t updates;		/* written whole pages put into the cache */
	uint64_t updates_refused;	/* such puts that failed (page not cached) */
	uint64_t invalidated_pages;	/* pages dropped from the cache: partial
					 * writes, discard, write_zeroes */
	uint64_t file_read_bytes;	/* read from the image */
	uint64_t file_write_bytes;	/* written to the image (zeros included) */
	uint64_t io_errors;		/* image syscalls that failed */
};

/*
 * Open @image_path as a disk for tmem client @client_id (which must exist
 * and outlive the instance) and fill @out (ops, be, capacity = file size
 * rounded down to 512, read_only, serial "ebb-disk").
 * -EINVAL, -ESRCH (no such client), -EBUSY (this client has this image
 * open already), -EMFILE (client has no pool id left), -ENOMEM, or the
 * open/lseek errno.  On failure nothing is left open.
 */
int cachedisk_new(struct tmem_store *s, uint32_t client_id,
		  const char *image_path, bool read_only, struct blkback *out);

/* The cachedisk behind a blkback cachedisk_new filled, or NULL. */
struct cachedisk *cachedisk_from(const struct blkback *bb);

/* Snapshot of the counters.  0, or -EINVAL on NULL. */
int cachedisk_stats(const struct cachedisk *cd, struct cachedisk_stats *out);

#endif
