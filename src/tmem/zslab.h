/*
 * zslab: a size-class slab allocator for variable-sized blobs (compressed
 * pages), so that storing a page costs one carve from a shared chunk
 * instead of one malloc().
 *
 * Owns: slabs.  A slab is one allocation of 1..4 chunks (chunk = 64 KiB by
 * default) carved into equal objects of one size class; classes are the
 * multiples of class_step_bytes (64) up to max_obj_bytes.  For each class the
 * number of chunks per slab is picked once, at creation, to keep the unused
 * tail of a slab under ~1.6% where possible (e.g. a 4160-byte class uses
 * 3 chunks = 47 objects, 0.6% tail, not 1 chunk = 15 objects, 4.8%).
 *
 * Handles: an allocation is named by a 64-bit handle, never 0, that stays
 * valid until zslab_free().  Objects never move (there is no compaction), so
 * the pointer from zslab_map() is stable too.
 *
 * Placement: partial slabs of a class sit in four lists by fullness
 * (quartiles); an allocation takes from the fullest non-empty list, so
 * frees concentrate in already-sparse slabs which then drain and are
 * returned.  A slab that becomes empty is freed at once, except one spare
 * per class kept to avoid alloc/free thrash at a slab boundary.
 *
 * Fragmentation is reported, not hidden: slab_bytes (memory held) against
 * req_bytes (bytes callers asked for).  The difference is class rounding
 * (obj_bytes - req_bytes) plus free slots and slab tails
 * (slab_bytes - obj_bytes).
 *
 * Invariants: every live handle's slab has nused > 0; a slab is on exactly
 * one fullness list iff 0 < nused < nobj; the spare (if any) has nused == 0.
 *
 * Threading: none.  The caller serialises every call on one zslab.
 */
#ifndef EBB_ZSLAB_H
#define EBB_ZSLAB_H

#include <stddef.h>
#include <stdint.h>

struct zslab;

struct zslab_params {
	uint32_t class_step_bytes;	/* class granularity, power of 2, >= 8; 0 = 64 */
	uint32_t max_obj_bytes;		/* largest allocation, <= chunk_bytes */
	uint32_t chunk_bytes;		/* slab building block; 0 = 64 KiB */
	/* Backing allocator for slabs and the allocator's own tables; NULL
	 * means malloc/free.  alloc returns NULL on failure.  The tmem store
	 * passes its fault-injecting wrapper here. */
	void *(*alloc)(void *opaque, size_t bytes);
	void (*free)(void *opaque, void *p);
	void *opaque;
	/* Where slab memory (not the allocator's tables) comes from; NULL
	 * means alloc/free above.  @obj_bytes is the slab's class size, so
	 * that a persistent backing (the tmem store's memfd arena) can record
	 * the slab's shape next to it.  Both or neither. */
	void *(*slab_alloc)(void *opaque, size_t slab_bytes, uint32_t obj_bytes);
	void (*slab_free)(void *opaque, void *mem, size_t slab_bytes);
};

struct zslab_stats {
	uint64_t slabs;		/* slabs held, spares included */
	uint64_t slab_bytes;	/* bytes held in slabs */
	uint64_t objects;	/* live allocations */
	uint64_t obj_bytes;	/* sum of their class sizes */
	uint64_t req_bytes;	/* sum of their requested sizes */
};

/* 0, -EINVAL (bad params) or -ENOMEM. */
int zslab_new(const struct zslab_params *p, struct zslab **out);
/* Free every slab, live objects included.  NULL is a no-op. */
void zslab_destroy(struct zslab *zs);

/* Allocate @bytes (1..max_obj_bytes).  0 and *@handle, -EINVAL or -ENOMEM. */
int zslab_alloc(struct zslab *zs, size_t bytes, uint64_t *handle);
/* Free @handle, allocated with the same @bytes.  Handle 0 is a no-op. */
void zslab_free(struct zslab *zs, uint64_t handle, size_t bytes);
/* Address of a live allocation. */
void *zslab_map(const struct zslab *zs, uint64_t handle);

/* Bytes an allocation of @bytes occupies (its class size); 0 if invalid. */
size_t zslab_class_bytes(const struct zslab *zs, size_t bytes);

/*
 * Re-create a slab over memory that already holds live objects (a tmem
 * store adopting its memfd arena): @mem is slab memory the slab_alloc hook
 * handed out for class @obj_bytes (an exact class size), @used a bitmap of
 * the class's objects-per-slab bits, set for each live object.  The slab
 * is owned by @zs from here on (slab_free releases it).  Free objects'
 * first bytes are overwritten (free-list links), live ones are not touched.
 * *@id names the slab; zslab_handle(*@id, idx) is object idx's handle.
 * -EINVAL (not a class size, no object live), -ENOMEM.
 */
int zslab_adopt(struct zslab *zs, void *mem, uint32_t obj_bytes,
		const uint64_t *used, uint64_t req_bytes, uint32_t *id);
uint64_t zslab_handle(uint32_t id, unsigned idx);
/* Shape of the slabs of class @obj_bytes (an exact class size): slab bytes
 * and objects per slab.  -EINVAL if @obj_bytes is not a class size. */
int zslab_shape(const struct zslab *zs, uint32_t obj_bytes,
		uint32_t *slab_bytes, uint32_t *nobj);

void zslab_get_stats(const struct zslab *zs, struct zslab_stats *out);

/* Walk every slab and check the invariants above and the counters.
 * 0 or -EUCLEAN.  O(slabs + free objects); for tests. */
int zslab_check(const struct zslab *zs);

#endif
