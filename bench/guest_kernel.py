#!/usr/bin/env python3
"""ebb's guest kernel against Debian's user-mode-linux: boot time and idle
footprint per guest, side by side, and what building the kernel costs.

    python3 bench/guest_kernel.py [--boots N] [--mem 256M] [--build-dir build]

1. Boot each kernel N times (default 9), alternating, with its own image
   (guest/initramfs.cpio.gz for ebb's, which has no modules;
   guest/initramfs-debian.cpio.gz for Debian's, which loads its virtio
   modules), through guest/boot-test.py --measure 1: time from exec to
   "ebb-guest: ready", and the guest RAM file's allocated size 0.5 s
   after ready (the host memory an idle guest costs).  Debian's kernel is
   skipped where it cannot boot (host XSAVE state over 2696 bytes).
2. Kernel build: the from-scratch time the cache recorded when it built
   this kernel (KEY/info), and the time scripts/guest-kernel.sh takes to
   find it in the cache (median of 5 runs).

Prints markdown tables.  Machines here are noisy: compare the two columns
of one run, not numbers across runs.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEBIAN_FP_BYTES = 2696


def boot_once(build, linux, image, mem):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "guest", "boot-test.py"), image,
                        "--linux", linux, "--mem", mem, "--measure", "1"],
                       capture_output=True, text=True, timeout=300)
    m = re.search(r"boot-test: ready after ([\d.]+) s, RAM file ([\d.]+) MiB", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError("boot of %s failed:\n%s%s" % (linux, r.stdout, r.stderr))
    return float(m.group(1)), float(m.group(2))


def host_xsave_bytes(build):
    out = subprocess.run([os.path.join(build, "guest", "vecstress"), "--seconds", "0",
                          "--procs", "1"], capture_output=True, text=True).stdout
    m = re.search(r"cpu xsave area (\d+) bytes", out)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boots", type=int, default=9)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)

    kernels = [("ebb", os.path.join(build, "guest", "linux"),
                os.path.join(build, "guest", "initramfs.cpio.gz"))]
    xsave = host_xsave_bytes(build)
    debian = ("debian", "/usr/bin/linux.uml", os.path.join(build, "guest", "initramfs-debian.cpio.gz"))
    if xsave > DEBIAN_FP_BYTES:
        print("Debian's kernel skipped: host XSAVE state %d bytes > %d\n" % (xsave, DEBIAN_FP_BYTES))
    elif not (os.access(debian[1], os.X_OK) and os.path.exists(debian[2])):
        print("Debian's kernel skipped: user-mode-linux or its image missing\n")
    else:
        kernels.append(debian)

    res = {k[0]: ([], []) for k in kernels}
    for _ in range(args.boots):
        for name, linux, image in kernels:
            t, mib = boot_once(build, linux, image, args.mem)
            res[name][0].append(t)
            res[name][1].append(mib)

    print("Boot to `ebb-guest: ready` and idle footprint, mem=%s, %d boots each, alternating"
          % (args.mem, args.boots))
    print("(host XSAVE state %d bytes)\n" % xsave)
    print("| kernel | ready, median (s) | min-max (s) | RAM file after ready, median (MiB) | min-max (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in kernels:
        ts, ms = res[name]
        print("| %s | %.2f | %.2f-%.2f | %.1f | %.1f-%.1f |"
              % (name, statistics.median(ts), min(ts), max(ts),
                 statistics.median(ms), min(ms), max(ms)))
    if "debian" in res:
        print("\nebb / Debian: boot %.2fx, footprint %.2fx"
              % (statistics.median(res["ebb"][0]) / statistics.median(res["debian"][0]),
                 statistics.median(res["ebb"][1]) / statistics.median(res["debian"][1])))

    script = os.path.join(ROOT, "scripts", "guest-kernel.sh")
    cached = []
    for _ in range(5):
        t0 = time.monotonic()
        subprocess.run([script], check=True, capture_output=True)
        cached.append(time.monotonic() - t0)
    kernel = os.path.realpath(os.path.join(build, "guest", "linux"))
    info = open(os.path.join(os.path.dirname(kernel), "info")).read()
    m = re.search(r"in (\d+) s", info)
    print("\nKernel build (%s)\n" % os.path.dirname(kernel))
    print("| what | time |")
    print("|---|---:|")
    print("| from scratch (recorded by the cache: unpack, patch, configure, make -j%d) | %s s |"
          % (os.cpu_count(), m.group(1) if m else "?"))
    print("| from the cache, median of 5 | %.3f s |" % statistics.median(cached))
    print("\nReproduce: python3 bench/guest_kernel.py --boots %d --mem %s" % (args.boots, args.mem))


if __name__ == "__main__":
    main()
