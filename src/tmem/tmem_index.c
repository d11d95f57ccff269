/*
 * The tmem store's index: object hash per pool (keyed by the object id)
 * and a radix tree per object (page index -> page descriptor, at most
 * RT_MAX_HEIGHT levels), and freeing pages and objects.  Records in
 * tmem_int.h.
 */
#include "tmem_int.h"

#include <xxhash.h>

uint64_t oid_hash(const struct tmem_store *s, const struct tmem_oid *oid)
{
	return XXH3_64bits_withSeed(oid, sizeof(*oid), s->seed);
}

static bool oid_eq(const struct tmem_oid *a, const struct tmem_oid *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2];
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

struct tmem_page *rt_lookup(const struct tmem_obj *o, uint32_t index)
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
int rt_insert(struct tmem_store *s, struct tmem_dom *d, struct tmem_obj *o,
	      uint32_t index, struct tmem_page *pg)
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

/* Call @fn on every page under @n (height @h); free the nodes if @free. */
void rt_walk(struct tmem_store *s, struct tmem_dom *d, struct rt_node *n,
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
void page_drop_content(struct tmem_store *s, struct tmem_page *pg)
{
	struct tmem_pool *pool = pg->obj->pool;
	uint32_t len = 0;

	if (pg->state == PG_EMPTY)
		return;
	if (pool_kind(pool) == KIND_EPH)
		lru_unlink(pool->dom->owner, pg);
	/* The durable record goes first: the blob slot it names may be
	 * reused as soon as blob_unref() below frees it. */
	if (shm_durable(s, pool) && pg->shm_ent) {
		shm_ent_clear(s, pg->shm_ent - 1);
		pg->shm_ent = 0;
	}
	if (pg->state == PG_BLOB)
		len = blob_at(s, pg->blob)->len;
	page_count(s, pool, pg->state, len, -1);
	if (pg->state == PG_BLOB)
		blob_unref(s, pg->blob, pool->dom);
	pg->state = PG_EMPTY;
	pg->blob = 0;
}

void obj_unlink_free(struct tmem_store *s, struct tmem_obj *o)
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
void page_free(struct tmem_store *s, struct tmem_page *pg)
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
uint32_t obj_destroy(struct tmem_store *s, struct tmem_obj *o)
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

struct tmem_obj *obj_find(const struct tmem_pool *pool,
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

int obj_new(struct tmem_store *s, struct tmem_pool *pool,
	    const struct tmem_oid *oid, uint64_t hash, struct tmem_obj **out)
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
