/*
 * Unit tests of the policy's decision function (src/policy/policy.h) on
 * recorded inputs, and of hostmem's readers on a fake /proc and cgroup
 * tree.
 *
 * The guests below are shaped after snapshots of real runs (256 MiB UML
 * guests on a 512 MiB budget: ~20 MiB resident idle, MemTotal 245 MiB,
 * memhog 150M leaving 170 MiB resident and 230 MiB available once it
 * exits).  The properties the issue asks for: never below min, order of
 * cost, stop at the high watermark, shares respected.  A small model of
 * the host replays decisions for many rounds to check "never below min"
 * over time, not just once.
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

#include "hostmem.h"
#include "policy.h"

#define MiB (1ull << 20)

static const struct policy_config cfg = {
	.low_bytes = 64 * MiB,
	.high_bytes = 128 * MiB,
	.step_bytes = 64 * MiB,
	.margin_bytes = 32 * MiB,
	.psi_some_pct = 10,
	.give_major_faults = 100,
	.give_swap_ins = 1,
	.host_swap = true,
};

/* A 256 MiB guest after memhog 150M exited: it holds what it no longer
 * uses. */
static struct policy_guest idle_guest(const char *name)
{
	struct policy_guest g = {
		.mem_bytes = 256 * MiB, .max_bytes = 256 * MiB,
		.shares = POLICY_SHARES_DEFAULT,
		.resident_bytes = 170 * MiB, .keep_bytes = 256 * MiB,
		.balloon_ready = true, .stats_valid = true,
		.total_bytes = 245 * MiB, .available_bytes = 230 * MiB,
		.can_swap = true,
	};

	snprintf(g.name, sizeof(g.name), "%s", name);
	return g;
}

/* A guest whose memory is all in use (memhog holding it). */
static struct policy_guest busy_guest(const char *name)
{
	struct policy_guest g = idle_guest(name);

	g.resident_bytes = 240 * MiB;
	g.available_bytes = 20 * MiB;
	return g;
}

static struct policy_input input(struct policy_guest *g, size_t n,
				 uint64_t free_bytes)
{
	struct policy_input in = {
		.host = { .pool_free_bytes = free_bytes, .psi_some_pct = -1 },
		.guests = g, .nguests = n,
	};
	return in;
}

static uint64_t sum_bytes(const struct policy_decision *d, enum policy_mech m)
{
	uint64_t s = 0;

	for (size_t i = 0; i < d->nactions; i++)
		if (d->actions[i].mech == m)
			s += d->actions[i].bytes;
	return s;
}

static const struct policy_action *find(const struct policy_decision *d,
					enum policy_mech m, int guest)
{
	for (size_t i = 0; i < d->nactions; i++)
		if (d->actions[i].mech == m && d->actions[i].guest == guest)
			return &d->actions[i];
	return NULL;
}

static void off_decides_nothing(void **state)
{
	struct policy_guest g[1] = { idle_guest("a") };
	struct policy_input in = input(g, 1, 0);
	struct policy_decision d;

	(void)state;
	assert_int_equal(policy_decide(&cfg, POLICY_OFF, &in, &d), 0);
	assert_int_equal(d.state, POLICY_OFF);
	assert_int_equal(d.nactions, 0);
}

static void rejects_bad_input(void **state)
{
	struct policy_guest g[1] = { idle_guest("a") };
	struct policy_input in = input(g, 1, 0);
	struct policy_config bad = cfg;
	struct policy_decision d;

	(void)state;
	g[0].shares = 0;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), -EINVAL);
	g[0].shares = 100;
	g[0].min_bytes = 512 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), -EINVAL);
	g[0].min_bytes = 0;
	bad.high_bytes = bad.low_bytes;
	assert_int_equal(policy_decide(&bad, POLICY_OK, &in, &d), -EINVAL);
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
}

static void state_table(void **state)
{
	(void)state;
	assert_true(policy_state_allowed(POLICY_OK, POLICY_RECLAIM));
	assert_true(policy_state_allowed(POLICY_RECLAIM, POLICY_LAST_RESORT));
	assert_true(policy_state_allowed(POLICY_LAST_RESORT, POLICY_OK));
	assert_true(policy_state_allowed(POLICY_OFF, POLICY_OK));
	assert_false(policy_state_allowed(POLICY_OFF, POLICY_RECLAIM));
	assert_false(policy_state_allowed(POLICY_LAST_RESORT, POLICY_OFF + 9));
	assert_false(policy_state_allowed(POLICY_NSTATES, POLICY_OK));
	assert_string_equal(policy_state_name(POLICY_LAST_RESORT), "last_resort");
	assert_string_equal(policy_mech_name(POLICY_HOST_SWAP), "host_swap");
}

