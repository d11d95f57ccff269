/*
 * tmem: the host page store behind transcendent memory (Xen tmem semantics):
 * guests put 4 KiB pages into pools and get them back later; the store keeps
 * them compressed (lz4, optionally zstd) and deduplicated, and the host
 * decides how many it keeps.
 *
 * Owns: clients (one per guest), their pools, every stored page, the
 * compressed blobs (in zslab size-class slabs) and the dedup index.  Pages
 * are copied in on put and copied out on get; the store never keeps a
 * pointer to caller memory.
 *
 * Vocabulary:
 *   client   a guest, named by a caller-chosen 32-bit id plus a name.
 *   pool     a client's container of pages, named by a small per-client id
 *            (0..TMEM_MAX_POOLS_PER_CLIENT-1, like a file descriptor).
 *            Ephemeral (clean cache: the host may drop pages at any time)
 *            or persistent (swap: kept until flushed or the pool dies);
 *            private or shared.  A shared pool is named by a 128-bit UUID
 *            and another client joins it only by presenting that UUID; it
 *            then gets its own pool id for it.
 *   handle   (pool id, 192-bit object id, 32-bit page index).
 *
 * Semantics (the contract the guest drivers rely on):
 *   - get from a private ephemeral pool is exclusive: the page leaves the
 *     pool.  get from persistent or shared pools is not.
 *   - put to a handle that holds a page replaces it.  A put that fails, for
 *     any reason, leaves no page at that handle: never a stale older copy.
 *   - persistent pages are never dropped while their pool lives.  A
 *     persistent put beyond the client's max_persistent_pages, or whose
 *     growth the charge hook refuses even after evicting ephemeral pages,
 *     fails with -ENOSPC.
 *   - ephemeral pages may vanish at any time (eviction, tmem_shrink).  The
 *     victim is the least recently used ephemeral page of the client
 *     furthest over its weight, i.e. with the most ephemeral pages per unit
 *     of weight.
 *   - pool ids are per client, so no client can name another's private
 *     pool: an id it has not opened is -EBADF.
 *
 * Storage: an all-zero page is a flag on its descriptor (no blob).  Any
 * other page is hashed (XXH3-64, keyed by a per-store random seed) and
 * looked up in the dedup index; a candidate is shared only after a full
 * byte comparison of its decompressed content.  Otherwise the page is
 * compressed and stored raw if the result is larger than
 * raw_threshold_bytes (default 3/4 page).  Dedup is within a client (more
 * exactly, within a charge domain, below) unless the store was created
 * with TMEM_STORE_CROSS_CLIENT_DEDUP: sharing across guests is a timing
 * side channel (a fast put tells a guest another guest holds that page),
 * so it is off by default.
 *
 * Accounting rule.  Charges are bytes of host memory and are attributed
 * through charge domains: each client has one domain for its private
 * pools, and each shared pool is a domain of its own, charged to the pool's
 * current owner (its creator, then the longest-standing remaining sharer).
 * A domain is charged
 *   - for each distinct blob its pages reference: the blob's slab object
 *     size (its size class: compressed bytes + 40-byte header, rounded up
 *     to 64), once, however many of its pages share the blob;
 *   - for each page: sizeof its descriptor (also for zero pages);
 *   - for each object and each radix-tree node: sizeof the record.
 * So in-domain dedup lowers the charge; cross-domain sharing does not:
 * every domain referencing a blob pays for it as if it were alone, which
 * keeps the charge side-channel-free and means no client ever pays for a
 * page it does not hold.  The sum of charges is therefore >= the memory
 * the store really uses for blobs, except for what no client is charged:
 * slab slack (free slots and slab tails, see slab_frag_pct), client and
 * pool records and hash-table bucket arrays (O(clients + pools + objects)).
 *
 * The charge hook (store config) is told every change of a client's charge,
 * netted per operation: a put that replaces a 2 KiB blob with a 1 KiB one
 * reports -1 KiB.  It may refuse growth (nonzero return) only on a put;
 * the store then evicts ephemeral pages one at a time (at most
 * TMEM_EVICT_MAX_PER_PUT, victims by the rule above, possibly the putting
 * client's own) and asks again, and fails the put with -ENOSPC if still
 * refused.  Decreases, and the increase a new owner receives when a shared
 * pool changes hands, cannot be refused (the return is ignored).  The hook
 * runs with the store lock held and must not call back into the store.
 * Sum of all deltas told for a client == its stats.charged_bytes, provided
 * the hook counts the unrefusable ones even when it returns nonzero.
 *
 * Threading: one mutex per store serialises every call (compression
 * included), so any thread may call any function.  Simple and correct;
 * the known cost is that puts from several worker threads do not compress
 * in parallel.
 *
 * Errors: every function returns 0 or -errno.  Common ones: -EINVAL (bad
 * argument, size != TMEM_PAGE_SIZE, bad flags), -ESRCH (unknown client),
 * -EBADF (pool id not open for this client), -ENOENT (no such page or
 * object), -ENOSPC (quota or charge refused), -ENOMEM.
 */
