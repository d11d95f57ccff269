/*
 * Tests for the vhost-user backend and the balloon behind it, driven by a
 * fake frontend (fake_frontend.c) over real sockets, with guest RAM in a
 * memfd and the rings laid out in it.
 *
 * Every test runs two balloons on one loop: "evil" (side a), which the
 * test attacks, and "victim" (side b), fully set up in the fixture.  Each
 * hostile case asserts four things:
 *
 *   1. the violation fails evil: vu_dev_is_failed, the balloon reports
 *      failed with a reason, and the frontend sees its connection closed;
 *   2. nothing leaks: the fixture's teardown counts this process's fds
 *      (ASan covers memory);
 *   3. victim keeps working: it inflates four fresh pages and the RAM
 *      file's allocated size drops by exactly those pages;
 *   4. evil can connect again and is healthy (the next case does so).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "balloon.h"
#include "fake_frontend.h"
#include "loop.h"
#include "vhost_user.h"

#define MiB (1ull << 20)
#define GPA (1 * MiB)		/* guest memory starts at 1 MiB, as in UML */
#define MEM (8 * MiB)
#define RING(q) (GPA + (uint64_t)(q) * 0x10000)	/* 64 KiB per ring */
#define BUF (GPA + 512 * 1024)	/* scratch buffers the tests post */
#define PAGES (GPA + 4 * MiB)	/* pages the victim inflates */
#define NUM 64
#define NQ 4			/* inflate, deflate, stats, reporting */

#define F_MUST_TELL_HOST 0
#define F_STATS_VQ 1
#define F_DEFLATE_ON_OOM 2
#define F_REPORTING 5
#define BALLOON_FEATURES ((1ull << VIRTIO_F_VERSION_1) | \
			  (1ull << VU_F_PROTOCOL_FEATURES) | \
			  (1ull << F_MUST_TELL_HOST) | (1ull << F_STATS_VQ) | \
			  (1ull << F_DEFLATE_ON_OOM) | (1ull << F_REPORTING))
#define Q_INFLATE 0
#define Q_DEFLATE 1
#define Q_STATS 2
#define Q_REPORT 3

/* One balloon and the frontend driving it. */
struct side {
	const char *name;
	struct balloon *b;
	struct vu_dev *vu;
	struct ff f;
	struct ff_mem m;
	struct ff_ring r[NQ];
	int kick[NQ], call[NQ];	/* eventfds; ours, the backend gets dups */
	unsigned next_page;	/* next fresh page of PAGES to inflate */
	unsigned failed_events;	/* balloon_events.failed calls */
	char why[256];		/* the last reason given */
	unsigned reached;	/* target_reached calls */
};

struct env {
	struct loop *loop;
	struct side a, b;	/* evil, victim */
	unsigned fds_at_start;
};

/* ---- plumbing ------------------------------------------------------------ */

static void ev_failed(void *opaque, const char *why)
{
	struct side *s = opaque;

	s->failed_events++;
	snprintf(s->why, sizeof(s->why), "%s", why);
}

static void ev_reached(void *opaque, uint32_t actual)
{
	struct side *s = opaque;

	s->reached++;
}

static const struct balloon_events events = {
	.failed = ev_failed,
	.target_reached = ev_reached,
};

static void attach(struct env *e, struct side *s)
{
	int sp[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(s->vu, sp[1]), 0);
	ff_init(&s->f, e->loop, sp[0]);
	for (unsigned q = 0; q < NQ; q++)
		ff_ring_init(&s->r[q], &s->m, NUM, RING(q));
	s->failed_events = 0;
	s->why[0] = 0;
}

static bool disconnected(void *arg)
{
	return !vu_dev_connected(((struct side *)arg)->vu);
}

/* Drop the frontend and connect a fresh one (no messages yet). */
static void reconnect(struct env *e, struct side *s)
{
	ff_close(&s->f);
	assert_true(ff_pump_until(e->loop, disconnected, s, 1000));
	attach(e, s);
	assert_false(vu_dev_is_failed(s->vu));
}

static void handshake_features(struct side *s, uint64_t features)
{
	ff_handshake(&s->f, &s->m, features, s->r, NQ, s->kick, s->call);
}

static void handshake(struct side *s)
{
	handshake_features(s, BALLOON_FEATURES);
}