/* Between the watermarks nothing starts; below low it does; once
 * reclaiming it goes on until high and then stops. */
static void stops_at_high_watermark(void **state)
{
	struct policy_guest g[2] = { idle_guest("a"), idle_guest("b") };
	struct policy_input in = input(g, 2, 100 * MiB);
	struct policy_decision d;

	(void)state;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.state, POLICY_OK);
	assert_int_equal(d.nactions, 0);

	in.host.pool_free_bytes = 40 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.state, POLICY_RECLAIM);
	assert_int_equal(d.need_bytes, 88 * MiB);
	/* Asks for what reaches high, and no more. */
	assert_int_equal(sum_bytes(&d, POLICY_BALLOON_INFLATE), 88 * MiB);

	/* Still below high: goes on. */
	in.host.pool_free_bytes = 100 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_RECLAIM, &in, &d), 0);
	assert_int_equal(d.state, POLICY_RECLAIM);
	assert_int_equal(sum_bytes(&d, POLICY_BALLOON_INFLATE), 28 * MiB);

	/* At high: stops, nothing more is taken. */
	in.host.pool_free_bytes = 128 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_RECLAIM, &in, &d), 0);
	assert_int_equal(d.state, POLICY_OK);
	for (size_t i = 0; i < d.nactions; i++)
		assert_true(policy_mech_gives(d.actions[i].mech));
}

/* Cheapest first: clean cache, then discards (unused before volatile),
 * then balloons; a step runs only for what the earlier ones left. */
static void follows_order_of_cost(void **state)
{
	struct policy_guest g[2] = { idle_guest("a"), idle_guest("b") };
	struct policy_input in = input(g, 2, 0);
	struct policy_decision d;
	enum policy_mech last = POLICY_DROP_EPHEMERAL;

	(void)state;
	/* Need 128 MiB: 100 of clean cache covers most, 20 unused and 30
	 * volatile in guest a the rest; no balloon. */
	in.host.ephemeral_bytes = 100 * MiB;
	g[0].unused_bytes = 20 * MiB;
	g[0].volatile_bytes = 30 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(sum_bytes(&d, POLICY_DROP_EPHEMERAL), 100 * MiB);
	assert_int_equal(sum_bytes(&d, POLICY_DISCARD_UNUSED), 20 * MiB);
	assert_int_equal(sum_bytes(&d, POLICY_DISCARD_VOLATILE), 8 * MiB);
	assert_int_equal(sum_bytes(&d, POLICY_BALLOON_INFLATE), 0);
	for (size_t i = 0; i < d.nactions; i++) {
		assert_true(d.actions[i].mech >= last);
		last = d.actions[i].mech;
	}

	/* Enough clean cache: nothing else is touched. */
	in.host.ephemeral_bytes = 512 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 1);
	assert_int_equal(d.actions[0].mech, POLICY_DROP_EPHEMERAL);
	assert_int_equal(d.actions[0].bytes, 128 * MiB);

	/* None of those: balloons, then (busy guests) store and host swap. */
	in.host.ephemeral_bytes = 0;
	g[0].unused_bytes = g[0].volatile_bytes = 0;
	g[0] = busy_guest("a");
	g[1] = busy_guest("b");
	in.host.pool_free_bytes = 0;
	in.host.pool_over_bytes = 64 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.state, POLICY_LAST_RESORT);
	assert_int_equal(d.need_bytes, 192 * MiB);
	assert_non_null(find(&d, POLICY_STORE_REFUSE, -1));
	assert_int_equal(sum_bytes(&d, POLICY_HOST_SWAP), 128 * MiB);
	last = POLICY_DROP_EPHEMERAL;
	for (size_t i = 0; i < d.nactions; i++) {
		assert_true(d.actions[i].mech >= last);
		last = d.actions[i].mech;
	}
	/* The store is refused once, not on every decision. */
	in.host.store_refusing = true;
	assert_int_equal(policy_decide(&cfg, POLICY_LAST_RESORT, &in, &d), 0);
	assert_null(find(&d, POLICY_STORE_REFUSE, -1));
	/* Back above high: the store takes puts again. */
	in.host.pool_over_bytes = 0;
	in.host.pool_free_bytes = 200 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_LAST_RESORT, &in, &d), 0);
	assert_int_equal(d.state, POLICY_OK);
	assert_non_null(find(&d, POLICY_STORE_ALLOW, -1));
}

