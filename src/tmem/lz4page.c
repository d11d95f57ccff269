/*
 * lz4page: ebb's LZ4 block compressor for single pages, sized for one page
 * (16-bit positions, 8 KiB table); liblz4 decompresses (API in lz4page.h).
 */
/*
 * The parse is LZ4's classic greedy one: hash the bytes at each position,
 * look up the last position with the same hash, and if the bytes really
 * match (at least min_match of them) extend the match both ways and emit
 * a sequence; otherwise step on, faster and faster the longer nothing
 * matches (incompressible pages cost little).  After a match the position
 * just before its end is hashed too, and the position right after it is
 * tried at once, as runs of matches are common.
 *
 * The block format's end rules (lz4_Block_format.md, "End of block
 * conditions") are what let a decoder copy in wide chunks:
 *   - the last 5 bytes are always literals (LASTLITERALS);
 *   - the last match starts at least 12 bytes before the end (MFLIMIT).
 * Inputs shorter than MFLIMIT + 1 are stored as one literal run.
 *
 * Every position is 16-bit, so the table is 8 KiB and is cleared per
 * call: a stale entry from the previous page would pass the bounds test
 * often enough to cost a third of the speed in mispredicted branches
 * (measured), more than the clearing does.
 */
#include "lz4page.h"

#include <errno.h>
#include <string.h>

