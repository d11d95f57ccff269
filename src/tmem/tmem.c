/*
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
 *
 * Put, in numbered steps (referred to below):
 *   1. Resolve client and pool; classify the page (zero? hash).
 *   2. Find the page slot.  If it holds exactly this content already,
 *      done.  Otherwise an existing page's content is released now: from
 *      here on there is no old copy, so any failure leaves nothing stale.
 *      A new slot is created (object, radix path, descriptor), after the
 *      persistent quota check.
 *   3. Content: zero flag; or a byte-verified dedup hit (one more
 *      reference); or compress and store a new blob.
 *   4. Charge: every charged allocation and release so far has been netted
 *      into the owner's pending delta; ask the hook for it.  On refusal,
 *      evict (bounded) and ask again, or fail with -ENOSPC.
 *   5. Commit: mark the page, count it, put it on the LRU.  Nothing after
 *      step 4 can fail.
 *   Failure in 2-4 releases the content, removes the slot (and an object
 *   left empty) and returns the credits to the hook: no stale copy, no
 *   leak, no charge.
 *
 * Charging: dom_charge() adjusts the counters at once and adds the delta
 * to the owner's `pending`; pending deltas reach the hook at step 4 (for
 * the putting owner) or at the end of every public call (charges_flush),
 * so the hook sees one netted delta per client per call.
 *
 * Hostile input: object ids, indexes and page contents come from guests.
 * Hash tables are keyed with a per-store random seed (no crafted bucket
 * collisions), the dedup chain walk is bounded (DEDUP_MAX_PROBE), the
 * radix tree is at most 6 levels deep, and every record a guest can make
 * the store allocate is charged to it.
 */
#include "tmem.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

#include "lathist.h"
#include "loop.h"
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
	struct tmem_page *lru_prev;	/* owner's ephemeral LRU (toward LRU end) */
	struct tmem_page *lru_next;	/* toward the MRU end */
	struct tmem_obj *obj;		/* object holding the page */
	uint64_t blob;			/* zslab handle if PG_BLOB, else 0 */
	uint32_t index;			/* page index in obj */
	uint8_t state;			/* PG_* */
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

	uint64_t dbg_allocs;		/* allocation attempts */
	uint64_t dbg_live;		/* allocations not freed */
	uint64_t dbg_injected;		/* failures injected */
	uint64_t dbg_fail_at;		/* dbg_allocs value that fails; 0: off */
};

static const uint8_t zero_page[TMEM_PAGE_SIZE];

/* Time one put (get) in LAT_SAMPLE per calling thread.  A clock read costs
 * ~25 ns here, which every call would pay if all were timed; a fixed
 * sampling stride does not bias the percentiles (the stride knows nothing
 * of the page), and a busy store still gets thousands of samples a second.
 * The counters are per thread so that choosing costs no shared write, and
 * one per operation so that a thread's n puts time exactly n / LAT_SAMPLE
 * of them however its puts and gets interleave. */
#define LAT_SAMPLE	8
enum { LAT_PUT, LAT_GET };
static __thread unsigned lat_tick[2];

/* 0 when this call is not sampled, else the start time. */
static inline uint64_t lat_start(int op)
{
	return ++lat_tick[op] % LAT_SAMPLE ? 0 : loop_now_ns();
}

static inline void lat_end(struct lathist *h, uint64_t t0)
{
	if (t0)
		lathist_add(h, loop_now_ns() - t0);
}

/* ---- allocation (every allocation of the store passes here) ---- */

static void *st_alloc(struct tmem_store *s, size_t bytes)
{
	void *p;

	s->dbg_allocs++;
	if (s->dbg_fail_at && s->dbg_allocs == s->dbg_fail_at) {
		s->dbg_fail_at = 0;
		s->dbg_injected++;
		return NULL;
	}
	p = malloc(bytes);
	if (p)
		s->dbg_live++;
	return p;
}

static void st_free(struct tmem_store *s, void *p)
{
	if (!p)
		return;
	s->dbg_live--;
	free(p);
}

static void *zs_alloc_cb(void *opaque, size_t bytes)
{
	return st_alloc(opaque, bytes);
}

static void zs_free_cb(void *opaque, void *p)
{
	st_free(opaque, p);
}

/* ---- hashing ---- */

static uint64_t oid_hash(const struct tmem_store *s, const struct tmem_oid *oid)
{
	return XXH3_64bits_withSeed(oid, sizeof(*oid), s->seed);
}

static uint64_t page_hash(const struct tmem_store *s, const void *page)
{
	return XXH3_64bits_withSeed(page, TMEM_PAGE_SIZE, s->seed);
}

static bool oid_eq(const struct tmem_oid *a, const struct tmem_oid *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2];
}

static bool page_is_zero(const void *page)
{
	return memcmp(page, zero_page, TMEM_PAGE_SIZE) == 0;
}

/* ---- charging ---- */

static void pending_add(struct tmem_store *s, struct tmem_client *c,
			int64_t delta)
{
	c->pending += delta;
	if (!c->pending_linked) {
		c->pending_linked = true;
		c->pending_next = s->pending;
		s->pending = c;
	}
}

static void dom_charge(struct tmem_store *s, struct tmem_dom *d, int64_t delta)
{
	struct tmem_client *c = d->owner;

	/* Unsigned wrap-around adds a negative delta. */
	d->charged_bytes += (uint64_t)delta;
	c->charged_bytes += (uint64_t)delta;
	s->charged_bytes += (uint64_t)delta;
	pending_add(s, c, delta);
}

static void dom_stored(struct tmem_dom *d, int64_t delta)
{
	d->stored_bytes += (uint64_t)delta;
	d->owner->stored_bytes += (uint64_t)delta;
}

static void hook_tell(struct tmem_store *s, struct tmem_client *c)
{
	/* Only growth asked for in charge_commit() may be refused; here
	 * the result is deliberately ignored. */
	if (c->pending && s->cfg.charge)
		(void)s->cfg.charge(s->cfg.charge_opaque, c->id, c->pending);
	c->pending = 0;
}

/* Tell the hook every pending delta, except @keep's (which stays listed). */
static void charges_flush_except(struct tmem_store *s, struct tmem_client *keep)
{
	struct tmem_client *c = s->pending, *next;

	s->pending = NULL;
	for (; c; c = next) {
		next = c->pending_next;
		if (c == keep) {
			c->pending_next = s->pending;
			s->pending = c;
			continue;
		}
		hook_tell(s, c);
		c->pending_linked = false;
		c->pending_next = NULL;
	}
}

static void charges_flush(struct tmem_store *s)
{
	charges_flush_except(s, NULL);
}

static void *meta_alloc(struct tmem_store *s, struct tmem_dom *d, size_t bytes)
{
	void *p = st_alloc(s, bytes);

	if (p) {
		dom_charge(s, d, (int64_t)bytes);
		s->meta_bytes += bytes;
	}
	return p;
}

static void meta_free(struct tmem_store *s, struct tmem_dom *d, void *p,
		      size_t bytes)
{
	dom_charge(s, d, -(int64_t)bytes);
	s->meta_bytes -= bytes;
	st_free(s, p);
}

static void dom_init(struct tmem_store *s, struct tmem_dom *d,
		     struct tmem_client *owner)
{
	uint64_t ctr = ++s->salt_ctr;

	memset(d, 0, sizeof(*d));
	d->owner = owner;
	d->salt = s->cross ? 0 : XXH3_64bits_withSeed(&ctr, sizeof(ctr), s->seed);
}

/* ---- counters ---- */

static int pool_kind(const struct tmem_pool *p)
{
	return (p->flags & TMEM_POOL_PERSISTENT) ? KIND_PERS : KIND_EPH;
}

