#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "tmem.h"

#define PG	TMEM_PAGE_SIZE
#define A	1u	/* client ids */
#define B	2u
#define C	3u
#define NCLIENTS 8

/* ---- page makers ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Compressible, text-like, distinct per @seed. */
static void text_page(uint8_t *p, unsigned seed)
{
	static const char *const words[] = {
		"memory ", "guest ", "host ", "page ", "balloon ", "swap ",
		"the ", "of ", "and ", "pool ", "cache ", "evict ",
	};
	size_t off = 0;
	unsigned i = seed;

	off = (size_t)snprintf((char *)p, PG, "page %u: ", seed);
	while (off < PG) {
		const char *w = words[((i = i * 1103515245u + 12345u) >> 16) % 12];
		size_t n = strlen(w);

		if (n > PG - off)
			n = PG - off;
		memcpy(p + off, w, n);
		off += n;
	}
}

static void random_page(uint8_t *p)
{
	size_t i;

	for (i = 0; i < PG; i += 8) {
		uint64_t r = rng();

		memcpy(p + i, &r, 8);
	}
}

static struct tmem_oid oid_of(uint64_t x)
{
	struct tmem_oid o = { { x, ~x, x * 3 } };

	return o;
}

static struct tmem_uuid uuid_of(uint8_t x)
{
	struct tmem_uuid u;

	memset(&u, x, sizeof(u));
	return u;
}

/* ---- charge hook recorder ---- */

struct hook {
	int64_t total[NCLIENTS];	/* accepted deltas per client */
	int64_t limit_total;		/* refuse growth past this sum; 0: none */
	int64_t limit_client[NCLIENTS];	/* per client; 0: none */
	bool refuse_all;		/* refuse every growth */
	unsigned calls;
	unsigned refusals;
	int64_t last_delta;		/* last delta seen, accepted or not */
};

static int hook_fn(void *opaque, uint32_t id, int64_t delta)
{
	struct hook *h = opaque;
	int64_t sum = 0;
	unsigned i;

	assert_true(id < NCLIENTS);
	h->calls++;
	h->last_delta = delta;
	if (delta > 0) {
		for (i = 0; i < NCLIENTS; i++)
			sum += h->total[i];
		if (h->refuse_all ||
		    (h->limit_total && sum + delta > h->limit_total) ||
		    (h->limit_client[id] && h->total[id] + delta > h->limit_client[id])) {
			h->refusals++;
			return -ENOMEM;
		}
	}
	h->total[id] += delta;
	return 0;
}

/* ---- fixture ---- */

struct fx {
	struct tmem_store *s;
	struct hook hook;
	uint8_t in[PG], out[PG];
};

static struct fx *fx_new(uint32_t flags)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct tmem_store_config cfg = {
		.flags = flags,
		.charge = hook_fn,
	};

	assert_non_null(f);
	cfg.charge_opaque = &f->hook;
	/* EBB_TEST_TMEM_SHM=1 (meson test tmem_on_shm): the same cases on a
	 * store whose persistent pages also go to a memfd arena. */
	if (getenv("EBB_TEST_TMEM_SHM"))
		assert_int_equal(tmem_store_new_shm(&cfg, 64ull << 20, &f->s), 0);
	else
		assert_int_equal(tmem_store_new(&cfg, &f->s), 0);
	assert_int_equal(tmem_client_new(f->s, A, "guest-a", NULL), 0);
	assert_int_equal(tmem_client_new(f->s, B, "guest-b", NULL), 0);
	return f;
}

/* Counters agree with each other and with what the hook was told. */
static void fx_check(struct fx *f)
{
	struct tmem_stats st;
	uint32_t id;

	assert_int_equal(tmem_check(f->s), 0);
	for (id = 0; id < NCLIENTS; id++) {
		if (tmem_client_stats(f->s, id, &st) == 0)
			assert_int_equal((int64_t)st.charged_bytes, f->hook.total[id]);
		else
			assert_int_equal(f->hook.total[id], 0);
	}
}

static void fx_free(struct fx *f)
{
	int fd = tmem_store_shm_fd(f->s) >= 0 ? dup(tmem_store_shm_fd(f->s)) : -1;

	fx_check(f);
	tmem_store_free(f->s);
	/* On a memfd store: whatever the case did (failed puts included),
	 * the arena it leaves is one a new store adopts without finding a
	 * single bad or duplicate record. */
	if (fd >= 0) {
		struct tmem_shm_report rep;
		struct tmem_store *s;

		assert_int_equal(tmem_store_adopt_shm(fd, NULL, &s, &rep), 0);
		assert_int_equal(rep.bad_entries, 0);
		assert_int_equal(rep.stale_entries, 0);
		assert_int_equal(rep.bad_clients, 0);
		assert_int_equal(rep.bad_chunks, 0);
		assert_int_equal(tmem_check(s), 0);
		tmem_store_free(s);
		close(fd);
	}
	free(f);
}

static int setup(void **state)
{
	*state = fx_new(0);
	return 0;
}

static int setup_cross(void **state)
{
	*state = fx_new(TMEM_STORE_CROSS_CLIENT_DEDUP);
	return 0;
}

static int teardown(void **state)
{
	fx_free(*state);
	return 0;
}

static uint32_t pool(struct fx *f, uint32_t client, uint32_t flags)
{
	uint32_t id = 999;

	assert_int_equal(tmem_pool_new(f->s, client, flags, NULL, &id), 0);
	return id;
}

static int put(struct fx *f, uint32_t c, uint32_t p, uint64_t o, uint32_t i,
	       const uint8_t *page)
{
	struct tmem_oid oid = oid_of(o);

	return tmem_put(f->s, c, p, &oid, i, page, PG);
}

static int get(struct fx *f, uint32_t c, uint32_t p, uint64_t o, uint32_t i)
{
	struct tmem_oid oid = oid_of(o);

	memset(f->out, 0xa5, PG);
	return tmem_get(f->s, c, p, &oid, i, f->out, PG);
}

static int flush(struct fx *f, uint32_t c, uint32_t p, uint64_t o, uint32_t i)
{
	struct tmem_oid oid = oid_of(o);

	return tmem_flush_page(f->s, c, p, &oid, i);
}

static struct tmem_stats cstats(struct fx *f, uint32_t c)
{
	struct tmem_stats st;

	assert_int_equal(tmem_client_stats(f->s, c, &st), 0);
	return st;
}

static struct tmem_store_stats sstats(struct fx *f)
{
	struct tmem_store_stats st;

	assert_int_equal(tmem_store_stats(f->s, &st), 0);
	return st;
}

static uint64_t live_allocs(struct fx *f)
{
	struct tmem_debug d;

	assert_int_equal(tmem_debug_get(f->s, &d), 0);
	return d.live_allocs;
}

/* Allocations outside slabs: slabs cost two each (header + memory; one
 * on a memfd store, whose slab memory is arena chunks) and empty ones are
 * kept as spares, so they are subtracted. */
static uint64_t nonslab_allocs(struct fx *f)
{
	return live_allocs(f) -
	       (tmem_store_shm_fd(f->s) >= 0 ? 1 : 2) * sstats(f).slabs;
}

/* Deterministic page content for a model value: text, random, zero or one
 * of 16 popular duplicates. */
static void model_page(uint8_t *p, uint32_t v)
{
	uint64_t saved = rng_state;

	switch (v % 4) {
	case 0:
		text_page(p, v);
		break;
	case 1:
		rng_state = 0x9e3779b97f4a7c15ull * (v + 1);
		random_page(p);
		rng_state = saved;
		break;
	case 2:
		memset(p, 0, PG);
		break;
	default:
		text_page(p, 1000000 + v % 16);
		break;
	}
}

/* ---- configuration and argument errors ---- */

static void store_config_errors(void **state)
{
	struct tmem_store_config cfg = { .raw_threshold_bytes = PG + 1 };
	struct tmem_oid oid = oid_of(1);
	struct tmem_store_stats ss;
	struct tmem_stats st;
	struct tmem_debug d;
	struct tmem_store *s;
	uint8_t page[PG];
	uint32_t id;

	(void)state;
	assert_int_equal(tmem_store_new(NULL, NULL), -EINVAL);
	assert_int_equal(tmem_store_new(&cfg, &s), -EINVAL);
	cfg.raw_threshold_bytes = 0;
	cfg.flags = 1u << 7;
	assert_int_equal(tmem_store_new(&cfg, &s), -EINVAL);
	assert_int_equal(tmem_store_new(NULL, &s), 0);	/* all defaults */
	tmem_store_free(s);
	tmem_store_free(NULL);

	memset(page, 0, sizeof(page));
	assert_int_equal(tmem_client_new(NULL, A, "x", NULL), -EINVAL);
	assert_int_equal(tmem_client_set_params(NULL, A, NULL), -EINVAL);
	assert_int_equal(tmem_client_destroy(NULL, A), -EINVAL);
	assert_int_equal(tmem_pool_new(NULL, A, 0, NULL, &id), -EINVAL);
	assert_int_equal(tmem_pool_destroy(NULL, A, 0), -EINVAL);
	assert_int_equal(tmem_put(NULL, A, 0, &oid, 0, page, PG), -EINVAL);
	assert_int_equal(tmem_get(NULL, A, 0, &oid, 0, page, PG), -EINVAL);
	assert_int_equal(tmem_flush_page(NULL, A, 0, &oid, 0), -EINVAL);
	assert_int_equal(tmem_flush_object(NULL, A, 0, &oid), -EINVAL);
	assert_int_equal(tmem_shrink(NULL, 1, NULL), -EINVAL);
	assert_int_equal(tmem_client_stats(NULL, A, &st), -EINVAL);
	assert_int_equal(tmem_store_stats(NULL, &ss), -EINVAL);
	assert_int_equal(tmem_debug_fail_alloc(NULL, 1), -EINVAL);
	assert_int_equal(tmem_debug_get(NULL, &d), -EINVAL);
	assert_int_equal(tmem_check(NULL), -EINVAL);
}

