/*
 * The tmem store in a memfd (tmem_shm.c): what a new store adopting the
 * memfd finds, against a model of what was put; and adoption of damaged
 * arenas, which must fail cleanly or drop pages, never return wrong ones.
 * The SIGKILL test is in test_swapstore_shm.c (it goes through swapstore).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tmem.h"

#define PG		TMEM_PAGE_SIZE
#define A		1u
#define B		2u
#define NOBJ		4u
#define NIDX		300u
#define NKEYS		(2 * NOBJ * NIDX)	/* 2 clients */
#define ARENA_BYTES	(256ull << 20)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Content @v of a page: 0 zero, 1..99 compressible (few distinct: they
 * dedup), 100.. incompressible (raw). */
static void make_page(uint8_t *p, uint32_t v)
{
	size_t i;

	if (v == 0) {
		memset(p, 0, PG);
		return;
	}
	if (v < 100) {
		for (i = 0; i < PG; i++)
			p[i] = (uint8_t)("persistent pages survive "[i % 25] + v % 7);
		memcpy(p, &v, sizeof(v));
		return;
	}
	for (i = 0; i < PG; i += 8) {
		uint64_t x = (v + i) * 0x9e3779b97f4a7c15ull;

		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		x ^= x >> 32;
		memcpy(p + i, &x, 8);
	}
}

/* The model: content value per key, UINT32_MAX: absent. */
struct model {
	uint32_t v[NKEYS];
	uint32_t pers[2];	/* persistent pool id per client */
	uint32_t eph[2];	/* ephemeral pool id per client */
};

static struct tmem_oid oid_of(unsigned obj)
{
	struct tmem_oid o = { { 0x1000 + obj, obj * 7, 42 } };

	return o;
}

static uint32_t cid(unsigned client)
{
	return client ? B : A;
}

static void put_model(struct tmem_store *s, struct model *m, unsigned k,
		      uint32_t v)
{
	unsigned client = k / (NOBJ * NIDX), obj = k / NIDX % NOBJ;
	uint8_t page[PG];
	struct tmem_oid o = oid_of(obj);

	make_page(page, v);
	assert_int_equal(tmem_put(s, cid(client), m->pers[client], &o,
				  k % NIDX, page, PG), 0);
	m->v[k] = v;
}

static void fill(struct tmem_store *s, struct model *m, unsigned rounds)
{
	unsigned i, c;
	uint8_t page[PG];

	for (i = 0; i < rounds; i++) {
		unsigned k = (unsigned)(rng() % NKEYS);
		uint64_t r = rng() % 100;

		if (r < 70) {
			uint32_t v = rng() % 3 == 0 ? 0 :
				     rng() % 2 ? 1 + (uint32_t)(rng() % 20) :
				     100 + (uint32_t)(rng() % 100000);

			put_model(s, m, k, v);
		} else if (r < 85 && m->v[k] != UINT32_MAX) {
			unsigned client = k / (NOBJ * NIDX);
			struct tmem_oid o = oid_of(k / NIDX % NOBJ);

			assert_int_equal(tmem_flush_page(s, cid(client),
				m->pers[client], &o, k % NIDX), 0);
			m->v[k] = UINT32_MAX;
		} else {
			/* Ephemeral traffic shares the slabs. */
			struct tmem_oid o = oid_of(9);

			c = (unsigned)(rng() % 2);
			make_page(page, 100 + (uint32_t)(rng() % 1000));
			assert_int_equal(tmem_put(s, cid(c), m->eph[c], &o,
				(uint32_t)(rng() % 500), page, PG), 0);
		}
	}
}

static void setup_model(struct tmem_store *s, struct model *m)
{
	unsigned c;

	for (c = 0; c < NKEYS; c++)
		m->v[c] = UINT32_MAX;
	for (c = 0; c < 2; c++) {
		struct tmem_client_params p = { .weight = 100 + c };

		assert_int_equal(tmem_client_new(s, cid(c), c ? "bee" : "ay", &p), 0);
		assert_int_equal(tmem_pool_new(s, cid(c), 0, NULL, &m->eph[c]), 0);
		assert_int_equal(tmem_pool_new(s, cid(c), TMEM_POOL_PERSISTENT,
					       NULL, &m->pers[c]), 0);
	}
}

