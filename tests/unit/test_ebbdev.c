/*
 * Tests for the ebb device (src/devices/ebbdev.h), driven by the fake
 * frontend over a real vhost-user connection with guest RAM in a memfd:
 * config and features, registering a table and discarding through it
 * (holes really punched in the RAM file), every malformed request
 * answered EBB_S_INVALID without touching the registration, features not
 * negotiated, malformed chains failing the device (and a new frontend
 * served after), and the table dropped whenever its mapping may go.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbdev.h"
#include "fake_frontend.h"
#include "log.h"
#include "loop.h"
#include "vhost_user.h"

#define MiB (1ull << 20)
#define GPA (2 * MiB)		/* guest memory starts at 2 MiB */
#define MEM (8 * MiB)
#define RING GPA		/* the request ring: three pages */
#define REQ (GPA + 64 * 1024)	/* request header */
#define STATUS (REQ + 4096)	/* status byte */
#define TABLE (GPA + 128 * 1024)	/* the page-state table */
#define FIRST_PFN (GPA / 4096)
#define NPAGES (MEM / 4096)
#define NUM 256
#define ALL_F ((1ull << EBB_F_PAGE_STATES) | (1ull << EBB_F_VOLATILE) | \
	       (1ull << VIRTIO_F_VERSION_1))

struct env {
	struct loop *loop;
	struct ff_mem m;
	struct ff_ring r;
	struct ff f;
	struct ebbdev *dev;
	int kick, call;
	unsigned failed_events;
	uint64_t returned_bytes;
	char why[128];
};

static void ev_failed(void *opaque, const char *why)
{
	struct env *e = opaque;

	e->failed_events++;
	snprintf(e->why, sizeof(e->why), "%s", why);
}

static void ev_returned(void *opaque, uint64_t bytes)
{
	struct env *e = opaque;

	e->returned_bytes += bytes;
}

static const struct ebbdev_events events = {
	.failed = ev_failed,
	.returned = ev_returned,
};

static void connect_with(struct env *e, uint64_t features)
{
	int sp[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(ebbdev_vu(e->dev), sp[1]), 0);
	ff_init(&e->f, e->loop, sp[0]);
	ff_ring_init(&e->r, &e->m, NUM, RING);
	ff_handshake_cfg(&e->f, &e->m, features, 8, &e->r, 1, &e->kick, &e->call);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	assert_int_equal(loop_new(&e->loop), 0);
	ff_mem_init(&e->m, GPA, GPA, MEM);
	e->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	e->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_int_equal(ebbdev_new(e->loop, NULL, "t/ebb", &events, e, &e->dev), 0);
	connect_with(e, ALL_F);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	ff_close(&e->f);
	ebbdev_free(e->dev);
	loop_free(e->loop);
	ff_mem_free(&e->m);
	close(e->kick);
	close(e->call);
	free(e);
	return 0;
}

static bool used_moved(void *arg)
{
	struct env *e = arg;

	return ff_ring_used_idx(&e->r) == e->r.avail_idx;
}

static void kick(struct env *e)
{
	uint64_t one = 1;

	assert_int_equal(write(e->kick, &one, 8), 8);
}

/* Send one well-formed request; returns its status byte. */
static uint8_t request(struct env *e, uint32_t type, uint32_t flags,
		       uint64_t table, uint64_t pfn, uint64_t npages)
{
	uint8_t *hdr = ff_mem_ptr(&e->m, REQ), *st = ff_mem_ptr(&e->m, STATUS);
	uint64_t addr[2] = { REQ, STATUS };
	uint32_t len[2] = { 32, 1 };
	bool wr[2] = { false, true };

	memcpy(hdr, &type, 4);	/* x86: little-endian already */
	memcpy(hdr + 4, &flags, 4);
	memcpy(hdr + 8, &table, 8);
	memcpy(hdr + 16, &pfn, 8);
	memcpy(hdr + 24, &npages, 8);
	*st = 0xee;
	ff_ring_post(&e->r, ff_ring_chain(&e->r, 2, addr, len, wr));
	kick(e);
	assert_true(ff_pump_until(e->loop, used_moved, e, 1000));
	assert_int_equal(ff_ring_used(&e->r)->ring[(uint16_t)(e->r.avail_idx - 1) % NUM].len, 1);
	return *st;
}

static uint8_t set_table(struct env *e)
{
	return request(e, EBB_REQ_SET_TABLE, 0, TABLE, FIRST_PFN, NPAGES);
}

static uint8_t *table(struct env *e)
{
	return ff_mem_ptr(&e->m, TABLE);
}

