/*
 * The tmem store: its public calls (store, clients, pools, pages, stats;
 * API and contract in tmem.h).  The records, their diagram and the
 * helpers shared by the store's files are in tmem_int.h; the radix index
 * is tmem_index.c, dedup and blobs tmem_dedup.c, LRU and eviction
 * tmem_lru.c, allocation and charging tmem_charge.c, the consistency
 * check tmem_check.c.
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
#include "tmem_int.h"

#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

#include "loop.h"

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

/* ---- clients and pools ---- */

static unsigned client_bucket(uint32_t id)
{
	return (unsigned)((id * 0x9e3779b1u) >> 26) & (CLIENT_BUCKETS - 1);
}

struct tmem_client *tm_client_find(const struct tmem_store *s, uint32_t id)
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

int tm_pool_create(struct tmem_store *s, struct tmem_client *c, uint32_t flags,
		const struct tmem_uuid *uuid, struct tmem_pool **out)
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

	/* Unrecorded first: a crash in the middle of the teardown below
	 * must not bring back a pool with some of its pages. */
	if (shm_durable(s, p))
		shm_pool_mark(s, c, pool_id, false);
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

int store_create(const struct tmem_store_config *cfg, struct tmem_shm *shm,
		 const uint64_t *seed, struct tmem_store **out)
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
	s->seed = seed ? *seed : seed_new();
	s->shm = shm;

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
	shm_zslab_hooks(s, &zp);
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

int tmem_store_new(const struct tmem_store_config *cfg, struct tmem_store **out)
{
	return store_create(cfg, NULL, NULL, out);
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
	/* A memfd-backed store only lets go of its mapping: the records in
	 * the memfd stay for the next process (tmem_store_adopt_shm). */
	shm_detach(s);
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
	shm_unmap(s->shm);
	free(s);
}

/* ---- public: clients ---- */