static void side_init(struct env *e, struct side *s, const char *name)
{
	s->name = name;
	assert_int_equal(balloon_new(e->loop, NULL, name, true, &events, s,
				     &s->b), 0);
	s->vu = balloon_vu(s->b);
	ff_mem_init(&s->m, GPA, 0, MEM);
	ff_mem_touch(&s->m);
	for (unsigned q = 0; q < NQ; q++) {
		s->kick[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		s->call[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		assert_true(s->kick[q] >= 0 && s->call[q] >= 0);
	}
	attach(e, s);
}

static void side_free(struct side *s)
{
	balloon_free(s->b);
	ff_close(&s->f);
	ff_mem_free(&s->m);
	for (unsigned q = 0; q < NQ; q++) {
		close(s->kick[q]);
		close(s->call[q]);
	}
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	e->fds_at_start = ff_count_fds();
	assert_int_equal(loop_new(&e->loop), 0);
	side_init(e, &e->a, "evil/balloon");
	side_init(e, &e->b, "victim/balloon");
	handshake(&e->b);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	unsigned fds;

	unsigned at_start = e->fds_at_start;

	side_free(&e->a);
	side_free(&e->b);
	loop_free(e->loop);
	free(e);
	fds = ff_count_fds();
	if (fds != at_start) {
		fprintf(stderr, "fd leak: %u open before, %u after\n",
			at_start, fds);
		return -1;
	}
	return 0;
}

static void kick(struct side *s, unsigned q)
{
	uint64_t one = 1;

	assert_int_equal(write(s->kick[q], &one, 8), 8);
}

/* Post a chain on queue @q and kick it. */
static void post(struct side *s, unsigned q, unsigned n, const uint64_t *addr,
		 const uint32_t *len, const bool *write)
{
	ff_ring_post(&s->r[q], ff_ring_chain(&s->r[q], n, addr, len, write));
	kick(s, q);
}

struct used_wait {
	struct side *s;
	unsigned q;
};

static bool ring_drained(void *arg)
{
	struct used_wait *w = arg;
	struct ff_ring *r = &w->s->r[w->q];

	return ff_ring_used_idx(r) == r->avail_idx;
}

/* Pump until the device has given back everything posted on @q. */
static void wait_used(struct env *e, struct side *s, unsigned q)
{
	struct used_wait w = { s, q };

	assert_true(ff_pump_until(e->loop, ring_drained, &w, 1000));
}

/* One pfn buffer on the inflate (or deflate) queue. */
static void post_pfns(struct side *s, unsigned q, const uint32_t *pfns,
		      unsigned n)
{
	uint64_t a = BUF;
	uint32_t l = n * 4;

	memcpy(ff_mem_ptr(&s->m, BUF), pfns, n * 4);
	post(s, q, 1, &a, &l, NULL);
}

static uint32_t pfn_of(uint64_t gpa)
{
	return (uint32_t)(gpa / 4096);
}

/*
 * The victim is still served: it inflates four fresh pages, gets the
 * buffer back with an interrupt, and exactly those pages leave the host.
 */
static void victim_works(struct env *e)
{
	struct side *s = &e->b;
	uint64_t before = ff_mem_allocated(&s->m), v;
	struct balloon_info bi;
	uint32_t pfns[4];

	assert_true(vu_dev_connected(s->vu));
	assert_false(vu_dev_is_failed(s->vu));
	assert_true(s->next_page + 4 <= 1024);
	for (unsigned i = 0; i < 4; i++)
		pfns[i] = pfn_of(PAGES + (uint64_t)(s->next_page + i) * 4096);
	s->next_page += 4;
	while (read(s->call[Q_INFLATE], &v, 8) == 8)
		;
	post_pfns(s, Q_INFLATE, pfns, 4);
	wait_used(e, s, Q_INFLATE);
	assert_int_equal(read(s->call[Q_INFLATE], &v, 8), 8);
	assert_int_equal(before - ff_mem_allocated(&s->m), 4 * 4096);
	for (unsigned i = 0; i < 4; i++)
		assert_false(ff_mem_page_present(&s->m, (uint64_t)pfns[i] * 4096));
	balloon_get_info(s->b, &bi);
	assert_false(bi.failed);
	assert_int_equal(s->failed_events, 0);
}

/* Evil was failed for a reason containing @why, and dropped. */
static void expect_failed(struct env *e, const char *why)
{
	struct side *s = &e->a;
	struct balloon_info bi;

	assert_true(ff_wait_closed(&s->f));
	assert_true(vu_dev_is_failed(s->vu));
	assert_false(vu_dev_connected(s->vu));
	assert_int_equal(s->failed_events, 1);
	if (why && !strstr(s->why, why))
		fail_msg("failed for \"%s\", expected \"%s\"", s->why, why);
	balloon_get_info(s->b, &bi);
	assert_true(bi.failed);
	assert_false(bi.connected);
	assert_false(bi.ready);
	victim_works(e);
}

/* Send one raw message on a fresh connection and expect the failure. */
static void hostile_msg(struct env *e, uint32_t req, uint32_t flags,
			const void *p, uint32_t size, const int *fds,
			unsigned nfds, const char *why)
{
	reconnect(e, &e->a);
	assert_int_equal(ff_send(&e->a.f, req, flags, p, size, fds, nfds), 0);
	expect_failed(e, why);
}

/* A fresh evil connection, negotiated up to a memory table (acks on). */
static void prepare_mem(struct env *e)
{
	uint64_t pf = (1ull << VU_PF_REPLY_ACK) | (1ull << VU_PF_BACKEND_REQ) |
		      (1ull << VU_PF_CONFIG);
	uint64_t f = BALLOON_FEATURES;

	reconnect(e, &e->a);
	assert_int_equal(ff_send(&e->a.f, VU_SET_PROTOCOL_FEATURES, FF_VERSION,
				 &pf, 8, NULL, 0), 0);
	assert_int_equal(ff_call(&e->a.f, VU_SET_FEATURES, &f, 8, NULL, 0), 0);
	assert_int_equal(ff_mem_table(&e->a.f, &e->a.m), 0);
}

/* ---- well-formed frontends ------------------------------------------------ */

static void handshake_is_acked_and_device_ready(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct balloon_info bi;
	uint64_t v;
	uint32_t st[2] = { Q_INFLATE, 0 }, got[2];

	balloon_get_info(s->b, &bi);
	assert_true(bi.connected);
	assert_false(bi.ready);
	handshake(s);
	assert_true(vu_dev_connected(s->vu));
	assert_false(vu_dev_is_failed(s->vu));
	assert_int_equal(vu_dev_features(s->vu), BALLOON_FEATURES);
	balloon_get_info(s->b, &bi);
	assert_true(bi.ready);
	assert_false(bi.failed);
	for (unsigned q = 0; q < NQ; q++)
		assert_true(vq_ready(vu_dev_vq(s->vu, q)));
	assert_null(vu_dev_vq(s->vu, NQ));
	assert_int_equal(vu_dev_mem(s->vu)->nregions, 1);

	assert_int_equal(ff_get_u64(&s->f, VU_GET_MAX_MEM_SLOTS, &v), 0);
	assert_int_equal(v, 8);
	assert_int_equal(ff_get_u64(&s->f, VU_GET_QUEUE_NUM, &v), 0);
	assert_int_equal(v, NQ);
	/* GET_VRING_BASE answers where the device stopped. */
	post_pfns(s, Q_INFLATE, (uint32_t[]){ pfn_of(PAGES) }, 1);
	wait_used(e, s, Q_INFLATE);
	assert_int_equal(ff_send(&s->f, VU_GET_VRING_BASE, FF_VERSION, st, 8,
				 NULL, 0), 0);
	assert_int_equal(ff_recv(&s->f, VU_GET_VRING_BASE, got, sizeof(got)), 8);
	assert_int_equal(got[0], Q_INFLATE);
	assert_int_equal(got[1], 1);
	assert_false(vq_ready(vu_dev_vq(s->vu, Q_INFLATE)));
	victim_works(e);
}

static void offered_features_are_what_the_balloon_supports(void **state)
{
	struct env *e = *state;
	uint64_t v;

	assert_int_equal(ff_get_u64(&e->a.f, VU_GET_FEATURES, &v), 0);
	assert_int_equal(v, BALLOON_FEATURES);
	assert_int_equal(ff_get_u64(&e->a.f, VU_GET_PROTOCOL_FEATURES, &v), 0);
	assert_int_equal(v & ((1ull << VU_PF_REPLY_ACK) |
			      (1ull << VU_PF_BACKEND_REQ) |
			      (1ull << VU_PF_CONFIG)),
			 (1ull << VU_PF_REPLY_ACK) | (1ull << VU_PF_BACKEND_REQ) |
			 (1ull << VU_PF_CONFIG));
	assert_int_equal(v & (1ull << VU_PF_MQ), 0);
}

static void inflate_punches_pages_in_runs(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint64_t before;
	struct balloon_info bi;
	/* A run of three, a gap, a single page, and a run going down. */
	const uint32_t pfns[] = {
		pfn_of(PAGES), pfn_of(PAGES) + 1, pfn_of(PAGES) + 2,
		pfn_of(PAGES) + 10,
		pfn_of(PAGES) + 21, pfn_of(PAGES) + 20,
	};

	handshake(s);
	before = ff_mem_allocated(&s->m);
	post_pfns(s, Q_INFLATE, pfns, 6);
	wait_used(e, s, Q_INFLATE);
	assert_int_equal(before - ff_mem_allocated(&s->m), 6 * 4096);
	for (unsigned i = 0; i < 6; i++)
		assert_false(ff_mem_page_present(&s->m, (uint64_t)pfns[i] * 4096));
	assert_true(ff_mem_page_present(&s->m, PAGES + 3 * 4096));
	assert_true(ff_mem_page_present(&s->m, PAGES + 11 * 4096));
	assert_int_equal(ff_ring_used(&s->r[Q_INFLATE])->ring[0].id, 0);
	balloon_get_info(s->b, &bi);
	assert_int_equal(bi.inflated_pages, 6);
	assert_int_equal(bi.returned_bytes, 6 * 4096);

	/* Deflate only counts: the guest's next touch faults a page in. */
	before = ff_mem_allocated(&s->m);
	post_pfns(s, Q_DEFLATE, pfns, 2);
	wait_used(e, s, Q_DEFLATE);
	assert_int_equal(ff_mem_allocated(&s->m), before);
	balloon_get_info(s->b, &bi);
	assert_int_equal(bi.deflated_pages, 2);
	assert_false(bi.failed);
}

static void reported_ranges_are_punched(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint64_t before, a[2] = { PAGES, PAGES + 1 * MiB };
	uint32_t l[2] = { 64 * 1024, 2 * 4096 };
	bool w[2] = { true, true };
	struct balloon_info bi;

	handshake(s);
	before = ff_mem_allocated(&s->m);
	post(s, Q_REPORT, 2, a, l, w);
	wait_used(e, s, Q_REPORT);
	assert_int_equal(before - ff_mem_allocated(&s->m), 64 * 1024 + 8192);
	assert_false(ff_mem_page_present(&s->m, PAGES + 60 * 1024));
	assert_true(ff_mem_page_present(&s->m, PAGES + 64 * 1024));
	balloon_get_info(s->b, &bi);
	assert_int_equal(bi.reported_bytes, 64 * 1024 + 8192);
	assert_false(bi.failed);
}

static void put_stat(uint8_t *p, uint16_t tag, uint64_t val)
{
	memcpy(p, &tag, 2);
	memcpy(p + 2, &val, 8);
}

static void stats_are_recorded_and_unknown_tags_ignored(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t *p = ff_mem_ptr(&s->m, BUF);
	uint64_t a[2] = { BUF, BUF + 20 };
	uint32_t l[2] = { 20, 10 };
	struct balloon_info bi;

	handshake(s);
	put_stat(p, VIRTIO_BALLOON_S_MEMFREE, 12345678);
	put_stat(p + 10, 0x7777, 1);		/* a tag from the future */
	put_stat(p + 20, VIRTIO_BALLOON_S_MEMTOT, 999 * MiB);
	/* Split over two readable descriptors: gathered. */
	post(s, Q_STATS, 2, a, l, NULL);
	for (int i = 0; i < 20; i++)
		ff_pump(e->loop);
	balloon_get_info(s->b, &bi);
	assert_false(bi.failed);
	assert_false(vu_dev_is_failed(s->vu));
	assert_int_equal(bi.stats[VIRTIO_BALLOON_S_MEMFREE], 12345678);
	assert_int_equal(bi.stats[VIRTIO_BALLOON_S_MEMTOT], 999 * MiB);
	assert_int_equal(bi.stats_valid, (1u << VIRTIO_BALLOON_S_MEMFREE) |
					 (1u << VIRTIO_BALLOON_S_MEMTOT));
	assert_true(bi.stats_ms > 0);
	/* The device keeps the buffer until it wants the next report. */
	assert_int_equal(ff_ring_used_idx(&s->r[Q_STATS]), 0);
	balloon_set_stats_interval(s->b, 1);
	wait_used(e, s, Q_STATS);
	balloon_set_stats_interval(s->b, 0);
	victim_works(e);
}

static void target_goes_through_the_backend_channel(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint32_t h[3];
	uint8_t cfg[12 + 16] = { 0 };
	uint32_t v;

	handshake(s);
	assert_int_equal(balloon_set_target(s->b, 256), 0);
	/* CONFIG_CHANGE_MSG, version 1, no payload, no reply wanted. */
	assert_int_equal(recv(s->f.backend_peer, h, sizeof(h), MSG_DONTWAIT), 12);
	assert_int_equal(h[0], VU_BACKEND_CONFIG_CHANGE_MSG);
	assert_int_equal(h[1], FF_VERSION);
	assert_int_equal(h[2], 0);

	v = 16;
	memcpy(cfg + 4, &v, 4);
	assert_int_equal(ff_send(&s->f, VU_GET_CONFIG, FF_VERSION, cfg,
				 sizeof(cfg), NULL, 0), 0);
	assert_int_equal(ff_recv(&s->f, VU_GET_CONFIG, cfg, sizeof(cfg)), 28);
	memcpy(&v, cfg + 12, 4);
	assert_int_equal(v, 256);	/* num_pages */

	/* The driver reports actual = 256 with SET_CONFIG at offset 4. */
	{
		uint8_t set[12 + 4] = { 0 };
		uint32_t off = 4, len = 4, actual = 256;

		memcpy(set, &off, 4);
		memcpy(set + 4, &len, 4);
		memcpy(set + 12, &actual, 4);
		assert_int_equal(ff_call(&s->f, VU_SET_CONFIG, set, sizeof(set),
					 NULL, 0), 0);
	}
	assert_int_equal(s->reached, 1);
	victim_works(e);
}

static void split_messages_are_reassembled_without_blocking(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint32_t h[3] = { VU_GET_FEATURES, FF_VERSION, 0 };
	uint32_t h2[3] = { VU_SET_FEATURES, FF_VERSION | FF_F_NEED_REPLY, 8 };
	uint64_t f = BALLOON_FEATURES, v;
	uint8_t msg[20];
	uint64_t pf = (1ull << VU_PF_REPLY_ACK);

	/* Header in three pieces, the victim served in between. */
	assert_int_equal(ff_send_raw(&s->f, h, 5, NULL, 0), 0);
	victim_works(e);
	assert_int_equal(ff_send_raw(&s->f, (uint8_t *)h + 5, 6, NULL, 0), 0);
	victim_works(e);
	assert_int_equal(ff_send_raw(&s->f, (uint8_t *)h + 11, 1, NULL, 0), 0);
	assert_int_equal(ff_recv(&s->f, VU_GET_FEATURES, &v, 8), 8);
	assert_int_equal(v, BALLOON_FEATURES);

	/* Payload split, and two messages in one write. */
	assert_int_equal(ff_send(&s->f, VU_SET_PROTOCOL_FEATURES, FF_VERSION,
				 &pf, 8, NULL, 0), 0);
	memcpy(msg, h2, 12);
	memcpy(msg + 12, &f, 8);
	assert_int_equal(ff_send_raw(&s->f, msg, 15, NULL, 0), 0);
	victim_works(e);
	assert_false(vu_dev_is_failed(s->vu));
	assert_int_equal(ff_send_raw(&s->f, msg + 15, 5, NULL, 0), 0);
	assert_int_equal(ff_recv(&s->f, VU_SET_FEATURES, &v, 8), 8);
	assert_int_equal(v, 0);
	assert_int_equal(vu_dev_features(s->vu), BALLOON_FEATURES);
}

static void unknown_requests_get_an_error_ack(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	const uint32_t reqs[] = { 0, VU_SET_LOG_BASE, VU_SET_LOG_FD, 19, 20,
				  22, 23, 26, 33, 41, 99, 0x7fffffff };
	uint64_t pf = (1ull << VU_PF_REPLY_ACK), zero = 0, v;

	assert_int_equal(ff_call(&s->f, VU_SET_PROTOCOL_FEATURES, &pf, 8,
				 NULL, 0), 0);
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		int64_t ack = ff_call(&s->f, reqs[i], &zero, 8, NULL, 0);

		if (ack != 1)
			fail_msg("request %u: ack %lld, want 1", reqs[i],
				 (long long)ack);
	}
	assert_false(vu_dev_is_failed(s->vu));
	assert_int_equal(s->failed_events, 0);
	assert_int_equal(ff_get_u64(&s->f, VU_GET_FEATURES, &v), 0);
	/* And it goes on to work normally. */
	inflate_punches_pages_in_runs(state);
}

static void listening_socket_serves_one_frontend_and_relistens(void **state)
{
	struct env *e = *state;
	char dir[] = "/tmp/ebb-vu-test-XXXXXX", path[64];
	struct side s = { .name = "listener" };
	struct ff second;
	uint64_t v;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/balloon.sock", dir);
	assert_int_equal(balloon_new(e->loop, path, s.name, true, &events, &s,
				     &s.b), 0);
	s.vu = balloon_vu(s.b);
	assert_false(vu_dev_connected(s.vu));

	assert_int_equal(ff_connect(&s.f, e->loop, path), 0);
	assert_true(vu_dev_connected(s.vu));
	/* One frontend per device: a second is turned away... */
	assert_int_equal(ff_connect(&second, e->loop, path), 0);
	assert_true(ff_wait_closed(&second));
	ff_close(&second);
	/* ...and the first is unharmed. */
	assert_int_equal(ff_get_u64(&s.f, VU_GET_FEATURES, &v), 0);

	/* Garbage fails the device; it listens again, healthy. */
	assert_int_equal(ff_send_raw(&s.f, "GET / HTTP/1.1\r\n\r\n", 18, NULL, 0), 0);
	assert_true(ff_wait_closed(&s.f));
	assert_true(vu_dev_is_failed(s.vu));
	assert_int_equal(s.failed_events, 1);
	ff_close(&s.f);
	assert_int_equal(ff_connect(&s.f, e->loop, path), 0);
	assert_true(vu_dev_connected(s.vu));
	assert_false(vu_dev_is_failed(s.vu));
	assert_int_equal(ff_get_u64(&s.f, VU_GET_FEATURES, &v), 0);
	assert_int_equal(v, BALLOON_FEATURES);
	victim_works(e);

	ff_close(&s.f);
	balloon_free(s.b);
	assert_int_equal(access(path, F_OK), -1);	/* unlinked */
	assert_int_equal(rmdir(dir), 0);
}

static void violation_is_logged_with_the_guests_name(void **state)
{
	struct env *e = *state;
	int saved = dup(STDERR_FILENO);
	int logfd = memfd_create("stderr", MFD_CLOEXEC);
	char buf[4096] = { 0 };
	uint32_t h[3] = { VU_GET_FEATURES, FF_VERSION, VU_MAX_PAYLOAD + 1 };

	assert_true(saved >= 0 && logfd >= 0);
	assert_int_equal(dup2(logfd, STDERR_FILENO), STDERR_FILENO);
	assert_int_equal(ff_send_raw(&e->a.f, h, sizeof(h), NULL, 0), 0);
	(void)ff_wait_closed(&e->a.f);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	assert_true(pread(logfd, buf, sizeof(buf) - 1, 0) > 0);
	close(logfd);
	if (!strstr(buf, "ebb[evil/balloon] warning: device failed: message "
			 "payload too large"))
		fail_msg("log does not name the device and reason:\n%s", buf);
	assert_null(strstr(buf, "victim"));
	expect_failed(e, "too large");
}

/* ---- hostile messages ---------------------------------------------------- */

static void oversized_payload_fails_the_device(void **state)
{
	struct env *e = *state;
	static uint8_t big[VU_MAX_PAYLOAD + 1];
	const uint32_t sizes[] = { VU_MAX_PAYLOAD + 1, 65536, 0x7fffffff,
				   0xffffffff };

	/* Header alone: rejected before any payload is read. */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t h[3] = { VU_SET_MEM_TABLE, FF_VERSION, sizes[i] };

		reconnect(e, &e->a);
		assert_int_equal(ff_send_raw(&e->a.f, h, sizeof(h), NULL, 0), 0);
		expect_failed(e, "payload too large");
	}
	/* With the payload. */
	hostile_msg(e, VU_SET_CONFIG, FF_VERSION, big, sizeof(big), NULL, 0,
		    "payload too large");
	/* The largest allowed payload is read whole and judged by type. */
	hostile_msg(e, VU_SET_CONFIG, FF_VERSION, big, VU_MAX_PAYLOAD, NULL, 0,
		    "config access out of range");
}

