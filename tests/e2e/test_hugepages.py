"""End to end: guest RAM on host huge pages (ebbd --ram-hugepages, issue
13, host side).  What the host alone guarantees is asserted; the intact-
block ratio after cycles is printed (its >= 95 % target needs the guest's
2 MiB-first balloon)."""
import os
import re
import time

from ebbtest import Ebbd, MiB, TestFailure, PAGECHECK_RESULT

BLOCK = 2 * MiB


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path)]


def intact_ratio(g):
    """Share of the resident RAM file that lies in intact 2 MiB blocks."""
    return g["intact_blocks"] * BLOCK / g["resident"] if g["resident"] else 0.0


def intact_ratio_past_first(g):
    """The same, leaving out the block that holds the RAM file's first page
    when it is the only shattered one: below that page is the kernel image,
    which is not in the file, so no balloon or report can make that block
    whole, and with a small resident size its part alone can be 5 %."""
    if not g["resident"]:
        return 0.0
    rest = g["resident"]
    if g["shattered_blocks"] == 1:
        rest -= min(BLOCK, g["resident"] - g["intact_blocks"] * BLOCK)
    return g["intact_blocks"] * BLOCK / rest if rest else 0.0


def describe(g):
    return ("resident %d MiB, huge-mapped %d MiB, intact %d / shattered %d "
            "blocks, intact ratio %.1f %%" % (
                g["resident"] >> 20, g["huge_mapped"] >> 20, g["intact_blocks"],
                g["shattered_blocks"], 100 * intact_ratio(g)))


def test_huge_backing_boot_and_cleanup():
    """A guest boots on its own huge=within_size tmpfs; its resident memory
    is mostly 2 MiB host pages; the mount goes when the guest stops."""
    with Ebbd(extra_args=["--ram-hugepages"]) as d:
        d.run("g1", 256 * MiB)
        ram = os.path.join(d.dir, "run", "g1", "ram")
        assert mounts_under(ram) == [ram], mounts_under(d.dir)
        d.wait_until(lambda: d.guest("g1")["huge_mapped"] > 0, 5, "huge pages measured")
        time.sleep(1)
        g = d.guest("g1")
        print("  " + describe(g))
        assert g["ram_hugepages"] is True
        assert g["huge_mapped"] >= 0.8 * g["resident"], g
        assert intact_ratio(g) >= 0.8, g
        st, out = d.exec("g1", "cat /sys/module/page_reporting/parameters/page_reporting_order")
        m = re.search(r"^(\d+)\s*$", out, re.M)
        print("  guest page_reporting_order: %s" % (m.group(1) if m else "?"))
        r = d.ebbctl("list")
        assert re.search(r"\d+(\.\d+)?M \d+/\d+", r.stdout), r.stdout
        r = d.ebbctl("stats", "g1")
        assert "huge_mapped" in r.stdout and "blocks_waiting" in r.stdout, r.stdout
        d.c.call("guest-stop", name="g1", force=True)
        d.wait_until(lambda: d.guest("g1")["state"] == "stopped", 20, "stopped")
        d.wait_until(lambda: not mounts_under(ram), 5, "the RAM mount gone")


def test_plain_backing_unchanged():
    """Without the option guests keep their RAM in --ram-dir, with no
    mount and no block keeping; the block numbers are still reported."""
    with Ebbd() as d:
        d.run("g1", 128 * MiB)
        g = d.guest("g1")
        assert g["ram_hugepages"] is False and "blocks" not in g, g
        assert not mounts_under(os.path.join(d.dir, "run"))


def inflate(d, name, keep):
    d.c.call("balloon", name=name, target=keep)
    d.wait_until(lambda: d.guest(name)["balloon_actual"] == keep, 30,
                 "balloon at %d MiB" % (keep >> 20))


def test_balloon_keeps_blocks_whole():
    """4 KiB balloon pages on huge backing: while pages wait for their
    block the host punches only whole blocks or blocks that already had a
    hole, so ballooning shatters no intact block; deflating takes the
    waiting pages out of the bitmap; with --block-wait 0 (punch at once)
    the same inflate shatters blocks, shown side by side."""
    results = {}
    for wait in ("600", "0"):
        with Ebbd(extra_args=["--ram-hugepages", "--block-wait", wait]) as d:
            d.run("g1", 256 * MiB)
            st, _ = d.exec("g1", "memhog 160M --hold 0")
            time.sleep(1.5)
            before = d.guest("g1")
            inflate(d, "g1", 128 * MiB)
            time.sleep(1.5)
            after = d.guest("g1")
            results[wait] = (before, after)
            print("  block-wait %s: before %s" % (wait, describe(before)))
            print("  block-wait %s: after  %s" % (wait, describe(after)))
            if wait == "600":
                b = after["blocks"]
                assert after["shattered_blocks"] <= before["shattered_blocks"], (before, after)
                assert b["failed_punches"] == 0 and b["expired"] == 0, b
                print("  waiting %d KiB in %d blocks, %d blocks punched whole" % (
                    b["waiting"] >> 10, b["waiting_blocks"], b["whole_punched"]))
                inflate(d, "g1", 256 * MiB)
                d.wait_until(lambda: d.guest("g1")["blocks"]["waiting"] == 0, 10,
                             "waiting pages to leave the bitmap on deflate")
                st, out = d.exec("g1", "memhog 200M")
                assert st == 0, out
            else:
                assert "blocks" not in after, after
    print("  shattered blocks after inflate: kept %d, punched at once %d" % (
        results["600"][1]["shattered_blocks"], results["0"][1]["shattered_blocks"]))


