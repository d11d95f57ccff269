/*
 * adopt_bench: how long a restarted ebbd takes to adopt the tmem store's
 * memfd arena (tmem_store_adopt_shm), against the number of pages stored.
 * That time is device pause in `ebbctl upgrade`: no guest is served until
 * the store is back (issue 15, docs/restart.md).
 *
 * Fill: -g clients (one per guest, as ebbd makes them), each with one
 * persistent pool and one object holding its swap pages at indexes
 * 0..n/g-1, exactly how a swap device keys its pages.  Page contents
 * --fill random (incompressible: pagecheck's default, the heaviest case:
 * one ~4 KiB blob a page), text (compresses ~3x) or mixed (pagecheck's
 * mix: 1/8 random, 1/2 text, 3/8 sparse).
 *
 * Two rows side by side, the same pages: the arena in a memfd (4 KiB
 * pages) and in ebbd's huge-page tmpfs file (hugeram_tmpfile: needs root;
 * the row is left out where the host cannot give one).
 *
 * Each run: free the store (its records stay in the memfd, the mapping
 * goes: the next mapping starts with no page tables, as in a new process
 * image), adopt it again, timed; then get every page of one client in a
 * shuffled order, timed (the first get of an adopted page checks its
 * content against the recorded hash).  Medians over -r runs.
 *
 * Usage: adopt_bench [-n pages] [-g clients] [-r runs] [--fill KIND]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchstat.h"
#include "hugeram.h"
#include "loop.h"
#include "tmem.h"

#define PG	TMEM_PAGE_SIZE
#define MAX_RUNS 15

enum fill { F_RANDOM, F_TEXT, F_MIXED };

static uint64_t rnd(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *st = x;
}

/* Words of a small vocabulary, separated by spaces: compresses ~3x. */
static void fill_text(uint8_t *p, uint64_t *st)
{
	static const char *const words[] = {
		"memory", "page", "guest", "host", "balloon", "claim",
		"store", "swap", "the", "of", "and", "to", "a", "in",
	};
	size_t o = 0;

	while (o < PG) {
		const char *w = words[rnd(st) % (sizeof(words) / sizeof(*words))];
		size_t l = strlen(w);

		if (o + l + 1 > PG)
			l = PG - o - 1;
		memcpy(p + o, w, l);
		o += l;
		p[o++] = (rnd(st) & 15) ? ' ' : '\n';
	}
}

static void fill_page(uint8_t *p, enum fill f, uint64_t seed, uint64_t i)
{
	uint64_t st = seed * 0x9e3779b97f4a7c15ull + i + 1, k;
	unsigned kind = f == F_MIXED ? (unsigned)(rnd(&st) % 8) : 0;

	if (f == F_RANDOM || (f == F_MIXED && kind == 0)) {
		for (k = 0; k < PG / 8; k++)
			((uint64_t *)p)[k] = rnd(&st);
	} else if (f == F_TEXT || kind < 5) {
		fill_text(p, &st);
	} else {
		/* sparse: a few words in a zero page, like a mostly-empty heap
		 * page */
		memset(p, 0, PG);
		for (k = 0; k < 8; k++)
			((uint64_t *)p)[rnd(&st) % (PG / 8)] = rnd(&st);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: adopt_bench [-n pages] [-g clients] [-r runs] "
		"[--fill random|text|mixed]\n");
	exit(2);
}

struct row {
	const char *backing;
	uint64_t adopt_ns, get_ns;	/* medians: whole adoption, one get */
};

/* Fill a store whose arena is @arena (-1: a memfd) with @n pages in @g
 * clients, then adopt it @runs times; medians into @r.  0 or -errno. */
static int run(int arena, uint64_t n, uint64_t g, uint64_t runs,
	       enum fill fill, struct row *r)
{
	uint64_t t_adopt[MAX_RUNS], t_get[MAX_RUNS], t0, per = n / g, i, c;
	const struct tmem_oid oid = { { 1, 0, 0 } };
	struct tmem_shm_report rep = { 0 };
	struct tmem_store *s;
	uint32_t pool = 0, *order;
	static uint8_t page[PG], back[PG];
	uint64_t st = 42;
	int fd, rc;

