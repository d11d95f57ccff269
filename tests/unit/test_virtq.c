/*
 * Tests for virtq (split virtqueue walker) and guestmem (regions, holes),
 * on real memory: guest RAM is a memfd mapped through guestmem_set_table, and
 * the rings are laid out in it by the driver-side helpers of
 * fake_frontend.c, exactly as a guest would.
 *
 * Each hostile case checks the return code and that the walker did not
 * consume the entry; the device-level consequence (device failed, other
 * guests untouched) is test_vhost_user.c's business.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake_frontend.h"
#include "guestmem.h"
#include "virtq.h"
#include "vsession.h"

#define MiB (1ull << 20)
#define GPA 0x100000ull		/* guest memory starts at 1 MiB, as in UML */
#define MEM (1 * MiB)
#define DATA (GPA + 0x80000)	/* buffers live in the upper half */
#define NUM 8

struct env {
	struct ff_mem m;
	struct guestmem gm;
	struct vq vq;
	struct ff_ring r;
	struct vq_elem *elem;
	const char *why;
};

static void install(struct guestmem *gm, const struct ff_mem *m)
{
	struct guestmem_region_desc d = {
		.guest_addr = m->gpa,
		.size = m->bytes,
		.user_addr = m->gpa,
		.mmap_offset = m->off,
	};
	int fd = dup(m->fd);

	assert_true(fd >= 0);
	assert_int_equal(guestmem_set_table(gm, &d, &fd, 1), 0);
}

/* Point @vq at @r and map it. */
static int attach_ring(struct env *e, uint16_t num)
{
	e->vq.num = num;
	e->vq.desc_addr = e->r.desc_gpa;
	e->vq.avail_addr = e->r.avail_gpa;
	e->vq.used_addr = e->r.used_gpa;
	e->vq.addr_set = true;
	e->vq.started = true;
	e->vq.enabled = true;
	return vq_map(&e->vq, &e->gm);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	ff_mem_init(&e->m, GPA, 0, MEM);
	guestmem_init(&e->gm);
	install(&e->gm, &e->m);
	ff_ring_init(&e->r, &e->m, NUM, GPA);
	vq_init(&e->vq, 0);
	assert_int_equal(attach_ring(e, NUM), 0);
	e->elem = calloc(1, sizeof(*e->elem));
	assert_non_null(e->elem);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	vq_reset(&e->vq);
	guestmem_clear(&e->gm);
	ff_mem_free(&e->m);
	free(e->elem);
	free(e);
	return 0;
}

static int pop(struct env *e)
{
	e->why = NULL;
	return vq_pop(&e->vq, &e->gm, e->elem, &e->why);
}

/* A hostile ring: -EINVAL/-EFAULT with a reason, entry not consumed. */
static void expect_bad(struct env *e, int rc_want)
{
	uint16_t before = e->vq.last_avail;

	assert_int_equal(pop(e), rc_want);
	assert_non_null(e->why);
	assert_int_equal(e->vq.last_avail, before);
}

/* ---- vq_map ---------------------------------------------------------- */

static void map_good_ring_is_shared_with_guest(void **state)
{
	struct env *e = *state;

	assert_non_null(e->vq.desc);
	assert_non_null(e->vq.avail);
	assert_non_null(e->vq.used);
	assert_true(vq_ready(&e->vq));
	/* Same pages as the guest's view, not a copy. */
	ff_ring_set(&e->r, 3, 0x1234, 77, VRING_DESC_F_WRITE, 5);
	assert_int_equal(e->vq.desc[3].addr, 0x1234);
	assert_int_equal(e->vq.desc[3].len, 77);
	ff_ring_set_avail_idx(&e->r, 9);
	assert_int_equal(e->vq.avail->idx, 9);
}

static void map_without_address_is_not_ready(void **state)
{
	struct env *e = *state;

	e->vq.addr_set = false;
	assert_int_equal(vq_map(&e->vq, &e->gm), 0);
	assert_null(e->vq.desc);
	assert_false(vq_ready(&e->vq));
	assert_int_equal(pop(e), 0);
}

static void map_rejects_bad_sizes(void **state)
{
	struct env *e = *state;
	const uint16_t bad[] = { 0, 3, 6, 1000, 1025, 2048, 32768 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(attach_ring(e, bad[i]), -EINVAL);
		assert_null(e->vq.desc);
		assert_false(vq_ready(&e->vq));
	}
	/* Every power of two up to the limit is fine, 1024 included. */
	for (unsigned n = 1; n <= VQ_MAX_SIZE; n *= 2) {
		ff_ring_init(&e->r, &e->m, (uint16_t)n, GPA);
		assert_int_equal(attach_ring(e, (uint16_t)n), 0);
	}
}

static void map_rejects_misalignment(void **state)
{
	struct env *e = *state;

	e->vq.desc_addr += 8;
	assert_int_equal(vq_map(&e->vq, &e->gm), -EINVAL);
	e->vq.desc_addr -= 8;
	e->vq.avail_addr += 1;
	assert_int_equal(vq_map(&e->vq, &e->gm), -EINVAL);
	e->vq.avail_addr += 1;	/* 2-aligned is what the spec asks */
	assert_int_equal(vq_map(&e->vq, &e->gm), 0);
	e->vq.avail_addr -= 2;
	e->vq.used_addr += 2;
	assert_int_equal(vq_map(&e->vq, &e->gm), -EINVAL);
	assert_null(e->vq.used);
	e->vq.used_addr += 2;
	assert_int_equal(vq_map(&e->vq, &e->gm), 0);
}