#ifndef EBB_TMEM_H
#define EBB_TMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagecomp.h"

#define TMEM_PAGE_SIZE			4096u
#define TMEM_MAX_POOLS_PER_CLIENT	64u
#define TMEM_NAME_MAX			32u	/* client name, NUL included */
#define TMEM_WEIGHT_DEFAULT		100u
#define TMEM_WEIGHT_MAX			(1u << 20)
#define TMEM_EVICT_MAX_PER_PUT		64u	/* evictions one put may cause */

/* tmem_pool_new() flags. */
enum {
	TMEM_POOL_PERSISTENT	= 1u << 0,	/* else ephemeral */
	TMEM_POOL_SHARED	= 1u << 1,	/* else private; needs a UUID */
};

/* tmem_store_config.flags. */
enum {
	TMEM_STORE_CROSS_CLIENT_DEDUP	= 1u << 0,	/* share blobs across domains */
	TMEM_STORE_NO_DEDUP		= 1u << 1,	/* never share (benchmarks) */
};

struct tmem_store;

struct tmem_oid {
	uint64_t w[3];		/* 192-bit object id, opaque to the store */
};

struct tmem_uuid {
	uint8_t b[16];		/* all-zero is "no UUID" */
};

/* Return 0 to accept @delta_bytes of growth for @client_id, nonzero
 * (conventionally -ENOMEM) to refuse.  See "Accounting rule". */
typedef int (*tmem_charge_fn)(void *opaque, uint32_t client_id,
			      int64_t delta_bytes);

struct tmem_store_config {
	const struct pagecomp_ops *comp;	/* NULL: &pagecomp_lz4 */
	uint32_t flags;				/* TMEM_STORE_* */
	uint32_t raw_threshold_bytes;		/* compressed > this: store raw;
						 * 0: 3/4 page; max 4096 */
	tmem_charge_fn charge;			/* NULL: accept everything */
	void *charge_opaque;			/* first argument of charge */
};

struct tmem_client_params {
	uint32_t weight;		/* ephemeral share, 1..TMEM_WEIGHT_MAX;
					 * 0: TMEM_WEIGHT_DEFAULT */
	uint64_t max_persistent_pages;	/* pages in persistent pools it is
					 * charged for; 0: unlimited */
};

/* Counters for one client, or (tmem_store_stats.total) the whole store. */
struct tmem_stats {
	uint64_t persistent_pages;	/* pages in persistent pools */
	uint64_t ephemeral_pages;	/* pages in ephemeral pools */
	uint64_t zero_pages;		/* of those: all-zero, no storage */
	uint64_t raw_pages;		/* of those: incompressible, stored raw */
	uint64_t logical_bytes;		/* all pages * TMEM_PAGE_SIZE */
	uint64_t compressed_bytes;	/* payload bytes of every non-zero page,
					 * before dedup (raw pages count 4096) */
	uint64_t stored_bytes;		/* payload bytes of distinct blobs, after
					 * dedup (client: per domain; total:
					 * each blob once) */
	uint64_t charged_bytes;		/* current charge, see accounting rule */
	uint64_t puts;			/* tmem_put calls */
	uint64_t gets;			/* tmem_get calls */
	uint64_t hits;			/* gets that returned a page */
	uint64_t misses;		/* gets that found none (-ENOENT) */
	uint64_t flushes;		/* pages removed by flush_page/object */
	uint64_t evictions;		/* ephemeral pages dropped by the store */
	uint64_t refused_puts;		/* puts failed with -ENOSPC */
	double compression_ratio;	/* non-zero logical / compressed; 0: none */
	double dedup_ratio;		/* compressed / stored; 0: none */
};

