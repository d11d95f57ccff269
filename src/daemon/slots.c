/*
 * ebbd's guest slots: the table of guests, and what keeps each slot's
 * pool entry, tmem client and preallocation in step with its guest:
 * periodic accounting, the store's charge hook, preallocation and the
 * guest events.  Declared in ebbd.h.
 */
#include "ebbd.h"

#include "service.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "size.h"

char *errf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

struct slot *find_slot(struct ebbd *d, const char *name)
{
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g && strcmp(guest_name(d->slots[i].g), name) == 0)
			return &d->slots[i];
	return NULL;
}

static struct slot *slot_of(struct ebbd *d, struct guest *g)
{
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g == g)
			return &d->slots[i];
	return NULL;
}

const char *fmt_size(uint64_t bytes, char *buf)
{
	return size_format(bytes, buf, 16);
}

/* Measure one guest and reconcile the pool with what was measured. */
static void account_guest(struct ebbd *d, struct slot *s)
{
	struct pool_guest_info pi;
	uint64_t res, pages;
	bool over = false;

	if (!s->id || s->pre_state == PRE_RUNNING ||
	    guest_refresh_resident(s->g, &res) < 0)
		return;
	pages = res / POOL_PAGE_SIZE;
	if (pool_guest_info(d->pool, s->id, &pi) < 0)
		return;
	/* The RAM file can hold a little more than mem= (UML's own image
	 * pages): never report more than the guest's size. */
	if (pages > pi.max_pages)
		pages = pi.max_pages;
	if (pool_set_resident(d->pool, s->id, pages, &over) < 0)
		return;
	claimshm_note(d, s);
	if (over && !s->over_budget) {
		json_t *ev = json_pack("{s:s, s:I, s:I}", "name",
				       guest_name(s->g), "resident",
				       (json_int_t)res, "claim",
				       (json_int_t)(pi.claim_pages * POOL_PAGE_SIZE));

		log_warn(guest_name(s->g), "grew beyond what the pool can back");
		control_event(d->ctl, "GUEST_OVER_BUDGET", ev);
	}
	s->over_budget = over;
}

json_t *prealloc_json(const struct prealloc_status *st)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:f}",
			 "done", (json_int_t)st->done_bytes,
			 "total", (json_int_t)st->len_bytes,
			 "chunks", (json_int_t)st->chunks,
			 "fallback_pages", (json_int_t)st->fallback_pages,
			 "seconds", st->elapsed_ms / 1000.0);
}

/*
 * Ephemeral tmem pages (clean cache) are the first thing the host gives
 * up when it needs memory: drop enough of them to free @pages of the pool,
 * least recently used first, from the guest furthest over its weight.
 * Returns the pages freed.
 */
static uint64_t make_room(struct ebbd *d, uint64_t pages, const char *why)
{
	uint64_t freed = 0;

	if (!pages || tmem_shrink(d->store, pages * POOL_PAGE_SIZE, &freed) < 0 ||
	    !freed)
		return 0;
	log_info(NULL, "dropped %llu KiB of clean cache (tmem ephemeral pages) "
		 "for %s", (unsigned long long)(freed >> 10), why);
	return freed / POOL_PAGE_SIZE;
}

void ebbd_status_line(struct ebbd *d, char *buf, size_t len)
{
	struct pool_info pi = { 0 };
	char a[16], b[16], c[16];

	pool_info(d->pool, &pi);
	snprintf(buf, len, "%u guest%s, %s resident of %s budget, %s free",
		 pi.guests, pi.guests == 1 ? "" : "s",
		 fmt_size(pi.tot_pages * POOL_PAGE_SIZE, a),
		 fmt_size(pi.budget_bytes, b),
		 fmt_size(pi.free_pages * POOL_PAGE_SIZE, c));
}

void on_account(void *opaque)
{
	struct ebbd *d = opaque;
	char status[256];

	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		struct slot *s = &d->slots[i];

		if (!s->g)
			continue;
		if (s->pre_state == PRE_RUNNING) {
			struct prealloc_status st;
			json_t *ev;

			prealloc_status(s->pre, &st);
			ev = prealloc_json(&st);
			json_object_set_new(ev, "name",
					    json_string(guest_name(s->g)));
			control_event(d->ctl, "PREALLOC_PROGRESS", ev);
		}
		account_guest(d, s);
	}
	adopt_watch(d);
	upgrade_reap(d);
	/* A dead fd holder is replaced now, not at the next device setup
	 * (an ebbd crash in between would lose every guest's devices). */
	if (d->hold) {
		int rc = fdhold_check(d->hold);

		if (rc < 0 && !d->hold_warned)
			log_warn(NULL, "the fd holder has died and cannot be "
				 "restarted: %s", strerror(-rc));
		d->hold_warned = rc < 0;
	}
	/* Guests grew past what the pool can back: clean cache goes first. */
	{
		struct pool_info pi;

		if (pool_info(d->pool, &pi) == 0 && pi.over_pages) {
			/* Pages waiting for their 2 MiB block first: they are
			 * guest memory only kept for the sake of huge pages. */
			for (unsigned i = 0; i < MAX_GUESTS; i++)
				if (d->slots[i].g)
					balloon_release_waiting(
						guest_balloon_dev(d->slots[i].g));
			make_room(d, pi.over_pages, "guests over budget");
			policy_kick(d);
		}
	}
	ebbd_status_line(d, status, sizeof(status));
	service_status(d->svc, status);
}

