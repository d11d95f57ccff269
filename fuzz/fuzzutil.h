/*
 * fuzzutil: what several fuzz targets check the same way.
 *
 * Every target that drives a device through a socket checks, after each
 * input, that it holds exactly the descriptors it held before: a device
 * that fails must still close everything it took.
 */
#ifndef EBB_FUZZUTIL_H
#define EBB_FUZZUTIL_H

/* Descriptors this process has open now; aborts if it cannot tell. */
unsigned fuzz_count_fds(void);

#endif