static void counts_add(struct tmem_counts *dst, const struct tmem_counts *d,
		       int sign)
{
	if (sign > 0) {
		dst->pages += d->pages;
		dst->zero += d->zero;
		dst->raw += d->raw;
		dst->comp_bytes += d->comp_bytes;
	} else {
		dst->pages -= d->pages;
		dst->zero -= d->zero;
		dst->raw -= d->raw;
		dst->comp_bytes -= d->comp_bytes;
	}
}

/* Count (sign > 0) or uncount a page with content in pool, owner, store. */
static void page_count(struct tmem_store *s, struct tmem_pool *pool,
		       uint8_t state, uint32_t len, int sign)
{
	struct tmem_counts d = {
		.pages = 1,
		.zero = state == PG_ZERO,
		.raw = len == TMEM_PAGE_SIZE,
		.comp_bytes = len,
	};
	int kind = pool_kind(pool);

	counts_add(&pool->cnt, &d, sign);
	counts_add(&pool->dom->owner->cnt[kind], &d, sign);
	counts_add(&s->cnt[kind], &d, sign);
}

/* ---- LRU (per client, ephemeral pages with content only) ---- */

static void lru_unlink(struct tmem_client *c, struct tmem_page *pg)
{
	if (pg->lru_prev)
		pg->lru_prev->lru_next = pg->lru_next;
	else
		c->lru_head = pg->lru_next;
	if (pg->lru_next)
		pg->lru_next->lru_prev = pg->lru_prev;
	else
		c->lru_tail = pg->lru_prev;
	pg->lru_prev = pg->lru_next = NULL;
}

static void lru_push_mru(struct tmem_client *c, struct tmem_page *pg)
{
	pg->lru_next = NULL;
	pg->lru_prev = c->lru_tail;
	if (c->lru_tail)
		c->lru_tail->lru_next = pg;
	else
		c->lru_head = pg;
	c->lru_tail = pg;
}

/* ---- dedup index ---- */

static struct blob *blob_at(const struct tmem_store *s, uint64_t h)
{
	return zslab_map(s->zs, h);
}

static size_t blob_req_bytes(const struct blob *b)
{
	return sizeof(*b) + b->len;
}

static int64_t blob_obj_bytes(const struct tmem_store *s, const struct blob *b)
{
	return (int64_t)zslab_class_bytes(s->zs, blob_req_bytes(b));
}

static uint32_t dd_slot(const struct tmem_store *s, uint64_t hash,
			const struct tmem_dom *d)
{
	return (uint32_t)((hash ^ d->salt) & (s->dd_nbuckets - 1));
}

/* Double the bucket array.  Failure is harmless (longer chains). */
static void dd_grow(struct tmem_store *s)
{
	uint32_t n = s->dd_nbuckets * 2, i;
	uint64_t *nb, *old = s->dd;

	if (n < s->dd_nbuckets)
		return;
	nb = st_alloc(s, n * sizeof(*nb));
	if (!nb)
		return;
	memset(nb, 0, n * sizeof(*nb));
	s->dd = nb;
	s->dd_nbuckets = n;
	for (i = 0; i < n / 2; i++) {
		uint64_t h = old[i];

		while (h) {
			struct blob *b = blob_at(s, h);
			uint64_t next = b->next;
			uint32_t slot = dd_slot(s, b->hash, b->dom);

			b->next = nb[slot];
			nb[slot] = h;
			h = next;
		}
	}
	st_free(s, old);
}

static void dd_insert(struct tmem_store *s, uint64_t h, struct blob *b)
{
	uint32_t slot = dd_slot(s, b->hash, b->dom);

	b->next = s->dd[slot];
	s->dd[slot] = h;
	s->nblobs++;
	if (s->nblobs > s->dd_nbuckets)
		dd_grow(s);
}

static void dd_remove(struct tmem_store *s, uint64_t h, struct blob *b)
{
	uint64_t *link = &s->dd[dd_slot(s, b->hash, b->dom)];

	while (*link != h) {
		assert(*link);
		link = &blob_at(s, *link)->next;
	}
	*link = b->next;
	s->nblobs--;
}

static bool blob_equals(struct tmem_store *s, const struct blob *b,
			const void *page)
{
	if (b->len == TMEM_PAGE_SIZE)
		return memcmp(b->data, page, TMEM_PAGE_SIZE) == 0;
	if (s->cfg.comp->decompress(s->comp_ctx, b->data, b->len, s->scratch,
				    TMEM_PAGE_SIZE))
		return false;
	return memcmp(s->scratch, page, TMEM_PAGE_SIZE) == 0;
}

/* A blob in @d's dedup scope with exactly @page's content, or 0.  Bounded:
 * at most DEDUP_MAX_PROBE chain entries and DEDUP_MAX_CMP byte compares,
 * so a crafted collision flood costs the guest dedup, not the host time. */
static uint64_t dd_lookup(struct tmem_store *s, const void *page, uint64_t hash,
			  const struct tmem_dom *d)
{
	uint64_t h = s->dd[dd_slot(s, hash, d)];
	unsigned probes = 0, cmps = 0;

	while (h && probes++ < DEDUP_MAX_PROBE) {
		struct blob *b = blob_at(s, h);

		if (b->hash == hash && (s->cross || b->dom == d)) {
			if (cmps++ >= DEDUP_MAX_CMP)
				break;
			if (blob_equals(s, b, page))
				return h;
		}
		h = b->next;
	}
	return 0;
}

/* ---- blobs ---- */

/* Store @page as a new blob referenced once by @d (step 3, miss). */
static int blob_new(struct tmem_store *s, struct tmem_dom *d, const void *page,
		    uint64_t hash, uint64_t *out)
{
	const void *payload = s->cbuf;
	size_t len;
	struct blob *b;
	uint64_t h;
	int rc;

	rc = s->cfg.comp->compress(s->comp_ctx, page, TMEM_PAGE_SIZE, s->cbuf,
				   s->cfg.raw_threshold_bytes, &len);
	if (rc) {
		/* -E2BIG: does not compress well enough; anything else is a
		 * compressor quirk, and raw is always correct. */
		payload = page;
		len = TMEM_PAGE_SIZE;
	}
	rc = zslab_alloc(s->zs, sizeof(*b) + len, &h);
	if (rc)
		return rc;
	b = blob_at(s, h);
	/* Without dedup the page was not hashed; the handle spreads the
	 * blobs over the index instead (which then only serves tmem_check). */
	b->hash = s->dedup ? hash : h * 0x9e3779b97f4a7c15ull;
	b->next = 0;
	b->dom = d;
	b->more = NULL;
	b->refs = 1;
	b->len = (uint16_t)len;
	b->nmore = 0;
	memcpy(b->data, payload, len);
	dd_insert(s, h, b);

	s->stored_bytes += len;
	s->slab_used_bytes += blob_req_bytes(b);
	dom_charge(s, d, blob_obj_bytes(s, b));
	dom_stored(d, (int64_t)len);
	*out = h;
	return 0;
}

/* One more page reference from @d (step 3, hit).  A domain's first
 * reference is charged the whole blob.  -ENOMEM only in cross mode. */
static int blob_ref(struct tmem_store *s, uint64_t h, struct tmem_dom *d)
{
	struct blob *b = blob_at(s, h);
	struct blob_share *more;
	uint16_t i;

	if (b->dom == d) {
		b->refs++;
		return 0;
	}
	for (i = 0; i < b->nmore; i++) {
		if (b->more[i].dom == d) {
			b->more[i].refs++;
			return 0;
		}
	}
	assert(s->cross);
	if (b->nmore == UINT16_MAX)
		return -ENOMEM;
	more = st_alloc(s, (b->nmore + 1u) * sizeof(*more));
	if (!more)
		return -ENOMEM;
	if (b->nmore)
		memcpy(more, b->more, b->nmore * sizeof(*more));
	more[b->nmore].dom = d;
	more[b->nmore].refs = 1;
	st_free(s, b->more);
	b->more = more;
	b->nmore++;
	dom_charge(s, d, blob_obj_bytes(s, b));
	dom_stored(d, (int64_t)b->len);
	return 0;
}

