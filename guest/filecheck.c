/*
 * filecheck: a file workload that checks every byte it reads, so tests can
 * prove that a host discarding the guest's page cache (volatile pages)
 * never changes what a program reads from its files.
 *
 *   filecheck DIR [--files N] [--size SIZE] [--seconds S] [--seed SEED]
 *
 * 1. Create N files (default 8) of SIZE bytes (default 4M) in DIR, which
 *    should be on a real disk: the point is that the page cache can always
 *    read a page again from it.
 * 2. For S seconds (default 10) pick operations at random, against a model
 *    of what every file must hold.  The model works in 512-byte sectors,
 *    so writes and truncations also split pages: sector k of file f at
 *    generation g holds words derived from (SEED, f, k, g); generation 0
 *    is zeroes (never written, or cut off by a truncation).
 *      read      the whole file with read(), in random chunk sizes
 *      mmap      the whole file through a shared read-only mapping
 *      splice    a random range through a pipe (splice(2)), read back
 *      write     a random run of sectors with pwrite(): partial pages
 *                make the kernel read the rest of the page first
 *      mwrite    a random run of sectors through a shared writable mapping
 *      truncate  to a random sector boundary, then back to SIZE
 *      fsync     write dirty pages back, so they are clean (and volatile
 *                again after their next read)
 *      dropcache fadvise(DONTNEED) on the whole file: its clean pages leave
 *                the page cache
 *    Each read operation compares every byte it read with the model.
 * 3. Print "filecheck: N ops (counts per kind), M MiB verified" and
 *    "filecheck: M mismatches", and exit 1 if M > 0, else 0.
 *
 * A mismatch is described (file, offset, expected generation, and whether
 * the sector read as zeroes: the sign of a discarded page used as if it
 * still held its data) for the first few only.  Exit 2 on usage or I/O
 * errors.
 */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR		512
#define SECTOR_WORDS	(SECTOR / 8)
#define REPORT_MAX	8	/* mismatches described */
#define CHUNK_MAX	(256 << 10)

enum op { OP_READ, OP_MMAP, OP_SPLICE, OP_WRITE, OP_MWRITE, OP_TRUNCATE,
	  OP_FSYNC, OP_DROP, OP_NR };

static const char *const op_names[OP_NR] = {
	"read", "mmap", "splice", "write", "mwrite", "truncate", "fsync",
	"dropcache",
};

/* Relative frequency: mostly reads, which is what discards can break. */
static const unsigned int op_weight[OP_NR] = { 8, 6, 3, 4, 2, 1, 1, 1 };

struct file {
	int fd;
	uint32_t *gen;		/* per sector; 0 = zeroes */
	uint32_t next_gen;
};

static uint64_t seed;
static uint64_t nsectors;	/* per file */
static unsigned int nfiles;
static struct file *files;
static uint64_t rng_state;
static uint64_t mismatches, bytes_verified;
static uint64_t op_count[OP_NR];

static void usage(FILE *f)
{
	fprintf(f, "usage: filecheck DIR [--files N] [--size SIZE] "
		   "[--seconds S] [--seed SEED]\n"
		   "  DIR        a directory on a disk-backed file system\n"
		   "  --files    how many files (default 8)\n"
		   "  --size     bytes per file, a multiple of 4096 (default 4M)\n"
		   "  --seconds  how long to run (default 10)\n"
		   "  --seed     number the file contents derive from\n");
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t n)
{
	return splitmix64(&rng_state) % n;
}

/* The contents of sector @k of file @f at generation @g (not 0). */
static void sector_fill(uint64_t *w, unsigned int f, uint64_t k, uint32_t g)
{
	uint64_t st = seed ^ ((uint64_t)f << 56) ^ (k << 20) ^ g;
	unsigned int i;

	/* A header that names the sector, so a misplaced one says whose it is. */
	w[0] = ((uint64_t)f << 48) | k;
	w[1] = g;
	for (i = 2; i < SECTOR_WORDS; i++)
		w[i] = splitmix64(&st);
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (c[i])
			return false;
	return true;
}

/*
 * Compare @n bytes read from file @f at byte offset @off (sector-aligned
 * or not) with the model.
 */
