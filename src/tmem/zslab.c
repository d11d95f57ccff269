/*
 * zslab: size-class slabs that hold the store's compressed blobs behind
 * 64-bit handles (API and size classes in zslab.h).
 */
/*
 * Layout:
 *
 *   zs->tab[id] ──► struct zslab_slab (header, separate allocation)
 *                     mem ──► [obj 0][obj 1] ... [obj nobj-1][tail]
 *
 *   handle = id << 16 | object index        (id >= 1, so handle != 0)
 *
 * Headers live outside the slab memory so that a 4096-byte class packs 16
 * objects into 64 KiB instead of 15, and so that writing past an object
 * cannot corrupt allocator state (ASan builds also poison free objects).
 *
 * Free objects of a slab form a LIFO list threaded through their first two
 * bytes (an object index, ZS_NIL ends it).  Objects at and above `fresh`
 * have never been handed out and are not on the list, so creating a slab
 * costs no pass over its memory.
 */
#include "zslab.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Slab memory from a slab_alloc hook (a memfd shared with a later
 * process) is not poisoned: its shadow would outlive the mapping. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ZS_POISON(a, n)		do { if (!zs->p.slab_alloc) \
		ASAN_POISON_MEMORY_REGION((a), (n)); } while (0)
#define ZS_UNPOISON(a, n)	do { if (!zs->p.slab_alloc) \
		ASAN_UNPOISON_MEMORY_REGION((a), (n)); } while (0)
#else
#define ZS_POISON(p, n)		((void)(p), (void)(n))
#define ZS_UNPOISON(p, n)	((void)(p), (void)(n))
#endif

#define ZS_NGROUPS	4	/* fullness quartiles */
#define ZS_NIL		0xffffu	/* end of a free list */
#define ZS_MAX_CHUNKS	4	/* chunks per slab, upper bound */
#define ZS_LINK_BYTES	8	/* free-list link area; ASan granule */
#define ZS_IDX_BITS	16

struct zslab_slab {
	uint8_t *mem;			/* class->nobj objects, then the tail */
	struct zslab_slab *prev;	/* fullness list links */
	struct zslab_slab *next;
	uint32_t id;			/* index in zs->tab */
	uint16_t cls;			/* class index */
	uint16_t nused;			/* live objects */
	uint16_t free_head;		/* first freed object, ZS_NIL if none */
	uint16_t fresh;			/* objects [fresh, nobj) never used */
	int8_t group;			/* fullness list, -1: full or spare */
};

struct zslab_class {
	uint32_t obj_bytes;		/* object size */
	uint32_t slab_bytes;		/* slab size: 1..4 chunks */
	uint16_t nobj;			/* objects per slab */
	struct zslab_slab *group[ZS_NGROUPS];	/* partial slabs by fullness */
	struct zslab_slab *spare;	/* one empty slab kept back, or NULL */
};

struct zslab {
	struct zslab_params p;		/* as given, defaults filled in */
	uint32_t nclasses;
	struct zslab_class *cls;	/* [nclasses] */
	struct zslab_slab **tab;	/* id -> slab, [0] unused */
	uint32_t *free_ids;		/* recycled ids, a stack */
	uint32_t tab_len;		/* ids in use or recycled, + 1 */
	uint32_t tab_cap;		/* capacity of tab and free_ids */
	uint32_t nfree_ids;
	struct zslab_stats st;
};

static void *zs_alloc(struct zslab *zs, size_t bytes)
{
	return zs->p.alloc ? zs->p.alloc(zs->p.opaque, bytes) : malloc(bytes);
}

static void zs_free(struct zslab *zs, void *p)
{
	if (zs->p.free)
		zs->p.free(zs->p.opaque, p);
	else
		free(p);
}

static void *mem_alloc(struct zslab *zs, const struct zslab_class *c)
{
	if (zs->p.slab_alloc)
		return zs->p.slab_alloc(zs->p.opaque, c->slab_bytes, c->obj_bytes);
	return zs_alloc(zs, c->slab_bytes);
}

static void mem_free(struct zslab *zs, const struct zslab_class *c, void *mem)
{
	if (zs->p.slab_free)
		zs->p.slab_free(zs->p.opaque, mem, c->slab_bytes);
	else
		zs_free(zs, mem);
}

