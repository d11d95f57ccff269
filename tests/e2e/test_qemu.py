"""ebbd's vhost-user devices driven by QEMU's frontend, not only UML's.

The swap device and the data disk are meant to work with any
vhost-user-blk frontend.  QEMU's vhost-user-blk-pci is another
implementation of the frontend than UML's virtio_uml: it insists on the
CONFIG protocol feature, negotiates its own protocol features, sends
SET_FEATURES more than once, puts the device on a PCI transport, and
hands over guest RAM as a memfd with its own memory table.  A real Linux
6.1 guest (Debian's cloud kernel) under QEMU swaps onto ebb's device and
reads and writes a data disk through ebb's cache; every page is checked.
"""
import hashlib
import os
import re
import subprocess
import tempfile

from ebbtest import Ebbd, MiB, QemuGuest, build_dir
from ebbtest import tmem_device as device


def dump(size, seed, fill="mixed"):
    pc = os.path.join(build_dir(), "guest", "pagecheck")
    return subprocess.run([pc, "dump", size, str(seed), "--fill", fill],
                          capture_output=True, check=True).stdout


def test_qemu_frontend_swaps_and_reads_and_writes_a_disk():
    """A 128 MiB QEMU guest swaps 192 MiB of distinct pages onto ebb's
    swap device (/dev/vda) and verifies them twice: 0 mismatches, every
    page held in tmem, nothing written to the backing file.  On the data
    disk (/dev/vdb) it reads the image (checksum equal to the host's),
    reads it again from ebb's cache, and writes 1 MiB that the host then
    finds in the image file."""
    work = tempfile.mkdtemp(prefix="ebb-qemu-img-", dir="/var/tmp")
    img = os.path.join(work, "data.img")
    image = dump("32M", 3)
    with open(img, "wb") as f:
        f.write(image)
    try:
        with Ebbd(budget="2G") as d:
            r = d.c.call("guest-run", name="q", mem=128 * MiB, external=True,
                         swap=256 * MiB, swap_quota=256 * MiB, disk=img)
            socks = r["sockets"]
            with QemuGuest("128M", [socks["swap"], socks["disk"]]) as q:
                assert "ebb-guest: swap on /dev/vda" in q.console(), q.console()[-2000:]

                st, out = q.exec("pagecheck write 192M 21 --passes 2")
                assert st == 0 and re.search(r"pagecheck: 49152 pages, 0 mismatches", out), out
                st, out = q.exec("grep -E '^pswp(in|out) ' /proc/vmstat")
                vm = dict(re.findall(r"^(pswp\w+) (\d+)$", out, re.M))
                assert int(vm["pswpout"]) > 16384 and int(vm["pswpin"]) > 16384, out
                # No balloon: the guest runs, and its RAM is measured,
                # through its disks' memory tables.
                g = d.guest("q")
                assert g["state"] == "running", g
                assert 16 * MiB < g["resident"] <= 128 * MiB, g
                info = d.c.call("info")
                assert info["resident"] >= g["resident"], (info, g)
                assert info["resident"] + info["store"] + info["claims"] <= info["budget"], info
                t = d.tmem_guest("q")
                sw = device(t, "swap")
                assert t["persistent_pages"] > 8192, t
                assert sw["swap"]["tmem_pages"] == t["persistent_pages"], sw
                assert sw["swap"]["file_pages"] == 0 and sw["swap"]["file_write_bytes"] == 0, sw
                assert sw["ioerr"] == 0 and not sw["failed"] and sw["connected"], sw

                want = hashlib.md5(image).hexdigest()
                for _ in range(2):
                    st, out = q.exec("echo 3 > /proc/sys/vm/drop_caches; md5sum /dev/vdb")
                    assert st == 0 and want in out, (want, out)
                cache = device(d.tmem_guest("q"), "disk")["cache"]
                assert cache["fills"] >= 8192 and cache["hits"] >= 8192, cache

                patch = dump("1M", 9, fill="random")
                st, out = q.exec("pagecheck dump 1M 9 --fill random | "
                                 "dd of=/dev/vdb bs=4096 seek=100 conv=fsync")
                assert st == 0, out
                st, out = q.exec("echo 3 > /proc/sys/vm/drop_caches; "
                                 "dd if=/dev/vdb bs=4096 skip=100 count=256 | md5sum")
                assert st == 0 and hashlib.md5(patch).hexdigest() in out, out
            with open(img, "rb") as f:
                f.seek(100 * 4096)
                assert f.read(len(patch)) == patch
            dv = device(d.tmem_guest("q"), "disk")
            assert dv["ioerr"] == 0 and not dv["failed"], dv
            print("  QEMU guest: swapped out %s, in %s pages; disk cache %d fills, %d hits"
                  % (vm["pswpout"], vm["pswpin"], cache["fills"], cache["hits"]))
    finally:
        os.unlink(img)
        os.rmdir(work)


