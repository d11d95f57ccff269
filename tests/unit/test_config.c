/*
 * The config reader and the settings table: every key sets what its
 * flag sets, every refusal names the file, the line and the key, and a
 * refused value leaves the previous one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "options.h"
#include "fdhold.h"
#include "pagecomp.h"

static int setup(void **state)
{
	static struct ebbd_options o;

	assert_int_equal(options_init(&o, "/k", "/i"), 0);
	*state = &o;
	return 0;
}

static int teardown(void **state)
{
	options_free(*state);
	return 0;
}

/* Load @text as "t.conf"; returns the result, @err filled. */
static int load(struct ebbd_options *o, const char *text, char *err)
{
	err[0] = '\0';
	return config_load_string(text, "t.conf", o, err, 512);
}

static void every_key_sets_its_setting(void **state)
{
	struct ebbd_options *o = *state;
	char err[512];

	assert_int_equal(load(o,
		"; a comment\n"
		"[daemon]\n"
		"socket = /s/ctl.sock\n"
		"run-dir = /r\n"
		"log-dir = /l\n"
		"state-dir = /st\n"
		"fd-hold = holder\n"
		"[guests]\n"
		"kernel = /kern\n"
		"initrd = /init.gz\n"
		"ram-dir = /ram\n"
		"ram-hugepages = yes\n"
		"block-wait = 2.5\n"
		"[memory]\n"
		"budget = 3G\n"
		"discard-below = 256M\n"
		"test-evictor = 1000\n"
		"[policy]\n"
		"mode = off\n"
		"low = 48M\n"
		"high = 96M\n"
		"trim = 16M\n"
		"[tmem]\n"
		"compressor = zstd\n"
		"hugepages = off\n"
		"[metrics]\n"
		"port = 9188\n", err), 0);
	assert_string_equal(o->socket, "/s/ctl.sock");
	assert_string_equal(o->run_dir, "/r");
	assert_string_equal(o->log_dir, "/l");
	assert_string_equal(o->state_dir, "/st");
	assert_int_equal(o->fd_hold, FDHOLD_HOLDER);
	assert_string_equal(o->kernel, "/kern");
	assert_string_equal(o->initrd, "/init.gz");
	assert_string_equal(o->ram_dir, "/ram");
	assert_true(o->ram_hugepages);
	assert_int_equal(o->keep_wait_ms, 2500);
	assert_int_equal(o->budget_bytes, 3ull << 30);
	assert_int_equal(o->discard_below_bytes, 256ull << 20);
	assert_int_equal(o->evict_pages_per_sec, 1000);
	assert_false(o->policy_on);
	assert_int_equal(o->policy_low_bytes, 48ull << 20);
	assert_int_equal(o->policy_high_bytes, 96ull << 20);
	assert_int_equal(o->policy_trim_bytes, 16ull << 20);
	assert_ptr_equal(o->comp, &pagecomp_zstd);
	assert_false(o->tmem_hugepages);
	assert_int_equal(o->metrics_port, 9188);
}

/* The test above must name every row: a new setting without a test (or
 * without a config key) fails here. */
static void the_table_has_only_tested_keys(void **state)
{
	static const char *const tested[] = {
		"daemon/socket", "daemon/run-dir", "daemon/log-dir",
		"daemon/state-dir", "daemon/fd-hold", "guests/kernel", "guests/initrd",
		"guests/ram-dir", "guests/ram-hugepages", "guests/block-wait",
		"memory/budget", "memory/discard-below", "memory/test-evictor",
		"policy/mode", "policy/low", "policy/high", "policy/trim",
		"tmem/compressor", "tmem/hugepages", "metrics/port",
	};
	const unsigned n = sizeof(tested) / sizeof(tested[0]);

	(void)state;
	assert_int_equal(options_count, n);
	for (unsigned i = 0; i < n; i++) {
		char sec[32];
		const char *slash = strchr(tested[i], '/');

		snprintf(sec, sizeof(sec), "%.*s", (int)(slash - tested[i]),
			 tested[i]);
		assert_non_null(options_by_key(sec, slash + 1));
	}
	/* And every row is also a flag. */
	for (unsigned i = 0; i < options_count; i++)
		assert_ptr_equal(options_by_flag(options_table[i].flag),
				 &options_table[i]);
}

static void booleans(void **state)
{
	struct ebbd_options *o = *state;
	static const char *const vals[] = { "true", "on", "1", "YES" };
	static const char *const offs[] = { "false", "off", "0", "No" };
	char text[64], err[512];

	for (unsigned i = 0; i < 4; i++) {
		snprintf(text, sizeof(text), "[guests]\nram-hugepages=%s\n", vals[i]);
		assert_int_equal(load(o, text, err), 0);
		assert_true(o->ram_hugepages);
		snprintf(text, sizeof(text), "[guests]\nram-hugepages=%s\n", offs[i]);
		assert_int_equal(load(o, text, err), 0);
		assert_false(o->ram_hugepages);
	}
}

