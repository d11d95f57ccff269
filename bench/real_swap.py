#!/usr/bin/env python3
"""real_swap: what ebb's tmem store does with the pages real programs in a
guest swap out, and what a put and a get cost on exactly those pages.

The guest image is busybox only, so the programs come from the host: the
guest mounts the host's root read-only over hostfs (UML's host filesystem)
and runs Debian's own binaries in a chroot, as guest processes under the
guest kernel.  Each workload runs in a small guest (--mem) whose swap is
ebb's swap device, so the guest kernel swaps the programs' anonymous memory
(heap, stacks) into the guest's persistent tmem pool:

  python   CPython 3: imports much of the standard library, builds a dict
           of 100k entries (ints, strings, lists, dicts), a JSON document
           of 30k of them and an in-memory SQLite table of 100k rows
  gcc      cc1 compiling a 400-function C file with -O2 (~100 MiB)
  perl     a hash of 120k keys to small arrays and strings
  sort     coreutils sort of 1M lines, held in its in-memory buffer

Per workload the table gives the store's own counters for the guest
afterwards (compression ratio, dedup, zero and raw pages, charged bytes), its put
and get latency percentiles as ebbd timed them while the guest ran, the
guest's swap traffic, and the run time.  Then the guest reads its whole
swap device back (`dd`, served by tmem gets) into a host file; the pages
that are not all zero (zero pages are a flag in the store and would only
flatter the latencies; never-written slots read as zero too) are fed to
`tmem_bench --pages`, which times put and get on them with each lz4
variant (liblz4's compressor, ebb's lz4 and lz4-fast) beside memcpy and
the bare compressor: the issue's per-page targets on real swap data.

Usage: bench/real_swap.py [--mem 64M] [--only NAME[,NAME]] [--keep DIR]
                          [--runs 3] [--compressor NAME] [--prealloc]
                          [--build DIR]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))

MiB = 1 << 20
PAGE = 4096
SWAP = 512 * MiB

PYTHON = r"""
import json, sqlite3, email.parser, http.server, xml.dom.minidom, decimal
import unittest, asyncio, argparse, csv, re, collections, statistics
d = {}
for i in range(100000):
    d["user:%d" % i] = {"id": i, "name": "n%x" % (i * 2654435761 % 99991),
                        "tags": [i % 7, i % 11, str(i % 13)], "score": i / 7.0}
doc = json.dumps(list(d.values())[:30000])
db = sqlite3.connect(":memory:")
db.execute("create table t (a integer primary key, b text, c real)")
db.executemany("insert into t values (?, ?, ?)",
               ((i, "row %d" % i, i * 0.5) for i in range(100000)))
db.commit()
total = sum(v["score"] for v in d.values()) + len(doc)
print("python done", int(total))
"""

PERL = r"""
my %h;
for my $i (1 .. 120000) {
    $h{"key$i"} = [$i, $i * 3, "v" . ($i % 977), { n => $i % 13 }];
}
my $n = 0;
$n += $_->[1] for values %h;
print "perl done $n\n";
# Leave without freeing the hash: global destruction would swap it all back
# in just to free it, which is not what is being measured.
use POSIX ();
POSIX::_exit(0);
"""


def gen_c(path, funcs=400):
    """A large but ordinary C file: cc1's memory grows with the functions
    it keeps for whole-unit optimisation."""
    with open(path, "w") as f:
        f.write("struct s { int a; long b; char c[16]; double d; };\n")
        for i in range(funcs):
            f.write("""