static void client_errors(void **state)
{
	struct fx *f = *state;
	struct tmem_client_params p = { .weight = TMEM_WEIGHT_MAX + 1 };
	struct tmem_oid oid = oid_of(1);
	struct tmem_stats st;
	uint32_t id;

	assert_int_equal(tmem_client_new(f->s, A, "again", NULL), -EEXIST);
	assert_int_equal(tmem_client_new(f->s, C, "c", &p), -EINVAL);
	assert_int_equal(tmem_client_set_params(f->s, A, &p), -EINVAL);
	p.weight = 5;
	assert_int_equal(tmem_client_set_params(f->s, C, &p), -ESRCH);
	assert_int_equal(tmem_client_set_params(f->s, A, NULL), -EINVAL);
	assert_int_equal(tmem_client_destroy(f->s, C), -ESRCH);
	assert_int_equal(tmem_pool_new(f->s, C, 0, NULL, &id), -ESRCH);
	assert_int_equal(tmem_pool_destroy(f->s, C, 0), -ESRCH);
	assert_int_equal(tmem_put(f->s, C, 0, &oid, 0, f->in, PG), -ESRCH);
	assert_int_equal(tmem_get(f->s, C, 0, &oid, 0, f->out, PG), -ESRCH);
	assert_int_equal(tmem_flush_page(f->s, C, 0, &oid, 0), -ESRCH);
	assert_int_equal(tmem_flush_object(f->s, C, 0, &oid), -ESRCH);
	assert_int_equal(tmem_client_stats(f->s, C, &st), -ESRCH);
	/* Names longer than the buffer are cut, not refused. */
	assert_int_equal(tmem_client_new(f->s, C,
		"a-very-long-guest-name-that-does-not-fit-in-32-bytes", NULL), 0);
	assert_int_equal(tmem_client_destroy(f->s, C), 0);
	assert_int_equal(tmem_client_destroy(f->s, C), -ESRCH);
	fx_check(f);
}

static void pool_errors(void **state)
{
	struct fx *f = *state;
	struct tmem_uuid zero = uuid_of(0), u = uuid_of(9);
	uint32_t id, i;

	assert_int_equal(tmem_pool_new(f->s, A, 1u << 2, NULL, &id), -EINVAL);
	assert_int_equal(tmem_pool_new(f->s, A, 0, NULL, NULL), -EINVAL);
	/* Shared pools are named by a UUID: none, or all-zero, is refused. */
	assert_int_equal(tmem_pool_new(f->s, A, TMEM_POOL_SHARED, NULL, &id), -EINVAL);
	assert_int_equal(tmem_pool_new(f->s, A, TMEM_POOL_SHARED, &zero, &id), -EINVAL);
	/* A private pool ignores a UUID. */
	assert_int_equal(tmem_pool_new(f->s, A, 0, &u, &id), 0);
	assert_int_equal(id, 0);
	for (i = 1; i < TMEM_MAX_POOLS_PER_CLIENT; i++) {
		assert_int_equal(tmem_pool_new(f->s, A, i & 1, NULL, &id), 0);
		assert_int_equal(id, i);
	}
	assert_int_equal(tmem_pool_new(f->s, A, 0, NULL, &id), -EMFILE);
	assert_int_equal(sstats(f).pools, TMEM_MAX_POOLS_PER_CLIENT);
	/* The lowest free id is reused, like a file descriptor. */
	assert_int_equal(tmem_pool_destroy(f->s, A, 5), 0);
	assert_int_equal(tmem_pool_destroy(f->s, A, 5), -EBADF);
	assert_int_equal(tmem_pool_new(f->s, A, 0, NULL, &id), 0);
	assert_int_equal(id, 5);
	assert_int_equal(tmem_pool_destroy(f->s, A, TMEM_MAX_POOLS_PER_CLIENT), -EBADF);
	assert_int_equal(tmem_pool_destroy(f->s, A, UINT32_MAX), -EBADF);
	/* B's pool ids are its own. */
	assert_int_equal(tmem_pool_destroy(f->s, B, 0), -EBADF);
	fx_check(f);
}

static void page_errors(void **state)
{
	struct fx *f = *state;
	struct tmem_oid oid = oid_of(1);
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_stats st;

	text_page(f->in, 1);
	assert_int_equal(tmem_put(f->s, A, p, &oid, 0, f->in, PG - 1), -EINVAL);
	assert_int_equal(tmem_put(f->s, A, p, &oid, 0, f->in, PG + 1), -EINVAL);
	assert_int_equal(tmem_put(f->s, A, p, &oid, 0, f->in, 0), -EINVAL);
	assert_int_equal(tmem_put(f->s, A, p, &oid, 0, NULL, PG), -EINVAL);
	assert_int_equal(tmem_put(f->s, A, p, NULL, 0, f->in, PG), -EINVAL);
	assert_int_equal(tmem_get(f->s, A, p, &oid, 0, f->out, PG / 2), -EINVAL);
	assert_int_equal(tmem_get(f->s, A, p, &oid, 0, NULL, PG), -EINVAL);
	assert_int_equal(tmem_get(f->s, A, p, NULL, 0, f->out, PG), -EINVAL);
	assert_int_equal(tmem_flush_page(f->s, A, p, NULL, 0), -EINVAL);
	assert_int_equal(tmem_flush_object(f->s, A, p, NULL), -EINVAL);
	/* Bad pool ids. */
	assert_int_equal(put(f, A, TMEM_MAX_POOLS_PER_CLIENT, 1, 0, f->in), -EBADF);
	assert_int_equal(put(f, A, UINT32_MAX, 1, 0, f->in), -EBADF);
	assert_int_equal(put(f, A, 7, 1, 0, f->in), -EBADF);
	assert_int_equal(get(f, A, 7, 1, 0), -EBADF);
	assert_int_equal(flush(f, A, 7, 1, 0), -EBADF);
	assert_int_equal(tmem_flush_object(f->s, A, 7, &oid), -EBADF);
	/* Absent pages and objects. */
	assert_int_equal(get(f, A, p, 1, 0), -ENOENT);
	assert_int_equal(f->out[0], 0xa5);	/* buffer untouched */
	assert_int_equal(flush(f, A, p, 1, 0), -ENOENT);
	assert_int_equal(tmem_flush_object(f->s, A, p, &oid), -ENOENT);
	/* A page exists, a neighbour does not. */
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	assert_int_equal(get(f, A, p, 1, 1), -ENOENT);
	assert_int_equal(get(f, A, p, 2, 0), -ENOENT);
	/* A destroyed pool's id is dead. */
	assert_int_equal(tmem_pool_destroy(f->s, A, p), 0);
	assert_int_equal(get(f, A, p, 1, 0), -EBADF);
	assert_int_equal(put(f, A, p, 1, 0, f->in), -EBADF);
	st = cstats(f, A);
	assert_int_equal(st.persistent_pages, 0);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.charged_bytes, 0);
	fx_check(f);
}

/* ---- basic semantics ---- */

static void roundtrip_kinds(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	uint8_t text[PG], rnd[PG], zero[PG];
	struct tmem_stats st;
	int round;

	text_page(text, 1);
	random_page(rnd);
	memset(zero, 0, PG);
	assert_int_equal(put(f, A, p, 1, 0, text), 0);
	assert_int_equal(put(f, A, p, 1, 1, rnd), 0);
	assert_int_equal(put(f, A, p, 2, 0, zero), 0);
	for (round = 0; round < 2; round++) {	/* persistent: not exclusive */
		assert_int_equal(get(f, A, p, 1, 0), 0);
		assert_memory_equal(f->out, text, PG);
		assert_int_equal(get(f, A, p, 1, 1), 0);
		assert_memory_equal(f->out, rnd, PG);
		assert_int_equal(get(f, A, p, 2, 0), 0);
		assert_memory_equal(f->out, zero, PG);
	}
	st = cstats(f, A);
	assert_int_equal(st.persistent_pages, 3);
	assert_int_equal(st.ephemeral_pages, 0);
	assert_int_equal(st.zero_pages, 1);
	assert_int_equal(st.raw_pages, 1);
	assert_int_equal(st.logical_bytes, 3 * PG);
	assert_true(st.compressed_bytes > PG && st.compressed_bytes < PG + PG / 2);
	assert_int_equal(st.stored_bytes, st.compressed_bytes);
	assert_true(st.compression_ratio > 1.1);
	assert_true(st.dedup_ratio > 0.99 && st.dedup_ratio < 1.01);
	assert_int_equal(st.puts, 3);
	assert_int_equal(st.gets, 6);
	assert_int_equal(st.hits, 6);
	assert_int_equal(sstats(f).objects, 2);
	fx_check(f);
}

/* One put and one get in 8 (per thread) are timed into the store's
 * latency percentiles; a fresh store has none.  Puts and gets alternate:
 * each operation is sampled on its own count, so 64 of each time 8 of
 * each, wherever this thread's counts stood. */