/* Every key reads as the model says.  @lossy: a key may also be absent
 * (damaged arena), but never hold other content. */
static unsigned check_model(struct tmem_store *s, const struct model *m,
			    bool lossy)
{
	uint8_t page[PG], want[PG];
	unsigned k, lost = 0;

	for (k = 0; k < NKEYS; k++) {
		unsigned client = k / (NOBJ * NIDX);
		struct tmem_oid o = oid_of(k / NIDX % NOBJ);
		int rc = tmem_get(s, cid(client), m->pers[client], &o,
				  k % NIDX, page, PG);

		if (m->v[k] == UINT32_MAX) {
			if (!lossy)
				assert_int_equal(rc, -ENOENT);
			else
				assert_true(rc == -ENOENT || rc == -ESRCH ||
					    rc == -EBADF);
			continue;
		}
		if (lossy && rc) {
			/* Dropped at adoption, or found damaged at this
			 * first read (-EIO): either way not read as data. */
			assert_true(rc == -ENOENT || rc == -ESRCH ||
				    rc == -EBADF || rc == -EIO);
			lost++;
			continue;
		}
		assert_int_equal(rc, 0);
		make_page(want, m->v[k]);
		assert_memory_equal(page, want, PG);
	}
	return lost;
}

static unsigned model_pages(const struct model *m, unsigned client)
{
	unsigned k, n = 0;

	for (k = client * NOBJ * NIDX; k < (client + 1) * NOBJ * NIDX; k++)
		n += m->v[k] != UINT32_MAX;
	return n;
}

/* A heap store holding exactly the model's persistent pages: what the
 * restored store's counters and charges must equal. */
static void compare_with_recount(struct tmem_store *s, const struct model *m)
{
	struct tmem_store *h;
	struct model m2;
	unsigned c, k;

	assert_int_equal(tmem_store_new(NULL, &h), 0);
	setup_model(h, &m2);
	for (k = 0; k < NKEYS; k++) {
		if (m->v[k] != UINT32_MAX)
			put_model(h, &m2, k, m->v[k]);
	}
	for (c = 0; c < 2; c++) {
		struct tmem_stats a, b;

		/* The recount's ephemeral pools cost nothing while empty,
		 * and the restored store has none: same charges. */
		assert_int_equal(tmem_client_stats(s, cid(c), &a), 0);
		assert_int_equal(tmem_client_stats(h, cid(c), &b), 0);
		assert_int_equal(a.persistent_pages, model_pages(m, c));
		assert_int_equal(a.persistent_pages, b.persistent_pages);
		assert_int_equal(a.ephemeral_pages, 0);
		assert_int_equal(a.zero_pages, b.zero_pages);
		assert_int_equal(a.raw_pages, b.raw_pages);
		assert_int_equal(a.compressed_bytes, b.compressed_bytes);
		assert_int_equal(a.stored_bytes, b.stored_bytes);
		assert_int_equal(a.charged_bytes, b.charged_bytes);
	}
	tmem_store_free(h);
}

/* Charge hook that sums what it is told per client. */
static int64_t told[3];

static int charge_cb(void *opaque, uint32_t client_id, int64_t delta)
{
	(void)opaque;
	told[client_id] += delta;
	return 0;
}

