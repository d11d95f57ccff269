"""End to end: real UML guests under a real ebbd give memory back."""
import time

from ebbtest import Ebbd, MiB, TestFailure


def test_guest_boots_and_is_listed():
    with Ebbd() as d:
        r = d.run("g1", 256 * MiB)
        assert r["pid"] > 0 and r["mem"] == 256 * MiB
        g = d.guest("g1")
        assert g["state"] == "running", g
        d.wait_until(lambda: d.guest("g1")["resident"] > 0, 5, "resident measured")
        # The resident size is the RAM file's allocated size: never more
        # than the guest's memory, and a booted guest has touched some.
        g = d.guest("g1")
        assert 4 * MiB < g["resident"] <= 256 * MiB + 16 * MiB, g


def test_free_page_reporting_returns_exited_memory():
    """A 256 MiB guest runs memhog 150M and exits: within 10 s the host-
    resident size of its RAM file drops by at least 120 MiB."""
    with Ebbd() as d:
        d.run("g1", 256 * MiB)
        start = len(d.console("g1"))
        d.c.call("guest-exec", name="g1", command="memhog 150M --hold 3")
        d.wait_console("g1", r"memhog: touched 150M", 120, start)
        d.wait_until(lambda: d.guest("g1")["resident"] >= 150 * MiB, 5,
                     "resident to show the touched 150M")
        peak = d.guest("g1")["resident"]
        d.wait_console("g1", r"memhog: done", 30, start)
        t0 = time.time()
        d.wait_until(lambda: peak - d.guest("g1")["resident"] >= 120 * MiB, 10,
                     "resident to drop by 120 MiB (peak %d MiB)" % (peak >> 20))
        g = d.guest("g1")
        print("  peak %d MiB -> %d MiB in %.1f s; reported %d MiB" % (
            peak >> 20, g["resident"] >> 20, time.time() - t0, g["reported"] >> 20))
        assert g["reported"] >= 120 * MiB


def test_balloon_inflate_and_deflate():
    """balloon to 64M: actual reaches it within 10 s and resident is at
    most 64 MiB plus the boot footprint; deflating gives memory back."""
    with Ebbd() as d:
        d.run("g1", 256 * MiB)
        time.sleep(3)                  # let boot-time reporting settle
        boot = d.guest("g1")["resident"]
        # Fill the guest so that ballooning has resident memory to take.
        st, _ = d.exec("g1", "memhog 100M")
        assert st == 0
        d.c.call("balloon", name="g1", target=64 * MiB)
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == "g1", 10)
        g = d.guest("g1")
        assert g["balloon_actual"] == 64 * MiB, g
        d.wait_until(lambda: d.guest("g1")["resident"] <= 64 * MiB + boot, 5,
                     "resident <= 64M + boot footprint %d MiB" % (boot >> 20))
        assert g["inflated"] >= 192 * MiB - 4 * MiB, g
        # With only 64M left, a 100M allocation cannot be satisfied
        # without deflate-on-OOM; give the memory back first.
        d.c.call("balloon", name="g1", target=256 * MiB)
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == "g1", 10)
        assert d.guest("g1")["balloon_actual"] == 256 * MiB
        st, out = d.exec("g1", "memhog 180M")
        assert st == 0, out


def test_deflate_on_oom():
    """With the balloon holding most of the guest, an allocation the guest
    cannot otherwise satisfy makes it deflate on its own (DEFLATE_ON_OOM),
    and ebbd accounts that."""
    with Ebbd() as d:
        d.run("g1", 256 * MiB)
        d.c.call("balloon", name="g1", target=96 * MiB)
        d.c.wait_event("BALLOON_TARGET_REACHED", lambda e: e["name"] == "g1", 10)
        st, out = d.exec("g1", "memhog 150M")
        assert st == 0, out
        g = d.guest("g1")
        assert g["oom_deflated"] > 0, g
        assert g["balloon_actual"] > 96 * MiB, g


def test_stats_visible():
    with Ebbd() as d:
        d.run("g1", 256 * MiB)
        d.wait_until(lambda: "free" in d.c.call("guest-stats", name="g1")["stats"], 10,
                     "guest stats")
        s = d.c.call("guest-stats", name="g1")
        st = s["stats"]
        for k in ("free", "total", "available", "swap_in", "swap_out",
                  "major_faults", "minor_faults"):
            assert k in st, s
        assert 200 * MiB < st["total"] <= 256 * MiB, s
        assert 0 < st["free"] < st["total"], s
        assert 0 <= s["stats_age_ms"] < 5000, s
        # Fresh numbers keep coming: faults grow while memhog runs.
        before = st["minor_faults"]
        st2, _ = d.exec("g1", "memhog 20M")
        d.wait_until(lambda: d.c.call("guest-stats", name="g1")["stats"]["minor_faults"]
                     > before + 4000, 5, "minor faults to grow")


def test_stop_releases_everything():
    with Ebbd(budget="1G") as d:
        d.run("g1", 256 * MiB)
        info = d.c.call("info")
        assert info["guests"] == 1 and info["claims"] + info["resident"] > 0
        d.c.call("guest-stop", name="g1")
        d.c.wait_event("GUEST_STOPPED", lambda e: e["name"] == "g1", 20)
        g = d.guest("g1")
        assert g["state"] == "stopped", g
        info = d.c.call("info")
        assert info["guests"] == 0 and info["claims"] == 0 and info["resident"] == 0, info
        # The name is free again.
        d.run("g1", 128 * MiB)


def test_control_errors_are_clear():
    with Ebbd() as d:
        for args, cls in (({"name": "nope"}, "NotFound"),):
            try:
                d.c.call("guest-stats", **args)
            except Exception as e:
                assert getattr(e, "cls", None) == cls, e
            else:
                raise TestFailure("no error")
        try:
            d.c.call("guest-run", name="bad/name", mem=256 * MiB)
        except Exception as e:
            assert e.cls == "InvalidParameter", e
        else:
            raise TestFailure("bad name accepted")