static void latency_is_sampled(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_store_stats ss = sstats(f);
	uint8_t text[PG];
	unsigned i;

	assert_int_equal(ss.put_timed, 0);
	assert_int_equal(ss.put_p50_ns, 0);
	assert_int_equal(ss.get_timed, 0);
	text_page(text, 7);
	for (i = 0; i < 64; i++) {
		assert_int_equal(put(f, A, p, 1, i, text), 0);
		assert_int_equal(get(f, A, p, 1, i), 0);
	}
	ss = sstats(f);
	assert_int_equal(ss.put_timed, 64 / 8);
	assert_int_equal(ss.get_timed, 64 / 8);
	assert_true(ss.put_p50_ns > 0 && ss.put_p50_ns <= ss.put_p99_ns);
	assert_true(ss.get_p50_ns > 0 && ss.get_p50_ns <= ss.get_p99_ns);
	/* sane magnitudes: more than a clock read, less than a second */
	assert_true(ss.put_p99_ns < 1000000000ull);
	assert_true(ss.get_p99_ns < 1000000000ull);
}

static void private_pool_isolation(void **state)
{
	struct fx *f = *state;
	uint32_t pa = pool(f, A, TMEM_POOL_PERSISTENT), pb;
	struct tmem_oid oid = oid_of(1);

	text_page(f->in, 1);
	assert_int_equal(put(f, A, pa, 1, 0, f->in), 0);
	/* B holds no pool id: A's is not reachable from B. */
	assert_int_equal(get(f, B, pa, 1, 0), -EBADF);
	assert_int_equal(put(f, B, pa, 1, 0, f->in), -EBADF);
	assert_int_equal(flush(f, B, pa, 1, 0), -EBADF);
	assert_int_equal(tmem_flush_object(f->s, B, pa, &oid), -EBADF);
	assert_int_equal(tmem_pool_destroy(f->s, B, pa), -EBADF);
	/* B's own pool with the same id is a different pool. */
	pb = pool(f, B, TMEM_POOL_PERSISTENT);
	assert_int_equal(pb, pa);
	assert_int_equal(get(f, B, pb, 1, 0), -ENOENT);
	assert_int_equal(tmem_flush_object(f->s, B, pb, &oid), -ENOENT);
	text_page(f->in, 2);
	assert_int_equal(put(f, B, pb, 1, 0, f->in), 0);
	assert_int_equal(get(f, A, pa, 1, 0), 0);
	text_page(f->in, 1);
	assert_memory_equal(f->out, f->in, PG);
	fx_check(f);
}

static void exclusive_get_private_ephemeral(void **state)
{
	struct fx *f = *state;
	uint32_t pe = pool(f, A, 0), pp = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_stats st;

	text_page(f->in, 3);
	assert_int_equal(put(f, A, pe, 1, 0, f->in), 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 1);
	assert_int_equal(get(f, A, pe, 1, 0), 0);
	assert_memory_equal(f->out, f->in, PG);
	assert_int_equal(get(f, A, pe, 1, 0), -ENOENT);	/* it left */
	st = cstats(f, A);
	assert_int_equal(st.ephemeral_pages, 0);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(sstats(f).objects, 0);
	/* Persistent: stays. */
	assert_int_equal(put(f, A, pp, 1, 0, f->in), 0);
	assert_int_equal(get(f, A, pp, 1, 0), 0);
	assert_int_equal(get(f, A, pp, 1, 0), 0);
	assert_memory_equal(f->out, f->in, PG);
	/* Zero pages too. */
	memset(f->in, 0, PG);
	assert_int_equal(put(f, A, pe, 2, 9, f->in), 0);
	assert_int_equal(get(f, A, pe, 2, 9), 0);
	assert_memory_equal(f->out, f->in, PG);
	assert_int_equal(get(f, A, pe, 2, 9), -ENOENT);
	fx_check(f);
}

static void shared_pools(void **state)
{
	struct fx *f = *state;
	struct tmem_uuid u1 = uuid_of(1), u2 = uuid_of(2);
	uint32_t pa, pa2, pb, pb2, pc;
	struct tmem_stats sa, sb;
	int i;

	assert_int_equal(tmem_pool_new(f->s, A, TMEM_POOL_SHARED, &u1, &pa), 0);
	text_page(f->in, 11);
	assert_int_equal(put(f, A, pa, 1, 0, f->in), 0);
	/* Opening again returns the same id. */
	assert_int_equal(tmem_pool_new(f->s, A, TMEM_POOL_SHARED, &u1, &pa2), 0);
	assert_int_equal(pa2, pa);
	/* B joins by UUID, gets its own id, and sees A's page; not exclusive. */
	assert_int_equal(pool(f, B, 0), 0);	/* occupy B's id 0 */
	assert_int_equal(tmem_pool_new(f->s, B, TMEM_POOL_SHARED, &u1, &pb), 0);
	assert_int_equal(pb, 1);
	for (i = 0; i < 2; i++) {
		assert_int_equal(get(f, B, pb, 1, 0), 0);
		assert_memory_equal(f->out, f->in, PG);
	}
	assert_int_equal(get(f, A, pa, 1, 0), 0);
	/* Persistence must match. */
	assert_int_equal(tmem_pool_new(f->s, B, TMEM_POOL_SHARED | TMEM_POOL_PERSISTENT,
				       &u1, &pb2), -EINVAL);
	/* Another UUID is another pool. */
	assert_int_equal(tmem_pool_new(f->s, B, TMEM_POOL_SHARED, &u2, &pb2), 0);
	assert_int_equal(get(f, B, pb2, 1, 0), -ENOENT);
	/* A client that did not open it cannot use it. */
	assert_int_equal(tmem_client_new(f->s, C, "c", NULL), 0);
	assert_int_equal(get(f, C, pa, 1, 0), -EBADF);
	assert_int_equal(get(f, C, pb, 1, 0), -EBADF);
	assert_int_equal(tmem_pool_new(f->s, C, TMEM_POOL_SHARED, &u1, &pc), 0);
	assert_int_equal(get(f, C, pc, 1, 0), 0);
	/* Pages B puts are charged to the owner, A. */
	sb = cstats(f, B);
	text_page(f->in, 12);
	assert_int_equal(put(f, B, pb, 1, 1, f->in), 0);
	assert_int_equal(cstats(f, B).charged_bytes, sb.charged_bytes);
	sa = cstats(f, A);
	assert_int_equal(sa.ephemeral_pages, 2);
	assert_int_equal(cstats(f, B).puts, 1);
	assert_int_equal(sstats(f).pools, 3);	/* u1, u2, B's private */
	fx_check(f);

	/* The owner leaves: pages stay, charge and LRU pass to B (next). */
	assert_int_equal(tmem_pool_destroy(f->s, A, pa), 0);
	assert_int_equal(get(f, A, pa, 1, 0), -EBADF);
	assert_int_equal(get(f, B, pb, 1, 1), 0);
	assert_memory_equal(f->out, f->in, PG);
	sa = cstats(f, A);
	sb = cstats(f, B);
	assert_int_equal(sa.charged_bytes, 0);
	assert_int_equal(sa.ephemeral_pages, 0);
	assert_int_equal(sb.ephemeral_pages, 2);
	assert_true(sb.charged_bytes > 0);
	fx_check(f);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);	/* B's LRU works */
	assert_int_equal(cstats(f, B).ephemeral_pages, 1);
	assert_int_equal(cstats(f, B).evictions, 1);
	fx_check(f);
	/* Last users leave: the pool dies with its pages. */
	assert_int_equal(tmem_pool_destroy(f->s, B, pb), 0);
	assert_int_equal(get(f, C, pc, 1, 1), 0);
	assert_int_equal(tmem_pool_destroy(f->s, C, pc), 0);
	assert_int_equal(sstats(f).total.ephemeral_pages, 0);
	assert_int_equal(sstats(f).pools, 2);
	fx_check(f);
}

static void shared_persistent_transfer_on_client_destroy(void **state)
{
	struct fx *f = *state;
	struct tmem_uuid u = uuid_of(7);
	uint32_t flags = TMEM_POOL_SHARED | TMEM_POOL_PERSISTENT, pa, pb;
	uint32_t i;

	assert_int_equal(tmem_pool_new(f->s, A, flags, &u, &pa), 0);
	assert_int_equal(tmem_pool_new(f->s, B, flags, &u, &pb), 0);
	(void)pool(f, A, TMEM_POOL_PERSISTENT);
	for (i = 0; i < 20; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, pa, i % 3, i, f->in), 0);
		assert_int_equal(put(f, A, 1, 0, i, f->in), 0);
	}
	assert_int_equal(tmem_client_destroy(f->s, A), 0);
	assert_int_equal(f->hook.total[A], 0);
	assert_int_equal(cstats(f, B).persistent_pages, 20);
	for (i = 0; i < 20; i++) {
		model_page(f->in, i);
		assert_int_equal(get(f, B, pb, i % 3, i), 0);
		assert_memory_equal(f->out, f->in, PG);
	}
	fx_check(f);
	assert_int_equal(tmem_client_destroy(f->s, B), 0);
	assert_int_equal(f->hook.total[B], 0);
	assert_int_equal(sstats(f).pools, 0);
	assert_int_equal(sstats(f).total.charged_bytes, 0);
	fx_check(f);
}