static void wrong_payload_size_per_type_fails_the_device(void **state)
{
	struct env *e = *state;
	static const uint8_t zeros[64];
	const struct {
		uint32_t req, size;
	} bad[] = {
		{ VU_SET_FEATURES, 0 }, { VU_SET_FEATURES, 4 },
		{ VU_SET_FEATURES, 16 },
		{ VU_SET_PROTOCOL_FEATURES, 7 },
		{ VU_SET_VRING_KICK, 4 }, { VU_SET_VRING_CALL, 12 },
		{ VU_SET_VRING_ERR, 0 }, { VU_SET_STATUS, 2 },
		{ VU_SET_VRING_NUM, 4 }, { VU_SET_VRING_NUM, 12 },
		{ VU_SET_VRING_BASE, 0 }, { VU_GET_VRING_BASE, 16 },
		{ VU_SET_VRING_ENABLE, 9 },
		{ VU_SET_VRING_ADDR, 32 }, { VU_SET_VRING_ADDR, 48 },
		{ VU_SET_MEM_TABLE, 0 }, { VU_SET_MEM_TABLE, 4 },
		{ VU_GET_CONFIG, 0 }, { VU_GET_CONFIG, 8 },
		{ VU_SET_CONFIG, 11 },
		/* Messages that take no payload. */
		{ VU_GET_FEATURES, 8 }, { VU_GET_PROTOCOL_FEATURES, 1 },
		{ VU_SET_OWNER, 8 }, { VU_RESET_OWNER, 4 },
		{ VU_GET_QUEUE_NUM, 8 }, { VU_GET_MAX_MEM_SLOTS, 16 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char what[64];

		snprintf(what, sizeof(what), "request %u:", bad[i].req);
		hostile_msg(e, bad[i].req, FF_VERSION | FF_F_NEED_REPLY, zeros,
			    bad[i].size, NULL, 0, what);
	}
}

static void bad_version_or_flags_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint32_t flags[] = { 0, 2, 3, FF_VERSION | FF_F_REPLY,
				   FF_VERSION | FF_F_REPLY | FF_F_NEED_REPLY,
				   0xffffffff };

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		hostile_msg(e, VU_GET_FEATURES, flags[i], NULL, 0, NULL, 0,
			    "bad message version or flags");
	/* Garbage that is not even a header. */
	reconnect(e, &e->a);
	assert_int_equal(ff_send_raw(&e->a.f, "\xde\xad\xbe\xef\xde\xad\xbe\xef"
				     "\xde\xad\xbe\xef", 12, NULL, 0), 0);
	expect_failed(e, NULL);
}

