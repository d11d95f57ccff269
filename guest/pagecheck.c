/*
 * pagecheck: fill guest memory with checkable data and verify it later, so
 * host-side tests can prove that swapping, compressing, deduplicating or
 * discarding guest pages never changes what the guest reads back.
 *
 *   pagecheck write SIZE SEED [--hold SECONDS] [--passes N] [--fill KIND]
 *   pagecheck dump SIZE SEED [--fill KIND]
 *
 * write:
 * 1. Map SIZE bytes and fill page i with words derived from (SEED, i):
 *    word 0 is i, word 1 is SEED, the rest depends on KIND (below) and is
 *    pseudo-random, seeded by both.  Every page is distinct, and a page that
 *    comes back from the wrong place names the page it really holds.
 * 2. N times (default 1): sleep SECONDS (default 0), then re-read every page
 *    and compare; print "pagecheck: pass k/N: M mismatches".  The hold gives
 *    the host time to take the pages away between the write and the read.
 * 3. Print "pagecheck: write W s, verify V s": the time spent writing every
 *    page and the time spent in all verify passes together (holds not
 *    counted).  Swap benchmarks take these as the workload's runtime.
 * 4. Print "pagecheck: P pages, M mismatches", where M counts pages that
 *    failed in at least one pass, and exit 1 if M > 0, else 0.
 *
 * dump writes the same SIZE of page contents to stdout instead, to measure
 * how a host-side compressor does on exactly what the guest swaps (the
 * ratios below are bench/tmem_bench --pages on 64M of each kind).
 *
 * KIND says how compressible the pages are:
 *   random   (default) every word after the header from a splitmix64
 *            stream: incompressible.
 *   text     English-like lines made of words from a 64-word vocabulary,
 *            compressed per 4 KiB page about like real text: 1.55:1 with
 *            lz4, 2.5:1 with zstd.
 *   sparse   the header and one stream word in every 32, zeroes elsewhere,
 *            like a sparsely written heap: 17:1 with lz4, 21:1 with zstd.
 *   mixed    each page picks one of the above from (SEED, i): 1/8 random,
 *            1/2 text, 3/8 sparse.  2.1:1 overall with lz4, 2.9:1 with
 *            zstd, in the range zswap reports on real workloads.
 *   ratio:R  the first 1/R of each page (header included) is random, the
 *            rest zeroes, so a page compresses to roughly 1/R of its size
 *            (R is a number >= 1, e.g. ratio:2.5).
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

enum fill_kind { FILL_RANDOM, FILL_TEXT, FILL_SPARSE, FILL_MIXED, FILL_RATIO };

struct fill {
	enum fill_kind kind;
	double ratio;		/* FILL_RATIO: page size / random bytes */
	char name[32];		/* as given, for the "writing" line */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: pagecheck write SIZE SEED [--hold SECONDS] "
		   "[--passes N] [--fill KIND]\n"
		   "       pagecheck dump SIZE SEED [--fill KIND]\n"
		   "  SIZE      bytes, or with a binary suffix K, M, G, T\n"
		   "  SEED      number the page contents are derived from\n"
		   "  --hold    seconds to wait before each verify pass\n"
		   "  --passes  how many verify passes (default 1)\n"
		   "  --fill    page contents: random (default), text, sparse,\n"
		   "            mixed, or ratio:R (compresses to about 1/R)\n"
		   "  dump      writes the pages to stdout instead of checking\n");
}

static int parse_fill(const char *s, struct fill *f)
{
	memset(f, 0, sizeof(*f));
	if (strlen(s) >= sizeof(f->name))
		return -EINVAL;
	strcpy(f->name, s);
	if (!strcmp(s, "random"))
		f->kind = FILL_RANDOM;
	else if (!strcmp(s, "text"))
		f->kind = FILL_TEXT;
	else if (!strcmp(s, "sparse"))
		f->kind = FILL_SPARSE;
	else if (!strcmp(s, "mixed"))
		f->kind = FILL_MIXED;
	else if (!strncmp(s, "ratio:", 6)) {
		char *end;

		errno = 0;
		f->kind = FILL_RATIO;
		f->ratio = strtod(s + 6, &end);
		if (errno || end == s + 6 || *end || !(f->ratio >= 1.0) ||
		    f->ratio > 1e6)
			return -EINVAL;
	} else
		return -EINVAL;
	return 0;
}

/* splitmix64: a good 64-bit stream from any state, zero included. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The stream state of page @index; words 2, 3, ... draw from it in order. */
static uint64_t stream_start(uint64_t seed, uint64_t index)
{
	uint64_t st = seed ^ (index * 0xd6e8feb86659fd93ull);

	return splitmix64(&st);
}