static void replace_put(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_stats st;

	text_page(f->in, 1);
	assert_int_equal(put(f, A, p, 1, 5, f->in), 0);
	text_page(f->in, 2);
	assert_int_equal(put(f, A, p, 1, 5, f->in), 0);
	assert_int_equal(get(f, A, p, 1, 5), 0);
	assert_memory_equal(f->out, f->in, PG);
	st = cstats(f, A);
	assert_int_equal(st.persistent_pages, 1);
	assert_int_equal(sstats(f).blobs, 1);
	memset(f->in, 0, PG);
	assert_int_equal(put(f, A, p, 1, 5, f->in), 0);
	assert_int_equal(get(f, A, p, 1, 5), 0);
	assert_memory_equal(f->out, f->in, PG);
	st = cstats(f, A);
	assert_int_equal(st.zero_pages, 1);
	assert_int_equal(st.stored_bytes, 0);
	assert_int_equal(sstats(f).blobs, 0);
	random_page(f->in);
	assert_int_equal(put(f, A, p, 1, 5, f->in), 0);
	assert_int_equal(get(f, A, p, 1, 5), 0);
	assert_memory_equal(f->out, f->in, PG);
	st = cstats(f, A);
	assert_int_equal(st.zero_pages, 0);
	assert_int_equal(st.raw_pages, 1);
	assert_int_equal(st.persistent_pages, 1);
	/* Replacing with identical content keeps one blob. */
	assert_int_equal(put(f, A, p, 1, 5, f->in), 0);
	assert_int_equal(sstats(f).blobs, 1);
	fx_check(f);
}

/* A replacing put that fails leaves no page, never the older copy. */
static void failing_replace_leaves_nothing(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	uint32_t e = pool(f, A, 0);

	text_page(f->in, 1);
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	assert_int_equal(put(f, A, e, 1, 0, f->in), 0);
	f->hook.refuse_all = true;
	random_page(f->in);	/* bigger: needs growth */
	assert_int_equal(put(f, A, p, 1, 0, f->in), -ENOSPC);
	assert_int_equal(get(f, A, p, 1, 0), -ENOENT);
	/* The ephemeral page was evicted trying to make room, then the put
	 * into the ephemeral pool fails the same way. */
	assert_int_equal(put(f, A, e, 1, 0, f->in), -ENOSPC);
	assert_int_equal(get(f, A, e, 1, 0), -ENOENT);
	assert_int_equal(cstats(f, A).persistent_pages, 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 0);
	assert_int_equal(cstats(f, A).refused_puts, 2);
	assert_int_equal(sstats(f).objects, 0);
	assert_int_equal(cstats(f, A).charged_bytes, 0);
	f->hook.refuse_all = false;
	fx_check(f);
}

static void flush_page_and_object(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_oid o1 = oid_of(1);
	uint32_t i;

	for (i = 0; i < 10; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, p, 1, i * 1000, f->in), 0);
	}
	for (i = 0; i < 3; i++) {
		model_page(f->in, 100 + i);
		assert_int_equal(put(f, A, p, 2, i, f->in), 0);
	}
	assert_int_equal(tmem_flush_object(f->s, A, p, &o1), 0);
	assert_int_equal(cstats(f, A).flushes, 10);
	assert_int_equal(cstats(f, A).persistent_pages, 3);
	assert_int_equal(get(f, A, p, 1, 5000), -ENOENT);
	assert_int_equal(tmem_flush_object(f->s, A, p, &o1), -ENOENT);
	for (i = 0; i < 3; i++) {
		model_page(f->in, 100 + i);
		assert_int_equal(get(f, A, p, 2, i), 0);
		assert_memory_equal(f->out, f->in, PG);
	}
	assert_int_equal(flush(f, A, p, 2, 1), 0);
	assert_int_equal(flush(f, A, p, 2, 1), -ENOENT);
	assert_int_equal(get(f, A, p, 2, 1), -ENOENT);
	assert_int_equal(cstats(f, A).flushes, 11);
	assert_int_equal(sstats(f).objects, 1);
	fx_check(f);
}

/* Indexes across the whole 32-bit range: the radix tree grows and shrinks. */
static void radix_index_range(void **state)
{
	static const uint32_t idx[] = {
		0, 1, 63, 64, 4095, 4096, 262143, 262144, 1u << 24,
		1u << 30, (1u << 30) - 1, 1u << 31, UINT32_MAX, UINT32_MAX - 64,
	};
	static const unsigned order[] = { 12, 0, 5, 13, 1, 9, 2, 11, 3, 7, 4, 10, 6, 8 };
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	size_t n = sizeof(idx) / sizeof(idx[0]), i;

	for (i = 0; i < n; i++) {
		text_page(f->in, (unsigned)i);
		assert_int_equal(put(f, A, p, 1, idx[i], f->in), 0);
		assert_int_equal(tmem_check(f->s), 0);
	}
	for (i = 0; i < n; i++) {
		text_page(f->in, (unsigned)i);
		assert_int_equal(get(f, A, p, 1, idx[i]), 0);
		assert_memory_equal(f->out, f->in, PG);
	}
	assert_int_equal(get(f, A, p, 1, 2), -ENOENT);
	assert_int_equal(get(f, A, p, 1, (1u << 31) + 1), -ENOENT);
	for (i = 0; i < n; i++) {
		assert_int_equal(flush(f, A, p, 1, idx[order[i]]), 0);
		assert_int_equal(tmem_check(f->s), 0);
	}
	assert_int_equal(sstats(f).objects, 0);
	assert_int_equal(sstats(f).meta_bytes, 0);
	assert_int_equal(cstats(f, A).charged_bytes, 0);
	fx_check(f);
}

static void destroy_pool_frees_everything(void **state)
{
	struct fx *f = *state;
	uint64_t base = nonslab_allocs(f);
	struct tmem_store_stats ss;
	struct tmem_stats st;
	uint32_t pp, pe, i;

	pp = pool(f, A, TMEM_POOL_PERSISTENT);
	pe = pool(f, A, 0);
	for (i = 0; i < 600; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, i % 2 ? pp : pe, i % 40,
				     i * 7919u, f->in), 0);
	}
	ss = sstats(f);
	assert_int_equal(ss.total.persistent_pages + ss.total.ephemeral_pages, 600);
	assert_true(ss.blobs > 0 && ss.objects == 40 && ss.meta_bytes > 0);
	fx_check(f);
	assert_int_equal(tmem_pool_destroy(f->s, A, pp), 0);
	assert_int_equal(tmem_pool_destroy(f->s, A, pe), 0);
	ss = sstats(f);
	assert_int_equal(ss.total.persistent_pages, 0);
	assert_int_equal(ss.total.ephemeral_pages, 0);
	assert_int_equal(ss.total.zero_pages, 0);
	assert_int_equal(ss.total.stored_bytes, 0);
	assert_int_equal(ss.total.compressed_bytes, 0);
	assert_int_equal(ss.total.charged_bytes, 0);
	assert_int_equal(ss.pools, 0);
	assert_int_equal(ss.objects, 0);
	assert_int_equal(ss.blobs, 0);
	assert_int_equal(ss.meta_bytes, 0);
	assert_int_equal(ss.slab_used_bytes, 0);
	st = cstats(f, A);
	assert_int_equal(st.charged_bytes, 0);
	assert_int_equal(st.stored_bytes, 0);
	assert_int_equal(f->hook.total[A], 0);
	assert_int_equal(nonslab_allocs(f), base);	/* no leaked record */
	fx_check(f);
}

/* ---- storage ---- */

static void zero_pages_are_flags(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_store_stats ss;
	uint32_t i;

	memset(f->in, 0, PG);
	for (i = 0; i < 100; i++)
		assert_int_equal(put(f, A, p, 1, i, f->in), 0);
	ss = sstats(f);
	assert_int_equal(ss.total.zero_pages, 100);
	assert_int_equal(ss.total.stored_bytes, 0);
	assert_int_equal(ss.total.compressed_bytes, 0);
	assert_int_equal(ss.blobs, 0);
	assert_int_equal(ss.slab_used_bytes, 0);
	/* Only records are charged: descriptors, object, tree nodes. */
	assert_int_equal(ss.total.charged_bytes, ss.meta_bytes);
	assert_true(ss.meta_bytes < 100 * 128);
	fx_check(f);
}

static void incompressible_stored_raw(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_store_stats ss;

	random_page(f->in);
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	ss = sstats(f);
	assert_int_equal(ss.total.raw_pages, 1);
	assert_int_equal(ss.total.stored_bytes, PG);
	assert_int_equal(ss.total.compressed_bytes, PG);
	text_page(f->in, 1);
	assert_int_equal(put(f, A, p, 1, 1, f->in), 0);
	ss = sstats(f);
	assert_int_equal(ss.total.raw_pages, 1);
	assert_true(ss.total.stored_bytes < PG + PG * 3 / 4);
	fx_check(f);
}

