#!/usr/bin/env python3
"""
hugepages: do guests keep their RAM on whole 2 MiB host pages while memory
moves (issue 13)?  Side by side in one run:

  plain      RAM file on /dev/shm (ebbd's default; 4 KiB host pages here)
  huge-keep  ebbd --ram-hugepages: huge tmpfs, 4 KiB leftovers wait for
             their block (--block-wait, default 10 s)
  huge-now   ebbd --ram-hugepages --block-wait 0: huge tmpfs, every freed
             page punched at once (what QEMU does: the shattering baseline)

For each: boot a guest, touch 60 % of it, then N balloon cycles (inflate to
half, deflate, re-touch) and print the intact-block ratio (resident bytes in
fully allocated 2 MiB blocks of the RAM file) and huge coverage (resident
bytes the UML process maps with 2 MiB pages, smaps ShmemPmdMapped); then N
free-page-reporting cycles (memhog touches 60 % and exits) and the same
numbers.  Then memwalk (random dependent loads across pages) in the guest:
ns per access on each backing.

Every backing runs twice, side by side: with ebb's balloon inflating
2 MiB blocks first (patch 5) and with the same kernel inflating single
4 KiB pages (virtio_balloon.blocks=0, the stock behaviour); --balloon
picks one.  The guest kernel is --kernel (default: the build's, ebb's
kernel); Debian's kernel can be compared with its image:

    python3 bench/hugepages.py [--kernel PATH --initrd PATH] [--cycles N] [--mem 512M]
    python3 bench/hugepages.py --kernel /usr/bin/linux.uml \
        --initrd build/guest/initramfs-debian.cpio.gz --balloon 4k
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from ebbtest import Ebbd, MiB  # noqa: E402

BLOCK = 2 * MiB
CONFIGS = [
    ("plain", []),
    ("huge-keep", ["--ram-hugepages"]),
    ("huge-now", ["--ram-hugepages", "--block-wait", "0"]),
]


def snapshot(d, name):
    g = d.guest(name)
    res = g["resident"] or 1
    return {"resident": g["resident"], "intact": g["intact_blocks"] * BLOCK / res,
            "huge": g["huge_mapped"] / res, "shattered": g["shattered_blocks"],
            "waiting": g.get("blocks_waiting", 0)}


def settle(d, name, quiet=3.0, limit=30.0):
    """Wait until the guest's resident size has not moved for `quiet`
    seconds (reports come 2 s after a free, then in batches), at most
    `limit`: a fixed sleep raced the guest's reporting delay."""
    t0 = last_change = time.monotonic()
    last = d.guest(name)["resident"]
    while time.monotonic() - t0 < limit:
        time.sleep(0.25)
        r = d.guest(name)["resident"]
        if r != last:
            last, last_change = r, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return


def balloon_to(d, name, keep):
    d.c.call("balloon", name=name, target=keep)
    d.wait_until(lambda: d.guest(name)["balloon_actual"] == keep, 60, "balloon")


BALLOONS = {"2m-first": "", "4k": "virtio_balloon.blocks=0"}


def run_config(args, label, extra, balloon):
    mem = args.mem
    touch = "%dM" % (mem * 6 // 10 // MiB)
    out = {}
    cmdline = " ".join(x for x in (BALLOONS[balloon], args.cmdline) if x)
    with Ebbd(kernel=args.kernel, initrd=args.initrd, extra_args=extra) as d:
        d.run("b", mem, cmdline=cmdline)
        d.exec("b", "memhog %s --hold 0" % touch)
        settle(d, "b")
        out["boot"] = snapshot(d, "b")
        t0 = time.monotonic()
        for _ in range(args.cycles):
            balloon_to(d, "b", mem // 2)
            balloon_to(d, "b", mem)
            d.exec("b", "memhog %s --hold 0" % touch)
        out["balloon_s"] = time.monotonic() - t0
        settle(d, "b")
        out["balloon"] = snapshot(d, "b")
        for _ in range(args.cycles):
            d.exec("b", "memhog %s --hold 0" % touch)
            settle(d, "b")
        out["report"] = snapshot(d, "b")
        st, text = d.exec("b", "memwalk --size %s --accesses %d --rounds 5"
                          % (args.walk, args.accesses))
        m = re.search(r"median ([\d.]+) ns/access", text)
        out["walk_ns"] = float(m.group(1)) if m else float("nan")
        st, text = d.exec("b", "cat /sys/module/page_reporting/parameters/page_reporting_order")
        m = re.search(r"^(\d+)\s*$", text, re.M)
        out["order"] = m.group(1) if m else "?"
    return out


def pct(x):
    return "%.1f %%" % (100 * x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--kernel", default=None, help="guest kernel (default: the build's)")
    ap.add_argument("--initrd", default=None, help="its image (default: the build's)")
    ap.add_argument("--cmdline", default="",
                    help="extra guest kernel parameters, e.g. virtio_balloon.blocks=0 "
                         "for ebb's kernel with single-page inflation")
    ap.add_argument("--balloon", choices=("both", "2m-first", "4k"), default="both")
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--mem", default="512M")
    ap.add_argument("--walk", default="256M", help="memwalk's array size")
    ap.add_argument("--accesses", type=int, default=4 << 20)
    args = ap.parse_args()
    args.mem = int(args.mem.rstrip("M")) * MiB
    balloons = list(BALLOONS) if args.balloon == "both" else [args.balloon]
    runs = [(label, extra, b) for label, extra in CONFIGS for b in balloons]
    res = {}
    for label, extra, b in runs:
        print("running %s, %s balloon ..." % (label, b), file=sys.stderr, flush=True)
        res[(label, b)] = run_config(args, label, extra, b)
    print("guest %d MiB, %d cycles, kernel %s, guest page_reporting_order %s\n"
          % (args.mem >> 20, args.cycles, args.kernel or "build/guest/linux",
             res[runs[0][0], runs[0][2]]["order"]))
    print("| backing | balloon | when | resident (MiB) | intact-block ratio | huge coverage |"
          " shattered blocks | waiting (KiB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for label, _, b in runs:
        for when in ("boot", "balloon", "report"):
            s = res[(label, b)][when]
            print("| %s | %s | %s | %d | %s | %s | %d | %d |" % (
                label, b, {"boot": "after touching 60 %",
                           "balloon": "after %d balloon cycles" % args.cycles,
                           "report": "after %d reporting cycles" % args.cycles}[when],
                s["resident"] >> 20, pct(s["intact"]), pct(s["huge"]),
                s["shattered"], s["waiting"] >> 10))
    print("\n| backing | balloon | memwalk %s, ns/access (median of 5) |"
          " balloon cycles wall (s) |" % args.walk)
    print("|---|---|---:|---:|")
    for label, _, b in runs:
        r = res[(label, b)]
        print("| %s | %s | %.1f | %.1f |" % (label, b, r["walk_ns"], r["balloon_s"]))
    print("\nReproduce: python3 bench/hugepages.py --mem %dM --cycles %d --balloon %s%s"
          % (args.mem >> 20, args.cycles, args.balloon,
             " --cmdline '%s'" % args.cmdline if args.cmdline else ""))


if __name__ == "__main__":
    main()
