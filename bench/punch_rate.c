/*
 * punch_rate: how fast the host gets memory back by punching holes in a
 * guest's RAM file, by the size of each punch.
 *
 * ebbd returns guest memory with fallocate(PUNCH_HOLE | KEEP_SIZE) on the
 * tmpfs file that backs the guest (src/vhost/guestmem.c,
 * guestmem_discard): free page reporting hands it 2 MiB blocks, a balloon
 * inflate hands it 4 KiB pfns that it coalesces into runs.  This measures the cost of that syscall per
 * unit: a file of SIZE (default 1 GiB) in /dev/shm is populated with
 * fallocate, then punched out completely in units of 2 MiB, 256, 128 and
 * 64 KiB and 4 KiB (in file order), and 4 KiB again in a shuffled order
 * (scattered pfns, as a balloon inflate may hand them over).  128 and
 * 256 KiB straddle x86's tlb_single_page_flush_ceiling (33 pages): up to
 * it a punch of a mapped range flushes the TLB page by page, above it once.  Each is timed alone (populating is
 * not timed), repeated RUNS times (default 5), and the median reported as
 * GiB/s of memory returned and µs per fallocate call.
 *
 * Two setups per unit:
 *   unmapped: nobody maps the file; the punch only frees page-cache pages.
 *   mapped:   the file is also mmap'ed MAP_SHARED and every page faulted in
 *             (read), as the guest's own mapping of its RAM is; the punch
 *             must then also zap the page-table entries.
 * Every run checks that st_blocks went to 0 (everything was really freed).
 *
 * Usage: punch_rate [-s SIZE] [-r RUNS] [-d DIR]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "benchstat.h"
#include "loop.h"
#include "size.h"

#define MAX_RUNS	31
#define PAGE		4096ull

struct unit {
	const char *name;
	uint64_t bytes;
	int shuffled;
};

static const struct unit units[] = {
	{ "2 MiB", 2ull << 20, 0 },
	{ "256 KiB", 256ull << 10, 0 },
	{ "128 KiB", 128ull << 10, 0 },
	{ "64 KiB", 64ull << 10, 0 },
	{ "4 KiB", 4ull << 10, 0 },
	{ "4 KiB, shuffled", 4ull << 10, 1 },
};
#define NR_UNITS (sizeof(units) / sizeof(units[0]))

/* xorshift64*: a fixed, cheap permutation source (not timed). */
static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void shuffle(uint32_t *idx, uint64_t n, uint64_t seed)
{
	for (uint64_t i = 0; i < n; i++)
		idx[i] = (uint32_t)i;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = rng(&seed) % (i + 1);
		uint32_t t = idx[i];

		idx[i] = idx[j];
		idx[j] = t;
	}
}

static int allocated(int fd, uint64_t *bytes)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

/*
 * One run: populate @fd to @size, optionally map and fault it in, punch it
 * out in @u units (timed), check it is empty.  Returns ns, 0 on failure.
 */
static uint64_t one_run(int fd, uint64_t size, const struct unit *u,
			int mapped, const uint32_t *order)
{
	uint64_t n = size / u->bytes, t0, t, got;
	volatile unsigned char *map = NULL;
	unsigned sum = 0;

	if (fallocate(fd, 0, 0, (off_t)size) < 0) {
		fprintf(stderr, "punch_rate: populate: %s\n", strerror(errno));
		return 0;
	}
	if (allocated(fd, &got) < 0 || got < size) {
		fprintf(stderr, "punch_rate: populate left %" PRIu64 " of %"
			PRIu64 " bytes allocated\n", got, size);
		return 0;
	}
	if (mapped) {
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			fprintf(stderr, "punch_rate: mmap: %s\n", strerror(errno));
			return 0;
		}
		for (uint64_t off = 0; off < size; off += PAGE)
			sum += map[off];
		(void)sum;
	}

	t0 = loop_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = order ? order[i] : i;

		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(k * u->bytes), (off_t)u->bytes) < 0) {
			fprintf(stderr, "punch_rate: punch: %s\n", strerror(errno));
			return 0;
		}
	}
	t = loop_now_ns() - t0;

	if (map)
		munmap((void *)map, size);
	if (allocated(fd, &got) < 0 || got != 0) {
		fprintf(stderr, "punch_rate: %" PRIu64 " bytes still allocated "
			"after punching\n", got);
		return 0;
	}
	return t ? t : 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: punch_rate [-s SIZE] [-r RUNS] [-d DIR]\n"
		   "  -s SIZE  file size, a multiple of 2 MiB (default 1G)\n"
		   "  -r RUNS  runs per cell, median reported (default 5, max %d)\n"
		   "  -d DIR   a tmpfs directory (default /dev/shm)\n", MAX_RUNS);
}

