/*
 * ebbd's main: its options, startup (store, loop, pool, control socket,
 * signals, the accounting timer), the loop, and shutdown.  The daemon's
 * design and shared records are in ebbd.h; its command handlers in
 * commands.c, its guest slots in slots.c.
 */
#include "ebbd.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hugeram.h"
#include "log.h"
#include "size.h"

/* ---- main ------------------------------------------------------------- */

static void on_signal(void *opaque, uint32_t events)
{
	struct ebbd *d = opaque;
	struct signalfd_siginfo si;

	if (read(d->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	log_info(NULL, "signal %u: stopping every guest and exiting",
		 si.ssi_signo);
	d->shutting_down = true;
	loop_stop(d->loop);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ebbd [options]\n"
		"  --socket PATH     control socket (default %s)\n"
		"  --run-dir DIR     per-guest sockets (default /run/ebb)\n"
		"  --log-dir DIR     guest console logs (default /var/log/ebb)\n"
		"  --kernel PATH     UML guest kernel (default %s)\n"
		"  --initrd PATH     guest initramfs (default %s)\n"
		"  --ram-dir DIR     where guests keep their RAM files (default /dev/shm)\n"
		"  --ram-hugepages   each guest's RAM on its own huge-page tmpfs\n"
		"                    (<run-dir>/<name>/ram), 2 MiB blocks kept whole\n"
		"  --block-wait SECONDS\n"
		"                    with --ram-hugepages: how long freed 4 KiB pages\n"
		"                    wait for the rest of their 2 MiB block (default 10;\n"
		"                    0 punches them at once, shattering blocks)\n"
		"  --budget SIZE     host memory budget (default: memory cgroup\n"
		"                    limit, else MemTotal minus a reserve)\n"
		"  --state-dir DIR   swap backing files, on disk (default /var/lib/ebb)\n"
		"  --tmem-compressor NAME\n"
		"                    lz4-fast (default: fastest gets, matches of 8+\n"
		"                    bytes), lz4 (denser: 6+), liblz4 or zstd\n"
		"  --discard-below SIZE\n"
		"                    when free pool memory falls below SIZE, discard\n"
		"                    guests' unused pages (then volatile ones)\n"
		"  --policy on|off   the host memory policy (default on): reclaim in\n"
		"                    order of cost below the low watermark, give\n"
		"                    memory back to guests under pressure\n"
		"  --policy-low SIZE, --policy-high SIZE\n"
		"                    its watermarks of free memory (default: 1/16 of\n"
		"                    the budget, 32M to 1G, and twice that)\n"
		"  --policy-trim SIZE\n"
		"                    above the high watermark, balloon SIZE per second\n"
		"                    off idle guests holding much more than they use\n"
		"                    (default 0: off)\n"
		"  --test-evictor PAGES_PER_SEC\n"
		"                    test mode: discard random discardable pages of\n"
		"                    every guest at this rate\n",
		CONTROL_DEFAULT_PATH, EBB_DEFAULT_KERNEL, EBB_DEFAULT_INITRD);
}

/* What the command line sets besides d->env and d->state_dir. */
struct ebbd_opts {
	const char *sock;			/* control socket path */
	const struct pagecomp_ops *comp;	/* the store's compressor */
	uint64_t budget;			/* bytes; 0: from the host */
};

/* Parse the command line into @d and @o.  Returns -1 to go on, else the
 * exit status (--help, or a bad option). */
static int parse_args(int argc, char **argv, struct ebbd *d,
		      struct ebbd_opts *o)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "log-dir", required_argument, NULL, 'l' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "ram-dir", required_argument, NULL, 'm' },
		{ "budget", required_argument, NULL, 'b' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "tmem-compressor", required_argument, NULL, 'C' },
		{ "discard-below", required_argument, NULL, 'D' },
		{ "test-evictor", required_argument, NULL, 'E' },
		{ "policy", required_argument, NULL, 'P' },
		{ "policy-low", required_argument, NULL, 'L' },
		{ "policy-high", required_argument, NULL, 'G' },
		{ "policy-trim", required_argument, NULL, 'T' },
		{ "ram-hugepages", no_argument, NULL, 'H' },
		{ "block-wait", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': o->sock = optarg; break;
		case 'r': d->env.run_dir = optarg; break;
		case 'l': d->env.log_dir = optarg; break;
		case 'k': d->env.kernel = optarg; break;
		case 'i': d->env.initrd = optarg; break;
		case 'm': d->env.ram_dir = optarg; break;
		case 'S': d->state_dir = optarg; break;
		case 'H': d->env.ram_hugepages = true; break;
		case 'W': {
			char *end;
			double sec = strtod(optarg, &end);

			if (*end || end == optarg || !(sec >= 0 && sec <= 3600)) {
				fprintf(stderr, "ebbd: bad --block-wait '%s' "
					"(seconds, 0 to 3600)\n", optarg);
				return 2;
			}
			/* 0: punch every freed page at once (the 4 KiB
			 * baseline on huge pages, for comparisons). */
			d->env.keep_wait_ms = (uint64_t)(sec * 1000);
			if (sec > 0 && !d->env.keep_wait_ms)
				d->env.keep_wait_ms = 1;
			break;
		}
		case 'C':
			if (pagecomp_find(optarg, &o->comp) < 0) {
				fprintf(stderr, "ebbd: unknown --tmem-compressor '%s' "
					"(lz4-fast, lz4, liblz4, zstd)\n", optarg);
				return 2;
			}
			break;
		case 'b':
			if (size_parse(optarg, &o->budget) < 0 || !o->budget) {
				fprintf(stderr, "ebbd: bad --budget '%s'\n", optarg);
				return 2;
			}
			break;
		case 'D':
			if (size_parse(optarg, &d->discard_below_bytes) < 0) {
				fprintf(stderr, "ebbd: bad --discard-below '%s'\n", optarg);
				return 2;
			}
			break;
		case 'P':
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "ebbd: --policy takes on or off\n");
				return 2;
			}
			d->policy_on = strcmp(optarg, "on") == 0;
			break;
		case 'L':
		case 'G': {
			uint64_t *v = c == 'L' ? &d->pol_cfg.low_bytes :
						 &d->pol_cfg.high_bytes;

			if (size_parse(optarg, v) < 0 || !*v) {
				fprintf(stderr, "ebbd: bad --policy-%s '%s'\n",
					c == 'L' ? "low" : "high", optarg);
				return 2;
			}
			if (c == 'L')
				d->pol_low_set = true;
			else
				d->pol_high_set = true;
			break;
		}
		case 'T':
			if (size_parse(optarg, &d->pol_cfg.idle_trim_bytes) < 0) {
				fprintf(stderr, "ebbd: bad --policy-trim '%s'\n", optarg);
				return 2;
			}
			break;
		case 'E': {
			char *end;

			errno = 0;
			d->evict_pages_per_sec = strtoull(optarg, &end, 10);
			/* At most a million pages a second per guest. */
			if (errno || *end || end == optarg ||
			    d->evict_pages_per_sec > 1000000) {
				fprintf(stderr, "ebbd: bad --test-evictor '%s' "
					"(pages per second, at most 1000000)\n", optarg);
				return 2;
			}
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	return -1;
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
	n = hugeram_clean_stale(d->env.run_dir);
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
static int check_host(struct ebbd *d, struct ebbd_opts *o)
{
	int rc;

	if (access(d->env.kernel, X_OK) < 0 || access(d->env.initrd, R_OK) < 0) {
		fprintf(stderr, "ebbd: kernel %s or initrd %s missing: %s\n",
			d->env.kernel, d->env.initrd, strerror(errno));
		return -1;
	}
	if (!o->budget) {
		rc = pool_default_budget_bytes(NULL, &o->budget, NULL);
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
	sigprocmask(SIG_BLOCK, &mask, NULL);
	d->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	return d->sigfd < 0 ? -errno : 0;
}

/* The store, the loop, the pool, the control socket, the signal watch and
 * the accounting timer.  Reports what failed; 0 or -errno. */
static int open_services(struct ebbd *d, const struct ebbd_opts *o)
{
	struct tmem_store_config tc = {
		.comp = o->comp,
		.charge = store_charge,
		.charge_opaque = d,
	};
	int rc;

	if ((rc = tmem_store_new(&tc, &d->store)) < 0 ||
	    (rc = loop_new(&d->loop)) < 0 ||
	    (rc = pool_create(o->budget, &d->pool)) < 0) {
		fprintf(stderr, "ebbd: %s\n", strerror(-rc));
		return rc;
	}
	d->env.loop = d->loop;
	rc = control_open(d->loop, o->sock, ebbd_commands, d, &d->ctl);
	if (rc < 0) {
		fprintf(stderr, "ebbd: control socket %s: %s\n", o->sock,
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
	return 0;
}

/* Stop every guest and free everything open_services() made (each part
 * may be missing after a failed start). */
static void close_services(struct ebbd *d)
{
	for (unsigned i = 0; i < MAX_GUESTS; i++) {
		if (d->slots[i].g) {
			guest_free(d->slots[i].g);	/* kills it if running */
			d->slots[i].g = NULL;
		}
	}
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

int main(int argc, char **argv)
{
	static struct ebbd d = { .sigfd = -1 };
	struct ebbd_opts o = {
		.sock = CONTROL_DEFAULT_PATH,
		/* Swap-ins wait on a get, and on real guest swap matches of
		 * 8+ bytes expand 19-40% faster for 7% less density on
		 * average (bench/README.md, tmem_bench on real_swap's pages). */
		.comp = &pagecomp_lz4_fast,
	};
	char buf[16];
	int rc;

	d.env.run_dir = "/run/ebb";
	d.env.log_dir = "/var/log/ebb";
	d.env.kernel = EBB_DEFAULT_KERNEL;
	d.env.initrd = EBB_DEFAULT_INITRD;
	d.env.ram_dir = "/dev/shm";
	d.state_dir = "/var/lib/ebb";
	d.env.keep_wait_ms = 10000;
	d.policy_on = true;
	rc = parse_args(argc, argv, &d, &o);
	if (rc >= 0)
		return rc;
	if (check_host(&d, &o) < 0)
		return 1;
	rc = open_signals(&d);
	if (rc < 0) {
		fprintf(stderr, "ebbd: signalfd: %s\n", strerror(-rc));
		return 1;
	}
	rc = open_services(&d, &o);
	if (rc == 0) {
		log_info(NULL, "ebbd ready: control %s, budget %s", o.sock,
			 size_format(o.budget, buf, sizeof(buf)));
		rc = loop_run(d.loop);
	}
	close_services(&d);
	return rc < 0 ? 1 : 0;
}
