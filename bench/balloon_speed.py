#!/usr/bin/env python3
"""Balloon inflate and deflate speed, 2 MiB blocks first (ebb's guest
kernel, patch 5) against single 4 KiB pages (the same kernel booted with
virtio_balloon.blocks=0), side by side, with the host CPU each costs.

    python3 bench/balloon_speed.py [--mem 1280M] [--size 1G] [--trials 5] [--hugepages]

Two guests of --mem boot under one ebbd, one per mode.  Each trial
inflates --size in one guest, then the other (alternating which goes
first), then deflates both the same way.  A move is timed from the
balloon command to the moment ebbd reports the guest's balloon at its
target (polled every 2 ms), and its host CPU is the user + system time
of ebbd and of the guest's processes over that window.  With
--hugepages, ebbd keeps guest RAM on huge-page tmpfs (--ram-hugepages),
and the intact 2 MiB blocks after the trials are printed too.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402

MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")
MODES = (("2M-first", ""), ("4K", "virtio_balloon.blocks=0"))


def session_cpu(pid, extra):
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.getsid(int(p)) != pid and int(p) != extra:
                continue
            f = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / TICK


def move(d, name, target):
    pid = d.guest(name)["pid"]
    c0, t0 = session_cpu(pid, d.proc.pid), time.monotonic()
    d.c.call("balloon", name=name, target=target)
    while d.guest(name)["balloon_actual"] != target:
        if time.monotonic() - t0 > 120:
            raise RuntimeError("%s: balloon did not reach %d MiB" % (name, target // MiB))
        time.sleep(0.002)
    return time.monotonic() - t0, session_cpu(pid, d.proc.pid) - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="1280M")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--hugepages", action="store_true")
    args = ap.parse_args()
    mem, size = ebbtest.parse_size(args.mem), ebbtest.parse_size(args.size)

    res = {(m, op): [] for m, _ in MODES for op in ("inflate", "deflate")}
    extra = ["--ram-hugepages"] if args.hugepages else []
    with ebbtest.Ebbd(budget="8G", extra_args=extra) as d:
        for m, cl in MODES:
            d.run(m, mem, cmdline=cl, reporting=False)
        for i in range(args.trials):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for op, target in (("inflate", mem - size), ("deflate", mem)):
                for m, _ in order:
                    res[(m, op)].append(move(d, m, target))
        blocks = {m: d.guest(m).get("intact_blocks") for m, _ in MODES}

    gib = size / (1 << 30)
    print("Balloon moves of %s in a %s guest, median of %d trials%s\n"
          % (args.size, args.mem, args.trials, ", RAM on huge-page tmpfs" if args.hugepages else ""))
    print("| move | unit | time (ms) | GiB/s | host CPU per GiB (ms) |")
    print("|---|---|---:|---:|---:|")
    for op in ("inflate", "deflate"):
        for m, _ in MODES:
            t = statistics.median(x for x, _ in res[(m, op)])
            c = statistics.median(y for _, y in res[(m, op)])
            print("| %s | %s | %.0f | %.2f | %.0f |" % (op, m, t * 1e3, gib / t, c * 1e3 / gib))
    for op in ("inflate", "deflate"):
        a = statistics.median(x for x, _ in res[("2M-first", op)])
        b = statistics.median(x for x, _ in res[("4K", op)])
        print("\n%s: 2M-first is %.1fx the speed of 4K" % (op, b / a), end="")
    print()
    if args.hugepages:
        print("\nintact 2 MiB blocks after the trials: %s" % blocks)
    print("\nReproduce: python3 bench/balloon_speed.py --mem %s --size %s --trials %d%s"
          % (args.mem, args.size, args.trials, " --hugepages" if args.hugepages else ""))


if __name__ == "__main__":
    main()
