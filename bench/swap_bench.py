#!/usr/bin/env python3
"""swap_bench: one swap-heavy guest workload on several swap setups, side by
side in one invocation (issue 4's benchmark).

The workload: a guest with --mem (128M) RAM runs
`pagecheck write --size --seed --passes --fill` (256M, 2 passes, fill
mixed: pages that compress about 2:1 with lz4), i.e. it writes twice its RAM
of distinct pages and reads every one back twice, checking each.  Setups:

  noswap-bigRAM   the same workload in a guest with --big-mem (512M) and no
                  swap: nothing is swapped, so its time is the guest's own
                  cost (UML pays ~0.2 ms per page fault, see docs/guest.md)
  qsd-file        swap on a raw file (sparse, --disk 512M, under --dir on a
                  disk filesystem) served over vhost-user-blk by
                  qemu-storage-daemon, the reference backend
  zswap+qsd-file  the same disk, with the guest's zswap in front of it
                  (lz4 + zsmalloc loaded from the initramfs, default
                  max_pool_percent 20)
  ebb-tmem        swap on ebbd's own vhost-user-blk device backed by its
                  compressed store (--ebb-compressor picks ebbd's
                  --tmem-compressor; the store's counters are printed)

Each repetition runs every setup once, in that order, each in a fresh
guest (and a fresh qsd and disk file); --reps (3) repetitions, and the
tables give medians.  Per run:

  runtime     pagecheck's own write and verify times (holds excluded) and
              their sum; wall is guest-exec to the exit marker
  mismatches  pages pagecheck found wrong (must be 0)
  host memory sampled every 0.5 s while the workload runs; the peak of the
              sum of: the guest's RAM file (ebbd's `resident`), the disk
              file's pages in the host page cache (util-linux fincore), and
              the backend's own private memory (qsd's RssAnon; for ebb the
              store's charge for the guest)
  disk        bytes the backend dirtied toward the disk file (qsd's
              /proc/PID/io write_bytes minus cancelled_write_bytes) and the
              file's allocated size (st_blocks) at the end
  guest       deltas over the workload of /proc/vmstat pswpin, pswpout (disk
              swap I/O, in pages), zswpin, zswpout (zswap), pgfault, and of
              /sys/block/vda/stat (requests and their sizes at the device)

The guest's own share: noswap-bigRAM gives a per-fault cost (its write time
/ its pgfault delta).  "guest fault floor" is each run's pgfault delta times
that cost: the part of its runtime a perfect swap device could not remove.

Usage: bench/swap_bench.py [--reps 3] [--mem 128M] [--size 256M]
           [--passes 2] [--fill mixed] [--configs a,b,...] [--json FILE]
           [--ebb-swap-quota SIZE] [--ebb-compressor NAME]
Needs root (as ebbd does), qemu-storage-daemon (qemu-system-common) and
fincore (util-linux); scripts/deps.sh installs them.  Build dir from
EBB_BUILD (default build/), as for the e2e tests.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))

import ebbtest  # noqa: E402
from ebbtest import CommandError, Ebbd, Qsd, TestSkip  # noqa: E402

MiB = 1 << 20
PAGE = 4096
CONFIGS = ["noswap-bigRAM", "qsd-file", "zswap+qsd-file", "ebb-tmem"]
# Guest names may not hold '+'.
SHORT = {"noswap-bigRAM": "noswap", "qsd-file": "qsd",
         "zswap+qsd-file": "zswap", "ebb-tmem": "ebb"}
VMSTAT = ("pswpin", "pswpout", "zswpin", "zswpout", "pgfault", "pgmajfault")


class Skip(Exception):
    """This setup cannot run here (reason in the message)."""


class Sampler:
    """Polls named byte counters every `period` s in a thread; keeps each
    one's peak and last value and the peak of their sum."""

    def __init__(self, sources, period=0.5):
        self.sources = sources          # name -> callable returning bytes or None
        self.period = period
        self.peak = {k: 0 for k in sources}
        self.last = {k: 0 for k in sources}
        self.peak_sum = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _sample(self):
        total = 0
        for k, fn in self.sources.items():
            try:
                v = fn() or 0
            except Exception:           # a source that went away: keep going
                v = self.last[k]
            self.last[k] = v
            self.peak[k] = max(self.peak[k], v)
            total += v
        self.peak_sum = max(self.peak_sum, total)

    def _run(self):
        while not self.stop_ev.wait(self.period):
            self._sample()

    def stop(self):
        self.stop_ev.set()
        self.t.join()
        self._sample()                  # one last look at the end state


