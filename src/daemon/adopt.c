/*
 * adopt: what ebbd does at start with the guests an earlier ebbd left
 * behind (their records in <state_dir>/guests/), and the guest records
 * it keeps while it runs.  Declared in ebbd.h; design in docs/restart.md.
 *
 * At start: read every record (adopt_scan), take back the fds the holder
 * kept (adopt_fds: the devices', the page store's, the claims'), then,
 * once the loop, pool and store exist, adopt every guest whose process
 * runs and whose fds came back (adopt_guests -> slot_adopt ->
 * guest_adopt): its devices are served again from their recorded
 * sessions.  A guest that cannot be adopted (no fds held, a record or a
 * session that fails a check, an external VMM's) stays *found*: listed
 * (guest-list "found") and logged with the reason, and everything of it
 * is left alone for the operator: its process, record, run directory,
 * held fds, store client with its swapped pages, swap file and log.  A
 * launch under its name is refused while its process lives or while its
 * record cannot be read, so no new guest takes its sockets or its swap
 * file.
 *
 * A record is hostile input (staterec.h checks it); a process is the same
 * one only if its pid and its start time (field 22 of /proc/PID/stat)
 * both match, so a recycled pid is not taken for the guest.
 */
#include "ebbd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Is the process the record names the one it recorded? */
static bool same_process(const struct staterec_guest *r)
{
	uint64_t ticks;

	if (r->pid <= 0)
		return false;
	if (kill(r->pid, 0) < 0 && errno != EPERM)
		return false;
	return staterec_proc_start(r->pid, &ticks) == 0 &&
	       ticks == r->start_ticks;
}

/* One record file: load it, judge it, remember and log what was found. */
static void scan_one(struct ebbd *d, const char *dir, const char *file)
{
	struct found_guest *f = &d->found[d->nfound];
	struct staterec_guest r;
	char path[768];
	size_t n = strlen(file) - 4;	/* without ".rec" */
	int rc;

	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%.*s", (int)n, file);
	snprintf(f->file, sizeof(f->file), "%s/%s", dir, file);
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	rc = staterec_guest_load(path, &r, f->why);
	if (rc == 0 && (n >= sizeof(f->name) || strcmp(r.name, f->name))) {
		snprintf(f->why, sizeof(f->why),
			 "record names guest '%s', not its file's name", r.name);
		rc = -EBADMSG;
	}
	if (rc < 0) {
		f->bad = true;
		log_warn(f->name, "state record %s refused: %s; left alone for "
			 "the operator", f->file, f->why);
		d->nfound++;
		return;
	}
	f->rec = r;
	f->pid = r.pid;
	f->start_ticks = r.start_ticks;
	f->external = r.flags & SR_F_EXTERNAL;
	f->mem_bytes = r.mem_bytes;
	f->claim_bytes = r.claim_bytes;
	if (f->external) {
		snprintf(f->why, sizeof(f->why),
			 "external guest from an earlier ebbd, not adopted: "
			 "its VMM reconnects to a new ebbd by itself, or not");
	} else if (r.state == SR_STOPPED || r.state == SR_FAILED) {
		snprintf(f->why, sizeof(f->why), "%s before the earlier ebbd "
			 "exited; nothing to adopt",
			 staterec_state_name(r.state));
	} else if (same_process(&r)) {
		f->alive = true;
		snprintf(f->why, sizeof(f->why), "running (pid %d)",
			 (int)r.pid);
	} else {
		snprintf(f->why, sizeof(f->why),
			 "process %d is gone (or its pid was reused), nothing "
			 "to adopt", (int)r.pid);
	}
	/* A running guest is told about once adoption has been tried. */
	if (f->alive)
		log_info(f->name, "found from an earlier ebbd: %s (record %s)",
			 f->why, f->file);
	else
		log_warn(f->name, "found from an earlier ebbd: %s; record %s "
			 "left for the operator", f->why, f->file);
	d->nfound++;
}

int adopt_scan(struct ebbd *d)
{
	char dir[512];
	struct dirent *e;
	DIR *dp;

	if (snprintf(dir, sizeof(dir), "%s/guests", d->state_dir) >=
	    (int)sizeof(dir))
		return -ENAMETOOLONG;
	dp = opendir(dir);
	if (!dp)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(dp))) {
		size_t n = strlen(e->d_name);

		/* Temp files of an interrupted write start with '.': the
		 * record they were replacing is still there. */
		if (e->d_name[0] == '.' || n < 5 ||
		    strcmp(e->d_name + n - 4, ".rec"))
			continue;
		if (d->nfound == MAX_FOUND) {
			log_warn(NULL, "more than %d guest records in %s; the "
				 "rest are not looked at", MAX_FOUND, dir);
			break;
		}
		scan_one(d, dir, e->d_name);
	}
	closedir(dp);
	if (d->nfound)
		log_info(NULL, "%u guest record(s) from an earlier ebbd",
			 d->nfound);
	return 0;
}

