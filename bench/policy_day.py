#!/usr/bin/env python3
"""A day in the life of a small overcommitted host: guests whose demand
changes, under three ways of running the host.

    python3 bench/policy_day.py [--reps 3] [--png bench/policy_day.png]

(matplotlib from Debian's python3-matplotlib: run it with Debian's
python3, /usr/bin/python3, where another python3 comes first in PATH.)

The host: a memory cgroup of 576 MiB with a 1 GiB swap file
(tests/e2e/smallhost.py), ebbd's budget 448 MiB, three 256 MiB guests
(768 MiB configured, min 64M), each with a 96 MiB read-only data disk
(its reads cached in host memory, tmem ephemeral pages) and free page
reporting and page states on.  Each guest lives the same day, started
15 s after the previous one:

  alloc   memhog 150M held 5 s          (a job comes and goes)
  idle    10 s
  cache   dd its disk to /dev/null, 3 x (cache-heavy reads)
  idle    5 s
  burst   memhog 200M                    (a spike)
  idle    10 s

Ways to run the host:

  off     ebbd --policy off: guests keep what they touch until they free
          it (reporting and page states still return freed memory)
  static  ebbd --policy off and a MOM-like rule in this script: every 10 s
          each guest's balloon is set to its use plus 32 MiB (MemTotal -
          MemAvailable + 32M, at least its min)
  ebb     ebbd's policy (default settings: watermarks 1/16 and 1/8 of the
          budget): reclaims only when the host is short
  trim    ebbd's policy with --policy-trim 16M: above the high watermark
          too, idle guests holding more than 64 MiB beyond their use give
          16 MiB a second

Measured: the host footprint (the pool's resident + store, and the
cgroup's usage, sampled every 0.5 s; average and peak), guest slowdown
(each phase's wall time against the same guest alone on a host with room
and no policy; the day's total, median over guests), host swap I/O
(/proc/vmstat, host-wide) and how often the loop acted (policy actions;
balloon changes for the static rule).  The footprint over time is drawn
to --png (matplotlib).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import ebbtest  # noqa: E402
from smallhost import SmallHost, vmstat  # noqa: E402

MiB = 1 << 20
PHASES = [
    ("alloc", "memhog 150M --hold 5", 10),
    ("cache", "dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null; "
              "dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null; "
              "dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null", 5),
    ("burst", "memhog 200M", 10),
]
STAGGER_S = 15


def disk_image(path, size=96 * MiB):
    if not os.path.exists(path) or os.path.getsize(path) != size:
        with open(path, "wb") as f:
            f.write(os.urandom(size // 2) + bytes(size // 2))
    return path


def exec_timed(d, c, name, command, timeout=300):
    """Run @command on @name's console through client @c; wall seconds."""
    start = len(d.console(name))
    t0 = time.monotonic()
    c.call("guest-exec", name=name, command=command)
    d.wait_console(name, r"ebb-guest: exit (\d+) " + re.escape(command), timeout, start)
    return time.monotonic() - t0


def guest_day(d, name, offset, out):
    c = d.client()
    time.sleep(offset)
    for phase, cmd, idle in PHASES:
        out[(name, phase)] = exec_timed(d, c, name, cmd)
        time.sleep(idle)
    c.close()


