/*
 * libFuzzer target: the ebb device's requestq (ebbdev.c, docs/ebb-device.md)
 * behind a real vhost-user connection, driven the way a hostile driver
 * would: memory table, feature negotiation, one ring, then descriptor
 * chains and SET_TABLE/CLEAR_TABLE requests of the input's choosing, then
 * discards through whatever table was registered.
 *
 * Guest RAM is RAM_BYTES at RAM_GPA (pfns 0x100 .. 0x11f), given as one
 * region or, with bit 3 of byte 0, as two adjacent halves, so tables and
 * page ranges that straddle regions are reachable.
 *
 * Input:
 *   byte 0     bit 0 EBB_F_PAGE_STATES, bit 1 EBB_F_VOLATILE accepted;
 *              bit 2 raw mode (below); bit 3 two regions; bit 4 negotiate
 *              features again after the kick (the table must be dropped)
 *   byte 1     ring size 1 << (b % 7)
 *   byte 2     the discard after the kick: bits 0-1 what (PAGESTATE_*
 *              bits 1-2), bits 2-3 how (0: no discard), bit 4 the random
 *              evictor as well, bits 5-7 max pages (0: 8 << 5 ... )
 *   byte 3     structured mode: n, the number of request records
 *   structured mode: n records of 34 bytes, then guest RAM from DATA_OFF on
 *     record:  byte 0 shape: bits 0-1 readable split (0: 32; 1: 8+24;
 *              2: 8+8+8+8; 3: a+32-a with a = bits 2-6, may be 0 or more
 *              than 32), bit 7 status buffer first (malformed)
 *              byte 1 status buffer length (b % 3) and, bit 7, the
 *              request's addresses are relative: the harness adds
 *              RAM_GPA to table_addr, RAM_GPA / 4096 to first_pfn and
 *              takes npages % 64, so accepted tables are easy to reach
 *              bytes 2-33 the struct ebb_req
 *   raw mode:  bytes 4- are guest RAM from 0 on (ring, requests, status
 *              bytes: all the input's), as in fuzz_blk.c
 *
 * Oracle, beyond ASan/UBSan/LeakSanitizer: a failed device has dropped
 * its connection; in structured mode every answered request got exactly
 * the status the spec's rules give (a model of section 5 below), and the
 * registration is the last accepted SET_TABLE's unless a CLEAR_TABLE or a
 * failure came after it; a new feature negotiation drops it; a discard
 * takes only entries in what it was asked for, and leaves each such page
 * reading zeros (but for the table's own bytes, which may lie in it); no
 * fd leaks.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_config.h>
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
#include "ebbdev.h"
#include "log.h"
#include "loop.h"
#include "vhost_user.h"

#define RAM_BYTES (128 * 1024)
#define RAM_GPA 0x100000ull
#define RING_DESC 0x0		/* offsets into RAM: 64 * 16 bytes at most */
#define RING_AVAIL 0x400	/* 6 + 64 * 2 */
#define RING_USED 0x600		/* 6 + 64 * 8 */
#define SLOT_OFF 0x1000		/* request slot i: 64 bytes at SLOT_OFF + 64 i */
#define SLOT_STATUS 48		/* the status byte within a slot */
#define DATA_OFF 0x2000		/* the input's RAM from here on */
#define HDR 12
#define IN_BYTES 4
#define REC_BYTES 34
#define MAX_CHAINS 64

static int ram_fd = -1;
static uint8_t *ram;		/* our mapping: the guest's view */
static uint8_t before[RAM_BYTES];	/* RAM before a discard */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "fuzz_ebbdev: %s\n", what);
	abort();
}

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
		char buf[CMSG_SPACE(sizeof(int) * 2)];
		struct cmsghdr align;
	} ctl;
	uint8_t buf[HDR + 128];
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
		int fds[2] = { fd, fd };
		unsigned nfds = req == VU_SET_MEM_TABLE ?
			((const uint32_t *)payload)[0] : 1;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ||
	    vu_dev_process(c->vu) < 0)
		c->gone = true;
	if (vu_dev_is_failed(c->vu) && vu_dev_connected(c->vu))
		die("failed device still connected");
	while (recv(c->fd, drain, sizeof(drain), MSG_DONTWAIT) > 0)
		;
}

static void set_features(struct conn *c, uint64_t features)
{
	send_msg(c, VU_SET_FEATURES, &features, 8, -1);
}