/* ---- device fds held across ebbd's death ----------------------------- */

/* Close the kept fds of guest @name ("guest/<name>/..."), and with @drop
 * take them from the holder too.  How many. */
static unsigned close_kept(struct ebbd *d, const char *name, bool drop)
{
	char prefix[GUEST_NAME_MAX + 8];
	size_t n = (size_t)snprintf(prefix, sizeof(prefix), "guest/%s/", name);
	unsigned closed = 0;

	for (unsigned k = 0; k < d->nkept;) {
		if (strncmp(d->kept[k].name, prefix, n)) {
			k++;
			continue;
		}
		if (drop && d->hold)
			fdhold_drop(d->hold, d->kept[k].name);
		close(d->kept[k].fd);
		d->kept[k] = d->kept[--d->nkept];
		closed++;
	}
	return closed;
}

/* The found guest a hold name belongs to ("guest/<name>/..."), or NULL. */
static struct found_guest *owner_of(struct ebbd *d, const char *hold_name)
{
	const char *name = hold_name + 6, *end;

	if (strncmp(hold_name, "guest/", 6) || !(end = strchr(name, '/')))
		return NULL;
	for (unsigned i = 0; i < d->nfound; i++)
		if (strlen(d->found[i].name) == (size_t)(end - name) &&
		    !strncmp(d->found[i].name, name, (size_t)(end - name)))
			return &d->found[i];
	return NULL;
}

/* The holder died under us and a new one runs: it holds nothing, so put
 * everything again, our guests' fds and the found guests' kept ones. */
static void rehold_all(void *opaque)
{
	struct ebbd *d = opaque;
	unsigned n = 0;

	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g) {
			guest_hold_again(d->slots[i].g);
			n++;
		}
	for (unsigned i = 0; i < d->nkept; i++)
		if (fdhold_put(d->hold, d->kept[i].name, d->kept[i].fd) < 0)
			log_warn(NULL, "cannot hold %s again", d->kept[i].name);
	hold_store(d);
	claimshm_hold_again(d);
	for (unsigned i = 0; i < MAX_GUESTS; i++)
		if (d->slots[i].g)
			slot_hold_swap(d, &d->slots[i]);
	log_warn(NULL, "the fd holder had died; started %s and put the fds "
		 "of %u guest(s) and %u kept fd(s) there again",
		 fdhold_describe(d->hold), n, d->nkept);
}

void adopt_fds(struct ebbd *d)
{
	enum fdhold_mode mode = (enum fdhold_mode)d->opts->fd_hold;
	struct fdhold_fd *v = NULL;
	char log_path[600];
	unsigned n = 0, dropped = 0;
	int rc;

	if (mode == FDHOLD_OFF) {
		log_warn(NULL, "--fd-hold off: guests' devices will not "
			 "survive an ebbd crash");
		return;
	}
	/* The holder's socket is in the run directory, its log beside the
	 * guests' consoles. */
	mkdir(d->env.run_dir, 0750);
	mkdir(d->env.log_dir, 0750);
	snprintf(log_path, sizeof(log_path), "%s/holder.log", d->env.log_dir);
	rc = fdhold_open(mode, d->env.run_dir, d->holder_exe, log_path,
			 &d->hold);
	if (rc < 0) {
		log_warn(NULL, "no fd holder (%s, %s): guests' devices will not "
			 "survive an ebbd crash", fdhold_mode_name(mode),
			 rc == -ENOENT ? "ebb-holder not found" : strerror(-rc));
		d->hold = NULL;
		return;
	}
	d->env.hold = d->hold;
	fdhold_on_restart(d->hold, rehold_all, d);
	rc = fdhold_take(d->hold, &v, &n);
	if (rc < 0) {
		log_warn(NULL, "cannot take the fds %s holds: %s",
			 fdhold_describe(d->hold), strerror(-rc));
		return;
	}
	/* Keep what belongs to a guest still there (or not known to be
	 * gone: an unreadable record is the operator's); the rest is of
	 * guests that have died, and is closed everywhere. */
	d->kept = v;
	for (unsigned i = 0; i < n; i++) {
		struct found_guest *f = owner_of(d, v[i].name);

		/* The page store and the claims: open_services adopts
		 * them. */
		if (!strcmp(v[i].name, HOLD_STORE) && d->held_store_fd < 0) {
			d->held_store_fd = v[i].fd;
			continue;
		}
		if (!strcmp(v[i].name, HOLD_CLAIMS) && d->held_claims_fd < 0) {
			d->held_claims_fd = v[i].fd;
			continue;
		}

		if (f && (f->alive || f->bad)) {
			f->fds++;
			d->kept[d->nkept++] = v[i];
			continue;
		}
		fdhold_drop(d->hold, v[i].name);
		close(v[i].fd);
		dropped++;
	}
	log_info(NULL, "fd holder: %s; got back %u fd(s), kept %u for found "
		 "guests, dropped %u of guests that are gone",
		 fdhold_describe(d->hold), n, d->nkept, dropped);
	for (unsigned i = 0; i < d->nfound; i++) {
		struct found_guest *f = &d->found[i];
		size_t len = strlen(f->why);

		if (!f->alive && !f->bad)
			continue;
		snprintf(f->why + len, sizeof(f->why) - len,
			 "; %u device fd(s) recovered from %s, kept open",
			 f->fds, fdhold_describe(d->hold));
		log_info(f->name, "%u device fd(s) recovered from %s and kept "
			 "open (the devices stay bound in the guest)", f->fds,
			 fdhold_describe(d->hold));
	}
}