/* ---- tmem accounting -------------------------------------------------- */

/* A guest's tmem client id is its slot's index: unique among live
 * guests (the client is destroyed when the guest stops, before the slot
 * can be reused), and it makes the charge hook, called on every put, a
 * lookup rather than a scan. */
uint32_t client_of(const struct slot *s)
{
	return (uint32_t)(s - s->d->slots);
}

static struct slot *slot_of_client(struct ebbd *d, uint32_t client)
{
	struct slot *s = client < MAX_GUESTS ? &d->slots[client] : NULL;

	return s && (s->g || s->adopting) && s->tmem_client ? s : NULL;
}

static uint64_t pages_up(uint64_t bytes)
{
	return (bytes + POOL_PAGE_SIZE - 1) / POOL_PAGE_SIZE;
}

/*
 * The store's charge hook: every change of a guest's store charge goes
 * through the pool, so tmem pages count against the budget like RAM.  A
 * refusal makes the store evict ephemeral pages and, failing that, refuse
 * the put (-ENOSPC), after which the swap device writes the page to its
 * backing file.  Decreases cannot be refused and are always counted.
 * Runs under the store lock (the pool has its own lock; no store calls).
 */
int store_charge(void *opaque, uint32_t client, int64_t delta)
{
	struct ebbd *d = opaque;
	struct slot *s = slot_of_client(d, client);
	uint64_t after;
	int64_t dp;
	int rc;

	if (!s)
		return delta > 0 ? -ENOENT : 0;
	/* The policy's step 4: no store growth while the host is short (the
	 * swap device writes to its backing file instead). */
	if (delta > 0 && d->store_refusing)
		return -ENOMEM;
	if (delta < 0 && (uint64_t)-delta > s->store_bytes)
		after = 0;	/* cannot happen if the store keeps its word */
	else
		after = s->store_bytes + (uint64_t)delta;
	dp = (int64_t)pages_up(after) - (int64_t)pages_up(s->store_bytes);
	rc = s->id ? pool_charge_store(d->pool, s->id, dp) : 0;
	if (rc < 0 && delta > 0)
		return rc;
	s->store_bytes = after;
	return 0;
}

/* ---- preallocation: the slot's state machine ----------------------------- */

static const char *const pre_names[] = {
	[PRE_NONE] = "none",
	[PRE_WAITING] = "waiting",
	[PRE_RUNNING] = "running",
	[PRE_DONE] = "done",
	[PRE_FAILED] = "failed",
	[PRE_CANCELLED] = "cancelled",
};

/*
 * allowed[from][to]: every move of a slot's preallocation (diagram in
 * ebbd.h).  Any end state, and a wait that never started, go back to none
 * when a new guest takes the slot.
 */
static const bool pre_allowed[PRE_NSTATES][PRE_NSTATES] = {
	[PRE_NONE] = { [PRE_WAITING] = true },
	[PRE_WAITING] = {
		[PRE_RUNNING] = true,	/* RAM file arrived, worker started */
		[PRE_CANCELLED] = true,	/* the worker could not start */
		[PRE_NONE] = true,	/* slot reused (guest stopped first) */
	},
	[PRE_RUNNING] = {
		[PRE_DONE] = true,
		[PRE_FAILED] = true,
		[PRE_CANCELLED] = true,	/* the guest stopped meanwhile */
	},
	[PRE_DONE] = { [PRE_NONE] = true },
	[PRE_FAILED] = { [PRE_NONE] = true },
	[PRE_CANCELLED] = { [PRE_NONE] = true },
};

const char *slot_prealloc_state_name(enum slot_prealloc st)
{
	return (unsigned)st < PRE_NSTATES ? pre_names[st] : "?";
}

