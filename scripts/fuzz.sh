#!/bin/sh
# Build every libFuzzer target (fuzz/meson.build) with clang in build-fuzz
# and run each for SECONDS (default 60), one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (make fuzz runs all, 60 s)
#
# Corpora grow in build-fuzz/corpus/<target>/ and persist between runs;
# crashing inputs land in build-fuzz/artifacts/.  Reproduce one with
#   build-fuzz/fuzz/<target> build-fuzz/artifacts/<target>-crash-...
# Ends with one line per target (runs, exec/s, result) and exits non-zero
# if any target crashed or failed to build.  Targets may read settings from
# the environment (see the top of fuzz/<target>.c), e.g. EBB_FUZZ_ALIGNED=1
# keeps fuzz_virtq's regions aligned to fuzz past a misalignment finding.
set -u
cd "$(dirname "$0")/.."

secs=${1:-60}
[ $# -gt 0 ] && shift
dir=build-fuzz

if [ ! -f "$dir/build.ninja" ]; then
	setup_log=$(mktemp)
	CC=clang meson setup "$dir" -Dfuzz=true -Dtests=false \
		>"$setup_log" 2>&1 || { cat "$setup_log"; rm -f "$setup_log"; exit 1; }
	rm -f "$setup_log"
fi

# The fuzz targets are the executables defined in fuzz/meson.build.
all=$(meson introspect --targets "$dir" | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if t["type"] == "executable" and \
       os.path.dirname(t["defined_in"]).endswith("fuzz"):
        print(t["name"])
') || exit 1
targets=${*:-$all}
[ -n "$targets" ] || { echo "fuzz: no targets"; exit 1; }

# Build only the fuzz targets: the rest of a clang build is not our job.
paths=""
for t in $targets; do
	paths="$paths fuzz/$t"
done
# shellcheck disable=SC2086
ninja -C "$dir" $paths || exit 1

mkdir -p "$dir/corpus" "$dir/artifacts"

# Seed inputs (written once, into an empty corpus) so the fuzzers start
# from well-formed traffic instead of rediscovering the handshake: the
# input formats are described at the top of each fuzz/<target>.c.
python3 - "$dir/corpus" <<'PY'
import os, struct, sys
top = sys.argv[1]

fresh = {}
def seed(target, name, data):
    d = os.path.join(top, target)
    if target not in fresh:             # a grown corpus is left alone
        fresh[target] = not os.path.isdir(d) or not os.listdir(d)
    if not fresh[target]:
        return
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# fuzz_vhost_user: [mode][u16 ram_len][ram][messages]
GPA, RAM, V, NEED = 0x100000, 256 * 1024, 1, 1 | 8
def msg(req, payload=b"", flags=NEED):
    return struct.pack("<III", req, flags, len(payload)) + payload
def u64(v):
    return struct.pack("<Q", v)
def state(i, n):
    return struct.pack("<II", i, n)
def ring_base(q):
    return GPA + q * 0x2000
def addr(q):
    b = ring_base(q)
    return struct.pack("<IIQQQQ", q, 0, b, b + 0x1000, b + 0x800, 0)
feat = (1 << 32) | 0x27
uml = (msg(3, flags=V) + msg(1, flags=V) + msg(15, flags=V) +
       msg(16, u64(0x228)) + msg(21) +
       msg(24, struct.pack("<III", 0, 16, 0) + bytes(16), V) +
       msg(2, u64(feat)) +
       msg(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", GPA, RAM, GPA, 0)))
for q in range(4):
    uml += msg(13, u64(q)) + msg(8, state(q, 16)) + msg(10, state(q, 0)) + msg(9, addr(q))
for q in range(4):
    uml += msg(12, u64(q)) + msg(18, state(q, 1))
uml += msg(25, struct.pack("<III", 4, 4, 0) + struct.pack("<I", 64))
uml += msg(11, state(0, 0), V)
seed("fuzz_vhost_user", "uml-handshake", bytes([0]) + struct.pack("<H", 0) + uml)

# Live rings (mode 3) and an inflate of four pfns waiting on queue 0.
ram = bytearray(0x900)
struct.pack_into("<QIHH", ram, 0, GPA + 0x400, 16, 0, 0)
struct.pack_into("<IIII", ram, 0x400, *[GPA // 4096 + 40 + i for i in range(4)])
struct.pack_into("<HHH", ram, 0x800, 0, 1, 0)
seed("fuzz_vhost_user", "inflate", bytes([3]) + struct.pack("<H", len(ram)) +
     bytes(ram) + msg(18, state(0, 1)) + msg(11, state(0, 0), V))
seed("fuzz_vhost_user", "mem-only", bytes([1]) + struct.pack("<H", 0) +
     msg(8, state(1, 16)) + msg(9, addr(1)) + msg(12, u64(1)) + msg(18, state(1, 1)))

# fuzz_virtq: [size][u16][u16 last_avail][layout][3 x u16][skew][ram]
ram = bytearray(0x200)
struct.pack_into("<QIHH", ram, 0, 0x100000 + 0x1000, 64, 1, 1)
struct.pack_into("<QIHH", ram, 16, 0x100000 + 0x2000, 64, 2, 0)
struct.pack_into("<HHH", ram, 128, 0, 1, 0)
seed("fuzz_virtq", "two-buffer-chain", bytes([3, 0, 0, 0, 0, 0]) + bytes(7) + bytes(ram))

# fuzz_ebbdev: [features/mode][ring][discard][n][n x 34-byte record][ram]
# A SET_TABLE (relative) for the 32 pages of RAM, its table at RAM 0x2000
# (the data): ring and requests stable, the rest unused and volatile.
def ebb_rec(typ, ta, pfn, n, shape=0, status=1, rel=0x80):
    return bytes([shape, rel | status]) + struct.pack("<IIQQQ", typ, 0, ta, pfn, n)
table = bytes([0] * 3) + bytes([0]) + bytes([1, 2] * 14)
seed("fuzz_ebbdev", "set-table-discard", bytes([3, 4, 0x6f, 1]) +
     ebb_rec(1, 0x2000, 0, 32) + table)
seed("fuzz_ebbdev", "set-clear-set", bytes([0x13, 4, 0x7f, 3]) +
     ebb_rec(1, 0x2000, 0, 32) + ebb_rec(2, 0, 0, 0, rel=0) +
     ebb_rec(1, 0x2000, 4, 28, shape=2) + table)
seed("fuzz_ebbdev", "two-regions", bytes([0xb, 4, 0x6f, 1]) +
     ebb_rec(1, 0x2000, 0, 16) + table)
# fuzz_config: the installed default file, and one setting every key.
seed("fuzz_config", "every-key", b"""[daemon]
socket = /run/ebb/ebbd.sock
run-dir = /run/ebb
log-dir = /var/log/ebb
state-dir = /var/lib/ebb
[guests]
kernel = /k
initrd = /i
ram-dir = /dev/shm
ram-hugepages = yes
block-wait = 2.5
[memory]
budget = 8G ; inline comment
discard-below = 512M
test-evictor = 100
[tmem]
compressor = zstd
[metrics]
port = 9187
""")
with open(os.path.join(os.path.dirname(top), "..", "dist", "ebbd.conf"), "rb") as f:
    seed("fuzz_config", "default", f.read())
# fuzz_staterec: a guest record whose odd first byte asks the target to
# reseal it (header and checksum), so the field checks are reached.
rec = bytearray(32) + struct.pack("<32sII7QiIQ256s256s", b"g1", 2, 0x1b,
    256 << 20, 128 << 20, 128 << 20, 192 << 20, 0, 0, 7, 4242, 3, 12345,
    b"quiet", b"/srv/base.img")
rec[0] = 1
seed("fuzz_staterec", "guest", bytes(rec))
seed("fuzz_staterec", "pool", bytes([1]) + bytes(31) +
     struct.pack("<QQQII", 1 << 30, 8, 128 << 20, 1, 0))
PY
status=0
summary=""
for t in $targets; do
	corpus="$dir/corpus/$t"
	log="$dir/$t.log"
	mkdir -p "$corpus"
	echo "== $t for ${secs}s (corpus $corpus)"
	"$dir/fuzz/$t" -max_total_time="$secs" -print_final_stats=1 \
		-timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$dir/artifacts/$t-" "$corpus" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	if [ "$rc" -eq 0 ]; then
		result="ok"
	else
		result="CRASH (exit $rc), see $log"
		status=1
		grep -E -A12 '^==[0-9]+==ERROR|runtime error|^fuzz_' "$log" | head -40
	fi
	line="$t: ${runs:-?} runs, ${eps:-?} exec/s, ${cov:-cov: ?}, $result"
	echo "$line"
	summary="$summary$line
"
done
echo "== summary"
printf '%s' "$summary"
exit $status
