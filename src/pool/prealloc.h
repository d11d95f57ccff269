/*
 * prealloc: populate a guest's RAM file up front (ebbctl run --prealloc)
 * on a worker thread, charging the host pool as it goes.
 *
 * Why a thread: populating a few GiB of tmpfs takes seconds (the kernel
 * zeroes every page), and the loop thread serves every other guest.  The
 * worker runs populate_file() (2 MiB chunks first, 4 KiB fallback) and
 * after every piece measures the file's allocated size and grows the
 * guest in the pool by what was added.  Growth consumes the guest's claim
 * first, so a guest launched with a claim for what it preallocates never
 * fails here; one launched without (the naive toolstack of the race
 * benchmark) fails as soon as the pool has no room: -ENOMEM, the "late
 * failure" claims exist to prevent.
 *
 * While a prealloc runs the caller must not reconcile this guest's pool
 * entry from measurements (pool_set_resident): the worker owns its growth.
 *
 * Completion is reported on the loop thread through @done; the status can
 * be read at any time from the loop thread.
 *
 * Threading: prealloc_start/status/free on the loop thread; the worker
 * touches only the fd (its own dup), the pool (thread-safe) and atomics.
 */
#ifndef EBB_PREALLOC_H
#define EBB_PREALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "pool.h"

struct prealloc;

struct prealloc_status {
	uint64_t len_bytes;	/* asked for */
	uint64_t done_bytes;	/* populated so far, contiguous from the start */
	uint64_t chunks;	/* pieces allocated whole (2 MiB at most) */
	uint64_t fallback_pages;/* 4 KiB pages allocated after a piece failed */
	uint64_t charged_pages;	/* pool growth so far */
	uint64_t elapsed_ms;	/* since start, frozen at the end */
	bool finished;
	int result;		/* once finished: 0 or -errno */
};

/* Called on the loop thread once the worker has ended. */
typedef void (*prealloc_done_fn)(void *opaque, int result);

/*
 * Populate [@off, @off + @len) of @fd (dup'ed; the caller keeps its own)
 * and grow @guest in @pool by the pages that became resident, never beyond
 * its max.  @off and @len must be multiples of 4 KiB.  Returns 0 or -errno
 * (nothing runs then).
 */
int prealloc_start(struct loop *loop, int fd, uint64_t off, uint64_t len,
		   struct pool *pool, uint64_t guest, prealloc_done_fn done,
		   void *opaque, struct prealloc **out);
void prealloc_status(const struct prealloc *p, struct prealloc_status *out);
/* Cancel if still running (the worker stops after its current piece),
 * wait for it, free.  @done is not called.  NULL is fine.  What was
 * populated stays populated and charged. */
void prealloc_free(struct prealloc *p);

#endif
