/*
 * The tmem store's content side: page hashing, the dedup index (keyed
 * hash -> chain of blobs, bounded probes, byte-verified hits) and blobs
 * with their per-domain references and charges.  Records in tmem_int.h,
 * the dedup contract in tmem.h ("Storage").
 */
#include "tmem_int.h"

#include <xxhash.h>

static const uint8_t zero_page[TMEM_PAGE_SIZE];

uint64_t page_hash(const struct tmem_store *s, const void *page)
{
	return XXH3_64bits_withSeed(page, TMEM_PAGE_SIZE, s->seed);
}

bool page_is_zero(const void *page)
{
	return memcmp(page, zero_page, TMEM_PAGE_SIZE) == 0;
}

/* ---- dedup index ---- */

struct blob *blob_at(const struct tmem_store *s, uint64_t h)
{
	return zslab_map(s->zs, h);
}

size_t blob_req_bytes(const struct blob *b)
{
	return sizeof(*b) + b->len;
}

int64_t blob_obj_bytes(const struct tmem_store *s, const struct blob *b)
{
	return (int64_t)zslab_class_bytes(s->zs, blob_req_bytes(b));
}

uint32_t dd_slot(const struct tmem_store *s, uint64_t hash,
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

void dd_reserve(struct tmem_store *s, uint64_t nblobs)
{
	while (s->dd_nbuckets < nblobs && s->dd_nbuckets < (1u << 31)) {
		uint32_t before = s->dd_nbuckets;

		dd_grow(s);
		if (s->dd_nbuckets == before)
			return;	/* no memory: chains grow longer instead */
	}
}

void dd_prefetch(const struct tmem_store *s, uint64_t hash,
		 const struct tmem_dom *d)
{
	if (s->dedup)
		__builtin_prefetch(&s->dd[dd_slot(s, hash, d)], 1);
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

bool blob_equals(struct tmem_store *s, const struct blob *b, const void *page)
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
uint64_t dd_lookup(struct tmem_store *s, const void *page, uint64_t hash,
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
int blob_new(struct tmem_store *s, struct tmem_dom *d, const void *page,
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
int blob_ref(struct tmem_store *s, uint64_t h, struct tmem_dom *d)
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
	if (s->defer_armed && !s->deferred_h) {
		s->deferred_h = h;
		s->deferred_req = req;
		return;
	}
	zslab_free(s->zs, h, req);
}

/* The slot a durable put parked (see tmem_store.defer_armed) goes back,
 * now that no key-table entry names it. */
void blob_free_deferred(struct tmem_store *s)
{
	if (!s->deferred_h)
		return;
	zslab_free(s->zs, s->deferred_h, s->deferred_req);
	s->deferred_h = 0;
}

/* The shm loader found blob @h (payload and len already in place) as the
 * content of a page of @d: fill in the process-local header fields and
 * account it as blob_new() would have. */
void blob_adopt(struct tmem_store *s, uint64_t h, struct tmem_dom *d,
		uint64_t hash)
{
	struct blob *b = blob_at(s, h);

	b->hash = s->dedup ? hash : h * 0x9e3779b97f4a7c15ull;
	b->next = 0;
	b->dom = d;
	b->more = NULL;
	b->refs = 1;
	b->nmore = 0;
	dd_insert(s, h, b);
	s->stored_bytes += b->len;
	s->slab_used_bytes += blob_req_bytes(b);
	dom_charge(s, d, blob_obj_bytes(s, b));
	dom_stored(d, (int64_t)b->len);
}

/* Drop one page reference from @d; the domain's last one is credited, the
 * blob's last one frees it. */
void blob_unref(struct tmem_store *s, uint64_t h, struct tmem_dom *d)
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
