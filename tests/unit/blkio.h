/*
 * blkio: what the storage backend tests (swapstore, cachedisk) share: a
 * seeded xorshift generator, requests sent to a backend through a random
 * iovec split, the way a guest's descriptor chains cut them, and a look
 * at which of a file's pages the host page cache holds.
 *
 * Each test program seeds the generator once (blkio_seed) so that its
 * random cases are the same on every run.  Not thread-safe: only a test's
 * main thread draws numbers.
 */
#ifndef EBB_TEST_BLKIO_H
#define EBB_TEST_BLKIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blkback.h"

void blkio_seed(uint64_t seed);
uint64_t blkio_rng(void);
/* Uniform-ish in [0, n); n > 0. */
uint64_t blkio_rnd(uint64_t n);

/* Split [p, p + len) into 1..max segments (max >= 2) of random length:
 * empty ones (legal), tiny ones that are not sector-sized, whole pages
 * and up to three pages.  Returns the number of segments. */
unsigned blkio_split(struct iovec *iov, unsigned max, uint8_t *p, size_t len);

/* Write @len bytes of @data at @off through a random split of @buf (at
 * least @len bytes) into @iov (max entries).  The backend's return. */
int blkio_write(const struct blkback *bb, uint64_t off, const uint8_t *data,
		size_t len, uint8_t *buf, struct iovec *iov, unsigned max);

/* Read @len bytes at @off into @out the same way; @buf is poisoned
 * first, so bytes the backend did not write show.  The backend's return. */
int blkio_read(const struct blkback *bb, uint64_t off, uint8_t *out,
	       size_t len, uint8_t *buf, struct iovec *iov, unsigned max);

/* How many of the 4 KiB pages [first, first + n) of the file open at @fd
 * are in the host page cache (mincore on a mapping).  The file must reach
 * past them. */
unsigned blkio_pages_cached(int fd, uint64_t first, uint64_t n);

/* Whether @fd's file is on tmpfs, where the page cache is the file and
 * page cache advice drops nothing. */
bool blkio_on_tmpfs(int fd);

#endif
