"""
The host memory policy (issue 12) end to end: real guests under a real
ebbd, which runs in a small host (smallhost.py: a memory cgroup with a
limit and a swap file), so that pressure and swapping are real.

- guests that grow past the budget are brought back inside it without an
  operator; a guest that then needs memory gets it back; nobody is
  OOM-killed while others hold idle memory; every action is an event and
  no guest goes below its min;
- when nothing cheaper is left (guests use what they hold), the last rung
  pages out guest RAM deliberately, into host swap;
- --policy off does nothing, and the control commands check their input.
"""
import re
import time

from ebbtest import Ebbd, MiB, CommandError, TestFailure, guest_exec_ok
from smallhost import SmallHost


def policy_events(c):
    """POLICY_RECLAIM / POLICY_GIVE events received so far (drains the
    connection first)."""
    c.call("policy")
    return [e for e in c.events if e["event"] in ("POLICY_RECLAIM", "POLICY_GIVE")]


def actions_counted(p):
    return sum(v["actions"] for v in p["counters"].values())


def check_events(d, mins):
    """Every action the policy counted came as an event with a guest (or
    host-wide), a mechanism, bytes and a reason; no balloon target went
    below a guest's min."""
    evs = policy_events(d.c)
    p = d.c.call("policy")
    assert len(evs) == actions_counted(p), (len(evs), p["counters"])
    for e in evs:
        data = e["data"]
        assert data["mechanism"] and data["reason"], e
        assert isinstance(data["bytes"], int), e
        if "target" in data:
            assert data["target"] >= mins[data["name"]], e
    return evs


def test_policy_brings_guests_back_and_gives_back():
    """Small host: cgroup limit 640M, 1G swap; ebbd budget 512M, policy
    watermarks 64M/128M.  Three 256 MiB guests (min 64M; reporting off so
    that nothing but the policy returns memory; a and b without page
    states so the balloon does the work, c with them) run memhog 200M one
    after another: together they would hold ~650 MiB.  The policy must
    bring the pool back above its low watermark by itself; then guest a
    runs memhog 200M while ballooned down and must get memory back
    (POLICY_GIVE) and finish, with no OOM kill in any guest or in the
    cgroup."""
    mins = {n: 64 * MiB for n in "abc"}
    with SmallHost(mem="640M", swap="1G") as h:
        with Ebbd(budget="512M", cgroup=h,
                  extra_args=["--policy-low", "64M", "--policy-high", "128M"]) as d:
            for n in "abc":
                d.run(n, 256 * MiB, min=64 * MiB, reporting=False,
                      page_states=(n == "c"))
            t0 = time.monotonic()
            for n in "abc":
                guest_exec_ok(d, n, "memhog 200M")
            d.wait_until(lambda: d.c.call("info")["free"] >= 64 * MiB and
                         d.c.call("policy")["state"] == "ok", 30,
                         "the pool back above the low watermark")
            back_s = time.monotonic() - t0
            evs = check_events(d, mins)
            reclaim = [e["data"] for e in evs if e["event"] == "POLICY_RECLAIM"]
            mechs = {r["mechanism"] for r in reclaim}
            res = {n: d.guest(n)["resident"] >> 20 for n in "abc"}
            print("  back inside the budget %.1f s after the first memhog; %d "
                  "reclaim actions (%s); resident %s MiB" % (
                      back_s, len(reclaim), ", ".join(sorted(mechs)), res))
            assert "balloon_inflate" in mechs, mechs
            assert any(r["name"] in ("a", "b") and r["mechanism"] == "balloon_inflate"
                       for r in reclaim), reclaim
            info = d.c.call("info")
            assert info["resident"] <= 512 * MiB - 64 * MiB, info

            # Guest a needs memory again: it gets it back from the policy.
            keep = d.guest("a")["balloon_actual"]
            assert keep < 200 * MiB, keep
            status, out = d.exec("a", "memhog 200M --hold 4")
            assert status == 0, out[-1500:]
            evs = check_events(d, mins)
            gives = [e["data"] for e in evs if e["event"] == "POLICY_GIVE"
                     and e["data"]["name"] == "a"]
            print("  a kept %d MiB, ran memhog 200M: %d give actions, now keeps "
                  "%d MiB" % (keep >> 20, len(gives), d.guest("a")["balloon_actual"] >> 20))
            assert gives and all(g["mechanism"] == "balloon_deflate" for g in gives), gives
            for n in "abc":
                g = d.guest(n)
                assert g["balloon_actual"] >= 64 * MiB, g
                assert not re.search(r"Out of memory|Killed process", d.console(n)), \
                    d.console(n)[-1500:]
            st = h.stats()
            print("  cgroup: oom kills %d, swap %d MiB, host swap-out %d MiB" % (
                st["oom_kill"], st["swap"] >> 20, st["swap_out"] >> 20))
            assert st["oom_kill"] == 0, st
            # The policy's own picture of the guests, as ebbctl shows it.
            out = d.ebbctl("policy").stdout
            assert re.search(r"^a\s+64M\s+256M\s+100\s", out, re.M), out


