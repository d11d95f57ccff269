/*
 * claim_latency: how long staking a claim takes, by claim size, next to how
 * long populating the same amount takes.  The claim is bookkeeping under one
 * mutex, so its latency should not depend on the size; populating is
 * proportional to it.  That gap is why claims exist (seeds/004: a launch
 * that cannot fit is refused before minutes of populating, not after).
 *
 * Claim: per size, many iterations of pool_claim(size) + pool_claim(0) on a
 * pool with a few other guests in it; only the claim call is timed
 * (CLOCK_MONOTONIC), p50 and p99 reported, with the timer's own cost.
 * Populate: per size up to a limit (default 1 GiB), a fresh O_TMPFILE in
 * /dev/shm filled with populate_file() (2 MiB chunks, 4 KiB fallback); the
 * median of a few runs.  Larger sizes print "-": nothing is extrapolated.
 *
 * Usage: claim_latency [-n iterations] [-r populate-runs] [-p max-populate]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "benchstat.h"
#include "loop.h"
#include "pool.h"
#include "populate.h"
#include "size.h"

#define OTHER_GUESTS	63	/* so the lookup is not in a table of one */
#define MAX_RUNS	15

static const uint64_t sizes_bytes[] = {
	1ull << 20, 64ull << 20, 1ull << 30, 16ull << 30, 64ull << 30,
};
#define NR_SIZES (sizeof(sizes_bytes) / sizeof(sizes_bytes[0]))

static void timer_cost(uint64_t *samples, size_t n, uint64_t *p50)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = loop_now_ns();

		samples[i] = loop_now_ns() - t0;
	}
	*p50 = bench_percentile(samples, n, 50);
}

/*
 * Per-call samples are quantised by the clock (its reads cost about as much
 * as a claim), so also time the n pairs as one batch: the mean of
 * claim + cancel with no timer in between.
 */
static int claim_latency(struct pool *pool, uint64_t guest, uint64_t pages,
			 uint64_t *samples, size_t n, uint64_t *p50,
			 uint64_t *p99, double *pair_mean)
{
	uint64_t start;
	int rc;

	/* Warm up caches and the branch predictor before timing. */
	for (size_t i = 0; i < n / 10 + 1; i++) {
		rc = pool_claim(pool, guest, pages);
		if (rc)
			return rc;
		pool_claim(pool, guest, 0);
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = loop_now_ns();

		rc = pool_claim(pool, guest, pages);
		samples[i] = loop_now_ns() - t0;
		if (rc)
			return rc;
		pool_claim(pool, guest, 0);
	}
	*p50 = bench_percentile(samples, n, 50);
	*p99 = bench_percentile(samples, n, 99);
	start = loop_now_ns();
	for (size_t i = 0; i < n; i++) {
		rc = pool_claim(pool, guest, pages);
		pool_claim(pool, guest, 0);
	}
	*pair_mean = (double)(loop_now_ns() - start) / (double)n;
	return rc;
}

