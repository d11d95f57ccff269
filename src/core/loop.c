/*
 * loop: the epoll event loop every part of ebbd runs on: fd watchers and
 * timers, with deferred free (API and threading rule in loop.h).
 */
/*
 * The loop keeps watchers in epoll (data.ptr = watcher) and timers in a
 * plain list: the daemon has a handful of timers, so finding the earliest
 * deadline by a linear walk each iteration is cheaper than a heap.
 *
 * Deferred free: loop_watch_del() clears w->fn and moves the watcher to a
 * graveyard list that is emptied only between epoll batches.  epoll may
 * already have returned an event pointing at it in the current batch; the
 * dispatch code sees fn == NULL and skips it.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 64	/* events per epoll_wait batch */

struct loop_watch {
	struct loop *loop;
	int fd;
	loop_fd_fn fn;		/* NULL once deleted */
	void *opaque;
	struct loop_watch *next;	/* graveyard link */
};

struct loop_timer {
	struct loop *loop;
	uint64_t deadline_ms;	/* absolute, CLOCK_MONOTONIC; 0 = disarmed */
	uint64_t period_ms;	/* 0 = one-shot */
	loop_timer_fn fn;	/* NULL once deleted */
	void *opaque;
	struct loop_timer *next;
};

struct loop {
	int epfd;
	int wakefd;		/* eventfd written by loop_stop() */
	volatile int stop;	/* set by loop_stop(), read each iteration */
	struct loop_timer *timers;	/* all timers, dead ones reaped lazily */
	struct loop_watch *graveyard;	/* deleted watchers awaiting free */
};

uint64_t loop_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t loop_now_ms(void)
{
	return loop_now_ns() / 1000000ull;
}

int loop_new(struct loop **out)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	struct loop *loop = calloc(1, sizeof(*loop));
	int rc;

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		rc = -errno;
		goto err_free;
	}
	loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->wakefd < 0) {
		rc = -errno;
		goto err_epoll;
	}
	/* data.ptr == NULL marks the wake fd. */
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0) {
		rc = -errno;
		goto err_wake;
	}
	*out = loop;
	return 0;

err_wake:
	close(loop->wakefd);
err_epoll:
	close(loop->epfd);
err_free:
	free(loop);
	return rc;
}

static void reap(struct loop *loop)
{
	struct loop_timer **pt = &loop->timers;

	while (loop->graveyard) {
		struct loop_watch *w = loop->graveyard;

		loop->graveyard = w->next;
		free(w);
	}
	while (*pt) {
		struct loop_timer *t = *pt;

		if (t->fn) {
			pt = &t->next;
			continue;
		}
		*pt = t->next;
		free(t);
	}
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	for (struct loop_timer *t = loop->timers; t; t = t->next)
		t->fn = NULL;
	reap(loop);
	close(loop->wakefd);
	close(loop->epfd);
	free(loop);
}

int loop_watch_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn,
		   void *opaque, struct loop_watch **out)
{
	struct loop_watch *w = calloc(1, sizeof(*w));
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->fd = fd;
	w->fn = fn;
	w->opaque = opaque;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int rc = -errno;

		free(w);
		return rc;
	}
	if (out)
		*out = w;
	return 0;
}

int loop_watch_mod(struct loop_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	if (epoll_ctl(w->loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_watch_del(struct loop_watch *w)
{
	if (!w || !w->fn)
		return;
	/* The fd may already be closed by a careless caller; ignore errors. */
	epoll_ctl(w->loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->fn = NULL;
	w->next = w->loop->graveyard;
	w->loop->graveyard = w;
}

int loop_timer_add(struct loop *loop, uint64_t delay_ms, uint64_t period_ms,
		   loop_timer_fn fn, void *opaque, struct loop_timer **out)
{
	struct loop_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->period_ms = period_ms;
	t->fn = fn;
	t->opaque = opaque;
	t->deadline_ms = loop_now_ms() + delay_ms;
	t->next = loop->timers;
	loop->timers = t;
	if (out)
		*out = t;
	return 0;
}

void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms)
{
	if (t && t->fn)
		t->deadline_ms = loop_now_ms() + delay_ms;
}

void loop_timer_del(struct loop_timer *t)
{
	if (t)
		t->fn = NULL;
}

void loop_stop(struct loop *loop)
{
	uint64_t one = 1;

	loop->stop = 1;
	/* Async-signal-safe: write(2) on an eventfd. */
	if (write(loop->wakefd, &one, sizeof(one)) < 0)
		return;
}

/* Run due timers; return ms until the next deadline, or -1 for none. */
static int run_timers(struct loop *loop)
{
	uint64_t now = loop_now_ms(), next = UINT64_MAX;

	for (struct loop_timer *t = loop->timers; t; t = t->next) {
		if (!t->fn || !t->deadline_ms)
			continue;
		if (t->deadline_ms <= now) {
			t->deadline_ms = t->period_ms ? now + t->period_ms : 0;
			t->fn(t->opaque);
			now = loop_now_ms();
		}
		if (t->fn && t->deadline_ms && t->deadline_ms < next)
			next = t->deadline_ms;
	}
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
}

int loop_run(struct loop *loop)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];

	/* A loop_stop() that came before loop_run() still counts: the flag
	 * is cleared on the way out, not on the way in. */
	while (!loop->stop) {
		int timeout = run_timers(loop);
		int n;

		reap(loop);
		if (loop->stop)
			break;
		n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			struct loop_watch *w = evs[i].data.ptr;

			if (!w) {
				uint64_t v;

				if (read(loop->wakefd, &v, sizeof(v)) < 0)
					continue;
				continue;
			}
			if (w->fn)
				w->fn(w->opaque, evs[i].events);
		}
	}
	reap(loop);
	loop->stop = 0;
	return 0;
}
