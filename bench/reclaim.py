#!/usr/bin/env python3
"""How fast memory a guest frees comes back to the host, and at what host
CPU cost: page states (ebbd discards the guest's unused pages on demand)
against free page reporting and against the balloon, side by side.

    python3 bench/reclaim.py [--mem 256M] [--sizes 64,128,192] [--trials 3]

For each size N and each method, a fresh guest (--mem) runs `memhog N`
and exits it; the clock starts when the guest says memhog exited, and
stops when the guest's RAM file (read directly, every 5 ms, through the
UML process's descriptor) has lost 90% of N.  Each method runs in a guest
that has only that mechanism on:

  hinting    page_states on, reporting off: `guest-discard what=unused`
             right after the exit (what a policy would do on demand)
  reporting  reporting on (2 MiB blocks), page_states off: nothing to do
             but wait for the guest's reports
  balloon    both off: the balloon's target drops by N at the exit

Host CPU is the CPU time (user + system) of ebbd and of the guest's own
processes (its UML kernel and helpers) over that window.  Trials of the
three methods alternate, so the machine's noise spreads over all of them;
the table gives medians.
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
METHODS = ("hinting", "reporting", "balloon")
TICK = os.sysconf("SC_CLK_TCK")
LIMIT_S = 30  # a method that has not given 90% back by then has "-"


def ram_file_bytes(pid, mem):
    """Allocated bytes of the guest's RAM file: UML keeps the deleted
    tmpfs file open, so its descriptor still answers fstat."""
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            st = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000 and st.st_size >= mem:
            return st.st_blocks * 512
    raise RuntimeError("no RAM file open in pid %d" % pid)


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime
    return total / TICK


def session_pids(sid):
    """Every process in the guest's session (UML runs helper processes)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.getsid(int(p)) == sid:
                out.append(int(p))
        except OSError:
            pass
    return out


def trial(d, method, mem, size, n):
    name = "r%d-%s-%d" % (n, method, size // MiB)
    d.run(name, mem, reporting=(method == "reporting"),
          page_states=(method == "hinting"))
    pid = d.guest(name)["pid"]
    ebbtest.guest_exec_ok(d, name, "memhog %dM --hold 1" % (size // MiB))
    # The exit line is out: memhog's pages are free in the guest now.
    t0 = time.monotonic()
    peak = ram_file_bytes(pid, mem)
    pids = session_pids(pid) + [d.proc.pid]
    c0 = cpu_seconds(pids)
    if method == "hinting":
        d.c.call("guest-discard", name=name, what="unused")
    elif method == "balloon":
        d.c.call("balloon", name=name, target=mem - size)
    goal = peak - size * 9 // 10
    took = None  # not back within the limit
    while time.monotonic() - t0 < LIMIT_S:
        if ram_file_bytes(pid, mem) <= goal:
            took = time.monotonic() - t0
            break
        time.sleep(0.005)
    cpu = cpu_seconds(pids) - c0
    # A stopped guest stays listed (its slot is reused by name only), so
    # every trial boots a guest of its own name.
    d.c.call("guest-stop", name=name)
    d.wait_until(lambda: d.guest(name)["state"] == "stopped", 30, "guest %s stopped" % name)
    return took, cpu


def median_time(trials):
    """Median time, counting a trial that never got there as slowest;
    None if most never got there."""
    ts = sorted(float("inf") if t is None else t for t, _ in trials)
    med = ts[len(ts) // 2]
    return None if med == float("inf") else med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--sizes", default="64,128,192", help="MiB freed, comma-separated")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    mem = ebbtest.parse_size(args.mem)
    sizes = [int(s) * MiB for s in args.sizes.split(",")]

    res = {}
    with ebbtest.Ebbd(budget="2G") as d:
        for n in range(args.trials):
            for size in sizes:
                for m in METHODS:
                    res.setdefault((m, size), []).append(trial(d, m, mem, size, n))

    print("Freed memory back on the host (90%% of N), guest mem=%s, median of %d trials\n"
          % (args.mem, args.trials))
    print("| N (MiB) | method | time (ms) | host CPU (ms) | time vs reporting |")
    print("|---:|---|---:|---:|---:|")
    for size in sizes:
        rep = median_time(res[("reporting", size)])
        for m in METHODS:
            med = median_time(res[(m, size)])
            cs = [c for _, c in res[(m, size)]]
            ratio = "-" if med is None or rep is None else \
                "1x" if m == "reporting" else "%.1fx faster" % (rep / med)
            print("| %d | %s | %s | %.0f | %s |"
                  % (size // MiB, m, "-" if med is None else "%.0f" % (med * 1e3),
                     statistics.median(cs) * 1e3, ratio))
    print("\nReproduce: python3 bench/reclaim.py --mem %s --sizes %s --trials %d"
          % (args.mem, args.sizes, args.trials))


if __name__ == "__main__":
    main()
