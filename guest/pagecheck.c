/*
 * pagecheck: fill guest memory with checkable data and verify it later, so
 * host-side tests can prove that swapping, compressing, deduplicating or
 * discarding guest pages never changes what the guest reads back.
 *
 *   pagecheck write SIZE SEED [--hold SECONDS] [--passes N]
 *
 * 1. Map SIZE bytes and fill page i with words derived from (SEED, i):
 *    word 0 is i, word 1 is SEED, the rest a pseudo-random stream seeded by
 *    both.  Every page is distinct and incompressible, and a page that
 *    comes back from the wrong place names the page it really holds.
 * 2. N times (default 1): sleep SECONDS (default 0), then re-read every page
 *    and compare; print "pagecheck: pass k/N: M mismatches".  The hold gives
 *    the host time to take the pages away between the write and the read.
 * 3. Print "pagecheck: P pages, M mismatches", where M counts pages that
 *    failed in at least one pass, and exit 1 if M > 0, else 0.
 *
 * Only the first few bad pages of each pass are described (zero page,
 * another page's data, or the first differing word), to keep a badly broken
 * run from flooding the console.  Exit 2 on usage or allocation errors.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REPORT_MAX 8	/* bad pages described per pass */

static void usage(FILE *f)
{
	fprintf(f, "usage: pagecheck write SIZE SEED [--hold SECONDS] "
		   "[--passes N]\n"
		   "  SIZE      bytes, or with a binary suffix K, M, G, T\n"
		   "  SEED      number the page contents are derived from\n"
		   "  --hold    seconds to wait before each verify pass\n"
		   "  --passes  how many verify passes (default 1)\n");
}

/* splitmix64: a good 64-bit stream from any state, zero included. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Word @w of page @index; calls must walk w = 2, 3, ... in order. */
static uint64_t stream_start(uint64_t seed, uint64_t index)
{
	uint64_t st = seed ^ (index * 0xd6e8feb86659fd93ull);

	return splitmix64(&st);
}

static void fill_page(uint64_t *words, size_t nwords, uint64_t seed,
		      uint64_t index)
{
	uint64_t st = stream_start(seed, index);
	size_t w;

	words[0] = index;
	words[1] = seed;
	for (w = 2; w < nwords; w++)
		words[w] = splitmix64(&st);
}

/* Returns the first differing word, or nwords if the page is intact. */
static size_t check_page(const uint64_t *words, size_t nwords, uint64_t seed,
			 uint64_t index, uint64_t *expected)
{
	uint64_t st = stream_start(seed, index);
	size_t w;

	if (words[0] != index) {
		*expected = index;
		return 0;
	}
	if (words[1] != seed) {
		*expected = seed;
		return 1;
	}
	for (w = 2; w < nwords; w++) {
		uint64_t want = splitmix64(&st);

		if (words[w] != want) {
			*expected = want;
			return w;
		}
	}
	return nwords;
}

static bool page_is_zero(const uint64_t *words, size_t nwords)
{
	size_t w;

	for (w = 0; w < nwords; w++)
		if (words[w])
			return false;
	return true;
}

static void describe(const uint64_t *words, size_t nwords, uint64_t seed,
		     uint64_t index, uint64_t npages, size_t bad_word,
		     uint64_t expected)
{
	if (page_is_zero(words, nwords))
		printf("pagecheck: page %llu: reads as zeroes\n",
		       (unsigned long long)index);
	else if (bad_word == 0 && words[1] == seed && words[0] < npages)
		printf("pagecheck: page %llu: holds page %llu\n",
		       (unsigned long long)index,
		       (unsigned long long)words[0]);
	else
		printf("pagecheck: page %llu: word %zu is %#llx, "
		       "expected %#llx\n", (unsigned long long)index,
		       bad_word, (unsigned long long)words[bad_word],
		       (unsigned long long)expected);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "hold", required_argument, NULL, 'H' },
		{ "passes", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size_bytes, seed, hold_s = 0, passes = 1, npages, i, pass;
	uint64_t bad_total = 0;
	size_t page_bytes, nwords;
	unsigned char *mem, *bad;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			if (tool_parse_u64(optarg, &hold_s)) {
				fprintf(stderr, "pagecheck: bad --hold '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'n':
			if (tool_parse_u64(optarg, &passes) || passes == 0) {
				fprintf(stderr,
					"pagecheck: bad --passes '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 3 || strcmp(argv[optind], "write") != 0) {
		usage(stderr);
		return 2;
	}
	if (tool_parse_size(argv[optind + 1], &size_bytes) ||
	    size_bytes == 0 || size_bytes > SIZE_MAX) {
		fprintf(stderr, "pagecheck: bad SIZE '%s'\n", argv[optind + 1]);
		return 2;
	}
	if (tool_parse_u64(argv[optind + 2], &seed)) {
		fprintf(stderr, "pagecheck: bad SEED '%s'\n", argv[optind + 2]);
		return 2;
	}

	/* SIZE rounds up to whole pages: each holds a full pattern. */
	page_bytes = (size_t)sysconf(_SC_PAGESIZE);
	nwords = page_bytes / sizeof(uint64_t);
	npages = (size_bytes + page_bytes - 1) / page_bytes;

	mem = mmap(NULL, (size_t)(npages * page_bytes), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bad = calloc((size_t)npages, 1);
	if (mem == MAP_FAILED || !bad) {
		fprintf(stderr, "pagecheck: cannot allocate %s: %s\n",
			argv[optind + 1], strerror(errno));
		return 2;
	}

	printf("pagecheck: writing %llu pages, seed %llu\n",
	       (unsigned long long)npages, (unsigned long long)seed);
	for (i = 0; i < npages; i++)
		fill_page((uint64_t *)(void *)(mem + i * page_bytes), nwords,
			  seed, i);
	printf("pagecheck: written %llu pages\n", (unsigned long long)npages);

	for (pass = 1; pass <= passes; pass++) {
		uint64_t bad_pass = 0;

		if (hold_s) {
			printf("pagecheck: holding %llu s\n",
			       (unsigned long long)hold_s);
			tool_sleep_s(hold_s);
		}
		for (i = 0; i < npages; i++) {
			const uint64_t *words =
				(const uint64_t *)(void *)(mem + i * page_bytes);
			uint64_t expected = 0;
			size_t w;

			w = check_page(words, nwords, seed, i, &expected);
			if (w == nwords)
				continue;
			if (bad_pass++ < REPORT_MAX)
				describe(words, nwords, seed, i, npages, w,
					 expected);
			if (!bad[i]) {
				bad[i] = 1;
				bad_total++;
			}
		}
		printf("pagecheck: pass %llu/%llu: %llu mismatches\n",
		       (unsigned long long)pass, (unsigned long long)passes,
		       (unsigned long long)bad_pass);
	}

	printf("pagecheck: %llu pages, %llu mismatches\n",
	       (unsigned long long)npages, (unsigned long long)bad_total);
	munmap(mem, (size_t)(npages * page_bytes));
	free(bad);
	return bad_total ? 1 : 0;
}
