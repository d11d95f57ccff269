/*
 * prealloc: a populate_file() run on a worker thread that charges the pool
 * (API and threading rule in prealloc.h).
 */
#include "prealloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "populate.h"

struct prealloc {
	struct loop *loop;
	struct pool *pool;
	uint64_t guest;
	int fd;			/* our dup of the RAM file */
	uint64_t off, len;
	uint64_t max_pages;	/* the guest's max: growth never passes it */
	uint64_t base_pages;	/* resident when we started, as the pool has it */
	int efd;		/* the worker's "finished" signal */
	struct loop_watch *efd_w;
	pthread_t thread;
	bool joined;
	prealloc_done_fn done;
	void *opaque;
	uint64_t start_ms;
	/* Written by the worker, read by the loop thread. */
	_Atomic uint64_t done_bytes, chunks, fallback_pages, charged_pages;
	_Atomic uint64_t end_ms;
	_Atomic bool cancel;
	int result;		/* valid once joined */
};

/* After every piece: charge what became resident since the last piece.
 * Measuring (rather than adding the piece's length) also counts pages that
 * were already there, so nothing is charged twice. */
static int on_progress(const struct populate_progress *pp, void *opaque)
{
	struct prealloc *p = opaque;
	struct stat st;
	uint64_t pages, charged;
	int rc;

	atomic_store_explicit(&p->done_bytes, pp->done_bytes, memory_order_relaxed);
	atomic_store_explicit(&p->chunks, pp->chunks, memory_order_relaxed);
	atomic_store_explicit(&p->fallback_pages, pp->fallback_pages,
			      memory_order_relaxed);
	if (atomic_load_explicit(&p->cancel, memory_order_relaxed))
		return 1;
	if (fstat(p->fd, &st) < 0)
		return 0;	/* charge at the next piece */
	pages = (uint64_t)st.st_blocks * 512 / POOL_PAGE_SIZE;
	if (pages > p->max_pages)
		pages = p->max_pages;
	charged = atomic_load_explicit(&p->charged_pages, memory_order_relaxed);
	if (pages <= p->base_pages + charged)
		return 0;
	rc = pool_grow(p->pool, p->guest, pages - p->base_pages - charged);
	if (rc < 0) {
		p->result = rc;	/* read after the join */
		return 1;
	}
	atomic_store_explicit(&p->charged_pages, pages - p->base_pages,
			      memory_order_relaxed);
	return 0;
}

static void *worker(void *opaque)
{
	struct prealloc *p = opaque;
	struct populate_progress res = { 0 };
	uint64_t one = 1;
	int rc;

	rc = populate_file(p->fd, p->off, p->len, on_progress, p, &res);
	/* -ECANCELED from our own callback carries the pool's refusal. */
	if (rc == -ECANCELED && p->result)
		rc = p->result;
	p->result = rc;
	atomic_store_explicit(&p->done_bytes, res.done_bytes, memory_order_relaxed);
	atomic_store(&p->end_ms, loop_now_ms());
	if (write(p->efd, &one, sizeof(one)) < 0) {
		/* An eventfd write fails only on overflow; never here. */
	}
	return NULL;
}

static void on_finished(void *opaque, uint32_t events)
{
	struct prealloc *p = opaque;
	uint64_t v;

	(void)events;
	if (read(p->efd, &v, sizeof(v)) < 0 && errno == EAGAIN)
		return;
	loop_watch_del(p->efd_w);
	p->efd_w = NULL;
	pthread_join(p->thread, NULL);
	p->joined = true;
	if (p->done)
		p->done(p->opaque, p->result);	/* may free p */
}

int prealloc_start(struct loop *loop, int fd, uint64_t off, uint64_t len,
		   struct pool *pool, uint64_t guest, prealloc_done_fn done,
		   void *opaque, struct prealloc **out)
{
	struct pool_guest_info gi;
	struct prealloc *p;
	int rc;

	if (off % POPULATE_PAGE_BYTES || len % POPULATE_PAGE_BYTES || !len)
		return -EINVAL;
	rc = pool_guest_info(pool, guest, &gi);
	if (rc < 0)
		return rc;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->pool = pool;
	p->guest = guest;
	p->off = off;
	p->len = len;
	p->max_pages = gi.max_pages;
	p->base_pages = gi.tot_pages;
	p->done = done;
	p->opaque = opaque;
	p->start_ms = loop_now_ms();
	p->efd = -1;
	p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (p->fd < 0) {
		rc = -errno;
		goto err;
	}
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		rc = -errno;
		goto err;
	}
	rc = loop_watch_add(loop, p->efd, EPOLLIN, on_finished, p, &p->efd_w);
	if (rc < 0)
		goto err;
	rc = -pthread_create(&p->thread, NULL, worker, p);
	if (rc < 0) {
		loop_watch_del(p->efd_w);
		goto err;
	}
	*out = p;
	return 0;
err:
	if (p->efd >= 0)
		close(p->efd);
	if (p->fd >= 0)
		close(p->fd);
	free(p);
	return rc;
}

void prealloc_status(const struct prealloc *p, struct prealloc_status *out)
{
	uint64_t end = atomic_load(&p->end_ms);

	out->len_bytes = p->len;
	out->done_bytes = atomic_load_explicit(&p->done_bytes, memory_order_relaxed);
	out->chunks = atomic_load_explicit(&p->chunks, memory_order_relaxed);
	out->fallback_pages = atomic_load_explicit(&p->fallback_pages,
						   memory_order_relaxed);
	out->charged_pages = atomic_load_explicit(&p->charged_pages,
						  memory_order_relaxed);
	out->elapsed_ms = (p->joined ? end : loop_now_ms()) - p->start_ms;
	out->finished = p->joined;
	out->result = p->joined ? p->result : 0;
}

void prealloc_free(struct prealloc *p)
{
	if (!p)
		return;
	if (!p->joined) {
		atomic_store(&p->cancel, true);
		pthread_join(p->thread, NULL);
		loop_watch_del(p->efd_w);
	}
	close(p->efd);
	close(p->fd);
	free(p);
}