struct tmem_store_stats {
	const char *compressor;		/* its pagecomp_ops name */
	struct tmem_stats total;	/* counters summed over clients */
	uint64_t clients;
	uint64_t pools;			/* shared pools counted once */
	uint64_t objects;
	uint64_t blobs;			/* distinct stored blobs */
	uint64_t meta_bytes;		/* page, object and radix-node records */
	uint64_t slabs;			/* blob slabs held (empty spares too) */
	uint64_t slab_bytes;		/* memory held in blob slabs */
	uint64_t slab_used_bytes;	/* bytes of it holding blobs + headers */
	double slab_frag_pct;		/* 100 * (slab - used) / slab; 0: empty */
	/* Latency of tmem_put / tmem_get calls since the store was made,
	 * lock wait included: one call in 8 is timed (put_timed, get_timed
	 * of them so far); percentiles within 1/32 (src/lathist.h), 0 when
	 * nothing was timed yet. */
	uint64_t put_timed, put_p50_ns, put_p99_ns;
	uint64_t get_timed, get_p50_ns, get_p99_ns;
};

/* Create a store.  @cfg may be NULL (lz4, defaults, no hook). */
int tmem_store_new(const struct tmem_store_config *cfg, struct tmem_store **out);
/* Destroy the store and everything in it.  The charge hook is not called.
 * NULL is a no-op. */
void tmem_store_free(struct tmem_store *s);

/* Register a client.  @name may be NULL; longer names are truncated.
 * @p may be NULL (defaults).  -EEXIST if the id is taken; -ENOSPC on a
 * memfd store holding TMEM_SHM_MAX_CLIENTS already. */
int tmem_client_new(struct tmem_store *s, uint32_t client_id, const char *name,
		    const struct tmem_client_params *p);
/* Change weight and quota.  Lowering the quota below the current count
 * drops nothing; further persistent puts of new pages fail until below. */
int tmem_client_set_params(struct tmem_store *s, uint32_t client_id,
			   const struct tmem_client_params *p);
/* Close every pool of the client (private ones are destroyed) and forget
 * it.  Its remaining charge is released through the hook. */
int tmem_client_destroy(struct tmem_store *s, uint32_t client_id);

/* Open a pool for @client_id.  @flags: TMEM_POOL_*.  A shared pool needs a
 * non-zero @uuid: the first client to present it creates the pool, later
 * ones join it (same persistence flag required, else -EINVAL); a client that
 * has it open already gets its existing id.  @uuid is ignored for private
 * pools.  -EMFILE when the client has TMEM_MAX_POOLS_PER_CLIENT open. */
int tmem_pool_new(struct tmem_store *s, uint32_t client_id, uint32_t flags,
		  const struct tmem_uuid *uuid, uint32_t *pool_id);
/* Close @pool_id.  A private pool, or a shared pool's last user, destroys
 * the pool and all its pages; otherwise the client just leaves (and if it
 * owned the pool, ownership and charge pass to the next sharer). */
int tmem_pool_destroy(struct tmem_store *s, uint32_t client_id,
		      uint32_t pool_id);

/* Copy @len (== TMEM_PAGE_SIZE) bytes from @page into the handle. */
int tmem_put(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
	     const struct tmem_oid *oid, uint32_t index,
	     const void *page, size_t len);
/* Copy the page at the handle into @page (@len == TMEM_PAGE_SIZE).
 * -ENOENT if there is none (@page untouched). */
int tmem_get(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
	     const struct tmem_oid *oid, uint32_t index,
	     void *page, size_t len);
