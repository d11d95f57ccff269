/*
 * options: the table of ebbd's settings and their parsers (API in
 * options.h).  A parser checks the whole value before storing anything,
 * so a refused value leaves the previous one (the default, or the
 * file's when a flag is refused) in place.
 */
#include "options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "control.h"
#include "fdhold.h"
#include "pagecomp.h"
#include "size.h"


static int set_str(char **slot, const char *value, char *why, size_t n)
{
	char *copy;

	if (!value || !*value) {
		snprintf(why, n, "empty path");
		return -EINVAL;
	}
	copy = strdup(value);
	if (!copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* A boolean as config files write it; a switch on the command line
 * arrives as NULL. */
static int parse_bool(const char *v, bool *out, char *why, size_t n)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	if (!v) {
		*out = true;
		return 0;
	}
	for (unsigned i = 0; i < 4; i++) {
		if (!strcasecmp(v, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*out = false;
			return 0;
		}
	}
	snprintf(why, n, "not a boolean: '%s' (true/false, yes/no, on/off, 1/0)",
		 v);
	return -EINVAL;
}

/* A size with an optional K/M/G/T suffix (size.h). */
static int parse_size(const char *v, uint64_t *out, char *why, size_t n)
{
	int rc = size_parse(v, out);

	if (rc == -ERANGE)
		snprintf(why, n, "size too large: '%s'", v);
	else if (rc < 0)
		snprintf(why, n, "not a size: '%s' (bytes, or a number with "
			 "K, M, G or T)", v);
	return rc < 0 ? -EINVAL : 0;
}

/* A decimal integer in [lo, hi], nothing else on the line. */
static int parse_uint(const char *v, uint64_t lo, uint64_t hi, uint64_t *out,
		      const char *what, char *why, size_t n)
{
	unsigned long long x;
	char *end;

	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || end == v || *end || *v == '-' || *v == '+' || x < lo ||
	    x > hi) {
		snprintf(why, n, "not %s: '%s' (%llu to %llu)", what, v,
			 (unsigned long long)lo, (unsigned long long)hi);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

#define STR_SETTER(field)						\
static int set_##field(struct ebbd_options *o, const char *v, char *why, \
		       size_t n)					\
{									\
	return set_str(&o->field, v, why, n);				\
}
STR_SETTER(socket)
STR_SETTER(run_dir)
STR_SETTER(log_dir)
STR_SETTER(state_dir)
STR_SETTER(kernel)
STR_SETTER(initrd)
STR_SETTER(ram_dir)

static int set_fd_hold(struct ebbd_options *o, const char *v, char *why,
		       size_t n)
{
	enum fdhold_mode m;

	if (fdhold_mode_parse(v, &m) < 0) {
		snprintf(why, n, "not auto, holder, systemd or off: '%s'", v);
		return -EINVAL;
	}
	o->fd_hold = (int)m;
	return 0;
}

static int set_ram_hugepages(struct ebbd_options *o, const char *v, char *why,
			     size_t n)
{
	return parse_bool(v, &o->ram_hugepages, why, n);
}

static int set_block_wait(struct ebbd_options *o, const char *v, char *why,
			  size_t n)
{
	char *end;
	double sec = strtod(v, &end);

	if (*end || end == v || !(sec >= 0 && sec <= 3600)) {
		snprintf(why, n, "not a time: '%s' (seconds, 0 to 3600)", v);
		return -EINVAL;
	}
	/* 0 punches every freed page at once (the 4 KiB baseline on huge
	 * pages, for comparisons); anything above stays above 0 ms. */
	o->keep_wait_ms = (uint64_t)(sec * 1000);
	if (sec > 0 && !o->keep_wait_ms)
		o->keep_wait_ms = 1;
	return 0;
}

static int set_budget(struct ebbd_options *o, const char *v, char *why,
		      size_t n)
{
	uint64_t b;
	int rc = parse_size(v, &b, why, n);

	if (rc)
		return rc;
	if (!b) {
		snprintf(why, n, "the budget cannot be 0");
		return -EINVAL;
	}
	o->budget_bytes = b;
	return 0;
}

static int set_discard_below(struct ebbd_options *o, const char *v, char *why,
			     size_t n)
{
	return parse_size(v, &o->discard_below_bytes, why, n);
}

static int set_test_evictor(struct ebbd_options *o, const char *v, char *why,
			    size_t n)
{
	/* At most a million pages a second per guest. */
	return parse_uint(v, 0, 1000000, &o->evict_pages_per_sec,
			  "pages per second", why, n);
}

static int set_policy(struct ebbd_options *o, const char *v, char *why,
		      size_t n)
{
	if (strcmp(v, "on") && strcmp(v, "off")) {
		snprintf(why, n, "not on or off: '%s'", v);
		return -EINVAL;
	}
	o->policy_on = strcmp(v, "on") == 0;
	return 0;
}

static int set_tmem_hugepages(struct ebbd_options *o, const char *v,
			      char *why, size_t n)
{
	if (strcmp(v, "on") && strcmp(v, "off")) {
		snprintf(why, n, "not on or off: '%s'", v);
		return -EINVAL;
	}
	o->tmem_hugepages = strcmp(v, "on") == 0;
	return 0;
}

/* A watermark of 0 would mean "never short": refused, not defaulted. */
static int set_watermark(uint64_t *slot, const char *v, char *why, size_t n)
{
	int rc = parse_size(v, slot, why, n);

	if (rc == 0 && !*slot) {
		snprintf(why, n, "a watermark cannot be 0");
		return -EINVAL;
	}
	return rc;
}

static int set_policy_low(struct ebbd_options *o, const char *v, char *why,
			  size_t n)
{
	return set_watermark(&o->policy_low_bytes, v, why, n);
}

static int set_policy_high(struct ebbd_options *o, const char *v, char *why,
			   size_t n)
{
	return set_watermark(&o->policy_high_bytes, v, why, n);
}

static int set_policy_trim(struct ebbd_options *o, const char *v, char *why,
			   size_t n)
{
	return parse_size(v, &o->policy_trim_bytes, why, n);
}

static int set_compressor(struct ebbd_options *o, const char *v, char *why,
			  size_t n)
{
	if (pagecomp_find(v, &o->comp) < 0) {
		snprintf(why, n, "unknown compressor '%s' (lz4-fast, lz4, "
			 "liblz4, zstd)", v);
		return -EINVAL;
	}
	return 0;
}

static int set_metrics_port(struct ebbd_options *o, const char *v, char *why,
			    size_t n)
{
	uint64_t port;
	int rc = parse_uint(v, 0, 65535, &port, "a TCP port", why, n);

	if (!rc)
		o->metrics_port = (unsigned)port;
	return rc;
}

const struct option_def options_table[] = {
	{ "socket", "daemon", "socket", true, "PATH",
	  "control socket (default " CONTROL_DEFAULT_PATH ")", set_socket },
	{ "run-dir", "daemon", "run-dir", true, "DIR",
	  "per-guest sockets (default /run/ebb)", set_run_dir },
	{ "log-dir", "daemon", "log-dir", true, "DIR",
	  "guest console logs (default /var/log/ebb)", set_log_dir },
	{ "state-dir", "daemon", "state-dir", true, "DIR",
	  "swap backing files, on disk (default /var/lib/ebb)", set_state_dir },
	{ "fd-hold", "daemon", "fd-hold", true, "MODE",
	  "who holds device fds across ebbd's death, so a restarted ebbd "
	  "adopts the guests: auto (default: systemd's fd store under "
	  "systemd, else ebb-holder), holder, systemd, off",
	  set_fd_hold },
	{ "kernel", "guests", "kernel", true, "PATH",
	  "UML guest kernel (default: ebb's, installed or in the build tree)",
	  set_kernel },
	{ "initrd", "guests", "initrd", true, "PATH",
	  "guest initramfs (default: ebb's, installed or in the build tree)",
	  set_initrd },
	{ "ram-dir", "guests", "ram-dir", true, "DIR",
	  "where guests keep their RAM files (default /dev/shm)", set_ram_dir },
	{ "ram-hugepages", "guests", "ram-hugepages", false, NULL,
	  "each guest's RAM on its own huge-page tmpfs, 2 MiB blocks kept whole",
	  set_ram_hugepages },
	{ "block-wait", "guests", "block-wait", true, "SECONDS",
	  "with ram-hugepages: how long freed 4 KiB pages wait for the rest "
	  "of their 2 MiB block (default 10; 0 punches at once)",
	  set_block_wait },
	{ "budget", "memory", "budget", true, "SIZE",
	  "host memory budget (default: memory cgroup limit, else MemTotal "
	  "minus a reserve)", set_budget },
	{ "discard-below", "memory", "discard-below", true, "SIZE",
	  "when free pool memory falls below SIZE, discard every unused guest "
	  "page, and volatile ones while it stays below; 0 off",
	  set_discard_below },
	{ "test-evictor", "memory", "test-evictor", true, "PAGES_PER_SEC",
	  "test mode: discard random discardable pages of every guest at this "
	  "rate; 0 off", set_test_evictor },
	{ "policy", "policy", "mode", true, "on|off",
	  "the host memory policy (default on): reclaim in order of cost below "
	  "the low watermark, give memory back to guests under pressure",
	  set_policy },
	{ "policy-low", "policy", "low", true, "SIZE",
	  "the policy's low watermark of free memory (default 1/16 of the "
	  "budget, 32M to 1G)", set_policy_low },
	{ "policy-high", "policy", "high", true, "SIZE",
	  "the policy's high watermark, where reclaim stops (default twice the "
	  "low one)", set_policy_high },
	{ "policy-trim", "policy", "trim", true, "SIZE",
	  "above the high watermark, balloon SIZE per second off idle guests "
	  "holding much more than they use (default 0: off)", set_policy_trim },
	{ "tmem-compressor", "tmem", "compressor", true, "NAME",
	  "lz4-fast (default), lz4, liblz4 or zstd", set_compressor },
	{ "tmem-hugepages", "tmem", "hugepages", true, "on|off",
	  "keep the page store on 2 MiB host pages (default on, where the "
	  "host allows): a restarted ebbd adopts it about 3x faster",
	  set_tmem_hugepages },
	{ "metrics-port", "metrics", "port", true, "PORT",
	  "serve Prometheus metrics on http://127.0.0.1:PORT/metrics "
	  "(default 0: off)", set_metrics_port },
};
const unsigned options_count = sizeof(options_table) / sizeof(options_table[0]);

/* The first of a colon-separated list of directories systemd passes in
 * @var, into *@slot.  0, or -ENOENT if unset or empty. */
static int env_dir(const char *var, char **slot)
{
	const char *e = getenv(var);
	char *copy;

	if (!e || !*e || *e == ':')
		return -ENOENT;
	copy = strndup(e, strcspn(e, ":"));
	if (!copy)
		return -ENOENT;
	free(*slot);
	*slot = copy;
	return 0;
}

int options_init(struct ebbd_options *o, const char *kernel,
		 const char *initrd)
{
	memset(o, 0, sizeof(*o));
	o->socket = strdup(CONTROL_DEFAULT_PATH);
	o->run_dir = strdup("/run/ebb");
	o->log_dir = strdup("/var/log/ebb");
	o->state_dir = strdup("/var/lib/ebb");
	o->ram_dir = strdup("/dev/shm");
	o->kernel = strdup(kernel);
	o->initrd = strdup(initrd);
	o->keep_wait_ms = 10000;
	/*
	 * Held, so that a restarted ebbd adopts the guests (docs/restart.md).
	 * The price: a guest that was waiting for ebbd's answer when it died
	 * waits until an ebbd runs again, where a closed connection would
	 * have cost it the device for good.
	 */
	o->fd_hold = FDHOLD_AUTO;
	o->policy_on = true;
	o->tmem_hugepages = true;
	/* Under systemd, the unit's RuntimeDirectory=, StateDirectory= and
	 * LogsDirectory= are where the service's files belong (the unit
	 * shipped with ebb names the same paths as the defaults). */
	if (env_dir("RUNTIME_DIRECTORY", &o->run_dir) == 0) {
		free(o->socket);
		o->socket = NULL;
		if (asprintf(&o->socket, "%s/ebbd.sock", o->run_dir) < 0)
			o->socket = NULL;
	}
	env_dir("STATE_DIRECTORY", &o->state_dir);
	env_dir("LOGS_DIRECTORY", &o->log_dir);
	/* Swap-ins wait on a get, and on real guest swap matches of 8+
	 * bytes expand 19-40% faster for 7% less density on average
	 * (bench/README.md, tmem_bench on real_swap's pages). */
	o->comp = &pagecomp_lz4_fast;
	if (!o->socket || !o->run_dir || !o->log_dir || !o->state_dir ||
	    !o->ram_dir || !o->kernel || !o->initrd) {
		options_free(o);
		return -ENOMEM;
	}
	return 0;
}

void options_free(struct ebbd_options *o)
{
	free(o->socket);
	free(o->run_dir);
	free(o->log_dir);
	free(o->state_dir);
	free(o->kernel);
	free(o->initrd);
	free(o->ram_dir);
	memset(o, 0, sizeof(*o));
}

const struct option_def *options_by_flag(const char *flag)
{
	for (unsigned i = 0; i < options_count; i++)
		if (!strcmp(options_table[i].flag, flag))
			return &options_table[i];
	return NULL;
}

const struct option_def *options_by_key(const char *section, const char *key)
{
	for (unsigned i = 0; i < options_count; i++)
		if (!strcmp(options_table[i].section, section) &&
		    !strcmp(options_table[i].key, key))
			return &options_table[i];
	return NULL;
}

int options_set(struct ebbd_options *o, const struct option_def *def,
		const char *value, char *why, size_t why_len)
{
	why[0] = '\0';
	if (def->has_value && !value) {
		snprintf(why, why_len, "a value is required");
		return -EINVAL;
	}
	return def->set(o, value, why, why_len);
}

int options_find_guest(const char *exe_dir, const char *build_kernel,
		       const char *build_initrd, char *kernel, char *initrd,
		       size_t len)
{
	if (!kernel || !initrd || !len)
		return -EINVAL;
	if (exe_dir) {
		snprintf(kernel, len, "%s/../lib/ebb/linux", exe_dir);
		snprintf(initrd, len, "%s/../lib/ebb/initramfs.cpio.gz", exe_dir);
		if (access(kernel, X_OK) == 0 && access(initrd, R_OK) == 0)
			return 0;
	}
	snprintf(kernel, len, "%s", build_kernel);
	snprintf(initrd, len, "%s", build_initrd);
	return access(kernel, X_OK) == 0 && access(initrd, R_OK) == 0 ?
		0 : -ENOENT;
}

void options_print(const struct ebbd_options *o, void *file)
{
	FILE *f = file;
	char b[32];

	fprintf(f, "[daemon]\nsocket = %s\nrun-dir = %s\nlog-dir = %s\n"
		"state-dir = %s\nfd-hold = %s\n", o->socket, o->run_dir,
		o->log_dir, o->state_dir,
		fdhold_mode_name((enum fdhold_mode)o->fd_hold));
	fprintf(f, "[guests]\nkernel = %s\ninitrd = %s\nram-dir = %s\n"
		"ram-hugepages = %s\nblock-wait = %.3f\n", o->kernel, o->initrd,
		o->ram_dir, o->ram_hugepages ? "true" : "false",
		o->keep_wait_ms / 1000.0);
	if (o->budget_bytes)
		fprintf(f, "[memory]\nbudget = %s\n",
			size_format(o->budget_bytes, b, sizeof(b)));
	else
		fprintf(f, "[memory]\n# budget: from the host\n");
	fprintf(f, "discard-below = %llu\ntest-evictor = %llu\n",
		(unsigned long long)o->discard_below_bytes,
		(unsigned long long)o->evict_pages_per_sec);
	fprintf(f, "[policy]\nmode = %s\n", o->policy_on ? "on" : "off");
	if (o->policy_low_bytes)
		fprintf(f, "low = %s\n",
			size_format(o->policy_low_bytes, b, sizeof(b)));
	else
		fprintf(f, "# low: from the budget\n");
	if (o->policy_high_bytes)
		fprintf(f, "high = %s\n",
			size_format(o->policy_high_bytes, b, sizeof(b)));
	else
		fprintf(f, "# high: twice the low watermark\n");
	fprintf(f, "trim = %llu\n", (unsigned long long)o->policy_trim_bytes);
	fprintf(f, "[tmem]\ncompressor = %s\nhugepages = %s\n"
		"[metrics]\nport = %u\n", o->comp->name,
		o->tmem_hugepages ? "on" : "off", o->metrics_port);
}
