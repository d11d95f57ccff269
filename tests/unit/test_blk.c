/*
 * Tests for the virtio-blk device, driven by the fake frontend
 * (fake_frontend.c) over a real vhost-user connection, with guest RAM in a
 * memfd, the request ring laid out in it, and storage in a real in-memory
 * backend (struct membe below: a malloc'd disk implementing blkback_ops,
 * which fails on demand and asserts the device kept blkback's promises:
 * sector-aligned, in-range offsets and lengths).
 *
 * Every test runs two devices on one loop: "victim" (side b), healthy and
 * set up by the fixture, and the device under test (side a), opened by
 * each test with the backend and parameters it needs.  Requests are built
 * as a guest would, with each descriptor at its own scattered guest
 * address, writable buffers pre-filled with 0xee so the test sees exactly
 * which bytes the device wrote.
 *
 * A request-level error must give a status (checked), a used length
 * (checked), leave the backend untouched where nothing may be done, and
 * leave the device serving (the next request is checked).  A chain with
 * no header or no status byte must fail the device, and only it: the
 * victim then still does a write/read roundtrip, and the failed device
 * accepts a new frontend and serves it.
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
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "blk.h"
#include "blkback.h"
#include "fake_frontend.h"
#include "log.h"
#include "loop.h"
#include "vhost_user.h"

#define MiB (1ull << 20)
#define GPA (1 * MiB)		/* guest memory starts at 1 MiB, as in UML */
#define MEM (8 * MiB)
#define RING GPA		/* the request ring: three pages */
#define SCRATCH (GPA + 64 * 1024)	/* request buffers from here on */
#define NUM 256			/* UML's ring size */
#define CAP (4 * MiB)		/* disk size */
#define CAP_SECTORS (CAP / 512)
#define SERIAL "ebb-test-serial"
#define DWZ_MAX 64		/* max_discard_sectors of the segment-list tests */

/* Wire values (virtio 1.x 5.2), spelled out so tests read as the spec. */
#define F_SIZE_MAX 1
#define F_SEG_MAX 2
#define F_RO 5
#define F_BLK_SIZE 6
#define F_FLUSH 9
#define F_TOPOLOGY 10
#define F_MQ 12
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define F_INDIRECT 28
#define F_EVENT_IDX 29

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_GET_LIFETIME 10
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define T_SECURE_ERASE 14

#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define UNWRITTEN 0xee		/* what writable buffers hold beforehand */

#define BASE_FEATURES ((1ull << VIRTIO_F_VERSION_1) | \
		       (1ull << VU_F_PROTOCOL_FEATURES) | \
		       (1ull << F_SIZE_MAX) | (1ull << F_SEG_MAX) | \
		       (1ull << F_BLK_SIZE))
#define FULL_FEATURES (BASE_FEATURES | (1ull << F_FLUSH) | \
		       (1ull << F_DISCARD) | (1ull << F_WRITE_ZEROES))

/* ---- the in-memory backend ------------------------------------------------ */

enum { OP_READ, OP_WRITE, OP_FLUSH, OP_DISCARD, OP_WZ, OP_NR };

struct membe {
	uint8_t *disk;		/* CAP bytes */
	uint64_t cap;
	unsigned calls[OP_NR];	/* every call, failed or not */
	int fail[OP_NR];	/* the next call of each op returns this */
	uint64_t last_off, last_len;	/* of the last call with a range */
	bool last_unmap;	/* of the last write_zeroes */
	unsigned *destroyed;	/* counts destroy calls, outlives us */
};

static uint64_t iov_bytes(const struct iovec *iov, unsigned n)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++)
		sum += iov[i].iov_len;
	return sum;
}

/* blkback's promise: whole sectors, inside the capacity. */
static void check_range(struct membe *m, uint64_t off, uint64_t len)
{
	assert_int_equal(off % 512, 0);
	assert_int_equal(len % 512, 0);
	assert_true(off <= m->cap && len <= m->cap - off);
	m->last_off = off;
	m->last_len = len;
}

static int take_fail(struct membe *m, int op)
{
	int rc = m->fail[op];

	m->calls[op]++;
	m->fail[op] = 0;
	return rc;
}