static void fd_count_violations_fail_the_device(void **state)
{
	struct env *e = *state;
	int efd = eventfd(0, EFD_CLOEXEC), fds[9];
	uint64_t zero = 0, kick0 = 0, kick0_nofd = FF_NOFD;
	uint8_t table[8 + 32] = { 1 };
	uint64_t region[4] = { GPA, MEM, GPA, 0 };
	unsigned before;

	assert_true(efd >= 0);
	for (int i = 0; i < 9; i++)
		fds[i] = efd;
	memcpy(table + 8, region, sizeof(region));
	before = ff_count_fds();

	/* Messages that take no fd. */
	hostile_msg(e, VU_GET_FEATURES, FF_VERSION, NULL, 0, &efd, 1,
		    "unexpected file descriptors");
	hostile_msg(e, VU_SET_OWNER, FF_VERSION, NULL, 0, &efd, 1,
		    "unexpected file descriptors");
	hostile_msg(e, VU_SET_FEATURES, FF_VERSION, &zero, 8, &efd, 1,
		    "unexpected file descriptors");
	hostile_msg(e, VU_SET_VRING_NUM, FF_VERSION,
		    (uint32_t[]){ 0, 64 }, 8, &efd, 1,
		    "unexpected file descriptors");
	hostile_msg(e, VU_GET_CONFIG, FF_VERSION,
		    (uint32_t[]){ 0, 4, 0, 0 }, 16, fds, 3,
		    "unexpected file descriptors");
	/* Ring fds: exactly one unless NOFD, then none. */
	hostile_msg(e, VU_SET_VRING_KICK, FF_VERSION, &kick0, 8, NULL, 0,
		    "wrong number of fds");
	hostile_msg(e, VU_SET_VRING_KICK, FF_VERSION, &kick0_nofd, 8, &efd, 1,
		    "wrong number of fds");
	hostile_msg(e, VU_SET_VRING_CALL, FF_VERSION, &kick0, 8, fds, 2,
		    "wrong number of fds");
	hostile_msg(e, VU_SET_VRING_ERR, FF_VERSION, &kick0, 8, NULL, 0,
		    "wrong number of fds");
	/* The backend channel needs its one fd. */
	hostile_msg(e, VU_SET_BACKEND_REQ_FD, FF_VERSION, NULL, 0, NULL, 0,
		    "without one fd");
	hostile_msg(e, VU_SET_BACKEND_REQ_FD, FF_VERSION, NULL, 0, fds, 2,
		    "without one fd");
	/* A kick fd epoll cannot watch (a regular file): the ring could
	 * never be kicked, so the device fails instead of hanging. */
	hostile_msg(e, VU_SET_VRING_KICK, FF_VERSION, &kick0, 8, &e->a.m.fd, 1,
		    "kick fd cannot be polled");
	/* A memory table needs one fd per region. */
	hostile_msg(e, VU_SET_MEM_TABLE, FF_VERSION, table, sizeof(table),
		    NULL, 0, "one fd per region");
	hostile_msg(e, VU_SET_MEM_TABLE, FF_VERSION, table, sizeof(table),
		    (int[]){ e->a.m.fd, e->a.m.fd }, 2, "one fd per region");
	/* More fds than any message may carry. */
	hostile_msg(e, VU_SET_MEM_TABLE, FF_VERSION, table, sizeof(table),
		    fds, 9, "too many file descriptors");
	hostile_msg(e, VU_GET_FEATURES, FF_VERSION, NULL, 0, fds, 9,
		    "too many file descriptors");
	/* An fd that rides on the header of a message that is cut short. */
	reconnect(e, &e->a);
	assert_int_equal(ff_send_raw(&e->a.f, (uint32_t[]){ VU_SET_VRING_CALL,
				     FF_VERSION, 8 }, 12, &efd, 1), 0);
	ff_pump(e->loop);
	ff_close(&e->a.f);
	assert_true(ff_pump_until(e->loop, disconnected, &e->a, 1000));
	attach(e, &e->a);

	/* Every fd the backend received was closed again. */
	assert_int_equal(ff_count_fds(), before);
	close(efd);
}

