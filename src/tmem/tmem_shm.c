/*
 * tmem_shm: the tmem store's arena in a memfd, what a restarted ebbd
 * adopts (contract in tmem.h, "persistence across a restart").
 *
 * Layout (file offsets; every reference in the file is one of these):
 *
 *   0          header (struct shm_hdr), in a 4 KiB page
 *   4096       client records [TMEM_SHM_MAX_CLIENTS] (struct shm_client)
 *   desc_off   chunk descriptors [max_chunks] (uint32_t), one per chunk
 *   chunks_off chunks of SHM_CHUNK (64 KiB) bytes, the first hwm of them
 *              inside the file (file size == chunks_off + hwm * SHM_CHUNK)
 *
 * A chunk is free (descriptor 0), a key-table chunk (DESC_TABLE: 1024
 * entries of 64 bytes), or part of a zslab slab of 1..4 chunks (DESC_SLAB:
 * class size / 64, chunks in the slab, position in it).  Blobs are zslab
 * objects, so a blob's offset is its slab's offset plus slot * class
 * size.  The descriptor table is sized for max_chunks up front: it and the
 * reservation never move, and the untouched part of a memfd costs nothing.
 *
 * Mapping: one MAP_SHARED mapping of the whole reservation (chunks_off +
 * max_chunks * SHM_CHUNK) made once; the file grows under it with
 * ftruncate.  Linux allows a shared mapping longer than its file (access
 * past the end is SIGBUS, and nothing here goes past hwm), so growing
 * needs no remap and no PROT_NONE reservation plus MAP_FIXED extension:
 * one syscall, and every address handed out stays valid until unmap.
 *
 * Crash consistency.  SIGKILL stops the process between two instructions
 * and every store already made is in the memfd (no power loss to think
 * of), so order is all that matters: the compiler must not move a store
 * across a commit point, which COMMIT() (a signal fence: exactly "as seen
 * by this thread interrupted here") forbids.  Rules, each referred to at
 * its commit point:
 *   R1. A record (entry, client) is written whole, then its check word
 *       (a keyed hash of the rest, never 0) last.  Cleared by zeroing the
 *       check word first.  A torn record fails its check or is 0: absent.
 *   R2. A blob's bytes are written before the entry naming it commits;
 *       a blob's slot is freed only after every entry naming it is
 *       cleared (tmem_put parks the old blob until its new entry commits,
 *       page_drop_content clears before it unrefs).
 *   R3. A slab's chunk descriptors are written before zslab hands out
 *       an object of it (so before any entry can name one), and cleared
 *       only when zslab frees the slab, when no live object is in it.
 *   R4. A replaced page has two entries for one key for a moment (new
 *       committed, old not yet cleared); seq, a store-wide counter, says
 *       which is newer.  A pool is unrecorded before its pages are
 *       dropped, a client before its pools, so an interrupted teardown
 *       leaves entries whose pool is gone: the loader drops them.
 *   R5. Single words (a client's pool bitmap, weight, quota) are changed
 *       with one aligned store, which SIGKILL cannot tear.
 *
 * What is process-local although it lies in the memfd: the first 32
 * bytes of each blob header (hash cache, dedup link, domain pointers) and
 * the free-entry list threaded through free entries' seq field.  The
 * loader never reads either; it rewrites both.
 *
 * Loading (tmem_store_adopt_shm), numbered steps referred to below:
 *   1. header: magic, version, sizes, offsets consistent with max_chunks,
 *      checksum; file size on a chunk boundary within the reservation.
 *   2. clients: check word, unique id; their persistent pools re-created
 *      at the same pool ids.
 *   3. descriptors: table chunks listed, slabs checked (class known,
 *      chunk count matches the class's shape, every chunk agrees).
 *   4. entries, pass A: check word, client and pool exist, offset inside a
 *      slab, on a slot boundary, of the class its length needs; the key's
 *      page record is made (empty), and of two entries for one key the
 *      newer wins (the older is cleared).
 *   5. pass B: each winner's blob slot is marked in use per slab.  Its
 *      content is not decompressed here: that would cost ~1 us a page
 *      (0.3 s for 300 000 pages, all of it device pause in an upgrade);
 *      the page is marked unverified and its first get compares the
 *      content with the entry's hash (shm_verify), so a damaged blob is
 *      an I/O error at that get, never wrong data.
 *   6. slabs with a slot in use are handed to zslab (zslab_adopt); every
 *      other chunk is freed and hole-punched.
 *   7. pass C: pages get their content (first reference initialises the
 *      blob header, later ones add references), counted and charged as a
 *      put would.  Free entries form the free list; seq continues past the
 *      highest seen.
 */
#include "tmem_int.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define SHM_MAGIC	0x314d454d54424245ull	/* "EBBTMEM1" */
#define SHM_VERSION	1u
#define SHM_CHUNK	(64u << 10)
#define SHM_HDR_BYTES	4096u
#define SHM_ENT_BYTES	64u
#define SHM_ENTS_PER_CHUNK	(SHM_CHUNK / SHM_ENT_BYTES)
#define SHM_GROW_CHUNKS	16u	/* the file grows by at least 1 MiB */
#define SHM_MIN_CHUNKS	64u
#define SHM_MAX_CHUNKS	(1ull << 26)	/* 4 TiB of arena */

#define DESC_TABLE	0x80000000u
#define DESC_SLAB(obj64, n, pos) \
	((uint32_t)(obj64) << 8 | (uint32_t)(n) << 4 | (uint32_t)(pos))
#define DESC_OBJ64(d)	(((d) >> 8) & 0xffffu)
#define DESC_N(d)	(((d) >> 4) & 0xfu)
#define DESC_POS(d)	((d) & 0xfu)

