/*
 * ebbd's main: its command line (settings themselves are options.c's
 * table, the config file config.c's), startup (store, loop, pool, control
 * socket, signals, the accounting timer, the service manager, metrics),
 * the loop, and shutdown.  The daemon's design and shared records are in
 * ebbd.h; its command handlers in commands.c, its guest slots in
 * slots.c.
 */
#include "ebbd.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "hugeram.h"
#include "options.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "size.h"

/* ---- main ------------------------------------------------------------- */

static void on_signal(void *opaque, uint32_t events)
{
	struct ebbd *d = opaque;
	struct signalfd_siginfo si;

	if (read(d->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	if (si.ssi_signo == SIGHUP) {
		char *err = NULL;

		if (upgrade_start(d, &err) < 0) {
			log_warn(NULL, "SIGHUP: no upgrade: %s", err);
			free(err);
		} else {
			log_info(NULL, "SIGHUP: upgrading");
		}
		return;
	}
	log_info(NULL, "signal %u: stopping every guest and exiting",
		 si.ssi_signo);
	service_stopping(d->svc);
	d->shutting_down = true;
	loop_stop(d->loop);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ebbd [--config FILE] [--check-config] [options]\n"
		"  --config FILE     settings file (default %s; a missing\n"
		"                    default file is not an error)\n"
		"  --check-config    check the file and the flags, print the\n"
		"                    settings and exit (0: valid)\n",
		EBB_DEFAULT_CONFIG);
	for (unsigned i = 0; i < options_count; i++) {
		const struct option_def *def = &options_table[i];
		char left[48];

		snprintf(left, sizeof(left), "--%s%s%s", def->flag,
			 def->arg ? " " : "", def->arg ? def->arg : "");
		if (strlen(left) > 17)
			fprintf(f, "  %s\n%20s%s\n", left, "", def->help);
		else
			fprintf(f, "  %-17s %s\n", left, def->help);
	}
	fprintf(f, "Every option can be set in the file: ebbd.conf(5).\n");
}

/* What the command line asks besides settings. */
struct ebbd_args {
	const char *config;	/* --config, or NULL for the default */
	bool check;		/* --check-config */
};

enum { OPT_CONFIG = 1000, OPT_CHECK, OPT_HELP, OPT_TABLE };

/*
 * The command line, in two passes over what getopt found: --config
 * first (the file is read before any flag is applied, so that flags
 * override it), then every setting in order.  Returns -1 to go on, else
 * the exit status (--help, a bad option, a bad file).
 */
static int parse_args(int argc, char **argv, struct ebbd_options *o,
		      struct ebbd_args *a)
{
	struct option opts[options_count + 4];
	struct { const struct option_def *def; const char *val; } *given;
	unsigned ngiven = 0, i;
	char why[256], err[512];
	int c, rc, status = -1;

	for (i = 0; i < options_count; i++)
		opts[i] = (struct option){ options_table[i].flag,
			options_table[i].has_value ? required_argument :
						     no_argument,
			NULL, OPT_TABLE + (int)i };
	opts[i++] = (struct option){ "config", required_argument, NULL, OPT_CONFIG };
	opts[i++] = (struct option){ "check-config", no_argument, NULL, OPT_CHECK };
	opts[i++] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	opts[i] = (struct option){ NULL, 0, NULL, 0 };
	given = calloc((size_t)argc, sizeof(*given));
	if (!given)
		return 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == OPT_CONFIG)
			a->config = optarg;
		else if (c == OPT_CHECK)
			a->check = true;
		else if (c == OPT_HELP || c == 'h') {
			usage(stdout);
			status = 0;
			goto out;
		} else if (c >= OPT_TABLE && c < OPT_TABLE + (int)options_count) {
			given[ngiven].def = &options_table[c - OPT_TABLE];
			given[ngiven++].val = optarg;
		} else {
			usage(stderr);
			status = 2;
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ebbd: unexpected argument '%s'\n", argv[optind]);
		status = 2;
		goto out;
	}
	rc = config_load(a->config ? a->config : EBB_DEFAULT_CONFIG, o, err,
			 sizeof(err));
	if (rc == -ENOENT && !a->config)
		rc = 0;		/* no file at the default place: flags only */
	if (rc) {
		fprintf(stderr, "ebbd: %s\n", err);
		status = 1;
		goto out;
	}
	for (i = 0; i < ngiven; i++) {
		rc = options_set(o, given[i].def, given[i].val, why, sizeof(why));
		if (rc) {
			fprintf(stderr, "ebbd: --%s: %s\n", given[i].def->flag,
				rc == -EINVAL ? why : strerror(-rc));
			status = 2;
			goto out;
		}
	}
out:
	free(given);
	return status;
}