static void reopen_keeps_persistent_pages(void **state)
{
	struct tmem_store_config cfg = { .charge = charge_cb };
	struct tmem_shm_report rep;
	struct tmem_store *s, *s2;
	static struct model m;
	uint32_t ids[4], flags;
	size_t n;
	int fd, gen;

	(void)state;
	assert_int_equal(tmem_store_new_shm(NULL, ARENA_BYTES, &s), 0);
	fd = dup(tmem_store_shm_fd(s));
	assert_true(fd >= 0);
	setup_model(s, &m);
	fill(s, &m, 6000);
	check_model(s, &m, false);

	for (gen = 0; gen < 3; gen++) {
		tmem_store_free(s);	/* the process goes: memfd stays */
		memset(told, 0, sizeof(told));
		assert_int_equal(tmem_store_adopt_shm(fd, &cfg, &s2, &rep), 0);
		s = s2;
		assert_int_equal(tmem_check(s), 0);
		assert_int_equal(rep.bad_entries, 0);
		assert_int_equal(rep.bad_clients, 0);
		assert_int_equal(rep.bad_chunks, 0);
		assert_int_equal(rep.clients, 2);
		assert_int_equal(rep.pools, 2);
		assert_int_equal(rep.pages, model_pages(&m, 0) + model_pages(&m, 1));
		check_model(s, &m, false);
		compare_with_recount(s, &m);
		/* The hook heard each client's whole restored charge. */
		{
			struct tmem_stats st;

			assert_int_equal(tmem_client_stats(s, A, &st), 0);
			assert_int_equal(told[A], (int64_t)st.charged_bytes);
		}
		/* Clients restored, with their pools at the same ids;
		 * the ephemeral pools are gone. */
		assert_int_equal(tmem_store_client_ids(s, ids, 4, &n), 0);
		assert_int_equal(n, 2);
		assert_int_equal(tmem_pool_flags(s, A, m.pers[0], &flags), 0);
		assert_int_equal(flags, TMEM_POOL_PERSISTENT);
		assert_int_equal(tmem_pool_flags(s, A, m.eph[0], &flags), -EBADF);
		/* Re-open the ephemeral pools and keep working. */
		assert_int_equal(tmem_pool_new(s, A, 0, NULL, &m.eph[0]), 0);
		assert_int_equal(tmem_pool_new(s, B, 0, NULL, &m.eph[1]), 0);
		fill(s, &m, 3000);
		check_model(s, &m, false);
		assert_int_equal(tmem_check(s), 0);
	}

	/* A destroyed client stays destroyed. */
	assert_int_equal(tmem_client_destroy(s, B), 0);
	memset(&m.v[NOBJ * NIDX], 0xff, NOBJ * NIDX * sizeof(m.v[0]));
	tmem_store_free(s);
	assert_int_equal(tmem_store_adopt_shm(fd, NULL, &s, &rep), 0);
	assert_int_equal(rep.clients, 1);
	assert_int_equal(tmem_client_stats(s, B, &(struct tmem_stats){ 0 }),
			 -ESRCH);
	assert_int_equal(rep.pages, model_pages(&m, 0));
	tmem_store_free(s);
	close(fd);
}

/* The arena in a file the caller gives (ebbd: one on its huge-page
 * tmpfs): only an empty regular file is taken; the store keeps its own
 * dup, and the pages come back from it like from a memfd. */
static void arena_in_a_given_file(void **state)
{
	const struct tmem_oid oid = { { 9, 0, 0 } };
	struct tmem_shm_report rep;
	struct tmem_store *s;
	static uint8_t page[TMEM_PAGE_SIZE], back[TMEM_PAGE_SIZE];
	uint32_t pool, i;
	int fd = open("/dev/shm", O_TMPFILE | O_RDWR, 0600), dir, sfd;

	(void)state;
	assert_true(fd >= 0);
	dir = open("/dev/shm", O_RDONLY | O_DIRECTORY);
	assert_true(dir >= 0);
	assert_int_equal(tmem_store_new_shm_fd(NULL, ARENA_BYTES, dir, &s),
			 -EINVAL);
	close(dir);
	assert_int_equal(tmem_store_new_shm_fd(NULL, ARENA_BYTES, 1000000, &s),
			 -EINVAL);
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_int_equal(tmem_store_new_shm_fd(NULL, ARENA_BYTES, fd, &s),
			 -EINVAL);	/* not empty */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(tmem_store_new_shm_fd(NULL, ARENA_BYTES, fd, &s), 0);
	sfd = tmem_store_shm_fd(s);
	assert_true(sfd >= 0 && sfd != fd);
	assert_int_equal(tmem_client_new(s, 1, "f", NULL), 0);
	assert_int_equal(tmem_pool_new(s, 1, TMEM_POOL_PERSISTENT, NULL, &pool),
			 0);
	for (i = 0; i < 300; i++) {
		memset(page, (int)i, sizeof(page));
		page[i] ^= 0x5a;
		assert_int_equal(tmem_put(s, 1, pool, &oid, i, page, sizeof(page)),
				 0);
	}
	tmem_store_free(s);	/* the caller's fd keeps the file */
	assert_int_equal(tmem_store_adopt_shm(fd, NULL, &s, &rep), 0);
	assert_int_equal(rep.pages, 300);
	for (i = 0; i < 300; i++) {
		memset(page, (int)i, sizeof(page));
		page[i] ^= 0x5a;
		assert_int_equal(tmem_get(s, 1, pool, &oid, i, back, sizeof(back)),
				 0);
		assert_memory_equal(page, back, sizeof(page));
	}
	tmem_store_free(s);
	close(fd);
}

