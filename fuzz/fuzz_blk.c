/*
 * libFuzzer target: the virtio-blk request parser (blk.c) behind a real
 * vhost-user connection, on guest RAM whose every byte comes from the
 * input, with a small in-memory disk as the backend.
 *
 * Each run creates a device on a socketpair, gives it the memory table and
 * one ring at fixed addresses (RING_* below) with a handshake the harness
 * writes itself, and enabling the ring makes the device serve whatever
 * chains the RAM describes, as one batch.
 *
 * Input:
 *   byte 0     device: bit 0 read-only, bit 1 only read/write ops (no
 *              flush, discard, write zeroes), bit 2 blk_size 4096, bit 3
 *              physical block 4096 (TOPOLOGY), bit 4 seg_max 4, bit 7
 *              descriptor addresses are offsets into RAM (the harness adds
 *              RAM_GPA to each, so well-formed chains are easy to reach;
 *              the addresses stay whatever the sum makes them)
 *   byte 1     backend failures: bit i makes every call of op i fail
 *              (read, write, flush, discard, write zeroes)
 *   byte 2     the error they fail with: even -EIO, odd -ENOTSUP
 *   byte 3     ring size 1 << (b % 7)
 *   bytes 4-5  the ring's starting index (u16 LE, SET_VRING_BASE)
 *   bytes 6-   guest RAM from RAM_GPA on (the rest is zero): the ring,
 *              its avail index, and the buffers
 *
 * Oracle, beyond ASan/UBSan/LeakSanitizer: every backend call keeps
 * blkback's promises (whole sectors, inside the capacity, iovec entries
 * inside guest RAM), a failed device has dropped its connection, one
 * kick publishes at most a ring's worth of used entries, the backend is
 * destroyed exactly once, and no fd leaks.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fuzzutil.h"
#include "blk.h"
#include "blkback.h"
#include "log.h"
#include "loop.h"
#include "vhost_user.h"

#define RAM_BYTES (128 * 1024)
#define RAM_GPA 0x100000ull
#define RING_DESC RAM_GPA		/* 64 * 16 bytes at most */
#define RING_AVAIL (RAM_GPA + 0x400)	/* 6 + 64 * 2 */
#define RING_USED (RAM_GPA + 0x600)	/* 6 + 64 * 8 */
#define DISK_BYTES (64 * 1024)
#define HDR 12
#define IN_BYTES 6

enum { OP_READ, OP_WRITE, OP_FLUSH, OP_DISCARD, OP_WZ };

static int ram_fd = -1;
static uint8_t *ram;		/* our mapping: the guest's view */
static struct vu_dev *cur_vu;	/* the device of this run */
static uint8_t disk[DISK_BYTES];
static unsigned fail_mask;	/* bit per op */
static int fail_rc;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "fuzz_blk: %s\n", what);
	abort();
}

/* ---- the backend: blkback's promises are the oracle ------------------- */

static void check_range(uint64_t off, uint64_t len)
{
	if (off % BLKBACK_SECTOR || len % BLKBACK_SECTOR)
		die("backend called with a partial sector");
	if (off > DISK_BYTES || len > DISK_BYTES - off)
		die("backend called outside the capacity");
}

/* The device's iovecs point into its mapping of guest RAM, nowhere else
 * (ASan does not see mmap bounds). */
static uint64_t check_iov(const struct iovec *iov, unsigned n)
{
	const struct guestmem_region *r = &vu_dev_mem(cur_vu)->r[0];
	uint64_t sum = 0;

	if (n == 0)
		die("backend called with an empty iovec");
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;

		if (iov[i].iov_len == 0 || p < r->map ||
		    iov[i].iov_len > r->size ||
		    (uint64_t)(p - r->map) > r->size - iov[i].iov_len)
			die("iovec entry outside guest RAM or empty");
		sum += iov[i].iov_len;
	}
	return sum;
}

static int failing(int op)
{
	return (fail_mask & (1u << op)) ? fail_rc : 0;
}

