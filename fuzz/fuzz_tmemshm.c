/*
 * libFuzzer target: adoption of a tmem store's memfd arena
 * (tmem_store_adopt_shm).  The arena outlives the process that wrote it;
 * a bug, a stray write or an older ebbd may have left any bytes in it,
 * and adoption must never crash or hand out a page that was not put.
 *
 * Input: edits to a well-formed arena built once at start-up (two
 * clients, persistent and ephemeral pools, zero, compressible, raw and
 * deduplicated pages, a replace and a flush).  The input is a list of
 * 8-byte edits {u32 offset, u8 xor, u8 target, u16 spare}: target picks
 * the region the offset falls into (header, client records, chunk
 * descriptors, chunks), so edits land where the checks are.  If the
 * input's length is odd, the edited arena is resealed afterwards (header,
 * client and entry check words recomputed, as the writer would), so that
 * the checks behind the checksums get fuzzed too.
 *
 * Oracle, beyond ASan/UBSan: adoption fails with -EUCLEAN or
 * -EPROTONOSUPPORT, or it succeeds and tmem_check() passes, and every
 * page of the model reads back as put or not at all (absent, or an I/O
 * error at its first read when its content is damaged); then the adopted
 * store takes puts and flushes and is freed cleanly.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xxhash.h>

#include "tmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PG		TMEM_PAGE_SIZE
#define NKEYS		48u
#define CHUNK		(64u << 10)
/* Layout facts the resealer needs (tmem_shm.c's header comment). */
#define HDR_CHECK_OFF	80u
#define HDR_SEED_OFF	72u
#define HDR_DESC_OFF	48u
#define HDR_CHUNKS_OFF	56u
#define CLIENTS_OFF	4096u
#define NCLIENT_RECS	1024u
#define DESC_TABLE	0x80000000u

static uint8_t *arena;		/* the well-formed arena */
static size_t arena_len;
static uint32_t model[NKEYS];	/* content value per key, 0: absent */
static uint32_t pers_pool[2];

static void make_page(uint8_t *p, uint32_t v)
{
	size_t i;

	if (v == 1) {
		memset(p, 0, PG);
		return;
	}
	for (i = 0; i < PG; i++)
		p[i] = v % 2 ? (uint8_t)("arena "[i % 6] + v) :
			       (uint8_t)((i * 2654435761u + v * 40503u) >> 13);
}

static struct tmem_oid oid_of(unsigned k)
{
	struct tmem_oid o = { { k / 16, 7, 9 } };

	return o;
}

static void put_key(struct tmem_store *s, unsigned k, uint32_t v)
{
	uint8_t page[PG];
	struct tmem_oid o = oid_of(k);

	make_page(page, v);
	if (tmem_put(s, 1 + k % 2, pers_pool[k % 2], &o, k, page, PG))
		abort();
	model[k] = v;
}

static void build(void)
{
	struct tmem_store *s;
	struct tmem_oid o = oid_of(0);
	uint8_t page[PG];
	uint32_t eph;
	unsigned k, c;
	int fd;

	if (tmem_store_new_shm(NULL, 4u << 20, &s))
		abort();
	for (c = 0; c < 2; c++) {
		if (tmem_client_new(s, 1 + c, "fuzz", NULL) ||
		    tmem_pool_new(s, 1 + c, TMEM_POOL_PERSISTENT, NULL,
				  &pers_pool[c]) ||
		    tmem_pool_new(s, 1 + c, 0, NULL, &eph))
			abort();
		make_page(page, 1001);
		if (tmem_put(s, 1 + c, eph, &o, 3, page, PG))
			abort();
	}
	for (k = 0; k < NKEYS; k++)
		put_key(s, k, 1 + k % 7);	/* zero, dedup, raw */
	put_key(s, 5, 77);			/* a replace */
	if (tmem_flush_page(s, 1 + 6 % 2, pers_pool[0], &(struct tmem_oid){
			{ 0, 7, 9 } }, 6))
		abort();
	model[6] = 0;
	fd = tmem_store_shm_fd(s);
	arena_len = (size_t)lseek(fd, 0, SEEK_END);
	arena = malloc(arena_len);
	if (!arena || pread(fd, arena, arena_len, 0) != (ssize_t)arena_len)
		abort();
	tmem_store_free(s);
}

static uint64_t get64(const uint8_t *b, size_t off)
{
	uint64_t v;

	memcpy(&v, b + off, 8);
	return v;
}

