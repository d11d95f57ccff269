/*
 * tmem_bench: what a tmem put and get cost per 4 KiB page, next to the
 * physical limits for the same pages (memcpy of 4 KiB, the bare compressor's
 * compress and decompress: lz4, or zstd with -c zstd), and how densely the store keeps them (compression ratio,
 * dedup ratio, slab fragmentation).
 *
 * Per page mix (synthetic, deterministic; or real pages from a file):
 *   1. warm-up: fill and destroy a store once, so the measured pass does
 *      not pay first-touch page faults of the process heap;
 *   2. put every page to its own handle in a persistent pool, each call
 *      timed alone (CLOCK_MONOTONIC); then get every page back in a
 *      shuffled order, timed alone, and compare with the original;
 *   3. report p50/p99, the store's ratios, and slab fragmentation after the
 *      fill and again after flushing a random half of the pages (churn);
 *   4. time memcpy, compress and decompress (the same pagecomp ops the
 *      store uses, no size cap) of the same pages, in the same orders.
 * One thread, pinned to one CPU.  Steps 1-4 run -r times (default 3) and
 * each latency statistic is the median over the runs.
 *
 * Usage: tmem_bench [-n pages] [-r runs] [-c lz4|lz4-fast|liblz4|zstd]...
 *                   [-m mix] [-C cpu] [--pollute KiB] [--pages FILE]...
 *                   [--shm]
 * Each -c adds a row per mix (side by side, same pages, same run); each
 * FILE is a row of its own: its first n pages.  --shm adds, after each
 * row, the same run on a store whose persistent pages live in a memfd
 * arena (tmem_store_new_shm: blobs in memfd slabs, one key-table entry
 * per page), and again with that arena on ebbd's huge-page tmpfs (what
 * ebbd runs by default; needs root), so the cost of surviving a restart
 * shows side by side.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchstat.h"
#include "hugeram.h"
#include "loop.h"
#include "tmem.h"

#define PG		TMEM_PAGE_SIZE
#define VOCAB		512	/* rare words in text pages */
#define DUP_SOURCES	32	/* distinct pages behind the "dup" mix */
#define MAX_RUNS	15
#define MAX_FILES	16	/* --pages FILE, one row each */
#define MAX_COMPS	4	/* -c NAME, each a row per mix */

enum kind { K_TEXT, K_HEAP, K_RANDOM, K_ZERO, K_DUP, K_NKINDS };

struct mix {
	const char *name;
	unsigned weight[K_NKINDS];	/* relative share of each kind */
};

static const struct mix mixes[] = {
	{ "text",   { [K_TEXT] = 1 } },
	{ "heap",   { [K_HEAP] = 1 } },
	{ "random", { [K_RANDOM] = 1 } },
	{ "zero",   { [K_ZERO] = 1 } },
	{ "dup",    { [K_DUP] = 1 } },
	/* A guess at an idle guest's swap: mostly anonymous heap, some page
	 * cache text, zero pages, shared library-like duplicates, and a
	 * slice of already-compressed data. */
	{ "mixed",  { [K_HEAP] = 40, [K_TEXT] = 25, [K_ZERO] = 15,
		      [K_DUP] = 10, [K_RANDOM] = 10 } },
};
#define NR_MIXES (sizeof(mixes) / sizeof(mixes[0]))

struct result {
	const char *name;
	const char *store;		/* store_names[] */
	const char *comp;		/* compressor's name */
	size_t pages;
	uint64_t put_p50, put_p99, get_p50, get_p99;
	uint64_t cpy_p50, comp_p50, dec_p50;
	double comp_ratio, dedup_ratio, total_ratio;
	double frag_fill, frag_churn, frag_refill;
	double bytes_per_page;		/* charged bytes / page */
};

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* ---- page generators ---- */

static char vocab[VOCAB][12];

static void vocab_init(void)
{
	unsigned i, j, len;

	for (i = 0; i < VOCAB; i++) {
		len = 3 + (unsigned)(rng() % 8);
		for (j = 0; j < len; j++)
			vocab[i][j] = (char)('a' + rng() % 26);
		vocab[i][len] = '\0';
	}
}

