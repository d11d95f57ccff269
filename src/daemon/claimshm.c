/*
 * claimshm: every guest's outstanding claim, kept in a memfd held across
 * ebbd's death, so that a restarted ebbd gives each adopted guest exactly
 * the claim it had (issue 15: "claims are unchanged").  Declared in
 * ebbd.h.
 *
 * Why not the state record: a claim is consumed by growth (pool.h), so
 * the outstanding part changes at every accounting tick while a guest
 * grows into it, too often for a file written with fsync; the record
 * keeps the claim as staked, which is the fallback when no memfd came
 * back.  Here one slot per guest slot is rewritten with two stores
 * whenever the pool may have changed it.
 *
 * Layout (host order, no pointers): magic "EBBCLM01", u32 version, u32
 * entries (MAX_GUESTS), then per slot {u64 pool id, u64 outstanding
 * pages, u64 resident pages as last measured}; pool id 0: none.  The
 * resident pages let adoption put the guest back in the pool as it was
 * without measuring it first (a measurement costs milliseconds a guest,
 * all of it device pause); the next accounting tick measures.  Hostile on load: the identity is checked
 * once, an entry only counts if its pool id is the adopted guest's and
 * its claim fits the guest's size.
 */
#include "ebbd.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define CLAIMSHM_MAGIC	"EBBCLM02"
#define CLAIMSHM_VERSION 2

struct claimshm {
	char magic[8];
	uint32_t version;
	uint32_t entries;
	struct {
		uint64_t pool_id;
		uint64_t pages;
		uint64_t tot_pages;
	} e[MAX_GUESTS];
};

static struct claimshm *map_fd(int fd)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) < 0 || st.st_size != sizeof(struct claimshm))
		return NULL;
	p = mmap(NULL, sizeof(struct claimshm), PROT_READ | PROT_WRITE,
		 MAP_SHARED, fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

void claimshm_open(struct ebbd *d)
{
	struct claimshm *c = NULL;
	int fd, rc;

	if (!d->hold)
		return;
	if (d->held_claims_fd >= 0) {
		c = map_fd(d->held_claims_fd);
		if (c && (memcmp(c->magic, CLAIMSHM_MAGIC, 8) ||
			  c->version != CLAIMSHM_VERSION ||
			  c->entries != MAX_GUESTS)) {
			munmap(c, sizeof(*c));
			c = NULL;
		}
		if (c) {
			d->claims = c;
			d->claims_fd = d->held_claims_fd;
			d->held_claims_fd = -1;
			return;
		}
		log_warn(NULL, "the claims record held is not valid: adopted "
			 "guests get their claims as staked");
		close(d->held_claims_fd);
		d->held_claims_fd = -1;
	}
	fd = memfd_create("ebb-claims", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, sizeof(*c)) < 0 || !(c = map_fd(fd))) {
		log_warn(NULL, "no claims record: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	memcpy(c->magic, CLAIMSHM_MAGIC, 8);
	c->version = CLAIMSHM_VERSION;
	c->entries = MAX_GUESTS;
	d->claims = c;
	d->claims_fd = fd;
	rc = fdhold_put(d->hold, HOLD_CLAIMS, fd);
	if (rc < 0)
		log_warn(NULL, "cannot hold the claims record: %s",
			 strerror(-rc));
}

void claimshm_hold_again(struct ebbd *d)
{
	if (d->hold && d->claims_fd >= 0)
		fdhold_put(d->hold, HOLD_CLAIMS, d->claims_fd);
}

void claimshm_close(struct ebbd *d, bool drop)
{
	if (drop && d->hold && d->claims)
		fdhold_drop(d->hold, HOLD_CLAIMS);
	if (d->claims)
		munmap(d->claims, sizeof(*d->claims));
	if (d->claims_fd >= 0)
		close(d->claims_fd);
	if (d->held_claims_fd >= 0)
		close(d->held_claims_fd);
	d->claims = NULL;
	d->claims_fd = d->held_claims_fd = -1;
}

void claimshm_note(struct ebbd *d, struct slot *s)
{
	struct pool_guest_info gi;
	unsigned i = (unsigned)(s - d->slots);

	if (!d->claims)
		return;
	if (!s->id || pool_guest_info(d->pool, s->id, &gi) < 0) {
		d->claims->e[i].pool_id = 0;
		return;
	}
	/* Pages first: a crash between the stores leaves the old pool id
	 * (another guest's, or 0) on the new value, which never matches. */
	d->claims->e[i].pool_id = 0;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	d->claims->e[i].pages = gi.claim_pages;
	d->claims->e[i].tot_pages = gi.tot_pages;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	d->claims->e[i].pool_id = s->id;
}

int claimshm_get(struct ebbd *d, unsigned slot, uint64_t pool_id,
		 uint64_t max_pages, uint64_t *pages, uint64_t *tot_pages)
{
	if (!d->claims || slot >= MAX_GUESTS ||
	    d->claims->e[slot].pool_id != pool_id ||
	    d->claims->e[slot].pages > max_pages ||
	    d->claims->e[slot].tot_pages > max_pages ||
	    d->claims->e[slot].pages + d->claims->e[slot].tot_pages > max_pages)
		return -ENOENT;
	*pages = d->claims->e[slot].pages;
	*tot_pages = d->claims->e[slot].tot_pages;
	return 0;
}