void adopt_watch(struct ebbd *d)
{
	for (unsigned i = 0; i < d->nfound; i++) {
		struct found_guest *f = &d->found[i];
		struct staterec_guest r = { .pid = f->pid,
					    .start_ticks = f->start_ticks };
		unsigned closed;

		if (!f->alive || !f->fds || same_process(&r))
			continue;
		/* Its RAM file among them: kept, they would keep the dead
		 * guest's memory allocated for as long as this ebbd runs. */
		closed = close_kept(d, f->name, true);
		f->alive = false;
		f->fds = 0;
		/* Its swapped pages too, and its slot is free again. */
		if (f->rec.client_id < MAX_GUESTS &&
		    d->client_reserved[f->rec.client_id] &&
		    !d->slots[f->rec.client_id].g) {
			tmem_client_destroy(d->store, f->rec.client_id);
			d->client_reserved[f->rec.client_id] = false;
		}
		snprintf(f->why, sizeof(f->why), "process %d exited after this "
			 "ebbd started; its %u device fd(s) closed", (int)f->pid,
			 closed);
		log_warn(f->name, "found guest's %s", f->why);
	}
}

void adopt_fds_close(struct ebbd *d, bool quit)
{
	for (unsigned i = 0; i < d->nkept; i++)
		close(d->kept[i].fd);
	free(d->kept);
	d->kept = NULL;
	d->nkept = 0;
	fdhold_close(d->hold, quit);
	d->hold = NULL;
	d->env.hold = NULL;
}

void hold_store(struct ebbd *d)
{
	int rc;

	if (!d->hold || !d->store || tmem_store_shm_fd(d->store) < 0)
		return;
	rc = fdhold_put(d->hold, HOLD_STORE, tmem_store_shm_fd(d->store));
	if (rc < 0)
		log_warn(NULL, "cannot hold the page store in %s: %s; swapped "
			 "pages will not survive an ebbd crash",
			 fdhold_describe(d->hold), strerror(-rc));
}

/*
 * Store clients restored from the page store that no adopted guest took:
 * a found guest's (alive, or with an unreadable record) stay with their
 * pages for the operator, and their slots are not given to new guests;
 * the rest belong to guests that are gone, and go.
 */
static void release_orphan_clients(struct ebbd *d)
{
	uint32_t ids[MAX_GUESTS];
	size_t n = 0;

	if (tmem_store_shm_fd(d->store) < 0 ||
	    tmem_store_client_ids(d->store, ids, MAX_GUESTS, &n) < 0)
		return;
	for (size_t i = 0; i < n && i < MAX_GUESTS; i++) {
		bool kept = false;

		if (ids[i] < MAX_GUESTS && d->slots[ids[i]].g)
			continue;
		for (unsigned k = 0; k < d->nfound; k++) {
			const struct found_guest *f = &d->found[k];

			if (f->bad || (f->alive && f->rec.client_id == ids[i]))
				kept = true;
		}
		if (kept && ids[i] < MAX_GUESTS) {
			d->client_reserved[ids[i]] = true;
			log_info(NULL, "page store client %u kept for a found "
				 "guest", ids[i]);
			continue;
		}
		tmem_client_destroy(d->store, ids[i]);
		log_info(NULL, "page store client %u belonged to a guest that "
			 "is gone: released", ids[i]);
	}
}