/* English-like: most tokens are among the hundred most common English
 * words, one in five comes from a long tail of rarer (made-up) words, and
 * words come in recurring phrases, as in prose.  LZ4 gets about 1.5x on it
 * at 4 KiB, like on real prose (GPL-3's text: 1.53x). */
static const char *const common_words[] = {
	"the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he",
	"was", "for", "on", "are", "with", "as", "his", "they", "be", "at",
	"one", "have", "this", "from", "or", "had", "by", "not", "word", "but",
	"what", "some", "we", "can", "out", "other", "were", "all", "there",
	"when", "up", "use", "your", "how", "said", "an", "each", "she",
	"which", "do", "their", "time", "if", "will", "way", "about", "many",
	"then", "them", "write", "would", "like", "so", "these", "her", "long",
	"make", "thing", "see", "him", "two", "has", "look", "more", "day",
	"could", "go", "come", "did", "number", "sound", "no", "most",
	"people", "my", "over", "know", "water", "than", "call", "first",
	"who", "may", "down", "side", "been", "now", "find", "memory", "page",
};
#define NR_COMMON (sizeof(common_words) / sizeof(common_words[0]))
#define NR_PHRASES 512

static char phrases[NR_PHRASES][64];

static void phrases_init(void)
{
	unsigned i, t, ntok;

	for (i = 0; i < NR_PHRASES; i++) {
		char *p = phrases[i];

		ntok = 2 + (unsigned)(rng() % 5);
		p[0] = '\0';
		for (t = 0; t < ntok; t++) {
			uint64_t r = rng();
			const char *w;

			if (r % 100 < 80) {
				/* skewed to the first words of the list */
				uint64_t a = (r >> 8) % NR_COMMON;
				uint64_t b = (r >> 24) % NR_COMMON;

				w = common_words[a * b / NR_COMMON];
			} else {
				w = vocab[(r >> 8) % VOCAB];
			}
			if (strlen(p) + strlen(w) + 2 > sizeof(phrases[i]))
				break;
			if (t)
				strcat(p, " ");
			strcat(p, w);
		}
	}
}

static void text_page(uint8_t *p)
{
	size_t off = 0;

	while (off < PG) {
		uint64_t r = rng();
		uint64_t a = (r >> 8) % NR_PHRASES, b = (r >> 24) % NR_PHRASES;
		const char *w = phrases[a * b / NR_PHRASES];
		size_t n = strlen(w);

		if (n > PG - off)
			n = PG - off;
		memcpy(p + off, w, n);
		off += n;
		if (off < PG)
			p[off++] = (r >> 40) % 7 == 0 ? '\n' :
				   (r >> 40) % 3 == 0 ? ',' : ' ';
	}
}

/* Anonymous memory of a C program: 8-byte words that are pointers into a
 * few MiB of heap, small integers, zeros, and the odd float/hash. */
static void heap_page(uint8_t *p)
{
	const uint64_t heap = 0x00005581a3c00000ull;
	size_t i;

	for (i = 0; i < PG; i += 8) {
		uint64_t r = rng(), w;

		switch (r % 10) {
		case 0: case 1: case 2: case 3:
			w = heap + ((r >> 8) % (8u << 20) & ~15ull);
			break;
		case 4: case 5: case 6:
			w = (r >> 8) % 1000;
			break;
		case 7: case 8:
			w = 0;
			break;
		default:
			w = rng();
			break;
		}
		memcpy(p + i, &w, 8);
	}
}

static void random_page(uint8_t *p)
{
	size_t i;

	for (i = 0; i < PG; i += 8) {
		uint64_t r = rng();

		memcpy(p + i, &r, 8);
	}
}