struct bad {
	const char *text;	/* the file */
	const char *want;	/* the whole message */
};

static void every_error_names_file_line_and_key(void **state)
{
	static const struct bad bad[] = {
		{ "[memory]\nbudget = 2Q\n",
		  "t.conf:2: key 'budget' in [memory]: not a size: '2Q' "
		  "(bytes, or a number with K, M, G or T)" },
		{ "[memory]\nbudget = 0\n",
		  "t.conf:2: key 'budget' in [memory]: the budget cannot be 0" },
		{ "[memory]\n\nbudget = 99999999999T\n",
		  "t.conf:3: key 'budget' in [memory]: size too large: "
		  "'99999999999T'" },
		{ "[memory]\ndiscard-below = lots\n",
		  "t.conf:2: key 'discard-below' in [memory]: not a size: "
		  "'lots' (bytes, or a number with K, M, G or T)" },
		{ "[memory]\ntest-evictor = 1000001\n",
		  "t.conf:2: key 'test-evictor' in [memory]: not pages per "
		  "second: '1000001' (0 to 1000000)" },
		{ "[memory]\ntest-evictor = -1\n",
		  "t.conf:2: key 'test-evictor' in [memory]: not pages per "
		  "second: '-1' (0 to 1000000)" },
		{ "[guests]\nblock-wait = 3601\n",
		  "t.conf:2: key 'block-wait' in [guests]: not a time: '3601' "
		  "(seconds, 0 to 3600)" },
		{ "[guests]\nblock-wait = soon\n",
		  "t.conf:2: key 'block-wait' in [guests]: not a time: 'soon' "
		  "(seconds, 0 to 3600)" },
		{ "[guests]\nram-hugepages = maybe\n",
		  "t.conf:2: key 'ram-hugepages' in [guests]: not a boolean: "
		  "'maybe' (true/false, yes/no, on/off, 1/0)" },
		{ "[guests]\nkernel =\n",
		  "t.conf:2: key 'kernel' in [guests]: empty path" },
		{ "[daemon]\nsocket =\n",
		  "t.conf:2: key 'socket' in [daemon]: empty path" },
		{ "[tmem]\ncompressor = gzip\n",
		  "t.conf:2: key 'compressor' in [tmem]: unknown compressor "
		  "'gzip' (lz4-fast, lz4, liblz4, zstd)" },
		{ "[metrics]\nport = 65536\n",
		  "t.conf:2: key 'port' in [metrics]: not a TCP port: '65536' "
		  "(0 to 65535)" },
		{ "[metrics]\nport = 80x\n",
		  "t.conf:2: key 'port' in [metrics]: not a TCP port: '80x' "
		  "(0 to 65535)" },
		{ "[memory]\nbudgit = 2G\n",
		  "t.conf:2: unknown key 'budgit' in [memory]" },
		{ "[tmem]\nbudget = 2G\n",
		  "t.conf:2: unknown key 'budget' in [tmem]" },
		{ "[nosuch]\nport = 1\n",
		  "t.conf:2: unknown key 'port' in [nosuch]" },
		{ "budget = 2G\n",
		  "t.conf:1: key 'budget' outside a section ([daemon], "
		  "[guests], [memory], [policy], [tmem], [metrics])" },
		{ "[policy]\nmode = maybe\n",
		  "t.conf:2: key 'mode' in [policy]: not on or off: 'maybe'" },
		{ "[policy]\nlow = 0\n",
		  "t.conf:2: key 'low' in [policy]: a watermark cannot be 0" },
		{ "[policy]\nhigh = 1X\n",
		  "t.conf:2: key 'high' in [policy]: not a size: '1X' "
		  "(bytes, or a number with K, M, G or T)" },
		{ "[policy]\ntrim = -1M\n",
		  "t.conf:2: key 'trim' in [policy]: not a size: '-1M' "
		  "(bytes, or a number with K, M, G or T)" },
		{ "[memory\nbudget = 2G\n",
		  "t.conf:1: not 'key = value' or '[section]'" },
		{ "[memory]\nbudget 2G\n",
		  "t.conf:2: not 'key = value' or '[section]'" },
		/* The first error is the one reported, not the last. */
		{ "[memory]\nbudget = x\nbudget = y\n",
		  "t.conf:2: key 'budget' in [memory]: not a size: 'x' "
		  "(bytes, or a number with K, M, G or T)" },
	};
	struct ebbd_options *o = *state;
	char err[512];

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load(o, bad[i].text, err), -EINVAL);
		assert_string_equal(err, bad[i].want);
	}
}

/* A line longer than inih's buffer is refused as such, not parsed as a
 * value cut short plus junk (inih alone would accept the path cut). */
