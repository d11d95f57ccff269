/*
 * fake_frontend: the driver's half of ebb's devices, for unit tests.
 *
 * Three small pieces a test combines:
 *
 *   ff_mem   guest RAM: a memfd the test maps for itself (the guest's view)
 *            and hands to the backend, as UML does with its RAM file;
 *   ff_ring  a split virtqueue laid out in that RAM, driven from the
 *            driver's side (write descriptors, publish avail, read used);
 *   ff       a vhost-user frontend on a stream socket: framed messages
 *            with SCM_RIGHTS fds, acks, and the UML handshake.
 *
 * Everything is single-threaded: the backend runs on the same thread, so
 * every wait for an answer pumps the backend's loop (ff_pump) in between.
 * Helpers assert with cmocka on anything the test did not mean to happen;
 * functions whose failure a test wants to see return -errno instead.
 */
#ifndef EBB_TEST_FAKE_FRONTEND_H
#define EBB_TEST_FAKE_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "virtq.h"

#define FF_PAGE 4096u

/* Request codes and flags, spelled out again so a test reads as the wire. */
#define FF_VERSION	0x1u
#define FF_F_REPLY	(1u << 2)
#define FF_F_NEED_REPLY	(1u << 3)
#define FF_NOFD		(1ull << 8)

/* ---- guest memory ------------------------------------------------------ */

struct ff_mem {
	int fd;			/* the memfd, owned */
	uint8_t *map;		/* our whole-file mapping (the guest's view) */
	uint64_t file_bytes;	/* file size */
	uint64_t gpa;		/* guest address of file offset @off */
	uint64_t off;		/* file offset where guest memory starts */
	uint64_t bytes;		/* guest memory bytes, from @off */
};

/* A memfd of @off + @bytes, guest memory [gpa, gpa+bytes) at file @off. */
void ff_mem_init(struct ff_mem *m, uint64_t gpa, uint64_t off, uint64_t bytes);
void ff_mem_free(struct ff_mem *m);
/* Guest view of @gpa (asserts it is inside). */
void *ff_mem_ptr(const struct ff_mem *m, uint64_t gpa);
/* Write every page so it is allocated. */
void ff_mem_touch(struct ff_mem *m);
/* Allocated bytes of the file (st_blocks * 512). */
uint64_t ff_mem_allocated(const struct ff_mem *m);
/* Is the page at @gpa allocated in the file (SEEK_DATA)? */
bool ff_mem_page_present(const struct ff_mem *m, uint64_t gpa);

/* ---- a split ring, driver side ----------------------------------------- */

struct ff_ring {
	struct ff_mem *m;
	uint16_t num;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t avail_idx;	/* our shadow of avail->idx */
	uint16_t next_desc;	/* next free descriptor, round robin */
	uint16_t used_seen;	/* used entries consumed by ff_ring_used */
};

/* Lay out a ring of @num at @gpa: desc, then avail, then used, each on
 * its own page.  Zeroes the three areas. */
void ff_ring_init(struct ff_ring *r, struct ff_mem *m, uint16_t num,
		  uint64_t gpa);
struct vring_desc *ff_ring_desc(struct ff_ring *r, uint16_t i);
struct vring_avail *ff_ring_avail(struct ff_ring *r);
struct vring_used *ff_ring_used(struct ff_ring *r);
/* Write descriptor @i. */
void ff_ring_set(struct ff_ring *r, uint16_t i, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next);
/* Build a chain of @n buffers from free descriptors; returns the head.
 * @write[i] marks device-writable buffers. */
uint16_t ff_ring_chain(struct ff_ring *r, unsigned n, const uint64_t *addr,
		       const uint32_t *len, const bool *write);
/* Make @head available (ring entry, then idx with release). */
void ff_ring_post(struct ff_ring *r, uint16_t head);
/* Publish avail->idx = @idx without writing entries (hostile tests). */
void ff_ring_set_avail_idx(struct ff_ring *r, uint16_t idx);
uint16_t ff_ring_used_idx(struct ff_ring *r);

