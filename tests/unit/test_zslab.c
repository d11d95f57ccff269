#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zslab.h"

/* A counting allocator that can fail the nth call. */
struct talloc {
	long live;		/* allocations not yet freed */
	long calls;		/* allocation attempts */
	long fail_at;		/* calls value that fails; 0: never */
};

static void *t_alloc(void *opaque, size_t bytes)
{
	struct talloc *t = opaque;
	void *p;

	t->calls++;
	if (t->fail_at && t->calls == t->fail_at)
		return NULL;
	p = malloc(bytes);
	if (p)
		t->live++;
	return p;
}

static void t_free(void *opaque, void *p)
{
	struct talloc *t = opaque;

	if (p)
		t->live--;
	free(p);
}

static struct zslab *new_zs(struct talloc *t, uint32_t max)
{
	struct zslab_params p = {
		.class_step_bytes = 64,
		.max_obj_bytes = max,
		.chunk_bytes = 64 << 10,
		.alloc = t_alloc,
		.free = t_free,
		.opaque = t,
	};
	struct zslab *zs = NULL;

	assert_int_equal(zslab_new(&p, &zs), 0);
	return zs;
}

static unsigned slab_id(uint64_t h)
{
	return (unsigned)(h >> 16);
}

static void rejects_bad_params(void **state)
{
	struct zslab_params p = { .max_obj_bytes = 4096 };
	struct zslab *zs;

	(void)state;
	p.class_step_bytes = 48;	/* not a power of two */
	assert_int_equal(zslab_new(&p, &zs), -EINVAL);
	p.class_step_bytes = 4;		/* too small for the free link */
	assert_int_equal(zslab_new(&p, &zs), -EINVAL);
	p.class_step_bytes = 64;
	p.max_obj_bytes = 0;
	assert_int_equal(zslab_new(&p, &zs), -EINVAL);
	p.max_obj_bytes = 128 << 10;	/* bigger than a chunk */
	assert_int_equal(zslab_new(&p, &zs), -EINVAL);
	p.max_obj_bytes = 4096;
	p.alloc = t_alloc;		/* alloc without free */
	assert_int_equal(zslab_new(&p, &zs), -EINVAL);
	p.alloc = NULL;
	assert_int_equal(zslab_new(&p, &zs), 0);	/* defaults, malloc */
	zslab_destroy(zs);
	zslab_destroy(NULL);
}

static void class_sizes(void **state)
{
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4136);
	uint64_t h;

	(void)state;
	assert_int_equal(zslab_class_bytes(zs, 1), 64);
	assert_int_equal(zslab_class_bytes(zs, 64), 64);
	assert_int_equal(zslab_class_bytes(zs, 65), 128);
	assert_int_equal(zslab_class_bytes(zs, 4096), 4096);
	assert_int_equal(zslab_class_bytes(zs, 4136), 4160);
	assert_int_equal(zslab_class_bytes(zs, 4161), 0);
	assert_int_equal(zslab_class_bytes(zs, 0), 0);
	assert_int_equal(zslab_alloc(zs, 0, &h), -EINVAL);
	assert_int_equal(zslab_alloc(zs, 4161, &h), -EINVAL);
	zslab_destroy(zs);
	assert_int_equal(t.live, 0);
}

/* Objects never overlap, keep their bytes, and handles are never 0. */
static void alloc_map_free_pattern(void **state)
{
	enum { N = 3000 };
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4136);
	static uint64_t h[N];
	static size_t len[N];
	struct zslab_stats st;
	unsigned i, j;

	(void)state;
	srand(7);
	for (i = 0; i < N; i++) {
		len[i] = 1 + (size_t)rand() % 4136;
		assert_int_equal(zslab_alloc(zs, len[i], &h[i]), 0);
		assert_true(h[i] != 0);
		memset(zslab_map(zs, h[i]), (int)(i & 0xff), len[i]);
	}
	assert_int_equal(zslab_check(zs), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.objects, N);
	assert_true(st.req_bytes <= st.obj_bytes && st.obj_bytes <= st.slab_bytes);
	/* Free every other one, in a scrambled order, then verify the rest. */
	for (i = 0; i < N; i += 2) {
		j = (i * 7919u) % N & ~1u;
		if (h[j]) {
			zslab_free(zs, h[j], len[j]);
			h[j] = 0;
		}
	}
	for (i = 0; i < N; i += 2) {
		if (h[i]) {
			zslab_free(zs, h[i], len[i]);
			h[i] = 0;
		}
	}
	assert_int_equal(zslab_check(zs), 0);
	for (i = 1; i < N; i += 2) {
		const uint8_t *p = zslab_map(zs, h[i]);

		for (j = 0; j < len[i]; j++)
			assert_int_equal(p[j], i & 0xff);
	}
	for (i = 1; i < N; i += 2)
		zslab_free(zs, h[i], len[i]);
	zslab_free(zs, 0, 0);	/* no-op */
	assert_int_equal(zslab_check(zs), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.objects, 0);
	assert_int_equal(st.obj_bytes, 0);
	assert_int_equal(st.req_bytes, 0);
	/* At most one spare slab per class remains. */
	assert_true(st.slabs <= 65);
	zslab_destroy(zs);
	assert_int_equal(t.live, 0);
}