static void map_rejects_rings_outside_memory(void **state)
{
	struct env *e = *state;
	const uint64_t end = GPA + MEM;
	struct {
		uint64_t desc, avail, used;
	} bad[] = {
		{ GPA - 4096, e->r.avail_gpa, e->r.used_gpa },	/* below */
		{ end, e->r.avail_gpa, e->r.used_gpa },		/* at the end */
		{ end - 16 * NUM + 16, e->r.avail_gpa, e->r.used_gpa },	/* straddles */
		{ e->r.desc_gpa, end - 6 - 2 * NUM + 2, e->r.used_gpa },
		{ e->r.desc_gpa, e->r.avail_gpa, end - 64 },
		{ e->r.desc_gpa, e->r.avail_gpa, UINT64_MAX - 3 },	/* wraps */
		{ UINT64_MAX - 15, e->r.avail_gpa, e->r.used_gpa },
		{ 0, e->r.avail_gpa, e->r.used_gpa },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e->vq.desc_addr = bad[i].desc;
		e->vq.avail_addr = bad[i].avail;
		e->vq.used_addr = bad[i].used;
		assert_int_equal(vq_map(&e->vq, &e->gm), -EFAULT);
		assert_null(e->vq.desc);
		assert_null(e->vq.avail);
		assert_null(e->vq.used);
		assert_int_equal(pop(e), 0);
	}
	/* Exactly at the end is inside. */
	e->vq.desc_addr = end - 16 * NUM;
	e->vq.avail_addr = end - 6 - 2 * NUM;
	e->vq.used_addr = end - 4096;
	assert_int_equal(vq_map(&e->vq, &e->gm), 0);
}

static void map_rejects_an_empty_memory_table(void **state)
{
	struct env *e = *state;

	guestmem_clear(&e->gm);
	assert_int_equal(vq_map(&e->vq, &e->gm), -EFAULT);
	assert_false(vq_ready(&e->vq));
}

/*
 * The spec's alignment is of guest addresses; the walker dereferences host
 * pointers.  A frontend that offsets its region (mmap_offset or guest_addr
 * not congruent modulo 16) turns aligned guest rings into misaligned host
 * pointers: the atomic avail->idx load and the used->idx store are then
 * misaligned accesses (UB, UBSan "misaligned address"; a split-locked
 * atomic where split-lock detection is fatal).  vq_map must refuse such a
 * mapping or the pointers must be aligned.
 */
static void map_refuses_misaligned_host_pointers(void **state)
{
	struct env *e = *state;
	struct ff_mem m2;
	struct guestmem gm2;
	int rc;

	(void)e;
	/* Guest memory starts 2 bytes into the file. */
	ff_mem_init(&m2, GPA, 2, MEM);
	guestmem_init(&gm2);
	install(&gm2, &m2);
	e->vq.num = NUM;
	e->vq.desc_addr = GPA + 0x1000;
	e->vq.avail_addr = GPA + 0x2000;
	e->vq.used_addr = GPA + 0x3000;
	rc = vq_map(&e->vq, &gm2);
	if (rc == 0) {
		assert_int_equal((uintptr_t)e->vq.desc % 16, 0);
		assert_int_equal((uintptr_t)e->vq.avail % 2, 0);
		assert_int_equal((uintptr_t)e->vq.used % 4, 0);
	} else {
		assert_int_equal(rc, -EINVAL);
	}
	e->vq.desc = NULL;
	guestmem_clear(&gm2);
	ff_mem_free(&m2);
}

/* ---- vq_pop: good chains ---------------------------------------------- */

static void pop_good_chain(void **state)
{
	struct env *e = *state;
	const uint64_t addr[] = { DATA, DATA + 0x1000 + 100, DATA + 0x3000 };
	const uint32_t len[] = { 16, 300, 4096 };
	const bool wr[] = { false, false, true };
	uint16_t head;

	memcpy(ff_mem_ptr(&e->m, DATA), "hello, device", 14);
	head = ff_ring_chain(&e->r, 3, addr, len, wr);
	ff_ring_post(&e->r, head);

	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->head, head);
	assert_int_equal(e->elem->nbufs, 3);
	assert_int_equal(e->elem->nout, 2);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(e->elem->bufs[i].gpa, addr[i]);
		assert_int_equal(e->elem->bufs[i].len, len[i]);
		assert_int_equal(e->elem->bufs[i].write, wr[i]);
		assert_non_null(e->elem->bufs[i].hva);
	}
	assert_string_equal(e->elem->bufs[0].hva, "hello, device");
	/* The writable buffer is the guest's page. */
	memset(e->elem->bufs[2].hva, 0xab, 4096);
	assert_int_equal(*(uint8_t *)ff_mem_ptr(&e->m, DATA + 0x3fff), 0xab);
	assert_int_equal(e->vq.last_avail, 1);
	assert_int_equal(pop(e), 0);	/* empty now */
}