#define ENT_ZERO	1	/* all-zero page, no blob */
#define ENT_BLOB	2

/* Keeps the compiler from moving stores across a commit point; see the
 * rules above.  The CPU needs nothing: a killed thread's stores are not
 * taken back. */
#define COMMIT()	atomic_signal_fence(memory_order_seq_cst)

struct shm_hdr {
	uint64_t magic;			/* SHM_MAGIC, written last */
	uint32_t version;		/* SHM_VERSION */
	uint32_t page_bytes;		/* TMEM_PAGE_SIZE */
	uint32_t chunk_bytes;		/* SHM_CHUNK */
	uint32_t ent_bytes;		/* SHM_ENT_BYTES */
	uint32_t max_clients;		/* TMEM_SHM_MAX_CLIENTS */
	uint32_t store_flags;		/* TMEM_STORE_* */
	uint64_t max_chunks;		/* descriptors, reservation */
	uint64_t clients_off;		/* SHM_HDR_BYTES */
	uint64_t desc_off;		/* after the client records */
	uint64_t chunks_off;		/* after the descriptors, chunk-aligned */
	uint64_t seed;			/* the store's hash key */
	uint64_t check;			/* XXH3-64 of version .. seed */
};

struct shm_client {
	_Atomic uint32_t check;		/* keyed hash of id + name | 1; 0: free */
	uint32_t id;			/* tmem client id */
	char name[TMEM_NAME_MAX];	/* NUL-terminated */
	_Atomic uint32_t weight;	/* R5 */
	uint32_t reserved;
	_Atomic uint64_t max_persistent_pages;	/* R5 */
	_Atomic uint64_t pools;		/* bit i: pool id i is a private
					 * persistent pool (R5) */
};

struct shm_ent {
	_Atomic uint32_t check;		/* keyed hash of bytes 4..63 | 1; 0: free */
	uint32_t client_id;
	uint8_t pool_id;		/* < TMEM_MAX_POOLS_PER_CLIENT */
	uint8_t kind;			/* ENT_ZERO, ENT_BLOB */
	uint16_t len;			/* payload bytes; TMEM_PAGE_SIZE: raw */
	uint32_t index;			/* page index */
	uint64_t seq;			/* newest wins; free: next free + 1 */
	uint64_t oid[3];
	uint64_t blob_off;		/* file offset of the blob, 0 if zero */
	uint64_t hash;			/* page_hash() of the content */
};

_Static_assert(sizeof(struct shm_hdr) <= SHM_HDR_BYTES, "header fits");
_Static_assert(sizeof(struct shm_client) == 64, "client record layout");
_Static_assert(sizeof(struct shm_ent) == SHM_ENT_BYTES, "entry layout");
_Static_assert(offsetof(struct shm_ent, client_id) == 4, "check first");
_Static_assert(offsetof(struct blob, data) == 40 &&
	       offsetof(struct blob, refs) == 32,
	       "blob header: 32 process-local bytes, then refs, len");

struct tmem_shm {
	int fd;				/* the memfd, owned */
	uint8_t *base;			/* mapping of map_bytes */
	uint64_t map_bytes;		/* chunks_off + max_chunks * SHM_CHUNK */
	struct shm_hdr *hdr;
	struct shm_client *clients;	/* [TMEM_SHM_MAX_CLIENTS] */
	uint32_t *desc;			/* [max_chunks] */
	uint64_t chunks_off;
	uint64_t max_chunks;
	uint64_t hwm;			/* chunks inside the file */
	uint64_t *busy;			/* bit per chunk: in use (heap) */
	uint64_t cursor;		/* next-fit start, in chunks */
	uint32_t *tab;			/* table chunks, in entry order */
	uint32_t ntab, tab_cap;
	uint64_t free_ent;		/* free entry list head, entry + 1 */
	uint64_t seq;			/* last seq given */
	bool detached;			/* tmem_store_free: touch nothing */
};

/* ---- arena: chunks ---- */

static bool busy_get(const struct tmem_shm *m, uint64_t c)
{
	return m->busy[c / 64] >> (c % 64) & 1;
}

static void busy_set(struct tmem_shm *m, uint64_t c, uint64_t n, bool on)
{
	for (; n; c++, n--) {
		if (on)
			m->busy[c / 64] |= 1ull << (c % 64);
		else
			m->busy[c / 64] &= ~(1ull << (c % 64));
	}
}

static uint8_t *chunk_addr(const struct tmem_shm *m, uint64_t c)
{
	return m->base + m->chunks_off + c * SHM_CHUNK;
}

/* Give chunks [c, c + n) back to the host.  Advice-like: if the punch
 * fails the memory just stays allocated. */
static void chunks_release(struct tmem_shm *m, uint64_t c, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		m->desc[c + i] = 0;
	COMMIT();
	(void)fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			(off_t)(m->chunks_off + c * SHM_CHUNK),
			(off_t)(n * SHM_CHUNK));
	busy_set(m, c, n, false);
}

/* Grow the file to cover at least @need chunks.  Growth is geometric
 * (1/8) so that a filling store makes O(log) ftruncate calls. */
static int arena_grow(struct tmem_shm *m, uint64_t need)
{
	uint64_t n = m->hwm + m->hwm / 8;

	if (need > m->max_chunks)
		return -ENOSPC;
	if (n < m->hwm + SHM_GROW_CHUNKS)
		n = m->hwm + SHM_GROW_CHUNKS;
	if (n < need)
		n = need;
	if (n > m->max_chunks)
		n = m->max_chunks;
	if (ftruncate(m->fd, (off_t)(m->chunks_off + n * SHM_CHUNK)))
		return -errno;
	m->hwm = n;
	return 0;
}