static int fallocate_any(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

/* fallocate that refuses anything over 4 KiB as if memory were too
 * fragmented for huge pages: populate's fallback path, timed. */
static int fallocate_4k_only(int fd, int mode, off_t off, off_t len)
{
	if (len > (off_t)POPULATE_PAGE_BYTES) {
		errno = ENOSPC;
		return -1;
	}
	return fallocate(fd, mode, off, len);
}

/* One populate of @bytes into a fresh tmpfs file; its time in ns. */
static int populate_once(populate_fallocate_fn falloc, uint64_t bytes,
			 uint64_t *ns, struct populate_progress *r)
{
	struct stat st;
	uint64_t t0;
	int fd, rc;

	fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	t0 = loop_now_ns();
	rc = populate_file_with(falloc, fd, 0, bytes, NULL, NULL, r);
	*ns = loop_now_ns() - t0;
	/* Check it really is allocated, not just sized. */
	if (rc == 0 && (fstat(fd, &st) < 0 ||
			(uint64_t)st.st_blocks * 512 < bytes))
		rc = -EIO;
	close(fd);
	return rc;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-n claim-iterations] [-r populate-runs 1..%d]"
		" [-p max-populate-size, e.g. 1G, 0 for none]\n", argv0,
		MAX_RUNS);
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t iters = 200000, max_populate = 1ull << 30, runs = 5, tc;
	uint64_t *samples;
	struct pool *pool;
	char buf[32];
	int opt, rc;

	while ((opt = getopt(argc, argv, "n:r:p:")) != -1) {
		switch (opt) {
		case 'n':
			if (size_parse(optarg, &iters) || iters == 0 ||
			    iters > 100000000)
				usage(argv[0]);
			break;
		case 'r':
			if (size_parse(optarg, &runs) || runs == 0 ||
			    runs > MAX_RUNS)
				usage(argv[0]);
			break;
		case 'p':
			if (size_parse(optarg, &max_populate))
				usage(argv[0]);
			break;
		default:
			usage(argv[0]);
		}
	}
	samples = calloc(iters, sizeof(*samples));
	if (!samples)
		return 1;
	/* Budget: enough for the largest claim plus the other guests. */
	rc = pool_create(128ull << 30, &pool);
	for (uint64_t g = 0; rc == 0 && g < OTHER_GUESTS; g++) {
		rc = pool_guest_add(pool, 1000 + g * 17, 1 << 18);
		if (rc == 0)
			rc = pool_grow(pool, 1000 + g * 17, 1 << 10);
	}
	if (rc == 0)
		rc = pool_guest_add(pool, 1, POOL_GUEST_MAX_PAGES);
	if (rc) {
		fprintf(stderr, "pool setup: %s\n", strerror(-rc));
		return 1;
	}
	timer_cost(samples, iters, &tc);

	printf("| claim size | claim p50 (ns) | claim p99 (ns) "
	       "| claim+cancel mean (ns) | populate, 2 MiB chunks (ms) "
	       "| populate, 4 KiB only (ms) | populate / claim p50 |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t s = 0; s < NR_SIZES; s++) {
		uint64_t bytes = sizes_bytes[s], p50, p99, ms[2];
		double pair;

		rc = claim_latency(pool, 1, bytes / POOL_PAGE_SIZE, samples,
				   iters, &p50, &p99, &pair);
		if (rc) {
			fprintf(stderr, "claim %s: %s\n",
				size_format(bytes, buf, sizeof(buf)),
				strerror(-rc));
			return 1;
		}
		printf("| %s | %" PRIu64 " | %" PRIu64 " | %.1f ",
		       size_format(bytes, buf, sizeof(buf)), p50, p99, pair);
		if (bytes > max_populate) {
			printf("| - | - | - |\n");
			continue;
		}
		for (int mode = 0; mode < 2; mode++) {
			populate_fallocate_fn f = mode ? fallocate_4k_only :
							 fallocate_any;
			uint64_t times[MAX_RUNS];
			struct populate_progress r = { 0 };

			for (uint64_t i = 0; i < runs; i++) {
				rc = populate_once(f, bytes, &times[i], &r);
				if (rc) {
					fprintf(stderr, "populate %s: %s\n",
						size_format(bytes, buf,
							    sizeof(buf)),
						strerror(-rc));
					return 1;
				}
			}
			/* Sanity: the path taken is the one named. */
			if (mode ? r.fallback_pages != bytes / POPULATE_PAGE_BYTES :
				   r.fallback_pages != 0) {
				fprintf(stderr, "populate took the wrong path\n");
				return 1;
			}
			bench_sort_u64(times, runs);
			ms[mode] = times[runs / 2];
			printf("| %.2f ", (double)ms[mode] / 1e6);
		}
		printf("| %.0fx |\n", (double)ms[0] / (double)p50);
	}
	printf("\nclaim: %" PRIu64 " iterations per size, %d other guests in the"
	       " pool; p50/p99 include a clock_gettime pair (%" PRIu64 " ns p50)."
	       "\npopulate: O_TMPFILE in /dev/shm, median of %" PRIu64 " runs.\n",
	       iters, OTHER_GUESTS, tc, runs);
	printf("reproduce: meson setup build && ninja -C build bench/claim_latency"
	       " && ./build/bench/claim_latency -n %" PRIu64 " -r %" PRIu64
	       " -p %s\n", iters, runs, size_format(max_populate, buf, sizeof(buf)));
	pool_destroy(pool);
	free(samples);
	return 0;
}
