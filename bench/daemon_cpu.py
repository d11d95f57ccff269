#!/usr/bin/env python3
"""What ebbd itself costs in CPU while guests swap through it.

    python3 bench/daemon_cpu.py [--guests 10] [--warm 40] [--secs 40]
                                [--mem 128M] [--swap 256M] [--work 160M]
                                [--ebbd-args "..."]

Each guest (--mem of RAM, a --swap device in ebb's page store) runs
pagecheck over --work in a loop: it swaps continuously and checks every
page it reads back.  After --warm seconds (the store full, its memory
recycled rather than new), ebbd's user+system time over --secs seconds
(/proc/PID/stat) is printed as a share of one CPU, with the pages the
store held.  To compare two ebbd builds, run this once with each
(EBB_BUILD=<build dir>), one after the other: the machine is noisy.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
import ebbtest  # noqa: E402
import swapload  # noqa: E402


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    swapload.add_arguments(ap)
    ap.add_argument("--warm", type=int, default=40)
    ap.add_argument("--secs", type=int, default=40)
    ap.add_argument("--ebbd-args", default="")
    a = ap.parse_args()
    names = ["w%d" % i for i in range(a.guests)]
    d = ebbtest.Ebbd(budget=swapload.budget(a.guests, a.mem, a.swap),
                     extra_args=a.ebbd_args.split())
    try:
        swapload.start(d, names, a.mem, a.swap, a.work)
        time.sleep(a.warm)
        pid = d.proc.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(a.secs)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        stored = d.c.call("tmem")["total"]["persistent_pages"]
        swapload.check(d, names)
    finally:
        swapload.stop(d, names)
    print("\n| guests swapping | pages stored | ebbd CPU (share of one CPU) |")
    print("|---:|---:|---:|")
    print("| %d | %d | %.1f%% |" % (a.guests, stored, (c1 - c0) / (t1 - t0) * 100))
    print("\nreproduce: python3 bench/daemon_cpu.py --guests %d --warm %d --secs %d "
          "--mem %s --swap %s --work %s%s" % (a.guests, a.warm, a.secs, a.mem,
                                              a.swap, a.work,
                                              (" --ebbd-args '%s'" % a.ebbd_args)
                                              if a.ebbd_args else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
