/*
 * guestmem: a guest's RAM as a vhost-user backend sees it.
 *
 * Owns the memory regions received in VHOST_USER_SET_MEM_TABLE: their file
 * descriptors and our shared mappings of them.  Translates guest-physical
 * ranges to host pointers and gives ranges back to the host by punching
 * holes in the backing file (for tmpfs/shmem, only a hole frees the page:
 * MADV_DONTNEED on a shared mapping just drops our own mapping of it).
 *
 * Every range comes from the guest and is hostile until proven otherwise:
 * guestmem_translate() and guestmem_discard() accept a range only if it lies wholly in
 * one region, without arithmetic overflow.
 *
 * UML note: UML passes user_addr == guest_addr == the guest-physical
 * address, and both vring and buffer addresses are guest-physical, so one
 * lookup table serves both (vhost-user's "user address" for vrings and
 * guest address for descriptors).
 *
 * Threading: owned by the loop thread.
 */
#ifndef EBB_GUESTMEM_H
#define EBB_GUESTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUESTMEM_MAX_REGIONS 8	/* VHOST_MEMORY_BASELINE_NREGIONS */

struct guestmem_region {
	uint64_t guest_addr;	/* guest-physical start */
	uint64_t size;		/* bytes */
	uint64_t user_addr;	/* frontend's address for vring addresses */
	uint64_t mmap_offset;	/* offset of guest_addr in the file */
	int fd;			/* backing file, owned */
	uint8_t *map;		/* our mapping of [mmap_offset, +size) */
	void *map_base;		/* what mmap returned (page aligned) */
	size_t map_len;		/* bytes mapped at map_base */
};

struct guestmem {
	unsigned nregions;
	struct guestmem_region r[GUESTMEM_MAX_REGIONS];
};

/* A region description as it arrives, before it is mapped. */
struct guestmem_region_desc {
	uint64_t guest_addr;
	uint64_t size;
	uint64_t user_addr;
	uint64_t mmap_offset;
};

void guestmem_init(struct guestmem *gm);
/*
 * Replace the table with @n regions, taking ownership of @fds (closed on
 * failure too).  Rejects: n > GUESTMEM_MAX_REGIONS, zero sizes, overflowing
 * ranges, overlapping guest ranges, files shorter than offset+size.
 * Returns 0 or -errno; on error the old table is already gone.
 */
int guestmem_set_table(struct guestmem *gm, const struct guestmem_region_desc *d,
		 const int *fds, unsigned n);
void guestmem_clear(struct guestmem *gm);

/* Host pointer for [gpa, gpa+len) if it lies in one region, else NULL. */
void *guestmem_translate(const struct guestmem *gm, uint64_t gpa, uint64_t len);
/* The same for a frontend "user address" (vring addresses). */
void *guestmem_translate_user(const struct guestmem *gm, uint64_t uaddr,
			uint64_t len);

/*
 * Give [gpa, gpa+len) back to the host: punch a hole in the backing file.
 * The guest reads zeroes there afterwards.  Returns 0, -EFAULT for a range
 * outside guest memory, or -errno from fallocate.
 */
int guestmem_discard(struct guestmem *gm, uint64_t gpa, uint64_t len);

/* Host-resident bytes: allocated blocks of every distinct backing file. */
int guestmem_resident_bytes(const struct guestmem *gm, uint64_t *out);

/* The largest region (a UML guest's RAM file), NULL if none. */
const struct guestmem_region *guestmem_largest(const struct guestmem *gm);

/* Total bytes of guest memory described by the table. */
uint64_t guestmem_total_bytes(const struct guestmem *gm);

#endif