static int be_read(void *be, uint64_t off, const struct iovec *iov,
		   unsigned n)
{
	uint64_t len = check_iov(iov, n);
	const uint8_t *p = disk + off;

	check_range(off, len);
	if (failing(OP_READ)) {
		memset(iov[0].iov_base, 0xab, iov[0].iov_len);
		return failing(OP_READ);
	}
	for (unsigned i = 0; i < n; i++) {
		memcpy(iov[i].iov_base, p, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	return 0;
}

static int be_write(void *be, uint64_t off, const struct iovec *iov,
		    unsigned n)
{
	uint64_t len = check_iov(iov, n);
	uint8_t *p = disk + off;

	check_range(off, len);
	if (failing(OP_WRITE))
		return failing(OP_WRITE);
	for (unsigned i = 0; i < n; i++) {
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	return 0;
}

static int be_flush(void *be)
{
	return failing(OP_FLUSH);
}

static int be_discard(void *be, uint64_t off, uint64_t len)
{
	check_range(off, len);
	if (len == 0)
		die("empty discard");
	if (failing(OP_DISCARD))
		return failing(OP_DISCARD);
	memset(disk + off, 0, len);
	return 0;
}

static int be_write_zeroes(void *be, uint64_t off, uint64_t len,
			   bool may_unmap)
{
	check_range(off, len);
	if (len == 0)
		die("empty write zeroes");
	if (failing(OP_WZ))
		return failing(OP_WZ);
	memset(disk + off, 0, len);
	return 0;
}

static unsigned destroyed;

static void be_destroy(void *be)
{
	destroyed++;
}

static const struct blkback_ops full_ops = {
	.read = be_read,
	.write = be_write,
	.flush = be_flush,
	.discard = be_discard,
	.write_zeroes = be_write_zeroes,
	.destroy = be_destroy,
};

static const struct blkback_ops rw_ops = {
	.read = be_read,
	.write = be_write,
	.destroy = be_destroy,
};

/* ---- the frontend ------------------------------------------------------- */

struct conn {
	struct vu_dev *vu;
	int fd;			/* our end of the socketpair */
	bool gone;		/* the device dropped us */
};

static void send_msg(struct conn *c, uint32_t req, const void *payload,
		     uint32_t size, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	uint8_t buf[HDR + 64];
	uint32_t h[3] = { req, 1, size };	/* version 1, no reply asked */
	struct iovec iov = { buf, HDR + size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint8_t drain[256];

	if (c->gone)
		return;
	memcpy(buf, h, HDR);
	memcpy(buf + HDR, payload, size);
	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ||
	    vu_dev_process(c->vu) < 0)
		c->gone = true;
	if (vu_dev_is_failed(c->vu) && vu_dev_connected(c->vu))
		die("failed device still connected");
	while (recv(c->fd, drain, sizeof(drain), MSG_DONTWAIT) > 0)
		;
}

static void handshake(struct conn *c, int event_fd, uint16_t num,
		      uint16_t base)
{
	uint64_t pf = 0, f = 1ull << VIRTIO_F_VERSION_1, q = 0;
	uint8_t table[8 + 32] = { 1 };
	uint64_t region[4] = { RAM_GPA, RAM_BYTES, RAM_GPA, 0 };
	uint32_t st[2] = { 0, num };
	uint8_t addr[40] = { 0 };
	uint64_t a[4] = { RING_DESC, RING_USED, RING_AVAIL, 0 };

	memcpy(table + 8, region, sizeof(region));
	memcpy(addr + 8, a, sizeof(a));
	send_msg(c, VU_SET_PROTOCOL_FEATURES, &pf, 8, -1);
	send_msg(c, VU_SET_FEATURES, &f, 8, -1);
	send_msg(c, VU_SET_MEM_TABLE, table, sizeof(table), ram_fd);
	send_msg(c, VU_SET_VRING_CALL, &q, 8, event_fd);
	send_msg(c, VU_SET_VRING_NUM, st, 8, -1);
	st[1] = base;
	send_msg(c, VU_SET_VRING_BASE, st, 8, -1);
	send_msg(c, VU_SET_VRING_ADDR, addr, sizeof(addr), -1);
	send_msg(c, VU_SET_VRING_KICK, &q, 8, event_fd);
	st[1] = 1;
	/* Enabling a ring with a kick fd serves what is available. */
	send_msg(c, VU_SET_VRING_ENABLE, st, 8, -1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Refused requests and failed devices log: keep the output short. */
	log_set_level(LOG_ERR);
	signal(SIGPIPE, SIG_IGN);
	ram = fuzz_guest_ram("fuzz-blk-ram", RAM_BYTES, &ram_fd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct blk_params p = { 0 };
	struct blkback back = { .capacity_bytes = DISK_BYTES,
				.serial = "fuzz-serial" };
	struct conn c = { .fd = -1 };
	struct loop *loop;
	struct blk *b;
	uint16_t num, base, used, used_before;
	unsigned base_fds = fuzz_count_fds();
	size_t ram_len;
	int sp[2], event_fd;

	if (size < IN_BYTES)
		return 0;
	back.read_only = data[0] & 1;
	back.ops = (data[0] & 2) ? &rw_ops : &full_ops;
	p.block_size = (data[0] & 4) ? 4096 : 512;
	p.phys_block_size = (data[0] & 8) ? 4096 : 0;
	p.seg_max = (data[0] & 16) ? 4 : 0;
	fail_mask = data[1];
	fail_rc = (data[2] & 1) ? -ENOTSUP : -EIO;
	num = (uint16_t)(1u << (data[3] % 7));
	base = (uint16_t)(data[4] | data[5] << 8);

	memset(ram, 0, RAM_BYTES);
	ram_len = size - IN_BYTES < RAM_BYTES ? size - IN_BYTES : RAM_BYTES;
	memcpy(ram, data + IN_BYTES, ram_len);
	if (data[0] & 0x80) {
		for (unsigned i = 0; i < num; i++) {
			uint64_t a;

			memcpy(&a, ram + 16 * i, 8);
			a += RAM_GPA;
			memcpy(ram + 16 * i, &a, 8);
		}
	}

	memcpy(&used_before, ram + (RING_USED - RAM_GPA) + 2, 2);
	event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (event_fd < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		die("fds");
	if (loop_new(&loop) < 0 ||
	    blk_new(loop, NULL, "fuzz/blk", &back, &p, NULL, NULL, &b) < 0)
		die("device");
	c.vu = blk_vu(b);
	cur_vu = c.vu;
	c.fd = sp[0];
	if (vu_dev_attach(c.vu, sp[1]) < 0)
		die("attach");
	handshake(&c, event_fd, num, base);

	/* One kick serves at most a ring's worth.  (Not "at most what was
	 * available at the start": an IN request may legally read disk
	 * data over the avail ring and so publish more.)  The used index
	 * only moves if the device pushed, and then its last push, which
	 * follows every write into guest memory, set it. */
	memcpy(&used, ram + (RING_USED - RAM_GPA) + 2, 2);
	if (!vu_dev_is_failed(c.vu) && used != used_before &&
	    (uint16_t)(used - base) > num)
		die("more used entries than the ring holds");

	close(c.fd);
	vu_dev_process(c.vu);	/* sees the hang-up */
	destroyed = 0;
	blk_free(b);
	if (destroyed != 1)
		die("backend not destroyed exactly once");
	loop_free(loop);
	close(event_fd);
	if (fuzz_count_fds() != base_fds)
		die("file descriptor leaked");
	return 0;
}
