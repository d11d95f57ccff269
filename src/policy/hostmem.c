/*
 * hostmem: PSI and memory cgroup readers, per-guest cgroups for host swap
 * (contract in hostmem.h).
 */
#include "hostmem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* root (1024) + mount point + a cgroup path (1024). */
#define CG_DIR_MAX	2200

struct hostmem {
	char root[1024];	/* prefix of every path */
	int version;		/* 1, 2, or 0: no memory cgroup found */
	char own[CG_DIR_MAX];	/* ebbd's own cgroup directory */
	char bind[CG_DIR_MAX];	/* the ancestor (or itself) with the limit */
};

static int read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = '\0';
	return 0;
}

/* A one-number file; "max" (v2) is UINT64_MAX. */
static int read_u64(const char *dir, const char *file, uint64_t *out)
{
	char path[PATH_MAX + 64], buf[64], *end;

	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (read_text(path, buf, sizeof(buf)) < 0)
		return -ENOENT;
	if (strncmp(buf, "max", 3) == 0) {
		*out = UINT64_MAX;
		return 0;
	}
	errno = 0;
	*out = strtoull(buf, &end, 10);
	return errno || end == buf ? -EINVAL : 0;
}

static int write_text(const char *dir, const char *file, const char *text)
{
	char path[PATH_MAX + 64];
	int fd, rc = 0;

	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* A key's value in a "key value" stat file, 0 if absent. */
static uint64_t stat_value(const char *dir, const char *key)
{
	char path[PATH_MAX + 64], buf[8192], *p;
	size_t klen = strlen(key);

	if (snprintf(path, sizeof(path), "%s/memory.stat", dir) >= (int)sizeof(path) ||
	    read_text(path, buf, sizeof(buf)) < 0)
		return 0;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ')
			return strtoull(p + klen + 1, NULL, 10);
	return 0;
}

/* ebbd's v1 memory path and v2 path from /proc/self/cgroup. */
static void own_paths(struct hostmem *h, char *v1, char *v2)
{
	char path[PATH_MAX + 32], buf[4096], *line, *save;

	v1[0] = v2[0] = '\0';
	snprintf(path, sizeof(path), "%s/proc/self/cgroup", h->root);
	if (read_text(path, buf, sizeof(buf)) < 0)
		return;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *ctl = strchr(line, ':'), *cg;

		if (!ctl || !(cg = strchr(ctl + 1, ':')) || strlen(cg + 1) >= 1024)
			continue;
		*cg++ = '\0';
		ctl++;
		if (strcmp(line, "0:") == 0 || (line[0] == '0' && !ctl[0]))
			snprintf(v2, 1024, "%s", cg);
		else if (strstr(ctl, "memory") &&
			 (!strcmp(ctl, "memory") || strstr(ctl, ",memory") ||
			  !strncmp(ctl, "memory,", 7)))
			snprintf(v1, 1024, "%s", cg);
	}
}

/* Walk from @dir up to @mnt: the directory with the smallest limit. */
static void find_binding(struct hostmem *h, const char *mnt, const char *file)
{
	char dir[CG_DIR_MAX];
	uint64_t best = UINT64_MAX, v;
	size_t mlen = strlen(mnt);

	snprintf(dir, sizeof(dir), "%s", h->own);
	for (;;) {
		if (read_u64(dir, file, &v) == 0 && v < best) {
			best = v;
			snprintf(h->bind, sizeof(h->bind), "%s", dir);
		}
		if (strlen(dir) <= mlen)
			break;
		*strrchr(dir, '/') = '\0';
	}
	/* v1 says "no limit" with ~2^63. */
	if (best >= (1ull << 62))
		h->bind[0] = '\0';
}

int hostmem_open(const char *root, struct hostmem **out)
{
	struct hostmem *h = calloc(1, sizeof(*h));
	char v1[1024], v2[1024], mnt[1100];
	struct stat st;

	if (!h)
		return -ENOMEM;
	snprintf(h->root, sizeof(h->root), "%s", root ? root : "");
	own_paths(h, v1, v2);
	snprintf(mnt, sizeof(mnt), "%s/sys/fs/cgroup/memory", h->root);
	if (v1[0] && stat(mnt, &st) == 0) {
		h->version = 1;
		snprintf(h->own, sizeof(h->own), "%s%s", mnt,
			 strcmp(v1, "/") ? v1 : "");
		find_binding(h, mnt, "memory.limit_in_bytes");
	} else if (v2[0]) {
		snprintf(mnt, sizeof(mnt), "%s/sys/fs/cgroup", h->root);
		h->version = 2;
		snprintf(h->own, sizeof(h->own), "%s%s", mnt,
			 strcmp(v2, "/") ? v2 : "");
		find_binding(h, mnt, "memory.max");
	}
	*out = h;
	return 0;
}

void hostmem_close(struct hostmem *h)
{
	free(h);
}

const char *hostmem_cgroup_dir(const struct hostmem *h)
{
	return h->bind;
}

int hostmem_parse_psi(const char *text, double *some_avg10)
{
	const char *p = strstr(text, "some avg10=");

	if (!p || sscanf(p, "some avg10=%lf", some_avg10) != 1 ||
	    *some_avg10 < 0 || *some_avg10 > 100)
		return -EINVAL;
	return 0;
}

