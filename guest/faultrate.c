/*
 * faultrate: page-fault throughput, as will-it-scale's page_fault1 measures
 * it, for the cost page states add to every allocation and free.
 *
 *   faultrate [--size SIZE] [--seconds S]
 *
 * Loop: map SIZE (default 16M) of private anonymous memory, write one word
 * per page (each write is a fault that allocates a page), unmap it (which
 * frees them all).  Every page passes once through the page allocator's
 * allocation path and once through its free path, which is where the
 * guest's page-state hooks sit.  After S seconds (default 10) print
 *
 *   faultrate: 123456 faults in 10.00 s: 12345 faults/s
 *
 * Exit status: 0, 1 if memory cannot be mapped, 2 on a usage error.
 */
#include "tool.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: faultrate [--size SIZE] [--seconds S]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size = 16 << 20, seconds = 10, faults = 0, t0, now;
	long page = sysconf(_SC_PAGESIZE);
	int opt;

	while ((opt = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (tool_parse_size(optarg, &size) || size < (uint64_t)page) {
				fprintf(stderr, "faultrate: bad --size %s\n", optarg);
				return 2;
			}
			break;
		case 't':
			if (tool_parse_u64(optarg, &seconds) || !seconds) {
				fprintf(stderr, "faultrate: bad --seconds %s\n", optarg);
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
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	t0 = now = tool_now_ns();
	while (now - t0 < seconds * 1000000000ull) {
		volatile char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t off;

		if (p == MAP_FAILED) {
			perror("faultrate: mmap");
			return 1;
		}
		for (off = 0; off < size; off += page)
			p[off] = 1;
		munmap((void *)p, size);
		faults += size / page;
		now = tool_now_ns();
	}
	printf("faultrate: %llu faults in %.2f s: %.0f faults/s\n",
	       (unsigned long long)faults, (now - t0) / 1e9,
	       faults / ((now - t0) / 1e9));
	return 0;
}
