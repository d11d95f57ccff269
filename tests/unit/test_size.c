#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "size.h"

static void parses_suffixes(void **state)
{
	uint64_t b;

	(void)state;
	assert_int_equal(size_parse("0", &b), 0);
	assert_int_equal(b, 0);
	assert_int_equal(size_parse("4096", &b), 0);
	assert_int_equal(b, 4096);
	assert_int_equal(size_parse("64M", &b), 0);
	assert_int_equal(b, 64ull << 20);
	assert_int_equal(size_parse("2g", &b), 0);
	assert_int_equal(b, 2ull << 30);
	assert_int_equal(size_parse("512KiB", &b), 0);
	assert_int_equal(b, 512ull << 10);
	assert_int_equal(size_parse("1.5G", &b), 0);
	assert_int_equal(b, 3ull << 29);
	assert_int_equal(size_parse("1T", &b), 0);
	assert_int_equal(b, 1ull << 40);
	assert_int_equal(size_parse("7B", &b), 0);
	assert_int_equal(b, 7);
}

static void rejects_junk(void **state)
{
	uint64_t b = 123;

	(void)state;
	assert_int_equal(size_parse("", &b), -EINVAL);
	assert_int_equal(size_parse("M", &b), -EINVAL);
	assert_int_equal(size_parse("-1M", &b), -EINVAL);
	assert_int_equal(size_parse("12Q", &b), -EINVAL);
	assert_int_equal(size_parse("12MX", &b), -EINVAL);
	assert_int_equal(size_parse("1.G", &b), -EINVAL);
	assert_int_equal(size_parse(" 1M", &b), -EINVAL);
	assert_int_equal(size_parse(NULL, &b), -EINVAL);
	assert_int_equal(b, 123);
}

static void rejects_overflow(void **state)
{
	uint64_t b;

	(void)state;
	assert_int_equal(size_parse("18446744073709551615", &b), 0);
	assert_int_equal(b, UINT64_MAX);
	assert_int_equal(size_parse("18446744073709551616", &b), -ERANGE);
	assert_int_equal(size_parse("16777216T", &b), -ERANGE);
	assert_int_equal(size_parse("16777215T", &b), 0);
}

static void formats(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(size_format(100, buf, sizeof(buf)), "100B");
	assert_string_equal(size_format(256ull << 20, buf, sizeof(buf)), "256M");
	assert_string_equal(size_format(3ull << 29, buf, sizeof(buf)), "1.5G");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_suffixes),
		cmocka_unit_test(rejects_junk),
		cmocka_unit_test(rejects_overflow),
		cmocka_unit_test(formats),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