static void raw_threshold_and_zstd(void **state)
{
	const struct pagecomp_ops *ops;
	struct tmem_store_config cfg = { .raw_threshold_bytes = 64 };
	struct tmem_store_stats ss;
	struct tmem_store *s;
	struct tmem_oid oid = oid_of(1);
	uint8_t in[PG], out[PG];
	uint64_t lz4_stored;
	uint32_t p;

	(void)state;
	assert_int_equal(pagecomp_find("lz4", &ops), 0);
	assert_ptr_equal(ops, &pagecomp_lz4);
	assert_int_equal(pagecomp_find("zstd", &ops), 0);
	assert_ptr_equal(ops, &pagecomp_zstd);
	assert_int_equal(pagecomp_find("lz4-fast", &ops), 0);
	assert_ptr_equal(ops, &pagecomp_lz4_fast);
	assert_int_equal(pagecomp_find("liblz4", &ops), 0);
	assert_ptr_equal(ops, &pagecomp_liblz4);
	assert_int_equal(pagecomp_find("brotli", &ops), -ENOENT);
	assert_int_equal(pagecomp_find(NULL, &ops), -ENOENT);

	/* A tiny threshold stores even text raw. */
	text_page(in, 5);
	assert_int_equal(tmem_store_new(&cfg, &s), 0);
	assert_int_equal(tmem_client_new(s, A, "a", NULL), 0);
	assert_int_equal(tmem_pool_new(s, A, TMEM_POOL_PERSISTENT, NULL, &p), 0);
	assert_int_equal(tmem_put(s, A, p, &oid, 0, in, PG), 0);
	assert_int_equal(tmem_store_stats(s, &ss), 0);
	assert_int_equal(ss.total.raw_pages, 1);
	tmem_store_free(s);

	/* lz4 vs zstd on the same text page. */
	cfg.raw_threshold_bytes = 0;
	assert_int_equal(tmem_store_new(&cfg, &s), 0);
	assert_int_equal(tmem_client_new(s, A, "a", NULL), 0);
	assert_int_equal(tmem_pool_new(s, A, TMEM_POOL_PERSISTENT, NULL, &p), 0);
	assert_int_equal(tmem_put(s, A, p, &oid, 0, in, PG), 0);
	assert_int_equal(tmem_store_stats(s, &ss), 0);
	lz4_stored = ss.total.stored_bytes;
	tmem_store_free(s);

	cfg.comp = &pagecomp_zstd;
	assert_int_equal(tmem_store_new(&cfg, &s), 0);
	assert_int_equal(tmem_client_new(s, A, "a", NULL), 0);
	assert_int_equal(tmem_pool_new(s, A, TMEM_POOL_PERSISTENT, NULL, &p), 0);
	assert_int_equal(tmem_put(s, A, p, &oid, 0, in, PG), 0);
	random_page(out);
	assert_int_equal(tmem_put(s, A, p, &oid, 1, out, PG), 0);
	memset(out, 0, PG);
	assert_int_equal(tmem_get(s, A, p, &oid, 0, out, PG), 0);
	assert_memory_equal(out, in, PG);
	assert_int_equal(tmem_store_stats(s, &ss), 0);
	assert_true(ss.total.stored_bytes - PG < lz4_stored);
	assert_int_equal(ss.total.raw_pages, 1);
	assert_int_equal(tmem_check(s), 0);
	tmem_store_free(s);
}

/* Every compressor behind the store: pages of each kind come back intact,
 * compressible ones are kept compressed, the rest raw. */
static void every_compressor_roundtrips(void **state)
{
	static const struct pagecomp_ops *const comps[] = {
		&pagecomp_lz4, &pagecomp_lz4_fast, &pagecomp_liblz4, &pagecomp_zstd,
	};
	struct tmem_oid oid = oid_of(3);
	struct tmem_store_stats ss;
	uint8_t pages[4][PG], out[PG];
	size_t c;
	uint32_t p, i;

	(void)state;
	text_page(pages[0], 9);
	random_page(pages[1]);
	memset(pages[2], 0, PG);
	for (i = 0; i < PG; i++)	/* long runs: compresses with any parse */
		pages[3][i] = (uint8_t)(i / 512);
	for (c = 0; c < sizeof(comps) / sizeof(comps[0]); c++) {
		struct tmem_store_config cfg = { .comp = comps[c] };
		struct tmem_store *s;

		assert_int_equal(tmem_store_new(&cfg, &s), 0);
		assert_int_equal(tmem_client_new(s, A, "a", NULL), 0);
		assert_int_equal(tmem_pool_new(s, A, TMEM_POOL_PERSISTENT, NULL, &p), 0);
		for (i = 0; i < 4; i++)
			assert_int_equal(tmem_put(s, A, p, &oid, i, pages[i], PG), 0);
		for (i = 0; i < 4; i++) {
			memset(out, 0xcc, PG);
			assert_int_equal(tmem_get(s, A, p, &oid, i, out, PG), 0);
			assert_memory_equal(out, pages[i], PG);
		}
		assert_int_equal(tmem_store_stats(s, &ss), 0);
		assert_int_equal(ss.total.zero_pages, 1);
		assert_true(ss.total.raw_pages >= 1 && ss.total.raw_pages <= 2);
		assert_true(ss.total.compressed_bytes < 3 * PG);
		assert_int_equal(tmem_check(s), 0);
		tmem_store_free(s);
	}
}

/* ---- dedup ---- */

static void dedup_within_client(void **state)
{
	struct fx *f = *state;
	uint32_t pp = pool(f, A, TMEM_POOL_PERSISTENT), pe = pool(f, A, 0);
	struct tmem_store_stats ss;
	struct tmem_stats st;
	uint64_t one_blob;
	uint32_t i;

	text_page(f->in, 42);
	assert_int_equal(put(f, A, pp, 0, 0, f->in), 0);
	one_blob = cstats(f, A).charged_bytes;
	for (i = 1; i < 10; i++)
		assert_int_equal(put(f, A, pp, i, 0, f->in), 0);
	assert_int_equal(put(f, A, pe, 0, 0, f->in), 0);	/* same domain */
	ss = sstats(f);
	st = cstats(f, A);
	assert_int_equal(ss.blobs, 1);
	assert_int_equal(st.compressed_bytes, 11 * st.stored_bytes);
	assert_true(st.dedup_ratio > 10.99 && st.dedup_ratio < 11.01);
	/* Charged one blob (header + payload rounded to 64); every other
	 * byte is records. */
	assert_true(one_blob > st.stored_bytes);
	assert_int_equal(st.charged_bytes - ss.meta_bytes,
			 (st.stored_bytes + 40 + 63) / 64 * 64);
	/* A page differing in one byte is not shared. */
	f->in[100] ^= 1;
	assert_int_equal(put(f, A, pp, 20, 0, f->in), 0);
	assert_int_equal(sstats(f).blobs, 2);
	f->in[100] ^= 1;
	/* The blob outlives all but its last reference. */
	for (i = 0; i < 10; i++)
		assert_int_equal(flush(f, A, pp, i, 0), 0);
	assert_int_equal(sstats(f).blobs, 2);
	assert_int_equal(get(f, A, pe, 0, 0), 0);
	assert_memory_equal(f->out, f->in, PG);
	assert_int_equal(sstats(f).blobs, 1);
	fx_check(f);
}

static void no_dedup_store(void **state)
{
	struct tmem_store_config cfg = { .flags = TMEM_STORE_NO_DEDUP };
	struct tmem_store_stats ss;
	struct tmem_oid oid = oid_of(1);
	struct tmem_store *s;
	uint8_t in[PG], out[PG];
	uint32_t p, i;

	(void)state;
	text_page(in, 9);
	assert_int_equal(tmem_store_new(&cfg, &s), 0);
	assert_int_equal(tmem_client_new(s, A, "a", NULL), 0);
	assert_int_equal(tmem_pool_new(s, A, TMEM_POOL_PERSISTENT, NULL, &p), 0);
	for (i = 0; i < 3000; i++)
		assert_int_equal(tmem_put(s, A, p, &oid, i, in, PG), 0);
	assert_int_equal(tmem_put(s, A, p, &oid, 0, in, PG), 0);	/* replace */
	assert_int_equal(tmem_store_stats(s, &ss), 0);
	assert_int_equal(ss.blobs, 3000);
	assert_int_equal(tmem_check(s), 0);
	for (i = 0; i < 3000; i += 7) {
		assert_int_equal(tmem_get(s, A, p, &oid, i, out, PG), 0);
		assert_memory_equal(out, in, PG);
	}
	assert_int_equal(tmem_flush_object(s, A, p, &oid), 0);
	assert_int_equal(tmem_store_stats(s, &ss), 0);
	assert_int_equal(ss.blobs, 0);
	tmem_store_free(s);
}

static void no_cross_client_dedup_by_default(void **state)
{
	struct fx *f = *state;
	uint32_t pa = pool(f, A, TMEM_POOL_PERSISTENT);
	uint32_t pb = pool(f, B, TMEM_POOL_PERSISTENT);

	text_page(f->in, 42);
	assert_int_equal(put(f, A, pa, 0, 0, f->in), 0);
	assert_int_equal(put(f, B, pb, 0, 0, f->in), 0);
	assert_int_equal(sstats(f).blobs, 2);
	assert_int_equal(cstats(f, A).charged_bytes, cstats(f, B).charged_bytes);
	fx_check(f);
}

