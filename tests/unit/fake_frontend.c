#include "fake_frontend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "usock.h"
#include "vhost_user.h"

#define HDR 12

/* ---- guest memory ------------------------------------------------------ */

void ff_mem_init(struct ff_mem *m, uint64_t gpa, uint64_t off, uint64_t bytes)
{
	memset(m, 0, sizeof(*m));
	m->fd = memfd_create("ff-guest-ram", MFD_CLOEXEC);
	assert_true(m->fd >= 0);
	m->file_bytes = off + bytes;
	assert_int_equal(ftruncate(m->fd, (off_t)m->file_bytes), 0);
	m->map = mmap(NULL, m->file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		      m->fd, 0);
	assert_true(m->map != MAP_FAILED);
	m->gpa = gpa;
	m->off = off;
	m->bytes = bytes;
}

void ff_mem_free(struct ff_mem *m)
{
	if (m->map)
		munmap(m->map, m->file_bytes);
	if (m->fd >= 0)
		close(m->fd);
	m->map = NULL;
	m->fd = -1;
}

void *ff_mem_ptr(const struct ff_mem *m, uint64_t gpa)
{
	assert_true(gpa >= m->gpa && gpa - m->gpa < m->bytes);
	return m->map + m->off + (gpa - m->gpa);
}

void ff_mem_touch(struct ff_mem *m)
{
	for (uint64_t o = 0; o < m->file_bytes; o += FF_PAGE)
		m->map[o] = 0x5a;
}

uint64_t ff_mem_allocated(const struct ff_mem *m)
{
	struct stat st;

	assert_int_equal(fstat(m->fd, &st), 0);
	return (uint64_t)st.st_blocks * 512u;
}

bool ff_mem_page_present(const struct ff_mem *m, uint64_t gpa)
{
	off_t o = (off_t)(m->off + (gpa - m->gpa));

	return lseek(m->fd, o, SEEK_DATA) == o;
}

/* ---- rings --------------------------------------------------------------- */

static uint64_t page_up(uint64_t v)
{
	return (v + FF_PAGE - 1) & ~(uint64_t)(FF_PAGE - 1);
}

void ff_ring_init(struct ff_ring *r, struct ff_mem *m, uint16_t num,
		  uint64_t gpa)
{
	memset(r, 0, sizeof(*r));
	r->m = m;
	r->num = num;
	r->desc_gpa = gpa;
	r->avail_gpa = gpa + page_up(16u * num);
	r->used_gpa = r->avail_gpa + page_up(6u + 2u * num);
	memset(ff_mem_ptr(m, r->desc_gpa), 0, 16u * num);
	memset(ff_mem_ptr(m, r->avail_gpa), 0, 6u + 2u * num);
	memset(ff_mem_ptr(m, r->used_gpa), 0, 6u + 8u * num);
}

struct vring_desc *ff_ring_desc(struct ff_ring *r, uint16_t i)
{
	return (struct vring_desc *)ff_mem_ptr(r->m, r->desc_gpa) + i;
}

struct vring_avail *ff_ring_avail(struct ff_ring *r)
{
	return ff_mem_ptr(r->m, r->avail_gpa);
}

struct vring_used *ff_ring_used(struct ff_ring *r)
{
	return ff_mem_ptr(r->m, r->used_gpa);
}

void ff_ring_set(struct ff_ring *r, uint16_t i, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next)
{
	struct vring_desc *d = ff_ring_desc(r, i);

	d->addr = addr;
	d->len = len;
	d->flags = flags;
	d->next = next;
}

uint16_t ff_ring_chain(struct ff_ring *r, unsigned n, const uint64_t *addr,
		       const uint32_t *len, const bool *write)
{
	uint16_t head = r->next_desc;

	assert_true(n > 0 && n <= r->num);
	for (unsigned k = 0; k < n; k++) {
		uint16_t i = r->next_desc;
		uint16_t next = (uint16_t)((i + 1) % r->num);
		uint16_t flags = (write && write[k]) ? VRING_DESC_F_WRITE : 0;

		if (k + 1 < n)
			flags |= VRING_DESC_F_NEXT;
		ff_ring_set(r, i, addr[k], len[k], flags,
			    k + 1 < n ? next : 0);
		r->next_desc = next;
	}
	return head;
}

void ff_ring_post(struct ff_ring *r, uint16_t head)
{
	struct vring_avail *a = ff_ring_avail(r);

	a->ring[r->avail_idx % r->num] = head;
	r->avail_idx++;
	__atomic_store_n(&a->idx, r->avail_idx, __ATOMIC_RELEASE);
}

void ff_ring_set_avail_idx(struct ff_ring *r, uint16_t idx)
{
	r->avail_idx = idx;
	__atomic_store_n(&ff_ring_avail(r)->idx, idx, __ATOMIC_RELEASE);
}