int main(int argc, char **argv)
{
	uint64_t size = 1ull << 30, samples[MAX_RUNS];
	uint64_t res[2][NR_UNITS], lo[2][NR_UNITS], hi[2][NR_UNITS];
	const char *dir = "/dev/shm";
	unsigned runs = 5;
	uint32_t *order;
	char buf[16];
	int c, fd;

	while ((c = getopt(argc, argv, "s:r:d:h")) != -1) {
		switch (c) {
		case 's':
			if (size_parse(optarg, &size) < 0 || !size ||
			    size % (2ull << 20)) {
				fprintf(stderr, "punch_rate: bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'r':
			runs = (unsigned)atoi(optarg);
			if (runs < 1 || runs > MAX_RUNS) {
				usage(stderr);
				return 2;
			}
			break;
		case 'd':
			dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "punch_rate: O_TMPFILE in %s: %s\n", dir,
			strerror(errno));
		return 1;
	}
	order = malloc((size / PAGE) * sizeof(*order));
	if (!order) {
		fprintf(stderr, "punch_rate: out of memory\n");
		return 1;
	}
	shuffle(order, size / PAGE, 0x9e3779b97f4a7c15ull);

	for (int mapped = 0; mapped < 2; mapped++) {
		for (unsigned u = 0; u < NR_UNITS; u++) {
			for (unsigned r = 0; r < runs; r++) {
				samples[r] = one_run(fd, size, &units[u], mapped,
						     units[u].shuffled ? order : NULL);
				if (!samples[r])
					return 1;
			}
			res[mapped][u] = bench_median(samples, runs);	/* sorts */
			lo[mapped][u] = samples[0];
			hi[mapped][u] = samples[runs - 1];
			fprintf(stderr, "  %-16s %-8s ms: min %.1f median %.1f "
				"max %.1f\n", units[u].name,
				mapped ? "mapped" : "unmapped", lo[mapped][u] / 1e6,
				res[mapped][u] / 1e6, hi[mapped][u] / 1e6);
		}
	}

	printf("punch_rate: %s file in %s, fallocate(PUNCH_HOLE|KEEP_SIZE) over "
	       "all of it, %u runs per row\n\n",
	       size_format(size, buf, sizeof(buf)), dir, runs);
	printf("Reproduce: `ninja -C build bench/punch_rate && ./build/bench/punch_rate");
	for (int i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf("`\n\n");
	printf("| punch unit | file | calls | median ms (min–max) | GiB/s (median) | "
	       "µs per call (median) |\n");
	printf("|---|---|---:|---:|---:|---:|\n");
	for (int m = 0; m < 2; m++) {
		for (unsigned u = 0; u < NR_UNITS; u++) {
			uint64_t calls = size / units[u].bytes;
			double sec = res[m][u] / 1e9;

			printf("| %s | %s | %" PRIu64 " | %.1f (%.1f–%.1f) | %.2f | "
			       "%.2f |\n", units[u].name,
			       m ? "mapped, faulted in" : "not mapped", calls,
			       res[m][u] / 1e6, lo[m][u] / 1e6, hi[m][u] / 1e6,
			       (double)size / (1ull << 30) / sec,
			       res[m][u] / 1e3 / (double)calls);
		}
	}
	free(order);
	close(fd);
	return 0;
}