/* Equal guests, shares 100 and 200: the one with twice the shares gives
 * half as much.  When the need exceeds what proportion allows, the rest
 * comes from whoever still has some. */
static void respects_shares(void **state)
{
	struct policy_guest g[2] = { idle_guest("a"), idle_guest("b") };
	struct policy_input in = input(g, 2, 32 * MiB);	/* need 96 MiB */
	const struct policy_action *a, *b;
	struct policy_decision d;

	(void)state;
	g[1].shares = 200;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	a = find(&d, POLICY_BALLOON_INFLATE, 0);
	b = find(&d, POLICY_BALLOON_INFLATE, 1);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a->bytes >= 64 * MiB - 4096 && a->bytes <= 64 * MiB);
	assert_true(b->bytes >= 32 * MiB && b->bytes <= 32 * MiB + 4096);
	assert_int_equal(a->bytes + b->bytes, 96 * MiB);
	assert_int_equal(a->target_bytes, 170 * MiB - a->bytes);

	/* Need 120 MiB: a is capped at its 64 MiB step, b gives the rest. */
	in.host.pool_free_bytes = 8 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	a = find(&d, POLICY_BALLOON_INFLATE, 0);
	b = find(&d, POLICY_BALLOON_INFLATE, 1);
	assert_int_equal(a->bytes, 64 * MiB);
	assert_int_equal(b->bytes, 56 * MiB);

	/* Host swap picks by resident above min per share too. */
	g[0] = busy_guest("a");
	g[1] = busy_guest("b");
	g[0].shares = 400;
	in.host.pool_free_bytes = 0;
	in.host.pool_over_bytes = 0;
	struct policy_config one = cfg;
	one.step_bytes = 256 * MiB;
	assert_int_equal(policy_decide(&one, POLICY_OK, &in, &d), 0);
	assert_non_null(find(&d, POLICY_HOST_SWAP, 1));
	assert_null(find(&d, POLICY_HOST_SWAP, 0));
}

/* min is a floor for the balloon and for host swap, once and over many
 * rounds of a model host where guests keep growing. */
static void never_below_min(void **state)
{
	struct policy_guest g[3] = { idle_guest("a"), idle_guest("b"),
				     busy_guest("c") };
	struct policy_input in = input(g, 3, 0);
	struct policy_decision d;
	enum policy_state st = POLICY_OK;

	(void)state;
	g[0].min_bytes = 160 * MiB;	/* may give only 10 of its 170 */
	g[1].min_bytes = 200 * MiB;	/* above resident: gives nothing */
	g[2].min_bytes = 230 * MiB;
	in.host.pool_over_bytes = 300 * MiB;
	assert_int_equal(policy_decide(&cfg, st, &in, &d), 0);
	for (size_t i = 0; i < d.nactions; i++) {
		const struct policy_action *a = &d.actions[i];

		if (a->mech == POLICY_BALLOON_INFLATE)
			assert_true(a->target_bytes >= g[a->guest].min_bytes);
		if (a->mech == POLICY_HOST_SWAP)
			assert_true(g[a->guest].resident_bytes - a->bytes >=
				    g[a->guest].min_bytes);
	}
	assert_null(find(&d, POLICY_BALLOON_INFLATE, 1));

	/* A model: each round the guests grow by 8 MiB when they can (their
	 * use follows), balloons take what they are set to, host swap
	 * shrinks resident.  The budget is 400 MiB. */
	srand(12);
	for (int round = 0; round < 500; round++) {
		uint64_t tot = 0;

		for (int i = 0; i < 3; i++) {
			uint64_t grow = (uint64_t)(rand() % 16) * MiB;

			if (g[i].resident_bytes + grow <= g[i].keep_bytes)
				g[i].resident_bytes += grow;
			if (g[i].available_bytes > grow)
				g[i].available_bytes -= grow;
			g[i].major_faults_delta = (uint64_t)(rand() % 300);
			if (rand() % 4 == 0) {	/* a process exits */
				g[i].available_bytes = g[i].total_bytes -
					g[i].resident_bytes / 4;
			}
			tot += g[i].resident_bytes;
		}
		in.host.pool_free_bytes = tot < 400 * MiB ? 400 * MiB - tot : 0;
		in.host.pool_over_bytes = tot > 400 * MiB ? tot - 400 * MiB : 0;
		assert_int_equal(policy_decide(&cfg, st, &in, &d), 0);
		assert_true(policy_state_allowed(st, d.state));
		st = d.state;
		for (size_t k = 0; k < d.nactions; k++) {
			const struct policy_action *a = &d.actions[k];
			struct policy_guest *x = a->guest >= 0 ? &g[a->guest] : NULL;

			switch (a->mech) {
			case POLICY_BALLOON_INFLATE:
			case POLICY_BALLOON_DEFLATE:
				assert_true(a->target_bytes >= x->min_bytes);
				assert_true(a->target_bytes <= x->max_bytes);
				x->keep_bytes = a->target_bytes;
				if (x->resident_bytes > x->keep_bytes)
					x->resident_bytes = x->keep_bytes;
				break;
			case POLICY_HOST_SWAP:
				assert_true(x->resident_bytes - a->bytes >=
					    x->min_bytes);
				x->resident_bytes -= a->bytes;
				break;
			default:
				break;
			}
		}
		for (int i = 0; i < 3; i++)
			assert_true(g[i].keep_bytes >= g[i].min_bytes);
	}
}