static void cross_client_dedup_when_enabled(void **state)
{
	struct fx *f = *state;
	uint32_t pa = pool(f, A, TMEM_POOL_PERSISTENT);
	uint32_t pb = pool(f, B, TMEM_POOL_PERSISTENT);
	struct tmem_stats sa, sb;
	struct tmem_store_stats ss;

	text_page(f->in, 42);
	assert_int_equal(put(f, A, pa, 0, 0, f->in), 0);
	sa = cstats(f, A);
	assert_int_equal(put(f, B, pb, 0, 0, f->in), 0);
	assert_int_equal(put(f, B, pb, 0, 1, f->in), 0);
	ss = sstats(f);
	assert_int_equal(ss.blobs, 1);
	sb = cstats(f, B);
	/* Each domain pays as if alone; A's charge did not move. */
	assert_int_equal(cstats(f, A).charged_bytes, sa.charged_bytes);
	assert_int_equal(sb.stored_bytes, sa.stored_bytes);
	assert_int_equal(ss.total.stored_bytes, sa.stored_bytes);
	assert_true(ss.total.dedup_ratio > 2.99);
	fx_check(f);
	/* The first referencer leaves; the blob stays for B. */
	assert_int_equal(flush(f, A, pa, 0, 0), 0);
	assert_int_equal(sstats(f).blobs, 1);
	assert_int_equal(get(f, B, pb, 0, 1), 0);
	assert_memory_equal(f->out, f->in, PG);
	fx_check(f);
	/* A joins again, then B leaves entirely. */
	assert_int_equal(put(f, A, pa, 0, 0, f->in), 0);
	assert_int_equal(tmem_client_destroy(f->s, B), 0);
	assert_int_equal(sstats(f).blobs, 1);
	assert_int_equal(get(f, A, pa, 0, 0), 0);
	assert_memory_equal(f->out, f->in, PG);
	fx_check(f);
}

/* ---- eviction ---- */

static void eviction_is_lru(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, 0);
	uint64_t freed = 0;
	uint32_t i;

	for (i = 0; i < 10; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, p, 1, i, f->in), 0);
	}
	model_page(f->in, 0);
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);	/* 0 is now MRU */
	assert_int_equal(tmem_shrink(f->s, 1, &freed), 0);
	assert_true(freed > 0);
	assert_int_equal(cstats(f, A).evictions, 1);
	assert_int_equal(cstats(f, A).ephemeral_pages, 9);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(get(f, A, p, 1, 1), -ENOENT);
	assert_int_equal(get(f, A, p, 1, 2), -ENOENT);
	for (i = 3; i < 10; i++)
		assert_int_equal(get(f, A, p, 1, i), 0);
	assert_int_equal(get(f, A, p, 1, 0), 0);
	model_page(f->in, 0);
	assert_memory_equal(f->out, f->in, PG);
	fx_check(f);
}

static void eviction_prefers_over_weight_client(void **state)
{
	struct fx *f = *state;
	struct tmem_client_params heavy = { .weight = 300 };
	uint32_t pa = pool(f, A, 0), pb = pool(f, B, 0);
	uint32_t i;

	for (i = 0; i < 10; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, pa, 1, i, f->in), 0);
	}
	for (i = 0; i < 5; i++) {
		model_page(f->in, 100 + i);
		assert_int_equal(put(f, B, pb, 1, i, f->in), 0);
	}
	/* Equal weights: A (10 pages) is over, B (5) is not. */
	for (i = 0; i < 5; i++)
		assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 5);
	assert_int_equal(cstats(f, B).ephemeral_pages, 5);
	assert_int_equal(cstats(f, B).evictions, 0);
	/* A's LRU pages went first. */
	assert_int_equal(get(f, A, pa, 1, 4), -ENOENT);
	assert_int_equal(cstats(f, A).ephemeral_pages, 5);
	/* Tie: the earlier client (A); then B, which is now over. */
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 4);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, B).ephemeral_pages, 4);
	/* Weight 300 vs 100: 4 pages of A weigh less than 4 of B. */
	assert_int_equal(tmem_client_set_params(f->s, A, &heavy), 0);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 4);
	assert_int_equal(cstats(f, B).ephemeral_pages, 2);
	/* B at 2/100 = 0.02 > A at 4/300 = 0.0133; at 1/100 < 0.0133: A. */
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, B).ephemeral_pages, 1);
	assert_int_equal(tmem_shrink(f->s, 1, NULL), 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 3);
	fx_check(f);
	/* A bulk shrink takes the rest, proportionally, then stops. */
	assert_int_equal(tmem_shrink(f->s, UINT64_MAX, NULL), 0);
	assert_int_equal(sstats(f).total.ephemeral_pages, 0);
	assert_int_equal(sstats(f).total.evictions, 15);
	fx_check(f);
}

static void persistent_never_evicted(void **state)
{
	struct fx *f = *state;
	uint32_t pp = pool(f, A, TMEM_POOL_PERSISTENT), pe = pool(f, A, 0);
	uint64_t freed = 0;
	uint32_t i;

	for (i = 0; i < 20; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, pp, 1, i, f->in), 0);
		assert_int_equal(put(f, A, pe, 1, i, f->in), 0);
	}
	assert_int_equal(tmem_shrink(f->s, UINT64_MAX, &freed), 0);
	assert_true(freed > 0);
	assert_int_equal(cstats(f, A).ephemeral_pages, 0);
	assert_int_equal(cstats(f, A).persistent_pages, 20);
	assert_int_equal(tmem_shrink(f->s, UINT64_MAX, &freed), 0);
	assert_int_equal(freed, 0);
	/* And when a put needs room, persistent pages are not the room. */
	f->hook.refuse_all = true;
	random_page(f->in);
	assert_int_equal(put(f, B, pool(f, B, TMEM_POOL_PERSISTENT), 1, 0, f->in),
			 -ENOSPC);
	f->hook.refuse_all = false;
	for (i = 0; i < 20; i++) {
		model_page(f->in, i);
		assert_int_equal(get(f, A, pp, 1, i), 0);
		assert_memory_equal(f->out, f->in, PG);
	}
	fx_check(f);
}

/* ---- quota and charge hook ---- */

static void persistent_quota(void **state)
{
	struct fx *f = *state;
	struct tmem_client_params q = { .max_persistent_pages = 3 };
	uint32_t pp = pool(f, A, TMEM_POOL_PERSISTENT), pe = pool(f, A, 0);
	uint32_t i;

	assert_int_equal(tmem_client_set_params(f->s, A, &q), 0);
	for (i = 0; i < 3; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, pp, 1, i, f->in), 0);
	}
	assert_int_equal(put(f, A, pp, 1, 3, f->in), -ENOSPC);
	assert_int_equal(put(f, A, pp, 2, 0, f->in), -ENOSPC);
	assert_int_equal(get(f, A, pp, 1, 3), -ENOENT);
	assert_int_equal(cstats(f, A).refused_puts, 2);
	assert_int_equal(sstats(f).objects, 1);
	/* Replacing is not growth; ephemeral pools are not under quota. */
	random_page(f->in);
	assert_int_equal(put(f, A, pp, 1, 0, f->in), 0);
	for (i = 0; i < 5; i++)
		assert_int_equal(put(f, A, pe, 1, i, f->in), 0);
	assert_int_equal(flush(f, A, pp, 1, 1), 0);
	assert_int_equal(put(f, A, pp, 1, 3, f->in), 0);
	/* Lowering the quota drops nothing. */
	q.max_persistent_pages = 1;
	assert_int_equal(tmem_client_set_params(f->s, A, &q), 0);
	assert_int_equal(cstats(f, A).persistent_pages, 3);
	assert_int_equal(put(f, A, pp, 1, 9, f->in), -ENOSPC);
	assert_int_equal(cstats(f, B).refused_puts, 0);
	fx_check(f);
}

static void charge_hook_refuses_persistent(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_store_stats before;

	text_page(f->in, 1);
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	f->hook.limit_client[A] = f->hook.total[A] + 1000;
	before = sstats(f);
	random_page(f->in);	/* 4160-byte object: over the limit */
	assert_int_equal(put(f, A, p, 1, 1, f->in), -ENOSPC);
	assert_int_equal(put(f, A, p, 2, 0, f->in), -ENOSPC);
	assert_int_equal(get(f, A, p, 1, 1), -ENOENT);
	assert_int_equal(sstats(f).total.charged_bytes, before.total.charged_bytes);
	assert_int_equal(sstats(f).objects, before.objects);
	assert_int_equal(sstats(f).blobs, before.blobs);
	assert_int_equal(cstats(f, A).refused_puts, 2);
	assert_int_equal(cstats(f, A).evictions, 0);
	/* Small growth still fits: a zero page costs only records. */
	memset(f->in, 0, PG);
	assert_int_equal(put(f, A, p, 1, 1, f->in), 0);
	fx_check(f);
}

static void refused_growth_evicts_ephemeral(void **state)
{
	struct fx *f = *state;
	uint32_t pa = pool(f, A, TMEM_POOL_PERSISTENT), pb = pool(f, B, 0);
	uint32_t i;

	for (i = 0; i < 20; i++) {
		random_page(f->in);
		assert_int_equal(put(f, B, pb, 1, i, f->in), 0);
	}
	/* The host is full: any growth must come out of ephemeral pages. */
	f->hook.limit_total = f->hook.total[A] + f->hook.total[B];
	random_page(f->in);
	assert_int_equal(put(f, A, pa, 1, 0, f->in), 0);
	assert_int_equal(get(f, A, pa, 1, 0), 0);
	assert_memory_equal(f->out, f->in, PG);
	assert_true(cstats(f, B).evictions >= 1);
	assert_int_equal(get(f, B, pb, 1, 0), -ENOENT);	/* B's LRU page */
	assert_true(f->hook.total[A] + f->hook.total[B] <= f->hook.limit_total);
	fx_check(f);
}