/* @n free consecutive chunks (next fit, then the file grows).  Linear
 * in the arena's size at worst, but a slab (64-256 KiB of blobs) is
 * allocated once per hundreds of puts. */
static int chunks_alloc(struct tmem_shm *m, uint64_t n, uint64_t *out)
{
	uint64_t pass, c, run = 0, start = 0;
	int rc;

	for (pass = 0; pass < 2; pass++) {
		uint64_t from = pass ? 0 : m->cursor;
		uint64_t to = pass ? m->cursor : m->hwm;

		run = 0;
		for (c = from; c < to; c++) {
			if (c % 64 == 0 && to - c >= 64 && m->busy[c / 64] == ~0ull) {
				c += 63;
				run = 0;
				continue;
			}
			if (busy_get(m, c)) {
				run = 0;
				continue;
			}
			if (!run++)
				start = c;
			if (run == n)
				goto found;
		}
	}
	/* A free run at the end of the file counts toward the new room. */
	start = m->hwm;
	while (start > 0 && !busy_get(m, start - 1) && m->hwm - start + 1 <= n)
		start--;
	rc = arena_grow(m, start + n);
	if (rc)
		return rc;
found:
	busy_set(m, start, n, true);
	m->cursor = start + n;
	*out = start;
	return 0;
}

/* zslab's slab hooks for a memfd store: slab memory is arena chunks. */
static void *slab_alloc_cb(void *opaque, size_t bytes, uint32_t obj_bytes)
{
	struct tmem_store *s = opaque;
	struct tmem_shm *m = s->shm;
	uint64_t n = bytes / SHM_CHUNK, c, i;

	assert(bytes % SHM_CHUNK == 0 && n >= 1 && n <= 4);
	s->dbg_allocs++;
	if (s->dbg_fail_at && s->dbg_allocs == s->dbg_fail_at) {
		s->dbg_fail_at = 0;
		s->dbg_injected++;
		return NULL;
	}
	if (chunks_alloc(m, n, &c))
		return NULL;
	/* R3 */
	for (i = 0; i < n; i++)
		m->desc[c + i] = DESC_SLAB(obj_bytes / 64, n, i);
	COMMIT();
	/* Not prefaulted (MADV_POPULATE_WRITE): it takes the put p50 back
	 * to the heap store's but puts the whole slab's faults (50-100 us)
	 * on the one put that creates it, a p99 of ~100 us (tmem_bench
	 * --shm).  Faulting page by page spreads them. */
	return chunk_addr(m, c);
}

static void slab_free_cb(void *opaque, void *mem, size_t bytes)
{
	struct tmem_store *s = opaque;
	struct tmem_shm *m = s->shm;

	if (m->detached)
		return;
	chunks_release(m, (uint64_t)((uint8_t *)mem - chunk_addr(m, 0)) /
			  SHM_CHUNK, bytes / SHM_CHUNK);
}

void shm_zslab_hooks(struct tmem_store *s, struct zslab_params *zp)
{
	if (!s->shm)
		return;
	zp->slab_alloc = slab_alloc_cb;
	zp->slab_free = slab_free_cb;
	zp->chunk_bytes = SHM_CHUNK;
}

/* ---- records ---- */

bool shm_durable(const struct tmem_store *s, const struct tmem_pool *pool)
{
	return s->shm && !s->shm->detached &&
	       (pool->flags & TMEM_POOL_PERSISTENT) &&
	       !(pool->flags & TMEM_POOL_SHARED);
}

static bool live(const struct tmem_store *s)
{
	return s->shm && !s->shm->detached;
}

static uint32_t rec_check(const struct tmem_store *s, const void *rec,
			  size_t len)
{
	return (uint32_t)XXH3_64bits_withSeed((const uint8_t *)rec + 4,
					      len - 4, s->seed) | 1u;
}

static uint32_t client_check(const struct tmem_store *s,
			     const struct shm_client *r)
{
	/* id and name: the fields that never change after creation. */
	return rec_check(s, r, offsetof(struct shm_client, weight));
}

int shm_client_add(struct tmem_store *s, struct tmem_client *c)
{
	struct tmem_shm *m = s->shm;
	struct shm_client *r;
	uint32_t i;

	if (!live(s))
		return 0;
	for (i = 0; i < TMEM_SHM_MAX_CLIENTS; i++) {
		if (!atomic_load_explicit(&m->clients[i].check,
					  memory_order_relaxed))
			break;
	}
	if (i == TMEM_SHM_MAX_CLIENTS)
		return -ENOSPC;
	r = &m->clients[i];
	r->id = c->id;
	memcpy(r->name, c->name, sizeof(r->name));
	r->weight = c->weight;
	r->reserved = 0;
	r->max_persistent_pages = c->max_persistent_pages;
	r->pools = 0;
	COMMIT();	/* R1 */
	atomic_store_explicit(&r->check, client_check(s, r),
			      memory_order_relaxed);
	c->shm_slot = i + 1;
	return 0;
}

void shm_client_update(struct tmem_store *s, struct tmem_client *c)
{
	struct shm_client *r;

	if (!live(s) || !c->shm_slot)
		return;
	r = &s->shm->clients[c->shm_slot - 1];
	atomic_store_explicit(&r->weight, c->weight, memory_order_relaxed);
	atomic_store_explicit(&r->max_persistent_pages,
			      c->max_persistent_pages, memory_order_relaxed);
}

void shm_client_del(struct tmem_store *s, struct tmem_client *c)
{
	if (!live(s) || !c->shm_slot)
		return;
	atomic_store_explicit(&s->shm->clients[c->shm_slot - 1].check, 0,
			      memory_order_relaxed);
	COMMIT();	/* R4: before the pools' teardown */
	c->shm_slot = 0;
}

