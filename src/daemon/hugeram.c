/*
 * hugeram: per-guest huge-page tmpfs mounts for guest RAM, the host check
 * behind them, and the host's count of a process's PMD-mapped shmem (API
 * and the reasons for within_size and lazy unmounts in hugeram.h).
 */
#include "hugeram.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHMEM_ENABLED "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define HUGE_BYTES (2ull << 20)

/* The bracketed word of a sysfs choice file: "always [never] deny". */
static int read_choice(const char *path, char *out, size_t n)
{
	char line[256], *a, *b;
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	a = strchr(line, '[');
	b = a ? strchr(a, ']') : NULL;
	if (!b || (size_t)(b - a - 1) >= n)
		return -EIO;
	memcpy(out, a + 1, (size_t)(b - a - 1));
	out[b - a - 1] = '\0';
	return 0;
}

int hugeram_check_host(char *why, size_t n)
{
	char mode[32];
	int rc = read_choice(SHMEM_ENABLED, mode, sizeof(mode));

	why[0] = '\0';
	if (rc < 0) {
		snprintf(why, n, "%s unreadable (%s): this kernel has no "
			 "transparent huge pages for tmpfs", SHMEM_ENABLED,
			 strerror(-rc));
		return rc;
	}
	if (strcmp(mode, "deny") == 0) {
		snprintf(why, n, "%s is 'deny', which disables huge pages on "
			 "every tmpfs; set it to 'never' (or 'advise', "
			 "'within_size', 'always')", SHMEM_ENABLED);
		return -EPERM;
	}
	if (strcmp(mode, "force") == 0)
		snprintf(why, n, "%s is 'force': every tmpfs uses huge pages, "
			 "also guests' RAM without --ram-hugepages", SHMEM_ENABLED);
	return 0;
}

int hugeram_mount(const char *dir, uint64_t mem_bytes)
{
	/* The RAM file is mem= bytes; one block of slack for the rounding
	 * and UML's own small files, if any. */
	uint64_t size = (mem_bytes + 2 * HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
	char opts[128];

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(opts, sizeof(opts), "huge=within_size,size=%" PRIu64
		 ",mode=0700,nr_inodes=64", size);
	/* Not noexec: UML maps its RAM file executable. */
	if (mount(HUGERAM_SOURCE, dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
		int rc = -errno;

		rmdir(dir);
		return rc;
	}
	return 0;
}

int hugeram_tmpfile(uint64_t limit_bytes)
{
	uint64_t size = (limit_bytes + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
	char why[256], num[32];
	int fs, mnt, fd, rc;

	if (hugeram_check_host(why, sizeof(why)) < 0)
		return -EOPNOTSUPP;
	fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0)
		return -errno;
	snprintf(num, sizeof(num), "%" PRIu64, size);
	if (fsconfig(fs, FSCONFIG_SET_STRING, "source", "ebb-store", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "huge", "always", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "size", num, 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "nr_inodes", "4", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		rc = -errno;
		close(fs);
		return rc;
	}
	mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
		      MOUNT_ATTR_NOEXEC);
	rc = mnt < 0 ? -errno : 0;
	close(fs);
	if (rc)
		return rc;
	fd = openat(mnt, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	rc = fd < 0 ? -errno : fd;
	close(mnt);	/* the open file keeps the superblock alive */
	return rc;
}

int hugeram_umount(const char *dir)
{
	int rc = 0;

	if (umount2(dir, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
		rc = -errno;
	if (rmdir(dir) < 0 && rc == 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] && r[3]) {
			*w++ = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) |
				      (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int hugeram_clean_stale(const char *run_dir)
{
	size_t plen = strlen(run_dir);
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int n = 0;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char mnt[4096], fstype[64], source[256];
		const char *sep = strstr(line, " - ");

		/* id parent dev root mountpoint ... - fstype source opts */
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep, " - %63s %255s", fstype, source) != 2)
			continue;
		unescape(mnt);
		if (strcmp(fstype, "tmpfs") || strcmp(source, HUGERAM_SOURCE) ||
		    strncmp(mnt, run_dir, plen) || mnt[plen] != '/')
			continue;
		if (hugeram_umount(mnt) == 0)
			n++;
	}
	fclose(f);
	return n;
}

int hugeram_pmd_mapped_bytes(pid_t pid, uint64_t *out)
{
	char path[64], line[256];
	unsigned long long kib;
	FILE *f;
	int rc = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "ShmemPmdMapped: %llu kB", &kib) == 1) {
			*out = (uint64_t)kib << 10;
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}
