/*
 * fuzzutil: helpers shared by the fuzz targets (fuzzutil.h).
 */
#include "fuzzutil.h"

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

unsigned fuzz_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	if (!d) {
		fprintf(stderr, "fuzz: opendir /proc/self/fd failed\n");
		abort();
	}
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	/* The directory's own descriptor was open while counting. */
	return n - 1;
}

uint8_t *fuzz_guest_ram(const char *name, size_t bytes, int *fd)
{
	uint8_t *p;

	*fd = memfd_create(name, MFD_CLOEXEC);
	if (*fd < 0 || ftruncate(*fd, (off_t)bytes) < 0)
		abort();
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	if (p == MAP_FAILED)
		abort();
	return p;
}