void shm_pool_mark(struct tmem_store *s, struct tmem_client *c,
		   uint32_t pool_id, bool durable)
{
	struct shm_client *r;
	uint64_t v;

	if (!live(s) || !c->shm_slot)
		return;
	r = &s->shm->clients[c->shm_slot - 1];
	v = atomic_load_explicit(&r->pools, memory_order_relaxed);
	if (durable)
		v |= 1ull << pool_id;
	else
		v &= ~(1ull << pool_id);
	atomic_store_explicit(&r->pools, v, memory_order_relaxed);	/* R5 */
	COMMIT();	/* R4: before the pool's pages go */
}

/* ---- key table ---- */

static struct shm_ent *ent_at(const struct tmem_shm *m, uint64_t n)
{
	return (struct shm_ent *)(chunk_addr(m, m->tab[n / SHM_ENTS_PER_CHUNK]) +
				  (n % SHM_ENTS_PER_CHUNK) * SHM_ENT_BYTES);
}

int shm_verify(const struct tmem_store *s, const struct tmem_page *pg,
	       const void *page)
{
	/* Only adopted pages are unverified, and those have an entry. */
	if (!s->shm || !pg->shm_ent)
		return -EBADMSG;
	return page_hash(s, page) == ent_at(s->shm, pg->shm_ent - 1)->hash ?
	       0 : -EBADMSG;
}

static void ent_push_free(struct tmem_shm *m, uint64_t n)
{
	ent_at(m, n)->seq = m->free_ent;
	m->free_ent = n + 1;
}

/* One more table chunk, its entries onto the free list. */
/* Room for one more key-table chunk number in m->tab. */
static int tab_reserve(struct tmem_shm *m)
{
	uint32_t cap, *t;

	if (m->ntab < m->tab_cap)
		return 0;
	cap = m->tab_cap ? m->tab_cap * 2 : 16;
	t = realloc(m->tab, cap * sizeof(*t));
	if (!t)
		return -ENOMEM;
	m->tab = t;
	m->tab_cap = cap;
	return 0;
}

static int table_grow(struct tmem_shm *m)
{
	uint64_t c, i, first;
	int rc;

	if (tab_reserve(m) < 0)
		return -ENOMEM;
	rc = chunks_alloc(m, 1, &c);
	if (rc)
		return rc == -ENOSPC ? -ENOSPC : -ENOMEM;
	/* Fresh or punched chunk: all zero, so every entry reads free. */
	m->desc[c] = DESC_TABLE;
	m->tab[m->ntab++] = (uint32_t)c;
	first = (uint64_t)(m->ntab - 1) * SHM_ENTS_PER_CHUNK;
	for (i = SHM_ENTS_PER_CHUNK; i-- > 0;)
		ent_push_free(m, first + i);
	return 0;
}

int shm_ent_reserve(struct tmem_store *s, uint64_t *ent)
{
	struct tmem_shm *m = s->shm;
	int rc;

	if (!m->free_ent) {
		rc = table_grow(m);
		if (rc)
			return rc;
	}
	*ent = m->free_ent - 1;
	m->free_ent = ent_at(m, *ent)->seq;
	return 0;
}

void shm_ent_unreserve(struct tmem_store *s, uint64_t ent)
{
	ent_push_free(s->shm, ent);
}

void shm_ent_commit(struct tmem_store *s, uint64_t ent, uint32_t client_id,
		    uint32_t pool_id, const struct tmem_oid *oid,
		    uint32_t index, const struct tmem_page *pg, uint64_t hash)
{
	struct tmem_shm *m = s->shm;
	struct shm_ent *e = ent_at(m, ent);

	e->client_id = client_id;
	e->pool_id = (uint8_t)pool_id;
	e->index = index;
	e->seq = ++m->seq;
	memcpy(e->oid, oid->w, sizeof(e->oid));
	if (pg->state == PG_ZERO) {
		e->kind = ENT_ZERO;
		e->len = 0;
		e->blob_off = 0;
		e->hash = 0;
	} else {
		const struct blob *b = blob_at(s, pg->blob);

		e->kind = ENT_BLOB;
		e->len = b->len;
		e->blob_off = (uint64_t)((const uint8_t *)b - m->base);
		e->hash = hash;
	}
	COMMIT();	/* R1, R2: the blob and the fields, then the check */
	atomic_store_explicit(&e->check, rec_check(s, e, sizeof(*e)),
			      memory_order_relaxed);
	COMMIT();	/* R4: before the old entry is cleared */
}

void shm_ent_clear(struct tmem_store *s, uint64_t ent)
{
	struct tmem_shm *m = s->shm;

	atomic_store_explicit(&ent_at(m, ent)->check, 0, memory_order_relaxed);
	COMMIT();	/* R2: before the blob's slot can be reused */
	ent_push_free(m, ent);
}

/* ---- life cycle ---- */

void shm_detach(struct tmem_store *s)
{
	if (s->shm)
		s->shm->detached = true;
}

void shm_unmap(struct tmem_shm *m)
{
	if (!m)
		return;
	if (m->base)
		munmap(m->base, m->map_bytes);
	if (m->fd >= 0)
		close(m->fd);
	free(m->busy);
	free(m->tab);
	free(m);
}

static uint64_t layout_desc_off(void)
{
	return SHM_HDR_BYTES +
	       (uint64_t)TMEM_SHM_MAX_CLIENTS * sizeof(struct shm_client);
}

static uint64_t layout_chunks_off(uint64_t max_chunks)
{
	uint64_t end = layout_desc_off() + max_chunks * sizeof(uint32_t);

	return (end + SHM_CHUNK - 1) / SHM_CHUNK * SHM_CHUNK;
}

