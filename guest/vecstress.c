/*
 * vecstress: check that every vector register a process owns survives
 * context switches, for the guest kernel's FP state handling.
 *
 *   vecstress [--procs N] [--seconds S] [--width xmm|ymm|zmm]
 *
 * A UML guest keeps each process's FP/vector state in a buffer it moves to
 * and from the host with ptrace at every switch.  If that buffer or the
 * transfer is shorter than the host's XSAVE state, some registers come back
 * wrong (or the guest panics).  So:
 *
 * 1. Find the widest registers the CPU and OS enable (CPUID, XGETBV):
 *    XMM0-15 (SSE), YMM0-15 (AVX), or ZMM0-31 and k0-7 (AVX-512).
 * 2. Fork N processes.  Each, in rounds, loads every register with its own
 *    pattern (process, round), spins, makes a system call that yields,
 *    sleeps or returns at once, spins again and stores every register, all
 *    in one asm statement, so nothing but the kernel can touch them in
 *    between.  It then compares what it stored with what it loaded.
 * 3. Print each process's rounds, and the context switches its children
 *    went through (getrusage), and exit 1 if any register came back wrong.
 *
 * The spins make the timer preempt processes in the middle of a round; the
 * system calls switch them voluntarily.  AMX tile registers are not used:
 * a process needs the kernel's permission for them (ARCH_REQ_XCOMP_PERM),
 * which the 6.1 UML kernel does not grant; their space in the XSAVE buffer
 * is what made the host's state outgrow the old fixed buffer, and it still
 * travels with every transfer.
 *
 * Output, one line each (a bad register also gets a line, the first 8 per
 * process):
 *   vecstress: registers zmm0-31 k0-7 (cpu xsave area 2696 bytes)
 *   vecstress: process 0: 5120 rounds, 0 bad
 *   ...
 *   vecstress: 4 processes, 9000 voluntary and 300 involuntary switches, 0 corrupted, 0 failed
 * Exit status: 0 clean, 1 corruption, 2 usage or setup error.
 */
#include "tool.h"

#include <cpuid.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum width { W_XMM, W_YMM, W_ZMM };

/* Register file image: 32 vector registers of 64 bytes, then 8 opmasks. */
#define VEC_BYTES	(32 * 64)
#define IMAGE_BYTES	(VEC_BYTES + 8 * 8)

struct image {
	uint8_t b[IMAGE_BYTES];
} __attribute__((aligned(64)));

/* What one round does between loading and storing the registers. */
struct round_args {
	long nr;		/* system call number */
	long arg;		/* its first argument */
	unsigned long spin;	/* loop iterations before and after it */
};

/*
 * The asm statement of a round: LOAD(n) every register, spin, one system
 * call (it clobbers rax, rcx and r11), spin, STORE(n) every register.
 */
#define SPIN_SYSCALL_SPIN					\
	"mov %[spin], %%rdx\n\t"				\
	"1: dec %%rdx\n\tjnz 1b\n\t"				\
	"mov %[nr], %%rax\n\t"					\
	"mov %[arg], %%rdi\n\t"					\
	"xor %%esi, %%esi\n\t"					\
	"syscall\n\t"						\
	"mov %[spin], %%rdx\n\t"				\
	"2: dec %%rdx\n\tjnz 2b\n\t"

#define ROUND_OPERANDS						\
	: : [in] "r"(in), [out] "r"(out), [spin] "r"(ra->spin + 1),	\
	    [nr] "r"(ra->nr), [arg] "r"(ra->arg)

#define GP_CLOBBERS "rax", "rcx", "rdx", "rsi", "rdi", "r11", "memory", "cc"

#define X8(M, a) M(a##0) M(a##1) M(a##2) M(a##3) M(a##4) M(a##5) M(a##6) M(a##7)
#define REGS16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) \
	M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define REGS32(M) REGS16(M) M(16) M(17) M(18) M(19) M(20) M(21) M(22) \
	M(23) M(24) M(25) M(26) M(27) M(28) M(29) M(30) M(31)
#define REGS8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

#define XLOAD(n) "movdqu " #n "*64(%[in]), %%xmm" #n "\n\t"
#define XSTORE(n) "movdqu %%xmm" #n ", " #n "*64(%[out])\n\t"
#define YLOAD(n) "vmovdqu " #n "*64(%[in]), %%ymm" #n "\n\t"
#define YSTORE(n) "vmovdqu %%ymm" #n ", " #n "*64(%[out])\n\t"
#define ZLOAD(n) "vmovdqu64 " #n "*64(%[in]), %%zmm" #n "\n\t"
#define ZSTORE(n) "vmovdqu64 %%zmm" #n ", " #n "*64(%[out])\n\t"
#define KLOAD(n) "kmovq 2048+" #n "*8(%[in]), %%k" #n "\n\t"
#define KSTORE(n) "kmovq %%k" #n ", 2048+" #n "*8(%[out])\n\t"

