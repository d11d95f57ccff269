/*
 * staterec: ebbd's records on disk (see staterec.h for the format and the
 * contract, docs/restart.md for why they hold what they hold).
 *
 * The encoded payloads are plain structs of fixed-width fields laid out
 * with no padding (checked at compile time below), copied in and out with
 * memcpy so nothing depends on the buffer's alignment.
 */
#include "staterec.h"

#include "pio.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

static const char sr_magic[8] = { 'E', 'B', 'B', 'S', 'T', 'A', 'T', 'E' };

/* Bounds a field must keep.  Generous on purpose: they catch garbage, not
 * policy (ebbd's own limits are checked when a guest is launched). */
#define SR_MEM_MIN	(32ull << 20)	/* guest_mem_valid()'s floor */
#define SR_MEM_MAX	(1ull << 42)	/* 4 TiB of guest memory */
#define SR_SWAP_MAX	(1ull << 44)	/* 16 TiB of swap device */
#define SR_ID_MAX	(1ull << 62)
#define SR_PID_MAX	4194304		/* the kernel's PID_MAX_LIMIT */

struct sr_header {
	char magic[8];
	uint32_t version;
	uint32_t kind;
	uint32_t length;
	uint32_t reserved;
	uint64_t checksum;
};
_Static_assert(sizeof(struct sr_header) == 32, "header layout");
_Static_assert(offsetof(struct sr_header, checksum) == 24, "header layout");

/* Payload offsets as in the table of docs/restart.md. */
struct sr_guest_disk {
	char name[STATEREC_NAME_MAX];
	uint32_t state;
	uint32_t flags;
	uint64_t mem_bytes;
	uint64_t min_bytes;
	uint64_t claim_bytes;
	uint64_t balloon_target_bytes;
	uint64_t swap_bytes;
	uint64_t swap_quota_bytes;
	uint64_t pool_id;
	int32_t pid;
	uint32_t client_id;
	uint64_t start_ticks;
	char cmdline[STATEREC_STR_MAX];
	char disk[STATEREC_STR_MAX];
};
_Static_assert(sizeof(struct sr_guest_disk) == 624, "guest payload layout");
_Static_assert(offsetof(struct sr_guest_disk, pid) == 96, "guest payload");
_Static_assert(offsetof(struct sr_guest_disk, cmdline) == 112, "guest payload");

/* Version 2: version 1's payload, then the policy settings. */
struct sr_guest_disk2 {
	struct sr_guest_disk v1;
	uint32_t policy_flags;
	uint32_t shares;
	uint64_t policy_min_bytes;
	uint64_t policy_max_bytes;
};
_Static_assert(sizeof(struct sr_guest_disk2) == 648, "guest payload v2");

struct sr_pool_disk {
	uint64_t budget_bytes;
	uint64_t next_id;
	uint64_t claim_bytes;
	uint32_t nguests;
	uint32_t reserved;
};
_Static_assert(sizeof(struct sr_pool_disk) == 32, "pool payload layout");

size_t staterec_guest_size(void)
{
	return sizeof(struct sr_header) + sizeof(struct sr_guest_disk2);
}

size_t staterec_pool_size(void)
{
	return sizeof(struct sr_header) + sizeof(struct sr_pool_disk);
}

const char *staterec_state_name(enum staterec_state s)
{
	static const char *const names[] = {
		[SR_STARTING] = "starting", [SR_RUNNING] = "running",
		[SR_STOPPING] = "stopping", [SR_STOPPED] = "stopped",
		[SR_FAILED] = "failed",
	};

	if ((unsigned)s >= sizeof(names) / sizeof(names[0]) || !names[s])
		return "unknown";
	return names[s];
}