static void ring_index_out_of_range_fails_the_device(void **state)
{
	struct env *e = *state;
	const uint32_t idx[] = { NQ, NQ + 1, VU_MAX_QUEUES, 255, 256,
				 0xffffffff };
	int efd = eventfd(0, EFD_CLOEXEC);

	for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
		uint32_t st[2] = { idx[i], 64 };
		uint8_t addr[40] = { 0 };

		memcpy(addr, &idx[i], 4);
		hostile_msg(e, VU_SET_VRING_NUM, FF_VERSION, st, 8, NULL, 0,
			    "ring index out of range");
		hostile_msg(e, VU_SET_VRING_BASE, FF_VERSION, st, 8, NULL, 0,
			    "ring index out of range");
		hostile_msg(e, VU_GET_VRING_BASE, FF_VERSION, st, 8, NULL, 0,
			    "ring index out of range");
		hostile_msg(e, VU_SET_VRING_ENABLE, FF_VERSION,
			    (uint32_t[]){ idx[i], 1 }, 8, NULL, 0,
			    "ring index out of range");
		hostile_msg(e, VU_SET_VRING_ADDR, FF_VERSION, addr, 40, NULL, 0,
			    "ring index out of range");
	}
	/* The fd messages carry the index in the low 8 bits of a u64. */
	for (uint64_t q = NQ; q <= 0xff; q += 0x3b) {
		uint64_t nofd = q | FF_NOFD;

		hostile_msg(e, VU_SET_VRING_KICK, FF_VERSION, &q, 8, &efd, 1,
			    "ring index out of range");
		hostile_msg(e, VU_SET_VRING_CALL, FF_VERSION, &nofd, 8, NULL, 0,
			    "ring index out of range");
	}
	/* Anything above bit 8 is reserved. */
	{
		const uint64_t v[] = { 1ull << 9, 1ull << 32, 1ull << 63 };

		for (size_t i = 0; i < 3; i++)
			hostile_msg(e, VU_SET_VRING_CALL, FF_VERSION, &v[i], 8,
				    &efd, 1, "reserved bits");
	}
	close(efd);
}

static void ring_size_and_state_out_of_range_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint32_t nums[] = { 0, 3, 100, VQ_MAX_SIZE + 1, 2 * VQ_MAX_SIZE,
				  65536, 0x80000000 };

	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		hostile_msg(e, VU_SET_VRING_NUM, FF_VERSION,
			    (uint32_t[]){ 0, nums[i] }, 8, NULL, 0,
			    "power of two");
	hostile_msg(e, VU_SET_VRING_BASE, FF_VERSION,
		    (uint32_t[]){ 0, 0x10000 }, 8, NULL, 0, "beyond 16 bits");
	hostile_msg(e, VU_SET_VRING_ENABLE, FF_VERSION,
		    (uint32_t[]){ 0, 2 }, 8, NULL, 0, "not 0 or 1");
	/* A size that does not fit where the ring already is. */
	prepare_mem(e);
	assert_int_equal(ff_vring_state(&e->a.f, VU_SET_VRING_NUM, 0, 64), 0);
	assert_int_equal(ff_vring_addr(&e->a.f, 0, GPA + MEM - 16 * 64,
				       RING(0) + 0x2000, RING(0) + 0x1000), 0);
	assert_int_equal(ff_send(&e->a.f, VU_SET_VRING_NUM, FF_VERSION,
				 (uint32_t[]){ 0, 128 }, 8, NULL, 0), 0);
	expect_failed(e, "ring outside guest memory");
}

static void ring_addresses_outside_memory_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint64_t end = GPA + MEM;
	const struct {
		uint64_t desc, used, avail;
		const char *why;
	} bad[] = {
		{ end, RING(0) + 0x2000, RING(0) + 0x1000, "outside" },
		{ end - 16 * 32, RING(0) + 0x2000, RING(0) + 0x1000, "outside" },
		{ 0, RING(0) + 0x2000, RING(0) + 0x1000, "outside" },
		{ RING(0), end - 64, RING(0) + 0x1000, "outside" },
		{ RING(0), RING(0) + 0x2000, end - 100, "outside" },
		{ RING(0), RING(0) + 0x2000, UINT64_MAX - 1, "outside" },
		{ UINT64_MAX - 15, RING(0) + 0x2000, RING(0) + 0x1000, "outside" },
		{ RING(0) + 8, RING(0) + 0x2000, RING(0) + 0x1000, "misaligned" },
		{ RING(0), RING(0) + 0x2002, RING(0) + 0x1000, "misaligned" },
		{ RING(0), RING(0) + 0x2000, RING(0) + 0x1001, "misaligned" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		prepare_mem(e);
		assert_int_equal(ff_vring_state(&e->a.f, VU_SET_VRING_NUM, 0, 64), 0);
		assert_int_equal(ff_vring_addr(&e->a.f, 0, bad[i].desc,
					       bad[i].used, bad[i].avail),
				 -ECONNRESET);
		expect_failed(e, bad[i].why);
	}
	/* Before any memory table, no address is inside. */
	reconnect(e, &e->a);
	assert_int_equal(ff_send(&e->a.f, VU_SET_VRING_NUM, FF_VERSION,
				 (uint32_t[]){ 0, 64 }, 8, NULL, 0), 0);
	assert_int_equal(ff_send(&e->a.f, VU_SET_VRING_ADDR, FF_VERSION,
				 (uint64_t[5]){ 0, RING(0), RING(0) + 0x2000,
						RING(0) + 0x1000, 0 }, 40,
				 NULL, 0), 0);
	expect_failed(e, "outside guest memory");
	/* A new memory table that leaves a live ring outside. */
	reconnect(e, &e->a);
	handshake(&e->a);
	{
		struct ff_mem small;

		ff_mem_init(&small, GPA + 2 * MiB, 0, MiB);
		assert_int_equal(ff_mem_table(&e->a.f, &small), -ECONNRESET);
		ff_mem_free(&small);
	}
	expect_failed(e, "outside the new memory table");
}

/* A memory table of @n regions with @fds, as raw bytes. */
static void send_table(struct env *e, uint32_t n, uint32_t size,
		       const uint64_t (*r)[4], unsigned nrows, const int *fds,
		       unsigned nfds, const char *why)
{
	uint8_t p[8 + 32 * 9] = { 0 };

	assert_true(nrows <= 9 && size <= sizeof(p));
	memcpy(p, &n, 4);
	for (unsigned i = 0; i < nrows; i++)
		memcpy(p + 8 + 32 * i, r[i], 32);
	hostile_msg(e, VU_SET_MEM_TABLE, FF_VERSION | FF_F_NEED_REPLY, p, size,
		    fds, nfds, why);
}