static uint8_t *obj_addr(const struct zslab_class *c,
			 const struct zslab_slab *s, unsigned idx)
{
	return s->mem + (size_t)idx * c->obj_bytes;
}

/* The list a slab belongs on for its fill level: -1 when full or empty. */
static int group_for(const struct zslab_class *c, const struct zslab_slab *s)
{
	if (s->nused == 0 || s->nused == c->nobj)
		return -1;
	return (int)((ZS_NGROUPS * (unsigned)s->nused - 1) / c->nobj);
}

static void list_unlink(struct zslab_class *c, struct zslab_slab *s)
{
	if (s->group < 0)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->group[s->group] = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	s->group = -1;
}

static void list_push(struct zslab_class *c, struct zslab_slab *s, int g)
{
	s->group = (int8_t)g;
	s->prev = NULL;
	s->next = c->group[g];
	if (s->next)
		s->next->prev = s;
	c->group[g] = s;
}

static void relist(struct zslab_class *c, struct zslab_slab *s)
{
	int g = group_for(c, s);

	if (g == s->group)
		return;
	list_unlink(c, s);
	if (g >= 0)
		list_push(c, s, g);
}

/* Pick the slab size for objects of @obj bytes: the fewest chunks whose
 * tail waste is at most 1/64 of the slab, else the least wasteful. */
static void class_shape(uint32_t obj, uint32_t chunk, struct zslab_class *c)
{
	uint32_t best_k = 1;
	uint64_t best_num = UINT64_MAX, best_den = 1;
	uint32_t k;

	for (k = 1; k <= ZS_MAX_CHUNKS; k++) {
		uint64_t slab = (uint64_t)k * chunk;
		uint64_t tail = slab % obj;

		if (tail * 64 <= slab) {
			best_k = k;
			break;
		}
		/* tail/slab < best_num/best_den, by cross-multiplying */
		if (tail * best_den < best_num * slab) {
			best_k = k;
			best_num = tail;
			best_den = slab;
		}
	}
	c->obj_bytes = obj;
	c->slab_bytes = best_k * chunk;
	c->nobj = (uint16_t)(c->slab_bytes / obj);
}

static int tab_reserve(struct zslab *zs);

int zslab_new(const struct zslab_params *p, struct zslab **out)
{
	struct zslab_params q = *p;
	struct zslab *zs;
	uint32_t i;

	if (!q.class_step_bytes)
		q.class_step_bytes = 64;
	if (!q.chunk_bytes)
		q.chunk_bytes = 64 << 10;
	if (q.class_step_bytes < ZS_LINK_BYTES ||
	    (q.class_step_bytes & (q.class_step_bytes - 1)) ||
	    q.max_obj_bytes == 0 || q.max_obj_bytes > q.chunk_bytes ||
	    (uint64_t)q.chunk_bytes * ZS_MAX_CHUNKS / q.class_step_bytes >= ZS_NIL ||
	    !q.alloc != !q.free || !q.slab_alloc != !q.slab_free)
		return -EINVAL;

	zs = q.alloc ? q.alloc(q.opaque, sizeof(*zs)) : malloc(sizeof(*zs));
	if (!zs)
		return -ENOMEM;
	memset(zs, 0, sizeof(*zs));
	zs->p = q;
	zs->nclasses = (q.max_obj_bytes + q.class_step_bytes - 1) / q.class_step_bytes;
	zs->cls = zs_alloc(zs, zs->nclasses * sizeof(*zs->cls));
	if (!zs->cls) {
		zs_free(zs, zs);
		return -ENOMEM;
	}
	memset(zs->cls, 0, zs->nclasses * sizeof(*zs->cls));
	for (i = 0; i < zs->nclasses; i++)
		class_shape((i + 1) * q.class_step_bytes, q.chunk_bytes, &zs->cls[i]);
	/* The id tables exist from the start, so that the number of the
	 * allocator's own allocations only changes with slabs. */
	if (tab_reserve(zs)) {
		zs_free(zs, zs->cls);
		zs_free(zs, zs);
		return -ENOMEM;
	}
	zs->tab_len = 1;	/* id 0 is never used: handle 0 means "none" */
	*out = zs;
	return 0;
}