static void blob_destroy(struct tmem_store *s, uint64_t h, struct blob *b)
{
	size_t req = blob_req_bytes(b);

	dd_remove(s, h, b);
	s->stored_bytes -= b->len;
	s->slab_used_bytes -= req;
	st_free(s, b->more);
	zslab_free(s->zs, h, req);
}

/* Drop one page reference from @d; the domain's last one is credited, the
 * blob's last one frees it. */
static void blob_unref(struct tmem_store *s, uint64_t h, struct tmem_dom *d)
{
	struct blob *b = blob_at(s, h);
	int64_t obj = blob_obj_bytes(s, b);
	uint16_t i;

	if (b->dom == d) {
		assert(b->refs > 0);
		if (--b->refs)
			return;
		dom_charge(s, d, -obj);
		dom_stored(d, -(int64_t)b->len);
		if (!b->nmore) {
			blob_destroy(s, h, b);
			return;
		}
		/* Promote another domain.  Only in cross mode, where every
		 * salt is 0, so the blob's dedup bucket does not move. */
		b->nmore--;
		b->dom = b->more[b->nmore].dom;
		b->refs = b->more[b->nmore].refs;
	} else {
		for (i = 0; i < b->nmore && b->more[i].dom != d; i++)
			;
		assert(i < b->nmore && b->more[i].refs > 0);
		if (--b->more[i].refs)
			return;
		dom_charge(s, d, -obj);
		dom_stored(d, -(int64_t)b->len);
		b->more[i] = b->more[--b->nmore];
	}
	if (!b->nmore) {
		st_free(s, b->more);
		b->more = NULL;
	}
}

/* ---- radix tree: index -> page, per object ---- */

static unsigned rt_height_for(uint32_t index)
{
	unsigned h = 1;
	uint64_t span = RT_SLOTS;

	while (h < RT_MAX_HEIGHT && index >= span) {
		h++;
		span <<= RT_BITS;
	}
	return h;
}

static unsigned rt_pos(uint32_t index, unsigned level)
{
	return (index >> (level * RT_BITS)) & (RT_SLOTS - 1);
}

static struct tmem_page *rt_lookup(const struct tmem_obj *o, uint32_t index)
{
	struct rt_node *n = o->rt_root;
	unsigned h = o->rt_height;

	if (!n || rt_height_for(index) > h)
		return NULL;
	while (--h) {
		n = n->slot[rt_pos(index, h)];
		if (!n)
			return NULL;
	}
	return n->slot[rt_pos(index, 0)];
}

static struct rt_node *rt_node_new(struct tmem_store *s, struct tmem_dom *d)
{
	struct rt_node *n = meta_alloc(s, d, sizeof(*n));

	if (n)
		memset(n, 0, sizeof(*n));
	return n;
}

static void rt_node_free(struct tmem_store *s, struct tmem_dom *d,
			 struct rt_node *n)
{
	meta_free(s, d, n, sizeof(*n));
}

/* Remove the entry at @index if any, free nodes left empty on its path,
 * and drop root levels that only lead to slot 0.  Also the cleanup after
 * a failed rt_insert(), which may have left empty nodes or levels. */
static void rt_delete(struct tmem_store *s, struct tmem_dom *d,
		      struct tmem_obj *o, uint32_t index)
{
	struct rt_node *path[RT_MAX_HEIGHT];
	unsigned pos[RT_MAX_HEIGHT];
	unsigned depth = 0, level, i;
	struct rt_node *n = o->rt_root;

	if (!n)
		return;
	if (rt_height_for(index) <= o->rt_height) {
		for (level = o->rt_height; ; level--) {
			path[depth] = n;
			pos[depth] = rt_pos(index, level - 1);
			depth++;
			if (level == 1 || !n->slot[pos[depth - 1]])
				break;
			n = n->slot[pos[depth - 1]];
		}
		if (depth == o->rt_height && n->slot[pos[depth - 1]]) {
			n->slot[pos[depth - 1]] = NULL;
			n->count--;
		}
		for (i = depth; i-- > 0;) {
			if (path[i]->count)
				break;
			rt_node_free(s, d, path[i]);
			if (i) {
				path[i - 1]->slot[pos[i - 1]] = NULL;
				path[i - 1]->count--;
			} else {
				o->rt_root = NULL;
				o->rt_height = 0;
			}
		}
	}
	while (o->rt_root && o->rt_height > 1 && o->rt_root->count == 1 &&
	       o->rt_root->slot[0]) {
		struct rt_node *child = o->rt_root->slot[0];

		rt_node_free(s, d, o->rt_root);
		o->rt_root = child;
		o->rt_height--;
	}
}

/* Put @pg at @index, which must be free.  0 or -ENOMEM (tree unchanged). */
static int rt_insert(struct tmem_store *s, struct tmem_dom *d,
		     struct tmem_obj *o, uint32_t index, struct tmem_page *pg)
{
	unsigned need = rt_height_for(index), h;
	struct rt_node *n;

	if (!o->rt_root) {
		o->rt_root = rt_node_new(s, d);
		if (!o->rt_root)
			return -ENOMEM;
		o->rt_height = (uint8_t)need;
	}
	while (o->rt_height < need) {
		n = rt_node_new(s, d);
		if (!n)
			goto err;
		n->slot[0] = o->rt_root;
		n->count = 1;
		o->rt_root = n;
		o->rt_height++;
	}
	n = o->rt_root;
	for (h = o->rt_height; --h;) {
		void **sp = &n->slot[rt_pos(index, h)];

		if (!*sp) {
			*sp = rt_node_new(s, d);
			if (!*sp)
				goto err;
			n->count++;
		}
		n = *sp;
	}
	assert(!n->slot[rt_pos(index, 0)]);
	n->slot[rt_pos(index, 0)] = pg;
	n->count++;
	return 0;
err:
	rt_delete(s, d, o, index);
	return -ENOMEM;
}

typedef void (*rt_page_fn)(struct tmem_store *s, struct tmem_page *pg, void *arg);

/* Call @fn on every page under @n (height @h); free the nodes if @free. */
static void rt_walk(struct tmem_store *s, struct tmem_dom *d, struct rt_node *n,
		    unsigned h, bool free_nodes, rt_page_fn fn, void *arg)
{
	unsigned i;

	for (i = 0; i < RT_SLOTS; i++) {
		if (!n->slot[i])
			continue;
		if (h == 1)
			fn(s, n->slot[i], arg);
		else
			rt_walk(s, d, n->slot[i], h - 1, free_nodes, fn, arg);
	}
	if (free_nodes)
		rt_node_free(s, d, n);
}

/* ---- pages and objects ---- */

/* Release a page's content (its blob reference, LRU place and counts),
 * leaving it EMPTY in its tree. */
static void page_drop_content(struct tmem_store *s, struct tmem_page *pg)
{
	struct tmem_pool *pool = pg->obj->pool;
	uint32_t len = 0;

	if (pg->state == PG_EMPTY)
		return;
	if (pool_kind(pool) == KIND_EPH)
		lru_unlink(pool->dom->owner, pg);
	if (pg->state == PG_BLOB)
		len = blob_at(s, pg->blob)->len;
	page_count(s, pool, pg->state, len, -1);
	if (pg->state == PG_BLOB)
		blob_unref(s, pg->blob, pool->dom);
	pg->state = PG_EMPTY;
	pg->blob = 0;
}

static void obj_unlink_free(struct tmem_store *s, struct tmem_obj *o)
{
	struct tmem_pool *pool = o->pool;
	struct tmem_obj **link = &pool->buckets[o->hash & (pool->nbuckets - 1)];

	assert(!o->rt_root && !o->npages);
	while (*link != o)
		link = &(*link)->hnext;
	*link = o->hnext;
	pool->nobjs--;
	s->nobjs--;
	meta_free(s, pool->dom, o, sizeof(*o));
}

/* Remove one page entirely: content, tree slot, descriptor, and its object
 * if that was the last page. */