int hostmem_sample(struct hostmem *h, struct hostmem_sample *out)
{
	char path[PATH_MAX + 32], buf[512];
	uint64_t v;

	memset(out, 0, sizeof(*out));
	out->psi_some_avg10 = -1;
	snprintf(path, sizeof(path), "%s/proc/pressure/memory", h->root);
	if (read_text(path, buf, sizeof(buf)) == 0 &&
	    hostmem_parse_psi(buf, &out->psi_some_avg10) < 0)
		out->psi_some_avg10 = -1;
	{
		char mi[4096], *p;

		snprintf(path, sizeof(path), "%s/proc/meminfo", h->root);
		if (read_text(path, mi, sizeof(mi)) == 0 &&
		    (p = strstr(mi, "SwapTotal:")))
			out->swap_total_bytes = strtoull(p + 10, NULL, 10) << 10;
	}
	if (!h->bind[0])
		return 0;
	if (h->version == 1) {
		if (read_u64(h->bind, "memory.limit_in_bytes", &out->limit_bytes) < 0 ||
		    read_u64(h->bind, "memory.usage_in_bytes", &out->usage_bytes) < 0)
			return 0;
		if (read_u64(h->bind, "memory.memsw.usage_in_bytes", &v) == 0 &&
		    v > out->usage_bytes)
			out->swap_bytes = v - out->usage_bytes;
		v = stat_value(h->bind, "total_inactive_file");
	} else {
		if (read_u64(h->bind, "memory.max", &out->limit_bytes) < 0 ||
		    read_u64(h->bind, "memory.current", &out->usage_bytes) < 0)
			return 0;
		if (read_u64(h->bind, "memory.swap.current", &v) == 0)
			out->swap_bytes = v;
		v = stat_value(h->bind, "inactive_file");
	}
	out->cgroup = true;
	out->working_set_bytes = out->usage_bytes > v ? out->usage_bytes - v : 0;
	return 0;
}

bool hostmem_can_swap(const struct hostmem *h)
{
	return h->version == 1 && h->own[0] && access(h->own, W_OK) == 0;
}

static int guest_dir(const struct hostmem *h, const char *name, char *dir,
		     size_t len)
{
	if (snprintf(dir, len, "%s/ebb-%d-%s", h->own, (int)getpid(), name) >=
	    (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int hostmem_guest_create(struct hostmem *h, const char *name, char **procs)
{
	char dir[PATH_MAX];
	int rc;

	if (!hostmem_can_swap(h))
		return -ENOTSUP;
	if ((rc = guest_dir(h, name, dir, sizeof(dir))) < 0)
		return rc;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (asprintf(procs, "%s/cgroup.procs", dir) < 0)
		return -ENOMEM;
	return 0;
}

int hostmem_guest_pageout(struct hostmem *h, const char *name, uint64_t bytes,
			  uint64_t *done)
{
	char dir[PATH_MAX], num[32];
	uint64_t before, after;
	int rc;

	*done = 0;
	if ((rc = guest_dir(h, name, dir, sizeof(dir))) < 0 ||
	    (rc = read_u64(dir, "memory.usage_in_bytes", &before)) < 0)
		return rc;
	if (before <= bytes + (4u << 20))
		return -ENOSPC;
	snprintf(num, sizeof(num), "%llu", (unsigned long long)(before - bytes));
	/* The kernel reclaims this cgroup's pages until usage fits, or gives
	 * up (EBUSY) when it cannot; either way the limit goes back at once,
	 * so the guest refaults only what it really uses. */
	rc = write_text(dir, "memory.limit_in_bytes", num);
	write_text(dir, "memory.limit_in_bytes", "-1");
	if (read_u64(dir, "memory.usage_in_bytes", &after) == 0 && after < before)
		*done = before - after;
	return rc == -EBUSY ? 0 : rc;
}

int hostmem_guest_swap(struct hostmem *h, const char *name, uint64_t *bytes)
{
	char dir[PATH_MAX];
	int rc = guest_dir(h, name, dir, sizeof(dir));

	if (rc < 0)
		return rc;
	*bytes = stat_value(dir, "total_swap");
	return 0;
}

void hostmem_guest_remove(struct hostmem *h, const char *name)
{
	char dir[PATH_MAX];

	if (guest_dir(h, name, dir, sizeof(dir)) == 0)
		rmdir(dir);
}

void hostmem_guest_remove_all(struct hostmem *h, unsigned wait_ms)
{
	char prefix[64], dir[PATH_MAX];
	unsigned waited = 0;

	if (!h || h->version != 1 || !h->own[0])
		return;
	snprintf(prefix, sizeof(prefix), "ebb-%d-", (int)getpid());
	for (;;) {
		DIR *dp = opendir(h->own);
		struct dirent *e;
		bool busy = false;

		if (!dp)
			return;
		while ((e = readdir(dp)))
			if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 &&
			    snprintf(dir, sizeof(dir), "%s/%s", h->own,
				     e->d_name) < (int)sizeof(dir) &&
			    rmdir(dir) < 0 && errno == EBUSY)
				busy = true;
		closedir(dp);
		if (!busy || waited >= wait_ms)
			return;
		usleep(20000);
		waited += 20;
	}
}