void slot_prealloc_set_state(struct slot *s, enum slot_prealloc to,
			     const char *why)
{
	enum slot_prealloc from = s->pre_state;

	if (from == to)
		return;
	assert(pre_allowed[from][to]);
	s->pre_state = to;
	log_info(s->g ? guest_name(s->g) : NULL, "prealloc %s -> %s (%s)",
		 pre_names[from], pre_names[to], why);
}

static void prealloc_done(void *opaque, int result)
{
	struct slot *s = opaque;
	struct ebbd *d = s->d;
	const char *name = guest_name(s->g);
	json_t *ev;

	prealloc_status(s->pre, &s->pre_last);
	prealloc_free(s->pre);
	s->pre = NULL;
	slot_prealloc_set_state(s, result == 0 ? PRE_DONE : PRE_FAILED,
				result == 0 ? "memory populated" :
				"worker failed");
	ev = prealloc_json(&s->pre_last);
	json_object_set_new(ev, "name", json_string(name));
	if (result == 0) {
		log_info(name, "preallocated %llu MiB in %.2f s (%llu chunks, "
			 "%llu pages by 4 KiB)",
			 (unsigned long long)(s->pre_last.done_bytes >> 20),
			 s->pre_last.elapsed_ms / 1000.0,
			 (unsigned long long)s->pre_last.chunks,
			 (unsigned long long)s->pre_last.fallback_pages);
		control_event(d->ctl, "PREALLOC_DONE", ev);
		guest_release_boot(s->g, s->hold_token, 0);
		account_guest(d, s);
		return;
	}
	/* A late failure: the guest cannot have the memory it was promised
	 * to start with.  It is killed; its pages go back with its process. */
	{
		struct pool_info pi;
		char a[16], b[16], c[16];
		char *why;

		pool_info(d->pool, &pi);
		why = errf("prealloc failed after %s of %s: %s (pool free %s)",
			   fmt_size(s->pre_last.done_bytes, a),
			   fmt_size(s->pre_last.len_bytes, b),
			   result == -ENOMEM ? "the host pool cannot back it" :
			   strerror(-result),
			   fmt_size(pi.unclaimed_pages * POOL_PAGE_SIZE, c));
		log_warn(name, "%s; killing the guest", why ? why : "prealloc failed");
		json_object_set_new(ev, "reason", json_string(why ? why : "?"));
		free(why);
	}
	control_event(d->ctl, "PREALLOC_FAILED", ev);
	guest_stop(s->g, 0);
}

static void ev_ram_ready(void *opaque, struct guest *g)
{
	struct ebbd *d = opaque;
	struct slot *s = slot_of(d, g);
	uint64_t off, size, len;
	int fd, rc;

	if (!s || s->pre_state != PRE_WAITING || !s->id)
		return;
	rc = guest_ram_file(g, &fd, &off, &size);
	if (rc < 0)
		goto fail;
	len = s->prealloc_bytes < size ? s->prealloc_bytes : size;
	len -= len % POOL_PAGE_SIZE;
	rc = guest_hold_boot(g, &s->hold_token);
	if (rc < 0)
		goto fail;
	rc = prealloc_start(d->loop, fd, off, len, d->pool, s->id,
			    prealloc_done, s, &s->pre);
	if (rc < 0) {
		guest_release_boot(g, s->hold_token, 0);
		goto fail;
	}
	slot_prealloc_set_state(s, PRE_RUNNING, "RAM file arrived");
	log_info(guest_name(g), "holding boot to preallocate %llu MiB",
		 (unsigned long long)(len >> 20));
	return;
fail:
	slot_prealloc_set_state(s, PRE_CANCELLED, "cannot start");
	log_warn(guest_name(g), "cannot preallocate: %s", strerror(-rc));
	control_event(d->ctl, "PREALLOC_FAILED",
		      json_pack("{s:s, s:s}", "name", guest_name(g), "reason",
				strerror(-rc)));
	guest_stop(g, 0);
}

/* ---- guest events ----------------------------------------------------- */

static void ev_state(void *opaque, struct guest *g, enum guest_state old)
{
	struct ebbd *d = opaque;
	struct slot *s = slot_of(d, g);
	struct guest_info gi;

	guest_get_info(g, &gi);
	if (s)
		slot_record_save(d, s);
	switch (gi.state) {
	case GUEST_RUNNING:
		control_event(d->ctl, "GUEST_READY",
			      json_pack("{s:s, s:i}", "name", gi.name, "pid",
					(int)gi.pid));
		break;
	case GUEST_STOPPED:
	case GUEST_FAILED:
		/* Its memory is gone with its process: so is its account. */
		if (s && s->pre_state == PRE_RUNNING) {
			prealloc_free(s->pre);
			s->pre = NULL;
			slot_prealloc_set_state(s, PRE_CANCELLED, "guest stopped");
		}
		if (s)
			slot_release(d, s);
		control_event(d->ctl, "GUEST_STOPPED",
			      json_pack("{s:s, s:s, s:i}", "name", gi.name,
					"state", guest_state_name(gi.state),
					"status", gi.exit_status));
		break;
	default:
		break;
	}
}

