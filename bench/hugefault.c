/*
 * hugefault: what the first write to a 2 MiB block of the page store's
 * huge-page tmpfs costs (hugeram_tmpfile, ebbd's default arena).  The
 * store's put that first writes into a new block pays it once for 512
 * pages, where a memfd arena pays a 4 KiB fault per page.  It is mostly
 * the clearing of the page, and on a VM whose host has not yet backed
 * the memory, the host's own faults: so the first pass (memory the host
 * may never have given this VM) and later passes (memory just freed by
 * the pass before) are printed apart.
 *
 * Usage: hugefault [-b blocks] [-p passes]   (root: it mounts a tmpfs)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "benchstat.h"
#include "hugeram.h"
#include "loop.h"

#define BLOCK	(2ull << 20)
#define MAX_BLOCKS 4096

int main(int argc, char **argv)
{
	static uint64_t t[MAX_BLOCKS];
	unsigned blocks = 128, passes = 3, p, i;
	int a;

	for (a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "-b") && a + 1 < argc)
			blocks = (unsigned)atoi(argv[++a]);
		else if (!strcmp(argv[a], "-p") && a + 1 < argc)
			passes = (unsigned)atoi(argv[++a]);
		else
			blocks = 0;
	}
	if (!blocks || blocks > MAX_BLOCKS || !passes) {
		fprintf(stderr, "usage: hugefault [-b blocks] [-p passes]\n");
		return 2;
	}
	printf("| pass | blocks | first write p50 | max | per 4 KiB page |\n");
	printf("|---:|---:|---:|---:|---:|\n");
	for (p = 1; p <= passes; p++) {
		int fd = hugeram_tmpfile(blocks * BLOCK);
		volatile uint8_t *m;

		if (fd < 0) {
			fprintf(stderr, "hugefault: no huge-page tmpfs: %s\n",
				strerror(-fd));
			return 1;
		}
		if (ftruncate(fd, (off_t)(blocks * BLOCK)))
			return 1;
		m = mmap(NULL, blocks * BLOCK, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			return 1;
		for (i = 0; i < blocks; i++) {
			uint64_t t0 = loop_now_ns();

			m[i * BLOCK] = 1;
			t[i] = loop_now_ns() - t0;
		}
		munmap((void *)m, blocks * BLOCK);
		close(fd);	/* the last reference: the pages go back */
		bench_sort_u64(t, blocks);
		printf("| %u | %u | %.1f us | %.1f us | %.2f us |\n", p, blocks,
		       bench_median(t, blocks) / 1e3, t[blocks - 1] / 1e3,
		       bench_median(t, blocks) / 1e3 / 512);
	}
	printf("\nreproduce: hugefault -b %u -p %u\n", blocks, passes);
	return 0;
}