def static_rule(d, names, stop, counter):
    """MOM-like: every 10 s, balloon each guest to its use + 32 MiB."""
    c = d.client()
    while not stop.wait(10):
        for n in names:
            st = c.call("guest-stats", name=n)["stats"]
            if "total" not in st or "available" not in st:
                continue
            target = max(64 * MiB, st["total"] - st["available"] + 32 * MiB)
            target = min(256 * MiB, (target + MiB - 1) // MiB * MiB)
            cur = c.call("guest-stats", name=n)["balloon_actual"]
            if abs(cur - target) >= 4 * MiB:
                c.call("balloon", name=n, target=target)
                counter[0] += 1
    c.close()


def sampler(d, h, stop, series):
    c = d.client()
    t0 = time.monotonic()
    while not stop.wait(0.5):
        info = c.call("info")
        st = h.stat()
        series.append((time.monotonic() - t0, (info["resident"] + info["store"]) / MiB,
                       h.usage() / MiB, st.get("total_swap", 0) / MiB))
    c.close()


def boot(d, names, image):
    for n in names:
        d.run(n, 256 * MiB, min=64 * MiB, disk=image, disk_ro=True)


def baseline(image):
    """Each phase of one guest alone, on a host with room, policy off."""
    times = {}
    with ebbtest.Ebbd(budget="2G", extra_args=["--policy", "off"]) as d:
        boot(d, ["solo"], image)
        time.sleep(2)
        guest_day(d, "solo", 0, times)
    return {p: times[("solo", p)] for p, _, _ in PHASES}


def one(mode, args, image):
    names = ["web", "db", "batch"]
    times, series, counter = {}, [], [0]
    extra = ["--policy", "on" if mode in ("ebb", "trim") else "off"]
    if mode == "trim":
        extra += ["--policy-trim", "16M"]
    with SmallHost(mem=args.host, swap=args.swap) as h:
        with ebbtest.Ebbd(budget=args.budget, cgroup=h, extra_args=extra) as d:
            boot(d, names, image)
            time.sleep(2)
            v0 = vmstat()
            stop = threading.Event()
            threads = [threading.Thread(target=sampler, args=(d, h, stop, series))]
            if mode == "static":
                threads.append(threading.Thread(target=static_rule,
                                                args=(d, names, stop, counter)))
            days = [threading.Thread(target=guest_day, args=(d, n, i * STAGGER_S, times))
                    for i, n in enumerate(names)]
            for t in threads + days:
                t.start()
            for t in days:
                t.join()
            stop.set()
            for t in threads:
                t.join()
            v1 = vmstat()
            pol = d.c.call("policy")
            actions = (sum(v["actions"] for v in pol["counters"].values())
                       if mode in ("ebb", "trim") else counter[0])
            oom = h.oom_kills()
            killed = sum(bool(re.search(r"Killed process", d.console(n))) for n in names)
    return {"times": times, "series": series, "actions": actions,
            "swap_out": (v1["pswpout"] - v0["pswpout"]) * 4096,
            "swap_in": (v1["pswpin"] - v0["pswpin"]) * 4096,
            "oom": oom + killed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="off,static,ebb,trim")
    ap.add_argument("--host", default="576M")
    ap.add_argument("--swap", default="1G")
    ap.add_argument("--budget", default="448M")
    ap.add_argument("--png", default=os.path.join(HERE, "policy_day.png"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    image = disk_image("/var/tmp/ebb-policy-day.img")
    base = baseline(image)
    print("baseline (alone, room, no policy): %s" % ", ".join(
        "%s %.1fs" % (p, base[p]) for p in base), flush=True)
    results = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes:
            r = one(m, args, image)
            results[m].append(r)
            fp = [s[1] for s in r["series"]]
            print("rep %d %-6s avg %.0f MiB peak %.0f MiB, actions %d, slowdown %s, "
                  "small host swap peak %.0f MiB" % (
                      rep + 1, m, statistics.mean(fp), max(fp), r["actions"],
                      " ".join("%.1f" % r["times"][k] for k in sorted(r["times"])),
                      max(s[3] for s in r["series"])), flush=True)

    med = statistics.median
    print()
    print("command: python3 bench/policy_day.py --reps %d (host %s + %s swap, budget %s, "
          "3 x 256M guests, phases alloc/idle/cache/idle/burst/idle, staggered %d s)"
          % (args.reps, args.host, args.swap, args.budget, STAGGER_S))
    print()
    print("| mode | avg footprint MiB | peak MiB | avg cgroup usage MiB | slowdown "
          "(day, median guest) | alloc | cache | burst | small host's swap, peak MiB | "
          "host swap-out / in MiB (host-wide) | loop actions | OOM kills |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    rows = {}
    for m in modes:
        rr = results[m]
        avg = med(statistics.mean(s[1] for s in r["series"]) for r in rr)
        peak = med(max(s[1] for s in r["series"]) for r in rr)
        cg = med(statistics.mean(s[2] for s in r["series"]) for r in rr)
        names = sorted({k[0] for k in rr[0]["times"]})
        day = med(med(sum(r["times"][(n, p)] for p, _, _ in PHASES) /
                      sum(base.values()) for n in names) for r in rr)
        ph = {p: med(med(r["times"][(n, p)] / base[p] for n in names) for r in rr)
              for p, _, _ in PHASES}
        rows[m] = (avg, day)
        swp = med(max(s[3] for s in r["series"]) for r in rr)
        print("| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx | %.2fx | %.0f | %d / %d | %d | %d |"
              % (m, avg, peak, cg, day, ph["alloc"], ph["cache"], ph["burst"], swp,
                 med(r["swap_out"] for r in rr) >> 20, med(r["swap_in"] for r in rr) >> 20,
                 med(r["actions"] for r in rr), max(r["oom"] for r in rr)))
    for m in ("ebb", "trim"):
        if m in rows and "static" in rows:
            print("%s vs static: average footprint %.2fx, slowdown %.2fx" % (
                m, rows[m][0] / rows["static"][0], rows[m][1] / rows["static"][1]))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: apt-get install python3-matplotlib for the plot)")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for m in modes:
        s = results[m][0]["series"]
        ax.plot([x[0] for x in s], [x[1] for x in s], label=m)
    ax.axhline(parse(args.budget) / MiB, color="grey", linestyle="--", label="budget")
    ax.set_xlabel("seconds")
    ax.set_ylabel("host footprint, MiB (resident + store)")
    ax.set_title("A day in the life: 3 x 256 MiB guests on a %s budget" % args.budget)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print("plot: %s" % args.png)


def parse(s):
    return ebbtest.parse_size(s)


if __name__ == "__main__":
    main()
