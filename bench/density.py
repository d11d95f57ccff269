#!/usr/bin/env python3
"""density: how many guests fit on a fixed host budget, with and without
free page reporting -- a small-scale rerun of the "guests launched without
swap" experiment from the page hinting thread (seeds/001: a 15 GB host,
5 GB guests that each touch 4 GB and exit: 3 fit without hinting, 5 with).

Here: ebbd gets --budget (default 2G); guests of --guest-mem (512M) are
launched one after another; each runs `memhog --hog` (400M) once, then
idles.  After memhog prints "memhog: done" the guest is given --settle
seconds (3) for free page reporting, then every guest's host-resident size
(allocated blocks of its RAM file, `resident` in guest-list) is summed.
The count is the number of guests launched while that sum stayed within
the budget: the launch that pushes it over does not count (on a real host
that is the guest that would make it swap).  It stops there, or at
--max-guests (printed as ">= N (cap)").

The whole thing runs twice in the same invocation, each in its own ebbd:
first with reporting off (guest-run reporting=false: the balloon device
does not offer free page reporting), then on.  For the reporting-on run it
also times memhog's exit (the wall time "memhog: done" is first seen on
the console, polled every 50 ms) to the host footprint drop (the guest's
resident fell by at least 90% of the hogged amount, guest-list polled every
50 ms).

Admission: ebbd stakes a claim for every launch.  A claim of the full
guest size would stop the no-reporting run at budget/guest-mem launches
(outstanding claims of guests that never grew to their full size count
too), which is a different experiment; so guests are launched with
min=--min (default 64M), and the budget is checked against what is
resident.  A refused launch is reported as the stopping reason.

A third table: balloon inflate speed end to end.  A separate ebbd and one
guest of 256M (reporting off, so the balloon is the only way back), which
first touches --balloon-hog (192M) so the pages it will give up are
host-resident, then is ballooned down to 64M; timed from the balloon
command to BALLOON_TARGET_REACHED, with ebbd's `returned` counter and the
guest's resident before and after.  Repeated --balloon-reps times
(deflate back to 256M and re-touch in between), after one "cold" inflate
right after boot (pages never touched: little to unmap or free).

Usage: bench/density.py [--budget 2G] [--guest-mem 512M] [--hog 400M]
                        [--max-guests 12] [--build BUILD_DIR] ...
"""
import argparse
import os
import re
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))

MiB = 1 << 20
SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)(?:i?B)?", s.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r" % s)
    return int(m.group(1)) * SUFFIX[m.group(2).upper()]


def mib(b):
    return "%d" % round(b / MiB)