static long f%d(struct s *p, int n)
{
	long acc = %d;
	for (int i = 0; i < n; i++) {
		switch ((i + %d) %% 5) {
		case 0: acc += p[i].a * %d; break;
		case 1: acc ^= p[i].b << (i & 7); break;
		case 2: acc -= p[i].c[i & 15]; break;
		case 3: acc += (long)(p[i].d * %d.5); break;
		default: acc = acc * 31 + i;
		}
	}
	return acc + (n > %d ? f%d(p, n - 1) : 0);
}
""" % (i, i, i, i % 97 + 1, i % 13, i % 50, i - 1 if i else 0))
        f.write("long entry(struct s *p, int n)\n{\n\tlong r = 0;\n")
        for i in range(funcs):
            f.write("\tr += f%d(p, n);\n" % i)
        f.write("\treturn r;\n}\n")


# name -> shell script run in the chroot (the host's root, read-only); /tmp
# there is the host's work directory, read-write.
WORKLOADS = {
    "python": "python3 -B /tmp/work.py",
    "gcc": "gcc -O2 -c -o /tmp/big.o /tmp/big.c && echo gcc done",
    "perl": "perl /tmp/work.pl",
    "sort": "seq 1000000 | sed 's/$/ some text after the number/' | "
            "sort -S 400M -k1,1r | tail -1 && echo sort done",
}


def run_workload(a, work, name):
    """Boot a guest, run @name's workload, dump its swap device; returns
    (tmem counters with the store's latency and compressor, guest vmstat,
    seconds, path of the nonzero pages, how many there are)."""
    extra = ("--tmem-compressor", a.compressor) if a.compressor else ()
    with ebbtest.Ebbd(budget="4G", extra_args=extra) as d:
        g = "w"
        kw = {"prealloc": True} if a.prealloc else {}
        d.run(g, a.mem, swap=SWAP, swap_quota=SWAP, **kw)
        setup = ("mkdir -p /host && mount -r -t hostfs -o / none /host && "
                 "mount -t proc proc /host/proc && "
                 "mount -t devtmpfs devtmpfs /host/dev && "
                 "mount -t hostfs -o %s none /host/tmp" % work)
        ebbtest.guest_exec_ok(d, g, setup)
        t0 = time.time()
        st, out = d.exec(g, "chroot /host /bin/sh /tmp/%s.sh" % name)
        secs = time.time() - t0
        if st != 0 or "done" not in out:
            raise ebbtest.TestFailure("%s failed (%d): %s" % (name, st, out[-800:]))
        vm = ebbtest.guest_vmstat(d, g)
        t = d.tmem_guest(g)
        tm = d.c.call("tmem")
        t["latency"] = tm["latency"]
        t["compressor"] = tm["store"]["compressor"]
        raw = os.path.join(work, name + ".swap")
        ebbtest.guest_exec_ok(d, g, "dd if=/dev/vda of=/host/tmp/%s.swap bs=1M "
                              "2>/dev/null" % name)
    pages = os.path.join(work, name)
    kept = 0
    with open(raw, "rb") as src, open(pages, "wb") as dst:
        zero = bytes(PAGE)
        while True:
            p = src.read(PAGE)
            if len(p) < PAGE:
                break
            if p != zero:
                dst.write(p)
                kept += 1
    os.unlink(raw)
    return t, vm, secs, pages, kept


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mem", default="64M")
    p.add_argument("--only", help="comma-separated workloads (default: all)")
    p.add_argument("--keep", help="keep the captured pages in this directory")
    p.add_argument("--runs", default="3", help="tmem_bench runs (-r)")
    p.add_argument("--compressor", help="ebbd's --tmem-compressor (default: ebbd's)")
    p.add_argument("--prealloc", action="store_true",
                   help="populate the guest's RAM before boot (no host faults "
                        "when a get lands in a guest page)")
    p.add_argument("--build", help="build directory (default $EBB_BUILD or build)")
    a = p.parse_args()
    if a.build:
        os.environ["EBB_BUILD"] = os.path.abspath(a.build)
    global ebbtest
    import ebbtest  # noqa: E402
    a.mem = ebbtest.parse_size(a.mem)
    names = a.only.split(",") if a.only else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            p.error("unknown workload %s (have: %s)" % (n, ", ".join(WORKLOADS)))

    work = a.keep or tempfile.mkdtemp(prefix="ebb-realswap-")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "work.py"), "w") as f:
        f.write(PYTHON)
    with open(os.path.join(work, "work.pl"), "w") as f:
        f.write(PERL)
    gen_c(os.path.join(work, "big.c"))
    for n in names:
        with open(os.path.join(work, n + ".sh"), "w") as f:
            f.write(WORKLOADS[n] + "\n")

    t_start = time.time()
    rows, files = [], []
    try:
        for n in names:
            t, vm, secs, path, kept = run_workload(a, work, n)
            rows.append((n, t, vm, secs, kept))
            files.append(path)
            print("  %s: %.0f s, %d pages swapped out, %d in tmem, ratio %.2f, "
                  "dedup %.2f, %d nonzero pages captured" % (
                      n, secs, vm["pswpout"], t["persistent_pages"],
                      t["compression_ratio"], t["dedup_ratio"], kept), flush=True)
        bench = os.path.join(ebbtest.build_dir(), "bench", "tmem_bench")
        cmd = [bench, "-r", a.runs, "-n", "16384",
               "-c", "liblz4", "-c", "lz4", "-c", "lz4-fast"]
        for f in files:
            cmd += ["--pages", f]
        tb = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\nReproduce: `python3 bench/real_swap.py %s`  (%.0f s)\n"
          % (" ".join(sys.argv[1:]), time.time() - t_start))
    comp = rows[0][1]["compressor"] if rows else "?"
    print("Real programs in a %d MiB guest, swapping onto ebb's swap device "
          "(store compressor %s); the store's counters for the guest "
          "afterwards:\n" % (a.mem // MiB, comp))
    print("| workload | run time (s) | pages swapped out | swapped in | "
          "pages in tmem | zero pages | stored raw | comp ratio | dedup ratio | "
          "logical / stored | charged B per page | put p50 / p99 (us) | "
          "get p50 / p99 (us) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, t, vm, secs, kept in rows:
        pages = t["persistent_pages"]
        lat = t["latency"]
        print("| %s | %.0f | %d | %d | %d | %d | %d | %.2f | %.2f | %.2f | %.0f | "
              "%.1f / %.1f | %.1f / %.1f |" % (
                  n, secs, vm["pswpout"], vm["pswpin"], pages, t["zero_pages"],
                  t["raw_pages"], t["compression_ratio"], t["dedup_ratio"],
                  t["logical_bytes"] / t["stored_bytes"] if t["stored_bytes"] else 0,
                  t["charged_bytes"] / pages if pages else 0,
                  lat["put_p50_ns"] / 1e3, lat["put_p99_ns"] / 1e3,
                  lat["get_p50_ns"] / 1e3, lat["get_p99_ns"] / 1e3))
    print("\nput / get: the store's own latency percentiles while the guest "
          "ran (ebbd times one call in 8, lock wait included).")
    print("\nPut and get on the nonzero pages each guest's swap device held "
          "(`tmem_bench --pages`, at most 16384 pages each, every compressor "
          "on the same pages; comp/dec are the bare compressor's):\n")
    # tmem_bench's table, minus its own header and reproduce line
    for line in tb.splitlines():
        if line.startswith("|"):
            print(re.sub(r"^\| mix ", "| workload ", line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
