/*
 * metrics: libmicrohttpd on ebbd's loop (API and reasoning in
 * metrics.h).
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "loop.h"
#include "promtext.h"

#define WHO "metrics"
#define METRICS_MAX_CONNECTIONS	16	/* beyond: refused at accept */
#define METRICS_TIMEOUT_S	10	/* an idle connection is closed */
#define METRICS_CONN_MEMORY	(32 * 1024)	/* request headers and all */
#define METRICS_TICK_MS		1000	/* timeouts are checked this often */

struct metrics {
	struct MHD_Daemon *mhd;
	struct loop_watch *watch;	/* on MHD's epoll descriptor */
	struct loop_timer *tick;	/* MHD_run for connection timeouts */
	metrics_collect_fn collect;
	void *opaque;
	uint64_t last_collect_ns;	/* the last page's build time */
	uint64_t scrapes;		/* pages served */
};

static const char content_type[] = "text/plain; version=0.0.4; charset=utf-8";

/* Serve what is ready, then come back as soon as libmicrohttpd has
 * work of its own (a response left to write to an edge-triggered
 * socket, a timeout), at the latest after METRICS_TICK_MS. */
static void run(struct metrics *m)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_run(m->mhd) != MHD_YES)
		log_warn(WHO, "MHD_run failed");
	if (MHD_get_timeout(m->mhd, &ms) == MHD_YES && ms < METRICS_TICK_MS)
		loop_timer_arm(m->tick, ms ? ms : 1);
}

static void on_ready(void *opaque, uint32_t events)
{
	run(opaque);
}

static void on_tick(void *opaque)
{
	run(opaque);
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
				  const char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result serve_page(struct metrics *m, struct MHD_Connection *c)
{
	struct MHD_Response *r;
	struct promtext p;
	enum MHD_Result ret;
	uint64_t t0 = loop_now_ns();
	int rc;

	promtext_init(&p);
	rc = m->collect(m->opaque, &p);
	if (!rc)
		rc = promtext_done(&p);
	m->last_collect_ns = loop_now_ns() - t0;
	if (rc) {
		promtext_free(&p);
		log_warn(WHO, "cannot build the page: %s", strerror(-rc));
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "cannot build the metrics page\n");
	}
	/* libmicrohttpd frees the page once it is sent. */
	r = MHD_create_response_from_buffer(p.len, p.buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		promtext_free(&p);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	m->scrapes++;
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **req_cls)
{
	struct metrics *m = cls;

	if (strcmp(method, MHD_HTTP_METHOD_GET) &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "only GET and HEAD\n");
	/* A GET with a body: the body is ignored (a zero size tells
	 * libmicrohttpd we took it), the page still served. */
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (!strcmp(url, "/metrics"))
		return serve_page(m, c);
	if (!strcmp(url, "/"))
		return reply_text(c, MHD_HTTP_OK,
				  "ebbd: Prometheus metrics at /metrics\n");
	return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[256];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_warn(WHO, "libmicrohttpd: %s", line);
}

int metrics_open(struct loop *loop, unsigned port, metrics_collect_fn fn,
		 void *opaque, struct metrics **out)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	const union MHD_DaemonInfo *info;
	struct metrics *m;
	int rc;

	if (!port || port > 65535)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->collect = fn;
	m->opaque = opaque;
	/* No MHD thread: MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD
	 * hands us one epoll descriptor to watch. */
	errno = 0;
	m->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, (uint16_t)port,
		NULL, NULL, on_request, m,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT_S,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_CONN_MEMORY,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
		MHD_OPTION_END);
	if (!m->mhd) {
		rc = errno ? -errno : -EADDRINUSE;
		free(m);
		return rc;
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		rc = -ENOTSUP;
		goto err_mhd;
	}
	if ((rc = loop_watch_add(loop, info->epoll_fd, EPOLLIN, on_ready, m,
				 &m->watch)) < 0 ||
	    (rc = loop_timer_add(loop, METRICS_TICK_MS, METRICS_TICK_MS,
				 on_tick, m, &m->tick)) < 0)
		goto err_watch;
	*out = m;
	return 0;

err_watch:
	loop_watch_del(m->watch);
err_mhd:
	MHD_stop_daemon(m->mhd);
	free(m);
	return rc;
}

void metrics_close(struct metrics *m)
{
	if (!m)
		return;
	loop_timer_del(m->tick);
	loop_watch_del(m->watch);
	MHD_stop_daemon(m->mhd);
	free(m);
}

uint64_t metrics_last_collect_ns(const struct metrics *m)
{
	return m->last_collect_ns;
}

uint64_t metrics_scrapes(const struct metrics *m)
{
	return m->scrapes;
}