static int mb_read(void *be, uint64_t off, const struct iovec *iov,
		   unsigned n)
{
	struct membe *m = be;
	int rc = take_fail(m, OP_READ);
	uint8_t *p = m->disk + off;

	check_range(m, off, iov_bytes(iov, n));
	assert_true(n > 0);
	if (rc) {
		/* A real disk may have filled part of the buffers. */
		memset(iov[0].iov_base, 0xab, iov[0].iov_len);
		return rc;
	}
	for (unsigned i = 0; i < n; i++) {
		memcpy(iov[i].iov_base, p, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	return 0;
}

static int mb_write(void *be, uint64_t off, const struct iovec *iov,
		    unsigned n)
{
	struct membe *m = be;
	int rc = take_fail(m, OP_WRITE);
	uint8_t *p = m->disk + off;

	check_range(m, off, iov_bytes(iov, n));
	assert_true(n > 0);
	if (rc)
		return rc;
	for (unsigned i = 0; i < n; i++) {
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	return 0;
}

static int mb_flush(void *be)
{
	return take_fail(be, OP_FLUSH);
}

static int mb_discard(void *be, uint64_t off, uint64_t len)
{
	struct membe *m = be;
	int rc = take_fail(m, OP_DISCARD);

	check_range(m, off, len);
	assert_true(len > 0);
	if (rc)
		return rc;
	memset(m->disk + off, 0, len);	/* one of the two allowed results */
	return 0;
}

static int mb_write_zeroes(void *be, uint64_t off, uint64_t len,
			   bool may_unmap)
{
	struct membe *m = be;
	int rc = take_fail(m, OP_WZ);

	check_range(m, off, len);
	assert_true(len > 0);
	m->last_unmap = may_unmap;
	if (rc)
		return rc;
	memset(m->disk + off, 0, len);
	return 0;
}

static void mb_destroy(void *be)
{
	struct membe *m = be;

	(*m->destroyed)++;
	free(m->disk);
	free(m);
}

static const struct blkback_ops full_ops = {
	.read = mb_read,
	.write = mb_write,
	.flush = mb_flush,
	.discard = mb_discard,
	.write_zeroes = mb_write_zeroes,
	.destroy = mb_destroy,
};

/* Only what a backend must have. */
static const struct blkback_ops minimal_ops = {
	.read = mb_read,
	.write = mb_write,
	.destroy = mb_destroy,
};

static const struct blkback_ops read_only_ops = {
	.read = mb_read,
	.destroy = mb_destroy,
};

/* ---- one device and its frontend -------------------------------------------- */

struct opts {
	const struct blkback_ops *ops;	/* NULL: full_ops */
	bool read_only;
	const char *serial;		/* NULL: SERIAL */
	struct blk_params p;
};

struct side {
	const char *name;
	struct blk *b;		/* NULL when not open */
	struct vu_dev *vu;
	struct membe *be;	/* the device's backend, valid while open */
	unsigned destroyed;	/* mb_destroy calls */
	struct ff f;
	struct ff_mem m;
	struct ff_ring r;
	int kick, call;		/* eventfds; ours, the device gets dups */
	uint64_t next_gpa;	/* bump allocator in SCRATCH */
	unsigned failed_events;
	char why[256];
	uint64_t seed;		/* this side's random stream */
};

struct env {
	struct loop *loop;
	struct side a, b;	/* under test, victim */
	unsigned fds_at_start;
};

static uint32_t rnd(struct side *s)
{
	/* xorshift64: reproducible, and enough for picking splits. */
	s->seed ^= s->seed << 13;
	s->seed ^= s->seed >> 7;
	s->seed ^= s->seed << 17;
	return (uint32_t)(s->seed >> 16);
}

static void ev_failed(void *opaque, const char *why)
{
	struct side *s = opaque;

	s->failed_events++;
	snprintf(s->why, sizeof(s->why), "%s", why);
}

static const struct blk_events events = { .failed = ev_failed };

static struct membe *membe_new(struct side *s)
{
	struct membe *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	m->disk = calloc(1, CAP);
	assert_non_null(m->disk);
	m->cap = CAP;
	m->destroyed = &s->destroyed;
	return m;
}

static void attach(struct env *e, struct side *s)
{
	int sp[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(vu_dev_attach(s->vu, sp[1]), 0);
	ff_init(&s->f, e->loop, sp[0]);
	ff_ring_init(&s->r, &s->m, NUM, RING);
	s->failed_events = 0;
	s->why[0] = 0;
}

static uint64_t offered(struct side *s)
{
	uint64_t v;

	assert_int_equal(ff_get_u64(&s->f, VU_GET_FEATURES, &v), 0);
	return v;
}

/* The UML handshake, accepting everything offered. */
static void handshake(struct side *s)
{
	ff_handshake(&s->f, &s->m, offered(s), &s->r, 1, &s->kick, &s->call);
}

static void side_open(struct env *e, struct side *s, const struct opts *o)
{
	struct opts def = { 0 };
	struct blkback back = { 0 };

	if (!o)
		o = &def;
	s->be = membe_new(s);
	back.ops = o->ops ? o->ops : &full_ops;
	back.be = s->be;
	back.capacity_bytes = CAP;
	back.read_only = o->read_only;
	snprintf(back.serial, sizeof(back.serial), "%s",
		 o->serial ? o->serial : SERIAL);
	assert_int_equal(blk_new(e->loop, NULL, s->name, &back, &o->p, &events,
				 s, &s->b), 0);
	s->vu = blk_vu(s->b);
	attach(e, s);
	handshake(s);
}

static void side_close(struct side *s)
{
	if (s->b) {
		unsigned before = s->destroyed;

		blk_free(s->b);
		assert_int_equal(s->destroyed, before + 1);
	}
	s->b = NULL;
	s->be = NULL;
	ff_close(&s->f);
}

static void side_init(struct side *s, const char *name, uint64_t seed)
{
	s->name = name;
	s->seed = seed;
	s->f.fd = -1;
	s->f.backend_peer = -1;
	ff_mem_init(&s->m, GPA, 0, MEM);
	s->kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->call = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(s->kick >= 0 && s->call >= 0);
}

static void side_free(struct side *s)
{
	side_close(s);
	ff_mem_free(&s->m);
	close(s->kick);
	close(s->call);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	e->fds_at_start = ff_count_fds();
	assert_int_equal(loop_new(&e->loop), 0);
	side_init(&e->a, "dut/blk", 0x9e3779b97f4a7c15ull);
	side_init(&e->b, "victim/blk", 0x2545f4914f6cdd1dull);
	side_open(e, &e->b, NULL);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	unsigned at_start = e->fds_at_start, fds;

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

/* ---- building requests --------------------------------------------------------- */

/* A chain under construction, driver side. */
struct chain {
	unsigned n;
	uint64_t addr[NUM];
	uint32_t len[NUM];
	bool write[NUM];
};

/* Guest memory for one buffer, at a scattered, unaligned address. */
static uint64_t guest_alloc(struct side *s, uint32_t len)
{
	uint64_t gpa;

	if (s->next_gpa < SCRATCH)
		s->next_gpa = SCRATCH;
	gpa = s->next_gpa + rnd(s) % 64;
	assert_true(gpa + len <= GPA + MEM);
	s->next_gpa = gpa + len;
	return gpa;
}

/* Append one buffer: @src for a readable one, UNWRITTEN for a writable. */
static void chain_add(struct side *s, struct chain *c, const void *src,
		      uint32_t len, bool write)
{
	uint64_t gpa = guest_alloc(s, len);

	assert_true(c->n < NUM);
	if (len) {
		if (write)
			memset(ff_mem_ptr(&s->m, gpa), UNWRITTEN, len);
		else
			memcpy(ff_mem_ptr(&s->m, gpa), src, len);
	}
	c->addr[c->n] = gpa;
	c->len[c->n] = len;
	c->write[c->n] = write;
	c->n++;
}

/* Append @len bytes as the buffers @pieces (summing to @len). */
static void chain_add_split(struct side *s, struct chain *c, const void *src,
			    uint32_t len, bool write, const uint32_t *pieces,
			    unsigned npieces)
{
	const uint8_t *p = src;
	uint32_t done = 0;

	for (unsigned i = 0; i < npieces; i++) {
		chain_add(s, c, p ? p + done : NULL, pieces[i], write);
		done += pieces[i];
	}
	assert_int_equal(done, len);
}

/* Gather the writable bytes of a completed chain. */
static void chain_gather(struct side *s, const struct chain *c, uint8_t *out)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (!c->write[i] || !c->len[i])
			continue;
		memcpy(out, ff_mem_ptr(&s->m, c->addr[i]), c->len[i]);
		out += c->len[i];
	}
}

static void kick(struct side *s)
{
	uint64_t one = 1;

	assert_int_equal(write(s->kick, &one, 8), 8);
}

static void post(struct side *s, const struct chain *c)
{
	ff_ring_post(&s->r, ff_ring_chain(&s->r, c->n, c->addr, c->len,
					  c->write));
}

static bool ring_drained(void *arg)
{
	struct side *s = arg;

	return ff_ring_used_idx(&s->r) == s->r.avail_idx;
}

static void wait_used(struct env *e, struct side *s)
{
	assert_true(ff_pump_until(e->loop, ring_drained, s, 1000));
}

/* Used length of the @back-th most recent used entry (1 = last). */
static uint32_t used_len(struct side *s, unsigned back)
{
	uint16_t idx = (uint16_t)(ff_ring_used_idx(&s->r) - back);

	return ff_ring_used(&s->r)->ring[idx % NUM].len;
}

/* Interrupts the device sent since the last call. */
static uint64_t interrupts(struct side *s)
{
	uint64_t v;

	if (read(s->call, &v, 8) != 8)
		return 0;
	return v;
}

static void put_hdr(uint8_t *h, uint32_t type, uint32_t reserved,
		    uint64_t sector)
{
	memcpy(h, &type, 4);
	memcpy(h + 4, &reserved, 4);
	memcpy(h + 8, &sector, 8);
}

/* One request as a guest lays it out, and what came back. */
struct req {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
	const void *out;	/* out-data after the header */
	uint32_t out_len;
	uint32_t in_len;	/* in-data before the status */
	/* Splits of the readable stream (header + out-data) and of the
	 * writable one (in-data + status); NULL: Linux's layout, header,
	 * data and status each in their own buffer. */
	const uint32_t *rsplit;
	unsigned nr;
	const uint32_t *wsplit;
	unsigned nw;
	/* Results. */
	uint8_t status;
	uint32_t used;
	uint8_t *in;		/* in_len bytes, if the caller wants them */
};

static void build(struct side *s, struct chain *c, const struct req *r)
{
	uint32_t rlen = 16 + r->out_len, wlen = r->in_len + 1;
	uint8_t *rs = malloc(rlen);

	assert_non_null(rs);
	put_hdr(rs, r->type, r->reserved, r->sector);
	if (r->out_len)
		memcpy(rs + 16, r->out, r->out_len);
	if (r->rsplit) {
		chain_add_split(s, c, rs, rlen, false, r->rsplit, r->nr);
	} else {
		chain_add(s, c, rs, 16, false);
		if (r->out_len)
			chain_add(s, c, rs + 16, r->out_len, false);
	}
	if (r->wsplit) {
		chain_add_split(s, c, NULL, wlen, true, r->wsplit, r->nw);
	} else {
		if (r->in_len)
			chain_add(s, c, NULL, r->in_len, true);
		chain_add(s, c, NULL, 1, true);
	}
	free(rs);
}

/* Post @r alone, wait for it, and fill in its results. */
static void submit(struct env *e, struct side *s, struct req *r)
{
	struct chain c = { 0 };
	uint8_t *w = malloc(r->in_len + 1);

	assert_non_null(w);
	s->next_gpa = SCRATCH;
	build(s, &c, r);
	interrupts(s);
	post(s, &c);
	kick(s);
	wait_used(e, s);
	assert_int_equal(interrupts(s), 1);
	chain_gather(s, &c, w);
	r->status = w[r->in_len];
	r->used = used_len(s, 1);
	if (r->in)
		memcpy(r->in, w, r->in_len);
	free(w);
}

static uint8_t do_write(struct env *e, struct side *s, uint64_t sector,
			const void *data, uint32_t len)
{
	struct req r = { .type = T_OUT, .sector = sector, .out = data,
			 .out_len = len };

	submit(e, s, &r);
	assert_int_equal(r.used, 1);
	return r.status;
}

static uint8_t do_read(struct env *e, struct side *s, uint64_t sector,
		       void *data, uint32_t len)
{
	struct req r = { .type = T_IN, .sector = sector, .in_len = len,
			 .in = data };

	submit(e, s, &r);
	assert_int_equal(r.used, r.status == S_OK ? len + 1 : 1);
	return r.status;
}

static void fill_random(struct side *s, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rnd(s);
}

/* The device serves: a random sector round-trips and the disk holds it. */
static void serves(struct env *e, struct side *s)
{
	uint8_t out[1024], in[1024];
	uint64_t sector = rnd(s) % (CAP_SECTORS - 2);

	assert_false(vu_dev_is_failed(s->vu));
	fill_random(s, out, sizeof(out));
	assert_int_equal(do_write(e, s, sector, out, sizeof(out)), S_OK);
	assert_memory_equal(s->be->disk + sector * 512, out, sizeof(out));
	assert_int_equal(do_read(e, s, sector, in, sizeof(in)), S_OK);
	assert_memory_equal(in, out, sizeof(out));
}

static void victim_works(struct env *e)
{
	struct blk_info bi;

	serves(e, &e->b);
	blk_get_info(e->b.b, &bi);
	assert_false(bi.failed);
	assert_int_equal(e->b.failed_events, 0);
}

/* A request-level error: the status, nothing else harmed. */
static void expect_status(struct env *e, struct side *s, struct req *r,
			  uint8_t status)
{
	submit(e, s, r);
	if (r->status != status)
		fail_msg("request type %u sector %llu: status %u, want %u",
			 r->type, (unsigned long long)r->sector, r->status,
			 status);
	assert_false(vu_dev_is_failed(s->vu));
	assert_int_equal(s->failed_events, 0);
}

static void expect_ioerr(struct env *e, struct side *s, struct req *r)
{
	expect_status(e, s, r, S_IOERR);
	assert_int_equal(r->used, 1);
}

static bool disconnected(void *arg)
{
	return !vu_dev_connected(((struct side *)arg)->vu);
}

/* The device under test failed for a reason containing @why; the victim
 * is untouched; a new frontend gets a healthy device. */
static void expect_failed(struct env *e, const char *why)
{
	struct side *s = &e->a;
	struct blk_info bi;

	assert_true(ff_wait_closed(&s->f));
	assert_true(vu_dev_is_failed(s->vu));
	assert_false(vu_dev_connected(s->vu));
	assert_int_equal(s->failed_events, 1);
	if (why && !strstr(s->why, why))
		fail_msg("failed for \"%s\", expected \"%s\"", s->why, why);
	blk_get_info(s->b, &bi);
	assert_true(bi.failed);
	assert_false(bi.connected);
	assert_false(bi.ready);
	victim_works(e);

	ff_close(&s->f);
	assert_true(ff_pump_until(e->loop, disconnected, s, 1000));
	attach(e, s);
	handshake(s);
	assert_false(vu_dev_is_failed(s->vu));
	serves(e, s);
}

/* Post a hand-built chain on the device under test and expect failure. */
static void hostile(struct env *e, struct chain *c, const char *why)
{
	post(&e->a, c);
	kick(&e->a);
	expect_failed(e, why);
}

static uint64_t sum_calls(const struct membe *m)
{
	uint64_t n = 0;

	for (int i = 0; i < OP_NR; i++)
		n += m->calls[i];
	return n;
}

/* ---- config space and features ------------------------------------------------ */

static uint32_t cfg32(const uint8_t *c, size_t off)
{
	uint32_t v;

	memcpy(&v, c + off, 4);
	return v;
}

static uint16_t cfg16(const uint8_t *c, size_t off)
{
	uint16_t v;

	memcpy(&v, c + off, 2);
	return v;
}

/* The whole config space, as QEMU reads it (offset 0, every byte). */
static void get_config(struct side *s, uint8_t *cfg, uint32_t len)
{
	uint8_t msg[12 + 256] = { 0 }, got[12 + 256];

	assert_true(len <= 256);
	memcpy(msg + 4, &len, 4);
	assert_int_equal(ff_send(&s->f, VU_GET_CONFIG, FF_VERSION, msg,
				 12 + len, NULL, 0), 0);
	assert_int_equal(ff_recv(&s->f, VU_GET_CONFIG, got, sizeof(got)),
			 (int)(12 + len));
	memcpy(cfg, got + 12, len);
}

static void config_and_features_with_every_op(void **state)
{
	struct env *e = *state;
	struct opts o = { .p = { .block_size = 4096 } };
	uint8_t c[60];
	uint64_t cap;
	struct blk_info bi;

	side_open(e, &e->a, &o);
	assert_int_equal(offered(&e->a), FULL_FEATURES);
	assert_int_equal(vu_dev_features(e->a.vu), FULL_FEATURES);
	blk_get_info(e->a.b, &bi);
	assert_true(bi.connected);
	assert_true(bi.ready);
	assert_false(bi.failed);
	assert_int_equal(bi.features, FULL_FEATURES);

	get_config(&e->a, c, sizeof(c));
	memcpy(&cap, c, 8);
	assert_int_equal(cap, CAP_SECTORS);
	assert_int_equal(cfg32(c, 8), BLK_SIZE_MAX);	/* size_max */
	assert_int_equal(cfg32(c, 12), BLK_SEG_MAX_DEFAULT);	/* seg_max */
	assert_int_equal(cfg32(c, 16), 0);		/* geometry */
	assert_int_equal(cfg32(c, 20), 4096);		/* blk_size */
	assert_int_equal(cfg32(c, 24), 0);		/* topology */
	assert_int_equal(cfg32(c, 28), 0);
	assert_int_equal(c[32], 0);			/* writeback */
	assert_int_equal(c[33], 0);			/* unused0 */
	assert_int_equal(cfg16(c, 34), 1);		/* num_queues */
	assert_int_equal(cfg32(c, 36), BLK_DISCARD_SECTORS_DEFAULT);
	assert_int_equal(cfg32(c, 40), BLK_DISCARD_SEG_MAX);
	assert_int_equal(cfg32(c, 44), 8);		/* 4 KiB granule */
	assert_int_equal(cfg32(c, 48), BLK_DISCARD_SECTORS_DEFAULT);
	assert_int_equal(cfg32(c, 52), BLK_DISCARD_SEG_MAX);
	assert_int_equal(c[56], 1);			/* may unmap */
	assert_int_equal(c[57] | c[58] | c[59], 0);	/* unused1 */
	/* UML reads [0, off + len) and picks its field out. */
	get_config(&e->a, c, 24);
	assert_int_equal(cfg32(c, 20), 4096);
	victim_works(e);
}

static void config_and_features_of_a_minimal_backend(void **state)
{
	struct env *e = *state;
	struct opts o = { .ops = &minimal_ops };
	uint8_t c[60];
	static const uint8_t zeros[24];

	side_open(e, &e->a, &o);
	assert_int_equal(offered(&e->a), BASE_FEATURES);
	get_config(&e->a, c, sizeof(c));
	assert_int_equal(cfg32(c, 20), 512);
	assert_memory_equal(c + 36, zeros, 24);	/* discard, write zeroes */
	serves(e, &e->a);
}

static void config_and_features_of_a_read_only_disk(void **state)
{
	struct env *e = *state;
	/* Discard ops present but the disk is read-only: neither offered. */
	struct opts o = { .read_only = true };
	uint8_t c[60];
	static const uint8_t zeros[24];

	side_open(e, &e->a, &o);
	assert_int_equal(offered(&e->a),
			 BASE_FEATURES | (1ull << F_RO) | (1ull << F_FLUSH));
	get_config(&e->a, c, sizeof(c));
	assert_memory_equal(c + 36, zeros, 24);
	side_close(&e->a);

	/* A read-only backend needs no write op. */
	o.ops = &read_only_ops;
	side_open(e, &e->a, &o);
	assert_int_equal(offered(&e->a), BASE_FEATURES | (1ull << F_RO));
}

static void topology_names_the_physical_block(void **state)
{
	struct env *e = *state;
	struct opts o = { .p = { .block_size = 512, .phys_block_size = 4096,
				 .seg_max = 30, .max_discard_sectors = 2048 } };
	uint8_t c[60];

	side_open(e, &e->a, &o);
	assert_int_equal(offered(&e->a), FULL_FEATURES | (1ull << F_TOPOLOGY));
	get_config(&e->a, c, sizeof(c));
	assert_int_equal(cfg32(c, 12), 30);
	assert_int_equal(cfg32(c, 20), 512);
	assert_int_equal(c[24], 3);		/* 8 logical per physical */
	assert_int_equal(c[25], 0);		/* alignment_offset */
	assert_int_equal(cfg16(c, 26), 8);	/* min_io_size */
	assert_int_equal(cfg32(c, 28), 0);	/* opt_io_size */
	assert_int_equal(cfg32(c, 36), 2048);
	assert_int_equal(cfg32(c, 44), 8);
	assert_int_equal(cfg32(c, 48), 2048);
}

static void no_indirect_event_idx_or_mq(void **state)
{
	struct env *e = *state;
	uint64_t v;

	side_open(e, &e->a, NULL);
	v = offered(&e->a);
	assert_int_equal(v & ((1ull << F_INDIRECT) | (1ull << F_EVENT_IDX) |
			      (1ull << F_MQ)), 0);
	assert_int_equal(ff_get_u64(&e->a.f, VU_GET_QUEUE_NUM, &v), 0);
	assert_int_equal(v, 1);
	/* Config writes (writeback) are refused, not obeyed or fatal. */
	{
		uint8_t set[12 + 1] = { 0 };
		uint32_t off = 32, len = 1;

		memcpy(set, &off, 4);
		memcpy(set + 4, &len, 4);
		set[12] = 1;
		assert_int_equal(ff_call(&e->a.f, VU_SET_CONFIG, set,
					 sizeof(set), NULL, 0), 1);
	}
	serves(e, &e->a);
}

static void blk_new_rejects_unusable_backends_and_params(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	static const struct blkback_ops no_read = { .write = mb_write };
	const struct blk_params bad[] = {
		{ .block_size = 256 }, { .block_size = 1000 },
		{ .block_size = 8192 }, { .seg_max = VQ_MAX_SIZE - 1 },
		{ .phys_block_size = 3000 }, { .phys_block_size = 131072 },
	};
	struct blkback back = { .ops = &full_ops, .capacity_bytes = CAP };
	struct blk *b = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(blk_new(e->loop, NULL, "x", &back, &bad[i],
					 NULL, NULL, &b), -EINVAL);
	back.capacity_bytes = CAP + 100;
	assert_int_equal(blk_new(e->loop, NULL, "x", &back, NULL, NULL, NULL,
				 &b), -EINVAL);
	back.capacity_bytes = CAP;
	back.ops = &no_read;
	assert_int_equal(blk_new(e->loop, NULL, "x", &back, NULL, NULL, NULL,
				 &b), -EINVAL);
	back.ops = &read_only_ops;	/* writable, but no write op */
	assert_int_equal(blk_new(e->loop, NULL, "x", &back, NULL, NULL, NULL,
				 &b), -EINVAL);
	assert_int_equal(blk_new(e->loop, NULL, "x", NULL, NULL, NULL, NULL,
				 &b), -EINVAL);
	assert_int_equal(s->destroyed, 0);	/* a refused backend is ours */
	blk_free(NULL);
}

/* ---- reads and writes ------------------------------------------------------------ */

/* Split @total into 1..@maxn pieces (some possibly empty). */
static unsigned random_split(struct side *s, uint32_t total, uint32_t *pieces,
			     unsigned maxn)
{
	unsigned n = 1 + rnd(s) % maxn;
	uint32_t cuts[64];

	assert_true(n <= 64);
	for (unsigned i = 0; i + 1 < n; i++)
		cuts[i] = total ? rnd(s) % (total + 1) : 0;
	/* Sort the n - 1 cut points (insertion sort: n is tiny). */
	for (unsigned i = 1; i + 1 < n; i++)
		for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			uint32_t t = cuts[j];

			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	for (unsigned i = 0; i < n; i++) {
		uint32_t from = i ? cuts[i - 1] : 0;
		uint32_t to = i + 1 < n ? cuts[i] : total;

		pieces[i] = to - from;
	}
	return n;
}

static void write_read_roundtrip_with_random_splits(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	static uint8_t model[CAP];
	uint8_t *buf = malloc(128 * 1024), *got = malloc(128 * 1024);
	struct blk_info bi;
	uint64_t wbytes = 0, rbytes = 0;
	unsigned nw = 0, nr = 0;

	assert_non_null(buf);
	assert_non_null(got);
	memset(model, 0, sizeof(model));
	side_open(e, s, NULL);
	for (int iter = 0; iter < 400; iter++) {
		uint32_t sectors = 1 + rnd(s) % 128;
		uint32_t len = sectors * 512;
		uint64_t sector = rnd(s) % (CAP_SECTORS - sectors + 1);
		uint32_t rs[24], ws[24];
		struct req r = { .sector = sector, .rsplit = rs, .wsplit = ws };

		if (iter % 2 == 0) {
			fill_random(s, buf, len);
			r.type = T_OUT;
			r.out = buf;
			r.out_len = len;
			r.nr = random_split(s, 16 + len, rs, 24);
			r.nw = random_split(s, 1, ws, 3);
			submit(e, s, &r);
			assert_int_equal(r.status, S_OK);
			assert_int_equal(r.used, 1);
			memcpy(model + sector * 512, buf, len);
			nw++;
			wbytes += len;
		} else {
			r.type = T_IN;
			r.in_len = len;
			r.in = got;
			r.nr = random_split(s, 16, rs, 4);
			r.nw = random_split(s, len + 1, ws, 24);
			submit(e, s, &r);
			assert_int_equal(r.status, S_OK);
			assert_int_equal(r.used, len + 1);
			assert_memory_equal(got, model + sector * 512, len);
			nr++;
			rbytes += len;
		}
	}
	assert_memory_equal(s->be->disk, model, CAP);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.writes, nw);
	assert_int_equal(bi.reads, nr);
	assert_int_equal(bi.write_bytes, wbytes);
	assert_int_equal(bi.read_bytes, rbytes);
	assert_int_equal(bi.ioerr + bi.unsupp, 0);
	free(buf);
	free(got);
	victim_works(e);
}

static void header_data_and_status_may_share_descriptors(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[2048], got[2048];

	side_open(e, s, NULL);
	fill_random(s, data, sizeof(data));
	{
		/* Header and all data in one readable descriptor. */
		const uint32_t rs[] = { 16 + 2048 };
		struct req r = { .type = T_OUT, .sector = 40, .out = data,
				 .out_len = 2048, .rsplit = rs, .nr = 1 };

		expect_status(e, s, &r, S_OK);
		assert_int_equal(r.used, 1);
		assert_int_equal(s->be->last_off, 40 * 512);
		assert_int_equal(s->be->last_len, 2048);
	}
	{
		/* Header split 5/11; data and status in one writable one. */
		const uint32_t rs[] = { 5, 11 }, ws[] = { 2049 };
		struct req r = { .type = T_IN, .sector = 40, .in_len = 2048,
				 .in = got, .rsplit = rs, .nr = 2,
				 .wsplit = ws, .nw = 1 };

		expect_status(e, s, &r, S_OK);
		assert_int_equal(r.used, 2049);
		assert_memory_equal(got, data, 2048);
	}
	{
		/* Header's last byte shares a buffer with data; data split
		 * at odd offsets; empty buffers in between and at the end. */
		const uint32_t rs[] = { 15, 0, 1 + 3, 0, 1021, 1024 };
		const uint32_t ws[] = { 1, 0, 0 };
		struct req r = { .type = T_OUT, .sector = 7, .out = data,
				 .out_len = 2048, .rsplit = rs, .nr = 6,
				 .wsplit = ws, .nw = 3 };

		expect_status(e, s, &r, S_OK);
		assert_memory_equal(s->be->disk + 7 * 512, data, 2048);
	}
	{
		/* Status is the last byte of the last non-empty writable
		 * buffer, even when that buffer also holds data. */
		const uint32_t ws[] = { 100, 0, 900, 1049, 0 };
		struct req r = { .type = T_IN, .sector = 7, .in_len = 2048,
				 .in = got, .wsplit = ws, .nw = 5 };

		expect_status(e, s, &r, S_OK);
		assert_int_equal(r.used, 2049);
		assert_memory_equal(got, data, 2048);
	}
	victim_works(e);
}

static void empty_reads_and_writes_succeed_inside_the_disk(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct req r = { .type = T_IN, .sector = CAP_SECTORS };

	side_open(e, s, NULL);
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 1);
	r = (struct req){ .type = T_OUT, .sector = 0 };
	expect_status(e, s, &r, S_OK);
	r = (struct req){ .type = T_OUT, .sector = CAP_SECTORS + 1 };
	expect_ioerr(e, s, &r);
	assert_int_equal(sum_calls(s->be), 0);	/* nothing to do: no calls */
	serves(e, s);
}

static void reserved_header_field_is_ignored(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[512] = { 1, 2, 3 };
	/* Linux puts the request's ioprio there. */
	struct req r = { .type = T_OUT, .reserved = 0xffffffff, .sector = 3,
			 .out = data, .out_len = 512 };

	side_open(e, s, NULL);
	expect_status(e, s, &r, S_OK);
	assert_memory_equal(s->be->disk + 3 * 512, data, 512);
}

static void sector_ranges_are_checked_without_overflow(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[1024], zeros[1024] = { 0 };
	const uint64_t bad[] = {
		CAP_SECTORS,		/* one past the end */
		CAP_SECTORS - 1,	/* 1024 bytes straddle the end */
		UINT64_MAX,
		UINT64_MAX - 1,
		1ull << 55,		/* * 512 wraps to 0 */
		(1ull << 55) + 2,	/* * 512 wraps to 1024 */
		UINT64_MAX / 512 + 1,
	};
	uint8_t got[1024];

	side_open(e, s, NULL);
	fill_random(s, data, sizeof(data));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct req w = { .type = T_OUT, .sector = bad[i], .out = data,
				 .out_len = 1024 };
		struct req r = { .type = T_IN, .sector = bad[i], .in_len = 1024,
				 .in = got };

		expect_ioerr(e, s, &w);
		expect_ioerr(e, s, &r);
		/* Nothing read into the buffers: still as the guest left them. */
		for (size_t k = 0; k < sizeof(got); k++)
			assert_int_equal(got[k], UNWRITTEN);
	}
	assert_int_equal(sum_calls(s->be), 0);
	assert_memory_equal(s->be->disk, zeros, sizeof(zeros));
	assert_memory_equal(s->be->disk + 1024, zeros, sizeof(zeros));
	/* The last sector itself is fine. */
	assert_int_equal(do_write(e, s, CAP_SECTORS - 2, data, 1024), S_OK);
	assert_int_equal(do_read(e, s, CAP_SECTORS - 2, got, 1024), S_OK);
	assert_memory_equal(got, data, 1024);
	victim_works(e);
}

