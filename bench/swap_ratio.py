#!/usr/bin/env python3
"""swap_ratio: compression and dedup ratios of ebb's tmem store on pages a
real guest swaps out, as opposed to generated ones.

A guest with little RAM (--mem) and ebb's swap device fills a tmpfs with
real file contents from its own image and kernel, more than its RAM holds,
so the kernel swaps those shmem pages onto the device and they land in the
guest's persistent tmem pool:

  binaries   the image's programs (/bin/busybox, memhog, pagecheck, vecstress),
  text       /proc/kallsyms (symbol table text) and the kernel log,
  heap       `memhog` touching twice the guest's RAM of anonymous memory
             (one word written per page), held while it swaps.

The guest is then ballooned down to --squeeze, so the kernel has to swap
those pages out (the balloon's pages go back to the host, not to swap, so
the store holds only the guest's real contents).  Each kind is written
--copies times (files are page-aligned, so copies are
exact duplicates: that is what the dedup ratio then measures; a single
copy of each kind is printed too, dedup out of the picture).  The store's
counters come from `tmem` after the guest has swapped; the table also
gives the charged bytes per logical page and the slab waste.

Usage: bench/swap_ratio.py [--mem 64M] [--squeeze 36M] [--copies 16] [--build DIR]
"""
import argparse
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))

MiB = 1 << 20

KINDS = {
    "binaries": "cat /bin/busybox /bin/memhog /bin/pagecheck /bin/vecstress > /mnt/f$i",
    "text": "cat /proc/kallsyms > /mnt/f$i; dmesg >> /mnt/f$i",
}


def fill_until_swapped(d, name, kind, copies, a):
    """Write @copies copies of @kind into a tmpfs, then enough extra RAM
    pressure (memhog) that they are pushed out to swap."""
    st, out = d.exec(name, "mkdir -p /mnt && mount -t tmpfs -o size=1g tmpfs /mnt")
    if st != 0:
        raise ebbtest.TestFailure("mount: " + out)
    cmd = "i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done" % (copies, KINDS[kind])
    st, out = d.exec(name, cmd)
    if st != 0:
        raise ebbtest.TestFailure("%s: %s" % (kind, out))
    st, out = d.exec(name, "df -k /mnt | tail -1")
    try:
        kib = int(out.split()[2])	# "Used" of the tmpfs
    except (IndexError, ValueError):
        raise ebbtest.TestFailure("df: " + out)
    # Push the tmpfs pages out without adding pages of our own to swap:
    # the balloon takes the guest down to --squeeze, so the kernel must
    # swap the shmem pages (balloon pages go to the host, not to swap).
    d.c.call("balloon", name=name, target=a.squeeze)
    try:
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == name, 60)
    except ebbtest.TestFailure:
        pass	# as far as the guest could go: what swapped is measured
    return kib


def run_one(a, kind, copies):
    with ebbtest.Ebbd(budget="4G") as d:
        name = "r"
        d.run(name, a.mem, swap=1024 * MiB, swap_quota=1024 * MiB)
        if kind == "heap":
            # Anonymous pages a program touched once and then sat on.
            d.c.call("guest-exec", name=name,
                     command="memhog %dM --hold 30" % (a.mem // MiB * 2))
            d.wait_console(name, r"memhog: touched", 300)
            kib = a.mem // 1024 * 2
        else:
            kib = fill_until_swapped(d, name, kind, copies, a)
        time.sleep(1)
        return kib, d.tmem_guest(name)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mem", default="64M")
    p.add_argument("--squeeze", default="36M",
                   help="balloon the guest down to this after filling")
    p.add_argument("--copies", default="16")
    p.add_argument("--build", help="build directory (default $EBB_BUILD or build)")
    a = p.parse_args()
    if a.build:
        os.environ["EBB_BUILD"] = os.path.abspath(a.build)
    global ebbtest
    import ebbtest  # noqa: E402
    a.mem = ebbtest.parse_size(a.mem)
    a.squeeze = ebbtest.parse_size(a.squeeze)
    copies = [int(c) for c in a.copies.split(",")]
    rows = []
    t0 = time.time()
    for kind in ("binaries", "text"):
        for c in copies:
            # Copies of the same content, the only real data in the image.
            kib, t = run_one(a, kind, c)
            rows.append((kind, c, kib, t))
            print("  %s x%d: %d KiB written, %d pages in tmem, ratio %.2f, dedup %.2f"
                  % (kind, c, kib, t["persistent_pages"], t["compression_ratio"],
                     t["dedup_ratio"]), flush=True)
    kib, t = run_one(a, "heap", 1)
    rows.append(("heap (memhog)", 1, kib, t))
    print("  heap: %d pages in tmem, zero %d" % (t["persistent_pages"], t["zero_pages"]),
          flush=True)

    print("\nReproduce: `python3 bench/swap_ratio.py %s`  (%.0f s)\n"
          % (" ".join(sys.argv[1:]), time.time() - t0))
    print("A %d MiB guest swaps real contents onto ebb's swap device (lz4); "
          "the store's counters for it afterwards:\n" % (a.mem // MiB))
    print("| contents | copies | written (MiB) | pages in tmem | zero pages | "
          "stored raw | lz4 ratio | dedup ratio | logical / stored | "
          "charged B per page |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, c, kib, t in rows:
        pages = t["persistent_pages"]
        print("| %s | %d | %d | %d | %d | %d | %.2f | %.2f | %.2f | %.0f |" % (
            kind, c, kib // 1024, pages, t["zero_pages"], t["raw_pages"],
            t["compression_ratio"], t["dedup_ratio"],
            t["logical_bytes"] / t["stored_bytes"] if t["stored_bytes"] else 0,
            t["charged_bytes"] / pages if pages else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