def resident_source(d, name):
    """The guest's resident bytes, over a control connection of its own
    (the main one is busy with the workload)."""
    c = d.client()

    def get():
        for g in c.call("guest-list")["guests"]:
            if g["name"] == name:
                return g["resident"]
        return None
    return get


def vda_stat(d, name):
    """/sys/block/vda/stat of the guest as a list of ints (empty if none)."""
    status, out = d.exec(name, "cat /sys/block/vda/stat")
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 11 and all(x.isdigit() for x in f):
            return [int(x) for x in f]
    return []


def io_pattern(before, after):
    """Requests at the guest's virtio-blk device over the workload."""
    if not before or not after:
        return {}
    dlt = [a - b for a, b in zip(after, before)]
    dlt += [0] * (17 - len(dlt))
    return {"reads": dlt[0], "read_sectors": dlt[2], "writes": dlt[4],
            "write_sectors": dlt[6], "discards": dlt[11],
            "discard_sectors": dlt[13], "flushes": dlt[15]}


def start_guest(d, name, mem, cmdline="", **kw):
    d.run(name, mem, cmdline=cmdline, **kw)


def stop_guest(d, name):
    try:
        d.c.call("guest-stop", name=name, force=True)
        d.c.wait_event("GUEST_STOPPED", lambda e: e["name"] == name, 30)
    except (CommandError, ebbtest.TestFailure) as e:
        print("  (stopping %s: %s)" % (name, e), file=sys.stderr)


def workload(d, name, args, sources, backend_io=None):
    """Runs pagecheck in the running guest `name` while sampling
    `sources`; returns the run's numbers."""
    vm0 = ebbtest.guest_vmstat(d, name, VMSTAT)
    st0 = vda_stat(d, name)
    io0 = backend_io() if backend_io else {}
    sampler = Sampler(sources)
    try:
        r = ebbtest.pagecheck(d, name, args.size, args.seed, passes=args.passes,
                              fill=args.fill, timeout=args.timeout)
    finally:
        sampler.stop()
    io1 = backend_io() if backend_io else {}
    vm1 = ebbtest.guest_vmstat(d, name, VMSTAT)
    st1 = vda_stat(d, name)
    if r["status"] not in (0, 1):
        raise ebbtest.TestFailure("pagecheck exited %d:\n%s" % (r["status"], r["output"][-1500:]))
    res = {
        "write_s": r["write_s"], "verify_s": r["verify_s"],
        "run_s": r["write_s"] + r["verify_s"], "wall_s": r["wall_s"],
        "pages": r["pages"], "mismatches": r["mismatches"],
        "host_peak": sampler.peak_sum,
        "peak": dict(sampler.peak), "end": dict(sampler.last),
        "io": io_pattern(st0, st1),
    }
    for k in VMSTAT:
        res[k] = vm1.get(k, 0) - vm0.get(k, 0)
    if io0:
        res["disk_written"] = ((io1.get("write_bytes", 0) - io0.get("write_bytes", 0)) -
                               (io1.get("cancelled_write_bytes", 0) -
                                io0.get("cancelled_write_bytes", 0)))
    return res


# -- the setups ----------------------------------------------------------

def run_noswap(d, name, args):
    start_guest(d, name, args.big_mem)
    try:
        return workload(d, name, args, {"guest": resident_source(d, name)})
    finally:
        stop_guest(d, name)


