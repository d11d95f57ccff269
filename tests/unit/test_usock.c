/*
 * Tests for usock: the socket is at its path, listening, with its mode,
 * the moment usock_listen returns; no temporary name is left behind,
 * whether it succeeded or failed; an existing file is replaced.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "usock.h"

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/ebb-usock-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/s.sock", f->dir);
	*state = f;
	return 0;
}

/* Files in the directory. */
static int entries(const struct fx *f)
{
	DIR *d = opendir(f->dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->path);
	assert_int_equal(entries(f), 0);
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

static int try_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), rc;

	assert_true(fd >= 0);
	strcpy(sa.sun_path, path);
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

static void listening_at_once(void **state)
{
	struct fx *f = *state;
	struct stat st, now;
	int fd;

	fd = usock_listen(f->path, 0640, 4, &st);
	assert_true(fd >= 0);
	assert_int_equal(try_connect(f->path), 0);
	assert_int_equal(stat(f->path, &now), 0);
	assert_true(S_ISSOCK(now.st_mode));
	assert_int_equal(now.st_mode & 0777, 0640);
	/* The stat given back is the file's at its final name. */
	assert_int_equal(st.st_ino, now.st_ino);
	assert_int_equal(st.st_dev, now.st_dev);
	assert_int_equal(entries(f), 1);
	close(fd);
}

static void replaces_what_was_there(void **state)
{
	struct fx *f = *state;
	FILE *old = fopen(f->path, "w");
	int fd;

	assert_non_null(old);
	fclose(old);
	fd = usock_listen(f->path, 0600, 4, NULL);
	assert_true(fd >= 0);
	assert_int_equal(try_connect(f->path), 0);
	assert_int_equal(entries(f), 1);
	close(fd);
}

static void failures_leave_nothing(void **state)
{
	struct fx *f = *state;
	char longp[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char missing[160];

	/* Fits sun_path, but not with the temporary suffix. */
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	memcpy(longp, f->dir, strlen(f->dir));
	longp[strlen(f->dir)] = '/';
	longp[sizeof(longp) - 4] = '\0';
	assert_int_equal(usock_listen(longp, 0600, 4, NULL), -ENAMETOOLONG);

	snprintf(missing, sizeof(missing), "%s/no/s.sock", f->dir);
	assert_int_equal(usock_listen(missing, 0600, 4, NULL), -ENOENT);

	/* A directory at the path: rename refuses, the temporary goes. */
	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(usock_listen(f->path, 0600, 4, NULL), -EISDIR);
	assert_int_equal(entries(f), 1);
	assert_int_equal(rmdir(f->path), 0);
	assert_int_equal(entries(f), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(listening_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(replaces_what_was_there, setup, teardown),
		cmocka_unit_test_setup_teardown(failures_leave_nothing, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