uint16_t ff_ring_used_idx(struct ff_ring *r)
{
	return __atomic_load_n(&ff_ring_used(r)->idx, __ATOMIC_ACQUIRE);
}

/* ---- the loop ------------------------------------------------------------ */

static void pump_stop(void *opaque, uint32_t events)
{
	loop_stop(opaque);
}

void ff_pump(struct loop *loop)
{
	/* An always-readable fd makes epoll_wait return at once with every
	 * event that is ready; its callback stops the loop after that batch. */
	int fd = eventfd(1, EFD_CLOEXEC);
	struct loop_watch *w = NULL;

	assert_true(fd >= 0);
	assert_int_equal(loop_watch_add(loop, fd, EPOLLIN, pump_stop, loop, &w), 0);
	assert_int_equal(loop_run(loop), 0);
	loop_watch_del(w);
	close(fd);
}

bool ff_pump_until(struct loop *loop, bool (*done)(void *), void *arg,
		   unsigned ms)
{
	uint64_t end = loop_now_ms() + ms;

	while (!done(arg)) {
		if (loop_now_ms() > end)
			return false;
		ff_pump(loop);
	}
	return true;
}

/* ---- the frontend --------------------------------------------------------- */

void ff_init(struct ff *f, struct loop *loop, int fd)
{
	f->fd = fd;
	f->loop = loop;
	f->backend_peer = -1;
}

int ff_connect(struct ff *f, struct loop *loop, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	ff_init(f, loop, fd);
	/* Let the backend accept before the test starts talking. */
	ff_pump(loop);
	return 0;
}

void ff_close(struct ff *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->backend_peer >= 0)
		close(f->backend_peer);
	f->fd = -1;
	f->backend_peer = -1;
}

int ff_send_raw(struct ff *f, const void *buf, size_t len, const int *fds,
		unsigned nfds)
{
	ssize_t n;

	assert_true(nfds <= 16);
	n = usock_send_fds(f->fd, buf, len, fds, nfds);
	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -EIO;
}

int ff_send(struct ff *f, uint32_t req, uint32_t flags, const void *payload,
	    uint32_t size, const int *fds, unsigned nfds)
{
	uint8_t buf[HDR + 8192];
	uint32_t h[3] = { req, flags, size };

	assert_true(size <= sizeof(buf) - HDR);
	memcpy(buf, h, HDR);
	if (size)
		memcpy(buf + HDR, payload, size);
	return ff_send_raw(f, buf, HDR + size, fds, nfds);
}

int ff_recv(struct ff *f, uint32_t req, void *out, size_t cap)
{
	uint8_t buf[HDR + VU_MAX_PAYLOAD];
	size_t have = 0, want = HDR;
	uint64_t end = loop_now_ms() + 1000;
	uint32_t h[3];

	while (have < want) {
		ssize_t n = recv(f->fd, buf + have, want - have, MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return -ECONNRESET;
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return -errno;
			if (loop_now_ms() > end)
				return -ETIMEDOUT;
			ff_pump(f->loop);
			continue;
		}
		have += (size_t)n;
		if (have == HDR && want == HDR) {
			memcpy(h, buf, HDR);
			if (h[2] > VU_MAX_PAYLOAD)
				return -EPROTO;
			want = HDR + h[2];
		}
	}
	memcpy(h, buf, HDR);
	if (h[0] != req || h[1] != (FF_VERSION | FF_F_REPLY) || h[2] > cap)
		return -EPROTO;
	memcpy(out, buf + HDR, h[2]);
	return (int)h[2];
}

int64_t ff_call(struct ff *f, uint32_t req, const void *payload, uint32_t size,
		const int *fds, unsigned nfds)
{
	uint64_t ack;
	int rc = ff_send(f, req, FF_VERSION | FF_F_NEED_REPLY, payload, size,
			 fds, nfds);

	if (rc < 0)
		return rc;
	rc = ff_recv(f, req, &ack, sizeof(ack));
	if (rc < 0)
		return rc;
	if (rc != 8)
		return -EPROTO;
	return (int64_t)ack;
}

int ff_get_u64(struct ff *f, uint32_t req, uint64_t *out)
{
	int rc = ff_send(f, req, FF_VERSION, NULL, 0, NULL, 0);

	if (rc < 0)
		return rc;
	rc = ff_recv(f, req, out, sizeof(*out));
	if (rc < 0)
		return rc;
	return rc == 8 ? 0 : -EPROTO;
}

bool ff_wait_closed(struct ff *f)
{
	uint64_t end = loop_now_ms() + 1000;
	uint8_t scratch[4096];

	for (;;) {
		ssize_t n = recv(f->fd, scratch, sizeof(scratch), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n > 0)
			continue;
		if (errno != EAGAIN && errno != EINTR)
			return false;
		if (loop_now_ms() > end)
			return false;
		ff_pump(f->loop);
	}
}

