/*
 * tmem_int.h: the tmem store's records and the helpers its files share
 * (tmem.c, tmem_charge.c, tmem_dedup.c, tmem_index.c, tmem_lru.c,
 * tmem_check.c).  Not an API: callers use tmem.h.  Every function here
 * runs with s->lock held.
 *
 * The tmem store.  Data structures, all guarded by s->lock:
 *
 *   store ─ client hash (id) + list ─ client ─ pools[64] ─┐
 *                                        │                 ▼
 *                                   dom (private)   pool ─ object hash (oid)
 *                                                    │        │
 *   shared pools: pool->dom = &pool->own_dom         │     object ─ radix tree (index)
 *                                                    │                 │
 *   per client: LRU of its ephemeral pages ◄─────────┴──────────── page descriptor
 *                                                                      │ blob handle
 *   store: dedup index (hash → chain of blobs) ───────────────────► blob (zslab object:
 *                                                                   header + payload)
 *
 * A page descriptor (struct tmem_page) is in one of three states: ZERO (a
 * flag, no blob), BLOB (holds one reference on a blob) or EMPTY.  EMPTY
 * exists only inside tmem_put, as the placeholder that keeps the object
 * and the radix path alive while the new content is built; no page is
 * EMPTY between calls.
 *
 * A blob lives in one zslab object: a 40-byte header (hash, dedup chain
 * link, referencing domains and their reference counts) and the payload,
 * lz4/zstd-compressed or raw.  Keeping the header in the slab object costs
 * one 64-byte step for raw pages but saves a malloc per stored page.
 */
#ifndef EBB_TMEM_INT_H
#define EBB_TMEM_INT_H

#include "tmem.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lathist.h"
#include "zslab.h"

#define PG_EMPTY	0	/* placeholder inside tmem_put only */
#define PG_ZERO		1	/* all-zero page, no blob */
#define PG_BLOB		2	/* content in pg->blob */

#define KIND_EPH	0	/* index of per-kind counters */
#define KIND_PERS	1

#define CLIENT_BUCKETS	64u	/* clients are few (one per guest) */
#define OBJ_BUCKETS_MIN	16u	/* per pool, doubled at load factor 1 */
#define DD_BUCKETS_MIN	1024u	/* dedup index, doubled at load factor 1 */
#define DEDUP_MAX_PROBE	16u	/* chain entries visited per lookup */
#define DEDUP_MAX_CMP	4u	/* full byte compares per lookup */

#define RT_BITS		6u
#define RT_SLOTS	(1u << RT_BITS)
#define RT_MAX_HEIGHT	6u	/* 6 * 6 = 36 >= 32 index bits */

#define RAW_THRESHOLD_DEFAULT	(TMEM_PAGE_SIZE * 3 / 4)

struct tmem_client;
struct tmem_pool;

struct rt_node {
	void *slot[RT_SLOTS];	/* child nodes, or pages at the leaf level */
	uint32_t count;		/* non-NULL slots */
};

struct tmem_counts {
	uint64_t pages;		/* pages with content (EMPTY excluded) */
	uint64_t zero;		/* of which PG_ZERO */
	uint64_t raw;		/* of which stored uncompressed */
	uint64_t comp_bytes;	/* payload bytes of the non-zero ones */
};

struct tmem_opcounts {
	uint64_t puts, gets, hits, misses, flushes, evictions, refused;
};

/* A charge domain: what one client pays for through one set of pools. */
struct tmem_dom {
	struct tmem_client *owner;	/* charged client; lock */
	uint64_t salt;			/* dedup bucket salt, 0 in cross mode */
	uint64_t charged_bytes;		/* blobs + records charged here; lock */
	uint64_t stored_bytes;		/* payload of distinct blobs referenced */
	uint64_t chk_bytes;		/* tmem_check() scratch */
};

struct tmem_page {
	union {
		/* Ephemeral pages: owner's LRU, toward the LRU end. */
		struct tmem_page *lru_prev;
		/* Durable pages (shm_durable()): their key-table entry
		 * number + 1, 0 while the page has none (inside a put).
		 * Persistent pages are never on an LRU, so the word is
		 * free for this. */
		uint64_t shm_ent;
	};
	struct tmem_page *lru_next;	/* toward the MRU end */
	struct tmem_obj *obj;		/* object holding the page */
	uint64_t blob;			/* zslab handle if PG_BLOB, else 0 */
	uint32_t index;			/* page index in obj */
	uint8_t state;			/* PG_* */
	/* Adopted from an earlier process's arena and not read since: its
	 * content is checked against its entry's hash at the first get
	 * (shm_verify), not at adoption, so adopting costs no decompression
	 * per page. */
	uint8_t unverified;
};