class Console:
    """Reads a guest's console log incrementally (cheap to poll)."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.buf = ""

    def mark(self):
        self.poll()
        self.buf = ""

    def poll(self):
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.pos)
                new = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return self.buf
        self.buf += new
        return self.buf

    def wait(self, pattern, timeout, interval=0.05):
        """Poll until `pattern` appears after the mark; returns the wall
        time it was first seen."""
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while True:
            if rx.search(self.poll()):
                return time.time()
            if time.time() > deadline:
                raise ebbtest.TestFailure("no /%s/ within %ss; console tail:\n%s"
                                          % (pattern, timeout, self.buf[-1500:]))
            time.sleep(interval)


def residents(d):
    return {g["name"]: g for g in d.c.call("guest-list")["guests"]}


def density_run(reporting, a):
    """One ebbd, guests launched until the budget is exceeded or the cap.
    Returns a dict of results."""
    tag = "on" if reporting else "off"
    res = {"reporting": reporting, "steps": [], "stop": None, "fit": 0,
           "drops": [], "failed": []}
    print("\n== reporting %s: budget %s, guests %s, memhog %s ==" %
          (tag, a.budget_s, a.guest_mem_s, a.hog_s), flush=True)
    t_run = time.time()
    t_last = t_run
    with ebbtest.Ebbd(budget=a.budget_s) as d:
        for i in range(1, a.max_guests + 1):
            name = "%s%d" % (tag, i)
            step = {"name": name}
            try:
                d.run(name, a.guest_mem, wait=False, min=a.min,
                      reporting=reporting)
            except ebbtest.CommandError as e:
                res["stop"] = "launch %d refused: %s" % (i, e.desc)
                print("  " + res["stop"], flush=True)
                break
            t_boot = time.time()
            try:
                d.wait_ready(name, timeout=120)
            except ebbtest.TestFailure as e:
                res["failed"].append((name, "boot: %s" % str(e).splitlines()[0]))
                res["stop"] = "%s did not boot" % name
                break
            step["boot_s"] = time.time() - t_boot
            # Reporting of the boot's free memory: let it settle first, so
            # the drop measured later is memhog's alone.
            time.sleep(a.settle)
            step["boot_res"] = residents(d)[name]["resident"]

            con = Console(d.console_path(name))
            con.mark()
            cmd = "memhog %s" % a.hog_s
            t_exec = time.time()
            d.c.call("guest-exec", name=name, command=cmd)
            try:
                con.wait(r"memhog: touched", a.hog_timeout)
                t_touched = time.time()
                step["peak_res"] = residents(d)[name]["resident"]
                t_done = con.wait(r"memhog: done", 60)
            except ebbtest.TestFailure as e:
                res["failed"].append((name, str(e).splitlines()[0]))
                res["stop"] = "%s: memhog did not finish" % name
                break
            step["hog_s"] = t_touched - t_exec
            # Footprint drop: resident <= (resident before memhog) + 10% of
            # the hog, i.e. at least 90% of what memhog added came back.
            if reporting:
                limit = step["boot_res"] + a.hog // 10
                deadline = t_done + a.drop_timeout
                t_drop = None
                while time.time() < deadline:
                    r = residents(d)[name]["resident"]
                    if r <= limit:
                        t_drop = time.time()
                        break
                    time.sleep(0.05)
                step["drop_s"] = None if t_drop is None else t_drop - t_done
                if t_drop is not None:
                    res["drops"].append(t_drop - t_done)
            left = t_done + a.settle - time.time()
            if left > 0:
                time.sleep(left)
            gs = residents(d)
            g = gs[name]
            step["idle_res"] = g["resident"]
            step["reported"] = g["reported"]
            step["returned"] = g["returned"]
            step["sum"] = sum(x["resident"] for x in gs.values())
            step["pool"] = d.c.call("info")["resident"]
            step["over"] = step["sum"] > a.budget
            t_last = t_done
            res["steps"].append(step)
            print("  %-5s boot %4.1fs res %4s MiB | memhog %5.1fs peak %4s MiB | "
                  "idle %4s MiB%s | sum %5s MiB%s" % (
                      name, step["boot_s"], mib(step["boot_res"]), step["hog_s"],
                      mib(step["peak_res"]), mib(step["idle_res"]),
                      "" if not reporting else
                      (" drop %.2fs" % step["drop_s"] if step["drop_s"] is not None
                       else " no drop"),
                      mib(step["sum"]), "  > budget" if step["over"] else ""),
                  flush=True)
            if step["over"]:
                res["stop"] = ("launch %d took the sum to %s MiB > budget %s MiB"
                               % (i, mib(step["sum"]), mib(a.budget)))
                break
            res["fit"] = i
        else:
            res["stop"] = "cap (%d guests), Σ %s MiB" % (
                a.max_guests, mib(res["steps"][-1]["sum"]))
            res["capped"] = True
        # Let the last guest's reporting finish too (it comes in passes
        # 2 s apart) before the end-of-run snapshot.
        left = t_last + a.final_settle - time.time()
        if res["steps"] and left > 0:
            time.sleep(left)
        res["tail_s"] = time.time() - t_last if res["steps"] else 0
        gs = residents(d)
        res["final"] = [(n, gs[n]["resident"]) for n in sorted(gs, key=lambda n: int(n[len(tag):]))]
        for s in res["steps"]:
            s["end_res"] = gs[s["name"]]["resident"]
        for n, g in gs.items():
            if g["state"] not in ("running", "starting"):
                res["failed"].append((n, "state %s at the end" % g["state"]))
        for n in gs:
            try:
                d.c.call("guest-stop", name=n, force=True)
            except ebbtest.CommandError:
                pass
        d.wait_until(lambda: all(g["state"] in ("stopped", "failed")
                                 for g in residents(d).values()), 30,
                     "guests stopped")
    res["elapsed"] = time.time() - t_run
    print("  -> %s fit; stopped: %s (%.0f s)" % (
        fit_str(res, a), res["stop"], res["elapsed"]), flush=True)
    return res


def fit_str(res, a):
    return ("≥ %d (cap)" % res["fit"]) if res.get("capped") else str(res["fit"])


def balloon_run(a):
    print("\n== balloon inflate %s -> %s ==" % (a.balloon_mem_s, a.balloon_target_s),
          flush=True)
    rows = []
    with ebbtest.Ebbd(budget=a.budget_s) as d:
        name = "bal"
        d.run(name, a.balloon_mem, reporting=False)
        con = Console(d.console_path(name))
        time.sleep(a.settle)
        # Rep 0 "cold": right after boot; the pages the guest gives up were
        # mostly never touched, so there is little to free or unmap.  Then
        # "hot" reps: deflate, memhog (the pages become host-resident and
        # mapped in the guest), inflate again.
        for rep in range(a.balloon_reps + 1):
            if rep:
                d.c.call("balloon", name=name, target=a.balloon_mem)
                d.c.wait_event("BALLOON_TARGET_REACHED",
                               lambda e: e["name"] == name, 60)
                con.mark()
                d.c.call("guest-exec", name=name,
                         command="memhog %s" % a.balloon_hog_s)
                con.wait(r"ebb-guest: exit \d+ memhog", a.hog_timeout)
                time.sleep(1)
            g0 = residents(d)[name]
            t0 = time.time()
            d.c.call("balloon", name=name, target=a.balloon_target)
            d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == name, 60)
            t = time.time() - t0
            time.sleep(0.6)   # one accounting period, so resident is fresh
            g1 = residents(d)[name]
            row = {"kind": "hot" if rep else "cold", "t": t, "returned": g1["returned"] - g0["returned"],
                   "inflated": g1["inflated"] - g0["inflated"],
                   "res0": g0["resident"], "res1": g1["resident"]}
            rows.append(row)
            print("  %s: %.3f s, returned %s MiB, resident %s -> %s MiB"
                  % (row["kind"], t, mib(row["returned"]), mib(row["res0"]),
                     mib(row["res1"])), flush=True)
        d.c.call("guest-stop", name=name, force=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="2G")
    p.add_argument("--guest-mem", default="512M")
    p.add_argument("--hog", default="400M")
    p.add_argument("--max-guests", type=int, default=12)
    p.add_argument("--min", default="64M", help="claim per launch (guest-run min)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds after boot / after memhog exit before measuring")
    p.add_argument("--final-settle", type=float, default=8.0,
                   help="seconds after the last memhog exit before the end snapshot")
    p.add_argument("--drop-timeout", type=float, default=20.0)
    p.add_argument("--hog-timeout", type=float, default=240.0)
    p.add_argument("--balloon-mem", default="256M")
    p.add_argument("--balloon-target", default="64M")
    p.add_argument("--balloon-hog", default="192M")
    p.add_argument("--balloon-reps", type=int, default=3)
    p.add_argument("--only", choices=["off", "on", "balloon"], action="append",
                   help="run only these parts (default: all)")
    p.add_argument("--build", help="build directory (default $EBB_BUILD or build)")
    a = p.parse_args()
    if a.build:
        os.environ["EBB_BUILD"] = os.path.abspath(a.build)
    global ebbtest
    import ebbtest  # noqa: E402  (after EBB_BUILD is set)
    for k in ("budget", "guest_mem", "hog", "min", "balloon_mem",
              "balloon_target", "balloon_hog"):
        s = getattr(a, k)
        setattr(a, k + "_s", s)
        setattr(a, k, parse_size(s))
    parts = a.only or ["off", "on", "balloon"]

    t0 = time.time()
    results = {}
    for part in ("off", "on"):
        if part in parts:
            results[part] = density_run(part == "on", a)
    brows = balloon_run(a) if "balloon" in parts else None

    repro = "bench/density.py " + " ".join(sys.argv[1:])
    print("\n---\n")
    print("Reproduce: `%s`  (%.0f s in all)\n" % (repro.strip(), time.time() - t0))
    if results:
        print("Guests launched without swap: budget %s, guests of %s each "
              "running `memhog %s` once, launched one at a time; a guest fits "
              "if Σ resident ≤ budget %.0f s after its memhog exits.\n"
              % (a.budget_s, a.guest_mem_s, a.hog_s, a.settle))
        print("| free page reporting | guests that fit | stopped because | "
              "boot footprint (MiB, median) | resident after settle (MiB, median) | "
              "resident at the end (MiB, median) | memhog %s (s, median) |" % a.hog_s)
        print("|---|---:|---|---:|---:|---:|---:|")
        for part, r in results.items():
            st = r["steps"]
            fitting = st[:r["fit"]] or st
            print("| %s | %s | %s | %s | %s | %s | %s |" % (
                part, fit_str(r, a), r["stop"],
                mib(statistics.median(s["boot_res"] for s in st)) if st else "-",
                mib(statistics.median(s["idle_res"] for s in fitting)) if st else "-",
                mib(statistics.median(s["end_res"] for s in fitting)) if st else "-",
                "%.1f" % statistics.median(s["hog_s"] for s in st) if st else "-"))
        if "off" in results and "on" in results:
            off, on = results["off"]["fit"], results["on"]["fit"]
            ratio = ("%.1f×" % (on / off)) if off else "∞"
            if results["on"].get("capped"):
                ratio = "≥ " + ratio
            print("\nratio on/off: %s (the issue asks for ≥ 3×)" % ratio)
        for part, r in results.items():
            print("\nPer guest, reporting %s (MiB).  After settle: %.0f s after "
                  "`memhog: done`, or when the drop was seen if later; Σ = all "
                  "guests' resident then; pool = ebbd's accounted total then; "
                  "at the end: before the guests were stopped (%.0f s after the "
                  "last launch's memhog).\n" % (part, a.settle, r["tail_s"]))
            print("| guest | boot resident | resident at `touched` | resident after settle | "
                  "reported | returned | %sΣ resident | pool | resident at the end |"
                  % ("drop after `done` (s) | " if part == "on" else ""))
            print("|---|---:|---:|---:|---:|---:|%s---:|---:|---:|"
                  % ("---:|" if part == "on" else ""))
            for s in r["steps"]:
                drop = ""
                if part == "on":
                    drop = ("%.2f | " % s["drop_s"]) if s["drop_s"] is not None \
                        else "> %.0f | " % a.drop_timeout
                print("| %s | %s | %s | %s | %s | %s | %s%s%s | %s | %s |" % (
                    s["name"], mib(s["boot_res"]), mib(s["peak_res"]),
                    mib(s["idle_res"]), mib(s["reported"]), mib(s["returned"]),
                    drop, mib(s["sum"]), " (> budget)" if s["over"] else "",
                    mib(s["pool"]), mib(s["end_res"])))
            if r["failed"]:
                print("failed: " + "; ".join("%s: %s" % f for f in r["failed"]))
        if "on" in results and results["on"]["drops"]:
            dr = results["on"]["drops"]
            print("\nmemhog exit → host footprint drop (≥ 90%% of %s back), "
                  "reporting on, %d guests: median %.2f s, max %.2f s, min %.2f s"
                  % (a.hog_s, len(dr), statistics.median(dr), max(dr), min(dr)))
    if brows:
        moved = a.balloon_mem - a.balloon_target
        print("\nBalloon inflate %s→%s (%s MiB given up) of one %s guest, reporting off; "
              "time from the balloon command to BALLOON_TARGET_REACHED:\n"
              % (a.balloon_mem_s, a.balloon_target_s, mib(moved), a.balloon_mem_s))
        print("| run | guest before the inflate | time (ms) | MiB/s | returned (MiB) | "
              "resident before → after (MiB) |")
        print("|---|---|---:|---:|---:|---|")
        for r in brows:
            print("| %s | %s | %.0f | %.0f | %s | %s → %s |" % (
                r["kind"], "just booted" if r["kind"] == "cold" else
                "deflated, then `memhog %s`" % a.balloon_hog_s,
                r["t"] * 1e3, moved / MiB / r["t"], mib(r["returned"]),
                mib(r["res0"]), mib(r["res1"])))
        hot = [r["t"] for r in brows if r["kind"] == "hot"]
        if hot:
            print("| hot, median of %d | | %.0f | %.0f | | |" % (
                len(hot), statistics.median(hot) * 1e3,
                moved / MiB / statistics.median(hot)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
