/*
 * libFuzzer target: the vhost-user message parser, with the balloon behind
 * it, fed as a byte stream over a socketpair (vu_dev_attach +
 * vu_dev_process), the way a hostile frontend would.
 *
 * File descriptors cannot come from the input, so the harness attaches
 * them to the messages that take them: one per region to SET_MEM_TABLE
 * (the region count read from its payload), one to SET_VRING_KICK/CALL/ERR
 * unless the NOFD bit is set, one to SET_BACKEND_REQ_FD.  Header flag bit
 * 31 overrides this (the device ignores flag bits above NEED_REPLY): then
 * bits 24-27 give the number of fds and bits 20-21 their kind (guest RAM
 * memfd, eventfd, socket, or the RAM file opened read-only).
 *
 * Input:
 *   byte 0     mode: bit 0 installs a valid memory table first (protocol
 *              features, features, SET_MEM_TABLE of all of RAM); bit 1
 *              also sets up four live 16-entry rings at RAM_GPA + q*8K
 *   bytes 1-2  n (u16 LE), then n bytes copied into guest RAM at RAM_GPA
 *              (so the rings the device walks are fuzzed too)
 *   the rest   messages: a 12-byte header, then up to size bytes of
 *              payload; each is sent (with its fds) and processed before
 *              the next
 *
 * Oracle, beyond ASan/UBSan/LeakSanitizer: a failed device has dropped its
 * connection, and after the device is freed this process holds exactly
 * the fds it held before (no fd received from the frontend leaks).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>

#include "fuzzutil.h"
#include "balloon.h"
#include "log.h"
#include "loop.h"
#include "vhost_user.h"

#define RAM_BYTES (256 * 1024)
#define RAM_GPA 0x100000ull
#define RING_NUM 16
#define HDR 12
#define MAX_SEND_FDS 15

#define FLAG_FD_OVERRIDE (1u << 31)

enum fd_kind { FD_RAM, FD_EVENT, FD_SOCKET, FD_RAM_RO };

static int ram_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "fuzz_vhost_user: %s\n", what);
	abort();
}

/* For the report: what is open now. */
static void list_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[300], target[256];
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		target[n < 0 ? 0 : n] = 0;
		fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
	}
	closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Every rejected message logs a warning: keep the output readable. */
	log_set_level(LOG_ERR);
	signal(SIGPIPE, SIG_IGN);
	ram_fd = memfd_create("fuzz-vu-ram", MFD_CLOEXEC);
	if (ram_fd < 0 || ftruncate(ram_fd, RAM_BYTES) < 0)
		die("memfd");
	return 0;
}

/* The fds one iteration may hand to the device (ours, closed at the end). */
struct fdset {
	int event;		/* an eventfd */
	int sock[2];		/* [1] is sent, [0] kept */
	int ram_ro;		/* the RAM file, read-only */
};

static int fd_of(const struct fdset *fs, enum fd_kind k)
{
	switch (k) {
	case FD_RAM:
		return ram_fd;
	case FD_EVENT:
		return fs->event;
	case FD_SOCKET:
		return fs->sock[1];
	default:
		return fs->ram_ro;
	}
}

struct conn {
	struct vu_dev *vu;
	int fd;			/* our end of the socketpair */
	bool gone;		/* the device dropped us */
};

static void drain(struct conn *c)
{
	uint8_t buf[4096];
	ssize_t n;

	while ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		;
	if (n == 0)
		c->gone = true;
}

/* Send @len bytes with @nfds copies of fds and let the device process. */
static void send_chunk(struct conn *c, const void *p, size_t len,
		       const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(MAX_SEND_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)p, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (c->gone)
		return;
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		c->gone = true;
		return;
	}
	if (vu_dev_process(c->vu) < 0)
		c->gone = true;
	if (vu_dev_is_failed(c->vu) && vu_dev_connected(c->vu))
		die("failed device still connected");
	drain(c);
}

static void send_msg(struct conn *c, uint32_t req, uint32_t flags,
		     const void *payload, uint32_t size, const int *fds,
		     unsigned nfds)
{
	uint8_t buf[HDR + 64];
	uint32_t h[3] = { req, flags, size };

	memcpy(buf, h, HDR);
	if (size)
		memcpy(buf + HDR, payload, size);
	send_chunk(c, buf, HDR + size, fds, nfds);
}