static void pop_only_readable_and_only_writable(void **state)
{
	struct env *e = *state;
	uint64_t a = DATA;
	uint32_t l = 8;
	bool w = true;

	ff_ring_post(&e->r, ff_ring_chain(&e->r, 1, &a, &l, NULL));
	ff_ring_post(&e->r, ff_ring_chain(&e->r, 1, &a, &l, &w));
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->nbufs, 1);
	assert_int_equal(e->elem->nout, 1);
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->nbufs, 1);
	assert_int_equal(e->elem->nout, 0);
	assert_true(e->elem->bufs[0].write);
}

static void pop_empty_and_not_ready(void **state)
{
	struct env *e = *state;
	uint64_t a = DATA;
	uint32_t l = 8;

	assert_int_equal(pop(e), 0);
	ff_ring_post(&e->r, ff_ring_chain(&e->r, 1, &a, &l, NULL));
	e->vq.started = false;
	assert_int_equal(pop(e), 0);
	e->vq.started = true;
	e->vq.enabled = false;
	assert_int_equal(pop(e), 0);
	e->vq.enabled = true;
	assert_int_equal(pop(e), 1);
}

static void pop_full_ring_then_wrap_16bit_index(void **state)
{
	struct env *e = *state;
	uint64_t a = DATA;
	uint32_t l = 4;

	/* The driver may be exactly num ahead. */
	for (unsigned i = 0; i < NUM; i++)
		ff_ring_post(&e->r, ff_ring_chain(&e->r, 1, &a, &l, NULL));
	for (unsigned i = 0; i < NUM; i++)
		assert_int_equal(pop(e), 1);
	assert_int_equal(pop(e), 0);

	/* Free-running 16-bit indices wrap through 0xffff. */
	e->vq.last_avail = 0xfffe;
	e->r.avail_idx = 0xfffe;
	for (unsigned i = 0; i < 5; i++)
		ff_ring_post(&e->r, ff_ring_chain(&e->r, 1, &a, &l, NULL));
	assert_int_equal(e->r.avail_idx, 3);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(pop(e), 1);
	assert_int_equal(e->vq.last_avail, 3);
	assert_int_equal(pop(e), 0);
}

static void pop_longest_chain_is_the_ring(void **state)
{
	struct env *e = *state;
	uint64_t addr[NUM];
	uint32_t len[NUM];

	for (unsigned i = 0; i < NUM; i++) {
		addr[i] = DATA + 64 * i;
		len[i] = 64;
	}
	ff_ring_post(&e->r, ff_ring_chain(&e->r, NUM, addr, len, NULL));
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->nbufs, NUM);
}

static void pop_zero_length_descriptor_has_no_pointer(void **state)
{
	struct env *e = *state;
	const uint64_t addr[] = { DATA, UINT64_MAX - 3, DATA };
	const uint32_t len[] = { 8, 0, 8 };

	ff_ring_post(&e->r, ff_ring_chain(&e->r, 3, addr, len, NULL));
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->nbufs, 3);
	assert_int_equal(e->elem->bufs[1].len, 0);
	assert_null(e->elem->bufs[1].hva);
	assert_non_null(e->elem->bufs[2].hva);
}

/* ---- vq_pop: hostile rings -------------------------------------------- */

static void pop_rejects_avail_index_jump(void **state)
{
	struct env *e = *state;
	uint64_t a = DATA;
	uint32_t l = 4;

	for (unsigned i = 0; i < NUM; i++)
		ff_ring_chain(&e->r, 1, &a, &l, NULL);
	ff_ring_set_avail_idx(&e->r, NUM + 1);
	expect_bad(e, -EINVAL);
	/* "Behind" us is a jump of 65535. */
	ff_ring_set_avail_idx(&e->r, 0xffff);
	expect_bad(e, -EINVAL);
	ff_ring_set_avail_idx(&e->r, 0x8000);
	expect_bad(e, -EINVAL);
}

static void pop_rejects_head_out_of_range(void **state)
{
	struct env *e = *state;
	const uint16_t heads[] = { NUM, NUM + 1, 0xffff };

	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		ff_ring_avail(&e->r)->ring[0] = heads[i];
		ff_ring_set_avail_idx(&e->r, 1);
		expect_bad(e, -EINVAL);
	}
}

static void pop_rejects_next_out_of_range(void **state)
{
	struct env *e = *state;

	ff_ring_set(&e->r, 0, DATA, 8, VRING_DESC_F_NEXT, NUM);
	ff_ring_post(&e->r, 0);
	expect_bad(e, -EINVAL);
	ff_ring_set(&e->r, 0, DATA, 8, VRING_DESC_F_NEXT, 0xffff);
	expect_bad(e, -EINVAL);
}