static void make_pages(const struct mix *m, uint8_t *pages, size_t n)
{
	static uint8_t dup_src[DUP_SOURCES][PG];
	unsigned total = 0, k;
	size_t i;

	for (i = 0; i < DUP_SOURCES; i++)
		text_page(dup_src[i]);
	for (k = 0; k < K_NKINDS; k++)
		total += m->weight[k];
	for (i = 0; i < n; i++) {
		uint8_t *p = pages + i * PG;
		unsigned pick = (unsigned)(rng() % total);

		for (k = 0; pick >= m->weight[k]; k++)
			pick -= m->weight[k];
		switch (k) {
		case K_TEXT:
			text_page(p);
			break;
		case K_HEAP:
			heap_page(p);
			break;
		case K_RANDOM:
			random_page(p);
			break;
		case K_ZERO:
			memset(p, 0, PG);
			break;
		default:
			memcpy(p, dup_src[rng() % DUP_SOURCES], PG);
			break;
		}
	}
}

static size_t load_pages(const char *path, uint8_t *pages, size_t max)
{
	FILE *f = fopen(path, "rb");
	size_t n = 0;

	if (!f) {
		perror(path);
		exit(1);
	}
	while (n < max && fread(pages + n * PG, PG, 1, f) == 1)
		n++;
	fclose(f);
	return n;
}

/* ---- measurement ---- */

/* --pollute KiB: before each timed call, write this much of a scratch
 * buffer (untimed), evicting the caches as a guest running between two
 * requests would.  0 (default): back-to-back calls, warm caches. */
static uint8_t *pollute_buf;
static size_t pollute_bytes;

static void pollute(void)
{
	size_t i;

	for (i = 0; i < pollute_bytes; i += 64)
		pollute_buf[i]++;
	__asm__ volatile("" : : "r"(pollute_buf) : "memory");
}

/* --shm: this row's store is a heap one (0), or a memfd arena (1), or an
 * arena on ebbd's huge-page tmpfs (2, hugeram_tmpfile, as ebbd runs it) */
static int shm_store;
static const char *const store_names[] = { "heap", "memfd", "huge tmpfs" };

static void die(const char *what, int rc)
{
	fprintf(stderr, "tmem_bench: %s: %s\n", what, strerror(-rc));
	exit(1);
}

static struct tmem_store *store_fill(const struct tmem_store_config *cfg,
				     const uint8_t *pages, size_t n,
				     uint64_t *lat, uint32_t *pool)
{
	struct tmem_store *s;
	size_t i;
	int rc;

	if (shm_store == 2) {
		int fd = hugeram_tmpfile(TMEM_SHM_MAX_BYTES_DEFAULT);

		if (fd < 0)
			die("huge-page tmpfs", fd);
		rc = tmem_store_new_shm_fd(cfg, 0, fd, &s);
		close(fd);
	} else {
		rc = shm_store ? tmem_store_new_shm(cfg, 0, &s) :
				 tmem_store_new(cfg, &s);
	}
	if (rc)
		die("store", rc);
	rc = tmem_client_new(s, 1, "bench", NULL);
	if (!rc)
		rc = tmem_pool_new(s, 1, TMEM_POOL_PERSISTENT, NULL, pool);
	if (rc)
		die("pool", rc);
	for (i = 0; i < n; i++) {
		/* 64 pages per object, like a file or a swap area's cluster. */
		struct tmem_oid oid = { { i / 64, 0, 0 } };
		uint64_t t0;

		pollute();
		t0 = loop_now_ns();

		rc = tmem_put(s, 1, *pool, &oid, (uint32_t)(i % 64), pages + i * PG, PG);
		if (lat)
			lat[i] = loop_now_ns() - t0;
		if (rc)
			die("put", rc);
	}
	return s;
}

