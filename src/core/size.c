/*
 * size: parse and format human sizes ("512M", "1.5G") for the CLI and the
 * control protocol (rules in size.h).
 */
#include "size.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int suffix_shift(const char *p, unsigned *shift)
{
	static const char units[] = "KMGT";
	const char *u;

	if (*p == '\0') {
		*shift = 0;
		return 0;
	}
	if (toupper((unsigned char)*p) == 'B' && p[1] == '\0') {
		*shift = 0;
		return 0;
	}
	u = strchr(units, toupper((unsigned char)*p));
	if (!u)
		return -EINVAL;
	*shift = 10 * (unsigned)(u - units + 1);
	p++;
	if (*p == '\0' || strcasecmp(p, "B") == 0 || strcasecmp(p, "iB") == 0)
		return 0;
	return -EINVAL;
}

int size_parse(const char *s, uint64_t *bytes)
{
	uint64_t whole = 0, frac_num = 0, frac_den = 1;
	unsigned shift;
	const char *p = s;
	int rc;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		uint64_t digit = (uint64_t)(*p - '0');

		if (whole > (UINT64_MAX - digit) / 10)
			return -ERANGE;
		whole = whole * 10 + digit;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		/* Keep at most 6 fractional digits: finer than any unit. */
		for (; isdigit((unsigned char)*p); p++) {
			if (frac_den < 1000000) {
				frac_num = frac_num * 10 + (uint64_t)(*p - '0');
				frac_den *= 10;
			}
		}
	}
	rc = suffix_shift(p, &shift);
	if (rc)
		return rc;
	if (shift && whole > (UINT64_MAX >> shift))
		return -ERANGE;
	whole <<= shift;
	/* frac_num < frac_den <= 1e6 and shift <= 40: no overflow. */
	*bytes = whole + ((frac_num << shift) / frac_den);
	if (*bytes < whole)
		return -ERANGE;
	return 0;
}

char *size_format(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "BKMGT";
	double v = (double)bytes;
	int i = 0;

	while (v >= 1024.0 && i < 4) {
		v /= 1024.0;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%lluB", (unsigned long long)bytes);
	else if (v >= 100.0 || v == (double)(uint64_t)v)
		snprintf(buf, len, "%.0f%c", v, units[i]);
	else
		snprintf(buf, len, "%.1f%c", v, units[i]);
	return buf;
}
