/*
 * metrics: the Prometheus endpoint, http://127.0.0.1:PORT/metrics,
 * served by libmicrohttpd inside ebbd's event loop.
 *
 * Why in the loop and not in libmicrohttpd's own thread: the numbers
 * live in loop-owned records (the guest table, device counters), so a
 * scrape built on the loop reads them without a lock and without a
 * snapshot copy.  libmicrohttpd runs without threads (MHD_USE_EPOLL):
 * its epoll descriptor is one watch on our loop, and a request is
 * served in one MHD_run() call.  What that costs the loop is bounded:
 * the page is built by the caller's collect function, whose work must
 * grow with nothing but the number of guests; requests are small
 * (headers capped by a per-connection memory limit), connections are
 * capped and time out, so a slow or hostile client holds a socket, not
 * the loop.
 *
 * Only GET and HEAD of /metrics are served; everything else gets 404 or
 * 405.  Listens on 127.0.0.1 only: the endpoint has no authentication.
 */
#ifndef EBB_METRICS_H
#define EBB_METRICS_H

#include <stdint.h>

struct loop;
struct metrics;
struct promtext;

/* Write the page.  0, or -errno (the scrape then gets a 500). */
typedef int (*metrics_collect_fn)(void *opaque, struct promtext *out);

/* Start serving on 127.0.0.1:@port (1..65535).  0 or -errno
 * (-EADDRINUSE when the port is taken). */
int metrics_open(struct loop *loop, unsigned port, metrics_collect_fn fn,
		 void *opaque, struct metrics **out);
/* Stop serving; safe on NULL. */
void metrics_close(struct metrics *m);

/* How long the last page took to build (ns), and pages served. */
uint64_t metrics_last_collect_ns(const struct metrics *m);
uint64_t metrics_scrapes(const struct metrics *m);

#endif