/* A guest under pressure whose balloon holds memory gets it back, if the
 * host stays above low, and never beyond its max. */
static void gives_back_under_pressure(void **state)
{
	struct policy_guest g[2] = { busy_guest("a"), idle_guest("b") };
	struct policy_input in = input(g, 2, 300 * MiB);
	const struct policy_action *a;
	struct policy_decision d;

	(void)state;
	g[0].keep_bytes = 128 * MiB;
	g[0].resident_bytes = 128 * MiB;
	g[0].major_faults_delta = 500;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	a = find(&d, POLICY_BALLOON_DEFLATE, 0);
	assert_non_null(a);
	assert_int_equal(a->target_bytes, 192 * MiB);
	assert_true(policy_mech_gives(a->mech));
	assert_null(find(&d, POLICY_BALLOON_DEFLATE, 1));

	/* Max 160 MiB: only 32 MiB more. */
	g[0].max_bytes = 160 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(find(&d, POLICY_BALLOON_DEFLATE, 0)->target_bytes, 160 * MiB);

	/* No room: the host would drop below low. */
	g[0].max_bytes = 256 * MiB;
	in.host.pool_free_bytes = 100 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_null(find(&d, POLICY_BALLOON_DEFLATE, 0));

	/* An operator's balloon is left alone. */
	in.host.pool_free_bytes = 300 * MiB;
	g[0].manual = true;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 0);

	/* A max lowered under what it keeps: ballooned down to it. */
	g[0].manual = false;
	g[0].major_faults_delta = 0;
	g[0].available_bytes = 100 * MiB;
	g[0].max_bytes = 96 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	a = find(&d, POLICY_BALLOON_INFLATE, 0);
	assert_non_null(a);
	assert_int_equal(a->target_bytes, 96 * MiB);
}

/* Idle trim, when asked for: above high, idle guests with memory well
 * above their use give a little per decision; busy or pressed ones do
 * not; without it nothing is taken above high. */