struct tmem_obj {
	struct tmem_oid oid;		/* 192-bit object id */
	uint64_t hash;			/* keyed hash of oid */
	struct tmem_obj *hnext;		/* pool bucket chain */
	struct tmem_pool *pool;		/* pool holding the object */
	struct rt_node *rt_root;	/* index -> page; NULL when empty */
	uint32_t npages;		/* slots in the tree, EMPTY included */
	uint8_t rt_height;		/* levels; 0 when empty */
};

struct tmem_pool {
	uint32_t flags;			/* TMEM_POOL_* */
	struct tmem_uuid uuid;		/* shared pools only */
	struct tmem_dom *dom;		/* &owner->dom, or &own_dom if shared */
	struct tmem_dom own_dom;	/* shared pools' charge domain */
	struct tmem_obj **buckets;	/* object hash, nbuckets (power of 2) */
	uint32_t nbuckets;
	uint64_t nobjs;			/* objects in the hash */
	struct tmem_counts cnt;		/* its pages */
	struct tmem_client **sharers;	/* shared: clients with it open, in
					 * opening order; owner is [0] */
	uint32_t nsharers;
	struct tmem_pool *shared_next;	/* store's list of shared pools */
	struct tmem_pool *shared_prev;
};

struct tmem_client {
	uint32_t id;			/* caller's id, e.g. the guest id */
	uint32_t shm_slot;		/* shm store: client record + 1 */
	char name[TMEM_NAME_MAX];
	uint32_t weight;		/* ephemeral share weight */
	uint64_t max_persistent_pages;	/* 0: unlimited */
	struct tmem_pool *pools[TMEM_MAX_POOLS_PER_CLIENT];	/* by pool id */
	struct tmem_dom dom;		/* private pools' domain */
	struct tmem_page *lru_head;	/* least recently used ephemeral page */
	struct tmem_page *lru_tail;	/* most recently used */
	struct tmem_counts cnt[2];	/* pages charged to it, per KIND_* */
	uint64_t charged_bytes;		/* sum over the domains it owns */
	uint64_t stored_bytes;		/* ditto, distinct blob payload */
	struct tmem_opcounts ops;	/* calls it made / evictions it suffered */
	int64_t pending;		/* charge delta not yet told to the hook */
	bool pending_linked;		/* on s->pending */
	struct tmem_client *pending_next;
	struct tmem_client *hnext;	/* id hash chain */
	struct tmem_client *prev;	/* all clients, creation order */
	struct tmem_client *next;
};

/* Header of a blob; payload follows.  Lives in a zslab object. */
struct blob_share {
	struct tmem_dom *dom;		/* a further referencing domain */
	uint32_t refs;			/* its page references */
};

struct blob {
	uint64_t hash;			/* keyed XXH3-64 of the page */
	uint64_t next;			/* dedup chain: next blob handle, 0 ends */
	struct tmem_dom *dom;		/* first referencing domain */
	struct blob_share *more;	/* cross-client mode: other domains */
	uint32_t refs;			/* page references from dom */
	uint16_t len;			/* payload bytes; TMEM_PAGE_SIZE: raw */
	uint16_t nmore;			/* entries in more[] */
	uint8_t data[];			/* payload */
};

#define BLOB_MAX_BYTES	(sizeof(struct blob) + TMEM_PAGE_SIZE)

struct tmem_store {
	pthread_mutex_t lock;		/* guards everything below */
	struct tmem_store_config cfg;	/* as given, defaults filled in */
	bool cross;			/* TMEM_STORE_CROSS_CLIENT_DEDUP */
	bool dedup;			/* !TMEM_STORE_NO_DEDUP */
	void *comp_ctx;			/* cfg.comp's context */
	struct zslab *zs;		/* blob slabs */
	uint64_t seed;			/* hash key, random per store */
	uint64_t salt_ctr;		/* domains created, feeds their salt */

