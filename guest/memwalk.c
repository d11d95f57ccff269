/*
 * memwalk: memory-access cost, for host huge pages versus 4 KiB host pages
 * under a guest (issue 13).  Shares tool.h with the other guest tools.
 *
 *   memwalk [--size SIZE] [--accesses N] [--rounds R]
 *
 * 1. Map SIZE (default 128M) of anonymous memory and touch every page.
 * 2. Link one 64-byte slot per 4 KiB page into a single random cycle
 *    (Sattolo's shuffle; each slot at a random line of its page), so every
 *    access is a dependent load into another page: the walk measures
 *    latency, with TLB misses on nearly every step once SIZE is far beyond
 *    what the TLB covers, and no prefetcher help.
 * 3. R times (default 5) chase N pointers (default 4M) and print
 *    "memwalk: round r: X ns/access"; then "memwalk: SIZE: median X
 *    ns/access" (the median of the rounds).
 *
 * UML runs guest code natively, so the host's page walk is paid for real;
 * note that UML maps guest user pages into its process-per-address-space
 * host processes 4 KiB at a time, whatever backs the RAM file.
 * Exit status: 0, 1 if memory cannot be mapped, 2 on a usage error.
 */
#include "tool.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PAGE	4096u
#define LINE	64u
#define ROUNDS_MAX 64

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	/* splitmix64: enough for a shuffle, no libc state. */
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Step 2: slot of page i is at base + i*PAGE + line[i]*LINE; each holds
 * the address of the next slot in one random cycle through all pages. */
static void **build_cycle(uint8_t *base, uint64_t pages)
{
	uint64_t *order = malloc(pages * sizeof(*order));
	void **first;

	if (!order)
		return NULL;
	for (uint64_t i = 0; i < pages; i++)
		order[i] = i;
	for (uint64_t i = pages - 1; i > 0; i--) {
		uint64_t j = next_rand() % i;	/* Sattolo: one cycle */
		uint64_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (uint64_t i = 0; i < pages; i++) {
		uint64_t to = order[i];
		void **slot = (void **)(base + i * PAGE +
					(i * 7 % (PAGE / LINE)) * LINE);

		*slot = base + to * PAGE + (to * 7 % (PAGE / LINE)) * LINE;
	}
	first = (void **)base;
	free(order);
	return first;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "accesses", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size = 128ull << 20, n = 4ull << 20, rounds = 5;
	double ns[ROUNDS_MAX];
	uint8_t *base;
	void **p;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int rc = 0;

		switch (c) {
		case 's': rc = tool_parse_size(optarg, &size); break;
		case 'n': rc = tool_parse_u64(optarg, &n); break;
		case 'r': rc = tool_parse_u64(optarg, &rounds); break;
		case 'h':
			printf("usage: memwalk [--size SIZE] [--accesses N] [--rounds R]\n");
			return 0;
		default: rc = -1; break;
		}
		if (rc < 0) {
			fprintf(stderr, "usage: memwalk [--size SIZE] [--accesses N] [--rounds R]\n");
			return 2;
		}
	}
	if (size < 2 * PAGE || n == 0 || rounds == 0 || rounds > ROUNDS_MAX) {
		fprintf(stderr, "memwalk: size >= 8K, accesses >= 1, 1..%d rounds\n",
			ROUNDS_MAX);
		return 2;
	}
	size -= size % PAGE;
	base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (base == MAP_FAILED) {
		perror("memwalk: mmap");
		return 1;
	}
	p = build_cycle(base, size / PAGE);
	if (!p) {
		fprintf(stderr, "memwalk: out of memory\n");
		return 1;
	}
	for (uint64_t r = 0; r < rounds; r++) {
		uint64_t t0 = tool_now_ns();

		for (uint64_t i = 0; i < n; i++)
			p = (void **)*p;
		ns[r] = (double)(tool_now_ns() - t0) / (double)n;
		printf("memwalk: round %llu: %.2f ns/access\n",
		       (unsigned long long)r + 1, ns[r]);
	}
	qsort(ns, rounds, sizeof(ns[0]), cmp_double);
	/* p is printed so the chase cannot be optimised away. */
	printf("memwalk: %llu MiB: median %.2f ns/access (end %p)\n",
	       (unsigned long long)(size >> 20), ns[rounds / 2], (void *)p);
	return 0;
}