static void handshake(struct conn *c, int event_fd, uint64_t features,
		      bool two_regions, uint16_t num)
{
	uint64_t pf = 0, q = 0;
	uint8_t table[8 + 64] = { 0 };
	uint64_t one[4] = { RAM_GPA, RAM_BYTES, RAM_GPA, 0 };
	uint64_t two[8] = {
		RAM_GPA, RAM_BYTES / 2, RAM_GPA, 0,
		RAM_GPA + RAM_BYTES / 2, RAM_BYTES / 2, RAM_GPA + RAM_BYTES / 2,
		RAM_BYTES / 2,
	};
	uint32_t nregions = two_regions ? 2 : 1;
	uint32_t st[2] = { 0, num };
	uint8_t addr[40] = { 0 };
	uint64_t a[4] = { RAM_GPA + RING_DESC, RAM_GPA + RING_USED,
			  RAM_GPA + RING_AVAIL, 0 };

	memcpy(table, &nregions, 4);
	if (two_regions)
		memcpy(table + 8, two, sizeof(two));
	else
		memcpy(table + 8, one, sizeof(one));
	memcpy(addr + 8, a, sizeof(a));
	send_msg(c, VU_SET_PROTOCOL_FEATURES, &pf, 8, -1);
	set_features(c, features);
	send_msg(c, VU_SET_MEM_TABLE, table, 8 + 32 * nregions, ram_fd);
	send_msg(c, VU_SET_VRING_CALL, &q, 8, event_fd);
	send_msg(c, VU_SET_VRING_NUM, st, 8, -1);
	send_msg(c, VU_SET_VRING_BASE, (uint32_t[2]){ 0, 0 }, 8, -1);
	send_msg(c, VU_SET_VRING_ADDR, addr, sizeof(addr), -1);
	send_msg(c, VU_SET_VRING_KICK, &q, 8, event_fd);
	st[1] = 1;
	/* Enabling a ring with a kick fd serves what is available. */
	send_msg(c, VU_SET_VRING_ENABLE, st, 8, -1);
}

/* ---- structured mode: the harness writes the ring --------------------- */

struct chain {
	bool well_formed;	/* the device must answer it */
	uint8_t expect;		/* the status the model gives */
	uint32_t type;
	uint64_t table_addr, first_pfn, npages;
};

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Does [gpa, gpa + len) lie in one region? */
static bool in_one_region(uint64_t gpa, uint64_t len, bool two_regions)
{
	uint64_t rsize = two_regions ? RAM_BYTES / 2 : RAM_BYTES;

	for (uint64_t base = RAM_GPA; base < RAM_GPA + RAM_BYTES;
	     base += rsize)
		if (gpa >= base && gpa - base < rsize && len <= rsize - (gpa - base))
			return true;
	return false;
}

/* Section 5's rules, written apart from ebbdev.c. */
static uint8_t model(const struct chain *ch, uint32_t flags,
		     uint64_t features, bool two_regions)
{
	if (ch->type != EBB_REQ_SET_TABLE && ch->type != EBB_REQ_CLEAR_TABLE)
		return EBB_S_INVALID;
	if (flags)
		return EBB_S_INVALID;
	if (!(features & (1ull << EBB_F_PAGE_STATES)))
		return EBB_S_UNSUPPORTED;
	if (ch->type == EBB_REQ_CLEAR_TABLE)
		return ch->table_addr || ch->first_pfn || ch->npages ?
		       EBB_S_INVALID : EBB_S_OK;
	if (ch->npages == 0 || ch->npages > EBB_TABLE_MAX_PAGES)
		return EBB_S_INVALID;
	if (!in_one_region(ch->table_addr, ch->npages, two_regions))
		return EBB_S_INVALID;
	if (ch->first_pfn > UINT64_MAX / 4096 / 2 ||
	    !in_one_region(ch->first_pfn * 4096, ch->npages * 4096,
			   two_regions))
		return EBB_S_INVALID;
	return EBB_S_OK;
}