/* The 4096 class packs 16 per 64 KiB slab; 4160 takes 3 chunks (47). */
static void slab_shapes(void **state)
{
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4160);
	struct zslab_stats st;
	uint64_t h[48];
	unsigned i;

	(void)state;
	for (i = 0; i < 16; i++)
		assert_int_equal(zslab_alloc(zs, 4096, &h[i]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 1);
	assert_int_equal(st.slab_bytes, 64 << 10);
	assert_int_equal(zslab_alloc(zs, 4096, &h[16]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 2);
	for (i = 0; i < 17; i++)
		zslab_free(zs, h[i], 4096);

	zslab_destroy(zs);
	zs = new_zs(&t, 4160);
	for (i = 0; i < 47; i++)
		assert_int_equal(zslab_alloc(zs, 4160, &h[i]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 1);
	assert_int_equal(st.slab_bytes, 3 * (64 << 10));
	assert_int_equal(zslab_alloc(zs, 4160, &h[47]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 2);
	zslab_destroy(zs);	/* with live objects: frees them too */
	assert_int_equal(t.live, 0);
}

/* Allocations go to the fullest partial slab. */
static void fullest_slab_first(void **state)
{
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4096);
	uint64_t h[32], nh;
	unsigned i, a, b;

	(void)state;
	for (i = 0; i < 32; i++)
		assert_int_equal(zslab_alloc(zs, 4096, &h[i]), 0);
	a = slab_id(h[0]);
	b = slab_id(h[16]);
	assert_int_not_equal(a, b);
	for (i = 0; i < 12; i++)	/* slab a: 4 of 16 used */
		zslab_free(zs, h[i], 4096);
	for (i = 16; i < 18; i++)	/* slab b: 14 of 16 used */
		zslab_free(zs, h[i], 4096);
	assert_int_equal(zslab_check(zs), 0);
	assert_int_equal(zslab_alloc(zs, 4096, &nh), 0);
	assert_int_equal(slab_id(nh), b);
	assert_int_equal(zslab_alloc(zs, 4096, &nh), 0);
	assert_int_equal(slab_id(nh), b);
	assert_int_equal(zslab_alloc(zs, 4096, &nh), 0);	/* b is full now */
	assert_int_equal(slab_id(nh), a);
	zslab_destroy(zs);
	assert_int_equal(t.live, 0);
}

/* An emptied slab is released, except one spare per class. */
static void empty_slabs_released(void **state)
{
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4096);
	struct zslab_stats st;
	uint64_t h[48];
	unsigned i;

	(void)state;
	for (i = 0; i < 48; i++)
		assert_int_equal(zslab_alloc(zs, 4096, &h[i]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 3);
	for (i = 16; i < 48; i++)
		zslab_free(zs, h[i], 4096);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 2);	/* one full, one spare */
	assert_int_equal(zslab_check(zs), 0);
	/* The spare is reused before a new slab is made. */
	assert_int_equal(zslab_alloc(zs, 4096, &h[16]), 0);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 2);
	for (i = 0; i < 17; i++)
		zslab_free(zs, h[i], 4096);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.slabs, 1);
	assert_int_equal(st.objects, 0);
	zslab_destroy(zs);
	assert_int_equal(t.live, 0);
}

/* Every allocation the allocator makes can fail; state stays intact. */
static void alloc_failure_injection(void **state)
{
	struct talloc t = { 0 };
	struct zslab *zs = new_zs(&t, 4136);
	struct zslab_stats st;
	uint64_t h[2000], x;
	long n, live;
	unsigned i, ok = 0;

	(void)state;
	/* Fill enough to need new slabs and table growth (>64 slabs). */
	for (i = 0; i < 2000; i++) {
		for (n = 1;; n++) {
			int rc;

			live = t.live;
			t.fail_at = t.calls + n;
			rc = zslab_alloc(zs, 1 + (i * 37) % 4136, &h[i]);
			if (rc == 0) {
				if (t.fail_at > t.calls)	/* not reached */
					break;
				/* The failure hit a path that tolerates it. */
				break;
			}
			assert_int_equal(rc, -ENOMEM);
			assert_int_equal(t.live, live);	/* nothing leaked */
			assert_int_equal(zslab_check(zs), 0);
		}
		t.fail_at = 0;
		ok++;
	}
	assert_int_equal(ok, 2000);
	zslab_get_stats(zs, &st);
	assert_int_equal(st.objects, 2000);
	assert_true(st.slabs > 64);
	for (i = 0; i < 2000; i++)
		zslab_free(zs, h[i], 1 + (i * 37) % 4136);
	assert_int_equal(zslab_check(zs), 0);
	t.fail_at = t.calls + 1;
	assert_int_equal(zslab_alloc(zs, 100, &x), 0);	/* spare: no alloc */
	t.fail_at = 0;
	zslab_free(zs, x, 100);
	zslab_destroy(zs);
	assert_int_equal(t.live, 0);

	/* zslab_new itself. */
	for (n = 1; n <= 4; n++) {
		struct zslab_params p = {
			.max_obj_bytes = 4096, .alloc = t_alloc,
			.free = t_free, .opaque = &t,
		};

		t.fail_at = t.calls + n;
		assert_int_equal(zslab_new(&p, &zs), -ENOMEM);
		assert_int_equal(t.live, 0);
	}
	t.fail_at = 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rejects_bad_params),
		cmocka_unit_test(class_sizes),
		cmocka_unit_test(alloc_map_free_pattern),
		cmocka_unit_test(slab_shapes),
		cmocka_unit_test(fullest_slab_first),
		cmocka_unit_test(empty_slabs_released),
		cmocka_unit_test(alloc_failure_injection),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
