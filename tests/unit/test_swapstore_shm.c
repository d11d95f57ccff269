/*
 * swapstore across a SIGKILL: a child process adopts the tmem memfd, the
 * swap map memfd and the backing file, writes pages and tells the parent
 * through a pipe before (BEGIN) and after (DONE) each request; the parent
 * kills it at a random moment, adopts the same fds itself and checks:
 *   - every page whose last request was DONE reads back exactly;
 *   - the page(s) of the request in flight read the old or the new
 *     content, or -EIO (a write that was falling back to the file), never
 *     anything else;
 *   - tmem_check() holds and the report shows no damaged record.
 * The kill lands anywhere: in the child's adoption, in tmem's put, between
 * the put and the map update, in a file write.  A small persistent quota
 * sends part of the traffic to the backing file.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "swapstore.h"
#include "tmem.h"

#define PG		TMEM_PAGE_SIZE
#define NPAGES		512u
#define CAP		((uint64_t)NPAGES * PG)
#define CLIENT		9u
#define QUOTA		(NPAGES / 2)	/* the rest goes to the file */
#define ROUNDS		150u
#define MAX_RUN		4u

enum { MSG_BEGIN = 1, MSG_DONE = 2 };

struct msg {
	uint32_t type;		/* MSG_* */
	uint32_t page;		/* first page */
	uint32_t n;		/* pages */
	uint32_t version;	/* content version; 0: zeros */
};