static void verify(unsigned int f, uint64_t off, const unsigned char *buf,
		   size_t n, const char *how)
{
	uint64_t expect[SECTOR_WORDS];
	size_t done = 0;

	while (done < n) {
		uint64_t k = (off + done) / SECTOR;
		size_t in = (off + done) % SECTOR;
		size_t len = SECTOR - in;
		uint32_t g = files[f].gen[k];

		if (len > n - done)
			len = n - done;
		if (g)
			sector_fill(expect, f, k, g);
		else
			memset(expect, 0, sizeof(expect));
		if (memcmp((unsigned char *)expect + in, buf + done, len)) {
			if (mismatches < REPORT_MAX) {
				const uint64_t *got = (const void *)(buf + done - in);

				printf("filecheck: MISMATCH (%s) file %u offset %llu: "
				       "want generation %u, %s\n", how, f,
				       (unsigned long long)(k * SECTOR), g,
				       all_zero(buf + done, len) ? "read zeroes" :
				       in == 0 && len == SECTOR ?
				       (got[0] >> 48 < nfiles ? "read another sector's data" :
					"read garbage") : "read other data");
				if (in == 0 && len == SECTOR && !all_zero(buf + done, len))
					printf("filecheck:   it names file %llu sector %llu "
					       "generation %llu\n",
					       (unsigned long long)(got[0] >> 48),
					       (unsigned long long)(got[0] & 0xffffffffffffull),
					       (unsigned long long)got[1]);
			}
			mismatches++;
		}
		done += len;
	}
	bytes_verified += n;
}

static void die(const char *what, unsigned int f)
{
	fprintf(stderr, "filecheck: %s (file %u): %s\n", what, f, strerror(errno));
	exit(2);
}

/* Write sectors [k, k + n) of file @f at a new generation through @fd. */
static void write_sectors(unsigned int f, uint64_t k, uint64_t n)
{
	static uint64_t buf[CHUNK_MAX / 8];
	uint32_t g = ++files[f].next_gen;
	uint64_t i;

	for (i = 0; i < n; i++) {
		sector_fill(buf + i * SECTOR_WORDS, f, k + i, g);
		files[f].gen[k + i] = g;
	}
	if (pwrite(files[f].fd, buf, n * SECTOR, k * SECTOR) != (ssize_t)(n * SECTOR))
		die("pwrite", f);
}

static void op_read(unsigned int f)
{
	static unsigned char buf[CHUNK_MAX];
	uint64_t off = 0, size = nsectors * SECTOR;

	while (off < size) {
		size_t want = 4096 + rnd(CHUNK_MAX - 4096);
		ssize_t got;

		if (want > size - off)
			want = size - off;
		got = pread(files[f].fd, buf, want, off);
		if (got <= 0)
			die("pread", f);
		verify(f, off, buf, got, "read");
		off += got;
	}
}

static void op_mmap(unsigned int f)
{
	size_t size = nsectors * SECTOR;
	unsigned char *p = mmap(NULL, size, PROT_READ, MAP_SHARED, files[f].fd, 0);

	if (p == MAP_FAILED)
		die("mmap", f);
	verify(f, 0, p, size, "mmap");
	munmap(p, size);
}

static void op_splice(unsigned int f)
{
	static unsigned char buf[65536];
	uint64_t size = nsectors * SECTOR;
	loff_t off = rnd(size), start;
	size_t len = 1 + rnd(sizeof(buf));
	int pipefd[2];
	ssize_t in, got, n;

	if (len > size - off)
		len = size - off;
	if (pipe(pipefd))
		die("pipe", f);
	start = off;
	in = splice(files[f].fd, &off, pipefd[1], NULL, len, 0);
	if (in <= 0)
		die("splice", f);
	for (got = 0; got < in; got += n) {
		n = read(pipefd[0], buf + got, in - got);
		if (n <= 0)
			die("read from pipe", f);
	}
	verify(f, start, buf, in, "splice");
	close(pipefd[0]);
	close(pipefd[1]);
}

static void op_write(unsigned int f)
{
	uint64_t n = 1 + rnd(CHUNK_MAX / SECTOR / 4);
	uint64_t k = rnd(nsectors - n + 1);

	write_sectors(f, k, n);
}

static void op_mwrite(unsigned int f)
{
	size_t size = nsectors * SECTOR;
	uint64_t n = 1 + rnd(64), k = rnd(nsectors - n + 1), i;
	uint32_t g = ++files[f].next_gen;
	unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
				files[f].fd, 0);

	if (p == MAP_FAILED)
		die("mmap (shared, writable)", f);
	for (i = 0; i < n; i++) {
		sector_fill((uint64_t *)(p + (k + i) * SECTOR), f, k + i, g);
		files[f].gen[k + i] = g;
	}
	if (msync(p, size, MS_SYNC))
		die("msync", f);
	munmap(p, size);
}