int tmem_client_new(struct tmem_store *s, uint32_t client_id, const char *name,
		    const struct tmem_client_params *p)
{
	struct tmem_client *c;
	uint32_t weight;
	int rc;

	if (!s)
		return -EINVAL;
	rc = params_check(p, &weight);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	if (tm_client_find(s, client_id)) {
		rc = -EEXIST;
		goto out;
	}
	rc = tm_client_create(s, client_id, name, weight,
			   p ? p->max_persistent_pages : 0, 0, &c);
	if (!rc) {
		rc = shm_client_add(s, c);
		if (rc)
			client_unlink_free(s, c);
	}
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* A new client record, linked in.  @shm_slot: its record in the memfd
 * (+ 1) when the shm loader restores it, else 0. */
int tm_client_create(struct tmem_store *s, uint32_t client_id, const char *name,
		  uint32_t weight, uint64_t max_persistent_pages,
		  uint32_t shm_slot, struct tmem_client **out)
{
	struct tmem_client *c;
	unsigned b;

	c = st_alloc(s, sizeof(*c));
	if (!c)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	c->id = client_id;
	c->shm_slot = shm_slot;
	if (name) {
		strncpy(c->name, name, sizeof(c->name) - 1);
		c->name[sizeof(c->name) - 1] = '\0';
	}
	c->weight = weight;
	c->max_persistent_pages = max_persistent_pages;
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
	*out = c;
	return 0;
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
	c = tm_client_find(s, client_id);
	if (c) {
		c->weight = weight;
		c->max_persistent_pages = p->max_persistent_pages;
		shm_client_update(s, c);
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
	c = tm_client_find(s, client_id);
	if (!c) {
		rc = -ESRCH;
		goto out;
	}
	/* Unrecorded first, as in pool_close(). */
	shm_client_del(s, c);
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
	struct tmem_client *c = tm_client_find(s, client_id);
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
		rc = tm_pool_create(s, c, flags, uuid, &p);
	if (rc)
		return rc;
	c->pools[slot] = p;
	*pool_id = slot;
	if (shm_durable(s, p))
		shm_pool_mark(s, c, slot, true);
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
	c = tm_client_find(s, client_id);
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
	uint64_t hash = 0, oh, h = 0, old_ent = 0, new_ent = 0;
	uint8_t state;
	bool durable;
	int rc, kind;

	/* 1. */
	rc = pool_lookup(c, pool_id, &pool);
	if (rc)
		return rc;
	d = pool->dom;
	owner = d->owner;
	kind = pool_kind(pool);
	durable = shm_durable(s, pool);
	state = page_is_zero(page) ? PG_ZERO : PG_BLOB;
	/* A durable page's record carries its hash so that a restart can
	 * verify the content, so it is hashed even without dedup. */
	if (state == PG_BLOB && (s->dedup || durable))
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
	if (durable) {
		/* Durable steps, between the heap ones:
		 *   2a. reserve the new key-table entry (may fail);
		 *   2b. detach the old entry from the page and park the old
		 *       blob: both stay intact in the memfd until 5;
		 *   5a. commit the new entry (seq newer than the old one);
		 *   5b. clear the old entry, then free the parked blob.
		 * A crash anywhere leaves the old entry with its blob, or the
		 * new one with its blob, or (between 5a and 5b) both, where
		 * the loader keeps the newer. */
		rc = shm_ent_reserve(s, &new_ent);
		if (rc)
			return rc;
	}
	if (pg) {
		if (durable) {
			old_ent = pg->shm_ent;
			pg->shm_ent = 0;
			s->defer_armed = true;
		}
		page_drop_content(s, pg);
		s->defer_armed = false;
	} else {
		if (kind == KIND_PERS && owner->max_persistent_pages &&
		    owner->cnt[KIND_PERS].pages >= owner->max_persistent_pages) {
			rc = -ENOSPC;
			goto err_ent;
		}
		if (!o) {
			rc = obj_new(s, pool, oid, oh, &o);
			if (rc)
				goto err_ent;
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
	pg->unverified = 0;	/* content from this process */
	page_count(s, pool, state, h ? blob_at(s, h)->len : 0, +1);
	if (kind == KIND_EPH)
		lru_push_mru(owner, pg);
	if (durable) {
		shm_ent_commit(s, new_ent, c->id, pool_id, oid, index, pg, hash);
		pg->shm_ent = new_ent + 1;
		if (old_ent)
			shm_ent_clear(s, old_ent - 1);
		blob_free_deferred(s);
	}
	return 0;

err_page:
	page_free(s, pg);	/* EMPTY: frees slot, record, maybe object */
	goto err_ent;
err_obj:
	if (!o->npages)
		obj_unlink_free(s, o);
err_ent:
	/* A failed put leaves no page, durably too: the old entry goes
	 * before the old blob's slot does. */
	if (durable) {
		if (old_ent)
			shm_ent_clear(s, old_ent - 1);
		blob_free_deferred(s);
		shm_ent_unreserve(s, new_ent);
	}
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
	c = tm_client_find(s, client_id);
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
		/* Never wrong data: a damaged adopted page reads as an
		 * I/O error (swapstore: LOST), and it stays so. */
		if (pg->unverified) {
			if (shm_verify(s, pg, page) < 0) {
				memset(page, 0, TMEM_PAGE_SIZE);
				return -EIO;
			}
			pg->unverified = 0;
		}
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
	c = tm_client_find(s, client_id);
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
	c = tm_client_find(s, client_id);
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
	c = tm_client_find(s, client_id);
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
	c = tm_client_find(s, client_id);
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

int tmem_store_latency(struct tmem_store *s, bool get, const uint64_t *le_ns,
		       unsigned n, uint64_t *cum, uint64_t *count,
		       uint64_t *sum_ns)
{
	const struct lathist *h;

	pthread_mutex_lock(&s->lock);
	h = get ? &s->get_lat : &s->put_lat;
	lathist_cumulative(h, le_ns, n, cum);
	*count = h->n;
	*sum_ns = h->sum_ns;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- public: enumeration (what a restarted daemon re-claims) ---- */

int tmem_store_client_ids(struct tmem_store *s, uint32_t *ids, size_t cap,
			  size_t *n)
{
	struct tmem_client *c;
	size_t i = 0;

	if (!s || !n || (cap && !ids))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	for (c = s->clients; c; c = c->next, i++) {
		if (i < cap)
			ids[i] = c->id;
	}
	pthread_mutex_unlock(&s->lock);
	*n = i;
	return 0;
}

int tmem_pool_flags(struct tmem_store *s, uint32_t client_id,
		    uint32_t pool_id, uint32_t *flags)
{
	struct tmem_client *c;
	struct tmem_pool *p;
	int rc;

	if (!s || !flags)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = tm_client_find(s, client_id);
	rc = c ? pool_lookup(c, pool_id, &p) : -ESRCH;
	if (!rc)
		*flags = p->flags;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

struct index_walk {
	void (*fn)(void *arg, uint32_t index);
	void *arg;
};

static void index_cb(struct tmem_store *s, struct tmem_page *pg, void *arg)
{
	struct index_walk *w = arg;

	(void)s;
	if (pg->state != PG_EMPTY)
		w->fn(w->arg, pg->index);
}

int tmem_object_indexes(struct tmem_store *s, uint32_t client_id,
			uint32_t pool_id, const struct tmem_oid *oid,
			void (*fn)(void *arg, uint32_t index), void *arg)
{
	struct index_walk w = { fn, arg };
	struct tmem_client *c;
	struct tmem_pool *p;
	struct tmem_obj *o;
	int rc;

	if (!s || !oid || !fn)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	c = tm_client_find(s, client_id);
	rc = c ? pool_lookup(c, pool_id, &p) : -ESRCH;
	if (!rc) {
		o = obj_find(p, oid, oid_hash(s, oid));
		if (o && o->rt_root)
			rt_walk(s, p->dom, o->rt_root, o->rt_height, false,
				index_cb, &w);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}
