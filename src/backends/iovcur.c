/*
 * iovcur: a forward cursor over an iovec.  See iovcur.h.
 */
#include "iovcur.h"

#include <assert.h>
#include <string.h>

void iovcur_init(struct iovcur *c, const struct iovec *iov, unsigned cnt)
{
	c->iov = iov;
	c->cnt = cnt;
	c->i = 0;
	c->seg_off = 0;
	c->pos = 0;
}

void iovcur_seek(struct iovcur *c, uint64_t pos)
{
	if (pos < c->pos)
		iovcur_init(c, c->iov, c->cnt);
	/* Land on a segment with room, skipping empty ones. */
	while (c->i < c->cnt) {
		size_t room = c->iov[c->i].iov_len - c->seg_off;

		if (pos - c->pos < room) {
			c->seg_off += pos - c->pos;
			c->pos = pos;
			return;
		}
		c->pos += room;
		c->i++;
		c->seg_off = 0;
	}
	assert(c->pos == pos);	/* only the very end lies past every segment */
}

/* Copy @n bytes from @src (NULL: zeros) to request offset @pos. */
void iovcur_put(struct iovcur *c, uint64_t pos, const uint8_t *src,
		    size_t n)
{
	while (n) {
		size_t k;
		uint8_t *dst;

		iovcur_seek(c, pos);
		assert(c->i < c->cnt);
		k = c->iov[c->i].iov_len - c->seg_off;
		if (k > n)
			k = n;
		dst = (uint8_t *)c->iov[c->i].iov_base + c->seg_off;
		if (src) {
			memcpy(dst, src, k);
			src += k;
		} else {
			memset(dst, 0, k);
		}
		pos += k;
		n -= k;
	}
}

/* Copy @n bytes at request offset @pos into @dst. */
void iovcur_get(struct iovcur *c, uint64_t pos, uint8_t *dst, size_t n)
{
	while (n) {
		size_t k;

		iovcur_seek(c, pos);
		assert(c->i < c->cnt);
		k = c->iov[c->i].iov_len - c->seg_off;
		if (k > n)
			k = n;
		memcpy(dst, (const uint8_t *)c->iov[c->i].iov_base + c->seg_off, k);
		dst += k;
		pos += k;
		n -= k;
	}
}

/* Guest memory for [pos, pos + n) if it lies in one segment, else NULL. */
uint8_t *iovcur_contig(struct iovcur *c, uint64_t pos, size_t n)
{
	iovcur_seek(c, pos);
	if (c->i < c->cnt && c->iov[c->i].iov_len - c->seg_off >= n)
		return (uint8_t *)c->iov[c->i].iov_base + c->seg_off;
	return NULL;
}

uint64_t iovcur_total(const struct iovec *iov, unsigned cnt)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}
