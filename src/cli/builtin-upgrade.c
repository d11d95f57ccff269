/*
 * ebbctl upgrade: replace the running ebbd by the ebbd binary on disk,
 * guests running on (upgrade.c in the daemon), and report how long the
 * devices paused.  Entry point in ebbctl.h.
 *
 * The daemon answers, then executes itself: this connection reaches end
 * of file at the exec, which is how the answer of the new image is told
 * from the old one's.  Then the socket is tried until the new image
 * greets, and its info says whether it came up by upgrade and how long
 * the devices waited.
 */
#include "ebbctl.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Does an ebbd answer at the control socket?  Quietly, unlike conn_open,
 * which reports a failure.  Its greeting must arrive: a connect can still
 * land in the old image's backlog while its exec closes its fds one by
 * one (our connection first, the listening socket after), and such a
 * connection is then reset.
 */
static bool answering(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pollfd p = { .events = POLLIN };
	char c;
	bool ok = false;

	p.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p.fd < 0)
		return false;
	if (strlen(opt.socket) < sizeof(sa.sun_path)) {
		strcpy(sa.sun_path, opt.socket);
		ok = connect(p.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		     poll(&p, 1, 1000) == 1 && recv(p.fd, &c, 1, 0) == 1;
	}
	close(p.fd);
	return ok;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int ebbctl_upgrade(int argc, char **argv)
{
	int64_t deadline = deadline_in(opt.timeout_ms);
	json_t *ret = NULL, *info = NULL, *r;
	struct conn cn;
	char *line;
	int rc = simple_opts(argc, argv);

	if (!rc)
		rc = want_args(argc, argv, 0, "");
	if (rc)
		return rc;
	if ((rc = conn_open(&cn)) != 0)
		return rc;
	rc = conn_call(&cn, "upgrade", NULL, NULL, NULL, &ret);
	if (rc) {
		conn_close(&cn);
		return rc;
	}
	if (!opt.json)
		printf("ebbd (pid %lld) is executing %s\n",
		       (long long)json_integer_value(json_object_get(ret, "pid")),
		       jstr(ret, "exe"));
	json_decref(ret);
	/* The old image's end: this connection closes at its exec. */
	while (conn_read_line(&cn, deadline, &line) == 0)
		;
	conn_close(&cn);
	while (!answering()) {
		if (now_ms() > deadline) {
			errmsg("no ebbd listens at %s after the upgrade",
			       opt.socket);
			return EXIT_FAIL;
		}
		sleep_ms(10);
	}
	if ((rc = conn_open(&cn)) != 0)
		return rc;
	rc = conn_call(&cn, "info", NULL, NULL, NULL, &info);
	conn_close(&cn);
	if (rc)
		return rc;
	r = json_object_get(info, "restart");
	if (strcmp(jstr(r, "how"), "upgrade")) {
		errmsg("the ebbd now listening did not come up by upgrade "
		       "(it says '%s'): see its log", jstr(r, "how"));
		json_decref(info);
		return EXIT_FAIL;
	}
	if (opt.json) {
		print_json(r);
	} else {
		json_int_t us = json_integer_value(json_object_get(r, "pause_us"));
		json_int_t sv = json_integer_value(json_object_get(r, "served_us"));

		printf("upgraded: %lld guest(s) adopted, devices paused %lld.%03lld ms "
		       "(every guest served once %lld.%03lld ms after the exec)\n",
		       (long long)json_integer_value(json_object_get(r, "adopted")),
		       (long long)(us / 1000), (long long)(us % 1000),
		       (long long)(sv / 1000), (long long)(sv % 1000));
	}
	json_decref(info);
	return 0;
}