/* guest_adoption.take: a copy of the kept fd named @name, or -1. */
static int take_kept(void *opaque, const char *name)
{
	struct ebbd *d = opaque;

	for (unsigned k = 0; k < d->nkept; k++)
		if (!strcmp(d->kept[k].name, name))
			return fcntl(d->kept[k].fd, F_DUPFD_CLOEXEC, 3);
	return -1;
}


void adopt_guests(struct ebbd *d)
{
	unsigned adopted = 0, left = 0;
	uint32_t slot[MAX_FOUND];	/* adopted guests' slots (client ids) */

	for (unsigned i = 0; i < d->nfound;) {
		struct found_guest *f = &d->found[i];
		struct guest_adoption a = { .pid = f->pid, .take = take_kept,
					    .opaque = d };
		uint64_t t0 = loop_now_ms();
		size_t len;
		int rc;

		if (!f->alive || f->bad || f->external) {
			i++;
			continue;
		}
		if (!f->fds) {
			len = strlen(f->why);
			snprintf(f->why + len, sizeof(f->why) - len, "; not "
				 "adopted: none of its device fds were held");
			log_warn(f->name, "found guest not adopted: none of its "
				 "device fds were held (--fd-hold off?)");
			left++;
			i++;
			continue;
		}
		rc = slot_adopt(d, &f->rec, &a);
		if (rc < 0) {
			len = strlen(f->why);
			snprintf(f->why + len, sizeof(f->why) - len, "; not "
				 "adopted: %s", a.why);
			log_warn(f->name, "found guest not adopted: %s; its "
				 "process, fds and record are left alone", a.why);
			left++;
			i++;
			continue;
		}
		log_info(f->name, "adopted from an earlier ebbd (pid %d) in "
			 "%llu ms", (int)f->pid,
			 (unsigned long long)(loop_now_ms() - t0));
		slot[adopted] = f->rec.client_id;
		/* Its devices own copies now: ours go, the holder's stay. */
		close_kept(d, f->name, false);
		d->found[i] = d->found[--d->nfound];
		adopted++;
	}
	/* Every guest adopted (devices watched again): then each serves,
	 * the requests the dead ebbd left first. */
	upgrade_adopted(d);
	for (unsigned i = 0; i < adopted; i++)
		guest_resume(d->slots[slot[i]].g);
	d->restart_adopted = adopted;
	release_orphan_clients(d);
	if (adopted || left)
		log_info(NULL, "adopted %u guest(s) of an earlier ebbd; %u "
			 "found guest(s) left alone", adopted, left);
}

const struct found_guest *adopt_blocking(const struct ebbd *d,
					 const char *name)
{
	for (unsigned i = 0; i < d->nfound; i++)
		if (!strcmp(d->found[i].name, name) &&
		    (d->found[i].alive || d->found[i].bad))
			return &d->found[i];
	return NULL;
}

void adopt_forget(struct ebbd *d, const char *name)
{
	for (unsigned i = 0; i < d->nfound; i++) {
		if (strcmp(d->found[i].name, name))
			continue;
		d->found[i] = d->found[--d->nfound];
		return;
	}
}

bool adopt_any_alive(const struct ebbd *d)
{
	for (unsigned i = 0; i < d->nfound; i++)
		if (d->found[i].alive || d->found[i].bad)
			return true;
	return false;
}

json_t *adopt_json(const struct ebbd *d)
{
	json_t *arr = json_array();

	for (unsigned i = 0; i < d->nfound; i++) {
		const struct found_guest *f = &d->found[i];

		json_array_append_new(arr, json_pack(
			"{s:s, s:s, s:b, s:b, s:i, s:b, s:I, s:I, s:b, s:i, s:s}",
			"name", f->name, "record", f->file,
			"valid", !f->bad, "alive", f->alive, "pid", (int)f->pid,
			"external", f->external,
			"mem", (json_int_t)f->mem_bytes,
			"claim", (json_int_t)f->claim_bytes,
			"adopted", 0, "fds", (int)f->fds, "reason", f->why));
	}
	return arr;
}

/* ---- this ebbd's own records ----------------------------------------- */