static void slab_release(struct zslab *zs, struct zslab_slab *s)
{
	struct zslab_class *c = &zs->cls[s->cls];

	zs->tab[s->id] = NULL;
	zs->free_ids[zs->nfree_ids++] = s->id;
	zs->st.slabs--;
	zs->st.slab_bytes -= c->slab_bytes;
	ZS_UNPOISON(s->mem, c->slab_bytes);
	mem_free(zs, c, s->mem);
	zs_free(zs, s);
}

void zslab_destroy(struct zslab *zs)
{
	uint32_t id;

	if (!zs)
		return;
	for (id = 1; id < zs->tab_len; id++) {
		if (zs->tab[id])
			slab_release(zs, zs->tab[id]);
	}
	zs_free(zs, zs->tab);
	zs_free(zs, zs->free_ids);
	zs_free(zs, zs->cls);
	zs_free(zs, zs);
}

/* Make room for one more id.  Both arrays grow together so that pushing a
 * recycled id can never fail. */
static int tab_reserve(struct zslab *zs)
{
	struct zslab_slab **tab;
	uint32_t *ids;
	uint32_t cap;

	if (zs->nfree_ids || zs->tab_len < zs->tab_cap)
		return 0;
	if (zs->tab_cap >= (1u << 30))
		return -ENOMEM;	/* 2^30 slabs: far beyond any host */
	cap = zs->tab_cap ? zs->tab_cap * 2 : 64;
	tab = zs_alloc(zs, cap * sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	ids = zs_alloc(zs, cap * sizeof(*ids));
	if (!ids) {
		zs_free(zs, tab);
		return -ENOMEM;
	}
	memset(tab, 0, cap * sizeof(*tab));
	if (zs->tab)
		memcpy(tab, zs->tab, zs->tab_len * sizeof(*tab));
	if (zs->nfree_ids)
		memcpy(ids, zs->free_ids, zs->nfree_ids * sizeof(*ids));
	zs_free(zs, zs->tab);
	zs_free(zs, zs->free_ids);
	zs->tab = tab;
	zs->free_ids = ids;
	zs->tab_cap = cap;
	return 0;
}

/* A slab record of class @ci, on no list and in no table yet, with room
 * reserved in the table for slab_register. */
static struct zslab_slab *slab_record(struct zslab *zs, unsigned ci)
{
	struct zslab_slab *s;

	if (tab_reserve(zs))
		return NULL;
	s = zs_alloc(zs, sizeof(*s));
	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->cls = (uint16_t)ci;
	s->free_head = ZS_NIL;
	s->group = -1;
	return s;
}

/* Give @s its id and count it: it is one of the allocator's slabs now. */
static void slab_register(struct zslab *zs, struct zslab_slab *s)
{
	s->id = zs->nfree_ids ? zs->free_ids[--zs->nfree_ids] : zs->tab_len++;
	zs->tab[s->id] = s;
	zs->st.slabs++;
	zs->st.slab_bytes += zs->cls[s->cls].slab_bytes;
}

static int slab_create(struct zslab *zs, unsigned ci, struct zslab_slab **out)
{
	struct zslab_class *c = &zs->cls[ci];
	struct zslab_slab *s = slab_record(zs, ci);

	if (!s)
		return -ENOMEM;
	s->mem = mem_alloc(zs, c);
	if (!s->mem) {
		zs_free(zs, s);
		return -ENOMEM;
	}
	ZS_POISON(s->mem, c->slab_bytes);
	slab_register(zs, s);
	*out = s;
	return 0;
}

static int class_of(const struct zslab *zs, size_t bytes, unsigned *ci)
{
	if (bytes == 0 || bytes > zs->p.max_obj_bytes)
		return -EINVAL;
	*ci = (unsigned)((bytes + zs->p.class_step_bytes - 1) / zs->p.class_step_bytes - 1);
	return 0;
}

size_t zslab_class_bytes(const struct zslab *zs, size_t bytes)
{
	unsigned ci;

	if (class_of(zs, bytes, &ci))
		return 0;
	return zs->cls[ci].obj_bytes;
}

int zslab_alloc(struct zslab *zs, size_t bytes, uint64_t *handle)
{
	struct zslab_class *c;
	struct zslab_slab *s = NULL;
	unsigned ci, idx;
	uint8_t *obj;
	int g, rc;

	rc = class_of(zs, bytes, &ci);
	if (rc)
		return rc;
	c = &zs->cls[ci];
	/* Fullest first: keeps sparse slabs draining towards release. */
	for (g = ZS_NGROUPS - 1; g >= 0 && !s; g--)
		s = c->group[g];
	if (!s && c->spare) {
		s = c->spare;
		c->spare = NULL;
	}
	if (!s) {
		rc = slab_create(zs, ci, &s);
		if (rc)
			return rc;
	}

	if (s->free_head != ZS_NIL) {
		uint16_t next;

		idx = s->free_head;
		obj = obj_addr(c, s, idx);
		ZS_UNPOISON(obj, c->obj_bytes);
		memcpy(&next, obj, sizeof(next));
		s->free_head = next;
	} else {
		assert(s->fresh < c->nobj);
		idx = s->fresh++;
		obj = obj_addr(c, s, idx);
		ZS_UNPOISON(obj, c->obj_bytes);
	}
	s->nused++;
	relist(c, s);

	zs->st.objects++;
	zs->st.obj_bytes += c->obj_bytes;
	zs->st.req_bytes += bytes;
	*handle = ((uint64_t)s->id << ZS_IDX_BITS) | idx;
	return 0;
}

static struct zslab_slab *slab_of(const struct zslab *zs, uint64_t handle)
{
	uint64_t id = handle >> ZS_IDX_BITS;
	struct zslab_slab *s;

	assert(id >= 1 && id < zs->tab_len);
	s = zs->tab[id];
	assert(s && (handle & ((1u << ZS_IDX_BITS) - 1)) < zs->cls[s->cls].nobj);
	return s;
}

void *zslab_map(const struct zslab *zs, uint64_t handle)
{
	const struct zslab_slab *s = slab_of(zs, handle);
	unsigned idx = (unsigned)(handle & ((1u << ZS_IDX_BITS) - 1));

	return obj_addr(&zs->cls[s->cls], s, idx);
}

void zslab_free(struct zslab *zs, uint64_t handle, size_t bytes)
{
	struct zslab_slab *s;
	struct zslab_class *c;
	unsigned idx, ci;
	uint16_t link;
	uint8_t *obj;

	if (!handle)
		return;
	s = slab_of(zs, handle);
	c = &zs->cls[s->cls];
	idx = (unsigned)(handle & ((1u << ZS_IDX_BITS) - 1));
	assert(class_of(zs, bytes, &ci) == 0 && ci == s->cls);
	(void)ci;
	assert(s->nused > 0);

	obj = obj_addr(c, s, idx);
	link = s->free_head;
	memcpy(obj, &link, sizeof(link));
	ZS_POISON(obj + ZS_LINK_BYTES, c->obj_bytes - ZS_LINK_BYTES);
	s->free_head = (uint16_t)idx;
	s->nused--;

	zs->st.objects--;
	zs->st.obj_bytes -= c->obj_bytes;
	zs->st.req_bytes -= bytes;

	if (s->nused == 0) {
		list_unlink(c, s);
		if (!c->spare)
			c->spare = s;
		else
			slab_release(zs, s);
		return;
	}
	relist(c, s);
}

uint64_t zslab_handle(uint32_t id, unsigned idx)
{
	return ((uint64_t)id << ZS_IDX_BITS) | idx;
}

static int class_exact(const struct zslab *zs, uint32_t obj_bytes,
		       unsigned *ci)
{
	/* Not class_of(): the largest class may exceed max_obj_bytes. */
	if (obj_bytes == 0 || obj_bytes % zs->p.class_step_bytes ||
	    obj_bytes / zs->p.class_step_bytes > zs->nclasses)
		return -EINVAL;
	*ci = obj_bytes / zs->p.class_step_bytes - 1;
	return 0;
}

int zslab_shape(const struct zslab *zs, uint32_t obj_bytes,
		uint32_t *slab_bytes, uint32_t *nobj)
{
	unsigned ci;

	if (class_exact(zs, obj_bytes, &ci))
		return -EINVAL;
	*slab_bytes = zs->cls[ci].slab_bytes;
	*nobj = zs->cls[ci].nobj;
	return 0;
}

int zslab_adopt(struct zslab *zs, void *mem, uint32_t obj_bytes,
		const uint64_t *used, uint64_t req_bytes, uint32_t *id)
{
	struct zslab_slab *s;
	struct zslab_class *c;
	unsigned ci, idx;
	uint16_t link;

	if (class_exact(zs, obj_bytes, &ci))
		return -EINVAL;
	c = &zs->cls[ci];
	s = slab_record(zs, ci);
	if (!s)
		return -ENOMEM;
	s->mem = mem;
	s->fresh = c->nobj;
	/* Free objects are linked highest first so that allocation hands
	 * out low indexes first, as a fresh slab would. */
	for (idx = c->nobj; idx-- > 0;) {
		uint8_t *obj = obj_addr(c, s, idx);

		if (used[idx / 64] >> (idx % 64) & 1) {
			s->nused++;
			continue;
		}
		link = s->free_head;
		memcpy(obj, &link, sizeof(link));
		ZS_POISON(obj + ZS_LINK_BYTES, c->obj_bytes - ZS_LINK_BYTES);
		s->free_head = (uint16_t)idx;
	}
	if (!s->nused) {
		zs_free(zs, s);
		return -EINVAL;
	}
	slab_register(zs, s);
	zs->st.objects += s->nused;
	zs->st.obj_bytes += (uint64_t)s->nused * c->obj_bytes;
	zs->st.req_bytes += req_bytes;
	relist(c, s);
	*id = s->id;
	return 0;
}

void zslab_get_stats(const struct zslab *zs, struct zslab_stats *out)
{
	*out = zs->st;
}

int zslab_check(const struct zslab *zs)
{
	uint64_t slabs = 0, slab_bytes = 0, objects = 0, obj_bytes = 0;
	uint32_t id, ci;
	int g;

	for (id = 1; id < zs->tab_len; id++) {
		const struct zslab_slab *s = zs->tab[id];
		const struct zslab_class *c;
		unsigned nfree = 0, idx;

		if (!s)
			continue;
		if (s->id != id || s->cls >= zs->nclasses)
			return -EUCLEAN;
		c = &zs->cls[s->cls];
		if (s->fresh > c->nobj || s->nused > s->fresh)
			return -EUCLEAN;
		for (idx = s->free_head; idx != ZS_NIL; nfree++) {
			uint16_t next;
			const uint8_t *obj;

			if (idx >= s->fresh || nfree >= c->nobj)
				return -EUCLEAN;	/* bad index or a cycle */
			obj = obj_addr(c, s, idx);
			memcpy(&next, obj, sizeof(next));
			idx = next;
		}
		if (s->fresh - nfree != s->nused)
			return -EUCLEAN;
		if (s->group != group_for(c, s))
			return -EUCLEAN;
		if (s->nused == 0 && c->spare != s)
			return -EUCLEAN;
		slabs++;
		slab_bytes += c->slab_bytes;
		objects += s->nused;
		obj_bytes += (uint64_t)s->nused * c->obj_bytes;
	}
	for (ci = 0; ci < zs->nclasses; ci++) {
		const struct zslab_class *c = &zs->cls[ci];

		for (g = 0; g < ZS_NGROUPS; g++) {
			const struct zslab_slab *s, *prev = NULL;

			for (s = c->group[g]; s; prev = s, s = s->next) {
				if (s->group != g || s->cls != ci || s->prev != prev ||
				    zs->tab[s->id] != s)
					return -EUCLEAN;
			}
		}
	}
	if (slabs != zs->st.slabs || slab_bytes != zs->st.slab_bytes ||
	    objects != zs->st.objects || obj_bytes != zs->st.obj_bytes ||
	    zs->st.req_bytes > zs->st.obj_bytes)
		return -EUCLEAN;
	return 0;
}
