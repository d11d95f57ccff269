/*
 * ebbdev: ebb's paravirtual device over vhost-user: the requestq, the
 * page-state table's registration and discards through it (API, features
 * and the hostile-input rules in ebbdev.h; the protocol in
 * docs/ebb-device.md).
 *
 * Serving one request:
 *   1. The chain's shape: exactly 32 readable bytes (the request, which
 *      may arrive split over several buffers) then exactly one writable
 *      byte (the status).  Anything else fails the device.
 *   2. The request's fields, in the spec's order: type, flags, the
 *      feature it needs, then (SET_TABLE) npages, the table's range and
 *      the pages' range.  The first bad one answers EBB_S_INVALID (or
 *      EBB_S_UNSUPPORTED) and leaves the registration as it was.
 *   3. Attach or detach the table; write the status; push one byte used.
 */
#include "ebbdev.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vhost_user.h"
#include "vsession.h"

#define Q_REQUEST	0
#define REQ_BYTES	32	/* struct ebb_req on the wire */

/* Config space (spec section 4). */
struct ebb_config {
	uint32_t page_size;		/* le32 */
	uint32_t table_max_pages;	/* le32 */
};
_Static_assert(sizeof(struct ebb_config) == 8, "ebb config is 8 bytes");

/* A request as decoded from its 32 little-endian bytes. */
struct ebb_req {
	uint32_t type;		/* offset 0 */
	uint32_t flags;		/* offset 4 */
	uint64_t table_addr;	/* offset 8 */
	uint64_t first_pfn;	/* offset 16 */
	uint64_t npages;	/* offset 24 */
};

struct ebbdev {
	struct vu_dev *vu;
	const struct ebbdev_events *ev;
	void *opaque;
	char name[64];
	struct pagestate *ps;	/* the engine; its table is the driver's */
	struct ebbdev_info info;	/* counters and registration */
	struct vq_elem elem;	/* scratch for vq_pop: large, keep off stack */
};

/*
 * The registration a restarted ebbd must find again (issue 15), kept in
 * the session record (vu_dev_state): the SET_TABLE request that made it,
 * served again in adopted() (so checked again), or none.
 */
#define EBB_STATE_MAGIC 0x45424254u	/* "EBBT" */

struct ebb_durable {
	uint32_t magic;
	uint32_t table;		/* 0 or 1 */
	uint64_t table_addr, first_pfn, npages;
};

_Static_assert(sizeof(struct ebb_durable) <= VS_DEV_BYTES,
	       "ebb device state fits the session record");

static void save_table(struct ebbdev *e, uint64_t table_addr)
{
	struct ebb_durable st = {
		.magic = EBB_STATE_MAGIC,
		.table = e->info.table,
		.table_addr = e->info.table ? table_addr : 0,
		.first_pfn = e->info.first_pfn,
		.npages = e->info.npages,
	};

	memcpy(vu_dev_state(e->vu), &st, sizeof(st));
}

/* Forget the table: the mapping it points into may be about to go. */
static void drop_table(struct ebbdev *e, const char *why)
{
	if (!e->info.table)
		return;
	pagestate_detach(e->ps);
	e->info.table = false;
	e->info.first_pfn = e->info.npages = 0;
	save_table(e, 0);
	log_info(e->name, "page-state table dropped (%s)", why);
}