def test_waiting_pages_expire():
    """A partly freed block waits --block-wait at most: then its pages are
    punched (memory over the block) and nothing waits any more."""
    with Ebbd(extra_args=["--ram-hugepages", "--block-wait", "1"]) as d:
        d.run("g1", 256 * MiB)
        d.exec("g1", "memhog 160M --hold 0")
        inflate(d, "g1", 160 * MiB)
        d.wait_until(lambda: d.guest("g1")["blocks"]["waiting"] == 0, 5,
                     "waiting pages expired")
        g = d.guest("g1")
        print("  expired %d KiB; %s" % (g["blocks"]["expired"] >> 10, describe(g)))
        inflate(d, "g1", 256 * MiB)


def test_cycles_keep_data_and_report_ratio():
    """pagecheck runs in the guest while the balloon cycles on huge backing
    (and memhog/reporting cycles follow): 0 mismatches.  The intact-block
    ratio after the cycles is printed; with the 4 KiB balloon the host can
    only promise that nothing waits longer than --block-wait."""
    with Ebbd(extra_args=["--ram-hugepages", "--block-wait", "2"]) as d:
        d.run("g1", 256 * MiB)
        cmd = "pagecheck write 64M 13 --passes 10 --hold 1"
        start = len(d.console("g1"))
        d.c.call("guest-exec", name="g1", command=cmd)
        d.wait_console("g1", r"pagecheck: pass 1/", 120, start)
        for i in range(4):
            inflate(d, "g1", 128 * MiB)
            inflate(d, "g1", 256 * MiB)
        m = d.wait_console("g1", r"ebb-guest: exit (\d+) " + re.escape(cmd), 300, start)
        res = PAGECHECK_RESULT.search(d.console("g1")[start:])
        assert res and int(res.group(2)) == 0 and m.group(1) == "0", d.console("g1")[start:][-1500:]
        print("  pagecheck: %s pages, %s mismatches across 4 balloon cycles" % res.groups())
        time.sleep(3)
        print("  after balloon cycles: " + describe(d.guest("g1")))
        for i in range(3):
            st, out = d.exec("g1", "memhog 120M --hold 0")
            assert st == 0, out
            time.sleep(2)
        d.wait_until(lambda: d.guest("g1")["blocks"]["waiting"] == 0, 5, "nothing waiting")
        g = d.guest("g1")
        print("  after reporting cycles: " + describe(g))
        assert g["blocks"]["failed_punches"] == 0, g


def balloon_and_report_cycles(d, name):
    """Four balloon cycles: the guest fills and frees 160 MiB (memhog), the
    balloon at once takes 128 MiB of it (before free page reporting's 2 s
    delay could), then gives it back; then three free page reporting
    cycles (memhog exits, its pages are reported).  Returns the least
    intact guest seen while inflated, and the guest after reporting."""
    worst = None
    for _ in range(4):
        st, out = d.exec(name, "memhog 160M --hold 0")
        assert st == 0, out
        inflate(d, name, 128 * MiB)
        time.sleep(1.2)  # two residency measurements
        g = d.guest(name)
        if worst is None or intact_ratio(g) < intact_ratio(worst):
            worst = g
        inflate(d, name, 256 * MiB)
    for _ in range(3):
        st, out = d.exec(name, "memhog 120M --hold 0")
        assert st == 0, out
        time.sleep(4)  # reporting waits 2 s after a free
    return worst, d.guest(name)


def test_two_mib_balloon_keeps_blocks_intact():
    """ebb's kernel inflates 2 MiB blocks first and reports free 2 MiB
    blocks (patches 4 and 5): on huge backing, with the host punching
    every freed range at once (--block-wait 0, so only the guest's choice
    of pages counts), at least 95 % of what stays resident lies in intact
    2 MiB blocks while the balloon holds memory and after reporting
    cycles (past the RAM file's first block, which the kernel image below
    it keeps from ever being whole: the raw ratio is printed too).  The
    same kernel with virtio_balloon.blocks=0 (single 4 KiB
    pages, the stock balloon's way) is shown beside it: its inflations
    shatter the blocks they take pages from."""
    ratios, shattered = {}, {}
    for label, cmdline in (("2 MiB-first", ""), ("4 KiB", "virtio_balloon.blocks=0")):
        with Ebbd(extra_args=["--ram-hugepages", "--block-wait", "0"]) as d:
            d.run("g1", 256 * MiB, cmdline=cmdline)
            inflated, after_report = balloon_and_report_cycles(d, "g1")
            ratios[label] = (intact_ratio_past_first(inflated),
                             intact_ratio_past_first(after_report))
            shattered[label] = (inflated["shattered_blocks"], after_report["shattered_blocks"])
            print("  %s balloon, inflated (least intact of 4): %s" % (label, describe(inflated)))
            print("  %s balloon, after reporting cycles: %s" % (label, describe(after_report)))
    print("  intact ratio past the first block, inflated / after reporting:"
          " 2 MiB-first %.1f / %.1f %%, 4 KiB %.1f / %.1f %%"
          % tuple(100 * x for x in ratios["2 MiB-first"] + ratios["4 KiB"]))
    # The block holding the RAM file's first page is never whole: below
    # that page is the kernel image, which is not in the file.  Any other
    # shattered block is the balloon's or reporting's doing.
    assert shattered["2 MiB-first"] <= (1, 1), shattered
    assert min(ratios["2 MiB-first"]) >= 0.95, ratios