static void lengths_must_be_whole_sectors(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[1024] = { 7 }, got[1024];
	const uint32_t lens[] = { 1, 100, 511, 513, 1000, 1023 };
	struct blk_info bi;

	side_open(e, s, NULL);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct req w = { .type = T_OUT, .sector = 1, .out = data,
				 .out_len = lens[i] };
		struct req r = { .type = T_IN, .sector = 1, .in_len = lens[i],
				 .in = got };

		expect_ioerr(e, s, &w);
		expect_ioerr(e, s, &r);
		assert_int_equal(got[0], UNWRITTEN);
	}
	assert_int_equal(sum_calls(s->be), 0);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.ioerr, 12);
	serves(e, s);
}

static void data_in_the_wrong_direction_is_refused(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[512] = { 9 }, got[512];
	/* A read carrying readable data too. */
	struct req r = { .type = T_IN, .sector = 0, .out = data, .out_len = 512,
			 .in_len = 512, .in = got };
	/* A write with a writable data buffer instead of readable. */
	struct req w = { .type = T_OUT, .sector = 0, .in_len = 512, .in = got };
	/* A write with both. */
	struct req both = { .type = T_OUT, .sector = 0, .out = data,
			    .out_len = 512, .in_len = 512, .in = got };

	side_open(e, s, NULL);
	expect_ioerr(e, s, &r);
	assert_int_equal(got[0], UNWRITTEN);
	expect_ioerr(e, s, &w);
	expect_ioerr(e, s, &both);
	assert_int_equal(sum_calls(s->be), 0);
	serves(e, s);
}