def zswap_on(d, name, args):
    """Switches zswap on with the chosen zpool and compressor.  They are
    built into ebb's guest kernel; in Debian's UML zsmalloc and lz4 are
    modules, loaded (from its image) after zswap initialised, so boot
    parameters cannot pick them: set them here, at run time, for both."""
    cmds = []
    mods = []
    if args.zswap_zpool == "zsmalloc":
        mods.append("zsmalloc")
    if args.zswap_compressor == "lz4":
        mods += ["lz4_compress", "lz4"]
    for m in mods:
        cmds.append("[ ! -f /lib/modules/%s.ko ] || insmod /lib/modules/%s.ko" % (m, m))
    p = "/sys/module/zswap/parameters/"
    cmds += ["echo %s > %szpool" % (args.zswap_zpool, p),
             "echo %s > %scompressor" % (args.zswap_compressor, p)]
    if args.zswap_max_pool_percent:
        cmds.append("echo %d > %smax_pool_percent" % (args.zswap_max_pool_percent, p))
    cmds.append("echo 1 > %senabled" % p)
    for c in cmds:
        ebbtest.guest_exec_ok(d, name, c)
    out = ebbtest.guest_exec_ok(d, name, "cat %senabled %szpool %scompressor" % (p, p, p))
    want = ["Y", args.zswap_zpool, args.zswap_compressor]
    if [l for l in out.splitlines()[:3]] != want:
        raise ebbtest.TestFailure("zswap parameters did not take: %r" % out)


def run_qsd(d, name, args, zswap=False):
    with Qsd(args.disk, dir=args.dir) as q:
        start_guest(d, name, args.mem, cmdline=q.cmdline())
        try:
            if zswap:
                zswap_on(d, name, args)
            ebbtest.guest_swapon(d, name)
            sources = {"guest": resident_source(d, name), "cache": q.cached,
                       "backend": q.rss_anon}
            res = workload(d, name, args, sources, backend_io=q.io)
            res["disk_alloc"] = q.allocated()
            if zswap:
                out = ebbtest.guest_exec_ok(d, name, "grep -E '^Zswap' /proc/meminfo")
                res["zswap_meminfo"] = out.split("ebb-guest:")[0].strip()
            return res
        finally:
            stop_guest(d, name)


def run_zswap_qsd(d, name, args):
    return run_qsd(d, name, args, zswap=True)


def run_ebb_tmem(d, name, args):
    """Swap on ebb's own vhost-user-blk device, backed by the compressed
    store (src/tmem/) with a per-guest backing file for what the store
    refuses.

    guest-run `swap: SIZE` (and `swap_quota: SIZE` with --ebb-swap-quota)
    makes ebbd serve the device and attach it; the guest's init swaps onto
    it by itself (console "ebb-guest: swap on /dev/vda").
    The backing file is <state dir>/<name>.swap (ebbtest starts ebbd with
    --state-dir <dir>/state).  Host memory: the guest's RAM file, the
    store's charge for the guest (`tmem`: the guest's charged_bytes) and
    the backing file's page cache.  Disk: the device's file_write_bytes and
    the backing file's allocated size."""
    if not ebbtest.run_takes(d, "swap"):
        raise Skip("ebbd's guest-run has no 'swap' argument yet")
    kw = {"swap": args.disk}
    if args.ebb_swap_quota:
        kw["swap_quota"] = args.ebb_swap_quota
    start_guest(d, name, args.mem, **kw)
    try:
        if not ebbtest.guest_swaps(d, name):
            ebbtest.guest_swapon(d, name)
        c = d.client()
        backing = os.path.join(d.dir, "state", name + ".swap")

        def tmem_guest():
            for g in c.call("tmem").get("guests", []):
                if g.get("name") == name:
                    return g
            return {}

        def swap_dev_stats():
            for dv in tmem_guest().get("devices", []):
                if dv.get("role") == "swap":
                    return dv.get("swap", {})
            return {}

        def file_written():
            return {"write_bytes": swap_dev_stats().get("file_write_bytes", 0)}

        sources = {"guest": resident_source(d, name),
                   "backend": lambda: tmem_guest().get("charged_bytes"),
                   "cache": lambda: ebbtest.page_cache_bytes(backing)
                   if os.path.exists(backing) else 0}
        res = workload(d, name, args, sources, backend_io=file_written)
        if os.path.exists(backing):
            res["disk_alloc"] = os.stat(backing).st_blocks * 512
        res["tmem"] = tmem_guest()
        res["compressor"] = c.call("tmem")["store"].get("compressor", "?")
        return res
    finally:
        stop_guest(d, name)