/*
 * --ram-hugepages: the host gives tmpfs huge pages and lets ebbd mount
 * (one trial mount, so a guest launch does not find out first).  Mounts
 * an ebbd that died left behind are detached here.
 */
static int check_hugepages(struct ebbd *d)
{
	char why[256], trial[512];
	int rc, n;

	rc = hugeram_check_host(why, sizeof(why));
	if (rc < 0 || why[0])
		fprintf(stderr, "ebbd: --ram-hugepages: %s\n", why);
	if (rc < 0)
		return -1;
	/* Mounts of guests an earlier ebbd left running are theirs. */
	n = adopt_any_alive(d) ? 0 : hugeram_clean_stale(d->env.run_dir);
	if (adopt_any_alive(d))
		log_warn(NULL, "stale RAM mounts under %s left alone: guests "
			 "of an earlier ebbd may use them", d->env.run_dir);
	if (n > 0)
		log_info(NULL, "detached %d stale RAM mount(s) under %s", n,
			 d->env.run_dir);
	snprintf(trial, sizeof(trial), "%s/.ram-trial", d->env.run_dir);
	if ((mkdir(d->env.run_dir, 0750) < 0 && errno != EEXIST) ||
	    (rc = hugeram_mount(trial, 64ull << 20)) < 0) {
		fprintf(stderr, "ebbd: --ram-hugepages: cannot mount a tmpfs "
			"under %s: %s (needs root or CAP_SYS_ADMIN)\n",
			d->env.run_dir, strerror(rc < 0 ? -rc : errno));
		return -1;
	}
	hugeram_umount(trial);
	return 0;
}

/* The kernel, initrd, budget and state directory are usable. */
static int check_host(struct ebbd *d, struct ebbd_options *o)
{
	int rc;

	if (access(d->env.kernel, X_OK) < 0 || access(d->env.initrd, R_OK) < 0) {
		fprintf(stderr, "ebbd: kernel %s or initrd %s missing: %s\n",
			d->env.kernel, d->env.initrd, strerror(errno));
		return -1;
	}
	if (!o->budget_bytes) {
		rc = pool_default_budget_bytes(NULL, &o->budget_bytes, NULL);
		if (rc < 0) {
			fprintf(stderr, "ebbd: cannot size the budget: %s\n",
				strerror(-rc));
			return -1;
		}
	}
	if (mkdir(d->state_dir, 0750) < 0 && errno != EEXIST) {
		fprintf(stderr, "ebbd: state directory %s: %s\n", d->state_dir,
			strerror(errno));
		return -1;
	}
	/* Before anything cleans up after an earlier ebbd: what it left
	 * running must be known first (and is left alone). */
	rc = adopt_scan(d);
	if (rc < 0)
		log_warn(NULL, "cannot read guest records in %s/guests: %s",
			 d->state_dir, strerror(-rc));
	/* Before any guest gets a device: the holder is found (or started)
	 * and what it holds for the found guests is taken back. */
	adopt_fds(d);
	return d->env.ram_hugepages ? check_hugepages(d) : 0;
}

/* SIGINT and SIGTERM arrive through a signalfd, read on the loop. */
static int open_signals(struct ebbd *d)
{
	sigset_t mask;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);	/* upgrade */
	sigprocmask(SIG_BLOCK, &mask, NULL);
	d->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	return d->sigfd < 0 ? -errno : 0;
}

/* Whether @fd is a memfd (else: ebbd's huge-page tmpfs file). */
static bool fd_is_memfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strncmp(target, "/memfd:", 7) == 0;
}

/*
 * The page store.  With an fd holder it lives in a memfd (tmem.h), so the
 * guests' swapped pages outlive ebbd: the one the holder gave back is
 * adopted (its clients, pools and pages restored and checked), else a new
 * one is made; either way the holder keeps it.  Without a holder it is
 * the heap store, which dies with ebbd.  A new arena goes on huge pages
 * where the host allows (hugeram_tmpfile): a restarted ebbd then maps it
 * 2 MiB at a time, and adopting 300 000 pages takes ~40 ms instead of
 * ~130 (bench/adopt_bench).
 */