static void read_only_disk_refuses_writes(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct opts o = { .read_only = true };
	uint8_t data[512] = { 5 }, got[512], zeros[512] = { 0 };
	struct req w = { .type = T_OUT, .sector = 2, .out = data,
			 .out_len = 512 };
	struct req d = { .type = T_DISCARD, .out = data, .out_len = 16 };

	side_open(e, s, &o);
	expect_ioerr(e, s, &w);
	assert_int_equal(s->be->calls[OP_WRITE], 0);
	assert_memory_equal(s->be->disk + 1024, zeros, 512);
	/* Discard was not offered on a read-only disk. */
	memset(data, 0, 16);
	data[8] = 1;
	expect_status(e, s, &d, S_UNSUPP);
	assert_int_equal(s->be->calls[OP_DISCARD], 0);
	/* Reads still work. */
	s->be->disk[1024] = 0x42;
	assert_int_equal(do_read(e, s, 2, got, 512), S_OK);
	assert_int_equal(got[0], 0x42);
}

static void segment_count_and_size_are_limited(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct opts o = { .p = { .seg_max = 8 } };
	uint8_t *data = calloc(1, BLK_SIZE_MAX + 512), got[16 * 512];
	uint32_t rs[16], ws[16];

	assert_non_null(data);
	side_open(e, s, &o);
	fill_random(s, data, BLK_SIZE_MAX + 512);
	/* 8 data segments: fine, header in its own buffer... */
	rs[0] = 16;
	for (int i = 1; i <= 8; i++)
		rs[i] = 512;
	{
		struct req r = { .type = T_OUT, .sector = 0, .out = data,
				 .out_len = 8 * 512, .rsplit = rs, .nr = 9 };

		expect_status(e, s, &r, S_OK);
	}
	/* ...or sharing the first (it is still one data segment)... */
	rs[0] = 16 + 512;
	{
		struct req r = { .type = T_OUT, .sector = 0, .out = data,
				 .out_len = 8 * 512, .rsplit = rs, .nr = 8 };

		expect_status(e, s, &r, S_OK);
	}
	/* ...but 9 are too many, both ways. */
	rs[0] = 16;
	rs[9] = 512;
	{
		struct req r = { .type = T_OUT, .sector = 0, .out = data,
				 .out_len = 9 * 512, .rsplit = rs, .nr = 10 };

		expect_ioerr(e, s, &r);
	}
	for (int i = 0; i < 9; i++)
		ws[i] = 512;
	ws[9] = 1;
	{
		struct req r = { .type = T_IN, .sector = 0, .in_len = 9 * 512,
				 .in = got, .wsplit = ws, .nw = 10 };

		expect_ioerr(e, s, &r);
		assert_int_equal(got[0], UNWRITTEN);
	}
	/* Empty buffers are not segments. */
	{
		const uint32_t w2[] = { 512, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
		struct req r = { .type = T_IN, .sector = 0, .in_len = 512,
				 .in = got, .wsplit = w2, .nw = 11 };

		expect_status(e, s, &r, S_OK);
	}
	/* size_max: one segment of exactly BLK_SIZE_MAX is fine, one sector
	 * more is not (here the header shares the buffer). */
	{
		struct req r = { .type = T_OUT, .sector = 0, .out = data,
				 .out_len = BLK_SIZE_MAX };

		expect_status(e, s, &r, S_OK);
		assert_memory_equal(s->be->disk, data, BLK_SIZE_MAX);
	}
	{
		const uint32_t r1[] = { 16 + BLK_SIZE_MAX + 512 };
		struct req r = { .type = T_OUT, .sector = 0, .out = data,
				 .out_len = BLK_SIZE_MAX + 512, .rsplit = r1,
				 .nr = 1 };

		expect_ioerr(e, s, &r);
	}
	assert_int_equal(s->be->calls[OP_WRITE], 3);
	assert_int_equal(s->be->calls[OP_READ], 1);
	free(data);
	serves(e, s);
}

/* ---- other request types --------------------------------------------------------- */

static void flush_reaches_the_backend(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t x[512];
	struct req r = { .type = T_FLUSH, .sector = 12345 };	/* ignored */
	struct blk_info bi;

	side_open(e, s, NULL);
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 1);
	assert_int_equal(s->be->calls[OP_FLUSH], 1);
	/* A flush carries no data. */
	r = (struct req){ .type = T_FLUSH, .in_len = 512, .in = x };
	expect_ioerr(e, s, &r);
	r = (struct req){ .type = T_FLUSH, .out = x, .out_len = 512 };
	expect_ioerr(e, s, &r);
	assert_int_equal(s->be->calls[OP_FLUSH], 1);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.flushes, 1);
	side_close(s);

	/* Nothing to flush without the op: success (FLUSH not offered). */
	{
		struct opts o = { .ops = &minimal_ops };

		side_open(e, s, &o);
		r = (struct req){ .type = T_FLUSH };
		expect_status(e, s, &r, S_OK);
	}
}

