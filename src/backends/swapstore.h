/*
 * swapstore: a guest's swap device (tmem "preswap") as a blkback backend.
 * Swapped-out pages live compressed in the guest's persistent tmem pool
 * while the host has room, and in a sparse per-guest backing file when it
 * has not, so a swap write never fails for lack of host memory.
 *
 * Owns: one private persistent tmem pool of the caller's client (opened in
 * swapstore_new, destroyed with the device), the backing file (created
 * there, unlinked on destroy: it is scratch, never reused), and a map of
 * where each 4 KiB page of the device is.
 *
 * Page map.  Each page is in exactly one place, recorded in 2 bits:
 *
 *   NONE   nowhere: reads as zeros.  Never written, discarded, zeroed, or
 *          last written with an all-zero page (no tmem record, no block).
 *   TMEM   in the pool at (oid SWAPSTORE_OID, index = page number).
 *   FILE   in the backing file at the page's own offset.
 *   LOST   a backing-file write failed after the page's old content was
 *          already gone: reads fail with -EIO until the page is written
 *          whole, discarded or zeroed.  (Linux keeps a page whose swap
 *          write failed in RAM, so it never reads such a slot back.)
 *
 * The map costs 64 KiB per GiB of device (in a memfd, see "Restart").
 *
 * Invariants: the pool holds a page exactly when the map says TMEM (a
 * failed put leaves nothing, tmem guarantees it); the file has data only
 * for FILE pages, except where a hole punch failed, and those blocks are
 * never read because the map is the authority.  A page moving FILE -> TMEM
 * or FILE -> NONE is punched out (FALLOC_FL_PUNCH_HOLE) so disk space goes
 * back and no stale copy lingers.
 *
 * Writes.  Whole pages: put; if the put fails for any reason (-ENOSPC:
 * quota or charge hook; -ENOMEM; anything else) the page goes to the file.
 * Sub-page writes read, modify and store the page.  Page data is copied
 * out of guest memory before it is hashed, compressed or written, so a
 * guest changing its buffer mid-request cannot make tmem and the file
 * disagree with what was hashed.  Contiguous file pages are read and
 * written with one syscall per run of at most SWAPSTORE_RUN_PAGES.
 *
 * Discard and WRITE_ZEROES drop whole pages (flush from the pool, punch
 * the file, map NONE); WRITE_ZEROES also zeroes partial pages at the
 * edges by read-modify-write, discard leaves them (virtio allows it).
 * Both deallocate whatever may_unmap says: NONE reads as zeros.
 *
 * FLUSH is not offered (ops.flush == NULL): swap contents do not outlive
 * the guest, and a completed write is already visible to every later read,
 * which is all a cache-less device promises.  The backing file is never
 * fsynced.
 *
 * Backing file: created with O_EXCL (-EEXIST if the path exists: the
 * swapstore would unlink it on destroy, so it must never adopt a file it
 * did not create; a leftover from a crashed ebbd is the caller's to
 * remove, or to adopt by fd: swapstore_adopt never opens it), mode
 * 0600 (swap holds guest secrets), sized to the capacity with ftruncate
 * (sparse: no blocks until a page lands there).  Its pages do not stay
 * in the host page cache: every file I/O advises
 * POSIX_FADV_DONTNEED over the span ever written (clean pages go at once,
 * dirty ones start writeback and go at a later I/O), so a page the pool
 * refused costs the host no uncounted memory beside the guest's and the
 * disk's copies.
 *
 * Restart.  The map lives in a memfd ("ebb-swapmap": a header page with
 * magic, version, capacity, client and pool id and a checksum, then the
 * 2-bit words) and the backing file is kept open, so a new process handed
 * both fds (swapstore_fds() -> the fd holder -> swapstore_adopt()), and a
 * tmem store adopted from the old store's memfd, serves the same
 * contents.  With a heap-only tmem store (tmem_store_new) the pool dies
 * with the process and adoption finds its pool gone (-EBADF).
 * Order, so that SIGKILL at any instruction leaves a state adoption can
 * serve (each map word is changed by one 64-bit store):
 *   - put, then map TMEM: a crash between leaves a pool page the map does
 *     not name, which adoption flushes (old content stays authoritative);
 *   - map NONE/LOST, then flush from the pool (discard, zero pages,
 *     back-off): same;
 *   - pwrite, then map FILE; a page bound for the file is LOST while its
 *     content exists only in memory;
 *   - tmem replaces a page atomically (old or new, tmem.h).
 * So after a crash a page reads its old content, its new content, or, if
 * the interrupted write was falling back to the file, fails with -EIO
 * until written again; a *completed* write always reads back.  Adoption
 * also turns a TMEM page whose pool copy was dropped (damaged arena) into
 * LOST, never zeros.
 *
 * Threading: the ops follow blkback's rule (one thread at a time per
 * device).  swapstore_stats may be called from any thread at any time; it
 * reads relaxed atomic counters, so a snapshot taken during a request may
 * be off by that request.
 */