static void config_and_features(void **state)
{
	struct env *e = *state;
	uint8_t cfg[12 + 8] = { 0 }, got[sizeof(cfg)];
	uint32_t size = 8, v;
	uint64_t f;

	assert_int_equal(ff_get_u64(&e->f, VU_GET_FEATURES, &f), 0);
	assert_int_equal(f & ALL_F, ALL_F);
	memcpy(cfg + 4, &size, 4);
	assert_int_equal(ff_send(&e->f, VU_GET_CONFIG, FF_VERSION, cfg,
				 sizeof(cfg), NULL, 0), 0);
	assert_int_equal(ff_recv(&e->f, VU_GET_CONFIG, got, sizeof(got)),
			 (int)sizeof(got));
	memcpy(&v, got + 12, 4);
	assert_int_equal(v, 4096);
	memcpy(&v, got + 16, 4);
	assert_int_equal(v, EBB_TABLE_MAX_PAGES);
}

/* Register, mark pages unused, discard: holes in the file, entries
 * discarded, the rest untouched. */
static void registered_table_discards_into_the_file(void **state)
{
	struct env *e = *state;
	struct pagestate_pass p;
	struct ebbdev_info info;
	uint64_t c[PS_NSTATES + 1], before;
	/* Guest memory 2..10 MiB: pfns 512..2559; unused: 4..6 MiB (a whole
	 * block) and 12 pages after it; volatile: 8 pages at 7 MiB. */
	uint64_t unused0 = (4 * MiB - GPA) / 4096, vol0 = (7 * MiB - GPA) / 4096;

	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_ALL, PAGESTATE_HUGE,
					UINT64_MAX, &p), -ENODEV);
	assert_int_equal(set_table(e), EBB_S_OK);
	ebbdev_get_info(e->dev, &info);
	assert_true(info.table);
	assert_int_equal(info.npages, NPAGES);
	ff_mem_touch(&e->m);
	memset(table(e), PS_STABLE, NPAGES);
	memset(table(e) + unused0, PS_UNUSED, 512 + 12);
	memset(table(e) + vol0, PS_VOLATILE, 8);
	before = ff_mem_allocated(&e->m);

	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_UNUSED, PAGESTATE_HUGE,
					UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 512);
	assert_int_equal(p.punches, 1);
	assert_false(ff_mem_page_present(&e->m, 4 * MiB));
	assert_true(ff_mem_page_present(&e->m, 4 * MiB - 4096));
	assert_true(ff_mem_page_present(&e->m, 6 * MiB));
	assert_int_equal(before - ff_mem_allocated(&e->m), 2 * MiB);
	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_ALL,
					PAGESTATE_HUGE | PAGESTATE_SMALL,
					UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 20);
	assert_false(ff_mem_page_present(&e->m, 7 * MiB));
	assert_int_equal(before - ff_mem_allocated(&e->m), 2 * MiB + 20 * 4096);
	assert_int_equal(e->returned_bytes, 2 * MiB + 20 * 4096);
	assert_int_equal(ebbdev_count(e->dev, c), 0);
	assert_int_equal(c[PS_DISCARDED], 532);
	assert_int_equal(c[PS_STABLE], NPAGES - 532);
	ebbdev_get_info(e->dev, &info);
	assert_int_equal(info.ps.discarded_bytes, 532 * 4096);
	assert_int_equal(info.requests, 1);
	assert_int_equal(info.invalid, 0);
	/* The evictor finds nothing more to take. */
	assert_int_equal(ebbdev_evict(e->dev, PAGESTATE_ALL, 100, &p), 0);
	assert_int_equal(p.discarded_pages, 0);
}

/* Each malformed request: EBB_S_INVALID, the device goes on, and the
 * table registered before stays. */