static void get_id_returns_the_padded_serial(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t id[32], want[20] = SERIAL;
	struct req r = { .type = T_GET_ID, .in_len = 20, .in = id };
	struct blk_info bi;

	side_open(e, s, NULL);
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 21);
	assert_memory_equal(id, want, 20);	/* NUL-padded */

	/* A longer buffer: 20 bytes written, the rest left alone. */
	r = (struct req){ .type = T_GET_ID, .in_len = 32, .in = id };
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 21);
	assert_memory_equal(id, want, 20);
	for (int i = 20; i < 32; i++)
		assert_int_equal(id[i], UNWRITTEN);

	/* A shorter one, split: as much as fits. */
	{
		const uint32_t ws[] = { 3, 5, 1 };

		r = (struct req){ .type = T_GET_ID, .in_len = 8, .in = id,
				  .wsplit = ws, .nw = 3 };
		expect_status(e, s, &r, S_OK);
		assert_int_equal(r.used, 9);
		assert_memory_equal(id, want, 8);
	}
	/* Readable data makes no sense for it. */
	r = (struct req){ .type = T_GET_ID, .out = id, .out_len = 20,
			  .in_len = 20, .in = id };
	expect_ioerr(e, s, &r);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.get_ids, 3);
	side_close(s);

	/* Exactly 20 characters: no terminator. */
	{
		struct opts o = { .serial = "0123456789abcdefghij" };

		side_open(e, s, &o);
		r = (struct req){ .type = T_GET_ID, .in_len = 20, .in = id };
		expect_status(e, s, &r, S_OK);
		assert_memory_equal(id, "0123456789abcdefghij", 20);
	}
}