static int bad(char *why, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int bad(char *why, const char *fmt, ...)
{
	va_list ap;

	if (why) {
		va_start(ap, fmt);
		vsnprintf(why, STATEREC_WHY_MAX, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* ---- checks shared by encode and decode ----------------------------- */

/* The same rule as guest_name_valid(): also a safe file name. */
static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* A fixed field holds a string: terminated inside it, printable, and
 * zero after the terminator (one encoding per value, so the checksum
 * covers no stray bytes).  Its length in *@n. */
static bool field_str_ok(const char *f, size_t size, size_t *n)
{
	const char *nul = memchr(f, '\0', size);

	if (!nul)
		return false;
	*n = (size_t)(nul - f);
	for (size_t i = 0; i < *n; i++)
		if ((unsigned char)f[i] < 0x20 || (unsigned char)f[i] > 0x7e)
			return false;
	for (size_t i = *n; i < size; i++)
		if (f[i])
			return false;
	return true;
}

/* Every field of a guest record in range; the first that is not goes to
 * @why.  Used on the way in and the way out. */
static int check_guest(const struct sr_guest_disk *p, char *why)
{
	size_t n;

	if (!field_str_ok(p->name, sizeof(p->name), &n) ||
	    !name_ok(p->name, n))
		return bad(why, "name is not a valid guest name");
	if (p->state < SR_STARTING || p->state > SR_FAILED)
		return bad(why, "unknown guest state %u", p->state);
	if (p->flags & ~SR_F_ALL)
		return bad(why, "unknown flags 0x%x", p->flags & ~SR_F_ALL);
	if (p->mem_bytes < SR_MEM_MIN || p->mem_bytes > SR_MEM_MAX ||
	    p->mem_bytes % (1ull << 20))
		return bad(why, "mem %llu bytes out of range",
			   (unsigned long long)p->mem_bytes);
	if (p->min_bytes > p->mem_bytes)
		return bad(why, "min %llu above mem",
			   (unsigned long long)p->min_bytes);
	if (p->claim_bytes > p->mem_bytes)
		return bad(why, "claim %llu above mem",
			   (unsigned long long)p->claim_bytes);
	if (p->balloon_target_bytes > p->mem_bytes)
		return bad(why, "balloon target %llu above mem",
			   (unsigned long long)p->balloon_target_bytes);
	if (p->swap_bytes > SR_SWAP_MAX || p->swap_quota_bytes > SR_SWAP_MAX)
		return bad(why, "swap size or quota out of range");
	if (p->pool_id == 0 || p->pool_id > SR_ID_MAX)
		return bad(why, "pool id %llu out of range",
			   (unsigned long long)p->pool_id);
	if (p->client_id > STATEREC_CLIENT_MAX)
		return bad(why, "client id %u out of range", p->client_id);
	if (p->flags & SR_F_EXTERNAL) {
		if (p->pid != 0 || p->start_ticks != 0)
			return bad(why, "external guest with a pid");
	} else if (p->pid <= 1 || p->pid > SR_PID_MAX) {
		return bad(why, "pid %d out of range", (int)p->pid);
	} else if (p->start_ticks == 0) {
		return bad(why, "pid %d without a start time", (int)p->pid);
	}
	if (!field_str_ok(p->cmdline, sizeof(p->cmdline), &n))
		return bad(why, "cmdline is not a terminated printable string");
	if (!field_str_ok(p->disk, sizeof(p->disk), &n))
		return bad(why, "disk is not a terminated printable string");
	if (n && p->disk[0] != '/')
		return bad(why, "disk path is not absolute");
	return 0;
}

static int check_policy(const struct sr_guest_disk2 *p, char *why)
{
	if (p->policy_flags & ~SR_P_ALL)
		return bad(why, "unknown policy flags 0x%x",
			   p->policy_flags & ~SR_P_ALL);
	if (!(p->policy_flags & SR_P_SET)) {
		if (p->policy_flags || p->shares || p->policy_min_bytes ||
		    p->policy_max_bytes)
			return bad(why, "policy settings without their flag");
		return 0;
	}
	if (p->shares < 1 || p->shares > SR_SHARES_MAX)
		return bad(why, "shares %u out of range", p->shares);
	if (p->policy_max_bytes > p->v1.mem_bytes)
		return bad(why, "policy max %llu above mem",
			   (unsigned long long)p->policy_max_bytes);
	if (p->policy_min_bytes > p->v1.mem_bytes)
		return bad(why, "policy min %llu above mem",
			   (unsigned long long)p->policy_min_bytes);
	return 0;
}

static int check_pool(const struct sr_pool_disk *p, char *why)
{
	if (p->budget_bytes == 0 || p->budget_bytes > (1ull << 50))
		return bad(why, "budget %llu out of range",
			   (unsigned long long)p->budget_bytes);
	if (p->next_id == 0 || p->next_id > SR_ID_MAX)
		return bad(why, "next id out of range");
	if (p->nguests > 4096)
		return bad(why, "%u guests out of range", p->nguests);
	if (p->claim_bytes > (uint64_t)p->nguests * SR_MEM_MAX)
		return bad(why, "claims %llu out of range",
			   (unsigned long long)p->claim_bytes);
	if (p->reserved)
		return bad(why, "reserved field not zero");
	return 0;
}

/* ---- framing --------------------------------------------------------- */

static uint64_t checksum(const unsigned char *buf, size_t len)
{
	unsigned char copy[sizeof(struct sr_header) + sizeof(struct sr_guest_disk2)];
	const size_t off = offsetof(struct sr_header, checksum);

	/* The checksum field counts as zero, so the sum covers the whole
	 * record including the length and version it is checked against.
	 * Callers have checked @len against the kind's size already. */
	assert(len >= sizeof(struct sr_header) && len <= sizeof(copy));
	memcpy(copy, buf, len);
	memset(copy + off, 0, sizeof(uint64_t));
	return XXH3_64bits(copy, len);
}

static int frame(enum staterec_kind kind, const void *payload, size_t plen,
		 void *buf, size_t len)
{
	struct sr_header h = { .version = STATEREC_VERSION, .kind = kind };
	size_t total = sizeof(h) + plen;

	if (len < total)
		return -ENOSPC;
	memcpy(h.magic, sr_magic, sizeof(h.magic));
	h.length = (uint32_t)total;
	memcpy(buf, &h, sizeof(h));
	memcpy((char *)buf + sizeof(h), payload, plen);
	h.checksum = checksum(buf, total);
	memcpy((char *)buf + offsetof(struct sr_header, checksum), &h.checksum,
	       sizeof(h.checksum));
	return 0;
}

/* Check the header of @len bytes against @kind and copy the payload out;
 * @plen[v] is the payload's size in version v (0: no such version), the
 * version found goes to *@version.  Order matters: the length before the
 * checksum (which reads it all), the version before the payload (whose
 * layout it decides). */
static int unframe(const void *buf, size_t len, enum staterec_kind kind,
		   void *payload, const size_t plen[STATEREC_VERSION + 1],
		   uint32_t *version, char *why)
{
	struct sr_header h;
	size_t n;

	if (len < sizeof(h))
		return bad(why, "truncated: %zu bytes, a header is %zu", len,
			   sizeof(h));
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, sr_magic, sizeof(sr_magic)))
		return bad(why, "not an ebbd state record (bad magic)");
	if (h.version < STATEREC_VERSION_MIN || h.version > STATEREC_VERSION)
		return bad(why, "version %u, this ebbd reads %u to %u",
			   h.version, STATEREC_VERSION_MIN, STATEREC_VERSION);
	if (h.kind != kind)
		return bad(why, "kind %u, expected %u", h.kind, kind);
	n = plen[h.version];
	if (len != sizeof(h) + n || h.length != len)
		return bad(why, "truncated or extended: %zu bytes, header says "
			   "%u, expected %zu", len, h.length, sizeof(h) + n);
	if (h.reserved)
		return bad(why, "reserved header field not zero");
	if (checksum(buf, len) != h.checksum)
		return bad(why, "checksum mismatch");
	memcpy(payload, (const char *)buf + sizeof(h), n);
	*version = h.version;
	return 0;
}

/* ---- encode / decode --------------------------------------------------- */

static void copy_str(char *dst, size_t size, const char *src)
{
	memset(dst, 0, size);
	snprintf(dst, size, "%s", src);
}

int staterec_guest_encode(const struct staterec_guest *g, void *buf,
			  size_t len)
{
	struct sr_guest_disk2 p2;
	struct sr_guest_disk *p = &p2.v1;

	memset(&p2, 0, sizeof(p2));
	if (strnlen(g->name, sizeof(g->name)) >= sizeof(g->name) ||
	    strnlen(g->cmdline, sizeof(g->cmdline)) >= sizeof(g->cmdline) ||
	    strnlen(g->disk, sizeof(g->disk)) >= sizeof(g->disk))
		return -EINVAL;
	copy_str(p->name, sizeof(p->name), g->name);
	p->state = (uint32_t)g->state;
	p->flags = g->flags;
	p->mem_bytes = g->mem_bytes;
	p->min_bytes = g->min_bytes;
	p->claim_bytes = g->claim_bytes;
	p->balloon_target_bytes = g->balloon_target_bytes;
	p->swap_bytes = g->swap_bytes;
	p->swap_quota_bytes = g->swap_quota_bytes;
	p->pool_id = g->pool_id;
	p->pid = g->pid;
	p->client_id = g->client_id;
	p->start_ticks = g->start_ticks;
	copy_str(p->cmdline, sizeof(p->cmdline), g->cmdline);
	copy_str(p->disk, sizeof(p->disk), g->disk);
	p2.policy_flags = g->policy_flags;
	p2.shares = g->shares;
	p2.policy_min_bytes = g->policy_min_bytes;
	p2.policy_max_bytes = g->policy_max_bytes;
	if (check_guest(p, NULL) < 0 || check_policy(&p2, NULL) < 0)
		return -EINVAL;
	return frame(STATEREC_GUEST, &p2, sizeof(p2), buf, len);
}

static const size_t guest_plen[STATEREC_VERSION + 1] = {
	[1] = sizeof(struct sr_guest_disk),
	[2] = sizeof(struct sr_guest_disk2),
};
static const size_t pool_plen[STATEREC_VERSION + 1] = {
	[1] = sizeof(struct sr_pool_disk),
	[2] = sizeof(struct sr_pool_disk),
};

int staterec_guest_decode(const void *buf, size_t len,
			  struct staterec_guest *out, char *why)
{
	struct sr_guest_disk2 p2 = { 0 };	/* version 1: policy unset */
	const struct sr_guest_disk *p = &p2.v1;
	uint32_t version;
	int rc = unframe(buf, len, STATEREC_GUEST, &p2, guest_plen, &version,
			 why);

	if (rc < 0 || (rc = check_guest(p, why)) < 0 ||
	    (rc = check_policy(&p2, why)) < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	/* Checked above: each string ends inside its field. */
	memcpy(out->name, p->name, sizeof(out->name));
	out->state = (enum staterec_state)p->state;
	out->flags = p->flags;
	out->mem_bytes = p->mem_bytes;
	out->min_bytes = p->min_bytes;
	out->claim_bytes = p->claim_bytes;
	out->balloon_target_bytes = p->balloon_target_bytes;
	out->swap_bytes = p->swap_bytes;
	out->swap_quota_bytes = p->swap_quota_bytes;
	out->pool_id = p->pool_id;
	out->pid = p->pid;
	out->client_id = p->client_id;
	out->start_ticks = p->start_ticks;
	memcpy(out->cmdline, p->cmdline, sizeof(out->cmdline));
	memcpy(out->disk, p->disk, sizeof(out->disk));
	out->policy_flags = p2.policy_flags;
	out->shares = p2.shares;
	out->policy_min_bytes = p2.policy_min_bytes;
	out->policy_max_bytes = p2.policy_max_bytes;
	return 0;
}

int staterec_pool_encode(const struct staterec_pool *pl, void *buf, size_t len)
{
	struct sr_pool_disk p = {
		.budget_bytes = pl->budget_bytes,
		.next_id = pl->next_id,
		.claim_bytes = pl->claim_bytes,
		.nguests = pl->nguests,
	};

	if (check_pool(&p, NULL) < 0)
		return -EINVAL;
	return frame(STATEREC_POOL, &p, sizeof(p), buf, len);
}

int staterec_pool_decode(const void *buf, size_t len,
			 struct staterec_pool *out, char *why)
{
	struct sr_pool_disk p;
	uint32_t version;
	int rc = unframe(buf, len, STATEREC_POOL, &p, pool_plen, &version, why);

	if (rc < 0 || (rc = check_pool(&p, why)) < 0)
		return rc;
	out->budget_bytes = p.budget_bytes;
	out->next_id = p.next_id;
	out->claim_bytes = p.claim_bytes;
	out->nguests = p.nguests;
	return 0;
}

/* ---- files ------------------------------------------------------------ */

/*
 * 1. write the whole record to <file>.tmp (O_TRUNC: a temp file a crash
 *    left behind is simply overwritten), 2. fsync it, 3. rename it over
 *    <file>, 4. fsync the directory so the rename itself is durable.
 * A failure before 3 removes the temp file and leaves <file> as it was.
 */
int staterec_write_atomic(const char *dir, const char *file, const void *buf,
			  size_t len)
{
	char tmp[512], dst[512];
	size_t done;
	int fd, dfd, rc;

	if (snprintf(dst, sizeof(dst), "%s/%s", dir, file) >= (int)sizeof(dst) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, file) >=
		    (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		return -errno;
	/* pwrite at 0 of a fresh file: the same as writing it out. */
	rc = pio_full(true, fd, (uint8_t *)buf, len, 0, &done);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, dst) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return rc;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	rc = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	return rc;
}

/* Read at most @max bytes of @path into @buf; the count in *@n.  One byte
 * more than any record is asked for, so an extended file shows. */
static int read_file(const char *path, void *buf, size_t max, size_t *n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got < max) {
		ssize_t r = read(fd, (char *)buf + got, max - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int rc = -errno;

			close(fd);
			return rc;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*n = got;
	return 0;
}

static int guests_dir(const char *state_dir, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/guests", state_dir) >= (int)len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int staterec_guest_save(const char *state_dir, const struct staterec_guest *g)
{
	unsigned char buf[sizeof(struct sr_header) + sizeof(struct sr_guest_disk2)];
	char dir[512], file[STATEREC_NAME_MAX + 8];
	int rc;

	if ((rc = staterec_guest_encode(g, buf, sizeof(buf))) < 0 ||
	    (rc = guests_dir(state_dir, dir, sizeof(dir))) < 0)
		return rc;
	snprintf(file, sizeof(file), "%s.rec", g->name);
	return staterec_write_atomic(dir, file, buf, sizeof(buf));
}

int staterec_guest_load(const char *path, struct staterec_guest *out,
			char *why)
{
	unsigned char buf[sizeof(struct sr_header) + sizeof(struct sr_guest_disk2) + 1];
	size_t n;
	int rc = read_file(path, buf, sizeof(buf), &n);

	if (rc < 0) {
		if (why)
			snprintf(why, STATEREC_WHY_MAX, "cannot read: %s",
				 strerror(-rc));
		return rc;
	}
	return staterec_guest_decode(buf, n, out, why);
}

int staterec_guest_remove(const char *state_dir, const char *name)
{
	char path[512];

	if (!name_ok(name, strnlen(name, STATEREC_NAME_MAX)) ||
	    snprintf(path, sizeof(path), "%s/guests/%s.rec", state_dir, name) >=
		    (int)sizeof(path))
		return -EINVAL;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int staterec_pool_save(const char *state_dir, const struct staterec_pool *p)
{
	unsigned char buf[sizeof(struct sr_header) + sizeof(struct sr_pool_disk)];
	int rc = staterec_pool_encode(p, buf, sizeof(buf));

	return rc < 0 ? rc : staterec_write_atomic(state_dir, "pool.rec", buf,
						   sizeof(buf));
}

int staterec_pool_load(const char *state_dir, struct staterec_pool *out,
		       char *why)
{
	unsigned char buf[sizeof(struct sr_header) + sizeof(struct sr_pool_disk) + 1];
	char path[512];
	size_t n;
	int rc;

	if (snprintf(path, sizeof(path), "%s/pool.rec", state_dir) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	rc = read_file(path, buf, sizeof(buf), &n);
	if (rc < 0) {
		if (why)
			snprintf(why, STATEREC_WHY_MAX, "cannot read: %s",
				 strerror(-rc));
		return rc;
	}
	return staterec_pool_decode(buf, n, out, why);
}

/* Field 22 of /proc/PID/stat.  Field 2 (comm) is in parentheses and may
 * hold spaces and ')', so counting starts after the last ')'. */
int staterec_proc_start(pid_t pid, uint64_t *ticks)
{
	char path[64], buf[1024];
	unsigned long long v;
	size_t n;
	char *p;
	int rc;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	rc = read_file(path, buf, sizeof(buf) - 1, &n);
	if (rc < 0)
		return rc;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EIO;
	/* Field 3, the state: a zombie has exited, whoever has yet to reap
	 * it (a dead ebbd's guests are reparented, and their new parent may
	 * be slow to reap), so it is no live guest. */
	if (p[2] == 'Z' || p[2] == 'X')
		return -ESRCH;
	p++;
	/* Fields 3 .. 21 come before it: 19 of them. */
	for (int field = 3; field <= 21; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EIO;
	}
	if (sscanf(p, " %llu", &v) != 1)
		return -EIO;
	*ticks = v;
	return 0;
}
