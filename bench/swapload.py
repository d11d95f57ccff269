"""The swap workload bench/restart.py and bench/daemon_cpu.py share: UML
guests, each with an ebb swap device, running pagecheck over more than
their RAM in a loop, so they swap through ebb continuously and check
every page they read back."""
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from ebbtest import MiB  # noqa: E402


def add_arguments(ap):
    """The workload's options on an argparse parser."""
    ap.add_argument("--guests", type=int, default=10)
    ap.add_argument("--mem", default="128M")
    ap.add_argument("--swap", default="256M")
    ap.add_argument("--work", default="160M")


def size(s):
    return int(float(s[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[s[-1]])


def budget(guests, mem, swap):
    """A budget that fits every guest's RAM and swap, and some room."""
    return "%dM" % (guests * (size(mem) + size(swap)) // MiB + 512)


def start(d, names, mem, swap, work):
    """Launch the guests and start each one's pagecheck loop."""
    for n in names:
        d.run(n, size(mem), swap=size(swap))
    for n in names:  # ebb's init swaps onto ebb's swap device itself
        d.wait_console(n, r"ebb-guest: swap on /dev/vd", 60)
    for i, n in enumerate(names):
        d.c.call("guest-exec", name=n,
                 command="pagecheck write %s %d --hold 1 --passes 100000"
                 % (work, 100 + i))


def check(d, names):
    """Every guest still running and every pagecheck pass 0 mismatches,
    or SystemExit: a benchmark that lost pages has no numbers to print."""
    bad = []
    for n in names:
        fails = [l for l in d.console(n).splitlines()
                 if "pagecheck: pass" in l and not l.endswith(" 0 mismatches")]
        if fails:
            bad.append((n, fails[:3]))
        if d.guest(n)["state"] != "running":
            bad.append((n, "not running"))
    if bad:
        raise SystemExit("guests lost pages or died: %s" % bad)


def stop(d, names):
    """Kill the guests (they outlive ebbd by design), then ebbd."""
    for n in names:
        try:
            os.killpg(d.guest(n)["pid"], signal.SIGKILL)
        except Exception:
            pass
    d.owns_dir = True
    d.stop()
