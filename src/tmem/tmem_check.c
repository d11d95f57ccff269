/*
 * The tmem store's test hooks: allocation-failure injection, allocation
 * counters, and tmem_check(), which walks every record and recounts
 * what the store keeps incrementally (API in tmem.h).
 */
#include "tmem_int.h"

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

/* What tmem_check() sums over the whole store. */
struct chk_totals {
	uint64_t blob_refs;		/* page references the blobs count */
	uint64_t blob_pages;		/* PG_BLOB pages found in the trees */
	uint64_t nobjs, npools;
	struct tmem_counts cnt[2];	/* per KIND_* */
};

/* Blobs: the dedup index holds every one of them; each domain that
 * references one is charged its slab object once. */
static int check_blobs(struct tmem_store *s, struct chk_totals *t)
{
	uint64_t stored = 0, used = 0, nblobs = 0;

	for (uint32_t i = 0; i < s->dd_nbuckets; i++) {
		for (uint64_t h = s->dd[i]; h; h = blob_at(s, h)->next) {
			struct blob *b = blob_at(s, h);
			uint64_t obj = (uint64_t)blob_obj_bytes(s, b);

			if (dd_slot(s, b->hash, b->dom) != i || !b->refs ||
			    (b->len > s->cfg.raw_threshold_bytes &&
			     b->len != TMEM_PAGE_SIZE) || ++nblobs > s->nblobs)
				return -EUCLEAN;
			t->blob_refs += b->refs;
			b->dom->chk_bytes += obj;
			for (uint16_t j = 0; j < b->nmore; j++) {
				if (!b->more[j].refs || b->more[j].dom == b->dom)
					return -EUCLEAN;
				t->blob_refs += b->more[j].refs;
				b->more[j].dom->chk_bytes += obj;
			}
			stored += b->len;
			used += blob_req_bytes(b);
		}
	}
	if (nblobs != s->nblobs || stored != s->stored_bytes ||
	    used != s->slab_used_bytes)
		return -EUCLEAN;
	return 0;
}

/* One pool owned by @c: its objects and trees, recounted into @ccnt. */
static int check_pool(struct tmem_store *s, struct tmem_client *c,
		      struct tmem_pool *p, struct tmem_counts ccnt[2],
		      struct chk_totals *t)
{
	struct chk k = { 0 };

	if ((p->flags & TMEM_POOL_SHARED) &&
	    (!p->nsharers || p->sharers[0] != c))
		return -EUCLEAN;
	t->npools++;
	for (uint32_t b = 0; b < p->nbuckets; b++) {
		for (const struct tmem_obj *o = p->buckets[b]; o; o = o->hnext) {
			k.obj_pages = 0;
			p->dom->chk_bytes += sizeof(*o);
			if (o->pool != p || !o->rt_root ||
			    (o->hash & (p->nbuckets - 1)) != b)
				return -EUCLEAN;
			chk_node(s, p->dom, o, o->rt_root, o->rt_height, 0, &k);
			if (k.obj_pages != o->npages)
				return -EUCLEAN;
			t->nobjs++;
		}
	}
	if (k.bad || !counts_eq(&k.cnt, &p->cnt))
		return -EUCLEAN;
	t->blob_pages += k.blob_pages;
	counts_add(&ccnt[pool_kind(p)], &k.cnt, +1);
	return 0;
}

/* @c's LRU: linked both ways, only its own ephemeral pages, all of them. */
static int check_lru(const struct tmem_client *c)
{
	const struct tmem_page *pg, *prev = NULL;
	uint64_t lru = 0;

	for (pg = c->lru_head; pg; prev = pg, pg = pg->lru_next) {
		if (pg->lru_prev != prev || pg->state == PG_EMPTY ||
		    pg->obj->pool->dom->owner != c ||
		    pool_kind(pg->obj->pool) != KIND_EPH ||
		    ++lru > c->cnt[KIND_EPH].pages)
			return -EUCLEAN;
	}
	if (prev != c->lru_tail || lru != c->cnt[KIND_EPH].pages)
		return -EUCLEAN;
	return 0;
}

/* Pools, visited once each, through their owner; then its LRU. */
static int check_client(struct tmem_store *s, struct tmem_client *c,
			struct chk_totals *t)
{
	struct tmem_counts ccnt[2];

	memset(ccnt, 0, sizeof(ccnt));
	if (c->pending || c->pending_linked || c->weight == 0)
		return -EUCLEAN;
	for (uint32_t i = 0; i < TMEM_MAX_POOLS_PER_CLIENT; i++) {
		struct tmem_pool *p = c->pools[i];

		if (p && p->dom->owner == c && check_pool(s, c, p, ccnt, t))
			return -EUCLEAN;
	}
	if (!counts_eq(&ccnt[0], &c->cnt[0]) || !counts_eq(&ccnt[1], &c->cnt[1]))
		return -EUCLEAN;
	counts_add(&t->cnt[0], &ccnt[0], +1);
	counts_add(&t->cnt[1], &ccnt[1], +1);
	return check_lru(c);
}

/* Charges: every domain's records and blobs, recounted. */
static int check_charges(struct tmem_store *s)
{
	uint64_t charged = 0;
	struct tmem_pool *p;

	for (struct tmem_client *c = s->clients; c; c = c->next) {
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
	return charged == s->charged_bytes ? 0 : -EUCLEAN;
}

static int check_locked(struct tmem_store *s)
{
	struct chk_totals t;
	struct tmem_client *c;
	struct tmem_pool *p;

	if (zslab_check(s->zs) || s->pending)
		return -EUCLEAN;
	memset(&t, 0, sizeof(t));
	for (c = s->clients; c; c = c->next)
		c->dom.chk_bytes = 0;
	for (p = s->shared; p; p = p->shared_next)
		p->own_dom.chk_bytes = 0;
	if (check_blobs(s, &t))
		return -EUCLEAN;
	for (c = s->clients; c; c = c->next)
		if (check_client(s, c, &t))
			return -EUCLEAN;
	if (check_charges(s) || t.blob_refs != t.blob_pages ||
	    t.nobjs != s->nobjs || t.npools != s->npools ||
	    !counts_eq(&t.cnt[0], &s->cnt[0]) || !counts_eq(&t.cnt[1], &s->cnt[1]))
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
