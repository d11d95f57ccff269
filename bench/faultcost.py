#!/usr/bin/env python3
"""What page states cost the guest: page-fault throughput (guest/faultrate:
map, touch every page, unmap, in a loop, as will-it-scale's page_fault1)
with the page-state table shared and without, side by side.

    python3 bench/faultcost.py [--mem 256M] [--seconds 10] [--trials 5]

Every page faulted in passes once through the allocation hook and once
through the free hook of mm/page_states.c.  Two guests boot, one with
page_states on and one off (reporting off in both, so that only the hooks
differ); each trial runs faultrate in one, then the other, alternating
which goes first.  The table gives the median faults/s and the ratio.

A second table does the same for volatile page cache (patch 6), whose
cost sits on every page-cache read: a lookup's compare-and-swap and, at
the end of the read, a refcount freeze and another compare-and-swap.
Two guests with page states, one with virtio_ebb.volatile_cache=0, read
a 32 MiB file on an ext4 data disk, held in their page cache, with dd in
4 KiB blocks (one folio per read call) for --seconds, both at the same
time (the machine's noise then hits both); MiB/s read.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402


def faultrate(d, name, seconds):
    out = ebbtest.guest_exec_ok(d, name, "faultrate --size 16M --seconds %d" % seconds)
    m = re.search(r"faultrate: (\d+) faults in ([\d.]+) s: (\d+) faults/s", out)
    if not m:
        raise RuntimeError("no faultrate line in:\n" + out[-1000:])
    return int(m.group(3))


READ_LINE = ("read s _ </proc/uptime; s=${s%%.*}; end=$((s + %d)); n=0;"
             " while read t _ </proc/uptime; [ ${t%%.*} -lt $end ]; do"
             " dd if=/mnt/f of=/dev/null bs=4k 2>/dev/null; n=$((n + 1)); done;"
             " read t _ </proc/uptime; echo readcost $n $t $s")


def readrates(d, names, seconds):
    """Both guests read at the same time, so that the machine's noise
    hits both alike; MiB/s of each."""
    line = READ_LINE % seconds
    starts = {n: len(d.console(n)) for n in names}
    for n in names:
        d.c.call("guest-exec", name=n, command=line)
    rates = {}
    for n in names:
        m = d.wait_console(n, r"readcost (\d+) ([\d.]+) (\d+)", seconds + 60, starts[n])
        rates[n] = int(m.group(1)) * 32 / (float(m.group(2)) - int(m.group(3)))
    return rates


def read_table(args, mem):
    """Page-cache read throughput, volatile page cache on and off."""
    rates = {"on": [], "off": []}
    with ebbtest.Ebbd(budget="2G") as d:
        for name in ("on", "off"):
            img = os.path.join(d.dir, name + ".img")
            with open(img, "wb") as f:
                f.truncate(96 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
            cmdline = "" if name == "on" else "virtio_ebb.volatile_cache=0"
            d.run(name, mem, reporting=False, disk=img, cmdline=cmdline)
            ebbtest.guest_exec_ok(d, name, "mkdir -p /mnt && mount -t ext4 /dev/vda /mnt &&"
                                  " dd if=/dev/urandom of=/mnt/f bs=1M count=32 2>/dev/null"
                                  " && sync && cat /mnt/f >/dev/null")
        for i in range(args.trials):
            r = readrates(d, ("on", "off"), args.seconds)
            for name in r:
                rates[name].append(r[name])
        made = {n: ebbtest.guest_exec_ok(d, n, "cat /sys/kernel/mm/page_states/made_volatile")
                for n in ("on", "off")}
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    ratios = [a / b for a, b in zip(rates["on"], rates["off"])]
    print("\nPage-cache reads in a %s guest, dd bs=4k of a cached 32 MiB file, both guests"
          " at once, %d s per run, median of %d\n" % (args.mem, args.seconds, args.trials))
    print("| volatile page cache | MiB/s (median) | runs |")
    print("|---|---:|---|")
    print("| off | %.0f | %s |" % (off, ", ".join("%.0f" % r for r in rates["off"])))
    print("| on | %.0f | %s |" % (on, ", ".join("%.0f" % r for r in rates["on"])))
    print("\non / off = %.3f (%+.1f%%); median of the per-run ratios %.3f"
          % (on / off, (on / off - 1) * 100, statistics.median(ratios)))
    print("(folios made volatile: on %s, off %s)"
          % tuple(re.findall(r"^(\d+)\s*$", made[n], re.M)[0] for n in ("on", "off")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--only", choices=("faults", "reads"))
    args = ap.parse_args()
    mem = ebbtest.parse_size(args.mem)
    if args.only != "reads":
        fault_table(args, mem)
    if args.only != "faults":
        read_table(args, mem)
    print("\nReproduce: python3 bench/faultcost.py --mem %s --seconds %d --trials %d%s"
          % (args.mem, args.seconds, args.trials,
             " --only " + args.only if args.only else ""))


def fault_table(args, mem):

    rates = {"on": [], "off": []}
    with ebbtest.Ebbd(budget="2G") as d:
        d.run("on", mem, reporting=False, page_states=True)
        d.run("off", mem, reporting=False, page_states=False)
        table = ebbtest.guest_exec_ok(d, "on", "cat /sys/kernel/mm/page_states/table")
        if re.search(r"^0 0$", table, re.M):
            raise RuntimeError("the 'on' guest shares no page-state table:\n" + table)
        for i in range(args.trials):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for name in order:
                rates[name].append(faultrate(d, name, args.seconds))
        found = ebbtest.guest_exec_ok(d, "on", "cat /sys/kernel/mm/page_states/found_discarded")

    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print("Page-fault throughput in a %s guest, faultrate --size 16M, %d s per run, "
          "median of %d\n" % (args.mem, args.seconds, args.trials))
    print("| page states | faults/s (median) | runs |")
    print("|---|---:|---|")
    print("| off | %d | %s |" % (off, ", ".join(map(str, rates["off"]))))
    print("| on | %d | %s |" % (on, ", ".join(map(str, rates["on"]))))
    print("\non / off = %.3f (%+.1f%%)" % (on / off, (on / off - 1) * 100))
    print("(allocations in the 'on' guest that found a page discarded: %s)"
          % found.strip().splitlines()[0] if found.strip() else "")


if __name__ == "__main__":
    main()