/* A valid start, so the fuzzer spends its time past the handshake. */
static void preinstall(struct conn *c, const struct fdset *fs, bool rings)
{
	uint64_t pf = (1ull << VU_PF_REPLY_ACK) | (1ull << VU_PF_BACKEND_REQ) |
		      (1ull << VU_PF_CONFIG);
	uint64_t f = (1ull << VIRTIO_F_VERSION_1) | 0x27;	/* balloon's */
	uint8_t table[8 + 32] = { 1 };
	uint64_t region[4] = { RAM_GPA, RAM_BYTES, RAM_GPA, 0 };
	const uint32_t v1 = 1;

	memcpy(table + 8, region, sizeof(region));
	send_msg(c, VU_SET_PROTOCOL_FEATURES, v1, &pf, 8, NULL, 0);
	send_msg(c, VU_SET_BACKEND_REQ_FD, v1, NULL, 0, &fs->sock[1], 1);
	send_msg(c, VU_SET_FEATURES, v1, &f, 8, NULL, 0);
	send_msg(c, VU_SET_MEM_TABLE, v1, table, sizeof(table), &ram_fd, 1);
	if (!rings)
		return;
	for (uint32_t q = 0; q < 4; q++) {
		uint64_t base = RAM_GPA + q * 0x2000ull, idx = q;
		uint32_t st[2] = { q, RING_NUM }, zero[2] = { q, 0 };
		uint8_t addr[40] = { 0 };
		uint64_t a[4] = { base, base + 0x1000, base + 0x800, 0 };

		memcpy(addr, &q, 4);
		memcpy(addr + 8, a, sizeof(a));
		send_msg(c, VU_SET_VRING_CALL, v1, &idx, 8, &fs->event, 1);
		send_msg(c, VU_SET_VRING_NUM, v1, st, 8, NULL, 0);
		send_msg(c, VU_SET_VRING_BASE, v1, zero, 8, NULL, 0);
		send_msg(c, VU_SET_VRING_ADDR, v1, addr, sizeof(addr), NULL, 0);
		send_msg(c, VU_SET_VRING_KICK, v1, &idx, 8, &fs->event, 1);
		st[1] = 1;
		send_msg(c, VU_SET_VRING_ENABLE, v1, st, 8, NULL, 0);
	}
}

/* How many fds, and which, go with a message (see the file comment). */
static unsigned fds_for(const uint32_t *h, const uint8_t *p, size_t plen,
			const struct fdset *fs, int *fds)
{
	unsigned n = 0;
	enum fd_kind kind = FD_RAM;

	if (h[1] & FLAG_FD_OVERRIDE) {
		n = (h[1] >> 24) & 0xf;
		kind = (enum fd_kind)((h[1] >> 20) & 3);
	} else {
		switch (h[0]) {
		case VU_SET_MEM_TABLE:
			if (plen >= 4) {
				uint32_t regions;

				memcpy(&regions, p, 4);
				n = regions > 8 ? 8 : regions;
			}
			break;
		case VU_SET_VRING_KICK:
		case VU_SET_VRING_CALL:
		case VU_SET_VRING_ERR:
			kind = FD_EVENT;
			n = 1;
			if (plen >= 2 && (p[1] & 1))	/* NOFD, bit 8 */
				n = 0;
			break;
		case VU_SET_BACKEND_REQ_FD:
			kind = FD_SOCKET;
			n = 1;
			break;
		default:
			break;
		}
	}
	if (n > MAX_SEND_FDS)
		n = MAX_SEND_FDS;
	for (unsigned i = 0; i < n; i++)
		fds[i] = fd_of(fs, kind);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct loop *loop;
	struct balloon *b;
	struct fdset fs;
	struct conn c = { .fd = -1 };
	int sp[2], fds[MAX_SEND_FDS];
	char ro_path[64];
	size_t off = 3, ram_len;
	unsigned base_fds;
	uint8_t mode;

	if (size < 3)
		return 0;
	/* Per run: libFuzzer opens files of its own between runs. */
	base_fds = fuzz_count_fds();
	mode = data[0];
	ram_len = (size_t)(data[1] | data[2] << 8);
	if (ram_len > size - 3)
		ram_len = size - 3;
	if (ram_len > RAM_BYTES)
		ram_len = RAM_BYTES;
	/* Fresh RAM each run: the device writes used rings and punches. */
	if (fallocate(ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      RAM_BYTES) < 0 ||
	    pwrite(ram_fd, data + off, ram_len, 0) != (ssize_t)ram_len)
		die("resetting guest RAM");
	off += ram_len;

	snprintf(ro_path, sizeof(ro_path), "/proc/self/fd/%d", ram_fd);
	fs.event = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fs.ram_ro = open(ro_path, O_RDONLY | O_CLOEXEC);
	if (fs.event < 0 || fs.ram_ro < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fs.sock) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		die("fds");
	if (loop_new(&loop) < 0 ||
	    balloon_new(loop, NULL, "fuzz/balloon", true, NULL, NULL, &b) < 0)
		die("device");
	c.vu = balloon_vu(b);
	c.fd = sp[0];
	if (vu_dev_attach(c.vu, sp[1]) < 0)
		die("attach");

	if (mode & 1)
		preinstall(&c, &fs, mode & 2);

	while (off < size && !c.gone) {
		uint32_t h[3] = { 0, 0, 0 };
		size_t hlen = size - off < HDR ? size - off : HDR;
		size_t plen;
		unsigned nfds;

		memcpy(h, data + off, hlen);
		plen = size - off - hlen;
		if (plen > h[2])
			plen = h[2];
		nfds = fds_for(h, data + off + hlen, plen, &fs, fds);
		send_chunk(&c, data + off, hlen + plen, fds, nfds);
		off += hlen + plen;
	}

	close(c.fd);
	vu_dev_process(c.vu);	/* sees the hang-up */
	balloon_free(b);
	loop_free(loop);
	close(fs.event);
	close(fs.ram_ro);
	close(fs.sock[0]);
	close(fs.sock[1]);
	if (fuzz_count_fds() != base_fds) {
		fprintf(stderr, "fds: %u at start, now:\n", base_fds);
		list_fds();
		die("file descriptor leaked");
	}
	return 0;
}
