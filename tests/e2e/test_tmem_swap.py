"""End to end: ebb's tmem-backed block devices with real UML guests.

- swap (preswap): the guest swaps onto a vhost-user-blk device whose pages
  live in its persistent tmem pool; when the pool refuses them they go to a
  per-guest backing file; either way every page comes back intact;
- a guest killed in the middle of swapping leaves the store consistent and
  its memory released;
- data disk (precache): reads of an image are cached in an ephemeral pool
  shared by the guests using that image.
"""
import hashlib
import os
import shutil
import time

from ebbtest import Ebbd, MiB, TestFailure, page_cache_bytes
from ebbtest import tmem_device as device


def pagecheck(d, name, size, seed, extra=""):
    st, out = d.exec(name, "pagecheck write %s %d %s" % (size, seed, extra))
    assert "pagecheck:" in out, out
    assert st == 0 and " 0 mismatches" in out, out
    return out


def vmstat(d, name, key):
    st, out = d.exec(name, "grep '^%s ' /proc/vmstat" % key)
    for line in out.splitlines():
        if line.startswith(key + " "):
            return int(line.split()[1])
    raise TestFailure("no %s in vmstat: %s" % (key, out))


def test_swap_pages_live_in_tmem_and_come_back_intact():
    """A 64 MiB guest writes 128 MiB of distinct pages and verifies them
    twice: they go out to ebb's swap device and back.  With room in the
    pool (quota 256M) every page is held in host memory: zero bytes written
    to the backing file; the store's charge shows up in the pool."""
    with Ebbd(budget="2G") as d:
        r = d.run("s", 64 * MiB, swap=256 * MiB, swap_quota=256 * MiB)
        assert "swap" in r["sockets"], r
        assert "ebb-guest: swap on /dev/vda" in d.console("s")
        pagecheck(d, "s", "128M", 11, "--passes 2")
        assert vmstat(d, "s", "pswpout") > 16384
        t = d.tmem_guest("s")
        sw = device(t, "swap")
        assert t["persistent_pages"] > 8192, t
        assert sw["swap"]["tmem_pages"] == t["persistent_pages"], sw
        assert sw["swap"]["file_pages"] == 0, sw
        assert sw["swap"]["file_write_bytes"] == 0, sw
        assert sw["ioerr"] == 0 and not sw["failed"], sw
        info = d.c.call("info")
        assert info["store"] >= t["charged_bytes"], (info, t)
        assert info["resident"] + info["store"] + info["claims"] <= info["budget"], info
        # The store timed its puts and gets while the guest swapped.
        tm = d.c.call("tmem")
        assert tm["store"]["compressor"] == "lz4-fast", tm["store"]
        lat = tm["latency"]
        assert lat["put_timed"] >= t["puts"] // 8 - 1 and lat["get_timed"] > 0, lat
        assert 0 < lat["put_p50_ns"] <= lat["put_p99_ns"], lat
        assert 0 < lat["get_p50_ns"] <= lat["get_p99_ns"], lat
        out = d.ebbctl("tmem").stdout
        assert "store (lz4-fast)" in out and "latency: put p50" in out, out


def test_compressor_is_chosen_at_start():
    """--tmem-compressor picks the store's compressor; an unknown name is
    refused at start, naming the choices."""
    with Ebbd(extra_args=("--tmem-compressor", "lz4")) as d:
        assert d.c.call("tmem")["store"]["compressor"] == "lz4"
    try:
        Ebbd(extra_args=("--tmem-compressor", "lzma"))
    except TestFailure as e:
        # The flag and the config key share one parser (options.c).
        assert "--tmem-compressor: unknown compressor 'lzma' (lz4-fast, lz4, " \
            "liblz4, zstd)" in str(e), e
    else:
        raise TestFailure("ebbd started with an unknown compressor")


