/*
 * Tests for staterec: a record round-trips, every kind of damage is refused
 * with a message saying which check failed, and a failed atomic write
 * leaves the old record as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <xxhash.h>

#include "staterec.h"

#define MiB (1ull << 20)

static void sample(struct staterec_guest *g)
{
	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "web-1");
	g->state = SR_RUNNING;
	g->flags = SR_F_REPORTING | SR_F_CLAIM | SR_F_PAGE_STATES;
	g->mem_bytes = 256 * MiB;
	g->min_bytes = 128 * MiB;
	g->claim_bytes = 100 * MiB;
	g->balloon_target_bytes = 192 * MiB;
	g->swap_bytes = 512 * MiB;
	g->swap_quota_bytes = 64 * MiB;
	g->pool_id = 7;
	g->client_id = 3;
	g->pid = 4242;
	g->start_ticks = 123456;
	snprintf(g->cmdline, sizeof(g->cmdline), "loglevel=4 ebb.run=true");
	snprintf(g->disk, sizeof(g->disk), "/srv/base.img");
	g->policy_flags = SR_P_SET | SR_P_MANUAL;
	g->shares = 250;
	g->policy_min_bytes = 96 * MiB;
	g->policy_max_bytes = 224 * MiB;
}

/* A fresh directory for one test; removed by rm_dir. */
static void mk_dir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/ebb-staterec-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void rm_dir(const char *dir)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_round_trip(void **state)
{
	struct staterec_guest g, back;
	struct staterec_pool p = { .budget_bytes = 1ull << 30, .next_id = 8,
				   .nguests = 1, .claim_bytes = 100 * MiB }, pb;
	unsigned char buf[1024];
	char why[STATEREC_WHY_MAX], dir[64], path[128];

	(void)state;
	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	assert_int_equal(staterec_guest_decode(buf, staterec_guest_size(),
					       &back, why), 0);
	assert_memory_equal(&g, &back, sizeof(g));

	/* Through the files, with the pool record beside it. */
	mk_dir(dir, sizeof(dir));
	assert_int_equal(staterec_guest_save(dir, &g), 0);
	snprintf(path, sizeof(path), "%s/guests/web-1.rec", dir);
	memset(&back, 0xa5, sizeof(back));
	assert_int_equal(staterec_guest_load(path, &back, why), 0);
	assert_memory_equal(&g, &back, sizeof(g));
	assert_int_equal(staterec_pool_save(dir, &p), 0);
	assert_int_equal(staterec_pool_load(dir, &pb, why), 0);
	assert_int_equal(pb.budget_bytes, p.budget_bytes);
	assert_int_equal(pb.next_id, 8);
	assert_int_equal(pb.nguests, 1);
	assert_int_equal(pb.claim_bytes, 100 * MiB);

	/* An external guest has no process. */
	g.flags |= SR_F_EXTERNAL;
	g.pid = 0;
	g.start_ticks = 0;
	assert_int_equal(staterec_guest_save(dir, &g), 0);
	assert_int_equal(staterec_guest_load(path, &back, why), 0);
	assert_int_equal(back.pid, 0);

	assert_int_equal(staterec_guest_remove(dir, "web-1"), 0);
	assert_int_equal(staterec_guest_remove(dir, "web-1"), 0);
	assert_int_equal(staterec_guest_load(path, &back, why), -ENOENT);
	assert_non_null(strstr(why, "cannot read"));
	rm_dir(dir);
}

/* Decode @len bytes of @buf and expect a refusal whose message has @want. */
static void expect_refused(const void *buf, size_t len, const char *want)
{
	struct staterec_guest out;
	char why[STATEREC_WHY_MAX] = "";

	assert_int_equal(staterec_guest_decode(buf, len, &out, why), -EBADMSG);
	if (!strstr(why, want))
		fail_msg("message '%s' does not say '%s'", why, want);
}

/* Put the checksum right again after changing a field, so the field's own
 * check is what refuses it. */
static void reseal(unsigned char *buf, size_t len)
{
	uint64_t zero = 0, sum;

	memcpy(buf + 24, &zero, 8);
	sum = XXH3_64bits(buf, len);
	memcpy(buf + 24, &sum, 8);
}

