/*
 * The tmem store's allocation and charging: every allocation of the store
 * passes st_alloc() (which can inject failures for tests); charged records
 * pass meta_alloc(); dom_charge() nets each change into the owner's
 * pending delta, told to the hook by charges_flush().  Per-kind page
 * counters.  Rules in tmem.h ("Accounting rule"), records in tmem_int.h.
 */
#include "tmem_int.h"

#include <xxhash.h>

/* ---- allocation (every allocation of the store passes here) ---- */

void *st_alloc(struct tmem_store *s, size_t bytes)
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

void st_free(struct tmem_store *s, void *p)
{
	if (!p)
		return;
	s->dbg_live--;
	free(p);
}

void *zs_alloc_cb(void *opaque, size_t bytes)
{
	return st_alloc(opaque, bytes);
}

void zs_free_cb(void *opaque, void *p)
{
	st_free(opaque, p);
}

/* ---- charging ---- */

void pending_add(struct tmem_store *s, struct tmem_client *c, int64_t delta)
{
	c->pending += delta;
	if (!c->pending_linked) {
		c->pending_linked = true;
		c->pending_next = s->pending;
		s->pending = c;
	}
}

void dom_charge(struct tmem_store *s, struct tmem_dom *d, int64_t delta)
{
	struct tmem_client *c = d->owner;

	/* Unsigned wrap-around adds a negative delta. */
	d->charged_bytes += (uint64_t)delta;
	c->charged_bytes += (uint64_t)delta;
	s->charged_bytes += (uint64_t)delta;
	pending_add(s, c, delta);
}

void dom_stored(struct tmem_dom *d, int64_t delta)
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
void charges_flush_except(struct tmem_store *s, struct tmem_client *keep)
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

void charges_flush(struct tmem_store *s)
{
	charges_flush_except(s, NULL);
}

void *meta_alloc(struct tmem_store *s, struct tmem_dom *d, size_t bytes)
{
	void *p = st_alloc(s, bytes);

	if (p) {
		dom_charge(s, d, (int64_t)bytes);
		s->meta_bytes += bytes;
	}
	return p;
}

void meta_free(struct tmem_store *s, struct tmem_dom *d, void *p, size_t bytes)
{
	dom_charge(s, d, -(int64_t)bytes);
	s->meta_bytes -= bytes;
	st_free(s, p);
}

void dom_init(struct tmem_store *s, struct tmem_dom *d,
	      struct tmem_client *owner)
{
	uint64_t ctr = ++s->salt_ctr;

	memset(d, 0, sizeof(*d));
	d->owner = owner;
	d->salt = s->cross ? 0 : XXH3_64bits_withSeed(&ctr, sizeof(ctr), s->seed);
}

/* ---- counters ---- */

int pool_kind(const struct tmem_pool *p)
{
	return (p->flags & TMEM_POOL_PERSISTENT) ? KIND_PERS : KIND_EPH;
}

void counts_add(struct tmem_counts *dst, const struct tmem_counts *d, int sign)
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
void page_count(struct tmem_store *s, struct tmem_pool *pool, uint8_t state,
		uint32_t len, int sign)
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
