#!/usr/bin/env python3
"""Seed 000's comparison: a web farm on an overcommitted host, with host
swap only, with the balloon, and with page hinting (unused and volatile
pages), as the number of guests grows.

    python3 bench/webfarm.py [--guests 2,4,6] [--host 640M] [--seconds 30]

The host is a small host inside this one (tests/e2e/smallhost.py): a
memory cgroup of --host bytes with a host swap file, so that what does
not fit is really swapped by the host kernel.  ebbd and every guest run
in it, and ebbd's budget is the same --host.

Each guest (--mem, 256M) has an ext4 data disk holding a file set
(--files MiB in 4 MiB files and their MD5SUMS), made on the host with
mkfs.ext4 -d: the same image, read-only, for every guest, as the servers
of a farm serve the same site (ebbd's disk cache then keeps one copy of
what they read for all of them); --own-images gives each guest a copy.  It first reads its file set once (into its page cache),
then has a burst (memhog --burst MiB, then exits, as a server handling a
spike: that memory is free again but the host still backs it), then
serves: `md5sum -c` over the whole set
in a loop for --seconds, every guest at once.  An operation is one file
read and checked; a wrong checksum fails the run.  With the file set in
its page cache a guest serves from memory; what the host takes from it
is read again from the disk (through ebbd), or swapped back in by the
host.

  swap      no reporting, no page states, no balloon: whatever does not
            fit in the cgroup goes to the host swap file
  balloon   every guest's balloon target is an equal share of 3/4 of the
            host (never above --mem), set right after boot
  hinting   page states with volatile page cache; ebbd --discard-below
            1/8 of the host: when guests hold more than 7/8 of it, ebbd
            discards their unused pages, then their volatile ones

Reported per method and guest count: operations per second (all guests),
and the host's swap I/O during boot, burst and serving (pswpout and
pswpin from /proc/vmstat: host-wide, so run nothing else that swaps).
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402
from smallhost import SmallHost, vmstat  # noqa: E402

MiB = 1 << 20
METHODS = ("swap", "balloon", "hinting")
SERVE = re.compile(r"webfarm-served (\d+) (\d+) ([\d.]+)")


def make_file_set(path, files_mib, seed=1):
    """An ext4 image holding files_mib MiB of random 4 MiB files and their
    MD5SUMS; the image leaves 50% room for the file system."""
    root = tempfile.mkdtemp(prefix="webfarm-", dir="/var/tmp")
    try:
        sums = []
        rnd = __import__("random").Random(seed)
        for i in range(files_mib // 4):
            data = rnd.randbytes(4 * MiB)
            name = "f%03d" % i
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
            sums.append("%s  %s\n" % (hashlib.md5(data).hexdigest(), name))
        with open(os.path.join(root, "MD5SUMS"), "w") as f:
            f.writelines(sums)
        with open(path, "wb") as f:
            f.truncate(files_mib * MiB * 3 // 2 + 32 * MiB)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, path], check=True)
    finally:
        shutil.rmtree(root)
    return len(sums)


def serve_line(seconds):
    """Serve the file set for `seconds`: rounds of md5sum -c, counted."""
    return ("cd /mnt && read s _ </proc/uptime; s=${s%%.*}; end=$((s + %d)); n=0; bad=0;"
            " while read t _ </proc/uptime; [ ${t%%.*} -lt $end ]; do"
            " md5sum -c -s MD5SUMS || bad=$((bad + 1)); n=$((n + 1)); done;"
            " read t _ </proc/uptime; echo webfarm-served $n $bad $((${t%%.*} - s))"
            % seconds)


def run(args, method, nguests, image, nfiles):
    host = ebbtest.parse_size(args.host)
    mem = ebbtest.parse_size(args.mem)
    # Each method alone: the host policy (issue 12) would mix them.
    extra = ["--policy", "off"]
    if method == "hinting":
        extra += ["--discard-below", str(host // 8)]
    with SmallHost(mem=args.host, swap=args.swap) as h:
        v0 = vmstat()
        with ebbtest.Ebbd(budget=args.host, extra_args=extra, cgroup=h) as d:
            names = ["w%d-%s-%d" % (nguests, method, i) for i in range(nguests)]
            for name in names:
                img = image
                if args.own_images:
                    img = os.path.join(d.dir, name + ".img")
                    shutil.copyfile(image, img)
                d.run(name, mem, claim=False, disk=img, disk_ro=not args.own_images,
                      reporting=False, page_states=(method == "hinting"))
                # The file set in the page cache first, then the burst:
                # its memory comes on top, and is free again after it.
                st, out = d.exec(name, "mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt"
                                       " && cat /mnt/f* >/dev/null"
                                       " && memhog %dM >/dev/null" % args.burst)
                if st:
                    raise ebbtest.TestFailure("%s: setup failed:\n%s" % (name, out[-1000:]))
            if method == "balloon":
                share = min(mem, host * 3 // 4 // nguests) // MiB * MiB
                for name in names:
                    d.c.call("balloon", name=name, target=share)
            starts = {name: len(d.console(name)) for name in names}
            line = serve_line(args.seconds)
            for name in names:
                d.c.call("guest-exec", name=name, command=line)
            ops, bad, secs = 0, 0, 0
            for name in names:
                m = d.wait_console(name, SERVE.pattern, args.seconds + 300, starts[name])
                n, b, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
                ops += n * nfiles
                bad += b
                secs = max(secs, s)
            reread = 0
            for name in names:
                st, out = d.exec(name, "cat /sys/kernel/mm/page_states/volatile_reread")
                reread += int(re.findall(r"^(\d+)\s*$", out, re.M)[0])
        v1 = vmstat()
        st = h.stats()
    if bad:
        raise ebbtest.TestFailure("%s with %d guests: %d rounds had a wrong checksum"
                                  % (method, nguests, bad))
    return {"ops_s": ops / max(secs, 1), "swap_out": (v1["pswpout"] - v0["pswpout"]) * 4096,
            "swap_in": (v1["pswpin"] - v0["pswpin"]) * 4096, "oom": st["oom_kill"],
            "reread": reread * 4096}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", default="2,4,6")
    ap.add_argument("--host", default="640M", help="memory cgroup limit and ebbd budget")
    ap.add_argument("--swap", default="3G", help="host swap file")
    ap.add_argument("--mem", default="256M", help="each guest's memory")
    ap.add_argument("--files", type=int, default=96, help="MiB of files per guest")
    ap.add_argument("--burst", type=int, default=96, help="MiB the burst takes")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--own-images", action="store_true",
                    help="a copy of the image per guest instead of one shared")
    args = ap.parse_args()
    counts = [int(x) for x in args.guests.split(",")]

    workdir = tempfile.mkdtemp(prefix="webfarm-", dir="/var/tmp")
    try:
        image = os.path.join(workdir, "files.img")
        nfiles = make_file_set(image, args.files)
        res = {}
        for n in counts:
            for m in METHODS:
                r = run(args, m, n, image, nfiles)
                res[(m, n)] = r
                print("  %d guests, %-7s %6.1f ops/s, host swap out %5.0f MiB, in %5.0f MiB,"
                      " re-read %5.0f MiB, OOM kills %d"
                      % (n, m, r["ops_s"], r["swap_out"] / MiB, r["swap_in"] / MiB,
                         r["reread"] / MiB, r["oom"]), file=sys.stderr)
    finally:
        shutil.rmtree(workdir)

    print("Web farm on a %s host (memory cgroup + %s swap file): guests of %s,"
          " %d MiB of files each (%s), burst %d MiB, %d s of serving\n"
          % (args.host, args.swap, args.mem, args.files,
             "an image each" if args.own_images else "one shared image",
             args.burst, args.seconds))
    print("| guests | method | ops/s | host swap out (MiB) | host swap in (MiB) |"
          " swap I/O vs swap only | ops/s vs swap only | discarded cache re-read (MiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        base = res[("swap", n)]
        bio = base["swap_out"] + base["swap_in"]
        for m in METHODS:
            r = res[(m, n)]
            io = r["swap_out"] + r["swap_in"]
            print("| %d | %s | %.1f | %.0f | %.0f | %s | %s | %.0f |"
                  % (n, m, r["ops_s"], r["swap_out"] / MiB, r["swap_in"] / MiB,
                     "-" if m == "swap" else
                     ("%+.0f%%" % ((io / bio - 1) * 100) if bio else "n/a"),
                     "-" if m == "swap" else "%.2fx" % (r["ops_s"] / base["ops_s"]),
                     r["reread"] / MiB))
    print("\nReproduce: python3 bench/webfarm.py --guests %s --host %s --swap %s --mem %s"
          " --files %d --burst %d --seconds %d%s"
          % (args.guests, args.host, args.swap, args.mem, args.files, args.burst,
             args.seconds, " --own-images" if args.own_images else ""))


if __name__ == "__main__":
    main()
