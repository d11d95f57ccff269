#!/usr/bin/env python3
"""race: N parallel guest launches at 2x overcommit, admitted by a naive
check-then-launch toolstack versus by claims (Xen's XENMEM_claim_pages
rationale, seeds/ thread on claims).

Each launch asks for a guest of --mem with --prealloc (its RAM file is
populated before it boots, in 2 MiB chunks, charged to the host pool as it
goes).  N * mem = 2 * budget, so only half can fit.

  naive   the launcher reads `info`, and if `free` covers the guest, runs
          guest-run with claim=false: nothing is staked, and the pool only
          refuses when a populate actually grows past the budget.  All N
          check at about the same time, all see room, all start populating:
          the ones that lose the race fail late, after booting and
          populating part of their memory, which is thrown away.
  claims  guest-run as ebbctl run does: a claim for the whole guest is
          staked before anything starts; a launch that does not fit is
          refused at once, and the ones admitted cannot fail for memory.

For every launch it records the outcome (started / refused up front /
failed late), the time from the request to that outcome, and for late
failures the memory populated and the populate seconds wasted.  Runs
--reps times per mode, alternating, each in a fresh ebbd.

Usage: bench/race.py [--budget 2G] [--launches 8] [--reps 3] [--build DIR]
"""
import argparse
import os
import re
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))

MiB = 1 << 20
SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r" % s)
    return int(m.group(1)) * SUFFIX[m.group(2).upper()]


def launch(d, mode, name, mem, barrier, out):
    """One launcher, on its own control connection."""
    c = d.client()
    rec = {"name": name}
    try:
        barrier.wait()
        t0 = time.perf_counter()
        if mode == "naive":
            free = c.call("info")["free"]
            if free < mem:
                rec.update(outcome="refused", t=time.perf_counter() - t0,
                           why="check: free %d MiB" % (free // MiB))
                return
        try:
            c.call("guest-run", name=name, mem=mem, prealloc=True,
                   claim=(mode == "claims"))
        except ebbtest.CommandError as e:
            rec.update(outcome="refused", t=time.perf_counter() - t0, why=e.desc)
            return
        ev = c.wait_event(("PREALLOC_DONE", "PREALLOC_FAILED"),
                          lambda e: e["name"] == name, 120)
        t = time.perf_counter() - t0
        data = ev["data"]
        if ev["event"] == "PREALLOC_DONE":
            rec.update(outcome="started", t=t, populate_s=data["seconds"])
        else:
            rec.update(outcome="failed late", t=t, populate_s=data["seconds"],
                       wasted_bytes=data["done"], why=data.get("reason", ""))
    finally:
        out[name] = rec
        c.close()


def one_run(mode, a, rep):
    recs = {}
    with ebbtest.Ebbd(budget=a.budget_s) as d:
        barrier = threading.Barrier(a.launches)
        threads = [threading.Thread(target=launch,
                                    args=(d, mode, "%s%d_%d" % (mode[0], rep, i),
                                          a.mem, barrier, recs))
                   for i in range(a.launches)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The started guests must finish booting and stay up: none dies
        # later for lack of memory.
        started = [r["name"] for r in recs.values() if r.get("outcome") == "started"]
        for n in started:
            d.wait_ready(n, timeout=120)
        time.sleep(a.settle)
        gs = {g["name"]: g for g in d.c.call("guest-list")["guests"]}
        info = d.c.call("info")
        died = [n for n in started if gs[n]["state"] != "running"]
        for n in gs:
            try:
                d.c.call("guest-stop", name=n, force=True)
            except ebbtest.CommandError:
                pass
    res = {
        "mode": mode,
        "started": len(started),
        "refused": sum(r.get("outcome") == "refused" for r in recs.values()),
        "late": sum(r.get("outcome") == "failed late" for r in recs.values()),
        "died": len(died),
        "over": info["over"],
        "t_refused": [r["t"] for r in recs.values() if r.get("outcome") == "refused"],
        "t_late": [r["t"] for r in recs.values() if r.get("outcome") == "failed late"],
        "t_started": [r["t"] for r in recs.values() if r.get("outcome") == "started"],
        "wasted_s": sum(r.get("populate_s", 0) for r in recs.values()
                        if r.get("outcome") == "failed late"),
        "wasted_bytes": sum(r.get("wasted_bytes", 0) for r in recs.values()),
        "errors": [r for r in recs.values() if "outcome" not in r],
    }
    print("  %-6s rep %d: started %d, refused %d, failed late %d, died later %d, "
          "wasted %.2f populate-s / %d MiB" % (
              mode, rep, res["started"], res["refused"], res["late"], res["died"],
              res["wasted_s"], res["wasted_bytes"] // MiB), flush=True)
    return res


def ms(xs):
    return "%.0f" % (statistics.median(xs) * 1000) if xs else "–"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="2G")
    p.add_argument("--launches", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds the started guests must stay up afterwards")
    p.add_argument("--build", help="build directory (default $EBB_BUILD or build)")
    a = p.parse_args()
    if a.build:
        os.environ["EBB_BUILD"] = os.path.abspath(a.build)
    global ebbtest
    import ebbtest  # noqa: E402
    a.budget_s = a.budget
    a.budget = parse_size(a.budget)
    a.mem = 2 * a.budget // a.launches
    a.mem -= a.mem % MiB
    print("race: %d parallel launches of %d MiB with --prealloc on a %s budget "
          "(2x overcommit)" % (a.launches, a.mem // MiB, a.budget_s), flush=True)
    t0 = time.time()
    runs = {"naive": [], "claims": []}
    for rep in range(a.reps):
        for mode in ("naive", "claims"):
            runs[mode].append(one_run(mode, a, rep))

    print("\nReproduce: `python3 bench/race.py %s`  (%.0f s)\n"
          % (" ".join(sys.argv[1:]), time.time() - t0))
    print("%d launches of %d MiB each, all at once, on a %s budget, %d runs per "
          "admission mode (medians over runs; times from the launch request to "
          "its outcome):\n" % (a.launches, a.mem // MiB, a.budget_s, a.reps))
    print("| admission | started | refused up front | failed late | died later | "
          "pool over budget | refusal (ms) | late failure (ms) | start, memory "
          "populated (ms) | populate wasted (s) | memory populated then freed (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, rs in runs.items():
        def med(k):
            return statistics.median(r[k] for r in rs)
        allv = lambda k: [x for r in rs for x in r[k]]  # noqa: E731
        print("| %s | %g | %g | %g | %g | %g | %s | %s | %s | %.2f | %d |" % (
            "naive check-then-launch" if mode == "naive" else "claims",
            med("started"), med("refused"), med("late"), med("died"), med("over"),
            ms(allv("t_refused")), ms(allv("t_late")), ms(allv("t_started")),
            med("wasted_s"), med("wasted_bytes") // MiB))
    for mode, rs in runs.items():
        for r in rs:
            if r["errors"]:
                print("%s: launcher errors: %s" % (mode, r["errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