static void op_truncate(unsigned int f)
{
	uint64_t k = rnd(nsectors), i;

	if (ftruncate(files[f].fd, k * SECTOR))
		die("ftruncate (down)", f);
	for (i = k; i < nsectors; i++)
		files[f].gen[i] = 0;
	/* Read what is left: the cut page must keep its head. */
	if (k) {
		static unsigned char buf[2 * 4096];
		uint64_t from = k * SECTOR > sizeof(buf) ? k * SECTOR - sizeof(buf) : 0;
		ssize_t got = pread(files[f].fd, buf, k * SECTOR - from, from);

		if (got != (ssize_t)(k * SECTOR - from))
			die("pread after truncate", f);
		verify(f, from, buf, got, "truncate");
	}
	if (ftruncate(files[f].fd, nsectors * SECTOR))
		die("ftruncate (up)", f);
}

static void run_op(enum op op, unsigned int f)
{
	switch (op) {
	case OP_READ: op_read(f); break;
	case OP_MMAP: op_mmap(f); break;
	case OP_SPLICE: op_splice(f); break;
	case OP_WRITE: op_write(f); break;
	case OP_MWRITE: op_mwrite(f); break;
	case OP_TRUNCATE: op_truncate(f); break;
	case OP_FSYNC:
		if (fsync(files[f].fd))
			die("fsync", f);
		break;
	case OP_DROP:
		errno = posix_fadvise(files[f].fd, 0, 0, POSIX_FADV_DONTNEED);
		if (errno)
			die("fadvise", f);
		break;
	default:
		break;
	}
	op_count[op]++;
}

static enum op pick_op(void)
{
	unsigned int total = 0, i;
	uint64_t r;

	for (i = 0; i < OP_NR; i++)
		total += op_weight[i];
	r = rnd(total);
	for (i = 0; i < OP_NR; i++) {
		if (r < op_weight[i])
			return i;
		r -= op_weight[i];
	}
	return OP_READ;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size = 4 << 20, seconds = 10, v, end, total = 0;
	unsigned int f, i;
	const char *dir;
	char path[4096];
	int c;

	nfiles = 8;
	seed = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (tool_parse_u64(optarg, &v) || v < 1 || v > 1024)
				goto bad;
			nfiles = v;
			break;
		case 's':
			if (tool_parse_size(optarg, &size) || size < 4096 ||
			    size % 4096 || size > (1ull << 32))
				goto bad;
			break;
		case 't':
			if (tool_parse_u64(optarg, &seconds) || seconds < 1)
				goto bad;
			break;
		case 'r':
			if (tool_parse_u64(optarg, &seed))
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc - 1)
		goto bad;
	dir = argv[optind];
	nsectors = size / SECTOR;
	rng_state = seed * 0x2545f4914f6cdd1dull;

	files = calloc(nfiles, sizeof(*files));
	if (!files)
		die("calloc", 0);
	for (f = 0; f < nfiles; f++) {
		snprintf(path, sizeof(path), "%s/filecheck.%u", dir, f);
		files[f].fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		files[f].gen = calloc(nsectors, sizeof(uint32_t));
		if (files[f].fd < 0 || !files[f].gen)
			die(path, f);
		for (v = 0; v < nsectors; v += CHUNK_MAX / SECTOR)
			write_sectors(f, v, nsectors - v < CHUNK_MAX / SECTOR ?
				      nsectors - v : CHUNK_MAX / SECTOR);
		if (fsync(files[f].fd))
			die("fsync", f);
	}
	printf("filecheck: %u files of %llu bytes in %s, %llu s\n", nfiles,
	       (unsigned long long)size, dir, (unsigned long long)seconds);
	fflush(stdout);

	end = tool_now_ns() + seconds * 1000000000ull;
	while (tool_now_ns() < end) {
		for (i = 0; i < 16; i++)
			run_op(pick_op(), rnd(nfiles));
	}

	for (i = 0; i < OP_NR; i++)
		total += op_count[i];
	printf("filecheck: %llu ops (", (unsigned long long)total);
	for (i = 0; i < OP_NR; i++)
		printf("%s%s %llu", i ? ", " : "", op_names[i],
		       (unsigned long long)op_count[i]);
	printf("), %llu MiB verified\n", (unsigned long long)(bytes_verified >> 20));
	printf("filecheck: %llu mismatches\n", (unsigned long long)mismatches);
	for (f = 0; f < nfiles; f++) {
		snprintf(path, sizeof(path), "%s/filecheck.%u", dir, f);
		close(files[f].fd);
		unlink(path);
	}
	return mismatches ? 1 : 0;
bad:
	usage(stderr);
	return 2;
}