static void ev_reached(void *opaque, struct guest *g, uint64_t actual)
{
	struct ebbd *d = opaque;
	struct guest_info gi;

	guest_get_info(g, &gi);
	control_event(d->ctl, "BALLOON_TARGET_REACHED",
		      json_pack("{s:s, s:I}", "name", gi.name, "actual",
				(json_int_t)(gi.mem_bytes - actual)));
}

static void ev_returned(void *opaque, struct guest *g)
{
	struct ebbd *d = opaque;
	struct slot *s = slot_of(d, g);

	if (s)
		account_guest(d, s);
}

static void ev_failed(void *opaque, struct guest *g, const char *device,
		      const char *why)
{
	struct ebbd *d = opaque;

	control_event(d->ctl, "DEVICE_FAILED",
		      json_pack("{s:s, s:s, s:s}", "name", guest_name(g),
				"device", device, "reason", why));
}

const struct guest_events ebbd_guest_events = {
	.state_changed = ev_state,
	.balloon_reached = ev_reached,
	.memory_returned = ev_returned,
	.device_failed = ev_failed,
	.ram_ready = ev_ram_ready,
};

/* pool_claim, and if the pool is short, once more after dropping clean
 * cache for the difference. */
int claim_with_room(struct ebbd *d, uint64_t guest, uint64_t total_pages,
		    const char *name)
{
	int rc = pool_claim(d->pool, guest, total_pages);
	struct pool_guest_info gi;
	struct pool_info pi;
	char why[64];

	if (rc != -ENOMEM || pool_info(d->pool, &pi) < 0 ||
	    pool_guest_info(d->pool, guest, &gi) < 0)
		return rc;
	snprintf(why, sizeof(why), "a claim of guest '%s'", name);
	if (make_room(d, total_pages - gi.tot_pages - pi.unclaimed_pages, why))
		rc = pool_claim(d->pool, guest, total_pages);
	return rc;
}

int claim_refused(struct ebbd *d, const char *name, uint64_t want,
		  char **err)
{
	struct pool_info pi;
	char a[16], b[16], c[16], e[16], f[16];

	pool_info(d->pool, &pi);
	*err = errf("cannot claim %s for guest '%s': only %s unclaimed "
		    "(budget %s, resident %s, claimed %s)",
		    fmt_size(want, a), name,
		    fmt_size(pi.unclaimed_pages * POOL_PAGE_SIZE, b),
		    fmt_size(pi.budget_bytes, c),
		    fmt_size(pi.tot_pages * POOL_PAGE_SIZE, e),
		    fmt_size(pi.claim_pages * POOL_PAGE_SIZE, f));
	return -ENOMEM;
}

/*
 * The block devices a guest-run asked for: a swap device (tmem persistent
 * pool, backing file in the state directory) and/or a data disk (an image
 * file with a shared host page cache), appended to @cfg.  Registers the
 * guest as a tmem client first.  On error the backends made here are gone;
 * the client stays for slot_release().
 */
static int add_disks(struct ebbd *d, struct slot *s, const struct guest_run *r,
		     struct guest_config *cfg, char **err)
{
	struct tmem_client_params tp = {
		/* A guest may park at most its own RAM size in host memory
		 * unless told otherwise: beyond that its swap goes to disk. */
		.max_persistent_pages = (r->swap_quota ? r->swap_quota : r->mem) /
					TMEM_PAGE_SIZE,
	};
	int rc;

