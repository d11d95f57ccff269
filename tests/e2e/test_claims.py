"""End to end: claims make parallel launches safe."""
import re
import threading
import time

from ebbtest import CommandError, Ebbd, MiB


def test_parallel_launches_at_2x_overcommit():
    """8 guests of 256 MiB launched at once against a 1 GiB budget (2x
    overcommit): exactly 4 start, the other 4 are refused within
    milliseconds, and the started ones can all touch their memory
    without the pool ever going over budget."""
    with Ebbd(budget="1G") as d:
        results = {}

        def launch(i):
            c = d.client()
            t0 = time.perf_counter()
            try:
                c.call("guest-run", name="p%d" % i, mem=256 * MiB)
                results[i] = ("ok", time.perf_counter() - t0)
            except CommandError as e:
                results[i] = (e.cls, time.perf_counter() - t0, e.desc)
            finally:
                c.close()

        threads = [threading.Thread(target=launch, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        started = [i for i, r in results.items() if r[0] == "ok"]
        refused = [r for r in results.values() if r[0] != "ok"]
        assert len(started) == 4, results
        assert all(r[0] == "NoMemory" for r in refused), refused
        # Refusal is bookkeeping, not populating: answered at once.
        assert max(r[1] for r in refused) < 0.5, refused
        assert "unclaimed" in refused[0][2], refused[0]
        print("  refused in %.1f ms max; e.g. %s" % (
            max(r[1] for r in refused) * 1000, refused[0][2]))
        info = d.c.call("info")
        assert info["claims"] + info["resident"] <= info["budget"], info
        for i in started:
            d.wait_ready("p%d" % i)
        # Every started guest uses most of its memory at once.
        for i in started:
            d.c.call("guest-exec", name="p%d" % i, command="memhog 180M")
        for i in started:
            d.wait_console("p%d" % i, r"ebb-guest: exit 0 memhog 180M", 240)
        for g in d.c.call("guest-list")["guests"]:
            assert g["state"] == "running", g
            assert not g["over_budget"], g
        info = d.c.call("info")
        assert info["over"] == 0, info
        # Claims are consumed as guests grow and are not restored when
        # they shrink (Xen semantics): memory the guests reported free
        # after memhog is free for new launches again.
        info = d.c.call("info")
        assert info["claims"] < 4 * 256 * MiB, info


def test_min_claim_and_manual_claims():
    """--min admits a guest on a smaller claim; claims by hand obey the
    Xen rules (a second claim while one is outstanding is refused, 0
    cancels)."""
    with Ebbd(budget="512M") as d:
        d.run("a", 256 * MiB, min=128 * MiB)
        d.run("b", 256 * MiB, min=128 * MiB)
        d.run("c", 256 * MiB, min=128 * MiB)
        g = d.guest("a")
        assert g["claim"] <= 128 * MiB, g
        try:
            d.c.call("claim", name="a", size=200 * MiB)
        except CommandError as e:
            assert e.cls == "InvalidParameter" and "outstanding" in e.desc, e
        else:
            raise AssertionError("second claim accepted")
        d.c.call("claim", name="a", size=0)
        assert d.guest("a")["claim"] == 0
        try:
            d.c.call("claim", name="a", size=100 * 1024 * MiB)
        except CommandError as e:
            assert e.cls == "InvalidParameter", e
        else:
            raise AssertionError("claim above max accepted")


def test_prealloc_holds_boot_until_memory_is_there():
    """ebbctl run --prealloc: the guest's RAM file is populated (2 MiB
    chunks first) while its boot is held at the balloon's memory table;
    the claim is consumed as it goes; the guest then boots and keeps the
    memory (no free page reporting for a preallocated guest)."""
    with Ebbd(budget="1G") as d:
        r = d.ebbctl("run", "pre", "--mem", "256M", "--prealloc")
        assert "preallocated" in r.stdout, r.stdout
        m = re.search(r"preallocated (\S+) in ([\d.]+) s \((\d+) chunks", r.stdout)
        assert m, r.stdout
        d.wait_ready("pre")
        g = d.guest("pre")
        pre = g["prealloc"]
        assert pre["state"] == "done", pre
        assert pre["done"] == pre["total"] >= 200 * MiB, pre
        assert int(m.group(3)) >= pre["total"] // (2 * MiB) - 1, (m.groups(), pre)
        # The daemon held the guest until the memory was there: its
        # console cannot show the agent before PREALLOC_DONE.
        assert "holding boot to preallocate" in d.daemon_log()
        # Consumed claim, memory resident, and it stays (nothing reported).
        time.sleep(5)
        g = d.guest("pre")
        assert g["resident"] >= pre["total"] - 4 * MiB, g
        assert g["reported"] == 0, g
        assert g["claim"] <= 256 * MiB - pre["total"] + 4 * MiB, g
        info = d.c.call("info")
        assert info["resident"] + info["claims"] <= info["budget"], info


def test_prealloc_without_claim_fails_late():
    """The race claims prevent: a launch admitted without a claim (the
    naive toolstack, --no-claim) starts populating and fails part way when
    the pool runs out; the guest is killed, the other guest is untouched
    and the pool never goes over budget."""
    with Ebbd(budget="512M") as d:
        d.ebbctl("run", "a", "--mem", "256M", "--prealloc")
        d.wait_ready("a")
        r = d.ebbctl("run", "late", "--mem", "512M", "--prealloc", "--no-claim",
                     check=False)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "cannot back it" in r.stderr, r.stderr
        d.wait_until(lambda: d.guest("late")["state"] in ("stopped", "failed"),
                     20, "late guest killed")
        assert d.guest("late")["prealloc"]["state"] == "failed"
        assert d.guest("a")["state"] == "running"
        info = d.c.call("info")
        assert info["over"] == 0, info
        # With a claim the same launch is refused up front instead.
        r = d.ebbctl("run", "late2", "--mem", "512M", "--prealloc", check=False)
        assert r.returncode == 1 and "cannot claim" in r.stderr, r.stderr