	rc = tmem_store_new_shm_fd(NULL, 0, arena, &s);
	if (rc)
		return rc;
	for (c = 0; !rc && c < g; c++) {
		rc = tmem_client_new(s, (uint32_t)c + 1, "bench", NULL);
		if (!rc)
			rc = tmem_pool_new(s, (uint32_t)c + 1,
					   TMEM_POOL_PERSISTENT, NULL, &pool);
		for (i = 0; !rc && i < per; i++) {
			fill_page(page, fill, c, i);
			rc = tmem_put(s, (uint32_t)c + 1, pool, &oid,
				      (uint32_t)i, page, PG);
		}
	}
	fd = dup(tmem_store_shm_fd(s));
	order = malloc(per * sizeof(*order));
	if (rc || fd < 0 || !order) {
		fprintf(stderr, "fill: %s\n", strerror(rc ? -rc : ENOMEM));
		exit(1);
	}
	for (i = 0; i < per; i++)
		order[i] = (uint32_t)i;

	for (uint64_t k = 0; k < runs; k++) {
		tmem_store_free(s);
		t0 = loop_now_ns();
		rc = tmem_store_adopt_shm(fd, NULL, &s, &rep);
		t_adopt[k] = loop_now_ns() - t0;
		if (rc || rep.pages != n || rep.bad_entries) {
			fprintf(stderr, "adopt: %s, %" PRIu64 " of %" PRIu64
				" pages, %" PRIu64 " bad\n", strerror(-rc),
				rep.pages, n, rep.bad_entries);
			exit(1);
		}
		for (i = per - 1; i > 0; i--) {
			uint64_t j = rnd(&st) % (i + 1);
			uint32_t t = order[i];

			order[i] = order[j];
			order[j] = t;
		}
		c = k % g;
		t0 = loop_now_ns();
		for (i = 0; !rc && i < per; i++)
			rc = tmem_get(s, (uint32_t)c + 1, pool, &oid, order[i],
				      back, PG);
		t_get[k] = loop_now_ns() - t0;
		/* A sample of the pages must come back as they went in. */
		for (i = 0; !rc && i < per; i += per / 64 + 1) {
			fill_page(page, fill, c, order[i]);
			rc = tmem_get(s, (uint32_t)c + 1, pool, &oid, order[i],
				      back, PG);
			if (!rc && memcmp(page, back, PG))
				rc = -EILSEQ;
		}
		if (rc) {
			fprintf(stderr, "get: %s\n", strerror(-rc));
			exit(1);
		}
	}
	r->adopt_ns = bench_median(t_adopt, runs);
	r->get_ns = bench_median(t_get, runs) / per;
	tmem_store_free(s);
	close(fd);
	free(order);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t n = 327680, g = 10, runs = 5;
	enum fill fill = F_RANDOM;
	struct row rows[2] = { { "memfd", 0, 0 }, { "huge tmpfs", 0, 0 } };
	int a, huge, nrows = 1;

	for (a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "-n") && a + 1 < argc)
			n = strtoull(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "-g") && a + 1 < argc)
			g = strtoull(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "-r") && a + 1 < argc)
			runs = strtoull(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--fill") && a + 1 < argc) {
			a++;
			if (!strcmp(argv[a], "random"))
				fill = F_RANDOM;
			else if (!strcmp(argv[a], "text"))
				fill = F_TEXT;
			else if (!strcmp(argv[a], "mixed"))
				fill = F_MIXED;
			else
				usage();
		} else
			usage();
	}
	if (!n || !g || g > 1000 || n < g || !runs || runs > MAX_RUNS)
		usage();
	n = n / g * g;

	if (run(-1, n, g, runs, fill, &rows[0]))
		return 1;
	huge = hugeram_tmpfile(TMEM_SHM_MAX_BYTES_DEFAULT);
	if (huge >= 0) {
		if (run(huge, n, g, runs, fill, &rows[1]))
			return 1;
		close(huge);
		nrows = 2;
	} else {
		fprintf(stderr, "no huge-page tmpfs (%s): memfd row only\n",
			strerror(-huge));
	}
	printf("adopt_bench -n %" PRIu64 " -g %" PRIu64 " -r %" PRIu64
	       " --fill %s\n\n", n, g, runs,
	       fill == F_RANDOM ? "random" : fill == F_TEXT ? "text" : "mixed");
	printf("| arena | pages | adopt p50 | per page | first get p50 |\n");
	printf("|---|---:|---:|---:|---:|\n");
	for (a = 0; a < nrows; a++)
		printf("| %s | %" PRIu64 " | %.1f ms | %.0f ns | %" PRIu64
		       " ns |\n", rows[a].backing, n, rows[a].adopt_ns / 1e6,
		       (double)rows[a].adopt_ns / n, rows[a].get_ns);
	if (nrows == 2)
		printf("\nhuge tmpfs / memfd adoption time: %.2f\n",
		       (double)rows[1].adopt_ns / rows[0].adopt_ns);
	return 0;
}