static void unknown_request_types_are_unsupported(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	const uint32_t types[] = { 2, 3, 5, T_GET_LIFETIME, 12,
				   T_SECURE_ERASE, 15, 16, 26, 0x80000000,
				   0x80000001, 0xffffffff };
	uint8_t buf[512];
	struct blk_info bi;

	side_open(e, s, NULL);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct req r = { .type = types[i], .in_len = 512, .in = buf };

		expect_status(e, s, &r, S_UNSUPP);
		assert_int_equal(r.used, 1);
		assert_int_equal(buf[0], UNWRITTEN);
	}
	assert_int_equal(sum_calls(s->be), 0);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.unsupp, sizeof(types) / sizeof(types[0]));
	serves(e, s);
}

/* ---- discard and write zeroes ------------------------------------------------------ */

static void put_seg(uint8_t *p, uint64_t sector, uint32_t num, uint32_t flags)
{
	memcpy(p, &sector, 8);
	memcpy(p + 8, &num, 4);
	memcpy(p + 12, &flags, 4);
}

static void fill_disk(struct side *s)
{
	memset(s->be->disk, 0x77, CAP);
}

static bool all_bytes(const uint8_t *p, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

static void discard_reaches_the_backend(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t segs[3 * 16];
	struct req r = { .type = T_DISCARD, .out = segs };
	struct blk_info bi;

	side_open(e, s, NULL);
	fill_disk(s);
	put_seg(segs, 8, 16, 0);
	r.out_len = 16;
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 1);
	assert_int_equal(s->be->calls[OP_DISCARD], 1);
	assert_int_equal(s->be->last_off, 8 * 512);
	assert_int_equal(s->be->last_len, 16 * 512);

	/* Three segments, the list split mid-segment; an empty segment is
	 * skipped, the last one ends at the end of the disk. */
	put_seg(segs, 100, 8, 0);
	put_seg(segs + 16, 200, 0, 0);
	put_seg(segs + 32, CAP_SECTORS - 8, 8, 0);
	{
		const uint32_t rs[] = { 16 + 7, 20, 21 };

		r = (struct req){ .type = T_DISCARD, .out = segs, .out_len = 48,
				  .rsplit = rs, .nr = 3 };
		expect_status(e, s, &r, S_OK);
	}
	assert_int_equal(s->be->calls[OP_DISCARD], 3);
	assert_int_equal(s->be->last_off, CAP - 8 * 512);
	assert_int_equal(s->be->last_len, 8 * 512);
	assert_true(all_bytes(s->be->disk + 100 * 512, 8 * 512, 0));
	assert_true(all_bytes(s->be->disk + 108 * 512, 512, 0x77));
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.discards, 2);
	serves(e, s);
}

static void write_zeroes_passes_unmap(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t segs[2 * 16];
	struct req r = { .type = T_WRITE_ZEROES, .out = segs, .out_len = 32 };
	struct blk_info bi;

	side_open(e, s, NULL);
	fill_disk(s);
	put_seg(segs, 0, 1, 0);
	put_seg(segs + 16, 50, 30, 1);	/* unmap: allowed here */
	expect_status(e, s, &r, S_OK);
	assert_int_equal(r.used, 1);
	assert_int_equal(s->be->calls[OP_WZ], 2);
	assert_int_equal(s->be->last_off, 50 * 512);
	assert_int_equal(s->be->last_len, 30 * 512);
	assert_true(s->be->last_unmap);
	assert_true(all_bytes(s->be->disk, 512, 0));
	assert_true(all_bytes(s->be->disk + 512, 512, 0x77));
	assert_true(all_bytes(s->be->disk + 50 * 512, 30 * 512, 0));
	put_seg(segs, 0, 1, 0);
	r.out_len = 16;
	expect_status(e, s, &r, S_OK);
	assert_false(s->be->last_unmap);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.write_zeroes, 2);
	serves(e, s);
}

