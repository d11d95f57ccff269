/*
 * fuzzutil: what several fuzz targets check the same way.
 *
 * Every target that drives a device through a socket checks, after each
 * input, that it holds exactly the descriptors it held before: a device
 * that fails must still close everything it took.  Those that serve
 * guest memory also share how they make it.
 */
#ifndef EBB_FUZZUTIL_H
#define EBB_FUZZUTIL_H

/* Descriptors this process has open now; aborts if it cannot tell. */
unsigned fuzz_count_fds(void);

#include <stddef.h>
#include <stdint.h>

/* A guest RAM file of @bytes (a memfd named @name) in *@fd, and our shared
 * mapping of it: the guest's view.  Aborts on failure. */
uint8_t *fuzz_guest_ram(const char *name, size_t bytes, int *fd);

#endif