static void round_xmm(const struct image *in, struct image *out,
		      const struct round_args *ra)
{
	__asm__ volatile(REGS16(XLOAD) SPIN_SYSCALL_SPIN REGS16(XSTORE)
		     ROUND_OPERANDS
		     : GP_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
		       "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

__attribute__((target("avx")))
static void round_ymm(const struct image *in, struct image *out,
		      const struct round_args *ra)
{
	__asm__ volatile(REGS16(YLOAD) SPIN_SYSCALL_SPIN REGS16(YSTORE)
		     "vzeroupper\n\t"
		     ROUND_OPERANDS
		     : GP_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
		       "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

__attribute__((target("avx512f,avx512bw")))
static void round_zmm(const struct image *in, struct image *out,
		      const struct round_args *ra)
{
	__asm__ volatile(REGS32(ZLOAD) REGS8(KLOAD) SPIN_SYSCALL_SPIN
		     REGS32(ZSTORE) REGS8(KSTORE)
		     "vzeroupper\n\t"
		     ROUND_OPERANDS
		     : GP_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
		       "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",
		       "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
		       "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28",
		       "xmm29", "xmm30", "xmm31", "k0", "k1", "k2", "k3", "k4",
		       "k5", "k6", "k7");
}

static unsigned long long xgetbv0(void)
{
	unsigned int lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((unsigned long long)hi << 32) | lo;
}

/*
 * The widest registers both the CPU has and the OS saves (XCR0): SSE state
 * is bit 1, AVX bit 2, opmask/ZMM_Hi256/Hi16_ZMM bits 5-7.  Also reports the
 * XSAVE area size for the enabled features (CPUID 0xd.0 EBX), 0 without
 * XSAVE.
 */
static enum width detect_width(unsigned int *xsave_bytes)
{
	unsigned int a, b, c, d;
	unsigned long long xcr0;

	*xsave_bytes = 0;
	__cpuid(1, a, b, c, d);
	if (!(c & bit_OSXSAVE))
		return W_XMM;
	xcr0 = xgetbv0();
	__cpuid_count(0xd, 0, a, b, c, d);
	*xsave_bytes = b;
	__cpuid(1, a, b, c, d);
	if (!(c & bit_AVX) || (xcr0 & 0x6) != 0x6)
		return W_XMM;
	__cpuid_count(7, 0, a, b, c, d);
	if ((b & bit_AVX512F) && (b & bit_AVX512BW) && (xcr0 & 0xe6) == 0xe6)
		return W_ZMM;
	return W_YMM;
}

/* Bytes of each 64-byte slot in use, and how many vector registers. */
static void width_shape(enum width w, size_t *slot_bytes, int *nregs, int *nmasks)
{
	*slot_bytes = w == W_ZMM ? 64 : w == W_YMM ? 32 : 16;
	*nregs = w == W_ZMM ? 32 : 16;
	*nmasks = w == W_ZMM ? 8 : 0;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_image(struct image *img, uint64_t proc, uint64_t round)
{
	uint64_t x = (proc << 40) ^ round;
	size_t i;

	for (i = 0; i < IMAGE_BYTES; i += 8) {
		uint64_t v = splitmix64(&x);

		memcpy(img->b + i, &v, 8);
	}
}

/*
 * Compare the registers of one round; print the first few bad ones.
 * Returns the number of registers that came back wrong.
 */
static int check_image(const struct image *in, const struct image *out,
		       enum width w, int proc, uint64_t round, int *reported)
{
	static const char *const names[] = { "xmm", "ymm", "zmm" };
	size_t slot;
	int nregs, nmasks, bad = 0, r;

	width_shape(w, &slot, &nregs, &nmasks);
	for (r = 0; r < nregs; r++) {
		if (memcmp(in->b + r * 64, out->b + r * 64, slot) == 0)
			continue;
		bad++;
		if ((*reported)++ < 8)
			printf("vecstress: process %d round %llu: %s%d differs\n",
			       proc, (unsigned long long)round, names[w], r);
	}
	for (r = 0; r < nmasks; r++) {
		if (memcmp(in->b + VEC_BYTES + r * 8, out->b + VEC_BYTES + r * 8,
			   8) == 0)
			continue;
		bad++;
		if ((*reported)++ < 8)
			printf("vecstress: process %d round %llu: k%d differs\n",
			       proc, (unsigned long long)round, r);
	}
	return bad;
}

/*
 * One process's loop until @deadline_ns.  The system call of each round
 * rotates: sched_yield (a voluntary switch when others are runnable), a
 * 50 us nanosleep (always a switch), getppid (kernel entry and exit only).
 * Exit status: 0, or 1 if a register came back wrong.
 */
static int worker(int proc, enum width w, uint64_t deadline_ns)
{
	static const struct timespec nap = { .tv_sec = 0, .tv_nsec = 50000 };
	struct image in, out;
	struct round_args ra;
	uint64_t round = 0, bad_rounds = 0, spin_seed = proc + 1;
	int reported = 0;

	while (tool_now_ns() < deadline_ns) {
		switch (round % 3) {
		case 0: ra.nr = SYS_sched_yield; ra.arg = 0; break;
		case 1: ra.nr = SYS_nanosleep; ra.arg = (long)&nap; break;
		default: ra.nr = SYS_getppid; ra.arg = 0; break;
		}
		/* Up to ~1 ms of spinning: long enough to be preempted. */
		ra.spin = splitmix64(&spin_seed) % 1000000;
		fill_image(&in, proc, round);
		memset(&out, 0, sizeof(out));
		if (w == W_ZMM)
			round_zmm(&in, &out, &ra);
		else if (w == W_YMM)
			round_ymm(&in, &out, &ra);
		else
			round_xmm(&in, &out, &ra);
		if (check_image(&in, &out, w, proc, round, &reported))
			bad_rounds++;
		round++;
	}
	printf("vecstress: process %d: %llu rounds, %llu bad\n", proc,
	       (unsigned long long)round, (unsigned long long)bad_rounds);
	return bad_rounds ? 1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: vecstress [--procs N] [--seconds S] [--width xmm|ymm|zmm]\n"
		   "  --procs    processes to run at once (default 4)\n"
		   "  --seconds  how long each runs (default 10)\n"
		   "  --width    use narrower registers than the CPU has\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "procs", required_argument, NULL, 'p' },
		{ "seconds", required_argument, NULL, 's' },
		{ "width", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const desc[] = {
		"xmm0-15", "ymm0-15", "zmm0-31 k0-7",
	};
	uint64_t procs = 4, seconds = 10, deadline;
	unsigned int xsave_bytes;
	enum width w, max;
	struct rusage ru;
	int opt, i, status, failed = 0, corrupt = 0;

	max = w = detect_width(&xsave_bytes);
	while ((opt = getopt_long(argc, argv, "p:s:w:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (tool_parse_u64(optarg, &procs) || !procs || procs > 256) {
				fprintf(stderr, "vecstress: bad --procs %s\n", optarg);
				return 2;
			}
			break;
		case 's':
			if (tool_parse_u64(optarg, &seconds) || seconds > 86400) {
				fprintf(stderr, "vecstress: bad --seconds %s\n", optarg);
				return 2;
			}
			break;
		case 'w':
			if (!strcmp(optarg, "xmm"))
				w = W_XMM;
			else if (!strcmp(optarg, "ymm"))
				w = W_YMM;
			else if (!strcmp(optarg, "zmm"))
				w = W_ZMM;
			else {
				usage(stderr);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (w > max) {
		fprintf(stderr, "vecstress: this CPU has no %s registers enabled\n",
			w == W_ZMM ? "zmm" : "ymm");
		return 2;
	}

	printf("vecstress: registers %s (cpu xsave area %u bytes)\n", desc[w],
	       xsave_bytes);
	fflush(stdout);
	deadline = tool_now_ns() + seconds * 1000000000ull;
	for (i = 0; i < (int)procs; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("vecstress: fork");
			failed++;
			break;
		}
		if (pid == 0) {
			int rc = worker(i, w, deadline);

			fflush(stdout);
			_exit(rc);
		}
	}
	while (wait(&status) > 0) {
		if (!WIFEXITED(status))
			failed++;
		else if (WEXITSTATUS(status) == 1)
			corrupt++;
		else if (WEXITSTATUS(status) != 0)
			failed++;
	}
	getrusage(RUSAGE_CHILDREN, &ru);
	printf("vecstress: %llu processes, %ld voluntary and %ld involuntary "
	       "switches, %d corrupted, %d failed\n",
	       (unsigned long long)procs, ru.ru_nvcsw, ru.ru_nivcsw, corrupt,
	       failed);
	if (corrupt)
		return 1;
	return failed ? 2 : 0;
}