/* Bad segment lists for @type: status, and no backend call at all. */
static void bad_segment_lists(struct env *e, uint32_t type, int op)
{
	struct side *s = &e->a;
	uint8_t segs[(BLK_DISCARD_SEG_MAX + 1) * 16], x[16];
	const uint32_t max = DWZ_MAX;	/* inside the disk, so only the
					 * limit refuses max + 1 */
	const struct {
		uint64_t sector;
		uint32_t num, flags;
		uint8_t status;
	} one[] = {
		{ 0, 1, 2, S_UNSUPP },		/* reserved flag bit */
		{ 0, 1, 0x80000000, S_UNSUPP },
		{ 0, 1, 3, S_UNSUPP },
		{ 0, max + 1, 0, S_IOERR },	/* too long */
		{ 0, UINT32_MAX, 0, S_IOERR },
		{ CAP_SECTORS, 1, 0, S_IOERR },	/* outside the disk */
		{ CAP_SECTORS - 1, 2, 0, S_IOERR },
		{ UINT64_MAX, 1, 0, S_IOERR },
		{ 1ull << 55, 8, 0, S_IOERR },	/* * 512 wraps */
		{ UINT64_MAX - 7, 8, 0, S_IOERR },
	};
	struct req r;

	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
		put_seg(segs, one[i].sector, one[i].num, one[i].flags);
		r = (struct req){ .type = type, .out = segs, .out_len = 16 };
		expect_status(e, s, &r, one[i].status);
		assert_int_equal(r.used, 1);
	}
	/* The limit itself is fine. */
	put_seg(segs, 0, max, 0);
	r = (struct req){ .type = type, .out = segs, .out_len = 16 };
	expect_status(e, s, &r, S_OK);
	assert_int_equal(s->be->last_len, max * 512);
	/* Discard must not be asked to unmap (5.2.6.2). */
	put_seg(segs, 0, 1, 1);
	r = (struct req){ .type = type, .out = segs, .out_len = 16 };
	if (type == T_DISCARD)
		expect_status(e, s, &r, S_UNSUPP);
	else
		expect_status(e, s, &r, S_OK);
	s->be->calls[op] = 0;

	/* List lengths: empty, partial segments, too many segments. */
	for (unsigned i = 0; i <= BLK_DISCARD_SEG_MAX; i++)
		put_seg(segs + 16 * i, i, 1, 0);
	{
		const uint32_t lens[] = { 0, 1, 15, 17, 31, 40,
					  16 * (BLK_DISCARD_SEG_MAX + 1) };

		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			r = (struct req){ .type = type, .out = segs,
					  .out_len = lens[i] };
			expect_ioerr(e, s, &r);
		}
	}
	/* One bad segment among good ones: none is acted on. */
	put_seg(segs + 16 * 5, CAP_SECTORS, 1, 0);
	r = (struct req){ .type = type, .out = segs, .out_len = 16 * 8 };
	expect_ioerr(e, s, &r);
	put_seg(segs + 16 * 5, 5, 1, 4);
	r = (struct req){ .type = type, .out = segs, .out_len = 16 * 8 };
	expect_status(e, s, &r, S_UNSUPP);
	/* A writable buffer besides the status. */
	put_seg(segs + 16 * 5, 5, 1, 0);
	r = (struct req){ .type = type, .out = segs, .out_len = 16,
			  .in_len = 16, .in = x };
	expect_ioerr(e, s, &r);
	assert_int_equal(s->be->calls[op], 0);

	/* The most segments allowed, each acted on. */
	r = (struct req){ .type = type, .out = segs,
			  .out_len = 16 * BLK_DISCARD_SEG_MAX };
	expect_status(e, s, &r, S_OK);
	assert_int_equal(s->be->calls[op], BLK_DISCARD_SEG_MAX);
	serves(e, s);
}

static const struct opts dwz_opts = { .p = { .max_discard_sectors = DWZ_MAX } };

static void bad_discards_are_refused(void **state)
{
	struct env *e = *state;

	side_open(e, &e->a, &dwz_opts);
	bad_segment_lists(e, T_DISCARD, OP_DISCARD);
	victim_works(e);
}

static void bad_write_zeroes_are_refused(void **state)
{
	struct env *e = *state;

	side_open(e, &e->a, &dwz_opts);
	bad_segment_lists(e, T_WRITE_ZEROES, OP_WZ);
	victim_works(e);
}

static void discard_and_write_zeroes_unsupported_when_not_offered(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct opts o = { .ops = &minimal_ops };
	uint8_t seg[16];
	struct req r;

	side_open(e, s, &o);
	put_seg(seg, 0, 1, 0);
	r = (struct req){ .type = T_DISCARD, .out = seg, .out_len = 16 };
	expect_status(e, s, &r, S_UNSUPP);
	r = (struct req){ .type = T_WRITE_ZEROES, .out = seg, .out_len = 16 };
	expect_status(e, s, &r, S_UNSUPP);
	serves(e, s);
}

/* ---- backend errors ------------------------------------------------------------------ */

static void backend_errors_become_ioerr_or_unsupp(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t data[4096], got[4096], seg[16];
	struct req r;
	struct blk_info bi;

	side_open(e, s, NULL);
	fill_random(s, data, sizeof(data));
	memcpy(s->be->disk, data, sizeof(data));

	/* A failed read: IOERR, and the buffers the backend scribbled on
	 * are zeroed, so the used length is exactly data + status. */
	s->be->fail[OP_READ] = -EIO;
	{
		const uint32_t ws[] = { 1000, 3097 };

		r = (struct req){ .type = T_IN, .in_len = 4096, .in = got,
				  .wsplit = ws, .nw = 2 };
		expect_status(e, s, &r, S_IOERR);
	}
	assert_int_equal(r.used, 4097);
	assert_true(all_bytes(got, 4096, 0));
	s->be->fail[OP_READ] = -ENOTSUP;
	r = (struct req){ .type = T_IN, .in_len = 512, .in = got };
	expect_status(e, s, &r, S_UNSUPP);
	assert_int_equal(r.used, 513);

	s->be->fail[OP_WRITE] = -ENOSPC;
	r = (struct req){ .type = T_OUT, .out = data, .out_len = 512 };
	expect_ioerr(e, s, &r);
	s->be->fail[OP_WRITE] = -ENOTSUP;
	r = (struct req){ .type = T_OUT, .out = data, .out_len = 512 };
	expect_status(e, s, &r, S_UNSUPP);
	assert_int_equal(r.used, 1);

	s->be->fail[OP_FLUSH] = -EIO;
	r = (struct req){ .type = T_FLUSH };
	expect_ioerr(e, s, &r);

	put_seg(seg, 0, 8, 0);
	s->be->fail[OP_DISCARD] = -ENOTSUP;
	r = (struct req){ .type = T_DISCARD, .out = seg, .out_len = 16 };
	expect_status(e, s, &r, S_UNSUPP);
	s->be->fail[OP_WZ] = -EIO;
	r = (struct req){ .type = T_WRITE_ZEROES, .out = seg, .out_len = 16 };
	expect_ioerr(e, s, &r);

	blk_get_info(s->b, &bi);
	assert_int_equal(bi.ioerr, 4);
	assert_int_equal(bi.unsupp, 3);
	assert_int_equal(bi.reads + bi.writes + bi.flushes + bi.discards +
			 bi.write_zeroes, 0);
	/* The failures were one-off: the device and disk carry on. */
	assert_int_equal(do_read(e, s, 0, got, 4096), S_OK);
	assert_memory_equal(got, data, 4096);
	serves(e, s);
}

/* ---- batching ---------------------------------------------------------------------- */

