#!/usr/bin/env python3
"""Seed 001, experiment 2, reproduced on a small host: three guests run
memhog one after another on a host with swap; does the third run take as
long as the first?

    python3 bench/policy_seed.py [--reps 3] [--configs off,hinting,policy,all]

The seed (free page hinting v10, 2019): a 15 GB host with 4 GB of swap,
three 6 GB guests, `memhog 6G` in each in turn.  Without hinting 47 s,
53 s, 215 s (the third guest's memory has to come out of host swap);
with hinting 40 s, 44 s, 37 s.  Here, scaled to this machine (guest =
0.4 x host, as in the seed): the host is a memory cgroup of 768 MiB with a
1 GiB swap file (tests/e2e/smallhost.py), ebbd's budget 640 MiB (the rest
is ebbd's and the UML processes' own memory), three 320 MiB guests
(min 64M), each running `memhog 280M` three times in a row (one "run";
the seed's memhog passes over its memory more than once too), 3 s apart.

Configurations, one ebbd each, every guest the same:

  off      nothing gives memory back: no policy, no free page reporting,
           no page states (the seed's "without hinting")
  hinting  free page reporting and page states, no policy (the seed's
           "with hinting")
  policy   the policy alone: no reporting, no page states (balloons)
  all      the policy with reporting and page states (ebb's default)

Per run: wall time (guest-exec to the exit marker), host swap-out and
swap-in during it (/proc/vmstat pswpout/pswpin: host-wide, but the small
host's swap file is the only one this benchmark adds), and the guests'
major faults (balloon statistics, all guests).  Medians over --reps.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402
from smallhost import SmallHost, vmstat  # noqa: E402

MiB = 1 << 20
CONFIGS = {
    "off": dict(policy="off", reporting=False, page_states=False),
    "hinting": dict(policy="off", reporting=True, page_states=True),
    "policy": dict(policy="on", reporting=False, page_states=False),
    "all": dict(policy="on", reporting=True, page_states=True),
}


def major_faults(d, names):
    total = 0
    for n in names:
        st = d.c.call("guest-stats", name=n)["stats"]
        total += st.get("major_faults", 0)
    return total


def one(cfg, args):
    names = ["g1", "g2", "g3"]
    runs = []
    with SmallHost(mem=args.host, swap=args.swap) as h:
        with ebbtest.Ebbd(budget=args.budget, cgroup=h,
                          extra_args=["--policy", cfg["policy"]]) as d:
            for n in names:
                d.run(n, args.guest, min=64 * MiB, reporting=cfg["reporting"],
                      page_states=cfg["page_states"])
            time.sleep(2)
            cmd = "memhog %s; memhog %s; memhog %s" % ((args.hog,) * 3)
            for n in names:
                v0, mf0 = vmstat(), major_faults(d, names)
                t0 = time.monotonic()
                status, out = d.exec(n, cmd)
                dt = time.monotonic() - t0
                time.sleep(1.2)    # the guests' next statistics report
                v1, mf1 = vmstat(), major_faults(d, names)
                runs.append({
                    "s": dt, "ok": status == 0,
                    "out": (v1["pswpout"] - v0["pswpout"]) * 4096,
                    "in": (v1["pswpin"] - v0["pswpin"]) * 4096,
                    "mf": mf1 - mf0,
                })
                time.sleep(args.gap)
            pol = d.c.call("policy")
            st = h.stats()
    return runs, pol, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--configs", default="off,hinting,policy,all")
    ap.add_argument("--host", default="768M")
    ap.add_argument("--swap", default="1G")
    ap.add_argument("--budget", default="640M")
    ap.add_argument("--guest", default="320M")
    ap.add_argument("--hog", default="280M")
    ap.add_argument("--gap", type=float, default=3.0)
    args = ap.parse_args()
    configs = args.configs.split(",")
    res = {c: [] for c in configs}
    extra = {c: [] for c in configs}
    for rep in range(args.reps):
        for c in configs:       # alternate, so noise spreads over all
            runs, pol, st = one(CONFIGS[c], args)
            res[c].append(runs)
            extra[c].append((pol, st))
            print("rep %d %-8s %s  oom %d  policy actions %d" % (
                rep + 1, c, "  ".join("%.1fs/%dM/%dM/%d" % (
                    r["s"], r["out"] >> 20, r["in"] >> 20, r["mf"]) for r in runs),
                st["oom_kill"],
                sum(v["actions"] for v in pol["counters"].values())), flush=True)

    med = statistics.median
    print()
    print("command: python3 bench/policy_seed.py --reps %d --configs %s "
          "(host %s + %s swap, budget %s, 3 x %s guests, 3 x memhog %s per run)"
          % (args.reps, args.configs, args.host, args.swap, args.budget,
             args.guest, args.hog))
    print()
    print("| config | run 1 s | run 2 s | run 3 s | run 3 / run 1 | host swap-out MiB "
          "(1/2/3) | host swap-in MiB (1/2/3) | guests' major faults (1/2/3) | "
          "policy actions | failed runs |")
    print("|---|---:|---:|---:|---:|---|---|---|---:|---:|")
    for c in configs:
        rr = res[c]
        t = [med(r[i]["s"] for r in rr) for i in range(3)]
        so = "/".join("%d" % (med(r[i]["out"] for r in rr) >> 20) for i in range(3))
        si = "/".join("%d" % (med(r[i]["in"] for r in rr) >> 20) for i in range(3))
        mf = "/".join("%d" % med(r[i]["mf"] for r in rr) for i in range(3))
        acts = med(sum(v["actions"] for v in p["counters"].values())
                   for p, _ in extra[c])
        bad = sum(not x["ok"] for r in rr for x in r)
        print("| %s | %.1f | %.1f | %.1f | %.2fx | %s | %s | %s | %d | %d |" % (
            c, t[0], t[1], t[2], t[2] / t[0], so, si, mf, acts, bad))


if __name__ == "__main__":
    main()