static void run(const char *name, const struct tmem_store_config *cfg,
		const uint8_t *pages, size_t n, struct result *r)
{
	uint64_t *lat = malloc(n * sizeof(*lat));
	size_t *order = malloc(n * sizeof(*order));
	uint8_t *out = aligned_alloc(64, PG);
	uint8_t *cbuf = malloc(2 * PG);
	uint8_t **comp = malloc(n * sizeof(*comp));
	size_t *clen = malloc(n * sizeof(*clen));
	void *ctx;
	struct tmem_store_stats ss;
	struct tmem_store *s;
	uint32_t pool;
	size_t i, j;
	int rc;

	if (!lat || !order || !out || !cbuf || !comp || !clen) {
		fprintf(stderr, "tmem_bench: out of memory\n");
		exit(1);
	}
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->comp = cfg->comp->name;
	r->pages = n;

	/* 1. */
	s = store_fill(cfg, pages, n, NULL, &pool);
	tmem_store_free(s);

	/* 2. */
	s = store_fill(cfg, pages, n, lat, &pool);
	r->put_p50 = bench_percentile(lat, n, 50);
	r->put_p99 = bench_percentile(lat, n, 99);
	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; i > 0; i--) {
		j = (size_t)(rng() % (i + 1));
		size_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (i = 0; i < n; i++) {
		size_t k = order[i];
		struct tmem_oid oid = { { k / 64, 0, 0 } };
		uint64_t t0;

		pollute();
		t0 = loop_now_ns();

		rc = tmem_get(s, 1, pool, &oid, (uint32_t)(k % 64), out, PG);
		lat[i] = loop_now_ns() - t0;
		if (rc)
			die("get", rc);
		if (memcmp(out, pages + k * PG, PG)) {
			fprintf(stderr, "tmem_bench: page %zu came back wrong\n", k);
			exit(1);
		}
	}
	r->get_p50 = bench_percentile(lat, n, 50);
	r->get_p99 = bench_percentile(lat, n, 99);

	/* 3. */
	rc = tmem_store_stats(s, &ss);
	if (rc)
		die("stats", rc);
	r->comp_ratio = ss.total.compression_ratio;
	r->dedup_ratio = ss.total.dedup_ratio;
	r->total_ratio = ss.total.stored_bytes ?
		(double)ss.total.logical_bytes / (double)ss.total.stored_bytes : 0;
	r->frag_fill = ss.slab_frag_pct;
	r->bytes_per_page = (double)ss.total.charged_bytes / (double)n;
	for (i = 0; i < n / 2; i++) {
		size_t k = order[i];
		struct tmem_oid oid = { { k / 64, 0, 0 } };

		rc = tmem_flush_page(s, 1, pool, &oid, (uint32_t)(k % 64));
		if (rc)
			die("flush", rc);
	}
	rc = tmem_store_stats(s, &ss);
	if (rc)
		die("stats", rc);
	r->frag_churn = ss.slab_frag_pct;
	/* Refill the holes with as many new pages (the flushed half, under
	 * new handles): the fullest-slab-first policy should reuse them. */
	for (i = 0; i < n / 2; i++) {
		size_t k = order[i];
		struct tmem_oid oid = { { k / 64, 1, 0 } };

		rc = tmem_put(s, 1, pool, &oid, (uint32_t)(k % 64), pages + k * PG, PG);
		if (rc)
			die("put", rc);
	}
	rc = tmem_store_stats(s, &ss);
	if (rc)
		die("stats", rc);
	r->frag_refill = ss.slab_frag_pct;
	rc = tmem_check(s);
	if (rc)
		die("check", rc);
	tmem_store_free(s);

	/* 4. */
	for (i = 0; i < n; i++) {
		uint64_t t0;

		pollute();
		t0 = loop_now_ns();

		memcpy(out, pages + order[i] * PG, PG);
		lat[i] = loop_now_ns() - t0;
		__asm__ volatile("" : : "r"(out) : "memory");
	}
	r->cpy_p50 = bench_percentile(lat, n, 50);
	rc = cfg->comp->ctx_new(&ctx);
	if (rc)
		die("compressor", rc);
	for (i = 0; i < n; i++) {
		size_t len;
		uint64_t t0;

		pollute();
		t0 = loop_now_ns();

		rc = cfg->comp->compress(ctx, pages + i * PG, PG, cbuf, 2 * PG, &len);
		lat[i] = loop_now_ns() - t0;
		if (rc)
			die("compress", rc);
		clen[i] = len;
		comp[i] = malloc(len);
		if (!comp[i])
			die("compress", -ENOMEM);
		memcpy(comp[i], cbuf, len);
	}
	r->comp_p50 = bench_percentile(lat, n, 50);
	for (i = 0; i < n; i++) {
		size_t k = order[i];	/* the order the gets used */
		uint64_t t0;

		pollute();
		t0 = loop_now_ns();

		rc = cfg->comp->decompress(ctx, comp[k], clen[k], out, PG);
		lat[i] = loop_now_ns() - t0;
		if (rc)
			die("decompress", rc);
	}
	cfg->comp->ctx_free(ctx);
	r->dec_p50 = bench_percentile(lat, n, 50);
	for (i = 0; i < n; i++)
		free(comp[i]);

	free(clen);
	free(comp);
	free(cbuf);
	free(out);
	free(order);
	free(lat);
}