static void a_batch_gets_one_interrupt(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct chain c[16];
	uint8_t data[16][512], status[16];
	struct blk_info bi;

	side_open(e, s, NULL);
	s->next_gpa = SCRATCH;
	interrupts(s);
	for (int i = 0; i < 16; i++) {
		struct req r = { .type = T_OUT, .sector = (uint64_t)i,
				 .out = data[i], .out_len = 512 };

		memset(data[i], i, 512);
		memset(&c[i], 0, sizeof(c[i]));
		if (i == 7)	/* one bad request in the batch */
			r.sector = CAP_SECTORS;
		build(s, &c[i], &r);
		post(s, &c[i]);
	}
	kick(s);
	wait_used(e, s);
	assert_int_equal(interrupts(s), 1);
	for (int i = 0; i < 16; i++) {
		chain_gather(s, &c[i], &status[i]);
		assert_int_equal(status[i], i == 7 ? S_IOERR : S_OK);
		assert_int_equal(ff_ring_used(&s->r)->ring[i].len, 1);
		if (i != 7)
			assert_true(all_bytes(s->be->disk + i * 512, 512,
					      (uint8_t)i));
	}
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.writes, 15);
	assert_int_equal(bi.ioerr, 1);

	/* A kick with nothing new is not answered with an interrupt. */
	kick(s);
	for (int i = 0; i < 5; i++)
		ff_pump(e->loop);
	assert_int_equal(interrupts(s), 0);
	/* A driver that asked for no interrupts gets none. */
	ff_ring_avail(&s->r)->flags = VRING_AVAIL_F_NO_INTERRUPT;
	{
		struct chain c1 = { 0 };
		struct req r = { .type = T_FLUSH };

		build(s, &c1, &r);
		post(s, &c1);
		kick(s);
		wait_used(e, s);
		assert_int_equal(interrupts(s), 0);
	}
	ff_ring_avail(&s->r)->flags = 0;
	serves(e, s);
}

/* ---- hostile chains ----------------------------------------------------------------- */

static void chain_without_a_full_header_fails_the_device(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t h[16];
	struct chain c;

	put_hdr(h, T_IN, 0, 0);
	side_open(e, s, NULL);
	/* 15 readable bytes, a data buffer and a status byte. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 15, false);
	chain_add(s, &c, NULL, 512, true);
	chain_add(s, &c, NULL, 1, true);
	hostile(e, &c, "16-byte readable header");
	/* The same in pieces, with empty ones. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 5, false);
	chain_add(s, &c, h, 0, false);
	chain_add(s, &c, h, 10, false);
	chain_add(s, &c, NULL, 1, true);
	hostile(e, &c, "16-byte readable header");
	/* Nothing readable at all. */
	c = (struct chain){ 0 };
	chain_add(s, &c, NULL, 17, true);
	hostile(e, &c, "16-byte readable header");
}

static void chain_without_a_status_byte_fails_the_device(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t h[16 + 512] = { 0 };
	struct chain c;

	put_hdr(h, T_OUT, 0, 0);
	side_open(e, s, NULL);
	/* Header and data, nothing writable. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 16, false);
	chain_add(s, &c, h + 16, 512, false);
	hostile(e, &c, "writable status byte");
	/* Only an empty writable buffer. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 16, false);
	chain_add(s, &c, NULL, 0, true);
	hostile(e, &c, "writable status byte");
	/* A flush, header only. */
	put_hdr(h, T_FLUSH, 0, 0);
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 16, false);
	hostile(e, &c, "writable status byte");
	/* Only the writes of serves() after each reconnection. */
	assert_int_equal(e->a.be->calls[OP_WRITE], 3);
}

static void malformed_chains_fail_the_device(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	uint8_t h[16] = { 0 };
	struct chain c;

	side_open(e, s, NULL);
	/* Readable after writable: virtq refuses the chain. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 16, false);
	chain_add(s, &c, NULL, 1, true);
	chain_add(s, &c, h, 16, false);
	hostile(e, &c, "readable descriptor after a writable");
	/* A buffer outside guest memory. */
	c = (struct chain){ 0 };
	chain_add(s, &c, h, 16, false);
	chain_add(s, &c, NULL, 1, true);
	c.addr[1] = GPA + MEM;
	hostile(e, &c, "outside guest memory");
	/* Fine requests queued after a bad one do not matter: the device
	 * stops at the bad one. */
	{
		struct chain good = { 0 };
		struct req r = { .type = T_FLUSH };

		c = (struct chain){ 0 };
		chain_add(s, &c, h, 8, false);
		chain_add(s, &c, NULL, 1, true);
		build(s, &good, &r);
		post(s, &c);
		post(s, &good);
		kick(s);
		expect_failed(e, "16-byte readable header");
	}
}

static void disconnect_resets_and_a_new_frontend_is_served(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	struct blk_info bi;

	side_open(e, s, NULL);
	serves(e, s);
	ff_close(&s->f);
	assert_true(ff_pump_until(e->loop, disconnected, s, 1000));
	blk_get_info(s->b, &bi);
	assert_false(bi.connected);
	assert_false(bi.ready);
	assert_false(bi.failed);
	assert_int_equal(bi.features, 0);
	attach(e, s);
	handshake(s);
	serves(e, s);
	blk_get_info(s->b, &bi);
	assert_int_equal(bi.writes, 2);	/* counters survive reconnection */
	victim_works(e);
}

static void listening_device_serves_a_frontend(void **state)
{
	struct env *e = *state;
	struct side *s = &e->a;
	char dir[] = "/tmp/ebb-blk-test-XXXXXX", path[64];
	struct blkback back = { .ops = &full_ops, .capacity_bytes = CAP };

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/blk.sock", dir);
	s->be = membe_new(s);
	back.be = s->be;
	assert_int_equal(blk_new(e->loop, path, s->name, &back, NULL, &events,
				 s, &s->b), 0);
	s->vu = blk_vu(s->b);
	assert_int_equal(ff_connect(&s->f, e->loop, path), 0);
	assert_true(vu_dev_connected(s->vu));
	ff_ring_init(&s->r, &s->m, NUM, RING);
	handshake(s);
	serves(e, s);
	side_close(s);
	assert_int_equal(access(path, F_OK), -1);	/* unlinked */
	assert_int_equal(rmdir(dir), 0);
	victim_works(e);
}

/* Under UBSan, a finding fails the program instead of scrolling past. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(config_and_features_with_every_op),
		T(config_and_features_of_a_minimal_backend),
		T(config_and_features_of_a_read_only_disk),
		T(topology_names_the_physical_block),
		T(no_indirect_event_idx_or_mq),
		T(blk_new_rejects_unusable_backends_and_params),
		T(write_read_roundtrip_with_random_splits),
		T(header_data_and_status_may_share_descriptors),
		T(empty_reads_and_writes_succeed_inside_the_disk),
		T(reserved_header_field_is_ignored),
		T(sector_ranges_are_checked_without_overflow),
		T(lengths_must_be_whole_sectors),
		T(data_in_the_wrong_direction_is_refused),
		T(read_only_disk_refuses_writes),
		T(segment_count_and_size_are_limited),
		T(flush_reaches_the_backend),
		T(get_id_returns_the_padded_serial),
		T(unknown_request_types_are_unsupported),
		T(discard_reaches_the_backend),
		T(write_zeroes_passes_unmap),
		T(bad_discards_are_refused),
		T(bad_write_zeroes_are_refused),
		T(discard_and_write_zeroes_unsupported_when_not_offered),
		T(backend_errors_become_ioerr_or_unsupp),
		T(a_batch_gets_one_interrupt),
		T(chain_without_a_full_header_fails_the_device),
		T(chain_without_a_status_byte_fails_the_device),
		T(malformed_chains_fail_the_device),
		T(disconnect_resets_and_a_new_frontend_is_served),
		T(listening_device_serves_a_frontend),
	};

	/* Failed devices log warnings by design; keep the TAP readable. */
	log_set_level(LOG_ERR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