static void ephemeral_put_evicts_to_fit(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, 0);
	uint32_t i;

	random_page(f->in);
	assert_int_equal(put(f, A, p, 0, 0, f->in), 0);
	/* Room for about five raw pages. */
	f->hook.limit_total = (int64_t)cstats(f, A).charged_bytes * 5;
	for (i = 1; i <= 50; i++) {
		random_page(f->in);
		assert_int_equal(put(f, A, p, 0, i, f->in), 0);
	}
	assert_true(cstats(f, A).ephemeral_pages <= 5);
	assert_true(cstats(f, A).evictions >= 45);
	assert_int_equal(get(f, A, p, 0, 50), 0);
	assert_memory_equal(f->out, f->in, PG);
	assert_int_equal(get(f, A, p, 0, 1), -ENOENT);
	assert_true(f->hook.total[A] <= f->hook.limit_total);
	fx_check(f);
}

/* A put refused however much is evicted gives up after a bounded number. */
static void eviction_per_put_is_bounded(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, 0), q = pool(f, B, TMEM_POOL_PERSISTENT);
	uint32_t i;

	for (i = 0; i < 100; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, p, 1, i, f->in), 0);
	}
	f->hook.refuse_all = true;
	random_page(f->in);
	assert_int_equal(put(f, B, q, 1, 0, f->in), -ENOSPC);
	assert_int_equal(cstats(f, A).evictions, TMEM_EVICT_MAX_PER_PUT);
	assert_int_equal(cstats(f, A).ephemeral_pages, 100 - TMEM_EVICT_MAX_PER_PUT);
	f->hook.refuse_all = false;
	fx_check(f);
}

static void client_destroy_releases_charge(void **state)
{
	struct fx *f = *state;
	struct tmem_uuid u = uuid_of(3);
	uint32_t ps, pb, i;

	(void)pool(f, A, TMEM_POOL_PERSISTENT);
	(void)pool(f, A, 0);
	assert_int_equal(tmem_pool_new(f->s, A, TMEM_POOL_SHARED, &u, &ps), 0);
	assert_int_equal(tmem_pool_new(f->s, B, TMEM_POOL_SHARED, &u, &pb), 0);
	for (i = 0; i < 30; i++) {
		model_page(f->in, i);
		assert_int_equal(put(f, A, i % 3, 1, i, f->in), 0);
	}
	assert_true(f->hook.total[A] > 0);
	assert_int_equal(tmem_client_destroy(f->s, A), 0);
	assert_int_equal(f->hook.total[A], 0);
	assert_int_equal(cstats(f, B).ephemeral_pages, 10);	/* inherited */
	assert_true(f->hook.total[B] > 0);
	assert_int_equal(sstats(f).clients, 1);
	fx_check(f);
}

/* One netted delta per client per call; a shrinking replace reports less. */
static void hook_sees_net_deltas(void **state)
{
	struct fx *f = *state;
	uint32_t p = pool(f, A, TMEM_POOL_PERSISTENT);
	struct tmem_store_stats ss;
	unsigned calls;
	int64_t blob;

	text_page(f->in, 1);
	calls = f->hook.calls;
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	assert_int_equal(f->hook.calls, calls + 1);
	ss = sstats(f);
	/* Blob object + descriptor + object + one radix node, in one delta. */
	assert_int_equal(f->hook.last_delta, (int64_t)ss.total.charged_bytes);
	blob = (int64_t)(ss.total.charged_bytes - ss.meta_bytes);
	assert_int_equal(blob, (int64_t)((ss.total.stored_bytes + 40 + 63) / 64 * 64));
	/* Replace by a zero page: only the blob goes. */
	memset(f->in, 0, PG);
	calls = f->hook.calls;
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	assert_int_equal(f->hook.calls, calls + 1);
	assert_int_equal(f->hook.last_delta, -blob);
	/* Same content again: no change, no call. */
	calls = f->hook.calls;
	assert_int_equal(put(f, A, p, 1, 0, f->in), 0);
	assert_int_equal(f->hook.calls, calls);
	/* Reads do not charge. */
	assert_int_equal(get(f, A, p, 1, 0), 0);
	assert_int_equal(f->hook.calls, calls);
	/* A flush returns everything at once. */
	assert_int_equal(flush(f, A, p, 1, 0), 0);
	assert_int_equal(f->hook.calls, calls + 1);
	assert_int_equal(f->hook.last_delta, -(int64_t)ss.meta_bytes);
	assert_int_equal(f->hook.total[A], 0);
	fx_check(f);
}

/* ---- allocation-failure injection ---- */

typedef int (*op_fn)(struct fx *f, void *arg);
typedef void (*fail_fn)(struct fx *f, void *arg);

/* Run @op with its 1st, 2nd, ... allocation failing until it runs clean.
 * After each injected failure: the invariants hold, the hook agrees, no
 * allocation leaked (checked by @after, which also verifies there is no
 * stale copy and restores the starting state).  Returns the number of
 * allocation points exercised. */
static unsigned inject_each(struct fx *f, op_fn op, fail_fn after, void *arg)
{
	unsigned n;

	for (n = 1;; n++) {
		struct tmem_debug d0, d1;
		int rc;

		assert_int_equal(tmem_debug_get(f->s, &d0), 0);
		assert_int_equal(tmem_debug_fail_alloc(f->s, n), 0);
		rc = op(f, arg);
		assert_int_equal(tmem_debug_get(f->s, &d1), 0);
		assert_int_equal(tmem_debug_fail_alloc(f->s, 0), 0);
		fx_check(f);
		if (d1.injected == d0.injected) {
			assert_int_equal(rc, 0);
			return n - 1;
		}
		if (rc == 0)
			continue;	/* a hash-table growth: tolerated */
		assert_int_equal(rc, -ENOMEM);
		if (after)
			after(f, arg);
	}
}

struct put_case {
	uint32_t client, pool;
	uint64_t obj;
	uint32_t index;
	uint32_t value;		/* model_page() of the page to put */
	int had;		/* model value there before, -1: none */
	uint64_t base;		/* nonslab_allocs() before */
};

static int op_put(struct fx *f, void *arg)
{
	struct put_case *pc = arg;

	model_page(f->in, pc->value);
	return put(f, pc->client, pc->pool, pc->obj, pc->index, f->in);
}

static void after_put(struct fx *f, void *arg)
{
	struct put_case *pc = arg;

	/* Nothing at the handle: neither the new page nor a stale old one. */
	assert_int_equal(get(f, pc->client, pc->pool, pc->obj, pc->index), -ENOENT);
	if (pc->had < 0) {
		assert_int_equal(nonslab_allocs(f), pc->base);
		return;
	}
	model_page(f->in, (uint32_t)pc->had);
	assert_int_equal(put(f, pc->client, pc->pool, pc->obj, pc->index, f->in), 0);
	assert_int_equal(nonslab_allocs(f), pc->base);
}

static void run_put_case(struct fx *f, struct put_case *pc)
{
	pc->base = nonslab_allocs(f);
	(void)inject_each(f, op_put, after_put, pc);
	assert_int_equal(get(f, pc->client, pc->pool, pc->obj, pc->index), 0);
	model_page(f->in, pc->value);
	assert_memory_equal(f->out, f->in, PG);
}

static void alloc_failure_put(void **state)
{
	struct fx *f = *state;
	uint32_t pp = pool(f, A, TMEM_POOL_PERSISTENT);
	struct put_case pc = { .client = A, .pool = pp, .had = -1 };
	int cur[4];
	uint32_t v;

	/* Each kind of page into a new object, the first time in its class
	 * (new slab, slab table), then into an existing one. */
	for (v = 0; v < 4; v++) {
		pc.obj = 10 + v;
		pc.index = 0;
		pc.value = v;
		pc.had = -1;
		run_put_case(f, &pc);
		cur[v] = (int)v;
		pc.index = 100000 + v;	/* deeper radix tree */
		run_put_case(f, &pc);
	}
	/* Replacements of each kind by each kind. */
	for (v = 0; v < 16; v++) {
		pc.obj = 10 + v / 4;
		pc.index = 0;
		pc.had = cur[v / 4];
		pc.value = 4 + v;
		run_put_case(f, &pc);
		cur[v / 4] = (int)pc.value;
	}
	/* Enough objects and blobs to grow the hash tables under failure. */
	for (v = 0; v < 1100; v++) {
		pc.obj = 1000 + v;
		pc.index = v;
		pc.value = 100 + v * 4 + (v & 1);
		pc.had = -1;
		if (v % 50 == 0)
			run_put_case(f, &pc);
		else
			assert_int_equal(op_put(f, &pc), 0);
	}
	fx_check(f);
}

static void alloc_failure_cross_share(void **state)
{
	struct fx *f = *state;
	uint32_t pa = pool(f, A, TMEM_POOL_PERSISTENT);
	uint32_t pb = pool(f, B, TMEM_POOL_PERSISTENT);
	struct put_case pc = { .client = B, .pool = pb, .obj = 1, .value = 3,
			       .had = -1 };

	model_page(f->in, 3);
	assert_int_equal(put(f, A, pa, 1, 0, f->in), 0);
	run_put_case(f, &pc);	/* the share record is an allocation */
	assert_int_equal(sstats(f).blobs, 1);
	fx_check(f);
}

struct pool_case {
	uint32_t client;
	uint32_t flags;
	struct tmem_uuid uuid;
	uint32_t id;
	uint64_t pools;
};

static int op_pool(struct fx *f, void *arg)
{
	struct pool_case *pc = arg;

	return tmem_pool_new(f->s, pc->client, pc->flags, &pc->uuid, &pc->id);
}

static void after_pool(struct fx *f, void *arg)
{
	struct pool_case *pc = arg;

	assert_int_equal(sstats(f).pools, pc->pools);
	assert_int_equal(get(f, pc->client, 0, 1, 0), -EBADF);
}