#ifndef EBB_SWAPSTORE_H
#define EBB_SWAPSTORE_H

#include <stdint.h>

#include "blkback.h"
#include "tmem.h"

#define SWAPSTORE_SERIAL	"ebb-swap"
#define SWAPSTORE_RUN_PAGES	32u	/* pages per backing-file syscall */
/* Largest device: one tmem object, 32-bit page indexes (16 TiB). */
#define SWAPSTORE_MAX_BYTES	((uint64_t)TMEM_PAGE_SIZE << 32)

/* The pool is private to one swapstore, so any fixed object id will do;
 * this one reads "ebb-swap" in a dump. */
#define SWAPSTORE_OID_W0	0x706177732d626265ull

struct swapstore;

struct swapstore_stats {
	uint64_t capacity_pages;	/* device size */
	uint64_t tmem_pages;		/* pages in the pool now */
	uint64_t file_pages;		/* pages in the backing file now */
	uint64_t lost_pages;		/* pages that read as -EIO now */
	uint64_t file_write_bytes;	/* written to the backing file, total */
	uint64_t file_read_bytes;	/* read from the backing file, total */
	uint64_t punched_bytes;		/* hole-punched in the backing file */
	uint64_t refused_puts;		/* puts failed -ENOSPC/-ENOMEM: to file */
	uint64_t put_errors;		/* puts failed otherwise: to file too */
	uint64_t io_errors;		/* backing-file syscalls that failed */
	uint64_t zero_pages_written;	/* all-zero page writes, mapped NONE */
	uint64_t backoff_pages;		/* sent to the file without a put: the
					 * pool refused one earlier in the same
					 * request */
	uint64_t adopt_lost_pages;	/* adoption: TMEM pages the pool no
					 * longer had, now LOST */
	uint64_t adopt_orphans;		/* adoption: pool pages the map did not
					 * name (a cut-short write), flushed */
};

/*
 * Make a swap device of @capacity_bytes (a multiple of TMEM_PAGE_SIZE,
 * 1 page .. SWAPSTORE_MAX_BYTES) for tmem client @client_id, which must
 * exist and must outlive the device.  Creates the backing file at
 * @backing_path and fills @out (ops, be, capacity, serial "ebb-swap",
 * read_only false).  @out's destroy op undoes everything.
 * -EINVAL, -ESRCH (no such client), -EMFILE (client has no pool id left),
 * -EEXIST (path exists), -ENOMEM, or the file's open/ftruncate errno.
 * On failure nothing is left behind (no pool, no file).
 */
int swapstore_new(struct tmem_store *s, uint32_t client_id,
		  uint64_t capacity_bytes, const char *backing_path,
		  struct blkback *out);

/* The fds a restart needs, owned by the swapstore (valid until destroy or
 * release; dup them to keep them): the map memfd and the backing file.
 * -EINVAL if @bb is not a swapstore. */
int swapstore_fds(const struct blkback *bb, int *map_fd, int *file_fd);

/*
 * Serve the device whose map is @map_fd and backing file @file_fd (from
 * swapstore_fds() of a swapstore in this or a dead process), for tmem
 * client @client_id of @s, whose persistent pool named in the map's header
 * must exist (a store adopted with tmem_store_adopt_shm).  @backing_path
 * is only remembered: destroy unlinks it; the file is never reopened.
 * Both fds are dup'd (the caller keeps its own).  Checks the header,
 * the pool and the file size, then makes map and pool agree (see
 * "Restart"; counted in adopt_lost_pages and adopt_orphans).  Fills @out
 * as swapstore_new does.  -EINVAL, -EUCLEAN (not a swapstore map, or
 * damaged; file too short), -EPROTONOSUPPORT, -ESRCH (map of another
 * client), -EBADF (no such pool), -ENOMEM.
 */
int swapstore_adopt(struct tmem_store *s, uint32_t client_id, int map_fd,
		    int file_fd, const char *backing_path, struct blkback *out);

/* Let go of the process-local part of a swapstore (memory, mapping, its
 * fd copies) without destroying the device: pool, file and map memfd
 * stay for a later swapstore_adopt.  For a daemon exiting on purpose to
 * be replaced.  @bb is zeroed; do not call its destroy op afterwards. */
void swapstore_release(struct blkback *bb);

/* The swapstore behind a blkback swapstore_new filled, or NULL if @bb is
 * some other backend. */
struct swapstore *swapstore_from(const struct blkback *bb);

/* Snapshot of the counters.  0, or -EINVAL on NULL. */
int swapstore_stats(const struct swapstore *ss, struct swapstore_stats *out);

#endif