/* ---- the vhost-user frontend ------------------------------------------- */

struct ff {
	int fd;			/* our end of the connection, -1 once closed */
	struct loop *loop;	/* the backend's loop, pumped while waiting */
	int backend_peer;	/* our end of the backend request channel */
};

/* Run the backend's loop for one pass: every event ready now, no wait. */
void ff_pump(struct loop *loop);
/* Pump until @done(@arg) or @ms pass; returns done(arg). */
bool ff_pump_until(struct loop *loop, bool (*done)(void *), void *arg,
		   unsigned ms);

/* @fd: a connected stream socket (ours).  Takes ownership. */
void ff_init(struct ff *f, struct loop *loop, int fd);
/* Connect to a listening backend at @path and let the loop accept. */
int ff_connect(struct ff *f, struct loop *loop, const char *path);
void ff_close(struct ff *f);

/* Send raw bytes (no framing), optionally with fds.  Returns 0 or -errno. */
int ff_send_raw(struct ff *f, const void *buf, size_t len, const int *fds,
		unsigned nfds);
/* Send one framed message.  Returns 0 or -errno. */
int ff_send(struct ff *f, uint32_t req, uint32_t flags, const void *payload,
	    uint32_t size, const int *fds, unsigned nfds);
/*
 * Wait (pumping) for one reply to @req: returns its payload size with the
 * payload in @out (up to @cap bytes), -ECONNRESET if the backend closed
 * the connection, -ETIMEDOUT if nothing came within a second, -EPROTO if
 * the reply is malformed or answers another request.
 */
int ff_recv(struct ff *f, uint32_t req, void *out, size_t cap);
/* Send with NEED_REPLY and return the u64 ack (0 ok, non-zero error), or a
 * negative ff_recv/ff_send error. */
int64_t ff_call(struct ff *f, uint32_t req, const void *payload, uint32_t size,
		const int *fds, unsigned nfds);
/* A GET_* request with no payload that answers a u64. */
int ff_get_u64(struct ff *f, uint32_t req, uint64_t *out);
/* Pump until the backend closes the connection; true if it did within
 * a second.  Drains anything else it sent. */
bool ff_wait_closed(struct ff *f);

/* Message builders. */
int64_t ff_vring_state(struct ff *f, uint32_t req, uint32_t index,
		       uint32_t num);
int64_t ff_vring_addr(struct ff *f, uint32_t index, uint64_t desc,
		      uint64_t used, uint64_t avail);
/* KICK/CALL/ERR: @fd < 0 sends the NOFD flag and no fd. */
int64_t ff_vring_fd(struct ff *f, uint32_t req, uint32_t index, int fd);
/* One region, the whole of @m, user address == guest address. */
int64_t ff_mem_table(struct ff *f, const struct ff_mem *m);

/*
 * The UML order up to a live device: SET_OWNER, GET_FEATURES,
 * GET/SET_PROTOCOL_FEATURES, SET_BACKEND_REQ_FD, GET_CONFIG, SET_FEATURES
 * (@features), SET_MEM_TABLE (@m), and for each of @nrings rings CALL
 * (@call_fds[i]), NUM, BASE, ADDR, then KICK (@kick_fds[i]) and ENABLE.
 * Asserts every ack.  The fds stay the caller's (the backend gets dups).
 */
void ff_handshake(struct ff *f, const struct ff_mem *m, uint64_t features,
		  struct ff_ring *rings, unsigned nrings, const int *kick_fds,
		  const int *call_fds);
/* The same for a device whose config space is @cfg_len bytes (at most
 * 256; ff_handshake reads 16, the balloon's and more of blk's). */
void ff_handshake_cfg(struct ff *f, const struct ff_mem *m, uint64_t features,
		      uint32_t cfg_len, struct ff_ring *rings, unsigned nrings,
		      const int *kick_fds, const int *call_fds);

/* Number of open fds of this process (leak checks). */
unsigned ff_count_fds(void);

#endif