static void malformed_requests_are_invalid(void **state)
{
	struct env *e = *state;
	struct ebbdev_info info;
	const struct {
		uint32_t type, flags;
		uint64_t table, pfn, npages;
	} bad[] = {
		{ 0, 0, TABLE, FIRST_PFN, NPAGES },		/* type 0 */
		{ 3, 0, TABLE, FIRST_PFN, NPAGES },		/* unknown type */
		{ 1, 1, TABLE, FIRST_PFN, NPAGES },		/* flags */
		{ 1, 0, TABLE, FIRST_PFN, 0 },			/* no pages */
		{ 1, 0, TABLE, FIRST_PFN, EBB_TABLE_MAX_PAGES + 1ull },
		{ 1, 0, 0, FIRST_PFN, NPAGES },			/* table below memory */
		{ 1, 0, GPA + MEM - 100, FIRST_PFN, 200 },	/* straddles the end */
		{ 1, 0, UINT64_MAX - 10, FIRST_PFN, 20 },	/* wraps */
		{ 1, 0, TABLE, FIRST_PFN - 1, NPAGES },		/* pfn below memory */
		{ 1, 0, TABLE, FIRST_PFN, NPAGES + 1 },		/* past the end */
		{ 1, 0, TABLE, UINT64_MAX / 4096, 16 },		/* pfn overflows */
		{ 1, 0, TABLE, UINT64_MAX - 2, 16 },		/* pfn wraps */
		{ 2, 0, TABLE, 0, 0 },				/* CLEAR with fields */
		{ 2, 0, 0, 0, 1 },
	};

	assert_int_equal(set_table(e), EBB_S_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t st = request(e, bad[i].type, bad[i].flags, bad[i].table,
				     bad[i].pfn, bad[i].npages);

		if (st != EBB_S_INVALID)
			fail_msg("case %zu: status %u", i, st);
		ebbdev_get_info(e->dev, &info);
		assert_true(info.table);
		assert_int_equal(info.first_pfn, FIRST_PFN);
		assert_int_equal(info.npages, NPAGES);
	}
	assert_int_equal(e->failed_events, 0);
	assert_false(vu_dev_is_failed(ebbdev_vu(e->dev)));
	ebbdev_get_info(e->dev, &info);
	assert_int_equal(info.requests, 1 + sizeof(bad) / sizeof(bad[0]));
	assert_int_equal(info.invalid, sizeof(bad) / sizeof(bad[0]));
	/* A smaller table replaces the first; CLEAR drops it. */
	assert_int_equal(request(e, EBB_REQ_SET_TABLE, 0, TABLE, FIRST_PFN + 512,
				 512), EBB_S_OK);
	ebbdev_get_info(e->dev, &info);
	assert_int_equal(info.first_pfn, FIRST_PFN + 512);
	assert_int_equal(request(e, EBB_REQ_CLEAR_TABLE, 0, 0, 0, 0), EBB_S_OK);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.table);
}

static void features_not_negotiated(void **state)
{
	struct env *e = *state;
	struct pagestate_pass p;
	struct ebbdev_info info;

	ff_close(&e->f);
	ff_pump(e->loop);
	connect_with(e, 1ull << VIRTIO_F_VERSION_1);
	assert_int_equal(set_table(e), EBB_S_UNSUPPORTED);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.table);

	/* PAGE_STATES without VOLATILE: volatile entries are not ours. */
	ff_close(&e->f);
	ff_pump(e->loop);
	connect_with(e, (1ull << VIRTIO_F_VERSION_1) | (1ull << EBB_F_PAGE_STATES));
	assert_int_equal(set_table(e), EBB_S_OK);
	memset(table(e), PS_VOLATILE, NPAGES);
	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_ALL,
					PAGESTATE_HUGE | PAGESTATE_SMALL,
					UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 0);
	table(e)[5] = PS_UNUSED;
	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_ALL, PAGESTATE_SMALL,
					UINT64_MAX, &p), 0);
	assert_int_equal(p.discarded_pages, 1);
}

static bool disconnected(void *arg)
{
	struct env *e = arg;

	return !vu_dev_connected(ebbdev_vu(e->dev));
}

/* Post a hand-built chain; expect the device to fail, drop the table, and
 * serve a new frontend afterwards. */
static void expect_chain_fails(struct env *e, unsigned n, const uint64_t *addr,
			       const uint32_t *len, const bool *wr,
			       const char *why)
{
	struct ebbdev_info info;

	assert_int_equal(set_table(e), EBB_S_OK);
	e->failed_events = 0;
	ff_ring_post(&e->r, ff_ring_chain(&e->r, n, addr, len, wr));
	kick(e);
	assert_true(ff_pump_until(e->loop, disconnected, e, 1000));
	assert_int_equal(e->failed_events, 1);
	if (!strstr(e->why, why))
		fail_msg("failed for \"%s\", expected \"%s\"", e->why, why);
	ebbdev_get_info(e->dev, &info);
	assert_true(info.failed);
	assert_false(info.table);
	ff_close(&e->f);
	connect_with(e, ALL_F);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.failed);
	assert_int_equal(set_table(e), EBB_S_OK);
}

