/*
 * memhog: make a guest use a known amount of memory, for host-side tests.
 *
 *   memhog SIZE [--hold SECONDS] [--pattern]
 *
 * 1. Map SIZE bytes of anonymous memory (a fresh mapping rather than
 *    malloc, so that step 4 really returns it to the guest kernel).
 * 2. Write every page.  By default each page is filled with one non-zero
 *    byte value: the page is populated in the guest and thus in the host's
 *    RAM file, yet compresses to almost nothing.  With --pattern each page
 *    gets distinct pseudo-random words instead, so neither compression nor
 *    deduplication on the host can shrink it.
 * 3. Print "memhog: touched SIZE" (SIZE echoed exactly as given, so a test
 *    can grep for the string it sent), then hold for SECONDS if asked.
 * 4. Unmap, print "memhog: done", exit 0.
 *
 * Exit status: 1 if the memory cannot be mapped, 2 on a usage error.  If the
 * guest kernel runs out of memory while touching, the OOM killer ends us
 * and "memhog: done" never appears.
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

static void usage(FILE *f)
{
	fprintf(f, "usage: memhog SIZE [--hold SECONDS] [--pattern]\n"
		   "  SIZE     bytes, or with a binary suffix K, M, G, T\n"
		   "  --hold   keep the memory SECONDS before freeing it\n"
		   "  --pattern  fill pages with incompressible data\n");
}

/* Distinct, incompressible words for page @index (xorshift64*). */
static void fill_random(uint64_t *words, size_t nwords, uint64_t index)
{
	uint64_t x = (index + 1) * 0x9e3779b97f4a7c15ull;
	size_t i;

	for (i = 0; i < nwords; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		words[i] = x * 0x2545f4914f6cdd1dull;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "hold", required_argument, NULL, 'H' },
		{ "pattern", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size_bytes, hold_s = 0, npages, i, t0, elapsed_ms;
	const char *size_arg;
	bool pattern = false;
	size_t page_bytes;
	unsigned char *mem;
	int c, rc;

	/* The console may be a pipe on the host: keep lines in order with
	 * the guest agent's own output. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			if (tool_parse_u64(optarg, &hold_s)) {
				fprintf(stderr, "memhog: bad --hold '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'p':
			pattern = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	size_arg = argv[optind];
	rc = tool_parse_size(size_arg, &size_bytes);
	if (rc || size_bytes == 0 || size_bytes > SIZE_MAX) {
		fprintf(stderr, "memhog: bad SIZE '%s'%s\n", size_arg,
			rc == -ERANGE ? " (too large)" : "");
		return 2;
	}

	page_bytes = (size_t)sysconf(_SC_PAGESIZE);
	npages = (size_bytes + page_bytes - 1) / page_bytes;
	printf("memhog: allocating %s (%llu pages)\n", size_arg,
	       (unsigned long long)npages);

	mem = mmap(NULL, (size_t)size_bytes, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "memhog: cannot allocate %s: %s\n", size_arg,
			strerror(errno));
		return 1;
	}

	t0 = tool_now_ns();
	for (i = 0; i < npages; i++) {
		unsigned char *page = mem + i * page_bytes;
		size_t len = page_bytes;

		/* The last page may be partial when SIZE is not aligned. */
		if (i == npages - 1 && size_bytes % page_bytes)
			len = size_bytes % page_bytes;
		if (pattern && len == page_bytes)
			fill_random((uint64_t *)(void *)page,
				    page_bytes / sizeof(uint64_t), i);
		else
			memset(page, 0xa5, len);
	}
	elapsed_ms = (tool_now_ns() - t0) / 1000000;
	printf("memhog: touched %s\n", size_arg);
	printf("memhog: %llu pages in %llu ms\n", (unsigned long long)npages,
	       (unsigned long long)elapsed_ms);

	if (hold_s) {
		printf("memhog: holding %llu s\n", (unsigned long long)hold_s);
		tool_sleep_s(hold_s);
	}

	munmap(mem, (size_t)size_bytes);
	printf("memhog: done\n");
	return 0;
}