static void fill_random(uint64_t *words, size_t nwords, uint64_t *st)
{
	size_t w;

	for (w = 2; w < nwords; w++)
		words[w] = splitmix64(st);
}

/* 64 common English words: 6 bits pick one. */
static const char *const vocab[] = {
	"the", "of", "and", "to", "in", "is", "that", "for",
	"it", "as", "was", "with", "be", "by", "on", "not",
	"he", "this", "are", "or", "his", "from", "at", "which",
	"but", "have", "an", "had", "they", "you", "were", "their",
	"one", "all", "we", "can", "her", "has", "there", "been",
	"if", "more", "when", "will", "would", "who", "so", "no",
	"memory", "page", "system", "process", "value", "number", "time",
	"user", "file", "data", "state", "guest", "host", "kernel", "buffer",
	"list",
};
_Static_assert(sizeof(vocab) / sizeof(vocab[0]) == 64, "6 bits pick a word");

/*
 * English-like text after the 16-byte header: words from vocab, separated
 * by a space, sometimes ", " or ". ", sometimes a newline.  Each word takes
 * 10 bits of the stream (6 for the word, 4 for what follows it).
 */
static void fill_text(uint64_t *words, size_t nwords, uint64_t *st)
{
	char *p = (char *)(void *)(words + 2);
	char *end = (char *)(void *)(words + nwords);
	uint64_t r = 0;
	int bits = 0;

	while (p < end) {
		const char *word, *sep;
		unsigned v;
		size_t n;

		if (bits < 10) {
			r = splitmix64(st);
			bits = 64;
		}
		v = (unsigned)(r & 0x3ff);
		r >>= 10;
		bits -= 10;
		word = vocab[v & 63];
		switch (v >> 6) {
		case 0: sep = ". "; break;
		case 1: sep = ".\n"; break;
		case 2: case 3: sep = ", "; break;
		default: sep = " "; break;
		}
		n = strlen(word);
		if (n > (size_t)(end - p))
			n = (size_t)(end - p);
		memcpy(p, word, n);
		p += n;
		n = strlen(sep);
		if (n > (size_t)(end - p))
			n = (size_t)(end - p);
		memcpy(p, sep, n);
		p += n;
	}
}

/* One stream word in every 32 (from word 32 on), zeroes elsewhere. */
static void fill_sparse(uint64_t *words, size_t nwords, uint64_t *st)
{
	size_t w;

	for (w = 2; w < nwords; w++)
		words[w] = (w % 32 == 0) ? splitmix64(st) : 0;
}

/* Words 2 .. nwords/R - 1 from the stream, zeroes after them. */
static void fill_ratio(uint64_t *words, size_t nwords, uint64_t *st,
		       double ratio)
{
	size_t nrand = (size_t)((double)nwords / ratio), w;

	/* Rounded up, without libm (the tools link nothing but libc). */
	if ((double)nrand * ratio < (double)nwords)
		nrand++;
	for (w = 2; w < nwords; w++)
		words[w] = w < nrand ? splitmix64(st) : 0;
}

/* The kind page @index of a mixed fill gets: 1/8 random, 1/2 text, 3/8
 * sparse, decided by (seed, index) alone. */
static enum fill_kind mixed_kind(uint64_t seed, uint64_t index)
{
	uint64_t st = ~seed ^ (index * 0x9e6c63d0676a9a99ull);
	unsigned pick = (unsigned)(splitmix64(&st) & 7);

	if (pick == 0)
		return FILL_RANDOM;
	return pick <= 4 ? FILL_TEXT : FILL_SPARSE;
}

/* The full contents of page @index. */
static void fill_page(uint64_t *words, size_t nwords, uint64_t seed,
		      uint64_t index, const struct fill *f)
{
	uint64_t st = stream_start(seed, index);
	enum fill_kind kind = f->kind;

	if (kind == FILL_MIXED)
		kind = mixed_kind(seed, index);
	words[0] = index;
	words[1] = seed;
	switch (kind) {
	case FILL_TEXT:
		fill_text(words, nwords, &st);
		break;
	case FILL_SPARSE:
		fill_sparse(words, nwords, &st);
		break;
	case FILL_RATIO:
		fill_ratio(words, nwords, &st, f->ratio);
		break;
	default:
		fill_random(words, nwords, &st);
		break;
	}
}

/*
 * Compares page @index with what it should hold (built in @want).  Returns
 * the first differing word, or nwords if the page is intact.
 */