static void pop_rejects_loops(void **state)
{
	struct env *e = *state;

	/* 0 -> 0 */
	ff_ring_set(&e->r, 0, DATA, 8, VRING_DESC_F_NEXT, 0);
	ff_ring_post(&e->r, 0);
	expect_bad(e, -EINVAL);
	/* 0 -> 1 -> 2 -> 1 */
	ff_ring_set(&e->r, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	ff_ring_set(&e->r, 1, DATA, 8, VRING_DESC_F_NEXT, 2);
	ff_ring_set(&e->r, 2, DATA, 8, VRING_DESC_F_NEXT, 1);
	expect_bad(e, -EINVAL);
	/* A loop of writable zero-length descriptors: nothing to translate,
	 * still bounded. */
	for (uint16_t i = 0; i < NUM; i++)
		ff_ring_set(&e->r, i, 0, 0,
			    VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
			    (uint16_t)((i + 1) % NUM));
	expect_bad(e, -EINVAL);
}

static void pop_rejects_indirect(void **state)
{
	struct env *e = *state;

	ff_ring_set(&e->r, 0, DATA, 16 * 4, VRING_DESC_F_INDIRECT, 0);
	ff_ring_post(&e->r, 0);
	expect_bad(e, -EINVAL);
	/* Also mid-chain. */
	ff_ring_set(&e->r, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	ff_ring_set(&e->r, 1, DATA, 64,
		    VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0);
	expect_bad(e, -EINVAL);
}

static void pop_rejects_readable_after_writable(void **state)
{
	struct env *e = *state;
	const uint64_t addr[] = { DATA, DATA + 64, DATA + 128 };
	const uint32_t len[] = { 8, 8, 8 };
	const bool wr[] = { false, true, false };

	ff_ring_post(&e->r, ff_ring_chain(&e->r, 3, addr, len, wr));
	expect_bad(e, -EINVAL);
}

static void pop_rejects_buffers_outside_memory(void **state)
{
	struct env *e = *state;
	const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
		{ 0, 8 },			/* below guest memory */
		{ GPA - 8, 16 },		/* straddles the start */
		{ GPA + MEM, 1 },		/* just past the end */
		{ GPA + MEM - 4095, 4096 },	/* straddles the end */
		{ GPA, 0xffffffff },		/* longer than memory */
		{ UINT64_MAX - 7, 16 },		/* wraps */
		{ 1ull << 62, 4096 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ff_ring_set(&e->r, 0, bad[i].addr, bad[i].len, 0, 0);
		ff_ring_post(&e->r, 0);
		expect_bad(e, -EFAULT);
		/* The next pop sees the same bad entry: step past it. */
		e->vq.last_avail++;
	}
	/* The last byte of memory is fine. */
	ff_ring_set(&e->r, 0, GPA + MEM - 1, 1, 0, 0);
	ff_ring_post(&e->r, 0);
	assert_int_equal(pop(e), 1);
}

static void pop_rejects_buffer_across_two_regions(void **state)
{
	struct env *e = *state;
	struct ff_mem hi;
	struct guestmem_region_desc d[2] = {
		{ GPA, MEM, GPA, 0 },
		{ GPA + MEM, MEM, GPA + MEM, 0 },
	};
	int fds[2] = { dup(e->m.fd), -1 };

	/* A second, adjacent region in another file. */
	ff_mem_init(&hi, GPA + MEM, 0, MEM);
	fds[1] = dup(hi.fd);
	assert_int_equal(guestmem_set_table(&e->gm, d, fds, 2), 0);
	assert_int_equal(vq_map(&e->vq, &e->gm), 0);

	/* Wholly in the second region: fine. */
	ff_ring_set(&e->r, 0, GPA + MEM + 16, 64, 0, 0);
	ff_ring_post(&e->r, 0);
	assert_int_equal(pop(e), 1);
	/* Contiguous in guest-physical terms, but two mappings on the host. */
	ff_ring_set(&e->r, 0, GPA + MEM - 32, 64, 0, 0);
	ff_ring_post(&e->r, 0);
	expect_bad(e, -EFAULT);
	ff_mem_free(&hi);
}

/* ---- used ring and notifications -------------------------------------- */

static void push_publishes_used_entries(void **state)
{
	struct env *e = *state;
	uint64_t a = DATA;
	uint32_t l = 4;
	struct vring_used *u = ff_ring_used(&e->r);

	for (unsigned i = 0; i < NUM + 3; i++) {
		uint16_t head = ff_ring_chain(&e->r, 1, &a, &l, NULL);

		ff_ring_post(&e->r, head);
		assert_int_equal(pop(e), 1);
		vq_push(&e->vq, e->elem->head, 100 + i);
		assert_int_equal(ff_ring_used_idx(&e->r), i + 1);
		assert_int_equal(u->ring[i % NUM].id, head);
		assert_int_equal(u->ring[i % NUM].len, 100 + i);
	}
}

static void notify_respects_no_interrupt(void **state)
{
	struct env *e = *state;
	uint64_t v = 0;
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	assert_true(efd >= 0);
	/* No call fd yet: nothing to do, no error. */
	assert_int_equal(vq_notify(&e->vq), 0);

	e->vq.call_fd = efd;
	assert_int_equal(vq_notify(&e->vq), 0);
	assert_int_equal(read(efd, &v, 8), 8);
	assert_int_equal(v, 1);

	ff_ring_avail(&e->r)->flags = VRING_AVAIL_F_NO_INTERRUPT;
	assert_int_equal(vq_notify(&e->vq), 0);
	assert_int_equal(read(efd, &v, 8), -1);
	assert_int_equal(errno, EAGAIN);

	ff_ring_avail(&e->r)->flags = 0;
	assert_int_equal(vq_notify(&e->vq), 0);
	assert_int_equal(vq_notify(&e->vq), 0);
	assert_int_equal(read(efd, &v, 8), 8);
	assert_int_equal(v, 2);
	/* vq_reset closes it. */
}

static void notify_on_full_pipe_is_not_an_error(void **state)
{
	struct env *e = *state;
	uint64_t junk[512] = { 0 };
	int p[2];

	/* UML's call fd is a pipe; a full one already means "interrupt
	 * pending". */
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	while (write(p[1], junk, sizeof(junk)) > 0)
		;
	assert_int_equal(errno, EAGAIN);
	e->vq.call_fd = p[1];
	assert_int_equal(vq_notify(&e->vq), 0);
	/* A call fd nobody reads any more is an error worth reporting. */
	close(p[0]);
	assert_int_equal(vq_notify(&e->vq), -EPIPE);
}

static void drain_kick_consumes_pending_kicks(void **state)
{
	struct env *e = *state;
	uint64_t one = 1, v;
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	assert_true(efd >= 0);
	e->vq.kick_fd = efd;
	assert_int_equal(vq_drain_kick(&e->vq), 0);	/* nothing pending */
	for (int i = 0; i < 3; i++)
		assert_int_equal(write(efd, &one, 8), 8);
	assert_int_equal(vq_drain_kick(&e->vq), 0);
	assert_int_equal(read(efd, &v, 8), -1);
	assert_int_equal(errno, EAGAIN);
}

/*
 * A kick fd whose writer is gone (a pipe at EOF) reads 0 bytes forever and
 * stays readable: the level-triggered loop would call on_kick on every
 * pass.  vq_drain_kick must report it, not return 0 because errno happens
 * to hold a stale EAGAIN.
 */
static void drain_kick_reports_eof(void **state)
{
	struct env *e = *state;
	int p[2];

	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	close(p[1]);
	e->vq.kick_fd = p[0];
	errno = EAGAIN;		/* what the loop's last recvmsg left behind */
	assert_true(vq_drain_kick(&e->vq) < 0);
}

/* ---- guestmem ---------------------------------------------------------- */

/* Is @fd closed? */
static bool fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

static int set_one(struct guestmem *gm, const struct ff_mem *m,
		   struct guestmem_region_desc d, int *fd_out)
{
	int fd = dup(m->fd);

	assert_true(fd >= 0);
	if (fd_out)
		*fd_out = fd;
	return guestmem_set_table(gm, &d, &fd, 1);
}

static void gm_translate_at_boundaries(void **state)
{
	struct env *e = *state;
	uint8_t *base = guestmem_translate(&e->gm, GPA, 1);

	assert_non_null(base);
	assert_ptr_equal(guestmem_translate(&e->gm, GPA + MEM - 1, 1), base + MEM - 1);
	assert_ptr_equal(guestmem_translate(&e->gm, GPA, MEM), base);
	assert_null(guestmem_translate(&e->gm, GPA, MEM + 1));
	assert_null(guestmem_translate(&e->gm, GPA + MEM, 1));
	assert_null(guestmem_translate(&e->gm, GPA - 1, 1));
	assert_null(guestmem_translate(&e->gm, GPA - 1, 2));
	assert_null(guestmem_translate(&e->gm, GPA + 1, UINT64_MAX));
	assert_null(guestmem_translate(&e->gm, UINT64_MAX, 1));
	assert_null(guestmem_translate(&e->gm, GPA, 0));	/* empty ranges too */
	/* A write through the translation is the guest's memory. */
	base[4242] = 0x77;
	assert_int_equal(*(uint8_t *)ff_mem_ptr(&e->m, GPA + 4242), 0x77);
	assert_int_equal(guestmem_total_bytes(&e->gm), MEM);
}

static void gm_user_addresses_translate_separately(void **state)
{
	struct env *e = *state;
	struct guestmem_region_desc d = { GPA, MEM, 0x7f0000000000ull, 0 };

	assert_int_equal(set_one(&e->gm, &e->m, d, NULL), 0);
	assert_non_null(guestmem_translate_user(&e->gm, 0x7f0000000000ull, 16));
	assert_ptr_equal(guestmem_translate_user(&e->gm, 0x7f0000000000ull + 64, 16),
			 guestmem_translate(&e->gm, GPA + 64, 16));
	assert_null(guestmem_translate_user(&e->gm, GPA, 16));
	assert_null(guestmem_translate(&e->gm, 0x7f0000000000ull, 16));
	assert_null(guestmem_translate_user(&e->gm, 0x7f0000000000ull + MEM - 8, 16));
}

static void gm_rejects_bad_tables_and_closes_fds(void **state)
{
	struct env *e = *state;
	const struct guestmem_region_desc bad[] = {
		{ GPA, 0, GPA, 0 },				/* empty */
		{ UINT64_MAX - 4095, 8192, GPA, 0 },		/* guest wraps */
		{ GPA, MEM, UINT64_MAX - 4095, 0 },		/* user wraps */
		{ GPA, 8192, GPA, UINT64_MAX - 4095 },		/* offset wraps */
		{ GPA, MEM + 4096, GPA, 0 },			/* short file */
		{ GPA, MEM, GPA, 4096 },			/* short file */
		{ GPA, 1ull << 62, GPA, 0 },			/* huge */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd;

		assert_int_equal(set_one(&e->gm, &e->m, bad[i], &fd), -EINVAL);
		assert_true(fd_closed(fd));
		/* The old table is gone too (documented). */
		assert_int_equal(e->gm.nregions, 0);
		assert_null(guestmem_translate(&e->gm, GPA, 1));
	}
	/* Exactly the file's length is fine. */
	assert_int_equal(set_one(&e->gm, &e->m,
				 (struct guestmem_region_desc){ GPA, MEM - 4096, GPA, 4096 },
				 NULL), 0);
	/* An unaligned offset is mapped with the skew. */
	memcpy(ff_mem_ptr(&e->m, GPA + 4096 + 123), "skew", 5);
	assert_int_equal(set_one(&e->gm, &e->m,
				 (struct guestmem_region_desc){ GPA, MEM - 8192, GPA, 4096 + 123 },
				 NULL), 0);
	assert_string_equal(guestmem_translate(&e->gm, GPA, 5), "skew");
}

static void gm_rejects_non_regular_files(void **state)
{
	struct env *e = *state;
	struct guestmem_region_desc d = { GPA, 4096, GPA, 0 };
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(guestmem_set_table(&e->gm, &d, &p[0], 1), -EINVAL);
	assert_true(fd_closed(p[0]));
	close(p[1]);
}

static void gm_rejects_overlap(void **state)
{
	struct env *e = *state;
	const struct {
		uint64_t a, asz, b, bsz;
	} cases[] = {
		{ GPA, MEM / 2, GPA, MEM / 2 },			/* same */
		{ GPA, MEM / 2, GPA + MEM / 2 - 1, 4096 },	/* one byte */
		{ GPA + 4096, 4096, GPA, MEM / 2 },		/* inside */
		{ GPA, MEM / 2, GPA - 4096, 8192 },		/* from below */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct guestmem_region_desc d[2] = {
			{ cases[i].a, cases[i].asz, cases[i].a, 0 },
			{ cases[i].b, cases[i].bsz, cases[i].b, 0 },
		};
		int fds[2] = { dup(e->m.fd), dup(e->m.fd) };

		assert_int_equal(guestmem_set_table(&e->gm, d, fds, 2), -EINVAL);
		assert_true(fd_closed(fds[0]));
		assert_true(fd_closed(fds[1]));
	}
	/* Adjacent is not overlapping; both halves of one file, UML-style. */
	{
		struct guestmem_region_desc d[2] = {
			{ GPA, MEM / 2, GPA, 0 },
			{ GPA + MEM / 2, MEM / 2, GPA + MEM / 2, MEM / 2 },
		};
		int fds[2] = { dup(e->m.fd), dup(e->m.fd) };
		uint64_t res;

		assert_int_equal(guestmem_set_table(&e->gm, d, fds, 2), 0);
		assert_int_equal(guestmem_total_bytes(&e->gm), MEM);
		/* One file counted once. */
		ff_mem_touch(&e->m);
		assert_int_equal(guestmem_resident_bytes(&e->gm, &res), 0);
		assert_int_equal(res, ff_mem_allocated(&e->m));
	}
}

static void gm_rejects_too_many_regions_and_closes_every_fd(void **state)
{
	struct env *e = *state;
	struct guestmem_region_desc d[GUESTMEM_MAX_REGIONS + 1];
	int fds[GUESTMEM_MAX_REGIONS + 1];

	for (unsigned i = 0; i < GUESTMEM_MAX_REGIONS + 1; i++) {
		d[i] = (struct guestmem_region_desc){ GPA + i * 4096, 4096,
						GPA + i * 4096, i * 4096 };
		fds[i] = dup(e->m.fd);
	}
	assert_int_equal(guestmem_set_table(&e->gm, d, fds, GUESTMEM_MAX_REGIONS + 1),
			 -EINVAL);
	assert_int_equal(guestmem_set_table(&e->gm, d, fds, 0), -EINVAL);
	/* "taking ownership of @fds (closed on failure too)": all nine. */
	for (unsigned i = 0; i < GUESTMEM_MAX_REGIONS + 1; i++) {
		if (!fd_closed(fds[i]))
			close(fds[i]);
		else
			fds[i] = -1;
	}
	for (unsigned i = 0; i < GUESTMEM_MAX_REGIONS + 1; i++)
		assert_int_equal(fds[i], -1);
	/* Eight is the limit, and it works. */
	for (unsigned i = 0; i < GUESTMEM_MAX_REGIONS; i++)
		fds[i] = dup(e->m.fd);
	assert_int_equal(guestmem_set_table(&e->gm, d, fds, GUESTMEM_MAX_REGIONS), 0);
	assert_int_equal(e->gm.nregions, GUESTMEM_MAX_REGIONS);
}

static void gm_discard_frees_host_memory(void **state)
{
	struct env *e = *state;
	uint64_t before, after, res;

	ff_mem_touch(&e->m);
	before = ff_mem_allocated(&e->m);
	assert_true(before >= MEM);
	assert_int_equal(guestmem_resident_bytes(&e->gm, &res), 0);
	assert_int_equal(res, before);

	assert_int_equal(guestmem_discard(&e->gm, GPA + 64 * 1024, 256 * 1024), 0);
	after = ff_mem_allocated(&e->m);
	assert_int_equal(before - after, 256 * 1024);
	assert_false(ff_mem_page_present(&e->m, GPA + 64 * 1024));
	assert_true(ff_mem_page_present(&e->m, GPA + 60 * 1024));
	assert_true(ff_mem_page_present(&e->m, GPA + 320 * 1024));
	/* The guest reads zeroes there now. */
	assert_int_equal(*(uint8_t *)ff_mem_ptr(&e->m, GPA + 64 * 1024), 0);
	assert_int_equal(*(uint8_t *)ff_mem_ptr(&e->m, GPA + 60 * 1024), 0x5a);
}

static void gm_discard_refuses_ranges_outside(void **state)
{
	struct env *e = *state;
	uint64_t before;

	ff_mem_touch(&e->m);
	before = ff_mem_allocated(&e->m);
	assert_int_equal(guestmem_discard(&e->gm, GPA - 4096, 4096), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, GPA - 4096, 8192), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, GPA + MEM - 4096, 8192), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, GPA + MEM, 4096), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, GPA, UINT64_MAX), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, UINT64_MAX - 4095, 8192), -EFAULT);
	assert_int_equal(guestmem_discard(&e->gm, GPA, 0), -EFAULT);
	assert_int_equal(ff_mem_allocated(&e->m), before);
	guestmem_clear(&e->gm);
	assert_int_equal(guestmem_discard(&e->gm, GPA, 4096), -EFAULT);
}

