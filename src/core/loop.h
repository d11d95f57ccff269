/*
 * loop: the daemon's single-threaded epoll event loop.
 *
 * Owns: a set of fd watchers and timers.  Every callback runs on the thread
 * that called loop_run(); nothing here is thread-safe except loop_stop(),
 * which may be called from a signal handler or another thread.
 *
 * A watcher or timer may be removed from inside any callback, including its
 * own: removal only marks it dead and memory is reclaimed after the current
 * batch of events, so a later event in the same batch never reaches a freed
 * watcher.
 */
#ifndef EBB_LOOP_H
#define EBB_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>	/* EPOLLIN etc. for callers */

struct loop;
struct loop_watch;
struct loop_timer;

/* Called with the EPOLL* bits that fired (EPOLLIN, EPOLLOUT, EPOLLHUP...). */
typedef void (*loop_fd_fn)(void *opaque, uint32_t events);
typedef void (*loop_timer_fn)(void *opaque);

int loop_new(struct loop **out);
/* Frees every watcher and timer still registered; closes no fds. */
void loop_free(struct loop *loop);

/* Watch @fd for @events (EPOLLIN/EPOLLOUT; level-triggered).  The fd stays
 * owned by the caller, who must loop_watch_del() before closing it. */
int loop_watch_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn,
		   void *opaque, struct loop_watch **out);
int loop_watch_mod(struct loop_watch *w, uint32_t events);
/* Stop watching; safe on NULL and from inside callbacks. */
void loop_watch_del(struct loop_watch *w);

/* A timer that fires @fn every @period_ms (0: one-shot after @delay_ms). */
int loop_timer_add(struct loop *loop, uint64_t delay_ms, uint64_t period_ms,
		   loop_timer_fn fn, void *opaque, struct loop_timer **out);
/* Re-arm to fire after @delay_ms (keeps its period). */
void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms);
void loop_timer_del(struct loop_timer *t);

/* Run until loop_stop().  Returns 0, or -errno if epoll itself fails. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t loop_now_ms(void);
uint64_t loop_now_ns(void);

#endif