static void put_desc(unsigned i, uint64_t off, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint64_t a = RAM_GPA + off;
	uint8_t *d = ram + RING_DESC + 16 * i;

	memcpy(d, &a, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* Lay out the records as chains; returns how many chains were made. */
static unsigned build_ring(const uint8_t *rec, unsigned nrec, uint16_t num,
			   uint64_t features, bool two_regions,
			   struct chain *chains)
{
	unsigned ndesc = 0, n = 0;
	uint16_t idx;

	for (; n < nrec && n < num && n < MAX_CHAINS; n++, rec += REC_BYTES) {
		uint8_t *slot = ram + SLOT_OFF + 64 * n;
		struct chain *ch = &chains[n];
		uint32_t lens[4], nr = 0, got = 0, flags;
		unsigned shape = rec[0], status_len = (rec[1] & 0x7f) % 3;
		unsigned head = ndesc, a;

		memcpy(slot, rec + 2, 32);
		if (rec[1] & 0x80) {
			uint64_t v = le64_at(slot + 8) + RAM_GPA;

			memcpy(slot + 8, &v, 8);
			v = le64_at(slot + 16) + RAM_GPA / 4096;
			memcpy(slot + 16, &v, 8);
			v = le64_at(slot + 24) % 64;
			memcpy(slot + 24, &v, 8);
		}
		memcpy(&ch->type, slot, 4);
		memcpy(&flags, slot + 4, 4);
		ch->table_addr = le64_at(slot + 8);
		ch->first_pfn = le64_at(slot + 16);
		ch->npages = le64_at(slot + 24);
		slot[SLOT_STATUS] = 0xee;

		switch (shape & 3) {
		case 0:
			lens[nr++] = 32;
			break;
		case 1:
			lens[nr++] = 8;
			lens[nr++] = 24;
			break;
		case 2:
			for (; nr < 4; nr++)
				lens[nr] = 8;
			break;
		default:
			a = (shape >> 2) & 31;
			lens[nr++] = a;
			lens[nr++] = 32 - a + ((shape & 0x40) ? 1 : 0);
			break;
		}
		if (ndesc + nr + 1 > num)
			break;
		if (shape & 0x80) {
			put_desc(ndesc, SLOT_OFF + 64 * n + SLOT_STATUS,
				 status_len, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
				 (uint16_t)(ndesc + 1));
			ndesc++;
		}
		for (unsigned i = 0; i < nr; i++) {
			bool last = i + 1 == nr && (shape & 0x80);

			put_desc(ndesc, SLOT_OFF + 64 * n + got, lens[i],
				 last ? 0 : VRING_DESC_F_NEXT,
				 (uint16_t)(ndesc + 1));
			got += lens[i];
			ndesc++;
		}
		if (!(shape & 0x80)) {
			put_desc(ndesc, SLOT_OFF + 64 * n + SLOT_STATUS,
				 status_len, VRING_DESC_F_WRITE, 0);
			ndesc++;
		}
		ch->well_formed = !(shape & 0x80) && got == 32 &&
				  status_len == 1;
		ch->expect = model(ch, flags, features, two_regions);
		memcpy(ram + RING_AVAIL + 4 + 2 * n, &(uint16_t){ (uint16_t)head },
		       2);
	}
	idx = (uint16_t)n;
	memcpy(ram + RING_AVAIL + 2, &idx, 2);
	return n;
}

/* The oracle for one kick in structured mode. */
static void check_answers(struct ebbdev *e, const struct chain *chains,
			  unsigned n, uint64_t *table_off)
{
	struct ebbdev_info info;
	const struct chain *last = NULL;
	bool want_table = false;
	uint16_t used;

	ebbdev_get_info(e, &info);
	memcpy(&used, ram + RING_USED + 2, 2);
	if (info.failed) {
		if (info.table)
			die("failed device kept its table");
		return;
	}
	if (used != n)
		die("not every chain answered");
	for (unsigned i = 0; i < n; i++) {
		uint8_t st = ram[SLOT_OFF + 64 * i + SLOT_STATUS];

		if (!chains[i].well_formed)
			die("malformed chain answered");
		if (st != chains[i].expect) {
			fprintf(stderr, "chain %u type %u table %#llx pfn %#llx "
				"npages %llu: status %u, model %u\n", i,
				chains[i].type,
				(unsigned long long)chains[i].table_addr,
				(unsigned long long)chains[i].first_pfn,
				(unsigned long long)chains[i].npages, st,
				chains[i].expect);
			die("status differs from the spec's model");
		}
		/* A refused request changes nothing. */
		if (st == EBB_S_OK) {
			want_table = chains[i].type == EBB_REQ_SET_TABLE;
			last = &chains[i];
		}
	}
	if (want_table)
		*table_off = last->table_addr - RAM_GPA;
	if (info.table != want_table)
		die("registration is not the last accepted request's");
	if (want_table && (info.first_pfn != last->first_pfn ||
			   info.npages != last->npages))
		die("registered range is not the request's");
}

/* A discard takes only entries in @what and leaves their pages zero, but
 * for the table's own bytes.  @table_off: the table's offset in RAM, or
 * UINT64_MAX if the harness does not know it (raw mode). */
static void check_discard(struct ebbdev *e, uint64_t table_off, unsigned what,
			  unsigned how, uint64_t max_pages, bool evict)
{
	struct ebbdev_info info;
	struct pagestate_pass p;
	uint64_t taken = 0;
	int rc;

	ebbdev_get_info(e, &info);
	if (!info.table)
		return;
	memcpy(before, ram, RAM_BYTES);
	if (!(info.features & (1ull << EBB_F_VOLATILE)))
		what &= ~PAGESTATE_VOLATILE;
	rc = evict ? ebbdev_evict(e, what, max_pages, &p) :
		     ebbdev_discard(e, what, how, max_pages, &p);
	if (rc < 0 && !(rc == -EINVAL && !what))
		die("discard failed on an attached table");
	if (rc < 0)
		return;
	if (p.discarded_pages > max_pages)
		die("discarded more than asked");
	if (table_off == UINT64_MAX)
		return;
	for (uint64_t i = 0; i < info.npages; i++) {
		uint64_t page_off = (info.first_pfn + i) * 4096 - RAM_GPA;
		uint8_t old = before[table_off + i];

		if (ram[table_off + i] != PS_DISCARDED || old == PS_DISCARDED)
			continue;
		/* A punched page holding table bytes zeroes entries the
		 * device has not looked at: only count what it took. */
		if (!(what & (1u << old)))
			die("discarded an entry not in what");
		taken++;
		for (uint64_t b = page_off; b < page_off + 4096; b++)
			if (ram[b] && (b < table_off ||
				       b >= table_off + info.npages))
				die("discarded page does not read zeros");
	}
	if (taken > p.discarded_pages)
		die("more entries discarded than the pass reports");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Refused requests and failed devices log: keep the output short. */
	log_set_level(LOG_ERR);
	signal(SIGPIPE, SIG_IGN);
	ram = fuzz_guest_ram("fuzz-ebbdev-ram", RAM_BYTES, &ram_fd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chain chains[MAX_CHAINS];
	struct conn c = { .fd = -1 };
	struct ebbdev_info info;
	struct loop *loop;
	struct ebbdev *e;
	uint64_t features = 1ull << VIRTIO_F_VERSION_1;
	unsigned base_fds = fuzz_count_fds(), nrec = 0, n = 0;
	uint64_t table_off = UINT64_MAX;
	unsigned what, how;
	uint16_t num;
	bool raw, two;
	int sp[2], event_fd;

	if (size < IN_BYTES)
		return 0;
	features |= data[0] & 3;
	raw = data[0] & 4;
	two = data[0] & 8;
	num = (uint16_t)(1u << (data[1] % 7));
	what = (data[2] & 3u) << 1;
	how = (data[2] >> 2) & 3u;

	/* Punched pages stay holes in the memfd: start from a whole file. */
	if (fallocate(ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      RAM_BYTES) < 0)
		die("fallocate");
	memset(ram, 0, RAM_BYTES);
	if (raw) {
		size_t len = size - IN_BYTES < RAM_BYTES ? size - IN_BYTES :
			     RAM_BYTES;

		memcpy(ram, data + IN_BYTES, len);
	} else {
		size_t rest;

		nrec = data[3];
		if ((size - IN_BYTES) / REC_BYTES < nrec)
			nrec = (unsigned)((size - IN_BYTES) / REC_BYTES);
		rest = size - IN_BYTES - (size_t)nrec * REC_BYTES;
		if (rest > RAM_BYTES - DATA_OFF)
			rest = RAM_BYTES - DATA_OFF;
		memcpy(ram + DATA_OFF, data + IN_BYTES + nrec * REC_BYTES, rest);
		n = build_ring(data + IN_BYTES, nrec, num, features, two,
			       chains);
	}

	event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (event_fd < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		die("fds");
	if (loop_new(&loop) < 0 ||
	    ebbdev_new(loop, NULL, "fuzz/ebb", NULL, NULL, &e) < 0)
		die("device");
	c.vu = ebbdev_vu(e);
	c.fd = sp[0];
	if (vu_dev_attach(c.vu, sp[1]) < 0)
		die("attach");
	handshake(&c, event_fd, features, two, num);

	if (!raw && !c.gone)
		check_answers(e, chains, n, &table_off);
	if (how)
		check_discard(e, table_off, what, how, 1 + (data[2] >> 5) * 8,
			      false);
	if (data[2] & 0x10)
		check_discard(e, table_off, what, PAGESTATE_SMALL,
			      1 + (data[2] >> 5) * 8, true);
	if (data[0] & 0x10) {
		set_features(&c, features);
		ebbdev_get_info(e, &info);
		if (info.table)
			die("table kept over a new feature negotiation");
	}

	close(c.fd);
	vu_dev_process(c.vu);	/* sees the hang-up */
	ebbdev_get_info(e, &info);
	if (info.table)
		die("table kept after the frontend left");
	ebbdev_free(e);
	loop_free(loop);
	close(event_fd);
	if (fuzz_count_fds() != base_fds)
		die("file descriptor leaked");
	return 0;
}