RUNNERS = {"noswap-bigRAM": run_noswap, "qsd-file": run_qsd,
           "zswap+qsd-file": run_zswap_qsd, "ebb-tmem": run_ebb_tmem}


# -- report ----------------------------------------------------------------

def med(runs, key, sub=None):
    vals = []
    for r in runs:
        v = r.get(key) if sub is None else r.get(key, {}).get(sub)
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else None


def fmt(v, scale=1.0, digits=1):
    if v is None:
        return "-"
    return "%.*f" % (digits, v / scale)


def fmt_int(v):
    return "-" if v is None else "%d" % round(v)


def report(results, skipped, args, argv):
    base = results.get("noswap-bigRAM", [])
    per_fault = None
    if base:
        # The guest's own cost of one page fault: the no-swap write phase
        # is nothing but first-touch faults (and filling the pages).
        per_fault = statistics.median(r["write_s"] / r["pgfault"] for r in base if r["pgfault"])
    base_run = med(base, "run_s")

    reps = max((len(v) for v in results.values()), default=0)
    print("\n### Runtime and integrity (median of %d reps)\n" % reps)
    print("| setup | runtime s | write s | verify s | wall s | over noswap s "
          "| guest fault floor s | mismatches (max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in args.configs:
        runs = results.get(cfg)
        if not runs:
            continue
        floor = med([{"f": r["pgfault"] * per_fault} for r in runs], "f") if per_fault else None
        run_s = med(runs, "run_s")
        over = run_s - base_run if base_run is not None else None
        print("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
            cfg, fmt(run_s), fmt(med(runs, "write_s")), fmt(med(runs, "verify_s")),
            fmt(med(runs, "wall_s")), fmt(over) if cfg != "noswap-bigRAM" else "-",
            fmt(floor), max(r["mismatches"] for r in runs)))

    print("\n### Host memory and disk (MiB, median of %d reps)\n" % reps)
    print("| setup | host peak | guest RAM peak | page cache peak | backend peak "
          "| page cache at end | disk written | disk allocated |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in args.configs:
        runs = results.get(cfg)
        if not runs:
            continue
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            cfg, fmt(med(runs, "host_peak"), MiB, 0), fmt(med(runs, "peak", "guest"), MiB, 0),
            fmt(med(runs, "peak", "cache"), MiB, 0), fmt(med(runs, "peak", "backend"), MiB, 1),
            fmt(med(runs, "end", "cache"), MiB, 0), fmt(med(runs, "disk_written"), MiB, 0),
            fmt(med(runs, "disk_alloc"), MiB, 0)))

    print("\n### Guest counters over the workload (pages or requests, median of %d reps)\n" % reps)
    print("| setup | pgfault | pgmajfault | pswpout | pswpin | zswpout | zswpin "
          "| dev reads | avg read KiB | dev writes | avg write KiB | discards | flushes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in args.configs:
        runs = results.get(cfg)
        if not runs:
            continue
        rd, wr = med(runs, "io", "reads"), med(runs, "io", "writes")
        rs, ws = med(runs, "io", "read_sectors"), med(runs, "io", "write_sectors")
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            cfg, fmt_int(med(runs, "pgfault")), fmt_int(med(runs, "pgmajfault")),
            fmt_int(med(runs, "pswpout")), fmt_int(med(runs, "pswpin")),
            fmt_int(med(runs, "zswpout")), fmt_int(med(runs, "zswpin")),
            fmt_int(rd), fmt(rs * 512 / rd, 1024) if rd else "-",
            fmt_int(wr), fmt(ws * 512 / wr, 1024) if wr else "-",
            fmt_int(med(runs, "io", "discards")), fmt_int(med(runs, "io", "flushes"))))

    ebb = results.get("ebb-tmem")
    if ebb:
        def t(key):
            return med([r["tmem"] for r in ebb if r.get("tmem")], key)
        print("\n### ebb's store for the guest at the end (median of %d reps, "
              "compressor %s)\n" % (len(ebb), ebb[0].get("compressor", "?")))
        print("| pages | logical MiB | stored raw | compression ratio | dedup ratio "
              "| compressed MiB | charged MiB | refused puts | logical / charged |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        logical, charged = t("logical_bytes"), t("charged_bytes")
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            fmt_int(t("persistent_pages")), fmt(logical, MiB), fmt_int(t("raw_pages")),
            fmt(t("compression_ratio"), 1, 2), fmt(t("dedup_ratio"), 1, 3),
            fmt(t("compressed_bytes"), MiB), fmt(charged, MiB), fmt_int(t("refused_puts")),
            fmt(logical / charged, 1, 2) if logical and charged else "-"))

    if per_fault:
        print("\nGuest fault cost (noswap-bigRAM write time / its page faults): "
              "%.0f us per fault." % (per_fault * 1e6))
    for cfg, why in skipped.items():
        print("%s: skipped: %s" % (cfg, why))
    print("\nHost: %s, %d CPUs, load average %s at the end.\n" % (
        platform.release(), os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
    print("Reproduce: %s" % " ".join(shlex.quote(a) for a in argv))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem", default="128M", help="RAM of the swapping guests")
    ap.add_argument("--big-mem", default="512M", help="RAM of the no-swap guest")
    ap.add_argument("--size", default="256M", help="pagecheck SIZE")
    ap.add_argument("--passes", type=int, default=2, help="pagecheck verify passes")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--fill", default="mixed",
                    help="pagecheck --fill: random, text, sparse, mixed, ratio:R")
    ap.add_argument("--disk", default="512M", help="size of the swap disk")
    ap.add_argument("--dir", default="/var/tmp",
                    help="where qsd's disk files go (a disk filesystem, not tmpfs)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--zswap-compressor", default="lz4")
    ap.add_argument("--zswap-zpool", default="zsmalloc")
    ap.add_argument("--zswap-max-pool-percent", type=int, default=0,
                    help="0 keeps the kernel's default (20)")
    ap.add_argument("--ebb-swap-quota", default=None,
                    help="guest-run swap_quota for ebb-tmem (default: ebbd's)")
    ap.add_argument("--budget", default="4G", help="ebbd --budget")
    ap.add_argument("--ebb-compressor", default=None,
                    help="ebbd --tmem-compressor (default: ebbd's own)")
    ap.add_argument("--timeout", type=int, default=1200, help="per workload, seconds")
    ap.add_argument("--json", help="also write every run's numbers here")
    args = ap.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    for c in args.configs:
        if c not in RUNNERS:
            ap.error("unknown setup %r" % c)
    if ebbtest.parse_size(args.size) <= ebbtest.parse_size(args.mem) and \
            any(c != "noswap-bigRAM" for c in args.configs):
        print("swap_bench: warning: --size is not above --mem, nothing may swap",
              file=sys.stderr)

    results = {c: [] for c in args.configs}
    skipped = {}
    print("swap_bench: guest %s, workload pagecheck write %s --passes %d --fill %s, "
          "%d reps; build %s" % (args.mem, args.size, args.passes, args.fill, args.reps,
                                 os.path.abspath(ebbtest.build_dir())), flush=True)
    extra = ("--tmem-compressor", args.ebb_compressor) if args.ebb_compressor else ()
    with Ebbd(budget=args.budget, extra_args=extra) as d:
        for rep in range(1, args.reps + 1):
            for cfg in args.configs:
                if cfg in skipped:
                    continue
                name = "%s-%d" % (SHORT[cfg], rep)
                t0 = time.monotonic()
                try:
                    r = RUNNERS[cfg](d, name, args)
                except (Skip, TestSkip) as e:
                    skipped[cfg] = str(e)
                    print("rep %d %-15s skipped: %s" % (rep, cfg, e), flush=True)
                    continue
                r["rep"] = rep
                results[cfg].append(r)
                print("rep %d %-15s runtime %.1f s (write %.1f, verify %.1f), "
                      "mismatches %d, host peak %d MiB, pswpout %d, zswpout %d "
                      "[%.0f s]" % (rep, cfg, r["run_s"], r["write_s"], r["verify_s"],
                                    r["mismatches"], r["host_peak"] / MiB, r["pswpout"],
                                    r["zswpout"], time.monotonic() - t0), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "skipped": skipped}, f, indent=1)
    report(results, skipped, args, [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    bad = sum(r["mismatches"] for runs in results.values() for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