	struct tmem_client *cbuckets[CLIENT_BUCKETS];
	struct tmem_client *clients;	/* list head */
	struct tmem_client *clients_tail;
	uint64_t nclients;
	struct tmem_client *pending;	/* clients with a pending delta */
	struct tmem_pool *shared;	/* shared pools */
	uint64_t npools;
	uint64_t nobjs;

	uint64_t *dd;			/* dedup buckets: blob handles */
	uint32_t dd_nbuckets;		/* power of 2 */
	uint64_t nblobs;

	struct tmem_counts cnt[2];	/* per KIND_* */
	struct tmem_opcounts ops;
	uint64_t stored_bytes;		/* payload of all blobs */
	uint64_t slab_used_bytes;	/* header + payload of all blobs */
	uint64_t charged_bytes;		/* sum of clients' charged_bytes */
	uint64_t meta_bytes;		/* page/object/node records */

	uint8_t *cbuf;			/* compress output, one page */
	uint8_t *scratch;		/* dedup compare, one page */

	/* Put and get latency, one call in LAT_SAMPLE of each timed. */
	struct lathist put_lat;
	struct lathist get_lat;

	/* The memfd arena (tmem_shm.c), NULL for a heap-only store. */
	struct tmem_shm *shm;
	/* Inside a durable put, the old content's blob must outlive the
	 * old key-table entry (a crash before the new entry commits still
	 * finds the old one whole), so its slot is freed at the end of the
	 * put: blob_destroy() parks it here while defer_armed. */
	bool defer_armed;
	uint64_t deferred_h;		/* parked blob handle, 0: none */
	size_t deferred_req;		/* its zslab request size */

	uint64_t dbg_allocs;		/* allocation attempts */
	uint64_t dbg_live;		/* allocations not freed */
	uint64_t dbg_injected;		/* failures injected */
	uint64_t dbg_fail_at;		/* dbg_allocs value that fails; 0: off */
};


typedef void (*rt_page_fn)(struct tmem_store *s, struct tmem_page *pg, void *arg);

/* tmem.c: what the shm loader needs to rebuild clients and pools. */
int store_create(const struct tmem_store_config *cfg, struct tmem_shm *shm,
		 const uint64_t *seed, struct tmem_store **out);
struct tmem_client *tm_client_find(const struct tmem_store *s, uint32_t id);
int tm_client_create(struct tmem_store *s, uint32_t client_id, const char *name,
		  uint32_t weight, uint64_t max_persistent_pages,
		  uint32_t shm_slot, struct tmem_client **out);
int tm_pool_create(struct tmem_store *s, struct tmem_client *c, uint32_t flags,
		const struct tmem_uuid *uuid, struct tmem_pool **out);

/* tmem_shm.c: the memfd arena.  Every call is a no-op on a heap store,
 * and on a detached one (tmem_store_free: the memfd outlives the store). */
bool shm_durable(const struct tmem_store *s, const struct tmem_pool *pool);
void shm_zslab_hooks(struct tmem_store *s, struct zslab_params *zp);
int shm_client_add(struct tmem_store *s, struct tmem_client *c);
void shm_client_update(struct tmem_store *s, struct tmem_client *c);
void shm_client_del(struct tmem_store *s, struct tmem_client *c);
void shm_pool_mark(struct tmem_store *s, struct tmem_client *c,
		   uint32_t pool_id, bool durable);
int shm_ent_reserve(struct tmem_store *s, uint64_t *ent);
void shm_ent_unreserve(struct tmem_store *s, uint64_t ent);
void shm_ent_commit(struct tmem_store *s, uint64_t ent, uint32_t client_id,
		    uint32_t pool_id, const struct tmem_oid *oid,
		    uint32_t index, const struct tmem_page *pg, uint64_t hash);
void shm_ent_clear(struct tmem_store *s, uint64_t ent);
/* @page is the content an adopted page @pg just decompressed to: 0 if
 * its hash is the one its entry recorded, else -EBADMSG. */
int shm_verify(const struct tmem_store *s, const struct tmem_page *pg,
	       const void *page);
void shm_detach(struct tmem_store *s);
void shm_unmap(struct tmem_shm *m);