def test_qemu_killed_mid_swap_and_a_new_vmm_takes_the_device():
    """The VMM is SIGKILLed while its guest swaps heavily: ebbd notices the
    disconnect and keeps running.  The swap contents stay: a backend cannot
    tell a dead VMM from one that reconnects to a still-running guest (QEMU
    can), and dropping them would lose that guest's pages.  A new QEMU
    connects to the same socket, boots, swaps onto the device and gets
    every page back.  Stopping the guest then releases its store pages and
    pool charge."""
    with Ebbd(budget="2G") as d:
        r = d.c.call("guest-run", name="q", mem=128 * MiB, external=True,
                     swap=256 * MiB, swap_quota=256 * MiB)
        sock = r["sockets"]["swap"]
        with QemuGuest("128M", [sock]) as q1:
            q1.start("pagecheck write 192M 5 --passes 3")
            d.wait_until(lambda: d.tmem_guest("q")["persistent_pages"] > 8192, 120,
                         "q swapping into tmem")
            q1.kill()
        d.wait_until(lambda: not device(d.tmem_guest("q"), "swap")["connected"], 20,
                     "ebbd to see the VMM gone")
        assert d.alive()
        left = d.tmem_guest("q")["persistent_pages"]
        assert left > 0, left

        with QemuGuest("128M", [sock]) as q2:
            assert "ebb-guest: swap on /dev/vda" in q2.console(), q2.console()[-2000:]
            # Kept: only mkswap's header page was written since.
            after = d.tmem_guest("q")["persistent_pages"]
            assert left - 1 <= after <= left + 1, (left, after)
            st, out = q2.exec("pagecheck write 192M 6 --passes 2")
            assert st == 0 and re.search(r"pagecheck: 49152 pages, 0 mismatches", out), out
            sw = device(d.tmem_guest("q"), "swap")
            assert sw["ioerr"] == 0 and not sw["failed"], sw
            # The new guest's pages replaced the old ones slot by slot: the
            # pool never holds more than the device's capacity.
            t = d.tmem_guest("q")
            assert t["persistent_pages"] == sw["swap"]["tmem_pages"] <= 65536, (t, sw)
        assert d.c.call("info")["store"] > 0
        d.c.call("guest-stop", name="q", force=True)
        d.wait_until(lambda: d.guest("q")["state"] in ("stopped", "failed"), 20,
                     "q stopped")
        names = [g["name"] for g in d.c.call("tmem")["guests"]]
        assert "q" not in names, names
        info = d.c.call("info")
        assert info["store"] == 0 and info["claims"] == 0, info
        print("  %d pages of the killed guest kept in tmem for the next VMM" % left)


def test_qemu_guest_reboot_resets_the_device_on_the_same_connection():
    """A guest reboot under QEMU resets its devices without closing the
    vhost-user connection: QEMU stops the rings, and after the new boot
    negotiates features and sets the rings up again on the same socket.
    The new guest swaps onto the device again and gets every page back."""
    with Ebbd(budget="2G") as d:
        r = d.c.call("guest-run", name="q", mem=128 * MiB, external=True,
                     swap=256 * MiB, swap_quota=256 * MiB)
        with QemuGuest("128M", [r["sockets"]["swap"]], reboot=True) as q:
            st, out = q.exec("pagecheck write 192M 3")
            assert st == 0 and "pagecheck: 49152 pages, 0 mismatches" in out, out
            n = len(q.console())
            q.start("reboot -f")
            q.wait(r"ebb-guest: ready", 120, n)
            assert "ebb-guest: swap on /dev/vda" in q.console()[n:], q.console()[n:]
            st, out = q.exec("pagecheck write 192M 4 --passes 2")
            assert st == 0 and "pagecheck: 49152 pages, 0 mismatches" in out, out
            sw = device(d.tmem_guest("q"), "swap")
            assert sw["connected"] and not sw["failed"] and sw["ioerr"] == 0, sw
            assert d.alive()
        # One connection for both boots.
        assert d.daemon_log().count("frontend connected") == 1, d.daemon_log()