static void put32(uint8_t *b, size_t off, uint32_t v)
{
	memcpy(b + off, &v, 4);
}

/* Recompute every check word as the writer would.  Records with a check
 * of 0 (free) stay free. */
static void reseal(uint8_t *b, size_t len)
{
	uint64_t seed = get64(b, HDR_SEED_OFF), sum;
	uint64_t desc_off = get64(b, HDR_DESC_OFF);
	uint64_t chunks_off = get64(b, HDR_CHUNKS_OFF), c, nchunks;
	unsigned i;

	sum = XXH3_64bits(b + 8, HDR_CHECK_OFF - 8);
	memcpy(b + HDR_CHECK_OFF, &sum, 8);
	for (i = 0; i < NCLIENT_RECS; i++) {
		uint8_t *r = b + CLIENTS_OFF + (size_t)i * 64;

		if (get64(r, 0) & 0xffffffffu)
			put32(r, 0, (uint32_t)XXH3_64bits_withSeed(r + 4, 36,
								   seed) | 1u);
	}
	if (chunks_off > len || desc_off > chunks_off)
		return;
	nchunks = (len - chunks_off) / CHUNK;
	for (c = 0; c < nchunks && desc_off + c * 4 + 4 <= chunks_off; c++) {
		uint32_t d;

		memcpy(&d, b + desc_off + c * 4, 4);
		if (d != DESC_TABLE)
			continue;
		for (i = 0; i < CHUNK / 64; i++) {
			uint8_t *e = b + chunks_off + c * CHUNK + (size_t)i * 64;

			if (get64(e, 0) & 0xffffffffu)
				put32(e, 0, (uint32_t)XXH3_64bits_withSeed(
					      e + 4, 60, seed) | 1u);
		}
	}
}

static void check_pages(struct tmem_store *s)
{
	uint8_t got[PG], want[PG];
	unsigned k;

	for (k = 0; k < NKEYS; k++) {
		struct tmem_oid o = oid_of(k);
		int rc = tmem_get(s, 1 + k % 2, pers_pool[k % 2], &o, k, got, PG);

		/* Dropped at adoption, or found damaged at this first read
		 * (-EIO): either way never read as data. */
		if (rc == -ENOENT || rc == -ESRCH || rc == -EBADF || rc == -EIO)
			continue;
		if (rc || !model[k])
			abort();
		make_page(want, model[k]);
		if (memcmp(got, want, PG))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tmem_shm_report rep;
	struct tmem_store *s;
	uint8_t *img;
	size_t i;
	int fd, rc;

	if (!arena)
		build();
	if (size > 64 * 8 + 1)
		return 0;
	img = malloc(arena_len);
	if (!img)
		return 0;
	memcpy(img, arena, arena_len);
	for (i = 0; i + 8 <= size; i += 8) {
		uint32_t off;
		size_t at, base = 0, span = arena_len;
		uint64_t desc_off = get64(arena, HDR_DESC_OFF);
		uint64_t chunks_off = get64(arena, HDR_CHUNKS_OFF);

		memcpy(&off, data + i, 4);
		switch (data[i + 5] % 4) {
		case 0:
			span = 96;
			break;
		case 1:
			base = CLIENTS_OFF;
			span = 3 * 64;
			break;
		case 2:
			base = (size_t)desc_off;
			span = (size_t)(chunks_off - desc_off);
			break;
		default:
			base = (size_t)chunks_off;
			span = arena_len - (size_t)chunks_off;
			break;
		}
		at = base + off % span;
		img[at] ^= data[i + 4] ? data[i + 4] : 1;
	}
	if (size % 2)
		reseal(img, arena_len);
	fd = memfd_create("fuzz-arena", 0);
	if (fd < 0 || pwrite(fd, img, arena_len, 0) != (ssize_t)arena_len)
		abort();
	rc = tmem_store_adopt_shm(fd, NULL, &s, &rep);
	if (rc) {
		if (rc != -EUCLEAN && rc != -EPROTONOSUPPORT)
			abort();
	} else {
		uint8_t page[PG];
		struct tmem_oid o = oid_of(1);

		if (tmem_check(s))
			abort();
		check_pages(s);
		/* The adopted slabs and table take new work. */
		make_page(page, 4242);
		(void)tmem_put(s, 1, pers_pool[0], &o, 999, page, PG);
		(void)tmem_flush_page(s, 2, pers_pool[1], &o, 1);
		if (tmem_check(s))
			abort();
		tmem_store_free(s);
	}
	close(fd);
	free(img);
	return 0;
}