/* Drop one page / every page of an object.  -ENOENT if absent. */
int tmem_flush_page(struct tmem_store *s, uint32_t client_id, uint32_t pool_id,
		    const struct tmem_oid *oid, uint32_t index);
int tmem_flush_object(struct tmem_store *s, uint32_t client_id,
		      uint32_t pool_id, const struct tmem_oid *oid);

/* The host needs memory: evict ephemeral pages by the eviction rule until
 * at least @bytes of charge are released or none are left.  *@freed_bytes
 * (may be NULL) gets the charge released.  Host memory returned may be
 * less: a slab goes back only when all its objects are gone. */
int tmem_shrink(struct tmem_store *s, uint64_t bytes, uint64_t *freed_bytes);

int tmem_client_stats(struct tmem_store *s, uint32_t client_id,
		      struct tmem_stats *out);
int tmem_store_stats(struct tmem_store *s, struct tmem_store_stats *out);

/*
 * The timed puts (@get false) or gets as a histogram: cumulative counts
 * at @le_ns[0..@n) (lathist_cumulative()), the number timed and the sum
 * of their times.  Fixed cost (one walk over the histogram's buckets,
 * under the store's lock).  0 or -errno.
 */
int tmem_store_latency(struct tmem_store *s, bool get, const uint64_t *le_ns,
		       unsigned n, uint64_t *cum, uint64_t *count,
		       uint64_t *sum_ns);

/* ---- persistence across a restart: the store in a memfd ---- */

/*
 * A store can keep what a restart must not lose in a memfd (its "arena")
 * instead of only in the process heap, so that a new process handed the
 * fd (by ebb's fd holder) gets every persistent page back, even after the
 * old one died with SIGKILL at any instruction.
 *
 * In the memfd, at file offsets (never pointers; a new process maps it
 * anywhere): a header; one record per client (id, name, weight, quota,
 * which pool ids are private persistent pools); every blob (the slabs
 * themselves); and a key table, one fixed-size checksummed entry per page
 * of a private persistent pool {client, pool, oid, index, seq, blob
 * offset, length, content hash}.  The indexes (object hashes, radix trees,
 * dedup chains, LRU) stay in the heap and are rebuilt on adoption.
 *
 * Survives a restart: clients, their private persistent pools (same pool
 * ids) and every page in them.  Does not: ephemeral pools and their pages
 * (a clean cache: by tmem semantics any ephemeral get may miss), shared
 * pools of either kind (no user of ebb keeps persistent pages in one),
 * counters of calls (puts, gets, ...), latency histograms.
 *
 * Adoption trusts nothing in the memfd: every offset, length, class and
 * checksum is checked, and what fails is dropped and counted in
 * tmem_shm_report; a dropped page is simply absent (a persistent get
 * returns -ENOENT), never wrong.  A page's content is compared with its
 * recorded hash at its first get instead of at adoption (which would cost
 * a decompression per page while every guest waits): if it does not
 * match, that get returns -EIO, never wrong data.  Charges, counts, blob
 * references and the dedup index are recomputed; the charge hook is told
 * each restored client's charge as one unrefusable increase before
 * adoption returns.
 *
 * Only one process may use a memfd at a time: the caller makes sure the
 * old store's process is gone before adopting.
 */

#define TMEM_SHM_MAX_CLIENTS	1024u	/* client records in an arena */
#define TMEM_SHM_MAX_BYTES_DEFAULT	(64ull << 30)	/* address space */

struct tmem_shm_report {
	uint64_t clients;		/* clients restored */
	uint64_t pools;			/* persistent pools restored */
	uint64_t pages;			/* persistent pages restored */
	uint64_t bad_clients;		/* client records failing a check */
	uint64_t bad_entries;		/* page entries failing a check: pages
					 * lost (checksum, key, offset, class,
					 * content hash), or left by a pool or
					 * client teardown cut short */
	uint64_t stale_entries;		/* older entries of a key that has a
					 * newer one (a replace cut short) */
	uint64_t bad_chunks;		/* arena chunks with a bad descriptor */
	uint64_t freed_chunks;		/* chunks holding nothing restored
					 * (ephemeral blobs, spare slabs),
					 * given back to the host */
};