static void test_truncated(void **state)
{
	unsigned char buf[1024];
	struct staterec_guest g;
	size_t n = staterec_guest_size();

	(void)state;
	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	expect_refused(buf, 0, "truncated");
	expect_refused(buf, 31, "truncated");
	/* Every length but the right one, header intact. */
	for (size_t len = 32; len < n + 8; len++)
		if (len != n)
			expect_refused(buf, len, "truncated or extended");
}

static void test_flipped_byte(void **state)
{
	unsigned char buf[1024];
	struct staterec_guest g, out;
	size_t n = staterec_guest_size();
	char why[STATEREC_WHY_MAX];

	(void)state;
	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	/* Every bit of every byte: each is refused, none crashes. */
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[i] ^= (unsigned char)(1u << bit);
			assert_int_equal(staterec_guest_decode(buf, n, &out, why),
					 -EBADMSG);
			buf[i] ^= (unsigned char)(1u << bit);
		}
	}
	buf[200] ^= 1;		/* in the payload: only the checksum sees it */
	expect_refused(buf, n, "checksum mismatch");
	buf[200] ^= 1;
	buf[0] = 'X';
	expect_refused(buf, n, "bad magic");
}

static void test_bad_version_and_kind(void **state)
{
	unsigned char buf[1024];
	struct staterec_guest g;
	struct staterec_pool p;
	size_t n = staterec_guest_size();
	uint32_t v = STATEREC_VERSION + 1;
	char why[STATEREC_WHY_MAX];

	(void)state;
	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	memcpy(buf + 8, &v, 4);
	reseal(buf, n);
	expect_refused(buf, n, "version 3, this ebbd reads 1 to 2");
	v = 0;
	memcpy(buf + 8, &v, 4);
	reseal(buf, n);
	expect_refused(buf, n, "version 0, this ebbd reads 1 to 2");
	/* Version 1 with version 2's length: the length is version 1's. */
	v = 1;
	memcpy(buf + 8, &v, 4);
	reseal(buf, n);
	expect_refused(buf, n, "truncated or extended");
	v = STATEREC_VERSION;
	memcpy(buf + 8, &v, 4);
	reseal(buf, n);
	/* A guest record is not a pool record. */
	assert_int_equal(staterec_pool_decode(buf, n, &p, why), -EBADMSG);
	assert_non_null(strstr(why, "kind 1, expected 2"));
}

/* Change the guest payload field at @off to the @size bytes at @val,
 * reseal, and expect @want in the refusal. */
static void field_refused(size_t off, const void *val, size_t size,
			  const char *want)
{
	unsigned char buf[1024];
	struct staterec_guest g;
	size_t n = staterec_guest_size();

	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	memcpy(buf + 32 + off, val, size);
	reseal(buf, n);
	expect_refused(buf, n, want);
}

static void test_out_of_range_fields(void **state)
{
	uint64_t big = 1ull << 50, odd = 256 * MiB + 4096, zero = 0;
	uint64_t more = 300 * MiB;
	int32_t pid;
	uint32_t flags = 1u << 20;

	(void)state;
	/* Payload offsets: name 0, state 32, flags 36, mem 40, min 48,
	 * claim 56, balloon 64, swap 72, quota 80, pool id 88, pid 96,
	 * client id 100, start 104, cmdline 112, disk 368. */
	field_refused(36, &flags, 4, "unknown flags");
	field_refused(40, &big, 8, "mem");
	field_refused(40, &odd, 8, "mem");
	field_refused(40, &zero, 8, "mem");
	field_refused(48, &more, 8, "min");
	field_refused(56, &more, 8, "claim");
	field_refused(64, &more, 8, "balloon target");
	field_refused(72, &big, 8, "swap");
	field_refused(88, &zero, 8, "pool id");
	pid = -5;
	field_refused(96, &pid, 4, "pid -5 out of range");
	pid = 1;
	field_refused(96, &pid, 4, "pid 1 out of range");
	pid = 1 << 30;
	field_refused(96, &pid, 4, "out of range");
	field_refused(100, &flags, 4, "client id 1048576 out of range");
	field_refused(104, &zero, 8, "without a start time");
	/* Strings: unterminated, unprintable, junk after the NUL, a bad
	 * name, a relative disk path. */
	{
		char name[32], s[256];

		memset(name, 'a', sizeof(name));
		field_refused(0, name, sizeof(name), "name");
		field_refused(0, "../etc", 7, "name");
		field_refused(0, ".hidden", 8, "name");
		field_refused(0, "\0", 1, "name");
		memset(s, 'x', sizeof(s));
		field_refused(112, s, sizeof(s), "cmdline");
		field_refused(112, "a\nb", 4, "cmdline");
		field_refused(368 + 100, "z", 1, "disk");
		memset(s, 0, sizeof(s));
		memcpy(s, "base.img", 8);
		field_refused(368, s, sizeof(s), "disk path is not absolute");
	}
	/* Encoding refuses what decoding would. */
	{
		struct staterec_guest g;
		unsigned char buf[1024];

		sample(&g);
		g.claim_bytes = g.mem_bytes + 1;
		assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)),
				 -EINVAL);
		sample(&g);
		assert_int_equal(staterec_guest_encode(&g, buf, 100), -ENOSPC);
	}
}

