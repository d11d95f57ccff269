/*
 * vsession: a vhost-user device's session, kept in a memfd so that it
 * outlives ebbd (issue 15; docs/restart.md 2.2 and 2.4).
 *
 * UML's virtio_uml negotiates a device once, at probe, and never again: a
 * restarted ebbd that got the device's fds back (fdhold.h) must also know
 * what was negotiated over them, where the rings are, which requests the
 * old ebbd had taken from the rings but not completed, and which message
 * it had read from the socket but not answered.  All of that is written
 * here as it happens, into a shared mapping of a memfd that is held with
 * the device's other fds.  kill -9 stops ebbd between two instructions;
 * every store it made to the mapping stays, so the record is as current as
 * the last store, and the order of the stores (below) makes every prefix
 * of an update recoverable.
 *
 * Layout: struct vs_layout, fixed size, host byte order, no pointers (a
 * new process maps it anywhere).  It is hostile input on load: every field
 * is checked by vs_check() before it is used (a corrupt record leaves the
 * device not adopted, never crashes ebbd).
 *
 * The in-flight record (per ring) follows QEMU's INFLIGHT_SHMFD split-queue
 * region in spirit (vhost-user.rst, "Inflight I/O tracking"), in ebb's own
 * layout:
 *   pop   read the chain, then inflight[head] = ++counter (release);
 *   push  last_batch_head = head; write the used element; store the
 *         ring's used->idx; inflight[head] = 0; used_idx = the new index.
 * Recovery (vs_ring_recover): if the ring's used->idx is one past the
 * record's used_idx, the last push reached the ring but not the record:
 * its head (last_batch_head) is complete.  Every popped head is then
 * either used or in flight, so the next avail entry to pop is
 * used->idx + (heads in flight), and the heads in flight are run again in
 * the order they were popped.  Running a request again is safe for every
 * request ebb serves (docs/restart.md 2.2).
 *
 * Threading: loop thread only.
 */
#ifndef EBB_VSESSION_H
#define EBB_VSESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "guestmem.h"
#include "virtq.h"

#define VS_MAGIC	"EBBVSES1"
#define VS_VERSION	1
#define VS_QUEUES	8		/* = VU_MAX_QUEUES */
#define VS_MSG_MAX	(12 + 4096)	/* = header + VU_MAX_PAYLOAD */
#define VS_DEV_BYTES	256		/* the device's own durable state */

/* msg_state: the message in msg[] is being handled (read from the socket,
 * not yet answered).  A new ebbd handles it again. */
#define VS_MSG_NONE	0
#define VS_MSG_HANDLING	1

struct vs_ring {
	uint16_t num;		/* 0: never set up */
	uint8_t addr_set;
	uint8_t enabled;
	uint8_t started;	/* a kick fd (or NOFD) was set */
	uint8_t has_kick;	/* "kick/<q>" is held */
	uint8_t has_call;	/* "call/<q>" is held */
	uint8_t pad;
	uint64_t desc_addr, avail_addr, used_addr;
	uint16_t used_idx;	/* ebbd's used index after its last push */
	uint16_t last_batch_head;	/* the head of that push */
	uint32_t pad2;
	uint64_t counter;	/* heads popped so far */
	uint64_t inflight[VQ_MAX_SIZE];	/* per head: its pop's counter while
					 * in flight, 0 when not */
};

struct vs_layout {
	char magic[8];
	uint32_t version;
	uint32_t size;		/* sizeof(struct vs_layout) */
	uint32_t connected;	/* a frontend session is recorded */
	uint32_t has_backend;	/* "backend" is held */
	uint64_t features;
	uint64_t protocol_features;
	uint32_t nregions;	/* memory table; "mem/<i>" held for each */
	uint32_t pad;
	struct guestmem_region_desc regions[GUESTMEM_MAX_REGIONS];
	uint32_t msg_state;	/* VS_MSG_* */
	uint32_t msg_len;	/* bytes of msg[] */
	uint32_t msg_nfds;	/* fds it came with (lost with ebbd) */
	uint32_t pad3;
	uint8_t msg[VS_MSG_MAX];
	uint8_t dev[VS_DEV_BYTES];
	struct vs_ring ring[VS_QUEUES];
};

struct vsession {
	int fd;			/* the memfd, owned */
	struct vs_layout *l;	/* its shared mapping */
};

/* A new, empty record in a new memfd named after @name.  0 or -errno. */
int vs_create(const char *name, struct vsession *out);
/*
 * Map an existing record (@fd, taken over: closed on failure too) and
 * check it (vs_check).  0, or -errno with a reason in @why (96 bytes).
 */
int vs_open(int fd, struct vsession *out, char *why, unsigned nqueues);
void vs_close(struct vsession *vs);

/* Check every field of @l against the layout's rules and @nqueues (the
 * device's queue count).  0 or -EBADMSG with @why set. */
int vs_check(const struct vs_layout *l, uint64_t file_size, unsigned nqueues,
	     char *why, unsigned whylen);

/* Forget the frontend session (disconnect, reset): keep the device state. */
void vs_clear_session(struct vsession *vs);
/* Forget one ring (reset, GET_VRING_BASE). */
void vs_clear_ring(struct vs_ring *r);

/*
 * Recover @vq's indices from @r and the ring in guest memory (@vq mapped):
 * settle a torn push, set last_avail and used_idx, and fill @heads with
 * the heads still in flight in pop order (*@n of them).  -EBADMSG if the
 * record and the ring disagree beyond one torn push.
 */
int vs_ring_recover(struct vs_ring *r, struct vq *vq, uint16_t *heads,
		    unsigned *n, char *why, unsigned whylen);

#endif