/*
 * Create a store whose arena is a new memfd ("ebb-tmem"), reserving
 * @max_bytes of address space for it (0: TMEM_SHM_MAX_BYTES_DEFAULT; the
 * memfd grows with ftruncate as blobs need room and freed slabs are
 * hole-punched, so only what is used costs memory).  Otherwise like
 * tmem_store_new().  The store owns the fd (tmem_store_shm_fd()).
 */
int tmem_store_new_shm(const struct tmem_store_config *cfg,
		       uint64_t max_bytes, struct tmem_store **out);
/*
 * The same with the arena in @fd, an empty regular file the store dups
 * (the caller keeps its own): ebbd passes a file on a huge-page tmpfs
 * (hugeram_tmpfile()), whose 2 MiB pages a new process maps 512 at a time
 * where a memfd's are mapped one by one, which at 300 000 stored pages is
 * most of what adoption costs.  -EINVAL if @fd is not an empty file.
 */
int tmem_store_new_shm_fd(const struct tmem_store_config *cfg,
			  uint64_t max_bytes, int fd, struct tmem_store **out);
/*
 * Create a store from the arena in @fd, made by tmem_store_new_shm() in
 * this or an earlier process.  The store dups @fd (the caller keeps its
 * own).  @cfg as for tmem_store_new() except flags, which are the arena's
 * (dedup scope must not change under existing blobs); cfg->flags is
 * ignored.  @rep (may be NULL) gets what was found.
 * Restored clients are live: call tmem_client_* with their ids, and
 * destroy the ones nobody claims (tmem_store_client_ids()).
 * -EINVAL (bad fd or arguments), -EUCLEAN (not an arena, or its header
 * fails a check), -EPROTONOSUPPORT (another layout version), -ENOMEM, or
 * mmap's errno.  On failure the memfd is left as it was found, except
 * that records that failed a check may have been cleared.
 */
int tmem_store_adopt_shm(int fd, const struct tmem_store_config *cfg,
			 struct tmem_store **out, struct tmem_shm_report *rep);
/* The arena's memfd (owned by the store: dup it to keep it), or -1 for a
 * heap-only store.  What the caller must hold on to across a restart.
 * Note: tmem_store_free() of a memfd store keeps every record in the
 * memfd (it only unmaps); tmem_client_destroy/tmem_pool_destroy/flushes
 * do remove theirs. */
int tmem_store_shm_fd(const struct tmem_store *s);
/* Ids of every client, in creation (adoption: record) order: up to @cap
 * into @ids, the total into *@n. */
int tmem_store_client_ids(struct tmem_store *s, uint32_t *ids, size_t cap,
			  size_t *n);
/* TMEM_POOL_* flags of an open pool.  -ESRCH, -EBADF. */
int tmem_pool_flags(struct tmem_store *s, uint32_t client_id,
		    uint32_t pool_id, uint32_t *flags);
/* Call @fn for every page index the object holds (any order), under the
 * store's lock (@fn must not call the store).  -ESRCH, -EBADF; an absent
 * object calls nothing and returns 0. */
int tmem_object_indexes(struct tmem_store *s, uint32_t client_id,
			uint32_t pool_id, const struct tmem_oid *oid,
			void (*fn)(void *arg, uint32_t index), void *arg);

/* ---- for tests ---- */

struct tmem_debug {
	uint64_t allocs;	/* allocation attempts since creation */
	uint64_t live_allocs;	/* allocations not yet freed */
	uint64_t injected;	/* failures injected so far */
};

/* Make the @nth allocation attempt from now fail (1: the next one); 0
 * disarms.  Every allocation of the store goes through this counter:
 * records, hash tables, slabs and their tables. */
int tmem_debug_fail_alloc(struct tmem_store *s, uint64_t nth);
int tmem_debug_get(struct tmem_store *s, struct tmem_debug *out);
/* Walk everything and check counters, charges, refcounts, LRU lists and
 * the slab allocator against each other.  0 or -EUCLEAN.  O(everything). */
int tmem_check(struct tmem_store *s);

#endif