static void page_free(struct tmem_store *s, struct tmem_page *pg)
{
	struct tmem_obj *o = pg->obj;
	struct tmem_dom *d = o->pool->dom;

	page_drop_content(s, pg);
	rt_delete(s, d, o, pg->index);
	meta_free(s, d, pg, sizeof(*pg));
	if (--o->npages == 0)
		obj_unlink_free(s, o);
}

static void page_free_bulk_cb(struct tmem_store *s, struct tmem_page *pg,
			      void *arg)
{
	(void)arg;
	page_drop_content(s, pg);
	pg->obj->npages--;
	meta_free(s, pg->obj->pool->dom, pg, sizeof(*pg));
}

/* Free an object and all its pages.  Returns pages removed. */
static uint32_t obj_destroy(struct tmem_store *s, struct tmem_obj *o)
{
	uint32_t n = o->npages;

	if (o->rt_root)
		rt_walk(s, o->pool->dom, o->rt_root, o->rt_height, true,
			page_free_bulk_cb, NULL);
	o->rt_root = NULL;
	o->rt_height = 0;
	assert(o->npages == 0);
	obj_unlink_free(s, o);
	return n;
}

static struct tmem_obj *obj_find(const struct tmem_pool *pool,
				 const struct tmem_oid *oid, uint64_t hash)
{
	struct tmem_obj *o = pool->buckets[hash & (pool->nbuckets - 1)];

	for (; o; o = o->hnext) {
		if (o->hash == hash && oid_eq(&o->oid, oid))
			return o;
	}
	return NULL;
}

/* Double a pool's object hash.  Failure is harmless (longer chains). */
static void obj_hash_grow(struct tmem_store *s, struct tmem_pool *pool)
{
	uint32_t n = pool->nbuckets * 2, i;
	struct tmem_obj **nb;

	if (n < pool->nbuckets)
		return;
	nb = st_alloc(s, n * sizeof(*nb));
	if (!nb)
		return;
	memset(nb, 0, n * sizeof(*nb));
	for (i = 0; i < pool->nbuckets; i++) {
		struct tmem_obj *o = pool->buckets[i], *next;

		for (; o; o = next) {
			next = o->hnext;
			o->hnext = nb[o->hash & (n - 1)];
			nb[o->hash & (n - 1)] = o;
		}
	}
	st_free(s, pool->buckets);
	pool->buckets = nb;
	pool->nbuckets = n;
}

static int obj_new(struct tmem_store *s, struct tmem_pool *pool,
		   const struct tmem_oid *oid, uint64_t hash,
		   struct tmem_obj **out)
{
	struct tmem_obj *o = meta_alloc(s, pool->dom, sizeof(*o));
	struct tmem_obj **b;

	if (!o)
		return -ENOMEM;
	memset(o, 0, sizeof(*o));
	o->oid = *oid;
	o->hash = hash;
	o->pool = pool;
	b = &pool->buckets[hash & (pool->nbuckets - 1)];
	o->hnext = *b;
	*b = o;
	pool->nobjs++;
	s->nobjs++;
	if (pool->nobjs > pool->nbuckets)
		obj_hash_grow(s, pool);
	*out = o;
	return 0;
}

/* ---- eviction ---- */

/* The client furthest over its weight (most ephemeral pages per unit of
 * weight; ties: the earliest created), and how many pages it can lose
 * before the runner-up would be further over, so that a bulk shrink
 * rescans the clients once per change of victim, not once per page. */
static struct tmem_client *evict_pick(struct tmem_store *s, uint64_t *budget)
{
	struct tmem_client *c, *best = NULL, *second = NULL;

	for (c = s->clients; c; c = c->next) {
		uint64_t e = c->cnt[KIND_EPH].pages;

		if (!e)
			continue;
		/* e/w > best_e/best_w, without division; pages < 2^40 and
		 * weights <= 2^20 keep the products in 64 bits. */
		if (!best || e * best->weight > best->cnt[KIND_EPH].pages * c->weight) {
			second = best;
			best = c;
		} else if (!second ||
			   e * second->weight > second->cnt[KIND_EPH].pages * c->weight) {
			second = c;
		}
	}
	if (best && budget) {
		uint64_t e = best->cnt[KIND_EPH].pages, keep = 0;

		if (second)
			keep = second->cnt[KIND_EPH].pages * best->weight /
			       second->weight;
		*budget = e > keep ? e - keep : 1;
	}
	return best;
}

static void evict_page(struct tmem_store *s, struct tmem_client *victim)
{
	assert(victim->lru_head);
	page_free(s, victim->lru_head);
	victim->ops.evictions++;
	s->ops.evictions++;
}

static int evict_one(struct tmem_store *s)
{
	struct tmem_client *victim = evict_pick(s, NULL);

	if (!victim)
		return -ENOENT;
	evict_page(s, victim);
	return 0;
}

/* Step 4: have the hook accept @c's net growth, evicting on refusal. */
static int charge_commit(struct tmem_store *s, struct tmem_client *c)
{
	unsigned evicted = 0;

	while (c->pending > 0) {
		if (!s->cfg.charge ||
		    s->cfg.charge(s->cfg.charge_opaque, c->id, c->pending) == 0) {
			c->pending = 0;
			return 0;
		}
		if (evicted++ >= TMEM_EVICT_MAX_PER_PUT || evict_one(s))
			return -ENOSPC;
		/* Others' credits first, so the retry sees the room made. */
		charges_flush_except(s, c);
	}
	return 0;
}

/* ---- clients and pools ---- */

static unsigned client_bucket(uint32_t id)
{
	return (unsigned)((id * 0x9e3779b1u) >> 26) & (CLIENT_BUCKETS - 1);
}

static struct tmem_client *client_find(const struct tmem_store *s, uint32_t id)
{
	struct tmem_client *c = s->cbuckets[client_bucket(id)];

	while (c && c->id != id)
		c = c->hnext;
	return c;
}

static int params_check(const struct tmem_client_params *p, uint32_t *weight)
{
	*weight = TMEM_WEIGHT_DEFAULT;
	if (!p)
		return 0;
	if (p->weight > TMEM_WEIGHT_MAX)
		return -EINVAL;
	if (p->weight)
		*weight = p->weight;
	return 0;
}

static bool uuid_is_zero(const struct tmem_uuid *u)
{
	static const struct tmem_uuid zero;

	return memcmp(u, &zero, sizeof(zero)) == 0;
}

static struct tmem_pool *shared_find(const struct tmem_store *s,
				     const struct tmem_uuid *uuid)
{
	struct tmem_pool *p;

	for (p = s->shared; p; p = p->shared_next) {
		if (memcmp(&p->uuid, uuid, sizeof(*uuid)) == 0)
			return p;
	}
	return NULL;
}

static int pool_create(struct tmem_store *s, struct tmem_client *c,
		       uint32_t flags, const struct tmem_uuid *uuid,
		       struct tmem_pool **out)
{
	struct tmem_pool *p = st_alloc(s, sizeof(*p));

	if (!p)
		return -ENOMEM;
	memset(p, 0, sizeof(*p));
	p->flags = flags;
	p->nbuckets = OBJ_BUCKETS_MIN;
	p->buckets = st_alloc(s, p->nbuckets * sizeof(*p->buckets));
	if (!p->buckets)
		goto err_pool;
	memset(p->buckets, 0, p->nbuckets * sizeof(*p->buckets));
	if (flags & TMEM_POOL_SHARED) {
		p->sharers = st_alloc(s, sizeof(*p->sharers));
		if (!p->sharers)
			goto err_buckets;
		p->sharers[0] = c;
		p->nsharers = 1;
		p->uuid = *uuid;
		dom_init(s, &p->own_dom, c);
		p->dom = &p->own_dom;
		p->shared_next = s->shared;
		if (s->shared)
			s->shared->shared_prev = p;
		s->shared = p;
	} else {
		p->dom = &c->dom;
	}
	s->npools++;
	*out = p;
	return 0;
err_buckets:
	st_free(s, p->buckets);
err_pool:
	st_free(s, p);
	return -ENOMEM;
}