static int open_store(struct ebbd *d, const struct tmem_store_config *tc,
		      bool huge)
{
	struct tmem_shm_report rep = { 0 };
	int rc, fd;

	d->store_backing = "heap";
	if (!d->hold)
		return tmem_store_new(tc, &d->store);
	if (d->held_store_fd >= 0) {
		bool memfd = fd_is_memfd(d->held_store_fd);

		rc = tmem_store_adopt_shm(d->held_store_fd, tc, &d->store, &rep);
		close(d->held_store_fd);
		d->held_store_fd = -1;
		if (rc == 0) {
			log_info(NULL, "page store adopted: %llu client(s), %llu "
				 "persistent page(s); %llu damaged and %llu "
				 "stale record(s) dropped",
				 (unsigned long long)rep.clients,
				 (unsigned long long)rep.pages,
				 (unsigned long long)rep.bad_entries,
				 (unsigned long long)rep.stale_entries);
			d->store_backing = memfd ? "memfd" : "huge tmpfs";
			hold_store(d);
			return 0;
		}
		log_err(NULL, "the page store %s held cannot be adopted (%s): "
			"earlier guests' swapped pages are lost; a new store "
			"replaces it", fdhold_describe(d->hold), strerror(-rc));
	}
	fd = huge ? hugeram_tmpfile(TMEM_SHM_MAX_BYTES_DEFAULT) : -ENOTSUP;
	if (fd >= 0) {
		rc = tmem_store_new_shm_fd(tc, 0, fd, &d->store);
		close(fd);
		if (rc == 0) {
			d->store_backing = "huge tmpfs";
			hold_store(d);
			return 0;
		}
		fd = rc;
	}
	if (huge)
		log_info(NULL, "page store on 4 KiB pages (a memfd): no "
			 "huge-page tmpfs for it (%s); a restart takes longer "
			 "to adopt it", strerror(-fd));
	rc = tmem_store_new_shm(tc, 0, &d->store);
	if (rc < 0)
		return rc;
	d->store_backing = "memfd";
	hold_store(d);
	return 0;
}

/* The store, the loop, the pool, the control socket, the signal watch and
 * the accounting timer.  Reports what failed; 0 or -errno. */
static int open_services(struct ebbd *d, const struct ebbd_options *o)
{
	struct tmem_store_config tc = {
		.comp = o->comp,
		.charge = store_charge,
		.charge_opaque = d,
	};
	int rc;

	if ((rc = open_store(d, &tc, o->tmem_hugepages)) < 0 ||
	    (rc = loop_new(&d->loop)) < 0 ||
	    (rc = pool_create(o->budget_bytes, &d->pool)) < 0) {
		fprintf(stderr, "ebbd: %s\n", strerror(-rc));
		return rc;
	}
	claimshm_open(d);
	d->env.loop = d->loop;
	rc = control_open(d->loop, o->socket, ebbd_commands, d, &d->ctl);
	if (rc < 0) {
		fprintf(stderr, "ebbd: control socket %s: %s\n", o->socket,
			strerror(-rc));
		return rc;
	}
	if ((rc = loop_watch_add(d->loop, d->sigfd, EPOLLIN, on_signal, d,
				 &d->sig_w)) < 0 ||
	    (rc = loop_timer_add(d->loop, ACCOUNT_MS, ACCOUNT_MS, on_account, d,
				 &d->account_timer)) < 0 ||
	    (rc = hinting_start(d)) < 0 ||
	    (rc = policy_start(d)) < 0) {
		fprintf(stderr, "ebbd: cannot watch signals or start accounting, "
			"hinting or the policy: %s\n", strerror(-rc));
		return rc;
	}
	if ((rc = service_open(d->loop, &d->svc)) < 0) {
		fprintf(stderr, "ebbd: watchdog timer: %s\n", strerror(-rc));
		return rc;
	}
	if (o->metrics_port) {
		rc = metrics_open(d->loop, o->metrics_port, ebbd_metrics_collect,
				  d, &d->metrics);
		if (rc < 0) {
			fprintf(stderr, "ebbd: metrics on 127.0.0.1:%u: %s\n",
				o->metrics_port, strerror(-rc));
			return rc;
		}
		log_info(NULL, "metrics on http://127.0.0.1:%u/metrics",
			 o->metrics_port);
	}
	return 0;
}

/* Stop every guest and free everything open_services() made (each part
 * may be missing after a failed start). */
static void close_services(struct ebbd *d)
{
	bool keep;

	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		if (d->slots[i].g) {
			/* A clean exit takes its guests down: no record
			 * may promise a restarted ebbd otherwise. */
			slot_record_remove(d, &d->slots[i]);
			slot_drop_swap(d, &d->slots[i]);
			guest_free(d->slots[i].g);	/* kills it if running */
			d->slots[i].g = NULL;
		}
	}
	/* The page store and claims outlive us only for found guests. */
	keep = adopt_any_alive(d);
	if (d->hold && !keep)
		fdhold_drop(d->hold, HOLD_STORE);
	claimshm_close(d, !keep);
	if (d->held_store_fd >= 0)
		close(d->held_store_fd);
	/* Every guest of ours is gone and its fds dropped: the holder may
	 * exit unless it still holds found guests' fds. */
	adopt_fds_close(d, true);
	metrics_close(d->metrics);
	service_close(d->svc);
	if (d->ctl)
		control_close(d->ctl);
	loop_watch_del(d->sig_w);
	loop_timer_del(d->account_timer);
	hinting_stop(d);
	policy_stop(d);
	if (d->loop)
		loop_free(d->loop);
	if (d->pool)
		pool_destroy(d->pool);
	if (d->store)
		tmem_store_free(d->store);
	if (d->sigfd >= 0)
		close(d->sigfd);
}