/* A version 1 record, as the ebbd an upgrade replaces wrote it (its
 * 624-byte payload, no policy settings), is read: the guest gets the
 * settings it was launched with. */
static void test_version_1_still_read(void **state)
{
	unsigned char buf[1024];
	struct staterec_guest g, out;
	size_t n1 = 32 + 624;
	uint32_t v = 1, len = (uint32_t)n1;
	char why[STATEREC_WHY_MAX] = "";

	(void)state;
	sample(&g);
	assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 16, &len, 4);
	reseal(buf, n1);
	assert_int_equal(staterec_guest_decode(buf, n1, &out, why), 0);
	assert_string_equal(out.name, "web-1");
	assert_int_equal(out.mem_bytes, 256 * MiB);
	assert_int_equal(out.min_bytes, 128 * MiB);
	assert_string_equal(out.disk, "/srv/base.img");
	assert_int_equal(out.policy_flags, 0);
	assert_int_equal(out.shares, 0);
	assert_int_equal(out.policy_min_bytes, 0);
	assert_int_equal(out.policy_max_bytes, 0);
}

static void test_policy_fields(void **state)
{
	uint64_t more = 300 * MiB, some = 64 * MiB;
	uint32_t flags, shares;

	(void)state;
	/* Version 2 payload: policy flags 624, shares 628, min 632, max 640. */
	flags = 1u << 5;
	field_refused(624, &flags, 4, "unknown policy flags 0x20");
	shares = 0;
	field_refused(628, &shares, 4, "shares 0 out of range");
	shares = 10001;
	field_refused(628, &shares, 4, "shares 10001 out of range");
	field_refused(632, &more, 8, "policy min");
	field_refused(640, &more, 8, "policy max");
	/* Without the flag that says they are there, any setting is junk. */
	flags = 0;
	field_refused(624, &flags, 4, "policy settings without their flag");
	{
		unsigned char buf[1024];
		struct staterec_guest g, out;
		size_t n = staterec_guest_size();
		char why[STATEREC_WHY_MAX];

		sample(&g);
		g.policy_flags = 0;
		g.shares = 0;
		g.policy_min_bytes = g.policy_max_bytes = 0;
		assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)), 0);
		assert_int_equal(staterec_guest_decode(buf, n, &out, why), 0);
		assert_int_equal(out.policy_flags, 0);
		g.policy_min_bytes = some;	/* a setting without the flag */
		assert_int_equal(staterec_guest_encode(&g, buf, sizeof(buf)),
				 -EINVAL);
	}
}

static void test_unknown_state(void **state)
{
	uint32_t st;

	(void)state;
	st = 0;
	field_refused(32, &st, 4, "unknown guest state 0");
	st = 6;
	field_refused(32, &st, 4, "unknown guest state 6");
	st = 0xffffffffu;
	field_refused(32, &st, 4, "unknown guest state 4294967295");
	assert_string_equal(staterec_state_name((enum staterec_state)9),
			    "unknown");
	assert_string_equal(staterec_state_name(SR_STOPPED), "stopped");
}

/* A write that fails (the file size limit: EFBIG, an honest I/O error the
 * kernel gives mid-write) leaves the old record and no temp file. */