static void long_lines_are_refused(void **state)
{
	struct ebbd_options *o = *state;
	char text[1200], err[512];
	int n;

	n = snprintf(text, sizeof(text), "[daemon]\n\nsocket = /");
	memset(text + n, 'a', 1000);
	snprintf(text + n + 1000, sizeof(text) - n - 1000, "\nrun-dir = /r\n");
	assert_int_equal(load(o, text, err), -EINVAL);
	assert_non_null(strstr(err, "t.conf:3: line longer than "));
}

/* A refused value leaves the one before it (the default here). */
static void refused_value_keeps_the_previous(void **state)
{
	struct ebbd_options *o = *state;
	char err[512];

	assert_int_equal(load(o, "[metrics]\nport = 9100\n", err), 0);
	assert_int_equal(load(o, "[metrics]\nport = x\n", err), -EINVAL);
	assert_int_equal(o->metrics_port, 9100);
	assert_int_equal(load(o, "[tmem]\ncompressor = nope\n", err), -EINVAL);
	assert_ptr_equal(o->comp, &pagecomp_lz4_fast);
}

static void files(void **state)
{
	struct ebbd_options *o = *state;
	char path[] = "/tmp/ebb-config-XXXXXX", err[512], want[600];
	FILE *f;
	int fd;

	assert_int_equal(config_load("/nonexistent/ebbd.conf", o, err,
				     sizeof(err)), -ENOENT);
	assert_string_equal(err, "/nonexistent/ebbd.conf: No such file or "
			    "directory");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fprintf(f, "# comment\n[memory]\nbudget = 1G ; inline comment\n"
		"[metrics]\nport = nine\n");
	fclose(f);
	assert_int_equal(config_load(path, o, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:5: key 'port' in [metrics]: not a "
		 "TCP port: 'nine' (0 to 65535)", path);
	assert_string_equal(err, want);
	assert_int_equal(o->budget_bytes, 1ull << 30);
	unlink(path);
}

/* Flags go through the same parsers: a switch without a value is true,
 * a value flag without one is refused. */
static void flags_share_the_parsers(void **state)
{
	struct ebbd_options *o = *state;
	char why[256];

	assert_int_equal(options_set(o, options_by_flag("ram-hugepages"), NULL,
				     why, sizeof(why)), 0);
	assert_true(o->ram_hugepages);
	assert_int_equal(options_set(o, options_by_flag("budget"), NULL, why,
				     sizeof(why)), -EINVAL);
	assert_string_equal(why, "a value is required");
	assert_int_equal(options_set(o, options_by_flag("tmem-compressor"),
				     "lz4", why, sizeof(why)), 0);
	assert_ptr_equal(o->comp, &pagecomp_lz4);
	assert_null(options_by_flag("compressor"));
	assert_null(options_by_key("tmem", "tmem-compressor"));
}

static void finds_the_installed_guest_first(void **state)
{
	char dir[] = "/tmp/ebb-inst-XXXXXX", p[512], k[512], i[512];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	/* Nothing installed, nothing built: -ENOENT with the build paths. */
	assert_int_equal(options_find_guest(dir, "/nonexistent/linux",
					    "/nonexistent/initrd", k, i,
					    sizeof(k)), -ENOENT);
	assert_string_equal(k, "/nonexistent/linux");
	snprintf(p, sizeof(p), "%s/sbin", dir);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/lib", dir);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/lib/ebb", dir);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/lib/ebb/linux", dir);
	f = fopen(p, "w");
	fclose(f);
	assert_int_equal(chmod(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/lib/ebb/initramfs.cpio.gz", dir);
	f = fopen(p, "w");
	fclose(f);
	snprintf(p, sizeof(p), "%s/sbin", dir);
	assert_int_equal(options_find_guest(p, "/nonexistent/linux",
					    "/nonexistent/initrd", k, i,
					    sizeof(k)), 0);
	snprintf(p, sizeof(p), "%s/sbin/../lib/ebb/linux", dir);
	assert_string_equal(k, p);
	snprintf(p, sizeof(p), "rm -rf %s", dir);
	assert_int_equal(system(p), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(every_key_sets_its_setting, setup, teardown),
		cmocka_unit_test(the_table_has_only_tested_keys),
		cmocka_unit_test_setup_teardown(booleans, setup, teardown),
		cmocka_unit_test_setup_teardown(every_error_names_file_line_and_key, setup, teardown),
		cmocka_unit_test_setup_teardown(refused_value_keeps_the_previous, setup, teardown),
		cmocka_unit_test_setup_teardown(long_lines_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(files, setup, teardown),
		cmocka_unit_test_setup_teardown(flags_share_the_parsers, setup, teardown),
		cmocka_unit_test(finds_the_installed_guest_first),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
