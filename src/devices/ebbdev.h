/*
 * ebbdev: ebb's paravirtual device (device ID 0xEBB; docs/ebb-device.md)
 * served over vhost-user, with its page-state capability.
 *
 * Owns one vu_dev, the requestq protocol, and a pagestate engine
 * (pagestate.h) that works on the table the driver registers with
 * EBB_REQ_SET_TABLE.  Discards punch holes in the guest's RAM file through
 * the memory table this device received (guestmem_discard).
 *
 * Offered features: VIRTIO_F_VERSION_1, EBB_F_PAGE_STATES, EBB_F_VOLATILE.
 * Only what the driver accepted is used: without PAGE_STATES a SET_TABLE
 * is answered EBB_S_UNSUPPORTED, without VOLATILE volatile entries are
 * never discarded.  A guest whose kernel has no driver for the device
 * leaves it unbound: no table, nothing is ever discarded.
 *
 * Hostile input, two kinds (spec section 5):
 *   - a malformed descriptor chain (readable part not exactly the 32-byte
 *     request, writable part not exactly the status byte, or a ring
 *     vq_pop rejects) fails the device (vu_dev_fail), nothing else;
 *   - a malformed request (unknown type, flags, a table not wholly inside
 *     one region of guest memory, pages outside one region, npages 0 or
 *     above table_max_pages) is answered EBB_S_INVALID and changes
 *     nothing: a table registered before stays.
 *
 * The table pointer points into this device's mapping of guest memory, so
 * it is dropped before that mapping can go: on a new memory table, a
 * device reset, a new feature negotiation, a disconnection or a failure.
 *
 * Threading: loop thread only.
 */
#ifndef EBB_EBBDEV_H
#define EBB_EBBDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "pagestate.h"

#define VIRTIO_ID_EBB		0xEBB	/* 3003 */

/* Feature bits (spec section 3). */
#define EBB_F_PAGE_STATES	0
#define EBB_F_VOLATILE		1

/* Request types and status values (spec section 5). */
#define EBB_REQ_SET_TABLE	1
#define EBB_REQ_CLEAR_TABLE	2
#define EBB_S_OK		0
#define EBB_S_INVALID		1
#define EBB_S_UNSUPPORTED	2

/* The most entries a table may have: 64 GiB of 4 KiB pages, a 16 MiB
 * table.  Bounds one count scan and one full discard walk. */
#define EBB_TABLE_MAX_PAGES	(1u << 24)

struct ebbdev_info {
	bool connected;		/* a frontend is attached */
	bool ready;		/* the driver negotiated features */
	bool failed;		/* device failed on hostile input */
	uint64_t features;	/* negotiated */
	bool table;		/* a table is registered */
	uint64_t first_pfn;	/* its range, valid if table */
	uint64_t npages;
	uint64_t requests;	/* requests answered */
	uint64_t invalid;	/* of which EBB_S_INVALID or _UNSUPPORTED */
	struct pagestate_stats ps;	/* discard counters */
};

struct ebbdev_events {
	/* Pages were discarded: re-measure residency. */
	void (*returned)(void *opaque, uint64_t bytes);
	/* The device failed on hostile input. */
	void (*failed)(void *opaque, const char *why);
};

struct ebbdev;

/* Listen on @sock_path (NULL: no socket, vu_dev_attach() only); @name tags
 * log lines; @ev may be NULL or have NULL members. */
int ebbdev_new(struct loop *loop, const char *sock_path, const char *name,
	       const struct ebbdev_events *ev, void *opaque,
	       struct ebbdev **out);
void ebbdev_free(struct ebbdev *e);
void ebbdev_get_info(const struct ebbdev *e, struct ebbdev_info *out);

/*
 * Discard up to @max_pages pages whose state is in @what (PAGESTATE_*;
 * volatile only if negotiated), per @how (PAGESTATE_HUGE/_SMALL).
 * -ENODEV if no table is registered; otherwise pagestate_discard()'s
 * result.  Tells ev->returned when anything was discarded.
 */
int ebbdev_discard(struct ebbdev *e, unsigned what, unsigned how,
		   uint64_t max_pages, struct pagestate_pass *out);
/* The random evictor's step (pagestate_evict_random) on this guest. */
int ebbdev_evict(struct ebbdev *e, unsigned what, uint64_t max_pages,
		 struct pagestate_pass *out);
/* Pages per state (pagestate_count); -ENODEV without a table. */
int ebbdev_count(const struct ebbdev *e, uint64_t counts[PS_NSTATES + 1]);

struct vu_dev;
struct vu_dev *ebbdev_vu(struct ebbdev *e);

#endif