static void bad_memory_tables_fail_the_device(void **state)
{
	struct env *e = *state;
	const int fd = e->a.m.fd;
	const int two[2] = { fd, fd };
	const uint64_t one[1][4] = { { GPA, MEM, GPA, 0 } };
	int p[2];

	/* Region count against payload size. */
	send_table(e, 0, 8, one, 1, NULL, 0, "region count");
	send_table(e, 0, 40, one, 1, NULL, 0, "region count");
	send_table(e, 9, 8 + 32 * 9, one, 1, NULL, 0, "region count");
	send_table(e, 0xffffffff, 8 + 32, one, 1, NULL, 0, "region count");
	send_table(e, 2, 8 + 32, one, 1, two, 2, "region count");
	send_table(e, 1, 8 + 31, one, 1, &fd, 1, "region count");
	send_table(e, 1, 8 + 32 * 8 + 1, one, 1, &fd, 1, "region count");
	/* Regions that are not memory we can map safely. */
	{
		const uint64_t overlap[2][4] = { { GPA, MEM / 2, GPA, 0 },
						 { GPA + MEM / 4, MEM / 4, GPA + MEM / 4, 0 } };
		const uint64_t wrap[1][4] = { { UINT64_MAX - 4095, 8192, GPA, 0 } };
		const uint64_t uwrap[1][4] = { { GPA, 8192, UINT64_MAX - 4095, 0 } };
		const uint64_t owrap[1][4] = { { GPA, 8192, GPA, UINT64_MAX - 4095 } };
		const uint64_t empty[1][4] = { { GPA, 0, GPA, 0 } };
		const uint64_t longer[1][4] = { { GPA, MEM + 4096, GPA, 0 } };
		const uint64_t past[1][4] = { { GPA, MEM, GPA, 4096 } };
		const uint64_t huge[1][4] = { { GPA, 1ull << 62, GPA, 0 } };

		send_table(e, 2, 8 + 64, overlap, 2, two, 2, "invalid memory region");
		send_table(e, 1, 40, wrap, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, uwrap, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, owrap, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, empty, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, longer, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, past, 1, &fd, 1, "invalid memory region");
		send_table(e, 1, 40, huge, 1, &fd, 1, "invalid memory region");
	}
	/* Not a file at all. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	send_table(e, 1, 40, one, 1, &p[0], 1, "invalid memory region");
	close(p[0]);
	close(p[1]);

	/* UML's form, the whole 8-slot table with one used, is accepted. */
	reconnect(e, &e->a);
	{
		uint8_t t[8 + 32 * 8] = { 0 };
		uint32_t n = 1;
		uint64_t pf = (1ull << VU_PF_REPLY_ACK);

		memcpy(t, &n, 4);
		memcpy(t + 8, one[0], 32);
		assert_int_equal(ff_call(&e->a.f, VU_SET_PROTOCOL_FEATURES, &pf,
					 8, NULL, 0), 0);
		assert_int_equal(ff_call(&e->a.f, VU_SET_MEM_TABLE, t, sizeof(t),
					 &fd, 1), 0);
		assert_int_equal(vu_dev_mem(e->a.vu)->nregions, 1);
	}
}

/*
 * A memory table whose file cannot be mapped (here: opened read-only, so
 * mmap(PROT_WRITE, MAP_SHARED) fails with EACCES; a huge sparse file gives
 * ENOMEM the same way) arrives while the rings are live.  guestmem_set_table has
 * already unmapped the old table.  The device must not keep ring pointers
 * into the unmapped memory: either it fails, or every ring is unmapped.
 * (Kicking a ring that still points there crashes the daemon.)
 */
static void unmappable_memory_table_leaves_no_dangling_ring(void **state)
{
	struct env *e = *state;
	char path[64];
	int ro;
	int64_t ack;
	bool dangling = false;

	handshake(&e->a);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", e->a.m.fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	{
		struct ff_mem view = e->a.m;

		view.fd = ro;
		ack = ff_mem_table(&e->a.f, &view);
	}
	close(ro);
	if (!vu_dev_is_failed(e->a.vu)) {
		assert_int_not_equal(ack, 0);	/* at least refused */
		for (unsigned q = 0; q < NQ; q++) {
			struct vq *vq = vu_dev_vq(e->a.vu, q);

			dangling |= vq->desc || vq->avail || vq->used;
		}
	}
	if (dangling)
		fail_msg("memory table refused (ack %lld) but the rings still "
			 "point into the unmapped old table",
			 (long long)ack);
	if (vu_dev_is_failed(e->a.vu))
		expect_failed(e, NULL);
	else
		victim_works(e);
}

static void config_access_out_of_range_fails_the_device(void **state)
{
	struct env *e = *state;
	const struct {
		uint32_t req, off, len, size;
	} bad[] = {
		{ VU_GET_CONFIG, 12, 8, 20 },		/* runs past 16 */
		{ VU_GET_CONFIG, 16, 1, 13 },
		{ VU_GET_CONFIG, 0, 17, 29 },
		{ VU_GET_CONFIG, 0xffffffff, 2, 14 },	/* wraps */
		{ VU_GET_CONFIG, 0xfffffff0, 0x20, 44 },
		{ VU_GET_CONFIG, 0, VU_MAX_CONFIG + 1, 12 + VU_MAX_CONFIG + 1 },
		{ VU_GET_CONFIG, 0, 4, 20 },		/* size != 12 + len */
		{ VU_GET_CONFIG, 0, 16, 12 },
		{ VU_SET_CONFIG, 14, 4, 16 },
		{ VU_SET_CONFIG, 4, 0xfffffffc, 16 },
		{ VU_SET_CONFIG, 0, 4, 24 },
	};
	uint8_t p[12 + VU_MAX_CONFIG + 8] = { 0 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(p, &bad[i].off, 4);
		memcpy(p + 4, &bad[i].len, 4);
		hostile_msg(e, bad[i].req, FF_VERSION, p, bad[i].size, NULL, 0,
			    "config access out of range");
	}
	/* The last byte is in range. */
	reconnect(e, &e->a);
	{
		uint32_t off = 15, len = 1;
		uint8_t out[13];

		memcpy(p, &off, 4);
		memcpy(p + 4, &len, 4);
		assert_int_equal(ff_send(&e->a.f, VU_GET_CONFIG, FF_VERSION, p,
					 13, NULL, 0), 0);
		assert_int_equal(ff_recv(&e->a.f, VU_GET_CONFIG, out, 13), 13);
	}
}

static void unoffered_features_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint64_t f[] = { 1ull << 63, 1ull << 3, 1ull << 4,
			       BALLOON_FEATURES | (1ull << 33),
			       1ull << 28 /* INDIRECT_DESC */,
			       1ull << 29 /* EVENT_IDX */ };
	const uint64_t pf[] = { 1ull << VU_PF_MQ, 1ull << 63, 1ull << 1 };

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		hostile_msg(e, VU_SET_FEATURES, FF_VERSION, &f[i], 8, NULL, 0,
			    "did not offer");
	for (size_t i = 0; i < sizeof(pf) / sizeof(pf[0]); i++)
		hostile_msg(e, VU_SET_PROTOCOL_FEATURES, FF_VERSION, &pf[i], 8,
			    NULL, 0, "did not offer");
}

/*
 * A kick fd at EOF (a pipe whose writer closed) is readable forever; on a
 * level-triggered loop the device must either fail or stop watching it,
 * not run its kick handler on every pass (a frontend-controlled busy
 * loop: ebbd at 100% CPU).
 */
struct kick_counter {
	unsigned kicks, fails;
};

static void count_kick(void *opaque, struct vu_dev *dev, unsigned q)
{
	((struct kick_counter *)opaque)->kicks++;
}

static void count_fail(void *opaque, const char *why)
{
	((struct kick_counter *)opaque)->fails++;
}

static void get_config16(void *opaque, uint8_t *cfg)
{
	memset(cfg, 0, 16);
}

