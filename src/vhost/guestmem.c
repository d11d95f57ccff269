/*
 * guestmem: a guest's memory regions as the backend maps them:
 * translation, hole punching, residency (API in guestmem.h).
 */
#include "guestmem.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void guestmem_init(struct guestmem *gm)
{
	memset(gm, 0, sizeof(*gm));
}

void guestmem_clear(struct guestmem *gm)
{
	for (unsigned i = 0; i < gm->nregions; i++) {
		struct guestmem_region *r = &gm->r[i];

		if (r->map_base)
			munmap(r->map_base, r->map_len);
		if (r->fd >= 0)
			close(r->fd);
	}
	guestmem_init(gm);
}

static bool range_ok(uint64_t start, uint64_t len)
{
	return len > 0 && start + len > start;
}

int guestmem_set_table(struct guestmem *gm, const struct guestmem_region_desc *d,
		 const int *fds, unsigned n)
{
	long pagesz = sysconf(_SC_PAGESIZE);
	int rc = 0;

	guestmem_clear(gm);
	if (n == 0 || n > GUESTMEM_MAX_REGIONS) {
		rc = -EINVAL;
		goto err_close_fds;
	}
	/* 1. Validate every descriptor before mapping anything. */
	for (unsigned i = 0; i < n; i++) {
		struct stat st;

		if (!range_ok(d[i].guest_addr, d[i].size) ||
		    !range_ok(d[i].user_addr, d[i].size) ||
		    !range_ok(d[i].mmap_offset, d[i].size) ||
		    d[i].size > (uint64_t)SIZE_MAX / 2) {
			rc = -EINVAL;
			goto err_close_fds;
		}
		for (unsigned j = 0; j < i; j++) {
			if (d[i].guest_addr < d[j].guest_addr + d[j].size &&
			    d[j].guest_addr < d[i].guest_addr + d[i].size) {
				rc = -EINVAL;
				goto err_close_fds;
			}
		}
		if (fstat(fds[i], &st) < 0) {
			rc = -errno;
			goto err_close_fds;
		}
		/* A short file would SIGBUS us on first touch. */
		if (!S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size < d[i].mmap_offset + d[i].size) {
			rc = -EINVAL;
			goto err_close_fds;
		}
	}
	/* 2. Map each region; mmap needs a page-aligned file offset. */
	for (unsigned i = 0; i < n; i++) {
		struct guestmem_region *r = &gm->r[i];
		uint64_t skew = d[i].mmap_offset % (uint64_t)pagesz;
		void *p;

		r->guest_addr = d[i].guest_addr;
		r->size = d[i].size;
		r->user_addr = d[i].user_addr;
		r->mmap_offset = d[i].mmap_offset;
		r->fd = fds[i];
		gm->nregions = i + 1;
		r->map_len = d[i].size + skew;
		p = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			 r->fd, (off_t)(d[i].mmap_offset - skew));
		if (p == MAP_FAILED) {
			rc = -errno;
			r->map_len = 0;
			/* fds after i are not yet owned by the table. */
			for (unsigned k = i + 1; k < n; k++)
				close(fds[k]);
			guestmem_clear(gm);
			return rc;
		}
		r->map_base = p;
		r->map = (uint8_t *)p + skew;
	}
	return 0;

err_close_fds:
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	return rc;
}

static const struct guestmem_region *find(const struct guestmem *gm, uint64_t addr,
				    uint64_t len, bool user)
{
	if (!range_ok(addr, len))
		return NULL;
	for (unsigned i = 0; i < gm->nregions; i++) {
		const struct guestmem_region *r = &gm->r[i];
		uint64_t base = user ? r->user_addr : r->guest_addr;

		if (addr >= base && addr - base <= r->size &&
		    len <= r->size - (addr - base))
			return r;
	}
	return NULL;
}

void *guestmem_translate(const struct guestmem *gm, uint64_t gpa, uint64_t len)
{
	const struct guestmem_region *r = find(gm, gpa, len, false);

	return r ? r->map + (gpa - r->guest_addr) : NULL;
}

void *guestmem_translate_user(const struct guestmem *gm, uint64_t uaddr,
			uint64_t len)
{
	const struct guestmem_region *r = find(gm, uaddr, len, true);

	return r ? r->map + (uaddr - r->user_addr) : NULL;
}

int guestmem_discard(struct guestmem *gm, uint64_t gpa, uint64_t len)
{
	const struct guestmem_region *r = find(gm, gpa, len, false);
	uint64_t off;

	if (!r)
		return -EFAULT;
	off = r->mmap_offset + (gpa - r->guest_addr);
	if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

int guestmem_resident_bytes(const struct guestmem *gm, uint64_t *out)
{
	struct stat seen[GUESTMEM_MAX_REGIONS];
	unsigned nseen = 0;
	uint64_t total = 0;

	for (unsigned i = 0; i < gm->nregions; i++) {
		struct stat st;
		bool dup = false;

		if (fstat(gm->r[i].fd, &st) < 0)
			return -errno;
		/* UML's two regions (normal and highmem) share one file. */
		for (unsigned j = 0; j < nseen; j++)
			dup |= seen[j].st_dev == st.st_dev &&
			       seen[j].st_ino == st.st_ino;
		if (dup)
			continue;
		seen[nseen++] = st;
		total += (uint64_t)st.st_blocks * 512u;
	}
	*out = total;
	return 0;
}

uint64_t guestmem_total_bytes(const struct guestmem *gm)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < gm->nregions; i++)
		t += gm->r[i].size;
	return t;
}

const struct guestmem_region *guestmem_largest(const struct guestmem *gm)
{
	const struct guestmem_region *best = NULL;

	for (unsigned i = 0; i < gm->nregions; i++)
		if (!best || gm->r[i].size > best->size)
			best = &gm->r[i];
	return best;
}
