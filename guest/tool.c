#include "tool.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

int tool_parse_size(const char *s, uint64_t *bytes)
{
	static const char units[] = "KMGT";
	uint64_t n = 0;
	unsigned shift = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		uint64_t digit = (uint64_t)(*p - '0');

		if (n > (UINT64_MAX - digit) / 10)
			return -ERANGE;
		n = n * 10 + digit;
	}
	if (*p != '\0') {
		int i;

		for (i = 0; units[i] && units[i] != toupper((unsigned char)*p); i++)
			;
		if (!units[i])
			return -EINVAL;
		shift = 10 * (unsigned)(i + 1);
		p++;
		if (*p != '\0' && strcasecmp(p, "B") != 0 &&
		    strcasecmp(p, "iB") != 0)
			return -EINVAL;
	}
	if (shift && n > (UINT64_MAX >> shift))
		return -ERANGE;
	*bytes = n << shift;
	return 0;
}

int tool_parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull accepts a sign and leading blanks; a count must not. */
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

uint64_t tool_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tool_sleep_s(uint64_t seconds)
{
	struct timespec left = { .tv_sec = (time_t)seconds, .tv_nsec = 0 };

	while (nanosleep(&left, &left) != 0 && errno == EINTR)
		;
}