/* tmem_charge.c */
void *st_alloc(struct tmem_store *s, size_t bytes);
void st_free(struct tmem_store *s, void *p);
void *zs_alloc_cb(void *opaque, size_t bytes);
void zs_free_cb(void *opaque, void *p);
void pending_add(struct tmem_store *s, struct tmem_client *c, int64_t delta);
void dom_charge(struct tmem_store *s, struct tmem_dom *d, int64_t delta);
void dom_stored(struct tmem_dom *d, int64_t delta);
void charges_flush_except(struct tmem_store *s, struct tmem_client *keep);
void charges_flush(struct tmem_store *s);
void *meta_alloc(struct tmem_store *s, struct tmem_dom *d, size_t bytes);
void meta_free(struct tmem_store *s, struct tmem_dom *d, void *p, size_t bytes);
void dom_init(struct tmem_store *s, struct tmem_dom *d,
	      struct tmem_client *owner);
int pool_kind(const struct tmem_pool *p);
void counts_add(struct tmem_counts *dst, const struct tmem_counts *d, int sign);
void page_count(struct tmem_store *s, struct tmem_pool *pool, uint8_t state,
		uint32_t len, int sign);

/* tmem_dedup.c */
uint64_t page_hash(const struct tmem_store *s, const void *page);
bool page_is_zero(const void *page);
struct blob *blob_at(const struct tmem_store *s, uint64_t h);
size_t blob_req_bytes(const struct blob *b);
int64_t blob_obj_bytes(const struct tmem_store *s, const struct blob *b);
uint32_t dd_slot(const struct tmem_store *s, uint64_t hash,
		 const struct tmem_dom *d);
bool blob_equals(struct tmem_store *s, const struct blob *b, const void *page);
uint64_t dd_lookup(struct tmem_store *s, const void *page, uint64_t hash,
		   const struct tmem_dom *d);
int blob_new(struct tmem_store *s, struct tmem_dom *d, const void *page,
	     uint64_t hash, uint64_t *out);
int blob_ref(struct tmem_store *s, uint64_t h, struct tmem_dom *d);
void blob_unref(struct tmem_store *s, uint64_t h, struct tmem_dom *d);
/* Size the dedup index for @nblobs blobs at once (adoption: rehashing
 * as it fills would walk them all twice over).  Best effort. */
void dd_reserve(struct tmem_store *s, uint64_t nblobs);
void blob_adopt(struct tmem_store *s, uint64_t h, struct tmem_dom *d,
		uint64_t hash);
/* Start loading the bucket blob_adopt() will link a blob of @hash in @d
 * into: the loader asks a few entries ahead, so that the bucket array's
 * cache misses overlap instead of coming one per page. */
void dd_prefetch(const struct tmem_store *s, uint64_t hash,
		 const struct tmem_dom *d);
void blob_free_deferred(struct tmem_store *s);

/* tmem_index.c */
uint64_t oid_hash(const struct tmem_store *s, const struct tmem_oid *oid);
struct tmem_page *rt_lookup(const struct tmem_obj *o, uint32_t index);
int rt_insert(struct tmem_store *s, struct tmem_dom *d, struct tmem_obj *o,
	      uint32_t index, struct tmem_page *pg);
void rt_walk(struct tmem_store *s, struct tmem_dom *d, struct rt_node *n,
	     unsigned h, bool free_nodes, rt_page_fn fn, void *arg);
void page_drop_content(struct tmem_store *s, struct tmem_page *pg);
void obj_unlink_free(struct tmem_store *s, struct tmem_obj *o);
void page_free(struct tmem_store *s, struct tmem_page *pg);
uint32_t obj_destroy(struct tmem_store *s, struct tmem_obj *o);
struct tmem_obj *obj_find(const struct tmem_pool *pool,
			  const struct tmem_oid *oid, uint64_t hash);
int obj_new(struct tmem_store *s, struct tmem_pool *pool,
	    const struct tmem_oid *oid, uint64_t hash, struct tmem_obj **out);

/* tmem_lru.c */
void lru_unlink(struct tmem_client *c, struct tmem_page *pg);
void lru_push_mru(struct tmem_client *c, struct tmem_page *pg);
struct tmem_client *evict_pick(struct tmem_store *s, uint64_t *budget);
void evict_page(struct tmem_store *s, struct tmem_client *victim);
int charge_commit(struct tmem_store *s, struct tmem_client *c);

#endif