int64_t ff_vring_state(struct ff *f, uint32_t req, uint32_t index,
		       uint32_t num)
{
	uint32_t st[2] = { index, num };

	return ff_call(f, req, st, sizeof(st), NULL, 0);
}

int64_t ff_vring_addr(struct ff *f, uint32_t index, uint64_t desc,
		      uint64_t used, uint64_t avail)
{
	uint8_t p[40] = { 0 };
	uint64_t a[4] = { desc, used, avail, 0 };

	memcpy(p, &index, 4);
	memcpy(p + 8, a, sizeof(a));
	return ff_call(f, VU_SET_VRING_ADDR, p, sizeof(p), NULL, 0);
}

int64_t ff_vring_fd(struct ff *f, uint32_t req, uint32_t index, int fd)
{
	uint64_t v = index | (fd < 0 ? FF_NOFD : 0);

	return ff_call(f, req, &v, sizeof(v), fd < 0 ? NULL : &fd,
		       fd < 0 ? 0 : 1);
}

int64_t ff_mem_table(struct ff *f, const struct ff_mem *m)
{
	uint8_t p[8 + 32] = { 0 };
	uint32_t n = 1;
	uint64_t r[4] = { m->gpa, m->bytes, m->gpa, m->off };

	memcpy(p, &n, 4);
	memcpy(p + 8, r, sizeof(r));
	return ff_call(f, VU_SET_MEM_TABLE, p, sizeof(p), &m->fd, 1);
}

void ff_handshake(struct ff *f, const struct ff_mem *m, uint64_t features,
		  struct ff_ring *rings, unsigned nrings, const int *kick_fds,
		  const int *call_fds)
{
	ff_handshake_cfg(f, m, features, 16, rings, nrings, kick_fds, call_fds);
}

void ff_handshake_cfg(struct ff *f, const struct ff_mem *m, uint64_t features,
		      uint32_t cfg_len, struct ff_ring *rings, unsigned nrings,
		      const int *kick_fds, const int *call_fds)
{
	uint64_t v, pf;
	uint8_t cfg[12 + 256] = { 0 }, got[sizeof(cfg)];
	int sp[2];

	assert_int_equal(ff_send(f, VU_SET_OWNER, FF_VERSION, NULL, 0, NULL, 0), 0);
	assert_int_equal(ff_get_u64(f, VU_GET_FEATURES, &v), 0);
	assert_int_equal(v & features, features);
	assert_int_equal(ff_get_u64(f, VU_GET_PROTOCOL_FEATURES, &pf), 0);
	pf &= (1ull << VU_PF_REPLY_ACK) | (1ull << VU_PF_BACKEND_REQ) |
	      (1ull << VU_PF_CONFIG);
	assert_int_equal(pf, (1ull << VU_PF_REPLY_ACK) |
			     (1ull << VU_PF_BACKEND_REQ) |
			     (1ull << VU_PF_CONFIG));
	assert_int_equal(ff_call(f, VU_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0), 0);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(ff_call(f, VU_SET_BACKEND_REQ_FD, NULL, 0, &sp[1], 1), 0);
	close(sp[1]);
	if (f->backend_peer >= 0)
		close(f->backend_peer);
	f->backend_peer = sp[0];

	memcpy(cfg + 4, &cfg_len, 4);
	assert_true(cfg_len <= 256);
	assert_int_equal(ff_send(f, VU_GET_CONFIG, FF_VERSION, cfg, 12 + cfg_len,
				 NULL, 0), 0);
	assert_int_equal(ff_recv(f, VU_GET_CONFIG, got, sizeof(got)),
			 (int)(12 + cfg_len));

	assert_int_equal(ff_call(f, VU_SET_FEATURES, &features, 8, NULL, 0), 0);
	assert_int_equal(ff_mem_table(f, m), 0);
	for (unsigned q = 0; q < nrings; q++) {
		struct ff_ring *r = &rings[q];

		assert_int_equal(ff_vring_fd(f, VU_SET_VRING_CALL, q, call_fds[q]), 0);
		assert_int_equal(ff_vring_state(f, VU_SET_VRING_NUM, q, r->num), 0);
		assert_int_equal(ff_vring_state(f, VU_SET_VRING_BASE, q, 0), 0);
		assert_int_equal(ff_vring_addr(f, q, r->desc_gpa, r->used_gpa,
					       r->avail_gpa), 0);
	}
	for (unsigned q = 0; q < nrings; q++) {
		assert_int_equal(ff_vring_fd(f, VU_SET_VRING_KICK, q, kick_fds[q]), 0);
		assert_int_equal(ff_vring_state(f, VU_SET_VRING_ENABLE, q, 1), 0);
	}
}

unsigned ff_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own fd */
}
