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
"""
import argparse
import os
import re
import statistics
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    mem = ebbtest.parse_size(args.mem)

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
    print("\nReproduce: python3 bench/faultcost.py --mem %s --seconds %d --trials %d"
          % (args.mem, args.seconds, args.trials))


if __name__ == "__main__":
    main()
