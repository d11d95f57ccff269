#!/usr/bin/env python3
"""How long guests' devices pause when ebbd is upgraded or crashes, with
guests swapping through ebb the whole time (issue 15).

    python3 bench/restart.py [--guests 10] [--upgrades 20] [--crashes 10]
                             [--mem 128M] [--swap 256M] [--work 160M]

Each guest (--mem of RAM, a --swap device kept in host memory) runs
pagecheck over --work in a loop, so it swaps continuously and every page
it reads back is checked.  Then, one after the other:

  upgrade  `ebbctl upgrade`, --upgrades times, 1 s apart.  The pause is
           what the new image reports (info "restart", CLOCK_MONOTONIC on
           both sides of the exec): from the old image's last step before
           execve() to every guest's devices watched again ("adopted":
           from then on requests are served as usual), and to every guest
           served once ("served": the requests left in flight run again
           and one pass over each ring, guest after guest).
  crash    kill -9 of ebbd, then a new ebbd started at once on the same
           directories (as systemd's Restart= would), --crashes times.
           Crash to serving: from the kill to the first answer of the new
           ebbd's control socket with every guest adopted (measured here,
           so it includes starting the process); the adoption pause as
           the new ebbd reports it is the part after its start.

The fd holder is ebb-holder (PID 1 here is not systemd).  At the end every
pagecheck must report 0 mismatches and every guest must still run: a
benchmark whose guests lost pages has no numbers worth printing.

The whole scenario runs once per page-store backing (--backings, default
both, one after the other in this run): the store on 2 MiB host pages
(`--tmem-hugepages on`, ebbd's default) and in a memfd of 4 KiB pages
(`off`), so the two columns are measured on the same machine minutes
apart.  "stored" is the persistent pages in the store at each upgrade.
"""
import argparse
import json
import os
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
import ebbtest  # noqa: E402
import swapload  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def adopted_all(d, names):
    gl = d.c.call("guest-list")
    running = {g["name"] for g in gl["guests"] if g["state"] == "running"}
    return set(names) <= running and not gl["found"], gl


def scenario(a, hugepages):
    """One run of the workload, upgrades and crashes; lists of times (ms)."""
    names = ["b%d" % i for i in range(a.guests)]
    budget = swapload.budget(a.guests, a.mem, a.swap)
    extra = ["--tmem-hugepages", hugepages]
    d = ebbtest.Ebbd(budget=budget, extra_args=extra)
    workdir = d.dir
    r = {"pause": [], "served": [], "crash": [], "crash_adopt": [],
         "stored": [], "backing": d.c.call("info")["store_backing"]}
    try:
        swapload.start(d, names, a.mem, a.swap, a.work)
        time.sleep(5)  # every guest swapping
        for _ in range(a.upgrades):
            r["stored"].append(
                d.c.call("tmem")["total"]["persistent_pages"])
            out = d.ebbctl("--json", "upgrade")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            assert res["how"] == "upgrade" and res["adopted"] == a.guests, res
            r["pause"].append(res["pause_us"] / 1000.0)
            r["served"].append(res["served_us"] / 1000.0)
            d.c = d.client()
            time.sleep(1)
        for _ in range(a.crashes):
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            d.logf.close()
            d = ebbtest.Ebbd(budget=budget, workdir=workdir, extra_args=extra)
            ok, gl = adopted_all(d, names)
            r["crash"].append((time.monotonic() - t0) * 1000.0)
            assert ok, gl
            r["crash_adopt"].append(
                d.c.call("info")["restart"]["startup_us"] / 1000.0)
            time.sleep(1)
        swapload.check(d, names)
    finally:
        swapload.stop(d, names)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    swapload.add_arguments(ap)
    ap.add_argument("--upgrades", type=int, default=20)
    ap.add_argument("--crashes", type=int, default=10)
    ap.add_argument("--backings", default="on,off",
                    help="--tmem-hugepages values to run, in order")
    a = ap.parse_args()
    runs = [scenario(a, h) for h in a.backings.split(",")]

    def cell(v, f):
        return f(v) if v else "-"

    print("\n%d guests (%s RAM, %s swap, pagecheck over %s each), fd holder "
          "ebb-holder; every pagecheck pass 0 mismatches\n"
          % (a.guests, a.mem, a.swap, a.work))
    print("| what | " + " | ".join("store: %s p50 / p90 / max" % r["backing"]
                                   for r in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    rows = [
        ("pages stored at each upgrade", "stored",
         lambda v: "%d / %d / %d" % (statistics.median(v), pct(v, 90), max(v))),
        ("upgrade: device pause (exec to every guest adopted)", "pause", None),
        ("upgrade: exec to every guest served once", "served", None),
        ("crash: kill -9 to serving, new process started at once", "crash",
         None),
        ("crash: of which the adoption (start to served)", "crash_adopt",
         None),
    ]
    for label, key, f in rows:
        f = f or (lambda v: "%.1f / %.1f / %.1f ms" % (statistics.median(v),
                                                       pct(v, 90), max(v)))
        print("| %s | %s |" % (label, " | ".join(cell(r[key], f)
                                                  for r in runs)))
    if len(runs) == 2 and runs[0]["pause"] and runs[1]["pause"]:
        print("\npause p50 ratio %s / %s: %.2f" % (
            runs[0]["backing"], runs[1]["backing"],
            statistics.median(runs[0]["pause"]) /
            statistics.median(runs[1]["pause"])))
    print("\nreproduce: python3 bench/restart.py --guests %d --upgrades %d "
          "--crashes %d --mem %s --swap %s --work %s --backings %s"
          % (a.guests, a.upgrades, a.crashes, a.mem, a.swap, a.work,
             a.backings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