def test_swap_falls_back_to_the_backing_file_when_the_host_is_short():
    """The same workload with a budget so small that the pool refuses most
    puts: the device writes those pages to the backing file instead, never
    fails a write, and the guest reads every page back correctly; the host
    page cache does not keep a second copy of the file's pages."""
    with Ebbd(budget="100M") as d:
        d.run("s", 64 * MiB, swap=256 * MiB, swap_quota=256 * MiB)
        pagecheck(d, "s", "128M", 12)
        sw = device(d.tmem_guest("s"), "swap")
        assert sw["swap"]["refused_puts"] > 0, sw
        assert sw["swap"]["file_pages"] > 0, sw
        assert sw["swap"]["file_write_bytes"] > 0, sw
        assert sw["ioerr"] == 0 and sw["swap"]["lost_pages"] == 0, sw
        info = d.c.call("info")
        assert info["over"] == 0, info
        # The backing file's pages do not stay in the host page cache as
        # well (stop 7: all 93 MiB did): at most what the last moments
        # wrote may still be on its way to disk.
        file_bytes = sw["swap"]["file_pages"] * 4096
        cached = page_cache_bytes(os.path.join(d.dir, "state", "s.swap"))
        print("  file pages %d MiB, of them in the host page cache %d MiB" % (
            file_bytes // MiB, cached // MiB))
        assert cached < file_bytes // 4, (cached, sw)


def test_kill_while_swapping_releases_everything():
    """A guest killed in the middle of heavy swapping: the store drops its
    pool and client, the pool releases its charge, and the backing file is
    removed; another guest's swap is untouched."""
    with Ebbd(budget="2G") as d:
        d.run("k", 64 * MiB, swap=256 * MiB, swap_quota=64 * MiB)
        d.run("other", 64 * MiB, swap=128 * MiB)
        d.c.call("guest-exec", name="other", command="pagecheck write 96M 5 --hold 20")
        d.c.call("guest-exec", name="k", command="pagecheck write 192M 3 --passes 3")
        d.wait_until(lambda: device(d.tmem_guest("k"), "swap")["swap"]["file_pages"] > 1000,
                     120, "k swapping to tmem and to its file")
        backing = os.path.join(d.dir, "state", "k.swap")
        assert os.path.exists(backing)
        d.c.call("guest-stop", name="k", force=True)
        d.wait_until(lambda: d.guest("k")["state"] in ("stopped", "failed"), 20,
                     "k stopped")
        names = [g["name"] for g in d.c.call("tmem")["guests"]]
        assert "k" not in names, names
        assert not os.path.exists(backing)
        assert d.guest("k").get("store", 0) == 0
        # other's pages are all still there and correct.
        d.wait_console("other", r"pagecheck: \d+ pages, 0 mismatches", 180)
        t = d.c.call("tmem")
        assert t["store"]["clients"] == 1, t
        info = d.c.call("info")
        assert info["store"] >= d.tmem_guest("other")["charged_bytes"], info
        d.c.call("guest-stop", name="other", force=True)
        d.wait_until(lambda: d.c.call("tmem")["store"]["clients"] == 0, 20,
                     "store empty")
        t = d.c.call("tmem")
        assert t["total"]["persistent_pages"] == 0, t
        assert t["store"]["blobs"] == 0, t
        assert d.c.call("info")["store"] == 0


def test_data_disk_reads_are_cached_and_shared():
    """Two guests use the same image as a data disk: the first reads it
    from the file and fills the shared ephemeral pool, the second (and the
    first after dropping its page cache) read it from host memory; the
    bytes are the image's."""
    with Ebbd(budget="2G") as d:
        img = os.path.join(d.dir, "data.img")
        with open(img, "wb") as f:
            f.write(os.urandom(16 * MiB))
        want = hashlib.md5(open(img, "rb").read()).hexdigest()
        d.run("a", 64 * MiB, disk=img, disk_ro=True)
        d.run("b", 64 * MiB, disk=img, disk_ro=True)
        st, out = d.exec("a", "md5sum /dev/vda")
        assert want in out, (want, out)
        ca = device(d.tmem_guest("a"), "disk")["cache"]
        assert ca["misses"] >= 4096 and ca["fills"] > 0, ca
        st, out = d.exec("b", "md5sum /dev/vda")
        assert want in out, (want, out)
        cb = device(d.tmem_guest("b"), "disk")["cache"]
        assert cb["hits"] >= 4000, cb
        assert cb["file_read_bytes"] < 1 * MiB, cb
        d.exec("a", "echo 3 > /proc/sys/vm/drop_caches")
        h0 = device(d.tmem_guest("a"), "disk")["cache"]["hits"]
        st, out = d.exec("a", "md5sum /dev/vda")
        assert want in out
        assert device(d.tmem_guest("a"), "disk")["cache"]["hits"] - h0 >= 4000


def test_clean_cache_is_dropped_to_admit_a_guest():
    """Ephemeral pages are the first thing the host gives up: with the
    budget taken by a guest's RAM and its disk cache, a new launch whose
    claim would not fit gets in after ebbd drops cached disk pages; the
    first guest still reads correct data (now from the file)."""
    with Ebbd(budget="400M") as d:
        img = os.path.join(d.dir, "data.img")
        with open(img, "wb") as f:
            f.write(os.urandom(128 * MiB))	# incompressible: 128M charged
        want = hashlib.md5(open(img, "rb").read()).hexdigest()
        d.run("a", 64 * MiB, disk=img, disk_ro=True)
        st, out = d.exec("a", "md5sum /dev/vda")
        assert want in out, out
        before = d.tmem_guest("a")
        assert before["ephemeral_pages"] > 30000, before
        info = d.c.call("info")
        assert info["unclaimed"] < 256 * MiB, info
        d.run("b", 256 * MiB)		# refused without dropping cache
        after = d.tmem_guest("a")
        assert after["evictions"] > 0, after
        assert after["ephemeral_pages"] < before["ephemeral_pages"], after
        assert "clean cache" in d.daemon_log()
        info = d.c.call("info")
        assert info["resident"] + info["store"] + info["claims"] <= info["budget"], info
        d.exec("a", "echo 3 > /proc/sys/vm/drop_caches")
        st, out = d.exec("a", "md5sum /dev/vda")
        assert want in out, out


def test_devices_served_to_another_vmm():
    """ebbd serves its devices to a guest it did not launch: guest-run
    external creates the balloon and swap sockets and accounts them to the
    named guest; here the "other VMM" is a UML process the test starts
    itself, wired to those sockets.  It swaps onto ebb's device and reads
    every page back intact."""
    import subprocess
    import tempfile
    from ebbtest import initrd_path, kernel_path

    with Ebbd(budget="2G") as d:
        r = d.c.call("guest-run", name="ext", mem=64 * MiB, external=True,
                     swap=256 * MiB, swap_quota=256 * MiB)
        socks = r["sockets"]
        assert os.path.exists(socks["balloon"]) and os.path.exists(socks["swap"]), r
        umldir = tempfile.mkdtemp(prefix="ebb-vmm-")
        argv = [kernel_path(), "mem=64M", "initrd=" + initrd_path(),
                "con=null", "con0=fd:0,fd:1", "ssl=null", "quiet",
                "virtio_uml.device=%s:5" % socks["balloon"],
                "virtio_uml.device=%s:2" % socks["swap"],
                "pty.legacy_count=0", "uml_dir=" + umldir]
        env = dict(os.environ, TMPDIR="/dev/shm")
        vmm = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out = b""
        try:
            def read_until(marker, timeout):
                nonlocal out
                deadline = time.time() + timeout
                os.set_blocking(vmm.stdout.fileno(), False)
                while marker not in out:
                    if time.time() > deadline:
                        raise TestFailure("no %r from the VMM's guest; output:\n%s"
                                          % (marker, out[-1500:].decode(errors="replace")))
                    chunk = vmm.stdout.read()
                    if chunk:
                        out += chunk
                    else:
                        time.sleep(0.1)

            read_until(b"ebb-guest: ready", 60)
            assert b"ebb-guest: swap on /dev/vda" in out
            vmm.stdin.write(b"pagecheck write 96M 21\n")
            vmm.stdin.flush()
            read_until(b"ebb-guest: exit", 300)
            assert b"pagecheck: 24576 pages, 0 mismatches" in out, out[-800:]
            t = d.tmem_guest("ext")
            assert t["persistent_pages"] > 4096, t
            assert device(t, "swap")["connected"], t
            assert d.guest("ext")["balloon_actual"] == 64 * MiB
        finally:
            os.killpg(vmm.pid, 9)
            vmm.wait()
            shutil.rmtree(umldir, ignore_errors=True)
        d.c.call("guest-stop", name="ext")
        d.wait_until(lambda: d.c.call("tmem")["store"]["clients"] == 0, 20,
                     "ext's store released")