static uint64_t median_of(uint64_t *v, unsigned n)
{
	return bench_percentile(v, n, 50);
}

/* Measure @runs times; latencies are the median over runs of each
 * statistic (this VM has noisy neighbours), the rest is deterministic. */
static void run_median(const char *name, const struct tmem_store_config *cfg,
		       const uint8_t *pages, size_t n, unsigned runs,
		       struct result *r)
{
	struct result t[MAX_RUNS];
	uint64_t v[MAX_RUNS];
	unsigned i;

	memset(t, 0, sizeof(t));
	for (i = 0; i < runs; i++)
		run(name, cfg, pages, n, &t[i]);
	*r = t[0];
#define MEDIAN(field)						\
	do {							\
		for (i = 0; i < runs; i++)			\
			v[i] = t[i].field;			\
		r->field = median_of(v, runs);			\
	} while (0)
	MEDIAN(put_p50);
	MEDIAN(put_p99);
	MEDIAN(get_p50);
	MEDIAN(get_p99);
	MEDIAN(cpy_p50);
	MEDIAN(comp_p50);
	MEDIAN(dec_p50);
#undef MEDIAN
}

static void print_table(const struct result *r, size_t nr)
{
	size_t i;

	printf("| mix | store | compressor | pages | put p50 | put p99 | get p50 | get p99 | "
	       "memcpy p50 | comp p50 | dec p50 | comp ratio | dedup ratio | "
	       "logical/stored | charged B/page | slab frag: full | half flushed | refilled |\n");
	printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (i = 0; i < nr; i++)
		printf("| %s | %s | %s | %zu | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %"
		       PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64
		       " | %.2f | %.2f | %.2f | %.0f | %.1f%% | %.1f%% | %.1f%% |\n",
		       r[i].name, r[i].store, r[i].comp, r[i].pages, r[i].put_p50, r[i].put_p99,
		       r[i].get_p50, r[i].get_p99, r[i].cpy_p50, r[i].comp_p50,
		       r[i].dec_p50, r[i].comp_ratio, r[i].dedup_ratio,
		       r[i].total_ratio, r[i].bytes_per_page, r[i].frag_fill,
		       r[i].frag_churn, r[i].frag_refill);
}

