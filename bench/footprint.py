#!/usr/bin/env python3
"""Host footprint over time of a guest whose demand comes in phases, like
a build: many processes allocating, touching and freeing memory.  Page
hinting (ebbd discards the guest's unused pages by itself) against free
page reporting and against nothing, side by side.

    python3 bench/footprint.py [--mem 512M] [--phases 12] [--jobs 4] [--trials 3]

The workload is one shell line run in the guest: --phases phases, each
starting --jobs memhog processes at once (sizes drawn from 8 to 56 MiB
with a fixed seed, so every method runs the very same workload; a third
of them hold their memory for a second) and waiting for all of them,
then pausing 1 s, as a build alternates compile bursts with link steps.
Its runtime is measured in the guest (/proc/uptime around it).

Each method has an ebbd and a guest of its own:

  none       reporting off, page states off: the host gets nothing back
  reporting  free page reporting (2 MiB blocks, the guest's 2 s delay)
  hinting    page states on, reporting off, and ebbd --discard-below
             set to the whole budget: whatever the guest holds unused is
             discarded on ebbd's next 100 ms tick (64 MiB per tick)

The footprint is the guest's RAM file (allocated bytes, read through the
UML process's descriptor) sampled every 50 ms from the workload's start
to its end; the table gives its average and peak, medians over trials
that alternate the methods.
"""
import argparse
import os
import random
import re
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402
from reclaim import ram_file_bytes  # noqa: E402

MiB = 1 << 20
METHODS = ("none", "reporting", "hinting")
BUDGET = 2 << 30


def workload(phases, jobs, seed):
    """The guest shell line: phases of parallel memhogs."""
    rng = random.Random(seed)
    parts = []
    for _ in range(phases):
        hogs = []
        for _ in range(jobs):
            hold = " --hold 1" if rng.random() < 1 / 3 else ""
            hogs.append("memhog %dM%s >/dev/null &" % (rng.randrange(8, 57), hold))
        parts.append(" ".join(hogs) + " wait; sleep 1;")
    # busybox's date has no %N; /proc/uptime counts in 10 ms.
    return ("read t0 _ </proc/uptime; " + " ".join(parts) +
            " read t1 _ </proc/uptime; echo footprint-runtime $t0 $t1")


class Sampler(threading.Thread):
    """RAM file bytes every `period` seconds until stopped."""

    def __init__(self, pid, mem, period=0.05):
        super().__init__(daemon=True)
        self.pid, self.mem, self.period = pid, mem, period
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), ram_file_bytes(self.pid, self.mem)))
            time.sleep(self.period)


def trial(args, method, n, line):
    # Each method alone: the host policy (issue 12) would add balloons.
    extra = ["--policy", "off"]
    if method == "hinting":
        extra += ["--discard-below", str(BUDGET)]
    with ebbtest.Ebbd(budget=str(BUDGET), extra_args=extra) as d:
        name = "f%d-%s" % (n, method)
        d.run(name, args.mem_bytes, reporting=(method == "reporting"),
              page_states=(method == "hinting"))
        # Settle: boot-time memory reported or discarded as each method does.
        time.sleep(3)
        pid = d.guest(name)["pid"]
        s = Sampler(pid, args.mem_bytes)
        s.start()
        st, out = d.exec(name, line)
        s.stop.set()
        s.join()
        if st != 0:
            raise ebbtest.TestFailure("workload failed in %s:\n%s" % (name, out[-1500:]))
        m = re.search(r"footprint-runtime ([\d.]+) ([\d.]+)", out)
        runtime = float(m.group(2)) - float(m.group(1))
    vals = [b for _, b in s.samples]
    return {"avg": statistics.mean(vals), "peak": max(vals), "runtime": runtime}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="512M")
    ap.add_argument("--phases", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.mem_bytes = ebbtest.parse_size(args.mem)
    line = workload(args.phases, args.jobs, args.seed)

    res = {m: [] for m in METHODS}
    for n in range(args.trials):
        for m in METHODS:
            r = trial(args, m, n, line)
            res[m].append(r)
            print("  trial %d %-9s avg %5.0f MiB, peak %5.0f MiB, runtime %.1f s"
                  % (n + 1, m, r["avg"] / MiB, r["peak"] / MiB, r["runtime"]),
                  file=sys.stderr)

    def med(m, k):
        return statistics.median(r[k] for r in res[m])

    print("Host footprint of a phased workload (%d phases of %d memhogs, 8-56 MiB"
          " each), guest mem=%s, median of %d trials\n"
          % (args.phases, args.jobs, args.mem, args.trials))
    print("| method | average (MiB) | peak (MiB) | runtime (s) | average vs reporting |")
    print("|---|---:|---:|---:|---:|")
    rep = med("reporting", "avg")
    for m in METHODS:
        a = med(m, "avg")
        print("| %s | %.0f | %.0f | %.1f | %s |"
              % (m, a / MiB, med(m, "peak") / MiB, med(m, "runtime"),
                 "-" if m == "reporting" else "%+.0f%%" % ((a / rep - 1) * 100)))
    print("\nReproduce: python3 bench/footprint.py --mem %s --phases %d --jobs %d"
          " --trials %d --seed %d" % (args.mem, args.phases, args.jobs,
                                      args.trials, args.seed))


if __name__ == "__main__":
    main()