static void test_failed_write_keeps_old(void **state)
{
	struct staterec_guest g, back;
	char dir[64], path[128], tmp[160], why[STATEREC_WHY_MAX];
	struct rlimit old, lim;
	struct stat st;
	int rc;

	(void)state;
	mk_dir(dir, sizeof(dir));
	sample(&g);
	assert_int_equal(staterec_guest_save(dir, &g), 0);
	snprintf(path, sizeof(path), "%s/guests/web-1.rec", dir);
	snprintf(tmp, sizeof(tmp), "%s/guests/.web-1.rec.tmp", dir);

	g.claim_bytes = 0;
	g.state = SR_STOPPING;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 100;	/* less than a record */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rc = staterec_guest_save(dir, &g);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(rc, -EFBIG);

	assert_int_equal(staterec_guest_load(path, &back, why), 0);
	assert_int_equal(back.state, SR_RUNNING);
	assert_int_equal(back.claim_bytes, 100 * MiB);
	assert_int_equal(stat(tmp, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* A rename that fails (a directory in the record's place) also
	 * leaves no temp file behind. */
	assert_int_equal(staterec_guest_remove(dir, "web-1"), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(tmp, sizeof(tmp), "%s/x", path);
	assert_int_equal(close(open(tmp, O_CREAT | O_WRONLY, 0600)), 0);
	assert_int_equal(staterec_guest_save(dir, &g), -EISDIR);
	snprintf(tmp, sizeof(tmp), "%s/guests/.web-1.rec.tmp", dir);
	assert_int_equal(stat(tmp, &st), -1);

	/* And the write succeeds once the room is back. */
	rm_dir(dir);
	mk_dir(dir, sizeof(dir));
	assert_int_equal(staterec_guest_save(dir, &g), 0);
	assert_int_equal(staterec_guest_load(path, &back, why), -ENOENT);
	snprintf(path, sizeof(path), "%s/guests/web-1.rec", dir);
	assert_int_equal(staterec_guest_load(path, &back, why), 0);
	assert_int_equal(back.state, SR_STOPPING);
	rm_dir(dir);
}

static void test_pool_record_checked(void **state)
{
	struct staterec_pool p = { .budget_bytes = 0, .next_id = 1 }, out;
	unsigned char buf[128];
	char why[STATEREC_WHY_MAX];
	uint64_t zero = 0;

	(void)state;
	assert_int_equal(staterec_pool_encode(&p, buf, sizeof(buf)), -EINVAL);
	p.budget_bytes = 1ull << 30;
	assert_int_equal(staterec_pool_encode(&p, buf, sizeof(buf)), 0);
	memcpy(buf + 32, &zero, 8);
	reseal(buf, staterec_pool_size());
	assert_int_equal(staterec_pool_decode(buf, staterec_pool_size(), &out,
					      why), -EBADMSG);
	assert_non_null(strstr(why, "budget"));
}

static void test_proc_start_time(void **state)
{
	uint64_t a, b;

	(void)state;
	assert_int_equal(staterec_proc_start(getpid(), &a), 0);
	assert_true(a > 0);
	assert_int_equal(staterec_proc_start(getpid(), &b), 0);
	assert_int_equal(a, b);
	assert_int_equal(staterec_proc_start(1, &b), 0);
	assert_true(b <= a);
	assert_int_equal(staterec_proc_start(4194304 + 1, &b), -ENOENT);
}

/* A process that exited but is not reaped yet is not alive. */
static void test_proc_start_zombie(void **state)
{
	uint64_t t;
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(staterec_proc_start(pid, &t) == 0 ||
			 staterec_proc_start(pid, &t) == -ESRCH, 1);
	/* Wait for the exit without reaping it. */
	{
		siginfo_t si;

		assert_int_equal(waitid(P_PID, (id_t)pid, &si,
					WEXITED | WNOWAIT), 0);
	}
	assert_int_equal(staterec_proc_start(pid, &t), -ESRCH);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(staterec_proc_start(pid, &t), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_flipped_byte),
		cmocka_unit_test(test_bad_version_and_kind),
		cmocka_unit_test(test_out_of_range_fields),
		cmocka_unit_test(test_unknown_state),
		cmocka_unit_test(test_version_1_still_read),
		cmocka_unit_test(test_policy_fields),
		cmocka_unit_test(test_failed_write_keeps_old),
		cmocka_unit_test(test_pool_record_checked),
		cmocka_unit_test(test_proc_start_time),
		cmocka_unit_test(test_proc_start_zombie),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