	rc = tmem_client_new(d->store, client_of(s), r->name, &tp);
	if (rc < 0) {
		*err = errf("cannot register '%s' with the page store: %s",
			    r->name, strerror(-rc));
		return rc;
	}
	s->tmem_client = true;
	if (r->swap) {
		struct guest_disk *dk = &cfg->disks[cfg->ndisks];
		char path[512];

		snprintf(path, sizeof(path), "%s/%s.swap", d->state_dir, r->name);
		/* A file of that name is a leftover of a daemon that died: no
		 * running guest of this ebbd owns it (names are unique). */
		unlink(path);
		rc = swapstore_new(d->store, client_of(s), r->swap, path,
				   &dk->back);
		if (rc < 0) {
			*err = errf("cannot create the swap device (backing file %s): %s",
				    path, strerror(-rc));
			goto fail;
		}
		snprintf(dk->role, sizeof(dk->role), "swap");
		/* Swap I/O is page-sized: tell the guest so it never sends a
		 * partial page (which would cost a read-modify-write). */
		dk->params.block_size = TMEM_PAGE_SIZE;
		s->swap = swapstore_from(&dk->back);
		swapstore_fds(&dk->back, &s->swap_map_fd, &s->swap_file_fd);
		s->swap_disk = (int)cfg->ndisks++;
	}
	if (r->disk) {
		struct guest_disk *dk = &cfg->disks[cfg->ndisks];

		rc = cachedisk_new(d->store, client_of(s), r->disk, r->disk_ro,
				   &dk->back);
		if (rc < 0) {
			*err = errf("cannot open disk image %s: %s", r->disk,
				    strerror(-rc));
			goto fail;
		}
		snprintf(dk->role, sizeof(dk->role), "disk");
		dk->params.phys_block_size = TMEM_PAGE_SIZE;
		s->disk = cachedisk_from(&dk->back);
		s->data_disk = (int)cfg->ndisks++;
	}
	return 0;
fail:
	for (unsigned i = 0; i < cfg->ndisks; i++)
		cfg->disks[i].back.ops->destroy(cfg->disks[i].back.be);
	cfg->ndisks = 0;
	return rc;
}

/*
 * What a slot holds for its guest besides the guest: its block devices'
 * backends (gone with the guest, guest.c frees them), its store client and
 * its pool entry.  Each is released once; safe on a slot holding none.
 */
static const char *const swap_kinds[2] = { "map", "file" };

void slot_hold_swap(struct ebbd *d, struct slot *s)
{
	int fd[2] = { s->swap_map_fd, s->swap_file_fd };
	char name[HOLD_NAME_MAX];

	if (!d->hold || !s->g || !s->swap || tmem_store_shm_fd(d->store) < 0)
		return;
	for (unsigned i = 0; i < 2; i++) {
		int rc;

		snprintf(name, sizeof(name), HOLD_SWAP_FMT, guest_name(s->g),
			 swap_kinds[i]);
		rc = fd[i] >= 0 ? fdhold_put(d->hold, name, fd[i]) : -EBADF;
		if (rc < 0)
			log_warn(guest_name(s->g), "cannot hold %s: %s; its "
				 "swap will not survive an ebbd crash", name,
				 strerror(-rc));
	}
}

void slot_drop_swap(struct ebbd *d, struct slot *s)
{
	char name[HOLD_NAME_MAX];

	if (!d->hold || !s->g || s->swap_map_fd < 0)
		return;
	for (unsigned i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), HOLD_SWAP_FMT, guest_name(s->g),
			 swap_kinds[i]);
		fdhold_drop(d->hold, name);
	}
	s->swap_map_fd = s->swap_file_fd = -1;
}

void slot_release(struct ebbd *d, struct slot *s)
{
	policy_slot_release(d, s);
	slot_drop_swap(d, s);
	s->swap = NULL;
	s->disk = NULL;
	s->swap_disk = s->data_disk = -1;
	if (s->tmem_client) {
		tmem_client_destroy(d->store, client_of(s));
		s->tmem_client = false;
	}
	if (s->id) {
		pool_guest_remove(d->pool, s->id);
		s->id = 0;
		claimshm_note(d, s);
	}
}

/* The slot for a new guest @name: a stopped guest of that name gives way,
 * else the first free slot. */
static int slot_take(struct ebbd *d, const char *name, struct slot **out,
		     char **err)
{
	const struct found_guest *f = adopt_blocking(d, name);
	struct slot *s = find_slot(d, name);

	/* An earlier ebbd's guest still owns the name's sockets and swap
	 * file, or its record is not understood: first, before this ebbd's
	 * own stopped guest of that name (if any) gives way. */
	if (f) {
		*err = errf("guest '%s' from an earlier ebbd is in the way: %s "
			    "(record %s)", name, f->why, f->file);
		return -EEXIST;
	}
	if (s) {
		enum guest_state st = guest_get_state(s->g);

		if (st != GUEST_STOPPED && st != GUEST_FAILED) {
			*err = errf("guest '%s' already exists (%s)", name,
				    guest_state_name(st));
			return -EEXIST;
		}
		/* A stopped guest's record gives way to the new launch. */
		slot_record_remove(d, s);
		guest_free(s->g);
		s->g = NULL;
	}
	s = NULL;
	for (unsigned i = 0; i < MAX_GUESTS && !s; i++)
		if (!d->slots[i].g && !d->client_reserved[i])
			s = &d->slots[i];
	if (!s) {
		*err = errf("too many guests (%d)", MAX_GUESTS);
		return -ENOSPC;
	}
	s->d = d;
	*out = s;
	return 0;
}

