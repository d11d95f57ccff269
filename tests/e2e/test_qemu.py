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


def dump(size, seed, fill="mixed"):
    pc = os.path.join(build_dir(), "guest", "pagecheck")
    return subprocess.run([pc, "dump", size, str(seed), "--fill", fill],
                          capture_output=True, check=True).stdout


def device(t, role):
    return next(dv for dv in t["devices"] if dv["role"] == role)


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
