/*
 * The tmem store's ephemeral LRU (one list per client) and eviction: the
 * victim is the LRU page of the client furthest over its weight (rule in
 * tmem.h); charge_commit() is put's step 4, evicting while the hook
 * refuses.  Records in tmem_int.h.
 */
#include "tmem_int.h"

/* ---- LRU (per client, ephemeral pages with content only) ---- */

void lru_unlink(struct tmem_client *c, struct tmem_page *pg)
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

void lru_push_mru(struct tmem_client *c, struct tmem_page *pg)
{
	pg->lru_next = NULL;
	pg->lru_prev = c->lru_tail;
	if (c->lru_tail)
		c->lru_tail->lru_next = pg;
	else
		c->lru_head = pg;
	c->lru_tail = pg;
}

/* ---- eviction ---- */

/* The client furthest over its weight (most ephemeral pages per unit of
 * weight; ties: the earliest created), and how many pages it can lose
 * before the runner-up would be further over, so that a bulk shrink
 * rescans the clients once per change of victim, not once per page. */
struct tmem_client *evict_pick(struct tmem_store *s, uint64_t *budget)
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

void evict_page(struct tmem_store *s, struct tmem_client *victim)
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
int charge_commit(struct tmem_store *s, struct tmem_client *c)
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