static void usage(void)
{
	fprintf(stderr, "usage: tmem_bench [-n pages] [-r runs] "
		"[-c lz4|lz4-fast|liblz4|zstd]... [-m mix] [-C cpu] "
		"[--pollute KiB] [--pages FILE]... [--shm]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct tmem_store_config cfg = { .comp = &pagecomp_lz4 };
	const struct pagecomp_ops *comps[MAX_COMPS];
	struct result res[(NR_MIXES + MAX_FILES) * MAX_COMPS * 3];
	const char *files[MAX_FILES], *only = NULL;
	size_t n = 8192, nr = 0, nfiles = 0, ncomps = 0, i, c, sm, nstores = 1;
	unsigned runs = 3;
	uint8_t *pages;
	int cpu = 0, a;
	cpu_set_t set;

	for (a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "-n") && a + 1 < argc)
			n = strtoul(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "-c") && a + 1 < argc &&
			 ncomps < MAX_COMPS) {
			if (pagecomp_find(argv[++a], &comps[ncomps++]))
				usage();
		} else if (!strcmp(argv[a], "-r") && a + 1 < argc)
			runs = (unsigned)atoi(argv[++a]);
		else if (!strcmp(argv[a], "-C") && a + 1 < argc)
			cpu = atoi(argv[++a]);
		else if (!strcmp(argv[a], "-m") && a + 1 < argc)
			only = argv[++a];
		else if (!strcmp(argv[a], "--pollute") && a + 1 < argc)
			pollute_bytes = strtoul(argv[++a], NULL, 0) << 10;
		else if (!strcmp(argv[a], "--shm"))
			nstores = 3;
		else if (!strcmp(argv[a], "--pages") && a + 1 < argc &&
			 nfiles < MAX_FILES)
			files[nfiles++] = argv[++a];
		else
			usage();
	}
	if (n < 2 || runs < 1 || runs > MAX_RUNS)
		usage();
	if (!ncomps)
		comps[ncomps++] = &pagecomp_lz4;
	if (nstores == 3) {
		int fd = hugeram_tmpfile(TMEM_SHM_MAX_BYTES_DEFAULT);

		if (fd < 0) {
			fprintf(stderr, "tmem_bench: no huge-page tmpfs (%s): "
				"no huge tmpfs rows\n", strerror(-fd));
			nstores = 2;
		}
		close(fd);
	}
	/* Keep freed memory in the process: the measured pass then reuses
	 * what the warm-up faulted in.  Without this, glibc may hand slabs
	 * (64-192 KiB) back to the kernel between passes and the put
	 * latencies measure first-touch page faults (5-20 us each on this
	 * nested VM), a cost of growing the heap, not of the store. */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		perror("sched_setaffinity (continuing unpinned)");

	if (pollute_bytes) {
		pollute_buf = calloc(1, pollute_bytes);
		if (!pollute_buf) {
			fprintf(stderr, "tmem_bench: out of memory\n");
			return 1;
		}
	}
	pages = aligned_alloc(PG, n * PG);
	if (!pages) {
		fprintf(stderr, "tmem_bench: out of memory\n");
		return 1;
	}
	vocab_init();
	phrases_init();
	/* Compressors side by side: each page set is made (or read) once and
	 * run through every compressor before the next. */
	if (nfiles) {
		for (i = 0; i < nfiles; i++) {
			size_t got = load_pages(files[i], pages, n);
			const char *base = strrchr(files[i], '/');

			if (got < 2) {
				fprintf(stderr, "tmem_bench: %s: fewer than 2 pages\n",
					files[i]);
				return 1;
			}
			for (c = 0; c < ncomps * nstores; c++) {
				cfg.comp = comps[c / nstores];
				sm = c % nstores;
				shm_store = sm;
				run_median(base ? base + 1 : files[i], &cfg, pages,
					   got, runs, &res[nr]);
				res[nr++].store = store_names[sm];
			}
		}
	} else {
		for (i = 0; i < NR_MIXES; i++) {
			if (only && strcmp(only, mixes[i].name))
				continue;
			make_pages(&mixes[i], pages, n);
			for (c = 0; c < ncomps * nstores; c++) {
				cfg.comp = comps[c / nstores];
				sm = c % nstores;
				shm_store = sm;
				run_median(mixes[i].name, &cfg, pages, n, runs,
					   &res[nr]);
				res[nr++].store = store_names[sm];
			}
		}
	}

	printf("tmem_bench: %s%zu pages per mix, CPU %d; latencies in ns per "
	       "4 KiB page, median of %u runs; comp/dec: the bare compressor; "
	       "%zu KiB written between calls\n\n",
	       nfiles ? "at most " : "", n, cpu, runs, pollute_bytes >> 10);
	print_table(res, nr);
	printf("\nReproduce: ");
	for (a = 0; a < argc; a++)
		printf("%s%s", a ? " " : "", argv[a]);
	printf("\n");
	free(pages);
	return 0;
}