static void idle_trim_when_asked(void **state)
{
	struct policy_guest g[3] = { idle_guest("a"), busy_guest("b"), idle_guest("c") };
	struct policy_input in = input(g, 3, 300 * MiB);
	struct policy_config trim = cfg;
	const struct policy_action *a;
	struct policy_decision d;

	(void)state;
	g[2].major_faults_delta = 1;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 0);
	trim.idle_trim_bytes = 16 * MiB;
	assert_int_equal(policy_decide(&trim, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 1);
	a = find(&d, POLICY_BALLOON_INFLATE, 0);
	assert_non_null(a);
	assert_int_equal(a->bytes, 16 * MiB);
	assert_int_equal(a->target_bytes, 154 * MiB);
	/* Down to use + margin at most, and never below min. */
	/* (The balloon counts as used in MemTotal - MemAvailable: with
	 * DEFLATE_ON_OOM the guest keeps it in MemTotal.) */
	g[0].resident_bytes = g[0].keep_bytes = 120 * MiB;
	g[0].available_bytes = (245 - 15 - 136) * MiB;
	g[0].min_bytes = 110 * MiB;
	assert_int_equal(policy_decide(&trim, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 0);
	g[0].min_bytes = 0;
	g[0].resident_bytes = g[0].keep_bytes = 100 * MiB;
	g[0].available_bytes = (245 - 15 - 156) * MiB;
	assert_int_equal(policy_decide(&trim, POLICY_OK, &in, &d), 0);
	a = find(&d, POLICY_BALLOON_INFLATE, 0);
	assert_null(a);		/* 100 - (15 + 32) is not above 2 margins */
	/* Only above high. */
	in.host.pool_free_bytes = 100 * MiB;
	g[0] = idle_guest("a");
	assert_int_equal(policy_decide(&trim, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.nactions, 0);
}

/* Host pressure (PSI) starts reclaim already between the watermarks; the
 * memory cgroup's room counts when it is smaller than the pool's. */
static void pressure_and_cgroup(void **state)
{
	struct policy_guest g[1] = { idle_guest("a") };
	struct policy_input in = input(g, 1, 100 * MiB);
	struct policy_decision d;

	(void)state;
	in.host.psi_some_pct = 25.0;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_true(d.pressure);
	assert_int_equal(d.state, POLICY_RECLAIM);
	assert_int_equal(d.need_bytes, 28 * MiB);

	in.host.psi_some_pct = -1;
	in.host.pool_free_bytes = 500 * MiB;
	in.host.cg_limit_bytes = 1024 * MiB;
	in.host.cg_used_bytes = 1000 * MiB;
	assert_int_equal(policy_decide(&cfg, POLICY_OK, &in, &d), 0);
	assert_int_equal(d.free_bytes, 24 * MiB);
	/* Need 104 MiB, one idle guest gives its 64 MiB step: not enough. */
	assert_int_equal(d.state, POLICY_LAST_RESORT);
	assert_int_equal(sum_bytes(&d, POLICY_BALLOON_INFLATE), 64 * MiB);
}

/* ---- hostmem on a fake tree ---- */

static void put(const char *root, const char *rel, const char *text)
{
	char path[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void hostmem_reads_fake_tree(void **state)
{
	char root[] = "/tmp/ebb-hostmem-XXXXXX";
	struct hostmem_sample s;
	struct hostmem *h;
	double v;
	char cmd[128];

	(void)state;
	assert_int_equal(hostmem_parse_psi("some avg10=12.50 avg60=1.00 avg300=0.00 "
					   "total=5\nfull avg10=0.00\n", &v), 0);
	assert_true(v > 12.49 && v < 12.51);
	assert_int_equal(hostmem_parse_psi("garbage", &v), -EINVAL);

	assert_non_null(mkdtemp(root));
	put(root, "proc/self/cgroup", "5:cpu:/\n4:memory:/box/ebbd\n0::/\n");
	put(root, "proc/pressure/memory", "some avg10=3.25 avg60=0 avg300=0 total=1\n");
	put(root, "proc/meminfo", "MemTotal: 1000 kB\nSwapTotal:     2048 kB\n");
	put(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
	/* The limit sits on the parent, not on ebbd's own cgroup. */
	put(root, "sys/fs/cgroup/memory/box/memory.limit_in_bytes", "536870912\n");
	put(root, "sys/fs/cgroup/memory/box/memory.usage_in_bytes", "314572800\n");
	put(root, "sys/fs/cgroup/memory/box/memory.memsw.usage_in_bytes", "419430400\n");
	put(root, "sys/fs/cgroup/memory/box/memory.stat",
	    "cache 1\ntotal_inactive_file 104857600\nswap 0\n");
	put(root, "sys/fs/cgroup/memory/box/ebbd/memory.limit_in_bytes",
	    "9223372036854771712\n");
	assert_int_equal(hostmem_open(root, &h), 0);
	assert_int_equal(hostmem_sample(h, &s), 0);
	assert_true(s.cgroup);
	assert_int_equal(s.limit_bytes, 512 * MiB);
	assert_int_equal(s.usage_bytes, 300 * MiB);
	assert_int_equal(s.working_set_bytes, 200 * MiB);
	assert_int_equal(s.swap_bytes, 100 * MiB);
	assert_true(s.psi_some_avg10 > 3.2 && s.psi_some_avg10 < 3.3);
	assert_int_equal(s.swap_total_bytes, 2 * MiB);
	assert_true(strstr(hostmem_cgroup_dir(h), "/memory/box") != NULL);
	hostmem_close(h);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(off_decides_nothing),
		cmocka_unit_test(rejects_bad_input),
		cmocka_unit_test(state_table),
		cmocka_unit_test(stops_at_high_watermark),
		cmocka_unit_test(follows_order_of_cost),
		cmocka_unit_test(respects_shares),
		cmocka_unit_test(never_below_min),
		cmocka_unit_test(gives_back_under_pressure),
		cmocka_unit_test(pressure_and_cgroup),
		cmocka_unit_test(idle_trim_when_asked),
		cmocka_unit_test(hostmem_reads_fake_tree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