static uint64_t hdr_check(const struct shm_hdr *h)
{
	/* From version on: the magic is written after the check. */
	return XXH3_64bits(&h->version, offsetof(struct shm_hdr, check) -
					 offsetof(struct shm_hdr, version));
}

/* Map @fd's reservation and set up the heap side of @m for max_chunks
 * and hwm already in @m. */
static int shm_map(struct tmem_shm *m)
{
	void *p;

	m->chunks_off = layout_chunks_off(m->max_chunks);
	m->map_bytes = m->chunks_off + m->max_chunks * SHM_CHUNK;
	m->busy = calloc((size_t)(m->max_chunks + 63) / 64, sizeof(uint64_t));
	if (!m->busy)
		return -ENOMEM;
	p = mmap(NULL, m->map_bytes, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	m->base = p;
	m->hdr = p;
	m->clients = (struct shm_client *)(m->base + SHM_HDR_BYTES);
	m->desc = (uint32_t *)(m->base + layout_desc_off());
	return 0;
}

int tmem_store_new_shm(const struct tmem_store_config *cfg,
		       uint64_t max_bytes, struct tmem_store **out)
{
	return tmem_store_new_shm_fd(cfg, max_bytes, -1, out);
}

/* A dup of @fd, which must be an empty regular file. */
static int arena_fd(int fd)
{
	struct stat st;
	int nfd;

	if (fstat(fd, &st))
		return errno == EBADF ? -EINVAL : -errno;
	if (!S_ISREG(st.st_mode) || st.st_size)
		return -EINVAL;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return nfd < 0 ? -errno : nfd;
}

int tmem_store_new_shm_fd(const struct tmem_store_config *cfg,
			  uint64_t max_bytes, int fd, struct tmem_store **out)
{
	struct tmem_shm *m;
	struct tmem_store *s;
	struct shm_hdr *h;
	int rc;

	if (!out)
		return -EINVAL;
	if (!max_bytes)
		max_bytes = TMEM_SHM_MAX_BYTES_DEFAULT;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->max_chunks = max_bytes / SHM_CHUNK;
	if (m->max_chunks < SHM_MIN_CHUNKS)
		m->max_chunks = SHM_MIN_CHUNKS;
	if (m->max_chunks > SHM_MAX_CHUNKS)
		m->max_chunks = SHM_MAX_CHUNKS;
	m->fd = fd >= 0 ? arena_fd(fd) : memfd_create("ebb-tmem", MFD_CLOEXEC);
	if (m->fd < 0) {
		rc = fd >= 0 ? m->fd : -errno;
		goto err;
	}
	if (ftruncate(m->fd, (off_t)layout_chunks_off(m->max_chunks))) {
		rc = -errno;
		goto err;
	}
	rc = shm_map(m);
	if (rc)
		goto err;
	rc = store_create(cfg, m, NULL, &s);
	if (rc)
		goto err;
	h = m->hdr;
	h->version = SHM_VERSION;
	h->page_bytes = TMEM_PAGE_SIZE;
	h->chunk_bytes = SHM_CHUNK;
	h->ent_bytes = SHM_ENT_BYTES;
	h->max_clients = TMEM_SHM_MAX_CLIENTS;
	h->store_flags = s->cfg.flags;
	h->max_chunks = m->max_chunks;
	h->clients_off = SHM_HDR_BYTES;
	h->desc_off = layout_desc_off();
	h->chunks_off = m->chunks_off;
	h->seed = s->seed;
	h->check = hdr_check(h);
	COMMIT();	/* the magic says the rest is there */
	h->magic = SHM_MAGIC;
	*out = s;
	return 0;
err:
	shm_unmap(m);
	return rc;
}

int tmem_store_shm_fd(const struct tmem_store *s)
{
	return s && s->shm ? s->shm->fd : -1;
}

/* ---- adoption ---- */

/* Per slab found in step 3. */
struct ld_slab {
	uint32_t head;			/* first chunk */
	uint32_t obj_bytes;		/* class size */
	uint32_t nobj;			/* objects per slab */
	uint32_t nchunks;
	uint32_t zid;			/* zslab id after step 6 */
	uint64_t req_bytes;		/* requested bytes of used objects */
	uint64_t *used;			/* bit per object: in use (step 5),
					 * then: not yet bound (step 7) */
};

struct loader {
	struct tmem_store *s;
	struct tmem_shm *m;
	struct tmem_shm_report rep;
	struct ld_slab *slabs;
	uint32_t nslabs;
	uint32_t *slab_of;		/* per chunk: slab index + 1, 0: none */
	uint64_t nents;			/* entries in table chunks */
	uint64_t nblobs;		/* pass B: blob entries that won */
	/* Per entry: the page record it won in pass A, NULL for free,
	 * dropped and losing entries.  Passes B and C walk this instead of
	 * looking each key up again (two hash and radix-tree walks a page,
	 * a fifth of the adoption time). */
	struct tmem_page **won;
};

static int ld_header(struct tmem_shm *m, int fd, uint32_t *flags,
		     uint64_t *seed)
{
	struct shm_hdr h;
	struct stat st;
	uint64_t size;

	if (fstat(fd, &st))
		return -errno;
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return -EUCLEAN;
	if (h.magic != SHM_MAGIC)
		return -EUCLEAN;
	if (h.version != SHM_VERSION)
		return -EPROTONOSUPPORT;
	if (h.check != hdr_check(&h) || h.page_bytes != TMEM_PAGE_SIZE ||
	    h.chunk_bytes != SHM_CHUNK || h.ent_bytes != SHM_ENT_BYTES ||
	    h.max_clients != TMEM_SHM_MAX_CLIENTS ||
	    h.max_chunks < SHM_MIN_CHUNKS || h.max_chunks > SHM_MAX_CHUNKS ||
	    h.clients_off != SHM_HDR_BYTES || h.desc_off != layout_desc_off() ||
	    h.chunks_off != layout_chunks_off(h.max_chunks) ||
	    (h.store_flags & ~(uint32_t)(TMEM_STORE_CROSS_CLIENT_DEDUP |
					 TMEM_STORE_NO_DEDUP)))
		return -EUCLEAN;
	size = (uint64_t)st.st_size;
	if (size < h.chunks_off || (size - h.chunks_off) % SHM_CHUNK ||
	    (size - h.chunks_off) / SHM_CHUNK > h.max_chunks)
		return -EUCLEAN;
	m->max_chunks = h.max_chunks;
	m->hwm = (size - h.chunks_off) / SHM_CHUNK;
	*flags = h.store_flags;
	*seed = h.seed;
	return 0;
}

/* Step 2. */
static int ld_clients(struct loader *L)
{
	struct tmem_store *s = L->s;
	uint32_t i, pid;
	int rc;

	for (i = 0; i < TMEM_SHM_MAX_CLIENTS; i++) {
		struct shm_client *r = &L->m->clients[i];
		uint32_t check = atomic_load_explicit(&r->check,
						      memory_order_relaxed);
		uint32_t weight = r->weight;
		struct tmem_client *c;
		uint64_t pools;

		if (!check)
			continue;
		if (check != client_check(s, r) || tm_client_find(s, r->id)) {
			atomic_store_explicit(&r->check, 0, memory_order_relaxed);
			L->rep.bad_clients++;
			continue;
		}
		if (!weight || weight > TMEM_WEIGHT_MAX)
			weight = TMEM_WEIGHT_DEFAULT;
		r->name[TMEM_NAME_MAX - 1] = '\0';
		rc = tm_client_create(s, r->id, r->name, weight,
				   r->max_persistent_pages, i + 1, &c);
		if (rc)
			return rc;
		L->rep.clients++;
		pools = r->pools;
		for (pid = 0; pid < TMEM_MAX_POOLS_PER_CLIENT; pid++) {
			if (!(pools >> pid & 1))
				continue;
			rc = tm_pool_create(s, c, TMEM_POOL_PERSISTENT, NULL,
					 &c->pools[pid]);
			if (rc)
				return rc;
			L->rep.pools++;
		}
	}
	return 0;
}

/* Step 3. */
static int ld_chunks(struct loader *L)
{
	struct tmem_shm *m = L->m;
	uint64_t c, i;

	L->slab_of = calloc((size_t)m->hwm + 1, sizeof(*L->slab_of));
	L->slabs = calloc((size_t)m->hwm + 1, sizeof(*L->slabs));
	if (!L->slab_of || !L->slabs)
		return -ENOMEM;
	for (c = 0; c < m->hwm; c++) {
		uint32_t d = m->desc[c], slab_bytes, nobj, n;
		struct ld_slab *sl;

		if (!d)
			continue;
		if (d == DESC_TABLE) {
			if (tab_reserve(m) < 0)
				return -ENOMEM;
			m->tab[m->ntab++] = (uint32_t)c;
			busy_set(m, c, 1, true);
			continue;
		}
		n = DESC_N(d);
		if ((d & DESC_TABLE) || DESC_POS(d) != 0 || n < 1 || n > 4 ||
		    c + n > m->hwm ||
		    zslab_shape(L->s->zs, DESC_OBJ64(d) * 64, &slab_bytes, &nobj) ||
		    slab_bytes != n * SHM_CHUNK)
			goto bad;
		for (i = 1; i < n; i++) {
			if (m->desc[c + i] != DESC_SLAB(DESC_OBJ64(d), n, i))
				goto bad;
		}
		sl = &L->slabs[L->nslabs];
		sl->head = (uint32_t)c;
		sl->obj_bytes = DESC_OBJ64(d) * 64;
		sl->nobj = nobj;
		sl->nchunks = n;
		for (i = 0; i < n; i++)
			L->slab_of[c + i] = L->nslabs + 1;
		L->nslabs++;
		c += n - 1;
		continue;
bad:
		/* Not a slab head, or a broken one: whatever tails follow
		 * are caught by the same test and freed in step 6. */
		L->rep.bad_chunks++;
	}
	L->nents = (uint64_t)m->ntab * SHM_ENTS_PER_CHUNK;
	L->won = calloc((size_t)L->nents + 1, sizeof(*L->won));
	return L->won ? 0 : -ENOMEM;
}

/* The slab and object index holding a blob at file offset @off of a
 * @len-byte payload, or NULL if it is not a valid slot for one. */
static struct ld_slab *ld_slot(struct loader *L, uint64_t off, uint32_t len,
			       uint32_t *idx)
{
	struct tmem_shm *m = L->m;
	struct ld_slab *sl;
	uint64_t c, rel;

	if (off < m->chunks_off || off >= m->chunks_off + m->hwm * SHM_CHUNK)
		return NULL;
	c = (off - m->chunks_off) / SHM_CHUNK;
	if (!L->slab_of[c])
		return NULL;
	sl = &L->slabs[L->slab_of[c] - 1];
	rel = off - m->chunks_off - (uint64_t)sl->head * SHM_CHUNK;
	if (rel % sl->obj_bytes || rel / sl->obj_bytes >= sl->nobj ||
	    zslab_class_bytes(L->s->zs, sizeof(struct blob) + len) !=
	    sl->obj_bytes)
		return NULL;
	*idx = (uint32_t)(rel / sl->obj_bytes);
	return sl;
}

static void ld_drop(struct loader *L, uint64_t n)
{
	atomic_store_explicit(&ent_at(L->m, n)->check, 0, memory_order_relaxed);
	L->rep.bad_entries++;
}

static struct tmem_pool *ld_pool(struct loader *L, const struct shm_ent *e)
{
	struct tmem_client *c = tm_client_find(L->s, e->client_id);

	if (!c || e->pool_id >= TMEM_MAX_POOLS_PER_CLIENT)
		return NULL;
	return c->pools[e->pool_id];
}

/* Step 4 for entry @n. */
static int ld_entry_a(struct loader *L, uint64_t n)
{
	struct tmem_store *s = L->s;
	struct shm_ent *e = ent_at(L->m, n);
	uint32_t check = atomic_load_explicit(&e->check, memory_order_relaxed);
	struct tmem_pool *pool;
	struct tmem_page *pg;
	struct tmem_oid oid;
	struct tmem_obj *o;
	uint32_t idx;
	uint64_t h;
	int rc;

	if (!check)
		return 0;
	pool = ld_pool(L, e);
	if (check != rec_check(s, e, sizeof(*e)) || !pool ||
	    (e->kind == ENT_ZERO && (e->len || e->blob_off)) ||
	    (e->kind == ENT_BLOB &&
	     (!e->len || e->len > TMEM_PAGE_SIZE ||
	      !ld_slot(L, e->blob_off, e->len, &idx))) ||
	    (e->kind != ENT_ZERO && e->kind != ENT_BLOB)) {
		ld_drop(L, n);
		return 0;
	}
	if (e->seq > L->m->seq)
		L->m->seq = e->seq;
	/* The key's object and page record, if an earlier entry made them
	 * (the object, for one swap device, nearly always). */
	memcpy(oid.w, e->oid, sizeof(oid.w));
	h = oid_hash(s, &oid);
	o = obj_find(pool, &oid, h);
	pg = o ? rt_lookup(o, e->index) : NULL;
	if (pg) {
		struct shm_ent *other = ent_at(L->m, pg->shm_ent - 1);

		/* R4: the newer one wins; equal seqs cannot both be real. */
		if (other->seq >= e->seq) {
			atomic_store_explicit(&e->check, 0, memory_order_relaxed);
			L->rep.stale_entries++;
			return 0;
		}
		atomic_store_explicit(&other->check, 0, memory_order_relaxed);
		L->rep.stale_entries++;
		L->won[pg->shm_ent - 1] = NULL;
		L->won[n] = pg;
		pg->shm_ent = n + 1;
		return 0;
	}
	if (!o) {
		rc = obj_new(s, pool, &oid, h, &o);
		if (rc)
			return rc;
	}
	pg = meta_alloc(s, pool->dom, sizeof(*pg));
	if (!pg) {
		rc = -ENOMEM;
		goto err_obj;
	}
	memset(pg, 0, sizeof(*pg));
	pg->obj = o;
	pg->index = e->index;
	pg->state = PG_EMPTY;
	rc = rt_insert(s, pool->dom, o, e->index, pg);
	if (rc) {
		meta_free(s, pool->dom, pg, sizeof(*pg));
		goto err_obj;
	}
	o->npages++;
	pg->shm_ent = n + 1;
	L->won[n] = pg;
	return 0;
err_obj:
	if (!o->npages)
		obj_unlink_free(s, o);
	return rc;
}

/* The live entry that won its key in step 4, with its pool and page;
 * false for free, dropped or losing entries. */
static bool ld_winner(struct loader *L, uint64_t n, struct shm_ent **e,
		      struct tmem_pool **pool, struct tmem_page **pg)
{
	*pg = L->won[n];
	if (!*pg)
		return false;
	*e = ent_at(L->m, n);
	*pool = (*pg)->obj->pool;
	return true;
}

/* Entry @n, winner of its key, fails a later check: the page goes. */
static void ld_lose(struct loader *L, uint64_t n, struct tmem_page *pg)
{
	ld_drop(L, n);
	L->won[n] = NULL;
	pg->shm_ent = 0;
	page_free(L->s, pg);	/* EMPTY: no content to release */
}

/* Step 5 for entry @n: its slot is in use (content: shm_verify). */
static int ld_entry_b(struct loader *L, uint64_t n)
{
	struct tmem_pool *pool;
	struct tmem_page *pg;
	struct shm_ent *e;
	struct ld_slab *sl;
	const struct blob *b;
	uint32_t idx;

	if (!ld_winner(L, n, &e, &pool, &pg) || e->kind != ENT_BLOB)
		return 0;
	sl = ld_slot(L, e->blob_off, e->len, &idx);
	b = (const struct blob *)(L->m->base + e->blob_off);
	if (b->len != e->len)
		goto bad;
	if (!sl->used) {
		sl->used = calloc((sl->nobj + 63) / 64, sizeof(uint64_t));
		if (!sl->used)
			return -ENOMEM;
	}
	if (!(sl->used[idx / 64] >> (idx % 64) & 1)) {
		sl->used[idx / 64] |= 1ull << (idx % 64);
		sl->req_bytes += sizeof(struct blob) + b->len;
		L->nblobs++;
	}
	return 0;
bad:
	ld_lose(L, n, pg);
	return 0;
}

/* Step 6. */
static int ld_slabs(struct loader *L)
{
	struct tmem_shm *m = L->m;
	uint64_t c;
	uint32_t i;
	int rc;

	for (i = 0; i < L->nslabs; i++) {
		struct ld_slab *sl = &L->slabs[i];

		if (!sl->used)
			continue;
		rc = zslab_adopt(L->s->zs, chunk_addr(m, sl->head),
				 sl->obj_bytes, sl->used, sl->req_bytes,
				 &sl->zid);
		if (rc)
			return rc;
		busy_set(m, sl->head, sl->nchunks, true);
	}
	for (c = 0; c < m->hwm; c++) {
		if (!busy_get(m, c) && m->desc[c]) {
			chunks_release(m, c, 1);
			L->rep.freed_chunks++;
		}
	}
	return 0;
}

/* Step 7 for entry @n. */
static int ld_entry_c(struct loader *L, uint64_t n)
{
	struct tmem_store *s = L->s;
	struct tmem_pool *pool;
	struct tmem_page *pg;
	struct shm_ent *e;
	struct ld_slab *sl;
	struct blob *b;
	uint64_t h;
	uint32_t idx;
	int rc;

	if (!ld_winner(L, n, &e, &pool, &pg))
		return 0;
	if (e->kind == ENT_ZERO) {
		pg->state = PG_ZERO;
		page_count(s, pool, PG_ZERO, 0, +1);
		L->rep.pages++;
		return 0;
	}
	sl = ld_slot(L, e->blob_off, e->len, &idx);
	h = zslab_handle(sl->zid, idx);
	b = blob_at(s, h);
	if (sl->used[idx / 64] >> (idx % 64) & 1) {
		sl->used[idx / 64] &= ~(1ull << (idx % 64));
		blob_adopt(s, h, pool->dom, e->hash);
	} else if (b->hash != (s->dedup ? e->hash : b->hash) ||
		   (!s->cross && b->dom != pool->dom)) {
		/* Two domains on one blob outside cross mode, or one blob
		 * under two hashes: not something a store writes. */
		goto bad;
	} else {
		rc = blob_ref(s, h, pool->dom);
		if (rc)
			return rc;
	}
	pg->state = PG_BLOB;
	pg->blob = h;
	pg->unverified = 1;
	page_count(s, pool, PG_BLOB, b->len, +1);
	L->rep.pages++;
	return 0;
bad:
	ld_lose(L, n, pg);
	return 0;
}

/* How many entries ahead passes B and C start loading what they will
 * touch: enough to cover a memory access with the work of the entries in
 * between, few enough that the lines are still in cache when used. */
#define LD_AHEAD	16

/* Passes B and C touch each winner's blob header (reading, then writing
 * it) and C its dedup bucket: cache misses at random addresses, one or
 * two a page, which in a plain loop cost more than all the other work
 * together.  Asked for LD_AHEAD entries early they overlap. */
static void ld_prefetch(struct loader *L, uint64_t n, bool bucket)
{
	struct tmem_page *pg = L->won[n];
	const struct shm_ent *e;

	if (!pg)
		return;
	e = ent_at(L->m, n);
	if (e->kind != ENT_BLOB || e->blob_off >= L->m->map_bytes)
		return;
	if (bucket) {
		__builtin_prefetch(L->m->base + e->blob_off, 1);
		dd_prefetch(L->s, e->hash, pg->obj->pool->dom);
	} else {
		__builtin_prefetch(L->m->base + e->blob_off, 0);
	}
}

static int ld_entries(struct loader *L, int (*fn)(struct loader *, uint64_t))
{
	bool bucket = fn == ld_entry_c;
	uint64_t n;
	int rc;

	for (n = 0; n < L->nents; n++) {
		if (fn != ld_entry_a && n + LD_AHEAD < L->nents)
			ld_prefetch(L, n + LD_AHEAD, bucket);
		rc = fn(L, n);
		if (rc)
			return rc;
	}
	return 0;
}

static void ld_free_list(struct loader *L)
{
	uint64_t n;

	for (n = L->nents; n-- > 0;) {
		if (!atomic_load_explicit(&ent_at(L->m, n)->check,
					  memory_order_relaxed))
			ent_push_free(L->m, n);
	}
}

int tmem_store_adopt_shm(int fd, const struct tmem_store_config *cfg,
			 struct tmem_store **out, struct tmem_shm_report *rep)
{
	struct tmem_store_config c = { 0 };
	struct loader L = { 0 };
	struct tmem_shm *m;
	uint64_t seed;
	uint32_t i;
	int rc;

	if (fd < 0 || !out)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (m->fd < 0) {
		rc = errno == EBADF ? -EINVAL : -errno;
		free(m);
		return rc;
	}
	if (cfg)
		c = *cfg;
	rc = ld_header(m, m->fd, &c.flags, &seed);	/* 1. */
	if (rc)
		goto err_map;
	rc = shm_map(m);
	if (rc)
		goto err_map;
	rc = store_create(&c, m, &seed, &L.s);
	if (rc)
		goto err_map;
	L.m = m;
	pthread_mutex_lock(&L.s->lock);
	rc = ld_clients(&L);				/* 2. */
	if (!rc)
		rc = ld_chunks(&L);			/* 3. */
	if (!rc)
		rc = ld_entries(&L, ld_entry_a);	/* 4. */
	if (!rc)
		rc = ld_entries(&L, ld_entry_b);	/* 5. */
	if (!rc)
		rc = ld_slabs(&L);			/* 6. */
	/* The dedup index sized once for every blob pass C inserts: grown
	 * by doubling instead, its rehashes walked the blobs twice over,
	 * a random access into the arena each (a third of an upgrade's
	 * pause with 300 000 pages). */
	if (!rc)
		dd_reserve(L.s, L.nblobs);
	if (!rc)
		rc = ld_entries(&L, ld_entry_c);	/* 7. */
	if (!rc) {
		ld_free_list(&L);
		charges_flush(L.s);
	}
	pthread_mutex_unlock(&L.s->lock);
	for (i = 0; i < L.nslabs; i++)
		free(L.slabs[i].used);
	free(L.slabs);
	free(L.slab_of);
	free(L.won);
	if (rc) {
		tmem_store_free(L.s);	/* detaches: leaves the memfd be */
		return rc;
	}
	if (rep)
		*rep = L.rep;
	*out = L.s;
	return 0;
err_map:
	shm_unmap(m);
	return rc;
}