static int op_client(struct fx *f, void *arg)
{
	(void)arg;
	return tmem_client_new(f->s, C, "c", NULL);
}

static void after_client(struct fx *f, void *arg)
{
	struct tmem_stats st;

	(void)arg;
	assert_int_equal(tmem_client_stats(f->s, C, &st), -ESRCH);
}

static void alloc_failure_other_ops(void **state)
{
	struct fx *f = *state;
	struct pool_case pc = { .client = A, .flags = TMEM_POOL_SHARED,
				.uuid = uuid_of(5) };
	struct tmem_debug d0, d1;
	uint32_t pe;
	unsigned points;

	pc.pools = sstats(f).pools;
	points = inject_each(f, op_pool, after_pool, &pc);	/* create */
	assert_true(points >= 3);
	pc.client = B;
	pc.pools = sstats(f).pools;
	points = inject_each(f, op_pool, after_pool, &pc);	/* join */
	assert_true(points >= 1);
	assert_int_equal(inject_each(f, op_client, after_client, NULL), 1);

	/* Operations that only free never allocate. */
	pe = pool(f, A, 0);
	model_page(f->in, 1);
	assert_int_equal(put(f, A, pe, 1, 0, f->in), 0);
	assert_int_equal(put(f, A, pe, 1, 1, f->in), 0);
	assert_int_equal(tmem_debug_get(f->s, &d0), 0);
	assert_int_equal(tmem_debug_fail_alloc(f->s, 1), 0);
	assert_int_equal(get(f, A, pe, 1, 0), 0);
	assert_int_equal(flush(f, A, pe, 1, 1), 0);
	assert_int_equal(tmem_shrink(f->s, UINT64_MAX, NULL), 0);
	assert_int_equal(tmem_pool_destroy(f->s, B, 0), 0);
	assert_int_equal(tmem_client_destroy(f->s, C), 0);
	assert_int_equal(tmem_debug_get(f->s, &d1), 0);
	assert_int_equal(tmem_debug_fail_alloc(f->s, 0), 0);
	assert_int_equal(d1.injected, d0.injected);
	fx_check(f);
}

/* A long random mix of operations with random allocation failures, checked
 * against a model: a persistent page must read back exactly as last
 * successfully put; an ephemeral page may be gone but never stale. */
#define MIX_OBJS	8
#define MIX_IDX		16
static void alloc_failure_random_mix(void **state)
{
	struct fx *f = *state;
	static int model[2][MIX_OBJS][MIX_IDX];	/* value, -1 absent */
	uint32_t pools[2], o, i, k;
	uint64_t base = nonslab_allocs(f);
	int step, rc, kind;

	pools[0] = pool(f, A, 0);
	pools[1] = pool(f, A, TMEM_POOL_PERSISTENT);
	memset(model, 0xff, sizeof(model));
	rng_state = 12345;
	for (step = 0; step < 6000; step++) {
		uint64_t r = rng();

		kind = (int)(r & 1);
		o = (uint32_t)(r >> 8) % MIX_OBJS;
		i = (uint32_t)(r >> 16) % MIX_IDX;
		if ((r >> 24) % 3 == 0)
			assert_int_equal(tmem_debug_fail_alloc(f->s, 1 + (r >> 28) % 4), 0);
		switch ((r >> 32) % 8) {
		case 0: case 1: case 2: case 3: {
			uint32_t v = (uint32_t)(r >> 40) % 64;

			model_page(f->in, v);
			rc = put(f, A, pools[kind], o, i, f->in);
			if (rc == 0) {
				model[kind][o][i] = (int)v;
			} else {
				assert_int_equal(rc, -ENOMEM);
				model[kind][o][i] = -1;
			}
			break;
		}
		case 4: case 5:
			rc = get(f, A, pools[kind], o, i);
			if (rc == 0) {
				assert_true(model[kind][o][i] >= 0);
				model_page(f->in, (uint32_t)model[kind][o][i]);
				assert_memory_equal(f->out, f->in, PG);
				if (kind == 0)
					model[kind][o][i] = -1;	/* exclusive */
			} else {
				assert_int_equal(rc, -ENOENT);
				assert_true(kind == 0 || model[kind][o][i] < 0);
				model[kind][o][i] = -1;
			}
			break;
		case 6:
			rc = flush(f, A, pools[kind], o, i);
			assert_true(rc == 0 || rc == -ENOENT);
			model[kind][o][i] = -1;
			break;
		default:
			if ((r >> 44) % 4 == 0) {
				struct tmem_oid oid = oid_of(o);

				rc = tmem_flush_object(f->s, A, pools[kind], &oid);
				assert_true(rc == 0 || rc == -ENOENT);
				for (k = 0; k < MIX_IDX; k++)
					model[kind][o][k] = -1;
			} else {
				assert_int_equal(tmem_shrink(f->s, PG, NULL), 0);
			}
			break;
		}
		assert_int_equal(tmem_debug_fail_alloc(f->s, 0), 0);
		if (step % 500 == 0)
			fx_check(f);
	}
	fx_check(f);
	for (o = 0; o < MIX_OBJS; o++) {
		for (i = 0; i < MIX_IDX; i++) {
			rc = get(f, A, pools[1], o, i);
			if (model[1][o][i] < 0) {
				assert_int_equal(rc, -ENOENT);
				continue;
			}
			assert_int_equal(rc, 0);
			model_page(f->in, (uint32_t)model[1][o][i]);
			assert_memory_equal(f->out, f->in, PG);
		}
	}
	assert_int_equal(tmem_pool_destroy(f->s, A, pools[0]), 0);
	assert_int_equal(tmem_pool_destroy(f->s, A, pools[1]), 0);
	assert_int_equal(sstats(f).total.charged_bytes, 0);
	assert_int_equal(nonslab_allocs(f), base);
	fx_check(f);
}

/* ---- threads ---- */

struct thr {
	struct fx *f;
	uint32_t client;
	uint32_t shared;
};

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	uint8_t in[PG], out[PG];
	struct tmem_oid oid;
	uint32_t p, i;

	if (tmem_pool_new(t->f->s, t->client, TMEM_POOL_PERSISTENT, NULL, &p))
		return (void *)1;
	for (i = 0; i < 3000; i++) {
		oid = oid_of(i % 13);
		text_page(in, t->client * 100000 + i % 200);
		if (tmem_put(t->f->s, t->client, p, &oid, i % 50, in, PG))
			return (void *)2;
		if (tmem_get(t->f->s, t->client, p, &oid, i % 50, out, PG) ||
		    memcmp(in, out, PG))
			return (void *)3;
		(void)tmem_put(t->f->s, t->client, t->shared, &oid, i % 20, in, PG);
		(void)tmem_get(t->f->s, t->client, t->shared, &oid, (i + 7) % 20,
			       out, PG);
		if (i % 97 == 0)
			(void)tmem_shrink(t->f->s, PG, NULL);
	}
	return NULL;
}

static void threads_share_one_store(void **state)
{
	struct fx *f = *state;
	struct tmem_uuid u = uuid_of(0x33);
	pthread_t th[4];
	struct thr t[4];
	unsigned i;
	void *ret;

	for (i = 0; i < 4; i++) {
		t[i].f = f;
		t[i].client = 4 + i;
		assert_int_equal(tmem_client_new(f->s, t[i].client, "t", NULL), 0);
		assert_int_equal(tmem_pool_new(f->s, t[i].client, TMEM_POOL_SHARED,
					       &u, &t[i].shared), 0);
	}
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, thread_main, &t[i]), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], &ret), 0);
		assert_null(ret);
	}
	fx_check(f);
	for (i = 0; i < 4; i++)
		assert_int_equal(tmem_client_destroy(f->s, t[i].client), 0);
	assert_int_equal(sstats(f).total.charged_bytes, 0);
	fx_check(f);
}

#define T(fn)		cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TX(fn)		cmocka_unit_test_setup_teardown(fn, setup_cross, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(store_config_errors),
		T(client_errors),
		T(pool_errors),
		T(page_errors),
		T(roundtrip_kinds),
		T(latency_is_sampled),
		T(private_pool_isolation),
		T(exclusive_get_private_ephemeral),
		T(shared_pools),
		T(shared_persistent_transfer_on_client_destroy),
		T(replace_put),
		T(failing_replace_leaves_nothing),
		T(flush_page_and_object),
		T(radix_index_range),
		T(destroy_pool_frees_everything),
		T(zero_pages_are_flags),
		T(incompressible_stored_raw),
		cmocka_unit_test(raw_threshold_and_zstd),
		cmocka_unit_test(every_compressor_roundtrips),
		T(dedup_within_client),
		cmocka_unit_test(no_dedup_store),
		T(no_cross_client_dedup_by_default),
		TX(cross_client_dedup_when_enabled),
		T(eviction_is_lru),
		T(eviction_prefers_over_weight_client),
		T(persistent_never_evicted),
		T(persistent_quota),
		T(charge_hook_refuses_persistent),
		T(refused_growth_evicts_ephemeral),
		T(ephemeral_put_evicts_to_fit),
		T(eviction_per_put_is_bounded),
		T(client_destroy_releases_charge),
		T(hook_sees_net_deltas),
		T(alloc_failure_put),
		TX(alloc_failure_cross_share),
		T(alloc_failure_other_ops),
		T(alloc_failure_random_mix),
		T(threads_share_one_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