/* Admission: the guest joins the pool and stakes its claim before anything
 * exists.  claim=false is the naive toolstack the race benchmark compares
 * against: no stake, growth simply has to fit when it happens. */
static int slot_admit(struct ebbd *d, struct slot *s, const struct guest_run *r,
		      char **err)
{
	int rc;

	s->id = ++d->next_id;
	rc = pool_guest_add(d->pool, s->id, r->mem / POOL_PAGE_SIZE);
	if (rc < 0) {
		s->id = 0;
		return rc;
	}
	rc = r->claim ? claim_with_room(d, s->id,
					guest_run_claim_bytes(r) / POOL_PAGE_SIZE,
					r->name) : 0;
	if (rc < 0) {
		slot_release(d, s);
		if (rc == -ENOMEM)
			return claim_refused(d, r->name, guest_run_claim_bytes(r),
					     err);
	}
	return rc;
}

/* The guest's devices and process; on failure the slot is released. */
static int slot_start(struct ebbd *d, struct slot *s, const struct guest_run *r,
		      char **err)
{
	struct guest_config cfg = {
		.mem_bytes = r->mem,
		.cmdline = r->cmdline,
		.external = r->external,
		/* A preallocated guest is promised its memory: free page
		 * reporting would hand the populated pages straight back (and
		 * its claim is already consumed), so it is not offered.  The
		 * balloon still is. */
		.no_reporting = !r->reporting || r->prealloc,
		.page_states = r->page_states,
	};
	char *procs = NULL;
	int rc;

	snprintf(cfg.name, sizeof(cfg.name), "%s", r->name);
	s->swap_disk = s->data_disk = -1;
	s->swap_map_fd = s->swap_file_fd = -1;
	s->swap = NULL;
	s->disk = NULL;
	s->store_bytes = 0;
	s->tmem_client = false;
	if (r->swap || r->disk) {
		rc = add_disks(d, s, r, &cfg, err);
		if (rc < 0) {
			slot_release(d, s);
			return rc;
		}
	}
	policy_slot_init(d, s, r, &procs);
	cfg.cgroup_procs = procs;
	rc = guest_start(&d->env, &cfg, &ebbd_guest_events, d, &s->g);
	free(procs);
	if (rc < 0) {
		/* guest_start destroyed the backends. */
		slot_release(d, s);
		s->g = NULL;
		*err = errf("cannot start guest '%s': %s", r->name, strerror(-rc));
		return rc;
	}
	slot_hold_swap(d, s);
	return 0;
}

int slot_launch(struct ebbd *d, const struct guest_run *r, struct slot **out,
		char **err)
{
	struct slot *s;
	int rc;

	if ((rc = slot_take(d, r->name, &s, err)) ||
	    (rc = slot_admit(d, s, r, err)) ||
	    (rc = slot_start(d, s, r, err)))
		return rc;
	claimshm_note(d, s);
	s->over_budget = false;
	memset(&s->pre_last, 0, sizeof(s->pre_last));
	s->pre = NULL;
	s->prealloc_bytes = 0;
	slot_prealloc_set_state(s, PRE_NONE, "new guest in the slot");
	if (r->prealloc) {
		/* Without a claim there is no --min to stop at. */
		s->prealloc_bytes = r->claim ? guest_run_claim_bytes(r) : r->mem;
		slot_prealloc_set_state(s, PRE_WAITING, "asked for");
	}
	/* A dead earlier guest of this name is replaced by this one. */
	adopt_forget(d, r->name);
	slot_record_init(d, s, r);
	slot_record_save(d, s);
	*out = s;
	return 0;
}

/* ---- adopting an earlier ebbd's guest (issue 15; adopt.c) ---------------- */

/*
 * The swap device of an adopted guest: its pages are in the page store
 * the holder kept (adopted with its clients and pools at start), its map
 * and backing file were held beside its device fds.
 */
static int adopt_swap(struct ebbd *d, struct slot *s,
		      const struct staterec_guest *rec, struct guest_adoption *a,
		      struct guest_disk *dk)
{
	char name[HOLD_NAME_MAX], path[512];
	int map_fd, file_fd, rc;

