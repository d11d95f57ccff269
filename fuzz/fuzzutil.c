/*
 * fuzzutil: helpers shared by the fuzz targets (fuzzutil.h).
 */
#include "fuzzutil.h"

#include <dirent.h>
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
