#!/usr/bin/env python3
"""The main job, end to end: start ebbd, boot three UML guests under it,
make them allocate and free memory, inflate a balloon, and print how much
host memory each guest holds at every step.

Usage: scripts/demo.py [BUILD_DIR]   (make demo runs it)"""
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
if len(sys.argv) > 1:
    os.environ["EBB_BUILD"] = os.path.abspath(sys.argv[1])
import ebbtest  # noqa: E402

MiB = ebbtest.MiB
GUESTS = ["web", "db", "batch"]
rows = []


def snapshot(d, step):
    gs = {g["name"]: g for g in d.c.call("guest-list")["guests"]}
    info = d.c.call("info")
    rows.append((step, [gs[n]["resident"] for n in GUESTS], info["resident"]))
    print("  %-44s %s   total %4d MiB" % (
        step, "  ".join("%s %4d MiB" % (n, gs[n]["resident"] >> 20) for n in GUESTS),
        info["resident"] >> 20), flush=True)


def main():
    print("ebb demo: 3 guests of 256 MiB on a 512 MiB host budget (1.5x overcommit)\n")
    with ebbtest.Ebbd(budget="512M") as d:
        t0 = time.time()
        for n in GUESTS:
            # --min: each is admitted with a claim of 128 MiB, not 256.
            d.run(n, 256 * MiB, wait=False, min=128 * MiB)
        for n in GUESTS:
            d.wait_ready(n)
        print("booted %d guests in %.1f s" % (len(GUESTS), time.time() - t0))
        time.sleep(3)
        snapshot(d, "after boot (free pages reported)")

        for n in GUESTS:
            d.c.call("guest-exec", name=n, command="memhog 120M --hold 4")
        for n in GUESTS:
            d.wait_console(n, r"memhog: touched 120M", 180)
        time.sleep(1)
        snapshot(d, "each guest holds 120M (memhog)")

        for n in GUESTS:
            d.wait_console(n, r"memhog: done", 60)
        time.sleep(4)
        snapshot(d, "memhog exited: reporting gave it back")

        d.c.call("guest-exec", name="db", command="memhog 150M --hold 600")
        d.wait_console("db", r"memhog: touched 150M", 180)
        time.sleep(1)
        snapshot(d, "db holds 150M again")

        d.c.call("balloon", name="web", target=64 * MiB)
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == "web", 20)
        d.c.call("balloon", name="batch", target=64 * MiB)
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == "batch", 20)
        time.sleep(1)
        snapshot(d, "balloons: web and batch left with 64M each")

        print("\nhost memory per guest (MiB, allocated blocks of each RAM file):\n")
        print("| step | " + " | ".join(GUESTS) + " | total |")
        print("|---|" + "---:|" * (len(GUESTS) + 1))
        for step, res, tot in rows:
            print("| %s | %s | %d |" % (step, " | ".join(str(r >> 20) for r in res), tot >> 20))
        if os.path.exists(ebbtest.ebbctl_binary()):
            print("\n$ ebbctl list")
            print(d.ebbctl("list").stdout)
            print("$ ebbctl info")
            print(d.ebbctl("info").stdout)
            print("$ ebbctl stats db")
            print(d.ebbctl("stats", "db").stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
