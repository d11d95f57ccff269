/*
 * libFuzzer target: the split-virtqueue walker (vq_map, vq_pop, vq_push)
 * on guest memory whose every byte comes from the input.
 *
 * Guest RAM is a 64 KiB memfd mapped as two regions, [GPA, +32K-16) and
 * [GPA+32K, +32K), so they are adjacent in guest-physical terms but two
 * separate mappings on the host: a buffer that straddles them must be
 * rejected, and the harness checks that it is.  The first region starts
 * at a file offset the input picks (0-15 bytes): a frontend may offset its
 * regions so, and guest-aligned rings must still be safe to use.
 * EBB_FUZZ_ALIGNED=1 pins that offset to 0 (to fuzz past a finding there).
 *
 * Input:
 *   byte 0     ring size: 1 << (b % 11), or with bit 7 set the raw u16 of
 *              bytes 1-2 (mostly invalid sizes, which vq_map must refuse)
 *   bytes 3-4  the device's starting avail index (u16 LE)
 *   byte 5     0: rings packed from GPA (desc, avail, used); otherwise the
 *              three u16 offsets from GPA in bytes 6-11
 *   byte 12    file offset of the first region (low 4 bits)
 *   bytes 13-  guest RAM, from file offset 0 on (the rest is zero)
 *
 * Oracle, beyond ASan/UBSan: every pointer the walker hands out lies
 * wholly inside one region's mapping (ASan does not see mmap bounds) and
 * matches its guest address, a chain is never longer than the ring,
 * readable buffers come first, a zero-length buffer has no pointer, and
 * an error always comes with a reason.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guestmem.h"
#include "virtq.h"

#define RAM_BYTES (64 * 1024)
#define HALF (RAM_BYTES / 2)
#define GPA 0x100000ull
#define HDR_BYTES 13

static int ram_fd = -1;
static struct guestmem gm;
static unsigned skew = ~0u;	/* file offset of region 0 in gm */
static bool aligned_only;	/* EBB_FUZZ_ALIGNED: skew always 0 */
static uint8_t *view;		/* our own mapping of the file: the guest */
static struct vq_elem elem;	/* large: off the stack */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "fuzz_virtq: %s\n", what);
	abort();
}

/* (Re)build the two-region table with region 0 at file offset @s. */
static void set_table(unsigned s)
{
	struct guestmem_region_desc d[2] = {
		{ .guest_addr = GPA, .size = HALF - 16, .user_addr = GPA,
		  .mmap_offset = s },
		{ .guest_addr = GPA + HALF, .size = HALF,
		  .user_addr = GPA + HALF, .mmap_offset = HALF },
	};
	int fds[2] = { dup(ram_fd), dup(ram_fd) };

	if (fds[0] < 0 || fds[1] < 0 || guestmem_set_table(&gm, d, fds, 2) < 0)
		die("guestmem_set_table");
	skew = s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *a = getenv("EBB_FUZZ_ALIGNED");

	(void)argc;
	(void)argv;
	aligned_only = a && *a && *a != '0';
	ram_fd = memfd_create("fuzz-virtq-ram", MFD_CLOEXEC);
	if (ram_fd < 0 || ftruncate(ram_fd, RAM_BYTES) < 0)
		die("memfd");
	view = mmap(NULL, RAM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED,
		    ram_fd, 0);
	if (view == MAP_FAILED)
		die("mmap");
	guestmem_init(&gm);
	set_table(0);
	return 0;
}

/* Does [p, p+len) lie inside one region's mapping? */
static bool inside(const void *p, uint64_t len)
{
	const uint8_t *b = p;

	for (unsigned i = 0; i < gm.nregions; i++) {
		const struct guestmem_region *r = &gm.r[i];

		if (b >= r->map && len <= r->size &&
		    (uint64_t)(b - r->map) <= r->size - len)
			return true;
	}
	return false;
}

static uint16_t u16_at(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void check_elem(const struct vq *vq)
{
	unsigned nout = 0;
	bool seen_write = false;
	uint32_t total = 0;

	if (elem.nbufs == 0 || elem.nbufs > vq->num)
		die("chain length out of bounds");
	if (elem.head >= vq->num)
		die("head out of range");
	for (unsigned i = 0; i < elem.nbufs; i++) {
		const struct vq_buf *b = &elem.bufs[i];

		if (b->write) {
			seen_write = true;
		} else {
			if (seen_write)
				die("readable buffer after a writable one");
			nout++;
		}
		if (b->len == 0) {
			if (b->hva)
				die("zero-length buffer with a pointer");
			continue;
		}
		if (!b->hva || !inside(b->hva, b->len))
			die("buffer pointer outside guest memory");
		if ((uint8_t *)b->hva - (uint8_t *)guestmem_translate(&gm, b->gpa, 1) != 0)
			die("buffer pointer does not match its address");
		/* Touch both ends, as a device would. */
		total += ((volatile uint8_t *)b->hva)[0];
		total += ((volatile uint8_t *)b->hva)[b->len - 1];
	}
	if (nout != elem.nout)
		die("nout miscounted");
	(void)total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vq vq;
	uint16_t num;
	uint64_t desc, avail, used;
	const char *why;
	int rc;

	if (size < HDR_BYTES)
		return 0;
	num = (data[0] & 0x80) ? u16_at(data + 1) : (uint16_t)(1u << (data[0] % 11));
	if (data[5] == 0) {
		desc = GPA;
		avail = desc + 16ull * num;
		used = (avail + 6 + 2ull * num + 3) & ~3ull;
	} else {
		desc = GPA + u16_at(data + 6);
		avail = GPA + u16_at(data + 8);
		used = GPA + u16_at(data + 10);
	}
	if ((aligned_only ? 0 : data[12] & 15u) != skew)
		set_table(aligned_only ? 0 : data[12] & 15u);
	memset(view, 0, RAM_BYTES);
	memcpy(view, data + HDR_BYTES,
	       size - HDR_BYTES < RAM_BYTES ? size - HDR_BYTES : RAM_BYTES);

	vq_init(&vq, 0);
	vq.num = num;
	vq.desc_addr = desc;
	vq.avail_addr = avail;
	vq.used_addr = used;
	vq.addr_set = true;
	vq.started = true;
	vq.enabled = true;
	vq.last_avail = u16_at(data + 3);
	vq.used_idx = vq.last_avail;
	if (vq_map(&vq, &gm) < 0) {
		if (vq.desc || vq.avail || vq.used)
			die("failed map left ring pointers");
		return 0;
	}
	if (num == 0 || num > VQ_MAX_SIZE || (num & (num - 1)))
		die("mapped a ring of invalid size");
	if (!inside(vq.desc, 16ull * num) || !inside(vq.avail, 6 + 2ull * num) ||
	    !inside(vq.used, 6 + 8ull * num))
		die("ring outside guest memory");

	/* Bounded like the devices' kick handlers: the used ring may overlap
	 * the avail ring, so pushing can make more entries "available". */
	for (unsigned budget = 2u * num + 2; budget; budget--) {
		why = NULL;
		rc = vq_pop(&vq, &gm, &elem, &why);
		if (rc < 0 && !why)
			die("error without a reason");
		if (rc <= 0)
			break;
		check_elem(&vq);
		vq_push(&vq, elem.head, elem.bufs[0].len);
	}
	return 0;
}