static void malformed_chains_fail_the_device(void **state)
{
	struct env *e = *state;
	const uint64_t a2[2] = { REQ, STATUS }, a3[3] = { REQ, REQ + 16, STATUS };
	const uint64_t a3w[3] = { REQ, STATUS, STATUS + 1 };
	const uint32_t short_req[2] = { 31, 1 }, long_req[2] = { 33, 1 };
	const uint32_t big_status[2] = { 32, 2 }, split[3] = { 16, 16, 1 };
	const uint32_t two_status[3] = { 32, 1, 1 };
	const bool rw[2] = { false, true }, rr[2] = { false, false };
	const bool rrw[3] = { false, false, true }, rww[3] = { false, true, true };
	const uint32_t only[1] = { 32 };
	const bool r1[1] = { false };

	expect_chain_fails(e, 2, a2, short_req, rw, "shorter than 32");
	expect_chain_fails(e, 2, a2, long_req, rw, "longer than 32");
	expect_chain_fails(e, 2, a2, big_status, rw, "one writable status byte");
	expect_chain_fails(e, 2, a2, short_req, rr, "one writable status byte");
	expect_chain_fails(e, 2, a2, long_req, rr, "longer than 32");
	expect_chain_fails(e, 1, a2, only, r1, "one writable status byte");
	expect_chain_fails(e, 3, a3w, two_status, rww, "one writable status byte");
	/* A request split over two readable buffers is well formed. */
	{
		uint8_t *st = ff_mem_ptr(&e->m, STATUS);

		*st = 0xee;
		ff_ring_post(&e->r, ff_ring_chain(&e->r, 3, a3, split, rrw));
		kick(e);
		assert_true(ff_pump_until(e->loop, used_moved, e, 1000));
		assert_int_equal(*st, EBB_S_OK);
	}
}

/* fuzz_ebbdev: an empty readable buffer (here at guest address 0, outside
 * guest memory) reached memcpy with a NULL source, undefined even for 0
 * bytes.  It adds nothing to the request: the chain is well formed. */
static void empty_readable_buffer_adds_nothing(void **state)
{
	struct env *e = *state;
	const uint64_t addr[3] = { 0, REQ, STATUS };
	const uint32_t len[3] = { 0, 32, 1 };
	const bool wr[3] = { false, false, true };
	uint8_t *hdr = ff_mem_ptr(&e->m, REQ), *st = ff_mem_ptr(&e->m, STATUS);
	uint32_t type = EBB_REQ_CLEAR_TABLE;
	struct ebbdev_info info;

	memset(hdr, 0, 32);
	memcpy(hdr, &type, 4);
	*st = 0xee;
	ff_ring_post(&e->r, ff_ring_chain(&e->r, 3, addr, len, wr));
	kick(e);
	assert_true(ff_pump_until(e->loop, used_moved, e, 1000));
	assert_int_equal(*st, EBB_S_OK);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.failed);
}

/* The table points into the device's mapping: every event that may end
 * that mapping or the registration drops it. */
static void table_dropped_when_its_mapping_may_go(void **state)
{
	struct env *e = *state;
	struct pagestate_pass p;
	struct ebbdev_info info;

	assert_int_equal(set_table(e), EBB_S_OK);
	assert_int_equal(ff_mem_table(&e->f, &e->m), 0);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.table);
	assert_int_equal(ebbdev_discard(e->dev, PAGESTATE_ALL, PAGESTATE_SMALL,
					1, &p), -ENODEV);

	assert_int_equal(set_table(e), EBB_S_OK);
	assert_int_equal(ff_send(&e->f, VU_RESET_OWNER, FF_VERSION, NULL, 0,
				 NULL, 0), 0);
	ff_pump(e->loop);
	ebbdev_get_info(e->dev, &info);
	assert_false(info.table);
	ff_close(&e->f);
	ff_pump(e->loop);
	connect_with(e, ALL_F);

	assert_int_equal(set_table(e), EBB_S_OK);
	ff_close(&e->f);
	assert_true(ff_pump_until(e->loop, disconnected, e, 1000));
	ebbdev_get_info(e->dev, &info);
	assert_false(info.table);
	assert_false(info.ready);
	assert_int_equal(ebbdev_evict(e->dev, PAGESTATE_ALL, 1, &p), -ENODEV);
	connect_with(e, ALL_F);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(config_and_features),
		T(registered_table_discards_into_the_file),
		T(malformed_requests_are_invalid),
		T(features_not_negotiated),
		T(malformed_chains_fail_the_device),
		T(empty_readable_buffer_adds_nothing),
		T(table_dropped_when_its_mapping_may_go),
	};

	log_set_level(LOG_ERR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