	if (tmem_store_shm_fd(d->store) < 0) {
		snprintf(a->why, sizeof(a->why), "its swapped pages did not "
			 "survive: the page store is not kept in shared memory");
		return -ENOTSUP;
	}
	snprintf(name, sizeof(name), HOLD_SWAP_FMT, rec->name, "map");
	map_fd = a->take(a->opaque, name);
	snprintf(name, sizeof(name), HOLD_SWAP_FMT, rec->name, "file");
	file_fd = a->take(a->opaque, name);
	snprintf(path, sizeof(path), "%s/%s.swap", d->state_dir, rec->name);
	rc = map_fd < 0 || file_fd < 0 ? -ENOENT :
	     swapstore_adopt(d->store, client_of(s), map_fd, file_fd, path,
			     &dk->back);
	if (map_fd >= 0)
		close(map_fd);
	if (file_fd >= 0)
		close(file_fd);
	if (rc < 0) {
		snprintf(a->why, sizeof(a->why), "its swap device cannot be "
			 "adopted: %s", rc == -ENOENT ? "its map or backing "
			 "file is not held" : rc == -EBADF ? "its pool is not "
			 "in the page store" : strerror(-rc));
		return rc;
	}
	snprintf(dk->role, sizeof(dk->role), "swap");
	dk->params.block_size = TMEM_PAGE_SIZE;
	s->swap = swapstore_from(&dk->back);
	swapstore_fds(&dk->back, &s->swap_map_fd, &s->swap_file_fd);
	return 0;
}

/*
 * The disks of an adopted guest, re-attached: the swap device with its
 * pages (adopt_swap); the data disk opened again (its cache is ephemeral:
 * a restart may drop it, reads go to the image).  The store client was
 * restored with the page store, or is made again.
 */
static int adopt_disks(struct ebbd *d, struct slot *s,
		       const struct staterec_guest *rec, struct guest_adoption *a,
		       struct guest_config *cfg)
{
	struct tmem_client_params tp = {
		.max_persistent_pages = (rec->swap_quota_bytes ?
					 rec->swap_quota_bytes : rec->mem_bytes) /
					TMEM_PAGE_SIZE,
	};
	char *why = a->why;
	size_t whylen = sizeof(a->why);
	struct tmem_stats ts;
	int rc;

	if (tmem_client_stats(d->store, client_of(s), &ts) == 0) {
		/* Restored: its charge was told before the slot existed.
		 * Taken from the store now, so that the puts of the requests
		 * run again during the adoption are charged as usual. */
		s->tmem_client = true;
		s->store_bytes = 0;
		store_charge(d, client_of(s), (int64_t)ts.charged_bytes);
	} else {
		rc = tmem_client_new(d->store, client_of(s), rec->name, &tp);
		if (rc < 0) {
			snprintf(why, whylen, "cannot register with the page "
				 "store: %s", strerror(-rc));
			return rc;
		}
		s->tmem_client = true;
	}
	if (rec->swap_bytes) {
		rc = adopt_swap(d, s, rec, a, &cfg->disks[cfg->ndisks]);
		if (rc < 0)
			return rc;
		s->swap_disk = (int)cfg->ndisks++;
	}
	if (rec->disk[0]) {
		struct guest_disk *dk = &cfg->disks[cfg->ndisks];

		rc = cachedisk_new(d->store, client_of(s), rec->disk,
				   rec->flags & SR_F_DISK_RO, &dk->back);
		if (rc < 0) {
			snprintf(why, whylen, "cannot open disk image %s: %s",
				 rec->disk, strerror(-rc));
			return rc;
		}
		snprintf(dk->role, sizeof(dk->role), "disk");
		dk->params.phys_block_size = TMEM_PAGE_SIZE;
		s->disk = cachedisk_from(&dk->back);
		s->data_disk = (int)cfg->ndisks++;
	}
	return 0;
}

/*
 * The pool entry and claim an adopted guest had: resident pages and
 * outstanding claim as the claims record says (claimshm.c), the next
 * accounting tick measuring as usual; without that record, measured now
 * and the claim as staked at launch (the state record), which the
 * measurement then consumes as before.
 */
static void adopt_claim(struct ebbd *d, struct slot *s,
			const struct staterec_guest *rec)
{
	uint64_t mem_pages = rec->mem_bytes / POOL_PAGE_SIZE, out = 0, tot = 0;
	uint64_t total;
	bool recorded, over;
	struct pool_guest_info gi;
	int rc;

	/* Read before the pool moves: every change records anew. */
	recorded = claimshm_get(d, client_of(s), rec->pool_id, mem_pages,
				&out, &tot) == 0;
	if (recorded) {
		pool_set_resident(d->pool, s->id, tot, &over);
		guest_seed_resident(s->g, tot * POOL_PAGE_SIZE);
	} else
		account_guest(d, s);
	if (pool_guest_info(d->pool, s->id, &gi) < 0)
		return;
	if (recorded)
		total = out ? gi.tot_pages + out : 0;
	else
		total = rec->claim_bytes / POOL_PAGE_SIZE;
	if (total > mem_pages)
		total = mem_pages;
	if (total <= gi.tot_pages) {
		claimshm_note(d, s);
		return;		/* nothing outstanding */
	}
	rc = pool_claim(d->pool, s->id, total);
	if (rc < 0)
		log_warn(rec->name, "its claim (%llu MiB outstanding) cannot be "
			 "staked again: %s; adopted without it",
			 (unsigned long long)((total - gi.tot_pages) *
					      POOL_PAGE_SIZE >> 20),
			 strerror(-rc));
	claimshm_note(d, s);
}