/* Where ebbd's own executable is, for finding an installed guest kernel
 * relative to it.  NULL if /proc does not say. */
static const char *exe_dir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	slash = strrchr(buf, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	return buf;
}

/* The settings into the daemon's records (the strings stay @o's). */
static void apply_options(struct ebbd *d, const struct ebbd_options *o)
{
	d->opts = o;
	d->env.run_dir = o->run_dir;
	d->env.log_dir = o->log_dir;
	d->env.kernel = o->kernel;
	d->env.initrd = o->initrd;
	d->env.ram_dir = o->ram_dir;
	d->env.ram_hugepages = o->ram_hugepages;
	d->env.keep_wait_ms = o->keep_wait_ms;
	d->state_dir = o->state_dir;
	d->discard_below_bytes = o->discard_below_bytes;
	d->evict_pages_per_sec = o->evict_pages_per_sec;
	d->policy_on = o->policy_on;
	if (o->policy_low_bytes) {
		d->pol_cfg.low_bytes = o->policy_low_bytes;
		d->pol_low_set = true;
	}
	if (o->policy_high_bytes) {
		d->pol_cfg.high_bytes = o->policy_high_bytes;
		d->pol_high_set = true;
	}
	d->pol_cfg.idle_trim_bytes = o->policy_trim_bytes;
}

/* --check-config: everything a start would refuse before opening
 * anything, then the settings as a file would write them. */
static int check_config(const struct ebbd_options *o, const char *path)
{
	if (access(o->kernel, X_OK) < 0 || access(o->initrd, R_OK) < 0) {
		fprintf(stderr, "ebbd: kernel %s or initrd %s missing: %s\n",
			o->kernel, o->initrd, strerror(errno));
		return 1;
	}
	printf("# ebbd: configuration valid (%s)\n", path);
	options_print(o, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static struct ebbd d = { .sigfd = -1, .held_store_fd = -1,
				 .claims_fd = -1, .held_claims_fd = -1 };
	static struct ebbd_options o;
	char exe[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX];
	static char holder[PATH_MAX];
	struct ebbd_args a = { 0 };
	char buf[16];
	int rc;

	/* A missing kernel is reported by check_host with the paths. */
	options_find_guest(exe_dir(exe, sizeof(exe)), EBB_DEFAULT_KERNEL,
			   EBB_DEFAULT_INITRD, kernel, initrd, sizeof(kernel));
	if (options_init(&o, kernel, initrd) < 0) {
		fprintf(stderr, "ebbd: out of memory\n");
		return 1;
	}
	rc = parse_args(argc, argv, &o, &a);
	if (rc >= 0)
		goto out;
	if (a.check) {
		rc = check_config(&o, a.config ? a.config : EBB_DEFAULT_CONFIG);
		goto out;
	}
	apply_options(&d, &o);
	upgrade_started(&d);
	d.argv = argv;
	if (!realpath("/proc/self/exe", d.exe_path))
		d.exe_path[0] = '\0';
	if (exe_dir(exe, sizeof(exe)) &&
	    strlen(exe) + sizeof("/ebb-holder") <= sizeof(holder))
		snprintf(holder, sizeof(holder), "%s/ebb-holder", exe);
	d.holder_exe = holder;
	rc = 1;
	if (check_host(&d, &o) < 0)
		goto out;
	rc = open_signals(&d);
	if (rc < 0) {
		fprintf(stderr, "ebbd: signalfd: %s\n", strerror(-rc));
		rc = 1;
		goto out;
	}
	rc = open_services(&d, &o);
	if (rc == 0) {
		char status[256];

		adopt_guests(&d);
		upgrade_served(&d);

		log_info(NULL, "ebbd ready: control %s, budget %s", o.socket,
			 size_format(o.budget_bytes, buf, sizeof(buf)));
		/* The control socket listens: connections are accepted from
		 * here on, so this is when a service manager may call us up. */
		ebbd_status_line(&d, status, sizeof(status));
		service_ready(d.svc, status);
		rc = loop_run(d.loop);
	}
	close_services(&d);
	rc = rc < 0 ? 1 : 0;
out:
	options_free(&o);
	return rc;
}