static size_t check_page(const uint64_t *words, size_t nwords, uint64_t seed,
			 uint64_t index, const struct fill *f, uint64_t *want,
			 uint64_t *expected)
{
	size_t w;

	fill_page(want, nwords, seed, index, f);
	if (!memcmp(words, want, nwords * sizeof(*words)))
		return nwords;
	for (w = 0; w < nwords && words[w] == want[w]; w++)
		;
	*expected = want[w];
	return w;
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

/* pagecheck dump: the pages, one after another, on stdout. */
static int dump(uint64_t npages, size_t page_bytes, uint64_t seed,
		const struct fill *f)
{
	size_t nwords = page_bytes / sizeof(uint64_t);
	uint64_t *page = malloc(page_bytes), i;

	if (!page) {
		fprintf(stderr, "pagecheck: out of memory\n");
		return 2;
	}
	for (i = 0; i < npages; i++) {
		fill_page(page, nwords, seed, i, f);
		if (fwrite(page, 1, page_bytes, stdout) != page_bytes)
			break;
	}
	free(page);
	if (i < npages || fflush(stdout) != 0) {
		fprintf(stderr, "pagecheck: write to stdout failed: %s\n",
			strerror(errno));
		return 2;
	}
	return 0;
}

static double seconds(uint64_t ns)
{
	return (double)ns / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "hold", required_argument, NULL, 'H' },
		{ "passes", required_argument, NULL, 'n' },
		{ "fill", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size_bytes, seed, hold_s = 0, passes = 1, npages, i, pass;
	uint64_t bad_total = 0, t0, write_ns, verify_ns = 0;
	struct fill fill = { .kind = FILL_RANDOM, .name = "random" };
	size_t page_bytes, nwords;
	unsigned char *mem, *bad;
	uint64_t *want;
	bool do_dump;
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
		case 'f':
			if (parse_fill(optarg, &fill)) {
				fprintf(stderr, "pagecheck: bad --fill '%s' "
					"(random, text, sparse, mixed or "
					"ratio:R with R >= 1)\n", optarg);
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
	if (argc - optind != 3 || (strcmp(argv[optind], "write") != 0 &&
				   strcmp(argv[optind], "dump") != 0)) {
		usage(stderr);
		return 2;
	}
	do_dump = !strcmp(argv[optind], "dump");
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

	if (do_dump) {
		/* Full buffering: this output is data, not progress lines. */
		setvbuf(stdout, NULL, _IOFBF, 1 << 16);
		return dump(npages, page_bytes, seed, &fill);
	}

	mem = mmap(NULL, (size_t)(npages * page_bytes), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bad = calloc((size_t)npages, 1);
	want = malloc(page_bytes);
	if (mem == MAP_FAILED || !bad || !want) {
		fprintf(stderr, "pagecheck: cannot allocate %s: %s\n",
			argv[optind + 1], strerror(errno));
		return 2;
	}

	/* The default fill keeps the line as it always was. */
	if (fill.kind == FILL_RANDOM)
		printf("pagecheck: writing %llu pages, seed %llu\n",
		       (unsigned long long)npages, (unsigned long long)seed);
	else
		printf("pagecheck: writing %llu pages, seed %llu, fill %s\n",
		       (unsigned long long)npages, (unsigned long long)seed,
		       fill.name);
	t0 = tool_now_ns();
	for (i = 0; i < npages; i++)
		fill_page((uint64_t *)(void *)(mem + i * page_bytes), nwords,
			  seed, i, &fill);
	write_ns = tool_now_ns() - t0;
	printf("pagecheck: written %llu pages\n", (unsigned long long)npages);

	for (pass = 1; pass <= passes; pass++) {
		uint64_t bad_pass = 0;

		if (hold_s) {
			printf("pagecheck: holding %llu s\n",
			       (unsigned long long)hold_s);
			tool_sleep_s(hold_s);
		}
		t0 = tool_now_ns();
		for (i = 0; i < npages; i++) {
			const uint64_t *words =
				(const uint64_t *)(void *)(mem + i * page_bytes);
			uint64_t expected = 0;
			size_t w;

			w = check_page(words, nwords, seed, i, &fill, want,
				       &expected);
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
		verify_ns += tool_now_ns() - t0;
		printf("pagecheck: pass %llu/%llu: %llu mismatches\n",
		       (unsigned long long)pass, (unsigned long long)passes,
		       (unsigned long long)bad_pass);
	}

	printf("pagecheck: write %.2f s, verify %.2f s\n", seconds(write_ns),
	       seconds(verify_ns));
	printf("pagecheck: %llu pages, %llu mismatches\n",
	       (unsigned long long)npages, (unsigned long long)bad_total);
	munmap(mem, (size_t)(npages * page_bytes));
	free(bad);
	free(want);
	return bad_total ? 1 : 0;
}
