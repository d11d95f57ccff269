/*
 * populate: see populate.h.  The loop, per piece:
 *	1. one fallocate for the piece (up to the next 2 MiB boundary);
 *	2. on ENOSPC/ENOMEM, 4 KiB fallocates over the same piece;
 *	3. report progress; the callback may cancel.
 */
#include "populate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>

/* EINTR is not a failure: a signal arrived while the kernel zeroed pages. */
static int falloc_retry(populate_fallocate_fn falloc, int fd, uint64_t off,
			uint64_t len)
{
	int rc;

	do
		rc = falloc(fd, 0, (off_t)off, (off_t)len);
	while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

static bool worth_smaller(int err)
{
	return err == -ENOSPC || err == -ENOMEM;
}

static int real_fallocate(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

int populate_file_with(populate_fallocate_fn falloc, int fd,
		       uint64_t off_bytes, uint64_t len_bytes,
		       populate_progress_fn progress, void *opaque,
		       struct populate_progress *result)
{
	struct populate_progress p = { .len_bytes = len_bytes };
	uint64_t pos = off_bytes, end;
	int rc = 0;

	if (off_bytes % POPULATE_PAGE_BYTES || len_bytes % POPULATE_PAGE_BYTES ||
	    off_bytes > (uint64_t)INT64_MAX ||
	    len_bytes > (uint64_t)INT64_MAX - off_bytes) {
		rc = -EINVAL;
		goto out;
	}
	end = off_bytes + len_bytes;
	while (pos < end) {
		uint64_t next = (pos / POPULATE_CHUNK_BYTES + 1) * POPULATE_CHUNK_BYTES;
		uint64_t piece = (next < end ? next : end) - pos;

		rc = falloc_retry(falloc, fd, pos, piece);	/* step 1 */
		if (rc == 0) {
			p.chunks++;
			pos += piece;
		} else if (worth_smaller(rc)) {			/* step 2 */
			for (uint64_t stop = pos + piece; pos < stop;
			     pos += POPULATE_PAGE_BYTES) {
				rc = falloc_retry(falloc, fd, pos,
						  POPULATE_PAGE_BYTES);
				if (rc) {
					p.done_bytes = pos - off_bytes;
					goto out;
				}
				p.fallback_pages++;
			}
		} else {
			goto out;
		}
		p.done_bytes = pos - off_bytes;
		if (progress && progress(&p, opaque)) {		/* step 3 */
			rc = -ECANCELED;
			goto out;
		}
	}
out:
	if (result)
		*result = p;
	return rc;
}

int populate_file(int fd, uint64_t off_bytes, uint64_t len_bytes,
		  populate_progress_fn progress, void *opaque,
		  struct populate_progress *result)
{
	return populate_file_with(real_fallocate, fd, off_bytes, len_bytes,
				  progress, opaque, result);
}