/* Content of @page at @version: zeros, compressible text or noise. */
static void content(uint8_t *p, uint32_t page, uint32_t version)
{
	uint64_t x = ((uint64_t)page << 32 | version) * 0x9e3779b97f4a7c15ull;
	size_t i;

	if (version == 0) {
		memset(p, 0, PG);
		return;
	}
	if (version % 3 == 0) {
		for (i = 0; i < PG; i++)
			p[i] = (uint8_t)("swap survives kill -9 "[i % 22]);
		memcpy(p, &page, 4);
		memcpy(p + 4, &version, 4);
		return;
	}
	for (i = 0; i < PG; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
}

struct fds {
	int tmem, map, file;
	char dir[64], path[96];
};

static void adopt(const struct fds *f, struct tmem_store **s,
		  struct blkback *bb, struct tmem_shm_report *rep)
{
	assert_int_equal(tmem_store_adopt_shm(f->tmem, NULL, s, rep), 0);
	assert_int_equal(swapstore_adopt(*s, CLIENT, f->map, f->file, f->path,
					 bb), 0);
}

static void send_msg(int fd, uint32_t type, uint32_t page, uint32_t n,
		     uint32_t version)
{
	struct msg m = { type, page, n, version };

	if (write(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		_exit(3);
}

/* The child: write forever (until killed).  Versions are unique per
 * round, so old and new content can always be told apart. */
static void child(const struct fds *f, int wfd, unsigned round)
{
	static uint8_t buf[MAX_RUN * PG];
	struct tmem_store *s;
	struct blkback bb;
	uint64_t r = 0x1234567ull + round * 7919u;
	uint32_t version = round << 20;

	if (tmem_store_adopt_shm(f->tmem, NULL, &s, NULL) ||
	    swapstore_adopt(s, CLIENT, f->map, f->file, f->path, &bb))
		_exit(2);
	for (;;) {
		uint32_t page, n, i, v;
		struct iovec iov;
		int rc;

		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		n = 1 + (uint32_t)(r % MAX_RUN);
		page = (uint32_t)(r >> 8) % (NPAGES - n + 1);
		v = ++version;
		if ((r >> 40) % 16 == 0)
			v = 0;		/* zeros: discard */
		send_msg(wfd, MSG_BEGIN, page, n, v);
		if (v == 0) {
			rc = bb.ops->discard(bb.be, (uint64_t)page * PG,
					     (uint64_t)n * PG);
		} else {
			for (i = 0; i < n; i++)
				content(buf + i * PG, page + i, v);
			iov.iov_base = buf;
			iov.iov_len = (size_t)n * PG;
			rc = bb.ops->write(bb.be, (uint64_t)page * PG, &iov, 1);
		}
		if (rc)
			_exit(4);
		send_msg(wfd, MSG_DONE, page, n, v);
	}
}

/* What the parent knows of each page. */
enum { K_SURE, K_EITHER, K_LOST };

struct model {
	uint8_t kind[NPAGES];		/* K_* */
	uint32_t v[NPAGES];		/* committed version (K_SURE, K_EITHER) */
	uint32_t alt[NPAGES];		/* in-flight version (K_EITHER) */
};

static void apply(struct model *m, const struct msg *msg)
{
	uint32_t i;

	for (i = msg->page; i < msg->page + msg->n; i++) {
		if (msg->type == MSG_BEGIN) {
			/* Old content of a LOST page: none (reads -EIO). */
			if (m->kind[i] == K_LOST)
				m->v[i] = UINT32_MAX;
			m->alt[i] = msg->version;
			m->kind[i] = K_EITHER;
		} else {
			m->v[i] = msg->version;
			m->kind[i] = K_SURE;
		}
	}
}

/* Read everything back; the model learns what the in-flight pages hold. */
static void verify(struct model *m, const struct blkback *bb,
		   unsigned *either_old, unsigned *either_new,
		   unsigned *either_eio)
{
	static uint8_t got[PG], want[PG];
	struct iovec iov = { got, PG };
	uint32_t p;

	for (p = 0; p < NPAGES; p++) {
		int rc = bb->ops->read(bb->be, (uint64_t)p * PG, &iov, 1);

		switch (m->kind[p]) {
		case K_SURE:
			assert_int_equal(rc, 0);
			content(want, p, m->v[p]);
			assert_memory_equal(got, want, PG);
			break;
		case K_LOST:
			assert_int_equal(rc, -EIO);
			break;
		case K_EITHER:
			if (rc == -EIO) {
				m->kind[p] = K_LOST;
				(*either_eio)++;
				break;
			}
			assert_int_equal(rc, 0);
			content(want, p, m->alt[p]);
			if (memcmp(got, want, PG) == 0) {
				m->v[p] = m->alt[p];
				m->kind[p] = K_SURE;
				(*either_new)++;
				break;
			}
			/* Not the new content: must be the old one. */
			assert_true(m->v[p] != UINT32_MAX);
			content(want, p, m->v[p]);
			assert_memory_equal(got, want, PG);
			m->kind[p] = K_SURE;
			(*either_old)++;
			break;
		}
	}
}

static void drain(int rfd, struct model *m, unsigned *msgs)
{
	struct msg buf[256];
	ssize_t n, i;

	while ((n = read(rfd, buf, sizeof(buf))) > 0) {
		assert_int_equal(n % (ssize_t)sizeof(buf[0]), 0);
		for (i = 0; i < n / (ssize_t)sizeof(buf[0]); i++)
			apply(m, &buf[i]);
		*msgs += (unsigned)(n / (ssize_t)sizeof(buf[0]));
	}
}

static void sigkill_never_loses_a_completed_write(void **state)
{
	struct tmem_client_params cp = { .max_persistent_pages = QUOTA };
	unsigned either_old = 0, either_new = 0, either_eio = 0, msgs = 0;
	struct tmem_shm_report rep;
	struct tmem_store *s;
	static struct model m;
	struct blkback bb;
	struct fds f;
	unsigned round, i;
	int mfd, ffd;

	(void)state;
	for (i = 0; i < NPAGES; i++)
		m.kind[i] = K_SURE;	/* version 0: zeros */
	strcpy(f.dir, "/tmp/ebb-swapshm-XXXXXX");
	assert_non_null(mkdtemp(f.dir));
	snprintf(f.path, sizeof(f.path), "%s/swap", f.dir);

	assert_int_equal(tmem_store_new_shm(NULL, 256ull << 20, &s), 0);
	assert_int_equal(tmem_client_new(s, CLIENT, "guest", &cp), 0);
	assert_int_equal(swapstore_new(s, CLIENT, CAP, f.path, &bb), 0);
	assert_int_equal(swapstore_fds(&bb, &mfd, &ffd), 0);
	f.tmem = dup(tmem_store_shm_fd(s));
	f.map = dup(mfd);
	f.file = dup(ffd);
	assert_true(f.tmem >= 0 && f.map >= 0 && f.file >= 0);
	swapstore_release(&bb);
	tmem_store_free(s);

	for (round = 1; round <= ROUNDS; round++) {
		struct timespec ts = { 0, (long)(rand() % 30000) * 1000 };
		int pfd[2];
		pid_t pid;
		int status;

		assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			child(&f, pfd[1], round);
		}
		close(pfd[1]);
		/* Keep the pipe drained while the child runs, so that it
		 * is never stuck on a full pipe when the kill comes. */
		fcntl(pfd[0], F_SETFL, O_NONBLOCK);
		{
			struct timespec t0, now;

			clock_gettime(CLOCK_MONOTONIC, &t0);
			do {
				struct pollfd pf = { pfd[0], POLLIN, 0 };

				(void)poll(&pf, 1, 1);
				drain(pfd[0], &m, &msgs);
				clock_gettime(CLOCK_MONOTONIC, &now);
			} while ((now.tv_sec - t0.tv_sec) * 1000000000L +
				 (now.tv_nsec - t0.tv_nsec) < ts.tv_nsec);
		}
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* Killed, not failed on its own. */
		assert_true(WIFSIGNALED(status));
		fcntl(pfd[0], F_SETFL, 0);
		drain(pfd[0], &m, &msgs);
		close(pfd[0]);

		adopt(&f, &s, &bb, &rep);
		assert_int_equal(rep.bad_entries, 0);
		assert_int_equal(rep.bad_clients, 0);
		assert_int_equal(rep.bad_chunks, 0);
		assert_int_equal(tmem_check(s), 0);
		verify(&m, &bb, &either_old, &either_new, &either_eio);
		{
			struct swapstore_stats st;

			assert_int_equal(swapstore_stats(swapstore_from(&bb),
							 &st), 0);
			assert_int_equal(st.adopt_lost_pages, 0);
		}
		swapstore_release(&bb);
		tmem_store_free(s);
	}
	print_message("%u rounds, %u messages; in flight at the kill: %u old, "
		      "%u new, %u -EIO\n", ROUNDS, msgs, either_old,
		      either_new, either_eio);
	assert_true(msgs > ROUNDS);

	/* The device goes for good: file unlinked. */
	adopt(&f, &s, &bb, &rep);
	bb.ops->destroy(bb.be);
	assert_int_equal(access(f.path, F_OK), -1);
	tmem_store_free(s);
	close(f.tmem);
	close(f.map);
	close(f.file);
	rmdir(f.dir);
}

static void adopt_checks_its_inputs(void **state)
{
	struct tmem_store *s, *heap;
	struct blkback bb, bb2;
	char dir[] = "/tmp/ebb-swapshm-XXXXXX", path[64];
	int mfd, ffd, junk;
	uint8_t b = 0xff;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/swap", dir);
	assert_int_equal(tmem_store_new_shm(NULL, 0, &s), 0);
	assert_int_equal(tmem_client_new(s, CLIENT, NULL, NULL), 0);
	assert_int_equal(tmem_client_new(s, CLIENT + 1, NULL, NULL), 0);
	assert_int_equal(swapstore_new(s, CLIENT, CAP, path, &bb), 0);
	assert_int_equal(swapstore_fds(&bb, &mfd, &ffd), 0);
	assert_int_equal(swapstore_fds(NULL, &mfd, &ffd), -EINVAL);

	assert_int_equal(swapstore_adopt(s, CLIENT, -1, ffd, path, &bb2), -EINVAL);
	assert_int_equal(swapstore_adopt(s, CLIENT + 1, mfd, ffd, path, &bb2), -ESRCH);
	/* The data file is no map. */
	assert_int_equal(swapstore_adopt(s, CLIENT, ffd, ffd, path, &bb2), -EUCLEAN);
	/* A heap store never has the pool. */
	assert_int_equal(tmem_store_new(NULL, &heap), 0);
	assert_int_equal(tmem_client_new(heap, CLIENT, NULL, NULL), 0);
	assert_int_equal(swapstore_adopt(heap, CLIENT, mfd, ffd, path, &bb2), -EBADF);
	tmem_store_free(heap);
	/* A damaged header. */
	junk = memfd_create("junk", 0);
	assert_true(junk >= 0);
	{
		static uint8_t img[4096 + NPAGES / 4];

		assert_int_equal(pread(mfd, img, sizeof(img), 0), (ssize_t)sizeof(img));
		img[20] ^= b;
		assert_int_equal(pwrite(junk, img, sizeof(img), 0), (ssize_t)sizeof(img));
	}
	assert_int_equal(swapstore_adopt(s, CLIENT, junk, ffd, path, &bb2), -EUCLEAN);
	close(junk);
	bb.ops->destroy(bb.be);
	tmem_store_free(s);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(adopt_checks_its_inputs),
		cmocka_unit_test(sigkill_never_loses_a_completed_write),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