#define MINMATCH	4	/* the format's shortest match */
#define MFLIMIT		12
#define LASTLITERALS	5
#define SKIP_TRIGGER	6	/* step grows by one every 64 misses */
#define RUN_MASK	15	/* 4-bit length fields; 15 = more bytes */

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void wr16le(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* The low min_match bytes of a little-endian 64-bit load. */
static inline uint64_t key_mask(unsigned min_match)
{
	return min_match >= 8 ? ~0ull : (1ull << (8 * min_match)) - 1;
}

/* Hash of the min_match bytes at @p (all 8 for min_match 8), so that a
 * table hit is a candidate for a match of the length we would take. */
static inline uint32_t hash_at(const uint8_t *p, uint64_t mask)
{
	return (uint32_t)(((rd64(p) & mask) * 0x9E3779B97F4A7C15ull) >>
			  (64 - LZ4PAGE_HASH_LOG));
}

/* Bytes equal at @a and @b, reading @a no further than @alimit. */
static inline size_t match_len(const uint8_t *a, const uint8_t *b,
			       const uint8_t *alimit)
{
	const uint8_t *start = a;

	while (a + 8 <= alimit) {
		uint64_t x = rd64(a) ^ rd64(b);

		if (x)
			return (size_t)(a - start) +
			       ((unsigned)__builtin_ctzll(x) >> 3);
		a += 8;
		b += 8;
	}
	while (a < alimit && *a == *b) {
		a++;
		b++;
	}
	return (size_t)(a - start);
}

/* A length's continuation bytes (each 255 adds 255, the last < 255). */
static inline uint8_t *put_len(uint8_t *op, size_t n)
{
	while (n >= 255) {
		*op++ = 255;
		n -= 255;
	}
	*op++ = (uint8_t)n;
	return op;
}

/* Copy @n literals.  Reads may run up to 7 bytes past @n: callers only
 * copy literals that end at least LASTLITERALS before the input's end, or
 * use memcpy for the final run. */
static inline void copy_literals(uint8_t *op, const uint8_t *ip, size_t n,
				 const uint8_t *oend)
{
	uint8_t *end = op + n;

	if ((size_t)(oend - op) < n + 8) {
		memcpy(op, ip, n);
		return;
	}
	do {
		memcpy(op, ip, 8);
		op += 8;
		ip += 8;
	} while (op < end);
}

int lz4page_init(struct lz4page *z, unsigned min_match)
{
	if (!z || min_match < MINMATCH || min_match > 8)
		return -EINVAL;
	z->min_match = min_match;
	return 0;
}

/*
 * About 110 lines on purpose: this is the store's hottest loop (every put),
 * and its cursors (ip, op, anchor, the hash table) stay in registers only
 * while the match search and the sequence emit live in one function.
 */
int lz4page_compress(struct lz4page *z, const void *srcv, size_t len,
		     void *dstv, size_t cap, size_t *out)
{
	const uint8_t *src = srcv, *ip = src, *anchor = src;
	const uint8_t *iend = src + len;
	const uint8_t *matchlimit, *mflimit;
	uint8_t *dst = dstv, *op = dst, *oend = dst + cap;
	const uint64_t mask = key_mask(z->min_match);
	const size_t extra = z->min_match - MINMATCH;
	uint16_t *t = z->table;
	size_t ll;

	if (len > LZ4PAGE_MAX_INPUT)
		return -EINVAL;
	if (len < MFLIMIT + 1)
		goto last_literals;
	matchlimit = iend - LASTLITERALS;
	/* The last match starts MFLIMIT before the end, and its key bytes
	 * (min_match, up to 8) must end before the last literals. */
	mflimit = iend - (MFLIMIT > LASTLITERALS + z->min_match ?
			  MFLIMIT : LASTLITERALS + z->min_match);
	memset(t, 0, sizeof(z->table));
	ip++;	/* position 0 stays in the table as every bucket's default */

	for (;;) {
		const uint8_t *match, *next = ip;
		unsigned step = 1, misses = 1u << SKIP_TRIGGER;
		uint8_t *token;
		uint32_t h = hash_at(ip, mask);
		size_t ml;

		/* Find a match: candidate earlier than ip, same key bytes. */
		do {
			ip = next;
			next += step;
			step = misses++ >> SKIP_TRIGGER;
			if (next > mflimit)
				goto last_literals;
			match = src + t[h];
			t[h] = (uint16_t)(ip - src);
			h = hash_at(next, mask);
		} while (match >= ip || ((rd64(match) ^ rd64(ip)) & mask));

		/* Extend backwards over literals that match too. */
		while (ip > anchor && match > src && ip[-1] == match[-1]) {
			ip--;
			match--;
		}
		ll = (size_t)(ip - anchor);
		/* token, literal length bytes, literals, offset */
		if ((size_t)(oend - op) < 1 + ll / 255 + 1 + ll + 2)
			return -E2BIG;
		token = op++;
		if (ll >= RUN_MASK) {
			*token = RUN_MASK << 4;
			op = put_len(op, ll - RUN_MASK);
		} else {
			*token = (uint8_t)(ll << 4);
		}
		copy_literals(op, anchor, ll, oend);
		op += ll;

		for (;;) {
			/* Offset and match length of the sequence in *token. */
			wr16le(op, (uint16_t)(ip - match));
			op += 2;
			ml = extra + match_len(ip + z->min_match,
					       match + z->min_match, matchlimit);
			ip += ml + MINMATCH;
			if (ml >= RUN_MASK) {
				if ((size_t)(oend - op) < ml / 255 + 1)
					return -E2BIG;
				*token |= RUN_MASK;
				op = put_len(op, ml - RUN_MASK);
			} else {
				*token |= (uint8_t)ml;
			}
			anchor = ip;
			if (ip > mflimit)
				goto last_literals;
			t[hash_at(ip - 2, mask)] = (uint16_t)(ip - 2 - src);
			/* A match right here continues without literals. */
			h = hash_at(ip, mask);
			match = src + t[h];
			t[h] = (uint16_t)(ip - src);
			if (match >= ip || ((rd64(match) ^ rd64(ip)) & mask))
				break;
			if ((size_t)(oend - op) < 1 + 2)
				return -E2BIG;
			token = op++;
			*token = 0;
		}
		ip++;
	}

last_literals:
	ll = (size_t)(iend - anchor);
	if ((size_t)(oend - op) < 1 + ll + (ll + 255 - RUN_MASK) / 255)
		return -E2BIG;
	if (ll >= RUN_MASK) {
		*op++ = RUN_MASK << 4;
		op = put_len(op, ll - RUN_MASK);
	} else {
		*op++ = (uint8_t)(ll << 4);
	}
	memcpy(op, anchor, ll);
	op += ll;
	*out = (size_t)(op - dst);
	return 0;
}
