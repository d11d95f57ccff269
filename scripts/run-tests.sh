#!/bin/sh
# Run every test suite and end with one line: "N passed, N failed[, N skipped]".
#
#   1. unit and guest-tool tests (cmocka, TAP) in the plain build;
#   2. the same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the same unit tests under ThreadSanitizer (the pool stress test is
#      the one that matters there);
#   4. end-to-end tests: real UML guests (ebb's own guest kernel, built or
#      found in the cache by the plain build) under a real ebbd.
#
# Meson counts test programs; run.py counts e2e test functions.
set -u
cd "$(dirname "$0")/.."
./scripts/deps.sh || exit 1

passed=0 failed=0 skipped=0

# meson test's summary has "Ok: N", "Fail: N", "Skipped: N", "Timeout: N".
count_meson() {
	log=$1
	ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	fl=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	to=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	sk=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	ex=$(sed -n 's/^Expected Fail: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	passed=$((passed + ${ok:-0} + ${ex:-0}))
	failed=$((failed + ${fl:-0} + ${to:-0}))
	skipped=$((skipped + ${sk:-0}))
}

# build DIR [meson options...]: configure if needed and build; a build
# failure counts as one failed test.
build() {
	dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
			{ cat "$dir.setup.log"; return 1; }
	fi
	ninja -C "$dir" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log"; return 1; }
}

suite() {
	name=$1 dir=$2; shift 2
	echo "== $name"
	if ! build "$dir" "$@"; then
		echo "build of $dir failed"
		failed=$((failed + 1))
		return
	fi
	meson test -C "$dir" --no-rebuild --print-errorlogs $SUITES >"$dir.test.log" 2>&1
	grep -E '^ *[0-9]+/[0-9]+ ' "$dir.test.log" | sed 's/^/  /'
	grep -q -E '^(Fail|Timeout): *[1-9]' "$dir.test.log" && tail -80 "$dir.test.log"
	count_meson "$dir.test.log"
}

# A sanitizer finding fails the test program instead of scrolling past:
# meson only sees exit codes.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"

SUITES="--suite unit --suite guest"
suite "unit tests" build
SUITES="--suite unit"
suite "unit tests under ASan+UBSan" build-asan -Db_sanitize=address,undefined -Db_lundef=false
# Suite 'tsan' is every unit test but test_control, whose harness hands
# results over a unix socket: TSan does not see that as synchronisation.
SUITES="--suite tsan"
suite "unit tests under TSan" build-tsan -Db_sanitize=thread -Db_lundef=false

echo "== end-to-end tests (real UML guests)"
if [ -x build/src/ebbd ] && [ -f build/guest/initramfs.cpio.gz ] && [ -x build/guest/linux ]; then
	EBB_BUILD=build python3 tests/e2e/run.py >build/e2e.log 2>&1
	cat build/e2e.log
	line=$(tail -1 build/e2e.log)
	p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
	f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
	s=$(echo "$line" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
	if [ -z "$p" ]; then
		failed=$((failed + 1))	# the runner itself broke
	else
		passed=$((passed + p)); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
	fi
else
	echo "ebbd, the guest kernel or the guest image was not built"
	failed=$((failed + 1))
fi

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