static const struct vu_dev_ops counting_ops = {
	.type = "test",
	.nqueues = 1,
	.config_len = 16,
	.get_config = get_config16,
	.queue_kick = count_kick,
	.failed = count_fail,
};

static void kick_fd_at_eof_does_not_spin(void **state)
{
	struct env *e = *state;
	struct kick_counter kc = { 0 };
	struct vu_dev *dev;
	struct ff f;
	struct ff_ring r;
	int sp[2], p[2], call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint64_t one = 1;
	unsigned before;

	assert_int_equal(vu_dev_new(e->loop, NULL, "spin/test", &counting_ops,
				    &kc, &dev), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(dev, sp[1]), 0);
	ff_init(&f, e->loop, sp[0]);
	ff_ring_init(&r, &e->a.m, NUM, RING(0));
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	ff_handshake(&f, &e->a.m, 1ull << VIRTIO_F_VERSION_1, &r, 1, &p[0],
		     &call);
	/* A real kick works. */
	before = kc.kicks;
	assert_int_equal(write(p[1], &one, 8), 8);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_int_equal(kc.kicks, before + 1);

	/* The writer goes away. */
	close(p[1]);
	before = kc.kicks;
	for (int i = 0; i < 50; i++)
		ff_pump(e->loop);
	victim_works(e);
	close(p[0]);
	close(call);
	ff_close(&f);
	vu_dev_free(dev);
	if (kc.fails == 0 && kc.kicks - before > 2)
		fail_msg("kick handler ran %u times in 50 loop passes on a "
			 "kick fd at EOF", kc.kicks - before);
}

/* ---- holding a frontend (prealloc) ------------------------------------- */

struct holder {
	struct vu_dev *dev;
	uint64_t token;
	int holds;		/* successful vu_dev_hold calls */
};

static void hold_on_mem_table(void *opaque)
{
	struct holder *h = opaque;

	if (vu_dev_hold(h->dev, &h->token) == 0)
		h->holds++;
}

static const struct vu_dev_ops holding_ops = {
	.type = "test",
	.nqueues = 1,
	.config_len = 16,
	.get_config = get_config16,
	.mem_table_set = hold_on_mem_table,
};

/* Bytes waiting on our end of the connection, without consuming them. */
static ssize_t pending(const struct ff *f)
{
	char c[64];
	ssize_t n = recv(f->fd, c, sizeof(c), MSG_PEEK | MSG_DONTWAIT);

	return n < 0 ? 0 : n;
}

static void set_up_holder(struct env *e, struct holder *h, struct ff *f)
{
	int sp[2];
	uint64_t pf = (1ull << VU_PF_REPLY_ACK);

	memset(h, 0, sizeof(*h));
	assert_int_equal(vu_dev_new(e->loop, NULL, "hold/test", &holding_ops,
				    h, &h->dev), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(h->dev, sp[1]), 0);
	ff_init(f, e->loop, sp[0]);
	assert_int_equal(ff_call(f, VU_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0), 0);
}

static void send_mem_table(struct ff *f, const struct ff_mem *m)
{
	uint8_t p[8 + 32] = { 0 };
	uint32_t n = 1;
	uint64_t r[4] = { m->gpa, m->bytes, m->gpa, m->off };

	memcpy(p, &n, 4);
	memcpy(p + 8, r, sizeof(r));
	assert_int_equal(ff_send(f, VU_SET_MEM_TABLE, FF_VERSION | FF_F_NEED_REPLY,
				 p, sizeof(p), &m->fd, 1), 0);
}

static void held_mem_table_is_acked_on_release(void **state)
{
	struct env *e = *state;
	struct holder h;
	struct ff f;
	uint64_t ack = 99, v;

	set_up_holder(e, &h, &f);
	send_mem_table(&f, &e->a.m);
	/* Queued behind the held message: must not be answered yet. */
	assert_int_equal(ff_send(&f, VU_GET_FEATURES, FF_VERSION, NULL, 0,
				 NULL, 0), 0);
	for (int i = 0; i < 20; i++)
		ff_pump(e->loop);
	assert_int_equal(h.holds, 1);
	assert_int_equal(pending(&f), 0);
	victim_works(e);	/* the loop serves everyone else meanwhile */

	vu_dev_release(h.dev, h.token, 0);
	assert_int_equal(ff_recv(&f, VU_SET_MEM_TABLE, &ack, sizeof(ack)), 8);
	assert_int_equal(ack, 0);
	assert_int_equal(ff_recv(&f, VU_GET_FEATURES, &v, sizeof(v)), 8);
	/* A second release is a no-op. */
	vu_dev_release(h.dev, h.token, 0);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_int_equal(pending(&f), 0);
	ff_close(&f);
	vu_dev_free(h.dev);
}

static void failed_release_acks_an_error(void **state)
{
	struct env *e = *state;
	struct holder h;
	struct ff f;
	uint64_t ack = 0;

	set_up_holder(e, &h, &f);
	send_mem_table(&f, &e->a.m);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	vu_dev_release(h.dev, h.token, -ENOMEM);
	assert_int_equal(ff_recv(&f, VU_SET_MEM_TABLE, &ack, sizeof(ack)), 8);
	assert_int_equal(ack, 1);
	ff_close(&f);
	vu_dev_free(h.dev);
}

static void release_after_the_frontend_left_is_harmless(void **state)
{
	struct env *e = *state;
	struct holder h;
	struct ff f, f2;
	int sp[2];

	set_up_holder(e, &h, &f);
	send_mem_table(&f, &e->a.m);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_int_equal(h.holds, 1);
	/* The guest dies while held: the hang-up is still noticed. */
	ff_close(&f);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_false(vu_dev_connected(h.dev));
	/* A new frontend connects; the old token must not touch it. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(h.dev, sp[1]), 0);
	ff_init(&f2, e->loop, sp[0]);
	vu_dev_release(h.dev, h.token, 0);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_int_equal(pending(&f2), 0);
	assert_true(vu_dev_connected(h.dev));
	ff_close(&f2);
	vu_dev_free(h.dev);
}

/* ---- hostile ring contents ------------------------------------------------ */

static void bad_pfns_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint32_t bad[] = {
		0,				/* below guest memory */
		pfn_of(GPA) - 1,
		pfn_of(GPA + MEM),		/* just past the end */
		0xffffffff,
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* A good pfn first: the bad one is found mid-buffer. */
		const uint32_t pfns[2] = { pfn_of(PAGES), bad[i] };

		reconnect(e, &e->a);
		handshake(&e->a);
		post_pfns(&e->a, Q_INFLATE, pfns, 2);
		expect_failed(e, "pfn outside guest memory");

		reconnect(e, &e->a);
		handshake(&e->a);
		post_pfns(&e->a, Q_DEFLATE, pfns, 2);
		expect_failed(e, "pfn outside guest memory");
	}
}

static void bad_pfn_buffers_fail_the_device(void **state)
{
	struct env *e = *state;
	const unsigned qs[] = { Q_INFLATE, Q_DEFLATE };

	for (size_t i = 0; i < 2; i++) {
		uint64_t a = BUF;
		uint32_t l;
		bool w = true;

		/* Not whole pfns. */
		for (size_t k = 0; k < 6; k++) {
			l = (uint32_t[]){ 1, 2, 3, 5, 6, 7 }[k];
			reconnect(e, &e->a);
			handshake(&e->a);
			memset(ff_mem_ptr(&e->a.m, BUF), 0, 8);
			post(&e->a, qs[i], 1, &a, &l, NULL);
			expect_failed(e, "not whole pfns");
		}
		/* Device-writable. */
		l = 4;
		reconnect(e, &e->a);
		handshake(&e->a);
		*(uint32_t *)ff_mem_ptr(&e->a.m, BUF) = pfn_of(PAGES);
		post(&e->a, qs[i], 1, &a, &l, &w);
		expect_failed(e, "writable");
	}
}

