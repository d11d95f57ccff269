/*
 * populate: allocate the backing of a file range up front (--prealloc, and
 * the claim benchmark's yardstick), the way Xen populates a domain: 2 MiB
 * chunks first, 4 KiB pages for whatever a 2 MiB chunk could not get.
 *
 * The range is cut at 2 MiB file offsets.  Each piece (a whole aligned
 * 2 MiB chunk, or a shorter head or tail) is one fallocate(2); if that fails
 * with ENOSPC or ENOMEM — the errors that can be partial — the piece is
 * retried 4 KiB at a time, and the first 4 KiB that fails ends the call.  Any
 * other error ends it at once: no page size will fix EOPNOTSUPP or EBADF.
 * On tmpfs a 2 MiB chunk at a 2 MiB offset is what can become a huge page.
 *
 * Mode 0 fallocate: a range past EOF extends the file.  Pages allocated
 * before a failure stay allocated (result->done_bytes says how far); the
 * caller punches them if it wants them back.
 *
 * Threading: no state; reentrant.
 */
#ifndef EBB_POPULATE_H
#define EBB_POPULATE_H

#include <stdint.h>
#include <sys/types.h>

#define POPULATE_CHUNK_BYTES	(2ull << 20)
#define POPULATE_PAGE_BYTES	4096ull

struct populate_progress {
	uint64_t done_bytes;	/* allocated from off_bytes onwards, contiguous */
	uint64_t len_bytes;	/* asked for */
	uint64_t chunks;	/* pieces allocated by one fallocate each */
	uint64_t fallback_pages;/* 4 KiB pages allocated after a piece failed */
};

/* Called after every piece (at most 2 MiB of progress).  Non-zero stops the
 * call, which returns -ECANCELED: the daemon's way to abandon a launch. */
typedef int (*populate_progress_fn)(const struct populate_progress *p,
				    void *opaque);

/* Allocate [@off_bytes, @off_bytes + @len_bytes) of @fd.  Both must be
 * multiples of 4 KiB and the end must fit in off_t (-EINVAL).  @progress
 * and @result may be NULL; *@result is filled on success and on failure.
 * Returns 0, -ECANCELED, or the -errno of the fallocate that failed. */
int populate_file(int fd, uint64_t off_bytes, uint64_t len_bytes,
		  populate_progress_fn progress, void *opaque,
		  struct populate_progress *result);

/* The same with @falloc in place of fallocate(2) (same contract: 0 or -1 and
 * errno), so that tests can inject failures. */
typedef int (*populate_fallocate_fn)(int fd, int mode, off_t off, off_t len);
int populate_file_with(populate_fallocate_fn falloc, int fd,
		       uint64_t off_bytes, uint64_t len_bytes,
		       populate_progress_fn progress, void *opaque,
		       struct populate_progress *result);

#endif