static void adopt_rejects_non_arenas(void **state)
{
	struct tmem_store *s;
	int fd = memfd_create("not-an-arena", 0);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(tmem_store_adopt_shm(-1, NULL, &s, NULL), -EINVAL);
	assert_int_equal(tmem_store_adopt_shm(fd, NULL, &s, NULL), -EUCLEAN);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(tmem_store_adopt_shm(fd, NULL, &s, NULL), -EUCLEAN);
	close(fd);
	/* A heap store has no memfd. */
	assert_int_equal(tmem_store_new(NULL, &s), 0);
	assert_int_equal(tmem_store_shm_fd(s), -1);
	tmem_store_free(s);
}

/* A copy of memfd @fd in a new memfd. */
static int copy_memfd(int fd, uint8_t **bytes, size_t *len)
{
	struct stat st;
	int nfd;

	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	*bytes = malloc(*len);
	assert_non_null(*bytes);
	assert_int_equal(pread(fd, *bytes, *len, 0), (ssize_t)*len);
	nfd = memfd_create("copy", 0);
	assert_true(nfd >= 0);
	return nfd;
}

static uint64_t u64_at(const uint8_t *b, size_t off)
{
	uint64_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

static void damaged_arena_never_gives_wrong_pages(void **state)
{
	struct tmem_shm_report rep;
	struct tmem_store *s;
	static struct model m;
	uint8_t *orig, *img;
	size_t len, desc_off, chunks_off;
	unsigned round, ok = 0, failed = 0, lost = 0;
	int fd;

	(void)state;
	assert_int_equal(tmem_store_new_shm(NULL, 64ull << 20, &s), 0);
	setup_model(s, &m);
	fill(s, &m, 3000);
	fd = copy_memfd(tmem_store_shm_fd(s), &orig, &len);
	close(fd);
	tmem_store_free(s);
	desc_off = (size_t)u64_at(orig, 48);
	chunks_off = (size_t)u64_at(orig, 56);
	assert_true(chunks_off < len);
	img = malloc(len);
	assert_non_null(img);

	for (round = 0; round < 300; round++) {
		unsigned flips = 1 + (unsigned)(rng() % 8), i;
		int rc;

		memcpy(img, orig, len);
		for (i = 0; i < flips; i++) {
			size_t off;

			/* Header, client records, descriptors, chunks. */
			switch (rng() % 4) {
			case 0:
				off = rng() % 96;
				break;
			case 1:
				off = 4096 + rng() % (2 * 64);
				break;
			case 2:
				off = desc_off + rng() % ((len - chunks_off) /
							  (64 << 10) * 4);
				break;
			default:
				off = chunks_off + rng() % (len - chunks_off);
				break;
			}
			img[off] ^= (uint8_t)(1u << (rng() % 8));
		}
		fd = memfd_create("damaged", 0);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, img, len, 0), (ssize_t)len);
		rc = tmem_store_adopt_shm(fd, NULL, &s, &rep);
		if (rc) {
			assert_true(rc == -EUCLEAN || rc == -EPROTONOSUPPORT);
			failed++;
		} else {
			ok++;
			assert_int_equal(tmem_check(s), 0);
			lost += check_model(s, &m, true);
			tmem_store_free(s);
		}
		close(fd);
	}
	print_message("damaged arenas: %u adopted (%u pages dropped), %u refused\n",
		      ok, lost, failed);
	assert_true(ok > 0 && failed > 0);
	free(img);
	free(orig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reopen_keeps_persistent_pages),
		cmocka_unit_test(adopt_rejects_non_arenas),
		cmocka_unit_test(arena_in_a_given_file),
		cmocka_unit_test(damaged_arena_never_gives_wrong_pages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