static int punch(void *opaque, uint64_t pfn, uint64_t count)
{
	struct ebbdev *e = opaque;

	/* The engine checked pfn + count against the table, and the table's
	 * range was checked against guest memory when it was registered. */
	return guestmem_discard(vu_dev_mem(e->vu), pfn * PAGESTATE_PAGE_SIZE,
				count * PAGESTATE_PAGE_SIZE);
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static uint32_t le32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

/* Step 1: the request bytes and the status byte, or -EINVAL. */
static int chain_shape(const struct vq_elem *el, struct ebb_req *req,
		       uint8_t **status, const char **why)
{
	uint8_t raw[REQ_BYTES];
	size_t got = 0;

	for (unsigned i = 0; i < el->nout; i++) {
		const struct vq_buf *b = &el->bufs[i];

		/* An empty buffer adds nothing; its hva may be NULL, which
		 * memcpy must not be given even for 0 bytes (fuzz_ebbdev). */
		if (b->len == 0)
			continue;
		if (b->len > REQ_BYTES - got) {
			*why = "request longer than 32 bytes";
			return -EINVAL;
		}
		memcpy(raw + got, b->hva, b->len);
		got += b->len;
	}
	if (got != REQ_BYTES) {
		*why = "request shorter than 32 bytes";
		return -EINVAL;
	}
	if (el->nbufs - el->nout != 1 || el->bufs[el->nout].len != 1) {
		*why = "request without exactly one writable status byte";
		return -EINVAL;
	}
	*status = el->bufs[el->nout].hva;
	req->type = le32_at(raw);
	req->flags = le32_at(raw + 4);
	req->table_addr = le64_at(raw + 8);
	req->first_pfn = le64_at(raw + 16);
	req->npages = le64_at(raw + 24);
	return 0;
}

/* Step 2 for SET_TABLE: the table and the pages it describes each lie
 * wholly in one region, so one host pointer covers the table and every
 * run punched later lies in one file. */
static uint8_t check_table(struct ebbdev *e, const struct ebb_req *r,
			   uint8_t **table, const char **what)
{
	struct guestmem *gm = vu_dev_mem(e->vu);

	if (r->npages == 0 || r->npages > EBB_TABLE_MAX_PAGES) {
		*what = "npages is 0 or above table_max_pages";
		return EBB_S_INVALID;
	}
	*table = guestmem_translate(gm, r->table_addr, r->npages);
	if (!*table) {
		*what = "table not wholly inside one region of guest memory";
		return EBB_S_INVALID;
	}
	if (r->first_pfn > UINT64_MAX / PAGESTATE_PAGE_SIZE - r->npages ||
	    !guestmem_translate(gm, r->first_pfn * PAGESTATE_PAGE_SIZE,
				r->npages * PAGESTATE_PAGE_SIZE)) {
		*what = "pages not wholly inside one region of guest memory";
		return EBB_S_INVALID;
	}
	return EBB_S_OK;
}

/* Steps 2 and 3: the status a well-formed chain's request gets. */
static uint8_t serve(struct ebbdev *e, const struct ebb_req *r)
{
	const char *what = NULL;
	uint8_t *table = NULL;
	uint8_t st;

	if (r->type != EBB_REQ_SET_TABLE && r->type != EBB_REQ_CLEAR_TABLE) {
		what = "unknown request type";
		st = EBB_S_INVALID;
	} else if (r->flags) {
		what = "flags not 0";
		st = EBB_S_INVALID;
	} else if (!(e->info.features & (1ull << EBB_F_PAGE_STATES))) {
		what = "EBB_F_PAGE_STATES not negotiated";
		st = EBB_S_UNSUPPORTED;
	} else if (r->type == EBB_REQ_CLEAR_TABLE) {
		st = r->table_addr || r->first_pfn || r->npages ? EBB_S_INVALID :
		     EBB_S_OK;
		what = "CLEAR_TABLE with fields not 0";
		if (st == EBB_S_OK)
			drop_table(e, "driver cleared it");
	} else {
		st = check_table(e, r, &table, &what);
		if (st == EBB_S_OK &&
		    pagestate_attach(e->ps, table, r->first_pfn, r->npages) < 0) {
			what = "pfn range overflows";
			st = EBB_S_INVALID;
		}
		if (st == EBB_S_OK) {
			e->info.table = true;
			e->info.first_pfn = r->first_pfn;
			e->info.npages = r->npages;
			save_table(e, r->table_addr);
			log_info(e->name, "page-state table: pfns %#llx +%llu at gpa %#llx",
				 (unsigned long long)r->first_pfn,
				 (unsigned long long)r->npages,
				 (unsigned long long)r->table_addr);
		}
	}
	e->info.requests++;
	if (st != EBB_S_OK) {
		e->info.invalid++;
		log_warn(e->name, "request type %u refused (status %u): %s",
			 r->type, st, what);
	}
	return st;
}

static void queue_kick(void *opaque, struct vu_dev *dev, unsigned q)
{
	struct ebbdev *e = opaque;
	struct vq *vq = vu_dev_vq(dev, q);
	const char *why = NULL;
	bool pushed = false;

	if (!vq)
		return;
	/* Bounded: the ring holds at most num chains. */
	for (unsigned budget = vq->num; budget; budget--) {
		struct ebb_req req;
		uint8_t *status;
		int rc = vq_pop(vq, vu_dev_mem(dev), &e->elem, &why);

		if (rc == 0)
			break;
		if (rc < 0 || chain_shape(&e->elem, &req, &status, &why) < 0)
			goto fail;
		*status = serve(e, &req);
		vq_push(vq, e->elem.head, 1);
		pushed = true;
	}
	if (pushed && vq_notify(vq) < 0)
		log_warn(e->name, "cannot interrupt the request queue");
	return;
fail:
	vu_dev_fail(dev, why ? why : "malformed ring");
}

static void get_config(void *opaque, uint8_t *cfg)
{
	struct ebb_config c = {
		.page_size = htole32(PAGESTATE_PAGE_SIZE),
		.table_max_pages = htole32(EBB_TABLE_MAX_PAGES),
	};

	memcpy(cfg, &c, sizeof(c));
}

/* The config space is the device's: a driver writing it is ignored. */
static int set_config(void *opaque, uint32_t off, const uint8_t *data,
		      uint32_t len)
{
	struct ebbdev *e = opaque;

	log_warn(e->name, "driver wrote config space; ignored");
	return 0;
}

static void features_set(void *opaque, uint64_t features)
{
	struct ebbdev *e = opaque;

	/* A negotiation starts a driver afresh: an old registration is not
	 * this driver's. */
	drop_table(e, "features negotiated again");
	e->info.ready = true;
	e->info.features = features;
	log_info(e->name, "driver ready, features %#llx",
		 (unsigned long long)features);
}

static void disconnected(void *opaque)
{
	struct ebbdev *e = opaque;

	drop_table(e, "frontend gone");
	e->info.ready = false;
	e->info.features = 0;
}

static void failed(void *opaque, const char *why)
{
	struct ebbdev *e = opaque;

	drop_table(e, "device failed");
	e->info.failed = true;
	if (e->ev && e->ev->failed)
		e->ev->failed(e->opaque, why);
}

static void mem_table_set(void *opaque)
{
	struct ebbdev *e = opaque;

	drop_table(e, "new memory table");
	e->info.failed = false;
}

static void reset(void *opaque)
{
	struct ebbdev *e = opaque;

	drop_table(e, "device reset");
}

/* A restarted ebbd adopted the session: register the table again, through
 * the same checks as the driver's request. */
static int adopted(void *opaque)
{
	struct ebbdev *e = opaque;
	struct ebb_durable st;
	struct ebb_req r = { .type = EBB_REQ_SET_TABLE };

	memcpy(&st, vu_dev_state(e->vu), sizeof(st));
	if (st.magic == 0)
		return 0;	/* never written: no driver came */
	if (st.magic != EBB_STATE_MAGIC || st.table > 1)
		return -EBADMSG;
	if (!st.table)
		return 0;
	r.table_addr = st.table_addr;
	r.first_pfn = st.first_pfn;
	r.npages = st.npages;
	return serve(e, &r) == EBB_S_OK ? 0 : -EBADMSG;
}

static const struct vu_dev_ops ebbdev_ops = {
	.type = "ebb",
	.features = (1ull << EBB_F_PAGE_STATES) | (1ull << EBB_F_VOLATILE),
	.nqueues = 1,
	.config_len = sizeof(struct ebb_config),
	.get_config = get_config,
	.set_config = set_config,
	.features_set = features_set,
	.queue_kick = queue_kick,
	.disconnected = disconnected,
	.failed = failed,
	.mem_table_set = mem_table_set,
	.reset = reset,
	.adopted = adopted,
};

int ebbdev_new(struct loop *loop, const char *sock_path, const char *name,
	       const struct ebbdev_events *ev, void *opaque,
	       struct ebbdev **out)
{
	struct ebbdev *e = calloc(1, sizeof(*e));
	int rc;

	if (!e)
		return -ENOMEM;
	e->ev = ev;
	e->opaque = opaque;
	snprintf(e->name, sizeof(e->name), "%s", name);
	/* The evictor's picks differ per device, and per run. */
	rc = pagestate_new(punch, e, loop_now_ms() ^ (uintptr_t)e, &e->ps);
	if (rc < 0)
		goto err_free;
	rc = vu_dev_new(loop, sock_path, name, &ebbdev_ops, e, &e->vu);
	if (rc < 0)
		goto err_ps;
	*out = e;
	return 0;

err_ps:
	pagestate_free(e->ps);
err_free:
	free(e);
	return rc;
}

void ebbdev_free(struct ebbdev *e)
{
	if (!e)
		return;
	vu_dev_free(e->vu);
	pagestate_free(e->ps);
	free(e);
}

void ebbdev_get_info(const struct ebbdev *e, struct ebbdev_info *out)
{
	*out = e->info;
	out->connected = vu_dev_connected(e->vu);
	pagestate_get_stats(e->ps, &out->ps);
}

/* Volatile entries are the driver's to offer only with EBB_F_VOLATILE. */
static unsigned negotiated_what(const struct ebbdev *e, unsigned what)
{
	if (!(e->info.features & (1ull << EBB_F_VOLATILE)))
		what &= ~PAGESTATE_VOLATILE;
	return what;
}

static void told_returned(struct ebbdev *e, const struct pagestate_pass *p)
{
	if (p->discarded_pages && e->ev && e->ev->returned)
		e->ev->returned(e->opaque, p->discarded_pages * PAGESTATE_PAGE_SIZE);
}

int ebbdev_discard(struct ebbdev *e, unsigned what, unsigned how,
		   uint64_t max_pages, struct pagestate_pass *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if (!e->info.table)
		return -ENODEV;
	what = negotiated_what(e, what);
	if (!what) {
		out->complete = true;	/* nothing it may take */
		return 0;
	}
	rc = pagestate_discard(e->ps, what, how, max_pages, out);
	told_returned(e, out);
	return rc;
}

int ebbdev_evict(struct ebbdev *e, unsigned what, uint64_t max_pages,
		 struct pagestate_pass *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if (!e->info.table)
		return -ENODEV;
	what = negotiated_what(e, what);
	if (!what)
		return 0;
	rc = pagestate_evict_random(e->ps, what, max_pages, out);
	told_returned(e, out);
	return rc;
}

int ebbdev_count(const struct ebbdev *e, uint64_t counts[PS_NSTATES + 1])
{
	return pagestate_count(e->ps, counts);
}

struct vu_dev *ebbdev_vu(struct ebbdev *e)
{
	return e->vu;
}