static int sharer_add(struct tmem_store *s, struct tmem_pool *p,
		      struct tmem_client *c)
{
	struct tmem_client **v = st_alloc(s, (p->nsharers + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	memcpy(v, p->sharers, p->nsharers * sizeof(*v));
	v[p->nsharers] = c;
	st_free(s, p->sharers);
	p->sharers = v;
	p->nsharers++;
	return 0;
}

static void pool_free(struct tmem_store *s, struct tmem_pool *p)
{
	uint32_t i;

	for (i = 0; i < p->nbuckets; i++) {
		while (p->buckets[i])
			obj_destroy(s, p->buckets[i]);
	}
	assert(p->nobjs == 0 && p->cnt.pages == 0);
	if (p->flags & TMEM_POOL_SHARED) {
		assert(p->own_dom.charged_bytes == 0);
		if (p->shared_prev)
			p->shared_prev->shared_next = p->shared_next;
		else
			s->shared = p->shared_next;
		if (p->shared_next)
			p->shared_next->shared_prev = p->shared_prev;
		st_free(s, p->sharers);
	}
	st_free(s, p->buckets);
	st_free(s, p);
	s->npools--;
}

static void lru_move_cb(struct tmem_store *s, struct tmem_page *pg, void *arg)
{
	struct tmem_client **from_to = arg;

	(void)s;
	if (pg->state == PG_EMPTY)
		return;
	lru_unlink(from_to[0], pg);
	lru_push_mru(from_to[1], pg);
}

/* A shared pool's owner left: its charge, counts and LRU pages go to @to.
 * The hook sees -X for the old owner and +X for the new one, and the new
 * owner cannot refuse: dropping the pages instead would break persistence. */
static void pool_transfer(struct tmem_store *s, struct tmem_pool *p,
			  struct tmem_client *to)
{
	struct tmem_dom *d = p->dom;
	struct tmem_client *from = d->owner;
	int64_t bytes = (int64_t)d->charged_bytes;
	int kind = pool_kind(p);
	uint32_t i;

	from->charged_bytes -= (uint64_t)bytes;
	pending_add(s, from, -bytes);
	to->charged_bytes += (uint64_t)bytes;
	pending_add(s, to, bytes);
	from->stored_bytes -= d->stored_bytes;
	to->stored_bytes += d->stored_bytes;
	counts_add(&from->cnt[kind], &p->cnt, -1);
	counts_add(&to->cnt[kind], &p->cnt, +1);
	if (kind == KIND_EPH) {
		struct tmem_client *from_to[2] = { from, to };

		for (i = 0; i < p->nbuckets; i++) {
			struct tmem_obj *o;

			for (o = p->buckets[i]; o; o = o->hnext) {
				if (o->rt_root)
					rt_walk(s, d, o->rt_root, o->rt_height,
						false, lru_move_cb, from_to);
			}
		}
	}
	d->owner = to;
}

/* Close @c's pool id: leave a shared pool others still use, else free it. */
static void pool_close(struct tmem_store *s, struct tmem_client *c,
		       uint32_t pool_id)
{
	struct tmem_pool *p = c->pools[pool_id];
	uint32_t i;

	c->pools[pool_id] = NULL;
	if ((p->flags & TMEM_POOL_SHARED) && p->nsharers > 1) {
		for (i = 0; p->sharers[i] != c; i++)
			;
		memmove(&p->sharers[i], &p->sharers[i + 1],
			(p->nsharers - i - 1) * sizeof(*p->sharers));
		p->nsharers--;
		if (p->dom->owner == c)
			pool_transfer(s, p, p->sharers[0]);
		return;
	}
	pool_free(s, p);
}

static int pool_lookup(const struct tmem_client *c, uint32_t pool_id,
		       struct tmem_pool **out)
{
	if (pool_id >= TMEM_MAX_POOLS_PER_CLIENT || !c->pools[pool_id])
		return -EBADF;
	*out = c->pools[pool_id];
	return 0;
}

/* ---- public: store ---- */

static uint64_t seed_new(void)
{
	uint64_t seed;
	struct timespec ts;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == sizeof(seed))
		return seed;
	/* No entropy yet (early boot): still unpredictable enough for
	 * bucket placement, which is all the seed protects. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
	       (uint64_t)(uintptr_t)&seed;
	return XXH3_64bits(&seed, sizeof(seed));
}

int tmem_store_new(const struct tmem_store_config *cfg, struct tmem_store **out)
{
	struct zslab_params zp = {
		.class_step_bytes = 64,
		.max_obj_bytes = BLOB_MAX_BYTES,
		.chunk_bytes = 64 << 10,
		.alloc = zs_alloc_cb,
		.free = zs_free_cb,
	};
	struct tmem_store *s;
	int rc;

	if (!out)
		return -EINVAL;
	if (cfg && (cfg->raw_threshold_bytes > TMEM_PAGE_SIZE ||
		    (cfg->flags & ~(uint32_t)(TMEM_STORE_CROSS_CLIENT_DEDUP |
					      TMEM_STORE_NO_DEDUP))))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (cfg)
		s->cfg = *cfg;
	if (!s->cfg.comp)
		s->cfg.comp = &pagecomp_lz4;
	if (!s->cfg.raw_threshold_bytes)
		s->cfg.raw_threshold_bytes = RAW_THRESHOLD_DEFAULT;
	s->cross = s->cfg.flags & TMEM_STORE_CROSS_CLIENT_DEDUP;
	s->dedup = !(s->cfg.flags & TMEM_STORE_NO_DEDUP);
	s->seed = seed_new();

	rc = -pthread_mutex_init(&s->lock, NULL);
	if (rc)
		goto err_store;
	rc = s->cfg.comp->ctx_new(&s->comp_ctx);
	if (rc)
		goto err_lock;
	rc = -ENOMEM;
	s->cbuf = st_alloc(s, TMEM_PAGE_SIZE);
	s->scratch = st_alloc(s, TMEM_PAGE_SIZE);
	s->dd_nbuckets = DD_BUCKETS_MIN;
	s->dd = st_alloc(s, s->dd_nbuckets * sizeof(*s->dd));
	if (!s->cbuf || !s->scratch || !s->dd)
		goto err_bufs;
	memset(s->dd, 0, s->dd_nbuckets * sizeof(*s->dd));
	zp.opaque = s;
	rc = zslab_new(&zp, &s->zs);
	if (rc)
		goto err_bufs;
	*out = s;
	return 0;

err_bufs:
	st_free(s, s->dd);
	st_free(s, s->scratch);
	st_free(s, s->cbuf);
	s->cfg.comp->ctx_free(s->comp_ctx);
err_lock:
	pthread_mutex_destroy(&s->lock);
err_store:
	free(s);
	return rc;
}

static void client_unlink_free(struct tmem_store *s, struct tmem_client *c)
{
	struct tmem_client **link = &s->cbuckets[client_bucket(c->id)];

	while (*link != c)
		link = &(*link)->hnext;
	*link = c->hnext;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		s->clients_tail = c->prev;
	s->nclients--;
	st_free(s, c);
}

static void client_close_all(struct tmem_store *s, struct tmem_client *c)
{
	uint32_t i;

	for (i = 0; i < TMEM_MAX_POOLS_PER_CLIENT; i++) {
		if (c->pools[i])
			pool_close(s, c, i);
	}
}

void tmem_store_free(struct tmem_store *s)
{
	struct tmem_client *c;

	if (!s)
		return;
	s->cfg.charge = NULL;	/* teardown is not reported */
	for (c = s->clients; c; c = c->next)
		client_close_all(s, c);
	charges_flush(s);
	while (s->clients)
		client_unlink_free(s, s->clients);
	zslab_destroy(s->zs);
	st_free(s, s->dd);
	st_free(s, s->scratch);
	st_free(s, s->cbuf);
	s->cfg.comp->ctx_free(s->comp_ctx);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- public: clients ---- */

int tmem_client_new(struct tmem_store *s, uint32_t client_id, const char *name,
		    const struct tmem_client_params *p)
{
	struct tmem_client *c;
	uint32_t weight;
	unsigned b;
	int rc;

	if (!s)
		return -EINVAL;
	rc = params_check(p, &weight);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	if (client_find(s, client_id)) {
		rc = -EEXIST;
		goto out;
	}
	c = st_alloc(s, sizeof(*c));
	if (!c) {
		rc = -ENOMEM;
		goto out;
	}
	memset(c, 0, sizeof(*c));
	c->id = client_id;
	if (name) {
		strncpy(c->name, name, sizeof(c->name) - 1);
		c->name[sizeof(c->name) - 1] = '\0';
	}
	c->weight = weight;
	c->max_persistent_pages = p ? p->max_persistent_pages : 0;
	dom_init(s, &c->dom, c);
	b = client_bucket(client_id);
	c->hnext = s->cbuckets[b];
	s->cbuckets[b] = c;
	c->prev = s->clients_tail;
	if (s->clients_tail)
		s->clients_tail->next = c;
	else
		s->clients = c;
	s->clients_tail = c;
	s->nclients++;
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_client_set_params(struct tmem_store *s, uint32_t client_id,
			   const struct tmem_client_params *p)
{
	struct tmem_client *c;
	uint32_t weight;
	int rc;

	if (!s || !p)
		return -EINVAL;
	rc = params_check(p, &weight);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	if (c) {
		c->weight = weight;
		c->max_persistent_pages = p->max_persistent_pages;
	} else {
		rc = -ESRCH;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_client_destroy(struct tmem_store *s, uint32_t client_id)
{
	struct tmem_client *c;
	int rc = 0;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	if (!c) {
		rc = -ESRCH;
		goto out;
	}
	client_close_all(s, c);
	charges_flush(s);	/* c's final credits reach the hook */
	assert(c->charged_bytes == 0 && c->cnt[0].pages == 0 &&
	       c->cnt[1].pages == 0 && !c->lru_head);
	client_unlink_free(s, c);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ---- public: pools ---- */

static int pool_new_locked(struct tmem_store *s, uint32_t client_id,
			   uint32_t flags, const struct tmem_uuid *uuid,
			   uint32_t *pool_id)
{
	struct tmem_client *c = client_find(s, client_id);
	struct tmem_pool *p = NULL;
	uint32_t i, slot = TMEM_MAX_POOLS_PER_CLIENT;
	int rc;

	if (!c)
		return -ESRCH;
	if (flags & TMEM_POOL_SHARED) {
		if (!uuid || uuid_is_zero(uuid))
			return -EINVAL;
		p = shared_find(s, uuid);
		if (p && (p->flags != flags))
			return -EINVAL;
	}
	for (i = 0; i < TMEM_MAX_POOLS_PER_CLIENT; i++) {
		if (p && c->pools[i] == p) {
			*pool_id = i;	/* already open */
			return 0;
		}
		if (!c->pools[i] && slot == TMEM_MAX_POOLS_PER_CLIENT)
			slot = i;
	}
	if (slot == TMEM_MAX_POOLS_PER_CLIENT)
		return -EMFILE;
	if (p)
		rc = sharer_add(s, p, c);
	else
		rc = pool_create(s, c, flags, uuid, &p);
	if (rc)
		return rc;
	c->pools[slot] = p;
	*pool_id = slot;
	return 0;
}

int tmem_pool_new(struct tmem_store *s, uint32_t client_id, uint32_t flags,
		  const struct tmem_uuid *uuid, uint32_t *pool_id)
{
	int rc;

	if (!s || !pool_id ||
	    (flags & ~(uint32_t)(TMEM_POOL_PERSISTENT | TMEM_POOL_SHARED)))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	rc = pool_new_locked(s, client_id, flags, uuid, pool_id);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_pool_destroy(struct tmem_store *s, uint32_t client_id,
		      uint32_t pool_id)
{
	struct tmem_client *c;
	struct tmem_pool *p;
	int rc;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	rc = c ? pool_lookup(c, pool_id, &p) : -ESRCH;
	if (!rc) {
		pool_close(s, c, pool_id);
		charges_flush(s);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ---- public: pages ---- */

/* A put of what the page already holds (re-swapping an unchanged page is
 * common) costs a compare, not a release and a recompression. */
static bool page_unchanged(struct tmem_store *s, const struct tmem_page *pg,
			   uint8_t state, uint64_t hash, const void *page)
{
	const struct blob *b;

	if (pg->state != state)
		return false;
	if (state == PG_ZERO)
		return true;
	if (!s->dedup)
		return false;	/* not hashed: not worth a full compare */
	b = blob_at(s, pg->blob);
	return b->hash == hash && blob_equals(s, b, page);
}

static int put_locked(struct tmem_store *s, struct tmem_client *c,
		      uint32_t pool_id, const struct tmem_oid *oid,
		      uint32_t index, const void *page)
{
	struct tmem_client *owner;
	struct tmem_pool *pool;
	struct tmem_page *pg;
	struct tmem_obj *o;
	struct tmem_dom *d;
	uint64_t hash = 0, oh, h = 0;
	uint8_t state;
	int rc, kind;

	/* 1. */
	rc = pool_lookup(c, pool_id, &pool);
	if (rc)
		return rc;
	d = pool->dom;
	owner = d->owner;
	kind = pool_kind(pool);
	state = page_is_zero(page) ? PG_ZERO : PG_BLOB;
	if (state == PG_BLOB && s->dedup)
		hash = page_hash(s, page);

	/* 2. */
	oh = oid_hash(s, oid);
	o = obj_find(pool, oid, oh);
	pg = o ? rt_lookup(o, index) : NULL;
	if (pg && page_unchanged(s, pg, state, hash, page)) {
		if (kind == KIND_EPH) {
			lru_unlink(owner, pg);
			lru_push_mru(owner, pg);
		}
		return 0;
	}
	if (pg) {
		page_drop_content(s, pg);
	} else {
		if (kind == KIND_PERS && owner->max_persistent_pages &&
		    owner->cnt[KIND_PERS].pages >= owner->max_persistent_pages)
			return -ENOSPC;
		if (!o) {
			rc = obj_new(s, pool, oid, oh, &o);
			if (rc)
				return rc;
		}
		pg = meta_alloc(s, d, sizeof(*pg));
		if (!pg) {
			rc = -ENOMEM;
			goto err_obj;
		}
		memset(pg, 0, sizeof(*pg));
		pg->obj = o;
		pg->index = index;
		pg->state = PG_EMPTY;
		rc = rt_insert(s, d, o, index, pg);
		if (rc) {
			meta_free(s, d, pg, sizeof(*pg));
			goto err_obj;
		}
		o->npages++;
	}

	/* 3. */
	if (state == PG_BLOB) {
		h = s->dedup ? dd_lookup(s, page, hash, d) : 0;
		rc = h ? blob_ref(s, h, d) : blob_new(s, d, page, hash, &h);
		if (rc)
			goto err_page;
	}

	/* 4. */
	rc = charge_commit(s, owner);
	if (rc) {
		if (h)
			blob_unref(s, h, d);
		goto err_page;
	}

	/* 5. */
	pg->state = state;
	pg->blob = h;
	page_count(s, pool, state, h ? blob_at(s, h)->len : 0, +1);
	if (kind == KIND_EPH)
		lru_push_mru(owner, pg);
	return 0;

err_page:
	page_free(s, pg);	/* EMPTY: frees slot, record, maybe object */
	return rc;
err_obj:
	if (!o->npages)
		obj_unlink_free(s, o);
	return rc;
}

int tmem_put(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
	     const struct tmem_oid *oid, uint32_t index,
	     const void *page, size_t len)
{
	uint64_t t0 = lat_start(LAT_PUT);
	struct tmem_client *c;
	int rc;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	if (!c) {
		rc = -ESRCH;
		goto out;
	}
	c->ops.puts++;
	s->ops.puts++;
	if (!oid || !page || len != TMEM_PAGE_SIZE)
		rc = -EINVAL;
	else
		rc = put_locked(s, c, pool_id, oid, index, page);
	if (rc == -ENOSPC) {
		c->ops.refused++;
		s->ops.refused++;
	}
	charges_flush(s);
	lat_end(&s->put_lat, t0);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* The page at a handle, or -EBADF / -ENOENT. */
static int page_find(struct tmem_store *s, struct tmem_client *c,
		     uint32_t pool_id, const struct tmem_oid *oid,
		     uint32_t index, struct tmem_page **out)
{
	struct tmem_pool *pool;
	struct tmem_obj *o;
	struct tmem_page *pg;
	int rc;

	rc = pool_lookup(c, pool_id, &pool);
	if (rc)
		return rc;
	o = obj_find(pool, oid, oid_hash(s, oid));
	pg = o ? rt_lookup(o, index) : NULL;
	if (!pg)
		return -ENOENT;
	assert(pg->state != PG_EMPTY);
	*out = pg;
	return 0;
}

static int get_locked(struct tmem_store *s, struct tmem_client *c,
		      uint32_t pool_id, const struct tmem_oid *oid,
		      uint32_t index, void *page)
{
	struct tmem_page *pg;
	struct tmem_pool *pool;
	int rc;

	rc = page_find(s, c, pool_id, oid, index, &pg);
	if (rc == -ENOENT) {
		c->ops.misses++;
		s->ops.misses++;
	}
	if (rc)
		return rc;
	if (pg->state == PG_ZERO) {
		memset(page, 0, TMEM_PAGE_SIZE);
	} else {
		const struct blob *b = blob_at(s, pg->blob);

		if (b->len == TMEM_PAGE_SIZE)
			memcpy(page, b->data, TMEM_PAGE_SIZE);
		else if (s->cfg.comp->decompress(s->comp_ctx, b->data, b->len,
						 page, TMEM_PAGE_SIZE))
			return -EIO;	/* corrupt blob: a store bug */
	}
	c->ops.hits++;
	s->ops.hits++;
	pool = pg->obj->pool;
	if (pool_kind(pool) == KIND_EPH) {
		if (!(pool->flags & TMEM_POOL_SHARED)) {
			page_free(s, pg);	/* exclusive get */
		} else {
			lru_unlink(pool->dom->owner, pg);
			lru_push_mru(pool->dom->owner, pg);
		}
	}
	return 0;
}

int tmem_get(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
	     const struct tmem_oid *oid, uint32_t index,
	     void *page, size_t len)
{
	uint64_t t0 = lat_start(LAT_GET);
	struct tmem_client *c;
	int rc;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	if (!c) {
		rc = -ESRCH;
		goto out;
	}
	c->ops.gets++;
	s->ops.gets++;
	if (!oid || !page || len != TMEM_PAGE_SIZE)
		rc = -EINVAL;
	else
		rc = get_locked(s, c, pool_id, oid, index, page);
	charges_flush(s);
	lat_end(&s->get_lat, t0);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_flush_page(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
		    const struct tmem_oid *oid, uint32_t index)
{
	struct tmem_client *c;
	struct tmem_page *pg;
	int rc;

	if (!s || !oid)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	rc = c ? page_find(s, c, pool_id, oid, index, &pg) : -ESRCH;
	if (!rc) {
		page_free(s, pg);
		c->ops.flushes++;
		s->ops.flushes++;
		charges_flush(s);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_flush_object(struct tmem_store *s, uint32_t client_id,
		      uint32_t pool_id, const struct tmem_oid *oid)
{
	struct tmem_client *c;
	struct tmem_pool *pool;
	struct tmem_obj *o = NULL;
	uint32_t n;
	int rc;

	if (!s || !oid)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	rc = c ? pool_lookup(c, pool_id, &pool) : -ESRCH;
	if (!rc) {
		o = obj_find(pool, oid, oid_hash(s, oid));
		if (!o)
			rc = -ENOENT;
	}
	if (!rc) {
		n = obj_destroy(s, o);
		c->ops.flushes += n;
		s->ops.flushes += n;
		charges_flush(s);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_shrink(struct tmem_store *s, uint64_t bytes, uint64_t *freed_bytes)
{
	uint64_t before, budget;
	struct tmem_client *victim;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	before = s->charged_bytes;
	while (before - s->charged_bytes < bytes) {
		victim = evict_pick(s, &budget);
		if (!victim)
			break;
		while (budget-- && victim->lru_head &&
		       before - s->charged_bytes < bytes)
			evict_page(s, victim);
	}
	if (freed_bytes)
		*freed_bytes = before - s->charged_bytes;
	charges_flush(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- public: stats ---- */

static void stats_fill(struct tmem_stats *st, const struct tmem_counts cnt[2],
		       const struct tmem_opcounts *ops, uint64_t stored,
		       uint64_t charged)
{
	uint64_t nonzero, comp = cnt[0].comp_bytes + cnt[1].comp_bytes;

	memset(st, 0, sizeof(*st));
	st->ephemeral_pages = cnt[KIND_EPH].pages;
	st->persistent_pages = cnt[KIND_PERS].pages;
	st->zero_pages = cnt[0].zero + cnt[1].zero;
	st->raw_pages = cnt[0].raw + cnt[1].raw;
	st->logical_bytes = (st->ephemeral_pages + st->persistent_pages) *
			    TMEM_PAGE_SIZE;
	st->compressed_bytes = comp;
	st->stored_bytes = stored;
	st->charged_bytes = charged;
	st->puts = ops->puts;
	st->gets = ops->gets;
	st->hits = ops->hits;
	st->misses = ops->misses;
	st->flushes = ops->flushes;
	st->evictions = ops->evictions;
	st->refused_puts = ops->refused;
	nonzero = st->ephemeral_pages + st->persistent_pages - st->zero_pages;
	if (comp)
		st->compression_ratio = (double)(nonzero * TMEM_PAGE_SIZE) / (double)comp;
	if (stored)
		st->dedup_ratio = (double)comp / (double)stored;
}

int tmem_client_stats(struct tmem_store *s, uint32_t client_id,
		      struct tmem_stats *out)
{
	struct tmem_client *c;
	int rc = 0;

	if (!s || !out)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = client_find(s, client_id);
	if (c)
		stats_fill(out, c->cnt, &c->ops, c->stored_bytes, c->charged_bytes);
	else
		rc = -ESRCH;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tmem_store_stats(struct tmem_store *s, struct tmem_store_stats *out)
{
	struct zslab_stats zst;

	if (!s || !out)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	memset(out, 0, sizeof(*out));
	out->compressor = s->cfg.comp->name;
	stats_fill(&out->total, s->cnt, &s->ops, s->stored_bytes,
		   s->charged_bytes);
	zslab_get_stats(s->zs, &zst);
	out->clients = s->nclients;
	out->pools = s->npools;
	out->objects = s->nobjs;
	out->blobs = s->nblobs;
	out->meta_bytes = s->meta_bytes;
	out->slabs = zst.slabs;
	out->slab_bytes = zst.slab_bytes;
	out->slab_used_bytes = s->slab_used_bytes;
	if (zst.slab_bytes)
		out->slab_frag_pct = 100.0 *
			(double)(zst.slab_bytes - s->slab_used_bytes) /
			(double)zst.slab_bytes;
	out->put_timed = s->put_lat.n;
	out->put_p50_ns = lathist_percentile(&s->put_lat, 50);
	out->put_p99_ns = lathist_percentile(&s->put_lat, 99);
	out->get_timed = s->get_lat.n;
	out->get_p50_ns = lathist_percentile(&s->get_lat, 50);
	out->get_p99_ns = lathist_percentile(&s->get_lat, 99);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- public: test hooks ---- */

int tmem_debug_fail_alloc(struct tmem_store *s, uint64_t nth)
{
	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	s->dbg_fail_at = nth ? s->dbg_allocs + nth : 0;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int tmem_debug_get(struct tmem_store *s, struct tmem_debug *out)
{
	if (!s || !out)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	out->allocs = s->dbg_allocs;
	out->live_allocs = s->dbg_live;
	out->injected = s->dbg_injected;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* What tmem_check() recounts while walking one pool. */
struct chk {
	struct tmem_counts cnt;		/* pages of the pool */
	uint64_t blob_pages;		/* PG_BLOB pages (refs expected) */
	uint64_t lru_pages;		/* its ephemeral pages */
	uint32_t obj_pages;		/* pages of the current object */
	int bad;			/* an inconsistency was seen */
};

static void chk_node(struct tmem_store *s, struct tmem_dom *d,
		     const struct tmem_obj *o, const struct rt_node *n,
		     unsigned h, uint32_t base, struct chk *k)
{
	unsigned i, used = 0;

	d->chk_bytes += sizeof(*n);
	for (i = 0; i < RT_SLOTS; i++) {
		uint32_t index = base | (i << ((h - 1) * RT_BITS));

		if (!n->slot[i])
			continue;
		used++;
		if (h > 1) {
			chk_node(s, d, o, n->slot[i], h - 1, index, k);
		} else {
			const struct tmem_page *pg = n->slot[i];
			uint32_t len = 0;

			d->chk_bytes += sizeof(*pg);
			k->obj_pages++;
			if (pg->obj != o || pg->index != index ||
			    (pg->state != PG_ZERO && pg->state != PG_BLOB) ||
			    (pg->state == PG_ZERO) != (pg->blob == 0))
				k->bad = 1;
			if (pg->state == PG_BLOB) {
				len = blob_at(s, pg->blob)->len;
				k->blob_pages++;
			}
			k->cnt.pages++;
			k->cnt.zero += pg->state == PG_ZERO;
			k->cnt.raw += len == TMEM_PAGE_SIZE;
			k->cnt.comp_bytes += len;
		}
	}
	if (used != n->count || !used)
		k->bad = 1;
}

static bool counts_eq(const struct tmem_counts *a, const struct tmem_counts *b)
{
	return a->pages == b->pages && a->zero == b->zero && a->raw == b->raw &&
	       a->comp_bytes == b->comp_bytes;
}

static int check_locked(struct tmem_store *s)
{
	struct tmem_counts ccnt[2], scnt[2];
	uint64_t blob_pages = 0, blob_refs = 0, stored = 0, used = 0, nblobs = 0;
	uint64_t charged = 0, nobjs = 0, npools = 0;
	struct tmem_client *c;
	struct tmem_pool *p;
	uint32_t i;

	if (zslab_check(s->zs) || s->pending)
		return -EUCLEAN;
	memset(scnt, 0, sizeof(scnt));
	for (c = s->clients; c; c = c->next)
		c->dom.chk_bytes = 0;
	for (p = s->shared; p; p = p->shared_next)
		p->own_dom.chk_bytes = 0;

	/* Blobs: the dedup index holds every one of them. */
	for (i = 0; i < s->dd_nbuckets; i++) {
		uint64_t h;

		for (h = s->dd[i]; h; h = blob_at(s, h)->next) {
			struct blob *b = blob_at(s, h);
			uint64_t obj = (uint64_t)blob_obj_bytes(s, b);
			uint16_t j;

			if (dd_slot(s, b->hash, b->dom) != i || !b->refs ||
			    (b->len > s->cfg.raw_threshold_bytes &&
			     b->len != TMEM_PAGE_SIZE) || ++nblobs > s->nblobs)
				return -EUCLEAN;
			blob_refs += b->refs;
			b->dom->chk_bytes += obj;
			for (j = 0; j < b->nmore; j++) {
				if (!b->more[j].refs || b->more[j].dom == b->dom)
					return -EUCLEAN;
				blob_refs += b->more[j].refs;
				b->more[j].dom->chk_bytes += obj;
			}
			stored += b->len;
			used += blob_req_bytes(b);
		}
	}
	if (nblobs != s->nblobs || stored != s->stored_bytes ||
	    used != s->slab_used_bytes)
		return -EUCLEAN;

	/* Pools, visited once each, through their owner. */
	for (c = s->clients; c; c = c->next) {
		const struct tmem_page *pg, *prev = NULL;
		uint64_t lru = 0;

		memset(ccnt, 0, sizeof(ccnt));
		if (c->pending || c->pending_linked)
			return -EUCLEAN;
		for (i = 0; i < TMEM_MAX_POOLS_PER_CLIENT; i++) {
			struct chk k = { 0 };
			uint32_t b;

			p = c->pools[i];
			if (!p || p->dom->owner != c)
				continue;
			if ((p->flags & TMEM_POOL_SHARED) &&
			    (!p->nsharers || p->sharers[0] != c))
				return -EUCLEAN;
			npools++;
			for (b = 0; b < p->nbuckets; b++) {
				const struct tmem_obj *o;

				for (o = p->buckets[b]; o; o = o->hnext) {
					k.obj_pages = 0;
					p->dom->chk_bytes += sizeof(*o);
					if (o->pool != p || !o->rt_root ||
					    (o->hash & (p->nbuckets - 1)) != b)
						return -EUCLEAN;
					chk_node(s, p->dom, o, o->rt_root,
						 o->rt_height, 0, &k);
					if (k.obj_pages != o->npages)
						return -EUCLEAN;
					nobjs++;
				}
			}
			if (k.bad || !counts_eq(&k.cnt, &p->cnt))
				return -EUCLEAN;
			blob_pages += k.blob_pages;
			counts_add(&ccnt[pool_kind(p)], &k.cnt, +1);
		}
		if (!counts_eq(&ccnt[0], &c->cnt[0]) ||
		    !counts_eq(&ccnt[1], &c->cnt[1]))
			return -EUCLEAN;
		counts_add(&scnt[0], &ccnt[0], +1);
		counts_add(&scnt[1], &ccnt[1], +1);

		for (pg = c->lru_head; pg; prev = pg, pg = pg->lru_next) {
			if (pg->lru_prev != prev || pg->state == PG_EMPTY ||
			    pg->obj->pool->dom->owner != c ||
			    pool_kind(pg->obj->pool) != KIND_EPH ||
			    ++lru > c->cnt[KIND_EPH].pages)
				return -EUCLEAN;
		}
		if (prev != c->lru_tail || lru != c->cnt[KIND_EPH].pages)
			return -EUCLEAN;
		if (c->weight == 0)
			return -EUCLEAN;
	}

	/* Charges: every domain's records and blobs, recounted. */
	for (c = s->clients; c; c = c->next) {
		uint64_t own = c->dom.charged_bytes;

		if (c->dom.chk_bytes != c->dom.charged_bytes)
			return -EUCLEAN;
		for (p = s->shared; p; p = p->shared_next) {
			if (p->dom->owner == c)
				own += p->dom->charged_bytes;
		}
		if (own != c->charged_bytes)
			return -EUCLEAN;
		charged += own;
	}
	for (p = s->shared; p; p = p->shared_next) {
		if (p->own_dom.chk_bytes != p->own_dom.charged_bytes)
			return -EUCLEAN;
	}
	if (charged != s->charged_bytes || blob_refs != blob_pages ||
	    nobjs != s->nobjs || npools != s->npools ||
	    !counts_eq(&scnt[0], &s->cnt[0]) || !counts_eq(&scnt[1], &s->cnt[1]))
		return -EUCLEAN;
	return 0;
}

int tmem_check(struct tmem_store *s)
{
	int rc;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	rc = check_locked(s);
	pthread_mutex_unlock(&s->lock);
	return rc;
}