def test_policy_host_swap_is_the_last_rung():
    """Two 256 MiB guests that use what they hold (memhog 190M held for
    15 s each) on a 384M budget: no clean cache, no unused pages, no
    balloon can help (their use plus the margin is above what they hold).
    The policy must refuse store growth and then page out guest RAM into
    host swap itself, never below a guest's min, until the pool is back
    above its high watermark; the guests' memory stays intact."""
    with SmallHost(mem="576M", swap="1G") as h:
        with Ebbd(budget="384M", cgroup=h,
                  extra_args=["--policy-low", "32M", "--policy-high", "64M"]) as d:
            if not d.c.call("policy")["host_swap"]:
                raise TestFailure("host swap unavailable inside a v1 memory cgroup")
            for n in "ab":
                d.run(n, 256 * MiB, min=32 * MiB, reporting=False, page_states=False)
            for n in "ab":
                guest_exec_ok(d, n, "memhog 190M --hold 15 &")
            ev = d.c.wait_event("POLICY_RECLAIM",
                                lambda e: e["mechanism"] == "host_swap" and e["bytes"] > 0,
                                40)
            d.c.events.append(ev)   # counted by check_events below
            d.wait_until(lambda: d.c.call("policy")["state"] == "ok", 30,
                         "the policy back to ok")
            evs = check_events(d, {"a": 32 * MiB, "b": 32 * MiB})
            swaps = [e["data"] for e in evs if e["data"]["mechanism"] == "host_swap"]
            refused = [e for e in evs if e["data"]["mechanism"] == "store_refuse"]
            st = h.stats()
            print("  %d host-swap actions, %d MiB paged out; store refused %d "
                  "time(s); cgroup swap %d MiB" % (
                      len(swaps), sum(s["bytes"] for s in swaps) >> 20,
                      len(refused), st["swap"] >> 20))
            assert refused, evs
            assert st["swap"] > 16 * MiB, st
            assert st["oom_kill"] == 0, st
            # The guests still run and their memory is whole: memhog
            # finishes its hold and exits 0.
            for n in "ab":
                d.wait_console(n, r"memhog: done", 60)


def test_policy_off_and_control():
    """--policy off: a guest past the low watermark is left alone (no
    POLICY_* event, state off).  Switching it on at run time reclaims.
    The control commands refuse bad input with clear errors, and an
    operator's balloon takes the guest out of the policy's hands."""
    with Ebbd(budget="384M", extra_args=["--policy", "off", "--policy-low", "96M",
                                         "--policy-high", "160M"]) as d:
        d.run("g", 256 * MiB, reporting=False, page_states=False, shares=300,
              max=224 * MiB)
        p = d.c.call("policy")
        assert p["mode"] == "off" and p["state"] == "off", p
        assert p["guests"][0]["shares"] == 300 and p["guests"][0]["max"] == 224 * MiB, p
        guest_exec_ok(d, "g", "memhog 200M")
        time.sleep(2.5)
        assert not policy_events(d.c), d.c.events
        assert d.c.call("policy")["ticks"] == 0
        d.c.call("policy", mode="on")
        ev = d.c.wait_event("POLICY_RECLAIM", lambda e: e["name"] == "g", 10)
        assert ev["data"]["mechanism"] == "balloon_inflate", ev
        for bad, args in (("InvalidParameter", {"mode": "maybe"}),
                          ("InvalidParameter", {"low": "200M", "high": "100M"})):
            try:
                d.c.call("policy", **args)
                raise TestFailure("policy %r accepted" % args)
            except CommandError as e:
                assert e.cls == bad, e
        for args in ({"shares": 0}, {"shares": 100000}, {"min": "300M"},
                     {"min": "100M", "max": "64M"}, {"max": "1G"}, {"min": -1},
                     {"shares": "many"}):
            try:
                d.c.call("guest-policy", name="g", **args)
                raise TestFailure("guest-policy %r accepted" % args)
            except CommandError as e:
                assert e.cls == "InvalidParameter", (args, e)
        try:
            d.c.call("guest-policy", name="nobody", shares=5)
            raise TestFailure("guest-policy for an unknown guest accepted")
        except CommandError as e:
            assert e.cls == "NotFound", e
        try:
            d.c.call("guest-run", name="h", mem="64M", shares=20000)
            raise TestFailure("guest-run shares 20000 accepted")
        except CommandError as e:
            assert "shares" in e.desc, e
        d.c.call("balloon", name="g", target=200 * MiB)
        assert d.c.call("policy")["guests"][0]["manual"] is True
        r = d.ebbctl("policy", "g", "--min", "32M", "--shares", "50").stdout
        assert "min 32M, max 224M, shares 50, managed by the policy" in r, r