static void bad_reports_fail_the_device(void **state)
{
	struct env *e = *state;
	const struct {
		uint64_t gpa;
		uint32_t len;
		bool write;
	} bad[] = {
		{ PAGES, 4096, false },		/* readable */
		{ PAGES + 512, 4096, true },	/* unaligned start */
		{ PAGES, 6000, true },		/* not whole pages */
		{ PAGES, 0, true },		/* empty */
		{ PAGES + 2048, 2048, true },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t before;

		reconnect(e, &e->a);
		handshake(&e->a);
		before = ff_mem_allocated(&e->a.m);
		post(&e->a, Q_REPORT, 1, &bad[i].gpa, &bad[i].len, &bad[i].write);
		expect_failed(e, "reported range not whole writable pages");
		assert_int_equal(ff_mem_allocated(&e->a.m), before);
	}
}

static void bad_stats_fail_the_device(void **state)
{
	struct env *e = *state;
	const struct {
		uint32_t len;
		bool write;
		const char *why;
	} bad[] = {
		{ 15, false, "not a whole number of entries" },
		{ 9, false, "not a whole number of entries" },
		{ 650, false, "too large" },		/* 65 entries */
		{ 4096, false, "too large" },
		{ 10, true, "writable" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t a = BUF;

		reconnect(e, &e->a);
		handshake(&e->a);
		memset(ff_mem_ptr(&e->a.m, BUF), 0, 4096);
		post(&e->a, Q_STATS, 1, &a, &bad[i].len, &bad[i].write);
		expect_failed(e, bad[i].why);
	}
	/* 64 entries in two buffers add up past the limit too. */
	{
		uint64_t a[2] = { BUF, BUF + 640 };
		uint32_t l[2] = { 640, 10 };

		reconnect(e, &e->a);
		handshake(&e->a);
		post(&e->a, Q_STATS, 2, a, l, NULL);
		expect_failed(e, "too large");
	}
	/* Exactly 64 entries are fine. */
	{
		uint64_t a = BUF;
		uint32_t l = 640;
		struct balloon_info bi;

		reconnect(e, &e->a);
		handshake(&e->a);
		memset(ff_mem_ptr(&e->a.m, BUF), 0, 640);
		post(&e->a, Q_STATS, 1, &a, &l, NULL);
		for (int k = 0; k < 10; k++)
			ff_pump(e->loop);
		balloon_get_info(e->a.b, &bi);
		assert_false(vu_dev_is_failed(e->a.vu));
		assert_int_equal(bi.stats_valid, 1u << VIRTIO_BALLOON_S_SWAP_IN);
	}
}

static void buffer_on_an_unused_queue_fails_the_device(void **state)
{
	struct env *e = *state;
	uint64_t a = PAGES;
	uint32_t l = 4096;
	bool w = true;

	/* Without STATS_VQ and REPORTING only queues 0 and 1 exist. */
	reconnect(e, &e->a);
	handshake_features(&e->a, BALLOON_FEATURES & ~((1ull << F_STATS_VQ) |
						       (1ull << F_REPORTING)));
	post(&e->a, Q_REPORT, 1, &a, &l, &w);
	expect_failed(e, "queue the device does not use");
	/* Without STATS_VQ, queue 2 is the reporting queue. */
	reconnect(e, &e->a);
	handshake_features(&e->a, BALLOON_FEATURES & ~(1ull << F_STATS_VQ));
	post(&e->a, Q_STATS, 1, &a, &l, &w);
	for (int k = 0; k < 10; k++)
		ff_pump(e->loop);
	assert_false(vu_dev_is_failed(e->a.vu));
	assert_int_equal(ff_ring_used_idx(&e->a.r[Q_STATS]), 1);
}

static void malformed_ring_fails_the_device(void **state)
{
	struct env *e = *state;
	struct ff_ring *r;

	/* Head out of range. */
	handshake(&e->a);
	r = &e->a.r[Q_INFLATE];
	ff_ring_avail(r)->ring[0] = NUM;
	ff_ring_set_avail_idx(r, 1);
	kick(&e->a, Q_INFLATE);
	expect_failed(e, "avail ring entry out of range");
	/* A descriptor loop. */
	reconnect(e, &e->a);
	handshake(&e->a);
	r = &e->a.r[Q_DEFLATE];
	ff_ring_set(r, 0, BUF, 4, VRING_DESC_F_NEXT, 1);
	ff_ring_set(r, 1, BUF, 4, VRING_DESC_F_NEXT, 0);
	ff_ring_post(r, 0);
	kick(&e->a, Q_DEFLATE);
	expect_failed(e, "loops");
	/* A buffer outside memory, on the reporting queue. */
	reconnect(e, &e->a);
	handshake(&e->a);
	r = &e->a.r[Q_REPORT];
	ff_ring_set(r, 0, GPA + MEM, 4096, VRING_DESC_F_WRITE, 0);
	ff_ring_post(r, 0);
	kick(&e->a, Q_REPORT);
	expect_failed(e, "outside guest memory");
	/* The avail index racing more than a ring ahead. */
	reconnect(e, &e->a);
	handshake(&e->a);
	ff_ring_set_avail_idx(&e->a.r[Q_INFLATE], NUM + 1);
	kick(&e->a, Q_INFLATE);
	expect_failed(e, "avail index moved more than the ring size");
}

/*
 * A zero-length buffer on the stats queue is a legal (empty) report; the
 * device must not hand its NULL host pointer to memcpy (UBSan:
 * "null pointer passed as argument 2, which is declared to never be
 * null").  Last in the list: with halt_on_error UBSan stops the program.
 */
static void empty_stats_buffer_is_harmless(void **state)
{
	struct env *e = *state;
	uint64_t a = BUF;
	uint32_t l = 0;
	struct balloon_info bi;

	handshake(&e->a);
	post(&e->a, Q_STATS, 1, &a, &l, NULL);
	for (int k = 0; k < 10; k++)
		ff_pump(e->loop);
	balloon_get_info(e->a.b, &bi);
	assert_false(vu_dev_is_failed(e->a.vu));
	assert_int_equal(bi.stats_valid, 0);
	victim_works(e);
}

/* Under UBSan, a finding fails the program instead of scrolling past:
 * meson only sees exit codes.  Read by the sanitizer runtime if linked. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(handshake_is_acked_and_device_ready),
		T(offered_features_are_what_the_balloon_supports),
		T(inflate_punches_pages_in_runs),
		T(reported_ranges_are_punched),
		T(stats_are_recorded_and_unknown_tags_ignored),
		T(target_goes_through_the_backend_channel),
		T(split_messages_are_reassembled_without_blocking),
		T(unknown_requests_get_an_error_ack),
		T(listening_socket_serves_one_frontend_and_relistens),
		T(violation_is_logged_with_the_guests_name),
		T(oversized_payload_fails_the_device),
		T(wrong_payload_size_per_type_fails_the_device),
		T(bad_version_or_flags_fail_the_device),
		T(fd_count_violations_fail_the_device),
		T(ring_index_out_of_range_fails_the_device),
		T(ring_size_and_state_out_of_range_fail_the_device),
		T(ring_addresses_outside_memory_fail_the_device),
		T(bad_memory_tables_fail_the_device),
		T(unmappable_memory_table_leaves_no_dangling_ring),
		T(config_access_out_of_range_fails_the_device),
		T(unoffered_features_fail_the_device),
		T(kick_fd_at_eof_does_not_spin),
		T(bad_pfns_fail_the_device),
		T(bad_pfn_buffers_fail_the_device),
		T(bad_reports_fail_the_device),
		T(bad_stats_fail_the_device),
		T(buffer_on_an_unused_queue_fails_the_device),
		T(malformed_ring_fails_the_device),
		T(empty_stats_buffer_is_harmless),
		T(held_mem_table_is_acked_on_release),
		T(failed_release_acks_an_error),
		T(release_after_the_frontend_left_is_harmless),
	};

	/* As ebbd does: a vanished peer is an error code, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