static enum staterec_state rec_state(enum guest_state st)
{
	switch (st) {
	case GUEST_STARTING:	return SR_STARTING;
	case GUEST_RUNNING:	return SR_RUNNING;
	case GUEST_STOPPING:	return SR_STOPPING;
	case GUEST_STOPPED:	return SR_STOPPED;
	default:		return SR_FAILED;
	}
}

/* The pool's record: the budget and what the guest records add up to. */
static void save_pool(struct ebbd *d)
{
	struct staterec_pool p = { .next_id = d->next_id + 1 };
	struct pool_info pi;
	int rc;

	pool_info(d->pool, &pi);
	p.budget_bytes = pi.budget_bytes;
	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		if (!d->slots[i].g || !d->slots[i].has_rec)
			continue;
		p.nguests++;
		p.claim_bytes += d->slots[i].rec.claim_bytes;
	}
	rc = staterec_pool_save(d->state_dir, &p);
	if (rc < 0)
		log_warn(NULL, "cannot write the pool record in %s: %s",
			 d->state_dir, strerror(-rc));
}

void slot_record_init(struct ebbd *d, struct slot *s,
		      const struct guest_run *r)
{
	struct staterec_guest *rec = &s->rec;
	struct guest_info gi;
	char *real;

	memset(rec, 0, sizeof(*rec));
	guest_get_info(s->g, &gi);
	snprintf(rec->name, sizeof(rec->name), "%s", r->name);
	rec->flags = (r->external ? SR_F_EXTERNAL : 0) |
		     (r->reporting ? SR_F_REPORTING : 0) |
		     (r->prealloc ? SR_F_PREALLOC : 0) |
		     (r->claim ? SR_F_CLAIM : 0) |
		     (r->page_states ? SR_F_PAGE_STATES : 0) |
		     (r->disk_ro ? SR_F_DISK_RO : 0) |
		     (gi.ram_hugepages ? SR_F_RAM_HUGEPAGES : 0);
	rec->mem_bytes = r->mem;
	rec->min_bytes = r->min;
	rec->claim_bytes = r->claim ? guest_run_claim_bytes(r) : 0;
	rec->swap_bytes = r->swap;
	rec->swap_quota_bytes = r->swap_quota;
	rec->pool_id = s->id;
	rec->client_id = client_of(s);
	rec->pid = r->external ? 0 : (int32_t)gi.pid;
	/* The start time is the fork's, so it is known before the exec. */
	if (rec->pid > 0 && staterec_proc_start(rec->pid, &rec->start_ticks) < 0)
		log_warn(r->name, "cannot read the start time of pid %d",
			 (int)rec->pid);
	if (r->cmdline) {
		snprintf(rec->cmdline, sizeof(rec->cmdline), "%s", r->cmdline);
		if (strlen(r->cmdline) >= sizeof(rec->cmdline))
			log_warn(r->name, "kernel parameters cut to %zu bytes "
				 "in the state record", sizeof(rec->cmdline) - 1);
		/* The record holds printable bytes only (a tab separates
		 * words as well as a space does). */
		for (char *c = rec->cmdline; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
				*c = ' ';
	}
	if (r->disk && (real = realpath(r->disk, NULL))) {
		if (strlen(real) < sizeof(rec->disk))
			snprintf(rec->disk, sizeof(rec->disk), "%s", real);
		free(real);
	}
	s->has_rec = true;
}

void slot_record_save(struct ebbd *d, struct slot *s)
{
	int rc;

	if (!s->has_rec)
		return;
	s->rec.state = rec_state(guest_get_state(s->g));
	/* The policy's settings as they are now (guest-run's, or the last
	 * guest-policy or balloon request's). */
	s->rec.policy_flags = SR_P_SET | (s->pol_manual ? SR_P_MANUAL : 0);
	s->rec.shares = s->pol_shares;
	s->rec.policy_min_bytes = s->pol_min_bytes;
	s->rec.policy_max_bytes = s->pol_max_bytes;
	rc = staterec_guest_save(d->state_dir, &s->rec);
	if (rc < 0)
		log_warn(s->rec.name, "cannot write its state record in %s: %s",
			 d->state_dir, strerror(-rc));
	save_pool(d);
}

void slot_record_remove(struct ebbd *d, struct slot *s)
{
	int rc;

	if (!s->has_rec)
		return;
	s->has_rec = false;
	rc = staterec_guest_remove(d->state_dir, s->rec.name);
	if (rc < 0)
		log_warn(s->rec.name, "cannot remove its state record: %s",
			 strerror(-rc));
	save_pool(d);
}