int slot_adopt(struct ebbd *d, const struct staterec_guest *rec,
	       struct guest_adoption *a)
{
	struct guest_run r = {
		.name = rec->name,
		.mem = rec->mem_bytes,
		.min = rec->min_bytes,
		.cmdline = rec->cmdline,
		.reporting = rec->flags & SR_F_REPORTING,
		.prealloc = rec->flags & SR_F_PREALLOC,
		.claim = rec->flags & SR_F_CLAIM,
		.swap = rec->swap_bytes,
		.swap_quota = rec->swap_quota_bytes,
		.disk = rec->disk[0] ? rec->disk : NULL,
		.disk_ro = rec->flags & SR_F_DISK_RO,
		.page_states = rec->flags & SR_F_PAGE_STATES,
	};
	struct guest_config cfg = {
		.mem_bytes = rec->mem_bytes,
		.cmdline = rec->cmdline,
		.no_reporting = !r.reporting || r.prealloc,
		.page_states = r.page_states,
	};
	struct slot *s;
	char *procs = NULL;
	int rc;

	/* Its store pages are keyed by its client id, the slot index. */
	if (rec->client_id >= MAX_GUESTS || d->slots[rec->client_id].g) {
		snprintf(a->why, sizeof(a->why), "its slot %u is not free",
			 rec->client_id);
		return -EBUSY;
	}
	s = &d->slots[rec->client_id];
	memset(s, 0, sizeof(*s));
	s->d = d;
	s->adopting = true;
	s->swap_disk = s->data_disk = -1;
	snprintf(cfg.name, sizeof(cfg.name), "%s", rec->name);
	/* Admission as it was: the same pool id, the claim re-staked as it
	 * was staked; the first measurement consumes it as before. */
	s->id = rec->pool_id;
	if (d->next_id < rec->pool_id)
		d->next_id = rec->pool_id;
	rc = pool_guest_add(d->pool, s->id, rec->mem_bytes / POOL_PAGE_SIZE);
	if (rc < 0) {
		s->id = 0;
		s->adopting = false;
		snprintf(a->why, sizeof(a->why), "cannot join the pool: %s",
			 strerror(-rc));
		return rc;
	}
	s->swap_map_fd = s->swap_file_fd = -1;
	rc = adopt_disks(d, s, rec, a, &cfg);
	if (rc < 0)
		goto fail_disks;
	policy_slot_init(d, s, &r, &procs);
	free(procs);	/* the process is in its cgroup already */
	if (rec->policy_flags & SR_P_SET) {
		/* As last set, not as launched (a version 1 record has only
		 * the launch's). */
		s->pol_min_bytes = rec->policy_min_bytes;
		s->pol_max_bytes = rec->policy_max_bytes;
		s->pol_shares = rec->shares;
		s->pol_manual = rec->policy_flags & SR_P_MANUAL;
	}
	rc = guest_adopt(&d->env, &cfg, a, &ebbd_guest_events, d, &s->g);
	if (rc < 0) {
		s->g = NULL;
		goto fail_disks;
	}
	s->rec = *rec;
	s->has_rec = true;
	s->over_budget = false;
	slot_prealloc_set_state(s, PRE_NONE, "adopted");
	s->adopting = false;
	adopt_claim(d, s, rec);
	/* Its record on disk is this one already: no write (an fsync is
	 * milliseconds of device pause). */
	return 0;
fail_disks:
	/* The backends let go of, not destroyed: the swap device's pages,
	 * map and file are the guest's still (a cache disk holds nothing of
	 * its own). */
	for (unsigned i = 0; i < cfg.ndisks; i++) {
		if ((int)i == s->swap_disk)
			swapstore_release(&cfg.disks[i].back);
		else
			cfg.disks[i].back.ops->destroy(cfg.disks[i].back.be);
	}
	/* Its store client, if restored, keeps its pages for the operator
	 * (and its slot, release_orphan_clients). */
	s->tmem_client = false;
	/* Not policy_slot_release: the cgroup holds the guest's process. */
	s->pol_cgroup = false;
	s->adopting = false;
	slot_release(d, s);
	return rc;
}