static void gm_discard_with_offset_punches_the_right_pages(void **state)
{
	struct env *e = *state;
	struct ff_mem m2;
	uint64_t before;

	/* Guest memory at file offset 1 MiB: the punch must land there, not
	 * at the guest address. */
	ff_mem_init(&m2, GPA, MEM, MEM);
	ff_mem_touch(&m2);
	assert_int_equal(set_one(&e->gm, &m2,
				 (struct guestmem_region_desc){ GPA, MEM, GPA, MEM },
				 NULL), 0);
	before = ff_mem_allocated(&m2);
	assert_int_equal(guestmem_discard(&e->gm, GPA, 8192), 0);
	assert_int_equal(before - ff_mem_allocated(&m2), 8192);
	assert_false(ff_mem_page_present(&m2, GPA));
	/* File offset 0 (not guest memory) is untouched. */
	assert_int_equal(m2.map[0], 0x5a);
	guestmem_clear(&e->gm);
	ff_mem_free(&m2);
}

/* Under UBSan, a finding fails the program instead of scrolling past:
 * meson only sees exit codes.  Read by the sanitizer runtime if linked. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}


/* ---- the in-flight record and recovery after a restart (vsession.h) ---- */

/* A ring with a record, as vhost_user.c keeps it. */
static struct vsession *with_record(struct env *e)
{
	struct vsession *vs = calloc(1, sizeof(*vs));

