#include "blkio.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#include "tmem.h"	/* TMEM_PAGE_SIZE */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

void blkio_seed(uint64_t seed)
{
	rng_state = seed ? seed : 1;	/* xorshift stays at 0 forever */
}

uint64_t blkio_rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

uint64_t blkio_rnd(uint64_t n)
{
	return blkio_rng() % n;
}

unsigned blkio_split(struct iovec *iov, unsigned max, uint8_t *p, size_t len)
{
	unsigned n = 0;

	while (len && n < max - 1) {
		size_t k;

		switch (blkio_rnd(4)) {
		case 0:
			k = 0;				/* empty segments are legal */
			break;
		case 1:
			k = 1 + blkio_rnd(16);		/* tiny, not sector-sized */
			break;
		case 2:
			k = TMEM_PAGE_SIZE;
			break;
		default:
			k = 1 + blkio_rnd(3 * TMEM_PAGE_SIZE);
			break;
		}
		if (k > len)
			k = len;
		iov[n].iov_base = p;
		iov[n].iov_len = k;
		p += k;
		len -= k;
		n++;
	}
	iov[n].iov_base = p;
	iov[n].iov_len = len;
	return n + 1;
}

int blkio_write(const struct blkback *bb, uint64_t off, const uint8_t *data,
		size_t len, uint8_t *buf, struct iovec *iov, unsigned max)
{
	unsigned n;

	memcpy(buf, data, len);
	n = blkio_split(iov, max, buf, len);
	return bb->ops->write(bb->be, off, iov, n);
}

int blkio_read(const struct blkback *bb, uint64_t off, uint8_t *out,
	       size_t len, uint8_t *buf, struct iovec *iov, unsigned max)
{
	unsigned n;
	int rc;

	memset(buf, 0xa5, len);
	n = blkio_split(iov, max, buf, len);
	rc = bb->ops->read(bb->be, off, iov, n);
	memcpy(out, buf, len);
	return rc;
}

unsigned blkio_pages_cached(int fd, uint64_t first, uint64_t n)
{
	size_t len = (size_t)(first + n) * TMEM_PAGE_SIZE;
	unsigned char *vec = malloc(first + n);
	unsigned count = 0;
	uint64_t i;
	void *map;

	if (!vec)
		abort();
	map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED || mincore(map, len, vec) || munmap(map, len))
		abort();
	for (i = first; i < first + n; i++)
		count += vec[i] & 1;
	free(vec);
	return count;
}

bool blkio_on_tmpfs(int fd)
{
	struct statfs fs;

	if (fstatfs(fd, &fs))
		abort();
	return fs.f_type == 0x01021994;		/* TMPFS_MAGIC */
}