	assert_non_null(vs);
	assert_int_equal(vs_create("test", vs), 0);
	e->vq.rec = &vs->l->ring[0];
	return vs;
}

/* One single-buffer chain posted; returns its head. */
static uint16_t post_one(struct env *e, unsigned i)
{
	uint64_t a = DATA + 0x1000ull * i;
	uint32_t l = 64;
	uint16_t head = ff_ring_chain(&e->r, 1, &a, &l, NULL);

	ff_ring_post(&e->r, head);
	return head;
}

/* "Restart": a fresh vq on the same ring and record, recovered. */
static int restart(struct env *e, struct vs_ring *rec, unsigned *n)
{
	char why[96];
	int rc;

	vq_init(&e->vq, 0);
	e->vq.rec = rec;
	assert_int_equal(attach_ring(e, NUM), 0);
	rc = vs_ring_recover(rec, &e->vq, e->vq.resubmit, n, why, sizeof(why));
	e->vq.nresubmit = *n;
	e->vq.resubmit_next = 0;
	return rc;
}

static void inflight_heads_are_run_again_in_pop_order(void **state)
{
	struct env *e = *state;
	struct vsession *vs = with_record(e);
	uint16_t h[4];
	unsigned n;

	for (unsigned i = 0; i < 4; i++)
		h[i] = post_one(e, i);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(pop(e), 1);
		assert_int_equal(e->elem->head, h[i]);
	}
	/* Completed out of order: the second only. */
	vq_push(&e->vq, h[1], 0);
	assert_int_equal(restart(e, e->vq.rec, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(e->vq.used_idx, 1);
	assert_int_equal(e->vq.last_avail, 3);
	/* h[0] and h[2] again, then the one never popped, then nothing. */
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->head, h[0]);
	assert_int_equal(e->elem->bufs[0].gpa, DATA);
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->head, h[2]);
	assert_int_equal(pop(e), 1);
	assert_int_equal(e->elem->head, h[3]);
	assert_int_equal(pop(e), 0);
	/* Completing them all leaves nothing in flight. */
	vq_push(&e->vq, h[2], 0);
	vq_push(&e->vq, h[0], 0);
	vq_push(&e->vq, h[3], 0);
	assert_int_equal(restart(e, e->vq.rec, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(e->vq.last_avail, 4);
	assert_int_equal(pop(e), 0);
	e->vq.rec = NULL;	/* teardown's vq_reset would clear it */
	vs_close(vs);
	free(vs);
}

static void torn_push_is_settled_either_way(void **state)
{
	struct env *e = *state;
	struct vsession *vs = with_record(e);
	struct vs_ring *r = e->vq.rec;
	struct vring_used *u = ff_ring_used(&e->r);
	uint16_t h0 = post_one(e, 0), h1 = post_one(e, 1);
	unsigned n;

	assert_int_equal(pop(e), 1);
	assert_int_equal(pop(e), 1);
	/* Die after the ring's index moved, before the record knew: the
	 * element and index are in the ring, the head still marked. */
	r->last_batch_head = h0;
	u->ring[0].id = h0;
	u->idx = 1;
	assert_int_equal(restart(e, r, &n), 0);
	assert_int_equal(n, 1);	/* only h1 */
	assert_int_equal(e->vq.resubmit[0], h1);
	assert_int_equal(e->vq.last_avail, 2);
	assert_int_equal(r->used_idx, 1);
	assert_int_equal(r->inflight[h0], 0);
	/* The same with the mark already cleared: nothing changes. */
	assert_int_equal(pop(e), 1);
	r->last_batch_head = h1;
	u->ring[1].id = h1;
	u->idx = 2;
	r->inflight[h1] = 0;
	assert_int_equal(restart(e, r, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(e->vq.last_avail, 2);
	e->vq.rec = NULL;	/* teardown's vq_reset would clear it */
	vs_close(vs);
	free(vs);
}

static void record_disagreeing_with_the_ring_is_refused(void **state)
{
	struct env *e = *state;
	struct vsession *vs = with_record(e);
	struct vs_ring *r = e->vq.rec;
	unsigned n;

	post_one(e, 0);
	assert_int_equal(pop(e), 1);
	/* The guest moved the used index (it is guest memory). */
	ff_ring_used(&e->r)->idx = 5;
	assert_int_equal(restart(e, r, &n), -EBADMSG);
	/* More in flight than the driver ever made available. */
	ff_ring_used(&e->r)->idx = 0;
	r->counter = 9;
	for (unsigned h = 0; h < NUM; h++)
		r->inflight[h] = h + 1;
	assert_int_equal(restart(e, r, &n), -EBADMSG);
	e->vq.rec = NULL;	/* teardown's vq_reset would clear it */
	vs_close(vs);
	free(vs);
}

static void corrupt_session_records_are_refused(void **state)
{
	struct vsession vs;
	struct vs_layout *l;
	char why[96];
	size_t sz = sizeof(*l);

	(void)state;
	assert_int_equal(vs_create("t", &vs), 0);
	l = vs.l;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), 0);
	assert_int_equal(vs_check(l, sz - 8, 4, why, sizeof(why)), -EBADMSG);
	l->magic[0] ^= 1;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->magic[0] ^= 1;
	l->nregions = GUESTMEM_MAX_REGIONS + 1;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->nregions = 1;
	l->regions[0].size = 4096;
	l->regions[0].guest_addr = UINT64_MAX - 100;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->regions[0].guest_addr = 0;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), 0);
	l->ring[5].num = 8;	/* a ring the 4-ring device does not have */
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->ring[5].num = 0;
	l->ring[1].num = 12;	/* not a power of two */
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->ring[1].num = 8;
	l->ring[1].inflight[9] = 1;	/* head beyond the ring */
	l->ring[1].counter = 1;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->ring[1].inflight[9] = 0;
	l->ring[1].inflight[3] = 7;	/* popped after the last pop */
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->ring[1].inflight[3] = 1;
	l->msg_state = VS_MSG_HANDLING;
	l->msg_len = 4;		/* shorter than a header */
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), -EBADMSG);
	l->msg_len = 12;
	assert_int_equal(vs_check(l, sz, 4, why, sizeof(why)), 0);
	vs_close(&vs);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(map_good_ring_is_shared_with_guest),
		T(inflight_heads_are_run_again_in_pop_order),
		T(torn_push_is_settled_either_way),
		T(record_disagreeing_with_the_ring_is_refused),
		cmocka_unit_test(corrupt_session_records_are_refused),
		T(map_without_address_is_not_ready),
		T(map_rejects_bad_sizes),
		T(map_rejects_misalignment),
		T(map_rejects_rings_outside_memory),
		T(map_rejects_an_empty_memory_table),
		T(map_refuses_misaligned_host_pointers),
		T(pop_good_chain),
		T(pop_only_readable_and_only_writable),
		T(pop_empty_and_not_ready),
		T(pop_full_ring_then_wrap_16bit_index),
		T(pop_longest_chain_is_the_ring),
		T(pop_zero_length_descriptor_has_no_pointer),
		T(pop_rejects_avail_index_jump),
		T(pop_rejects_head_out_of_range),
		T(pop_rejects_next_out_of_range),
		T(pop_rejects_loops),
		T(pop_rejects_indirect),
		T(pop_rejects_readable_after_writable),
		T(pop_rejects_buffers_outside_memory),
		T(pop_rejects_buffer_across_two_regions),
		T(push_publishes_used_entries),
		T(notify_respects_no_interrupt),
		T(notify_on_full_pipe_is_not_an_error),
		T(drain_kick_consumes_pending_kicks),
		T(drain_kick_reports_eof),
		T(gm_translate_at_boundaries),
		T(gm_user_addresses_translate_separately),
		T(gm_rejects_bad_tables_and_closes_fds),
		T(gm_rejects_non_regular_files),
		T(gm_rejects_overlap),
		T(gm_rejects_too_many_regions_and_closes_every_fd),
		T(gm_discard_frees_host_memory),
		T(gm_discard_refuses_ranges_outside),
		T(gm_discard_with_offset_punches_the_right_pages),
	};

	/* As ebbd does: a vanished reader is an error code, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
